/* etcd.c - the etcd v3 client over the JSON gateway: the client, unary requests, failover, auth
 * and paged ranges. Watch streams are in etcd_watch.c, synchronous helpers in etcd_sync.c; the
 * HTTP transport is the loop's curlev.
 *
 * Every operation is one `struct request`; each attempt is one curlev transfer. Unary requests
 * read their reply when the transfer is done; a paged range is a range request relaunched for
 * each page. Callbacks run from curlev's callbacks, never inside curl, bracketed by
 * client_enter/leave so that a callback may free the client (sd-event's source_dispatch is the
 * model): the memory goes when the outermost bracket closes.
 *
 * Failover: a request goes to the client's current endpoint. A request that never reached a
 * server (connect failure) moves on to the next endpoint whatever it is; one that may have been
 * executed is retried elsewhere only when it is idempotent (range, keep-alive, ttl, auth). */
#include "mm/etcd.h"

#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_impl.h"
#include "mm/base64.h"
#include "mm/metrics.h"

#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_PAGE_KEYS 1000
#define DEFAULT_PAGE_BYTES (1u << 20)
#define DEFAULT_MAX_PAGES 100000
/* A paged range's first request asks for this many keys at most; each reply then sets the next
 * limit from the bytes it held (at most doubling), so that no reply need be much larger than a
 * page whatever the values weigh. */
#define FIRST_PAGE_LIMIT 16

/* ---------------------------------------------------------------- arena for responses */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

void *arena_alloc(struct arena_chunk **head, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct arena_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

void arena_free(struct arena_chunk *c)
{
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

struct response_box {
    struct etcd_response r;
    struct arena_chunk *arena;
};

static struct response_box *response_new(void)
{
    return calloc(1, sizeof(struct response_box));
}

void etcd_response_keep(struct etcd_response *r)
{
    r->keep = true;
}

void etcd_response_free(struct etcd_response *r)
{
    if (!r)
        return;
    struct response_box *b = (struct response_box *)r;
    arena_free(b->arena);
    free(b);
}

/* ---------------------------------------------------------------- client and requests */

static const char *const req_paths[] = {
    [REQ_RANGE] = "/v3/kv/range",
    [REQ_PUT] = "/v3/kv/put",
    [REQ_DELETE] = "/v3/kv/deleterange",
    [REQ_TXN] = "/v3/kv/txn",
    [REQ_LEASE_GRANT] = "/v3/lease/grant",
    [REQ_LEASE_KEEPALIVE] = "/v3/lease/keepalive",
    [REQ_LEASE_REVOKE] = "/v3/lease/revoke",
    [REQ_LEASE_TTL] = "/v3/lease/timetolive",
    [REQ_COMPACT] = "/v3/kv/compaction",
    [REQ_AUTH] = "/v3/auth/authenticate",
    [REQ_WATCH] = "/v3/watch",
};

/* The kind label of mm_etcd_round_trips_total, by req_kind. */
static const char *const req_kind_names[] = {
    [REQ_RANGE] = "range",
    [REQ_PUT] = "put",
    [REQ_DELETE] = "delete",
    [REQ_TXN] = "txn",
    [REQ_LEASE_GRANT] = "lease_grant",
    [REQ_LEASE_KEEPALIVE] = "lease_keepalive",
    [REQ_LEASE_REVOKE] = "lease_revoke",
    [REQ_LEASE_TTL] = "lease_ttl",
    [REQ_COMPACT] = "compact",
    [REQ_AUTH] = "auth",
    [REQ_WATCH] = "watch",
};

/* A paged range between its pages (see etcd_range_paged). */
struct paged {
    etcd_page_cb on_page;
    etcd_paged_done_cb on_done;
    char *end;                      /* range end, bytes */
    size_t end_len;
    char *cursor;                   /* the next page's first key: the last one delivered + "\0" */
    size_t cursor_len;
    int64_t revision;               /* pinned by the first page */
    int64_t limit;                  /* keys asked for per request */
    int64_t left;                   /* keys the previous page counted after it; -1 before */
    size_t page_keys, page_bytes, max_pages;
    size_t pages;                   /* requests answered */
    size_t n_keys;                  /* keys delivered */
    bool keys_only, serializable;
};

static void paged_free(struct paged *pg)
{
    if (pg) {
        free(pg->end);
        free(pg->cursor);
        free(pg);
    }
}

static void client_destroy(struct etcd_client *c)
{
    if (c->own_curl)
        curlev_free(c->curl);
    for (size_t i = 0; i < c->n_endpoints; i++)
        free(c->endpoints[i]);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->user);
    free(c->password);
    free(c->token);
    free(c);
}

void client_enter(struct etcd_client *c)
{
    c->dispatching++;
}

void client_leave(struct etcd_client *c)
{
    if (--c->dispatching == 0 && c->closing)
        client_destroy(c);
}

void request_free(struct request *r)
{
    curlev_transfer_free(r->t);
    curl_slist_free_all(r->headers);
    paged_free(r->pg);
    free(r->body);
    free(r);
}

void request_detach(struct request *r)
{
    if (r->t) {
        curlev_transfer_free(r->t);
        r->t = NULL;
    }
    if (r->wait_on) {
        TAILQ_REMOVE(r->wait_on, r, wait);
        r->wait_on = NULL;
    }
}

void request_unlink(struct request *r)
{
    if (r->in_all) {
        TAILQ_REMOVE(&r->c->all, r, all);
        r->in_all = false;
    }
}

const char *request_endpoint(const struct request *r)
{
    return r->c->endpoints[r->endpoint];
}

/* Printable, bounded rendering of a key for messages. */
static void describe_key(char *out, size_t size, const char *key, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch >= 0x20 && ch < 0x7f)
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
    }
    out[o] = '\0';
}

static void set_what(struct request *r, const char *op, const char *key, size_t key_len)
{
    char k[128];
    describe_key(k, sizeof(k), key ? key : "", key ? key_len : 0);
    snprintf(r->what, sizeof(r->what), "%s%s%s", op, key ? " " : "", key ? k : "");
}

/* ---------------------------------------------------------------- starting transfers */

static int start_auth(struct etcd_client *c);
static void auth_done(struct etcd_client *c, int status, const struct mm_error *err,
                      const char *token);
static void unary_on_done(struct curlev_transfer *t, CURLcode res, void *arg);

