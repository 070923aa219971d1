/* test_verify.c - the chaos invariant checker (verify.h) on a real cluster: etcd, 2 pods of
 * mm-runtime + mm-node, the ServingRuntimes, two controllers, an InferenceService Ready. Every
 * check is first clean (0 breaches), then made to fail on purpose, then clean again once the
 * fault is taken back:
 *   - registrations: an acknowledged key changed, deleted, and put again after an acknowledged
 *     delete;
 *   - capacity: an instance record with used > capacity; a runtime holding more than its
 *     capacity (models loaded into it behind the mesh's back);
 *   - leases: a copy record with no lease, with another instance's lease, with no instance
 *     (and a dead lease cannot be attached at all: etcd refuses the put);
 *   - convergence: an InferenceService whose path does not exist never converges (named, with
 *     its status), and once it is deleted the namespace converges;
 *   - processes: a controller killed -9 behind the cluster's back (reported once), an
 *     AddressSanitizer report appended to a node's log and a UBSan one to a log of the caller's
 *     (each reported once; a log given twice is read once);
 *   - a 3-member etcd: a member killed -9 behind the cluster's back is named; the registry
 *     checks read through the other two.
 * argv: MM_NODE MM_RUNTIME MAKE_BREAST_CANCER MM_CONTROLLER RUNTIMES_DIR */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/keys.h"
#include "mm/records.h"
#include "mm/spi.h"
#include "mm/spi_sync.h"
#include "verify.h"

#define NS "chaos"
#define CONVERGE_MS 30000
#define MAX_EXTRA 200

static struct cluster cl;
static bool cluster_up;
static struct verify *v;
static char work[256], model_file[512];

static void cleanup(void)
{
    verify_free(v);
    v = NULL;
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    if (work[0]) {
        char cmd[400], out[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
        work[0] = '\0';
    }
}

/* Whether some kept line holds every one of the words (NULL-terminated). */
static bool said(const char *a, const char *b)
{
    const char *const *lines;
    size_t n = verify_lines(v, &lines);
    for (size_t i = 0; i < n; i++)
        if (strstr(lines[i], a) && (!b || strstr(lines[i], b)))
            return true;
    return false;
}

static void put(const char *key, const char *value, int64_t lease, bool ack)
{
    struct mm_error err = {0};
    int rc = etcd_sync_put(cl.etcd_client, key, value, lease, NULL, &err);
    if (rc < 0)
        fprintf(stderr, "put %s: %s\n", key, err.msg);
    REQUIRE(rc == 0);
    if (ack)
        REQUIRE(verify_ack(v, key, value, strlen(value)) == 0);
}

static void del(const char *key, bool ack)
{
    struct mm_error err = {0};
    REQUIRE(etcd_sync_delete(cl.etcd_client, key, false, NULL, &err) == 0);
    if (ack)
        REQUIRE(verify_ack(v, key, NULL, 0) == 0);
}

static void isvc_key(const char *name, char *key)
{
    struct mm_error err = {0};
    REQUIRE(keys_isvc(key, KEYS_MAX, cl.name, NS, name, &err) == 0);
}

/* The InferenceService as mmctl apply writes it, acknowledged. */
static void put_isvc(const char *name, int generation, const char *path, bool ack)
{
    char key[KEYS_MAX], value[2048];
    isvc_key(name, key);
    snprintf(value, sizeof(value),
             "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
             "\"metadata\":{\"name\":\"%s\",\"namespace\":\"" NS "\",\"annotations\":"
             "{\"serving.kserve.io/deploymentMode\":\"ModelMesh\"},\"generation\":%d},"
             "\"spec\":{\"predictor\":{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},"
             "\"storage\":{\"path\":\"%s\"}}}}}",
             name, generation, path);
    put(key, value, 0, ack);
}

static void all_clean(const char *when)
{
    fprintf(stderr, "-- all checks clean: %s\n", when);
    int64_t took = -1;
    CHECK_INT(verify_converged(v, NS, CONVERGE_MS, &took), 0);
    CHECK(took >= 0);
    CHECK_INT(verify_registrations(v), 0);
    CHECK_INT(verify_capacity(v), 0);
    CHECK_INT(verify_leases(v), 0);
    CHECK_INT(verify_processes(v, NULL, 0), 0);
}

static void start(const char *mm_node, const char *mm_runtime, const char *maker,
                  const char *mm_controller, const char *runtimes_dir)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-verify-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    REQUIRE(mkdtemp(work) != NULL);
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker, work);
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, out);
    REQUIRE(rc == 0);
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);

    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .n_pods = 2,
        .capacity_bytes = 1u << 20,
        .default_model_size = 200000,
        .lease_ttl = "2s",
        .node_args = "--replace-delay 500ms",
        .runtimes_dir = runtimes_dir,
        .mm_controller = mm_controller,
        .controller_lease_ttl = "2s",
    };
    rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    REQUIRE(cluster_controller_start(&cl, 0) == 0);
    REQUIRE(cluster_controller_start(&cl, 1) == 0);
    REQUIRE(cluster_copy_file(&cl, model_file, "xgb/a.json") == 0);
    REQUIRE(verify_new(&cl, &v) == 0);
}

