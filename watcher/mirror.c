/* mirror.c - revision-consistent mirror of an etcd prefix (see mirror.h). */
#include "mm/mirror.h"

#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/log.h"

#define DEFAULT_PAGE 1000
#define DEFAULT_BACKOFF_MS 50
#define DEFAULT_MAX_BACKOFF_MS 2000
#define DEFAULT_PROBE_MS 5000

/* One allocation per entry: the node, then key and value, each NUL-terminated. */
struct node {
    RB_ENTRY(node) rb;
    struct mirror_entry e;
    char data[];
};

static int node_cmp(const struct node *a, const struct node *b)
{
    size_t n = a->e.key_len < b->e.key_len ? a->e.key_len : b->e.key_len;
    int c = memcmp(a->e.key, b->e.key, n);
    if (c)
        return c;
    return (a->e.key_len > b->e.key_len) - (a->e.key_len < b->e.key_len);
}

RB_HEAD(node_tree, node);
/* RB_GENERATE_STATIC relies on __unused, which libbsd leaves undefined */
RB_GENERATE_INTERNAL(node_tree, node, rb, node_cmp, __attribute__((unused)) static)

struct mirror_sub {
    struct mirror *m;
    LIST_ENTRY(mirror_sub) link;
    mirror_event_cb cb;
    void *arg;
    bool dead;
    size_t prefix_len;
    char prefix[];
};

/* An in-flight list page or probe; outlives the mirror if the mirror is freed first. */
struct req_token {
    struct mirror *m;
    unsigned watch_gen; /* probe: the watch it checks */
};

struct mirror {
    struct etcd_client *c;
    struct ev_loop *loop;
    struct mirror_config cfg;
    char *prefix;
    char *prefix_end;
    struct node_tree tree;
    size_t count;
    /* listing */
    struct node_tree snap;
    size_t snap_count;
    int64_t snap_rev;
    char *page_after;
    struct req_token *list_tok;
    bool relisting;
    /* watching */
    struct etcd_watch *watch;
    char *watch_endpoint; /* where the watch was started */
    ev_tstamp last_heard; /* when the watch last said anything */
    unsigned watch_gen;   /* watches started so far */
    ev_timer probe;
    struct req_token *probe_tok;
    ev_timer retry;
    unsigned backoff_ms;
    int64_t applied_rev;
    enum mirror_state state;
    struct mirror_stats stats;
    LIST_HEAD(, mirror_sub) subs;
    int dispatching;
    bool dead_subs;
};

static struct node *node_new(const struct etcd_kv *kv)
{
    if (kv->key_len > UINT32_MAX || kv->value_len > UINT32_MAX)
        return NULL;
    struct node *n = malloc(sizeof(*n) + kv->key_len + kv->value_len + 2);
    if (!n)
        return NULL;
    char *k = n->data, *v = n->data + kv->key_len + 1;
    memcpy(k, kv->key, kv->key_len);
    k[kv->key_len] = '\0';
    memcpy(v, kv->value, kv->value_len);
    v[kv->value_len] = '\0';
    n->e.key = k;
    n->e.value = v;
    n->e.key_len = (uint32_t)kv->key_len;
    n->e.value_len = (uint32_t)kv->value_len;
    n->e.create_revision = kv->create_revision;
    n->e.mod_revision = kv->mod_revision;
    n->e.version = kv->version;
    n->e.lease = kv->lease;
    return n;
}

static void tree_free(struct node_tree *t)
{
    struct node *n, *next;
    for (n = RB_MIN(node_tree, t); n; n = next) {
        next = RB_NEXT(node_tree, t, n);
        RB_REMOVE(node_tree, t, n);
        free(n);
    }
}

static struct node *tree_find(const struct node_tree *t, const char *key, size_t len)
{
    struct node probe;
    probe.e.key = key;
    probe.e.key_len = (uint32_t)len;
    return RB_FIND(node_tree, (struct node_tree *)t, &probe);
}

