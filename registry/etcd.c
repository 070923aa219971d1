/* etcd.c - etcd v3 over the JSON gateway, on libcurl multi driven by a libev loop.
 *
 * Every operation is one `struct request` (one easy handle). Unary requests buffer their reply and
 * complete once; watches are requests in stream mode whose reply is parsed object by object.
 * Parsing and callbacks never run inside a curl callback: write callbacks only append bytes, and
 * the client processes finished and streaming transfers after curl_multi_socket_action returns,
 * so a callback may start, cancel or free requests freely.
 *
 * Failover: a request goes to the client's current endpoint. A request that never reached a
 * server (connect failure) moves on to the next endpoint whatever it is; one that may have been
 * executed is retried elsewhere only when it is idempotent (range, keep-alive, ttl, auth). */
#include "mm/etcd.h"

#include <assert.h>
#include <bsd/sys/queue.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/base64.h"
#include "mm/buf.h"

#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define MAX_ENDPOINTS 16
#define MAX_REPLY_BYTES (512u << 20) /* a reply larger than this is refused, not buffered */

/* ---------------------------------------------------------------- arena for responses */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

static void *arena_alloc(struct arena_chunk **head, size_t n)
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

static void arena_free(struct arena_chunk *c)
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

enum req_kind {
    REQ_RANGE, REQ_PUT, REQ_DELETE, REQ_TXN, REQ_LEASE_GRANT, REQ_LEASE_KEEPALIVE,
    REQ_LEASE_REVOKE, REQ_LEASE_TTL, REQ_COMPACT, REQ_AUTH, REQ_WATCH,
};

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

struct etcd_watch; /* a request in stream mode */

struct request {
    struct etcd_client *c;
    TAILQ_ENTRY(request) link;      /* in c->active or c->auth_wait */
    TAILQ_ENTRY(request) dirty;     /* in c->dirty: has stream bytes to parse */
    enum req_kind kind;
    char *body;
    size_t body_len;
    bool idempotent;
    bool on_dirty;
    bool auth_retried;
    bool finished;                  /* watch: final callback delivered */
    bool free_requested;            /* watch: freed by its owner during dispatch */
    bool dispatching;
    size_t endpoint;                /* index used by the current attempt */
    size_t attempts;
    CURL *easy;
    struct curl_slist *headers;
    struct mm_buf reply;
    char errbuf[CURL_ERROR_SIZE];
    char what[192];                 /* "range /modelmesh/x/" for messages */
    etcd_cb cb;
    etcd_watch_cb watch_cb;
    void *arg;
    /* stream scanner state (watch) */
    size_t scan_pos;
    size_t obj_start;
    int depth;
    bool in_string;
    bool escaped;
};

TAILQ_HEAD(request_list, request);

struct socket_watch {
    ev_io io;
    struct etcd_client *c;
};

struct etcd_client {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    char *endpoints[MAX_ENDPOINTS];
    size_t n_endpoints;
    size_t current;
    char *ca_file, *cert_file, *key_file, *user, *password;
    unsigned request_timeout_ms, connect_timeout_ms;
    char *token;
    bool authenticating;
    struct request_list active;     /* attached to the multi handle */
    struct request_list auth_wait;  /* waiting for a token */
    struct request_list dirty;
};

static void request_free(struct request *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    mm_buf_free(&r->reply);
    free(r->body);
    free(r);
}

static void detach(struct request *r)
{
    struct etcd_client *c = r->c;
    if (r->easy) {
        curl_multi_remove_handle(c->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
        TAILQ_REMOVE(&c->active, r, link);
    }
    if (r->on_dirty) {
        TAILQ_REMOVE(&c->dirty, r, dirty);
        r->on_dirty = false;
    }
}

static const char *endpoint_of(const struct request *r)
{
    return r->c->endpoints[r->endpoint];
}

/* Printable, bounded rendering of a key for messages. */
static void describe_key(char *out, size_t size, const char *key)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p && o + 5 < size; p++) {
        if (*p >= 0x20 && *p < 0x7f)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
    }
    out[o] = '\0';
}

static void set_what(struct request *r, const char *op, const char *key)
{
    char k[128];
    describe_key(k, sizeof(k), key ? key : "");
    snprintf(r->what, sizeof(r->what), "%s%s%s", op, key ? " " : "", key ? k : "");
}

/* ---------------------------------------------------------------- curl on libev */

static void process(struct etcd_client *c);

