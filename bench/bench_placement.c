/* bench_placement.c - what a placement decision costs (place_choose), against a baseline
 * measured in the same run: a plain linear scan of the same instances that computes each one's
 * free space and keeps the largest (what any placer must at least do).
 *
 * A cluster of I instances (4 model types, each instance serving one or two, plus the runtime
 * label; 3 zones; 16 GB each) and a registry of M models (sizes 1-200 MB, some with copies or
 * recent failures). Each model is placed once, in turn; the chosen instance's used bytes grow
 * by the model's size, so the views change as they would. place_choose and the baseline run on
 * separate copies of the instances, in alternating blocks of 1,000 decisions so that both see
 * the same machine load. No I/O, no allocation inside the timed loops.
 * Also: lru (lru.h) with M copies, find + touch of a random copy, against find alone.
 * usage: bench_placement [I instances (default 10000)] [M models (default 100000)] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/lru.h"
#include "mm/place.h"

#define MB 1000000ULL
#define GB (1000 * MB)
#define BLOCK 1000
#define NOW 1800000000000LL

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;
static uint64_t next_random(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static const struct place_str types[] = {
    {"mt:sklearn", 10}, {"mt:xgboost", 10}, {"mt:onnx", 7}, {"mt:tensorflow", 13}};
static const struct place_str runtime = {"rt:mm-runtime", 13};
static const struct place_str zones[] = {{"za", 2}, {"zb", 2}, {"zc", 2}};

struct instance_labels {
    struct place_str l[3];
    char id[32];
};

struct model_spec {
    struct place_str labels[1];
    uint64_t size;
    struct place_str failed[1];
    struct place_str held[2];
    size_t n_failed, n_held;
};

/* The baseline: the instance with the most free space, nothing else. */
static size_t scan_most_free(const struct place_instance *in, size_t n)
{
    size_t best = 0;
    uint64_t best_free = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t free =
            in[i].used_bytes < in[i].capacity_bytes ? in[i].capacity_bytes - in[i].used_bytes : 0;
        if (free > best_free) {
            best_free = free;
            best = i;
        }
    }
    return best;
}

