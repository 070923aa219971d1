/* copies.c - the copies this node holds: the state machine from Pending to Loaded or Failed, the
 * pod's cache within its capacity, loads and unloads through the runtime, and the copy records
 * in etcd (copies.h has the rules; docs/node.md the reasons).
 *
 * One struct copy per key copies/<m>/<self> this node has something to do with: a copy it holds
 * (queued, loading, loaded, failed), one it is unloading, or a record it is deleting (refused or
 * stale). It knows the record as etcd last showed it (rec_rev, rec_lease, rec_value) and what it
 * wants there (want, rec); sync() makes the two agree with one conditional txn at a time. */
#include "mm/copies.h"

#include <bsd/string.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mm/cache.h"
#include "mm/etcd.h"
#include "mm/log.h"
#include "mm/lru.h"
#include "mm/metrics.h"
#include "mm/mirror.h"
#include "mm/storage.h"

#define WHO "copies"
#define WRITE_FIRST_RETRY_MS 250
#define WRITE_MAX_RETRY_MS 5000
#define UNLOAD_CALL_MS 30000 /* one unloadModel call */
#define UNLOAD_TRIES 3
#define SIZE_CALL_MS 5000       /* modelSize after a load that reported no size */
#define LOAD_CALL_GRACE_MS 1000 /* the loadModel deadline, past our own timeout */
#define DEFAULT_UNLOAD_WAIT_MS 10000
#define PROGRESS_WRITE_MS 2000 /* the pull's progress in the Loading record, at most this often */

enum phase {
    P_NONE,     /* nothing held: a record being deleted (refused, stale), or about to go */
    P_QUEUED,   /* admitted (in the cache, Pending), waiting for a loading slot */
    P_STARTING, /* a slot taken: the record is being put Loading */
    P_FETCHING, /* storage_fetch */
    P_LOADING,  /* loadModel */
    P_SIZING,   /* modelSize, after a load that reported no size */
    P_LOADED,
    P_FAILED,    /* the Failed record stays until the failure expires */
    P_UNLOADING, /* dropped: waiting for requests in flight, then unloadModel */
};

enum want { WANT_NONE, WANT_PUT, WANT_DELETE };

struct copy {
    struct lru_node node; /* in copies->index, key = id */
    struct copies *owner;
    struct copy *queue_next;
    bool queued;
    char id[KEYS_NAME_MAX + 1];
    size_t id_len;
    char *key, *model_key;
    enum phase phase;
    struct cache_entry *entry; /* while it holds cache space: QUEUED .. LOADED */
    uint32_t inflight;

    /* The record as etcd last showed it (an event, a write's answer, a read-back). */
    int64_t rec_rev; /* its mod_revision; 0 = absent */
    int64_t rec_lease;
    char *rec_value;
    /* What this node wants there. */
    enum want want;
    struct copy_record rec;
    bool reassert;    /* lost with the instance key or a restore: re-create it */
    bool stale;       /* a record of an earlier run being deleted */
    bool refused;     /* a Pending record being deleted */
    char *model_json; /* the model record as last seen, to re-create it */
    struct etcd_request *write_req;
    char *write_json;
    int64_t write_lease;
    enum want write_kind;
    unsigned write_backoff_ms;
    ev_timer write_timer;

    /* The load and the unload. */
    struct storage_fetch *fetch;
    struct spi_request *spi_req; /* loadModel or modelSize */
    struct spi_request *unload_req;
    char *local_path;
    bool runtime_holds; /* loadModel was sent: the runtime may hold the model */
    bool readmit;       /* a new Pending record came while it was unloading */
    unsigned unload_tries;
    int64_t started_ms, failed_ms;
    double queued_at, unload_at; /* monotonic seconds: admitted; unloadModel sent */
    metric_model_t label;        /* its modelId label */
    int64_t progress_ms; /* when the pull's progress last went into the record */
    ev_timer timer; /* load timeout, failure expiry, or the wait for requests in flight */
};

struct copies {
    struct ev_loop *loop;
    char cluster[KEYS_NAME_MAX + 1];
    char iid[KEYS_NAME_MAX + 1];
    size_t iid_len;
    char inst_key[KEYS_MAX];
    size_t inst_key_len;
    struct etcd_client *etcd;
    struct mirror *mirror;
    struct spi_client *spi;
    struct storage *storage;
    struct instance *instance;
    struct place_config place;
    unsigned load_timeout_ms, unload_wait_ms, max_loading;

    struct cache *cache;
    struct lru *index; /* every struct copy, by model id */
    struct copy *queue_head, *queue_tail;
    unsigned active; /* copies in STARTING .. SIZING */
    struct mirror_sub *copy_sub, *inst_sub;
    bool inst_present;     /* instances/<self> as the events delivered so far left it */
    int64_t inst_gone_rev; /* the revision that last deleted it */

    bool closing;
    void (*done)(int status, void *arg);
    void *done_arg;
    ev_timer close_timer, check_timer;

    struct copies_stats stats;
    /* metrics (NULL: off) */
    struct metrics *metrics;
    struct metric *m_load, *m_unload, *m_queue, *m_load_fail, *m_unload_fail;
    struct metric *m_capacity, *m_used, *m_lru_age, *m_models;
    int64_t lru_oldest_ms;
    ev_timer age_timer; /* the LRU age moves with time: set every second */
    int dispatching;
    bool free_requested;
};

static void sync_record(struct copy *cp);
static void consider(struct copy *cp);
static void pump(struct copies *c);
static void unload_send(struct copy *cp);
static void check_closed(struct copies *c);
static void on_write_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void on_load_timeout(struct ev_loop *loop, ev_timer *t, int revents);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool active_phase(enum phase p)
{
    return p == P_STARTING || p == P_FETCHING || p == P_LOADING || p == P_SIZING;
}

static bool held_phase(enum phase p)
{
    return p >= P_QUEUED && p <= P_FAILED;
}

static struct copy *find(const struct copies *c, const char *id, size_t len)
{
    struct lru_node *n = lru_find(c->index, id, len);
    return n ? lru_entry(n, struct copy, node) : NULL;
}

/* ---------------------------------------------------------------- figures */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ModelMesh's: seconds since the least recently used copy was used, 0 when there is none. */
static void set_lru_age(struct copies *c)
{
    if (!c->m_lru_age)
        return;
    int64_t age = c->lru_oldest_ms > 0 ? (now_ms() - c->lru_oldest_ms) / 1000 : 0;
    metric_set0(c->m_lru_age, age < 0 ? 0 : age);
}

static void on_age_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    set_lru_age(t->data);
}

static void figures(struct copies *c)
{
    struct cache_stats st;
    cache_stats(c->cache, &st);
    struct instance_figures f = {
        .capacity_bytes = st.capacity_bytes,
        .used_bytes = st.used_bytes,
        .loaded = (uint32_t)(st.count - st.loading),
        .loading = (uint32_t)st.loading,
        .lru_oldest_ms = st.oldest_used_ms,
    };
    instance_update(c->instance, &f);
    metric_set0(c->m_capacity, (int64_t)st.capacity_bytes);
    metric_set0(c->m_used, (int64_t)st.used_bytes);
    metric_set0(c->m_models, (int64_t)(st.count - st.loading));
    c->lru_oldest_ms = st.oldest_used_ms;
    set_lru_age(c);
}

/* ---------------------------------------------------------------- one copy's memory */

