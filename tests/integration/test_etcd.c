/* test_etcd.c - the etcd client against real etcd servers: KV, txn compare-and-swap, leases and
 * their expiry as seen by a watcher, watches from history and from a compacted revision,
 * endpoint failover, the rule that a write which may have executed is never re-sent, a stream
 * broken by etcd dying, user/password auth and TLS with client certificates. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/curlev.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"

static struct ev_loop *loop;

static struct etcd_client *client(const char *endpoints, const struct etcd_config *extra)
{
    struct etcd_config cfg = {0};
    if (extra)
        cfg = *extra;
    cfg.endpoints = endpoints;
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (etcd_client_new(loop, &cfg, &c, &err) < 0) {
        fprintf(stderr, "client: %s\n", err.msg);
        exit(1);
    }
    return c;
}

static const char *get(struct etcd_client *c, const char *key, int64_t rev, char *buf, size_t n)
{
    struct etcd_range_req req = {.key = key, .revision = rev};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    if (etcd_sync_range(c, &req, &r, &err) < 0) {
        snprintf(buf, n, "(error %.200s)", err.msg);
        return buf;
    }
    snprintf(buf, n, "%s", r->op.n_kvs ? r->op.kvs[0].value : "(none)");
    etcd_response_free(r);
    return buf;
}

/* ---------------------------------------------------------------- watch collector */

struct collector {
    int created;
    int puts;
    int deletes;
    int final_status;
    int64_t compact;
    char final_msg[256];
    char last_key[128];
    int64_t last_rev;
    bool ended;
};

static void collect(struct etcd_watch *w, int status, const struct mm_error *err,
                    const struct etcd_watch_batch *b, int64_t compact, void *arg)
{
    struct collector *col = arg;
    if (status < 0) {
        col->ended = true;
        col->final_status = status;
        col->compact = compact;
        snprintf(col->final_msg, sizeof(col->final_msg), "%s", err ? err->msg : "");
        return;
    }
    if (b->created)
        col->created++;
    for (size_t i = 0; i < b->n_events; i++) {
        if (b->events[i].type == ETCD_EVENT_PUT)
            col->puts++;
        else
            col->deletes++;
        snprintf(col->last_key, sizeof(col->last_key), "%s", b->events[i].kv.key);
        col->last_rev = b->events[i].kv.mod_revision;
    }
}

/* Run the loop until cond(col) holds (bounded). */
static bool run_until(bool (*cond)(struct collector *), struct collector *col, long long ms)
{
    return harness_run_until(loop, (bool (*)(void *))cond, col, ms);
}

static bool has_created(struct collector *c)
{
    return c->created > 0;
}

static bool has_created_or_ended(struct collector *c)
{
    return c->created > 0 || c->ended;
}

static bool has_ended(struct collector *c)
{
    return c->ended;
}

static bool two_deletes(struct collector *c)
{
    return c->deletes >= 2;
}

static bool three_puts(struct collector *c)
{
    return c->puts >= 3;
}

/* ---------------------------------------------------------------- scenarios */

static void test_kv(struct etcd_client *c)
{
    struct mm_error err = {0};
    char buf[256];
    int64_t r1, r2;
    CHECK_INT(etcd_sync_put(c, "/kv/a", "one", 0, &r1, &err), 0);
    CHECK_INT(etcd_sync_put(c, "/kv/a", "two", 0, &r2, &err), 0);
    CHECK(r2 > r1);
    CHECK_STR(get(c, "/kv/a", 0, buf, sizeof(buf)), "two");
    CHECK_STR(get(c, "/kv/a", r1, buf, sizeof(buf)), "one"); /* a historic read */
    /* A value with bytes JSON would have to escape, and binary-unsafe ones, survive. */
    CHECK_INT(etcd_sync_put(c, "/kv/q", "{\"s\":\"\\\"\\n\xe2\x82\xac\"}", 0, NULL, &err), 0);
    CHECK_STR(get(c, "/kv/q", 0, buf, sizeof(buf)), "{\"s\":\"\\\"\\n\xe2\x82\xac\"}");

    for (int i = 0; i < 5; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/kv/p/%d", i);
        CHECK_INT(etcd_sync_put(c, k, "x", 0, NULL, &err), 0);
    }
    CHECK_INT(etcd_sync_put(c, "/kv/pz", "not under /kv/p/", 0, NULL, &err), 0);
    struct etcd_range_req req = {.key = "/kv/p/", .prefix = true, .limit = 3};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(c, &req, &r, &err) == 0);
    CHECK_INT(r->op.n_kvs, 3);
    CHECK(r->op.more);
    CHECK_INT(r->op.count, 5);
    CHECK_STR(r->op.kvs[0].key, "/kv/p/0");
    etcd_response_free(r);

    int64_t deleted = 0;
    CHECK_INT(etcd_sync_delete(c, "/kv/p/0", false, &deleted, &err), 0);
    CHECK_INT(deleted, 1);
    CHECK_INT(etcd_sync_delete(c, "/kv/p/", true, &deleted, &err), 0);
    CHECK_INT(deleted, 4);
    CHECK_STR(get(c, "/kv/pz", 0, buf, sizeof(buf)), "not under /kv/p/");

    /* A future revision is refused with etcd's words. */
    req = (struct etcd_range_req){.key = "/kv/a", .revision = r2 + 1000};
    CHECK_INT(etcd_sync_range(c, &req, &r, &err), -ERANGE);
    CHECK(strstr(err.msg, "future revision") != NULL);
}

