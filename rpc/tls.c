/* tls.c - TLS certificate files: read, checked with OpenSSL, re-read when they change. */
#include "mm/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

enum { F_CERT, F_KEY, F_CA, N_FILES };

struct stamp {
    bool present;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

struct tls_watch {
    pthread_mutex_t mu;
    struct tls_files files;
    char *paths[N_FILES];
    char *pem[N_FILES];         /* in force */
    struct stamp seen[N_FILES]; /* of the files last read (accepted or refused) */
    uint64_t gen;
};

static const char *const kinds[N_FILES] = {"certificate", "key", "CA bundle"};

static void stamp_of(const struct stat *st, struct stamp *s)
{
    *s = (struct stamp){.present = true,
                        .dev = st->st_dev,
                        .ino = st->st_ino,
                        .size = st->st_size,
                        .mtime = st->st_mtim,
                        .ctime = st->st_ctim};
}

static bool stamp_same(const struct stamp *a, const struct stamp *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The whole file, NUL-terminated, bounded; its stamp from the descriptor read. */
static int read_file(const char *kind, const char *path, char **out, struct stamp *st_out,
                     struct mm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = -errno;
        return mm_error_set(err, code, "tls: %s %s: %s", kind, path, mm_strerror(code));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mm_error_set(err, -EINVAL, "tls: %s %s: not a regular file", kind, path);
    }
    if (st.st_size > (off_t)TLS_MAX_FILE_BYTES) {
        close(fd);
        return mm_error_set(err, -EFBIG, "tls: %s %s: %lld bytes, more than %u", kind, path,
                            (long long)st.st_size, TLS_MAX_FILE_BYTES);
    }
    char *buf = malloc(TLS_MAX_FILE_BYTES + 1);
    if (!buf) {
        close(fd);
        return mm_error_set(err, -ENOMEM, "tls: out of memory");
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, TLS_MAX_FILE_BYTES + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int code = -errno;
            close(fd);
            free(buf);
            return mm_error_set(err, code, "tls: %s %s: %s", kind, path, mm_strerror(code));
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > TLS_MAX_FILE_BYTES) {
            close(fd);
            free(buf);
            return mm_error_set(err, -EFBIG, "tls: %s %s: more than %u bytes", kind, path,
                                TLS_MAX_FILE_BYTES);
        }
    }
    close(fd);
    if (memchr(buf, '\0', len)) {
        free(buf);
        return mm_error_set(err, -EBADMSG, "tls: %s %s: a NUL byte: not PEM", kind, path);
    }
    buf[len] = '\0';
    stamp_of(&st, st_out);
    *out = buf;
    return 0;
}

static void ssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "no PEM block found");
    ERR_clear_error();
}

/* The contents pass: PEM parses; the key matches the chain's first certificate; a bundle has
 * at least one certificate. */
static int check_pem(char *const pem[N_FILES], char *const paths[N_FILES], struct mm_error *err)
{
    char why[256];
    int rc = 0;
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    ERR_clear_error();
    if (pem[F_CERT]) {
        BIO *b = BIO_new_mem_buf(pem[F_CERT], -1);
        leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!leaf) {
            ssl_reason(why, sizeof(why));
            rc = mm_error_set(err, -EBADMSG, "tls: certificate %s: %s", paths[F_CERT], why);
            goto out;
        }
    }
    if (pem[F_KEY]) {
        BIO *b = BIO_new_mem_buf(pem[F_KEY], -1);
        key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!key) {
            ssl_reason(why, sizeof(why));
            rc = mm_error_set(err, -EBADMSG,
                              "tls: key %s: %s (a PEM key without a passphrase "
                              "is needed)",
                              paths[F_KEY], why);
            goto out;
        }
        if (leaf && X509_check_private_key(leaf, key) != 1) {
            ERR_clear_error();
            rc = mm_error_set(err, -EKEYREJECTED, "tls: key %s does not match certificate %s",
                              paths[F_KEY], paths[F_CERT]);
            goto out;
        }
    }
    if (pem[F_CA]) {
        BIO *b = BIO_new_mem_buf(pem[F_CA], -1);
        X509 *ca = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!ca) {
            ssl_reason(why, sizeof(why));
            rc = mm_error_set(err, -EBADMSG, "tls: CA bundle %s: %s", paths[F_CA], why);
            goto out;
        }
        X509_free(ca);
    }
out:
    X509_free(leaf);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return rc;
}

/* Read every file and check them together: 0 and the new contents in pem, or -errno. seen gets
 * the stamps of what was read (also when refused: not read again until it changes). */
static int load(struct tls_watch *w, char *pem[N_FILES], struct stamp seen[N_FILES],
                struct mm_error *err)
{
    int rc = 0;
    for (int k = 0; k < N_FILES; k++)
        pem[k] = NULL;
    for (int k = 0; k < N_FILES && rc == 0; k++)
        if (w->paths[k])
            rc = read_file(kinds[k], w->paths[k], &pem[k], &seen[k], err);
    if (rc == 0)
        rc = check_pem(pem, w->paths, err);
    if (rc < 0)
        for (int k = 0; k < N_FILES; k++) {
            free(pem[k]);
            pem[k] = NULL;
        }
    return rc;
}

