/* faultproxy.c - see faultproxy.h. */
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define HEAD_MAX (64 * 1024)
#define MATCH_MAX 128
#define TARGET_MAX 256
#define TARGETS_KEPT 64

/* Shared between the test and the proxy's processes; counters are atomics. */
struct faultproxy_shared {
    int kind, status;
    long count, bytes, stall_ms;
    char match[MATCH_MAX];
    long requests, faults, matched;
    long targets_next;
    char targets[TARGETS_KEPT][TARGET_MAX];
};

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Read the request head (up to and including the blank line) and whatever follows it in the
 * same reads; *head_len is the head's length, the return the bytes read, or -1. */
static ssize_t read_head(int s, char *buf, size_t size, size_t *head_len)
{
    size_t have = 0;
    while (have < size - 1) {
        ssize_t got = read(s, buf + have, size - 1 - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        have += (size_t)got;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            *head_len = (size_t)(end + 4 - buf);
            return (ssize_t)have;
        }
    }
    return -1;
}

/* The head rewritten into out: origin-form target, hop-by-hop connection headers replaced by
 * Connection: close. Its length, or 0 if the head is malformed. target gets the target. */
static size_t rewrite_head(const char *head, size_t len, char *out, size_t size, char *target)
{
    const char *eol = memchr(head, '\n', len);
    if (!eol)
        return 0;
    char method[32], tgt[HEAD_MAX / 4], version[32];
    char line[HEAD_MAX / 4 + 80];
    size_t ll = (size_t)(eol - head);
    if (ll >= sizeof(line))
        return 0;
    memcpy(line, head, ll);
    line[ll] = '\0';
    if (sscanf(line, "%31s %16383s %31s", method, tgt, version) != 3)
        return 0;
    const char *path = tgt;
    if (strncasecmp(tgt, "http://", 7) == 0) {
        path = strchr(tgt + 7, '/');
        if (!path)
            path = "/";
    }
    size_t pl = strnlen(path, TARGET_MAX - 1);
    memcpy(target, path, pl);
    target[pl] = '\0';
    size_t n = (size_t)snprintf(out, size, "%s %s %s\r\n", method, path, version);
    const char *p = eol + 1, *end = head + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);
        if (l <= 2) /* the blank line */
            break;
        bool drop = strncasecmp(p, "Connection:", 11) == 0 ||
                    strncasecmp(p, "Keep-Alive:", 11) == 0 ||
                    strncasecmp(p, "Proxy-Connection:", 17) == 0;
        if (!drop) {
            if (n + l >= size)
                return 0;
            memcpy(out + n, p, l);
            n += l;
        }
        p += l;
    }
    int t = snprintf(out + n, size - n, "Connection: close\r\n\r\n");
    if (t < 0 || n + (size_t)t >= size)
        return 0;
    return n + (size_t)t;
}

static int connect_upstream(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0)
        return -1;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Answer with a status and close gracefully: stop writing, then drain what the client still
 * sends (a request body) for up to a second so that the close does not reset the answer. */
static void answer_status(int s, int status)
{
    char msg[256];
    const char *body = "faultproxy: injected failure\n";
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 %d Injected\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, strlen(body), body);
    write_all(s, msg, (size_t)n);
    shutdown(s, SHUT_WR);
    char sink[4096];
    struct pollfd p = {.fd = s, .events = POLLIN};
    long long until = harness_now_ms() + 1000;
    while (harness_now_ms() < until && poll(&p, 1, 100) >= 0) {
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && read(s, sink, sizeof(sink)) <= 0)
            break;
    }
}

/* Pump bytes both ways until the upstream ends its answer (or either side fails); with
 * limit >= 0, stop after limit bytes of the answer: then stall or cut. With rate > 0, send
 * the answer at rate bytes per second. */
static void pump(int s, int up, long limit, long stall_ms, long rate)
{
    char buf[64 * 1024];
    long sent = 0;
    long long start = harness_now_ms();
    struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = up, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = read(s, buf, sizeof(buf));
            if (got <= 0 || !write_all(up, buf, (size_t)got))
                return; /* the client went away: so does the request */
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t want = sizeof(buf);
            if (rate > 0 && (long)want > rate / 20 + 1)
                want = (size_t)(rate / 20 + 1);
            if (limit >= 0 && (long)want > limit - sent)
                want = (size_t)(limit - sent);
            ssize_t got = want ? read(up, buf, want) : 0;
            if (got < 0)
                return;
            if (got == 0 && want) { /* the answer is whole */
                shutdown(s, SHUT_WR);
                return;
            }
            if (got > 0 && !write_all(s, buf, (size_t)got))
                return;
            sent += got;
            if (rate > 0) { /* not ahead of rate */
                long long due = start + (long long)sent * 1000 / rate;
                long long now = harness_now_ms();
                if (due > now)
                    sleep_ms((long)(due - now));
            }
            if (limit >= 0 && sent >= limit) {
                if (stall_ms > 0)
                    sleep_ms(stall_ms);
                return;
            }
        }
    }
}