struct cas {
    bool done;
    int status;
    bool succeeded;
    int64_t ttl;                  /* lease replies */
    int64_t granted_ttl;
};

static void cas_cb(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct cas *s = arg;
    s->done = true;
    s->status = status;
    s->succeeded = resp && resp->succeeded;
    s->ttl = resp ? resp->ttl : -1;
    s->granted_ttl = resp ? resp->granted_ttl : -1;
}

/* One lease request run to its reply (bounded). */
static struct cas lease_call(struct etcd_client *c,
                             int (*fn)(struct etcd_client *, int64_t, etcd_cb, void *,
                                       struct etcd_request **),
                             int64_t id)
{
    struct cas s = {0};
    if (fn(c, id, cas_cb, &s, NULL) < 0 || etcd_sync_wait(c, &s.done, 5000) < 0)
        s.status = -ETIMEDOUT;
    return s;
}

struct kept {
    bool done;
    int status;
    struct etcd_response *resp;
};

static void keep_cb(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct kept *k = arg;
    k->done = true;
    k->status = status;
    if (resp) {
        etcd_response_keep(resp); /* ours now, beyond the callback */
        k->resp = resp;
    }
}

static int cancels;

static void count_cancel(int status, const struct mm_error *err, struct etcd_response *resp,
                         void *arg)
{
    if (status == -ECANCELED && err && strstr(err->msg, "client closed"))
        cancels++;
}

/* Range variants, a response kept past its callback, and cancellation by etcd_client_free(). */
static void test_range_options(struct etcd_client *c, const char *endpoint)
{
    struct mm_error err = {0};
    for (int i = 0; i < 5; i++) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "/ro/%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        CHECK_INT(etcd_sync_put(c, k, v, 0, NULL, &err), 0);
    }
    struct etcd_response *r = NULL;
    struct etcd_range_req keys = {.key = "/ro/", .prefix = true, .keys_only = true};
    REQUIRE(etcd_sync_range(c, &keys, &r, &err) == 0);
    CHECK_INT(r->op.n_kvs, 5);
    CHECK_STR(r->op.kvs[4].key, "/ro/4");
    CHECK_INT(r->op.kvs[4].key_len, 5);
    CHECK_STR(r->op.kvs[4].value, "");
    CHECK_INT(r->op.kvs[4].value_len, 0);
    etcd_response_free(r);
    struct etcd_range_req count = {.key = "/ro/", .prefix = true, .count_only = true};
    REQUIRE(etcd_sync_range(c, &count, &r, &err) == 0);
    CHECK_INT(r->op.n_kvs, 0);
    CHECK_INT(r->op.count, 5);
    etcd_response_free(r);
    struct etcd_range_req span = {.key = "/ro/1", .range_end = "/ro/3", .serializable = true};
    REQUIRE(etcd_sync_range(c, &span, &r, &err) == 0);
    CHECK_INT(r->op.n_kvs, 2); /* [/ro/1, /ro/3) */
    CHECK_STR(r->op.kvs[0].value, "value-1");
    CHECK_STR(r->op.kvs[1].value, "value-2");
    CHECK_INT(r->op.kvs[1].version, 1);
    CHECK(r->op.kvs[1].mod_revision > r->op.kvs[0].mod_revision);
    CHECK(r->revision >= r->op.kvs[1].mod_revision);
    etcd_response_free(r);
    struct etcd_range_req all = {.key = "", .prefix = true, .count_only = true};
    REQUIRE(etcd_sync_range(c, &all, &r, &err) == 0);
    CHECK(r->op.count >= 5); /* "" with prefix: the whole keyspace */
    etcd_response_free(r);

    struct kept k = {0};
    struct etcd_range_req one = {.key = "/ro/0"};
    REQUIRE(etcd_range(c, &one, keep_cb, &k, NULL) == 0);
    CHECK_INT(etcd_sync_wait(c, &k.done, 5000), 0);
    CHECK_INT(k.status, 0);
    REQUIRE(k.resp != NULL);
    CHECK_STR(k.resp->op.kvs[0].value, "value-0"); /* still valid after the callback */
    etcd_response_free(k.resp);

    /* Requests still in flight when the client goes: each callback runs once, -ECANCELED. */
    struct etcd_client *c2 = NULL;
    struct etcd_config cfg = {.endpoints = endpoint};
    REQUIRE(etcd_client_new(loop, &cfg, &c2, &err) == 0);
    cancels = 0;
    CHECK_INT(etcd_range(c2, &one, count_cancel, NULL, NULL), 0);
    CHECK_INT(etcd_lease_grant(c2, 10, 0, count_cancel, NULL, NULL), 0);
    etcd_client_free(c2);
    CHECK_INT(cancels, 2);
}

