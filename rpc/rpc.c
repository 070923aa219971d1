/* rpc.c - gRPC C core on libev (see rpc.h).
 *
 * Every asynchronous step is one grpc_call_start_batch with one tag; a tag completes exactly
 * once. The completion-queue thread only posts the finished tag to the loop's mailbox (the tag
 * is the queue node: no allocation per completion); the loop runs the tag's `done`. All gRPC
 * calls other than grpc_completion_queue_next happen on the loop. */
#include "mm/rpc.h"

#include <errno.h>
#include <ev.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/mailbox.h"

#define DEFAULT_CALLS_PER_METHOD 32
#define MAX_METHODS 64
#define MAX_HEADERS 16
#define WAIT_SLACK_MS 5000 /* rpc_unary_wait: how long past the deadline a reply may take */

struct rpc_tag {
    struct mailbox_item item; /* the queue node to the loop; first member */
    void (*done)(struct rpc_tag *t, bool ok);
    bool ok;
};

struct rpc_channel {
    struct rpc_context *ctx;
    grpc_channel *channel;
    char *target;
    struct rpc_request *requests; /* client calls in flight, for rpc_channel_free */
    struct rpc_channel *next;     /* in the context's cache */
};

struct rpc_context {
    struct ev_loop *loop;
    struct rpc_channel *channels; /* cache of rpc_channel_for(), owned by the context */
    grpc_completion_queue *cq;
    pthread_t thread;
    bool thread_started;
    struct mailbox *completions; /* cq thread -> loop */
};

/* ---------------------------------------------------------------- context */

static void *cq_thread(void *arg)
{
    struct rpc_context *ctx = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(ctx->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct rpc_tag *t = ev.tag;
        t->ok = ev.success != 0;
        mailbox_post(ctx->completions, &t->item);
    }
    return NULL;
}

static void run_completion(struct mailbox_item *item, void *arg)
{
    struct rpc_tag *t = (struct rpc_tag *)item;
    t->done(t, t->ok);
}

int rpc_context_new(struct ev_loop *loop, struct rpc_context **out, struct mm_error *err)
{
    struct rpc_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    grpc_init();
    ctx->loop = loop;
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
    free(ctx);
    grpc_shutdown();
}

/* ---------------------------------------------------------------- server */

struct rpc_method {
    struct rpc_server *s;
    char *path;
    void *handle;            /* NULL: the catch-all for unknown methods */
    rpc_handler handler;
    void *arg;
};

struct rpc_server {
    struct rpc_context *ctx;
    grpc_server *server;
    struct rpc_method methods[MAX_METHODS];
    size_t n_methods;
    struct rpc_method unknown;
    unsigned calls_per_method;
    size_t max_message;
    bool started;
    bool shutting_down;
    struct rpc_tag shutdown_tag;
    ev_timer grace;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    unsigned n_calls;         /* rpc_call structs alive: requested ahead, or served */
    bool freed;               /* rpc_server_free came: the last call frees the memory */
};

struct rpc_call {
    struct rpc_tag new_tag;   /* the call arrived */
    struct rpc_tag close_tag; /* RECV_CLOSE_ON_SERVER: the client is gone or done */
    struct rpc_tag send_tag;  /* the reply was sent */
    struct rpc_method *m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array headers;
    grpc_call_details details; /* catch-all calls only */
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_slice status_message;
    int cancelled;
    int pending;               /* batches started and not yet completed */
    bool replied;
    bool closed;               /* the close has been delivered: cancelled is final */
    rpc_cancel_cb on_cancel;
    void *on_cancel_arg;
    char method_copy[256];
};

static void request_call(struct rpc_method *m);

static void server_release(struct rpc_server *s)
{
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].path);
    free(s);
}

static void call_release(struct rpc_call *c)
{
    if (c->pending > 0 || (!c->replied && c->call))
        return;
    struct rpc_server *s = c->m->s;
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
    if (--s->n_calls == 0 && s->freed)
        server_release(s);
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
    if (!m->s->shutting_down)
        request_call(m); /* keep the same number of calls requested ahead */
    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) == GRPC_CALL_OK)
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
    if (!c->request) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: the request carries no message",
                      m->path);
        return;
    }
    m->handler(c, m->arg);
}

