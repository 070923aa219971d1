/* mirror.c - revision-consistent mirror of an etcd prefix (see mirror.h). */
#include "mm/mirror.h"

#include <assert.h>
#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/log.h"
#include "mm/metrics.h"

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

/* Keys are bytes: ordered by memcmp, then by length. */
static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

static int node_cmp(const struct node *a, const struct node *b)
{
    return bytes_cmp(a->e.key, a->e.key_len, b->e.key, b->e.key_len);
}

RB_HEAD(node_tree, node);
/* RB_GENERATE_STATIC relies on __unused, which libbsd leaves undefined */
RB_GENERATE_INTERNAL(node_tree, node, rb, node_cmp, __attribute__((unused)) static)

/* The subscriptions of one prefix. Groups are kept in prefix order, and each knows the longest
 * other group whose prefix starts its own: the groups that match a key are the longest one
 * and its parents (see longest_match). */
struct sub_group {
    RB_ENTRY(sub_group) rb;
    struct sub_group *parent;
    TAILQ_HEAD(, mirror_sub) subs;
    const char *prefix; /* data, or a lookup's key */
    size_t prefix_len;
    char data[];
};

static int group_cmp(const struct sub_group *a, const struct sub_group *b)
{
    return bytes_cmp(a->prefix, a->prefix_len, b->prefix, b->prefix_len);
}

RB_HEAD(group_tree, sub_group);
RB_GENERATE_INTERNAL(group_tree, sub_group, rb, group_cmp, __attribute__((unused)) static)

struct mirror_sub {
    struct mirror *m;
    struct sub_group *group;
    TAILQ_ENTRY(mirror_sub) link;
    SLIST_ENTRY(mirror_sub) dead_link;
    mirror_event_cb cb;
    void *arg;
    uint64_t since; /* deliveries begun before it was made: it gets none of them */
    bool dead;      /* unsubscribed while callbacks run: freed when they return */
};

/* One change of the revision being delivered. The replaced node (old) is freed only after the
 * change has been delivered, so that subscribers can read the old value. now NULL = deleted. */
struct change {
    struct node *old;
    struct node *now;
};

#define MIN_CHANGES 64

struct mirror {
    struct etcd_client *c;
    struct ev_loop *loop;
    struct mirror_config cfg;
    struct metric *m_revision, *m_lag; /* NULL: metrics off */
    int64_t store_rev;                 /* the store's revision as the watch last said */
    char *prefix;
    char *prefix_end;
    size_t prefix_end_len;
    bool started;
    struct node_tree tree;
    size_t count;
    /* listing: the snapshot being read (etcd_range_paged), in place when it ends */
    struct node_tree snap;
    size_t snap_count;
    struct etcd_request *list_req;
    /* watching */
    struct etcd_watch *watch;
    int64_t watch_member; /* the member serving the watch, from its replies; 0 until one */
    ev_tstamp last_heard; /* when the watch last said anything */
    ev_timer probe;
    struct etcd_request *probe_req; /* a check of the current watch; cancelled with it */
    ev_timer retry;
    unsigned backoff_ms;
    int64_t applied_rev;
    enum mirror_state state;
    struct mirror_stats stats;
    /* delivering */
    struct group_tree groups;
    SLIST_HEAD(, mirror_sub) dead_subs;
    uint64_t deliveries;       /* events delivered so far (see mirror_sub.since) */
    struct change *changes;    /* the revision being applied and delivered */
    size_t n_changes;
    size_t cap_changes;
    struct node_tree replaced; /* a list's previous contents, until its differences are out */
    int busy;                  /* callbacks running */
    bool freed;                /* mirror_free() ran inside one: free when they return */
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
    if (len > UINT32_MAX || (!key && len))
        return NULL; /* no key is that long */
    struct node probe;
    probe.e.key = key ? key : "";
    probe.e.key_len = (uint32_t)len;
    return RB_FIND(node_tree, (struct node_tree *)t, &probe);
}

/* ---------------------------------------------------------------- callbacks and lifetime */

