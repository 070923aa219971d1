/* mmclient.h - a small client of the mesh's model API (mmesh.ModelMesh, proto/model-mesh.proto)
 * for tests and benchmarks: registerModel, unregisterModel, getModelStatus, ensureLoaded,
 * setVModel, deleteVModel and getVModelStatus over
 * an rpc channel (cluster.h opens one per node), each waited for (bounded) or started in
 * parallel and decoded after. Answers are copied into plain structs: nothing to free. */
#ifndef MM_TEST_MMCLIENT_H
#define MM_TEST_MMCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "testcall.h"

/* The proto's ModelStatus numbering. */
enum mmc_model_status {
    MMC_NOT_FOUND = 0,
    MMC_NOT_LOADED = 1,
    MMC_LOADING = 2,
    MMC_LOADED = 3,
    MMC_LOADING_FAILED = 4,
    MMC_UNKNOWN = 5,
};
const char *mmc_status_name(int status);

#define MMC_MAX_ERRORS 8
#define MMC_MAX_COPIES 16

/* One call's outcome: the gRPC status, and the ModelStatusInfo it answered when OK. */
struct mmc_reply {
    grpc_status_code code;
    char details[1024];
    int status;                    /* enum mmc_model_status */
    size_t n_errors;               /* those kept; n_errors_total counts all */
    size_t n_errors_total;
    char errors[MMC_MAX_ERRORS][512];
    size_t n_copies;               /* those kept; n_copies_total counts all */
    size_t n_copies_total;
    struct {
        char location[256];        /* the instance id */
        int status;
        uint64_t time;
    } copies[MMC_MAX_COPIES];
};

/* The calls, waited for (timeout_ms is the call's deadline; 0 = 30 s). */
void mmc_register(struct rpc_channel *ch, const char *id, const char *type, const char *path,
                  const char *key, bool load_now, bool sync, uint64_t last_used_ms,
                  int64_t timeout_ms, struct mmc_reply *out);
void mmc_unregister(struct rpc_channel *ch, const char *id, int64_t timeout_ms,
                    struct mmc_reply *out);
void mmc_status(struct rpc_channel *ch, const char *id, int64_t timeout_ms,
                struct mmc_reply *out);
void mmc_ensure(struct rpc_channel *ch, const char *id, uint64_t last_used_ms, bool sync,
                int64_t timeout_ms, struct mmc_reply *out);

/* ensureLoaded started without waiting; t (zeroed here) collects the reply (testcall_wait),
 * mmc_decode reads it. 0 or -errno (t->done set, status INTERNAL). */
int mmc_ensure_start(struct rpc_channel *ch, const char *id, uint64_t last_used_ms, bool sync,
                     int64_t timeout_ms, struct testcall *t);
/* A ModelStatusInfo reply collected in t as an mmc_reply (a reply that does not decode:
 * code DATA_LOSS). t's response is freed. */
void mmc_decode(struct testcall *t, struct mmc_reply *out);

/* Whether r is OK with status want (printing what it was if not). */
bool mmc_is(const struct mmc_reply *r, int want);
/* A line describing r, for failure messages ("OK LOADED copies n0:LOADED" or "NOT_FOUND: ..."). */
const char *mmc_describe(const struct mmc_reply *r, char *buf, size_t size);

/* The proto's VModelStatus numbering. */
enum mmc_vmodel_status {
    MMC_V_NOT_FOUND = 0,
    MMC_V_DEFINED = 1,
    MMC_V_TRANSITIONING = 2,
    MMC_V_TRANSITION_FAILED = 3,
    MMC_V_UNKNOWN = 5,
};
const char *mmc_vstatus_name(int status);

/* A VModelStatusInfo answer. */
struct mmc_vreply {
    grpc_status_code code;
    char details[1024];
    int status; /* enum mmc_vmodel_status; -1 when not OK */
    char active[256], target[256], owner[128];
    bool has_active, has_target; /* activeModelStatus / targetModelStatus present */
    struct mmc_reply active_status, target_status;
};

/* SetVModelRequest's fields; NULL strings are "". type NULL: no modelInfo. */
struct mmc_vmodel_set {
    const char *vmodel, *target;
    const char *type, *path, *key;
    bool update_only, auto_delete, load_now, force, sync;
    const char *expected, *owner;
};

void mmc_set_vmodel(struct rpc_channel *ch, const struct mmc_vmodel_set *req, int64_t timeout_ms,
                    struct mmc_vreply *out);
/* setVModel started without waiting; t collects the reply (testcall_wait), mmc_vdecode reads
 * it. 0 or -errno (t->done set, status INTERNAL). */
int mmc_set_vmodel_start(struct rpc_channel *ch, const struct mmc_vmodel_set *req,
                         int64_t timeout_ms, struct testcall *t);
void mmc_vdecode(struct testcall *t, struct mmc_vreply *out);
void mmc_vmodel_status(struct rpc_channel *ch, const char *vmodel, const char *owner,
                       int64_t timeout_ms, struct mmc_vreply *out);
/* out->status is -1 (an empty answer). */
void mmc_delete_vmodel(struct rpc_channel *ch, const char *vmodel, const char *owner,
                       int64_t timeout_ms, struct mmc_reply *out);
/* "OK TRANSITIONING active a (LOADED) target b (LOADING) owner o", or the error. */
const char *mmc_vdescribe(const struct mmc_vreply *r, char *buf, size_t size);

#endif
