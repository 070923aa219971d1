/* table.c - the routing table from the registry mirror (see table.h). */
#include "mm/table.h"

#include <errno.h>
#include <ev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/copies.h"
#include "mm/hash.h"
#include "mm/metrics.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/records.h"
#include "mm/rpc.h"

#define WHO "table"
#define MAX_CANDIDATES 64 /* Loaded copies a pick looks at */
#define USE_FLUSH_S 1.0   /* the fast path's uses handed to the mesh and the LRU */
#define REPUBLISH_S 0.1   /* a snapshot that could not be built (memory): tried again */
/* a model's placements elsewhere start this far apart at least (a burst of calls failing at
 * once asks for one), and each is waited for this long at most */
#define FAILOVER_WINDOW_MS 2000
#define FAILOVER_TIMEOUT_MS 60000

/* ------------------------------------------------------------------ a map of byte keys */

struct hlink {
    struct hlink *next;
    const char *key;
    size_t len;
};

struct hmap {
    struct hlink **b;
    size_t n, size;
};

static uint64_t hash_of(const char *p, size_t len)
{
    return mm_hash(p, len);
}

static struct hlink *hmap_get(const struct hmap *m, const char *key, size_t len)
{
    if (!m->size)
        return NULL;
    for (struct hlink *l = m->b[hash_of(key, len) & (m->size - 1)]; l; l = l->next)
        if (l->len == len && memcmp(l->key, key, len) == 0)
            return l;
    return NULL;
}

static int hmap_put(struct hmap *m, struct hlink *l)
{
    if (m->n + 1 > m->size * 3 / 4) {
        size_t size = m->size ? m->size * 2 : 64;
        struct hlink **b = calloc(size, sizeof(*b));
        if (!b)
            return -ENOMEM;
        for (size_t i = 0; i < m->size; i++)
            for (struct hlink *x = m->b[i], *next; x; x = next) {
                next = x->next;
                size_t k = hash_of(x->key, x->len) & (size - 1);
                x->next = b[k];
                b[k] = x;
            }
        free(m->b);
        m->b = b;
        m->size = size;
    }
    size_t k = hash_of(l->key, l->len) & (m->size - 1);
    l->next = m->b[k];
    m->b[k] = l;
    m->n++;
    return 0;
}

static void hmap_del(struct hmap *m, struct hlink *l)
{
    for (struct hlink **p = &m->b[hash_of(l->key, l->len) & (m->size - 1)]; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            m->n--;
            return;
        }
}

/* ------------------------------------------------------------------ entries */

/* Requests in flight on a copy and its uses not yet handed to the mesh, shared by the loop's
 * picks and the fast path's: held by the copy's entry, by each snapshot naming it and by each
 * forward counted on it, freed by the last (any thread). */
struct table_count {
    atomic_uint inflight;
    atomic_uint uses;
    atomic_uint refs;
    struct table *t;
};

static struct table_count *count_new(struct table *t)
{
    struct table_count *c = calloc(1, sizeof(*c));
    if (c) {
        atomic_init(&c->refs, 1);
        c->t = t;
    }
    return c;
}

