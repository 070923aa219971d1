/* test_vmodel.c - vmodels on a cluster of real processes (etcd, 3 pods of mm-runtime + mm-node,
 * one models root), through the nodes' model API (mmesh.ModelMesh), checked against the
 * registry through a mirror of the test's own:
 *   - ModelMesh's rules: a target that does not exist without modelInfo is NOT_FOUND; another
 *     owner is ALREADY_EXISTS with ModelMesh's message; an expectedTargetModelId that does not
 *     match is FAILED_PRECONDITION (on an existing vmodel, and on a missing one); updateOnly of
 *     a missing vmodel is NOT_FOUND; the target with other info is ALREADY_EXISTS; an empty
 *     vModelId is INVALID_ARGUMENT; unregistering a model a vmodel refers to is
 *     FAILED_PRECONDITION; another owner's status is NOT_FOUND and its delete a no-op;
 *   - create with loadNow+sync: DEFINED, the model LOADED;
 *   - a swap (setVModel with a new target, asked of another node): TRANSITIONING at once, the
 *     active model still the old one; the active id changes once, in the revision of the
 *     mirror where the target already has a Loaded copy; the old model (auto-delete) is then
 *     unregistered and its copies gone;
 *   - a target that cannot load (its file is missing), sync: the answer is TRANSITION_FAILED
 *     with the target LOADING_FAILED, the old model still active and Loaded; moving the target
 *     back to the active model ends the transition (DEFINED) and the failed target, an
 *     auto-delete model, goes;
 *   - a failed target whose file appears: the transition completes by itself once its
 *     failures expire;
 *   - sync waits for the swap: the answer is DEFINED with the new model active and LOADED;
 *     a target registered beforehand (not auto-delete) stays when the vmodel leaves it;
 *   - the same swap asked of every node at once (twice each): one switch, one copy of the
 *     target, every sync answer DEFINED on it;
 *   - mmctl vmodel set | status | delete against a node;
 *   - deleteVModel: the vmodel is gone (status NOT_FOUND) and its auto-delete model with it.
 * argv: MM_NODE MM_RUNTIME MAKE_BREAST_CANCER MMCTL */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "harness.h"
#include "mm/mirror.h"
#include "mm/rpc.h"
#include "mmclient.h"
#include "testcall.h"

#define CALL_MS 20000
#define SWAP_MS 30000 /* bound of one swap: a load and a txn */

static const char *mm_node, *mm_runtime, *maker, *mmctl;
static char work[256];
static char model_file[512];
static struct cluster cl;
static bool cluster_up;

/* ---------------------------------------------------------------- a mirror for the record */

/* Every change of a vmodel's active id, and whether its new active model had a Loaded copy in
 * the mirror at that revision (the whole revision is applied before events are delivered). */
struct watch {
    struct mirror *m;
    struct mirror_sub *vmodels;
    char name[64];
    char active[256];
    unsigned switches;
    unsigned switched_unloaded; /* switches to a model without a Loaded copy */
    char last_from[256], last_to[256];
};
static struct watch w;

static int loaded_cb(const struct mirror_entry *e, void *arg)
{
    struct copy_record rec;
    struct mm_error err = {0};
    (void)arg;
    return record_decode(RECORD_COPY, e->value, e->value_len, &rec, &err) == 0 &&
           rec.state == COPY_LOADED;
}

static bool has_loaded_copy(const char *model)
{
    char p[KEYS_MAX];
    snprintf(p, sizeof(p), "/modelmesh/%s/copies/%s/", cl.name, model);
    return mirror_foreach_prefix(w.m, p, strlen(p), loaded_cb, NULL) == 1;
}

static void on_vmodel(const struct mirror_event *ev, void *arg)
{
    (void)arg;
    const char *slash = strrchr(ev->key, '/');
    if (!slash || strcmp(slash + 1, w.name) != 0 || !ev->new_value)
        return;
    struct vmodel_record rec;
    struct mm_error err = {0};
    if (record_decode(RECORD_VMODEL, ev->new_value, ev->new_len, &rec, &err) < 0)
        return;
    if (w.active[0] && strcmp(w.active, rec.active_model_id) != 0) {
        w.switches++;
        snprintf(w.last_from, sizeof(w.last_from), "%s", w.active);
        snprintf(w.last_to, sizeof(w.last_to), "%s", rec.active_model_id);
        if (!has_loaded_copy(rec.active_model_id)) {
            w.switched_unloaded++;
            fprintf(stderr, "vmodel %s switched to %s at revision %lld without a Loaded copy\n",
                    w.name, rec.active_model_id, (long long)ev->revision);
        }
    }
    snprintf(w.active, sizeof(w.active), "%s", rec.active_model_id);
}

