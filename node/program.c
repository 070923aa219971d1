/* program.c - the start-up and the end the three programs share (program.h). */
#include "mm/program.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mm/instance.h"
#include "mm/log.h"
#include "mm/opts.h"
#include "mm/probe.h"

/* ---------------------------------------------------------------- the command line */

const char *program_env(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

void program_args_init(struct program_args *a, const char *who, int argc, char **argv,
                       void (*usage)(FILE *to))
{
    *a = (struct program_args){.who = who, .argc = argc, .argv = argv, .i = 0, .usage = usage};
}

bool program_args_is(const struct program_args *a, const char *flag)
{
    return strlen(flag) == a->flag_len && strncmp(a->arg, flag, a->flag_len) == 0;
}

void program_args_no_value(struct program_args *a)
{
    a->no_value = true;
}

int program_args_next(struct program_args *a)
{
    for (;;) {
        if (a->arg && !a->inline_value && !a->no_value)
            a->i++; /* the next argument was this one's value */
        if (++a->i >= a->argc) {
            a->arg = NULL;
            return 0;
        }
        a->arg = a->argv[a->i];
        if (strcmp(a->arg, "-h") == 0 || strcmp(a->arg, "--help") == 0) {
            a->usage(stdout);
            exit(0);
        }
        const char *eq = strchr(a->arg, '=');
        a->flag_len = eq ? (size_t)(eq - a->arg) : strlen(a->arg);
        a->inline_value = eq != NULL;
        a->no_value = false;
        a->value = eq ? eq + 1 : (a->i + 1 < a->argc ? a->argv[a->i + 1] : NULL);
        if (!program_args_is(a, "--log-level"))
            return 1;
        enum mm_log_level level;
        if (!a->value || mm_log_parse_level(a->value, &level) < 0) {
            fprintf(stderr, "%s: --log-level: '%s' is not debug, info, warn or error\n", a->who,
                    a->value ? a->value : "");
            return -EINVAL;
        }
        mm_log_set_level(level);
    }
}

int program_args_string(struct program_args *a, const struct program_string *t, size_t n,
                        void *opts)
{
    for (size_t k = 0; k < n; k++) {
        if (!program_args_is(a, t[k].flag))
            continue;
        if (!a->value) {
            fprintf(stderr, "%s: %s needs a value\n", a->who, t[k].flag);
            return -EINVAL;
        }
        *(const char **)((char *)opts + t[k].offset) = a->value;
        return 1;
    }
    return 0;
}

int program_args_last(struct program_args *a, const struct program_string *t, size_t n,
                      void *opts)
{
    int rc = program_args_string(a, t, n, opts);
    return rc != 0 ? rc : program_args_unknown(a);
}

int program_refuse(const char *who, const struct mm_error *err)
{
    fprintf(stderr, "%s: %s\n", who, err->msg);
    return -EINVAL;
}

int program_args_duration(struct program_args *a, const struct program_duration *t, size_t n,
                          void *opts)
{
    for (size_t k = 0; k < n; k++) {
        if (!program_args_is(a, t[k].flag))
            continue;
        struct mm_error err = {0};
        if (opts_ms(t[k].flag, a->value, t[k].min, t[k].max,
                    (uint64_t *)((char *)opts + t[k].offset), &err) < 0)
            return program_refuse(a->who, &err);
        return 1;
    }
    return 0;
}

int program_args_unknown(const struct program_args *a)
{
    fprintf(stderr, "%s: unknown option '%s' (see --help)\n", a->who, a->arg);
    return -EINVAL;
}

int program_durations_env(const char *who, const struct program_duration *t, size_t n, void *opts)
{
    for (size_t k = 0; k < n; k++) {
        const char *v = t[k].env ? getenv(t[k].env) : NULL;
        struct mm_error err = {0};
        if (v && v[0] &&
            opts_ms(t[k].env, v, t[k].min, t[k].max, (uint64_t *)((char *)opts + t[k].offset),
                    &err) < 0)
            return program_refuse(who, &err);
    }
    return 0;
}

/* ---------------------------------------------------------------- before anything starts */

int program_check(struct program *p, struct etcd_opts *etcd, const struct metrics_opts *metrics)
{
    struct mm_error err = {0};
    if (etcd_opts_password(etcd, &err) < 0 || metrics_opts_check(metrics, &err) < 0)
        return program_refuse(p->who, &err);
    return 0;
}

int program_choose_id(struct program *p, const char *given, const char *flag)
{
    static const char own_flag[] = "--instance-id"; /* instance_id_choose's name for given */
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    struct mm_error err = {0};
    if (instance_id_choose(given, getenv("POD_NAME"), getenv("HOSTNAME"), host, p->id,
                           sizeof(p->id), &p->id_source, &err) < 0) {
        if (strcmp(flag, own_flag) == 0)
            fprintf(stderr, "%s: %s\n", p->who, err.msg);
        else
            fprintf(stderr, "%s: %s: %s\n", p->who, flag, err.msg);
        return -EINVAL;
    }
    if (strcmp(p->id_source, own_flag) == 0)
        p->id_source = flag;
    return 0;
}

int program_tls(struct program *p, const struct tls_opts *tls)
{
    if (!tls_opts_enabled(tls))
        return 0;
    struct tls_files server = {tls->cert, tls->key, tls->client_ca};
    struct tls_files peer = {tls->cert, tls->key, tls->ca};
    struct mm_error err = {0};
    if (tls_watch_new(&server, &p->tls, &err) < 0 ||
        (tls->internal && tls_watch_new(&peer, &p->peer_tls, &err) < 0)) {
        tls_watch_free(p->tls);
        p->tls = NULL;
        return program_refuse(p->who, &err);
    }
    return 0;
}

/* ---------------------------------------------------------------- running */

void program_start(struct program *p)
{
    signal(SIGPIPE, SIG_IGN);
    p->loop = EV_DEFAULT;
}

int program_open_probes(struct program *p, const char *listen, const char *not_ready,
                        struct mm_error *err)
{
    if (probe_is_off(listen))
        return 0;
    struct probe_config pc = {.listen = listen, .not_ready = not_ready};
    return probe_new(p->loop, &pc, &p->probe, &p->probe_port, err);
}

int program_open_metrics(struct program *p, const struct metrics_opts *o, struct etcd_opts *etcd,
                         struct mm_error *err)
{
    int rc = metrics_start(o, &p->metrics, &p->metrics_server, &p->metrics_port, err);
    etcd->config.metrics = p->metrics;
    return rc;
}

void program_announce(const struct program *p)
{
    if (p->probe)
        printf("PROBES %d\n", p->probe_port);
    if (p->rest_port > 0)
        printf("REST %d\n", p->rest_port);
    if (p->metrics_server)
        printf("METRICS %d\n", p->metrics_port);
    fflush(stdout);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct program *p = w->data;
    if (p->stopping)
        return;
    p->stopping = true;
    probe_set_not_ready(p->probe, "shutting down");
    p->stop(p, w->signum, p->stop_arg);
}

void program_run(struct program *p, program_stop_cb stop, void *arg)
{
    p->stop = stop;
    p->stop_arg = arg;
    ev_signal_init(&p->sigterm, on_signal, SIGTERM);
    ev_signal_init(&p->sigint, on_signal, SIGINT);
    p->sigterm.data = p->sigint.data = p;
    ev_signal_start(p->loop, &p->sigterm);
    ev_signal_start(p->loop, &p->sigint);
    ev_run(p->loop, 0);
    ev_signal_stop(p->loop, &p->sigterm);
    ev_signal_stop(p->loop, &p->sigint);
}

void program_close(struct program *p)
{
    metrics_server_free(p->metrics_server);
    p->metrics_server = NULL;
    probe_free(p->probe);
    p->probe = NULL;
}

void program_free(struct program *p)
{
    program_close(p);
    tls_watch_free(p->peer_tls); /* after the rpc context: gRPC's handshakes read them */
    tls_watch_free(p->tls);
    p->peer_tls = p->tls = NULL;
    metrics_free(p->metrics); /* after every thread that records */
    p->metrics = NULL;
    if (p->loop)
        ev_loop_destroy(p->loop);
    p->loop = NULL;
}
