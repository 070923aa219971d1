/* test_mesh.c - three mm-nodes, each beside a real mm-runtime, on a real etcd, driven through
 * the model API (mmesh.ModelMesh) as a client would:
 *   - registerModel loadNow+sync answers LOADED, every node reports the same copy;
 *   - the same registration again is fine, other info is ALREADY_EXISTS; a bad id or a missing
 *     type is INVALID_ARGUMENT naming the field; an unknown model is NOT_FOUND (status:
 *     NOT_FOUND); an unknown vmodel's status is NOT_FOUND;
 *   - 200 concurrent sync ensureLoaded calls spread over the 3 nodes: all LOADED, one copy;
 *   - a model whose file is missing fails on one node, is retried on the others and is then
 *     reported LOADING_FAILED with their errors;
 *   - unregisterModel: the copies vanish and every runtime unloads;
 *   - SIGTERM of the node holding a model: the model is Loaded on another node before it
 *     exits, and it exits 0.
 * argv: MM_NODE MM_RUNTIME MAKE_BREAST_CANCER */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/records.h"
#include "mm/rpc.h"
#include "mm/spi.h"
#include "mm/spi_sync.h"
#include "model-mesh.pb-c.h"

#define NODES 3
#define CONCURRENT 200
#define SVC "/mmesh.ModelMesh/"

static const char *mm_node, *mm_runtime;
static struct harness_etcd server;
static struct ev_loop *loop;
static struct etcd_client *etcd;
static struct rpc_context *rpc;
static char dir[] = "/tmp/mm-mesh-test-XXXXXX";
static char models_root[300];

static struct node {
    char id[16];
    char cache[300];
    pid_t runtime_pid, pid;
    int runtime_port, port;
    struct rpc_channel *ch;
    struct spi_client *spi;
} nodes[NODES];

/* ------------------------------------------------------------------ the client */

struct answer {
    grpc_status_code code;
    char details[1024];
    Mmesh__ModelStatusInfo *info; /* OK answers of the status-returning methods */
};

static void answer_clear(struct answer *a)
{
    if (a->info)
        protobuf_c_message_free_unpacked(&a->info->base, NULL);
    memset(a, 0, sizeof(*a));
}

static void call(struct node *n, const char *method, const ProtobufCMessage *req, int64_t timeout,
                 struct answer *a)
{
    memset(a, 0, sizeof(*a));
    grpc_byte_buffer *bb = rpc_encode(req);
    REQUIRE(bb);
    char path[128];
    snprintf(path, sizeof(path), SVC "%s", method);
    struct rpc_reply r;
    int rc = rpc_unary_wait(n->ch, path, bb, NULL, 0, timeout, &r);
    grpc_byte_buffer_destroy(bb);
    REQUIRE(rc == 0);
    a->code = r.status;
    snprintf(a->details, sizeof(a->details), "%s", r.details);
    if (r.status == GRPC_STATUS_OK && strcmp(method, "unregisterModel") != 0) {
        struct mm_error err = {0};
        ProtobufCMessage *msg = NULL;
        REQUIRE(rpc_decode(r.response, &mmesh__model_status_info__descriptor, &msg, &err) == 0);
        a->info = (Mmesh__ModelStatusInfo *)msg;
    }
    rpc_reply_clear(&r);
}

static void do_register(struct node *n, const char *id, const char *type, const char *path,
                        bool load_now, bool sync, struct answer *a)
{
    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    info.type = (char *)type;
    info.path = (char *)path;
    Mmesh__RegisterModelRequest req = MMESH__REGISTER_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    req.modelinfo = &info;
    req.loadnow = load_now;
    req.sync = sync;
    call(n, "registerModel", &req.base, 30000, a);
}

static void do_status(struct node *n, const char *id, struct answer *a)
{
    Mmesh__GetStatusRequest req = MMESH__GET_STATUS_REQUEST__INIT;
    req.modelid = (char *)id;
    call(n, "getModelStatus", &req.base, 5000, a);
}

static void do_ensure(struct node *n, const char *id, bool sync, struct answer *a)
{
    Mmesh__EnsureLoadedRequest req = MMESH__ENSURE_LOADED_REQUEST__INIT;
    req.modelid = (char *)id;
    req.sync = sync;
    call(n, "ensureLoaded", &req.base, 30000, a);
}

