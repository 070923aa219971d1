/* instance.c - the node's instance: its id, the wait for its runtime, its record under a lease
 * (see instance.h; the reasons are in docs/node.md). */
#include "mm/instance.h"

#include <bsd/string.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/etcd.h"
#include "mm/keys.h"
#include "mm/lease.h"
#include "mm/log.h"
#include "mm/rpc.h"

#define STATUS_CALL_MAX_MS 5000 /* one runtimeStatus call while waiting for the runtime */
#define WAIT_FIRST_RETRY_MS 100
#define WAIT_MAX_RETRY_MS 1000
#define PUT_FIRST_RETRY_MS 500
#define PUT_MAX_RETRY_MS 5000
#define WATCH_FIRST_RETRY_MS 250
#define WATCH_MAX_RETRY_MS 5000

/* ---------------------------------------------------------------- the id */

int instance_id_choose(const char *given, const char *pod_name, const char *hostname_env,
                       const char *host, char *out, size_t size, const char **source,
                       struct mm_error *err)
{
    const struct {
        const char *value, *source;
    } tries[] = {
        {given, "--instance-id"},
        {pod_name, "POD_NAME"},
        {hostname_env, "HOSTNAME"},
        {host, "the host name"},
    };
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        if (!tries[i].value || !tries[i].value[0])
            continue;
        char what[64];
        snprintf(what, sizeof(what), "instance id (from %s)", tries[i].source);
        int rc = keys_check_name(what, tries[i].value, err);
        if (rc < 0)
            return rc;
        if (strlcpy(out, tries[i].value, size) >= size)
            return mm_error_set(err, -ENAMETOOLONG,
                                "instance id (from %s) is longer than %zu "
                                "bytes",
                                tries[i].source, size - 1);
        if (source)
            *source = tries[i].source;
        return 0;
    }
    return mm_error_set(err, -EINVAL,
                        "no instance id: give --instance-id, or set POD_NAME or "
                        "HOSTNAME");
}

/* ---------------------------------------------------------------- waiting for the runtime */

struct instance_runtime_wait {
    struct spi_client *spi;
    struct ev_loop *loop;
    ev_timer retry;
    ev_tstamp started, deadline;
    unsigned timeout_ms, backoff_ms;
    struct spi_request *req;
    struct mm_error last; /* the last answer that was not READY */
    instance_runtime_cb cb;
    void *arg;
};

static void wait_ask(struct instance_runtime_wait *w);

static void wait_finish(struct instance_runtime_wait *w, const struct spi_runtime_status *st)
{
    instance_runtime_cb cb = w->cb;
    void *arg = w->arg;
    struct mm_error err = {0};
    if (!st)
        mm_error_set(&err, -ETIMEDOUT, "runtime at %s not ready after %u ms: %s",
                     spi_client_target(w->spi), w->timeout_ms,
                     w->last.msg[0] ? w->last.msg : "no answer");
    ev_timer_stop(w->loop, &w->retry);
    free(w); /* the handle is spent once the callback starts */
    cb(st ? 0 : -ETIMEDOUT, st ? NULL : &err, st, arg);
}

/* From the loop: the first ask too, so that the callback never runs inside the call that
 * started the wait. */
static void wait_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    wait_ask(t->data);
}

static void wait_answer(const struct spi_result *res, void *arg)
{
    struct instance_runtime_wait *w = arg;
    w->req = NULL;
    if (res->code == 0 && res->runtime.state == SPI_READY) {
        wait_finish(w, &res->runtime);
        return;
    }
    if (res->code < 0)
        w->last = res->err;
    else
        mm_error_set(&w->last, -EAGAIN, "runtimeStatus at %s: %s", spi_client_target(w->spi),
                     spi_runtime_state_name(res->runtime.state));
    mm_log(MM_LOG_DEBUG, "instance", "runtime not ready yet: %s", w->last.msg);
    ev_tstamp left = w->deadline - ev_time();
    if (left <= 0) {
        wait_finish(w, NULL);
        return;
    }
    double after = w->backoff_ms / 1000.0;
    ev_timer_set(&w->retry, after < left ? after : left, 0.); /* the last ask at the deadline */
    ev_timer_start(w->loop, &w->retry);
    w->backoff_ms = w->backoff_ms * 2 > WAIT_MAX_RETRY_MS ? WAIT_MAX_RETRY_MS : w->backoff_ms * 2;
}

