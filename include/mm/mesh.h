/* mesh.h - the node's part in the whole mesh: models registered and unregistered, copies placed
 * where they fit (place.h decides, placer.h's txn makes it exactly one), waiting for a copy to be
 * Loaded, failures retried elsewhere, models re-placed when their holder dies, loadNow models
 * kept loaded, and the moves away at shutdown. The model API (model_api.h) and, later, the
 * router call it; copies.h does the loading on the target.
 *
 * Everything is decided from the node's mirror of /modelmesh/<cluster>/ (instances/, models/,
 * copies/) and written by transactions conditional on what was read, so any number of nodes
 * may act on one model at once: losers re-read and re-decide (bounded), and exactly one copy
 * results. Concurrent operations on one model in one node share one placement.
 *
 * Threading: the loop thread only. Lifetime: an operation calls back exactly once unless
 * cancelled first (then never); its handle is valid until its callback starts. mesh_free
 * cancels every operation (no callback after it); free it before copies, the mirror, the
 * instance and the etcd client; not from inside one of its callbacks. */
#ifndef MM_MESH_H
#define MM_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/keys.h"
#include "mm/place.h"
#include "mm/records.h"

struct copies;
struct etcd_client;
struct instance;
struct mesh;
struct mesh_op;
struct mirror;

struct mesh_config {
    const char *cluster;
    const char *iid;                  /* this instance's id */
    struct etcd_client *etcd;
    struct mirror *mirror;            /* of /modelmesh/<cluster>/, started by the owner */
    struct instance *instance;
    struct copies *copies;            /* this node's copies (shutdown moves, local status) */
    const struct place_config *place; /* thresholds; failure expiry */
    uint64_t random_seed;             /* herd-spreading; 0 = from the clock and pid */
    unsigned max_attempts;            /* placement iterations per request; 0 = 8 */
    unsigned max_failures;            /* recent failed loads before a model is failed; 0 = 3 */
    unsigned replace_delay_ms;        /* a model's non-primary nodes re-place it after this
                                         when its primary has not; 0 = 2,000 */
    unsigned rate_check_ms;           /* copy-count checks (place_copies_decide); 0 = 10,000 */
};

int mesh_new(const struct mesh_config *cfg, struct mesh **out, struct mm_error *err);
void mesh_free(struct mesh *m);

/* A model's status as getModelStatus reports it (the proto's numbering). */
enum mesh_model_status {
    MESH_NOT_FOUND = 0,
    MESH_NOT_LOADED = 1,
    MESH_LOADING = 2,
    MESH_LOADED = 3,
    MESH_LOADING_FAILED = 4,
    MESH_UNKNOWN = 5,
};
const char *mesh_model_status_name(enum mesh_model_status s);

#define MESH_STATUS_MAX_ERRORS 8
#define MESH_STATUS_MAX_COPIES 64
struct mesh_copy_status {
    char iid[KEYS_NAME_MAX + 1];
    enum copy_state state;
    int64_t since_ms;
    uint64_t bytes_pulled, bytes_total; /* Loading: the pull's progress (records.h) */
};
/* Heap-sized (caller's), filled by mesh_status. */
struct mesh_status {
    enum mesh_model_status status;
    size_t n_errors;
    char errors[MESH_STATUS_MAX_ERRORS][512];
    size_t n_copies; /* those held, at most MESH_STATUS_MAX_COPIES; n_copies_total counts all */
    size_t n_copies_total;
    struct mesh_copy_status copies[MESH_STATUS_MAX_COPIES];
};

/* The model's status now, from the mirror: NOT_FOUND without a model record; LOADED with a
 * Loaded copy; LOADING with a Pending or Loading one; LOADING_FAILED after max_failures
 * unexpired failures (or failed on every instance that serves its type), errors = their
 * messages, newest first; else NOT_LOADED. */
void mesh_status(const struct mesh *m, const char *model_id, struct mesh_status *out);

/* status 0 or a negative errno with err naming the model and what failed:
 *   -ENOENT     no such model (NOT_FOUND)
 *   -EEXIST     registered already with other info (ALREADY_EXISTS)
 *   -EINVAL     a bad argument, err naming the field (INVALID_ARGUMENT)
 *   -EIO        the model failed to load max_failures times (the last error in err)
 *   -ENOSPC     no instance can take it now (UNAVAILABLE: retryable), err with place's reason
 *   -ETIMEDOUT  not loaded within the time given
 *   -EAGAIN     etcd unreachable (UNAVAILABLE)
 *   -EBUSY      unregister: a vmodel refers to the model (FAILED_PRECONDITION)
 * st (the status when the operation ended) is valid during the call only, may be NULL. */
typedef void (*mesh_cb)(int status, const struct mm_error *err, const struct mesh_status *st,
                        void *arg);

struct mesh_model_info {
    const char *type; /* required */
    const char *path; /* storage path */
    const char *key;  /* storage key: plain, or ModelMesh Serving's JSON form
                         {"storage_key":K,"storage_params":{..},..} (records.h
                         record_model_key) */
    const char *runtime; /* NULL or "": any instance serving the type; else only those
                            labelled rt:<runtime> (the controller's runtime choice; the model
                            API's registerModel has no such field) */
};

