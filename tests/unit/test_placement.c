/* test_placement.c - place.h: where to load (order, herd-spreading, labels, exclusions, the
 * churn guard, edge cases), copy scaling, new models' last-use times, failure expiry. */
#include <stdio.h>
#include <errno.h>
#include <string.h>

#include "check.h"
#include "mm/place.h"

#define MB 1000000ULL
#define MIN_MS 60000LL
#define NOW 1800000000000LL /* epoch ms */

static const struct place_str sk_labels[] = {{"mt:sklearn", 10}, {"rt:mm-runtime", 13}};
static const struct place_str xgb_labels[] = {{"mt:xgboost", 10}, {"rt:mm-runtime", 13}};
static const struct place_str want_sk[] = {{"mt:sklearn", 10}};

static char ids[64][16];

/* n instances i0..i{n-1}: sklearn, 100 MB, empty, in zone "z" + (i % 3). */
static void make(struct place_instance *in, size_t n)
{
    static const struct place_str zones[] = {{"za", 2}, {"zb", 2}, {"zc", 2}};
    memset(in, 0, n * sizeof(*in));
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "i%zu", i);
        in[i].id = (struct place_str){ids[i], strlen(ids[i])};
        in[i].labels = sk_labels;
        in[i].n_labels = 2;
        in[i].zone = zones[i % 3];
        in[i].capacity_bytes = 100 * MB;
    }
}

static struct place_model model(uint64_t size)
{
    return (struct place_model){.labels = want_sk, .n_labels = 1, .size_bytes = size};
}

static int choose(const struct place_config *cfg, const struct place_model *m,
                  const struct place_instance *in, size_t n, uint64_t rnd, struct place_choice *c)
{
    return place_choose(cfg, m, in, n, NOW, rnd, c);
}

static void test_order(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    cfg.shortlist = 1; /* deterministic: the best */
    struct place_instance in[5];
    make(in, 5);
    in[0].used_bytes = 50 * MB;
    in[1].used_bytes = 10 * MB; /* most free */
    in[2].used_bytes = 30 * MB;
    in[3].used_bytes = 10 * MB; /* as free as i1, but colder copies: it wins the tie */
    in[1].oldest_used_ms = NOW - 10 * MIN_MS;
    in[3].oldest_used_ms = NOW - 20 * MIN_MS;
    in[4].used_bytes = 96 * MB; /* 1 MB free: must evict */
    struct place_model m = model(5 * MB);
    struct place_choice c;
    CHECK_INT(choose(&cfg, &m, in, 5, 0, &c), 0);
    CHECK_INT(c.index, 3);
    CHECK(!c.must_evict);
    CHECK_INT(c.reason, PLACE_OK);
    in[3].oldest_used_ms = NOW - 5 * MIN_MS;
    CHECK_INT(choose(&cfg, &m, in, 5, 0, &c), 0);
    CHECK_INT(c.index, 1);

    /* the full ranking, by asking with a long short list and every random value */
    cfg.shortlist = 5;
    cfg.shortlist_min_permille = 0;
    int seen[5] = {0};
    for (uint64_t r = 0; r < 5; r++) {
        CHECK_INT(choose(&cfg, &m, in, 5, r, &c), 0);
        seen[c.index]++;
    }
    /* enough-space instances only (i4 must evict and is not in the short list) */
    CHECK_INT(c.shortlist_len, 4);
    CHECK(seen[0] && seen[1] && seen[2] && seen[3] && !seen[4]);

    /* when every instance must evict: the one with the coldest copies */
    cfg.shortlist = 1;
    for (int i = 0; i < 5; i++) {
        in[i].used_bytes = 97 * MB;
        in[i].loaded = 3;
        in[i].oldest_used_ms = NOW - (10 + i * 7) * MIN_MS;
    }
    in[2].oldest_used_ms = NOW - 90 * MIN_MS;
    CHECK_INT(choose(&cfg, &m, in, 5, 0, &c), 0);
    CHECK_INT(c.index, 2);
    CHECK(c.must_evict);
}

