/* test_spi_client.c - node's asynchronous runtime SPI client (mm/spi.h) against a real
 * mm-runtime: decoded answers, errors that name the call, the model and the runtime, deadlines,
 * cancelling a load in flight (its callback never runs), freeing a client with requests in
 * flight and from inside its own callback; answers that do not decode, from a server of ours.
 * Run under ASan too: nothing may touch a freed client or leak a dropped request.
 * argv: MM_RUNTIME MAKE_BREAST_CANCER */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/rpc.h"
#include "mm/spi_sync.h"
#include "model-runtime.pb-c.h"
#include "rtclient.h"

static struct rt_client rc;
static pid_t pid;
static char dir[] = "/tmp/mm-spi-client-XXXXXX";
static char model[600];

/* Whether s starts with the call, the model and the runtime as spi.h promises. */
static bool names(const struct spi_result *r, const char *call_and_model, const char *status)
{
    char want[300];
    snprintf(want, sizeof(want), "%s at %s: %s: ", call_and_model, rc.target, status);
    bool ok = strncmp(r->err.msg, want, strlen(want)) == 0 && r->err.code == r->code;
    if (!ok)
        fprintf(stderr, "  message '%s' (code %d, err.code %d), wanted it to start '%s'\n",
                r->err.msg, r->code, r->err.code, want);
    return ok;
}

/* A round trip on the main client: replies sent before its answer have been handled after. */
static void round_trip(void)
{
    struct spi_result r;
    spi_sync_model_size(rc.spi, "round-trip", RT_CALL_MS, &r);
}

