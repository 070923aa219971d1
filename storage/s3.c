/* s3.c - the s3 object-store provider (see remote.h): Amazon S3 and stores speaking its API
 * (MinIO, Ceph RGW, IBM COS, s3rver), path-style, signed with our SigV4 (sigv4.h).
 *
 * The secret's fields (canonical names, stcfg.h):
 *   bucket             required
 *   access_key_id      with secret_access_key: both, or neither (anonymous: unsigned)
 *   secret_access_key
 *   region             default us-east-1 (part of the signature)
 *   endpoint_url       default https://s3.<region>.amazonaws.com; http:// or https:// (no
 *                      scheme = https), host[:port], optionally a base path; no user:password@
 *   certificate        PEM text of the CA that signed the endpoint's certificate (replaces
 *                      the system's CAs for this store)
 *   list_page_size     for tests: keys per listing page, 1..1000 (default 1000)
 * Requests are path-style: <endpoint>/<bucket>/<key>.
 *
 * A path is one object if a key equals it exactly (and is not empty), else every object under
 * "<path>/" (ListObjectsV2 with continuation tokens; keys ending in '/' and zero-byte objects
 * skipped). The probe is a listing of prefix <path> with max-keys=1: S3 lists keys in UTF-8
 * binary order, so an exact match comes first. An ETag of 32 hex digits is the object's MD5
 * and is checked; a multipart ETag ("...-N") is not.
 *
 * Errors a user sees (each names the storage key and s3://bucket/path):
 *   -EACCES  InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, a 403: "check
 *            access_key_id and secret_access_key of storage key 'K'" (anonymous: "set ...")
 *   -ENOENT  NoSuchBucket ("bucket 'B' not found at <endpoint>"), NoSuchKey, or no object
 *            at the path nor under it
 *   -EINVAL  a field missing or bad (named, never its value), a region mismatch
 *            (AuthorizationHeaderMalformed, PermanentRedirect: "check region")
 *   -EFBIG   more than 100,000 objects under the path
 *   -EIO     another HTTP error (its Code and Message), and download.h's errors.
 * No message or log holds access_key_id's or secret_access_key's value. */
#include "mm/remote.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/sigv4.h"
#include "mm/xml.h"

#define MAX_OBJECTS 100000
#define MAX_PAGES 20000
#define MAX_LIST_BODY (16u << 20)
#define MAX_KEY 1024   /* S3's own limit on a key, in bytes */
#define MAX_TOKEN 4096 /* a continuation token */

struct s3_pull;

/* One request: the pull it belongs to, its canonical path and query (as sent). */
struct s3_req {
    struct s3_pull *p;
    char *uri;   /* encoded path, "/<base path>/<bucket>[/<key>]" */
    char *query; /* sorted, encoded; "" for none */
    char what[200];
};

enum phase { PHASE_PROBE, PHASE_LIST, PHASE_FILES };

struct s3_pull {
    struct dl *dl;
    int dirfd;
    dl_progress_cb progress;
    remote_done_cb cb;
    void *arg;
    char who[300];   /* "storage key 'K'" */
    char *access_key_id; /* NULL: anonymous */
    char *secret;
    char *region;
    char *origin;    /* "https://host:port" */
    char *host;      /* "host:port" as in the URL, for the Host header */
    char *base_path; /* "" or "/a/b" */
    char *bucket;
    char *path;      /* without leading or trailing '/' */
    char *base;      /* its last component */
    char *cert;      /* PEM or NULL */
    unsigned page_size;
    enum phase phase;
    struct dl_op *op;
    struct s3_req list;
    char *token;
    unsigned pages;
    /* The objects found. */
    struct dl_file *files;
    struct s3_req *freqs;
    size_t n, cap;
};

static void req_clear(struct s3_req *r)
{
    free(r->uri);
    free(r->query);
    r->uri = r->query = NULL;
}

