/* placer.h - one placement of one model as one etcd transaction (DESIGN.md: "Placement is a
 * transaction"), so that any number of concurrent placers make exactly one copy.
 *
 * The txn compares
 *   models/<m>            mod_revision == the revision the decision was based on
 *   instances/<target>    exists (create_revision > 0) and is attached to the target's lease
 *   copies/<m>/<target>   does not exist (create_revision == 0)
 * and on success puts copies/<m>/<target> (the copy record, attached to the target's lease, so
 * it vanishes with the target) and re-puts the model record, which bumps its mod_revision: every
 * other placer that decided on the old revision loses. On failure it reads back, at the same
 * revision, the model record, the instance key and every copy of the model, so the loser can
 * re-decide without another round trip.
 *
 * Owns: one pending txn per placement (struct placer_request), nothing else.
 * Threading: the etcd client's loop thread only.
 * Lifetime: the callback runs exactly once, from the loop (never inside placer_place), unless
 * the placement is cancelled first: then it never runs. The handle is valid until the callback
 * starts or placer_cancel(). A cancelled placement may still have been executed by etcd (see
 * etcd_request_cancel): re-read before deciding again. From inside the callback the owner may
 * start placements and free the etcd client. Cancel pending placements before freeing the
 * client; a client freed with placements pending ends them with -ECANCELED. */
#ifndef MM_PLACER_H
#define MM_PLACER_H

#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/records.h"

struct etcd_client;
struct etcd_kv;
struct placer_request;

struct placer_req {
    const char *cluster;
    const char *model_id;
    int64_t model_mod_revision; /* the models/<m> mod_revision the decision was based on (> 0) */
    const char *model_value;    /* the model record to re-put (NUL-terminated JSON): the one
                                   read at model_mod_revision, or an update of it */
    const char *target_iid;     /* the chosen instance */
    int64_t target_lease;       /* its lease, from its instance record (> 0) */
    const struct copy_record *copy; /* to create: normally Pending, since, size estimate */
};

enum placer_outcome {
    PLACER_PLACED,      /* the copy exists now, created by this txn */
    PLACER_LOST_RACE,   /* the model record changed (another placement, or an update) or the
                           copy already exists: re-decide from what was read back */
    PLACER_TARGET_GONE, /* the instance key vanished, or is now under another lease (the
                           instance registered again): choose again */
};

/* What a placement ended with; valid during the callback only. */
struct placer_result {
    enum placer_outcome outcome;
    int64_t revision; /* PLACED: the txn's revision = the copy's create revision and
                         the model record's new mod_revision; else the revision the
                         read-back was taken at */
    /* Read back (LOST_RACE, TARGET_GONE), all at `revision`; empty for PLACED: */
    const struct etcd_kv *model;    /* models/<m> now (its mod_revision, value) */
    const struct etcd_kv *instance; /* instances/<target> now; NULL = gone */
    const struct etcd_kv *copies;   /* copies/<m>/... now, in key order (values undecoded) */
    size_t n_copies;
};

/* status 0 with res, or a negative errno with err naming the model and the target
 * ("placing model m1 on n2: ...") and res NULL:
 *   -ENOENT     the model record does not exist (any more): nothing to place
 *   -ECANCELED  the etcd client was freed
 *   etcd.h's errors (-EIO: sent, outcome unknown: re-read before deciding again). */
typedef void (*placer_cb)(int status, const struct mm_error *err, const struct placer_result *res,
                          void *arg);

/* Start one placement. 0 and *out (NULL allowed if never cancelled), or -EINVAL (a bad name,
 * revision, lease, copy or model record; err says which) / -ENOMEM, and cb never runs. */
int placer_place(struct etcd_client *c, const struct placer_req *req, placer_cb cb, void *arg,
                 struct placer_request **out, struct mm_error *err);
/* Its callback never runs. NULL is a no-op; not after the callback started. */
void placer_cancel(struct placer_request *p);

const char *placer_outcome_name(enum placer_outcome o);

#endif