static void socket_cb_ev(struct ev_loop *loop, ev_io *w, int revents)
{
    struct socket_watch *sw = (struct socket_watch *)w;
    int flags =
        (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    struct etcd_client *c = sw->c; /* sw may be freed by curl_socket_cb during the action */
    int running;
    curl_multi_socket_action(c->multi, w->fd, flags, &running);
    process(c);
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct etcd_client *c = userp;
    struct socket_watch *sw = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sw) {
            ev_io_stop(c->loop, &sw->io);
            free(sw);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!sw) {
        sw = calloc(1, sizeof(*sw));
        if (!sw)
            return -1;
        sw->c = c;
        ev_io_init(&sw->io, socket_cb_ev, s, events);
        curl_multi_assign(c->multi, s, sw);
    } else {
        ev_io_stop(c->loop, &sw->io);
        ev_io_set(&sw->io, s, events);
    }
    ev_io_start(c->loop, &sw->io);
    return 0;
}

static void timer_cb_ev(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct etcd_client *c = w->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    process(c);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct etcd_client *c = userp;
    ev_timer_stop(c->loop, &c->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(c->loop, &c->timer);
    }
    return 0;
}

/* ---------------------------------------------------------------- starting transfers */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct request *r = userdata;
    size_t n = size * nmemb;
    if (r->reply.len + n > MAX_REPLY_BYTES || mm_buf_append(&r->reply, ptr, n) < 0)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    if (r->kind == REQ_WATCH && !r->on_dirty) {
        TAILQ_INSERT_TAIL(&r->c->dirty, r, dirty);
        r->on_dirty = true;
    }
    return n;
}

static void complete_error(struct request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void start_auth(struct etcd_client *c);
static void auth_done(struct etcd_client *c, int status, const struct mm_error *err,
                      const char *token);

static int launch(struct request *r)
{
    struct etcd_client *c = r->c;
    if (c->user && !c->token && r->kind != REQ_AUTH) {
        TAILQ_INSERT_TAIL(&c->auth_wait, r, link);
        start_auth(c);
        return 0;
    }
    r->endpoint = c->current;
    r->attempts++;
    mm_buf_reset(&r->reply);
    r->scan_pos = r->obj_start = 0;
    r->depth = 0;
    r->in_string = r->escaped = false;
    curl_slist_free_all(r->headers);
    r->headers = NULL;

    CURL *e = curl_easy_init();
    if (!e)
        return -ENOMEM;
    char url[512];
    snprintf(url, sizeof(url), "%s%s", endpoint_of(r), req_paths[r->kind]);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    /* A member cut off from its leader holds a watch open and silent, and lets a keepalive
     * wait for a leader it cannot reach: with "hasleader" etcd ends the stream ("no leader")
     * after three election timeouts and refuses such a keepalive at once, so that we fail
     * over to a member that can serve. */
    if (h && (r->kind == REQ_WATCH || r->kind == REQ_LEASE_KEEPALIVE))
        h = curl_slist_append(h, "Grpc-Metadata-hasleader: true");
    if (h && c->token && r->kind != REQ_AUTH) {
        char auth[1024];
        snprintf(auth, sizeof(auth), "Authorization: %s", c->token);
        h = curl_slist_append(h, auth);
    }
    if (!h) {
        curl_easy_cleanup(e);
        return -ENOMEM;
    }
    r->headers = h;
    r->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body_len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 5L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r->kind != REQ_WATCH)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->request_timeout_ms);
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file)
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file)
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
    r->easy = e;
    TAILQ_INSERT_TAIL(&c->active, r, link);
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        TAILQ_REMOVE(&c->active, r, link);
        r->easy = NULL;
        curl_easy_cleanup(e);
        return -ENOMEM;
    }
    return 0;
}

/* Take ownership of body (malloc'd) and start. On failure the request is freed and nothing is
 * called back. */
static int submit(struct etcd_client *c, enum req_kind kind, char *body, size_t len,
                  bool idempotent, etcd_cb cb, void *arg, const char *op, const char *key,
                  struct request **out)
{
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
    set_what(r, op, key);
    int rc = launch(r);
    if (rc < 0) {
        request_free(r);
        return rc;
    }
    if (out)
        *out = r;
    return 0;
}

/* ---------------------------------------------------------------- JSON helpers */

static int64_t json_int64(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsString(v)) /* uint64 fields (member ids) keep their 64 bits */
        return v->valuestring[0] == '-' ? strtoll(v->valuestring, NULL, 10)
                                        : (int64_t)strtoull(v->valuestring, NULL, 10);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    return 0;
}

