/* route.c - the inference path, top to bottom (see route.h and docs/routing.md):
 * a call arrives -> its model is named (headers or field 1, read on the wire, never decoded)
 * -> a vmodel is resolved to its active model id -> a Loaded copy is picked -> the request's
 * bytes are forwarded with mm-model-id and mm-hop -> the answer is passed back as it is.
 * The fast path does all of that on the completion-queue thread, from the table's snapshot
 * (fast_call, on_fast_forwarded); whatever it cannot finish there (no Loaded copy, no snapshot
 * yet) goes to the loop (on_model_call), where the call parks on its model until one is
 * Loaded, and is forwarded from the loop. */
#include "mm/route.h"

#include <errno.h>
#include <ev.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/metrics.h"
#include "mm/rpc.h"
#include "mm/table.h"
#include "mm/wire.h"

#define WHO "route"
#define MAX_SEGMENTS 128 /* slices of a request read in place; more: one copy */
#define MAX_WAKES 16     /* parks of one call (a woken call that finds no copy parks again) */
#define AGAIN_MS 500     /* a call parked after its copy failed it tries that copy again after
                            this, doubling: a peer restarted on its address, or a connection
                            that broke for a moment, changes nothing in the registry to wake it */
#define SHOWN_NAME 128   /* bytes of a bad name quoted in a message */

enum method { M_INFER, M_METADATA, M_READY, M_LIVE, M_SERVER_READY, M_SERVER_METADATA, N_METHODS };

static const struct {
    const char *path, *what;
} methods[N_METHODS] = {
    [M_INFER] = {"/inference.GRPCInferenceService/ModelInfer", "ModelInfer"},
    [M_METADATA] = {"/inference.GRPCInferenceService/ModelMetadata", "ModelMetadata"},
    [M_READY] = {"/inference.GRPCInferenceService/ModelReady", "ModelReady"},
    [M_LIVE] = {"/inference.GRPCInferenceService/ServerLive", "ServerLive"},
    [M_SERVER_READY] = {"/inference.GRPCInferenceService/ServerReady", "ServerReady"},
    [M_SERVER_METADATA] = {"/inference.GRPCInferenceService/ServerMetadata", "ServerMetadata"},
};

struct route;

struct route_method {
    struct route *r;
    enum method m;
};

/* One call being routed: parked on its model, or forwarded. */
struct route_call {
    struct route *r;
    struct rpc_call *call;    /* a served call; NULL for an in-process one (route_submit) */
    route_done_cb done;       /* in-process: the callback, its arg, the request (owned), the */
    void *done_arg;           /* deadline (monotonic ms), when it was submitted (metrics on) */
    grpc_byte_buffer *request;
    int64_t deadline_ms, submitted_ns;
    struct route_call **handle; /* in-process: the caller's handle, cleared when it ends */
    enum method m;
    bool hop;                 /* arrived on an internal port or with mm-hop: local only */
    char id[KEYS_NAME_MAX + 1]; /* the concrete model id */
    size_t len;
    char name[KEYS_NAME_MAX + 1]; /* the name as the client gave it (messages) */
    struct table_waiter w;
    ev_timer wait_timer;      /* parked: max_wait_ms or the deadline */
    ev_timer again_timer;     /* parked after a failed copy: try it again (AGAIN_MS) */
    unsigned wakes;
    struct table_target tg;   /* forwarded: the copy */
    struct rpc_request *req;  /* forwarded: the call to it */
    unsigned tries;
    char excluded[KEYS_NAME_MAX + 1]; /* the copy that failed once */
    size_t excluded_len;
    bool unreached;                  /* ... because its peer could not be reached */
    int64_t parked_ns, forwarded_ns; /* monotonic, metrics on only: when parked, forwarded */
    metric_model_t model;            /* its label (metrics on) */
    struct route_call *prev, *next; /* in r->held */
};

struct route {
    struct route_config cfg;
    struct ev_loop *loop;
    char name[KEYS_NAME_MAX + 1];
    char version[64];
    struct route_method rm[N_METHODS];
    struct route_call *held;
    struct route_stats stats;
    /* metrics (all NULL when off) */
    struct metrics *reg;
    struct metric *api, *invoke, *queue_delay, *forwarded, *retried, *in_flight;
};

/* The fixed label values: the model methods (enum method's first three), forward targets,
 * ports. */
static const char *const method_values[] = {"ModelInfer", "ModelMetadata", "ModelReady"};
static const char *const to_values[] = {"local", "remote"};
static const char *const port_values[] = {"external", "internal"};

/* A model call's tag (rpc_call_tag): its model's label handle, and TAG_COUNTED once it counts
 * in mm_route_in_flight (so that a call rpc answers before the route saw it is not uncounted). */
