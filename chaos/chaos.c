/* mm-chaos - fault scenarios against a local mesh of real processes, under load, with the
 * invariants checked (scenario.h) and the figures written to CHAOS.md (report.h).
 *
 *   mm-chaos [--scenarios 1,3,4|all] [--short] [--report FILE] [--seed N] [--kill-every S]
 *            [--duration S] [--models N] [--pods N] [--capacity BYTES] [--mm-node PATH]
 *            [--mm-runtime PATH]
 *            [--mm-gateway PATH] [--mm-controller PATH] [--make-breast-cancer PATH]
 *            [--servers-dir DIR] [--runtimes-dir DIR]
 *
 * The programs default to the build tree's (meson passes their paths). Exit 0 only when every
 * scenario run had zero breaches (a skipped one says why and does not fail the run); 1 with a
 * breach; 2 when the world could not be brought up or the command line is wrong. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "report.h"
#include "scenario.h"
#include "verify.h"
#include "world.h"

#ifndef MM_CHAOS_NODE
#define MM_CHAOS_NODE "mm-node"
#endif
#ifndef MM_CHAOS_RUNTIME
#define MM_CHAOS_RUNTIME "mm-runtime"
#endif
#ifndef MM_CHAOS_GATEWAY
#define MM_CHAOS_GATEWAY "mm-gateway"
#endif
#ifndef MM_CHAOS_CONTROLLER
#define MM_CHAOS_CONTROLLER "mm-controller"
#endif
#ifndef MM_CHAOS_MAKE_BREAST_CANCER
#define MM_CHAOS_MAKE_BREAST_CANCER "make-breast-cancer"
#endif
#ifndef MM_CHAOS_SERVERS_DIR
#define MM_CHAOS_SERVERS_DIR "tests/servers"
#endif
#ifndef MM_CHAOS_RUNTIMES_DIR
#define MM_CHAOS_RUNTIMES_DIR "deploy/runtimes"
#endif
#ifndef MM_CHAOS_BUILD_TYPE
#define MM_CHAOS_BUILD_TYPE "unknown"
#endif

static void usage(FILE *f)
{
    fputs("usage: mm-chaos [--scenarios 1,3,4|all] [--short] [--report FILE] [--seed N]\n"
          "                [--kill-every S] [--duration S] [--models N] [--pods N]\n"
          "                [--capacity BYTES]\n"
          "                [--mm-node PATH] [--mm-runtime PATH] [--mm-gateway PATH]\n"
          "                [--mm-controller PATH] [--make-breast-cancer PATH]\n"
          "                [--servers-dir DIR] [--runtimes-dir DIR]\n"
          "Runs the chaos scenarios against a local mesh (3-member etcd, pods, controllers, a\n"
          "gateway, storage behind a fault proxy) under load; writes the report (default\n"
          "CHAOS.md); exits 0 only with zero breaches.\n"
          "  1 kill -9 a random pod every --kill-every s    5 a pod partitioned from etcd\n"
          "  2 a node SIGSTOPped past its lease TTL          6 storage down during loads\n"
          "  3 etcd leader killed; no quorum, back           7 rolling restart (SIGTERM)\n"
          "  4 etcd fully down                               8 controller leader killed\n",
          f);
}

/* A number in [min, max] from text, or -1. */
static long number(const char *flag, const char *text, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf(stderr, "mm-chaos: %s %s: want a whole number in %ld..%ld\n", flag, text, min, max);
        return -1;
    }
    return v;
}

/* "1,3,4" or "all" into ids (in the order given, no repeats). The count, or -1. */
static int parse_scenarios(const char *text, int *ids)
{
    if (strcmp(text, "all") == 0) {
        for (int i = 0; i < SCENARIO_COUNT; i++)
            ids[i] = i + 1;
        return SCENARIO_COUNT;
    }
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end = NULL;
        long id = strtol(p, &end, 10);
        if (end == p || id < 1 || id > SCENARIO_COUNT || (*end && *end != ',')) {
            fprintf(stderr,
                    "mm-chaos: --scenarios %s: want ids 1..%d separated by commas, or "
                    "all\n",
                    text, SCENARIO_COUNT);
            return -1;
        }
        bool dup = false;
        for (int i = 0; i < n; i++)
            dup |= ids[i] == id;
        if (!dup)
            ids[n++] = (int)id;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        fprintf(stderr, "mm-chaos: --scenarios: none named\n");
    return n ? n : -1;
}