static void do_unregister(struct node *n, const char *id, struct answer *a)
{
    Mmesh__UnregisterModelRequest req = MMESH__UNREGISTER_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    call(n, "unregisterModel", &req.base, 10000, a);
}

/* The status's copy locations, as "n0,n2" in node order of the answer. */
static int loaded_on(const Mmesh__ModelStatusInfo *info, char *out, size_t size)
{
    int n = 0;
    out[0] = '\0';
    for (size_t i = 0; info && i < info->n_modelcopyinfos; i++)
        if (info->modelcopyinfos[i]->copystatus ==
            MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED) {
            size_t len = strlen(out);
            snprintf(out + len, size - len, "%s%s", n ? "," : "",
                     info->modelcopyinfos[i]->location);
            n++;
        }
    return n;
}

/* Copy keys of a model in etcd. */
static long copy_keys(const char *model)
{
    char key[256];
    snprintf(key, sizeof(key), "/modelmesh/t/copies/%s/", model);
    struct etcd_range_req req = {.key = key, .prefix = true, .count_only = true};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    if (etcd_sync_range(etcd, &req, &r, &err) < 0) {
        fprintf(stderr, "range %s: %s\n", key, err.msg);
        return -1;
    }
    long n = (long)r->op.count;
    etcd_response_free(r);
    return n;
}

/* Poll getModelStatus on node n until want (status), at most ms. */
static bool wait_status(struct node *n, const char *id, Mmesh__ModelStatusInfo__ModelStatus want,
                        long long ms, struct answer *a)
{
    long long t0 = harness_now_ms();
    for (;;) {
        do_status(n, id, a);
        if (a->code == GRPC_STATUS_OK && a->info->status == want)
            return true;
        if (harness_now_ms() - t0 > ms)
            return false;
        answer_clear(a);
        harness_run_until(loop, NULL, NULL, 50);
    }
}

/* ------------------------------------------------------------------ the cluster */

