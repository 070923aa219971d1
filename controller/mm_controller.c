/* mm_controller.c - the InferenceService controller: leader-elected on election/controller;
 * every controller mirrors /modelmesh/<cluster>/ (a follower's mirror is warm for a quick
 * takeover, and that is all it does); the leader embeds the mesh and vmodels (as mm-gateway
 * embeds the mesh: an id of its own, no instance record, so never a model's primary) and runs
 * reconcile.h over them. Prints "LEADING" and "FOLLOWING <leader>" lines on stdout as its role
 * changes. SIGTERM/SIGINT: resigns (the lease is revoked: a follower takes over at once), exit
 * 0. Exit 1 when etcd cannot be used at start, 2 on a usage error (docs/controller.md). */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/election.h"
#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/opts.h"
#include "mm/place.h"
#include "mm/metrics.h"
#include "mm/probe.h"
#include "mm/program.h"
#include "mm/reconcile.h"
#include "mm/records.h"
#include "mm/vmodels.h"

#ifndef MM_VERSION
#define MM_VERSION "unknown"
#endif

#define WHO "mm-controller"
#define MAX_WAIT_MS 86400000ULL
#define STATS_EVERY_S 60.
#define COUNT_DELAY_S 0.2 /* the model gauges are counted again at most this often */

struct options {
    struct etcd_opts etcd;
    const char *identity, *service_name, *ns, *probe_listen;
    struct metrics_opts metrics;
    uint64_t lease_ttl_ms, failure_expiry_ms, replace_delay_ms, max_failures;
};

struct controller {
    struct program p; /* the loop, the id, the probes, the metrics */
    struct options *o;
    struct etcd_client *etcd;
    struct election *election;
    struct mirror *mirror;
    struct mesh *mesh;
    struct vmodels *vmodels;
    struct reconcile *rec;
    struct metric *m_loaded, *m_failed; /* NULL: metrics off */
    struct mirror_sub *copies_sub;      /* marks the model gauges stale */
    ev_timer count;                     /* counts them again, while leading */
    char copies_prefix[KEYS_MAX];
    size_t copies_prefix_len;
    struct place_config place;
    bool synced, leading;
    int said; /* 0 nothing yet, 1 LEADING, 2 FOLLOWING */
    char said_leader[256];
    ev_timer stats;
    ev_timer resign;       /* at exit: waiting for the lease's revoke to delete the key */
    ev_tstamp resign_deadline;
    char ekey[KEYS_MAX];
    bool was_leader;
    uint64_t stats_logged; /* status writes at the last summary */
    int exit_code;
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: mm-controller [options]\n"
            "Reconciles InferenceServices (isvcs/ in etcd) into vmodels and models, and writes\n"
            "their status (isvc-status/). Run several: one leads, the others take over.\n"
            "\n"
            ETCD_OPTS_USAGE
            "  --identity ID                its name in the election and as the mesh's caller\n"
            "                               (env MM_CONTROLLER_ID; default POD_NAME, else\n"
            "                               HOSTNAME, else the host name)\n"
            "  --lease-ttl DURATION         election lease TTL, whole seconds, 2s..1h: a dead\n"
            "                               leader is replaced this long after (env "
            "MM_LEASE_TTL;\n"
            "                               default 10s)\n"
            "  --namespace NS               reconcile only this namespace (default all)\n"
            "  --service-name NAME          grpcUrl/restUrl host <NAME>.<namespace> (default\n"
            "                               modelmesh-serving)\n"
            "  --max-load-failures N        failed loads before a model is failed, 1..100\n"
            "                               (default 3; as the nodes')\n"
            "  --failure-expiry DURATION    a failed load is forgotten after (default 15m; as "
            "the\n"
            "                               nodes')\n"
            "  --replace-delay DURATION     transitions and re-placements the controller drives\n"
            "                               when no node has (default 2s)\n"
            PROBE_USAGE
            METRICS_USAGE
            "  --log-level debug|info|warn|error\n"
            "  -h, --help\n");
}

