/* mesh.c - the node's part in the whole mesh: see mesh.h for the contract and docs/node.md for
 * the rules. Everything here runs on the loop thread.
 *
 * Per model that something is happening to, one `struct mstate` (a hash by id): the operations
 * waiting on it, its placement job (one per model per node: concurrent operations share it),
 * its use since the last rate check and its move at shutdown. Decisions read the mirror (models/,
 * copies/, and a decoded cache of instances/); a placer that lost the race re-decides from what
 * its txn read back. */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mm/copies.h"
#include "mm/hash.h"
#include "mm/etcd.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/place.h"
#include "mm/placer.h"
#include "mm/records.h"

#define WHO "mesh"
#define MAX_SEEN_COPIES 256   /* copies of one model a decision looks at */
#define MAX_BG_RUNNING 4      /* background placements (re-placement, loadNow, scaling) at once */
#define CATCH_UP_POLL_S 0.02  /* waiting for the mirror to reach a revision we wrote */
#define RETRY_DELAY_S 0.2     /* after an etcd error whose outcome is unknown */
#define MAX_MOVES 4096        /* local copies considered at shutdown */
#define MAX_MODEL_LABELS 2

enum job_state { JOB_NONE, JOB_DELAYED, JOB_QUEUED, JOB_RUNNING };
enum op_kind { OP_REGISTER, OP_UNREGISTER, OP_ENSURE };
enum op_phase {
    PH_WRITING,  /* its txn (register, unregister) or read (ensure) is in flight */
    PH_CATCHUP,  /* written at a revision the mirror has not reached yet */
    PH_PLACING,  /* a copy is wanted: the model's job places one */
    PH_WAITING,  /* sync: a copy exists, waiting for Loaded */
};
enum move_state { MOVE_NONE, MOVE_PENDING, MOVE_DONE };

struct mesh_op {
    struct mesh *m;
    struct mstate *ms;
    struct mesh_op *prev, *next; /* in ms->ops */
    enum op_kind kind;
    enum op_phase phase;
    bool sync;
    int64_t catchup_rev;
    int64_t used_ms; /* ensure: the use it reports */
    struct etcd_request *req;
    ev_timer timer; /* the deadline */
    mesh_cb cb;
    void *arg;
    struct model_record want; /* register: what was asked for */
    bool again;               /* unregister: the record changed under the txn; check again
                                 once the mirror has the change */
    bool elsewhere;           /* ensure: copies on the model's excluded instances do not count
                                 (mesh_ensure_elsewhere) */
    unsigned attempts;
};

/* The instances a model's mesh_ensure_elsewhere operations exclude, together: copies there do
 * not count as copies and none is placed there. Kept while such an operation waits. */
struct excl {
    char id[MESH_EXCLUDE_MAX][KEYS_NAME_MAX + 1];
    size_t len[MESH_EXCLUDE_MAX];
    size_t n;
};

struct mstate {
    struct mstate *hnext;
    struct mesh *m;
    char id[KEYS_NAME_MAX + 1];
    size_t id_len;
    struct mesh_op *ops;
    unsigned busy; /* > 0 while code up the stack uses it: not freed */
    /* the placement job */
    enum job_state job;
    bool job_for_ops;     /* started for operations: not counted against MAX_BG_RUNNING */
    bool job_allow_evict; /* may choose a pod that must evict */
    bool job_move;        /* a copy on another instance than this one is wanted */
    bool job_extra;       /* one copy more than there are (scaling up) */
    bool job_elsewhere;   /* copies on the excluded instances (excl) do not count */
    struct excl *excl;    /* while mesh_ensure_elsewhere operations wait; else NULL */
    uint32_t job_target;  /* ... up to this many live copies: a decider that loses the race to
                             another's extra copy stops there instead of adding one more */
    unsigned attempts;
    struct placer_request *placer;
    ev_timer job_timer; /* the delay of a non-primary, or a retry */
    struct mstate *qnext;
    int64_t placed_rev;   /* our placement's revision: do not decide again before the mirror */
    char gone_iid[KEYS_NAME_MAX + 1]; /* a target that was gone: not chosen again by this job */
    char last_target[KEYS_NAME_MAX + 1];
    int64_t touch_ms;     /* last use to write with the next placement */
    int64_t order_ms;     /* the model's last use: background jobs run most recent first */
    /* use, for the copy-count checks */
    uint64_t requests;
    int64_t last_use_ms, earliest_use_check_ms, latest_use_check_ms;
    /* shutdown */
    enum move_state move;
    unsigned refusals; /* copies refused in a row (none Loaded since): bounds re-placing */
    struct etcd_request *touch_req; /* the model record's last use, being written */
    int64_t touch_want_ms;          /* a later use to write once that write is done */
    int64_t touch_writing_ms;       /* the use being written */
    unsigned touch_tries;
};

struct inst {
    struct place_str labels[RECORD_LABELS_MAX];
    size_t n_labels;
    char id[KEYS_NAME_MAX + 1];
    size_t id_len;
    char zone[64];
    char label_buf[RECORD_LABELS_MAX][RECORD_LABEL_BYTES];
    struct instance_record_view {
        uint64_t capacity, used, default_size;
        uint32_t loaded, loading;
        int64_t oldest;
        bool shutting_down;
    } rec;
    int64_t lease, mod_rev;
    uint64_t pending_bytes; /* placed here by us since its record last changed */
    uint32_t pending_n;
};

struct mesh {
    struct mesh_config cfg;
    struct ev_loop *loop;
    char cluster[KEYS_NAME_MAX + 1];
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
    struct place_config place;
    char prefix[KEYS_MAX];
    size_t prefix_len;
    char models_prefix[KEYS_MAX], copies_prefix[KEYS_MAX], instances_prefix[KEYS_MAX],
        vmodels_prefix[KEYS_MAX];
    size_t models_len, copies_len, instances_len, vmodels_len;
    struct mirror_sub *sub_models, *sub_copies, *sub_instances;
    /* instances */
    struct inst **insts;
    struct place_instance *views;
    size_t n_insts, cap_insts;
    /* models being acted on */
    struct mstate **buckets;
    size_t n_buckets, n_states;
    struct mstate *queue; /* background jobs, most recently used first */
    unsigned bg_running;
    ev_timer catchup_timer, rate_timer, move_timer, move_tick;
    size_t n_catchup;
    uint64_t rng;
    struct mesh_stats stats;
    struct mesh_status *st_buf;
    int64_t last_rate_check_ms;
    void (*use_flush)(void *arg); /* the router's counted uses, pulled at each check */
    void *use_flush_arg;
    /* shutdown */
    bool moving;
    void (*move_done)(int status, size_t not_moved, void *arg);
    void *move_arg;
    /* scratch for decisions */
    struct place_str held[MAX_SEEN_COPIES], failed[MAX_SEEN_COPIES], zones[MAX_SEEN_COPIES];
};

/* ------------------------------------------------------------------ small helpers */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t next_random(struct mesh *m)
{
    /* xorshift64* */
    uint64_t x = m->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static bool str_eq(struct place_str a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.data, b, blen) == 0;
}

const char *mesh_model_status_name(enum mesh_model_status s)
{
    switch (s) {
    case MESH_NOT_FOUND:
        return "NOT_FOUND";
    case MESH_NOT_LOADED:
        return "NOT_LOADED";
    case MESH_LOADING:
        return "LOADING";
    case MESH_LOADED:
        return "LOADED";
    case MESH_LOADING_FAILED:
        return "LOADING_FAILED";
    case MESH_UNKNOWN:
        return "UNKNOWN";
    }
    return "UNKNOWN";
}

/* ------------------------------------------------------------------ instances */

static struct inst *inst_find(const struct mesh *m, const char *id, size_t len, size_t *index)
{
    for (size_t i = 0; i < m->n_insts; i++)
        if (m->insts[i]->id_len == len && memcmp(m->insts[i]->id, id, len) == 0) {
            if (index)
                *index = i;
            return m->insts[i];
        }
    return NULL;
}

static void view_of(const struct inst *in, struct place_instance *v)
{
    *v = (struct place_instance){
        .id = {in->id, in->id_len},
        .labels = in->labels,
        .n_labels = in->n_labels,
        .zone = {in->zone, strlen(in->zone)},
        .capacity_bytes = in->rec.capacity,
        .used_bytes = in->rec.used + in->pending_bytes,
        .loaded = in->rec.loaded,
        .loading = in->rec.loading + in->pending_n,
        .oldest_used_ms = in->rec.oldest,
        .default_size_bytes = in->rec.default_size,
        .shutting_down = in->rec.shutting_down,
    };
}

static void inst_remove(struct mesh *m, const char *id, size_t len)
{
    size_t i;
    struct inst *in = inst_find(m, id, len, &i);
    if (!in)
        return;
    free(in);
    m->n_insts--;
    if (i != m->n_insts) {
        m->insts[i] = m->insts[m->n_insts];
        /* the views point into the inst: rebuild the moved one */
        view_of(m->insts[i], &m->views[i]);
    }
}

static void inst_put(struct mesh *m, const char *id, size_t id_len, const struct mirror_entry *e)
{
    struct instance_record rec;
    struct mm_error err = {0};
    if (id_len > KEYS_NAME_MAX) {
        return;
    }
    if (record_decode(RECORD_INSTANCE, e->value, e->value_len, &rec, &err) < 0) {
        mm_log(MM_LOG_WARN, WHO, "instance %.*s: unreadable record, not placing there: %s",
               (int)id_len, id, err.msg);
        inst_remove(m, id, id_len);
        return;
    }
    size_t i;
    struct inst *in = inst_find(m, id, id_len, &i);
    if (!in) {
        if (m->n_insts == m->cap_insts) {
            size_t cap = m->cap_insts ? m->cap_insts * 2 : 16;
            struct inst **ni = realloc(m->insts, cap * sizeof(*ni));
            if (!ni)
                return;
            m->insts = ni;
            struct place_instance *nv = realloc(m->views, cap * sizeof(*nv));
            if (!nv)
                return;
            m->views = nv;
            m->cap_insts = cap;
        }
        in = calloc(1, sizeof(*in));
        if (!in)
            return;
        memcpy(in->id, id, id_len);
        in->id_len = id_len;
        i = m->n_insts++;
        m->insts[i] = in;
    }
    if (in->mod_rev != e->mod_revision) {
        in->pending_bytes = 0; /* the record speaks for what we placed there before */
        in->pending_n = 0;
    }
    in->mod_rev = e->mod_revision;
    in->lease = e->lease;
    snprintf(in->zone, sizeof(in->zone), "%s", rec.zone);
    in->n_labels = rec.labels.n;
    for (size_t k = 0; k < rec.labels.n; k++) {
        memcpy(in->label_buf[k], rec.labels.label[k], sizeof(in->label_buf[k]));
        in->labels[k] = (struct place_str){in->label_buf[k], strlen(in->label_buf[k])};
    }
    in->rec.capacity = rec.capacity_bytes;
    in->rec.used = rec.used_bytes;
    in->rec.loaded = rec.loaded_count;
    in->rec.loading = rec.loading_count;
    in->rec.oldest = rec.lru_oldest_ms;
    in->rec.shutting_down = rec.shutting_down;
    in->rec.default_size = rec.default_model_size_bytes;
    view_of(in, &m->views[i]);
}

