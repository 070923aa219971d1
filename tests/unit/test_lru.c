/* test_lru.c - lru.h (order, touch, lookup, growth) and cache.h (sizes, accounting that never
 * exceeds capacity, eviction plans, the churn guard). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/cache.h"
#include "mm/lru.h"

struct item {
    struct lru_node node;
    char key[32];
};

static void set_key(struct item *it, const char *k)
{
    snprintf(it->key, sizeof(it->key), "%s", k);
    it->node.key = it->key;
    it->node.key_len = strlen(it->key);
}

/* Walk both ways: every node once, times non-increasing towards the oldest end. */
static void check_order(struct lru *lru)
{
    size_t n = 0;
    int64_t prev = INT64_MAX;
    struct lru_node *last = NULL;
    for (struct lru_node *x = lru_newest(lru); x; x = lru_older(x)) {
        CHECK(x->last_used_ms <= prev);
        prev = x->last_used_ms;
        last = x;
        n++;
    }
    CHECK_INT(n, lru_count(lru));
    CHECK(last == lru_oldest(lru));
    size_t back = 0;
    for (struct lru_node *x = lru_oldest(lru); x; x = lru_newer(x))
        back++;
    CHECK_INT(back, n);
}

static const char *key_of(struct lru_node *n)
{
    return n ? lru_entry(n, struct item, node)->key : "(none)";
}

static void test_lru_order_and_touch(void)
{
    struct lru *lru;
    REQUIRE(lru_create(&lru, 42) == 0);
    CHECK(lru_oldest(lru) == NULL && lru_newest(lru) == NULL);
    CHECK(lru_find(lru, "a", 1) == NULL);

    struct item it[4];
    const char *keys[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        set_key(&it[i], keys[i]);
        CHECK_INT(lru_insert(lru, &it[i].node, 1000 + i), 0);
    }
    CHECK_INT(lru_count(lru), 4);
    CHECK_STR(key_of(lru_oldest(lru)), "a");
    CHECK_STR(key_of(lru_newest(lru)), "d");

    /* touch: the oldest becomes the newest; the next oldest is now b */
    lru_touch(lru, &it[0].node, 2000);
    CHECK_STR(key_of(lru_newest(lru)), "a");
    CHECK_STR(key_of(lru_oldest(lru)), "b");
    CHECK_INT(it[0].node.last_used_ms, 2000);
    check_order(lru);

    /* a clock that steps back: order still follows the touch, times stay monotonic */
    lru_touch(lru, &it[2].node, 1500);
    CHECK_STR(key_of(lru_newest(lru)), "c");
    CHECK_INT(it[2].node.last_used_ms, 2000);
    check_order(lru);

    /* touching the newest again keeps it there */
    lru_touch(lru, &it[2].node, 2100);
    CHECK_STR(key_of(lru_newest(lru)), "c");
    CHECK_INT(it[2].node.last_used_ms, 2100);

    /* find, duplicate, remove */
    CHECK(lru_find(lru, "b", 1) == &it[1].node);
    struct item dup;
    set_key(&dup, "b");
    CHECK_INT(lru_insert(lru, &dup.node, 5000), -EEXIST);
    CHECK_INT(lru_count(lru), 4);
    lru_remove(lru, &it[1].node);
    CHECK(lru_find(lru, "b", 1) == NULL);
    CHECK_STR(key_of(lru_oldest(lru)), "d");
    check_order(lru);
    lru_remove(lru, &it[2].node); /* the newest */
    CHECK_STR(key_of(lru_newest(lru)), "a");
    lru_remove(lru, &it[0].node);
    lru_remove(lru, &it[3].node);
    CHECK_INT(lru_count(lru), 0);
    CHECK(lru_oldest(lru) == NULL && lru_newest(lru) == NULL);
    lru_free(lru);
}

