/* test_copies.c - the copy state machine (mm/copies.h) against a real etcd, a real mm-runtime and
 * real model files: Pending records made by the placer's txn go Loading, then Loaded with the
 * runtime's measured size under the instance's lease; the cache stays within capacity and evicts
 * the least recently used copy (its record deleted, the runtime unloaded); a copy record deleted
 * by someone else is unloaded; a load the runtime fails is Failed with its error, and the Failed
 * record expires; a load past the timeout (the runtime SIGSTOPped) is Failed "timed out after N
 * ms" and unloaded once the runtime runs again; the instance key, copies and a model record wiped
 * in one txn are put back; a revoked lease is followed by the records re-put under the new one;
 * unload_all unloads and deletes everything; a second incarnation deletes the records left by
 * the first (and one under a foreign lease), refuses by its churn guard (the Pending record
 * deleted), and refuses a Pending record whose model does not exist; a third loads at most the
 * runtime's loading concurrency at once (the rest wait Pending) and is freed with a load in flight;
 * a fourth, writing through a proxy that answers txns late, deletes a stale record and gets a
 * Pending record for the same key (seen on the watch) before the delete's answer: it loads it.
 * Run under ASan too.
 * argv[1] = mm-runtime, argv[2] = make-breast-cancer. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "faultproxy.h"
#include "harness.h"
#include "mm/copies.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mirror.h"
#include "mm/placer.h"
#include "mm/records.h"
#include "mm/rpc.h"
#include "mm/spi.h"
#include "mm/spi_sync.h"
#include "mm/storage.h"

#define CLUSTER "c1"
#define IID "node-a"
#define LOAD_TIMEOUT_MS 1500
#define FAILURE_EXPIRY_MS 2000

static struct ev_loop *loop;
static struct harness_etcd server;
static struct etcd_client *etcd;
static struct rpc_context *rpc;
static struct spi_client *spi;      /* the node's */
static struct spi_client *test_spi; /* the test's own look at the runtime */
static struct mirror *mirror;
static struct storage *storage;
static struct instance *inst;
static struct copies *copies;
static struct spi_runtime_status runtime;
static struct place_config place;
static pid_t rt_pid;
static uint64_t model_size; /* the runtime's measure of the test model */
static uint64_t capacity;
static char dir[] = "/tmp/mm-copies-XXXXXX";
static char models_root[300], cache_dir[300];
static int registrations, losses;

/* ---------------------------------------------------------------- helpers */

static void on_instance(struct instance *in, enum instance_event ev, int64_t lease_id, void *arg)
{
    if (ev == INSTANCE_REGISTERED)
        registrations++;
    else
        losses++;
    if (copies)
        copies_on_instance(copies, ev, lease_id);
}

static void key_of_copy(char *out, const char *model)
{
    REQUIRE(keys_copy(out, KEYS_MAX, CLUSTER, model, IID, NULL) == 0);
}

static void key_of_model(char *out, const char *model)
{
    REQUIRE(keys_model(out, KEYS_MAX, CLUSTER, model, NULL) == 0);
}

static void put_model(const char *id, const char *path)
{
    struct model_record rec = {0};
    snprintf(rec.type, sizeof rec.type, "xgboost");
    snprintf(rec.storage_path, sizeof rec.storage_path, "%s", path);
    rec.size_bytes = model_size;
    char key[KEYS_MAX];
    key_of_model(key, id);
    char *v = record_encode(RECORD_MODEL, &rec);
    REQUIRE(v);
    REQUIRE(etcd_sync_put(etcd, key, v, 0, NULL, NULL) == 0);
    free(v);
}

/* The copy record of model as the mirror holds it: 1 with rec (and its lease), 0 absent. */
static int mirrored_copy(const char *model, struct copy_record *rec, int64_t *lease)
{
    char key[KEYS_MAX];
    key_of_copy(key, model);
    const struct mirror_entry *e = mirror_get(mirror, key, strlen(key));
    if (!e)
        return 0;
    if (rec)
        REQUIRE(record_decode(RECORD_COPY, e->value, e->value_len, rec, NULL) == 0);
    if (lease)
        *lease = e->lease;
    return 1;
}