/* etcd stopped: requests fail fast and say where; restarted on the same port and data: the same
 * client works again and sees the data written before. */
static void test_restart(struct etcd_client *c, struct harness_etcd *e)
{
    struct mm_error err = {0};
    char buf[256];
    CHECK_INT(etcd_sync_put(c, "/restart/a", "before", 0, NULL, &err), 0);
    REQUIRE(harness_etcd_stop(e) == 0);
    struct etcd_range_req req = {.key = "/restart/a"};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_range(c, &req, &r, &err), -ECONNREFUSED);
    CHECK(strstr(err.msg, e->endpoint) != NULL);
    REQUIRE(harness_etcd_restart(e) == 0);
    CHECK_STR(get(c, "/restart/a", 0, buf, sizeof(buf)), "before");
    CHECK_INT(etcd_sync_put(c, "/restart/a", "after", 0, NULL, &err), 0);
    CHECK_STR(get(c, "/restart/a", 0, buf, sizeof(buf)), "after");
}

static void test_txn(struct etcd_client *c)
{
    struct mm_error err = {0};
    char buf[256];
    /* Ten racing "create if absent" txns on one key, all in flight at once: exactly one wins. */
    struct cas racers[10] = {0};
    char values[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(values[i], sizeof(values[i]), "owner-%d", i);
        struct etcd_compare cmp = {.key = "/txn/lock", .target = ETCD_CMP_CREATE,
                                   .result = ETCD_CMP_EQUAL, .number = 0};
        struct etcd_op put = {.kind = ETCD_OP_PUT, .key = "/txn/lock", .value = values[i]};
        struct etcd_txn txn = {&cmp, 1, &put, 1, NULL, 0};
        REQUIRE(etcd_txn(c, &txn, cas_cb, &racers[i], NULL) == 0);
    }
    int wins = 0, done = 0;
    for (int i = 0; i < 10; i++) {
        etcd_sync_wait(c, &racers[i].done, 5000);
        done += racers[i].done && racers[i].status == 0;
        wins += racers[i].succeeded;
    }
    CHECK_INT(done, 10);
    CHECK_INT(wins, 1);
    CHECK(strncmp(get(c, "/txn/lock", 0, buf, sizeof(buf)), "owner-", 6) == 0);

    /* Compare on value, version and mod_revision; the failure branch reads. */
    int64_t rev;
    CHECK_INT(etcd_sync_put(c, "/txn/k", "v1", 0, &rev, &err), 0);
    struct etcd_compare by_value = {.key = "/txn/k", .target = ETCD_CMP_VALUE,
                                    .result = ETCD_CMP_EQUAL, .value = "v1"};
    struct etcd_op set2 = {.kind = ETCD_OP_PUT, .key = "/txn/k", .value = "v2"};
    struct etcd_op read = {.kind = ETCD_OP_RANGE, .key = "/txn/k"};
    struct etcd_txn t1 = {&by_value, 1, &set2, 1, &read, 1};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_txn(c, &t1, &r, &err) == 0);
    CHECK(r->succeeded);
    etcd_response_free(r);
    REQUIRE(etcd_sync_txn(c, &t1, &r, &err) == 0); /* value is v2 now: compare fails */
    CHECK(!r->succeeded);
    REQUIRE(r->n_results == 1);
    CHECK_INT(r->results[0].kind, ETCD_OP_RANGE);
    CHECK_STR(r->results[0].kvs[0].value, "v2");
    etcd_response_free(r);

    struct etcd_compare by_mod = {.key = "/txn/k", .target = ETCD_CMP_MOD,
                                  .result = ETCD_CMP_EQUAL, .number = rev}; /* stale */
    struct etcd_txn t2 = {&by_mod, 1, &set2, 1, NULL, 0};
    REQUIRE(etcd_sync_txn(c, &t2, &r, &err) == 0);
    CHECK(!r->succeeded);
    etcd_response_free(r);
    struct etcd_compare by_version = {.key = "/txn/k", .target = ETCD_CMP_VERSION,
                                      .result = ETCD_CMP_GREATER, .number = 1};
    struct etcd_op del = {.kind = ETCD_OP_DELETE, .key = "/txn/k"};
    struct etcd_txn t3 = {&by_version, 1, &del, 1, NULL, 0};
    REQUIRE(etcd_sync_txn(c, &t3, &r, &err) == 0);
    CHECK(r->succeeded);
    CHECK_INT(r->results[0].deleted, 1);
    etcd_response_free(r);

    /* An invalid request is refused locally, before anything is sent. */
    struct etcd_compare bad = {.key = "/txn/k", .target = ETCD_CMP_VALUE,
                               .result = ETCD_CMP_EQUAL, .value = NULL};
    struct etcd_txn t4 = {&bad, 1, NULL, 0, NULL, 0};
    CHECK_INT(etcd_txn(c, &t4, cas_cb, NULL, NULL), -EINVAL);
}