static void test_herd_spreading(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_instance in[10];
    make(in, 10);
    /* i7, i2, i5 nearly empty (the top 3); the rest fuller */
    for (int i = 0; i < 10; i++)
        in[i].used_bytes = 60 * MB + (uint64_t)i * MB;
    in[7].used_bytes = 1 * MB;
    in[2].used_bytes = 2 * MB;
    in[5].used_bytes = 3 * MB;
    struct place_model m = model(2 * MB);
    int count[10] = {0};
    struct place_choice c;
    for (uint64_t r = 0; r < 3000; r++) {
        /* placers' random values: any 64-bit numbers */
        uint64_t rnd = r * 0x9e3779b97f4a7c15ULL + (r >> 3);
        CHECK_INT(choose(&cfg, &m, in, 10, rnd, &c), 0);
        count[c.index]++;
    }
    CHECK_INT(count[7] + count[2] + count[5], 3000);
    CHECK(count[7] > 800 && count[2] > 800 && count[5] > 800);
    CHECK_INT(c.shortlist_len, 3);

    /* a near-full instance is kept out of the short list even if it ranks third */
    in[5].used_bytes = 80 * MB; /* 17 MB free vs the best's 96 */
    for (int i = 0; i < 10; i++)
        if (i != 7 && i != 2 && i != 5)
            in[i].used_bytes = 90 * MB;
    int hits5 = 0;
    for (uint64_t r = 0; r < 30; r++) {
        CHECK_INT(choose(&cfg, &m, in, 10, r, &c), 0);
        hits5 += c.index == 5;
    }
    CHECK_INT(hits5, 0);
    CHECK_INT(c.shortlist_len, 2);
}

