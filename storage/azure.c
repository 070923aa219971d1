/* azure.c - the azure provider (remote.h, azure.h): a model from Azure Blob Storage.
 *
 * Storage config fields (strings; stcfg.h resolves the secret and parameters):
 *   account_name   the storage account (or the connection string's AccountName)
 *   container      the blob container (required)
 *   account_key    base64 account key: requests signed with Shared Key (our own
 *                  HMAC-SHA256 over the canonical string, x-ms-date and x-ms-version)
 *   connection_string  AccountName=..;AccountKey=..;BlobEndpoint=..;
 *                  DefaultEndpointsProtocol=..;EndpointSuffix=..;SharedAccessSignature=..;
 *                  or UseDevelopmentStorage=true (azurite at http://127.0.0.1:10000)
 *   sas_token      a shared access signature (query text, a leading '?' is fine)
 *   (none of the three: anonymous, for a container with public access)
 *   endpoint_url   default https://<account>.blob.core.windows.net; azurite is path-style:
 *                  http://127.0.0.1:PORT/<account>
 *   certificate    PEM text of a CA to trust for https
 *   list_page_size blobs per List Blobs page (1..5000, default 5000; for tests)
 * At most one of account_key, connection_string and sas_token.
 *
 * A path is a blob when one is named exactly (and is not empty), else the blobs under
 * "<path>/" (List Blobs with markers, flat); Content-Length and Content-MD5 from the listing
 * are checked on download. Anonymous access to a container that lets anyone read blobs but
 * not list them ("blob" public access): the path is read as one blob, its length from the
 * answer, and a prefix cannot be pulled (-EACCES, naming the fields that would give access).
 *
 * Errors a user sees (each names the storage key and azure://account/container[/path]):
 *   -EACCES  credentials refused (AuthenticationFailed, AuthorizationFailure, ...): "check
 *            account_key" / connection_string / sas_token; anonymous: the container is not
 *            public, give one of them
 *   -ENOENT  container not found (ContainerNotFound), blob not found (BlobNotFound or
 *            nothing under the path), account unknown to the endpoint (ResourceNotFound)
 *   -EINVAL  a field missing or malformed (named, never its value)
 *   and download.h's transport errors. No message or log holds the key, the connection
 *   string or the SAS: URLs with a SAS are built only inside the request's preparation. */
#include "mm/azure.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mm/base64.h"
#include "mm/buf.h"
#include "mm/remote.h"
#include "mm/xml.h"

#define AZURE_VERSION "2021-08-06"
#define AZURE_DEV_ACCOUNT "devstoreaccount1"
/* The well-known key of the storage emulators (published by Microsoft; not a secret). */
#define AZURE_DEV_KEY                                                                              \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define AZURE_LIST_MAX_BODY (32u << 20) /* one page of 5000 blobs is a few MB */
#define AZURE_NAME_MAX 4100             /* blob names are at most 1024 characters */
#define AZURE_MAX_BLOBS 100000u         /* blobs in one model; storage bounds it further */
#define AZURE_MAX_PAGES 10000u

/* ---- strings ---- */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static char *dup_s(const char *s)
{
    return s ? dup_n(s, strlen(s)) : NULL;
}

/* A string field: 0 and *out (NULL if absent or ""), or -EINVAL if not a string. who names
 * the storage key (remote_key_name). */
static int field(const cJSON *cfg, const char *name, const char *who, const char **out,
                 struct mm_error *err)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(cfg, name);
    *out = NULL;
    if (f && (!cJSON_IsString(f) || !f->valuestring))
        return mm_error_set(err, -EINVAL, "%s: field %s is not a string", who, name);
    *out = remote_field(cfg, name);
    return 0;
}

/* ---- connection strings ---- */

struct conn_string {
    char *account, *key, *endpoint, *protocol, *suffix, *sas;
    bool dev;
};

static void conn_clear(struct conn_string *c)
{
    free(c->account);
    remote_free_secret(c->key);
    free(c->endpoint);
    free(c->protocol);
    free(c->suffix);
    remote_free_secret(c->sas);
    memset(c, 0, sizeof(*c));
}