/* The copy record in etcd now (not the mirror): 1 / 0. */
static int etcd_copy(const char *model, struct copy_record *rec, int64_t *lease)
{
    char key[KEYS_MAX];
    key_of_copy(key, model);
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(etcd, &req, &r, NULL) == 0);
    int n = (int)r->op.n_kvs;
    if (n && rec)
        REQUIRE(record_decode(RECORD_COPY, r->op.kvs[0].value, r->op.kvs[0].value_len, rec, NULL) ==
                0);
    if (n && lease)
        *lease = r->op.kvs[0].lease;
    etcd_response_free(r);
    return n;
}

static bool key_present(const char *key)
{
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(etcd, &req, &r, NULL) == 0);
    bool present = r->op.n_kvs == 1;
    etcd_response_free(r);
    return present;
}

struct wait_state {
    const char *model;
    int state; /* a copy_state, or -1: absent */
};

static bool in_state(void *arg)
{
    struct wait_state *w = arg;
    struct copy_record rec;
    int n = mirrored_copy(w->model, &rec, NULL);
    return w->state < 0 ? n == 0 : n == 1 && (int)rec.state == w->state;
}

static bool wait_for(const char *model, int state, long long ms)
{
    struct wait_state w = {model, state};
    return harness_run_until(loop, in_state, &w, ms);
}

struct placed {
    bool done;
    int status;
    enum placer_outcome outcome;
};

static void on_placed(int status, const struct mm_error *err, const struct placer_result *res,
                      void *arg)
{
    struct placed *p = arg;
    p->done = true;
    p->status = status;
    if (status < 0)
        fprintf(stderr, "placing: %s\n", err->msg);
    else
        p->outcome = res->outcome;
}

static bool placed_done(void *arg)
{
    return ((struct placed *)arg)->done;
}

static bool model_mirrored(void *arg)
{
    return mirror_get(mirror, arg, strlen(arg)) != NULL;
}

/* Place a copy of model on this node as a placer does: one txn on the model's revision. */
static void place_copy(const char *model)
{
    char mkey[KEYS_MAX];
    key_of_model(mkey, model);
    REQUIRE(harness_run_until(loop, model_mirrored, mkey, 5000));
    const struct mirror_entry *e = mirror_get(mirror, mkey, strlen(mkey));
    char *value = strndup(e->value, e->value_len);
    REQUIRE(value);
    struct copy_record rec = {.state = COPY_PENDING, .since_ms = 1, .size_bytes = model_size};
    struct placer_req req = {.cluster = CLUSTER,
                             .model_id = model,
                             .model_mod_revision = e->mod_revision,
                             .model_value = value,
                             .target_iid = IID,
                             .target_lease = instance_lease_id(inst),
                             .copy = &rec};
    struct placed p = {0};
    struct mm_error err = {0};
    REQUIRE(placer_place(etcd, &req, on_placed, &p, NULL, &err) == 0);
    free(value);
    REQUIRE(harness_run_until(loop, placed_done, &p, 5000));
    REQUIRE(p.status == 0);
    CHECK_INT(p.outcome, PLACER_PLACED);
}

/* The runtime's answer for model: its size, or 0 when it does not hold it. */
static uint64_t runtime_size(const char *model)
{
    struct spi_result res;
    int rc = spi_sync_model_size(test_spi, model, 5000, &res);
    if (rc == -ENOENT)
        return 0;
    CHECK_INT(rc, 0);
    return res.size_bytes;
}

/* No pod ever exceeds its capacity: what the runtime holds, by its own answers. */
static void check_within_capacity(const char *const *models, size_t n)
{
    uint64_t held = 0;
    for (size_t i = 0; i < n; i++)
        held += runtime_size(models[i]);
    CHECK(held <= capacity);
    CHECK(instance_record_of(inst)->used_bytes <= capacity);
}

static bool stats_at_least(void *arg)
{
    const uint64_t *want = arg; /* {field offset, value} */
    struct copies_stats st;
    copies_get_stats(copies, &st);
    return *(const uint64_t *)((const char *)&st + want[0]) >= want[1];
}

static bool wait_stat(size_t offset, uint64_t value, long long ms)
{
    uint64_t want[2] = {offset, value};
    return harness_run_until(loop, stats_at_least, want, ms);
}

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct copies_stats stats(void)
{
    struct copies_stats st;
    copies_get_stats(copies, &st);
    return st;
}

static struct etcd_client *copies_etcd; /* the client copies write with; NULL = etcd */

