/* test_e2e.c - inference through the mesh end to end, on a local cluster of real processes
 * (etcd, pods of a runtime + mm-node, an mm-gateway), with real clients. One program,
 * one scenario per run (argv[1]), each its own meson test:
 *   walkthrough  the KServe ModelMesh walkthrough: the MNIST SVM (sklearn runtime, 2 pods)
 *                registered and Loaded on one pod; a Python grpcio client with our .proto
 *                (tests/e2e/walkthrough.py) sends the walkthrough's request by model id and by
 *                InferenceService name (a vmodel it makes with setVModel) to every entry point
 *                (the holder, the other node, the gateway) and gets predict [8] with the
 *                concrete id as model_name; also NOT_FOUND, the runtime's INVALID_ARGUMENT,
 *                ModelReady/Metadata, ServerLive/Ready. The request to the other node was
 *                forwarded: the model still has exactly one copy afterwards.
 *   rest         the walkthrough over KServe V2 REST: curl and a Python urllib client
 *                (tests/e2e/rest_client.py) at both nodes' and the gateway's REST ports (the
 *                model Loaded on one): predict [8] by the InferenceService name and by model
 *                id, metadata, readiness, health, the errors as {"error"} with their HTTP
 *                status, 32 requests at once, a stalled client meanwhile; one copy after.
 *   swap         a vmodel moved from one auto-delete model to another (setVModel, sync) while
 *                a client sends 100 requests/s by the vmodel's name round robin to 3 nodes for
 *                the whole swap; every runtime is first kept busy with a load held on a FIFO
 *                for 2 s, so that the target's load waits and the swap lasts: not one request
 *                fails, at least 50 are sent in every second, every answer is the old concrete
 *                id until the held loads are released, then each node's answers switch to the
 *                new one once (never back), all answer the new one once the swap is done, and
 *                the old model is unregistered and unloaded.
 *   swap_failed  the same load while the vmodel is moved to a model whose file is not a model:
 *                getVModelStatus TRANSITION_FAILED (active unchanged), and every request is
 *                answered by the old model, none fails.
 * Skipped (exit 77) only while mm-node has no --internal-listen (before inference routing).
 * argv: SCENARIO MM_NODE MM_RUNTIME MAKE_BREAST_CANCER PYTHON SKLEARN_SERVER MAKE_MNIST
 *       PROTO_DIR E2E_DIR MM_GATEWAY */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "mm/rpc.h"
#include "model-mesh.pb-c.h"
#include "mmclient.h"
#include "rtclient.h"

#define CALL_MS 30000
#define INFER_PATH "/inference.GRPCInferenceService/ModelInfer"

static const char *mm_node, *mm_runtime, *maker_xgb, *python, *sklearn_server, *maker_mnist,
    *proto_dir, *e2e_dir, *mm_gateway;
static char work[256];
static struct cluster cl;
static bool cluster_up;

static void stop_all(void);

static bool node_has_routing(void)
{
    char cmd[1200], out[16384];
    snprintf(cmd, sizeof(cmd), "'%s' --help", mm_node);
    return harness_capture(cmd, out, sizeof(out)) == 0 && strstr(out, "--internal-listen");
}

static void make_work_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-e2e-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    REQUIRE(mkdtemp(work) != NULL);
}

static void remove_work_dir(void)
{
    if (!work[0])
        return;
    char cmd[400], out[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
    harness_capture(cmd, out, sizeof(out));
    work[0] = '\0';
}

static void run_maker(const char *cmd)
{
    char out[4096];
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, out);
    REQUIRE(rc == 0);
}

static void start_cluster(const char *interpreter, const char *runtime, const char *types,
                          size_t n_pods)
{
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = runtime,
        .runtime_interpreter = interpreter,
        .n_pods = n_pods,
        .runtime_load_timeout_ms = 20000,
        .lease_ttl = "2s",
        .model_types = types,
        .mm_gateway = mm_gateway,
    };
    long long t0 = harness_now_ms();
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    atexit(stop_all); /* after cluster_start's own: runs first, so MM_TEST_KEEP can keep the logs */
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    fprintf(stderr, "cluster of %zu pods up in %lld ms\n", n_pods, harness_now_ms() - t0);
}

