/* mm_node.c - the node program, beside one runtime: binds its ports, waits for the runtime
 * (runtimeStatus until READY, bounded), registers the instance under a lease (instance.h) with
 * its internal address, mirrors /modelmesh/<cluster>/ (mirror.h), then holds copies (copies.h,
 * storage.h), takes part in placement (mesh.h), routes inference (table.h, route.h) and serves
 * the model API (model_api.h) on --listen and inference for peers on --internal-listen; once
 * all that runs it prints "LISTENING <port>" (the --listen port) on stdout.
 * SIGTERM/SIGINT: the record is marked shutting down (published at once), loaded models are
 * moved to other instances (mesh_move_away), the local copies unloaded, the lease revoked
 * (the record vanishes at once), exit 0; all within --shutdown-timeout. Exit 1 when the port
 * cannot be bound, the runtime never gets ready or the registration cannot start, 2 on a
 * usage error. */
#include <bsd/string.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/cache.h"
#include "mm/copies.h"
#include "mm/curlev.h"
#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/instance.h"
#include "mm/keys.h"
#include "mm/log.h"
#include "mm/mesh.h"
#include "mm/mirror.h"
#include "mm/model_api.h"
#include "mm/vmodels.h"
#include "mm/opts.h"
#include "mm/place.h"
#include "mm/metrics.h"
#include "mm/probe.h"
#include "mm/program.h"
#include "mm/rest.h"
#include "mm/route.h"
#include "mm/rpc.h"
#include "mm/spi.h"
#include "mm/stdir.h"
#include "mm/storage.h"
#include "mm/table.h"
#include "mm/tls.h"

#ifndef MM_VERSION
#define MM_VERSION "unknown"
#endif

#define WHO "mm-node"
#define MAX_TTL_MS 3600000ULL   /* --lease-ttl: an hour */
#define MAX_WAIT_MS 86400000ULL /* --runtime-start-timeout, intervals: a day */
#define MAX_RPC_MS 3600000ULL   /* --message-timeout-ms, --connection-idle-ms: an hour */

struct options {
    struct etcd_opts etcd;
    const char *instance_id, *runtime, *runtime_name, *model_types, *zone,
        *internal_address, *listen, *models_root, *cache_dir, *max_failures,
        *internal_listen, *max_connections, *max_streams, *rpc_memory, *message_timeout,
        *connection_idle, *max_parked, *pull_concurrency, *storage_config_dir, *probe_listen,
        *rest_listen;
    struct metrics_opts metrics;
    uint64_t lease_ttl_ms, start_timeout_ms, min_interval_ms, max_interval_ms, shutdown_ms,
        load_timeout_ms, min_churn_age_ms, failure_expiry_ms, replace_delay_ms, rate_check_ms;
    uint64_t max_load_failures, scale_up_rpm;
    const char *scale_up;
    struct rpc_server_config rpc; /* both ports' bounds */
    struct tls_opts tls;
    unsigned max_parked_calls;
    unsigned max_pulls; /* --pull-concurrency */
};

