/* test_mmctl.c - the mmctl binary against a real etcd: put/get/dump round trips, validation
 * refusals, and clear errors (exit codes 1 for failures, 2 for usage). argv[1] = mmctl path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "harness.h"

static const char *mmctl;
static char out[65536];

/* Run mmctl with args (a shell-quoted string), capture stdout+stderr, return the exit code. */
static int run(const char *endpoint, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "MM_ETCD_ENDPOINTS='%s' MM_CLUSTER=t1 '%s' %s", endpoint, mmctl,
             args);
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
    return CHECK_DONE();
}