static void stop_all(void)
{
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    remove_work_dir();
}

static void dump_logs(void)
{
    cluster_dump_logs(&cl, true);
    if (cl.gateway_pid > 0)
        harness_print_tail(cl.gateway_log, 3000);
}

/* ---------------------------------------------------------------- model API calls */

struct vm_reply {
    grpc_status_code code;
    char details[1024];
    int status; /* Mmesh__VModelStatusInfo__VModelStatus */
    char active[256], target[256];
    int active_status, target_status; /* ModelStatusInfo's, -1 if absent */
};

static const char *vm_status_name(int s)
{
    switch (s) {
    case 0: return "NOT_FOUND";
    case 1: return "DEFINED";
    case 2: return "TRANSITIONING";
    case 3: return "TRANSITION_FAILED";
    default: return "UNKNOWN";
    }
}

static void vm_print(const char *what, const struct vm_reply *r)
{
    if (r->code != GRPC_STATUS_OK)
        fprintf(stderr, "%s: %s: %s\n", what, rpc_status_name(r->code), r->details);
    else
        fprintf(stderr, "%s: %s active %s (%s) target %s (%s)\n", what, vm_status_name(r->status),
                r->active, r->active_status >= 0 ? mmc_status_name(r->active_status) : "-",
                r->target, r->target_status >= 0 ? mmc_status_name(r->target_status) : "-");
}