int request_launch(struct request *r)
{
    struct etcd_client *c = r->c;
    if (c->user && !c->token && r->kind != REQ_AUTH) {
        TAILQ_INSERT_TAIL(&c->auth_wait, r, wait);
        r->wait_on = &c->auth_wait;
        int rc = start_auth(c);
        if (rc < 0) {
            TAILQ_REMOVE(&c->auth_wait, r, wait);
            r->wait_on = NULL;
        }
        return rc;
    }
    r->endpoint = c->current;
    r->attempts++;
    metric_add(c->round_trips, METRIC_MODEL_OTHER, r->kind, 0, 1);
    r->scan_pos = r->obj_start = 0;
    r->depth = 0;
    r->in_string = r->escaped = false;
    curl_slist_free_all(r->headers);
    r->headers = NULL;

    bool watch = r->kind == REQ_WATCH;
    struct curlev_transfer *t = NULL;
    if (curlev_transfer_new(c->curl, c->max_reply_bytes, watch ? watch_on_data : NULL,
                            watch ? watch_on_done : unary_on_done, r, &t) < 0)
        return -ENOMEM;
    CURL *e = curlev_transfer_easy(t);
    char url[512];
    snprintf(url, sizeof(url), "%s%s", request_endpoint(r), req_paths[r->kind]);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    /* A member cut off from its leader holds a watch open and silent, and lets a keepalive
     * wait for a leader it cannot reach: with "hasleader" etcd ends the stream ("no leader")
     * after three election timeouts and refuses such a keepalive at once, so that we fail
     * over to a member that can serve. */
    if (h && (watch || r->kind == REQ_LEASE_KEEPALIVE))
        h = curl_slist_append(h, "Grpc-Metadata-hasleader: true");
    if (h && c->token && r->kind != REQ_AUTH) {
        char auth[1024];
        snprintf(auth, sizeof(auth), "Authorization: %s", c->token);
        h = curl_slist_append(h, auth);
    }
    if (!h) {
        curlev_transfer_free(t);
        return -ENOMEM;
    }
    r->headers = h;
    r->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body_len);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 5L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!watch)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->request_timeout_ms);
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file)
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file)
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
    if (curlev_transfer_start(t) < 0) {
        curlev_transfer_free(t);
        return -ENOMEM;
    }
    r->t = t;
    return 0;
}

int request_submit(struct etcd_client *c, enum req_kind kind, char *body, size_t len,
                   bool idempotent, etcd_cb cb, void *arg, const char *op, const char *key,
                   size_t key_len, struct request **out)
{
    if (c->closing) {
        free(body);
        return -ECANCELED;
    }
    struct request *r = calloc(1, sizeof(*r));
    if (!r) {
        free(body);
        return -ENOMEM;
    }
    r->c = c;
    r->kind = kind;
    r->body = body;
    r->body_len = len;
    r->idempotent = idempotent;
    r->cb = cb;
    r->arg = arg;
    set_what(r, op, key, key_len);
    int rc = request_launch(r);
    if (rc < 0) {
        request_free(r);
        return rc;
    }
    TAILQ_INSERT_TAIL(&c->all, r, all);
    r->in_all = true;
    if (out)
        *out = r;
    return 0;
}

/* ---------------------------------------------------------------- JSON helpers */

int64_t json_int64(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsString(v)) /* uint64 fields (member ids) keep their 64 bits */
        return v->valuestring[0] == '-' ? strtoll(v->valuestring, NULL, 10)
                                        : (int64_t)strtoull(v->valuestring, NULL, 10);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    return 0;
}

bool json_bool(const cJSON *obj, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, name));
}

/* Decode a base64 field into the arena; NUL-terminated. Missing field = "". */
static int decode_field(const cJSON *obj, const char *name, struct arena_chunk **arena,
                        const char **out, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v) {
        *out = "";
        *len = 0;
        return 0;
    }
    if (!cJSON_IsString(v))
        return -EPROTO;
    size_t n = strlen(v->valuestring);
    char *buf = arena_alloc(arena, base64_decoded_max(n) + 1);
    if (!buf)
        return -ENOMEM;
    long m = base64_decode(v->valuestring, n, buf);
    if (m < 0)
        return -EPROTO;
    buf[m] = '\0';
    *out = buf;
    *len = (size_t)m;
    return 0;
}

int parse_kv(const cJSON *j, struct arena_chunk **arena, struct etcd_kv *kv)
{
    int rc = decode_field(j, "key", arena, &kv->key, &kv->key_len);
    if (rc == 0)
        rc = decode_field(j, "value", arena, &kv->value, &kv->value_len);
    kv->create_revision = json_int64(j, "create_revision");
    kv->mod_revision = json_int64(j, "mod_revision");
    kv->version = json_int64(j, "version");
    kv->lease = json_int64(j, "lease");
    return rc;
}

static int parse_kvs(const cJSON *arr, struct arena_chunk **arena, const struct etcd_kv **out,
                     size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr))
        return -EPROTO;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0)
        return 0;
    struct etcd_kv *kvs = arena_alloc(arena, n * sizeof(*kvs));
    if (!kvs)
        return -ENOMEM;
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int rc = parse_kv(it, arena, &kvs[i++]);
        if (rc < 0)
            return rc;
    }
    *out = kvs;
    *n_out = n;
    return 0;
}

static int parse_op_result(const cJSON *j, enum etcd_op_kind kind, struct arena_chunk **arena,
                           struct etcd_op_result *op)
{
    op->kind = kind;
    op->count = json_int64(j, "count");
    op->more = json_bool(j, "more");
    op->deleted = json_int64(j, "deleted");
    const cJSON *kvs =
        cJSON_GetObjectItemCaseSensitive(j, kind == ETCD_OP_RANGE ? "kvs" : "prev_kvs");
    if (kind == ETCD_OP_PUT) {
        const cJSON *prev = cJSON_GetObjectItemCaseSensitive(j, "prev_kv");
        if (prev) {
            struct etcd_kv *kv = arena_alloc(arena, sizeof(*kv));
            if (!kv)
                return -ENOMEM;
            op->kvs = kv;
            op->n_kvs = 1;
            return parse_kv(prev, arena, kv);
        }
        return 0;
    }
    return parse_kvs(kvs, arena, &op->kvs, &op->n_kvs);
}

static int parse_txn(const cJSON *j, struct response_box *b)
{
    b->r.succeeded = json_bool(j, "succeeded");
    const cJSON *resps = cJSON_GetObjectItemCaseSensitive(j, "responses");
    if (!resps)
        return 0;
    if (!cJSON_IsArray(resps))
        return -EPROTO;
    size_t n = (size_t)cJSON_GetArraySize(resps);
    if (n == 0)
        return 0;
    struct etcd_op_result *results = arena_alloc(&b->arena, n * sizeof(*results));
    if (!results)
        return -ENOMEM;
    memset(results, 0, n * sizeof(*results));
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, resps) {
        const cJSON *v;
        int rc;
        if ((v = cJSON_GetObjectItemCaseSensitive(it, "response_range")))
            rc = parse_op_result(v, ETCD_OP_RANGE, &b->arena, &results[i]);
        else if ((v = cJSON_GetObjectItemCaseSensitive(it, "response_put")))
            rc = parse_op_result(v, ETCD_OP_PUT, &b->arena, &results[i]);
        else if ((v = cJSON_GetObjectItemCaseSensitive(it, "response_delete_range")))
            rc = parse_op_result(v, ETCD_OP_DELETE, &b->arena, &results[i]);
        else
            rc = -EPROTO;
        if (rc < 0)
            return rc;
        i++;
    }
    b->r.results = results;
    b->r.n_results = n;
    return 0;
}

