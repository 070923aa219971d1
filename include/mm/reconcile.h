/* reconcile.h - the controller's work while it leads: every InferenceService (isvcs/<ns>/<name>)
 * made into its vmodel and model, and its status (isvc-status/<ns>/<name>) kept true, from the
 * mirror's events (docs/controller.md).
 *
 * Events, not polling: the mirror's isvcs/, runtimes/, instances/, models/, copies/, vmodels/
 * and isvc-status/ events mark the InferenceServices they concern dirty (a model id or a copy
 * names its InferenceService: `<name>__isvc-<hex>`; a vmodel is named after it; runtimes and
 * instances concern all of them); once the loop has delivered the revision, each dirty one is
 * evaluated once:
 *   - the spec is parsed (isvc.h); a valid one whose vmodel does not target its revision id gets
 *     vmodels_set (owner "isvc:<ns>", autoDeleteTargetModel, loadNow, the model info with the
 *     runtime chosen); one InferenceService deleted gets vmodels_delete and its status deleted;
 *   - a vmodel not in transition whose model has no copy at all gets mesh_ensure (once per
 *     change of the instances: a pod of its runtime may have come);
 *   - the status is computed by isvc.h's pure function from the mirror's records and written
 *     when it differs from the one stored, in a txn conditional on the InferenceService's
 *     revision as evaluated and on the election key as this controller holds it (create
 *     revision, read from the mirror), so a deposed leader's write fails.
 * At most one vmodels operation and one status write per InferenceService are in flight; what
 * changes meanwhile is evaluated again when they end. The latency of every status write (from
 * the delivery of the first event that marked it dirty to etcd's answer) is recorded.
 *
 * Threading: the loop thread only. Lifetime: reconcile_free cancels everything in flight (no
 * callback after it); free it before the vmodels, the mesh, the mirror and the etcd client,
 * never from inside a mirror callback of its own subscriptions. */
#ifndef MM_RECONCILE_H
#define MM_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct etcd_client;
struct mesh;
struct mirror;
struct reconcile;
struct vmodels;

struct reconcile_config {
    const char *cluster;      /* required */
    const char *ns;           /* only this namespace; NULL or "" = every namespace */
    const char *service_name; /* grpcUrl grpc://<service>.<ns>:8033; NULL = modelmesh-serving */
    const char *identity;     /* the election identity this controller leads with (required):
                                 status writes wait until the mirror shows it holding
                                 election/controller, and are conditional on that key */
    struct etcd_client *etcd;
    struct mirror *mirror;    /* of /modelmesh/<cluster>/, synced, owned by the caller */
    struct vmodels *vmodels;  /* owned by the caller */
    struct mesh *mesh;        /* owned by the caller: a vmodel's active model without any copy
                                 (no instance could take it when it was set: its runtime's pods
                                 came later, or all died) is placed again (mesh_ensure) when an
                                 instance comes or changes; NULL = never */
    unsigned op_timeout_ms;   /* one vmodels_set / vmodels_delete; 0 = 30,000 */
    unsigned retry_ms;        /* an InferenceService whose write or operation failed is evaluated
                                 again after this (doubling to 30 s); 0 = 500 */
    int64_t (*now_ms)(void);  /* epoch ms for the status times; NULL = the real clock */
};

/* Subscribes to the mirror and marks every InferenceService (and every vmodel owned by one
 * whose InferenceService is gone) dirty. 0, -EINVAL (a bad config, err naming it), -ENOMEM. */
int reconcile_new(const struct reconcile_config *cfg, struct reconcile **out,
                  struct mm_error *err);
/* NULL is ignored. */
void reconcile_free(struct reconcile *r);

/* Status write latency in ms, bucketed: [0,1) [1,2) [2,5) [5,10) [10,20) [20,50) [50,100)
 * [100,200) [200,500) [500,1000) [1000,inf). */
#define RECONCILE_LATENCY_BUCKETS 11
extern const unsigned reconcile_latency_bounds_ms[RECONCILE_LATENCY_BUCKETS - 1];

struct reconcile_stats {
    uint64_t events;          /* mirror events seen */
    uint64_t evaluations;     /* InferenceServices evaluated */
    uint64_t status_writes;   /* status records written (puts and deletes that succeeded) */
    uint64_t writes_lost;     /* txns whose compare failed (changed meanwhile, or not leader) */
    uint64_t write_errors;    /* txns etcd did not answer or refused */
    uint64_t sets, deletes;   /* vmodels_set / vmodels_delete calls */
    uint64_t ensures;         /* mesh_ensure calls for a model without copies */
    uint64_t op_errors;       /* of those, failed */
    uint64_t latency[RECONCILE_LATENCY_BUCKETS];
    uint64_t latency_max_ms;
    uint64_t latency_sum_ms;
};
void reconcile_get_stats(const struct reconcile *r, struct reconcile_stats *out);
/* The smallest bucket bound at or under which permille of the recorded latencies lie (an
 * upper estimate of that percentile); 0 when none is recorded; UINT64_MAX past the last. */
uint64_t reconcile_latency_percentile(const struct reconcile_stats *s, unsigned permille);

#endif
