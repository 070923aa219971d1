/* server.c - the XGBoost runtime's services (see xgb_server.h). */
#include "mm/xgb_server.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "grpc_predict_v2.pb-c.h"
#include "model-runtime.pb-c.h"
#include "mm/pool.h"
#include "mm/rpc.h"
#include "mm/xgb.h"

#define DEFAULT_CAPACITY (1ull << 30)
#define DEFAULT_LOAD_TIMEOUT_MS 90000
#define DEFAULT_MODEL_SIZE 1000000
#define DEFAULT_MAX_ELEMENTS (16u << 20)

enum model_state { MODEL_LOADING, MODEL_LOADED };

struct waiter {
    struct waiter *next;
    struct model *m;
    struct rpc_call *call;
};

struct model {
    struct model *next;      /* in rt->models while listed */
    struct xgb_server *rt;
    char *id;
    char *path;
    enum model_state state;
    bool listed;             /* false once unloaded or purged */
    unsigned inflight;       /* predictions running */
    struct xgb_model *xgb;
    uint64_t size;
    struct waiter *waiters;  /* loadModel calls answered when the load ends */
    struct pool_job *load_job; /* while the load is queued or running */
    int load_rc;             /* worker results */
    struct mm_error load_err;
};

struct xgb_server {
    struct ev_loop *loop;
    struct xgb_server_config cfg;
    struct pool *loads;
    struct pool *predictions;
    struct model *models;
    size_t n_models;
    void (*idle)(void *arg); /* xgb_server_stop's, called once no job is left */
    void *idle_arg;
};

/* ---------------------------------------------------------------- the model table */

static struct model *find(struct xgb_server *rt, const char *id)
{
    for (struct model *m = rt->models; m; m = m->next)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void model_free(struct model *m)
{
    xgb_model_free(m->xgb);
    free(m->id);
    free(m->path);
    free(m);
}

static void answer_waiters(struct model *m, int rc, const struct mm_error *err)
{
    struct waiter *w = m->waiters;
    m->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;
        if (rc == 0) {
            Mmesh__LoadModelResponse r = MMESH__LOAD_MODEL_RESPONSE__INIT;
            r.sizeinbytes = m->size;
            rpc_call_reply(w->call, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
        } else {
            rpc_call_fail(w->call,
                          rc == -ENOENT    ? GRPC_STATUS_NOT_FOUND
                          : rc == -EINVAL  ? GRPC_STATUS_INVALID_ARGUMENT
                          : rc == -ECANCELED ? GRPC_STATUS_ABORTED
                                             : GRPC_STATUS_INTERNAL,
                          "%s", err->msg);
        }
        free(w);
        w = next;
    }
}

/* Take a model out of the table; it is freed now or when its last job ends. */
static void unlist(struct xgb_server *rt, struct model *m)
{
    struct model **p = &rt->models;
    while (*p && *p != m)
        p = &(*p)->next;
    if (*p) {
        *p = m->next;
        rt->n_models--;
    }
    m->listed = false;
    if (m->load_job) /* a load not started yet is dropped: load_done answers its waiters */
        pool_cancel(m->load_job);
    if (m->state == MODEL_LOADED && m->inflight == 0)
        model_free(m);
}

/* After each job's done: tell xgb_server_stop's caller once nothing is left. */
static void check_idle(struct xgb_server *rt)
{
    if (rt->idle && xgb_server_busy(rt) == 0) {
        void (*idle)(void *arg) = rt->idle;
        rt->idle = NULL;
        idle(rt->idle_arg);
    }
}

/* ---------------------------------------------------------------- loading */

static void load_work(void *arg)
{
    struct model *m = arg;
    m->load_rc = xgb_model_load(m->path, &m->xgb, &m->load_err);
}

static void load_done(int status, void *arg)
{
    struct model *m = arg;
    struct xgb_server *rt = m->rt;
    m->state = MODEL_LOADED;
    m->load_job = NULL;
    if (status == -ECANCELED && m->listed) { /* dropped by xgb_server_stop before it started */
        m->load_rc = -ECANCELED;
        mm_error_set(&m->load_err, -ECANCELED, "model %s: the runtime is stopping", m->id);
    }
    if (!m->listed) { /* unloaded or purged while loading */
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "model %s was unloaded while loading", m->id);
        answer_waiters(m, -ECANCELED, &err);
        if (m->inflight == 0)
            model_free(m);
    } else if (m->load_rc < 0) {
        struct mm_error err = m->load_err;
        answer_waiters(m, m->load_rc, &err);
        unlist(rt, m);
    } else {
        m->size = xgb_model_size(m->xgb);
        answer_waiters(m, 0, NULL);
    }
    check_idle(rt);
}