static void new_copies(int64_t churn_age_ms)
{
    struct copies_config cfg = {
        .cluster = CLUSTER,
        .iid = IID,
        .etcd = copies_etcd ? copies_etcd : etcd,
        .mirror = mirror,
        .spi = spi,
        .storage = storage,
        .instance = inst,
        .runtime = &runtime,
        .place = &place,
        .load_timeout_ms = LOAD_TIMEOUT_MS,
        .min_churn_age_ms = churn_age_ms,
        .unload_wait_ms = 5000, /* the requests' end, not this, must start the unload */
    };
    struct mm_error err = {0};
    if (copies_new(&cfg, &copies, &err) < 0) {
        fprintf(stderr, "copies_new: %s\n", err.msg);
        REQUIRE(0);
    }
}

/* ---------------------------------------------------------------- the first incarnation */

static void test_load(void)
{
    put_model("a", "models/a.json");
    place_copy("a");
    REQUIRE(wait_for("a", COPY_LOADED, 10000));
    struct copy_record rec;
    int64_t lease = 0;
    REQUIRE(etcd_copy("a", &rec, &lease) == 1);
    CHECK_INT(rec.state, COPY_LOADED);
    CHECK_INT(rec.size_bytes, model_size);
    CHECK(rec.since_ms > 0);
    CHECK(lease != 0 && lease == instance_lease_id(inst));
    CHECK_INT(runtime_size("a"), model_size);
    struct copies_info info;
    CHECK_INT(copies_get(copies, "a", 1, &info), 0);
    CHECK_INT(info.state, COPY_LOADED);
    CHECK_INT(info.size_bytes, model_size);
    struct copies_stats st = stats();
    CHECK_INT(st.loads_started, 1);
    CHECK_INT(st.loads_ok, 1);
    /* The cache's figures reach the instance record. */
    CHECK_INT(instance_record_of(inst)->used_bytes, model_size);
    CHECK_INT(instance_record_of(inst)->loaded_count, 1);
    /* The node's copy is in its cache dir, never the models root. */
    CHECK_INT(copies_request_begin(copies, "zz", 2, 1), -ENOENT);
}

static void test_evict_lru(void)
{
    put_model("b", "models/b.json");
    put_model("c", "models/c.json");
    put_model("d", "models/d.json");
    place_copy("b");
    REQUIRE(wait_for("b", COPY_LOADED, 10000));
    place_copy("c");
    REQUIRE(wait_for("c", COPY_LOADED, 10000));
    static const char *const all[] = {"a", "b", "c", "d"};
    check_within_capacity(all, 4);
    /* a is used: b becomes the least recently used. */
    harness_run_until(loop, NULL, NULL, 20);
    CHECK_INT(copies_request_begin(copies, "a", 1, epoch_ms()), 0);
    copies_request_end(copies, "a", 1);
    struct copies_info list[8];
    REQUIRE(copies_list(copies, true, list, 8) == 3);
    CHECK_STR(list[0].model_id, "a");
    CHECK_STR(list[2].model_id, "b");

    /* d needs room: b goes, a and c stay. */
    place_copy("d");
    REQUIRE(wait_for("d", COPY_LOADED, 10000));
    REQUIRE(wait_for("b", -1, 5000));
    CHECK(etcd_copy("b", NULL, NULL) == 0);
    CHECK(wait_stat(offsetof(struct copies_stats, unloads), 1, 5000));
    CHECK_INT(runtime_size("b"), 0);
    CHECK_INT(runtime_size("a"), model_size);
    CHECK_INT(runtime_size("c"), model_size);
    CHECK_INT(runtime_size("d"), model_size);
    CHECK_INT(stats().evictions, 1);
    CHECK_INT(copies_get(copies, "b", 1, NULL), -ENOENT);
    check_within_capacity(all, 4);
    REQUIRE(copies_list(copies, false, list, 8) == 3);
    CHECK_STR(list[0].model_id, "d");
    CHECK_STR(list[1].model_id, "a");
    CHECK_STR(list[2].model_id, "c");
}

