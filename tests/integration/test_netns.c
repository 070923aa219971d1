/* test_netns.c - the harness's network namespace and multi-member etcd with the mesh on them.
 * One program, one scenario per run (argv[1]):
 *   netns  a 2-pod cluster with pod 1 in a network namespace of its own (needs root: exit 77
 *          saying why otherwise): it registers at its namespace address and serves a model
 *          through the gateway; partitioned from etcd (packets dropped silently both ways) its
 *          instance record and copy records leave etcd within the lease TTL + slack while the
 *          test still reaches it, and the model is served by pod 0; the partition lifted, pod 1
 *          registers again under a new lease and every copy record of it is fresh (under that
 *          lease, for a model its runtime holds).
 *   etcd3  a 2-pod cluster on a 3-member etcd: the leader killed, the mesh keeps serving and
 *          registering (a model registered and loaded, a pod killed and started again
 *          re-registers), a new leader is elected; the member restarted rejoins.
 * argv: SCENARIO MM_NODE MM_RUNTIME MM_GATEWAY MAKE_BREAST_CANCER */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "rtclient.h"
#include "mm/etcd_sync.h"
#include "mm/rpc.h"
#include "mmclient.h"
#include "netns.h"

#define FEATURES 30
#define CALL_MS 30000
#define TTL_MS 2000
#define SLACK_MS 8000 /* over the lease TTL: etcd's expiry check and the deletes' revisions */
#define INFER "/inference.GRPCInferenceService/ModelInfer"

static const char *mm_node, *mm_runtime, *mm_gateway, *maker;
static struct cluster cl;
static bool cluster_up;
static struct harness_netns ns;
static float row[FEATURES];
static float expected;
static char work[256];
static char model_file[512];

static void cleanup(void)
{
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    harness_netns_destroy(&ns);
    if (work[0]) {
        char cmd[512], out[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
        work[0] = '\0';
    }
}

#undef REQUIRE
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            if (cluster_up)                                                                        \
                cluster_dump_logs(&cl, true);                                                      \
            cleanup();                                                                             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void make_model(void)
{
    REQUIRE(harness_example_model_tmp(maker, "netns-model", work, sizeof(work), row, FEATURES,
                                      &expected) == 0);
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);
}

/* ModelInfer of model through ch: whether it answered the model's prediction. */
static bool infer_ok(struct rpc_channel *ch, const char *model)
{
    return rt_infer_expect(ch, model, row, FEATURES, expected, CALL_MS);
}

static void register_model(size_t via, const char *id)
{
    char rel[64];
    snprintf(rel, sizeof(rel), "xgb/%s.json", id);
    REQUIRE(cluster_copy_file(&cl, model_file, rel) == 0);
    struct mmc_reply r;
    mmc_register(cl.pods[via].api, id, "xgboost", rel, "", true, true, 0, CALL_MS, &r);
    char d[512];
    if (!mmc_is(&r, MMC_LOADED))
        fprintf(stderr, "register %s via n%zu: %s\n", id, via, mmc_describe(&r, d, sizeof(d)));
    REQUIRE(mmc_is(&r, MMC_LOADED));
}

/* Pod i's copy records: how many, and whether one is of model (Loaded) */
static int copies_on(size_t i, const char *model, bool *loaded, struct cluster_copy *out,
                     size_t max)
{
    struct cluster_copy all[64];
    int n = cluster_copies(&cl, NULL, all, 64);
    if (n < 0)
        return n;
    int mine = 0;
    if (loaded)
        *loaded = false;
    for (int k = 0; k < n && k < 64; k++) {
        if (strcmp(all[k].iid, cl.pods[i].iid) != 0)
            continue;
        if (loaded && strcmp(all[k].model, model) == 0 && all[k].rec.state == COPY_LOADED)
            *loaded = true;
        if ((size_t)mine < max)
            out[mine] = all[k];
        mine++;
    }
    return mine;
}

/* The store's revision now. */
static int64_t revision(void)
{
    struct etcd_range_req req = {.key = "/", .count_only = true};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    if (etcd_sync_range(cl.etcd_client, &req, &r, &err) < 0) {
        fprintf(stderr, "revision: %s\n", err.msg);
        return -1;
    }
    int64_t rev = r->revision;
    etcd_response_free(r);
    return rev;
}

/* ---------------------------------------------------------------- netns */

