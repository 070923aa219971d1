/* place.c - placement decisions (see place.h for the rules, docs/placement.md for why). */
#include "mm/place.h"

#include <errno.h>
#include <string.h>

#include "mm/cache.h"
#include "mm/hash.h"

#define MINUTE_MS (60 * 1000LL)
#define HOUR_MS (60 * MINUTE_MS)
/* The short list is kept in place; a longer one would spread no better than random choice. */
#define SHORTLIST_MAX 16

void place_config_init(struct place_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->default_size_bytes = CACHE_DEFAULT_SIZE_BYTES;
    cfg->reserve_permille = CACHE_DEFAULT_RESERVE_PERMILLE;
    cfg->min_churn_age_ms = cache_min_churn_age_ms(CACHE_DEFAULT_LOAD_TIMEOUT_MS);
    cfg->shortlist = 3;
    cfg->shortlist_min_permille = 500;
    cfg->second_copy_min_gap_ms = 7 * MINUTE_MS;
    cfg->second_copy_max_gap_ms = 40 * MINUTE_MS;
    cfg->second_copy_min_free_permille = 100;
    cfg->scale_up_rpm = 2000;
    cfg->short_free_permille = 50;
    cfg->extra_copy_idle_ms = 40 * MINUTE_MS;
    cfg->max_copies = 0;
    cfg->new_model_age_load_now_ms = HOUR_MS;
    cfg->new_model_age_ms = 6 * HOUR_MS;
    cfg->failure_expiry_ms = 15 * MINUTE_MS;
    cfg->failure_expiry_used_ms = 15 * MINUTE_MS / 2;
    cfg->failure_recent_use_ms = 3 * MINUTE_MS;
}