static void test_record_deleted(void)
{
    uint64_t unloads = stats().unloads, loads = stats().loads_ok;
    char key[KEYS_MAX];
    key_of_copy(key, "a");
    /* With a request in flight the unload waits for it; a new placement meanwhile is loaded
     * once the old copy is unloaded. */
    CHECK_INT(copies_request_begin(copies, "a", 1, epoch_ms()), 0);
    REQUIRE(etcd_sync_delete(etcd, key, false, NULL, NULL) == 0);
    REQUIRE(wait_for("a", -1, 5000));
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(stats().unloads, unloads);
    CHECK_INT(runtime_size("a"), model_size);
    CHECK_INT(copies_get(copies, "a", 1, NULL), -ENOENT);
    CHECK_INT(copies_request_begin(copies, "a", 1, epoch_ms()), -ENOENT); /* no new requests */
    place_copy("a");
    REQUIRE(harness_run_until(loop, NULL, NULL, 200));
    CHECK(mirrored_copy("a", NULL, NULL) == 1); /* kept Pending while the old copy unloads */
    CHECK_INT(stats().unloads, unloads);
    long long t0 = harness_now_ms();
    copies_request_end(copies, "a", 1);
    CHECK(wait_stat(offsetof(struct copies_stats, unloads), unloads + 1, 5000));
    CHECK(harness_now_ms() - t0 < 2000);
    REQUIRE(wait_for("a", COPY_LOADED, 10000));
    CHECK_INT(stats().loads_ok, loads + 1);
    CHECK_INT(runtime_size("a"), model_size);

    /* Without requests: unloaded at once, and not put back. */
    REQUIRE(etcd_sync_delete(etcd, key, false, NULL, NULL) == 0);
    CHECK(wait_stat(offsetof(struct copies_stats, unloads), unloads + 2, 5000));
    CHECK_INT(runtime_size("a"), 0);
    CHECK_INT(copies_get(copies, "a", 1, NULL), -ENOENT);
    CHECK(etcd_copy("a", NULL, NULL) == 0);
    CHECK_INT(stats().reasserts, 0);
}

static void test_runtime_refuses(void)
{
    put_model("bad", "models/bad.json");
    place_copy("bad");
    REQUIRE(wait_for("bad", COPY_FAILED, 10000));
    long long failed_at = harness_now_ms();
    struct copy_record rec;
    int64_t lease = 0;
    REQUIRE(etcd_copy("bad", &rec, &lease) == 1);
    CHECK(strstr(rec.error, "loadModel bad") != NULL); /* the runtime's error, naming the call */
    CHECK(lease == instance_lease_id(inst));
    CHECK_INT(stats().loads_failed, 1);
    struct copies_info info;
    CHECK_INT(copies_get(copies, "bad", 3, &info), 0);
    CHECK_INT(info.state, COPY_FAILED);
    /* The failure expires: this node deletes the record. */
    REQUIRE(wait_for("bad", -1, FAILURE_EXPIRY_MS + 3000));
    long long took = harness_now_ms() - failed_at;
    fprintf(stderr, "failure record of bad deleted %lld ms after it was seen\n", took);
    CHECK(took >= FAILURE_EXPIRY_MS - 300);
    CHECK_INT(copies_get(copies, "bad", 3, NULL), -ENOENT);
}

static void test_load_timeout(void)
{
    uint64_t unloads = stats().unloads;
    put_model("e", "models/e.json");
    REQUIRE(kill(rt_pid, SIGSTOP) == 0);
    place_copy("e");
    long long t0 = harness_now_ms();
    bool failed = wait_for("e", COPY_FAILED, LOAD_TIMEOUT_MS + 5000);
    long long took = harness_now_ms() - t0;
    struct copy_record rec = {0};
    int n = etcd_copy("e", &rec, NULL);
    REQUIRE(kill(rt_pid, SIGCONT) == 0);
    REQUIRE(failed);
    fprintf(stderr, "load of e with the runtime stopped failed after %lld ms\n", took);
    CHECK(took >= LOAD_TIMEOUT_MS - 100);
    CHECK_INT(n, 1);
    CHECK_STR(rec.error, "timed out after 1500 ms");
    CHECK_INT(stats().loads_timed_out, 1);
    /* Once the runtime runs again it is asked to unload what it may have loaded. */
    CHECK(wait_stat(offsetof(struct copies_stats, unloads), unloads + 1, 10000));
    CHECK_INT(runtime_size("e"), 0);
    REQUIRE(wait_for("e", -1, FAILURE_EXPIRY_MS + 3000));
}

