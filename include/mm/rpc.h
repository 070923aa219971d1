/* rpc.h - gRPC C core glue on libev: a server of unary methods registered by path, unary client
 * calls on channels kept per peer, and byte-buffer passthrough.
 *
 * Threading (DESIGN.md): one completion queue per rpc_context, drained by its own thread (the CQ
 * thread), which hands each completion to the libev loop (util/mailbox), except those of the
 * fast path, which it runs itself. Functions are called on the loop thread and handlers and
 * callbacks run there, except what the fast path section says. None may block.
 *   on the CQ thread only, from a fast handler or a forward callback: rpc_forward, and the
 *     rpc_call_* functions on the call being handled (rpc_call_on_cancel is refused there);
 *   on either thread: rpc_snapshot_read, rpc_status_name and the bytes functions;
 *   on the loop only: everything else (contexts, servers, channels, rpc_unary, rpc_retire,
 *     rpc_snapshot_new/publish/free, slow handlers and every call handed to the loop).
 *
 * Lifetime, in short (each function says more):
 * - a client call (rpc_unary) calls back exactly once, or never if it was cancelled
 *   (rpc_request_cancel) or its channel was freed first; the owner of the callback's arg may be
 *   freed from inside the callback, or at any time after cancelling;
 * - a served call lives until it is replied and gRPC is done with it; rpc_call_on_cancel tells
 *   its owner when the client went away, so that the owner replies (releases) it at once;
 * - a server may be freed from inside its shutdown's done callback; calls it served and not yet
 *   replied stay valid until they are;
 * - the context may not be freed from inside any of its callbacks.
 *
 * Bytes: a request arrives as a grpc_byte_buffer and can be forwarded as it is (rpc_unary takes
 * a reference, not a copy); a response comes back as a grpc_byte_buffer and can be replied as
 * it is. rpc_segments() exposes a buffer's slices to wire_find_field() without copying. */
#ifndef MM_RPC_H
#define MM_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "mm/error.h"
#include "mm/wire.h"

struct ev_loop;
struct rpc_context;
struct rpc_server;
struct rpc_call;
struct rpc_channel;
struct rpc_request;
struct rpc_header;

#define RPC_DEFAULT_MAX_MESSAGE (16u << 20)
#define RPC_MAX_STATUS_MESSAGE 512 /* bytes of a status message sent */

/* --- context: the completion queue and its thread, bound to one loop --- */
int rpc_context_new(struct ev_loop *loop, struct rpc_context **out, struct mm_error *err);
/* Free the servers (after their shutdown) and the channels made with rpc_channel_new first. The
 * shared channels (rpc_channel_for) are freed here, their calls in flight cancelled without a
 * callback. Waits for gRPC to complete what is pending, then frees. Not from a callback. */
void rpc_context_free(struct rpc_context *ctx);
/* The loop the context hands its completions to. */
struct ev_loop *rpc_context_loop(const struct rpc_context *ctx);

/* --- server --- */
typedef void (*rpc_handler)(struct rpc_call *call, void *arg);

/* The bounds every server built on this layer has (docs/rpc.md, README's limits table). */
struct rpc_server_config {
    size_t max_message_bytes;   /* receive and send limit; 0 = 16 MiB */
    unsigned calls_per_method;  /* calls requested ahead per method; 0 = 32 */
    size_t max_connections;     /* open at once; more wait in the kernel's backlog; 0 = 3/4
                                 * of the open-file limit at rpc_server_start, at most 65536 */
    unsigned max_streams;       /* concurrent calls per connection; 0 = 100 */
    uint64_t memory_bytes;      /* gRPC's buffers for all connections (a resource quota),
                                 * at least 1 MiB; 0 = 512 MiB */
    unsigned message_timeout_ms; /* from a call's headers to the end of its request message;
                                  * then DEADLINE_EXCEEDED; 0 = 30000 */
    unsigned connection_idle_ms; /* a connection with no call for this long is closed (HTTP/2
                                  * GOAWAY), one that never says anything too: silent sockets
                                  * cannot hold max_connections; 0 = 120000 */
};
#define RPC_DEFAULT_CONNECTION_IDLE_MS 120000u
#define RPC_DEFAULT_MAX_CONNECTIONS 65536u
#define RPC_DEFAULT_MESSAGE_TIMEOUT_MS 30000u
#define RPC_DEFAULT_MAX_STREAMS 100
#define RPC_DEFAULT_MEMORY_BYTES (512ull << 20)

