/* test_flags.c - the programs refuse numeric flags out of range or with junk after the number
 * (exit 2, a message naming the flag and the value), rather than wrapping them to something
 * else, and still accept the edges of each range. argv[1] = mmctl, argv[2] = mm-runtime,
 * argv[3] = mm-node, argv[4] = mm-gateway. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "harness.h"

static char out[8192];

enum program { MMCTL, RUNTIME, NODE, GATEWAY };

/* A command line, the exit code it must give, and a fragment of what it must print. */
static const struct {
    enum program program;
    const char *args;
    int code;
    const char *fragment;
} cases[] = {
    /* 2^32 + 1 ms would be 1 ms in an unsigned int. */
    {MMCTL, "--timeout 4294967297 registry dump", 2, "--timeout: '4294967297' is out of range"},
    {MMCTL, "--timeout=4294967297 registry dump", 2, "--timeout: '4294967297'"},
    {MMCTL, "--timeout 5000x registry dump", 2, "--timeout: '5000x' is not a duration"},
    {MMCTL, "--timeout -5 registry dump", 2, "--timeout: '-5' is out of range"},
    {MMCTL, "registry dump --timeout", 2, "--timeout needs a value"},
    /* Accepted: the request is made (and fails: nothing listens on port 1). */
    {MMCTL, "--endpoints http://127.0.0.1:1 --timeout 2s registry dump", 1,
     "etcd http://127.0.0.1:1"},
    /* 2^32 workers would be 0, then the default 2, in an unsigned int. */
    {RUNTIME, "--workers 4294967296", 2, "--workers: '4294967296' is out of range 1..64"},
    {RUNTIME, "--workers 65", 2, "--workers: '65' is out of range"},
    {RUNTIME, "--max-loading-concurrency 0", 2, "--max-loading-concurrency: '0' is out of range"},
    {RUNTIME, "--load-timeout-ms 4294967296", 2, "--load-timeout-ms: '4294967296' is out of range"},
    {RUNTIME, "--capacity-bytes 1e9", 2, "--capacity-bytes: '1e9' is not a whole number"},
    {RUNTIME, "--grace-ms 3600001", 2, "--grace-ms: '3600001' is out of range 0..3600000"},
    {RUNTIME, "--workers", 2, "--workers needs a value"},
    {RUNTIME, "--max-connections 0", 2, "--max-connections: '0' is out of range"},
    {RUNTIME, "--max-streams 4294967297", 2, "--max-streams: '4294967297' is out of range"},
    {RUNTIME, "--rpc-memory 1023Ki", 2, "--rpc-memory: '1023Ki' is out of range"},
    {RUNTIME, "--rpc-memory 2Ti", 2, "--rpc-memory: '2Ti' is out of range"},
    {RUNTIME, "--message-timeout-ms 3600001", 2, "--message-timeout-ms: '3600001' is out of"},
    {RUNTIME, "--connection-idle-ms 0", 2, "--connection-idle-ms: '0' is out of"},
    /* the nodes' and the gateway's ports have the same bounds, and the parked calls theirs */
    {NODE, "--max-streams 0", 2, "--max-streams: '0' is out of range 1..100000"},
    {NODE, "--rpc-memory 2Ti", 2, "--rpc-memory: '2Ti' is out of range"},
    {NODE, "--message-timeout-ms 3600001", 2, "--message-timeout-ms: '3600001' is out of"},
    {NODE, "--connection-idle-ms 5x", 2, "--connection-idle-ms: '5x' is not a whole number"},
    {NODE, "--max-connections 10000001", 2, "--max-connections: '10000001' is out of range"},
    {NODE, "--max-parked 0", 2, "--max-parked: '0' is out of range 1..1000000"},
    {NODE, "--pull-concurrency 0", 2, "--pull-concurrency: '0' is out of range 1..1024"},
    {NODE, "--pull-concurrency 1025", 2, "--pull-concurrency: '1025' is out of range"},
    {GATEWAY, "--max-parked 1000001", 2, "--max-parked: '1000001' is out of range"},
    {GATEWAY, "--rpc-memory 1023Ki", 2, "--rpc-memory: '1023Ki' is out of range"},
    {GATEWAY, "--max-streams", 2, "--max-streams needs a value"},
};

int main(int argc, char **argv)
{
    REQUIRE(argc == 5);
    const char *mmctl = argv[1], *runtime = argv[2], *node = argv[3], *gateway = argv[4];
    const char *const programs[] = {mmctl, runtime, node, gateway};
    const char *const first[] = {"", "--listen 127.0.0.1:0 ",
                                 "--listen 127.0.0.1:0 --internal-listen 127.0.0.1:0 "
                                 "--runtime 127.0.0.1:1 --etcd-endpoints http://127.0.0.1:1 "
                                 "--probe-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "
                                 "--rest-listen 127.0.0.1:0 ",
                                 "--listen 127.0.0.1:0 --etcd-endpoints http://127.0.0.1:1 "
                                 "--probe-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "
                                 "--rest-listen 127.0.0.1:0 "};

    /* Under a time limit: a program that took a bad value would serve on, and exit 124 here.
     * The runtime listens on a port of its own choosing, should it start. */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char cmd[4096];
        snprintf(cmd, sizeof(cmd), "timeout 10 '%s' %s%s", programs[cases[i].program],
                 first[cases[i].program], cases[i].args);
        int rc = harness_capture(cmd, out, sizeof(out));
        CHECK_INT(rc, cases[i].code);
        CHECK(strstr(out, cases[i].fragment) != NULL);
        if (rc != cases[i].code || !strstr(out, cases[i].fragment))
            fprintf(stderr, "  %s\n  exited %d, printed: %s\n  wanted %d and '%s'\n", cmd, rc,
                    out, cases[i].code, cases[i].fragment);
    }
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "MM_RUNTIME_CAPACITY=18446744073709551616 timeout 10 '%s' "
             "--listen 127.0.0.1:0", runtime);
    CHECK_INT(harness_capture(cmd, out, sizeof(out)), 2);
    CHECK(strstr(out, "MM_RUNTIME_CAPACITY: '18446744073709551616' is out of range") != NULL);

    /* The edges are accepted: it serves. */
    char *const edges[] = {(char *)runtime, "--listen", "127.0.0.1:0", "--workers", "64",
                           "--max-loading-concurrency", "1", "--grace-ms", "0",
                           "--capacity-bytes", "18446744073709551615", "--max-connections",
                           "1", "--max-streams", "100000", "--rpc-memory", "1Mi",
                           "--message-timeout-ms", "3600000", "--connection-idle-ms", "3600000",
                           NULL};
    pid_t pid;
    int port = 0;
    int rc = harness_spawn_listening(edges, 20000, &pid, &port);
    CHECK_INT(rc, 0);
    if (rc == 0) {
        int status = harness_stop_pid(pid, 5000);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return CHECK_DONE();
}
