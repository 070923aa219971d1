/* test_route.c - inference routed through the mesh: one etcd, three pods (mm-runtime + mm-node)
 * and an mm-gateway, real processes, KServe V2 calls from our rpc client:
 *   - an unknown model is NOT_FOUND naming it, on a node and on the gateway;
 *   - 200 concurrent requests for a registered, unloaded model, spread over the three nodes,
 *     all answered with the model's prediction after exactly one load (one copy record, one
 *     runtime holding it);
 *   - every entry point answers (each node, the gateway); a node whose runtime does not hold the
 *     model answers by forwarding; the holder's internal port serves it, another node's refuses
 *     (UNAVAILABLE: it never forwards again);
 *   - a wrong shape is the runtime's INVALID_ARGUMENT, message and all, through a forward;
 *   - a vmodel name, the mm-vmodel-id header and the mm-model-id-bin header; answers name the
 *     concrete id; ModelReady and ModelMetadata through the gateway;
 *   - requests sent while the model's load is held (the runtimes SIGSTOPped) block, then are
 *     answered once the load completes;
 *   - on the gateway (--max-parked 2): two parked calls fill it (a third is refused), clients
 *     that cancel are released at once (two more park), a deadline is honoured while parked;
 *   - a model no instance serves is UNAVAILABLE with the placement's reason;
 *   - the holder's node killed (-9): a request sent to another node at once, while the
 *     registry still has the copy Loaded there, is not an error: the forward fails, the call
 *     has the model placed elsewhere (its copy could not be reached) and is answered; once the
 *     lease expires, the one copy left is elsewhere;
 *   - the holder's node stopped (SIGSTOP, a hung peer) just before a request reaches it
 *     through the gateway: the forward fails once the gateway's keepalive ping goes unanswered
 *     (not at the client's deadline), and the call is answered from the new copy elsewhere.
 * With a fifth argument "scaling", the nodes check copy counts every second with a threshold of
 * 600 requests per minute per copy, and one scenario runs instead:
 *   - 12 requests/s (720 a minute) for one model, spread over the three nodes' external ports:
 *     every request answered; the model gets a second copy within a few checks (its holder
 *     counts what its copy serves, forwarded requests included), and never a third: the next
 *     step waits until the second copy has taken its share (two checks after it is Loaded),
 *     and then a holder sees at most two thirds, 480 a minute, and estimates 960 for the
 *     model, under 2 x 600; each check counts exactly the requests of its window.
 * With "failover" instead (3 pods, lease TTL 10 s), a model's only copy's pod is killed (-9):
 *   - a burst of 24 concurrent requests with a 5 s deadline, through the gateway and the two
 *     other nodes, sent at once while the registry still has the copy Loaded on the dead pod,
 *     is answered OK well inside the TTL (the copy could not be reached: one is placed
 *     elsewhere at once); exactly one copy was placed for them all, and none more a moment
 *     later.
 * With "metrics" instead, the routing metrics are checked against what was sent: 10 requests
 * for m1 and 3 for an unknown name through the gateway, then every /metrics (gateway, nodes):
 *   - the gateway's modelmesh_api_request_milliseconds counts 10 ModelInfer OK for m1 and 3
 *     NOT_FOUND under __other__ (a name not found takes no label), +Inf bucket = count, a sum;
 *   - the first request parked on the gateway while m1 loaded: a queue delay for m1;
 *   - the gateway forwarded 10 to peers (plus its retries), none locally; nothing in flight;
 *   - the nodes' modelmesh_invoke_model_milliseconds for m1 add up to 10 (each request reached
 *     exactly one runtime);
 *   - 4 calls naming vmodel v1 (-> m1) count under modelId="v1", not m1.
 * argv: MM_NODE MM_RUNTIME MM_GATEWAY MAKE_BREAST_CANCER [scaling|metrics|failover] */
#include <errno.h>
#include <ev.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "mm/buf.h"
#include "mm/etcd_sync.h"
#include "mm/rpc.h"
#include "mmclient.h"
#include "rtclient.h"

#define FEATURES 30
#define CALL_MS 30000
#define CONCURRENT 200
#define INFER "/inference.GRPCInferenceService/ModelInfer"

static struct cluster cl;
static float row[FEATURES];
static float expected;
static char work[256];

