/* mm_gateway.c - the mesh's routing without a runtime: a front door that holds no models and
 * registers no instance. It mirrors /modelmesh/<cluster>/, routes KServe V2 inference to the
 * nodes' internal ports (table.h, route.h), places models that no node holds (mesh.h) and
 * serves the model API (model_api.h), all on --listen; once it serves it prints
 * "LISTENING <port>" on stdout. SIGTERM/SIGINT: the port is shut down (calls in flight are
 * answered), exit 0. Exit 1 when the port cannot be bound or etcd cannot be mirrored, 2 on a
 * usage error. */
#include <bsd/string.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/model_api.h"
#include "mm/opts.h"
#include "mm/place.h"
#include "mm/metrics.h"
#include "mm/probe.h"
#include "mm/rest.h"
#include "mm/route.h"
#include "mm/rpc.h"
#include "mm/table.h"
#include "mm/tls.h"

#ifndef MM_VERSION
#define MM_VERSION "unknown"
#endif

#define WHO "mm-gateway"
#define MAX_RPC_MS 3600000ULL

struct options {
    struct etcd_opts etcd;
    const char *gateway_id, *listen, *probe_listen, *rest_listen;
    struct metrics_opts metrics;
    struct rpc_server_config rpc;
    unsigned max_parked;
    struct tls_opts tls;
};

