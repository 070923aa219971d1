/* copies.h - the copies this node holds: for every record copies/<m>/<self> (records.h
 * copy_record) the local state machine Pending -> Loading -> Loaded | Failed, the pod's cache
 * within its capacity (cache.h: sizes, LRU, eviction, churn guard), loads through the runtime
 * SPI with the load timeout enforced here, unloads, and the re-assertion of its copy records in
 * etcd. Placers (placer.h, mesh.h) create Pending records; only the holder moves them on.
 *
 * The rules (docs/node.md says why):
 * - Pending seen (the mirror's copies/ events, or the first list): the model record must exist
 *   (else the copy is deleted). Its size estimate (model record size_bytes, else the runtime's
 *   default) must fit: cache_plan picks LRU victims; each victim's copy record is deleted and
 *   the model unloaded (after its requests in flight end, bounded). A load the pod refuses
 *   (-EBUSY churn guard, -ENOSPC pinned, -E2BIG never fits) deletes the Pending record, with
 *   the reason logged; the placer sees the copy vanish and chooses elsewhere.
 * - Loads run at most the runtime's max_loading_concurrency at once; the others wait as
 *   Pending, in order. Starting one: the record is put Loading (compare: the record is still
 *   the one seen), the model fetched (storage.h, with the model record's storage key, params
 *   and path; the pull's progress goes into the Loading record as bytes_pulled / bytes_total,
 *   at most every 2 s and only when it changed, never once the fetch is over), then
 *   loadModel. Loaded: the measured size
 *   (loadModel's answer, else modelSize, else the estimate) goes into the cache and the record
 *   (state Loaded, size_bytes, since). Failed: the runtime's or the fetch's error (bounded),
 *   the cache entry dropped, the storage released; the Failed record stays, attached to the
 *   lease, until the failure expires (place_failure_expired), then this node deletes it.
 * - The load timeout (runtime's load_timeout_ms, or cfg) is enforced here: past it the load is
 *   cancelled, the runtime asked to unload, and the copy marked Failed "timed out after N ms".
 * - Every write of a copy record is a txn comparing the record's mod_revision as last seen (or
 *   its absence, to re-create), and puts it with the instance's live lease. A write that
 *   loses (someone deleted or changed the record) changes nothing and the next event decides.
 * - The copy record deleted by someone else (unregisterModel, an operator): unload, release,
 *   forget. Except when the same revision also deleted instances/<self> (the lease expired, or
 *   the prefix was wiped), or the delete came from a re-list after the store went back (a
 *   restore) and the model record still exists: then the copy is still held, and re-asserted:
 *   put again (with the model record too, created if absent, from what this node knows of it,
 *   in the same txn) as soon as the instance holds a live lease.
 * - A new lease (copies_on_instance INSTANCE_REGISTERED): every local copy record is put again,
 *   attached to it. At start, copy records of this instance left from an earlier run (another
 *   lease) are deleted: the runtime was purged, nothing is held.
 * - Figures (capacity, used, loaded, loading, oldest LRU) go to instance_update on every change.
 *
 * Owns: the cache entries, the SPI requests, fetches and etcd requests it starts, its timers,
 * its mirror subscription. Threading: the loop thread only.
 * Lifetime: copies_free cancels everything (no callback after it, no unload sent); free it
 * before the mirror, the instance, the SPI client, the storage and the etcd client it uses. */
#ifndef MM_COPIES_H
#define MM_COPIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/place.h"
#include "mm/records.h"
#include "mm/spi.h"

struct copies;
struct etcd_client;
struct metrics;
struct mirror;
struct storage;

struct copies_config {
    const char *cluster;
    const char *iid;                          /* this instance's id */
    struct etcd_client *etcd;
    struct mirror *mirror;                    /* of /modelmesh/<cluster>/, started by the owner */
    struct spi_client *spi;
    struct storage *storage;
    struct instance *instance;                /* lease id, figures */
    const struct spi_runtime_status *runtime; /* capacity, default size, loading threads, timeout */
    const struct place_config *place;         /* failure expiry */
    unsigned load_timeout_ms;                 /* 0 = the runtime's (0 there: 90 s) */
    int64_t min_churn_age_ms;                 /* 0 = cache_min_churn_age_ms(load timeout) */
    unsigned unload_wait_ms;                  /* wait for requests in flight before unloading
                                                 anyway; 0 = 10,000 */
    struct metrics *metrics;                  /* NULL = none; else ModelMesh's load, unload,
                                                 loading queue delay histograms, load failures
                                                 and the pod's capacity, used bytes, LRU age
                                                 and models (README "Metrics"); it must
                                                 outlive the copies */
};

int copies_new(const struct copies_config *cfg, struct copies **out, struct mm_error *err);
/* NULL is ignored. See the lifetime rule above. */
void copies_free(struct copies *c);

/* The owner forwards its instance's events (instance.h's instance_cb). */
void copies_on_instance(struct copies *c, enum instance_event ev, int64_t lease_id);

/* One local copy, as copies_list reports it. */
struct copies_info {
    char model_id[KEYS_NAME_MAX + 1];
    enum copy_state state;
    uint64_t size_bytes;
    int64_t last_used_ms;
    uint32_t inflight;
};

/* Up to max local copies that hold cache space (Pending and Loading too, unless loaded_only),
 * most recently used first; Failed copies hold none and are not listed (copies_get has them).
 * Returns how many there are in all (may exceed max; out may be NULL with max 0). */
size_t copies_list(const struct copies *c, bool loaded_only, struct copies_info *out, size_t max);
/* The local copy of model_id (bytes), in any state but being unloaded, or -ENOENT. */
int copies_get(const struct copies *c, const char *model_id, size_t len, struct copies_info *out);

/* Requests served by a local copy (the router): begin marks one in flight and touches the LRU
 * (-ENOENT when not Loaded here); end releases it. An evicted copy is unloaded once its last
 * request ends (or unload_wait_ms passes). */
int copies_request_begin(struct copies *c, const char *model_id, size_t len, int64_t now_ms);
void copies_request_end(struct copies *c, const char *model_id, size_t len);

/* Shutdown: refuse new Pending copies (they are deleted: the placer goes elsewhere), unload
 * every local copy and delete its record; done runs once, from the loop, when all are unloaded
 * or timeout_ms passed (status 0 or -ETIMEDOUT). 0 or -EALREADY. */
int copies_unload_all(struct copies *c, unsigned timeout_ms, void (*done)(int status, void *arg),
                      void *arg);

struct copies_stats {
    uint64_t loads_started, loads_ok, loads_failed, loads_timed_out;
    uint64_t unloads, evictions, refusals, reasserts, stale_deleted;
};
void copies_get_stats(const struct copies *c, struct copies_stats *out);

#endif
