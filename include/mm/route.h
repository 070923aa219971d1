/* route.h - KServe V2 inference (inference.GRPCInferenceService) on a node's or a gateway's
 * port, routed through the mesh (docs/routing.md):
 *
 * - the model: the header mm-model-id (or mm-model-id-bin) names a concrete model id; else the
 *   header mm-vmodel-id (-bin), else field 1 of the request (model_name / name), names a vmodel
 *   (its active model id, table.h) or else a model id;
 * - a Loaded copy is chosen (table_pick: local first, else the better of two random peers by
 *   requests in flight) and the request's bytes are forwarded untouched, by reference, with
 *   mm-model-id: <the concrete id> and mm-hop: 1, to the local runtime or to the holder's
 *   internal port; the response (or the status and message) is passed back as it is. The
 *   client's deadline and cancellation propagate to the forward;
 * - no Loaded copy: the call parks on the model (table_park) until a copy is Loaded, the model
 *   turns out impossible to load, the client's deadline (without one: max_wait_ms), or the
 *   client cancels (released at once);
 * - a forward that fails UNAVAILABLE (not served: the peer was unreachable, or no longer holds
 *   the model, or its runtime could not take it) is tried once more on another copy; with
 *   none, and the peer unreachable, the model is placed elsewhere at once (table_park's
 *   exclude) and the call parks on that copy;
 * - internal ports (internal, and any request carrying mm-hop) serve only from the local copy:
 *   never forwarded again, so a request makes at most one hop. No local Loaded copy:
 *   UNAVAILABLE, which the forwarding node retries elsewhere.
 * Status codes: INVALID_ARGUMENT without a model name or for a malformed request, NOT_FOUND
 * "model NAME not found", UNAVAILABLE when no instance can take the model (place's reason) or
 * MAX parked calls wait already, INTERNAL "model NAME failed to load: ..." after the mesh gave
 * up loading it, DEADLINE_EXCEEDED, the runtime's own codes and messages untouched.
 * ModelReady does not load a model: ready is whether a Loaded copy answers it ready.
 * ServerLive, ServerReady and ServerMetadata are answered by the node itself.
 *
 * Metrics (cfg->metrics; labels method = ModelInfer|ModelMetadata|ModelReady, code = the gRPC
 * status, modelId = the name the client gave: a vmodel's, as ModelMesh labels it, or the model
 * id; bounded, metrics.h. It is taken only by a model found in the mesh (a vmodel resolved, a
 * copy picked, or loaded or failed while a call was parked on it): a name not found, a
 * malformed request, a call that timed out parked and a ModelReady answered without a copy
 * count under __other__):
 *   modelmesh_api_request_milliseconds{method,code,modelId}   external ports: arrival to reply
 *   modelmesh_invoke_model_milliseconds{method,code,modelId}  a forward to the local runtime
 *   modelmesh_req_queue_delay_milliseconds{modelId}           time parked waiting for a copy
 *   mm_route_forwarded_total{to=local|remote}                 forwards started
 *   mm_route_retried_total                                    forwards retried on another copy
 *   mm_route_in_flight{port=external|internal}                model calls not yet replied
 * Recorded on whichever thread handles the call (CQ thread or loop): relaxed atomics only.
 *
 * Owns: the calls being routed (parked or forwarded). Threading: the loop thread only.
 * Lifetime: route_free answers every call it holds UNAVAILABLE and cancels its forwards; free
 * it before the table; shut the rpc server down first (its handlers point here). */
#ifndef MM_ROUTE_H
#define MM_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <grpc/status.h>

#include "mm/error.h"

struct ev_loop;
struct mesh;
struct route;
struct rpc_server;
struct table;

#define ROUTE_DEFAULT_MAX_WAIT_MS 300000u

struct route_config {
    struct ev_loop *loop;     /* required: the rpc context's */
    struct table *table;      /* required */
    struct mesh *mesh;        /* required: use counts (mesh_note_use) */
    const char *name;         /* this node's instance id, or the gateway's name (messages) */
    const char *version;      /* ServerMetadata's version */
    bool internal;            /* the peers' port: local copies only, never forwarded */
    unsigned max_wait_ms;     /* a parked call without a deadline waits this long at most;
                                 0 = ROUTE_DEFAULT_MAX_WAIT_MS */
    struct metrics *metrics;  /* NULL: none recorded (and no call is timed). Outlives the route */
};

/* Register the six methods on s (before rpc_server_start). */
int route_new(struct rpc_server *s, const struct route_config *cfg, struct route **out,
              struct mm_error *err);
/* NULL is ignored. See the lifetime rule above. */
void route_free(struct route *r);

/* --- in-process calls: the same route for a request that did not come over gRPC (the REST
 * gateway, rest.h), without a loopback call. Loop thread only. */
enum route_kind { ROUTE_INFER, ROUTE_METADATA, ROUTE_READY };
struct route_call;
/* status and message as a gRPC client would see them (message "" when none); response (OK
 * only, else NULL) is taken by the callee. The call is gone when this runs. */
typedef void (*route_done_cb)(grpc_status_code status, const char *message,
                              grpc_byte_buffer *response, void *arg);
/* Route request (taken, always: the serialized ModelInferRequest, ModelMetadataRequest or
 * ModelReadyRequest) for the model name[0, len) as the method's gRPC call would be routed with
 * that name in a header: concrete as mm-model-id, else as mm-vmodel-id (a vmodel or a model
 * id). timeout_ms (<= 0: max_wait_ms) bounds the whole call, parked time included
 * (DEADLINE_EXCEEDED). 0, and done runs exactly once on the loop, possibly before route_submit
 * returns (a name that cannot be a model: NOT_FOUND), unless route_cancel stops it; *out (may
 * be NULL) is the handle for route_cancel, set to NULL when done runs. -EINVAL (arguments) or
 * -ENOMEM: done never runs. route_free answers the calls still held UNAVAILABLE. */
int route_submit(struct route *r, enum route_kind kind, const char *name, size_t len, bool concrete,
                 grpc_byte_buffer *request, int64_t timeout_ms, route_done_cb done, void *arg,
                 struct route_call **out);
/* Stop a call whose done has not run: it never will (forwards cancelled, parking left). NULL
 * is fine. */
void route_cancel(struct route_call *c);

struct route_stats {
    uint64_t calls, forwarded_local, forwarded_remote, parked, retried, not_found;
    unsigned held; /* calls held now (parked or being forwarded) */
};
void route_get_stats(const struct route *r, struct route_stats *out);

#endif
