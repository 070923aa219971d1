/* gcs.c - the gcs provider (remote.h): Google Cloud Storage through its JSON API.
 *
 * Secret fields (canonical names, stcfg.h):
 *   bucket        required
 *   private_key   PEM text of the service account's RSA key ("-----BEGIN PRIVATE KEY-----";
 *                 a key whose newlines were written as the two characters \n is accepted)
 *   client_email  the service account (both or neither: neither = anonymous, for a public
 *                 bucket)
 *   token_uri     where the signed JWT is exchanged for an access token; default
 *                 https://oauth2.googleapis.com/token
 *   endpoint_url  default https://storage.googleapis.com
 *   certificate   PEM text of a CA to trust (instead of the system's) for both
 *   list_page_size  objects per listing page, 1..1000, default 1000 (for tests)
 *
 * Credentials: a JWT (RS256, OpenSSL's EVP API) with iss = client_email, aud = token_uri and
 * scope devstorage.read_only, valid one hour, is POSTed to token_uri (the OAuth 2.0 JWT bearer
 * grant, RFC 7523); the access token it answers is cached in the provider's state, per
 * (client_email, token_uri, private_key), until shortly before it expires (min(5 min, half its
 * life) before), and pulls that need it while it is being fetched wait for that one request.
 * A token the store refuses (401) is dropped and fetched again once.
 *
 * A path: the listing of prefix=<path> with one result says whether the object <path> exists
 * (the exact name sorts first); if not, the objects under "<path>/" are listed page by page
 * (pageToken), at most 100,000 objects. Objects are read with alt=media and checked against
 * the listing's size and md5Hash (base64 -> hex).
 *
 * Errors (each naming the storage key and gs://bucket/path): -EACCES credentials refused by
 * token_uri or by the store ("check private_key and client_email of storage key 'K'"; an
 * anonymous pull refused says to set them), -ENOENT bucket not found / no object and no
 * objects under the prefix / an object gone, -EINVAL a missing or bad field (which), -EFBIG too
 * many objects, and download.h's. Messages never hold the private key or a token. */
#include "mm/remote.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/base64.h"
#include "mm/buf.h"
#include "mm/log.h"

#define DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define DEFAULT_ENDPOINT "https://storage.googleapis.com"
#define SCOPE "https://www.googleapis.com/auth/devstorage.read_only"
#define JWT_LIFETIME_S 3600
#define MAX_OBJECTS 100000
#define MAX_PAGES 10000
#define MAX_LIST_BODY (8u << 20)
#define MAX_TOKEN_BODY (64u << 10)
#define MAX_TOKEN_LEN 4096
#define MAX_NAME_LEN 1024 /* GCS object names are at most 1024 bytes */
#define MAX_CACHED_TOKENS 64

struct gcs_pull;

/* A cached access token for one set of credentials, or the request fetching it. */
struct gcs_token {
    struct gcs_token *next;
    struct gcs_state *st;
    unsigned char id[32]; /* SHA-256 of client_email, token_uri and private_key */
    EVP_PKEY *pkey;
    char *client_email;
    char *token_uri;
    char *certificate; /* NULL = the system's CAs */
    char *access;      /* NULL until fetched */
    double refresh_at; /* monotonic seconds after which a new token is fetched */
    struct dl_op *op;  /* the token request in flight */
    struct gcs_pull *waiters;
    unsigned users; /* pulls holding it: it stays while any does */
};

struct gcs_state {
    struct dl *dl;
    struct gcs_token *tokens;
    int dispatching; /* > 0 while token_done calls pulls back: close() then defers the free */
    bool closed;
};

struct gcs_object {
    struct gcs_pull *pull;
    char *url;
    char *what; /* gs://bucket/name */
};

struct gcs_pull {
    struct gcs_state *st;
    struct dl *dl;
    char *key; /* storage key, "" = none */
    char *bucket;
    char *path;        /* normalized: no leading or trailing '/' */
    const char *base;  /* last component of path */
    char *endpoint;    /* no trailing '/' */
    char *certificate; /* NULL = the system's CAs */
    unsigned page_size;
    bool anonymous;
    struct gcs_token *tok;        /* the credentials' cache entry (NULL: anonymous) */
    struct gcs_pull *next_waiter; /* in tok->waiters while waiting */
    bool waiting;
    bool token_retried; /* no second token after a refusal */
    char *access;       /* the token this pull sends (a copy), NULL = anonymous */
    int dirfd;
    dl_progress_cb progress;
    remote_done_cb cb;
    void *arg;
    struct dl_op *op;
    enum { PHASE_TOKEN, PHASE_PROBE, PHASE_LIST, PHASE_FILES } phase;
    char *req_url; /* the listing request's URL */
    char *page_token;
    unsigned pages;
    char what[300]; /* gs://bucket/path */
    /* the objects found */
    struct dl_file *files;
    struct gcs_object *objects;
    char **rels;
    size_t n, cap;
};