int tls_watch_new(const struct tls_files *files, struct tls_watch **out, struct mm_error *err)
{
    if (!files || (!files->cert != !files->key) || (!files->cert && !files->ca))
        return mm_error_set(err, -EINVAL,
                            "tls: a certificate needs its key (and a key its "
                            "certificate), and a CA bundle or a certificate is needed");
    struct tls_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return mm_error_set(err, -ENOMEM, "tls: out of memory");
    pthread_mutex_init(&w->mu, NULL);
    const char *given[N_FILES] = {files->cert, files->key, files->ca};
    for (int k = 0; k < N_FILES; k++)
        if (given[k] && !(w->paths[k] = strdup(given[k]))) {
            tls_watch_free(w);
            return mm_error_set(err, -ENOMEM, "tls: out of memory");
        }
    w->files = (struct tls_files){w->paths[F_CERT], w->paths[F_KEY], w->paths[F_CA]};
    int rc = load(w, w->pem, w->seen, err);
    if (rc < 0) {
        tls_watch_free(w);
        return rc;
    }
    w->gen = 1;
    *out = w;
    return 0;
}

void tls_watch_free(struct tls_watch *w)
{
    if (!w)
        return;
    for (int k = 0; k < N_FILES; k++) {
        free(w->paths[k]);
        free(w->pem[k]);
    }
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int tls_watch_refresh(struct tls_watch *w, struct mm_error *err)
{
    pthread_mutex_lock(&w->mu);
    struct stamp now[N_FILES] = {{0}};
    bool changed = false;
    for (int k = 0; k < N_FILES; k++) {
        struct stat st;
        if (w->paths[k] && stat(w->paths[k], &st) == 0)
            stamp_of(&st, &now[k]);
        changed |= !stamp_same(&now[k], &w->seen[k]);
    }
    int rc = 0;
    if (changed) {
        char *pem[N_FILES];
        struct stamp read_stamps[N_FILES] = {{0}};
        rc = load(w, pem, read_stamps, err);
        /* not read again until a file changes, taken or not (a missing one included): a bad
         * rotation is logged once, not at every handshake */
        memcpy(w->seen, now, sizeof(now));
        if (rc == 0) {
            for (int k = 0; k < N_FILES; k++) {
                free(w->pem[k]);
                w->pem[k] = pem[k];
            }
            w->gen++;
            rc = 1;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int tls_watch_use(struct tls_watch *w, uint64_t *gen,
                  int (*fn)(const struct tls_pem *pem, void *arg), void *arg)
{
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    if (*gen != w->gen) {
        struct tls_pem pem = {w->pem[F_CERT], w->pem[F_KEY], w->pem[F_CA]};
        rc = fn(&pem, arg);
        if (rc >= 0)
            *gen = w->gen;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

const struct tls_files *tls_watch_files(const struct tls_watch *w)
{
    return &w->files;
}

/* ---------------------------------------------------------------- flags */

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static bool truthy(const char *v)
{
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

void tls_opts_init(struct tls_opts *o)
{
    *o = (struct tls_opts){
        .cert = env_set("MM_TLS_CERT"),
        .key = env_set("MM_TLS_KEY"),
        .client_ca = env_set("MM_TLS_CLIENT_CA"),
        .ca = env_set("MM_TLS_CA"),
        .server_name = env_set("MM_TLS_SERVER_NAME"),
        .internal = truthy(env_set("MM_INTERNAL_TLS")),
    };
}

int tls_opts_flag(struct tls_opts *o, const char *name, size_t name_len, const char *value,
                  struct mm_error *err)
{
    static const struct {
        const char *flag;
        size_t offset;
    } strings[] = {
        {"--tls-cert", offsetof(struct tls_opts, cert)},
        {"--tls-key", offsetof(struct tls_opts, key)},
        {"--tls-client-ca", offsetof(struct tls_opts, client_ca)},
        {"--tls-ca", offsetof(struct tls_opts, ca)},
        {"--tls-server-name", offsetof(struct tls_opts, server_name)},
    };
    if (name_len == strlen("--internal-tls") && strncmp(name, "--internal-tls", name_len) == 0) {
        bool has_value = name[name_len] == '=';
        if (has_value && !truthy(value) && strcmp(value, "0") != 0 &&
            strcasecmp(value, "false") != 0 && strcasecmp(value, "no") != 0)
            return mm_error_set(err, -EINVAL, "--internal-tls: '%s' is not true or false", value);
        o->internal = has_value ? truthy(value) : true;
        return 2;
    }
    for (size_t k = 0; k < sizeof(strings) / sizeof(strings[0]); k++) {
        if (strlen(strings[k].flag) != name_len || strncmp(name, strings[k].flag, name_len) != 0)
            continue;
        if (!value || !value[0])
            return mm_error_set(err, -EINVAL, "%s needs a value", strings[k].flag);
        *(const char **)((char *)o + strings[k].offset) = value;
        return 1;
    }
    return 0;
}

bool tls_opts_enabled(const struct tls_opts *o)
{
    return o->cert && o->key;
}

int tls_opts_check(const struct tls_opts *o, struct mm_error *err)
{
    if (!o->cert != !o->key)
        return mm_error_set(err, -EINVAL, "%s needs %s too", o->cert ? "--tls-cert" : "--tls-key",
                            o->cert ? "--tls-key" : "--tls-cert");
    if (!o->cert && (o->client_ca || o->internal || o->ca || o->server_name))
        return mm_error_set(err, -EINVAL,
                            "--tls-client-ca, --internal-tls, --tls-ca and "
                            "--tls-server-name need --tls-cert and --tls-key");
    if (o->internal && !o->ca)
        return mm_error_set(err, -EINVAL,
                            "--internal-tls needs --tls-ca (the CAs peers' "
                            "certificates are verified with)");
    if (!o->internal && (o->ca || o->server_name))
        return mm_error_set(err, -EINVAL,
                            "--tls-ca and --tls-server-name are for "
                            "--internal-tls");
    return 0;
}