static struct copy *copy_new(struct copies *c, const char *id, size_t len)
{
    if (len == 0 || len > KEYS_NAME_MAX)
        return NULL;
    struct copy *cp = calloc(1, sizeof(*cp));
    if (!cp)
        return NULL;
    memcpy(cp->id, id, len);
    cp->id_len = len;
    cp->owner = c;
    cp->label = metrics_model(c->metrics, id, len);
    char key[KEYS_MAX];
    if (keys_copy(key, sizeof(key), c->cluster, cp->id, c->iid, NULL) < 0 ||
        !(cp->key = strdup(key)) || keys_model(key, sizeof(key), c->cluster, cp->id, NULL) < 0 ||
        !(cp->model_key = strdup(key)))
        goto fail;
    cp->node.key = cp->id;
    cp->node.key_len = len;
    if (lru_insert(c->index, &cp->node, 0) < 0)
        goto fail;
    cp->write_backoff_ms = WRITE_FIRST_RETRY_MS;
    ev_init(&cp->write_timer, on_write_timer);
    cp->write_timer.data = cp;
    ev_init(&cp->timer, on_load_timeout); /* each use sets its own callback */
    cp->timer.data = cp;
    return cp;
fail:
    free(cp->key);
    free(cp->model_key);
    free(cp);
    return NULL;
}

/* Cancel everything a copy has started and free it (no unload is sent). */
static void copy_destroy(struct copies *c, struct copy *cp)
{
    ev_timer_stop(c->loop, &cp->write_timer);
    ev_timer_stop(c->loop, &cp->timer);
    etcd_request_cancel(cp->write_req);
    storage_fetch_cancel(cp->fetch);
    spi_request_cancel(cp->spi_req);
    spi_request_cancel(cp->unload_req);
    if (cp->entry)
        cache_remove(c->cache, cp->entry);
    lru_remove(c->index, &cp->node);
    free(cp->write_json);
    free(cp->rec_value);
    free(cp->model_json);
    free(cp->local_path);
    free(cp->key);
    free(cp->model_key);
    free(cp);
}

/* Free a copy that has nothing left to do. */
static void maybe_free(struct copy *cp)
{
    struct copies *c = cp->owner;
    if (cp->phase != P_NONE || cp->want != WANT_NONE || cp->write_req ||
        ev_is_active(&cp->write_timer) || cp->unload_req || cp->fetch || cp->spi_req || cp->readmit)
        return;
    copy_destroy(c, cp);
}

static void unqueue(struct copies *c, struct copy *cp)
{
    if (!cp->queued)
        return;
    struct copy **p = &c->queue_head, *prev = NULL;
    while (*p && *p != cp) {
        prev = *p;
        p = &(*p)->queue_next;
    }
    if (*p) {
        *p = cp->queue_next;
        if (c->queue_tail == cp)
            c->queue_tail = prev;
    }
    cp->queue_next = NULL;
    cp->queued = false;
}

/* ---------------------------------------------------------------- the record in etcd */

static void set_known(struct copy *cp, int64_t rev, int64_t lease, const char *value, size_t len)
{
    free(cp->rec_value);
    cp->rec_value = NULL;
    cp->rec_rev = rev;
    cp->rec_lease = lease;
    if (value && (cp->rec_value = malloc(len + 1))) {
        memcpy(cp->rec_value, value, len);
        cp->rec_value[len] = '\0';
    }
}

/* Whether etcd holds what this node wants, under the live lease. */
static bool record_matches(const struct copy *cp, int64_t lease)
{
    if (cp->rec_rev == 0 || !cp->rec_value || cp->rec_lease != lease)
        return false;
    struct copy_record now;
    if (record_decode(RECORD_COPY, cp->rec_value, strlen(cp->rec_value), &now, NULL) < 0)
        return false;
    return now.state == cp->rec.state && now.since_ms == cp->rec.since_ms &&
           now.size_bytes == cp->rec.size_bytes && strcmp(now.error, cp->rec.error) == 0 &&
           now.bytes_pulled == cp->rec.bytes_pulled && now.bytes_total == cp->rec.bytes_total;
}

static void write_later(struct copy *cp)
{
    struct copies *c = cp->owner;
    ev_timer_stop(c->loop, &cp->write_timer);
    ev_timer_set(&cp->write_timer, cp->write_backoff_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &cp->write_timer);
    cp->write_backoff_ms = cp->write_backoff_ms * 2 > WRITE_MAX_RETRY_MS ? WRITE_MAX_RETRY_MS
                                                                         : cp->write_backoff_ms * 2;
}

static void on_write_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct copy *cp = t->data;
    sync_record(cp);
    maybe_free(cp);
}

static void begin_fetch(struct copy *cp);
static void on_put(struct copy *cp, const char *value, size_t len, int64_t mod_rev, int64_t lease);

static void on_written(int status, const struct mm_error *err, struct etcd_response *resp,
                       void *arg)
{
    struct copy *cp = arg;
    struct copies *c = cp->owner;
    cp->write_req = NULL;
    char *json = cp->write_json;
    cp->write_json = NULL;
    if (status == -ECANCELED) { /* the client is going (it should outlive us) */
        free(json);
        return;
    }
    if (status < 0) {
        mm_log(MM_LOG_WARN, WHO, "%s %s failed, again in %u ms: %s",
               cp->write_kind == WANT_PUT ? "putting" : "deleting", cp->key, cp->write_backoff_ms,
               err->msg);
        free(json);
        write_later(cp);
        return;
    }
    if (resp->succeeded && cp->rec_rev > resp->revision) {
        /* Done, but the watch has already told of a later change to the record (its events
         * and this answer come on different connections): that change stands, and what was
         * learned from it is kept. Clearing it would leave a copy admitted meanwhile waiting
         * for a write that is never sent. */
        free(json);
        cp->write_backoff_ms = WRITE_FIRST_RETRY_MS;
        if (cp->write_kind == WANT_DELETE && cp->stale)
            c->stats.stale_deleted++;
        if (cp->write_kind == WANT_DELETE)
            cp->stale = false;
        int64_t lease = instance_lease_id(c->instance);
        if (cp->phase == P_STARTING && cp->rec.state == COPY_LOADING &&
            record_matches(cp, lease)) {
            begin_fetch(cp);
            return;
        }
        sync_record(cp);
        maybe_free(cp);
        return;
    }
    if (resp->succeeded) {
        cp->write_backoff_ms = WRITE_FIRST_RETRY_MS;
        if (cp->write_kind == WANT_PUT) {
            free(cp->rec_value);
            cp->rec_value = json;
            cp->rec_rev = resp->revision;
            cp->rec_lease = cp->write_lease;
            cp->reassert = false;
            if (cp->phase == P_STARTING && cp->rec.state == COPY_LOADING &&
                record_matches(cp, cp->write_lease)) {
                begin_fetch(cp);
                return;
            }
        } else {
            free(json);
            set_known(cp, 0, 0, NULL, 0);
            if (cp->want == WANT_DELETE)
                cp->want = WANT_NONE;
            if (cp->stale)
                c->stats.stale_deleted++;
            cp->stale = cp->refused = false;
        }
        sync_record(cp); /* what was wanted may have changed meanwhile */
        maybe_free(cp);
        return;
    }
    free(json);
    /* Lost: the record is not as last seen. The read-back says how it is now. */
    const struct etcd_kv *now = NULL;
    if (resp->n_results == 1 && resp->results[0].kind == ETCD_OP_RANGE &&
        resp->results[0].n_kvs == 1)
        now = &resp->results[0].kvs[0];
    if (now && now->mod_revision != cp->rec_rev) {
        /* Changed by someone else: decide as on its event (which is then skipped). */
        int64_t seen = cp->rec_rev;
        if (now->mod_revision < seen) /* the store went back: believe what it says now */
            cp->rec_rev = 0;
        on_put(cp, now->value, now->value_len, now->mod_revision, now->lease);
        if (cp->rec_rev == seen) /* nothing new was learned: try again later */
            write_later(cp);
    } else if (!now) {
        if (cp->want == WANT_DELETE) { /* gone already: as good as deleted */
            set_known(cp, 0, 0, NULL, 0);
            cp->want = WANT_NONE;
            if (cp->stale)
                c->stats.stale_deleted++;
            cp->stale = cp->refused = false;
        } else if (cp->rec_rev == 0) {
            write_later(cp); /* re-creating: the model record moved; the mirror will show it */
        }
        /* else deleted behind us: its event decides */
    } else {
        write_later(cp);
    }
    maybe_free(cp);
}

