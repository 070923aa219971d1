/* gcsserver.c - see gcsserver.h. */
#include "gcsserver.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Whether node and script are there; says what to do on stderr if not. */
int harness_node_check(const char *script);
int harness_node_check(const char *script)
{
    char out[256];
    if (access(script, R_OK) != 0 || harness_capture("command -v node", out, sizeof out) != 0) {
        fprintf(stderr,
                "%s or node is missing: run scripts/setup.sh (it installs Node.js and "
                "the test servers)\n",
                script);
        return -ENOENT;
    }
    return 0;
}

int harness_gcs_start(struct harness_gcs *g, const char *script, const char *root,
                      const char *public_key, const char *client_email, const char *log_path,
                      const char *const *extra)
{
    memset(g, 0, sizeof *g);
    int rc = harness_node_check(script);
    if (rc < 0)
        return rc;
    const char *argv[40] = {"node",         script,     "--root",         root,
                            "--public-key", public_key, "--client-email", client_email};
    size_t n = 8;
    for (size_t i = 0; extra && extra[i]; i++) {
        if (n + 1 >= sizeof argv / sizeof argv[0])
            return -E2BIG;
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    snprintf(g->log_path, sizeof g->log_path, "%s", log_path);
    rc = harness_spawn_logged((char *const *)argv, log_path, 15000, &g->pid, &g->port);
    if (rc < 0) {
        g->pid = 0;
        return rc;
    }
    snprintf(g->endpoint, sizeof g->endpoint, "http://127.0.0.1:%d", g->port);
    snprintf(g->token_uri, sizeof g->token_uri, "%s/token", g->endpoint);
    return 0;
}

void harness_gcs_stop(struct harness_gcs *g)
{
    if (!g || g->pid <= 0)
        return;
    harness_stop_pid(g->pid, 2000);
    g->pid = 0;
}