static bool mirror_synced(void *arg)
{
    (void)arg;
    return mirror_state(w.m) == MIRROR_SYNCED;
}

static void watch_start(const char *name)
{
    memset(&w, 0, sizeof(w));
    snprintf(w.name, sizeof(w.name), "%s", name);
    char prefix[KEYS_MAX], vm[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    snprintf(vm, sizeof(vm), "/modelmesh/%s/vmodels/", cl.name);
    struct mm_error err = {0};
    struct mirror_config cfg = {.max_backoff_ms = 200};
    REQUIRE(mirror_new(cl.etcd_client, prefix, &cfg, &w.m, &err) == 0);
    REQUIRE(mirror_subscribe(w.m, vm, strlen(vm), on_vmodel, NULL, &w.vmodels) == 0);
    REQUIRE(mirror_start(w.m) == 0);
    REQUIRE(harness_run_until(cl.loop, mirror_synced, NULL, 10000));
}

/* ---------------------------------------------------------------- set-up */

static void make_model(void)
{
    float expected;
    REQUIRE(harness_example_model_tmp(maker, "vmodel-model", work, sizeof(work), NULL, 0,
                                      &expected) == 0);
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);
}

static void cleanup(void)
{
    if (w.m)
        mirror_free(w.m);
    w.m = NULL;
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    harness_remove_dir(work);
}

static void start(void)
{
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .n_pods = 3,
        .runtime_load_timeout_ms = 20000,
        .lease_ttl = "2s",
        .node_args = "--replace-delay 1s --failure-expiry 4s",
    };
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    static const char *const files[] = {"xgb/a.json", "xgb/b.json", "xgb/d.json", "xgb/e.json",
                                        "xgb/f.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        REQUIRE(cluster_copy_file(&cl, model_file, files[i]) == 0);
}

/* ---------------------------------------------------------------- helpers */

static struct rpc_channel *api(size_t i)
{
    return cl.pods[i % cl.cfg.n_pods].api;
}

static bool vis(const struct mmc_vreply *r, int status, const char *active, const char *target)
{
    if (r->code == GRPC_STATUS_OK && r->status == status && strcmp(r->active, active) == 0 &&
        strcmp(r->target, target) == 0)
        return true;
    char buf[1024];
    fprintf(stderr, "  wanted OK %s active '%s' target '%s', got %s\n", mmc_vstatus_name(status),
            active, target, mmc_vdescribe(r, buf, sizeof(buf)));
    return false;
}

static bool fails(grpc_status_code code, const char *needle, grpc_status_code got,
                  const char *details)
{
    if (got == code && strstr(details, needle))
        return true;
    fprintf(stderr, "  wanted %s with \"%s\", got %s: %s\n", rpc_status_name(code), needle,
            rpc_status_name(got), details);
    return false;
}

/* Poll the registry (bounded) until model id's record is absent and it has no copy record. */
static bool model_gone_within(const char *id, long long ms)
{
    long long end = harness_now_ms() + ms;
    struct model_record rec;
    struct cluster_copy copies[8];
    do {
        if (cluster_model(&cl, id, &rec) == 0 && cluster_copies(&cl, id, copies, 8) == 0)
            return true;
        cluster_run(&cl, 50);
    } while (harness_now_ms() < end);
    fprintf(stderr, "  model %s still registered after %lld ms\n", id, ms);
    return false;
}

/* Poll getVModelStatus on node i until it says NOT_FOUND, bounded: a node answers from its
 * mirror, which sees a delete made through another node a watch event later. */
