/* test_mmctl.c - the mmctl binary against a real etcd: put/get/dump round trips, validation
 * refusals, and clear errors (exit codes 1 for failures, 2 for usage); against an etcd with
 * authentication: the password from a file, the environment or the command line, and what to
 * do when credentials are missing. argv[1] = mmctl path. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"

static const char *mmctl;
static char out[65536];
static const char *env = ""; /* extra environment for the runs, "NAME=value " */

/* Run mmctl with args (a shell-quoted string), capture stdout+stderr, return the exit code. */
static int run(const char *endpoint, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%sMM_ETCD_ENDPOINTS='%s' MM_CLUSTER=t1 '%s' %s", env, endpoint,
             mmctl, args);
    return harness_capture(cmd, out, sizeof(out));
}

#define EXPECT(endpoint, args, code, fragment)                                             \
    do {                                                                                   \
        int rc_ = run(endpoint, args);                                                     \
        CHECK_INT(rc_, code);                                                              \
        CHECK(strstr(out, fragment) != NULL);                                              \
        if (rc_ != (code) || !strstr(out, fragment))                                       \
            fprintf(stderr, "  mmctl %s\n  printed: %s\n", args, out);                     \
    } while (0)

/* etcd with auth on: user root (all keys) and user mesh (readwrite under /modelmesh/t1/). */
static void test_auth(void)
{
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    const char *e = etcd.endpoint;
    char dir[] = "/tmp/mm-auth-XXXXXX", cmd[2048];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof(cmd),
             "set -e; export ETCDCTL_API=3; E=%s; etcdctl --endpoints $E user add root:rootpw "
             ">/dev/null; etcdctl --endpoints $E user add mesh:m3shpw >/dev/null; "
             "etcdctl --endpoints $E role add meshrole >/dev/null; "
             "etcdctl --endpoints $E role grant-permission meshrole --prefix readwrite "
             "/modelmesh/t1/ >/dev/null; etcdctl --endpoints $E user grant-role mesh meshrole "
             ">/dev/null; etcdctl --endpoints $E user grant-role root root >/dev/null; "
             "etcdctl --endpoints $E auth enable >/dev/null; "
             "printf 'm3shpw\\n' >%s/pw; printf 'wrong\\n' >%s/bad; : >%s/empty; "
             "printf 'm3shpw\\r\\nsecond line\\n' >%s/crlf",
             e, dir, dir, dir, dir);
    REQUIRE(system(cmd) == 0);

    /* No credentials: etcd's refusal, and how to give them. */
    EXPECT(e, "registry dump", 1, "etcd requires authentication and no user was given");
    CHECK(strstr(out, "give credentials: --user NAME (or MM_ETCD_USER)") != NULL);
    CHECK(strstr(out, "--password-file FILE") != NULL && strstr(out, "MM_ETCD_PASSWORD") != NULL);
    EXPECT(e, "registry get models/m1", 1, "give credentials");

    /* The password from a file (its first line), from the environment, from the command line. */
    char args[512];
    snprintf(args, sizeof(args),
             "--user mesh --password-file %s/pw registry put models/m1 "
             "'{\"v\":1,\"type\":\"sklearn\"}'",
             dir);
    EXPECT(e, args, 0, "stored /modelmesh/t1/models/m1");
    snprintf(args, sizeof(args), "--user mesh --password-file=%s/crlf registry dump", dir);
    EXPECT(e, args, 0, "1 record under /modelmesh/t1/");
    env = "MM_ETCD_PASSWORD=m3shpw ";
    EXPECT(e, "--user mesh registry get models/m1", 0, "\"sklearn\"");
    env = "MM_ETCD_USER=mesh MM_ETCD_PASSWORD=m3shpw ";
    EXPECT(e, "registry dump", 0, "1 record under /modelmesh/t1/");
    env = "MM_ETCD_USER=root ";
    EXPECT(e, "--password rootpw registry dump --prefix /", 0, "1 record under / at revision");
    /* The file wins over the environment; a wrong password names the user. */
    env = "MM_ETCD_PASSWORD=m3shpw ";
    snprintf(args, sizeof(args), "--user mesh --password-file %s/bad registry dump", dir);
    EXPECT(e, args, 1, "authenticate as 'mesh'");
    env = "";

    /* Credentials given halfway, or twice, or a file that holds none: usage errors. */
    EXPECT(e, "--user mesh registry dump", 2,
           "--user mesh needs a password: --password-file FILE, MM_ETCD_PASSWORD or --password");
    env = "MM_ETCD_PASSWORD=m3shpw ";
    EXPECT(e, "registry dump", 2, "a password was given (MM_ETCD_PASSWORD) but no user");
    env = "";
    snprintf(args, sizeof(args), "--user mesh --password x --password-file %s/pw registry dump",
             dir);
    EXPECT(e, args, 2, "with --password-file or --password, not both");
    snprintf(args, sizeof(args), "--user mesh --password-file %s/empty registry dump", dir);
    EXPECT(e, args, 2, "is empty: the password is its first line");
    snprintf(args, sizeof(args), "--user mesh --password-file %s/none registry dump", dir);
    EXPECT(e, args, 2, "/none: No such file or directory");

    /* --password is scrubbed from the command line others can read once mmctl has it: a dump
     * from a server that never answers keeps it running long enough to look. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0 &&
            getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
    snprintf(cmd, sizeof(cmd),
             "'%s' --endpoints http://127.0.0.1:%d --timeout 3000 --user u --password s3cr3t "
             "registry dump >/dev/null 2>&1 & pid=$!; sleep 0.5; "
             "tr '\\0' ' ' </proc/$pid/cmdline; kill $pid",
             mmctl, ntohs(sa.sin_port));
    harness_capture(cmd, out, sizeof(out));
    close(lfd);
    CHECK(strstr(out, "--password xxxxxx") != NULL);
    CHECK(strstr(out, "s3cr3t") == NULL);
    if (!strstr(out, "--password xxxxxx"))
        fprintf(stderr, "  command line seen: %s\n", out);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    harness_etcd_cleanup(&etcd);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    mmctl = argv[1];
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    const char *e = etcd.endpoint;

    EXPECT(e, "registry dump", 0, "0 records under /modelmesh/t1/");
    EXPECT(e, "registry put models/m1 '{\"v\":1,\"type\":\"sklearn\",\"size_bytes\":1000000}'", 0,
           "stored /modelmesh/t1/models/m1 at revision");
    EXPECT(e, "registry put copies/m1/n0 '{\"v\":1,\"state\":\"Loaded\",\"size_bytes\":8192}'", 0,
           "stored /modelmesh/t1/copies/m1/n0");
    EXPECT(e, "registry put vmodels/mnist '{\"v\":1,\"active_model_id\":\"m1\"}'", 0, "stored");
    EXPECT(e, "registry get models/m1", 0, "\"sklearn\"");
    EXPECT(e, "registry get /modelmesh/t1/copies/m1/n0", 0, "\"Loaded\"");
    EXPECT(e, "registry dump", 0, "3 records under /modelmesh/t1/ at revision 4");
    EXPECT(e, "registry dump --prefix copies/", 0, "1 record under /modelmesh/t1/copies/");
    EXPECT(e, "--cluster other registry dump", 0, "0 records under /modelmesh/other/");

    /* Refusals name the record and the field; nothing is written. */
    EXPECT(e, "registry put copies/m1/n1 '{\"v\":1,\"state\":\"Ready\"}'", 1,
           "refusing to write /modelmesh/t1/copies/m1/n1: copy record: field 'state'");
    EXPECT(e, "registry put instances/n1 '{\"v\":1}'", 1, "field 'address' is required");
    EXPECT(e, "registry put isvcs/ns/x 'nope'", 1, "not valid JSON");
    /* What JSON readers disagree on: a name given twice, \u0000. */
    EXPECT(e, "registry put models/m2 '{\"v\":1,\"type\":\"sklearn\",\"type\":\"xgboost\"}'", 1,
           "refusing to write /modelmesh/t1/models/m2: model record: field 'type' is given twice");
    EXPECT(e, "registry put models/m2 '{\"v\":1,\"type\":\"sklearn\\u0000x\"}'", 1,
           "model record: field 'type' holds \\u0000 (a NUL)");
    EXPECT(e, "registry put isvcs/ns/x '{\"a\":1,\"a\":2}'", 1,
           "the value: field 'a' is given twice");
    EXPECT(e, "registry get copies/m1/n1", 1, "no record at /modelmesh/t1/copies/m1/n1");
    EXPECT(e, "registry dump", 0, "3 records");

    /* A record written by someone else that does not decode is shown with a warning. */
    EXPECT(e, "registry put runtimes/r1 '{\"x\":1}'", 0, "stored");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints %s put /modelmesh/t1/models/bad "
             "'{\"v\":1}' >/dev/null 2>&1", e);
    CHECK_INT(system(cmd), 0);
    EXPECT(e, "registry get models/bad", 0, "warning: /modelmesh/t1/models/bad: model record: "
                                            "field 'type' is required");

    /* Usage errors exit 2; etcd errors exit 1 and name the endpoint. */
    EXPECT(e, "registry frob", 2, "unknown registry verb 'frob'");
    EXPECT(e, "--bogus registry dump", 2, "unknown option --bogus");
    EXPECT(e, "registry get", 2, "usage:");
    EXPECT("http://127.0.0.1:1", "registry dump", 1, "etcd http://127.0.0.1:1: range");
    EXPECT("localhost:2379", "registry dump", 1, "must start with http:// or https://");
    EXPECT(e, "--help", 0, "usage:");

    harness_etcd_cleanup(&etcd);
    test_auth();
    return CHECK_DONE();
}