struct node {
    struct program p; /* the loop, the id, the probes, the metrics, the TLS files */
    struct options *o;
    struct rpc_context *rpc;
    struct spi_client *spi;
    struct etcd_client *etcd;
    struct instance_runtime_wait *wait;
    struct instance *instance;
    struct spi_runtime_status runtime; /* its answer at start: capacity, limits, default size */
    struct rpc_server *server;
    int port;
    struct rpc_server *internal; /* inference for peers */
    int internal_port;
    struct table *table;
    struct route *route, *route_internal;
    struct curlev *curl; /* the loop's curl multi: etcd and the object stores */
    struct storage *storage;
    struct mirror *mirror;
    struct copies *copies;
    struct mesh *mesh;
    struct vmodels *vmodels;
    struct model_api *api;
    struct rest *rest;
    struct place_config place;
    bool registered, synced, serving, server_down, internal_down;
    ev_tstamp stop_started;
    ev_timer hard_stop;
    const char *types[INSTANCE_MODEL_TYPES_MAX + 1];
    size_t n_types;
    char types_buf[4096];
    char cache_dir[4096];
    int exit_code;
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: mm-node [options]\n"
            "Serves one model runtime's pod in the mesh: registers its instance, holds copies,\n"
            "places models and serves the model API (mmesh.ModelMesh).\n"
            "\n"
            ETCD_OPTS_USAGE
            "  --instance-id ID             (env MM_INSTANCE_ID; default POD_NAME, else "
            "HOSTNAME,\n"
            "                               else the host name)\n"
            "  --runtime ADDR               the runtime's SPI address (env MM_RUNTIME_ADDRESS;\n"
            "                               default 127.0.0.1:8085)\n"
            "  --runtime-name NAME          label rt:NAME (env MM_RUNTIME_NAME; default "
            "mm-runtime)\n"
            "  --model-types T1,T2          labels mt:T1,mt:T2 (env MM_MODEL_TYPES; default "
            "none)\n"
            "  --zone ZONE                  (env MM_ZONE; default none)\n"
            "  --internal-listen ADDR       inference for peers (forwarded requests); port 0 "
            "picks\n"
            "                               one (env MM_INTERNAL_LISTEN; default 0.0.0.0:8080)\n"
            "  --internal-address HOST:PORT where peers reach this node (env "
            "MM_INTERNAL_ADDRESS;\n"
            "                               default the --internal-listen address; a wildcard "
            "host\n"
            "                               is $POD_IP, else 127.0.0.1)\n"
            "  --lease-ttl DURATION         instance lease TTL, whole seconds, 2s..1h (env\n"
            "                               MM_LEASE_TTL; default 20s)\n"
            "  --runtime-start-timeout DURATION   wait this long for the runtime to be READY\n"
            "                               (env MM_RUNTIME_START_TIMEOUT; default 120s)\n"
            "  --publish-min-interval DURATION    no two record puts closer (default 2s)\n"
            "  --publish-max-interval DURATION    a minor change is published within "
            "(default 40s)\n"
            "  --listen ADDR                inference (KServe V2, routed through the mesh) and "
            "the\n"
            "                               model API (mmesh.ModelMesh); port 0 picks one\n"
            "                               (env MM_LISTEN; default 0.0.0.0:8033)\n"
            "  --max-connections N          connections open at once, per port (default 3/4 "
            "of the\n"
            "                               open-file limit, at most 65536)\n"
            "  --max-streams N              concurrent calls per connection, 1..100000 "
            "(default 100)\n"
            "  --rpc-memory BYTES           gRPC buffers of all connections, per port, 1Mi..1Ti\n"
            "                               (default 512Mi)\n"
            "  --message-timeout-ms N       time for a request message to arrive (default "
            "30000)\n"
            "  --connection-idle-ms N       a connection without calls this long is closed\n"
            "                               (default 120000)\n"
            "  --max-parked N               requests waiting for models to load, at most "
            "(default\n"
            "                               10000); more are refused UNAVAILABLE\n"
            "  --models-root DIR            where storage paths (pvc) resolve (env "
            "MM_MODELS_ROOT)\n"
            "  --cache-dir DIR              where models are put for the runtime (env "
            "MM_CACHE_DIR;\n"
            "                               default /tmp/modelmesh-cache-<instance id>). Give the\n"
            "                               runtime both this dir and --models-root, each as a\n"
            "                               --models-dir: pvc models are links from here into\n"
            "                               --models-root, not copies (storage.h)\n"
            "  --pull-concurrency N         object-store downloads at once, 1..1024 (default "
            "8);\n"
            "                               credentials are read from the registry's\n"
            "                               storage-config/<key> (docs/storage.md)\n"
            "  --storage-config-dir DIR     the storage-config Secret mounted: a file per key\n"
            "                               (its entry's JSON, at most 64 KiB) wins over the\n"
            "                               registry's entry; read at each resolve (env\n"
            "                               MM_STORAGE_CONFIG_DIR; default none)\n"
            "  --load-timeout DURATION      a load past it fails (default the runtime's)\n"
            "  --min-churn-age DURATION     a full pod refuses loads while its oldest copy is\n"
            "                               younger (default 10 x max(3s, load timeout / 3))\n"
            "  --failure-expiry DURATION    failed-load records expire (default 15m)\n"
            "  --max-load-failures N        recent failures before a model is failed, 1..100 "
            "(default 3)\n"
            "  --replace-delay DURATION     other nodes re-place a model its primary has not "
            "after\n"
            "                               (and drive a vmodel's transition, delete an\n"
            "                               auto-delete model) (default 2s)\n"
            "  --rate-check-interval DURATION   copy counts are checked this often, 100ms..1d\n"
            "                               (default 10s)\n"
            "  --scale-up-rpm N             a copy more when each copy serves more requests per\n"
            "                               minute than this; 0 = never on rate (default 2000)\n"
            "  --shutdown-timeout DURATION  at SIGTERM, bound on moving models away, unloading "
            "and\n"
            "                               deregistering (default 30s)\n"
            PROBE_USAGE
            TLS_OPTS_USAGE
            REST_USAGE
            METRICS_USAGE
            "  --log-level debug|info|warn|error\n"
            "  -h, --help\n"
            "Durations: N (ms) or N with ms, s, m, h.\n");
}