static int conn_parse(const char *s, const char *who, struct conn_string *c, struct mm_error *err)
{
    memset(c, 0, sizeof(*c));
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && isspace((unsigned char)*p))
            p++, n--;
        while (n && isspace((unsigned char)p[n - 1]))
            n--;
        if (n) {
            const char *eq = memchr(p, '=', n);
            if (!eq || eq == p) {
                conn_clear(c);
                return mm_error_set(err, -EINVAL,
                                    "%s: connection_string has a part that is "
                                    "not Key=Value",
                                    who);
            }
            size_t kn = (size_t)(eq - p);
            const char *v = eq + 1;
            size_t vn = n - kn - 1;
            char **slot = NULL;
#define IS(name) (kn == strlen(name) && strncasecmp(p, name, kn) == 0)
            if (IS("AccountName"))
                slot = &c->account;
            else if (IS("AccountKey"))
                slot = &c->key;
            else if (IS("BlobEndpoint"))
                slot = &c->endpoint;
            else if (IS("DefaultEndpointsProtocol"))
                slot = &c->protocol;
            else if (IS("EndpointSuffix"))
                slot = &c->suffix;
            else if (IS("SharedAccessSignature"))
                slot = &c->sas;
            else if (IS("UseDevelopmentStorage"))
                c->dev = vn == 4 && strncasecmp(v, "true", 4) == 0;
#undef IS
            if (slot) {
                if (*slot)
                    remote_free_secret(*slot);
                if (!(*slot = dup_n(v, vn))) {
                    conn_clear(c);
                    return mm_error_set(err, -ENOMEM, "out of memory");
                }
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

/* ---- the account ---- */

void azure_account_clear(struct azure_account *a)
{
    if (!a)
        return;
    free(a->account);
    free(a->container);
    free(a->endpoint);
    if (a->key) {
        OPENSSL_cleanse(a->key, a->key_len);
        free(a->key);
    }
    remote_free_secret(a->sas);
    free(a->ca_pem);
    memset(a, 0, sizeof(*a));
}

static bool is_http_url(const char *u)
{
    return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

static int set_key(struct azure_account *a, const char *b64, const char *fld, const char *who,
                   struct mm_error *err)
{
    size_t n = strlen(b64);
    a->key = malloc(base64_decoded_max(n) + 1);
    if (!a->key)
        return mm_error_set(err, -ENOMEM, "out of memory");
    long k = base64_decode(b64, n, a->key);
    if (k <= 0)
        return mm_error_set(err, -EINVAL, "%s: the account key in %s is not base64", who, fld);
    a->key_len = (size_t)k;
    a->auth = AZURE_SHARED_KEY;
    a->cred_field = fld;
    return 0;
}

static int set_sas(struct azure_account *a, const char *sas, const char *fld, const char *who,
                   struct mm_error *err)
{
    while (*sas == '?')
        sas++;
    for (const char *q = sas; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == '#' || (unsigned char)*q >= 0x7f)
            return mm_error_set(err, -EINVAL, "%s: %s holds a character a SAS cannot hold", who,
                                fld);
    if (!*sas)
        return mm_error_set(err, -EINVAL, "%s: %s is empty", who, fld);
    if (!(a->sas = dup_s(sas)))
        return mm_error_set(err, -ENOMEM, "out of memory");
    a->auth = AZURE_SAS;
    a->cred_field = fld;
    return 0;
}

int azure_account_from_config(const cJSON *cfg, const char *storage_key, struct azure_account *a,
                              struct mm_error *err)
{
    memset(a, 0, sizeof(*a));
    a->cred_field = "";
    char sk[300];
    remote_key_name(storage_key, sk, sizeof(sk));
    const char *name, *container, *akey, *cs, *sas, *endpoint, *cert, *page;
    struct conn_string c = {0};
    int rc;
    if ((rc = field(cfg, "account_name", sk, &name, err)) ||
        (rc = field(cfg, "container", sk, &container, err)) ||
        (rc = field(cfg, "account_key", sk, &akey, err)) ||
        (rc = field(cfg, "connection_string", sk, &cs, err)) ||
        (rc = field(cfg, "sas_token", sk, &sas, err)) ||
        (rc = field(cfg, "endpoint_url", sk, &endpoint, err)) ||
        (rc = field(cfg, "certificate", sk, &cert, err)) ||
        (rc = field(cfg, "list_page_size", sk, &page, err)))
        return rc;
    if (!!akey + !!cs + !!sas > 1) {
        return mm_error_set(err, -EINVAL,
                            "%s: give only one of account_key, connection_string "
                            "and sas_token (found %s%s%s)",
                            sk, akey ? "account_key " : "", cs ? "connection_string " : "",
                            sas ? "sas_token " : "");
    }
    if (cs && (rc = conn_parse(cs, sk, &c, err)))
        return rc;
    if (c.dev) {
        if (!c.account && !(c.account = dup_s(AZURE_DEV_ACCOUNT)))
            goto nomem;
        if (!c.key && !c.sas && !(c.key = dup_s(AZURE_DEV_KEY)))
            goto nomem;
        if (!c.endpoint && !(c.endpoint = dup_s("http://127.0.0.1:10000/" AZURE_DEV_ACCOUNT)))
            goto nomem;
    }
    if (name && c.account && strcmp(name, c.account) != 0) {
        rc = mm_error_set(err, -EINVAL,
                          "%s: account_name and the connection_string's "
                          "AccountName differ",
                          sk);
        goto fail;
    }
    if (!name)
        name = c.account;
    if (!name) {
        rc = mm_error_set(err, -EINVAL, "%s: no account_name", sk);
        goto fail;
    }
    if (!container) {
        rc = mm_error_set(err, -EINVAL, "%s: no container", sk);
        goto fail;
    }
    for (const char *q = name; *q; q++)
        if (!isalnum((unsigned char)*q) && *q != '-') {
            rc = mm_error_set(err, -EINVAL,
                              "%s: account_name may hold only letters, digits "
                              "and '-'",
                              sk);
            goto fail;
        }
    for (const char *q = container; *q; q++)
        if ((unsigned char)*q <= ' ' || (unsigned char)*q >= 0x7f || strchr("/?#%", *q)) {
            rc = mm_error_set(err, -EINVAL, "%s: container is not a valid name", sk);
            goto fail;
        }
    if (!(a->account = dup_s(name)) || !(a->container = dup_s(container)))
        goto nomem;

    const char *ep_field = "endpoint_url";
    if (!endpoint && c.endpoint) {
        endpoint = c.endpoint;
        ep_field = "the connection_string's BlobEndpoint";
    }
    if (endpoint) {
        if (!is_http_url(endpoint) || strpbrk(endpoint, "?# \t\r\n")) {
            rc = mm_error_set(err, -EINVAL, "%s: %s is not an http(s) URL", sk, ep_field);
            goto fail;
        }
        size_t n = strlen(endpoint);
        while (n && endpoint[n - 1] == '/')
            n--;
        a->endpoint = dup_n(endpoint, n);
    } else {
        const char *proto = c.protocol ? c.protocol : "https";
        if (strcasecmp(proto, "http") != 0 && strcasecmp(proto, "https") != 0) {
            rc = mm_error_set(err, -EINVAL,
                              "%s: the connection_string's "
                              "DefaultEndpointsProtocol is neither http nor https",
                              sk);
            goto fail;
        }
        const char *suffix = c.suffix ? c.suffix : "core.windows.net";
        size_t n = strlen(proto) + strlen(name) + strlen(suffix) + 16;
        if ((a->endpoint = malloc(n)))
            snprintf(a->endpoint, n, "%s://%s.blob.%s", proto, name, suffix);
    }
    if (!a->endpoint)
        goto nomem;

    if (akey)
        rc = set_key(a, akey, "account_key", sk, err);
    else if (sas)
        rc = set_sas(a, sas, "sas_token", sk, err);
    else if (c.key)
        rc = set_key(a, c.key, "connection_string", sk, err);
    else if (c.sas)
        rc = set_sas(a, c.sas, "connection_string", sk, err);
    if (rc)
        goto fail;

    if (cert && !(a->ca_pem = dup_s(cert)))
        goto nomem;
    if (page) {
        char *end;
        unsigned long v = strtoul(page, &end, 10);
        if (*end || v < 1 || v > 5000 || !isdigit((unsigned char)*page)) {
            rc = mm_error_set(err, -EINVAL, "%s: list_page_size is not a number in 1..5000", sk);
            goto fail;
        }
        a->list_page_size = (unsigned)v;
    }
    conn_clear(&c);
    return 0;
nomem:
    rc = mm_error_set(err, -ENOMEM, "out of memory");
fail:
    conn_clear(&c);
    azure_account_clear(a);
    return rc;
}

/* ---- Shared Key ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) ('+' is a space, as in a form) into a new string; NULL on a bad
 * escape (or no memory: *bad tells). */
static char *pct_decode(const char *s, size_t n, bool *bad)
{
    char *d = malloc(n + 1), *o = d;
    *bad = false;
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0) {
                *bad = true;
                free(d);
                return NULL;
            }
            *o++ = (char)(h << 4 | l);
            i += 2;
        } else {
            *o++ = s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = '\0';
    return d;
}

struct kv {
    char *name;
    char *value;
};

static int kv_cmp(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static void kv_free(struct kv *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* "Name: value" -> kv with the name lowercased and the value's whitespace folded. */
static int header_kv(const char *h, struct kv *out)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return -EINVAL;
    size_t nn = (size_t)(colon - h);
    while (nn && isspace((unsigned char)h[nn - 1]))
        nn--;
    out->name = dup_n(h, nn);
    out->value = malloc(strlen(colon) + 1);
    if (!out->name || !out->value) {
        free(out->name);
        free(out->value);
        return -ENOMEM;
    }
    lower(out->name);
    char *o = out->value;
    bool space = false;
    for (const char *v = colon + 1; *v; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            space = o != out->value;
            continue;
        }
        if (space)
            *o++ = ' ';
        space = false;
        *o++ = *v;
    }
    *o = '\0';
    return 0;
}

int azure_string_to_sign(const char *account, const char *method, const char *url,
                         const char *const *headers, size_t n_headers, char **out,
                         struct mm_error *err)
{
    static const char *const standard[] = {
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    };
    enum { N_STANDARD = sizeof(standard) / sizeof(standard[0]) };
    struct mm_buf b = {0};
    struct kv *hs = NULL, *qs = NULL;
    size_t nh = 0, nq = 0;
    int rc = -ENOMEM;
    *out = NULL;

    const char *scheme = strstr(url, "://");
    if (!scheme) {
        mm_error_set(err, -EINVAL, "not a URL: no scheme");
        return -EINVAL;
    }
    const char *path = scheme + 3;
    path += strcspn(path, "/?#");
    size_t path_len = strcspn(path, "?#");
    const char *query = path[path_len] == '?' ? path + path_len + 1 : NULL;

    if (n_headers && !(hs = calloc(n_headers, sizeof(*hs))))
        goto nomem;
    for (; nh < n_headers; nh++) {
        if ((rc = header_kv(headers[nh], &hs[nh]))) {
            if (rc == -EINVAL)
                mm_error_set(err, -EINVAL, "a header without ':'");
            goto fail;
        }
    }
    if (mm_buf_printf(&b, "%s\n", method))
        goto nomem;
    for (size_t s = 0; s < N_STANDARD; s++) {
        const char *v = "";
        for (size_t i = 0; i < nh; i++)
            if (strcmp(hs[i].name, standard[s]) == 0)
                v = hs[i].value;
        if (strcmp(standard[s], "content-length") == 0 && strcmp(v, "0") == 0)
            v = "";
        if (mm_buf_printf(&b, "%s\n", v))
            goto nomem;
    }
    if (nh)
        qsort(hs, nh, sizeof(*hs), kv_cmp);
    for (size_t i = 0; i < nh; i++) {
        if (strncmp(hs[i].name, "x-ms-", 5) != 0)
            continue;
        bool same = i > 0 && strcmp(hs[i - 1].name, hs[i].name) == 0;
        if (same ? mm_buf_printf(&b, ",%s", hs[i].value)
                 : mm_buf_printf(&b, "%s%s:%s", b.data[b.len - 1] == '\n' ? "" : "\n", hs[i].name,
                                 hs[i].value))
            goto nomem;
    }
    if (b.data[b.len - 1] != '\n' && mm_buf_append(&b, "\n", 1))
        goto nomem;
    if (mm_buf_printf(&b, "/%s", account) ||
        mm_buf_append(&b, path_len ? path : "/", path_len ? path_len : 1))
        goto nomem;

    if (query && *query) {
        size_t cap = 1;
        for (const char *q = query; *q && *q != '#'; q++)
            cap += *q == '&';
        if (!(qs = calloc(cap, sizeof(*qs))))
            goto nomem;
        const char *q = query;
        size_t qlen = strcspn(query, "#");
        while (q < query + qlen) {
            const char *amp = memchr(q, '&', (size_t)(query + qlen - q));
            const char *e = amp ? amp : query + qlen;
            if (e > q) {
                const char *eq = memchr(q, '=', (size_t)(e - q));
                bool bad1, bad2;
                qs[nq].name = pct_decode(q, (size_t)((eq ? eq : e) - q), &bad1);
                qs[nq].value = eq ? pct_decode(eq + 1, (size_t)(e - eq - 1), &bad2)
                                  : (bad2 = false, dup_s(""));
                if (!qs[nq].name || !qs[nq].value) {
                    free(qs[nq].name);
                    free(qs[nq].value);
                    if (bad1 || bad2) {
                        rc = mm_error_set(err, -EINVAL, "a malformed %%-escape in the query");
                        goto fail;
                    }
                    goto nomem;
                }
                lower(qs[nq].name);
                nq++;
            }
            q = e + 1;
        }
        qsort(qs, nq, sizeof(*qs), kv_cmp);
        for (size_t i = 0; i < nq; i++) {
            bool same = i > 0 && strcmp(qs[i - 1].name, qs[i].name) == 0;
            if (same ? mm_buf_printf(&b, ",%s", qs[i].value)
                     : mm_buf_printf(&b, "\n%s:%s", qs[i].name, qs[i].value))
                goto nomem;
        }
    }
    kv_free(hs, nh);
    kv_free(qs, nq);
    *out = b.data;
    return 0;
nomem:
    rc = mm_error_set(err, -ENOMEM, "out of memory");
fail:
    kv_free(hs, nh);
    kv_free(qs, nq);
    mm_buf_free(&b);
    return rc;
}

int azure_shared_key(const char *account, const unsigned char *key, size_t key_len,
                     const char *string_to_sign, char *out, size_t size)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    char sig[EVP_MAX_MD_SIZE * 2];
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)string_to_sign,
              strlen(string_to_sign), mac, &mac_len))
        return -EIO;
    base64_encode(mac, mac_len, sig);
    int n = snprintf(out, size, "SharedKey %s:%s", account, sig);
    return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}