/* ---------------------------------------------------------------- completion */

/* The request is over: it leaves the client, then its owner hears (its handle is dead from
 * here, so nothing can cancel it twice). The client is inside client_enter here. */
static void finish(struct request *r, int status, const struct mm_error *err,
                   struct response_box *b)
{
    request_detach(r);
    request_unlink(r);
    if (r->pg) {
        struct paged *pg = r->pg;
        if (pg->on_done)
            pg->on_done(status, err, pg->revision, pg->n_keys, r->arg);
    } else if (r->cb) {
        r->cb(status, err, b ? &b->r : NULL, r->arg);
    }
    if (b && !b->r.keep)
        etcd_response_free(&b->r);
    request_free(r);
}

/* The auth request is over: free it, then release whoever waits for the token. */
static void auth_finish(struct request *r, int status, const struct mm_error *err,
                        const char *token)
{
    struct etcd_client *c = r->c;
    request_detach(r);
    request_unlink(r);
    request_free(r);
    auth_done(c, status, err, token);
}

static void complete_error(struct request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void complete_error(struct request *r, int code, const char *fmt, ...)
{
    struct mm_error err;
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    mm_error_set(&err, code, "etcd %s: %s: %s", request_endpoint(r), r->what, detail);
    if (r->kind == REQ_AUTH)
        auth_finish(r, code, &err, NULL);
    else if (r->kind == REQ_WATCH)
        watch_fail(r, code, &err);
    else
        finish(r, code, &err, NULL);
}

/* Map an error body from the gateway ({"error","code","message"}) to an errno. */
static int map_grpc_error(int grpc_code, const char *msg)
{
    if (strstr(msg, "compacted"))
        return -ESTALE;
    switch (grpc_code) {
    case 3: return -EINVAL;          /* InvalidArgument */
    case 4: return -ETIMEDOUT;       /* DeadlineExceeded */
    case 5: return -ENOENT;          /* NotFound (lease) */
    case 7: return -EACCES;          /* PermissionDenied */
    case 8: return -ENOSPC;          /* ResourceExhausted (quota, too many ops) */
    case 9: return -EINVAL;          /* FailedPrecondition */
    case 11: return -ERANGE;         /* OutOfRange: future revision */
    case 14: return -EAGAIN;         /* Unavailable: no leader, stopping */
    case 16: return -EACCES;         /* Unauthenticated */
    default: return -EIO;
    }
}

bool request_token_error(const char *msg)
{
    return strstr(msg, "invalid auth token") || strstr(msg, "user name is empty");
}

void client_drop_token(struct etcd_client *c, const char *msg)
{
    if (c->user && msg && request_token_error(msg)) {
        free(c->token);
        c->token = NULL;
    }
}

void request_advance_endpoint(struct request *r)
{
    struct etcd_client *c = r->c;
    if (c->current == r->endpoint)
        c->current = (c->current + 1) % c->n_endpoints;
}

/* Try the request on the next endpoint if any is left; true if relaunched. */
static bool retry_elsewhere(struct request *r)
{
    request_advance_endpoint(r);
    if (r->attempts >= r->c->n_endpoints)
        return false;
    return request_launch(r) == 0;
}

static void paged_reply(struct request *r, struct response_box *b);
static int paged_send(struct request *r);

/* "512 MiB", "1500 KiB", "1000 bytes": a size as a user would have written it. */
static void format_size(char *out, size_t size, size_t n)
{
    if (n && n % (1u << 20) == 0)
        snprintf(out, size, "%zu MiB", n >> 20);
    else if (n && n % 1024 == 0)
        snprintf(out, size, "%zu KiB", n >> 10);
    else
        snprintf(out, size, "%zu bytes", n);
}

/* A reply passed the reply cap. A paged range asks again for fewer keys; with one key per page
 * left, or any other request, the request fails saying so. */
static void reply_over_cap(struct request *r)
{
    struct paged *pg = r->pg;
    if (pg && pg->limit > 1) {
        pg->limit = pg->limit / 4 > 1 ? pg->limit / 4 : 1;
        int rc = paged_send(r);
        if (rc < 0)
            complete_error(r, rc, "cannot send the next page: %s", mm_strerror(rc));
        return;
    }
    char cap[32];
    format_size(cap, sizeof(cap), r->c->max_reply_bytes);
    complete_error(r, -EMSGSIZE, "the reply is larger than the reply cap of %s%s", cap,
                   pg ? " with one key in it (a key and value that large)" : "");
}

static void complete_ok(struct request *r, const cJSON *j)
{
    struct response_box *b = response_new();
    if (!b) {
        complete_error(r, -ENOMEM, "out of memory parsing reply");
        return;
    }
    const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(j, "header");
    b->r.revision = json_int64(hdr, "revision");
    b->r.member_id = json_int64(hdr, "member_id");
    if (!cJSON_IsObject(hdr) || b->r.revision <= 0) { /* every etcd reply has one */
        etcd_response_free(&b->r);
        complete_error(r, -EPROTO, "a reply without a header revision: is this etcd?");
        return;
    }
    const char *ep = request_endpoint(r);
    char *ep_copy = arena_alloc(&b->arena, strlen(ep) + 1);
    if (ep_copy)
        memcpy(ep_copy, ep, strlen(ep) + 1);
    b->r.endpoint = ep_copy;
    int rc = ep_copy ? 0 : -ENOMEM;
    switch (r->kind) {
    case REQ_RANGE:
        if (rc == 0)
            rc = parse_op_result(j, ETCD_OP_RANGE, &b->arena, &b->r.op);
        break;
    case REQ_PUT:
        if (rc == 0)
            rc = parse_op_result(j, ETCD_OP_PUT, &b->arena, &b->r.op);
        break;
    case REQ_DELETE:
        if (rc == 0)
            rc = parse_op_result(j, ETCD_OP_DELETE, &b->arena, &b->r.op);
        break;
    case REQ_TXN:
        if (rc == 0)
            rc = parse_txn(j, b);
        break;
    case REQ_LEASE_KEEPALIVE:
    case REQ_LEASE_GRANT:
    case REQ_LEASE_TTL:
        b->r.lease_id = json_int64(j, "ID");
        b->r.ttl = json_int64(j, "TTL");
        b->r.granted_ttl = json_int64(j, "grantedTTL");
        if (r->kind == REQ_LEASE_GRANT) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
            if (cJSON_IsString(e) && e->valuestring[0]) {
                etcd_response_free(&b->r);
                complete_error(r, -EINVAL, "%s", e->valuestring);
                return;
            }
        } else if (b->r.ttl <= 0) {
            int64_t id = b->r.lease_id;
            etcd_response_free(&b->r);
            complete_error(r, -ENOENT, "lease %" PRId64 " not found (expired or revoked)", id);
            return;
        }
        break;
    default:
        break;
    }
    if (rc < 0) {
        etcd_response_free(&b->r);
        complete_error(r, -EPROTO, "malformed reply (%s)",
                       rc == -ENOMEM ? "out of memory" : "bad field");
        return;
    }
    if (r->pg) {
        paged_reply(r, b);
        return;
    }
    finish(r, 0, NULL, b);
}