#define TAG_COUNTED 0x80000000u
#define TAG_LABELLED 0x40000000u /* the label below is set */

static metric_model_t model_of(struct rpc_call *c)
{
    return rpc_call_tag(c) & ~(TAG_COUNTED | TAG_LABELLED);
}

/* The call's model label, once the model is known to exist (a copy picked, loaded while it
 * was parked, or a vmodel name resolved): names that are not found never take one of the
 * bounded labels. The label is the name the client gave (a vmodel's, as ModelMesh labels it),
 * or the concrete id; the first label given stays. A served call keeps it in its tag; an
 * in-process call (c NULL, route_submit) in its route_call only, where the caller stores it. */
static metric_model_t label(struct route *r, struct rpc_call *c, const char *name, size_t len)
{
    if (!r->reg)
        return 0;
    if (c && (rpc_call_tag(c) & TAG_LABELLED))
        return model_of(c);
    metric_model_t mo = metrics_model(r->reg, name, len);
    if (c)
        rpc_call_set_tag(c, TAG_COUNTED | TAG_LABELLED | mo);
    return mo;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    return mono_ns() / 1000000;
}

/* A served call and an in-process one, seen alike. */
static grpc_byte_buffer *rcall_request(const struct route_call *rc)
{
    return rc->call ? rpc_call_request(rc->call) : rc->request;
}

static int64_t rcall_remaining_ms(const struct route_call *rc)
{
    return rc->call ? rpc_call_remaining_ms(rc->call) : rc->deadline_ms - mono_ms();
}

static bool rcall_cancelled(const struct route_call *rc)
{
    return rc->call ? rpc_call_cancelled(rc->call) : false; /* route_cancel frees it at once */
}

/* ------------------------------------------------------------------ ending a call */

/* The time a parked call waited, once it stops waiting. */
static void unparked(struct route_call *rc)
{
    if (rc->parked_ns) {
        metric_observe(rc->r->queue_delay, rc->model, 0, 0,
                       (double)(mono_ns() - rc->parked_ns) / 1e6);
        rc->parked_ns = 0;
    }
}

static void rcall_free(struct route_call *rc)
{
    struct route *r = rc->r;
    unparked(rc);
    ev_timer_stop(r->loop, &rc->wait_timer);
    ev_timer_stop(r->loop, &rc->again_timer);
    if (rc->prev)
        rc->prev->next = rc->next;
    else
        r->held = rc->next;
    if (rc->next)
        rc->next->prev = rc->prev;
    r->stats.held--;
    if (rc->request)
        grpc_byte_buffer_destroy(rc->request);
    free(rc);
}

/* Answer and forget: the call is released by the reply. */
static void finish(struct route_call *rc, grpc_byte_buffer *response, grpc_status_code status,
                   const char *message)
{
    if (!rc->call) { /* in-process: forgotten first, so that the callback may free its owner */
        route_done_cb done = rc->done;
        void *arg = rc->done_arg;
        if (rc->r->reg && !rc->r->cfg.internal) /* what on_replied records for a served call */
            metric_observe(rc->r->api, rc->model, rc->m, (unsigned)status,
                           (double)(mono_ns() - rc->submitted_ns) / 1e6);
        if (rc->handle)
            *rc->handle = NULL;
        rcall_free(rc);
        if (status != GRPC_STATUS_OK && response) {
            grpc_byte_buffer_destroy(response);
            response = NULL;
        }
        done(status, message ? message : "", response, arg);
        return;
    }
    rpc_call_on_cancel(rc->call, NULL, NULL);
    rpc_call_reply(rc->call, response, status, message);
    rcall_free(rc);
}

