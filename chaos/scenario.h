/* scenario.h - the chaos scenarios, each run against one world that is up and converged: traffic
 * phases before / fault / after around the fault, then the invariants (verify.h) and the
 * traffic's own breaches (wrong or hung calls, failures the scenario does not allow). What was
 * done, the figures and every breach are kept in a scenario_result for the report (report.h).
 *
 *   1 kill -9 a random pod every N s for a while (it comes back, as a StatefulSet brings it)
 *   2 SIGSTOP a node for longer than its lease TTL, then SIGCONT
 *   3 kill the etcd leader (and start it again); then 2 of 3 members down (no quorum), back
 *   4 etcd fully down: loaded models keep serving; a pod killed meanwhile: its models' new loads
 *     wait for etcd and then succeed
 *   5 a pod partitioned from etcd (network namespace; skipped without one, saying why)
 *   6 storage down while models are updated: their loads fail naming storage, then succeed
 *   7 a rolling restart (SIGTERM) of every pod, one at a time
 *   8 the controller leader killed during InferenceService updates: they complete under the
 *     new leader
 *
 * Breaches (any of them fails the scenario): a wrong answer or a hung call in any phase; a call
 * failing with a code other than UNAVAILABLE or DEADLINE_EXCEEDED; any failure of a model kept at
 * 2+ copies in scenarios 1, 2, 7 once its 2 Loaded copies were seen; any failure during scenario
 * 4's etcd outage before the pod is killed (every model was Loaded); the world not converged
 * before the scenario or within the bound after the fault; what verify_* finds.
 *
 * Single-threaded: runs the world's loop while it waits. */
#ifndef MM_CHAOS_SCENARIO_H
#define MM_CHAOS_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "traffic.h"
#include "verify.h"

#define SCENARIO_COUNT 8
#define SCENARIO_MAX_STEPS 48
#define SCENARIO_MAX_LINES 96
#define SCENARIO_LINE 256

struct world;

struct scenario_options {
    bool short_run;                 /* the CI version: shorter phases and faults */
    uint32_t seed;                  /* pods picked, the traffic's phase offsets */
    long kill_every_s;              /* scenario 1's interval; 0 = 20 (short: 12) */
    long duration_s;                /* the fault's length where it has one (1: all kills; 2, 3's no
                                       quorum, 4, 5, 6); 0 = the scenario's default */
    long converge_ms;               /* the convergence bound after a fault; 0 = 60000 */
    double multi_rate, single_rate; /* calls per second per model; 0 = 3 and 0.5 */
};

struct scenario_result {
    int id;
    const char *title;
    bool skipped; /* not run, and why (not a failure) */
    char why[SCENARIO_LINE];
    char steps[SCENARIO_MAX_STEPS][SCENARIO_LINE]; /* what was done, with the time */
    size_t n_steps;
    struct traffic_phase_report phases[TRAFFIC_MAX_PHASES];
    size_t n_phases;
    int64_t fault_start_ms, fault_end_ms; /* on the traffic's clock */
    int64_t converged_ms; /* verify_converged after the fault; -1 not within bound */
    int64_t served_ms;    /* fault end -> every model served right again; -1 never */
    int64_t recovery_ms;  /* the larger of the two; -1 when either did not happen */
    long served_floor_ms; /* the resolution of served_ms: the slowest model's interval */
    int checks[5];        /* breaches found by registrations, capacity, leases,
                             processes, convergence (or -errno: could not check) */
    struct verify_counts counts;
    size_t traffic_breaches, registry_breaches;
    char lines[SCENARIO_MAX_LINES][SCENARIO_LINE]; /* the breaches, one line each */
    size_t n_lines, lines_dropped;
};

enum {
    SCENARIO_CHECK_REGISTRATIONS,
    SCENARIO_CHECK_CAPACITY,
    SCENARIO_CHECK_LEASES,
    SCENARIO_CHECK_PROCESSES,
    SCENARIO_CHECK_CONVERGED
};

/* Scenario id's title ("" for an id out of 1..SCENARIO_COUNT). */
const char *scenario_title(int id);
/* Whether scenario id needs the world's network-namespace pod. */
bool scenario_needs_netns(int id);

/* Run scenario id against w (up and converged, as world_start leaves it), its registrations
 * recorded in v. out is filled whole; 0 when it ran with no breach, 1 when it found any, a
 * skipped scenario 0 (out->skipped, out->why), -EINVAL for an unknown id. */
int scenario_run(int id, struct world *w, struct verify *v, const struct scenario_options *opt,
                 struct scenario_result *out);

/* Whether a call of scenario id that ended with code (a grpc_status_code, or -1 for a wrong
 * answer, -2 for a hung call) in the phase labelled phase, for a model kept at 2+ copies
 * (multi) or not, is a breach: the rules above. Pure. */
bool scenario_failure_breaches(int id, const char *phase, bool multi, int code);

/* All breaches of a result (traffic + registry). */
size_t scenario_breaches(const struct scenario_result *r);

#endif