static bool json_bool(const cJSON *obj, const char *name)
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

static int parse_kv(const cJSON *j, struct arena_chunk **arena, struct etcd_kv *kv)
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

static void finish(struct request *r, int status, const struct mm_error *err,
                   struct response_box *b)
{
    if (r->cb)
        r->cb(status, err, b ? &b->r : NULL, r->arg);
    if (b && !b->r.keep)
        etcd_response_free(&b->r);
    request_free(r);
}

static void complete_error(struct request *r, int code, const char *fmt, ...)
{
    struct mm_error err;
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    mm_error_set(&err, code, "etcd %s: %s: %s", endpoint_of(r), r->what, detail);
    if (r->kind == REQ_AUTH) { /* wake whoever waits for the token */
        struct etcd_client *c = r->c;
        request_free(r);
        auth_done(c, code, &err, NULL);
        return;
    }
    if (r->kind == REQ_WATCH) {
        r->finished = true;
        if (r->watch_cb) {
            struct etcd_watch_batch batch = {0};
            r->watch_cb((struct etcd_watch *)r, code, &err, &batch, 0, r->arg);
        }
        return;
    }
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

static bool is_token_error(const char *msg)
{
    return strstr(msg, "invalid auth token") || strstr(msg, "user name is empty");
}

static void advance_endpoint(struct request *r)
{
    struct etcd_client *c = r->c;
    if (c->current == r->endpoint)
        c->current = (c->current + 1) % c->n_endpoints;
}

/* Try the request on the next endpoint if any is left; true if relaunched. */
static bool retry_elsewhere(struct request *r)
{
    advance_endpoint(r);
    if (r->attempts >= r->c->n_endpoints)
        return false;
    return launch(r) == 0;
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
    int rc = 0;
    switch (r->kind) {
    case REQ_RANGE:
        rc = parse_op_result(j, ETCD_OP_RANGE, &b->arena, &b->r.op);
        break;
    case REQ_PUT:
        rc = parse_op_result(j, ETCD_OP_PUT, &b->arena, &b->r.op);
        break;
    case REQ_DELETE:
        rc = parse_op_result(j, ETCD_OP_DELETE, &b->arena, &b->r.op);
        break;
    case REQ_TXN:
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
    finish(r, 0, NULL, b);
}

static void complete_unary(struct request *r, CURLcode res)
{
    struct etcd_client *c = r->c;
    long http = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    long sent = 0; /* request bytes written: 0 means the server never saw it */
    curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent);
    bool connected = sent > 0 || http > 0;
    bool tls = res == CURLE_SSL_CONNECT_ERROR || res == CURLE_PEER_FAILED_VERIFICATION ||
               res == CURLE_SSL_CERTPROBLEM || res == CURLE_SSL_CACERT_BADFILE;
    const char *curl_msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(res);
    detach(r);

    if (res != CURLE_OK) {
        /* Never reached a server: safe to send elsewhere whatever the operation. */
        if (!connected || r->idempotent) {
            if (retry_elsewhere(r))
                return;
        } else {
            advance_endpoint(r);
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

    cJSON *j = cJSON_ParseWithLength(r->reply.data ? r->reply.data : "", r->reply.len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        if (http >= 500 && r->idempotent && retry_elsewhere(r))
            return;
        complete_error(r, -EPROTO, "HTTP %ld with unparseable body (%zu bytes)", http,
                       r->reply.len);
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
        if (r->kind != REQ_AUTH && c->user && is_token_error(msg_copy) && !r->auth_retried) {
            r->auth_retried = true; /* rejected before execution: resend with a new token */
            free(c->token);
            c->token = NULL;
            r->attempts = 0;
            if (launch(r) == 0)
                return;
        }
        if (code == -EAGAIN && r->idempotent && retry_elsewhere(r))
            return;
        if (r->kind == REQ_AUTH) {
            struct mm_error err;
            mm_error_set(&err, -EACCES, "etcd %s: authenticate as '%s': %s", endpoint_of(r),
                         c->user, msg_copy);
            auth_done(c, -EACCES, &err, NULL);
            request_free(r);
            return;
        }
        complete_error(r, code, "%s (HTTP %ld)", msg_copy, http);
        return;
    }
    if (r->kind == REQ_AUTH) {
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(body, "token");
        if (cJSON_IsString(tok))
            auth_done(c, 0, NULL, tok->valuestring);
        else {
            struct mm_error err;
            mm_error_set(&err, -EPROTO, "etcd %s: authenticate: reply has no token",
                         endpoint_of(r));
            auth_done(c, -EPROTO, &err, NULL);
        }
        cJSON_Delete(j);
        request_free(r);
        return;
    }
    complete_ok(r, body);
    cJSON_Delete(j);
}

/* ---------------------------------------------------------------- auth */

static void start_auth(struct etcd_client *c)
{
    if (c->authenticating)
        return;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    cJSON_AddStringToObject(o, "name", c->user);
    cJSON_AddStringToObject(o, "password", c->password ? c->password : "");
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!body)
        return;
    c->authenticating = true;
    if (submit(c, REQ_AUTH, body, strlen(body), true, NULL, NULL, "authenticate", NULL, NULL) < 0) {
        c->authenticating = false;
        struct mm_error err;
        mm_error_set(&err, -ENOMEM, "etcd: authenticate: out of memory");
        auth_done(c, -ENOMEM, &err, NULL);
    }
}

static void auth_done(struct etcd_client *c, int status, const struct mm_error *err,
                      const char *token)
{
    c->authenticating = false;
    if (status == 0) {
        free(c->token);
        c->token = strdup(token);
    }
    struct request_list waiting = TAILQ_HEAD_INITIALIZER(waiting);
    TAILQ_CONCAT(&waiting, &c->auth_wait, link);
    struct request *r;
    while ((r = TAILQ_FIRST(&waiting))) {
        TAILQ_REMOVE(&waiting, r, link);
        if (status == 0 && c->token) {
            if (launch(r) < 0)
                complete_error(r, -ENOMEM, "out of memory");
            continue;
        }
        r->endpoint = c->current;
        if (r->kind == REQ_WATCH) {
            r->finished = true;
            if (r->watch_cb) {
                struct etcd_watch_batch batch = {0};
                r->watch_cb((struct etcd_watch *)r, status, err, &batch, 0, r->arg);
            }
        } else {
            finish(r, status, err, NULL);
        }
    }
}

/* ---------------------------------------------------------------- watch streams */

/* Parse one watch reply object and deliver it. Returns false if the watch ended. */
static bool watch_deliver(struct request *r, const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    if (!cJSON_IsObject(res)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        char msg[200];
        snprintf(msg, sizeof(msg), "%s",
                 cJSON_IsString(m) ? m->valuestring : "unparseable stream object");
        cJSON_Delete(j);
        complete_error(r, e ? -ECANCELED : -EPROTO, "%s", msg);
        return false;
    }
    const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(res, "header");
    int64_t revision = json_int64(hdr, "revision");
    if (json_bool(res, "canceled")) {
        int64_t compact = json_int64(res, "compact_revision");
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");
        struct mm_error err;
        int code = compact > 0 ? -ESTALE : -ECANCELED;
        if (compact > 0)
            mm_error_set(&err, code,
                         "etcd %s: %s: revision compacted, oldest available is %" PRId64,
                         endpoint_of(r), r->what, compact);
        else
            mm_error_set(&err, code, "etcd %s: %s: canceled by etcd: %s", endpoint_of(r), r->what,
                         cJSON_IsString(why) ? why->valuestring : "no reason given");
        cJSON_Delete(j);
        r->finished = true;
        struct etcd_watch_batch batch = {.revision = revision};
        r->watch_cb((struct etcd_watch *)r, code, &err, &batch, compact, r->arg);
        return false;
    }
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(res, "events");
    struct arena_chunk *arena = NULL;
    struct etcd_watch_batch batch = {.revision = revision, .created = json_bool(res, "created"),
                                     .member_id = json_int64(hdr, "member_id")};
    int rc = 0;
    if (cJSON_IsArray(events)) {
        size_t n = (size_t)cJSON_GetArraySize(events);
        struct etcd_event *evs = n ? arena_alloc(&arena, n * sizeof(*evs)) : NULL;
        if (n && !evs)
            rc = -ENOMEM;
        size_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, events) {
            if (rc < 0)
                break;
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
            evs[i].type = cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0
                              ? ETCD_EVENT_DELETE
                              : ETCD_EVENT_PUT;
            rc = parse_kv(cJSON_GetObjectItemCaseSensitive(it, "kv"), &arena, &evs[i].kv);
            i++;
        }
        batch.events = evs;
        batch.n_events = n;
    }
    cJSON_Delete(j);
    if (rc < 0) {
        arena_free(arena);
        complete_error(r, -EPROTO, "malformed watch event");
        return false;
    }
    r->watch_cb((struct etcd_watch *)r, 0, NULL, &batch, 0, r->arg);
    arena_free(arena);
    return true;
}

/* Split the stream into top-level JSON objects, resuming the scan where it stopped. */
static void watch_parse(struct request *r)
{
    r->dispatching = true;
    for (;;) {
        const char *d = r->reply.data;
        size_t i = r->scan_pos, end = 0;
        bool found = false;
        for (; i < r->reply.len; i++) {
            char ch = d[i];
            if (r->in_string) {
                if (r->escaped)
                    r->escaped = false;
                else if (ch == '\\')
                    r->escaped = true;
                else if (ch == '"')
                    r->in_string = false;
            } else if (ch == '"') {
                r->in_string = true;
            } else if (ch == '{') {
                if (r->depth++ == 0)
                    r->obj_start = i;
            } else if (ch == '}' && r->depth > 0 && --r->depth == 0) {
                end = i + 1;
                found = true;
                break;
            }
        }
        r->scan_pos = found ? end : i;
        if (!found)
            break;
        bool alive = watch_deliver(r, d + r->obj_start, end - r->obj_start);
        if (r->free_requested || !alive)
            break;
        mm_buf_consume(&r->reply, end);
        r->scan_pos = 0;
        r->obj_start = 0;
    }
    r->dispatching = false;
}

static void complete_watch(struct request *r, CURLcode res)
{
    long http = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    const char *curl_msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(res);
    char msg[CURL_ERROR_SIZE];
    snprintf(msg, sizeof(msg), "%s", curl_msg);
    detach(r);
    if (r->finished)
        return;
    if (r->reply.len) /* bytes that arrived with the end of the transfer */
        watch_parse(r);
    if (r->free_requested) {
        request_free(r);
        return;
    }
    if (r->finished)
        return;
    advance_endpoint(r);
    if (res == CURLE_OK && http != 200)
        complete_error(r, http == 401 || http == 403 ? -EACCES : -ECONNRESET,
                       "watch refused: HTTP %ld: %.120s", http, r->reply.data ? r->reply.data : "");
    else
        complete_error(r, -ECONNRESET, "watch stream ended: %s",
                       res == CURLE_OK ? "closed by server" : msg);
}

/* After curl has run: parse stream bytes and finish completed transfers. */
static void process(struct etcd_client *c)
{
    struct request *r;
    while ((r = TAILQ_FIRST(&c->dirty))) {
        TAILQ_REMOVE(&c->dirty, r, dirty);
        r->on_dirty = false;
        if (r->finished)
            continue;
        watch_parse(r);
        if (r->free_requested) {
            detach(r);
            request_free(r);
        } else if (r->finished) {
            detach(r);
        }
    }
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct request *req = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&req);
        CURLcode res = m->data.result;
        if (req->kind == REQ_WATCH)
            complete_watch(req, res);
        else
            complete_unary(req, res);
    }
}

