/* bench_route.c - what the mesh's inference path costs, measured by an independent load
 * generator (h2load, nghttp2-client: raw gRPC frames over one HTTP/2 connection) in one run:
 *   (a) client -> the runtime directly (mm-runtime holding the model);
 *   (b) client -> the node beside that runtime (the model local);
 *   (c) client -> the other node (one forward to the holder's internal port);
 *   (d) client -> bare_proxy -> the runtime: a bare forwarding hop on plain gRPC C core (one
 *       thread, one completion queue), the anchor: (b) should be within 10% of (d), (c) no
 *       worse than two hops of (d);
 *   (e) client -> mm-gateway (no runtime: the route of (c) without a local runtime beside it).
 * On a local cluster of real processes (etcd, 2 pods of mm-runtime + mm-node, an mm-gateway),
 * the breast-cancer XGBoost model registered and Loaded on pod 0; pod 1's node serves another
 * model type, so that copy scaling (a second copy past 2000 requests/min) cannot put a copy
 * there and (c) stays one forward; ModelInfer with raw FP32 rows of 30 features:
 * 1 row (120 B tensor), 64 rows (7.5 KiB), 546 rows (64 KiB); h2load with 1 connection and
 * 1, 16, 64 streams in flight. Each cell, 3 times (the targets taking turns; medians printed):
 * a 0.5 s warm-up run, then S seconds measured:
 * throughput (h2load), p50/p99 from h2load's per-request log, and the CPU the serving processes
 * of that path spent per request (/proc/<pid>/stat, all threads). Every target is first checked
 * with one call (OK, one prediction per row); each cell checks that every response carried the
 * expected message (gRPC errors carry none), else the cell is marked ERR.
 * usage: bench_route MM_NODE MM_RUNTIME MM_GATEWAY MAKE_BREAST_CANCER BARE_PROXY
 *                    [S seconds (2)] [concurrencies (1,16,64)] [rows (1,64,546)]
 * Environment: H2LOAD (default h2load on PATH); MM_BENCH_METRICS=off starts the nodes and the
 * gateway with --metrics-listen off (no metric recorded, no call timed), else metrics are on (as
 * the harness starts them): run it both ways to see what recording costs. (b) and (c) are n/a while mm-node does not route
 * inference (the check call says why). */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "loadgen.h"
#include "mm/rpc.h"
#include "mmclient.h"
#include "rtclient.h"

#define FEATURES 30
#define MAX_ROWS 546 /* 546 * 30 * 4 = 65,520 B: a 64 KiB tensor */
#define MAX_LIST 8
#define N_TARGETS 5
#define ROUNDS 3     /* each cell measured this many times, targets taking turns; medians */
#define INFER_PATH "/inference.GRPCInferenceService/ModelInfer"

static const char *mm_node, *mm_runtime, *mm_gateway, *maker, *proxy, *h2load;
static char work[256];
static struct cluster cl;
static bool cluster_up;
static pid_t proxy_pid;

struct target {
    const char *name;   /* "a", "b", ... */
    const char *what;
    int port;
    pid_t pids[3];      /* the processes serving this path, for their CPU */
    size_t n_pids;
    bool ok;            /* answered the check call */
    char why[1200];     /* when not */
};
static struct target targets[N_TARGETS];

struct cell {
    bool run, err;
    double rps, p50_us, p99_us, cpu_us;
    long long done;
};

static void cleanup(void)
{
    if (proxy_pid > 0)
        harness_stop_pid(proxy_pid, 2000);
    proxy_pid = 0;
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    if (work[0]) {
        char cmd[400], out[64];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
        work[0] = '\0';
    }
}

static void die(const char *what)
{
    fprintf(stderr, "bench_route: %s\n", what);
    if (cluster_up)
        cluster_dump_logs(&cl, true);
    exit(1);
}

static size_t parse_list(const char *s, int *out)
{
    size_t n = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t && n < MAX_LIST; t = strtok_r(NULL, ",", &save))
        out[n++] = atoi(t);
    return n;
}