static void scenario_netns(void)
{
    if (geteuid() != 0) {
        printf("skipped: network namespaces need root (CAP_NET_ADMIN); running as uid %d\n",
               (int)geteuid());
        exit(77);
    }
    int rc = -EEXIST;
    for (unsigned k = 100 + (unsigned)getpid() % 100, tries = 0; rc == -EEXIST && tries < 20;
         tries++, k = 100 + (k + 1 - 100) % 150)
        rc = harness_netns_create(&ns, k);
    if (rc == -EPERM) {
        printf("skipped: network namespaces not permitted here (ip netns add: EPERM)\n");
        exit(77);
    }
    REQUIRE(rc == 0);
    fprintf(stderr, "namespace %s: pod %s, etcd %s, host %s\n", ns.name, ns.pod_addr, ns.etcd_addr,
            ns.host_addr);
    make_model();

    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .mm_gateway = mm_gateway,
        .n_pods = 2,
        .lease_ttl = "2s",
        .start_nodes_later = true,
        .etcd_listen_host = ns.etcd_addr,
    };
    cfg.pod_runtimes[1].netns = &ns;
    rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    REQUIRE(rc == 0);
    /* pod 1 alone first, so that the model's copy is on the pod in the namespace */
    REQUIRE(cluster_node_start(&cl, 1) == 0);
    struct instance_record inst;
    int64_t lease1 = 0;
    REQUIRE(cluster_instance(&cl, "n1", &inst, &lease1) == 1);
    char want[64];
    snprintf(want, sizeof(want), "%s:%d", ns.pod_addr, cl.pods[1].internal_port);
    CHECK_STR(inst.address, want);
    register_model(1, "m0");
    REQUIRE(cluster_node_start(&cl, 0) == 0);
    REQUIRE(cluster_gateway_start(&cl) == 0);
    CHECK(cluster_instance(&cl, "n0", &inst, NULL) == 1);
    snprintf(want, sizeof(want), "%s:%d", ns.host_addr, cl.pods[0].internal_port);
    CHECK_STR(inst.address, want); /* where the pod in the namespace forwards to */
    bool loaded = false;
    struct cluster_copy mine[16];
    CHECK(copies_on(1, "m0", &loaded, mine, 16) == 1 && loaded);
    CHECK(copies_on(0, "m0", &loaded, mine, 16) == 0);
    CHECK(infer_ok(cl.gateway, "m0"));     /* through the gateway, from the namespace's pod */
    CHECK(infer_ok(cl.pods[0].api, "m0")); /* pod 0 forwards to it */
    CHECK(infer_ok(cl.pods[1].api, "m0"));
    const char *models[] = {"m0"};
    uint64_t size = 0;
    CHECK(cluster_runtime_sizes(&cl, 1, models, 1, &size) == 1 && size > 0);

    /* the partition: its records leave etcd within the TTL + slack */
    long long t0 = harness_now_ms();
    REQUIRE(harness_netns_partition(&ns, true) == 0);
    long long inst_gone = -1, copies_gone = -1;
    while (harness_now_ms() - t0 < TTL_MS + SLACK_MS && (inst_gone < 0 || copies_gone < 0)) {
        if (inst_gone < 0 && cluster_instance(&cl, "n1", NULL, NULL) == 0)
            inst_gone = harness_now_ms() - t0;
        if (copies_gone < 0 && copies_on(1, "m0", NULL, mine, 16) == 0)
            copies_gone = harness_now_ms() - t0;
        cluster_run(&cl, 50);
    }
    fprintf(stderr,
            "partitioned: n1's instance record gone after %lld ms, its copies after "
            "%lld ms (TTL %d ms)\n",
            inst_gone, copies_gone, TTL_MS);
    CHECK(inst_gone >= 0 && copies_gone >= 0);
    /* the test (and the gateway, the peers) still reach the pod: only etcd is cut */
    CHECK(cluster_runtime_sizes(&cl, 1, models, 1, &size) == 1);
    /* the model is served, by pod 0 */
    long long t1 = harness_now_ms();
    CHECK(infer_ok(cl.gateway, "m0"));
    fprintf(stderr, "partitioned: m0 answered through the gateway in %lld ms\n",
            harness_now_ms() - t1);
    CHECK(copies_on(0, "m0", &loaded, mine, 16) == 1 && loaded);
    CHECK(copies_on(1, "m0", NULL, mine, 16) == 0);
    CHECK(cluster_count(&cl, "instances/") == 1);

    /* the partition lifted: n1 registers again under a new lease; nothing stale */
    int64_t rev_off = revision();
    REQUIRE(rev_off > 0);
    REQUIRE(harness_netns_partition(&ns, false) == 0);
    long long t2 = harness_now_ms();
    int64_t lease2 = 0;
    while (harness_now_ms() - t2 < 30000 && cluster_instance(&cl, "n1", &inst, &lease2) != 1)
        cluster_run(&cl, 100);
    fprintf(stderr, "partition lifted: n1 registered again after %lld ms\n", harness_now_ms() - t2);
    REQUIRE(cluster_instance(&cl, "n1", &inst, &lease2) == 1);
    CHECK(lease2 != 0 && lease2 != lease1);
    CHECK(inst.lease == lease2);
    cluster_run(&cl, 3000); /* what it re-asserts (or drops) settles */
    int n = copies_on(1, "m0", NULL, mine, 16);
    CHECK(n >= 0);
    for (int k = 0; k < n && k < 16; k++) {
        uint64_t s = 0;
        const char *m[] = {mine[k].model};
        fprintf(stderr, "n1 holds a copy record of %s (state %d, lease %lld, rev %lld)\n",
                mine[k].model, (int)mine[k].rec.state, (long long)mine[k].lease,
                (long long)mine[k].mod_revision);
        CHECK(mine[k].lease == lease2);
        CHECK(mine[k].mod_revision > rev_off);
        if (mine[k].rec.state == COPY_LOADED)
            CHECK(cluster_runtime_sizes(&cl, 1, m, 1, &s) == 1);
    }
    CHECK(cluster_instance(&cl, "n0", NULL, NULL) == 1);
    CHECK(infer_ok(cl.gateway, "m0"));
    CHECK(infer_ok(cl.pods[1].api, "m0"));
    /* the pod in the namespace still loads: a model placed through it */
    register_model(1, "m1");
    CHECK(infer_ok(cl.gateway, "m1"));
}

