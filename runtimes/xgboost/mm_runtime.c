/* mm_runtime.c - the built-in XGBoost runtime process: runtime SPI + KServe V2 on one port.
 * Prints "LISTENING <port>" on stdout once serving ("LISTENING unix:PATH" on a unix socket);
 * SIGTERM/SIGINT shut it down gracefully: the server stops (calls in flight get --grace-ms,
 * then are cancelled), queued jobs are dropped, running ones get as long again, everything is
 * freed and the process exits 0.
 * A job still running after that is stuck in a blocking call (a model load waiting on storage)
 * that nothing can interrupt safely: the process then exits 0 at once with _exit, without
 * joining its thread or freeing (the kernel reclaims it all). */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mm/fdlimit.h"
#include "mm/log.h"
#include "mm/opts.h"
#include "mm/pool.h"
#include "mm/rpc.h"
#include "mm/xgb_server.h"

/* Bounds of the numeric flags (README's table); plain numbers, as the sklearn runtime takes. */
#define MAX_THREADS POOL_MAX_THREADS /* --workers, --max-loading-concurrency: one pool each */
#define MAX_GRACE_MS 3600000         /* --grace-ms, --message-timeout-ms: an hour */
#define MAX_CONNECTIONS 10000000     /* --max-connections: above any open-file limit */
#define MAX_STREAMS 100000           /* --max-streams */
#define MAX_MODELS_DIRS 16          /* --models-dir given this many times at most */

struct process {
    struct ev_loop *loop;
    struct rpc_server *server;
    struct xgb_server *rt;
    ev_signal sigterm, sigint;
    ev_timer drain; /* bounds the wait for running jobs once the server has stopped */
    uint64_t grace_ms;
    bool stopping;
    bool idle; /* every job is done: a clean exit */
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: mm-runtime [options]\n"
            "  --listen ADDR                 gRPC address (default 127.0.0.1:8085; port 0 picks "
            "one)\n"
            "  --capacity-bytes N            model capacity reported to the mesh (env "
            "MM_RUNTIME_CAPACITY; default 1 GiB)\n"
            "  --max-loading-concurrency N   parallel model loads, 1..64 (default 1)\n"
            "  --load-timeout-ms N           a load that takes longer fails with\n"
            "                                DEADLINE_EXCEEDED and frees its slot (default 90000)\n"
            "  --default-model-size N        reported size for unmeasured models (default "
            "1000000)\n"
            "  --workers N                   prediction threads, 1..64 (default 2)\n"
            "  --grace-ms N                  at SIGTERM: time for calls in flight, then as long "
            "again\n"
            "                                for running jobs, 0..3600000 (default 5000)\n"
            "  --models-dir DIR              serve only model paths inside DIR, symlinks resolved;\n"
            "                                repeatable (at most 16): inside any of them (env\n"
            "                                MM_MODELS_DIR, ':'-separated; default: any readable "
            "path)\n"
            "  --max-connections N           connections open at once (default 3/4 of the "
            "open-file limit)\n"
            "  --max-streams N               concurrent calls per connection, 1..100000 "
            "(default 100)\n"
            "  --rpc-memory BYTES            gRPC buffers of all connections, 1Mi..1Ti "
            "(default 512Mi)\n"
            "  --message-timeout-ms N        time for a request message to arrive, "
            "1..3600000 (default 30000)\n"
            "  --connection-idle-ms N        a connection without calls this long is closed, "
            "1..3600000\n"
            "                                (default 120000)\n"
            "  --log-level debug|info|warn|error\n");
}

static void drain_over(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL); /* jobs still running: main decides */
}

static void runtime_idle(void *arg)
{
    struct process *p = arg;
    p->idle = true;
    ev_timer_stop(p->loop, &p->drain);
    ev_break(p->loop, EVBREAK_ALL);
}

