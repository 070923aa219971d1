/* reconcile.c - InferenceServices into vmodels, and their status, from mirror events: see
 * reconcile.h for the contract and docs/controller.md for why it is shaped so.
 *
 * One `struct istate` per InferenceService that is, or was, known (hashed by "<ns>/<name>"):
 * whether it is dirty (queued for evaluation, since when), the vmodels operation and the status
 * write in flight, its retry timer. Decoded instances and runtimes are cached for a batch and
 * decoded again only after their prefixes changed. */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mm/etcd.h"
#include "mm/hash.h"
#include "mm/isvc.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/reconcile.h"
#include "mm/records.h"
#include "mm/vmodels.h"

#define WHO "reconcile"
#define BUCKETS 1024
#define MAX_COPIES 256      /* copy records of one model read into a status */
#define MAX_INSTANCES 4096  /* instances read into a status */
#define MAX_RUNTIMES 256    /* runtimes matched against */
#define MAX_RETRY_MS 30000u
#define REVISION_MARK "__isvc-"
#define KEYBUF (2 * KEYS_MAX) /* prefix + a kind + two names */

const unsigned reconcile_latency_bounds_ms[RECONCILE_LATENCY_BUCKETS - 1] = {
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

struct istate {
    struct istate *next;  /* hash chain */
    struct istate *dnext; /* dirty queue */
    struct reconcile *r;
    char ns[ISVC_NS_MAX + 1];
    char name[KEYS_NAME_MAX + 1];
    bool queued;
    double dirty_since;           /* monotonic s of the first event not yet written; 0 = none */
    struct vmodels_op *op;        /* set / delete in flight */
    struct mesh_op *ensure;       /* a model without copies being placed */
    uint64_t ensure_epoch;        /* instances_epoch when an ensure last ended unplaced */
    bool ensure_failed;
    struct etcd_request *write;   /* status txn in flight */
    double write_since;           /* the dirty_since the write in flight answers */
    int64_t written_rev;          /* our last status write: wait for the mirror to reach it */
    unsigned retry_ms;
    ev_timer retry;
    char last_complaint[256];     /* logged once until it changes */
};

struct instance_slot {
    char iid[KEYS_NAME_MAX + 1];
    struct instance_record rec;
};

struct reconcile {
    struct reconcile_config cfg;
    struct ev_loop *loop;
    char cluster[KEYS_NAME_MAX + 1];
    char ns[ISVC_NS_MAX + 1];
    char service[KEYS_NAME_MAX + 1];
    char identity[256];
    char prefix[KEYS_MAX];
    size_t prefix_len;
    char ekey[KEYS_MAX];
    struct mirror_sub *subs[8];
    size_t n_subs;
    struct istate *table[BUCKETS];
    struct istate *dirty_head, *dirty_tail;
    ev_timer kick;
    bool instances_stale, runtimes_stale;
    uint64_t instances_epoch;     /* changes of instances that matter (came, went, labels) */
    struct instance_slot *instances;
    size_t n_instances, cap_instances;
    struct isvc_runtime *runtimes;
    size_t n_runtimes;
    /* scratch of one evaluation */
    struct isvc spec;
    struct isvc_status prev, next;
    struct vmodel_record vmodel;
    struct model_record models[2];
    struct copy_record copies[2][MAX_COPIES];
    char copy_iids[2][MAX_COPIES][KEYS_NAME_MAX + 1];
    struct isvc_copy_view copy_views[2][MAX_COPIES];
    struct reconcile_stats stats;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool ns_wanted(const struct reconcile *r, const char *ns, size_t len)
{
    return !r->ns[0] || (strlen(r->ns) == len && memcmp(r->ns, ns, len) == 0);
}

/* ------------------------------------------------------------------ the table */

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents);

static uint64_t key_hash(const char *ns, size_t ns_len, const char *name, size_t name_len)
{
    uint64_t h = mm_hash_more(MM_HASH_INIT, ns, ns_len);
    h = mm_hash_more(h, "/", 1);
    return mm_hash_finish(mm_hash_more(h, name, name_len));
}

static struct istate *find(struct reconcile *r, const char *ns, size_t ns_len, const char *name,
                           size_t name_len, bool create)
{
    if (ns_len == 0 || ns_len > ISVC_NS_MAX || name_len == 0 || name_len > KEYS_NAME_MAX)
        return NULL;
    size_t b = key_hash(ns, ns_len, name, name_len) % BUCKETS;
    for (struct istate *s = r->table[b]; s; s = s->next)
        if (strlen(s->ns) == ns_len && memcmp(s->ns, ns, ns_len) == 0 &&
            strlen(s->name) == name_len && memcmp(s->name, name, name_len) == 0)
            return s;
    if (!create)
        return NULL;
    struct istate *s = calloc(1, sizeof(*s));
    if (!s) {
        mm_log(MM_LOG_ERROR, WHO, "out of memory for InferenceService %.*s/%.*s", (int)ns_len,
               ns, (int)name_len, name);
        return NULL;
    }
    s->r = r;
    memcpy(s->ns, ns, ns_len);
    memcpy(s->name, name, name_len);
    ev_timer_init(&s->retry, on_retry, 0., 0.);
    s->retry.data = s;
    s->next = r->table[b];
    r->table[b] = s;
    return s;
}

static void state_free(struct istate *s)
{
    struct reconcile *r = s->r;
    ev_timer_stop(r->loop, &s->retry);
    vmodels_op_cancel(s->op);
    mesh_op_cancel(s->ensure);
    etcd_request_cancel(s->write);
    free(s);
}

/* Unlink and free s (not queued, nothing in flight). */
static void state_drop(struct istate *s)
{
    struct reconcile *r = s->r;
    size_t b = key_hash(s->ns, strlen(s->ns), s->name, strlen(s->name)) % BUCKETS;
    for (struct istate **pp = &r->table[b]; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    state_free(s);
}

static void mark(struct reconcile *r, const char *ns, size_t ns_len, const char *name,
                 size_t name_len)
{
    if (!ns_wanted(r, ns, ns_len))
        return;
    struct istate *s = find(r, ns, ns_len, name, name_len, true);
    if (!s)
        return;
    if (s->dirty_since == 0)
        s->dirty_since = mono_s();
    if (s->queued)
        return;
    s->queued = true;
    s->dnext = NULL;
    if (r->dirty_tail)
        r->dirty_tail->dnext = s;
    else
        r->dirty_head = s;
    r->dirty_tail = s;
    if (!ev_is_active(&r->kick)) {
        ev_timer_set(&r->kick, 0., 0.);
        ev_timer_start(r->loop, &r->kick);
    }
}

static void mark_state(struct istate *s)
{
    mark(s->r, s->ns, strlen(s->ns), s->name, strlen(s->name));
}

static int mark_isvc_cb(const struct mirror_entry *e, void *arg)
{
    struct reconcile *r = arg;
    struct key_parts kp;
    if (keys_parse_relative(e->key + r->prefix_len, e->key_len - r->prefix_len, &kp) == 0 &&
        (kp.kind == KEY_ISVC || kp.kind == KEY_ISVC_STATUS))
        mark(r, kp.first, kp.first_len, kp.second, kp.second_len);
    return 0;
}

static void mark_all(struct reconcile *r)
{
    char p[KEYBUF];
    int n = snprintf(p, sizeof(p), "%sisvcs/", r->prefix);
    mirror_foreach_prefix(r->cfg.mirror, p, (size_t)n, mark_isvc_cb, r);
}

/* The namespace a vmodel record's owner names ("isvc:<ns>"), or false. */
static bool owner_ns(const char *value, size_t len, char *ns, size_t size)
{
    struct vmodel_record vr;
    struct mm_error err;
    if (!value || record_decode(RECORD_VMODEL, value, len, &vr, &err) < 0 ||
        strncmp(vr.owner, "isvc:", 5) != 0 || !vr.owner[5])
        return false;
    snprintf(ns, size, "%s", vr.owner + 5);
    return true;
}

/* A model id names its InferenceService: "<name>__isvc-<hex>"; the vmodel of that name says in
 * which namespace. */
static void mark_model(struct reconcile *r, const char *id, size_t len)
{
    const char *end = id + len;
    const char *hit = NULL;
    for (const char *p = id; p + strlen(REVISION_MARK) <= end; p++)
        if (memcmp(p, REVISION_MARK, strlen(REVISION_MARK)) == 0)
            hit = p;
    if (!hit || hit == id || (size_t)(hit - id) > KEYS_NAME_MAX)
        return;
    char vkey[KEYBUF];
    int n = snprintf(vkey, sizeof(vkey), "%svmodels/%.*s", r->prefix, (int)(hit - id), id);
    const struct mirror_entry *e = mirror_get(r->cfg.mirror, vkey, (size_t)n);
    char ns[sizeof(((struct vmodel_record *)0)->owner)];
    if (e && owner_ns(e->value, e->value_len, ns, sizeof(ns)))
        mark(r, ns, strlen(ns), id, (size_t)(hit - id));
}

/* ------------------------------------------------------------------ caches */

static int instance_cb(const struct mirror_entry *e, void *arg)
{
    struct reconcile *r = arg;
    if (r->n_instances >= MAX_INSTANCES)
        return 1;
    if (r->n_instances == r->cap_instances) {
        size_t cap = r->cap_instances ? r->cap_instances * 2 : 16;
        struct instance_slot *n = realloc(r->instances, cap * sizeof(*n));
        if (!n)
            return 1;
        r->instances = n;
        r->cap_instances = cap;
    }
    struct instance_slot *slot = &r->instances[r->n_instances];
    size_t plen = r->prefix_len + strlen("instances/");
    size_t ilen = e->key_len - plen;
    struct mm_error err;
    if (ilen == 0 || ilen > KEYS_NAME_MAX ||
        record_decode(RECORD_INSTANCE, e->value, e->value_len, &slot->rec, &err) < 0)
        return 0;
    memcpy(slot->iid, e->key + plen, ilen);
    slot->iid[ilen] = '\0';
    r->n_instances++;
    return 0;
}

static int runtime_cb(const struct mirror_entry *e, void *arg)
{
    struct reconcile *r = arg;
    if (r->n_runtimes >= MAX_RUNTIMES)
        return 1;
    struct mm_error err = {0};
    if (isvc_runtime_parse_text(e->value, e->value_len, &r->runtimes[r->n_runtimes], &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "%.*s: %s", (int)e->key_len, e->key, err.msg);
        return 0;
    }
    r->n_runtimes++;
    return 0;
}

static void refresh_caches(struct reconcile *r)
{
    char p[KEYBUF];
    if (r->instances_stale) {
        r->n_instances = 0;
        int n = snprintf(p, sizeof(p), "%sinstances/", r->prefix);
        mirror_foreach_prefix(r->cfg.mirror, p, (size_t)n, instance_cb, r);
        r->instances_stale = false;
    }
    if (r->runtimes_stale) {
        r->n_runtimes = 0;
        int n = snprintf(p, sizeof(p), "%sruntimes/", r->prefix);
        mirror_foreach_prefix(r->cfg.mirror, p, (size_t)n, runtime_cb, r);
        r->runtimes_stale = false;
    }
}

/* ------------------------------------------------------------------ evaluation */

static void complain(struct istate *s, enum mm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void complain(struct istate *s, enum mm_log_level level, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, s->last_complaint) == 0)
        return;
    snprintf(s->last_complaint, sizeof(s->last_complaint), "%s", msg);
    mm_log(level, WHO, "InferenceService %s/%s: %s", s->ns, s->name, msg);
}

static void retry_later(struct istate *s)
{
    struct reconcile *r = s->r;
    unsigned base = r->cfg.retry_ms ? r->cfg.retry_ms : 500;
    s->retry_ms = s->retry_ms ? s->retry_ms * 2 : base;
    if (s->retry_ms > MAX_RETRY_MS)
        s->retry_ms = MAX_RETRY_MS;
    ev_timer_stop(r->loop, &s->retry);
    ev_timer_set(&s->retry, s->retry_ms / 1000., 0.);
    ev_timer_start(r->loop, &s->retry);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct istate *s = w->data;
    s->ensure_failed = false; /* an ensure that ended unplaced is tried again too */
    mark_state(s);
}

/* The election key's create revision when the mirror shows this controller holding it; 0
 * otherwise (then nothing is written: a deposed or not yet seated leader must not). */
static int64_t fence(const struct reconcile *r)
{
    const struct mirror_entry *e = mirror_get(r->cfg.mirror, r->ekey, strlen(r->ekey));
    struct election_record er;
    struct mm_error err;
    if (!e || record_decode(RECORD_ELECTION, e->value, e->value_len, &er, &err) < 0 ||
        strcmp(er.leader, r->identity) != 0)
        return 0;
    return e->create_revision;
}

static void record_latency(struct reconcile *r, double since)
{
    if (since <= 0)
        return;
    double ms = (mono_s() - since) * 1000.;
    uint64_t v = ms < 0 ? 0 : (uint64_t)ms;
    size_t b = 0;
    while (b < RECONCILE_LATENCY_BUCKETS - 1 && v >= reconcile_latency_bounds_ms[b])
        b++;
    r->stats.latency[b]++;
    r->stats.latency_sum_ms += v;
    if (v > r->stats.latency_max_ms)
        r->stats.latency_max_ms = v;
}

static void on_write(int status, const struct mm_error *err, struct etcd_response *resp,
                     void *arg)
{
    struct istate *s = arg;
    struct reconcile *r = s->r;
    s->write = NULL;
    if (status == -ECANCELED)
        return;
    if (status < 0) {
        r->stats.write_errors++;
        complain(s, MM_LOG_WARN, "status write: %s", err ? err->msg : mm_strerror(status));
        retry_later(s);
        return;
    }
    if (!resp->succeeded) {
        r->stats.writes_lost++; /* changed meanwhile (its event re-marks it), or not leader */
        mark_state(s);
        return;
    }
    r->stats.status_writes++;
    s->retry_ms = 0;
    s->written_rev = resp->revision;
    double since = s->write_since;
    record_latency(r, since);
    mm_log(MM_LOG_DEBUG, WHO, "InferenceService %s/%s: status written at revision %" PRId64
           " %.1f ms after the event", s->ns, s->name, resp->revision,
           since > 0 ? (mono_s() - since) * 1000. : 0.);
    /* The mirror's event of this write marks it again, and what changed meanwhile is seen
     * then; but an event that came while the write was in flight (our own write's among them:
     * the watch may beat the txn's answer) found evaluate() waiting on this answer and did
     * nothing: it left dirty_since set, so evaluate again now. */
    if (s->dirty_since != 0)
        mark_state(s);
}

/* A status put (value) or delete (NULL), conditional on the isvc key's mod revision (0: absent)
 * and on the election key. */
static void write_status(struct istate *s, const char *skey, const char *ikey, int64_t isvc_mod,
                         const char *value)
{
    struct reconcile *r = s->r;
    int64_t fr = fence(r);
    if (fr == 0) {
        complain(s, MM_LOG_INFO, "waiting for the mirror to show this controller leading");
        return; /* the election key's event marks everything again */
    }
    struct etcd_compare cmp[2] = {
        {.key = ikey, .target = isvc_mod ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
         .result = ETCD_CMP_EQUAL, .number = isvc_mod},
        {.key = r->ekey, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = fr},
    };
    struct etcd_op op = {.kind = value ? ETCD_OP_PUT : ETCD_OP_DELETE, .key = skey,
                         .value = value};
    struct etcd_txn txn = {cmp, 2, &op, 1, NULL, 0};
    s->write_since = s->dirty_since;
    s->dirty_since = 0;
    if (etcd_txn(r->cfg.etcd, &txn, on_write, s, &s->write) < 0) {
        s->write = NULL;
        s->dirty_since = s->write_since;
        r->stats.write_errors++;
        retry_later(s);
    }
}

static void on_op(int status, const struct mm_error *err, const struct vmodel_status *st,
                  void *arg)
{
    struct istate *s = arg;
    struct reconcile *r = s->r;
    s->op = NULL;
    if (status < 0) {
        r->stats.op_errors++;
        complain(s, MM_LOG_WARN, "%s", err ? err->msg : mm_strerror(status));
        retry_later(s);
        return;
    }
    s->retry_ms = 0;
    s->last_complaint[0] = '\0';
    mark_state(s);
}

static void on_ensure(int status, const struct mm_error *err, const struct mesh_status *st,
                      void *arg)
{
    struct istate *s = arg;
    struct reconcile *r = s->r;
    s->ensure = NULL;
    if (status < 0) {
        /* tried again once the instances change (a pod of its runtime comes), and after a
         * while in any case: no room now (pods full of young copies, or of copies still
         * loading) is not no room later, and the instances' figures changing is not an event
         * that marks it */
        s->ensure_failed = true;
        s->ensure_epoch = r->instances_epoch;
        complain(s, MM_LOG_INFO, "loading its model: %s", err ? err->msg : mm_strerror(status));
        if (status == -EAGAIN || status == -ENOSPC)
            retry_later(s);
        return;
    }
    s->ensure_failed = false;
    mark_state(s);
}

/* The vmodel's active model (not in transition: vmodels drives those) has no copy at all, not
 * even a failed one: place it, unless that failed and the instances have not changed since. */
static void maybe_ensure(struct istate *s, const struct isvc_model_view *av)
{
    struct reconcile *r = s->r;
    if (!r->cfg.mesh || s->ensure || !av->rec || av->n_copies > 0 ||
        (s->ensure_failed && s->ensure_epoch == r->instances_epoch))
        return;
    struct mm_error err = {0};
    r->stats.ensures++;
    unsigned t = r->cfg.op_timeout_ms ? r->cfg.op_timeout_ms : 30000;
    if (mesh_ensure(r->cfg.mesh, av->id, av->rec->last_used_ms, false, t, on_ensure, s,
                    &s->ensure, &err) < 0) {
        s->ensure = NULL;
        s->ensure_failed = true;
        s->ensure_epoch = r->instances_epoch;
        complain(s, MM_LOG_WARN, "loading its model: %s", err.msg);
    }
}

/* The InferenceService is gone: its vmodel (if ours) and its status go too. */
static void evaluate_gone(struct istate *s, const char *skey, const char *ikey)
{
    struct reconcile *r = s->r;
    char vkey[KEYBUF], owner[ISVC_NS_MAX + 8];
    int n = snprintf(vkey, sizeof(vkey), "%svmodels/%s", r->prefix, s->name);
    const struct mirror_entry *ve = mirror_get(r->cfg.mirror, vkey, (size_t)n);
    char vns[sizeof(((struct vmodel_record *)0)->owner)];
    bool ours = ve && owner_ns(ve->value, ve->value_len, vns, sizeof(vns)) &&
                strcmp(vns, s->ns) == 0;
    if (ours && !s->op && fence(r)) {
        struct mm_error err = {0};
        isvc_owner(s->ns, owner, sizeof(owner));
        r->stats.deletes++;
        unsigned t = r->cfg.op_timeout_ms ? r->cfg.op_timeout_ms : 30000;
        if (vmodels_delete(r->cfg.vmodels, s->name, owner, t, on_op, s, &s->op, &err) < 0) {
            s->op = NULL;
            r->stats.op_errors++;
            complain(s, MM_LOG_WARN, "deleting vmodel %s: %s", s->name, err.msg);
            retry_later(s);
        } else {
            mm_log(MM_LOG_INFO, WHO, "InferenceService %s/%s deleted: deleting its vmodel",
                   s->ns, s->name);
        }
    }
    const struct mirror_entry *se = mirror_get(r->cfg.mirror, skey, strlen(skey));
    if (se && !s->write)
        write_status(s, skey, ikey, 0, NULL);
    if (!ours && !se && !s->op && !s->write && !s->ensure && !ev_is_active(&s->retry))
        state_drop(s);
    else if (!se && !ours)
        s->dirty_since = 0;
}

/* The model view of id: its record and copies from the mirror, into slot k of the scratch. */
static int copy_cb(const struct mirror_entry *e, void *arg);
struct copy_walk {
    struct reconcile *r;
    size_t k, n, plen;
};

static int copy_cb(const struct mirror_entry *e, void *arg)
{
    struct copy_walk *w = arg;
    struct reconcile *r = w->r;
    if (w->n >= MAX_COPIES)
        return 1;
    size_t ilen = e->key_len - w->plen;
    struct mm_error err;
    if (ilen == 0 || ilen > KEYS_NAME_MAX ||
        record_decode(RECORD_COPY, e->value, e->value_len, &r->copies[w->k][w->n], &err) < 0)
        return 0;
    memcpy(r->copy_iids[w->k][w->n], e->key + w->plen, ilen);
    r->copy_iids[w->k][w->n][ilen] = '\0';
    r->copy_views[w->k][w->n] = (struct isvc_copy_view){r->copy_iids[w->k][w->n],
                                                        &r->copies[w->k][w->n]};
    w->n++;
    return 0;
}

static void model_view(struct reconcile *r, size_t k, const char *id, struct isvc_model_view *v)
{
    char key[KEYBUF];
    int n = snprintf(key, sizeof(key), "%smodels/%s", r->prefix, id);
    const struct mirror_entry *e = mirror_get(r->cfg.mirror, key, (size_t)n);
    struct mm_error err;
    v->id = id;
    v->rec = e && record_decode(RECORD_MODEL, e->value, e->value_len, &r->models[k], &err) == 0
                 ? &r->models[k]
                 : NULL;
    n = snprintf(key, sizeof(key), "%scopies/%s/", r->prefix, id);
    struct copy_walk w = {r, k, 0, (size_t)n};
    mirror_foreach_prefix(r->cfg.mirror, key, (size_t)n, copy_cb, &w);
    v->copies = r->copy_views[k];
    v->n_copies = w.n;
}

static void evaluate(struct istate *s)
{
    struct reconcile *r = s->r;
    r->stats.evaluations++;
    if (s->write)
        return; /* its answer marks it again */
    if (s->written_rev > mirror_revision(r->cfg.mirror))
        return; /* the mirror's event of our write marks it again */
    char ikey[KEYBUF], skey[KEYBUF], vkey[KEYBUF];
    snprintf(ikey, sizeof(ikey), "%sisvcs/%s/%s", r->prefix, s->ns, s->name);
    snprintf(skey, sizeof(skey), "%sisvc-status/%s/%s", r->prefix, s->ns, s->name);
    int vn = snprintf(vkey, sizeof(vkey), "%svmodels/%s", r->prefix, s->name);
    const struct mirror_entry *ie = mirror_get(r->cfg.mirror, ikey, strlen(ikey));
    if (!ie) {
        evaluate_gone(s, skey, ikey);
        return;
    }
    int64_t isvc_mod = ie->mod_revision;
    struct isvc *spec = &r->spec;
    struct mm_error err = {0};
    if (isvc_parse_text(ie->value, ie->value_len, spec, &err) < 0) {
        complain(s, MM_LOG_WARN, "not an InferenceService we can read: %s", err.msg);
        s->dirty_since = 0;
        return;
    }
    if (strcmp(spec->name, s->name) != 0) {
        complain(s, MM_LOG_WARN, "metadata.name is '%s', the key says '%s'", spec->name,
                 s->name);
        s->dirty_since = 0;
        return;
    }
    snprintf(spec->ns, sizeof(spec->ns), "%s", s->ns); /* the key's namespace is the truth */
    refresh_caches(r);

    const struct mirror_entry *ve = mirror_get(r->cfg.mirror, vkey, (size_t)vn);
    bool have_vmodel = ve && record_decode(RECORD_VMODEL, ve->value, ve->value_len, &r->vmodel,
                                           &err) == 0;
    char owner[ISVC_NS_MAX + 8];
    isvc_owner(s->ns, owner, sizeof(owner));

    /* the vmodel: targets the revision of a servable spec */
    size_t chosen = 0;
    enum isvc_reason why = ISVC_REASON_NONE;
    struct mm_error merr = {0};
    bool servable = spec->invalid == ISVC_REASON_NONE &&
                    isvc_match_runtime(spec, r->runtimes, r->n_runtimes, &chosen, &why, &merr) ==
                        0;
    bool mine = !have_vmodel || strcmp(r->vmodel.owner, owner) == 0;
    if (servable && mine && !s->op && fence(r) &&
        (!have_vmodel || strcmp(r->vmodel.target_model_id, spec->revision) != 0)) {
        struct mesh_model_info info;
        char keybuf[RECORD_PARAMS_BYTES + 2048];
        if (isvc_model_info(spec, &info, keybuf, sizeof(keybuf), &err) < 0) {
            complain(s, MM_LOG_WARN, "model info: %s", err.msg);
        } else {
            info.runtime = r->runtimes[chosen].name;
            struct vmodel_set_req req = {
                .vmodel_id = s->name,
                .target_id = spec->revision,
                .info = &info,
                .auto_delete = true,
                .load_now = true,
                .owner = owner,
            };
            r->stats.sets++;
            unsigned t = r->cfg.op_timeout_ms ? r->cfg.op_timeout_ms : 30000;
            if (vmodels_set(r->cfg.vmodels, &req, t, on_op, s, &s->op, &err) < 0) {
                s->op = NULL;
                r->stats.op_errors++;
                complain(s, MM_LOG_WARN, "setting vmodel %s to %s: %s", s->name, spec->revision,
                         err.msg);
                retry_later(s);
            } else {
                mm_log(MM_LOG_INFO, WHO,
                       "InferenceService %s/%s generation %" PRId64 ": vmodel %s -> %s "
                       "(%s on runtime %s)",
                       s->ns, s->name, spec->generation, s->name, spec->revision, spec->format,
                       r->runtimes[chosen].name);
            }
        }
    }

    /* the status */
    struct isvc_model_view av = {0}, tv = {0};
    bool have_active = have_vmodel && r->vmodel.active_model_id[0];
    bool have_target = have_vmodel && r->vmodel.target_model_id[0] &&
                       strcmp(r->vmodel.target_model_id, r->vmodel.active_model_id) != 0;
    if (have_active)
        model_view(r, 0, r->vmodel.active_model_id, &av);
    if (have_target)
        model_view(r, 1, r->vmodel.target_model_id, &tv);
    else if (have_active && mine && !s->op && fence(r))
        maybe_ensure(s, &av);
    struct isvc_instance_view *iv = NULL;
    if (r->n_instances && !(iv = calloc(r->n_instances, sizeof(*iv)))) {
        retry_later(s);
        return;
    }
    for (size_t i = 0; i < r->n_instances; i++)
        iv[i] = (struct isvc_instance_view){r->instances[i].iid, &r->instances[i].rec};
    const struct mirror_entry *se = mirror_get(r->cfg.mirror, skey, strlen(skey));
    bool have_prev = se && isvc_status_decode(se->value, se->value_len, &r->prev, &err) == 0;
    int64_t now = r->cfg.now_ms ? r->cfg.now_ms() : real_ms();
    struct isvc_world w = {
        .isvc = spec,
        .service = r->service,
        .runtimes = r->runtimes,
        .n_runtimes = r->n_runtimes,
        .vmodel = have_vmodel ? &r->vmodel : NULL,
        .active = have_active ? &av : NULL,
        .target = have_target ? &tv : NULL,
        .instances = iv,
        .n_instances = r->n_instances,
        .now_s = now / 1000,
        .prev = have_prev ? &r->prev : NULL,
    };
    isvc_status_compute(&w, &r->next);
    free(iv);
    if (have_prev && isvc_status_same(&r->prev, &r->next)) {
        s->dirty_since = 0;
        return;
    }
    char *value = isvc_status_encode(&r->next);
    if (!value) {
        retry_later(s);
        return;
    }
    write_status(s, skey, ikey, isvc_mod, value);
    free(value);
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct reconcile *r = w->data;
    /* what evaluation marks again (a failed start) waits for the next kick */
    struct istate *head = r->dirty_head;
    r->dirty_head = r->dirty_tail = NULL;
    while (head) {
        struct istate *s = head;
        head = s->dnext;
        s->dnext = NULL;
        s->queued = false;
        evaluate(s);
    }
}

/* ------------------------------------------------------------------ events */

/* Every InferenceService of that name, in any namespace. */
static void mark_name(struct reconcile *r, const char *name, size_t len)
{
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct istate *s = r->table[b]; s; s = s->next)
            if (strlen(s->name) == len && memcmp(s->name, name, len) == 0)
                mark_state(s);
}