int rpc_server_new(struct rpc_context *ctx, const struct rpc_server_config *cfg,
                   struct rpc_server **out, struct mm_error *err);
/* Bind and listen on addr (accepting starts with rpc_server_start): "127.0.0.1:8033",
 * "[::1]:0", "localhost:8033" (every address the name has, on one port), "unix:/path".
 * *port (may be NULL) gets the bound port, 0 for a unix socket. A taken address is an error,
 * never shared (no SO_REUSEPORT); a port must be 0..65535 (0 picks one). A unix path that
 * exists is replaced only if it is a socket nobody answers on (left by a process that died);
 * the socket is removed when the server stops listening, if it is still ours. Before start;
 * may be called more than once. 0 or -errno (-EADDRINUSE, -EINVAL, -ENOENT...), err naming
 * addr and why. */
int rpc_server_listen(struct rpc_server *s, const char *addr, int *port, struct mm_error *err);
/* path: "/inference.GRPCInferenceService/ModelInfer". Before rpc_server_start. */
int rpc_server_register(struct rpc_server *s, const char *path, rpc_handler handler, void *arg,
                        struct mm_error *err);
/* Start serving and accepting. Connections are accepted on the loop and handed to gRPC; at
 * max_connections, or when descriptors or memory run out (EMFILE...), accepting pauses (a
 * warning in the log) and resumes once connections close: clients wait in the backlog. */
int rpc_server_start(struct rpc_server *s, struct mm_error *err);
/* Stop accepting; in-flight calls may finish within grace_ms, then are cancelled (their
 * on_cancel callbacks run). done runs on the loop once the server is fully shut down; then
 * rpc_server_free. */
void rpc_server_shutdown(struct rpc_server *s, unsigned grace_ms, void (*done)(void *arg),
                         void *arg);
/* After the shutdown's done callback (from inside it too), or for a server that was never
 * started. Calls it served that are not replied yet stay valid (reply to release them); the
 * server's memory goes with the last of them. */
void rpc_server_free(struct rpc_server *s);

/* --- TLS (docs/tls.md) ---
 * Serve TLS on the listeners added after this call (rpc_server_listen): w's certificate chain
 * and key, and with require_client_cert, client certificates required and verified against w's
 * CA bundle (mutual TLS). Before rpc_server_listen; w outlives the context. gRPC's SSL server
 * credentials ask a certificate-config fetcher at each new connection's handshake, which looks
 * at the files (tls_watch_refresh): once they changed, the connections after get the new
 * certificate (open ones keep theirs); files refused are logged and the old ones stay.
 * A TLS address is bound by gRPC's own listener (gRPC takes a connected descriptor only
 * without TLS): the same addresses and port 0, a taken address an error (no SO_REUSEPORT), the
 * memory, stream, message and idle bounds hold; max_connections is not counted there (gRPC's
 * listener accepts what comes, and the resource quota bounds their memory). 0 or -EINVAL
 * (listeners already added, w without a chain and key, or require_client_cert without a CA),
 * -EBUSY after start. Loop. */
struct tls_watch;
int rpc_server_set_tls(struct rpc_server *s, struct tls_watch *w, bool require_client_cert,
                       struct mm_error *err);