/* ---------------------------------------------------------------- the example model */

static void make_model(const char *maker)
{
    REQUIRE(harness_example_model_tmp(maker, "route-model", work, sizeof(work), row, FEATURES,
                                      &expected) == 0);
}

/* A ModelInfer request for model (one row; features values per row). */
static grpc_byte_buffer *infer_request(const char *model, int features)
{
    return rt_infer_request(model, row, (size_t)features);
}

/* Whether t is OK with the model's prediction and model_name want (printing what it was if
 * not). */
static bool answered(const struct testcall *t, const char *want)
{
    if (t->status != GRPC_STATUS_OK) {
        fprintf(stderr, "  ModelInfer: %s: %s\n", rpc_status_name(t->status), t->details);
        return false;
    }
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (rpc_decode(t->response, &inference__model_infer_response__descriptor, &m, &err) < 0) {
        fprintf(stderr, "  ModelInfer: %s\n", err.msg);
        return false;
    }
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
    bool ok = strcmp(r->model_name, want) == 0 && strcmp(r->id, "r1") == 0 && r->n_outputs == 1 &&
              r->outputs[0]->contents && r->outputs[0]->contents->n_fp32_contents == 1 &&
              fabsf(r->outputs[0]->contents->fp32_contents[0] - expected) < 1e-6f;
    if (!ok)
        fprintf(stderr, "  ModelInfer: answered model_name '%s', not the prediction of %s\n",
                r->model_name, want);
    protobuf_c_message_free_unpacked(m, NULL);
    return ok;
}

static struct testcall infer_on(struct rpc_channel *ch, const char *model,
                                const struct rpc_header *h, size_t nh, int features,
                                int64_t timeout_ms)
{
    grpc_byte_buffer *b = infer_request(model, features);
    struct testcall t = testcall_run(ch, INFER, b, h, nh, timeout_ms);
    grpc_byte_buffer_destroy(b);
    return t;
}

static bool infer_ok(struct rpc_channel *ch, const char *model, const char *want)
{
    struct testcall t = infer_on(ch, model, NULL, 0, FEATURES, CALL_MS);
    bool ok = answered(&t, want);
    testcall_clear(&t);
    return ok;
}

/* A channel to a node's internal port. */
static struct rpc_channel *internal_channel(size_t i)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", cl.pods[i].internal_port);
    struct mm_error err = {0};
    return rpc_channel_for(cl.rpc, target, &err);
}

static void register_model(const char *id, const char *type)
{
    size_t i = 0; /* the first pod whose node runs (one may have been killed) */
    while (i + 1 < cl.cfg.n_pods && !cl.pods[i].api)
        i++;
    REQUIRE(cl.pods[i].api != NULL);
    struct mmc_reply r;
    mmc_register(cl.pods[i].api, id, type, "bc.json", "", false, false, 0, CALL_MS, &r);
    CHECK_INT(r.code, GRPC_STATUS_OK);
    if (r.code != GRPC_STATUS_OK)
        fprintf(stderr, "  registerModel %s: %s\n", id, r.details);
}

/* The pod whose runtime holds model (its only copy), or -1; *held counts the holders. */
static int holder(const char *model, int *held)
{
    const char *models[1] = {model};
    int who = -1;
    *held = 0;
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        uint64_t size = 0;
        if (cluster_runtime_sizes(&cl, i, models, 1, &size) == 1) {
            (*held)++;
            who = (int)i;
        }
    }
    return who;
}

/* The value of the series "name{labels}" in body, or -1. */
static double value_in(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; (p = strstr(p, series)); p++)
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    return mm_buf_append(arg, data, size * n) == 0 ? size * n : 0;
}

/* The value of the series "name{labels}" in the /metrics of port (-1: no such line, or no
 * answer). */
static double metric_value(int port, const char *series)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    struct mm_buf b = {0};
    CURL *e = curl_easy_init();
    REQUIRE(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    double v = status == 200 && b.data ? value_in(b.data, series) : -1;
    mm_buf_free(&b);
    return v;
}

static void runtimes_signal(int sig)
{
    for (size_t i = 0; i < cl.cfg.n_pods; i++)
        kill(cl.pods[i].runtime_pid, sig);
}

/* ---------------------------------------------------------------- scenarios */

