/* test_placer.c - placement as one etcd txn (mm/placer.h) against a real etcd: 200 concurrent
 * placements of one model from 3 clients, all decided on the same model revision and spread
 * over 3 targets, make exactly one copy (one PLACED, every other LOST_RACE, and each loser's
 * re-read shows the copy); the same without a barrier between reading and placing; a target
 * whose instance key was deleted or re-registered under another lease is TARGET_GONE; the copy
 * is attached to the target's lease (revoking it removes the copy); a missing model is -ENOENT
 * naming model and target; bad input is refused; cancel means no callback; freeing the client
 * ends a pending placement with -ECANCELED. Run under ASan too. */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/keys.h"
#include "mm/placer.h"
#include "mm/records.h"

#define CLUSTER "c1"
#define N_NODES 3
#define N_ATTEMPTS 200
#define MAX_ROUNDS 5

static struct ev_loop *loop;
static struct harness_etcd server;
static struct etcd_client *clients[N_NODES];
static int64_t leases[N_NODES];
static const char *const iids[N_NODES] = {"i0", "i1", "i2"};

static void put_instance(int i)
{
    struct instance_record rec = {0};
    snprintf(rec.address, sizeof rec.address, "127.0.0.1:%d", 9000 + i);
    rec.capacity_bytes = 1 << 30;
    rec.lease = leases[i];
    char key[KEYS_MAX];
    REQUIRE(keys_instance(key, sizeof key, CLUSTER, iids[i], NULL) == 0);
    char *v = record_encode(RECORD_INSTANCE, &rec);
    REQUIRE(v);
    REQUIRE(etcd_sync_put(clients[0], key, v, leases[i], NULL, NULL) == 0);
    free(v);
}

static void put_model(const char *id)
{
    struct model_record rec = {0};
    snprintf(rec.type, sizeof rec.type, "sklearn");
    rec.size_bytes = 1000000;
    char key[KEYS_MAX];
    REQUIRE(keys_model(key, sizeof key, CLUSTER, id, NULL) == 0);
    char *v = record_encode(RECORD_MODEL, &rec);
    REQUIRE(v);
    REQUIRE(etcd_sync_put(clients[0], key, v, 0, NULL, NULL) == 0);
    free(v);
}

/* The copies of a model now: their count; the first's lease and state in *lease / *state. */
static int count_copies(const char *model, int64_t *lease, enum copy_state *state)
{
    char key[KEYS_MAX];
    REQUIRE(keys_copies_of(key, sizeof key, CLUSTER, model, NULL) == 0);
    struct etcd_range_req req = {.key = key, .prefix = true};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(clients[0], &req, &r, NULL) == 0);
    int n = (int)r->op.n_kvs;
    if (n > 0 && lease)
        *lease = r->op.kvs[0].lease;
    if (n > 0 && state) {
        struct copy_record c;
        CHECK_INT(record_decode(RECORD_COPY, r->op.kvs[0].value, r->op.kvs[0].value_len, &c, NULL),
                  0);
        *state = c.state;
    }
    etcd_response_free(r);
    return n;
}

/* --- one attempt: read the model and its copies, place if none, re-read on a lost race --- */

enum attempt_end { END_NONE, END_PLACED, END_LOST_SAW_COPY, END_SAW_COPY, END_ERROR };

struct attempt {
    int index;
    struct etcd_client *etcd;
    const char *model;
    bool barrier; /* wait for the release before placing */
    int64_t model_rev;
    char *model_value;
    int rounds;
    int placed, lost, gone; /* placer outcomes seen */
    enum attempt_end end;
    bool read_done;
};

struct herd {
    struct attempt a[N_ATTEMPTS];
    int reads_done;
    int ended;
};
static struct herd herd;

static void attempt_read(struct attempt *a);

static void end_attempt(struct attempt *a, enum attempt_end e)
{
    a->end = e;
    herd.ended++;
}

