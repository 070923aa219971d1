/* rpc.c - gRPC C core on libev (see rpc.h).
 *
 * Every asynchronous step is one grpc_call_start_batch with one tag; a tag completes exactly
 * once. The completion-queue thread posts a finished tag to the loop's mailbox (the tag is the
 * queue node: no allocation per completion) and the loop runs the tag's `done`, unless the tag
 * belongs to a call on the fast path (on_cq): then the thread runs `done` itself. A fast call is
 * the CQ thread's alone until it is handed to the loop (handoff), after which it is the loop's.
 * Between two completions the CQ thread is quiescent: it holds nothing read from a snapshot,
 * which is when retired snapshots may be freed (rpc_retire). */
#include "mm/rpc.h"

#include <errno.h>
#include <ev.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/compression.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "mm/fdlimit.h"
#include "mm/log.h"
#include "mm/mailbox.h"
#include "mm/tls.h"

#define DEFAULT_CALLS_PER_METHOD 32
#define MAX_LISTENERS 8       /* addresses a name may resolve to, over every rpc_server_listen */
#define ACCEPT_BATCH 64       /* connections accepted per wake-up, for fairness with the loop */
#define RPC_TLS_HANDSHAKE_MS 10000 /* a TLS handshake on gRPC's listener, at most */
#define ACCEPT_RETRY_S 0.1    /* paused accepting (at the cap, out of descriptors): look again */
#define MAX_METHODS 64
#define MAX_HEADERS 16
#define WAIT_SLACK_MS 5000 /* rpc_unary_wait: how long past the deadline a reply may take */

/* ThreadSanitizer does not see the order gRPC's (uninstrumented) completion queue gives: a tag
 * handed to gRPC on one thread comes back on the CQ thread. Said here, per tag. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TAG_HANDED(tag) __tsan_release(tag)
#define TAG_BACK(tag) __tsan_acquire(tag)
#else
#define TAG_HANDED(tag) ((void)0)
#define TAG_BACK(tag) ((void)0)
#endif
#define start_batch(call, ops, n, tag)                                                     \
    (TAG_HANDED(tag), grpc_call_start_batch((call), (ops), (n), (tag), NULL))

struct rpc_tag {
    struct mailbox_item item; /* the queue node to the loop; first member */
    void (*done)(struct rpc_tag *t, bool ok);
    bool ok;
    bool on_cq; /* done runs on the CQ thread (a fast call's); written by that thread only */
};

/* Something retired from the CQ thread's sight, freed once that thread has been quiescent. */
struct rpc_retired {
    void (*fn)(void *ptr);
    void *ptr;
    uint64_t qs;              /* the thread's quiescence count when it was retired */
    struct rpc_retired *next;
};

struct rpc_call;

struct rpc_channel {
    struct rpc_context *ctx;
    grpc_channel *channel;
    char *target;
    bool peer;                    /* made by rpc_peer_channel_for: keepalive, short connects */
    bool peer_tls;                /* made by rpc_peer_channel_for over the context's TLS */
    struct rpc_request *requests; /* client calls in flight, for rpc_channel_free */
    struct rpc_channel *next;     /* in the context's cache */
};

/* A TLS listener's certificate-config fetcher: gRPC calls it at each handshake, on its own
 * threads, until the server is gone; kept until the context is freed. */
struct rpc_tls_fetcher {
    struct tls_watch *w;
    uint64_t gen;                 /* what this listener's credentials hold (under w's lock) */
    bool require_client_cert;
    struct rpc_tls_fetcher *next;
};

struct rpc_context {
    struct ev_loop *loop;
    struct rpc_channel *channels; /* cache of rpc_channel_for(), owned by the context */
    struct rpc_tls_fetcher *fetchers;
    struct tls_watch *peer_tls;   /* rpc_context_set_peer_tls; not owned */
    char *peer_server_name;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool thread_started;
    struct mailbox *completions; /* cq thread -> loop */
    /* Fast calls waiting for their request message, by deadline (CQ thread only). */
    struct rpc_call *waiting_head, *waiting_tail;
    /* Quiescent-state reclamation: qs is odd while the CQ thread runs a completion, even while
     * it waits; retired (loop only) holds what waits for qs to move on. The CQ thread posts
     * reclaim_tag when asked (reclaim_wanted) and it is not already queued (reclaim_posted). */
    _Atomic uint64_t qs;
    atomic_bool reclaim_wanted, reclaim_posted;
    struct rpc_tag reclaim_tag;
    struct rpc_retired *retired;
};

/* ---------------------------------------------------------------- context */

static void receive_early(struct rpc_tag *t);
static void expire_waiting(struct rpc_context *ctx, int64_t now);

