/* bench_node.c - what a node costs in a large registry, and how fast the mesh recovers, on a
 * local cluster of real processes (tests/harness/cluster.h):
 *   1. the registry: M model records and C copy records (on 100 stand-in instances of a type no
 *      node serves, under one lease) written with etcd txns in bulk: records/s;
 *   2. mirror memory: a mirror of that prefix in this process, heap and RSS per model, and the
 *      list time, against the records' own bytes;
 *   3. node start-up: spawn to LISTENING (runtime ready, registered, mirror synced, server up)
 *      in the empty registry and in the large one, and the node's RSS in each: the difference
 *      per model is what its mirror costs in the real program;
 *   4. etcd round trips per load: requests etcd served (its grpc_server_handled_total, by method)
 *      while N models were loaded one at a time with ensureLoaded (sync) over 3 nodes, minus
 *      what the idle cluster asks in as long (keep-alives, republishes), per load;
 *   5. failover after kill -9 of the pod holding most copies, per model: TTL (kill to its
 *      instance key's delete), re-placement (to a Pending copy elsewhere), pick-up (Pending to
 *      Loading) and load (Loading to Loaded), as a watcher of the registry sees them.
 * Parts 3-5 need mm-node with --listen; without it they are skipped, saying so.
 * usage: bench_node MM_NODE MM_RUNTIME MAKE_BREAST_CANCER [M models (100000)] [C copies (20000)]
 *                   [N loads (20)] */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/keys.h"
#include "mm/mirror.h"
#include "mm/records.h"
#include "mmclient.h"

#define STANDINS 100   /* stand-in instances holding the bulk copies */
#define TXN_OPS 128    /* etcd's default --max-txn-ops */
#define IN_FLIGHT 8    /* bulk txns at once */
#define MAX_LOADS 200

static struct cluster cl;
static char model_file[512];
static char work[256];

static long rss_kib_of(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_node: %s\n", what);
    cluster_dump_logs(&cl, true);
    return 1;
}

/* ---------------------------------------------------------------- 1. bulk registry */

struct bulk {
    size_t models, copies, next, done, failed, payload;
    int in_flight;
    int64_t lease;
    int64_t now_ms;
};

/* The record of key i of the bulk set: stand-in instances first, then models, then copies.
 * key and value are the caller's buffers. */
static void bulk_record(const struct bulk *b, size_t i, char *key, size_t key_size, char **value,
                        int64_t *lease)
{
    *lease = 0;
    if (i < STANDINS) {
        char iid[16];
        snprintf(iid, sizeof(iid), "bulk-%03zu", i);
        keys_instance(key, key_size, cl.name, iid, NULL);
        struct instance_record r = {0};
        snprintf(r.address, sizeof(r.address), "127.0.0.1:%zu", 40000 + i);
        snprintf(r.runtime, sizeof(r.runtime), "bulk");
        r.labels.n = 1;
        snprintf(r.labels.label[0], sizeof(r.labels.label[0]), "mt:bulk");
        r.capacity_bytes = 1ULL << 40;
        r.start_ms = b->now_ms;
        r.lease = b->lease;
        *value = record_encode(RECORD_INSTANCE, &r);
        *lease = b->lease;
        return;
    }
    i -= STANDINS;
    if (i < b->models) {
        char id[32];
        snprintf(id, sizeof(id), "bulk-model-%06zu", i);
        keys_model(key, key_size, cl.name, id, NULL);
        struct model_record r = {0};
        snprintf(r.type, sizeof(r.type), "bulk");
        snprintf(r.storage_path, sizeof(r.storage_path), "bulk/%s.json", id);
        r.size_bytes = 1000000;
        r.last_used_ms = b->now_ms - (int64_t)i;
        r.registered_ms = b->now_ms - 3600000;
        *value = record_encode(RECORD_MODEL, &r);
        return;
    }
    i -= b->models;
    char id[32], iid[16];
    snprintf(id, sizeof(id), "bulk-model-%06zu", i % b->models);
    snprintf(iid, sizeof(iid), "bulk-%03zu", (i / b->models + i) % STANDINS);
    keys_copy(key, key_size, cl.name, id, iid, NULL);
    struct copy_record r = {.state = COPY_LOADED, .since_ms = b->now_ms, .size_bytes = 1000000};
    *value = record_encode(RECORD_COPY, &r);
    *lease = b->lease;
}