/* Whether its key is in the mirror now. Within one revision the mirror has applied every
 * change before any event is delivered, but our instance cache follows the instances/ events,
 * which may come after the copies' events of the same revision (a lease expiry deletes both). */
static bool inst_live(const struct mesh *m, const struct inst *in)
{
    char key[KEYS_MAX];
    if (m->instances_len + in->id_len >= sizeof(key))
        return false;
    memcpy(key, m->instances_prefix, m->instances_len);
    memcpy(key + m->instances_len, in->id, in->id_len);
    return mirror_get(m->cfg.mirror, key, m->instances_len + in->id_len) != NULL;
}

static bool inst_serves(const struct inst *in, const struct place_str *labels, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t j = 0; j < in->n_labels && !found; j++)
            found = str_eq(in->labels[j], labels[k].data, labels[k].len);
        if (!found)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ what the mirror says */

struct model_labels {
    char buf[MAX_MODEL_LABELS][RECORD_LABEL_BYTES + 8];
    struct place_str l[MAX_MODEL_LABELS];
    size_t n;
};

static void labels_of(const struct model_record *rec, struct model_labels *ml)
{
    ml->n = 0;
    snprintf(ml->buf[ml->n], sizeof(ml->buf[0]), "mt:%s", rec->type);
    ml->l[ml->n] = (struct place_str){ml->buf[ml->n], strlen(ml->buf[ml->n])};
    ml->n++;
    if (rec->runtime[0]) {
        snprintf(ml->buf[ml->n], sizeof(ml->buf[0]), "rt:%.120s", rec->runtime);
        ml->l[ml->n] = (struct place_str){ml->buf[ml->n], strlen(ml->buf[ml->n])};
        ml->n++;
    }
}

/* A model's copies, summed up from copy records (the mirror's, or a txn's read-back). */
struct summary {
    size_t n_all, n_live, n_loaded, n_failed; /* failed: unexpired */
    size_t n_held, n_failed_on, n_zones;      /* in m->held, m->failed, m->zones */
    size_t live_elsewhere, loaded_elsewhere;  /* on an instance other than this one */
    size_t live_away, loaded_away;            /* not on an excluded instance (excl) */
    const struct excl *excl;                  /* in: the model's, or NULL */
    bool self_holds;
    char last_error[512];
    int64_t last_error_ms;
    int64_t newest_loaded_ms; /* since of the most recently Loaded copy */
};

struct kvref {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
};

static bool excluded(const struct excl *x, const char *id, size_t len)
{
    for (size_t i = 0; x && i < x->n; i++)
        if (x->len[i] == len && memcmp(x->id[i], id, len) == 0)
            return true;
    return false;
}

static struct mstate *ms_find(const struct mesh *m, const char *id, size_t len);