static void count_ref(struct table_count *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void count_unref(struct table_count *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        free(c);
}

static void count_leave(struct table_count *c)
{
    unsigned n = atomic_load_explicit(&c->inflight, memory_order_relaxed);
    while (n && !atomic_compare_exchange_weak_explicit(&c->inflight, &n, n - 1,
                                                       memory_order_relaxed,
                                                       memory_order_relaxed))
        ;
}

struct tcopy {
    struct tcopy *next;
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
    enum copy_state state;
    bool local;                /* this node's own copy */
    struct table_count *count;
};

struct table_model {
    struct hlink link; /* first */
    char id[KEYS_NAME_MAX + 1];
    size_t id_len;
    struct tcopy *copies;
    size_t n_copies;
    struct table_waiter *waiters;
    size_t n_waiters;
    struct mesh_op *op; /* the placement and wait for the waiters */
    struct mesh_op *failover; /* a copy placed off instances that could not be reached */
    int64_t failover_ms;      /* monotonic, when the last one started; 0 = never */
    struct table *t;
};

struct tinst {
    struct hlink link; /* first */
    char id[KEYS_NAME_MAX + 1];
    size_t id_len;
    char address[256];
    struct rpc_channel *ch; /* NULL until first picked */
    bool shutting_down;
};

struct tvmodel {
    struct hlink link; /* first */
    char name[KEYS_NAME_MAX + 1];
    size_t name_len;
    char active[KEYS_NAME_MAX + 1];
    size_t active_len;
};

struct table {
    struct table_config cfg;
    char cluster[KEYS_NAME_MAX + 1];
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
    bool has_local;
    char runtime[256];
    struct rpc_channel *runtime_ch;
    char prefix[KEYS_MAX];
    size_t prefix_len;
    struct mirror_sub *sub_copies, *sub_instances, *sub_vmodels;
    struct hmap models, insts, vmodels;
    size_t parked;
    uint64_t rng;
    struct table_stats stats;
    /* the fast path */
    struct ev_loop *loop;
    struct rpc_snapshot *snap;
    ev_timer publish_timer, use_timer;
    bool dirty;
    uint64_t fast_rng; /* the CQ thread's */
    atomic_uint_fast64_t fast_picks;
    struct metric *cache_miss; /* NULL: metrics off */
};

static int64_t now_ms(void);

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void changed(struct table *t)
{
    t->dirty = true;
    if (t->snap && !ev_is_active(&t->publish_timer)) {
        ev_timer_set(&t->publish_timer, 0., 0.); /* next loop iteration: changes coalesce */
        ev_timer_start(t->loop, &t->publish_timer);
    }
}

static uint64_t next_random(struct table *t)
{
    uint64_t x = t->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static struct table_model *model_find(const struct table *t, const char *id, size_t len)
{
    return (struct table_model *)hmap_get(&t->models, id, len);
}

static struct table_model *model_get(struct table *t, const char *id, size_t len)
{
    struct table_model *m = model_find(t, id, len);
    if (m || len > KEYS_NAME_MAX)
        return m;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    memcpy(m->id, id, len);
    m->id_len = len;
    m->link.key = m->id;
    m->link.len = len;
    m->t = t;
    if (hmap_put(&t->models, &m->link) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

/* Forget an entry that holds nothing: no copy, no waiter, no operation. */
static void model_maybe_free(struct table *t, struct table_model *m)
{
    if (m->copies || m->waiters || m->op || m->failover)
        return;
    hmap_del(&t->models, &m->link);
    free(m);
}

static struct tcopy *copy_find(const struct table_model *m, const char *iid, size_t len)
{
    for (struct tcopy *c = m->copies; c; c = c->next)
        if (c->iid_len == len && memcmp(c->iid, iid, len) == 0)
            return c;
    return NULL;
}

/* ------------------------------------------------------------------ waking */

/* Every waiter of m, woken with status (each out of the table before its callback). The
 * callbacks may park again (onto a fresh list) or unpark others: the list is taken first. */
static void wake_all(struct table *t, struct table_model *m, int status, const char *why)
{
    struct table_waiter *list = m->waiters;
    m->waiters = NULL;
    for (struct table_waiter *w = list; w; w = w->next)
        w->model = NULL;
    t->parked -= m->n_waiters;
    m->n_waiters = 0;
    if (!status && t->cache_miss) { /* Loaded: the calls' first wait ends here */
        metric_model_t mo = metrics_model(t->cfg.metrics, m->id, m->id_len);
        int64_t now = mono_ns();
        for (struct table_waiter *w = list; w; w = w->next)
            if (w->parked_ns > 0) {
                metric_observe(t->cache_miss, mo, 0, 0, (double)(now - w->parked_ns) / 1e6);
                w->parked_ns = -1;
            }
    }
    if (m->op && !status) { /* nobody waits for it any more */
        mesh_op_cancel(m->op);
        m->op = NULL;
    }
    /* m may be freed by a callback's unpark or re-park: do not touch it below */
    while (list) {
        struct table_waiter *w = list;
        list = w->next;
        if (list)
            list->prev = NULL;
        w->next = w->prev = NULL;
        t->stats.wakes++;
        w->wake(w, status, why);
    }
}

/* Whether a pick would find a copy of m now (a Loaded copy with an address, or the local
 * one): only then are waiters woken outside a copy's event, so that a wake never leads to a
 * failed pick, a new park and an immediate wake again. */
static bool pickable(const struct table *t, const struct table_model *m)
{
    struct copies_info info;
    if (t->has_local && copies_get(t->cfg.copies, m->id, m->id_len, &info) == 0 &&
        info.state == COPY_LOADED)
        return true;
    for (const struct tcopy *c = m->copies; c; c = c->next) {
        if (c->state != COPY_LOADED)
            continue;
        const struct tinst *in = (const struct tinst *)hmap_get(&t->insts, c->iid, c->iid_len);
        if (in && in->address[0] &&
            !(t->has_local && c->iid_len == t->iid_len && memcmp(c->iid, t->iid, t->iid_len) == 0))
            return true;
    }
    return false;
}

static void wake_later_check(struct table *t, struct table_model *m)
{
    if (m->waiters && pickable(t, m)) {
        wake_all(t, m, 0, NULL);
        return; /* m may be gone */
    }
    model_maybe_free(t, m);
}

static void on_ensured(int status, const struct mm_error *err, const struct mesh_status *st,
                       void *arg)
{
    struct table_model *m = arg;
    struct table *t = m->t;
    m->op = NULL;
    if (status < 0 && m->waiters) {
        char why[MM_ERROR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err && err->msg[0] ? err->msg : mm_strerror(status));
        wake_all(t, m, status, why); /* m may be gone */
        return;
    }
    /* Loaded: its copy's event wakes the waiters, if the table has not seen it yet */
    wake_later_check(t, m);
}

/* A placement elsewhere ended: Loaded, its copy wakes the waiters (if the table has not seen it
 * yet). Failed (no room elsewhere, ...): the waiters keep waiting for the registry to change,
 * as they would have without it, until their deadlines. */
static void on_failed_over(int status, const struct mm_error *err, const struct mesh_status *st,
                           void *arg)
{
    (void)st;
    struct table_model *m = arg;
    struct table *t = m->t;
    m->failover = NULL;
    if (status < 0) { /* the copy not reached still looks Loaded: a wake would find nothing */
        mm_log(MM_LOG_INFO, WHO, "model %.*s: no copy placed off the instances not reached: %s",
               (int)m->id_len, m->id, err && err->msg[0] ? err->msg : mm_strerror(status));
        model_maybe_free(t, m);
        return;
    }
    wake_later_check(t, m); /* m may be gone */
}

/* ------------------------------------------------------------------ mirror events */

static void on_copy(const struct mirror_event *ev, void *arg)
{
    struct table *t = arg;
    struct key_parts kp;
    if (keys_parse_relative(ev->key + t->prefix_len, ev->key_len - t->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY || kp.first_len > KEYS_NAME_MAX || kp.second_len > KEYS_NAME_MAX)
        return;
    struct table_model *m = model_find(t, kp.first, kp.first_len);
    if (ev->kind == MIRROR_DELETE) {
        if (!m)
            return;
        for (struct tcopy **p = &m->copies; *p; p = &(*p)->next)
            if ((*p)->iid_len == kp.second_len && memcmp((*p)->iid, kp.second, kp.second_len) == 0) {
                struct tcopy *c = *p;
                *p = c->next;
                count_unref(c->count);
                free(c);
                m->n_copies--;
                changed(t);
                break;
            }
        model_maybe_free(t, m);
        return;
    }
    struct copy_record rec;
    struct mm_error err = {0};
    if (record_decode(RECORD_COPY, ev->new_value, ev->new_len, &rec, &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "copy %.*s on %.*s: unreadable record, not routed to: %s",
               (int)kp.first_len, kp.first, (int)kp.second_len, kp.second, err.msg);
        rec.state = COPY_FAILED;
    }
    if (!m && !(m = model_get(t, kp.first, kp.first_len)))
        return;
    struct tcopy *c = copy_find(m, kp.second, kp.second_len);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (c && !(c->count = count_new(t))) {
            free(c);
            c = NULL;
        }
        if (!c) {
            model_maybe_free(t, m);
            return;
        }
        memcpy(c->iid, kp.second, kp.second_len);
        c->iid_len = kp.second_len;
        c->local = t->has_local && kp.second_len == t->iid_len &&
                   memcmp(kp.second, t->iid, t->iid_len) == 0;
        c->next = m->copies;
        m->copies = c;
        m->n_copies++;
    }
    if (c->state != rec.state)
        changed(t);
    c->state = rec.state;
    if (c->state == COPY_LOADED && m->waiters && pickable(t, m))
        wake_all(t, m, 0, NULL);
}

static void inst_apply(struct table *t, const char *id, size_t len, const char *value,
                       size_t value_len)
{
    struct tinst *in = (struct tinst *)hmap_get(&t->insts, id, len);
    if (!value) {
        if (in) {
            hmap_del(&t->insts, &in->link);
            free(in); /* its channel stays the context's (rpc_channel_for) */
            changed(t);
        }
        return;
    }
    struct instance_record rec;
    struct mm_error err = {0};
    if (record_decode(RECORD_INSTANCE, value, value_len, &rec, &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "instance %.*s: unreadable record, not routed to: %s", (int)len,
               id, err.msg);
        inst_apply(t, id, len, NULL, 0);
        return;
    }
    if (!in) {
        if (len > KEYS_NAME_MAX || !(in = calloc(1, sizeof(*in))))
            return;
        memcpy(in->id, id, len);
        in->id_len = len;
        in->link.key = in->id;
        in->link.len = len;
        if (hmap_put(&t->insts, &in->link) < 0) {
            free(in);
            return;
        }
        changed(t);
    }
    if (strcmp(in->address, rec.address) != 0) {
        snprintf(in->address, sizeof(in->address), "%s", rec.address);
        in->ch = NULL;
        changed(t);
    }
    if (in->shutting_down != rec.shutting_down)
        changed(t);
    in->shutting_down = rec.shutting_down;
}

static void on_instance(const struct mirror_event *ev, void *arg)
{
    struct table *t = arg;
    const char *id = ev->key + t->prefix_len + strlen("instances/");
    size_t len = ev->key_len - t->prefix_len - strlen("instances/");
    inst_apply(t, id, len, ev->kind == MIRROR_DELETE ? NULL : ev->new_value, ev->new_len);
}

static void vmodel_apply(struct table *t, const char *name, size_t len, const char *value,
                         size_t value_len)
{
    struct tvmodel *v = (struct tvmodel *)hmap_get(&t->vmodels, name, len);
    struct vmodel_record rec;
    struct mm_error err = {0};
    if (value && record_decode(RECORD_VMODEL, value, value_len, &rec, &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "vmodel %.*s: unreadable record, not resolved: %s", (int)len,
               name, err.msg);
        value = NULL;
    }
    if (!value || !rec.active_model_id[0]) {
        if (v) {
            hmap_del(&t->vmodels, &v->link);
            free(v);
            changed(t);
        }
        return;
    }
    if (!v) {
        if (len > KEYS_NAME_MAX || !(v = calloc(1, sizeof(*v))))
            return;
        memcpy(v->name, name, len);
        v->name_len = len;
        v->link.key = v->name;
        v->link.len = len;
        if (hmap_put(&t->vmodels, &v->link) < 0) {
            free(v);
            return;
        }
    }
    v->active_len = strnlen(rec.active_model_id, KEYS_NAME_MAX);
    memcpy(v->active, rec.active_model_id, v->active_len);
    v->active[v->active_len] = '\0';
    changed(t);
}

static void on_vmodel(const struct mirror_event *ev, void *arg)
{
    struct table *t = arg;
    const char *name = ev->key + t->prefix_len + strlen("vmodels/");
    size_t len = ev->key_len - t->prefix_len - strlen("vmodels/");
    vmodel_apply(t, name, len, ev->kind == MIRROR_DELETE ? NULL : ev->new_value, ev->new_len);
}

/* The mirror's contents when the table starts: each as if it had just come. */
static int seed(const struct mirror_entry *e, void *arg)
{
    struct table *t = arg;
    struct mirror_event ev = {
        .kind = MIRROR_PUT,
        .key = e->key,
        .key_len = e->key_len,
        .new_value = e->value,
        .new_len = e->value_len,
        .revision = e->mod_revision,
        .entry = e,
    };
    const char *rel = e->key + t->prefix_len;
    if (strncmp(rel, "copies/", 7) == 0)
        on_copy(&ev, t);
    else if (strncmp(rel, "instances/", 10) == 0)
        on_instance(&ev, t);
    else if (strncmp(rel, "vmodels/", 8) == 0)
        on_vmodel(&ev, t);
    return 0;
}

/* ------------------------------------------------------------------ the snapshot */

struct snap_target {
    struct rpc_channel *ch;
    struct table_count *count;
};

struct snap_model {
    struct snap_model *next;
    const char *id;
    uint32_t len;
    uint32_t n, n_live;         /* remote targets; those of live instances first */
    struct snap_target *local;  /* this node's Loaded copy, or NULL */
    struct snap_target *remote;
};

struct snap_vmodel {
    struct snap_vmodel *next;
    const char *name, *active;
    uint32_t len, active_len;
};

/* One allocation: the buckets, the entries and their strings; the counters it names, each
 * referenced once, released when it is freed (on the loop, by rpc_snapshot). */
struct table_snap {
    size_t mmask, vmask;
    struct snap_model **models;
    struct snap_vmodel **vmodels;
    size_t n_counts;
    struct table_count **counts;
};

static void snap_free(void *value)
{
    struct table_snap *s = value;
    for (size_t i = 0; i < s->n_counts; i++)
        count_unref(s->counts[i]);
    free(s);
}

/* A bump allocator over the snapshot's one block. */
struct arena {
    char *p, *end;
};

static void *take(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->p) < n)
        return NULL; /* sized by the first pass: never */
    void *r = a->p;
    a->p += n;
    return r;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n * 2)
        p *= 2;
    return p;
}

/* The remote copy c can be forwarded to: its instance, with an address and a channel. */
static struct tinst *routable(struct table *t, const struct tcopy *c)
{
    if (c->state != COPY_LOADED || c->local)
        return NULL;
    struct tinst *in = (struct tinst *)hmap_get(&t->insts, c->iid, c->iid_len);
    if (!in || !in->address[0])
        return NULL;
    if (!in->ch) {
        struct mm_error err = {0};
        in->ch = rpc_peer_channel_for(t->cfg.rpc, in->address, &err);
        if (!in->ch)
            mm_log(MM_LOG_WARN, WHO, "instance %.*s: %s", (int)in->id_len, in->id, err.msg);
    }
    return in->ch ? in : NULL;
}

static struct table_snap *snap_build(struct table *t)
{
    /* first pass: sizes */
    size_t n_models = 0, n_targets = 0, bytes = 0;
    for (size_t b = 0; b < t->models.size; b++)
        for (struct hlink *l = t->models.b[b]; l; l = l->next) {
            struct table_model *m = (struct table_model *)l;
            size_t n = 0;
            for (struct tcopy *c = m->copies; c; c = c->next)
                n += (c->local && c->state == COPY_LOADED) || routable(t, c);
            if (n) {
                n_models++;
                n_targets += n;
                bytes += m->id_len + 16;
            }
        }
    size_t n_vm = t->vmodels.n;
    for (size_t b = 0; b < t->vmodels.size; b++)
        for (struct hlink *l = t->vmodels.b[b]; l; l = l->next)
            bytes += l->len + ((struct tvmodel *)l)->active_len + 32;
    size_t msize = pow2_at_least(n_models), vsize = pow2_at_least(n_vm);
    size_t total = sizeof(struct table_snap) + 16 + (msize + vsize + n_targets) * sizeof(void *) +
                   n_models * (sizeof(struct snap_model) + 16) +
                   n_targets * (sizeof(struct snap_target) + 16) +
                   n_vm * (sizeof(struct snap_vmodel) + 16) + bytes + 64;
    char *block = calloc(1, total);
    if (!block)
        return NULL;
    struct arena a = {block, block + total};
    struct table_snap *s = take(&a, sizeof(*s));
    s->mmask = msize - 1;
    s->vmask = vsize - 1;
    s->models = take(&a, msize * sizeof(void *));
    s->vmodels = take(&a, vsize * sizeof(void *));
    s->counts = take(&a, (n_targets ? n_targets : 1) * sizeof(void *));
    /* second pass: the entries */
    for (size_t b = 0; b < t->models.size; b++)
        for (struct hlink *l = t->models.b[b]; l; l = l->next) {
            struct table_model *m = (struct table_model *)l;
            size_t n = 0;
            for (struct tcopy *c = m->copies; c; c = c->next)
                n += (c->local && c->state == COPY_LOADED) || routable(t, c);
            if (!n)
                continue;
            struct snap_model *sm = take(&a, sizeof(*sm));
            char *id = take(&a, m->id_len + 1);
            memcpy(id, m->id, m->id_len);
            sm->id = id;
            sm->len = (uint32_t)m->id_len;
            sm->remote = take(&a, n * sizeof(struct snap_target));
            for (int pass = 0; pass < 2; pass++) /* live instances first */
                for (struct tcopy *c = m->copies; c; c = c->next) {
                    if (c->local) {
                        if (pass == 0 && c->state == COPY_LOADED) {
                            sm->local = take(&a, sizeof(struct snap_target));
                            *sm->local = (struct snap_target){t->runtime_ch, c->count};
                            count_ref(c->count);
                            s->counts[s->n_counts++] = c->count;
                        }
                        continue;
                    }
                    struct tinst *in = routable(t, c);
                    if (!in || in->shutting_down != (pass == 1))
                        continue;
                    sm->remote[sm->n++] = (struct snap_target){in->ch, c->count};
                    sm->n_live += pass == 0;
                    count_ref(c->count);
                    s->counts[s->n_counts++] = c->count;
                }
            size_t k = hash_of(m->id, m->id_len) & s->mmask;
            sm->next = s->models[k];
            s->models[k] = sm;
        }
    for (size_t b = 0; b < t->vmodels.size; b++)
        for (struct hlink *l = t->vmodels.b[b]; l; l = l->next) {
            struct tvmodel *v = (struct tvmodel *)l;
            struct snap_vmodel *sv = take(&a, sizeof(*sv));
            char *name = take(&a, v->name_len + 1), *active = take(&a, v->active_len + 1);
            memcpy(name, v->name, v->name_len);
            memcpy(active, v->active, v->active_len);
            *sv = (struct snap_vmodel){NULL, name, active, (uint32_t)v->name_len,
                                       (uint32_t)v->active_len};
            size_t k = hash_of(v->name, v->name_len) & s->vmask;
            sv->next = s->vmodels[k];
            s->vmodels[k] = sv;
        }
    return s;
}

static void on_publish(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct table *t = w->data;
    if (!t->dirty)
        return;
    struct table_snap *s = snap_build(t);
    if (!s || rpc_snapshot_publish(t->snap, s) < 0) {
        if (s)
            snap_free(s);
        ev_timer_set(w, REPUBLISH_S, 0.); /* memory: the fast path reads the last one */
        ev_timer_start(loop, w);
        return;
    }
    t->dirty = false;
}

/* The fast path's uses of local copies: to the pod's LRU and to the mesh (copy counts). A
 * use is counted by the node whose copy served it (a forward is counted once, on the
 * holder's internal port), so each holder sees its copy's whole rate however many entry
 * points the clients spread over. */
void table_flush_uses(void *arg)
{
    struct table *t = arg;
    int64_t now = 0;
    for (size_t b = 0; b < t->models.size; b++)
        for (struct hlink *l = t->models.b[b]; l; l = l->next) {
            struct table_model *m = (struct table_model *)l;
            unsigned uses = 0;
            for (struct tcopy *c = m->copies; c; c = c->next) {
                unsigned u = atomic_exchange_explicit(&c->count->uses, 0, memory_order_relaxed);
                if (!u || !c->local)
                    continue;
                uses += u;
                if (!now)
                    now = now_ms();
                if (c->local && copies_request_begin(t->cfg.copies, m->id, m->id_len, now) == 0)
                    copies_request_end(t->cfg.copies, m->id, m->id_len); /* the LRU touch */
            }
            if (uses)
                mesh_note_use(t->cfg.mesh, m->id, m->id_len, uses, now);
        }
}

static void on_use_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    table_flush_uses(w->data);
}

