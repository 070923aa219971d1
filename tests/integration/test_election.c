/* test_election.c - lease keeper and leader election against a real etcd:
 * a kept lease outlives its TTL; a dropped one expires and takes its keys; two candidates elect
 * exactly one leader; the follower takes over when the leader resigns, and when the leader's
 * etcd session dies (its lease expires) - leadership moves within TTL + a margin. */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/election.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/lease.h"

static struct ev_loop *loop;

struct lease_seen {
    int granted;
    int lost;
};

static void on_lease(struct lease *l, enum lease_state state, const struct mm_error *err,
                     void *arg)
{
    struct lease_seen *s = arg;
    if (state == LEASE_GRANTED)
        s->granted++;
    else
        s->lost++;
}

static bool run_until(bool (*cond)(void *), void *arg, long long ms)
{
    return harness_run_until(loop, cond, arg, ms);
}

static void run_for(long long ms)
{
    harness_run_until(loop, NULL, NULL, ms);
}

static bool lease_granted(void *arg)
{
    return ((struct lease_seen *)arg)->granted > 0;
}

static bool lease_regranted(void *arg)
{
    struct lease_seen *s = arg;
    return s->lost > 0 && s->granted >= 2;
}

static int64_t key_count(struct etcd_client *c, const char *key)
{
    struct mm_error err = {0};
    struct etcd_response *r = NULL;
    struct etcd_range_req req = {.key = key, .count_only = true};
    if (etcd_sync_range(c, &req, &r, &err) < 0) {
        fprintf(stderr, "range %s: %s\n", key, err.msg);
        return -1;
    }
    int64_t n = r->op.count;
    etcd_response_free(r);
    return n;
}

static void test_lease_kept_and_dropped(struct etcd_client *c)
{
    struct lease_seen seen = {0};
    struct lease *l = NULL;
    struct mm_error err = {0};
    REQUIRE(lease_new(c, 2, on_lease, &seen, &l, &err) == 0);
    REQUIRE(run_until(lease_granted, &seen, 5000));
    int64_t id = lease_id(l);
    CHECK(id != 0);
    CHECK_INT(etcd_sync_put(c, "/t/lease/kept", "{}", id, NULL, &err), 0);

    /* 3.5 s > TTL: only the keeper's refreshes keep the key alive. */
    run_for(3500);
    CHECK_INT(key_count(c, "/t/lease/kept"), 1);
    CHECK_INT(seen.lost, 0);
    CHECK_INT(lease_id(l), id);

    /* Stop keeping it (no revoke): etcd expires it after the TTL and the key goes. */
    lease_free(l, false);
    long long deadline = harness_now_ms() + 6000;
    while (key_count(c, "/t/lease/kept") != 0 && harness_now_ms() < deadline) {
        bool never = false;
        etcd_sync_wait(c, &never, 100);
    }
    CHECK_INT(key_count(c, "/t/lease/kept"), 0);
}

static void test_lease_revoked_externally(struct etcd_client *c)
{
    struct lease_seen seen = {0};
    struct lease *l = NULL;
    struct mm_error err = {0};
    REQUIRE(lease_new(c, 3, on_lease, &seen, &l, &err) == 0);
    REQUIRE(run_until(lease_granted, &seen, 5000));
    int64_t first = lease_id(l);
    /* Someone (an operator, a test) revokes it: the keeper notices and grants a new one. */
    CHECK_INT(etcd_sync_lease_revoke(c, first, &err), 0);
    run_until(lease_regranted, &seen, 5000);
    CHECK_INT(seen.lost, 1);
    CHECK_INT(seen.granted, 2);
    CHECK(lease_id(l) != 0 && lease_id(l) != first);
    lease_free(l, true);
}

struct candidate {
    struct election *e;
    struct etcd_client *c;
    int leader_events;
    int follower_events;
};

static void on_election(struct election *e, enum election_state state, void *arg)
{
    struct candidate *cd = arg;
    if (state == ELECTION_LEADER)
        cd->leader_events++;
    else
        cd->follower_events++;
}

static bool is_leader(void *arg)
{
    return election_is_leader(((struct candidate *)arg)->e);
}

static bool follows(void *arg)
{
    struct candidate *cd = arg;
    return !election_is_leader(cd->e) && election_leader(cd->e)[0] != '\0';
}

