/* test_lifetime.c - the lifetime rule on a real etcd: an owner may free the object from inside
 * that object's own callback. Frees, each from inside the callback: a lease (on LEASE_GRANTED,
 * on LEASE_LOST after etcd says the lease is gone, on LEASE_LOST after no keep-alive was
 * confirmed for a TTL), an election (as leader, as follower, on a watch event), an etcd client
 * (from a request callback, from a watch callback). Meant for the ASan build: a use after the
 * free is a heap-use-after-free there; a leak is reported at exit. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "harness.h"
#include "mm/election.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/lease.h"

static struct ev_loop *loop;
static const char *endpoint;

static struct etcd_client *client(unsigned request_timeout_ms)
{
    struct etcd_config cfg = {.endpoints = endpoint, .request_timeout_ms = request_timeout_ms};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (etcd_client_new(loop, &cfg, &c, &err) < 0) {
        fprintf(stderr, "client: %s\n", err.msg);
        exit(1);
    }
    return c;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

/* ---------------------------------------------------------------- lease */

struct lease_case {
    enum lease_state free_on;
    int64_t id;       /* the lease id seen on LEASE_GRANTED */
    bool granted;
    bool freed;
};

static void lease_frees_itself(struct lease *l, enum lease_state state, const struct mm_error *err,
                               void *arg)
{
    struct lease_case *lc = arg;
    if (state == LEASE_GRANTED) {
        lc->granted = true;
        lc->id = lease_id(l);
    }
    if (state == lc->free_on) {
        lc->freed = true;
        lease_free(l, false);
    }
}

static void test_lease_freed_when_granted(struct etcd_client *c)
{
    struct lease_case lc = {.free_on = LEASE_GRANTED};
    struct lease *l = NULL;
    struct mm_error err = {0};
    REQUIRE(lease_new(c, 2, lease_frees_itself, &lc, &l, &err) == 0);
    CHECK(harness_run_until(loop, flag_set, &lc.freed, 5000));
    harness_run_until(loop, NULL, NULL, 1000); /* its timer must not fire any more */
}

/* etcd says the lease is gone (revoked behind the keeper's back): LEASE_LOST comes from the
 * keep-alive reply. */
static void test_lease_freed_when_revoked(struct etcd_client *c)
{
    struct lease_case lc = {.free_on = LEASE_LOST};
    struct lease *l = NULL;
    struct mm_error err = {0};
    REQUIRE(lease_new(c, 2, lease_frees_itself, &lc, &l, &err) == 0);
    REQUIRE(harness_run_until(loop, flag_set, &lc.granted, 5000));
    CHECK_INT(etcd_sync_lease_revoke(c, lc.id, &err), 0);
    CHECK(harness_run_until(loop, flag_set, &lc.freed, 5000));
    harness_run_until(loop, NULL, NULL, 1000);
}

/* etcd frozen for longer than the TTL: LEASE_LOST comes from the keeper's own clock. */
static void test_lease_freed_when_unconfirmed(struct harness_etcd *e)
{
    struct etcd_client *c = client(400);
    struct lease_case lc = {.free_on = LEASE_LOST};
    struct lease *l = NULL;
    struct mm_error err = {0};
    REQUIRE(lease_new(c, 2, lease_frees_itself, &lc, &l, &err) == 0);
    REQUIRE(harness_run_until(loop, flag_set, &lc.granted, 5000));
    kill(e->pid, SIGSTOP);
    CHECK(harness_run_until(loop, flag_set, &lc.freed, 6000));
    kill(e->pid, SIGCONT);
    harness_run_until(loop, NULL, NULL, 500);
    etcd_client_free(c);
}

/* ---------------------------------------------------------------- election */

struct candidate {
    struct election *e;
    bool free_as_leader;     /* free on ELECTION_LEADER */
    bool free_as_follower;   /* free on the first ELECTION_FOLLOWER naming a leader */
    bool free_on_vacancy;    /* free on ELECTION_FOLLOWER with no leader (the key deleted) */
    bool freed;
    bool following;
};

static void candidate_cb(struct election *e, enum election_state state, void *arg)
{
    struct candidate *cd = arg;
    bool free_now = false;
    if (state == ELECTION_LEADER)
        free_now = cd->free_as_leader;
    else if (election_leader(e)[0]) {
        cd->following = true;
        free_now = cd->free_as_follower;
    } else {
        free_now = cd->free_on_vacancy;
    }
    if (free_now) {
        cd->freed = true;
        cd->e = NULL;
        election_free(e);
    }
}

static bool is_leader(void *arg)
{
    struct candidate *cd = arg;
    return cd->e && election_is_leader(cd->e);
}

static bool is_following(void *arg)
{
    return ((struct candidate *)arg)->following;
}