/* gRPC's monotonic clock, the one grpc_completion_queue_next's deadline is read on. */
static int64_t mono_ns(void)
{
    gpr_timespec ts = gpr_now(GPR_CLOCK_MONOTONIC);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t waiting_deadline(const struct rpc_context *ctx);

static void *cq_thread(void *arg)
{
    struct rpc_context *ctx = arg;
    for (;;) {
        /* Bounded by the first fast call's message timeout, if any (ours to enforce here). */
        int64_t until = waiting_deadline(ctx);
        gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
        if (until != INT64_MAX) {
            deadline.clock_type = GPR_CLOCK_MONOTONIC;
            deadline.tv_sec = until / 1000000000;
            deadline.tv_nsec = (int32_t)(until % 1000000000);
        }
        grpc_event ev = grpc_completion_queue_next(ctx->cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        atomic_fetch_add(&ctx->qs, 1); /* odd: a completion runs, it may read snapshots */
        if (ev.type == GRPC_OP_COMPLETE) {
            struct rpc_tag *t = ev.tag;
            TAG_BACK(t);
            t->ok = ev.success != 0;
            if (t->on_cq) {
                t->done(t, t->ok);
            } else {
                receive_early(t);
                mailbox_post(ctx->completions, &t->item);
            }
        }
        if (ctx->waiting_head)
            expire_waiting(ctx, mono_ns());
        atomic_fetch_add(&ctx->qs, 1); /* even: quiescent, nothing read is held */
        if (atomic_load_explicit(&ctx->reclaim_wanted, memory_order_relaxed) &&
            !atomic_load(&ctx->reclaim_posted) && atomic_exchange(&ctx->reclaim_wanted, false)) {
            atomic_store(&ctx->reclaim_posted, true);
            mailbox_post(ctx->completions, &ctx->reclaim_tag.item);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- quiescent-state reclamation
 * The CQ thread counts qs up before and after each completion. Something retired while qs was
 * even (the thread waiting) can go at once: whatever the thread reads next comes after the
 * unpublishing. Retired while odd, it goes once qs has moved: the completion that may have read
 * it is over. qs and the flags are seq_cst on both sides (store then load, Dekker-style). */

static void retired_add(struct rpc_context *ctx, struct rpc_retired *r)
{
    atomic_store(&ctx->reclaim_wanted, true);
    r->qs = atomic_load(&ctx->qs);
    if (r->qs % 2 == 0) {
        r->fn(r->ptr);
        free(r);
        return;
    }
    r->next = ctx->retired;
    ctx->retired = r;
}

static void on_reclaim(struct rpc_tag *t, bool ok)
{
    struct rpc_context *ctx = (struct rpc_context *)((char *)t -
                                                      offsetof(struct rpc_context, reclaim_tag));
    atomic_store(&ctx->reclaim_posted, false); /* before reading qs: a later end re-posts */
    uint64_t qs = atomic_load(&ctx->qs);
    struct rpc_retired **pp = &ctx->retired;
    while (*pp) {
        struct rpc_retired *r = *pp;
        if (r->qs != qs) {
            *pp = r->next;
            r->fn(r->ptr);
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

int rpc_retire(struct rpc_context *ctx, void (*fn)(void *ptr), void *ptr)
{
    struct rpc_retired *r = malloc(sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->fn = fn;
    r->ptr = ptr;
    r->next = NULL;
    retired_add(ctx, r);
    return 0;
}

struct rpc_snapshot {
    struct rpc_context *ctx;
    _Atomic(void *) value;
    void (*free_fn)(void *value);
    struct rpc_retired *value_node; /* for the value published now (NULL if none) */
    struct rpc_retired *self_node;  /* for the snapshot itself, at rpc_snapshot_free */
};

int rpc_snapshot_new(struct rpc_context *ctx, void (*free_fn)(void *value),
                     struct rpc_snapshot **out, struct mm_error *err)
{
    struct rpc_snapshot *s = calloc(1, sizeof(*s));
    struct rpc_retired *self = calloc(1, sizeof(*self));
    if (!s || !self || !free_fn) {
        free(s);
        free(self);
        return mm_error_set(err, free_fn ? -ENOMEM : -EINVAL, "rpc: snapshot: %s",
                            free_fn ? "out of memory" : "no free function");
    }
    s->ctx = ctx;
    s->free_fn = free_fn;
    s->self_node = self;
    atomic_init(&s->value, NULL);
    *out = s;
    return 0;
}

int rpc_snapshot_publish(struct rpc_snapshot *s, void *value)
{
    struct rpc_retired *node = NULL;
    if (value) {
        node = calloc(1, sizeof(*node));
        if (!node)
            return -ENOMEM; /* value not taken */
        node->fn = s->free_fn;
        node->ptr = value;
    }
    atomic_exchange(&s->value, value);
    struct rpc_retired *old = s->value_node;
    s->value_node = node;
    if (old)
        retired_add(s->ctx, old);
    return 0;
}

void *rpc_snapshot_read(const struct rpc_snapshot *s)
{
    return atomic_load((_Atomic(void *) *)&s->value);
}

void rpc_snapshot_free(struct rpc_snapshot *s)
{
    if (!s)
        return;
    rpc_snapshot_publish(s, NULL); /* never fails for NULL */
    struct rpc_retired *self = s->self_node;
    self->fn = free;
    self->ptr = s;
    retired_add(s->ctx, self); /* a fast handler may still be reading s->value */
}

static void run_completion(struct mailbox_item *item, void *arg)
{
    struct rpc_tag *t = (struct rpc_tag *)item;
    t->done(t, t->ok);
}

/* The gRPC core's own lines (any of its threads) go to the process log, bounded, with control
 * characters escaped: they may quote what a peer sent. */
static void core_log(gpr_log_func_args *a)
{
    char text[768];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)a->message; *p && n + 5 < sizeof(text);
         p++) {
        if (*p < 0x20 || *p == 0x7f)
            n += (size_t)snprintf(text + n, sizeof(text) - n, "\\x%02x", *p);
        else
            text[n++] = (char)*p;
    }
    text[n] = '\0';
    const char *file = a->file ? strrchr(a->file, '/') : NULL;
    file = file ? file + 1 : a->file ? a->file : "?";
    enum mm_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR  ? MM_LOG_ERROR
                              : a->severity == GPR_LOG_SEVERITY_INFO ? MM_LOG_INFO
                                                                     : MM_LOG_DEBUG;
    mm_log(level, "grpc", "%s:%d: %s", file, a->line, text);
}

int rpc_context_new(struct ev_loop *loop, struct rpc_context **out, struct mm_error *err)
{
    struct rpc_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    gpr_set_log_function(core_log); /* before grpc_init, which may log */
    grpc_init();
    ctx->loop = loop;
    ctx->reclaim_tag.done = on_reclaim;
    int rc = mailbox_new(loop, run_completion, ctx, &ctx->completions, err);
    if (rc < 0) {
        rpc_context_free(ctx);
        return rc;
    }
    ctx->cq = grpc_completion_queue_create_for_next(NULL);
    if (!ctx->cq || pthread_create(&ctx->thread, NULL, cq_thread, ctx) != 0) {
        rpc_context_free(ctx);
        return mm_error_set(err, -ENOMEM, "rpc: cannot start the completion-queue thread");
    }
    ctx->thread_started = true;
    *out = ctx;
    return 0;
}

struct ev_loop *rpc_context_loop(const struct rpc_context *ctx)
{
    return ctx->loop;
}

void rpc_context_free(struct rpc_context *ctx)
{
    if (!ctx)
        return;
    while (ctx->channels) { /* their calls in flight are cancelled, never called back */
        struct rpc_channel *next = ctx->channels->next;
        rpc_channel_free(ctx->channels);
        ctx->channels = next;
    }
    if (ctx->cq) {
        grpc_completion_queue_shutdown(ctx->cq);
        if (ctx->thread_started)
            pthread_join(ctx->thread, NULL); /* after every pending tag has completed */
    }
    mailbox_free(ctx->completions); /* runs what finished last */
    if (ctx->cq)
        grpc_completion_queue_destroy(ctx->cq);
    while (ctx->retired) { /* the CQ thread is gone: nobody reads them */
        struct rpc_retired *r = ctx->retired;
        ctx->retired = r->next;
        r->fn(r->ptr);
        free(r);
    }
    while (ctx->fetchers) { /* the servers were freed first: no handshake asks them now */
        struct rpc_tls_fetcher *f = ctx->fetchers;
        ctx->fetchers = f->next;
        free(f);
    }
    free(ctx->peer_server_name);
    free(ctx);
    grpc_shutdown();
}

/* ---------------------------------------------------------------- server */

struct rpc_method {
    struct rpc_server *s;
    char *path;
    void *handle;            /* NULL: the catch-all for unknown methods */
    rpc_handler handler;     /* on the loop (a fast method's slow handler) */
    rpc_fast_handler fast;   /* on the CQ thread; NULL for a method served on the loop */
    void *arg;
    rpc_observe_fn observe;  /* NULL: the method's calls are not timed */
    void *observe_arg;
};

/* A socket we listen on: gRPC's own listener shares ports (SO_REUSEPORT), replaces live unix
 * sockets and stops accepting for good at the first EMFILE, so we accept and hand each
 * connection to gRPC. */
struct rpc_listener {
    struct rpc_server *s;
    ev_io io;
    int fd;
    bool tcp;
    char *addr;               /* what is bound ("127.0.0.1:8033", "unix:/p"), for messages */
    char *unix_path;          /* a unix socket we bound: removed when closed, if still ours */
    dev_t unix_dev;
    ino_t unix_ino;
};

/* An accepted connection, owned by gRPC once handed over. It is open while its descriptor
 * still refers to the same socket (device and inode): gRPC closes it without telling us. */
struct rpc_conn {
    int fd;
    dev_t dev;
    ino_t ino;
};

struct rpc_server {
    struct rpc_context *ctx;
    grpc_server *server;
    grpc_server_credentials *creds;
    grpc_resource_quota *quota;
    struct rpc_method methods[MAX_METHODS];
    size_t n_methods;
    struct rpc_method unknown;
    unsigned calls_per_method;
    size_t max_message;
    struct rpc_listener listeners[MAX_LISTENERS];
    size_t n_listeners;
    struct rpc_conn *conns;   /* accepted and (as last seen) open */
    size_t n_conns, conns_size;
    size_t max_connections;   /* 0 until start: then the cap in force */
    size_t max_connections_cfg;
    struct tls_watch *tls;    /* rpc_server_set_tls: listeners are gRPC's, with TLS */
    bool tls_require_client;
    size_t n_tls_ports;       /* addresses gRPC listens on (TLS) */
    unsigned message_timeout_ms;
    bool accepting;           /* the listeners' watchers run */
    bool pause_logged;        /* the reason accepting paused was logged (once per pause) */
    ev_timer accept_retry;
    bool started;
    atomic_bool shutting_down; /* read by the CQ thread too */
    struct rpc_tag shutdown_tag;
    ev_timer grace;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    /* rpc_call structs alive (requested ahead, or served), + 1 until rpc_server_free: the
     * last to go frees the server. Calls of fast methods end on the CQ thread. */
    atomic_uint refs;
};

struct rpc_call {
    struct rpc_tag new_tag;   /* the call arrived (its headers) */
    struct rpc_tag recv_tag;  /* its request message arrived, or not */
    struct rpc_tag close_tag; /* RECV_CLOSE_ON_SERVER: the client is gone or done */
    struct rpc_tag send_tag;  /* the reply was sent */
    ev_timer message_timer;   /* bounds the wait for the request message */
    struct rpc_method *m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array headers;
    grpc_call_details details; /* catch-all calls only */
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_slice status_message;
    int cancelled;
    bool receiving;            /* the message's receive was started (on the cq thread) */
    int pending;               /* batches started and not yet completed */
    bool replied;
    bool closed;               /* the close has been delivered: cancelled is final */
    rpc_cancel_cb on_cancel;
    void *on_cancel_arg;
    char method_copy[256];
    /* A fast method's call: the CQ thread's until handed to the loop (on_loop). */
    bool fast;
    bool on_loop;
    bool busy;                 /* a fast handler or forward callback runs: not released */
    struct rpc_call *wait_prev, *wait_next; /* in ctx's list while its message is awaited */
    bool waiting;
    int64_t wait_until;        /* monotonic ns: the message timeout */
    /* Its forward (rpc_forward), one at a time. */
    bool forwarding;
    struct rpc_tag fwd_tag;
    grpc_call *fwd_call;
    grpc_byte_buffer *fwd_request;  /* a reference to request's slices */
    grpc_metadata_array fwd_initial, fwd_trailing;
    grpc_byte_buffer *fwd_response;
    grpc_status_code fwd_status;
    grpc_slice fwd_details;
    const char *fwd_error;
    grpc_metadata fwd_headers[RPC_FORWARD_MAX_HEADERS];
    char fwd_header_bytes[RPC_FORWARD_HEADER_BYTES]; /* what fwd_headers' slices point at */
    /* Observed methods only (rpc_server_observe): monotonic ns of the call's arrival and of
     * its forward's start; the handler's tag. */
    int64_t arrived_ns, fwd_started_ns;
    uint32_t tag;
    rpc_forward_cb fwd_done;
    void *fwd_arg;
};

static void request_call(struct rpc_method *m);
static void on_fast_new_call(struct rpc_tag *t, bool ok);
static void on_fast_message(struct rpc_tag *t, bool ok);
static void on_forward_done(struct rpc_tag *t, bool ok);

static void server_release(struct rpc_server *s)
{
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].path);
    for (size_t i = 0; i < s->n_listeners; i++) {
        free(s->listeners[i].addr);
        free(s->listeners[i].unix_path);
    }
    free(s->conns);
    free(s);
}

static void server_unref(struct rpc_server *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        server_release(s);
}

static void call_release(struct rpc_call *c)
{
    if (c->pending > 0 || (!c->replied && c->call) || c->busy)
        return;
    struct rpc_server *s = c->m->s;
    if (!c->fast) /* a fast call's message timeout is the CQ thread's list, left by now */
        ev_timer_stop(s->ctx->loop, &c->message_timer);
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->headers);
    if (!c->m->handle)
        grpc_call_details_destroy(&c->details);
    if (c->request)
        grpc_byte_buffer_destroy(c->request);
    if (c->response)
        grpc_byte_buffer_destroy(c->response);
    grpc_slice_unref(c->status_message);
    free(c);
    server_unref(s);
}

static void on_close(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, close_tag));
    c->closed = true;
    /* The close is still counted in pending while on_cancel runs: a reply from inside it
     * cannot release the call under us. */
    if (c->cancelled && c->on_cancel && !c->replied) {
        rpc_cancel_cb cb = c->on_cancel;
        c->on_cancel = NULL;
        cb(c, c->on_cancel_arg);
    }
    c->on_cancel = NULL;
    c->pending--;
    call_release(c);
}

static void on_sent(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, send_tag));
    c->pending--;
    call_release(c);
}

