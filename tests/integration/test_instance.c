/* test_instance.c - the instance registration (mm/instance.h) against a real etcd: the record
 * with its labels, figures and lease; rate-limited republishing (significant changes no closer
 * than the minimum interval, the last value wins; minor ones within the maximum); the record
 * re-asserted when deleted or overwritten; registered again under a new lease after etcd was
 * down for longer than the TTL; shutdown publishes the mark, then revokes (the key goes at once);
 * freeing from inside callbacks; the runtime wait bounded and naming the address. Run under
 * ASan too. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/instance.h"
#include "mm/rpc.h"
#include "mm/spi.h"

#define KEY "/modelmesh/c1/instances/node-a"

static struct ev_loop *loop;
static struct etcd_client *etcd;
static struct harness_etcd server;

struct seen {
    int registered, lost;
    int64_t lease;
    bool free_inside;
};

static void on_instance(struct instance *in, enum instance_event ev, int64_t lease_id, void *arg)
{
    struct seen *s = arg;
    if (ev == INSTANCE_REGISTERED) {
        s->registered++;
        s->lease = lease_id;
    } else {
        s->lost++;
    }
    if (s->free_inside)
        instance_free(in);
}

/* Events on KEY as a watcher sees them, with their loop time. */
struct put_seen {
    long long ms;
    bool deleted;
    struct instance_record rec;
    int64_t lease;
};
static struct put_seen seen_puts[256];
static int n_puts;

static void on_test_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                          const struct etcd_watch_batch *b, int64_t compact, void *arg)
{
    if (status < 0)
        return;
    for (size_t i = 0; i < b->n_events && n_puts < 256; i++) {
        struct put_seen *p = &seen_puts[n_puts++];
        p->ms = harness_now_ms();
        p->deleted = b->events[i].type == ETCD_EVENT_DELETE;
        p->lease = b->events[i].kv.lease;
        if (!p->deleted)
            CHECK_INT(record_decode(RECORD_INSTANCE, b->events[i].kv.value,
                                    b->events[i].kv.value_len, &p->rec, NULL),
                      0);
    }
}

/* The record now: 1 present (rec, kv lease and version filled), 0 absent, -1 error. */
static int get(struct instance_record *rec, int64_t *lease, int64_t *version)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = KEY};
    if (etcd_sync_range(etcd, &req, &r, &err) < 0)
        return -1;
    int rc = 0;
    if (r->op.n_kvs == 1) {
        rc = 1;
        if (lease)
            *lease = r->op.kvs[0].lease;
        if (version)
            *version = r->op.kvs[0].version;
        if (rec && record_decode(RECORD_INSTANCE, r->op.kvs[0].value, r->op.kvs[0].value_len, rec,
                                 &err) < 0) {
            fprintf(stderr, "record: %s\n", err.msg);
            rc = -1;
        }
    }
    etcd_response_free(r);
    return rc;
}

static void run_for(long long ms)
{
    harness_run_until(loop, NULL, NULL, ms);
}

static bool registered_n(void *arg)
{
    struct seen *s = arg;
    return s->registered >= 1;
}

static bool present(void *arg)
{
    return get(NULL, NULL, NULL) == 1;
}

static struct spi_runtime_status runtime = {.state = SPI_READY,
                                            .capacity_bytes = 5000000,
                                            .max_loading_concurrency = 2,
                                            .load_timeout_ms = 90000,
                                            .default_model_size_bytes = 33000,
                                            .version = "rt 1.2"};
static const char *const types[] = {"xgboost", "sklearn"};

static struct instance_config config(void)
{
    struct instance_config cfg = {
        .cluster = "c1",
        .id = "node-a",
        .address = "10.0.0.1:8080",
        .runtime_name = "mm-runtime",
        .model_types = types,
        .n_model_types = 2,
        .zone = "z1",
        .version = "0.1.0",
        .runtime = &runtime,
        .figures = {.capacity_bytes = 5000000},
        .lease_ttl_s = 2,
        .min_interval_ms = 2000,
        .max_interval_ms = 3000,
    };
    return cfg;
}