static void summarize_one(struct mesh *m, const struct model_record *rec, const struct kvref *kv,
                          int64_t now, struct summary *s)
{
    struct key_parts kp;
    if (keys_parse_relative(kv->key + m->prefix_len, kv->key_len - m->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY)
        return;
    struct copy_record cr;
    struct mm_error err = {0};
    if (record_decode(RECORD_COPY, kv->value, kv->value_len, &cr, &err) < 0)
        return;
    s->n_all++;
    bool self = kp.second_len == m->iid_len && memcmp(kp.second, m->iid, m->iid_len) == 0;
    struct place_str iid = {kp.second, kp.second_len};
    if (s->n_held < MAX_SEEN_COPIES)
        m->held[s->n_held++] = iid; /* a Failed record's key blocks the txn too */
    if (cr.state == COPY_FAILED) {
        if (!place_failure_expired(&m->place, cr.since_ms, rec ? rec->last_used_ms : 0, now)) {
            s->n_failed++;
            if (s->n_failed_on < MAX_SEEN_COPIES)
                m->failed[s->n_failed_on++] = iid;
            if (cr.since_ms >= s->last_error_ms) {
                s->last_error_ms = cr.since_ms;
                snprintf(s->last_error, sizeof(s->last_error), "%s", cr.error);
            }
        }
        return;
    }
    s->n_live++;
    if (cr.state == COPY_LOADED) {
        s->n_loaded++;
        if (cr.since_ms > s->newest_loaded_ms)
            s->newest_loaded_ms = cr.since_ms;
    }
    if (!excluded(s->excl, kp.second, kp.second_len)) {
        s->live_away++;
        if (cr.state == COPY_LOADED)
            s->loaded_away++;
    }
    if (self) {
        s->self_holds = true;
    } else {
        s->live_elsewhere++;
        if (cr.state == COPY_LOADED)
            s->loaded_elsewhere++;
    }
    const struct inst *in = inst_find(m, kp.second, kp.second_len, NULL);
    if (in && in->zone[0] && s->n_zones < MAX_SEEN_COPIES)
        m->zones[s->n_zones++] = (struct place_str){in->zone, strlen(in->zone)};
}

struct collect {
    struct mesh *m;
    const struct model_record *rec;
    struct summary *s;
    int64_t now;
};

static int collect_cb(const struct mirror_entry *e, void *arg)
{
    struct collect *c = arg;
    struct kvref kv = {e->key, e->key_len, e->value, e->value_len};
    summarize_one(c->m, c->rec, &kv, c->now, c->s);
    return 0;
}

static void copies_prefix_of(const struct mesh *m, const char *id, size_t len, char *out,
                             size_t *out_len)
{
    memcpy(out, m->copies_prefix, m->copies_len);
    memcpy(out + m->copies_len, id, len);
    out[m->copies_len + len] = '/';
    *out_len = m->copies_len + len + 1;
    out[*out_len] = '\0';
}

static void summarize_mirror(struct mesh *m, const char *id, size_t len,
                             const struct model_record *rec, struct summary *s)
{
    memset(s, 0, sizeof(*s));
    const struct mstate *ms = ms_find(m, id, len);
    s->excl = ms ? ms->excl : NULL;
    char p[KEYS_MAX];
    size_t plen;
    copies_prefix_of(m, id, len, p, &plen);
    struct collect c = {m, rec, s, now_ms()};
    mirror_foreach_prefix(m->cfg.mirror, p, plen, collect_cb, &c);
}

/* The model record in the mirror: 1 (decoded into rec, *rev its mod_revision), 0 absent, -1
 * unreadable. */
static int model_of(const struct mesh *m, const char *id, size_t len, struct model_record *rec,
                    int64_t *rev)
{
    char key[KEYS_MAX];
    if (m->models_len + len >= sizeof(key))
        return 0;
    memcpy(key, m->models_prefix, m->models_len);
    memcpy(key + m->models_len, id, len);
    const struct mirror_entry *e = mirror_get(m->cfg.mirror, key, m->models_len + len);
    if (!e)
        return 0;
    struct mm_error err = {0};
    if (record_decode(RECORD_MODEL, e->value, e->value_len, rec, &err) < 0)
        return -1;
    if (rev)
        *rev = e->mod_revision;
    return 1;
}

/* Whether every live instance that serves the model has failed to load it recently. */
static bool failed_everywhere(struct mesh *m, const struct model_record *rec,
                              const struct summary *s)
{
    if (s->n_failed == 0)
        return false;
    struct model_labels ml;
    labels_of(rec, &ml);
    for (size_t i = 0; i < m->n_insts; i++) {
        const struct inst *in = m->insts[i];
        if (!inst_serves(in, ml.l, ml.n))
            continue;
        bool failed = false;
        for (size_t k = 0; k < s->n_failed_on && !failed; k++)
            failed = str_eq(m->failed[k], in->id, in->id_len);
        if (!failed)
            return false;
    }
    return true;
}

static bool failed_out(struct mesh *m, const struct model_record *rec, const struct summary *s)
{
    return s->n_failed >= m->cfg.max_failures || failed_everywhere(m, rec, s);
}

struct status_collect {
    struct mesh *m;
    const struct model_record *rec;
    struct mesh_status *out;
    int64_t now;
    int64_t err_time[MESH_STATUS_MAX_ERRORS];
    size_t n_failed_total;
};

static int status_cb(const struct mirror_entry *e, void *arg)
{
    struct status_collect *c = arg;
    struct mesh *m = c->m;
    struct key_parts kp;
    if (keys_parse_relative(e->key + m->prefix_len, e->key_len - m->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY)
        return 0;
    struct copy_record cr;
    struct mm_error err = {0};
    if (record_decode(RECORD_COPY, e->value, e->value_len, &cr, &err) < 0)
        return 0;
    struct mesh_status *o = c->out;
    o->n_copies_total++;
    if (o->n_copies < MESH_STATUS_MAX_COPIES) {
        struct mesh_copy_status *cs = &o->copies[o->n_copies++];
        snprintf(cs->iid, sizeof(cs->iid), "%.*s", (int)kp.second_len, kp.second);
        cs->state = cr.state;
        cs->since_ms = cr.since_ms;
        if (cr.state == COPY_LOADING) {
            cs->bytes_pulled = cr.bytes_pulled;
            cs->bytes_total = cr.bytes_total;
        }
    }
    if (cr.state == COPY_FAILED &&
        !place_failure_expired(&m->place, cr.since_ms, c->rec->last_used_ms, c->now)) {
        /* errors newest first: insertion into a short sorted list */
        size_t n = o->n_errors;
        size_t at = 0;
        while (at < n && c->err_time[at] >= cr.since_ms)
            at++;
        if (at < MESH_STATUS_MAX_ERRORS) {
            size_t last = n < MESH_STATUS_MAX_ERRORS ? n : MESH_STATUS_MAX_ERRORS - 1;
            for (size_t k = last; k > at; k--) {
                c->err_time[k] = c->err_time[k - 1];
                memcpy(o->errors[k], o->errors[k - 1], sizeof(o->errors[k]));
            }
            c->err_time[at] = cr.since_ms;
            snprintf(o->errors[at], sizeof(o->errors[at]), "%.*s: %.250s",
                     (int)kp.second_len, kp.second, cr.error[0] ? cr.error : "load failed");
            if (o->n_errors < MESH_STATUS_MAX_ERRORS)
                o->n_errors++;
        }
    }
    return 0;
}

void mesh_status(const struct mesh *cm, const char *model_id, struct mesh_status *out)
{
    struct mesh *m = (struct mesh *)cm; /* the scratch arrays only */
    memset(out, 0, sizeof(*out));
    size_t len = strlen(model_id);
    struct model_record rec;
    int rc = len && len <= KEYS_NAME_MAX ? model_of(m, model_id, len, &rec, NULL) : 0;
    if (rc == 0) {
        out->status = MESH_NOT_FOUND;
        return;
    }
    if (rc < 0) {
        out->status = MESH_UNKNOWN;
        return;
    }
    char p[KEYS_MAX];
    size_t plen;
    copies_prefix_of(m, model_id, len, p, &plen);
    struct status_collect c = {.m = m, .rec = &rec, .out = out, .now = now_ms()};
    mirror_foreach_prefix(m->cfg.mirror, p, plen, status_cb, &c);
    bool loaded = false, loading = false;
    for (size_t i = 0; i < out->n_copies; i++) {
        loaded |= out->copies[i].state == COPY_LOADED;
        loading |= out->copies[i].state == COPY_PENDING || out->copies[i].state == COPY_LOADING;
    }
    if (loaded) {
        out->status = MESH_LOADED;
    } else if (loading) {
        out->status = MESH_LOADING;
    } else {
        struct summary s;
        summarize_mirror(m, model_id, len, &rec, &s);
        out->status = failed_out(m, &rec, &s) ? MESH_LOADING_FAILED : MESH_NOT_LOADED;
    }
}

/* ------------------------------------------------------------------ model states */

static size_t bucket_of(const struct mesh *m, const char *id, size_t len)
{
    return (size_t)(mm_hash(id, len) & (m->n_buckets - 1));
}

static struct mstate *ms_find(const struct mesh *m, const char *id, size_t len)
{
    for (struct mstate *s = m->buckets[bucket_of(m, id, len)]; s; s = s->hnext)
        if (s->id_len == len && memcmp(s->id, id, len) == 0)
            return s;
    return NULL;
}

static void job_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static struct mstate *ms_get(struct mesh *m, const char *id, size_t len)
{
    struct mstate *s = ms_find(m, id, len);
    if (s || len == 0 || len > KEYS_NAME_MAX)
        return s;
    if (m->n_states >= m->n_buckets) { /* grow: keep chains short */
        size_t nb = m->n_buckets * 2;
        struct mstate **b = calloc(nb, sizeof(*b));
        if (b) {
            for (size_t i = 0; i < m->n_buckets; i++)
                for (struct mstate *x = m->buckets[i], *next; x; x = next) {
                    next = x->hnext;
                    size_t k = (size_t)(mm_hash(x->id, x->id_len) &
                                        (nb - 1));
                    x->hnext = b[k];
                    b[k] = x;
                }
            free(m->buckets);
            m->buckets = b;
            m->n_buckets = nb;
        }
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->m = m;
    memcpy(s->id, id, len);
    s->id_len = len;
    ev_timer_init(&s->job_timer, job_timer_cb, 0., 0.);
    s->job_timer.data = s;
    size_t b = bucket_of(m, id, len);
    s->hnext = m->buckets[b];
    m->buckets[b] = s;
    m->n_states++;
    return s;
}

static void queue_remove(struct mesh *m, struct mstate *s)
{
    for (struct mstate **p = &m->queue; *p; p = &(*p)->qnext)
        if (*p == s) {
            *p = s->qnext;
            s->qnext = NULL;
            return;
        }
}

/* Free a state nothing refers to any more. */
static void ms_maybe_free(struct mstate *s)
{
    struct mesh *m = s->m;
    if (s->busy || s->ops || s->job != JOB_NONE || s->move == MOVE_PENDING || s->refusals ||
        s->touch_req)
        return;
    int64_t keep = m->place.second_copy_max_gap_ms;
    if (s->last_use_ms && now_ms() - s->last_use_ms < keep)
        return;
    struct mstate **p = &m->buckets[bucket_of(m, s->id, s->id_len)];
    while (*p && *p != s)
        p = &(*p)->hnext;
    if (*p)
        *p = s->hnext;
    ev_timer_stop(m->loop, &s->job_timer);
    m->n_states--;
    free(s->excl);
    free(s);
}

/* Keep s while code up the stack uses it; release frees it if nothing else does. */
static void hold(struct mstate *s)
{
    s->busy++;
}

static void release(struct mstate *s)
{
    s->busy--;
    ms_maybe_free(s);
}

/* ------------------------------------------------------------------ operations */

static void op_unlink(struct mesh_op *op)
{
    struct mstate *s = op->ms;
    if (!s)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
    if (op->phase == PH_CATCHUP)
        op->m->n_catchup--;
    op->ms = NULL;
    bool others = false; /* the exclusions go with the last operation that made them */
    for (struct mesh_op *o = s->ops; o && !others; o = o->next)
        others = o->elsewhere;
    if (op->elsewhere && !others) {
        free(s->excl);
        s->excl = NULL;
    }
}

static void op_free(struct mesh_op *op)
{
    ev_timer_stop(op->m->loop, &op->timer);
    etcd_request_cancel(op->req);
    free(op);
}

/* Call back and free. The status passed is read from the mirror now. */
static void op_complete(struct mesh_op *op, int status, const struct mm_error *err)
{
    struct mesh *m = op->m;
    struct mstate *s = op->ms;
    if (s)
        hold(s);
    op_unlink(op);
    ev_timer_stop(m->loop, &op->timer);
    etcd_request_cancel(op->req);
    op->req = NULL;
    struct mesh_status *st = NULL;
    if (s) {
        st = m->st_buf;
        mesh_status(m, s->id, st);
    }
    struct mm_error e = {0};
    if (status < 0 && err)
        e = *err;
    else if (status < 0)
        mm_error_set(&e, status, "model %s: %s", s ? s->id : "?", mm_strerror(status));
    mesh_cb cb = op->cb;
    void *arg = op->arg;
    free(op);
    cb(status, status < 0 ? &e : NULL, st, arg);
    if (s)
        release(s);
}

static void op_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mesh_op *op = w->data;
    struct mm_error err = {0};
    mm_error_set(&err, -ETIMEDOUT, "model %s: not %s within the time given",
                 op->ms ? op->ms->id : "?", op->sync ? "loaded" : "done");
    op_complete(op, -ETIMEDOUT, &err);
}

static struct mesh_op *op_new(struct mesh *m, struct mstate *s, enum op_kind kind, bool sync,
                              int64_t timeout_ms, mesh_cb cb, void *arg)
{
    struct mesh_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->m = m;
    op->kind = kind;
    op->sync = sync;
    op->cb = cb;
    op->arg = arg;
    op->phase = PH_WRITING;
    ev_timer_init(&op->timer, op_timer_cb, timeout_ms > 0 ? (double)timeout_ms / 1000. : 0., 0.);
    op->timer.data = op;
    if (timeout_ms > 0)
        ev_timer_start(m->loop, &op->timer);
    op->ms = s;
    op->next = s->ops;
    if (s->ops)
        s->ops->prev = op;
    s->ops = op;
    return op;
}

void mesh_op_cancel(struct mesh_op *op)
{
    if (!op)
        return;
    struct mstate *s = op->ms;
    op_unlink(op);
    op_free(op);
    if (s)
        ms_maybe_free(s);
}

static void set_phase(struct mesh_op *op, enum op_phase ph)
{
    if (op->phase == PH_CATCHUP)
        op->m->n_catchup--;
    op->phase = ph;
    if (ph == PH_CATCHUP) {
        /* checked from the loop at once, then every CATCH_UP_POLL_S until the mirror is there
         * (events of the prefixes we follow check it too) */
        op->m->n_catchup++;
        ev_timer_stop(op->m->loop, &op->m->catchup_timer);
        ev_timer_set(&op->m->catchup_timer, 0., CATCH_UP_POLL_S);
        ev_timer_start(op->m->loop, &op->m->catchup_timer);
    }
}

/* ------------------------------------------------------------------ placement jobs */

static void evaluate(struct mstate *s);
static void run_queue(struct mesh *m);
static int unregister_send(struct mesh_op *op, struct mm_error *err);
static void job_decide(struct mstate *s, const struct etcd_kv *model_kv,
                       const struct etcd_kv *copies, size_t n_copies);

static void job_end(struct mstate *s, int status, const struct mm_error *err)
{
    struct mesh *m = s->m;
    if (s->job == JOB_RUNNING && !s->job_for_ops)
        m->bg_running--;
    if (s->job == JOB_QUEUED)
        queue_remove(m, s);
    ev_timer_stop(m->loop, &s->job_timer);
    placer_cancel(s->placer);
    s->placer = NULL;
    bool for_ops = s->job_for_ops;
    s->job = JOB_NONE;
    s->job_for_ops = s->job_allow_evict = s->job_move = s->job_extra = s->job_elsewhere = false;
    s->job_target = 0;
    s->attempts = 0;
    s->gone_iid[0] = '\0';
    hold(s);
    if (status < 0) {
        if (!for_ops || !s->ops)
            mm_log(status == -ENOSPC ? MM_LOG_INFO : MM_LOG_WARN, WHO, "%s",
                   err ? err->msg : mm_strerror(status));
        /* operations that wanted a copy fail with the job */
        for (;;) {
            struct mesh_op *op = s->ops;
            while (op && op->phase != PH_PLACING)
                op = op->next;
            if (!op)
                break;
            op_complete(op, status, err);
        }
        if (s->move == MOVE_PENDING)
            s->move = MOVE_DONE; /* nowhere to go: counted as not moved */
    }
    evaluate(s);
    run_queue(m);
    release(s);
}

static void job_fail(struct mstate *s, int code, const char *fmt, const char *detail)
{
    struct mm_error err = {0};
    mm_error_set(&err, code, fmt, s->id, detail);
    job_end(s, code, &err);
}

static void on_placed(int status, const struct mm_error *err, const struct placer_result *res,
                      void *arg)
{
    struct mstate *s = arg;
    struct mesh *m = s->m;
    s->placer = NULL;
    if (status == -ENOENT) {
        job_end(s, -ENOENT, err);
        return;
    }
    if (status < 0) {
        /* etcd unreachable, or the outcome unknown: re-read (the mirror) and try again */
        if (++s->attempts >= m->cfg.max_attempts) {
            struct mm_error e = {0};
            mm_error_set(&e, -EAGAIN, "model %s: etcd unreachable: %s", s->id,
                         err ? err->msg : mm_strerror(status));
            job_end(s, -EAGAIN, &e);
            return;
        }
        ev_timer_set(&s->job_timer, RETRY_DELAY_S * s->attempts, 0.);
        ev_timer_start(m->loop, &s->job_timer);
        return;
    }
    if (res->outcome == PLACER_PLACED) {
        m->stats.placements++;
        s->placed_rev = res->revision;
        job_end(s, 0, NULL);
        return;
    }
    if (res->outcome == PLACER_LOST_RACE)
        m->stats.lost_races++;
    else {
        m->stats.targets_gone++;
        snprintf(s->gone_iid, sizeof(s->gone_iid), "%s", s->last_target);
    }
    if (++s->attempts >= m->cfg.max_attempts) {
        struct mm_error e = {0};
        mm_error_set(&e, -EAGAIN, "model %s: not placed after %u attempts (%s)", s->id,
                     s->attempts, placer_outcome_name(res->outcome));
        job_end(s, -EAGAIN, &e);
        return;
    }
    job_decide(s, res->model, res->copies, res->n_copies);
}

static void job_decide(struct mstate *s, const struct etcd_kv *model_kv,
                       const struct etcd_kv *copies, size_t n_copies)
{
    struct mesh *m = s->m;
    struct model_record rec;
    int64_t rev = 0;
    struct mm_error err = {0};
    char key[KEYS_MAX];
    if (model_kv) {
        if (record_decode(RECORD_MODEL, model_kv->value, model_kv->value_len, &rec, &err) < 0) {
            job_fail(s, -EINVAL, "model %s: unreadable model record: %s", err.msg);
            return;
        }
        rev = model_kv->mod_revision;
    } else {
        memcpy(key, m->models_prefix, m->models_len);
        memcpy(key + m->models_len, s->id, s->id_len);
        const struct mirror_entry *e = mirror_get(m->cfg.mirror, key, m->models_len + s->id_len);
        if (!e) {
            job_fail(s, -ENOENT, "model %s: %s", "not found");
            return;
        }
        if (record_decode(RECORD_MODEL, e->value, e->value_len, &rec, &err) < 0) {
            job_fail(s, -EINVAL, "model %s: unreadable model record: %s", err.msg);
            return;
        }
        rev = e->mod_revision;
    }
    struct summary sum;
    int64_t now = now_ms();
    if (model_kv) {
        memset(&sum, 0, sizeof(sum));
        sum.excl = s->excl;
        for (size_t i = 0; i < n_copies; i++) {
            struct kvref kv = {copies[i].key, copies[i].key_len, copies[i].value,
                               copies[i].value_len};
            summarize_one(m, &rec, &kv, now, &sum);
        }
    } else {
        summarize_mirror(m, s->id, s->id_len, &rec, &sum);
    }
    /* enough copies already? (with the exclusions, as the operations that wanted it count) */
    if (s->job_move    ? sum.live_elsewhere > 0
        : s->job_extra ? sum.n_live >= s->job_target
                       : (s->job_elsewhere ? sum.live_away : sum.n_live) > 0) {
        job_end(s, 0, NULL);
        return;
    }
    if (!s->job_move && !s->job_extra && failed_out(m, &rec, &sum)) {
        job_fail(s, -EIO, "model %s: failed to load: %s",
                 sum.last_error[0] ? sum.last_error : "on every instance that serves its type");
        return;
    }
    struct model_labels ml;
    labels_of(&rec, &ml);
    struct place_str held[MAX_SEEN_COPIES + 2 + 16 + MESH_EXCLUDE_MAX];
    size_t n_held = sum.n_held;
    memcpy(held, m->held, n_held * sizeof(held[0]));
    /* instances gone in this revision whose events have not reached our cache yet */
    for (size_t i = 0;
         i < m->n_insts && n_held < sizeof(held) / sizeof(held[0]) - 2 - MESH_EXCLUDE_MAX; i++)
        if (!inst_live(m, m->insts[i]))
            held[n_held++] = (struct place_str){m->insts[i]->id, m->insts[i]->id_len};
    if (s->job_move)
        held[n_held++] = (struct place_str){m->iid, m->iid_len};
    if (s->gone_iid[0])
        held[n_held++] = (struct place_str){s->gone_iid, strlen(s->gone_iid)};
    for (size_t i = 0; s->excl && i < s->excl->n; i++) /* not reached there: not chosen */
        held[n_held++] = (struct place_str){s->excl->id[i], s->excl->len[i]};
    struct place_model pm = {
        .labels = ml.l,
        .n_labels = ml.n,
        .size_bytes = rec.size_bytes,
        .failed_on = m->failed,
        .n_failed_on = sum.n_failed_on,
        .held_by = held,
        .n_held_by = n_held,
        .copy_zones = m->zones,
        .n_copy_zones = sum.n_zones,
    };
    struct place_choice ch;
    int rc = place_choose(&m->place, &pm, m->views, m->n_insts, now, next_random(m), &ch);
    if (rc < 0) {
        if (ch.reason == PLACE_FAILED_RECENTLY && sum.n_failed > 0) {
            job_fail(s, -EIO, "model %s: failed to load: %s",
                     sum.last_error[0] ? sum.last_error : "load failed");
            return;
        }
        place_choice_error(&ch, s->id, s->id_len, &err);
        job_end(s, -ENOSPC, &err);
        return;
    }
    if (ch.must_evict && !s->job_allow_evict) {
        mm_error_set(&err, -ENOSPC,
                     "model %s: not placed: every instance that could take it would have to "
                     "evict, and this placement does not evict",
                     s->id);
        job_end(s, -ENOSPC, &err);
        return;
    }
    struct inst *target = m->insts[ch.index];
    if (s->touch_ms > rec.last_used_ms)
        rec.last_used_ms = s->touch_ms;
    char *value = record_encode(RECORD_MODEL, &rec);
    if (!value) {
        job_fail(s, -ENOMEM, "model %s: %s", "out of memory");
        return;
    }
    struct copy_record cr = {.state = COPY_PENDING, .since_ms = now, .size_bytes = rec.size_bytes};
    char target_id[KEYS_NAME_MAX + 1];
    snprintf(target_id, sizeof(target_id), "%.*s", (int)target->id_len, target->id);
    struct placer_req req = {
        .cluster = m->cluster,
        .model_id = s->id,
        .model_mod_revision = rev,
        .model_value = value,
        .target_iid = target_id,
        .target_lease = target->lease,
        .copy = &cr,
    };
    m->stats.etcd_round_trips++;
    rc = placer_place(m->cfg.etcd, &req, on_placed, s, &s->placer, &err);
    free(value);
    if (rc < 0) {
        job_end(s, rc, &err);
        return;
    }
    /* counted against the target until its record speaks for it */
    target->pending_bytes += place_size_on(&m->place, &m->views[ch.index], rec.size_bytes);
    target->pending_n++;
    view_of(target, &m->views[ch.index]);
    snprintf(s->last_target, sizeof(s->last_target), "%s", target_id);
}

static void job_run(struct mstate *s)
{
    struct mesh *m = s->m;
    if (s->job == JOB_QUEUED)
        queue_remove(m, s);
    if (s->job != JOB_RUNNING && !s->job_for_ops)
        m->bg_running++;
    s->job = JOB_RUNNING;
    job_decide(s, NULL, NULL, 0);
}

static void job_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mstate *s = w->data;
    struct mesh *m = s->m;
    if (s->job == JOB_DELAYED) {
        /* a non-primary: the primary had replace_delay_ms to do it */
        s->job = JOB_NONE;
        struct model_record rec;
        if (model_of(m, s->id, s->id_len, &rec, NULL) != 1) {
            ms_maybe_free(s);
            return;
        }
        struct summary sum;
        summarize_mirror(m, s->id, s->id_len, &rec, &sum);
        if (sum.n_live > 0 || failed_out(m, &rec, &sum)) {
            ms_maybe_free(s);
            return;
        }
        m->stats.replaced++;
        s->job = JOB_QUEUED;
        struct mstate **p = &m->queue;
        while (*p && (*p)->order_ms >= s->order_ms)
            p = &(*p)->qnext;
        s->qnext = *p;
        *p = s;
        run_queue(m);
        return;
    }
    if (s->job == JOB_RUNNING) /* a retry after an etcd error */
        job_decide(s, NULL, NULL, 0);
}

/* Start a job for operations of this node at once (a job queued or delayed is promoted). */
static void job_for_ops(struct mstate *s)
{
    if (s->job == JOB_RUNNING)
        return;
    ev_timer_stop(s->m->loop, &s->job_timer);
    s->job_for_ops = true;
    s->job_allow_evict = true;
    job_run(s);
}

static void run_queue(struct mesh *m)
{
    while (m->queue && m->bg_running < MAX_BG_RUNNING) {
        struct mstate *s = m->queue;
        m->queue = s->qnext;
        s->qnext = NULL;
        s->job = JOB_NONE; /* job_run counts it as starting */
        job_run(s);
    }
}

/* A background placement: at once by the model's primary, after replace_delay_ms by the other
 * nodes (if still needed then). */
static void job_background(struct mstate *s, const struct model_record *rec, bool allow_evict)
{
    struct mesh *m = s->m;
    if (s->job != JOB_NONE)
        return;
    struct model_labels ml;
    labels_of(rec, &ml);
    const struct inst *primary = NULL;
    uint64_t best = 0;
    for (size_t i = 0; i < m->n_insts; i++) {
        const struct inst *in = m->insts[i];
        if (in->rec.shutting_down || !inst_serves(in, ml.l, ml.n) || !inst_live(m, in))
            continue;
        uint64_t score = place_rendezvous(s->id, s->id_len, in->id, in->id_len);
        if (!primary || score > best) {
            primary = in;
            best = score;
        }
    }
    bool is_primary = primary && primary->id_len == m->iid_len &&
                      memcmp(primary->id, m->iid, m->iid_len) == 0 && !m->moving;
    s->job_allow_evict = allow_evict;
    s->order_ms = rec->last_used_ms;
    if (is_primary) {
        s->job = JOB_QUEUED;
        struct mstate **p = &m->queue;
        while (*p && (*p)->order_ms >= s->order_ms)
            p = &(*p)->qnext;
        s->qnext = *p;
        *p = s;
        run_queue(m);
    } else {
        s->job = JOB_DELAYED;
        ev_timer_set(&s->job_timer, (double)m->cfg.replace_delay_ms / 1000., 0.);
        ev_timer_start(m->loop, &s->job_timer);
    }
}

/* ------------------------------------------------------------------ last use */

/* A use of a model held here moves it up this pod's LRU. */
static void touch_local(struct mesh *m, const char *id, size_t len, int64_t used_ms)
{
    if (m->cfg.copies && copies_request_begin(m->cfg.copies, id, len, used_ms) == 0)
        copies_request_end(m->cfg.copies, id, len);
}

static void touch_record(struct mesh *m, struct mstate *s, int64_t used_ms);

static void on_touched(int status, const struct mm_error *err, struct etcd_response *resp,
                       void *arg)
{
    (void)err;
    struct mstate *s = arg;
    s->touch_req = NULL;
    /* a use that came meanwhile, or a write that lost to another write of the record (read
     * again from the mirror), is written next; a few tries, then the next use will */
    bool lost = status == 0 && !resp->succeeded;
    int64_t want = s->touch_want_ms;
    if (lost && s->touch_writing_ms > want)
        want = s->touch_writing_ms;
    s->touch_want_ms = 0;
    if (status == 0 && want > (lost ? 0 : s->touch_writing_ms) && ++s->touch_tries <= 3)
        touch_record(s->m, s, want);
    else
        s->touch_tries = 0;
    ms_maybe_free(s);
}

/* A use of a model held elsewhere goes into its record's last_used_ms, which every holder
 * follows (on_models): the holders' LRU order is the order of use wherever it was asked. One
 * write in flight per model; conditional on the record as read, so nothing else is undone. */
static void touch_record(struct mesh *m, struct mstate *s, int64_t used_ms)
{
    struct model_record rec;
    int64_t rev = 0;
    if (s->touch_req) {
        if (used_ms > s->touch_want_ms)
            s->touch_want_ms = used_ms;
        return;
    }
    if (model_of(m, s->id, s->id_len, &rec, &rev) != 1 || rec.last_used_ms >= used_ms)
        return;
    rec.last_used_ms = used_ms;
    s->touch_writing_ms = used_ms;
    char key[KEYS_MAX];
    char *value = record_encode(RECORD_MODEL, &rec);
    if (!value || keys_model(key, sizeof(key), m->cluster, s->id, NULL) < 0) {
        free(value);
        return;
    }
    const struct etcd_compare cmp[] = {
        {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = rev}};
    const struct etcd_op put[] = {{.kind = ETCD_OP_PUT, .key = key, .value = value}};
    const struct etcd_txn txn = {cmp, 1, put, 1, NULL, 0};
    m->stats.etcd_round_trips++;
    etcd_txn(m->cfg.etcd, &txn, on_touched, s, &s->touch_req);
    free(value);
}

/* ------------------------------------------------------------------ evaluation */

static void check_moves(struct mesh *m);

/* What the mirror now says about s's model, for the operations waiting on it. */
static void evaluate(struct mstate *s)
{
    struct mesh *m = s->m;
    if (!s->ops && s->move != MOVE_PENDING)
        return;
    hold(s);
    struct model_record rec;
    int have = model_of(m, s->id, s->id_len, &rec, NULL);
    int64_t mrev = mirror_revision(m->cfg.mirror);
    struct summary sum;
    if (have == 1)
        summarize_mirror(m, s->id, s->id_len, &rec, &sum);
    else
        memset(&sum, 0, sizeof(sum));
    bool out = have == 1 && failed_out(m, &rec, &sum);
    bool want_copy = false, want_elsewhere = false;
    for (struct mesh_op *op = s->ops, *next; op; op = next) {
        next = op->next;
        if (op->phase == PH_CATCHUP && mrev >= op->catchup_rev && op->again) {
            struct mm_error uerr = {0};
            op->again = false;
            int urc = unregister_send(op, &uerr);
            if (urc < 0) {
                op_complete(op, urc, &uerr);
                next = s->ops;
            }
            continue;
        }
        if (op->phase == PH_CATCHUP && mrev >= op->catchup_rev) {
            /* written and seen: unregister and a plain register are done; the others want a
             * copy (a sync register loads, as loadNow does) */
            if (op->kind == OP_UNREGISTER || (op->kind == OP_REGISTER && !op->want.load_now)) {
                op_complete(op, 0, NULL);
                next = s->ops; /* the list may have changed */
                continue;
            }
            set_phase(op, PH_PLACING);
            if (op->kind == OP_ENSURE && have == 1 && sum.n_live > 0) {
                touch_local(m, s->id, s->id_len, op->used_ms);
                if (sum.live_elsewhere > 0)
                    touch_record(m, s, op->used_ms);
            }
        }
        if (op->phase != PH_PLACING && op->phase != PH_WAITING)
            continue;
        struct mm_error err = {0};
        if (have != 1) {
            mm_error_set(&err, -ENOENT, "model %s: not found (unregistered meanwhile)", s->id);
            op_complete(op, -ENOENT, &err);
            next = s->ops;
            continue;
        }
        /* an ensure elsewhere counts only the copies off the excluded instances */
        size_t live = op->elsewhere ? sum.live_away : sum.n_live;
        size_t loaded = op->elsewhere ? sum.loaded_away : sum.n_loaded;
        if (loaded > 0 || (!op->sync && live > 0)) {
            op_complete(op, 0, NULL);
            next = s->ops;
            continue;
        }
        if (live == 0 && out) {
            mm_error_set(&err, -EIO, "model %s: failed to load: %s", s->id,
                         sum.last_error[0] ? sum.last_error
                                           : "on every instance that serves its type");
            op_complete(op, -EIO, &err);
            next = s->ops;
            continue;
        }
        if (live > 0) {
            op->phase = PH_WAITING;
        } else {
            /* a copy it waited for is gone: it wants a placement again, and fails with it
             * (left WAITING, a placement failing at once re-evaluated it without end) */
            op->phase = PH_PLACING;
            want_copy = true;
            want_elsewhere |= op->elsewhere;
        }
    }
    /* the job counts as the operations that want it do (a job that found "enough" where they
     * found none would end and be started again without end) */
    if (want_elsewhere)
        s->job_elsewhere = true;
    if (want_copy && s->job != JOB_RUNNING && mrev >= s->placed_rev)
        job_for_ops(s);
    if (m->moving)
        check_moves(m);
    release(s);
}

static void catchup_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct mesh *m = w->data;
    if (m->n_catchup == 0) {
        ev_timer_stop(loop, w);
        return;
    }
    /* collected first, each held: a callback may start operations (the table may grow) or
     * end others (states may go) */
    int64_t rev = mirror_revision(m->cfg.mirror);
    size_t n = 0, cap = 16;
    struct mstate **due = malloc(cap * sizeof(*due));
    if (!due)
        return;
    for (size_t b = 0; b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b]; s; s = s->hnext) {
            bool is_due = false;
            for (struct mesh_op *op = s->ops; op && !is_due; op = op->next)
                is_due = op->phase == PH_CATCHUP && rev >= op->catchup_rev;
            if (!is_due)
                continue;
            if (n == cap) {
                struct mstate **more = realloc(due, cap * 2 * sizeof(*due));
                if (!more)
                    break;
                due = more;
                cap *= 2;
            }
            hold(s);
            due[n++] = s;
        }
    for (size_t i = 0; i < n; i++)
        evaluate(due[i]);
    for (size_t i = 0; i < n; i++)
        release(due[i]);
    free(due);
}

