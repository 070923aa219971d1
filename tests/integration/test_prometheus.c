/* test_prometheus.c - the metrics as a real Prometheus sees them: Debian's prometheus, run by the
 * test from a generated config on a free loopback port with its own data dir, scrapes a local
 * cluster (etcd, two pods of mm-runtime + mm-node, an mm-gateway, an mm-controller) every
 * second; the test sends known traffic and asks Prometheus' HTTP API (/api/v1/query) for the
 * series, which must agree with what was sent:
 *   - every target is up (the exposition parses);
 *   - two models, each loaded once on first use: loadmodel and loading_queue_delay count one
 *     each, cache_miss one per first request (the only one that waited), the load's time no
 *     longer than the first request took;
 *   - 7 + 5 ModelInfer calls (a node's port, the gateway's): invoke_model counts them per model;
 *   - the controller (the leader) says 2 models loaded, then 1 after one is unregistered (whose
 *     unload is counted), and 1 model with a failure after a load that cannot succeed;
 *   - each pod's capacity and used bytes are its instance record's, its LRU age no older than
 *     the model's last use;
 *   - etcd round trips grow when the test registers a model; the mirrors' revision reaches
 *     etcd's and their lag is 0 once nothing is written.
 * Prometheus is stopped by its pid. Skipped (77) without prometheus or without --metrics-listen.
 * argv: MM_NODE MM_RUNTIME MM_GATEWAY MM_CONTROLLER MAKE_BREAST_CANCER PROMETHEUS */
#include <cjson/cJSON.h>
#include <errno.h>
#include <ev.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "rtclient.h"
#include "mm/rpc.h"
#include "mmclient.h"

#define FEATURES 30
#define CALL_MS 30000
#define AGREE_MS 30000 /* bound on waiting for Prometheus to show a value */
#define INFER "/inference.GRPCInferenceService/ModelInfer"
#define METRICS_ARGS "--metrics-listen 127.0.0.1:0"

static struct cluster cl;
static float row[FEATURES];
static char work[256];
static int prom_port;
static pid_t prom_pid;
static char prom_log[400];

/* ---------------------------------------------------------------- the example model */

static void make_model(const char *maker)
{
    float expected;
    REQUIRE(harness_example_model_tmp(maker, "prom", work, sizeof(work), row, FEATURES,
                                      &expected) == 0);
}

/* One ModelInfer call for model on ch, waited for; whether it answered OK. */
static bool infer(struct rpc_channel *ch, const char *model)
{
    grpc_byte_buffer *b = rt_infer_request(model, row, FEATURES);
    struct testcall t = testcall_run(ch, INFER, b, NULL, 0, CALL_MS);
    grpc_byte_buffer_destroy(b);
    bool ok = t.status == GRPC_STATUS_OK;
    if (!ok)
        fprintf(stderr, "  ModelInfer %s: %s: %s\n", model, rpc_status_name(t.status), t.details);
    testcall_clear(&t);
    return ok;
}

static void register_model(const char *id, const char *path)
{
    struct mmc_reply r;
    mmc_register(cl.pods[0].api, id, "xgboost", path, "", false, false, 0, CALL_MS, &r);
    CHECK_INT(r.code, GRPC_STATUS_OK);
    if (r.code != GRPC_STATUS_OK)
        fprintf(stderr, "  registerModel %s: %s\n", id, r.details);
}

/* ---------------------------------------------------------------- the metrics ports */

/* The port of the last "METRICS <port>" line of log, or 0. */
static int metrics_port(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    int port = 0, p;
    char line[512];
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "METRICS ", 8) == 0 && sscanf(line + 8, "%d", &p) == 1 && p > 0 &&
            p <= 65535)
            port = p;
    fclose(f);
    return port;
}

/* ---------------------------------------------------------------- prometheus */

static void add_target(FILE *f, int port, const char *role, const char *pod)
{
    fprintf(f,
            "      - targets: ['127.0.0.1:%d']\n"
            "        labels: {role: '%s', pod: '%s'}\n",
            port, role, pod);
}