static void bulk_next(struct bulk *b);

static void bulk_done(int status, const struct mm_error *err, struct etcd_response *resp,
                      void *arg)
{
    struct bulk *b = arg;
    b->in_flight--;
    if (status < 0) {
        fprintf(stderr, "bulk txn: %s\n", err->msg);
        b->failed++;
    }
    b->done++;
    bulk_next(b);
}

static void bulk_next(struct bulk *b)
{
    size_t total = STANDINS + b->models + b->copies;
    static char keys[TXN_OPS][KEYS_MAX];
    static char *values[TXN_OPS];
    static struct etcd_op ops[TXN_OPS];
    while (b->in_flight < IN_FLIGHT && b->next < total && !b->failed) {
        size_t n = 0;
        for (; n < TXN_OPS && b->next < total; n++, b->next++) {
            int64_t lease = 0;
            bulk_record(b, b->next, keys[n], KEYS_MAX, &values[n], &lease);
            ops[n] = (struct etcd_op){.kind = ETCD_OP_PUT, .key = keys[n], .value = values[n],
                                      .lease = lease};
            b->payload += strlen(keys[n]) + (values[n] ? strlen(values[n]) : 0);
        }
        struct etcd_txn txn = {.success = ops, .n_success = n};
        /* etcd_txn encodes the request at once: the buffers are free again on return. */
        int rc = etcd_txn(cl.etcd_client, &txn, bulk_done, b, NULL);
        for (size_t k = 0; k < n; k++) {
            rc = values[k] ? rc : -ENOMEM;
            free(values[k]);
            values[k] = NULL;
        }
        if (rc < 0) {
            b->failed++;
            return;
        }
        b->in_flight++;
    }
}

static bool bulk_finished(void *arg)
{
    struct bulk *b = arg;
    return b->in_flight == 0 && (b->failed || b->next >= STANDINS + b->models + b->copies);
}

static int write_registry(size_t models, size_t copies)
{
    struct mm_error err = {0};
    struct bulk b = {.models = models, .copies = copies, .now_ms = cluster_epoch_ms()};
    if (etcd_sync_lease_grant(cl.etcd_client, 3600, &b.lease, &err) < 0) {
        fprintf(stderr, "lease: %s\n", err.msg);
        return -1;
    }
    long long t0 = harness_now_ms();
    bulk_next(&b);
    harness_run_until(cl.loop, bulk_finished, &b, 600000);
    long long took = harness_now_ms() - t0;
    size_t total = STANDINS + models + copies;
    printf("registry: %zu models, %zu copies, %d stand-in instances written in %lld ms with %zu "
           "txns of up to %d puts (%d at once): %.0f records/s, %.1f MB of keys and values\n",
           models, copies, STANDINS, took, b.done, TXN_OPS, IN_FLIGHT,
           took > 0 ? total * 1000.0 / took : 0.0, b.payload / 1e6);
    return b.failed ? -1 : 0;
}

/* ---------------------------------------------------------------- 2. mirror memory */

static bool synced(void *arg)
{
    return mirror_state(arg) == MIRROR_SYNCED;
}

static int add_bytes(const struct mirror_entry *e, void *arg)
{
    *(size_t *)arg += e->key_len + e->value_len;
    return 0;
}

