/* vmodels.c - vmodels and their transitions: see vmodels.h for the contract and docs/node.md
 * ("VModels") for the rules. Everything here runs on the loop thread.
 *
 * Three kinds of state: operations (setVModel, deleteVModel: read, decide, write, catch up,
 * then load or wait); a driver per vmodel in transition (`struct vstate`: places the target,
 * switches once it is Loaded); and pending auto-deletes (`struct gcent`). A reference count
 * per model id (from vmodels/ events) says which models some vmodel refers to. */
#include <errno.h>
#include <ev.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/etcd.h"
#include "mm/hash.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/records.h"
#include "mm/vmodels.h"

#define WHO "vmodels"
#define CATCH_UP_POLL_S 0.02 /* waiting for the mirror to reach a revision we wrote */
#define RETRY_DELAY_S 0.2    /* an operation's etcd error whose outcome is unknown */
#define MAX_RETRY_MS 30000u  /* a target that could not be placed: the longest wait */
#define OWNER_MAX 127
#define SWITCH_RECHECK_S 0.05 /* after a switch txn that lost */
#define FAILED_RECHECK_S 1.0  /* a failed target: whether its failures expired */

enum op_kind { OP_SET, OP_DELETE, OP_READ };
enum op_phase {
    PH_READING,  /* the vmodel and target records are being read */
    PH_WRITING,  /* the txn is in flight */
    PH_CATCHUP,  /* written (or read) at a revision the mirror has not reached yet */
    PH_ENSURING, /* no transition: the target is being loaded (mesh_ensure) */
    PH_WAITING,  /* sync: waiting for the transition to end */
};

struct vmodels_op {
    struct vmodels *v;
    struct vmodels_op *prev, *next;
    enum op_kind kind;
    enum op_phase phase;
    char name[KEYS_NAME_MAX + 1];
    char target[KEYS_NAME_MAX + 1];
    char expected[KEYS_NAME_MAX + 1];
    char owner[OWNER_MAX + 1];
    char vkey[KEYS_MAX], tkey[KEYS_MAX];
    bool has_info;
    struct model_record info; /* type, path, key asked for */
    bool update_only, auto_delete, load_now, force, sync;
    bool in_transition;       /* the vmodel as written (or found) is in a transition */
    bool ensure_after;        /* no transition: load the target */
    bool ensure_sync;         /* ... and wait until Loaded */
    int64_t last_used_ms;     /* for that load */
    unsigned attempts;
    int64_t timeout_ms;
    int64_t catchup_rev;
    struct etcd_request *req;
    struct mesh_op *mop;
    ev_timer timer;           /* the deadline */
    ev_timer retry;           /* after an etcd error */
    vmodels_cb cb;
    void *arg;
};

/* The driver of one vmodel in transition from active to target. */
struct vstate {
    struct vstate *next;
    struct vmodels *v;
    char name[KEYS_NAME_MAX + 1];
    char active[KEYS_NAME_MAX + 1];
    char target[KEYS_NAME_MAX + 1];
    bool may_act;             /* primary, asked here, or the delay passed */
    unsigned retry_ms;
    ev_timer delay;           /* a non-primary's wait */
    ev_timer retry;           /* a target that could not be placed */
    struct mesh_op *ensure;
    struct commit *commit; /* the switch in flight, if any */
};

/* A switch txn in flight. It outlives its driver when the mirror shows the switch before the
 * txn's answer arrives (the driver ends then), so that the answer is still logged and
 * counted. */
struct commit {
    struct commit *next;
    struct vmodels *v;
    struct vstate *s; /* NULL once the driver ended */
    char name[KEYS_NAME_MAX + 1];
    char from[KEYS_NAME_MAX + 1];
    char to[KEYS_NAME_MAX + 1];
    struct etcd_request *req;
};

/* A model no vmodel refers to any more that may be auto-deleted. */
struct gcent {
    struct gcent *next;
    struct vmodels *v;
    char id[KEYS_NAME_MAX + 1];
    ev_timer delay;
    struct etcd_request *req;
};

/* Reference counts: how many vmodel records name a model id (as active or target). */
struct ref {
    struct ref *next;
    uint32_t count;
    size_t len;
    char id[KEYS_NAME_MAX + 1];
};

struct vmodels {
    struct vmodels_config cfg;
    struct ev_loop *loop;
    char cluster[KEYS_NAME_MAX + 1];
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
    char prefix[KEYS_MAX];
    size_t prefix_len;
    char vmodels_prefix[KEYS_MAX], models_prefix[KEYS_MAX], copies_prefix[KEYS_MAX],
        instances_prefix[KEYS_MAX];
    size_t vmodels_len, models_len, copies_len, instances_len;
    struct mirror_sub *sub_vmodels, *sub_models, *sub_copies, *sub_instances;
    struct vmodels_op *ops;
    size_t n_catchup, n_waiting;
    ev_timer catchup_timer;
    struct vstate *states;
    struct commit *commits;
    struct gcent *gcs;
    struct ref **refs;
    size_t n_ref_buckets, n_refs;
    struct mesh_status *st_buf;
    struct vmodel_status *vst_buf;
    struct vmodels_stats stats;
};

/* ------------------------------------------------------------------ small helpers */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *vmodel_state_name(enum vmodel_state s)
{
    switch (s) {
    case VMODEL_NOT_FOUND:
        return "NOT_FOUND";
    case VMODEL_DEFINED:
        return "DEFINED";
    case VMODEL_TRANSITIONING:
        return "TRANSITIONING";
    case VMODEL_TRANSITION_FAILED:
        return "TRANSITION_FAILED";
    }
    return "UNKNOWN";
}

/* prefix + name into out (KEYS_MAX); its length, or 0 when it does not fit. */
static size_t join(char *out, const char *prefix, size_t plen, const char *name, size_t nlen)
{
    if (plen + nlen >= KEYS_MAX)
        return 0;
    memcpy(out, prefix, plen);
    memcpy(out + plen, name, nlen);
    out[plen + nlen] = '\0';
    return plen + nlen;
}

/* The vmodel record in the mirror: 1 (rec, *rev), 0 absent, -1 unreadable. */
static int vmodel_of(const struct vmodels *v, const char *name, struct vmodel_record *rec,
                     int64_t *rev)
{
    char key[KEYS_MAX];
    size_t len = join(key, v->vmodels_prefix, v->vmodels_len, name, strlen(name));
    const struct mirror_entry *e = len ? mirror_get(v->cfg.mirror, key, len) : NULL;
    if (!e)
        return 0;
    struct mm_error err = {0};
    if (record_decode(RECORD_VMODEL, e->value, e->value_len, rec, &err) < 0)
        return -1;
    if (rev)
        *rev = e->mod_revision;
    return 1;
}

static int model_of(const struct vmodels *v, const char *id, struct model_record *rec,
                    int64_t *rev)
{
    char key[KEYS_MAX];
    size_t len = join(key, v->models_prefix, v->models_len, id, strlen(id));
    const struct mirror_entry *e = len ? mirror_get(v->cfg.mirror, key, len) : NULL;
    if (!e)
        return 0;
    struct mm_error err = {0};
    if (record_decode(RECORD_MODEL, e->value, e->value_len, rec, &err) < 0)
        return -1;
    if (rev)
        *rev = e->mod_revision;
    return 1;
}

/* A model's copies in the mirror: how many live (not Failed), how many Loaded, and one Loaded
 * copy's key and revision (the switch is conditional on it). */
struct copy_sum {
    size_t n_live, n_loaded;
    char loaded_key[KEYS_MAX];
    int64_t loaded_rev;
};

