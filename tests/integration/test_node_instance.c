/* test_node_instance.c - the mm-node program's registration, with a real etcd and a real
 * mm-runtime: the record appears with the runtime's capacity and limits and the labels, as
 * JSON etcdctl reads, attached to the node's lease; re-asserted after the prefix is wiped;
 * back after etcd was stopped for longer than the TTL and restarted; SIGTERM: gone at once,
 * exit 0; kill -9: gone within the TTL; a runtime that never answers: refused within the
 * bound, naming its address, exit 1; a bad flag: exit 2. Under ASan the exits also prove that
 * the shutdown paths leak nothing (LeakSanitizer would change the exit status).
 * argv: MM_NODE MM_RUNTIME */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/records.h"

#define KEY "/modelmesh/t/instances/n1"

static const char *mm_node, *mm_runtime;
static struct harness_etcd server;
static struct ev_loop *loop;
static struct etcd_client *etcd;
static char dir[] = "/tmp/mm-node-test-XXXXXX";
static char log_path[300];
static int runtime_port;

/* The record as etcd holds it: 1 present, 0 absent, -1 error. */
static int get(struct instance_record *rec, int64_t *lease)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = KEY};
    if (etcd_sync_range(etcd, &req, &r, &err) < 0) {
        fprintf(stderr, "range %s: %s\n", KEY, err.msg);
        return -1;
    }
    int rc = r->op.n_kvs == 1 ? 1 : 0;
    if (rc == 1) {
        if (lease)
            *lease = r->op.kvs[0].lease;
        if (rec && record_decode(RECORD_INSTANCE, r->op.kvs[0].value, r->op.kvs[0].value_len, rec,
                                 &err) < 0) {
            fprintf(stderr, "record: %s\n", err.msg);
            rc = -1;
        }
    }
    etcd_response_free(r);
    return rc;
}

/* Poll (every 50 ms) until the key's presence is want; the time it took, or -1. */
static long long until(int want, long long ms)
{
    long long t0 = harness_now_ms();
    while (harness_now_ms() - t0 < ms) {
        if (get(NULL, NULL) == want)
            return harness_now_ms() - t0;
        usleep(50000);
    }
    return -1;
}

static pid_t start_node(const char *runtime, const char *extra)
{
    char target[64], ttl[] = "2s";
    snprintf(target, sizeof(target), "%s", runtime);
    char *argv[32] = {(char *)mm_node,
                      "--etcd-endpoints",
                      server.endpoint,
                      "--cluster",
                      "t",
                      "--instance-id",
                      "n1",
                      "--runtime",
                      target,
                      "--model-types",
                      "xgboost",
                      "--zone",
                      "z1",
                      "--internal-address",
                      "127.0.0.1:9999",
                      "--lease-ttl",
                      ttl,
                      "--publish-min-interval",
                      "1s",
                      "--listen",
                      "127.0.0.1:0",
                      "--internal-listen",
                      "127.0.0.1:0",
                      "--probe-listen",
                      "127.0.0.1:0",
                      "--rest-listen",
                      "127.0.0.1:0",
                      "--metrics-listen",
                      "127.0.0.1:0"};
    int n = 29;
    char extra_buf[256] = "";
    if (extra) {
        snprintf(extra_buf, sizeof(extra_buf), "%s", extra);
        for (char *save = NULL, *t = strtok_r(extra_buf, " ", &save); t && n < 31;
             t = strtok_r(NULL, " ", &save))
            argv[n++] = t;
    }
    argv[n] = NULL;
    pid_t pid = 0;
    REQUIRE(harness_spawn(argv, log_path, &pid) == 0);
    return pid;
}

static bool log_has(const char *needle)
{
    char cmd[400], out[8192];
    snprintf(cmd, sizeof(cmd), "cat %s", log_path);
    harness_capture(cmd, out, sizeof(out));
    return strstr(out, needle) != NULL;
}