static void start_node(int i)
{
    struct node *n = &nodes[i];
    snprintf(n->id, sizeof(n->id), "n%d", i);
    snprintf(n->cache, sizeof(n->cache), "%s/cache-%d", dir, i);
    REQUIRE(mkdir(n->cache, 0700) == 0);
    char *rt_argv[] = {(char *)mm_runtime, "--listen",       "127.0.0.1:0", "--models-dir",
                       n->cache,          "--models-dir", models_root,   "--capacity-bytes",
                       "200000000",       "--log-level",  "warn",        NULL};
    REQUIRE(harness_spawn_listening(rt_argv, 10000, &n->runtime_pid, &n->runtime_port) == 0);
    char runtime[64];
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", n->runtime_port);
    char *argv[] = {(char *)mm_node,
                    "--etcd-endpoints", server.endpoint,
                    "--cluster", "t",
                    "--instance-id", n->id,
                    "--runtime", runtime,
                    "--model-types", "xgboost",
                    "--internal-listen", "127.0.0.1:0",
                    "--lease-ttl", "3s",
                    "--publish-min-interval", "100ms",
                    "--listen", "127.0.0.1:0",
                    "--models-root", models_root,
                    "--cache-dir", n->cache,
                    "--replace-delay", "500ms",
                    "--shutdown-timeout", "15s",
                    "--probe-listen", "127.0.0.1:0",
                    "--rest-listen", "127.0.0.1:0",
                    "--metrics-listen", "127.0.0.1:0",
                    "--log-level", "info",
                    NULL};
    REQUIRE(harness_spawn_listening(argv, 20000, &n->pid, &n->port) == 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", n->port);
    struct mm_error err = {0};
    REQUIRE(rpc_channel_new(rpc, target, 0, &n->ch, &err) == 0);
    REQUIRE(spi_client_new(rpc, runtime, &n->spi, &err) == 0);
}

static struct node *node_of(const char *id)
{
    for (int i = 0; i < NODES; i++)
        if (strcmp(nodes[i].id, id) == 0)
            return &nodes[i];
    return NULL;
}

/* Whether the runtime of n holds model id (modelSize answers). */
static bool runtime_holds(struct node *n, const char *id)
{
    struct spi_result res;
    spi_sync_model_size(n->spi, id, 5000, &res);
    return res.code == 0;
}

/* Entries of a cache dir (the storage's copies of models). */
static int cache_entries(const struct node *n)
{
    DIR *d = opendir(n->cache);
    if (!d)
        return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        count += e->d_name[0] != '.';
    closedir(d);
    return count;
}

/* ------------------------------------------------------------------ the tests */

static void test_register_sync(void)
{
    struct answer a;
    do_register(&nodes[0], "m1", "xgboost", "xgboost/breast-cancer.json", true, true, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    REQUIRE(a.info);
    CHECK_INT(a.info->status, MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED);
    char where[128];
    CHECK_INT(loaded_on(a.info, where, sizeof(where)), 1);
    answer_clear(&a);
    fprintf(stderr, "m1 loaded on %s\n", where);
    struct node *holder = node_of(where);
    REQUIRE(holder);
    CHECK(runtime_holds(holder, "m1"));
    /* every node sees the same copy */
    for (int i = 0; i < NODES; i++) {
        char on[128];
        CHECK(wait_status(&nodes[i], "m1", MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED, 5000,
                          &a));
        CHECK_INT(loaded_on(a.info, on, sizeof(on)), 1);
        CHECK_STR(on, where);
        answer_clear(&a);
    }
    CHECK_INT(copy_keys("m1"), 1);
}

static void test_errors(void)
{
    struct answer a;
    /* the same registration again: fine; other info: ALREADY_EXISTS */
    do_register(&nodes[1], "m1", "xgboost", "xgboost/breast-cancer.json", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
    do_register(&nodes[1], "m1", "xgboost", "xgboost/other.json", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_ALREADY_EXISTS);
    CHECK(strstr(a.details, "m1") != NULL);
    answer_clear(&a);
    /* INVALID_ARGUMENT naming the field */
    do_register(&nodes[2], "a/b", "xgboost", "x", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(a.details, "modelId") != NULL);
    answer_clear(&a);
    do_register(&nodes[2], "m-no-type", "", "x", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(a.details, "modelInfo.type") != NULL);
    answer_clear(&a);
    do_ensure(&nodes[2], "", false, &a);
    CHECK_INT(a.code, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(a.details, "modelId") != NULL);
    answer_clear(&a);
    /* a NUL inside the id is refused, not cut */
    char raw[16] = {0x0a, 4, 'm', '1', 0, 'x'};
    struct rpc_reply r;
    grpc_byte_buffer *bb = rpc_buffer_from(raw, 6);
    REQUIRE(rpc_unary_wait(nodes[0].ch, SVC "ensureLoaded", bb, NULL, 0, 5000, &r) == 0);
    CHECK_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(r.details, "NUL") != NULL);
    rpc_reply_clear(&r);
    grpc_byte_buffer_destroy(bb);
    /* unknown models */
    do_ensure(&nodes[0], "nope", true, &a);
    CHECK_INT(a.code, GRPC_STATUS_NOT_FOUND);
    answer_clear(&a);
    do_unregister(&nodes[1], "nope", &a);
    CHECK_INT(a.code, GRPC_STATUS_NOT_FOUND);
    answer_clear(&a);
    do_status(&nodes[2], "nope", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    CHECK(a.info && a.info->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND);
    answer_clear(&a);
    /* an unknown vmodel: OK with status NOT_FOUND, as ModelMesh answers (test_vmodel has the
     * rest) */
    Mmesh__GetVModelStatusRequest vreq = MMESH__GET_VMODEL_STATUS_REQUEST__INIT;
    vreq.vmodelid = "v";
    bb = rpc_encode(&vreq.base);
    REQUIRE(rpc_unary_wait(nodes[0].ch, SVC "getVModelStatus", bb, NULL, 0, 5000, &r) == 0);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    {
        struct mm_error verr = {0};
        ProtobufCMessage *vm = NULL;
        REQUIRE(rpc_decode(r.response, &mmesh__vmodel_status_info__descriptor, &vm, &verr) == 0);
        CHECK_INT(((Mmesh__VModelStatusInfo *)vm)->status,
                  MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__NOT_FOUND);
        protobuf_c_message_free_unpacked(vm, NULL);
    }
    rpc_reply_clear(&r);
    grpc_byte_buffer_destroy(bb);
}

struct herd {
    int replied, ok, loaded;
};

static struct herd herd;

static void on_herd(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                    void *arg)
{
    (void)arg;
    herd.replied++;
    if (status != GRPC_STATUS_OK) {
        fprintf(stderr, "ensureLoaded: %s: %s\n", rpc_status_name(status), details);
        return;
    }
    herd.ok++;
    ProtobufCMessage *msg = NULL;
    struct mm_error err = {0};
    if (rpc_decode(response, &mmesh__model_status_info__descriptor, &msg, &err) == 0) {
        herd.loaded += ((Mmesh__ModelStatusInfo *)msg)->status ==
                       MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED;
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    grpc_byte_buffer_destroy(response);
}

static bool herd_done(void *arg)
{
    (void)arg;
    return herd.replied == CONCURRENT;
}

static void test_herd(void)
{
    struct answer a;
    do_register(&nodes[2], "m2", "xgboost", "xgboost/breast-cancer.json", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    CHECK(a.info && a.info->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_LOADED);
    answer_clear(&a);
    CHECK_INT(copy_keys("m2"), 0);
    Mmesh__EnsureLoadedRequest req = MMESH__ENSURE_LOADED_REQUEST__INIT;
    req.modelid = "m2";
    req.sync = true;
    grpc_byte_buffer *bb = rpc_encode(&req.base);
    long long t0 = harness_now_ms();
    for (int i = 0; i < CONCURRENT; i++)
        REQUIRE(rpc_unary(nodes[i % NODES].ch, SVC "ensureLoaded", bb, NULL, 0, 30000, NULL,
                          on_herd, NULL, NULL) == 0);
    grpc_byte_buffer_destroy(bb);
    CHECK(harness_run_until(loop, herd_done, NULL, 40000));
    fprintf(stderr, "%d concurrent ensureLoaded over %d nodes: %d OK, %d LOADED, %lld ms\n",
            CONCURRENT, NODES, herd.ok, herd.loaded, harness_now_ms() - t0);
    CHECK_INT(herd.ok, CONCURRENT);
    CHECK_INT(herd.loaded, CONCURRENT);
    CHECK_INT(copy_keys("m2"), 1);
    int holders = 0;
    for (int i = 0; i < NODES; i++)
        holders += runtime_holds(&nodes[i], "m2");
    CHECK_INT(holders, 1);
}

static void test_failure(void)
{
    struct answer a;
    long long t0 = harness_now_ms();
    do_register(&nodes[0], "bad", "xgboost", "xgboost/missing.json", true, true, &a);
    fprintf(stderr, "bad: %s after %lld ms\n", rpc_status_name(a.code), harness_now_ms() - t0);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    CHECK(a.info && a.info->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED);
    answer_clear(&a);
    /* tried on every node (3 = --max-load-failures' default), each failure reported */
    CHECK(wait_status(&nodes[1], "bad", MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED,
                      5000, &a));
    int failed = 0;
    for (size_t i = 0; a.info && i < a.info->n_modelcopyinfos; i++)
        failed += a.info->modelcopyinfos[i]->copystatus ==
                  MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED;
    CHECK_INT(failed, NODES);
    CHECK(a.info && a.info->n_errors == NODES);
    if (a.info && a.info->n_errors)
        fprintf(stderr, "bad: last error: %s\n", a.info->errors[0]);
    CHECK(a.info && a.info->n_errors && strstr(a.info->errors[0], "missing.json") != NULL);
    answer_clear(&a);
    /* asking again does not load it again */
    do_ensure(&nodes[2], "bad", true, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    CHECK(a.info && a.info->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED);
    answer_clear(&a);
    CHECK_INT(copy_keys("bad"), NODES);
    do_unregister(&nodes[2], "bad", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
}

/* UNAVAILABLE when nobody can take a model; DEADLINE_EXCEEDED at the client's deadline while
 * the runtimes are frozen mid-load, then Loaded once they thaw. */
static void test_unavailable_and_deadline(void)
{
    struct answer a;
    do_register(&nodes[0], "sk", "sklearn", "sklearn/x.joblib", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
    do_ensure(&nodes[1], "sk", true, &a);
    CHECK_INT(a.code, GRPC_STATUS_UNAVAILABLE);
    CHECK(strstr(a.details, "sk") != NULL);
    fprintf(stderr, "sk: %s\n", a.details);
    answer_clear(&a);
    do_unregister(&nodes[2], "sk", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);

    do_register(&nodes[0], "slow", "xgboost", "xgboost/breast-cancer.json", false, false, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
    for (int i = 0; i < NODES; i++)
        kill(nodes[i].runtime_pid, SIGSTOP);
    Mmesh__EnsureLoadedRequest req = MMESH__ENSURE_LOADED_REQUEST__INIT;
    req.modelid = "slow";
    req.sync = true;
    long long t0 = harness_now_ms();
    call(&nodes[1], "ensureLoaded", &req.base, 700, &a);
    long long took = harness_now_ms() - t0;
    CHECK_INT(a.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK(took < 3000);
    answer_clear(&a);
    for (int i = 0; i < NODES; i++)
        kill(nodes[i].runtime_pid, SIGCONT);
    CHECK(wait_status(&nodes[2], "slow", MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED, 10000,
                      &a));
    answer_clear(&a);
    CHECK_INT(copy_keys("slow"), 1);
    do_unregister(&nodes[2], "slow", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
}

static bool unloaded_everywhere(void *arg)
{
    const char *id = arg;
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid && (runtime_holds(&nodes[i], id) || cache_entries(&nodes[i]) > 1))
            return false;
    return true;
}

static void test_unregister(void)
{
    struct answer a;
    do_unregister(&nodes[1], "m1", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
    do_unregister(&nodes[0], "m2", &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    answer_clear(&a);
    CHECK_INT(copy_keys("m1"), 0);
    CHECK_INT(copy_keys("m2"), 0);
    for (int i = 0; i < NODES; i++) {
        do_status(&nodes[i], "m1", &a);
        CHECK(a.info && a.info->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND);
        answer_clear(&a);
    }
    long long t0 = harness_now_ms();
    bool m1 = harness_run_until(loop, unloaded_everywhere, "m1", 10000);
    bool m2 = harness_run_until(loop, unloaded_everywhere, "m2", 10000);
    CHECK(m1 && m2);
    fprintf(stderr, "unregistered: unloaded everywhere within %lld ms\n", harness_now_ms() - t0);
    do_ensure(&nodes[2], "m1", false, &a);
    CHECK_INT(a.code, GRPC_STATUS_NOT_FOUND);
    answer_clear(&a);
}

static void test_kill_replaces(void)
{
    struct answer a;
    do_register(&nodes[2], "m4", "xgboost", "xgboost/breast-cancer.json", true, true, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    char where[128] = "";
    CHECK_INT(loaded_on(a.info, where, sizeof(where)), 1);
    answer_clear(&a);
    struct node *holder = node_of(where);
    REQUIRE(holder);
    struct node *other = holder == &nodes[0] ? &nodes[1] : &nodes[0];
    long long t0 = harness_now_ms();
    REQUIRE(kill(holder->pid, SIGKILL) == 0);
    REQUIRE(harness_wait_pid(holder->pid, 5000) != -1);
    holder->pid = 0;
    /* its lease (3 s) expires, its copy with it; a survivor places it again */
    bool moved = false;
    while (!moved && harness_now_ms() - t0 < 15000) {
        do_status(other, "m4", &a);
        for (size_t i = 0; a.code == GRPC_STATUS_OK && i < a.info->n_modelcopyinfos; i++) {
            Mmesh__ModelStatusInfo__ModelCopyInfo *ci = a.info->modelcopyinfos[i];
            moved |= ci->copystatus == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED &&
                     strcmp(ci->location, holder->id) != 0;
        }
        answer_clear(&a);
        if (!moved)
            harness_run_until(loop, NULL, NULL, 50);
    }
    CHECK(moved);
    fprintf(stderr, "m4: %s killed, Loaded elsewhere after %lld ms (lease TTL 3000 ms)\n",
            holder->id, harness_now_ms() - t0);
    CHECK_INT(copy_keys("m4"), 1);
    /* its runtime, still up, is asked for nothing more: the survivor holds the copy */
    harness_stop_pid(holder->runtime_pid, 5000);
    holder->runtime_pid = 0;
}

static struct node *live_node(void)
{
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid)
            return &nodes[i];
    return NULL;
}

static void test_sigterm_moves(void)
{
    struct answer a;
    REQUIRE(live_node());
    do_register(live_node(), "m3", "xgboost", "xgboost/breast-cancer.json", true, true, &a);
    CHECK_INT(a.code, GRPC_STATUS_OK);
    char where[128] = "";
    CHECK_INT(loaded_on(a.info, where, sizeof(where)), 1);
    answer_clear(&a);
    struct node *holder = node_of(where);
    REQUIRE(holder);
    struct node *other = NULL;
    for (int i = 0; i < NODES && !other; i++)
        if (nodes[i].pid && &nodes[i] != holder)
            other = &nodes[i];
    REQUIRE(other);
    long long t0 = harness_now_ms();
    REQUIRE(kill(holder->pid, SIGTERM) == 0);
    /* Loaded elsewhere before the holder is gone */
    bool moved = false;
    while (!moved && harness_now_ms() - t0 < 15000) {
        do_status(other, "m3", &a);
        for (size_t i = 0; a.code == GRPC_STATUS_OK && i < a.info->n_modelcopyinfos; i++) {
            Mmesh__ModelStatusInfo__ModelCopyInfo *ci = a.info->modelcopyinfos[i];
            moved |= ci->copystatus == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED &&
                     strcmp(ci->location, holder->id) != 0;
        }
        if (moved) {
            char on[128];
            loaded_on(a.info, on, sizeof(on));
            fprintf(stderr, "m3 moved from %s to %s in %lld ms\n", holder->id, on,
                    harness_now_ms() - t0);
        }
        answer_clear(&a);
        if (!moved) {
            /* the holder must still be running while it is not moved */
            int st = harness_wait_pid(holder->pid, 0);
            if (st != -1) {
                fprintf(stderr, "%s exited before m3 was loaded elsewhere\n", holder->id);
                break;
            }
            harness_run_until(loop, NULL, NULL, 50);
        }
    }
    CHECK(moved);
    int st = harness_wait_pid(holder->pid, 15000);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fprintf(stderr, "%s: wait status %#x, exit %d after %lld ms\n", holder->id, st,
            st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1, harness_now_ms() - t0);
    holder->pid = 0;
    CHECK(!runtime_holds(holder, "m3"));
    CHECK_INT(copy_keys("m3"), 1);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 4);
    mm_node = argv[1];
    mm_runtime = argv[2];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(models_root, sizeof(models_root), "%s/models", dir);
    REQUIRE(mkdir(models_root, 0700) == 0);
    char cmd[1400], out[8192];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", argv[3], models_root);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    REQUIRE(harness_etcd_start(&server, NULL) == 0);
    loop = ev_loop_new(EVFLAG_AUTO); /* not the default loop: it would reap our children */
    struct etcd_config ec = {.endpoints = server.endpoint};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &ec, &etcd, &err) == 0);
    REQUIRE(rpc_context_new(loop, &rpc, &err) == 0);
    for (int i = 0; i < NODES; i++)
        start_node(i);

    test_register_sync();
    test_errors();
    test_herd();
    test_failure();
    test_unavailable_and_deadline();
    test_unregister();
    test_kill_replaces();
    test_sigterm_moves();

    for (int i = 0; i < NODES; i++) {
        if (nodes[i].pid) {
            int st = harness_stop_pid(nodes[i].pid, 15000);
            CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        if (nodes[i].runtime_pid)
            harness_stop_pid(nodes[i].runtime_pid, 5000);
        spi_client_free(nodes[i].spi);
        rpc_channel_free(nodes[i].ch);
    }
    rpc_context_free(rpc);
    etcd_client_free(etcd);
    ev_loop_destroy(loop);
    harness_etcd_cleanup(&server);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    harness_capture(cmd, out, sizeof(out));
    return CHECK_DONE();
}