/* Make etcd hold what this node wants: one conditional txn at a time. */
static void sync_record(struct copy *cp)
{
    struct copies *c = cp->owner;
    if (cp->write_req || ev_is_active(&cp->write_timer))
        return; /* the answer, or the retry, calls again */
    int64_t lease = instance_lease_id(c->instance);
    struct etcd_compare cmp[2];
    struct etcd_op ops[2];
    size_t n_cmp = 0, n_ops = 0;
    char *json = NULL;
    if (cp->want == WANT_NONE)
        return;
    if (cp->want == WANT_DELETE) {
        if (cp->rec_rev == 0) {
            cp->want = WANT_NONE;
            cp->stale = cp->refused = false;
            return;
        }
        cmp[n_cmp++] = (struct etcd_compare){.key = cp->key,
                                             .target = ETCD_CMP_MOD,
                                             .result = ETCD_CMP_EQUAL,
                                             .number = cp->rec_rev};
        ops[n_ops++] = (struct etcd_op){.kind = ETCD_OP_DELETE, .key = cp->key};
    } else {
        if (lease == 0)
            return; /* copies_on_instance(INSTANCE_REGISTERED) calls again */
        if (record_matches(cp, lease))
            return;
        if (cp->rec_rev == 0 && !cp->reassert)
            return; /* deleted, and not ours to re-create: the delete's event decided */
        if (!(json = record_encode(RECORD_COPY, &cp->rec))) {
            write_later(cp);
            return;
        }
        if (cp->rec_rev) {
            cmp[n_cmp++] = (struct etcd_compare){.key = cp->key,
                                                 .target = ETCD_CMP_MOD,
                                                 .result = ETCD_CMP_EQUAL,
                                                 .number = cp->rec_rev};
        } else {
            cmp[n_cmp++] = (struct etcd_compare){
                .key = cp->key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0};
            /* Re-creating: the model record too when it went with it. */
            const struct mirror_entry *m =
                mirror_get(c->mirror, cp->model_key, strlen(cp->model_key));
            if (!m && cp->model_json) {
                cmp[n_cmp++] = (struct etcd_compare){.key = cp->model_key,
                                                     .target = ETCD_CMP_CREATE,
                                                     .result = ETCD_CMP_EQUAL,
                                                     .number = 0};
                ops[n_ops++] = (struct etcd_op){
                    .kind = ETCD_OP_PUT, .key = cp->model_key, .value = cp->model_json};
            }
        }
        ops[n_ops++] =
            (struct etcd_op){.kind = ETCD_OP_PUT, .key = cp->key, .value = json, .lease = lease};
    }
    const struct etcd_op readback = {.kind = ETCD_OP_RANGE, .key = cp->key};
    const struct etcd_txn txn = {.compare = cmp,
                                 .n_compare = n_cmp,
                                 .success = ops,
                                 .n_success = n_ops,
                                 .failure = &readback,
                                 .n_failure = 1};
    cp->write_kind = cp->want;
    cp->write_lease = lease;
    cp->write_json = json;
    int rc = etcd_txn(c->etcd, &txn, on_written, cp, &cp->write_req);
    if (rc < 0) {
        cp->write_req = NULL;
        cp->write_json = NULL;
        free(json);
        mm_log(MM_LOG_WARN, WHO, "writing %s: the txn could not start: %s", cp->key,
               mm_strerror(rc));
        write_later(cp);
    }
}

static void want_record(struct copy *cp, enum copy_state state, int64_t since_ms, uint64_t size,
                        const char *error)
{
    cp->want = WANT_PUT;
    cp->rec = (struct copy_record){.state = state, .since_ms = since_ms, .size_bytes = size};
    if (error)
        mm_log_escape(cp->rec.error, sizeof(cp->rec.error), error, strlen(error));
    sync_record(cp);
}

/* ---------------------------------------------------------------- unloading */

static void release_files(struct copy *cp)
{
    if (!cp->local_path)
        return;
    int rc = storage_release(cp->owner->storage, cp->local_path);
    if (rc < 0)
        mm_log(MM_LOG_WARN, WHO, "releasing %s of model %s: %s", cp->local_path, cp->id,
               mm_strerror(rc));
    free(cp->local_path);
    cp->local_path = NULL;
}

/* The runtime holds nothing of it any more (or never did). */
static void released(struct copy *cp)
{
    struct copies *c = cp->owner;
    cp->runtime_holds = false;
    release_files(cp);
    if (cp->phase == P_UNLOADING) {
        cp->phase = P_NONE;
        if (cp->readmit) {
            cp->readmit = false;
            consider(cp);
        }
    }
    if (c->closing)
        check_closed(c);
    maybe_free(cp);
}

static void on_unloaded(const struct spi_result *res, void *arg)
{
    struct copy *cp = arg;
    struct copies *c = cp->owner;
    cp->unload_req = NULL;
    if (res->code < 0) {
        if (++cp->unload_tries < UNLOAD_TRIES) {
            mm_log(MM_LOG_WARN, WHO, "unloading %s, trying again: %s", cp->id, res->err.msg);
            unload_send(cp); /* each call is bounded; UNLOAD_TRIES in a row at most */
            return;
        }
        mm_log(MM_LOG_ERROR, WHO, "giving up unloading %s after %d tries: %s", cp->id, UNLOAD_TRIES,
               res->err.msg);
        metric_inc0(c->m_unload_fail);
    } else {
        c->stats.unloads++;
        metric_observe(c->m_unload, cp->label, 0, 0, (mono_s() - cp->unload_at) * 1000.);
        mm_log(MM_LOG_INFO, WHO, "unloaded %s", cp->id);
    }
    released(cp);
}

static void unload_send(struct copy *cp)
{
    struct copies *c = cp->owner;
    ev_timer_stop(c->loop, &cp->timer);
    if (cp->unload_tries == 0)
        cp->unload_at = mono_s();
    int rc = spi_unload_model(c->spi, cp->id, UNLOAD_CALL_MS, on_unloaded, cp, &cp->unload_req);
    if (rc < 0) {
        cp->unload_req = NULL;
        mm_log(MM_LOG_ERROR, WHO, "unloading %s: the call could not start: %s", cp->id,
               mm_strerror(rc));
        released(cp);
    }
}

static void on_unload_wait(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct copy *cp = t->data;
    mm_log(MM_LOG_WARN, WHO, "unloading %s with %" PRIu32 " requests still in flight after %u ms",
           cp->id, cp->inflight, cp->owner->unload_wait_ms);
    unload_send(cp);
}

