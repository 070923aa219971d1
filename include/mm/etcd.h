/* etcd.h - asynchronous etcd v3 client over its JSON gateway (/v3/...), on the loop's curl
 * transport (curlev.h). Owns: the endpoint list and failover, TLS and auth settings, in-flight
 * requests and watch streams. Synchronous helpers for CLIs and tests are in etcd_sync.h.
 *
 * Threading: everything on the loop's thread; nothing here blocks the loop.
 *
 * Lifetime: every callback runs from the loop, never inside the call that started the request.
 * From inside any callback of a client (request, page, watch) the owner may start requests,
 * cancel any request, free any watch (its own included) and free the client itself.
 * Asynchronous requests return a handle (struct etcd_request) through a trailing `out` (NULL
 * allowed if the caller never cancels). The handle is valid until its callback starts (the done
 * callback for a paged range) or until it is cancelled. etcd_request_cancel() stops the request
 * and its callback never runs; a cancelled write may still have been executed by etcd (it may
 * have been sent already), so the caller must not read "cancelled" as "not done".
 * etcd_client_free() ends every pending request with its callback and -ECANCELED.
 *
 * Keys and values are byte strings; the client base64-encodes them for the gateway and hands
 * them back decoded and NUL-terminated (lengths are given too). */
#ifndef MM_ETCD_H
#define MM_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct ev_loop;
struct curlev;
struct etcd_client;
struct metrics;
struct etcd_request;
struct etcd_watch;

struct etcd_config {
    const char *endpoints;        /* comma-separated URLs: "http://127.0.0.1:2379,http://h2:2379" */
    const char *ca_file;          /* TLS: PEM CA bundle for https endpoints; NULL = system CAs */
    const char *cert_file;        /* TLS client certificate (PEM); NULL = none */
    const char *key_file;         /* TLS client key (PEM) */
    const char *user;             /* auth user; NULL = no auth */
    const char *password;
    unsigned request_timeout_ms;  /* unary request deadline; 0 = 5000 */
    unsigned connect_timeout_ms;  /* per-endpoint connect deadline; 0 = 1000 */
    size_t max_reply_bytes;       /* a reply (a watch: its bytes not yet delivered) larger than
                                     this is refused with -EMSGSIZE; 0 = 512 MiB */
    struct curlev *curl;          /* the loop's transport, shared (it must outlive the client);
                                     NULL = the client makes its own */
    struct metrics *metrics;      /* counts mm_etcd_round_trips_total{kind} (every HTTP request
                                     sent, retries and pages included); NULL = none. It must
                                     outlive the client */
};

struct etcd_kv {
    const char *key;              /* NUL-terminated; key_len excludes the NUL */
    size_t key_len;
    const char *value;            /* NUL-terminated; "" for keys_only ranges */
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;                /* 0 = none */
};

enum etcd_op_kind { ETCD_OP_RANGE, ETCD_OP_PUT, ETCD_OP_DELETE };

/* Result of one operation (a plain request, or one op of a txn). */
struct etcd_op_result {
    enum etcd_op_kind kind;
    const struct etcd_kv *kvs;    /* range: the keys; put/delete: prev kvs if requested */
    size_t n_kvs;
    int64_t count;                /* range: total matching keys */
    bool more;                    /* range: more keys beyond limit */
    int64_t deleted;              /* delete: number of keys deleted */
};

/* A response. Passed to callbacks, valid until the callback returns unless the callback calls
 * etcd_response_keep(), after which the callee owns it and frees it with etcd_response_free(). */
struct etcd_response {
    int64_t revision;             /* header revision: the store's revision when served */
    int64_t member_id;            /* header member_id: the member that served it */
    const char *endpoint;         /* the endpoint URL that served it; valid as long as this */
    struct etcd_op_result op;     /* range / put / delete */
    bool succeeded;               /* txn: whether the compares held */
    const struct etcd_op_result *results; /* txn: one per op of the branch taken */
    size_t n_results;
    int64_t lease_id;             /* lease grant / keepalive / ttl */
    int64_t ttl;                  /* seconds left (keepalive, ttl); a missing lease is -ENOENT */
    int64_t granted_ttl;          /* lease ttl */
    bool keep;                    /* set by etcd_response_keep() */
};

/* status: 0, or a negative errno with err filled:
 *   -ECONNREFUSED  no endpoint reachable           -ETIMEDOUT  request deadline passed
 *   -EIO           sent but outcome unknown (non-idempotent request; not retried)
 *   -ENOENT        lease not found                  -EACCES     auth failed / permission denied
 *   -EINVAL        etcd refused the request          -EPROTO     unparseable reply, or one
 *                                                                without a header revision
 *                                                                (every etcd reply has one)
 *   -EMSGSIZE      the reply is larger than max_reply_bytes (the message names the cap)
 *   -EACCES also when etcd requires authentication and no user was given.
 * resp is NULL when status != 0. */
