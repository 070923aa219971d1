/* model_api.c - mmesh.ModelMesh on the node's port: decode, check, call the mesh, answer. See
 * model_api.h for the mapping of errors and the parking of calls. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/model_api.h"
#include "mm/rpc.h"
#include "mm/vmodels.h"
#include "mm/wire.h"
#include "model-mesh.pb-c.h"

#define WHO "model-api"
#define MAX_SEGMENTS 16

struct parked {
    struct model_api *api;
    struct parked *prev, *next;
    struct rpc_call *call;
    struct mesh_op *op;
    struct vmodels_op *vop;
    const char *method;
    bool unregister; /* answers UnregisterModelResponse (deleteVModel: the same bytes) */
};

struct model_api {
    struct model_api_config cfg;
    struct parked *parked;
    unsigned n_parked;
};

/* ------------------------------------------------------------------ requests */

/* One text field as it is on the wire, so that a NUL inside it is seen (protobuf-c would cut
 * the string there). 0, or the call answered INVALID_ARGUMENT and -EINVAL. */
static int check_text(struct rpc_call *c, const struct wire_segment *segs, size_t n,
                      uint32_t field, const char *name, const char *method)
{
    char scratch[4096];
    const char *v = NULL;
    size_t len = 0;
    int rc = wire_find_field(segs, n, field, scratch, sizeof(scratch), &v, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc == -E2BIG) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s is longer than %zu bytes",
                      method, name, sizeof(scratch));
        return -EINVAL;
    }
    if (rc < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: malformed %s: %s", method, name,
                      wire_strerror(rc));
        return -EINVAL;
    }
    if (memchr(v, '\0', len)) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s holds a NUL character", method,
                      name);
        return -EINVAL;
    }
    if (!mm_utf8_valid(v, len)) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s is not valid UTF-8", method,
                      name);
        return -EINVAL;
    }
    return 0;
}

/* Which text fields of a request are checked on the wire: names of fields 1.., up to
 * MAX_TEXT_FIELDS (NULL: not text), and the field holding a ModelInfo (0: none). */
#define MAX_TEXT_FIELDS 10
struct text_spec {
    const char *names[MAX_TEXT_FIELDS + 1]; /* index = field number */
    uint32_t info_field;
};

static const struct text_spec model_spec = {{NULL, "modelId"}, 0};
static const struct text_spec register_spec = {{NULL, "modelId"}, 2};
static const struct text_spec set_vmodel_spec = {
    {NULL, "vModelId", "targetModelId", NULL, NULL, NULL, NULL, NULL, NULL,
     "expectedTargetModelId", "owner"},
    4};
static const struct text_spec vmodel_spec = {{NULL, "vModelId", "owner"}, 0};

/* Decode the request within bounds, its text fields checked: 0 and *out, or the call answered
 * and -EINVAL. */
static int decode(struct rpc_call *c, const ProtobufCMessageDescriptor *desc, const char *method,
                  const struct text_spec *spec, ProtobufCMessage **out)
{
    *out = NULL;
    grpc_byte_buffer *bb = rpc_call_request(c);
    size_t len = 0;
    void *flat = bb ? rpc_flatten(bb, &len) : NULL;
    if (bb && !flat) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", method);
        return -EINVAL;
    }
    struct wire_segment seg = {flat, len};
    struct wire_rule info_rule[] = {{spec->info_field, WIRE_MESSAGE, -1, NULL}};
    struct wire_schema schema = {spec->info_field ? info_rule : NULL, spec->info_field ? 1 : 0};
    struct wire_limits lim = {.max_fields = MODEL_API_MAX_FIELDS};
    int which = -1;
    int rc = wire_check_bounds(&seg, 1, &schema, &lim, &which);
    if (rc == -E2BIG) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: more than %d fields in one request",
                      method, MODEL_API_MAX_FIELDS);
        goto fail;
    }
    if (rc < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s: %s", desc->name,
                      wire_strerror(rc));
        goto fail;
    }
    for (uint32_t f = 1; f <= MAX_TEXT_FIELDS; f++)
        if (spec->names[f] && check_text(c, &seg, 1, f, spec->names[f], method) < 0)
            goto fail;
    if (spec->info_field) {
        char scratch[8];
        const char *info = NULL;
        size_t info_len = 0;
        rc = wire_find_field(&seg, 1, spec->info_field, scratch, sizeof(scratch), &info,
                             &info_len);
        if (rc == 0) {
            struct wire_segment iseg = {(const uint8_t *)info, info_len};
            if (check_text(c, &iseg, 1, 1, "modelInfo.type", method) < 0 ||
                check_text(c, &iseg, 1, 2, "modelInfo.path", method) < 0 ||
                check_text(c, &iseg, 1, 3, "modelInfo.key", method) < 0)
                goto fail;
        }
    }
    struct mm_error err = {0};
    if (rpc_decode(bb, desc, out, &err) < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
        goto fail;
    }
    free(flat);
    return 0;
