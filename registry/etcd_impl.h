/* etcd_impl.h - what etcd.c (client, unary requests, failover, auth, paged ranges) and
 * etcd_watch.c (watch streams) share. Not a public header. */
#ifndef MM_ETCD_IMPL_H
#define MM_ETCD_IMPL_H

#include <bsd/sys/queue.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/buf.h"
#include "mm/curlev.h"
#include "mm/etcd.h"

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_DEFAULT_MAX_REPLY_BYTES ((size_t)512 << 20) /* etcd_config.max_reply_bytes 0 */

/* ---------------------------------------------------------------- response arena */

struct arena_chunk;
void *arena_alloc(struct arena_chunk **head, size_t n);
void arena_free(struct arena_chunk *c);

/* ---------------------------------------------------------------- requests */

enum req_kind {
    REQ_RANGE, REQ_PUT, REQ_DELETE, REQ_TXN, REQ_LEASE_GRANT, REQ_LEASE_KEEPALIVE,
    REQ_LEASE_REVOKE, REQ_LEASE_TTL, REQ_COMPACT, REQ_AUTH, REQ_WATCH,
};

struct paged; /* etcd_range_paged's state, in etcd.c */

TAILQ_HEAD(request_list, request);

/* One operation: a unary request (retried on other endpoints while allowed), a paged range (a
 * range request relaunched per page), or a watch stream. The public etcd_request and etcd_watch
 * handles are this struct. */
struct request {
    struct etcd_client *c;
    TAILQ_ENTRY(request) all;       /* in c->all while it belongs to the client */
    TAILQ_ENTRY(request) wait;      /* in *wait_on while it waits for an auth token */
    struct request_list *wait_on;
    bool in_all;
    enum req_kind kind;
    char *body;
    size_t body_len;
    bool idempotent;
    bool auth_retried;
    bool finished;                  /* watch: final callback delivered */
    bool dispatching;               /* a callback of this request is running */
    bool free_requested;            /* watch: freed (by its owner or the client) meanwhile;
                                       paged: cancelled meanwhile */
    size_t endpoint;                /* index used by the current attempt */
    size_t attempts;
    struct curlev_transfer *t;      /* the current attempt's transfer, NULL between */
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    char what[192];                 /* "range /modelmesh/x/" for messages */
    etcd_cb cb;
    etcd_watch_cb watch_cb;
    void *arg;
    struct paged *pg;
    /* watch stream framing: the scan resumes at scan_pos of the transfer's body */
    size_t scan_pos;
    size_t obj_start;
    int depth;
    bool in_string;
    bool escaped;
};

struct etcd_client {
    struct ev_loop *loop;
    struct curlev *curl;
    bool own_curl;
    char *endpoints[ETCD_MAX_ENDPOINTS];
    size_t n_endpoints;
    size_t current;
    char *ca_file, *cert_file, *key_file, *user, *password;
    unsigned request_timeout_ms, connect_timeout_ms;
    size_t max_reply_bytes;         /* a reply larger than this is refused (-EMSGSIZE) */
    char *token;
    bool authenticating;
    struct request_list all;        /* every live request and running watch */
    struct request_list auth_wait;  /* waiting for a token */
    int dispatching;                /* depth of callbacks running on behalf of the client */
    bool closing;                   /* etcd_client_free called: destroyed when dispatching ends */
    struct metric *round_trips;     /* mm_etcd_round_trips_total{kind}, NULL = metrics off */
};

/* A callback into user code may free the client: bracket it. leave() destroys a client whose
 * free was requested once the outermost bracket closes. */
void client_enter(struct etcd_client *c);
void client_leave(struct etcd_client *c);

/* Allocate a request (taking body), link it into the client and start it. On failure it is
 * freed and nothing is called back. */
int request_submit(struct etcd_client *c, enum req_kind kind, char *body, size_t len,
                   bool idempotent, etcd_cb cb, void *arg, const char *op, const char *key,
                   size_t key_len, struct request **out);
int request_launch(struct request *r);
/* Stop its transfer or its wait for auth; it stays linked in the client. */
void request_detach(struct request *r);
void request_unlink(struct request *r);
void request_free(struct request *r);
const char *request_endpoint(const struct request *r);
void request_advance_endpoint(struct request *r);
/* etcd's refusal of an expired or unknown auth token (the request was not executed). */
bool request_token_error(const char *msg);
/* Forget the client's token after such a refusal, so the next request authenticates. */
void client_drop_token(struct etcd_client *c, const char *msg);

int add_b64(struct mm_buf *b, const char *name, const void *s, size_t len);
int add_key_range(struct mm_buf *b, const char *key, size_t key_len, bool prefix,
                  const char *range_end, size_t range_end_len);
int64_t json_int64(const cJSON *obj, const char *name);
bool json_bool(const cJSON *obj, const char *name);
int parse_kv(const cJSON *j, struct arena_chunk **arena, struct etcd_kv *kv);

/* etcd_watch.c */
void watch_on_data(struct curlev_transfer *t, struct mm_buf *body, void *arg);
void watch_on_done(struct curlev_transfer *t, CURLcode res, void *arg);
/* The watch ends with status (auth failed while it waited): final callback. */
void watch_fail(struct request *r, int status, const struct mm_error *err);
/* The client goes: stop the watch and free it (no callback). */
void watch_drop(struct request *r);

#endif