/* ---- small helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Percent-encode everything but RFC 3986's unreserved characters (a name's '/' too: the JSON
 * API takes an object's name as one path segment), as a new string. NULL on no memory. */
static char *url_encode(const char *s)
{
    struct mm_buf b = {0};
    if (mm_buf_append(&b, "", 0) || remote_pct_encode(&b, s, false)) {
        mm_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static char *base64url(const void *data, size_t len)
{
    char *out = malloc(base64_encoded_size(len));
    if (!out)
        return NULL;
    size_t n = base64_encode(data, len, out);
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

/* A short excerpt of a store's error text, safe for a message: the JSON API's error.message
 * or OAuth's error/error_description, escaped, at most 100 bytes. */
static void error_text(const char *body, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        return;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *text = NULL;
    char both[256];
    if (cJSON_IsObject(e)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        text = cJSON_IsString(m) ? m->valuestring : NULL;
    } else if (cJSON_IsString(e)) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "error_description");
        snprintf(both, sizeof both, "%s%s%s", e->valuestring, cJSON_IsString(d) ? ": " : "",
                 cJSON_IsString(d) ? d->valuestring : "");
        text = both;
    }
    if (text)
        mm_log_escape(out, size < 100 ? size : 100, text, strlen(text));
    cJSON_Delete(j);
}

static int set_ca(CURL *easy, const char *pem)
{
    if (!pem)
        return 0;
    struct curl_blob blob = {.data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    return curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob) == CURLE_OK ? 0 : -ENOTSUP;
}

/* ---- the JWT and the token cache ---- */

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1; /* an encrypted key is refused, never prompted for */
}

/* The PEM text of private_key; a key written with literal "\n" sequences gets newlines. */
static EVP_PKEY *parse_key(const char *pem)
{
    char *copy = NULL;
    if (!strchr(pem, '\n') && strstr(pem, "\\n")) {
        copy = strdup(pem);
        if (!copy)
            return NULL;
        char *w = copy;
        for (const char *r = pem; *r; r++) {
            if (r[0] == '\\' && r[1] == 'n') {
                *w++ = '\n';
                r++;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        pem = copy;
    }
    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio)
        pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    remote_free_secret(copy);
    ERR_clear_error();
    if (pkey && EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

/* header.claims.signature, RS256, issued now. NULL on failure (no memory, a signing error). */
static char *make_jwt(const struct gcs_token *t)
{
    char *header = NULL, *claims = NULL, *json = NULL, *input = NULL, *sig64 = NULL, *jwt = NULL;
    unsigned char *sig = NULL;
    EVP_MD_CTX *ctx = NULL;
    cJSON *c = cJSON_CreateObject();
    long long iat = (long long)time(NULL);
    if (!c || !cJSON_AddStringToObject(c, "iss", t->client_email) ||
        !cJSON_AddStringToObject(c, "scope", SCOPE) ||
        !cJSON_AddStringToObject(c, "aud", t->token_uri) ||
        !cJSON_AddNumberToObject(c, "iat", (double)iat) ||
        !cJSON_AddNumberToObject(c, "exp", (double)(iat + JWT_LIFETIME_S)))
        goto out;
    json = cJSON_PrintUnformatted(c);
    static const char hdr[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    if (!json || !(header = base64url(hdr, sizeof hdr - 1)) ||
        !(claims = base64url(json, strlen(json))))
        goto out;
    size_t in_len = strlen(header) + 1 + strlen(claims);
    input = malloc(in_len + 1);
    if (!input)
        goto out;
    snprintf(input, in_len + 1, "%s.%s", header, claims);
    size_t sig_len = 0;
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, t->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &sig_len, (const unsigned char *)input, in_len) != 1 ||
        !(sig = malloc(sig_len)) ||
        EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)input, in_len) != 1 ||
        !(sig64 = base64url(sig, sig_len)))
        goto out;
    size_t len = in_len + 1 + strlen(sig64);
    jwt = malloc(len + 1);
    if (jwt)
        snprintf(jwt, len + 1, "%s.%s", input, sig64);
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    cJSON_Delete(c);
    free(json), free(header), free(claims), free(input), free(sig), free(sig64);
    return jwt;
}