static void test_leases_and_watch(struct etcd_client *c)
{
    struct mm_error err = {0};
    char buf[256];
    int64_t lease = 0;
    REQUIRE(etcd_sync_lease_grant(c, 2, &lease, &err) == 0);
    CHECK_INT(etcd_sync_put(c, "/lease/a", "x", lease, NULL, &err), 0);
    CHECK_INT(etcd_sync_put(c, "/lease/b", "y", lease, NULL, &err), 0);
    struct collector col = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/lease/", .prefix = true};
    REQUIRE(etcd_watch_start(c, &wr, collect, &col, &w) == 0);
    CHECK(run_until(has_created, &col, 3000));
    /* Nobody keeps the lease alive: after its TTL both keys go, and the watcher sees it. */
    long long t0 = harness_now_ms();
    CHECK(run_until(two_deletes, &col, 6000));
    fprintf(stderr, "lease expiry observed after %lld ms (ttl 2000 ms)\n", harness_now_ms() - t0);
    CHECK_INT(col.deletes, 2);
    CHECK(strncmp(col.last_key, "/lease/", 7) == 0); /* a DELETE names its key and revision */
    CHECK(col.last_rev > 0);
    CHECK_STR(get(c, "/lease/a", 0, buf, sizeof(buf)), "(none)");
    etcd_watch_free(w);

    /* Keep-alive, time-to-live, revoke; unknown leases are -ENOENT with a message. */
    REQUIRE(etcd_sync_lease_grant(c, 3, &lease, &err) == 0);
    CHECK_INT(etcd_sync_put(c, "/lease/c", "z", lease, NULL, &err), 0);
    /* Let the TTL run down a little, then a keep-alive puts it back to the granted 3 s. */
    bool never = false;
    CHECK_INT(etcd_sync_wait(c, &never, 1200), -ETIMEDOUT);
    struct cas before = lease_call(c, etcd_lease_ttl, lease);
    CHECK_INT(before.status, 0);
    CHECK(before.ttl >= 0 && before.ttl < 3);
    CHECK_INT(before.granted_ttl, 3);
    struct cas ka = lease_call(c, etcd_lease_keepalive, lease);
    CHECK_INT(ka.status, 0);
    CHECK_INT(ka.ttl, 3);
    struct cas after = lease_call(c, etcd_lease_ttl, lease);
    CHECK_INT(after.status, 0);
    CHECK(after.ttl > before.ttl);
    /* The same through the synchronous call. */
    int64_t left = -1, granted = -1;
    CHECK_INT(etcd_sync_lease_ttl(c, lease, &left, &granted, &err), 0);
    CHECK(left > 0 && left <= 3);
    CHECK_INT(granted, 3);
    /* Kept alive every second, the 3 s lease outlives 4 s and its key stays. */
    for (int i = 0; i < 4; i++) {
        CHECK_INT(etcd_sync_wait(c, &never, 1000), -ETIMEDOUT);
        CHECK_INT(lease_call(c, etcd_lease_keepalive, lease).status, 0);
    }
    CHECK_STR(get(c, "/lease/c", 0, buf, sizeof(buf)), "z");
    CHECK_INT(etcd_sync_lease_revoke(c, lease, &err), 0);
    CHECK_STR(get(c, "/lease/c", 0, buf, sizeof(buf)), "(none)");
    CHECK_INT(etcd_sync_lease_revoke(c, lease, &err), -ENOENT);
    CHECK(strstr(err.msg, "lease revoke") && strstr(err.msg, "not found"));
    CHECK_INT(etcd_sync_lease_ttl(c, lease, &left, NULL, &err), -ENOENT); /* revoked */
    CHECK(strstr(err.msg, "not found") != NULL);
    CHECK_INT(etcd_sync_lease_ttl(c, 12345, NULL, NULL, &err), -ENOENT);
    struct cas ttl = {0};
    REQUIRE(etcd_lease_ttl(c, 12345, cas_cb, &ttl, NULL) == 0);
    etcd_sync_wait(c, &ttl.done, 5000);
    CHECK_INT(ttl.status, -ENOENT);
    struct cas ka2 = {0};
    REQUIRE(etcd_lease_keepalive(c, 12345, cas_cb, &ka2, NULL) == 0);
    etcd_sync_wait(c, &ka2.done, 5000);
    CHECK_INT(ka2.status, -ENOENT);
    /* attach to no lease */
    CHECK_INT(etcd_put(c, "/lease/d", "v", 1, 12345, cas_cb, &ka2, NULL), 0);
    ka2.done = false;
    etcd_sync_wait(c, &ka2.done, 5000);
    CHECK_INT(ka2.status, -ENOENT);
}