static bool instance_matters(const struct mirror_event *ev)
{
    if (!ev->old_value || !ev->new_value)
        return true; /* an instance came or went */
    static struct instance_record a, b; /* the loop thread only */
    struct mm_error err;
    if (record_decode(RECORD_INSTANCE, ev->old_value, ev->old_len, &a, &err) < 0 ||
        record_decode(RECORD_INSTANCE, ev->new_value, ev->new_len, &b, &err) < 0)
        return true;
    /* the status reads liveness and labels, not the loads and sizes published every moment */
    return a.shutting_down != b.shutting_down || strcmp(a.runtime, b.runtime) != 0 ||
           memcmp(&a.labels, &b.labels, sizeof(a.labels)) != 0;
}

static void on_event(const struct mirror_event *ev, void *arg)
{
    struct reconcile *r = arg;
    r->stats.events++;
    struct key_parts kp;
    if (ev->key_len <= r->prefix_len ||
        keys_parse_relative(ev->key + r->prefix_len, ev->key_len - r->prefix_len, &kp) < 0)
        return;
    char ns[sizeof(((struct vmodel_record *)0)->owner)];
    switch (kp.kind) {
    case KEY_ISVC:
    case KEY_ISVC_STATUS:
        mark(r, kp.first, kp.first_len, kp.second, kp.second_len);
        break;
    case KEY_VMODEL:
        if (owner_ns(ev->new_value, ev->new_len, ns, sizeof(ns)) ||
            owner_ns(ev->old_value, ev->old_len, ns, sizeof(ns)))
            mark(r, ns, strlen(ns), kp.first, kp.first_len);
        if (ev->kind == MIRROR_DELETE) /* the name is free: another namespace's may take it */
            mark_name(r, kp.first, kp.first_len);
        break;
    case KEY_MODEL:
    case KEY_COPY:
        mark_model(r, kp.first, kp.first_len);
        break;
    case KEY_RUNTIME:
        r->runtimes_stale = true;
        mark_all(r);
        break;
    case KEY_INSTANCE:
        r->instances_stale = true;
        if (instance_matters(ev)) {
            r->instances_epoch++;
            mark_all(r);
        }
        break;
    case KEY_ELECTION:
        mark_all(r);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ lifetime */

/* vmodels of InferenceServices deleted while no controller led */
static int mark_vmodel_cb(const struct mirror_entry *e, void *arg)
{
    struct reconcile *r = arg;
    char ns[sizeof(((struct vmodel_record *)0)->owner)];
    size_t plen = r->prefix_len + strlen("vmodels/");
    if (owner_ns(e->value, e->value_len, ns, sizeof(ns)))
        mark(r, ns, strlen(ns), e->key + plen, e->key_len - plen);
    return 0;
}

int reconcile_new(const struct reconcile_config *cfg, struct reconcile **out,
                  struct mm_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->cluster || !cfg->identity || !cfg->identity[0] || !cfg->etcd ||
        !cfg->mirror || !cfg->vmodels)
        return mm_error_set(err, -EINVAL,
                            "reconcile: cluster, identity, etcd, mirror and vmodels are required");
    if (strlen(cfg->identity) >= sizeof(((struct reconcile *)0)->identity))
        return mm_error_set(err, -EINVAL, "reconcile: identity is too long");
    if (cfg->ns && cfg->ns[0] && strlen(cfg->ns) > ISVC_NS_MAX)
        return mm_error_set(err, -EINVAL, "reconcile: namespace '%s' is too long", cfg->ns);
    struct reconcile *r = calloc(1, sizeof(*r));
    if (!r)
        return mm_error_set(err, -ENOMEM, "reconcile: out of memory");
    r->runtimes = calloc(MAX_RUNTIMES, sizeof(*r->runtimes));
    if (!r->runtimes) {
        free(r);
        return mm_error_set(err, -ENOMEM, "reconcile: out of memory");
    }
    r->cfg = *cfg;
    r->loop = etcd_client_loop(cfg->etcd);
    snprintf(r->ns, sizeof(r->ns), "%s", cfg->ns ? cfg->ns : "");
    snprintf(r->identity, sizeof(r->identity), "%s", cfg->identity);
    const char *svc = cfg->service_name && cfg->service_name[0] ? cfg->service_name
                                                                 : ISVC_DEFAULT_SERVICE;
    snprintf(r->service, sizeof(r->service), "%s", svc);
    int rc;
    if ((rc = keys_prefix(r->prefix, sizeof(r->prefix), cfg->cluster, err)) < 0 ||
        (rc = keys_election(r->ekey, sizeof(r->ekey), cfg->cluster, err)) < 0) {
        reconcile_free(r);
        return rc;
    }
    snprintf(r->cluster, sizeof(r->cluster), "%s", cfg->cluster);
    r->cfg.cluster = r->cluster;
    r->cfg.identity = r->identity;
    r->cfg.ns = r->ns;
    r->cfg.service_name = r->service;
    r->prefix_len = strlen(r->prefix);
    ev_timer_init(&r->kick, on_kick, 0., 0.);
    r->kick.data = r;
    r->instances_stale = r->runtimes_stale = true;
    static const char *const watched[] = {"isvcs/",  "isvc-status/", "vmodels/",  "models/",
                                          "copies/", "runtimes/",    "instances/", "election/"};
    for (size_t i = 0; i < sizeof(watched) / sizeof(watched[0]); i++) {
        char p[KEYBUF];
        int n = snprintf(p, sizeof(p), "%s%s", r->prefix, watched[i]);
        if (mirror_subscribe(cfg->mirror, p, (size_t)n, on_event, r, &r->subs[r->n_subs]) < 0) {
            reconcile_free(r);
            return mm_error_set(err, -ENOMEM, "reconcile: subscribing to %s", p);
        }
        r->n_subs++;
    }
    /* everything there is: InferenceServices, statuses, and vmodels whose owner is gone */
    char p[KEYBUF];
    int n = snprintf(p, sizeof(p), "%sisvc-status/", r->prefix);
    mirror_foreach_prefix(cfg->mirror, p, (size_t)n, mark_isvc_cb, r);
    mark_all(r);
    n = snprintf(p, sizeof(p), "%svmodels/", r->prefix);
    mirror_foreach_prefix(cfg->mirror, p, (size_t)n, mark_vmodel_cb, r);
    *out = r;
    return 0;
}


void reconcile_free(struct reconcile *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_subs; i++)
        mirror_unsubscribe(r->subs[i]);
    ev_timer_stop(r->loop, &r->kick);
    for (size_t b = 0; b < BUCKETS; b++) {
        struct istate *s = r->table[b];
        while (s) {
            struct istate *next = s->next;
            state_free(s);
            s = next;
        }
    }
    free(r->instances);
    free(r->runtimes);
    free(r);
}

void reconcile_get_stats(const struct reconcile *r, struct reconcile_stats *out)
{
    *out = r->stats;
}

uint64_t reconcile_latency_percentile(const struct reconcile_stats *s, unsigned permille)
{
    uint64_t total = 0;
    for (size_t i = 0; i < RECONCILE_LATENCY_BUCKETS; i++)
        total += s->latency[i];
    if (total == 0)
        return 0;
    uint64_t want = (total * permille + 999) / 1000, seen = 0;
    for (size_t i = 0; i < RECONCILE_LATENCY_BUCKETS; i++) {
        seen += s->latency[i];
        if (seen >= want)
            return i < RECONCILE_LATENCY_BUCKETS - 1 ? reconcile_latency_bounds_ms[i]
                                                     : UINT64_MAX;
    }
    return UINT64_MAX;
}
