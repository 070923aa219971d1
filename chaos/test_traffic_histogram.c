/* test_traffic_histogram.c - the chaos load's latency histogram, pure: percentiles against the
 * exact nearest-rank percentiles of the same samples (sorted), for distributions from 10 µs to
 * 120 s (within 2%), the max exact, values past 120 s clamped, the empty histogram. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "traffic.h"

#define N 20000

static double samples[N];
static struct traffic_histogram h;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double exact(const double *sorted, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

/* A uniform double in [0, 1) from a fixed generator (xorshift), so that runs are repeatable. */
static uint64_t state = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}

/* Fill h with n samples and compare its percentiles with the exact ones. */
static void compare(const char *what, size_t n)
{
    memset(&h, 0, sizeof(h));
    for (size_t i = 0; i < n; i++)
        traffic_histogram_add(&h, samples[i]);
    CHECK_INT(h.count, n);
    qsort(samples, n, sizeof(*samples), cmp_double);
    const double qs[] = {0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double want = exact(samples, n, qs[i]);
        double got = traffic_histogram_percentile(&h, qs[i]);
        double rel = fabs(got - want) / want;
        if (!(rel <= 0.02))
            fprintf(stderr, "%s: p%g = %.6f ms, exact %.6f ms (%.2f%% off)\n", what, qs[i] * 100,
                    got, want, rel * 100);
        CHECK(rel <= 0.02);
        CHECK(got <= h.max_ms);
    }
    CHECK(h.max_ms == samples[n - 1]);
    /* monotonic in q */
    double prev = 0;
    for (int q = 1; q <= 100; q++) {
        double v = traffic_histogram_percentile(&h, q / 100.0);
        CHECK(v >= prev);
        prev = v;
    }
    fprintf(stderr, "%s: p50 %.4f p99 %.4f max %.4f ms (exact p50 %.4f p99 %.4f)\n", what,
            traffic_histogram_percentile(&h, 0.5), traffic_histogram_percentile(&h, 0.99), h.max_ms,
            exact(samples, n, 0.5), exact(samples, n, 0.99));
}

int main(void)
{
    /* empty */
    memset(&h, 0, sizeof(h));
    CHECK(traffic_histogram_percentile(&h, 0.5) == 0);
    CHECK(traffic_histogram_percentile(&h, 1.0) == 0);

    /* one value: every percentile is it (within a bucket, never above it) */
    traffic_histogram_add(&h, 3.7);
    CHECK(fabs(traffic_histogram_percentile(&h, 0.5) - 3.7) / 3.7 <= 0.02);
    CHECK(traffic_histogram_percentile(&h, 1.0) <= 3.7);
    CHECK(h.max_ms == 3.7);

    /* uniform 0.01..100 ms */
    for (size_t i = 0; i < N; i++)
        samples[i] = 0.01 + uniform() * 99.99;
    compare("uniform 10 us..100 ms", N);

    /* log-uniform over the whole range, 10 µs .. 120 s */
    for (size_t i = 0; i < N; i++)
        samples[i] = 0.01 * pow(120000.0 / 0.01, uniform());
    compare("log-uniform 10 us..120 s", N);

    /* a tail: 99% near 2 ms, 1% at 5000 ms (deadline-exceeded calls) */
    for (size_t i = 0; i < N; i++)
        samples[i] = i % 100 == 0 ? 5000.0 + uniform() : 1.5 + uniform();
    compare("bimodal 2 ms / 5 s", N);

    /* small n: 10 values, p50 is the 5th, p99 the 10th */
    for (size_t i = 0; i < 10; i++)
        samples[i] = (double)(10 - i);
    compare("ten values", 10);
    CHECK(fabs(traffic_histogram_percentile(&h, 0.5) - 5.0) <= 0.05);
    CHECK(fabs(traffic_histogram_percentile(&h, 0.99) - 10.0) <= 0.1);

    /* past 120 s: clamped into the last bucket, max exact; negative counts as 0 */
    memset(&h, 0, sizeof(h));
    traffic_histogram_add(&h, 1.0);
    traffic_histogram_add(&h, 500000.0);
    traffic_histogram_add(&h, -1.0);
    CHECK_INT(h.count, 3);
    CHECK(h.max_ms == 500000.0);
    double top = traffic_histogram_percentile(&h, 1.0);
    CHECK(top >= 120000.0 * 0.98 && top <= 120000.0 * 1.02);
    CHECK(traffic_histogram_percentile(&h, 0.1) < 0.001);
    return CHECK_DONE();
}