static void vm_call(struct rpc_channel *ch, const char *method, const ProtobufCMessage *msg,
                    int64_t timeout_ms, struct vm_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->active_status = out->target_status = -1;
    grpc_byte_buffer *req = rpc_encode(msg);
    struct rpc_reply r = {0};
    rpc_unary_wait(ch, method, req, NULL, 0, timeout_ms, &r);
    grpc_byte_buffer_destroy(req);
    out->code = r.status;
    snprintf(out->details, sizeof(out->details), "%s", r.details);
    if (r.status == GRPC_STATUS_OK) {
        ProtobufCMessage *m = NULL;
        struct mm_error err = {0};
        if (rpc_decode(r.response, &mmesh__vmodel_status_info__descriptor, &m, &err) < 0) {
            out->code = GRPC_STATUS_DATA_LOSS;
            snprintf(out->details, sizeof(out->details), "%s", err.msg);
        } else {
            Mmesh__VModelStatusInfo *v = (Mmesh__VModelStatusInfo *)m;
            out->status = v->status;
            snprintf(out->active, sizeof(out->active), "%s", v->activemodelid);
            snprintf(out->target, sizeof(out->target), "%s", v->targetmodelid);
            if (v->activemodelstatus)
                out->active_status = v->activemodelstatus->status;
            if (v->targetmodelstatus)
                out->target_status = v->targetmodelstatus->status;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    rpc_reply_clear(&r);
}

static void vm_set(struct rpc_channel *ch, const char *vid, const char *target, const char *path,
                   bool auto_delete, const char *expected, bool sync, struct vm_reply *out)
{
    Mmesh__SetVModelRequest req = MMESH__SET_VMODEL_REQUEST__INIT;
    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    req.vmodelid = (char *)vid;
    req.targetmodelid = (char *)target;
    if (path) {
        info.type = "xgboost";
        info.path = (char *)path;
        req.modelinfo = &info;
    }
    req.autodeletetargetmodel = auto_delete;
    req.loadnow = true;
    req.sync = sync;
    if (expected)
        req.expectedtargetmodelid = (char *)expected;
    vm_call(ch, "/mmesh.ModelMesh/setVModel", &req.base, CALL_MS, out);
}

static void vm_get(struct rpc_channel *ch, const char *vid, struct vm_reply *out)
{
    Mmesh__GetVModelStatusRequest req = MMESH__GET_VMODEL_STATUS_REQUEST__INIT;
    req.vmodelid = (char *)vid;
    vm_call(ch, "/mmesh.ModelMesh/getVModelStatus", &req.base, 10000, out);
}

/* ---------------------------------------------------------------- walkthrough */

static int walkthrough(void)
{
    static const char model_id[] = "mnist-svm__isvc-6b2eb0b8bf"; /* as the controller names it */
    char cmd[4096];
    make_work_dir();
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", python, maker_mnist, work);
    run_maker(cmd);
    start_cluster(python, sklearn_server, "sklearn", 2);
    char src[512];
    snprintf(src, sizeof(src), "%s/sklearn/mnist-svm.joblib", work);
    REQUIRE(cluster_copy_file(&cl, src, "sklearn/mnist-svm.joblib") == 0);
    REQUIRE(cluster_gateway_start(&cl) == 0);

    struct mmc_reply a;
    mmc_register(cl.pods[0].api, model_id, "sklearn", "sklearn/mnist-svm.joblib", "", true, true,
                 0, CALL_MS, &a);
    if (!mmc_is(&a, MMC_LOADED)) {
        dump_logs();
        REQUIRE(false);
    }
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, model_id, copies, 4);
    REQUIRE(n == 1 && copies[0].rec.state == COPY_LOADED);
    int holder = cluster_pod_of(&cl, copies[0].iid, strlen(copies[0].iid));
    REQUIRE(holder >= 0);
    fprintf(stderr, "%s Loaded on %s\n", model_id, copies[0].iid);

    /* The holder's node first (local), then the other (a forward), then the gateway. */
    int len = snprintf(cmd, sizeof(cmd),
                       "'%s' '%s/walkthrough.py' --proto-dir '%s' --request "
                       "'%s/sklearn/mnist-svm-request.json' --model-id %s --vmodel "
                       "example-sklearn-isvc --runtime 127.0.0.1:%d --mesh 127.0.0.1:%d "
                       "--mesh 127.0.0.1:%d --mesh 127.0.0.1:%d",
                       python, e2e_dir, proto_dir, work, model_id, cl.pods[holder].runtime_port,
                       cl.pods[holder].node_port, cl.pods[1 - holder].node_port, cl.gateway_port);
    REQUIRE(len > 0 && (size_t)len < sizeof(cmd));
    static char out[65536];
    long long t0 = harness_now_ms();
    int rc = harness_capture(cmd, out, sizeof(out));
    fprintf(stderr, "%s\n(walkthrough client: exit %d after %lld ms)\n", out, rc,
            harness_now_ms() - t0);
    CHECK_INT(rc, 0);

    /* Served where it is: the other node forwarded rather than loading a second copy. */
    n = cluster_copies(&cl, model_id, copies, 4);
    CHECK_INT(n, 1);
    if (check_failures)
        dump_logs();
    return 0;
}

/* ---------------------------------------------------------------- REST */

/* A connection that sends part of a request and stalls (closed by the caller). */
static int stalled_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    static const char part[] = "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: 1000\r\n\r\n{\"inputs\":";
    if (write(fd, part, sizeof(part) - 1) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The walkthrough over KServe V2 REST: curl and a Python urllib client at both nodes' and the
 * gateway's REST ports. */
static int rest(void)
{
    static const char model_id[] = "mnist-svm__isvc-6b2eb0b8bf";
    static const char isvc[] = "example-sklearn-isvc";
    char cmd[4096];
    make_work_dir();
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", python, maker_mnist, work);
    run_maker(cmd);
    start_cluster(python, sklearn_server, "sklearn", 2);
    char src[512];
    snprintf(src, sizeof(src), "%s/sklearn/mnist-svm.joblib", work);
    REQUIRE(cluster_copy_file(&cl, src, "sklearn/mnist-svm.joblib") == 0);
    REQUIRE(cluster_gateway_start(&cl) == 0);
    REQUIRE(cl.pods[0].node_rest_port > 0 && cl.pods[1].node_rest_port > 0 &&
            cl.gateway_rest_port > 0);

    struct mmc_reply a;
    mmc_register(cl.pods[0].api, model_id, "sklearn", "sklearn/mnist-svm.joblib", "", true, true, 0,
                 CALL_MS, &a);
    if (!mmc_is(&a, MMC_LOADED)) {
        dump_logs();
        REQUIRE(false);
    }
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, model_id, copies, 4);
    REQUIRE(n == 1 && copies[0].rec.state == COPY_LOADED);
    int holder = cluster_pod_of(&cl, copies[0].iid, strlen(copies[0].iid));
    REQUIRE(holder >= 0);
    struct vm_reply v;
    vm_set(cl.pods[0].api, isvc, model_id, NULL, false, NULL, true, &v);
    vm_print("setVModel", &v);
    REQUIRE(v.code == GRPC_STATUS_OK);
    const int ports[3] = {cl.pods[holder].node_rest_port, cl.pods[1 - holder].node_rest_port,
                          cl.gateway_rest_port};

    /* a stalled client holds a connection throughout: the others are served meanwhile */
    int stalled = stalled_client(cl.gateway_rest_port);
    CHECK(stalled >= 0);

    /* curl: the walkthrough's request, as V2 REST JSON */
    char body_path[400];
    snprintf(body_path, sizeof(body_path), "%s/rest-request.json", work);
    snprintf(cmd, sizeof(cmd),
             "'%s' '%s/rest_client.py' --request "
             "'%s/sklearn/mnist-svm-request.json' --emit '%s'",
             python, e2e_dir, work, body_path);
    run_maker(cmd);
    static char out[65536];
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof(cmd),
                 "curl -sS -m 20 -w ' HTTP %%{http_code}' -H 'Content-Type: application/json' "
                 "--data-binary @'%s' http://127.0.0.1:%d/v2/models/%s/infer",
                 body_path, ports[i], isvc);
        int rc = harness_capture(cmd, out, sizeof(out));
        fprintf(stderr, "curl %d: %s\n", ports[i], out);
        CHECK_INT(rc, 0);
        CHECK(strstr(out, "\"model_name\":\"mnist-svm__isvc-6b2eb0b8bf\"") != NULL);
        CHECK(strstr(out, "\"name\":\"predict\"") != NULL);
        CHECK(strstr(out, "\"data\":[8]") != NULL);
        CHECK(strstr(out, " HTTP 200") != NULL);
        snprintf(cmd, sizeof(cmd),
                 "curl -sS -m 20 -w ' HTTP %%{http_code}' -d '{\"inputs\":[{\"name\":\"predict\","
                 "\"datatype\":\"FP32\",\"shape\":[1,64],\"data\":[1]}]}' "
                 "http://127.0.0.1:%d/v2/models/%s/infer",
                 ports[i], isvc);
        harness_capture(cmd, out, sizeof(out));
        fprintf(stderr, "curl %d, 1 value for 64: %s\n", ports[i], out);
        CHECK(strstr(out, "{\"error\":") == out && strstr(out, " HTTP 400") != NULL);
        snprintf(cmd, sizeof(cmd),
                 "curl -sS -m 20 -w ' HTTP %%{http_code}' http://127.0.0.1:%d/v2/models/nope/ready",
                 ports[i]);
        harness_capture(cmd, out, sizeof(out));
        CHECK(strstr(out, "{\"error\":\"model nope not found\"} HTTP 404") == out);
    }

    /* a body over the bound, announced: 413 before it is sent (curl waits for 100-continue) */
    snprintf(cmd, sizeof(cmd),
             "head -c 17825792 /dev/zero | curl -sS -m 20 -w ' HTTP %%{http_code}' "
             "--data-binary @- http://127.0.0.1:%d/v2/models/%s/infer",
             cl.gateway_rest_port, isvc);
    harness_capture(cmd, out, sizeof(out));
    fprintf(stderr, "curl, 17 MiB: %s\n", out);
    CHECK(strstr(out, "{\"error\":\"the request body is larger than 16777216 bytes\"} HTTP 413") ==
          out);

    /* the Python client: every endpoint and error, at every REST port */
    int len = snprintf(cmd, sizeof(cmd),
                       "'%s' '%s/rest_client.py' --request '%s/sklearn/mnist-svm-request.json' "
                       "--model-id %s --vmodel %s --rest http://127.0.0.1:%d "
                       "--rest http://127.0.0.1:%d --rest http://127.0.0.1:%d",
                       python, e2e_dir, work, model_id, isvc, ports[0], ports[1], ports[2]);
    REQUIRE(len > 0 && (size_t)len < sizeof(cmd));
    long long t0 = harness_now_ms();
    int rc = harness_capture(cmd, out, sizeof(out));
    fprintf(stderr, "%s\n(REST client: exit %d after %lld ms)\n", out, rc, harness_now_ms() - t0);
    CHECK_INT(rc, 0);
    if (stalled >= 0)
        close(stalled);

    /* served where it is: the other node and the gateway forwarded */
    n = cluster_copies(&cl, model_id, copies, 4);
    CHECK_INT(n, 1);
    if (check_failures)
        dump_logs();
    return 0;
}