static int parse(int argc, char **argv, struct options *o)
{
    etcd_opts_init(&o->etcd);
    tls_opts_init(&o->tls);
    o->instance_id = program_env("MM_INSTANCE_ID", NULL);
    o->runtime = program_env("MM_RUNTIME_ADDRESS", "127.0.0.1:8085");
    o->runtime_name = program_env("MM_RUNTIME_NAME", "mm-runtime");
    o->model_types = program_env("MM_MODEL_TYPES", "");
    o->zone = program_env("MM_ZONE", "");
    o->internal_address = program_env("MM_INTERNAL_ADDRESS", NULL);
    o->lease_ttl_ms = INSTANCE_TTL_S * 1000ULL;
    o->start_timeout_ms = 120000;
    o->min_interval_ms = INSTANCE_MIN_INTERVAL_MS;
    o->max_interval_ms = INSTANCE_MAX_INTERVAL_MS;
    o->shutdown_ms = 30000;
    o->listen = program_env("MM_LISTEN", "0.0.0.0:8033");
    o->internal_listen = program_env("MM_INTERNAL_LISTEN", "0.0.0.0:8080");
    o->probe_listen = program_env("MM_PROBE_LISTEN", PROBE_DEFAULT_LISTEN);
    o->rest_listen = program_env("MM_REST_LISTEN", REST_DEFAULT_LISTEN);
    metrics_opts_init(&o->metrics);
    o->models_root = program_env("MM_MODELS_ROOT", NULL);
    o->cache_dir = program_env("MM_CACHE_DIR", NULL);
    o->storage_config_dir = program_env("MM_STORAGE_CONFIG_DIR", NULL);
    o->failure_expiry_ms = 15 * 60000;
    o->replace_delay_ms = 2000;
    o->rate_check_ms = 10000;
    o->scale_up_rpm = 2000;
    o->max_load_failures = 3;
    static const struct program_duration durations[] = {
        {"--lease-ttl", "MM_LEASE_TTL", 2000, MAX_TTL_MS, offsetof(struct options, lease_ttl_ms)},
        {"--runtime-start-timeout", "MM_RUNTIME_START_TIMEOUT", 1, MAX_WAIT_MS,
         offsetof(struct options, start_timeout_ms)},
        {"--publish-min-interval", NULL, 1, MAX_WAIT_MS, offsetof(struct options, min_interval_ms)},
        {"--publish-max-interval", NULL, 1, MAX_WAIT_MS, offsetof(struct options, max_interval_ms)},
        {"--shutdown-timeout", NULL, 1, MAX_WAIT_MS, offsetof(struct options, shutdown_ms)},
        {"--load-timeout", NULL, 1, MAX_WAIT_MS, offsetof(struct options, load_timeout_ms)},
        {"--min-churn-age", NULL, 1, MAX_WAIT_MS, offsetof(struct options, min_churn_age_ms)},
        {"--failure-expiry", NULL, 1, MAX_WAIT_MS, offsetof(struct options, failure_expiry_ms)},
        {"--replace-delay", NULL, 1, MAX_WAIT_MS, offsetof(struct options, replace_delay_ms)},
        {"--rate-check-interval", NULL, 100, MAX_WAIT_MS, offsetof(struct options, rate_check_ms)},
    };
    static const struct program_string strings[] = {
        {"--instance-id", offsetof(struct options, instance_id)},
        {"--runtime", offsetof(struct options, runtime)},
        {"--runtime-name", offsetof(struct options, runtime_name)},
        {"--model-types", offsetof(struct options, model_types)},
        {"--zone", offsetof(struct options, zone)},
        {"--internal-address", offsetof(struct options, internal_address)},
        {"--listen", offsetof(struct options, listen)},
        {"--probe-listen", offsetof(struct options, probe_listen)},
        {"--rest-listen", offsetof(struct options, rest_listen)},
        {"--metrics-listen", offsetof(struct options, metrics.listen)},
        {"--metrics-per-model", offsetof(struct options, metrics.per_model)},
        {"--models-root", offsetof(struct options, models_root)},
        {"--cache-dir", offsetof(struct options, cache_dir)},
        {"--storage-config-dir", offsetof(struct options, storage_config_dir)},
        {"--max-load-failures", offsetof(struct options, max_failures)},
        {"--scale-up-rpm", offsetof(struct options, scale_up)},
        {"--internal-listen", offsetof(struct options, internal_listen)},
        {"--max-connections", offsetof(struct options, max_connections)},
        {"--max-streams", offsetof(struct options, max_streams)},
        {"--rpc-memory", offsetof(struct options, rpc_memory)},
        {"--message-timeout-ms", offsetof(struct options, message_timeout)},
        {"--connection-idle-ms", offsetof(struct options, connection_idle)},
        {"--max-parked", offsetof(struct options, max_parked)},
        {"--pull-concurrency", offsetof(struct options, pull_concurrency)},
    };
    if (program_durations_env(WHO, durations, PROGRAM_COUNT(durations), o) < 0)
        return 2;
    struct program_args a;
    program_args_init(&a, WHO, argc, argv, usage);
    int next;
    while ((next = program_args_next(&a)) > 0) {
        struct mm_error err = {0};
        int rc = program_args_duration(&a, durations, PROGRAM_COUNT(durations), o);
        if (rc == 0) {
            if ((rc = etcd_opts_flag(&o->etcd, a.arg, a.flag_len, a.value, &err)) == 0 &&
                (rc = tls_opts_flag(&o->tls, a.arg, a.flag_len, a.value, &err)) == 2)
                program_args_no_value(&a); /* a flag: the next argument is not its value */
            if (rc < 0)
                program_refuse(WHO, &err);
        }
        if (rc == 0)
            rc = program_args_last(&a, strings, PROGRAM_COUNT(strings), o);
        if (rc < 0)
            return 2;
    }
    if (next < 0)
        return 2;
    struct mm_error terr = {0};
    if (tls_opts_check(&o->tls, &terr) < 0) {
        fprintf(stderr, WHO ": %s\n", terr.msg);
        return 2;
    }
    if (o->lease_ttl_ms % 1000 != 0) {
        fprintf(stderr, WHO ": --lease-ttl: '%" PRIu64 " ms' is not a whole number of seconds\n",
                o->lease_ttl_ms);
        return 2;
    }
    if (o->scale_up) {
        struct mm_error err = {0};
        if (opts_u64("--scale-up-rpm", o->scale_up, 0, 100000000, &o->scale_up_rpm, &err) < 0) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            return 2;
        }
    }
    if (o->max_failures) {
        struct mm_error err = {0};
        if (opts_u64("--max-load-failures", o->max_failures, 1, 100, &o->max_load_failures,
                     &err) < 0) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            return 2;
        }
    }
    struct {
        const char *flag, *value;
        uint64_t min, max;
    } limits[] = {
        {"--max-connections", o->max_connections, 1, 10000000},
        {"--max-streams", o->max_streams, 1, 100000},
        {"--message-timeout-ms", o->message_timeout, 1, MAX_RPC_MS},
        {"--connection-idle-ms", o->connection_idle, 1, MAX_RPC_MS},
        {"--max-parked", o->max_parked, 1, 1000000},
        {"--pull-concurrency", o->pull_concurrency, 1, 1024},
    };
    uint64_t lv[sizeof(limits) / sizeof(limits[0])] = {0};
    for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
        struct mm_error err = {0};
        if (limits[k].value && opts_u64(limits[k].flag, limits[k].value, limits[k].min,
                                        limits[k].max, &lv[k], &err) < 0) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            return 2;
        }
    }
    o->rpc.max_connections = (size_t)lv[0];
    o->rpc.max_streams = (unsigned)lv[1];
    o->rpc.message_timeout_ms = (unsigned)lv[2];
    o->rpc.connection_idle_ms = (unsigned)lv[3];
    o->max_parked_calls = (unsigned)lv[4];
    o->max_pulls = (unsigned)lv[5];
    if (o->rpc_memory) {
        struct mm_error err = {0};
        if (opts_bytes("--rpc-memory", o->rpc_memory, 1ull << 20, 1ull << 40,
                       &o->rpc.memory_bytes, &err) < 0) {
            fprintf(stderr, WHO ": %s\n", err.msg);
            return 2;
        }
    }
    if (o->max_interval_ms < o->min_interval_ms) {
        fprintf(stderr, WHO ": --publish-max-interval is shorter than --publish-min-interval\n");
        return 2;
    }
    return 0;
}