/* ---------------------------------------------------------------- subscribers */

static void sweep_subs(struct mirror *m)
{
    struct mirror_sub *s, *next;
    for (s = LIST_FIRST(&m->subs); s; s = next) {
        next = LIST_NEXT(s, link);
        if (s->dead) {
            LIST_REMOVE(s, link);
            free(s);
        }
    }
    m->dead_subs = false;
}

static void emit(struct mirror *m, const struct mirror_event *ev)
{
    if (LIST_EMPTY(&m->subs))
        return;
    m->dispatching++;
    struct mirror_sub *s;
    LIST_FOREACH(s, &m->subs, link) {
        if (!s->dead && ev->key_len >= s->prefix_len &&
            memcmp(ev->key, s->prefix, s->prefix_len) == 0)
            s->cb(ev, s->arg);
    }
    if (--m->dispatching == 0 && m->dead_subs)
        sweep_subs(m);
}

static void emit_put(struct mirror *m, const struct node *old, const struct node *now,
                     int64_t revision)
{
    struct mirror_event ev = {
        .kind = MIRROR_PUT, .key = now->e.key, .key_len = now->e.key_len,
        .old_value = old ? old->e.value : NULL, .old_len = old ? old->e.value_len : 0,
        .new_value = now->e.value, .new_len = now->e.value_len, .revision = revision,
        .entry = &now->e,
    };
    emit(m, &ev);
}

static void emit_delete(struct mirror *m, const struct node *old, int64_t revision)
{
    struct mirror_event ev = {
        .kind = MIRROR_DELETE, .key = old->e.key, .key_len = old->e.key_len,
        .old_value = old->e.value, .old_len = old->e.value_len, .revision = revision,
    };
    emit(m, &ev);
}

static void set_state(struct mirror *m, enum mirror_state state, const struct mm_error *why)
{
    if (m->state == state)
        return;
    m->state = state;
    if (m->cfg.state_cb)
        m->cfg.state_cb(m, state, why, m->cfg.state_arg);
}

/* ---------------------------------------------------------------- applying events */

void mirror_apply_events(struct mirror *m, const struct etcd_event *events, size_t n)
{
    /* Events of one revision (a txn) arrive together; skip only what is at or below the
     * revision applied before this batch (a resumed stream may repeat it). */
    int64_t floor = m->applied_rev, top = m->applied_rev;
    for (size_t i = 0; i < n; i++) {
        const struct etcd_event *ev = &events[i];
        int64_t rev = ev->kv.mod_revision;
        if (rev <= floor) {
            m->stats.duplicates_skipped++;
            continue;
        }
        if (rev > top)
            top = rev;
        m->stats.events_applied++;
        struct node *old = tree_find(&m->tree, ev->kv.key, ev->kv.key_len);
        if (ev->type == ETCD_EVENT_DELETE) {
            if (!old)
                continue;
            RB_REMOVE(node_tree, &m->tree, old);
            m->count--;
            emit_delete(m, old, rev);
            free(old);
            continue;
        }
        struct node *now = node_new(&ev->kv);
        if (!now) {
            /* Without memory the mirror cannot stay exact: drop the key so that readers see
             * absence rather than a stale value, and say so. */
            mm_log(MM_LOG_ERROR, "mirror", "out of memory applying %s at revision %" PRId64,
                   ev->kv.key, rev);
            if (old) {
                RB_REMOVE(node_tree, &m->tree, old);
                m->count--;
                emit_delete(m, old, rev);
                free(old);
            }
            continue;
        }
        if (old)
            RB_REMOVE(node_tree, &m->tree, old);
        else
            m->count++;
        RB_INSERT(node_tree, &m->tree, now);
        emit_put(m, old, now, rev);
        free(old);
    }
    m->applied_rev = top;
}

/* ---------------------------------------------------------------- watch */

static void start_list(struct mirror *m);
static void start_watch(struct mirror *m);

