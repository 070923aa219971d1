/* server.c - the XGBoost runtime's services (see xgb_server.h). */
#include "mm/xgb_server.h"

#include <errno.h>
#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "grpc_predict_v2.pb-c.h"
#include "model-runtime.pb-c.h"
#include "mm/log.h"
#include "mm/pool.h"
#include "mm/rpc.h"
#include "mm/wire.h"
#include "mm/xgb.h"

#define DEFAULT_CAPACITY (1ull << 30)
#define DEFAULT_LOAD_TIMEOUT_MS 90000
#define DEFAULT_MODEL_SIZE 1000000
#define DEFAULT_MAX_ELEMENTS (16u << 20)

#define MAX_ID 1024            /* bytes of a model id (and of a request id) */
#define MAX_PATH_BYTES 4096    /* bytes of a model path */
#define MAX_SEGMENTS 64        /* slices of a request looked at in place (more: one copy) */

enum model_state { MODEL_LOADING, MODEL_LOADED };

struct waiter {
    struct waiter *next;
    struct model *m;
    struct rpc_call *call;
};

struct model {
    struct model *next; /* in rt->models while listed */
    struct xgb_server *rt;
    char *id;
    char *path;
    enum model_state state;
    bool listed;       /* false once unloaded, purged or timed out */
    unsigned inflight; /* predictions running */
    struct xgb_model *xgb;
    uint64_t size;
    struct waiter *waiters;    /* loadModel calls answered when the load ends */
    struct pool_job *load_job; /* while the load is queued or running (or abandoned) */
    ev_timer timeout;          /* the load timeout, while load_job is set */
    atomic_llong started_ms;   /* when the worker took the load up (monotonic), 0 before */
    bool given_up;             /* the load timed out or was unloaded while it ran */
    int load_rc;               /* worker results */
    struct mm_error load_err;
};