static int parse(int argc, char **argv, struct options *o)
{
    etcd_opts_init(&o->etcd);
    o->identity = program_env("MM_CONTROLLER_ID", NULL);
    o->service_name = "modelmesh-serving";
    o->probe_listen = program_env("MM_PROBE_LISTEN", PROBE_DEFAULT_LISTEN);
    metrics_opts_init(&o->metrics);
    o->lease_ttl_ms = 10000;
    o->failure_expiry_ms = 15 * 60000;
    o->replace_delay_ms = 2000;
    o->max_failures = 3;
    struct mm_error err = {0};
    static const struct program_duration durations[] = {
        {"--lease-ttl", "MM_LEASE_TTL", 2000, 3600000, offsetof(struct options, lease_ttl_ms)},
        {"--failure-expiry", NULL, 1, MAX_WAIT_MS, offsetof(struct options, failure_expiry_ms)},
        {"--replace-delay", NULL, 1, MAX_WAIT_MS, offsetof(struct options, replace_delay_ms)},
    };
    static const struct program_string strings[] = {
        {"--identity", offsetof(struct options, identity)},
        {"--service-name", offsetof(struct options, service_name)},
        {"--namespace", offsetof(struct options, ns)},
        {"--probe-listen", offsetof(struct options, probe_listen)},
        {"--metrics-listen", offsetof(struct options, metrics.listen)},
        {"--metrics-per-model", offsetof(struct options, metrics.per_model)},
    };
    if (program_durations_env(WHO, durations, PROGRAM_COUNT(durations), o) < 0)
        return 2;
    struct program_args a;
    program_args_init(&a, WHO, argc, argv, usage);
    int rc;
    while ((rc = program_args_next(&a)) > 0) {
        if (program_args_is(&a, "--max-load-failures")) {
            if (opts_u64("--max-load-failures", a.value, 1, 100, &o->max_failures, &err) < 0) {
                program_refuse(WHO, &err);
                return 2;
            }
            continue;
        }
        if ((rc = program_args_duration(&a, durations, PROGRAM_COUNT(durations), o)) == 0 &&
            (rc = etcd_opts_flag(&o->etcd, a.arg, a.flag_len, a.value, &err)) < 0)
            program_refuse(WHO, &err);
        if (rc == 0)
            rc = program_args_last(&a, strings, PROGRAM_COUNT(strings), o);
        if (rc < 0)
            return 2;
    }
    if (rc < 0)
        return 2;
    if (o->lease_ttl_ms % 1000 != 0) {
        fprintf(stderr, WHO ": --lease-ttl: '%" PRIu64 " ms' is not a whole number of seconds\n",
                o->lease_ttl_ms);
        return 2;
    }
    if ((o->ns && keys_check_name("--namespace", o->ns, &err) < 0) ||
        keys_check_name("--service-name", o->service_name, &err) < 0) {
        program_refuse(WHO, &err);
        return 2;
    }
    return 0;
}

static void say(struct controller *c, bool leading, const char *leader)
{
    int now = leading ? 1 : 2;
    if (c->said == now && (leading || strcmp(c->said_leader, leader) == 0))
        return;
    c->said = now;
    snprintf(c->said_leader, sizeof(c->said_leader), "%s", leader);
    if (leading)
        printf("LEADING\n");
    else
        printf("FOLLOWING %s\n", leader[0] ? leader : "-");
    fflush(stdout);
}

