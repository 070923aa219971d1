/* etcd.h - asynchronous etcd v3 client over its JSON gateway (/v3/...), libcurl multi on a libev
 * loop. Owns: the endpoint list and failover, TLS and auth settings, in-flight requests and watch
 * streams. Every callback runs on the loop thread; nothing here blocks the loop, except the
 * etcd_sync_* helpers, which run the loop themselves and are for CLIs and tests only.
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
struct etcd_client;
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
    int64_t member_id;
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
 *   -EINVAL        etcd refused the request          -EPROTO     unparseable reply
 * resp is NULL when status != 0. */
typedef void (*etcd_cb)(int status, const struct mm_error *err, struct etcd_response *resp,
                        void *arg);

int etcd_client_new(struct ev_loop *loop, const struct etcd_config *cfg,
                    struct etcd_client **out, struct mm_error *err);
/* Cancels every request (their callbacks run with -ECANCELED) and frees. Watches still running
 * are stopped and freed with the client (no callback): do not etcd_watch_free() them afterwards.
 * Watches that already ended (final callback delivered) still belong to their owner. */
void etcd_client_free(struct etcd_client *c);
struct ev_loop *etcd_client_loop(const struct etcd_client *c);
/* The endpoint requests currently go to ("http://127.0.0.1:2379"). */
const char *etcd_client_endpoint(const struct etcd_client *c);

void etcd_response_keep(struct etcd_response *r);
void etcd_response_free(struct etcd_response *r);

/* --- KV --- */
struct etcd_range_req {
    const char *key;              /* NUL-terminated */
    bool prefix;                  /* all keys starting with key ("" = whole keyspace) */
    const char *range_end;        /* explicit end (exclusive) when !prefix; NULL = single key */
    int64_t limit;                /* 0 = no limit */
    int64_t revision;             /* 0 = latest */
    bool keys_only;
    bool count_only;
    bool serializable;            /* served by the member without quorum */
};
int etcd_range(struct etcd_client *c, const struct etcd_range_req *req, etcd_cb cb, void *arg);

/* lease 0 = none. Not retried on other endpoints once sent (see -EIO). */
int etcd_put(struct etcd_client *c, const char *key, const char *value, size_t value_len,
             int64_t lease, etcd_cb cb, void *arg);
int etcd_delete(struct etcd_client *c, const char *key, bool prefix, etcd_cb cb, void *arg);

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
int etcd_txn(struct etcd_client *c, const struct etcd_txn *txn, etcd_cb cb, void *arg);

/* --- Leases --- */
int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t id, etcd_cb cb, void *arg);
/* One keep-alive round trip; resp->ttl == 0 means the lease is gone (status -ENOENT). */
int etcd_lease_keepalive(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg);
int etcd_lease_revoke(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg);
int etcd_lease_ttl(struct etcd_client *c, int64_t id, etcd_cb cb, void *arg);

/* --- Compaction (tests and operations) --- */
int etcd_compact(struct etcd_client *c, int64_t revision, bool physical, etcd_cb cb, void *arg);

/* --- Watch --- */
enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };

struct etcd_event {
    enum etcd_event_type type;
    struct etcd_kv kv;            /* DELETE: key and mod_revision (the delete's revision) only */
};

struct etcd_watch_batch {
    int64_t revision;             /* header revision; with no events, a progress notification:
                                     every event up to it has been delivered */
    const struct etcd_event *events;
    size_t n_events;
    bool created;                 /* the creation confirmation: its revision is the store's,
                                     not a promise that earlier events were delivered */
    int64_t member_id;            /* the member that serves the watch (header member_id) */
};

struct etcd_watch_req {
    const char *key;
    bool prefix;
    int64_t start_revision;       /* 0 = from now */
    bool progress_notify;         /* ask etcd for periodic progress notifications */
};

/* Called for the creation confirmation (status 0, batch->n_events == 0, batch->revision set),
 * for each batch of events, and once at the end with status < 0:
 *   -ESTALE      start revision compacted; *compact_revision says the oldest available one
 *   -ECONNRESET  the stream broke (etcd restart, endpoint down); resume from the last revision
 *   -ECANCELED   etcd canceled the watch
 * After the final call the watch is stopped; the callee still frees it with etcd_watch_free()
 * (allowed inside the callback). The client does not retry: watcher/ owns resumption. */
typedef void (*etcd_watch_cb)(struct etcd_watch *w, int status, const struct mm_error *err,
                              const struct etcd_watch_batch *batch, int64_t compact_revision,
                              void *arg);

int etcd_watch_start(struct etcd_client *c, const struct etcd_watch_req *req, etcd_watch_cb cb,
                     void *arg, struct etcd_watch **out);
/* Stops the stream if running (no further callbacks) and frees. NULL is a no-op. */
void etcd_watch_free(struct etcd_watch *w);

/* --- Synchronous helpers: run the loop until the reply. CLIs and tests only. --- */
int etcd_sync_range(struct etcd_client *c, const struct etcd_range_req *req,
                    struct etcd_response **out, struct mm_error *err);
int etcd_sync_put(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                  int64_t *revision, struct mm_error *err);
int etcd_sync_delete(struct etcd_client *c, const char *key, bool prefix, int64_t *deleted,
                     struct mm_error *err);
int etcd_sync_txn(struct etcd_client *c, const struct etcd_txn *txn, struct etcd_response **out,
                  struct mm_error *err);
int etcd_sync_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id,
                          struct mm_error *err);
int etcd_sync_lease_revoke(struct etcd_client *c, int64_t id, struct mm_error *err);
int etcd_sync_compact(struct etcd_client *c, int64_t revision, struct mm_error *err);
/* Run the loop until *done is true or timeout_ms passes (-ETIMEDOUT). */
int etcd_sync_wait(struct etcd_client *c, const bool *done, unsigned timeout_ms);

#endif