static void metrics(void)
{
    int gw = cl.gateway_metrics_port;
    REQUIRE(gw > 0);
    for (size_t i = 0; i < cl.cfg.n_pods; i++)
        REQUIRE(cl.pods[i].node_metrics_port > 0);
    register_model("m1", "xgboost");
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += infer_ok(cl.gateway, "m1", "m1");
    CHECK_INT(ok, 10);
    for (int i = 0; i < 3; i++) {
        struct testcall t = infer_on(cl.gateway, "nope", NULL, 0, FEATURES, CALL_MS);
        CHECK(rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model nope not found"));
        testcall_clear(&t);
    }
    const char *api = "modelmesh_api_request_milliseconds";
    char s[256];
    snprintf(s, sizeof(s), "%s_count{method=\"ModelInfer\",code=\"OK\",modelId=\"m1\"}", api);
    CHECK_INT(metric_value(gw, s), 10);
    snprintf(s, sizeof(s),
             "%s_bucket{method=\"ModelInfer\",code=\"OK\",modelId=\"m1\",le=\"+Inf\"}", api);
    CHECK_INT(metric_value(gw, s), 10);
    snprintf(s, sizeof(s), "%s_sum{method=\"ModelInfer\",code=\"OK\",modelId=\"m1\"}", api);
    double sum = metric_value(gw, s);
    CHECK(sum > 0);
    snprintf(s, sizeof(s),
             "%s_count{method=\"ModelInfer\",code=\"NOT_FOUND\",modelId=\"__other__\"}", api);
    CHECK_INT(metric_value(gw, s), 3);
    CHECK(metric_value(gw, "modelmesh_req_queue_delay_milliseconds_count{modelId=\"m1\"}") >= 1);
    CHECK_INT(metric_value(gw, "modelmesh_req_queue_delay_milliseconds_count{modelId=\"nope\"}"),
              -1);
    double retried = metric_value(gw, "mm_route_retried_total");
    CHECK(retried >= 0);
    CHECK_INT(metric_value(gw, "mm_route_forwarded_total{to=\"remote\"}"), 10 + retried);
    CHECK_INT(metric_value(gw, "mm_route_forwarded_total{to=\"local\"}"), 0);
    CHECK_INT(metric_value(gw, "mm_route_in_flight{port=\"external\"}"), 0);
    double invoked = 0;
    snprintf(s, sizeof(s), "modelmesh_invoke_model_milliseconds_count{method=\"ModelInfer\","
             "code=\"OK\",modelId=\"m1\"}");
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        double v = metric_value(cl.pods[i].node_metrics_port, s);
        if (v > 0)
            invoked += v;
        CHECK_INT(metric_value(cl.pods[i].node_metrics_port, "mm_route_in_flight{port=\"internal\"}"),
                  0);
    }
    CHECK_INT(invoked, 10);

    /* a vmodel's name labels the calls made with it (as ModelMesh labels them) */
    char key[256];
    snprintf(key, sizeof(key), "/modelmesh/%s/vmodels/v1", cl.name);
    struct mm_error err = {0};
    REQUIRE(etcd_sync_put(cl.etcd_client, key, "{\"v\":1,\"active_model_id\":\"m1\"}", 0, NULL,
                          &err) == 0);
    int via = 0;
    long long until = harness_now_ms() + 5000;
    while (via == 0 && harness_now_ms() < until) { /* until the gateway's mirror has it */
        struct testcall t = infer_on(cl.gateway, "v1", NULL, 0, FEATURES, CALL_MS);
        via += t.status == GRPC_STATUS_OK && answered(&t, "m1");
        testcall_clear(&t);
        if (!via)
            cluster_run(&cl, 100);
    }
    for (int i = 0; i < 3; i++)
        via += infer_ok(cl.gateway, "v1", "m1");
    CHECK_INT(via, 4);
    snprintf(s, sizeof(s), "%s_count{method=\"ModelInfer\",code=\"OK\",modelId=\"v1\"}", api);
    CHECK_INT(metric_value(gw, s), 4);
    snprintf(s, sizeof(s), "%s_count{method=\"ModelInfer\",code=\"OK\",modelId=\"m1\"}", api);
    CHECK_INT(metric_value(gw, s), 10);
    fprintf(stderr, "metrics: gateway api_request m1 OK 10 (sum %.1f ms), NOT_FOUND 3, forwarded "
            "%.0f (retried %.0f); nodes invoke_model m1 %.0f\n", sum, 10 + retried, retried,
            invoked);
}

