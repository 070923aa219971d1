/* test_spi_conformance.c - what every runtime must answer through the runtime SPI (and the
 * model-independent KServe V2 calls), run against a runtime given by its command line: meson
 * runs it once per runtime, so a new runtime gets it by one more test() line.
 *
 * argv: --type TYPE --model REL --make WORD [--make WORD ...] -- RUNTIME [WORD ...]
 *   TYPE   the modelType the runtime serves ("xgboost", "sklearn")
 *   MAKE   a command that writes an example model under the directory appended to it
 *   REL    the model file's path below that directory; its extension names model files
 *   RUNTIME the runtime's command line; the test appends --listen 127.0.0.1:0, --capacity-bytes,
 *          --max-loading-concurrency, --load-timeout-ms, --default-model-size and --grace-ms,
 *          and expects "LISTENING <port>" on its stdout. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "mm/spi_sync.h"
#include "model-runtime.pb-c.h"
#include "rtclient.h"

#define MAX_WORDS 32

static struct rt_client rc;
static const char *type;
static char dir[] = "/tmp/mm-spi-XXXXXX";
static char model[600], ext[32];

/* The runtime's command line with extra words appended (NULL-terminated in out). */
static void command(char **runtime, int n_runtime, char *const extra[], char **out)
{
    int n = 0;
    for (int i = 0; i < n_runtime && n < MAX_WORDS; i++)
        out[n++] = runtime[i];
    for (int i = 0; extra[i] && n < MAX_WORDS; i++)
        out[n++] = extra[i];
    REQUIRE(n < MAX_WORDS);
    out[n] = NULL;
}

static void in_dir(char *path, size_t size, const char *name)
{
    snprintf(path, size, "%s/%s%s", dir, name, ext);
}

/* ModelInfer naming model, with no tensors: answered before any input is looked at. */
static struct testcall infer_name(const char *id)
{
    Inference__ModelInferRequest q = INFERENCE__MODEL_INFER_REQUEST__INIT;
    q.model_name = (char *)id;
    return rt_call(&rc, "/inference.GRPCInferenceService/ModelInfer", &q.base, NULL, NULL);
}

static struct spi_result predict_size(const char *id, const char *path)
{
    struct spi_model m = {.id = id, .type = type, .path = path};
    struct spi_result r;
    spi_sync_predict_model_size(rc.spi, &m, RT_CALL_MS, &r);
    return r;
}

static struct spi_result model_size(const char *id)
{
    struct spi_result r;
    spi_sync_model_size(rc.spi, id, RT_CALL_MS, &r);
    return r;
}

/* ------------------------------------------------------------------------ the sequence */

static void status_and_sizes(void)
{
    struct spi_result r = rt_status(&rc);
    REQUIRE(r.code == 0);
    CHECK_INT(r.runtime.state, SPI_READY);
    CHECK_INT(r.runtime.capacity_bytes, 123456789);
    CHECK_INT(r.runtime.max_loading_concurrency, 2);
    CHECK_INT(r.runtime.load_timeout_ms, 45000);
    CHECK_INT(r.runtime.default_model_size_bytes, 2000000);
    CHECK(r.runtime.version[0] != 0);
    fprintf(stderr, "runtimeVersion: %s\n", r.runtime.version);

    /* predictModelSize: disk size x 1.25; nothing to measure gives the default. */
    struct stat sb;
    REQUIRE(stat(model, &sb) == 0);
    r = predict_size("m", model);
    CHECK(r.code == 0 && r.size_bytes == (uint64_t)sb.st_size + (uint64_t)sb.st_size / 4);
    r = predict_size("m", "/nonexistent/model");
    CHECK(r.code == 0 && r.size_bytes == 2000000);
}

