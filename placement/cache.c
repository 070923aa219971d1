/* cache.c - one pod's cache accounting on top of lru.c (see cache.h for the invariants). */
#include "mm/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cache {
    struct cache_config cfg;
    struct lru *lru;
    uint64_t used;
    uint64_t reserve;
};

void cache_config_init(struct cache_config *cfg, uint64_t capacity_bytes,
                       uint64_t default_size_bytes, uint32_t load_timeout_ms)
{
    cfg->capacity_bytes = capacity_bytes;
    cfg->default_size_bytes = default_size_bytes ? default_size_bytes : CACHE_DEFAULT_SIZE_BYTES;
    cfg->reserve_permille = CACHE_DEFAULT_RESERVE_PERMILLE;
    cfg->min_churn_age_ms =
        cache_min_churn_age_ms(load_timeout_ms ? load_timeout_ms : CACHE_DEFAULT_LOAD_TIMEOUT_MS);
}

int64_t cache_min_churn_age_ms(uint32_t load_timeout_ms)
{
    int64_t assumed_loaded = load_timeout_ms / 3;
    if (assumed_loaded < 3000)
        assumed_loaded = 3000;
    return 10 * assumed_loaded;
}

int cache_create(struct cache **out, const struct cache_config *cfg, uint64_t hash_seed)
{
    if (cfg->reserve_permille > 1000 || cfg->min_churn_age_ms < 0)
        return -EINVAL;
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rc = lru_create(&c->lru, hash_seed);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->cfg = *cfg;
    if (!c->cfg.default_size_bytes)
        c->cfg.default_size_bytes = CACHE_DEFAULT_SIZE_BYTES;
    c->reserve = cache_reserve_bytes(cfg->capacity_bytes, cfg->reserve_permille);
    *out = c;
    return 0;
}

static struct cache_entry *entry_of(struct lru_node *n)
{
    return n ? lru_entry(n, struct cache_entry, lru) : NULL;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    struct lru_node *n = lru_oldest(c->lru);
    while (n) {
        struct lru_node *next = lru_newer(n);
        free(entry_of(n));
        n = next;
    }
    lru_free(c->lru);
    free(c);
}

uint64_t cache_load_size(const struct cache *c, uint64_t predicted_bytes,
                         enum cache_size_source *source)
{
    if (predicted_bytes) {
        if (source)
            *source = CACHE_SIZE_PREDICTED;
        return predicted_bytes;
    }
    if (source)
        *source = CACHE_SIZE_DEFAULT;
    return c->cfg.default_size_bytes;
}

/* What a load may still take: within capacity - reserve. */
static uint64_t admit_free(const struct cache *c)
{
    uint64_t limit = c->cfg.capacity_bytes - c->reserve;
    return c->used < limit ? limit - c->used : 0;
}

int cache_add(struct cache *c, const char *id, size_t id_len, uint64_t size_bytes,
              enum cache_size_source source, int64_t last_used_ms, struct cache_entry **out)
{
    if (id_len == 0)
        return -EINVAL;
    if (size_bytes == 0) {
        size_bytes = c->cfg.default_size_bytes;
        source = CACHE_SIZE_DEFAULT;
    }
    if (lru_find(c->lru, id, id_len))
        return -EEXIST;
    if (size_bytes > admit_free(c))
        return -ENOSPC;
    struct cache_entry *e = calloc(1, sizeof(*e) + id_len + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->id, id, id_len);
    e->lru.key = e->id;
    e->lru.key_len = id_len;
    e->size_bytes = size_bytes;
    e->size_source = source;
    int rc = lru_insert(c->lru, &e->lru, last_used_ms);
    if (rc < 0) {
        free(e);
        return rc;
    }
    c->used += size_bytes;
    if (out)
        *out = e;
    return 0;
}