/* ---------------------------------------------------------------- public API */

static char *dup_opt(const char *s)
{
    return s ? strdup(s) : NULL;
}

int etcd_client_new(struct ev_loop *loop, const struct etcd_config *cfg,
                    struct etcd_client **out, struct mm_error *err)
{
    static bool curl_ready;
    if (!curl_ready) { /* process-wide init, first use only */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
            return mm_error_set(err, -ENOMEM, "etcd: curl_global_init failed");
        curl_ready = true;
    }
    if (!cfg || !cfg->endpoints || !cfg->endpoints[0])
        return mm_error_set(err, -EINVAL, "etcd: no endpoints configured");
    struct etcd_client *c = calloc(1, sizeof(*c));
    if (!c)
        return mm_error_set(err, -ENOMEM, "etcd: out of memory");
    c->loop = loop;
    TAILQ_INIT(&c->active);
    TAILQ_INIT(&c->auth_wait);
    TAILQ_INIT(&c->dirty);
    int rc = 0;
    char *list = strdup(cfg->endpoints);
    if (!list) {
        rc = mm_error_set(err, -ENOMEM, "etcd: out of memory");
        goto fail;
    }
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (c->n_endpoints == MAX_ENDPOINTS) {
            rc = mm_error_set(err, -EINVAL, "etcd: more than %d endpoints", MAX_ENDPOINTS);
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
    c->multi = curl_multi_init();
    if (!c->multi) {
        rc = mm_error_set(err, -ENOMEM, "etcd: curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    ev_init(&c->timer, timer_cb_ev);
    c->timer.data = c;
    free(list);
    *out = c;
    return 0;
fail:
    free(list);
    etcd_client_free(c);
    return rc;
}

void etcd_client_free(struct etcd_client *c)
{
    if (!c)
        return;
    struct request *r;
    while ((r = TAILQ_FIRST(&c->auth_wait))) {
        TAILQ_REMOVE(&c->auth_wait, r, link);
        if (r->kind == REQ_WATCH) {
            request_free(r);
            continue;
        }
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "etcd: %s: client closed", r->what);
        finish(r, -ECANCELED, &err, NULL);
    }
    while ((r = TAILQ_FIRST(&c->active))) {
        detach(r);
        if (r->kind == REQ_WATCH) {
            request_free(r); /* owner must not free it again: documented */
            continue;
        }
        if (r->kind == REQ_AUTH) {
            request_free(r);
            continue;
        }
        struct mm_error err;
        mm_error_set(&err, -ECANCELED, "etcd: %s: client closed", r->what);
        finish(r, -ECANCELED, &err, NULL);
    }
    if (c->multi) {
        ev_timer_stop(c->loop, &c->timer);
        curl_multi_cleanup(c->multi);
    }
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

struct ev_loop *etcd_client_loop(const struct etcd_client *c)
{
    return c->loop;
}

const char *etcd_client_endpoint(const struct etcd_client *c)
{
    return c->endpoints[c->current];
}

/* Append `"name":"<base64 of s>"` (s may hold any bytes). */
static int add_b64(struct mm_buf *b, const char *name, const void *s, size_t len)
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

/* The range end that selects every key with this prefix; "\0" (all keys) for "". */
static size_t prefix_end(const char *key, char *out, size_t size)
{
    size_t n = strlen(key);
    if (n >= size)
        n = size - 1;
    memcpy(out, key, n);
    while (n > 0) {
        unsigned char last = (unsigned char)out[n - 1];
        if (last < 0xff) {
            out[n - 1] = (char)(last + 1);
            return n;
        }
        n--;
    }
    out[0] = '\0';
    return 1; /* a single NUL byte: to the end of the keyspace */
}

static int add_key_range(struct mm_buf *b, const char *key, bool prefix, const char *range_end)
{
    size_t klen = strlen(key);
    int rc;
    if (prefix && klen == 0)
        rc = add_b64(b, "key", "", 1); /* key "\0" + range_end "\0" = everything */
    else
        rc = add_b64(b, "key", key, klen);
    if (rc < 0)
        return rc;
    if (prefix) {
        char end[1024];
        if (klen >= sizeof(end))
            return -ENAMETOOLONG;
        size_t n = prefix_end(key, end, sizeof(end));
        if ((rc = mm_buf_append(b, ",", 1)) < 0)
            return rc;
        return add_b64(b, "range_end", end, n);
    }
    if (range_end) {
        if ((rc = mm_buf_append(b, ",", 1)) < 0)
            return rc;
        return add_b64(b, "range_end", range_end, strlen(range_end));
    }
    return 0;
}

/* Submit a body built in b (rc = the building's status): the request takes the buffer. */
static int submit_body(struct etcd_client *c, enum req_kind kind, struct mm_buf *b, int rc,
                       bool idempotent, etcd_cb cb, void *arg, const char *op, const char *key,
                       struct request **out)
{
    if (rc < 0) {
        mm_buf_free(b);
        return rc;
    }
    return submit(c, kind, b->data, b->len, idempotent, cb, arg, op, key, out);
}

int etcd_range(struct etcd_client *c, const struct etcd_range_req *req, etcd_cb cb, void *arg)
{
    if (!req || !req->key)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{", 1);
    if (rc == 0)
        rc = add_key_range(&b, req->key, req->prefix, req->range_end);
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
    return submit_body(c, REQ_RANGE, &b, rc, true, cb, arg,
                       req->prefix ? "range prefix" : "range", req->key, NULL);
}

int etcd_put(struct etcd_client *c, const char *key, const char *value, size_t value_len,
             int64_t lease, etcd_cb cb, void *arg)
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
    return submit_body(c, REQ_PUT, &b, rc, false, cb, arg, "put", key, NULL);
}

int etcd_delete(struct etcd_client *c, const char *key, bool prefix, etcd_cb cb, void *arg)
{
    if (!key)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{", 1);
    if (rc == 0)
        rc = add_key_range(&b, key, prefix, NULL);
    if (rc == 0)
        rc = mm_buf_append(&b, "}", 1);
    return submit_body(c, REQ_DELETE, &b, rc, false, cb, arg,
                       prefix ? "delete prefix" : "delete", key, NULL);
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
            rc = add_key_range(b, op->key, op->prefix, NULL);
        }
        if (rc == 0)
            rc = mm_buf_append(b, "}}", 2);
    }
    return rc ? rc : mm_buf_append(b, "]", 1);
}

int etcd_txn(struct etcd_client *c, const struct etcd_txn *txn, etcd_cb cb, void *arg)
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
    return submit_body(c, REQ_TXN, &b, rc, read_only, cb, arg, "txn on", key, NULL);
}

static int lease_req(struct etcd_client *c, enum req_kind kind, const char *op, const char *json,
                     bool idempotent, etcd_cb cb, void *arg, int64_t id)
{
    char *body = strdup(json);
    if (!body)
        return -ENOMEM;
    char what[48];
    snprintf(what, sizeof(what), "%" PRId64, id);
    return submit(c, kind, body, strlen(body), idempotent, cb, arg, op, id ? what : NULL, NULL);
}

int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t id, etcd_cb cb, void *arg)
{
    if (ttl_s <= 0)
        return -EINVAL;
    char json[96];
    snprintf(json, sizeof(json), "{\"TTL\":\"%" PRId64 "\",\"ID\":\"%" PRId64 "\"}", ttl_s, id);
    /* With an explicit ID a second grant fails cleanly, so it may be retried. */
    return lease_req(c, REQ_LEASE_GRANT, "lease grant", json, id != 0, cb, arg, id);
}