static void log_stats(struct controller *c, const char *when)
{
    if (!c->rec)
        return;
    struct reconcile_stats s;
    reconcile_get_stats(c->rec, &s);
    uint64_t n = 0;
    for (size_t i = 0; i < RECONCILE_LATENCY_BUCKETS; i++)
        n += s.latency[i];
    mm_log(MM_LOG_INFO, WHO,
           "%s: %" PRIu64 " events, %" PRIu64 " evaluations, %" PRIu64 " status writes (%" PRIu64
           " lost, %" PRIu64 " failed), %" PRIu64 " sets, %" PRIu64 " deletes (%" PRIu64
           " failed), %" PRIu64 " loads asked; status latency n=%" PRIu64 " p50<=%" PRIu64 " ms p99<=%" PRIu64
           " ms max %" PRIu64 " ms",
           when, s.events, s.evaluations, s.status_writes, s.writes_lost, s.write_errors, s.sets,
           s.deletes, s.op_errors, s.ensures, n, reconcile_latency_percentile(&s, 500),
           reconcile_latency_percentile(&s, 990), s.latency_max_ms);
    c->stats_logged = s.status_writes;
}

static void on_stats(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct controller *c = w->data;
    if (!c->rec)
        return;
    struct reconcile_stats s;
    reconcile_get_stats(c->rec, &s);
    if (s.status_writes != c->stats_logged)
        log_stats(c, "the last minute");
}

/* ---------------------------------------------------------------- the model gauges
 * ModelMesh's modelmesh_models_loaded_total (models with a Loaded copy) and
 * modelmesh_models_with_failure_total (models with a Failed copy: a failure recorded and not
 * yet expired), set by the leader from its mirror's copies/ (0 on a follower, so that a sum
 * over the controllers is the leader's figure). */

struct model_count {
    size_t prefix_len;
    const char *model; /* the model of the copies seen last (a mirror key's bytes) */
    size_t len;
    bool loaded, failed;
    int64_t n_loaded, n_failed;
};

static void count_flush(struct model_count *k)
{
    k->n_loaded += k->loaded;
    k->n_failed += k->failed;
    k->loaded = k->failed = false;
}

/* One copy record; a model's copies come one after the other (key order). */
static int count_copy(const struct mirror_entry *e, void *arg)
{
    struct model_count *k = arg;
    struct key_parts kp;
    if (keys_parse_relative(e->key + k->prefix_len, e->key_len - k->prefix_len, &kp) < 0 ||
        kp.kind != KEY_COPY)
        return 0;
    if (!k->model || kp.first_len != k->len || memcmp(kp.first, k->model, k->len) != 0) {
        count_flush(k);
        k->model = kp.first;
        k->len = kp.first_len;
    }
    struct copy_record rec;
    if (record_decode(RECORD_COPY, e->value, e->value_len, &rec, NULL) < 0)
        return 0;
    k->loaded |= rec.state == COPY_LOADED;
    k->failed |= rec.state == COPY_FAILED;
    return 0;
}

static void count_models(struct controller *c)
{
    struct model_count k = {.prefix_len = c->copies_prefix_len - strlen("copies/")};
    mirror_foreach_prefix(c->mirror, c->copies_prefix, c->copies_prefix_len, count_copy, &k);
    count_flush(&k);
    metric_set0(c->m_loaded, k.n_loaded);
    metric_set0(c->m_failed, k.n_failed);
}

static void on_count(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct controller *c = w->data;
    if (c->rec)
        count_models(c);
}

static void on_copy_event(const struct mirror_event *ev, void *arg)
{
    struct controller *c = arg;
    if (c->rec && !ev_is_active(&c->count)) {
        ev_timer_set(&c->count, COUNT_DELAY_S, 0.);
        ev_timer_start(c->p.loop, &c->count);
    }
}