/* On the completion-queue thread, for a call that just arrived at a registered method: start
 * receiving its message at once, so the message does not wait for a turn of the loop (which
 * only arms the timer that bounds it). The loop learns of the call after this, through the
 * mailbox, and the message's completion reaches it after the arrival (one thread posts both,
 * in order). Nothing else is touched here. */
static void on_new_call(struct rpc_tag *t, bool ok);

static void receive_early(struct rpc_tag *t)
{
    if (t->done != on_new_call || !t->ok)
        return;
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, new_tag));
    if (!c->m->handle)
        return;
    grpc_op recv = {.op = GRPC_OP_RECV_MESSAGE};
    recv.data.recv_message.recv_message = &c->request;
    c->receiving = start_batch(c->call, &recv, 1, &c->recv_tag) == GRPC_CALL_OK;
}

static void on_new_call(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, new_tag));
    struct rpc_method *m = c->m;
    if (!ok) { /* the server is shutting down: no call came */
        c->call = NULL;
        c->replied = true;
        call_release(c);
        return;
    }
    if (m->observe)
        c->arrived_ns = mono_ns();
    if (!atomic_load(&m->s->shutting_down))
        request_call(m); /* keep the same number of calls requested ahead */
    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (start_batch(c->call, &op, 1, &c->close_tag) == GRPC_CALL_OK)
        c->pending++;
    if (!m->handle) {
        size_t n = GRPC_SLICE_LENGTH(c->details.method);
        if (n >= sizeof(c->method_copy))
            n = sizeof(c->method_copy) - 1;
        memcpy(c->method_copy, GRPC_SLICE_START_PTR(c->details.method), n);
        c->method_copy[n] = '\0';
        rpc_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", c->method_copy);
        return;
    }
    /* The call is ours from its headers on, so that its message's arrival can be bounded:
     * gRPC itself would wait for a message that stalls halfway for as long as the client
     * keeps the stream open, holding what has come. The receive itself was started on the
     * cq thread (receive_early). */
    if (!c->receiving) {
        rpc_call_fail(c, GRPC_STATUS_INTERNAL, "%s: cannot receive the request", m->path);
        return;
    }
    c->pending++;
    ev_timer_start(m->s->ctx->loop, &c->message_timer);
}

static void on_message_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rpc_call *c = w->data;
    if (c->replied)
        return;
    /* The handler never sees this call: it is answered here, and released once gRPC
     * completes the receive it still has pending. */
    c->replied = true;
    char msg[160];
    snprintf(msg, sizeof(msg), "%s: the request message did not arrive within %u ms",
             c->m->path, c->m->s->message_timeout_ms);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg, NULL);
}

static void on_message(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, recv_tag));
    struct rpc_method *m = c->m;
    ev_timer_stop(m->s->ctx->loop, &c->message_timer);
    c->pending--;
    if (c->replied) { /* timed out */
        call_release(c);
        return;
    }
    if (!ok || !c->request) {
        rpc_call_fail(c, ok ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED,
                      "%s: the request carries no message", m->path);
        return;
    }
    m->handler(c, m->arg);
}

/* ---------------------------------------------------------------- fast calls (CQ thread)
 * A fast method's call is driven on the CQ thread from its arrival: the message is received
 * under a timeout kept in the context's list (the loop's timers are not ours here), the fast
 * handler runs when it has come, and a forward's completion runs there too. A handoff gives
 * the call to the loop: from then on its completions are posted as a loop call's are. */

static void waiting_add(struct rpc_context *ctx, struct rpc_call *c, int64_t until)
{
    c->wait_until = until;
    c->waiting = true;
    struct rpc_call *after = ctx->waiting_tail; /* timeouts mostly arrive in order */
    while (after && after->wait_until > until)
        after = after->wait_prev;
    c->wait_prev = after;
    c->wait_next = after ? after->wait_next : ctx->waiting_head;
    if (c->wait_next)
        c->wait_next->wait_prev = c;
    else
        ctx->waiting_tail = c;
    if (after)
        after->wait_next = c;
    else
        ctx->waiting_head = c;
}

static void waiting_remove(struct rpc_context *ctx, struct rpc_call *c)
{
    if (!c->waiting)
        return;
    c->waiting = false;
    if (c->wait_prev)
        c->wait_prev->wait_next = c->wait_next;
    else
        ctx->waiting_head = c->wait_next;
    if (c->wait_next)
        c->wait_next->wait_prev = c->wait_prev;
    else
        ctx->waiting_tail = c->wait_prev;
    c->wait_prev = c->wait_next = NULL;
}

static int64_t waiting_deadline(const struct rpc_context *ctx)
{
    return ctx->waiting_head ? ctx->waiting_head->wait_until : INT64_MAX;
}

/* The message of these calls did not come in time: answered here (as on_message_timeout does
 * on the loop), released once gRPC completes the receive. */
static void expire_waiting(struct rpc_context *ctx, int64_t now)
{
    while (ctx->waiting_head && ctx->waiting_head->wait_until <= now) {
        struct rpc_call *c = ctx->waiting_head;
        waiting_remove(ctx, c);
        if (c->replied)
            continue;
        c->replied = true;
        char msg[160];
        snprintf(msg, sizeof(msg), "%s: the request message did not arrive within %u ms",
                 c->m->path, c->m->s->message_timeout_ms);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg, NULL);
    }
}

static void on_fast_new_call(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, new_tag));
    struct rpc_method *m = c->m;
    if (!ok) { /* the server is shutting down: no call came */
        c->call = NULL;
        c->replied = true;
        call_release(c);
        return;
    }
    if (m->observe)
        c->arrived_ns = mono_ns();
    if (!atomic_load(&m->s->shutting_down))
        request_call(m);
    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (start_batch(c->call, &op, 1, &c->close_tag) == GRPC_CALL_OK)
        c->pending++;
    grpc_op recv = {.op = GRPC_OP_RECV_MESSAGE};
    recv.data.recv_message.recv_message = &c->request;
    if (start_batch(c->call, &recv, 1, &c->recv_tag) != GRPC_CALL_OK) {
        rpc_call_fail(c, GRPC_STATUS_INTERNAL, "%s: cannot receive the request", m->path);
        return;
    }
    c->pending++;
    waiting_add(m->s->ctx, c, mono_ns() + (int64_t)m->s->message_timeout_ms * 1000000);
}

/* The loop's side of a handoff: the slow handler, as a loop method's handler runs. */
static void run_slow(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, recv_tag));
    c->m->handler(c, c->m->arg);
}

/* After the post the call is the loop's: the caller touches it no more. */
static void handoff(struct rpc_call *c)
{
    c->busy = false;
    c->on_loop = true;
    c->close_tag.on_cq = c->send_tag.on_cq = false; /* their completions go to the loop now */
    c->recv_tag.done = run_slow; /* the receive is over: its tag carries the handoff */
    c->recv_tag.on_cq = false;
    mailbox_post(c->m->s->ctx->completions, &c->recv_tag.item);
}

/* What a fast handler or a forward's callback said; a call left with nobody answering it is
 * answered here rather than held until its client gives up. true: handed to the loop. */
static bool fast_next(struct rpc_call *c, enum rpc_next next, const char *who)
{
    if (c->replied || c->forwarding)
        return false;
    if (next == RPC_NEXT_LOOP) {
        handoff(c);
        return true;
    }
    mm_log(MM_LOG_ERROR, "rpc", "%s: the %s returned without replying or forwarding",
           c->m->path, who);
    rpc_call_fail(c, GRPC_STATUS_INTERNAL, "%s: the call was left unanswered", c->m->path);
    return false;
}

static void on_fast_message(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, recv_tag));
    struct rpc_method *m = c->m;
    waiting_remove(m->s->ctx, c);
    c->pending--;
    if (c->replied) { /* timed out */
        call_release(c);
        return;
    }
    if (!ok || !c->request) {
        rpc_call_fail(c, ok ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_CANCELLED,
                      "%s: the request carries no message", m->path);
        return;
    }
    c->busy = true; /* a reply that fails to start must not free the call under us */
    if (fast_next(c, m->fast(c, m->arg), "fast handler"))
        return; /* handed to the loop: no longer ours */
    c->busy = false;
    call_release(c);
}

/* Response headers or a status from the peer: gRPC 1.51 marks a status that came from the
 * peer (rather than from the client's own transport) "Error received from peer". */
static bool peer_answered(const struct rpc_call *c, grpc_status_code status)
{
    return status == GRPC_STATUS_OK ||
           (c->fwd_error && strstr(c->fwd_error, "Error received from peer") != NULL);
}

static void forward_clear(struct rpc_call *c)
{
    grpc_call_unref(c->fwd_call);
    c->fwd_call = NULL;
    grpc_byte_buffer_destroy(c->fwd_request);
    c->fwd_request = NULL;
    grpc_metadata_array_destroy(&c->fwd_initial);
    grpc_metadata_array_destroy(&c->fwd_trailing);
    grpc_slice_unref(c->fwd_details);
    c->fwd_details = grpc_empty_slice();
    gpr_free((void *)c->fwd_error);
    c->fwd_error = NULL;
}