static void mirror_memory(size_t models, size_t copies)
{
    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    malloc_trim(0);
    size_t heap0 = heap_in_use();
    long rss0 = rss_kib_of(getpid());
    struct mirror *m = NULL;
    struct mm_error err = {0};
    if (mirror_new(cl.etcd_client, prefix, NULL, &m, &err) < 0 || mirror_start(m) < 0) {
        fprintf(stderr, "mirror: %s\n", err.msg);
        return;
    }
    long long t0 = harness_now_ms();
    bool ok = harness_run_until(cl.loop, synced, m, 120000);
    long long took = harness_now_ms() - t0;
    size_t heap1 = heap_in_use();
    long rss1 = rss_kib_of(getpid());
    size_t keys = mirror_count(m);
    size_t payload = 0;
    mirror_foreach_prefix(m, "", 0, add_bytes, &payload); /* the records' own bytes */
    printf("mirror: %s %zu keys in %lld ms; heap %.0f bytes per model (%.0f per key), RSS %.0f "
           "bytes per model; the records are %.0f bytes per key: heap/payload %.2f\n",
           ok ? "listed" : "did NOT finish listing", keys, took,
           (double)(heap1 - heap0) / (double)models, (double)(heap1 - heap0) / (double)keys,
           (rss1 - rss0) * 1024.0 / (double)models, (double)payload / (double)keys,
           (double)(heap1 - heap0) / (double)payload);
    (void)copies;
    mirror_free(m);
}

/* ---------------------------------------------------------------- 3. start-up */

static int node_startup(size_t pod, const char *what, long *rss_kib, long long *took)
{
    int rc = cluster_node_start(&cl, pod);
    if (rc < 0)
        return rc;
    *took = cl.pods[pod].node_start_took_ms;
    cluster_run(&cl, 1000); /* settle: the first republish, the mirror's first events */
    *rss_kib = rss_kib_of(cl.pods[pod].node_pid);
    printf("node start-up, %s: %lld ms to LISTENING, RSS %ld KiB\n", what, *took, *rss_kib);
    cluster_node_signal(&cl, pod, SIGTERM);
    int status = cluster_node_wait(&cl, pod, 30000);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "node %s: exit status 0x%x after SIGTERM\n", cl.pods[pod].iid,
                (unsigned)status);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- 4. round trips */

struct method_counts {
    double range, txn, put, del, lease_grant, lease_revoke, keepalive, watch, other;
};

static int scrape(struct method_counts *out)
{
    char cmd[256];
    static char buf[1 << 20];
    snprintf(cmd, sizeof(cmd), "curl -s http://127.0.0.1:%d/metrics | grep '^grpc_server_handled_total'",
             cl.etcd.metrics_port);
    memset(out, 0, sizeof(*out));
    if (harness_capture(cmd, buf, sizeof(buf)) != 0)
        return -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *m = strstr(line, "grpc_method=\"");
        char *sp = strrchr(line, ' ');
        if (!m || !sp)
            continue;
        m += 13;
        double v = atof(sp + 1);
        if (strncmp(m, "Range\"", 6) == 0)
            out->range += v;
        else if (strncmp(m, "Txn\"", 4) == 0)
            out->txn += v;
        else if (strncmp(m, "Put\"", 4) == 0)
            out->put += v;
        else if (strncmp(m, "DeleteRange\"", 12) == 0)
            out->del += v;
        else if (strncmp(m, "LeaseGrant\"", 11) == 0)
            out->lease_grant += v;
        else if (strncmp(m, "LeaseRevoke\"", 12) == 0)
            out->lease_revoke += v;
        else if (strncmp(m, "LeaseKeepAlive\"", 15) == 0)
            out->keepalive += v;
        else if (strncmp(m, "Watch\"", 6) == 0)
            out->watch += v;
        else
            out->other += v;
    }
    return 0;
}

static double counts_total(const struct method_counts *c)
{
    return c->range + c->txn + c->put + c->del + c->lease_grant + c->lease_revoke + c->keepalive +
           c->watch + c->other;
}

