/* spi.c - the asynchronous runtime SPI client (see spi.h).
 *
 * A request lives from its start until its reply callback or its cancel: a cancel (or the
 * client's free) cancels the gRPC call, whose callback then never runs, and frees the request at
 * once. Nothing is called back after a cancel, and nothing touches the client after a callback
 * (which may free it). */
#include "mm/spi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/rpc.h"
#include "model-runtime.pb-c.h"

struct spi_client {
    struct rpc_context *ctx;
    struct rpc_channel *ch;
    char *target;
    struct spi_request *requests; /* in flight and not cancelled */
};

struct spi_request {
    struct spi_client *client;
    struct rpc_request *rpc;   /* the call in flight */
    struct spi_request *prev, *next;
    enum spi_method method;
    spi_reply_cb cb;
    void *arg;
    char model_id[]; /* for messages; "" for runtimeStatus */
};

static const char *const method_names[] = {
    [SPI_RUNTIME_STATUS] = "runtimeStatus", [SPI_LOAD_MODEL] = "loadModel",
    [SPI_UNLOAD_MODEL] = "unloadModel",     [SPI_PREDICT_MODEL_SIZE] = "predictModelSize",
    [SPI_MODEL_SIZE] = "modelSize",
};

const char *spi_method_name(enum spi_method m)
{
    return (unsigned)m < sizeof(method_names) / sizeof(method_names[0]) ? method_names[m]
                                                                        : "unknownMethod";
}

const char *spi_runtime_state_name(enum spi_runtime_state s)
{
    switch (s) {
    case SPI_STARTING:
        return "STARTING";
    case SPI_READY:
        return "READY";
    case SPI_FAILING:
        return "FAILING";
    }
    return "UNKNOWN";
}

/* ---------------------------------------------------------------- client */

int spi_client_new(struct rpc_context *ctx, const char *target, struct spi_client **out,
                   struct mm_error *err)
{
    *out = NULL;
    if (!ctx || !target || !*target)
        return mm_error_set(err, -EINVAL, "spi: a context and a target are required");
    struct spi_client *cl = calloc(1, sizeof(*cl));
    if (!cl || !(cl->target = strdup(target))) {
        free(cl);
        return mm_error_set(err, -ENOMEM, "spi %s: out of memory", target);
    }
    cl->ctx = ctx;
    int rc = rpc_channel_new(ctx, target, 0, &cl->ch, err);
    if (rc < 0) {
        free(cl->target);
        free(cl);
        return rc;
    }
    *out = cl;
    return 0;
}

static void unlink_request(struct spi_request *r)
{
    struct spi_client *cl = r->client;
    if (r->prev)
        r->prev->next = r->next;
    else
        cl->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->client = NULL;
    r->cb = NULL;
    r->arg = NULL;
}

void spi_client_free(struct spi_client *cl)
{
    if (!cl)
        return;
    while (cl->requests)
        spi_request_cancel(cl->requests);
    rpc_channel_free(cl->ch);
    free(cl->target);
    free(cl);
}

const char *spi_client_target(const struct spi_client *cl)
{
    return cl->target;
}

struct rpc_context *spi_client_context(const struct spi_client *cl)
{
    return cl->ctx;
}

void spi_request_cancel(struct spi_request *r)
{
    if (!r)
        return;
    rpc_request_cancel(r->rpc); /* its callback never runs */
    unlink_request(r);
    free(r);
}

/* ---------------------------------------------------------------- replies */

static int status_errno(grpc_status_code s)
{
    switch (s) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_CANCELLED:
        return -ECANCELED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return -EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return -ETIMEDOUT;
    case GRPC_STATUS_NOT_FOUND:
        return -ENOENT;
    case GRPC_STATUS_ALREADY_EXISTS:
        return -EEXIST;
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return -EACCES;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return -ENOSPC;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return -EPERM;
    case GRPC_STATUS_ABORTED:
        return -ECONNABORTED;
    case GRPC_STATUS_OUT_OF_RANGE:
        return -ERANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return -ENOSYS;
    case GRPC_STATUS_UNAVAILABLE:
        return -EAGAIN;
    case GRPC_STATUS_DATA_LOSS:
        return -EBADMSG;
    default:
        return -EIO;
    }
}