static void server_down(void *arg)
{
    struct process *p = arg;
    ev_timer_init(&p->drain, drain_over, p->grace_ms / 1000., 0.);
    p->drain.data = p;
    ev_timer_start(p->loop, &p->drain);
    xgb_server_stop(p->rt, runtime_idle, p); /* may call runtime_idle at once */
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct process *p = w->data;
    if (p->stopping)
        return;
    p->stopping = true;
    mm_log(MM_LOG_INFO, "mm-runtime", "signal %d: shutting down", w->signum);
    rpc_server_shutdown(p->server, (long)p->grace_ms, server_down, p);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8085";
    /* --models-dir, repeatable; else MM_MODELS_DIR, ':'-separated */
    static char models_given[MAX_MODELS_DIRS][PATH_MAX], models_real[MAX_MODELS_DIRS][PATH_MAX];
    static const char *models_dirs[MAX_MODELS_DIRS + 1];
    size_t n_dirs = 0;
    bool dirs_from_flags = false;
    struct xgb_server_config cfg = {0};
    struct rpc_server_config rpc_cfg = {0};
    uint64_t v, grace_ms = 5000;
    struct mm_error err = {0};
    const char *env = getenv("MM_RUNTIME_CAPACITY");
    if (env && opts_u64("MM_RUNTIME_CAPACITY", env, 1, UINT64_MAX, &cfg.capacity_bytes, &err) < 0) {
        fprintf(stderr, "mm-runtime: %s\n", err.msg);
        return 2;
    }
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes one value */
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--listen") == 0 && val) {
            listen = val;
        } else if (strcmp(a, "--capacity-bytes") == 0) {
            rc = opts_u64(a, val, 1, UINT64_MAX, &cfg.capacity_bytes, &err);
        } else if (strcmp(a, "--max-loading-concurrency") == 0) {
            rc = opts_u64(a, val, 1, MAX_THREADS, &v, &err);
            cfg.max_loading_concurrency = (uint32_t)v;
        } else if (strcmp(a, "--load-timeout-ms") == 0) {
            rc = opts_u64(a, val, 1, UINT32_MAX, &v, &err);
            cfg.load_timeout_ms = (uint32_t)v;
        } else if (strcmp(a, "--default-model-size") == 0) {
            rc = opts_u64(a, val, 1, UINT64_MAX, &cfg.default_model_size, &err);
        } else if (strcmp(a, "--workers") == 0) {
            rc = opts_u64(a, val, 1, MAX_THREADS, &v, &err);
            cfg.workers = (unsigned)v;
        } else if (strcmp(a, "--grace-ms") == 0) {
            rc = opts_u64(a, val, 0, MAX_GRACE_MS, &grace_ms, &err);
        } else if (strcmp(a, "--models-dir") == 0 && val) {
            if (!dirs_from_flags)
                n_dirs = 0;
            dirs_from_flags = true;
            if (n_dirs == MAX_MODELS_DIRS || strlen(val) >= PATH_MAX) {
                fprintf(stderr, "mm-runtime: --models-dir: at most %d directories of < %d bytes\n",
                        MAX_MODELS_DIRS, PATH_MAX);
                return 2;
            }
            snprintf(models_given[n_dirs++], PATH_MAX, "%s", val);
        } else if (strcmp(a, "--max-connections") == 0) {
            rc = opts_u64(a, val, 1, MAX_CONNECTIONS, &v, &err);
            rpc_cfg.max_connections = (size_t)v;
        } else if (strcmp(a, "--max-streams") == 0) {
            rc = opts_u64(a, val, 1, MAX_STREAMS, &v, &err);
            rpc_cfg.max_streams = (unsigned)v;
        } else if (strcmp(a, "--rpc-memory") == 0) {
            rc = opts_bytes(a, val, 1ull << 20, 1ull << 40, &rpc_cfg.memory_bytes, &err);
        } else if (strcmp(a, "--connection-idle-ms") == 0) {
            rc = opts_u64(a, val, 1, MAX_GRACE_MS, &v, &err);
            rpc_cfg.connection_idle_ms = (unsigned)v;
        } else if (strcmp(a, "--message-timeout-ms") == 0) {
            rc = opts_u64(a, val, 1, MAX_GRACE_MS, &v, &err);
            rpc_cfg.message_timeout_ms = (unsigned)v;
        } else if (strcmp(a, "--log-level") == 0 && val) {
            enum mm_log_level level;
            if (mm_log_parse_level(val, &level) < 0) {
                fprintf(stderr, "mm-runtime: unknown log level '%s'\n", val);
                return 2;
            }
            mm_log_set_level(level);
        } else {
            fprintf(stderr, "mm-runtime: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (rc < 0) {
            fprintf(stderr, "mm-runtime: %s\n", err.msg);
            return 2;
        }
    }

    const char *env_dirs = getenv("MM_MODELS_DIR");
    if (!dirs_from_flags && env_dirs) {
        for (const char *p = env_dirs; *p;) {
            size_t len = strcspn(p, ":");
            if (len > 0 && (n_dirs == MAX_MODELS_DIRS || len >= PATH_MAX)) {
                fprintf(stderr, "mm-runtime: MM_MODELS_DIR: at most %d directories of < %d "
                                "bytes\n",
                        MAX_MODELS_DIRS, PATH_MAX);
                return 2;
            }
            if (len > 0)
                snprintf(models_given[n_dirs++], PATH_MAX, "%.*s", (int)len, p);
            p += len;
            if (*p == ':')
                p++;
        }
    }
    for (size_t i = 0; i < n_dirs; i++) {
        struct stat st;
        if (!realpath(models_given[i], models_real[i]) || stat(models_real[i], &st) < 0 ||
            !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "mm-runtime: --models-dir %s is not a directory\n", models_given[i]);
            return 2;
        }
        models_dirs[i] = models_real[i];
    }
    if (n_dirs > 0) {
        models_dirs[n_dirs] = NULL;
        cfg.models_dirs = models_dirs;
    } else {
        mm_log(MM_LOG_WARN, "mm-runtime",
               "no --models-dir: loadModel reads any path this process can read");
    }

    /* every connection is a descriptor: the soft limit (often 1024) is not what we may use */
    uint64_t fds = 0;
    if (fdlimit_raise(&fds, &err) < 0)
        mm_log(MM_LOG_WARN, "mm-runtime", "%s", err.msg);

    struct process p = {.loop = ev_default_loop(0), .grace_ms = grace_ms};
    struct rpc_context *ctx = NULL;
    int port = 0;
    if (rpc_context_new(p.loop, &ctx, &err) < 0 ||
        xgb_server_new(p.loop, &cfg, &p.rt, &err) < 0 ||
        rpc_server_new(ctx, &rpc_cfg, &p.server, &err) < 0 ||
        xgb_server_register(p.rt, p.server, &err) < 0 ||
        rpc_server_listen(p.server, listen, &port, &err) < 0 ||
        rpc_server_start(p.server, &err) < 0) {
        mm_log(MM_LOG_ERROR, "mm-runtime", "%s", err.msg);
        return 1;
    }
    ev_signal_init(&p.sigterm, on_signal, SIGTERM);
    ev_signal_init(&p.sigint, on_signal, SIGINT);
    p.sigterm.data = p.sigint.data = &p;
    ev_signal_start(p.loop, &p.sigterm);
    ev_signal_start(p.loop, &p.sigint);
    bool unix_socket = strncmp(listen, "unix:", 5) == 0;
    if (unix_socket)
        printf("LISTENING %s\n", listen);
    else
        printf("LISTENING %d\n", port);
    fflush(stdout);
    mm_log(MM_LOG_INFO, "mm-runtime", "serving the runtime SPI and KServe V2 on %s (port %d, "
           "open-file limit %" PRIu64 ")", listen, port, fds);
    ev_run(p.loop, 0);

    if (!p.idle) {
        /* A job that outlived the grace period is stuck (a load blocked reading its model from
         * storage, say): joining its thread could wait forever, so leave without it. */
        mm_log(MM_LOG_WARN, "mm-runtime",
               "%u jobs still running %" PRIu64 " ms after the server stopped (a model load "
               "blocked on storage?): exiting without them",
               xgb_server_busy(p.rt), grace_ms);
        fflush(NULL);
        _exit(0);
    }
    xgb_server_free(p.rt);
    rpc_server_free(p.server);
    rpc_context_free(ctx);
    ev_signal_stop(p.loop, &p.sigterm);
    ev_signal_stop(p.loop, &p.sigint);
    mm_log(MM_LOG_INFO, "mm-runtime", "stopped");
    return 0;
}