static void wait_ask(struct instance_runtime_wait *w)
{
    double left_ms = (w->deadline - ev_time()) * 1000.0;
    if (left_ms < 1) {
        wait_finish(w, NULL);
        return;
    }
    int64_t call_ms = left_ms > STATUS_CALL_MAX_MS ? STATUS_CALL_MAX_MS : (int64_t)left_ms;
    if (spi_runtime_status(w->spi, call_ms, wait_answer, w, &w->req) < 0) {
        w->req = NULL; /* could not start: try again after the backoff */
        mm_error_set(&w->last, -EIO, "runtimeStatus at %s: the call could not start",
                     spi_client_target(w->spi));
        ev_timer_set(&w->retry, w->backoff_ms / 1000.0, 0.);
        ev_timer_start(w->loop, &w->retry);
    }
}

int instance_wait_runtime(struct spi_client *spi, unsigned timeout_ms, instance_runtime_cb cb,
                          void *arg, struct instance_runtime_wait **out, struct mm_error *err)
{
    if (!spi || !cb || timeout_ms == 0)
        return mm_error_set(err, -EINVAL,
                            "waiting for the runtime: a client, a callback and a "
                            "timeout are required");
    struct instance_runtime_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return mm_error_set(err, -ENOMEM, "waiting for the runtime: out of memory");
    w->spi = spi;
    w->loop = rpc_context_loop(spi_client_context(spi));
    w->timeout_ms = timeout_ms;
    w->backoff_ms = WAIT_FIRST_RETRY_MS;
    w->started = ev_time();
    w->deadline = w->started + timeout_ms / 1000.0;
    w->cb = cb;
    w->arg = arg;
    ev_timer_init(&w->retry, wait_retry, 0., 0.);
    w->retry.data = w;
    ev_timer_start(w->loop, &w->retry);
    if (out)
        *out = w;
    return 0;
}

void instance_wait_cancel(struct instance_runtime_wait *w)
{
    if (!w)
        return;
    ev_timer_stop(w->loop, &w->retry);
    spi_request_cancel(w->req);
    free(w);
}

/* ---------------------------------------------------------------- the registration */

enum close_phase { OPEN, FLUSHING, REVOKING, CLOSED };

struct instance {
    struct etcd_client *c;
    struct ev_loop *loop;
    char key[KEYS_MAX];
    char id[KEYS_NAME_MAX + 1];
    struct instance_record rec; /* as it should be; rec.lease = the live lease (0: none) */
    unsigned min_ms, max_ms;
    int64_t ttl_s;

    struct lease *lease;
    /* What etcd holds, as far as we know: the last put it confirmed, under which lease, at
     * which revision. NULL: nothing of ours (not yet, or found gone). */
    char *published;
    int64_t published_lease, published_rev;
    int64_t registered_lease; /* the last lease INSTANCE_REGISTERED was told of */
    /* The put in flight. */
    struct etcd_request *put_req;
    char *put_json;
    int64_t put_lease;
    uint64_t puts_started;
    int64_t gone_rev; /* the key deleted or overwritten at this revision while a put was in
                         flight and nothing was published: judged when the put's revision is
                         known */
    /* The next put: wanted (pending) at due (loop time). */
    bool pending;
    ev_tstamp due, last_put_at;
    unsigned put_backoff_ms;
    ev_timer publish_timer;

    struct etcd_watch *watch;
    struct etcd_request *check_req; /* the read after the watch starts */
    uint64_t check_puts;            /* puts_started when it was sent */
    bool check_overlaps;            /* a put was in flight when it was sent */
    unsigned watch_backoff_ms;
    ev_timer watch_timer;

    enum close_phase phase;
    struct etcd_request *revoke_req;
    ev_timer close_timer;
    unsigned close_ms;
    instance_done_cb done;
    void *done_arg;

    struct instance_stats stats;
    int dispatching;
    bool free_requested;
    instance_cb cb;
    void *arg;
};

static void want_put(struct instance *in, ev_tstamp due);
static void reassert(struct instance *in, const char *why);
static void start_watch(struct instance *in);
static void revoke_lease(struct instance *in);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void destroy(struct instance *in)
{
    free(in->published);
    free(in->put_json);
    free(in);
}

