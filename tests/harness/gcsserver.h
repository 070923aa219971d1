/* gcsserver.h - tests/servers/gcs_server.js (a GCS JSON API subset and an OAuth token endpoint
 * that verifies the JWT's signature) on a free loopback port, stopped by its pid. It runs
 * under the node on PATH and dies with the test, as every harness child does. */
#ifndef MM_TEST_GCSSERVER_H
#define MM_TEST_GCSSERVER_H

#include <limits.h>
#include <sys/types.h>

struct harness_gcs {
    pid_t pid; /* 0 when not running */
    int port;
    char endpoint[64];       /* "http://127.0.0.1:<port>": endpoint_url */
    char token_uri[80];      /* endpoint + "/token": token_uri */
    char log_path[PATH_MAX]; /* its stdout and stderr (one line per request, tokens issued) */
};

/* Start it: buckets are the directories under root, public_key the service account's public
 * key (a PEM file), client_email its iss; extra: more arguments (NULL-terminated; NULL = none),
 * e.g. "--public", "b" or "--token-ttl", "2". Waits up to 15 s for it to listen. 0, or -errno
 * with the reason on stderr (node or the script missing: run scripts/setup.sh). */
int harness_gcs_start(struct harness_gcs *g, const char *script, const char *root,
                      const char *public_key, const char *client_email, const char *log_path,
                      const char *const *extra);
/* SIGTERM, then SIGKILL after 2 s. NULL or not running is fine. */
void harness_gcs_stop(struct harness_gcs *g);

#endif
