/* mmclient.c - calls of the mesh's model API for tests (see mmclient.h). */
#include "mmclient.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model-mesh.pb-c.h"

#define DEFAULT_MS 30000

const char *mmc_status_name(int status)
{
    static const char *const names[] = {"NOT_FOUND", "NOT_LOADED", "LOADING",
                                        "LOADED",    "LOADING_FAILED", "UNKNOWN"};
    return status >= 0 && status < 6 ? names[status] : "(out of range)";
}

static void fill_info(const Mmesh__ModelStatusInfo *info, struct mmc_reply *out)
{
    out->status = (int)info->status;
    out->n_errors_total = info->n_errors;
    for (size_t i = 0; i < info->n_errors && out->n_errors < MMC_MAX_ERRORS; i++)
        snprintf(out->errors[out->n_errors++], sizeof(out->errors[0]), "%s", info->errors[i]);
    out->n_copies_total = info->n_modelcopyinfos;
    for (size_t i = 0; i < info->n_modelcopyinfos && out->n_copies < MMC_MAX_COPIES; i++) {
        const Mmesh__ModelStatusInfo__ModelCopyInfo *ci = info->modelcopyinfos[i];
        snprintf(out->copies[out->n_copies].location, sizeof(out->copies[0].location), "%s",
                 ci->location ? ci->location : "");
        out->copies[out->n_copies].status = (int)ci->copystatus;
        out->copies[out->n_copies].time = ci->time;
        out->n_copies++;
    }
}