/* Call the owner; false if it freed the instance meanwhile (then touch nothing). */
static bool notify(struct instance *in, enum instance_event ev, int64_t lease_id)
{
    in->dispatching++;
    in->cb(in, ev, lease_id, in->arg);
    in->dispatching--;
    if (in->free_requested) {
        if (in->dispatching == 0)
            destroy(in);
        return false;
    }
    return true;
}

static void finish_close(struct instance *in, int status, const struct mm_error *err)
{
    if (in->phase == CLOSED)
        return;
    in->phase = CLOSED;
    ev_timer_stop(in->loop, &in->close_timer);
    in->dispatching++;
    in->done(status, err, in->done_arg);
    in->dispatching--;
    if (in->free_requested && in->dispatching == 0)
        destroy(in);
}

static void forget_published(struct instance *in)
{
    free(in->published);
    in->published = NULL;
    in->published_lease = 0;
}

static void arm_publish(struct instance *in)
{
    ev_timer_stop(in->loop, &in->publish_timer);
    if (!in->pending || in->put_req || in->rec.lease == 0)
        return; /* a put in flight re-arms when it ends; a new lease arms it */
    ev_tstamp after = in->due - ev_now(in->loop);
    ev_timer_set(&in->publish_timer, after > 0 ? after : 0., 0.);
    ev_timer_start(in->loop, &in->publish_timer);
}

/* Want a put at due (loop time) or earlier; an earlier wish wins. */
static void want_put(struct instance *in, ev_tstamp due)
{
    if (in->phase >= REVOKING)
        return;
    if (!in->pending || due < in->due)
        in->due = due;
    in->pending = true;
    arm_publish(in);
}

static ev_tstamp soon(const struct instance *in)
{
    return in->last_put_at + in->min_ms / 1000.0;
}

static void on_put(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct instance *in = arg;
    in->put_req = NULL;
    char *json = in->put_json;
    in->put_json = NULL;
    if (status == -ECANCELED) { /* the client is closing */
        free(json);
        return;
    }
    if (status < 0) {
        in->stats.put_failures++;
        mm_log(MM_LOG_WARN, "instance", "put %s failed, retrying in %u ms: %s", in->key,
               in->put_backoff_ms, err->msg);
        free(json);
        in->gone_rev = 0;            /* the retry puts it anyway */
        if (in->phase == FLUSHING) { /* no retries once closing: revoke what we have */
            revoke_lease(in);
            return;
        }
        want_put(in, ev_now(in->loop) + in->put_backoff_ms / 1000.0);
        in->put_backoff_ms =
            in->put_backoff_ms * 2 > PUT_MAX_RETRY_MS ? PUT_MAX_RETRY_MS : in->put_backoff_ms * 2;
        return;
    }
    in->put_backoff_ms = PUT_FIRST_RETRY_MS;
    in->stats.puts++;
    if (in->put_lease == in->rec.lease) { /* else put under a lease lost meanwhile */
        free(in->published);
        in->published = json;
        in->published_lease = in->put_lease;
        in->published_rev = resp->revision;
    } else {
        free(json);
    }
    bool gone_after = in->gone_rev > in->published_rev && in->published;
    in->gone_rev = 0;
    if (gone_after) /* changed behind the put we were waiting for */
        reassert(in, "changed after our put");
    if (in->phase == FLUSHING && !in->pending) {
        revoke_lease(in);
        return;
    }
    arm_publish(in);
    if (in->published && in->registered_lease != in->published_lease && in->phase == OPEN) {
        in->registered_lease = in->published_lease;
        in->stats.registrations++;
        mm_log(MM_LOG_INFO, "instance", "registered %s under lease %" PRId64, in->key,
               in->put_lease);
        notify(in, INSTANCE_REGISTERED, in->put_lease);
    }
}