static void finishf(struct route_call *rc, grpc_status_code status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finishf(struct route_call *rc, grpc_status_code status, const char *fmt, ...)
{
    char msg[4 * RPC_MAX_STATUS_MESSAGE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    finish(rc, NULL, status, msg);
}

/* ------------------------------------------------------------------ forwarding */

static void dispatch(struct route_call *rc);

/* Whether a peer's UNAVAILABLE says it was not reached (connection refused or reset, a ping
 * not answered: gRPC's own messages) rather than answered by a live node that does not serve
 * the copy (route's refusals all name the model: "model ... is not loaded ..."). */
static bool not_reached(const char *details)
{
    return !details || strncmp(details, "model ", 6) != 0;
}

static void on_forwarded(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                         void *arg)
{
    struct route_call *rc = arg;
    struct route *r = rc->r;
    rc->req = NULL;
    if (rc->tg.local && rc->forwarded_ns)
        metric_observe(r->invoke, rc->model, rc->m, status,
                       (double)(mono_ns() - rc->forwarded_ns) / 1e6);
    table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
    /* UNAVAILABLE: not served (the peer was unreachable, does not hold the model any more, or
     * its runtime could not take the call): once more, on another copy */
    if (status == GRPC_STATUS_UNAVAILABLE && !rc->hop && rc->tries == 0 &&
        !rcall_cancelled(rc)) {
        rc->tries++;
        memcpy(rc->excluded, rc->tg.iid, rc->tg.iid_len + 1);
        rc->excluded_len = rc->tg.iid_len;
        rc->unreached = !rc->tg.local && not_reached(details);
        r->stats.retried++;
        metric_add(r->retried, 0, 0, 0, 1);
        mm_log(MM_LOG_DEBUG, WHO, "model %s: %s on %s: %s; trying another copy", rc->id,
               methods[rc->m].what, rc->tg.iid, details);
        dispatch(rc);
        return;
    }
    finish(rc, response, status, details);
}

static void forward(struct route_call *rc)
{
    struct route *r = rc->r;
    const struct rpc_header headers[] = {{"mm-model-id", rc->id}, {"mm-hop", "1"}};
    if (r->reg) {
        rc->forwarded_ns = mono_ns();
        rc->model = label(r, rc->call, rc->name, strlen(rc->name));
    }
    /* a served call is the parent: its deadline and its cancellation propagate; an
     * in-process call's deadline is the forward's */
    int64_t timeout = 0;
    if (!rc->call) {
        timeout = rcall_remaining_ms(rc);
        if (timeout <= 0) {
            table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
            finishf(rc, GRPC_STATUS_DEADLINE_EXCEEDED, "model %s: deadline exceeded", rc->name);
            return;
        }
    }
    int e = rpc_unary(rc->tg.ch, methods[rc->m].path, rcall_request(rc), headers, 2, timeout,
                      rc->call, on_forwarded, rc, &rc->req);
    if (e < 0) {
        table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s: cannot forward to %s: %s", rc->id,
                rc->tg.iid, mm_strerror(e));
        return;
    }
    if (rc->tg.local)
        r->stats.forwarded_local++;
    else
        r->stats.forwarded_remote++;
    metric_add(r->forwarded, 0, rc->tg.local ? 0 : 1, 0, 1);
}

/* ------------------------------------------------------------------ parking */

static void on_wait_over(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct route_call *rc = w->data;
    ev_timer_stop(loop, &rc->again_timer);
    table_unpark(rc->r->cfg.table, &rc->w);
    unparked(rc);
    finishf(rc, GRPC_STATUS_DEADLINE_EXCEEDED, "model %s: not loaded within %.0f ms", rc->name,
            w->repeat * 1000.);
}

/* Parked after its copy failed it, and nothing in the registry changed meanwhile: that copy (or
 * another) is tried again, once more, as if new. */
static void on_again(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct route_call *rc = w->data;
    table_unpark(rc->r->cfg.table, &rc->w);
    ev_timer_stop(loop, &rc->wait_timer);
    unparked(rc);
    if (++rc->wakes > MAX_WAKES) {
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s: loaded, but no copy could be reached",
                rc->name);
        return;
    }
    rc->excluded_len = 0;
    rc->unreached = false;
    rc->tries = 0;
    dispatch(rc);
}

static void on_wake(struct table_waiter *w, int status, const char *why)
{
    struct route_call *rc = (struct route_call *)((char *)w - offsetof(struct route_call, w));
    ev_timer_stop(rc->r->loop, &rc->wait_timer);
    ev_timer_stop(rc->r->loop, &rc->again_timer);
    if (rc->r->reg && (status == 0 || status == -EIO)) /* the model exists */
        rc->model = label(rc->r, rc->call, rc->name, strlen(rc->name));
    unparked(rc);
    switch (status) {
    case 0:
        if (++rc->wakes > MAX_WAKES) {
            finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s: loaded, but no copy could be "
                    "reached", rc->name);
            return;
        }
        dispatch(rc);
        return;
    case -ENOENT:
        rc->r->stats.not_found++;
        finishf(rc, GRPC_STATUS_NOT_FOUND, "model %s not found", rc->name);
        return;
    case -EIO:
        finishf(rc, GRPC_STATUS_INTERNAL, "model %s failed to load: %s", rc->name, why);
        return;
    default: /* -ENOSPC (no instance can take it), -EAGAIN (etcd), -ENOMEM */
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "%s", why);
        return;
    }
}

