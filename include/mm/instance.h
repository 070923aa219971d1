/* instance.h - the node's instance: its id, the wait for its runtime at start, and its record
 * in etcd (instances/<iid>, records.h's instance_record) kept under a lease.
 *
 * Owns: the lease (lease.h; kept alive on the loop, re-granted after a loss), the record as it
 * should be and as it was last written, the put in flight, a watch on its own key, and the
 * timers that rate-limit publishing. docs/node.md says why each rule is what it is:
 * - the record is put with the lease attached; on every new lease (LEASE_GRANTED) it is put
 *   again at once, attached to the new one;
 * - changes are published rate-limited: a significant change (instance_update says which) no
 *   sooner than min_interval_ms after the previous put, any other change at the latest
 *   max_interval_ms after it; the shutting-down mark at once;
 * - the record is re-asserted: a watch on the key sees it deleted or overwritten (the prefix
 *   wiped, etcd restored from an old snapshot, another writer) and puts it again while the
 *   lease is live (rate-limited like a significant change); when the watch (re)starts, one
 *   read checks that the key is there;
 * - a put that fails is retried (500 ms, doubling to 5 s): the record is ours alone, so putting
 *   it twice is harmless, unlike the writes etcd.c refuses to repeat.
 *
 * Threading: the etcd client's loop thread only.
 * Lifetime: the owner may call instance_free() from inside instance_cb and the close's done
 * callback (the memory goes when the callback returns; nothing runs after). instance_free()
 * cancels every request and timer: no callback runs after it. Free the instance before its
 * etcd client. A runtime wait (instance_wait_runtime) calls back exactly once unless it is
 * cancelled first (then never); its handle is valid until its callback starts. */
#ifndef MM_INSTANCE_H
#define MM_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/records.h"
#include "mm/spi.h"

struct etcd_client;
struct instance;
struct instance_runtime_wait;

#define INSTANCE_TTL_S 20              /* lease TTL: ModelMesh's minimum */
#define INSTANCE_MIN_INTERVAL_MS 2000  /* no two puts closer than this (but the shutdown mark) */
#define INSTANCE_MAX_INTERVAL_MS 40000 /* a minor change is published within this */
#define INSTANCE_MODEL_TYPES_MAX (RECORD_LABELS_MAX - 1) /* labels: rt:<runtime> + mt:<type> */

/* --- the id --- */

/* The instance id: given (--instance-id), else pod_name (POD_NAME), else hostname_env
 * (HOSTNAME: Kubernetes sets it to the pod's name), else host (gethostname()); the first that
 * is non-NULL and non-empty, checked as a key name (keys.h: 1..253 printable ASCII bytes, no
 * '/' or space). A bad one is refused, never skipped for the next. *source (may be NULL)
 * names where it came from ("--instance-id", "POD_NAME", "HOSTNAME", "the host name"). Pure.
 * 0, -EINVAL (bad or none at all), -ENAMETOOLONG (out too small). */
int instance_id_choose(const char *given, const char *pod_name, const char *hostname_env,
                       const char *host, char *out, size_t size, const char **source,
                       struct mm_error *err);

/* --- waiting for the runtime --- */

/* status 0 with st: the runtime answered READY (runtimeStatus unloads everything it held:
 * right at start, wrong later). status -ETIMEDOUT: not READY within the timeout; err names the
 * runtime's address, the time waited and the last answer ("runtime at 127.0.0.1:8085 not ready
 * after 5000 ms: runtimeStatus at 127.0.0.1:8085: UNAVAILABLE: ..."). st is valid during the
 * call only. */
typedef void (*instance_runtime_cb)(int status, const struct mm_error *err,
                                    const struct spi_runtime_status *st, void *arg);

/* Ask runtimeStatus until READY (each call bounded by what is left, at most 5 s; retried after
 * 100 ms, doubling to 1 s), for at most timeout_ms (> 0). 0, or -EINVAL / -ENOMEM (then cb
 * never runs). */
int instance_wait_runtime(struct spi_client *spi, unsigned timeout_ms, instance_runtime_cb cb,
                          void *arg, struct instance_runtime_wait **out, struct mm_error *err);
/* Its callback never runs. NULL is ignored; not after the callback started. */
void instance_wait_cancel(struct instance_runtime_wait *w);

/* --- the registration --- */