static void on_placed(int status, const struct mm_error *err, const struct placer_result *res,
                      void *arg)
{
    struct attempt *a = arg;
    if (status < 0) {
        fprintf(stderr, "attempt %d: %s\n", a->index, err->msg);
        end_attempt(a, END_ERROR);
        return;
    }
    switch (res->outcome) {
    case PLACER_PLACED:
        a->placed++;
        end_attempt(a, END_PLACED);
        return;
    case PLACER_LOST_RACE:
        a->lost++;
        /* what was read back already says whether a copy exists; the test re-reads anyway,
         * as a placer that re-decides would */
        CHECK(res->model != NULL);
        break;
    case PLACER_TARGET_GONE:
        a->gone++;
        break;
    }
    attempt_read(a);
}

static void place(struct attempt *a)
{
    struct copy_record copy = {.state = COPY_PENDING, .since_ms = 1, .size_bytes = 1000000};
    int t = (a->index + a->rounds) % N_NODES; /* round-robin: the targets differ */
    struct placer_req req = {.cluster = CLUSTER,
                             .model_id = a->model,
                             .model_mod_revision = a->model_rev,
                             .model_value = a->model_value,
                             .target_iid = iids[t],
                             .target_lease = leases[t],
                             .copy = &copy};
    struct mm_error err = {0};
    a->rounds++;
    int rc = placer_place(a->etcd, &req, on_placed, a, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "attempt %d: %s\n", a->index, err.msg);
        end_attempt(a, END_ERROR);
    }
}

static void on_read(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct attempt *a = arg;
    if (status < 0 || resp->n_results != 2 || resp->results[0].n_kvs != 1) {
        fprintf(stderr, "attempt %d read: %s\n", a->index, status < 0 ? err->msg : "bad reply");
        end_attempt(a, END_ERROR);
        return;
    }
    const struct etcd_kv *m = &resp->results[0].kvs[0];
    bool first = !a->read_done;
    a->read_done = true;
    if (resp->results[1].n_kvs > 0) {
        end_attempt(a, a->lost ? END_LOST_SAW_COPY : END_SAW_COPY);
        if (first)
            herd.reads_done++;
        return;
    }
    free(a->model_value);
    a->model_value = strdup(m->value);
    a->model_rev = m->mod_revision;
    if (a->rounds >= MAX_ROUNDS) {
        fprintf(stderr, "attempt %d: no copy after %d rounds\n", a->index, a->rounds);
        end_attempt(a, END_ERROR);
        return;
    }
    if (first)
        herd.reads_done++;
    if (!(first && a->barrier))
        place(a);
}

static void attempt_read(struct attempt *a)
{
    char mkey[KEYS_MAX], ckey[KEYS_MAX];
    REQUIRE(keys_model(mkey, sizeof mkey, CLUSTER, a->model, NULL) == 0);
    REQUIRE(keys_copies_of(ckey, sizeof ckey, CLUSTER, a->model, NULL) == 0);
    /* One read-only txn: the model and its copies at one revision. */
    const struct etcd_op ops[] = {{.kind = ETCD_OP_RANGE, .key = mkey},
                                  {.kind = ETCD_OP_RANGE, .key = ckey, .prefix = true}};
    const struct etcd_txn txn = {.success = ops, .n_success = 2};
    REQUIRE(etcd_txn(a->etcd, &txn, on_read, a, NULL) == 0);
}

static bool all_reads_done(void *arg)
{
    (void)arg;
    return herd.reads_done == N_ATTEMPTS;
}

static bool all_ended(void *arg)
{
    (void)arg;
    return herd.ended == N_ATTEMPTS;
}