static void test_wipe(void)
{
    uint64_t unloads = stats().unloads, reasserts = stats().reasserts;
    char ck[KEYS_MAX], dk[KEYS_MAX], ik[KEYS_MAX], mk[KEYS_MAX];
    key_of_copy(ck, "c");
    key_of_copy(dk, "d");
    key_of_model(mk, "c");
    REQUIRE(keys_instance(ik, sizeof ik, CLUSTER, IID, NULL) == 0);
    /* One revision takes the instance key, both copies and one model record. */
    const struct etcd_op ops[] = {
        {.kind = ETCD_OP_DELETE, .key = ck},
        {.kind = ETCD_OP_DELETE, .key = dk},
        {.kind = ETCD_OP_DELETE, .key = ik},
        {.kind = ETCD_OP_DELETE, .key = mk},
    };
    const struct etcd_txn txn = {.success = ops, .n_success = 4};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_txn(etcd, &txn, &r, NULL) == 0);
    REQUIRE(r->succeeded);
    etcd_response_free(r);
    CHECK(wait_stat(offsetof(struct copies_stats, reasserts), reasserts + 2, 5000));
    REQUIRE(wait_for("c", COPY_LOADED, 5000));
    REQUIRE(wait_for("d", COPY_LOADED, 5000));
    int64_t lease = 0;
    struct copy_record rec;
    CHECK(etcd_copy("c", &rec, &lease) == 1);
    CHECK_INT(rec.state, COPY_LOADED);
    CHECK_INT(rec.size_bytes, model_size);
    CHECK(lease == instance_lease_id(inst));
    CHECK(key_present(mk)); /* the model record came back with its copy */
    CHECK_INT(stats().reasserts, reasserts + 2);
    CHECK_INT(stats().unloads, unloads);
    CHECK_INT(runtime_size("c"), model_size);
    CHECK_INT(runtime_size("d"), model_size);
}

static bool new_lease_copies(void *arg)
{
    int64_t old = *(int64_t *)arg, now = instance_lease_id(inst);
    int64_t lc = 0, ld = 0;
    struct copy_record rc, rd;
    return now != 0 && now != old && mirrored_copy("c", &rc, &lc) == 1 &&
           mirrored_copy("d", &rd, &ld) == 1 && lc == now && ld == now && rc.state == COPY_LOADED &&
           rd.state == COPY_LOADED;
}

static void test_lease_lost(void)
{
    uint64_t unloads = stats().unloads;
    int64_t old = instance_lease_id(inst);
    REQUIRE(old != 0);
    int regs = registrations;
    REQUIRE(etcd_sync_lease_revoke(etcd, old, NULL) == 0);
    long long t0 = harness_now_ms();
    CHECK(harness_run_until(loop, new_lease_copies, &old, 10000));
    fprintf(stderr, "copies re-put under the new lease %lld ms after the revoke\n",
            harness_now_ms() - t0);
    CHECK(registrations > regs);
    CHECK(losses >= 1);
    int64_t lease = 0;
    CHECK(etcd_copy("c", NULL, &lease) == 1 && lease == instance_lease_id(inst));
    CHECK(etcd_copy("d", NULL, &lease) == 1 && lease == instance_lease_id(inst));
    CHECK_INT(stats().unloads, unloads);
    CHECK_INT(runtime_size("c"), model_size);
}

struct unloaded {
    bool done;
    int status;
};

static void on_unloaded_all(int status, void *arg)
{
    struct unloaded *u = arg;
    u->done = true;
    u->status = status;
}

static bool unloaded_done(void *arg)
{
    return ((struct unloaded *)arg)->done;
}

static void test_unload_all(void)
{
    struct unloaded u = {0};
    CHECK_INT(copies_unload_all(copies, 5000, on_unloaded_all, &u), 0);
    CHECK_INT(copies_unload_all(copies, 5000, on_unloaded_all, &u), -EALREADY);
    CHECK(!u.done); /* never from inside the call */
    REQUIRE(harness_run_until(loop, unloaded_done, &u, 8000));
    CHECK_INT(u.status, 0);
    CHECK_INT(runtime_size("c"), 0);
    CHECK_INT(runtime_size("d"), 0);
    CHECK(wait_for("c", -1, 5000));
    CHECK(wait_for("d", -1, 5000));
    CHECK_INT(copies_list(copies, false, NULL, 0), 0);
    /* Shutting down: a new Pending record is refused. */
    uint64_t refusals = stats().refusals;
    put_model("late", "models/f.json");
    place_copy("late");
    CHECK(wait_stat(offsetof(struct copies_stats, refusals), refusals + 1, 5000));
    CHECK(wait_for("late", -1, 5000));
    copies_free(copies);
    copies = NULL;
}

