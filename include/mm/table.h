/* table.h - the routing table of a node or a gateway, kept from the registry mirror: every
 * model's copies (copies/<model>/<iid>: their state), the holders' internal addresses
 * (instances/<iid>), the vmodels' active model ids (vmodels/<name>), the requests in flight on
 * each copy, and the calls parked until a model has a Loaded copy (docs/routing.md).
 *
 * Choosing a copy (table_pick): the local one first, when this node's copies.h holds it Loaded
 * (copies_request_begin: the runtime's own truth, not the record); else, among the Loaded
 * copies of live instances with an address, the better of two random choices by requests in
 * flight (instances shutting down only when there is nothing else).
 *
 * Parking (table_park): a call waits on its model's entry; the copies/ events wake every waiter
 * of a model when one of its copies becomes Loaded (no polling). The first waiter of a model
 * starts one mesh_ensure (sync) for all of them, which places a copy when there is none and
 * says when the model cannot be loaded (NOT_FOUND, no instance serves its type, failed to
 * load): every waiter is then woken with that error. The last waiter to leave cancels it.
 *
 * Owns: its entries, its mirror subscriptions, the mesh operations it starts. Channels come
 * from rpc_channel_for (the rpc context owns them). Threading: the loop thread only.
 * Lifetime: table_free wakes nobody (the owner ends its parked calls first) and cancels its
 * mesh operations; free it before the mesh, the copies, the mirror and the rpc context. */
#ifndef MM_TABLE_H
#define MM_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/keys.h"

struct copies;
struct mesh;
struct metrics;
struct mirror;
struct rpc_channel;
struct rpc_context;
struct table;
struct table_model;

#define TABLE_DEFAULT_MAX_PARKED 10000u

struct table_config {
    const char *cluster;
    const char *iid;          /* this node's instance id; NULL for a gateway (nothing local) */
    struct mirror *mirror;    /* of /modelmesh/<cluster>/, started by the owner */
    struct mesh *mesh;        /* placements for parked calls */
    struct rpc_context *rpc;  /* channels to the runtime and the peers */
    const char *runtime;      /* the local runtime's inference address (iid set) */
    struct copies *copies;    /* the local copies (iid set) */
    unsigned max_parked;      /* calls parked at once; 0 = TABLE_DEFAULT_MAX_PARKED */
    struct metrics *metrics;  /* NULL = none; else modelmesh_cache_miss_milliseconds{modelId}:
                                 per call, from its first park to the wake that says its model
                                 has a Loaded copy (once per call, however often it parks). It
                                 must outlive the table */
};

int table_new(const struct table_config *cfg, struct table **out, struct mm_error *err);
/* NULL is ignored. See the lifetime rule above. */
void table_free(struct table *t);
/* Hand the uses the fast path counted to the pod's LRU and the mesh now (they are also handed
 * every second); for mesh_set_use_source. arg: the table. */
void table_flush_uses(void *arg);

/* The model id name[0, len) stands for: the active model of the vmodel of that name when
 * as_vmodel and there is one, else the name itself. out holds KEYS_NAME_MAX + 1 bytes (the
 * name is checked by the caller: at most KEYS_NAME_MAX). *vmodel tells which (may be NULL). */
size_t table_resolve(const struct table *t, const char *name, size_t len, bool as_vmodel,
                     char *out, bool *vmodel);

/* A copy chosen to serve one request. */
struct table_target {
    struct rpc_channel *ch;   /* the runtime (local) or the holder's internal address */
    bool local;
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
};

/* Choose a Loaded copy of model id[0, len) (see the top), not on instance exclude (NULL or
 * exclude_len 0: none excluded), and count a request in flight on it (local: also the pod's
 * LRU). local_only: this node's copy or nothing. 0 and *out; -ENOENT when there is none. */
int table_pick(struct table *t, const char *id, size_t len, const char *exclude,
               size_t exclude_len, bool local_only, struct table_target *out);
/* The request picked with tg ended: it is no longer in flight. */
void table_release(struct table *t, const char *id, size_t len, const struct table_target *tg);