typedef void (*etcd_cb)(int status, const struct mm_error *err, struct etcd_response *resp,
                        void *arg);

int etcd_client_new(struct ev_loop *loop, const struct etcd_config *cfg,
                    struct etcd_client **out, struct mm_error *err);
/* Ends every pending request (each callback runs once with -ECANCELED; a paged range's done
 * callback) and frees. Watches still running are stopped and freed with the client (no
 * callback): do not etcd_watch_free() them afterwards. Watches that already ended (final
 * callback delivered) still belong to their owner. Allowed from inside any of the client's
 * callbacks (the memory goes when that callback returns). Free leases, elections and mirrors
 * built on the client first. NULL is a no-op. */
void etcd_client_free(struct etcd_client *c);
struct ev_loop *etcd_client_loop(const struct etcd_client *c);
/* The endpoint requests currently go to ("http://127.0.0.1:2379"). */
const char *etcd_client_endpoint(const struct etcd_client *c);

void etcd_response_keep(struct etcd_response *r);
void etcd_response_free(struct etcd_response *r);

/* Stop a request: its callback never runs (the done callback of a paged range neither). Safe
 * while it is being retried on another endpoint or waits for an auth token, and from inside
 * a page callback of the range itself. A write may have been executed even so. NULL is a no-op;
 * the handle must not be used after its callback started. */
void etcd_request_cancel(struct etcd_request *r);

/* The range end that selects every key starting with prefix[0..len): the prefix with its
 * trailing 0xff bytes dropped and the last remaining byte incremented. An empty or all-0xff
 * prefix has no such end: the result is "\0" (length 1), etcd's "to the end of the keyspace".
 * out must have room for max(len, 1) + 1 bytes; it is NUL-terminated; returns its length. */
size_t etcd_prefix_end(const char *prefix, size_t len, char *out);

/* --- KV --- */
struct etcd_range_req {
    const char *key;
    size_t key_len;               /* 0 = strlen(key) */
    bool prefix;                  /* all keys starting with key ("" = whole keyspace) */
    const char *range_end;        /* explicit end (exclusive) when !prefix; NULL = single key;
                                     "\0" with range_end_len 1 = to the end of the keyspace */
    size_t range_end_len;         /* 0 = strlen(range_end) */
    int64_t limit;                /* 0 = no limit */
    int64_t revision;             /* 0 = latest */
    bool keys_only;
    bool count_only;
    bool serializable;            /* served by the member without quorum */
};
int etcd_range(struct etcd_client *c, const struct etcd_range_req *req, etcd_cb cb, void *arg,
               struct etcd_request **out);

/* lease 0 = none. Not retried on other endpoints once sent (see -EIO). */
int etcd_put(struct etcd_client *c, const char *key, const char *value, size_t value_len,
             int64_t lease, etcd_cb cb, void *arg, struct etcd_request **out);
int etcd_delete(struct etcd_client *c, const char *key, bool prefix, etcd_cb cb, void *arg,
                struct etcd_request **out);

/* --- A range read in pages, every page at one revision --- */
struct etcd_paged_req {
    const char *key;              /* first key (bytes) */
    size_t key_len;               /* 0 = strlen(key); key "" with len 0 = from the first key */
    const char *range_end;        /* exclusive end (bytes), e.g. from etcd_prefix_end();
                                     "\0" with range_end_len 1 = to the end of the keyspace */
    size_t range_end_len;         /* 0 = strlen(range_end) */
    int64_t revision;             /* 0 = the revision the first page is served at */
    size_t page_keys;             /* at most this many keys per page; 0 = 1000 */
    size_t page_bytes;            /* at most this many key + value bytes per page; a single
                                     larger pair comes alone; 0 = 1 MiB */
    size_t max_pages;             /* at most this many range requests; 0 = 100000 */
    bool keys_only;
    bool serializable;
};

/* A page: kvs in key order, read at revision. Return 0 to go on, or a negative errno to stop
 * (the done callback then gets it). Valid until the callback returns. */
typedef int (*etcd_page_cb)(const struct etcd_kv *kvs, size_t n_kvs, int64_t revision,
                            void *arg);
/* Once at the end: status 0 after the last page (revision = the one every page was read at,
 * n_keys = keys delivered), or a negative errno with err as etcd_cb's, and further:
 *   -EPROTO    a reply without a header revision, keys not after the previous page's, or
 *              counts that do not add up (more keys than the limit or the count, "more" that
 *              the count contradicts, more keys left than the page before left)
 *   -E2BIG     more than max_pages requests and the server still says more
 *   -EMSGSIZE  one key and its value make a reply larger than max_reply_bytes */
typedef void (*etcd_paged_done_cb)(int status, const struct mm_error *err, int64_t revision,
                                   size_t n_keys, void *arg);