struct xgb_server {
    struct ev_loop *loop;
    struct xgb_server_config cfg;
    struct xgb_limits limits; /* what a model file may hold */
    struct pool *loads;
    struct pool *predictions;
    struct model *models;
    size_t n_models;
    void (*idle)(void *arg); /* xgb_server_stop's, called once no job is left */
    void *idle_arg;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- replies */

static grpc_status_code status_of(int rc)
{
    switch (rc) {
    case -ENOENT:
        return GRPC_STATUS_NOT_FOUND;
    case -EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case -EACCES:
        return GRPC_STATUS_PERMISSION_DENIED;
    case -EFBIG:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case -ENOMEM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case -ECANCELED:
        return GRPC_STATUS_ABORTED;
    case -ETIMEDOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

/* ---------------------------------------------------------------- bounded decoding */

/* A text field of a request (an id, a path), checked on the wire where its bytes are exact:
 * after unpacking, protobuf-c's C string ends at the first NUL ("a\0b" would be "a"). */
struct text_field {
    uint32_t number;
    const char *name;
    size_t max;
    bool required;
};

/* Every field occurrence costs the decoder: a bound for every request. */
#define MAX_FIELDS 65536
/* ModelInferRequest, what decoding allocates per item: counters and their bounds. */
enum { C_INPUTS, C_OUTPUTS, C_RAW, C_PARAMETERS, C_DIMS, C_VALUES };
static const char *const counter_names[] = {"inputs",     "outputs",    "raw_input_contents",
                                            "parameters", "shape dims", "tensor contents values"};
static const struct wire_limits infer_limits = {
    .max = {[C_INPUTS] = XGB_SERVER_MAX_TENSORS,
            [C_OUTPUTS] = XGB_SERVER_MAX_TENSORS,
            [C_RAW] = XGB_SERVER_MAX_TENSORS,
            [C_PARAMETERS] = XGB_SERVER_MAX_PARAMETERS,
            [C_DIMS] = XGB_SERVER_MAX_SHAPE_DIMS,
            [C_VALUES] = XGB_SERVER_MAX_VALUES},
    .max_fields = MAX_FIELDS,
};
static const struct wire_limits plain_limits = {.max_fields = MAX_FIELDS};

static const struct wire_rule parameter_rules[] = {
    {1, WIRE_BYTES, -1, NULL}, {2, WIRE_MESSAGE, -1, NULL}, /* map entry: key, InferParameter */
};
static const struct wire_schema parameter_entry = {parameter_rules, 2};
static const struct wire_rule contents_rules[] = {
    {1, WIRE_VARINT, C_VALUES, NULL},  {2, WIRE_VARINT, C_VALUES, NULL},
    {3, WIRE_VARINT, C_VALUES, NULL},  {4, WIRE_VARINT, C_VALUES, NULL},
    {5, WIRE_VARINT, C_VALUES, NULL},  {6, WIRE_FIXED32, C_VALUES, NULL},
    {7, WIRE_FIXED64, C_VALUES, NULL}, {8, WIRE_BYTES, C_VALUES, NULL},
};
static const struct wire_schema contents_schema = {contents_rules, 8};
static const struct wire_rule input_rules[] = {
    {3, WIRE_VARINT, C_DIMS, NULL},
    {4, WIRE_MESSAGE, C_PARAMETERS, &parameter_entry},
    {5, WIRE_MESSAGE, -1, &contents_schema},
};
static const struct wire_schema input_schema = {input_rules, 3};
static const struct wire_rule output_rules[] = {
    {2, WIRE_MESSAGE, C_PARAMETERS, &parameter_entry},
};
static const struct wire_schema output_schema = {output_rules, 1};
static const struct wire_rule infer_rules[] = {
    {4, WIRE_MESSAGE, C_PARAMETERS, &parameter_entry},
    {5, WIRE_MESSAGE, C_INPUTS, &input_schema},
    {6, WIRE_MESSAGE, C_OUTPUTS, &output_schema},
    {7, WIRE_BYTES, C_RAW, NULL},
};
static const struct wire_schema infer_schema = {infer_rules, 4};
static const struct wire_schema plain_schema = {NULL, 0};

/* Decode the request bb as desc's message, within schema's bounds, its text fields checked:
 * GRPC_STATUS_OK and *out (freed with protobuf_c_message_free_unpacked), or the status to
 * answer and why. Pure: runs on the loop for the SPI's small messages, on the prediction pool
 * for inference. */
static grpc_status_code decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                               const struct wire_schema *schema, const struct wire_limits *lim,
                               const char *call, const struct text_field *texts, size_t n_texts,
                               ProtobufCMessage **out, char *why, size_t why_size)
{
    struct wire_segment segs[MAX_SEGMENTS];
    void *flat = NULL;
    size_t flat_len = 0;
    grpc_status_code st = GRPC_STATUS_OK;
    *out = NULL;
    int n = bb ? rpc_segments(bb, segs, MAX_SEGMENTS) : 0;
    if (n < 0) { /* many slices, or compressed: one copy */
        flat = rpc_flatten(bb, &flat_len);
        if (!flat) {
            snprintf(why, why_size, "%s: out of memory", call);
            return GRPC_STATUS_RESOURCE_EXHAUSTED;
        }
        segs[0].data = flat;
        segs[0].len = flat_len;
        n = 1;
    }
    int which = -1;
    int rc = wire_check_bounds(segs, (size_t)n, schema, lim, &which);
    if (rc == -E2BIG) {
        snprintf(why, why_size, "%s: more than %llu %s in one request", desc->name,
                 (unsigned long long)(which < 0 ? lim->max_fields : lim->max[which]),
                 which < 0 ? "fields" : counter_names[which]);
        st = GRPC_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    if (rc < 0) {
        snprintf(why, why_size, "malformed %s: %s", desc->name, wire_strerror(rc));
        st = GRPC_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    struct mm_error err = {0};
    if (rpc_decode(bb, desc, out, &err) < 0) {
        snprintf(why, why_size, "%s", err.msg);
        st = GRPC_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    for (size_t i = 0; i < n_texts; i++) {
        const struct text_field *t = &texts[i];
        char scratch[MAX_PATH_BYTES + 1];
        const char *v = NULL;
        size_t len = 0;
        rc = wire_find_field(segs, (size_t)n, t->number, scratch, t->max + 1, &v, &len);
        if (rc == -ENOENT || (rc == 0 && len == 0)) {
            if (t->required) {
                snprintf(why, why_size, "%s: %s is required", call, t->name);
                st = GRPC_STATUS_INVALID_ARGUMENT;
            }
        } else if (rc == -E2BIG || (rc == 0 && len > t->max)) {
            snprintf(why, why_size, "%s: %s is more than %zu bytes long, at most %zu are allowed",
                     call, t->name, t->max, t->max);
            st = GRPC_STATUS_INVALID_ARGUMENT;
        } else if (rc < 0) {
            snprintf(why, why_size, "malformed %s: %s", desc->name, wire_strerror(rc));
            st = GRPC_STATUS_INVALID_ARGUMENT;
        } else if (memchr(v, '\0', len)) {
            snprintf(why, why_size, "%s: %s holds a NUL character", call, t->name);
            st = GRPC_STATUS_INVALID_ARGUMENT;
        } else if (!mm_utf8_valid(v, len)) {
            snprintf(why, why_size, "%s: %s is not valid UTF-8", call, t->name);
            st = GRPC_STATUS_INVALID_ARGUMENT;
        }
        if (st != GRPC_STATUS_OK)
            break;
    }
out:
    if (st != GRPC_STATUS_OK && *out) {
        protobuf_c_message_free_unpacked(*out, NULL);
        *out = NULL;
    }
    free(flat);
    return st;
}

/* decode() on the loop for a served call: 0, or the call is answered and -EINVAL returned. */
static int decode_call(struct rpc_call *c, const ProtobufCMessageDescriptor *desc, const char *call,
                       const struct text_field *texts, size_t n_texts, ProtobufCMessage **out)
{
    char why[RPC_MAX_STATUS_MESSAGE];
    grpc_status_code st = decode(rpc_call_request(c), desc, &plain_schema, &plain_limits, call,
                                 texts, n_texts, out, why, sizeof(why));
    if (st == GRPC_STATUS_OK)
        return 0;
    rpc_call_fail(c, st, "%s", why);
    return -EINVAL;
}

static const struct text_field model_id = {1, "modelId", MAX_ID, true};

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
    ev_timer_stop(m->rt->loop, &m->timeout);
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
            rpc_call_fail(w->call, status_of(rc), "%s", err->msg);
        }
        free(w);
        w = next;
    }
}

/* Stop waiting for m's running load (it timed out, or m was unloaded): its slot goes to a new
 * thread, its waiters are answered now, and m is freed by load_done when the thread returns. */
static void give_up_load(struct model *m, int rc, const struct mm_error *err)
{
    struct xgb_server *rt = m->rt;
    int abandoned = pool_abandon(m->load_job);
    ev_timer_stop(rt->loop, &m->timeout);
    m->given_up = true;
    if (abandoned != -EBUSY) /* -EBUSY: it has just ended, its done is on its way */
        mm_log(MM_LOG_WARN, "mm-runtime",
               "load of %s given up with its thread still reading "
               "%s%s",
               m->id, m->path,
               abandoned == -EAGAIN ? " (too many stuck loads: its slot stays taken)" : "");
    answer_waiters(m, rc, err);
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
    /* A load not started yet is dropped (load_done answers its waiters); a running one is given
     * up on, so that a load stuck on storage cannot hold its slot past the unload. */
    if (m->load_job && !m->given_up && pool_cancel(m->load_job) == -EBUSY) {
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "model %s was unloaded while loading", m->id);
        give_up_load(m, -ECANCELED, &err);
    }
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
    atomic_store(&m->started_ms, now_ms());
    m->load_rc = xgb_model_load(m->path, &m->rt->limits, &m->xgb, &m->load_err);
}

/* The load timeout counts from when a worker takes the load up, not while it is queued. */
static void load_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct model *m = w->data;
    struct xgb_server *rt = m->rt;
    long long started = atomic_load(&m->started_ms), limit = rt->cfg.load_timeout_ms;
    long long elapsed = started ? now_ms() - started : 0;
    if (elapsed < limit) {
        ev_timer_set(w, (double)(limit - elapsed) / 1000., 0.);
        ev_timer_start(loop, w);
        return;
    }
    struct mm_error err;
    mm_error_set(&err, -ETIMEDOUT, "model %s: load timed out after %u ms", m->id,
                 rt->cfg.load_timeout_ms);
    give_up_load(m, -ETIMEDOUT, &err);
    if (m->listed)
        unlist(rt, m); /* a later loadModel of this id loads it again */
}