/* ---------------------------------------------------------------- the checks */

static void registrations(void)
{
    fprintf(stderr, "-- registrations\n");
    char key[KEYS_MAX];
    isvc_key("cm-a", key);
    /* changed behind the checker's back: same spec, a new generation */
    put_isvc("cm-a", 2, "xgb/a.json", false);
    CHECK_INT(verify_registrations(v), 1);
    CHECK(said(key, "not the last acknowledged"));
    put_isvc("cm-a", 2, "xgb/a.json", true);
    CHECK_INT(verify_registrations(v), 0);

    /* deleted; then an acknowledged delete that is undone */
    char other[KEYS_MAX];
    snprintf(other, sizeof(other), "/modelmesh/%s/storage-config/verify-kept", cl.name);
    put(other, "{\"type\":\"s3\",\"bucket\":\"b\"}", 0, true);
    CHECK_INT(verify_registrations(v), 0);
    del(other, false);
    CHECK_INT(verify_registrations(v), 1);
    CHECK(said(other, "absent"));
    REQUIRE(verify_ack(v, other, NULL, 0) == 0);
    CHECK_INT(verify_registrations(v), 0);
    put(other, "{\"type\":\"s3\",\"bucket\":\"c\"}", 0, false);
    CHECK_INT(verify_registrations(v), 1);
    CHECK(said(other, "deleted (acknowledged) but present"));
    del(other, true);
    CHECK_INT(verify_registrations(v), 0);
    struct verify_counts n;
    verify_counts(v, &n);
    CHECK_INT(n.acked_keys, 2);
    CHECK_INT(n.checked_keys, 2);
}

static int64_t grant(int64_t ttl)
{
    int64_t id = 0;
    struct mm_error err = {0};
    REQUIRE(etcd_sync_lease_grant(cl.etcd_client, ttl, &id, &err) == 0);
    return id;
}

static void lease_revoke(int64_t id)
{
    struct mm_error err = {0};
    REQUIRE(etcd_sync_lease_revoke(cl.etcd_client, id, &err) == 0);
}

/* An instance record of an instance that is no node ("nx"), on its own live lease. */
static void fake_instance(const char *iid, uint64_t capacity, uint64_t used, int64_t lease)
{
    struct instance_record rec = {.capacity_bytes = capacity,
                                  .used_bytes = used,
                                  .lease = lease,
                                  .start_ms = cluster_epoch_ms()};
    snprintf(rec.address, sizeof(rec.address), "127.0.0.1:1");
    snprintf(rec.runtime, sizeof(rec.runtime), "verify-none"); /* no model is placed here */
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_instance(key, sizeof(key), cl.name, iid, &err) == 0);
    char *json = record_encode(RECORD_INSTANCE, &rec);
    REQUIRE(json);
    put(key, json, lease, false);
    free(json);
}

