/* rest.c - KServe V2 REST over libmicrohttpd (rest.h).
 *
 * A request's way: the HTTP thread reads it (bounded), converts the JSON once to the gRPC
 * request's bytes, suspends the connection and posts the request to the loop (mailbox); the
 * loop routes it (route_submit) and, when the route answers, stores the outcome and resumes the
 * connection; the HTTP thread renders the outcome to JSON and answers.
 * Ownership of a struct rest_req: the HTTP thread's, except between its post and its resume,
 * when it is the loop's (the HTTP thread does not touch it while the connection is suspended:
 * a suspended connection gets no callback, and the daemon is stopped only once every
 * connection is resumed). */
#include "mm/rest.h"

#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <grpc/slice.h>
#include <microhttpd.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/httpd.h"
#include "mm/https.h"
#include "mm/keys.h"
#include "mm/mailbox.h"
#include "mm/route.h"
#include "mm/rpc.h"
#include "mm/v2json.h"

#define MAX_VERSION 64         /* bytes of a version in a path */
#define MAX_MESSAGE 1024       /* bytes of a status message kept */
#define REST_STOP_WAIT_MS 2000 /* rest_free waits this long for resumed requests' answers */
#define GONE_RECHECK_S 1.0     /* a held request whose client sent more: its socket looked at
                                  again this often for the client's end */

enum req_state {
    ST_READING, /* headers and body arriving (HTTP thread) */
    ST_AT_LOOP, /* posted, suspended (the loop's) */
    ST_ANSWERED /* the loop's outcome is in, resumed (HTTP thread) */
};

struct rest_req {
    struct mailbox_item item;
    struct rest *x;
    struct MHD_Connection *conn;
    enum req_state state;
    bool too_big;
    size_t dropped; /* bytes of body over a bound, read and dropped */
    char *body;
    size_t len, cap;
    /* what is routed */
    enum route_kind kind;
    char name[KEYS_NAME_MAX + 2];
    size_t name_len;
    bool concrete;
    grpc_byte_buffer *request;    /* to the loop: taken by route_submit */
    struct route_call *rcall;     /* the loop's */
    int fd;                       /* the connection's socket (-1: unknown), read by the loop */
    ev_io gone;                   /* the loop's: the client closing while the call waits */
    ev_timer gone_again;          /* ... looked for again while bytes wait unread */
    struct rest_req *prev, *next; /* the loop's list of requests it holds */
    /* the outcome */
    grpc_status_code status;
    char message[MAX_MESSAGE];
    grpc_byte_buffer *response;
};

struct rest {
    struct ev_loop *loop;
    struct MHD_Daemon *daemon;
    struct https *https; /* NULL: plain HTTP */
    struct mailbox *mb;
    struct route *route; /* the loop's */
    struct rest_req *held;
    size_t max_body;
    unsigned timeout_ms;
    char version[64];
    pthread_mutex_t lock; /* stopping, against a post racing rest_free */
    bool stopping;
    _Atomic bool ready;
    _Atomic size_t bodies; /* bytes of bodies held */
    _Atomic int resumed;   /* requests resumed and not yet completed (rest_free waits) */
};

int rest_is_off(const char *listen)
{
    return httpd_is_off(listen);
}