/* ---------------------------------------------------------------- load during a swap */

#define LOAD_RATE 100 /* requests per second, round robin over the nodes */
#define LOAD_MAX 8192 /* requests in one run, at most */
#define LOAD_DEADLINE_MS 10000
#define MIN_RATE 50 /* per whole second of the swap */

struct sample {
    long long sent_ms, done_ms;
    int node;
    bool done;
    grpc_status_code status;
    char details[256];
    char model[64];        /* the response's model_name */
    bool has_output;
};

static struct load {
    ev_timer tick;
    grpc_byte_buffer *request;
    size_t n_nodes;
    long long started_ms;
    size_t n_sent, n_done;
    bool running;
    struct sample s[LOAD_MAX];
} load;

static void load_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                       void *arg)
{
    struct sample *s = arg;
    s->done = true;
    s->done_ms = harness_now_ms();
    s->status = status;
    snprintf(s->details, sizeof(s->details), "%s", details);
    load.n_done++;
    if (!response)
        return;
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (rpc_decode(response, &inference__model_infer_response__descriptor, &m, &err) < 0) {
        s->status = GRPC_STATUS_DATA_LOSS;
        snprintf(s->details, sizeof(s->details), "%s", err.msg);
    } else {
        Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
        snprintf(s->model, sizeof(s->model), "%s", r->model_name);
        s->has_output = r->n_outputs == 1 && (r->n_raw_output_contents == 1 ||
                                              (r->outputs[0]->contents &&
                                               r->outputs[0]->contents->n_fp32_contents == 1));
        protobuf_c_message_free_unpacked(m, NULL);
    }
    grpc_byte_buffer_destroy(response);
}

