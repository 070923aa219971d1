/* rtclient.c - runtime SPI and KServe V2 calls for runtime tests (see rtclient.h). */
#include "rtclient.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "mm/spi_sync.h"

int rt_open(struct rt_client *c, int port)
{
    struct mm_error err = {0};
    memset(c, 0, sizeof(*c));
    snprintf(c->target, sizeof(c->target), "127.0.0.1:%d", port);
    c->loop = ev_loop_new(EVFLAG_AUTO);
    if (!c->loop)
        return -ENOMEM;
    int rc = rpc_context_new(c->loop, &c->ctx, &err);
    if (rc == 0)
        rc = rpc_channel_new(c->ctx, c->target, 0, &c->ch, &err);
    if (rc == 0)
        rc = spi_client_new(c->ctx, c->target, &c->spi, &err);
    if (rc < 0)
        fprintf(stderr, "rt_open %s: %s\n", c->target, err.msg);
    return rc;
}

int rt_close(struct rt_client *c, pid_t pid, long grace_ms)
{
    spi_client_free(c->spi);
    if (c->ch)
        rpc_channel_free(c->ch);
    int status = pid > 0 ? harness_stop_pid(pid, grace_ms) : -1;
    if (c->ctx)
        rpc_context_free(c->ctx);
    if (c->loop)
        ev_loop_destroy(c->loop);
    memset(c, 0, sizeof(*c));
    return status;
}

static void drop_response(struct testcall *t)
{
    if (t->response)
        grpc_byte_buffer_destroy(t->response);
    t->response = NULL;
}

struct testcall rt_call(const struct rt_client *c, const char *method, const ProtobufCMessage *msg,
                        const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    struct testcall r = testcall_run(c->ch, method, bb, NULL, 0, RT_CALL_MS);
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
    drop_response(&r);
    return r;
}

struct testcall rt_call_raw(const struct rt_client *c, const char *method, const void *data,
                            size_t len)
{
    grpc_byte_buffer *bb = rpc_buffer_from(data, len);
    struct testcall r = testcall_run(c->ch, method, bb, NULL, 0, RT_CALL_MS);
    grpc_byte_buffer_destroy(bb);
    drop_response(&r);
    return r;
}

bool rt_ready(const struct rt_client *c, const char *id)
{
    Inference__ModelReadyRequest req = INFERENCE__MODEL_READY_REQUEST__INIT;
    req.name = (char *)id;
    ProtobufCMessage *m = NULL;
    rt_call(c, "/inference.GRPCInferenceService/ModelReady", &req.base,
            &inference__model_ready_response__descriptor, &m);
    bool yes = m && ((Inference__ModelReadyResponse *)m)->ready;
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return yes;
}

/* method with msg and the header mm-model-id: id; the reply decoded as out_desc (NULL: none). */
static ProtobufCMessage *call_with_id(const struct rt_client *c, const char *method,
                                      const ProtobufCMessage *msg, const char *id,
                                      const ProtobufCMessageDescriptor *out_desc)
{
    const struct rpc_header h[] = {{"mm-model-id", id}};
    grpc_byte_buffer *b = rpc_encode(msg);
    struct testcall t = testcall_run(c->ch, method, b, h, 1, RT_CALL_MS);
    grpc_byte_buffer_destroy(b);
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (t.status != GRPC_STATUS_OK)
        fprintf(stderr, "  %s with mm-model-id %s: %s: %s\n", method, id, rpc_status_name(t.status),
                t.details);
    else if (rpc_decode(t.response, out_desc, &m, &err) < 0)
        fprintf(stderr, "  %s with mm-model-id %s: %s\n", method, id, err.msg);
    testcall_clear(&t);
    return m;
}