/* Decode a reply that carries a ModelStatusInfo (desc NULL: an empty message). */
static void finish(grpc_status_code code, const char *details, grpc_byte_buffer *response,
                   const ProtobufCMessageDescriptor *desc, struct mmc_reply *out)
{
    memset(out, 0, sizeof(*out));
    out->code = code;
    snprintf(out->details, sizeof(out->details), "%s", details ? details : "");
    out->status = -1;
    if (code != GRPC_STATUS_OK || !desc)
        return;
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (!response || rpc_decode(response, desc, &m, &err) < 0) {
        out->code = GRPC_STATUS_DATA_LOSS;
        snprintf(out->details, sizeof(out->details), "reply does not decode: %s",
                 response ? err.msg : "no message");
        return;
    }
    fill_info((const Mmesh__ModelStatusInfo *)m, out);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void call(struct rpc_channel *ch, const char *method, const ProtobufCMessage *msg,
                 const ProtobufCMessageDescriptor *out_desc, int64_t timeout_ms,
                 struct mmc_reply *out)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    struct rpc_reply r;
    rpc_unary_wait(ch, method, bb, NULL, 0, timeout_ms > 0 ? timeout_ms : DEFAULT_MS, &r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    finish(r.status, r.details, r.response, out_desc, out);
    rpc_reply_clear(&r);
}

void mmc_register(struct rpc_channel *ch, const char *id, const char *type, const char *path,
                  const char *key, bool load_now, bool sync, uint64_t last_used_ms,
                  int64_t timeout_ms, struct mmc_reply *out)
{
    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    info.type = (char *)(type ? type : "");
    info.path = (char *)(path ? path : "");
    info.key = (char *)(key ? key : "");
    Mmesh__RegisterModelRequest req = MMESH__REGISTER_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    req.modelinfo = &info;
    req.loadnow = load_now;
    req.sync = sync;
    req.lastusedtime = last_used_ms;
    call(ch, "/mmesh.ModelMesh/registerModel", &req.base, &mmesh__model_status_info__descriptor,
         timeout_ms, out);
}

void mmc_unregister(struct rpc_channel *ch, const char *id, int64_t timeout_ms,
                    struct mmc_reply *out)
{
    Mmesh__UnregisterModelRequest req = MMESH__UNREGISTER_MODEL_REQUEST__INIT;
    req.modelid = (char *)id;
    call(ch, "/mmesh.ModelMesh/unregisterModel", &req.base, NULL, timeout_ms, out);
}

void mmc_status(struct rpc_channel *ch, const char *id, int64_t timeout_ms,
                struct mmc_reply *out)
{
    Mmesh__GetStatusRequest req = MMESH__GET_STATUS_REQUEST__INIT;
    req.modelid = (char *)id;
    call(ch, "/mmesh.ModelMesh/getModelStatus", &req.base,
         &mmesh__model_status_info__descriptor, timeout_ms, out);
}

static grpc_byte_buffer *ensure_request(const char *id, uint64_t last_used_ms, bool sync)
{
    Mmesh__EnsureLoadedRequest req = MMESH__ENSURE_LOADED_REQUEST__INIT;
    req.modelid = (char *)id;
    req.lastusedtime = last_used_ms;
    req.sync = sync;
    return rpc_encode(&req.base);
}

void mmc_ensure(struct rpc_channel *ch, const char *id, uint64_t last_used_ms, bool sync,
                int64_t timeout_ms, struct mmc_reply *out)
{
    grpc_byte_buffer *bb = ensure_request(id, last_used_ms, sync);
    struct rpc_reply r;
    rpc_unary_wait(ch, "/mmesh.ModelMesh/ensureLoaded", bb, NULL, 0,
                   timeout_ms > 0 ? timeout_ms : DEFAULT_MS, &r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    finish(r.status, r.details, r.response, &mmesh__model_status_info__descriptor, out);
    rpc_reply_clear(&r);
}

int mmc_ensure_start(struct rpc_channel *ch, const char *id, uint64_t last_used_ms, bool sync,
                     int64_t timeout_ms, struct testcall *t)
{
    memset(t, 0, sizeof(*t));
    grpc_byte_buffer *bb = ensure_request(id, last_used_ms, sync);
    int rc = bb ? rpc_unary(ch, "/mmesh.ModelMesh/ensureLoaded", bb, NULL, 0,
                            timeout_ms > 0 ? timeout_ms : DEFAULT_MS, NULL, testcall_cb, t, NULL)
                : -ENOMEM;
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (rc < 0) {
        t->done = true;
        t->status = GRPC_STATUS_INTERNAL;
        snprintf(t->details, sizeof(t->details), "ensureLoaded %s could not start: %s", id,
                 strerror(-rc));
    }
    return rc;
}

void mmc_decode(struct testcall *t, struct mmc_reply *out)
{
    finish(t->status, t->details, t->response, &mmesh__model_status_info__descriptor, out);
    testcall_clear(t);
}

const char *mmc_describe(const struct mmc_reply *r, char *buf, size_t size)
{
    if (r->code != GRPC_STATUS_OK) {
        snprintf(buf, size, "%s: %s", rpc_status_name(r->code), r->details);
        return buf;
    }
    size_t o = (size_t)snprintf(buf, size, "OK %s", r->status >= 0 ? mmc_status_name(r->status)
                                                                   : "(no status)");
    for (size_t i = 0; i < r->n_copies && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s:%s", i ? " " : " copies ",
                              r->copies[i].location, mmc_status_name(r->copies[i].status));
    for (size_t i = 0; i < r->n_errors && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, " error \"%s\"", r->errors[i]);
    return buf;
}

bool mmc_is(const struct mmc_reply *r, int want)
{
    if (r->code == GRPC_STATUS_OK && r->status == want)
        return true;
    char buf[2048];
    fprintf(stderr, "  wanted OK %s, got %s\n", mmc_status_name(want),
            mmc_describe(r, buf, sizeof(buf)));
    return false;
}

/* ---------------------------------------------------------------- vmodels */

const char *mmc_vstatus_name(int status)
{
    static const char *const names[] = {"NOT_FOUND", "DEFINED", "TRANSITIONING",
                                        "TRANSITION_FAILED", "(4)", "UNKNOWN"};
    return status >= 0 && status < 6 ? names[status] : "(out of range)";
}

static void vfinish(grpc_status_code code, const char *details, grpc_byte_buffer *response,
                    struct mmc_vreply *out)
{
    memset(out, 0, sizeof(*out));
    out->code = code;
    snprintf(out->details, sizeof(out->details), "%s", details ? details : "");
    out->status = -1;
    if (code != GRPC_STATUS_OK)
        return;
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (!response || rpc_decode(response, &mmesh__vmodel_status_info__descriptor, &m, &err) < 0) {
        out->code = GRPC_STATUS_DATA_LOSS;
        snprintf(out->details, sizeof(out->details), "reply does not decode: %s",
                 response ? err.msg : "no message");
        return;
    }
    const Mmesh__VModelStatusInfo *v = (const Mmesh__VModelStatusInfo *)m;
    out->status = (int)v->status;
    snprintf(out->active, sizeof(out->active), "%s", v->activemodelid);
    snprintf(out->target, sizeof(out->target), "%s", v->targetmodelid);
    snprintf(out->owner, sizeof(out->owner), "%s", v->owner);
    out->active_status.status = out->target_status.status = -1;
    if (v->activemodelstatus) {
        out->has_active = true;
        fill_info(v->activemodelstatus, &out->active_status);
    }
    if (v->targetmodelstatus) {
        out->has_target = true;
        fill_info(v->targetmodelstatus, &out->target_status);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void vcall(struct rpc_channel *ch, const char *method, const ProtobufCMessage *msg,
                  int64_t timeout_ms, struct mmc_vreply *out)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    struct rpc_reply r;
    rpc_unary_wait(ch, method, bb, NULL, 0, timeout_ms > 0 ? timeout_ms : DEFAULT_MS, &r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    vfinish(r.status, r.details, r.response, out);
    rpc_reply_clear(&r);
}

static grpc_byte_buffer *set_vmodel_request(const struct mmc_vmodel_set *q)
{
    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    info.type = (char *)(q->type ? q->type : "");
    info.path = (char *)(q->path ? q->path : "");
    info.key = (char *)(q->key ? q->key : "");
    Mmesh__SetVModelRequest req = MMESH__SET_VMODEL_REQUEST__INIT;
    req.vmodelid = (char *)(q->vmodel ? q->vmodel : "");
    req.targetmodelid = (char *)(q->target ? q->target : "");
    req.modelinfo = q->type ? &info : NULL;
    req.updateonly = q->update_only;
    req.autodeletetargetmodel = q->auto_delete;
    req.loadnow = q->load_now;
    req.force = q->force;
    req.sync = q->sync;
    req.expectedtargetmodelid = (char *)(q->expected ? q->expected : "");
    req.owner = (char *)(q->owner ? q->owner : "");
    return rpc_encode(&req.base);
}

int mmc_set_vmodel_start(struct rpc_channel *ch, const struct mmc_vmodel_set *q,
                         int64_t timeout_ms, struct testcall *t)
{
    memset(t, 0, sizeof(*t));
    grpc_byte_buffer *bb = set_vmodel_request(q);
    int rc = bb ? rpc_unary(ch, "/mmesh.ModelMesh/setVModel", bb, NULL, 0,
                            timeout_ms > 0 ? timeout_ms : DEFAULT_MS, NULL, testcall_cb, t, NULL)
                : -ENOMEM;
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (rc < 0) {
        t->done = true;
        t->status = GRPC_STATUS_INTERNAL;
        snprintf(t->details, sizeof(t->details), "setVModel could not start: %s",
                 strerror(-rc));
    }
    return rc;
}

void mmc_vdecode(struct testcall *t, struct mmc_vreply *out)
{
    vfinish(t->status, t->details, t->response, out);
    testcall_clear(t);
}

void mmc_set_vmodel(struct rpc_channel *ch, const struct mmc_vmodel_set *q, int64_t timeout_ms,
                    struct mmc_vreply *out)
{
    grpc_byte_buffer *bb = set_vmodel_request(q);
    struct rpc_reply r;
    rpc_unary_wait(ch, "/mmesh.ModelMesh/setVModel", bb, NULL, 0,
                   timeout_ms > 0 ? timeout_ms : DEFAULT_MS, &r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    vfinish(r.status, r.details, r.response, out);
    rpc_reply_clear(&r);
}

void mmc_vmodel_status(struct rpc_channel *ch, const char *vmodel, const char *owner,
                       int64_t timeout_ms, struct mmc_vreply *out)
{
    Mmesh__GetVModelStatusRequest req = MMESH__GET_VMODEL_STATUS_REQUEST__INIT;
    req.vmodelid = (char *)vmodel;
    req.owner = (char *)(owner ? owner : "");
    vcall(ch, "/mmesh.ModelMesh/getVModelStatus", &req.base, timeout_ms, out);
}

void mmc_delete_vmodel(struct rpc_channel *ch, const char *vmodel, const char *owner,
                       int64_t timeout_ms, struct mmc_reply *out)
{
    Mmesh__DeleteVModelRequest req = MMESH__DELETE_VMODEL_REQUEST__INIT;
    req.vmodelid = (char *)vmodel;
    req.owner = (char *)(owner ? owner : "");
    call(ch, "/mmesh.ModelMesh/deleteVModel", &req.base, NULL, timeout_ms, out);
}

const char *mmc_vdescribe(const struct mmc_vreply *r, char *buf, size_t size)
{
    if (r->code != GRPC_STATUS_OK) {
        snprintf(buf, size, "%s: %s", rpc_status_name(r->code), r->details);
        return buf;
    }
    snprintf(buf, size, "OK %s active '%s' (%s) target '%s' (%s) owner '%s'",
             mmc_vstatus_name(r->status), r->active,
             r->has_active ? mmc_status_name(r->active_status.status) : "-", r->target,
             r->has_target ? mmc_status_name(r->target_status.status) : "-", r->owner);
    return buf;
}
