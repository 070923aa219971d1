/* harness.c - real etcd servers for tests (see harness.h). */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TRACKED 32
#define MAX_ARGS 64

/* Test-process bookkeeping so that atexit() can stop what a failing test left running. */
static struct harness_etcd *tracked[MAX_TRACKED];
static int given_ports[256];
static int n_given;
static pid_t owner; /* the process that started the servers; forked children leave them be */

long long harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether every thread of pid is stopped ('T' or 't' in its /proc stat): 1, 0, or -1 when the
 * process is gone. */
static int all_threads_stopped(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int stopped = 1, seen = 0;
    for (struct dirent *e; stopped && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[384], buf[512];
        snprintf(path, sizeof(path), "%s/%s/stat", dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* the thread ended meanwhile */
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        const char *paren = strrchr(buf, ')'); /* "tid (comm) S ...": comm may hold spaces */
        seen++;
        if (!paren || (paren[2] != 'T' && paren[2] != 't'))
            stopped = 0;
    }
    closedir(d);
    return seen ? stopped : -1;
}

int harness_freeze(pid_t pid)
{
    if (kill(pid, SIGSTOP) < 0)
        return -errno;
    /* kill() returns once the stop is queued; threads running on another CPU stop a moment
     * later. A test that writes "while the process is frozen" must not race that moment. */
    for (long long end = harness_now_ms() + 2000; harness_now_ms() < end; sleep_ms(1)) {
        int st = all_threads_stopped(pid);
        if (st != 0)
            return st > 0 ? 0 : -ESRCH;
    }
    return -ETIMEDOUT;
}

static bool port_given(int port)
{
    for (int i = 0; i < n_given; i++)
        if (given_ports[i] == port)
            return true;
    return false;
}

int harness_free_port(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -errno;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
        int port = ntohs(a.sin_port);
        if (!port_given(port)) {
            if (n_given < (int)(sizeof(given_ports) / sizeof(given_ports[0])))
                given_ports[n_given++] = port;
            return port;
        }
    }
    return -EADDRINUSE;
}

static void track(struct harness_etcd *e, bool on)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (on && !tracked[i]) {
            tracked[i] = e;
            return;
        }
        if (!on && tracked[i] == e) {
            tracked[i] = NULL;
            return;
        }
    }
}

static void remove_tree(const char *dir)
{
    if (!dir[0])
        return;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

void harness_remove_dir(char *dir)
{
    remove_tree(dir);
    dir[0] = '\0';
}

/* data_dir is "<temp dir>/data"; the temp dir also holds the log. */
static void remove_temp_dir(struct harness_etcd *e)
{
    char dir[sizeof(e->data_dir)];
    memcpy(dir, e->data_dir, sizeof(dir));
    char *slash = strrchr(dir, '/');
    if (slash && strcmp(slash, "/data") == 0)
        *slash = '\0';
    remove_tree(dir);
    e->data_dir[0] = '\0';
}

/* Servers started by harness_spawn_listening: pid and the read end of their stdout. */
static struct {
    pid_t pid;
    int fd;
} spawned[MAX_TRACKED];

static void (*cleanups[8])(void);

static void stop_all_at_exit(void)
{
    if (getpid() != owner)
        return;
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (spawned[i].pid > 0) {
            kill(spawned[i].pid, SIGKILL);
            waitpid(spawned[i].pid, NULL, 0);
            if (spawned[i].fd >= 0)
                close(spawned[i].fd);
            spawned[i].pid = 0;
        }
    }
    for (int i = 0; i < MAX_TRACKED; i++) {
        struct harness_etcd *e = tracked[i];
        if (!e)
            continue;
        if (e->pid > 0) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, NULL, 0);
            e->pid = 0;
        }
        remove_temp_dir(e);
        tracked[i] = NULL;
    }
    for (size_t i = 0; i < sizeof(cleanups) / sizeof(cleanups[0]); i++) {
        void (*fn)(void) = cleanups[i];
        cleanups[i] = NULL; /* once, also when a signal comes during the exit's cleanup */
        if (fn)
            fn();
    }
}

