/* test_world.c - the chaos world and its faults on real processes: a small world (3 pods, 3
 * models kept at 2+ copies and 3 at one, a 3-member etcd, 2 controllers, the gateway, s3rver
 * behind the storage proxy; as root the last pod in a network namespace of its own) comes up,
 * every model answers its expected value through the gateway, and then each fault once,
 * checked by what it must do:
 *   - pod kill: the instance's record leaves etcd (lease expired); pod start: it registers
 *     again under a new lease, and every model answers;
 *   - freeze: every thread of the node stopped, its record leaves etcd; thaw: it runs and
 *     registers again;
 *   - pod roll: the node exits 0 at SIGTERM, both processes start again, it registers again;
 *   - etcd leader kill: another member leads and the mesh serves and takes writes; the member
 *     started again is healthy; every member killed: one started without waiting returns at
 *     once with no leader, the others waited for bring a leader back, the mesh serves;
 *   - storage down: a new revision's load fails, its error naming the storage key, while
 *     the old one serves; up: it loads and the InferenceService reaches its generation;
 *   - controller leader kill: the other controller leads; the killed one comes back following;
 *     world_update_model under the new leader: the new generation, the same answers;
 *   - (root) partition on: the namespace pod's instance leaves etcd, the models still answer;
 *     off: it registers again;
 *   - every registration the world made is there as acknowledged (verify_registrations).
 * argv: MM_NODE MM_RUNTIME MM_GATEWAY MM_CONTROLLER MAKE_BREAST_CANCER SERVERS_DIR RUNTIMES_DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fault.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "verify.h"
#include "world.h"

#define START_MS 100000
#define ANSWER_MS 30000
#define TTL_S 2
#define GONE_MS (TTL_S * 1000 + 6000) /* a lease's expiry seen, with slack */

static struct world w;
static bool up;
static struct verify *v;

static void cleanup(void)
{
    if (up)
        world_free(&w);
    up = false;
    verify_free(v);
    v = NULL;
}

/* Every model answers its expected value through the gateway (each retried until ms). */
static bool all_answer(const char *when, long ms)
{
    long long t0 = harness_now_ms(), until = t0 + ms;
    bool all = true;
    for (size_t k = 0; k < w.n_models; k++) {
        char why[512] = "";
        int rc;
        while ((rc = world_infer(&w, k, 5000, why, sizeof(why))) != 0 && rc != -EBADMSG &&
               harness_now_ms() < until)
            cluster_run(&w.cl, 200);
        if (rc != 0) {
            fprintf(stderr, "%s: %s\n", when, why);
            all = false;
        }
    }
    fprintf(stderr, "%s: %zu models %s through the gateway in %lld ms\n", when, w.n_models,
            all ? "answer their expected values" : "do NOT all answer", harness_now_ms() - t0);
    return all;
}

/* Instance iid's lease while it is registered (0 when absent, -1 on a read error). */
static long long instance_lease(const char *iid)
{
    int64_t lease = 0;
    int rc = cluster_instance(&w.cl, iid, NULL, &lease);
    return rc < 0 ? -1 : rc == 0 ? 0 : (long long)lease;
}

/* Wait until iid's instance record is absent (present false) or present under a lease other
 * than not_lease; how long it took, or -1. */
static long long wait_instance(const char *iid, bool present, long long not_lease, long ms)
{
    long long t0 = harness_now_ms();
    do {
        long long l = instance_lease(iid);
        if (present ? l > 0 && l != not_lease : l == 0)
            return harness_now_ms() - t0;
        cluster_run(&w.cl, 100);
    } while (harness_now_ms() - t0 < ms);
    fprintf(stderr, "instance %s not %s within %ld ms\n", iid, present ? "registered" : "gone", ms);
    return -1;
}

/* The state letter of pid in /proc (R, S, T, ...), or '?'. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* ---- the faults on one pod: its instance taken away, and back ---- */

enum moment { AWAY, GONE, BACK };

struct pod_fault {
    const char *name;
    size_t pod;
    int (*away)(struct world *w, size_t pod); /* the fault (must succeed) */
    long gone_ms; /* its record gone within; 0: not waited for (the fault did it) */
    int (*back)(struct world *w, size_t pod);  /* the fault undone (must succeed), or NULL */
    long back_ms;                              /* registered again under a new lease within */
    void (*check)(size_t pod, enum moment at); /* what must hold at each moment, or NULL */
    const char *away_answer; /* every model answers while it is away (this label), or NULL */
};

static pid_t node_before, runtime_before; /* the pod's processes before the fault */

static int pod_roll(struct world *world, size_t pod)
{
    return fault_pod_roll(world, pod, 30000);
}

static int partition_on(struct world *world, size_t pod)
{
    return fault_partition(world, true);
}