static void park(struct route_call *rc)
{
    struct route *r = rc->r;
    struct mm_error err = {0};
    /* a call whose copy failed it waits for the registry to change (the copy deleted, another
     * Loaded): asking the mesh again would only hear "Loaded" from the same record. Unless
     * the copy's peer could not be reached: then a copy is placed elsewhere at once (at most
     * one per model for a burst of such calls), rather than after the peer's lease expires */
    int e = table_park(r->cfg.table, rc->id, rc->len, rc->excluded_len == 0 || rc->unreached,
                       rc->excluded_len ? rc->excluded : NULL, rc->excluded_len, &rc->w, &err);
    if (e == -EINVAL) {
        r->stats.not_found++;
        finishf(rc, GRPC_STATUS_NOT_FOUND, "model %s not found", rc->name);
        return;
    }
    if (e < 0) {
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s: %s", rc->name, err.msg);
        return;
    }
    r->stats.parked++;
    if (r->reg)
        rc->parked_ns = mono_ns();
    if (rc->excluded_len) { /* its copy failed it: looked at again even if nothing changes */
        unsigned shift = rc->wakes < 6 ? rc->wakes : 6;
        ev_timer_set(&rc->again_timer, (double)(AGAIN_MS << shift) / 1000., 0.);
        ev_timer_start(r->loop, &rc->again_timer);
    }
    /* a served client's deadline ends it through the cancel notice; without one, ours; an
     * in-process call's deadline is kept here */
    int64_t left = rcall_remaining_ms(rc);
    int64_t wait = (int64_t)r->cfg.max_wait_ms;
    if (!rc->call && left < wait)
        wait = left > 0 ? left : 0;
    if (!rc->call || left == INT64_MAX || left > (int64_t)r->cfg.max_wait_ms) {
        ev_timer_set(&rc->wait_timer, (double)wait / 1000., 0.);
        rc->wait_timer.repeat = (double)wait / 1000.;
        ev_timer_start(r->loop, &rc->wait_timer);
    }
}

/* ------------------------------------------------------------------ the route */

/* The model's copy now, or the call parks, or (ModelReady, internal ports) an answer. */
static void dispatch(struct route_call *rc)
{
    struct route *r = rc->r;
    if (table_pick(r->cfg.table, rc->id, rc->len, rc->excluded_len ? rc->excluded : NULL,
                   rc->excluded_len, rc->hop, &rc->tg) == 0) {
        forward(rc);
        return;
    }
    if (rc->hop) {
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s is not loaded on instance %s", rc->id,
                r->name);
        return;
    }
    if (rc->m == M_READY) { /* a readiness probe does not load a model */
        struct mesh_status *st = malloc(sizeof(*st));
        if (!st) {
            finishf(rc, GRPC_STATUS_RESOURCE_EXHAUSTED, "ModelReady: out of memory");
            return;
        }
        mesh_status(r->cfg.mesh, rc->id, st);
        bool known = st->status != MESH_NOT_FOUND;
        free(st);
        if (!known) {
            r->stats.not_found++;
            finishf(rc, GRPC_STATUS_NOT_FOUND, "model %s not found", rc->name);
            return;
        }
        Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
        finish(rc, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
        return;
    }
    park(rc);
}

static void on_cancelled(struct rpc_call *c, void *arg)
{
    struct route_call *rc = arg;
    struct route *r = rc->r;
    table_unpark(r->cfg.table, &rc->w);
    unparked(rc);
    if (rc->req) {
        rpc_request_cancel(rc->req); /* its callback never runs */
        rc->req = NULL;
        table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
    }
    bool late = rpc_call_remaining_ms(c) <= 0;
    finishf(rc, late ? GRPC_STATUS_DEADLINE_EXCEEDED : GRPC_STATUS_CANCELLED, "model %s: %s",
            rc->name, late ? "deadline exceeded" : "cancelled by the client");
}

/* The model named by the call: a header's value or field 1, in *name (pointing into the call
 * or into scratch, KEYS_NAME_MAX + 1 bytes). *concrete when mm-model-id named it. 0, or the
 * call is answered and -1 returned. */