static void on_forward_done(struct rpc_tag *t, bool ok)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, fwd_tag));
    char details[1024]; /* a status message past this is cut here, and at 512 when replied */
    size_t n = GRPC_SLICE_LENGTH(c->fwd_details);
    if (n >= sizeof(details))
        n = sizeof(details) - 1;
    memcpy(details, GRPC_SLICE_START_PTR(c->fwd_details), n);
    details[n] = '\0';
    struct rpc_forward_outcome o = {
        .status = ok ? c->fwd_status : GRPC_STATUS_UNAVAILABLE,
        .details = details,
        .elapsed_ns = c->m->observe ? mono_ns() - c->fwd_started_ns : 0,
    };
    o.answered = ok && peer_answered(c, o.status);
    if (o.status == GRPC_STATUS_OK)
        o.response = c->fwd_response;
    else if (c->fwd_response)
        grpc_byte_buffer_destroy(c->fwd_response);
    c->fwd_response = NULL;
    /* The leg is cleared before the callback: it may forward again (a retry elsewhere). */
    forward_clear(c);
    c->forwarding = false;
    c->pending--;
    rpc_forward_cb done = c->fwd_done;
    c->busy = true; /* a reply that fails to start must not free the call under us */
    enum rpc_next next = done ? done(c, &o, c->fwd_arg) : RPC_NEXT_PASS;
    if (next == RPC_NEXT_PASS && !c->replied && !c->forwarding) {
        rpc_call_reply(c, o.response, o.status, details);
        o.response = NULL;
    }
    if (o.response)
        grpc_byte_buffer_destroy(o.response);
    if (next != RPC_NEXT_PASS && fast_next(c, next, "forward callback"))
        return; /* handed to the loop: no longer ours */
    c->busy = false;
    call_release(c);
}

int rpc_forward(struct rpc_call *c, struct rpc_channel *ch, const struct rpc_header *headers,
                size_t n_headers, rpc_forward_cb done, void *arg)
{
    if (!c || !ch || (n_headers && !headers) || n_headers > RPC_FORWARD_MAX_HEADERS)
        return -EINVAL;
    if (!c->fast || c->on_loop)
        return -EPERM;
    if (c->replied)
        return -EALREADY;
    if (c->forwarding)
        return -EBUSY;
    size_t used = 0;
    for (size_t i = 0; i < n_headers; i++) {
        size_t kl = strlen(headers[i].key), vl = strlen(headers[i].value);
        if (kl > sizeof(c->fwd_header_bytes) - used ||
            vl > sizeof(c->fwd_header_bytes) - used - kl)
            return -E2BIG;
        memcpy(c->fwd_header_bytes + used, headers[i].key, kl);
        c->fwd_headers[i].key = grpc_slice_from_static_buffer(c->fwd_header_bytes + used, kl);
        used += kl;
        memcpy(c->fwd_header_bytes + used, headers[i].value, vl);
        c->fwd_headers[i].value = grpc_slice_from_static_buffer(c->fwd_header_bytes + used, vl);
        used += vl;
    }
    /* The parent propagates the client's deadline and its cancellation. */
    grpc_slice path = grpc_slice_from_static_string(c->m->path);
    c->fwd_call = grpc_channel_create_call(ch->channel, c->call, GRPC_PROPAGATE_DEFAULTS,
                                           ch->ctx->cq, path, NULL,
                                           gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (!c->fwd_call)
        return -EIO;
    c->fwd_request = grpc_byte_buffer_copy(c->request); /* shares the received slices */
    c->fwd_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->fwd_initial);
    grpc_metadata_array_init(&c->fwd_trailing);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_headers;
    ops[0].data.send_initial_metadata.metadata = n_headers ? c->fwd_headers : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->fwd_request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->fwd_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->fwd_response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->fwd_trailing;
    ops[5].data.recv_status_on_client.status = &c->fwd_status;
    ops[5].data.recv_status_on_client.status_details = &c->fwd_details;
    ops[5].data.recv_status_on_client.error_string = &c->fwd_error;
    if (start_batch(c->fwd_call, ops, 6, &c->fwd_tag) != GRPC_CALL_OK) {
        forward_clear(c);
        return -EIO;
    }
    c->fwd_done = done;
    c->fwd_arg = arg;
    c->forwarding = true;
    if (c->m->observe)
        c->fwd_started_ns = mono_ns();
    c->pending++;
    return 0;
}

int rpc_server_register_fast(struct rpc_server *s, const char *path, rpc_fast_handler fast,
                             rpc_handler slow, void *arg, struct mm_error *err)
{
    if (!fast)
        return mm_error_set(err, -EINVAL, "rpc: %s: a fast method needs a fast handler",
                            path ? path : "");
    int rc = rpc_server_register(s, path, slow, arg, err);
    if (rc == 0)
        s->methods[s->n_methods - 1].fast = fast;
    return rc;
}

static void request_call(struct rpc_method *m)
{
    struct rpc_server *s = m->s;
    struct rpc_call *c = calloc(1, sizeof(*c));
    if (!c)
        return; /* fewer calls requested ahead; the next arrival requests again */
    atomic_fetch_add(&s->refs, 1);
    c->m = m;
    c->new_tag.done = on_new_call;
    c->recv_tag.done = on_message;
    c->close_tag.done = on_close;
    ev_timer_init(&c->message_timer, on_message_timeout, s->message_timeout_ms / 1000., 0.);
    c->message_timer.data = c;
    c->send_tag.done = on_sent;
    if (m->fast) { /* every completion of the call on the CQ thread, until a handoff */
        c->fast = true;
        c->new_tag.done = on_fast_new_call;
        c->recv_tag.done = on_fast_message;
        c->new_tag.on_cq = c->recv_tag.on_cq = c->close_tag.on_cq = c->send_tag.on_cq = true;
        c->fwd_tag.done = on_forward_done;
        c->fwd_tag.on_cq = true;
    }
    c->status_message = grpc_empty_slice();
    c->fwd_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->headers);
    grpc_call_error e;
    TAG_HANDED(&c->new_tag);
    if (m->handle) {
        e = grpc_server_request_registered_call(s->server, m->handle, &c->call, &c->deadline,
                                                &c->headers, NULL, s->ctx->cq, s->ctx->cq,
                                                &c->new_tag);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->headers, s->ctx->cq,
                                     s->ctx->cq, &c->new_tag);
    }
    if (e != GRPC_CALL_OK) {
        c->replied = true;
        c->call = NULL;
        call_release(c);
    }
}

int rpc_server_new(struct rpc_context *ctx, const struct rpc_server_config *cfg,
                   struct rpc_server **out, struct mm_error *err)
{
    struct rpc_server_config c = cfg ? *cfg : (struct rpc_server_config){0};
    if (c.max_message_bytes > INT32_MAX)
        return mm_error_set(err, -EINVAL, "rpc: message limit %zu is above 2 GiB",
                            c.max_message_bytes);
    if (c.max_streams > INT32_MAX || c.connection_idle_ms > INT32_MAX ||
        (c.memory_bytes && c.memory_bytes < (1u << 20)))
        return mm_error_set(err, -EINVAL, "rpc: server limits out of range (streams %u, "
                            "memory %llu bytes)", c.max_streams,
                            (unsigned long long)c.memory_bytes);
    struct rpc_server *s = calloc(1, sizeof(*s));
    if (!s)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    s->ctx = ctx;
    atomic_init(&s->refs, 1);
    atomic_init(&s->shutting_down, false);
    s->max_message = c.max_message_bytes ? c.max_message_bytes : RPC_DEFAULT_MAX_MESSAGE;
    s->calls_per_method = c.calls_per_method ? c.calls_per_method : DEFAULT_CALLS_PER_METHOD;
    s->max_connections_cfg = c.max_connections;
    s->message_timeout_ms = c.message_timeout_ms ? c.message_timeout_ms
                                                 : RPC_DEFAULT_MESSAGE_TIMEOUT_MS;
    uint64_t memory = c.memory_bytes ? c.memory_bytes : RPC_DEFAULT_MEMORY_BYTES;
    s->quota = grpc_resource_quota_create("rpc-server");
    grpc_resource_quota_resize(s->quota, memory > SIZE_MAX ? SIZE_MAX : (size_t)memory);
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)s->max_message},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = (int)s->max_message},
        /* per connection; a client's further calls wait for one to finish */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = (int)(c.max_streams ? c.max_streams : RPC_DEFAULT_MAX_STREAMS)},
        /* identity only: a compressed message is refused (UNIMPLEMENTED) before it is
         * inflated, rather than inflated whole and then found too large */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
         .value.integer = 1u << GRPC_COMPRESS_NONE},
        /* every buffer of every connection, counted against one quota */
        {.type = GRPC_ARG_POINTER, .key = GRPC_ARG_RESOURCE_QUOTA,
         .value.pointer = {.p = s->quota, .vtable = grpc_resource_quota_arg_vtable()}},
        /* connections without calls are closed: a silent socket (or one that sent only the
         * HTTP/2 preface) would otherwise hold a place under max_connections for hours */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_CONNECTION_IDLE_MS,
         .value.integer = (int)(c.connection_idle_ms ? c.connection_idle_ms
                                                     : RPC_DEFAULT_CONNECTION_IDLE_MS)},
        /* our peers' keepalive pings (RPC_PEER_KEEPALIVE_MS, while calls wait) are welcome;
         * more often than this, even without data, is a strike (gRPC's default: 5 minutes,
         * which would make a peer's pings during a long call end its connection) */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
         .value.integer = RPC_PEER_KEEPALIVE_MS / 2},
        /* we listen ourselves (rpc_server_listen); this is for gRPC's own (TLS addresses) */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        /* gRPC's listener (TLS): a handshake not done by then is dropped (gRPC's is 120 s) */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
         .value.integer = RPC_TLS_HANDSHAKE_MS},
    };
    grpc_channel_args ca = {sizeof(args) / sizeof(args[0]), args};
    s->server = grpc_server_create(&ca, NULL);
    s->creds = grpc_insecure_server_credentials_create();
    if (!s->server || !s->creds) {
        if (s->server)
            grpc_server_destroy(s->server);
        if (s->creds)
            grpc_server_credentials_release(s->creds);
        grpc_resource_quota_unref(s->quota);
        free(s);
        return mm_error_set(err, -ENOMEM, "rpc: grpc_server_create failed");
    }
    grpc_server_register_completion_queue(s->server, ctx->cq, NULL);
    s->unknown.s = s;
    ev_init(&s->grace, NULL);
    ev_init(&s->accept_retry, NULL);
    *out = s;
    return 0;
}