/* ---------------------------------------------------------------- etcd3 */

static void scenario_etcd3(void)
{
    make_model();
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .mm_gateway = mm_gateway,
        .n_pods = 2,
        .lease_ttl = "2s",
        .etcd_members = 3,
    };
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    REQUIRE(rc == 0);
    REQUIRE(cluster_etcd_members(&cl) == 3);
    REQUIRE(cluster_gateway_start(&cl) == 0);
    CHECK(strchr(cl.etcd_endpoints, ',') != NULL);
    register_model(0, "m0");
    CHECK(infer_ok(cl.gateway, "m0"));
    char out[4096];
    CHECK(cluster_etcdctl(&cl, "endpoint health", out, sizeof(out)) == 0);

    int leader = cluster_etcd_leader(&cl);
    REQUIRE(leader >= 0);
    fprintf(stderr, "etcd leader: m%d; killed\n", leader);
    long long t0 = harness_now_ms();
    REQUIRE(harness_etcd_kill(cluster_etcd_member(&cl, (size_t)leader)) == 0);
    CHECK(infer_ok(cl.gateway, "m0"));
    fprintf(stderr, "leader killed: m0 answered after %lld ms\n", harness_now_ms() - t0);
    int now = -1;
    while (harness_now_ms() - t0 < 15000 && (now = cluster_etcd_leader(&cl)) < 0)
        cluster_run(&cl, 100);
    fprintf(stderr, "new leader m%d after %lld ms\n", now, harness_now_ms() - t0);
    CHECK(now >= 0 && now != leader);
    /* the mesh keeps registering: a new model, and a pod that comes back */
    register_model(1, "m1");
    CHECK(infer_ok(cl.gateway, "m1"));
    int64_t lease_before = 0, lease_after = 0;
    CHECK(cluster_instance(&cl, "n1", NULL, &lease_before) == 1);
    int old_node_port = cl.pods[1].node_port, old_internal = cl.pods[1].internal_port;
    cluster_pod_kill(&cl, 1);
    REQUIRE(cluster_pod_start(&cl, 1) == 0);
    CHECK(cl.pods[1].node_port == old_node_port);
    CHECK(cl.pods[1].internal_port == old_internal);
    long long t1 = harness_now_ms();
    while (harness_now_ms() - t1 < 15000 &&
           (cluster_instance(&cl, "n1", NULL, &lease_after) != 1 || lease_after == lease_before))
        cluster_run(&cl, 100);
    CHECK(lease_after != 0 && lease_after != lease_before);
    CHECK(infer_ok(cl.gateway, "m0"));
    CHECK(infer_ok(cl.gateway, "m1"));
    CHECK(infer_ok(cl.pods[1].api, "m0"));

    /* the member back: it rejoins (healthy means it has a leader) */
    REQUIRE(harness_etcd_restart(cluster_etcd_member(&cl, (size_t)leader)) == 0);
    CHECK(cluster_etcd_leader(&cl) >= 0);
    CHECK(cluster_etcdctl(&cl, "endpoint health", out, sizeof(out)) == 0);
    CHECK(cluster_count(&cl, "instances/") == 2);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: test_netns netns|etcd3 MM_NODE MM_RUNTIME MM_GATEWAY "
                        "MAKE_BREAST_CANCER\n");
        return 2;
    }
    mm_node = argv[2];
    mm_runtime = argv[3];
    mm_gateway = argv[4];
    maker = argv[5];
    if (!cluster_node_has_listen(mm_node)) {
        printf("skipped: %s has no --listen\n", mm_node);
        return 77;
    }
    if (strcmp(argv[1], "netns") == 0) {
        scenario_netns();
    } else if (strcmp(argv[1], "etcd3") == 0) {
        scenario_etcd3();
    } else {
        fprintf(stderr, "test_netns: unknown scenario '%s'\n", argv[1]);
        return 2;
    }
    if (check_failures)
        cluster_dump_logs(&cl, true);
    cleanup();
    return CHECK_DONE();
}