static void run_herd(const char *model, bool barrier)
{
    memset(&herd, 0, sizeof herd);
    put_model(model);
    for (int i = 0; i < N_ATTEMPTS; i++) {
        struct attempt *a = &herd.a[i];
        a->index = i;
        a->etcd = clients[i % N_NODES];
        a->model = model;
        a->barrier = barrier;
        attempt_read(a);
    }
    if (barrier) {
        /* Every attempt has decided on the same revision: the herd, released at once. */
        REQUIRE(harness_run_until(loop, all_reads_done, NULL, 30000));
        int64_t rev0 = herd.a[0].model_rev;
        for (int i = 0; i < N_ATTEMPTS; i++) {
            CHECK_INT(herd.a[i].model_rev, rev0);
            if (herd.a[i].end == END_NONE)
                place(&herd.a[i]);
        }
    }
    REQUIRE(harness_run_until(loop, all_ended, NULL, 60000));
    int placed = 0, lost = 0, gone = 0, ends[END_ERROR + 1] = {0}, first_lost = 0;
    for (int i = 0; i < N_ATTEMPTS; i++) {
        struct attempt *a = &herd.a[i];
        placed += a->placed;
        lost += a->lost;
        gone += a->gone;
        ends[a->end]++;
        first_lost += a->lost > 0 && a->placed == 0 && a->rounds == 1;
        free(a->model_value);
    }
    int n = count_copies(model, NULL, NULL);
    fprintf(stderr,
            "%s (%s): %d attempts from %d clients: %d PLACED, %d LOST_RACE (%d attempts lost "
            "once, re-read, saw the copy), %d TARGET_GONE; %d saw the copy on their first "
            "read, %d errors; %d copy key(s)\n",
            model, barrier ? "all decided on one revision" : "no barrier", N_ATTEMPTS, N_NODES,
            placed, lost, first_lost, gone, ends[END_SAW_COPY], ends[END_ERROR], n);
    CHECK_INT(n, 1);
    CHECK_INT(placed, 1);
    CHECK_INT(ends[END_PLACED], 1);
    CHECK_INT(gone, 0);
    CHECK_INT(ends[END_ERROR], 0);
    CHECK_INT(ends[END_NONE], 0);
    if (barrier) {
        /* Every attempt placed once: one won, every other lost and saw the copy on re-read. */
        CHECK_INT(lost, N_ATTEMPTS - 1);
        CHECK_INT(ends[END_LOST_SAW_COPY], N_ATTEMPTS - 1);
        CHECK_INT(first_lost, N_ATTEMPTS - 1);
    } else {
        CHECK_INT(ends[END_PLACED] + ends[END_LOST_SAW_COPY] + ends[END_SAW_COPY], N_ATTEMPTS);
    }
}

/* --- single placements, waited for --- */

struct one {
    bool done;
    int status;
    char msg[MM_ERROR_MSG_MAX];
    enum placer_outcome outcome;
    int64_t revision;
    bool had_model, had_instance;
    size_t n_copies;
    int calls;
};

static void on_one(int status, const struct mm_error *err, const struct placer_result *res,
                   void *arg)
{
    struct one *o = arg;
    o->calls++;
    o->done = true;
    o->status = status;
    if (status < 0) {
        snprintf(o->msg, sizeof o->msg, "%s", err->msg);
        CHECK(res == NULL);
        return;
    }
    o->outcome = res->outcome;
    o->revision = res->revision;
    o->had_model = res->model != NULL;
    o->had_instance = res->instance != NULL;
    o->n_copies = res->n_copies;
}

static bool one_done(void *arg)
{
    return ((struct one *)arg)->done;
}

/* The model's mod_revision and value now (value malloc'd); 0 if absent. */
static int64_t model_now(const char *id, char **value)
{
    char key[KEYS_MAX];
    REQUIRE(keys_model(key, sizeof key, CLUSTER, id, NULL) == 0);
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_range(clients[0], &req, &r, NULL) == 0);
    int64_t rev = 0;
    if (r->op.n_kvs == 1) {
        rev = r->op.kvs[0].mod_revision;
        if (value)
            *value = strdup(r->op.kvs[0].value);
    }
    etcd_response_free(r);
    return rev;
}

