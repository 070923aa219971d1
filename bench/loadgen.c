/* loadgen.c - closed-loop unary load on one channel (see loadgen.h). */
#include "loadgen.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CALL_MS 10000

double loadgen_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct loadgen_stats loadgen_summarize(double *lat, size_t n, double seconds)
{
    struct loadgen_stats s = {0};
    if (!n)
        return s;
    qsort(lat, n, sizeof(*lat), cmp_double);
    s.n = n;
    s.rps = n / seconds;
    s.p50_us = lat[n / 2] * 1e6;
    s.p99_us = lat[(size_t)(n * 0.99)] * 1e6;
    return s;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

void loadgen_h2load_percentiles(const char *log, double *p50, double *p99)
{
    *p50 = *p99 = 0;
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    size_t n = 0, cap = 1 << 16;
    long long *v = malloc(cap * sizeof(*v));
    long long start, us;
    int code;
    while (v && fscanf(f, "%lld %d %lld", &start, &code, &us) == 3) {
        if (n == cap) {
            long long *nv = realloc(v, 2 * cap * sizeof(*v));
            if (!nv)
                break;
            v = nv;
            cap *= 2;
        }
        v[n++] = us;
    }
    fclose(f);
    if (v && n) {
        qsort(v, n, sizeof(*v), cmp_ll);
        *p50 = (double)v[n / 2];
        *p99 = (double)v[(size_t)((double)(n - 1) * 0.99)];
    }
    free(v);
}

struct load {
    struct rpc_channel *ch;
    const char *method;
    grpc_byte_buffer *request;
    double end;
    double *lat;
    size_t n, max;
    size_t failures;
    int in_flight;
};

struct slot {
    struct load *l;
    double start;
};

static void send_one(struct slot *s);

static void on_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                     void *arg)
{
    struct slot *s = arg;
    struct load *l = s->l;
    double t = loadgen_now();
    if (response)
        grpc_byte_buffer_destroy(response);
    if (status == GRPC_STATUS_OK && l->n < l->max)
        l->lat[l->n++] = t - s->start;
    else if (status != GRPC_STATUS_OK && l->failures++ == 0)
        fprintf(stderr, "%s failed: %s: %s\n", l->method, rpc_status_name(status), details);
    l->in_flight--;
    if (t < l->end)
        send_one(s);
}

static void send_one(struct slot *s)
{
    s->start = loadgen_now();
    if (rpc_unary(s->l->ch, s->l->method, s->l->request, NULL, 0, CALL_MS, NULL, on_reply, s,
                  NULL) == 0)
        s->l->in_flight++;
}

struct loadgen_stats loadgen_run(struct ev_loop *loop, struct rpc_channel *ch, const char *method,
                                 grpc_byte_buffer *request, int concurrency, double seconds,
                                 double *lat, size_t max_samples)
{
    struct load l = {.ch = ch, .method = method, .request = request, .lat = lat,
                     .max = max_samples};
    struct slot slots[LOADGEN_MAX_CONCURRENCY];
    if (concurrency < 1 || concurrency > LOADGEN_MAX_CONCURRENCY)
        return (struct loadgen_stats){0};
    l.end = loadgen_now(); /* warm-up: one call, not measured */
    slots[0].l = &l;
    send_one(&slots[0]);
    while (l.in_flight)
        ev_run(loop, EVRUN_ONCE);
    l.n = 0;
    l.failures = 0;
    double t0 = loadgen_now();
    l.end = t0 + seconds;
    for (int i = 0; i < concurrency; i++) {
        slots[i].l = &l;
        send_one(&slots[i]);
    }
    while (l.in_flight)
        ev_run(loop, EVRUN_ONCE);
    struct loadgen_stats s = loadgen_summarize(lat, l.n, loadgen_now() - t0);
    s.failures = l.failures;
    return s;
}