void azure_http_date(long long t, char *out, size_t size)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- the pull ---- */

struct azpull;

struct azreq {
    struct azpull *p;
    char *url;  /* without a SAS */
    char *what; /* azure://account/container[/blob] */
    char *blob; /* the blob a download reads; NULL for a listing */
};

struct azfile {
    char *rel;
    uint64_t size;
    char md5[33];
    struct azreq req;
};

struct azpull {
    struct azure_account acct;
    struct dl *dl;
    int dirfd;
    dl_progress_cb progress;
    remote_done_cb cb;
    void *arg;
    char *storage_key;
    char *path; /* without leading and trailing '/' */
    const char *base;
    char *prefix; /* path + "/" */
    struct dl_op *op;
    bool probing;       /* the first listing: is there a blob named path exactly */
    char last_code[64]; /* the error code of the last answer that was not 2xx */
    char list_code[64]; /* anonymous: why the listing was refused, when a blob is tried */
    unsigned pages;
    struct azreq list;
    struct azfile *files;
    size_t n_files, cap_files;
};

static void azreq_clear(struct azreq *r)
{
    free(r->url);
    free(r->what);
    free(r->blob);
    memset(r, 0, sizeof(*r));
}

static void pull_free(struct azpull *p)
{
    if (!p)
        return;
    azure_account_clear(&p->acct);
    free(p->storage_key);
    free(p->path);
    free(p->prefix);
    azreq_clear(&p->list);
    for (size_t i = 0; i < p->n_files; i++) {
        free(p->files[i].rel);
        azreq_clear(&p->files[i].req);
    }
    free(p->files);
    free(p);
}