/* ------------------------------------------------------------------ mirror events */

static void on_instances(const struct mirror_event *ev, void *arg)
{
    struct mesh *m = arg;
    const char *id = ev->key + m->instances_len;
    size_t len = ev->key_len - m->instances_len;
    if (len == 0 || memchr(id, '/', len))
        return;
    if (ev->kind == MIRROR_DELETE)
        inst_remove(m, id, len);
    else
        inst_put(m, id, len, ev->entry);
}

static void on_models(const struct mirror_event *ev, void *arg)
{
    struct mesh *m = arg;
    const char *id = ev->key + m->models_len;
    size_t len = ev->key_len - m->models_len;
    if (len == 0 || len > KEYS_NAME_MAX || memchr(id, '/', len))
        return;
    struct mstate *s = ms_find(m, id, len);
    if (ev->kind == MIRROR_PUT && ev->old_value) {
        /* used elsewhere: a copy held here moves up this pod's LRU */
        struct model_record was, rec;
        struct mm_error err = {0};
        if (record_decode(RECORD_MODEL, ev->old_value, ev->old_len, &was, &err) == 0 &&
            record_decode(RECORD_MODEL, ev->new_value, ev->new_len, &rec, &err) == 0 &&
            rec.last_used_ms > was.last_used_ms)
            touch_local(m, id, len, rec.last_used_ms);
    }
    if (ev->kind == MIRROR_PUT && !ev->old_value) {
        /* a new model: loadNow ones get their copy (the one who registered it through the API
         * places it itself; this covers records written by others) */
        struct model_record rec;
        struct mm_error err = {0};
        if (record_decode(RECORD_MODEL, ev->new_value, ev->new_len, &rec, &err) == 0 &&
            rec.load_now) {
            struct summary sum;
            summarize_mirror(m, id, len, &rec, &sum);
            if (sum.n_live == 0 && !failed_out(m, &rec, &sum) && (s = ms_get(m, id, len))) {
                bool by_api = false;
                for (struct mesh_op *op = s->ops; op; op = op->next)
                    by_api |= op->kind == OP_REGISTER;
                if (!by_api)
                    job_background(s, &rec, false);
            }
        }
    }
    if (ev->kind == MIRROR_DELETE && s) {
        s->refusals = 0;
        if (s->job != JOB_NONE && s->job != JOB_RUNNING)
            job_end(s, 0, NULL); /* nothing to place any more; a running one learns it */
        else
            ms_maybe_free(s);
    }
    if ((s = ms_find(m, id, len)))
        evaluate(s);
}