static void complete_unary(struct request *r, CURLcode res)
{
    struct etcd_client *c = r->c;
    CURL *e = curlev_transfer_easy(r->t);
    long http = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &http);
    long sent = 0; /* request bytes written: 0 means the server never saw it */
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
    bool connected = sent > 0 || http > 0;
    bool tls = res == CURLE_SSL_CONNECT_ERROR || res == CURLE_PEER_FAILED_VERIFICATION ||
               res == CURLE_SSL_CERTPROBLEM || res == CURLE_SSL_CACERT_BADFILE;
    char curl_msg[CURL_ERROR_SIZE];
    snprintf(curl_msg, sizeof(curl_msg), "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
    const struct mm_buf *reply = curlev_transfer_body(r->t);
    size_t reply_len = reply->len;
    bool over_cap = res == CURLE_WRITE_ERROR && curlev_transfer_over_limit(r->t);
    cJSON *j = res == CURLE_OK ? cJSON_ParseWithLength(reply->data ? reply->data : "", reply_len)
                               : NULL;
    request_detach(r); /* the reply is parsed: the transfer goes */

    if (over_cap) { /* the server answered, too much: no other endpoint would say less */
        reply_over_cap(r);
        return;
    }
    if (res != CURLE_OK) {
        /* Never reached a server: safe to send elsewhere whatever the operation. */
        if (!connected || r->idempotent) {
            if (retry_elsewhere(r))
                return;
        } else {
            request_advance_endpoint(r);
        }
        if (tls)
            complete_error(r, -EACCES, "TLS: %s", curl_msg);
        else if (!connected)
            complete_error(r, -ECONNREFUSED, "%s (tried %zu endpoint%s)", curl_msg, r->attempts,
                           r->attempts == 1 ? "" : "s");
        else if (res == CURLE_OPERATION_TIMEDOUT)
            complete_error(r, -ETIMEDOUT, "no reply within %u ms%s", c->request_timeout_ms,
                           r->idempotent ? "" : "; outcome unknown");
        else
            complete_error(r, r->idempotent ? -ECONNRESET : -EIO, "%s%s", curl_msg,
                           r->idempotent ? "" : "; outcome unknown, not retried");
        return;
    }

    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        if (http >= 500 && r->idempotent && retry_elsewhere(r))
            return;
        complete_error(r, -EPROTO, "HTTP %ld with unparseable body (%zu bytes)", http, reply_len);
        return;
    }
    /* The keep-alive stream wraps its reply in "result". */
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(j, "result");
    const cJSON *body = result ? result : j;
    const cJSON *emsg = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (http != 200 || (cJSON_IsString(emsg) && cJSON_GetObjectItemCaseSensitive(j, "code"))) {
        const cJSON *inner = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (cJSON_IsObject(inner)) /* stream error form */
            emsg = cJSON_GetObjectItemCaseSensitive(inner, "message");
        const char *msg = cJSON_IsString(emsg) ? emsg->valuestring : "no message";
        int grpc_code = (int)json_int64(cJSON_IsObject(inner) ? inner : j,
                                        cJSON_IsObject(inner) ? "grpc_code" : "code");
        int code = map_grpc_error(grpc_code, msg);
        char msg_copy[200];
        snprintf(msg_copy, sizeof(msg_copy), "%s", msg);
        cJSON_Delete(j);
        if (r->kind != REQ_AUTH && c->user && request_token_error(msg_copy) && !r->auth_retried) {
            r->auth_retried = true; /* rejected before execution: resend with a new token */
            free(c->token);
            c->token = NULL;
            r->attempts = 0;
            if (request_launch(r) == 0)
                return;
        }
        if (code == -EAGAIN && r->idempotent && retry_elsewhere(r))
            return;
        if (!c->user && strstr(msg_copy, "user name is empty")) {
            complete_error(r, -EACCES,
                           "etcd requires authentication and no user was given "
                           "(etcd says: %s)",
                           msg_copy);
            return;
        }
        if (r->kind == REQ_AUTH) {
            struct mm_error err;
            mm_error_set(&err, -EACCES, "etcd %s: authenticate as '%s': %s", request_endpoint(r),
                         c->user, msg_copy);
            auth_finish(r, -EACCES, &err, NULL);
            return;
        }
        complete_error(r, code, "%s (HTTP %ld)", msg_copy, http);
        return;
    }
    if (r->kind == REQ_AUTH) {
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(body, "token");
        const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(body, "header");
        if (!cJSON_IsObject(hdr) || json_int64(hdr, "revision") <= 0) {
            struct mm_error err;
            mm_error_set(&err, -EPROTO,
                         "etcd %s: authenticate: a reply without a header revision: is this "
                         "etcd?",
                         request_endpoint(r));
            auth_finish(r, -EPROTO, &err, NULL);
        } else if (cJSON_IsString(tok)) {
            auth_finish(r, 0, NULL, tok->valuestring);
        } else {
            struct mm_error err;
            mm_error_set(&err, -EPROTO, "etcd %s: authenticate: reply has no token",
                         request_endpoint(r));
            auth_finish(r, -EPROTO, &err, NULL);
        }
        cJSON_Delete(j);
        return;
    }
    complete_ok(r, body);
    cJSON_Delete(j);
}

static void unary_on_done(struct curlev_transfer *t, CURLcode res, void *arg)
{
    struct request *r = arg;
    struct etcd_client *c = r->c;
    client_enter(c);
    complete_unary(r, res);
    client_leave(c);
}

/* ---------------------------------------------------------------- auth */

/* Start authenticating unless it is under way; 0, or -errno with nothing called back. */
static int start_auth(struct etcd_client *c)
{
    if (c->authenticating)
        return 0;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddStringToObject(o, "name", c->user);
    cJSON_AddStringToObject(o, "password", c->password ? c->password : "");
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!body)
        return -ENOMEM;
    int rc = request_submit(c, REQ_AUTH, body, strlen(body), true, NULL, NULL, "authenticate",
                            NULL, 0, NULL);
    if (rc == 0)
        c->authenticating = true;
    return rc;
}