int etcd_lease_keepalive(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    return lease_req(c, REQ_LEASE_KEEPALIVE, "lease keepalive", json, true, cb, arg, id);
}

int etcd_lease_revoke(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    /* Revoking twice only yields "not found": safe to retry. */
    return lease_req(c, REQ_LEASE_REVOKE, "lease revoke", json, true, cb, arg, id);
}

int etcd_lease_ttl(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg)
{
    char json[64];
    snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", id);
    return lease_req(c, REQ_LEASE_TTL, "lease ttl", json, true, cb, arg, id);
}

int etcd_compact(struct etcd_client *c, int64_t revision, bool physical, etcd_cb cb, void *arg)
{
    char json[96];
    snprintf(json, sizeof(json), "{\"revision\":\"%" PRId64 "\",\"physical\":%s}", revision,
             physical ? "true" : "false");
    char *body = strdup(json);
    if (!body)
        return -ENOMEM;
    return submit(c, REQ_COMPACT, body, strlen(body), true, cb, arg, "compact", NULL, NULL);
}

int etcd_watch_start(struct etcd_client *c, const struct etcd_watch_req *req, etcd_watch_cb cb,
                     void *arg, struct etcd_watch **out)
{
    if (!req || !req->key || !cb || !out)
        return -EINVAL;
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{\"create_request\":{", 19);
    if (rc == 0)
        rc = add_key_range(&b, req->key, req->prefix, NULL);
    if (rc == 0 && req->start_revision)
        rc = mm_buf_printf(&b, ",\"start_revision\":\"%" PRId64 "\"", req->start_revision);
    if (rc == 0 && req->progress_notify)
        rc = mm_buf_printf(&b, ",\"progress_notify\":true");
    if (rc == 0)
        rc = mm_buf_append(&b, "}}", 2);
    struct request *r = NULL;
    rc = submit_body(c, REQ_WATCH, &b, rc, true, NULL, arg,
                     req->prefix ? "watch prefix" : "watch", req->key, &r);
    if (rc < 0)
        return rc;
    r->watch_cb = cb;
    *out = (struct etcd_watch *)r;
    return 0;
}