static void test_watch_history_and_compaction(struct etcd_client *c)
{
    struct mm_error err = {0};
    int64_t first = 0, rev = 0;
    CHECK_INT(etcd_sync_put(c, "/hist/a", "1", 0, &first, &err), 0);
    CHECK_INT(etcd_sync_put(c, "/hist/a", "2", 0, NULL, &err), 0);
    CHECK_INT(etcd_sync_put(c, "/hist/b", "3", 0, &rev, &err), 0);
    /* From history: the three past events are replayed in order. */
    struct collector col = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/hist/", .prefix = true, .start_revision = first};
    REQUIRE(etcd_watch_start(c, &wr, collect, &col, &w) == 0);
    CHECK(run_until(three_puts, &col, 3000));
    CHECK_INT(col.puts, 3);
    CHECK_STR(col.last_key, "/hist/b");
    CHECK_INT(col.last_rev, rev);
    etcd_watch_free(w);

    /* From a compacted revision: the watch ends with -ESTALE and says what is left. */
    CHECK_INT(etcd_sync_compact(c, rev, &err), 0);
    struct collector col2 = {0};
    REQUIRE(etcd_watch_start(c, &wr, collect, &col2, &w) == 0);
    CHECK(run_until(has_ended, &col2, 3000));
    CHECK_INT(col2.final_status, -ESTALE);
    CHECK_INT(col2.compact, rev);
    CHECK(strstr(col2.final_msg, "compacted") != NULL);
    etcd_watch_free(w);
    /* A read at a compacted revision is -ESTALE too. */
    struct etcd_range_req req = {.key = "/hist/a", .revision = first};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_range(c, &req, &r, &err), -ESTALE);
}

/* A server that accepts connections and reads, but never answers: a request sent to it may or
 * may not have been executed, from the client's point of view. */
static pid_t black_hole(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60); /* bounded even if the test dies */
        for (;;) {
            int s = accept(fd, NULL, NULL);
            if (s < 0)
                continue;
            char buf[4096];
            while (read(s, buf, sizeof(buf)) > 0) /* swallow, never reply */
                ;
            close(s);
        }
    }
    close(fd);
    return pid;
}