static void auth_done(struct etcd_client *c, int status, const struct mm_error *err,
                      const char *token)
{
    c->authenticating = false;
    struct mm_error oom;
    if (status == 0) {
        free(c->token);
        c->token = strdup(token);
        if (!c->token) {
            status = mm_error_set(&oom, -ENOMEM, "etcd: authenticate: out of memory");
            err = &oom;
        }
    }
    /* Those waiting now; a request started from a callback below waits for a new token.
     * Cancelling one (or freeing the client) takes it off this list through wait_on. */
    struct request_list waiting = TAILQ_HEAD_INITIALIZER(waiting);
    struct request *r;
    while ((r = TAILQ_FIRST(&c->auth_wait))) {
        TAILQ_REMOVE(&c->auth_wait, r, wait);
        TAILQ_INSERT_TAIL(&waiting, r, wait);
        r->wait_on = &waiting;
    }
    while (!c->closing && (r = TAILQ_FIRST(&waiting))) {
        TAILQ_REMOVE(&waiting, r, wait);
        r->wait_on = NULL;
        if (status == 0) {
            if (request_launch(r) < 0)
                complete_error(r, -ENOMEM, "out of memory");
            continue;
        }
        r->endpoint = c->current;
        if (r->kind == REQ_WATCH)
            watch_fail(r, status, err);
        else
            finish(r, status, err, NULL);
    }
    assert(TAILQ_EMPTY(&waiting));
}

/* ---------------------------------------------------------------- paged ranges */

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int d = memcmp(a, b, alen < blen ? alen : blen);
    if (d)
        return d;
    return (alen > blen) - (alen < blen);
}

static int paged_body(struct paged *pg, struct mm_buf *b)
{
    int rc = mm_buf_append(b, "{", 1);
    /* etcd refuses an empty key: "\0" is the first key there is */
    if (rc == 0)
        rc = pg->cursor_len ? add_b64(b, "key", pg->cursor, pg->cursor_len)
                            : add_b64(b, "key", "", 1);
    if (rc == 0)
        rc = mm_buf_append(b, ",", 1);
    if (rc == 0)
        rc = add_b64(b, "range_end", pg->end, pg->end_len);
    if (rc == 0)
        rc = mm_buf_printf(b, ",\"limit\":\"%" PRId64 "\"", pg->limit);
    if (rc == 0 && pg->revision)
        rc = mm_buf_printf(b, ",\"revision\":\"%" PRId64 "\"", pg->revision);
    if (rc == 0 && pg->keys_only)
        rc = mm_buf_printf(b, ",\"keys_only\":true");
    if (rc == 0 && pg->serializable)
        rc = mm_buf_printf(b, ",\"serializable\":true");
    if (rc == 0)
        rc = mm_buf_append(b, "}", 1);
    return rc;
}

/* Keys in order, after the cursor and before the end: what a page may hold. */
static bool page_in_order(const struct paged *pg, const struct etcd_op_result *op)
{
    bool to_end = pg->end_len == 1 && pg->end[0] == '\0';
    for (size_t i = 0; i < op->n_kvs; i++) {
        const struct etcd_kv *kv = &op->kvs[i];
        const struct etcd_kv *prev = i ? &op->kvs[i - 1] : NULL;
        if (prev ? bytes_cmp(prev->key, prev->key_len, kv->key, kv->key_len) >= 0
                 : bytes_cmp(pg->cursor, pg->cursor_len, kv->key, kv->key_len) > 0)
            return false;
        if (!to_end && bytes_cmp(kv->key, kv->key_len, pg->end, pg->end_len) >= 0)
            return false;
    }
    return true;
}

static void paged_reply(struct request *r, struct response_box *b)
{
    struct etcd_client *c = r->c;
    struct paged *pg = r->pg;
    const struct etcd_op_result *op = &b->r.op;
    pg->pages++;
    if (b->r.revision <= 0 || !page_in_order(pg, op) || (op->more && op->n_kvs == 0)) {
        const char *why = b->r.revision <= 0 ? "a page without a header revision"
                          : op->n_kvs == 0   ? "a page that says more but holds no keys"
                                             : "a page whose keys are out of order";
        etcd_response_free(&b->r);
        complete_error(r, -EPROTO, "%s", why);
        return;
    }
    /* etcd counts the keys of [cursor, end) at the revision: a page holds at most the limit and
     * at most that count, says "more" exactly when the count is larger, and every later page
     * counts what the one before left. So the first count bounds the whole read, and a server
     * that says "more" forever, or stops early, is caught at its first inconsistent page. */
    int64_t n = (int64_t)op->n_kvs;
    const char *bad =
        n > pg->limit   ? "more keys than the limit asked for"
        : op->count < n ? "more keys than its count"
        : op->more != (op->count > n)
            ? (op->more ? "more, but counts no more keys" : "no more, but counts more keys")
        : pg->left >= 0 && op->count > pg->left ? "more keys left than the page before"
                                                : NULL;
    if (bad) {
        int64_t count = op->count, left = pg->left;
        etcd_response_free(&b->r);
        complete_error(r, -EPROTO,
                       "a page that says %s (%" PRId64 " keys, count %" PRId64 ", %" PRId64
                       " left before)",
                       bad, n, count, left);
        return;
    }
    pg->left = op->count - n;
    if (!pg->revision)
        pg->revision = b->r.revision;

    /* Deliver in pages of at most page_keys keys and page_bytes bytes. */
    size_t reply_bytes = 0;
    int stop = 0;
    r->dispatching = true;
    for (size_t i = 0; i < op->n_kvs && !stop && !r->free_requested && !c->closing;) {
        size_t j = i, bytes = 0;
        while (j < op->n_kvs && j - i < pg->page_keys) {
            size_t kv_bytes = op->kvs[j].key_len + op->kvs[j].value_len;
            if (j > i && bytes + kv_bytes > pg->page_bytes)
                break;
            bytes += kv_bytes;
            j++;
        }
        reply_bytes += bytes;
        pg->n_keys += j - i;
        stop = pg->on_page(&op->kvs[i], j - i, pg->revision, r->arg);
        i = j;
    }
    r->dispatching = false;
    if (r->free_requested) { /* cancelled from the page callback: no more calls */
        etcd_response_free(&b->r);
        request_free(r);
        return;
    }
    struct mm_error err;
    if (c->closing) {
        etcd_response_free(&b->r);
        mm_error_set(&err, -ECANCELED, "etcd: %s: client closed", r->what);
        finish(r, -ECANCELED, &err, NULL);
        return;
    }
    if (stop < 0) {
        etcd_response_free(&b->r);
        complete_error(r, stop, "stopped by the page callback: %s", mm_strerror(stop));
        return;
    }
    if (!op->more) {
        etcd_response_free(&b->r);
        finish(r, 0, NULL, NULL);
        return;
    }
    if (pg->pages >= pg->max_pages) {
        etcd_response_free(&b->r);
        complete_error(r, -E2BIG, "still more after %zu pages", pg->pages);
        return;
    }
    /* The next page starts right after the last key: that key + "\0". */
    const struct etcd_kv *last = &op->kvs[op->n_kvs - 1];
    char *cursor = malloc(last->key_len + 1);
    if (!cursor) {
        etcd_response_free(&b->r);
        complete_error(r, -ENOMEM, "out of memory");
        return;
    }
    memcpy(cursor, last->key, last->key_len);
    cursor[last->key_len] = '\0';
    free(pg->cursor);
    pg->cursor = cursor;
    pg->cursor_len = last->key_len + 1;
    /* The next limit: as many keys as fit a page at this reply's weight per key, at most
     * twice this one's and at most page_keys. */
    double per_key = (double)(reply_bytes ? reply_bytes : 1) / (double)n;
    double fit = (double)pg->page_bytes / per_key;
    double next = fit < 2.0 * (double)pg->limit ? fit : 2.0 * (double)pg->limit;
    if (next > (double)pg->page_keys)
        next = (double)pg->page_keys;
    pg->limit = next >= 1.0 ? (int64_t)next : 1;
    etcd_response_free(&b->r);
    int rc = paged_send(r);
    if (rc < 0)
        complete_error(r, rc, "cannot send the next page: %s", mm_strerror(rc));
}