static int sum_cb(const struct mirror_entry *e, void *arg)
{
    struct copy_sum *s = arg;
    struct copy_record cr;
    struct mm_error err = {0};
    if (record_decode(RECORD_COPY, e->value, e->value_len, &cr, &err) < 0 ||
        cr.state == COPY_FAILED)
        return 0;
    s->n_live++;
    if (cr.state == COPY_LOADED) {
        if (!s->n_loaded && e->key_len < sizeof(s->loaded_key)) {
            memcpy(s->loaded_key, e->key, e->key_len);
            s->loaded_key[e->key_len] = '\0';
            s->loaded_rev = e->mod_revision;
        }
        s->n_loaded++;
    }
    return 0;
}

static void copies_of(const struct vmodels *v, const char *id, struct copy_sum *s)
{
    memset(s, 0, sizeof(*s));
    char p[KEYS_MAX];
    size_t len = strlen(id);
    if (!len || v->copies_len + len + 1 >= sizeof(p))
        return;
    memcpy(p, v->copies_prefix, v->copies_len);
    memcpy(p + v->copies_len, id, len);
    p[v->copies_len + len] = '/';
    p[v->copies_len + len + 1] = '\0';
    mirror_foreach_prefix(v->cfg.mirror, p, v->copies_len + len + 1, sum_cb, s);
}

static bool target_failed(struct vmodels *v, const char *id)
{
    mesh_status(v->cfg.mesh, id, v->st_buf);
    return v->st_buf->status == MESH_LOADING_FAILED;
}

/* Whether this node is the primary of name: the highest rendezvous score among the live
 * instances (keys in the mirror) that are not shutting down. */
struct primary_pick {
    const struct vmodels *v;
    const char *name;
    size_t len;
    uint64_t best;
    bool found, self;
};

static int primary_cb(const struct mirror_entry *e, void *arg)
{
    struct primary_pick *p = arg;
    const char *id = e->key + p->v->instances_len;
    size_t ilen = e->key_len - p->v->instances_len;
    if (!ilen || memchr(id, '/', ilen))
        return 0;
    uint64_t score = place_rendezvous(p->name, p->len, id, ilen);
    if (p->found && score <= p->best)
        return 0;
    struct instance_record rec;
    struct mm_error err = {0};
    if (record_decode(RECORD_INSTANCE, e->value, e->value_len, &rec, &err) < 0 ||
        rec.shutting_down)
        return 0;
    p->found = true;
    p->best = score;
    p->self = ilen == p->v->iid_len && memcmp(id, p->v->iid, ilen) == 0;
    return 0;
}

static bool is_primary(const struct vmodels *v, const char *name)
{
    struct primary_pick p = {.v = v, .name = name, .len = strlen(name)};
    mirror_foreach_prefix(v->cfg.mirror, v->instances_prefix, v->instances_len, primary_cb, &p);
    return p.found && p.self;
}

static int check_owner(const char *owner, struct mm_error *err)
{
    size_t len = owner ? strlen(owner) : 0;
    if (len > OWNER_MAX)
        return mm_error_set(err, -EINVAL, "owner is %zu bytes long, at most %d allowed", len,
                            OWNER_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)owner[i] < 0x20 || owner[i] == 0x7f)
            return mm_error_set(err, -EINVAL, "owner holds a control character");
    if (len && !mm_utf8_valid(owner, len))
        return mm_error_set(err, -EINVAL, "owner is not valid UTF-8");
    return 0;
}

/* ------------------------------------------------------------------ reference counts */

static size_t ref_bucket(const struct vmodels *v, const char *id, size_t len)
{
    return (size_t)(mm_hash(id, len) & (v->n_ref_buckets - 1));
}

static struct ref *ref_find(const struct vmodels *v, const char *id, size_t len)
{
    for (struct ref *r = v->refs[ref_bucket(v, id, len)]; r; r = r->next)
        if (r->len == len && memcmp(r->id, id, len) == 0)
            return r;
    return NULL;
}

static uint32_t refs_of(const struct vmodels *v, const char *id)
{
    struct ref *r = ref_find(v, id, strlen(id));
    return r ? r->count : 0;
}

static void ref_grow(struct vmodels *v)
{
    size_t nb = v->n_ref_buckets * 2;
    struct ref **b = calloc(nb, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < v->n_ref_buckets; i++)
        for (struct ref *r = v->refs[i], *next; r; r = next) {
            next = r->next;
            size_t k = (size_t)(mm_hash(r->id, r->len) & (nb - 1));
            r->next = b[k];
            b[k] = r;
        }
    free(v->refs);
    v->refs = b;
    v->n_ref_buckets = nb;
}

static void ref_add(struct vmodels *v, const char *id)
{
    size_t len = strlen(id);
    if (!len || len > KEYS_NAME_MAX)
        return;
    struct ref *r = ref_find(v, id, len);
    if (r) {
        r->count++;
        return;
    }
    if (v->n_refs >= v->n_ref_buckets)
        ref_grow(v);
    r = calloc(1, sizeof(*r));
    if (!r) {
        mm_log(MM_LOG_ERROR, WHO, "model %s: out of memory counting its vmodels", id);
        return;
    }
    memcpy(r->id, id, len);
    r->len = len;
    r->count = 1;
    size_t b = ref_bucket(v, id, len);
    r->next = v->refs[b];
    v->refs[b] = r;
    v->n_refs++;
}

/* 0 when the last reference went. */
static uint32_t ref_drop(struct vmodels *v, const char *id)
{
    size_t len = strlen(id);
    if (!len || len > KEYS_NAME_MAX)
        return 1;
    struct ref **p = &v->refs[ref_bucket(v, id, len)];
    while (*p && !((*p)->len == len && memcmp((*p)->id, id, len) == 0))
        p = &(*p)->next;
    if (!*p)
        return 0;
    struct ref *r = *p;
    if (--r->count > 0)
        return r->count;
    *p = r->next;
    free(r);
    v->n_refs--;
    return 0;
}

static void refs_add_record(struct vmodels *v, const struct vmodel_record *r)
{
    ref_add(v, r->active_model_id);
    if (strcmp(r->target_model_id, r->active_model_id) != 0)
        ref_add(v, r->target_model_id);
}

/* ------------------------------------------------------------------ auto-delete */

static void gc_free(struct gcent *g)
{
    struct vmodels *v = g->v;
    for (struct gcent **p = &v->gcs; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    ev_timer_stop(v->loop, &g->delay);
    etcd_request_cancel(g->req);
    free(g);
}

static struct gcent *gc_find(struct vmodels *v, const char *id)
{
    for (struct gcent *g = v->gcs; g; g = g->next)
        if (strcmp(g->id, id) == 0)
            return g;
    return NULL;
}

static void on_gc_deleted(int status, const struct mm_error *err, struct etcd_response *resp,
                          void *arg)
{
    struct gcent *g = arg;
    struct vmodels *v = g->v;
    g->req = NULL;
    if (status < 0)
        mm_log(MM_LOG_WARN, WHO, "model %s: auto-delete: %s (left to the next change)", g->id,
               err ? err->msg : mm_strerror(status));
    else if (resp->succeeded) {
        v->stats.auto_deleted++;
        mm_log(MM_LOG_INFO, WHO, "model %s: auto-deleted, no vmodel refers to it", g->id);
    }
    /* lost: the record changed (a new reference re-puts it; a placement or a use too): the
     * events of that change decide again */
    gc_free(g);
}

/* Delete the model now if it still qualifies: auto_delete, no vmodel refers to it. The txn is
 * conditional on the model record as the mirror has it. */
static void gc_now(struct vmodels *v, struct gcent *g)
{
    struct model_record rec;
    int64_t rev = 0;
    if (g->req)
        return;
    if (refs_of(v, g->id) > 0 || model_of(v, g->id, &rec, &rev) != 1 || !rec.auto_delete) {
        gc_free(g);
        return;
    }
    char key[KEYS_MAX], copies[KEYS_MAX];
    if (keys_model(key, sizeof(key), v->cluster, g->id, NULL) < 0 ||
        keys_copies_of(copies, sizeof(copies), v->cluster, g->id, NULL) < 0) {
        gc_free(g);
        return;
    }
    const struct etcd_compare cmp[] = {
        {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = rev}};
    const struct etcd_op del[] = {{.kind = ETCD_OP_DELETE, .key = key},
                                  {.kind = ETCD_OP_DELETE, .key = copies, .prefix = true}};
    const struct etcd_txn txn = {cmp, 1, del, 2, NULL, 0};
    if (etcd_txn(v->cfg.etcd, &txn, on_gc_deleted, g, &g->req) < 0)
        gc_free(g);
}

static void gc_delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct gcent *g = w->data;
    gc_now(g->v, g);
}