static void schedule_retry(struct mirror *m)
{
    ev_timer_stop(m->loop, &m->retry);
    ev_timer_set(&m->retry, m->backoff_ms / 1000.0, 0.);
    ev_timer_start(m->loop, &m->retry);
    m->backoff_ms *= 2;
    if (m->backoff_ms > m->cfg.max_backoff_ms)
        m->backoff_ms = m->cfg.max_backoff_ms;
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mirror *m = w->data;
    if (m->state == MIRROR_LISTING || m->state == MIRROR_RELISTING)
        start_list(m);
    else
        start_watch(m);
}

static void on_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                     const struct etcd_watch_batch *batch, int64_t compact_revision, void *arg)
{
    struct mirror *m = arg;
    m->last_heard = ev_now(m->loop);
    if (status < 0) {
        etcd_watch_free(w);
        m->watch = NULL;
        if (status == -ESTALE) {
            mm_log(MM_LOG_WARN, "mirror", "%s: revision %" PRId64 " compacted (oldest %" PRId64
                   "), listing again", m->prefix, m->applied_rev + 1, compact_revision);
            m->stats.relists++;
            m->relisting = true;
            set_state(m, MIRROR_RELISTING, err);
            start_list(m);
            return;
        }
        mm_log(MM_LOG_WARN, "mirror",
               "%s: watch broke at revision %" PRId64 ", resuming in %u ms: %s", m->prefix,
               m->applied_rev, m->backoff_ms, err ? err->msg : "");
        set_state(m, MIRROR_DISCONNECTED, err);
        schedule_retry(m);
        return;
    }
    if (batch->created) {
        m->backoff_ms = m->cfg.initial_backoff_ms;
        if (m->state == MIRROR_DISCONNECTED)
            m->stats.resumes++;
        set_state(m, MIRROR_SYNCED, NULL);
        return;
    }
    if (batch->n_events == 0) { /* progress: everything up to batch->revision was delivered */
        m->stats.progress_notifies++;
        if (batch->revision > m->applied_rev)
            m->applied_rev = batch->revision;
        return;
    }
    mirror_apply_events(m, batch->events, batch->n_events);
}

static void start_watch(struct mirror *m)
{
    free(m->watch_endpoint);
    m->watch_endpoint = strdup(etcd_client_endpoint(m->c));
    m->last_heard = ev_now(m->loop);
    m->watch_gen++;
    struct etcd_watch_req req = {
        .key = m->prefix, .prefix = true, .start_revision = m->applied_rev + 1,
        .progress_notify = !m->cfg.no_progress_notify,
    };
    int rc = etcd_watch_start(m->c, &req, on_watch, m, &m->watch);
    if (rc < 0) {
        m->watch = NULL;
        mm_log(MM_LOG_WARN, "mirror", "%s: cannot start watch: %s", m->prefix, mm_strerror(rc));
        schedule_retry(m);
    }
}

/* ---------------------------------------------------------------- liveness */

/* A member that is frozen, or cut off without its TCP connection breaking, leaves the watch
 * open and silent. So a watch silent for a probe interval is checked with a cheap read: the
 * client sends it where it sends everything, fails over when that endpoint does not answer,
 * and if the endpoint that answers is no longer the one the watch was started on, the watch
 * resumes there (from the applied revision: nothing is lost, nothing applied twice). */