/* End the pull: free it, then call back (which may free the dl and everything else). */
static void finish(struct azpull *p, int status, const struct mm_error *err, uint64_t bytes)
{
    remote_done_cb cb = p->cb;
    void *arg = p->arg;
    struct mm_error e = {0};
    if (status) {
        if (err && err->code)
            e = *err;
        else
            mm_error_set(&e, status, "azure: %s", mm_strerror(status));
        char who[300];
        if (p->storage_key && *p->storage_key)
            mm_error_prefix(&e, "%s: ", remote_key_name(p->storage_key, who, sizeof(who)));
        e.code = status;
    }
    pull_free(p);
    cb(status, &e, bytes, arg);
}

static int prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct azreq *r = arg;
    struct azure_account *a = &r->p->acct;
    char date[64], hdr[128], auth[512];
    char *sts = NULL;
    int rc = 0;

    azure_http_date((long long)time(NULL), date, sizeof(date));
    snprintf(hdr, sizeof(hdr), "x-ms-date: %s", date);
    const char *signed_headers[] = {hdr, "x-ms-version: " AZURE_VERSION};
    struct curl_slist *l = NULL, *t;
    for (size_t i = 0; i < 2; i++) {
        if (!(t = curl_slist_append(l, signed_headers[i])))
            goto nomem;
        l = t;
    }
    if (a->auth == AZURE_SHARED_KEY) {
        if ((rc = azure_string_to_sign(a->account, "GET", r->url, signed_headers, 2, &sts, err)))
            goto fail;
        memcpy(auth, "Authorization: ", 15);
        if (azure_shared_key(a->account, a->key, a->key_len, sts, auth + 15, sizeof(auth) - 15)) {
            rc = mm_error_set(err, -EIO, "%s: signing the request failed", r->what);
            goto fail;
        }
        if (!(t = curl_slist_append(l, auth)))
            goto nomem;
        l = t;
    }
    *headers = l;
    l = NULL;
    if (a->auth == AZURE_SAS) {
        size_t n = strlen(r->url) + strlen(a->sas) + 2;
        char *u = malloc(n);
        if (!u)
            goto nomem;
        snprintf(u, n, "%s%c%s", r->url, strchr(r->url, '?') ? '&' : '?', a->sas);
        CURLcode c = curl_easy_setopt(easy, CURLOPT_URL, u);
        remote_free_secret(u);
        if (c != CURLE_OK)
            goto nomem;
    } else if (curl_easy_setopt(easy, CURLOPT_URL, r->url) != CURLE_OK) {
        goto nomem;
    }
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (a->ca_pem) {
        struct curl_blob blob = {
            .data = a->ca_pem, .len = strlen(a->ca_pem), .flags = CURL_BLOB_COPY};
        if (curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob) != CURLE_OK) {
            rc = mm_error_set(err, -EPROTO, "%s: this libcurl cannot take a CA certificate",
                              r->what);
            goto fail;
        }
    }
    free(sts);
    return 0;
