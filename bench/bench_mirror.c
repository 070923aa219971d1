/* bench_mirror.c - what the mirror costs, against baselines measured in the same run:
 *   1. initial sync: the mirror's list of N records vs a raw paginated range of the same keys;
 *   2. watch apply: events/s applied by the mirror vs events/s a raw counting watch receives,
 *      each during an identical burst of M updates written by a separate process;
 *   3. the apply path alone (synthetic events, no etcd), as headroom over etcd's delivery;
 *   4. memory: heap bytes and RSS per mirrored record vs the record's payload (key + value);
 *   5. fan-out: apply and delivery with S subscribers, one per model id prefix (as the router
 *      subscribes), every event matching one of them, vs one subscriber matching every event;
 *      and, for reference, what a scan of all S prefixes per event costs alone.
 * usage: bench_mirror [N records (default 50000)] [M updates (default 50000)]
 *                     [S subscribers (default 10000)] */
#include <ev.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/mirror.h"

#define PREFIX "/bench/copies/"
#define BATCH 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks;
}

static void make_key(char *k, size_t n, int i)
{
    snprintf(k, n, PREFIX "model-%06d__isvc-%010x/node-%d", i / 4, (unsigned)i * 2654435761u,
             i % 4);
}

/* A copy record of realistic size (~200 bytes). */
static void make_value(char *v, size_t n, int i, int gen)
{
    snprintf(v, n,
             "{\"v\":1,\"state\":\"%s\",\"since_ms\":%lld,\"size_bytes\":%d,\"error\":\"\","
             "\"load_ms\":%d,\"node\":\"node-%d\",\"zone\":\"zone-a\",\"runtime\":\"mm-runtime\","
             "\"gen\":%d}",
             gen % 2 ? "Loading" : "Loaded", 1764000000000LL + i, 1228800 + i, 100 + i % 900,
             i % 4, gen);
}

/* Write records [0, n) with generation gen, in txns of BATCH. */
static int write_all(struct etcd_client *c, int n, int gen)
{
    static char keys[BATCH][160], values[BATCH][320];
    struct etcd_op ops[BATCH];
    for (int i = 0; i < n; i += BATCH) {
        int k = 0;
        for (; k < BATCH && i + k < n; k++) {
            make_key(keys[k], sizeof(keys[k]), i + k);
            make_value(values[k], sizeof(values[k]), i + k, gen);
            ops[k] = (struct etcd_op){.kind = ETCD_OP_PUT, .key = keys[k], .value = values[k]};
        }
        struct etcd_txn txn = {.success = ops, .n_success = (size_t)k};
        struct etcd_response *r = NULL;
        struct mm_error err = {0};
        if (etcd_sync_txn(c, &txn, &r, &err) < 0) {
            fprintf(stderr, "write: %s\n", err.msg);
            return -1;
        }
        etcd_response_free(r);
    }
    return 0;
}

/* A writer in its own process, so that writing and watching run at the same time. */
static pid_t spawn_writer(const char *endpoint, int n, int gen)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    struct ev_loop *l = ev_loop_new(EVFLAG_AUTO);
    struct etcd_config cfg = {.endpoints = endpoint, .request_timeout_ms = 30000};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (etcd_client_new(l, &cfg, &c, &err) < 0)
        _exit(2);
    int rc = write_all(c, n, gen);
    etcd_client_free(c);
    ev_loop_destroy(l);
    _exit(rc < 0 ? 1 : 0);
}

static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
}