/* --model-types "a,b": split in place into n->types. 0 or 2. */
static int split_types(struct node *n, const char *list)
{
    if (strlcpy(n->types_buf, list, sizeof(n->types_buf)) >= sizeof(n->types_buf)) {
        fprintf(stderr, WHO ": --model-types is longer than %zu bytes\n", sizeof(n->types_buf) - 1);
        return 2;
    }
    for (char *save = NULL, *t = strtok_r(n->types_buf, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (n->n_types == INSTANCE_MODEL_TYPES_MAX) {
            fprintf(stderr, WHO ": --model-types: more than %d types\n", INSTANCE_MODEL_TYPES_MAX);
            return 2;
        }
        n->types[n->n_types++] = t;
    }
    return 0;
}

static void stop_loop(struct node *n)
{
    ev_break(n->p.loop, EVBREAK_ALL);
}

/* Everything runs: the copies, the mesh, the model API; then "LISTENING <port>". */
static void maybe_serve(struct node *n)
{
    if (n->serving || n->p.stopping || !n->registered || !n->synced)
        return;
    struct options *o = n->o;
    struct mm_error err = {0};
    struct copies_config cc = {
        .cluster = o->etcd.cluster,
        .iid = n->p.id,
        .etcd = n->etcd,
        .mirror = n->mirror,
        .spi = n->spi,
        .storage = n->storage,
        .instance = n->instance,
        .runtime = &n->runtime,
        .place = &n->place,
        .load_timeout_ms = (unsigned)o->load_timeout_ms,
        .min_churn_age_ms = (int64_t)o->min_churn_age_ms,
        .metrics = n->p.metrics,
    };
    struct mesh_config mc = {
        .cluster = o->etcd.cluster,
        .iid = n->p.id,
        .etcd = n->etcd,
        .mirror = n->mirror,
        .instance = n->instance,
        .place = &n->place,
        .max_failures = (unsigned)o->max_load_failures,
        .replace_delay_ms = (unsigned)o->replace_delay_ms,
        .rate_check_ms = (unsigned)o->rate_check_ms,
    };
    if (copies_new(&cc, &n->copies, &err) < 0)
        goto fail;
    mc.copies = n->copies;
    struct model_api_config ac = {0};
    if (mesh_new(&mc, &n->mesh, &err) < 0)
        goto fail;
    struct vmodels_config vc = {
        .cluster = o->etcd.cluster,
        .iid = n->p.id,
        .etcd = n->etcd,
        .mirror = n->mirror,
        .mesh = n->mesh,
        .drive_delay_ms = (unsigned)o->replace_delay_ms,
    };
    if (vmodels_new(&vc, &n->vmodels, &err) < 0)
        goto fail;
    ac.mesh = n->mesh;
    struct table_config tc = {
        .cluster = o->etcd.cluster,
        .iid = n->p.id,
        .mirror = n->mirror,
        .mesh = n->mesh,
        .rpc = n->rpc,
        .runtime = o->runtime,
        .copies = n->copies,
        .max_parked = o->max_parked_calls,
        .metrics = n->p.metrics,
    };
    struct route_config rc = {
        .loop = n->p.loop,
        .mesh = n->mesh,
        .name = n->p.id,
        .version = MM_VERSION,
        .metrics = n->p.metrics,
    };
    if (table_new(&tc, &n->table, &err) < 0)
        goto fail;
    rc.table = n->table;
    mesh_set_use_source(n->mesh, table_flush_uses, n->table);
    ac.vmodels = n->vmodels;
    if (model_api_new(n->server, &ac, &n->api, &err) < 0 ||
        route_new(n->server, &rc, &n->route, &err) < 0)
        goto fail;
    rc.internal = true;
    if (route_new(n->internal, &rc, &n->route_internal, &err) < 0 ||
        rpc_server_start(n->internal, &err) < 0 || rpc_server_start(n->server, &err) < 0)
        goto fail;
    n->serving = true;
    probe_set_not_ready(n->p.probe, NULL);
    rest_set_route(n->rest, n->route);
    mm_log(MM_LOG_INFO, WHO, "serving inference and the model API on %s (port %d), inference "
           "for peers on %s (port %d); cache %s", o->listen, n->port, o->internal_listen,
           n->internal_port, n->cache_dir);
    printf("LISTENING %d\n", n->port);
    fflush(stdout);
    return;
fail:
    mm_log(MM_LOG_ERROR, WHO, "cannot start: %s", err.msg);
    n->exit_code = 1;
    stop_loop(n);
}

/* instance.c logs registrations and lease.c losses; the copies re-attach their records. */
static void on_instance(struct instance *in, enum instance_event ev, int64_t lease_id, void *arg)
{
    struct node *n = arg;
    mm_log(MM_LOG_DEBUG, WHO, "%s: %s, lease %" PRId64, instance_key(in),
           ev == INSTANCE_REGISTERED ? "registered" : "lease lost", lease_id);
    if (n->copies)
        copies_on_instance(n->copies, ev, lease_id);
    if (ev == INSTANCE_REGISTERED && !n->registered) {
        n->registered = true;
        maybe_serve(n);
    }
}

static void on_mirror(struct mirror *mr, enum mirror_state state, const struct mm_error *why,
                      void *arg)
{
    (void)mr;
    struct node *n = arg;
    if (why)
        mm_log(MM_LOG_WARN, WHO, "registry mirror: %s", why->msg);
    if (state == MIRROR_SYNCED && !n->synced) {
        n->synced = true;
        maybe_serve(n);
    }
}

/* Where peers reach this node without --internal-address: the --internal-listen address with
 * the port bound, a wildcard host replaced by $POD_IP (else 127.0.0.1). */
static void internal_address(const struct node *n, char *out, size_t size)
{
    const char *l = n->o->internal_listen;
    if (strncmp(l, "unix:", 5) == 0) {
        snprintf(out, size, "%s", l);
        return;
    }
    const char *colon = strrchr(l, ':');
    size_t hn = colon ? (size_t)(colon - l) : strlen(l);
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)hn, l);
    if (host[0] == '[') { /* "[v6]" */
        memmove(host, host + 1, strlen(host));
        char *close = strchr(host, ']');
        if (close)
            *close = '\0';
    }
    if (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "%s", program_env("POD_IP", "127.0.0.1"));
    snprintf(out, size, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, n->internal_port);
}