static void capacity(void)
{
    fprintf(stderr, "-- capacity\n");
    int64_t lease = grant(60);
    fake_instance("nx", 1000, 2000, lease);
    CHECK_INT(verify_capacity(v), 1);
    CHECK(said("instance nx", "used_bytes 2000 > capacity_bytes 1000"));
    struct verify_counts n;
    verify_counts(v, &n);
    CHECK_INT(n.instances, 3);
    lease_revoke(lease); /* the record goes with its lease */
    CHECK_INT(verify_capacity(v), 0);

    /* A runtime made to hold more than its capacity: registered models (records only, never
     * requested: the mesh places nothing) loaded straight into pod 1's runtime. */
    struct spi_client *spi = cl.pods[1].spi;
    REQUIRE(spi);
    char path[600];
    snprintf(path, sizeof(path), "%s/xgb/a.json", cl.models_root);
    struct model_record mr = {.registered_ms = cluster_epoch_ms()};
    snprintf(mr.type, sizeof(mr.type), "xgboost");
    snprintf(mr.storage_path, sizeof(mr.storage_path), "xgb/a.json");
    char *json = record_encode(RECORD_MODEL, &mr);
    REQUIRE(json);
    char ids[MAX_EXTRA][32], key[KEYS_MAX];
    struct mm_error err = {0};
    uint64_t size = 0, loaded = 0;
    size_t n_extra = 0;
    while (n_extra < MAX_EXTRA && loaded <= cl.cfg.capacity_bytes) {
        snprintf(ids[n_extra], sizeof(ids[0]), "verify-extra-%zu", n_extra);
        REQUIRE(keys_model(key, sizeof(key), cl.name, ids[n_extra], &err) == 0);
        put(key, json, 0, false);
        struct spi_model m = {.id = ids[n_extra], .type = "xgboost", .path = path};
        struct spi_result res;
        int rc = spi_sync_load_model(spi, &m, 10000, &res);
        if (rc < 0)
            fprintf(stderr, "load %s: %s\n", ids[n_extra], res.err.msg);
        REQUIRE(rc == 0);
        size = res.size_bytes;
        loaded += size;
        n_extra++;
    }
    fprintf(stderr, "%zu models of %llu bytes loaded behind the mesh's back\n", n_extra,
            (unsigned long long)size);
    free(json);
    REQUIRE(loaded > cl.cfg.capacity_bytes);
    CHECK_INT(verify_capacity(v), 1);
    CHECK(said("n1's runtime holds", "> capacity"));
    for (size_t j = 0; j < n_extra; j++) {
        struct spi_result res;
        CHECK_INT(spi_sync_unload_model(spi, ids[j], 10000, &res), 0);
        REQUIRE(keys_model(key, sizeof(key), cl.name, ids[j], &err) == 0);
        del(key, false);
    }
    CHECK_INT(verify_capacity(v), 0);
}

static void copy_key(const char *model, const char *iid, char *key)
{
    struct mm_error err = {0};
    REQUIRE(keys_copy(key, KEYS_MAX, cl.name, model, iid, &err) == 0);
}