static void token_free(struct gcs_token *t)
{
    if (!t)
        return;
    dl_cancel(t->op);
    EVP_PKEY_free(t->pkey);
    free(t->client_email), free(t->token_uri), free(t->certificate);
    remote_free_secret(t->access);
    free(t);
}

static void token_unlink(struct gcs_state *st, struct gcs_token *t)
{
    for (struct gcs_token **p = &st->tokens; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            return;
        }
    }
}

static int token_prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct gcs_token *t = arg;
    char *jwt = make_jwt(t);
    if (!jwt)
        return mm_error_set(err, -ENOMEM, "token from %s: the JWT could not be signed",
                            t->token_uri);
    static const char grant[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    size_t len = sizeof grant + strlen(jwt);
    char *body = malloc(len);
    if (!body) {
        free(jwt);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(body, len, "%s%s", grant, jwt); /* base64url needs no escaping in a form */
    free(jwt);
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    int rc = 0;
    if (!h || curl_easy_setopt(easy, CURLOPT_URL, t->token_uri) != CURLE_OK ||
        curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body) != CURLE_OK ||
        set_ca(easy, t->certificate) < 0)
        rc = mm_error_set(err, -ENOMEM, "token from %s: the request could not be made",
                          t->token_uri);
    remote_free_secret(body);
    *headers = h;
    return rc;
}

static int token_http_error(long code, const char *body, size_t len, void *arg,
                            struct mm_error *err)
{
    struct gcs_token *t = arg;
    char text[100];
    error_text(body, len, text, sizeof text);
    if (code == 400 || code == 401 || code == 403)
        return mm_error_set(err, -EACCES, "token from %s refused (HTTP %ld%s%s)", t->token_uri,
                            code, text[0] ? ": " : "", text);
    return mm_error_set(err, -EIO, "token from %s: HTTP %ld%s%s", t->token_uri, code,
                        text[0] ? ": " : "", text);
}

static void pull_fail(struct gcs_pull *p, int status, const struct mm_error *err);
static void list_next(struct gcs_pull *p);
static void list_done(int status, const struct mm_error *err, long http_code, const char *body,
                      size_t len, void *arg);

static void token_done(int status, const struct mm_error *err, long http_code, const char *body,
                       size_t len, void *arg)
{
    (void)http_code;
    struct gcs_token *t = arg;
    struct gcs_state *st = t->st;
    struct mm_error e = {0};
    t->op = NULL;
    if (status == 0) {
        cJSON *j = cJSON_ParseWithLength(body, len);
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "access_token");
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
        bool ok =
            cJSON_IsString(at) && at->valuestring[0] && strlen(at->valuestring) <= MAX_TOKEN_LEN;
        for (const char *c = ok ? at->valuestring : ""; *c; c++)
            ok = ok && *c > 0x20 && *c < 0x7f; /* it goes into a header */
        if (!ok) {
            status = mm_error_set(&e, -EPROTO, "token from %s: no access_token in the answer",
                                  t->token_uri);
        } else {
            double life = cJSON_IsNumber(ex) ? ex->valuedouble : 3600;
            if (!(life >= 0))
                life = 0;
            if (life > 86400)
                life = 86400;
            double margin = life / 2 < 300 ? life / 2 : 300;
            free(t->access);
            t->access = strdup(at->valuestring);
            t->refresh_at = now_s() + life - margin;
            if (!t->access)
                status = mm_error_set(&e, -ENOMEM, "out of memory");
        }
        cJSON_Delete(j);
    } else {
        e = *err;
    }
    /* Call each waiter on in turn, taken off the list first, so that a callback that cancels
     * other pulls or closes the state finds the list whole; close() is deferred meanwhile. */
    st->dispatching++;
    while (!st->closed && t->waiters) {
        struct gcs_pull *p = t->waiters;
        t->waiters = p->next_waiter;
        p->waiting = false;
        p->next_waiter = NULL;
        if (status == 0) {
            p->access = strdup(t->access);
            if (!p->access) {
                struct mm_error oom;
                mm_error_set(&oom, -ENOMEM, "out of memory");
                pull_fail(p, -ENOMEM, &oom);
                continue;
            }
            p->token_retried = true; /* a fresh token refused is not retried */
            p->phase = PHASE_PROBE;
            list_next(p);
        } else if (status == -EACCES) {
            char name[300];
            struct mm_error refused = e;
            mm_error_set(&refused, status, "%s: check private_key and client_email of %s", e.msg,
                         remote_key_name(p->key, name, sizeof name));
            pull_fail(p, status, &refused);
        } else {
            pull_fail(p, status, &e);
        }
    }
    st->dispatching--;
    if (st->closed) {
        if (st->dispatching == 0)
            remote_gcs.close(st);
        return;
    }
    if (status != 0 && !t->op && !t->waiters && !t->users) {
        token_unlink(st, t);
        token_free(t);
    }
}