static void test_lru_insert_in_time_order(void)
{
    struct lru *lru;
    REQUIRE(lru_create(&lru, 1) == 0);
    struct item it[5];
    /* inserted out of order: new models arrive with old last-use times */
    int64_t t[] = {5000, 1000, 3000, 1000, 9000};
    const char *k[] = {"e5", "a1", "c3", "b1", "z9"};
    for (int i = 0; i < 5; i++) {
        set_key(&it[i], k[i]);
        CHECK_INT(lru_insert(lru, &it[i].node, t[i]), 0);
    }
    check_order(lru);
    /* oldest first: b1 (inserted last of the two at 1000 counts as older), a1, c3, e5, z9 */
    const char *want[] = {"b1", "a1", "c3", "e5", "z9"};
    struct lru_node *x = lru_oldest(lru);
    for (int i = 0; i < 5; i++, x = x ? lru_newer(x) : NULL)
        CHECK_STR(key_of(x), want[i]);
    lru_free(lru);
}

static void test_lru_bytes_and_growth(void)
{
    struct lru *lru;
    REQUIRE(lru_create(&lru, 7) == 0);
    /* keys with a NUL inside, and a prefix of another, are distinct keys */
    struct item a = {.node = {.key = "m\0x", .key_len = 3}};
    struct item b = {.node = {.key = "m\0y", .key_len = 3}};
    struct item c = {.node = {.key = "m", .key_len = 1}};
    CHECK_INT(lru_insert(lru, &a.node, 1), 0);
    CHECK_INT(lru_insert(lru, &b.node, 2), 0);
    CHECK_INT(lru_insert(lru, &c.node, 3), 0);
    CHECK(lru_find(lru, "m\0x", 3) == &a.node);
    CHECK(lru_find(lru, "m\0y", 3) == &b.node);
    CHECK(lru_find(lru, "m", 1) == &c.node);
    CHECK(lru_find(lru, "m\0", 2) == NULL);
    lru_remove(lru, &a.node);
    lru_remove(lru, &b.node);
    lru_remove(lru, &c.node);

    /* many: the buckets grow; every node stays findable; remove every other one */
    enum { N = 5000 };
    struct item *its = calloc(N, sizeof(*its));
    REQUIRE(its);
    for (int i = 0; i < N; i++) {
        char k[32];
        snprintf(k, sizeof(k), "model-%d", i);
        set_key(&its[i], k);
        CHECK_INT(lru_insert(lru, &its[i].node, i), 0);
    }
    int found = 0;
    for (int i = 0; i < N; i++)
        found += lru_find(lru, its[i].key, strlen(its[i].key)) == &its[i].node;
    CHECK_INT(found, N);
    for (int i = 0; i < N; i += 2)
        lru_remove(lru, &its[i].node);
    CHECK_INT(lru_count(lru), N / 2);
    found = 0;
    for (int i = 0; i < N; i++)
        found += lru_find(lru, its[i].key, strlen(its[i].key)) == (i % 2 ? &its[i].node : NULL);
    CHECK_INT(found, N);
    CHECK_STR(key_of(lru_oldest(lru)), "model-1");
    check_order(lru);
    lru_free(lru);
    free(its);
}

#define MB 1000000ULL

static struct cache *new_cache(uint64_t capacity)
{
    struct cache_config cfg;
    cache_config_init(&cfg, capacity, 0, 0);
    struct cache *c;
    REQUIRE(cache_create(&c, &cfg, 99) == 0);
    return c;
}

static struct cache_entry *add(struct cache *c, const char *id, uint64_t size, int64_t t)
{
    struct cache_entry *e = NULL;
    CHECK_INT(cache_add(c, id, strlen(id), size, CACHE_SIZE_PREDICTED, t, &e), 0);
    return e;
}

