/* test_probes.c - the HTTP probes of the real programs, on a real etcd and a real mm-runtime:
 * mm-node's /ready is 503 while its runtime is not up, 200 once it serves (runtime READY,
 * registered, mirror synced), 503 "shutting down" after SIGTERM while it deregisters (etcd is
 * frozen, so that this lasts); mm-gateway's and mm-controller's /ready 503 while etcd is frozen
 * (the registry not read), 200 once synced, 503 while the controller resigns; /live 200
 * throughout; "off" prints no PROBES line.
 * argv: MM_NODE MM_RUNTIME MM_GATEWAY MM_CONTROLLER */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"

static char dir[] = "/tmp/mm-probes-test-XXXXXX";

/* Wait up to ms for log to hold the line "LEADING" (the controller won its election); 0 or -1. */
static int wait_leading(const char *log, long ms)
{
    for (long waited = 0; waited <= ms; waited += 50) {
        FILE *f = fopen(log, "r");
        char line[512];
        bool found = false;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strncmp(line, "LEADING", 7) == 0;
        if (f)
            fclose(f);
        if (found)
            return 0;
        usleep(50 * 1000);
    }
    return -1;
}

/* Wait up to ms for the process logging to log to print "PROBES <port>"; the port or 0. */
static int wait_probes(const char *log, pid_t pid, long ms)
{
    long long deadline = harness_now_ms() + ms;
    while (harness_now_ms() < deadline) {
        int port = harness_probe_port(log, 0);
        if (port > 0)
            return port;
        if (harness_wait_pid(pid, 0) != -1)
            break;
        usleep(20 * 1000);
    }
    harness_print_tail(log, 4096);
    return 0;
}