/* A parked call, embedded in its owner. wake runs once, on the loop, never from inside
 * table_park: status 0 when the model has a Loaded copy now (pick again; if that fails, park
 * again), or the reason it cannot be served: -ENOENT no such model, -ENOSPC no instance can
 * take it (why: place's reason), -EIO it failed to load (why: the last failure), -EAGAIN etcd
 * unreachable, -ENOMEM. why is valid during the call only. The waiter is out of the table when
 * wake runs; the callback may free it, park it again, or free the table's other waiters. */
struct table_waiter {
    void (*wake)(struct table_waiter *w, int status, const char *why);
    struct table_waiter *prev, *next;
    struct table_model *model; /* NULL when not parked */
    int64_t parked_ns;         /* the table's: zero it once per call, before its first park
                                  (monotonic ns of the first park; -1 once its cache miss is
                                  recorded) */
};

/* Park w on model id[0, len) (see the top). place: start the model's mesh_ensure if none runs;
 * without, only the copies' events wake it (a call whose copy failed it waits for the registry
 * to change: the mesh, which saw the copy Loaded, has nothing to do yet). place with exclude
 * (exclude_len > 0): the copy on instance exclude could not be reached (its peer unreachable):
 * a copy is placed on another instance (mesh_ensure_elsewhere) unless one is live there, at
 * most one such placement per model every 2 s, kept until it ends (not cancelled with the
 * waiters; a failed one wakes nobody: the waiters wait on, as without it). 0; -EBUSY when
 * max_parked calls wait already; -ENOMEM; mesh_ensure's refusal (-EINVAL for a name that is no
 * model id). err says why. */
int table_park(struct table *t, const char *id, size_t len, bool place, const char *exclude,
               size_t exclude_len, struct table_waiter *w, struct mm_error *err);
/* Leave without being woken (the call ended). Parked or not: no-op when not parked. */
void table_unpark(struct table *t, struct table_waiter *w);

/* --- the fast path: route.c's handlers on the completion-queue thread (rpc.h) ---
 * After every change that matters to a pick (a copy's state, an instance's address or
 * shutting-down mark, a vmodel), the table publishes an immutable snapshot (rpc_snapshot: at
 * most once per loop iteration) of the vmodels' active ids and every model's Loaded copies
 * with their channels, this node's own marked local. The CQ thread reads it without locks.
 * Requests in flight and uses are counted per copy in counters (atomics) that outlive the
 * snapshots naming them and the forwards using them; once a second the loop hands the uses to
 * the mesh (mesh_note_use) and the local ones to the pod's LRU (copies.h). */
struct table_snap;
struct table_count;

struct table_fast_target {
    struct rpc_channel *ch;
    struct table_count *count; /* taken by the pick: table_count_done once the forward ends */
    bool local;
};

/* The snapshot published last, or NULL before the first. CQ thread (inside a fast handler or
 * forward callback: valid until it returns) or loop. */
const struct table_snap *table_snap(const struct table *t);
/* table_resolve on the snapshot. Any thread, as table_snap. */
size_t table_snap_resolve(const struct table_snap *s, const char *name, size_t len,
                          bool as_vmodel, char *out);
/* table_pick on the snapshot: the local copy first, else the better of two random choices by
 * requests in flight (live instances first), not the copy counted by exclude (may be NULL);
 * local_only: the local copy or nothing. rng: the caller's xorshift state (one per thread,
 * non-zero). 0 and *out, the request counted in flight and as a use; -ENOENT. */
int table_snap_pick(const struct table_snap *s, const char *id, size_t len,
                    const struct table_count *exclude, bool local_only, uint64_t *rng,
                    struct table_fast_target *out);
/* The fast path's random state (xorshift, non-zero): the CQ thread's alone. */
uint64_t *table_fast_rng(struct table *t);
/* The table a counter belongs to (immutable; valid while the table is). Any thread. */
struct table *table_count_table(const struct table_count *c);
/* The forward counted by c ended. Any thread. */
void table_count_done(struct table_count *c);

struct table_stats {
    size_t models, instances, vmodels, parked;
    uint64_t picks_local, picks_remote, parks, wakes, placements; /* on the loop */
    uint64_t failovers; /* placements elsewhere asked for (table_park with exclude) */
    uint64_t picks_fast;                                          /* on the CQ thread */
};
void table_get_stats(const struct table *t, struct table_stats *out);

#endif