fail:
    free(flat);
    return -EINVAL;
}

/* ------------------------------------------------------------------ answers */

static Mmesh__ModelStatusInfo__ModelStatus status_enum(enum mesh_model_status s)
{
    switch (s) {
    case MESH_NOT_FOUND:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND;
    case MESH_NOT_LOADED:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_LOADED;
    case MESH_LOADING:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING;
    case MESH_LOADED:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED;
    case MESH_LOADING_FAILED:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED;
    case MESH_UNKNOWN:
        break;
    }
    return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__UNKNOWN;
}

static Mmesh__ModelStatusInfo__ModelStatus copy_enum(enum copy_state s)
{
    switch (s) {
    case COPY_PENDING:
    case COPY_LOADING:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING;
    case COPY_LOADED:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED;
    case COPY_FAILED:
        return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED;
    }
    return MMESH__MODEL_STATUS_INFO__MODEL_STATUS__UNKNOWN;
}

/* A ModelStatusInfo message and the arrays it points into. */
struct status_msg {
    Mmesh__ModelStatusInfo r;
    Mmesh__ModelStatusInfo__ModelCopyInfo infos[MESH_STATUS_MAX_COPIES];
    Mmesh__ModelStatusInfo__ModelCopyInfo *ptrs[MESH_STATUS_MAX_COPIES];
    char *errors[MESH_STATUS_MAX_ERRORS + 1];
};

/* Fill m from st (NULL: UNKNOWN); it points into st, which must outlive its encoding.
 * extra_error: one more error message first (the failure that ended the operation), or NULL. */
static void fill_status(struct status_msg *m, const struct mesh_status *st,
                        const char *extra_error, bool force_failed)
{
    Mmesh__ModelStatusInfo init = MMESH__MODEL_STATUS_INFO__INIT;
    m->r = init;
    size_t n_errors = 0;
    m->r.status = st ? status_enum(st->status) : MMESH__MODEL_STATUS_INFO__MODEL_STATUS__UNKNOWN;
    if (force_failed)
        m->r.status = MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING_FAILED;
    if (extra_error && (!st || st->n_errors == 0))
        m->errors[n_errors++] = (char *)extra_error;
    for (size_t i = 0; st && i < st->n_errors; i++)
        m->errors[n_errors++] = (char *)st->errors[i];
    m->r.n_errors = n_errors;
    m->r.errors = m->errors;
    for (size_t i = 0; st && i < st->n_copies; i++) {
        Mmesh__ModelStatusInfo__ModelCopyInfo ci = MMESH__MODEL_STATUS_INFO__MODEL_COPY_INFO__INIT;
        ci.location = (char *)st->copies[i].iid;
        ci.copystatus = copy_enum(st->copies[i].state);
        ci.time = st->copies[i].since_ms > 0 ? (uint64_t)st->copies[i].since_ms : 0;
        ci.bytespulled = st->copies[i].bytes_pulled;
        ci.bytestotal = st->copies[i].bytes_total;
        m->infos[i] = ci;
        m->ptrs[i] = &m->infos[i];
    }
    m->r.n_modelcopyinfos = st ? st->n_copies : 0;
    m->r.modelcopyinfos = m->ptrs;
}