/* What changes while the node runs; instance_update() takes a whole new set. */
struct instance_figures {
    uint64_t capacity_bytes;
    uint64_t used_bytes;
    uint32_t loaded;       /* copies held */
    uint32_t loading;      /* copies being loaded */
    int64_t lru_oldest_ms; /* last use of the least recently used copy, epoch ms; 0 = none */
};

struct instance_config {
    const char *cluster;                      /* required */
    const char *id;                           /* required: see instance_id_choose */
    const char *address;                      /* required: the internal host:port peers call */
    const char *runtime_name;                 /* required: label rt:<name> */
    const char *const *model_types;           /* labels mt:<type>; each 1..124 printable bytes */
    size_t n_model_types;                     /* at most INSTANCE_MODEL_TYPES_MAX */
    const char *zone;                         /* NULL or "" = unknown */
    const char *version;                      /* the node's version; NULL = none */
    const struct spi_runtime_status *runtime; /* required: loading threads, load timeout,
                                            default model size and version are published;
                                            capacity is the figures' */
    struct instance_figures figures;          /* the first record's */
    int64_t lease_ttl_s;                      /* 0 = INSTANCE_TTL_S; else >= 2 */
    unsigned min_interval_ms;                 /* 0 = INSTANCE_MIN_INTERVAL_MS */
    unsigned max_interval_ms;                 /* 0 = INSTANCE_MAX_INTERVAL_MS; >= min_interval_ms */
};

enum instance_event {
    INSTANCE_REGISTERED, /* the record is in etcd under a new lease (lease_id): attach every
                            other key of this instance (its copies) to that lease again */
    INSTANCE_LOST,       /* the lease was lost (etcd unreachable for a TTL, or expired): every
                            key attached to it is gone; a new one is being granted */
};

typedef void (*instance_cb)(struct instance *in, enum instance_event ev, int64_t lease_id,
                            void *arg);

/* Check cfg (what is wrong is named: "instance node-1: model type 'a b' ..."), copy what it
 * needs, and start: grant the lease, put the record, watch the key. cb (required) runs on the
 * loop. 0, -EINVAL, -ENOMEM. */
int instance_new(struct etcd_client *c, const struct instance_config *cfg, instance_cb cb,
                 void *arg, struct instance **out, struct mm_error *err);

/* New figures. Significant (published no sooner than min_interval_ms after the last put):
 * capacity, loaded or loading count changed, or used bytes moved by at least 1 % of the
 * capacity (or from or to 0). Anything else (the LRU time, small moves of used bytes):
 * published within max_interval_ms. Several updates between two puts: the last one wins. */
void instance_update(struct instance *in, const struct instance_figures *f);
/* Mark the instance shutting down (placers then pass it over); published at once. */
void instance_set_shutting_down(struct instance *in);

/* End the registration: stop re-asserting, let the record being published (the shutting-down
 * mark) reach etcd, then revoke the lease, so that the record and every key attached to the
 * lease vanish at once. done (required) runs once, from the loop: status 0, or the revoke's
 * error, or -ETIMEDOUT after timeout_ms (> 0; the lease then expires within its TTL). Call
 * instance_free() afterwards (inside done is fine). 0, or -EALREADY (closing already). */
typedef void (*instance_done_cb)(int status, const struct mm_error *err, void *arg);
int instance_close(struct instance *in, unsigned timeout_ms, instance_done_cb done, void *arg);

/* Stop everything without revoking (after instance_close, or as a crash would: the record
 * goes when the lease expires). No callback runs after it. NULL is ignored. */
void instance_free(struct instance *in);

/* The live lease id, 0 while none is held. */
int64_t instance_lease_id(const struct instance *in);
/* The record as it should be now (published or about to be). */
const struct instance_record *instance_record_of(const struct instance *in);
/* The full key: "/modelmesh/<cluster>/instances/<iid>". */
const char *instance_key(const struct instance *in);

struct instance_stats {
    uint64_t puts;          /* puts etcd confirmed */
    uint64_t put_failures;  /* puts that failed (each retried) */
    uint64_t reasserts;     /* the record found deleted or overwritten, and put again */
    uint64_t registrations; /* puts under a new lease (INSTANCE_REGISTERED) */
};
void instance_get_stats(const struct instance *in, struct instance_stats *out);

#endif
