/* test_lifetime.c - the lifetime rule on a real etcd: an owner may free the object from inside
 * that object's own callback, and a cancelled request never calls back. Frees, each from inside
 * the callback: a lease (on LEASE_GRANTED, on LEASE_LOST after etcd says the lease is gone, on
 * LEASE_LOST after no keep-alive was confirmed for a TTL), an election (as leader, as follower,
 * on a watch event), an etcd client (from a request callback, a watch callback, a page
 * callback). Cancels: right after the call, from another request's callback, while the request
 * is retried on another endpoint, while it waits for an auth token. Meant for the ASan build: a
 * use after the free is a heap-use-after-free there; a leak is reported at exit. Each case can
 * be run alone: test_lifetime CASE... */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

struct paged_case {
    struct etcd_client *c;
    int pages;
    bool done;
    int status;
};

static int page_frees_client(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct paged_case *pc = arg;
    pc->pages++;
    etcd_client_free(pc->c); /* the range goes on no further: done says -ECANCELED */
    pc->c = NULL;
    return 0;
}

static void paged_done(int status, const struct mm_error *err, int64_t revision, size_t n_keys,
                       void *arg)
{
    struct paged_case *pc = arg;
    pc->done = true;
    pc->status = status;
}

static void test_client_freed_in_page(void)
{
    struct etcd_client *writer = client(0);
    struct mm_error err = {0};
    for (int i = 0; i < 4; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/t/life/p/%d", i);
        CHECK_INT(etcd_sync_put(writer, k, "x", 0, NULL, &err), 0);
    }
    etcd_client_free(writer);
    struct paged_case pc = {.c = client(0)};
    struct etcd_paged_req req = {.key = "/t/life/p/", .range_end = "/t/life/p0", .page_keys = 1};
    REQUIRE(etcd_range_paged(pc.c, &req, page_frees_client, paged_done, &pc, NULL) == 0);
    CHECK(harness_run_until(loop, flag_set, &pc.done, 5000));
    CHECK_INT(pc.status, -ECANCELED);
    CHECK_INT(pc.pages, 1);
    harness_run_until(loop, NULL, NULL, 300);
}

/* ---------------------------------------------------------------- cancellation */

static int called; /* callbacks of requests that were cancelled: must stay 0 */

static void must_not_run(int status, const struct mm_error *err, struct etcd_response *resp,
                         void *arg)
{
    called++;
    fprintf(stderr, "a cancelled request called back: %d %s\n", status, err ? err->msg : "");
}

static int page_must_not_run(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    called++;
    return 0;
}

static void paged_must_not_run(int status, const struct mm_error *err, int64_t revision,
                               size_t n_keys, void *arg)
{
    called++;
}

struct canceller {
    struct etcd_request *victim;
    bool done;
};

static void cancel_other(int status, const struct mm_error *err, struct etcd_response *resp,
                         void *arg)
{
    struct canceller *k = arg;
    etcd_request_cancel(k->victim); /* still in flight, or answered in this same read */
    k->done = true;
}

static bool either_done(void *arg)
{
    struct canceller **k = arg;
    return k[0]->done || k[1]->done;
}

static void test_cancel(void)
{
    struct etcd_client *c = client(0);
    called = 0;
    /* Cancelled right after the call, one of each kind. */
    struct etcd_request *r[7] = {0};
    struct etcd_range_req range = {.key = "/t/cancel/a"};
    struct etcd_op put = {.kind = ETCD_OP_PUT, .key = "/t/cancel/t", .value = "1"};
    struct etcd_txn txn = {.success = &put, .n_success = 1};
    struct etcd_paged_req pages = {.key = "/t/", .range_end = "/t0"};
    REQUIRE(etcd_range(c, &range, must_not_run, NULL, &r[0]) == 0);
    REQUIRE(etcd_put(c, "/t/cancel/a", "1", 1, 0, must_not_run, NULL, &r[1]) == 0);
    REQUIRE(etcd_txn(c, &txn, must_not_run, NULL, &r[2]) == 0);
    REQUIRE(etcd_lease_grant(c, 5, 0, must_not_run, NULL, &r[3]) == 0);
    REQUIRE(etcd_delete(c, "/t/cancel/a", false, must_not_run, NULL, &r[4]) == 0);
    REQUIRE(etcd_compact(c, 1, false, must_not_run, NULL, &r[5]) == 0);
    REQUIRE(etcd_range_paged(c, &pages, page_must_not_run, paged_must_not_run, NULL, &r[6]) == 0);
    for (int i = 0; i < 7; i++)
        etcd_request_cancel(r[i]);
    etcd_request_cancel(NULL); /* a no-op */
    harness_run_until(loop, NULL, NULL, 500);
    CHECK_INT(called, 0);

    /* Cancelled from another request's callback: both sent together, the first to answer
     * cancels the other. */
    struct canceller k1 = {0}, k2 = {0};
    struct etcd_request *a = NULL, *b = NULL;
    REQUIRE(etcd_range(c, &range, cancel_other, &k1, &a) == 0);
    REQUIRE(etcd_range(c, &range, cancel_other, &k2, &b) == 0);
    k1.victim = b;
    k2.victim = a;
    struct canceller *both[2] = {&k1, &k2};
    CHECK(harness_run_until(loop, either_done, both, 5000));
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(k1.done + k2.done, 1); /* exactly one ran: it cancelled the other */

    /* Left pending when the client goes: a cancelled one stays silent. */
    REQUIRE(etcd_range(c, &range, must_not_run, NULL, &r[0]) == 0);
    etcd_request_cancel(r[0]);
    etcd_client_free(c);
    CHECK_INT(called, 0);
}