static void not_found(void)
{
    struct testcall t = infer_on(cl.pods[0].api, "nope", NULL, 0, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model nope not found"));
    testcall_clear(&t);
    t = infer_on(cl.gateway, "nope", NULL, 0, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model nope not found"));
    testcall_clear(&t);
    t = infer_on(cl.pods[1].api, "a/b", NULL, 0, FEATURES, CALL_MS); /* no model id */
    CHECK(rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model a/b not found"));
    testcall_clear(&t);
    t = infer_on(cl.pods[1].api, "", NULL, 0, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_INVALID_ARGUMENT, "model_name is required"));
    testcall_clear(&t);
}

static void one_load_for_many(void)
{
    register_model("m1", "xgboost");
    static struct testcall calls[CONCURRENT];
    memset(calls, 0, sizeof(calls));
    grpc_byte_buffer *b = infer_request("m1", FEATURES);
    long long t0 = harness_now_ms();
    for (int i = 0; i < CONCURRENT; i++)
        REQUIRE(rpc_unary(cl.pods[i % 3].api, INFER, b, NULL, 0, CALL_MS, NULL, testcall_cb,
                          &calls[i], NULL) == 0);
    grpc_byte_buffer_destroy(b);
    CHECK(testcall_wait(cl.loop, calls, CONCURRENT, CALL_MS + 5000));
    long long took = harness_now_ms() - t0;
    int ok = 0;
    for (int i = 0; i < CONCURRENT; i++) {
        ok += answered(&calls[i], "m1");
        testcall_clear(&calls[i]);
    }
    CHECK_INT(ok, CONCURRENT);
    struct cluster_copy copies[4];
    CHECK_INT(cluster_copies(&cl, "m1", copies, 4), 1);
    int held = 0;
    holder("m1", &held);
    CHECK_INT(held, 1);
    fprintf(stderr, "%d concurrent requests for an unloaded model over 3 nodes: %d answered in "
            "%lld ms, 1 copy, %d runtime(s) holding it\n", CONCURRENT, ok, took, held);
}

static void entry_points(void)
{
    int held = 0, h = holder("m1", &held);
    REQUIRE(h >= 0);
    for (size_t i = 0; i < cl.cfg.n_pods; i++)
        CHECK(infer_ok(cl.pods[i].api, "m1", "m1"));
    CHECK(infer_ok(cl.gateway, "m1", "m1"));
    /* the others' runtimes do not hold it: their answers were forwarded */
    CHECK_INT(held, 1);
    size_t other = (size_t)(h + 1) % cl.cfg.n_pods;
    /* internal ports: the holder serves, another node refuses to forward */
    CHECK(infer_ok(internal_channel((size_t)h), "m1", "m1"));
    struct testcall t = infer_on(internal_channel(other), "m1", NULL, 0, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_UNAVAILABLE, "is not loaded on instance"));
    testcall_clear(&t);
    /* mm-hop on the external port: served locally or not at all */
    const struct rpc_header hop[] = {{"mm-hop", "1"}};
    t = infer_on(cl.pods[other].api, "m1", hop, 1, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_UNAVAILABLE, "is not loaded on instance"));
    testcall_clear(&t);
    /* the runtime's own verdict, through a forward */
    t = infer_on(cl.pods[other].api, "m1", NULL, 0, FEATURES - 1, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_INVALID_ARGUMENT, "expected shape [-1, 30], got [1, 29]"));
    testcall_clear(&t);
    t = infer_on(cl.gateway, "m1", NULL, 0, FEATURES - 1, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_INVALID_ARGUMENT, "expected shape [-1, 30], got [1, 29]"));
    testcall_clear(&t);
}