/* The gauges' families and the subscription to copies/ (nothing with metrics off). */
static int count_init(struct controller *c, const char *prefix, struct mm_error *err)
{
    ev_init(&c->count, on_count);
    c->count.data = c;
    if (!c->p.metrics)
        return 0;
    struct metric_desc loaded = {.name = "modelmesh_models_loaded_total",
                                 .help = "Total number of models with at least one loaded copy",
                                 .type = METRIC_GAUGE},
                       failed = {.name = "modelmesh_models_with_failure_total",
                                 .help = "Total number of models with one or more recorded "
                                         "load failures",
                                 .type = METRIC_GAUGE};
    int rc;
    if ((rc = metrics_register(c->p.metrics, &loaded, &c->m_loaded, err)) < 0 ||
        (rc = metrics_register(c->p.metrics, &failed, &c->m_failed, err)) < 0)
        return rc;
    int n = snprintf(c->copies_prefix, sizeof(c->copies_prefix), "%scopies/", prefix);
    if (n < 0 || (size_t)n >= sizeof(c->copies_prefix))
        return mm_error_set(err, -ENAMETOOLONG, "the copies prefix is too long");
    c->copies_prefix_len = (size_t)n;
    if (mirror_subscribe(c->mirror, c->copies_prefix, c->copies_prefix_len, on_copy_event, c,
                         &c->copies_sub) < 0)
        return mm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static void stop_leading(struct controller *c)
{
    ev_timer_stop(c->p.loop, &c->count);
    metric_set0(c->m_loaded, 0);
    metric_set0(c->m_failed, 0);
    if (c->rec)
        log_stats(c, "leadership ends");
    reconcile_free(c->rec);
    c->rec = NULL;
    vmodels_free(c->vmodels);
    c->vmodels = NULL;
    mesh_free(c->mesh);
    c->mesh = NULL;
    ev_timer_stop(c->p.loop, &c->stats);
}

/* Leading with a synced mirror: the mesh, vmodels and reconcile over them. */
static void start_leading(struct controller *c)
{
    struct options *o = c->o;
    struct mm_error err = {0};
    place_config_init(&c->place);
    c->place.failure_expiry_ms = (int64_t)o->failure_expiry_ms;
    struct mesh_config mc = {
        .cluster = o->etcd.cluster,
        .iid = c->p.id,
        .etcd = c->etcd,
        .mirror = c->mirror,
        .place = &c->place,
        .max_failures = (unsigned)o->max_failures,
        .replace_delay_ms = (unsigned)o->replace_delay_ms,
    };
    struct vmodels_config vc = {
        .cluster = o->etcd.cluster,
        .iid = c->p.id,
        .etcd = c->etcd,
        .mirror = c->mirror,
        .drive_delay_ms = (unsigned)o->replace_delay_ms,
    };
    struct reconcile_config rc = {
        .cluster = o->etcd.cluster,
        .ns = o->ns,
        .service_name = o->service_name,
        .identity = c->p.id,
        .etcd = c->etcd,
        .mirror = c->mirror,
    };
    if (mesh_new(&mc, &c->mesh, &err) < 0)
        goto fail;
    vc.mesh = c->mesh;
    if (vmodels_new(&vc, &c->vmodels, &err) < 0)
        goto fail;
    rc.vmodels = c->vmodels;
    rc.mesh = c->mesh;
    if (reconcile_new(&rc, &c->rec, &err) < 0)
        goto fail;
    ev_timer_again(c->p.loop, &c->stats);
    count_models(c);
    mm_log(MM_LOG_INFO, WHO, "%s leads: reconciling %s%s", c->p.id,
           o->ns ? "namespace " : "every namespace", o->ns ? o->ns : "");
    return;
fail:
    /* nothing here fails but for memory or a bad config: give the lead to another */
    mm_log(MM_LOG_ERROR, WHO, "cannot lead: %s", err.msg);
    stop_leading(c);
    c->exit_code = 1;
    ev_break(c->p.loop, EVBREAK_ALL);
}

static void on_election(struct election *e, enum election_state state, void *arg)
{
    struct controller *c = arg;
    bool leading = state == ELECTION_LEADER;
    if (leading != c->leading)
        mm_log(MM_LOG_INFO, WHO, "%s: %s", c->p.id,
               leading ? "now the leader" : "not the leader any more");
    if (!leading && c->leading)
        stop_leading(c);
    c->leading = leading;
    c->was_leader |= leading;
    say(c, leading, election_leader(e));
    if (leading && c->synced && !c->rec && !c->p.stopping)
        start_leading(c);
}

static void on_mirror(struct mirror *mr, enum mirror_state state, const struct mm_error *why,
                      void *arg)
{
    struct controller *c = arg;
    if (why)
        mm_log(MM_LOG_WARN, WHO, "registry mirror: %s", why->msg);
    if (state == MIRROR_SYNCED && !c->synced) {
        c->synced = true;
        if (!c->p.stopping)
            probe_set_not_ready(c->p.probe, NULL);
        if (c->leading && !c->rec && !c->p.stopping)
            start_leading(c);
    }
}

static void on_resign_check(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct controller *c = w->data;
    const struct mirror_entry *e = mirror_get(c->mirror, c->ekey, strlen(c->ekey));
    struct election_record rec;
    struct mm_error err;
    bool ours = e && record_decode(RECORD_ELECTION, e->value, e->value_len, &rec, &err) == 0 &&
                strcmp(rec.leader, c->p.id) == 0;
    if (!ours || ev_now(loop) >= c->resign_deadline)
        ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct program *p, int signum, void *arg)
{
    mm_log(MM_LOG_INFO, WHO, "signal %d: resigning and shutting down", signum);
    ev_break(p->loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct controller c = {.p.who = WHO};
    int rc = parse(argc, argv, &o);
    if (rc == 0 && (program_check(&c.p, &o.etcd, &o.metrics) < 0 ||
                    program_choose_id(&c.p, o.identity, "--identity") < 0))
        rc = 2;
    if (rc != 0)
        return rc;
    program_start(&c.p);
    c.o = &o;
    ev_timer_init(&c.stats, on_stats, 0., STATS_EVERY_S);
    c.stats.data = &c;
    char prefix[KEYS_MAX], ekey[KEYS_MAX];
    struct mirror_config mcfg = {.state_cb = on_mirror, .state_arg = &c};
    struct mm_error err = {0};
    bool failed = program_open_probes(&c.p, o.probe_listen, "reading the registry", &err) < 0 ||
                  program_open_metrics(&c.p, &o.metrics, &o.etcd, &err) < 0;
    mcfg.metrics = c.p.metrics;
    if (failed || etcd_client_new(c.p.loop, &o.etcd.config, &c.etcd, &err) < 0 ||
        keys_prefix(prefix, sizeof(prefix), o.etcd.cluster, &err) < 0 ||
        keys_election(ekey, sizeof(ekey), o.etcd.cluster, &err) < 0 ||
        mirror_new(c.etcd, prefix, &mcfg, &c.mirror, &err) < 0 ||
        count_init(&c, prefix, &err) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        c.exit_code = 1;
    } else {
        program_announce(&c.p);
        mm_log(MM_LOG_INFO, WHO, "controller %s %s (id from %s), cluster %s, etcd %s", c.p.id,
               MM_VERSION, c.p.id_source, o.etcd.cluster, o.etcd.config.endpoints);
        mirror_start(c.mirror);
        if (election_new(c.etcd, ekey, c.p.id, (int64_t)(o.lease_ttl_ms / 1000), on_election, &c,
                         &c.election, &err) < 0) {
            mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
            c.exit_code = 1;
        } else {
            program_run(&c.p, on_stop, &c);
        }
    }
    stop_leading(&c);
    election_free(c.election); /* revokes the lease: a follower takes over at once */
    c.election = NULL;
    if (c.was_leader && c.synced) { /* until the mirror shows the key gone, at most 1 s */
        ev_timer_init(&c.resign, on_resign_check, 0.01, 0.01);
        c.resign.data = &c;
        c.resign_deadline = ev_now(c.p.loop) + 1.;
        snprintf(c.ekey, sizeof(c.ekey), "%s", ekey);
        ev_timer_start(c.p.loop, &c.resign);
        ev_run(c.p.loop, 0);
        ev_timer_stop(c.p.loop, &c.resign);
    }
    program_close(&c.p);
    ev_timer_stop(c.p.loop, &c.count);
    mirror_unsubscribe(c.copies_sub);
    mirror_free(c.mirror);
    etcd_client_free(c.etcd);
    program_free(&c.p);
    return c.exit_code;
}