const struct table_snap *table_snap(const struct table *t)
{
    return rpc_snapshot_read(t->snap);
}

size_t table_snap_resolve(const struct table_snap *s, const char *name, size_t len,
                          bool as_vmodel, char *out)
{
    if (as_vmodel)
        for (const struct snap_vmodel *v = s->vmodels[hash_of(name, len) & s->vmask]; v;
             v = v->next)
            if (v->len == len && memcmp(v->name, name, len) == 0) {
                memcpy(out, v->active, v->active_len);
                out[v->active_len] = '\0';
                return v->active_len;
            }
    if (len > KEYS_NAME_MAX)
        len = KEYS_NAME_MAX;
    memcpy(out, name, len);
    out[len] = '\0';
    return len;
}

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void count_take(struct table_count *c)
{
    count_ref(c);
    atomic_fetch_add_explicit(&c->inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->uses, 1, memory_order_relaxed);
}

static void count_take_picked(struct table_count *c)
{
    count_take(c);
    atomic_fetch_add_explicit(&c->t->fast_picks, 1, memory_order_relaxed);
}

int table_snap_pick(const struct table_snap *s, const char *id, size_t len,
                    const struct table_count *exclude, bool local_only, uint64_t *rng,
                    struct table_fast_target *out)
{
    const struct snap_model *m = s->models[hash_of(id, len) & s->mmask];
    while (m && !(m->len == len && memcmp(m->id, id, len) == 0))
        m = m->next;
    if (!m)
        return -ENOENT;
    if (m->local && m->local->count != exclude) {
        *out = (struct table_fast_target){m->local->ch, m->local->count, true};
        count_take_picked(out->count);
        return 0;
    }
    if (local_only)
        return -ENOENT;
    size_t cand[MAX_CANDIDATES], n = 0;
    for (uint32_t i = 0; i < m->n && n < MAX_CANDIDATES; i++) {
        if (m->remote[i].count == exclude)
            continue;
        if (i >= m->n_live && n) /* instances shutting down: only when nothing else */
            break;
        cand[n++] = i;
    }
    if (!n)
        return -ENOENT;
    size_t k = cand[0];
    if (n > 1) { /* the better of two random choices */
        size_t a = (size_t)(xorshift(rng) % n), b = (size_t)(xorshift(rng) % (n - 1));
        if (b >= a)
            b++;
        a = cand[a];
        b = cand[b];
        k = atomic_load_explicit(&m->remote[b].count->inflight, memory_order_relaxed) <
                    atomic_load_explicit(&m->remote[a].count->inflight, memory_order_relaxed)
                ? b
                : a;
    }
    *out = (struct table_fast_target){m->remote[k].ch, m->remote[k].count, false};
    count_take_picked(out->count);
    return 0;
}