/* meson's time-out and ^C send signals, which skip atexit(): clean up, then die of the signal. */
static void stop_all_on_signal(int sig)
{
    stop_all_at_exit();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void register_cleanup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    owner = getpid();
    atexit(stop_all_at_exit);
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
            struct sigaction sa = {.sa_handler = stop_all_on_signal};
            sigemptyset(&sa.sa_mask);
            sigaction(sigs[i], &sa, NULL);
        }
    }
}

void harness_at_cleanup(void (*fn)(void))
{
    register_cleanup();
    for (size_t i = 0; i < sizeof(cleanups) / sizeof(cleanups[0]); i++) {
        if (cleanups[i] == fn)
            return;
        if (!cleanups[i]) {
            cleanups[i] = fn;
            return;
        }
    }
    fprintf(stderr, "harness: too many cleanups; one is not registered\n");
}

static void print_log_tail(const struct harness_etcd *e)
{
    FILE *f = fopen(e->log_path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > 2048 ? size - 2048 : 0, SEEK_SET);
    char buf[2049];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "--- tail of %s ---\n%s\n---\n", e->log_path, buf);
}

static bool log_mentions(const struct harness_etcd *e, const char *needle)
{
    FILE *f = fopen(e->log_path, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* GET /health over a raw socket: answers "true" once etcd serves. */
static bool healthy(const struct harness_etcd *e)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)e->metrics_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1)) {
            char buf[1024];
            size_t got = 0;
            ssize_t n;
            while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
                got += (size_t)n;
            buf[got] = '\0';
            ok = strstr(buf, "\"health\":\"true\"") != NULL;
        }
    }
    close(fd);
    return ok;
}