static void on_runtime(int status, const struct mm_error *err, const struct spi_runtime_status *st,
                       void *arg)
{
    struct node *n = arg;
    n->wait = NULL;
    if (status < 0) {
        mm_log(MM_LOG_ERROR, WHO, "refusing to register: %s", err->msg);
        n->exit_code = 1;
        ev_break(n->p.loop, EVBREAK_ALL);
        return;
    }
    mm_log(MM_LOG_INFO, WHO,
           "runtime at %s ready: %s, capacity %" PRIu64 " bytes, %" PRIu32 " loading threads, "
           "load timeout %" PRIu32 " ms, default model size %" PRIu64 " bytes",
           n->o->runtime, st->version[0] ? st->version : "(no version)", st->capacity_bytes,
           st->max_loading_concurrency, st->load_timeout_ms, st->default_model_size_bytes);
    n->runtime = *st;
    probe_set_not_ready(n->p.probe, "registering the instance and reading the registry");
    struct options *o = n->o;
    /* the placement thresholds every part of the node shares */
    place_config_init(&n->place);
    if (st->default_model_size_bytes)
        n->place.default_size_bytes = st->default_model_size_bytes;
    uint32_t timeout = o->load_timeout_ms          ? (uint32_t)o->load_timeout_ms
                       : st->load_timeout_ms        ? st->load_timeout_ms
                                                    : CACHE_DEFAULT_LOAD_TIMEOUT_MS;
    n->place.min_churn_age_ms =
        o->min_churn_age_ms ? (int64_t)o->min_churn_age_ms : cache_min_churn_age_ms(timeout);
    n->place.failure_expiry_ms = (int64_t)o->failure_expiry_ms;
    n->place.scale_up_rpm = (uint32_t)o->scale_up_rpm;
    if (n->place.failure_expiry_used_ms > n->place.failure_expiry_ms / 2)
        n->place.failure_expiry_used_ms = n->place.failure_expiry_ms / 2;
    char bound_address[300];
    const char *address = o->internal_address;
    if (!address) {
        internal_address(n, bound_address, sizeof(bound_address));
        address = bound_address;
    }
    struct instance_config cfg = {
        .cluster = o->etcd.cluster,
        .id = n->p.id,
        .address = address,
        .runtime_name = o->runtime_name,
        .model_types = n->types,
        .n_model_types = n->n_types,
        .zone = o->zone,
        .version = MM_VERSION,
        .runtime = st,
        .figures = {.capacity_bytes = st->capacity_bytes},
        .lease_ttl_s = (int64_t)(o->lease_ttl_ms / 1000),
        .min_interval_ms = (unsigned)o->min_interval_ms,
        .max_interval_ms = (unsigned)o->max_interval_ms,
    };
    struct mm_error e = {0};
    char prefix[KEYS_MAX];
    struct mirror_config mcfg = {.state_cb = on_mirror, .state_arg = n, .metrics = n->p.metrics};
    if (instance_new(n->etcd, &cfg, on_instance, n, &n->instance, &e) < 0 ||
        keys_prefix(prefix, sizeof(prefix), o->etcd.cluster, &e) < 0 ||
        mirror_new(n->etcd, prefix, &mcfg, &n->mirror, &e) < 0 ||
        mirror_start(n->mirror) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "cannot register: %s", e.msg[0] ? e.msg : "mirror");
        n->exit_code = 1;
        ev_break(n->p.loop, EVBREAK_ALL);
    }
}