static int identity(struct rpc_call *c, enum method m, char *scratch, const char **name,
                    size_t *len, bool *concrete)
{
    static const struct {
        const char *key;
        bool concrete;
    } headers[] = {
        {"mm-model-id", true},
        {"mm-model-id-bin", true}, /* gRPC has decoded the base64 */
        {"mm-vmodel-id", false},
        {"mm-vmodel-id-bin", false},
    };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        *name = rpc_call_header(c, headers[i].key, len);
        if (*name && *len) {
            *concrete = headers[i].concrete;
            return 0;
        }
    }
    *concrete = false;
    struct wire_segment segs[MAX_SEGMENTS];
    grpc_byte_buffer *bb = rpc_call_request(c);
    void *flat = NULL;
    int n = rpc_segments(bb, segs, MAX_SEGMENTS);
    if (n == -E2BIG) { /* many slices: one copy (the cold path) */
        size_t flen = 0;
        if (!(flat = rpc_flatten(bb, &flen))) {
            rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory",
                          methods[m].what);
            return -1;
        }
        segs[0].data = flat;
        segs[0].len = flen;
        n = 1;
    } else if (n < 0) {
        rpc_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "%s: a compressed request", methods[m].what);
        return -1;
    }
    int e = wire_find_field(segs, (size_t)n, 1, scratch, KEYS_NAME_MAX + 1, name, len);
    if (e == 0 && flat) { /* into scratch: the copy goes */
        size_t keep = *len < KEYS_NAME_MAX + 1 ? *len : KEYS_NAME_MAX + 1;
        memmove(scratch, *name, keep);
        *name = scratch;
        *len = keep;
    }
    free(flat);
    if (e == -E2BIG) { /* longer than any model id: shown cut */
        *name = scratch;
        *len = KEYS_NAME_MAX + 1;
        return 0;
    }
    if (e == -ENOENT || (e == 0 && *len == 0)) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s is required", methods[m].what,
                      m == M_INFER ? "model_name" : "name");
        return -1;
    }
    if (e < 0) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s request: %s",
                      methods[m].what, wire_strerror(e));
        return -1;
    }
    return 0;
}

/* Whether name[0, len) can be a model or vmodel id (keys.h: 1..253 printable ASCII, no '/'
 * or space). */
static bool valid_name(const char *name, size_t len)
{
    if (len == 0 || len > KEYS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] <= ' ' || name[i] > '~' || name[i] == '/')
            return false;
    return true;
}

/* A new call to route, held until it ends; NULL without memory. */
static struct route_call *rcall_new(struct route *r, enum method m, const char *name, size_t len)
{
    struct route_call *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    rc->r = r;
    rc->m = m;
    rc->w.wake = on_wake;
    ev_init(&rc->wait_timer, on_wait_over);
    rc->wait_timer.data = rc;
    ev_init(&rc->again_timer, on_again);
    rc->again_timer.data = rc;
    rc->next = r->held;
    if (rc->next)
        rc->next->prev = rc;
    r->held = rc;
    r->stats.held++;
    memcpy(rc->name, name, len);
    rc->name[len] = '\0';
    return rc;
}

/* The model's id resolved, its use noted. */
static void rcall_resolve(struct route_call *rc, const char *name, size_t len, bool concrete)
{
    struct route *r = rc->r;
    /* a forwarded request names the concrete id already; a client's name may be a vmodel's */
    rc->len = table_resolve(r->cfg.table, name, len, !concrete && !rc->hop, rc->id, NULL);
    if (!rc->hop && rc->m != M_READY)
        mesh_note_use(r->cfg.mesh, rc->id, rc->len, 1, now_ms());
}

static void on_model_call(struct rpc_call *c, void *arg)
{
    struct route_method *rm = arg;
    struct route *r = rm->r;
    r->stats.calls++;
    char scratch[KEYS_NAME_MAX + 1];
    const char *name = NULL;
    size_t len = 0;
    bool concrete = false;
    if (identity(c, rm->m, scratch, &name, &len, &concrete) < 0)
        return;
    if (!valid_name(name, len)) {
        r->stats.not_found++;
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "model %.*s%s not found",
                      (int)(len < SHOWN_NAME ? len : SHOWN_NAME), name,
                      len > SHOWN_NAME ? "..." : "");
        return;
    }
    struct route_call *rc = rcall_new(r, rm->m, name, len);
    if (!rc) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", methods[rm->m].what);
        return;
    }
    rc->call = c;
    rc->model = model_of(c); /* the fast path may have labelled it (a vmodel name) */
    size_t hop_len = 0;
    rc->hop = r->cfg.internal || rpc_call_header(c, "mm-hop", &hop_len) != NULL;
    rcall_resolve(rc, name, len, concrete);
    if (rpc_call_on_cancel(c, on_cancelled, rc) == -ECANCELED) {
        finishf(rc, GRPC_STATUS_CANCELLED, "model %s: cancelled by the client", rc->name);
        return;
    }
    dispatch(rc);
}

/* ------------------------------------------------------------------ in-process calls */

