/* cache.h - one pod's model cache, as accounting: which copies it holds, their sizes, their
 * last-use order (lru.h), and what to evict so that a load fits. Pure: no I/O, no clock (times
 * are arguments, epoch ms), no threads; one owner (the node's loop).
 *
 * Invariants, kept by every call (a call that would break one fails and changes nothing):
 *   - used bytes (the sum of the entries' sizes) never exceed capacity;
 *   - a load is admitted only within capacity - reserve: the reserve (ModelMesh's unload
 *     buffer, a few % of capacity) holds the memory of copies still unloading and absorbs
 *     size estimates that the runtime corrects upwards after the load (cache_set_size);
 *   - an entry with requests in flight or a load in progress is never chosen for eviction.
 *
 * Sizes: the runtime's measured size after load beats a predicted size (predictModelSize),
 * which beats the runtime's default model size. A size from a weaker source never replaces one
 * from a stronger source. */
#ifndef MM_CACHE_H
#define MM_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/lru.h"

/* The common runtime adapters' default model size, when the runtime reports none. */
#define CACHE_DEFAULT_SIZE_BYTES 1000000ULL
/* Unload reserve, in thousandths of capacity: 3 %. */
#define CACHE_DEFAULT_RESERVE_PERMILLE 30u
/* The load timeout ModelMesh Serving's runtimes report (90 s). */
#define CACHE_DEFAULT_LOAD_TIMEOUT_MS 90000u

enum cache_size_source {
    CACHE_SIZE_DEFAULT = 0, /* the runtime's default model size */
    CACHE_SIZE_PREDICTED,   /* predictModelSize, or the registry's estimate */
    CACHE_SIZE_RUNTIME,     /* loadModel's or modelSize's answer after the load */
};

struct cache_config {
    uint64_t capacity_bytes;     /* runtimeStatus capacityInBytes; 0 = admits nothing */
    uint64_t default_size_bytes; /* runtimeStatus defaultModelSizeInBytes; 0 = 1,000,000 */
    uint32_t reserve_permille;   /* unload reserve, thousandths of capacity (<= 1000); 30 */
    int64_t min_churn_age_ms;    /* a copy used more recently is not evicted; 300,000 */
};

/* The defaults above for a runtime with this capacity, default size and load timeout (0 = the
 * defaults' 1,000,000 bytes and 90 s): min churn age = cache_min_churn_age_ms(timeout). */
void cache_config_init(struct cache_config *cfg, uint64_t capacity_bytes,
                       uint64_t default_size_bytes, uint32_t load_timeout_ms);

/* ModelMesh's minimum churn age: 10 x the time after which a load is assumed done,
 * max(3 s, load timeout / 3). 300,000 ms at a 90 s timeout. */
int64_t cache_min_churn_age_ms(uint32_t load_timeout_ms);

/* The reserve of a pod of this capacity, and the bytes a load may still take there
 * (capacity - reserve - used, or 0). The placer (place.h) judges instance views with these
 * same two functions, so that it and the pod agree on what fits. Inline: the placer calls them
 * once per instance. */
static inline uint64_t cache_reserve_bytes(uint64_t capacity_bytes, uint32_t reserve_permille)
{
    if (reserve_permille >= 1000)
        return capacity_bytes;
    /* Split so that capacities near UINT64_MAX cannot overflow the product. */
    return capacity_bytes / 1000 * reserve_permille +
           capacity_bytes % 1000 * reserve_permille / 1000;
}

static inline uint64_t cache_load_free(uint64_t capacity_bytes, uint64_t used_bytes,
                                       uint32_t reserve_permille)
{
    uint64_t limit = capacity_bytes - cache_reserve_bytes(capacity_bytes, reserve_permille);
    return used_bytes < limit ? limit - used_bytes : 0;
}

struct cache;

/* One copy held by the pod. The cache allocates it (cache_add) and frees it (cache_remove,
 * cache_free). Callers read every field; they write only inflight, loading and user. */
struct cache_entry {
    struct lru_node lru;                /* key = id, lru.last_used_ms = last use (epoch ms) */
    uint64_t size_bytes;                /* the size accounted for this copy */
    enum cache_size_source size_source; /* where size_bytes came from */
    uint32_t inflight;                  /* requests in flight (the caller counts them) */
    bool loading;                       /* a load in progress (the caller sets and clears it) */
    void *user;                         /* the caller's copy state */
    char id[];                          /* the model id, id_len bytes + a NUL for logs */
};

static inline size_t cache_entry_id_len(const struct cache_entry *e)
{
    return e->lru.key_len;
}

