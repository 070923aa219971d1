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
    ev_tstamp confirmed_at;       /* send time of the last keep-alive (or grant) etcd confirmed */
    ev_tstamp sent_at;            /* send time of the request in flight */
    ev_timer timer;               /* next grant or keep-alive */
    struct etcd_request *req;     /* the grant or keep-alive in flight */
    int dispatching;              /* depth of calls into the owner */
    bool free_requested;          /* lease_free called from inside one */
    lease_cb cb;
    void *arg;
};

static void schedule(struct lease *l, double after)
{
    ev_timer_stop(l->loop, &l->timer);
    ev_timer_set(&l->timer, after, 0.);
    ev_timer_start(l->loop, &l->timer);
}

/* Tell the owner; false if it freed the lease meanwhile (then it is gone: touch nothing). */
static bool notify(struct lease *l, enum lease_state state, const struct mm_error *err)
{
    l->dispatching++;
    l->cb(l, state, err, l->arg);
    l->dispatching--;
    if (l->free_requested) {
        if (l->dispatching == 0)
            free(l);
        return false;
    }
    return true;
}

static bool lost(struct lease *l, const struct mm_error *err)
{
    int64_t old = l->id;
    l->id = 0;
    mm_log(MM_LOG_WARN, "lease", "lease %" PRId64 " lost: %s", old, err ? err->msg : "expired");
    return notify(l, LEASE_LOST, err);
}

static void on_reply(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct lease *l = arg;
    l->req = NULL; /* the handle is spent once its callback runs */
    if (status == -ECANCELED)
        return; /* the client is closing: nothing more to send */
    ev_tstamp now = ev_now(l->loop);
    if (l->id == 0) { /* a grant */
        if (status < 0) {
            mm_log(MM_LOG_WARN, "lease", "grant failed, retrying: %s", err->msg);
            schedule(l, RETRY_S);
            return;
        }
        l->id = resp->lease_id;
        l->confirmed_at = l->sent_at;
        schedule(l, (double)l->ttl_s / 3.0);
        notify(l, LEASE_GRANTED, NULL);
        return;
    }
    if (status == -ENOENT) { /* etcd says it is gone: keys went with it */
        if (lost(l, err))
            schedule(l, 0.);
        return;
    }
    if (status < 0) {
        if (now - l->confirmed_at >= (double)l->ttl_s && !lost(l, err))
            return;
        schedule(l, RETRY_S);
        return;
    }
    l->confirmed_at = l->sent_at;
    schedule(l, (double)l->ttl_s / 3.0);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lease *l = w->data;
    if (l->req)
        return;
    if (l->id && ev_now(loop) - l->confirmed_at >= (double)l->ttl_s) {
        struct mm_error err;
        mm_error_set(&err, -ETIMEDOUT, "lease %" PRId64 ": no keep-alive confirmed for %" PRId64
                     " s", l->id, l->ttl_s);
        if (!lost(l, &err))
            return;
    }
    l->sent_at = ev_now(loop);
    int rc = l->id ? etcd_lease_keepalive(l->c, l->id, on_reply, l, &l->req)
                   : etcd_lease_grant(l->c, l->ttl_s, 0, on_reply, l, &l->req);
    if (rc < 0) {
        l->req = NULL;
        schedule(l, RETRY_S);
    }
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
    if (!l || l->free_requested)
        return;
    ev_timer_stop(l->loop, &l->timer);
    etcd_request_cancel(l->req); /* its callback never runs: nothing calls back into us */
    l->req = NULL;
    if (revoke && l->id) /* sent and not waited for; its callback touches nothing of ours */
        etcd_lease_revoke(l->c, l->id, ignore_reply, NULL, NULL);
    if (l->dispatching) { /* inside our call into the owner: notify() frees it */
        l->free_requested = true;
        return;
    }
    free(l);
}
