/* mmclient.h - a small client of the mesh's model API (mmesh.ModelMesh, proto/model-mesh.proto)
 * for tests and benchmarks: registerModel, unregisterModel, getModelStatus and ensureLoaded over
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

#endif
