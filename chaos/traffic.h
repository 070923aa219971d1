/* traffic.h - the chaos load: ModelInfer calls for many models through one endpoint (the
 * gateway), open loop at a fixed rate per model, every answer checked against the model's
 * expected output, every call bounded by its deadline.
 *
 * Bounded: at most max_in_flight calls at once (a call due while the bound is reached is
 * counted as `skipped`, never queued: the load cannot pile up), each with deadline_ms; a call
 * whose callback has not come deadline_ms + 2 s after it was sent is a `hung` call (the
 * watchdog counts it once; it is still cancelled at traffic_stop). Requests are encoded once
 * per model at traffic_new (the same bytes sent every time; no allocation per call beyond
 * gRPC's).
 *
 * An answer is `wrong` when it is OK but its output (predict, FP32, first value: from
 * raw_output_contents or contents) differs from the model's expected value by more than 1e-6,
 * or names another model.
 *
 * Results are kept per phase (traffic_phase starts a new one: "before", "fault", "after") and
 * per class (models with 2+ copies, single-copy models): calls by gRPC code, wrong, hung,
 * skipped, and latencies (every OK or failed call's, in a log-linear histogram from 10 µs to
 * 120 s, 2% resolution) for p50 / p99 / max. The first TRAFFIC_KEEP failures of each phase are
 * kept whole (model, code, details, when). A call counts in the phase it was sent in; a hung
 * call (its callback later than deadline_ms + 2 s, or never) counts in `hung`, not in by_code
 * nor the latencies, so that once stopped, sent = sum of by_code + hung. Past
 * TRAFFIC_MAX_PHASES phases, the oldest are dropped (traffic_phases gives the last ones).
 *
 * The loop held (a caller blocking it) does not make a burst: a model more than 1 s behind
 * its schedule starts again from now.
 *
 * Single-threaded: on the rpc context's loop. */
#ifndef MM_CHAOS_TRAFFIC_H
#define MM_CHAOS_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#define TRAFFIC_MAX_MODELS 256
#define TRAFFIC_MAX_PHASES 16
#define TRAFFIC_KEEP 20
#define TRAFFIC_CODES 17 /* gRPC status codes 0..16 */
#define TRAFFIC_SERVED_KEEP 4096

struct rpc_context;
struct traffic;

enum traffic_class { TRAFFIC_MULTI, TRAFFIC_SINGLE, TRAFFIC_CLASSES };

struct traffic_model {
    const char *name;         /* model_name sent (copied) */
    float expected;           /* predict[0] a right answer has */
    enum traffic_class cls;
    double rate;              /* calls per second (> 0) */
};

struct traffic_config {
    const char *target;        /* "127.0.0.1:<port>": the endpoint every call goes to */
    const struct traffic_model *models;
    size_t n_models;           /* 1..TRAFFIC_MAX_MODELS */
    const float *row;          /* the input: one row of n_features FP32 values, "input-0" */
    size_t n_features;
    long deadline_ms;          /* each call's; default (0) 5000 */
    size_t max_in_flight;      /* default (0) 256 */
    uint32_t seed;             /* the calls' phase offsets (spread, not bursts) */
};

struct traffic_failure {
    char model[64];
    grpc_status_code code;     /* or -1 for a wrong answer, -2 for a hung call */
    char details[160];
    int64_t at_ms;             /* since traffic_start */
};

struct traffic_stats {
    uint64_t sent;
    uint64_t by_code[TRAFFIC_CODES]; /* answered, by code (OK included, wrong answers too) */
    uint64_t wrong;            /* OK but the wrong output (a breach, always) */
    uint64_t hung;             /* no callback by deadline + 2 s (a breach, always) */
    uint64_t skipped;          /* not sent: max_in_flight reached */
    double p50_ms, p99_ms, max_ms; /* of every answered call of the phase (0 when none) */
};

struct traffic_phase_report {
    char label[32];
    int64_t start_ms, end_ms;  /* since traffic_start; end_ms of the current phase = now */
    struct traffic_stats cls[TRAFFIC_CLASSES];
    struct traffic_failure failures[TRAFFIC_KEEP];
    size_t n_failures;         /* kept; more may have happened (by_code says how many) */
    int64_t held_ms;           /* the longest the loop went without running the load's timer
                                * (5 ms) in this phase: a caller blocking it. Calls out then
                                * are late through no fault of the endpoint (counted hung past
                                * deadline + 2 s); a phase with held_ms near that is suspect */
};

/* The config is copied. 0 or -errno (-EINVAL naming what was wrong, printed). */
int traffic_new(struct rpc_context *rpc, const struct traffic_config *cfg, struct traffic **out);
/* Start sending (phase "before" begins). */
int traffic_start(struct traffic *t);
/* End the current phase, start one called label (copied, truncated to 31 bytes). */
void traffic_phase(struct traffic *t, const char *label);
/* Stop sending; run the loop until every call in flight has its callback (bounded by the
 * deadline + 2 s; what is still out then is counted hung and cancelled). Ends the phase. */
void traffic_stop(struct traffic *t);
/* The phases so far (the current one included, up to now). */
size_t traffic_phases(const struct traffic *t, struct traffic_phase_report *out, size_t max);
/* Milliseconds since traffic_start. */
int64_t traffic_now_ms(const struct traffic *t);
/* Since when every model has had an OK, right answer sent after since_ms: the latest of the
 * models' first such answers (ms since traffic_start), or -1 when some model has had none yet.
 * "Time to recovery" is this minus the fault's end. Models paused (rate 0) are left out. Each
 * model's last TRAFFIC_SERVED_KEEP right answers are remembered: for a since_ms older than
 * those, the answer is an upper bound. */
int64_t traffic_all_served_since(const struct traffic *t, int64_t since_ms);
/* Change model k's rate (0 pauses it). */
void traffic_set_rate(struct traffic *t, size_t k, double rate);
/* Cancels what is in flight (no callback after it). */
void traffic_free(struct traffic *t);

/* --- the latency histogram (its own unit test uses it) ---
 * Log-linear: values in units of 100 ns, exact below 128 units (12.8 µs), then 64 linear
 * sub-buckets per power of two (a bucket is at most 1/64 of its values wide: a percentile
 * read at a bucket's middle is within 0.8% of the value, 2% from 10 µs on). Values past
 * 120 s count as 120 s (max_ms keeps the exact largest). */
#define TRAFFIC_HIST_BUCKETS 1664
struct traffic_histogram {
    uint64_t count;
    double max_ms;
    uint64_t buckets[TRAFFIC_HIST_BUCKETS];
};
void traffic_histogram_add(struct traffic_histogram *h, double ms);
/* The nearest-rank percentile q (0 < q <= 1) in ms, at most max_ms; 0 when empty. */
double traffic_histogram_percentile(const struct traffic_histogram *h, double q);

#endif