static int partition_off(struct world *world, size_t pod)
{
    return fault_partition(world, false);
}

static void killed_check(size_t pod, enum moment at)
{
    if (at == AWAY)
        CHECK(w.cl.pods[pod].node_pid == 0 && w.cl.pods[pod].runtime_pid == 0);
    else if (at == BACK)
        CHECK(w.cl.pods[pod].node_pid > 0 && w.cl.pods[pod].runtime_pid > 0);
}

static void rolled_check(size_t pod, enum moment at)
{
    if (at != AWAY)
        return;
    CHECK(w.cl.pods[pod].node_pid > 0 && w.cl.pods[pod].node_pid != node_before);
    CHECK(w.cl.pods[pod].runtime_pid > 0 && w.cl.pods[pod].runtime_pid != runtime_before);
}

static void frozen_check(size_t pod, enum moment at)
{
    char state = proc_state(w.cl.pods[pod].node_pid);
    CHECK(at == BACK ? state != 'T' : state == 'T');
}

/* f on its pod: the fault, its record gone, every model answering, the fault undone, the pod
 * registered again under a new lease, every model answering; each wait bounded and timed. */
static void pod_fault_run(const struct pod_fault *f)
{
    const char *iid = w.cl.pods[f->pod].iid;
    long long lease = instance_lease(iid);
    REQUIRE(lease > 0);
    node_before = w.cl.pods[f->pod].node_pid;
    runtime_before = w.cl.pods[f->pod].runtime_pid;
    long long t0 = harness_now_ms();
    REQUIRE(f->away(&w, f->pod) == 0);
    long long away = harness_now_ms() - t0;
    if (f->check)
        f->check(f->pod, AWAY);
    long long gone = -1;
    if (f->gone_ms) {
        gone = wait_instance(iid, false, 0, f->gone_ms);
        CHECK(gone >= 0);
        if (f->check)
            f->check(f->pod, GONE);
    }
    if (f->away_answer)
        CHECK(all_answer(f->away_answer, ANSWER_MS));
    t0 = harness_now_ms();
    if (f->back)
        REQUIRE(f->back(&w, f->pod) == 0);
    long long undone = harness_now_ms() - t0;
    cluster_run(&w.cl, 100); /* a thawed process is scheduled */
    if (f->check)
        f->check(f->pod, BACK);
    long long back = wait_instance(iid, true, lease, f->back_ms);
    CHECK(back >= 0);
    fprintf(stderr,
            "%s: %s's fault took %lld ms, its record gone %lld ms after (-1: not waited for); "
            "undone in %lld ms, registered again %lld ms later (lease %llx -> %llx)\n",
            f->name, iid, away, gone, undone, back, lease, instance_lease(iid));
    char when[96];
    snprintf(when, sizeof(when), "after the %s", f->name);
    CHECK(all_answer(when, ANSWER_MS));
}

static const struct pod_fault pod_faults[] = {
    {"pod kill", 0, fault_pod_kill, GONE_MS, fault_pod_start, 10000, killed_check, NULL},
    {"pod roll", 1, pod_roll, 0, NULL, 10000, rolled_check, NULL},
    {"freeze", 1, fault_node_freeze, GONE_MS, fault_node_thaw, 15000, frozen_check, NULL},
};
/* as root only: the network-namespace pod */
static const struct pod_fault partition = {.name = "partition",
                                           .pod = 2,
                                           .away = partition_on,
                                           .gone_ms = GONE_MS + 4000,
                                           .back = partition_off,
                                           .back_ms = 20000,
                                           .away_answer = "partitioned"};

/* ---- leaders ---- */

/* Wait up to ms until leader() names one other than old; it, or -1; the time printed. */
static int wait_new_leader(const char *what, int (*leader)(void), int old, long ms)
{
    long long t0 = harness_now_ms();
    int now = -1;
    while (((now = leader()) < 0 || now == old) && harness_now_ms() - t0 < ms)
        cluster_run(&w.cl, 100);
    fprintf(stderr, "%s: %d led, killed; %d leads %lld ms later\n", what, old, now,
            harness_now_ms() - t0);
    return now == old ? -1 : now;
}

static int etcd_leader_now(void)
{
    return fault_etcd_leader(&w);
}

static int controller_leader_now(void)
{
    return cluster_controller_leader(&w.cl);
}

