/* https.c - TLS for a libmicrohttpd server from a tls_watch (GnuTLS underneath MHD; client
 * certificates verified with OpenSSL against the CA bundle in force). */
#include "mm/https.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "mm/log.h"
#include "mm/tls.h"

#define MAX_CHAIN 8 /* certificates of a chain handed to GnuTLS */

/* One certificate and key as GnuTLS holds them; replaced ones are kept (older) until the end. */
struct cred {
    gnutls_pcert_st pcerts[MAX_CHAIN];
    unsigned n;
    gnutls_privkey_t key;
    struct cred *older;
};

struct https {
    struct tls_watch *w;
    bool require_client;
    pthread_mutex_t mu; /* cur, gen, store, store_gen */
    struct cred *cur;
    uint64_t gen;      /* of cur */
    X509_STORE *store; /* the CA bundle for client certificates */
    char *trust_pem;   /* the first bundle, for MHD (it then asks for certificates) */
    uint64_t store_gen;
};

static void cred_free(struct cred *c)
{
    while (c) {
        struct cred *older = c->older;
        for (unsigned i = 0; i < c->n; i++)
            gnutls_pcert_deinit(&c->pcerts[i]);
        if (c->key)
            gnutls_privkey_deinit(c->key);
        free(c);
        c = older;
    }
}

struct build {
    struct cred *cred;
    int gnutls_rc;
    X509_STORE *store;
};

static int build_cred(const struct tls_pem *pem, void *arg)
{
    struct build *b = arg;
    struct cred *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    gnutls_datum_t cert = {(unsigned char *)pem->cert, (unsigned)strlen(pem->cert)};
    gnutls_datum_t key = {(unsigned char *)pem->key, (unsigned)strlen(pem->key)};
    c->n = MAX_CHAIN;
    int rc = gnutls_pcert_list_import_x509_raw(c->pcerts, &c->n, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        c->n = 0;
    } else if ((rc = gnutls_privkey_init(&c->key)) == 0) {
        rc = gnutls_privkey_import_x509_raw(c->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    }
    if (rc < 0) {
        cred_free(c);
        b->gnutls_rc = rc;
        return -EBADMSG;
    }
    b->cred = c;
    return 0;
}

static int build_store(const struct tls_pem *pem, void *arg)
{
    struct build *b = arg;
    X509_STORE *st = X509_STORE_new();
    BIO *bio = BIO_new_mem_buf(pem->ca, -1);
    if (!st || !bio) {
        X509_STORE_free(st);
        BIO_free(bio);
        return -ENOMEM;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        X509_STORE_add_cert(st, x);
        X509_free(x);
    }
    ERR_clear_error(); /* the end of the bundle */
    BIO_free(bio);
    b->store = st;
    return 0;
}

/* The files looked at; a new certificate taken when they changed. Under h->mu. */
static void refresh(struct https *h)
{
    struct mm_error err = {0};
    int rc = tls_watch_refresh(h->w, &err);
    if (rc < 0)
        mm_log(MM_LOG_WARN, "https", "%s: the TLS files in force stay", err.msg);
    struct build b = {0};
    if (tls_watch_use(h->w, &h->gen, build_cred, &b) < 0) {
        mm_log(MM_LOG_WARN, "https", "GnuTLS refused %s: %s", tls_watch_files(h->w)->cert,
               gnutls_strerror(b.gnutls_rc));
    } else if (b.cred) {
        b.cred->older = h->cur;
        h->cur = b.cred;
        if (rc > 0)
            mm_log(MM_LOG_INFO, "https", "tls: %s re-read: new connections get it",
                   tls_watch_files(h->w)->cert);
    }
}

/* MHD starts a connection: its socket context is ours (before its TLS handshake). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        *socket_context = cls;
}

static struct https *find(gnutls_session_t session)
{
    struct MHD_Connection *c = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *ci =
        c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    return ci ? ci->socket_context : NULL;
}

/* GnuTLS asks for the server's certificate at each handshake. */
static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int n_req,
                    const gnutls_pk_algorithm_t *algos, int n_algos, gnutls_pcert_st **pcert,
                    unsigned int *n_pcert, gnutls_privkey_t *key)
{
    struct https *h = find(session);
    if (!h)
        return -1;
    pthread_mutex_lock(&h->mu);
    refresh(h);
    *pcert = h->cur->pcerts;
    *n_pcert = h->cur->n;
    *key = h->cur->key;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static int copy_ca(const struct tls_pem *pem, void *arg)
{
    return (*(char **)arg = strdup(pem->ca)) ? 0 : -ENOMEM;
}

int https_new(struct tls_watch *w, bool require_client_cert, struct https **out,
              struct mm_error *err)
{
    const struct tls_files *f = w ? tls_watch_files(w) : NULL;
    if (!f || !f->cert || (require_client_cert && !f->ca))
        return mm_error_set(err, -EINVAL,
                            "https: a certificate and key are needed (and a CA "
                            "bundle to verify clients)");
    struct https *h = calloc(1, sizeof(*h));
    if (!h)
        return mm_error_set(err, -ENOMEM, "https: out of memory");
    h->w = w;
    h->require_client = require_client_cert;
    pthread_mutex_init(&h->mu, NULL);
    struct build b = {0};
    if (tls_watch_use(w, &h->gen, build_cred, &b) < 0) {
        https_free(h);
        return mm_error_set(err, -EBADMSG, "https: GnuTLS refused %s: %s", f->cert,
                            gnutls_strerror(b.gnutls_rc));
    }
    h->cur = b.cred;
    uint64_t gen = 0;
    if (require_client_cert && tls_watch_use(w, &gen, copy_ca, &h->trust_pem) < 0) {
        https_free(h);
        return mm_error_set(err, -ENOMEM, "https: out of memory");
    }
    *out = h;
    return 0;
}

void https_free(struct https *h)
{
    if (!h)
        return;
    cred_free(h->cur);
    X509_STORE_free(h->store);
    free(h->trust_pem);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void https_mhd_options(struct https *h, struct MHD_OptionItem items[HTTPS_MHD_OPTIONS])
{
    size_t n = 0;
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h};
    /* a trust list makes MHD ask clients for a certificate; it is verified per request
     * (https_client_verified) against the bundle in force then, not this first one */
    if (h->trust_pem)
        items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, h->trust_pem};
    items[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
}

bool https_client_verified(struct https *h, struct MHD_Connection *c)
{
    if (!h->require_client)
        return true;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return false;
    unsigned n = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(ci->tls_session, &n);
    if (!peers || n == 0)
        return false;
    pthread_mutex_lock(&h->mu);
    struct build b = {0};
    if (tls_watch_use(h->w, &h->store_gen, build_store, &b) == 0 && b.store) {
        X509_STORE_free(h->store);
        h->store = b.store;
    }
    bool ok = false;
    const unsigned char *p = peers[0].data;
    X509 *leaf = d2i_X509(NULL, &p, peers[0].size);
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (unsigned i = 1; i < n && chain; i++) {
        p = peers[i].data;
        X509 *x = d2i_X509(NULL, &p, peers[i].size);
        if (x && !sk_X509_push(chain, x))
            X509_free(x);
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (leaf && h->store && ctx && X509_STORE_CTX_init(ctx, h->store, leaf, chain) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        ok = X509_verify_cert(ctx) == 1;
    }
    pthread_mutex_unlock(&h->mu);
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return ok;
}