/* Send the request for the page at the cursor, with the current limit. */
static int paged_send(struct request *r)
{
    struct mm_buf body = {0};
    int rc = paged_body(r->pg, &body);
    if (rc < 0) {
        mm_buf_free(&body);
        return rc;
    }
    free(r->body);
    r->body = body.data;
    r->body_len = body.len;
    r->attempts = 0;
    r->auth_retried = false;
    return request_launch(r);
}

int etcd_range_paged(struct etcd_client *c, const struct etcd_paged_req *req,
                     etcd_page_cb on_page, etcd_paged_done_cb on_done, void *arg,
                     struct etcd_request **out)
{
    if (!req || !req->key || !req->range_end || !on_page || !on_done)
        return -EINVAL;
    size_t key_len = req->key_len ? req->key_len : strlen(req->key);
    size_t end_len = req->range_end_len ? req->range_end_len : strlen(req->range_end);
    if (end_len == 0)
        return -EINVAL;
    struct paged *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return -ENOMEM;
    pg->on_page = on_page;
    pg->on_done = on_done;
    pg->end = malloc(end_len);
    pg->cursor = malloc(key_len ? key_len : 1);
    if (!pg->end || !pg->cursor) {
        paged_free(pg);
        return -ENOMEM;
    }
    memcpy(pg->end, req->range_end, end_len);
    pg->end_len = end_len;
    memcpy(pg->cursor, req->key, key_len);
    pg->cursor_len = key_len;
    pg->revision = req->revision;
    pg->page_keys = req->page_keys ? req->page_keys : DEFAULT_PAGE_KEYS;
    pg->page_bytes = req->page_bytes ? req->page_bytes : DEFAULT_PAGE_BYTES;
    pg->max_pages = req->max_pages ? req->max_pages : DEFAULT_MAX_PAGES;
    pg->limit = (int64_t)(pg->page_keys < FIRST_PAGE_LIMIT ? pg->page_keys : FIRST_PAGE_LIMIT);
    pg->left = -1;
    pg->keys_only = req->keys_only;
    pg->serializable = req->serializable;
    struct mm_buf body = {0};
    int rc = paged_body(pg, &body);
    if (rc < 0) {
        mm_buf_free(&body);
        paged_free(pg);
        return rc;
    }
    struct request *r = NULL;
    rc = request_submit(c, REQ_RANGE, body.data, body.len, true, NULL, arg, "range pages",
                        req->key, key_len, &r);
    if (rc < 0) {
        paged_free(pg);
        return rc;
    }
    r->pg = pg;
    if (out)
        *out = (struct etcd_request *)r;
    return 0;
}

/* ---------------------------------------------------------------- public API */

static char *dup_opt(const char *s)
{
    return s ? strdup(s) : NULL;
}

int etcd_client_new(struct ev_loop *loop, const struct etcd_config *cfg,
                    struct etcd_client **out, struct mm_error *err)
{
    if (!cfg || !cfg->endpoints || !cfg->endpoints[0])
        return mm_error_set(err, -EINVAL, "etcd: no endpoints configured");
    struct etcd_client *c = calloc(1, sizeof(*c));
    if (!c)
        return mm_error_set(err, -ENOMEM, "etcd: out of memory");
    c->loop = loop;
    TAILQ_INIT(&c->all);
    TAILQ_INIT(&c->auth_wait);
    int rc = 0;
    char *list = strdup(cfg->endpoints);
    if (!list) {
        rc = mm_error_set(err, -ENOMEM, "etcd: out of memory");
        goto fail;
    }
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (c->n_endpoints == ETCD_MAX_ENDPOINTS) {
            rc = mm_error_set(err, -EINVAL, "etcd: more than %d endpoints", ETCD_MAX_ENDPOINTS);
            goto fail;
        }
        size_t n = strlen(tok);
        while (n && tok[n - 1] == '/')
            tok[--n] = '\0';
        if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) {
            rc = mm_error_set(err, -EINVAL,
                              "etcd: endpoint '%s' must start with http:// or https://", tok);
            goto fail;
        }
        if (n > 400) {
            rc = mm_error_set(err, -EINVAL, "etcd: endpoint '%.40s...' too long", tok);
            goto fail;
        }
        c->endpoints[c->n_endpoints] = strdup(tok);
        if (!c->endpoints[c->n_endpoints++]) {
            rc = mm_error_set(err, -ENOMEM, "etcd: out of memory");
            goto fail;
        }
    }
    if (c->n_endpoints == 0) {
        rc = mm_error_set(err, -EINVAL, "etcd: no endpoints in '%s'", cfg->endpoints);
        goto fail;
    }
    c->ca_file = dup_opt(cfg->ca_file);
    c->cert_file = dup_opt(cfg->cert_file);
    c->key_file = dup_opt(cfg->key_file);
    c->user = cfg->user && cfg->user[0] ? strdup(cfg->user) : NULL;
    c->password = dup_opt(cfg->password);
    c->request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms
                                                    : DEFAULT_REQUEST_TIMEOUT_MS;
    c->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
                                                    : DEFAULT_CONNECT_TIMEOUT_MS;
    c->max_reply_bytes = cfg->max_reply_bytes ? cfg->max_reply_bytes : ETCD_DEFAULT_MAX_REPLY_BYTES;
    if (cfg->curl) {
        if (curlev_loop(cfg->curl) != loop) {
            rc = mm_error_set(err, -EINVAL, "etcd: the curl transport runs on another loop");
            goto fail;
        }
        c->curl = cfg->curl;
    } else {
        rc = curlev_new(loop, &c->curl, err);
        if (rc < 0)
            goto fail;
        c->own_curl = true;
    }
    struct metric_desc md = {
        .name = "mm_etcd_round_trips_total",
        .help = "HTTP requests sent to etcd (attempts: retries and pages count), by request kind",
        .type = METRIC_COUNTER,
        .label = "kind",
        .values = req_kind_names,
        .nvalues = sizeof(req_kind_names) / sizeof(req_kind_names[0]),
    };
    rc = metrics_register(cfg->metrics, &md, &c->round_trips, err);
    if (rc < 0)
        goto fail;
    free(list);
    *out = c;
    return 0;
