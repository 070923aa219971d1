/* tls.h - TLS certificate files, read, checked and re-read when they change; and the TLS flags
 * of the servers (mm-node, mm-gateway).
 *
 * A tls_watch holds the paths of a certificate chain, its private key and a CA bundle (any of
 * them optional, as its user needs: a server has a chain and key and maybe a client CA; a client
 * a CA and maybe a chain and key), and the contents last read. tls_watch_refresh() looks at the
 * files (stat: device, inode, size, change and modification times; a Kubernetes Secret's
 * symlink swap is a change) and reads them again when one changed. New contents replace the old
 * only if they pass the checks: each file at most TLS_MAX_FILE_BYTES, no NUL, PEM that OpenSSL
 * parses, and a key that matches the chain's first certificate. A half-written rotation (a new
 * chain beside the old key) is refused and the old contents stay in force; it is read again
 * when the files change again. Every accepted read increments the generation.
 *
 * Threading: tls_watch_refresh and tls_watch_use may be called from any thread (gRPC's
 * handshakes call them); a mutex guards the contents. tls_watch_new/free on one thread, the
 * watch outliving every user (the rpc context that uses it, the HTTP server). */
#ifndef MM_TLS_H
#define MM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

#define TLS_MAX_FILE_BYTES (1u << 20) /* a chain, key or CA bundle: at most 1 MiB */

struct tls_watch;

struct tls_files {
    const char *cert; /* PEM certificate chain (leaf first); NULL: none */
    const char *key;  /* PEM private key of cert's leaf; given exactly when cert is */
    const char *ca;   /* PEM CA bundle (client CA on a server, roots on a client); NULL: none */
};

/* The contents, NUL-terminated PEM (NULL where no file was given). */
struct tls_pem {
    const char *cert, *key, *ca;
};

/* Read and check the files. 0, or -errno with err naming the file and what is wrong with it
 * (-ENOENT, -EACCES, -EFBIG, -EBADMSG: not PEM or not parsed, -EKEYREJECTED: key and
 * certificate do not match, -EINVAL: key without cert or cert without key, nothing given). */
int tls_watch_new(const struct tls_files *files, struct tls_watch **out, struct mm_error *err);
void tls_watch_free(struct tls_watch *w);

/* Look at the files; read and check them again if one changed since the last look. 1 when new
 * contents were taken, 0 when nothing changed, -errno (err) when changed files were refused: the
 * previous contents stay in force, and the same files are not read again until they change. */
int tls_watch_refresh(struct tls_watch *w, struct mm_error *err);

/* If the contents' generation differs from *gen, run fn(pem, arg) with the current contents
 * (valid during the call only) under the watch's lock, set *gen to their generation and return
 * fn's result; else 0 without calling fn. *gen 0 always differs (generations start at 1). */
int tls_watch_use(struct tls_watch *w, uint64_t *gen,
                  int (*fn)(const struct tls_pem *pem, void *arg), void *arg);

/* The path given for each file, for messages. */
const struct tls_files *tls_watch_files(const struct tls_watch *w);

/* --- the servers' flags --- */
#define TLS_OPTS_USAGE                                                                             \
    "  --tls-cert FILE --tls-key FILE   TLS on the external gRPC port and the REST port\n"         \
    "                               (env MM_TLS_CERT, MM_TLS_KEY; PEM chain and key, re-read\n"    \
    "                               when they change: new connections get the new ones)\n"         \
    "  --tls-client-ca FILE         require client certificates signed by these CAs\n"             \
    "                               (mutual TLS; env MM_TLS_CLIENT_CA)\n"                          \
    "  --internal-tls               the internal port too, with the same files; forwards to\n"     \
    "                               peers are TLS, verified with --tls-ca (env MM_INTERNAL_TLS\n"  \
    "                               = 1|true)\n"                                                   \
    "  --tls-ca FILE                CAs that sign the peers' certificates (env MM_TLS_CA)\n"       \
    "  --tls-server-name NAME       the name peers' certificates are checked for (env\n"           \
    "                               MM_TLS_SERVER_NAME; default the peer's host or address)\n"

struct tls_opts {
    const char *cert, *key, *client_ca, *ca, *server_name; /* into argv or the environment */
    bool internal;
};

/* Clears o and takes what the environment sets (an empty variable counts as unset). */
void tls_opts_init(struct tls_opts *o);
/* One command-line option (as etcd_opts_flag): 1 stored (value used), 2 stored without using
 * value (--internal-tls, a flag: the next argument is not its value; "--internal-tls=false"
 * is allowed), 0 not one of these, -EINVAL without its value (err says which). */
int tls_opts_flag(struct tls_opts *o, const char *name, size_t name_len, const char *value,
                  struct mm_error *err);
/* The combination makes sense: cert and key together; client CA, --internal-tls and --tls-ca
 * only with them; --internal-tls needs --tls-ca (peers are verified). 0 or -EINVAL (err). */
int tls_opts_check(const struct tls_opts *o, struct mm_error *err);
/* Whether TLS is on (cert and key given). */
bool tls_opts_enabled(const struct tls_opts *o);

#endif
