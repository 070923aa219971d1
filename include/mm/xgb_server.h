/* xgb_server.h - the built-in XGBoost runtime's server (the program is mm-runtime): the
 * ModelMesh runtime SPI (mmesh.ModelRuntime) and KServe V2 inference
 * (inference.GRPCInferenceService) on one rpc server.
 *
 * Owns the loaded models. Loads run on a pool of max_loading_concurrency threads, predictions on
 * a pool of `workers` threads; the loop only parses, validates and replies. A model unloaded
 * while predictions run is freed when the last one finishes; one unloaded before its load has
 * started is never loaded. A call whose client goes away (or whose deadline passes) while it
 * waits for a load or a prediction is answered at once and its job dropped if not started.
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

struct xgb_server_config {
    uint64_t capacity_bytes;           /* reported to the mesh; 0 = 1 GiB */
    uint32_t max_loading_concurrency;  /* 0 = 1 */
    uint32_t load_timeout_ms;          /* reported; 0 = 90000 */
    uint64_t default_model_size;       /* reported; 0 = 1000000 */
    unsigned workers;                  /* prediction threads; 0 = 2 */
    size_t max_batch_elements;         /* N x features per request; 0 = 16M */
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
