/* harness.h - real servers for tests: started on free loopback ports with temp data dirs,
 * ready when they answer (polled, never a fixed sleep), stopped by their own pid. A child dies
 * with the test process (PR_SET_PDEATHSIG); atexit() and SIGTERM/SIGINT/SIGHUP handlers stop
 * whatever is still running and remove its temp dir. */
#ifndef MM_TEST_HARNESS_H
#define MM_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct harness_etcd {
    pid_t pid;                  /* 0 when not running */
    int client_port;
    int peer_port;
    int metrics_port;           /* plain HTTP /health, also when clients need TLS */
    bool tls;                   /* client URL is https (certificates come in extra_args) */
    char name[32];
    char data_dir[256];         /* mkdtemp'd; kept across stop/restart, removed by cleanup */
    char endpoint[64];          /* "http://127.0.0.1:<client_port>" */
    char log_path[300];         /* etcd's stdout+stderr, inside data_dir's parent temp dir */
    char extra_args[512];       /* extra etcd flags, space-separated, kept for restarts */
    char cluster[512];          /* --initial-cluster of a member of several; "" alone */
    char listen_host[16];       /* an extra IPv4 address it also serves clients on (same
                                   port), "" none; kept for restarts (harness_etcd_*_on) */
};

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int harness_free_port(void);

/* Start etcd (from PATH) with a fresh data dir; extra_args may be NULL. Waits up to 15 s for
 * /health to answer. Returns 0 or -errno (and prints the tail of etcd's log on failure). */
int harness_etcd_start(struct harness_etcd *e, const char *extra_args);
/* The same with an https client URL: extra_args must carry --cert-file/--key-file (and
 * --trusted-ca-file/--client-cert-auth as wanted). endpoint is "https://127.0.0.1:<port>". */
int harness_etcd_start_tls(struct harness_etcd *e, const char *extra_args);
/* SIGTERM, wait up to 5 s, then SIGKILL. Data dir kept. */
/* n members of one cluster (names m0, m1, ...), each like harness_etcd_start's, started
 * together and healthy (a leader elected) on return; stop, kill, restart and clean up each
 * member with the functions for one. 0 or -errno (what was started is cleaned up). */
int harness_etcd_cluster_start(struct harness_etcd *members, size_t n, const char *extra_args);
/* The same two, each member also listening for clients on listen_host (an IPv4 address of
 * this host, e.g. a network namespace's etcd_addr), same port; NULL or "" = loopback only. */
int harness_etcd_start_on(struct harness_etcd *e, const char *extra_args,
                          const char *listen_host);
int harness_etcd_cluster_start_on(struct harness_etcd *members, size_t n, const char *extra_args,
                                  const char *listen_host);
int harness_etcd_stop(struct harness_etcd *e);
/* SIGKILL at once (a crash). Data dir kept. */
int harness_etcd_kill(struct harness_etcd *e);
/* Start again on the same ports and data dir; waits for readiness. */
int harness_etcd_restart(struct harness_etcd *e);
/* The same without waiting: a member of several whose peers are down cannot be healthy
 * (no quorum) until they come back. 0 or -errno. */
int harness_etcd_launch(struct harness_etcd *e);
/* Stop if running and remove the data dir. */
void harness_etcd_cleanup(struct harness_etcd *e);

/* Start a server process (argv[0] a path, or a name on PATH) whose stdout announces
 * "LISTENING <port>"; waits up to timeout_ms for that line. The process dies with the test
 * (PR_SET_PDEATHSIG) and is killed at exit if still running. 0, -ETIMEDOUT or -ECHILD. */
int harness_spawn_listening(char *const argv[], long timeout_ms, pid_t *pid, int *port);
/* Start a process (argv[0] a path, or a name on PATH) with its stdout and stderr appended to
 * log_path, without waiting for anything; it dies with the test and is killed at exit if
 * still running, as harness_spawn_listening's are. 0 or -errno. */
int harness_spawn(char *const argv[], const char *log_path, pid_t *pid);
/* harness_spawn's, then wait up to timeout_ms for a line "LISTENING <port>" among the lines
 * the process appends to log_path from now on (its stdout must be flushed, as mm-node and
 * mm-runtime do). 0; -ECHILD if it exited first, -ETIMEDOUT (it is then killed): either way the
 * tail of the log is printed. */
int harness_spawn_logged(char *const argv[], const char *log_path, long timeout_ms, pid_t *pid,
                         int *port);