static void names(void)
{
    char key[256];
    snprintf(key, sizeof(key), "/modelmesh/%s/vmodels/v1", cl.name);
    struct mm_error err = {0};
    REQUIRE(etcd_sync_put(cl.etcd_client, key, "{\"v\":1,\"active_model_id\":\"m1\"}", 0, NULL,
                          &err) == 0);
    /* the mirrors have it within moments */
    bool ok = false;
    long long until = harness_now_ms() + 5000;
    while (!ok && harness_now_ms() < until) {
        struct testcall t = infer_on(cl.pods[1].api, "v1", NULL, 0, FEATURES, CALL_MS);
        ok = t.status == GRPC_STATUS_OK && answered(&t, "m1");
        testcall_clear(&t);
        if (!ok)
            cluster_run(&cl, 100);
    }
    CHECK(ok);
    CHECK(infer_ok(cl.pods[2].api, "v1", "m1"));
    CHECK(infer_ok(cl.gateway, "v1", "m1"));
    const struct rpc_header vh[] = {{"mm-vmodel-id", "v1"}};
    struct testcall t = infer_on(cl.gateway, "whatever", vh, 1, FEATURES, CALL_MS);
    CHECK(answered(&t, "m1"));
    testcall_clear(&t);
    const struct rpc_header bin[] = {{"mm-model-id-bin", "m1"}}; /* base64 on the wire */
    t = infer_on(cl.pods[0].api, "whatever", bin, 1, FEATURES, CALL_MS);
    CHECK(answered(&t, "m1"));
    testcall_clear(&t);
    const struct rpc_header concrete[] = {{"mm-model-id", "v1"}}; /* a model id, not a vmodel */
    t = infer_on(cl.pods[0].api, "m1", concrete, 1, FEATURES, CALL_MS);
    CHECK(rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model v1 not found"));
    testcall_clear(&t);

    /* ModelReady and ModelMetadata through the gateway */
    Inference__ModelReadyRequest rq = INFERENCE__MODEL_READY_REQUEST__INIT;
    rq.name = "v1";
    grpc_byte_buffer *b = rpc_encode(&rq.base);
    t = testcall_run(cl.gateway, "/inference.GRPCInferenceService/ModelReady", b, NULL, 0,
                     CALL_MS);
    grpc_byte_buffer_destroy(b);
    ProtobufCMessage *m = NULL;
    CHECK(t.status == GRPC_STATUS_OK &&
          rpc_decode(t.response, &inference__model_ready_response__descriptor, &m, &err) == 0 &&
          ((Inference__ModelReadyResponse *)m)->ready);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    m = NULL;
    testcall_clear(&t);
    Inference__ModelMetadataRequest mq = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mq.name = "v1";
    b = rpc_encode(&mq.base);
    t = testcall_run(cl.gateway, "/inference.GRPCInferenceService/ModelMetadata", b, NULL, 0,
                     CALL_MS);
    grpc_byte_buffer_destroy(b);
    CHECK(t.status == GRPC_STATUS_OK &&
          rpc_decode(t.response, &inference__model_metadata_response__descriptor, &m, &err) == 0 &&
          strcmp(((Inference__ModelMetadataResponse *)m)->name, "m1") == 0);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    testcall_clear(&t);
}

static void blocked_during_load(void)
{
    register_model("m2", "xgboost");
    runtimes_signal(SIGSTOP);
    enum { N = 6 };
    struct testcall calls[N] = {0};
    grpc_byte_buffer *b = infer_request("m2", FEATURES);
    for (int i = 0; i < N; i++)
        REQUIRE(rpc_unary(cl.pods[i % 3].api, INFER, b, NULL, 0, CALL_MS, NULL, testcall_cb,
                          &calls[i], NULL) == 0);
    grpc_byte_buffer_destroy(b);
    cluster_run(&cl, 1500);
    int done = 0;
    for (int i = 0; i < N; i++)
        done += calls[i].done;
    CHECK_INT(done, 0); /* the load is held: they wait */
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, "m2", copies, 4);
    CHECK_INT(n, 1);
    if (n == 1)
        fprintf(stderr, "while the load is held, m2's copy on %s is %s\n", copies[0].iid,
                copy_state_name(copies[0].rec.state));
    long long t0 = harness_now_ms();
    runtimes_signal(SIGCONT);
    CHECK(testcall_wait(cl.loop, calls, N, CALL_MS));
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += answered(&calls[i], "m2");
        testcall_clear(&calls[i]);
    }
    CHECK_INT(ok, N);
    fprintf(stderr, "%d requests blocked during a load: answered %lld ms after it resumed\n", ok,
            harness_now_ms() - t0);
}