static void etcd_leader(void)
{
    int old = fault_etcd_leader(&w);
    REQUIRE(old >= 0);
    REQUIRE(fault_etcd_kill(&w, (size_t)old) == 0);
    CHECK(cluster_etcd_member(&w.cl, (size_t)old)->pid == 0);
    int now = wait_new_leader("etcd member", etcd_leader_now, old, 15000);
    CHECK(now >= 0 && now != old);
    CHECK(all_answer("with the etcd leader killed", ANSWER_MS));
    /* writes still go through (two members of three) */
    char key[KEYS_MAX];
    snprintf(key, sizeof(key), "/modelmesh/%s/chaos-probe", w.cl.name);
    struct mm_error err = {0};
    CHECK(etcd_sync_put(w.cl.etcd_client, key, "1", 0, NULL, &err) == 0);
    REQUIRE(fault_etcd_start(&w, (size_t)old, true) == 0);
    CHECK(cluster_etcd_member(&w.cl, (size_t)old)->pid > 0);
    CHECK(fault_etcd_leader(&w) >= 0);
    CHECK(etcd_sync_delete(w.cl.etcd_client, key, false, NULL, &err) == 0);
}

/* Every member killed (etcd gone); one started without waiting (alone it has no quorum: the
 * call returns at once, and no member leads), the others waited for: a leader again, and the
 * mesh serves. */
static void etcd_quorum(void)
{
    for (size_t k = 0; k < 3; k++)
        REQUIRE(fault_etcd_kill(&w, k) == 0);
    long long t0 = harness_now_ms();
    REQUIRE(fault_etcd_start(&w, 0, false) == 0);
    long long took = harness_now_ms() - t0;
    CHECK(took < 2000);
    CHECK(cluster_etcd_member(&w.cl, 0)->pid > 0);
    CHECK(fault_etcd_leader(&w) < 0);
    REQUIRE(fault_etcd_start(&w, 1, true) == 0);
    REQUIRE(fault_etcd_start(&w, 2, true) == 0);
    int now = fault_etcd_leader(&w);
    fprintf(stderr,
            "etcd gone: every member killed; m0 started in %lld ms (no leader), m1 and m2 "
            "started healthy: member %d leads %lld ms after the first start\n",
            took, now, harness_now_ms() - t0);
    CHECK(now >= 0);
    CHECK(all_answer("etcd back", ANSWER_MS));
    CHECK(world_wait_ready(&w, 30000) == 0);
}

/* Copy records of model id: whether one is Failed with an error holding want (printed). */
static bool failed_naming(const char *model, const char *want)
{
    struct cluster_copy copies[8];
    int n = cluster_copies(&w.cl, model, copies, 8);
    for (int i = 0; i < n && i < 8; i++)
        if (copies[i].rec.state == COPY_FAILED && strstr(copies[i].rec.error, want)) {
            fprintf(stderr, "storage down: %s on %s failed: %s\n", model, copies[i].iid,
                    copies[i].rec.error);
            return true;
        }
    return false;
}

/* The target model id of model k's status (its revision in transition), into out. */
static bool target_of(size_t k, char *out, size_t size)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_isvc_status(key, sizeof(key), w.cl.name, WORLD_NAMESPACE, w.models[k].name,
                             &err) == 0);
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    if (etcd_sync_range(w.cl.etcd_client, &req, &r, &err) < 0)
        return false;
    static struct isvc_status st;
    bool ok = r->op.n_kvs == 1 &&
              isvc_status_decode(r->op.kvs[0].value, r->op.kvs[0].value_len, &st, &err) == 0 &&
              st.generation == w.models[k].generation && st.target_model_id[0];
    if (ok)
        snprintf(out, size, "%s", st.target_model_id);
    etcd_response_free(r);
    return ok;
}

static void storage_down_up(size_t k)
{
    REQUIRE(fault_storage(&w, true) == 0);
    long before = faultproxy_faults(&w.storage);
    REQUIRE(world_update_model(&w, k) == 0);
    /* the failure names the storage: the storage-config key the model's load used */
    char storage[96];
    snprintf(storage, sizeof(storage), "storage key '%s'", w.storage_key);
    char target[KEYS_NAME_MAX + 1] = "";
    long long t0 = harness_now_ms();
    bool named = false;
    while (!named && harness_now_ms() - t0 < 30000) {
        if (target[0] || target_of(k, target, sizeof(target)))
            named = failed_naming(target, storage);
        if (!named)
            cluster_run(&w.cl, 200);
    }
    CHECK(named);
    CHECK(faultproxy_faults(&w.storage) > before);
    CHECK(all_answer("storage down (the old revisions serve)", ANSWER_MS));
    REQUIRE(fault_storage(&w, false) == 0);
    t0 = harness_now_ms();
    CHECK(world_wait_ready(&w, 60000) == 0);
    fprintf(stderr, "storage up: %s at generation %d Ready %lld ms later\n", w.models[k].name,
            w.models[k].generation, harness_now_ms() - t0);
    CHECK(all_answer("storage back", ANSWER_MS));
}