static void arguments(void)
{
    struct spi_client *cl = (struct spi_client *)1;
    struct mm_error err = {0};
    CHECK_INT(spi_client_new(NULL, "127.0.0.1:1", &cl, &err), -EINVAL);
    CHECK(cl == NULL);
    CHECK_INT(spi_client_new(rc.ctx, "", &cl, &err), -EINVAL);

    struct rt_spi_wait w = {0};
    struct spi_request *r = (struct spi_request *)1;
    struct spi_model no_id = {.id = "", .type = "xgboost", .path = model};
    struct spi_model no_path = {.id = "m", .type = "xgboost"};
    CHECK_INT(spi_load_model(rc.spi, &no_id, 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK(r == NULL);
    CHECK_INT(spi_load_model(rc.spi, &no_path, 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK_INT(spi_load_model(rc.spi, NULL, 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK_INT(spi_predict_model_size(rc.spi, &no_id, 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK_INT(spi_unload_model(rc.spi, "", 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK_INT(spi_model_size(rc.spi, NULL, 1000, rt_spi_cb, &w, &r), -EINVAL);
    CHECK_INT(spi_runtime_status(rc.spi, 1000, NULL, &w, &r), -EINVAL);
    CHECK_INT(spi_runtime_status(rc.spi, -1, rt_spi_cb, &w, &r), -EINVAL);
    spi_request_cancel(NULL);
    spi_client_free(NULL);

    /* The waited-for form says what could not start. */
    struct spi_result res;
    CHECK_INT(spi_sync_load_model(rc.spi, &no_id, 1000, &res), -EINVAL);
    CHECK(res.code == -EINVAL && res.method == SPI_LOAD_MODEL &&
          strstr(res.err.msg, "loadModel at 127.0.0.1:") &&
          strstr(res.err.msg, "cannot start the call"));
    harness_run_until(rc.loop, NULL, NULL, 100);
    CHECK_INT(w.calls, 0);
}

static void answers(void)
{
    /* runtimeStatus, decoded; the callback runs from the loop, not from inside the call. */
    struct rt_spi_wait w = {0};
    REQUIRE(spi_runtime_status(rc.spi, RT_CALL_MS, rt_spi_cb, &w, NULL) == 0);
    CHECK_INT(w.calls, 0);
    CHECK(rt_spi_wait_all(rc.loop, &w, 1, RT_CALL_MS));
    CHECK_INT(w.calls, 1);
    CHECK(w.res.code == 0 && w.res.status == GRPC_STATUS_OK && w.res.err.msg[0] == 0);
    CHECK_INT(w.res.method, SPI_RUNTIME_STATUS);
    CHECK_INT(w.res.runtime.state, SPI_READY);
    CHECK_INT(w.res.runtime.capacity_bytes, 987654321);
    CHECK_INT(w.res.runtime.max_loading_concurrency, 2);
    CHECK_INT(w.res.runtime.load_timeout_ms, 90000);
    CHECK_INT(w.res.runtime.default_model_size_bytes, 1000000);
    CHECK_INT(w.res.runtime.numeric_version, 100);
    CHECK(strncmp(w.res.runtime.version, "mm-runtime ", 11) == 0);

    /* load, size, predicted size, unload. */
    struct spi_result r = rt_load(&rc, "bc", "xgboost", model, NULL);
    CHECK(r.code == 0 && r.method == SPI_LOAD_MODEL && r.size_bytes > 0);
    uint64_t size = r.size_bytes;
    spi_sync_model_size(rc.spi, "bc", RT_CALL_MS, &r);
    CHECK(r.code == 0 && r.method == SPI_MODEL_SIZE && r.size_bytes == size);
    struct spi_model bc = {.id = "bc", .type = "xgboost", .path = model, .key = "{}"};
    spi_sync_predict_model_size(rc.spi, &bc, RT_CALL_MS, &r);
    CHECK(r.code == 0 && r.method == SPI_PREDICT_MODEL_SIZE && r.size_bytes > 0);
    r = rt_unload(&rc, "bc");
    CHECK(r.code == 0 && r.method == SPI_UNLOAD_MODEL);
}

static void errors(void)
{
    /* Each names the call, the model and the runtime, then the status and the runtime's words. */
    struct spi_result r = rt_load(&rc, "ghost", "xgboost", "/nonexistent/ghost.json", NULL);
    CHECK(r.code == -ENOENT && r.status == GRPC_STATUS_NOT_FOUND);
    CHECK(names(&r, "loadModel ghost", "NOT_FOUND"));
    CHECK(strstr(r.err.msg, "/nonexistent/ghost.json") != NULL);
    spi_sync_model_size(rc.spi, "ghost", RT_CALL_MS, &r);
    CHECK(r.code == -ENOENT && names(&r, "modelSize ghost", "NOT_FOUND"));
    CHECK(strstr(r.err.msg, "model ghost is not loaded") != NULL);
    r = rt_load(&rc, "x", "sklearn", model, NULL);
    CHECK(r.code == -EINVAL && names(&r, "loadModel x", "INVALID_ARGUMENT"));

    /* Nobody listening: UNAVAILABLE, -EAGAIN, naming the call and where. */
    struct spi_client *dead = NULL;
    struct mm_error err = {0};
    REQUIRE(spi_client_new(rc.ctx, "127.0.0.1:1", &dead, &err) == 0);
    CHECK_STR(spi_client_target(dead), "127.0.0.1:1");
    spi_sync_runtime_status(dead, 3000, &r);
    CHECK(r.code == -EAGAIN && r.status == GRPC_STATUS_UNAVAILABLE);
    CHECK(strncmp(r.err.msg, "runtimeStatus at 127.0.0.1:1: UNAVAILABLE: ", 43) == 0);
    spi_client_free(dead);

    /* A deadline: a load that cannot finish in time. */
    char fifo[700];
    snprintf(fifo, sizeof(fifo), "%s/slow.json", dir);
    struct rt_spi_wait slow;
    bool held = rt_hold_load(&rc, rc.spi, pid, "slow", "xgboost", fifo, &slow, NULL);
    CHECK(held);
    struct rt_spi_wait late = {0};
    struct spi_model m = {.id = "slow", .type = "xgboost", .path = fifo};
    REQUIRE(spi_load_model(rc.spi, &m, 300, rt_spi_cb, &late, NULL) == 0);
    CHECK(rt_spi_wait_all(rc.loop, &late, 1, 5000));
    CHECK(late.res.code == -ETIMEDOUT && names(&late.res, "loadModel slow", "DEADLINE_EXCEEDED"));

    /* Unloaded while loading: ABORTED, -ECONNABORTED. */
    CHECK_INT(rt_unload(&rc, "slow").code, 0);
    rt_release_load(fifo);
    CHECK(rt_spi_wait_all(rc.loop, &slow, 1, RT_CALL_MS));
    CHECK(slow.res.code == -ECONNABORTED && names(&slow.res, "loadModel slow", "ABORTED"));
    CHECK(strstr(slow.res.err.msg, "model slow was unloaded while loading") != NULL);
}

/* A load in flight, cancelled: its callback never runs, also when its answer comes. */
static void cancel_load(void)
{
    char fifo[700];
    snprintf(fifo, sizeof(fifo), "%s/cancelled.json", dir);
    struct rt_spi_wait cancelled, joined = {0};
    struct spi_request *r = NULL;
    CHECK(rt_hold_load(&rc, rc.spi, pid, "c1", "xgboost", fifo, &cancelled, &r));
    REQUIRE(r != NULL);
    /* A second load of the same id joins it and is answered with it, at the same time. */
    struct spi_model m = {.id = "c1", .type = "xgboost", .path = fifo};
    REQUIRE(spi_load_model(rc.spi, &m, RT_CALL_MS, rt_spi_cb, &joined, NULL) == 0);
    round_trip(); /* the second load has reached the runtime */
    spi_request_cancel(r);
    rt_release_load(fifo);
    CHECK(rt_spi_wait_all(rc.loop, &joined, 1, RT_CALL_MS));
    CHECK(joined.res.code != 0); /* end-of-file is no model */
    round_trip();
    harness_run_until(rc.loop, NULL, NULL, 200);
    CHECK_INT(cancelled.calls, 0);
}

/* A client freed with requests in flight: their callbacks never run, nothing is touched. */
static void free_in_flight(void)
{
    struct spi_client *cl = NULL;
    struct mm_error err = {0};
    REQUIRE(spi_client_new(rc.ctx, rc.target, &cl, &err) == 0);
    char fifo[700];
    snprintf(fifo, sizeof(fifo), "%s/orphan.json", dir);
    struct rt_spi_wait load, size = {0}, joined = {0};
    CHECK(rt_hold_load(&rc, cl, pid, "f1", "xgboost", fifo, &load, NULL));
    struct spi_model m = {.id = "f1", .type = "xgboost", .path = fifo};
    REQUIRE(spi_load_model(rc.spi, &m, RT_CALL_MS, rt_spi_cb, &joined, NULL) == 0);
    round_trip();
    /* Answered at once (f1 is not loaded yet), but not before the loop runs again. */
    REQUIRE(spi_model_size(cl, "f1", RT_CALL_MS, rt_spi_cb, &size, NULL) == 0);
    spi_client_free(cl);
    rt_release_load(fifo);
    CHECK(rt_spi_wait_all(rc.loop, &joined, 1, RT_CALL_MS));
    round_trip();
    harness_run_until(rc.loop, NULL, NULL, 200);
    CHECK_INT(load.calls, 0);
    CHECK_INT(size.calls, 0);
}

/* A client freed from inside the callback of one of its requests. */
struct self_free {
    struct spi_client *cl;
    int calls;
};

static void free_client_cb(const struct spi_result *res, void *arg)
{
    struct self_free *s = arg;
    s->calls++;
    spi_client_free(s->cl);
    s->cl = NULL;
}

static bool freed(void *arg)
{
    return ((struct self_free *)arg)->calls > 0;
}

static void free_from_callback(void)
{
    struct self_free s = {0};
    struct mm_error err = {0};
    REQUIRE(spi_client_new(rc.ctx, rc.target, &s.cl, &err) == 0);
    for (int i = 0; i < 4; i++)
        REQUIRE(spi_model_size(s.cl, "none", RT_CALL_MS, free_client_cb, &s, NULL) == 0);
    CHECK(harness_run_until(rc.loop, freed, &s, RT_CALL_MS));
    round_trip();
    harness_run_until(rc.loop, NULL, NULL, 200);
    CHECK_INT(s.calls, 1);
}

/* ------------------------------------------------------------------------ undecodable answers */

static int bad_status_kind;

static void bad_status(struct rpc_call *c, void *arg)
{
    Mmesh__RuntimeStatusResponse r = MMESH__RUNTIME_STATUS_RESPONSE__INIT;
    char version[300];
    memset(version, 'v', sizeof(version) - 1);
    version[sizeof(version) - 1] = 0;
    r.status = MMESH__RUNTIME_STATUS_RESPONSE__STATUS__READY;
    if (bad_status_kind == 0)
        r.status = (Mmesh__RuntimeStatusResponse__Status)7;
    else
        r.runtimeversion = version;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

static void bad_size(struct rpc_call *c, void *arg)
{
    rpc_call_reply(c, rpc_buffer_from("\x08\x80", 2), GRPC_STATUS_OK, NULL); /* cut varint */
}

static bool server_down(void *arg)
{
    return *(bool *)arg;
}

static void on_down(void *arg)
{
    *(bool *)arg = true;
}

static void undecodable(void)
{
    struct rpc_server *s = NULL;
    struct mm_error err = {0};
    int port = 0;
    REQUIRE(rpc_server_new(rc.ctx, NULL, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", &port, &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelRuntime/runtimeStatus", bad_status, NULL, &err) ==
            0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelRuntime/modelSize", bad_size, NULL, &err) == 0);
    REQUIRE(rpc_server_start(s, &err) == 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct spi_client *cl = NULL;
    REQUIRE(spi_client_new(rc.ctx, target, &cl, &err) == 0);

    struct spi_result r;
    bad_status_kind = 0;
    CHECK_INT(spi_sync_runtime_status(cl, RT_CALL_MS, &r), -EBADMSG);
    CHECK(r.status == GRPC_STATUS_DATA_LOSS && strstr(r.err.msg, "runtimeStatus at ") &&
          strstr(r.err.msg, "unknown runtime status 7"));
    bad_status_kind = 1;
    CHECK_INT(spi_sync_runtime_status(cl, RT_CALL_MS, &r), -EBADMSG);
    CHECK(strstr(r.err.msg, "runtimeVersion of 299 bytes") != NULL);
    CHECK(r.runtime.version[0] == 0 && r.runtime.state == SPI_STARTING);
    CHECK_INT(spi_sync_model_size(cl, "m", RT_CALL_MS, &r), -EBADMSG);
    CHECK(strstr(r.err.msg, "modelSize m at ") && strstr(r.err.msg, "does not decode"));

    spi_client_free(cl);
    bool down = false;
    rpc_server_shutdown(s, 0, on_down, &down);
    CHECK(harness_run_until(rc.loop, server_down, &down, 5000));
    rpc_server_free(s);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    REQUIRE(mkdtemp(dir) != NULL);
    char cmd[1400], out[8192];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", argv[2], dir);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", dir);

    char *const args[] = {argv[1],       "--listen",
                          "127.0.0.1:0", "--capacity-bytes",
                          "987654321",   "--max-loading-concurrency",
                          "2",           "--log-level",
                          "warn",        NULL};
    int port = 0;
    REQUIRE(harness_spawn_listening(args, 10000, &pid, &port) == 0);
    REQUIRE(rt_open(&rc, port) == 0);

    arguments();
    answers();
    errors();
    cancel_load();
    free_in_flight();
    free_from_callback();
    undecodable();

    rt_close(&rc, pid, 10000);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