/* ---------------------------------------------------------------- the second incarnation */

static void put_copy_record(const char *model, enum copy_state state, int64_t lease)
{
    struct copy_record rec = {.state = state, .since_ms = 1, .size_bytes = model_size};
    char key[KEYS_MAX];
    key_of_copy(key, model);
    char *v = record_encode(RECORD_COPY, &rec);
    REQUIRE(v);
    REQUIRE(etcd_sync_put(etcd, key, v, lease, NULL, NULL) == 0);
    free(v);
}

static void test_stale_and_churn(void)
{
    /* Left by an earlier run: one under a lease that is not this instance's, one under none. */
    int64_t foreign = 0;
    REQUIRE(etcd_sync_lease_grant(etcd, 60, &foreign, NULL) == 0);
    put_model("old1", "models/a.json");
    put_copy_record("old1", COPY_LOADED, foreign);
    put_copy_record("old2", COPY_PENDING, 0);
    REQUIRE(harness_run_until(loop, NULL, NULL, 200)); /* into the mirror */
    new_copies(3600000);
    CHECK(wait_stat(offsetof(struct copies_stats, stale_deleted), 2, 5000));
    CHECK(wait_for("old1", -1, 5000));
    CHECK(wait_for("old2", -1, 5000));
    CHECK_INT(stats().stale_deleted, 2);

    /* Three fit; the fourth would evict a copy younger than the churn age: refused. */
    put_model("f", "models/f.json");
    put_model("g", "models/g.json");
    put_model("h", "models/h.json");
    put_model("i", "models/i.json");
    place_copy("f");
    place_copy("g");
    place_copy("h");
    REQUIRE(wait_for("f", COPY_LOADED, 10000));
    REQUIRE(wait_for("g", COPY_LOADED, 10000));
    REQUIRE(wait_for("h", COPY_LOADED, 10000));
    place_copy("i");
    CHECK(wait_stat(offsetof(struct copies_stats, refusals), 1, 5000));
    CHECK(wait_for("i", -1, 5000));
    CHECK_INT(stats().refusals, 1);
    CHECK_INT(stats().evictions, 0);
    CHECK_INT(runtime_size("i"), 0);
    static const char *const all[] = {"f", "g", "h", "i"};
    check_within_capacity(all, 4);
    CHECK_INT(runtime_size("f"), model_size);

    /* A Pending record whose model is not registered. */
    put_copy_record("ghost", COPY_PENDING, instance_lease_id(inst));
    CHECK(wait_stat(offsetof(struct copies_stats, refusals), 2, 5000));
    CHECK(wait_for("ghost", -1, 5000));
    CHECK_INT(stats().refusals, 2);
    CHECK_INT(stats().loads_started, 3);
}

/* A third incarnation freed while its load is in flight: nothing calls back afterwards. */
static bool loading_now(void *arg)
{
    struct copies_info info;
    return copies_get(copies, "k", 1, &info) == 0 && info.state == COPY_LOADING;
}

static void test_free_while_loading(void)
{
    copies_free(copies);
    copies = NULL;
    new_copies(1); /* f, g and h are not held by this one: deleted */
    CHECK(wait_stat(offsetof(struct copies_stats, stale_deleted), 3, 5000));

    /* The runtime loads two at once (--max-loading-concurrency 2): the third waits, Pending. */
    put_model("l", "models/b.json");
    put_model("m", "models/c.json");
    put_model("n", "models/d.json");
    REQUIRE(kill(rt_pid, SIGSTOP) == 0);
    place_copy("l");
    place_copy("m");
    place_copy("n");
    harness_run_until(loop, NULL, NULL, 500);
    int loading = 0, pending = 0;
    static const char *const lmn[] = {"l", "m", "n"};
    for (int i = 0; i < 3; i++) {
        struct copy_record rec = {0};
        if (etcd_copy(lmn[i], &rec, NULL) == 1) {
            loading += rec.state == COPY_LOADING;
            pending += rec.state == COPY_PENDING;
        }
    }
    CHECK_INT(instance_record_of(inst)->loading_count, 3);
    REQUIRE(kill(rt_pid, SIGCONT) == 0);
    CHECK_INT(loading, 2);
    CHECK_INT(pending, 1);
    for (int i = 0; i < 3; i++)
        CHECK(wait_for(lmn[i], COPY_LOADED, 10000));

    /* Freed with a load in flight (an eviction too): nothing calls back afterwards. */
    put_model("k", "models/a.json");
    place_copy("k");
    CHECK(harness_run_until(loop, loading_now, NULL, 5000));
    copies_free(copies);
    copies = NULL;
    harness_run_until(loop, NULL, NULL, 500);
}