static bool vmodel_gone_within(size_t i, const char *name, long long ms)
{
    long long end = harness_now_ms() + ms;
    struct mmc_vreply r;
    do {
        mmc_vmodel_status(api(i), name, NULL, CALL_MS, &r);
        if (r.code == GRPC_STATUS_OK && r.status == MMC_V_NOT_FOUND)
            return true;
        cluster_run(&cl, 20);
    } while (harness_now_ms() < end);
    fprintf(stderr, "  vmodel %s still there on node %zu after %lld ms (code %d, state %d)\n",
            name, i, ms, (int)r.code, (int)r.status);
    return false;
}

/* Poll getVModelStatus on node i until it is DEFINED with active, bounded. */
static bool defined_within(size_t i, const char *name, const char *active, long long ms)
{
    long long end = harness_now_ms() + ms;
    struct mmc_vreply r;
    do {
        mmc_vmodel_status(api(i), name, NULL, CALL_MS, &r);
        if (r.code == GRPC_STATUS_OK && r.status == MMC_V_DEFINED &&
            strcmp(r.active, active) == 0)
            return true;
        cluster_run(&cl, 50);
    } while (harness_now_ms() < end);
    char buf[1024];
    fprintf(stderr, "  vmodel %s not DEFINED with %s after %lld ms: %s\n", name, active, ms,
            mmc_vdescribe(&r, buf, sizeof(buf)));
    return false;
}

/* ---------------------------------------------------------------- scenarios */

static void rules(void)
{
    struct mmc_vreply r;
    struct mmc_reply m;
    fprintf(stderr, "rules\n");
    /* a target that does not exist, without modelInfo */
    struct mmc_vmodel_set q = {.vmodel = "v1", .target = "a"};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_NOT_FOUND, "Target model a not found", r.code, r.details));
    q = (struct mmc_vmodel_set){.vmodel = "", .target = "a"};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_INVALID_ARGUMENT, "Must provide vModelId", r.code, r.details));
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = ""};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_INVALID_ARGUMENT, "Must provide target modelId", r.code, r.details));
    /* updateOnly of a vmodel that does not exist */
    q = (struct mmc_vmodel_set){.vmodel = "v-none", .target = "a", .type = "xgboost",
                                .path = "xgb/a.json", .update_only = true};
    mmc_set_vmodel(api(1), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_NOT_FOUND, "vmodel v-none not found", r.code, r.details));
    /* expected target on a vmodel that does not exist */
    q = (struct mmc_vmodel_set){.vmodel = "v-none", .target = "a", .type = "xgboost",
                                .path = "xgb/a.json", .expected = "q"};
    mmc_set_vmodel(api(1), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_FAILED_PRECONDITION, "vmodel v-none not found", r.code, r.details));
    mmc_status(api(1), "a", CALL_MS, &m);
    CHECK(mmc_is(&m, MMC_NOT_FOUND)); /* nothing was created by the refusals */

    /* create: loadNow + sync answers once the model is loaded */
    long long t0 = harness_now_ms();
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = "a", .type = "xgboost",
                                .path = "xgb/a.json", .auto_delete = true, .load_now = true,
                                .sync = true, .owner = "o1"};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "a", "a"));
    CHECK(r.has_active && r.active_status.status == MMC_LOADED);
    CHECK(!r.has_target);
    CHECK_STR(r.owner, "o1");
    fprintf(stderr, "  created v1 -> a, LOADED in %lld ms\n", harness_now_ms() - t0);
    /* the same again is fine */
    mmc_set_vmodel(api(2), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "a", "a"));

    /* another owner */
    q.owner = "o2";
    mmc_set_vmodel(api(1), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_ALREADY_EXISTS, "vmodel v1 already exists with different owner \"o1\"",
                r.code, r.details));
    /* expected target that does not match */
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = "b", .type = "xgboost",
                                .path = "xgb/b.json", .expected = "zzz", .owner = "o1"};
    mmc_set_vmodel(api(2), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_FAILED_PRECONDITION,
                "Existing target model a does not match expected zzz", r.code, r.details));
    mmc_status(api(2), "b", CALL_MS, &m);
    CHECK(mmc_is(&m, MMC_NOT_FOUND));
    /* the target with other info */
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = "a", .type = "xgboost",
                                .path = "xgb/b.json"};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(fails(GRPC_STATUS_ALREADY_EXISTS,
                "Target model a already exists with different attribute values", r.code,
                r.details));
    /* a model a vmodel refers to cannot be unregistered */
    mmc_unregister(api(1), "a", CALL_MS, &m);
    CHECK(fails(GRPC_STATUS_FAILED_PRECONDITION, "vmodel v1", m.code, m.details));
    /* another owner sees nothing and deletes nothing */
    mmc_vmodel_status(api(1), "v1", "o2", CALL_MS, &r);
    CHECK(r.code == GRPC_STATUS_OK && r.status == MMC_V_NOT_FOUND && !r.active[0]);
    mmc_delete_vmodel(api(1), "v1", "o2", CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    mmc_vmodel_status(api(2), "v1", "o1", CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "a", "a"));
    /* an unknown vmodel: NOT_FOUND status; its delete is fine */
    mmc_vmodel_status(api(0), "v-none", NULL, CALL_MS, &r);
    CHECK(r.code == GRPC_STATUS_OK && r.status == MMC_V_NOT_FOUND);
    mmc_delete_vmodel(api(0), "v-none", NULL, CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
}

