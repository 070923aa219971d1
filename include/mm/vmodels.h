/* vmodels.h - vmodels: a stable name (an InferenceService) pointing at a concrete model id,
 * and the transitions that move it to another id without a gap (setVModel, deleteVModel,
 * getVModelStatus of mmesh.ModelMesh, with ModelMesh's rules; docs/node.md "VModels").
 *
 * A vmodel record (vmodels/<name>) holds the active model id (the one requests go to), the
 * target id and the owner. active == target: DEFINED. active != target: a transition; the
 * active model keeps serving until the target has a Loaded copy, then one txn, conditional on
 * the vmodel record's revision (and on that copy's), makes the target active. While the target
 * has failed to load (the mesh's LOADING_FAILED) the transition is TRANSITION_FAILED and the
 * active model still serves; a failure that expires lets it try again.
 *
 * Any node drives any transition: every node follows vmodels/, models/ and copies/ through its
 * mirror; the vmodel's primary (rendezvous hash of its name and the live instance ids, as
 * mesh.c chooses a model's) acts at once, the others after drive_delay_ms if there is still
 * something to do, the node that took the setVModel at once. Acting is idempotent: a copy is
 * placed through mesh_ensure (exactly one), the switch is a conditional txn. A model created by
 * setVModel with autoDeleteTargetModel (model record auto_delete) is unregistered once no
 * vmodel refers to it (after a switch, a retarget, a deleteVModel), by the model's primary
 * after delete_grace_ms or any node after the delay more, conditional on the model record's
 * revision; every write that adds a reference re-puts the model record, so a reference added
 * meanwhile fails the delete.
 *
 * Threading: the loop thread only. Lifetime: an operation calls back exactly once, never from
 * inside the call that started it, unless cancelled first (then never); its handle is valid
 * until its callback starts. vmodels_free cancels every operation and transition (no callback
 * after it); free it before the mesh, the mirror and the etcd client, not from inside one of
 * its callbacks. */
#ifndef MM_VMODELS_H
#define MM_VMODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/keys.h"
#include "mm/mesh.h"

struct etcd_client;
struct mirror;
struct vmodels;
struct vmodels_op;

struct vmodels_config {
    const char *cluster;
    const char *iid;         /* this node's instance id (a gateway: a name of its own, which
                                is never primary) */
    struct etcd_client *etcd;
    struct mirror *mirror;   /* of /modelmesh/<cluster>/, started by the owner */
    struct mesh *mesh;
    unsigned drive_delay_ms; /* non-primaries act after this; 0 = 2,000 */
    unsigned max_attempts;   /* txns of one setVModel / deleteVModel that lost a race; 0 = 8 */
    unsigned retry_ms;       /* a target that could not be placed (no room, etcd away) is
                                tried again after this, doubling to 30 s; 0 = 1,000 */
    unsigned delete_grace_ms; /* an auto-delete model no vmodel refers to any more is deleted
                                this long after (its primary; the others drive_delay_ms
                                later): requests routed before the switch finish; 0 = 1,000 */
};

int vmodels_new(const struct vmodels_config *cfg, struct vmodels **out, struct mm_error *err);
void vmodels_free(struct vmodels *v);

/* The proto's VModelStatus numbering. */
enum vmodel_state {
    VMODEL_NOT_FOUND = 0,
    VMODEL_DEFINED = 1,
    VMODEL_TRANSITIONING = 2,
    VMODEL_TRANSITION_FAILED = 3,
};
const char *vmodel_state_name(enum vmodel_state s);

/* Heap-sized (caller's; two mesh_status inside). */
struct vmodel_status {
    enum vmodel_state state;
    char active_id[KEYS_NAME_MAX + 1];
    char target_id[KEYS_NAME_MAX + 1];
    char owner[128];
    struct mesh_status active; /* the active model's status */
    bool has_target;           /* in a transition: target is set */
    struct mesh_status target; /* as ModelMesh reads it: LOADING, or LOADING_FAILED (or
                                  NOT_FOUND, unexpected) */
};