static void controller_leader(size_t k)
{
    size_t which = 99;
    REQUIRE(fault_controller_leader_kill(&w, &which) == 0);
    REQUIRE(which < 2);
    CHECK(w.cl.controllers[which].pid == 0);
    int now = wait_new_leader("controller ctl", controller_leader_now, (int)which, 15000);
    CHECK(now == (int)(1 - which));
    REQUIRE(fault_controller_start(&w, which) == 0);
    CHECK(w.cl.controllers[which].pid > 0);
    CHECK(cluster_controller_leader(&w.cl) == (int)(1 - which));
    /* an update under the new leader: the new generation, the same answers */
    int gen = w.models[k].generation;
    float expected = w.models[k].expected;
    REQUIRE(world_update_model(&w, k) == 0);
    CHECK(w.models[k].generation == gen + 1);
    long long t0 = harness_now_ms();
    CHECK(world_wait_ready(&w, 30000) == 0);
    fprintf(stderr, "update: %s generation %d Ready in %lld ms\n", w.models[k].name,
            w.models[k].generation, harness_now_ms() - t0);
    float again = 0;
    CHECK(world_model_expected(&w, w.models[k].path, &again) == 0 && again == expected);
    CHECK(all_answer("after the update", ANSWER_MS));
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr,
                "usage: %s MM_NODE MM_RUNTIME MM_GATEWAY MM_CONTROLLER "
                "MAKE_BREAST_CANCER SERVERS_DIR RUNTIMES_DIR\n",
                argv[0]);
        return 2;
    }
    atexit(cleanup);
    bool root = geteuid() == 0;
    if (!root)
        fprintf(stderr, "not root: no network namespace can be made, the partition part is "
                        "skipped\n");
    struct world_config cfg = {
        .mm_node = argv[1],
        .mm_runtime = argv[2],
        .mm_gateway = argv[3],
        .mm_controller = argv[4],
        .make_breast_cancer = argv[5],
        .servers_dir = argv[6],
        .runtimes_dir = argv[7],
        .n_pods = 3,
        .n_multi = 3,
        .n_single = 3,
        .etcd_members = 3,
        .netns_pod = root ? 2 : -1,
        .n_controllers = 2,
        .lease_ttl = "2s",
    };
    /* the verify keeps the cluster's address; world_start fills the cluster in */
    REQUIRE(verify_new(&w.cl, &v) == 0);
    cfg.verify = v;
    long long t0 = harness_now_ms();
    int rc = world_start(&w, &cfg, START_MS);
    if (rc == -EPERM && root) {
        fprintf(stderr, "root, but no network namespace could be made: skipped\n");
        return 77;
    }
    REQUIRE(rc == 0);
    up = true;
    fprintf(stderr, "world up in %lld ms\n", harness_now_ms() - t0);
    CHECK(cluster_etcd_members(&w.cl) == 3);
    CHECK(w.n_models == 6);
    for (size_t k = 0; k < w.n_models; k++)
        fprintf(stderr, "  %s %s expects %.9g (%s)\n", w.models[k].name,
                w.models[k].multi ? "multi " : "single", w.models[k].expected, w.models[k].path);
    REQUIRE(all_answer("world up", ANSWER_MS));

    for (size_t i = 0; i < sizeof(pod_faults) / sizeof(pod_faults[0]); i++)
        pod_fault_run(&pod_faults[i]);
    etcd_leader();
    etcd_quorum();
    storage_down_up(w.cfg.n_multi); /* a single-copy model */
    controller_leader(0);
    if (root)
        pod_fault_run(&partition);
    else
        fprintf(stderr, "partition: skipped (not root)\n");

    CHECK(verify_registrations(v) == 0);
    struct verify_counts counts;
    verify_counts(v, &counts);
    fprintf(stderr, "registrations: %zu keys acknowledged, %zu checked\n", counts.acked_keys,
            counts.checked_keys);
    CHECK(counts.acked_keys >= w.n_models + 1);
    /* every process the world runs is up, every log of theirs free of sanitizer reports */
    const char *logs[64];
    size_t n_logs = world_logs(&w, logs, 64);
    CHECK(n_logs >= 2 * w.cfg.n_pods + 2 + 3 + 1);
    CHECK(verify_processes(v, logs, n_logs) == 0);
    /* the mesh's own invariants, for the record (the scenarios judge them) */
    fprintf(stderr, "capacity breaches %d, lease breaches %d\n", verify_capacity(v),
            verify_leases(v));
    const char *const *lines;
    size_t n = verify_lines(v, &lines);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  breach: %s\n", lines[i]);
    if (check_failures)
        cluster_dump_logs(&w.cl, false);
    fprintf(stderr, "in all %lld ms\n", harness_now_ms() - t0);
    return CHECK_DONE();
}