#define ELECTION_KEY "/t/election/controller"

/* A candidate in its own process: it campaigns until it is killed. */
static pid_t spawn_candidate(const char *endpoint, const char *identity)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    struct ev_loop *l = ev_loop_new(EVFLAG_AUTO);
    struct etcd_config cfg = {.endpoints = endpoint};
    struct candidate cd = {0};
    struct mm_error err = {0};
    if (etcd_client_new(l, &cfg, &cd.c, &err) < 0 ||
        election_new(cd.c, ELECTION_KEY, identity, 2, on_election, &cd, &cd.e, &err) < 0)
        _exit(3);
    for (;;)
        ev_run(l, 0);
}

static bool key_names(struct etcd_client *c, const char *who)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = ELECTION_KEY};
    if (etcd_sync_range(c, &req, &r, &err) < 0)
        return false;
    char want[64];
    snprintf(want, sizeof(want), "\"leader\":\"%s\"", who);
    bool yes = r->op.n_kvs == 1 && strstr(r->op.kvs[0].value, want) != NULL;
    etcd_response_free(r);
    return yes;
}

static void test_election(struct etcd_client *probe, const char *endpoint)
{
    struct etcd_config cfg = {.endpoints = endpoint};
    struct mm_error err = {0};

    /* A leader in another process... */
    pid_t child = spawn_candidate(endpoint, "node-c");
    REQUIRE(child > 0);
    long long end = harness_now_ms() + 5000;
    while (!key_names(probe, "node-c") && harness_now_ms() < end)
        run_for(20);
    REQUIRE(key_names(probe, "node-c"));

    /* ...and two followers here. */
    struct candidate a = {0}, b = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &a.c, &err) == 0);
    REQUIRE(etcd_client_new(loop, &cfg, &b.c, &err) == 0);
    REQUIRE(election_new(a.c, ELECTION_KEY, "node-a", 2, on_election, &a, &a.e, &err) == 0);
    REQUIRE(election_new(b.c, ELECTION_KEY, "node-b", 2, on_election, &b, &b.e, &err) == 0);
    CHECK(run_until(follows, &a, 5000));
    CHECK(run_until(follows, &b, 5000));
    CHECK_STR(election_leader(a.e), "node-c");
    CHECK_STR(election_leader(b.e), "node-c");

    /* The leader's process dies without resigning: its lease expires (TTL 2 s) and exactly one
     * follower takes over. */
    long long t0 = harness_now_ms();
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    end = harness_now_ms() + 6000;
    while (!election_is_leader(a.e) && !election_is_leader(b.e) && harness_now_ms() < end)
        run_for(10);
    long long took = harness_now_ms() - t0;
    fprintf(stderr, "takeover after leader death: %lld ms (lease ttl 2000 ms)\n", took);
    CHECK(election_is_leader(a.e) != election_is_leader(b.e));
    CHECK(took <= 2000 + 2000);
    struct candidate *winner = election_is_leader(a.e) ? &a : &b;
    struct candidate *loser = winner == &a ? &b : &a;
    CHECK(run_until(follows, loser, 3000));
    CHECK_STR(election_leader(loser->e), election_leader(winner->e));
    CHECK(key_names(probe, election_leader(winner->e)));
    run_for(500); /* no flapping */
    CHECK_INT(winner->leader_events, 1);
    CHECK_INT(loser->leader_events, 0);

    /* The winner resigns: the other takes over at once (the revoke deletes the key). */
    election_free(winner->e);
    winner->e = NULL;
    t0 = harness_now_ms();
    CHECK(run_until(is_leader, loser, 3000));
    took = harness_now_ms() - t0;
    fprintf(stderr, "takeover after resign: %lld ms\n", took);
    CHECK(took < 1000);

    election_free(loser->e);
    etcd_client_free(a.c);
    etcd_client_free(b.c);
}

int main(void)
{
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    loop = ev_loop_new(EVFLAG_AUTO);
    struct etcd_config cfg = {.endpoints = etcd.endpoint};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);

    test_lease_kept_and_dropped(c);
    test_lease_revoked_externally(c);
    test_election(c, etcd.endpoint);

    etcd_client_free(c);
    ev_loop_destroy(loop);
    harness_etcd_cleanup(&etcd);
    return CHECK_DONE();
}