/* ------------------------------------------------------------------ answers (HTTP thread) */

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, char *body,
                                 const char *allow)
{
    /* body is malloc'd and taken (NULL: empty) */
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (body)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *doc)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!text)
        return send_body(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL);
    return send_body(c, status, text, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *allow,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *allow,
                                  const char *fmt, ...)
{
    char msg[MAX_MESSAGE + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *doc = cJSON_CreateObject();
    char *text = NULL;
    if (doc && cJSON_AddStringToObject(doc, "error", msg))
        text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return send_body(c, status, text, allow);
}

/* gRPC's status as HTTP's (as grpc-gateway maps them). */
static unsigned http_status(grpc_status_code s)
{
    switch (s) {
    case GRPC_STATUS_OK:
        return MHD_HTTP_OK;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_OUT_OF_RANGE:
        return MHD_HTTP_BAD_REQUEST;
    case GRPC_STATUS_NOT_FOUND:
        return MHD_HTTP_NOT_FOUND;
    case GRPC_STATUS_ALREADY_EXISTS:
    case GRPC_STATUS_ABORTED:
        return MHD_HTTP_CONFLICT;
    case GRPC_STATUS_PERMISSION_DENIED:
        return MHD_HTTP_FORBIDDEN;
    case GRPC_STATUS_UNAUTHENTICATED:
        return MHD_HTTP_UNAUTHORIZED;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return MHD_HTTP_TOO_MANY_REQUESTS;
    case GRPC_STATUS_UNIMPLEMENTED:
        return MHD_HTTP_NOT_IMPLEMENTED;
    case GRPC_STATUS_UNAVAILABLE:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return MHD_HTTP_GATEWAY_TIMEOUT;
    case GRPC_STATUS_CANCELLED:
        return 499; /* the client closed the request, as nginx says */
    default:
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

static cJSON *tensor_metadata(Inference__ModelMetadataResponse__TensorMetadata **t, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray();
        if (!o || !shape || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(shape);
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddStringToObject(o, "name", t[i]->name ? t[i]->name : "");
        cJSON_AddStringToObject(o, "datatype", t[i]->datatype ? t[i]->datatype : "");
        for (size_t k = 0; k < t[i]->n_shape; k++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i]->shape[k]));
        cJSON_AddItemToObject(o, "shape", shape);
    }
    return arr;
}

/* The outcome the loop stored, as the answer. */
static enum MHD_Result answer(struct rest_req *q)
{
    struct MHD_Connection *c = q->conn;
    if (q->status != GRPC_STATUS_OK)
        return send_error(c, http_status(q->status), NULL, "%s", q->message);
    size_t len = 0;
    void *flat = q->response ? rpc_flatten(q->response, &len) : NULL;
    if (q->response && !flat)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
    enum MHD_Result rc;
    if (q->kind == ROUTE_INFER) {
        Inference__ModelInferResponse *m = inference__model_infer_response__unpack(NULL, len, flat);
        char *text = NULL;
        struct mm_error err = {0};
        if (!m)
            rc =
                send_error(c, MHD_HTTP_BAD_GATEWAY, NULL,
                           "model %s: the runtime's response is not a ModelInferResponse", q->name);
        else if (v2json_response_render(m, false, &text, &err) < 0)
            rc = send_error(c, MHD_HTTP_BAD_GATEWAY, NULL, "model %s: %s", q->name, err.msg);
        else
            rc = send_body(c, MHD_HTTP_OK, text, NULL);
        if (m)
            inference__model_infer_response__free_unpacked(m, NULL);
    } else if (q->kind == ROUTE_METADATA) {
        Inference__ModelMetadataResponse *m =
            inference__model_metadata_response__unpack(NULL, len, flat);
        cJSON *doc = m ? cJSON_CreateObject() : NULL, *versions = cJSON_CreateArray();
        if (!m) {
            cJSON_Delete(versions);
            rc = send_error(c, MHD_HTTP_BAD_GATEWAY, NULL,
                            "model %s: the runtime's response is not a ModelMetadataResponse",
                            q->name);
        } else {
            cJSON_AddStringToObject(doc, "name", m->name ? m->name : "");
            for (size_t i = 0; versions && i < m->n_versions; i++)
                cJSON_AddItemToArray(versions, cJSON_CreateString(m->versions[i]));
            cJSON_AddItemToObject(doc, "versions", versions);
            cJSON_AddStringToObject(doc, "platform", m->platform ? m->platform : "");
            cJSON_AddItemToObject(doc, "inputs", tensor_metadata(m->inputs, m->n_inputs));
            cJSON_AddItemToObject(doc, "outputs", tensor_metadata(m->outputs, m->n_outputs));
            rc = send_json(c, MHD_HTTP_OK, doc);
            inference__model_metadata_response__free_unpacked(m, NULL);
        }
    } else {
        Inference__ModelReadyResponse *m = inference__model_ready_response__unpack(NULL, len, flat);
        bool ready = m && m->ready;
        if (m)
            inference__model_ready_response__free_unpacked(m, NULL);
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "name", q->name);
        cJSON_AddBoolToObject(doc, "ready", ready);
        /* the status is the answer (V2: 200 true, 4xx false) */
        rc = send_json(c, ready ? MHD_HTTP_OK : MHD_HTTP_BAD_REQUEST, doc);
    }
    free(flat);
    return rc;
}