static void test_config_refused(void)
{
    struct instance *in = NULL;
    struct mm_error err = {0};
    struct seen s = {0};
    struct instance_config cfg = config();
    const char *bad_types[] = {"xg boost"};
    cfg.model_types = bad_types;
    cfg.n_model_types = 1;
    CHECK_INT(instance_new(etcd, &cfg, on_instance, &s, &in, &err), -EINVAL);
    CHECK(strstr(err.msg, "instance node-a: model type 'xg boost'") != NULL);
    cfg = config();
    cfg.id = "a/b";
    CHECK_INT(instance_new(etcd, &cfg, on_instance, &s, &in, &err), -EINVAL);
    CHECK(strstr(err.msg, "instance id 'a/b'") != NULL);
    cfg = config();
    cfg.address = "";
    CHECK_INT(instance_new(etcd, &cfg, on_instance, &s, &in, &err), -EINVAL);
    CHECK(strstr(err.msg, "internal address") != NULL);
    cfg = config();
    cfg.max_interval_ms = 1000;
    CHECK_INT(instance_new(etcd, &cfg, on_instance, &s, &in, &err), -EINVAL);
    cfg = config();
    cfg.lease_ttl_s = 1;
    CHECK_INT(instance_new(etcd, &cfg, on_instance, &s, &in, &err), -EINVAL);
}

struct closed {
    bool done;
    int status;
    struct instance *free_me;
};

static void on_closed(int status, const struct mm_error *err, void *arg)
{
    struct closed *c = arg;
    c->done = true;
    c->status = status;
    if (status < 0)
        fprintf(stderr, "close: %s\n", err->msg);
    instance_free(c->free_me); /* from inside the done callback */
}

static bool closed_done(void *arg)
{
    return ((struct closed *)arg)->done;
}

static bool lost_and_back(void *arg)
{
    struct seen *s = arg;
    return s->lost >= 1 && s->registered >= 2;
}