static void test_registered(void)
{
    char runtime[64];
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", runtime_port);
    pid_t pid = start_node(runtime, NULL);
    long long took = until(1, 15000);
    REQUIRE(took >= 0);
    fprintf(stderr, "registered %lld ms after start\n", took);

    /* What etcdctl shows is the JSON record, with the runtime's figures and the labels. */
    char cmd[512], out[4096];
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints %s get %s --print-value-only",
             server.endpoint, KEY);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 0);
    out[strcspn(out, "\n")] = '\0';
    fprintf(stderr, "etcdctl: %s\n", out);
    struct instance_record rec;
    struct mm_error err = {0};
    REQUIRE(record_decode(RECORD_INSTANCE, out, strlen(out), &rec, &err) == 0);
    CHECK_STR(rec.address, "127.0.0.1:9999");
    CHECK_STR(rec.runtime, "mm-runtime");
    CHECK_STR(rec.zone, "z1");
    CHECK_INT(rec.capacity_bytes, 5000000);
    CHECK_INT(rec.loading_threads, 2);
    CHECK_INT(rec.load_timeout_ms, 30000);
    CHECK_INT(rec.labels.n, 2);
    CHECK_STR(rec.labels.label[0], "rt:mm-runtime");
    CHECK_STR(rec.labels.label[1], "mt:xgboost");
    CHECK(!rec.shutting_down && rec.start_ms > 0 && rec.version[0]);
    CHECK(strstr(rec.runtime_version, "mm-runtime") != NULL);

    /* Attached to the lease it names: etcd lists the key under that lease. */
    int64_t lease = 0;
    REQUIRE(get(&rec, &lease) == 1);
    CHECK(lease != 0 && rec.lease == lease);
    snprintf(cmd, sizeof(cmd),
             "ETCDCTL_API=3 etcdctl --endpoints %s lease timetolive %" PRIx64 " --keys",
             server.endpoint, (uint64_t)lease);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 0);
    CHECK(strstr(out, "attached keys([" KEY "])") != NULL);

    /* The prefix wiped with etcdctl: the node puts its record back. */
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints %s del --prefix /modelmesh/",
             server.endpoint);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 0);
    CHECK_STR(out, "1\n");
    took = until(1, 5000);
    CHECK(took >= 0);
    fprintf(stderr, "re-asserted %lld ms after the wipe\n", took);

    /* etcd stopped for longer than the TTL, then restarted: registered again. */
    CHECK_INT(harness_etcd_stop(&server), 0);
    usleep(3500 * 1000);
    CHECK_INT(harness_etcd_restart(&server), 0);
    /* etcd may revive the old lease for a while after its restart (it renews leases it finds
     * at start), so wait for the record under the node's new lease, not for any record. */
    long long t_restart = harness_now_ms();
    int64_t lease2 = 0;
    took = -1;
    while (harness_now_ms() - t_restart < 10000) {
        if (get(&rec, &lease2) == 1 && lease2 != 0 && lease2 != lease) {
            took = harness_now_ms() - t_restart;
            break;
        }
        usleep(50000);
    }
    CHECK(took >= 0);
    CHECK(lease2 != 0 && rec.lease == lease2 && lease2 != lease);
    fprintf(stderr, "back %lld ms after etcd restarted, lease %" PRIx64 " -> %" PRIx64 "\n", took,
            (uint64_t)lease, (uint64_t)lease2);
    CHECK(waitpid(pid, NULL, WNOHANG) == 0); /* kept running meanwhile */

    /* SIGTERM: gone at once, exit 0. */
    long long t0 = harness_now_ms();
    kill(pid, SIGTERM);
    took = until(0, 3000);
    CHECK(took >= 0 && took < 1000);
    int status = harness_wait_pid(pid, 5000);
    fprintf(stderr, "SIGTERM: record gone after %lld ms, exit after %lld ms, status %d\n", took,
            harness_now_ms() - t0, status);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(log_has("deregistered: lease revoked"));
}

static void test_killed(void)
{
    char runtime[64];
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", runtime_port);
    pid_t pid = start_node(runtime, NULL);
    REQUIRE(until(1, 15000) >= 0);
    long long t0 = harness_now_ms();
    kill(pid, SIGKILL);
    harness_wait_pid(pid, 5000);
    long long took = until(0, 6000);
    fprintf(stderr, "kill -9: record gone after %lld ms (TTL 2 s)\n", took);
    CHECK(took >= 0 && harness_now_ms() - t0 <= 3500);
}