/* Start fetching t's token (a request may already be under way). */
static int token_fetch(struct gcs_token *t, struct mm_error *err)
{
    if (t->op)
        return 0;
    struct dl_request req = {
        .prepare = token_prepare, .http_error = token_http_error, .arg = t, .what = t->token_uri};
    return dl_text(t->st->dl, &req, MAX_TOKEN_BODY, token_done, t, &t->op, err);
}

/* The cache entry for these credentials, made if new (the key parsed then). */
static int token_entry(struct gcs_state *st, const char *email, const char *uri, const char *pem,
                       const char *certificate, const char *keyname, struct gcs_token **out,
                       struct mm_error *err)
{
    unsigned char id[32];
    unsigned int id_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, email, strlen(email) + 1) != 1 ||
        EVP_DigestUpdate(ctx, uri, strlen(uri) + 1) != 1 ||
        EVP_DigestUpdate(ctx, pem, strlen(pem) + 1) != 1 ||
        EVP_DigestUpdate(ctx, certificate ? certificate : "",
                         certificate ? strlen(certificate) : 0) != 1 ||
        EVP_DigestFinal_ex(ctx, id, &id_len) != 1) {
        EVP_MD_CTX_free(ctx);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    EVP_MD_CTX_free(ctx);
    size_t count = 0;
    for (struct gcs_token **pp = &st->tokens; *pp;) {
        struct gcs_token *t = *pp;
        if (memcmp(t->id, id, sizeof id) == 0) {
            *out = t;
            return 0;
        }
        /* entries past their token's life and idle are dropped on the way */
        if (!t->op && !t->waiters && !t->users && (!t->access || t->refresh_at <= now_s())) {
            *pp = t->next;
            token_free(t);
            continue;
        }
        count++;
        pp = &t->next;
    }
    if (count >= MAX_CACHED_TOKENS)
        return mm_error_set(err, -EBUSY, "%s: more than %d service accounts in use at once",
                            keyname, MAX_CACHED_TOKENS);
    struct gcs_token *t = calloc(1, sizeof *t);
    if (!t)
        return mm_error_set(err, -ENOMEM, "out of memory");
    memcpy(t->id, id, sizeof id);
    t->st = st;
    t->pkey = parse_key(pem);
    if (!t->pkey) {
        token_free(t);
        return mm_error_set(err, -EINVAL,
                            "%s: private_key is not an unencrypted PEM RSA private key", keyname);
    }
    t->client_email = strdup(email);
    t->token_uri = strdup(uri);
    t->certificate = certificate ? strdup(certificate) : NULL;
    if (!t->client_email || !t->token_uri || (certificate && !t->certificate)) {
        token_free(t);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    t->next = st->tokens;
    st->tokens = t;
    *out = t;
    return 0;
}

/* ---- a pull ---- */

static void pull_free(struct gcs_pull *p)
{
    if (!p)
        return;
    if (p->tok)
        p->tok->users--;
    free(p->key), free(p->bucket), free(p->path), free(p->endpoint), free(p->certificate);
    remote_free_secret(p->access);
    free(p->req_url), free(p->page_token);
    for (size_t i = 0; i < p->n; i++) {
        free(p->rels[i]);
        free((char *)p->files[i].md5_hex);
        free(p->objects[i].url);
        free(p->objects[i].what);
    }
    free(p->rels), free(p->files), free(p->objects);
    free(p);
}

static void waiter_remove(struct gcs_pull *p)
{
    if (!p->waiting)
        return;
    for (struct gcs_pull **w = &p->tok->waiters; *w; w = &(*w)->next_waiter) {
        if (*w == p) {
            *w = p->next_waiter;
            break;
        }
    }
    p->waiting = false;
}

/* Call back once with the failure, the storage key first; the pull is freed before. */
static void pull_fail(struct gcs_pull *p, int status, const struct mm_error *err)
{
    remote_done_cb cb = p->cb;
    void *arg = p->arg;
    char name[300];
    struct mm_error e = {0};
    mm_error_set(&e, status, "%s: %s", remote_key_name(p->key, name, sizeof name),
                 err ? err->msg : mm_strerror(status));
    pull_free(p);
    cb(status, &e, 0, arg);
}

static int list_request(struct gcs_pull *p, struct mm_error *err);

/* Wait for the credentials' token, or use the cached one, and start listing. 0 or -errno with
 * err (then nothing is under way and nothing has called back). */
static int pull_begin(struct gcs_pull *p, struct mm_error *err)
{
    struct gcs_token *t = p->tok;
    if (!p->anonymous && !(t->access && t->refresh_at > now_s() && !t->op)) {
        int rc = token_fetch(t, err);
        if (rc < 0)
            return rc;
        p->phase = PHASE_TOKEN;
        p->next_waiter = t->waiters;
        t->waiters = p;
        p->waiting = true;
        return 0;
    }
    if (!p->anonymous && !(p->access = strdup(t->access)))
        return mm_error_set(err, -ENOMEM, "out of memory");
    p->phase = PHASE_PROBE;
    return list_request(p, err);
}

static int pull_prepare(CURL *easy, struct curl_slist **headers, void *arg, const char *url,
                        struct mm_error *err)
{
    struct gcs_pull *p = arg;
    struct curl_slist *h = NULL;
    if (p->access) {
        size_t len = strlen(p->access) + 32;
        char *line = malloc(len);
        if (!line)
            return mm_error_set(err, -ENOMEM, "out of memory");
        snprintf(line, len, "Authorization: Bearer %s", p->access);
        h = curl_slist_append(NULL, line);
        OPENSSL_cleanse(line, len);
        free(line);
        if (!h)
            return mm_error_set(err, -ENOMEM, "out of memory");
    }
    *headers = h;
    if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK || set_ca(easy, p->certificate) < 0)
        return mm_error_set(err, -ENOMEM, "%s: the request could not be made", p->what);
    return 0;
}