static void parked_on_gateway(void)
{
    register_model("m3", "xgboost");
    runtimes_signal(SIGSTOP);
    struct testcall calls[2] = {0};
    struct rpc_request *reqs[2] = {0};
    grpc_byte_buffer *b = infer_request("m3", FEATURES);
    for (int i = 0; i < 2; i++)
        REQUIRE(rpc_unary(cl.gateway, INFER, b, NULL, 0, CALL_MS, NULL, testcall_cb, &calls[i],
                          &reqs[i]) == 0);
    cluster_run(&cl, 500);
    CHECK(!calls[0].done && !calls[1].done);
    /* --max-parked 2: a third is refused at once */
    struct testcall t = testcall_run(cl.gateway, INFER, b, NULL, 0, 5000);
    CHECK(rt_failed_with(t, GRPC_STATUS_UNAVAILABLE, "wait for models to load already"));
    testcall_clear(&t);
    /* the clients go away: released at once, so two more park */
    for (int i = 0; i < 2; i++)
        if (!calls[i].done)
            rpc_request_cancel(reqs[i]);
    cluster_run(&cl, 300);
    struct testcall late[2] = {0};
    long long t0 = harness_now_ms();
    for (int i = 0; i < 2; i++)
        REQUIRE(rpc_unary(cl.gateway, INFER, b, NULL, 0, 1500, NULL, testcall_cb, &late[i],
                          NULL) == 0);
    CHECK(testcall_wait(cl.loop, late, 2, 5000));
    long long took = harness_now_ms() - t0;
    for (int i = 0; i < 2; i++) {
        CHECK_INT(late[i].status, GRPC_STATUS_DEADLINE_EXCEEDED);
        if (late[i].status != GRPC_STATUS_DEADLINE_EXCEEDED)
            fprintf(stderr, "  parked with a deadline: %s: %s\n",
                    rpc_status_name(late[i].status), late[i].details);
        testcall_clear(&late[i]);
    }
    CHECK(took >= 1400 && took < 3000);
    fprintf(stderr, "parked with a 1500 ms deadline: ended after %lld ms\n", took);
    runtimes_signal(SIGCONT);
    t = testcall_run(cl.gateway, INFER, b, NULL, 0, CALL_MS);
    CHECK(answered(&t, "m3"));
    testcall_clear(&t);
    grpc_byte_buffer_destroy(b);
}

static void no_instance_serves(void)
{
    register_model("sk", "sklearn");
    struct testcall t = infer_on(cl.pods[0].api, "sk", NULL, 0, FEATURES, CALL_MS);
    CHECK(t.status == GRPC_STATUS_UNAVAILABLE && t.details[0]);
    fprintf(stderr, "a model no instance serves: %s: %s\n", rpc_status_name(t.status), t.details);
    testcall_clear(&t);
}

static void holder_killed(void)
{
    int held = 0, h = holder("m1", &held);
    REQUIRE(h >= 0);
    size_t other = (size_t)(h + 1) % cl.cfg.n_pods;
    CHECK(infer_ok(cl.pods[other].api, "m1", "m1")); /* the route is warm */
    REQUIRE(cluster_node_signal(&cl, (size_t)h, SIGKILL) == 0);
    CHECK(cluster_node_wait(&cl, (size_t)h, 5000) != -1);
    long long t0 = harness_now_ms();
    struct testcall t = infer_on(cl.pods[other].api, "m1", NULL, 0, FEATURES, CALL_MS);
    CHECK(answered(&t, "m1"));
    testcall_clear(&t);
    long long took = harness_now_ms() - t0;
    /* the dead node's copy goes with its lease (2 s): then one copy, elsewhere */
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, "m1", copies, 4);
    for (long long until = harness_now_ms() + 5000; n != 1 && harness_now_ms() < until;) {
        cluster_run(&cl, 100);
        n = cluster_copies(&cl, "m1", copies, 4);
    }
    CHECK_INT(n, 1);
    CHECK(n != 1 || strcmp(copies[0].iid, cl.pods[h].iid) != 0);
    fprintf(stderr, "the holder's node killed: a request to another node answered after %lld ms "
            "(its copy not reached: placed and loaded elsewhere at once)\n", took);
}

/* A peer that hangs: the holder's node is stopped (SIGSTOP) just before a request reaches it
 * through the gateway. The forward is not left to the client's deadline (20 s): the gateway's
 * keepalive to the peer goes unanswered, the forward fails UNAVAILABLE after about 3 s, and the
 * call waits for the model to be placed elsewhere (the lease of the stopped node expires) and
 * is answered. */