static void counts_diff(const struct method_counts *a, const struct method_counts *b,
                        struct method_counts *out)
{
    out->range = b->range - a->range;
    out->txn = b->txn - a->txn;
    out->put = b->put - a->put;
    out->del = b->del - a->del;
    out->lease_grant = b->lease_grant - a->lease_grant;
    out->lease_revoke = b->lease_revoke - a->lease_revoke;
    out->keepalive = b->keepalive - a->keepalive;
    out->watch = b->watch - a->watch;
    out->other = b->other - a->other;
}

static int round_trips(size_t n_loads)
{
    struct mmc_reply r;
    char buf[2048];
    for (size_t i = 0; i < n_loads; i++) {
        char id[16], path[64];
        snprintf(id, sizeof(id), "m%03zu", i);
        snprintf(path, sizeof(path), "xgb/%s.json", id);
        if (cluster_copy_file(&cl, model_file, path) < 0)
            return fail("model file");
        mmc_register(cl.pods[i % 3].api, id, "xgboost", path, "", false, false, 0, 20000, &r);
        if (r.code != GRPC_STATUS_OK) {
            fprintf(stderr, "register %s: %s\n", id, mmc_describe(&r, buf, sizeof(buf)));
            return -1;
        }
    }
    cluster_run(&cl, 500);
    struct method_counts idle0, idle1, idle, load0, load1, load;
    long long t0 = harness_now_ms();
    scrape(&idle0);
    cluster_run(&cl, 3000);
    scrape(&idle1);
    long long idle_ms = harness_now_ms() - t0;
    counts_diff(&idle0, &idle1, &idle);
    t0 = harness_now_ms();
    scrape(&load0);
    size_t ok = 0;
    for (size_t i = 0; i < n_loads; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%03zu", i);
        mmc_ensure(cl.pods[(i + 1) % 3].api, id, (uint64_t)cluster_epoch_ms(), true, 20000, &r);
        if (r.code == GRPC_STATUS_OK && r.status == MMC_LOADED)
            ok++;
        else
            fprintf(stderr, "ensureLoaded %s: %s\n", id, mmc_describe(&r, buf, sizeof(buf)));
    }
    cluster_run(&cl, 300); /* the last Loaded puts */
    scrape(&load1);
    long long load_ms = harness_now_ms() - t0;
    counts_diff(&load0, &load1, &load);
    double f = (double)load_ms / (double)idle_ms, n = (double)(ok ? ok : 1);
    printf("etcd round trips per load (%zu loads in %lld ms over 3 nodes, the idle rate "
           "subtracted): %.1f in all = range %.1f, txn %.1f, put %.1f, delete %.1f, lease "
           "grant %.1f, keep-alive %.1f, other %.1f; idle: %.1f requests/s\n",
           ok, load_ms, (counts_total(&load) - counts_total(&idle) * f) / n,
           (load.range - idle.range * f) / n, (load.txn - idle.txn * f) / n,
           (load.put - idle.put * f) / n, (load.del - idle.del * f) / n,
           (load.lease_grant - idle.lease_grant * f) / n, (load.keepalive - idle.keepalive * f) / n,
           (load.other + load.watch + load.lease_revoke -
            (idle.other + idle.watch + idle.lease_revoke) * f) / n,
           counts_total(&idle) * 1000.0 / (double)idle_ms);
    return ok == n_loads ? 0 : -1;
}

/* ---------------------------------------------------------------- 5. failover */

struct failover {
    const char *gone_iid;
    long long gone_ms;
    long long pending[MAX_LOADS], loading[MAX_LOADS], loaded[MAX_LOADS];
};
static struct failover fo;

