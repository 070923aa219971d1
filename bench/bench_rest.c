/* bench_rest.c - KServe V2 REST against gRPC for the walkthrough's request, in one run, by one
 * independent load generator (h2load, nghttp2-client: gRPC frames over HTTP/2, and --h1 for
 * HTTP/1.1 with the V2 JSON body):
 * on a local cluster of real processes (etcd, 2 pods of the sklearn runtime + mm-node, an
 * mm-gateway), the walkthrough's MNIST SVM Loaded on one pod; the walkthrough's request (64
 * FP32 values) sent as gRPC ModelInfer (contents) and as V2 REST JSON ("data") to
 *   (b) the node holding the model, and (g) the gateway (one forward to the holder);
 * C connections with one request in flight each (HTTP/1.1 has no multiplexing; gRPC is given
 * the same C connections and one stream each, so both see the same concurrency).
 * Each cell: a 0.5 s warm-up, then S seconds: throughput, p50/p99 (h2load's per-request log),
 * the ratio REST/gRPC of each; every response checked 2xx (h2load's "succeeded") and each
 * target first checked once (predict 8).
 * usage: bench_rest MM_NODE MM_GATEWAY PYTHON SKLEARN_SERVER MAKE_MNIST [S seconds (3)]
 *                   [connections (1,8)]
 * Environment: H2LOAD (default h2load on PATH). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"
#include "loadgen.h"
#include "mmclient.h"

#define INFER_PATH "/inference.GRPCInferenceService/ModelInfer"
#define MODEL_ID "mnist-svm__isvc-6b2eb0b8bf"
#define MAX_LIST 8

static const char *h2load;
static char work[256];
static struct cluster cl;
static bool cluster_up;

static void die(const char *what)
{
    fprintf(stderr, "bench_rest: %s\n", what);
    exit(1);
}

static void cleanup(void)
{
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    if (work[0]) {
        char cmd[400], out[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
    }
}

struct cell {
    double rps, p50_us, p99_us;
    bool err;
};

static void h2load_cmd(char *cmd, size_t size, bool rest, int conns, double seconds,
                       const char *data, const char *log, int port, const char *path)
{
    snprintf(cmd, size,
             "'%s' %s -c %d -m 1 -D %lldms -d '%s' -H 'content-type: %s' %s %s%s%s "
             "http://127.0.0.1:%d%s 2>&1",
             h2load, rest ? "--h1" : "", conns, (long long)(seconds * 1000), data,
             rest ? "application/json" : "application/grpc", rest ? "" : "-H 'te: trailers'",
             log ? "--log-file '" : "", log ? log : "", log ? "'" : "", port, path);
}

static void run_cell(bool rest, int conns, double seconds, const char *data, int port,
                     const char *path, struct cell *c)
{
    static char out[16384];
    char cmd[2048], log[400];
    snprintf(log, sizeof(log), "%s/h2load.log", work);
    h2load_cmd(cmd, sizeof(cmd), rest, conns, 0.5, data, NULL, port, path);
    harness_capture(cmd, out, sizeof(out));
    unlink(log);
    h2load_cmd(cmd, sizeof(cmd), rest, conns, seconds, data, log, port, path);
    int rc = harness_capture(cmd, out, sizeof(out));
    const char *fin = strstr(out, "finished in"), *reqs = strstr(out, "requests:");
    long long total = 0, done = 0, succeeded = 0;
    if (rc != 0 || !fin || !reqs || sscanf(fin, "finished in %*[^,], %lf req/s", &c->rps) != 1 ||
        sscanf(reqs, "requests: %lld total, %*d started, %lld done, %lld succeeded", &total, &done,
               &succeeded) != 3) {
        fprintf(stderr, "h2load failed (%d): %s\n%s\n", rc, cmd, out);
        c->err = true;
        return;
    }
    /* a gRPC error is an HTTP 200 too, without a message: every response must carry data
     * (the predict output: at least 10 bytes each) */
    const char *traffic = strstr(out, "traffic:"), *d = traffic ? strstr(traffic, ") data") : NULL;
    long long data_bytes = -1;
    if (d) { /* "... 777.54KB (796203) data": the number in the last parentheses */
        const char *p = d;
        while (p > traffic && *p != '(')
            p--;
        data_bytes = atoll(p + 1);
    }
    c->err = succeeded != done || done == 0 || data_bytes < done * 10;
    if (c->err)
        fprintf(stderr, "cell with errors (%lld done, %lld succeeded):\n%s\n", done, succeeded,
                out);
    loadgen_h2load_percentiles(log, &c->p50_us, &c->p99_us);
}