/* ------------------------------------------------------------------ the loop's part */

static void resume(struct rest_req *q, grpc_status_code status, const char *message,
                   grpc_byte_buffer *response)
{
    q->status = status;
    snprintf(q->message, sizeof(q->message), "%s", message ? message : "");
    q->response = response;
    q->state = ST_ANSWERED;
    atomic_fetch_add_explicit(&q->x->resumed, 1, memory_order_relaxed);
    MHD_resume_connection(q->conn); /* the HTTP thread's from here */
}

static void unhold(struct rest_req *q)
{
    struct rest *x = q->x;
    ev_io_stop(x->loop, &q->gone); /* before the HTTP thread may close the socket */
    ev_timer_stop(x->loop, &q->gone_again);
    if (q->prev)
        q->prev->next = q->next;
    else
        x->held = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void on_routed(grpc_status_code status, const char *message, grpc_byte_buffer *response,
                      void *arg)
{
    struct rest_req *q = arg;
    unhold(q);
    resume(q, status, message, response);
}

/* Whether the client of a held request has closed its end (or reset it): a hang-up seen by
 * poll, which says so even when bytes it sent wait unread (a pipelined request, a TLS alert),
 * where a read would only see those bytes. Nothing is read. */
static bool client_gone(int fd, bool *pending)
{
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    *pending = false;
    if (poll(&p, 1, 0) != 1)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return true;
    *pending = (p.revents & POLLIN) != 0;
    return false;
}

static void cancel_gone(struct rest_req *q)
{
    route_cancel(q->rcall);
    q->rcall = NULL;
    unhold(q);
    resume(q, GRPC_STATUS_CANCELLED, "the client closed the connection", NULL);
}

/* The socket of a held request is readable: the client closed it while its call waits, so the
 * call is cancelled and its slot (--max-parked, the body's bytes) freed at once rather than at
 * the answer or the timeout. Bytes that came instead stay for the HTTP thread: the socket stays
 * readable, so it is looked at every GONE_RECHECK_S from then on. */
static void on_gone(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct rest_req *q = w->data;
    bool pending;
    if (client_gone(w->fd, &pending)) {
        cancel_gone(q);
    } else if (pending) {
        ev_io_stop(loop, w);
        ev_timer_again(loop, &q->gone_again);
    }
}

static void on_gone_again(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rest_req *q = w->data;
    bool pending;
    if (client_gone(q->fd, &pending))
        cancel_gone(q);
}

static void on_posted(struct mailbox_item *item, void *arg)
{
    struct rest *x = arg;
    struct rest_req *q = (struct rest_req *)item;
    grpc_byte_buffer *request = q->request;
    q->request = NULL;
    if (x->stopping || !x->route) {
        grpc_byte_buffer_destroy(request);
        resume(q, GRPC_STATUS_UNAVAILABLE,
               x->stopping ? "the server is stopping" : "not ready: the node is starting", NULL);
        return;
    }
    q->next = x->held;
    if (q->next)
        q->next->prev = q;
    x->held = q;
    if (q->fd >= 0) { /* stopped by unhold, so before route_submit (done may run inside it) */
        ev_io_set(&q->gone, q->fd, EV_READ);
        ev_io_start(x->loop, &q->gone);
    }
    int e = route_submit(x->route, q->kind, q->name, q->name_len, q->concrete, request,
                         x->timeout_ms, on_routed, q, &q->rcall);
    if (e < 0) { /* on_routed never runs */
        unhold(q);
        resume(q, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    }
}

/* ------------------------------------------------------------------ requests (HTTP thread) */

/* path (after "/v2/models/"): NAME[/versions/V][/SUFFIX] into q; *suffix "" "infer" "ready".
 * 0, or -ENOENT for another shape. */
static int parse_model_path(const char *path, struct rest_req *q, char *version,
                            const char **suffix)
{
    const char *slash = strchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : strlen(path);
    if (n == 0)
        return -ENOENT;
    q->name_len = n < sizeof(q->name) - 1 ? n : sizeof(q->name) - 1; /* longer: not found */
    memcpy(q->name, path, q->name_len);
    q->name[q->name_len] = '\0';
    version[0] = '\0';
    const char *rest = slash ? slash : "";
    if (strncmp(rest, "/versions/", 10) == 0) {
        const char *v = rest + 10, *end = strchr(v, '/');
        size_t vn = end ? (size_t)(end - v) : strlen(v);
        if (vn == 0 || vn >= MAX_VERSION)
            return -ENOENT;
        memcpy(version, v, vn);
        version[vn] = '\0';
        rest = v + vn;
    }
    if (rest[0] == '\0')
        *suffix = "";
    else if (strcmp(rest, "/infer") == 0)
        *suffix = "infer";
    else if (strcmp(rest, "/ready") == 0)
        *suffix = "ready";
    else
        return -ENOENT;
    return 0;
}

/* A message packed into a new byte buffer, without an intermediate copy. NULL without memory. */
static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Hand q to the loop; the connection waits suspended. */
static enum MHD_Result post(struct rest *x, struct rest_req *q)
{
    pthread_mutex_lock(&x->lock);
    if (x->stopping) {
        pthread_mutex_unlock(&x->lock);
        grpc_byte_buffer_destroy(q->request);
        q->request = NULL;
        return send_error(q->conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "the server is stopping");
    }
    q->state = ST_AT_LOOP;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    q->fd = ci ? (int)ci->connect_fd : -1;
    MHD_suspend_connection(q->conn);
    mailbox_post(x->mb, &q->item);
    pthread_mutex_unlock(&x->lock);
    return MHD_YES;
}

static enum MHD_Result server_metadata(struct rest *x, struct MHD_Connection *c)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "name", "modelmesh-c");
    cJSON_AddStringToObject(doc, "version", x->version);
    cJSON_AddItemToObject(doc, "extensions", cJSON_CreateArray());
    return send_json(c, MHD_HTTP_OK, doc);
}