/* ---------------------------------------------------------------- listening and accepting */

static void on_accept(struct ev_loop *loop, ev_io *w, int revents);

/* A unix socket path that exists: replace it only if nothing answers there (a socket left by
 * a process that died); a live socket or a path that is not a socket is an error. */
static int clear_stale_socket(const char *addr, const char *path, struct mm_error *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        int code = -errno;
        return mm_error_set(err, code, "rpc: cannot listen on %s: %s", addr, mm_strerror(code));
    }
    if (!S_ISSOCK(st.st_mode))
        return mm_error_set(err, -EEXIST, "rpc: cannot listen on %s: the path exists and is not "
                            "a socket", addr);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); /* never waits */
    if (fd < 0) {
        int code = -errno;
        return mm_error_set(err, code, "rpc: cannot listen on %s: %s", addr, mm_strerror(code));
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    int code = rc < 0 ? -errno : 0;
    close(fd);
    if (rc == 0 || code == -EAGAIN) /* answered, or a full backlog: someone is serving */
        return mm_error_set(err, -EADDRINUSE, "rpc: cannot listen on %s: another process is "
                            "serving there", addr);
    if (code != -ECONNREFUSED)
        return mm_error_set(err, code, "rpc: cannot listen on %s: %s", addr, mm_strerror(code));
    if (unlink(path) < 0 && errno != ENOENT) {
        code = -errno;
        return mm_error_set(err, code, "rpc: cannot listen on %s: removing a stale socket: %s",
                            addr, mm_strerror(code));
    }
    return 0;
}

static int listener_add(struct rpc_server *s, const char *addr, int fd, bool tcp,
                        const char *unix_path, struct mm_error *err)
{
    if (s->n_listeners == MAX_LISTENERS) {
        close(fd);
        return mm_error_set(err, -ENOSPC, "rpc: cannot listen on %s: more than %d sockets",
                            addr, MAX_LISTENERS);
    }
    struct rpc_listener *l = &s->listeners[s->n_listeners];
    memset(l, 0, sizeof(*l));
    l->s = s;
    l->fd = fd;
    ev_io_init(&l->io, on_accept, fd, EV_READ);
    l->io.data = l;
    l->tcp = tcp;
    l->addr = strdup(addr);
    l->unix_path = unix_path ? strdup(unix_path) : NULL;
    if (!l->addr || (unix_path && !l->unix_path)) {
        free(l->addr);
        free(l->unix_path);
        close(fd);
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    }
    struct stat st;
    if (unix_path && lstat(unix_path, &st) == 0) {
        l->unix_dev = st.st_dev;
        l->unix_ino = st.st_ino;
    }
    s->n_listeners++;
    return 0;
}

static void listener_close(struct rpc_listener *l)
{
    if (l->fd < 0)
        return;
    ev_io_stop(l->s->ctx->loop, &l->io);
    close(l->fd);
    l->fd = -1;
    struct stat st;
    if (l->unix_path && lstat(l->unix_path, &st) == 0 && st.st_dev == l->unix_dev &&
        st.st_ino == l->unix_ino)
        unlink(l->unix_path); /* still the socket we bound, not a successor's */
}

static int listen_unix(struct rpc_server *s, const char *addr, struct mm_error *err)
{
    const char *path = addr + strlen("unix:");
    if (strncmp(path, "//", 2) == 0)
        path += 2; /* unix:///abs/path, as gRPC's targets write it */
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof(sun.sun_path))
        return mm_error_set(err, -EINVAL, "rpc: cannot listen on %s: a unix socket path of 1 "
                            "to %zu bytes is needed", addr, sizeof(sun.sun_path) - 1);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int rc = clear_stale_socket(addr, path, err);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        int code = -errno;
        if (fd >= 0)
            close(fd);
        return mm_error_set(err, code, "rpc: cannot listen on %s: %s", addr,
                            code == -EADDRINUSE ? "the path is taken" : mm_strerror(code));
    }
    return listener_add(s, addr, fd, false, path, err);
}

/* "host:port" or "[v6]:port": host and port split, the port checked (0..65535). */
static int split_host_port(const char *addr, char *host, size_t host_size, unsigned *port,
                           struct mm_error *err)
{
    const char *colon, *h = addr;
    size_t hn;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            goto bad;
        h = addr + 1;
        hn = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
            goto bad; /* no port, or an IPv6 address without brackets */
        hn = (size_t)(colon - addr);
    }
    const char *p = colon + 1;
    size_t pn = strlen(p);
    if (hn == 0 || hn >= host_size || pn == 0 || pn > 5 || strspn(p, "0123456789") != pn)
        goto bad;
    unsigned long v = strtoul(p, NULL, 10);
    if (v > 65535)
        goto bad;
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (unsigned)v;
    return 0;
bad:
    return mm_error_set(err, -EINVAL, "rpc: cannot listen on %s: expected HOST:PORT (IPv6 in "
                        "brackets) with a port from 0 to 65535, or unix:PATH", addr);
}

static int listen_tcp(struct rpc_server *s, const char *addr, int *port, struct mm_error *err)
{
    char host[256];
    unsigned want = 0;
    int rc = split_host_port(addr, host, sizeof(host), &want, err);
    if (rc < 0)
        return rc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, "0", &hints, &res);
    if (gai != 0)
        return mm_error_set(err, -EADDRNOTAVAIL, "rpc: cannot listen on %s: %s", addr,
                            gai_strerror(gai));
    bool has_v4 = false;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        has_v4 |= ai->ai_family == AF_INET;
    size_t first = s->n_listeners;
    unsigned bound = want; /* port 0: the first socket's port, then the same for the others */
    int skipped = 0, last_code = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct sockaddr_storage sa;
        memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
        if (sa.ss_family == AF_INET)
            ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)bound);
        else if (sa.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)bound);
        else
            continue;
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        /* SO_REUSEADDR (a restart may bind over TIME_WAIT), never SO_REUSEPORT */
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            /* both families bound apart; "[::]" alone stays dual-stack */
            (sa.ss_family == AF_INET6 && has_v4 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
            bind(fd, (struct sockaddr *)&sa, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            last_code = -errno;
            if (fd >= 0)
                close(fd);
            if (last_code == -EADDRNOTAVAIL || last_code == -EAFNOSUPPORT) {
                skipped++; /* "localhost" may name ::1 on a host without IPv6 */
                continue;
            }
            goto fail;
        }
        if (bound == 0) {
            socklen_t len = sizeof(sa);
            getsockname(fd, (struct sockaddr *)&sa, &len);
            bound = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
                                                  : ((struct sockaddr_in6 *)&sa)->sin6_port);
        }
        char name[INET6_ADDRSTRLEN + 8], ip[INET6_ADDRSTRLEN];
        const void *in = sa.ss_family == AF_INET
                             ? (const void *)&((struct sockaddr_in *)&sa)->sin_addr
                             : (const void *)&((struct sockaddr_in6 *)&sa)->sin6_addr;
        inet_ntop(sa.ss_family, in, ip, sizeof(ip));
        snprintf(name, sizeof(name), sa.ss_family == AF_INET ? "%s:%u" : "[%s]:%u", ip, bound);
        rc = listener_add(s, name, fd, true, NULL, err);
        if (rc < 0) {
            freeaddrinfo(res);
            goto undo;
        }
    }
    freeaddrinfo(res);
    if (s->n_listeners == first) {
        rc = mm_error_set(err, last_code ? last_code : -EADDRNOTAVAIL,
                          "rpc: cannot listen on %s: %s", addr,
                          mm_strerror(last_code ? last_code : -EADDRNOTAVAIL));
        goto undo;
    }
    if (port)
        *port = (int)bound;
    return 0;
fail:
    freeaddrinfo(res);
    rc = mm_error_set(err, last_code, "rpc: cannot listen on %s: %s", addr,
                      last_code == -EADDRINUSE ? "the address is in use" : mm_strerror(last_code));
undo:
    while (s->n_listeners > first) {
        listener_close(&s->listeners[--s->n_listeners]);
        free(s->listeners[s->n_listeners].addr);
        free(s->listeners[s->n_listeners].unix_path);
    }
    return rc;
}

/* ---------------------------------------------------------------- TLS listeners */

static int make_server_config(const struct tls_pem *pem, void *arg)
{
    struct rpc_tls_fetcher *f = ((void **)arg)[0];
    grpc_ssl_server_certificate_config **config = ((void **)arg)[1];
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem->key, .cert_chain = pem->cert};
    /* gRPC (1.51) asserts that a fetched config has roots even when no client certificate is
     * asked for: then our own chain stands in, and is never used to verify anything */
    *config = grpc_ssl_server_certificate_config_create(
        f->require_client_cert ? pem->ca : pem->cert, &pair, 1);
    return *config ? 0 : -ENOMEM;
}

/* gRPC's handshake threads: the files looked at, a new config when they changed. */
static grpc_ssl_certificate_config_reload_status fetch_server_config(
    void *arg, grpc_ssl_server_certificate_config **config)
{
    struct rpc_tls_fetcher *f = arg;
    struct mm_error err = {0};
    int rc = tls_watch_refresh(f->w, &err);
    if (rc < 0)
        mm_log(MM_LOG_WARN, "rpc", "%s: the TLS files in force stay", err.msg);
    else if (rc > 0)
        mm_log(MM_LOG_INFO, "rpc", "tls: %s re-read: new connections get it",
               tls_watch_files(f->w)->cert);
    *config = NULL;
    void *a[2] = {f, config};
    if (tls_watch_use(f->w, &f->gen, make_server_config, a) < 0)
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    return *config ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                   : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
}

