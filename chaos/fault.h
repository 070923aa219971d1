/* fault.h - the faults chaos injects into a world, each one step a scenario takes (the
 * scenario decides when and for how long). Each acts on processes by their own pids, or on the
 * namespace and the storage proxy the world made; each returns 0 or -errno with the reason
 * printed, and waits only as its comment says (bounded). */
#ifndef MM_CHAOS_FAULT_H
#define MM_CHAOS_FAULT_H

#include <stdbool.h>
#include <stddef.h>

struct world;

/* A pod dies: SIGKILL to its node and its runtime (both reaped). */
int fault_pod_kill(struct world *w, size_t pod);
/* The pod comes back, as its StatefulSet would bring it: runtime, then node, same instance id
 * and ports; waits for the node's LISTENING (bounded by CLUSTER_START_MS). */
int fault_pod_start(struct world *w, size_t pod);
/* SIGTERM to the pod's node: it moves its models away, unloads and deregisters; waits up to
 * timeout_ms for it to exit, which must be 0 (else -EIO, its status printed); then the runtime
 * is stopped and both are started again (fault_pod_start). A rolling restart's one step. */
int fault_pod_roll(struct world *w, size_t pod, long timeout_ms);
/* The node hangs (SIGSTOP, every thread stopped) / resumes (SIGCONT). */
int fault_node_freeze(struct world *w, size_t pod);
int fault_node_thaw(struct world *w, size_t pod);

/* The etcd member that leads now (asked of the members), or -1 when none answers with a
 * leader. */
int fault_etcd_leader(struct world *w);
/* SIGKILL etcd member k / start it again on its ports and data dir (waits for /health only
 * when the others can give it a quorum: `wait_healthy`). */
int fault_etcd_kill(struct world *w, size_t k);
int fault_etcd_start(struct world *w, size_t k, bool wait_healthy);

/* The pod in the network namespace loses etcd (packets between it and etcd dropped silently,
 * both ways) / gets it back. -ENODEV when the world has no such pod. */
int fault_partition(struct world *w, bool on);

/* Storage goes down (every request to the storage proxy is reset, as a server that is gone)
 * / comes back. */
int fault_storage(struct world *w, bool down);

/* The controller that leads (read from etcd) is killed (SIGKILL: its lease expires after the
 * TTL); *which gets its index. -ENOENT when none leads. fault_controller_start brings one back
 * (cluster_controller_start). */
int fault_controller_leader_kill(struct world *w, size_t *which);
int fault_controller_start(struct world *w, size_t k);

#endif
