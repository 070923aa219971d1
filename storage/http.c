/* http.c - the http provider (remote.h): one object read with GET from <url>/<path>.
 *
 * Secret fields (canonical names, stcfg.h):
 *   url                 required: http:// or https://, the base the path is appended to (a
 *                       query in it, a pre-signed URL's, is kept after the path)
 *   headers             request headers: a JSON object of strings, given as an object or as a
 *                       string holding its JSON text; at most 64, names of token characters,
 *                       values without control characters (Host, Content-Length, Transfer-
 *                       Encoding and Connection are refused)
 *   certificate         PEM text of a CA to trust instead of the system's
 *   client_certificate  PEM text of a client certificate, with
 *   client_key          PEM text of its (unencrypted) key: both or neither
 *
 * The model is one file named after the path's last component (the URL's when the path is
 * empty). A directory cannot be listed over plain HTTP: a path ending in '/' is refused.
 * The length is the answer's Content-Length when it has one.
 *
 * Errors (each naming the storage key and the URL without its query): -EACCES the server
 * refused (401/403: "check headers / client_certificate of storage key 'K'"), -ENOENT not
 * found (404 or 410), -EINVAL a missing or bad field (which), -EPROTO TLS (the server's
 * certificate not trusted by certificate, or the client certificate refused), and download.h's.
 * No header value, key or query appears in a message. */
#include "mm/remote.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mm/log.h"

#define MAX_HEADERS 64
#define MAX_HEADER_LEN 8192
#define MAX_PATH_LEN 4096

struct http_pull {
    char *key;
    char *url;      /* the request's URL, query included */
    char *what;     /* the URL without its query */
    char *rel;      /* the file's name */
    char **headers; /* "Name: value" lines */
    size_t n_headers;
    char *certificate, *client_certificate, *client_key;
    dl_progress_cb progress;
    remote_done_cb cb;
    void *arg;
    struct dl_op *op;
};

static void pull_free(struct http_pull *p)
{
    if (!p)
        return;
    free(p->key), free(p->url), free(p->what), free(p->rel);
    for (size_t i = 0; i < p->n_headers; i++)
        remote_free_secret(p->headers[i]);
    free(p->headers);
    free(p->certificate), free(p->client_certificate);
    remote_free_secret(p->client_key);
    free(p);
}

static bool token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The headers field: an object of strings, or a string holding one. */
static int take_headers(struct http_pull *p, const cJSON *cfg, const char *name,
                        struct mm_error *err)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(cfg, "headers");
    cJSON *parsed = NULL;
    int rc = 0;
    if (!h || (cJSON_IsString(h) && !h->valuestring[0]))
        return 0;
    if (cJSON_IsString(h)) {
        parsed = cJSON_Parse(h->valuestring);
        h = parsed;
    }
    if (!cJSON_IsObject(h)) {
        rc = mm_error_set(err, -EINVAL, "%s: headers is not a JSON object of strings", name);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(h);
    if (n > MAX_HEADERS) {
        rc = mm_error_set(err, -EINVAL, "%s: headers has more than %d fields", name, MAX_HEADERS);
        goto out;
    }
    p->headers = calloc(n ? n : 1, sizeof *p->headers);
    if (!p->headers) {
        rc = mm_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, h)
    {
        const char *hn = it->string;
        char shown[80];
        mm_log_escape(shown, sizeof shown, hn, strlen(hn));
        bool ok = hn[0] && cJSON_IsString(it);
        for (const char *c = hn; ok && *c; c++)
            ok = token_char((unsigned char)*c);
        if (!ok) {
            rc = mm_error_set(err, -EINVAL,
                              "%s: headers: '%s' is not a header name with a "
                              "string value",
                              name, shown);
            goto out;
        }
        static const char *const refused[] = {"host", "content-length", "transfer-encoding",
                                              "connection"};
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
            if (strcasecmp(hn, refused[i]) == 0) {
                rc = mm_error_set(err, -EINVAL, "%s: headers: '%s' may not be set", name, shown);
                goto out;
            }
        }
        const char *v = it->valuestring;
        for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
            if ((*c < 0x20 && *c != '\t') || *c == 0x7f) {
                rc = mm_error_set(err, -EINVAL,
                                  "%s: headers: the value of '%s' holds a "
                                  "control character",
                                  name, shown);
                goto out;
            }
        }
        size_t len = strlen(hn) + strlen(v) + 3;
        if (len > MAX_HEADER_LEN) {
            rc = mm_error_set(err, -EINVAL, "%s: headers: '%s' is over %d bytes", name, shown,
                              MAX_HEADER_LEN);
            goto out;
        }
        char *line = malloc(len);
        if (!line) {
            rc = mm_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        /* "Name:" alone would make curl drop the header: an empty value is sent as "Name;" */
        size_t nl = strlen(hn), vl = strlen(v);
        memcpy(line, hn, nl);
        if (vl) {
            memcpy(line + nl, ": ", 2);
            memcpy(line + nl + 2, v, vl + 1);
        } else {
            memcpy(line + nl, ";", 2);
        }
        p->headers[p->n_headers++] = line;
    }