static void release(struct mirror *m)
{
    for (size_t i = 0; i < m->n_changes; i++)
        free(m->changes[i].old);
    free(m->changes);
    tree_free(&m->tree);
    tree_free(&m->snap);
    tree_free(&m->replaced);
    struct sub_group *g, *gnext;
    for (g = RB_MIN(group_tree, &m->groups); g; g = gnext) {
        gnext = RB_NEXT(group_tree, &m->groups, g);
        RB_REMOVE(group_tree, &m->groups, g);
        struct mirror_sub *s;
        while ((s = TAILQ_FIRST(&g->subs))) {
            TAILQ_REMOVE(&g->subs, s, link);
            free(s);
        }
        free(g);
    }
    free(m->prefix);
    free(m->prefix_end);
    free(m);
}

static bool starts_with(const struct sub_group *g, const char *prefix, size_t len)
{
    return g->prefix_len >= len && memcmp(g->prefix, prefix, len) == 0;
}

static void remove_group(struct mirror *m, struct sub_group *g)
{
    /* The groups that start with g's prefix follow it in order; those whose parent it was
     * take its parent. */
    struct sub_group *d;
    for (d = RB_NEXT(group_tree, &m->groups, g); d && starts_with(d, g->prefix, g->prefix_len);
         d = RB_NEXT(group_tree, &m->groups, d))
        if (d->parent == g)
            d->parent = g->parent;
    RB_REMOVE(group_tree, &m->groups, g);
    free(g);
}

static void remove_sub(struct mirror *m, struct mirror_sub *s)
{
    struct sub_group *g = s->group;
    TAILQ_REMOVE(&g->subs, s, link);
    free(s);
    if (TAILQ_EMPTY(&g->subs))
        remove_group(m, g);
}

/* Around every call into the owner's code, which may unsubscribe or free the mirror. unhold()
 * returns false when the mirror was freed: the caller then returns without touching it. */
static void hold(struct mirror *m)
{
    m->busy++;
}

static bool unhold(struct mirror *m)
{
    if (--m->busy > 0)
        return !m->freed;
    if (m->freed) {
        release(m);
        return false;
    }
    struct mirror_sub *s;
    while ((s = SLIST_FIRST(&m->dead_subs))) {
        SLIST_REMOVE_HEAD(&m->dead_subs, dead_link);
        remove_sub(m, s);
    }
    return true;
}