nomem:
    rc = mm_error_set(err, -ENOMEM, "out of memory");
fail:
    OPENSSL_cleanse(auth, sizeof(auth));
    free(sts);
    curl_slist_free_all(l);
    return rc;
}

static int http_error(long code, const char *body, size_t len, void *arg, struct mm_error *err)
{
    struct azreq *r = arg;
    struct azpull *p = r->p;
    const struct azure_account *a = &p->acct;
    char ecode[128] = "";
    if (xml_text(body, len, "Code", ecode, sizeof(ecode), NULL) != 0)
        ecode[0] = '\0';
    for (char *c = ecode; *c; c++) /* it goes into a message: keep it printable */
        if (!isalnum((unsigned char)*c))
            *c = '?';
    snprintf(p->last_code, sizeof(p->last_code), "%s", ecode);
    if (strcmp(ecode, "ContainerNotFound") == 0)
        return mm_error_set(err, -ENOENT, "azure://%s/%s: container not found", a->account,
                            a->container);
    if (strcmp(ecode, "BlobNotFound") == 0)
        return mm_error_set(err, -ENOENT, "%s: blob not found", r->what);
    if (strcmp(ecode, "ResourceNotFound") == 0 || strcmp(ecode, "AccountNotFound") == 0 ||
        (code == 404 && !*ecode)) {
        if (a->auth == AZURE_ANONYMOUS)
            return mm_error_set(err, -ENOENT,
                                "%s: not found (%s; anonymous access finds only a public "
                                "container: give account_key, connection_string or sas_token)",
                                r->what, *ecode ? ecode : "HTTP 404");
        return mm_error_set(err, -ENOENT, "%s: not found (%s)", r->what,
                            *ecode ? ecode : "HTTP 404");
    }
    if (code == 401 || code == 403) {
        if (a->auth == AZURE_ANONYMOUS)
            return mm_error_set(err, -EACCES,
                                "%s: anonymous access refused (%s): give account_key, "
                                "connection_string or sas_token",
                                r->what, *ecode ? ecode : "HTTP 403");
        return mm_error_set(err, -EACCES, "%s: credentials refused (%s): check %s%s", r->what,
                            *ecode ? ecode : (code == 401 ? "HTTP 401" : "HTTP 403"), a->cred_field,
                            a->auth == AZURE_SHARED_KEY && strcmp(a->cred_field, "account_key") == 0
                                ? " and account_name"
                                : "");
    }
    return mm_error_set(err, -EIO, "%s: HTTP %ld%s%s%s", r->what, code, *ecode ? " (" : "", ecode,
                        *ecode ? ")" : "");
}