static int launch(struct harness_etcd *e)
{
    char client_url[64], peer_url[64], metrics_url[64], cluster[sizeof(e->cluster)];
    snprintf(client_url, sizeof(client_url), "%s://127.0.0.1:%d", e->tls ? "https" : "http",
             e->client_port);
    char listen_urls[sizeof(client_url) * 2 + 8];
    if (e->listen_host[0])
        snprintf(listen_urls, sizeof(listen_urls), "%s,%s://%s:%d", client_url,
                 e->tls ? "https" : "http", e->listen_host, e->client_port);
    else
        snprintf(listen_urls, sizeof(listen_urls), "%s", client_url);
    snprintf(metrics_url, sizeof(metrics_url), "http://127.0.0.1:%d", e->metrics_port);
    snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", e->peer_port);
    snprintf(cluster, sizeof(cluster), "%s", e->cluster);
    if (!e->cluster[0])
        snprintf(cluster, sizeof(cluster), "%s=%s", e->name, peer_url);
    char extra[sizeof(e->extra_args)];
    memcpy(extra, e->extra_args, sizeof(extra));
    char *argv[MAX_ARGS];
    int argc = 0;
    const char *fixed[] = {"etcd", "--name", e->name, "--data-dir", e->data_dir,
                           "--listen-client-urls", listen_urls, "--advertise-client-urls",
                           client_url, "--listen-peer-urls", peer_url,
                           "--initial-advertise-peer-urls", peer_url, "--initial-cluster",
                           cluster, "--listen-metrics-urls", metrics_url, "--logger", "zap",
                           "--log-level", "warn"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[argc++] = (char *)fixed[i];
    char *save = NULL;
    for (char *tok = strtok_r(extra, " ", &save); tok && argc < MAX_ARGS - 1;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (getppid() != parent)
            _exit(1);
        int fd = open(e->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp("etcd", argv);
        fprintf(stderr, "exec etcd: %s\n", strerror(errno));
        _exit(127);
    }
    e->pid = pid;
    return 0;
}

/* Wait until the etcd of e answers healthy (it has a leader), up to 15 s. */
static int wait_healthy(struct harness_etcd *e)
{
    pid_t pid = e->pid;
    long long deadline = harness_now_ms() + 15000;
    while (harness_now_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            e->pid = 0;
            fprintf(stderr, "harness: etcd exited during start-up (status %d)\n", status);
            print_log_tail(e);
            return -ECHILD;
        }
        if (healthy(e))
            return 0;
        sleep_ms(25);
    }
    fprintf(stderr, "harness: etcd not healthy on port %d within 15 s\n", e->client_port);
    print_log_tail(e);
    harness_etcd_kill(e);
    return -ETIMEDOUT;
}

static int spawn(struct harness_etcd *e)
{
    int rc = launch(e);
    return rc < 0 ? rc : wait_healthy(e);
}

/* A member's ports, name, endpoint and temp dirs; 0 or -errno. */
static int prepare(struct harness_etcd *e, const char *extra_args, bool tls,
                   const char *listen_host)
{
    memset(e, 0, sizeof(*e));
    e->tls = tls;
    if (listen_host &&
        snprintf(e->listen_host, sizeof(e->listen_host), "%s", listen_host) >=
            (int)sizeof(e->listen_host))
        return -EINVAL;
    const char *tmp = getenv("TMPDIR");
    snprintf(e->data_dir, sizeof(e->data_dir), "%s/mm-etcd-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(e->data_dir))
        return -errno;
    snprintf(e->log_path, sizeof(e->log_path), "%s/etcd.log", e->data_dir);
    strcat(e->data_dir, "/data");
    if (extra_args)
        snprintf(e->extra_args, sizeof(e->extra_args), "%s", extra_args);
    track(e, true);
    return 0;
}

static int pick_ports(struct harness_etcd *e)
{
    e->client_port = harness_free_port();
    e->peer_port = harness_free_port();
    e->metrics_port = harness_free_port();
    if (e->client_port < 0 || e->peer_port < 0 || e->metrics_port < 0)
        return -EADDRINUSE;
    snprintf(e->endpoint, sizeof(e->endpoint), "%s://127.0.0.1:%d", e->tls ? "https" : "http",
             e->client_port);
    return 0;
}

static int cluster_try(struct harness_etcd *m, size_t n, const char *extra_args,
                       const char *listen_host)
{
    char cluster[sizeof(m->cluster)] = "";
    size_t used = 0;
    int rc = 0;
    memset(m, 0, n * sizeof(*m)); /* members never prepared are cleaned up as empty ones */
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = prepare(&m[i], extra_args, false, listen_host);
        if (rc == 0)
            rc = pick_ports(&m[i]);
        snprintf(m[i].name, sizeof(m[i].name), "m%zu", i);
        if (rc == 0 && used < sizeof(cluster))
            used += (size_t)snprintf(cluster + used, sizeof(cluster) - used,
                                     "%s%s=http://127.0.0.1:%d", i ? "," : "", m[i].name,
                                     m[i].peer_port);
    }
    if (rc == 0 && used >= sizeof(cluster))
        rc = -E2BIG;
    for (size_t i = 0; i < n && rc == 0; i++) {
        memcpy(m[i].cluster, cluster, sizeof(cluster));
        rc = launch(&m[i]);
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = wait_healthy(&m[i]);
    return rc;
}

int harness_etcd_cluster_start(struct harness_etcd *m, size_t n, const char *extra_args)
{
    return harness_etcd_cluster_start_on(m, n, extra_args, NULL);
}

int harness_etcd_cluster_start_on(struct harness_etcd *m, size_t n, const char *extra_args,
                                  const char *listen_host)
{
    register_cleanup();
    int rc = -EADDRINUSE;
    /* A port can be taken between harness_free_port() and etcd's bind: pick new ones. */
    for (int attempt = 0; attempt < 3; attempt++) {
        rc = cluster_try(m, n, extra_args, listen_host);
        bool port_taken = false;
        for (size_t i = 0; rc < 0 && i < n; i++)
            port_taken |= m[i].log_path[0] && log_mentions(&m[i], "address already in use");
        if (rc < 0)
            for (size_t i = 0; i < n; i++)
                harness_etcd_cleanup(&m[i]);
        if (rc == 0 || !port_taken)
            return rc;
        fprintf(stderr, "harness: a port was taken meanwhile; starting the cluster again\n");
    }
    return rc;
}

static int start(struct harness_etcd *e, const char *extra_args, bool tls,
                 const char *listen_host)
{
    static bool registered;
    if (!registered) {
        register_cleanup();
        registered = true;
    }
    int rc = prepare(e, extra_args, tls, listen_host);
    if (rc < 0)
        return rc;
    /* A port can be taken between harness_free_port() and etcd's bind: pick new ones. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((rc = pick_ports(e)) < 0)
            return rc;
        snprintf(e->name, sizeof(e->name), "t%d", e->client_port);
        rc = spawn(e);
        if (rc != -ECHILD || !log_mentions(e, "address already in use"))
            return rc;
        fprintf(stderr, "harness: a port was taken meanwhile; retrying on other ports\n");
        remove_tree(e->data_dir);
    }
    return rc;
}

int harness_etcd_start(struct harness_etcd *e, const char *extra_args)
{
    return start(e, extra_args, false, NULL);
}

int harness_etcd_start_on(struct harness_etcd *e, const char *extra_args, const char *listen_host)
{
    return start(e, extra_args, false, listen_host);
}

int harness_etcd_start_tls(struct harness_etcd *e, const char *extra_args)
{
    return start(e, extra_args, true, NULL);
}

static int reap(struct harness_etcd *e, int sig, long grace_ms)
{
    if (e->pid <= 0)
        return 0;
    kill(e->pid, sig);
    long long deadline = harness_now_ms() + grace_ms;
    for (;;) {
        if (waitpid(e->pid, NULL, WNOHANG) == e->pid)
            break;
        if (harness_now_ms() >= deadline) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, NULL, 0);
            break;
        }
        sleep_ms(10);
    }
    e->pid = 0;
    return 0;
}

int harness_etcd_stop(struct harness_etcd *e)
{
    return reap(e, SIGTERM, 5000);
}

int harness_etcd_kill(struct harness_etcd *e)
{
    return reap(e, SIGKILL, 5000);
}

int harness_etcd_restart(struct harness_etcd *e)
{
    if (e->pid > 0)
        harness_etcd_stop(e);
    return spawn(e);
}

int harness_etcd_launch(struct harness_etcd *e)
{
    if (e->pid > 0)
        harness_etcd_stop(e);
    return launch(e);
}

void harness_etcd_cleanup(struct harness_etcd *e)
{
    harness_etcd_stop(e);
    remove_temp_dir(e);
    track(e, false);
}

/* A free slot in the table of spawned processes (stopped at exit), or -ENOSPC. */
static int spawn_slot(void)
{
    static bool registered;
    if (!registered) {
        register_cleanup();
        registered = true;
    }
    int slot = 0;
    while (slot < MAX_TRACKED && spawned[slot].pid > 0)
        slot++;
    return slot == MAX_TRACKED ? -ENOSPC : slot;
}

int harness_spawn_listening(char *const argv[], long timeout_ms, pid_t *pid_out, int *port_out)
{
    int slot = spawn_slot();
    if (slot < 0)
        return slot;
    int fds[2];
    if (pipe(fds) < 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    spawned[slot].pid = pid;
    spawned[slot].fd = fds[0];
    /* Read lines until "LISTENING <port>" (bounded); the pipe stays open so that later output
     * of the server never meets a closed pipe. */
    char line[256];
    size_t used = 0;
    long long deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int left = (int)(deadline - harness_now_ms());
        if (poll(&pfd, 1, left > 0 ? left : 0) <= 0)
            continue;
        ssize_t n = read(fds[0], line + used, sizeof(line) - 1 - used);
        if (n <= 0)
            break; /* the process closed stdout: it died */
        used += (size_t)n;
        line[used] = '\0';
        char *hit = strstr(line, "LISTENING ");
        int port = 0;
        if (hit && strchr(hit, '\n') && sscanf(hit, "LISTENING %d", &port) == 1 && port > 0) {
            *pid_out = pid;
            *port_out = port;
            return 0;
        }
        char *nl = strrchr(line, '\n');
        if (nl) { /* drop complete lines that were not the announcement */
            used = strlen(nl + 1);
            memmove(line, nl + 1, used + 1);
        } else if (used == sizeof(line) - 1) {
            used = 0;
        }
    }
    fprintf(stderr, "harness: %s did not announce LISTENING within %ld ms\n", argv[0],
            timeout_ms);
    harness_stop_pid(pid, 1000);
    return -ETIMEDOUT;
}

int harness_spawn(char *const argv[], const char *log_path, pid_t *pid_out)
{
    int slot = spawn_slot();
    if (slot < 0)
        return slot;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    spawned[slot].pid = pid;
    spawned[slot].fd = -1;
    *pid_out = pid;
    return 0;
}

void harness_print_tail(const char *path, size_t max_bytes)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "--- %s: %s ---\n", path, strerror(errno));
        return;
    }
    char *buf = malloc(max_bytes + 1);
    if (buf) {
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, size > (long)max_bytes ? size - (long)max_bytes : 0, SEEK_SET);
        size_t n = fread(buf, 1, max_bytes, f);
        buf[n] = '\0';
        fprintf(stderr, "--- tail of %s ---\n%s\n---\n", path, buf);
        free(buf);
    }
    fclose(f);
}