/* What is left of --shutdown-timeout, in ms, keeping `reserve` for the steps after. */
static unsigned budget(const struct node *n, unsigned reserve)
{
    double spent = (ev_now(n->p.loop) - n->stop_started) * 1000.;
    double left = (double)n->o->shutdown_ms - spent - reserve;
    return left < 1. ? 1u : (unsigned)left;
}

static void on_closed(int status, const struct mm_error *err, void *arg)
{
    struct node *n = arg;
    if (status < 0)
        mm_log(MM_LOG_WARN, WHO, "deregistering: %s", err->msg);
    else
        mm_log(MM_LOG_INFO, WHO, "deregistered: lease revoked");
    stop_loop(n);
}

static void close_instance(struct node *n)
{
    if (instance_close(n->instance, budget(n, 0), on_closed, n) < 0)
        stop_loop(n);
}

static void on_unloaded(int status, void *arg)
{
    struct node *n = arg;
    if (status < 0)
        mm_log(MM_LOG_WARN, WHO, "unloading: not all copies unloaded in time");
    close_instance(n);
}

static void on_moved(int status, size_t not_moved, void *arg)
{
    struct node *n = arg;
    if (status < 0)
        mm_log(MM_LOG_WARN, WHO, "moving models away: %zu not loaded elsewhere in time",
               not_moved);
    else
        mm_log(MM_LOG_INFO, WHO, "every loaded model is loaded elsewhere too");
    unsigned reserve = n->o->shutdown_ms > 3000 ? 1000 : (unsigned)(n->o->shutdown_ms / 3);
    if (copies_unload_all(n->copies, budget(n, reserve), on_unloaded, n) < 0)
        close_instance(n);
}