int rpc_server_set_tls(struct rpc_server *s, struct tls_watch *w, bool require_client_cert,
                       struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EBUSY, "rpc: TLS set after start");
    const struct tls_files *f = w ? tls_watch_files(w) : NULL;
    if (!f || !f->cert || (require_client_cert && !f->ca) || s->n_listeners || s->n_tls_ports)
        return mm_error_set(err, -EINVAL, "rpc: TLS needs a certificate and key (and a CA "
                            "bundle to verify clients), before any address is listened on");
    s->tls = w;
    s->tls_require_client = require_client_cert;
    return 0;
}

/* One gRPC listener with its own fetcher: gRPC's security connector asks its fetcher for a
 * first config when it is made and fails unless that is new, so fetchers are not shared. */
static int listen_tls(struct rpc_server *s, const char *addr, int *port, struct mm_error *err)
{
    if (strncmp(addr, "unix:", 5) != 0) {
        char host[256];
        unsigned want = 0;
        int rc = split_host_port(addr, host, sizeof(host), &want, err);
        if (rc < 0)
            return rc;
    }
    struct rpc_tls_fetcher *f = calloc(1, sizeof(*f));
    if (!f)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    f->w = s->tls;
    f->require_client_cert = s->tls_require_client;
    f->next = s->ctx->fetchers; /* kept to the context's end: gRPC may still hold it */
    s->ctx->fetchers = f;
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            f->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch_server_config, f);
    grpc_server_credentials *creds =
        opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
    if (!creds)
        return mm_error_set(err, -ENOMEM, "rpc: cannot listen on %s: gRPC made no TLS "
                            "credentials", addr);
    int bound = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (bound <= 0)
        return mm_error_set(err, -EADDRNOTAVAIL, "rpc: cannot listen on %s (TLS): gRPC could "
                            "not bind it (in use, or not an address here; its log says why)",
                            addr);
    s->n_tls_ports++;
    if (port)
        *port = strncmp(addr, "unix:", 5) == 0 ? 0 : bound;
    return 0;
}

int rpc_server_listen(struct rpc_server *s, const char *addr, int *port, struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EBUSY, "rpc: listen on %s after start", addr);
    if (s->tls)
        return listen_tls(s, addr, port, err);
    if (strncmp(addr, "unix:", 5) == 0) {
        int rc = listen_unix(s, addr, err);
        if (rc == 0 && port)
            *port = 0;
        return rc;
    }
    return listen_tcp(s, addr, port, err);
}

/* Drop the connections gRPC has closed since we last looked; how many are left. */
static size_t sweep_conns(struct rpc_server *s)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->n_conns; i++) {
        struct stat st;
        struct rpc_conn *c = &s->conns[i];
        if (fstat(c->fd, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
            s->conns[kept++] = *c;
    }
    s->n_conns = kept;
    return kept;
}

static void set_accepting(struct rpc_server *s, bool on)
{
    if (s->accepting == on)
        return;
    s->accepting = on;
    for (size_t i = 0; i < s->n_listeners; i++) {
        if (s->listeners[i].fd < 0)
            continue;
        if (on)
            ev_io_start(s->ctx->loop, &s->listeners[i].io);
        else
            ev_io_stop(s->ctx->loop, &s->listeners[i].io);
    }
}

/* Stop accepting for a while: new connections wait in the kernel's backlog. */
static void pause_accepting(struct rpc_server *s, const struct rpc_listener *l, int code)
{
    set_accepting(s, false);
    if (!s->pause_logged) {
        s->pause_logged = true;
        if (code == 0)
            mm_log(MM_LOG_WARN, "rpc", "%s: %zu connections open, the most allowed: new ones "
                   "wait until some close", l->addr, s->n_conns);
        else
            mm_log(MM_LOG_WARN, "rpc", "%s: cannot accept: %s (%zu connections open): "
                   "retrying every %d ms", l->addr, mm_strerror(code), s->n_conns,
                   (int)(ACCEPT_RETRY_S * 1000));
    }
    ev_timer_set(&s->accept_retry, ACCEPT_RETRY_S, 0.);
    ev_timer_start(s->ctx->loop, &s->accept_retry);
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rpc_server *s = w->data;
    if (s->shutting_down)
        return;
    if (sweep_conns(s) >= s->max_connections) {
        ev_timer_set(&s->accept_retry, ACCEPT_RETRY_S, 0.);
        ev_timer_start(loop, &s->accept_retry);
        return;
    }
    set_accepting(s, true); /* an fd still short: the next accept pauses again */
}

static bool conns_reserve(struct rpc_server *s)
{
    if (s->n_conns < s->conns_size)
        return true;
    size_t size = s->conns_size ? s->conns_size * 2 : 64;
    if (size > s->max_connections)
        size = s->max_connections;
    if (size <= s->n_conns)
        return false;
    struct rpc_conn *c = realloc(s->conns, size * sizeof(*c));
    if (!c)
        return false;
    s->conns = c;
    s->conns_size = size;
    return true;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct rpc_listener *l = w->data;
    struct rpc_server *s = l->s;
    for (int i = 0; i < ACCEPT_BATCH && !s->shutting_down; i++) {
        if (s->n_conns >= s->max_connections && sweep_conns(s) >= s->max_connections) {
            pause_accepting(s, l, 0);
            return;
        }
        if (!conns_reserve(s)) {
            pause_accepting(s, l, -ENOMEM);
            return;
        }
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int code = -errno;
            if (code == -EAGAIN || code == -EWOULDBLOCK)
                return;
            if (code == -EINTR || code == -ECONNABORTED || code == -EPROTO)
                continue; /* that client is gone; others may wait */
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for descriptors or memory to come back */
            sweep_conns(s);
            pause_accepting(s, l, code);
            return;
        }
        struct stat st;
        int one = 1;
        if (fstat(fd, &st) < 0 ||
            (l->tcp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)) {
            close(fd);
            continue;
        }
        s->conns[s->n_conns++] = (struct rpc_conn){fd, st.st_dev, st.st_ino};
        s->pause_logged = false;
        grpc_server_add_channel_from_fd(s->server, fd, s->creds); /* gRPC owns fd now */
    }
}

int rpc_server_register(struct rpc_server *s, const char *path, rpc_handler handler, void *arg,
                        struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EBUSY, "rpc: register %s after start", path);
    if (!path || path[0] != '/' || !strchr(path + 1, '/') || !handler)
        return mm_error_set(err, -EINVAL, "rpc: method path '%s' must be /package.Service/Method",
                            path ? path : "");
    if (s->n_methods == MAX_METHODS)
        return mm_error_set(err, -ENOSPC, "rpc: more than %d methods", MAX_METHODS);
    struct rpc_method *m = &s->methods[s->n_methods];
    m->path = strdup(path);
    if (!m->path)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    m->handle = grpc_server_register_method(s->server, m->path, NULL, GRPC_SRM_PAYLOAD_NONE,
                                            0);
    if (!m->handle) {
        free(m->path);
        return mm_error_set(err, -EEXIST, "rpc: method %s registered twice", path);
    }
    m->s = s;
    m->handler = handler;
    m->arg = arg;
    s->n_methods++;
    return 0;
}

int rpc_server_observe(struct rpc_server *s, const char *path, rpc_observe_fn fn, void *arg,
                       struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EBUSY, "rpc: observe %s after start", path);
    for (size_t i = 0; i < s->n_methods; i++) {
        if (strcmp(s->methods[i].path, path) == 0) {
            s->methods[i].observe = fn;
            s->methods[i].observe_arg = arg;
            return 0;
        }
    }
    return mm_error_set(err, -ENOENT, "rpc: observe %s: no such method registered", path);
}

void rpc_call_set_tag(struct rpc_call *c, uint32_t tag)
{
    c->tag = tag;
}

uint32_t rpc_call_tag(const struct rpc_call *c)
{
    return c->tag;
}

void *rpc_call_arg(const struct rpc_call *c)
{
    return c->m->arg;
}

int rpc_server_start(struct rpc_server *s, struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EALREADY, "rpc: server already started");
    if (s->n_listeners == 0 && s->n_tls_ports == 0)
        return mm_error_set(err, -EDESTADDRREQ, "rpc: start without an address to listen on");
    grpc_server_start(s->server);
    s->started = true;
    /* connections: below the open-file limit, leaving a quarter for everything else, and at
     * most RPC_DEFAULT_MAX_CONNECTIONS (at the cap each accept checks every counted connection:
     * an unlimited hard limit must not make that a million checks) */
    uint64_t fds = fdlimit_current();
    uint64_t cap64 = fds == UINT64_MAX ? UINT64_MAX : fds / 4 * 3;
    size_t cap = cap64 > RPC_DEFAULT_MAX_CONNECTIONS ? RPC_DEFAULT_MAX_CONNECTIONS : (size_t)cap64;
    s->max_connections = s->max_connections_cfg ? s->max_connections_cfg : cap ? cap : 1;
    ev_init(&s->accept_retry, on_accept_retry);
    s->accept_retry.data = s;
    set_accepting(s, true);
    for (size_t i = 0; i < s->n_methods; i++)
        for (unsigned k = 0; k < s->calls_per_method; k++)
            request_call(&s->methods[i]);
    for (unsigned k = 0; k < 4; k++)
        request_call(&s->unknown);
    return 0;
}

static void on_shutdown(struct rpc_tag *t, bool ok)
{
    struct rpc_server *s = (struct rpc_server *)((char *)t - offsetof(struct rpc_server,
                                                                      shutdown_tag));
    ev_timer_stop(s->ctx->loop, &s->grace);
    if (s->shutdown_done)
        s->shutdown_done(s->shutdown_arg);
}