/* A write's answer that comes after the watch has told of a later change. This incarnation
 * writes through a proxy that sends txn answers at 100 bytes/s (a second or more late), while
 * its mirror watches etcd directly. A stale record of an earlier run is deleted (applied at
 * once, answered late); a placer puts a Pending record for the same key right after; its
 * event admits the copy while the delete's answer is still coming. That answer must not make
 * the copy forget the Pending record it has seen: the copy goes Loading, then Loaded. */
static bool key_absent(void *arg)
{
    return !key_present(arg);
}

static void test_late_answer(void)
{
    struct faultproxy fp = {0};
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", server.client_port, NULL) == 0);
    struct etcd_config ecfg = {.endpoints = fp.url, .request_timeout_ms = 20000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &ecfg, &copies_etcd, &err) == 0);
    const struct faultproxy_fault slow = {
        .kind = FAULTPROXY_SLOW, .match = "/v3/kv/txn", .count = -1, .bytes = 100};
    faultproxy_set(&fp, &slow);

    /* the earlier incarnations' records go first: q is the only one this one deletes */
    REQUIRE(etcd_sync_delete(etcd, "/modelmesh/" CLUSTER "/copies/", true, NULL, NULL) >= 0);
    int64_t foreign = 0;
    REQUIRE(etcd_sync_lease_grant(etcd, 60, &foreign, NULL) == 0);
    put_model("q", "models/a.json");
    put_copy_record("q", COPY_LOADED, foreign);
    REQUIRE(harness_run_until(loop, NULL, NULL, 200)); /* into the mirror */
    new_copies(1);
    char key[KEYS_MAX];
    key_of_copy(key, "q");
    REQUIRE(harness_run_until(loop, key_absent, key, 5000)); /* applied; its answer trickles */
    long long t0 = harness_now_ms();
    place_copy("q");
    bool loaded = wait_for("q", COPY_LOADED, 20000);
    CHECK(loaded);
    fprintf(stderr, "a late delete answer: q %s %lld ms after it was placed\n",
            loaded ? "Loaded" : "still not Loaded", harness_now_ms() - t0);
    CHECK_INT(runtime_size("q"), model_size);
    CHECK(faultproxy_faults(&fp) >= 2); /* the delete and the Loading put came slowly */
    copies_free(copies);
    copies = NULL;
    etcd_client_free(copies_etcd);
    copies_etcd = NULL;
    faultproxy_stop(&fp);
}

/* ---------------------------------------------------------------- setup */

static void start_runtime(uint64_t cap, const char *models_dir, int *port)
{
    char cap_s[32], size_s[32];
    snprintf(cap_s, sizeof cap_s, "%llu", (unsigned long long)cap);
    snprintf(size_s, sizeof size_s, "%llu", (unsigned long long)(model_size ? model_size : 1000));
    char *argv[] = {(char *)getenv("MM_TEST_RUNTIME"),
                    "--listen",
                    "127.0.0.1:0",
                    "--capacity-bytes",
                    cap_s,
                    "--default-model-size",
                    size_s,
                    "--max-loading-concurrency",
                    "2",
                    "--models-dir",
                    (char *)models_dir,
                    "--models-dir", /* where the cache dir's links lead */
                    models_root,
                    "--log-level",
                    "warn",
                    NULL};
    REQUIRE(harness_spawn_listening(argv, 15000, &rt_pid, port) == 0);
}

static bool mirror_synced(void *arg)
{
    return mirror_state(mirror) == MIRROR_SYNCED;
}