void etcd_watch_free(struct etcd_watch *w)
{
    struct request *r = (struct request *)w;
    if (!r)
        return;
    r->watch_cb = NULL;
    if (r->dispatching) { /* inside our own delivery: the dispatcher frees it */
        r->free_requested = true;
        return;
    }
    if (!r->finished) {
        if (r->easy)
            detach(r);
        else {
            /* waiting for auth */
            struct request *it;
            TAILQ_FOREACH(it, &r->c->auth_wait, link) {
                if (it == r) {
                    TAILQ_REMOVE(&r->c->auth_wait, r, link);
                    break;
                }
            }
        }
    } else if (r->on_dirty) {
        TAILQ_REMOVE(&r->c->dirty, r, dirty);
    }
    request_free(r);
}

/* ---------------------------------------------------------------- synchronous helpers */

/* On the heap: a caller that stops waiting leaves it to the request, whose reply frees it. */
struct sync_ctx {
    bool done;
    bool abandoned;
    int status;
    struct mm_error err;
    struct etcd_response *resp;
};

static void sync_cb(int status, const struct mm_error *err, struct etcd_response *resp, void *arg)
{
    struct sync_ctx *s = arg;
    if (s->abandoned) { /* the caller gave up waiting; the client frees resp */
        free(s);
        return;
    }
    s->done = true;
    s->status = status;
    if (status < 0 && err)
        s->err = *err;
    if (resp) {
        etcd_response_keep(resp);
        s->resp = resp;
    }
}

