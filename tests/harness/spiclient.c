/* spiclient.c - runtime SPI and KServe V2 calls for runtime tests (see spiclient.h). */
#include "spiclient.h"

#include <errno.h>
#include <ev.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "model-runtime.pb-c.h"

#define CALL_MS 15000

int spi_client_open(struct spi_client *c, int port)
{
    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    memset(c, 0, sizeof(*c));
    c->loop = ev_loop_new(EVFLAG_AUTO);
    if (!c->loop)
        return -ENOMEM;
    int rc = rpc_context_new(c->loop, &c->ctx, &err);
    if (rc == 0)
        rc = rpc_channel_new(c->ctx, target, 0, &c->ch, &err);
    if (rc < 0)
        fprintf(stderr, "spi_client_open %s: %s\n", target, err.msg);
    return rc;
}

int spi_client_close(struct spi_client *c, pid_t pid, long grace_ms)
{
    if (c->ch)
        rpc_channel_free(c->ch);
    int status = harness_stop_pid(pid, grace_ms);
    if (c->ctx)
        rpc_context_free(c->ctx);
    if (c->loop)
        ev_loop_destroy(c->loop);
    memset(c, 0, sizeof(*c));
    return status;
}

struct testcall spi_call(const struct spi_client *c, const char *method,
                         const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *out_desc,
                         ProtobufCMessage **out)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    struct testcall r = testcall_run(c->ch, method, bb, NULL, 0, CALL_MS);
    grpc_byte_buffer_destroy(bb);
    if (out)
        *out = NULL;
    if (r.status == GRPC_STATUS_OK && r.response && out) {
        struct mm_error err = {0};
        if (rpc_decode(r.response, out_desc, out, &err) < 0) {
            r.status = GRPC_STATUS_DATA_LOSS;
            snprintf(r.details, sizeof(r.details), "%s", err.msg);
        }
    }
    if (r.response)
        grpc_byte_buffer_destroy(r.response);
    r.response = NULL;
    return r;
}