out:
    cJSON_Delete(parsed);
    return rc;
}

/* Percent-encode what may not stand in a URL's path as it is; '/' and '%' stay (a path may be
 * written encoded already). */
static int append_path(char *out, size_t size, size_t *at, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool plain = isalnum(*c) || strchr("-._~!$&'()*+,;=:@/%", *c);
        if (*at + 4 > size)
            return -ENAMETOOLONG;
        if (plain)
            out[(*at)++] = (char)*c;
        else
            *at += (size_t)snprintf(out + *at, size - *at, "%%%02X", *c);
    }
    out[*at] = '\0';
    return 0;
}

/* url + "/" + path, the query after; what = the same without the query; rel = the last
 * component. */
static int make_url(struct http_pull *p, const char *base, const char *path, const char *name,
                    struct mm_error *err)
{
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return mm_error_set(err, -EINVAL, "%s: url is not an http:// or https:// URL", name);
    for (const unsigned char *c = (const unsigned char *)base; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return mm_error_set(err, -EINVAL, "%s: url holds a space or a control character", name);
    size_t blen = strcspn(base, "?#");
    const char *query = base[blen] == '?' ? base + blen : "";
    size_t qlen = strcspn(query, "#");
    while (*path == '/')
        path++;
    size_t plen = strlen(path);
    if (plen > MAX_PATH_LEN)
        return mm_error_set(err, -EINVAL, "%s: the path is over %d bytes", name, MAX_PATH_LEN);
    size_t size = blen + 1 + plen * 3 + qlen + 1;
    char *u = malloc(size);
    if (!u)
        return mm_error_set(err, -ENOMEM, "out of memory");
    memcpy(u, base, blen);
    size_t at = blen;
    while (at > 0 && u[at - 1] == '/')
        at--;
    const char *host = strstr(base, "://") + 3;
    if (at <= (size_t)(host - base)) {
        free(u);
        return mm_error_set(err, -EINVAL, "%s: url has no host", name);
    }
    if (plen > 0) {
        u[at++] = '/';
        u[at] = '\0';
        append_path(u, size, &at, path); /* size allows every byte encoded */
    }
    u[at] = '\0';
    /* what names the URL without its query and without a user:password@ in it */
    size_t host_off = (size_t)(host - base);
    size_t authority = strcspn(u + host_off, "/");
    const char *at_sign =
        memrchr(u + host_off, '@', authority < at - host_off ? authority : at - host_off);
    size_t skip = at_sign ? (size_t)(at_sign + 1 - (u + host_off)) : 0;
    p->what = malloc(at - skip + 1);
    if (p->what) {
        memcpy(p->what, u, host_off);
        memcpy(p->what + host_off, u + host_off + skip, at - host_off - skip);
        p->what[at - skip] = '\0';
    }
    memcpy(u + at, query, qlen);
    u[at + qlen] = '\0';
    p->url = u;
    if (!p->what)
        return mm_error_set(err, -ENOMEM, "out of memory");
    /* the file's name: the last component of the path, else of the URL's path */
    const char *what_host = p->what + host_off;
    const char *last = strrchr(what_host, '/');
    const char *tail = last ? last + 1 : "";
    if (!tail[0] || strcmp(tail, ".") == 0 || strcmp(tail, "..") == 0)
        return mm_error_set(err, -EINVAL, "%s: %s names no file", name, p->what);
    p->rel = strdup(tail);
    if (!p->rel)
        return mm_error_set(err, -ENOMEM, "out of memory");
    /* A name written percent-encoded is stored decoded; one that decodes to "/", "..", a NUL
     * or a control character is refused. */
    char *w = p->rel;
    for (const char *r = p->rel; *r; r++) {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    bool bad = w == p->rel || strcmp(p->rel, ".") == 0 || strcmp(p->rel, "..") == 0 ||
               (size_t)(w - p->rel) != strlen(p->rel);
    for (const unsigned char *c = (const unsigned char *)p->rel; !bad && *c; c++)
        bad = *c < 0x20 || *c == 0x7f || *c == '/';
    if (bad)
        return mm_error_set(err, -EINVAL, "%s: %s: its last component is not a file name", name,
                            p->what);
    return 0;
}

static int blob(CURL *easy, CURLoption opt, const char *pem)
{
    struct curl_blob b = {.data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    return curl_easy_setopt(easy, opt, &b) == CURLE_OK ? 0 : -1;
}

static int prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct http_pull *p = arg;
    struct curl_slist *h = NULL;
    for (size_t i = 0; i < p->n_headers; i++) {
        struct curl_slist *n = curl_slist_append(h, p->headers[i]);
        if (!n) {
            curl_slist_free_all(h);
            return mm_error_set(err, -ENOMEM, "out of memory");
        }
        h = n;
    }
    *headers = h;
    bool ok = curl_easy_setopt(easy, CURLOPT_URL, p->url) == CURLE_OK;
    if (ok && p->certificate)
        ok = blob(easy, CURLOPT_CAINFO_BLOB, p->certificate) == 0;
    if (ok && p->client_certificate)
        ok = blob(easy, CURLOPT_SSLCERT_BLOB, p->client_certificate) == 0 &&
             curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM") == CURLE_OK &&
             blob(easy, CURLOPT_SSLKEY_BLOB, p->client_key) == 0 &&
             curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM") == CURLE_OK;
    if (!ok)
        return mm_error_set(err, -ENOTSUP,
                            "%s: libcurl refused the request's options (TLS "
                            "blobs need libcurl 7.77 with OpenSSL)",
                            p->what);
    return 0;
}

static int http_error(long code, const char *body, size_t len, void *arg, struct mm_error *err)
{
    (void)body, (void)len; /* a body may echo what was sent */
    struct http_pull *p = arg;
    char name[300];
    remote_key_name(p->key, name, sizeof name);
    if (code == 401 || code == 403)
        return mm_error_set(err, -EACCES, "%s: refused (HTTP %ld): check headers%s of %s", p->what,
                            code, p->client_certificate ? " and client_certificate" : "", name);
    if (code == 404 || code == 410)
        return mm_error_set(err, -ENOENT, "%s: not found (HTTP %ld)", p->what, code);
    return mm_error_set(err, -EIO, "%s: HTTP %ld", p->what, code);
}

/* dl calls progress with the job's arg, the pull: hand it on with the caller's. */
static void on_progress(uint64_t done_bytes, uint64_t total, void *arg)
{
    struct http_pull *p = arg;
    p->progress(done_bytes, total, p->arg);
}

static void done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct http_pull *p = arg;
    remote_done_cb cb = p->cb;
    void *cb_arg = p->arg;
    struct mm_error e = {0};
    char name[300];
    remote_key_name(p->key, name, sizeof name);
    bool tls = status == -EPROTO;
    bool client = p->client_certificate != NULL;
    pull_free(p);
    if (status < 0) {
        const char *hint = !tls     ? ""
                           : client ? " (check certificate and client_certificate)"
                                    : " (check certificate, and client_certificate if the "
                                      "server requires one)";
        mm_error_set(&e, status, "%s: %s%s", name, err ? err->msg : mm_strerror(status), hint);
        cb(status, &e, 0, cb_arg);
        return;
    }
    cb(0, NULL, bytes, cb_arg);
}

static int pull(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err)
{
    (void)state;
    char name[300];
    remote_key_name(src->key, name, sizeof name);
    if (!cb || dirfd < 0 || !src->path)
        return mm_error_set(err, -EINVAL, "http: pull called without its arguments");
    const char *url = remote_field(src->cfg, "url");
    const char *ca = remote_field(src->cfg, "certificate");
    const char *cert = remote_field(src->cfg, "client_certificate");
    const char *key = remote_field(src->cfg, "client_key");
    if (!url)
        return mm_error_set(err, -EINVAL, "%s: no url", name);
    if (!cert != !key)
        return mm_error_set(err, -EINVAL,
                            "%s: client_certificate and client_key go together "
                            "(%s is missing)",
                            name, cert ? "client_key" : "client_certificate");
    size_t plen = strlen(src->path);
    if (plen > 0 && src->path[plen - 1] == '/')
        return mm_error_set(err, -EINVAL,
                            "%s: %s names a directory: a directory cannot be "
                            "listed over plain HTTP (name one file)",
                            name, src->path);
    struct http_pull *p = calloc(1, sizeof *p);
    if (!p)
        return mm_error_set(err, -ENOMEM, "out of memory");
    p->progress = progress;
    p->cb = cb;
    p->arg = arg;
    p->key = strdup(src->key ? src->key : "");
    p->certificate = ca ? strdup(ca) : NULL;
    p->client_certificate = cert ? strdup(cert) : NULL;
    p->client_key = key ? strdup(key) : NULL;
    if (!p->key || (ca && !p->certificate) || (cert && !p->client_certificate) ||
        (key && !p->client_key)) {
        pull_free(p);
        return mm_error_set(err, -ENOMEM, "out of memory");
    }
    int rc = make_url(p, url, src->path, name, err);
    if (rc == 0)
        rc = take_headers(p, src->cfg, name, err);
    if (rc < 0) {
        pull_free(p);
        return rc;
    }
    struct dl_file file = {
        .rel = p->rel,
        .size = UINT64_MAX,
        .md5_hex = NULL,
        .req = {.prepare = prepare, .http_error = http_error, .arg = p, .what = p->what}};
    rc = dl_files(dl, dirfd, &file, 1, progress ? on_progress : NULL, done, p, &p->op, err);
    if (rc < 0) {
        mm_error_prefix(err, "%s: ", name);
        pull_free(p);
        return rc;
    }
    if (out)
        *out = p;
    return 0;
}

static void cancel(void *handle)
{
    struct http_pull *p = handle;
    if (!p)
        return;
    dl_cancel(p->op);
    pull_free(p);
}

const struct remote_provider remote_http = {.type = "http", .pull = pull, .cancel = cancel};