static void on_copies(const struct mirror_event *ev, void *arg)
{
    struct mesh *m = arg;
    struct key_parts kp;
    if (keys_parse_relative(ev->key + m->prefix_len, ev->key_len - m->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY)
        return;
    struct model_record rec;
    bool have = model_of(m, kp.first, kp.first_len, &rec, NULL) == 1;
    struct copy_record old = {0}, now = {0};
    struct mm_error err = {0};
    bool have_old = ev->old_value &&
                    record_decode(RECORD_COPY, ev->old_value, ev->old_len, &old, &err) == 0;
    bool have_new = ev->new_value &&
                    record_decode(RECORD_COPY, ev->new_value, ev->new_len, &now, &err) == 0;
    if (have) {
        /* why a copy went away or failed decides whether the model is placed again */
        bool replace = false, allow_evict = true, refused = false;
        if (ev->kind == MIRROR_DELETE && have_old && old.state != COPY_FAILED) {
            char ikey[KEYS_MAX];
            memcpy(ikey, m->instances_prefix, m->instances_len);
            memcpy(ikey + m->instances_len, kp.second, kp.second_len);
            bool holder_gone =
                !mirror_get(m->cfg.mirror, ikey, m->instances_len + kp.second_len);
            if (holder_gone)
                replace = true; /* its holder died (the lease expired) */
            else if (old.state != COPY_LOADED)
                replace = true, refused = true; /* refused (churn guard, no room), cancelled */
            else if (rec.load_now)
                replace = true, allow_evict = false; /* evicted: kept loaded if it fits */
        } else if (ev->kind == MIRROR_PUT && have_new && now.state == COPY_FAILED &&
                   (!have_old || old.state != COPY_FAILED)) {
            m->stats.failures_seen++;
            replace = true; /* retried on another instance, up to max_failures */
        }
        if (ev->kind == MIRROR_DELETE && have_old && old.state == COPY_PENDING)
            m->stats.refusals_seen++;
        struct mstate *rs = ms_find(m, kp.first, kp.first_len);
        if (ev->kind == MIRROR_PUT && have_new && now.state == COPY_LOADED && rs)
            rs->refusals = 0;
        if (ev->kind == MIRROR_PUT && !ev->old_value && rs && rs->job == JOB_DELAYED) {
            /* someone placed it (the primary did its job): this node's turn is over, whatever
             * becomes of that copy (its own events decide again) */
            ev_timer_stop(m->loop, &rs->job_timer);
            rs->job = JOB_NONE;
        }
        if (replace) {
            struct summary sum;
            summarize_mirror(m, kp.first, kp.first_len, &rec, &sum);
            if (sum.n_live == 0 && !failed_out(m, &rec, &sum) &&
                (rs = ms_get(m, kp.first, kp.first_len))) {
                /* refusals in a row are bounded: the views may be behind the pods' caches, and
                 * a model nobody can take must not bounce between them for ever */
                if (refused && ++rs->refusals > m->cfg.max_attempts) {
                    if (rs->refusals == m->cfg.max_attempts + 1)
                        mm_log(MM_LOG_WARN, WHO,
                               "model %s: refused %u times in a row; not placed again until "
                               "asked",
                               rs->id, m->cfg.max_attempts);
                } else {
                    job_background(rs, &rec, allow_evict);
                }
            }
        }
    }
    struct mstate *s = ms_find(m, kp.first, kp.first_len);
    if (s)
        evaluate(s);
}

/* ------------------------------------------------------------------ register, unregister, ensure */

/* modelInfo.key: a plain key is bounded by the record's field, its JSON form by this. */
#define MESH_KEY_MAX 8192

static int check_text(const char *field, const char *v, size_t max, bool required,
                      const char *model_id, struct mm_error *err)
{
    size_t len = v ? strlen(v) : 0;
    if (len == 0) {
        if (required)
            return mm_error_set(err, -EINVAL, "model %s: %s is required", model_id, field);
        return 0;
    }
    if (len > max)
        return mm_error_set(err, -EINVAL, "model %s: %s is %zu bytes long, at most %zu allowed",
                            model_id, field, len, max);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return mm_error_set(err, -EINVAL, "model %s: %s holds a control character",
                                model_id, field);
    if (!mm_utf8_valid(v, len))
        return mm_error_set(err, -EINVAL, "model %s: %s is not valid UTF-8", model_id, field);
    return 0;
}

bool mesh_same_info(const struct model_record *a, const struct model_record *b)
{
    return strcmp(a->type, b->type) == 0 && strcmp(a->runtime, b->runtime) == 0 &&
           strcmp(a->storage_path, b->storage_path) == 0 &&
           strcmp(a->storage_key, b->storage_key) == 0 &&
           strcmp(a->storage_params, b->storage_params) == 0;
}

static void on_register_txn(int status, const struct mm_error *err, struct etcd_response *resp,
                            void *arg)
{
    struct mesh_op *op = arg;
    op->req = NULL;
    struct mstate *s = op->ms;
    struct mm_error e = {0};
    if (status < 0) {
        mm_error_set(&e, -EAGAIN, "registering model %s: %s", s->id,
                     err ? err->msg : mm_strerror(status));
        op_complete(op, -EAGAIN, &e);
        return;
    }
    if (!resp->succeeded) {
        /* there already: the same info is fine (idempotent), other info is not */
        const struct etcd_op_result *r = resp->n_results ? &resp->results[0] : NULL;
        struct model_record have;
        if (!r || r->n_kvs != 1 ||
            record_decode(RECORD_MODEL, r->kvs[0].value, r->kvs[0].value_len, &have, &e) < 0) {
            /* deleted meanwhile, or unreadable: say so rather than guess */
            mm_error_set(&e, -EEXIST, "model %s: registered meanwhile by someone else", s->id);
            op_complete(op, -EEXIST, &e);
            return;
        }
        if (!mesh_same_info(&have, &op->want)) {
            mm_error_set(&e, -EEXIST,
                         "model %s already exists with other info (type '%s', path '%s', "
                         "key '%s'%s)",
                         s->id, have.type, have.storage_path, have.storage_key,
                         strcmp(have.storage_params, op->want.storage_params)
                             ? ", other storage parameters" /* values may be secrets */
                             : "");
            op_complete(op, -EEXIST, &e);
            return;
        }
        op->catchup_rev = r->kvs[0].mod_revision;
    } else {
        op->catchup_rev = resp->revision;
    }
    set_phase(op, PH_CATCHUP);
    evaluate(s);
}

int mesh_check_model(const char *model_id, const struct mesh_model_info *info,
                     struct mm_error *err)
{
    struct model_record rec;
    return mesh_info_record(model_id, info, &rec, err);
}

int mesh_info_record(const char *model_id, const struct mesh_model_info *info,
                     struct model_record *rec_out, struct mm_error *err)
{
    int rc = keys_check_name("modelId", model_id, err);
    if (rc < 0)
        return rc;
    struct model_record rec;
    if (!info)
        return mm_error_set(err, -EINVAL, "model %s: modelInfo is required", model_id);
    if ((rc = check_text("modelInfo.type", info->type, sizeof(rec.type) - 4 - 1, true, model_id,
                         err)) < 0 ||
        (rc = check_text("modelInfo.path", info->path, sizeof(rec.storage_path) - 1, false,
                         model_id, err)) < 0 ||
        (rc = check_text("modelInfo.key", info->key, MESH_KEY_MAX, false, model_id, err)) <
            0 ||
        (rc = check_text("modelInfo.runtime", info->runtime, 120, false,
                         model_id, err)) < 0)
        return rc;
    if (info->key && (rc = record_model_key(info->key, strlen(info->key), &rec, err)) < 0) {
        mm_error_prefix(err, "model %s: ", model_id);
        return rc;
    }
    snprintf(rec_out->type, sizeof(rec_out->type), "%s", info->type);
    snprintf(rec_out->runtime, sizeof(rec_out->runtime), "%s",
             info->runtime ? info->runtime : "");
    snprintf(rec_out->storage_path, sizeof(rec_out->storage_path), "%s",
             info->path ? info->path : "");
    if (info->key) {
        memcpy(rec_out->storage_key, rec.storage_key, sizeof(rec.storage_key));
        memcpy(rec_out->storage_params, rec.storage_params, sizeof(rec.storage_params));
    } else {
        rec_out->storage_key[0] = rec_out->storage_params[0] = '\0';
    }
    return 0;
}

int64_t mesh_initial_last_used(const struct mesh *m, bool load_now)
{
    return place_initial_last_used(&m->place, now_ms(), load_now);
}

int mesh_register(struct mesh *m, const char *model_id, const struct mesh_model_info *info,
                  bool load_now, bool sync, int64_t last_used_ms, int64_t timeout_ms, mesh_cb cb,
                  void *arg, struct mesh_op **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    struct model_record rec = {0};
    int rc = mesh_info_record(model_id, info, &rec, err);
    if (rc < 0)
        return rc;
    if (last_used_ms < 0)
        return mm_error_set(err, -EINVAL, "model %s: lastUsedTime is negative", model_id);
    int64_t now = now_ms();
    rec.last_used_ms = last_used_ms ? last_used_ms
                                    : place_initial_last_used(&m->place, now, load_now);
    rec.load_now = load_now;
    rec.registered_ms = now;
    char key[KEYS_MAX];
    if ((rc = keys_model(key, sizeof(key), m->cluster, model_id, err)) < 0)
        return rc;
    char *value = record_encode(RECORD_MODEL, &rec);
    if (!value)
        return mm_error_set(err, -ENOMEM, "model %s: out of memory", model_id);
    struct mstate *s = ms_get(m, model_id, strlen(model_id));
    struct mesh_op *op = s ? op_new(m, s, OP_REGISTER, sync, timeout_ms, cb, arg) : NULL;
    if (!op) {
        free(value);
        if (s)
            ms_maybe_free(s);
        return mm_error_set(err, -ENOMEM, "model %s: out of memory", model_id);
    }
    op->want = rec;
    /* sync waits for Loaded, which needs a copy: it loads as loadNow does */
    op->want.load_now = load_now || sync;
    s->touch_ms = rec.last_used_ms;
    const struct etcd_compare cmp[] = {
        {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0}};
    const struct etcd_op put[] = {{.kind = ETCD_OP_PUT, .key = key, .value = value}};
    const struct etcd_op get[] = {{.kind = ETCD_OP_RANGE, .key = key}};
    const struct etcd_txn txn = {cmp, 1, put, 1, get, 1};
    m->stats.etcd_round_trips++;
    rc = etcd_txn(m->cfg.etcd, &txn, on_register_txn, op, &op->req);
    free(value);
    if (rc < 0) {
        mesh_op_cancel(op);
        return mm_error_set(err, -EAGAIN, "registering model %s: %s", model_id, mm_strerror(rc));
    }
    if (out)
        *out = op;
    return 0;
}

struct vmodel_ref {
    const char *id;
    char name[KEYS_NAME_MAX + 1];
};

static int vmodel_cb(const struct mirror_entry *e, void *arg)
{
    struct vmodel_ref *r = arg;
    struct vmodel_record v;
    struct mm_error err = {0};
    if (record_decode(RECORD_VMODEL, e->value, e->value_len, &v, &err) < 0)
        return 0;
    if (strcmp(v.active_model_id, r->id) == 0 || strcmp(v.target_model_id, r->id) == 0) {
        const char *slash = strrchr(e->key, '/');
        snprintf(r->name, sizeof(r->name), "%s", slash ? slash + 1 : e->key);
        return 1;
    }
    return 0;
}

static void on_unregister_txn(int status, const struct mm_error *err, struct etcd_response *resp,
                              void *arg)
{
    struct mesh_op *op = arg;
    op->req = NULL;
    struct mstate *s = op->ms;
    struct mm_error e = {0};
    if (status < 0) {
        mm_error_set(&e, -EAGAIN, "unregistering model %s: %s", s->id,
                     err ? err->msg : mm_strerror(status));
        op_complete(op, -EAGAIN, &e);
        return;
    }
    if (!resp->succeeded) {
        const struct etcd_op_result *r = resp->n_results ? &resp->results[0] : NULL;
        if (!r || r->n_kvs == 0) {
            mm_error_set(&e, -ENOENT, "model %s: not found", s->id);
            op_complete(op, -ENOENT, &e);
            return;
        }
        /* the record changed since the mirror showed it (a use, a placement, or a vmodel that
         * now refers to it): check again once the mirror has that change */
        if (++op->attempts >= op->m->cfg.max_attempts) {
            mm_error_set(&e, -EAGAIN, "unregistering model %s: changed by others %u times in "
                                      "a row; try again",
                         s->id, op->attempts);
            op_complete(op, -EAGAIN, &e);
            return;
        }
        op->again = true;
        op->catchup_rev = r->kvs[0].mod_revision;
        set_phase(op, PH_CATCHUP);
        return;
    }
    op->catchup_rev = resp->revision;
    set_phase(op, PH_CATCHUP);
    evaluate(s);
}

/* The vmodel check (the mirror) and the txn deleting the record and its copies, conditional on
 * the record being the one the check saw: a vmodel that refers to the model re-puts its record
 * in the same txn, so one written meanwhile fails this txn. 0 or -errno with err. */
static int unregister_send(struct mesh_op *op, struct mm_error *err)
{
    struct mesh *m = op->m;
    const char *model_id = op->ms->id;
    struct vmodel_ref ref = {.id = model_id};
    if (mirror_foreach_prefix(m->cfg.mirror, m->vmodels_prefix, m->vmodels_len, vmodel_cb,
                              &ref) == 1)
        return mm_error_set(err, -EBUSY, "model %s is used by vmodel %s: delete or move the "
                                         "vmodel first",
                            model_id, ref.name);
    char key[KEYS_MAX], copies[KEYS_MAX];
    int rc;
    if ((rc = keys_model(key, sizeof(key), m->cluster, model_id, err)) < 0 ||
        (rc = keys_copies_of(copies, sizeof(copies), m->cluster, model_id, err)) < 0)
        return rc;
    struct model_record rec;
    int64_t rev = 0;
    /* not in the mirror (registered a moment ago elsewhere): whatever etcd has */
    struct etcd_compare cmp[] = {
        {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_GREATER, .number = 0}};
    if (model_of(m, model_id, strlen(model_id), &rec, &rev) == 1)
        cmp[0] = (struct etcd_compare){
            .key = key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = rev};
    /* the record and every copy in one txn: the holders see their copy deleted and unload */
    const struct etcd_op del[] = {{.kind = ETCD_OP_DELETE, .key = key},
                                  {.kind = ETCD_OP_DELETE, .key = copies, .prefix = true}};
    const struct etcd_op get[] = {{.kind = ETCD_OP_RANGE, .key = key}};
    const struct etcd_txn txn = {cmp, 1, del, 2, get, 1};
    m->stats.etcd_round_trips++;
    set_phase(op, PH_WRITING);
    rc = etcd_txn(m->cfg.etcd, &txn, on_unregister_txn, op, &op->req);
    if (rc < 0)
        return mm_error_set(err, -EAGAIN, "unregistering model %s: %s", model_id,
                            mm_strerror(rc));
    return 0;
}

int mesh_unregister(struct mesh *m, const char *model_id, mesh_cb cb, void *arg,
                    struct mesh_op **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    int rc = keys_check_name("modelId", model_id, err);
    if (rc < 0)
        return rc;
    struct mstate *s = ms_get(m, model_id, strlen(model_id));
    struct mesh_op *op = s ? op_new(m, s, OP_UNREGISTER, false, 0, cb, arg) : NULL;
    if (!op) {
        if (s)
            ms_maybe_free(s);
        return mm_error_set(err, -ENOMEM, "model %s: out of memory", model_id);
    }
    if ((rc = unregister_send(op, err)) < 0) {
        mesh_op_cancel(op);
        return rc;
    }
    if (out)
        *out = op;
    return 0;
}

static void on_ensure_read(int status, const struct mm_error *err, struct etcd_response *resp,
                           void *arg)
{
    struct mesh_op *op = arg;
    op->req = NULL;
    struct mstate *s = op->ms;
    struct mm_error e = {0};
    if (status < 0) {
        mm_error_set(&e, -EAGAIN, "model %s: reading its record: %s", s->id,
                     err ? err->msg : mm_strerror(status));
        op_complete(op, -EAGAIN, &e);
        return;
    }
    if (resp->op.n_kvs == 0) {
        mm_error_set(&e, -ENOENT, "model %s: not found", s->id);
        op_complete(op, -ENOENT, &e);
        return;
    }
    op->catchup_rev = resp->op.kvs[0].mod_revision;
    set_phase(op, PH_CATCHUP);
    evaluate(s);
}

/* The instances exclude[0, n) joined to s's exclusions (those past MESH_EXCLUDE_MAX in all are
 * left out: their copies count). 0 or -ENOMEM. */
static int excl_add(struct mstate *s, const char *const *exclude, size_t n)
{
    if (!s->excl && !(s->excl = calloc(1, sizeof(*s->excl))))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(exclude[i]);
        if (excluded(s->excl, exclude[i], len) || s->excl->n == MESH_EXCLUDE_MAX)
            continue;
        memcpy(s->excl->id[s->excl->n], exclude[i], len + 1);
        s->excl->len[s->excl->n++] = len;
    }
    return 0;
}