struct gateway {
    struct options *o;
    struct ev_loop *loop;
    struct etcd_client *etcd;
    struct rpc_context *rpc;
    struct rpc_server *server;
    int port;
    struct mirror *mirror;
    struct mesh *mesh;
    struct table *table;
    struct route *route;
    struct model_api *api;
    struct probe *probe;
    struct tls_watch *tls;      /* --tls-cert/--tls-key (+ --tls-client-ca); NULL: plaintext */
    struct tls_watch *peer_tls; /* --internal-tls: forwards to nodes verified with --tls-ca */
    struct rest *rest;
    struct metrics *metrics; /* NULL: --metrics-listen off */
    struct metrics_server *metrics_server;
    struct place_config place;
    char id[KEYS_NAME_MAX + 1];
    bool serving, server_down, stopping;
    ev_signal sigterm, sigint;
    ev_timer hard_stop;
    int exit_code;
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: mm-gateway [options]\n"
            "Routes KServe V2 inference to the mesh's nodes, without a runtime of its own,\n"
            "and serves the model API (mmesh.ModelMesh).\n"
            "\n"
            ETCD_OPTS_USAGE
            "  --gateway-id ID              its name in logs and placements (env "
            "MM_GATEWAY_ID;\n"
            "                               default POD_NAME, else HOSTNAME, else the host "
            "name)\n"
            "  --listen ADDR                inference and the model API; port 0 picks one\n"
            "                               (env MM_LISTEN; default 0.0.0.0:8033)\n"
            "  --max-connections N          connections open at once (default 3/4 of the\n"
            "                               open-file limit, at most 65536)\n"
            "  --max-streams N              concurrent calls per connection, 1..100000 "
            "(default 100)\n"
            "  --rpc-memory BYTES           gRPC buffers of all connections, 1Mi..1Ti "
            "(default 512Mi)\n"
            "  --message-timeout-ms N       time for a request message to arrive (default "
            "30000)\n"
            "  --connection-idle-ms N       a connection without calls this long is closed\n"
            "                               (default 120000)\n"
            "  --max-parked N               requests waiting for models to load, at most "
            "(default\n"
            "                               10000); more are refused UNAVAILABLE\n"
            PROBE_USAGE
            TLS_OPTS_USAGE
            REST_USAGE
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
    tls_opts_init(&o->tls);
    o->gateway_id = env_or("MM_GATEWAY_ID", NULL);
    o->listen = env_or("MM_LISTEN", "0.0.0.0:8033");
    o->probe_listen = env_or("MM_PROBE_LISTEN", PROBE_DEFAULT_LISTEN);
    o->rest_listen = env_or("MM_REST_LISTEN", REST_DEFAULT_LISTEN);
    metrics_opts_init(&o->metrics);
    static const struct {
        const char *flag;
        size_t offset;
    } strings[] = {
        {"--gateway-id", offsetof(struct options, gateway_id)},
        {"--listen", offsetof(struct options, listen)},
        {"--probe-listen", offsetof(struct options, probe_listen)},
        {"--rest-listen", offsetof(struct options, rest_listen)},
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
        struct mm_error err = {0};
        uint64_t v = 0;
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
        } else if (strcmp(flag, "--max-connections") == 0) {
            rc = opts_u64(flag, val, 1, 10000000, &v, &err);
            o->rpc.max_connections = (size_t)v;
            known = true;
        } else if (strcmp(flag, "--max-streams") == 0) {
            rc = opts_u64(flag, val, 1, 100000, &v, &err);
            o->rpc.max_streams = (unsigned)v;
            known = true;
        } else if (strcmp(flag, "--rpc-memory") == 0) {
            rc = opts_bytes(flag, val, 1ull << 20, 1ull << 40, &o->rpc.memory_bytes, &err);
            known = true;
        } else if (strcmp(flag, "--message-timeout-ms") == 0) {
            rc = opts_u64(flag, val, 1, MAX_RPC_MS, &v, &err);
            o->rpc.message_timeout_ms = (unsigned)v;
            known = true;
        } else if (strcmp(flag, "--connection-idle-ms") == 0) {
            rc = opts_u64(flag, val, 1, MAX_RPC_MS, &v, &err);
            o->rpc.connection_idle_ms = (unsigned)v;
            known = true;
        } else if (strcmp(flag, "--max-parked") == 0) {
            rc = opts_u64(flag, val, 1, 1000000, &v, &err);
            o->max_parked = (unsigned)v;
            known = true;
        } else {
            rc = etcd_opts_flag(&o->etcd, a, nl, val, &err);
            known = rc > 0;
            if (rc == 0) {
                rc = tls_opts_flag(&o->tls, a, nl, val, &err);
                if (rc == 2) /* a flag: the next argument is not its value */
                    continue;
                known = rc > 0;
            }
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
    struct mm_error err = {0};
    if (tls_opts_check(&o->tls, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        return 2;
    }
    return 0;
}

static void serve(struct gateway *g)
{
    struct options *o = g->o;
    struct mm_error err = {0};
    place_config_init(&g->place);
    struct mesh_config mc = {
        .cluster = o->etcd.cluster,
        .iid = g->id,
        .etcd = g->etcd,
        .mirror = g->mirror,
        .place = &g->place,
    };
    struct model_api_config ac = {0};
    if (mesh_new(&mc, &g->mesh, &err) < 0)
        goto fail;
    ac.mesh = g->mesh;
    struct table_config tc = {
        .cluster = o->etcd.cluster,
        .mirror = g->mirror,
        .mesh = g->mesh,
        .rpc = g->rpc,
        .max_parked = o->max_parked,
        .metrics = g->metrics,
    };
    if (table_new(&tc, &g->table, &err) < 0)
        goto fail;
    struct route_config rc = {
        .loop = g->loop,
        .table = g->table,
        .mesh = g->mesh,
        .name = g->id,
        .version = MM_VERSION,
        .metrics = g->metrics,
    };
    if (route_new(g->server, &rc, &g->route, &err) < 0 ||
        model_api_new(g->server, &ac, &g->api, &err) < 0 || rpc_server_start(g->server, &err) < 0)
        goto fail;
    g->serving = true;
    probe_set_not_ready(g->probe, NULL);
    rest_set_route(g->rest, g->route);
    mm_log(MM_LOG_INFO, WHO, "%s: routing inference and serving the model API on %s (port %d)",
           g->id, o->listen, g->port);
    printf("LISTENING %d\n", g->port);
    fflush(stdout);
    return;
fail:
    mm_log(MM_LOG_ERROR, WHO, "cannot start: %s", err.msg);
    g->exit_code = 1;
    ev_break(g->loop, EVBREAK_ALL);
}

static void on_mirror(struct mirror *mr, enum mirror_state state, const struct mm_error *why,
                      void *arg)
{
    struct gateway *g = arg;
    if (why)
        mm_log(MM_LOG_WARN, WHO, "registry mirror: %s", why->msg);
    if (state == MIRROR_SYNCED && !g->serving && !g->stopping)
        serve(g);
}

static void on_server_down(void *arg)
{
    struct gateway *g = arg;
    g->server_down = true;
    ev_break(g->loop, EVBREAK_ALL);
}

static void on_hard_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal_w(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct gateway *g = w->data;
    if (g->stopping)
        return;
    g->stopping = true;
    probe_set_not_ready(g->probe, "shutting down");
    rest_set_ready(g->rest, false);
    mm_log(MM_LOG_INFO, WHO, "signal %d: shutting down", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

/* The registry metrics_start made (NULL: off) goes to the etcd client and the mirror. */
static int use_metrics(struct gateway *g, struct mirror_config *mc)
{
    g->o->etcd.config.metrics = mc->metrics = g->metrics;
    return 0;
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct gateway g;
    int rc = parse(argc, argv, &o);
    struct mm_error err = {0};
    if (rc == 0 && etcd_opts_password(&o.etcd, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        rc = 2;
    }
    if (rc == 0 && metrics_opts_check(&o.metrics, &err) < 0) {
        fprintf(stderr, WHO ": %s\n", err.msg);
        rc = 2;
    }
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    const char *source = NULL;
    if (rc == 0 && instance_id_choose(o.gateway_id, getenv("POD_NAME"), getenv("HOSTNAME"), host,
                                      g.id, sizeof(g.id), &source, &err) < 0) {
        fprintf(stderr, WHO ": --gateway-id: %s\n", err.msg);
        rc = 2;
    }
    if (rc == 0 && tls_opts_enabled(&o.tls)) {
        struct tls_files server = {o.tls.cert, o.tls.key, o.tls.client_ca};
        struct tls_files peer = {o.tls.cert, o.tls.key, o.tls.ca};
        if (tls_watch_new(&server, &g.tls, &err) < 0 ||
            (o.tls.internal && tls_watch_new(&peer, &g.peer_tls, &err) < 0)) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            rc = 2;
        }
    }
    if (rc != 0) {
        tls_watch_free(g.tls);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    g.o = &o;
    g.loop = EV_DEFAULT;
    char prefix[KEYS_MAX];
    struct mirror_config mcfg = {.state_cb = on_mirror, .state_arg = &g};
    struct probe_config pc = {.listen = o.probe_listen, .not_ready = "reading the registry"};
    int probe_port = 0, rest_port = 0, metrics_port = 0;
    struct rest_config xc = {.listen = o.rest_listen, .version = MM_VERSION, .tls = g.tls,
                             .tls_require_client = o.tls.client_ca != NULL};
    if ((!probe_is_off(o.probe_listen) &&
         probe_new(g.loop, &pc, &g.probe, &probe_port, &err) < 0) ||
        (!rest_is_off(o.rest_listen) && rest_new(g.loop, &xc, &g.rest, &rest_port, &err) < 0) ||
        metrics_start(&o.metrics, &g.metrics, &g.metrics_server, &metrics_port, &err) < 0 ||
        use_metrics(&g, &mcfg) < 0 || etcd_client_new(g.loop, &o.etcd.config, &g.etcd, &err) < 0 ||
        rpc_context_new(g.loop, &g.rpc, &err) < 0 ||
        rpc_server_new(g.rpc, &o.rpc, &g.server, &err) < 0 ||
        (g.tls && rpc_server_set_tls(g.server, g.tls, o.tls.client_ca != NULL, &err) < 0) ||
        (g.peer_tls && rpc_context_set_peer_tls(g.rpc, g.peer_tls, o.tls.server_name, &err) < 0) ||
        rpc_server_listen(g.server, o.listen, &g.port, &err) < 0 ||
        keys_prefix(prefix, sizeof(prefix), o.etcd.cluster, &err) < 0 ||
        mirror_new(g.etcd, prefix, &mcfg, &g.mirror, &err) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        g.exit_code = 1;
    } else {
        if (g.probe) {
            printf("PROBES %d\n", probe_port);
            fflush(stdout);
        }
        if (g.rest) {
            printf("REST %d\n", rest_port);
            fflush(stdout);
        }
        if (g.metrics_server) {
            printf("METRICS %d\n", metrics_port);
            fflush(stdout);
        }
        mm_log(MM_LOG_INFO, WHO, "gateway %s (id from %s), cluster %s, etcd %s", g.id,
               strcmp(source, "--instance-id") == 0 ? "--gateway-id" : source, o.etcd.cluster,
               o.etcd.config.endpoints);
        ev_signal_init(&g.sigterm, on_signal_w, SIGTERM);
        ev_signal_init(&g.sigint, on_signal_w, SIGINT);
        g.sigterm.data = g.sigint.data = &g;
        ev_signal_start(g.loop, &g.sigterm);
        ev_signal_start(g.loop, &g.sigint);
        mirror_start(g.mirror);
        ev_run(g.loop, 0);
        ev_signal_stop(g.loop, &g.sigterm);
        ev_signal_stop(g.loop, &g.sigint);
    }
    if (g.serving) { /* calls in flight are answered, bounded */
        rpc_server_shutdown(g.server, 1000, on_server_down, &g);
        ev_timer_init(&g.hard_stop, on_hard_stop, 3., 0.);
        ev_timer_start(g.loop, &g.hard_stop);
        if (!g.server_down)
            ev_run(g.loop, 0);
        ev_timer_stop(g.loop, &g.hard_stop);
    }
    metrics_server_free(g.metrics_server);
    probe_free(g.probe);
    rest_free(g.rest); /* before the route: its calls are cancelled */
    route_free(g.route);
    model_api_free(g.api);
    if (g.table) {
        struct table_stats ts;
        table_get_stats(g.table, &ts);
        mm_log(MM_LOG_INFO, WHO, "routed: %" PRIu64 " forwards on the fast path, %" PRIu64
               " from the loop (%" PRIu64 " local), %" PRIu64 " calls parked",
               ts.picks_fast, ts.picks_local + ts.picks_remote, ts.picks_local, ts.parks);
    }
    table_free(g.table);
    if (!g.serving || g.server_down)
        rpc_server_free(g.server);
    mesh_free(g.mesh);
    mirror_free(g.mirror);
    rpc_context_free(g.rpc);
    tls_watch_free(g.peer_tls); /* after the context: gRPC's handshakes read them */
    tls_watch_free(g.tls);
    etcd_client_free(g.etcd);
    metrics_free(g.metrics); /* after every thread that records */
    ev_loop_destroy(g.loop);
    return g.exit_code;
}