/* utime + stime of pid in microseconds (all its threads), or -1. */
static long long cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)((ut + st) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

static long long path_cpu_us(const struct target *t)
{
    long long sum = 0;
    for (size_t i = 0; i < t->n_pids; i++)
        sum += cpu_us(t->pids[i]);
    return sum;
}

/* ModelInfer for model with rows rows of FEATURES FP32 values in raw_input_contents; *len its
 * size. */
static grpc_byte_buffer *infer_request(const char *model, int rows, size_t *len)
{
    static float values[MAX_ROWS * FEATURES];
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        values[i] = (float)(i % FEATURES) * 0.75f + (float)(i % 7);
    grpc_byte_buffer *bb = rt_infer_request_fp32(model, "input-0", values, rows, FEATURES, true);
    *len = bb ? grpc_byte_buffer_length(bb) : 0;
    return bb;
}

/* h2load's data file: the gRPC frame (uncompressed flag, 4-byte big-endian length, message). */
static void write_frame(const char *path, grpc_byte_buffer *bb)
{
    size_t len = 0;
    void *msg = rpc_flatten(bb, &len);
    unsigned char prefix[5] = {0, (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                               (unsigned char)(len >> 8), (unsigned char)len};
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(prefix, 1, 5, f) != 5 || fwrite(msg, 1, len, f) != len || fclose(f) != 0)
        die("writing the request frame");
    free(msg);
}

/* One call through t: OK with rows predictions; *resp_len its response's size. */
static bool check_target(struct target *t, grpc_byte_buffer *req, int rows, size_t *resp_len)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", t->port);
    struct mm_error err = {0};
    struct rpc_channel *ch = NULL;
    if (rpc_channel_new(cl.rpc, addr, 0, &ch, &err) < 0)
        die(err.msg);
    struct rpc_reply r = {0};
    rpc_unary_wait(ch, INFER_PATH, req, NULL, 0, 20000, &r);
    bool ok = false;
    if (r.status != GRPC_STATUS_OK) {
        snprintf(t->why, sizeof(t->why), "%s: %s", rpc_status_name(r.status), r.details);
    } else {
        ProtobufCMessage *m = NULL;
        size_t len = 0;
        free(rpc_flatten(r.response, &len));
        if (rpc_decode(r.response, &inference__model_infer_response__descriptor, &m, &err) < 0) {
            snprintf(t->why, sizeof(t->why), "%s", err.msg);
        } else {
            Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)m;
            size_t n = resp->n_raw_output_contents ? resp->raw_output_contents[0].len / 4
                       : resp->n_outputs && resp->outputs[0]->contents
                           ? resp->outputs[0]->contents->n_fp32_contents
                           : 0;
            ok = n == (size_t)rows;
            if (!ok)
                snprintf(t->why, sizeof(t->why), "%zu predictions for %d rows", n, rows);
            *resp_len = len;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    rpc_reply_clear(&r);
    rpc_channel_free(ch);
    return ok;
}

static void h2load_cmd(char *cmd, size_t size, int conc, double seconds, const char *data,
                       const char *log, int port)
{
    snprintf(cmd, size,
             "'%s' -c 1 -m %d -D %lldms -d '%s' -H 'content-type: application/grpc' "
             "-H 'te: trailers' %s%s%s http://127.0.0.1:%d%s 2>&1",
             h2load, conc, (long long)(seconds * 1000), data, log ? "--log-file '" : "", log ? log : "",
             log ? "'" : "", port, INFER_PATH);
}

static void run_cell(const struct target *t, int conc, double seconds, const char *data,
                     size_t resp_len, struct cell *c)
{
    static char out[16384];
    char cmd[2048], log[400];
    snprintf(log, sizeof(log), "%s/h2load.log", work);
    h2load_cmd(cmd, sizeof(cmd), conc, 0.5, data, NULL, t->port); /* warm-up */
    harness_capture(cmd, out, sizeof(out));
    unlink(log);
    h2load_cmd(cmd, sizeof(cmd), conc, seconds, data, log, t->port);
    long long cpu0 = path_cpu_us(t);
    int rc = harness_capture(cmd, out, sizeof(out));
    long long cpu1 = path_cpu_us(t);
    c->run = true;
    const char *fin = strstr(out, "finished in");
    const char *reqs = strstr(out, "requests:");
    const char *traffic = strstr(out, "traffic:");
    long long total = 0, done = 0, succeeded = 0, data_bytes = -1;
    if (rc != 0 || !fin || !reqs || !traffic ||
        sscanf(fin, "finished in %*[^,], %lf req/s", &c->rps) != 1 ||
        sscanf(reqs, "requests: %lld total, %*d started, %lld done, %lld succeeded", &total,
               &done, &succeeded) != 3) {
        fprintf(stderr, "h2load failed (%d): %s\n%s\n", rc, cmd, out);
        c->err = true;
        return;
    }
    const char *d = strstr(traffic, ") data");
    if (d) { /* "... 777.54KB (796203) data": the number in the last parentheses */
        const char *p = d;
        while (p > traffic && *p != '(')
            p--;
        data_bytes = atoll(p + 1);
    }
    c->done = done;
    /* every response a gRPC message of resp_len (an error status carries none) */
    c->err = succeeded != done || done == 0 || data_bytes < done * (long long)(resp_len + 5);
    if (c->err)
        fprintf(stderr, "cell with errors: %lld done, %lld succeeded, %lld data bytes for "
                "%zu-byte responses:\n%s\n", done, succeeded, data_bytes, resp_len, out);
    loadgen_h2load_percentiles(log, &c->p50_us, &c->p99_us);
    c->cpu_us = done ? (double)(cpu1 - cpu0) / (double)done : 0;
}

/* Where the model's copies are: (c) is one forward only while the model has one copy, on H. */
static void print_copies(const char *when)
{
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, "bc", copies, 4);
    fprintf(stderr, "copies of bc %s:", when);
    for (int i = 0; i < n && i < 4; i++)
        fprintf(stderr, " %s %s", copies[i].iid, copy_state_name(copies[i].rec.state));
    fprintf(stderr, "%s\n", n == 1 ? "" : " (not one copy: (c) is not one forward)");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof(*v), cmp_double);
    return v[ROUNDS / 2];
}