static void test_failover(const char *live)
{
    struct mm_error err = {0};
    char buf[256];
    /* A dead endpoint first: requests move on to the live one, and stay there. */
    int dead = harness_free_port();
    char eps[256];
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d,%s", dead, live);
    struct etcd_client *c = client(eps, NULL);
    CHECK_INT(etcd_sync_put(c, "/fo/a", "1", 0, NULL, &err), 0); /* never reached: safe */
    CHECK_STR(get(c, "/fo/a", 0, buf, sizeof(buf)), "1");
    CHECK_STR(etcd_client_endpoint(c), live);
    etcd_client_free(c);

    /* Every endpoint dead: a clear error naming the endpoint. */
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", dead);
    c = client(eps, NULL);
    struct etcd_range_req req = {.key = "/fo/a"};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_range(c, &req, &r, &err), -ECONNREFUSED);
    char want[64];
    snprintf(want, sizeof(want), "etcd http://127.0.0.1:%d: range /fo/a:", dead);
    CHECK(strstr(err.msg, want) != NULL);
    etcd_client_free(c);

    /* A black hole first: the put may have executed there, so it is NOT re-sent to the live
     * endpoint (it would run twice); a read is. */
    int hole_port = 0;
    pid_t hole = black_hole(&hole_port);
    REQUIRE(hole > 0);
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d,%s", hole_port, live);
    struct etcd_config cfg = {.request_timeout_ms = 500};
    c = client(eps, &cfg);
    CHECK_INT(etcd_sync_put(c, "/fo/once", "1", 0, NULL, &err), -ETIMEDOUT);
    CHECK(strstr(err.msg, "outcome unknown") != NULL);
    struct etcd_client *probe = client(live, NULL);
    CHECK_STR(get(probe, "/fo/once", 0, buf, sizeof(buf)), "(none)");
    /* The client moved on after the time-out; a read now goes to the live endpoint. */
    CHECK_STR(get(c, "/fo/a", 0, buf, sizeof(buf)), "1");
    etcd_client_free(c);
    /* And an idempotent read that times out on the hole is retried on the live endpoint. */
    c = client(eps, &cfg);
    CHECK_STR(get(c, "/fo/a", 0, buf, sizeof(buf)), "1");
    etcd_client_free(c);
    etcd_client_free(probe);
    kill(hole, SIGKILL);
    waitpid(hole, NULL, 0);
}

static void test_watch_broken_by_crash(void)
{
    struct harness_etcd e = {0};
    REQUIRE(harness_etcd_start(&e, NULL) == 0);
    struct etcd_client *c = client(e.endpoint, NULL);
    struct collector col = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/crash/", .prefix = true};
    REQUIRE(etcd_watch_start(c, &wr, collect, &col, &w) == 0);
    CHECK(run_until(has_created, &col, 3000));
    harness_etcd_kill(&e);
    CHECK(run_until(has_ended, &col, 5000));
    CHECK_INT(col.final_status, -ECONNRESET);
    CHECK(strstr(col.final_msg, "watch prefix /crash/") != NULL);
    etcd_watch_free(w);
    etcd_client_free(c);
    harness_etcd_cleanup(&e);
}

struct answered {
    bool done;
    int status;
    int64_t member_id;
    char endpoint[128];
};

static void answered_cb(int status, const struct mm_error *err, struct etcd_response *resp,
                        void *arg)
{
    struct answered *a = arg;
    a->done = true;
    a->status = status;
    if (resp) {
        a->member_id = resp->member_id;
        snprintf(a->endpoint, sizeof(a->endpoint), "%s", resp->endpoint ? resp->endpoint : "");
    }
}

struct batch_seen {
    int batches;
    int events;
    int64_t member_id;
    char endpoint[128];
};

static void note_batch(struct etcd_watch *w, int status, const struct mm_error *err,
                       const struct etcd_watch_batch *b, int64_t compact, void *arg)
{
    struct batch_seen *s = arg;
    if (status < 0)
        return;
    s->batches++;
    s->events += (int)b->n_events;
    s->member_id = b->member_id;
    snprintf(s->endpoint, sizeof(s->endpoint), "%s", b->endpoint ? b->endpoint : "");
}

static bool some_batch(void *arg)
{
    return ((struct batch_seen *)arg)->batches > 0;
}

static bool many_events(void *arg)
{
    return ((struct batch_seen *)arg)->events >= 300;
}

/* Responses and watch batches say which endpoint and member served them; a response kept past
 * its callback keeps its endpoint. Two clients share one transport. Three hundred puts reach a
 * watch as many objects per read, each delivered once. */