/* id lost its last reference: if it is an auto-delete model, its primary deletes it after
 * delete_grace_ms, the others after the drive delay more (if it is still there then). */
static void gc_check(struct vmodels *v, const char *id)
{
    struct model_record rec;
    if (!id[0] || refs_of(v, id) > 0 || model_of(v, id, &rec, NULL) != 1 || !rec.auto_delete)
        return;
    struct gcent *g = gc_find(v, id);
    if (!g) {
        g = calloc(1, sizeof(*g));
        if (!g)
            return;
        g->v = v;
        snprintf(g->id, sizeof(g->id), "%s", id);
        ev_timer_init(&g->delay, gc_delay_cb, 0., 0.);
        g->delay.data = g;
        g->next = v->gcs;
        v->gcs = g;
    }
    if (!ev_is_active(&g->delay) && !g->req) {
        /* a grace first: requests routed by the vmodel's previous revision finish where they
         * went (a router that still resolves to this model has not seen the switch yet) */
        unsigned ms = v->cfg.delete_grace_ms + (is_primary(v, id) ? 0 : v->cfg.drive_delay_ms);
        ev_timer_set(&g->delay, ms / 1000., 0.);
        ev_timer_start(v->loop, &g->delay);
    }
}

/* ------------------------------------------------------------------ transitions */

static void vs_eval(struct vmodels *v, const char *name, bool asked);