static void pull_free(struct s3_pull *p)
{
    if (!p)
        return;
    req_clear(&p->list);
    for (size_t i = 0; i < p->n; i++) {
        free((char *)p->files[i].rel);
        free((char *)p->files[i].md5_hex);
        req_clear(&p->freqs[i]);
    }
    free(p->files);
    free(p->freqs);
    free(p->access_key_id);
    if (p->secret) {
        memset(p->secret, 0, strlen(p->secret));
        free(p->secret);
    }
    free(p->region);
    free(p->origin);
    free(p->host);
    free(p->base_path);
    free(p->bucket);
    free(p->path);
    free(p->base);
    free(p->cert);
    free(p->token);
    free(p);
}

/* The pull is freed, then its callback runs (which may free the dl). A message from the
 * downloader (a transport error) is given the storage key it lacks. */
static void finish(struct s3_pull *p, int status, const struct mm_error *err, uint64_t bytes)
{
    remote_done_cb cb = p->cb;
    void *arg = p->arg;
    struct mm_error e;
    if (err && status < 0 && !strstr(err->msg, p->who)) {
        e = *err;
        size_t l = strnlen(e.msg, sizeof(e.msg) - 1);
        snprintf(e.msg + l, sizeof(e.msg) - l, " (%s)", p->who);
        err = &e;
    }
    pull_free(p);
    cb(status, err, bytes, arg);
}

static void fail(struct s3_pull *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct s3_pull *p, int code, const char *fmt, ...)
{
    struct mm_error err = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    finish(p, code, &err, 0);
}

/* ---- the config ---- */

static bool region_ok(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 64)
        return false;
    for (; *r; r++) {
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-'))
            return false;
    }
    return true;
}

static bool bucket_ok(const char *b)
{
    size_t n = strlen(b);
    if (n == 0 || n > 255)
        return false;
    for (; *b; b++) {
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9') ||
              *b == '-' || *b == '.' || *b == '_'))
            return false;
    }
    return true;
}

/* endpoint_url into origin, host and base path. 0 or -EINVAL. */
static int parse_endpoint(struct s3_pull *p, const char *url)
{
    const char *scheme = "https";
    const char *rest = url;
    if (strncmp(url, "https://", 8) == 0) {
        rest = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        scheme = "http";
        rest = url + 7;
    } else if (strstr(url, "://")) {
        return -EINVAL;
    }
    size_t hl = strcspn(rest, "/?#");
    if (hl == 0 || hl > 262 || memchr(rest, '@', hl) || rest[hl] == '?' || rest[hl] == '#')
        return -EINVAL;
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= ' ' || c >= 0x7f)
            return -EINVAL;
    }
    const char *path = rest + hl;
    size_t pl = strlen(path);
    while (pl && path[pl - 1] == '/')
        pl--;
    if (strpbrk(path, "?# \t\r\n"))
        return -EINVAL;
    p->host = strndup(rest, hl);
    p->base_path = strndup(path, pl);
    size_t ol = strlen(scheme) + 3 + hl + 1;
    p->origin = malloc(ol);
    if (!p->host || !p->base_path || !p->origin)
        return -ENOMEM;
    snprintf(p->origin, ol, "%s://%.*s", scheme, (int)hl, rest);
    return 0;
}