/* The whole request is in: answer it, or convert it and post it. */
static enum MHD_Result dispatch(struct rest *x, struct rest_req *q, const char *url,
                                const char *method)
{
    struct MHD_Connection *c = q->conn;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post_m = strcmp(method, "POST") == 0;
    if (q->too_big)
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                          "the request body is larger than %zu bytes", x->max_body);
    if (q->dropped)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                          "too many request bodies held at once; try again");
    if (strcmp(url, "/v2") == 0 || strcmp(url, "/v2/") == 0) {
        if (!get)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD", "%s /v2: use GET",
                              method);
        return server_metadata(x, c);
    }
    if (strcmp(url, "/v2/health/live") == 0 || strcmp(url, "/v2/health/ready") == 0) {
        if (!get)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD", "%s %s: use GET", method,
                              url);
        if (url[11] == 'r' && !atomic_load_explicit(&x->ready, memory_order_acquire))
            return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "not ready");
        return send_body(c, MHD_HTTP_OK, NULL, NULL);
    }
    char version[MAX_VERSION];
    const char *suffix = NULL;
    if (strncmp(url, "/v2/models/", 11) != 0 || parse_model_path(url + 11, q, version, &suffix) < 0)
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                          "no such path: the V2 paths are /v2, /v2/health/live|ready, "
                          "/v2/models/NAME[/versions/V][/ready|/infer]");
    bool infer = strcmp(suffix, "infer") == 0;
    if (infer ? !post_m : !get)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, infer ? "POST" : "GET, HEAD",
                          "%s %s: use %s", method, url, infer ? "POST" : "GET");
    /* mm-model-id names a concrete model id, as on gRPC */
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "mm-model-id");
    if (id && id[0]) {
        size_t n = strlen(id);
        q->name_len = n < sizeof(q->name) - 1 ? n : sizeof(q->name) - 1;
        memcpy(q->name, id, q->name_len);
        q->name[q->name_len] = '\0';
        q->concrete = true;
    }
    if (infer) {
        Inference__ModelInferRequest *r = NULL;
        struct mm_error err = {0};
        int e = v2json_request_parse(q->body ? q->body : "", q->len, q->name, &r, &err);
        if (e < 0)
            return send_error(c,
                              e == -ENOMEM  ? MHD_HTTP_SERVICE_UNAVAILABLE
                              : e == -E2BIG ? MHD_HTTP_CONTENT_TOO_LARGE
                                            : MHD_HTTP_BAD_REQUEST,
                              NULL, "%s", err.msg);
        if (version[0])
            r->model_version = version; /* not the parser's: unset before the free */
        q->kind = ROUTE_INFER;
        q->request = pack(&r->base);
        r->model_version = NULL;
        v2json_request_free(r);
    } else {
        const char *v = version[0] ? version : "";
        if (suffix[0] == '\0') {
            Inference__ModelMetadataRequest m = INFERENCE__MODEL_METADATA_REQUEST__INIT;
            m.name = q->name;
            m.version = (char *)v;
            q->kind = ROUTE_METADATA;
            q->request = pack(&m.base);
        } else {
            Inference__ModelReadyRequest m = INFERENCE__MODEL_READY_REQUEST__INIT;
            m.name = q->name;
            m.version = (char *)v;
            q->kind = ROUTE_READY;
            q->request = pack(&m.base);
        }
    }
    /* the body is converted: it goes now */
    atomic_fetch_sub_explicit(&x->bodies, q->cap, memory_order_relaxed);
    free(q->body);
    q->body = NULL;
    q->len = q->cap = 0;
    if (!q->request)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
    return post(x, q);
}