/* Each figure's median over the rounds; an error in any round marks the cell. */
static void median_cell(const struct cell *runs, struct cell *out)
{
    double rps[ROUNDS], p50[ROUNDS], p99[ROUNDS], cpu[ROUNDS];
    memset(out, 0, sizeof(*out));
    out->run = true;
    for (size_t i = 0; i < ROUNDS; i++) {
        rps[i] = runs[i].rps;
        p50[i] = runs[i].p50_us;
        p99[i] = runs[i].p99_us;
        cpu[i] = runs[i].cpu_us;
        out->err |= runs[i].err;
        out->done += runs[i].done;
    }
    out->rps = median(rps);
    out->p50_us = median(p50);
    out->p99_us = median(p99);
    out->cpu_us = median(cpu);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s MM_NODE MM_RUNTIME MM_GATEWAY MAKE_BREAST_CANCER BARE_PROXY "
                "[seconds] "
                "[concurrencies] [rows]\n", argv[0]);
        return 2;
    }
    mm_node = argv[1];
    mm_runtime = argv[2];
    mm_gateway = argv[3];
    maker = argv[4];
    proxy = argv[5];
    double seconds = argc > 6 ? atof(argv[6]) : 2.0;
    int concs[MAX_LIST], rows[MAX_LIST];
    size_t n_concs = parse_list(argc > 7 ? argv[7] : "1,16,64", concs);
    size_t n_rows = parse_list(argc > 8 ? argv[8] : "1,64,546", rows);
    h2load = getenv("H2LOAD") && getenv("H2LOAD")[0] ? getenv("H2LOAD") : "h2load";
    for (size_t i = 0; i < n_rows; i++)
        if (rows[i] < 1 || rows[i] > MAX_ROWS)
            die("rows must be 1..546");
    atexit(cleanup); /* the work dir, if a step fails before the cluster is up */

    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "'%s' --version", h2load);
    if (harness_capture(cmd, out, sizeof(out)) != 0) {
        fprintf(stderr, "bench_route: no %s (nghttp2-client): skipped\n", h2load);
        return 77;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-bench-route-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(work))
        die("mkdtemp");
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker, work);
    if (harness_capture(cmd, out, sizeof(out)) != 0)
        die(out);

    /* Pod 1 serves another model type: the mesh can never put a copy of the model there (copy
     * scaling adds one under this load), so (c) stays one forward. */
    const char *menv = getenv("MM_BENCH_METRICS");
    bool metrics_off = menv && strcmp(menv, "off") == 0;
    struct cluster_config cfg = {
        .mm_node = mm_node, .mm_runtime = mm_runtime, .mm_gateway = mm_gateway, .n_pods = 2,
        .lease_ttl = "5s", .model_types = "xgboost", .start_nodes_later = true,
        .node_args = metrics_off ? "--metrics-listen off" : NULL,
        .gateway_args = metrics_off ? "--metrics-listen off" : NULL,
    };
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    atexit(cleanup); /* after cluster_start's own: runs first, so MM_TEST_KEEP can keep the logs */
    if (rc == 0)
        rc = cluster_node_start(&cl, 0);
    cl.cfg.model_types = "not-xgboost";
    if (rc == 0)
        rc = cluster_node_start(&cl, 1);
    if (rc == 0)
        rc = cluster_gateway_start(&cl);
    if (rc < 0)
        die("cluster start");
    char src[512];
    snprintf(src, sizeof(src), "%s/xgboost/breast-cancer.json", work);
    if (cluster_copy_file(&cl, src, "xgb/bc.json") < 0)
        die("copying the model");
    struct mmc_reply reg;
    mmc_register(cl.pods[0].api, "bc", "xgboost", "xgb/bc.json", "", true, true, 0, 30000, &reg);
    if (!mmc_is(&reg, MMC_LOADED))
        die("registering the model");
    struct cluster_copy copies[2];
    if (cluster_copies(&cl, "bc", copies, 2) != 1)
        die("the model should have one copy");
    int h = cluster_pod_of(&cl, copies[0].iid, strlen(copies[0].iid));
    if (h < 0)
        die("holder");
    int o = 1 - h;
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", cl.pods[h].runtime_port);
    char *pargv[] = {(char *)proxy, "--listen", "127.0.0.1:0", "--backend", target, "--method",
                     INFER_PATH, NULL};
    int proxy_port = 0;
    if (harness_spawn_listening(pargv, 10000, &proxy_pid, &proxy_port) < 0)
        die("starting bare_proxy");

    struct cluster_pod *H = &cl.pods[h], *O = &cl.pods[o];
    static const char *const names[N_TARGETS] = {"a", "b", "c", "d", "e"};
    static const char *const whats[N_TARGETS] = {"runtime directly", "node, model local",
                                                 "node, one forward", "bare C-core proxy",
                                                 "mm-gateway, one forward"};
    const int ports[N_TARGETS] = {H->runtime_port, H->node_port, O->node_port, proxy_port,
                                  cl.gateway_port};
    const pid_t pids[N_TARGETS][3] = {{H->runtime_pid},
                                      {H->node_pid, H->runtime_pid},
                                      {O->node_pid, H->node_pid, H->runtime_pid},
                                      {proxy_pid, H->runtime_pid},
                                      {cl.gateway_pid, H->node_pid, H->runtime_pid}};
    const size_t n_pids[N_TARGETS] = {1, 2, 3, 2, 3};
    for (size_t t = 0; t < N_TARGETS; t++) {
        targets[t].name = names[t];
        targets[t].what = whats[t];
        targets[t].port = ports[t];
        memcpy(targets[t].pids, pids[t], sizeof(pids[t]));
        targets[t].n_pids = n_pids[t];
    }

    static struct cell cells[MAX_LIST][MAX_LIST][N_TARGETS];
    printf("# bench_route: h2load, 1 connection; %.1f s per cell after a 0.5 s warm-up, "
           "medians of %d rounds; mm-runtime, model on %s; metrics %s\n\n", seconds, ROUNDS,
           H->iid, metrics_off ? "off" : "on");
    for (size_t r = 0; r < n_rows; r++) {
        size_t req_len = 0, resp_len = 0;
        grpc_byte_buffer *req = infer_request("bc", rows[r], &req_len);
        char data[400];
        snprintf(data, sizeof(data), "%s/req-%d.bin", work, rows[r]);
        write_frame(data, req);
        for (size_t t = 0; t < N_TARGETS; t++) {
            targets[t].ok = check_target(&targets[t], req, rows[r], &resp_len);
            if (!targets[t].ok)
                printf("(%s) %s: n/a, its check call answered %s\n", targets[t].name,
                       targets[t].what, targets[t].why);
        }
        grpc_byte_buffer_destroy(req);
        print_copies("before");
        /* ROUNDS rounds of every target in turn, so that a busy moment of the shared machine
         * hits all of them alike; each figure the median of its rounds */
        for (size_t k = 0; k < n_concs; k++) {
            struct cell runs[N_TARGETS][ROUNDS];
            for (size_t round = 0; round < ROUNDS; round++)
                for (size_t t = 0; t < N_TARGETS; t++) {
                    if (!targets[t].ok)
                        continue;
                    struct cell *c = &runs[t][round];
                    memset(c, 0, sizeof(*c));
                    run_cell(&targets[t], concs[k], seconds, data, resp_len, c);
                    fprintf(stderr, "%d rows, c=%d, (%s) round %zu: %.0f req/s, p50 %.0f us, "
                            "p99 %.0f us, %.0f us CPU/req%s\n", rows[r], concs[k],
                            targets[t].name, round + 1, c->rps, c->p50_us, c->p99_us,
                            c->cpu_us, c->err ? " ERR" : "");
                }
            for (size_t t = 0; t < N_TARGETS; t++)
                if (targets[t].ok)
                    median_cell(runs[t], &cells[r][k][t]);
        }
        print_copies("after");
        printf("\n## %d row%s: request %zu B (tensor %d B), response %zu B\n\n", rows[r],
               rows[r] == 1 ? "" : "s", req_len, rows[r] * FEATURES * 4, resp_len);
        printf("| streams | target | req/s | p50 us | p99 us | path CPU us/req |\n"
               "|---|---|---|---|---|---|\n");
        for (size_t k = 0; k < n_concs; k++)
            for (size_t t = 0; t < N_TARGETS; t++) {
                struct cell *c = &cells[r][k][t];
                if (!c->run) {
                    printf("| %d | (%s) %s | n/a | | | |\n", concs[k], targets[t].name,
                           targets[t].what);
                    continue;
                }
                printf("| %d | (%s) %s | %.0f%s | %.0f | %.0f | %.0f |\n", concs[k],
                       targets[t].name, targets[t].what, c->rps, c->err ? " ERR" : "",
                       c->p50_us, c->p99_us, c->cpu_us);
            }
        printf("\n| streams | (b)/(d) req/s | (b)/(d) p50 | (c)/(d) req/s | (c)/(d) p50 | "
               "(c)-(a) over (d)-(a) p50 | (b) goal | (c) goal |\n|---|---|---|---|---|---|---|---|\n");
        for (size_t k = 0; k < n_concs; k++) {
            struct cell *a = &cells[r][k][0], *b = &cells[r][k][1], *c = &cells[r][k][2],
                        *d = &cells[r][k][3];
            if (!d->run || d->err || !a->run) {
                printf("| %d | n/a | | | | | | |\n", concs[k]);
                continue;
            }
            char bt[64] = "n/a", bp[64] = "n/a", ct[64] = "n/a", cp[64] = "n/a", hop[64] = "n/a",
                 bg[32] = "n/a", cg[32] = "n/a";
            if (b->run && !b->err) {
                snprintf(bt, sizeof(bt), "%.2f", b->rps / d->rps);
                snprintf(bp, sizeof(bp), "%.2f", b->p50_us / d->p50_us);
                snprintf(bg, sizeof(bg), "%s", b->rps >= 0.9 * d->rps &&
                         b->p50_us <= 1.1 * d->p50_us ? "met" : "not met");
            }
            if (c->run && !c->err) {
                snprintf(ct, sizeof(ct), "%.2f", c->rps / d->rps);
                snprintf(cp, sizeof(cp), "%.2f", c->p50_us / d->p50_us);
                double over = c->p50_us - a->p50_us, hop_d = d->p50_us - a->p50_us;
                if (hop_d > 0)
                    snprintf(hop, sizeof(hop), "%.2f", over / hop_d);
                snprintf(cg, sizeof(cg), "%s", hop_d > 0 && over <= 2 * hop_d ? "met" : "not met");
            }
            printf("| %d | %s | %s | %s | %s | %s | %s | %s |\n", concs[k], bt, bp, ct, cp, hop,
                   bg, cg);
        }
        fflush(stdout);
    }
    printf("\n(b) goal: within 10%% of (d) in p50 and req/s. (c) goal: its p50 over (a) at most "
           "twice (d)'s over (a).\n");
    return 0;
}
