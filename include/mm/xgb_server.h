/* xgb_server.h - the built-in XGBoost runtime's server (the program is mm-runtime): the
 * ModelMesh runtime SPI (mmesh.ModelRuntime) and KServe V2 inference
 * (inference.GRPCInferenceService) on one rpc server.
 *
 * Owns the loaded models. Loads run on a pool of max_loading_concurrency threads, inference
 * (decoding, reading the rows, predicting) on a pool of `workers` threads; the loop decodes only
 * the SPI's small requests, looks models up and replies. A model unloaded while predictions run
 * is freed when the last one finishes; one unloaded before its load has started is never
 * loaded. A call whose client goes away (or whose deadline passes) while it waits for a load or
 * a prediction is answered at once and its job dropped if not started.
 *
 * Bounds (README's "Limits and hardening"): a load that runs past load_timeout_ms fails with
 * DEADLINE_EXCEEDED, and so does one unloaded while it runs (ABORTED); either way its thread,
 * which cannot be interrupted, is given up on and replaced (pool_abandon), at most
 * POOL_MAX_ABANDONED at once, after which loads are refused (UNAVAILABLE) until one returns.
 * Every request is checked on the wire before it is decoded (field occurrences; for
 * ModelInferRequest the counts below); ids (at most 1024 bytes) and paths (4096) must be UTF-8
 * without NUL; status messages are escaped and cut to 512 bytes.
 * Everything here runs on the loop thread. */
#ifndef MM_XGB_SERVER_H
#define MM_XGB_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct ev_loop;
struct rpc_server;
struct xgb_server;

#define XGB_SERVER_VERSION "0.1.0"

/* What one ModelInferRequest may hold, counted on the wire before it is decoded. */
#define XGB_SERVER_MAX_TENSORS 64        /* inputs, outputs, raw_input_contents: each */
#define XGB_SERVER_MAX_PARAMETERS 64     /* parameter entries, all maps together */
#define XGB_SERVER_MAX_SHAPE_DIMS 1024   /* shape dims, all tensors together */
#define XGB_SERVER_MAX_VALUES (4u << 20) /* contents values, all tensors, packed or not */

struct xgb_server_config {
    uint64_t capacity_bytes;          /* reported to the mesh; 0 = 1 GiB */
    uint32_t max_loading_concurrency; /* 0 = 1 */
    uint32_t load_timeout_ms;         /* reported; 0 = 90000 */
    uint64_t default_model_size;      /* reported; 0 = 1000000 */
    unsigned workers;                 /* prediction threads; 0 = 2 */
    size_t max_batch_elements;        /* N x features per request; 0 = 16M */
    const char *const *models_dirs;   /* resolved, NULL-terminated; a model path must be inside
                                         one of them; NULL: any */
};

int xgb_server_new(struct ev_loop *loop, const struct xgb_server_config *cfg,
                   struct xgb_server **out, struct mm_error *err);
/* Register every SPI and inference method on s (before rpc_server_start). */
int xgb_server_register(struct xgb_server *rt, struct rpc_server *s, struct mm_error *err);
/* Models loaded and being loaded. */
size_t xgb_server_model_count(const struct xgb_server *rt);
/* Jobs still running or queued (loads and predictions). */
unsigned xgb_server_busy(const struct xgb_server *rt);
/* Stop taking work, for a graceful exit after the server has shut down: queued loads and
 * predictions are dropped (their calls answered), new ones refused; running jobs go on. idle
 * runs once on the loop when no job is left (inside this call if none is). */
void xgb_server_stop(struct xgb_server *rt, void (*idle)(void *arg), void *arg);
/* Waits for running jobs (see xgb_server_stop for a bounded wait), answers every call still
 * waiting on a job, frees the models. The rpc server may be freed before or after. */
void xgb_server_free(struct xgb_server *rt);

#endif