/* A listening socket never accepted: connections complete in the backlog and requests are sent
 * into it, but nothing answers. Caller closes it. */
static int silent_endpoint(char *url, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    snprintf(url, size, "http://127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

struct endpoint_is {
    struct etcd_client *c;
    const char *url;
};

static bool at_endpoint(void *arg)
{
    struct endpoint_is *e = arg;
    return strcmp(etcd_client_endpoint(e->c), e->url) == 0;
}

/* Cancelled while it is retried: a read times out on a silent endpoint and goes to the next,
 * as silent; cancelled there, it never calls back, and the client still works. */
static void test_cancel_while_retried(void)
{
    char hole1[64], hole2[64], eps[256];
    int fd1 = silent_endpoint(hole1, sizeof(hole1));
    int fd2 = silent_endpoint(hole2, sizeof(hole2));
    REQUIRE(fd1 >= 0 && fd2 >= 0);
    snprintf(eps, sizeof(eps), "%s,%s,%s", hole1, hole2, endpoint);
    struct etcd_config cfg = {.endpoints = eps, .request_timeout_ms = 300};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);
    called = 0;
    struct etcd_request *r = NULL;
    struct etcd_range_req range = {.key = "/t/cancel/a"};
    REQUIRE(etcd_range(c, &range, must_not_run, NULL, &r) == 0);
    struct endpoint_is second = {c, hole2};
    CHECK(harness_run_until(loop, at_endpoint, &second, 2000)); /* first attempt timed out */
    harness_run_until(loop, NULL, NULL, 100);                   /* the second is in flight */
    etcd_request_cancel(r);
    harness_run_until(loop, NULL, NULL, 1000);
    CHECK_INT(called, 0);
    struct etcd_response *resp = NULL;
    CHECK_INT(etcd_sync_range(c, &range, &resp, &err), 0); /* hole2 times out, then live */
    etcd_response_free(resp);
    etcd_client_free(c);
    close(fd1);
    close(fd2);
}

static void watch_must_not_run(struct etcd_watch *w, int status, const struct mm_error *err,
                               const struct etcd_watch_batch *batch, int64_t compact_revision,
                               void *arg)
{
    called++;
}

/* Cancelled while waiting for an auth token: it never calls back; the others that waited with it
 * go on with the token. */
static void test_cancel_waiting_for_auth(void)
{
    struct harness_etcd e = {0};
    REQUIRE(harness_etcd_start(&e, NULL) == 0);
    char cmd[512], out[512];
    snprintf(cmd, sizeof(cmd),
             "set -e; export ETCDCTL_API=3; E=%s; etcdctl --endpoints $E user add root:rootpw "
             ">/dev/null; etcdctl --endpoints $E user grant-role root root >/dev/null; "
             "etcdctl --endpoints $E auth enable >/dev/null",
             e.endpoint);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    struct etcd_config cfg = {.endpoints = e.endpoint, .user = "root", .password = "rootpw"};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);
    called = 0;
    struct etcd_request *r = NULL, *p = NULL;
    struct etcd_range_req range = {.key = "/t/cancel/auth"};
    struct etcd_paged_req pages = {.key = "/t/", .range_end = "/t0"};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/t/cancel/auth"};
    REQUIRE(etcd_range(c, &range, must_not_run, NULL, &r) == 0);
    REQUIRE(etcd_range_paged(c, &pages, page_must_not_run, paged_must_not_run, NULL, &p) == 0);
    REQUIRE(etcd_watch_start(c, &wr, watch_must_not_run, NULL, &w) == 0);
    etcd_request_cancel(r);
    etcd_request_cancel(p);
    etcd_watch_free(w);
    CHECK_INT(etcd_sync_put(c, "/t/cancel/auth", "1", 0, NULL, &err), 0); /* waited as well */
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(called, 0);
    etcd_client_free(c);
    harness_etcd_cleanup(&e);
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
    {"client-paged", test_client_freed_in_page},
    {"cancel", test_cancel},
    {"cancel-retried", test_cancel_while_retried},
    {"cancel-auth", test_cancel_waiting_for_auth},
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
