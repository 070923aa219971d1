/* scenario.c - the chaos scenarios: traffic phases around one fault, then the invariants. */
#include "scenario.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>

#include "fault.h"
#include "mm/error.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "mm/keys.h"
#include "traffic.h"
#include "verify.h"
#include "world.h"

#define MAX_COPIES 1024
#define PRECONDITION_MS 60000L /* for a multi model's 2 Loaded copies, before a fault */
#define BACK_MS 30000L         /* for an instance to register again */
#define ROLL_EXIT_MS 30000L    /* a node's SIGTERM exit, in a rolling restart */
#define S4_STRICT_PHASE "fault: etcd down"

size_t scenario_breaches(const struct scenario_result *r)
{
    return r->traffic_breaches + r->registry_breaches;
}

struct scenario_desc;

struct run {
    struct world *w;
    struct verify *v;
    const struct scenario_options *opt;
    struct scenario_result *r;
    struct traffic *t;
    uint32_t rng;
    struct traffic_model models[WORLD_MAX_MODELS];
    struct cluster_copy *copies; /* MAX_COPIES, for counting Loaded copies */
    const struct scenario_desc *d;
    int controller_killed; /* scenario 8: started again after the after phase, or -1 */
};

static int64_t now_ms(const struct run *u)
{
    return u->t ? traffic_now_ms(u->t) : 0;
}