static void publish(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct instance *in = t->data;
    if (in->put_req)
        return;
    if (in->phase == FLUSHING && (!in->pending || in->rec.lease == 0)) {
        revoke_lease(in);
        return;
    }
    if (in->rec.lease == 0 || !in->pending)
        return;
    in->pending = false;
    char *json = record_encode(RECORD_INSTANCE, &in->rec);
    if (!json) {
        want_put(in, ev_now(loop) + in->put_backoff_ms / 1000.0);
        return;
    }
    if (in->published && in->published_lease == in->rec.lease &&
        strcmp(json, in->published) == 0) { /* nothing new to say */
        free(json);
        if (in->phase == FLUSHING)
            revoke_lease(in);
        return;
    }
    in->put_json = json;
    in->put_lease = in->rec.lease;
    in->last_put_at = ev_now(loop);
    in->puts_started++;
    int rc = etcd_put(in->c, in->key, json, strlen(json), in->put_lease, on_put, in, &in->put_req);
    if (rc < 0) {
        in->put_req = NULL;
        in->put_json = NULL;
        free(json);
        in->stats.put_failures++;
        want_put(in, ev_now(loop) + in->put_backoff_ms / 1000.0);
    }
}

/* The record is not in etcd as we put it: put it again while the lease lives. */
static void reassert(struct instance *in, const char *why)
{
    if (in->phase != OPEN || !in->published)
        return;
    in->stats.reasserts++;
    mm_log(MM_LOG_WARN, "instance", "%s %s: putting it again", in->key, why);
    forget_published(in);
    want_put(in, soon(in));
}

static bool is_ours(const struct instance *in, const struct etcd_kv *kv)
{
    if (in->published && kv->lease == in->published_lease &&
        kv->value_len == strlen(in->published) &&
        memcmp(kv->value, in->published, kv->value_len) == 0)
        return true;
    return in->put_json && kv->lease == in->put_lease && kv->value_len == strlen(in->put_json) &&
           memcmp(kv->value, in->put_json, kv->value_len) == 0;
}

static void on_check(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct instance *in = arg;
    in->check_req = NULL;
    /* A put sent around the read may have landed before or after it: then the answer says
     * nothing, and the put's own event will. A failed read: the watch says when it breaks. */
    if (status < 0 || in->put_req || in->check_overlaps || in->puts_started != in->check_puts)
        return;
    if (resp->op.n_kvs == 0)
        reassert(in, "is missing");
    else if (!is_ours(in, &resp->op.kvs[0]))
        reassert(in, "holds another value or lease");
}

static void watch_again(struct ev_loop *loop, ev_timer *t, int revents)
{
    start_watch(t->data);
}

static void watch_later(struct instance *in)
{
    ev_timer_set(&in->watch_timer, in->watch_backoff_ms / 1000.0, 0.);
    ev_timer_start(in->loop, &in->watch_timer);
    in->watch_backoff_ms = in->watch_backoff_ms * 2 > WATCH_MAX_RETRY_MS ? WATCH_MAX_RETRY_MS
                                                                         : in->watch_backoff_ms * 2;
}

static void on_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                     const struct etcd_watch_batch *batch, int64_t compact_revision, void *arg)
{
    struct instance *in = arg;
    if (status < 0) {
        etcd_watch_free(w);
        in->watch = NULL;
        mm_log(MM_LOG_DEBUG, "instance", "watch of %s ended, again in %u ms: %s", in->key,
               in->watch_backoff_ms, err ? err->msg : mm_strerror(status));
        watch_later(in);
        return;
    }
    if (batch->created) {
        /* Whatever happened to the key while nobody watched: one read tells. */
        in->watch_backoff_ms = WATCH_FIRST_RETRY_MS;
        if (batch->revision < in->published_rev)
            in->published_rev = 0; /* the store went back (restored): our put is not in it */
        etcd_request_cancel(in->check_req);
        in->check_req = NULL;
        in->check_puts = in->puts_started;
        in->check_overlaps = in->put_req != NULL;
        struct etcd_range_req req = {.key = in->key};
        if (etcd_range(in->c, &req, on_check, in, &in->check_req) < 0)
            in->check_req = NULL;
        return;
    }
    for (size_t i = 0; i < batch->n_events; i++) {
        const struct etcd_event *ev = &batch->events[i];
        if (ev->kv.mod_revision <= in->published_rev)
            continue; /* older than our last put: superseded by it */
        bool gone = ev->type == ETCD_EVENT_DELETE;
        if (!gone && is_ours(in, &ev->kv))
            continue;
        if (!in->published && in->put_req) { /* before or after that put? its reply tells */
            if (ev->kv.mod_revision > in->gone_rev)
                in->gone_rev = ev->kv.mod_revision;
            continue;
        }
        reassert(in, gone ? "was deleted" : "was overwritten");
    }
}

