/* placer.c - one placement as one etcd txn; see placer.h for the compares and the read-back. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/keys.h"
#include "mm/placer.h"
#include "mm/records.h"

struct placer_request {
    struct etcd_request *req;
    placer_cb cb;
    void *arg;
    int64_t target_lease;
    char copy_key[KEYS_MAX];
    size_t copy_key_len;
    char model_id[KEYS_NAME_MAX + 1];
    char target[KEYS_NAME_MAX + 1];
};

const char *placer_outcome_name(enum placer_outcome o)
{
    switch (o) {
    case PLACER_PLACED:
        return "placed";
    case PLACER_LOST_RACE:
        return "lost the race";
    case PLACER_TARGET_GONE:
        return "target gone";
    }
    return "?";
}

static void finish(struct placer_request *p, int status, const struct mm_error *err,
                   const struct placer_result *res)
{
    p->cb(status, err, res, p->arg);
    free(p);
}

static void fail(struct placer_request *p, int code, const char *detail)
{
    struct mm_error e = {0};
    mm_error_set(&e, code, "placing model %s on %s: %s", p->model_id, p->target, detail);
    finish(p, code, &e, NULL);
}

static void on_txn(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct placer_request *p = arg;
    p->req = NULL;
    if (status < 0) {
        fail(p, status, err ? err->msg : mm_strerror(status));
        return;
    }
    struct placer_result res = {.revision = resp->revision};
    if (resp->succeeded) {
        res.outcome = PLACER_PLACED;
        finish(p, 0, NULL, &res);
        return;
    }
    /* The failure branch: three ranges, read atomically with the failed compares. */
    if (resp->n_results != 3 || resp->results[0].kind != ETCD_OP_RANGE ||
        resp->results[1].kind != ETCD_OP_RANGE || resp->results[2].kind != ETCD_OP_RANGE) {
        fail(p, -EPROTO, "etcd answered the failed txn without its three reads");
        return;
    }
    res.model = resp->results[0].n_kvs ? &resp->results[0].kvs[0] : NULL;
    res.instance = resp->results[1].n_kvs ? &resp->results[1].kvs[0] : NULL;
    res.copies = resp->results[2].kvs;
    res.n_copies = resp->results[2].n_kvs;
    if (!res.model) {
        fail(p, -ENOENT, "the model record does not exist");
        return;
    }
    bool copy_exists = false;
    for (size_t i = 0; i < res.n_copies; i++)
        copy_exists |= res.copies[i].key_len == p->copy_key_len &&
                       memcmp(res.copies[i].key, p->copy_key, p->copy_key_len) == 0;
    if (copy_exists)
        res.outcome = PLACER_LOST_RACE;
    else if (!res.instance || res.instance->lease != p->target_lease)
        res.outcome = PLACER_TARGET_GONE;
    else
        res.outcome = PLACER_LOST_RACE; /* the model record moved on */
    finish(p, 0, NULL, &res);
}

int placer_place(struct etcd_client *c, const struct placer_req *req, placer_cb cb, void *arg,
                 struct placer_request **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    if (!c || !req || !cb || !req->cluster || !req->model_id || !req->target_iid ||
        !req->model_value || !req->copy)
        return mm_error_set(err, -EINVAL, "placement: missing argument");
    char model_key[KEYS_MAX], instance_key[KEYS_MAX], copies_key[KEYS_MAX];
    int rc;
    if ((rc = keys_model(model_key, sizeof model_key, req->cluster, req->model_id, err)) < 0 ||
        (rc = keys_instance(instance_key, sizeof instance_key, req->cluster, req->target_iid,
                            err)) < 0 ||
        (rc = keys_copies_of(copies_key, sizeof copies_key, req->cluster, req->model_id, err)) < 0)
        return rc;
    if (req->model_mod_revision <= 0)
        return mm_error_set(err, -EINVAL,
                            "placing model %s on %s: model revision %lld is not positive",
                            req->model_id, req->target_iid, (long long)req->model_mod_revision);
    if (req->target_lease <= 0)
        return mm_error_set(err, -EINVAL, "placing model %s on %s: no lease for the copy",
                            req->model_id, req->target_iid);
    struct mm_error verr = {0};
    if (record_validate(RECORD_MODEL, req->model_value, strlen(req->model_value), &verr) < 0)
        return mm_error_set(err, -EINVAL, "placing model %s on %s: model record: %s", req->model_id,
                            req->target_iid, verr.msg);
    struct placer_request *p = calloc(1, sizeof *p);
    if (!p)
        return mm_error_set(err, -ENOMEM, "placing model %s: out of memory", req->model_id);
    p->cb = cb;
    p->arg = arg;
    p->target_lease = req->target_lease;
    snprintf(p->model_id, sizeof p->model_id, "%s", req->model_id);
    snprintf(p->target, sizeof p->target, "%s", req->target_iid);
    if ((rc = keys_copy(p->copy_key, sizeof p->copy_key, req->cluster, req->model_id,
                        req->target_iid, err)) < 0) {
        free(p);
        return rc;
    }
    p->copy_key_len = strlen(p->copy_key);
    char *copy_value = record_encode(RECORD_COPY, req->copy);
    if (!copy_value) {
        free(p);
        return mm_error_set(err, -ENOMEM, "placing model %s: out of memory", req->model_id);
    }
    if (record_validate(RECORD_COPY, copy_value, strlen(copy_value), &verr) < 0) {
        free(copy_value);
        free(p);
        return mm_error_set(err, -EINVAL, "placing model %s on %s: copy record: %s", req->model_id,
                            req->target_iid, verr.msg);
    }

    const struct etcd_compare cmp[] = {
        {.key = model_key,
         .target = ETCD_CMP_MOD,
         .result = ETCD_CMP_EQUAL,
         .number = req->model_mod_revision},
        {.key = instance_key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_GREATER, .number = 0},
        /* Attached to the same lease: a key under a lease lives only while the lease does, so
         * the copy's put below cannot meet a dead lease. */
        {.key = instance_key,
         .target = ETCD_CMP_LEASE,
         .result = ETCD_CMP_EQUAL,
         .number = req->target_lease},
        {.key = p->copy_key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0},
    };
    const struct etcd_op success[] = {
        {.kind = ETCD_OP_PUT, .key = p->copy_key, .value = copy_value, .lease = req->target_lease},
        {.kind = ETCD_OP_PUT, .key = model_key, .value = req->model_value},
    };
    const struct etcd_op failure[] = {
        {.kind = ETCD_OP_RANGE, .key = model_key},
        {.kind = ETCD_OP_RANGE, .key = instance_key},
        {.kind = ETCD_OP_RANGE, .key = copies_key, .prefix = true},
    };
    const struct etcd_txn txn = {.compare = cmp,
                                 .n_compare = 4,
                                 .success = success,
                                 .n_success = 2,
                                 .failure = failure,
                                 .n_failure = 3};
    rc = etcd_txn(c, &txn, on_txn, p, &p->req);
    free(copy_value);
    if (rc < 0) {
        free(p);
        return mm_error_set(err, rc, "placing model %s on %s: starting the txn: %s", req->model_id,
                            req->target_iid, mm_strerror(rc));
    }
    if (out)
        *out = p;
    return 0;
}

void placer_cancel(struct placer_request *p)
{
    if (!p)
        return;
    etcd_request_cancel(p->req);
    free(p);
}