static void swap(void)
{
    struct mmc_vreply r;
    struct mmc_reply m;
    fprintf(stderr, "swap\n");
    /* asked of node 1; the active model a is Loaded, so it keeps serving until b is */
    long long t0 = harness_now_ms();
    struct mmc_vmodel_set q = {.vmodel = "v1", .target = "b", .type = "xgboost",
                               .path = "xgb/b.json", .auto_delete = true, .owner = "o1"};
    mmc_set_vmodel(api(1), &q, CALL_MS, &r);
    /* the answer is read once the node's mirror has the write: on a slow machine the target
     * may have loaded and the switch happened by then (the mirror below checks the order) */
    if (r.code == GRPC_STATUS_OK && r.status == MMC_V_DEFINED) {
        fprintf(stderr, "  (the switch was done before the answer)\n");
        CHECK(vis(&r, MMC_V_DEFINED, "b", "b"));
    } else {
        CHECK(vis(&r, MMC_V_TRANSITIONING, "a", "b"));
        CHECK(r.has_active && r.active_status.status == MMC_LOADED);
        CHECK(r.has_target && (r.target_status.status == MMC_LOADING));
    }
    CHECK(defined_within(2, "v1", "b", SWAP_MS));
    fprintf(stderr, "  v1: a -> b in %lld ms\n", harness_now_ms() - t0);
    cluster_run(&cl, 100); /* the test's mirror too */
    CHECK_INT(w.switches, 1);
    CHECK_INT(w.switched_unloaded, 0);
    CHECK_STR(w.last_from, "a");
    CHECK_STR(w.last_to, "b");
    mmc_status(api(0), "b", CALL_MS, &m);
    CHECK(mmc_is(&m, MMC_LOADED));
    /* a was created with autoDeleteTargetModel: no vmodel refers to it now */
    CHECK(model_gone_within("a", 10000));
}

static void failed_target(void)
{
    struct mmc_vreply r;
    struct mmc_reply m;
    fprintf(stderr, "failed target\n");
    /* its file is missing: every node fails to load it; sync answers once that is known */
    long long t0 = harness_now_ms();
    struct mmc_vmodel_set q = {.vmodel = "v1", .target = "c", .type = "xgboost",
                               .path = "xgb/missing.json", .auto_delete = true, .sync = true};
    mmc_set_vmodel(api(2), &q, SWAP_MS, &r);
    CHECK(vis(&r, MMC_V_TRANSITION_FAILED, "b", "c"));
    CHECK(r.has_target && r.target_status.status == MMC_LOADING_FAILED &&
          r.target_status.n_errors > 0);
    CHECK(r.has_active && r.active_status.status == MMC_LOADED);
    fprintf(stderr, "  v1: b -> c failed in %lld ms\n", harness_now_ms() - t0);
    /* b still serves */
    mmc_vmodel_status(api(0), "v1", NULL, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_TRANSITION_FAILED, "b", "c"));
    mmc_status(api(0), "b", CALL_MS, &m);
    CHECK(mmc_is(&m, MMC_LOADED));
    CHECK_INT(w.switches, 1);
    /* back to b: the transition ends; c (auto-delete) goes */
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = "b"};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "b", "b"));
    CHECK(model_gone_within("c", 10000));
    CHECK_INT(w.switches, 1);
}