static void test_registration(void)
{
    struct instance *in = NULL;
    struct mm_error err = {0};
    struct seen s = {0};
    struct instance_config cfg = config();
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wreq = {.key = KEY};
    REQUIRE(etcd_watch_start(etcd, &wreq, on_test_watch, NULL, &w) == 0);
    run_for(300);
    REQUIRE(instance_new(etcd, &cfg, on_instance, &s, &in, &err) == 0);
    REQUIRE(harness_run_until(loop, registered_n, &s, 5000));

    /* The record: what placers need, attached to the lease it names. */
    struct instance_record rec;
    int64_t kv_lease = 0, version = 0;
    REQUIRE(get(&rec, &kv_lease, &version) == 1);
    CHECK(kv_lease != 0 && kv_lease == s.lease && kv_lease == instance_lease_id(in));
    CHECK(rec.lease == kv_lease);
    CHECK_STR(rec.address, "10.0.0.1:8080");
    CHECK_STR(rec.runtime, "mm-runtime");
    CHECK_STR(rec.zone, "z1");
    CHECK_INT(rec.labels.n, 3);
    CHECK_STR(rec.labels.label[0], "rt:mm-runtime");
    CHECK_STR(rec.labels.label[1], "mt:xgboost");
    CHECK_STR(rec.labels.label[2], "mt:sklearn");
    CHECK_INT(rec.capacity_bytes, 5000000);
    CHECK_INT(rec.loading_threads, 2);
    CHECK_INT(rec.load_timeout_ms, 90000);
    CHECK_INT(rec.default_model_size_bytes, 33000);
    CHECK_STR(rec.runtime_version, "rt 1.2");
    CHECK_STR(rec.version, "0.1.0");
    CHECK(!rec.shutting_down);
    CHECK(rec.start_ms > 1700000000000LL);
    CHECK_STR(instance_key(in), KEY);

    /* Rate limit: five significant updates within a second after a quiet spell: the first is
     * put at once, the rest wait for the minimum interval, and the last value wins. */
    run_for(2200);
    int first = n_puts;
    long long t0 = harness_now_ms();
    for (uint32_t i = 1; i <= 5; i++) {
        struct instance_figures f = {
            .capacity_bytes = 5000000, .used_bytes = i * 1000000, .loaded = i};
        instance_update(in, &f);
        run_for(200);
    }
    CHECK(harness_now_ms() - t0 < 1500);
    CHECK(n_puts - first <= 1);
    run_for(1500); /* the second put is due 2 s after the first */
    REQUIRE(n_puts - first == 2);
    CHECK_INT(seen_puts[first].rec.loaded_count, 1);
    CHECK_INT(seen_puts[first + 1].rec.loaded_count, 5);
    CHECK_INT(seen_puts[first + 1].rec.used_bytes, 5000000);
    CHECK(seen_puts[first + 1].ms - seen_puts[first].ms >= 1900);

    /* A minor change (the LRU time only) waits for the maximum interval after the last put. */
    struct instance_figures f = {.capacity_bytes = 5000000,
                                 .used_bytes = 5000000,
                                 .loaded = 5,
                                 .lru_oldest_ms = 1764000000000};
    long long last = seen_puts[first + 1].ms;
    instance_update(in, &f);
    run_for(1000); /* 1.5 s after the last put (its maximum interval is 3 s) */
    CHECK_INT(n_puts - first, 2);
    run_for(2200);
    REQUIRE(n_puts - first == 3);
    CHECK(seen_puts[first + 2].rec.lru_oldest_ms == 1764000000000);
    CHECK(seen_puts[first + 2].ms - last >= 2800 && seen_puts[first + 2].ms - last <= 3700);
    /* The same figures again: nothing to say. */
    instance_update(in, &f);
    run_for(500);
    CHECK_INT(n_puts - first, 3);

    /* A change taken back while its put is in flight (a load that started and ended within one
     * put): the record ends with the figures as they are, within the minimum interval, instead
     * of keeping the in-flight ones until some later change. etcd is frozen so that the put
     * stays in flight (shorter than the client's 1 s request timeout). */
    run_for(2100);
    struct instance_figures busy = f;
    busy.loading = 1;
    CHECK_INT(harness_freeze(server.pid), 0);
    instance_update(in, &busy); /* significant and due: its put starts and hangs */
    run_for(100);
    instance_update(in, &f); /* back to the figures etcd held before */
    run_for(200);
    CHECK_INT(kill(server.pid, SIGCONT), 0);
    run_for(2500);
    REQUIRE(n_puts - first == 5);
    CHECK_INT(seen_puts[first + 3].rec.loading_count, 1);
    CHECK_INT(seen_puts[first + 4].rec.loading_count, 0);

    /* The prefix wiped (an operator, a restore): the record comes back under the same lease. */
    struct instance_stats st;
    int64_t deleted = 0;
    CHECK_INT(etcd_sync_delete(etcd, "/modelmesh/c1/", true, &deleted, &err), 0);
    CHECK_INT(deleted, 1);
    long long wiped = harness_now_ms();
    CHECK(harness_run_until(loop, present, NULL, 4000));
    fprintf(stderr, "re-asserted %lld ms after the wipe\n", harness_now_ms() - wiped);
    REQUIRE(get(&rec, &kv_lease, NULL) == 1);
    CHECK(kv_lease == s.lease && rec.loaded_count == 5);
    instance_get_stats(in, &st);
    CHECK_INT(st.reasserts, 1);

    /* Overwritten without the lease: written again with it. */
    CHECK_INT(etcd_sync_put(etcd, KEY, "{\"v\":1,\"address\":\"x:1\"}", 0, NULL, &err), 0);
    run_for(2500);
    REQUIRE(get(&rec, &kv_lease, NULL) == 1);
    CHECK(kv_lease == s.lease);
    CHECK_STR(rec.address, "10.0.0.1:8080");
    instance_get_stats(in, &st);
    CHECK_INT(st.reasserts, 2);
    CHECK_INT(st.registrations, 1);
    etcd_watch_free(w);

    /* etcd down for longer than the TTL: the lease is given up, a new one granted when etcd is
     * back, and the record put again under it. */
    int64_t old_lease = s.lease;
    CHECK_INT(harness_etcd_stop(&server), 0);
    run_for(3500);
    CHECK_INT(harness_etcd_restart(&server), 0);
    CHECK(harness_run_until(loop, lost_and_back, &s, 10000));
    REQUIRE(get(&rec, &kv_lease, NULL) == 1);
    CHECK(s.lease != old_lease && kv_lease == s.lease && rec.lease == s.lease);
    CHECK_INT(rec.loaded_count, 5);

    /* Shutdown: the mark is published first, then the lease revoked: the key goes at once. */
    n_puts = 0;
    REQUIRE(etcd_watch_start(etcd, &wreq, on_test_watch, NULL, &w) == 0);
    run_for(300);
    struct closed c = {.free_me = in};
    instance_set_shutting_down(in);
    CHECK_INT(instance_close(in, 3000, on_closed, &c), 0);
    CHECK(!c.done); /* never inside the call */
    CHECK(harness_run_until(loop, closed_done, &c, 4000));
    CHECK_INT(c.status, 0);
    CHECK_INT(get(NULL, NULL, NULL), 0);
    run_for(300);
    REQUIRE(n_puts == 2);
    CHECK(!seen_puts[0].deleted && seen_puts[0].rec.shutting_down);
    CHECK(seen_puts[1].deleted);
    etcd_watch_free(w);
}