/* Send what is due since the start (catching up if the loop was busy), round robin. */
static void load_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    long long due = (harness_now_ms() - load.started_ms) * LOAD_RATE / 1000 + 1;
    while (load.running && (long long)load.n_sent < due && load.n_sent < LOAD_MAX) {
        struct sample *s = &load.s[load.n_sent];
        s->node = (int)(load.n_sent % load.n_nodes);
        s->sent_ms = harness_now_ms();
        int rc = rpc_unary(cl.pods[s->node].api, INFER_PATH, load.request, NULL, 0,
                           LOAD_DEADLINE_MS, NULL, load_reply, s, NULL);
        load.n_sent++;
        if (rc < 0) {
            s->done = true;
            s->status = GRPC_STATUS_INTERNAL;
            snprintf(s->details, sizeof(s->details), "rpc_unary: %s", strerror(-rc));
            load.n_done++;
        }
    }
}

static void load_start(const char *vmodel, size_t n_nodes)
{
    memset(&load, 0, sizeof(load));
    load.request = rt_xgb_request(vmodel);
    load.n_nodes = n_nodes;
    load.started_ms = harness_now_ms();
    load.running = true;
    ev_timer_init(&load.tick, load_tick, 0.0, 0.005);
    ev_timer_start(cl.loop, &load.tick);
}

static bool load_all_done(void *arg)
{
    (void)arg;
    return load.n_done == load.n_sent;
}

static void load_stop(void)
{
    load.running = false;
    ev_timer_stop(cl.loop, &load.tick);
    harness_run_until(cl.loop, load_all_done, NULL, LOAD_DEADLINE_MS + 5000);
    grpc_byte_buffer_destroy(load.request);
    load.request = NULL;
}

/* Every request answered OK with one output; at least MIN_RATE sent in each whole second of
 * [from, to]. Prints the failures (the first 10) and the latency. */