static struct vstate *vs_find(const struct vmodels *v, const char *name)
{
    for (struct vstate *s = v->states; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void vs_stop(struct vstate *s)
{
    ev_timer_stop(s->v->loop, &s->delay);
    ev_timer_stop(s->v->loop, &s->retry);
    mesh_op_cancel(s->ensure);
    s->ensure = NULL;
    /* a switch in flight is not cancelled (it may have been sent: its outcome comes as events) */
}

static void vs_free(struct vstate *s)
{
    struct vmodels *v = s->v;
    for (struct vstate **p = &v->states; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    vs_stop(s);
    if (s->commit)
        s->commit->s = NULL; /* its answer still comes (and is logged) */
    free(s);
}

static void vs_delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct vstate *s = w->data;
    s->may_act = true;
    char name[KEYS_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", s->name);
    vs_eval(s->v, name, false);
}

static void vs_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct vstate *s = w->data;
    char name[KEYS_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", s->name);
    vs_eval(s->v, name, false);
}

static void vs_backoff(struct vstate *s)
{
    struct vmodels *v = s->v;
    if (ev_is_active(&s->retry))
        return;
    s->retry_ms = s->retry_ms ? s->retry_ms * 2 : v->cfg.retry_ms;
    if (s->retry_ms > MAX_RETRY_MS)
        s->retry_ms = MAX_RETRY_MS;
    ev_timer_set(&s->retry, s->retry_ms / 1000., 0.);
    ev_timer_start(v->loop, &s->retry);
}

static void commit_free(struct commit *c)
{
    for (struct commit **p = &c->v->commits; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (c->s)
        c->s->commit = NULL;
    etcd_request_cancel(c->req);
    free(c);
}

static void on_switched(int status, const struct mm_error *err, struct etcd_response *resp,
                        void *arg)
{
    struct commit *c = arg;
    struct vmodels *v = c->v;
    struct vstate *s = c->s;
    c->req = NULL;
    if (status < 0) {
        mm_log(MM_LOG_WARN, WHO, "vmodel %s: switching to %s: %s (tried again)", c->name, c->to,
               err ? err->msg : mm_strerror(status));
        commit_free(c);
        if (s)
            vs_backoff(s);
        return;
    }
    if (!resp->succeeded) {
        /* the vmodel or the target's copy changed since the mirror showed them: their events
         * decide again (someone else may have switched it); a look once the mirror has had a
         * moment, in case those events came while this txn was in flight */
        v->stats.switch_lost++;
        if (s && !ev_is_active(&s->retry)) {
            ev_timer_set(&s->retry, SWITCH_RECHECK_S, 0.);
            ev_timer_start(v->loop, &s->retry);
        }
    } else {
        v->stats.switches++;
        mm_log(MM_LOG_INFO, WHO, "vmodel %s: %s is active (was %s)", c->name, c->to, c->from);
    }
    commit_free(c);
}

/* One txn: the target becomes active, if the vmodel record is still the one read (and the
 * Loaded copy that justified it still as it was). */
static void vs_switch(struct vstate *s, const struct vmodel_record *rec, int64_t rev,
                      const struct copy_sum *tc)
{
    struct vmodels *v = s->v;
    if (s->commit)
        return;
    struct vmodel_record nv = *rec;
    snprintf(nv.active_model_id, sizeof(nv.active_model_id), "%s", rec->target_model_id);
    char key[KEYS_MAX];
    char *value = record_encode(RECORD_VMODEL, &nv);
    struct commit *c = calloc(1, sizeof(*c));
    if (!value || !c || keys_vmodel(key, sizeof(key), v->cluster, s->name, NULL) < 0) {
        free(value);
        free(c);
        vs_backoff(s);
        return;
    }
    struct etcd_compare cmp[2] = {
        {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = rev}};
    size_t n_cmp = 1;
    if (tc && tc->n_loaded)
        cmp[n_cmp++] = (struct etcd_compare){.key = tc->loaded_key,
                                             .target = ETCD_CMP_MOD,
                                             .result = ETCD_CMP_EQUAL,
                                             .number = tc->loaded_rev};
    const struct etcd_op put[] = {{.kind = ETCD_OP_PUT, .key = key, .value = value}};
    const struct etcd_txn txn = {cmp, n_cmp, put, 1, NULL, 0};
    c->v = v;
    c->s = s;
    snprintf(c->name, sizeof(c->name), "%s", s->name);
    snprintf(c->from, sizeof(c->from), "%s", rec->active_model_id);
    snprintf(c->to, sizeof(c->to), "%s", rec->target_model_id);
    int rc = etcd_txn(v->cfg.etcd, &txn, on_switched, c, &c->req);
    free(value);
    if (rc < 0) {
        free(c);
        vs_backoff(s);
        return;
    }
    c->next = v->commits;
    v->commits = c;
    s->commit = c;
}

static void on_target_ensured(int status, const struct mm_error *err,
                              const struct mesh_status *st, void *arg)
{
    (void)st;
    struct vstate *s = arg;
    s->ensure = NULL;
    if (status == 0) {
        s->retry_ms = 0;
        return; /* a copy exists: its events go on */
    }
    if (status == -EIO || status == -ENOENT)
        return; /* failed to load (TRANSITION_FAILED until a failure expires), or gone */
    mm_log(MM_LOG_INFO, WHO, "vmodel %s: target %s not placed yet: %s", s->name, s->target,
           err ? err->msg : mm_strerror(status));
    vs_backoff(s);
}

/* What the transition needs now, done if this node may act. */
static void vs_act(struct vstate *s, const struct vmodel_record *rec, int64_t rev)
{
    struct vmodels *v = s->v;
    struct copy_sum tc, ac;
    copies_of(v, s->target, &tc);
    copies_of(v, s->active, &ac);
    if (tc.n_loaded > 0 || ac.n_live == 0) {
        /* the target can serve, or nothing serves the active model any more */
        vs_switch(s, rec, rev, tc.n_loaded ? &tc : NULL);
        return;
    }
    if (tc.n_live > 0 || s->ensure || ev_is_active(&s->retry))
        return; /* loading, or being placed */
    struct model_record trec;
    if (model_of(v, s->target, &trec, NULL) != 1)
        return; /* gone */
    if (target_failed(v, s->target)) {
        /* TRANSITION_FAILED until its failures expire: an expiring copy record brings an
         * event, but a failure the mesh judges by time alone brings none: look again later */
        if (!ev_is_active(&s->retry)) {
            ev_timer_set(&s->retry, FAILED_RECHECK_S, 0.);
            ev_timer_start(v->loop, &s->retry);
        }
        return;
    }
    struct model_record arec;
    int64_t used = model_of(v, s->active, &arec, NULL) == 1 && arec.last_used_ms > 0
                       ? arec.last_used_ms
                       : now_ms();
    struct mm_error err = {0};
    v->stats.ensures++;
    if (mesh_ensure(v->cfg.mesh, s->target, used, false, 0, on_target_ensured, s, &s->ensure,
                    &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "vmodel %s: placing target %s: %s", s->name, s->target,
               err.msg);
        vs_backoff(s);
    }
}

/* Look at vmodel name again: start, follow or end its driver. asked: this node took the
 * setVModel that made the transition (it acts at once, as the primary does). */
static void vs_eval(struct vmodels *v, const char *name, bool asked)
{
    struct vmodel_record rec;
    int64_t rev = 0;
    struct vstate *s = vs_find(v, name);
    if (vmodel_of(v, name, &rec, &rev) != 1 || !rec.active_model_id[0] ||
        !rec.target_model_id[0] ||
        strcmp(rec.active_model_id, rec.target_model_id) == 0) {
        if (s)
            vs_free(s);
        return;
    }
    bool primary = is_primary(v, name);
    if (s && (strcmp(s->active, rec.active_model_id) || strcmp(s->target, rec.target_model_id))) {
        vs_stop(s); /* another transition now */
        snprintf(s->active, sizeof(s->active), "%s", rec.active_model_id);
        snprintf(s->target, sizeof(s->target), "%s", rec.target_model_id);
        s->may_act = false;
        s->retry_ms = 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            mm_log(MM_LOG_ERROR, WHO, "vmodel %s: out of memory", name);
            return;
        }
        s->v = v;
        snprintf(s->name, sizeof(s->name), "%s", name);
        snprintf(s->active, sizeof(s->active), "%s", rec.active_model_id);
        snprintf(s->target, sizeof(s->target), "%s", rec.target_model_id);
        ev_timer_init(&s->delay, vs_delay_cb, 0., 0.);
        s->delay.data = s;
        ev_timer_init(&s->retry, vs_retry_cb, 0., 0.);
        s->retry.data = s;
        s->next = v->states;
        v->states = s;
        mm_log(MM_LOG_INFO, WHO, "vmodel %s: transition from %s to %s%s", name, s->active,
               s->target, primary ? " (primary here)" : "");
    }
    if (primary || asked)
        s->may_act = true;
    if (!s->may_act) {
        if (!ev_is_active(&s->delay)) {
            ev_timer_set(&s->delay, v->cfg.drive_delay_ms / 1000., 0.);
            ev_timer_start(v->loop, &s->delay);
        }
        return;
    }
    ev_timer_stop(v->loop, &s->delay);
    vs_act(s, &rec, rev);
}

/* ------------------------------------------------------------------ status */

static void fill_status(struct vmodels *v, const char *name, const char *owner,
                        struct vmodel_status *out)
{
    memset(out, 0, sizeof(*out));
    out->state = VMODEL_NOT_FOUND;
    out->active.status = MESH_NOT_FOUND;
    out->target.status = MESH_NOT_FOUND;
    struct vmodel_record rec;
    if (!name || !name[0] || strlen(name) > KEYS_NAME_MAX || vmodel_of(v, name, &rec, NULL) != 1)
        return;
    if (owner && owner[0] && strcmp(owner, rec.owner) != 0)
        return;
    snprintf(out->active_id, sizeof(out->active_id), "%s", rec.active_model_id);
    snprintf(out->target_id, sizeof(out->target_id), "%s", rec.target_model_id);
    snprintf(out->owner, sizeof(out->owner), "%s", rec.owner);
    mesh_status(v->cfg.mesh, rec.active_model_id, &out->active);
    if (strcmp(rec.active_model_id, rec.target_model_id) == 0) {
        out->state = VMODEL_DEFINED;
        return;
    }
    out->has_target = true;
    mesh_status(v->cfg.mesh, rec.target_model_id, &out->target);
    if (out->target.status == MESH_LOADING_FAILED) {
        out->state = VMODEL_TRANSITION_FAILED;
    } else {
        out->state = VMODEL_TRANSITIONING;
        /* the target is always being loaded during a transition (ModelMesh's reading) */
        if (out->target.status != MESH_NOT_FOUND && out->target.status != MESH_UNKNOWN)
            out->target.status = MESH_LOADING;
    }
}

void vmodels_status(struct vmodels *v, const char *vmodel_id, const char *owner,
                    struct vmodel_status *out)
{
    fill_status(v, vmodel_id, owner, out);
}

/* ------------------------------------------------------------------ operations */

static void op_unlink(struct vmodels_op *op)
{
    struct vmodels *v = op->v;
    if (op->prev)
        op->prev->next = op->next;
    else if (v->ops == op)
        v->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
    if (op->phase == PH_CATCHUP)
        v->n_catchup--;
    if (op->phase == PH_WAITING)
        v->n_waiting--;
}

static void op_free(struct vmodels_op *op)
{
    ev_timer_stop(op->v->loop, &op->timer);
    ev_timer_stop(op->v->loop, &op->retry);
    etcd_request_cancel(op->req);
    mesh_op_cancel(op->mop);
    free(op);
}

static void op_complete(struct vmodels_op *op, int status, const struct mm_error *err)
{
    struct vmodels *v = op->v;
    op_unlink(op);
    ev_timer_stop(v->loop, &op->timer);
    ev_timer_stop(v->loop, &op->retry);
    etcd_request_cancel(op->req);
    op->req = NULL;
    mesh_op_cancel(op->mop);
    op->mop = NULL;
    struct mm_error e = {0};
    const struct vmodel_status *st = NULL;
    if (status < 0) {
        if (err)
            e = *err;
        else
            mm_error_set(&e, status, "vmodel %s: %s", op->name, mm_strerror(status));
    } else if (op->kind != OP_DELETE) {
        fill_status(v, op->name, op->kind == OP_READ ? op->owner : NULL, v->vst_buf);
        st = v->vst_buf;
    }
    vmodels_cb cb = op->cb;
    void *arg = op->arg;
    free(op);
    cb(status, status < 0 ? &e : NULL, st, arg);
}

static void op_fail(struct vmodels_op *op, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void op_fail(struct vmodels_op *op, int code, const char *fmt, ...)
{
    struct mm_error err = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    op_complete(op, code, &err);
}

static void set_phase(struct vmodels_op *op, enum op_phase ph)
{
    struct vmodels *v = op->v;
    if (op->phase == PH_CATCHUP)
        v->n_catchup--;
    if (op->phase == PH_WAITING)
        v->n_waiting--;
    op->phase = ph;
    if (ph == PH_WAITING)
        v->n_waiting++;
    if (ph == PH_CATCHUP) {
        v->n_catchup++;
        ev_timer_stop(v->loop, &v->catchup_timer);
        ev_timer_set(&v->catchup_timer, 0., CATCH_UP_POLL_S);
        ev_timer_start(v->loop, &v->catchup_timer);
    }
}

static void op_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct vmodels_op *op = w->data;
    op_fail(op, -ETIMEDOUT, "vmodel %s: %s within the time given", op->name,
            op->phase == PH_WAITING    ? "transition to target not done"
            : op->phase == PH_ENSURING ? "target not loaded"
                                       : "not done");
}

static int64_t op_remaining_ms(const struct vmodels_op *op)
{
    if (!ev_is_active(&op->timer))
        return 0;
    int64_t left = (int64_t)(ev_timer_remaining(op->v->loop, (ev_timer *)&op->timer) * 1000.);
    return left > 0 ? left : 1;
}

static void op_read(struct vmodels_op *op);

static void op_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    op_read(w->data);
}

/* An etcd error: the write may or may not have happened; read again and decide again (a
 * write that happened reads back as "nothing to change"). */
static void op_etcd_error(struct vmodels_op *op, const struct mm_error *err, int status)
{
    if (++op->attempts >= op->v->cfg.max_attempts) {
        op_fail(op, -EAGAIN, "vmodel %s: etcd unreachable: %s", op->name,
                err ? err->msg : mm_strerror(status));
        return;
    }
    ev_timer_set(&op->retry, RETRY_DELAY_S * op->attempts, 0.);
    ev_timer_start(op->v->loop, &op->retry);
}

/* After the mirror caught up: wait for the transition, load the target, or answer. */
static void on_op_ensured(int status, const struct mm_error *err, const struct mesh_status *st,
                          void *arg)
{
    (void)st;
    struct vmodels_op *op = arg;
    op->mop = NULL;
    if (status == 0 || status == -EIO) /* a failed load is an answer: its status says so */
        op_complete(op, 0, NULL);
    else
        op_complete(op, status, err);
}

static bool transition_over(struct vmodels *v, const struct vmodels_op *op)
{
    struct vmodel_record rec;
    if (vmodel_of(v, op->name, &rec, NULL) != 1)
        return true; /* deleted */
    if (strcmp(rec.target_model_id, op->target) != 0)
        return true; /* another target now */
    if (strcmp(rec.active_model_id, op->target) == 0)
        return true; /* switched */
    return target_failed(v, op->target);
}

static void op_caught_up(struct vmodels_op *op)
{
    struct vmodels *v = op->v;
    if (op->kind != OP_SET) {
        op_complete(op, 0, NULL);
        return;
    }
    if (op->in_transition) {
        vs_eval(v, op->name, true);
        if (!op->sync) {
            op_complete(op, 0, NULL);
            return;
        }
        set_phase(op, PH_WAITING);
        if (transition_over(v, op))
            op_complete(op, 0, NULL);
        return;
    }
    if (!op->ensure_after) {
        op_complete(op, 0, NULL);
        return;
    }
    set_phase(op, PH_ENSURING);
    struct mm_error err = {0};
    int rc = mesh_ensure(v->cfg.mesh, op->target, op->last_used_ms, op->ensure_sync,
                         op_remaining_ms(op), on_op_ensured, op, &op->mop, &err);
    if (rc < 0)
        op_complete(op, rc, &err);
}

static void catchup_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct vmodels *v = w->data;
    if (v->n_catchup == 0) {
        ev_timer_stop(loop, w);
        return;
    }
    int64_t rev = mirror_revision(v->cfg.mirror);
    /* one at a time from the head: a completion may end others */
    for (;;) {
        struct vmodels_op *op = v->ops;
        while (op && !(op->phase == PH_CATCHUP && rev >= op->catchup_rev))
            op = op->next;
        if (!op)
            break;
        set_phase(op, PH_READING); /* leaves the catch-up count */
        op_caught_up(op);
    }
}

static void check_waiters(struct vmodels *v)
{
    if (v->n_waiting == 0)
        return;
    for (;;) {
        struct vmodels_op *op = v->ops;
        while (op && !(op->phase == PH_WAITING && transition_over(v, op)))
            op = op->next;
        if (!op)
            break;
        op_complete(op, 0, NULL);
    }
}


static void on_written(int status, const struct mm_error *err, struct etcd_response *resp,
                       void *arg);

static void decide(struct vmodels_op *op, const struct etcd_kv *vkv, const struct etcd_kv *tkv);

static void op_wait_mirror(struct vmodels_op *op, int64_t rev)
{
    op->catchup_rev = rev;
    set_phase(op, PH_CATCHUP);
}

/* deleteVModel's decision from what was read. */
static void decide_delete(struct vmodels_op *op, const struct etcd_kv *vkv)
{
    struct vmodels *v = op->v;
    struct vmodel_record vr;
    struct mm_error err = {0};
    if (!vkv) {
        op_complete(op, 0, NULL); /* nothing to delete: done, as ModelMesh answers */
        return;
    }
    if (record_decode(RECORD_VMODEL, vkv->value, vkv->value_len, &vr, &err) < 0) {
        op_fail(op, -EIO, "vmodel %s: unreadable record: %s", op->name, err.msg);
        return;
    }
    if (op->owner[0] && strcmp(vr.owner, op->owner) != 0) {
        op_complete(op, 0, NULL); /* another owner's: not ours to delete, not an error */
        return;
    }
    const struct etcd_compare cmp[] = {{.key = op->vkey,
                                        .target = ETCD_CMP_MOD,
                                        .result = ETCD_CMP_EQUAL,
                                        .number = vkv->mod_revision}};
    const struct etcd_op del[] = {{.kind = ETCD_OP_DELETE, .key = op->vkey}};
    const struct etcd_op get[] = {{.kind = ETCD_OP_RANGE, .key = op->vkey}};
    const struct etcd_txn txn = {cmp, 1, del, 1, get, 1};
    set_phase(op, PH_WRITING);
    if (etcd_txn(v->cfg.etcd, &txn, on_written, op, &op->req) < 0)
        op_fail(op, -EAGAIN, "vmodel %s: deleting: %s", op->name, mm_strerror(-ENOMEM));
}

/* setVModel's decision from the vmodel and target records as read (ModelMesh's rules), then
 * one txn conditional on both. */
static void decide(struct vmodels_op *op, const struct etcd_kv *vkv, const struct etcd_kv *tkv)
{
    struct vmodels *v = op->v;
    if (op->kind == OP_DELETE) {
        decide_delete(op, vkv);
        return;
    }
    if (op->kind == OP_READ) {
        /* there: answer once the mirror has it; absent: answer now */
        if (vkv)
            op_wait_mirror(op, vkv->mod_revision);
        else
            op_complete(op, 0, NULL);
        return;
    }
    struct vmodel_record vr = {0};
    struct model_record mr = {0};
    struct mm_error err = {0};
    bool have_v = vkv != NULL, have_m = tkv != NULL;
    int64_t vrev = have_v ? vkv->mod_revision : 0, mrev = have_m ? tkv->mod_revision : 0;
    if (have_v && record_decode(RECORD_VMODEL, vkv->value, vkv->value_len, &vr, &err) < 0) {
        op_fail(op, -EIO, "vmodel %s: unreadable record: %s", op->name, err.msg);
        return;
    }
    if (have_m && record_decode(RECORD_MODEL, tkv->value, tkv->value_len, &mr, &err) < 0) {
        op_fail(op, -EIO, "model %s: unreadable record: %s", op->target, err.msg);
        return;
    }
    const char *T = op->target;
    bool owner_differs = have_v && op->owner[0] && strcmp(vr.owner, op->owner) != 0;
    if (op->expected[0]) {
        if (!have_v) {
            if (strcmp(op->expected, T) != 0) {
                op_fail(op, -EBUSY, "vmodel %s not found", op->name);
                return;
            }
        } else if (!owner_differs && strcmp(op->expected, vr.target_model_id) != 0 &&
                   strcmp(T, vr.target_model_id) != 0) {
            op_fail(op, -EBUSY, "Existing target model %s does not match expected %s",
                    vr.target_model_id, op->expected);
            return;
        }
    }
    if (owner_differs) {
        op_fail(op, -EEXIST, "vmodel %s already exists with different owner \"%s\"", op->name,
                vr.owner);
        return;
    }
    if (!op->has_info && !have_m) {
        op_fail(op, -ENOENT, "Target model %s not found", T);
        return;
    }
    if (op->has_info && have_m && !mesh_same_info(&mr, &op->info)) {
        op_fail(op, -EEXIST, "Target model %s already exists with different attribute values",
                T);
        return;
    }
    struct vmodel_record nv = {0};
    const char *prev_active = NULL;
    size_t prev_live = 0;
    int64_t latest = vrev > mrev ? vrev : mrev;
    if (have_v) {
        nv = vr;
        if (strcmp(T, vr.target_model_id) != 0) {
            snprintf(nv.target_model_id, sizeof(nv.target_model_id), "%s", T);
        } else if (strcmp(T, vr.active_model_id) == 0 || !op->force) {
            /* already the target: nothing to write (a transition goes on as it is) */
            op->in_transition = strcmp(T, vr.active_model_id) != 0;
            op->ensure_after = !op->in_transition && op->load_now;
            op->ensure_sync = op->sync && op->has_info;
            op->last_used_ms = have_m && mr.last_used_ms > 0 ? mr.last_used_ms : now_ms();
            op_wait_mirror(op, latest);
            return;
        }
        if (strcmp(T, vr.active_model_id) != 0) {
            if (!vr.active_model_id[0]) {
                snprintf(nv.active_model_id, sizeof(nv.active_model_id), "%s", T);
            } else {
                struct copy_sum ac, tc;
                copies_of(v, vr.active_model_id, &ac);
                copies_of(v, T, &tc);
                prev_active = vr.active_model_id;
                /* switch at once when forced, when nothing serves the active model, or when
                 * the target is Loaded already: nothing to wait for */
                if (op->force || ac.n_live == 0 || (have_m && tc.n_loaded > 0)) {
                    snprintf(nv.active_model_id, sizeof(nv.active_model_id), "%s", T);
                    prev_live = ac.n_live;
                }
            }
        }
    } else {
        if (op->update_only) {
            op_fail(op, -ENOENT, "vmodel %s not found", op->name);
            return;
        }
        snprintf(nv.active_model_id, sizeof(nv.active_model_id), "%s", T);
        snprintf(nv.target_model_id, sizeof(nv.target_model_id), "%s", T);
        snprintf(nv.owner, sizeof(nv.owner), "%s", op->owner);
    }
    /* the target's record: created from the info, or re-put as it is (a fence: an unregister
     * or an auto-delete of it, conditional on its revision, fails), its last use at least the
     * active model's so that it sits where the active one sat in the pods' LRU */
    struct model_record nm = mr;
    int64_t now = now_ms();
    if (!have_m) {
        memset(&nm, 0, sizeof(nm));
        snprintf(nm.type, sizeof(nm.type), "%s", op->info.type);
        snprintf(nm.runtime, sizeof(nm.runtime), "%s", op->info.runtime);
        snprintf(nm.storage_path, sizeof(nm.storage_path), "%s", op->info.storage_path);
        snprintf(nm.storage_key, sizeof(nm.storage_key), "%s", op->info.storage_key);
        memcpy(nm.storage_params, op->info.storage_params, sizeof(nm.storage_params));
        nm.auto_delete = op->auto_delete;
        nm.registered_ms = now;
        nm.last_used_ms = mesh_initial_last_used(v->cfg.mesh, op->load_now);
    }
    struct model_record ar;
    if (prev_active && model_of(v, prev_active, &ar, NULL) == 1 &&
        ar.last_used_ms > nm.last_used_ms)
        nm.last_used_ms = ar.last_used_ms;
    op->in_transition = strcmp(nv.active_model_id, nv.target_model_id) != 0;
    op->ensure_after = !op->in_transition && (op->load_now || prev_live > 0);
    op->ensure_sync = op->sync && op->has_info;
    op->last_used_ms = nm.last_used_ms > 0 ? nm.last_used_ms : now;
    char *vval = record_encode(RECORD_VMODEL, &nv);
    char *mval = record_encode(RECORD_MODEL, &nm);
    if (!vval || !mval) {
        free(vval);
        free(mval);
        op_fail(op, -ENOMEM, "vmodel %s: out of memory", op->name);
        return;
    }
    const struct etcd_compare cmp[] = {
        have_v ? (struct etcd_compare){.key = op->vkey, .target = ETCD_CMP_MOD,
                                       .result = ETCD_CMP_EQUAL, .number = vrev}
               : (struct etcd_compare){.key = op->vkey, .target = ETCD_CMP_CREATE,
                                       .result = ETCD_CMP_EQUAL, .number = 0},
        have_m ? (struct etcd_compare){.key = op->tkey, .target = ETCD_CMP_MOD,
                                       .result = ETCD_CMP_EQUAL, .number = mrev}
               : (struct etcd_compare){.key = op->tkey, .target = ETCD_CMP_CREATE,
                                       .result = ETCD_CMP_EQUAL, .number = 0},
    };
    const struct etcd_op put[] = {{.kind = ETCD_OP_PUT, .key = op->vkey, .value = vval},
                                  {.kind = ETCD_OP_PUT, .key = op->tkey, .value = mval}};
    const struct etcd_op get[] = {{.kind = ETCD_OP_RANGE, .key = op->vkey},
                                  {.kind = ETCD_OP_RANGE, .key = op->tkey}};
    const struct etcd_txn txn = {cmp, 2, put, 2, get, 2};
    set_phase(op, PH_WRITING);
    int rc = etcd_txn(v->cfg.etcd, &txn, on_written, op, &op->req);
    free(vval);
    free(mval);
    if (rc < 0)
        op_fail(op, -EAGAIN, "vmodel %s: writing: %s", op->name, mm_strerror(rc));
}

static const struct etcd_kv *one_kv(const struct etcd_response *resp, size_t i)
{
    if (i >= resp->n_results || resp->results[i].n_kvs != 1)
        return NULL;
    return &resp->results[i].kvs[0];
}

static void on_written(int status, const struct mm_error *err, struct etcd_response *resp,
                       void *arg)
{
    struct vmodels_op *op = arg;
    op->req = NULL;
    if (status < 0) {
        op_etcd_error(op, err, status);
        return;
    }
    if (resp->succeeded) {
        if (op->kind == OP_DELETE)
            mm_log(MM_LOG_INFO, WHO, "vmodel %s deleted", op->name);
        op_wait_mirror(op, resp->revision);
        return;
    }
    /* lost to another write: decide again from what the txn read back */
    if (++op->attempts >= op->v->cfg.max_attempts) {
        op_fail(op, -EAGAIN, "vmodel %s: changed by others %u times in a row; try again",
                op->name, op->attempts);
        return;
    }
    decide(op, one_kv(resp, 0), op->kind == OP_SET ? one_kv(resp, 1) : NULL);
}

static void on_read(int status, const struct mm_error *err, struct etcd_response *resp,
                    void *arg)
{
    struct vmodels_op *op = arg;
    op->req = NULL;
    if (status < 0) {
        op_etcd_error(op, err, status);
        return;
    }
    decide(op, one_kv(resp, 0), op->kind == OP_SET ? one_kv(resp, 1) : NULL);
}

/* Read the vmodel record (and the target's) at one revision: a txn of reads only. */
static void op_read(struct vmodels_op *op)
{
    struct vmodels *v = op->v;
    const struct etcd_op get[] = {{.kind = ETCD_OP_RANGE, .key = op->vkey},
                                  {.kind = ETCD_OP_RANGE, .key = op->tkey}};
    const struct etcd_txn txn = {NULL, 0, get, op->kind == OP_SET ? 2 : 1, NULL, 0};
    set_phase(op, PH_READING);
    int rc = etcd_txn(v->cfg.etcd, &txn, on_read, op, &op->req);
    if (rc < 0) {
        struct mm_error err = {0};
        mm_error_set(&err, rc, "vmodel %s: reading: %s", op->name, mm_strerror(rc));
        op_etcd_error(op, &err, rc);
    }
}

static struct vmodels_op *op_new(struct vmodels *v, enum op_kind kind, const char *name,
                                 int64_t timeout_ms, vmodels_cb cb, void *arg)
{
    struct vmodels_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->v = v;
    op->kind = kind;
    op->phase = PH_READING;
    op->cb = cb;
    op->arg = arg;
    op->timeout_ms = timeout_ms;
    snprintf(op->name, sizeof(op->name), "%s", name);
    ev_timer_init(&op->timer, op_timer_cb, timeout_ms > 0 ? (double)timeout_ms / 1000. : 0., 0.);
    op->timer.data = op;
    ev_timer_init(&op->retry, op_retry_cb, 0., 0.);
    op->retry.data = op;
    return op;
}

/* Link and start: from the loop, never inside the caller's call. */
static int op_start(struct vmodels_op *op, struct vmodels_op **out)
{
    struct vmodels *v = op->v;
    op->next = v->ops;
    if (v->ops)
        v->ops->prev = op;
    v->ops = op;
    if (op->timeout_ms > 0)
        ev_timer_start(v->loop, &op->timer);
    op_read(op);
    if (out)
        *out = op;
    return 0;
}

int vmodels_set(struct vmodels *v, const struct vmodel_set_req *req, int64_t timeout_ms,
                vmodels_cb cb, void *arg, struct vmodels_op **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    if (!req || !req->vmodel_id || !req->vmodel_id[0])
        return mm_error_set(err, -EINVAL, "Must provide vModelId");
    int rc = keys_check_name("vModelId", req->vmodel_id, err);
    if (rc < 0)
        return rc;
    if (!req->target_id || !req->target_id[0])
        return mm_error_set(err, -EINVAL, "Must provide target modelId for vmodel %s",
                            req->vmodel_id);
    if ((rc = keys_check_name("targetModelId", req->target_id, err)) < 0)
        return rc;
    struct model_record info = {0};
    if (req->info && (rc = mesh_info_record(req->target_id, req->info, &info, err)) < 0)
        return rc;
    if (req->expected_target_id && req->expected_target_id[0] &&
        (rc = keys_check_name("expectedTargetModelId", req->expected_target_id, err)) < 0)
        return rc;
    if ((rc = check_owner(req->owner, err)) < 0)
        return rc;
    struct vmodels_op *op = op_new(v, OP_SET, req->vmodel_id, timeout_ms, cb, arg);
    if (!op)
        return mm_error_set(err, -ENOMEM, "vmodel %s: out of memory", req->vmodel_id);
    snprintf(op->target, sizeof(op->target), "%s", req->target_id);
    snprintf(op->expected, sizeof(op->expected), "%s",
             req->expected_target_id ? req->expected_target_id : "");
    snprintf(op->owner, sizeof(op->owner), "%s", req->owner ? req->owner : "");
    if (req->info) {
        op->has_info = true;
        op->info = info;
    }
    op->update_only = req->update_only;
    op->auto_delete = req->auto_delete;
    op->load_now = req->load_now;
    op->force = req->force;
    op->sync = req->sync;
    if (keys_vmodel(op->vkey, sizeof(op->vkey), v->cluster, op->name, err) < 0 ||
        keys_model(op->tkey, sizeof(op->tkey), v->cluster, op->target, err) < 0) {
        op_free(op);
        return -EINVAL;
    }
    return op_start(op, out);
}

int vmodels_delete(struct vmodels *v, const char *vmodel_id, const char *owner,
                   int64_t timeout_ms, vmodels_cb cb, void *arg, struct vmodels_op **out,
                   struct mm_error *err)
{
    if (out)
        *out = NULL;
    if (!vmodel_id || !vmodel_id[0])
        return mm_error_set(err, -EINVAL, "Must provide vModelId");
    int rc = keys_check_name("vModelId", vmodel_id, err);
    if (rc < 0 || (rc = check_owner(owner, err)) < 0)
        return rc;
    struct vmodels_op *op = op_new(v, OP_DELETE, vmodel_id, timeout_ms, cb, arg);
    if (!op)
        return mm_error_set(err, -ENOMEM, "vmodel %s: out of memory", vmodel_id);
    snprintf(op->owner, sizeof(op->owner), "%s", owner ? owner : "");
    if (keys_vmodel(op->vkey, sizeof(op->vkey), v->cluster, op->name, err) < 0) {
        op_free(op);
        return -EINVAL;
    }
    return op_start(op, out);
}

int vmodels_status_read(struct vmodels *v, const char *vmodel_id, const char *owner,
                        int64_t timeout_ms, vmodels_cb cb, void *arg, struct vmodels_op **out,
                        struct mm_error *err)
{
    if (out)
        *out = NULL;
    int rc = keys_check_name("vModelId", vmodel_id, err);
    if (rc < 0 || (rc = check_owner(owner, err)) < 0)
        return rc;
    struct vmodels_op *op = op_new(v, OP_READ, vmodel_id, timeout_ms, cb, arg);
    if (!op)
        return mm_error_set(err, -ENOMEM, "vmodel %s: out of memory", vmodel_id);
    snprintf(op->owner, sizeof(op->owner), "%s", owner ? owner : "");
    if (keys_vmodel(op->vkey, sizeof(op->vkey), v->cluster, op->name, err) < 0) {
        op_free(op);
        return -EINVAL;
    }
    return op_start(op, out);
}

void vmodels_op_cancel(struct vmodels_op *op)
{
    if (!op)
        return;
    op_unlink(op);
    op_free(op);
}

void vmodels_get_stats(const struct vmodels *v, struct vmodels_stats *out)
{
    *out = v->stats;
}

/* ------------------------------------------------------------------ mirror events */

static void on_vmodels(const struct mirror_event *ev, void *arg)
{
    struct vmodels *v = arg;
    const char *name = ev->key + v->vmodels_len;
    size_t len = ev->key_len - v->vmodels_len;
    if (len == 0 || len > KEYS_NAME_MAX || memchr(name, '/', len) || memchr(name, '\0', len))
        return;
    char id[KEYS_NAME_MAX + 1];
    memcpy(id, name, len);
    id[len] = '\0';
    struct vmodel_record was, now;
    struct mm_error err = {0};
    bool have_was = ev->old_value &&
                    record_decode(RECORD_VMODEL, ev->old_value, ev->old_len, &was, &err) == 0;
    bool have_now = ev->new_value &&
                    record_decode(RECORD_VMODEL, ev->new_value, ev->new_len, &now, &err) == 0;
    if (have_now)
        refs_add_record(v, &now);
    if (have_was) {
        /* the references this record held: a model left without any may be auto-deleted */
        const char *ids[2] = {was.active_model_id, was.target_model_id};
        for (size_t i = 0; i < 2; i++) {
            if (i == 1 && strcmp(ids[1], ids[0]) == 0)
                break;
            if (ref_drop(v, ids[i]) == 0)
                gc_check(v, ids[i]);
        }
    }
    vs_eval(v, id, false);
    check_waiters(v);
}

/* Evaluate the transitions whose active or target model is id (NULL: all), by name: an
 * evaluation may end states. */
static void eval_matching(struct vmodels *v, const char *id)
{
    size_t n = 0;
    for (struct vstate *s = v->states; s; s = s->next)
        n += !id || strcmp(s->target, id) == 0 || strcmp(s->active, id) == 0;
    if (n == 0)
        return;
    char (*names)[KEYS_NAME_MAX + 1] = calloc(n, sizeof(*names));
    if (!names)
        return;
    size_t i = 0;
    for (struct vstate *s = v->states; s && i < n; s = s->next)
        if (!id || strcmp(s->target, id) == 0 || strcmp(s->active, id) == 0)
            snprintf(names[i++], sizeof(names[0]), "%s", s->name);
    for (size_t k = 0; k < i; k++)
        vs_eval(v, names[k], false);
    free(names);
}

static void on_copies(const struct mirror_event *ev, void *arg)
{
    struct vmodels *v = arg;
    struct key_parts kp;
    if (!v->states && !v->n_waiting)
        return;
    if (keys_parse_relative(ev->key + v->prefix_len, ev->key_len - v->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY || kp.first_len > KEYS_NAME_MAX)
        return;
    char id[KEYS_NAME_MAX + 1];
    memcpy(id, kp.first, kp.first_len);
    id[kp.first_len] = '\0';
    eval_matching(v, id);
    check_waiters(v);
}

static void on_instances(const struct mirror_event *ev, void *arg)
{
    struct vmodels *v = arg;
    /* an instance went: this node may be the primary of transitions now */
    if (ev->kind == MIRROR_DELETE)
        eval_matching(v, NULL);
}

static void on_models(const struct mirror_event *ev, void *arg)
{
    struct vmodels *v = arg;
    if (ev->kind != MIRROR_DELETE)
        return;
    check_waiters(v); /* a target unregistered meanwhile (by hand): its wait ends */
}

static int seed_vmodel(const struct mirror_entry *e, void *arg)
{
    struct vmodels *v = arg;
    struct vmodel_record r;
    struct mm_error err = {0};
    if (record_decode(RECORD_VMODEL, e->value, e->value_len, &r, &err) == 0)
        refs_add_record(v, &r);
    return 0;
}

static int seed_transition(const struct mirror_entry *e, void *arg)
{
    struct vmodels *v = arg;
    const char *name = e->key + v->vmodels_len;
    size_t len = e->key_len - v->vmodels_len;
    struct vmodel_record r;
    struct mm_error err = {0};
    if (len == 0 || len > KEYS_NAME_MAX || memchr(name, '/', len) || memchr(name, '\0', len) ||
        record_decode(RECORD_VMODEL, e->value, e->value_len, &r, &err) < 0 ||
        strcmp(r.active_model_id, r.target_model_id) == 0)
        return 0;
    char id[KEYS_NAME_MAX + 1];
    memcpy(id, name, len);
    id[len] = '\0';
    /* not from inside the walk: collected into a state whose delay timer acts */
    struct vstate *s = calloc(1, sizeof(*s));
    if (!s)
        return 0;
    s->v = v;
    snprintf(s->name, sizeof(s->name), "%s", id);
    snprintf(s->active, sizeof(s->active), "%s", r.active_model_id);
    snprintf(s->target, sizeof(s->target), "%s", r.target_model_id);
    ev_timer_init(&s->delay, vs_delay_cb, 0., 0.);
    s->delay.data = s;
    ev_timer_init(&s->retry, vs_retry_cb, 0., 0.);
    s->retry.data = s;
    s->next = v->states;
    v->states = s;
    return 0;
}

/* ------------------------------------------------------------------ life */

int vmodels_new(const struct vmodels_config *cfg, struct vmodels **out, struct mm_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->cluster || !cfg->iid || !cfg->etcd || !cfg->mirror || !cfg->mesh)
        return mm_error_set(err, -EINVAL, "vmodels: cluster, instance id, etcd, mirror and "
                                          "mesh are required");
    int rc;
    if ((rc = keys_check_name("cluster name", cfg->cluster, err)) < 0 ||
        (rc = keys_check_name("instance id", cfg->iid, err)) < 0)
        return rc;
    struct vmodels *v = calloc(1, sizeof(*v));
    if (!v)
        return mm_error_set(err, -ENOMEM, "vmodels: out of memory");
    v->cfg = *cfg;
    v->loop = etcd_client_loop(cfg->etcd);
    snprintf(v->cluster, sizeof(v->cluster), "%s", cfg->cluster);
    snprintf(v->iid, sizeof(v->iid), "%s", cfg->iid);
    v->iid_len = strlen(v->iid);
    v->cfg.cluster = v->cluster;
    v->cfg.iid = v->iid;
    if (!v->cfg.drive_delay_ms)
        v->cfg.drive_delay_ms = 2000;
    if (!v->cfg.max_attempts)
        v->cfg.max_attempts = 8;
    if (!v->cfg.retry_ms)
        v->cfg.retry_ms = 1000;
    if (!v->cfg.delete_grace_ms)
        v->cfg.delete_grace_ms = 1000;
    keys_prefix(v->prefix, sizeof(v->prefix), v->cluster, NULL);
    v->prefix_len = strlen(v->prefix);
    v->vmodels_len = (size_t)snprintf(v->vmodels_prefix, sizeof(v->vmodels_prefix),
                                      "%svmodels/", v->prefix);
    v->models_len = (size_t)snprintf(v->models_prefix, sizeof(v->models_prefix), "%smodels/",
                                     v->prefix);
    v->copies_len = (size_t)snprintf(v->copies_prefix, sizeof(v->copies_prefix), "%scopies/",
                                     v->prefix);
    v->instances_len = (size_t)snprintf(v->instances_prefix, sizeof(v->instances_prefix),
                                        "%sinstances/", v->prefix);
    v->n_ref_buckets = 64;
    v->refs = calloc(v->n_ref_buckets, sizeof(*v->refs));
    v->st_buf = malloc(sizeof(*v->st_buf));
    v->vst_buf = malloc(sizeof(*v->vst_buf));
    if (!v->refs || !v->st_buf || !v->vst_buf) {
        vmodels_free(v);
        return mm_error_set(err, -ENOMEM, "vmodels: out of memory");
    }
    ev_init(&v->catchup_timer, catchup_cb);
    v->catchup_timer.repeat = CATCH_UP_POLL_S;
    v->catchup_timer.data = v;
    /* what the mirror holds now (references, transitions under way), then every change */
    mirror_foreach_prefix(cfg->mirror, v->vmodels_prefix, v->vmodels_len, seed_vmodel, v);
    mirror_foreach_prefix(cfg->mirror, v->vmodels_prefix, v->vmodels_len, seed_transition, v);
    for (struct vstate *s = v->states; s; s = s->next) {
        /* evaluated from the loop: the primary at once, the others after the delay */
        ev_timer_set(&s->delay, is_primary(v, s->name) ? 0. : v->cfg.drive_delay_ms / 1000.,
                     0.);
        ev_timer_start(v->loop, &s->delay);
    }
    if (mirror_subscribe(cfg->mirror, v->vmodels_prefix, v->vmodels_len, on_vmodels, v,
                         &v->sub_vmodels) < 0 ||
        mirror_subscribe(cfg->mirror, v->copies_prefix, v->copies_len, on_copies, v,
                         &v->sub_copies) < 0 ||
        mirror_subscribe(cfg->mirror, v->models_prefix, v->models_len, on_models, v,
                         &v->sub_models) < 0 ||
        mirror_subscribe(cfg->mirror, v->instances_prefix, v->instances_len, on_instances, v,
                         &v->sub_instances) < 0) {
        vmodels_free(v);
        return mm_error_set(err, -ENOMEM, "vmodels: subscribing to the mirror: out of memory");
    }
    *out = v;
    return 0;
}

void vmodels_free(struct vmodels *v)
{
    if (!v)
        return;
    mirror_unsubscribe(v->sub_vmodels);
    mirror_unsubscribe(v->sub_copies);
    mirror_unsubscribe(v->sub_models);
    mirror_unsubscribe(v->sub_instances);
    ev_timer_stop(v->loop, &v->catchup_timer);
    while (v->ops) {
        struct vmodels_op *op = v->ops;
        op_unlink(op);
        op_free(op);
    }
    while (v->states)
        vs_free(v->states);
    while (v->commits)
        commit_free(v->commits);
    while (v->gcs)
        gc_free(v->gcs);
    for (size_t b = 0; v->refs && b < v->n_ref_buckets; b++)
        for (struct ref *r = v->refs[b], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    free(v->refs);
    free(v->st_buf);
    free(v->vst_buf);
    free(v);
}