static int parse_list(const char *s, int *out)
{
    int n = 0;
    for (char *end; *s && n < MAX_LIST; s = *end ? end + 1 : end)
        out[n++] = (int)strtol(s, &end, 10);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr,
                "usage: %s MM_NODE MM_GATEWAY PYTHON SKLEARN_SERVER MAKE_MNIST "
                "[seconds] [connections]\n",
                argv[0]);
        return 2;
    }
    const char *mm_node = argv[1], *mm_gateway = argv[2], *python = argv[3], *sklearn = argv[4],
               *maker = argv[5];
    double seconds = argc > 6 ? atof(argv[6]) : 3.0;
    int conns[MAX_LIST], n_conns = parse_list(argc > 7 ? argv[7] : "1,8", conns);
    h2load = getenv("H2LOAD") && getenv("H2LOAD")[0] ? getenv("H2LOAD") : "h2load";
    char cmd[4096];
    static char out[16384];
    snprintf(cmd, sizeof(cmd), "'%s' --version", h2load);
    if (harness_capture(cmd, out, sizeof(out)) != 0) {
        fprintf(stderr, "bench_rest: no %s (nghttp2-client): skipped\n", h2load);
        return 77;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-bench-rest-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(work))
        die("mkdtemp");
    atexit(cleanup);
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", python, maker, work);
    if (harness_capture(cmd, out, sizeof(out)) != 0)
        die(out);
    struct cluster_config cfg = {.mm_node = mm_node,
                                 .mm_runtime = sklearn,
                                 .runtime_interpreter = python,
                                 .n_pods = 2,
                                 .runtime_load_timeout_ms = 20000,
                                 .lease_ttl = "2s",
                                 .model_types = "sklearn",
                                 .mm_gateway = mm_gateway};
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        die("the cluster did not start");
    char src[512];
    snprintf(src, sizeof(src), "%s/sklearn/mnist-svm.joblib", work);
    if (cluster_copy_file(&cl, src, "sklearn/mnist-svm.joblib") < 0 ||
        cluster_gateway_start(&cl) < 0)
        die("model file or gateway");
    struct mmc_reply a;
    mmc_register(cl.pods[0].api, MODEL_ID, "sklearn", "sklearn/mnist-svm.joblib", "", true, true, 0,
                 30000, &a);
    if (!mmc_is(&a, MMC_LOADED))
        die("the model did not load");
    struct cluster_copy copies[4];
    int h = cluster_copies(&cl, MODEL_ID, copies, 4) == 1
                ? cluster_pod_of(&cl, copies[0].iid, strlen(copies[0].iid))
                : -1;
    if (h < 0)
        die("no single copy");

    /* the bodies: the REST JSON from the walkthrough's request, and its gRPC frame */
    char json[400], frame[400], grpc_json[400];
    snprintf(grpc_json, sizeof(grpc_json), "%s/sklearn/mnist-svm-request.json", work);
    snprintf(json, sizeof(json), "%s/rest.json", work);
    snprintf(frame, sizeof(frame), "%s/grpc.bin", work);
    snprintf(
        cmd, sizeof(cmd),
        "'%s' -c 'import json,struct,sys\n"
        "g=json.load(open(sys.argv[1]))\n"
        "t=g[\"inputs\"][0]\n"
        "json.dump({\"inputs\":[{\"name\":t[\"name\"],\"datatype\":t[\"datatype\"],"
        "\"shape\":[int(x) for x in t[\"shape\"]],\"data\":t[\"contents\"][\"fp32_contents\"]}]},"
        "open(sys.argv[2],\"w\"))' '%s' '%s'",
        python, grpc_json, json);
    if (harness_capture(cmd, out, sizeof(out)) != 0)
        die(out);
    const struct {
        const char *name;
        int grpc_port, rest_port;
    } targets[] = {
        {"(b) the node holding the model", cl.pods[h].node_port, cl.pods[h].node_rest_port},
        {"(g) the gateway (one forward)", cl.gateway_port, cl.gateway_rest_port}};
    char rest_path[256];
    snprintf(rest_path, sizeof(rest_path), "/v2/models/%s/infer", MODEL_ID);
    /* check each target once over REST (predict 8); the gRPC frame encodes the same JSON */
    for (size_t t = 0; t < 2; t++) {
        snprintf(cmd, sizeof(cmd), "curl -sS -m 20 --data-binary @'%s' http://127.0.0.1:%d%s", json,
                 targets[t].rest_port, rest_path);
        if (harness_capture(cmd, out, sizeof(out)) != 0 || !strstr(out, "\"data\":[8]"))
            die(out);
    }
    snprintf(cmd, sizeof(cmd),
             "'%s' -c 'import json,struct,sys\n"
             "def v(n):\n"
             " b=b\"\"\n"
             " while True:\n"
             "  c=n&127; n>>=7\n"
             "  if n: b+=bytes([c|128])\n"
             "  else: return b+bytes([c])\n"
             "def ld(f,b): return v(f<<3|2)+v(len(b))+b\n"
             "t=json.load(open(sys.argv[1]))[\"inputs\"][0]\n"
             "shape=b\"\".join(v(x) for x in t[\"shape\"])\n"
             "vals=b\"\".join(struct.pack(\"<f\",x) for x in t[\"data\"])\n"
             "tensor=ld(1,t[\"name\"].encode())+ld(2,t[\"datatype\"].encode())+ld(3,shape)"
             "+ld(5,ld(6,vals))\n"
             "msg=ld(1,b\"" MODEL_ID "\")+ld(5,tensor)\n"
             "open(sys.argv[2],\"wb\").write(b\"\\0\"+struct.pack(\">I\",len(msg))+msg)' '%s' '%s'",
             python, json, frame);
    if (harness_capture(cmd, out, sizeof(out)) != 0)
        die(out);

    printf("# bench_rest: the walkthrough's request (MNIST SVM, 64 FP32 values, sklearn runtime) "
           "as gRPC and as V2 REST JSON; h2load, C connections x 1 request in flight; %.1f s per "
           "cell after a 0.5 s warm-up\n\n",
           seconds);
    printf("| target | C | gRPC req/s | REST req/s | REST/gRPC | gRPC p50 / p99 ms | REST p50 / "
           "p99 ms | p50 REST/gRPC |\n|---|---|---|---|---|---|---|---|\n");
    for (size_t t = 0; t < 2; t++)
        for (int i = 0; i < n_conns; i++) {
            struct cell g = {0}, r = {0};
            run_cell(false, conns[i], seconds, frame, targets[t].grpc_port, INFER_PATH, &g);
            run_cell(true, conns[i], seconds, json, targets[t].rest_port, rest_path, &r);
            printf("| %s | %d | %.0f%s | %.0f%s | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f |\n",
                   targets[t].name, conns[i], g.rps, g.err ? " ERR" : "", r.rps,
                   r.err ? " ERR" : "", g.rps > 0 ? r.rps / g.rps : 0, g.p50_us / 1000.,
                   g.p99_us / 1000., r.p50_us / 1000., r.p99_us / 1000.,
                   g.p50_us > 0 ? r.p50_us / g.p50_us : 0);
            fflush(stdout);
        }
    return 0;
}