static size_t common_len(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t i = 0, n = alen < blen ? alen : blen;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* The group with the longest prefix that starts key[0, len); NULL if none does. Every string
 * between a prefix P of the key and the key itself (in byte order) starts with P. So the
 * greatest group g <= key is either that longest match, or the match starts g as well: it is
 * the first of g's parents short enough to fit in the bytes g shares with the key. */
static struct sub_group *longest_match(struct mirror *m, const char *key, size_t len)
{
    struct sub_group probe;
    probe.prefix = key;
    probe.prefix_len = len;
    struct sub_group *g = RB_NFIND(group_tree, &m->groups, &probe);
    if (!g || group_cmp(g, &probe) != 0)
        g = g ? RB_PREV(group_tree, &m->groups, g) : RB_MAX(group_tree, &m->groups);
    if (!g)
        return NULL;
    size_t shared = common_len(g->prefix, g->prefix_len, key, len);
    while (g && g->prefix_len > shared)
        g = g->parent;
    return g;
}

/* Call every subscriber whose prefix starts ev->key; the caller holds the mirror. One search
 * finds the longest matching prefix; the others are its parents. */
static void deliver(struct mirror *m, const struct mirror_event *ev)
{
    if (RB_EMPTY(&m->groups))
        return;
    uint64_t seq = ++m->deliveries;
    for (struct sub_group *g = longest_match(m, ev->key, ev->key_len); g; g = g->parent) {
        struct mirror_sub *s;
        TAILQ_FOREACH(s, &g->subs, link) {
            if (s->dead || s->since >= seq)
                continue;
            s->cb(ev, s->arg);
            if (m->freed)
                return;
        }
    }
}

static void deliver_change(struct mirror *m, const struct node *old, const struct node *now,
                           int64_t revision)
{
    const struct node *n = now ? now : old;
    struct mirror_event ev = {
        .kind = now ? MIRROR_PUT : MIRROR_DELETE, .key = n->e.key, .key_len = n->e.key_len,
        .old_value = old ? old->e.value : NULL, .old_len = old ? old->e.value_len : 0,
        .new_value = now ? now->e.value : NULL, .new_len = now ? now->e.value_len : 0,
        .revision = revision, .entry = now ? &now->e : NULL,
    };
    deliver(m, &ev);
}

static bool set_state(struct mirror *m, enum mirror_state state, const struct mm_error *why)
{
    if (m->state == state)
        return true;
    m->state = state;
    if (!m->cfg.state_cb)
        return true;
    hold(m);
    m->cfg.state_cb(m, state, why, m->cfg.state_arg);
    return unhold(m);
}

/* ---------------------------------------------------------------- applying events */

static int reserve_changes(struct mirror *m, size_t n)
{
    if (n <= m->cap_changes)
        return 0;
    size_t cap = m->cap_changes;
    while (cap < n)
        cap *= 2;
    struct change *c = realloc(m->changes, cap * sizeof(*c));
    if (!c)
        return -ENOMEM;
    m->changes = c;
    m->cap_changes = cap;
    return 0;
}

static void apply_one(struct mirror *m, const struct etcd_event *ev)
{
    m->stats.events_applied++;
    struct node *old = tree_find(&m->tree, ev->kv.key, ev->kv.key_len);
    struct node *now = NULL;
    if (ev->type == ETCD_EVENT_PUT) {
        now = node_new(&ev->kv);
        /* Without memory the mirror cannot stay exact: drop the key so that readers see
         * absence rather than a stale value, and say so. */
        if (!now)
            mm_log(MM_LOG_ERROR, "mirror",
                   "%s: out of memory applying a key of %zu bytes at revision %" PRId64,
                   m->prefix, ev->kv.key_len, ev->kv.mod_revision);
    }
    if (!old && !now)
        return;
    if (old) {
        RB_REMOVE(node_tree, &m->tree, old);
        m->count--;
    }
    if (now) {
        RB_INSERT(node_tree, &m->tree, now);
        m->count++;
    }
    m->changes[m->n_changes++] = (struct change){old, now};
}

/* Deliver the changes applied, then free what they replaced. False: the mirror was freed. */
static bool deliver_changes(struct mirror *m, int64_t revision)
{
    hold(m);
    for (size_t i = 0; i < m->n_changes && !m->freed; i++)
        deliver_change(m, m->changes[i].old, m->changes[i].now, revision);
    if (!unhold(m))
        return false;
    for (size_t i = 0; i < m->n_changes; i++)
        free(m->changes[i].old);
    m->n_changes = 0;
    return true;
}

/* Apply each revision whole, advance to it, then deliver it. False: the mirror was freed. */
static bool apply_events(struct mirror *m, const struct etcd_event *events, size_t n)
{
    assert(m->busy == 0 && "mirror events applied from inside a mirror callback");
    /* A resumed stream may repeat what was applied before this batch: skip it. */
    int64_t floor = m->applied_rev;
    size_t i = 0;
    while (i < n) {
        int64_t rev = events[i].kv.mod_revision;
        if (rev <= floor) {
            m->stats.duplicates_skipped++;
            i++;
            continue;
        }
        /* The events of one revision (a txn) arrive together, in one batch. */
        size_t end = i + 1;
        while (end < n && events[end].kv.mod_revision == rev)
            end++;
        if (reserve_changes(m, end - i) < 0) {
            mm_log(MM_LOG_ERROR, "mirror",
                   "%s: out of memory: revision %" PRId64 " delivered in parts of %zu",
                   m->prefix, rev, m->cap_changes);
            end = i + m->cap_changes;
        }
        for (; i < end; i++)
            apply_one(m, &events[i]);
        if (rev > m->applied_rev)
            m->applied_rev = rev;
        if (!deliver_changes(m, rev))
            return false;
    }
    return true;
}

void mirror_apply_events(struct mirror *m, const struct etcd_event *events, size_t n)
{
    apply_events(m, events, n);
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

/* The watch is over (broken, moved, or the mirror freed): so is any check of it. */
static void stop_watch(struct mirror *m)
{
    etcd_watch_free(m->watch);
    m->watch = NULL;
    etcd_request_cancel(m->probe_req);
    m->probe_req = NULL;
}

/* The gauges, after the applied revision or the store's moved. */
static void report(struct mirror *m, int64_t store_rev)
{
    if (store_rev > m->store_rev)
        m->store_rev = store_rev;
    if (m->store_rev < m->applied_rev)
        m->store_rev = m->applied_rev;
    metric_set0(m->m_revision, m->applied_rev);
    metric_set0(m->m_lag, m->store_rev - m->applied_rev);
}

static void on_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                     const struct etcd_watch_batch *batch, int64_t compact_revision, void *arg)
{
    struct mirror *m = arg;
    m->last_heard = ev_now(m->loop);
    if (status < 0) {
        stop_watch(m);
        if (status == -EMSGSIZE) {
            /* a catch-up reply over the reply cap would come back the same on every resume:
             * read the prefix in bounded pages instead */
            mm_log(MM_LOG_WARN, "mirror", "%s: watch reply over the cap at revision %" PRId64
                   ", listing again: %s", m->prefix, m->applied_rev, err ? err->msg : "");
            m->stats.relists++;
            if (set_state(m, MIRROR_RELISTING, err))
                start_list(m);
            return;
        }
        if (status == -ESTALE) {
            mm_log(MM_LOG_WARN, "mirror", "%s: revision %" PRId64 " compacted (oldest %" PRId64
                   "), listing again", m->prefix, m->applied_rev + 1, compact_revision);
            m->stats.relists++;
            if (set_state(m, MIRROR_RELISTING, err))
                start_list(m);
            return;
        }
        mm_log(MM_LOG_WARN, "mirror",
               "%s: watch broke at revision %" PRId64 ", resuming in %u ms: %s", m->prefix,
               m->applied_rev, m->backoff_ms, err ? err->msg : "");
        if (set_state(m, MIRROR_DISCONNECTED, err))
            schedule_retry(m);
        return;
    }
    if (batch->member_id)
        m->watch_member = batch->member_id;
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
        report(m, batch->revision);
        return;
    }
    if (apply_events(m, batch->events, batch->n_events))
        report(m, batch->revision);
}