int cache_set_size(struct cache *c, struct cache_entry *e, uint64_t size_bytes,
                   enum cache_size_source source)
{
    if (size_bytes == 0 || source < e->size_source)
        return 0;
    uint64_t others = c->used - e->size_bytes;
    if (size_bytes > c->cfg.capacity_bytes - others)
        return -ENOSPC;
    c->used = others + size_bytes;
    e->size_bytes = size_bytes;
    e->size_source = source;
    return 0;
}

struct cache_entry *cache_find(const struct cache *c, const char *id, size_t id_len)
{
    return entry_of(lru_find(c->lru, id, id_len));
}

void cache_touch(struct cache *c, struct cache_entry *e, int64_t now_ms)
{
    lru_touch(c->lru, &e->lru, now_ms);
}

void cache_remove(struct cache *c, struct cache_entry *e)
{
    lru_remove(c->lru, &e->lru);
    c->used -= e->size_bytes;
    free(e);
}

struct cache_entry *cache_oldest(const struct cache *c)
{
    return entry_of(lru_oldest(c->lru));
}

struct cache_entry *cache_newest(const struct cache *c)
{
    return entry_of(lru_newest(c->lru));
}

struct cache_entry *cache_older(const struct cache_entry *e)
{
    return entry_of(lru_older(&e->lru));
}

struct cache_entry *cache_newer(const struct cache_entry *e)
{
    return entry_of(lru_newer(&e->lru));
}

void cache_stats(const struct cache *c, struct cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->capacity_bytes = c->cfg.capacity_bytes;
    out->used_bytes = c->used;
    out->free_bytes = admit_free(c);
    out->count = lru_count(c->lru);
    for (struct lru_node *n = lru_oldest(c->lru); n; n = lru_newer(n))
        out->loading += entry_of(n)->loading;
    struct lru_node *oldest = lru_oldest(c->lru);
    out->oldest_used_ms = oldest ? oldest->last_used_ms : 0;
    out->full = out->free_bytes < c->cfg.default_size_bytes;
}

int cache_plan(const struct cache *c, uint64_t need_bytes, const struct cache_entry *keep,
               int64_t now_ms, struct cache_plan *plan, struct cache_entry **victims,
               size_t max_victims)
{
    memset(plan, 0, sizeof(*plan));
    /* A load must fit in capacity - reserve; a copy growing after its load may use the reserve
     * (see cache_set_size). */
    uint64_t limit = keep ? c->cfg.capacity_bytes : c->cfg.capacity_bytes - c->reserve;
    uint64_t fixed = keep ? keep->size_bytes : 0; /* what can never be freed for this */
    if (need_bytes > limit - fixed)
        return -E2BIG;
    /* used may already be past limit (sizes corrected into the reserve): free that too. */
    uint64_t to_free;
    if (c->used < limit) {
        if (need_bytes <= limit - c->used)
            return 0;
        to_free = need_bytes - (limit - c->used);
    } else {
        to_free = c->used - limit + need_bytes;
        if (to_free == 0)
            return 0;
    }

    /* Oldest first. Past the churn age's edge every further copy is younger still (the order
     * keeps times non-increasing towards the oldest), so the guard ends the search there; we
     * only count on to tell "busy" (-EBUSY) from "cannot ever" (-ENOSPC). */
    int64_t young_after = now_ms - c->cfg.min_churn_age_ms;
    uint64_t freeable_young = 0;
    for (struct lru_node *n = lru_oldest(c->lru); n; n = lru_newer(n)) {
        struct cache_entry *e = entry_of(n);
        if (e == keep || e->inflight || e->loading)
            continue;
        if (n->last_used_ms > young_after) {
            if (!plan->blocking)
                plan->blocking = e;
            freeable_young += e->size_bytes;
            if (plan->freed_bytes + freeable_young >= to_free)
                return -EBUSY;
            continue;
        }
        if (plan->n_victims < max_victims)
            victims[plan->n_victims] = e;
        plan->n_victims++;
        plan->freed_bytes += e->size_bytes;
        if (plan->freed_bytes >= to_free)
            return plan->n_victims <= max_victims ? 0 : -ENOBUFS;
    }
    plan->blocking = NULL;
    return -ENOSPC;
}
