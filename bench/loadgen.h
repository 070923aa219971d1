/* loadgen.h - the benches' load generator: a closed loop of unary calls on one channel (each
 * reply starts the next call of its slot) for a fixed time, every latency recorded, and the
 * summary the benches print (requests/s, p50, p99); and the same percentiles of an h2load
 * log. Bench-only; runs on the caller's loop. */
#ifndef MM_BENCH_LOADGEN_H
#define MM_BENCH_LOADGEN_H

#include <stddef.h>

#include "mm/rpc.h"

struct ev_loop;

#define LOADGEN_MAX_CONCURRENCY 64

struct loadgen_stats {
    size_t n;        /* OK replies measured */
    size_t failures; /* replies not OK (the first is printed on stderr) */
    double rps;      /* n / elapsed seconds */
    double p50_us, p99_us;
};

/* Seconds on the monotonic clock. */
double loadgen_now(void);
/* Sort lat[0..n) (seconds) and summarize them as measured over `seconds`. */
struct loadgen_stats loadgen_summarize(double *lat, size_t n, double seconds);
/* p50 and p99 of the third column (microseconds) of h2load's log (--log-file); both 0 if it
 * cannot be read or holds no line. */
void loadgen_h2load_percentiles(const char *log, double *p50_us, double *p99_us);
/* One call first (not measured, so that the connection exists), then `concurrency` (1..64)
 * calls of method with request kept in flight for `seconds`; waits for the last replies (10 s
 * deadline each). lat: room for max_samples latencies. */
struct loadgen_stats loadgen_run(struct ev_loop *loop, struct rpc_channel *ch, const char *method,
                                 grpc_byte_buffer *request, int concurrency, double seconds,
                                 double *lat, size_t max_samples);

#endif