static int list_prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct gcs_pull *p = arg;
    return pull_prepare(easy, headers, p, p->req_url, err);
}

static int object_prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct gcs_object *o = arg;
    return pull_prepare(easy, headers, o->pull, o->url, err);
}

/* 401/403: refused credentials; 404: the bucket (a listing) or the object (a download). */
static int store_error(struct gcs_pull *p, long code, const char *body, size_t len,
                       const char *where, bool object, struct mm_error *err)
{
    char text[100], name[300];
    error_text(body, len, text, sizeof text);
    remote_key_name(p->key, name, sizeof name);
    if (code == 401 || code == 403) {
        if (p->anonymous)
            return mm_error_set(err, -EACCES,
                                "%s: anonymous access refused (HTTP %ld): set private_key and "
                                "client_email of %s",
                                where, code, name);
        return mm_error_set(err, -EACCES,
                            "%s: credentials refused (HTTP %ld%s%s): check private_key and "
                            "client_email of %s",
                            where, code, text[0] ? ": " : "", text, name);
    }
    if (code == 404 && !object)
        return mm_error_set(err, -ENOENT, "gs://%s: bucket not found", p->bucket);
    if (code == 404)
        return mm_error_set(err, -ENOENT, "%s: object not found", where);
    return mm_error_set(err, -EIO, "%s: HTTP %ld%s%s", where, code, text[0] ? ": " : "", text);
}

static int list_http_error(long code, const char *body, size_t len, void *arg, struct mm_error *err)
{
    struct gcs_pull *p = arg;
    return store_error(p, code, body, len, p->what, false, err);
}

static int object_http_error(long code, const char *body, size_t len, void *arg,
                             struct mm_error *err)
{
    struct gcs_object *o = arg;
    char where[MAX_NAME_LEN + 300];
    snprintf(where, sizeof where, "%s", o->what);
    return store_error(o->pull, code, body, len, where, true, err);
}

static void files_done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct gcs_pull *p = arg;
    p->op = NULL;
    if (status < 0) {
        pull_fail(p, status, err);
        return;
    }
    remote_done_cb cb = p->cb;
    void *cb_arg = p->arg;
    pull_free(p);
    cb(0, NULL, bytes, cb_arg);
}

/* dl calls progress with the job's arg, the pull: hand it on with the caller's. */
static void on_progress(uint64_t done, uint64_t total, void *arg)
{
    struct gcs_pull *p = arg;
    p->progress(done, total, p->arg);
}

static void download(struct gcs_pull *p)
{
    struct mm_error err = {0};
    for (size_t i = 0; i < p->n; i++) {
        struct gcs_object *o = &p->objects[i];
        o->pull = p;
        struct dl_request *r = &p->files[i].req;
        r->prepare = object_prepare;
        r->http_error = object_http_error;
        r->arg = o;
        r->what = o->what;
    }
    p->phase = PHASE_FILES;
    int rc = dl_files(p->dl, p->dirfd, p->files, p->n, p->progress ? on_progress : NULL, files_done,
                      p, &p->op, &err);
    if (rc < 0)
        pull_fail(p, rc, &err);
}