static void reply_message(struct rpc_call *c, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    if (!bb) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rpc_call_reply(c, bb, GRPC_STATUS_OK, NULL);
}

/* Answer OK with the status (st may be NULL: UNKNOWN). */
static void reply_status(struct rpc_call *c, const struct mesh_status *st,
                         const char *extra_error, bool force_failed)
{
    struct status_msg *m = malloc(sizeof(*m));
    if (!m) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    fill_status(m, st, extra_error, force_failed);
    reply_message(c, &m->r.base);
    free(m);
}

static Mmesh__VModelStatusInfo__VModelStatus vstate_enum(enum vmodel_state s)
{
    switch (s) {
    case VMODEL_NOT_FOUND:
        return MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__NOT_FOUND;
    case VMODEL_DEFINED:
        return MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__DEFINED;
    case VMODEL_TRANSITIONING:
        return MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__TRANSITIONING;
    case VMODEL_TRANSITION_FAILED:
        return MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__TRANSITION_FAILED;
    }
    return MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__UNKNOWN;
}

/* Answer OK with a VModelStatusInfo: an unknown vmodel is all defaults (status NOT_FOUND), as
 * ModelMesh answers; the target's status only during a transition. */
static void reply_vstatus(struct rpc_call *c, const struct vmodel_status *st)
{
    struct {
        Mmesh__VModelStatusInfo r;
        struct status_msg active, target;
    } *m = malloc(sizeof(*m));
    if (!m) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    Mmesh__VModelStatusInfo init = MMESH__VMODEL_STATUS_INFO__INIT;
    m->r = init;
    m->r.status = vstate_enum(st->state);
    if (st->state != VMODEL_NOT_FOUND) {
        m->r.activemodelid = (char *)st->active_id;
        m->r.targetmodelid = (char *)st->target_id;
        m->r.owner = (char *)st->owner;
        fill_status(&m->active, &st->active, NULL, false);
        m->r.activemodelstatus = &m->active.r;
        if (st->has_target) {
            fill_status(&m->target, &st->target, NULL, false);
            m->r.targetmodelstatus = &m->target.r;
        }
    }
    reply_message(c, &m->r.base);
    free(m);
}