/* The storage path without its leading and trailing '/'; no empty, "." or ".." component. */
static int parse_path(struct s3_pull *p, const char *path)
{
    while (*path == '/')
        path++;
    size_t n = strlen(path);
    while (n && path[n - 1] == '/')
        n--;
    if (n == 0 || n > MAX_KEY)
        return -EINVAL;
    const char *c = path, *end = path + n;
    while (c < end) {
        const char *slash = memchr(c, '/', (size_t)(end - c));
        size_t cl = slash ? (size_t)(slash - c) : (size_t)(end - c);
        if (cl == 0 || (cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.'))
            return -EINVAL;
        if (!slash) {
            if (!(p->base = strndup(c, cl)))
                return -ENOMEM;
        }
        c += cl + 1;
    }
    if (memchr(path, '\0', n) || !(p->path = strndup(path, n)))
        return -ENOMEM;
    return 0;
}

/* ---- requests ---- */

/* The canonical path of the bucket, or of key within it. */
static char *object_uri(const struct s3_pull *p, const char *key)
{
    size_t kl = key ? strlen(key) : 0;
    size_t cap = strlen(p->base_path) + 1 + strlen(p->bucket) * 3 + 1 + kl * 3 + 1;
    char *u = malloc(cap);
    if (!u)
        return NULL;
    size_t o = (size_t)snprintf(u, cap, "%s/", p->base_path), len;
    if (sigv4_encode(p->bucket, strlen(p->bucket), false, u + o, cap - o, &len) < 0)
        goto bad;
    o += len;
    if (key) {
        u[o++] = '/';
        if (sigv4_encode(key, kl, true, u + o, cap - o, &len) < 0)
            goto bad;
    }
    return u;
bad:
    free(u);
    return NULL;
}

static int prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct s3_req *r = arg;
    struct s3_pull *p = r->p;
    size_t ul = strlen(p->origin) + strlen(r->uri) + 1 + strlen(r->query) + 1;
    char *url = malloc(ul);
    if (!url)
        return mm_error_set(err, -ENOMEM, "%s: out of memory", r->what);
    snprintf(url, ul, "%s%s%s%s", p->origin, r->uri, r->query[0] ? "?" : "", r->query);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    if (p->cert) {
        struct curl_blob blob = {.data = p->cert, .len = strlen(p->cert),
                                 .flags = CURL_BLOB_COPY};
        curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob);
    }
    char line[1024];
    snprintf(line, sizeof(line), "Host: %s", p->host);
    struct curl_slist *h = curl_slist_append(NULL, line);
    if (p->access_key_id) {
        static const char empty_hash[] =
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        char date[17];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm);
        struct sigv4_header sh[] = {{"host", p->host},
                                    {"x-amz-content-sha256", empty_hash},
                                    {"x-amz-date", date}};
        struct sigv4_input in = {.method = "GET", .canonical_uri = r->uri,
                                 .canonical_query = r->query, .headers = sh, .n_headers = 3,
                                 .payload_hash = empty_hash, .amz_date = date,
                                 .region = p->region, .service = "s3",
                                 .access_key_id = p->access_key_id,
                                 .secret_access_key = p->secret};
        char auth[768];
        int rc = sigv4_authorization(&in, auth, sizeof(auth));
        if (rc < 0) {
            curl_slist_free_all(h);
            return mm_error_set(err, rc == -E2BIG ? -EINVAL : rc,
                                "%s (%s): cannot sign the request: check the lengths of "
                                "access_key_id, secret_access_key and region",
                                r->what, p->who);
        }
        h = h ? curl_slist_append(h, "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb924"
                                     "27ae41e4649b934ca495991b7852b855")
              : NULL;
        snprintf(line, sizeof(line), "x-amz-date: %s", date);
        h = h ? curl_slist_append(h, line) : NULL;
        char ah[800];
        snprintf(ah, sizeof(ah), "Authorization: %s", auth);
        h = h ? curl_slist_append(h, ah) : NULL;
        memset(ah, 0, sizeof(ah));
        memset(auth, 0, sizeof(auth));
    }
    if (!h)
        return mm_error_set(err, -ENOMEM, "%s: out of memory", r->what);
    *headers = h;
    return 0;
}

/* A server's words, for a message: printable ASCII only, bounded. */
static void clean(char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < ' ' || (unsigned char)*s >= 0x7f)
            *s = '?';
    }
}