static int ensure_start(struct mesh *m, const char *model_id, int64_t last_used_ms, bool sync,
                        const char *const *exclude, size_t n_exclude, int64_t timeout_ms,
                        mesh_cb cb, void *arg, struct mesh_op **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    int rc = keys_check_name("modelId", model_id, err);
    if (rc < 0)
        return rc;
    if (last_used_ms < 0)
        return mm_error_set(err, -EINVAL, "model %s: lastUsedTime is negative", model_id);
    for (size_t i = 0; i < n_exclude; i++)
        if ((rc = keys_check_name("instance id", exclude[i], err)) < 0)
            return rc;
    size_t len = strlen(model_id);
    struct mstate *s = ms_get(m, model_id, len);
    struct mesh_op *op = s ? op_new(m, s, OP_ENSURE, sync, timeout_ms, cb, arg) : NULL;
    if (op && n_exclude) {
        op->elsewhere = true;
        if (excl_add(s, exclude, n_exclude) < 0) {
            mesh_op_cancel(op);
            op = NULL;
            s = NULL; /* freed with it if nothing else held it */
        }
    }
    if (!op) {
        if (s)
            ms_maybe_free(s);
        return mm_error_set(err, -ENOMEM, "model %s: out of memory", model_id);
    }
    int64_t now = now_ms();
    int64_t used = last_used_ms ? last_used_ms : now;
    op->used_ms = used;
    if (used > s->touch_ms)
        s->touch_ms = used;
    s->requests++;
    s->last_use_ms = now;
    s->refusals = 0; /* asked again: worth trying */
    struct model_record rec;
    if (model_of(m, model_id, len, &rec, NULL) == 1) {
        /* known here: decided from the loop, never inside this call */
        op->catchup_rev = mirror_revision(m->cfg.mirror);
        set_phase(op, PH_CATCHUP); /* the catch-up tick evaluates it from the loop */
    } else {
        /* not in the mirror: perhaps registered a moment ago elsewhere; etcd decides */
        char key[KEYS_MAX];
        if ((rc = keys_model(key, sizeof(key), m->cluster, model_id, err)) < 0) {
            mesh_op_cancel(op);
            return rc;
        }
        struct etcd_range_req req = {.key = key};
        m->stats.etcd_round_trips++;
        rc = etcd_range(m->cfg.etcd, &req, on_ensure_read, op, &op->req);
        if (rc < 0) {
            mesh_op_cancel(op);
            return mm_error_set(err, -EAGAIN, "model %s: reading its record: %s", model_id,
                                mm_strerror(rc));
        }
    }
    if (out)
        *out = op;
    return 0;
}

