/* test_rpc.c - the rpc layer over real loopback sockets: round trips of each service shape
 * (KServe V2, mesh API, runtime SPI messages), headers, unknown methods, malformed and
 * oversized messages, deadlines and cancellation, 1,000 concurrent calls, byte-exact passthrough
 * through a forwarding server, and graceful shutdown. Lifetimes (run under ASan too): a parked
 * call's on_cancel runs when the client's deadline passes or it cancels, and may reply; a
 * cancelled client call never calls back into its freed owner; an owner may free the channel
 * from a reply callback while other calls are in flight on it; a server may be freed from its
 * shutdown's done callback while a call it served is still held. The fast path: handlers on the
 * completion-queue thread that reply, hand the call to the loop, or forward it (header added,
 * error passed through, deadline and client cancel propagated, a dead peer retried elsewhere),
 * and a routing snapshot swapped under load, each old one freed once no handler can hold it. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "testcall.h"
#include "model-mesh.pb-c.h"
#include "model-runtime.pb-c.h"
#include "mm/rpc.h"

static struct ev_loop *loop;
static struct rpc_context *ctx;

/* ---------------------------------------------------------------- handlers */

/* ModelInfer: decode, answer with the model name and the request's first header. */
static void infer(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *m = NULL;
    if (rpc_call_decode(c, &inference__model_infer_request__descriptor, &m) < 0)
        return;
    Inference__ModelInferRequest *req = (Inference__ModelInferRequest *)m;
    /* The zero-copy reader over the received slices agrees with the full decode. */
    struct wire_segment segs[16];
    int nseg = rpc_segments(rpc_call_request(c), segs, 16);
    const char *name = NULL;
    size_t name_len = 0;
    char scratch[256];
    if (nseg <= 0 || wire_find_field(segs, (size_t)nseg, 1, scratch, sizeof(scratch), &name,
                                     &name_len) < 0 ||
        name_len != strlen(req->model_name) || memcmp(name, req->model_name, name_len) != 0) {
        rpc_call_fail(c, GRPC_STATUS_INTERNAL, "wire reader disagrees with decode");
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    size_t hl = 0;
    const char *h = rpc_call_header(c, "mm-vmodel-id", &hl);
    char id[128];
    snprintf(id, sizeof(id), "%.*s", h ? (int)hl : 0, h ? h : "");
    resp.model_name = req->model_name;
    resp.id = id;
    rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Fail quoting the request bytes, as handlers quote ids: the layer escapes and bounds it. */
static void quote_fail(struct rpc_call *c, void *arg)
{
    size_t len = 0;
    char *bytes = rpc_flatten(rpc_call_request(c), &len);
    rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "no model %.*s", (int)len, bytes ? bytes : "");
    free(bytes);
}

/* Echo the request bytes as they came. */
static void echo(struct rpc_call *c, void *arg)
{
    rpc_call_reply(c, grpc_byte_buffer_copy(rpc_call_request(c)), GRPC_STATUS_OK, NULL);
}

/* runtimeStatus of the SPI. */
static void runtime_status(struct rpc_call *c, void *arg)
{
    Mmesh__RuntimeStatusResponse r = MMESH__RUNTIME_STATUS_RESPONSE__INIT;
    r.status = MMESH__RUNTIME_STATUS_RESPONSE__STATUS__READY;
    r.capacityinbytes = 1ull << 30;
    r.maxloadingconcurrency = 2;
    r.modelloadingtimeoutms = 90000;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

/* registerModel of the mesh API: answers LOADING for the model it was given. */
static void register_model(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *m = NULL;
    if (rpc_call_decode(c, &mmesh__register_model_request__descriptor, &m) < 0)
        return;
    Mmesh__RegisterModelRequest *req = (Mmesh__RegisterModelRequest *)m;
    Mmesh__ModelStatusInfo info = MMESH__MODEL_STATUS_INFO__INIT;
    info.status = req->modelinfo && strcmp(req->modelinfo->type, "sklearn") == 0
                      ? MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING
                      : MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND;
    rpc_call_reply(c, rpc_encode(&info.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Hold calls without replying, to let deadlines and shutdown act on them. */
static struct rpc_call *held[8];
static int n_held;

static void hold(struct rpc_call *c, void *arg)
{
    held[n_held++] = c;
}

/* Park calls until their client goes away: on_cancel replies from inside and notes when. */
static struct rpc_call *parked;
static int park_cancels;
static long long park_cancelled_at;
static int park_reply_rc = 1;

static void park_cancelled(struct rpc_call *c, void *arg)
{
    CHECK(c == parked);
    CHECK(rpc_call_cancelled(c));
    park_cancels++;
    park_cancelled_at = harness_now_ms();
    parked = NULL;
    park_reply_rc = rpc_call_fail(c, GRPC_STATUS_CANCELLED, "parked call released");
}

static void park(struct rpc_call *c, void *arg)
{
    CHECK(parked == NULL);
    parked = c;
    CHECK_INT(rpc_call_on_cancel(c, park_cancelled, NULL), 0);
}

static bool is_parked(void *arg)
{
    return parked != NULL;
}

static bool park_released(void *arg)
{
    return park_cancels > *(int *)arg;
}

/* Forward the request bytes to the backend and its response bytes back, untouched. */
static struct rpc_channel *backend;
static const char *forward_to = "/test.Echo/Echo";

static void forwarded(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                      void *arg)
{
    rpc_call_reply(arg, response, status, details);
}

static void forward(struct rpc_call *c, void *arg)
{
    int rc = rpc_unary(backend, forward_to, rpc_call_request(c), NULL, 0, 0, c, forwarded, c, NULL);
    if (rc < 0)
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "forward: %d", rc);
}

/* ---------------------------------------------------------------- client side */

/* The owner of a client call, malloc'd, so that ASan sees any use after it is freed. */
struct owner {
    struct rpc_channel *ch; /* owned, in the channel test */
    int replies;
};

static int stray_replies; /* callbacks that must never run */

static void stray_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                        void *arg)
{
    stray_replies++;
    ((struct owner *)arg)->replies++; /* a use after free if its owner is gone */
    if (response)
        grpc_byte_buffer_destroy(response);
}

/* Frees its owner, and the owner's channel with it, from inside the reply. */
static int owner_frees;

static void reply_frees_owner(grpc_status_code status, const char *details,
                              grpc_byte_buffer *response, void *arg)
{
    struct owner *o = arg;
    CHECK_INT(status, GRPC_STATUS_OK);
    if (response)
        grpc_byte_buffer_destroy(response);
    rpc_channel_free(o->ch);
    free(o);
    owner_frees++;
}

static bool owner_freed(void *arg)
{
    return owner_frees > 0;
}

static struct testcall call(struct rpc_channel *ch, const char *method, grpc_byte_buffer *req,
                            const struct rpc_header *h, size_t nh, int64_t timeout_ms)
{
    return testcall_run(ch, method, req, h, nh, timeout_ms);
}

static struct rpc_server *start_server(size_t max_msg, int *port)
{
    struct mm_error err = {0};
    struct rpc_server *s = NULL;
    struct rpc_server_config cfg = {.max_message_bytes = max_msg};
    REQUIRE(rpc_server_new(ctx, &cfg, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", port, &err) == 0);
    REQUIRE(*port > 0);
    return s;
}

static bool server_down;

static void on_down(void *arg)
{
    server_down = true;
}

static bool is_down(void *arg)
{
    return server_down;
}

/* A server freed from inside its shutdown's done callback. */
static void free_on_down(void *arg)
{
    rpc_server_free(arg);
    server_down = true;
}

static void stop_server(struct rpc_server *s)
{
    server_down = false;
    rpc_server_shutdown(s, 1000, on_down, NULL);
    CHECK(harness_run_until(loop, is_down, NULL, 5000));
    rpc_server_free(s);
}

/* ---------------------------------------------------------------- the fast path
 * A front server whose methods are handled on the completion-queue thread, forwarding to the
 * backend server above. Handlers note what they see in atomics; the checks are made on the
 * loop thread. */

static pthread_t loop_thread;
static atomic_int fast_on_loop;      /* fast handlers or callbacks that ran on the loop thread */
static atomic_int slow_off_loop;     /* slow handlers that ran elsewhere */
static atomic_int fast_calls, slow_calls;
static atomic_int fwd_cancelled;     /* forwards that ended CANCELLED (client went away) */
static atomic_int fwd_unanswered;    /* forwards to the dead peer: not answered, UNAVAILABLE */
static atomic_int fwd_answered_err;  /* forwards whose error the peer itself sent */
static atomic_int fwd_rc_bad;        /* rpc_forward refusals where none was expected */
static atomic_int on_cancel_rc = 1;
static struct rpc_channel *fast_backend, *dead_peer;

static void on_cq_thread(void)
{
    fast_calls++;
    if (pthread_equal(pthread_self(), loop_thread))
        fast_on_loop++;
}

/* The route a fast handler reads: published by the loop, freed when no handler can hold it. */
#define ROUTE_MAGIC 0x52545531u
struct route {
    uint32_t magic;
    struct rpc_channel *ch;
    char name[32];
};
static struct rpc_snapshot *routes;
static int routes_published, routes_freed;
static atomic_int route_bad; /* a handler saw a freed or torn route */

static void route_free(void *value)
{
    struct route *r = value;
    CHECK(r->magic == ROUTE_MAGIC);
    CHECK(pthread_equal(pthread_self(), loop_thread));
    memset(r, 0xdd, sizeof(*r));
    free(r);
    routes_freed++;
}

static void publish_route(int k)
{
    struct route *r = calloc(1, sizeof(*r));
    REQUIRE(r);
    r->magic = ROUTE_MAGIC;
    r->ch = fast_backend;
    snprintf(r->name, sizeof(r->name), "v%d", k);
    REQUIRE(rpc_snapshot_publish(routes, r) == 0);
    routes_published++;
}

static enum rpc_next fwd_check(struct rpc_call *c, struct rpc_forward_outcome *o, void *arg)
{
    on_cq_thread();
    if (o->status == GRPC_STATUS_CANCELLED)
        fwd_cancelled++;
    if (o->status != GRPC_STATUS_OK && o->answered)
        fwd_answered_err++;
    return RPC_NEXT_PASS;
}

/* ModelInfer: forward along the route published now, naming it in a header. */
static enum rpc_next fast_route(struct rpc_call *c, void *arg)
{
    on_cq_thread();
    struct route *r = rpc_snapshot_read(routes);
    if (!r)
        return RPC_NEXT_LOOP;
    if (r->magic != ROUTE_MAGIC || r->name[0] != 'v') {
        route_bad++;
        rpc_call_fail(c, GRPC_STATUS_INTERNAL, "torn route");
        return RPC_NEXT_DONE;
    }
    struct rpc_header h = {"mm-vmodel-id", r->name};
    if (rpc_forward(c, r->ch, &h, 1, fwd_check, NULL) < 0) {
        fwd_rc_bad++;
        return RPC_NEXT_LOOP;
    }
    /* still ours until we return, however long the forward took to start */
    if (r->magic != ROUTE_MAGIC)
        route_bad++;
    return RPC_NEXT_DONE;
}

/* Plain forwards (error passthrough, deadline, cancel): the outcome replied as is. */
static enum rpc_next fast_forward(struct rpc_call *c, void *arg)
{
    on_cq_thread();
    if (rpc_forward(c, fast_backend, NULL, 0, fwd_check, NULL) < 0) {
        fwd_rc_bad++;
        return RPC_NEXT_LOOP;
    }
    /* the fast path cannot park, and one forward at a time */
    on_cancel_rc = rpc_call_on_cancel(c, park_cancelled, NULL);
    if (rpc_forward(c, fast_backend, NULL, 0, fwd_check, NULL) != -EBUSY)
        fwd_rc_bad++;
    return RPC_NEXT_DONE;
}

/* Retry once: the first forward goes to a peer that is down, the retry to the backend. */
static enum rpc_next fwd_retry(struct rpc_call *c, struct rpc_forward_outcome *o, void *arg)
{
    on_cq_thread();
    if (o->status == GRPC_STATUS_UNAVAILABLE && !o->answered) {
        fwd_unanswered++;
        struct rpc_header h = {"mm-retry", "1"};
        if (rpc_forward(c, fast_backend, &h, 1, NULL, NULL) == 0)
            return RPC_NEXT_DONE;
        fwd_rc_bad++;
    }
    return RPC_NEXT_PASS;
}

/* Echo: by the request's first byte, reply here ('e'), hand to the loop ('l'), forward to the
 * dead peer then retry ('r'), or do nothing ('n', a handler bug the layer answers). */
static enum rpc_next fast_echo(struct rpc_call *c, void *arg)
{
    on_cq_thread();
    size_t n = 0;
    char *bytes = rpc_flatten(rpc_call_request(c), &n);
    char kind = bytes && n ? bytes[0] : '?';
    free(bytes);
    switch (kind) {
    case 'e':
        rpc_call_reply(c, grpc_byte_buffer_copy(rpc_call_request(c)), GRPC_STATUS_OK, NULL);
        return RPC_NEXT_DONE;
    case 'r':
        if (rpc_forward(c, dead_peer, NULL, 0, fwd_retry, NULL) == 0)
            return RPC_NEXT_DONE;
        fwd_rc_bad++;
        return RPC_NEXT_LOOP;
    case 'n':
        return RPC_NEXT_DONE;
    default:
        return RPC_NEXT_LOOP;
    }
}

/* The slow handler of every fast method: on the loop, with the same call. */
static void slow_echo(struct rpc_call *c, void *arg)
{
    slow_calls++;
    if (!pthread_equal(pthread_self(), loop_thread))
        slow_off_loop++;
    CHECK_INT(rpc_forward(c, fast_backend, NULL, 0, NULL, NULL), -EPERM);
    rpc_call_reply(c, grpc_byte_buffer_copy(rpc_call_request(c)), GRPC_STATUS_OK, "slow");
}

static struct { struct ev_timer w; int k; } republish;

static void on_republish(struct ev_loop *l, ev_timer *w, int revents)
{
    publish_route(++republish.k);
}

static void test_fast_path(const char *backend_target)
{
    struct mm_error err = {0};
    loop_thread = pthread_self();
    fast_backend = rpc_channel_for(ctx, backend_target, &err);
    REQUIRE(fast_backend != NULL);
    int dead_port = 0;
    struct rpc_server *probe = start_server(0, &dead_port); /* a port nobody serves on */
    rpc_server_free(probe);
    char dead[64];
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", dead_port);
    dead_peer = rpc_channel_for(ctx, dead, &err);
    REQUIRE(dead_peer != NULL);
    REQUIRE(rpc_snapshot_new(ctx, route_free, &routes, &err) == 0);

    int fport = 0;
    struct rpc_server *front = start_server(0, &fport);
    REQUIRE(rpc_server_register_fast(front, "/inference.GRPCInferenceService/ModelInfer",
                                     fast_route, slow_echo, NULL, &err) == 0);
    REQUIRE(rpc_server_register_fast(front, "/test.Quote/Fail", fast_forward, slow_echo, NULL,
                                     &err) == 0);
    REQUIRE(rpc_server_register_fast(front, "/test.Hold/Hold", fast_forward, slow_echo, NULL,
                                     &err) == 0);
    REQUIRE(rpc_server_register_fast(front, "/test.Park/Park", fast_forward, slow_echo, NULL,
                                     &err) == 0);
    REQUIRE(rpc_server_register_fast(front, "/test.Echo/Echo", fast_echo, slow_echo, NULL,
                                     &err) == 0);
    CHECK_INT(rpc_server_register_fast(front, "/test.X/NoSlow", fast_echo, NULL, NULL, &err),
              -EINVAL);
    CHECK_INT(rpc_server_register_fast(front, "/test.X/NoFast", NULL, slow_echo, NULL, &err),
              -EINVAL);
    REQUIRE(rpc_server_start(front, &err) == 0);
    char ftarget[64];
    snprintf(ftarget, sizeof(ftarget), "127.0.0.1:%d", fport);
    struct rpc_channel *fch = NULL;
    REQUIRE(rpc_channel_new(ctx, ftarget, 0, &fch, &err) == 0);

    /* Replied on the CQ thread; handed to the loop; left unanswered by a buggy handler. */
    grpc_byte_buffer *bb = rpc_buffer_from("echo", 4);
    struct testcall r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    size_t n = 0;
    char *back = r.response ? rpc_flatten(r.response, &n) : NULL;
    CHECK(n == 4 && back && memcmp(back, "echo", 4) == 0);
    free(back);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);
    bb = rpc_buffer_from("loop", 4);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    CHECK_INT(slow_calls, 1);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);
    bb = rpc_buffer_from("nothing", 7);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_INTERNAL);
    CHECK(strstr(r.details, "left unanswered") != NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* No route published: the slow handler answers. Then a forward along the route: the
     * backend got the header and the request's bytes, and its answer comes back as it was. */
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = "m";
    bb = rpc_encode(&req.base);
    r = call(fch, "/inference.GRPCInferenceService/ModelInfer", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    CHECK_STR(r.details, "slow");
    CHECK_INT(slow_calls, 2);
    testcall_clear(&r);
    publish_route(0);
    r = call(fch, "/inference.GRPCInferenceService/ModelInfer", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    ProtobufCMessage *m = NULL;
    REQUIRE(r.response &&
            rpc_decode(r.response, &inference__model_infer_response__descriptor, &m, &err) == 0);
    CHECK_STR(((Inference__ModelInferResponse *)m)->model_name, "m");
    CHECK_STR(((Inference__ModelInferResponse *)m)->id, "v0");
    protobuf_c_message_free_unpacked(m, NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Error passthrough: the backend's status and message, escaped once, answered by the
     * peer. */
    grpc_byte_buffer *q = rpc_buffer_from("mx\n", 3);
    r = call(fch, "/test.Quote/Fail", q, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STR(r.details, "no model mx\\x0a");
    CHECK_INT(fwd_answered_err, 1);
    CHECK_INT(on_cancel_rc, -EPERM);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(q);

    /* A peer that is down: not answered, UNAVAILABLE; the retry on the backend succeeds. */
    bb = rpc_buffer_from("retry", 5);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    CHECK_INT(fwd_unanswered, 1);
    back = r.response ? rpc_flatten(r.response, &n) : NULL;
    CHECK(n == 5 && back && memcmp(back, "retry", 5) == 0);
    free(back);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* The client's deadline reaches the far end through the forward. */
    bb = rpc_buffer_from("hold", 4);
    long long t0 = harness_now_ms();
    r = call(fch, "/test.Hold/Hold", bb, NULL, 0, 300);
    long long took = harness_now_ms() - t0;
    CHECK_INT(r.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK(took >= 250 && took < 3000);
    testcall_clear(&r);
    REQUIRE(n_held == 1);
    struct testcall settle = {0};
    testcall_wait(loop, &settle, 1, 300);
    CHECK(rpc_call_cancelled(held[0]));
    CHECK(rpc_call_remaining_ms(held[0]) == 0); /* the far end got the client's deadline */
    rpc_call_reply(held[0], NULL, GRPC_STATUS_CANCELLED, "gone");
    n_held = 0;

    /* The client cancels mid-forward: the far end's parked call is released, the forward ends
     * CANCELLED, and the client's callback never runs. */
    int cancels = park_cancels;
    int was_cancelled = fwd_cancelled;
    struct owner *o = calloc(1, sizeof(*o));
    struct rpc_request *handle = NULL;
    REQUIRE(rpc_unary(fch, "/test.Park/Park", bb, NULL, 0, 0, NULL, stray_reply, o, &handle) ==
            0);
    CHECK(harness_run_until(loop, is_parked, NULL, 5000));
    rpc_request_cancel(handle);
    free(o);
    CHECK(harness_run_until(loop, park_released, &cancels, 5000));
    for (long long until = harness_now_ms() + 2000;
         fwd_cancelled == was_cancelled && harness_now_ms() < until;)
        harness_run_until(loop, NULL, NULL, 20);
    CHECK_INT(fwd_cancelled, was_cancelled + 1);
    CHECK_INT(stray_replies, 0);
    grpc_byte_buffer_destroy(bb);

    /* Routes swapped under load: 3,000 forwards while the loop publishes a new route every
     * half millisecond; every answer names a route, and every route but the current one is
     * freed (poisoned first: ASan sees a handler that kept one too long). */
    enum { N = 3000 };
    struct testcall *many = calloc(N, sizeof(*many));
    ev_timer_init(&republish.w, on_republish, 0.0005, 0.0005);
    ev_timer_start(loop, &republish.w);
    bb = rpc_encode(&req.base);
    int started = 0;
    for (int i = 0; i < N; i++)
        started += rpc_unary(fch, "/inference.GRPCInferenceService/ModelInfer", bb, NULL, 0,
                             20000, NULL, testcall_cb, &many[i], NULL) == 0;
    CHECK_INT(started, N);
    CHECK(testcall_wait(loop, many, N, 30000));
    ev_timer_stop(loop, &republish.w);
    int ok = 0, named = 0;
    for (int i = 0; i < N; i++) {
        ok += many[i].status == GRPC_STATUS_OK;
        if (many[i].response &&
            rpc_decode(many[i].response, &inference__model_infer_response__descriptor, &m,
                       &err) == 0) {
            named += ((Inference__ModelInferResponse *)m)->id[0] == 'v';
            protobuf_c_message_free_unpacked(m, NULL);
        }
        testcall_clear(&many[i]);
    }
    free(many);
    grpc_byte_buffer_destroy(bb);
    CHECK_INT(ok, N);
    CHECK_INT(named, N);
    CHECK_INT(route_bad, 0);
    CHECK(republish.k > 10);
    /* one more call: the CQ thread passes a quiescent state, so all but the current go */
    bb = rpc_buffer_from("echo", 4);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    testcall_clear(&r);
    harness_run_until(loop, NULL, NULL, 50);
    CHECK_INT(routes_freed, routes_published - 1);
    rpc_snapshot_free(routes);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    testcall_clear(&r);
    harness_run_until(loop, NULL, NULL, 50);
    CHECK_INT(routes_freed, routes_published);
    grpc_byte_buffer_destroy(bb);

    CHECK_INT(fast_on_loop, 0);
    CHECK_INT(slow_off_loop, 0);
    CHECK_INT(fwd_rc_bad, 0);
    CHECK(fast_calls > N);
    rpc_channel_free(fch);
    stop_server(front);
}

/* A raw HTTP/2 client that opens one gRPC stream and sends only part of its message (what no
 * well-behaved client sends): the fast path's message timeout must end it. */
struct raw_stream {
    int fd;
    unsigned char in[1 << 16];
    size_t len;
    bool ended; /* stream 1 ended by the server: trailers or RST_STREAM */
};

static void raw_frame(int fd, int type, int flags, uint32_t stream, const void *p, size_t n)
{
    unsigned char h[9] = {(unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n,
                          (unsigned char)type, (unsigned char)flags,
                          (unsigned char)(stream >> 24), (unsigned char)(stream >> 16),
                          (unsigned char)(stream >> 8), (unsigned char)stream};
    CHECK(write(fd, h, 9) == 9);
    CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
}

static size_t hpack_literal(unsigned char *out, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), k = 0; /* both under 127 bytes here */
    out[k++] = 0x00; /* literal without indexing, new name, no Huffman */
    out[k++] = (unsigned char)nl;
    memcpy(out + k, name, nl);
    k += nl;
    out[k++] = (unsigned char)vl;
    memcpy(out + k, value, vl);
    return k + vl;
}

static bool raw_read(void *arg)
{
    struct raw_stream *r = arg;
    ssize_t got;
    while (r->len < sizeof(r->in) &&
           (got = read(r->fd, r->in + r->len, sizeof(r->in) - r->len)) > 0)
        r->len += (size_t)got;
    while (r->len >= 9) {
        size_t n = (size_t)r->in[0] << 16 | (size_t)r->in[1] << 8 | r->in[2];
        if (r->len < 9 + n)
            break;
        int type = r->in[3], flags = r->in[4];
        uint32_t stream = ((uint32_t)r->in[5] << 24 | (uint32_t)r->in[6] << 16 |
                           (uint32_t)r->in[7] << 8 | r->in[8]) & 0x7fffffffu;
        if (type == 4 && !(flags & 1))
            raw_frame(r->fd, 4, 1, 0, NULL, 0); /* SETTINGS ack */
        if (stream == 1 && (type == 3 || (type == 1 && (flags & 1))))
            r->ended = true;
        memmove(r->in, r->in + 9 + n, r->len - 9 - n);
        r->len -= 9 + n;
    }
    return r->ended;
}

static long long cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static atomic_int stalled_handled;

static enum rpc_next fast_count(struct rpc_call *c, void *arg)
{
    stalled_handled++;
    rpc_call_reply(c, NULL, GRPC_STATUS_OK, NULL);
    return RPC_NEXT_DONE;
}

static void test_fast_message_timeout(void)
{
    struct mm_error err = {0};
    struct rpc_server *s = NULL;
    struct rpc_server_config cfg = {.message_timeout_ms = 300};
    int port = 0;
    REQUIRE(rpc_server_new(ctx, &cfg, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", &port, &err) == 0);
    REQUIRE(rpc_server_register_fast(s, "/test.Echo/Echo", fast_count, slow_echo, NULL, &err) ==
            0);
    REQUIRE(rpc_server_start(s, &err) == 0);
    struct raw_stream *r = calloc(1, sizeof(*r));
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    fcntl(r->fd, F_SETFL, O_NONBLOCK); /* read between turns of the loop that serves it */
    CHECK(write(r->fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) == 24);
    raw_frame(r->fd, 4, 0, 0, NULL, 0);
    unsigned char block[256];
    size_t k = 0;
    k += hpack_literal(block + k, ":method", "POST");
    k += hpack_literal(block + k, ":scheme", "http");
    k += hpack_literal(block + k, ":path", "/test.Echo/Echo");
    k += hpack_literal(block + k, ":authority", "localhost");
    k += hpack_literal(block + k, "content-type", "application/grpc");
    k += hpack_literal(block + k, "te", "trailers");
    raw_frame(r->fd, 1, 4, 1, block, k); /* HEADERS, END_HEADERS */
    /* a message announced as 100 bytes, 10 of them sent, and the stream left open */
    unsigned char data[15] = {0, 0, 0, 0, 100, 'p', 'a', 'r', 't', 'i', 'a', 'l', '.', '.', '.'};
    raw_frame(r->fd, 0, 0, 1, data, sizeof(data));
    long long t0 = harness_now_ms(), cpu0 = cpu_ms();
    CHECK(harness_run_until(loop, raw_read, r, 5000));
    long long took = harness_now_ms() - t0, cpu = cpu_ms() - cpu0;
    CHECK(took >= 250 && took < 2500);
    CHECK_INT(stalled_handled, 0);
    /* the CQ thread slept until the timeout: it did not spin on it */
    CHECK(cpu < took / 2);
    close(r->fd);
    free(r);
    stop_server(s);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    struct mm_error err = {0};
    REQUIRE(rpc_context_new(loop, &ctx, &err) == 0);

    int port = 0;
    struct rpc_server *s = start_server(1 << 20, &port);
    REQUIRE(rpc_server_register(s, "/inference.GRPCInferenceService/ModelInfer", infer, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_register(s, "/test.Echo/Echo", echo, NULL, &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelRuntime/runtimeStatus", runtime_status, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_register(s, "/test.Hold/Hold", hold, NULL, &err) == 0);
    REQUIRE(rpc_server_register(s, "/test.Park/Park", park, NULL, &err) == 0);
    REQUIRE(rpc_server_register(s, "/test.Quote/Fail", quote_fail, NULL, &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelMesh/registerModel", register_model, NULL,
                                &err) == 0);
    CHECK_INT(rpc_server_register(s, "/test.Echo/Echo", echo, NULL, &err), -EEXIST);
    CHECK_INT(rpc_server_register(s, "no-slash", echo, NULL, &err), -EINVAL);
    REQUIRE(rpc_server_start(s, &err) == 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct rpc_channel *ch = NULL;
    REQUIRE(rpc_channel_new(ctx, target, 0, &ch, &err) == 0);

    /* KServe V2 shape, with a header read by the server. */
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = "mnist";
    grpc_byte_buffer *bb = rpc_encode(&req.base);
    struct rpc_header h = {"mm-vmodel-id", "example-isvc"};
    struct testcall r = call(ch, "/inference.GRPCInferenceService/ModelInfer", bb, &h, 1, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    ProtobufCMessage *m = NULL;
    REQUIRE(rpc_decode(r.response, &inference__model_infer_response__descriptor, &m, &err) == 0);
    CHECK_STR(((Inference__ModelInferResponse *)m)->model_name, "mnist");
    CHECK_STR(((Inference__ModelInferResponse *)m)->id, "example-isvc");
    protobuf_c_message_free_unpacked(m, NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* A status message quoting what the client sent: control characters escaped, cut at
     * RPC_MAX_STATUS_MESSAGE bytes (a 3000-byte id must not pass the client's metadata limit). */
    char quoted[3000];
    memset(quoted, 'y', sizeof(quoted));
    memcpy(quoted, "x\n\x1b[31mred", 10);
    bb = rpc_buffer_from(quoted, sizeof(quoted));
    r = call(ch, "/test.Quote/Fail", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strncmp(r.details, "no model x\\x0a\\x1b[31mred", 25) == 0);
    size_t dl = strlen(r.details);
    CHECK(dl <= RPC_MAX_STATUS_MESSAGE && dl > 400 && strchr(r.details, 0x1b) == NULL);
    CHECK(dl >= 3 && strcmp(r.details + dl - 3, "...") == 0); /* cut by the server, marked */
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Runtime SPI shape. */
    Mmesh__RuntimeStatusRequest rs = MMESH__RUNTIME_STATUS_REQUEST__INIT;
    bb = rpc_encode(&rs.base);
    r = call(ch, "/mmesh.ModelRuntime/runtimeStatus", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    REQUIRE(rpc_decode(r.response, &mmesh__runtime_status_response__descriptor, &m, &err) == 0);
    CHECK_INT(((Mmesh__RuntimeStatusResponse *)m)->capacityinbytes, 1ull << 30);
    CHECK_INT(((Mmesh__RuntimeStatusResponse *)m)->modelloadingtimeoutms, 90000);
    protobuf_c_message_free_unpacked(m, NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Mesh management API shape. */
    Mmesh__RegisterModelRequest reg = MMESH__REGISTER_MODEL_REQUEST__INIT;
    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    info.type = "sklearn";
    info.path = "sklearn/mnist-svm.joblib";
    reg.modelid = "mnist-svm";
    reg.modelinfo = &info;
    reg.loadnow = true;
    bb = rpc_encode(&reg.base);
    r = call(ch, "/mmesh.ModelMesh/registerModel", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    REQUIRE(rpc_decode(r.response, &mmesh__model_status_info__descriptor, &m, &err) == 0);
    CHECK_INT(((Mmesh__ModelStatusInfo *)m)->status, MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADING);
    protobuf_c_message_free_unpacked(m, NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Call-and-wait: a reply of any status is 0; a wait without a bound is refused, and the
     * reply says why. */
    struct rpc_reply w;
    bb = rpc_buffer_from("x", 1);
    CHECK_INT(rpc_unary_wait(ch, "/test.Echo/Echo", bb, NULL, 0, 5000, &w), 0);
    CHECK_INT(w.status, GRPC_STATUS_OK);
    CHECK(w.response != NULL);
    rpc_reply_clear(&w);
    CHECK(w.response == NULL);
    CHECK_INT(rpc_unary_wait(ch, "/test.Nope/Nope", bb, NULL, 0, 5000, &w), 0);
    CHECK_INT(w.status, GRPC_STATUS_UNIMPLEMENTED);
    CHECK(w.response == NULL);
    CHECK_INT(rpc_unary_wait(ch, "/test.Echo/Echo", bb, NULL, 0, 0, &w), -EINVAL);
    CHECK_INT(w.status, GRPC_STATUS_INTERNAL);
    CHECK(strstr(w.details, "/test.Echo/Echo") != NULL);
    rpc_reply_clear(&w);
    grpc_byte_buffer_destroy(bb);

    /* Unknown method: UNIMPLEMENTED naming it. */
    bb = rpc_buffer_from("x", 1);
    r = call(ch, "/mmesh.ModelMesh/unregisterModel", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_UNIMPLEMENTED);
    CHECK(strstr(r.details, "unknown method /mmesh.ModelMesh/unregisterModel") != NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Malformed protobuf: INVALID_ARGUMENT naming the message type. */
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0x01, 'x'};
    bb = rpc_buffer_from(junk, sizeof(junk));
    r = call(ch, "/inference.GRPCInferenceService/ModelInfer", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(r.details, "malformed inference.ModelInferRequest") != NULL);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Oversized (server limit 1 MiB): RESOURCE_EXHAUSTED from gRPC itself. */
    size_t big = (1 << 20) + 100;
    char *blob = calloc(1, big);
    bb = rpc_buffer_from(blob, big);
    r = call(ch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);

    /* Echo of 100 B and 64 KiB: the same bytes come back. */
    for (size_t size = 100; size <= 65536; size = size == 100 ? 65536 : 1 << 30) {
        for (size_t i = 0; i < size; i++)
            blob[i] = (char)(i * 131 + 7);
        bb = rpc_buffer_from(blob, size);
        r = call(ch, "/test.Echo/Echo", bb, NULL, 0, 5000);
        CHECK_INT(r.status, GRPC_STATUS_OK);
        size_t n = 0;
        void *back = r.response ? rpc_flatten(r.response, &n) : NULL;
        CHECK_INT(n, size);
        CHECK(back && memcmp(back, blob, size) == 0);
        free(back);
        testcall_clear(&r);
        grpc_byte_buffer_destroy(bb);
    }

    /* Deadline: the server holds the call; the client gives up at 200 ms and the server sees
     * the cancellation. */
    bb = rpc_buffer_from("hold", 4);
    long long t0 = harness_now_ms();
    r = call(ch, "/test.Hold/Hold", bb, NULL, 0, 200);
    long long took = harness_now_ms() - t0;
    CHECK_INT(r.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK(took >= 150 && took < 3000);
    REQUIRE(n_held == 1);
    struct testcall never = {0};
    testcall_wait(loop, &never, 1, 300); /* let the cancellation arrive */
    CHECK(rpc_call_cancelled(held[0]));
    /* The server's deadline is the client's plus the transit: read once the cancellation (sent
     * at the client's deadline) has arrived, not at the instant the client gave up. */
    CHECK(rpc_call_remaining_ms(held[0]) == 0);
    /* too late for a cancel callback: the caller is told to reply now */
    CHECK_INT(rpc_call_on_cancel(held[0], park_cancelled, NULL), -ECANCELED);
    CHECK_INT(rpc_call_reply(held[0], NULL, GRPC_STATUS_OK, NULL), 0); /* late reply: no harm */
    n_held = 0;
    testcall_clear(&r);

    /* A parked call whose client's deadline passes: on_cancel runs promptly, without polling,
     * and replies from inside (which releases the call: ASan sees a leak otherwise). */
    int cancels = park_cancels;
    t0 = harness_now_ms();
    struct testcall deadline_call = {0};
    REQUIRE(rpc_unary(ch, "/test.Park/Park", bb, NULL, 0, 300, NULL, testcall_cb, &deadline_call,
                      NULL) == 0);
    CHECK(harness_run_until(loop, is_parked, NULL, 5000));
    CHECK(harness_run_until(loop, park_released, &cancels, 5000));
    CHECK_INT(park_cancels, cancels + 1);
    CHECK(park_cancelled_at - t0 >= 250 && park_cancelled_at - t0 < 1300);
    CHECK_INT(park_reply_rc, 0);
    CHECK(testcall_wait(loop, &deadline_call, 1, 5000));
    CHECK_INT(deadline_call.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    testcall_clear(&deadline_call);

    /* The client cancels a call before its reply and frees the call's owner at once: the
     * server's on_cancel runs, the client's callback never does. */
    cancels = park_cancels;
    struct owner *o = calloc(1, sizeof(*o));
    struct rpc_request *req_handle = NULL;
    REQUIRE(rpc_unary(ch, "/test.Park/Park", bb, NULL, 0, 0, NULL, stray_reply, o,
                      &req_handle) == 0);
    REQUIRE(req_handle != NULL);
    CHECK(harness_run_until(loop, is_parked, NULL, 5000));
    rpc_request_cancel(req_handle);
    free(o);
    CHECK(harness_run_until(loop, park_released, &cancels, 5000));
    harness_run_until(loop, NULL, NULL, 200); /* room for a stray callback */
    CHECK_INT(stray_replies, 0);

    /* 1,000 concurrent calls. */
    enum { N = 1000 };
    struct testcall *many = calloc(N, sizeof(*many));
    int started = 0;
    for (int i = 0; i < N; i++)
        started += rpc_unary(ch, "/test.Echo/Echo", bb, NULL, 0, 20000, NULL, testcall_cb,
                             &many[i], NULL) == 0;
    CHECK_INT(started, N);
    CHECK(testcall_wait(loop, many, N, 30000));
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += many[i].status == GRPC_STATUS_OK && many[i].response;
        testcall_clear(&many[i]);
    }
    CHECK_INT(ok, N);
    free(many);
    grpc_byte_buffer_destroy(bb);

    /* Passthrough: a front server forwards to the echo server; the bytes at the far end and the
     * bytes back are exactly the client's, tensors included. */
    int fport = 0;
    struct rpc_server *front = start_server(0, &fport);
    REQUIRE(rpc_server_register(front, "/test.Echo/Echo", forward, NULL, &err) == 0);
    REQUIRE(rpc_server_start(front, &err) == 0);
    backend = ch;
    char ftarget[64];
    snprintf(ftarget, sizeof(ftarget), "127.0.0.1:%d", fport);
    struct rpc_channel *fch = NULL;
    REQUIRE(rpc_channel_new(ctx, ftarget, 0, &fch, &err) == 0);
    for (size_t i = 0; i < 65536; i++)
        blob[i] = (char)(i * 7 + 3);
    bb = rpc_buffer_from(blob, 65536);
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    size_t n = 0;
    void *back = r.response ? rpc_flatten(r.response, &n) : NULL;
    CHECK_INT(n, 65536);
    CHECK(back && memcmp(back, blob, 65536) == 0);
    free(back);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);
    /* Parent propagation: the client's 200 ms deadline reaches the forwarded call (which sets
     * no deadline of its own), so the far end sees it cancelled too. */
    bb = rpc_buffer_from("hold", 4);
    forward_to = "/test.Hold/Hold";
    r = call(fch, "/test.Echo/Echo", bb, NULL, 0, 200);
    CHECK_INT(r.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    testcall_clear(&r);
    REQUIRE(n_held == 1);
    struct testcall settle = {0};
    testcall_wait(loop, &settle, 1, 500);
    CHECK(rpc_call_cancelled(held[0]));
    CHECK(rpc_call_remaining_ms(held[0]) == 0);
    rpc_call_reply(held[0], NULL, GRPC_STATUS_CANCELLED, "gone");
    n_held = 0;
    forward_to = "/test.Echo/Echo";
    rpc_channel_free(fch);
    stop_server(front);

    /* The fast path: the same shapes handled on the completion-queue thread. */
    test_fast_path(target);
    test_fast_message_timeout();

    /* An owner frees its channel from inside a reply callback while another call of its is in
     * flight (parked): that call is cancelled, the server sees it, its callback never runs. */
    cancels = park_cancels;
    o = calloc(1, sizeof(*o));
    REQUIRE(rpc_channel_new(ctx, target, 0, &o->ch, &err) == 0);
    struct owner *bystander = calloc(1, sizeof(*bystander));
    REQUIRE(rpc_unary(o->ch, "/test.Park/Park", bb, NULL, 0, 0, NULL, stray_reply, bystander,
                      NULL) == 0);
    CHECK(harness_run_until(loop, is_parked, NULL, 5000));
    REQUIRE(rpc_unary(o->ch, "/test.Echo/Echo", bb, NULL, 0, 5000, NULL, reply_frees_owner, o,
                      NULL) == 0);
    CHECK(harness_run_until(loop, owner_freed, NULL, 5000));
    free(bystander);
    CHECK(harness_run_until(loop, park_released, &cancels, 5000));
    harness_run_until(loop, NULL, NULL, 200);
    CHECK_INT(stray_replies, 0);

    /* A server freed from inside its shutdown's done callback while a call it served is still
     * held (cancelled by the shutdown, not yet replied): the call stays valid until replied. */
    int hport = 0;
    struct rpc_server *hs = start_server(0, &hport);
    REQUIRE(rpc_server_register(hs, "/test.Hold/Hold", hold, NULL, &err) == 0);
    REQUIRE(rpc_server_start(hs, &err) == 0);
    char htarget[64];
    snprintf(htarget, sizeof(htarget), "127.0.0.1:%d", hport);
    struct rpc_channel *hch = NULL;
    REQUIRE(rpc_channel_new(ctx, htarget, 0, &hch, &err) == 0);
    struct testcall on_held = {0};
    REQUIRE(rpc_unary(hch, "/test.Hold/Hold", bb, NULL, 0, 5000, NULL, testcall_cb, &on_held,
                      NULL) == 0);
    while (n_held == 0 && !on_held.done)
        ev_run(loop, EVRUN_ONCE);
    REQUIRE(n_held == 1);
    server_down = false;
    rpc_server_shutdown(hs, 100, free_on_down, hs);
    CHECK(harness_run_until(loop, is_down, NULL, 5000));
    CHECK(testcall_wait(loop, &on_held, 1, 5000));
    CHECK(on_held.status != GRPC_STATUS_OK);
    testcall_clear(&on_held);
    CHECK_STR(rpc_call_method(held[0]), "/test.Hold/Hold");
    rpc_call_reply(held[0], NULL, GRPC_STATUS_CANCELLED, "after the server was freed");
    n_held = 0;
    rpc_channel_free(hch);

    /* Unix sockets, and the context's shared channel per peer. */
    char sock[64];
    snprintf(sock, sizeof(sock), "unix:/tmp/mm-rpc-test-%d.sock", (int)getpid());
    struct rpc_server *us = NULL;
    REQUIRE(rpc_server_new(ctx, NULL, &us, &err) == 0);
    REQUIRE(rpc_server_listen(us, sock, NULL, &err) == 0);
    REQUIRE(rpc_server_register(us, "/test.Echo/Echo", echo, NULL, &err) == 0);
    REQUIRE(rpc_server_start(us, &err) == 0);
    struct rpc_channel *uch = rpc_channel_for(ctx, sock, &err);
    REQUIRE(uch != NULL);
    CHECK(rpc_channel_for(ctx, sock, &err) == uch);
    r = call(uch, "/test.Echo/Echo", bb, NULL, 0, 5000);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    testcall_clear(&r);
    stop_server(us);
    unlink(sock + 5);
    /* An address that cannot be bound is a clear error. */
    struct rpc_server *bad = NULL;
    REQUIRE(rpc_server_new(ctx, NULL, &bad, &err) == 0);
    CHECK_INT(rpc_server_listen(bad, "unix:/nonexistent-dir/x.sock", NULL, &err), -ENOENT);
    CHECK(strstr(err.msg, "cannot listen on unix:/nonexistent-dir/x.sock") != NULL);
    /* A taken port is refused, never shared; a port out of range is refused, not replaced. */
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", port);
    CHECK_INT(rpc_server_listen(bad, taken, NULL, &err), -EADDRINUSE);
    CHECK(strstr(err.msg, taken) != NULL && strstr(err.msg, "in use") != NULL);
    CHECK_INT(rpc_server_listen(bad, "127.0.0.1:99999", NULL, &err), -EINVAL);
    CHECK(strstr(err.msg, "127.0.0.1:99999") != NULL);
    rpc_server_free(bad); /* never started: no shutdown needed */

    /* Graceful shutdown: a held call answered within the grace period completes OK. */
    struct testcall pending = {0};
    REQUIRE(rpc_unary(ch, "/test.Hold/Hold", bb, NULL, 0, 5000, NULL, testcall_cb, &pending,
                      NULL) == 0);
    while (n_held == 0 && !pending.done)
        ev_run(loop, EVRUN_ONCE);
    REQUIRE(n_held == 1);
    server_down = false;
    rpc_server_shutdown(s, 2000, on_down, NULL);
    rpc_call_reply(held[0], grpc_byte_buffer_copy(bb), GRPC_STATUS_OK, NULL);
    CHECK(testcall_wait(loop, &pending, 1, 5000));
    CHECK_INT(pending.status, GRPC_STATUS_OK);
    testcall_clear(&pending);
    CHECK(harness_run_until(loop, is_down, NULL, 5000));
    /* After shutdown, new calls fail as UNAVAILABLE. */
    r = call(ch, "/test.Echo/Echo", bb, NULL, 0, 2000);
    CHECK(r.status == GRPC_STATUS_UNAVAILABLE || r.status == GRPC_STATUS_DEADLINE_EXCEEDED);
    testcall_clear(&r);
    grpc_byte_buffer_destroy(bb);
    rpc_server_free(s);
    rpc_channel_free(ch);
    free(blob);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