/* The port of the first "LISTENING <port>" line of path after offset, or 0. */
static int find_listening(const char *path, long offset)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int port = 0;
    char line[512];
    if (fseek(f, offset, SEEK_SET) == 0)
        while (!port && fgets(line, sizeof(line), f))
            if (strncmp(line, "LISTENING ", 10) == 0 && strchr(line, '\n') &&
                (sscanf(line + 10, "%d", &port) != 1 || port <= 0 || port > 65535))
                port = 0;
    fclose(f);
    return port;
}

int harness_spawn_logged(char *const argv[], const char *log_path, long timeout_ms, pid_t *pid_out,
                         int *port_out)
{
    struct stat st;
    long offset = stat(log_path, &st) == 0 ? (long)st.st_size : 0;
    pid_t pid = 0;
    int rc = harness_spawn(argv, log_path, &pid);
    if (rc < 0)
        return rc;
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        int port = find_listening(log_path, offset);
        if (port > 0) {
            *pid_out = pid;
            *port_out = port;
            return 0;
        }
        int status = harness_wait_pid(pid, 0);
        if (status != -1) {
            fprintf(stderr, "harness: %s exited (status 0x%x) before announcing LISTENING\n",
                    argv[0], (unsigned)status);
            rc = -ECHILD;
            break;
        }
        if (harness_now_ms() >= deadline) {
            fprintf(stderr, "harness: %s did not announce LISTENING within %ld ms\n", argv[0],
                    timeout_ms);
            harness_stop_pid(pid, 1000);
            rc = -ETIMEDOUT;
            break;
        }
        sleep_ms(20);
    }
    harness_print_tail(log_path, 4096);
    return rc;
}