struct testcall spi_load(const struct spi_client *c, const char *id, const char *type,
                         const char *path, uint64_t *size)
{
    Mmesh__LoadModelRequest req = MMESH__LOAD_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    req.modeltype = (char *)type;
    req.modelpath = (char *)path;
    ProtobufCMessage *m = NULL;
    struct testcall r = spi_call(c, "/mmesh.ModelRuntime/loadModel", &req.base,
                                 &mmesh__load_model_response__descriptor, &m);
    if (size)
        *size = m ? ((Mmesh__LoadModelResponse *)m)->sizeinbytes : 0;
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

struct testcall spi_unload(const struct spi_client *c, const char *id)
{
    Mmesh__UnloadModelRequest req = MMESH__UNLOAD_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    return spi_call(c, "/mmesh.ModelRuntime/unloadModel", &req.base, NULL, NULL);
}

struct testcall spi_status(const struct spi_client *c, ProtobufCMessage **out)
{
    Mmesh__RuntimeStatusRequest req = MMESH__RUNTIME_STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    struct testcall r = spi_call(c, "/mmesh.ModelRuntime/runtimeStatus", &req.base,
                                 &mmesh__runtime_status_response__descriptor, &m);
    if (out)
        *out = m;
    else if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

bool spi_ready(const struct spi_client *c, const char *id)
{
    Inference__ModelReadyRequest req = INFERENCE__MODEL_READY_REQUEST__INIT;
    req.name = (char *)id;
    ProtobufCMessage *m = NULL;
    spi_call(c, "/inference.GRPCInferenceService/ModelReady", &req.base,
             &inference__model_ready_response__descriptor, &m);
    bool yes = m && ((Inference__ModelReadyResponse *)m)->ready;
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return yes;
}

struct testcall spi_call_raw(const struct spi_client *c, const char *method, const void *data,
                             size_t len)
{
    grpc_byte_buffer *bb = rpc_buffer_from(data, len);
    struct testcall r = testcall_run(c->ch, method, bb, NULL, 0, CALL_MS);
    grpc_byte_buffer_destroy(bb);
    if (r.response)
        grpc_byte_buffer_destroy(r.response);
    r.response = NULL;
    return r;
}

bool spi_failed_with(struct testcall r, grpc_status_code code, const char *fragment)
{
    bool match = r.status == code && strstr(r.details, fragment) != NULL;
    if (!match)
        fprintf(stderr, "  got status %d '%s', wanted %d '%s'\n", r.status, r.details, code,
                fragment);
    return match;
}

/* Whether a thread of the runtime waits in open() for a writer to come to a FIFO: its wait
 * channel says so, or, where wait channels are hidden, it sits in open/openat. */
struct fifo_probe {
    pid_t pid;
    long long opening_since; /* ms: since when a thread has been seen in open/openat, or 0 */
};

static bool in_fifo_open(void *arg)
{
    struct fifo_probe *f = arg;
    char path[96], text[128];
    bool opening = false;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)f->pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    struct dirent *e;
    while (!opening && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%.16s/wchan", (int)f->pid, e->d_name);
        FILE *fp = fopen(path, "r");
        if (fp) {
            size_t n = fread(text, 1, sizeof(text) - 1, fp);
            text[n] = 0;
            fclose(fp);
            if (strcmp(text, "wait_for_partner") == 0) {
                closedir(d);
                return true;
            }
        }
        snprintf(path, sizeof(path), "/proc/%d/task/%.16s/syscall", (int)f->pid, e->d_name);
        fp = fopen(path, "r");
        if (fp) {
            size_t n = fread(text, 1, sizeof(text) - 1, fp);
            text[n] = 0;
            fclose(fp);
            long nr = strtol(text, NULL, 10);
            opening = nr == SYS_openat;
#ifdef SYS_open
            opening |= nr == SYS_open;
#endif
        }
    }
    closedir(d);
    if (!opening)
        f->opening_since = 0;
    else if (!f->opening_since)
        f->opening_since = harness_now_ms();
    return opening && harness_now_ms() - f->opening_since >= 200;
}
static bool call_done(void *arg)
{
    return ((struct testcall *)arg)->done;
}

static void send_load(const struct spi_client *c, const char *id, const char *type,
                      const char *path, struct testcall *t)
{
    Mmesh__LoadModelRequest req = MMESH__LOAD_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    req.modeltype = (char *)type;
    req.modelpath = (char *)path;
    grpc_byte_buffer *bb = rpc_encode(&req.base);
    memset(t, 0, sizeof(*t));
    if (rpc_unary(c->ch, "/mmesh.ModelRuntime/loadModel", bb, NULL, 0, CALL_MS, NULL, testcall_cb,
                  t, NULL) < 0) {
        t->done = true;
        t->status = GRPC_STATUS_INTERNAL;
    }
    grpc_byte_buffer_destroy(bb);
}

/* Make fifo, send loadModel id from it and wait until the runtime blocks opening it. */
static bool hold_load(const struct spi_client *c, pid_t pid, const char *id, const char *type,
                      const char *fifo, struct testcall *load)
{
    memset(load, 0, sizeof(*load));
    if (mkfifo(fifo, 0600) < 0) {
        fprintf(stderr, "hold_load: mkfifo %s: %s\n", fifo, strerror(errno));
        return false;
    }
    send_load(c, id, type, fifo, load);
    struct fifo_probe probe = {pid, 0};
    if (harness_run_until(c->loop, in_fifo_open, &probe, 10000) && !load->done)
        return true;
    fprintf(stderr, "hold_load: the load did not open %s (%s)\n", fifo,
            load->done ? load->details : "no reply");
    return false;
}

/* Let a held load go on: the FIFO gives end-of-file to its reader. The path goes first, so that
 * no later load can open the FIFO again and wait for a writer that never comes. */
static void release_load(const char *fifo)
{
    int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    unlink(fifo);
    if (fd >= 0)
        close(fd);
}

static void drop_response(struct testcall *t)
{
    if (t->response)
        grpc_byte_buffer_destroy(t->response);
    t->response = NULL;
}

bool spi_cancel_during_load(const struct spi_client *c, pid_t pid, const char *id, const char *type,
                            const char *fifo, const char *good_path, bool purge)
{
    struct testcall load, again, infer, cancel;
    if (!hold_load(c, pid, id, type, fifo, &load)) {
        release_load(fifo);
        testcall_wait(c->loop, &load, 1, CALL_MS);
        drop_response(&load);
        return false;
    }
    send_load(c, id, type, fifo, &again);
    Inference__ModelInferRequest q = INFERENCE__MODEL_INFER_REQUEST__INIT;
    q.model_name = (char *)id;
    grpc_byte_buffer *bb = rpc_encode(&q.base);
    infer = testcall_run(c->ch, "/inference.GRPCInferenceService/ModelInfer", bb, NULL, 0,
                         CALL_MS);
    grpc_byte_buffer_destroy(bb);
    drop_response(&infer);
    bool ready_while_loading = spi_ready(c, id);
    cancel = purge ? spi_status(c, NULL) : spi_unload(c, id);
    drop_response(&cancel);
    release_load(fifo);
    testcall_wait(c->loop, &load, 1, CALL_MS);
    testcall_wait(c->loop, &again, 1, CALL_MS);
    drop_response(&load);
    drop_response(&again);
    bool ready_after = spi_ready(c, id);

    /* Judge every answer, printing each that is wrong. */
    char aborted[300], loading[300];
    snprintf(aborted, sizeof(aborted), "model %s was unloaded while loading", id);
    snprintf(loading, sizeof(loading), "model %s is still loading", id);
    bool ok = spi_failed_with(load, GRPC_STATUS_ABORTED, aborted);
    ok &= spi_failed_with(infer, GRPC_STATUS_UNAVAILABLE, loading);
    if (!again.done || again.status == GRPC_STATUS_OK || ready_while_loading || ready_after ||
        cancel.status != GRPC_STATUS_OK) {
        fprintf(stderr,
                "  %s during a load of %s: second load %s (status %d), ready while "
                "loading %d, after %d, the %s itself status %d\n",
                purge ? "purge" : "unload", id, again.done ? "answered" : "unanswered",
                again.status, ready_while_loading, ready_after,
                purge ? "runtimeStatus" : "unloadModel", cancel.status);
        ok = false;
    }
    struct testcall reload = spi_load(c, id, type, good_path, NULL);
    if (reload.status != GRPC_STATUS_OK || !spi_ready(c, id)) {
        fprintf(stderr, "  %s does not load again after the cancelled load: status %d '%s'\n", id,
                reload.status, reload.details);
        ok = false;
    }
    return ok && spi_unload(c, id).status == GRPC_STATUS_OK;
}

bool spi_shared_failed_load(const struct spi_client *c, pid_t pid, const char *id, const char *type,
                            const char *fifo)
{
    struct testcall load, again;
    bool held = hold_load(c, pid, id, type, fifo, &load);
    if (held) {
        send_load(c, id, type, fifo, &again);
        /* Round trips on the same channel, so that the second load joins the first before it
         * ends (if it came later, it would fail on its own: NOT_FOUND, still not OK). */
        for (int i = 0; i < 3; i++)
            spi_ready(c, id);
    }
    release_load(fifo);
    testcall_wait(c->loop, &load, 1, CALL_MS);
    drop_response(&load);
    if (!held)
        return false;
    testcall_wait(c->loop, &again, 1, CALL_MS);
    drop_response(&again);
    bool ok = load.done && again.done && load.status != GRPC_STATUS_OK &&
              load.status != GRPC_STATUS_ABORTED && again.status != GRPC_STATUS_OK &&
              again.status != GRPC_STATUS_ABORTED && !spi_ready(c, id);
    if (!ok)
        fprintf(stderr, "  a failed load of %s, asked for twice: %d '%s' and %d '%s'\n", id,
                load.status, load.details, again.status, again.details);
    return ok;
}

int spi_term_during_stuck_load(char *const argv[], const char *type, const char *fifo, long kill_ms,
                               struct testcall *load)
{
    struct spi_client c;
    pid_t pid = 0;
    int port = 0, status = -1;
    memset(load, 0, sizeof(*load));
    if (harness_spawn_listening(argv, 60000, &pid, &port) < 0 || spi_client_open(&c, port) < 0) {
        if (pid > 0)
            harness_stop_pid(pid, 0);
        return -1;
    }
    if (hold_load(&c, pid, "stuck", type, fifo, load)) {
        kill(pid, SIGTERM);
        harness_run_until(c.loop, call_done, load, kill_ms);
        status = harness_stop_pid(pid, kill_ms);
    } else {
        harness_stop_pid(pid, 0);
    }
    drop_response(load);
    spi_client_close(&c, 0, 0);
    unlink(fifo);
    return status;
}