static void test_cache_config(void)
{
    CHECK_INT(cache_min_churn_age_ms(90000), 300000);
    CHECK_INT(cache_min_churn_age_ms(6000), 30000); /* the 3 s floor */
    CHECK_INT(cache_min_churn_age_ms(0), 30000);
    struct cache_config cfg;
    cache_config_init(&cfg, 100 * MB, 0, 0);
    CHECK_INT(cfg.default_size_bytes, CACHE_DEFAULT_SIZE_BYTES);
    CHECK_INT(cfg.min_churn_age_ms, 300000);
    CHECK_INT(cfg.reserve_permille, 30);
    CHECK_INT(cache_reserve_bytes(100 * MB, 30), 3 * MB);
    CHECK_INT(cache_reserve_bytes(UINT64_MAX, 1000), UINT64_MAX);
    CHECK(cache_reserve_bytes(UINT64_MAX, 30) < UINT64_MAX / 10); /* no overflow */
    CHECK_INT(cache_load_free(100 * MB, 90 * MB, 30), 7 * MB);
    CHECK_INT(cache_load_free(100 * MB, 99 * MB, 30), 0);
    CHECK_INT(cache_load_free(100 * MB, 200 * MB, 30), 0); /* a stale view over capacity */
    cfg.reserve_permille = 1001;
    struct cache *c = NULL;
    CHECK_INT(cache_create(&c, &cfg, 0), -EINVAL);
}

static void test_cache_sizes(void)
{
    struct cache *c = new_cache(100 * MB);
    enum cache_size_source src;
    CHECK_INT(cache_load_size(c, 0, &src), CACHE_DEFAULT_SIZE_BYTES);
    CHECK_INT(src, CACHE_SIZE_DEFAULT);
    CHECK_INT(cache_load_size(c, 5 * MB, &src), 5 * MB);
    CHECK_INT(src, CACHE_SIZE_PREDICTED);

    /* unknown size: the default */
    struct cache_entry *e = NULL;
    CHECK_INT(cache_add(c, "m1", 2, 0, CACHE_SIZE_PREDICTED, 10, &e), 0);
    REQUIRE(e);
    CHECK_INT(e->size_bytes, CACHE_DEFAULT_SIZE_BYTES);
    CHECK_INT(e->size_source, CACHE_SIZE_DEFAULT);
    CHECK_STR(e->id, "m1");
    CHECK_INT(cache_entry_id_len(e), 2);

    /* predicted beats default, runtime beats predicted, never the other way */
    CHECK_INT(cache_set_size(c, e, 4 * MB, CACHE_SIZE_PREDICTED), 0);
    CHECK_INT(e->size_bytes, 4 * MB);
    CHECK_INT(cache_set_size(c, e, 6 * MB, CACHE_SIZE_RUNTIME), 0);
    CHECK_INT(e->size_bytes, 6 * MB);
    CHECK_INT(cache_set_size(c, e, 2 * MB, CACHE_SIZE_PREDICTED), 0);
    CHECK_INT(e->size_bytes, 6 * MB);
    CHECK_INT(cache_set_size(c, e, 0, CACHE_SIZE_RUNTIME), 0); /* 0 = unknown: kept */
    CHECK_INT(e->size_bytes, 6 * MB);
    CHECK_INT(cache_set_size(c, e, 5 * MB, CACHE_SIZE_RUNTIME), 0); /* remeasured, smaller */
    CHECK_INT(e->size_bytes, 5 * MB);
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK_INT(st.used_bytes, 5 * MB);

    CHECK_INT(cache_add(c, "m1", 2, MB, CACHE_SIZE_PREDICTED, 11, NULL), -EEXIST);
    CHECK_INT(cache_add(c, "", 0, MB, CACHE_SIZE_PREDICTED, 11, NULL), -EINVAL);
    CHECK(cache_find(c, "m1", 2) == e);
    CHECK(cache_find(c, "m2", 2) == NULL);
    cache_free(c);
}