/* Freed from inside its own callback; freed with its grant in flight; closed with nothing
 * held (etcd down). Nothing may run afterwards (ASan). */
static void test_lifetime(void)
{
    struct instance *in = NULL;
    struct mm_error err = {0};
    struct seen s = {.free_inside = true};
    struct instance_config cfg = config();
    REQUIRE(instance_new(etcd, &cfg, on_instance, &s, &in, &err) == 0);
    REQUIRE(harness_run_until(loop, registered_n, &s, 5000));
    run_for(200);

    struct seen s2 = {0};
    REQUIRE(instance_new(etcd, &cfg, on_instance, &s2, &in, &err) == 0);
    run_for(1);
    instance_free(in);
    run_for(300);
    CHECK_INT(s2.registered, 0);

    /* etcd down: close ends at once (no lease) or at its bound, and says so. */
    CHECK_INT(harness_etcd_stop(&server), 0);
    REQUIRE(instance_new(etcd, &cfg, on_instance, &s2, &in, &err) == 0);
    run_for(300);
    struct closed c = {.free_me = in};
    CHECK_INT(instance_close(in, 1000, on_closed, &c), 0);
    CHECK_INT(instance_close(in, 1000, on_closed, &c), -EALREADY);
    CHECK(harness_run_until(loop, closed_done, &c, 3000));
    CHECK_INT(c.status, 0);
    CHECK_INT(harness_etcd_restart(&server), 0);
}

struct waited {
    bool done;
    int status;
    char msg[256];
    long long ms;
};

static void on_runtime(int status, const struct mm_error *err, const struct spi_runtime_status *st,
                       void *arg)
{
    struct waited *w = arg;
    w->done = true;
    w->status = status;
    w->ms = harness_now_ms();
    if (err)
        snprintf(w->msg, sizeof(w->msg), "%s", err->msg);
}

static bool waited_done(void *arg)
{
    return ((struct waited *)arg)->done;
}

/* A port nobody listens on: refused after the bound, naming the address. A wait cancelled:
 * never calls back. */
static void test_runtime_wait(void)
{
    struct rpc_context *ctx = NULL;
    struct spi_client *spi = NULL;
    struct mm_error err = {0};
    REQUIRE(rpc_context_new(loop, &ctx, &err) == 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", harness_free_port());
    REQUIRE(spi_client_new(ctx, target, &spi, &err) == 0);
    struct waited w = {0};
    struct instance_runtime_wait *h = NULL;
    long long t0 = harness_now_ms();
    CHECK_INT(instance_wait_runtime(spi, 1500, on_runtime, &w, &h, &err), 0);
    CHECK(!w.done);
    CHECK(harness_run_until(loop, waited_done, &w, 5000));
    CHECK_INT(w.status, -ETIMEDOUT);
    char want[128];
    snprintf(want, sizeof(want), "runtime at %s not ready after 1500 ms: ", target);
    CHECK(strstr(w.msg, want) == w.msg);
    CHECK(strstr(w.msg, "UNAVAILABLE") != NULL);
    fprintf(stderr, "refused after %lld ms: %s\n", w.ms - t0, w.msg);
    CHECK(w.ms - t0 >= 1300 && w.ms - t0 <= 3000);

    struct waited w2 = {0};
    CHECK_INT(instance_wait_runtime(spi, 1000, on_runtime, &w2, &h, &err), 0);
    run_for(150);
    instance_wait_cancel(h);
    run_for(1500);
    CHECK(!w2.done);
    CHECK_INT(instance_wait_runtime(spi, 0, on_runtime, &w2, &h, &err), -EINVAL);
    spi_client_free(spi);
    rpc_context_free(ctx);
}

int main(void)
{
    loop = EV_DEFAULT;
    REQUIRE(harness_etcd_start(&server, NULL) == 0);
    struct etcd_config cfg = {.endpoints = server.endpoint, .request_timeout_ms = 1000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &etcd, &err) == 0);
    test_config_refused();
    test_runtime_wait();
    test_registration();
    test_lifetime();
    etcd_client_free(etcd);
    harness_etcd_cleanup(&server);
    return CHECK_DONE();
}