static void fo_event(const struct mirror_event *ev, void *arg)
{
    struct key_parts kp;
    if (keys_parse(ev->key, ev->key_len, cl.name, &kp) < 0)
        return;
    long long now = harness_now_ms();
    if (kp.kind == KEY_INSTANCE && ev->kind == MIRROR_DELETE && fo.gone_iid &&
        strlen(fo.gone_iid) == kp.first_len && memcmp(fo.gone_iid, kp.first, kp.first_len) == 0 &&
        !fo.gone_ms)
        fo.gone_ms = now;
    if (kp.kind != KEY_COPY || ev->kind != MIRROR_PUT || !fo.gone_iid ||
        (strlen(fo.gone_iid) == kp.second_len &&
         memcmp(fo.gone_iid, kp.second, kp.second_len) == 0))
        return;
    if (kp.first_len != 4 || kp.first[0] != 'm')
        return;
    int m = atoi(kp.first + 1);
    struct copy_record rec;
    if (m < 0 || m >= MAX_LOADS || record_decode(RECORD_COPY, ev->new_value, ev->new_len, &rec,
                                                 NULL) < 0)
        return;
    if (rec.state == COPY_PENDING && !fo.pending[m])
        fo.pending[m] = now;
    if (rec.state == COPY_LOADING && !fo.loading[m])
        fo.loading[m] = now;
    if (rec.state == COPY_LOADED && !fo.loaded[m])
        fo.loaded[m] = now;
}

struct fo_wait {
    const int *models;
    size_t n;
};

static bool fo_all(void *arg)
{
    struct fo_wait *fw = arg;
    for (size_t k = 0; k < fw->n; k++)
        if (!fo.loaded[fw->models[k]])
            return false;
    return true;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void print_phase(const char *name, long long *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_ll);
    printf("  %-13s median %5lld ms, max %5lld ms\n", name, v[n / 2], v[n - 1]);
}

