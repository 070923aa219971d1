/* program.h - the start-up and the end that mm-node, mm-gateway and mm-controller share: their
 * command lines (-h/--help, --log-level, tables of string and duration flags, the messages of a
 * usage error), the checks before anything starts (the etcd password, the metrics flags, the
 * identity, the TLS files), the loop, the probe and metrics ports with their "PROBES <port>",
 * "REST <port>" and "METRICS <port>" lines on stdout, SIGTERM/SIGINT, and the teardown of what
 * it opened. Each program keeps its own flags, servers and way of stopping.
 *
 * Every message is "<who>: ..." on stderr (the command line and the checks; the caller exits 2)
 * or logged as <who>. struct program is the process's own state, one per process, embedded in
 * main's (its fields are read by the program: the loop, the probe, the metrics). Called from
 * the loop's thread only. */
#ifndef MM_PROGRAM_H
#define MM_PROGRAM_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mm/error.h"
#include "mm/etcd_opts.h"
#include "mm/keys.h"
#include "mm/metrics.h"
#include "mm/tls.h"

struct program;

/* A signal came (SIGTERM or SIGINT, the first one only): the probes already say "shutting down"
 * and p->stopping is set. */
typedef void (*program_stop_cb)(struct program *p, int signum, void *arg);

struct program {
    const char *who;            /* "mm-node": set before anything else */
    struct ev_loop *loop;       /* program_start */
    char id[KEYS_NAME_MAX + 1]; /* program_choose_id */
    const char *id_source;      /* where id came from: the id flag, POD_NAME, HOSTNAME, ... */
    struct probe *probe;        /* NULL: --probe-listen off */
    struct metrics *metrics;    /* NULL: --metrics-listen off */
    struct metrics_server *metrics_server;
    int probe_port, metrics_port;
    int rest_port;              /* set by a program with a REST port: announced with the others */
    struct tls_watch *tls;      /* --tls-cert/--tls-key (+ --tls-client-ca); NULL: plaintext */
    struct tls_watch *peer_tls; /* --internal-tls: --tls-ca, and our chain as client cert */
    bool stopping;              /* a signal came */
    /* program.c's */
    ev_signal sigterm, sigint;
    program_stop_cb stop;
    void *stop_arg;
};

/* ---------------------------------------------------------------- the command line */

/* One argument at a time: "--flag=value", or "--flag" with the next argument as its value. */
struct program_args {
    const char *who;
    int argc;
    char **argv;
    int i;             /* argv[i] is arg */
    const char *arg;   /* the argument as given */
    size_t flag_len;   /* its flag part: arg[0..flag_len) */
    const char *value; /* after '=', else the next argument, else NULL */
    bool inline_value; /* the value came after '=' */
    bool no_value;     /* program_args_no_value: the next argument is not this one's value */
    void (*usage)(FILE *to);
};

/* The entries of a table (an array, not a pointer). */
#define PROGRAM_COUNT(t) (sizeof(t) / sizeof((t)[0]))

/* A flag whose value is kept as given, at offset in the program's options. */
struct program_string {
    const char *flag;
    size_t offset; /* of a const char * */
};

/* A duration flag (opts_ms: N ms or N with ms, s, m, h), min..max ms, at offset (a uint64_t);
 * env, when not NULL, is read by program_durations_env before the command line. */
struct program_duration {
    const char *flag, *env;
    uint64_t min, max;
    size_t offset;
};

/* The environment variable name when it is set and not empty, else dflt. */
const char *program_env(const char *name, const char *dflt);

void program_args_init(struct program_args *a, const char *who, int argc, char **argv,
                       void (*usage)(FILE *to));
/* Moves to the next argument (past the value of this one unless it came after '=' or
 * program_args_no_value was called): 1, 0 at the end, -EINVAL on a bad --log-level (printed).
 * -h/--help prints usage on stdout and exits 0; --log-level sets the log level and is passed
 * over. */
int program_args_next(struct program_args *a);
/* Whether the argument's flag is `flag`. */
bool program_args_is(const struct program_args *a, const char *flag);
/* The argument was a flag without a value (tls_opts_flag's 2): the next one is an argument. */
void program_args_no_value(struct program_args *a);
/* One of the table's: 1 (stored), 0 (not one of them), -EINVAL when it has no value (printed:
 * "<who>: --flag needs a value"). */
int program_args_string(struct program_args *a, const struct program_string *t, size_t n,
                        void *opts);
/* One of the table's: 1 (stored), 0 (not one of them), -EINVAL (printed). */
int program_args_duration(struct program_args *a, const struct program_duration *t, size_t n,
                          void *opts);
/* The last flags tried: one of the string table's (program_args_string), else an unknown
 * option (program_args_unknown). 1 or -EINVAL (printed). */
int program_args_last(struct program_args *a, const struct program_string *t, size_t n,
                      void *opts);
/* Prints "<who>: unknown option '<arg>' (see --help)": -EINVAL. */
int program_args_unknown(const struct program_args *a);
/* Prints "<who>: <err>": -EINVAL. */
int program_refuse(const char *who, const struct mm_error *err);
/* The table's environment variables that are set and not empty, into opts: 0 or -EINVAL
 * (printed, naming the variable). */
int program_durations_env(const char *who, const struct program_duration *t, size_t n, void *opts);

/* ---------------------------------------------------------------- before anything starts */

/* The etcd password (file or environment) and the metrics flags: 0 or -EINVAL (printed). */
int program_check(struct program *p, struct etcd_opts *etcd, const struct metrics_opts *metrics);
/* p->id from given (the program's id flag, flag), else POD_NAME, HOSTNAME, the host name
 * (instance_id_choose); p->id_source says which, the flag by its own name. 0 or -EINVAL
 * (printed, after "<flag>: " unless flag is instance.h's own --instance-id, which the message
 * names already). */
int program_choose_id(struct program *p, const char *given, const char *flag);
/* With TLS enabled, p->tls (the server's files) and with --internal-tls p->peer_tls (the peers'
 * CA): 0 or -EINVAL (printed; nothing is left open). */
int program_tls(struct program *p, const struct tls_opts *tls);

/* ---------------------------------------------------------------- running */

/* SIGPIPE ignored (a peer that goes away is an error return, not the end), p->loop the
 * default loop. */
void program_start(struct program *p);
/* The probes on listen (unless "off"), /ready answering not_ready (a literal) for now. 0 or
 * -errno with err. */
int program_open_probes(struct program *p, const char *listen, const char *not_ready,
                        struct mm_error *err);
/* The metrics registry and its server as o says (metrics_start); the etcd client records in
 * the registry (etcd->config.metrics). 0 or -errno with err. */
int program_open_metrics(struct program *p, const struct metrics_opts *o, struct etcd_opts *etcd,
                         struct mm_error *err);
/* "PROBES <port>", "REST <port>", "METRICS <port>" on stdout for those open. */
void program_announce(const struct program *p);
/* Runs the loop until ev_break, SIGTERM and SIGINT calling stop (the first of them only). */
void program_run(struct program *p, program_stop_cb stop, void *arg);
/* The probe and metrics servers (their threads), first at the end: nothing answers any more. */
void program_close(struct program *p);
/* Last: the TLS files, the metrics registry (after every thread that records) and the loop. */
void program_free(struct program *p);

#endif
