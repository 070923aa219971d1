/* httpsserver.c - see httpsserver.h. */
#include "httpsserver.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int harness_node_check(const char *script); /* gcsserver.c */

int harness_https_start(struct harness_https *h, const char *script, const char *root,
                        const char *log_path, const char *const *args)
{
    memset(h, 0, sizeof *h);
    int rc = harness_node_check(script);
    if (rc < 0)
        return rc;
    const char *argv[40] = {"node", script, "--root", root};
    size_t n = 4;
    bool plain = false;
    for (size_t i = 0; args && args[i]; i++) {
        if (n + 1 >= sizeof argv / sizeof argv[0])
            return -E2BIG;
        plain = plain || strcmp(args[i], "--plain") == 0;
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    snprintf(h->log_path, sizeof h->log_path, "%s", log_path);
    rc = harness_spawn_logged((char *const *)argv, log_path, 15000, &h->pid, &h->port);
    if (rc < 0) {
        h->pid = 0;
        return rc;
    }
    snprintf(h->url, sizeof h->url, "%s://127.0.0.1:%d", plain ? "http" : "https", h->port);
    return 0;
}

void harness_https_stop(struct harness_https *h)
{
    if (!h || h->pid <= 0)
        return;
    harness_stop_pid(h->pid, 2000);
    h->pid = 0;
}

int harness_tls_make(const char *dir)
{
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' "
             "> server.ext; "
             "printf 'extendedKeyUsage=clientAuth\\n' > client.ext; "
             "for ca in ca other-ca; do "
             "  openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.pem -days 2 "
             "    -subj \"/CN=modelmesh test $ca\" -addext basicConstraints=critical,CA:TRUE "
             "    -addext keyUsage=critical,keyCertSign,cRLSign; "
             "done; "
             "for who in server client; do "
             "  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who; "
             "  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "    -out $who.pem -days 2 -extfile $who.ext; "
             "done",
             dir);
    int rc = harness_capture(cmd, out, sizeof out);
    if (rc != 0) {
        fprintf(stderr, "making test certificates in %s failed:\n%s\n", dir, out);
        return -EIO;
    }
    return 0;
}