static int http_error(long code, const char *body, size_t len, void *arg, struct mm_error *err)
{
    struct s3_req *r = arg;
    struct s3_pull *p = r->p;
    char scode[64] = "", smsg[96] = "";
    if (xml_text(body, len, "Code", scode, sizeof(scode), NULL) < 0)
        scode[0] = '\0';
    if (xml_text(body, len, "Message", smsg, sizeof(smsg), NULL) < 0)
        smsg[0] = '\0';
    clean(scode);
    clean(smsg);
    if (!strcmp(scode, "InvalidAccessKeyId") || !strcmp(scode, "SignatureDoesNotMatch") ||
        !strcmp(scode, "InvalidToken") || !strcmp(scode, "ExpiredToken"))
        return mm_error_set(err, -EACCES,
                            "%s: credentials refused (%s): check access_key_id and "
                            "secret_access_key of %s",
                            r->what, scode, p->who);
    if (!strcmp(scode, "AccessDenied") || (code == 403 && !scode[0]) ||
        !strcmp(scode, "AllAccessDisabled")) {
        if (!p->access_key_id)
            return mm_error_set(err, -EACCES,
                                "%s: anonymous access refused: set access_key_id and "
                                "secret_access_key in %s",
                                r->what, p->who);
        return mm_error_set(err, -EACCES,
                            "%s: access denied: check access_key_id and secret_access_key of "
                            "%s, and the bucket's policy",
                            r->what, p->who);
    }
    if (!strcmp(scode, "NoSuchBucket"))
        return mm_error_set(err, -ENOENT, "s3 bucket '%s' not found at %s%s: check bucket of %s",
                            p->bucket, p->origin, p->base_path, p->who);
    if (!strcmp(scode, "NoSuchKey") || (code == 404 && !scode[0]))
        return mm_error_set(err, -ENOENT, "%s: no such object (%s)", r->what, p->who);
    if (!strcmp(scode, "AuthorizationHeaderMalformed") || !strcmp(scode, "PermanentRedirect") ||
        code == 301)
        return mm_error_set(err, -EINVAL,
                            "%s: the bucket is not in region '%s' or not at this endpoint "
                            "(%s): check region and endpoint_url of %s",
                            r->what, p->region, scode[0] ? scode : "HTTP 301", p->who);
    return mm_error_set(err, -EIO, "%s: HTTP %ld%s%s%s%s (%s)", r->what, code,
                        scode[0] ? " " : "", scode, smsg[0] ? ": " : "", smsg, p->who);
}

static void list_done(int status, const struct mm_error *err, long http_code, const char *body,
                      size_t len, void *arg);

/* ListObjectsV2 of prefix, at most max_keys, from p->token if set. 0 or -errno with err. */
static int list_start(struct s3_pull *p, const char *prefix, unsigned max_keys,
                      struct mm_error *err)
{
    req_clear(&p->list);
    p->list.p = p;
    size_t pl = strlen(prefix), tl = p->token ? strlen(p->token) : 0;
    size_t cap = 64 + pl * 3 + tl * 3;
    p->list.uri = object_uri(p, NULL);
    p->list.query = malloc(cap);
    if (!p->list.uri || !p->list.query)
        return mm_error_set(err, -ENOMEM, "s3://%s/%s: out of memory", p->bucket, p->path);
    /* Keys in sorted order: continuation-token, list-type, max-keys, prefix. */
    size_t o = 0, n;
    if (p->token) {
        o += (size_t)snprintf(p->list.query, cap, "continuation-token=");
        sigv4_encode(p->token, tl, false, p->list.query + o, cap - o, &n);
        o += n;
        p->list.query[o++] = '&';
    }
    o += (size_t)snprintf(p->list.query + o, cap - o, "list-type=2&max-keys=%u&prefix=",
                          max_keys);
    sigv4_encode(prefix, pl, false, p->list.query + o, cap - o, &n);
    snprintf(p->list.what, sizeof(p->list.what), "s3://%s/%.150s%s (listing)", p->bucket,
             p->path, p->phase == PHASE_PROBE ? "" : "/");
    struct dl_request req = {.prepare = prepare, .http_error = http_error, .arg = &p->list,
                             .what = p->list.what};
    p->pages++;
    return dl_text(p->dl, &req, MAX_LIST_BODY, list_done, p, &p->op, err);
}

/* One Contents of a listing page. */
struct page {
    struct s3_pull *p;
    struct mm_error *err;
    const char *prefix; /* PHASE_LIST: "<path>/" */
    bool exact;         /* PHASE_PROBE: the path itself, not empty */
};

