/* verify.h - the chaos invariants, read from the registry (etcd) and from the processes:
 *   - registrations: every key whose put etcd acknowledged (verify_ack) exists afterwards with
 *     the last acknowledged value (deletes acknowledged: absent);
 *   - capacity: no instance record has used_bytes > capacity_bytes, and no runtime holds more
 *     than its capacity (the sizes the runtimes answer, cluster_runtime_sizes, summed);
 *   - leases: every copy record has a lease that is alive in etcd and is its instance's lease
 *     (the instance record exists, with that lease);
 *   - convergence: every InferenceService of the namespace is Ready with its latest generation
 *     observed, no transition in progress, and its model has a Loaded copy; waited for up to a
 *     bound, the time it took measured;
 *   - processes: none exited unless a fault or the scenario stopped it (their exit statuses),
 *     and no log holds a sanitizer report ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
 *     "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer").
 *
 * Each check adds one line per breach to the verify (at most VERIFY_KEEP kept, all counted),
 * naming the key, the instance, the process or the log line. A scenario fails when breaches > 0.
 * A check that cannot read what it needs (etcd down, a runtime that does not answer modelSize)
 * counts that as a breach too, its line saying what could not be read: nothing unchecked
 * passes. An exited process and a log line are each reported once per verify (a log is read on
 * from where the last call stopped), so calls after every scenario count each fault once.
 * Leases: a dead lease cannot be attached to a key (etcd refuses the put, and an expiring lease
 * takes its keys), so a copy outlives its instance only by a lease not the instance's, or none:
 * both are breaches; a lease found gone while its key stays would be one as well. Instance
 * records are checked too: attached to a lease (none: it outlives its node), the one they name.
 *
 * Single-threaded: the cluster's loop and etcd client (reads with etcd_sync_*). */
#ifndef MM_CHAOS_VERIFY_H
#define MM_CHAOS_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VERIFY_KEEP 64

struct cluster;
struct verify;

/* 0 or -ENOMEM. */
int verify_new(struct cluster *cl, struct verify **out);
void verify_free(struct verify *v);

/* etcd acknowledged a put of key (full key) = value[0, len) (len 0 with value NULL: an
 * acknowledged delete). The last one per key is kept. 0 or -ENOMEM. */
int verify_ack(struct verify *v, const char *key, const char *value, size_t len);

/* The checks: each returns how many breaches it found (added to the verify), or -errno when it
 * could not read what it needs (etcd down: said in a line too). */
int verify_registrations(struct verify *v);
int verify_capacity(struct verify *v);
int verify_leases(struct verify *v);
/* Wait up to timeout_ms for every InferenceService of ns (isvcs/<ns>/) to converge; 0 when they
 * did (*took_ms = how long it took), else the number not converged (each named, with its
 * status) and *took_ms = -1. */
int verify_converged(struct verify *v, const char *ns, long timeout_ms, int64_t *took_ms);
/* Every process of the cluster (etcd members, runtimes, nodes, controllers, gateway) that
 * should be running is (a crash is a breach naming it and its wait status), and every log
 * among paths[0, n) plus the cluster's own is free of sanitizer reports. */
int verify_processes(struct verify *v, const char *const *paths, size_t n);

/* Breaches so far, and the lines kept (valid until verify_free). */
size_t verify_breaches(const struct verify *v);
size_t verify_lines(const struct verify *v, const char *const **lines);
/* How many keys were acknowledged, and how many checks each kind made (for the report): each
 * count is what the last call of its check looked at (checked_keys: verify_registrations,
 * instances: verify_capacity, copies: verify_leases, isvcs: verify_converged, logs:
 * verify_processes). */
struct verify_counts {
    size_t acked_keys, checked_keys, instances, copies, isvcs, logs;
};
void verify_counts(const struct verify *v, struct verify_counts *out);

#endif