static void on_probe(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct req_token *tok = arg;
    struct mirror *m = tok->m;
    unsigned gen = tok->watch_gen;
    free(tok);
    (void)resp; /* the client frees it: only whether and where it was answered matters */
    if (!m)
        return;
    m->probe_tok = NULL;
    if (status < 0)
        m->stats.probes_unanswered++;
    /* Only an answer from another endpoint is news: a probe that failed everywhere leaves the
     * watch where it is (moving it could only land on an endpoint as silent, and the client is
     * being freed when the probe is cancelled), and an answer about a watch since replaced
     * says nothing about the new one. */
    if (status < 0 || !m->watch || gen != m->watch_gen || !m->watch_endpoint)
        return;
    const char *now_at = etcd_client_endpoint(m->c);
    if (strcmp(now_at, m->watch_endpoint) == 0)
        return;
    struct mm_error why;
    mm_error_set(&why, -ETIMEDOUT, "the watch on %s is silent and %s answers: resuming there",
                 m->watch_endpoint, now_at);
    mm_log(MM_LOG_WARN, "mirror", "%s: %s at revision %" PRId64, m->prefix, why.msg,
           m->applied_rev);
    m->stats.endpoint_moves++;
    etcd_watch_free(m->watch);
    m->watch = NULL;
    set_state(m, MIRROR_DISCONNECTED, &why);
    start_watch(m);
}

static void on_probe_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mirror *m = w->data;
    /* A watch that is live (SYNCED) or still waiting to be created (DISCONNECTED with a watch)
     * and has been silent for an interval. */
    if (!m->watch || m->probe_tok ||
        (m->state != MIRROR_SYNCED && m->state != MIRROR_DISCONNECTED) ||
        ev_now(loop) - m->last_heard < m->cfg.probe_interval_ms / 1000.0)
        return;
    struct req_token *tok = malloc(sizeof(*tok));
    if (!tok)
        return;
    *tok = (struct req_token){m, m->watch_gen};
    /* One key, keys only: etcd counts a count_only range in full, whatever its limit. */
    struct etcd_range_req req = {
        .key = m->prefix, .range_end = m->prefix_end, .limit = 1, .keys_only = true};
    m->probe_tok = tok; /* before the call: the callback may run inside it */
    m->stats.probes++;
    if (etcd_range(m->c, &req, on_probe, tok, NULL) < 0) {
        m->probe_tok = NULL;
        free(tok);
    }
}

/* ---------------------------------------------------------------- listing */

/* The new snapshot replaces the contents at once; then the difference is emitted, so a
 * subscriber reading the mirror from its callback sees the complete new state. */
static void finish_list(struct mirror *m)
{
    struct node_tree old = m->tree;
    m->tree = m->snap;
    m->count = m->snap_count;
    RB_INIT(&m->snap);
    m->snap_count = 0;
    m->applied_rev = m->snap_rev;
    free(m->page_after);
    m->page_after = NULL;

    struct node *a = RB_MIN(node_tree, &old), *b = RB_MIN(node_tree, &m->tree);
    while (a || b) {
        int cmp = !a ? 1 : !b ? -1 : node_cmp(a, b);
        if (cmp < 0) {
            emit_delete(m, a, m->snap_rev);
            a = RB_NEXT(node_tree, &old, a);
        } else if (cmp > 0) {
            emit_put(m, NULL, b, b->e.mod_revision);
            b = RB_NEXT(node_tree, &m->tree, b);
        } else {
            if (a->e.mod_revision != b->e.mod_revision)
                emit_put(m, a, b, b->e.mod_revision);
            a = RB_NEXT(node_tree, &old, a);
            b = RB_NEXT(node_tree, &m->tree, b);
        }
    }
    tree_free(&old);
    m->relisting = false;
    m->backoff_ms = m->cfg.initial_backoff_ms;
    start_watch(m);
}

static void list_page(struct mirror *m);