static int add_file(struct s3_pull *p, const char *rel, uint64_t size, const char *etag,
                    const char *key, struct mm_error *err)
{
    if (p->n == MAX_OBJECTS)
        return mm_error_set(err, -EFBIG, "s3://%s/%s/: more than %d objects (%s)", p->bucket,
                            p->path, MAX_OBJECTS, p->who);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct dl_file *f = realloc(p->files, cap * sizeof(*f));
        if (f)
            p->files = f;
        struct s3_req *r = f ? realloc(p->freqs, cap * sizeof(*r)) : NULL;
        if (!r)
            return mm_error_set(err, -ENOMEM, "s3://%s/%s: out of memory", p->bucket, p->path);
        p->freqs = r;
        p->cap = cap;
    }
    /* The ETag is the MD5 for a simple upload: 32 hex digits, quoted. */
    char md5[33] = "";
    size_t el = strlen(etag);
    if (el >= 2 && etag[0] == '"' && etag[el - 1] == '"') {
        etag++;
        el -= 2;
    }
    if (el == 32 && strspn(etag, "0123456789abcdefABCDEF") >= 32) {
        for (int i = 0; i < 32; i++)
            md5[i] = (char)((etag[i] >= 'A' && etag[i] <= 'F') ? etag[i] - 'A' + 'a' : etag[i]);
    }
    struct s3_req *r = &p->freqs[p->n];
    memset(r, 0, sizeof(*r));
    r->p = p;
    r->uri = object_uri(p, key);
    r->query = strdup("");
    struct dl_file *f = &p->files[p->n];
    memset(f, 0, sizeof(*f));
    f->rel = strdup(rel);
    f->md5_hex = md5[0] ? strdup(md5) : NULL;
    p->n++; /* owned from here, whatever failed */
    if (!r->uri || !r->query || !f->rel || (md5[0] && !f->md5_hex))
        return mm_error_set(err, -ENOMEM, "s3://%s/%s: out of memory", p->bucket, p->path);
    snprintf(r->what, sizeof(r->what), "s3://%s/%.160s", p->bucket, key);
    f->size = size;
    f->req = (struct dl_request){.prepare = prepare, .http_error = http_error, .arg = r,
                                 .what = r->what};
    return 0;
}

static int on_contents(const struct xml_span *c, void *arg)
{
    struct page *pg = arg;
    struct s3_pull *p = pg->p;
    char key[MAX_KEY + 1], size_s[32], etag[80];
    size_t kl;
    int rc = xml_text(c->p, c->len, "Key", key, sizeof(key), &kl);
    if (rc == 0)
        rc = xml_text(c->p, c->len, "Size", size_s, sizeof(size_s), NULL);
    if (rc < 0)
        return mm_error_set(pg->err, -EIO, "s3://%s/%s: a listing entry without a valid Key or "
                            "Size (%s)", p->bucket, p->path, p->who);
    if (xml_text(c->p, c->len, "ETag", etag, sizeof(etag), NULL) < 0)
        etag[0] = '\0';
    char *end;
    errno = 0;
    unsigned long long size = strtoull(size_s, &end, 10);
    if (errno || end == size_s || *end || size_s[0] == '-' || memchr(key, '\0', kl))
        return mm_error_set(pg->err, -EIO, "s3://%s/%s: a listing entry with a bad Key or Size "
                            "(%s)", p->bucket, p->path, p->who);
    if (p->phase == PHASE_PROBE) {
        if (strcmp(key, p->path) == 0 && size > 0) {
            pg->exact = true;
            return add_file(p, p->base, size, etag, key, pg->err);
        }
        return 0;
    }
    size_t pl = strlen(pg->prefix);
    if (kl <= pl || memcmp(key, pg->prefix, pl) != 0)
        return mm_error_set(pg->err, -EIO, "s3://%s/%s/: the listing holds a key outside the "
                            "prefix (%s)", p->bucket, p->path, p->who);
    if (key[kl - 1] == '/' || size == 0)
        return 0; /* a folder marker, or empty */
    /* The key's remainder becomes the file's path under the model's directory: none of its
     * components may be empty, "." or ".." (dl_files refuses them too, naming only the file). */
    const char *rest = key + pl;
    for (const char *s = rest; *s;) {
        size_t cl = strcspn(s, "/");
        if (cl == 0 || (cl == 1 && s[0] == '.') || (cl == 2 && s[0] == '.' && s[1] == '.'))
            return mm_error_set(pg->err, -EINVAL, "s3://%s/%.140s: the key would leave the "
                                "model's directory (%s)", p->bucket, key, p->who);
        s += cl + (s[cl] == '/');
    }
    size_t rl = strlen(p->base) + 1 + strlen(rest) + 1;
    char *rel = malloc(rl);
    if (!rel)
        return mm_error_set(pg->err, -ENOMEM, "out of memory");
    snprintf(rel, rl, "%s/%s", p->base, rest);
    rc = add_file(p, rel, size, etag, key, pg->err);
    free(rel);
    return rc;
}