uint64_t *table_fast_rng(struct table *t)
{
    return &t->fast_rng;
}

struct table *table_count_table(const struct table_count *c)
{
    return c->t;
}

void table_count_done(struct table_count *c)
{
    count_leave(c);
    count_unref(c);
}

/* ------------------------------------------------------------------ the API */

int table_new(const struct table_config *cfg, struct table **out, struct mm_error *err)
{
    if (!cfg || !cfg->cluster || !cfg->mirror || !cfg->mesh || !cfg->rpc ||
        (cfg->iid && (!cfg->runtime || !cfg->copies)))
        return mm_error_set(err, -EINVAL, "table: cluster, mirror, mesh and rpc are required "
                            "(and the runtime and copies with an instance id)");
    struct table *t = calloc(1, sizeof(*t));
    if (!t)
        return mm_error_set(err, -ENOMEM, "table: out of memory");
    t->cfg = *cfg;
    snprintf(t->cluster, sizeof(t->cluster), "%s", cfg->cluster);
    t->cfg.cluster = t->cluster;
    if (cfg->iid) {
        snprintf(t->iid, sizeof(t->iid), "%s", cfg->iid);
        t->iid_len = strlen(t->iid);
        t->has_local = true;
        snprintf(t->runtime, sizeof(t->runtime), "%s", cfg->runtime);
        t->runtime_ch = rpc_channel_for(cfg->rpc, t->runtime, err);
        if (!t->runtime_ch) {
            free(t);
            return err ? err->code : -ENOMEM;
        }
    }
    t->cfg.iid = NULL;
    t->cfg.runtime = NULL;
    t->loop = rpc_context_loop(cfg->rpc);
    ev_init(&t->publish_timer, on_publish);
    t->publish_timer.data = t;
    ev_timer_init(&t->use_timer, on_use_flush, USE_FLUSH_S, USE_FLUSH_S);
    t->use_timer.data = t;
    if (!t->cfg.max_parked)
        t->cfg.max_parked = TABLE_DEFAULT_MAX_PARKED;
    struct metric_desc md = {.name = "modelmesh_cache_miss_milliseconds",
                             .help = "Cache miss delay: a request's wait for its model to load",
                             .type = METRIC_HISTOGRAM,
                             .by_model = true,
                             .buckets = metrics_ms_buckets,
                             .nbuckets = METRICS_MS_BUCKETS_N};
    if (metrics_register(cfg->metrics, &md, &t->cache_miss, err) < 0) {
        free(t);
        return err ? err->code : -ENOMEM;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)t;
    if (!t->rng)
        t->rng = 1;
    t->fast_rng = t->rng ^ 0x9e3779b97f4a7c15ULL;
    if (!t->fast_rng)
        t->fast_rng = 1;
    int rc = keys_prefix(t->prefix, sizeof(t->prefix), t->cluster, err);
    if (rc < 0) {
        free(t);
        return rc;
    }
    t->prefix_len = strlen(t->prefix);
    char p[KEYS_MAX];
    int n = snprintf(p, sizeof(p), "%s", t->prefix);
    if (rpc_snapshot_new(cfg->rpc, snap_free, &t->snap, err) < 0) {
        free(t);
        return err ? err->code : -ENOMEM;
    }
    mirror_foreach_prefix(cfg->mirror, t->prefix, t->prefix_len, seed, t);
    changed(t);
    ev_timer_start(t->loop, &t->use_timer);
    snprintf(p + n, sizeof(p) - (size_t)n, "copies/");
    if (mirror_subscribe(cfg->mirror, p, strlen(p), on_copy, t, &t->sub_copies) < 0)
        goto nomem;
    snprintf(p + n, sizeof(p) - (size_t)n, "instances/");
    if (mirror_subscribe(cfg->mirror, p, strlen(p), on_instance, t, &t->sub_instances) < 0)
        goto nomem;
    snprintf(p + n, sizeof(p) - (size_t)n, "vmodels/");
    if (mirror_subscribe(cfg->mirror, p, strlen(p), on_vmodel, t, &t->sub_vmodels) < 0)
        goto nomem;
    *out = t;
    return 0;
nomem:
    table_free(t);
    return mm_error_set(err, -ENOMEM, "table: out of memory");
}