static void on_page(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct req_token *tok = arg;
    struct mirror *m = tok->m;
    free(tok);
    if (!m)
        return; /* the mirror was freed meanwhile */
    m->list_tok = NULL;
    if (status < 0) {
        tree_free(&m->snap);
        m->snap_count = 0;
        free(m->page_after);
        m->page_after = NULL;
        bool compacted = status == -ESTALE; /* our snapshot revision went mid-list */
        m->snap_rev = 0;
        mm_log(MM_LOG_WARN, "mirror", "%s: list failed%s: %s", m->prefix,
               compacted ? ", restarting at the latest revision" : ", retrying", err->msg);
        if (compacted)
            start_list(m);
        else
            schedule_retry(m);
        return;
    }
    if (m->snap_rev == 0)
        m->snap_rev = resp->revision;
    const struct etcd_op_result *r = &resp->op;
    for (size_t i = 0; i < r->n_kvs; i++) {
        const struct etcd_kv *kv = &r->kvs[i];
        if (m->page_after && strcmp(kv->key, m->page_after) == 0)
            continue; /* the previous page's last key, requested again as this page's start */
        struct node *n = node_new(kv);
        if (!n) {
            struct mm_error oom;
            mm_error_set(&oom, -ENOMEM, "out of memory");
            tree_free(&m->snap);
            m->snap_count = 0;
            m->snap_rev = 0;
            free(m->page_after);
            m->page_after = NULL;
            mm_log(MM_LOG_ERROR, "mirror", "%s: list: out of memory, retrying", m->prefix);
            schedule_retry(m);
            return;
        }
        if (RB_INSERT(node_tree, &m->snap, n))
            free(n); /* cannot happen at one revision; keep the first */
        else
            m->snap_count++;
    }
    if (r->more && r->n_kvs > 0) {
        char *last = strdup(r->kvs[r->n_kvs - 1].key);
        if (!last) {
            schedule_retry(m);
            return;
        }
        free(m->page_after);
        m->page_after = last;
        list_page(m);
        return;
    }
    finish_list(m);
}

static void list_page(struct mirror *m)
{
    struct req_token *tok = malloc(sizeof(*tok));
    if (!tok) {
        schedule_retry(m);
        return;
    }
    tok->m = m;
    struct etcd_range_req req = {
        .key = m->page_after ? m->page_after : m->prefix,
        .range_end = m->prefix_end,
        .limit = m->cfg.page_size + (m->page_after ? 1 : 0),
        .revision = m->snap_rev,
    };
    m->list_tok = tok; /* before the call: the callback may run inside it */
    int rc = etcd_range(m->c, &req, on_page, tok, NULL);
    if (rc < 0) {
        m->list_tok = NULL;
        free(tok);
        schedule_retry(m);
    }
}

static void start_list(struct mirror *m)
{
    tree_free(&m->snap);
    m->snap_count = 0;
    m->snap_rev = 0;
    free(m->page_after);
    m->page_after = NULL;
    list_page(m);
}

/* ---------------------------------------------------------------- public */

int mirror_new(struct etcd_client *c, const char *prefix, const struct mirror_config *cfg,
               struct mirror **out, struct mm_error *err)
{
    size_t len = prefix ? strlen(prefix) : 0;
    if (len == 0)
        return mm_error_set(err, -EINVAL, "mirror: the prefix must not be empty");
    if ((unsigned char)prefix[len - 1] == 0xff)
        return mm_error_set(err, -EINVAL, "mirror: prefix must not end in byte 0xff");
    struct mirror *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_error_set(err, -ENOMEM, "mirror: out of memory");
    m->c = c;
    m->loop = etcd_client_loop(c);
    if (cfg)
        m->cfg = *cfg;
    if (m->cfg.page_size <= 0)
        m->cfg.page_size = DEFAULT_PAGE;
    if (!m->cfg.initial_backoff_ms)
        m->cfg.initial_backoff_ms = DEFAULT_BACKOFF_MS;
    if (!m->cfg.max_backoff_ms)
        m->cfg.max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
    if (!m->cfg.probe_interval_ms)
        m->cfg.probe_interval_ms = DEFAULT_PROBE_MS;
    if (m->cfg.max_backoff_ms < m->cfg.initial_backoff_ms)
        m->cfg.max_backoff_ms = m->cfg.initial_backoff_ms;
    m->backoff_ms = m->cfg.initial_backoff_ms;
    m->prefix = strdup(prefix);
    m->prefix_end = malloc(len + 1);
    if (!m->prefix || !m->prefix_end) {
        free(m->prefix);
        free(m->prefix_end);
        free(m);
        return mm_error_set(err, -ENOMEM, "mirror: out of memory");
    }
    etcd_prefix_end(prefix, len, m->prefix_end);
    RB_INIT(&m->tree);
    RB_INIT(&m->snap);
    LIST_INIT(&m->subs);
    ev_init(&m->retry, on_retry);
    m->retry.data = m;
    ev_timer_init(&m->probe, on_probe_timer, m->cfg.probe_interval_ms / 1000.0,
                  m->cfg.probe_interval_ms / 1000.0);
    m->probe.data = m;
    m->state = MIRROR_LISTING;
    *out = m;
    return 0;
}