static void test_served_by(const char *live)
{
    struct mm_error err = {0};
    struct curlev *curl = NULL;
    REQUIRE(curlev_new(loop, &curl, &err) == 0);
    int dead = harness_free_port();
    char eps[256];
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d,%s", dead, live);
    struct etcd_config shared = {.curl = curl};
    struct etcd_client *c = client(eps, &shared);
    struct etcd_client *other = client(live, &shared);

    struct answered a = {0};
    struct etcd_range_req req = {.key = "/served/x"};
    REQUIRE(etcd_range(c, &req, answered_cb, &a, NULL) == 0);
    CHECK_INT(etcd_sync_wait(c, &a.done, 5000), 0);
    CHECK_INT(a.status, 0);
    CHECK_STR(a.endpoint, live); /* the dead first endpoint did not serve it */
    CHECK(a.member_id != 0);

    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(other, &req, &r, &err) == 0);
    CHECK_STR(r->endpoint, live);
    CHECK_INT(r->member_id, a.member_id); /* one member */
    etcd_response_free(r);

    struct batch_seen seen = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/served/w/", .prefix = true};
    REQUIRE(etcd_watch_start(c, &wr, note_batch, &seen, &w) == 0);
    REQUIRE(harness_run_until(loop, some_batch, &seen, 3000)); /* the creation */
    CHECK_STR(seen.endpoint, live);
    CHECK_INT(seen.member_id, a.member_id);
    for (int i = 0; i < 300; i++) { /* in flight together: replies stream back-to-back */
        char k[32];
        snprintf(k, sizeof(k), "/served/w/%03d", i);
        REQUIRE(etcd_put(other, k, "v", 1, 0, NULL, NULL, NULL) == 0);
    }
    CHECK(harness_run_until(loop, many_events, &seen, 10000));
    CHECK_INT(seen.events, 300);
    fprintf(stderr, "300 events in %d batches\n", seen.batches);
    etcd_watch_free(w);
    etcd_client_free(c);
    etcd_client_free(other);
    curlev_free(curl);
}

static int sh(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static void test_auth(void)
{
    struct harness_etcd e = {0};
    REQUIRE(harness_etcd_start(&e, "--auth-token-ttl 1") == 0); /* simple tokens expire in 1 s */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "set -e; export ETCDCTL_API=3; E=%s; etcdctl --endpoints $E user add root:rootpw "
             ">/dev/null; etcdctl --endpoints $E user add mesh:meshpw >/dev/null; "
             "etcdctl --endpoints $E role add meshrole >/dev/null; "
             "etcdctl --endpoints $E role grant-permission meshrole --prefix readwrite /mesh/ "
             ">/dev/null; etcdctl --endpoints $E user grant-role mesh meshrole >/dev/null; "
             "etcdctl --endpoints $E user grant-role root root >/dev/null; "
             "etcdctl --endpoints $E auth enable >/dev/null",
             e.endpoint);
    REQUIRE(sh(cmd) == 0);
    struct mm_error err = {0};
    char buf[256];
    struct etcd_config cfg = {.user = "mesh", .password = "meshpw"};
    struct etcd_client *c = client(e.endpoint, &cfg);
    CHECK_INT(etcd_sync_put(c, "/mesh/a", "1", 0, NULL, &err), 0);
    CHECK_STR(get(c, "/mesh/a", 0, buf, sizeof(buf)), "1");
    /* Outside the role's permissions: refused with etcd's reason. */
    CHECK_INT(etcd_sync_put(c, "/other", "1", 0, NULL, &err), -EACCES);
    CHECK(strstr(err.msg, "permission denied") != NULL);
    /* A watch authenticates too. */
    struct collector col = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = "/mesh/", .prefix = true};
    REQUIRE(etcd_watch_start(c, &wr, collect, &col, &w) == 0);
    CHECK(run_until(has_created, &col, 3000));
    etcd_watch_free(w);
    /* The token expires: the next request is refused with "invalid auth token" before it runs,
     * and is sent again with a new one. */
    run_until(NULL, NULL, 2500);
    memset(&err, 0, sizeof(err));
    CHECK_INT(etcd_sync_put(c, "/mesh/a", "2", 0, NULL, &err), 0);
    if (err.msg[0])
        fprintf(stderr, "  put after token expiry: %s\n", err.msg);
    CHECK_STR(get(c, "/mesh/a", 0, buf, sizeof(buf)), "2");
    /* The token expires while only a watch would use it: etcd cancels the watch ("invalid auth
     * token"), and the client must drop the token so that the owner's next attempt
     * authenticates again instead of being refused forever. */
    run_until(NULL, NULL, 2500);
    int watch_created = 0, attempts = 0;
    while (attempts < 3 && !watch_created) {
        struct collector wc = {0};
        attempts++;
        REQUIRE(etcd_watch_start(c, &wr, collect, &wc, &w) == 0);
        run_until(has_created_or_ended, &wc, 3000);
        watch_created = wc.created;
        if (!watch_created)
            fprintf(stderr, "  watch attempt %d after token expiry: %s\n", attempts,
                    wc.final_msg);
        etcd_watch_free(w);
    }
    CHECK(watch_created && attempts <= 2);
    etcd_client_free(c);

    cfg.password = "wrong";
    c = client(e.endpoint, &cfg);
    CHECK_INT(etcd_sync_put(c, "/mesh/b", "1", 0, NULL, &err), -EACCES);
    CHECK(strstr(err.msg, "authenticate as 'mesh'") != NULL);
    etcd_client_free(c);

    c = client(e.endpoint, NULL); /* no credentials at all */
    CHECK(etcd_sync_put(c, "/mesh/c", "1", 0, NULL, &err) < 0);
    CHECK(strstr(err.msg, "user name is empty") != NULL);
    etcd_client_free(c);
    harness_etcd_cleanup(&e);
}