static void sync_free(struct sync_ctx *s)
{
    if (s) {
        etcd_response_free(s->resp);
        free(s);
    }
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
}

int etcd_sync_wait(struct etcd_client *c, const bool *done, unsigned timeout_ms)
{
    ev_timer deadline;
    ev_timer_init(&deadline, wake_cb, (double)timeout_ms / 1000.0, 0.);
    ev_timer_start(c->loop, &deadline);
    ev_tstamp end = ev_now(c->loop) + (double)timeout_ms / 1000.0;
    while (!*done) {
        ev_run(c->loop, EVRUN_ONCE);
        if (!*done && ev_now(c->loop) >= end)
            break;
    }
    ev_timer_stop(c->loop, &deadline);
    return *done ? 0 : -ETIMEDOUT;
}

/* Wait for the request started with rc on *sp. On giving up, *sp is left to the request
 * (set to NULL here); the caller frees it otherwise, with sync_free. */
static int sync_finish(struct etcd_client *c, int rc, struct sync_ctx **sp, struct mm_error *err)
{
    if (rc < 0)
        return mm_error_set(err, rc, "etcd: could not start request: %s", mm_strerror(rc));
    struct sync_ctx *s = *sp;
    /* the request deadline bounds the reply; the extra second covers failover */
    unsigned bound = c->request_timeout_ms * (unsigned)c->n_endpoints + 1000;
    if (c->user)
        bound *= 2;
    if (etcd_sync_wait(c, &s->done, bound) < 0) {
        s->abandoned = true;
        *sp = NULL;
        return mm_error_set(err, -ETIMEDOUT, "etcd %s: no reply within %u ms",
                            etcd_client_endpoint(c), bound);
    }
    if (s->status < 0 && err)
        *err = s->err;
    return s->status;
}