static inline int64_t cache_entry_last_used(const struct cache_entry *e)
{
    return e->lru.last_used_ms;
}

/* A cache with this config (copied). hash_seed: a random value (see lru_create).
 * 0, -EINVAL (reserve_permille > 1000, min_churn_age_ms < 0) or -ENOMEM. */
int cache_create(struct cache **out, const struct cache_config *cfg, uint64_t hash_seed);

/* Free the cache and every entry still in it. */
void cache_free(struct cache *c);

/* The size a load is accounted at before the runtime measures it: predicted if non-zero, else
 * the default. */
uint64_t cache_load_size(const struct cache *c, uint64_t predicted_bytes,
                         enum cache_size_source *source);

/* Add a copy of id (id_len bytes, 1..) of size_bytes (0 = the default size, source DEFAULT)
 * used last at last_used_ms (now for a load; see place_initial_last_used for a new model).
 * 0 and *out (may be NULL); -EEXIST (id present), -ENOSPC (used + size would exceed
 * capacity - reserve: evict first, see cache_plan), -EINVAL (empty id), -ENOMEM. */
int cache_add(struct cache *c, const char *id, size_t id_len, uint64_t size_bytes,
              enum cache_size_source source, int64_t last_used_ms, struct cache_entry **out);

/* Correct an entry's size (a prediction, or the runtime's measure after load). A source weaker
 * than the entry's, or size_bytes == 0, changes nothing and returns 0. Growth may use the
 * reserve but never capacity: -ENOSPC when used - old + new > capacity, nothing changed (evict
 * with cache_plan(c, growth, e, ...) and retry, or unload the copy). */
int cache_set_size(struct cache *c, struct cache_entry *e, uint64_t size_bytes,
                   enum cache_size_source source);

struct cache_entry *cache_find(const struct cache *c, const char *id, size_t id_len);
void cache_touch(struct cache *c, struct cache_entry *e, int64_t now_ms);

/* Remove and free e; its bytes are free at once (the reserve covers the unload's lag). */
void cache_remove(struct cache *c, struct cache_entry *e);

/* Walks in last-use order (shutdown moves the newest first; eviction takes the oldest). */
struct cache_entry *cache_oldest(const struct cache *c);
struct cache_entry *cache_newest(const struct cache *c);
struct cache_entry *cache_older(const struct cache_entry *e);
struct cache_entry *cache_newer(const struct cache_entry *e);

/* What the instance record publishes. O(copies): the loading count is read from the entries. */
struct cache_stats {
    uint64_t capacity_bytes;
    uint64_t used_bytes;
    uint64_t free_bytes;    /* what a load may still take: cache_load_free() */
    size_t count;           /* copies held (loaded or loading) */
    size_t loading;         /* of which loading */
    int64_t oldest_used_ms; /* last use of the least recently used copy; 0 = none */
    bool full;              /* free_bytes < the default model size: a load must evict */
};
void cache_stats(const struct cache *c, struct cache_stats *out);

/* Eviction plan: which copies to evict, oldest first, so that need_bytes more fit within
 * capacity - reserve (or, with keep set, so that keep may grow by need_bytes: keep is never a
 * victim). Skips copies with requests in flight or loading. Churn guard (ModelMesh's "cache
 * churn threshold exceeded", applied to every victim rather than only the oldest copy): a copy
 * used within min_churn_age_ms of now_ms is never a victim, so a pod busy with recently used
 * copies refuses and the placer looks elsewhere.
 * Returns 0 with victims[0..plan->n_victims) (0 when it fits as is), or:
 *   -E2BIG   need_bytes exceeds what the pod could ever admit (capacity - reserve, or capacity
 *            when growing keep), even empty;
 *   -EBUSY   it would fit only by evicting copies younger than the churn age;
 *   -ENOSPC  it would not fit even so: too much is in flight or loading;
 *   -ENOBUFS more than max_victims victims are needed (plan->n_victims says how many).
 * On errors other than -ENOBUFS the victims array holds nothing useful.
 * plan->freed_bytes is what the victims free; plan->blocking is, for -EBUSY, the oldest
 * copy the guard refused to evict (else NULL). The cache is unchanged: the caller removes the
 * victims (cache_remove) once it has noted what to unload. */
struct cache_plan {
    size_t n_victims;
    uint64_t freed_bytes;
    const struct cache_entry *blocking;
};
int cache_plan(const struct cache *c, uint64_t need_bytes, const struct cache_entry *keep,
               int64_t now_ms, struct cache_plan *plan, struct cache_entry **victims,
               size_t max_victims);

#endif