/* --- the fast path: handlers on the completion-queue thread ---
 * A fast method's call is received, handled and forwarded on the CQ thread, with no hop to the
 * loop: its fast handler runs there once the request message has come and must, before it
 * returns, reply (rpc_call_reply / rpc_call_fail / a failed rpc_call_decode), forward
 * (rpc_forward), or return RPC_NEXT_LOOP to hand the call to the method's slow handler, which
 * then runs on the loop with the same call, as a loop method's handler does (and may park it).
 * A handler that does none of these gets the call answered INTERNAL (and a log line). Fast
 * handlers must not block and must not touch loop-owned state other than through a snapshot
 * (below). Every bound of rpc_server_config holds for fast calls too (the message timeout is
 * kept on the CQ thread), and status messages are escaped and cut the same way. */
enum rpc_next {
    RPC_NEXT_DONE, /* the call was replied, or forwarded (again) */
    RPC_NEXT_LOOP, /* hand the call to the slow handler, on the loop */
    RPC_NEXT_PASS, /* forward callbacks only: reply the forward's outcome to the client as is */
};
typedef enum rpc_next (*rpc_fast_handler)(struct rpc_call *c, void *arg);

/* Like rpc_server_register, for a method handled on the CQ thread; slow is required. */
int rpc_server_register_fast(struct rpc_server *s, const char *path, rpc_fast_handler fast,
                             rpc_handler slow, void *arg, struct mm_error *err);

/* Timing a method's calls (metrics): fn(call, status, elapsed_ns, arg) runs as each call of
 * method path on s is replied (rpc_call_reply, rpc_call_fail, a forward's outcome passed on),
 * on the thread that replies (the CQ thread for a fast call not handed to the loop), before
 * the reply is sent; elapsed_ns is since the call arrived. fn must not block nor touch the
 * call but through rpc_call_tag and rpc_call_method. Calls released without a reply (the
 * server's shutdown) are not seen. Unobserved methods take no timestamps. Before
 * rpc_server_start; path must be registered already. */
typedef void (*rpc_observe_fn)(struct rpc_call *c, grpc_status_code status, int64_t elapsed_ns,
                               void *arg);
int rpc_server_observe(struct rpc_server *s, const char *path, rpc_observe_fn fn, void *arg,
                       struct mm_error *err);
/* A word the call's handler may keep on the call (0 until set), e.g. what its observer labels
 * it with. The thread that handles the call. */
void rpc_call_set_tag(struct rpc_call *c, uint32_t tag);
uint32_t rpc_call_tag(const struct rpc_call *c);
/* The arg its method was registered with. Either thread. */
void *rpc_call_arg(const struct rpc_call *c);

/* The outcome of a forward, for its callback. */
struct rpc_forward_outcome {
    grpc_status_code status;
    const char *details;        /* the status message as the peer sent it, "" if none; valid
                                 * during the callback (cut at 1023 bytes) */
    grpc_byte_buffer *response; /* OK only, else NULL. The callback may take it (set NULL);
                                 * otherwise it is replied (RPC_NEXT_PASS) or freed */
    bool answered;              /* the status came from the peer (or it is OK). false with
                                 * UNAVAILABLE: the peer was down or refused, or the connection
                                 * broke before it answered; the request may or may not have
                                 * reached it, so a retry elsewhere is for idempotent methods
                                 * (inference is). false with CANCELLED or DEADLINE_EXCEEDED:
                                 * the client went away or its deadline passed: no retry */
    int64_t elapsed_ns;         /* from rpc_forward to now, for an observed method (below);
                                 * else 0 */
};
/* Runs on the CQ thread once the forward is over (always exactly once for a forward started):
 * the forward's state is released first, so the callback may rpc_forward again (a retry on
 * another channel), reply itself, or hand the call to the loop; or return RPC_NEXT_PASS to have
 * the outcome replied as it is. A NULL callback is RPC_NEXT_PASS. */
typedef enum rpc_next (*rpc_forward_cb)(struct rpc_call *c, struct rpc_forward_outcome *o,
                                        void *arg);