int mesh_ensure(struct mesh *m, const char *model_id, int64_t last_used_ms, bool sync,
                int64_t timeout_ms, mesh_cb cb, void *arg, struct mesh_op **out,
                struct mm_error *err)
{
    return ensure_start(m, model_id, last_used_ms, sync, NULL, 0, timeout_ms, cb, arg, out, err);
}

int mesh_ensure_elsewhere(struct mesh *m, const char *model_id, const char *const *exclude,
                          size_t n_exclude, int64_t timeout_ms, mesh_cb cb, void *arg,
                          struct mesh_op **out, struct mm_error *err)
{
    if (out)
        *out = NULL;
    if (!exclude || n_exclude == 0 || n_exclude > MESH_EXCLUDE_MAX)
        return mm_error_set(err, -EINVAL, "model %s: 1 to %d instances to exclude, not %zu",
                            model_id ? model_id : "?", MESH_EXCLUDE_MAX, exclude ? n_exclude : 0);
    return ensure_start(m, model_id, 0, true, exclude, n_exclude, timeout_ms, cb, arg, out, err);
}

void mesh_set_use_source(struct mesh *m, void (*flush)(void *arg), void *arg)
{
    m->use_flush = flush;
    m->use_flush_arg = arg;
}

void mesh_note_use(struct mesh *m, const char *model_id, size_t len, uint32_t requests,
                   int64_t now)
{
    struct mstate *s = ms_get(m, model_id, len);
    if (!s)
        return;
    s->requests += requests;
    s->last_use_ms = now;
    if (now > s->touch_ms)
        s->touch_ms = now;
}

/* ------------------------------------------------------------------ copy counts */

static void ignore_reply(int status, const struct mm_error *err, struct etcd_response *resp,
                         void *arg)
{
    (void)status;
    (void)err;
    (void)resp;
    (void)arg;
}

static void remove_copy(struct mesh *m, struct mstate *s, int64_t model_rev,
                        const char *model_value)
{
    /* the loaded copy on the instance shortest of space goes; conditional on the model
     * record's revision (and re-putting it), so concurrent deciders remove one */
    char p[KEYS_MAX];
    size_t plen;
    copies_prefix_of(m, s->id, s->id_len, p, &plen);
    struct {
        char key[KEYS_MAX];
        int64_t rev;
        uint64_t free_bytes;
        bool found;
    } pk = {.found = false};
    struct copy_record cr;
    struct mm_error err = {0};
    for (size_t i = 0; i < m->n_insts; i++) {
        struct inst *in = m->insts[i];
        char key[KEYS_MAX];
        if (plen + in->id_len >= sizeof(key))
            continue;
        memcpy(key, p, plen);
        memcpy(key + plen, in->id, in->id_len);
        const struct mirror_entry *e = mirror_get(m->cfg.mirror, key, plen + in->id_len);
        if (!e || record_decode(RECORD_COPY, e->value, e->value_len, &cr, &err) < 0 ||
            cr.state != COPY_LOADED)
            continue;
        uint64_t fb = in->rec.capacity > in->rec.used ? in->rec.capacity - in->rec.used : 0;
        if (!pk.found || fb < pk.free_bytes) {
            pk.found = true;
            pk.free_bytes = fb;
            memcpy(pk.key, key, plen + in->id_len);
            pk.key[plen + in->id_len] = '\0';
            pk.rev = e->mod_revision;
        }
    }
    if (!pk.found)
        return;
    char mkey[KEYS_MAX];
    if (keys_model(mkey, sizeof(mkey), m->cluster, s->id, &err) < 0)
        return;
    const struct etcd_compare cmp[] = {
        {.key = mkey, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = model_rev},
        {.key = pk.key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = pk.rev}};
    const struct etcd_op ops[] = {{.kind = ETCD_OP_DELETE, .key = pk.key},
                                  {.kind = ETCD_OP_PUT, .key = mkey, .value = model_value}};
    const struct etcd_txn txn = {cmp, 2, ops, 2, NULL, 0};
    m->stats.etcd_round_trips++;
    /* fire and forget: the mirror shows the outcome; a loss means someone else decided */
    etcd_txn(m->cfg.etcd, &txn, ignore_reply, NULL, NULL);
}

static void rate_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mesh *m = w->data;
    if (m->use_flush)
        m->use_flush(m->use_flush_arg);
    int64_t now = now_ms();
    int64_t window = now - m->last_rate_check_ms;
    if (window <= 0)
        window = m->cfg.rate_check_ms;
    m->last_rate_check_ms = now;
    if (m->moving)
        return;
    for (size_t b = 0; b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b], *next; s; s = next) {
            next = s->hnext;
            bool used = s->requests > 0;
            uint64_t rpm = s->requests * 60000u / (uint64_t)window;
            s->requests = 0;
            struct model_record rec;
            int64_t rev = 0;
            if (!used && !s->last_use_ms) {
                ms_maybe_free(s);
                continue;
            }
            if (model_of(m, s->id, s->id_len, &rec, &rev) != 1 || s->job != JOB_NONE) {
                ms_maybe_free(s);
                continue;
            }
            struct summary sum;
            summarize_mirror(m, s->id, s->id_len, &rec, &sum);
            struct model_labels ml;
            labels_of(&rec, &ml);
            struct place_cluster cl = {0};
            uint32_t eligible = 0;
            for (size_t i = 0; i < m->n_insts; i++) {
                const struct inst *in = m->insts[i];
                if (!inst_serves(in, ml.l, ml.n))
                    continue;
                cl.capacity_bytes += in->rec.capacity;
                cl.used_bytes += in->rec.used;
                eligible += !in->rec.shutting_down;
            }
            /* the earliest check within the window that saw it used */
            if (s->earliest_use_check_ms &&
                now - s->earliest_use_check_ms > m->place.second_copy_max_gap_ms)
                s->earliest_use_check_ms =
                    s->latest_use_check_ms &&
                            now - s->latest_use_check_ms <= m->place.second_copy_max_gap_ms
                        ? s->latest_use_check_ms
                        : 0;
            /* Requests are counted where a copy serves them (table.c): a holder knows its own
             * copy's rate, and copies are balanced by requests in flight, so the model's is
             * about that times its copies. A node without a copy counts model API uses. */
            struct copies_info ci;
            if (m->cfg.copies && sum.n_live > 1 &&
                copies_get(m->cfg.copies, s->id, s->id_len, &ci) == 0 && ci.state == COPY_LOADED)
                rpm *= (uint64_t)sum.n_live;
            struct place_usage u = {
                .copies = (uint32_t)sum.n_live,
                .eligible_instances = eligible,
                .requests_per_min = rpm,
                .used_since_last_check = used,
                .last_used_ms = s->last_use_ms,
                .prior_use_check_ms = s->earliest_use_check_ms,
            };
            struct place_copies d;
            place_copies_decide(&m->place, &u, &cl, now, &d);
            if (used) {
                if (!s->earliest_use_check_ms)
                    s->earliest_use_check_ms = now;
                s->latest_use_check_ms = now;
            }
            /* One step at a time, and the next only once the last has settled: while a copy
             * is loading, or one was Loaded within the last two checks, traffic has not
             * spread onto it yet and the rates still look like before the step. */
            if (d.action == PLACE_COPIES_ADD &&
                (sum.n_live > sum.n_loaded ||
                 now - sum.newest_loaded_ms < 2 * (int64_t)m->cfg.rate_check_ms)) {
                mm_log(MM_LOG_DEBUG, WHO, "model %s: a copy more waits for the last to settle",
                       s->id);
                d.action = PLACE_COPIES_KEEP;
            }
            if (d.action == PLACE_COPIES_ADD) {
                mm_log(MM_LOG_INFO, WHO, "model %s: a copy more (%u wanted): %s", s->id,
                       d.target, d.why);
                s->job_extra = true;
                s->job_target = d.target;
                s->job_allow_evict = false;
                s->job = JOB_QUEUED;
                s->order_ms = s->last_use_ms;
                struct mstate **p = &m->queue;
                while (*p && (*p)->order_ms >= s->order_ms)
                    p = &(*p)->qnext;
                s->qnext = *p;
                *p = s;
            } else if (d.action == PLACE_COPIES_REMOVE) {
                mm_log(MM_LOG_INFO, WHO, "model %s: a copy fewer (%u wanted): %s", s->id,
                       d.target, d.why);
                char *value = record_encode(RECORD_MODEL, &rec);
                if (value) {
                    remove_copy(m, s, rev, value);
                    free(value);
                }
            }
            ms_maybe_free(s);
        }
    run_queue(m);
}