static void on_grace_over(struct ev_loop *loop, ev_timer *w, int revents)
{
    grpc_server_cancel_all_calls(((struct rpc_server *)w->data)->server);
}

void rpc_server_shutdown(struct rpc_server *s, unsigned grace_ms, void (*done)(void *arg),
                         void *arg)
{
    if (atomic_load(&s->shutting_down))
        return;
    atomic_store(&s->shutting_down, true);
    ev_timer_stop(s->ctx->loop, &s->accept_retry);
    for (size_t i = 0; i < s->n_listeners; i++)
        listener_close(&s->listeners[i]); /* a successor may bind the address at once */
    s->shutdown_done = done;
    s->shutdown_arg = arg;
    s->shutdown_tag.done = on_shutdown;
    ev_timer_init(&s->grace, on_grace_over, grace_ms / 1000.0, 0.);
    s->grace.data = s;
    ev_timer_start(s->ctx->loop, &s->grace);
    TAG_HANDED(&s->shutdown_tag);
    grpc_server_shutdown_and_notify(s->server, s->ctx->cq, &s->shutdown_tag);
}

void rpc_server_free(struct rpc_server *s)
{
    if (!s)
        return;
    ev_timer_stop(s->ctx->loop, &s->grace);
    ev_timer_stop(s->ctx->loop, &s->accept_retry);
    for (size_t i = 0; i < s->n_listeners; i++)
        listener_close(&s->listeners[i]);
    if (s->server)
        grpc_server_destroy(s->server);
    s->server = NULL;
    if (s->creds)
        grpc_server_credentials_release(s->creds);
    s->creds = NULL;
    if (s->quota)
        grpc_resource_quota_unref(s->quota);
    s->quota = NULL;
    server_unref(s); /* the handle's reference; the last call frees the memory */
}

/* ---------------------------------------------------------------- a call being served */

const char *rpc_call_method(const struct rpc_call *c)
{
    return c->m->handle ? c->m->path : c->method_copy;
}

grpc_byte_buffer *rpc_call_request(const struct rpc_call *c)
{
    return c->request;
}

const char *rpc_call_header(const struct rpc_call *c, const char *key, size_t *len)
{
    for (size_t i = 0; i < c->headers.count; i++) {
        const grpc_metadata *md = &c->headers.metadata[i];
        if (grpc_slice_str_cmp(md->key, key) == 0) {
            *len = GRPC_SLICE_LENGTH(md->value);
            return (const char *)GRPC_SLICE_START_PTR(md->value);
        }
    }
    return NULL;
}

int64_t rpc_call_remaining_ms(const struct rpc_call *c)
{
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms > 0 ? ms : 0;
}

bool rpc_call_cancelled(const struct rpc_call *c)
{
    return c->cancelled != 0;
}

int rpc_call_on_cancel(struct rpc_call *c, rpc_cancel_cb cb, void *arg)
{
    if (c->fast && !c->on_loop)
        return -EPERM; /* the fast path cannot park: a fast call is parked on the loop */
    if (c->replied)
        return -EALREADY;
    if (c->closed && c->cancelled)
        return -ECANCELED;
    c->on_cancel = cb;
    c->on_cancel_arg = arg;
    return 0;
}

int rpc_call_decode(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **out)
{
    struct mm_error err = {0};
    int rc = rpc_decode(c->request, desc, out, &err);
    if (rc < 0)
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
    return rc;
}

int rpc_call_reply(struct rpc_call *c, grpc_byte_buffer *response, grpc_status_code status,
                   const char *message)
{
    if (c->replied) {
        if (response)
            grpc_byte_buffer_destroy(response);
        return -EALREADY;
    }
    c->replied = true;
    if (c->m && c->m->observe)
        c->m->observe(c, status, mono_ns() - c->arrived_ns, c->m->observe_arg);
    if (status != GRPC_STATUS_OK && response) {
        grpc_byte_buffer_destroy(response);
        response = NULL;
    }
    c->response = response; /* kept until the send completes */
    grpc_slice_unref(c->status_message);
    /* Messages quote ids and paths that came from the network: escaped, and bounded so that a
     * 10 KB id cannot push the status past the client's metadata limit. */
    if (message && message[0]) {
        char safe[RPC_MAX_STATUS_MESSAGE + 1] = "";
        mm_log_escape(safe, sizeof(safe), message, strlen(message));
        c->status_message = grpc_slice_from_copied_string(safe);
    } else {
        c->status_message = grpc_empty_slice();
    }
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (response) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = response;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = &c->status_message;
    n++;
    if (start_batch(c->call, ops, n, &c->send_tag) != GRPC_CALL_OK) {
        call_release(c);
        return -EIO;
    }
    c->pending++;
    return 0;
}

int rpc_call_fail(struct rpc_call *c, grpc_status_code status, const char *fmt, ...)
{
    char msg[4 * RPC_MAX_STATUS_MESSAGE]; /* escaped and cut by rpc_call_reply */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return rpc_call_reply(c, NULL, status, msg);
}

/* ---------------------------------------------------------------- client */

struct rpc_request {
    struct rpc_tag tag;            /* first member */
    struct rpc_channel *ch;        /* NULL once the channel is freed */
    struct rpc_request *prev, *next; /* in ch->requests */
    grpc_call *call;
    grpc_metadata_array initial;
    grpc_metadata_array trailing;
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    grpc_metadata headers[MAX_HEADERS];
    size_t n_headers;
    rpc_reply_cb cb;               /* NULL once cancelled: released without a call back */
    void *arg;
};

static int make_channel_creds(const struct tls_pem *pem, void *arg)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem->key, .cert_chain = pem->cert};
    grpc_channel_credentials **creds = arg;
    *creds = grpc_ssl_credentials_create(pem->ca, pem->cert ? &pair : NULL, NULL, NULL);
    return *creds ? 0 : -ENOMEM;
}

/* A channel to target with creds (taken); server_name overrides the name TLS checks; peer:
 * keepalive and short connection attempts (RPC_PEER_KEEPALIVE_MS). */
static int channel_create(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                          grpc_channel_credentials *creds, const char *server_name, bool peer,
                          struct rpc_channel **out, struct mm_error *err);
static int channel_new_tls(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                           struct tls_watch *w, const char *server_name, bool peer,
                           struct rpc_channel **out, struct mm_error *err);

int rpc_channel_new(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                    struct rpc_channel **out, struct mm_error *err)
{
    return channel_create(ctx, target, max_message_bytes, grpc_insecure_credentials_create(),
                          NULL, false, out, err);
}

int rpc_channel_new_tls(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                        struct tls_watch *w, const char *server_name, struct rpc_channel **out,
                        struct mm_error *err)
{
    return channel_new_tls(ctx, target, max_message_bytes, w, server_name, false, out, err);
}

static int channel_new_tls(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                           struct tls_watch *w, const char *server_name, bool peer,
                           struct rpc_channel **out, struct mm_error *err)
{
    if (!w || !tls_watch_files(w)->ca)
        return mm_error_set(err, -EINVAL, "rpc: a TLS channel to %s needs a CA bundle", target);
    struct mm_error rerr = {0};
    if (tls_watch_refresh(w, &rerr) < 0)
        mm_log(MM_LOG_WARN, "rpc", "%s: the TLS files in force stay", rerr.msg);
    grpc_channel_credentials *creds = NULL;
    uint64_t gen = 0; /* always differs: the current files */
    if (tls_watch_use(w, &gen, make_channel_creds, &creds) < 0 || !creds)
        return mm_error_set(err, -ENOMEM, "rpc: gRPC made no TLS credentials for %s", target);
    return channel_create(ctx, target, max_message_bytes, creds, server_name, peer, out, err);
}

static int channel_create(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                          grpc_channel_credentials *creds, const char *server_name, bool peer,
                          struct rpc_channel **out, struct mm_error *err)
{
    struct rpc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch || !creds || !(ch->target = strdup(target))) {
        free(ch);
        if (creds)
            grpc_channel_credentials_release(creds);
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    }
    size_t max = max_message_bytes ? max_message_bytes : RPC_DEFAULT_MAX_MESSAGE;
    grpc_arg args[8];
    size_t n = 0;
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                           .value.integer = (int)max};
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                           .value.integer = (int)max};
    /* a compressed answer is refused, not inflated (as the server does) */
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                           .key = GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
                           .value.integer = 1u << GRPC_COMPRESS_NONE};
    if (peer) {
        /* a peer that hangs (stopped, partitioned, its host gone) fails the calls in flight
         * to it UNAVAILABLE once a ping goes unanswered, rather than at their deadlines: the
         * router then tries another copy. Pings only while calls are in flight. */
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS,
                               .value.integer = RPC_PEER_KEEPALIVE_MS};
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                               .value.integer = RPC_PEER_KEEPALIVE_TIMEOUT_MS};
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, .value.integer = 0};
        /* and a connection attempt to it gives up after this (gRPC's is 20 s, during which
         * calls sent to it would wait) */
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                               .value.integer = RPC_PEER_CONNECT_TIMEOUT_MS};
    }
    /* the name the peer's certificate must carry, when not the target's host */
    if (server_name)
        args[n++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                               .value.string = (char *)server_name};
    grpc_channel_args ca = {n, args};
    ch->channel = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!ch->channel) {
        free(ch->target);
        free(ch);
        return mm_error_set(err, -EINVAL, "rpc: cannot create a channel to %s", target);
    }
    ch->ctx = ctx;
    *out = ch;
    return 0;
}

void rpc_channel_free(struct rpc_channel *ch)
{
    if (!ch)
        return;
    for (struct rpc_request *r = ch->requests; r; r = r->next) {
        rpc_request_cancel(r);
        r->ch = NULL;
    }
    grpc_channel_destroy(ch->channel);
    free(ch->target);
    free(ch);
}