static void test_election_freed(struct etcd_client *c)
{
    struct mm_error err = {0};
    /* Freed on becoming leader (the campaign txn's reply). */
    struct candidate first = {.free_as_leader = true};
    REQUIRE(election_new(c, "/t/life/e1", "one", 2, candidate_cb, &first, &first.e, &err) == 0);
    CHECK(harness_run_until(loop, flag_set, &first.freed, 5000));

    /* A leader that stays, a follower freed when it learns who leads (the txn's read), and
     * one freed when the key goes (a watch event). */
    struct candidate leader = {0};
    REQUIRE(election_new(c, "/t/life/e2", "leader", 2, candidate_cb, &leader, &leader.e,
                         &err) == 0);
    REQUIRE(harness_run_until(loop, is_leader, &leader, 5000));
    struct candidate follower = {.free_as_follower = true};
    REQUIRE(election_new(c, "/t/life/e2", "follower", 2, candidate_cb, &follower, &follower.e,
                         &err) == 0);
    CHECK(harness_run_until(loop, flag_set, &follower.freed, 5000));
    struct candidate watcher = {.free_on_vacancy = true};
    REQUIRE(election_new(c, "/t/life/e2", "watcher", 2, candidate_cb, &watcher, &watcher.e,
                         &err) == 0);
    REQUIRE(harness_run_until(loop, is_following, &watcher, 5000));
    harness_run_until(loop, NULL, NULL, 300); /* its watch is in place */
    election_free(leader.e); /* resign: the key is deleted, the watcher sees it */
    CHECK(harness_run_until(loop, flag_set, &watcher.freed, 5000));
    harness_run_until(loop, NULL, NULL, 500);
}

/* ---------------------------------------------------------------- etcd client */

struct client_case {
    struct etcd_client *c;
    int calls;
};

static void request_frees_client(int status, const struct mm_error *err,
                                 struct etcd_response *resp, void *arg)
{
    struct client_case *cc = arg;
    cc->calls++;
    etcd_client_free(cc->c); /* with a second request still pending: it is cancelled */
    cc->c = NULL;
}

static void second_request(int status, const struct mm_error *err, struct etcd_response *resp,
                           void *arg)
{
    struct client_case *cc = arg;
    cc->calls++;
    if (cc->c) { /* the first answer may come second: then this one frees */
        etcd_client_free(cc->c);
        cc->c = NULL;
    }
}

static bool client_gone(void *arg)
{
    return ((struct client_case *)arg)->c == NULL;
}

static void watch_frees_client(struct etcd_watch *w, int status, const struct mm_error *err,
                               const struct etcd_watch_batch *batch, int64_t compact_revision,
                               void *arg)
{
    struct client_case *cc = arg;
    cc->calls++;
    if (cc->c && batch->n_events > 0) {
        etcd_client_free(cc->c); /* the watch goes with it; it must not be freed again */
        cc->c = NULL;
    }
}

static void test_client_freed(void)
{
    struct client_case cc = {.c = client(0)};
    struct etcd_range_req req = {.key = "/t/life/none"};
    REQUIRE(etcd_range(cc.c, &req, request_frees_client, &cc, NULL) == 0);
    REQUIRE(etcd_range(cc.c, &req, second_request, &cc, NULL) == 0);
    CHECK(harness_run_until(loop, client_gone, &cc, 5000));
    CHECK_INT(cc.calls, 2); /* the one that freed, and the other (answered or cancelled) */
    harness_run_until(loop, NULL, NULL, 300);

    /* A watch callback frees the client while the batch is being delivered, with another
     * event of the same read still to come. */
    struct client_case wc = {.c = client(0)};
    struct etcd_client *writer = client(0);
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/t/life/w/", .prefix = true};
    REQUIRE(etcd_watch_start(wc.c, &wr, watch_frees_client, &wc, &w) == 0);
    REQUIRE(harness_run_until(loop, flag_set, &(bool){true}, 10));
    harness_run_until(loop, NULL, NULL, 300);
    struct mm_error err = {0};
    struct etcd_op puts[2] = {{.kind = ETCD_OP_PUT, .key = "/t/life/w/a", .value = "1"},
                              {.kind = ETCD_OP_PUT, .key = "/t/life/w/b", .value = "2"}};
    struct etcd_txn txn = {.success = puts, .n_success = 2};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_txn(writer, &txn, &r, &err), 0);
    etcd_response_free(r);
    CHECK_INT(etcd_sync_put(writer, "/t/life/w/c", "3", 0, NULL, &err), 0);
    CHECK(harness_run_until(loop, client_gone, &wc, 5000));
    harness_run_until(loop, NULL, NULL, 300);
    etcd_client_free(writer);
}

static struct etcd_client *shared;
static struct harness_etcd etcd;

static void lease_granted_case(void) { test_lease_freed_when_granted(shared); }
static void lease_revoked_case(void) { test_lease_freed_when_revoked(shared); }
static void lease_unconfirmed_case(void) { test_lease_freed_when_unconfirmed(&etcd); }
static void election_case(void) { test_election_freed(shared); }

static const struct {
    const char *name;
    void (*run)(void);
} cases[] = {
    {"lease-granted", lease_granted_case},
    {"lease-revoked", lease_revoked_case},
    {"election", election_case},
    {"client", test_client_freed},
    {"lease-unconfirmed", lease_unconfirmed_case},
};

/* No argument: every case; otherwise the cases named (to see each one fail on its own). */
int main(int argc, char **argv)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    endpoint = etcd.endpoint;
    shared = client(0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted |= strcmp(argv[a], cases[i].name) == 0;
        if (wanted) {
            fprintf(stderr, "case %s\n", cases[i].name);
            cases[i].run();
        }
    }
    etcd_client_free(shared);
    harness_etcd_cleanup(&etcd);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