static int start_listing(struct azpull *p, const char *marker, struct mm_error *err);

static void files_done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct azpull *p = arg;
    struct mm_error e;
    p->op = NULL;
    if (status == -ENOENT && p->list_code[0]) {
        finish(p,
               mm_error_set(&e, -EACCES,
                            "azure://%s/%s/%s: no such blob, and listing the container "
                            "anonymously is refused (%s): give account_key, connection_string "
                            "or sas_token",
                            p->acct.account, p->acct.container, p->path, p->list_code),
               &e, 0);
        return;
    }
    finish(p, status, err, bytes);
}

static void files_progress(uint64_t done, uint64_t total, void *arg)
{
    struct azpull *p = arg;
    if (p->progress)
        p->progress(done, total, p->arg);
}

static int add_file(struct azpull *p, const char *blob, const char *rel, uint64_t size,
                    const char *md5, struct mm_error *err)
{
    if (p->n_files >= AZURE_MAX_BLOBS)
        return mm_error_set(err, -EFBIG, "azure://%s/%s/%s: more than %u blobs", p->acct.account,
                            p->acct.container, p->path, AZURE_MAX_BLOBS);
    if (p->n_files == p->cap_files) {
        size_t cap = p->cap_files ? p->cap_files * 2 : 16;
        struct azfile *f = realloc(p->files, cap * sizeof(*f));
        if (!f)
            return mm_error_set(err, -ENOMEM, "out of memory");
        p->files = f;
        p->cap_files = cap;
    }
    struct azfile *f = &p->files[p->n_files];
    memset(f, 0, sizeof(*f));
    struct mm_buf u = {0}, w = {0};
    f->rel = dup_s(rel);
    f->req.blob = dup_s(blob);
    f->req.p = p;
    if (!f->rel || !f->req.blob || mm_buf_printf(&u, "%s/", p->acct.endpoint) ||
        remote_pct_encode(&u, p->acct.container, false) || mm_buf_append(&u, "/", 1) ||
        remote_pct_encode(&u, blob, true) ||
        mm_buf_printf(&w, "azure://%s/%s/%s", p->acct.account, p->acct.container, blob)) {
        free(f->rel);
        free(f->req.blob);
        mm_buf_free(&u);
        mm_buf_free(&w);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    f->req.url = u.data;
    f->req.what = w.data;
    f->size = size;
    if (md5)
        memcpy(f->md5, md5, 33);
    p->n_files++;
    return 0;
}

static int start_download(struct azpull *p, struct mm_error *err)
{
    struct dl_file *fs = calloc(p->n_files, sizeof(*fs));
    if (!fs)
        return mm_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < p->n_files; i++) {
        struct azfile *f = &p->files[i];
        fs[i] = (struct dl_file){
            .rel = f->rel,
            .size = f->size,
            .md5_hex = f->md5,
            .req = {.prepare = prepare,
                    .http_error = http_error,
                    .arg = &f->req,
                    .what = f->req.what},
        };
    }
    int rc = dl_files(p->dl, p->dirfd, fs, p->n_files, files_progress, files_done, p, &p->op, err);
    free(fs);
    return rc;
}