static grpc_status_code code_of(int status)
{
    switch (status) {
    case -ENOENT:
        return GRPC_STATUS_NOT_FOUND;
    case -EEXIST:
        return GRPC_STATUS_ALREADY_EXISTS;
    case -EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case -ENOSPC:
    case -EAGAIN:
    case -ECONNREFUSED:
        return GRPC_STATUS_UNAVAILABLE;
    case -ETIMEDOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case -EBUSY:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case -ECANCELED:
        return GRPC_STATUS_CANCELLED;
    case -ENOMEM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

static void reply_error(struct rpc_call *c, int status, const struct mm_error *err)
{
    rpc_call_fail(c, code_of(status), "%s", err && err->msg[0] ? err->msg : mm_strerror(status));
}

/* UnregisterModelResponse and DeleteVModelResponse: both empty. */
static void reply_empty(struct rpc_call *c)
{
    Mmesh__UnregisterModelResponse r = MMESH__UNREGISTER_MODEL_RESPONSE__INIT;
    reply_message(c, &r.base);
}

/* ------------------------------------------------------------------ parked calls */

static void unpark(struct parked *p)
{
    struct model_api *a = p->api;
    if (p->prev)
        p->prev->next = p->next;
    else
        a->parked = p->next;
    if (p->next)
        p->next->prev = p->prev;
    a->n_parked--;
}

static void on_mesh(int status, const struct mm_error *err, const struct mesh_status *st,
                    void *arg)
{
    struct parked *p = arg;
    unpark(p);
    rpc_call_on_cancel(p->call, NULL, NULL);
    if (status == 0 && p->unregister)
        reply_empty(p->call);
    else if (status == 0)
        reply_status(p->call, st, NULL, false);
    else if (status == -EIO)
        reply_status(p->call, st, err ? err->msg : "load failed", true);
    else
        reply_error(p->call, status, err);
    free(p);
}

static void on_cancelled(struct rpc_call *c, void *arg)
{
    struct parked *p = arg;
    unpark(p);
    mesh_op_cancel(p->op);
    vmodels_op_cancel(p->vop);
    /* the deadline passed, or the client went away: the answer is for the record only */
    rpc_call_fail(c, GRPC_STATUS_CANCELLED, "%s: cancelled", p->method);
    free(p);
}

/* NULL: out of memory, and the call is answered so. */
static struct parked *park_new(struct model_api *a, struct rpc_call *c, const char *method)
{
    struct parked *p = calloc(1, sizeof(*p));
    if (!p) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", method);
        return NULL;
    }
    p->api = a;
    p->call = c;
    p->method = method;
    return p;
}

/* The operation p waits for was started with `started` (0, or -errno with err): watch the
 * call, or answer the error and free p. */
static void park(struct model_api *a, struct parked *p, int started, const struct mm_error *err)
{
    if (started < 0) {
        reply_error(p->call, started, err);
        free(p);
        return;
    }
    p->next = a->parked;
    if (a->parked)
        a->parked->prev = p;
    a->parked = p;
    a->n_parked++;
    if (rpc_call_on_cancel(p->call, on_cancelled, p) == -ECANCELED)
        on_cancelled(p->call, p);
}

/* How long an operation may take: the client's deadline, else max_wait_ms. -1: already past. */
static int64_t wait_ms(const struct model_api *a, struct rpc_call *c)
{
    int64_t left = rpc_call_remaining_ms(c);
    if (left <= 0)
        return -1;
    if (left == INT64_MAX || left > (int64_t)a->cfg.max_wait_ms)
        return a->cfg.max_wait_ms;
    return left;
}

/* ------------------------------------------------------------------ the methods */

static void register_model(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__register_model_request__descriptor, "registerModel", &register_spec,
               &msg) < 0)
        return;
    Mmesh__RegisterModelRequest *req = (Mmesh__RegisterModelRequest *)msg;
    struct mm_error err = {0};
    int64_t wait = wait_ms(a, c);
    struct parked *p = NULL;
    if (wait < 0) {
        rpc_call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED, "registerModel: deadline passed");
        goto out;
    }
    if (!req->modelinfo) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "registerModel: modelInfo is required");
        goto out;
    }
    if (req->lastusedtime > (uint64_t)INT64_MAX) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "registerModel: lastUsedTime is out of "
                                                       "range");
        goto out;
    }
    struct mesh_model_info info = {.type = req->modelinfo->type,
                                   .path = req->modelinfo->path,
                                   .key = req->modelinfo->key};
    if (!(p = park_new(a, c, "registerModel")))
        goto out;
    int rc = mesh_register(a->cfg.mesh, req->modelid, &info, req->loadnow, req->sync,
                           (int64_t)req->lastusedtime, wait, on_mesh, p, &p->op, &err);
    park(a, p, rc, &err);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void unregister_model(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__unregister_model_request__descriptor, "unregisterModel", &model_spec,
               &msg) <
        0)
        return;
    Mmesh__UnregisterModelRequest *req = (Mmesh__UnregisterModelRequest *)msg;
    struct mm_error err = {0};
    struct parked *p = park_new(a, c, "unregisterModel");
    if (!p)
        goto out;
    p->unregister = true;
    int rc = mesh_unregister(a->cfg.mesh, req->modelid, on_mesh, p, &p->op, &err);
    park(a, p, rc, &err);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void ensure_loaded(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__ensure_loaded_request__descriptor, "ensureLoaded", &model_spec, &msg) <
        0)
        return;
    Mmesh__EnsureLoadedRequest *req = (Mmesh__EnsureLoadedRequest *)msg;
    struct mm_error err = {0};
    struct parked *p = NULL;
    int64_t wait = wait_ms(a, c);
    if (wait < 0) {
        rpc_call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED, "ensureLoaded: deadline passed");
        goto out;
    }
    if (req->lastusedtime > (uint64_t)INT64_MAX) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ensureLoaded: lastUsedTime is out of "
                                                       "range");
        goto out;
    }
    if (!(p = park_new(a, c, "ensureLoaded")))
        goto out;
    int rc = mesh_ensure(a->cfg.mesh, req->modelid, (int64_t)req->lastusedtime, req->sync, wait,
                         on_mesh, p, &p->op, &err);
    park(a, p, rc, &err);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void get_model_status(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__get_status_request__descriptor, "getModelStatus", &model_spec, &msg) <
        0)
        return;
    Mmesh__GetStatusRequest *req = (Mmesh__GetStatusRequest *)msg;
    struct mm_error err = {0};
    if (keys_check_name("modelId", req->modelid, &err) < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "getModelStatus: %s", err.msg);
        goto out;
    }
    struct mesh_status *st = malloc(sizeof(*st));
    if (!st) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "getModelStatus: out of memory");
        goto out;
    }
    mesh_status(a->cfg.mesh, req->modelid, st);
    reply_status(c, st, NULL, false);
    free(st);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_vmodels(int status, const struct mm_error *err, const struct vmodel_status *st,
                       void *arg)
{
    struct parked *p = arg;
    unpark(p);
    rpc_call_on_cancel(p->call, NULL, NULL);
    if (status < 0)
        reply_error(p->call, status, err);
    else if (p->unregister || !st)
        reply_empty(p->call);
    else
        reply_vstatus(p->call, st);
    free(p);
}