static void map_free(struct hmap *m, void (*each)(struct hlink *l))
{
    for (size_t i = 0; i < m->size; i++)
        for (struct hlink *l = m->b[i], *next; l; l = next) {
            next = l->next;
            each(l);
        }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

static void free_model(struct hlink *l)
{
    struct table_model *m = (struct table_model *)l;
    for (struct tcopy *c = m->copies, *next; c; c = next) {
        next = c->next;
        count_unref(c->count);
        free(c);
    }
    for (struct table_waiter *w = m->waiters; w; w = w->next)
        w->model = NULL;
    mesh_op_cancel(m->op);
    mesh_op_cancel(m->failover);
    free(m);
}

static void free_plain(struct hlink *l)
{
    free(l);
}

void table_free(struct table *t)
{
    if (!t)
        return;
    mirror_unsubscribe(t->sub_copies);
    mirror_unsubscribe(t->sub_instances);
    mirror_unsubscribe(t->sub_vmodels);
    ev_timer_stop(t->loop, &t->publish_timer);
    ev_timer_stop(t->loop, &t->use_timer);
    rpc_snapshot_free(t->snap); /* freed once no fast handler can be reading it */
    map_free(&t->models, free_model);
    map_free(&t->insts, free_plain);
    map_free(&t->vmodels, free_plain);
    free(t);
}

size_t table_resolve(const struct table *t, const char *name, size_t len, bool as_vmodel,
                     char *out, bool *vmodel)
{
    const struct tvmodel *v = as_vmodel ? (const struct tvmodel *)hmap_get(&t->vmodels, name, len)
                                        : NULL;
    if (vmodel)
        *vmodel = v != NULL;
    if (v) {
        memcpy(out, v->active, v->active_len + 1);
        return v->active_len;
    }
    if (len > KEYS_NAME_MAX)
        len = KEYS_NAME_MAX;
    memcpy(out, name, len);
    out[len] = '\0';
    return len;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int table_pick(struct table *t, const char *id, size_t len, const char *exclude,
               size_t exclude_len, bool local_only, struct table_target *out)
{
    bool excluded_self = exclude && exclude_len == t->iid_len &&
                         memcmp(exclude, t->iid, exclude_len) == 0;
    if (t->has_local && !excluded_self &&
        copies_request_begin(t->cfg.copies, id, len, now_ms()) == 0) {
        out->ch = t->runtime_ch;
        out->local = true;
        memcpy(out->iid, t->iid, t->iid_len + 1);
        out->iid_len = t->iid_len;
        t->stats.picks_local++;
        return 0;
    }
    struct table_model *m = local_only ? NULL : model_find(t, id, len);
    if (!m)
        return -ENOENT;
    struct {
        struct tcopy *c;
        struct tinst *in;
    } cand[MAX_CANDIDATES];
    size_t n = 0, n_live = 0;
    for (struct tcopy *c = m->copies; c && n < MAX_CANDIDATES; c = c->next) {
        if (c->state != COPY_LOADED ||
            (c->iid_len == t->iid_len && t->has_local &&
             memcmp(c->iid, t->iid, t->iid_len) == 0) ||
            (exclude && exclude_len == c->iid_len && memcmp(exclude, c->iid, exclude_len) == 0))
            continue;
        struct tinst *in = (struct tinst *)hmap_get(&t->insts, c->iid, c->iid_len);
        if (!in || !in->address[0])
            continue;
        /* live instances first; those shutting down only if nothing else */
        if (!in->shutting_down) {
            if (n_live != n)
                cand[n] = cand[n_live];
            cand[n_live].c = c;
            cand[n_live].in = in;
            n_live++;
        } else {
            cand[n].c = c;
            cand[n].in = in;
        }
        n++;
    }
    if (n_live)
        n = n_live;
    if (!n)
        return -ENOENT;
    size_t k = 0;
    if (n > 1) { /* the better of two random choices */
        size_t a = (size_t)(next_random(t) % n), b = (size_t)(next_random(t) % (n - 1));
        if (b >= a)
            b++;
        k = atomic_load_explicit(&cand[b].c->count->inflight, memory_order_relaxed) <
                    atomic_load_explicit(&cand[a].c->count->inflight, memory_order_relaxed)
                ? b
                : a;
    }
    struct tinst *in = cand[k].in;
    if (!in->ch) {
        struct mm_error err = {0};
        in->ch = rpc_peer_channel_for(t->cfg.rpc, in->address, &err);
        if (!in->ch) {
            mm_log(MM_LOG_WARN, WHO, "instance %.*s: %s", (int)in->id_len, in->id, err.msg);
            return -ENOENT;
        }
    }
    atomic_fetch_add_explicit(&cand[k].c->count->inflight, 1, memory_order_relaxed);
    out->ch = in->ch;
    out->local = false;
    memcpy(out->iid, in->id, in->id_len);
    out->iid[in->id_len] = '\0';
    out->iid_len = in->id_len;
    t->stats.picks_remote++;
    return 0;
}

void table_release(struct table *t, const char *id, size_t len, const struct table_target *tg)
{
    if (tg->local) {
        copies_request_end(t->cfg.copies, id, len);
        return;
    }
    struct table_model *m = model_find(t, id, len);
    struct tcopy *c = m ? copy_find(m, tg->iid, tg->iid_len) : NULL;
    if (c)
        count_leave(c->count);
}

/* A copy of m placed off instance exclude, unless one was asked for a moment ago. */
static void fail_over(struct table *t, struct table_model *m, const char *exclude,
                      size_t exclude_len)
{
    int64_t now = mono_ns() / 1000000;
    if (m->failover || (m->failover_ms && now - m->failover_ms < FAILOVER_WINDOW_MS) ||
        exclude_len > KEYS_NAME_MAX)
        return;
    char model_id[KEYS_NAME_MAX + 1], iid[KEYS_NAME_MAX + 1];
    memcpy(model_id, m->id, m->id_len);
    model_id[m->id_len] = '\0';
    memcpy(iid, exclude, exclude_len);
    iid[exclude_len] = '\0';
    const char *ex[1] = {iid};
    struct mm_error err = {0};
    m->failover_ms = now;
    if (mesh_ensure_elsewhere(t->cfg.mesh, model_id, ex, 1, FAILOVER_TIMEOUT_MS, on_failed_over, m,
                              &m->failover, &err) < 0) {
        m->failover = NULL;
        mm_log(MM_LOG_INFO, WHO, "model %s: no copy placed off %s: %s", model_id, iid, err.msg);
        return;
    }
    t->stats.failovers++;
    mm_log(MM_LOG_INFO, WHO, "model %s: its copy on %s could not be reached: a copy is placed "
           "elsewhere", model_id, iid);
}

int table_park(struct table *t, const char *id, size_t len, bool place, const char *exclude,
               size_t exclude_len, struct table_waiter *w, struct mm_error *err)
{
    if (t->parked >= t->cfg.max_parked)
        return mm_error_set(err, -EBUSY, "%u requests wait for models to load already",
                            t->cfg.max_parked);
    struct table_model *m = model_get(t, id, len);
    if (!m)
        return mm_error_set(err, -ENOMEM, "model %.*s: out of memory", (int)len, id);
    if (place && exclude && exclude_len)
        fail_over(t, m, exclude, exclude_len);
    else if (!m->op && place) {
        char model_id[KEYS_NAME_MAX + 1];
        memcpy(model_id, id, len);
        model_id[len] = '\0';
        int rc = mesh_ensure(t->cfg.mesh, model_id, 0, true, 0, on_ensured, m, &m->op, err);
        if (rc < 0) {
            m->op = NULL;
            model_maybe_free(t, m);
            return rc;
        }
        t->stats.placements++;
    }
    if (t->cache_miss && w->parked_ns == 0)
        w->parked_ns = mono_ns();
    w->model = m;
    w->prev = NULL;
    w->next = m->waiters;
    if (w->next)
        w->next->prev = w;
    m->waiters = w;
    m->n_waiters++;
    t->parked++;
    t->stats.parks++;
    return 0;
}

void table_unpark(struct table *t, struct table_waiter *w)
{
    struct table_model *m = w->model;
    if (!m)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        m->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->model = NULL;
    m->n_waiters--;
    t->parked--;
    if (!m->waiters && m->op) { /* nobody waits: the placement stays, the wait goes */
        mesh_op_cancel(m->op);
        m->op = NULL;
    }
    model_maybe_free(t, m);
}

void table_get_stats(const struct table *t, struct table_stats *out)
{
    *out = t->stats;
    out->models = t->models.n;
    out->instances = t->insts.n;
    out->vmodels = t->vmodels.n;
    out->parked = t->parked;
    out->picks_fast = atomic_load_explicit(&t->fast_picks, memory_order_relaxed);
}