int main(int argc, char **argv)
{
    static struct world w; /* large: not on the stack */
    static struct scenario_result res[SCENARIO_COUNT];
    int ids[SCENARIO_COUNT];
    int n_ids = parse_scenarios("all", ids);
    const char *report = "CHAOS.md";
    struct scenario_options opt = {.seed = (uint32_t)time(NULL) ^ (uint32_t)getpid()};
    long models = 0, pods = 4;
    long long capacity = -1;
    struct world_config cfg = {
        .mm_node = MM_CHAOS_NODE,
        .mm_runtime = MM_CHAOS_RUNTIME,
        .mm_gateway = MM_CHAOS_GATEWAY,
        .mm_controller = MM_CHAOS_CONTROLLER,
        .make_breast_cancer = MM_CHAOS_MAKE_BREAST_CANCER,
        .servers_dir = MM_CHAOS_SERVERS_DIR,
        .runtimes_dir = MM_CHAOS_RUNTIMES_DIR,
        .etcd_members = 3,
        .n_controllers = 2,
        .netns_pod = -1,
        .lease_ttl = "3s",
        .scale_up_rpm = 60,
    };
    struct {
        const char *flag;
        const char **to;
    } paths[] = {
        {"--mm-node", &cfg.mm_node},
        {"--mm-runtime", &cfg.mm_runtime},
        {"--mm-gateway", &cfg.mm_gateway},
        {"--mm-controller", &cfg.mm_controller},
        {"--make-breast-cancer", &cfg.make_breast_cancer},
        {"--servers-dir", &cfg.servers_dir},
        {"--runtimes-dir", &cfg.runtimes_dir},
        {"--report", &report},
    };
    char command[1024] = "mm-chaos";
    for (int i = 1; i < argc; i++) {
        size_t len = strlen(command);
        snprintf(command + len, sizeof(command) - len, " %s", argv[i]);
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--short") == 0) {
            opt.short_run = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mm-chaos: %s: unknown, or its value is missing\n", a);
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        bool done = false;
        for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
            if (strcmp(a, paths[k].flag) == 0) {
                *paths[k].to = val;
                done = true;
            }
        }
        long n = 0;
        if (done)
            continue;
        if (strcmp(a, "--scenarios") == 0) {
            if ((n_ids = parse_scenarios(val, ids)) < 0)
                return 2;
        } else if (strcmp(a, "--seed") == 0) {
            if ((n = number(a, val, 0, 4294967295L)) < 0)
                return 2;
            opt.seed = (uint32_t)n;
        } else if (strcmp(a, "--kill-every") == 0) {
            if ((opt.kill_every_s = number(a, val, 1, 3600)) < 0)
                return 2;
        } else if (strcmp(a, "--duration") == 0) {
            if ((opt.duration_s = number(a, val, 1, 86400)) < 0)
                return 2;
        } else if (strcmp(a, "--models") == 0) {
            if ((models = number(a, val, 1, WORLD_MAX_MODELS / 2)) < 0)
                return 2;
        } else if (strcmp(a, "--capacity") == 0) {
            if ((capacity = number(a, val, 0, 1L << 40)) < 0)
                return 2;
        } else if (strcmp(a, "--pods") == 0) {
            if ((pods = number(a, val, 2, CLUSTER_MAX_PODS)) < 0)
                return 2;
        } else {
            fprintf(stderr, "mm-chaos: %s: unknown flag\n", a);
            usage(stderr);
            return 2;
        }
    }
    cfg.n_pods = (size_t)pods;
    cfg.n_multi = cfg.n_single = models ? (size_t)models : opt.short_run ? 10 : 30;
    /* 0: the world's (room for every copy on n_pods - 1 pods, and at least 3 MB: the
     * controller and the gateway judge a model of unknown size by 1 MB) */
    if (capacity < 0)
        capacity = 0;
    cfg.capacity_bytes = (uint64_t)capacity;

    /* The network-namespace pod, when a scenario wants it and we may make one. */
    char note[512] = "";
    bool wants_netns = false;
    for (int i = 0; i < n_ids; i++)
        wants_netns |= scenario_needs_netns(ids[i]);
    const char *no_netns = NULL;
    if (wants_netns && geteuid() != 0)
        no_netns = "not root: a network namespace needs CAP_NET_ADMIN";
    else if (wants_netns)
        cfg.netns_pod = (int)cfg.n_pods - 1;

    struct verify *v = NULL;
    if (verify_new(&w.cl, &v) < 0) {
        fprintf(stderr, "mm-chaos: out of memory\n");
        return 2;
    }
    cfg.verify = v;
    long start_bound = 300000;
    printf("mm-chaos: seed %u; bringing the world up (%zu pods, %zu + %zu models, %zu etcd "
           "members%s)\n",
           opt.seed, cfg.n_pods, cfg.n_multi, cfg.n_single, cfg.etcd_members,
           cfg.netns_pod >= 0 ? ", one pod in a network namespace" : "");
    fflush(stdout);
    long long t0 = harness_now_ms();
    int rc = world_start(&w, &cfg, start_bound);
    if (rc == -EPERM && cfg.netns_pod >= 0) {
        no_netns = "the network namespace could not be made (EPERM)";
        world_free(&w);
        memset(&w, 0, sizeof(w));
        cfg.netns_pod = -1;
        t0 = harness_now_ms();
        rc = world_start(&w, &cfg, start_bound);
    }
    if (rc < 0) {
        fprintf(stderr, "mm-chaos: the world did not come up: %s\n", strerror(-rc));
        verify_free(v);
        return 2;
    }
    long world_ms = (long)(harness_now_ms() - t0);
    printf("mm-chaos: the world is up (%.1f s)\n", (double)world_ms / 1000.0);
    if (no_netns)
        snprintf(note, sizeof(note), "Scenario 5 skipped: %s.", no_netns);

    struct report_run run = {
        .command = command,
        .build_type = MM_CHAOS_BUILD_TYPE,
        .seed = opt.seed,
        .short_run = opt.short_run,
        .n_pods = cfg.n_pods,
        .n_multi = cfg.n_multi,
        .n_single = cfg.n_single,
        .etcd_members = cfg.etcd_members,
        .lease_ttl = cfg.lease_ttl,
        .capacity_bytes = w.capacity,
        .world_start_ms = world_ms,
        .note = note[0] ? note : NULL,
    };
    size_t done = 0, breaches = 0;
    for (int i = 0; i < n_ids; i++) {
        struct scenario_result *r = &res[done];
        if (scenario_needs_netns(ids[i]) && no_netns) {
            memset(r, 0, sizeof(*r));
            r->id = ids[i];
            r->title = scenario_title(ids[i]);
            r->skipped = true;
            snprintf(r->why, sizeof(r->why), "%s", no_netns);
            printf("mm-chaos: scenario %d skipped: %s\n", ids[i], no_netns);
        } else {
            printf("mm-chaos: scenario %d: %s\n", ids[i], scenario_title(ids[i]));
            fflush(stdout);
            rc = scenario_run(ids[i], &w, v, &opt, r);
            if (rc < 0) {
                fprintf(stderr, "mm-chaos: scenario %d: %s\n", ids[i], strerror(-rc));
                breaches++;
            }
        }
        breaches += scenario_breaches(r);
        done++;
        report_save(report, &run, res, done); /* after each: a long run's figures so far */
    }
    report_summary(stdout, res, done);
    printf("mm-chaos: %zu breach%s; report in %s\n", breaches, breaches == 1 ? "" : "es", report);
    if (breaches)
        cluster_dump_logs(&w.cl, false);
    world_free(&w);
    verify_free(v);
    return breaches ? 1 : 0;
}