/* The client of a waiting loadModel went away (or its deadline passed): release the call now.
 * The load goes on for the others (and for the next loadModel). */
static void waiter_cancelled(struct rpc_call *c, void *arg)
{
    struct waiter *w = arg;
    struct waiter **p = &w->m->waiters;
    while (*p && *p != w)
        p = &(*p)->next;
    if (*p)
        *p = w->next;
    rpc_call_fail(c, GRPC_STATUS_CANCELLED, "loadModel %s: the client went away", w->m->id);
    free(w);
}

static void load_model(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__load_model_request__descriptor, &msg) < 0)
        return;
    Mmesh__LoadModelRequest *req = (Mmesh__LoadModelRequest *)msg;
    if (!req->modelid[0] || !req->modelpath[0]) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "loadModel: modelId and modelPath are "
                      "required");
        goto out;
    }
    if (req->modeltype[0] && strcasecmp(req->modeltype, "xgboost") != 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "loadModel %s: mm-runtime serves xgboost models, not '%s'", req->modelid,
                      req->modeltype);
        goto out;
    }
    struct model *m = find(rt, req->modelid);
    if (!m) {
        m = calloc(1, sizeof(*m));
        if (!m || !(m->id = strdup(req->modelid)) || !(m->path = strdup(req->modelpath))) {
            if (m)
                free(m->id);
            free(m);
            rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "loadModel: out of memory");
            goto out;
        }
        m->rt = rt;
        m->state = MODEL_LOADING;
        m->listed = true;
        if (pool_submit(rt->loads, load_work, load_done, m, &m->load_job) < 0) {
            model_free(m);
            rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "loadModel: runtime is stopping");
            goto out;
        }
        m->next = rt->models;
        rt->models = m;
        rt->n_models++;
    }
    if (m->state == MODEL_LOADED) { /* loading twice is answered like the first time */
        Mmesh__LoadModelResponse r = MMESH__LOAD_MODEL_RESPONSE__INIT;
        r.sizeinbytes = m->size;
        rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
        goto out;
    }
    struct waiter *w = malloc(sizeof(*w));
    if (!w) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "loadModel: out of memory");
        goto out;
    }
    w->call = c;
    w->m = m;
    w->next = m->waiters;
    m->waiters = w;
    rpc_call_on_cancel(c, waiter_cancelled, w);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---------------------------------------------------------------- the other SPI methods */