#define RPC_FORWARD_MAX_HEADERS 8
#define RPC_FORWARD_HEADER_BYTES 1024 /* keys and values of one forward's headers together */

/* Forward the call being served to ch, on the same completion queue: the same method path,
 * the request bytes by reference (not copied, not decoded), headers added (copied: they need
 * not outlive the call; lower-case keys), the client's deadline and cancellation propagated
 * (a client that goes away cancels the forward, and done sees CANCELLED). ch comes from
 * rpc_channel_for (or outlives every forward on it). The response buffer is replied as it came,
 * status and message passed through. CQ thread only, one forward at a time per call. 0 and done
 * runs later; or -EINVAL (arguments, more than RPC_FORWARD_MAX_HEADERS), -E2BIG (header bytes),
 * -EPERM (not a fast call, or handed to the loop), -EALREADY (replied), -EBUSY (a forward in
 * flight), -EIO (gRPC refused to start it): done never runs and the caller still answers. */
int rpc_forward(struct rpc_call *c, struct rpc_channel *ch, const struct rpc_header *headers,
                size_t n_headers, rpc_forward_cb done, void *arg);

/* --- snapshots: published on the loop, read on the CQ thread without locks ---
 * Quiescent-state reclamation: the CQ thread is quiescent between two completions, so a value
 * it read inside a fast handler or forward callback may be used until that returns, and not
 * after (copy what must outlive it, or give it a lifetime of its own). A value unpublished on
 * the loop is freed on the loop once the CQ thread has passed a quiescent state (at once if it
 * was waiting; otherwise when its current completion ends, without polling). */
struct rpc_snapshot;
/* free_fn(value) frees a value that can no longer be read; it runs on the loop. */
int rpc_snapshot_new(struct rpc_context *ctx, void (*free_fn)(void *value),
                     struct rpc_snapshot **out, struct mm_error *err);
/* Make value (taken; may be NULL) the one readers get; the previous one is freed when no
 * reader can hold it. 0, or -ENOMEM and value is not taken (the previous one stays). Loop. */
int rpc_snapshot_publish(struct rpc_snapshot *s, void *value);
/* The value published last (NULL before any). Any thread: on the CQ thread, from a fast
 * handler or forward callback; on the loop, which publishes, at any time. */
void *rpc_snapshot_read(const struct rpc_snapshot *s);
/* Unpublish and free (deferred like a publish: a fast handler may still be reading). Loop,
 * before rpc_context_free. */
void rpc_snapshot_free(struct rpc_snapshot *s);
/* The primitive underneath: run fn(ptr) on the loop once no fast handler or forward callback
 * that might have seen ptr is still running (ptr already unreachable for new readers): from
 * inside rpc_retire if the CQ thread is waiting, else later from the loop. 0, or -ENOMEM and
 * nothing is done. Loop. Whatever is still waiting runs at rpc_context_free, which is also where
 * snapshots not freed before go (free them before the context). */
int rpc_retire(struct rpc_context *ctx, void (*fn)(void *ptr), void *ptr);

/* --- a call being served ---
 * Valid from its handler until it is replied (rpc_call_reply, rpc_call_fail, a failed
 * rpc_call_decode): a handler that does not reply at once "parks" the call and must reply later,
 * at the latest from its on_cancel callback. Replying releases the call; never use it after. */
const char *rpc_call_method(const struct rpc_call *c);
/* The request message, owned by the call. */
grpc_byte_buffer *rpc_call_request(const struct rpc_call *c);
/* Value of request header key (lower-case), or NULL; not NUL-terminated: *len. */
const char *rpc_call_header(const struct rpc_call *c, const char *key, size_t *len);
/* Milliseconds until the client's deadline (INT64_MAX if none). */
int64_t rpc_call_remaining_ms(const struct rpc_call *c);
bool rpc_call_cancelled(const struct rpc_call *c);
/* Loop calls only (-EPERM on the fast path: a fast call is parked by handing it to the loop).
 * Run cb(c, arg) once, on the loop, when the client cancels the call, goes away, or its deadline
 * passes, or the server's shutdown cancels it (gRPC's close with cancelled = 1), as soon as gRPC
 * reports it. It never runs once the call is replied. cb may (and usually should) reply from
 * inside: that releases the call. cb NULL removes the callback. One callback per call; a second
 * registration replaces the first. 0; -EALREADY if the call is already replied; -ECANCELED if it
 * is already known to be cancelled (cb is not kept: reply now). */