/* ------------------------------------------------------------------ shutdown moves */

static void move_finish(struct mesh *m, int status, size_t not_moved)
{
    m->moving = false;
    ev_timer_stop(m->loop, &m->move_timer);
    ev_timer_stop(m->loop, &m->move_tick);
    /* not freed here (callers up the stack may be walking them): later, or by mesh_free */
    for (size_t b = 0; b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b]; s; s = s->hnext)
            s->move = MOVE_NONE;
    void (*done)(int, size_t, void *) = m->move_done;
    m->move_done = NULL;
    if (done)
        done(status, not_moved, m->move_arg);
}

static void check_moves(struct mesh *m)
{
    size_t pending = 0;
    for (size_t b = 0; b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b]; s; s = s->hnext) {
            if (s->move != MOVE_PENDING)
                continue;
            struct model_record rec;
            if (model_of(m, s->id, s->id_len, &rec, NULL) != 1) {
                s->move = MOVE_DONE; /* unregistered meanwhile */
                continue;
            }
            struct summary sum;
            summarize_mirror(m, s->id, s->id_len, &rec, &sum);
            if (sum.loaded_elsewhere > 0)
                s->move = MOVE_DONE;
            else
                pending++;
        }
    if (pending == 0 && m->move_done)
        move_finish(m, 0, 0);
}

static void move_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mesh *m = w->data;
    if (!m->move_done)
        return;
    run_queue(m);
    if (m->move_done)
        check_moves(m);
}

static void move_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mesh *m = w->data;
    if (!m->move_done)
        return;
    size_t not_moved = 0;
    for (size_t b = 0; b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b]; s; s = s->hnext)
            not_moved += s->move == MOVE_PENDING;
    move_finish(m, not_moved ? -ETIMEDOUT : 0, not_moved);
}

int mesh_move_away(struct mesh *m, unsigned timeout_ms,
                   void (*done)(int status, size_t not_moved, void *arg), void *arg)
{
    if (m->move_done)
        return -EALREADY;
    m->moving = true;
    m->move_done = done;
    m->move_arg = arg;
    struct copies_info *list = NULL;
    size_t n = 0;
    if (m->cfg.copies) {
        list = calloc(MAX_MOVES, sizeof(*list));
        if (!list)
            return -ENOMEM;
        n = copies_list(m->cfg.copies, true, list, MAX_MOVES);
        if (n > MAX_MOVES)
            n = MAX_MOVES;
    }
    /* drop what was queued in the background: moving comes first now */
    while (m->queue) {
        struct mstate *s = m->queue;
        m->queue = s->qnext;
        s->qnext = NULL;
        s->job = JOB_NONE;
    }
    for (size_t i = 0; i < n; i++) { /* most recently used first */
        struct mstate *s = ms_get(m, list[i].model_id, strlen(list[i].model_id));
        if (!s)
            continue;
        s->move = MOVE_PENDING;
        if (s->job == JOB_RUNNING)
            continue;
        ev_timer_stop(m->loop, &s->job_timer);
        s->job_move = true;
        s->job_allow_evict = true;
        s->order_ms = list[i].last_used_ms;
        s->job = JOB_QUEUED;
        struct mstate **p = &m->queue;
        while (*p)
            p = &(*p)->qnext;
        s->qnext = NULL;
        *p = s;
    }
    free(list);
    mm_log(MM_LOG_INFO, WHO, "moving %zu loaded models to other instances", n);
    /* the moves start and are checked from the loop, never inside this call */
    ev_timer_set(&m->move_tick, 0., 0.);
    ev_timer_start(m->loop, &m->move_tick);
    ev_timer_set(&m->move_timer, (double)timeout_ms / 1000., 0.);
    ev_timer_start(m->loop, &m->move_timer);
    ev_timer_stop(m->loop, &m->rate_timer);
    return 0;
}

/* ------------------------------------------------------------------ life */

void mesh_get_stats(const struct mesh *m, struct mesh_stats *out)
{
    *out = m->stats;
}

static int seed_instance(const struct mirror_entry *e, void *arg)
{
    struct mesh *m = arg;
    const char *id = e->key + m->instances_len;
    size_t len = e->key_len - m->instances_len;
    if (len && !memchr(id, '/', len))
        inst_put(m, id, len, e);
    return 0;
}

int mesh_new(const struct mesh_config *cfg, struct mesh **out, struct mm_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->cluster || !cfg->iid || !cfg->etcd || !cfg->mirror)
        return mm_error_set(err, -EINVAL, "mesh: cluster, instance id, etcd and mirror are "
                                          "required");
    int rc;
    if ((rc = keys_check_name("cluster name", cfg->cluster, err)) < 0 ||
        (rc = keys_check_name("instance id", cfg->iid, err)) < 0)
        return rc;
    struct mesh *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_error_set(err, -ENOMEM, "mesh: out of memory");
    m->cfg = *cfg;
    m->loop = etcd_client_loop(cfg->etcd);
    snprintf(m->cluster, sizeof(m->cluster), "%s", cfg->cluster);
    snprintf(m->iid, sizeof(m->iid), "%s", cfg->iid);
    m->iid_len = strlen(m->iid);
    m->cfg.cluster = m->cluster;
    m->cfg.iid = m->iid;
    if (cfg->place)
        m->place = *cfg->place;
    else
        place_config_init(&m->place);
    m->cfg.place = &m->place;
    if (!m->cfg.max_attempts)
        m->cfg.max_attempts = 8;
    if (!m->cfg.max_failures)
        m->cfg.max_failures = 3;
    if (!m->cfg.replace_delay_ms)
        m->cfg.replace_delay_ms = 2000;
    if (!m->cfg.rate_check_ms)
        m->cfg.rate_check_ms = 10000;
    m->rng = cfg->random_seed ? cfg->random_seed
                              : (uint64_t)now_ms() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    if (!m->rng)
        m->rng = 1;
    keys_prefix(m->prefix, sizeof(m->prefix), m->cluster, NULL);
    m->prefix_len = strlen(m->prefix);
    m->models_len = (size_t)snprintf(m->models_prefix, sizeof(m->models_prefix), "%smodels/",
                                     m->prefix);
    m->copies_len = (size_t)snprintf(m->copies_prefix, sizeof(m->copies_prefix), "%scopies/",
                                     m->prefix);
    m->instances_len = (size_t)snprintf(m->instances_prefix, sizeof(m->instances_prefix),
                                        "%sinstances/", m->prefix);
    m->vmodels_len = (size_t)snprintf(m->vmodels_prefix, sizeof(m->vmodels_prefix),
                                      "%svmodels/", m->prefix);
    m->n_buckets = 64;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    m->st_buf = malloc(sizeof(*m->st_buf));
    if (!m->buckets || !m->st_buf) {
        mesh_free(m);
        return mm_error_set(err, -ENOMEM, "mesh: out of memory");
    }
    ev_init(&m->catchup_timer, catchup_cb);
    m->catchup_timer.repeat = CATCH_UP_POLL_S;
    m->catchup_timer.data = m;
    ev_timer_init(&m->rate_timer, rate_cb, m->cfg.rate_check_ms / 1000.,
                  m->cfg.rate_check_ms / 1000.);
    m->rate_timer.data = m;
    ev_timer_init(&m->move_timer, move_timer_cb, 0., 0.);
    m->move_timer.data = m;
    ev_timer_init(&m->move_tick, move_tick_cb, 0., 0.);
    m->move_tick.data = m;
    m->last_rate_check_ms = now_ms();
    /* the instances the mirror holds now, then every change */
    mirror_foreach_prefix(cfg->mirror, m->instances_prefix, m->instances_len, seed_instance, m);
    if (mirror_subscribe(cfg->mirror, m->instances_prefix, m->instances_len, on_instances, m,
                         &m->sub_instances) < 0 ||
        mirror_subscribe(cfg->mirror, m->models_prefix, m->models_len, on_models, m,
                         &m->sub_models) < 0 ||
        mirror_subscribe(cfg->mirror, m->copies_prefix, m->copies_len, on_copies, m,
                         &m->sub_copies) < 0) {
        mesh_free(m);
        return mm_error_set(err, -ENOMEM, "mesh: subscribing to the mirror: out of memory");
    }
    ev_timer_start(m->loop, &m->rate_timer);
    *out = m;
    return 0;
}

void mesh_free(struct mesh *m)
{
    if (!m)
        return;
    mirror_unsubscribe(m->sub_instances);
    mirror_unsubscribe(m->sub_models);
    mirror_unsubscribe(m->sub_copies);
    ev_timer_stop(m->loop, &m->catchup_timer);
    ev_timer_stop(m->loop, &m->rate_timer);
    ev_timer_stop(m->loop, &m->move_timer);
    ev_timer_stop(m->loop, &m->move_tick);
    for (size_t b = 0; m->buckets && b < m->n_buckets; b++)
        for (struct mstate *s = m->buckets[b], *next; s; s = next) {
            next = s->hnext;
            while (s->ops) {
                struct mesh_op *op = s->ops;
                op_unlink(op);
                op_free(op);
            }
            placer_cancel(s->placer);
            etcd_request_cancel(s->touch_req);
            ev_timer_stop(m->loop, &s->job_timer);
            free(s->excl);
            free(s);
        }
    for (size_t i = 0; i < m->n_insts; i++)
        free(m->insts[i]);
    free(m->insts);
    free(m->views);
    free(m->buckets);
    free(m->st_buf);
    free(m);
}