int route_submit(struct route *r, enum route_kind kind, const char *name, size_t len, bool concrete,
                 grpc_byte_buffer *request, int64_t timeout_ms, route_done_cb done, void *arg,
                 struct route_call **out)
{
    static const enum method of_kind[] = {
        [ROUTE_INFER] = M_INFER, [ROUTE_METADATA] = M_METADATA, [ROUTE_READY] = M_READY};
    if (out)
        *out = NULL;
    if (!r || !request || !done || (unsigned)kind > ROUTE_READY || (!name && len)) {
        if (request)
            grpc_byte_buffer_destroy(request);
        return -EINVAL;
    }
    r->stats.calls++;
    if (!valid_name(name, len)) {
        grpc_byte_buffer_destroy(request);
        r->stats.not_found++;
        char msg[SHOWN_NAME + 32];
        snprintf(msg, sizeof(msg), "model %.*s%s not found",
                 (int)(len < SHOWN_NAME ? len : SHOWN_NAME), name ? name : "",
                 len > SHOWN_NAME ? "..." : "");
        done(GRPC_STATUS_NOT_FOUND, msg, NULL, arg);
        return 0;
    }
    struct route_call *rc = rcall_new(r, of_kind[kind], name, len);
    if (!rc) {
        grpc_byte_buffer_destroy(request);
        return -ENOMEM;
    }
    rc->done = done;
    rc->done_arg = arg;
    rc->request = request;
    rc->deadline_ms = mono_ms() + (timeout_ms > 0 ? timeout_ms : (int64_t)r->cfg.max_wait_ms);
    rc->hop = r->cfg.internal;
    rc->handle = out;
    if (out)
        *out = rc;
    if (r->reg)
        rc->submitted_ns = mono_ns();
    rcall_resolve(rc, name, len, concrete);
    dispatch(rc);
    return 0;
}

void route_cancel(struct route_call *rc)
{
    if (!rc)
        return;
    struct route *r = rc->r;
    table_unpark(r->cfg.table, &rc->w);
    if (rc->req) {
        rpc_request_cancel(rc->req); /* its callback never runs */
        rc->req = NULL;
        table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
    }
    if (rc->handle)
        *rc->handle = NULL;
    rcall_free(rc);
}

/* ------------------------------------------------------------------ the node itself */

static void on_server_call(struct rpc_call *c, void *arg)
{
    struct route_method *rm = arg; /* either thread: reads only what never changes */
    struct route *r = rm->r;
    if (rm->m == M_LIVE) {
        Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
        resp.live = true;
        rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    } else if (rm->m == M_SERVER_READY) {
        Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
        resp.ready = true; /* the port is served only once the node is */
        rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    } else {
        Inference__ServerMetadataResponse resp = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
        resp.name = "modelmesh-c";
        resp.version = r->version;
        rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    }
}

/* ------------------------------------------------------------------ the fast path
 * On the completion-queue thread: nothing here touches loop state but through the table's
 * snapshot and its counters; no allocation. */

/* The forward's counter, whether it went to the local runtime, whether it is the retry: packed
 * into the forward's one pointer (counters are aligned). */
#define ARG_LOCAL 1u
#define ARG_RETRY 2u

static enum rpc_next on_fast_forwarded(struct rpc_call *c, struct rpc_forward_outcome *o,
                                       void *arg);
static enum rpc_next on_fast_internal(struct rpc_call *c, struct rpc_forward_outcome *o,
                                      void *arg);

static enum rpc_next fast_forward(struct route *r, struct rpc_call *c, const char *id,
                                  const struct table_fast_target *tg, bool internal, bool retry)
{
    const struct rpc_header headers[] = {{"mm-model-id", id}, {"mm-hop", "1"}};
    uintptr_t arg = (uintptr_t)tg->count | (tg->local ? ARG_LOCAL : 0) | (retry ? ARG_RETRY : 0);
    if (rpc_forward(c, tg->ch, headers, 2, internal ? on_fast_internal : on_fast_forwarded,
                    (void *)arg) < 0) {
        table_count_done(tg->count);
        return RPC_NEXT_LOOP; /* the loop tries again, or says why not */
    }
    metric_add(r->forwarded, 0, tg->local ? 0 : 1, 0, 1);
    if (retry)
        metric_add(r->retried, 0, 0, 0, 1);
    return RPC_NEXT_DONE;
}

/* The concrete model id of a call on the fast path, into id (KEYS_NAME_MAX + 1 bytes); *hop
 * for a call that must be served here. 0; -ENOENT when the loop must decide; -1 when the call
 * was answered. */
