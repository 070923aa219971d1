/* etcd_sync.h - synchronous etcd calls for CLIs and tests: each starts the asynchronous request
 * of etcd.h and runs the client's loop until its reply. Never in a server: they run the loop
 * inside the caller, so any other callback of that loop may run meanwhile.
 *
 * Each is bounded (request deadline x endpoints + 1 s, doubled with auth); on giving up the
 * request is cancelled (etcd_request_cancel) and -ETIMEDOUT returned. Errors are etcd.h's. */
#ifndef MM_ETCD_SYNC_H
#define MM_ETCD_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/etcd.h"

/* *out is the caller's: free it with etcd_response_free(). */
int etcd_sync_range(struct etcd_client *c, const struct etcd_range_req *req,
                    struct etcd_response **out, struct mm_error *err);
/* value is NUL-terminated. */
int etcd_sync_put(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                  int64_t *revision, struct mm_error *err);
int etcd_sync_delete(struct etcd_client *c, const char *key, bool prefix, int64_t *deleted,
                     struct mm_error *err);
int etcd_sync_txn(struct etcd_client *c, const struct etcd_txn *txn, struct etcd_response **out,
                  struct mm_error *err);
int etcd_sync_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id,
                          struct mm_error *err);
int etcd_sync_lease_revoke(struct etcd_client *c, int64_t id, struct mm_error *err);
/* LeaseTimeToLive: *ttl (may be NULL) = the seconds it has left, *granted_ttl (may be NULL) =
 * the TTL it was granted with. -ENOENT when the lease is gone (expired or revoked). */
int etcd_sync_lease_ttl(struct etcd_client *c, int64_t id, int64_t *ttl, int64_t *granted_ttl,
                        struct mm_error *err);
int etcd_sync_compact(struct etcd_client *c, int64_t revision, struct mm_error *err);
/* etcd_range_paged to its end: on_page as there; *revision (may be NULL) = the revision every
 * page was read at. Each page is bounded as one request is. */
int etcd_sync_range_paged(struct etcd_client *c, const struct etcd_paged_req *req,
                          etcd_page_cb on_page, void *arg, int64_t *revision,
                          struct mm_error *err);
/* Run the loop until *done is true or timeout_ms passes (-ETIMEDOUT). */
int etcd_sync_wait(struct etcd_client *c, const bool *done, unsigned timeout_ms);

#endif
