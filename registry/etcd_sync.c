/* etcd_sync.c - synchronous etcd calls for CLIs and tests (see etcd_sync.h): start the
 * asynchronous request, run the loop until its callback, cancel it on giving up. */
#include "mm/etcd_sync.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_impl.h"

struct sync_ctx {
    bool done;
    int status;
    struct mm_error err;
    struct etcd_response *resp;
    struct etcd_request *req;
};

static void sync_cb(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct sync_ctx *s = arg;
    s->done = true;
    s->status = status;
    if (status < 0 && err)
        s->err = *err;
    if (resp) {
        etcd_response_keep(resp);
        s->resp = resp;
    }
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
}

int etcd_sync_wait(struct etcd_client *c, const bool *done, unsigned timeout_ms)
{
    /* The caller may not have run the loop for a while (a test that slept): measure from now,
     * not from the loop's last iteration, or the wait ends before it began. */
    ev_now_update(c->loop);
    ev_timer deadline;
    ev_timer_init(&deadline, wake_cb, (double)timeout_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &deadline);
    ev_tstamp end = ev_now(c->loop) + (double)timeout_ms / 1000.0;
    while (!*done) {
        ev_run(c->loop, EVRUN_ONCE);
        if (!*done && ev_now(c->loop) >= end)
            break;
    }
    ev_timer_stop(c->loop, &deadline);
    return *done ? 0 : -ETIMEDOUT;
}

/* How long one request may take: its deadline on each endpoint, plus a second for failover;
 * twice that when a token has to be fetched first. */
static unsigned request_bound(const struct etcd_client *c)
{
    unsigned bound = c->request_timeout_ms * (unsigned)c->n_endpoints + 1000;
    return c->user ? bound * 2 : bound;
}

/* Wait for the request started with rc; on giving up, cancel it. */
static int sync_finish(struct etcd_client *c, int rc, struct sync_ctx *s, struct mm_error *err)
{
    if (rc < 0)
        return mm_error_set(err, rc, "etcd: could not start request: %s", mm_strerror(rc));
    unsigned bound = request_bound(c);
    if (etcd_sync_wait(c, &s->done, bound) < 0) {
        etcd_request_cancel(s->req);
        return mm_error_set(err, -ETIMEDOUT, "etcd %s: no reply within %u ms",
                            etcd_client_endpoint(c), bound);
    }
    if (s->status < 0 && err)
        *err = s->err;
    return s->status;
}

int etcd_sync_range(struct etcd_client *c, const struct etcd_range_req *req,
                    struct etcd_response **out, struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_range(c, req, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && out) {
        *out = s.resp;
        s.resp = NULL;
    }
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_put(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                  int64_t *revision, struct mm_error *err)
{
    struct sync_ctx s = {0};
    size_t len = value ? strlen(value) : 0;
    int rc = sync_finish(c, etcd_put(c, key, value, len, lease, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && revision)
        *revision = s.resp->revision;
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_delete(struct etcd_client *c, const char *key, bool prefix, int64_t *deleted,
                     struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_delete(c, key, prefix, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && deleted)
        *deleted = s.resp->op.deleted;
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_txn(struct etcd_client *c, const struct etcd_txn *txn, struct etcd_response **out,
                  struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_txn(c, txn, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && out) {
        *out = s.resp;
        s.resp = NULL;
    }
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id, struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_lease_grant(c, ttl_s, 0, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && id)
        *id = s.resp->lease_id;
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_lease_revoke(struct etcd_client *c, int64_t id, struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_lease_revoke(c, id, sync_cb, &s, &s.req), &s, err);
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_lease_ttl(struct etcd_client *c, int64_t id, int64_t *ttl, int64_t *granted_ttl,
                        struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_lease_ttl(c, id, sync_cb, &s, &s.req), &s, err);
    if (rc == 0 && ttl)
        *ttl = s.resp->ttl;
    if (rc == 0 && granted_ttl)
        *granted_ttl = s.resp->granted_ttl;
    etcd_response_free(s.resp);
    return rc;
}

int etcd_sync_compact(struct etcd_client *c, int64_t revision, struct mm_error *err)
{
    struct sync_ctx s = {0};
    int rc = sync_finish(c, etcd_compact(c, revision, true, sync_cb, &s, &s.req), &s, err);
    etcd_response_free(s.resp);
    return rc;
}

struct paged_ctx {
    bool done;
    int status;
    struct mm_error err;
    int64_t revision;
    size_t pages; /* page callbacks so far: progress resets the deadline */
    etcd_page_cb on_page;
    void *arg;
};

static int paged_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct paged_ctx *p = arg;
    p->pages++;
    return p->on_page(kvs, n, revision, p->arg);
}

static void paged_done(int status, const struct mm_error *err, int64_t revision, size_t n_keys,
                       void *arg)
{
    struct paged_ctx *p = arg;
    p->done = true;
    p->status = status;
    p->revision = revision;
    if (status < 0 && err)
        p->err = *err;
}

int etcd_sync_range_paged(struct etcd_client *c, const struct etcd_paged_req *req,
                          etcd_page_cb on_page, void *arg, int64_t *revision,
                          struct mm_error *err)
{
    struct paged_ctx p = {.on_page = on_page, .arg = arg};
    struct etcd_request *handle = NULL;
    int rc = etcd_range_paged(c, req, paged_page, paged_done, &p, &handle);
    if (rc < 0)
        return mm_error_set(err, rc, "etcd: could not start a paged range: %s", mm_strerror(rc));
    unsigned bound = request_bound(c);
    for (;;) { /* each page within one request's bound */
        size_t pages = p.pages;
        if (etcd_sync_wait(c, &p.done, bound) == 0)
            break;
        if (p.pages == pages) {
            etcd_request_cancel(handle);
            return mm_error_set(err, -ETIMEDOUT, "etcd %s: no page within %u ms",
                                etcd_client_endpoint(c), bound);
        }
    }
    if (p.status < 0 && err)
        *err = p.err;
    if (p.status == 0 && revision)
        *revision = p.revision;
    return p.status;
}
