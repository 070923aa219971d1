/* test_mmctl_model.c - mmctl's model verbs (register, unregister, status, ensure) against a small
 * mmesh.ModelMesh server in this test (rpc.h), which keeps a table of models the way the node's
 * model API answers: NOT_FOUND for an unknown model, ALREADY_EXISTS, INVALID_ARGUMENT naming
 * the field, LOADED or LOADING_FAILED for a sync call, a parked call for a deadline. Checked:
 * what mmctl sends (every field, the deadline), what it prints (readable lines, -o json, copies
 * with their time, server text escaped), its exit codes (0 done, 1 failed or not as asked, 2
 * usage) and that errors name the gRPC status; --node, MM_NODE_ADDRESS and --address; --uri and
 * --param sent as the JSON key; a Loading copy's bytes pulled.
 * argv: MMCTL */
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "model-mesh.pb-c.h"
#include "mm/rpc.h"

#define MAX_MODELS 16
#define COPY_TIME_MS 1700000000123ull /* 2023-11-14T22:13:20.123Z */

static struct ev_loop *loop;
static const char *mmctl;
static char address[64], out[65536], out_path[128], cmd_run[4096];

/* ---- the server: a table of models ---- */

struct model {
    char id[128];
    char type[64], path[128], key[256];
    bool load_now;
    Mmesh__ModelStatusInfo__ModelStatus status;
    char error[128];
};
static struct model models[MAX_MODELS];
static int n_models;

/* What the last call carried. */
static struct {
    char method[64], id[128], type[64], path[128], key[256];
    bool load_now, sync;
    int64_t remaining_ms;
} last;

static struct rpc_call *parked;

static struct model *find(const char *id)
{
    for (int i = 0; i < n_models; i++)
        if (strcmp(models[i].id, id) == 0)
            return &models[i];
    return NULL;
}

static void note(struct rpc_call *c, const char *method, const char *id)
{
    memset(&last, 0, sizeof last);
    snprintf(last.method, sizeof last.method, "%s", method);
    snprintf(last.id, sizeof last.id, "%s", id ? id : "");
    last.remaining_ms = rpc_call_remaining_ms(c);
}

/* Reply the model's status; a loaded model has one copy on node-a, a failed one its error. */
static void reply_status(struct rpc_call *c, const struct model *m)
{
    Mmesh__ModelStatusInfo info = MMESH__MODEL_STATUS_INFO__INIT;
    Mmesh__ModelStatusInfo__ModelCopyInfo copy = MMESH__MODEL_STATUS_INFO__MODEL_COPY_INFO__INIT;
    Mmesh__ModelStatusInfo__ModelCopyInfo *copies[1] = {&copy};
    char *errors[1];
    info.status = m->status;
    if (m->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED) {
        copy.location = "node-a";
        copy.copystatus = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED;
        copy.time = COPY_TIME_MS;
        info.modelcopyinfos = copies;
        info.n_modelcopyinfos = 1;
    } else if (m->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING) {
        copy.location = "node-b"; /* being pulled */
        copy.copystatus = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING;
        copy.time = COPY_TIME_MS;
        copy.bytespulled = 120000000;
        copy.bytestotal = 200000000;
        info.modelcopyinfos = copies;
        info.n_modelcopyinfos = 1;
    }
    if (m->error[0]) {
        errors[0] = (char *)m->error;
        info.errors = errors;
        info.n_errors = 1;
    }
    rpc_call_reply(c, rpc_encode(&info.base), GRPC_STATUS_OK, NULL);
}

/* A sync wait ends LOADED, or LOADING_FAILED for the path "fail". */
static void load(struct model *m)
{
    if (strcmp(m->path, "fail") == 0) {
        m->status = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED;
        snprintf(m->error, sizeof m->error, "load failed: boom \x1b[2J");
    } else {
        m->status = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED;
    }
}