static void start_watch(struct mirror *m)
{
    stop_watch(m);
    m->watch_member = 0;
    m->last_heard = ev_now(m->loop);
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
 * client sends it where it sends everything and fails over when that endpoint does not answer.
 * Every reply names the member that served it, so if the member that answers is not the one
 * serving the watch (or the watch was never confirmed), the watch resumes where the client now
 * sends (from the applied revision: nothing is lost, nothing applied twice). A probe belongs to
 * the watch it checks: ending the watch cancels it. */
static void on_probe(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct mirror *m = arg;
    m->probe_req = NULL;
    if (status < 0)
        m->stats.probes_unanswered++;
    /* Only an answer from another member is news: a probe that failed everywhere leaves the
     * watch where it is (moving it could only land on a member as silent). */
    if (status < 0 || !resp || !resp->member_id || !m->watch ||
        resp->member_id == m->watch_member)
        return;
    struct mm_error why;
    if (m->watch_member)
        mm_error_set(&why, -ETIMEDOUT,
                     "the watch on member %" PRIx64 " is silent and member %" PRIx64
                     " answers: resuming there",
                     (uint64_t)m->watch_member, (uint64_t)resp->member_id);
    else
        mm_error_set(&why, -ETIMEDOUT,
                     "the watch was never confirmed and member %" PRIx64
                     " answers: starting it again",
                     (uint64_t)resp->member_id);
    mm_log(MM_LOG_WARN, "mirror", "%s: %s at revision %" PRId64, m->prefix, why.msg,
           m->applied_rev);
    m->stats.endpoint_moves++;
    stop_watch(m);
    if (set_state(m, MIRROR_DISCONNECTED, &why))
        start_watch(m);
}

static void on_probe_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mirror *m = w->data;
    /* A watch that is live (SYNCED) or still waiting to be created (DISCONNECTED with a watch)
     * and has been silent for an interval. */
    if (!m->watch || m->probe_req ||
        (m->state != MIRROR_SYNCED && m->state != MIRROR_DISCONNECTED) ||
        ev_now(loop) - m->last_heard < m->cfg.probe_interval_ms / 1000.0)
        return;
    /* One key, keys only: etcd counts a count_only range in full, whatever its limit. */
    struct etcd_range_req req = {.key = m->prefix,
                                 .range_end = m->prefix_end,
                                 .range_end_len = m->prefix_end_len,
                                 .limit = 1,
                                 .keys_only = true};
    m->stats.probes++;
    if (etcd_range(m->c, &req, on_probe, m, &m->probe_req) < 0)
        m->probe_req = NULL;
}

/* ---------------------------------------------------------------- listing */

/* The new snapshot replaces the contents at once; then the difference is delivered, so a
 * subscriber reading the mirror from its callback sees the complete new state. */