static void serve(int s, struct faultproxy_shared *sh, const char *host, int port)
{
    static char in[HEAD_MAX], out[HEAD_MAX + 64];
    char target[TARGET_MAX];
    size_t head_len = 0;
    ssize_t have = read_head(s, in, sizeof(in), &head_len);
    if (have < 0)
        return;
    size_t n = rewrite_head(in, head_len, out, sizeof(out), target);
    if (n == 0) {
        answer_status(s, 400);
        return;
    }
    __atomic_add_fetch(&sh->requests, 1, __ATOMIC_SEQ_CST);
    long slot = __atomic_fetch_add(&sh->targets_next, 1, __ATOMIC_SEQ_CST) % TARGETS_KEPT;
    memcpy(sh->targets[slot], target, TARGET_MAX);

    int kind = __atomic_load_n(&sh->kind, __ATOMIC_SEQ_CST);
    bool fault = false;
    if (kind != FAULTPROXY_NONE && (!sh->match[0] || strstr(target, sh->match))) {
        long before = __atomic_fetch_add(&sh->matched, 1, __ATOMIC_SEQ_CST);
        fault = sh->count < 0 || before < sh->count;
    }
    if (fault)
        __atomic_add_fetch(&sh->faults, 1, __ATOMIC_SEQ_CST);
    if (fault && kind == FAULTPROXY_STATUS) {
        answer_status(s, sh->status ? sh->status : 500);
        return;
    }
    if (fault && kind == FAULTPROXY_RESET)
        return;
    int up = connect_upstream(host, port);
    if (up < 0) {
        answer_status(s, 502);
        return;
    }
    /* the head rewritten, then the body bytes read along with the head */
    if (write_all(up, out, n) && write_all(up, in + head_len, (size_t)have - head_len)) {
        bool slow = fault && kind == FAULTPROXY_SLOW;
        long limit = fault && !slow ? sh->bytes : -1;
        long stall = fault && kind == FAULTPROXY_STALL ? (sh->stall_ms ? sh->stall_ms : 30000) : 0;
        pump(s, up, limit, stall, slow ? sh->bytes : 0);
    }
    close(up);
}

static void put_fault(struct faultproxy_shared *sh, const struct faultproxy_fault *f)
{
    struct faultproxy_fault none = {.kind = FAULTPROXY_NONE};
    if (!f)
        f = &none;
    __atomic_store_n(&sh->kind, FAULTPROXY_NONE, __ATOMIC_SEQ_CST);
    snprintf(sh->match, sizeof(sh->match), "%s", f->match ? f->match : "");
    sh->count = f->count;
    sh->status = f->status;
    sh->bytes = f->bytes;
    sh->stall_ms = f->stall_ms;
    __atomic_store_n(&sh->matched, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sh->faults, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sh->kind, (int)f->kind, __ATOMIC_SEQ_CST);
}

int faultproxy_start(struct faultproxy *fp, const char *upstream_host, int upstream_port,
                     const struct faultproxy_fault *fault)
{
    return faultproxy_start_on(fp, "127.0.0.1", upstream_host, upstream_port, fault, 0);
}

int faultproxy_start_on(struct faultproxy *fp, const char *listen_host, const char *upstream_host,
                        int upstream_port, const struct faultproxy_fault *fault,
                        unsigned lifetime_s)
{
    memset(fp, 0, sizeof(*fp));
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, listen_host, &a.sin_addr) != 1)
        return -EINVAL;
    struct faultproxy_shared *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return -errno;
    memset(sh, 0, sizeof(*sh));
    put_fault(sh, fault);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof(a);
    int rc = 0;
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        rc = -errno;
        goto fail;
    }
    char host[64];
    snprintf(host, sizeof(host), "%s", upstream_host);
    pid_t child = fork();
    if (child < 0) {
        rc = -errno;
        goto fail;
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm(lifetime_s ? lifetime_s : 120); /* bounded even if the test forgets it */
        signal(SIGCHLD, SIG_IGN); /* connections' children reap themselves */
        signal(SIGPIPE, SIG_IGN);
        for (;;) {
            int s = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
            if (s < 0)
                continue;
            pid_t c = fork();
            if (c == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(fd);
                serve(s, sh, host, upstream_port);
                close(s);
                _exit(0);
            }
            close(s);
        }
    }
    close(fd);
    fp->pid = child;
    fp->port = ntohs(a.sin_port);
    fp->shared = sh;
    snprintf(fp->url, sizeof(fp->url), "http://%s:%d", listen_host, fp->port);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    munmap(sh, sizeof(*sh));
    return rc;
}

void faultproxy_set(struct faultproxy *fp, const struct faultproxy_fault *fault)
{
    if (fp->shared)
        put_fault(fp->shared, fault);
}

long faultproxy_requests(const struct faultproxy *fp)
{
    return fp->shared ? __atomic_load_n(&fp->shared->requests, __ATOMIC_SEQ_CST) : 0;
}

long faultproxy_faults(const struct faultproxy *fp)
{
    return fp->shared ? __atomic_load_n(&fp->shared->faults, __ATOMIC_SEQ_CST) : 0;
}

long faultproxy_seen(const struct faultproxy *fp, const char *s)
{
    if (!fp->shared)
        return 0;
    long total = __atomic_load_n(&fp->shared->targets_next, __ATOMIC_SEQ_CST), n = 0;
    long kept = total < TARGETS_KEPT ? total : TARGETS_KEPT;
    for (long i = 0; i < kept; i++)
        if (strstr(fp->shared->targets[i], s))
            n++;
    return n;
}

void faultproxy_stop(struct faultproxy *fp)
{
    if (fp->pid > 0)
        harness_stop_pid(fp->pid, 1000);
    fp->pid = 0;
    if (fp->shared)
        munmap(fp->shared, sizeof(*fp->shared));
    fp->shared = NULL;
}