static struct one place_one(struct etcd_client *c, const char *model, int64_t rev,
                            const char *value, int target, int64_t lease)
{
    struct copy_record copy = {.state = COPY_PENDING, .since_ms = 5, .size_bytes = 42};
    struct placer_req req = {.cluster = CLUSTER,
                             .model_id = model,
                             .model_mod_revision = rev,
                             .model_value = value,
                             .target_iid = iids[target],
                             .target_lease = lease,
                             .copy = &copy};
    struct one o = {0};
    struct mm_error err = {0};
    REQUIRE(placer_place(c, &req, on_one, &o, NULL, &err) == 0);
    CHECK(!o.done); /* never inside the call */
    REQUIRE(harness_run_until(loop, one_done, &o, 10000));
    return o;
}

static void test_target_gone(void)
{
    put_model("m-gone");
    char *value = NULL;
    int64_t rev = model_now("m-gone", &value);
    char key[KEYS_MAX];
    REQUIRE(keys_instance(key, sizeof key, CLUSTER, iids[2], NULL) == 0);
    REQUIRE(etcd_sync_delete(clients[0], key, false, NULL, NULL) == 0);
    struct one o = place_one(clients[1], "m-gone", rev, value, 2, leases[2]);
    CHECK_INT(o.status, 0);
    CHECK_INT(o.outcome, PLACER_TARGET_GONE);
    CHECK(o.had_model && !o.had_instance);
    CHECK_INT(o.n_copies, 0);
    CHECK_INT(count_copies("m-gone", NULL, NULL), 0);
    CHECK_INT(model_now("m-gone", NULL), rev); /* not bumped */

    /* Registered again under another lease: the old lease is not the target's any more. */
    int64_t old = leases[2];
    REQUIRE(etcd_sync_lease_grant(clients[0], 60, &leases[2], NULL) == 0);
    put_instance(2);
    o = place_one(clients[1], "m-gone", rev, value, 2, old);
    CHECK_INT(o.outcome, PLACER_TARGET_GONE);
    CHECK(o.had_instance);
    CHECK_INT(count_copies("m-gone", NULL, NULL), 0);
    REQUIRE(etcd_sync_lease_revoke(clients[0], old, NULL) == 0);

    /* With the new lease it is placed. */
    o = place_one(clients[1], "m-gone", rev, value, 2, leases[2]);
    CHECK_INT(o.outcome, PLACER_PLACED);
    CHECK_INT(count_copies("m-gone", NULL, NULL), 1);
    free(value);
    fprintf(stderr, "target gone: deleted instance key and re-registered instance both "
                    "TARGET_GONE, no copy; placed with the new lease\n");
}

static void test_lease_and_revision(void)
{
    put_model("m-lease");
    char *value = NULL;
    int64_t rev = model_now("m-lease", &value);
    struct one o = place_one(clients[2], "m-lease", rev, value, 1, leases[1]);
    CHECK_INT(o.status, 0);
    CHECK_INT(o.outcome, PLACER_PLACED);
    CHECK(o.revision > rev);
    CHECK_INT(model_now("m-lease", NULL), o.revision); /* bumped by the txn */
    int64_t lease = 0;
    enum copy_state st = COPY_FAILED;
    CHECK_INT(count_copies("m-lease", &lease, &st), 1);
    CHECK_INT(lease, leases[1]);
    CHECK_INT(st, COPY_PENDING);

    /* The same decision again (now stale): lost, with the copy read back. */
    o = place_one(clients[2], "m-lease", rev, value, 0, leases[0]);
    CHECK_INT(o.outcome, PLACER_LOST_RACE);
    CHECK_INT(o.n_copies, 1);
    /* At the current revision but on the same target: the copy exists, lost too. */
    int64_t rev2 = model_now("m-lease", NULL);
    o = place_one(clients[2], "m-lease", rev2, value, 1, leases[1]);
    CHECK_INT(o.outcome, PLACER_LOST_RACE);
    CHECK_INT(model_now("m-lease", NULL), rev2);

    /* The copy goes with the target's lease. */
    REQUIRE(etcd_sync_lease_revoke(clients[0], leases[1], NULL) == 0);
    CHECK_INT(count_copies("m-lease", NULL, NULL), 0);
    REQUIRE(etcd_sync_lease_grant(clients[0], 60, &leases[1], NULL) == 0);
    put_instance(1);
    free(value);
    fprintf(stderr, "lease: the copy was attached to the target's lease and vanished with it\n");
}