fail:
    free(list);
    client_destroy(c);
    return rc;
}

void etcd_client_free(struct etcd_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    client_enter(c);
    struct request *r;
    while ((r = TAILQ_FIRST(&c->all))) {
        request_unlink(r);
        if (r->kind == REQ_WATCH) {
            watch_drop(r); /* owner must not free it again: documented */
            continue;
        }
        request_detach(r);
        if (r->kind == REQ_AUTH) {
            request_free(r);
            continue;
        }
        if (r->dispatching) /* a paged range inside its page callback: it ends there */
            continue;
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "etcd: %s: client closed", r->what);
        finish(r, -ECANCELED, &err, NULL);
    }
    client_leave(c);
}

struct ev_loop *etcd_client_loop(const struct etcd_client *c)
{
    return c->loop;
}

const char *etcd_client_endpoint(const struct etcd_client *c)
{
    return c->endpoints[c->current];
}

void etcd_request_cancel(struct etcd_request *h)
{
    struct request *r = (struct request *)h;
    if (!r)
        return;
    request_detach(r);
    request_unlink(r);
    if (r->dispatching) { /* inside its own page callback: paged_reply frees it */
        r->free_requested = true;
        return;
    }
    request_free(r);
}

size_t etcd_prefix_end(const char *prefix, size_t len, char *out)
{
    while (len > 0 && (unsigned char)prefix[len - 1] == 0xff)
        len--;
    if (len == 0) {
        out[0] = out[1] = '\0';
        return 1;
    }
    memmove(out, prefix, len);
    out[len - 1] = (char)((unsigned char)out[len - 1] + 1);
    out[len] = '\0';
    return len;
}

/* Append `"name":"<base64 of s>"` (s may hold any bytes). */
int add_b64(struct mm_buf *b, const char *name, const void *s, size_t len)
{
    size_t need = base64_encoded_size(len);
    if (mm_buf_printf(b, "\"%s\":\"", name) < 0)
        return -ENOMEM;
    char small[256];
    char *tmp = need <= sizeof(small) ? small : malloc(need);
    if (!tmp)
        return -ENOMEM;
    base64_encode(s, len, tmp);
    int rc = mm_buf_append(b, tmp, need - 1);
    if (tmp != small)
        free(tmp);
    if (rc == 0)
        rc = mm_buf_append(b, "\"", 1);
    return rc;
}

int add_key_range(struct mm_buf *b, const char *key, size_t klen, bool prefix,
                  const char *range_end, size_t range_end_len)
{
    int rc;
    if (prefix && klen == 0)
        rc = add_b64(b, "key", "", 1); /* key "\0" + range_end "\0" = everything */
    else
        rc = add_b64(b, "key", key, klen);
    if (rc < 0)
        return rc;
    if (prefix) {
        char small[256];
        char *end = klen + 2 <= sizeof(small) ? small : malloc(klen + 2);
        if (!end)
            return -ENOMEM;
        size_t n = etcd_prefix_end(key, klen, end);
        rc = mm_buf_append(b, ",", 1);
        if (rc == 0)
            rc = add_b64(b, "range_end", end, n);
        if (end != small)
            free(end);
        return rc;
    }
    if (range_end) {
        if ((rc = mm_buf_append(b, ",", 1)) < 0)
            return rc;
        return add_b64(b, "range_end", range_end, range_end_len);
    }
    return 0;
}

/* Submit a body built in b (rc = the building's status): the request takes the buffer. */
static int submit_body(struct etcd_client *c, enum req_kind kind, struct mm_buf *b, int rc,
                       bool idempotent, etcd_cb cb, void *arg, const char *op, const char *key,
                       struct etcd_request **out)
{
    if (rc < 0) {
        mm_buf_free(b);
        return rc;
    }
    return request_submit(c, kind, b->data, b->len, idempotent, cb, arg, op, key,
                          key ? strlen(key) : 0, (struct request **)out);
}