static void files_progress(uint64_t done, uint64_t total, void *arg)
{
    struct s3_pull *p = arg;
    if (p->progress)
        p->progress(done, total, p->arg);
}

static void files_done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct s3_pull *p = arg;
    p->op = NULL;
    finish(p, status, err, bytes);
}

static int files_start(struct s3_pull *p, struct mm_error *err)
{
    p->phase = PHASE_FILES;
    return dl_files(p->dl, p->dirfd, p->files, p->n, files_progress, files_done, p, &p->op, err);
}

static void list_done(int status, const struct mm_error *err, long http_code, const char *body,
                      size_t len, void *arg)
{
    struct s3_pull *p = arg;
    p->op = NULL;
    if (status < 0) {
        finish(p, status, err, 0);
        return;
    }
    struct mm_error e = {0};
    char prefix[MAX_KEY + 2];
    snprintf(prefix, sizeof(prefix), "%s/", p->path);
    struct page pg = {.p = p, .err = &e, .prefix = prefix};
    int rc = xml_each(body, len, "Contents", on_contents, &pg);
    if (rc < 0) {
        if (!e.code)
            mm_error_set(&e, rc == -EINVAL ? -EIO : rc, "s3://%s/%s: the listing is not valid "
                         "XML (%s)", p->bucket, p->path, p->who);
        finish(p, e.code, &e, 0);
        return;
    }
    if (p->phase == PHASE_PROBE) {
        if (pg.exact) {
            if ((rc = files_start(p, &e)) < 0)
                finish(p, rc, &e, 0);
            return;
        }
        p->phase = PHASE_LIST;
        if ((rc = list_start(p, prefix, p->page_size, &e)) < 0)
            finish(p, rc, &e, 0);
        return;
    }
    char trunc[8] = "", token[MAX_TOKEN + 1];
    if (xml_text(body, len, "IsTruncated", trunc, sizeof(trunc), NULL) < 0)
        trunc[0] = '\0';
    if (strcmp(trunc, "true") == 0) {
        if (xml_text(body, len, "NextContinuationToken", token, sizeof(token), NULL) < 0 ||
            !token[0]) {
            fail(p, -EIO, "s3://%s/%s/: a truncated listing without a valid "
                 "NextContinuationToken (%s)", p->bucket, p->path, p->who);
            return;
        }
        if (p->pages >= MAX_PAGES) {
            fail(p, -EFBIG, "s3://%s/%s/: more than %d listing pages (%s)", p->bucket, p->path,
                 MAX_PAGES, p->who);
            return;
        }
        free(p->token);
        if (!(p->token = strdup(token))) {
            fail(p, -ENOMEM, "out of memory");
            return;
        }
        if ((rc = list_start(p, prefix, p->page_size, &e)) < 0)
            finish(p, rc, &e, 0);
        return;
    }
    if (p->n == 0) {
        fail(p, -ENOENT, "s3://%s/%s: no such object, and no object under s3://%s/%s/ (%s)",
             p->bucket, p->path, p->bucket, p->path, p->who);
        return;
    }
    if ((rc = files_start(p, &e)) < 0)
        finish(p, rc, &e, 0);
}