/* Poll path until it answers want (bounded); the last status, the body in body. */
static int wait_status(int port, const char *path, int want, long ms, char *body, size_t size)
{
    long long deadline = harness_now_ms() + ms;
    int st;
    do {
        st = harness_http(port, "GET", path, 2000, body, size);
        if (st == want)
            return st;
        usleep(20 * 1000);
    } while (harness_now_ms() < deadline);
    fprintf(stderr, "  %s: %d, wanted %d (body: %s)\n", path, st, want, body);
    return st;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 5);
    const char *mm_node = argv[1], *mm_runtime = argv[2], *mm_gateway = argv[3],
               *mm_controller = argv[4];
    REQUIRE(mkdtemp(dir));
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    char body[512], log[400], models[400];
    snprintf(models, sizeof(models), "%s/models", dir);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", models);
    REQUIRE(system(cmd) == 0);

    /* --- mm-node: the runtime is not there yet */
    int rport = harness_free_port();
    REQUIRE(rport > 0);
    char runtime[64];
    snprintf(runtime, sizeof(runtime), "127.0.0.1:%d", rport);
    snprintf(log, sizeof(log), "%s/node.log", dir);
    char *nargv[] = {(char *)mm_node,
                     "--etcd-endpoints",
                     etcd.endpoint,
                     "--cluster",
                     "p",
                     "--instance-id",
                     "n0",
                     "--runtime",
                     runtime,
                     "--model-types",
                     "xgboost",
                     "--listen",
                     "127.0.0.1:0",
                     "--internal-listen",
                     "127.0.0.1:0",
                     "--cache-dir",
                     models,
                     "--lease-ttl",
                     "2s",
                     "--shutdown-timeout",
                     "3s",
                     "--probe-listen",
                     "127.0.0.1:0",
                     "--metrics-listen",
                     "127.0.0.1:0",
                     "--log-level",
                     "info",
                     "--rest-listen",
                     "127.0.0.1:0",
                     NULL};
    pid_t node = 0;
    REQUIRE(harness_spawn(nargv, log, &node) == 0);
    int nport = wait_probes(log, node, 10000);
    REQUIRE(nport > 0);
    CHECK_INT(harness_http(nport, "GET", "/ready", 2000, body, sizeof(body)), 503);
    CHECK_STR(body, "not ready: waiting for the runtime to be READY\n");
    CHECK_INT(harness_http(nport, "GET", "/live", 2000, body, sizeof(body)), 200);
    CHECK_INT(harness_http(nport, "HEAD", "/ready", 2000, NULL, 0), 503);
    CHECK_INT(harness_http(nport, "GET", "/metrics", 2000, NULL, 0), 404);
    CHECK_INT(harness_http(nport, "POST", "/live", 2000, NULL, 0), 405);
    usleep(500 * 1000);
    CHECK_INT(harness_http(nport, "GET", "/ready", 2000, body, sizeof(body)), 503);

    /* the runtime comes: READY, registered, synced: ready */
    char rlog[400];
    snprintf(rlog, sizeof(rlog), "%s/runtime.log", dir);
    char *rargv[] = {(char *)mm_runtime, "--listen", runtime, "--models-dir", models,
                     "--log-level",      "info",     NULL};
    pid_t rt = 0;
    int got = 0;
    REQUIRE(harness_spawn_logged(rargv, rlog, 20000, &rt, &got) == 0);
    long long t0 = harness_now_ms();
    CHECK_INT(wait_status(nport, "/ready", 200, 30000, body, sizeof(body)), 200);
    CHECK_STR(body, "ready\n");
    fprintf(stderr, "node ready %lld ms after its runtime\n", harness_now_ms() - t0);
    /* ready means serving: LISTENING is out */
    FILE *f = fopen(log, "r");
    char line[512];
    bool listening = false;
    while (f && fgets(line, sizeof(line), f))
        listening |= strncmp(line, "LISTENING ", 10) == 0;
    if (f)
        fclose(f);
    CHECK(listening);
    CHECK_INT(harness_http(nport, "GET", "/live", 2000, NULL, 0), 200);

    /* SIGTERM with etcd frozen: the node deregisters for up to 3 s, not ready meanwhile */
    REQUIRE(harness_freeze(etcd.pid) == 0);
    REQUIRE(kill(node, SIGTERM) == 0);
    CHECK_INT(wait_status(nport, "/ready", 503, 2000, body, sizeof(body)), 503);
    CHECK_STR(body, "not ready: shutting down\n");
    CHECK_INT(harness_http(nport, "GET", "/live", 2000, NULL, 0), 200);
    kill(etcd.pid, SIGCONT);
    int status = harness_wait_pid(node, 10000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* gone: nothing listens on the probe port */
    CHECK(harness_http(nport, "GET", "/live", 1000, NULL, 0) < 0);

    /* --- mm-gateway: etcd frozen at start, then thawed */
    snprintf(log, sizeof(log), "%s/gateway.log", dir);
    char *gargv[] = {(char *)mm_gateway,
                     "--etcd-endpoints",
                     etcd.endpoint,
                     "--cluster",
                     "p",
                     "--gateway-id",
                     "gw0",
                     "--listen",
                     "127.0.0.1:0",
                     "--probe-listen",
                     "127.0.0.1:0",
                     "--metrics-listen",
                     "127.0.0.1:0",
                     "--log-level",
                     "info",
                     "--rest-listen",
                     "127.0.0.1:0",
                     NULL};
    REQUIRE(harness_freeze(etcd.pid) == 0);
    pid_t gw = 0;
    REQUIRE(harness_spawn(gargv, log, &gw) == 0);
    int gport = wait_probes(log, gw, 10000);
    REQUIRE(gport > 0);
    usleep(300 * 1000);
    CHECK_INT(harness_http(gport, "GET", "/ready", 2000, body, sizeof(body)), 503);
    CHECK_STR(body, "not ready: reading the registry\n");
    CHECK_INT(harness_http(gport, "GET", "/live", 2000, NULL, 0), 200);
    kill(etcd.pid, SIGCONT);
    CHECK_INT(wait_status(gport, "/ready", 200, 15000, body, sizeof(body)), 200);
    status = harness_stop_pid(gw, 5000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* --- mm-controller: the same; then SIGTERM while etcd is frozen: it resigns, not ready */
    snprintf(log, sizeof(log), "%s/controller.log", dir);
    char *cargv[] = {(char *)mm_controller,
                     "--etcd-endpoints",
                     etcd.endpoint,
                     "--cluster",
                     "p",
                     "--identity",
                     "ctl0",
                     "--lease-ttl",
                     "2s",
                     "--probe-listen",
                     "127.0.0.1:0",
                     "--metrics-listen",
                     "127.0.0.1:0",
                     "--log-level",
                     "info",
                     NULL};
    REQUIRE(harness_freeze(etcd.pid) == 0);
    pid_t ctl = 0;
    REQUIRE(harness_spawn(cargv, log, &ctl) == 0);
    int cport = wait_probes(log, ctl, 10000);
    REQUIRE(cport > 0);
    usleep(300 * 1000);
    CHECK_INT(harness_http(cport, "GET", "/ready", 2000, body, sizeof(body)), 503);
    CHECK_STR(body, "not ready: reading the registry\n");
    kill(etcd.pid, SIGCONT);
    CHECK_INT(wait_status(cport, "/ready", 200, 15000, body, sizeof(body)), 200);
    CHECK_INT(harness_http(cport, "GET", "/live", 2000, NULL, 0), 200);
    /* a leader resigns through etcd at SIGTERM (a follower exits at once): only then does a
     * frozen etcd hold it in its shutdown long enough to be asked */
    REQUIRE(wait_leading(log, 15000) == 0);
    REQUIRE(harness_freeze(etcd.pid) == 0);
    REQUIRE(kill(ctl, SIGTERM) == 0);
    CHECK_INT(wait_status(cport, "/ready", 503, 2000, body, sizeof(body)), 503);
    CHECK_STR(body, "not ready: shutting down\n");
    kill(etcd.pid, SIGCONT);
    status = harness_wait_pid(ctl, 10000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* --- off: no PROBES line, the gateway still serves */
    snprintf(log, sizeof(log), "%s/gateway-off.log", dir);
    gargv[10] = "off";
    pid_t off = 0;
    int lport = 0;
    REQUIRE(harness_spawn_logged(gargv, log, 15000, &off, &lport) == 0);
    CHECK_INT(harness_probe_port(log, 0), 0);
    harness_stop_pid(off, 5000);

    /* --- a taken port: exit 1 naming the address */
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", rport);
    snprintf(cmd, sizeof(cmd),
             "MM_PROBE_LISTEN=%s MM_REST_LISTEN=off timeout 10 '%s' --etcd-endpoints %s "
             "--cluster p --listen 127.0.0.1:0 2>&1",
             taken, mm_gateway, etcd.endpoint);
    char out[4096];
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 1);
    CHECK(strstr(out, taken) != NULL);

    harness_stop_pid(rt, 5000);
    harness_etcd_cleanup(&etcd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return CHECK_DONE();
}