static void unload_model(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__unload_model_request__descriptor, &msg) < 0)
        return;
    Mmesh__UnloadModelRequest *req = (Mmesh__UnloadModelRequest *)msg;
    struct model *m = find(rt, req->modelid);
    if (m)
        unlist(rt, m);
    /* Unloading what is not loaded succeeds: the goal state holds. */
    Mmesh__UnloadModelResponse r = MMESH__UNLOAD_MODEL_RESPONSE__INIT;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void model_size(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__model_size_request__descriptor, &msg) < 0)
        return;
    Mmesh__ModelSizeRequest *req = (Mmesh__ModelSizeRequest *)msg;
    struct model *m = find(rt, req->modelid);
    if (!m || m->state != MODEL_LOADED) {
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s is not loaded", req->modelid);
    } else {
        Mmesh__ModelSizeResponse r = MMESH__MODEL_SIZE_RESPONSE__INIT;
        r.sizeinbytes = m->size;
        rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void predict_model_size(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &mmesh__predict_model_size_request__descriptor, &msg) < 0)
        return;
    Mmesh__PredictModelSizeRequest *req = (Mmesh__PredictModelSizeRequest *)msg;
    uint64_t disk = 0;
    if (!req->modelpath[0] || xgb_path_size(req->modelpath, &disk) < 0) {
        /* Nothing to measure: the configured default is the honest estimate. */
        Mmesh__PredictModelSizeResponse r = MMESH__PREDICT_MODEL_SIZE_RESPONSE__INIT;
        r.sizeinbytes = rt->cfg.default_model_size;
        rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    } else {
        Mmesh__PredictModelSizeResponse r = MMESH__PREDICT_MODEL_SIZE_RESPONSE__INIT;
        r.sizeinbytes = disk + disk / 4; /* disk size x 1.25, the adapters' estimate */
        rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void runtime_status(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    /* The mesh asks at (re)start: whatever we hold is unknown to it, so purge first. */
    while (rt->models)
        unlist(rt, rt->models);
    Mmesh__RuntimeStatusResponse r = MMESH__RUNTIME_STATUS_RESPONSE__INIT;
    r.status = MMESH__RUNTIME_STATUS_RESPONSE__STATUS__READY;
    r.capacityinbytes = rt->cfg.capacity_bytes;
    r.maxloadingconcurrency = rt->cfg.max_loading_concurrency;
    r.modelloadingtimeoutms = rt->cfg.load_timeout_ms;
    r.defaultmodelsizeinbytes = rt->cfg.default_model_size;
    r.runtimeversion = "mm-runtime " XGB_SERVER_VERSION;
    r.numericruntimeversion = 100; /* 0.1.0 */
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

/* ---------------------------------------------------------------- inference */

struct prediction {
    struct model *m;
    struct rpc_call *call;
    float *rows;
    size_t n_rows;
    bool raw;                /* answer the way the client asked: raw bytes or contents */
    char *request_id;
    float *result;
    size_t per_row;
    struct pool_job *job;
    int rc;
    struct mm_error err;
};

static void predict_work(void *arg)
{
    struct prediction *p = arg;
    p->rc = xgb_model_predict(p->m->xgb, p->rows, p->n_rows, &p->result, &p->per_row, &p->err);
}

static void predict_done(int status, void *arg)
{
    struct prediction *p = arg;
    struct model *m = p->m;
    struct xgb_server *rt = m->rt;
    if (status == -ECANCELED) { /* the client went away, or the runtime is stopping */
        rpc_call_fail(p->call, GRPC_STATUS_CANCELLED, "model %s: prediction cancelled", m->id);
    } else if (p->rc < 0) {
        rpc_call_fail(p->call, GRPC_STATUS_INTERNAL, "model %s: %s", m->id, p->err.msg);
    } else {
        Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
        Inference__ModelInferResponse__InferOutputTensor out =
            INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
        Inference__ModelInferResponse__InferOutputTensor *outs[1] = {&out};
        Inference__InferTensorContents contents = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
        int64_t shape[2] = {(int64_t)p->n_rows, (int64_t)p->per_row};
        size_t total = p->n_rows * p->per_row;
        ProtobufCBinaryData raw = {total * sizeof(float), (uint8_t *)p->result};
        out.name = "predict";
        out.datatype = "FP32";
        out.shape = shape;
        out.n_shape = p->per_row > 1 ? 2 : 1;
        if (p->raw) {
            resp.raw_output_contents = &raw;
            resp.n_raw_output_contents = 1;
        } else {
            contents.fp32_contents = p->result;
            contents.n_fp32_contents = total;
            out.contents = &contents;
        }
        resp.model_name = m->id;
        resp.id = p->request_id ? p->request_id : "";
        resp.outputs = outs;
        resp.n_outputs = 1;
        rpc_call_reply(p->call, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    }
    m->inflight--;
    if (!m->listed && m->inflight == 0)
        model_free(m);
    free(p->result);
    free(p->rows);
    free(p->request_id);
    free(p);
    check_idle(rt);
}

/* The client went away: a prediction that has not started is dropped (predict_done answers and
 * frees it); a running one finishes and its late answer goes nowhere. */
static void prediction_cancelled(struct rpc_call *c, void *arg)
{
    struct prediction *p = arg;
    pool_cancel(p->job);
}

static void shape_text(char *out, size_t size, const int64_t *shape, size_t n)
{
    size_t o = (size_t)snprintf(out, size, "[");
    for (size_t i = 0; i < n && o < size; i++)
        o += (size_t)snprintf(out + o, size - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < size)
        snprintf(out + o, size - o, "]");
}

/* Validate the one input tensor and copy it into float rows. 0 or a status with the reason. */
static grpc_status_code read_rows(const Inference__ModelInferRequest *req, const struct model *m,
                                  size_t max_elements, struct prediction *p, char *why,
                                  size_t why_size)
{
    size_t f = xgb_model_features(m->xgb);
    if (req->n_inputs != 1) {
        snprintf(why, why_size, "model %s expects 1 input tensor, got %zu", m->id, req->n_inputs);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[0];
    bool fp64 = strcmp(in->datatype, "FP64") == 0;
    if (!fp64 && strcmp(in->datatype, "FP32") != 0) {
        snprintf(why, why_size, "input '%s': datatype '%s' is not supported, model expects 'FP32'"
                 " (or 'FP64')", in->name, in->datatype);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    char got[96];
    shape_text(got, sizeof(got), in->shape, in->n_shape);
    bool shape_ok = (in->n_shape == 2 && in->shape[0] >= 0 && (size_t)in->shape[1] == f) ||
                    (in->n_shape == 1 && (size_t)in->shape[0] == f);
    if (!shape_ok) {
        snprintf(why, why_size, "input '%s': expected shape [-1, %zu], got %s", in->name, f, got);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    size_t n_rows = in->n_shape == 2 ? (size_t)in->shape[0] : 1;
    if (n_rows > max_elements / f) {
        snprintf(why, why_size, "input '%s': %zu rows x %zu features exceeds the limit of %zu "
                 "values per request", in->name, n_rows, f, max_elements);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    size_t count = n_rows * f, width = fp64 ? 8 : 4;
    const void *src = NULL;
    size_t have = 0;
    if (req->n_raw_input_contents > 0) {
        src = req->raw_input_contents[0].data;
        have = req->raw_input_contents[0].len / width;
        if (req->raw_input_contents[0].len != count * width) {
            snprintf(why, why_size, "input '%s': raw contents hold %zu bytes, shape %s of %s "
                     "needs %zu", in->name, req->raw_input_contents[0].len, got, in->datatype,
                     count * width);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        p->raw = true;
    } else if (in->contents) {
        src = fp64 ? (const void *)in->contents->fp64_contents
                   : (const void *)in->contents->fp32_contents;
        have = fp64 ? in->contents->n_fp64_contents : in->contents->n_fp32_contents;
    }
    if (have != count) {
        snprintf(why, why_size, "input '%s': %zu %s values for shape %s, which needs %zu",
                 in->name, have, in->datatype, got, count);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    p->rows = malloc(count ? count * sizeof(float) : 1);
    if (!p->rows) {
        snprintf(why, why_size, "out of memory for %zu values", count);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    /* memcpy per value: raw bytes need not be aligned */
    for (size_t i = 0; i < count; i++) {
        if (fp64) {
            double d;
            memcpy(&d, (const char *)src + i * 8, 8);
            p->rows[i] = (float)d;
        } else {
            memcpy(&p->rows[i], (const char *)src + i * 4, 4);
        }
    }
    p->n_rows = n_rows;
    return GRPC_STATUS_OK;
}

static struct model *loaded(struct xgb_server *rt, struct rpc_call *c, const char *name)
{
    struct model *m = name[0] ? find(rt, name) : NULL;
    if (!name[0])
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "model_name is required");
    else if (!m)
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s is not loaded", name);
    else if (m->state != MODEL_LOADED)
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "model %s is still loading", name);
    else
        return m;
    return NULL;
}

static void model_infer(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &inference__model_infer_request__descriptor, &msg) < 0)
        return;
    Inference__ModelInferRequest *req = (Inference__ModelInferRequest *)msg;
    struct model *m = loaded(rt, c, req->model_name);
    struct prediction *p = m ? calloc(1, sizeof(*p)) : NULL;
    if (m && !p)
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (!p)
        goto out;
    char why[512];
    grpc_status_code st = read_rows(req, m, rt->cfg.max_batch_elements, p, why, sizeof(why));
    if (st != GRPC_STATUS_OK) {
        rpc_call_fail(c, st, "%s", why);
        free(p->rows);
        free(p);
        goto out;
    }
    p->m = m;
    p->call = c;
    p->request_id = req->id[0] ? strdup(req->id) : NULL;
    m->inflight++;
    if (pool_submit(rt->predictions, predict_work, predict_done, p, &p->job) < 0) {
        m->inflight--;
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "runtime is stopping");
        free(p->rows);
        free(p->request_id);
        free(p);
    } else {
        rpc_call_on_cancel(c, prediction_cancelled, p);
    }
out:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void model_metadata(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &inference__model_metadata_request__descriptor, &msg) < 0)
        return;
    Inference__ModelMetadataRequest *req = (Inference__ModelMetadataRequest *)msg;
    struct model *m = loaded(rt, c, req->name);
    if (m) {
        Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
        Inference__ModelMetadataResponse__TensorMetadata in =
            INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
        Inference__ModelMetadataResponse__TensorMetadata out =
            INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
        Inference__ModelMetadataResponse__TensorMetadata *ins[1] = {&in}, *outs[1] = {&out};
        int64_t in_shape[2] = {-1, (int64_t)xgb_model_features(m->xgb)};
        int64_t out_shape[2] = {-1, (int64_t)xgb_model_outputs(m->xgb)};
        in.name = "input-0";
        in.datatype = "FP32";
        in.shape = in_shape;
        in.n_shape = 2;
        out.name = "predict";
        out.datatype = "FP32";
        out.shape = out_shape;
        out.n_shape = out_shape[1] > 1 ? 2 : 1;
        r.name = m->id;
        r.platform = "xgboost";
        r.inputs = ins;
        r.n_inputs = 1;
        r.outputs = outs;
        r.n_outputs = 1;
        rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void model_ready(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (rpc_call_decode(c, &inference__model_ready_request__descriptor, &msg) < 0)
        return;
    Inference__ModelReadyRequest *req = (Inference__ModelReadyRequest *)msg;
    struct model *m = find(rt, req->name);
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    r.ready = m && m->state == MODEL_LOADED;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void server_live(struct rpc_call *c, void *arg)
{
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = true;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

static void server_ready(struct rpc_call *c, void *arg)
{
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = true;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

static void server_metadata(struct rpc_call *c, void *arg)
{
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = "mm-runtime";
    r.version = XGB_SERVER_VERSION;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

/* ---------------------------------------------------------------- setup */

int xgb_server_new(struct ev_loop *loop, const struct xgb_server_config *cfg,
                   struct xgb_server **out, struct mm_error *err)
{
    struct xgb_server *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return mm_error_set(err, -ENOMEM, "runtime: out of memory");
    rt->loop = loop;
    if (cfg)
        rt->cfg = *cfg;
    if (!rt->cfg.capacity_bytes)
        rt->cfg.capacity_bytes = DEFAULT_CAPACITY;
    if (!rt->cfg.max_loading_concurrency)
        rt->cfg.max_loading_concurrency = 1;
    if (!rt->cfg.load_timeout_ms)
        rt->cfg.load_timeout_ms = DEFAULT_LOAD_TIMEOUT_MS;
    if (!rt->cfg.default_model_size)
        rt->cfg.default_model_size = DEFAULT_MODEL_SIZE;
    if (!rt->cfg.workers)
        rt->cfg.workers = 2;
    if (!rt->cfg.max_batch_elements)
        rt->cfg.max_batch_elements = DEFAULT_MAX_ELEMENTS;
    int rc = pool_new(loop, rt->cfg.max_loading_concurrency, &rt->loads, err);
    if (rc == 0)
        rc = pool_new(loop, rt->cfg.workers, &rt->predictions, err);
    if (rc < 0) {
        xgb_server_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

int xgb_server_register(struct xgb_server *rt, struct rpc_server *s, struct mm_error *err)
{
    static const struct {
        const char *path;
        rpc_handler handler;
    } methods[] = {
        {"/mmesh.ModelRuntime/loadModel", load_model},
        {"/mmesh.ModelRuntime/unloadModel", unload_model},
        {"/mmesh.ModelRuntime/modelSize", model_size},
        {"/mmesh.ModelRuntime/predictModelSize", predict_model_size},
        {"/mmesh.ModelRuntime/runtimeStatus", runtime_status},
        {"/inference.GRPCInferenceService/ModelInfer", model_infer},
        {"/inference.GRPCInferenceService/ModelMetadata", model_metadata},
        {"/inference.GRPCInferenceService/ModelReady", model_ready},
        {"/inference.GRPCInferenceService/ServerLive", server_live},
        {"/inference.GRPCInferenceService/ServerReady", server_ready},
        {"/inference.GRPCInferenceService/ServerMetadata", server_metadata},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        int rc = rpc_server_register(s, methods[i].path, methods[i].handler, rt, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

size_t xgb_server_model_count(const struct xgb_server *rt)
{
    return rt->n_models;
}

unsigned xgb_server_busy(const struct xgb_server *rt)
{
    return (rt->loads ? pool_pending(rt->loads) : 0) +
           (rt->predictions ? pool_pending(rt->predictions) : 0);
}

void xgb_server_stop(struct xgb_server *rt, void (*idle)(void *arg), void *arg)
{
    pool_stop(rt->loads);
    pool_stop(rt->predictions);
    rt->idle = idle;
    rt->idle_arg = arg;
    check_idle(rt);
}

void xgb_server_free(struct xgb_server *rt)
{
    if (!rt)
        return;
    rt->idle = NULL;
    pool_free(rt->loads); /* queued loads and predictions get their done (-ECANCELED) here */
    pool_free(rt->predictions);
    while (rt->models) {
        struct model *m = rt->models;
        rt->models = m->next;
        model_free(m);
    }
    free(rt);
}