static void request_call(struct rpc_method *m)
{
    struct rpc_server *s = m->s;
    struct rpc_call *c = calloc(1, sizeof(*c));
    if (!c)
        return; /* fewer calls requested ahead; the next arrival requests again */
    s->n_calls++;
    c->m = m;
    c->new_tag.done = on_new_call;
    c->close_tag.done = on_close;
    c->send_tag.done = on_sent;
    c->status_message = grpc_empty_slice();
    grpc_metadata_array_init(&c->headers);
    grpc_call_error e;
    if (m->handle) {
        e = grpc_server_request_registered_call(s->server, m->handle, &c->call, &c->deadline,
                                                &c->headers, &c->request, s->ctx->cq, s->ctx->cq,
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
    struct rpc_server *s = calloc(1, sizeof(*s));
    if (!s)
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    s->ctx = ctx;
    s->max_message = cfg && cfg->max_message_bytes ? cfg->max_message_bytes
                                                   : RPC_DEFAULT_MAX_MESSAGE;
    s->calls_per_method = cfg && cfg->calls_per_method ? cfg->calls_per_method
                                                       : DEFAULT_CALLS_PER_METHOD;
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)s->max_message},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = (int)s->max_message},
    };
    grpc_channel_args ca = {2, args};
    s->server = grpc_server_create(&ca, NULL);
    if (!s->server) {
        free(s);
        return mm_error_set(err, -ENOMEM, "rpc: grpc_server_create failed");
    }
    grpc_server_register_completion_queue(s->server, ctx->cq, NULL);
    s->unknown.s = s;
    ev_init(&s->grace, NULL);
    *out = s;
    return 0;
}

int rpc_server_listen(struct rpc_server *s, const char *addr, int *port, struct mm_error *err)
{
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int p = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (p == 0)
        return mm_error_set(err, -EADDRINUSE, "rpc: cannot listen on %s (in use or invalid)",
                            addr);
    if (port)
        *port = p;
    return 0;
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
    m->handle = grpc_server_register_method(s->server, m->path, NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
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

int rpc_server_start(struct rpc_server *s, struct mm_error *err)
{
    if (s->started)
        return mm_error_set(err, -EALREADY, "rpc: server already started");
    grpc_server_start(s->server);
    s->started = true;
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
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    s->shutdown_done = done;
    s->shutdown_arg = arg;
    s->shutdown_tag.done = on_shutdown;
    ev_timer_init(&s->grace, on_grace_over, grace_ms / 1000.0, 0.);
    s->grace.data = s;
    ev_timer_start(s->ctx->loop, &s->grace);
    grpc_server_shutdown_and_notify(s->server, s->ctx->cq, &s->shutdown_tag);
}

void rpc_server_free(struct rpc_server *s)
{
    if (!s)
        return;
    ev_timer_stop(s->ctx->loop, &s->grace);
    if (s->server)
        grpc_server_destroy(s->server);
    s->server = NULL;
    s->freed = true;
    if (s->n_calls == 0)
        server_release(s);
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
    if (status != GRPC_STATUS_OK && response) {
        grpc_byte_buffer_destroy(response);
        response = NULL;
    }
    c->response = response; /* kept until the send completes */
    grpc_slice_unref(c->status_message);
    c->status_message = grpc_slice_from_copied_string(message ? message : "");
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
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK) {
        call_release(c);
        return -EIO;
    }
    c->pending++;
    return 0;
}

int rpc_call_fail(struct rpc_call *c, grpc_status_code status, const char *fmt, ...)
{
    char msg[512];
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

int rpc_channel_new(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                    struct rpc_channel **out, struct mm_error *err)
{
    struct rpc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch || !(ch->target = strdup(target))) {
        free(ch);
        return mm_error_set(err, -ENOMEM, "rpc: out of memory");
    }
    size_t max = max_message_bytes ? max_message_bytes : RPC_DEFAULT_MAX_MESSAGE;
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)max},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = (int)max},
    };
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
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

struct rpc_channel *rpc_channel_for(struct rpc_context *ctx, const char *target,
                                    struct mm_error *err)
{
    for (struct rpc_channel *ch = ctx->channels; ch; ch = ch->next)
        if (strcmp(ch->target, target) == 0)
            return ch;
    struct rpc_channel *ch = NULL;
    if (rpc_channel_new(ctx, target, 0, &ch, err) < 0)
        return NULL;
    ch->next = ctx->channels;
    ctx->channels = ch;
    return ch;
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
    char details[512];
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
    if (grpc_call_start_batch(r->call, ops, 6, &r->tag, NULL) != GRPC_CALL_OK) {
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