/* A target that failed is tried again once its failures expire (--failure-expiry 4s: 2 s for
 * a model used recently): with its file in place by then, the transition completes by itself. */
static void recovers(void)
{
    struct mmc_vreply r;
    fprintf(stderr, "recovers\n");
    struct mmc_vmodel_set q = {.vmodel = "v5", .target = "k1", .type = "xgboost",
                               .path = "xgb/a.json", .auto_delete = true, .load_now = true,
                               .sync = true};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "k1", "k1"));
    q = (struct mmc_vmodel_set){.vmodel = "v5", .target = "k2", .type = "xgboost",
                                .path = "xgb/late.json", .auto_delete = true, .sync = true};
    mmc_set_vmodel(api(1), &q, SWAP_MS, &r);
    CHECK(vis(&r, MMC_V_TRANSITION_FAILED, "k1", "k2"));
    long long t0 = harness_now_ms();
    REQUIRE(cluster_copy_file(&cl, model_file, "xgb/late.json") == 0);
    CHECK(defined_within(2, "v5", "k2", 20000));
    fprintf(stderr, "  v5: k1 -> k2 after its failures expired, %lld ms after the file came\n",
            harness_now_ms() - t0);
    CHECK(model_gone_within("k1", 10000));
    struct mmc_reply m;
    mmc_delete_vmodel(api(1), "v5", NULL, CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    CHECK(model_gone_within("k2", 10000));
}

static void sync_swap(void)
{
    struct mmc_vreply r;
    struct mmc_reply m;
    fprintf(stderr, "sync swap\n");
    /* d registered beforehand (not auto-delete): it stays when the vmodel leaves it */
    mmc_register(api(0), "d", "xgboost", "xgb/d.json", "", false, false, 0, CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    long long t0 = harness_now_ms();
    struct mmc_vmodel_set q = {.vmodel = "v1", .target = "d", .sync = true};
    mmc_set_vmodel(api(1), &q, SWAP_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "d", "d"));
    CHECK(r.has_active && r.active_status.status == MMC_LOADED);
    fprintf(stderr, "  v1: b -> d (sync) in %lld ms\n", harness_now_ms() - t0);
    cluster_run(&cl, 100);
    CHECK_INT(w.switches, 2);
    CHECK_INT(w.switched_unloaded, 0);
    CHECK(model_gone_within("b", 10000));
    /* force: e (not loaded) becomes active at once */
    mmc_register(api(0), "e", "xgboost", "xgb/e.json", "", false, false, 0, CALL_MS, &m);
    q = (struct mmc_vmodel_set){.vmodel = "v1", .target = "e", .force = true};
    mmc_set_vmodel(api(2), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "e", "e"));
    cluster_run(&cl, 100);
    CHECK_INT(w.switches, 3);
    /* d was registered by hand: still there */
    mmc_status(api(2), "d", CALL_MS, &m);
    CHECK(m.code == GRPC_STATUS_OK && m.status != MMC_NOT_FOUND);
}

/* The same swap asked of every node at once: one transition, one switch, one copy of the
 * target; every sync answer says it is done. */
static void concurrent(void)
{
    struct mmc_vreply r;
    fprintf(stderr, "concurrent\n");
    struct mmc_vmodel_set q = {.vmodel = "v4", .target = "h1", .type = "xgboost",
                               .path = "xgb/a.json", .auto_delete = true, .load_now = true,
                               .sync = true};
    mmc_set_vmodel(api(0), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "h1", "h1"));
    CHECK(r.has_active && r.active_status.status == MMC_LOADED);
    /* the test's mirror now follows v4 */
    cluster_run(&cl, 100);
    snprintf(w.name, sizeof(w.name), "v4");
    snprintf(w.active, sizeof(w.active), "h1");
    w.switches = w.switched_unloaded = 0;
    struct testcall calls[6];
    q = (struct mmc_vmodel_set){.vmodel = "v4", .target = "h2", .type = "xgboost",
                                .path = "xgb/b.json", .auto_delete = true, .sync = true};
    for (size_t i = 0; i < 6; i++)
        mmc_set_vmodel_start(api(i), &q, SWAP_MS, &calls[i]);
    CHECK(testcall_wait(cl.loop, calls, 6, SWAP_MS + 5000));
    for (size_t i = 0; i < 6; i++) {
        mmc_vdecode(&calls[i], &r);
        CHECK(vis(&r, MMC_V_DEFINED, "h2", "h2"));
    }
    cluster_run(&cl, 100);
    CHECK_INT(w.switches, 1);
    CHECK_INT(w.switched_unloaded, 0);
    struct cluster_copy copies[8];
    CHECK_INT(cluster_copies(&cl, "h2", copies, 8), 1);
    CHECK(model_gone_within("h1", 10000));
    struct mmc_reply m;
    mmc_delete_vmodel(api(1), "v4", NULL, CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    CHECK(model_gone_within("h2", 10000));
    snprintf(w.name, sizeof(w.name), "v1");
    w.active[0] = '\0';
}