int harness_wait_pid(pid_t pid, long timeout_ms)
{
    int status = -1;
    long long deadline = harness_now_ms() + timeout_ms;
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && harness_now_ms() < deadline)
        sleep_ms(10);
    if (got != pid)
        return -1;
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (spawned[i].pid == pid) {
            if (spawned[i].fd >= 0)
                close(spawned[i].fd);
            spawned[i].pid = 0;
        }
    }
    return status;
}

int harness_capture(const char *cmd, char *out, size_t size)
{
    if (size == 0)
        return -1;
    size_t len = strlen(cmd) + 16;
    char *full = malloc(len);
    if (!full)
        return -1;
    snprintf(full, len, "{ %s; } 2>&1", cmd);
    FILE *p = popen(full, "r");
    free(full);
    if (!p)
        return -1;
    size_t n = 0, got;
    char chunk[4096];
    while ((got = fread(chunk, 1, sizeof(chunk), p)) > 0) { /* all of it, so the command ends */
        size_t take = got < size - 1 - n ? got : size - 1 - n;
        memcpy(out + n, chunk, take);
        n += take;
    }
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int harness_stop_pid(pid_t pid, long grace_ms)
{
    int status = -1;
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    long long deadline = harness_now_ms() + grace_ms;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (harness_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(10);
    }
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (spawned[i].pid == pid) {
            if (spawned[i].fd >= 0)
                close(spawned[i].fd);
            spawned[i].pid = 0;
        }
    }
    return status;
}