/* Reads [key, range_end) page by page: the first page fixes the revision, every later one is
 * read at it (a consistent view of any size; -ESTALE if it is compacted meanwhile). The cursor
 * is the last key delivered, compared as bytes. The handle cancels the whole read; it is valid
 * until on_done starts, page callbacks included.
 *
 * Requests are bounded by bytes as well as keys: the first asks for at most 16 keys, each later
 * one for as many as the last reply's bytes per key say fit page_bytes (at most twice the last
 * limit, at most page_keys); a reply larger than max_reply_bytes is asked again for a quarter
 * of the keys, down to one. Every page must count (etcd's "count") what the one before left, so
 * the first page's count bounds the read as max_pages does. */
int etcd_range_paged(struct etcd_client *c, const struct etcd_paged_req *req,
                     etcd_page_cb on_page, etcd_paged_done_cb on_done, void *arg,
                     struct etcd_request **out);

/* --- Txn --- */
enum etcd_cmp_target { ETCD_CMP_VERSION, ETCD_CMP_CREATE, ETCD_CMP_MOD, ETCD_CMP_VALUE,
                       ETCD_CMP_LEASE };
enum etcd_cmp_result { ETCD_CMP_EQUAL, ETCD_CMP_GREATER, ETCD_CMP_LESS, ETCD_CMP_NOT_EQUAL };

struct etcd_compare {
    const char *key;
    enum etcd_cmp_target target;
    enum etcd_cmp_result result;
    int64_t number;               /* VERSION, CREATE, MOD, LEASE */
    const char *value;            /* VALUE (NUL-terminated) */
};

struct etcd_op {
    enum etcd_op_kind kind;
    const char *key;
    const char *value;            /* PUT (NUL-terminated) */
    int64_t lease;                /* PUT */
    bool prefix;                  /* RANGE, DELETE */
};

struct etcd_txn {
    const struct etcd_compare *compare;
    size_t n_compare;
    const struct etcd_op *success;
    size_t n_success;
    const struct etcd_op *failure;
    size_t n_failure;
};
int etcd_txn(struct etcd_client *c, const struct etcd_txn *txn, etcd_cb cb, void *arg,
             struct etcd_request **out);

/* --- Leases --- */
int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t id, etcd_cb cb, void *arg,
                     struct etcd_request **out);
/* One keep-alive round trip; resp->ttl == 0 means the lease is gone (status -ENOENT). */
int etcd_lease_keepalive(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                         struct etcd_request **out);
int etcd_lease_revoke(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                      struct etcd_request **out);
int etcd_lease_ttl(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg,
                   struct etcd_request **out);

/* --- Compaction (tests and operations) --- */
int etcd_compact(struct etcd_client *c, int64_t revision, bool physical, etcd_cb cb, void *arg,
                 struct etcd_request **out);

/* --- Watch --- */
enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };

struct etcd_event {
    enum etcd_event_type type;
    struct etcd_kv kv;            /* DELETE: key and mod_revision (the delete's revision) only */
};

struct etcd_watch_batch {
    int64_t revision;             /* header revision; with no events, a progress notification:
                                     every event up to it has been delivered */
    int64_t member_id;            /* header member_id: the member that sent it */
    const char *endpoint;         /* the endpoint URL the stream runs on; valid during the
                                     callback */
    const struct etcd_event *events;
    size_t n_events;
    bool created;                 /* the creation confirmation: its revision is the store's,
                                     not a promise that earlier events were delivered */
};

struct etcd_watch_req {
    const char *key;
    bool prefix;
    const char *range_end; /* explicit end (exclusive) when !prefix; NULL = the key alone (one
                              watch over a range sees its events in one revision order) */
    size_t range_end_len;  /* 0 = strlen(range_end) */
    int64_t start_revision;       /* 0 = from now */
    bool progress_notify;         /* ask etcd for periodic progress notifications */
};

/* Called for the creation confirmation (status 0, batch->n_events == 0, batch->revision set),
 * for each batch of events, and once at the end with status < 0:
 *   -ESTALE      start revision compacted; *compact_revision says the oldest available one
 *   -ECONNRESET  the stream broke (etcd restart, endpoint down); resume from the last revision
 *   -ECANCELED   etcd canceled the watch
 * After the final call the watch is stopped; the callee still frees it with etcd_watch_free()
 * (allowed inside the callback). The client does not retry: watcher/ owns resumption.
 * Inside any of these calls the owner may also free the watch's client (the watch goes with it,
 * see etcd_client_free). */
typedef void (*etcd_watch_cb)(struct etcd_watch *w, int status, const struct mm_error *err,
                              const struct etcd_watch_batch *batch, int64_t compact_revision,
                              void *arg);

int etcd_watch_start(struct etcd_client *c, const struct etcd_watch_req *req, etcd_watch_cb cb,
                     void *arg, struct etcd_watch **out);
/* Stops the stream if running (no further callbacks) and frees. NULL is a no-op. */
void etcd_watch_free(struct etcd_watch *w);

#endif