static void test_runtime_never_ready(void)
{
    char runtime[64];
    int port = harness_free_port();
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", port);
    long long t0 = harness_now_ms();
    pid_t pid = start_node(runtime, "--runtime-start-timeout 2s");
    int status = harness_wait_pid(pid, 8000);
    long long took = harness_now_ms() - t0;
    fprintf(stderr, "runtime never ready: exit status %d after %lld ms\n", status, took);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1);
    CHECK(took >= 1900 && took < 5000);
    char want[128];
    snprintf(want, sizeof(want), "refusing to register: runtime at %s not ready after 2000 ms",
             runtime);
    CHECK(log_has(want));
    CHECK_INT(get(NULL, NULL), 0);
}

static void test_usage(void)
{
    char cmd[512], out[2048];
    snprintf(cmd, sizeof(cmd), "%s --lease-ttl 1500ms", mm_node);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 2);
    CHECK(strstr(out, "--lease-ttl") != NULL);
    snprintf(cmd, sizeof(cmd), "%s --instance-id a/b", mm_node);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 2);
    CHECK(strstr(out, "instance id (from --instance-id) 'a/b'") != NULL);
    snprintf(cmd, sizeof(cmd), "MM_LEASE_TTL=1h1 %s", mm_node);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 2);
    CHECK(strstr(out, "MM_LEASE_TTL") != NULL);
}

/* SIGTERM with etcd down: the mark cannot be published nor the lease revoked; the node still
 * exits 0 within its shutdown bound (the lease expires on its own). SIGTERM while it waits for
 * its runtime: exit 0 at once. Under ASan both exits prove these paths free everything. */
static void test_sigterm_edges(void)
{
    char runtime[64];
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", runtime_port);
    pid_t pid = start_node(runtime, "--shutdown-timeout 3s");
    REQUIRE(until(1, 15000) >= 0);
    CHECK_INT(harness_etcd_stop(&server), 0);
    long long t0 = harness_now_ms();
    kill(pid, SIGTERM);
    int status = harness_wait_pid(pid, 6000);
    fprintf(stderr, "SIGTERM with etcd down: status %d after %lld ms\n", status,
            harness_now_ms() - t0);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(harness_now_ms() - t0 < 4000);
    CHECK_INT(harness_etcd_restart(&server), 0);

    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", harness_free_port());
    pid = start_node(runtime, NULL);
    usleep(500 * 1000);
    t0 = harness_now_ms();
    kill(pid, SIGTERM);
    status = harness_wait_pid(pid, 5000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(harness_now_ms() - t0 < 1000);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    mm_node = argv[1];
    mm_runtime = argv[2];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(log_path, sizeof(log_path), "%s/node.log", dir);
    loop = ev_loop_new(EVFLAG_AUTO); /* not the default loop: it would reap our children */
    REQUIRE(harness_etcd_start(&server, NULL) == 0);
    struct etcd_config cfg = {.endpoints = server.endpoint, .request_timeout_ms = 1000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &etcd, &err) == 0);
    char *rt_argv[] = {(char *)mm_runtime,
                       "--listen",
                       "127.0.0.1:0",
                       "--capacity-bytes",
                       "5000000",
                       "--max-loading-concurrency",
                       "2",
                       "--load-timeout-ms",
                       "30000",
                       "--log-level",
                       "warn",
                       NULL};
    pid_t rt_pid = 0;
    REQUIRE(harness_spawn_listening(rt_argv, 15000, &rt_pid, &runtime_port) == 0);

    test_usage();
    test_runtime_never_ready();
    test_registered();
    test_killed();
    test_sigterm_edges();

    int rc = CHECK_DONE();
    if (rc != 0) {
        char cmd[400], out[16384];
        snprintf(cmd, sizeof(cmd), "tail -c 8000 %s", log_path);
        harness_capture(cmd, out, sizeof(out));
        fprintf(stderr, "--- mm-node's log:\n%s", out);
    }
    harness_stop_pid(rt_pid, 5000);
    etcd_client_free(etcd);
    harness_etcd_cleanup(&server);
    unlink(log_path);
    rmdir(dir);
    ev_loop_destroy(loop);
    return rc;
}