struct page_scan {
    struct azpull *p;
    struct mm_error *err;
    bool exact; /* probing: the blob named path exists and is not empty */
    char exact_md5[33];
    uint64_t exact_size;
    char name[AZURE_NAME_MAX];
};

static int scan_blob(const struct xml_span *content, void *arg)
{
    struct page_scan *s = arg;
    struct azpull *p = s->p;
    char len_text[32], md5_text[64];
    int rc = xml_text(content->p, content->len, "Name", s->name, sizeof(s->name), NULL);
    if (rc)
        return mm_error_set(s->err, -EPROTO, "azure://%s/%s: a listed blob has %s", p->acct.account,
                            p->acct.container, rc == -E2BIG ? "too long a name" : "no name");
    if (xml_text(content->p, content->len, "Content-Length", len_text, sizeof(len_text), NULL))
        return mm_error_set(s->err, -EPROTO, "azure://%s/%s: blob %s is listed without a length",
                            p->acct.account, p->acct.container, s->name);
    char *end;
    errno = 0;
    unsigned long long size = strtoull(len_text, &end, 10);
    if (errno || *end || !isdigit((unsigned char)len_text[0]))
        return mm_error_set(s->err, -EPROTO, "azure://%s/%s: blob %s has a bad length",
                            p->acct.account, p->acct.container, s->name);
    char md5[33] = "";
    if (xml_text(content->p, content->len, "Content-MD5", md5_text, sizeof(md5_text), NULL) == 0)
        remote_md5_hex(md5_text, md5); /* "" when malformed: not checked */

    if (p->probing) {
        if (strcmp(s->name, p->path) == 0 && size > 0) {
            s->exact = true;
            s->exact_size = size;
            memcpy(s->exact_md5, md5, sizeof(md5));
        }
        return 0;
    }
    size_t pl = strlen(p->prefix), nl = strlen(s->name);
    if (nl <= pl || strncmp(s->name, p->prefix, pl) != 0 || s->name[nl - 1] == '/' || size == 0)
        return 0; /* not ours (a server ignoring the prefix), a folder marker, or empty */
    struct mm_buf rel = {0};
    if (mm_buf_printf(&rel, "%s/%s", p->base, s->name + pl))
        return mm_error_set(s->err, -ENOMEM, "out of memory");
    rc = add_file(p, s->name, rel.data, size, md5, s->err);
    mm_buf_free(&rel);
    return rc;
}

static void listed(int status, const struct mm_error *err, long http_code, const char *body,
                   size_t len, void *arg)
{
    struct azpull *p = arg;
    struct mm_error e = {0};
    p->op = NULL;
    if (status && p->probing && p->acct.auth == AZURE_ANONYMOUS && http_code != 0 &&
        (status == -EACCES || status == -ENOENT) &&
        strcmp(p->last_code, "ContainerNotFound") != 0) {
        /* A container whose public access is "blob" lets anyone read a blob but not list
         * them: try the path as one blob, of a length its answer tells. */
        if (p->last_code[0])
            snprintf(p->list_code, sizeof(p->list_code), "%s", p->last_code);
        else
            snprintf(p->list_code, sizeof(p->list_code), "HTTP %ld", http_code);
        int rc = add_file(p, p->path, p->base, UINT64_MAX, NULL, &e);
        if (rc || (rc = start_download(p, &e)))
            finish(p, rc, &e, 0);
        return;
    }
    if (status) {
        finish(p, status, err, 0);
        return;
    }
    struct page_scan *s = calloc(1, sizeof(*s));
    if (!s) {
        finish(p, mm_error_set(&e, -ENOMEM, "out of memory"), &e, 0);
        return;
    }
    s->p = p;
    s->err = &e;
    int rc = xml_each(body, len, "Blob", scan_blob, s);
    if (rc && !e.code)
        mm_error_set(&e, -EPROTO, "azure://%s/%s: the blob listing is not well-formed XML",
                     p->acct.account, p->acct.container);
    if (rc) {
        free(s);
        finish(p, e.code, &e, 0);
        return;
    }
    if (p->probing) {
        p->probing = false;
        if (s->exact) {
            rc = add_file(p, p->path, p->base, s->exact_size, s->exact_md5, &e);
            free(s);
            if (rc || (rc = start_download(p, &e)))
                finish(p, rc, &e, 0);
            return;
        }
        free(s);
        if ((rc = start_listing(p, NULL, &e)))
            finish(p, rc, &e, 0);
        return;
    }
    free(s);
    char *marker = malloc(AZURE_NAME_MAX);
    if (!marker) {
        finish(p, mm_error_set(&e, -ENOMEM, "out of memory"), &e, 0);
        return;
    }
    rc = xml_text(body, len, "NextMarker", marker, AZURE_NAME_MAX, NULL);
    if (rc == 0 && *marker) {
        if (++p->pages >= AZURE_MAX_PAGES) {
            free(marker);
            finish(p,
                   mm_error_set(&e, -EFBIG, "azure://%s/%s/%s: more than %u listing pages",
                                p->acct.account, p->acct.container, p->path, AZURE_MAX_PAGES),
                   &e, 0);
            return;
        }
        rc = start_listing(p, marker, &e);
        free(marker);
        if (rc)
            finish(p, rc, &e, 0);
        return;
    }
    free(marker);
    if (rc != 0 && rc != -ENOENT) {
        finish(p,
               mm_error_set(&e, -EPROTO, "azure://%s/%s: a bad NextMarker in the blob listing",
                            p->acct.account, p->acct.container),
               &e, 0);
        return;
    }
    if (p->n_files == 0) {
        finish(p,
               mm_error_set(&e, -ENOENT,
                            "azure://%s/%s/%s: no blob of that name, and none under %s",
                            p->acct.account, p->acct.container, p->path, p->prefix),
               &e, 0);
        return;
    }
    if ((rc = start_download(p, &e)))
        finish(p, rc, &e, 0);
}