static void register_model(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__register_model_request__descriptor, &msg) < 0)
        return;
    Mmesh__RegisterModelRequest *r = (Mmesh__RegisterModelRequest *)msg;
    note(c, "registerModel", r->modelid);
    if (r->modelinfo) {
        snprintf(last.type, sizeof last.type, "%s", r->modelinfo->type);
        snprintf(last.path, sizeof last.path, "%s", r->modelinfo->path);
        snprintf(last.key, sizeof last.key, "%s", r->modelinfo->key);
    }
    last.load_now = r->loadnow;
    last.sync = r->sync;
    if (!r->modelid[0]) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "modelId: required");
    } else if (!r->modelinfo || !r->modelinfo->type[0]) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "modelInfo.type: required");
    } else if (strcmp(r->modelinfo->path, "../escape") == 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "modelInfo.path: \"..\" leaves the models root");
    } else if (find(r->modelid)) {
        rpc_call_fail(c, GRPC_STATUS_ALREADY_EXISTS, "model %s is already registered", r->modelid);
    } else if (n_models == MAX_MODELS) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "table full");
    } else {
        struct model *m = &models[n_models++];
        memset(m, 0, sizeof *m);
        snprintf(m->id, sizeof m->id, "%s", r->modelid);
        snprintf(m->type, sizeof m->type, "%s", r->modelinfo->type);
        snprintf(m->path, sizeof m->path, "%s", r->modelinfo->path);
        snprintf(m->key, sizeof m->key, "%s", r->modelinfo->key);
        m->load_now = r->loadnow;
        m->status = r->loadnow ? MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING
                               : MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_LOADED;
        if (r->sync)
            load(m);
        reply_status(c, m);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void unregister_model(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__unregister_model_request__descriptor, &msg) < 0)
        return;
    Mmesh__UnregisterModelRequest *r = (Mmesh__UnregisterModelRequest *)msg;
    note(c, "unregisterModel", r->modelid);
    struct model *m = find(r->modelid);
    if (!m) {
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s not found", r->modelid);
    } else {
        *m = models[--n_models];
        Mmesh__UnregisterModelResponse resp = MMESH__UNREGISTER_MODEL_RESPONSE__INIT;
        rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void get_status(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__get_status_request__descriptor, &msg) < 0)
        return;
    Mmesh__GetStatusRequest *r = (Mmesh__GetStatusRequest *)msg;
    note(c, "getModelStatus", r->modelid);
    struct model *m = find(r->modelid);
    if (strcmp(r->modelid, "modelmesh-style") == 0) { /* ModelMesh answers a status, not a code */
        struct model none = {.status = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND};
        reply_status(c, &none);
    } else if (!m) {
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s not found", r->modelid);
    } else {
        reply_status(c, m);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_parked_cancel(struct rpc_call *c, void *arg)
{
    rpc_call_reply(c, NULL, GRPC_STATUS_CANCELLED, "client gone");
    parked = NULL;
}

static void ensure_loaded(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__ensure_loaded_request__descriptor, &msg) < 0)
        return;
    Mmesh__EnsureLoadedRequest *r = (Mmesh__EnsureLoadedRequest *)msg;
    note(c, "ensureLoaded", r->modelid);
    last.sync = r->sync;
    struct model *m = find(r->modelid);
    if (strcmp(r->modelid, "slow") == 0 && !parked) { /* never answers: the deadline ends it */
        parked = c;
        if (rpc_call_on_cancel(c, on_parked_cancel, NULL) < 0)
            on_parked_cancel(c, NULL);
    } else if (!m) {
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s not found", r->modelid);
    } else {
        if (r->sync)
            load(m);
        else if (m->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_LOADED)
            m->status = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING;
        reply_status(c, m);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- running mmctl while the loop serves ---- */

struct child {
    pid_t pid;
    int status;
    bool exited;
};

static bool child_exited(void *arg)
{
    struct child *c = arg;
    if (!c->exited)
        c->exited = waitpid(c->pid, &c->status, WNOHANG) == c->pid;
    return c->exited;
}

/* Run "env MMCTL args" through the shell with stdout+stderr into out; serve meanwhile. Returns
 * the exit code (-1 if it did not exit within 30 s). env may be "". */
static int run_env(const char *env, const char *args)
{
    char *cmd = cmd_run;
    snprintf(cmd_run, sizeof cmd_run, "%s '%s' %s", env, mmctl, args);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    struct child c = {pid, -1, false};
    if (!harness_run_until(loop, child_exited, &c, 30000)) {
        kill(pid, SIGKILL);
        waitpid(pid, &c.status, 0);
        c.status = -1;
    }
    FILE *f = fopen(out_path, "rb");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return c.status >= 0 && WIFEXITED(c.status) ? WEXITSTATUS(c.status) : -1;
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char args[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return run_env("", args);
}

#define EXPECT(code, fragment, ...)                                                                \
    do {                                                                                           \
        int rc_ = run(__VA_ARGS__);                                                                \
        CHECK_INT(rc_, code);                                                                      \
        CHECK(strstr(out, fragment) != NULL);                                                      \
        if (rc_ != (code) || !strstr(out, fragment))                                               \
            fprintf(stderr, "  %s\n  printed: %s\n  wanted: %s\n", cmd_run, out, fragment);        \
    } while (0)

/* The last call's deadline was about ms away when it arrived (gRPC's header rounds it up a
 * little, to a whole second past 100 s; mmctl's start and the call take some). */
static bool deadline_about(int64_t ms)
{
    bool ok = last.remaining_ms > ms - 3000 && last.remaining_ms <= ms + 1100;
    if (!ok)
        fprintf(stderr, "  deadline %lld ms away, not about %lld\n", (long long)last.remaining_ms,
                (long long)ms);
    return ok;
}

static void test_register(void)
{
    EXPECT(0, "model m1: NOT_LOADED\n",
           "--node %s model register m1 --type sklearn --path "
           "sk/m1.joblib",
           address);
    CHECK_STR(last.method, "registerModel");
    CHECK_STR(last.id, "m1");
    CHECK_STR(last.type, "sklearn");
    CHECK_STR(last.path, "sk/m1.joblib");
    CHECK_STR(last.key, "");
    CHECK(!last.load_now && !last.sync);
    CHECK(deadline_about(5000)); /* the default deadline */

    EXPECT(1, "registerModel m1 at ", "--node %s model register m1 --type sklearn", address);
    CHECK(strstr(out, "ALREADY_EXISTS: model m1 is already registered") != NULL);

    /* every flag arrives; --sync waits with a longer deadline, and LOADED exits 0 */
    EXPECT(0, "model m2: LOADED\n  copy node-a: LOADED since 2023-11-14T22:13:20.123Z\n",
           "--node %s model register m2 --type xgboost --path xgb/m2.json --key my-key "
           "--load-now --sync",
           address);
    CHECK_STR(last.key, "my-key");
    CHECK(last.load_now && last.sync);
    CHECK(deadline_about(120000));
    EXPECT(0, "model m4: LOADING",
           "--node=%s model register m4 --type=x --storage-key=k2 "
           "--load-now --timeout 20s",
           address);
    CHECK_STR(last.key, "k2");
    CHECK(deadline_about(20000));

    /* a sync that fails: the status printed, exit 1 with the error, escaped */
    EXPECT(1, "model m3: LOADING_FAILED\n  error: load failed: boom \\x1b[2J\n",
           "--node %s model register m3 --type x --path fail --sync", address);
    CHECK(strstr(out, "registerModel m3 at ") && strstr(out, "ended LOADING_FAILED, not LOADED"));
    CHECK(strchr(out, '\x1b') == NULL);

    /* the server's INVALID_ARGUMENT names the field; mmctl names the status */
    EXPECT(1, "INVALID_ARGUMENT: modelInfo.path: \"..\" leaves the models root",
           "--node %s model register m5 --type x --path ../escape", address);
    CHECK_INT(run("--node %s model register m5 --type x -o json", address), 0);
    CHECK(strstr(out, "\"status\": \"NOT_LOADED\"") != NULL);

    /* --uri and --param: the key in ModelMesh Serving's JSON form, the path from the URI;
     * --param over the URI's parameters */
    EXPECT(0, "model m6: NOT_LOADED",
           "--node %s model register m6 --type x --uri s3://bkt/dir/m6 --key k "
           "--param region=eu-west-1 --param=bucket=b2",
           address);
    CHECK_STR(last.path, "dir/m6");
    CHECK_STR(last.key, "{\"storage_key\":\"k\",\"storage_params\":{\"type\":\"s3\","
                        "\"bucket\":\"b2\",\"region\":\"eu-west-1\"}}");
    EXPECT(0, "model m7: NOT_LOADED", "--node %s model register m7 --type x --path p "
           "--param type=pvc --param name=models", address);
    CHECK_STR(last.path, "p");
    CHECK_STR(last.key, "{\"storage_params\":{\"type\":\"pvc\",\"name\":\"models\"}}");
}

static void test_status_ensure_unregister(void)
{
    EXPECT(0, "model m2: LOADED\n  copy node-a: LOADED since", "--node %s model status m2",
           address);
    CHECK_STR(last.method, "getModelStatus");
    EXPECT(0, "\"modelCopyInfos\": [", "--node %s model status m2 -o json", address);
    CHECK(strstr(out, "\"location\": \"node-a\"") && strstr(out, "\"time\": 1700000000123"));
    EXPECT(0, "model m2: LOADED", "--node %s -o text model status m2", address);
    /* a copy being pulled shows its bytes */
    EXPECT(0, "model m4: LOADING\n  copy node-b: LOADING since 2023-11-14T22:13:20.123Z, "
              "pulled 120.0/200.0 MB\n", "--node %s model status m4", address);
    EXPECT(0, "\"bytesPulled\": 120000000", "--node %s model status m4 -o json", address);
    EXPECT(1, "getModelStatus nosuch at ", "--node %s model status nosuch", address);
    CHECK(strstr(out, "NOT_FOUND: model nosuch not found") != NULL);
    EXPECT(1, "the model is not registered", "--node %s model status modelmesh-style", address);
    CHECK(strstr(out, "model modelmesh-style: NOT_FOUND") != NULL);

    EXPECT(0, "model m1: LOADING", "--node %s model ensure m1", address);
    CHECK_STR(last.method, "ensureLoaded");
    CHECK(!last.sync);
    EXPECT(0, "model m1: LOADED", "--node %s model ensure m1 --sync", address);
    CHECK(last.sync);
    EXPECT(1, "NOT_FOUND", "--node %s model ensure nosuch", address);

    /* a deadline: the call parked by the server ends with DEADLINE_EXCEEDED, in time */
    long long t0 = harness_now_ms();
    EXPECT(1, "ensureLoaded slow at ", "--node %s model ensure slow --timeout 300ms", address);
    CHECK(strstr(out, "DEADLINE_EXCEEDED") != NULL);
    CHECK(harness_now_ms() - t0 < 5000);

    EXPECT(0, "model m1: unregistered\n", "--node %s model unregister m1", address);
    CHECK_STR(last.method, "unregisterModel");
    CHECK(find("m1") == NULL);
    EXPECT(1, "unregisterModel m1 at ", "--node %s model unregister m1", address);
    CHECK(strstr(out, "NOT_FOUND") != NULL);
    EXPECT(0, "{\n}", "--node %s model unregister m2 -o json", address);

    /* an id from the command line is printed escaped */
    EXPECT(0, "model x\\x1by: NOT_LOADED",
           "--node %s model register \"$(printf 'x\\033y')\" "
           "--type t",
           address);
    CHECK(strchr(out, '\x1b') == NULL);
}

static void test_addresses(void)
{
    char env[128];
    snprintf(env, sizeof env, "MM_NODE_ADDRESS=%s", address);
    CHECK_INT(run_env(env, "model status m4"), 0);
    CHECK(strstr(out, "model m4: LOADING") != NULL);
    char args[256];
    snprintf(args, sizeof args, "--address %s model status m4", address);
    CHECK_INT(run_env("MM_NODE_ADDRESS=127.0.0.1:1", args), 0); /* a flag beats the env */

    int free_port = harness_free_port();
    EXPECT(1, "UNAVAILABLE", "--node 127.0.0.1:%d model status m4 --timeout 3s", free_port);
    CHECK(strstr(out, "getModelStatus m4 at 127.0.0.1:") != NULL);
}

static void test_usage(void)
{
    EXPECT(2, "model takes a verb", "model");
    EXPECT(2, "unknown model verb 'frob'", "model frob m1");
    EXPECT(2, "model status takes one model ID", "model status");
    EXPECT(2, "model status takes one model ID", "model status a b");
    EXPECT(2, "model status takes one model ID", "model status ''");
    EXPECT(2, "model register needs --type", "model register m1 --path p");
    EXPECT(2, "model register needs --type", "model register m1 --type=");
    EXPECT(2, "--sync goes with model register and model ensure only", "model status m --sync");
    EXPECT(2, "go with model register only", "model unregister m --type x");
    EXPECT(2, "go with model register only", "model ensure m --load-now");
    EXPECT(2, "-o takes text or json", "model status m -o yaml");
    EXPECT(2, "-o needs a value", "model status m -o");
    EXPECT(2, "not both", "model status m --node a:1 --address b:2");
    EXPECT(2, "not both", "model register m --type t --key a --storage-key b");
    EXPECT(2, "go with model verbs only", "metadata m --sync");
    EXPECT(2, "go with model verbs only", "registry get models/m --node a:1");
    EXPECT(2, "needs a value", "model status m --node");
    EXPECT(0, "model register ID --type T", "--help");
    EXPECT(2, "give --uri or --path, not both", "model register m --type t --uri s3://b/p "
           "--path p");
    EXPECT(2, "--uri: ", "model register m --type t --uri ftp://b/p");
    EXPECT(2, "--param takes NAME=VALUE", "model register m --type t --param novalue");
    EXPECT(2, "go with model register only", "model status m --param a=b");
    EXPECT(2, "go with model register only", "model status m --uri s3://b/p");
}

static void on_down(void *arg)
{
    *(bool *)arg = true;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    mmctl = argv[1];
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO); /* not the default loop: it would reap mmctl (SIGCHLD) */
    snprintf(out_path, sizeof out_path, "/tmp/test-mmctl-model-%d.out", (int)getpid());

    struct rpc_context *ctx = NULL;
    struct rpc_server *s = NULL;
    struct mm_error err = {0};
    int port = 0;
    REQUIRE(rpc_context_new(loop, &ctx, &err) == 0);
    REQUIRE(rpc_server_new(ctx, NULL, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", &port, &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelMesh/registerModel", register_model, NULL, &err) ==
            0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelMesh/unregisterModel", unregister_model, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelMesh/getModelStatus", get_status, NULL, &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelMesh/ensureLoaded", ensure_loaded, NULL, &err) ==
            0);
    REQUIRE(rpc_server_start(s, &err) == 0);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);

    test_register();
    test_status_ensure_unregister();
    test_addresses();
    test_usage();

    if (parked)
        rpc_call_reply(parked, NULL, GRPC_STATUS_CANCELLED, "test over");
    bool down = false;
    rpc_server_shutdown(s, 500, on_down, &down);
    CHECK(harness_run_until(loop, flag_set, &down, 2000));
    rpc_server_free(s);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    unlink(out_path);
    return CHECK_DONE();
}