/* Add an object of the listing: rel is its path under the model's directory. */
static int add_object(struct gcs_pull *p, const char *name, const char *rel, uint64_t size,
                      const char *md5_b64, struct mm_error *err)
{
    if (p->n >= MAX_OBJECTS)
        return mm_error_set(err, -EFBIG, "%s: more than %d objects", p->what, MAX_OBJECTS);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct dl_file *f = realloc(p->files, cap * sizeof *f);
        if (f)
            p->files = f;
        struct gcs_object *o = realloc(p->objects, cap * sizeof *o);
        if (o)
            p->objects = o;
        char **r = realloc(p->rels, cap * sizeof *r);
        if (r)
            p->rels = r;
        if (!f || !o || !r)
            return mm_error_set(err, -ENOMEM, "out of memory");
        p->cap = cap;
    }
    char *md5_hex = NULL;
    if (md5_b64) {
        char hex[33];
        if (remote_md5_hex(md5_b64, hex) < 0)
            return mm_error_set(err, -EPROTO,
                                "%s: listing: md5Hash of an object is not "
                                "16 bytes of base64",
                                p->what);
        md5_hex = strdup(hex);
        if (!md5_hex)
            return mm_error_set(err, -ENOMEM, "out of memory");
    }
    char *bucket = url_encode(p->bucket), *obj = url_encode(name);
    char *relc = strdup(rel);
    size_t wlen = strlen(p->bucket) + strlen(name) + 8;
    char *what = malloc(wlen);
    size_t ulen =
        strlen(p->endpoint) + (bucket ? strlen(bucket) : 0) + (obj ? strlen(obj) : 0) + 64;
    char *url = malloc(ulen);
    if (!bucket || !obj || !relc || !url || !what) {
        free(bucket), free(obj), free(relc), free(url), free(md5_hex), free(what);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(url, ulen, "%s/storage/v1/b/%s/o/%s?alt=media", p->endpoint, bucket, obj);
    free(bucket), free(obj);
    snprintf(what, wlen, "gs://%s/%s", p->bucket, name);
    size_t i = p->n++;
    p->rels[i] = relc;
    p->objects[i] = (struct gcs_object){.pull = p, .url = url, .what = what};
    p->files[i] =
        (struct dl_file){.rel = relc, .size = size, .md5_hex = md5_hex, .req = {.what = what}};
    return 0;
}

/* One page of the listing: the probe (is <path> itself an object?) or a page of "<path>/". */
static int take_page(struct gcs_pull *p, const char *body, size_t len, bool *more,
                     struct mm_error *err)
{
    int rc = 0;
    *more = false;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return mm_error_set(err, -EPROTO, "%s: the listing is not a JSON object", p->what);
    }
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "nextPageToken");
    if (items && !cJSON_IsArray(items)) {
        rc = mm_error_set(err, -EPROTO, "%s: the listing's items is not an array", p->what);
        goto out;
    }
    size_t plen = strlen(p->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(it, "size");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "md5Hash");
        if (!cJSON_IsString(n) || !cJSON_IsString(s)) {
            rc = mm_error_set(err, -EPROTO, "%s: an object of the listing lacks name or size",
                              p->what);
            goto out;
        }
        const char *name = n->valuestring;
        char *end = NULL;
        errno = 0;
        unsigned long long size = strtoull(s->valuestring, &end, 10);
        if (!isdigit((unsigned char)s->valuestring[0]) || *end || errno ||
            strlen(name) > MAX_NAME_LEN || !mm_utf8_valid(name, strlen(name))) {
            rc = mm_error_set(err, -EPROTO,
                              "%s: an object of the listing has a bad name or "
                              "size",
                              p->what);
            goto out;
        }
        const char *md5 = cJSON_IsString(m) && m->valuestring[0] ? m->valuestring : NULL;
        if (p->phase == PHASE_PROBE) {
            if (strcmp(name, p->path) == 0 && size > 0) {
                rc = add_object(p, name, p->base, size, md5, err);
                goto out; /* the path is one object */
            }
            continue;
        }
        /* listing "<path>/": skip directory markers and empty objects */
        if (strncmp(name, p->path, plen) != 0 || name[plen] != '/' || size == 0 ||
            name[strlen(name) - 1] == '/')
            continue;
        char rel[MAX_NAME_LEN + 2];
        snprintf(rel, sizeof rel, "%s/%s", p->base, name + plen + 1);
        rc = add_object(p, name, rel, size, md5, err);
        if (rc < 0)
            goto out;
    }
    if (p->phase == PHASE_LIST && cJSON_IsString(next) && next->valuestring[0]) {
        if (++p->pages >= MAX_PAGES) {
            rc = mm_error_set(err, -EFBIG, "%s: more than %d listing pages", p->what, MAX_PAGES);
            goto out;
        }
        char *tok = url_encode(next->valuestring);
        if (!tok) {
            rc = mm_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        free(p->page_token);
        p->page_token = tok;
        *more = true;
    }
out:
    cJSON_Delete(j);
    return rc;
}