static int run_mmctl(const char *args, char *out, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' --node 127.0.0.1:%d %s 2>&1", mmctl, cl.pods[0].node_port,
             args);
    int rc = harness_capture(cmd, out, size);
    fprintf(stderr, "  $ mmctl %s -> %d\n%s", args, rc, out);
    return rc;
}

static void cli(void)
{
    char out[8192];
    fprintf(stderr, "mmctl\n");
    CHECK_INT(run_mmctl("vmodel set v2 f --type xgboost --path xgb/f.json --auto-delete "
                        "--load-now --sync",
                        out, sizeof(out)),
              0);
    CHECK(strstr(out, "DEFINED") && strstr(out, "active f") && strstr(out, "LOADED"));
    CHECK_INT(run_mmctl("vmodel status v2 -o json", out, sizeof(out)), 0);
    CHECK(strstr(out, "\"status\": \"DEFINED\"") && strstr(out, "\"activeModelId\": \"f\""));
    CHECK_INT(run_mmctl("vmodel set v2 f --owner someone-else", out, sizeof(out)), 1);
    CHECK(strstr(out, "ALREADY_EXISTS") != NULL);
    CHECK_INT(run_mmctl("vmodel status nope", out, sizeof(out)), 1);
    CHECK(strstr(out, "NOT_FOUND") != NULL);
    CHECK_INT(run_mmctl("vmodel delete v2", out, sizeof(out)), 0);
    CHECK(model_gone_within("f", 10000));
    CHECK_INT(run_mmctl("vmodel set", out, sizeof(out)), 2);
}

static void delete_vmodel(void)
{
    struct mmc_vreply r;
    struct mmc_reply m;
    fprintf(stderr, "delete\n");
    /* g: an auto-delete target, deleted with the vmodel */
    struct mmc_vmodel_set q = {.vmodel = "v3", .target = "g", .type = "xgboost",
                               .path = "xgb/e.json", .auto_delete = true};
    mmc_set_vmodel(api(1), &q, CALL_MS, &r);
    CHECK(vis(&r, MMC_V_DEFINED, "g", "g"));
    CHECK(r.has_active && r.active_status.status == MMC_NOT_LOADED);
    mmc_delete_vmodel(api(2), "v3", NULL, CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    CHECK(vmodel_gone_within(0, "v3", 5000));
    CHECK(model_gone_within("g", 10000));
    /* v1's models: e stays referenced until v1 goes; then e (registered by hand) stays */
    mmc_delete_vmodel(api(0), "v1", "o1", CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
    mmc_unregister(api(0), "e", CALL_MS, &m);
    CHECK_INT(m.code, GRPC_STATUS_OK);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: test_vmodel MM_NODE MM_RUNTIME MAKE_BREAST_CANCER MMCTL\n");
        return 2;
    }
    mm_node = argv[1];
    mm_runtime = argv[2];
    maker = argv[3];
    mmctl = argv[4];
    if (!cluster_node_has_listen(mm_node)) {
        printf("SKIP: %s has no --listen: the model API is not in this build\n", mm_node);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    make_model();
    atexit(cleanup);
    start();
    watch_start("v1");
    long long t0 = harness_now_ms();
    rules();
    swap();
    failed_target();
    sync_swap();
    recovers();
    concurrent();
    cli();
    delete_vmodel();
    fprintf(stderr, "scenarios took %lld ms\n", harness_now_ms() - t0);
    if (check_failures)
        cluster_dump_logs(&cl, false);
    cleanup();
    return CHECK_DONE();
}
