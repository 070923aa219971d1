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
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mm/election.h"
#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/opts.h"
#include "mm/place.h"
#include "mm/metrics.h"
#include "mm/probe.h"
#include "mm/reconcile.h"
#include "mm/records.h"
#include "mm/vmodels.h"

#ifndef MM_VERSION
#define MM_VERSION "unknown"
#endif

#define WHO "mm-controller"
#define MAX_WAIT_MS 86400000ULL
#define STATS_EVERY_S 60.

struct options {
    struct etcd_opts etcd;
    const char *identity, *service_name, *ns, *probe_listen;
    struct metrics_opts metrics;
    uint64_t lease_ttl_ms, failure_expiry_ms, replace_delay_ms, max_failures;
};

struct controller {
    struct options *o;
    struct ev_loop *loop;
    struct etcd_client *etcd;
    struct election *election;
    struct mirror *mirror;
    struct mesh *mesh;
    struct vmodels *vmodels;
    struct reconcile *rec;
    struct probe *probe;
    struct metrics *metrics; /* NULL: --metrics-listen off */
    struct metrics_server *metrics_server;
    struct place_config place;
    char id[KEYS_NAME_MAX + 1];
    bool synced, leading, stopping;
    int said; /* 0 nothing yet, 1 LEADING, 2 FOLLOWING */
    char said_leader[256];
    ev_signal sigterm, sigint;
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

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

static int parse(int argc, char **argv, struct options *o)
{
    etcd_opts_init(&o->etcd);
    o->identity = env_or("MM_CONTROLLER_ID", NULL);
    o->service_name = "modelmesh-serving";
    o->probe_listen = env_or("MM_PROBE_LISTEN", PROBE_DEFAULT_LISTEN);
    metrics_opts_init(&o->metrics);
    o->lease_ttl_ms = 10000;
    o->failure_expiry_ms = 15 * 60000;
    o->replace_delay_ms = 2000;
    o->max_failures = 3;
    struct mm_error err = {0};
    const char *ttl_env = getenv("MM_LEASE_TTL");
    if (ttl_env && ttl_env[0] &&
        opts_ms("MM_LEASE_TTL", ttl_env, 2000, 3600000, &o->lease_ttl_ms, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        return 2;
    }
    static const struct {
        const char *flag;
        uint64_t min, max;
        size_t offset;
    } durations[] = {
        {"--lease-ttl", 2000, 3600000, offsetof(struct options, lease_ttl_ms)},
        {"--failure-expiry", 1, MAX_WAIT_MS, offsetof(struct options, failure_expiry_ms)},
        {"--replace-delay", 1, MAX_WAIT_MS, offsetof(struct options, replace_delay_ms)},
    };
    static const struct {
        const char *flag;
        size_t offset;
    } strings[] = {
        {"--identity", offsetof(struct options, identity)},
        {"--service-name", offsetof(struct options, service_name)},
        {"--namespace", offsetof(struct options, ns)},
        {"--probe-listen", offsetof(struct options, probe_listen)},
        {"--metrics-listen", offsetof(struct options, metrics.listen)},
        {"--metrics-per-model", offsetof(struct options, metrics.per_model)},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        char flag[64];
        snprintf(flag, sizeof(flag), "%.*s", (int)nl, a);
        bool known = false;
        int rc = 0;
        if (strcmp(flag, "--log-level") == 0) {
            enum mm_log_level level;
            if (!val || mm_log_parse_level(val, &level) < 0) {
                fprintf(stderr, WHO ": --log-level: '%s' is not debug, info, warn or error\n",
                        val ? val : "");
                return 2;
            }
            mm_log_set_level(level);
            known = true;
        } else if (strcmp(flag, "--max-load-failures") == 0) {
            rc = opts_u64(flag, val, 1, 100, &o->max_failures, &err);
            known = true;
        }
        for (size_t k = 0; !known && k < sizeof(durations) / sizeof(durations[0]); k++) {
            if (strcmp(durations[k].flag, flag) != 0)
                continue;
            rc = opts_ms(flag, val, durations[k].min, durations[k].max,
                         (uint64_t *)((char *)o + durations[k].offset), &err);
            known = true;
        }
        if (!known) {
            rc = etcd_opts_flag(&o->etcd, a, nl, val, &err);
            known = rc > 0;
        }
        if (rc < 0) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            return 2;
        }
        for (size_t k = 0; !known && k < sizeof(strings) / sizeof(strings[0]); k++) {
            if (strcmp(strings[k].flag, flag) != 0)
                continue;
            if (!val) {
                fprintf(stderr, WHO ": %s needs a value\n", flag);
                return 2;
            }
            *(const char **)((char *)o + strings[k].offset) = val;
            known = true;
        }
        if (!known) {
            fprintf(stderr, WHO ": unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!eq)
            i++;
    }
    if (o->lease_ttl_ms % 1000 != 0) {
        fprintf(stderr, WHO ": --lease-ttl: '%" PRIu64 " ms' is not a whole number of seconds\n",
                o->lease_ttl_ms);
        return 2;
    }
    if (o->ns && keys_check_name("--namespace", o->ns, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        return 2;
    }
    if (keys_check_name("--service-name", o->service_name, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
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

static void stop_leading(struct controller *c)
{
    if (c->rec)
        log_stats(c, "leadership ends");
    reconcile_free(c->rec);
    c->rec = NULL;
    vmodels_free(c->vmodels);
    c->vmodels = NULL;
    mesh_free(c->mesh);
    c->mesh = NULL;
    ev_timer_stop(c->loop, &c->stats);
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
        .iid = c->id,
        .etcd = c->etcd,
        .mirror = c->mirror,
        .place = &c->place,
        .max_failures = (unsigned)o->max_failures,
        .replace_delay_ms = (unsigned)o->replace_delay_ms,
    };
    struct vmodels_config vc = {
        .cluster = o->etcd.cluster,
        .iid = c->id,
        .etcd = c->etcd,
        .mirror = c->mirror,
        .drive_delay_ms = (unsigned)o->replace_delay_ms,
    };
    struct reconcile_config rc = {
        .cluster = o->etcd.cluster,
        .ns = o->ns,
        .service_name = o->service_name,
        .identity = c->id,
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
    ev_timer_again(c->loop, &c->stats);
    mm_log(MM_LOG_INFO, WHO, "%s leads: reconciling %s%s", c->id,
           o->ns ? "namespace " : "every namespace", o->ns ? o->ns : "");
    return;
fail:
    /* nothing here fails but for memory or a bad config: give the lead to another */
    mm_log(MM_LOG_ERROR, WHO, "cannot lead: %s", err.msg);
    stop_leading(c);
    c->exit_code = 1;
    ev_break(c->loop, EVBREAK_ALL);
}

static void on_election(struct election *e, enum election_state state, void *arg)
{
    struct controller *c = arg;
    bool leading = state == ELECTION_LEADER;
    if (leading != c->leading)
        mm_log(MM_LOG_INFO, WHO, "%s: %s", c->id,
               leading ? "now the leader" : "not the leader any more");
    if (!leading && c->leading)
        stop_leading(c);
    c->leading = leading;
    c->was_leader |= leading;
    say(c, leading, election_leader(e));
    if (leading && c->synced && !c->rec && !c->stopping)
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
        if (!c->stopping)
            probe_set_not_ready(c->probe, NULL);
        if (c->leading && !c->rec && !c->stopping)
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
                strcmp(rec.leader, c->id) == 0;
    if (!ours || ev_now(loop) >= c->resign_deadline)
        ev_break(loop, EVBREAK_ALL);
}

static void on_signal_w(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct controller *c = w->data;
    if (c->stopping)
        return;
    c->stopping = true;
    probe_set_not_ready(c->probe, "shutting down");
    mm_log(MM_LOG_INFO, WHO, "signal %d: resigning and shutting down", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct controller c;
    int rc = parse(argc, argv, &o);
    struct mm_error err = {0};
    if (rc == 0 && etcd_opts_password(&o.etcd, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        rc = 2;
    }
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    const char *source = NULL;
    if (rc == 0 && instance_id_choose(o.identity, getenv("POD_NAME"), getenv("HOSTNAME"), host,
                                      c.id, sizeof(c.id), &source, &err) < 0) {
        fprintf(stderr, WHO ": --identity: %s\n", err.msg);
        rc = 2;
    }
    if (rc != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    c.o = &o;
    c.loop = EV_DEFAULT;
    ev_timer_init(&c.stats, on_stats, 0., STATS_EVERY_S);
    c.stats.data = &c;
    char prefix[KEYS_MAX], ekey[KEYS_MAX];
    struct mirror_config mcfg = {.state_cb = on_mirror, .state_arg = &c};
    struct probe_config pc = {.listen = o.probe_listen, .not_ready = "reading the registry"};
    int probe_port = 0, metrics_port = 0;
    if ((!probe_is_off(o.probe_listen) &&
         probe_new(c.loop, &pc, &c.probe, &probe_port, &err) < 0) ||
        metrics_start(&o.metrics, &c.metrics, &c.metrics_server, &metrics_port, &err) < 0 ||
        etcd_client_new(c.loop, &o.etcd.config, &c.etcd, &err) < 0 ||
        keys_prefix(prefix, sizeof(prefix), o.etcd.cluster, &err) < 0 ||
        keys_election(ekey, sizeof(ekey), o.etcd.cluster, &err) < 0 ||
        mirror_new(c.etcd, prefix, &mcfg, &c.mirror, &err) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        c.exit_code = 1;
    } else {
        if (c.probe) {
            printf("PROBES %d\n", probe_port);
            fflush(stdout);
        }
        if (c.metrics_server) {
            printf("METRICS %d\n", metrics_port);
            fflush(stdout);
        }
        mm_log(MM_LOG_INFO, WHO, "controller %s %s (id from %s), cluster %s, etcd %s", c.id,
               MM_VERSION, strcmp(source, "--instance-id") == 0 ? "--identity" : source,
               o.etcd.cluster, o.etcd.config.endpoints);
        ev_signal_init(&c.sigterm, on_signal_w, SIGTERM);
        ev_signal_init(&c.sigint, on_signal_w, SIGINT);
        c.sigterm.data = c.sigint.data = &c;
        ev_signal_start(c.loop, &c.sigterm);
        ev_signal_start(c.loop, &c.sigint);
        mirror_start(c.mirror);
        if (election_new(c.etcd, ekey, c.id, (int64_t)(o.lease_ttl_ms / 1000), on_election, &c,
                         &c.election, &err) < 0) {
            mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
            c.exit_code = 1;
        } else {
            ev_run(c.loop, 0);
        }
        ev_signal_stop(c.loop, &c.sigterm);
        ev_signal_stop(c.loop, &c.sigint);
    }
    stop_leading(&c);
    election_free(c.election); /* revokes the lease: a follower takes over at once */
    c.election = NULL;
    if (c.was_leader && c.synced) { /* until the mirror shows the key gone, at most 1 s */
        ev_timer_init(&c.resign, on_resign_check, 0.01, 0.01);
        c.resign.data = &c;
        c.resign_deadline = ev_now(c.loop) + 1.;
        snprintf(c.ekey, sizeof(c.ekey), "%s", ekey);
        ev_timer_start(c.loop, &c.resign);
        ev_run(c.loop, 0);
        ev_timer_stop(c.loop, &c.resign);
    }
    metrics_server_free(c.metrics_server);
    probe_free(c.probe);
    mirror_free(c.mirror);
    etcd_client_free(c.etcd);
    metrics_free(c.metrics); /* after every thread that records */
    ev_loop_destroy(c.loop);
    return c.exit_code;
}