static void list_done(int status, const struct mm_error *err, long http_code, const char *body,
                      size_t len, void *arg)
{
    (void)http_code;
    struct gcs_pull *p = arg;
    struct mm_error e = {0};
    p->op = NULL;
    if (status == -EACCES && !p->anonymous && !p->token_retried && p->tok) {
        /* The cached token may have been revoked: drop it and fetch a new one, once. */
        struct gcs_token *t = p->tok;
        if (t->access && p->access && strcmp(t->access, p->access) == 0)
            t->refresh_at = 0;
        p->token_retried = true;
        remote_free_secret(p->access);
        p->access = NULL;
        int rc = pull_begin(p, &e);
        if (rc < 0)
            pull_fail(p, rc, &e);
        return;
    }
    if (status < 0) {
        pull_fail(p, status, err);
        return;
    }
    bool more = false;
    int rc = take_page(p, body, len, &more, &e);
    if (rc < 0) {
        pull_fail(p, rc, &e);
        return;
    }
    if (p->phase == PHASE_PROBE) {
        if (p->n == 1) {
            download(p);
            return;
        }
        p->phase = PHASE_LIST;
        list_next(p);
        return;
    }
    if (more) {
        list_next(p);
        return;
    }
    if (p->n == 0) {
        mm_error_set(&e, -ENOENT, "%s: no object gs://%s/%s and none under gs://%s/%s/", p->what,
                     p->bucket, p->path, p->bucket, p->path);
        pull_fail(p, -ENOENT, &e);
        return;
    }
    download(p);
}

