/* cluster.h - a local mesh for tests and benchmarks: one real etcd and N pods, each an
 * mm-runtime and an mm-node beside it (their own cache dir, which is one of the runtime's
 * --models-dir), sharing one models root (the pvc the nodes' storage reads and links to from
 * the cache dir: the runtime's other --models-dir). Every process is
 * started by the harness (it dies with the test), stopped or killed by its own pid, and logs to
 * its own file in the cluster's temp dir (printed by cluster_dump_logs when a test fails).
 *
 * The test side holds one loop with an etcd client (to read and write the registry) and an rpc
 * context: a channel to each node's model API (mmesh.ModelMesh, see mmclient.h) and an SPI
 * client to each runtime (modelSize answers: what a runtime really holds). Calls that wait run
 * that loop, so a mirror the test puts on the etcd client keeps receiving events meanwhile.
 *
 * Everything here waits bounded; nothing sleeps a fixed time to let a process get ready. */
#ifndef MM_TEST_CLUSTER_H
#define MM_TEST_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "mm/keys.h"
#include "mm/records.h"

#define CLUSTER_MAX_PODS 8
#define CLUSTER_MAX_CONTROLLERS 4
#define CLUSTER_START_MS 20000 /* each process's bound to announce LISTENING */
#define CLUSTER_MAX_ETCD 5      /* members of the cluster's etcd (etcd_members) */

struct ev_loop;
struct etcd_client;
struct rpc_context;
struct rpc_channel;
struct spi_client;
struct harness_netns;

/* A pod whose runtime is not the cluster's default (mixed clusters: xgboost and sklearn pods). */
struct cluster_pod_runtime {
    const char *program;      /* NULL = cfg.mm_runtime, run by cfg.runtime_interpreter */
    const char *interpreter;  /* runs program ("/usr/bin/python3" for runtimes/sklearn/
                                 server.py); NULL = program runs itself */
    const char *runtime_name; /* mm-node --runtime-name (instance label rt:NAME); NULL = the
                                 node's default, mm-runtime */
    const char *model_types;  /* mm-node --model-types; NULL = cfg.model_types */
    struct harness_netns *netns; /* NULL = on the host's loopback, as every pod by default.
                                  * Else (made by the caller, alive until cluster_free) the
                                  * pod's runtime and node run inside it (harness_netns_argv),
                                  * every port of theirs on its pod_addr (the node's
                                  * --internal-address is pod_addr:internal_port, its probes,
                                  * REST and metrics too); the node's etcd endpoints are the
                                  * members' ports at etcd_addr, which must then be
                                  * cfg.etcd_listen_host; the test's api and spi channels reach
                                  * pod_addr. The pods on the host then serve peers on the
                                  * (first such) namespace's host_addr instead of 127.0.0.1, so
                                  * that the pod in it can forward to them. */
};

struct cluster_config {
    const char *mm_node;            /* paths of the programs (required) */
    const char *mm_runtime;
    const char *runtime_interpreter; /* NULL = run mm_runtime itself; else the program that runs
                                        it ("/usr/bin/python3" for runtimes/sklearn/server.py,
                                        which takes the same flags) */
    const char *mm_gateway;         /* for cluster_gateway_start (may be NULL) */
    const char *gateway_args;       /* more mm-gateway flags, space-separated (NULL = none) */
    const char *name;               /* the cluster in etcd; NULL = "c" */
    size_t n_pods;                  /* 1..CLUSTER_MAX_PODS */
    uint64_t capacity_bytes;        /* each runtime's --capacity-bytes; 0 = its default */
    uint64_t default_model_size;    /* each runtime's --default-model-size; 0 = its default */
    unsigned runtime_load_timeout_ms; /* --load-timeout-ms of the runtimes; 0 = theirs */
    unsigned max_loading_concurrency; /* of the runtimes; 0 = theirs */
    const char *lease_ttl;          /* mm-node --lease-ttl; NULL = "2s" */
    const char *node_args;          /* more mm-node flags, space-separated (NULL = none); the
                                       cluster passes --etcd-endpoints, --cluster,
                                       --instance-id, --runtime, --model-types,
                                       --internal-listen, --listen, --models-root,
                                       --cache-dir, --lease-ttl, --publish-min-interval;
                                       the environment's MM_TEST_NODE_ARGS are added last
                                       ("--log-level debug" for one run) */
    const char *model_types;        /* --model-types; NULL = "xgboost" */
    bool start_nodes_later;         /* cluster_start starts etcd and the runtimes only */
    struct cluster_pod_runtime pod_runtimes[CLUSTER_MAX_PODS]; /* zeroed = the default */
    const char *runtimes_dir;       /* cluster_start applies every *.yaml here as
                                       runtimes/<metadata.name> (ServingRuntime JSON) before
                                       starting anything (deploy/runtimes); NULL = none */
    const char *mm_controller;      /* for cluster_controller_start (may be NULL) */
    const char *controller_args;    /* more mm-controller flags, space-separated (NULL = none);
                                       the cluster passes --etcd-endpoints, --cluster,
                                       --identity ctl<k>, --lease-ttl (controller_lease_ttl),
                                       --replace-delay 500ms, --log-level; the environment's
                                       MM_TEST_CONTROLLER_ARGS are added last */
    const char *controller_lease_ttl; /* NULL = "2s" */
    size_t etcd_members;            /* 0 or 1: one etcd (c->etcd), as always; 2..CLUSTER_MAX_ETCD:
                                       a cluster of that many (harness_etcd_cluster_start, in
                                       c->etcd_cluster; c->etcd unused). The nodes, gateway,
                                       controllers, the test's etcd client and cluster_etcdctl
                                       get every member's URL (c->etcd_endpoints) */
    const char *etcd_listen_host;   /* an extra IPv4 address of this host every member also
                                       serves clients on, same port (a network namespace's
                                       etcd_addr, for a pod in it); NULL = loopback only */
};