static void check_load(long long from, long long to)
{
    size_t failed = 0, undone = 0, slowest = 0;
    long long max_ms = 0;
    for (size_t i = 0; i < load.n_sent; i++) {
        struct sample *s = &load.s[i];
        if (!s->done) {
            undone++;
            continue;
        }
        if (s->done_ms - s->sent_ms > max_ms) {
            max_ms = s->done_ms - s->sent_ms;
            slowest = i;
        }
        if (s->status != GRPC_STATUS_OK || !s->has_output) {
            if (failed++ < 10)
                fprintf(stderr, "request %zu to n%d at +%lld ms: %s: %s%s\n", i, s->node,
                        s->sent_ms - load.started_ms, rpc_status_name(s->status), s->details,
                        s->status == GRPC_STATUS_OK ? " (no output)" : "");
        }
    }
    fprintf(stderr, "load: %zu requests in %lld ms (%zu failed, %zu unanswered), slowest %lld ms "
            "(to n%d at +%lld ms)\n", load.n_sent,
            load.s[load.n_sent - 1].sent_ms - load.started_ms, failed, undone, max_ms,
            load.s[slowest].node, load.s[slowest].sent_ms - load.started_ms);
    CHECK_INT(failed, 0);
    CHECK_INT(undone, 0);
    CHECK(load.n_sent < LOAD_MAX);
    for (long long t = from; t + 1000 <= to || t == from; t += 1000) {
        size_t sent = 0;
        for (size_t i = 0; i < load.n_sent; i++)
            if (load.s[i].sent_ms >= t && load.s[i].sent_ms < t + 1000)
                sent++;
        if (sent < MIN_RATE)
            fprintf(stderr, "only %zu requests sent in [+%lld, +%lld) ms\n", sent,
                    t - load.started_ms, t + 1000 - load.started_ms);
        CHECK(sent >= MIN_RATE);
    }
}

/* Each node sends the vmodel's request once and answers model (bounded: its mirror may lag
 * the write by a moment). */
static void wait_served_by(const char *vmodel, const char *model)
{
    grpc_byte_buffer *req = rt_xgb_request(vmodel);
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        long long until = harness_now_ms() + 5000;
        struct sample s;
        do {
            memset(&s, 0, sizeof(s));
            struct rpc_reply r = {0};
            rpc_unary_wait(cl.pods[i].api, INFER_PATH, req, NULL, 0, 10000, &r);
            load_reply(r.status, r.details, r.response, &s); /* takes the response */
            r.response = NULL;
            rpc_reply_clear(&r);
            if (s.status == GRPC_STATUS_OK && strcmp(s.model, model) == 0)
                break;
            cluster_run(&cl, 50);
        } while (harness_now_ms() < until);
        fprintf(stderr, "n%zu: %s -> %s %s %s\n", i, vmodel, rpc_status_name(s.status), s.model,
                s.details);
        REQUIRE(s.status == GRPC_STATUS_OK && strcmp(s.model, model) == 0);
    }
    grpc_byte_buffer_destroy(req);
    load.n_done = 0;
}

static void start_swap_cluster(void)
{
    char cmd[1024];
    make_work_dir();
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker_xgb, work);
    run_maker(cmd);
    start_cluster(NULL, mm_runtime, "xgboost", 3);
    char src[512];
    snprintf(src, sizeof(src), "%s/xgboost/breast-cancer.json", work);
    REQUIRE(cluster_copy_file(&cl, src, "xgb/a.json") == 0);
    REQUIRE(cluster_copy_file(&cl, src, "xgb/b.json") == 0);
    static const char bad[] = "{\"this is\": \"not an xgboost model\"}\n";
    REQUIRE(cluster_put_file(&cl, "xgb/bad.json", bad, sizeof(bad) - 1) == 0);

    struct vm_reply v;
    /* autoDelete: bc-a is unregistered once no vmodel refers to it (after a swap) */
    vm_set(cl.pods[0].api, "bc", "bc-a", "xgb/a.json", true, NULL, true, &v);
    vm_print("setVModel bc -> bc-a (autoDelete)", &v);
    if (v.code != GRPC_STATUS_OK)
        dump_logs();
    REQUIRE(v.code == GRPC_STATUS_OK);
    CHECK_STR(vm_status_name(v.status), "DEFINED");
    CHECK_STR(v.active, "bc-a");
    wait_served_by("bc", "bc-a");
}