static void finish_list(struct mirror *m, int64_t rev)
{
    m->replaced = m->tree;
    m->tree = m->snap;
    m->count = m->snap_count;
    RB_INIT(&m->snap);
    m->snap_count = 0;
    m->applied_rev = rev;
    m->backoff_ms = m->cfg.initial_backoff_ms;

    hold(m);
    struct node *a = RB_MIN(node_tree, &m->replaced), *b = RB_MIN(node_tree, &m->tree);
    while ((a || b) && !m->freed) {
        int cmp = !a ? 1 : !b ? -1 : node_cmp(a, b);
        if (cmp < 0) {
            deliver_change(m, a, NULL, rev);
            a = RB_NEXT(node_tree, &m->replaced, a);
        } else if (cmp > 0) {
            deliver_change(m, NULL, b, rev);
            b = RB_NEXT(node_tree, &m->tree, b);
        } else {
            if (a->e.mod_revision != b->e.mod_revision)
                deliver_change(m, a, b, rev);
            a = RB_NEXT(node_tree, &m->replaced, a);
            b = RB_NEXT(node_tree, &m->tree, b);
        }
    }
    if (!unhold(m))
        return;
    report(m, rev);
    tree_free(&m->replaced);
    start_watch(m);
}

/* A page of the snapshot: no owner code runs here. */
static int on_list_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct mirror *m = arg;
    for (size_t i = 0; i < n; i++) {
        struct node *node = node_new(&kvs[i]);
        if (!node)
            return -ENOMEM;
        if (RB_INSERT(node_tree, &m->snap, node))
            free(node); /* cannot happen: pages are in order, each after the last */
        else
            m->snap_count++;
    }
    return 0;
}

static void on_list_done(int status, const struct mm_error *err, int64_t revision, size_t n_keys,
                         void *arg)
{
    struct mirror *m = arg;
    m->list_req = NULL;
    if (status == 0) {
        finish_list(m, revision);
        return;
    }
    tree_free(&m->snap);
    m->snap_count = 0;
    if (status == -ECANCELED) { /* the client is being freed (before the mirror: a misuse) */
        mm_log(MM_LOG_WARN, "mirror", "%s: list cancelled: %s", m->prefix, err->msg);
        return;
    }
    bool compacted = status == -ESTALE; /* our snapshot revision went mid-list */
    mm_log(MM_LOG_WARN, "mirror", "%s: list failed after %zu keys%s: %s", m->prefix, n_keys,
           compacted ? ", restarting at the latest revision" : ", retrying", err->msg);
    if (compacted)
        start_list(m);
    else
        schedule_retry(m);
}

/* Read the prefix at one revision into a new snapshot, replacing a list in progress. */
static void start_list(struct mirror *m)
{
    etcd_request_cancel(m->list_req);
    m->list_req = NULL;
    tree_free(&m->snap);
    m->snap_count = 0;
    struct etcd_paged_req req = {
        .key = m->prefix,
        .range_end = m->prefix_end,
        .range_end_len = m->prefix_end_len,
        .page_keys = (size_t)m->cfg.page_size,
        .page_bytes = m->cfg.page_bytes,
    };
    int rc = etcd_range_paged(m->c, &req, on_list_page, on_list_done, m, &m->list_req);
    if (rc < 0) {
        m->list_req = NULL;
        mm_log(MM_LOG_WARN, "mirror", "%s: cannot start a list: %s", m->prefix, mm_strerror(rc));
        schedule_retry(m);
    }
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
    m->prefix_end = malloc(len + 1); /* etcd_prefix_end: len + 1 for a prefix of len >= 1 */
    m->changes = malloc(MIN_CHANGES * sizeof(*m->changes));
    m->cap_changes = MIN_CHANGES;
    struct metric_desc rev_desc = {.name = "mm_mirror_revision",
                                   .help = "The etcd revision the registry mirror has applied",
                                   .type = METRIC_GAUGE},
                       lag_desc = {.name = "mm_mirror_revision_lag",
                                   .help = "The store's revision as the watch last reported it "
                                           "minus the revision the mirror has applied",
                                   .type = METRIC_GAUGE};
    struct mm_error merr = {0};
    if (metrics_register(m->cfg.metrics, &rev_desc, &m->m_revision, &merr) < 0 ||
        metrics_register(m->cfg.metrics, &lag_desc, &m->m_lag, &merr) < 0) {
        free(m->prefix);
        free(m->prefix_end);
        free(m->changes);
        free(m);
        return mm_error_set(err, merr.code, "mirror: %s", merr.msg);
    }
    if (!m->prefix || !m->prefix_end || !m->changes) {
        free(m->prefix);
        free(m->prefix_end);
        free(m->changes);
        free(m);
        return mm_error_set(err, -ENOMEM, "mirror: out of memory");
    }
    m->prefix_end_len = etcd_prefix_end(prefix, len, m->prefix_end);
    RB_INIT(&m->tree);
    RB_INIT(&m->snap);
    RB_INIT(&m->replaced);
    RB_INIT(&m->groups);
    SLIST_INIT(&m->dead_subs);
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
    if (m->started)
        return -EALREADY;
    m->started = true;
    start_list(m);
    ev_timer_start(m->loop, &m->probe);
    return 0;
}