/* Write the config scraping every process's metrics port each second; the number of targets. */
static int write_config(const char *path)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "global:\n"
               "  scrape_interval: 1s\n"
               "  scrape_timeout: 900ms\n"
               "  evaluation_interval: 1s\n"
               "scrape_configs:\n"
               "  - job_name: mm\n"
               "    static_configs:\n");
    int n = 0;
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        int port = metrics_port(cl.pods[i].node_log);
        CHECK(port > 0);
        add_target(f, port, "node", cl.pods[i].iid);
        n++;
    }
    int port = metrics_port(cl.gateway_log);
    CHECK(port > 0);
    add_target(f, port, "gateway", "gw");
    n++;
    port = metrics_port(cl.controllers[0].log);
    CHECK(port > 0);
    add_target(f, port, "controller", "ctl0");
    n++;
    REQUIRE(fclose(f) == 0);
    return n;
}

static void prom_start(const char *prometheus, const char *dir)
{
    char cfg[400], data[400], listen[64];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", dir);
    snprintf(data, sizeof(data), "%s/prom-data", dir);
    snprintf(prom_log, sizeof(prom_log), "%s/prometheus.log", dir);
    REQUIRE(mkdir(data, 0700) == 0);
    int targets = write_config(cfg);
    prom_port = harness_free_port();
    REQUIRE(prom_port > 0);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", prom_port);
    char a_cfg[450], a_data[450], a_listen[100];
    snprintf(a_cfg, sizeof(a_cfg), "--config.file=%s", cfg);
    snprintf(a_data, sizeof(a_data), "--storage.tsdb.path=%s", data);
    snprintf(a_listen, sizeof(a_listen), "--web.listen-address=%s", listen);
    char *argv[] = {(char *)prometheus, a_cfg, a_data, a_listen, "--log.level=warn",
                    "--storage.tsdb.retention.time=1h", NULL};
    REQUIRE(harness_spawn(argv, prom_log, &prom_pid) == 0);
    long long deadline = harness_now_ms() + 20000;
    int st = 0;
    while (harness_now_ms() < deadline) {
        st = harness_http(prom_port, "GET", "/-/ready", 1000, NULL, 0);
        if (st == 200 || harness_wait_pid(prom_pid, 0) != -1)
            break;
        usleep(100 * 1000);
    }
    if (st != 200)
        harness_print_tail(prom_log, 4096);
    REQUIRE(st == 200);
    fprintf(stderr, "prometheus on %d scraping %d targets\n", prom_port, targets);
    (void)targets;
}

static void url_encode(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

/* The value of an instant query whose answer is one sample (sum(...), count(...)): *v. 1, 0
 * when the answer is empty (no such series yet), -1 on an error (printed). */
static int prom_query(const char *query, double *v)
{
    char enc[2048], path[2100], body[16384];
    url_encode(query, enc, sizeof(enc));
    snprintf(path, sizeof(path), "/api/v1/query?query=%s", enc);
    int st = harness_http(prom_port, "GET", path, 5000, body, sizeof(body));
    if (st != 200) {
        fprintf(stderr, "  query %s: HTTP %d: %.300s\n", query, st, st > 0 ? body : "");
        return -1;
    }
    cJSON *j = cJSON_Parse(body);
    cJSON *status = cJSON_GetObjectItemCaseSensitive(j, "status");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    cJSON *result = cJSON_GetObjectItemCaseSensitive(data, "result");
    int rc = -1;
    if (!cJSON_IsString(status) || strcmp(status->valuestring, "success") != 0 ||
        !cJSON_IsArray(result)) {
        fprintf(stderr, "  query %s: %.300s\n", query, body);
    } else if (cJSON_GetArraySize(result) == 0) {
        rc = 0;
    } else if (cJSON_GetArraySize(result) == 1) {
        cJSON *value = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(result, 0), "value");
        cJSON *s = cJSON_GetArrayItem(value, 1);
        if (cJSON_IsString(s)) {
            *v = strtod(s->valuestring, NULL);
            rc = 1;
        }
    } else {
        fprintf(stderr, "  query %s: %d series, wanted one\n", query, cJSON_GetArraySize(result));
    }
    cJSON_Delete(j);
    return rc;
}

/* Poll query until its value is within [lo, hi] (bounded); whether it was, printing the last
 * value otherwise. The loop runs meanwhile (the harness's clients). */
static bool agree(const char *query, double lo, double hi)
{
    long long deadline = harness_now_ms() + AGREE_MS;
    double v = NAN;
    int rc;
    do {
        rc = prom_query(query, &v);
        if (rc == 1 && v >= lo && v <= hi)
            return true;
        cluster_run(&cl, 250);
    } while (harness_now_ms() < deadline);
    fprintf(stderr, "  %s = %s%g, wanted [%g, %g]\n", query, rc == 1 ? "" : "(none) ", v, lo,
            hi);
    return false;
}