/* Poll getVModelStatus until it is want with active model active (bounded by ms); the load
 * keeps running meanwhile. */
static bool wait_vmodel(const char *vid, int want, const char *active, long long ms,
                        struct vm_reply *v)
{
    long long until = harness_now_ms() + ms;
    do {
        vm_get(cl.pods[1].api, vid, v);
        if (v->code == GRPC_STATUS_OK && v->status == want && strcmp(v->active, active) == 0)
            return true;
        cluster_run(&cl, 100);
    } while (harness_now_ms() < until);
    return false;
}

/* Loads held on every runtime (mm-runtime loads one model at a time: the target's load waits
 * behind them), released by a timer while setVModel waits. */
#define HOLD_MS 2000
static struct rt_spi_wait held[CLUSTER_MAX_PODS];
static char fifos[CLUSTER_MAX_PODS][400];
static ev_timer release_timer;
static long long released_ms;

static void release_held(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    for (size_t i = 0; i < cl.cfg.n_pods; i++)
        rt_release_load(fifos[i]);
    released_ms = harness_now_ms();
}

static void hold_runtimes(void)
{
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        struct rt_client rt = {.loop = cl.loop, .ctx = cl.rpc, .spi = cl.pods[i].spi};
        snprintf(fifos[i], sizeof(fifos[i]), "%s/held.fifo", cl.pods[i].cache_dir);
        REQUIRE(rt_hold_load(&rt, cl.pods[i].spi, cl.pods[i].runtime_pid, "held", "xgboost",
                             fifos[i], &held[i], NULL));
    }
    ev_timer_init(&release_timer, release_held, HOLD_MS / 1000.0, 0.0);
    ev_timer_start(cl.loop, &release_timer);
}

static int swap(void)
{
    start_swap_cluster();
    load_start("bc", 3);
    cluster_run(&cl, 1000);

    long long swap_from = harness_now_ms();
    hold_runtimes();
    struct vm_reply v;
    vm_set(cl.pods[2].api, "bc", "bc-b", "xgb/b.json", true, "bc-a", true, &v);
    vm_print("setVModel bc -> bc-b (sync, autoDelete)", &v);
    CHECK(v.code == GRPC_STATUS_OK);
    bool swapped = wait_vmodel("bc", 1, "bc-b", 20000, &v);
    vm_print("getVModelStatus bc", &v);
    CHECK(swapped);
    long long swap_to = harness_now_ms();
    fprintf(stderr, "swap took %lld ms (the runtimes' held loads released at +%lld ms)\n",
            swap_to - swap_from, released_ms - swap_from);
    CHECK(released_ms > 0 && swap_to >= released_ms);
    CHECK(rt_spi_wait_all(cl.loop, held, cl.cfg.n_pods, 10000));
    cluster_run(&cl, 1500);
    long long settled = swap_to + 500; /* every node's mirror has the new active id by then */
    load_stop();

    check_load(swap_from, swap_to + 1000);
    /* Per node: old id, then the new one, never back. Everything sent after the swap settled:
     * the new one. */
    size_t n_old = 0, n_new = 0;
    for (size_t node = 0; node < load.n_nodes; node++) {
        long long first_new = -1;
        size_t back = 0;
        for (size_t i = 0; i < load.n_sent; i++) {
            struct sample *s = &load.s[i];
            if (s->node != (int)node || s->status != GRPC_STATUS_OK)
                continue;
            bool is_new = strcmp(s->model, "bc-b") == 0;
            bool is_old = strcmp(s->model, "bc-a") == 0;
            CHECK(is_new || is_old);
            n_new += is_new;
            n_old += is_old;
            if (is_new && (first_new < 0 || s->done_ms < first_new))
                first_new = s->done_ms;
        }
        for (size_t i = 0; i < load.n_sent; i++) {
            struct sample *s = &load.s[i];
            if (s->node == (int)node && first_new >= 0 && s->sent_ms > first_new &&
                strcmp(s->model, "bc-a") == 0)
                back++;
        }
        fprintf(stderr, "n%zu: first bc-b answer at +%lld ms (swap from +%lld to +%lld, held "
                "loads released at +%lld); %zu bc-a answers to requests sent after it\n", node,
                first_new - load.started_ms, swap_from - load.started_ms,
                swap_to - load.started_ms, released_ms - load.started_ms, back);
        CHECK(first_new >= released_ms);
        CHECK_INT(back, 0);
    }
    size_t late_old = 0;
    for (size_t i = 0; i < load.n_sent; i++)
        if (load.s[i].sent_ms > settled && strcmp(load.s[i].model, "bc-b") != 0)
            late_old++;
    fprintf(stderr, "answers: %zu by bc-a, %zu by bc-b; %zu not bc-b after the swap settled\n",
            n_old, n_new, late_old);
    CHECK(n_old > 0 && n_new > 0);
    CHECK_INT(late_old, 0);

    /* autoDelete: the old model goes (record and copies). */
    long long until = harness_now_ms() + 10000;
    struct model_record mr;
    struct cluster_copy copies[4];
    int has_record, n_copies;
    do {
        has_record = cluster_model(&cl, "bc-a", &mr);
        n_copies = cluster_copies(&cl, "bc-a", copies, 4);
        if (has_record == 0 && n_copies == 0)
            break;
        cluster_run(&cl, 100);
    } while (harness_now_ms() < until);
    fprintf(stderr, "bc-a after the swap: record %d, copies %d\n", has_record, n_copies);
    CHECK_INT(has_record, 0);
    CHECK_INT(n_copies, 0);
    if (check_failures)
        dump_logs();
    return 0;
}