void mirror_free(struct mirror *m)
{
    if (!m || m->freed)
        return;
    ev_timer_stop(m->loop, &m->retry);
    ev_timer_stop(m->loop, &m->probe);
    stop_watch(m);
    etcd_request_cancel(m->list_req);
    m->list_req = NULL;
    if (m->busy) { /* inside a callback: the rest goes when it returns */
        m->freed = true;
        return;
    }
    release(m);
}

const struct mirror_entry *mirror_get(const struct mirror *m, const char *key, size_t key_len)
{
    struct node *n = tree_find(&m->tree, key, key_len);
    return n ? &n->e : NULL;
}

int mirror_foreach_prefix(const struct mirror *m, const char *prefix, size_t prefix_len,
                          int (*cb)(const struct mirror_entry *e, void *arg), void *arg)
{
    if (prefix_len > UINT32_MAX)
        return 0; /* no key is that long */
    struct node probe;
    probe.e.key = prefix_len ? prefix : "";
    probe.e.key_len = (uint32_t)prefix_len;
    struct node_tree *t = (struct node_tree *)&m->tree;
    for (struct node *n = RB_NFIND(node_tree, t, &probe); n; n = RB_NEXT(node_tree, t, n)) {
        if (n->e.key_len < prefix_len || memcmp(n->e.key, prefix, prefix_len) != 0)
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

int mirror_subscribe(struct mirror *m, const char *prefix, size_t prefix_len, mirror_event_cb cb,
                     void *arg, struct mirror_sub **out)
{
    if ((!prefix && prefix_len) || !cb)
        return -EINVAL;
    if (!prefix)
        prefix = "";
    size_t len = prefix_len;
    struct sub_group probe = {.prefix = prefix, .prefix_len = len};
    struct sub_group *g = RB_FIND(group_tree, &m->groups, &probe);
    bool new_group = !g;
    if (new_group) {
        g = malloc(sizeof(*g) + len);
        if (!g)
            return -ENOMEM;
        if (len)
            memcpy(g->data, prefix, len);
        g->prefix = g->data;
        g->prefix_len = len;
        TAILQ_INIT(&g->subs);
    }
    struct mirror_sub *s = calloc(1, sizeof(*s));
    if (!s) {
        if (new_group)
            free(g);
        return -ENOMEM;
    }
    if (new_group) {
        /* Its parent is the longest group that starts it; the groups that start with it and
         * had that parent now have it. */
        g->parent = longest_match(m, prefix, len);
        RB_INSERT(group_tree, &m->groups, g);
        struct sub_group *d;
        for (d = RB_NEXT(group_tree, &m->groups, g); d && starts_with(d, prefix, len);
             d = RB_NEXT(group_tree, &m->groups, d))
            if (d->parent == g->parent)
                d->parent = g;
    }
    s->m = m;
    s->group = g;
    s->cb = cb;
    s->arg = arg;
    s->since = m->deliveries;
    TAILQ_INSERT_TAIL(&g->subs, s, link);
    if (out)
        *out = s;
    return 0;
}

void mirror_unsubscribe(struct mirror_sub *s)
{
    if (!s || s->dead)
        return;
    struct mirror *m = s->m;
    if (m->busy) { /* a callback runs: removed when it returns */
        s->dead = true;
        SLIST_INSERT_HEAD(&m->dead_subs, s, dead_link);
        return;
    }
    remove_sub(m, s);
}