typedef void (*rpc_cancel_cb)(struct rpc_call *c, void *arg);
int rpc_call_on_cancel(struct rpc_call *c, rpc_cancel_cb cb, void *arg);
/* Decode the request as desc's message into *out (the caller frees it with
 * protobuf_c_message_free_unpacked(*out, NULL)), or reply INVALID_ARGUMENT "malformed <type>:
 * ..." and return -EBADMSG: the call is then replied and must not be used again. */
int rpc_call_decode(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **out);
/* Reply once. response (may be NULL) is taken. A non-OK status sends no message. The status
 * message is sent with its control characters escaped and cut at RPC_MAX_STATUS_MESSAGE bytes
 * (at a character boundary). */
int rpc_call_reply(struct rpc_call *c, grpc_byte_buffer *response, grpc_status_code status,
                   const char *message);
/* Reply with an error message formatted like printf. */
int rpc_call_fail(struct rpc_call *c, grpc_status_code status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- client --- */
struct rpc_header {
    const char *key;   /* lower-case */
    const char *value;
};

/* status: a grpc_status_code; details: the status message ("" if none); response: taken by the
 * callee (NULL unless OK). Runs on the loop, once per call that was not cancelled; the call is
 * already gone (its handle invalid), so the callee may free whatever owns arg, or the channel. */
typedef void (*rpc_reply_cb)(grpc_status_code status, const char *details,
                             grpc_byte_buffer *response, void *arg);

/* target: "127.0.0.1:8080", "unix:/path". max_message_bytes 0 = 16 MiB. */
int rpc_channel_new(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                    struct rpc_channel **out, struct mm_error *err);
/* Calls still in flight on ch are cancelled as rpc_request_cancel does: their callbacks never
 * run. Allowed from inside a reply callback. Not for the shared channels of rpc_channel_for. */
void rpc_channel_free(struct rpc_channel *ch);
const char *rpc_channel_target(const struct rpc_channel *ch);
/* The context's shared channel to target, created on first use and kept until the context is
 * freed: one HTTP/2 connection per peer, however many callers. NULL on error (err filled). */
struct rpc_channel *rpc_channel_for(struct rpc_context *ctx, const char *target,
                                    struct mm_error *err);

/* Channels to peers over TLS: rpc_peer_channel_for then verifies the peer's certificate with
 * w's CA bundle (and its name: the target's host, or server_name when given, as gRPC's
 * ssl_target_name_override), and presents w's chain and key as its client certificate when w
 * has them. w outlives ctx; its files are looked at again when a channel is made (a channel is
 * kept for the context's life: connections it makes later use what it was made with). 0 or
 * -EINVAL (w without a CA bundle; already set). Loop, before the first rpc_peer_channel_for. */
int rpc_context_set_peer_tls(struct rpc_context *ctx, struct tls_watch *w,
                             const char *server_name, struct mm_error *err);
/* Peer channels (rpc_peer_channel_for) ping a peer every RPC_PEER_KEEPALIVE_MS while calls are
 * in flight on them, and fail those calls UNAVAILABLE when a ping is not answered within
 * RPC_PEER_KEEPALIVE_TIMEOUT_MS (a hung or cut-off peer is noticed in about 3 s, not at the
 * calls' deadlines); a connection attempt gives up after RPC_PEER_CONNECT_TIMEOUT_MS. Every
 * server accepts pings as often as every RPC_PEER_KEEPALIVE_MS / 2. */
#define RPC_PEER_KEEPALIVE_MS 1000
#define RPC_PEER_KEEPALIVE_TIMEOUT_MS 2000
#define RPC_PEER_CONNECT_TIMEOUT_MS 2000
/* The context's shared channel to a peer: rpc_channel_for's, over TLS when the context has peer
 * TLS (rpc_context_set_peer_tls). NULL on error (err filled). */
struct rpc_channel *rpc_peer_channel_for(struct rpc_context *ctx, const char *target,
                                         struct mm_error *err);
/* As rpc_channel_new, over TLS as rpc_context_set_peer_tls describes (tests, tools). */
int rpc_channel_new_tls(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                        struct tls_watch *w, const char *server_name, struct rpc_channel **out,
                        struct mm_error *err);

/* Start a unary call. request is not taken (a reference is). timeout_ms 0 = none. parent (may
 * be NULL): a call being served whose deadline and cancellation propagate to this one. 0, and
 * cb runs later (never inside rpc_unary); or -EINVAL / -ENOMEM / -EIO and cb never runs.
 * out (may be NULL) gets the call's handle for rpc_request_cancel, valid until cb starts. */
int rpc_unary(struct rpc_channel *ch, const char *method, grpc_byte_buffer *request,
              const struct rpc_header *headers, size_t n_headers, int64_t timeout_ms,
              struct rpc_call *parent, rpc_reply_cb cb, void *arg, struct rpc_request **out);
/* Cancel a call whose callback has not run: gRPC cancels it (the server sees it cancelled), its
 * callback never runs, and the owner of its arg may be freed at once. The call's memory is
 * released when gRPC's completion arrives, without calling anyone. */
void rpc_request_cancel(struct rpc_request *r);

/* The outcome of a call waited for. */
struct rpc_reply {
    grpc_status_code status;
    char details[1024];         /* the status message ("" if none), truncated */
    grpc_byte_buffer *response; /* OK only; the caller's (rpc_reply_clear) */
};
/* Call and wait: start a unary call (as rpc_unary, without parent) and run the channel's loop
 * until its reply, for programs' main lines, tools and tests (other watchers of the loop run
 * meanwhile). timeout_ms > 0 is the call's deadline. 0 when gRPC answered (any status, in
 * *reply); otherwise *reply still says why: -EINVAL / -ENOMEM / -EIO (INTERNAL: it could not
 * start), -ETIMEDOUT (UNKNOWN: no answer 5 s past the deadline; the call is cancelled). */
int rpc_unary_wait(struct rpc_channel *ch, const char *method, grpc_byte_buffer *request,
                   const struct rpc_header *headers, size_t n_headers, int64_t timeout_ms,
                   struct rpc_reply *reply);
/* Free the response and zero the reply. */
void rpc_reply_clear(struct rpc_reply *reply);

/* The status code's name as gRPC spells it ("NOT_FOUND"), "UNKNOWN_STATUS" for others. */
const char *rpc_status_name(grpc_status_code code);

/* --- bytes --- */
/* Fill segs with the buffer's slices (no copy); returns how many, or -E2BIG if more than max,
 * -ENOTSUP for a compressed buffer. */
int rpc_segments(grpc_byte_buffer *bb, struct wire_segment *segs, size_t max);
/* A buffer holding a copy of len bytes. */
grpc_byte_buffer *rpc_buffer_from(const void *data, size_t len);
/* Pack a protobuf-c message into a new buffer (NULL without memory). */
grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg);
/* Decode a buffer as desc's message: 0, or -EBADMSG with err naming the type. The caller frees
 * *out with protobuf_c_message_free_unpacked(*out, NULL). */
int rpc_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
               ProtobufCMessage **out, struct mm_error *err);
/* Flatten a buffer into a malloc'd copy (tests and cold paths). */
void *rpc_flatten(grpc_byte_buffer *bb, size_t *len);

#endif