static void leases(void)
{
    fprintf(stderr, "-- leases\n");
    struct copy_record cr = {
        .state = COPY_LOADED, .since_ms = cluster_epoch_ms(), .size_bytes = 1000};
    char *json = record_encode(RECORD_COPY, &cr);
    REQUIRE(json);
    char key[KEYS_MAX];
    struct verify_counts n;

    /* no lease at all */
    copy_key("verify-m", "nx", key);
    put(key, json, 0, false);
    CHECK_INT(verify_leases(v), 1);
    CHECK(said("copy of verify-m on nx", "no lease"));
    verify_counts(v, &n);
    CHECK(n.copies >= 2); /* cm-a's and this one */
    del(key, false);
    CHECK_INT(verify_leases(v), 0);

    /* another instance's lease: nx's record is on its lease, the copy on n0's */
    int64_t own = grant(60), n0_lease = 0;
    fake_instance("nx", 1 << 20, 0, own);
    REQUIRE(cluster_instance(&cl, "n0", NULL, &n0_lease) == 1 && n0_lease != 0);
    put(key, json, n0_lease, false);
    CHECK_INT(verify_leases(v), 1);
    CHECK(said("copy of verify-m on nx", "not its instance's"));
    del(key, false);
    CHECK_INT(verify_leases(v), 0);

    /* no instance: a live lease, but no instance record for ny */
    copy_key("verify-m", "ny", key);
    put(key, json, own, false);
    CHECK_INT(verify_leases(v), 1);
    CHECK(said("copy of verify-m on ny", "no instance ny"));
    /* The lease goes: its keys with it (the instance record of nx, this copy): clean. */
    lease_revoke(own);
    CHECK_INT(verify_leases(v), 0);

    /* A dead lease cannot be attached: etcd refuses the put, so a copy record can only outlive
     * its instance by a lease that is not the instance's (above) or by none. */
    struct mm_error err = {0};
    CHECK_INT(etcd_sync_put(cl.etcd_client, key, json, own, NULL, &err), -ENOENT);
    free(json);

    /* An instance record with no lease outlives its node. */
    fake_instance("nz", 1 << 20, 0, 0);
    CHECK_INT(verify_leases(v), 1);
    CHECK(said("instance nz", "no lease"));
    REQUIRE(keys_instance(key, sizeof(key), cl.name, "nz", &err) == 0);
    del(key, false);
    CHECK_INT(verify_leases(v), 0);
}

static void convergence(void)
{
    fprintf(stderr, "-- convergence\n");
    put_isvc("cm-bad", 1, "xgb/missing.json", true);
    int64_t took = 0;
    long long t0 = harness_now_ms();
    CHECK_INT(verify_converged(v, NS, 8000, &took), 1);
    CHECK_INT(took, -1);
    CHECK(harness_now_ms() - t0 >= 8000);
    CHECK(said("chaos/cm-bad not converged", NULL));
    CHECK(!said("chaos/cm-a ", NULL));
    struct verify_counts n;
    verify_counts(v, &n);
    CHECK_INT(n.isvcs, 2);
    char key[KEYS_MAX];
    isvc_key("cm-bad", key);
    del(key, true);
    CHECK_INT(verify_converged(v, NS, CONVERGE_MS, &took), 0);
    CHECK(took >= 0);
    fprintf(stderr, "converged again in %lld ms\n", (long long)took);
}

/* Wait (bounded) until pid has exited, without reaping it. */
static bool wait_exited(pid_t pid)
{
    long long until = harness_now_ms() + 5000;
    while (harness_now_ms() < until) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return true;
        usleep(10000);
    }
    return false;
}

static void append(const char *path, const char *line)
{
    FILE *f = fopen(path, "a");
    REQUIRE(f);
    fprintf(f, "%s\n", line);
    fclose(f);
}

static void processes(void)
{
    fprintf(stderr, "-- processes\n");
    int leader = cluster_controller_leader(&cl);
    REQUIRE(leader == 0 || leader == 1);
    size_t follower = leader == 0 ? 1 : 0;
    pid_t pid = cl.controllers[follower].pid;
    REQUIRE(kill(pid, SIGKILL) == 0); /* behind the cluster's back: it still counts on it */
    REQUIRE(wait_exited(pid));
    CHECK_INT(verify_processes(v, NULL, 0), 1);
    CHECK(said(cl.controllers[follower].identity, "killed by signal 9"));
    CHECK_INT(verify_processes(v, NULL, 0), 0); /* reported once */
    cluster_controller_kill(&cl, follower);     /* reaped; the scenario knows it is gone */
    CHECK_INT(verify_processes(v, NULL, 0), 0);

    append(cl.pods[0].node_log,
           "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010");
    CHECK_INT(verify_processes(v, NULL, 0), 1);
    CHECK(said(cl.pods[0].node_log, "ERROR: AddressSanitizer: heap-use-after-free"));
    CHECK_INT(verify_processes(v, NULL, 0), 0); /* each line once */

    char extra[300];
    snprintf(extra, sizeof(extra), "%s/extra.log", work);
    append(extra, "starting");
    const char *paths[] = {extra, cl.pods[0].node_log, extra};
    CHECK_INT(verify_processes(v, paths, 3), 0);
    append(extra, "util/buf.c:42:7: runtime error: signed integer overflow");
    append(extra, "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior util/buf.c:42:7");
    CHECK_INT(verify_processes(v, paths, 3), 2);
    CHECK(said(extra, "runtime error: signed integer overflow"));
    struct verify_counts n;
    verify_counts(v, &n);
    CHECK(n.logs >= 6); /* extra, etcd, 2 runtimes, 2 nodes, controllers */
    CHECK_INT(verify_processes(v, paths, 3), 0);
}

