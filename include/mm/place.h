/* place.h - the mesh's placement decisions, pure: plain structs in, a decision out. No I/O, no
 * clock (now is an argument, epoch ms), no randomness of its own (a random value is an
 * argument), no allocation, no threads. The node feeds it views built from its registry mirror
 * and acts on the answer (a copy record transaction, an unload); docs/placement.md says why each
 * rule is what it is.
 *
 *   place_choose          where to load a copy of a model
 *   place_copies_decide   whether a model needs one copy more or one fewer
 *   place_initial_last_used, place_failure_expired   times for new models and failure records
 *
 * Ids, labels and zones are bytes with a length (compared with memcmp), as they arrive from
 * etcd. A view's pointers need only stay valid during the call. */
#ifndef MM_PLACE_H
#define MM_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct place_str {
    const char *data;
    size_t len;
};

/* Thresholds, with ModelMesh's defaults (PROTOCOLS.md's last section) unless said otherwise. */
struct place_config {
    /* where to load */
    uint64_t default_size_bytes;     /* a model of unknown size, on an instance that does not
                                        say its own: 1,000,000 (cache.h) */
    uint32_t reserve_permille;       /* unload reserve of every instance: 30 (cache.h) */
    int64_t min_churn_age_ms;        /* churn guard: 300,000 (10 x max(3 s, 90 s / 3)) */
    uint32_t shortlist;              /* choose at random among this many best: 3 (ours) */
    uint32_t shortlist_min_permille; /* ... each with at least this share of the best's free
                                        space: 500 (ours; keeps a near-full pod out) */
    /* copies */
    int64_t second_copy_min_gap_ms; /* used at two rate checks at least this far apart: 7 min */
    int64_t second_copy_max_gap_ms; /* ... and at most this far: 40 min */
    uint32_t second_copy_min_free_permille; /* cluster free space to add it: 100 (10 %) */
    uint32_t scale_up_rpm;        /* a copy more above this many requests/min per copy: 2000
                                     (0 = never scale on rate) */
    uint32_t short_free_permille; /* cluster short of space at or below: 50 (5 %) */
    int64_t extra_copy_idle_ms;   /* an extra copy is idle when unused this long: 40 min
                                     (ours: past the window that earned the second copy) */
    uint32_t max_copies;          /* 0 = as many as there are eligible instances */
    /* new models and failures */
    int64_t new_model_age_load_now_ms; /* a loadNow model is "last used" this long ago: 1 h */
    int64_t new_model_age_ms;          /* any other new model: 6 h */
    int64_t failure_expiry_ms;         /* a failed-load record expires after: 15 min */
    int64_t failure_expiry_used_ms;    /* ... or, if the model was used recently: 7.5 min */
    int64_t failure_recent_use_ms;     /* "recently": within 3 min */
};

/* Fill cfg with the defaults above. */
void place_config_init(struct place_config *cfg);

/* One instance as the placer sees it: its instance record (registry), plus what the caller
 * knows about it. */
struct place_instance {
    struct place_str id;
    const struct place_str *labels; /* what it serves: "mt:sklearn", "rt:mm-runtime", ... */
    size_t n_labels;
    struct place_str zone;       /* empty = unknown */
    uint64_t capacity_bytes;     /* 0 = can hold nothing */
    uint64_t used_bytes;         /* may exceed capacity in a stale view: treated as full */
    uint32_t loaded, loading;    /* copies held / being loaded */
    int64_t oldest_used_ms;      /* last use of its least recently used copy; 0 = none */
    uint64_t default_size_bytes; /* what a model of unknown size counts for here: its
                                    runtime's default model size; 0 = not known
                                    (cfg->default_size_bytes) */
    bool shutting_down;
};

/* The model to place. */
struct place_model {
    const struct place_str *labels; /* every one must be among the instance's: "mt:sklearn" */
    size_t n_labels;
    uint64_t size_bytes;               /* estimate; 0 = unknown: on each instance, that
                                          instance's default_size_bytes */
    const struct place_str *failed_on; /* instances where its load failed, unexpired
                                          (place_failure_expired): never chosen */
    size_t n_failed_on;
    const struct place_str *held_by; /* instances that hold a copy in any state: never chosen */
    size_t n_held_by;
    const struct place_str *copy_zones; /* zones of its existing copies: other zones first */
    size_t n_copy_zones;
};

enum place_reason {
    PLACE_OK = 0,
    PLACE_NO_INSTANCES,    /* the list is empty */
    PLACE_NO_TYPE,         /* no instance serves the model's labels (NoSupportingRuntime) */
    PLACE_CHURN_GUARDED,   /* those that serve it are full of recently used copies: retry */
    PLACE_SHUTTING_DOWN,   /* those that serve it are shutting down: retry */
    PLACE_FAILED_RECENTLY, /* it failed recently on every other instance that serves it */
    PLACE_TOO_BIG,         /* larger than any serving instance could hold, even empty */
    PLACE_ALL_HOLD_COPY,   /* every serving instance already holds a copy */
};

/* The answer. When no instance qualifies, every instance is counted once, under the first rule
 * that excluded it, in the order of the fields, and reason names the first non-zero count in
 * the enum's order from PLACE_CHURN_GUARDED (the retryable ones first). On success the counts
 * cover only the instances examined in full: one that ranks below a full short list is passed
 * over without its labels and ids being compared. */