/* The checks registerModel makes of an id and its info: 0, or -EINVAL with err naming the
 * field (modelId, modelInfo.type, ...). */
int mesh_check_model(const char *model_id, const struct mesh_model_info *info,
                     struct mm_error *err);
/* The same checks, then the model record's type, runtime, storage_path, storage_key and
 * storage_params from info (rec's other fields untouched). 0 or -EINVAL with err. */
int mesh_info_record(const char *model_id, const struct mesh_model_info *info,
                     struct model_record *rec, struct mm_error *err);
/* Whether two model records hold the same info (type, runtime, path, key, parameters):
 * registering a model again with the same info is no change. */
bool mesh_same_info(const struct model_record *a, const struct model_record *b);
/* The last use a model registered now is given when none is asked for
 * (place_initial_last_used with this mesh's thresholds). */
int64_t mesh_initial_last_used(const struct mesh *m, bool load_now);

/* registerModel: create models/<id> (idempotent with the same info; -EEXIST with other info);
 * load_now: place a copy at once (call back once it is placed); sync: call back when it is
 * Loaded or failed (timeout_ms bounds the wait; 0 = none), and load it as load_now does (a
 * wait for Loaded needs a copy); neither: call back once the record is written and the
 * mirror has it. last_used_ms 0 = now - 1 h (load_now) or now - 6 h
 * (place_initial_last_used). Operations never call back from inside the call that started
 * them. */
int mesh_register(struct mesh *m, const char *model_id, const struct mesh_model_info *info,
                  bool load_now, bool sync, int64_t last_used_ms, int64_t timeout_ms, mesh_cb cb,
                  void *arg, struct mesh_op **out, struct mm_error *err);
/* unregisterModel: delete the model record and every copy record in one txn (the holders
 * unload); -ENOENT if absent, -EBUSY (from the mirror; at once, or after a lost txn) if a
 * vmodel refers to it. The txn is conditional on the model record as the mirror showed it when
 * no vmodel referred to it (a vmodel that starts to refer to a model re-puts its record), and
 * decided again from the mirror when it loses (at most max_attempts times, then -EAGAIN). */
int mesh_unregister(struct mesh *m, const char *model_id, mesh_cb cb, void *arg,
                    struct mesh_op **out, struct mm_error *err);
/* ensureLoaded: a copy exists, or is placed now; sync: call back when Loaded or failed. */
int mesh_ensure(struct mesh *m, const char *model_id, int64_t last_used_ms, bool sync,
                int64_t timeout_ms, mesh_cb cb, void *arg, struct mesh_op **out,
                struct mm_error *err);
/* ensureLoaded for a call that could not reach the copies on the instances exclude[0, n)
 * (their peers unreachable): as mesh_ensure (sync), except that copies on those instances do
 * not count (a Loaded one there is no copy) and none is placed there, so a copy is placed on
 * another instance unless one is live there already; calls back when a copy off them is
 * Loaded, or failed as mesh_ensure does. The copy placed is an ordinary one (the copy-count
 * checks scale it down). The exclusions of one model's waiting operations are joined (at most
 * MESH_EXCLUDE_MAX in all; more are counted as copies) and go with the last of them.
 * -EINVAL with n 0 or over MESH_EXCLUDE_MAX, or a bad id. */
#define MESH_EXCLUDE_MAX 4
int mesh_ensure_elsewhere(struct mesh *m, const char *model_id, const char *const *exclude,
                          size_t n_exclude, int64_t timeout_ms, mesh_cb cb, void *arg,
                          struct mesh_op **out, struct mm_error *err);
/* Its callback never runs. NULL is ignored. */
void mesh_op_cancel(struct mesh_op *op);

/* requests served by (or asked of) model_id (len bytes) at now_ms: the copy-count checks
 * (place_copies_decide, every rate_check_ms) weigh them; ensureLoaded counts as one. */
void mesh_note_use(struct mesh *m, const char *model_id, size_t len, uint32_t requests,
                   int64_t now_ms);
/* A source of uses counted elsewhere (the router's counters): flush(arg) runs at the start of
 * every copy-count check and calls mesh_note_use for what it counted, so that each check's
 * window holds exactly the requests served in it. NULL removes it. */
void mesh_set_use_source(struct mesh *m, void (*flush)(void *arg), void *arg);

/* Shutdown, after instance_set_shutting_down: place a copy elsewhere for every model loaded
 * here (most recently used first) that has none elsewhere, and wait until those are Loaded,
 * or timeout_ms. done runs once from the loop: 0, or -ETIMEDOUT with how many were not moved. */
int mesh_move_away(struct mesh *m, unsigned timeout_ms,
                   void (*done)(int status, size_t not_moved, void *arg), void *arg);

struct mesh_stats {
    uint64_t placements, lost_races, targets_gone, refusals_seen, failures_seen, replaced,
        etcd_round_trips;
};
void mesh_get_stats(const struct mesh *m, struct mesh_stats *out);

#endif