static void start_watch(struct instance *in)
{
    if (in->phase != OPEN || in->watch)
        return;
    struct etcd_watch_req req = {.key = in->key};
    if (etcd_watch_start(in->c, &req, on_watch, in, &in->watch) < 0) {
        in->watch = NULL;
        watch_later(in);
    }
}

static void on_lease(struct lease *l, enum lease_state state, const struct mm_error *err, void *arg)
{
    struct instance *in = arg;
    if (state == LEASE_GRANTED) {
        in->rec.lease = lease_id(l);
        forget_published(in); /* attached to the old lease, if any */
        want_put(in, ev_now(in->loop));
        return;
    }
    int64_t old = in->published_lease ? in->published_lease : in->rec.lease;
    in->rec.lease = 0;
    forget_published(in);
    if (in->phase == OPEN)
        notify(in, INSTANCE_LOST, old);
}

static void close_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct instance *in = t->data;
    etcd_request_cancel(in->put_req);
    in->put_req = NULL;
    etcd_request_cancel(in->revoke_req);
    in->revoke_req = NULL;
    lease_free(in->lease, false);
    in->lease = NULL;
    struct mm_error err;
    mm_error_set(&err, -ETIMEDOUT,
                 "instance %s: deregistering took over %u ms; the record "
                 "goes when its lease expires",
                 in->id, in->close_ms);
    finish_close(in, -ETIMEDOUT, &err);
}

static void on_revoked(int status, const struct mm_error *err, struct etcd_response *resp,
                       void *arg)
{
    struct instance *in = arg;
    in->revoke_req = NULL;
    if (status == -ECANCELED)
        return;
    if (status == -ENOENT) /* already gone: as good as revoked */
        status = 0;
    forget_published(in);
    finish_close(in, status, status < 0 ? err : NULL);
}

static void revoke_lease(struct instance *in)
{
    in->phase = REVOKING;
    in->pending = false;
    ev_timer_stop(in->loop, &in->publish_timer);
    int64_t id = lease_id(in->lease);
    lease_free(in->lease, false); /* we revoke it ourselves, and wait for the answer */
    in->lease = NULL;
    in->rec.lease = 0;
    if (id == 0) {
        finish_close(in, 0, NULL);
        return;
    }
    if (etcd_lease_revoke(in->c, id, on_revoked, in, &in->revoke_req) < 0) {
        in->revoke_req = NULL;
        struct mm_error err;
        mm_error_set(&err, -EIO, "instance %s: cannot send the revoke of lease %" PRId64, in->id,
                     id);
        finish_close(in, -EIO, &err);
    }
}

int instance_close(struct instance *in, unsigned timeout_ms, instance_done_cb done, void *arg)
{
    if (in->phase != OPEN)
        return -EALREADY;
    if (!done || timeout_ms == 0)
        return -EINVAL;
    in->phase = FLUSHING;
    in->done = done;
    in->done_arg = arg;
    in->close_ms = timeout_ms;
    etcd_watch_free(in->watch);
    in->watch = NULL;
    ev_timer_stop(in->loop, &in->watch_timer);
    etcd_request_cancel(in->check_req);
    in->check_req = NULL;
    ev_timer_set(&in->close_timer, timeout_ms / 1000.0, 0.);
    ev_timer_start(in->loop, &in->close_timer);
    if (in->put_req)
        return 0;                       /* on_put goes on */
    if (in->pending && in->rec.lease) { /* publish what is pending now, then revoke */
        in->due = ev_now(in->loop);
        arm_publish(in);
        return 0;
    }
    /* Nothing to flush: revoke from the loop, so that done never runs inside this call. */
    in->pending = false;
    ev_timer_stop(in->loop, &in->publish_timer);
    ev_timer_set(&in->publish_timer, 0., 0.);
    ev_timer_start(in->loop, &in->publish_timer);
    return 0;
}

/* ---------------------------------------------------------------- setup */

static int check_text(const char *id, const char *what, const char *s, size_t max,
                      struct mm_error *err)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return mm_error_set(err, -EINVAL, "instance %s: %s must be 1..%zu bytes", id, what, max);
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f || s[i] == ',' || (unsigned char)s[i] >= 0x80)
            return mm_error_set(err, -EINVAL,
                                "instance %s: %s '%.64s' must be printable ASCII "
                                "without spaces or commas",
                                id, what, s);
    return 0;
}