static void test_errors(void)
{
    /* No model record: -ENOENT naming model and target. */
    struct one o =
        place_one(clients[0], "m-none", 7, "{\"v\":1,\"type\":\"sklearn\"}", 0, leases[0]);
    CHECK_INT(o.status, -ENOENT);
    CHECK(strstr(o.msg, "m-none") && strstr(o.msg, "i0"));
    fprintf(stderr, "missing model: %s\n", o.msg);

    struct copy_record copy = {.state = COPY_PENDING};
    struct placer_req req = {.cluster = CLUSTER,
                             .model_id = "m1",
                             .model_mod_revision = 3,
                             .model_value = "{\"v\":1,\"type\":\"sklearn\"}",
                             .target_iid = "i0",
                             .target_lease = leases[0],
                             .copy = &copy};
    struct mm_error err = {0};
    struct placer_request *h = (struct placer_request *)1;
    struct placer_req bad = req;
    bad.model_mod_revision = 0;
    CHECK_INT(placer_place(clients[0], &bad, on_one, &o, &h, &err), -EINVAL);
    CHECK(h == NULL);
    bad = req;
    bad.target_lease = 0;
    CHECK_INT(placer_place(clients[0], &bad, on_one, &o, NULL, &err), -EINVAL);
    bad = req;
    bad.target_iid = "a/b";
    CHECK_INT(placer_place(clients[0], &bad, on_one, &o, NULL, &err), -EINVAL);
    bad = req;
    bad.model_value = "{\"v\":1}"; /* no type */
    CHECK_INT(placer_place(clients[0], &bad, on_one, &o, NULL, &err), -EINVAL);
    CHECK(strstr(err.msg, "model record") != NULL);

    /* Cancelled: no callback. */
    put_model("m-cancel");
    char *value = NULL;
    int64_t rev = model_now("m-cancel", &value);
    req.model_id = "m-cancel";
    req.model_mod_revision = rev;
    req.model_value = value;
    struct one c = {0};
    REQUIRE(placer_place(clients[0], &req, on_one, &c, &h, &err) == 0);
    placer_cancel(h);
    placer_cancel(NULL);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(c.calls, 0);

    /* The client freed with a placement pending: -ECANCELED, once. */
    struct etcd_config cfg = {.endpoints = server.endpoint, .request_timeout_ms = 2000};
    struct etcd_client *extra = NULL;
    REQUIRE(etcd_client_new(loop, &cfg, &extra, &err) == 0);
    struct one f = {0};
    REQUIRE(placer_place(extra, &req, on_one, &f, NULL, &err) == 0);
    etcd_client_free(extra);
    harness_run_until(loop, NULL, NULL, 100);
    CHECK_INT(f.calls, 1);
    CHECK_INT(f.status, -ECANCELED);
    CHECK(strstr(f.msg, "m-cancel") != NULL);
    free(value);
}

int main(void)
{
    loop = EV_DEFAULT;
    REQUIRE(harness_etcd_start(&server, NULL) == 0);
    struct etcd_config cfg = {.endpoints = server.endpoint, .request_timeout_ms = 5000};
    struct mm_error err = {0};
    for (int i = 0; i < N_NODES; i++)
        REQUIRE(etcd_client_new(loop, &cfg, &clients[i], &err) == 0);
    for (int i = 0; i < N_NODES; i++) {
        REQUIRE(etcd_sync_lease_grant(clients[0], 60, &leases[i], &err) == 0);
        put_instance(i);
    }
    run_herd("m-herd", true);
    run_herd("m-herd2", false);
    test_lease_and_revision();
    test_target_gone();
    test_errors();
    for (int i = 0; i < N_NODES; i++)
        etcd_client_free(clients[i]);
    harness_etcd_cleanup(&server);
    return CHECK_DONE();
}