/* Append data to q's body within the bounds; false when over them (the rest is dropped). */
static bool take_body(struct rest *x, struct rest_req *q, const char *data, size_t n)
{
    if (q->too_big || n > x->max_body - q->len) {
        q->too_big = true;
        return false;
    }
    if (q->len + n + 1 > q->cap) {
        size_t cap = q->cap ? q->cap : 4096;
        while (cap < q->len + n + 1)
            cap *= 2;
        if (cap > x->max_body + 1)
            cap = x->max_body + 1;
        size_t grow = cap - q->cap;
        if (atomic_fetch_add_explicit(&x->bodies, grow, memory_order_relaxed) + grow >
            REST_BODIES_BYTES) {
            atomic_fetch_sub_explicit(&x->bodies, grow, memory_order_relaxed);
            return false;
        }
        char *b = realloc(q->body, cap);
        if (!b) {
            atomic_fetch_sub_explicit(&x->bodies, grow, memory_order_relaxed);
            return false;
        }
        q->body = b;
        q->cap = cap;
    }
    memcpy(q->body + q->len, data, n);
    q->len += n;
    q->body[q->len] = '\0';
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **ctx)
{
    struct rest *x = cls;
    struct rest_req *q = *ctx;
    if (!q) { /* the headers are in */
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > x->max_body)
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                              "the request body is larger than %zu bytes", x->max_body);
        if (x->https && !https_client_verified(x->https, c))
            return send_error(c, MHD_HTTP_FORBIDDEN, NULL, "a client certificate signed by the "
                              "client CA is required");
        if (!(q = calloc(1, sizeof(*q))))
            return MHD_NO;
        q->x = x;
        q->fd = -1;
        ev_io_init(&q->gone, on_gone, -1, EV_READ);
        q->gone.data = q;
        ev_timer_init(&q->gone_again, on_gone_again, 0., GONE_RECHECK_S);
        q->gone_again.data = q;
        q->conn = c;
        *ctx = q;
        return MHD_YES;
    }
    if (q->state == ST_ANSWERED)
        return answer(q);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (take_body(x, q, upload_data, n))
            return MHD_YES;
        /* over a bound (a chunked body, whose size was not announced): the rest is read and
         * dropped, to answer once it is in (MHD answers only a whole request), up to as much
         * again; a client that sends more is cut */
        q->dropped += n;
        return q->dropped > x->max_body ? MHD_NO : MHD_YES;
    }
    return dispatch(x, q, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx,
                         enum MHD_RequestTerminationCode toe)
{
    struct rest *x = cls;
    struct rest_req *q = *ctx;
    if (!q)
        return;
    *ctx = NULL;
    if (q->state == ST_ANSWERED)
        atomic_fetch_sub_explicit(&x->resumed, 1, memory_order_release);
    atomic_fetch_sub_explicit(&x->bodies, q->cap, memory_order_relaxed);
    free(q->body);
    if (q->request)
        grpc_byte_buffer_destroy(q->request);
    if (q->response)
        grpc_byte_buffer_destroy(q->response);
    free(q);
}