static void set_vmodel(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__set_vmodel_request__descriptor, "setVModel", &set_vmodel_spec, &msg) <
        0)
        return;
    Mmesh__SetVModelRequest *req = (Mmesh__SetVModelRequest *)msg;
    struct mm_error err = {0};
    struct parked *p = NULL;
    int64_t wait = wait_ms(a, c);
    if (wait < 0) {
        rpc_call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED, "setVModel: deadline passed");
        goto out;
    }
    /* an empty modelInfo is none, as ModelMesh reads it */
    const Mmesh__ModelInfo *mi = req->modelinfo;
    bool has_info = mi && ((mi->type && mi->type[0]) || (mi->path && mi->path[0]) ||
                           (mi->key && mi->key[0]));
    struct mesh_model_info info = {0};
    if (has_info)
        info = (struct mesh_model_info){.type = mi->type, .path = mi->path, .key = mi->key};
    struct vmodel_set_req sr = {
        .vmodel_id = req->vmodelid,
        .target_id = req->targetmodelid,
        .info = has_info ? &info : NULL,
        .update_only = req->updateonly,
        .auto_delete = req->autodeletetargetmodel,
        .load_now = req->loadnow,
        .force = req->force,
        .sync = req->sync,
        .expected_target_id = req->expectedtargetmodelid,
        .owner = req->owner,
    };
    if (!(p = park_new(a, c, "setVModel")))
        goto out;
    int rc = vmodels_set(a->cfg.vmodels, &sr, wait, on_vmodels, p, &p->vop, &err);
    park(a, p, rc, &err);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void delete_vmodel(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__delete_vmodel_request__descriptor, "deleteVModel", &vmodel_spec,
               &msg) < 0)
        return;
    Mmesh__DeleteVModelRequest *req = (Mmesh__DeleteVModelRequest *)msg;
    struct mm_error err = {0};
    struct parked *p = NULL;
    int64_t wait = wait_ms(a, c);
    if (wait < 0) {
        rpc_call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deleteVModel: deadline passed");
        goto out;
    }
    if (!(p = park_new(a, c, "deleteVModel")))
        goto out;
    p->unregister = true;
    int rc = vmodels_delete(a->cfg.vmodels, req->vmodelid, req->owner, wait, on_vmodels, p, &p->vop,
                            &err);
    park(a, p, rc, &err);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void get_vmodel_status(struct rpc_call *c, void *arg)
{
    struct model_api *a = arg;
    ProtobufCMessage *msg = NULL;
    if (decode(c, &mmesh__get_vmodel_status_request__descriptor, "getVModelStatus",
               &vmodel_spec, &msg) < 0)
        return;
    Mmesh__GetVModelStatusRequest *req = (Mmesh__GetVModelStatusRequest *)msg;
    struct mm_error err = {0};
    if (keys_check_name("vModelId", req->vmodelid, &err) < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "getVModelStatus: %s", err.msg);
        goto out;
    }
    struct vmodel_status *st = malloc(sizeof(*st));
    if (!st) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "getVModelStatus: out of memory");
        goto out;
    }
    vmodels_status(a->cfg.vmodels, req->vmodelid, req->owner, st);
    if (st->state == VMODEL_NOT_FOUND) {
        /* perhaps set a moment ago elsewhere: etcd says (as ModelMesh reads it strongly) */
        free(st);
        int64_t wait = wait_ms(a, c);
        if (wait < 0) {
            rpc_call_fail(c, GRPC_STATUS_DEADLINE_EXCEEDED, "getVModelStatus: deadline passed");
            goto out;
        }
        struct parked *p = park_new(a, c, "getVModelStatus");
        if (!p)
            goto out;
        int rc = vmodels_status_read(a->cfg.vmodels, req->vmodelid, req->owner, wait, on_vmodels, p,
                                     &p->vop, &err);
        park(a, p, rc, &err);
        goto out;
    }
    reply_vstatus(c, st);
    free(st);
