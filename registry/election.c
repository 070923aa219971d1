/* election.c - leader election on a lease (see election.h). */
#include "mm/election.h"

#include <bsd/string.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/etcd.h"
#include "mm/lease.h"
#include "mm/log.h"
#include "mm/records.h"

#define RETRY_S 0.5

struct election {
    struct etcd_client *c;
    struct ev_loop *loop;
    char *key;
    char *identity;
    struct lease *lease;
    struct etcd_watch *watch;
    struct etcd_request *txn;       /* the campaign in flight */
    ev_timer retry;
    bool leader;
    int dispatching;                /* depth of calls into the owner */
    bool free_requested;            /* election_free called from inside one */
    char leader_id[sizeof(((struct election_record *)0)->leader)];
    election_cb cb;
    void *arg;
};

static void campaign(struct election *e);

static void destroy(struct election *e)
{
    free(e->key);
    free(e->identity);
    free(e);
}

/* Record the state and tell the owner of a change; false if the owner freed the election
 * meanwhile (then it is gone: touch nothing). */
static bool set_state(struct election *e, bool leader, const char *who)
{
    bool changed = e->leader != leader || strcmp(e->leader_id, who) != 0;
    e->leader = leader;
    strlcpy(e->leader_id, who, sizeof(e->leader_id));
    if (!changed)
        return true;
    e->dispatching++;
    e->cb(e, leader ? ELECTION_LEADER : ELECTION_FOLLOWER, e->arg);
    e->dispatching--;
    if (e->free_requested) {
        if (e->dispatching == 0)
            destroy(e);
        return false;
    }
    return true;
}

/* The leader named by a key's value; "" (unknown) if the value is not an election record. */
static void leader_of(const struct election *e, const struct etcd_kv *kv, char *out, size_t size)
{
    struct election_record rec;
    struct mm_error err;
    if (record_decode(RECORD_ELECTION, kv->value, kv->value_len, &rec, &err) < 0) {
        mm_log(MM_LOG_WARN, "election", "%s: %s", e->key, err.msg);
        rec.leader[0] = '\0';
    }
    strlcpy(out, rec.leader, size);
}

static void retry_later(struct election *e)
{
    etcd_watch_free(e->watch);
    e->watch = NULL;
    ev_timer_stop(e->loop, &e->retry);
    ev_timer_set(&e->retry, RETRY_S, 0.);
    ev_timer_start(e->loop, &e->retry);
}

static void on_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                     const struct etcd_watch_batch *batch, int64_t compact_revision, void *arg)
{
    struct election *e = arg;
    if (status < 0) {
        retry_later(e); /* re-reads the key: nothing is missed */
        return;
    }
    for (size_t i = 0; i < batch->n_events; i++) {
        const struct etcd_event *ev = &batch->events[i];
        if (ev->type == ETCD_EVENT_DELETE) {
            if (!set_state(e, false, ""))
                return;
            etcd_watch_free(e->watch);
            e->watch = NULL;
            campaign(e);
            return;
        }
        char who[sizeof(e->leader_id)];
        leader_of(e, &ev->kv, who, sizeof(who));
        if (!set_state(e, ev->kv.lease == lease_id(e->lease) && lease_id(e->lease) != 0, who))
            return;
    }
}

static void watch_from(struct election *e, int64_t revision)
{
    etcd_watch_free(e->watch);
    e->watch = NULL;
    struct etcd_watch_req req = {.key = e->key, .start_revision = revision};
    if (etcd_watch_start(e->c, &req, on_watch, e, &e->watch) < 0)
        retry_later(e);
}