static bool registered(void *arg)
{
    return registrations >= 1;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    setenv("MM_TEST_RUNTIME", argv[1], 1);
    mm_log_set_level(getenv("MM_TEST_DEBUG") ? MM_LOG_DEBUG : MM_LOG_WARN);
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(models_root, sizeof models_root, "%s/root", dir);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/models' && '%s' '%s' >/dev/null", models_root, argv[2],
             dir);
    REQUIRE(system(cmd) == 0);
    snprintf(cmd, sizeof cmd,
             "cd '%s/models' && for m in a b c d e f g h i; do cp '%s/xgboost/breast-cancer.json' "
             "$m.json; done && echo 'not a model' > bad.json",
             models_root, dir);
    REQUIRE(system(cmd) == 0);

    loop = ev_loop_new(EVFLAG_AUTO); /* not the default loop: it would reap our children */
    REQUIRE(harness_etcd_start(&server, NULL) == 0);
    struct etcd_config ecfg = {.endpoints = server.endpoint, .request_timeout_ms = 2000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &ecfg, &etcd, &err) == 0);
    REQUIRE(rpc_context_new(loop, &rpc, &err) == 0);

    /* The model's measured size, from a runtime of its own. */
    int port = 0;
    char probe_dir[400];
    snprintf(probe_dir, sizeof probe_dir, "%s/models", models_root);
    start_runtime(1ULL << 30, probe_dir, &port);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    struct spi_client *probe = NULL;
    REQUIRE(spi_client_new(rpc, target, &probe, &err) == 0);
    char probe_path[500];
    snprintf(probe_path, sizeof probe_path, "%s/a.json", probe_dir);
    struct spi_model pm = {.id = "probe", .type = "xgboost", .path = probe_path};
    struct spi_result res;
    REQUIRE(spi_sync_load_model(probe, &pm, 10000, &res) == 0);
    model_size = res.size_bytes;
    REQUIRE(model_size > 0);
    spi_client_free(probe);
    harness_stop_pid(rt_pid, 5000);

    /* Room for three copies: 3.5 sizes, less the 3 % reserve, is 3.4. */
    capacity = model_size * 3 + model_size / 2;
    REQUIRE(mkdir(cache_dir, 0700) == 0);
    start_runtime(capacity, cache_dir, &port);
    fprintf(stderr, "model size %llu bytes, capacity %llu, runtime pid %d\n",
            (unsigned long long)model_size, (unsigned long long)capacity, (int)rt_pid);
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    REQUIRE(spi_client_new(rpc, target, &spi, &err) == 0);
    REQUIRE(spi_client_new(rpc, target, &test_spi, &err) == 0);
    REQUIRE(spi_sync_runtime_status(spi, 5000, &res) == 0);
    runtime = res.runtime;
    CHECK_INT(runtime.capacity_bytes, capacity);

    struct storage_config scfg = {.cache_dir = cache_dir, .models_root = models_root};
    REQUIRE(storage_new(loop, &scfg, &storage, &err) == 0);
    REQUIRE(mirror_new(etcd, "/modelmesh/" CLUSTER "/", NULL, &mirror, &err) == 0);
    REQUIRE(mirror_start(mirror) == 0);
    REQUIRE(harness_run_until(loop, mirror_synced, NULL, 5000));
    static const char *const types[] = {"xgboost"};
    struct instance_config icfg = {
        .cluster = CLUSTER,
        .id = IID,
        .address = "127.0.0.1:8080",
        .runtime_name = "mm-runtime",
        .model_types = types,
        .n_model_types = 1,
        .runtime = &runtime,
        .figures = {.capacity_bytes = capacity},
        .lease_ttl_s = 2,
        .min_interval_ms = 50,
        .max_interval_ms = 200,
    };
    REQUIRE(instance_new(etcd, &icfg, on_instance, NULL, &inst, &err) == 0);
    REQUIRE(harness_run_until(loop, registered, NULL, 5000));
    place_config_init(&place);
    place.failure_expiry_ms = FAILURE_EXPIRY_MS;
    place.failure_expiry_used_ms = FAILURE_EXPIRY_MS;

    new_copies(1);
    test_load();
    test_evict_lru();
    test_record_deleted();
    test_runtime_refuses();
    test_load_timeout();
    test_wipe();
    test_lease_lost();
    test_unload_all();
    test_stale_and_churn();
    test_free_while_loading();
    test_late_answer();

    copies_free(copies);
    instance_free(inst);
    mirror_free(mirror);
    storage_free(storage);
    spi_client_free(spi);
    spi_client_free(test_spi);
    harness_stop_pid(rt_pid, 5000);
    rpc_context_free(rpc);
    etcd_client_free(etcd);
    harness_etcd_cleanup(&server);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    system(cmd);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