bool rt_header_names_model(const struct rt_client *c, grpc_byte_buffer *infer, const char *name,
                           const char *id)
{
    char want[300];
    snprintf(want, sizeof(want), "model %s is not loaded", name);
    struct testcall t = testcall_run(c->ch, "/inference.GRPCInferenceService/ModelInfer", infer,
                                     NULL, 0, RT_CALL_MS);
    bool ok = rt_failed_with(t, GRPC_STATUS_NOT_FOUND, want);
    testcall_clear(&t);
    const struct rpc_header other[] = {{"mm-model-id", "not-here"}};
    t = testcall_run(c->ch, "/inference.GRPCInferenceService/ModelInfer", infer, other, 1,
                     RT_CALL_MS);
    ok = rt_failed_with(t, GRPC_STATUS_NOT_FOUND, "model not-here is not loaded") && ok;
    testcall_clear(&t);

    Inference__ModelMetadataRequest mdq = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mdq.name = (char *)name;
    ProtobufCMessage *m =
        call_with_id(c, "/inference.GRPCInferenceService/ModelMetadata", &mdq.base, id,
                     &inference__model_metadata_response__descriptor);
    if (!m || strcmp(((Inference__ModelMetadataResponse *)m)->name, id) != 0) {
        fprintf(stderr, "  ModelMetadata of %s with mm-model-id %s: not %s's\n", name, id, id);
        ok = false;
    }
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    Inference__ModelReadyRequest mrq = INFERENCE__MODEL_READY_REQUEST__INIT;
    mrq.name = (char *)name;
    m = call_with_id(c, "/inference.GRPCInferenceService/ModelReady", &mrq.base, id,
                     &inference__model_ready_response__descriptor);
    if (!m || !((Inference__ModelReadyResponse *)m)->ready) {
        fprintf(stderr, "  ModelReady of %s with mm-model-id %s: not ready\n", name, id);
        ok = false;
    }
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return ok;
}

bool rt_failed_with(struct testcall r, grpc_status_code code, const char *fragment)
{
    bool match = r.status == code && strstr(r.details, fragment) != NULL;
    if (!match)
        fprintf(stderr, "  got status %d '%s', wanted %d '%s'\n", r.status, r.details, code,
                fragment);
    return match;
}

/* ---------------------------------------------------------------- the SPI */

struct spi_result rt_load(const struct rt_client *c, const char *id, const char *type,
                          const char *path, uint64_t *size)
{
    struct spi_model m = {.id = id, .type = type, .path = path};
    struct spi_result r;
    spi_sync_load_model(c->spi, &m, RT_CALL_MS, &r);
    if (size)
        *size = r.code == 0 ? r.size_bytes : 0;
    return r;
}

struct spi_result rt_unload(const struct rt_client *c, const char *id)
{
    struct spi_result r;
    spi_sync_unload_model(c->spi, id, RT_CALL_MS, &r);
    return r;
}

struct spi_result rt_status(const struct rt_client *c)
{
    struct spi_result r;
    spi_sync_runtime_status(c->spi, RT_CALL_MS, &r);
    return r;
}

bool rt_spi_failed_with(struct spi_result r, grpc_status_code code, const char *fragment)
{
    bool match = r.status == code && r.code < 0 && strstr(r.err.msg, fragment) != NULL;
    if (!match)
        fprintf(stderr, "  got %s (%d) '%s', wanted %s '%s'\n", rpc_status_name(r.status), r.code,
                r.code ? r.err.msg : "", rpc_status_name(code), fragment);
    return match;
}

void rt_spi_cb(const struct spi_result *res, void *arg)
{
    struct rt_spi_wait *w = arg;
    w->done = true;
    w->calls++;
    w->res = *res;
}

struct spi_batch {
    struct rt_spi_wait *w;
    size_t n;
};

static bool all_answered(void *arg)
{
    struct spi_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        if (!b->w[i].done)
            return false;
    return true;
}

bool rt_spi_wait_all(struct ev_loop *loop, struct rt_spi_wait *w, size_t n, long long ms)
{
    struct spi_batch b = {w, n};
    return harness_run_until(loop, all_answered, &b, ms);
}

/* ---------------------------------------------------------------- a load held on a FIFO */

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