static bool equal(const char *query, double want)
{
    return agree(query, want, want);
}

/* ---------------------------------------------------------------- the scenario */

static int holder_of(const char *model)
{
    struct cluster_copy cp[4];
    int n = cluster_copies(&cl, model, cp, 4);
    if (n != 1)
        return -1;
    return cluster_pod_of(&cl, cp[0].iid, strlen(cp[0].iid));
}

static void instance_figures(void)
{
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        struct instance_record rec;
        REQUIRE(cluster_instance(&cl, cl.pods[i].iid, &rec, NULL) == 1);
        char q[256];
        snprintf(q, sizeof(q), "modelmesh_instance_capacity_bytes{pod=\"%s\"}", cl.pods[i].iid);
        CHECK(equal(q, (double)rec.capacity_bytes));
        /* the record is published at most every 100 ms: read it again once they agree */
        snprintf(q, sizeof(q), "modelmesh_instance_used_bytes{pod=\"%s\"}", cl.pods[i].iid);
        long long deadline = harness_now_ms() + AGREE_MS;
        double v = -1;
        do {
            REQUIRE(cluster_instance(&cl, cl.pods[i].iid, &rec, NULL) == 1);
            if (prom_query(q, &v) == 1 && v == (double)rec.used_bytes)
                break;
            cluster_run(&cl, 250);
        } while (harness_now_ms() < deadline);
        if (v != (double)rec.used_bytes)
            fprintf(stderr, "  %s = %g, the record says %llu\n", q, v,
                    (unsigned long long)rec.used_bytes);
        CHECK(v == (double)rec.used_bytes);
    }
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 7);
    const char *prometheus = argv[6];
    if (access(prometheus, X_OK) != 0) {
        fprintf(stderr, "no prometheus at %s: skipped\n", prometheus);
        return 77;
    }
    char help[600], out[16384];
    snprintf(help, sizeof(help), "'%s' --help", argv[1]);
    if (harness_capture(help, out, sizeof(out)) != 0 || !strstr(out, "--metrics-listen")) {
        fprintf(stderr, "mm-node has no --metrics-listen: skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    make_model(argv[5]);
    struct cluster_config cfg = {
        .mm_node = argv[1],
        .mm_runtime = argv[2],
        .mm_gateway = argv[3],
        .mm_controller = argv[4],
        .n_pods = 2,
        .capacity_bytes = 64ull << 20,
        .node_args = METRICS_ARGS,
        .gateway_args = METRICS_ARGS,
        .controller_args = METRICS_ARGS,
    };
    REQUIRE(cluster_start_with(&cl, &cfg, true, true) == 0);
    char model[512];
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", work);
    REQUIRE(cluster_copy_file(&cl, model, "bc.json") == 0);
    prom_start(prometheus, cl.dir);

    /* every target scraped, its text parsed */
    CHECK(equal("count(up{job=\"mm\"} == 1)", (double)(cl.cfg.n_pods + 2)));
    /* no load yet: labelled series appear once recorded */
    CHECK(equal("sum(modelmesh_loadmodel_milliseconds_count) or vector(0)", 0));

    /* round trips grow with a registration */
    double rt0 = 0;
    CHECK(agree("sum(mm_etcd_round_trips_total{role=\"node\"})", 1, INFINITY));
    prom_query("sum(mm_etcd_round_trips_total{role=\"node\"})", &rt0);
    register_model("m1", "bc.json");
    register_model("m2", "bc.json");
    CHECK(agree("sum(mm_etcd_round_trips_total{role=\"node\",kind=\"txn\"})", 2,
                INFINITY));
    CHECK(agree("sum(mm_etcd_round_trips_total{role=\"node\"})", rt0 + 2, INFINITY));

    /* m1: 7 calls on pod 0's port; m2: 5 through the gateway; the first of each loads it */
    long long t0 = harness_now_ms();
    CHECK(infer(cl.pods[0].api, "m1"));
    long long first_m1 = harness_now_ms() - t0;
    for (int i = 1; i < 7; i++)
        CHECK(infer(cl.pods[0].api, "m1"));
    t0 = harness_now_ms();
    CHECK(infer(cl.gateway, "m2"));
    long long first_m2 = harness_now_ms() - t0;
    for (int i = 1; i < 5; i++)
        CHECK(infer(cl.gateway, "m2"));
    long long last_m1 = harness_now_ms();
    fprintf(stderr, "first calls: m1 %lld ms, m2 %lld ms\n", first_m1, first_m2);

    CHECK(equal("sum(modelmesh_loadmodel_milliseconds_count)", 2));
    CHECK(equal("sum(modelmesh_loadmodel_milliseconds_count{modelId=\"m1\"})", 1));
    CHECK(equal("sum(modelmesh_loadmodel_milliseconds_count{modelId=\"m2\"})", 1));
    CHECK(agree("sum(modelmesh_loadmodel_milliseconds_sum{modelId=\"m1\"})", 0,
                (double)first_m1));
    CHECK(agree("sum(modelmesh_loadmodel_milliseconds_sum{modelId=\"m2\"})", 0,
                (double)first_m2));
    CHECK(equal("sum(modelmesh_loading_queue_delay_milliseconds_count)", 2));
    CHECK(equal("sum(modelmesh_cache_miss_milliseconds_count{modelId=\"m1\"})", 1));
    CHECK(equal("sum(modelmesh_cache_miss_milliseconds_count{modelId=\"m2\"})", 1));
    CHECK(agree("sum(modelmesh_cache_miss_milliseconds_sum{modelId=\"m1\"})", 0,
                (double)first_m1));
    /* a bucket is cumulative: the +Inf one counts every observation */
    CHECK(equal("sum(modelmesh_loadmodel_milliseconds_bucket{le=\"+Inf\"})", 2));
    CHECK(equal("sum(modelmesh_invoke_model_milliseconds_count{modelId=\"m1\"})", 7));
    CHECK(equal("sum(modelmesh_invoke_model_milliseconds_count{modelId=\"m2\"})", 5));
    CHECK(equal("modelmesh_models_loaded_total{role=\"controller\"}", 2));
    CHECK(equal("modelmesh_models_with_failure_total{role=\"controller\"}", 0));

    /* the pods' figures are their records'; the LRU is no older than m1's last use */
    instance_figures();
    int h = holder_of("m1");
    CHECK(h >= 0);
    if (h >= 0) {
        char q[200];
        snprintf(q, sizeof(q), "modelmesh_instance_lru_age_seconds{pod=\"%s\"}", cl.pods[h].iid);
        CHECK(agree(q, 0, (double)(harness_now_ms() - last_m1) / 1000. + 2));
    }

    /* m2 unregistered: one unload, one model loaded */
    struct mmc_reply r;
    mmc_unregister(cl.pods[0].api, "m2", CALL_MS, &r);
    CHECK_INT(r.code, GRPC_STATUS_OK);
    CHECK(equal("sum(modelmesh_unloadmodel_milliseconds_count{modelId=\"m2\"})", 1));
    CHECK(equal("sum(modelmesh_unloadmodel_milliseconds_count)", 1));
    CHECK(equal("modelmesh_models_loaded_total{role=\"controller\"}", 1));
    instance_figures();

    /* a model whose file is missing fails to load: one model with a failure */
    register_model("bad", "missing.json");
    mmc_ensure(cl.pods[1].api, "bad", 0, true, CALL_MS, &r);
    CHECK(equal("modelmesh_models_with_failure_total{role=\"controller\"}", 1));
    CHECK(agree("sum(modelmesh_loadmodel_failure_total)", 1, 3));

    /* quiet: every mirror has reached etcd's revision */
    char rev[4096];
    int64_t now_rev = 0;
    for (int tries = 0; tries < 20; tries++) {
        if (cluster_etcdctl(&cl, "get / --prefix --keys-only --limit 1 -w json", rev,
                            sizeof(rev)) == 0) {
            char *p = strstr(rev, "\"revision\":");
            if (p)
                now_rev = strtoll(p + 11, NULL, 10);
        }
        char q[200];
        snprintf(q, sizeof(q), "min(mm_mirror_revision)");
        double v = 0;
        if (now_rev > 0 && prom_query(q, &v) == 1 && v == (double)now_rev)
            break;
        cluster_run(&cl, 1000);
    }
    CHECK(now_rev > 0);
    CHECK(equal("min(mm_mirror_revision)", (double)now_rev));
    CHECK(equal("max(mm_mirror_revision_lag)", 0));

    int failures = check_failures;
    if (failures) {
        cluster_dump_logs(&cl, false);
        harness_print_tail(prom_log, 4096);
    }
    int st = harness_stop_pid(prom_pid, 5000);
    CHECK(st != -1);
    cluster_free(&cl);
    snprintf(model, sizeof(model), "rm -rf '%s'", work);
    CHECK(system(model) == 0);
    return check_failures ? 1 : 0;
}