static int failover(size_t n_loads)
{
    static struct cluster_copy copies[4 * MAX_LOADS];
    int n = cluster_copies(&cl, NULL, copies, 4 * MAX_LOADS);
    if (n < 0)
        return -1;
    size_t per_pod[3] = {0};
    for (int k = 0; k < n; k++) {
        int pod = cluster_pod_of(&cl, copies[k].iid, strlen(copies[k].iid));
        if (pod >= 0 && pod < 3 && copies[k].rec.state == COPY_LOADED)
            per_pod[pod]++;
    }
    size_t victim = per_pod[1] > per_pod[0] ? 1 : 0;
    victim = per_pod[2] > per_pod[victim] ? 2 : victim;
    int models[MAX_LOADS];
    size_t n_models = 0;
    for (int k = 0; k < n; k++)
        if (strcmp(copies[k].iid, cl.pods[victim].iid) == 0 && copies[k].model[0] == 'm' &&
            copies[k].rec.state == COPY_LOADED)
            models[n_models++] = atoi(copies[k].model + 1);
    if (n_models == 0)
        return fail("no copies to fail over");

    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    struct mirror *m = NULL;
    struct mirror_sub *sub = NULL;
    struct mm_error err = {0};
    struct mirror_config mcfg = {.max_backoff_ms = 200};
    if (mirror_new(cl.etcd_client, prefix, &mcfg, &m, &err) < 0 ||
        mirror_subscribe(m, "", 0, fo_event, NULL, &sub) < 0 || mirror_start(m) < 0 ||
        !harness_run_until(cl.loop, synced, m, 10000)) {
        fprintf(stderr, "mirror: %s\n", err.msg);
        return -1;
    }
    memset(&fo, 0, sizeof(fo));
    fo.gone_iid = cl.pods[victim].iid;
    long long t_kill = harness_now_ms();
    cluster_pod_kill(&cl, victim);
    struct fo_wait fw = {models, n_models};
    bool ok = harness_run_until(cl.loop, fo_all, &fw, 30000);
    long long ttl = fo.gone_ms ? fo.gone_ms - t_kill : -1;
    static long long total[MAX_LOADS], replace[MAX_LOADS], pickup[MAX_LOADS], load[MAX_LOADS];
    size_t k = 0;
    for (size_t j = 0; j < n_models; j++) {
        int i = models[j];
        if (!fo.loaded[i] || !fo.pending[i] || !fo.loading[i])
            continue;
        total[k] = fo.loaded[i] - t_kill;
        replace[k] = fo.pending[i] - fo.gone_ms;
        pickup[k] = fo.loading[i] - fo.pending[i];
        load[k] = fo.loaded[i] - fo.loading[i];
        k++;
    }
    printf("failover after kill -9 of %s holding %zu of %zu models (lease TTL %s): %s; instance "
           "key gone after %lld ms\n",
           cl.pods[victim].iid, n_models, n_loads, cl.cfg.lease_ttl,
           ok ? "all Loaded elsewhere" : "NOT all Loaded elsewhere within 30 s", ttl);
    if (k > 0) {
        print_phase("total", total, k);
        print_phase("re-placement", replace, k);
        print_phase("pick-up", pickup, k);
        print_phase("load", load, k);
    }
    mirror_free(m);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------- main */

static void cleanup(void)
{
    cluster_free(&cl);
    if (work[0]) {
        char cmd[400], out[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
        work[0] = '\0';
    }
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 7) {
        fprintf(stderr, "usage: bench_node MM_NODE MM_RUNTIME MAKE_BREAST_CANCER [models] "
                        "[copies] [loads]\n");
        return 2;
    }
    const char *mm_node = argv[1], *mm_runtime = argv[2], *maker = argv[3];
    size_t models = argc > 4 ? strtoul(argv[4], NULL, 10) : 100000;
    size_t copies = argc > 5 ? strtoul(argv[5], NULL, 10) : 20000;
    size_t loads = argc > 6 ? strtoul(argv[6], NULL, 10) : 20;
    if (models == 0 || loads == 0 || loads > MAX_LOADS) {
        fprintf(stderr, "bench_node: models > 0, 0 < loads <= %d\n", MAX_LOADS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bool live = cluster_node_has_listen(mm_node);

    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-bench-node-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(work))
        return 1;
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker, work);
    if (harness_capture(cmd, out, sizeof(out)) != 0) {
        fprintf(stderr, "%s: %s\n", cmd, out);
        return 1;
    }
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);

    struct cluster_config cfg = {.mm_node = mm_node,
                                 .mm_runtime = mm_runtime,
                                 .name = "bench",
                                 .n_pods = 3,
                                 .max_loading_concurrency = 2,
                                 .runtime_load_timeout_ms = 20000,
                                 .lease_ttl = "2s",
                                 .node_args = "--min-churn-age 10ms --replace-delay 1s",
                                 .start_nodes_later = true};
    if (cluster_start(&cl, &cfg) < 0)
        return fail("cluster start");
    atexit(cleanup);

    long rss_empty = 0, rss_full = 0;
    long long took_empty = 0, took_full = 0;
    if (live && node_startup(0, "empty registry", &rss_empty, &took_empty) < 0)
        return fail("node start-up in the empty registry");

    if (write_registry(models, copies) < 0)
        return fail("bulk registry");
    mirror_memory(models, copies);

    if (!live) {
        printf("node start-up, round trips per load, failover: skipped: %s has no --listen (the "
               "model API is not in this build)\n",
               mm_node);
        return 0;
    }
    char what[64];
    snprintf(what, sizeof(what), "%zu models + %zu copies", models, copies);
    if (node_startup(0, what, &rss_full, &took_full) < 0)
        return fail("node start-up in the large registry");
    printf("node: start-up %.1fx the empty registry's; RSS %.0f bytes per model more\n",
           took_empty > 0 ? (double)took_full / (double)took_empty : 0.0,
           (rss_full - rss_empty) * 1024.0 / (double)models);

    /* The rest on a registry of its own (the stand-ins would only be looked past). */
    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    struct mm_error err = {0};
    if (etcd_sync_delete(cl.etcd_client, prefix, true, NULL, &err) < 0)
        return fail(err.msg);
    for (size_t i = 0; i < 3; i++)
        if (cluster_node_start(&cl, i) < 0)
            return fail("node start");
    if (round_trips(loads) < 0)
        return fail("round trips");
    if (failover(loads) < 0)
        return fail("failover");
    return 0;
}