static void load_done(int status, void *arg)
{
    struct model *m = arg;
    struct xgb_server *rt = m->rt;
    m->state = MODEL_LOADED;
    m->load_job = NULL;
    ev_timer_stop(rt->loop, &m->timeout);
    if (status == -ECANCELED && m->listed) { /* dropped by xgb_server_stop before it started */
        m->load_rc = -ECANCELED;
        mm_error_set(&m->load_err, -ECANCELED, "model %s: the runtime is stopping", m->id);
    }
    if (m->given_up)
        mm_log(MM_LOG_INFO, "mm-runtime", "the load of %s given up on has ended", m->id);
    if (!m->listed) { /* unloaded, purged or timed out while loading */
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "model %s was unloaded while loading", m->id);
        answer_waiters(m, -ECANCELED, &err);
        if (m->inflight == 0)
            model_free(m);
    } else if (m->load_rc < 0) {
        struct mm_error err = m->load_err;
        mm_log(MM_LOG_WARN, "mm-runtime", "loadModel %s: %s", m->id, err.msg);
        answer_waiters(m, m->load_rc, &err);
        unlist(rt, m);
    } else {
        m->size = xgb_model_size(m->xgb);
        mm_log(MM_LOG_INFO, "mm-runtime", "loaded %s from %s: %llu bytes", m->id, m->path,
               (unsigned long long)m->size);
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
    static const struct text_field texts[] = {
        {1, "modelId", MAX_ID, true},
        {2, "modelType", MAX_ID, false},
        {3, "modelPath", MAX_PATH_BYTES, true},
    };
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &mmesh__load_model_request__descriptor, "loadModel", texts, 3, &msg) < 0)
        return;
    Mmesh__LoadModelRequest *req = (Mmesh__LoadModelRequest *)msg;
    if (req->modeltype[0] && strcasecmp(req->modeltype, "xgboost") != 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
             "loadModel %s: mm-runtime serves xgboost models, not '%s'", req->modelid,
             req->modeltype);
        goto out;
    }
    struct model *m = find(rt, req->modelid);
    if (!m) {
        unsigned stuck = pool_abandoned(rt->loads);
        if (stuck >= POOL_MAX_ABANDONED) {
            rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE,
                 "loadModel %s: %u earlier loads are still stuck "
                 "reading their files; try again later",
                 req->modelid, stuck);
            goto out;
        }
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
        ev_timer_init(&m->timeout, load_timer, rt->cfg.load_timeout_ms / 1000., 0.);
        m->timeout.data = m;
        if (pool_submit(rt->loads, load_work, load_done, m, &m->load_job) < 0) {
            model_free(m);
            rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "loadModel: runtime is stopping");
            goto out;
        }
        ev_timer_start(rt->loop, &m->timeout);
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
    if (rpc_call_on_cancel(c, waiter_cancelled, w) == -ECANCELED)
        waiter_cancelled(c, w);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---------------------------------------------------------------- the other SPI methods */