/* ------------------------------------------------------------------ the server */

int rest_new(struct ev_loop *loop, const struct rest_config *cfg, struct rest **out, int *port,
             struct mm_error *err)
{
    *out = NULL;
    struct rest *x = calloc(1, sizeof(*x));
    if (!x)
        return mm_error_set(err, -ENOMEM, "REST: out of memory");
    x->loop = loop;
    x->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : REST_MAX_BODY_BYTES;
    x->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : REST_TIMEOUT_MS;
    snprintf(x->version, sizeof(x->version), "%s", cfg->version ? cfg->version : "");
    pthread_mutex_init(&x->lock, NULL);
    atomic_init(&x->ready, false);
    atomic_init(&x->bodies, 0);
    atomic_init(&x->resumed, 0);
    int e = mailbox_new(loop, on_posted, x, &x->mb, err);
    if (e < 0) {
        pthread_mutex_destroy(&x->lock);
        free(x);
        return e;
    }
    struct MHD_OptionItem tls_items[HTTPS_MHD_OPTIONS] = {{MHD_OPTION_END, 0, NULL}};
    if (cfg->tls) {
        e = https_new(cfg->tls, cfg->tls_require_client, &x->https, err);
        if (e < 0) {
            mailbox_free(x->mb);
            pthread_mutex_destroy(&x->lock);
            free(x);
            return e;
        }
        https_mhd_options(x->https, tls_items);
    }
    unsigned conns = cfg->max_connections ? cfg->max_connections : REST_MAX_CONNECTIONS;
    struct httpd_config hc = {
        .flag = "--rest-listen",
        .listen = cfg->listen ? cfg->listen : REST_DEFAULT_LISTEN,
        .max_connections = conns,
        .max_per_ip = conns < REST_MAX_PER_IP ? conns : REST_MAX_PER_IP,
        .idle_timeout_s = cfg->idle_timeout_s ? cfg->idle_timeout_s : REST_IDLE_TIMEOUT_S,
        .memory_bytes = REST_HEADER_BYTES,
        .extra_flags = MHD_ALLOW_SUSPEND_RESUME | (x->https ? MHD_USE_TLS : 0),
        .extra_options = tls_items,
        .handler = on_request,
        .handler_cls = x,
        .completed = on_completed,
        .completed_cls = x,
    };
    e = httpd_start(&hc, &x->daemon, port, err);
    if (e < 0) {
        https_free(x->https);
        mailbox_free(x->mb);
        pthread_mutex_destroy(&x->lock);
        free(x);
        return e;
    }
    ev_unref(loop); /* the server alone keeps no loop running (its mailbox's watcher) */
    *out = x;
    return 0;
}

void rest_set_route(struct rest *x, struct route *r)
{
    if (!x)
        return;
    x->route = r;
    atomic_store_explicit(&x->ready, r != NULL, memory_order_release);
}

void rest_set_ready(struct rest *x, bool ready)
{
    if (x)
        atomic_store_explicit(&x->ready, ready, memory_order_release);
}

void rest_free(struct rest *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->lock);
    x->stopping = true; /* nothing is posted after this */
    pthread_mutex_unlock(&x->lock);
    atomic_store_explicit(&x->ready, false, memory_order_release);
    ev_ref(x->loop);
    mailbox_free(x->mb); /* what was posted is answered 503 (on_posted sees stopping) */
    while (x->held) {
        struct rest_req *q = x->held;
        route_cancel(q->rcall);
        unhold(q);
        resume(q, GRPC_STATUS_UNAVAILABLE, "the server is stopping", NULL);
    }
    /* no new connection; the resumed requests answered (stopping the daemon would cut them, and
     * stopping it with connections not yet resumed is undefined), bounded */
    MHD_socket lfd = MHD_quiesce_daemon(x->daemon);
    for (int i = 0;
         i < REST_STOP_WAIT_MS / 2 && atomic_load_explicit(&x->resumed, memory_order_acquire) > 0;
         i++)
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    httpd_stop(x->daemon);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd); /* quiesced: ours to close */
    https_free(x->https); /* no handshake asks it now */
    pthread_mutex_destroy(&x->lock);
    free(x);
}