/* Have the runtime let go of the model (after the requests in flight, bounded), then release
 * its files. */
static void release_runtime(struct copy *cp)
{
    struct copies *c = cp->owner;
    if (cp->unload_req)
        return;
    if (!cp->runtime_holds) {
        released(cp);
        return;
    }
    cp->unload_tries = 0;
    if (cp->inflight > 0) {
        ev_timer_stop(c->loop, &cp->timer);
        ev_set_cb(&cp->timer, on_unload_wait);
        cp->timer.data = cp;
        ev_timer_set(&cp->timer, c->unload_wait_ms / 1000.0, 0.);
        ev_timer_start(c->loop, &cp->timer);
        return;
    }
    unload_send(cp);
}

/* Stop holding the copy: cancel its load, give back its cache space, unload it, and delete its
 * record (delete_record) or leave the record alone (someone else deleted it). */
static void drop(struct copy *cp, bool delete_record, const char *why)
{
    struct copies *c = cp->owner;
    enum phase was = cp->phase;
    mm_log(MM_LOG_INFO, WHO, "dropping %s (%s): %s", cp->id,
           was == P_FAILED   ? "Failed"
           : was == P_LOADED ? "Loaded"
                             : "loading",
           why);
    ev_timer_stop(c->loop, &cp->timer);
    storage_fetch_cancel(cp->fetch);
    cp->fetch = NULL;
    spi_request_cancel(cp->spi_req); /* a loadModel sent stays runtime_holds: unload it */
    cp->spi_req = NULL;
    if (active_phase(was))
        c->active--;
    unqueue(c, cp);
    if (cp->entry) {
        cache_remove(c->cache, cp->entry);
        cp->entry = NULL;
    }
    cp->want = delete_record ? WANT_DELETE : WANT_NONE;
    cp->reassert = false;
    cp->phase = P_UNLOADING;
    sync_record(cp);
    figures(c);
    release_runtime(cp); /* may reach P_NONE and free cp */
    pump(c);
}

/* ---------------------------------------------------------------- loading */

static void on_failure_timer(struct ev_loop *loop, ev_timer *t, int revents);

static void arm_expiry(struct copy *cp)
{
    struct copies *c = cp->owner;
    int64_t now = now_ms(), last_used = 0;
    const struct mirror_entry *m = mirror_get(c->mirror, cp->model_key, strlen(cp->model_key));
    struct model_record mr;
    if (m && record_decode(RECORD_MODEL, m->value, m->value_len, &mr, NULL) == 0)
        last_used = mr.last_used_ms;
    if (place_failure_expired(&c->place, cp->failed_ms, last_used, now)) {
        mm_log(MM_LOG_INFO, WHO, "the failure of %s has expired: deleting its record", cp->id);
        cp->want = WANT_DELETE;
        cp->phase = cp->runtime_holds || cp->unload_req ? P_UNLOADING : P_NONE;
        sync_record(cp);
        maybe_free(cp);
        return;
    }
    /* The earliest it can expire (a recent use shortens it), then again while it may. */
    int64_t at = cp->failed_ms + c->place.failure_expiry_used_ms;
    if (at <= now) {
        int64_t step = c->place.failure_recent_use_ms / 2;
        at = now + (step < 100 ? 100 : step);
        int64_t latest = cp->failed_ms + c->place.failure_expiry_ms;
        if (latest > now && latest < at)
            at = latest;
    }
    ev_timer_stop(c->loop, &cp->timer);
    ev_set_cb(&cp->timer, on_failure_timer);
    cp->timer.data = cp;
    ev_timer_set(&cp->timer, (double)(at - now) / 1000.0, 0.);
    ev_timer_start(c->loop, &cp->timer);
}

static void on_failure_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    arm_expiry(t->data);
}

/* The load failed (the runtime's or the fetch's error, or the timeout): Failed, with the
 * message, until the failure expires. */
static void fail(struct copy *cp, const char *msg)
{
    struct copies *c = cp->owner;
    ev_timer_stop(c->loop, &cp->timer);
    if (active_phase(cp->phase))
        c->active--;
    if (cp->entry) {
        cache_remove(c->cache, cp->entry);
        cp->entry = NULL;
    }
    c->stats.loads_failed++;
    metric_inc0(c->m_load_fail);
    mm_log(MM_LOG_WARN, WHO, "loading %s failed: %s", cp->id, msg);
    cp->phase = P_FAILED;
    cp->failed_ms = now_ms();
    want_record(cp, COPY_FAILED, cp->failed_ms, 0, msg);
    figures(c);
    release_runtime(cp);
    pump(c);
    arm_expiry(cp); /* last: an expired failure may free cp */
}

static void on_load_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct copy *cp = t->data;
    struct copies *c = cp->owner;
    storage_fetch_cancel(cp->fetch);
    cp->fetch = NULL;
    spi_request_cancel(cp->spi_req); /* the runtime may load it anyway: unloaded below */
    cp->spi_req = NULL;
    c->stats.loads_timed_out++;
    char msg[128];
    snprintf(msg, sizeof(msg), "timed out after %u ms", c->load_timeout_ms);
    fail(cp, msg);
}

static void loaded(struct copy *cp, uint64_t size, enum cache_size_source source)
{
    struct copies *c = cp->owner;
    int64_t now = now_ms();
    int rc = cache_set_size(c->cache, cp->entry, size, source);
    if (rc == -ENOSPC) { /* larger than estimated, past capacity: make room, or give up */
        struct cache_stats st;
        cache_stats(c->cache, &st);
        uint64_t growth = size - cp->entry->size_bytes;
        struct cache_entry **victims = calloc(st.count + 1, sizeof(*victims));
        struct cache_plan plan = {0};
        rc = victims ? cache_plan(c->cache, growth, cp->entry, now, &plan, victims, st.count + 1)
                     : -ENOMEM;
        for (size_t i = 0; rc == 0 && i < plan.n_victims; i++) {
            c->stats.evictions++;
            drop(victims[i]->user, true, "evicted to fit the measured size of another model");
        }
        free(victims);
        if (rc == 0)
            rc = cache_set_size(c->cache, cp->entry, size, source);
    }
    if (rc < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "its measured size, %" PRIu64 " bytes, does not fit the cache (%s)", size,
                 mm_strerror(rc));
        fail(cp, msg);
        return;
    }
    ev_timer_stop(c->loop, &cp->timer);
    cp->entry->loading = false;
    c->active--;
    c->stats.loads_ok++;
    metric_observe(c->m_load, cp->label, 0, 0, (double)(now - cp->started_ms));
    cp->phase = P_LOADED;
    mm_log(MM_LOG_INFO, WHO, "loaded %s: %" PRIu64 " bytes in %" PRId64 " ms", cp->id,
           cp->entry->size_bytes, now - cp->started_ms);
    want_record(cp, COPY_LOADED, now, cp->entry->size_bytes, NULL);
    figures(c);
    pump(c);
}

static void on_sized(const struct spi_result *res, void *arg)
{
    struct copy *cp = arg;
    cp->spi_req = NULL;
    if (res->code == 0 && res->size_bytes > 0) {
        loaded(cp, res->size_bytes, CACHE_SIZE_RUNTIME);
        return;
    }
    /* No measure: the estimate stands. */
    loaded(cp, cp->entry->size_bytes, cp->entry->size_source);
}