/* A 3-member etcd: every member is a process of the cluster (one killed behind its back is a
 * breach naming it), and the registry checks read through a quorum of the others. */
static void etcd_members(const char *mm_node, const char *mm_runtime)
{
    fprintf(stderr, "-- a 3-member etcd\n");
    verify_free(v);
    v = NULL;
    cluster_free(&cl);
    cluster_up = false;
    struct cluster_config cfg = {.mm_node = mm_node,
                                 .mm_runtime = mm_runtime,
                                 .n_pods = 1,
                                 .lease_ttl = "2s",
                                 .etcd_members = 3};
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    REQUIRE(verify_new(&cl, &v) == 0);
    REQUIRE(cluster_etcd_members(&cl) == 3);
    CHECK_INT(verify_processes(v, NULL, 0), 0);
    struct verify_counts n;
    verify_counts(v, &n);
    CHECK(n.logs >= 5); /* 3 members, the runtime, the node */
    struct harness_etcd *m1 = cluster_etcd_member(&cl, 1);
    pid_t pid = m1->pid;
    REQUIRE(kill(pid, SIGKILL) == 0);
    REQUIRE(wait_exited(pid));
    CHECK_INT(verify_processes(v, NULL, 0), 1);
    CHECK(said(m1->name, "killed by signal 9"));
    harness_etcd_kill(m1); /* reaped: now a fault the scenario knows of */
    CHECK_INT(verify_processes(v, NULL, 0), 0);
    CHECK_INT(verify_leases(v), 0);
    CHECK_INT(verify_capacity(v), 0);
    verify_counts(v, &n);
    CHECK_INT(n.instances, 1);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr,
                "usage: %s MM_NODE MM_RUNTIME MAKE_BREAST_CANCER MM_CONTROLLER "
                "RUNTIMES_DIR\n",
                argv[0]);
        return 2;
    }
    if (!cluster_node_has_listen(argv[1])) {
        fprintf(stderr, "skipped: %s serves no model API\n", argv[1]);
        return 77;
    }
    atexit(cleanup);
    start(argv[1], argv[2], argv[3], argv[4], argv[5]);

    /* An empty namespace has converged; then one InferenceService, acknowledged. */
    int64_t took = -1;
    CHECK_INT(verify_converged(v, NS, 1000, &took), 0);
    put_isvc("cm-a", 1, "xgb/a.json", true);
    all_clean("cm-a Ready");
    struct verify_counts n;
    verify_counts(v, &n);
    fprintf(stderr, "counts: acked %zu checked %zu instances %zu copies %zu isvcs %zu logs %zu\n",
            n.acked_keys, n.checked_keys, n.instances, n.copies, n.isvcs, n.logs);
    CHECK_INT(n.acked_keys, 1);
    CHECK_INT(n.instances, 2);
    CHECK(n.copies >= 1);
    CHECK_INT(n.isvcs, 1);
    CHECK(n.logs >= 5);

    registrations();
    capacity();
    leases();
    convergence();
    processes();
    all_clean("after every fault was taken back");

    size_t breaches = verify_breaches(v);
    const char *const *lines;
    size_t kept = verify_lines(v, &lines);
    fprintf(stderr, "%zu breaches found on purpose, %zu kept\n", breaches, kept);
    CHECK_INT(breaches, 14); /* exactly those made: none spurious */
    CHECK_INT(kept, breaches < VERIFY_KEEP ? breaches : VERIFY_KEEP);
    if (check_failures)
        cluster_dump_logs(&cl, false);
    etcd_members(argv[1], argv[2]);
    if (check_failures)
        cluster_dump_logs(&cl, false);
    return CHECK_DONE();
}