/* List Blobs (flat): probing, the first blob at or after path (maxresults=1: a blob named
 * path exactly sorts first among those it prefixes); else a page of those under path/. */
static int start_listing(struct azpull *p, const char *marker, struct mm_error *err)
{
    struct mm_buf u = {0}, w = {0};
    azreq_clear(&p->list);
    p->list.p = p;
    if (mm_buf_printf(&u, "%s/", p->acct.endpoint) ||
        remote_pct_encode(&u, p->acct.container, false) ||
        mm_buf_printf(&u, "?restype=container&comp=list&prefix=") ||
        remote_pct_encode(&u, p->probing ? p->path : p->prefix, false) ||
        mm_buf_printf(&u, "&maxresults=%u",
                      p->probing               ? 1u
                      : p->acct.list_page_size ? p->acct.list_page_size
                                               : 5000u))
        goto nomem;
    if (marker && *marker &&
        (mm_buf_printf(&u, "&marker=") || remote_pct_encode(&u, marker, false)))
        goto nomem;
    if (mm_buf_printf(&w, "azure://%s/%s/%s", p->acct.account, p->acct.container, p->path))
        goto nomem;
    p->list.url = u.data;
    p->list.what = w.data;
    struct dl_request req = {
        .prepare = prepare, .http_error = http_error, .arg = &p->list, .what = p->list.what};
    return dl_text(p->dl, &req, AZURE_LIST_MAX_BODY, listed, p, &p->op, err);
nomem:
    mm_buf_free(&u);
    mm_buf_free(&w);
    return mm_error_set(err, -ENOMEM, "out of memory");
}

static int pull(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err)
{
    (void)state;
    if (out)
        *out = NULL;
    struct azpull *p = calloc(1, sizeof(*p));
    if (!p)
        return mm_error_set(err, -ENOMEM, "out of memory");
    int rc = azure_account_from_config(src->cfg, src->key, &p->acct, err);
    if (rc) {
        free(p);
        return rc;
    }
    p->dl = dl;
    p->dirfd = dirfd;
    p->progress = progress;
    p->cb = cb;
    p->arg = arg;
    p->probing = true;
    const char *path = src->path ? src->path : "";
    while (*path == '/')
        path++;
    size_t n = strlen(path);
    while (n && path[n - 1] == '/')
        n--;
    if (!(p->storage_key = dup_s(src->key ? src->key : "")) || !(p->path = dup_n(path, n)) ||
        !(p->prefix = malloc(n + 2))) {
        pull_free(p);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    snprintf(p->prefix, n + 2, "%s/", p->path);
    const char *slash = strrchr(p->path, '/');
    p->base = slash ? slash + 1 : p->path;
    if (n == 0 || strcmp(p->base, ".") == 0 || strcmp(p->base, "..") == 0) {
        rc = mm_error_set(err, -EINVAL, "azure://%s/%s: the storage path names no blob",
                          p->acct.account, p->acct.container);
        goto fail;
    }
    if ((rc = start_listing(p, NULL, err)))
        goto fail;
    if (out)
        *out = p;
    return 0;
fail:
    if (p->storage_key && *p->storage_key) {
        char who[300];
        mm_error_prefix(err, "%s: ", remote_key_name(p->storage_key, who, sizeof(who)));
    }
    pull_free(p);
    return rc;
}

static void cancel(void *pull_)
{
    struct azpull *p = pull_;
    if (!p)
        return;
    dl_cancel(p->op);
    pull_free(p);
}

const struct remote_provider remote_azure = {.type = "azure", .pull = pull, .cancel = cancel};