static void on_load(const struct spi_result *res, void *arg)
{
    struct copy *cp = arg;
    struct copies *c = cp->owner;
    cp->spi_req = NULL;
    if (res->code < 0) {
        cp->runtime_holds = false; /* a load that failed left nothing behind */
        fail(cp, res->err.msg);
        return;
    }
    if (res->size_bytes > 0) {
        loaded(cp, res->size_bytes, CACHE_SIZE_RUNTIME);
        return;
    }
    cp->phase = P_SIZING;
    if (spi_model_size(c->spi, cp->id, SIZE_CALL_MS, on_sized, cp, &cp->spi_req) < 0) {
        cp->spi_req = NULL;
        loaded(cp, cp->entry->size_bytes, cp->entry->size_source);
    }
}

static void on_fetched(int status, const struct mm_error *err, const char *local_path,
                       uint64_t disk_bytes, void *arg)
{
    struct copy *cp = arg;
    struct copies *c = cp->owner;
    cp->fetch = NULL;
    if (status < 0) {
        fail(cp, err ? err->msg : mm_strerror(status));
        return;
    }
    if (!(cp->local_path = strdup(local_path))) {
        storage_release(c->storage, local_path);
        fail(cp, "out of memory");
        return;
    }
    struct model_record mr = {0};
    if (cp->model_json)
        record_decode(RECORD_MODEL, cp->model_json, strlen(cp->model_json), &mr, NULL);
    struct spi_model m = {.id = cp->id, .type = mr.type, .path = cp->local_path};
    int64_t left = cp->started_ms + c->load_timeout_ms - now_ms();
    if (left < 1)
        left = 1;
    cp->phase = P_LOADING;
    cp->runtime_holds = true;
    int rc = spi_load_model(c->spi, &m, left + LOAD_CALL_GRACE_MS, on_load, cp, &cp->spi_req);
    if (rc < 0) {
        cp->spi_req = NULL;
        cp->runtime_holds = false;
        char msg[160];
        snprintf(msg, sizeof(msg), "loadModel at %s could not start: %s", spi_client_target(c->spi),
                 mm_strerror(rc));
        fail(cp, msg);
    }
}

/* The pull's progress into the Loading record: at most every PROGRESS_WRITE_MS, only when it
 * changed, and only while the record is wanted Loading (storage stops calling once the fetch
 * has called back or is cancelled). */
static void on_fetch_progress(uint64_t done, uint64_t total, void *arg)
{
    struct copy *cp = arg;
    if (cp->phase != P_FETCHING || cp->want != WANT_PUT || cp->rec.state != COPY_LOADING)
        return;
    if (done == cp->rec.bytes_pulled && total == cp->rec.bytes_total)
        return;
    int64_t now = now_ms();
    if (cp->progress_ms && now - cp->progress_ms < PROGRESS_WRITE_MS)
        return;
    cp->progress_ms = now;
    cp->rec.bytes_pulled = done;
    cp->rec.bytes_total = total;
    sync_record(cp); /* one write at a time: a write in flight is followed by this one */
}

/* The record says Loading: fetch, then load; the timeout runs from here. */
static void begin_fetch(struct copy *cp)
{
    struct copies *c = cp->owner;
    cp->phase = P_FETCHING;
    cp->started_ms = now_ms();
    c->stats.loads_started++;
    ev_timer_stop(c->loop, &cp->timer);
    ev_set_cb(&cp->timer, on_load_timeout);
    cp->timer.data = cp;
    ev_timer_set(&cp->timer, c->load_timeout_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &cp->timer);
    /* The freshest model record: it may have been updated since the copy was placed. */
    const struct mirror_entry *e = mirror_get(c->mirror, cp->model_key, strlen(cp->model_key));
    if (e) {
        char *json = strndup(e->value, e->value_len);
        if (json) {
            free(cp->model_json);
            cp->model_json = json;
        }
    }
    struct model_record mr = {0};
    struct mm_error err = {0};
    if (!cp->model_json ||
        record_decode(RECORD_MODEL, cp->model_json, strlen(cp->model_json), &mr, &err) < 0) {
        fail(cp, err.msg[0] ? err.msg : "its model record is gone");
        return;
    }
    struct storage_model sm = {.model_id = cp->id,
                               .storage_key = mr.storage_key,
                               .storage_params = mr.storage_params,
                               .storage_path = mr.storage_path,
                               .progress = on_fetch_progress,
                               .progress_arg = cp};
    cp->progress_ms = 0;
    int rc = storage_fetch(c->storage, &sm, on_fetched, cp, &cp->fetch, &err);
    if (rc < 0) {
        cp->fetch = NULL;
        fail(cp, err.msg[0] ? err.msg : mm_strerror(rc));
    }
}

/* Start queued loads while slots are free, in the order they were admitted. */
static void pump(struct copies *c)
{
    while (c->active < c->max_loading && c->queue_head) {
        struct copy *cp = c->queue_head;
        unqueue(c, cp);
        c->active++;
        metric_observe(c->m_queue, cp->label, 0, 0, (mono_s() - cp->queued_at) * 1000.);
        cp->phase = P_STARTING;
        want_record(cp, COPY_LOADING, now_ms(), cp->entry->size_bytes, NULL);
        /* on_written goes on to begin_fetch */
    }
}

/* ---------------------------------------------------------------- admission */

static void refuse(struct copy *cp, const char *why)
{
    struct copies *c = cp->owner;
    c->stats.refusals++;
    mm_log(MM_LOG_INFO, WHO, "refusing a copy of %s: %s; deleting its Pending record", cp->id, why);
    cp->refused = true;
    cp->want = WANT_DELETE;
    sync_record(cp);
}

static void admit(struct copy *cp)
{
    struct copies *c = cp->owner;
    char why[MM_ERROR_MSG_MAX + 400];
    if (c->closing) {
        refuse(cp, "the node is shutting down");
        return;
    }
    const struct mirror_entry *m = mirror_get(c->mirror, cp->model_key, strlen(cp->model_key));
    struct model_record mr;
    struct mm_error err = {0};
    if (!m) {
        refuse(cp, "its model record does not exist");
        return;
    }
    if (record_decode(RECORD_MODEL, m->value, m->value_len, &mr, &err) < 0) {
        snprintf(why, sizeof(why), "its model record does not decode: %s", err.msg);
        refuse(cp, why);
        return;
    }
    char *json = strndup(m->value, m->value_len);
    if (!json) {
        refuse(cp, "out of memory");
        return;
    }
    free(cp->model_json);
    cp->model_json = json;

    int64_t now = now_ms();
    enum cache_size_source source;
    uint64_t size = cache_load_size(c->cache, mr.size_bytes, &source);
    struct cache_stats st;
    cache_stats(c->cache, &st);
    struct cache_entry **victims = calloc(st.count + 1, sizeof(*victims));
    struct cache_plan plan = {0};
    int rc =
        victims ? cache_plan(c->cache, size, NULL, now, &plan, victims, st.count + 1) : -ENOMEM;
    if (rc < 0) {
        free(victims);
        if (rc == -EBUSY)
            snprintf(why, sizeof(why),
                     "%" PRIu64 " bytes fit only by evicting copies used within the last %" PRId64
                     " ms (the oldest: %s)",
                     size, c->place.min_churn_age_ms, plan.blocking ? plan.blocking->id : "?");
        else if (rc == -E2BIG)
            snprintf(why, sizeof(why),
                     "%" PRIu64 " bytes is more than this cache (%" PRIu64 " bytes) can ever admit",
                     size, st.capacity_bytes);
        else if (rc == -ENOSPC)
            snprintf(why, sizeof(why),
                     "%" PRIu64 " bytes do not fit: too much of the cache is loading or serving",
                     size);
        else
            snprintf(why, sizeof(why), "planning room for %" PRIu64 " bytes: %s", size,
                     mm_strerror(rc));
        refuse(cp, why);
        return;
    }
    for (size_t i = 0; i < plan.n_victims; i++) {
        struct copy *v = victims[i]->user;
        c->stats.evictions++;
        snprintf(why, sizeof(why), "evicted (least recently used) to load %s", cp->id);
        drop(v, true, why);
    }
    free(victims);
    rc = cache_add(c->cache, cp->id, cp->id_len, size, source, now, &cp->entry);
    if (rc < 0) {
        cp->entry = NULL;
        snprintf(why, sizeof(why), "adding %" PRIu64 " bytes to the cache: %s", size,
                 mm_strerror(rc));
        refuse(cp, why);
        return;
    }
    cp->entry->loading = true;
    cp->entry->user = cp;
    cp->phase = P_QUEUED;
    cp->stale = cp->refused = false;
    /* Wanted as it is: the placer's Pending record. */
    cp->want = WANT_PUT;
    if (record_decode(RECORD_COPY, cp->rec_value, strlen(cp->rec_value), &cp->rec, NULL) < 0)
        cp->rec = (struct copy_record){.state = COPY_PENDING, .since_ms = now};
    if (c->queue_tail)
        c->queue_tail->queue_next = cp;
    else
        c->queue_head = cp;
    c->queue_tail = cp;
    cp->queued = true;
    cp->queued_at = mono_s();
    mm_log(MM_LOG_INFO, WHO, "admitted %s: %" PRIu64 " bytes (%s)%s", cp->id, size,
           source == CACHE_SIZE_PREDICTED ? "the model record's estimate" : "the default size",
           plan.n_victims ? ", after evictions" : "");
    figures(c);
    pump(c);
}