static int swap_failed(void)
{
    start_swap_cluster();
    load_start("bc", 3);
    cluster_run(&cl, 1000);

    long long swap_from = harness_now_ms();
    struct vm_reply v;
    vm_set(cl.pods[2].api, "bc", "bc-bad", "xgb/bad.json", true, NULL, true, &v);
    vm_print("setVModel bc -> bc-bad (sync)", &v);
    bool failed = wait_vmodel("bc", 3, "bc-a", 30000, &v);
    vm_print("getVModelStatus bc", &v);
    CHECK(failed);
    CHECK_STR(v.target, "bc-bad");
    long long swap_to = harness_now_ms();
    fprintf(stderr, "transition failed after %lld ms\n", swap_to - swap_from);
    cluster_run(&cl, 1500);
    load_stop();

    check_load(swap_from, swap_to + 1000);
    size_t not_old = 0;
    for (size_t i = 0; i < load.n_sent; i++)
        if (load.s[i].status == GRPC_STATUS_OK && strcmp(load.s[i].model, "bc-a") != 0)
            not_old++;
    fprintf(stderr, "%zu answers not by bc-a\n", not_old);
    CHECK_INT(not_old, 0);
    if (check_failures)
        dump_logs();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 11) {
        fprintf(stderr, "usage: %s SCENARIO MM_NODE MM_RUNTIME MAKE_BREAST_CANCER PYTHON "
                "SKLEARN_SERVER MAKE_MNIST PROTO_DIR E2E_DIR MM_GATEWAY\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    mm_node = argv[2];
    mm_runtime = argv[3];
    maker_xgb = argv[4];
    python = argv[5];
    sklearn_server = argv[6];
    maker_mnist = argv[7];
    proto_dir = argv[8];
    e2e_dir = argv[9];
    mm_gateway = argv[10];
    if (!node_has_routing()) {
        fprintf(stderr, "SKIP: mm-node has no --internal-listen (no inference routing yet)\n");
        return 77;
    }
    atexit(stop_all); /* the work dir, if a step fails before the cluster is up */
    if (strcmp(argv[1], "walkthrough") == 0)
        walkthrough();
    else if (strcmp(argv[1], "rest") == 0)
        rest();
    else if (strcmp(argv[1], "swap") == 0)
        swap();
    else if (strcmp(argv[1], "swap_failed") == 0)
        swap_failed();
    else {
        fprintf(stderr, "unknown scenario %s\n", argv[1]);
        return 2;
    }
    return CHECK_DONE();
}