/* ---- the provider ---- */

static int pull(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err)
{
    (void)state;
    if (out)
        *out = NULL;
    struct s3_pull *p = calloc(1, sizeof(*p));
    if (!p)
        return mm_error_set(err, -ENOMEM, "s3: out of memory");
    p->dl = dl;
    p->dirfd = dirfd;
    p->progress = progress;
    p->cb = cb;
    p->arg = arg;
    remote_key_name(src->key, p->who, sizeof(p->who));
    const cJSON *cfg = src->cfg;
    const char *bucket = remote_field(cfg, "bucket"), *id = remote_field(cfg, "access_key_id"),
               *secret = remote_field(cfg, "secret_access_key"),
               *region = remote_field(cfg, "region"), *endpoint = remote_field(cfg, "endpoint_url"),
               *cert = remote_field(cfg, "certificate"),
               *page = remote_field(cfg, "list_page_size");
    int rc = -EINVAL;
    if (!bucket) {
        mm_error_set(err, rc, "%s: s3 needs bucket", p->who);
        goto fail;
    }
    if (!bucket_ok(bucket)) {
        mm_error_set(err, rc, "%s: bucket is not a valid bucket name", p->who);
        goto fail;
    }
    if (!id != !secret) {
        mm_error_set(err, rc, "%s: %s is set but %s is not (give both, or neither for "
                     "anonymous access)", p->who, id ? "access_key_id" : "secret_access_key",
                     id ? "secret_access_key" : "access_key_id");
        goto fail;
    }
    if (!region)
        region = "us-east-1";
    if (!region_ok(region)) {
        mm_error_set(err, rc, "%s: region is not a region name (lowercase letters, digits, "
                     "'-')", p->who);
        goto fail;
    }
    unsigned long ps = 1000;
    if (page) {
        char *end;
        ps = strtoul(page, &end, 10);
        if (*end || ps < 1 || ps > 1000) {
            mm_error_set(err, rc, "%s: list_page_size must be 1 to 1000", p->who);
            goto fail;
        }
    }
    p->page_size = (unsigned)ps;
    char def[128];
    if (!endpoint) {
        snprintf(def, sizeof(def), "https://s3.%s.amazonaws.com", region);
        endpoint = def;
    }
    if ((rc = parse_endpoint(p, endpoint)) < 0) {
        mm_error_set(err, rc, rc == -ENOMEM ? "%s: out of memory"
                                            : "%s: endpoint_url is not http(s)://host[:port]"
                                              "[/path] (without user or password)", p->who);
        goto fail;
    }
    if ((rc = parse_path(p, src->path ? src->path : "")) < 0) {
        mm_error_set(err, rc, rc == -ENOMEM ? "%s: out of memory"
                                            : "%s: the storage path is empty, too long or has an "
                                              "empty, '.' or '..' component", p->who);
        goto fail;
    }
    rc = -ENOMEM;
    p->bucket = strdup(bucket);
    p->region = strdup(region);
    if (!p->bucket || !p->region || (cert && !(p->cert = strdup(cert))) ||
        (id && (!(p->access_key_id = strdup(id)) || !(p->secret = strdup(secret))))) {
        mm_error_set(err, rc, "%s: out of memory", p->who);
        goto fail;
    }
    p->phase = PHASE_PROBE;
    if ((rc = list_start(p, p->path, 1, err)) < 0)
        goto fail;
    if (out)
        *out = p;
    return 0;
fail:
    pull_free(p);
    return rc;
}

static void cancel(void *pull_)
{
    struct s3_pull *p = pull_;
    if (!p)
        return;
    dl_cancel(p->op);
    pull_free(p);
}

const struct remote_provider remote_s3 = {.type = "s3", .pull = pull, .cancel = cancel};