static void step(struct run *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(struct run *u, const char *fmt, ...)
{
    struct scenario_result *r = u->r;
    char text[SCENARIO_LINE - 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    printf("chaos: [%d] %7.1f s  %s\n", r->id, (double)now_ms(u) / 1000.0, text);
    fflush(stdout);
    if (r->n_steps < SCENARIO_MAX_STEPS)
        snprintf(r->steps[r->n_steps++], SCENARIO_LINE, "%.1f s: %s", (double)now_ms(u) / 1000.0,
                 text);
}

/* A breach found by the scenario itself (traffic, or a registry fact verify does not see). */
static void breach(struct run *u, bool traffic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void breach(struct run *u, bool traffic, const char *fmt, ...)
{
    struct scenario_result *r = u->r;
    char text[SCENARIO_LINE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    printf("chaos: [%d] BREACH %s\n", r->id, text);
    fflush(stdout);
    if (traffic)
        r->traffic_breaches++;
    else
        r->registry_breaches++;
    if (r->n_lines < SCENARIO_MAX_LINES)
        snprintf(r->lines[r->n_lines++], SCENARIO_LINE, "%s", text);
    else
        r->lines_dropped++;
}

static void run_for(struct run *u, long long ms)
{
    if (ms > 0)
        cluster_run(&u->w->cl, ms);
}

static uint32_t next_random(struct run *u)
{
    uint32_t x = u->rng; /* xorshift32: the seed decides the pods picked */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return u->rng = x;
}

/* A pod picked at random; not the network-namespace pod unless allowed. */
static size_t pick_pod(struct run *u, bool netns_too)
{
    size_t n = u->w->cfg.n_pods;
    for (int tries = 0; tries < 64; tries++) {
        size_t p = next_random(u) % n;
        if (netns_too || (int)p != u->w->cfg.netns_pod)
            return p;
    }
    return u->w->cfg.netns_pod == 0 ? 1 : 0;
}

static long pick(long configured, long full, long shorter, bool short_run)
{
    return configured > 0 ? configured : short_run ? shorter : full;
}

static long fault_s(const struct run *u, long full, long shorter)
{
    return pick(u->opt->duration_s, full, shorter, u->opt->short_run);
}

/* ---- the registry as the scenarios look at it ---- */

/* The active model id of every model's InferenceService (isvc-status/chaos/<name>), "" when it
 * has none. 0 or -errno. */
static int active_ids(struct run *u, char (*ids)[KEYS_NAME_MAX + 1])
{
    struct world *w = u->w;
    struct mm_error err = {0};
    char prefix[KEYS_MAX];
    int rc = keys_prefix(prefix, sizeof(prefix), w->cl.name, &err);
    if (rc < 0)
        return rc;
    size_t plen = strlen(prefix);
    snprintf(prefix + plen, sizeof(prefix) - plen, "isvc-status/%s/", WORLD_NAMESPACE);
    plen = strlen(prefix);
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    struct etcd_response *resp = NULL;
    rc = etcd_sync_range(w->cl.etcd_client, &req, &resp, &err);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < w->n_models; k++)
        ids[k][0] = '\0';
    for (size_t i = 0; i < resp->op.n_kvs; i++) {
        const struct etcd_kv *kv = &resp->op.kvs[i];
        if (kv->key_len <= plen)
            continue;
        const char *name = kv->key + plen;
        size_t nlen = kv->key_len - plen;
        for (size_t k = 0; k < w->n_models; k++) {
            if (strlen(w->models[k].name) != nlen || memcmp(w->models[k].name, name, nlen) != 0)
                continue;
            struct isvc_status st;
            if (isvc_status_decode(kv->value, kv->value_len, &st, &err) == 0)
                snprintf(ids[k], KEYS_NAME_MAX + 1, "%s", st.active_model_id);
        }
    }
    etcd_response_free(resp);
    return 0;
}

/* The isvc-status of model k. 1 and *st, 0 absent, -errno. */
static int isvc_status_of(struct run *u, size_t k, struct isvc_status *st)
{
    struct world *w = u->w;
    struct mm_error err = {0};
    char key[KEYS_MAX];
    int rc =
        keys_isvc_status(key, sizeof(key), w->cl.name, WORLD_NAMESPACE, w->models[k].name, &err);
    if (rc < 0)
        return rc;
    struct etcd_range_req req = {.key = key};
    struct etcd_response *resp = NULL;
    rc = etcd_sync_range(w->cl.etcd_client, &req, &resp, &err);
    if (rc < 0)
        return rc;
    rc = 0;
    if (resp->op.n_kvs == 1 &&
        isvc_status_decode(resp->op.kvs[0].value, resp->op.kvs[0].value_len, st, &err) == 0)
        rc = 1;
    etcd_response_free(resp);
    return rc;
}

/* How many multi models have fewer than 2 Loaded copies now (named in *first), or -errno. */
static int multi_short(struct run *u, char *first, size_t size)
{
    struct world *w = u->w;
    static char ids[WORLD_MAX_MODELS][KEYS_NAME_MAX + 1];
    int rc = active_ids(u, ids);
    if (rc < 0)
        return rc;
    int n = cluster_copies(&w->cl, NULL, u->copies, MAX_COPIES);
    if (n < 0)
        return n;
    if (n > MAX_COPIES)
        n = MAX_COPIES;
    int missing = 0;
    first[0] = '\0';
    for (size_t k = 0; k < w->n_models; k++) {
        if (!w->models[k].multi)
            continue;
        int loaded = 0;
        for (int i = 0; i < n && ids[k][0]; i++)
            if (u->copies[i].rec.state == COPY_LOADED && strcmp(u->copies[i].model, ids[k]) == 0)
                loaded++;
        if (loaded < 2) {
            if (missing++ == 0)
                snprintf(first, size, "%s (%d Loaded)", w->models[k].name, loaded);
        }
    }
    return missing;
}

/* Wait (bounded) until every multi model has 2+ Loaded copies: what scenarios 1, 2 and 7 claim
 * about them before a fault. A breach when it does not come: the rate no longer keeps them. */
static void wait_multi_copies(struct run *u, long timeout_ms, const char *before)
{
    int64_t t0 = now_ms(u);
    char first[160] = "";
    int missing = -1;
    while (now_ms(u) - t0 < timeout_ms) {
        missing = multi_short(u, first, sizeof(first));
        if (missing == 0) {
            step(u, "every model kept at 2+ copies has 2 Loaded (waited %.1f s) before %s",
                 (double)(now_ms(u) - t0) / 1000.0, before);
            return;
        }
        run_for(u, 500);
    }
    if (missing < 0)
        breach(u, false, "before %s: the copies could not be read (%s)", before,
               strerror(-missing));
    else
        breach(u, false,
               "before %s: %d model(s) kept at 2+ copies by their rate had fewer than 2 Loaded "
               "copies after %ld s, e.g. %s",
               before, missing, timeout_ms / 1000, first);
}

/* ---- the faults: each scenario's own steps ---- */

static void fault_failed(struct run *u, const char *what, int rc)
{
    breach(u, false, "%s failed: %s", what, strerror(rc < 0 ? -rc : rc));
}

/* One fault step done: a step "<what>: <ok, or why not>", and a breach naming fn when rc < 0.
 * Returns rc. */
static int did(struct run *u, int rc, const char *fn, const char *ok, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int did(struct run *u, int rc, const char *fn, const char *ok, const char *fmt, ...)
{
    char what[SCENARIO_LINE - 48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    step(u, "%s: %s", what, rc ? strerror(-rc) : ok);
    if (rc < 0)
        fault_failed(u, fn, rc);
    return rc;
}

/* Pod p cut off from etcd (its node frozen, or partitioned) for hold_ms: its instance record
 * must be gone by then, its lease expired. held: " frozen" or "". */
static void expect_record_gone(struct run *u, size_t p, long hold_ms, const char *held,
                               const char *as)
{
    struct instance_record rec;
    int present = cluster_instance(&u->w->cl, u->w->cl.pods[p].iid, &rec, NULL);
    step(u, "its instance record after %ld s%s: %s", hold_ms / 1000, held,
         present == 1   ? "still there"
         : present == 0 ? "gone (lease expired)"
                        : strerror(-present));
    if (present == 1)
        breach(u, false, "pod %zu %s %ld s: its instance record outlived its lease TTL", p, as,
               hold_ms / 1000);
}

/* Pod p's instance record back within BACK_MS of since ("SIGCONT", ...). */
static void expect_registered_again(struct run *u, size_t p, const char *since)
{
    int64_t t0 = now_ms(u);
    int rc;
    for (;;) {
        struct instance_record rec;
        rc = cluster_instance(&u->w->cl, u->w->cl.pods[p].iid, &rec, NULL);
        if (rc == 1 || now_ms(u) - t0 >= BACK_MS)
            break;
        run_for(u, 250);
    }
    step(u, "its instance registered again: %s", rc == 1 ? "yes" : "no");
    if (rc != 1)
        breach(u, false, "pod %zu did not register again within %ld s of %s", p, BACK_MS / 1000,
               since);
}

static void s1_kills(struct run *u)
{
    long every = pick(u->opt->kill_every_s, 20, 12, u->opt->short_run) * 1000;
    long total = fault_s(u, 180, 24) * 1000; /* short: 2 kills */
    int64_t end = now_ms(u) + total;
    int kills = 0;
    int64_t worst = -1;
    for (;;) {
        if (kills > 0)
            wait_multi_copies(u, PRECONDITION_MS, "the next kill");
        int64_t at = now_ms(u);
        size_t p = pick_pod(u, true);
        if (did(u, fault_pod_kill(u->w, p), "fault_pod_kill", "done", "kill -9 pod %zu (%s)", p,
                u->w->cl.pods[p].iid) < 0)
            return;
        kills++;
        run_for(u, 2000); /* down as a crashed pod is until its restart */
        int64_t s0 = now_ms(u);
        int rc = fault_pod_start(u->w, p);
        if (did(u, rc, "fault_pod_start", "LISTENING", "pod %zu started again (%.1f s)", p,
                (double)(now_ms(u) - s0) / 1000.0) < 0)
            return;
        if (at + every >= end)
            break; /* the last: the fault ends with the pod back */
        /* every model answered right again since the kill: this kill's recovery */
        int64_t served = -1;
        while (now_ms(u) < at + every) {
            if (served < 0 && (served = traffic_all_served_since(u->t, at)) >= 0) {
                step(u, "every model answered right again %.1f s after the kill",
                     (double)(served - at) / 1000.0);
                if (served - at > worst)
                    worst = served - at;
            }
            run_for(u, served < 0 ? 100 : at + every - now_ms(u));
        }
        if (served < 0)
            step(u, "some model had no right answer in the %ld s since the kill", every / 1000);
    }
    step(u, "%d kills in %.0f s; the slowest recovery between them %.1f s", kills,
         (double)total / 1000.0, (double)worst / 1000.0);
}

static void s2_freeze(struct run *u)
{
    size_t p = pick_pod(u, false);
    long hold = fault_s(u, 12, 8) * 1000;
    if (did(u, fault_node_freeze(u->w, p), "fault_node_freeze", "frozen",
            "SIGSTOP the node of pod %zu (%s) for %ld s (lease TTL %s)", p, u->w->cl.pods[p].iid,
            hold / 1000, u->w->cfg.lease_ttl ? u->w->cfg.lease_ttl : "3s") < 0)
        return;
    run_for(u, hold);
    expect_record_gone(u, p, hold, " frozen", "frozen");
    did(u, fault_node_thaw(u->w, p), "fault_node_thaw", "resumed", "SIGCONT the node");
    expect_registered_again(u, p, "SIGCONT");
}

static void s3_etcd(struct run *u)
{
    struct world *w = u->w;
    size_t members = w->cfg.etcd_members ? w->cfg.etcd_members : 1;
    if (members < 3) {
        breach(u, false, "the world has %zu etcd member(s), not 3", members);
        return;
    }
    int leader = fault_etcd_leader(w);
    step(u, "etcd leader: member %d", leader);
    if (leader < 0) {
        breach(u, false, "no etcd member answers with a leader");
        return;
    }
    if (did(u, fault_etcd_kill(w, (size_t)leader), "fault_etcd_kill", "done",
            "kill -9 the etcd leader (member %d)", leader) < 0)
        return;
    run_for(u, fault_s(u, 10, 5) * 1000);
    step(u, "etcd leader now: member %d", fault_etcd_leader(w));
    if (did(u, fault_etcd_start(w, (size_t)leader, true), "fault_etcd_start", "healthy",
            "member %d started again", leader) < 0)
        return;
    run_for(u, 3000);
    /* No quorum: the member that leads now and one other. */
    int a = fault_etcd_leader(w);
    if (a < 0)
        a = 0;
    int b = (a + 1) % 3;
    long down = fault_s(u, 30, 10) * 1000; /* short: still 3 lease TTLs */
    int rc = fault_etcd_kill(w, (size_t)a);
    int rc2 = fault_etcd_kill(w, (size_t)b);
    did(u, rc ? rc : rc2, "fault_etcd_kill", "done",
        "kill -9 members %d (the leader) and %d: no quorum for %ld s", a, b, down / 1000);
    run_for(u, down);
    rc = fault_etcd_start(w, (size_t)a, false);
    rc2 = fault_etcd_start(w, (size_t)b, true);
    did(u, rc ? rc : rc2, "fault_etcd_start", "healthy", "members %d and %d started again", a, b);
}

static void s4_etcd_down(struct run *u)
{
    struct world *w = u->w;
    size_t members = w->cfg.etcd_members ? w->cfg.etcd_members : 1;
    long down = fault_s(u, 30, 12) * 1000;
    /* Every model is Loaded: while nothing else happens, none may fail (the strict phase). */
    traffic_phase(u->t, S4_STRICT_PHASE);
    for (size_t k = 0; k < members; k++) {
        int rc = fault_etcd_kill(w, k);
        if (rc < 0)
            fault_failed(u, "fault_etcd_kill", rc);
    }
    step(u, "kill -9 every etcd member (%zu) for %ld s", members, down / 1000);
    run_for(u, down / 2);
    /* New loads: the models of a pod killed now must be placed again once etcd is back. */
    traffic_phase(u->t, "fault: etcd down, pod killed");
    size_t p = pick_pod(u, false);
    did(u, fault_pod_kill(w, p), "fault_pod_kill", "done",
        "kill -9 pod %zu (%s) while etcd is down", p, w->cl.pods[p].iid);
    run_for(u, down - down / 2);
    for (size_t k = 0; k < members; k++) {
        int rc = fault_etcd_start(w, k, k + 1 == members);
        if (rc < 0)
            fault_failed(u, "fault_etcd_start", rc);
    }
    step(u, "every etcd member started again");
    int64_t s0 = now_ms(u);
    int rc = fault_pod_start(w, p);
    did(u, rc, "fault_pod_start", "LISTENING", "pod %zu started again (%.1f s)", p,
        (double)(now_ms(u) - s0) / 1000.0);
}

static void s5_partition(struct run *u)
{
    struct world *w = u->w;
    size_t p = (size_t)w->cfg.netns_pod;
    long hold = fault_s(u, 20, 10) * 1000;
    if (did(u, fault_partition(w, true), "fault_partition on", "done",
            "partition pod %zu (%s, in namespace %s) from etcd for %ld s", p, w->cl.pods[p].iid,
            w->ns.name, hold / 1000) < 0)
        return;
    run_for(u, hold);
    expect_record_gone(u, p, hold, "", "partitioned");
    did(u, fault_partition(w, false), "fault_partition off", "done", "partition off");
    expect_registered_again(u, p, "the partition's end");
}

/* Models to update: n of the given class, picked at random, distinct. */
static size_t pick_models(struct run *u, bool multi, size_t *out, size_t n)
{
    size_t got = 0;
    for (int tries = 0; tries < 1000 && got < n; tries++) {
        size_t k = next_random(u) % u->w->n_models;
        if (u->w->models[k].multi != multi)
            continue;
        bool dup = false;
        for (size_t i = 0; i < got; i++)
            dup |= out[i] == k;
        if (!dup)
            out[got++] = k;
    }
    return got;
}

/* Models ks[0, n) applied again at a new storage path, each a step. */
static void update_models(struct run *u, const size_t *ks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = world_update_model(u->w, ks[i]);
        did(u, rc, "world_update_model", "applied",
            "%s updated to a new storage path (generation %d)", u->w->models[ks[i]].name,
            u->w->models[ks[i]].generation);
    }
}

static void s6_storage(struct run *u)
{
    struct world *w = u->w;
    long hold = fault_s(u, 30, 12) * 1000;
    size_t ks[4];
    size_t n = pick_models(u, false, ks, u->opt->short_run ? 2 : 3);
    n += pick_models(u, true, ks + n, 1);
    if (did(u, fault_storage(w, true), "fault_storage down", "done",
            "storage down (every request to it reset) for %ld s", hold / 1000) < 0)
        return;
    update_models(u, ks, n);
    /* Their loads must fail, saying why, while storage is down. */
    bool seen[4] = {false};
    int64_t t0 = now_ms(u);
    while (now_ms(u) - t0 < hold) {
        for (size_t i = 0; i < n; i++) {
            struct isvc_status st;
            if (seen[i] || isvc_status_of(u, ks[i], &st) != 1 || !st.failure.message[0])
                continue;
            seen[i] = true;
            step(u, "%s: load failed: %.150s", w->models[ks[i]].name, st.failure.message);
        }
        run_for(u, 500);
    }
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            breach(u, false,
                   "%s: no load failure reported (isvc-status lastFailureInfo) in %ld s of "
                   "storage down",
                   w->models[ks[i]].name, hold / 1000);
    did(u, fault_storage(w, false), "fault_storage up", "done", "storage back");
}

/* One step of a rolling restart: fault_pod_roll's, with the loop running while the node drains
 * (its models moved away, unloaded, deregistered: seconds the load must keep flowing through). */
static void roll_one(struct run *u, size_t p)
{
    struct world *w = u->w;
    int64_t s0 = now_ms(u);
    int rc = cluster_node_signal(&w->cl, p, SIGTERM);
    if (rc < 0) {
        fault_failed(u, "SIGTERM to the node", rc);
        return;
    }
    int status = -1;
    while ((status = cluster_node_wait(&w->cl, p, 0)) == -1 && now_ms(u) - s0 < ROLL_EXIT_MS)
        run_for(u, 50);
    int64_t exited = now_ms(u);
    if (status == -1)
        breach(u, false, "pod %zu's node did not exit within %ld s of SIGTERM (%s)", p,
               ROLL_EXIT_MS / 1000, w->cl.pods[p].node_log);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        breach(u, false, "pod %zu's node ended with %s %d at SIGTERM (%s)", p,
               WIFEXITED(status) ? "exit code" : "signal",
               WIFEXITED(status)     ? WEXITSTATUS(status)
               : WIFSIGNALED(status) ? WTERMSIG(status)
                                     : -1,
               w->cl.pods[p].node_log);
    cluster_pod_kill(&w->cl, p); /* the runtime goes with its pod (and the node, if still up) */
    rc = fault_pod_start(w, p);
    did(u, rc, "fault_pod_start", "LISTENING",
        "pod %zu (%s): SIGTERM, the node exited %s after %.1f s, the pod restarted (%.1f s)", p,
        w->cl.pods[p].iid,
        status == -1                                ? "(no: killed)"
        : WIFEXITED(status) && !WEXITSTATUS(status) ? "0"
                                                    : "uncleanly",
        (double)(exited - s0) / 1000.0, (double)(now_ms(u) - exited) / 1000.0);
}

static void s7_roll(struct run *u)
{
    for (size_t p = 0; p < u->w->cfg.n_pods; p++) {
        if (p > 0)
            wait_multi_copies(u, PRECONDITION_MS, "the next pod's restart");
        roll_one(u, p);
        run_for(u, 2000);
    }
}

static void s8_controller(struct run *u)
{
    struct world *w = u->w;
    size_t ks[4];
    size_t n = pick_models(u, false, ks, 2);
    n += pick_models(u, true, ks + n, 1);
    /* The leader is stopped first, so that the updates land while it cannot act on them (a
     * leader that runs sets them within ~100 ms, before any kill could come): the transitions
     * are then left to the next leader, once the stopped one's lease expires. */
    int frozen = cluster_controller_leader(&w->cl);
    if (frozen >= 0 && w->cl.controllers[frozen].pid > 0 &&
        harness_freeze(w->cl.controllers[frozen].pid) == 0)
        step(u, "the controller leader ctl%d stopped (SIGSTOP) before the updates", frozen);
    else
        step(u, "the controller leader could not be stopped first (%d): updating anyway", frozen);
    update_models(u, ks, n);
    size_t open = 0; /* updates the leader had not seen through yet at the kill */
    for (size_t i = 0; i < n; i++) {
        struct isvc_status st;
        if (isvc_status_of(u, ks[i], &st) != 1 || st.generation < w->models[ks[i]].generation ||
            st.transition != ISVC_UP_TO_DATE || !st.ready.status)
            open++;
    }
    size_t which = 0;
    int rc = fault_controller_leader_kill(w, &which);
    step(u,
         "at the kill, %zu of the %zu updated InferenceServices were not yet Ready at their "
         "new generation",
         open, n);
    step(u, "kill -9 the controller leader (ctl%zu): %s", which, rc ? strerror(-rc) : "done");
    if (frozen >= 0 && (rc < 0 || (size_t)frozen != which) && w->cl.controllers[frozen].pid > 0) {
        /* it lost the lead while stopped: it goes on as a follower */
        kill(w->cl.controllers[frozen].pid, SIGCONT);
        step(u, "ctl%d, stopped but no longer leading, resumed (SIGCONT)", frozen);
    }
    if (rc < 0) {
        fault_failed(u, "fault_controller_leader_kill", rc);
        return;
    }
    int64_t t0 = now_ms(u);
    int leader = -1;
    while (now_ms(u) - t0 < BACK_MS) {
        leader = cluster_controller_leader(&w->cl);
        if (leader >= 0 && (size_t)leader != which)
            break;
        run_for(u, 250);
    }
    if (leader >= 0 && (size_t)leader != which)
        step(u, "ctl%d leads (%.1f s after the kill)", leader, (double)(now_ms(u) - t0) / 1000.0);
    else
        breach(u, false, "no other controller led within %ld s of ctl%zu's kill", BACK_MS / 1000,
               which);
    /* Brought back once the world has converged (s8_after), so that the transition completes
     * under the new leader alone. */
    u->controller_killed = (int)which;
}

static void s8_after(struct run *u)
{
    if (u->controller_killed >= 0)
        did(u, fault_controller_start(u->w, (size_t)u->controller_killed), "fault_controller_start",
            "done", "ctl%d started again", u->controller_killed);
}

/* ---- the scenarios: each its fault and its rules; scenario_run is the rest ---- */

struct scenario_desc {
    const char *title;
    void (*fault)(struct run *u); /* the fault phase: done, bounded, the world left to recover */
    void (*after)(struct run *u); /* once the after phase is over, before the checks (or NULL) */
    bool needs_netns;             /* the world's network-namespace pod */
    /* The multi models' 2 Loaded copies are waited for before the fault (and between its
     * steps): then none of their calls may fail, outside the settle phase. */
    bool strict_multi;
    const char *strict_phase; /* a phase in which no call may fail at all, or NULL */
};

static const struct scenario_desc scenarios[SCENARIO_COUNT + 1] = {
    [1] = {"kill -9 a random pod every N seconds", s1_kills, .strict_multi = true},
    [2] = {"a node hung (SIGSTOP) past its lease TTL, then resumed", s2_freeze,
           .strict_multi = true},
    [3] = {"the etcd leader killed; then 2 of 3 members down (no quorum)", s3_etcd},
    [4] = {"etcd fully down; a pod killed meanwhile", s4_etcd_down,
           .strict_phase = S4_STRICT_PHASE},
    [5] = {"a pod partitioned from etcd (network namespace)", s5_partition, .needs_netns = true},
    [6] = {"storage down while models are updated", s6_storage},
    [7] = {"a rolling restart (SIGTERM) of every pod", s7_roll, .strict_multi = true},
    [8] = {"the controller leader killed during InferenceService updates", s8_controller, s8_after},
};

/* Scenario id's description; an empty one for an id out of range. */
static const struct scenario_desc *desc(int id)
{
    return &scenarios[id >= 1 && id <= SCENARIO_COUNT ? id : 0];
}

const char *scenario_title(int id)
{
    return desc(id)->title ? desc(id)->title : "";
}

bool scenario_needs_netns(int id)
{
    return desc(id)->needs_netns;
}

/* ---- the traffic's breaches ---- */

static bool is_multi(const struct run *u, const char *name)
{
    for (size_t k = 0; k < u->w->n_models; k++)
        if (strcmp(u->w->models[k].name, name) == 0)
            return u->w->models[k].multi;
    return false;
}

static const char *code_name(int code)
{
    static const char *const names[TRAFFIC_CODES] = {"OK",
                                                     "CANCELLED",
                                                     "UNKNOWN",
                                                     "INVALID_ARGUMENT",
                                                     "DEADLINE_EXCEEDED",
                                                     "NOT_FOUND",
                                                     "ALREADY_EXISTS",
                                                     "PERMISSION_DENIED",
                                                     "RESOURCE_EXHAUSTED",
                                                     "FAILED_PRECONDITION",
                                                     "ABORTED",
                                                     "OUT_OF_RANGE",
                                                     "UNIMPLEMENTED",
                                                     "INTERNAL",
                                                     "UNAVAILABLE",
                                                     "DATA_LOSS",
                                                     "UNAUTHENTICATED"};
    if (code == -1)
        return "wrong answer";
    if (code == -2)
        return "hung";
    return code >= 0 && code < TRAFFIC_CODES ? names[code] : "?";
}

bool scenario_failure_breaches(int id, const char *phase, bool multi, int code)
{
    if (code == -1 || code == -2)
        return true; /* a wrong answer, a hung call: always */
    if (code == GRPC_STATUS_OK)
        return false;
    const struct scenario_desc *d = desc(id);
    if (d->strict_phase && strcmp(phase, d->strict_phase) == 0)
        return true; /* e.g. etcd alone down: every model was Loaded and must keep serving */
    if (d->strict_multi && multi && strcmp(phase, "settle") != 0)
        return true; /* a model with 2+ Loaded copies fails nothing */
    return code != GRPC_STATUS_UNAVAILABLE && code != GRPC_STATUS_DEADLINE_EXCEEDED;
}

static void traffic_breaches(struct run *u)
{
    struct scenario_result *r = u->r;
    for (size_t i = 0; i < r->n_phases; i++) {
        const struct traffic_phase_report *p = &r->phases[i];
        for (int c = 0; c < TRAFFIC_CLASSES; c++) {
            const struct traffic_stats *s = &p->cls[c];
            const char *cls = c == TRAFFIC_MULTI ? "2+ copies" : "1 copy";
            if (s->wrong)
                breach(u, true, "phase %s, models of %s: %llu wrong answer(s)", p->label, cls,
                       (unsigned long long)s->wrong);
            if (s->hung)
                breach(u, true,
                       "phase %s, models of %s: %llu hung call(s) (the loop was held up to %lld "
                       "ms in this phase)",
                       p->label, cls, (unsigned long long)s->hung, (long long)p->held_ms);
            for (int code = 1; code < TRAFFIC_CODES; code++)
                if (s->by_code[code] &&
                    scenario_failure_breaches(r->id, p->label, c == TRAFFIC_MULTI, code))
                    breach(u, true, "phase %s, models of %s: %llu call(s) failed %s", p->label, cls,
                           (unsigned long long)s->by_code[code], code_name(code));
        }
        size_t shown = 0;
        for (size_t f = 0; f < p->n_failures && shown < 5; f++) {
            const struct traffic_failure *x = &p->failures[f];
            if (!scenario_failure_breaches(r->id, p->label, is_multi(u, x->model), (int)x->code))
                continue;
            shown++;
            if (r->n_lines < SCENARIO_MAX_LINES)
                snprintf(r->lines[r->n_lines++], SCENARIO_LINE, "  e.g. %.1f s %s: %s: %.150s",
                         (double)x->at_ms / 1000.0, x->model, code_name((int)x->code), x->details);
        }
    }
}

/* ---- one scenario ---- */

static int start_traffic(struct run *u)
{
    struct world *w = u->w;
    double multi_rate = u->opt->multi_rate > 0 ? u->opt->multi_rate : 3.0;
    double single_rate = u->opt->single_rate > 0 ? u->opt->single_rate : 0.5;
    for (size_t k = 0; k < w->n_models; k++) {
        u->models[k] = (struct traffic_model){
            .name = w->models[k].name,
            .expected = w->models[k].expected,
            .cls = w->models[k].multi ? TRAFFIC_MULTI : TRAFFIC_SINGLE,
            .rate = w->models[k].multi ? multi_rate : single_rate,
        };
    }
    u->r->served_floor_ms = (long)(1000.0 / single_rate);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", w->cl.gateway_port);
    struct traffic_config cfg = {
        .target = target,
        .models = u->models,
        .n_models = w->n_models,
        .row = w->row,
        .n_features = WORLD_FEATURES,
        .deadline_ms = 5000,
        .seed = u->opt->seed + (uint32_t)u->r->id,
    };
    int rc = traffic_new(w->cl.rpc, &cfg, &u->t);
    if (rc < 0)
        return rc;
    return traffic_start(u->t);
}

static long converge_bound_ms(const struct run *u)
{
    return u->opt->converge_ms > 0 ? u->opt->converge_ms : 60000;
}

/* verify_converged, with a line of our own should it not count what it found. */
static int converge(struct run *u, const char *when, int64_t *took)
{
    long bound = converge_bound_ms(u);
    size_t before = verify_breaches(u->v);
    int rc = verify_converged(u->v, WORLD_NAMESPACE, bound, took);
    if (rc != 0 && verify_breaches(u->v) == before)
        breach(u, false, "%s: %d InferenceService(s) of %s not converged within %ld s (%s)", when,
               rc, WORLD_NAMESPACE, bound / 1000, rc < 0 ? strerror(-rc) : "not Ready");
    return rc;
}

/* The before and after phases' length: short, one and a half of the slowest model's interval
 * (every model called at least once in each phase, a model kept at 2+ copies ~10 times). */
static long phase_ms(const struct run *u)
{
    return u->opt->short_run ? u->r->served_floor_ms * 3 / 2 : 15000;
}

/* Settle: the world converged and (strict_multi) the multi models at 2 Loaded copies; then the
 * before phase. Whether the world is ready for the fault. */
static bool before_fault(struct run *u)
{
    traffic_phase(u->t, "settle");
    int64_t took = -1;
    bool ready = converge(u, "before the fault", &took) == 0;
    if (ready && u->d->strict_multi)
        wait_multi_copies(u, PRECONDITION_MS, "the fault");
    traffic_phase(u->t, "before");
    run_for(u, phase_ms(u));
    return ready;
}

/* The after phase: converged, and every model served right again, within the bound; then the
 * rest of the phase. */
static void after_fault(struct run *u)
{
    struct scenario_result *r = u->r;
    traffic_phase(u->t, "after");
    step(u, "fault over");
    int64_t t0 = now_ms(u), took = -1;
    r->checks[SCENARIO_CHECK_CONVERGED] = converge(u, "after the fault", &took);
    if (r->checks[SCENARIO_CHECK_CONVERGED] == 0) {
        r->converged_ms = t0 - r->fault_end_ms + took;
        step(u, "converged %.1f s after the fault", (double)r->converged_ms / 1000.0);
    }
    long bound = converge_bound_ms(u);
    while (now_ms(u) - r->fault_end_ms < bound) {
        int64_t s = traffic_all_served_since(u->t, r->fault_end_ms);
        if (s >= 0) {
            r->served_ms = s - r->fault_end_ms;
            break;
        }
        run_for(u, 200);
    }
    if (r->served_ms >= 0)
        step(u, "every model served right again %.1f s after the fault",
             (double)r->served_ms / 1000.0);
    else
        breach(u, false, "some model had no right answer within %ld s of the fault's end",
               bound / 1000);
    if (r->served_ms >= 0 && r->converged_ms >= 0)
        r->recovery_ms = r->served_ms > r->converged_ms ? r->served_ms : r->converged_ms;
    run_for(u, phase_ms(u) - (now_ms(u) - r->fault_end_ms));
}

static void run_checks(struct run *u)
{
    struct scenario_result *r = u->r;
    r->checks[SCENARIO_CHECK_REGISTRATIONS] = verify_registrations(u->v);
    r->checks[SCENARIO_CHECK_CAPACITY] = verify_capacity(u->v);
    r->checks[SCENARIO_CHECK_LEASES] = verify_leases(u->v);
    const char *paths[64];
    size_t n = world_logs(u->w, paths, 64);
    r->checks[SCENARIO_CHECK_PROCESSES] = verify_processes(u->v, paths, n);
    verify_counts(u->v, &r->counts);
    step(u, "checks: registrations %d, capacity %d, leases %d, processes %d breach(es)",
         r->checks[0], r->checks[1], r->checks[2], r->checks[3]);
}

/* The traffic's figures and breaches, and what verify found since it had v_breaches breaches
 * and v_lines lines. */
static void collect(struct run *u, size_t v_breaches, size_t v_lines)
{
    struct scenario_result *r = u->r;
    traffic_stop(u->t);
    r->n_phases = traffic_phases(u->t, r->phases, TRAFFIC_MAX_PHASES);
    traffic_breaches(u);
    traffic_free(u->t);
    u->t = NULL;
    r->registry_breaches += verify_breaches(u->v) - v_breaches;
    const char *const *vl = NULL;
    size_t n_lines = verify_lines(u->v, &vl);
    for (size_t i = v_lines; i < n_lines; i++) {
        if (r->n_lines < SCENARIO_MAX_LINES)
            snprintf(r->lines[r->n_lines++], SCENARIO_LINE, "%s", vl[i]);
        else
            r->lines_dropped++;
    }
}

int scenario_run(int id, struct world *w, struct verify *v, const struct scenario_options *opt,
                 struct scenario_result *out)
{
    if (id < 1 || id > SCENARIO_COUNT)
        return -EINVAL;
    const struct scenario_desc *d = desc(id);
    memset(out, 0, sizeof(*out));
    out->id = id;
    out->title = d->title;
    out->converged_ms = out->served_ms = out->recovery_ms = -1;
    if (d->needs_netns && w->cfg.netns_pod < 0) {
        out->skipped = true;
        snprintf(out->why, sizeof(out->why), "the world has no pod in a network namespace");
        return 0;
    }
    struct run u = {.w = w,
                    .v = v,
                    .opt = opt,
                    .r = out,
                    .d = d,
                    .rng = opt->seed * 2654435761u + 1,
                    .controller_killed = -1};
    if (u.rng == 0)
        u.rng = 1; /* xorshift stays at 0 */
    for (int i = 0; i < id; i++)
        next_random(&u);
    u.copies = calloc(MAX_COPIES, sizeof(*u.copies));
    if (!u.copies)
        return -ENOMEM;
    size_t v_breaches = verify_breaches(v);
    const char *const *vl = NULL;
    size_t v_lines = verify_lines(v, &vl);

    int rc = start_traffic(&u);
    if (rc < 0) {
        breach(&u, false, "the traffic did not start: %s", strerror(-rc));
        traffic_free(u.t);
        free(u.copies);
        return 1;
    }
    step(&u, "%s", d->title);
    if (before_fault(&u)) {
        traffic_phase(u.t, "fault");
        out->fault_start_ms = now_ms(&u);
        d->fault(&u);
        out->fault_end_ms = now_ms(&u);
        after_fault(&u);
        if (d->after)
            d->after(&u);
    } else {
        step(&u, "fault not done: the world had not converged");
    }
    run_checks(&u);
    collect(&u, v_breaches, v_lines);
    free(u.copies);
    return scenario_breaches(out) ? 1 : 0;
}