/* A record of ours that this node holds nothing for: take it (Pending under the live lease),
 * or delete it (an earlier run's, or a state it does not hold). */
static void consider(struct copy *cp)
{
    struct copies *c = cp->owner;
    if (cp->phase != P_NONE || cp->rec_rev == 0 || !cp->rec_value)
        return;
    int64_t lease = instance_lease_id(c->instance);
    if (lease == 0) {
        cp->want = WANT_NONE; /* judged again at the registration (copies_on_instance) */
        return;
    }
    struct copy_record r;
    bool pending =
        record_decode(RECORD_COPY, cp->rec_value, strlen(cp->rec_value), &r, NULL) == 0 &&
        r.state == COPY_PENDING;
    if (pending && cp->rec_lease == lease) {
        admit(cp);
        return;
    }
    mm_log(MM_LOG_INFO, WHO,
           "%s is not held here (%s under lease %" PRId64 "; ours is %" PRId64 "): deleting it",
           cp->key, pending ? "Pending" : "a state this node does not hold", cp->rec_lease, lease);
    cp->stale = true;
    cp->want = WANT_DELETE;
    sync_record(cp);
}

/* ---------------------------------------------------------------- events */

/* The record was put (an event, or a lost write's read-back). */
static void on_put(struct copy *cp, const char *value, size_t len, int64_t mod_rev, int64_t lease)
{
    if (mod_rev <= cp->rec_rev)
        return; /* known already (our own write, or read back) */
    set_known(cp, mod_rev, lease, value, len);
    if (cp->write_req && cp->write_kind == WANT_PUT && lease == cp->write_lease && cp->write_json &&
        strlen(cp->write_json) == len && memcmp(cp->write_json, value, len) == 0)
        return; /* our write in flight, seen before its answer */
    switch (cp->phase) {
    case P_NONE:
        consider(cp);
        break;
    case P_UNLOADING: {
        struct copy_record r;
        if (record_decode(RECORD_COPY, value, len, &r, NULL) == 0 && r.state == COPY_PENDING &&
            lease == instance_lease_id(cp->owner->instance) && lease != 0) {
            cp->readmit = true; /* loaded again once the unload is done */
            cp->want = WANT_NONE;
        } else if (cp->want == WANT_NONE) {
            cp->want = WANT_DELETE; /* not ours to keep: gone with the old copy */
            cp->stale = true;
        }
        sync_record(cp);
        break;
    }
    default: /* someone else wrote over the record of a copy held here: the holder's state
                stands */
        mm_log(MM_LOG_WARN, WHO, "%s was overwritten at revision %" PRId64 ": putting back %s",
               cp->key, mod_rev, copy_state_name(cp->rec.state));
        sync_record(cp);
        break;
    }
}

static void on_deleted(struct copy *cp, int64_t rev)
{
    struct copies *c = cp->owner;
    if (rev <= cp->rec_rev)
        return; /* older than what we know */
    set_known(cp, 0, 0, NULL, 0);
    if (!held_phase(cp->phase)) {
        if (cp->want == WANT_DELETE) {
            cp->want = WANT_NONE;
            if (cp->stale)
                c->stats.stale_deleted++;
            cp->stale = cp->refused = false;
        }
        cp->readmit = false;
        maybe_free(cp);
        return;
    }
    /* Gone with the instance key in the same revision (its lease expired, the prefix was
     * wiped), or missing from a re-list while its model is still registered (a restore): the
     * copy is still held here, so its record is put back. */
    bool inst_gone = !mirror_get(c->mirror, c->inst_key, c->inst_key_len) &&
                     (c->inst_present || c->inst_gone_rev == rev);
    bool restored = mirror_state(c->mirror) == MIRROR_RELISTING &&
                    mirror_get(c->mirror, cp->model_key, strlen(cp->model_key));
    if (inst_gone || restored) {
        c->stats.reasserts++;
        cp->reassert = true;
        mm_log(MM_LOG_WARN, WHO, "%s vanished %s at revision %" PRId64 ": putting it back", cp->key,
               inst_gone ? "with the instance key" : "in a re-list", rev);
        sync_record(cp);
        return;
    }
    drop(cp, false, "its record was deleted");
}

static void on_copy_event(const struct mirror_event *ev, void *arg)
{
    struct copies *c = arg;
    struct key_parts kp;
    if (keys_parse(ev->key, ev->key_len, c->cluster, &kp) < 0 || kp.kind != KEY_COPY ||
        kp.second_len != c->iid_len || memcmp(kp.second, c->iid, c->iid_len) != 0)
        return;
    struct copy *cp = find(c, kp.first, kp.first_len);
    if (ev->kind == MIRROR_DELETE) {
        if (cp)
            on_deleted(cp, ev->revision);
        return;
    }
    if (!cp && !(cp = copy_new(c, kp.first, kp.first_len))) {
        mm_log(MM_LOG_ERROR, WHO, "out of memory for a copy record at revision %" PRId64,
               ev->revision);
        return;
    }
    on_put(cp, ev->new_value, ev->new_len, ev->entry->mod_revision, ev->entry->lease);
    maybe_free(cp);
}

static void on_instance_event(const struct mirror_event *ev, void *arg)
{
    struct copies *c = arg;
    if (ev->key_len != c->inst_key_len || memcmp(ev->key, c->inst_key, ev->key_len) != 0)
        return;
    if (ev->kind == MIRROR_DELETE) {
        c->inst_present = false;
        c->inst_gone_rev = ev->revision;
    } else {
        c->inst_present = true;
    }
}

