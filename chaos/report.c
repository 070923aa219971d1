/* report.c - CHAOS.md from the scenarios' results. */
#include "report.h"

#include <errno.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static const char *const code_names[TRAFFIC_CODES] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static void seconds(FILE *f, int64_t ms)
{
    if (ms < 0)
        fputs("never (within the bound)", f);
    else
        fprintf(f, "%.1f s", (double)ms / 1000.0);
}

static void failed_by_code(FILE *f, const struct traffic_stats *s)
{
    bool any = false;
    for (int c = 1; c < TRAFFIC_CODES; c++) {
        if (!s->by_code[c])
            continue;
        fprintf(f, "%s%s %llu", any ? ", " : "", code_names[c], (unsigned long long)s->by_code[c]);
        any = true;
    }
    if (!any)
        fputs("-", f);
}

static void traffic_table(FILE *f, const struct scenario_result *r)
{
    fputs("| phase | models | length | sent | OK | failed (by code) | wrong | hung | skipped | "
          "p50 ms | p99 ms | max ms | loop held ms |\n",
          f);
    fputs("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "|\n",
          f);
    for (size_t i = 0; i < r->n_phases; i++) {
        const struct traffic_phase_report *p = &r->phases[i];
        uint64_t sent = p->cls[0].sent + p->cls[1].sent;
        if (sent == 0 && p->end_ms - p->start_ms < 100)
            continue; /* the empty phase traffic_start opens before "settle" */
        for (int c = 0; c < TRAFFIC_CLASSES; c++) {
            const struct traffic_stats *s = &p->cls[c];
            fprintf(f, "| %s | %s | %.1f s | %llu | %llu | ", p->label,
                    c == TRAFFIC_MULTI ? "2+ copies" : "1 copy",
                    (double)(p->end_ms - p->start_ms) / 1000.0, (unsigned long long)s->sent,
                    (unsigned long long)(s->by_code[0] - s->wrong));
            failed_by_code(f, s);
            fprintf(f, " | %llu | %llu | %llu | %.1f | %.1f | %.1f | %lld |\n",
                    (unsigned long long)s->wrong, (unsigned long long)s->hung,
                    (unsigned long long)s->skipped, s->p50_ms, s->p99_ms, s->max_ms,
                    (long long)p->held_ms);
        }
    }
}

static void check_cell(FILE *f, const char *name, int v)
{
    if (v < 0)
        fprintf(f, "%s: could not check (%s)", name, strerror(-v));
    else
        fprintf(f, "%s: %d breach%s", name, v, v == 1 ? "" : "es");
}

static void section(FILE *f, const struct scenario_result *r)
{
    size_t b = scenario_breaches(r);
    fprintf(f, "## Scenario %d: %s: %s", r->id, r->title,
            r->skipped ? "SKIPPED"
            : b        ? "FAIL"
                       : "PASS");
    if (!r->skipped && b)
        fprintf(f, " (%zu breach%s)", b, b == 1 ? "" : "es");
    fputs("\n\n", f);
    if (r->skipped) {
        fprintf(f, "Not run: %s.\n\n", r->why);
        return;
    }
    fputs("What was done (seconds since the scenario's traffic began):\n\n", f);
    for (size_t i = 0; i < r->n_steps; i++)
        fprintf(f, "- %s\n", r->steps[i]);
    fputs("\nTraffic, through the gateway, every answer checked against the model's expected "
          "output (\"2+ copies\": the models kept at 2 or more copies by their rate):\n\n",
          f);
    traffic_table(f, r);
    fputs("\n(\"loop held\": the longest the driver's loop went without sending, while a fault "
          "step blocked it; a call out then is answered late through no fault of the mesh.)\n",
          f);
    fputs("\nRecovery: converged (every InferenceService Ready, up to date, its model Loaded) ", f);
    seconds(f, r->converged_ms);
    fputs(" after the fault; every model answered right again ", f);
    seconds(f, r->served_ms);
    fprintf(f,
            " after it (resolution: a single-copy model is called every %.1f s); time to "
            "recovery ",
            (double)r->served_floor_ms / 1000.0);
    seconds(f, r->recovery_ms);
    fputs(".\n\nRegistry and processes: ", f);
    check_cell(f, "registrations", r->checks[SCENARIO_CHECK_REGISTRATIONS]);
    fprintf(f, " (%zu keys acknowledged so far, %zu checked); ", r->counts.acked_keys,
            r->counts.checked_keys);
    check_cell(f, "capacity", r->checks[SCENARIO_CHECK_CAPACITY]);
    fprintf(f, " (%zu instances); ", r->counts.instances);
    check_cell(f, "leases", r->checks[SCENARIO_CHECK_LEASES]);
    fprintf(f, " (%zu copy records); ", r->counts.copies);
    check_cell(f, "processes", r->checks[SCENARIO_CHECK_PROCESSES]);
    fprintf(f, " (%zu logs read); convergence: %s (%zu InferenceServices).\n\n", r->counts.logs,
            r->checks[SCENARIO_CHECK_CONVERGED] == 0 ? "yes" : "no", r->counts.isvcs);
    if (!b) {
        fputs("Breaches: none.\n\n", f);
        return;
    }
    fprintf(f, "Breaches (%zu traffic, %zu registry and processes):\n\n", r->traffic_breaches,
            r->registry_breaches);
    fputs("```\n", f);
    for (size_t i = 0; i < r->n_lines; i++)
        fprintf(f, "%s\n", r->lines[i]);
    if (r->lines_dropped)
        fprintf(f, "(%zu more lines not kept)\n", r->lines_dropped);
    fputs("```\n\n", f);
}

