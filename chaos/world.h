/* world.h - the cluster a chaos scenario runs against, brought up whole: etcd (one member, or
 * three), s3rver holding the models behind a fault proxy (the nodes' endpoint_url, so that
 * storage can be taken down), pods of mm-runtime + mm-node (one of them, optionally, in a
 * network namespace of its own), two mm-controllers, an mm-gateway (the Service on 8033), the
 * ServingRuntimes of deploy/runtimes, and the models as InferenceServices.
 *
 * The models: n_multi + n_single InferenceServices "cm-<k>" in namespace "chaos", each an
 * XGBoost model of its own in the bucket (the breast-cancer model with its base_score changed,
 * so that every model answers the sample row differently). Their expected answers are asked
 * of a reference mm-runtime outside the mesh, once, before anything is applied. The nodes
 * scale copies on rate (--rate-check-interval 1s, --scale-up-rpm world_config.scale_up_rpm):
 * traffic at multi_rate per multi model keeps 2+ copies of each, single_rate keeps the others
 * at one copy.
 *
 * Every registration the world makes (isvcs/, storage-config/, runtimes/) is recorded with
 * verify_ack once etcd has acknowledged it. The verify may be made before world_start with
 * verify_new(&w->cl, ...): it keeps the cluster's address, which world_start fills in.
 *
 * The nodes also get --replace-delay 1s --failure-expiry 10s --max-load-failures 3 (a load
 * that failed while storage was down is placed again within seconds of its return). Each
 * runtime's capacity by default: room for every copy (multi models counted at 3, the most
 * their rate gives them) on n_pods - 1 pods with a quarter to spare, and at least 3 MB (the
 * mesh places a model of unknown size at 1 MB until a copy has loaded).
 *
 * Single-threaded: everything runs on the cluster's loop (w->cl.loop). */
#ifndef MM_CHAOS_WORLD_H
#define MM_CHAOS_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cluster.h"
#include "faultproxy.h"
#include "netns.h"
#include "s3rver.h"

#define WORLD_MAX_MODELS 128
#define WORLD_FEATURES 30
#define WORLD_NAMESPACE "chaos"

struct verify;
struct ev_loop;
struct rpc_context;

struct world_config {
    /* programs (required, but mm_gateway / mm_controller) */
    const char *mm_node, *mm_runtime, *mm_gateway, *mm_controller;
    const char *make_breast_cancer; /* examples/xgboost/make-breast-cancer */
    const char *servers_dir;        /* tests/servers (s3rver) */
    const char *runtimes_dir;       /* deploy/runtimes */
    size_t n_pods;                  /* 2..CLUSTER_MAX_PODS; default (0) 4 */
    size_t n_multi, n_single;       /* models with 2+ copies / 1 copy; default (0, 0) 30, 30 */
    size_t etcd_members;            /* 1 or 3; default (0) 1 */
    int netns_pod;                  /* a pod placed in a network namespace (scenario 5), or -1
                                       (the default: set it explicitly; 0 is pod 0) */
    size_t n_controllers;           /* 0..CLUSTER_MAX_CONTROLLERS; default 2 (set -1 for none
                                       is not offered: scenarios need them) */
    const char *lease_ttl;          /* nodes' and controllers' lease TTL; NULL = "3s" */
    unsigned scale_up_rpm;          /* 0 = 60 */
    uint64_t capacity_bytes;        /* each runtime's; 0 = room for every model's copies on
                                       n_pods - 1 pods */
    struct verify *verify;          /* receives every acknowledged registration (may be NULL) */
};

struct world_model {
    char name[64];          /* the InferenceService, and the model_name of requests */
    char path[128];         /* its object in the bucket */
    bool multi;             /* kept at 2+ copies by traffic */
    float expected;         /* predict[0] for the sample row, from the reference runtime */
    int generation;         /* the isvc's metadata.generation last applied */
};

struct world {
    struct world_config cfg;
    struct cluster cl;              /* etcd, pods, controllers, gateway (cl.gateway_port) */
    struct harness_s3rver s3;
    struct faultproxy storage;      /* in front of s3; the storage-config entry names it */
    struct harness_netns ns;        /* when cfg.netns_pod >= 0 */
    char bucket[64];
    char storage_key[64];           /* storage-config/<key> */
    struct world_model models[WORLD_MAX_MODELS];
    size_t n_models;                /* n_multi first, then n_single */
    float row[WORLD_FEATURES];      /* the sample row every request sends */
    char dir[256];                  /* the world's temp dir (model files, the reference) */
    /* the reference runtime (outside the mesh): asked on a loop and rpc context of its own
     * before the cluster starts (ref_loop), on the cluster's afterwards (ref_loop NULL) */
    pid_t ref_pid;
    int ref_port;
    char ref_log[320];
    struct ev_loop *ref_loop;
    struct rpc_context *ref_rpc;
    unsigned ref_loads;
    uint64_t model_size;            /* the largest size the reference runtime reported */
    uint64_t capacity;              /* each runtime's capacity_bytes, as started */
    bool cluster_up;
    char node_args[256];
};

/* Bring everything up and apply every model's InferenceService; returns once every one is
 * Ready (isvc-status/) with a Loaded copy, bounded by timeout_ms. 0; -EPERM when a network
 * namespace was asked for and cannot be made (not root: the caller skips, saying so); other
 * -errno with the reason and the logs printed (what was started is stopped). */
int world_start(struct world *w, const struct world_config *cfg, long timeout_ms);

/* Apply model k's InferenceService again at a new storage path: another object with the same
 * bytes (a model is immutable at its path; an update names a new one), so the answers stay the
 * same; generation + 1. The put is recorded with verify_ack. 0 or -errno. */
int world_update_model(struct world *w, size_t k);

/* Wait up to timeout_ms until every model's InferenceService is Ready at its latest generation,
 * UpToDate, with a Loaded copy of its active model. 0, -ETIMEDOUT (those not ready named), or
 * -errno. */
int world_wait_ready(struct world *w, long timeout_ms);

/* One ModelInfer for model k through the gateway (w->cl.gateway), waited for: 0 when OK with
 * its expected answer; -ECOMM (another status), -EBADMSG (a wrong answer), -ETIMEDOUT (no
 * answer), each with why (why_size bytes) saying what came. */
int world_infer(struct world *w, size_t k, long timeout_ms, char *why, size_t why_size);

/* What the reference runtime answers for the sample row with the model at path in the bucket.
 * 0 or -errno. */
int world_model_expected(struct world *w, const char *path, float *out);

/* Every log of the world's processes, for verify_processes: the cluster's (runtimes, nodes,
 * controllers, gateway, every etcd member), the reference runtime's and s3rver's; up to max,
 * how many were written. */
size_t world_logs(const struct world *w, const char **paths, size_t max);

/* Stop every process (gracefully; what must exit 0 is checked by verify_processes before),
 * remove the temp dirs and the namespace. */
void world_free(struct world *w);

#endif
