/* rpc.h - gRPC C core glue on libev: a server of unary methods registered by path, unary client
 * calls on channels kept per peer, and byte-buffer passthrough.
 *
 * Threading (DESIGN.md): one completion queue per rpc_context, drained by its own thread, which
 * hands each completion to the libev loop (a lock-free-for-the-loop queue + ev_async). Every
 * handler and reply callback runs on the loop thread; none may block.
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

#define RPC_DEFAULT_MAX_MESSAGE (16u << 20)

/* --- context: the completion queue and its thread, bound to one loop --- */
int rpc_context_new(struct ev_loop *loop, struct rpc_context **out, struct mm_error *err);
/* Free servers and channels first, and let their calls finish. */
void rpc_context_free(struct rpc_context *ctx);
/* The loop the context hands its completions to. */
struct ev_loop *rpc_context_loop(const struct rpc_context *ctx);

/* --- server --- */
typedef void (*rpc_handler)(struct rpc_call *call, void *arg);

struct rpc_server_config {
    size_t max_message_bytes;   /* receive and send limit; 0 = 16 MiB */
    unsigned calls_per_method;  /* calls requested ahead per method; 0 = 32 */
};

int rpc_server_new(struct rpc_context *ctx, const struct rpc_server_config *cfg,
                   struct rpc_server **out, struct mm_error *err);
/* addr: "127.0.0.1:8033", "[::1]:0", "unix:/path". *port gets the bound port (may be NULL). */
int rpc_server_listen(struct rpc_server *s, const char *addr, int *port, struct mm_error *err);
/* path: "/inference.GRPCInferenceService/ModelInfer". Before rpc_server_start. */
int rpc_server_register(struct rpc_server *s, const char *path, rpc_handler handler, void *arg,
                        struct mm_error *err);
int rpc_server_start(struct rpc_server *s, struct mm_error *err);
/* Stop accepting; in-flight calls may finish within grace_ms, then are cancelled. done runs on
 * the loop once the server is fully shut down; then rpc_server_free. */
void rpc_server_shutdown(struct rpc_server *s, unsigned grace_ms, void (*done)(void *arg),
                         void *arg);
/* After the shutdown's done callback, or for a server that was never started. */
void rpc_server_free(struct rpc_server *s);

/* --- a call being served (valid until replied and its completions are in) --- */
const char *rpc_call_method(const struct rpc_call *c);
/* The request message, owned by the call. */
grpc_byte_buffer *rpc_call_request(const struct rpc_call *c);
/* Value of request header key (lower-case), or NULL; not NUL-terminated: *len. */
const char *rpc_call_header(const struct rpc_call *c, const char *key, size_t *len);
/* Milliseconds until the client's deadline (INT64_MAX if none). */
int64_t rpc_call_remaining_ms(const struct rpc_call *c);
bool rpc_call_cancelled(const struct rpc_call *c);
/* Reply once. response (may be NULL) is taken. A non-OK status sends no message. */
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
 * callee (NULL unless OK). Runs on the loop. */
typedef void (*rpc_reply_cb)(grpc_status_code status, const char *details,
                             grpc_byte_buffer *response, void *arg);

/* target: "127.0.0.1:8080", "unix:/path". max_message_bytes 0 = 16 MiB. */
int rpc_channel_new(struct rpc_context *ctx, const char *target, size_t max_message_bytes,
                    struct rpc_channel **out, struct mm_error *err);
void rpc_channel_free(struct rpc_channel *ch);
const char *rpc_channel_target(const struct rpc_channel *ch);
/* The context's shared channel to target, created on first use and kept until the context is
 * freed: one HTTP/2 connection per peer, however many callers. NULL on error (err filled). */
struct rpc_channel *rpc_channel_for(struct rpc_context *ctx, const char *target,
                                    struct mm_error *err);

/* Start a unary call. request is not taken (a reference is). timeout_ms 0 = none. parent (may
 * be NULL): a call being served whose deadline and cancellation propagate to this one. */
int rpc_unary(struct rpc_channel *ch, const char *method, grpc_byte_buffer *request,
              const struct rpc_header *headers, size_t n_headers, int64_t timeout_ms,
              struct rpc_call *parent, rpc_reply_cb cb, void *arg);

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