const char *rpc_status_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK",           "CANCELLED",          "UNKNOWN",          "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS",   "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",   "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",      "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return (unsigned)code < sizeof(names) / sizeof(names[0]) ? names[code] : "UNKNOWN_STATUS";
}

const char *rpc_channel_target(const struct rpc_channel *ch)
{
    return ch->target;
}

static struct rpc_channel *shared_channel(struct rpc_context *ctx, const char *target, bool peer,
                                          bool peer_tls, struct mm_error *err)
{
    for (struct rpc_channel *ch = ctx->channels; ch; ch = ch->next)
        if (ch->peer == peer && ch->peer_tls == peer_tls && strcmp(ch->target, target) == 0)
            return ch;
    struct rpc_channel *ch = NULL;
    int rc = peer_tls ? channel_new_tls(ctx, target, 0, ctx->peer_tls, ctx->peer_server_name,
                                        peer, &ch, err)
                      : channel_create(ctx, target, 0, grpc_insecure_credentials_create(), NULL,
                                       peer, &ch, err);
    if (rc < 0)
        return NULL;
    ch->peer = peer;
    ch->peer_tls = peer_tls;
    ch->next = ctx->channels;
    ctx->channels = ch;
    return ch;
}

struct rpc_channel *rpc_channel_for(struct rpc_context *ctx, const char *target,
                                    struct mm_error *err)
{
    return shared_channel(ctx, target, false, false, err);
}

struct rpc_channel *rpc_peer_channel_for(struct rpc_context *ctx, const char *target,
                                         struct mm_error *err)
{
    return shared_channel(ctx, target, true, ctx->peer_tls != NULL, err);
}

int rpc_context_set_peer_tls(struct rpc_context *ctx, struct tls_watch *w,
                             const char *server_name, struct mm_error *err)
{
    if (!w || !tls_watch_files(w)->ca || ctx->peer_tls)
        return mm_error_set(err, -EINVAL, "rpc: peer TLS needs a CA bundle, and is set once");
    if (server_name && !(ctx->peer_server_name = strdup(server_name)))
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    ctx->peer_tls = w;
    return 0;
}

static void request_unlink(struct rpc_request *r)
{
    if (!r->ch)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        r->ch->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->ch = NULL;
}

/* Everything but the grpc_call, which the caller unrefs. */
static void request_free(struct rpc_request *r)
{
    grpc_metadata_array_destroy(&r->initial);
    grpc_metadata_array_destroy(&r->trailing);
    if (r->request)
        grpc_byte_buffer_destroy(r->request);
    if (r->response)
        grpc_byte_buffer_destroy(r->response);
    grpc_slice_unref(r->details);
    gpr_free((void *)r->error_string);
    for (size_t i = 0; i < r->n_headers; i++) {
        grpc_slice_unref(r->headers[i].key);
        grpc_slice_unref(r->headers[i].value);
    }
    free(r);
}

/* The call is released before its callback runs: the callback may free its owner, the channel,
 * or start new calls. */
static void on_client_done(struct rpc_tag *t, bool ok)
{
    struct rpc_request *r = (struct rpc_request *)t;
    char details[1024]; /* a status message of RPC_MAX_STATUS_MESSAGE fits whole */
    size_t n = GRPC_SLICE_LENGTH(r->details);
    if (n >= sizeof(details))
        n = sizeof(details) - 1;
    memcpy(details, GRPC_SLICE_START_PTR(r->details), n);
    details[n] = '\0';
    grpc_status_code status = ok ? r->status : GRPC_STATUS_UNAVAILABLE;
    grpc_byte_buffer *response = status == GRPC_STATUS_OK ? r->response : NULL;
    if (response)
        r->response = NULL;
    rpc_reply_cb cb = r->cb;
    void *arg = r->arg;
    request_unlink(r);
    grpc_call_unref(r->call);
    request_free(r);
    if (cb)
        cb(status, details, response, arg);
    else if (response)
        grpc_byte_buffer_destroy(response);
}

void rpc_request_cancel(struct rpc_request *r)
{
    if (!r->cb)
        return;
    r->cb = NULL;
    grpc_call_cancel(r->call, NULL);
}

int rpc_unary(struct rpc_channel *ch, const char *method, grpc_byte_buffer *request,
              const struct rpc_header *headers, size_t n_headers, int64_t timeout_ms,
              struct rpc_call *parent, rpc_reply_cb cb, void *arg, struct rpc_request **out)
{
    if (!method || !request || !cb || n_headers > MAX_HEADERS)
        return -EINVAL;
    struct rpc_request *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->tag.done = on_client_done;
    r->cb = cb;
    r->arg = arg;
    gpr_timespec deadline = timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_slice path = grpc_slice_from_copied_string(method);
    r->call = grpc_channel_create_call(ch->channel, parent ? parent->call : NULL,
                                       GRPC_PROPAGATE_DEFAULTS, ch->ctx->cq, path, NULL,
                                       deadline, NULL);
    grpc_slice_unref(path);
    if (!r->call) {
        free(r);
        return -EIO;
    }
    r->request = grpc_byte_buffer_copy(request); /* a reference to the same slices */
    r->details = grpc_empty_slice();
    grpc_metadata_array_init(&r->initial);
    grpc_metadata_array_init(&r->trailing);
    for (size_t i = 0; i < n_headers; i++) {
        r->headers[i].key = grpc_slice_from_copied_string(headers[i].key);
        r->headers[i].value = grpc_slice_from_copied_string(headers[i].value);
    }
    r->n_headers = n_headers;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_headers;
    ops[0].data.send_initial_metadata.metadata = n_headers ? r->headers : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = r->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &r->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &r->response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &r->trailing;
    ops[5].data.recv_status_on_client.status = &r->status;
    ops[5].data.recv_status_on_client.status_details = &r->details;
    ops[5].data.recv_status_on_client.error_string = &r->error_string;
    if (start_batch(r->call, ops, 6, &r->tag) != GRPC_CALL_OK) {
        grpc_call_unref(r->call); /* nothing was started: release by hand */
        request_free(r);
        return -EIO;
    }
    r->ch = ch;
    r->next = ch->requests;
    if (r->next)
        r->next->prev = r;
    ch->requests = r;
    if (out)
        *out = r;
    return 0;
}

/* ---------------------------------------------------------------- call and wait */

struct wait_state {
    bool done;
    struct rpc_reply *reply;
};

static void on_waited(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                      void *arg)
{
    struct wait_state *w = arg;
    w->done = true;
    w->reply->status = status;
    snprintf(w->reply->details, sizeof(w->reply->details), "%s", details);
    w->reply->response = response;
}

static void on_wait_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    *(bool *)t->data = true;
}

int rpc_unary_wait(struct rpc_channel *ch, const char *method, grpc_byte_buffer *request,
                   const struct rpc_header *headers, size_t n_headers, int64_t timeout_ms,
                   struct rpc_reply *reply)
{
    memset(reply, 0, sizeof(*reply));
    struct wait_state w = {false, reply};
    struct rpc_request *r = NULL;
    int rc = timeout_ms > 0 ? rpc_unary(ch, method, request, headers, n_headers, timeout_ms,
                                        NULL, on_waited, &w, &r)
                            : -EINVAL; /* a wait needs a bound */
    if (rc < 0) {
        reply->status = GRPC_STATUS_INTERNAL;
        snprintf(reply->details, sizeof(reply->details), "%s to %s: cannot start the call: %s",
                 method ? method : "(no method)", ch->target, mm_strerror(rc));
        return rc;
    }
    /* gRPC answers DEADLINE_EXCEEDED at the deadline; this only bounds a reply that never comes */
    struct ev_loop *loop = ch->ctx->loop;
    bool over = false;
    ev_timer bound;
    ev_timer_init(&bound, on_wait_over, (double)(timeout_ms + WAIT_SLACK_MS) / 1000., 0.);
    bound.data = &over;
    ev_timer_start(loop, &bound);
    while (!w.done && !over)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &bound);
    if (w.done)
        return 0;
    rpc_request_cancel(r);
    reply->status = GRPC_STATUS_UNKNOWN;
    snprintf(reply->details, sizeof(reply->details), "%s to %s: no answer within %lld ms",
             method, ch->target, (long long)(timeout_ms + WAIT_SLACK_MS));
    return -ETIMEDOUT;
}

void rpc_reply_clear(struct rpc_reply *reply)
{
    if (reply->response)
        grpc_byte_buffer_destroy(reply->response);
    memset(reply, 0, sizeof(*reply));
}

/* ---------------------------------------------------------------- bytes */

int rpc_segments(grpc_byte_buffer *bb, struct wire_segment *segs, size_t max)
{
    if (bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE)
        return -ENOTSUP;
    grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    if (sb->count > max)
        return -E2BIG;
    for (size_t i = 0; i < sb->count; i++) {
        segs[i].data = GRPC_SLICE_START_PTR(sb->slices[i]);
        segs[i].len = GRPC_SLICE_LENGTH(sb->slices[i]);
    }
    return (int)sb->count;
}

grpc_byte_buffer *rpc_buffer_from(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

void *rpc_flatten(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    void *p = malloc(*len ? *len : 1);
    if (p)
        memcpy(p, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return p;
}

int rpc_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
               ProtobufCMessage **out, struct mm_error *err)
{
    grpc_byte_buffer_reader r;
    if (!bb || !grpc_byte_buffer_reader_init(&r, bb))
        return mm_error_set(err, -EBADMSG, "malformed %s: unreadable message", desc->name);
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *out = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    size_t n = GRPC_SLICE_LENGTH(s);
    grpc_slice_unref(s);
    if (!*out)
        return mm_error_set(err, -EBADMSG, "malformed %s: %zu bytes do not decode",
                            desc->name, n);
    return 0;
}
