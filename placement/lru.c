/* lru.c - last-use order (a doubly linked list) plus lookup (chained hashing with the chain link
 * in the node), as redis's adlist.c and dict.c, intrusive so that nothing but the buckets is
 * ever allocated here. */
#include "mm/lru.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LRU_MIN_BUCKETS 16

struct lru {
    struct lru_node **buckets;
    size_t mask; /* buckets - 1; a power of two minus one */
    size_t count;
    struct lru_node *newest, *oldest;
    uint64_t seed;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Seeded, eight bytes a step; spreads keys, the seed keeps chosen keys from colliding by design. */
static uint64_t hash_key(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    if (len) /* p may be NULL for an empty key */
        memcpy(&w, p, len);
    return mix64(h ^ w ^ ((uint64_t)len << 56));
}

int lru_create(struct lru **out, uint64_t hash_seed)
{
    struct lru *lru = calloc(1, sizeof(*lru));
    if (!lru)
        return -ENOMEM;
    lru->buckets = calloc(LRU_MIN_BUCKETS, sizeof(*lru->buckets));
    if (!lru->buckets) {
        free(lru);
        return -ENOMEM;
    }
    lru->mask = LRU_MIN_BUCKETS - 1;
    lru->seed = mix64(hash_seed + 1);
    *out = lru;
    return 0;
}

void lru_free(struct lru *lru)
{
    if (!lru)
        return;
    free(lru->buckets);
    free(lru);
}

static int grow(struct lru *lru)
{
    size_t n = (lru->mask + 1) * 2;
    struct lru_node **b = calloc(n, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i <= lru->mask; i++) {
        struct lru_node *node = lru->buckets[i];
        while (node) {
            struct lru_node *next = node->hnext;
            size_t j = node->hash & (n - 1);
            node->hnext = b[j];
            b[j] = node;
            node = next;
        }
    }
    free(lru->buckets);
    lru->buckets = b;
    lru->mask = n - 1;
    return 0;
}

static struct lru_node *find(const struct lru *lru, uint64_t h, const void *key, size_t len)
{
    for (struct lru_node *n = lru->buckets[h & lru->mask]; n; n = n->hnext)
        if (n->hash == h && n->key_len == len && memcmp(n->key, key, len) == 0)
            return n;
    return NULL;
}

struct lru_node *lru_find(const struct lru *lru, const void *key, size_t key_len)
{
    return find(lru, hash_key(lru->seed, key, key_len), key, key_len);
}

static void link_newest(struct lru *lru, struct lru_node *node)
{
    node->newer = NULL;
    node->older = lru->newest;
    if (lru->newest)
        lru->newest->newer = node;
    else
        lru->oldest = node;
    lru->newest = node;
}

static void unlink_list(struct lru *lru, struct lru_node *node)
{
    if (node->newer)
        node->newer->older = node->older;
    else
        lru->newest = node->older;
    if (node->older)
        node->older->newer = node->newer;
    else
        lru->oldest = node->newer;
    node->newer = node->older = NULL;
}

int lru_insert(struct lru *lru, struct lru_node *node, int64_t last_used_ms)
{
    assert(node->key || node->key_len == 0);
    uint64_t h = hash_key(lru->seed, node->key, node->key_len);
    if (find(lru, h, node->key, node->key_len))
        return -EEXIST;
    if (lru->count >= lru->mask + 1) {
        int rc = grow(lru);
        if (rc < 0)
            return rc;
    }
    node->hash = h;
    node->last_used_ms = last_used_ms;
    size_t b = h & lru->mask;
    node->hnext = lru->buckets[b];
    lru->buckets[b] = node;
    lru->count++;

    if (!lru->newest || last_used_ms >= lru->newest->last_used_ms) {
        link_newest(lru, node);
        return 0;
    }
    /* Older than the newest: walk from the oldest end to the first node not older than it,
     * and go just before it (ties keep insertion order: the new one counts as older). */
    struct lru_node *at = lru->oldest;
    while (at->last_used_ms < last_used_ms)
        at = at->newer; /* stops at the newest at the latest, whose time is greater */
    node->newer = at;
    node->older = at->older;
    if (at->older)
        at->older->newer = node;
    else
        lru->oldest = node;
    at->older = node;
    return 0;
}

void lru_touch(struct lru *lru, struct lru_node *node, int64_t now_ms)
{
    int64_t t = now_ms;
    if (lru->newest->last_used_ms > t)
        t = lru->newest->last_used_ms;
    if (node->last_used_ms > t)
        t = node->last_used_ms;
    node->last_used_ms = t;
    if (lru->newest == node)
        return;
    unlink_list(lru, node);
    link_newest(lru, node);
}

void lru_remove(struct lru *lru, struct lru_node *node)
{
    struct lru_node **pp = &lru->buckets[node->hash & lru->mask];
    while (*pp != node) {
        assert(*pp); /* node must be in this lru */
        pp = &(*pp)->hnext;
    }
    *pp = node->hnext;
    node->hnext = NULL;
    unlink_list(lru, node);
    lru->count--;
}

struct lru_node *lru_oldest(const struct lru *lru)
{
    return lru->oldest;
}

struct lru_node *lru_newest(const struct lru *lru)
{
    return lru->newest;
}

struct lru_node *lru_newer(const struct lru_node *node)
{
    return node->newer;
}

struct lru_node *lru_older(const struct lru_node *node)
{
    return node->older;
}

size_t lru_count(const struct lru *lru)
{
    return lru->count;
}
