/* spi.h - an asynchronous client of the model runtime SPI (mmesh.ModelRuntime: runtimeStatus,
 * loadModel, unloadModel, predictModelSize, modelSize), the way a node drives the runtime
 * beside it. Answers are decoded into plain C structs; a failure carries a gRPC status, a
 * negative errno and a message naming the call, the model and the runtime.
 *
 * Owns: a client owns its channel to the runtime and its requests in flight; a request handle
 * belongs to the client until its callback runs or it is cancelled.
 *
 * Threading: everything runs on the loop thread of the rpc_context the client was made with;
 * callbacks run there, from the loop, never from inside the call that started the request.
 *
 * Lifetime:
 * - Each started request calls its callback exactly once, unless it is cancelled or its client
 *   is freed first: then its callback never runs.
 * - spi_request_cancel(r) may be called any time before r's callback has started (not after,
 *   and not from inside r's own callback: the handle is gone by then).
 * - spi_client_free() may be called from inside any callback of the client, or with requests in
 *   flight: those are cancelled (their callbacks never run).
 * - Cancelling does not stop the runtime's work: a cancelled loadModel may still load the model
 *   (unload it if it must not stay). The gRPC call runs to its own end in the background and is
 *   then released.
 * - Free every client before the rpc_context it uses. */
#ifndef MM_SPI_H
#define MM_SPI_H

#include <stdbool.h>
#include <stdint.h>

#include <grpc/status.h>

#include "mm/error.h"

struct rpc_context;
struct spi_client;
struct spi_request;

/* The longest runtimeVersion accepted; a longer one makes the answer malformed (-EBADMSG). */
#define SPI_VERSION_MAX 128

enum spi_method {
    SPI_RUNTIME_STATUS,
    SPI_LOAD_MODEL,
    SPI_UNLOAD_MODEL,
    SPI_PREDICT_MODEL_SIZE,
    SPI_MODEL_SIZE,
};

enum spi_runtime_state {
    SPI_STARTING = 0,
    SPI_READY = 1,
    SPI_FAILING = 2,
};

/* A model as the runtime is asked to load it (or to predict its size). */
struct spi_model {
    const char *id;   /* required, non-empty */
    const char *type; /* e.g. "xgboost"; NULL or "": whatever the runtime serves */
    const char *path; /* required, non-empty: where the node put the model */
    const char *key;  /* the storage key as JSON; NULL: none */
};

/* runtimeStatus. Asking for it also tells the runtime that the caller knows of no loaded
 * model: runtimes unload everything they hold when they answer it. */
struct spi_runtime_status {
    enum spi_runtime_state state;
    uint64_t capacity_bytes;
    uint32_t max_loading_concurrency;
    uint32_t load_timeout_ms;
    uint64_t default_model_size_bytes;
    char version[SPI_VERSION_MAX]; /* runtimeVersion, NUL-terminated */
    uint64_t numeric_version;
    bool limit_model_concurrency;
    bool allow_any_method;
};

/* What a request came to. code and status agree: code is 0 exactly when status is OK. */
struct spi_result {
    enum spi_method method;
    /* 0, or a negative errno from the gRPC status: INVALID_ARGUMENT -EINVAL, NOT_FOUND -ENOENT,
     * ABORTED -ECONNABORTED (e.g. unloaded while loading), DEADLINE_EXCEEDED -ETIMEDOUT,
     * UNAVAILABLE -EAGAIN, RESOURCE_EXHAUSTED -ENOSPC, CANCELLED -ECANCELED, ALREADY_EXISTS
     * -EEXIST, PERMISSION_DENIED/UNAUTHENTICATED -EACCES, UNIMPLEMENTED -ENOSYS, OUT_OF_RANGE
     * -ERANGE, FAILED_PRECONDITION -EPERM, DATA_LOSS -EBADMSG, others -EIO. An OK answer that
     * does not decode is -EBADMSG with status DATA_LOSS. */
    int code;
    grpc_status_code status;
    /* On failure: "loadModel m1 at 127.0.0.1:8085: NOT_FOUND: <the runtime's message>"
     * (err.code == code); cleared on success. */
    struct mm_error err;
    uint64_t size_bytes;               /* loadModel, predictModelSize, modelSize */
    uint32_t max_concurrency;          /* loadModel: the model's concurrency limit, 0 = none */
    struct spi_runtime_status runtime; /* runtimeStatus */
};

/* res is valid during the call only; copy what you keep. */
typedef void (*spi_reply_cb)(const struct spi_result *res, void *arg);

/* A client of the runtime at target ("127.0.0.1:8085", "unix:/path") over its own channel. */
int spi_client_new(struct rpc_context *ctx, const char *target, struct spi_client **out,
                   struct mm_error *err);
/* Cancels the requests in flight (their callbacks never run). NULL is ignored. */
void spi_client_free(struct spi_client *cl);
const char *spi_client_target(const struct spi_client *cl);
struct rpc_context *spi_client_context(const struct spi_client *cl);

/* Start a request. timeout_ms > 0 is the call's deadline; 0 = none. cb (required) gets the
 * result; out (may be NULL) gets a handle for spi_request_cancel. Returns 0, or -EINVAL (a
 * required argument missing or empty), -ENOMEM, -EIO (the call could not start): then cb never
 * runs and *out is NULL. */
int spi_runtime_status(struct spi_client *cl, int64_t timeout_ms, spi_reply_cb cb, void *arg,
                       struct spi_request **out);
int spi_load_model(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                   spi_reply_cb cb, void *arg, struct spi_request **out);
/* Unloading a model the runtime does not hold succeeds. */
int spi_unload_model(struct spi_client *cl, const char *id, int64_t timeout_ms, spi_reply_cb cb,
                     void *arg, struct spi_request **out);
int spi_predict_model_size(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                           spi_reply_cb cb, void *arg, struct spi_request **out);
/* NOT_FOUND (-ENOENT) for a model that is not loaded. */
int spi_model_size(struct spi_client *cl, const char *id, int64_t timeout_ms, spi_reply_cb cb,
                   void *arg, struct spi_request **out);

/* Its callback never runs. NULL is ignored. See the lifetime rule above. */
void spi_request_cancel(struct spi_request *r);

/* "loadModel" (as the .proto spells the method). */
const char *spi_method_name(enum spi_method m);
/* "READY", "STARTING", "FAILING". */
const char *spi_runtime_state_name(enum spi_runtime_state s);

#endif
