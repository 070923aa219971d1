/* test_cluster.c - the mesh as a cluster of real processes: one etcd, three pods (mm-runtime +
 * mm-node, their own cache dirs, one shared models root), driven through the nodes' model API
 * (mmesh.ModelMesh) and checked against the registry and the runtimes' own answers. One program,
 * one scenario per run (argv[1]), each its own meson test:
 *   cache     60 models whose sizes total 3x the cluster's capacity, asked for (ensureLoaded,
 *             sync) in a skewed order over the three nodes: every one is Loaded; no instance
 *             record ever shows used bytes over its capacity (every revision, through a mirror),
 *             nor does any runtime hold more than its capacity (modelSize answers after every
 *             request); every copy evicted was the least recently used of its pod; at rest the
 *             records agree with the runtimes.
 *   failure   a model that cannot load: tried on another node each time, reported failed after
 *             3 (with the runtime's error), exactly 3 loads; the Failed records expire after
 *             --failure-expiry; a good model loads meanwhile.
 *   failover  kill -9 one pod: every model it held is Loaded elsewhere within the lease TTL +
 *             load time (measured and printed: TTL, re-placement, pick-up, load), exactly one
 *             copy each; then SIGTERM another node: its models are Loaded elsewhere before its
 *             instance record goes (revision order) and it exits 0.
 *   etcd      etcd stopped for 10 s: the nodes keep running and the runtimes keep their models;
 *             restarted: the registry converges (instances, one Loaded copy per model where the
 *             runtime holds it, under the holder's live lease). Then the prefix wiped with
 *             etcdctl: the nodes re-assert instances, copies and model records.
 *   harness   the harness itself, without nodes (runs whatever mm-node is): runtimes started
 *             with their cache dirs and the models root as models dirs, modelSize answers as what a runtime holds,
 *             copy records read back, a pod killed.
 * The mesh scenarios are skipped (exit 77) only when mm-node has no --listen, i.e. before the
 * model API exists.
 * argv: SCENARIO MM_NODE MM_RUNTIME MAKE_BREAST_CANCER */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "harness.h"
#include "mm/etcd_sync.h"
#include "mm/mirror.h"
#include "mm/rpc.h"
#include "mm/spi_sync.h"
#include "mmclient.h"
#include "rtclient.h"

#define MAX_MODELS 64
#define CALL_MS 20000
#define REPLACE_MS 750 /* failover: instance key gone -> the model placed again */

static const char *mm_node, *mm_runtime, *maker;
static char work[256];        /* where the example model is made */
static char model_file[512];  /* the XGBoost model every test model is a copy of */
static uint64_t model_size;   /* its size as mm-runtime measures it once loaded */
static struct cluster cl;
static bool cluster_up;

/* ---------------------------------------------------------------- set-up */

/* Make the example model and measure it in a runtime of its own. */
static void make_model(void)
{
    float expected;
    REQUIRE(harness_example_model_tmp(maker, "cluster-model", work, sizeof(work), NULL, 0,
                                      &expected) == 0);
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);

    char *argv[] = {(char *)mm_runtime, "--listen", "127.0.0.1:0", "--log-level", "warn", NULL};
    pid_t pid = 0;
    int port = 0;
    REQUIRE(harness_spawn_listening(argv, 15000, &pid, &port) == 0);
    struct rt_client rt;
    REQUIRE(rt_open(&rt, port) == 0);
    struct spi_result r = rt_load(&rt, "probe", "xgboost", model_file, &model_size);
    if (r.code < 0)
        fprintf(stderr, "measuring the model: %s\n", r.err.msg);
    rt_close(&rt, pid, 3000);
    REQUIRE(r.code == 0 && model_size > 0);
    fprintf(stderr, "test model: %s, %llu bytes loaded\n", model_file,
            (unsigned long long)model_size);
}

static void start(const char *node_args, uint64_t capacity, size_t n_models)
{
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .n_pods = 3,
        .capacity_bytes = capacity,
        .default_model_size = model_size,
        .runtime_load_timeout_ms = 20000,
        .max_loading_concurrency = 2,
        .lease_ttl = "2s",
        .node_args = node_args,
    };
    long long t0 = harness_now_ms();
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    fprintf(stderr, "cluster of 3 pods up in %lld ms (nodes: %lld, %lld, %lld ms to LISTENING)\n",
            harness_now_ms() - t0, cl.pods[0].node_start_took_ms, cl.pods[1].node_start_took_ms,
            cl.pods[2].node_start_took_ms);
    for (size_t i = 0; i < n_models; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "xgb/m%02zu.json", i);
        REQUIRE(cluster_copy_file(&cl, model_file, rel) == 0);
    }
}

static void model_id(char *out, size_t size, size_t i)
{
    snprintf(out, size, "m%02zu", i);
}

/* Register model i (path xgb/mNN.json), waited for; the reply. */
static void register_model(size_t i, size_t via, bool load_now, bool sync, struct mmc_reply *r)
{
    char id[16], path[64];
    model_id(id, sizeof(id), i);
    snprintf(path, sizeof(path), "xgb/m%02zu.json", i);
    mmc_register(cl.pods[via].api, id, "xgboost", path, "", load_now, sync, 0, CALL_MS, r);
}

/* ---------------------------------------------------------------- registry views */

/* The Loaded copies of every model now, by pod: held[pod][model] (models mNN only). */
struct placement {
    bool loaded[CLUSTER_MAX_PODS][MAX_MODELS];
    int n_loaded[MAX_MODELS];  /* Loaded copies per model */
    int n_any[MAX_MODELS];     /* copy records per model, any state */
    int64_t lease[CLUSTER_MAX_PODS][MAX_MODELS];
};