static void on_txn(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct election *e = arg;
    e->txn = NULL; /* the handle is spent once its callback runs */
    if (status == -ECANCELED)
        return; /* the client is closing */
    if (status < 0) {
        mm_log(MM_LOG_WARN, "election", "campaign for %s: %s", e->key, err->msg);
        retry_later(e);
        return;
    }
    if (resp->succeeded) {
        if (!set_state(e, true, e->identity))
            return;
    } else {
        const struct etcd_op_result *r = resp->n_results ? &resp->results[0] : NULL;
        if (!r || r->n_kvs == 0) { /* deleted between compare and read: try again */
            campaign(e);
            return;
        }
        char who[sizeof(e->leader_id)];
        leader_of(e, &r->kvs[0], who, sizeof(who));
        if (!set_state(e, r->kvs[0].lease == lease_id(e->lease), who))
            return;
    }
    watch_from(e, resp->revision + 1);
}

static void campaign(struct election *e)
{
    int64_t lease = lease_id(e->lease);
    if (e->txn || lease == 0)
        return; /* the next LEASE_GRANTED campaigns */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct election_record rec = {.since_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000};
    strlcpy(rec.leader, e->identity, sizeof(rec.leader));
    char *value = record_encode(RECORD_ELECTION, &rec);
    if (!value) {
        retry_later(e);
        return;
    }
    struct etcd_compare cmp = {.key = e->key, .target = ETCD_CMP_CREATE,
                               .result = ETCD_CMP_EQUAL, .number = 0};
    struct etcd_op put = {.kind = ETCD_OP_PUT, .key = e->key, .value = value, .lease = lease};
    struct etcd_op get = {.kind = ETCD_OP_RANGE, .key = e->key};
    struct etcd_txn txn = {&cmp, 1, &put, 1, &get, 1};
    int rc = etcd_txn(e->c, &txn, on_txn, e, &e->txn);
    free(value);
    if (rc < 0) {
        e->txn = NULL;
        retry_later(e);
    }
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    campaign(w->data);
}

static void on_lease(struct lease *l, enum lease_state state, const struct mm_error *err,
                     void *arg)
{
    struct election *e = arg;
    if (state == LEASE_LOST) {
        etcd_watch_free(e->watch);
        e->watch = NULL;
        if (e->leader)
            set_state(e, false, "");
        return;
    }
    campaign(e);
}

int election_new(struct etcd_client *c, const char *key, const char *identity, int64_t ttl_s,
                 election_cb cb, void *arg, struct election **out, struct mm_error *err)
{
    if (!key || !key[0] || !identity || !identity[0] || !cb)
        return mm_error_set(err, -EINVAL, "election: key, identity and callback are required");
    if (strlen(identity) >= sizeof(((struct election *)0)->leader_id))
        return mm_error_set(err, -EINVAL, "election: identity is %zu bytes, the limit is %zu",
                            strlen(identity), sizeof(((struct election *)0)->leader_id) - 1);
    struct election *e = calloc(1, sizeof(*e));
    if (!e)
        return mm_error_set(err, -ENOMEM, "election: out of memory");
    e->c = c;
    e->loop = etcd_client_loop(c);
    e->key = strdup(key);
    e->identity = strdup(identity);
    e->cb = cb;
    e->arg = arg;
    ev_init(&e->retry, on_retry);
    e->retry.data = e;
    int rc;
    if (!e->key || !e->identity) {
        rc = mm_error_set(err, -ENOMEM, "election: out of memory");
        goto fail;
    }
    rc = lease_new(c, ttl_s, on_lease, e, &e->lease, err);
    if (rc < 0)
        goto fail;
    *out = e;
    return 0;
fail:
    destroy(e);
    return rc;
}

bool election_is_leader(const struct election *e)
{
    return e->leader;
}

const char *election_leader(const struct election *e)
{
    return e->leader_id;
}

void election_free(struct election *e)
{
    if (!e || e->free_requested)
        return;
    ev_timer_stop(e->loop, &e->retry);
    etcd_request_cancel(e->txn); /* its callback never runs */
    e->txn = NULL;
    etcd_watch_free(e->watch);   /* allowed inside the watch's own callback */
    e->watch = NULL;
    lease_free(e->lease, true);  /* revoking deletes our key: followers campaign at once */
    e->lease = NULL;
    if (e->dispatching) {        /* inside our call into the owner: set_state() frees it */
        e->free_requested = true;
        return;
    }
    destroy(e);
}
