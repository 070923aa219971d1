/* model_api.h - the mesh management API (mmesh.ModelMesh, proto/model-mesh.proto) served on the
 * node's port: registerModel, unregisterModel, ensureLoaded and getModelStatus call mesh.h;
 * setVModel, deleteVModel and getVModelStatus call vmodels.h (UNIMPLEMENTED without one).
 *
 * Requests are bounded and checked before the mesh sees them: a message of at most
 * MODEL_API_MAX_FIELDS fields; text fields without NUL or control characters, UTF-8, within
 * their record's sizes; an error names the field ("modelInfo.type is required").
 * Errors map to gRPC codes: -ENOENT NOT_FOUND, -EEXIST ALREADY_EXISTS, -EINVAL
 * INVALID_ARGUMENT, -ENOSPC and -EAGAIN UNAVAILABLE (retryable), -ETIMEDOUT DEADLINE_EXCEEDED,
 * -EBUSY FAILED_PRECONDITION (a vmodel refers to the model). A model that failed to load
 * (-EIO) is an answer, not an error: OK with status LOADING_FAILED and the errors, as
 * ModelMesh answers. getModelStatus of an unknown model is OK with status NOT_FOUND, as
 * ModelMesh answers; the other methods answer NOT_FOUND. getVModelStatus of an unknown vmodel
 * (or another owner's) is OK with status NOT_FOUND and deleteVModel of one is OK, as ModelMesh
 * answers; setVModel's rules are vmodels.h's (-EBUSY: FAILED_PRECONDITION for an
 * expectedTargetModelId that does not match). A transition that failed is an answer (OK,
 * TRANSITION_FAILED).
 *
 * A call that waits (sync, or the etcd write behind any change) is parked: it ends when the
 * mesh calls back, at the client's deadline (DEADLINE_EXCEEDED; without one, max_wait_ms), or
 * when the client cancels (the mesh operation is cancelled with it).
 *
 * Owns: the parked calls and their mesh operations. Threading: the loop thread only.
 * Lifetime: model_api_free answers every parked call UNAVAILABLE and cancels its operation;
 * free it before the mesh; the rpc server may outlive it only if it is shut down first (its
 * handlers point here). */
#ifndef MM_MODEL_API_H
#define MM_MODEL_API_H

#include "mm/error.h"

struct mesh;
struct model_api;
struct rpc_server;

#define MODEL_API_MAX_FIELDS 64
#define MODEL_API_MAX_WAIT_MS 300000u

struct vmodels;

struct model_api_config {
    struct mesh *mesh;    /* required */
    struct vmodels *vmodels; /* NULL: the vmodel methods answer UNIMPLEMENTED */
    unsigned max_wait_ms; /* a call without a deadline waits at most this; 0 = 300,000 */
};

/* Register the seven methods on s (before rpc_server_start). 0 or -errno with err. */
int model_api_new(struct rpc_server *s, const struct model_api_config *cfg,
                  struct model_api **out, struct mm_error *err);
/* NULL is ignored. See the lifetime rule above. */
void model_api_free(struct model_api *a);

/* Calls parked now (tests, shutdown logs). */
unsigned model_api_parked(const struct model_api *a);

#endif