static void test_tls(void)
{
    char dir[] = "/tmp/mm-tls-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char cmd[4096];
    /* A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger CA. */
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mm-test-ca "
             "-keyout ca.key -out ca.crt 2>/dev/null; "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=stranger "
             "-keyout other.key -out other.crt 2>/dev/null; "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
             "-out server.csr 2>/dev/null; "
             "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > "
             "server.ext; "
             "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile server.ext -out server.crt 2>/dev/null; "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=mesh -keyout client.key "
             "-out client.csr 2>/dev/null; "
             "printf 'extendedKeyUsage=clientAuth\\n' > client.ext; "
             "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile client.ext -out client.crt 2>/dev/null",
             dir);
    REQUIRE(sh(cmd) == 0);
    struct harness_etcd e = {0};
    char extra[512];
    snprintf(extra, sizeof(extra),
             "--cert-file %s/server.crt --key-file %s/server.key --trusted-ca-file %s/ca.crt "
             "--client-cert-auth",
             dir, dir, dir);
    REQUIRE(harness_etcd_start_tls(&e, extra) == 0);

    char ca[300], cert[300], key[300], other[300];
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(cert, sizeof(cert), "%s/client.crt", dir);
    snprintf(key, sizeof(key), "%s/client.key", dir);
    snprintf(other, sizeof(other), "%s/other.crt", dir);
    struct mm_error err = {0};
    char buf[256];
    struct etcd_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key};
    struct etcd_client *c = client(e.endpoint, &cfg);
    CHECK_INT(etcd_sync_put(c, "/tls/a", "secure", 0, NULL, &err), 0);
    CHECK_STR(get(c, "/tls/a", 0, buf, sizeof(buf)), "secure");
    etcd_client_free(c);

    struct etcd_config wrong_ca = {.ca_file = other, .cert_file = cert, .key_file = key};
    c = client(e.endpoint, &wrong_ca);
    struct etcd_range_req req = {.key = "/tls/a"};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_range(c, &req, &r, &err), -EACCES);
    CHECK(strstr(err.msg, "TLS") != NULL);
    etcd_client_free(c);

    struct etcd_config no_cert = {.ca_file = ca};
    c = client(e.endpoint, &no_cert);
    CHECK(etcd_sync_range(c, &req, &r, &err) < 0); /* the server wants a client certificate */
    etcd_client_free(c);

    harness_etcd_cleanup(&e);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    sh(cmd);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    struct etcd_client *c = client(etcd.endpoint, NULL);

    test_kv(c);
    test_txn(c);
    test_leases_and_watch(c);
    test_watch_history_and_compaction(c);
    test_range_options(c, etcd.endpoint);
    test_failover(etcd.endpoint);
    test_served_by(etcd.endpoint);
    test_watch_broken_by_crash();
    test_auth();
    test_tls();

    struct mm_error err = {0};
    struct etcd_config bad = {.endpoints = "127.0.0.1:2379"};
    struct etcd_client *none = NULL;
    CHECK_INT(etcd_client_new(loop, &bad, &none, &err), -EINVAL);
    CHECK(strstr(err.msg, "must start with http:// or https://") != NULL);

    test_restart(c, &etcd);
    etcd_client_free(c);
    harness_etcd_cleanup(&etcd);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