static int model_index(const char *id)
{
    char *end = NULL;
    if (id[0] != 'm' || !id[1])
        return -1;
    long v = strtol(id + 1, &end, 10);
    return *end == '\0' && v >= 0 && v < MAX_MODELS ? (int)v : -1;
}

static int read_placement(struct placement *p)
{
    static struct cluster_copy copies[1024];
    memset(p, 0, sizeof(*p));
    int n = cluster_copies(&cl, NULL, copies, 1024);
    if (n < 0)
        return n;
    for (int k = 0; k < n && k < 1024; k++) {
        int m = model_index(copies[k].model);
        int pod = cluster_pod_of(&cl, copies[k].iid, strlen(copies[k].iid));
        if (m < 0 || pod < 0)
            continue;
        p->n_any[m]++;
        if (copies[k].rec.state == COPY_LOADED) {
            p->loaded[pod][m] = true;
            p->n_loaded[m]++;
            p->lease[pod][m] = copies[k].lease;
        }
    }
    return 0;
}

static int pod_of_copy(const struct placement *p, int m)
{
    for (size_t i = 0; i < cl.cfg.n_pods; i++)
        if (p->loaded[i][m])
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------- a mirror for the record */

struct watch {
    struct mirror *m;
    struct mirror_sub *instances, *copies;
    /* instance records: every revision checked against its capacity */
    uint64_t instance_puts, over_capacity;
    double max_fill;
    /* per model (mNN): the first event times (monotonic ms) and revisions of interest, set by
     * the scenario through watch_reset */
    const char *gone_iid;         /* pod whose instance delete is waited for */
    long long gone_ms;
    int64_t gone_rev;
    long long pending_ms[MAX_MODELS], loading_ms[MAX_MODELS], loaded_ms[MAX_MODELS];
    int64_t loaded_rev[MAX_MODELS];
    unsigned creates[MAX_MODELS]; /* copy records created (put without an old value) */
    char failed_on[MAX_MODELS][4][32];
    unsigned n_failed_on[MAX_MODELS];
};
static struct watch w;

static void cleanup(void)
{
    if (w.m)
        mirror_free(w.m);
    w.m = NULL;
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    harness_remove_dir(work);
}

static void on_instance(const struct mirror_event *ev, void *arg)
{
    struct key_parts kp;
    if (keys_parse(ev->key, ev->key_len, cl.name, &kp) < 0 || kp.kind != KEY_INSTANCE)
        return;
    if (ev->kind == MIRROR_DELETE) {
        if (w.gone_iid && strlen(w.gone_iid) == kp.first_len &&
            memcmp(w.gone_iid, kp.first, kp.first_len) == 0 && !w.gone_ms) {
            w.gone_ms = harness_now_ms();
            w.gone_rev = ev->revision;
        }
        return;
    }
    struct instance_record rec;
    struct mm_error err = {0};
    if (record_decode(RECORD_INSTANCE, ev->new_value, ev->new_len, &rec, &err) < 0) {
        fprintf(stderr, "instance record at revision %lld: %s\n", (long long)ev->revision,
                err.msg);
        CHECK(0);
        return;
    }
    w.instance_puts++;
    if (rec.capacity_bytes > 0) {
        double fill = (double)rec.used_bytes / (double)rec.capacity_bytes;
        if (fill > w.max_fill)
            w.max_fill = fill;
    }
    if (rec.used_bytes > rec.capacity_bytes) {
        w.over_capacity++;
        fprintf(stderr, "revision %lld: instance %.*s used %llu bytes > capacity %llu\n",
                (long long)ev->revision, (int)kp.first_len, kp.first,
                (unsigned long long)rec.used_bytes, (unsigned long long)rec.capacity_bytes);
    }
}

static void on_copy(const struct mirror_event *ev, void *arg)
{
    struct key_parts kp;
    if (keys_parse(ev->key, ev->key_len, cl.name, &kp) < 0 || kp.kind != KEY_COPY)
        return;
    char id[KEYS_NAME_MAX + 1];
    memcpy(id, kp.first, kp.first_len);
    id[kp.first_len] = '\0';
    int m = model_index(id);
    if (m < 0 || ev->kind == MIRROR_DELETE)
        return;
    struct copy_record rec;
    if (record_decode(RECORD_COPY, ev->new_value, ev->new_len, &rec, NULL) < 0)
        return;
    bool ignored = w.gone_iid && strlen(w.gone_iid) == kp.second_len &&
                   memcmp(w.gone_iid, kp.second, kp.second_len) == 0;
    if (!ev->old_value)
        w.creates[m]++;
    if (rec.state == COPY_FAILED && w.n_failed_on[m] < 4) {
        char iid[32];
        snprintf(iid, sizeof(iid), "%.*s", (int)kp.second_len, kp.second);
        bool seen = false;
        for (unsigned k = 0; k < w.n_failed_on[m]; k++)
            seen |= strcmp(w.failed_on[m][k], iid) == 0;
        if (!seen)
            snprintf(w.failed_on[m][w.n_failed_on[m]++], sizeof(w.failed_on[0][0]), "%s", iid);
    }
    if (ignored)
        return;
    long long now = harness_now_ms();
    if (rec.state == COPY_PENDING && !w.pending_ms[m])
        w.pending_ms[m] = now;
    if (rec.state == COPY_LOADING && !w.loading_ms[m])
        w.loading_ms[m] = now;
    if (rec.state == COPY_LOADED && !w.loaded_ms[m]) {
        w.loaded_ms[m] = now;
        w.loaded_rev[m] = ev->revision;
    }
}

static bool mirror_synced(void *arg)
{
    return mirror_state(w.m) == MIRROR_SYNCED;
}

static void watch_start(void)
{
    memset(&w, 0, sizeof(w));
    char prefix[KEYS_MAX], inst[KEYS_MAX], copies[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    snprintf(inst, sizeof(inst), "/modelmesh/%s/instances/", cl.name);
    snprintf(copies, sizeof(copies), "/modelmesh/%s/copies/", cl.name);
    struct mm_error err = {0};
    struct mirror_config cfg = {.max_backoff_ms = 200};
    REQUIRE(mirror_new(cl.etcd_client, prefix, &cfg, &w.m, &err) == 0);
    REQUIRE(mirror_subscribe(w.m, inst, strlen(inst), on_instance, NULL, &w.instances) == 0);
    REQUIRE(mirror_subscribe(w.m, copies, strlen(copies), on_copy, NULL, &w.copies) == 0);
    REQUIRE(mirror_start(w.m) == 0);
    REQUIRE(harness_run_until(cl.loop, mirror_synced, NULL, 10000));
}

/* Forget the per-model times (not the capacity record). */
static void watch_reset(const char *gone_iid)
{
    w.gone_iid = gone_iid;
    w.gone_ms = 0;
    w.gone_rev = 0;
    memset(w.pending_ms, 0, sizeof(w.pending_ms));
    memset(w.loading_ms, 0, sizeof(w.loading_ms));
    memset(w.loaded_ms, 0, sizeof(w.loaded_ms));
    memset(w.loaded_rev, 0, sizeof(w.loaded_rev));
    memset(w.creates, 0, sizeof(w.creates));
    memset(w.n_failed_on, 0, sizeof(w.n_failed_on));
}

static void watch_stop(void)
{
    mirror_free(w.m);
    w.m = NULL;
}

/* ---------------------------------------------------------------- cache */

/* What each runtime holds of models [0, n): total bytes and count; false on an error. */
static bool runtime_holdings(size_t pod, size_t n, uint64_t *bytes, int *count, bool *held)
{
    const char *ids[MAX_MODELS];
    static char names[MAX_MODELS][8];
    uint64_t sizes[MAX_MODELS];
    for (size_t i = 0; i < n; i++) {
        model_id(names[i], sizeof(names[i]), i);
        ids[i] = names[i];
    }
    int rc = cluster_runtime_sizes(&cl, pod, ids, n, sizes);
    if (rc < 0)
        return false;
    *bytes = 0;
    *count = rc;
    for (size_t i = 0; i < n; i++) {
        *bytes += sizes[i];
        if (held)
            held[i] = sizes[i] > 0;
    }
    return true;
}

/* The skewed order: every model once, in order, each followed by one of five hot models picked
 * with Zipf-like weights 1/k from a fixed seed. */
static size_t skewed_order(size_t n_models, size_t *order)
{
    static const unsigned weight[5] = {60, 30, 20, 15, 12}; /* ~ 60/k */
    unsigned total = 0;
    for (size_t k = 0; k < 5; k++)
        total += weight[k];
    uint64_t seed = 12345;
    size_t n = 0;
    for (size_t i = 0; i < n_models; i++) {
        order[n++] = i;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned r = (unsigned)(seed >> 33) % total;
        size_t hot = 0;
        while (r >= weight[hot])
            r -= weight[hot++];
        order[n++] = hot;
    }
    return n;
}

static void scenario_cache(void)
{
    const size_t n_models = 60;
    /* Three pods holding 20 models in all: 60 models are 3x the cluster's capacity. */
    uint64_t capacity = model_size * 20 / 3;
    /* The records are compared with the runtimes at rest below, with the default publishing
     * intervals: every change of counts is published within the minimum interval. */
    start("--min-churn-age 10ms --load-timeout 20s --failure-expiry 1m",
          capacity, n_models);
    watch_start();
    uint64_t record_cap[3];
    for (size_t i = 0; i < 3; i++) {
        struct instance_record rec;
        REQUIRE(cluster_instance(&cl, cl.pods[i].iid, &rec, NULL) == 1);
        record_cap[i] = rec.capacity_bytes;
        CHECK(rec.capacity_bytes > 0 && rec.capacity_bytes <= capacity);
    }
    fprintf(stderr, "capacity per pod %llu bytes (record %llu), model %llu bytes: %llu fit\n",
            (unsigned long long)capacity, (unsigned long long)record_cap[0],
            (unsigned long long)model_size, (unsigned long long)(record_cap[0] / model_size));

    struct mmc_reply r;
    for (size_t i = 0; i < n_models; i++) {
        register_model(i, i % 3, false, false, &r);
        if (r.code != GRPC_STATUS_OK) {
            char buf[2048];
            fprintf(stderr, "register m%02zu: %s\n", i, mmc_describe(&r, buf, sizeof(buf)));
        }
        REQUIRE(r.code == GRPC_STATUS_OK);
    }

    size_t order[2 * MAX_MODELS];
    size_t n_steps = skewed_order(n_models, order);
    int64_t last_use[MAX_MODELS] = {0}; /* epoch ms of the last ensureLoaded; 0 = never */
    int64_t clock = cluster_epoch_ms();
    struct placement before, after;
    REQUIRE(read_placement(&before) == 0);
    unsigned not_loaded = 0, evictions = 0, lru_violations = 0, runtime_over = 0;
    uint64_t max_runtime_bytes = 0;
    long long t0 = harness_now_ms();
    for (size_t s = 0; s < n_steps; s++) {
        size_t m = order[s];
        char id[16];
        model_id(id, sizeof(id), m);
        int64_t now = cluster_epoch_ms();
        clock = now > clock ? now : clock + 1;
        last_use[m] = clock;
        mmc_ensure(cl.pods[s % 3].api, id, (uint64_t)clock, true, CALL_MS, &r);
        if (!(r.code == GRPC_STATUS_OK && r.status == MMC_LOADED && r.n_copies >= 1)) {
            char buf[2048];
            fprintf(stderr, "step %zu: ensureLoaded %s via %s: %s\n", s, id, cl.pods[s % 3].iid,
                    mmc_describe(&r, buf, sizeof(buf)));
            not_loaded++;
        }
        /* Evictions since the last step: each must have been its pod's least recently used. */
        REQUIRE(read_placement(&after) == 0);
        for (size_t pod = 0; pod < 3; pod++) {
            for (size_t e = 0; e < n_models; e++) {
                if (!before.loaded[pod][e] || after.loaded[pod][e])
                    continue;
                evictions++;
                for (size_t x = 0; x < n_models; x++) {
                    if (x == m || x == e || !after.loaded[pod][x] || !before.loaded[pod][x])
                        continue;
                    if (last_use[e] > last_use[x]) {
                        lru_violations++;
                        fprintf(stderr,
                                "step %zu (%s): %s evicted m%02zu (last used %lld ms ago) but "
                                "kept m%02zu (last used %lld ms ago)\n",
                                s, id, cl.pods[pod].iid, e, (long long)(clock - last_use[e]), x,
                                (long long)(clock - last_use[x]));
                    }
                }
            }
        }
        before = after;
        /* What the runtimes hold, by their own answers, within capacity. */
        for (size_t pod = 0; pod < 3; pod++) {
            uint64_t bytes = 0;
            int count = 0;
            REQUIRE(runtime_holdings(pod, n_models, &bytes, &count, NULL));
            if (bytes > max_runtime_bytes)
                max_runtime_bytes = bytes;
            if (bytes > record_cap[pod]) {
                runtime_over++;
                fprintf(stderr, "step %zu: %s's runtime holds %d models, %llu bytes > %llu\n", s,
                        cl.pods[pod].iid, count, (unsigned long long)bytes,
                        (unsigned long long)record_cap[pod]);
            }
        }
    }
    long long took = harness_now_ms() - t0;
    fprintf(stderr,
            "%zu requests over %zu models in %lld ms (%.1f ms each): %u not Loaded, %u "
            "evictions, %u out of LRU order; instance records: %llu puts, %llu over capacity, "
            "fullest %.0f%%; runtimes: at most %llu bytes held (capacity %llu)\n",
            n_steps, n_models, took, (double)took / (double)n_steps, not_loaded, evictions,
            lru_violations, (unsigned long long)w.instance_puts,
            (unsigned long long)w.over_capacity, w.max_fill * 100,
            (unsigned long long)max_runtime_bytes, (unsigned long long)record_cap[0]);
    CHECK_INT(not_loaded, 0);
    CHECK(evictions >= n_models - 20); /* the cluster holds 20: most models were evicted */
    CHECK_INT(lru_violations, 0);
    CHECK_INT(w.over_capacity, 0);
    CHECK_INT(runtime_over, 0);
    CHECK(w.instance_puts > 0);

    /* At rest: each instance record says what its runtime holds; each model at most one copy. */
    bool agree = false;
    long long t_rest = harness_now_ms();
    while (!agree && harness_now_ms() - t_rest < 5000) {
        agree = true;
        for (size_t pod = 0; pod < 3 && agree; pod++) {
            uint64_t bytes = 0;
            int count = 0;
            struct instance_record rec;
            REQUIRE(runtime_holdings(pod, n_models, &bytes, &count, NULL));
            agree = cluster_instance(&cl, cl.pods[pod].iid, &rec, NULL) == 1 &&
                    rec.used_bytes == bytes && rec.loaded_count == (uint32_t)count &&
                    rec.loading_count == 0;
            if (!agree && harness_now_ms() - t_rest >= 4900)
                fprintf(stderr, "%s: record used %llu loaded %u loading %u; runtime %llu, %d\n",
                        cl.pods[pod].iid, (unsigned long long)rec.used_bytes, rec.loaded_count,
                        rec.loading_count, (unsigned long long)bytes, count);
        }
        if (!agree)
            cluster_run(&cl, 100);
    }
    CHECK(agree);
    REQUIRE(read_placement(&after) == 0);
    for (size_t m = 0; m < n_models; m++)
        CHECK(after.n_loaded[m] <= 1);
    /* The most recently used models are still Loaded: as many as one pod holds (a model among
     * them was followed by fewer loads than its pod has room for, wherever it is). */
    size_t per_pod = (size_t)(record_cap[0] / model_size);
    bool taken[MAX_MODELS] = {false};
    for (size_t k = 0; k < per_pod; k++) {
        size_t best = n_models;
        for (size_t m = 0; m < n_models; m++)
            if (!taken[m] && last_use[m] && (best == n_models || last_use[m] > last_use[best]))
                best = m;
        if (best == n_models)
            break;
        taken[best] = true;
        char id[16];
        model_id(id, sizeof(id), best);
        mmc_status(cl.pods[k % 3].api, id, CALL_MS, &r);
        if (!mmc_is(&r, MMC_LOADED))
            fprintf(stderr, "  %s, the %zu. most recently used, is not Loaded\n", id, k + 1);
        CHECK(r.code == GRPC_STATUS_OK && r.status == MMC_LOADED);
    }
    watch_stop();
}

/* ---------------------------------------------------------------- failure */

static void scenario_failure(void)
{
    const char *garbage = "{\"learner\": \"not an XGBoost model\"}\n";
    start("--min-churn-age 10ms --load-timeout 20s --failure-expiry 4s --max-load-failures 3",
          0, 1);
    REQUIRE(cluster_put_file(&cl, "bad/m50.json", garbage, strlen(garbage)) == 0);
    watch_start();
    watch_reset(NULL);

    struct mmc_reply r;
    char buf[2048];
    long long t0 = harness_now_ms();
    mmc_register(cl.pods[0].api, "m50", "xgboost", "bad/m50.json", "", false, false, 0, CALL_MS,
                 &r);
    REQUIRE(r.code == GRPC_STATUS_OK);
    mmc_ensure(cl.pods[1].api, "m50", (uint64_t)cluster_epoch_ms(), true, CALL_MS, &r);
    long long took = harness_now_ms() - t0;
    fprintf(stderr, "ensureLoaded of a model that cannot load: %s after %lld ms\n",
            mmc_describe(&r, buf, sizeof(buf)), took);
    /* Either an OK answer saying LOADING_FAILED or an error naming why; never LOADED. */
    bool failed_ok = r.code == GRPC_STATUS_OK && r.status == MMC_LOADING_FAILED;
    bool failed_err = r.code != GRPC_STATUS_OK && r.code != GRPC_STATUS_DEADLINE_EXCEEDED &&
                      r.code != GRPC_STATUS_UNKNOWN && strstr(r.details, "XGBoost") != NULL;
    CHECK(failed_ok || failed_err);

    mmc_status(cl.pods[2].api, "m50", CALL_MS, &r);
    fprintf(stderr, "getModelStatus: %s\n", mmc_describe(&r, buf, sizeof(buf)));
    CHECK(mmc_is(&r, MMC_LOADING_FAILED));
    CHECK(r.n_errors >= 1 && strstr(r.errors[0], "XGBoost") != NULL);
    /* Three loads, each on another node, each Failed with the runtime's error. */
    struct cluster_copy copies[8];
    int n = cluster_copies(&cl, "m50", copies, 8);
    CHECK_INT(n, 3);
    bool on[3] = {false, false, false};
    for (int k = 0; k < n && k < 8; k++) {
        CHECK(copies[k].rec.state == COPY_FAILED);
        CHECK(strstr(copies[k].rec.error, "XGBoost") != NULL);
        int pod = cluster_pod_of(&cl, copies[k].iid, strlen(copies[k].iid));
        CHECK(pod >= 0);
        if (pod >= 0)
            on[pod] = true;
    }
    CHECK(on[0] && on[1] && on[2]);
    CHECK_INT(w.creates[50], 3);
    CHECK_INT(w.n_failed_on[50], 3);

    /* A good model loads meanwhile. */
    REQUIRE(cluster_copy_file(&cl, model_file, "xgb/m51.json") == 0);
    mmc_register(cl.pods[2].api, "m51", "xgboost", "xgb/m51.json", "", true, true, 0, CALL_MS,
                 &r);
    CHECK(mmc_is(&r, MMC_LOADED));

    /* The failures expire (4 s after each), the records go, the model is no longer failed. */
    long long t_exp = harness_now_ms();
    int left = -1;
    while (harness_now_ms() - t_exp < 10000) {
        left = cluster_copies(&cl, "m50", copies, 8);
        if (left == 0)
            break;
        cluster_run(&cl, 100);
    }
    fprintf(stderr, "Failed records gone %lld ms after the failure was reported (expiry 4 s)\n",
            harness_now_ms() - t_exp);
    CHECK_INT(left, 0);
    mmc_status(cl.pods[0].api, "m50", CALL_MS, &r);
    fprintf(stderr, "after expiry: %s\n", mmc_describe(&r, buf, sizeof(buf)));
    CHECK(mmc_is(&r, MMC_NOT_LOADED));
    /* Nothing retried on its own: still three loads in all. */
    CHECK_INT(w.creates[50], 3);
    watch_stop();
}

/* ---------------------------------------------------------------- failover */

static bool all_moved(const int *models, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!w.loaded_ms[models[k]])
            return false;
    return true;
}

struct moved_wait {
    const int *models;
    size_t n;
};

static bool moved_cond(void *arg)
{
    struct moved_wait *mw = arg;
    return all_moved(mw->models, mw->n);
}

static void scenario_failover(void)
{
    const size_t n_models = 12;
    start("--min-churn-age 10ms --load-timeout 20s --replace-delay 1s --shutdown-timeout 20s", 0,
          n_models);
    watch_start();
    struct mmc_reply r;
    for (size_t i = 0; i < n_models; i++) {
        register_model(i, i % 3, true, true, &r);
        CHECK(mmc_is(&r, MMC_LOADED));
    }
    struct placement p;
    REQUIRE(read_placement(&p) == 0);
    size_t victim = 0;
    int most = -1;
    for (size_t pod = 0; pod < 3; pod++) {
        int k = 0;
        for (size_t m = 0; m < n_models; m++)
            k += p.loaded[pod][m];
        fprintf(stderr, "%s holds %d models\n", cl.pods[pod].iid, k);
        if (k > most) {
            most = k;
            victim = pod;
        }
    }
    for (size_t m = 0; m < n_models; m++)
        CHECK_INT(p.n_loaded[m], 1);
    int moved[MAX_MODELS];
    size_t n_moved = 0;
    for (size_t m = 0; m < n_models; m++)
        if (p.loaded[victim][m])
            moved[n_moved++] = (int)m;
    REQUIRE(n_moved > 0);

    /* kill -9: the pod (node and runtime) dies at once. */
    watch_reset(cl.pods[victim].iid);
    long long t_kill = harness_now_ms();
    cluster_pod_kill(&cl, victim);
    struct moved_wait mw = {moved, n_moved};
    bool ok = harness_run_until(cl.loop, moved_cond, &mw, 20000);
    CHECK(ok);
    CHECK(w.gone_ms > 0);
    long long ttl = w.gone_ms ? w.gone_ms - t_kill : -1, worst = 0;
    fprintf(stderr, "kill -9 %s (%zu models): instance gone after %lld ms (TTL 2000 ms)\n",
            cl.pods[victim].iid, n_moved, ttl);
    for (size_t k = 0; k < n_moved; k++) {
        int m = moved[k];
        if (!w.loaded_ms[m]) {
            fprintf(stderr, "  m%02d: not Loaded elsewhere within 20 s\n", m);
            continue;
        }
        long long total = w.loaded_ms[m] - t_kill;
        long long replace = w.pending_ms[m] ? w.pending_ms[m] - w.gone_ms : -1;
        long long load = w.pending_ms[m] ? w.loaded_ms[m] - w.pending_ms[m] : -1;
        fprintf(stderr,
                "  m%02d: Loaded elsewhere %lld ms after the kill = TTL %lld + re-placement %lld "
                "+ pick-up %lld + load %lld\n",
                m, total, ttl, replace,
                w.loading_ms[m] && w.pending_ms[m] ? w.loading_ms[m] - w.pending_ms[m] : -1,
                w.loading_ms[m] ? w.loaded_ms[m] - w.loading_ms[m] : -1);
        /* Within the TTL and the load: the lease expires within TTL + 1 s (etcd checks expiry
         * every 500 ms), the model's primary places it again at once (REPLACE_MS for its mirror
         * to see the delete and its txn: not --replace-delay, the fallback when the primary does
         * not), and then it loads. */
        CHECK(replace >= 0 && replace <= REPLACE_MS);
        CHECK(load >= 0 && total <= 2000 + 1000 + REPLACE_MS + load);
        if (total > worst)
            worst = total;
        /* Each one was placed once. */
        CHECK_INT(w.creates[m], 1);
    }
    fprintf(stderr, "failover: all %zu Loaded elsewhere %lld ms after the kill\n", n_moved,
            worst);
    CHECK(ok);
    cluster_run(&cl, 1500); /* no late duplicates */
    REQUIRE(read_placement(&p) == 0);
    for (size_t m = 0; m < n_models; m++) {
        CHECK_INT(p.n_loaded[m], 1);
        CHECK_INT(p.n_any[m], 1);
        CHECK(!p.loaded[victim][m]);
    }

    /* SIGTERM another node: its models go elsewhere before it deregisters; exit 0. */
    size_t term = (victim + 1) % 3;
    n_moved = 0;
    for (size_t m = 0; m < n_models; m++)
        if (p.loaded[term][m])
            moved[n_moved++] = (int)m;
    fprintf(stderr, "SIGTERM %s holding %zu models\n", cl.pods[term].iid, n_moved);
    watch_reset(cl.pods[term].iid);
    long long t_term = harness_now_ms();
    REQUIRE(cluster_node_signal(&cl, term, SIGTERM) == 0);
    int status = -1;
    while (harness_now_ms() - t_term < 25000 && (status = cluster_node_wait(&cl, term, 0)) == -1)
        cluster_run(&cl, 20);
    long long exit_ms = harness_now_ms() - t_term;
    cluster_run(&cl, 300); /* the last events of the shutdown */
    fprintf(stderr, "SIGTERM: exit status 0x%x after %lld ms; instance gone at revision %lld\n",
            (unsigned)status, exit_ms, (long long)w.gone_rev);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(w.gone_rev > 0);
    for (size_t k = 0; k < n_moved; k++) {
        int m = moved[k];
        fprintf(stderr, "  m%02d: Loaded elsewhere at revision %lld, %lld ms after SIGTERM\n", m,
                (long long)w.loaded_rev[m], w.loaded_ms[m] ? w.loaded_ms[m] - t_term : -1);
        CHECK(w.loaded_rev[m] > 0 && w.gone_rev > 0 && w.loaded_rev[m] < w.gone_rev);
    }
    REQUIRE(read_placement(&p) == 0);
    for (size_t m = 0; m < n_models; m++) {
        CHECK_INT(p.n_loaded[m], 1);
        CHECK(!p.loaded[term][m]);
    }
    watch_stop();
}

/* ---------------------------------------------------------------- etcd */

/* The registry agrees with the runtimes: each live pod's instance record is there; each model
 * has one copy, Loaded, on the pod whose runtime holds it, under that pod's lease; model records
 * are there with what was registered. why says what does not (yet). */
static bool converged(size_t n_models, bool held[3][MAX_MODELS], char *why, size_t size)
{
    int64_t lease[3] = {0};
    for (size_t pod = 0; pod < 3; pod++) {
        struct instance_record rec;
        if (cluster_instance(&cl, cl.pods[pod].iid, &rec, &lease[pod]) != 1) {
            snprintf(why, size, "no instance record of %s", cl.pods[pod].iid);
            return false;
        }
        if (rec.lease != lease[pod]) {
            snprintf(why, size, "%s's record names lease %llx, is under %llx", cl.pods[pod].iid,
                     (unsigned long long)rec.lease, (unsigned long long)lease[pod]);
            return false;
        }
    }
    struct placement p;
    if (read_placement(&p) < 0) {
        snprintf(why, size, "copies unreadable");
        return false;
    }
    for (size_t m = 0; m < n_models; m++) {
        char id[16];
        model_id(id, sizeof(id), m);
        struct model_record mr;
        if (cluster_model(&cl, id, &mr) != 1 || strcmp(mr.type, "xgboost") != 0) {
            snprintf(why, size, "model record %s missing or not xgboost", id);
            return false;
        }
        char path[64];
        snprintf(path, sizeof(path), "xgb/m%02zu.json", m);
        if (strcmp(mr.storage_path, path) != 0) {
            snprintf(why, size, "model record %s has path '%.64s'", id, mr.storage_path);
            return false;
        }
        if (p.n_any[m] != 1 || p.n_loaded[m] != 1) {
            snprintf(why, size, "%s has %d copies, %d Loaded", id, p.n_any[m], p.n_loaded[m]);
            return false;
        }
        int pod = pod_of_copy(&p, (int)m);
        if (!held[pod][m]) {
            snprintf(why, size, "%s Loaded on %s, whose runtime does not hold it", id,
                     cl.pods[pod].iid);
            return false;
        }
        if (p.lease[pod][m] != lease[pod]) {
            snprintf(why, size, "copy %s/%s under lease %llx, its instance under %llx", id,
                     cl.pods[pod].iid, (unsigned long long)p.lease[pod][m],
                     (unsigned long long)lease[pod]);
            return false;
        }
    }
    return true;
}

static void wait_converged(const char *what, size_t n_models, bool held[3][MAX_MODELS])
{
    char why[512] = "";
    long long t0 = harness_now_ms();
    bool ok = false;
    while (!(ok = converged(n_models, held, why, sizeof(why))) && harness_now_ms() - t0 < 15000)
        cluster_run(&cl, 100);
    fprintf(stderr, "%s: registry %s after %lld ms%s%s\n", what, ok ? "converged" : "NOT converged",
            harness_now_ms() - t0, ok ? "" : ": ", ok ? "" : why);
    CHECK(ok);
}

static void print_holdings(const char *what, size_t n_models, bool held[3][MAX_MODELS])
{
    fprintf(stderr, "%s:", what);
    for (size_t pod = 0; pod < 3; pod++) {
        fprintf(stderr, " %s {", cl.pods[pod].iid);
        for (size_t m = 0; m < n_models; m++)
            if (held[pod][m])
                fprintf(stderr, " m%02zu", m);
        fprintf(stderr, " }");
    }
    fprintf(stderr, "\n");
}

/* Every model held by exactly one runtime: held[pod][m]; false if a runtime does not answer. */
static bool holdings(size_t n_models, bool held[3][MAX_MODELS], int *total)
{
    *total = 0;
    memset(held, 0, 3 * MAX_MODELS * sizeof(bool));
    for (size_t pod = 0; pod < 3; pod++) {
        uint64_t bytes;
        int count;
        if (!runtime_holdings(pod, n_models, &bytes, &count, held[pod]))
            return false;
        *total += count;
    }
    return true;
}

static void scenario_etcd(void)
{
    const size_t n_models = 9;
    start("--min-churn-age 10ms --load-timeout 20s", 0, n_models);
    struct mmc_reply r;
    for (size_t i = 0; i < n_models; i++) {
        register_model(i, i % 3, true, true, &r);
        CHECK(mmc_is(&r, MMC_LOADED));
    }
    bool held[3][MAX_MODELS], now[3][MAX_MODELS];
    int total = 0;
    REQUIRE(holdings(n_models, held, &total));
    CHECK_INT(total, (int)n_models);
    wait_converged("before", n_models, held);

    /* etcd down for 10 s: nodes keep running, runtimes keep every model. */
    REQUIRE(harness_etcd_stop(&cl.etcd) == 0);
    long long t0 = harness_now_ms();
    bool kept = true, alive = true;
    while (harness_now_ms() - t0 < 10000) {
        usleep(2000 * 1000);
        int t = 0;
        bool same = holdings(n_models, now, &t) && memcmp(now, held, sizeof(now)) == 0;
        if (!same) {
            print_holdings("runtimes held", n_models, held);
            print_holdings("and now hold", n_models, now);
        }
        kept &= same;
        for (size_t pod = 0; pod < 3; pod++)
            alive &= cl.pods[pod].node_pid > 0 && cluster_node_wait(&cl, pod, 0) == -1;
    }
    fprintf(stderr, "etcd down 10 s: models %s, nodes %s\n", kept ? "kept" : "NOT kept",
            alive ? "running" : "NOT all running");
    CHECK(kept);
    CHECK(alive);
    REQUIRE(harness_etcd_restart(&cl.etcd) == 0);
    wait_converged("etcd restarted", n_models, held);
    REQUIRE(holdings(n_models, now, &total));
    print_holdings("after the restart, runtimes hold", n_models, now);
    CHECK(memcmp(now, held, sizeof(now)) == 0);
    for (size_t i = 0; i < n_models; i++) {
        char id[16];
        model_id(id, sizeof(id), i);
        mmc_status(cl.pods[(i + 1) % 3].api, id, CALL_MS, &r);
        CHECK(mmc_is(&r, MMC_LOADED));
    }

    /* The prefix wiped: everything re-asserted by the nodes. */
    char args[256], out[1024];
    snprintf(args, sizeof(args), "del --prefix /modelmesh/%s/", cl.name);
    CHECK_INT(cluster_etcdctl(&cl, args, out, sizeof(out)), 0);
    fprintf(stderr, "wiped: etcdctl deleted %s", out);
    CHECK(atoi(out) >= (int)(3 + 2 * n_models));
    wait_converged("prefix wiped", n_models, held);
    REQUIRE(holdings(n_models, now, &total));
    CHECK(memcmp(now, held, sizeof(now)) == 0);
    for (size_t i = 0; i < n_models; i++) {
        char id[16];
        model_id(id, sizeof(id), i);
        mmc_status(cl.pods[i % 3].api, id, CALL_MS, &r);
        CHECK(mmc_is(&r, MMC_LOADED));
    }
}

/* ---------------------------------------------------------------- harness */

static void scenario_harness(void)
{
    struct cluster_config cfg = {.mm_node = mm_node,
                                 .mm_runtime = mm_runtime,
                                 .n_pods = 2,
                                 .capacity_bytes = 10 * model_size,
                                 .start_nodes_later = true};
    REQUIRE(cluster_start(&cl, &cfg) == 0);
    cluster_up = true;
    CHECK(cl.pods[0].runtime_pid > 0 && cl.pods[1].runtime_pid > 0 && !cl.pods[0].node_pid);
    CHECK_INT(cluster_pod_of(&cl, "n1", 2), 1);
    CHECK_INT(cluster_pod_of(&cl, "n2", 2), -1);
    REQUIRE(cluster_copy_file(&cl, model_file, "xgb/m00.json") == 0);

    /* A model put in pod 1's cache dir and loaded there: only that runtime holds it. */
    char path[700];
    snprintf(path, sizeof(path), "%s/m01.json", cl.pods[1].cache_dir);
    struct spi_model sm = {.id = "m01", .type = "xgboost", .path = path};
    struct spi_result r;
    REQUIRE(cluster_copy_file(&cl, model_file, "tmp.json") == 0);
    char cmd[1600], out[4096];
    snprintf(cmd, sizeof(cmd), "cp '%s/tmp.json' '%s'", cl.models_root, path);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 0);
    spi_sync_load_model(cl.pods[1].spi, &sm, 10000, &r);
    CHECK_INT(r.code, 0);
    const char *ids[] = {"m00", "m01"};
    uint64_t sizes[2] = {1, 1};
    CHECK_INT(cluster_runtime_sizes(&cl, 0, ids, 2, sizes), 0);
    CHECK(sizes[0] == 0 && sizes[1] == 0);
    CHECK_INT(cluster_runtime_sizes(&cl, 1, ids, 2, sizes), 1);
    CHECK(sizes[0] == 0 && sizes[1] == model_size);
    /* Outside its models dirs (the cache dir and the models root) the runtime refuses. */
    snprintf(path, sizeof(path), "%s/outside-m00.json", cl.dir);
    snprintf(cmd, sizeof(cmd), "cp '%s/xgb/m00.json' '%s'", cl.models_root, path);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 0);
    sm = (struct spi_model){.id = "m00", .type = "xgboost", .path = path};
    spi_sync_load_model(cl.pods[0].spi, &sm, 10000, &r);
    CHECK(r.code < 0);

    /* Records read back as the registry holds them. */
    CHECK_INT(cluster_copies(&cl, NULL, NULL, 0), 0);
    struct copy_record cr = {.state = COPY_LOADED, .since_ms = 1, .size_bytes = model_size};
    char key[KEYS_MAX];
    REQUIRE(keys_copy(key, sizeof(key), cl.name, "m01", "n1", NULL) == 0);
    char *v = record_encode(RECORD_COPY, &cr);
    REQUIRE(v && etcd_sync_put(cl.etcd_client, key, v, 0, NULL, NULL) == 0);
    free(v);
    struct cluster_copy got[2];
    CHECK_INT(cluster_copies(&cl, NULL, got, 2), 1);
    CHECK_STR(got[0].model, "m01");
    CHECK_STR(got[0].iid, "n1");
    CHECK(got[0].rec.state == COPY_LOADED && got[0].rec.size_bytes == model_size);
    CHECK_INT(cluster_copies(&cl, "m00", got, 2), 0);
    CHECK_INT(cluster_count(&cl, "copies/"), 1);
    CHECK_INT(cluster_instance(&cl, "n0", NULL, NULL), 0);
    CHECK_INT(cluster_etcdctl(&cl, "get --prefix /modelmesh/ --keys-only", out, sizeof(out)), 0);
    CHECK(strstr(out, "/modelmesh/c/copies/m01/n1") != NULL);

    /* A pod killed: its runtime is gone, the other answers. */
    pid_t dead = cl.pods[1].runtime_pid;
    cluster_pod_kill(&cl, 1);
    CHECK(cl.pods[1].runtime_pid == 0 && cl.pods[1].spi == NULL && kill(dead, 0) < 0);
    CHECK_INT(cluster_runtime_sizes(&cl, 1, ids, 2, sizes), -ENOTCONN);
    CHECK_INT(cluster_runtime_sizes(&cl, 0, ids, 2, sizes), 0);
    fprintf(stderr, "harness: mm-node %s --listen\n",
            cluster_node_has_listen(mm_node) ? "has" : "has no");
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: test_cluster harness|cache|failure|failover|etcd MM_NODE MM_RUNTIME "
                        "MAKE_BREAST_CANCER\n");
        return 2;
    }
    const char *scenario = argv[1];
    mm_node = argv[2];
    mm_runtime = argv[3];
    maker = argv[4];
    if (strcmp(scenario, "harness") != 0 && !cluster_node_has_listen(mm_node)) {
        printf("SKIP: %s has no --listen: the model API (mmesh.ModelMesh) is not in this "
               "build\n",
               mm_node);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    make_model();
    /* After the harness's own exit handler is registered (make_model spawned a process), so
     * that this one runs first: the cluster stops its processes by pid while they are tracked. */
    atexit(cleanup);
    if (strcmp(scenario, "harness") == 0)
        scenario_harness();
    else if (strcmp(scenario, "cache") == 0)
        scenario_cache();
    else if (strcmp(scenario, "failure") == 0)
        scenario_failure();
    else if (strcmp(scenario, "failover") == 0)
        scenario_failover();
    else if (strcmp(scenario, "etcd") == 0)
        scenario_etcd();
    else {
        fprintf(stderr, "test_cluster: unknown scenario '%s'\n", scenario);
        return 2;
    }
    if (check_failures)
        cluster_dump_logs(&cl, false);
    cleanup();
    return CHECK_DONE();
}