static void test_cache_capacity(void)
{
    struct cache *c = new_cache(100 * MB); /* reserve 3 MB: loads within 97 MB */
    struct cache_entry *a = add(c, "a", 60 * MB, 1);
    CHECK_INT(cache_add(c, "b", 1, 38 * MB, CACHE_SIZE_PREDICTED, 2, NULL), -ENOSPC);
    struct cache_entry *b = add(c, "b", 37 * MB, 2);
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK_INT(st.used_bytes, 97 * MB);
    CHECK_INT(st.free_bytes, 0);
    CHECK(st.full);
    CHECK_INT(st.count, 2);
    CHECK_INT(st.oldest_used_ms, 1);
    /* the runtime measures more: the reserve absorbs it, capacity never */
    CHECK_INT(cache_set_size(c, b, 40 * MB, CACHE_SIZE_RUNTIME), 0);
    CHECK_INT(cache_set_size(c, a, 61 * MB, CACHE_SIZE_RUNTIME), -ENOSPC);
    CHECK_INT(a->size_bytes, 60 * MB);
    cache_stats(c, &st);
    CHECK_INT(st.used_bytes, 100 * MB);
    cache_remove(c, a);
    cache_stats(c, &st);
    CHECK_INT(st.used_bytes, 40 * MB);
    CHECK_INT(st.free_bytes, 57 * MB);
    CHECK(!st.full);
    cache_free(c);

    /* zero capacity admits nothing, and says why */
    c = new_cache(0);
    CHECK_INT(cache_add(c, "a", 1, 1, CACHE_SIZE_PREDICTED, 1, NULL), -ENOSPC);
    struct cache_plan plan;
    struct cache_entry *v[4];
    CHECK_INT(cache_plan(c, 1, NULL, 100, &plan, v, 4), -E2BIG);
    cache_stats(c, &st);
    CHECK(st.full && st.used_bytes == 0 && st.oldest_used_ms == 0);
    cache_free(c);
}

/* Random adds, resizes, plans and evictions: used == the sum of sizes and <= capacity always. */
static void test_cache_never_exceeds_capacity(void)
{
    uint64_t cap = 50 * MB;
    struct cache *c = new_cache(cap);
    srand(12345);
    int64_t now = 1000000;
    int violations = 0, loads = 0;
    for (int step = 0; step < 20000; step++) {
        now += rand() % 20000;
        char id[16];
        snprintf(id, sizeof(id), "m%d", rand() % 300);
        struct cache_entry *e = cache_find(c, id, strlen(id));
        int op = rand() % 4;
        if (e && op == 0) {
            cache_set_size(c, e, (uint64_t)(rand() % 12 + 1) * MB, CACHE_SIZE_RUNTIME);
        } else if (e && op == 1) {
            cache_remove(c, e);
        } else if (e) {
            cache_touch(c, e, now);
        } else {
            uint64_t size = (uint64_t)(rand() % 10) * MB; /* 0 = unknown */
            enum cache_size_source src;
            size = cache_load_size(c, size, &src);
            struct cache_plan plan;
            struct cache_entry *v[64];
            if (cache_plan(c, size, NULL, now, &plan, v, 64) == 0) {
                for (size_t i = 0; i < plan.n_victims; i++)
                    cache_remove(c, v[i]);
                violations += cache_add(c, id, strlen(id), size, src, now, NULL) != 0;
                loads++;
            }
        }
        uint64_t sum = 0;
        size_t n = 0;
        for (struct cache_entry *x = cache_oldest(c); x; x = cache_newer(x), n++)
            sum += x->size_bytes;
        struct cache_stats st;
        cache_stats(c, &st);
        violations += st.used_bytes != sum || st.used_bytes > cap || st.count != n;
    }
    CHECK_INT(violations, 0);
    CHECK(loads > 1000);
    cache_free(c);
}