out:
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void vmodels_absent(struct rpc_call *c, void *arg)
{
    (void)arg;
    rpc_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "%s: this server keeps no vmodels",
                  rpc_call_method(c));
}

/* ------------------------------------------------------------------ life */

int model_api_new(struct rpc_server *s, const struct model_api_config *cfg,
                  struct model_api **out, struct mm_error *err)
{
    *out = NULL;
    if (!s || !cfg || !cfg->mesh)
        return mm_error_set(err, -EINVAL, "model API: server and mesh are required");
    struct model_api *a = calloc(1, sizeof(*a));
    if (!a)
        return mm_error_set(err, -ENOMEM, "model API: out of memory");
    a->cfg = *cfg;
    if (!a->cfg.max_wait_ms)
        a->cfg.max_wait_ms = MODEL_API_MAX_WAIT_MS;
    static const struct {
        const char *path;
        rpc_handler handler;
    } methods[] = {
        {"/mmesh.ModelMesh/registerModel", register_model},
        {"/mmesh.ModelMesh/unregisterModel", unregister_model},
        {"/mmesh.ModelMesh/ensureLoaded", ensure_loaded},
        {"/mmesh.ModelMesh/getModelStatus", get_model_status},
        {"/mmesh.ModelMesh/setVModel", set_vmodel},
        {"/mmesh.ModelMesh/deleteVModel", delete_vmodel},
        {"/mmesh.ModelMesh/getVModelStatus", get_vmodel_status},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        rpc_handler h = methods[i].handler;
        if (!cfg->vmodels && i >= 4)
            h = vmodels_absent;
        int rc = rpc_server_register(s, methods[i].path, h, a, err);
        if (rc < 0) {
            free(a);
            return rc;
        }
    }
    *out = a;
    return 0;
}

void model_api_free(struct model_api *a)
{
    if (!a)
        return;
    while (a->parked) {
        struct parked *p = a->parked;
        unpark(p);
        mesh_op_cancel(p->op);
        vmodels_op_cancel(p->vop);
        rpc_call_on_cancel(p->call, NULL, NULL);
        rpc_call_fail(p->call, GRPC_STATUS_UNAVAILABLE, "%s: the node is shutting down",
                      p->method);
        free(p);
    }
    free(a);
}

unsigned model_api_parked(const struct model_api *a)
{
    return a ? a->n_parked : 0;
}