/* Run the loop until *count reaches target (or 120 s); returns seconds from the first event. */
static double run_until_count(struct ev_loop *loop, const uint64_t *count, uint64_t target,
                              const double *first)
{
    ev_timer t;
    ev_timer_init(&t, tick, 0.05, 0.05);
    ev_timer_start(loop, &t);
    double end = now_s() + 120;
    while (*count < target && now_s() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return *count >= target ? now_s() - *first : -1;
}

struct raw_watch {
    uint64_t events;
    double first;
};

static void count_events(struct etcd_watch *w, int status, const struct mm_error *err,
                         const struct etcd_watch_batch *b, int64_t compact, void *arg)
{
    struct raw_watch *rw = arg;
    if (b && b->n_events && rw->events == 0)
        rw->first = now_s();
    if (b)
        rw->events += b->n_events;
}

struct applied {
    uint64_t events;
    double first;
};

static void on_event(const struct mirror_event *ev, void *arg)
{
    struct applied *a = arg;
    if (a->events++ == 0)
        a->first = now_s();
}

static int count_keys(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    *(size_t *)arg += n;
    return 0;
}

static void count_delivery(const struct mirror_event *ev, void *arg)
{
    (*(uint64_t *)arg)++;
}

#define FAN_KEYS_PER_MODEL 4
#define FAN_EVENTS 400000

static void fan_prefix(char *p, size_t n, int model)
{
    snprintf(p, n, PREFIX "model-%06d__", model);
}

/* Apply events (in txns of BATCH, one revision each) to a mirror that is not started, with
 * either one subscriber of PREFIX or one subscriber per model; returns events/s, or -1 if a
 * delivery went astray (every event must reach exactly one callback). */
static double fan_rate(struct etcd_client *c, const struct etcd_event *evs, size_t n_evs,
                       int n_models, bool per_model)
{
    struct mirror *mir = NULL;
    struct mm_error err = {0};
    if (mirror_new(c, PREFIX, NULL, &mir, &err) < 0)
        return -1;
    uint64_t *counts = calloc((size_t)n_models, sizeof(*counts));
    char p[160];
    for (int j = 0; j < (per_model ? n_models : 1); j++) {
        if (per_model)
            fan_prefix(p, sizeof(p), j);
        else
            snprintf(p, sizeof(p), PREFIX);
        mirror_subscribe(mir, p, strlen(p), count_delivery, &counts[j], NULL);
    }
    double t0 = now_s();
    for (size_t i = 0; i < n_evs; i += BATCH)
        mirror_apply_events(mir, evs + i, n_evs - i < BATCH ? n_evs - i : BATCH);
    double s = now_s() - t0;
    uint64_t total = 0;
    for (int j = 0; j < n_models; j++)
        total += counts[j];
    mirror_free(mir);
    free(counts);
    return total == n_evs ? n_evs / s : -1;
}

/* What delivery cost per event before prefix dispatch: every subscription's prefix compared
 * with the key. Measured alone (no apply), on the same events. */
static double scan_rate(const struct etcd_event *evs, size_t n_evs, int n_models)
{
    char (*prefixes)[40] = calloc((size_t)n_models, 40);
    size_t *lens = calloc((size_t)n_models, sizeof(*lens));
    for (int j = 0; j < n_models; j++) {
        fan_prefix(prefixes[j], 40, j);
        lens[j] = strlen(prefixes[j]);
    }
    volatile uint64_t matches = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n_evs; i++)
        for (int j = 0; j < n_models; j++)
            if (evs[i].kv.key_len >= lens[j] && memcmp(evs[i].kv.key, prefixes[j], lens[j]) == 0)
                matches++;
    double s = now_s() - t0;
    free(prefixes);
    free(lens);
    return matches == n_evs ? n_evs / s : -1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50000;
    int m = argc > 2 ? atoi(argv[2]) : 50000;
    int subs = argc > 3 ? atoi(argv[3]) : 10000;
    if (n <= 0 || m <= 0 || m > n || subs <= 0) {
        fprintf(stderr, "usage: bench_mirror [N records] [M updates <= N] [S subscribers]\n");
        return 2;
    }
    struct harness_etcd etcd = {0};
    /* A larger backend quota than the default 2 GiB is not needed; keep etcd's defaults. */
    if (harness_etcd_start(&etcd, NULL) < 0)
        return 1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct etcd_config cfg = {.endpoints = etcd.endpoint, .request_timeout_ms = 30000};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (etcd_client_new(loop, &cfg, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t0 = now_s();
    if (write_all(c, n, 0) < 0)
        return 1;
    printf("loaded %d records in %.2f s (%.0f records/s through txns of %d)\n", n, now_s() - t0,
           n / (now_s() - t0), BATCH);

    /* 1. Initial sync vs a raw paginated range of the same keys. */
    t0 = now_s();
    size_t raw_keys = 0;
    struct etcd_paged_req pages = {.key = PREFIX, .range_end = "/bench/copies0", .page_keys = 1000};
    if (etcd_sync_range_paged(c, &pages, count_keys, &raw_keys, NULL, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double raw_list_s = now_s() - t0;

    /* 2a. Baseline for the watch: a raw counting watch during a burst of m updates, before the
     * mirror exists so that nothing else runs on the loop. */
    struct raw_watch rw = {0};
    struct etcd_watch *w = NULL;
    struct etcd_watch_req wr = {.key = PREFIX, .prefix = true};
    etcd_watch_start(c, &wr, count_events, &rw, &w);
    ev_run(loop, EVRUN_NOWAIT);
    pid_t writer = spawn_writer(etcd.endpoint, m, 1);
    double raw_watch_s = run_until_count(loop, &rw.events, (uint64_t)m, &rw.first);
    waitpid(writer, NULL, 0);
    etcd_watch_free(w);

    malloc_trim(0);
    size_t heap0 = heap_in_use();
    long rss0 = rss_kib();
    struct mirror *mir = NULL;
    struct mirror_config mcfg = {.page_size = 1000};
    if (mirror_new(c, PREFIX, &mcfg, &mir, &err) < 0)
        return 1;
    struct applied applied = {0};
    mirror_subscribe(mir, "", 0, on_event, &applied, NULL);
    t0 = now_s();
    mirror_start(mir);
    double first = t0;
    uint64_t listed_target = (uint64_t)n;
    run_until_count(loop, &applied.events, listed_target, &first);
    double mirror_list_s = now_s() - t0;
    malloc_trim(0);
    size_t heap1 = heap_in_use();
    long rss1 = rss_kib();
    size_t payload = 0;
    {
        char k[160], v[320];
        for (int i = 0; i < n; i++) {
            make_key(k, sizeof(k), i);
            make_value(v, sizeof(v), i, 0);
            payload += strlen(k) + strlen(v);
        }
    }
    if (mirror_count(mir) != (size_t)n || raw_keys != (size_t)n) {
        fprintf(stderr, "count mismatch: mirror %zu raw %zu want %d\n", mirror_count(mir),
                raw_keys, n);
        return 1;
    }

    /* 2b. The mirror's watch during an identical burst. */
    applied.events = 0;
    pid_t writer2 = spawn_writer(etcd.endpoint, m, 2);
    double mirror_watch_s = run_until_count(loop, &applied.events, (uint64_t)m, &applied.first);
    waitpid(writer2, NULL, 0);

    /* 3. The apply path alone: m synthetic updates to existing keys. */
    struct etcd_event *evs = calloc((size_t)m, sizeof(*evs));
    char (*keys)[160] = calloc((size_t)m, 160), (*vals)[320] = calloc((size_t)m, 320);
    int64_t top = mirror_revision(mir);
    for (int i = 0; i < m; i++) {
        make_key(keys[i], 160, i);
        make_value(vals[i], 320, i, 3);
        evs[i].type = ETCD_EVENT_PUT;
        evs[i].kv = (struct etcd_kv){.key = keys[i], .key_len = strlen(keys[i]),
                                     .value = vals[i], .value_len = strlen(vals[i]),
                                     .mod_revision = top + 1 + i / BATCH, .version = 4};
    }
    t0 = now_s();
    for (int i = 0; i < m; i += BATCH)
        mirror_apply_events(mir, evs + i, (size_t)(m - i < BATCH ? m - i : BATCH));
    double apply_s = now_s() - t0;

    /* 5. Fan-out: events over subs models (FAN_KEYS_PER_MODEL keys each, replaced over and
     * over), each matching one model's prefix. */
    size_t n_fan_keys = (size_t)subs * FAN_KEYS_PER_MODEL;
    char (*fan_keys)[160] = calloc(n_fan_keys, 160);
    struct etcd_event *fan_evs = calloc(FAN_EVENTS, sizeof(*fan_evs));
    char fan_val[320];
    make_value(fan_val, sizeof(fan_val), 0, 4);
    for (size_t k = 0; k < n_fan_keys; k++) {
        char model[40];
        fan_prefix(model, sizeof(model), (int)(k / FAN_KEYS_PER_MODEL));
        snprintf(fan_keys[k], 160, "%sisvc-%010x/node-%d", model, (unsigned)k * 2654435761u,
                 (int)(k % FAN_KEYS_PER_MODEL));
    }
    for (size_t i = 0; i < FAN_EVENTS; i++) {
        /* a stride coprime with the key count: models visited in no particular order */
        const char *k = fan_keys[(i * 7919) % n_fan_keys];
        fan_evs[i].type = ETCD_EVENT_PUT;
        fan_evs[i].kv = (struct etcd_kv){.key = k, .key_len = strlen(k), .value = fan_val,
                                         .value_len = strlen(fan_val),
                                         .mod_revision = 1 + (int64_t)(i / BATCH)};
    }
    double fan_one = 0, fan_many = 0; /* best of three, alternating: the machine is shared */
    for (int round = 0; round < 3; round++) {
        double one = fan_rate(c, fan_evs, FAN_EVENTS, subs, false);
        double many = fan_rate(c, fan_evs, FAN_EVENTS, subs, true);
        if (one < 0 || many < 0) {
            fprintf(stderr, "fan-out: an event did not reach exactly one subscriber\n");
            return 1;
        }
        fan_one = one > fan_one ? one : fan_one;
        fan_many = many > fan_many ? many : fan_many;
    }
    double fan_scan = scan_rate(fan_evs, FAN_EVENTS / 10, subs);

    double raw_list_rate = n / raw_list_s, mirror_list_rate = n / mirror_list_s;
    double raw_watch_rate = raw_watch_s > 0 ? m / raw_watch_s : 0;
    double mirror_watch_rate = mirror_watch_s > 0 ? m / mirror_watch_s : 0;
    double apply_rate = m / apply_s;
    printf("\n| measure | mirror | baseline | ratio |\n|---|---|---|---|\n");
    printf("| initial sync of %d records | %.0f records/s | raw paginated range: %.0f records/s "
           "| %.2f |\n", n, mirror_list_rate, raw_list_rate, mirror_list_rate / raw_list_rate);
    printf("| watch apply during a burst of %d updates | %.0f events/s | raw counting watch: "
           "%.0f events/s | %.2f |\n", m, mirror_watch_rate, raw_watch_rate,
           raw_watch_rate > 0 ? mirror_watch_rate / raw_watch_rate : 0);
    printf("| apply path alone (no etcd) | %.0f events/s | raw watch delivery: %.0f events/s | "
           "%.1fx headroom |\n", apply_rate, raw_watch_rate,
           raw_watch_rate > 0 ? apply_rate / raw_watch_rate : 0);
    printf("| heap per mirrored record | %.0f bytes | payload (key + value): %.0f bytes | %.2f |\n",
           (double)(heap1 - heap0) / n, (double)payload / n,
           (double)(heap1 - heap0) / (double)payload);
    printf("| RSS per mirrored record | %.0f bytes | payload: %.0f bytes | %.2f |\n",
           (rss1 - rss0) * 1024.0 / n, (double)payload / n,
           (rss1 - rss0) * 1024.0 / (double)payload);

    printf("| apply and deliver, %d subscribers (one per model), each event matching one | "
           "%.0f events/s | one subscriber matching every event: %.0f events/s | %.2f |\n",
           subs, fan_many, fan_one, fan_one > 0 ? fan_many / fan_one : 0);
    printf("| for reference: scanning all %d prefixes per event, alone | %.0f events/s | "
           "one subscriber, apply and deliver: %.0f events/s | %.4f |\n",
           subs, fan_scan, fan_one, fan_one > 0 ? fan_scan / fan_one : 0);

    free(fan_keys);
    free(fan_evs);
    free(evs);
    free(keys);
    free(vals);
    mirror_free(mir);
    etcd_client_free(c);
    ev_loop_destroy(loop);
    harness_etcd_cleanup(&etcd);
    return 0;
}