/* Fill res as a failure: "loadModel m1 at target: STATUS: why". */
static void fail(struct spi_result *res, const struct spi_request *r, const char *target,
                 grpc_status_code status, const char *why)
{
    res->status = status;
    res->code = status_errno(status);
    mm_error_set(&res->err, res->code, "%s%s%s at %s: %s: %s", spi_method_name(r->method),
                 r->model_id[0] ? " " : "", r->model_id, target, rpc_status_name(status),
                 why && *why ? why : "(no message)");
}

static const ProtobufCMessageDescriptor *const answers[] = {
    [SPI_RUNTIME_STATUS] = &mmesh__runtime_status_response__descriptor,
    [SPI_LOAD_MODEL] = &mmesh__load_model_response__descriptor,
    [SPI_UNLOAD_MODEL] = &mmesh__unload_model_response__descriptor,
    [SPI_PREDICT_MODEL_SIZE] = &mmesh__predict_model_size_response__descriptor,
    [SPI_MODEL_SIZE] = &mmesh__model_size_response__descriptor,
};

/* The decoded answer into res; 0, or -EBADMSG with why filled. */
static int take_answer(enum spi_method method, const ProtobufCMessage *m, struct spi_result *res,
                       char *why, size_t why_size)
{
    switch (method) {
    case SPI_RUNTIME_STATUS: {
        const Mmesh__RuntimeStatusResponse *s = (const Mmesh__RuntimeStatusResponse *)m;
        struct spi_runtime_status *rt = &res->runtime;
        int state = (int)s->status; /* proto3 enums are open: any number may arrive */
        if (state < SPI_STARTING || state > SPI_FAILING) {
            snprintf(why, why_size, "unknown runtime status %d", state);
            return -EBADMSG;
        }
        size_t len = s->runtimeversion ? strlen(s->runtimeversion) : 0;
        if (len >= sizeof(rt->version)) {
            snprintf(why, why_size, "runtimeVersion of %zu bytes, more than %d", len,
                     SPI_VERSION_MAX - 1);
            return -EBADMSG;
        }
        rt->state = (enum spi_runtime_state)state;
        rt->capacity_bytes = s->capacityinbytes;
        rt->max_loading_concurrency = s->maxloadingconcurrency;
        rt->load_timeout_ms = s->modelloadingtimeoutms;
        rt->default_model_size_bytes = s->defaultmodelsizeinbytes;
        memcpy(rt->version, len ? s->runtimeversion : "", len + 1);
        rt->numeric_version = s->numericruntimeversion;
        rt->limit_model_concurrency = s->limitmodelconcurrency;
        rt->allow_any_method = s->allowanymethod;
        return 0;
    }
    case SPI_LOAD_MODEL:
        res->size_bytes = ((const Mmesh__LoadModelResponse *)m)->sizeinbytes;
        res->max_concurrency = ((const Mmesh__LoadModelResponse *)m)->maxconcurrency;
        return 0;
    case SPI_PREDICT_MODEL_SIZE:
        res->size_bytes = ((const Mmesh__PredictModelSizeResponse *)m)->sizeinbytes;
        return 0;
    case SPI_MODEL_SIZE:
        res->size_bytes = ((const Mmesh__ModelSizeResponse *)m)->sizeinbytes;
        return 0;
    case SPI_UNLOAD_MODEL:
        return 0;
    }
    return 0;
}