static int add_label(struct instance_record *r, const char *prefix, const char *name)
{
    for (uint32_t i = 0; i < r->labels.n; i++) /* given twice: once is enough */
        if (strncmp(r->labels.label[i], prefix, 3) == 0 &&
            strcmp(r->labels.label[i] + 3, name) == 0)
            return 0;
    if (r->labels.n == RECORD_LABELS_MAX)
        return -E2BIG;
    snprintf(r->labels.label[r->labels.n++], RECORD_LABEL_BYTES, "%s%s", prefix, name);
    return 0;
}

static void set_figures(struct instance_record *r, const struct instance_figures *f)
{
    r->capacity_bytes = f->capacity_bytes;
    r->used_bytes = f->used_bytes;
    r->loaded_count = f->loaded;
    r->loading_count = f->loading;
    r->lru_oldest_ms = f->lru_oldest_ms;
}

int instance_new(struct etcd_client *c, const struct instance_config *cfg, instance_cb cb,
                 void *arg, struct instance **out, struct mm_error *err)
{
    if (!c || !cfg || !cb || !cfg->runtime)
        return mm_error_set(err, -EINVAL,
                            "instance: client, config, runtime status and "
                            "callback are required");
    int rc = keys_check_name("instance id", cfg->id, err);
    if (rc < 0)
        return rc;
    const char *id = cfg->id;
    size_t label_max = RECORD_LABEL_BYTES - 1 - 3;
    if (!cfg->address || !cfg->address[0] ||
        strlen(cfg->address) >= sizeof(((struct instance_record *)0)->address))
        return mm_error_set(err, -EINVAL,
                            "instance %s: the internal address must be 1..255 "
                            "bytes",
                            id);
    if ((rc = check_text(id, "runtime name", cfg->runtime_name, label_max, err)) < 0)
        return rc;
    if (cfg->n_model_types > INSTANCE_MODEL_TYPES_MAX)
        return mm_error_set(err, -EINVAL, "instance %s: %zu model types, at most %d", id,
                            cfg->n_model_types, INSTANCE_MODEL_TYPES_MAX);
    for (size_t i = 0; i < cfg->n_model_types; i++)
        if ((rc = check_text(id, "model type", cfg->model_types[i], label_max, err)) < 0)
            return rc;
    if (cfg->zone && strlen(cfg->zone) >= sizeof(((struct instance_record *)0)->zone))
        return mm_error_set(err, -EINVAL, "instance %s: zone is longer than 63 bytes", id);
    int64_t ttl = cfg->lease_ttl_s ? cfg->lease_ttl_s : INSTANCE_TTL_S;
    unsigned min_ms = cfg->min_interval_ms ? cfg->min_interval_ms : INSTANCE_MIN_INTERVAL_MS;
    unsigned max_ms = cfg->max_interval_ms ? cfg->max_interval_ms : INSTANCE_MAX_INTERVAL_MS;
    if (ttl < 2)
        return mm_error_set(err, -EINVAL, "instance %s: lease TTL must be >= 2 s", id);
    if (max_ms < min_ms)
        return mm_error_set(err, -EINVAL,
                            "instance %s: the longest interval between puts (%u "
                            "ms) is shorter than the shortest (%u ms)",
                            id, max_ms, min_ms);

    struct instance *in = calloc(1, sizeof(*in));
    if (!in)
        return mm_error_set(err, -ENOMEM, "instance %s: out of memory", id);
    if ((rc = keys_instance(in->key, sizeof(in->key), cfg->cluster, id, err)) < 0) {
        free(in);
        return rc;
    }
    strlcpy(in->id, id, sizeof(in->id));
    in->c = c;
    in->loop = etcd_client_loop(c);
    in->min_ms = min_ms;
    in->max_ms = max_ms;
    in->ttl_s = ttl;
    in->cb = cb;
    in->arg = arg;
    in->put_backoff_ms = PUT_FIRST_RETRY_MS;
    in->watch_backoff_ms = WATCH_FIRST_RETRY_MS;
    in->last_put_at = ev_now(in->loop) - min_ms / 1000.0;

    struct instance_record *r = &in->rec;
    strlcpy(r->address, cfg->address, sizeof(r->address));
    strlcpy(r->runtime, cfg->runtime_name, sizeof(r->runtime));
    strlcpy(r->zone, cfg->zone ? cfg->zone : "", sizeof(r->zone));
    add_label(r, "rt:", cfg->runtime_name);
    for (size_t i = 0; i < cfg->n_model_types; i++)
        add_label(r, "mt:", cfg->model_types[i]);
    set_figures(r, &cfg->figures);
    r->start_ms = now_ms();
    r->loading_threads = cfg->runtime->max_loading_concurrency;
    r->load_timeout_ms = cfg->runtime->load_timeout_ms;
    r->default_model_size_bytes = cfg->runtime->default_model_size_bytes;
    strlcpy(r->version, cfg->version ? cfg->version : "", sizeof(r->version));
    strlcpy(r->runtime_version, cfg->runtime->version, sizeof(r->runtime_version));

    ev_init(&in->publish_timer, publish);
    in->publish_timer.data = in;
    ev_init(&in->watch_timer, watch_again);
    in->watch_timer.data = in;
    ev_init(&in->close_timer, close_timeout);
    in->close_timer.data = in;
    if ((rc = lease_new(c, ttl, on_lease, in, &in->lease, err)) < 0) {
        mm_error_prefix(err, "instance %s: ", id);
        free(in);
        return rc;
    }
    in->pending = true; /* published once the lease is granted */
    in->due = ev_now(in->loop);
    start_watch(in);
    *out = in;
    return 0;
}

