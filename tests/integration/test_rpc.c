/* test_rpc.c - the rpc layer over real loopback sockets: round trips of each service shape
 * (KServe V2, mesh API, runtime SPI messages), headers, unknown methods, malformed and
 * oversized messages, deadlines and cancellation, 1,000 concurrent calls, byte-exact passthrough
 * through a forwarding server, and graceful shutdown. Lifetimes (run under ASan too): a parked
 * call's on_cancel runs when the client's deadline passes or it cancels, and may reply; a
 * cancelled client call never calls back into its freed owner; an owner may free the channel
 * from a reply callback while other calls are in flight on it; a server may be freed from its
 * shutdown's done callback while a call it served is still held. */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    CHECK(rpc_call_remaining_ms(held[0]) == 0);
    struct testcall never = {0};
    testcall_wait(loop, &never, 1, 300); /* let the cancellation arrive */
    CHECK(rpc_call_cancelled(held[0]));
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