static void on_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                     void *arg)
{
    struct spi_request *r = arg;
    struct spi_client *cl = r->client;
    spi_reply_cb cb = r->cb;
    void *cb_arg = r->arg;
    struct spi_result res;
    memset(&res, 0, sizeof(res));
    res.method = r->method;
    res.status = status;
    if (status != GRPC_STATUS_OK) {
        fail(&res, r, cl->target, status, details);
    } else {
        ProtobufCMessage *m = NULL;
        struct mm_error err = {0};
        char why[2 * MM_ERROR_MSG_MAX];
        if (!response || rpc_decode(response, answers[r->method], &m, &err) < 0) {
            snprintf(why, sizeof(why), "the answer does not decode: %s",
                     response ? err.msg : "no message");
            fail(&res, r, cl->target, GRPC_STATUS_DATA_LOSS, why);
        } else if (take_answer(r->method, m, &res, why, sizeof(why)) < 0) {
            memset(&res.runtime, 0, sizeof(res.runtime));
            fail(&res, r, cl->target, GRPC_STATUS_DATA_LOSS, why);
        }
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    if (response)
        grpc_byte_buffer_destroy(response);
    unlink_request(r);
    free(r);
    cb(&res, cb_arg); /* last: it may free the client */
}

/* ---------------------------------------------------------------- requests */

static int start(struct spi_client *cl, enum spi_method method, const char *id,
                 const ProtobufCMessage *msg, int64_t timeout_ms, spi_reply_cb cb, void *arg,
                 struct spi_request **out)
{
    if (out)
        *out = NULL;
    if (!cl || !cb || timeout_ms < 0)
        return -EINVAL;
    size_t id_len = id ? strlen(id) : 0;
    struct spi_request *r = malloc(sizeof(*r) + id_len + 1);
    if (!r)
        return -ENOMEM;
    memset(r, 0, sizeof(*r));
    memcpy(r->model_id, id_len ? id : "", id_len + 1);
    r->method = method;
    r->cb = cb;
    r->arg = arg;
    char path[64];
    snprintf(path, sizeof(path), "/mmesh.ModelRuntime/%s", spi_method_name(method));
    grpc_byte_buffer *bb = rpc_encode(msg);
    if (!bb) {
        free(r);
        return -ENOMEM;
    }
    int rc = rpc_unary(cl->ch, path, bb, NULL, 0, timeout_ms, NULL, on_reply, r, &r->rpc);
    grpc_byte_buffer_destroy(bb);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->client = cl;
    r->next = cl->requests;
    if (cl->requests)
        cl->requests->prev = r;
    cl->requests = r;
    if (out)
        *out = r;
    return 0;
}

static bool present(const char *s)
{
    return s && *s;
}

int spi_runtime_status(struct spi_client *cl, int64_t timeout_ms, spi_reply_cb cb, void *arg,
                       struct spi_request **out)
{
    Mmesh__RuntimeStatusRequest req = MMESH__RUNTIME_STATUS_REQUEST__INIT;
    return start(cl, SPI_RUNTIME_STATUS, NULL, &req.base, timeout_ms, cb, arg, out);
}

int spi_load_model(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                   spi_reply_cb cb, void *arg, struct spi_request **out)
{
    if (out)
        *out = NULL;
    if (!m || !present(m->id) || !present(m->path))
        return -EINVAL;
    Mmesh__LoadModelRequest req = MMESH__LOAD_MODEL_REQUEST__INIT;
    req.modelid = (char *)m->id;
    req.modeltype = (char *)(m->type ? m->type : "");
    req.modelpath = (char *)m->path;
    req.modelkey = (char *)(m->key ? m->key : "");
    return start(cl, SPI_LOAD_MODEL, m->id, &req.base, timeout_ms, cb, arg, out);
}

int spi_unload_model(struct spi_client *cl, const char *id, int64_t timeout_ms, spi_reply_cb cb,
                     void *arg, struct spi_request **out)
{
    if (out)
        *out = NULL;
    if (!present(id))
        return -EINVAL;
    Mmesh__UnloadModelRequest req = MMESH__UNLOAD_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    return start(cl, SPI_UNLOAD_MODEL, id, &req.base, timeout_ms, cb, arg, out);
}

int spi_predict_model_size(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                           spi_reply_cb cb, void *arg, struct spi_request **out)
{
    if (out)
        *out = NULL;
    if (!m || !present(m->id) || !present(m->path))
        return -EINVAL;
    Mmesh__PredictModelSizeRequest req = MMESH__PREDICT_MODEL_SIZE_REQUEST__INIT;
    req.modelid = (char *)m->id;
    req.modeltype = (char *)(m->type ? m->type : "");
    req.modelpath = (char *)m->path;
    req.modelkey = (char *)(m->key ? m->key : "");
    return start(cl, SPI_PREDICT_MODEL_SIZE, m->id, &req.base, timeout_ms, cb, arg, out);
}

int spi_model_size(struct spi_client *cl, const char *id, int64_t timeout_ms, spi_reply_cb cb,
                   void *arg, struct spi_request **out)
{
    if (out)
        *out = NULL;
    if (!present(id))
        return -EINVAL;
    Mmesh__ModelSizeRequest req = MMESH__MODEL_SIZE_REQUEST__INIT;
    req.modelid = (char *)id;
    return start(cl, SPI_MODEL_SIZE, id, &req.base, timeout_ms, cb, arg, out);
}
