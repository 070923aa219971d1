/* report.h - CHAOS.md: what a chaos run did and measured, one section per scenario (what was
 * done; requests sent / OK / failed by code per class and phase, wrong, hung; p50 / p99 / max
 * latency per phase, the fault's included; the time to recovery; the registry checks and every
 * breach), under a header naming the date, the machine, the build and the seed. */
#ifndef MM_CHAOS_REPORT_H
#define MM_CHAOS_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "scenario.h"

struct report_run {
    const char *command;    /* the command line, as run */
    const char *build_type; /* "debugoptimized", "debugoptimized, sanitize=address,undefined" */
    uint32_t seed;
    bool short_run;
    size_t n_pods, n_multi, n_single, etcd_members;
    const char *lease_ttl;
    uint64_t capacity_bytes; /* each runtime's */
    long world_start_ms;     /* how long the world took to come up */
    const char *note; /* a line under the header (e.g. why a scenario was skipped), or NULL */
};

/* Write the report to f. */
void report_write(FILE *f, const struct report_run *run, const struct scenario_result *res,
                  size_t n);
/* Write it to path (replaced whole: written to path.tmp, then renamed). 0 or -errno (printed). */
int report_save(const char *path, const struct report_run *run, const struct scenario_result *res,
                size_t n);
/* One line per scenario to f: its id, PASS / FAIL (breaches) / SKIP (why). */
void report_summary(FILE *f, const struct scenario_result *res, size_t n);

#endif