static void on_hard_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct node *n = w->data;
    mm_log(MM_LOG_WARN, WHO, "shutdown took longer than %" PRIu64 " ms: exiting",
           n->o->shutdown_ms);
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct program *p, int signum, void *arg)
{
    struct node *n = arg;
    struct ev_loop *loop = p->loop;
    n->stop_started = ev_now(loop);
    rest_set_ready(n->rest, false); /* requests are still routed while the models move */
    mm_log(MM_LOG_INFO, WHO, "signal %d: shutting down", signum);
    ev_timer_init(&n->hard_stop, on_hard_stop, (double)n->o->shutdown_ms / 1000. + 1., 0.);
    n->hard_stop.data = n;
    ev_timer_start(loop, &n->hard_stop);
    if (!n->instance) { /* still waiting for the runtime: nothing registered */
        instance_wait_cancel(n->wait);
        n->wait = NULL;
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    instance_set_shutting_down(n->instance);
    if (!n->serving) { /* registered, nothing held yet */
        close_instance(n);
        return;
    }
    /* most of the time for the moves; then unload, then revoke */
    unsigned move_ms = (unsigned)(n->o->shutdown_ms * 2 / 3);
    if (mesh_move_away(n->mesh, move_ms ? move_ms : 1, on_moved, n) < 0)
        on_moved(-ETIMEDOUT, 0, n);
}

static void on_server_down(void *arg)
{
    struct node *n = arg;
    n->server_down = true;
    if (n->internal_down)
        ev_break(n->p.loop, EVBREAK_ALL);
}

static void on_internal_down(void *arg)
{
    struct node *n = arg;
    n->internal_down = true;
    if (n->server_down)
        ev_break(n->p.loop, EVBREAK_ALL);
}

/* storage.h's lookup of a storage key's entry: the file of --storage-config-dir, else
 * storage-config/<key> in the registry mirror (what ModelMesh Serving's controller copies there
 * from the storage-config Secret). */
static int storage_lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    struct node *n = arg;
    char k[KEYS_MAX];
    int rc;
    /* the mounted Secret first: it is what the operator deployed, read again each time */
    if (n->o->storage_config_dir &&
        (rc = stdir_read(n->o->storage_config_dir, key, json, err)) != -ENOENT)
        return rc;
    rc = keys_storage_config(k, sizeof(k), n->o->etcd.cluster, key, err);
    if (rc < 0)
        return rc;
    if (!n->mirror)
        return mm_error_set(err, -EAGAIN, "storage key '%s': the registry is not read yet", key);
    const struct mirror_entry *e = mirror_get(n->mirror, k, strlen(k));
    if (!e)
        return -ENOENT;
    if (!(*json = malloc((size_t)e->value_len + 1)))
        return mm_error_set(err, -ENOMEM, "storage key '%s': out of memory", key);
    memcpy(*json, e->value, e->value_len);
    (*json)[e->value_len] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct node n = {.p.who = WHO};
    struct mm_error err = {0};
    int rc = parse(argc, argv, &o);
    if (rc == 0 && program_check(&n.p, &o.etcd, &o.metrics) < 0)
        rc = 2;
    n.o = &o;
    if (rc == 0)
        rc = split_types(&n, o.model_types);
    if (rc == 0 && program_choose_id(&n.p, o.instance_id, "--instance-id") < 0)
        rc = 2;
    if (rc == 0) {
        int len = o.cache_dir ? snprintf(n.cache_dir, sizeof(n.cache_dir), "%s", o.cache_dir)
                              : snprintf(n.cache_dir, sizeof(n.cache_dir),
                                         "/tmp/modelmesh-cache-%s", n.p.id);
        if (len <= 0 || (size_t)len >= sizeof(n.cache_dir)) {
            fprintf(stderr, WHO ": --cache-dir: longer than %zu bytes\n", sizeof(n.cache_dir) - 1);
            rc = 2;
        }
    }
    if (rc == 0 && o.storage_config_dir && stdir_check(o.storage_config_dir, &err) < 0) {
        fprintf(stderr, WHO ": --storage-config-dir: %s\n", err.msg);
        rc = 2;
    }
    if (rc == 0 && program_tls(&n.p, &o.tls) < 0)
        rc = 2;
    if (rc != 0)
        return rc;
    program_start(&n.p);
    n.exit_code = 0;
    struct storage_config sc = {.cache_dir = n.cache_dir,
                                .models_root = o.models_root,
                                .lookup = storage_lookup,
                                .lookup_arg = &n,
                                .max_transfers = o.max_pulls};
    struct rest_config xc = {.listen = o.rest_listen,
                             .version = MM_VERSION,
                             .tls = n.p.tls,
                             .tls_require_client = o.tls.client_ca != NULL};
    if (program_open_probes(&n.p, o.probe_listen, "waiting for the runtime to be READY", &err) <
            0 ||
        (!rest_is_off(o.rest_listen) &&
         rest_new(n.p.loop, &xc, &n.rest, &n.p.rest_port, &err) < 0) ||
        program_open_metrics(&n.p, &o.metrics, &o.etcd, &err) < 0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        program_close(&n.p);
        rest_free(n.rest);
        program_free(&n.p);
        return 1;
    }
    program_announce(&n.p);
    sc.metrics = n.p.metrics;
    if (curlev_new(n.p.loop, &n.curl, &err) == 0)
        o.etcd.config.curl = sc.curl = n.curl;
    if (!n.curl || etcd_client_new(n.p.loop, &o.etcd.config, &n.etcd, &err) < 0 ||
        rpc_context_new(n.p.loop, &n.rpc, &err) < 0 ||
        rpc_server_new(n.rpc, &o.rpc, &n.server, &err) < 0 ||
        (n.p.tls && rpc_server_set_tls(n.server, n.p.tls, o.tls.client_ca != NULL, &err) < 0) ||
        rpc_server_listen(n.server, o.listen, &n.port, &err) < 0 ||
        rpc_server_new(n.rpc, &o.rpc, &n.internal, &err) < 0 ||
        (n.p.peer_tls &&
         (rpc_server_set_tls(n.internal, n.p.tls, o.tls.client_ca != NULL, &err) < 0 ||
          rpc_context_set_peer_tls(n.rpc, n.p.peer_tls, o.tls.server_name, &err) < 0)) ||
        rpc_server_listen(n.internal, o.internal_listen, &n.internal_port, &err) < 0 ||
        storage_new(n.p.loop, &sc, &n.storage, &err) < 0 ||
        spi_client_new(n.rpc, o.runtime, &n.spi, &err) < 0 ||
        instance_wait_runtime(n.spi, (unsigned)o.start_timeout_ms, on_runtime, &n, &n.wait, &err) <
            0) {
        mm_log(MM_LOG_ERROR, WHO, "%s", err.msg);
        n.exit_code = 1;
    } else {
        mm_log(MM_LOG_INFO, WHO,
               "instance %s (id from %s), cluster %s, etcd %s; waiting up to %" PRIu64
               " ms for the runtime at %s",
               n.p.id, n.p.id_source, o.etcd.cluster, o.etcd.config.endpoints, o.start_timeout_ms,
               o.runtime);
        program_run(&n.p, on_stop, &n);
    }
    ev_timer_stop(n.p.loop, &n.hard_stop);
    /* the servers first (their handlers point at the model API and the routes), then down
     * the stack */
    if (n.server && n.serving) {
        rpc_server_shutdown(n.server, 0, on_server_down, &n);
        rpc_server_shutdown(n.internal, 0, on_internal_down, &n);
        ev_timer_init(&n.hard_stop, on_hard_stop, 2., 0.); /* bounded, as the rest */
        n.hard_stop.data = &n;
        ev_timer_start(n.p.loop, &n.hard_stop);
        if (!n.server_down || !n.internal_down)
            ev_run(n.p.loop, 0);
        ev_timer_stop(n.p.loop, &n.hard_stop);
    }
    program_close(&n.p);
    rest_free(n.rest); /* before the route: its calls are cancelled */
    route_free(n.route);
    route_free(n.route_internal);
    model_api_free(n.api);
    if (n.table) {
        struct table_stats ts;
        table_get_stats(n.table, &ts);
        mm_log(MM_LOG_INFO, WHO, "routed: %" PRIu64 " forwards on the fast path, %" PRIu64
               " from the loop (%" PRIu64 " local), %" PRIu64 " calls parked",
               ts.picks_fast, ts.picks_local + ts.picks_remote, ts.picks_local, ts.parks);
    }
    if (n.mesh)
        mesh_set_use_source(n.mesh, NULL, NULL); /* the table goes first */
    table_free(n.table);
    if (!n.serving || n.server_down)
        rpc_server_free(n.server);
    if (!n.serving || n.internal_down)
        rpc_server_free(n.internal);
    vmodels_free(n.vmodels);
    mesh_free(n.mesh);
    copies_free(n.copies);
    mirror_free(n.mirror);
    n.mirror = NULL; /* storage_lookup reads it */
    instance_wait_cancel(n.wait);
    instance_free(n.instance);
    storage_free(n.storage);
    spi_client_free(n.spi);
    rpc_context_free(n.rpc);
    etcd_client_free(n.etcd);
    curlev_free(n.curl); /* after its clients */
    program_free(&n.p);  /* the TLS files after the context: gRPC's handshakes read them */
    return n.exit_code;
}