/* The vmodel's status now, from the mirror; NOT_FOUND (everything empty) when there is no such
 * vmodel or owner (non-empty) is not its owner, as ModelMesh answers. */
void vmodels_status(struct vmodels *v, const char *vmodel_id, const char *owner,
                    struct vmodel_status *out);

/* status 0 (st: the vmodel's status then), or a negative errno with err (st NULL):
 *   -EINVAL     a bad argument, err naming it (INVALID_ARGUMENT)
 *   -ENOENT     "Target model T not found" (no modelInfo), "vmodel V not found" (updateOnly)
 *   -EEXIST     "vmodel V already exists with different owner \"O\"", "Target model T already
 *               exists with different attribute values" (ALREADY_EXISTS)
 *   -EBUSY      expectedTargetModelId does not match (FAILED_PRECONDITION)
 *   -ENOSPC     no instance can take the target now (UNAVAILABLE), a load asked for
 *   -EAGAIN     etcd unreachable, or still losing races after max_attempts (UNAVAILABLE)
 *   -ETIMEDOUT  not done within the time given */
typedef void (*vmodels_cb)(int status, const struct mm_error *err, const struct vmodel_status *st,
                           void *arg);

struct vmodel_set_req {
    const char *vmodel_id;
    const char *target_id;
    const struct mesh_model_info *info; /* NULL: the target must be registered already */
    bool update_only;                   /* the vmodel must exist */
    bool auto_delete;                   /* a target created here is deleted with its last
                                           reference */
    bool load_now;                      /* load the target now (no transition: at once) */
    bool force;                         /* make the target active at once, loaded or not */
    bool sync;                          /* a transition: call back once it ended (switched,
                                           failed, retargeted or deleted); none: with info,
                                           once the target is loaded (with load_now) */
    const char *expected_target_id;     /* NULL or "": no expectation */
    const char *owner;                  /* NULL or "": none */
};

/* setVModel. One read of the vmodel and the target model (etcd), one txn writing both (the
 * target created from info if absent), conditional on what was read; decided again from what a
 * losing txn read back. Then, once the mirror has it: a transition is driven (and waited for
 * with sync); without one, the target is loaded if load_now (or if the active model it replaced
 * at once was loaded). timeout_ms bounds the whole (0: none). */
int vmodels_set(struct vmodels *v, const struct vmodel_set_req *req, int64_t timeout_ms,
                vmodels_cb cb, void *arg, struct vmodels_op **out, struct mm_error *err);
/* deleteVModel: absent, or owner (non-empty) not its owner: done, as ModelMesh answers. Else
 * the record deleted (conditional on its revision); auto-delete models follow. st is NULL. */
int vmodels_delete(struct vmodels *v, const char *vmodel_id, const char *owner,
                   int64_t timeout_ms, vmodels_cb cb, void *arg, struct vmodels_op **out,
                   struct mm_error *err);
/* getVModelStatus of a vmodel the mirror does not have (set a moment ago on another node?):
 * one read from etcd; if it is there, the callback comes once the mirror has it, with its
 * status; if not, with NOT_FOUND. */
int vmodels_status_read(struct vmodels *v, const char *vmodel_id, const char *owner,
                        int64_t timeout_ms, vmodels_cb cb, void *arg, struct vmodels_op **out,
                        struct mm_error *err);
/* Its callback never runs. NULL is ignored. */
void vmodels_op_cancel(struct vmodels_op *op);

struct vmodels_stats {
    uint64_t switches;      /* transitions this node completed (its txn won) */
    uint64_t switch_lost;   /* switch txns that lost (someone else did it, or things changed) */
    uint64_t auto_deleted;  /* models this node unregistered as no vmodel referred to them */
    uint64_t ensures;       /* targets this node asked the mesh to place */
};
void vmodels_get_stats(const struct vmodels *v, struct vmodels_stats *out);

#endif
