/* rest.h - KServe V2 inference over HTTP/JSON (the V2 REST protocol, PROTOCOLS.md) on a port of
 * its own (--rest-listen, env MM_REST_LISTEN, default 0.0.0.0:8008; "off" disables it):
 *
 *   POST /v2/models/NAME[/versions/V]/infer  the V2 JSON request -> 200 the V2 JSON response
 *   GET  /v2/models/NAME[/versions/V]        model metadata {"name","versions","platform",
 *                                            "inputs":[{"name","datatype","shape"}],"outputs"}
 *   GET  /v2/models/NAME[/versions/V]/ready  200 {"name","ready":true}, 400 ...false
 *   GET  /v2/health/live, /v2/health/ready   200 (empty body), 503 {"error"} when not ready
 *   GET  /v2                                 {"name","version","extensions":[]}
 * Errors: {"error": "message"} with the gRPC status mapped to HTTP (INVALID_ARGUMENT 400,
 * NOT_FOUND 404, DEADLINE_EXCEEDED 504, UNAVAILABLE 503, RESOURCE_EXHAUSTED 429, ...); a
 * malformed request 400, an unknown path 404, a wrong method 405, a body over the bound 413.
 * The model is NAME (a vmodel or a model id), or the header mm-model-id (a concrete id).
 *
 * A request is converted once, on the HTTP thread, to the bytes of the gRPC request
 * (proto/v2json), handed to the loop and routed there by route_submit exactly as a gRPC call
 * (route.h; no loopback call), its connection suspended meanwhile; the answer is handed back
 * and rendered to JSON on the HTTP thread. The loop neither parses nor renders JSON.
 *
 * The server (libmicrohttpd) runs on a thread of its own. Bounded: connections open at once
 * and from one address, a request's headers (REST_HEADER_BYTES, else 431), its body
 * (max_body_bytes, else 413), the bodies held at once (REST_BODIES_BYTES, else 503), an idle
 * or silent connection (closed after idle_timeout_s; a slow body too), a request's time on
 * the loop (timeout_ms, parked time included: then 504).
 *
 * rest_new, rest_set_route, rest_set_ready and rest_free are called on the loop's thread.
 * Lifetime: rest_free stops the server, answers the requests still held 503 and cancels their
 * route calls; free it before the route. */
#ifndef MM_REST_H
#define MM_REST_H

#include <stdbool.h>
#include <stddef.h>

#include "mm/error.h"

struct ev_loop;
struct route;
struct tls_watch;
struct rest;

#define REST_DEFAULT_LISTEN "0.0.0.0:8008"
#define REST_MAX_BODY_BYTES (16u << 20) /* as gRPC's max message */
#define REST_BODIES_BYTES (256u << 20)  /* all request bodies held at once */
#define REST_MAX_CONNECTIONS 1024u
#define REST_MAX_PER_IP 512u
#define REST_IDLE_TIMEOUT_S 30u
#define REST_HEADER_BYTES 32768u /* a connection's memory for headers */
#define REST_TIMEOUT_MS 120000u  /* a request's time in the mesh */

/* The --help lines of --rest-listen, as the programs print them. */
#define REST_USAGE                                                                                 \
    "  --rest-listen ADDR           KServe V2 REST (HTTP/JSON) inference; port 0 picks one,\n"     \
    "                               off disables it (env MM_REST_LISTEN; "                         \
    "default " REST_DEFAULT_LISTEN ")\n"

struct rest_config {
    const char *listen;       /* "HOST:PORT", "[V6]:PORT" or ":PORT"; port 0 picks */
    const char *version;      /* GET /v2's version */
    size_t max_body_bytes;    /* 0 = REST_MAX_BODY_BYTES */
    unsigned max_connections; /* 0 = REST_MAX_CONNECTIONS */
    unsigned idle_timeout_s;  /* 0 = REST_IDLE_TIMEOUT_S */
    unsigned timeout_ms;      /* 0 = REST_TIMEOUT_MS */
    struct tls_watch *tls;    /* HTTPS with its chain and key (https.h: re-read when they
                               * change); NULL = plain HTTP. Outlives the server */
    bool tls_require_client;  /* requests need a client certificate tls's CA bundle verifies
                               * (else 403) */
};

/* Binds cfg->listen and serves from a thread of its own; *port is the bound port. Until
 * rest_set_route gives it a route, model requests answer 503 and /v2/health/ready too. 0 or
 * -errno with err naming the address and the problem. */
int rest_new(struct ev_loop *loop, const struct rest_config *cfg, struct rest **out, int *port,
             struct mm_error *err);
/* Whether listen is "off". */
int rest_is_off(const char *listen);
/* Route model requests through r (NULL: answer them 503 "not ready"); ready = r != NULL for
 * /v2/health/ready. x may be NULL (REST off): nothing happens. */
void rest_set_route(struct rest *x, struct route *r);
/* /v2/health/ready's answer from now on (false while shutting down). NULL is fine. */
void rest_set_ready(struct rest *x, bool ready);
/* See the lifetime rule above. NULL is fine. */
void rest_free(struct rest *x);

#endif