static bool str_eq(const struct place_str *a, const struct place_str *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool str_in(const struct place_str *s, const struct place_str *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (str_eq(s, &list[i]))
            return true;
    return false;
}

static bool labels_satisfied(const struct place_model *m, const struct place_instance *in)
{
    for (size_t i = 0; i < m->n_labels; i++)
        if (!str_in(&m->labels[i], in->labels, in->n_labels))
            return false;
    return true;
}

/* A qualifying instance's rank. key holds the first three criteria in one number (higher is
 * better): bit 63 = has enough free space, bit 62 = its zone holds no copy yet, then free space
 * (enough-space class) or the inverted oldest LRU time (must-evict class), clamped to 62 bits;
 * so that most instances are ranked by one comparison. */
struct candidate {
    uint64_t key;
    uint64_t free;
    int64_t oldest;
    size_t index;
    bool must_evict;
};

#define KEY_LOW_MAX ((UINT64_C(1) << 62) - 1)

static inline uint64_t rank_key(bool must_evict, bool zone_has_copy, uint64_t free, int64_t oldest)
{
    uint64_t key = (uint64_t)!must_evict << 63 | (uint64_t)!zone_has_copy << 62;
    if (!must_evict)
        return key | (free < KEY_LOW_MAX ? free : KEY_LOW_MAX);
    uint64_t age = oldest <= 0                      ? 0
                   : (uint64_t)oldest < KEY_LOW_MAX ? (uint64_t)oldest
                                                    : KEY_LOW_MAX;
    return key | (KEY_LOW_MAX - age);
}

/* Equal keys mean the same class, zone rank and first criterion: the second decides, then
 * the list's order. */
static inline bool better(const struct candidate *a, const struct candidate *b)
{
    if (a->key != b->key)
        return a->key > b->key;
    if (a->must_evict) {
        if (a->free != b->free)
            return a->free > b->free;
    } else if (a->oldest != b->oldest) {
        return a->oldest < b->oldest;
    }
    return a->index < b->index;
}

static enum place_reason none_reason(const struct place_choice *c, size_t n)
{
    if (n == 0)
        return PLACE_NO_INSTANCES;
    if (c->n_wrong_type == n)
        return PLACE_NO_TYPE;
    if (c->n_churn_guarded)
        return PLACE_CHURN_GUARDED;
    if (c->n_shutting_down)
        return PLACE_SHUTTING_DOWN;
    if (c->n_failed)
        return PLACE_FAILED_RECENTLY;
    if (c->n_too_small)
        return PLACE_TOO_BIG;
    return PLACE_ALL_HOLD_COPY;
}

uint64_t place_size_on(const struct place_config *cfg, const struct place_instance *in,
                       uint64_t size_bytes)
{
    if (size_bytes)
        return size_bytes;
    if (in && in->default_size_bytes)
        return in->default_size_bytes;
    return cfg->default_size_bytes;
}

int place_choose(const struct place_config *cfg, const struct place_model *m,
                 const struct place_instance *instances, size_t n, int64_t now_ms, uint64_t random,
                 struct place_choice *out)
{
    memset(out, 0, sizeof(*out));
    if (n > 0 && !instances)
        return -EINVAL;
    size_t want = cfg->shortlist ? cfg->shortlist : 1;
    if (want > SHORTLIST_MAX)
        want = SHORTLIST_MAX;
    int64_t young_after = now_ms - cfg->min_churn_age_ms;

    /* best[0..k): the best candidates so far, in order. */
    struct candidate best[SHORTLIST_MAX];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct place_instance *in = &instances[i];
        uint64_t cap = in->capacity_bytes;
        uint64_t size = place_size_on(cfg, in, m->size_bytes);
        uint64_t free = cache_load_free(cap, in->used_bytes, cfg->reserve_permille);
        bool must_evict = free < size;
        bool zone_has_copy =
            m->n_copy_zones > 0 && str_in(&in->zone, m->copy_zones, m->n_copy_zones);
        struct candidate c = {.key = rank_key(must_evict, zone_has_copy, free, in->oldest_used_ms),
                              .free = free,
                              .oldest = in->oldest_used_ms,
                              .index = i,
                              .must_evict = must_evict};
        /* Ranked first, as numbers: once the short list is full, an instance that would not
         * enter it is passed over without comparing labels and ids (most of the cost). */
        if (k == want && c.key < best[k - 1].key)
            continue;
        if (k == want && !better(&c, &best[k - 1]))
            continue;
        if (!labels_satisfied(m, in)) {
            out->n_wrong_type++;
            continue;
        }
        if (str_in(&in->id, m->held_by, m->n_held_by)) {
            out->n_holding++;
            continue;
        }
        if (str_in(&in->id, m->failed_on, m->n_failed_on)) {
            out->n_failed++;
            continue;
        }
        if (in->shutting_down) {
            out->n_shutting_down++;
            continue;
        }
        if (cap == 0 || cap - cache_reserve_bytes(cap, cfg->reserve_permille) < size) {
            out->n_too_small++;
            continue;
        }
        /* It would have to evict, and cannot: nothing loaded to evict (all loading), or its
         * coldest copy is too recent. */
        if (c.must_evict && (in->loaded == 0 || in->oldest_used_ms > young_after)) {
            out->n_churn_guarded++;
            continue;
        }
        size_t j = k < want ? k++ : k - 1;
        while (j > 0 && better(&c, &best[j - 1])) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = c;
    }
    if (k == 0) {
        out->reason = none_reason(out, n);
        return -ENOSPC;
    }

    /* The short list: the best and those of its class and zone rank that are close enough. */
    size_t len = 1;
    while (len < k && best[len].key >> 62 == best[0].key >> 62 &&
           (best[0].must_evict ||
            best[len].free >= best[0].free / 1000 * cfg->shortlist_min_permille +
                                  best[0].free % 1000 * cfg->shortlist_min_permille / 1000))
        len++;
    const struct candidate *pick = &best[random % len];
    out->index = pick->index;
    out->must_evict = pick->must_evict;
    out->shortlist_len = len;
    out->reason = PLACE_OK;
    return 0;
}

const char *place_reason_str(enum place_reason reason)
{
    switch (reason) {
    case PLACE_OK:
        return "placed";
    case PLACE_NO_INSTANCES:
        return "no instances";
    case PLACE_NO_TYPE:
        return "no instance serves the model's type";
    case PLACE_CHURN_GUARDED:
        return "the instances that serve it are full of copies used within the churn age";
    case PLACE_SHUTTING_DOWN:
        return "the instances that serve it are shutting down";
    case PLACE_FAILED_RECENTLY:
        return "it failed to load recently on every instance that serves it";
    case PLACE_TOO_BIG:
        return "it is larger than any instance that serves it can hold";
    case PLACE_ALL_HOLD_COPY:
        return "every instance that serves it holds a copy";
    }
    return "unknown reason";
}

int place_choice_error(const struct place_choice *c, const char *model_id, size_t id_len,
                       struct mm_error *err)
{
    if (c->reason == PLACE_OK)
        return 0;
    int len = id_len > 200 ? 200 : (int)id_len;
    return mm_error_set(err, -ENOSPC,
                        "model %.*s: no instance can load it: %s (excluded: %zu wrong type, "
                        "%zu hold a copy, %zu failed it, %zu shutting down, %zu too small, "
                        "%zu churn-guarded)",
                        len, model_id, place_reason_str(c->reason), c->n_wrong_type, c->n_holding,
                        c->n_failed, c->n_shutting_down, c->n_too_small, c->n_churn_guarded);
}