/* The port of the last "PROBES <port>" line of log_path after offset (the probes' port of
 * mm-node, mm-gateway and mm-controller), or 0 when there is none. */
int harness_probe_port(const char *log_path, long offset);
/* The same for "METRICS <port>" (their --metrics-listen port). */
int harness_metrics_port(const char *log_path, long offset);
/* The same for "REST <port>" (their --rest-listen port). */
int harness_rest_port(const char *log_path, long offset);
/* One HTTP/1.1 request (method, path) to 127.0.0.1:port, bounded by timeout_ms: the status
 * code, with the body (NUL-terminated, truncated to body_size > 0) when body is not NULL;
 * -errno when there is no answer (refused, timed out, malformed). */
int harness_http(int port, const char *method, const char *path, long timeout_ms, char *body,
                 size_t body_size);
/* Print the last max_bytes of a log file to stderr, under a line naming it. */
void harness_print_tail(const char *path, size_t max_bytes);
/* Wait up to timeout_ms for pid (started by the harness) to exit; its wait status, or -1 if it
 * is still running (it is left running). */
int harness_wait_pid(pid_t pid, long timeout_ms);
/* Run a shell command (a list or pipeline too), capture its stdout+stderr into out
 * (NUL-terminated, truncated to size > 0); returns the exit code of its last command, or -1 if
 * the shell did not exit normally. */
int harness_capture(const char *cmd, char *out, size_t size);
/* SIGTERM, wait up to grace_ms, then SIGKILL; returns the wait status, or -1. */
int harness_stop_pid(pid_t pid, long grace_ms);

/* SIGSTOP pid and wait (up to 2 s) until every thread of it is stopped, so that what the test
 * does next happens while the process is frozen. 0, -ESRCH (gone) or -ETIMEDOUT. Resume it
 * with kill(pid, SIGCONT). */
int harness_freeze(pid_t pid);

/* Call fn (once each, in the test process only) when the harness cleans up at exit or on
 * SIGTERM/SIGINT/SIGHUP, after the processes it started are killed: for what is not a
 * process (network namespaces). At most 8. */
void harness_at_cleanup(void (*fn)(void));

/* Run the example model's maker (examples/xgboost/make-breast-cancer) into dir, which exists:
 * it writes <dir>/xgboost/breast-cancer.json and prints the sample row the model is asked
 * about and its expected predict[0]. row gets the row's first n_features values, *expected the
 * prediction (row may be NULL when n_features is 0: the model only). 0; -EIO (the maker failed
 * or printed no such lines: its output is printed). */
int harness_example_model(const char *maker, const char *dir, float *row, size_t n_features,
                          float *expected);
/* The same into a new temp dir "<TMPDIR or /tmp>/mm-<what>-XXXXXX", whose path goes to
 * dir[0, size) (the caller removes it). 0 or -errno. */
int harness_example_model_tmp(const char *maker, const char *what, char *dir, size_t size,
                              float *row, size_t n_features, float *expected);

/* The InferenceService of KServe's ModelMesh walkthrough (example-mnist-isvc: sklearn, storage
 * key localMinIO, path sklearn/mnist-svm.joblib), as its page shows it. */
#define HARNESS_WALKTHROUGH_ISVC                                                                   \
    "apiVersion: serving.kserve.io/v1beta1\n"                                                      \
    "kind: InferenceService\n"                                                                     \
    "metadata:\n"                                                                                  \
    "  name: example-mnist-isvc\n"                                                                 \
    "  annotations:\n"                                                                             \
    "    serving.kserve.io/deploymentMode: ModelMesh\n"                                            \
    "spec:\n"                                                                                      \
    "  predictor:\n"                                                                               \
    "    model:\n"                                                                                 \
    "      modelFormat:\n"                                                                         \
    "        name: sklearn\n"                                                                      \
    "      storage:\n"                                                                             \
    "        key: localMinIO\n"                                                                    \
    "        path: sklearn/mnist-svm.joblib\n"

/* rm -rf dir, if dir is not "", waited for; then dir becomes "" (so that a second call, from an
 * exit handler after the test's own, does nothing). */
void harness_remove_dir(char *dir);

/* Milliseconds on the monotonic clock, for bounded polling loops in tests. */
long long harness_now_ms(void);

struct ev_loop;
/* Run loop until cond(arg) holds or ms pass (a 10 ms tick bounds each iteration); returns
 * cond(arg). cond NULL: run for ms. */
bool harness_run_until(struct ev_loop *loop, bool (*cond)(void *), void *arg, long long ms);

#endif
