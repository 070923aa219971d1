/* lru.h - entries in last-use order with lookup by key: O(1) touch, O(1) least and most recent,
 * O(1) expected lookup and removal.
 *
 * Intrusive, like the kernel's lists: the caller embeds a `struct lru_node` in its own entry
 * (cache.h's cache_entry does) and owns that entry's memory. The lru owns only its bucket array,
 * which grows on insert; lookups, touches, removals and walks never allocate. Keys are bytes
 * (a length, compared with memcmp). Not thread-safe: one owner (the node's loop) uses it.
 *
 * Order: the newest end holds the most recently touched node. last_used_ms never increases from
 * the newest end to the oldest: lru_touch and lru_insert keep it so (see each). */
#ifndef MM_LRU_H
#define MM_LRU_H

#include <stddef.h>
#include <stdint.h>

struct lru;

struct lru_node {
    const char *key; /* set by the caller before lru_insert; stays valid while inserted */
    size_t key_len;
    int64_t last_used_ms; /* read-only to callers: lru_insert and lru_touch set it */
    /* private */
    struct lru_node *newer, *older, *hnext;
    uint64_t hash;
};

/* The entry that embeds a node: lru_entry(node, struct cache_entry, lru). */
#define lru_entry(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* A new, empty lru. hash_seed varies the hash per process (pass a random value) so that keys
 * chosen by clients cannot be made to collide. 0 or -ENOMEM. */
int lru_create(struct lru **out, uint64_t hash_seed);

/* Free the lru's own memory. The nodes are the caller's: free them before or after. */
void lru_free(struct lru *lru);

/* Insert node (key and key_len set) with last-use time last_used_ms, kept in order: O(1) when it
 * is at least the newest's time (a copy loaded now), else a walk from the oldest end to its
 * place (a new model given an old time, ModelMesh's now - 6 h, lands near the oldest end).
 * 0, -EEXIST (the key is present; nothing changed) or -ENOMEM (growing the buckets failed;
 * nothing changed). */
int lru_insert(struct lru *lru, struct lru_node *node, int64_t last_used_ms);

/* The node with this key, or NULL. */
struct lru_node *lru_find(const struct lru *lru, const void *key, size_t key_len);

/* Mark node used at now_ms: it becomes the newest. Its time becomes max(now_ms, the newest's
 * time, its own) so that the order and the times never disagree, even with a clock that steps
 * back. O(1). */
void lru_touch(struct lru *lru, struct lru_node *node, int64_t now_ms);

/* Unlink node (which must be in lru). The caller frees it. O(1) expected. */
void lru_remove(struct lru *lru, struct lru_node *node);

/* Ends and steps, for walks (a walk may remove the node it stands on after taking the next). */
struct lru_node *lru_oldest(const struct lru *lru);
struct lru_node *lru_newest(const struct lru *lru);
struct lru_node *lru_newer(const struct lru_node *node); /* towards the newest end, or NULL */
struct lru_node *lru_older(const struct lru_node *node); /* towards the oldest end, or NULL */

size_t lru_count(const struct lru *lru);

#endif