int mirror_start(struct mirror *m)
{
    if (m->list_tok || m->watch || m->applied_rev)
        return -EALREADY;
    start_list(m);
    ev_timer_start(m->loop, &m->probe);
    return 0;
}

void mirror_free(struct mirror *m)
{
    if (!m)
        return;
    ev_timer_stop(m->loop, &m->retry);
    ev_timer_stop(m->loop, &m->probe);
    etcd_watch_free(m->watch);
    free(m->watch_endpoint);
    if (m->list_tok)
        m->list_tok->m = NULL;
    if (m->probe_tok)
        m->probe_tok->m = NULL;
    tree_free(&m->tree);
    tree_free(&m->snap);
    struct mirror_sub *s;
    while ((s = LIST_FIRST(&m->subs))) {
        LIST_REMOVE(s, link);
        free(s);
    }
    free(m->page_after);
    free(m->prefix);
    free(m->prefix_end);
    free(m);
}

const struct mirror_entry *mirror_get(const struct mirror *m, const char *key)
{
    struct node *n = tree_find(&m->tree, key, strlen(key));
    return n ? &n->e : NULL;
}

int mirror_foreach_prefix(const struct mirror *m, const char *prefix,
                          int (*cb)(const struct mirror_entry *e, void *arg), void *arg)
{
    size_t len = strlen(prefix);
    struct node probe;
    probe.e.key = prefix;
    probe.e.key_len = (uint32_t)len;
    struct node_tree *t = (struct node_tree *)&m->tree;
    for (struct node *n = RB_NFIND(node_tree, t, &probe); n; n = RB_NEXT(node_tree, t, n)) {
        if (n->e.key_len < len || memcmp(n->e.key, prefix, len) != 0)
            break;
        int rc = cb(&n->e, arg);
        if (rc)
            return rc;
    }
    return 0;
}

size_t mirror_count(const struct mirror *m)
{
    return m->count;
}

int64_t mirror_revision(const struct mirror *m)
{
    return m->applied_rev;
}

enum mirror_state mirror_state(const struct mirror *m)
{
    return m->state;
}

void mirror_get_stats(const struct mirror *m, struct mirror_stats *out)
{
    *out = m->stats;
}

int mirror_subscribe(struct mirror *m, const char *prefix, mirror_event_cb cb, void *arg,
                     struct mirror_sub **out)
{
    if (!prefix || !cb)
        return -EINVAL;
    size_t len = strlen(prefix);
    struct mirror_sub *s = calloc(1, sizeof(*s) + len + 1);
    if (!s)
        return -ENOMEM;
    s->m = m;
    s->cb = cb;
    s->arg = arg;
    s->prefix_len = len;
    memcpy(s->prefix, prefix, len + 1);
    LIST_INSERT_HEAD(&m->subs, s, link);
    if (out)
        *out = s;
    return 0;
}

void mirror_unsubscribe(struct mirror_sub *s)
{
    if (!s)
        return;
    struct mirror *m = s->m;
    if (m->dispatching) { /* removed once delivery unwinds */
        s->dead = true;
        m->dead_subs = true;
        return;
    }
    LIST_REMOVE(s, link);
    free(s);
}