static void test_labels(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_instance in[4];
    make(in, 4);
    in[0].labels = xgb_labels;
    in[2].labels = xgb_labels;
    in[3].n_labels = 1; /* mt:sklearn only */
    /* needs both the type and the runtime */
    static const struct place_str want_both[] = {{"mt:sklearn", 10}, {"rt:mm-runtime", 13}};
    struct place_model m = model(MB);
    m.labels = want_both;
    m.n_labels = 2;
    struct place_choice c;
    for (uint64_t r = 0; r < 10; r++) {
        CHECK_INT(choose(&cfg, &m, in, 4, r, &c), 0);
        CHECK_INT(c.index, 1);
    }
    CHECK_INT(c.n_wrong_type, 3);
    /* a label is compared as bytes: a prefix is not a match */
    static const struct place_str want_prefix[] = {{"mt:sk", 5}};
    m.labels = want_prefix;
    m.n_labels = 1;
    CHECK_INT(choose(&cfg, &m, in, 4, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_NO_TYPE);
    CHECK_INT(c.n_wrong_type, 4);
    /* no labels required: any instance */
    m.n_labels = 0;
    CHECK_INT(choose(&cfg, &m, in, 4, 0, &c), 0);
}

static void test_exclusions(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_instance in[4];
    make(in, 4);
    struct place_model m = model(MB);
    static const struct place_str failed[] = {{"i0", 2}, {"i2", 2}};
    static const struct place_str held[] = {{"i1", 2}};
    m.failed_on = failed;
    m.n_failed_on = 2;
    m.held_by = held;
    m.n_held_by = 1;
    struct place_choice c;
    /* i3 is the only one left, whatever the random value, even though it is the fullest */
    in[3].used_bytes = 90 * MB;
    for (uint64_t r = 0; r < 50; r++) {
        CHECK_INT(choose(&cfg, &m, in, 4, r, &c), 0);
        CHECK_INT(c.index, 3);
    }
    CHECK_INT(c.n_failed, 2);
    CHECK_INT(c.n_holding, 1);
    /* i3 shutting down: the reason is that (retryable), before the failures */
    in[3].shutting_down = true;
    CHECK_INT(choose(&cfg, &m, in, 4, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_SHUTTING_DOWN);
    CHECK_INT(c.n_shutting_down, 1);
    /* failed on every one that does not hold it */
    static const struct place_str failed2[] = {{"i0", 2}, {"i2", 2}, {"i3", 2}};
    in[3].shutting_down = false;
    m.failed_on = failed2;
    m.n_failed_on = 3;
    CHECK_INT(choose(&cfg, &m, in, 4, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_FAILED_RECENTLY);
    struct mm_error err = {0};
    CHECK_INT(place_choice_error(&c, "m1", 2, &err), -ENOSPC);
    CHECK_INT(err.code, -ENOSPC);
    CHECK(strstr(err.msg, "model m1: no instance can load it: it failed to load recently") != NULL);
    CHECK(strstr(err.msg, "3 failed it") != NULL);
    /* every one holds a copy */
    static const struct place_str held_all[] = {{"i0", 2}, {"i1", 2}, {"i2", 2}, {"i3", 2}};
    m.n_failed_on = 0;
    m.held_by = held_all;
    m.n_held_by = 4;
    CHECK_INT(choose(&cfg, &m, in, 4, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_ALL_HOLD_COPY);
    /* ids are bytes: "i1" does not exclude "i10" */
    struct place_instance many[11];
    make(many, 11);
    for (int i = 0; i < 11; i++)
        many[i].used_bytes = 50 * MB;
    many[10].used_bytes = 0;
    m.held_by = held;
    m.n_held_by = 1;
    cfg.shortlist = 1;
    CHECK_INT(choose(&cfg, &m, many, 11, 0, &c), 0);
    CHECK_INT(c.index, 10);
}

static void test_churn_guard(void)
{
    struct place_config cfg;
    place_config_init(&cfg); /* churn age 300 s */
    struct place_instance in[3];
    make(in, 3);
    for (int i = 0; i < 3; i++) {
        in[i].used_bytes = 97 * MB; /* full: 0 free for loads */
        in[i].loaded = 10;
        in[i].oldest_used_ms = NOW - 60000; /* its coldest copy used a minute ago */
    }
    struct place_model m = model(MB);
    struct place_choice c;
    CHECK_INT(choose(&cfg, &m, in, 3, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_CHURN_GUARDED);
    CHECK_INT(c.n_churn_guarded, 3);
    /* one whose coldest copy is exactly the churn age old may evict */
    in[1].oldest_used_ms = NOW - 300000;
    for (uint64_t r = 0; r < 10; r++) {
        CHECK_INT(choose(&cfg, &m, in, 3, r, &c), 0);
        CHECK_INT(c.index, 1);
        CHECK(c.must_evict);
    }
    /* full of loads in progress: nothing to evict */
    in[1].loaded = 0;
    in[1].loading = 4;
    CHECK_INT(choose(&cfg, &m, in, 3, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_CHURN_GUARDED);
    /* the guard does not apply where the model fits */
    in[2].used_bytes = 50 * MB;
    CHECK_INT(choose(&cfg, &m, in, 3, 0, &c), 0);
    CHECK_INT(c.index, 2);
    CHECK(!c.must_evict);
}

static void test_zones(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_instance in[6];
    make(in, 6); /* zones za zb zc za zb zc */
    in[0].used_bytes = 50 * MB;
    in[1].used_bytes = 50 * MB;
    in[4].used_bytes = 50 * MB;
    struct place_model m = model(MB);
    static const struct place_str zones[] = {{"zc", 2}, {"za", 2}};
    m.copy_zones = zones;
    m.n_copy_zones = 2;
    struct place_choice c;
    /* only zb holds no copy: i1 and i4, though i2, i3, i5 have more room */
    for (uint64_t r = 0; r < 20; r++) {
        CHECK_INT(choose(&cfg, &m, in, 6, r, &c), 0);
        CHECK(c.index == 1 || c.index == 4);
    }
    CHECK_INT(c.shortlist_len, 2);
}

static void test_edges(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_model m = model(MB);
    struct place_choice c;
    /* empty list */
    CHECK_INT(place_choose(&cfg, &m, NULL, 0, NOW, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_NO_INSTANCES);
    CHECK_INT(place_choose(&cfg, &m, NULL, 3, NOW, 0, &c), -EINVAL);
    struct place_instance in[3];
    make(in, 3);
    /* zero capacity, and too small even empty */
    in[0].capacity_bytes = 0;
    in[1].capacity_bytes = MB; /* 1 MB - 3 % reserve < 1 MB */
    in[2].capacity_bytes = 0;
    CHECK_INT(choose(&cfg, &m, in, 3, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_TOO_BIG);
    CHECK_INT(c.n_too_small, 3);
    /* unknown size: the default (1 MB) decides what fits */
    make(in, 3);
    for (int i = 0; i < 3; i++)
        in[i].used_bytes = 96 * MB + 500000; /* 0.5 MB free for loads */
    in[1].used_bytes = 95 * MB;              /* 2 MB free */
    struct place_model unknown = model(0);
    cfg.shortlist = 1;
    CHECK_INT(choose(&cfg, &unknown, in, 3, 0, &c), 0);
    CHECK_INT(c.index, 1);
    CHECK(!c.must_evict);
    cfg.default_size_bytes = 3 * MB;
    CHECK_INT(choose(&cfg, &unknown, in, 3, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_CHURN_GUARDED); /* all must evict, none has loaded copies */
    /* a stale view with used over capacity counts as full, not as a huge free space */
    place_config_init(&cfg);
    cfg.shortlist = 1;
    make(in, 3);
    in[0].used_bytes = 300 * MB;
    in[0].loaded = 1;
    in[1].used_bytes = 90 * MB;
    in[2].used_bytes = 95 * MB;
    CHECK_INT(choose(&cfg, &m, in, 3, 0, &c), 0);
    CHECK_INT(c.index, 1);
}

/* A model of unknown size counts, on each instance, for that instance's own default (its
 * runtime's default model size, from its record); an instance that does not say counts the
 * config's. */
static void test_instance_default(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    cfg.shortlist = 1;
    struct place_model unknown = model(0);
    struct place_choice c;
    struct place_instance in[2];
    /* a pod of 900 KB (under the 1 MB default, even empty) whose runtime says 33 KB */
    make(in, 1);
    in[0].capacity_bytes = 900000;
    CHECK_INT(choose(&cfg, &unknown, in, 1, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_TOO_BIG);
    in[0].default_size_bytes = 33000;
    CHECK_INT(choose(&cfg, &unknown, in, 1, 0, &c), 0);
    CHECK_INT(c.index, 0);
    CHECK(!c.must_evict);
    /* a pod of 2 MB with 100 KB free for loads: room at 33 KB, not at 1 MB (it would have to
     * evict, and it has nothing loaded to evict) */
    in[0].capacity_bytes = 2 * MB;
    in[0].used_bytes = 2 * MB - 60000 - 100000; /* capacity - 3 % reserve - 100 KB */
    CHECK_INT(choose(&cfg, &unknown, in, 1, 0, &c), 0);
    CHECK(!c.must_evict);
    in[0].default_size_bytes = 0;
    CHECK_INT(choose(&cfg, &unknown, in, 1, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_CHURN_GUARDED);
    /* a known size is the model's, whatever the instance's default */
    in[0].default_size_bytes = 33000;
    struct place_model known = model(200000);
    CHECK_INT(choose(&cfg, &known, in, 1, 0, &c), -ENOSPC);
    /* the reverse: a runtime whose default is larger than the config's. An instance with 2 MB
     * free takes it at 1 MB but not at its own 3 MB default; the other one, saying nothing,
     * is judged at the config's 1 MB and takes it */
    make(in, 2);
    in[0].used_bytes = 95 * MB; /* 2 MB free for loads: the most free, first at equal default */
    in[1].used_bytes = 96 * MB; /* 1 MB free */
    CHECK_INT(choose(&cfg, &unknown, in, 2, 0, &c), 0);
    CHECK_INT(c.index, 0);
    in[0].default_size_bytes = 3 * MB;
    CHECK_INT(choose(&cfg, &unknown, in, 2, 0, &c), 0);
    CHECK_INT(c.index, 1);
    CHECK(!c.must_evict);
    in[1].default_size_bytes = 3 * MB;
    CHECK_INT(choose(&cfg, &unknown, in, 2, 0, &c), -ENOSPC);
    CHECK_INT(c.reason, PLACE_CHURN_GUARDED);
    /* place_size_on: the model's estimate, else the instance's default, else the config's */
    CHECK_INT(place_size_on(&cfg, &in[0], 5), 5);
    CHECK_INT(place_size_on(&cfg, &in[0], 0), 3 * MB);
    in[0].default_size_bytes = 0;
    CHECK_INT(place_size_on(&cfg, &in[0], 0), MB);
    CHECK_INT(place_size_on(&cfg, NULL, 0), MB);
}

static void test_copies(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    struct place_cluster roomy = {.capacity_bytes = 1000 * MB, .used_bytes = 500 * MB};
    struct place_cluster tight = {.capacity_bytes = 1000 * MB, .used_bytes = 920 * MB};
    struct place_cluster short_ = {.capacity_bytes = 1000 * MB, .used_bytes = 950 * MB};
    struct place_copies d;

    /* sustained use: used now and at a check 10 min ago -> a second copy */
    struct place_usage u = {.copies = 1,
                            .eligible_instances = 3,
                            .requests_per_min = 5,
                            .used_since_last_check = true,
                            .last_used_ms = NOW,
                            .prior_use_check_ms = NOW - 10 * MIN_MS};
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_ADD);
    CHECK_INT(d.target, 2);
    /* the gap's edges: 7 and 40 minutes inclusive */
    u.prior_use_check_ms = NOW - 7 * MIN_MS;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_ADD);
    u.prior_use_check_ms = NOW - 7 * MIN_MS + 1;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    u.prior_use_check_ms = NOW - 40 * MIN_MS - 1;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    u.prior_use_check_ms = 0;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    /* not used since the last check */
    u.prior_use_check_ms = NOW - 10 * MIN_MS;
    u.used_since_last_check = false;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    u.used_since_last_check = true;
    /* under 10 % free in the cluster; one eligible instance only */
    place_copies_decide(&cfg, &u, &tight, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    CHECK(strstr(d.why, "free space") != NULL);
    u.eligible_instances = 1;
    place_copies_decide(&cfg, &u, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    u.eligible_instances = 3;

    /* rate: above 2000/min per copy -> one more, step by step, up to the instances */
    struct place_usage hot = {.copies = 2,
                              .eligible_instances = 3,
                              .requests_per_min = 4001,
                              .used_since_last_check = true,
                              .last_used_ms = NOW};
    place_copies_decide(&cfg, &hot, &tight, NOW, &d); /* tight but not short: yes */
    CHECK_INT(d.action, PLACE_COPIES_ADD);
    CHECK_INT(d.target, 3);
    hot.requests_per_min = 4000;
    place_copies_decide(&cfg, &hot, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    hot.copies = 3;
    hot.requests_per_min = 100000;
    place_copies_decide(&cfg, &hot, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP); /* no instance left */
    hot.copies = 2;
    place_copies_decide(&cfg, &hot, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP); /* short of space */
    cfg.max_copies = 2;
    place_copies_decide(&cfg, &hot, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    cfg.max_copies = 0;

    /* removal: only when short of space, and only idle or well under the rate */
    struct place_usage idle = {.copies = 2,
                               .eligible_instances = 3,
                               .requests_per_min = 0,
                               .last_used_ms = NOW - 41 * MIN_MS};
    place_copies_decide(&cfg, &idle, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    place_copies_decide(&cfg, &idle, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_REMOVE);
    CHECK_INT(d.target, 1);
    idle.last_used_ms = NOW - 39 * MIN_MS;
    place_copies_decide(&cfg, &idle, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    idle.copies = 1;
    idle.last_used_ms = NOW - 100 * MIN_MS;
    place_copies_decide(&cfg, &idle, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP); /* never the last copy */
    struct place_usage cooled = {.copies = 4,
                                 .eligible_instances = 5,
                                 .requests_per_min = 2999,
                                 .used_since_last_check = true,
                                 .last_used_ms = NOW};
    place_copies_decide(&cfg, &cooled, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_REMOVE); /* 2999 < 3 x 2000 / 2 */
    CHECK_INT(d.target, 3);
    cooled.requests_per_min = 3000;
    place_copies_decide(&cfg, &cooled, &short_, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    cooled.requests_per_min = 2999;
    place_copies_decide(&cfg, &cooled, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    /* no copy, and an empty cluster */
    struct place_usage none = {.copies = 0, .eligible_instances = 3, .requests_per_min = 9999};
    place_copies_decide(&cfg, &none, &roomy, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
    struct place_cluster empty = {0};
    place_copies_decide(&cfg, &u, &empty, NOW, &d);
    CHECK_INT(d.action, PLACE_COPIES_KEEP);
}

static void test_times(void)
{
    struct place_config cfg;
    place_config_init(&cfg);
    CHECK_INT(place_initial_last_used(&cfg, NOW, true), NOW - 3600000);
    CHECK_INT(place_initial_last_used(&cfg, NOW, false), NOW - 6 * 3600000LL);
    /* not used recently: 15 min */
    CHECK(!place_failure_expired(&cfg, NOW - 15 * MIN_MS + 1, NOW - 10 * MIN_MS, NOW));
    CHECK(place_failure_expired(&cfg, NOW - 15 * MIN_MS, NOW - 10 * MIN_MS, NOW));
    /* used within 3 min: 7.5 min */
    CHECK(!place_failure_expired(&cfg, NOW - 7 * MIN_MS, NOW - MIN_MS, NOW));
    CHECK(place_failure_expired(&cfg, NOW - 450000, NOW - MIN_MS, NOW));
    CHECK_STR(place_reason_str(PLACE_NO_TYPE), "no instance serves the model's type");
    struct place_choice ok = {.reason = PLACE_OK};
    CHECK_INT(place_choice_error(&ok, "m", 1, NULL), 0);
}

/* Rendezvous scores: a function of the bytes only (every node computes the same), the name and
 * the id kept apart, and primaries spread over the instances rather than one taking all. */
static void test_rendezvous(void)
{
    CHECK(place_rendezvous("m1", 2, "n1", 2) == place_rendezvous("m1", 2, "n1", 2));
    CHECK(place_rendezvous("ab", 2, "c", 1) != place_rendezvous("a", 1, "bc", 2));
    CHECK(place_rendezvous("m1", 2, "n1", 2) != place_rendezvous("m1", 2, "n2", 2));
    unsigned wins[3] = {0};
    static const char *const iids[3] = {"node-a", "node-b", "node-c"};
    for (int k = 0; k < 3000; k++) {
        char id[16];
        int len = snprintf(id, sizeof(id), "model-%d", k);
        int best = 0;
        for (int i = 1; i < 3; i++)
            if (place_rendezvous(id, (size_t)len, iids[i], 6) >
                place_rendezvous(id, (size_t)len, iids[best], 6))
                best = i;
        wins[best]++;
    }
    for (int i = 0; i < 3; i++)
        CHECK(wins[i] > 800 && wins[i] < 1200); /* 1000 each, give or take */
}

int main(void)
{
    test_rendezvous();
    test_order();
    test_herd_spreading();
    test_labels();
    test_exclusions();
    test_churn_guard();
    test_zones();
    test_edges();
    test_instance_default();
    test_copies();
    test_times();
    return CHECK_DONE();
}