static int fast_identity(struct route *r, struct rpc_call *c, enum method m, bool internal,
                         const struct table_snap *s, char *id, size_t *len, bool *hop)
{
    char scratch[KEYS_NAME_MAX + 1];
    const char *name = NULL;
    size_t n = 0;
    bool concrete = false;
    if (identity(c, m, scratch, &name, &n, &concrete) < 0)
        return -1;
    if (!valid_name(name, n))
        return -ENOENT; /* the loop says NOT_FOUND, and counts it */
    size_t hop_len = 0;
    *hop = internal || rpc_call_header(c, "mm-hop", &hop_len) != NULL;
    *len = table_snap_resolve(s, name, n, !concrete && !*hop, id);
    /* a vmodel name resolved: it exists, and labels the call (as ModelMesh labels it) */
    if (r->reg && (*len != n || memcmp(id, name, n) != 0))
        label(r, c, name, n);
    return 0;
}

/* A forward from the external port ended: a request that was not served (the peer unreachable
 * or gone, UNAVAILABLE, or the local runtime no longer holding the model: NOT_FOUND for the id
 * the table had Loaded) is tried once more on another copy; with none, the loop parks it. */
static enum rpc_next on_fast_forwarded(struct rpc_call *c, struct rpc_forward_outcome *o,
                                       void *arg)
{
    uintptr_t a = (uintptr_t)arg;
    struct table_count *count = (struct table_count *)(a & ~(uintptr_t)3);
    struct table *t = table_count_table(count);
    table_count_done(count);
    struct route_method *rm = rpc_call_arg(c);
    struct route *r = rm->r;
    if (a & ARG_LOCAL)
        metric_observe(r->invoke, model_of(c), rm->m, o->status,
                       (double)o->elapsed_ns / 1e6);
    bool unserved = !o->answered || o->status == GRPC_STATUS_UNAVAILABLE ||
                    ((a & ARG_LOCAL) && o->status == GRPC_STATUS_NOT_FOUND);
    if (!unserved || (a & ARG_RETRY) || rpc_call_cancelled(c))
        return RPC_NEXT_PASS;
    const struct table_snap *s = table_snap(t);
    char id[KEYS_NAME_MAX + 1];
    size_t len = 0;
    bool hop = false;
    int e = s ? fast_identity(r, c, rm->m, false, s, id, &len, &hop) : -ENOENT;
    if (e == -1)
        return RPC_NEXT_DONE;
    struct table_fast_target tg;
    if (e < 0 || table_snap_pick(s, id, len, count, hop, table_fast_rng(t), &tg) < 0)
        return RPC_NEXT_LOOP;
    return fast_forward(r, c, id, &tg, false, true);
}

/* A forward from the internal port to the local runtime ended: NOT_FOUND there means the copy
 * went away under the request, which the forwarding node retries elsewhere if told
 * UNAVAILABLE. */
static enum rpc_next on_fast_internal(struct rpc_call *c, struct rpc_forward_outcome *o,
                                      void *arg)
{
    uintptr_t a = (uintptr_t)arg;
    struct table_count *count = (struct table_count *)(a & ~(uintptr_t)3);
    table_count_done(count);
    struct route_method *rm = rpc_call_arg(c);
    metric_observe(rm->r->invoke, model_of(c), rm->m, o->status, (double)o->elapsed_ns / 1e6);
    if (o->status != GRPC_STATUS_NOT_FOUND)
        return RPC_NEXT_PASS;
    size_t len = 0;
    const char *id = rpc_call_header(c, "mm-model-id", &len);
    rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "model %.*s is not loaded here any more",
                  (int)(id && len <= KEYS_NAME_MAX ? len : 0), id ? id : "");
    return RPC_NEXT_DONE;
}

static enum rpc_next fast_call(struct rpc_call *c, void *arg)
{
    struct route_method *rm = arg;
    struct route *r = rm->r;
    if (r->reg) { /* until on_replied */
        metric_gauge_add(r->in_flight, 0, r->cfg.internal, 0, 1);
        rpc_call_set_tag(c, TAG_COUNTED);
    }
    const struct table_snap *s = table_snap(r->cfg.table);
    if (!s)
        return RPC_NEXT_LOOP;
    char id[KEYS_NAME_MAX + 1];
    size_t len = 0;
    bool hop = false;
    int e = fast_identity(r, c, rm->m, r->cfg.internal, s, id, &len, &hop);
    if (e == -1)
        return RPC_NEXT_DONE;
    struct table_fast_target tg;
    if (e < 0 || table_snap_pick(s, id, len, NULL, hop, table_fast_rng(r->cfg.table), &tg) < 0)
        return RPC_NEXT_LOOP;
    label(r, c, id, len); /* unless a vmodel name labelled it */
    return fast_forward(r, c, id, &tg, r->cfg.internal || hop, false);
}

static enum rpc_next fast_server_call(struct rpc_call *c, void *arg)
{
    on_server_call(c, arg);
    return RPC_NEXT_DONE;
}

/* ------------------------------------------------------------------ metrics */