static bool significant(const struct instance_record *was, const struct instance_figures *f)
{
    if (f->capacity_bytes != was->capacity_bytes || f->loaded != was->loaded_count ||
        f->loading != was->loading_count)
        return true;
    if ((f->used_bytes == 0) != (was->used_bytes == 0))
        return true;
    uint64_t moved = f->used_bytes > was->used_bytes ? f->used_bytes - was->used_bytes
                                                     : was->used_bytes - f->used_bytes;
    return moved > 0 && moved >= f->capacity_bytes / 100;
}

void instance_update(struct instance *in, const struct instance_figures *f)
{
    if (in->phase != OPEN)
        return;
    /* Judged against what etcd holds or is about to hold: the record being put, else the one
     * last published, else the record as it stands (nothing published yet: a put is wanted
     * anyway). Judging against the last published one while a put is in flight would take a
     * change back to the published figures (a load that started and ended within one put) for
     * no change, and leave the record with the in-flight figures for max_interval_ms. */
    struct instance_record was;
    const char *base = in->put_json ? in->put_json : in->published;
    bool have = base && record_decode(RECORD_INSTANCE, base, strlen(base), &was, NULL) == 0;
    bool sig = significant(have ? &was : &in->rec, f);
    bool changed =
        sig || !have || f->used_bytes != was.used_bytes || f->lru_oldest_ms != was.lru_oldest_ms;
    set_figures(&in->rec, f);
    if (!changed && !in->pending)
        return;
    want_put(in, sig ? soon(in) : in->last_put_at + in->max_ms / 1000.0);
}

void instance_set_shutting_down(struct instance *in)
{
    if (in->phase != OPEN || in->rec.shutting_down)
        return;
    in->rec.shutting_down = true;
    want_put(in, ev_now(in->loop));
}

void instance_free(struct instance *in)
{
    if (!in || in->free_requested)
        return;
    ev_timer_stop(in->loop, &in->publish_timer);
    ev_timer_stop(in->loop, &in->watch_timer);
    ev_timer_stop(in->loop, &in->close_timer);
    etcd_request_cancel(in->put_req);
    in->put_req = NULL;
    etcd_request_cancel(in->check_req);
    in->check_req = NULL;
    etcd_request_cancel(in->revoke_req);
    in->revoke_req = NULL;
    etcd_watch_free(in->watch);
    in->watch = NULL;
    lease_free(in->lease, false);
    in->lease = NULL;
    in->free_requested = true;
    if (in->dispatching == 0)
        destroy(in);
}

int64_t instance_lease_id(const struct instance *in)
{
    return in->lease ? lease_id(in->lease) : 0;
}

const struct instance_record *instance_record_of(const struct instance *in)
{
    return &in->rec;
}

const char *instance_key(const struct instance *in)
{
    return in->key;
}

void instance_get_stats(const struct instance *in, struct instance_stats *out)
{
    *out = in->stats;
}
