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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/model_api.h"
#include "mm/opts.h"
#include "mm/place.h"
#include "mm/metrics.h"
#include "mm/probe.h"
#include "mm/program.h"
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
    struct program p; /* the loop, the id, the probes, the metrics, the TLS files */
    struct options *o;
    struct etcd_client *etcd;
    struct rpc_context *rpc;
    struct rpc_server *server;
    int port;
    struct mirror *mirror;
    struct mesh *mesh;
    struct table *table;
    struct route *route;
    struct model_api *api;
    struct rest *rest;
    struct place_config place;
    bool serving, server_down;
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

static int parse(int argc, char **argv, struct options *o)
{
    etcd_opts_init(&o->etcd);
    tls_opts_init(&o->tls);
    o->gateway_id = program_env("MM_GATEWAY_ID", NULL);
    o->listen = program_env("MM_LISTEN", "0.0.0.0:8033");
    o->probe_listen = program_env("MM_PROBE_LISTEN", PROBE_DEFAULT_LISTEN);
    o->rest_listen = program_env("MM_REST_LISTEN", REST_DEFAULT_LISTEN);
    metrics_opts_init(&o->metrics);
    static const struct program_string strings[] = {
        {"--gateway-id", offsetof(struct options, gateway_id)},
        {"--listen", offsetof(struct options, listen)},
        {"--probe-listen", offsetof(struct options, probe_listen)},
        {"--rest-listen", offsetof(struct options, rest_listen)},
        {"--metrics-listen", offsetof(struct options, metrics.listen)},
        {"--metrics-per-model", offsetof(struct options, metrics.per_model)},
    };
    struct program_args a;
    program_args_init(&a, WHO, argc, argv, usage);
    int next;
    while ((next = program_args_next(&a)) > 0) {
        const char *val = a.value;
        struct mm_error err = {0};
        uint64_t v = 0;
        int rc = 0;
        bool numeric = true; /* one of the port's bounds, stored (or refused) here */
        if (program_args_is(&a, "--max-connections")) {
            rc = opts_u64("--max-connections", val, 1, 10000000, &v, &err);
            o->rpc.max_connections = (size_t)v;
        } else if (program_args_is(&a, "--max-streams")) {
            rc = opts_u64("--max-streams", val, 1, 100000, &v, &err);
            o->rpc.max_streams = (unsigned)v;
        } else if (program_args_is(&a, "--rpc-memory")) {
            rc =
                opts_bytes("--rpc-memory", val, 1ull << 20, 1ull << 40, &o->rpc.memory_bytes, &err);
        } else if (program_args_is(&a, "--message-timeout-ms")) {
            rc = opts_u64("--message-timeout-ms", val, 1, MAX_RPC_MS, &v, &err);
            o->rpc.message_timeout_ms = (unsigned)v;
        } else if (program_args_is(&a, "--connection-idle-ms")) {
            rc = opts_u64("--connection-idle-ms", val, 1, MAX_RPC_MS, &v, &err);
            o->rpc.connection_idle_ms = (unsigned)v;
        } else if (program_args_is(&a, "--max-parked")) {
            rc = opts_u64("--max-parked", val, 1, 1000000, &v, &err);
            o->max_parked = (unsigned)v;
        } else {
            numeric = false;
            if ((rc = etcd_opts_flag(&o->etcd, a.arg, a.flag_len, val, &err)) == 0 &&
                (rc = tls_opts_flag(&o->tls, a.arg, a.flag_len, val, &err)) == 2)
                program_args_no_value(&a); /* a flag: the next argument is not its value */
        }
        if (rc < 0) {
            program_refuse(WHO, &err);
            return 2;
        }
        if (numeric)
            continue;
        if (rc == 0)
            rc = program_args_last(&a, strings, PROGRAM_COUNT(strings), o);
        if (rc < 0)
            return 2;
    }
    if (next < 0)
        return 2;
    struct mm_error err = {0};
    if (tls_opts_check(&o->tls, &err) < 0) {
        program_refuse(WHO, &err);
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
        .iid = g->p.id,
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
        .metrics = g->p.metrics,
    };
    if (table_new(&tc, &g->table, &err) < 0)
        goto fail;
    struct route_config rc = {
        .loop = g->p.loop,
        .table = g->table,
        .mesh = g->mesh,
        .name = g->p.id,
        .version = MM_VERSION,
        .metrics = g->p.metrics,
    };
    if (route_new(g->server, &rc, &g->route, &err) < 0 ||
        model_api_new(g->server, &ac, &g->api, &err) < 0 || rpc_server_start(g->server, &err) < 0)
        goto fail;
    g->serving = true;
    probe_set_not_ready(g->p.probe, NULL);
    rest_set_route(g->rest, g->route);
    mm_log(MM_LOG_INFO, WHO, "%s: routing inference and serving the model API on %s (port %d)",
           g->p.id, o->listen, g->port);
    printf("LISTENING %d\n", g->port);
    fflush(stdout);
    return;
fail:
    mm_log(MM_LOG_ERROR, WHO, "cannot start: %s", err.msg);
    g->exit_code = 1;
    ev_break(g->p.loop, EVBREAK_ALL);
}

