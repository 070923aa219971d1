/* lease.c - keeps one etcd lease alive on the loop (see lease.h). */
#include "mm/lease.h"

#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#include "mm/etcd.h"
#include "mm/log.h"

#define RETRY_S 0.5 /* between failed grant / keep-alive attempts */

struct lease {
    struct etcd_client *c;
    struct ev_loop *loop;
    int64_t ttl_s;
    int64_t id;
    ev_tstamp confirmed_at;  /* send time of the last keep-alive (or grant) etcd confirmed */
    ev_timer timer;          /* next grant or keep-alive */
    bool in_flight;
    bool closing;            /* lease_free called while a request was in flight */
    lease_cb cb;
    void *arg;
};

static void schedule(struct lease *l, double after)
{
    ev_timer_stop(l->loop, &l->timer);
    ev_timer_set(&l->timer, after, 0.);
    ev_timer_start(l->loop, &l->timer);
}

static void lost(struct lease *l, const struct mm_error *err)
{
    int64_t old = l->id;
    l->id = 0;
    mm_log(MM_LOG_WARN, "lease", "lease %" PRId64 " lost: %s", old, err ? err->msg : "expired");
    l->cb(l, LEASE_LOST, err, l->arg);
}

struct attempt {
    struct lease *l;
    ev_tstamp sent_at;
};

static void on_reply(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct attempt *a = arg;
    struct lease *l = a->l;
    ev_tstamp sent_at = a->sent_at;
    free(a);
    l->in_flight = false;
    if (l->closing) {
        free(l);
        return;
    }
    ev_tstamp now = ev_now(l->loop);
    if (l->id == 0) { /* a grant */
        if (status < 0) {
            mm_log(MM_LOG_WARN, "lease", "grant failed, retrying: %s", err->msg);
            schedule(l, RETRY_S);
            return;
        }
        l->id = resp->lease_id;
        l->confirmed_at = sent_at;
        schedule(l, (double)l->ttl_s / 3.0);
        l->cb(l, LEASE_GRANTED, NULL, l->arg);
        return;
    }
    if (status == -ENOENT) { /* etcd says it is gone: keys went with it */
        lost(l, err);
        schedule(l, 0.);
        return;
    }
    if (status < 0) {
        if (now - l->confirmed_at >= (double)l->ttl_s) {
            lost(l, err);
            schedule(l, RETRY_S);
        } else {
            schedule(l, RETRY_S);
        }
        return;
    }
    l->confirmed_at = sent_at;
    schedule(l, (double)l->ttl_s / 3.0);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lease *l = w->data;
    if (l->in_flight)
        return;
    if (l->id && ev_now(loop) - l->confirmed_at >= (double)l->ttl_s) {
        struct mm_error err;
        mm_error_set(&err, -ETIMEDOUT, "lease %" PRId64 ": no keep-alive confirmed for %" PRId64
                     " s", l->id, l->ttl_s);
        lost(l, &err);
    }
    struct attempt *a = malloc(sizeof(*a));
    if (!a) {
        schedule(l, RETRY_S);
        return;
    }
    a->l = l;
    a->sent_at = ev_now(loop);
    int rc = l->id ? etcd_lease_keepalive(l->c, l->id, on_reply, a)
                   : etcd_lease_grant(l->c, l->ttl_s, 0, on_reply, a);
    if (rc < 0) {
        free(a);
        schedule(l, RETRY_S);
        return;
    }
    l->in_flight = true;
}

int lease_new(struct etcd_client *c, int64_t ttl_s, lease_cb cb, void *arg, struct lease **out,
              struct mm_error *err)
{
    if (ttl_s < 2 || !cb)
        return mm_error_set(err, -EINVAL, "lease: ttl must be >= 2 s (got %" PRId64 ")", ttl_s);
    struct lease *l = calloc(1, sizeof(*l));
    if (!l)
        return mm_error_set(err, -ENOMEM, "lease: out of memory");
    l->c = c;
    l->loop = etcd_client_loop(c);
    l->ttl_s = ttl_s;
    l->cb = cb;
    l->arg = arg;
    ev_init(&l->timer, on_timer);
    l->timer.data = l;
    schedule(l, 0.);
    *out = l;
    return 0;
}

int64_t lease_id(const struct lease *l)
{
    return l->id;
}

static void ignore_reply(int status, const struct mm_error *err, struct etcd_response *resp,
                         void *arg)
{
}

void lease_free(struct lease *l, bool revoke)
{
    if (!l)
        return;
    ev_timer_stop(l->loop, &l->timer);
    if (revoke && l->id)
        etcd_lease_revoke(l->c, l->id, ignore_reply, NULL);
    if (l->in_flight) { /* the reply callback frees it */
        l->closing = true;
        return;
    }
    free(l);
}