int main(int argc, char **argv)
{
    size_t ni = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
    size_t nm = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
    if (ni == 0 || nm == 0) {
        fprintf(stderr, "usage: bench_placement [instances > 0] [models > 0]\n");
        return 2;
    }
    struct instance_labels *il = calloc(ni, sizeof(*il));
    struct place_instance *in = calloc(ni, sizeof(*in));
    struct place_instance *base = calloc(ni, sizeof(*base));
    struct model_spec *ms = calloc(nm, sizeof(*ms));
    if (!il || !in || !base || !ms)
        return 1;
    for (size_t i = 0; i < ni; i++) {
        snprintf(il[i].id, sizeof(il[i].id), "node-%zu", i);
        size_t nl = 0;
        il[i].l[nl++] = types[i % 4];
        if (i % 3 == 0)
            il[i].l[nl++] = types[(i / 3 + 1) % 4];
        il[i].l[nl++] = runtime;
        in[i] = (struct place_instance){
            .id = {il[i].id, strlen(il[i].id)},
            .labels = il[i].l,
            .n_labels = nl,
            .zone = zones[i % 3],
            .capacity_bytes = 16 * GB,
            .used_bytes = next_random() % (8 * GB),
            .loaded = 10,
            .oldest_used_ms = NOW - (int64_t)(next_random() % 36000000),
        };
    }
    memcpy(base, in, ni * sizeof(*in));
    for (size_t m = 0; m < nm; m++) {
        ms[m].labels[0] = types[next_random() % 4];
        ms[m].size = (next_random() % 200 + 1) * MB;
        if (m % 10 == 0) { /* a tenth failed somewhere recently */
            ms[m].failed[0] = in[next_random() % ni].id;
            ms[m].n_failed = 1;
        }
        if (m % 5 == 0) { /* a fifth already hold copies */
            ms[m].held[0] = in[next_random() % ni].id;
            ms[m].held[1] = in[next_random() % ni].id;
            ms[m].n_held = 2;
        }
    }

    struct place_config cfg;
    place_config_init(&cfg);
    double t_place = 0, t_base = 0;
    size_t placed = 0, none = 0, must_evict = 0;
    size_t sink = 0;
    for (size_t start = 0; start < nm; start += BLOCK) {
        size_t end = start + BLOCK < nm ? start + BLOCK : nm;
        double t0 = now_s();
        for (size_t m = start; m < end; m++) {
            struct place_model pm = {.labels = ms[m].labels,
                                     .n_labels = 1,
                                     .size_bytes = ms[m].size,
                                     .failed_on = ms[m].failed,
                                     .n_failed_on = ms[m].n_failed,
                                     .held_by = ms[m].held,
                                     .n_held_by = ms[m].n_held};
            struct place_choice c;
            if (place_choose(&cfg, &pm, in, ni, NOW, next_random(), &c) == 0) {
                in[c.index].used_bytes += ms[m].size;
                in[c.index].loaded++;
                placed++;
                must_evict += c.must_evict;
            } else {
                none++;
            }
        }
        double t1 = now_s();
        for (size_t m = start; m < end; m++) {
            size_t b = scan_most_free(base, ni);
            base[b].used_bytes += ms[m].size;
            sink += b;
        }
        double t2 = now_s();
        t_place += t1 - t0;
        t_base += t2 - t1;
    }
    double us_place = t_place / (double)nm * 1e6, us_base = t_base / (double)nm * 1e6;
    printf("placement: %zu instances x %zu models, one decision per model (%zu placed, %zu "
           "none, %zu must evict)\n",
           ni, nm, placed, none, must_evict);
    printf("  place_choose:  %.2f us/decision (%.0f decisions/s)\n", us_place, 1e6 / us_place);
    printf("  baseline scan: %.2f us/decision (%.0f decisions/s)\n", us_base, 1e6 / us_base);
    printf("  ratio place/baseline: %.2f   (%.2f ns vs %.2f ns per instance)\n", us_place / us_base,
           us_place * 1e3 / (double)ni, us_base * 1e3 / (double)ni);

    /* Spread: the fullest instance afterwards (the baseline levels perfectly, ignoring labels). */
    uint64_t max_place = 0, max_base = 0;
    for (size_t i = 0; i < ni; i++) {
        if (in[i].used_bytes > max_place)
            max_place = in[i].used_bytes;
        if (base[i].used_bytes > max_base)
            max_base = base[i].used_bytes;
    }
    printf("  fullest instance afterwards: %.1f%% (baseline: %.1f%%)\n",
           100.0 * (double)max_place / (double)(16 * GB),
           100.0 * (double)max_base / (double)(16 * GB));

    /* lru: M copies; find + touch of a random one vs find alone. */
    struct lru *lru;
    struct lru_node *nodes = calloc(nm, sizeof(*nodes));
    char(*keys)[64] = calloc(nm, sizeof(*keys));
    size_t *order = calloc(1000000, sizeof(*order));
    if (!nodes || !keys || !order || lru_create(&lru, next_random()) != 0)
        return 1;
    for (size_t m = 0; m < nm; m++) {
        snprintf(keys[m], sizeof(keys[m]), "model-%zu__isvc-%06zx", m % 10000000, (m * 2654435761u) % 0xffffff);
        nodes[m].key = keys[m];
        nodes[m].key_len = strlen(keys[m]);
        if (lru_insert(lru, &nodes[m], NOW - (int64_t)(nm - m)) != 0)
            return 1;
    }
    for (size_t k = 0; k < 1000000; k++)
        order[k] = next_random() % nm;
    double best_touch = 1e9, best_find = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (size_t k = 0; k < 1000000; k++) {
            struct lru_node *x = lru_find(lru, keys[order[k]], nodes[order[k]].key_len);
            sink += x != NULL;
        }
        double t1 = now_s();
        for (size_t k = 0; k < 1000000; k++) {
            struct lru_node *x = lru_find(lru, keys[order[k]], nodes[order[k]].key_len);
            lru_touch(lru, x, NOW + (int64_t)k);
        }
        double t2 = now_s();
        if (t1 - t0 < best_find)
            best_find = t1 - t0;
        if (t2 - t1 < best_touch)
            best_touch = t2 - t1;
    }
    printf("lru: %zu copies, 1,000,000 random ops (best of 3)\n", nm);
    printf("  find + touch: %.0f ns/op   find alone: %.0f ns/op   ratio %.2f\n", best_touch * 1e3,
           best_find * 1e3, best_touch / best_find);
    lru_free(lru);
    free(nodes);
    free(keys);
    free(order);
    free(il);
    free(in);
    free(base);
    free(ms);
    return sink == (size_t)-1;
}