int etcd_range(struct etcd_client *c, const struct etcd_range_req *req, etcd_cb cb, void *arg,
               struct etcd_request **out)
{
    if (!req || !req->key)
        return -EINVAL;
    size_t klen = req->key_len ? req->key_len : strlen(req->key);
    size_t rlen = req->range_end ? (req->range_end_len ? req->range_end_len
                                                       : strlen(req->range_end))
                                 : 0;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{", 1);
    if (rc == 0)
        rc = add_key_range(&b, req->key, klen, req->prefix, req->range_end, rlen);
    if (rc == 0 && req->limit)
        rc = mm_buf_printf(&b, ",\"limit\":\"%" PRId64 "\"", req->limit);
    if (rc == 0 && req->revision)
        rc = mm_buf_printf(&b, ",\"revision\":\"%" PRId64 "\"", req->revision);
    if (rc == 0 && req->keys_only)
        rc = mm_buf_printf(&b, ",\"keys_only\":true");
    if (rc == 0 && req->count_only)
        rc = mm_buf_printf(&b, ",\"count_only\":true");
    if (rc == 0 && req->serializable)
        rc = mm_buf_printf(&b, ",\"serializable\":true");
    if (rc == 0)
        rc = mm_buf_append(&b, "}", 1);
    if (rc < 0) {
        mm_buf_free(&b);
        return rc;
    }
    return request_submit(c, REQ_RANGE, b.data, b.len, true, cb, arg,
                          req->prefix ? "range prefix" : "range", req->key, klen,
                          (struct request **)out);
}

int etcd_put(struct etcd_client *c, const char *key, const char *value, size_t value_len,
             int64_t lease, etcd_cb cb, void *arg, struct etcd_request **out)
{
    if (!key || !value)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{", 1);
    if (rc == 0)
        rc = add_b64(&b, "key", key, strlen(key));
    if (rc == 0)
        rc = mm_buf_append(&b, ",", 1);
    if (rc == 0)
        rc = add_b64(&b, "value", value, value_len);
    if (rc == 0 && lease)
        rc = mm_buf_printf(&b, ",\"lease\":\"%" PRId64 "\"", lease);
    if (rc == 0)
        rc = mm_buf_append(&b, "}", 1);
    return submit_body(c, REQ_PUT, &b, rc, false, cb, arg, "put", key, out);
}

int etcd_delete(struct etcd_client *c, const char *key, bool prefix, etcd_cb cb, void *arg,
                struct etcd_request **out)
{
    if (!key)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{", 1);
    if (rc == 0)
        rc = add_key_range(&b, key, strlen(key), prefix, NULL, 0);
    if (rc == 0)
        rc = mm_buf_append(&b, "}", 1);
    return submit_body(c, REQ_DELETE, &b, rc, false, cb, arg,
                       prefix ? "delete prefix" : "delete", key, out);
}

static const char *const cmp_targets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const cmp_fields[] = {"version", "create_revision", "mod_revision", "value",
                                         "lease"};
static const char *const cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static int add_ops(struct mm_buf *b, const char *name, const struct etcd_op *ops, size_t n)
{
    int rc = mm_buf_printf(b, ",\"%s\":[", name);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct etcd_op *op = &ops[i];
        if (!op->key || (op->kind == ETCD_OP_PUT && !op->value))
            return -EINVAL;
        static const char *const wrap[] = {"request_range", "request_put", "request_delete_range"};
        rc = mm_buf_printf(b, "%s{\"%s\":{", i ? "," : "", wrap[op->kind]);
        if (rc == 0 && op->kind == ETCD_OP_PUT) {
            rc = add_b64(b, "key", op->key, strlen(op->key));
            if (rc == 0)
                rc = mm_buf_append(b, ",", 1);
            if (rc == 0)
                rc = add_b64(b, "value", op->value, strlen(op->value));
            if (rc == 0 && op->lease)
                rc = mm_buf_printf(b, ",\"lease\":\"%" PRId64 "\"", op->lease);
        } else if (rc == 0) {
            rc = add_key_range(b, op->key, strlen(op->key), op->prefix, NULL, 0);
        }
        if (rc == 0)
            rc = mm_buf_append(b, "}}", 2);
    }
    return rc ? rc : mm_buf_append(b, "]", 1);
}

int etcd_txn(struct etcd_client *c, const struct etcd_txn *txn, etcd_cb cb, void *arg,
             struct etcd_request **out)
{
    if (!txn)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{\"compare\":[", 12);
    for (size_t i = 0; rc == 0 && i < txn->n_compare; i++) {
        const struct etcd_compare *cmp = &txn->compare[i];
        if (!cmp->key || cmp->target > ETCD_CMP_LEASE || cmp->result > ETCD_CMP_NOT_EQUAL ||
            (cmp->target == ETCD_CMP_VALUE && !cmp->value)) {
            rc = -EINVAL;
            break;
        }
        rc = mm_buf_printf(&b, "%s{\"target\":\"%s\",\"result\":\"%s\",", i ? "," : "",
                           cmp_targets[cmp->target], cmp_results[cmp->result]);
        if (rc == 0)
            rc = add_b64(&b, "key", cmp->key, strlen(cmp->key));
        if (rc == 0 && cmp->target == ETCD_CMP_VALUE) {
            rc = mm_buf_append(&b, ",", 1);
            if (rc == 0)
                rc = add_b64(&b, "value", cmp->value, strlen(cmp->value));
        } else if (rc == 0)
            rc = mm_buf_printf(&b, ",\"%s\":\"%" PRId64 "\"", cmp_fields[cmp->target], cmp->number);
        if (rc == 0)
            rc = mm_buf_append(&b, "}", 1);
    }
    if (rc == 0)
        rc = mm_buf_append(&b, "]", 1);
    if (rc == 0)
        rc = add_ops(&b, "success", txn->success, txn->n_success);
    if (rc == 0)
        rc = add_ops(&b, "failure", txn->failure, txn->n_failure);
    if (rc == 0)
        rc = mm_buf_append(&b, "}", 1);
    /* Name the txn by its first compared (or written) key for messages. */
    const char *key = txn->n_compare ? txn->compare[0].key
                      : txn->n_success ? txn->success[0].key : NULL;
    bool read_only = true;
    for (size_t i = 0; i < txn->n_success; i++)
        read_only &= txn->success[i].kind == ETCD_OP_RANGE;
    for (size_t i = 0; i < txn->n_failure; i++)
        read_only &= txn->failure[i].kind == ETCD_OP_RANGE;
    return submit_body(c, REQ_TXN, &b, rc, read_only, cb, arg, "txn on", key, out);
}

static int lease_req(struct etcd_client *c, enum req_kind kind, const char *op, const char *json,
                     bool idempotent, etcd_cb cb, void *arg, int64_t id,
                     struct etcd_request **out)
{
    char *body = strdup(json);
    if (!body)
        return -ENOMEM;
    char what[48];
    snprintf(what, sizeof(what), "%" PRId64, id);
    return request_submit(c, kind, body, strlen(body), idempotent, cb, arg, op, id ? what : NULL,
                          strlen(what), (struct request **)out);
}

int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t id, etcd_cb cb, void *arg,
                     struct etcd_request **out)
{
    if (ttl_s <= 0)
        return -EINVAL;
    char json[96];
    snprintf(json, sizeof(json), "{\"TTL\":\"%" PRId64 "\",\"ID\":\"%" PRId64 "\"}", ttl_s, id);
    /* With an explicit ID a second grant fails cleanly, so it may be retried. */
    return lease_req(c, REQ_LEASE_GRANT, "lease grant", json, id != 0, cb, arg, id, out);
}

int etcd_lease_keepalive(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                         struct etcd_request **out)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    return lease_req(c, REQ_LEASE_KEEPALIVE, "lease keepalive", json, true, cb, arg, id, out);
}

int etcd_lease_revoke(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                      struct etcd_request **out)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    /* Revoking twice only yields "not found": safe to retry. */
    return lease_req(c, REQ_LEASE_REVOKE, "lease revoke", json, true, cb, arg, id, out);
}

int etcd_lease_ttl(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                   struct etcd_request **out)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    return lease_req(c, REQ_LEASE_TTL, "lease ttl", json, true, cb, arg, id, out);
}

int etcd_compact(struct etcd_client *c, int64_t revision, bool physical, etcd_cb cb, void *arg,
                 struct etcd_request **out)
{
    char json[96];
    snprintf(json, sizeof(json), "{\"revision\":\"%" PRId64 "\",\"physical\":%s}", revision,
             physical ? "true" : "false");
    char *body = strdup(json);
    if (!body)
        return -ENOMEM;
    return request_submit(c, REQ_COMPACT, body, strlen(body), true, cb, arg, "compact", NULL, 0,
                          (struct request **)out);
}