struct place_choice {
    size_t index;         /* the chosen instance: instances[index] (on success) */
    bool must_evict;      /* it has too little free space: it will evict its oldest copies */
    size_t shortlist_len; /* how many equally good instances the choice was made among */
    enum place_reason reason;
    size_t n_wrong_type, n_holding, n_failed, n_shutting_down, n_too_small, n_churn_guarded;
};

/* The size a model of estimate size_bytes (0 = unknown) counts for on instance in (NULL = no
 * instance known): size_bytes, else the instance's default, else cfg's. */
uint64_t place_size_on(const struct place_config *cfg, const struct place_instance *in,
                       uint64_t size_bytes);

/* Where to load a copy of m (of unknown size: each instance judges it at its own default,
 * place_size_on). The rules, in order:
 *   1. only instances with all of m's labels, that hold no copy of m, where m has not failed
 *      recently, that are not shutting down (they are moving their copies away), and whose
 *      capacity - reserve could hold m at all;
 *   2. instances with enough free space (capacity - reserve - used >= size) beat those that
 *      must evict; one that must evict is excluded when its oldest copy was used within
 *      min_churn_age_ms (it would refuse: cache_plan's -EBUSY), as ModelMesh does, or when it
 *      has no loaded copy to evict (loads in progress only);
 *   3. within a class: an instance in a zone that holds no copy of m yet beats one that does;
 *      then most free space (with enough space) or oldest LRU (must evict: evict the coldest
 *      copies in the cluster); then oldest LRU, then most free space;
 *   4. the best cfg->shortlist (1..16; 0 counts as 1) of that order (those with enough space
 *      also need at least shortlist_min_permille of the best one's free space) form a short
 *      list, and `random` picks one uniformly: placers deciding at once on the same view
 *      with different random values spread over the list instead of all choosing the one
 *      best instance.
 * O(n) time (one pass, the short list kept in place; labels and ids are compared only for
 * instances that would enter it), no allocation.
 * 0 and out->index; -ENOSPC when no instance qualifies (out->reason and the counts say why);
 * -EINVAL when n > 0 and instances is NULL. */
int place_choose(const struct place_config *cfg, const struct place_model *m,
                 const struct place_instance *instances, size_t n, int64_t now_ms, uint64_t random,
                 struct place_choice *out);

/* A constant name for a reason ("no instance serves the model's type"). */
const char *place_reason_str(enum place_reason reason);

/* Fill err with why no instance was chosen for model_id, counts included ("model m1: no
 * instance can load it: all 3 serving instances are full of copies used within the churn age
 * (of 5: 2 wrong type, ...)"). Returns -ENOSPC, or 0 when out->reason is PLACE_OK. */
int place_choice_error(const struct place_choice *c, const char *model_id, size_t id_len,
                       struct mm_error *err);

/* What the caller knows about one model's use at a rate check (the node checks every 10 s). */
struct place_usage {
    uint32_t copies;             /* copies loaded or loading */
    uint32_t eligible_instances; /* instances that serve its type and are not shutting down */
    uint64_t requests_per_min;   /* all its copies together, over the last rate window */
    bool used_since_last_check;  /* a request since the previous rate check */
    int64_t last_used_ms;
    int64_t prior_use_check_ms; /* the earliest rate check within second_copy_max_gap_ms of
                                   now that saw it used; 0 = none */
};

/* The cluster's space: sums over the instances that serve the model's type. */
struct place_cluster {
    uint64_t capacity_bytes;
    uint64_t used_bytes;
};

enum place_copies_action { PLACE_COPIES_KEEP = 0, PLACE_COPIES_ADD, PLACE_COPIES_REMOVE };

struct place_copies {
    enum place_copies_action action;
    uint32_t target; /* copies wanted after this step: one step at a time */
    const char *why; /* a constant sentence for logs */
};

/* One copy more or fewer for a model, one step per rate check:
 *   add (not above max_copies or eligible_instances):
 *     - rate: requests_per_min > copies x scale_up_rpm, while the cluster is not short of
 *       space (free > short_free_permille);
 *     - sustained use: one copy, used since the last check and at a prior check
 *       second_copy_min_gap_ms..second_copy_max_gap_ms ago, with the cluster's free space at
 *       least second_copy_min_free_permille;
 *   remove, only when the cluster is short of space (free <= short_free_permille), with more
 *   than one copy: when the model has been idle extra_copy_idle_ms, or when with one copy
 *   fewer each copy would still see under half of scale_up_rpm (hysteresis: no flapping);
 *   else keep. No copy at all: keep (loading on demand is the router's).
 * Which copy to remove is the caller's (the node holding it that is shortest of space). */
void place_copies_decide(const struct place_config *cfg, const struct place_usage *u,
                         const struct place_cluster *cl, int64_t now_ms, struct place_copies *out);

/* The last-use time a newly registered model starts with: now - 1 h (loadNow) or now - 6 h,
 * so that its copy is older than any copy used since and never evicts recently used ones. */
int64_t place_initial_last_used(const struct place_config *cfg, int64_t now_ms, bool load_now);

/* The rendezvous score of (name, instance iid), bytes with lengths: the same on every node, so
 * every node agrees that the live instance with the highest score is the name's primary (the
 * one that acts at once on it; the others only after a delay). */
uint64_t place_rendezvous(const char *name, size_t len, const char *iid, size_t iid_len);

/* Whether a failed-load record made at failed_ms has expired: after failure_expiry_ms, or
 * failure_expiry_used_ms if the model was used within failure_recent_use_ms of now. */
bool place_failure_expired(const struct place_config *cfg, int64_t failed_ms,
                           int64_t model_last_used_ms, int64_t now_ms);

#endif