static void test_cache_plan(void)
{
    struct cache *c = new_cache(100 * MB); /* loads within 97 MB; churn age 300 s */
    int64_t t0 = 1000000000;
    struct cache_entry *a = add(c, "a", 20 * MB, t0);
    struct cache_entry *b = add(c, "b", 20 * MB, t0 + 1000);
    struct cache_entry *d = add(c, "d", 20 * MB, t0 + 2000);
    struct cache_entry *e = add(c, "e", 20 * MB, t0 + 3000);
    (void)e;
    int64_t now = t0 + 3000 + 600000; /* every copy is older than the churn age */
    struct cache_plan plan;
    struct cache_entry *v[8];

    /* fits as is: 17 MB free */
    CHECK_INT(cache_plan(c, 17 * MB, NULL, now, &plan, v, 8), 0);
    CHECK_INT(plan.n_victims, 0);
    /* 30 MB: evict a (20) -> 37 free */
    CHECK_INT(cache_plan(c, 30 * MB, NULL, now, &plan, v, 8), 0);
    CHECK_INT(plan.n_victims, 1);
    CHECK(v[0] == a);
    CHECK_INT(plan.freed_bytes, 20 * MB);
    /* touched a: b is the oldest now */
    cache_touch(c, a, now);
    CHECK_INT(cache_plan(c, 30 * MB, NULL, now, &plan, v, 8), 0);
    CHECK(plan.n_victims == 1 && v[0] == b);
    /* b has requests in flight and d is loading: skipped, e is next */
    b->inflight = 1;
    d->loading = true;
    CHECK_INT(cache_plan(c, 30 * MB, NULL, now, &plan, v, 8), 0);
    CHECK(plan.n_victims == 1 && v[0] == e);
    /* needing 40 more than free: e (20) and then a, which is young: the churn guard */
    CHECK_INT(cache_plan(c, 57 * MB, NULL, now, &plan, v, 8), -EBUSY);
    CHECK(plan.blocking == a);
    /* more than even the young could free: everything else is pinned */
    CHECK_INT(cache_plan(c, 97 * MB, NULL, now, &plan, v, 8), -ENOSPC);
    CHECK_INT(cache_plan(c, 98 * MB, NULL, now, &plan, v, 8), -E2BIG);
    /* victims array too small */
    b->inflight = 0;
    d->loading = false;
    CHECK_INT(cache_plan(c, 50 * MB, NULL, now, &plan, v, 1), -ENOBUFS);
    CHECK_INT(plan.n_victims, 2);
    CHECK_INT(cache_plan(c, 50 * MB, NULL, now, &plan, v, 2), 0);
    CHECK(v[0] == b && v[1] == d);

    /* growing a copy after its load: may use the reserve, keep is never a victim */
    CHECK_INT(cache_plan(c, 20 * MB, b, now, &plan, v, 8), 0); /* 20 free to capacity */
    CHECK_INT(plan.n_victims, 0);
    CHECK_INT(cache_plan(c, 21 * MB, b, now, &plan, v, 8), 0);
    CHECK(plan.n_victims == 1 && v[0] == d);
    CHECK_INT(cache_plan(c, 81 * MB, b, now, &plan, v, 8), -E2BIG);
    cache_free(c);

    /* the churn guard on the oldest copy: a full pod of fresh copies refuses any eviction */
    c = new_cache(10 * MB);
    add(c, "x", 9 * MB, t0);
    CHECK_INT(cache_plan(c, MB, NULL, t0 + 299999, &plan, v, 8), -EBUSY);
    CHECK_INT(cache_plan(c, MB, NULL, t0 + 300000, &plan, v, 8), 0);
    CHECK_INT(plan.n_victims, 1);
    cache_free(c);
}

static void test_cache_walks(void)
{
    struct cache *c = new_cache(100 * MB);
    add(c, "new", MB, 5000);
    add(c, "old", MB, 1000); /* a new model's old last-use time: lands at the oldest end */
    add(c, "mid", MB, 3000);
    CHECK_STR(cache_oldest(c)->id, "old");
    CHECK_STR(cache_newer(cache_oldest(c))->id, "mid");
    CHECK_STR(cache_newest(c)->id, "new");
    CHECK_STR(cache_older(cache_newest(c))->id, "mid");
    CHECK_INT(cache_entry_last_used(cache_oldest(c)), 1000);
    struct cache_stats st;
    cache_newest(c)->loading = true;
    cache_stats(c, &st);
    CHECK_INT(st.loading, 1);
    CHECK_INT(st.oldest_used_ms, 1000);
    cache_free(c);
}

int main(void)
{
    test_lru_order_and_touch();
    test_lru_insert_in_time_order();
    test_lru_bytes_and_growth();
    test_cache_config();
    test_cache_sizes();
    test_cache_capacity();
    test_cache_never_exceeds_capacity();
    test_cache_plan();
    test_cache_walks();
    return CHECK_DONE();
}