static void unload_model(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &mmesh__unload_model_request__descriptor, "unloadModel", &model_id, 1,
                    &msg) < 0)
        return;
    Mmesh__UnloadModelRequest *req = (Mmesh__UnloadModelRequest *)msg;
    struct model *m = find(rt, req->modelid);
    if (m) {
        mm_log(MM_LOG_INFO, "mm-runtime", "unloading %s", m->id);
        unlist(rt, m);
    }
    /* Unloading what is not loaded succeeds: the goal state holds. */
    Mmesh__UnloadModelResponse r = MMESH__UNLOAD_MODEL_RESPONSE__INIT;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void model_size(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &mmesh__model_size_request__descriptor, "modelSize", &model_id, 1, &msg) < 0)
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
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void predict_model_size(struct rpc_call *c, void *arg)
{
    static const struct text_field texts[] = {
        {1, "modelId", MAX_ID, false},
        {3, "modelPath", MAX_PATH_BYTES, false},
    };
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &mmesh__predict_model_size_request__descriptor, "predictModelSize", texts, 2,
                    &msg) < 0)
        return;
    Mmesh__PredictModelSizeRequest *req = (Mmesh__PredictModelSizeRequest *)msg;
    uint64_t disk = 0;
    Mmesh__PredictModelSizeResponse r = MMESH__PREDICT_MODEL_SIZE_RESPONSE__INIT;
    /* Nothing to measure (no path, a FIFO or device, an empty file or directory): the
     * configured default is the honest estimate, never 0. */
    if (req->modelpath[0] && xgb_path_size(req->modelpath, rt->cfg.models_dirs, &disk) == 0 &&
        disk > 0)
        r.sizeinbytes = disk + disk / 4; /* disk size x 1.25, the adapters' estimate */
    else
        r.sizeinbytes = rt->cfg.default_model_size;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void runtime_status(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    /* The mesh asks at (re)start: whatever we hold is unknown to it, so purge first. */
    if (rt->models)
        mm_log(MM_LOG_INFO, "mm-runtime", "runtimeStatus: purging %zu models", rt->n_models);
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

/* A ModelInfer call: decoded on the prediction pool (decode_work), the model looked up on the
 * loop (decoded), the rows read and predicted on the pool (predict_work), answered on the loop
 * (predict_done). The loop never touches the request's bytes. */
struct prediction {
    struct xgb_server *rt;
    struct rpc_call *call;
    grpc_byte_buffer *request; /* the call's, valid until it is replied */
    ProtobufCMessage *msg;     /* the decoded Inference__ModelInferRequest */
    struct model *m;           /* once looked up: counted in m->inflight */
    float *rows;
    size_t n_rows;
    bool raw; /* answer the way the client asked: raw bytes or contents */
    bool has_id;              /* model_id came from the mm-model-id header */
    char model_id[MAX_ID + 1];
    float *result;
    size_t per_row;
    struct pool_job *job;    /* the job running or queued for it */
    grpc_status_code status; /* the workers' verdict */
    char why[RPC_MAX_STATUS_MESSAGE];
    struct mm_error err;
};

static void prediction_free(struct prediction *p)
{
    if (p->m) {
        p->m->inflight--;
        if (!p->m->listed && p->m->inflight == 0 && p->m->state == MODEL_LOADED)
            model_free(p->m);
    }
    if (p->msg)
        protobuf_c_message_free_unpacked(p->msg, NULL);
    free(p->result);
    free(p->rows);
    free(p);
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
    size_t f = xgb_model_features(m->xgb), outputs = xgb_model_outputs(m->xgb);
    if (req->n_inputs != 1) {
        snprintf(why, why_size, "model %s expects 1 input tensor, got %zu", m->id, req->n_inputs);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[0];
    bool fp64 = strcmp(in->datatype, "FP64") == 0;
    if (!fp64 && strcmp(in->datatype, "FP32") != 0) {
        snprintf(why, why_size,
                 "input '%s': datatype '%s' is not supported, model expects 'FP32'"
                 " (or 'FP64')",
                 in->name, in->datatype);
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
    size_t per_row = f > outputs ? f : outputs; /* the answer is bounded like the question */
    if (n_rows > max_elements / per_row) {
        snprintf(why, why_size,
                 "input '%s': %zu rows x %zu %s exceeds the limit of %zu "
                 "values per request",
                 in->name, n_rows, per_row, per_row == f ? "features" : "predicted values",
                 max_elements);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    size_t count = n_rows * f, width = fp64 ? 8 : 4;
    const void *src = NULL;
    size_t have = 0;
    if (req->n_raw_input_contents > 0) {
        src = req->raw_input_contents[0].data;
        have = req->raw_input_contents[0].len / width;
        if (req->raw_input_contents[0].len != count * width) {
            snprintf(why, why_size,
                     "input '%s': raw contents hold %zu bytes, shape %s of %s "
                     "needs %zu",
                     in->name, req->raw_input_contents[0].len, got, in->datatype, count * width);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        p->raw = true;
    } else if (in->contents) {
        src = fp64 ? (const void *)in->contents->fp64_contents
                   : (const void *)in->contents->fp32_contents;
        have = fp64 ? in->contents->n_fp64_contents : in->contents->n_fp32_contents;
    }
    if (have != count) {
        snprintf(why, why_size, "input '%s': %zu %s values for shape %s, which needs %zu", in->name,
                 have, in->datatype, got, count);
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

/* The concrete model id a mesh node names in the mm-model-id header: it wins over the
 * request's own name, which a node forwards untouched and which may be a vmodel's name
 * (docs/routing.md). Copied into out[MAX_ID + 1]: 1 when present, 0 when absent, or -EINVAL
 * with the call answered INVALID_ARGUMENT (longer than MAX_ID, a NUL, not UTF-8). */
static int header_model_id(struct rpc_call *c, char *out, const char *call)
{
    size_t len = 0;
    const char *v = rpc_call_header(c, "mm-model-id", &len);
    out[0] = '\0';
    if (!v || len == 0)
        return 0;
    if (len > MAX_ID || memchr(v, '\0', len) || !mm_utf8_valid(v, len)) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "%s: the mm-model-id header is longer than %d bytes, holds a NUL or is "
                      "not UTF-8", call, MAX_ID);
        return -EINVAL;
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

static struct model *loaded(struct xgb_server *rt, struct rpc_call *c, const char *name,
                            const char *field)
{
    struct model *m = name[0] ? find(rt, name) : NULL;
    if (!name[0])
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s is required", field);
    else if (!m)
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %s is not loaded", name);
    else if (m->state != MODEL_LOADED)
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "model %s is still loading", name);
    else
        return m;
    return NULL;
}

static void decode_work(void *arg)
{
    static const struct text_field texts[] = {
        {1, "model_name", MAX_ID, false}, /* a blank name is answered on the loop */
        {3, "id", MAX_ID, false},
    };
    struct prediction *p = arg;
    p->status = decode(p->request, &inference__model_infer_request__descriptor, &infer_schema,
                       &infer_limits, "ModelInfer", texts, 2, &p->msg, p->why, sizeof(p->why));
}

static void predict_work(void *arg)
{
    struct prediction *p = arg;
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)p->msg;
    p->status = read_rows(req, p->m, p->rt->cfg.max_batch_elements, p, p->why, sizeof(p->why));
    if (p->status != GRPC_STATUS_OK)
        return;
    if (xgb_model_predict(p->m->xgb, p->rows, p->n_rows, &p->result, &p->per_row, &p->err) < 0) {
        snprintf(p->why, sizeof(p->why), "model %s: %s", p->m->id, p->err.msg);
        p->status = GRPC_STATUS_INTERNAL;
    }
}

static void predict_done(int status, void *arg)
{
    struct prediction *p = arg;
    struct xgb_server *rt = p->rt;
    struct model *m = p->m;
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)p->msg;
    if (status == -ECANCELED) { /* the client went away, or the runtime is stopping */
        rpc_call_fail(p->call, GRPC_STATUS_CANCELLED, "model %s: prediction cancelled", m->id);
    } else if (p->status != GRPC_STATUS_OK) {
        rpc_call_fail(p->call, p->status, "%s", p->why);
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
        resp.id = req->id; /* checked: UTF-8, no NUL, bounded */
        resp.outputs = outs;
        resp.n_outputs = 1;
        rpc_call_reply(p->call, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    }
    prediction_free(p);
    check_idle(rt);
}

/* Decoded (or not): look the model up on the loop, then predict on the pool. */
static void decoded(int status, void *arg)
{
    struct prediction *p = arg;
    struct xgb_server *rt = p->rt;
    p->job = NULL;
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)p->msg;
    struct model *m = NULL;
    if (status == -ECANCELED)
        rpc_call_fail(p->call, GRPC_STATUS_CANCELLED, "ModelInfer: cancelled");
    else if (p->status != GRPC_STATUS_OK)
        rpc_call_fail(p->call, p->status, "%s", p->why);
    else
        m = loaded(rt, p->call, p->has_id ? p->model_id : req->model_name, "model_name");
    if (m) {
        p->m = m;
        m->inflight++;
        if (pool_submit(rt->predictions, predict_work, predict_done, p, &p->job) == 0) {
            check_idle(rt);
            return;
        }
        rpc_call_fail(p->call, GRPC_STATUS_UNAVAILABLE, "runtime is stopping");
    }
    prediction_free(p);
    check_idle(rt);
}

/* The client went away: a job that has not started is dropped (its done answers and frees);
 * a running one finishes and its late answer goes nowhere. */
static void prediction_cancelled(struct rpc_call *c, void *arg)
{
    struct prediction *p = arg;
    if (p->job)
        pool_cancel(p->job);
}

static void model_infer(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    struct prediction *p = calloc(1, sizeof(*p));
    if (!p) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "ModelInfer: out of memory");
        return;
    }
    p->rt = rt;
    p->call = c;
    p->request = rpc_call_request(c);
    int has = header_model_id(c, p->model_id, "ModelInfer");
    if (has < 0) {
        free(p);
        return;
    }
    p->has_id = has > 0;
    if (pool_submit(rt->predictions, decode_work, decoded, p, &p->job) < 0) {
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "runtime is stopping");
        free(p);
        return;
    }
    if (rpc_call_on_cancel(c, prediction_cancelled, p) == -ECANCELED)
        pool_cancel(p->job);
}

static const struct text_field name_text = {1, "name", MAX_ID, false};

static void model_metadata(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &inference__model_metadata_request__descriptor, "ModelMetadata", &name_text,
                    1, &msg) < 0)
        return;
    Inference__ModelMetadataRequest *req = (Inference__ModelMetadataRequest *)msg;
    char id[MAX_ID + 1];
    int has = header_model_id(c, id, "ModelMetadata");
    struct model *m = has < 0 ? NULL : loaded(rt, c, has ? id : req->name, "name");
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
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void model_ready(struct rpc_call *c, void *arg)
{
    struct xgb_server *rt = arg;
    ProtobufCMessage *msg = NULL;
    if (decode_call(c, &inference__model_ready_request__descriptor, "ModelReady", &name_text, 1,
                    &msg) < 0)
        return;
    Inference__ModelReadyRequest *req = (Inference__ModelReadyRequest *)msg;
    char id[MAX_ID + 1];
    int has = header_model_id(c, id, "ModelReady");
    if (has < 0) {
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return;
    }
    struct model *m = find(rt, has ? id : req->name);
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
    rt->limits.max_file_bytes = rt->cfg.capacity_bytes;
    rt->limits.max_features = rt->cfg.max_batch_elements;
    rt->limits.models_dirs = rt->cfg.models_dirs;
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