static void holder_frozen(void)
{
    register_model("m3", "xgboost");
    CHECK(infer_ok(cl.gateway, "m3", "m3")); /* loaded; the gateway's route to it is warm */
    /* its holder, as the registry says (a Loaded copy record) */
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, "m3", copies, 4), h = -1;
    for (int i = 0; i < n && i < 4; i++)
        if (copies[i].rec.state == COPY_LOADED)
            h = cluster_pod_of(&cl, copies[i].iid, strlen(copies[i].iid));
    if (h < 0 || cl.pods[h].node_pid <= 0) {
        fprintf(stderr, "m3: %d copy record(s), the Loaded one on pod %d\n", n, h);
        for (int i = 0; i < n && i < 4; i++)
            fprintf(stderr, "  copy on %s: %s\n", copies[i].iid,
                    copy_state_name(copies[i].rec.state));
    }
    REQUIRE(h >= 0 && cl.pods[h].node_pid > 0);
    REQUIRE(harness_freeze(cl.pods[h].node_pid) == 0);
    long long t0 = harness_now_ms();
    struct testcall t = infer_on(cl.gateway, "m3", NULL, 0, FEATURES, 20000);
    long long took = harness_now_ms() - t0;
    CHECK(answered(&t, "m3"));
    testcall_clear(&t);
    CHECK(took < 12000);
    REQUIRE(kill(cl.pods[h].node_pid, SIGCONT) == 0);
    fprintf(stderr, "the holder's node stopped: a request through the gateway answered after "
            "%lld ms (keepalive, then placed and loaded elsewhere)\n", took);
}

/* Live (Pending, Loading, Loaded) and Loaded copies of model. */
static int live_copies(const char *model, int *loaded)
{
    struct cluster_copy copies[8];
    int n = cluster_copies(&cl, model, copies, 8), live = 0;
    *loaded = 0;
    for (int i = 0; i < n && i < 8; i++) {
        live += copies[i].rec.state != COPY_FAILED;
        *loaded += copies[i].rec.state == COPY_LOADED;
    }
    return live;
}

/* The holder's pod killed while the lease TTL is 10 s: its copy stays Loaded in the registry
 * for up to 10 s, but the calls that cannot reach it have a copy placed elsewhere at once. */
static void failover(void)
{
    enum { N = 24, DEADLINE_MS = 5000 };
    register_model("m1", "xgboost");
    CHECK(infer_ok(cl.gateway, "m1", "m1"));
    struct cluster_copy copies[8];
    int n = cluster_copies(&cl, "m1", copies, 8), h = -1;
    for (int i = 0; i < n && i < 8; i++)
        if (copies[i].rec.state == COPY_LOADED)
            h = cluster_pod_of(&cl, copies[i].iid, strlen(copies[i].iid));
    REQUIRE(n == 1 && h >= 0);
    size_t a = (size_t)(h + 1) % 3, b = (size_t)(h + 2) % 3;
    /* every entry point's route to the holder is warm */
    CHECK(infer_ok(cl.pods[a].api, "m1", "m1"));
    CHECK(infer_ok(cl.pods[b].api, "m1", "m1"));
    cluster_pod_kill(&cl, (size_t)h);
    long long t0 = harness_now_ms();
    static struct testcall calls[N];
    memset(calls, 0, sizeof(calls));
    grpc_byte_buffer *req = infer_request("m1", FEATURES);
    struct rpc_channel *to[3] = {cl.gateway, cl.pods[a].api, cl.pods[b].api};
    for (int i = 0; i < N; i++)
        REQUIRE(rpc_unary(to[i % 3], INFER, req, NULL, 0, DEADLINE_MS, NULL, testcall_cb,
                          &calls[i], NULL) == 0);
    grpc_byte_buffer_destroy(req);
    CHECK(testcall_wait(cl.loop, calls, N, DEADLINE_MS + 5000));
    long long last = harness_now_ms() - t0; /* when the last was answered */
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += answered(&calls[i], "m1");
        testcall_clear(&calls[i]);
    }
    CHECK_INT(ok, N);
    /* the dead pod's copy is still in the registry (its lease lives): the burst placed one */
    n = cluster_copies(&cl, "m1", copies, 8);
    int dead = 0, others = 0;
    for (int i = 0; i < n && i < 8; i++) {
        if (cluster_pod_of(&cl, copies[i].iid, strlen(copies[i].iid)) == h)
            dead++;
        else
            others++;
    }
    CHECK_INT(dead, 1);
    CHECK_INT(others, 1);
    cluster_run(&cl, 1500); /* and nothing more comes of it */
    n = cluster_copies(&cl, "m1", copies, 8);
    CHECK_INT(n, 2);
    long long after = harness_now_ms() - t0;
    CHECK(after < 9000); /* all of it well inside the TTL */
    fprintf(stderr, "the only copy's pod killed (lease TTL 10 s): %d/%d requests (5 s deadline) "
            "answered, the last after %lld ms; %d copy placed elsewhere for them all, the "
            "dead pod's still registered %lld ms after the kill\n", ok, N, last, others, after);
}