static void on_mirror(struct mirror *mr, enum mirror_state state, const struct mm_error *why,
                      void *arg)
{
    struct gateway *g = arg;
    if (why)
        mm_log(MM_LOG_WARN, WHO, "registry mirror: %s", why->msg);
    if (state == MIRROR_SYNCED && !g->serving && !g->p.stopping)
        serve(g);
}

static void on_server_down(void *arg)
{
    struct gateway *g = arg;
    g->server_down = true;
    ev_break(g->p.loop, EVBREAK_ALL);
}

static void on_hard_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct program *p, int signum, void *arg)
{
    struct gateway *g = arg;
    rest_set_ready(g->rest, false);
    mm_log(MM_LOG_INFO, WHO, "signal %d: shutting down", signum);
    ev_break(p->loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct gateway g = {.p.who = WHO};
    int rc = parse(argc, argv, &o);
    if (rc == 0 && (program_check(&g.p, &o.etcd, &o.metrics) < 0 ||
                    program_choose_id(&g.p, o.gateway_id, "--gateway-id") < 0 ||
                    program_tls(&g.p, &o.tls) < 0))
        rc = 2;
    if (rc != 0)
        return rc;
    program_start(&g.p);
    g.o = &o;
    char prefix[KEYS_MAX];
    struct mirror_config mcfg = {.state_cb = on_mirror, .state_arg = &g};
    struct rest_config xc = {.listen = o.rest_listen,
                             .version = MM_VERSION,
                             .tls = g.p.tls,
                             .tls_require_client = o.tls.client_ca != NULL};
    struct mm_error err = {0};
    bool failed = program_open_probes(&g.p, o.probe_listen, "reading the registry", &err) < 0 ||
                  (!rest_is_off(o.rest_listen) &&
                   rest_new(g.p.loop, &xc, &g.rest, &g.p.rest_port, &err) < 0) ||
                  program_open_metrics(&g.p, &o.metrics, &o.etcd, &err) < 0;
    mcfg.metrics = g.p.metrics;
    if (failed || etcd_client_new(g.p.loop, &o.etcd.config, &g.etcd, &err) < 0 ||
        rpc_context_new(g.p.loop, &g.rpc, &err) < 0 ||
        rpc_server_new(g.rpc, &o.rpc, &g.server, &err) < 0 ||
        (g.p.tls && rpc_server_set_tls(g.server, g.p.tls, o.tls.client_ca != NULL, &err) < 0) ||
        (g.p.peer_tls &&
         rpc_context_set_peer_tls(g.rpc, g.p.peer_tls, o.tls.server_name, &err) < 0) ||
        rpc_server_listen(g.server, o.listen, &g.port, &err) < 0 ||
        keys_prefix(prefix, sizeof(prefix), o.etcd.cluster, &err) < 0 ||
        mirror_new(g.etcd, prefix, &mcfg, &g.mirror, &err) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        g.exit_code = 1;
    } else {
        program_announce(&g.p);
        mm_log(MM_LOG_INFO, WHO, "gateway %s (id from %s), cluster %s, etcd %s", g.p.id,
               g.p.id_source, o.etcd.cluster, o.etcd.config.endpoints);
        mirror_start(g.mirror);
        program_run(&g.p, on_stop, &g);
    }
    if (g.serving) { /* calls in flight are answered, bounded */
        rpc_server_shutdown(g.server, 1000, on_server_down, &g);
        ev_timer_init(&g.hard_stop, on_hard_stop, 3., 0.);
        ev_timer_start(g.p.loop, &g.hard_stop);
        if (!g.server_down)
            ev_run(g.p.loop, 0);
        ev_timer_stop(g.p.loop, &g.hard_stop);
    }
    program_close(&g.p);
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
    etcd_client_free(g.etcd);
    program_free(&g.p); /* the TLS files after the context: gRPC's handshakes read them */
    return g.exit_code;
}