/* A model call is replied (either thread). */
static void on_replied(struct rpc_call *c, grpc_status_code status, int64_t elapsed_ns, void *arg)
{
    struct route_method *rm = arg;
    struct route *r = rm->r;
    if (rpc_call_tag(c) & TAG_COUNTED)
        metric_gauge_add(r->in_flight, 0, r->cfg.internal, 0, -1);
    if (!r->cfg.internal)
        metric_observe(r->api, model_of(c), rm->m, (unsigned)status,
                       (double)elapsed_ns / 1e6);
}

static int metrics_init(struct route *r, struct rpc_server *s, struct mm_error *err)
{
    const struct {
        struct metric **out;
        struct metric_desc d;
    } fams[] = {
        {&r->api,
         {.name = "modelmesh_api_request_milliseconds", .help = "External inference request time",
          .type = METRIC_HISTOGRAM, .label = "method", .values = method_values, .nvalues = 3,
          .by_code = true, .by_model = true}},
        {&r->invoke,
         {.name = "modelmesh_invoke_model_milliseconds",
          .help = "Internal model server inference request time", .type = METRIC_HISTOGRAM,
          .label = "method", .values = method_values, .nvalues = 3, .by_code = true,
          .by_model = true}},
        {&r->queue_delay,
         {.name = "modelmesh_req_queue_delay_milliseconds",
          .help = "Time spent in inference request queue", .type = METRIC_HISTOGRAM,
          .by_model = true}},
        {&r->forwarded,
         {.name = "mm_route_forwarded_total",
          .help = "Inference requests forwarded, to the local runtime or to a peer",
          .type = METRIC_COUNTER, .label = "to", .values = to_values, .nvalues = 2}},
        {&r->retried,
         {.name = "mm_route_retried_total",
          .help = "Forwards that were not served and were tried once more on another copy",
          .type = METRIC_COUNTER}},
        {&r->in_flight,
         {.name = "mm_route_in_flight", .help = "Model calls received and not yet replied",
          .type = METRIC_GAUGE, .label = "port", .values = port_values, .nvalues = 2}},
    };
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        int e = metrics_register(r->reg, &fams[i].d, fams[i].out, err);
        if (e < 0)
            return e;
    }
    for (int m = 0; m <= M_READY; m++) {
        int e = rpc_server_observe(s, methods[m].path, on_replied, &r->rm[m], err);
        if (e < 0)
            return e;
    }
    return 0;
}

/* ------------------------------------------------------------------ the API */

int route_new(struct rpc_server *s, const struct route_config *cfg, struct route **out,
              struct mm_error *err)
{
    if (!cfg || !cfg->loop || !cfg->table || !cfg->mesh)
        return mm_error_set(err, -EINVAL, "route: a loop, a table and a mesh are required");
    struct route *r = calloc(1, sizeof(*r));
    if (!r)
        return mm_error_set(err, -ENOMEM, "route: out of memory");
    r->cfg = *cfg;
    snprintf(r->name, sizeof(r->name), "%s", cfg->name ? cfg->name : "gateway");
    snprintf(r->version, sizeof(r->version), "%s", cfg->version ? cfg->version : "");
    r->cfg.name = r->name;
    r->cfg.version = r->version;
    if (!r->cfg.max_wait_ms)
        r->cfg.max_wait_ms = ROUTE_DEFAULT_MAX_WAIT_MS;
    r->loop = cfg->loop;
    for (int m = 0; m < N_METHODS; m++) {
        r->rm[m] = (struct route_method){r, (enum method)m};
        int e = m <= M_READY ? rpc_server_register_fast(s, methods[m].path, fast_call,
                                                        on_model_call, &r->rm[m], err)
                             : rpc_server_register_fast(s, methods[m].path, fast_server_call,
                                                        on_server_call, &r->rm[m], err);
        if (e < 0) {
            free(r);
            return e;
        }
    }
    r->reg = cfg->metrics;
    if (r->reg) {
        int e = metrics_init(r, s, err);
        if (e < 0) {
            free(r);
            return e;
        }
    }
    *out = r;
    return 0;
}

void route_free(struct route *r)
{
    if (!r)
        return;
    while (r->held) {
        struct route_call *rc = r->held;
        table_unpark(r->cfg.table, &rc->w);
        if (rc->req) {
            rpc_request_cancel(rc->req);
            rc->req = NULL;
            table_release(r->cfg.table, rc->id, rc->len, &rc->tg);
        }
        finishf(rc, GRPC_STATUS_UNAVAILABLE, "model %s: the node is stopping", rc->name);
    }
    free(r);
}

void route_get_stats(const struct route *r, struct route_stats *out)
{
    *out = r->stats;
}