static void scaling(void)
{
    struct mmc_reply r;
    mmc_register(cl.pods[0].api, "hot", "xgboost", "bc.json", "", true, true, 0, CALL_MS, &r);
    REQUIRE(r.code == GRPC_STATUS_OK && r.status == MMC_LOADED);
    int loaded = 0;
    CHECK_INT(live_copies("hot", &loaded), 1);
    int max_live = 1, sent = 0, ok = 0;
    long long t0 = harness_now_ms(), two_at = 0;
    /* 12 a second for up to 12 s; once there are two copies, 4 s more to see no third */
    for (long long next = t0; harness_now_ms() - t0 < 12000; next += 83) {
        while (harness_now_ms() < next)
            harness_run_until(cl.loop, NULL, NULL, 5);
        ok += infer_ok(cl.pods[sent % 3].api, "hot", "hot");
        sent++;
        int live = live_copies("hot", &loaded);
        if (live > max_live)
            max_live = live;
        if (!two_at && loaded == 2)
            two_at = harness_now_ms();
        if (two_at && harness_now_ms() - two_at > 4000)
            break;
    }
    CHECK_INT(ok, sent);
    CHECK(two_at != 0);
    CHECK_INT(max_live, 2);
    CHECK_INT(live_copies("hot", &loaded), 2);
    CHECK_INT(loaded, 2);
    fprintf(stderr, "720 requests/min over 3 entry points (threshold 600 per copy, checked every "
            "1 s): %d/%d answered, a second copy Loaded after %lld ms, at most %d copies\n",
            ok, sent, two_at ? two_at - t0 : -1, max_live);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 5 ||
            (argc == 6 && (strcmp(argv[5], "scaling") == 0 || strcmp(argv[5], "metrics") == 0 ||
                           strcmp(argv[5], "failover") == 0)));
    bool scale = argc == 6 && strcmp(argv[5], "scaling") == 0;
    bool metered = argc == 6 && strcmp(argv[5], "metrics") == 0;
    bool fail_over = argc == 6 && strcmp(argv[5], "failover") == 0;
    if (!cluster_node_has_listen(argv[1])) {
        fprintf(stderr, "mm-node has no --listen: skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    make_model(argv[4]);
    struct cluster_config cfg = {
        .mm_node = argv[1],
        .mm_runtime = argv[2],
        .mm_gateway = argv[3],
        .gateway_args = fail_over ? NULL : "--max-parked 2",
        .node_args = scale ? "--rate-check-interval 1s --scale-up-rpm 600" : NULL,
        .lease_ttl = fail_over ? "10s" : NULL,
        .n_pods = 3,
    };
    REQUIRE(cluster_start_with(&cl, &cfg, true, false) == 0);
    char model[512];
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", work);
    REQUIRE(cluster_copy_file(&cl, model, "bc.json") == 0);

    if (scale) {
        scaling();
    } else if (metered) {
        metrics();
    } else if (fail_over) {
        failover();
    } else {
        not_found();
        one_load_for_many();
        entry_points();
        names();
        blocked_during_load();
        parked_on_gateway();
        no_instance_serves();
        holder_killed();
        holder_frozen();
    }

    int failures = check_failures;
    if (failures)
        cluster_dump_logs(&cl, true);
    runtimes_signal(SIGCONT);
    cluster_free(&cl);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