/* Every record copies/<m>/<self> the mirror holds that no struct copy knows yet. */
static int scan_one(const struct mirror_entry *e, void *arg)
{
    struct copies *c = arg;
    struct key_parts kp;
    if (keys_parse(e->key, e->key_len, c->cluster, &kp) < 0 || kp.kind != KEY_COPY ||
        kp.second_len != c->iid_len || memcmp(kp.second, c->iid, c->iid_len) != 0)
        return 0;
    struct copy *cp = find(c, kp.first, kp.first_len);
    if (cp) {
        if (cp->phase == P_NONE && cp->want == WANT_NONE && !cp->write_req)
            consider(cp); /* deferred until a lease was held */
        return 0;
    }
    if (!(cp = copy_new(c, kp.first, kp.first_len)))
        return 0;
    on_put(cp, e->value, e->value_len, e->mod_revision, e->lease);
    maybe_free(cp);
    return 0;
}

static void scan(struct copies *c)
{
    char prefix[KEYS_MAX];
    int n = snprintf(prefix, sizeof(prefix), "/modelmesh/%s/copies/", c->cluster);
    mirror_foreach_prefix(c->mirror, prefix, (size_t)n, scan_one, c);
}

void copies_on_instance(struct copies *c, enum instance_event ev, int64_t lease_id)
{
    if (ev != INSTANCE_REGISTERED)
        return; /* lost: the records go with the lease; writes wait for the next one */
    mm_log(MM_LOG_INFO, WHO, "lease %" PRId64 ": putting every copy record of %s again", lease_id,
           c->iid);
    /* Walk with the next taken first: sync may free a copy that has nothing left to do. */
    struct lru_node *n = lru_oldest(c->index);
    while (n) {
        struct lru_node *next = lru_newer(n);
        struct copy *cp = lru_entry(n, struct copy, node);
        if (cp->want == WANT_PUT && cp->rec_rev == 0)
            cp->reassert = true; /* held, and its record gone with the old lease */
        sync_record(cp);
        n = next;
    }
    scan(c);
}

/* ---------------------------------------------------------------- the owner's calls */

static void stop_age_timer(struct copies *c)
{
    if (ev_is_active(&c->age_timer)) {
        ev_ref(c->loop);
        ev_timer_stop(c->loop, &c->age_timer);
    }
}