struct cluster_controller {
    pid_t pid;                      /* 0 when not running */
    char identity[16];              /* "ctl0", "ctl1", ... */
    int probe_port;                 /* its --probe-listen port (PROBES), 0 before it runs */
    int metrics_port;               /* its --metrics-listen port (METRICS), 0 before it runs */
    char log[320];
    long long started_ms;           /* harness_now_ms() when it announced its role */
};

struct cluster_pod {
    char iid[32];                   /* "n0", "n1", ... */
    pid_t runtime_pid, node_pid;    /* 0 when not running */
    int runtime_port, node_port;    /* node_port: its model API and inference (--listen) */
    int internal_port;              /* --internal-listen: inference for peers (kept over
                                       restarts) */
    int node_probe_port;            /* the node's --probe-listen port (its PROBES line) */
    int node_rest_port;             /* the node's --rest-listen port (its REST line) */
    int node_metrics_port;          /* the node's --metrics-listen port (its METRICS line) */
    char cache_dir[320];
    char runtime_log[320], node_log[320];
    struct rpc_channel *api;        /* the node's model API; NULL while the node is down */
    struct spi_client *spi;         /* the runtime; NULL while it is down */
    long long node_started_ms;      /* harness_now_ms() when the node announced LISTENING */
    long long node_start_took_ms;   /* from spawn to LISTENING */
};

struct cluster {
    struct cluster_config cfg;
    char name[64];
    char node_args[1024];
    struct harness_etcd etcd;       /* the one member (cfg.etcd_members 0 or 1) */
    struct harness_etcd etcd_cluster[CLUSTER_MAX_ETCD]; /* the members (etcd_members > 1) */
    char etcd_endpoints[CLUSTER_MAX_ETCD * 48]; /* every member's client URL, comma-separated */
    char internal_host[16];         /* where the host's pods serve peers: "127.0.0.1", or a
                                       namespace's host_addr (see cluster_pod_runtime.netns) */
    char dir[256];                  /* the temp dir: models root, caches, logs */
    char models_root[320];
    struct ev_loop *loop;
    struct etcd_client *etcd_client;
    struct rpc_context *rpc;
    struct cluster_pod pods[CLUSTER_MAX_PODS];
    pid_t gateway_pid;              /* cluster_gateway_start: 0 when not running */
    int gateway_port;
    int gateway_probe_port;         /* the gateway's --probe-listen port (PROBES) */
    int gateway_rest_port;          /* the gateway's --rest-listen port (REST) */
    int gateway_metrics_port;       /* the gateway's --metrics-listen port (METRICS) */
    struct rpc_channel *gateway;    /* to the gateway's --listen */
    char gateway_log[320];
    struct cluster_controller controllers[CLUSTER_MAX_CONTROLLERS];
};

/* Whether this mm-node serves the model API: its --help names --listen. A test of the mesh
 * exits 77 (skipped) when it does not, saying so. */
bool cluster_node_has_listen(const char *mm_node);

/* etcd, the temp dir (models root, one cache dir per pod), the loop with its clients, every
 * runtime, then every node (unless start_nodes_later), each waited for. 0 or -errno (what was
 * started is stopped; the logs are printed). */
int cluster_start(struct cluster *c, const struct cluster_config *cfg);
/* Start an mm-gateway (cfg.mm_gateway) on the cluster's etcd, on a free port; waits for
 * LISTENING and opens c->gateway. 0 or -errno. */
int cluster_gateway_start(struct cluster *c);
/* Apply every *.yaml of dir (ServingRuntime / ClusterServingRuntime manifests, one or more
 * documents each) as runtimes/<metadata.name>, the JSON of the document. The number applied,
 * or -errno (printed). */
int cluster_apply_runtimes(struct cluster *c, const char *dir);

/* Start mm-controller k (< CLUSTER_MAX_CONTROLLERS, identity "ctl<k>") on the cluster's etcd and
 * wait until it prints LEADING or FOLLOWING. 0 or -errno (its log printed). */
