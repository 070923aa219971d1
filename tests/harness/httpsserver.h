/* httpsserver.h - tests/servers/https_server.js (static files over HTTPS, or plain HTTP with
 * --plain, header auth, optional client certificate verification) on a free loopback port,
 * stopped by its pid; and the certificates its tests need, made with the openssl command. */
#ifndef MM_TEST_HTTPSSERVER_H
#define MM_TEST_HTTPSSERVER_H

#include <limits.h>
#include <sys/types.h>

struct harness_https {
    pid_t pid; /* 0 when not running */
    int port;
    char url[64];            /* "https://127.0.0.1:<port>" ("http://" with --plain) */
    char log_path[PATH_MAX]; /* its stdout and stderr: one line per request, no header value */
};

/* Start it serving root; args: its further arguments (NULL-terminated): "--cert", F, "--key",
 * F, or "--plain"; "--client-ca", F; "--header", "Name: value". Waits up to 15 s for it to
 * listen. 0, or -errno with the reason on stderr (node or the script missing: run
 * scripts/setup.sh). */
int harness_https_start(struct harness_https *h, const char *script, const char *root,
                        const char *log_path, const char *const *args);
/* SIGTERM, then SIGKILL after 2 s. NULL or not running is fine. */
void harness_https_stop(struct harness_https *h);

/* In dir: ca.pem/ca.key (a CA), server.pem/server.key (signed by it, for 127.0.0.1 and
 * localhost), client.pem/client.key (signed by it, for client authentication), other-ca.pem
 * (a CA that signed none of them). 0, or -EIO with openssl's output on stderr. */
int harness_tls_make(const char *dir);

#endif