static void tick(struct ev_loop *loop, ev_timer *w, int revents)
{
}

bool harness_run_until(struct ev_loop *loop, bool (*cond)(void *), void *arg, long long ms)
{
    ev_timer t;
    ev_timer_init(&t, tick, 0.01, 0.01);
    ev_timer_start(loop, &t);
    long long end = harness_now_ms() + ms;
    while ((!cond || !cond(arg)) && harness_now_ms() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return cond ? cond(arg) : true;
}

/* The port of the last "<word> <port>" line of log_path after offset, or 0. */
static int announced_port(const char *log_path, long offset, const char *word)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return 0;
    int port = 0, p;
    char line[512];
    size_t wl = strlen(word);
    if (fseek(f, offset, SEEK_SET) == 0)
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, word, wl) == 0 && line[wl] == ' ' && strchr(line, '\n') &&
                sscanf(line + wl + 1, "%d", &p) == 1 && p > 0 && p <= 65535)
                port = p;
    fclose(f);
    return port;
}

int harness_probe_port(const char *log_path, long offset)
{
    return announced_port(log_path, offset, "PROBES");
}

int harness_metrics_port(const char *log_path, long offset)
{
    return announced_port(log_path, offset, "METRICS");
}

int harness_rest_port(const char *log_path, long offset)
{
    return announced_port(log_path, offset, "REST");
}

int harness_http(int port, const char *method, const char *path, long timeout_ms, char *body,
                 size_t body_size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char buf[8192];
    int rc;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto out;
    }
    int n = snprintf(buf, sizeof(buf), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close"
                     "\r\n\r\n", method, path);
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
        rc = -EIO;
        goto out;
    }
    size_t got = 0;
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r > 0)
            got += (size_t)r;
        if (r == 0 || got == sizeof(buf) - 1)
            break;
        if (r < 0 || harness_now_ms() > deadline) {
            rc = got ? 0 : -ETIMEDOUT;
            if (!got)
                goto out;
            break;
        }
    }
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status < 100) {
        rc = -EPROTO;
        goto out;
    }
    if (body) {
        char *b = strstr(buf, "\r\n\r\n");
        snprintf(body, body_size, "%s", b ? b + 4 : "");
    }
    rc = status;
out:
    close(fd);
    return rc;
}

int harness_example_model(const char *maker, const char *dir, float *row, size_t n_features,
                          float *expected)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' 2>&1", maker, dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -errno;
    char line[4096], out[8192] = "";
    bool got_expected = false, got_row = false;
    while (fgets(line, sizeof(line), p)) {
        if (strlen(out) + strlen(line) < sizeof(out))
            strcat(out, line);
        if (sscanf(line, "expected predict[0] = %f", expected) == 1)
            got_expected = true;
        if (strncmp(line, "row[0] =", 8) == 0) {
            char *s = line + 8;
            size_t j = 0;
            for (char *end; j < n_features; j++, s = end) {
                row[j] = strtof(s, &end);
                if (end == s)
                    break;
            }
            got_row = j == n_features;
        }
    }
    int status = pclose(p);
    if (status != 0 || !got_expected || !got_row) {
        fprintf(stderr, "harness: %s %s (exit %d) printed no expected prediction and row of %zu "
                "features:\n%s", maker, dir, status, n_features, out);
        return -EIO;
    }
    return 0;
}

int harness_example_model_tmp(const char *maker, const char *what, char *dir, size_t size,
                              float *row, size_t n_features, float *expected)
{
    const char *tmp = getenv("TMPDIR");
    if ((size_t)snprintf(dir, size, "%s/mm-%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", what) >= size)
        return -ENAMETOOLONG;
    if (!mkdtemp(dir))
        return -errno;
    return harness_example_model(maker, dir, row, n_features, expected);
}