int cluster_controller_start(struct cluster *c, size_t k);
/* SIGKILL controller k (a crash: its lease expires after the TTL), reaped. */
void cluster_controller_kill(struct cluster *c, size_t k);
/* SIGTERM controller k (it resigns: a follower takes over at once) and wait up to ms; its wait
 * status, or -1. */
int cluster_controller_stop(struct cluster *c, size_t k, long ms);
/* The index of the controller election/controller names now (read from etcd), or -1 (none,
 * or one the harness did not start), or -errno. */
int cluster_controller_leader(struct cluster *c);

/* cluster_start, then the gateway (with_gateway) and controller 0 (with_controller). 0, or
 * the failing step's -errno after the logs are printed and the cluster freed. */
int cluster_start_with(struct cluster *c, const struct cluster_config *cfg, bool with_gateway,
                       bool with_controller);

/* Stop every process (SIGTERM, then SIGKILL after a short grace), free the clients, remove the
 * temp dir (kept, and named, when the environment has MM_TEST_KEEP=1) and etcd's. */
void cluster_free(struct cluster *c);

/* Start pod i's runtime / node (waits for LISTENING; the node's api channel is opened). */
int cluster_runtime_start(struct cluster *c, size_t i);
int cluster_node_start(struct cluster *c, size_t i);
/* Send sig to pod i's node process (its pid only). */
int cluster_node_signal(struct cluster *c, size_t i, int sig);
/* Wait up to ms for pod i's node to exit; its wait status, or -1 if still running. The api
 * channel is closed once it has exited. */
int cluster_node_wait(struct cluster *c, size_t i, long ms);
/* A pod dies: SIGKILL to its node and its runtime, both reaped. */
void cluster_pod_kill(struct cluster *c, size_t i);
/* The pod comes back after cluster_pod_kill (or a node stopped), as its StatefulSet would
 * bring it: its runtime (unless running), then its node, same instance id and ports (the
 * runtime's, the node's --listen and internal ones; a port taken meanwhile is replaced by a
 * free one, saying so); waits for each one's LISTENING. 0 or -errno. */
int cluster_pod_start(struct cluster *c, size_t i);

/* The etcd members: how many (1 for the single etcd), and member k (< that; NULL beyond):
 * stop, kill and restart it with harness_etcd_*. */
size_t cluster_etcd_members(const struct cluster *c);
struct harness_etcd *cluster_etcd_member(struct cluster *c, size_t k);
/* The index of the member that leads now (asked of each running member with etcdctl endpoint
 * status), or -1 when none answers naming a leader that is a running member. */
int cluster_etcd_leader(struct cluster *c);
/* The index of the pod whose instance id is iid[0, len), or -1. */
int cluster_pod_of(const struct cluster *c, const char *iid, size_t len);

/* mkdir -p path (mode 0755; existing directories are fine). 0 or -errno. */
int cluster_make_dirs(const char *path);
/* Write a file under the models root (directories made as needed). 0 or -errno. */
int cluster_put_file(struct cluster *c, const char *rel, const void *data, size_t len);
/* Copy a file into the models root at rel. 0 or -errno. */
int cluster_copy_file(struct cluster *c, const char *src, const char *rel);

/* A copy record as the registry holds it. */
struct cluster_copy {
    char model[KEYS_NAME_MAX + 1];
    char iid[KEYS_NAME_MAX + 1];
    struct copy_record rec;
    int64_t lease;
    int64_t mod_revision;
};
/* The copy records of model (NULL: of every model), up to max; how many there are in all, or
 * -errno (printed). A record that does not decode is an error. */
int cluster_copies(struct cluster *c, const char *model, struct cluster_copy *out, size_t max);
/* Instance iid's record: 1 (and *rec, *lease if not NULL), 0 absent, -errno. */
int cluster_instance(struct cluster *c, const char *iid, struct instance_record *rec,
                     int64_t *lease);
/* Model id's record: 1, 0 absent, -errno. */
int cluster_model(struct cluster *c, const char *id, struct model_record *rec);
/* Keys under the cluster's prefix (rel "" = all, "models/", ...): count or -errno. */
int cluster_count(struct cluster *c, const char *rel);

/* Ask pod i's runtime for modelSize of each of n models (in parallel, bounded): sizes[j] is its
 * answer, 0 when the runtime does not hold it (NOT_FOUND). The number held, or -errno (another
 * error or no answer, printed). */
int cluster_runtime_sizes(struct cluster *c, size_t i, const char *const *models, size_t n,
                          uint64_t *sizes);

/* Run etcdctl against the cluster's etcd (every member) with args; its exit code (output in out). */
int cluster_etcdctl(struct cluster *c, const char *args, char *out, size_t size);

/* Run the loop for ms (mirrors and timers on it advance). */
void cluster_run(struct cluster *c, long long ms);

/* The tails of every node's log (and the runtimes' when with_runtimes), for a failed test. */
void cluster_dump_logs(const struct cluster *c, bool with_runtimes);

/* Wall-clock milliseconds (lastUsedTime and record times are epoch ms). */
int64_t cluster_epoch_ms(void);

#endif