/* Request the probe or the next page of the listing. 0 or -errno with err. */
static int list_request(struct gcs_pull *p, struct mm_error *err)
{
    size_t plen = strlen(p->path);
    char *prefix_raw = malloc(plen + 2);
    if (!prefix_raw)
        return mm_error_set(err, -ENOMEM, "out of memory");
    snprintf(prefix_raw, plen + 2, "%s%s", p->path, p->phase == PHASE_PROBE ? "" : "/");
    char *bucket = url_encode(p->bucket), *prefix = url_encode(prefix_raw);
    free(prefix_raw);
    size_t len = strlen(p->endpoint) + (bucket ? strlen(bucket) : 0) +
                 (prefix ? strlen(prefix) : 0) + (p->page_token ? strlen(p->page_token) : 0) + 200;
    free(p->req_url);
    p->req_url = bucket && prefix ? malloc(len) : NULL;
    if (!p->req_url) {
        free(bucket), free(prefix);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    bool probe = p->phase == PHASE_PROBE;
    snprintf(p->req_url, len,
             "%s/storage/v1/b/%s/o?prefix=%s&maxResults=%u"
             "&fields=items(name%%2Csize%%2Cmd5Hash)%%2CnextPageToken%s%s",
             p->endpoint, bucket, prefix, probe ? 1 : p->page_size,
             !probe && p->page_token ? "&pageToken=" : "",
             !probe && p->page_token ? p->page_token : "");
    free(bucket), free(prefix);
    struct dl_request req = {
        .prepare = list_prepare, .http_error = list_http_error, .arg = p, .what = p->what};
    return dl_text(p->dl, &req, MAX_LIST_BODY, list_done, p, &p->op, err);
}

static void list_next(struct gcs_pull *p)
{
    struct mm_error err = {0};
    int rc = list_request(p, &err);
    if (rc < 0)
        pull_fail(p, rc, &err);
}

/* An http(s) URL without a trailing '/'; NULL if s is not one. */
static char *base_url(const char *s)
{
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return NULL;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#')
            return NULL;
    char *u = strdup(s);
    if (!u)
        return NULL;
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
    return u;
}

static int pull(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err)
{
    struct gcs_state *st = state;
    char name[300];
    remote_key_name(src->key, name, sizeof name);
    const char *bucket = remote_field(src->cfg, "bucket");
    const char *pem = remote_field(src->cfg, "private_key");
    const char *email = remote_field(src->cfg, "client_email");
    const char *uri = remote_field(src->cfg, "token_uri");
    const char *endpoint = remote_field(src->cfg, "endpoint_url");
    const char *certificate = remote_field(src->cfg, "certificate");
    const char *page = remote_field(src->cfg, "list_page_size");
    if (!st || !cb || dirfd < 0 || !src->path)
        return mm_error_set(err, -EINVAL, "gcs: pull called without its state or arguments");
    if (!bucket || strchr(bucket, '/'))
        return mm_error_set(err, -EINVAL, "%s: %s", name,
                            bucket ? "bucket holds a '/'" : "no bucket");
    if (!pem != !email)
        return mm_error_set(err, -EINVAL,
                            "%s: private_key and client_email go together "
                            "(%s is missing)",
                            name, pem ? "client_email" : "private_key");
    unsigned page_size = 1000;
    if (page) {
        char *end = NULL;
        unsigned long v = strtoul(page, &end, 10);
        if (!isdigit((unsigned char)page[0]) || *end || v < 1 || v > 1000)
            return mm_error_set(err, -EINVAL, "%s: list_page_size must be 1..1000", name);
        page_size = (unsigned)v;
    }
    const char *path = src->path;
    while (*path == '/')
        path++;
    size_t plen = strlen(path);
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    if (plen == 0 || plen > MAX_NAME_LEN)
        return mm_error_set(err, -EINVAL, "%s: gs://%s: the path is %s", name, bucket,
                            plen ? "over 1024 bytes" : "empty");
    struct gcs_pull *p = calloc(1, sizeof *p);
    if (!p)
        return mm_error_set(err, -ENOMEM, "out of memory");
    p->st = st;
    p->dl = dl;
    p->key = strdup(src->key ? src->key : "");
    p->bucket = strdup(bucket);
    p->path = strndup(path, plen);
    p->endpoint = base_url(endpoint ? endpoint : DEFAULT_ENDPOINT);
    p->certificate = certificate ? strdup(certificate) : NULL;
    p->page_size = page_size;
    p->anonymous = !pem;
    p->dirfd = dirfd;
    p->progress = progress;
    p->cb = cb;
    p->arg = arg;
    if (!p->key || !p->bucket || !p->path || (certificate && !p->certificate)) {
        pull_free(p);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    if (!p->endpoint) {
        pull_free(p);
        return mm_error_set(err, -EINVAL,
                            "%s: endpoint_url is not an http(s) URL without a "
                            "query",
                            name);
    }
    const char *slash = strrchr(p->path, '/');
    p->base = slash ? slash + 1 : p->path;
    snprintf(p->what, sizeof p->what, "gs://%s/%s", p->bucket, p->path);
    if (strcmp(p->base, ".") == 0 || strcmp(p->base, "..") == 0) {
        pull_free(p);
        return mm_error_set(err, -EINVAL, "%s: %s: the path ends in '%s'", name, p->what, p->base);
    }
    if (!p->anonymous) {
        char *token_uri = base_url(uri ? uri : DEFAULT_TOKEN_URI);
        if (!token_uri) {
            pull_free(p);
            return mm_error_set(err, -EINVAL,
                                "%s: token_uri is not an http(s) URL without a "
                                "query",
                                name);
        }
        int rc = token_entry(st, email, uri ? uri : DEFAULT_TOKEN_URI, pem, certificate, name,
                             &p->tok, err);
        free(token_uri);
        if (rc < 0) {
            pull_free(p);
            return rc;
        }
    }
    if (p->tok)
        p->tok->users++;
    int rc = pull_begin(p, err);
    if (rc < 0) {
        pull_free(p);
        return rc;
    }
    if (out)
        *out = p;
    return 0;
}

static void cancel(void *handle)
{
    struct gcs_pull *p = handle;
    if (!p)
        return;
    waiter_remove(p);
    dl_cancel(p->op);
    p->op = NULL;
    pull_free(p);
}

static int open_state(struct dl *dl, void **state, struct mm_error *err)
{
    struct gcs_state *st = calloc(1, sizeof *st);
    if (!st)
        return mm_error_set(err, -ENOMEM, "out of memory");
    st->dl = dl;
    *state = st;
    return 0;
}

/* Cancels the token requests: call it before the dl is freed, after the pulls are cancelled. */
static void close_state(void *state)
{
    struct gcs_state *st = state;
    if (!st)
        return;
    st->closed = true;
    if (st->dispatching > 0)
        return; /* token_done frees it when its dispatch returns */
    while (st->tokens) {
        struct gcs_token *t = st->tokens;
        st->tokens = t->next;
        token_free(t);
    }
    free(st);
}

const struct remote_provider remote_gcs = {
    .type = "gcs", .open = open_state, .close = close_state, .pull = pull, .cancel = cancel};