static uint64_t free_permille(const struct place_cluster *cl)
{
    if (cl->capacity_bytes == 0)
        return 0;
    uint64_t used = cl->used_bytes < cl->capacity_bytes ? cl->used_bytes : cl->capacity_bytes;
    uint64_t free = cl->capacity_bytes - used;
    /* free / capacity in thousandths without overflowing free * 1000 */
    return (uint64_t)((double)free * 1000.0 / (double)cl->capacity_bytes);
}

void place_copies_decide(const struct place_config *cfg, const struct place_usage *u,
                         const struct place_cluster *cl, int64_t now_ms, struct place_copies *out)
{
    out->action = PLACE_COPIES_KEEP;
    out->target = u->copies;
    out->why = "nothing to change";
    if (u->copies == 0) {
        out->why = "no copy: loading on demand";
        return;
    }
    uint64_t free = free_permille(cl);
    bool short_of_space = free <= cfg->short_free_permille;
    uint32_t limit = u->eligible_instances;
    if (cfg->max_copies && cfg->max_copies < limit)
        limit = cfg->max_copies;
    uint64_t rpm = u->requests_per_min;
    uint64_t per_copy = cfg->scale_up_rpm;

    if (per_copy && rpm > (uint64_t)u->copies * per_copy) {
        if (u->copies >= limit) {
            out->why = "request rate over the per-copy threshold, but no instance left";
        } else if (short_of_space) {
            out->why =
                "request rate over the per-copy threshold, but the cluster is short of space";
        } else {
            out->action = PLACE_COPIES_ADD;
            out->target = u->copies + 1;
            out->why = "request rate over the per-copy threshold";
        }
        return;
    }
    if (u->copies == 1) {
        int64_t gap = now_ms - u->prior_use_check_ms;
        bool sustained = u->used_since_last_check && u->prior_use_check_ms != 0 &&
                         gap >= cfg->second_copy_min_gap_ms && gap <= cfg->second_copy_max_gap_ms;
        if (!sustained)
            return;
        if (limit < 2)
            out->why = "in sustained use, but no other instance serves it";
        else if (free < cfg->second_copy_min_free_permille)
            out->why = "in sustained use, but the cluster has too little free space";
        else {
            out->action = PLACE_COPIES_ADD;
            out->target = 2;
            out->why = "in sustained use";
        }
        return;
    }
    if (!short_of_space)
        return;
    if (now_ms - u->last_used_ms >= cfg->extra_copy_idle_ms) {
        out->action = PLACE_COPIES_REMOVE;
        out->target = u->copies - 1;
        out->why = "idle extra copy while the cluster is short of space";
        return;
    }
    /* With one copy fewer, would each still see under half the scale-up rate? The half keeps a
     * copy added at the threshold from going again at once. Two copies stay while in use: the
     * second was earned by sustained use. */
    if (per_copy && u->copies > 2 && rpm * 2 < (uint64_t)(u->copies - 1) * per_copy) {
        out->action = PLACE_COPIES_REMOVE;
        out->target = u->copies - 1;
        out->why = "request rate fell well below the per-copy threshold while the cluster is "
                   "short of space";
    }
}

int64_t place_initial_last_used(const struct place_config *cfg, int64_t now_ms, bool load_now)
{
    return now_ms - (load_now ? cfg->new_model_age_load_now_ms : cfg->new_model_age_ms);
}

bool place_failure_expired(const struct place_config *cfg, int64_t failed_ms,
                           int64_t model_last_used_ms, int64_t now_ms)
{
    bool used_recently = now_ms - model_last_used_ms <= cfg->failure_recent_use_ms;
    int64_t expiry = used_recently ? cfg->failure_expiry_used_ms : cfg->failure_expiry_ms;
    return now_ms - failed_ms >= expiry;
}

uint64_t place_rendezvous(const char *name, size_t len, const char *iid, size_t iid_len)
{
    uint64_t h = mm_hash_more(MM_HASH_INIT, name, len);
    h = mm_hash_more(h, "", 1); /* ("ab", "c") and ("a", "bc") score apart */
    return mm_hash_finish(mm_hash_more(h, iid, iid_len));
}