/* ModelMesh's families (modelId as ModelMesh's per-model metrics label its histograms). */
static int register_metrics(struct copies *c, struct metrics *m, struct mm_error *err)
{
    static const struct {
        size_t at;
        struct metric_desc d;
    } families[] = {
        {offsetof(struct copies, m_load),
         {.name = "modelmesh_loadmodel_milliseconds", .help = "Time taken to load model (fetch and loadModel)",
          .type = METRIC_HISTOGRAM, .by_model = true}},
        {offsetof(struct copies, m_unload),
         {.name = "modelmesh_unloadmodel_milliseconds", .help = "Time taken to unload model", .type = METRIC_HISTOGRAM,
          .by_model = true}},
        {offsetof(struct copies, m_queue),
         {.name = "modelmesh_loading_queue_delay_milliseconds", .help = "Time spent in model loading queue",
          .type = METRIC_HISTOGRAM, .by_model = true}},
        {offsetof(struct copies, m_load_fail),
         {.name = "modelmesh_loadmodel_failure_total", .help = "Model load failures", .type = METRIC_COUNTER}},
        {offsetof(struct copies, m_unload_fail),
         {.name = "modelmesh_unloadmodel_failure_total",
          .help = "Unload model failures (not counting multiple attempts for same copy)",
          .type = METRIC_COUNTER}},
        {offsetof(struct copies, m_capacity),
         {.name = "modelmesh_instance_capacity_bytes", .help = "Effective model capacity of pod", .type = METRIC_GAUGE}},
        {offsetof(struct copies, m_used),
         {.name = "modelmesh_instance_used_bytes", .help = "Amount of capacity currently in use by loaded models",
          .type = METRIC_GAUGE}},
        {offsetof(struct copies, m_lru_age),
         {.name = "modelmesh_instance_lru_age_seconds",
          .help = "Last used age of least recently used model in pod (secs ago)", .type = METRIC_GAUGE}},
        {offsetof(struct copies, m_models),
         {.name = "modelmesh_instance_models_total", .help = "Number of model copies loaded in pod",
          .type = METRIC_GAUGE}},
    };
    c->metrics = m;
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        struct metric_desc d = families[i].d;
        if (d.type == METRIC_HISTOGRAM) {
            d.buckets = metrics_ms_buckets;
            d.nbuckets = METRICS_MS_BUCKETS_N;
        }
        int rc = metrics_register(m, &d, (struct metric **)((char *)c + families[i].at), err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int copies_new(const struct copies_config *cfg, struct copies **out, struct mm_error *err)
{
    if (!cfg || !out || !cfg->cluster || !cfg->iid || !cfg->etcd || !cfg->mirror || !cfg->spi ||
        !cfg->storage || !cfg->instance || !cfg->runtime)
        return mm_error_set(err, -EINVAL,
                            "copies: cluster, instance id, etcd, mirror, runtime client and "
                            "status, storage and instance are required");
    int rc = keys_check_name("instance id", cfg->iid, err);
    if (rc < 0)
        return rc;
    struct copies *c = calloc(1, sizeof(*c));
    if (!c)
        return mm_error_set(err, -ENOMEM, "copies of %s: out of memory", cfg->iid);
    if ((rc = keys_instance(c->inst_key, sizeof(c->inst_key), cfg->cluster, cfg->iid, err)) < 0) {
        free(c);
        return rc;
    }
    c->inst_key_len = strlen(c->inst_key);
    strlcpy(c->cluster, cfg->cluster, sizeof(c->cluster));
    strlcpy(c->iid, cfg->iid, sizeof(c->iid));
    c->iid_len = strlen(c->iid);
    c->loop = etcd_client_loop(cfg->etcd);
    c->etcd = cfg->etcd;
    c->mirror = cfg->mirror;
    c->spi = cfg->spi;
    c->storage = cfg->storage;
    c->instance = cfg->instance;
    if (cfg->place)
        c->place = *cfg->place;
    else
        place_config_init(&c->place);
    const struct spi_runtime_status *rt = cfg->runtime;
    c->load_timeout_ms = cfg->load_timeout_ms  ? cfg->load_timeout_ms
                         : rt->load_timeout_ms ? rt->load_timeout_ms
                                               : CACHE_DEFAULT_LOAD_TIMEOUT_MS;
    c->unload_wait_ms = cfg->unload_wait_ms ? cfg->unload_wait_ms : DEFAULT_UNLOAD_WAIT_MS;
    c->max_loading = rt->max_loading_concurrency ? rt->max_loading_concurrency : 1;
    struct cache_config cc;
    cache_config_init(&cc, rt->capacity_bytes, rt->default_model_size_bytes, c->load_timeout_ms);
    if (c->place.reserve_permille <= 1000)
        cc.reserve_permille = c->place.reserve_permille;
    cc.min_churn_age_ms = cfg->min_churn_age_ms > 0 ? cfg->min_churn_age_ms
                                                    : cache_min_churn_age_ms(c->load_timeout_ms);
    c->place.min_churn_age_ms = cc.min_churn_age_ms; /* for the refusal messages */
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    if ((rc = cache_create(&c->cache, &cc, seed)) < 0 ||
        (rc = lru_create(&c->index, seed * 0x9e3779b97f4a7c15ULL + 1)) < 0) {
        cache_free(c->cache);
        free(c);
        return mm_error_set(err, rc, "copies of %s: the cache: %s", cfg->iid, mm_strerror(rc));
    }
    ev_init(&c->close_timer, NULL);
    ev_init(&c->check_timer, NULL);
    if ((rc = register_metrics(c, cfg->metrics, err)) < 0) {
        cache_free(c->cache);
        lru_free(c->index);
        free(c);
        return rc;
    }
    ev_timer_init(&c->age_timer, on_age_timer, 1., 1.);
    c->age_timer.data = c;
    if (c->m_lru_age) {
        ev_timer_start(c->loop, &c->age_timer);
        ev_unref(c->loop); /* it does not keep the loop running */
    }
    c->inst_present = mirror_get(c->mirror, c->inst_key, c->inst_key_len) != NULL;
    char prefix[KEYS_MAX];
    int n = snprintf(prefix, sizeof(prefix), "/modelmesh/%s/copies/", c->cluster);
    if ((rc = mirror_subscribe(c->mirror, prefix, (size_t)n, on_copy_event, c, &c->copy_sub)) < 0 ||
        (rc = mirror_subscribe(c->mirror, c->inst_key, c->inst_key_len, on_instance_event, c,
                               &c->inst_sub)) < 0) {
        mirror_unsubscribe(c->copy_sub);
        stop_age_timer(c);
        cache_free(c->cache);
        lru_free(c->index);
        free(c);
        return mm_error_set(err, rc, "copies of %s: subscribing to the mirror: %s", cfg->iid,
                            mm_strerror(rc));
    }
    mm_log(MM_LOG_INFO, WHO,
           "%s: capacity %" PRIu64
           " bytes, %u loads at once, load timeout %u ms, churn age %" PRId64 " ms",
           c->iid, rt->capacity_bytes, c->max_loading, c->load_timeout_ms, cc.min_churn_age_ms);
    *out = c;
    /* What the mirror holds already (the first list may have been delivered). */
    scan(c);
    figures(c);
    return 0;
}

static void destroy(struct copies *c)
{
    free(c);
}

void copies_free(struct copies *c)
{
    if (!c || c->free_requested)
        return;
    mirror_unsubscribe(c->copy_sub);
    mirror_unsubscribe(c->inst_sub);
    c->copy_sub = c->inst_sub = NULL;
    ev_timer_stop(c->loop, &c->close_timer);
    ev_timer_stop(c->loop, &c->check_timer);
    stop_age_timer(c);
    struct lru_node *n;
    while ((n = lru_oldest(c->index)))
        copy_destroy(c, lru_entry(n, struct copy, node));
    cache_free(c->cache);
    lru_free(c->index);
    c->cache = NULL;
    c->index = NULL;
    c->free_requested = true;
    if (c->dispatching == 0)
        destroy(c);
}

static enum copy_state state_of(enum phase p)
{
    switch (p) {
    case P_QUEUED:
        return COPY_PENDING;
    case P_LOADED:
        return COPY_LOADED;
    case P_FAILED:
        return COPY_FAILED;
    default:
        return COPY_LOADING;
    }
}

static void info_of(const struct copy *cp, struct copies_info *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->model_id, cp->id, cp->id_len);
    out->state = state_of(cp->phase);
    out->size_bytes = cp->entry ? cp->entry->size_bytes : 0;
    out->last_used_ms = cp->entry ? cache_entry_last_used(cp->entry) : 0;
    out->inflight = cp->inflight;
}

size_t copies_list(const struct copies *c, bool loaded_only, struct copies_info *out, size_t max)
{
    size_t n = 0;
    for (struct cache_entry *e = cache_newest(c->cache); e; e = cache_older(e)) {
        const struct copy *cp = e->user;
        if (!cp || (loaded_only && cp->phase != P_LOADED))
            continue;
        if (n < max)
            info_of(cp, &out[n]);
        n++;
    }
    return n;
}

int copies_get(const struct copies *c, const char *model_id, size_t len, struct copies_info *out)
{
    const struct copy *cp = find(c, model_id, len);
    if (!cp || !held_phase(cp->phase))
        return -ENOENT;
    if (out)
        info_of(cp, out);
    return 0;
}

int copies_request_begin(struct copies *c, const char *model_id, size_t len, int64_t now_ms_)
{
    struct cache_entry *e = cache_find(c->cache, model_id, len);
    struct copy *cp = e ? e->user : NULL;
    if (!cp || cp->phase != P_LOADED)
        return -ENOENT;
    cp->inflight++;
    e->inflight = cp->inflight;
    cache_touch(c->cache, e, now_ms_);
    return 0;
}

void copies_request_end(struct copies *c, const char *model_id, size_t len)
{
    struct copy *cp = find(c, model_id, len);
    if (!cp || cp->inflight == 0)
        return;
    cp->inflight--;
    if (cp->entry)
        cp->entry->inflight = cp->inflight;
    if (cp->inflight == 0 && cp->phase == P_UNLOADING && cp->runtime_holds && !cp->unload_req)
        unload_send(cp); /* the last request of a dropped copy */
}

/* ---------------------------------------------------------------- shutdown */

static void finish_close(struct copies *c, int status)
{
    if (!c->done)
        return;
    void (*done)(int, void *) = c->done;
    c->done = NULL;
    ev_timer_stop(c->loop, &c->close_timer);
    ev_timer_stop(c->loop, &c->check_timer);
    c->dispatching++;
    done(status, c->done_arg);
    c->dispatching--;
    if (c->free_requested && c->dispatching == 0)
        destroy(c);
}

static void check_closed(struct copies *c)
{
    if (!c->done || ev_is_active(&c->check_timer))
        return;
    /* From the loop: never inside copies_unload_all, nor inside a copy's own callback. */
    ev_timer_set(&c->check_timer, 0., 0.);
    ev_timer_start(c->loop, &c->check_timer);
}

static void on_check_closed(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct copies *c = t->data;
    for (struct lru_node *n = lru_oldest(c->index); n; n = lru_newer(n)) {
        struct copy *cp = lru_entry(n, struct copy, node);
        if (cp->runtime_holds || cp->unload_req || held_phase(cp->phase))
            return; /* released() checks again */
    }
    finish_close(c, 0);
}

static void on_close_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct copies *c = t->data;
    mm_log(MM_LOG_WARN, WHO, "unloading every copy took over the time given");
    finish_close(c, -ETIMEDOUT);
}

int copies_unload_all(struct copies *c, unsigned timeout_ms, void (*done)(int status, void *arg),
                      void *arg)
{
    if (c->closing)
        return -EALREADY;
    if (!done || timeout_ms == 0)
        return -EINVAL;
    c->closing = true;
    c->done = done;
    c->done_arg = arg;
    ev_set_cb(&c->close_timer, on_close_timeout);
    c->close_timer.data = c;
    ev_timer_set(&c->close_timer, timeout_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &c->close_timer);
    ev_set_cb(&c->check_timer, on_check_closed);
    c->check_timer.data = c;
    /* Newest first, as the order of the moves away; the queue goes first (nothing to unload). */
    while (c->queue_head)
        drop(c->queue_head, true, "the node is shutting down");
    struct lru_node *n = lru_oldest(c->index);
    while (n) {
        struct lru_node *next = lru_newer(n);
        struct copy *cp = lru_entry(n, struct copy, node);
        if (held_phase(cp->phase))
            drop(cp, true, "the node is shutting down");
        n = next;
    }
    check_closed(c);
    return 0;
}

void copies_get_stats(const struct copies *c, struct copies_stats *out)
{
    *out = c->stats;
}