bool rt_hold_load(const struct rt_client *c, struct spi_client *cl, pid_t pid, const char *id,
                  const char *type, const char *fifo, struct rt_spi_wait *load,
                  struct spi_request **req)
{
    memset(load, 0, sizeof(*load));
    if (req)
        *req = NULL;
    if (mkfifo(fifo, 0600) < 0) {
        fprintf(stderr, "rt_hold_load: mkfifo %s: %s\n", fifo, strerror(errno));
        load->done = true; /* nothing to wait for */
        return false;
    }
    struct spi_model m = {.id = id, .type = type, .path = fifo};
    int rc = spi_load_model(cl, &m, RT_CALL_MS, rt_spi_cb, load, req);
    if (rc < 0) {
        fprintf(stderr, "rt_hold_load: spi_load_model %s: %s\n", id, mm_strerror(rc));
        load->done = true;
        return false;
    }
    struct fifo_probe probe = {pid, 0};
    if (harness_run_until(c->loop, in_fifo_open, &probe, 10000) && !load->done)
        return true;
    fprintf(stderr, "rt_hold_load: the load did not open %s (%s)\n", fifo,
            load->done ? load->res.err.msg : "no reply");
    return false;
}

/* The path goes first, so that no later load can open the FIFO again and wait for a writer
 * that never comes. */
void rt_release_load(const char *fifo)
{
    int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    unlink(fifo);
    if (fd >= 0)
        close(fd);
}

static grpc_byte_buffer *fp32_request(const char *model, const char *id, const char *input,
                                      const float *values, int64_t rows, int64_t cols, bool raw)
{
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor *ins[1] = {&in};
    Inference__InferTensorContents contents = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    ProtobufCBinaryData bytes = {(size_t)(rows * cols) * sizeof(float), (uint8_t *)values};
    int64_t shape[2] = {rows, cols};
    in.name = (char *)input;
    in.datatype = "FP32";
    in.shape = shape;
    in.n_shape = 2;
    if (raw) {
        req.raw_input_contents = &bytes;
        req.n_raw_input_contents = 1;
    } else {
        contents.fp32_contents = (float *)values;
        contents.n_fp32_contents = (size_t)(rows * cols);
        in.contents = &contents;
    }
    req.model_name = (char *)model;
    req.id = (char *)id;
    req.inputs = ins;
    req.n_inputs = 1;
    return rpc_encode(&req.base);
}

grpc_byte_buffer *rt_infer_request(const char *model, const float *row, size_t n)
{
    return fp32_request(model, "r1", "input-0", row, 1, (int64_t)n, false);
}

grpc_byte_buffer *rt_infer_request_fp32(const char *model, const char *input, const float *values,
                                        int64_t rows, int64_t cols, bool raw)
{
    /* protobuf-c's string default is "" (not NULL): an unset id packs to nothing either way */
    return fp32_request(model, (char *)protobuf_c_empty_string, input, values, rows, cols, raw);
}

grpc_byte_buffer *rt_xgb_request(const char *model)
{
    float values[RT_XGB_FEATURES];
    for (size_t i = 0; i < RT_XGB_FEATURES; i++)
        values[i] = (float)i * 0.5f + 1.0f;
    return rt_infer_request_fp32(model, "input-0", values, 1, RT_XGB_FEATURES, true);
}

bool rt_infer_expect(struct rpc_channel *ch, const char *model, const float *row, size_t n,
                     float expected, int64_t timeout_ms)
{
    grpc_byte_buffer *b = rt_infer_request(model, row, n);
    if (!b)
        return false;
    struct testcall t = testcall_run(ch, "/inference.GRPCInferenceService/ModelInfer", b, NULL, 0,
                                     timeout_ms);
    grpc_byte_buffer_destroy(b);
    bool ok = false;
    if (t.status != GRPC_STATUS_OK) {
        fprintf(stderr, "  ModelInfer %s on %s: %s: %s\n", model, rpc_channel_target(ch),
                rpc_status_name(t.status), t.details);
    } else {
        ProtobufCMessage *m = NULL;
        struct mm_error err = {0};
        if (rpc_decode(t.response, &inference__model_infer_response__descriptor, &m, &err) < 0) {
            fprintf(stderr, "  ModelInfer %s on %s: %s\n", model, rpc_channel_target(ch),
                    err.msg);
        } else {
            Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
            ok = r->n_outputs == 1 && r->outputs[0]->contents &&
                 r->outputs[0]->contents->n_fp32_contents == 1 &&
                 fabsf(r->outputs[0]->contents->fp32_contents[0] - expected) < 1e-6f;
            if (!ok)
                fprintf(stderr, "  ModelInfer %s on %s: not the model's prediction\n", model,
                        rpc_channel_target(ch));
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    testcall_clear(&t);
    return ok;
}