int etcd_sync_range(struct etcd_client *c, const struct etcd_range_req *req,
                    struct etcd_response **out, struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_range(c, req, sync_cb, s) : -ENOMEM, &s, err);
    if (rc == 0 && out) {
        *out = s->resp;
        s->resp = NULL;
    }
    sync_free(s);
    return rc;
}

int etcd_sync_put(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                  int64_t *revision, struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    size_t len = value ? strlen(value) : 0;
    int rc = sync_finish(c, s ? etcd_put(c, key, value, len, lease, sync_cb, s) : -ENOMEM, &s, err);
    if (rc == 0 && revision)
        *revision = s->resp->revision;
    sync_free(s);
    return rc;
}

int etcd_sync_delete(struct etcd_client *c, const char *key, bool prefix, int64_t *deleted,
                     struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_delete(c, key, prefix, sync_cb, s) : -ENOMEM, &s, err);
    if (rc == 0 && deleted)
        *deleted = s->resp->op.deleted;
    sync_free(s);
    return rc;
}

int etcd_sync_txn(struct etcd_client *c, const struct etcd_txn *txn, struct etcd_response **out,
                  struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_txn(c, txn, sync_cb, s) : -ENOMEM, &s, err);
    if (rc == 0 && out) {
        *out = s->resp;
        s->resp = NULL;
    }
    sync_free(s);
    return rc;
}

int etcd_sync_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id, struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_lease_grant(c, ttl_s, 0, sync_cb, s) : -ENOMEM, &s, err);
    if (rc == 0 && id)
        *id = s->resp->lease_id;
    sync_free(s);
    return rc;
}

int etcd_sync_lease_revoke(struct etcd_client *c, int64_t id, struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_lease_revoke(c, id, sync_cb, s) : -ENOMEM, &s, err);
    sync_free(s);
    return rc;
}

int etcd_sync_compact(struct etcd_client *c, int64_t revision, struct mm_error *err)
{
    struct sync_ctx *s = calloc(1, sizeof(*s));
    int rc = sync_finish(c, s ? etcd_compact(c, revision, true, sync_cb, s) : -ENOMEM, &s, err);
    sync_free(s);
    return rc;
}