void report_summary(FILE *f, const struct scenario_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct scenario_result *r = &res[i];
        size_t b = scenario_breaches(r);
        if (r->skipped)
            fprintf(f, "scenario %d: SKIP (%s): %s\n", r->id, r->why, r->title);
        else
            fprintf(f, "scenario %d: %s (%zu breaches, recovery %.1f s): %s\n", r->id,
                    b ? "FAIL" : "PASS", b, (double)r->recovery_ms / 1000.0, r->title);
    }
}

void report_write(FILE *f, const struct report_run *run, const struct scenario_result *res,
                  size_t n)
{
    char date[64] = "?";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", &tm);
    struct utsname u;
    char machine[200] = "?";
    if (uname(&u) == 0)
        snprintf(machine, sizeof(machine), "%s %s %s", u.sysname, u.release, u.machine);
    size_t failed = 0, skipped = 0;
    for (size_t i = 0; i < n; i++) {
        skipped += res[i].skipped;
        failed += !res[i].skipped && scenario_breaches(&res[i]) > 0;
    }
    fputs("# Chaos: failover under load\n\n", f);
    fprintf(f, "Written by `%s` (mm-chaos; see README, Chaos testing).\n\n", run->command);
    fprintf(f, "- date: %s\n- machine: %ld cores (nproc), %s\n- build: %s\n- seed: %u%s\n", date,
            sysconf(_SC_NPROCESSORS_ONLN), machine, run->build_type, run->seed,
            run->short_run ? " (short run)" : "");
    fprintf(
        f,
        "- world: %zu pods (mm-runtime + mm-node), %zu etcd member(s), 2 controllers, a "
        "gateway, storage (s3rver) behind a fault proxy; %zu models kept at 2+ copies by "
        "rate and %zu at one copy; lease TTL %s; %llu bytes of capacity per pod; up in %.1f s\n",
        run->n_pods, run->etcd_members, run->n_multi, run->n_single,
        run->lease_ttl ? run->lease_ttl : "3s", (unsigned long long)run->capacity_bytes,
        (double)run->world_start_ms / 1000.0);
    fprintf(f, "- result: %zu scenario(s), %zu failed, %zu skipped\n\n", n, failed, skipped);
    if (run->note)
        fprintf(f, "%s\n\n", run->note);
    for (size_t i = 0; i < n; i++)
        section(f, &res[i]);
}

int report_save(const char *path, const struct report_run *run, const struct scenario_result *res,
                size_t n)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        fprintf(stderr, "mm-chaos: report %s: %s\n", tmp, strerror(e));
        return -e;
    }
    report_write(f, run, res, n);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        fprintf(stderr, "mm-chaos: report %s: %s\n", path, strerror(e));
        unlink(tmp);
        return -e;
    }
    return 0;
}