static uint64_t load_and_size(void)
{
    /* Loading: a measured size, the same when asked again; modelSize agrees. */
    uint64_t size = 0, again = 0;
    struct spi_result r = rt_load(&rc, "m", type, model, &size);
    CHECK_INT(r.code, 0);
    CHECK(size > 0 && size != 2000000);
    r = rt_load(&rc, "m", type, model, &again);
    CHECK(r.code == 0 && again == size);
    r = model_size("m");
    CHECK(r.code == 0 && r.size_bytes == size);
    CHECK(rt_spi_failed_with(model_size("not-loaded"), GRPC_STATUS_NOT_FOUND,
                             "model not-loaded is not loaded"));
    CHECK(rt_ready(&rc, "m"));
    CHECK(!rt_ready(&rc, "nope"));

    /* A directory holding one model file; empty modelType means "ours". */
    char only[700];
    snprintf(only, sizeof(only), "%s/only", dir);
    r = rt_load(&rc, "m-dir", "", only, &again);
    CHECK(r.code == 0 && again == size);
    return size;
}

static void bad_loads(void)
{
    char want[300], path[700];
    snprintf(want, sizeof(want), "serves %s models, not 'bogus'", type);
    CHECK(rt_spi_failed_with(rt_load(&rc, "x", "bogus", model, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             want));
    CHECK(rt_spi_failed_with(rt_load(&rc, "x", type, "/nonexistent/m.model", NULL),
                             GRPC_STATUS_NOT_FOUND, "/nonexistent/m.model"));
    in_dir(path, sizeof(path), "junk");
    CHECK(rt_spi_failed_with(rt_load(&rc, "x", type, path, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "cannot load"));
    snprintf(path, sizeof(path), "%s/two", dir);
    CHECK(rt_spi_failed_with(rt_load(&rc, "x", type, path, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "holds 2 model files"));
    /* Our client refuses an empty id; the runtime must too. */
    Mmesh__LoadModelRequest lr = MMESH__LOAD_MODEL_REQUEST__INIT;
    lr.modelid = "";
    lr.modeltype = (char *)type;
    lr.modelpath = model;
    CHECK(rt_failed_with(rt_call(&rc, "/mmesh.ModelRuntime/loadModel", &lr.base, NULL, NULL),
                         GRPC_STATUS_INVALID_ARGUMENT, "modelId"));
    CHECK(!rt_ready(&rc, "x"));
    CHECK(!rt_ready(&rc, ""));
}

static void v2_basics(void)
{
    ProtobufCMessage *m = NULL;
    CHECK(rt_failed_with(infer_name("unknown-model"), GRPC_STATUS_NOT_FOUND,
                         "model unknown-model is not loaded"));
    CHECK(rt_failed_with(infer_name(""), GRPC_STATUS_INVALID_ARGUMENT, "model_name is required"));
    CHECK(rt_failed_with(
        rt_call_raw(&rc, "/inference.GRPCInferenceService/ModelInfer", "\x0a\xff\xff\x01x", 5),
        GRPC_STATUS_INVALID_ARGUMENT, "malformed inference.ModelInferRequest"));
    CHECK(rt_failed_with(rt_call_raw(&rc, "/mmesh.ModelRuntime/loadModel", "\x0a\x09", 2),
                         GRPC_STATUS_INVALID_ARGUMENT, "malformed mmesh.LoadModelRequest"));
    CHECK(rt_failed_with(rt_call_raw(&rc, "/inference.GRPCInferenceService/Nope", "", 0),
                         GRPC_STATUS_UNIMPLEMENTED, ""));
    Inference__ServerLiveRequest slr = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    rt_call(&rc, "/inference.GRPCInferenceService/ServerLive", &slr.base,
            &inference__server_live_response__descriptor, &m);
    CHECK(m && ((Inference__ServerLiveResponse *)m)->live);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    Inference__ServerReadyRequest srr = INFERENCE__SERVER_READY_REQUEST__INIT;
    rt_call(&rc, "/inference.GRPCInferenceService/ServerReady", &srr.base,
            &inference__server_ready_response__descriptor, &m);
    CHECK(m && ((Inference__ServerReadyResponse *)m)->ready);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

/* Three loads of one new id at once: one load, three identical answers. */
static void shared_load(uint64_t size)
{
    enum { L = 3 };
    struct rt_spi_wait loads[L];
    memset(loads, 0, sizeof(loads));
    struct spi_model m = {.id = "m-3", .type = type, .path = model};
    for (int i = 0; i < L; i++)
        REQUIRE(spi_load_model(rc.spi, &m, 20000, rt_spi_cb, &loads[i], NULL) == 0);
    CHECK(rt_spi_wait_all(rc.loop, loads, L, 25000));
    int same = 0;
    for (int i = 0; i < L; i++)
        same += loads[i].done && loads[i].res.code == 0 && loads[i].res.size_bytes == size;
    CHECK_INT(same, L);
    CHECK(rt_ready(&rc, "m-3"));
}

static void unload_and_purge(void)
{
    /* unload: not ready, inference NOT_FOUND; unloading again (or an unknown id) is OK. */
    CHECK_INT(rt_unload(&rc, "m").code, 0);
    CHECK(!rt_ready(&rc, "m"));
    CHECK(rt_failed_with(infer_name("m"), GRPC_STATUS_NOT_FOUND, "model m is not loaded"));
    CHECK_INT(rt_unload(&rc, "m").code, 0);
    CHECK_INT(rt_unload(&rc, "never-loaded").code, 0);

    /* runtimeStatus purges whatever is loaded. */
    CHECK(rt_ready(&rc, "m-dir") && rt_ready(&rc, "m-3"));
    CHECK_INT(rt_status(&rc).code, 0);
    CHECK(!rt_ready(&rc, "m-dir") && !rt_ready(&rc, "m-3"));
}

/* Unload (purge: runtimeStatus) while a load is in progress: loadModel id from fifo; once the
 * runtime blocks opening it, a second loadModel, ModelInfer and ModelReady, the cancel, then the
 * FIFO gives end-of-file so that the load ends. The load must answer ABORTED ("model ID was
 * unloaded while loading"), the second load not OK, ModelInfer UNAVAILABLE ("model ID is still
 * loading"), not ready during or after, the cancel OK, and id loads normally afterwards. */
static bool cancel_during_load(pid_t pid, const char *id, const char *fifo, bool purge)
{
    struct rt_spi_wait load, again = {0};
    if (!rt_hold_load(&rc, rc.spi, pid, id, type, fifo, &load, NULL)) {
        rt_release_load(fifo);
        rt_spi_wait_all(rc.loop, &load, 1, RT_CALL_MS);
        return false;
    }
    struct spi_model m = {.id = id, .type = type, .path = fifo};
    if (spi_load_model(rc.spi, &m, RT_CALL_MS, rt_spi_cb, &again, NULL) < 0)
        again.done = true; /* judged below: an OK it never got */
    struct testcall infer = infer_name(id);
    bool ready_while_loading = rt_ready(&rc, id);
    struct spi_result cancel = purge ? rt_status(&rc) : rt_unload(&rc, id);
    rt_release_load(fifo);
    rt_spi_wait_all(rc.loop, &load, 1, RT_CALL_MS);
    rt_spi_wait_all(rc.loop, &again, 1, RT_CALL_MS);
    bool ready_after = rt_ready(&rc, id);

    char aborted[300], loading[300];
    snprintf(aborted, sizeof(aborted), "model %s was unloaded while loading", id);
    snprintf(loading, sizeof(loading), "model %s is still loading", id);
    bool ok = load.done && rt_spi_failed_with(load.res, GRPC_STATUS_ABORTED, aborted) &&
              load.res.code == -ECONNABORTED;
    ok &= rt_failed_with(infer, GRPC_STATUS_UNAVAILABLE, loading);
    if (!again.done || again.res.status == GRPC_STATUS_OK || ready_while_loading || ready_after ||
        cancel.code != 0) {
        fprintf(stderr,
                "  %s during a load of %s: second load %s (status %d), ready while loading %d, "
                "after %d, the %s itself: %s\n",
                purge ? "purge" : "unload", id, again.done ? "answered" : "unanswered",
                again.res.status, ready_while_loading, ready_after,
                purge ? "runtimeStatus" : "unloadModel", cancel.code ? cancel.err.msg : "OK");
        ok = false;
    }
    struct spi_result reload = rt_load(&rc, id, type, model, NULL);
    if (reload.code != 0 || !rt_ready(&rc, id)) {
        fprintf(stderr, "  %s does not load again after the cancelled load: %s\n", id,
                reload.err.msg);
        ok = false;
    }
    return ok && rt_unload(&rc, id).code == 0;
}

/* Two loadModel calls for id share one load that fails (from fifo, which gives end-of-file):
 * both must answer the load's own error (neither OK nor ABORTED), and id is not ready. */
static bool shared_failed_load(pid_t pid, const char *id, const char *fifo)
{
    struct rt_spi_wait load, again = {0};
    bool held = rt_hold_load(&rc, rc.spi, pid, id, type, fifo, &load, NULL);
    if (held) {
        struct spi_model m = {.id = id, .type = type, .path = fifo};
        if (spi_load_model(rc.spi, &m, RT_CALL_MS, rt_spi_cb, &again, NULL) < 0)
            again.done = true;
        /* Round trips on the same connection, so that the second load joins the first before
         * it ends (if it came later, it would fail on its own: NOT_FOUND, still not OK). */
        for (int i = 0; i < 3; i++)
            rt_ready(&rc, id);
    }
    rt_release_load(fifo);
    rt_spi_wait_all(rc.loop, &load, 1, RT_CALL_MS);
    if (!held)
        return false;
    rt_spi_wait_all(rc.loop, &again, 1, RT_CALL_MS);
    const struct spi_result *a = &load.res, *b = &again.res;
    bool ok = load.done && again.done && a->code != 0 && a->status != GRPC_STATUS_ABORTED &&
              b->code != 0 && b->status != GRPC_STATUS_ABORTED && !rt_ready(&rc, id);
    if (!ok)
        fprintf(stderr, "  a failed load of %s, asked for twice: '%s' and '%s'\n", id,
                a->code ? a->err.msg : "OK", b->code ? b->err.msg : "OK");
    return ok;
}

/* Shutdown with a load stuck on storage: start the runtime argv (with a short --grace-ms), load
 * model "stuck" from fifo, a FIFO nobody writes, and SIGTERM the runtime once a thread of it
 * waits in open() on the FIFO: in-flight calls are cancelled after the grace period, the stuck
 * job gets as long again, then the process must exit by itself, with status 0. */
static void term_during_stuck_load(char *const argv[], const char *fifo, long kill_ms)
{
    struct rt_client c;
    struct rt_spi_wait load = {0};
    pid_t pid = 0;
    int port = 0, status = -1;
    REQUIRE(harness_spawn_listening(argv, 60000, &pid, &port) == 0);
    REQUIRE(rt_open(&c, port) == 0);
    bool held = rt_hold_load(&c, c.spi, pid, "stuck", type, fifo, &load, NULL);
    CHECK(held);
    if (held) {
        kill(pid, SIGTERM);
        rt_spi_wait_all(c.loop, &load, 1, kill_ms);
        status = harness_stop_pid(pid, kill_ms);
    } else {
        harness_stop_pid(pid, 0);
    }
    rt_close(&c, 0, 0);
    unlink(fifo);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(load.done && load.res.code != 0);
}

/* ------------------------------------------------------------------------ fixtures */

static void make_model(char **maker, int n_maker, const char *rel)
{
    char cmd[4096] = "", out[8192];
    size_t len = 0;
    for (int i = 0; i < n_maker; i++)
        len += snprintf(cmd + len, sizeof(cmd) - len, "'%s' ", maker[i]);
    snprintf(cmd + len, sizeof(cmd) - len, "'%s'", dir);
    int code = harness_capture(cmd, out, sizeof(out));
    if (code != 0)
        fprintf(stderr, "%s: exit %d\n%s\n", cmd, code, out);
    REQUIRE(code == 0);
    snprintf(model, sizeof(model), "%s/%s", dir, rel);
    const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
    const char *dot = strrchr(base, '.');
    REQUIRE(dot && strlen(dot) < sizeof(ext));
    snprintf(ext, sizeof(ext), "%s", dot);
    /* One model file in a directory, two in another, and a file that is no model. */
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s/only' '%s/two' && cp '%s' '%s/only/model%s' && cp '%s' '%s/two/a%s' "
             "&& cp '%s' '%s/two/b%s' && echo 'not a model' > '%s/junk%s'",
             dir, dir, model, dir, ext, model, dir, ext, model, dir, ext, dir, ext);
    REQUIRE(system(cmd) == 0);
}

int main(int argc, char **argv)
{
    char *maker[MAX_WORDS], **runtime = NULL;
    const char *rel = NULL;
    int n_maker = 0, n_runtime = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            runtime = &argv[i + 1];
            n_runtime = argc - i - 1;
            break;
        }
        REQUIRE(i + 1 < argc);
        if (strcmp(argv[i], "--type") == 0)
            type = argv[++i];
        else if (strcmp(argv[i], "--model") == 0)
            rel = argv[++i];
        else if (strcmp(argv[i], "--make") == 0 && n_maker < MAX_WORDS)
            maker[n_maker++] = argv[++i];
        else
            REQUIRE(!"usage: --type T --model REL --make WORD... -- RUNTIME...");
    }
    REQUIRE(type && rel && n_maker > 0 && n_runtime > 0);
    REQUIRE(mkdtemp(dir) != NULL);
    make_model(maker, n_maker, rel);

    char *const flags[] = {"--listen",
                           "127.0.0.1:0",
                           "--capacity-bytes",
                           "123456789",
                           "--max-loading-concurrency",
                           "2",
                           "--load-timeout-ms",
                           "45000",
                           "--default-model-size",
                           "2000000",
                           NULL};
    char *args[MAX_WORDS + 1];
    command(runtime, n_runtime, flags, args);
    pid_t pid = 0;
    int port = 0;
    long long t0 = harness_now_ms();
    REQUIRE(harness_spawn_listening(args, 60000, &pid, &port) == 0);
    fprintf(stderr, "%s runtime listening on %d after %lld ms\n", type, port,
            harness_now_ms() - t0);
    REQUIRE(rt_open(&rc, port) == 0);

    status_and_sizes();
    uint64_t size = load_and_size();
    bad_loads();
    v2_basics();
    shared_load(size);
    unload_and_purge();

    /* Unloaded, or purged by runtimeStatus, while loading: the load answers ABORTED, inference
     * meanwhile UNAVAILABLE, and the id loads normally afterwards. */
    char fifo[700];
    in_dir(fifo, sizeof(fifo), "held");
    CHECK(cancel_during_load(pid, "held", fifo, false));
    CHECK(cancel_during_load(pid, "held", fifo, true));

    /* A load that fails, asked for twice while it runs: both get its error. */
    CHECK(shared_failed_load(pid, "held", fifo));

    /* SIGTERM: a graceful exit. */
    int status = rt_close(&rc, pid, 15000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* SIGTERM while a load is stuck reading its model. */
    char *const grace[] = {"--listen", "127.0.0.1:0", "--grace-ms", "300", NULL};
    command(runtime, n_runtime, grace, args);
    in_dir(fifo, sizeof(fifo), "stuck");
    term_during_stuck_load(args, fifo, 5000);

    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
