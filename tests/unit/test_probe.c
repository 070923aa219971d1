/* test_probe.c - probe.h in-process, over real sockets: /live and /ready, 404, 405, HEAD, a
 * stalled loop, "off" and bad addresses (argv[1] "unit"); hostile clients (argv[1] "hostile"):
 * garbage, huge headers, many connections (one address cannot take them all), a slow client
 * cut after the idle timeout, with the process's memory bounded throughout. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "mm/probe.h"

static int port;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected socket to the probe port from source address src (NULL: any), receive timeout
 * timeout_ms; -1 on failure. */
static int dial(const char *src, long timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (src) {
        struct sockaddr_in s = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &s.sin_addr);
        if (bind(fd, (struct sockaddr *)&s, sizeof(s)) < 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Everything the server sends until it closes (or the timeout), NUL-terminated; its length. */
static size_t read_all(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t r = recv(fd, buf + got, size - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return got;
}

/* raw sent as is from src; the status, the whole answer in out. -1: no answer. */
static int raw(const char *src, const char *req, char *out, size_t size)
{
    int fd = dial(src, 3000);
    if (fd < 0)
        return -1;
    send(fd, req, strlen(req), MSG_NOSIGNAL);
    size_t n = read_all(fd, out, size);
    close(fd);
    int status = -1;
    if (n == 0 || sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

static int request(const char *method, const char *path, char *body, size_t size)
{
    char req[512], out[4096];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method,
             path);
    int status = raw(NULL, req, out, sizeof(out));
    const char *b = strstr(out, "\r\n\r\n");
    if (body)
        snprintf(body, size, "%s", status > 0 && b ? b + 4 : "");
    return status;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static struct probe *probe;
static int step;

/* The checks run from the loop's timers (the server answers from its own thread), so that the
 * loop turns between them, or, for the stall, does not. */
static void on_step(struct ev_loop *loop, ev_timer *w, int revents)
{
    char body[512];
    switch (step++) {
    case 0: /* starting: live, not ready with the configured reason */
        CHECK_INT(request("GET", "/live", body, sizeof(body)), 200);
        CHECK_STR(body, "live\n");
        CHECK_INT(request("GET", "/ready", body, sizeof(body)), 503);
        CHECK_STR(body, "not ready: waiting for the test\n");
        probe_set_not_ready(probe, NULL);
        break;
    case 1: /* ready; HEAD: status and no body; other paths and methods */
        CHECK_INT(request("GET", "/ready", body, sizeof(body)), 200);
        CHECK_STR(body, "ready\n");
        CHECK_INT(request("HEAD", "/ready", body, sizeof(body)), 200);
        CHECK_STR(body, "");
        CHECK_INT(request("HEAD", "/live", body, sizeof(body)), 200);
        CHECK_INT(request("GET", "/", body, sizeof(body)), 404);
        CHECK_INT(request("GET", "/readyz", body, sizeof(body)), 404);
        CHECK_INT(request("GET", "/live/x", body, sizeof(body)), 404);
        CHECK_INT(request("POST", "/ready", body, sizeof(body)), 405);
        CHECK_INT(request("DELETE", "/live", body, sizeof(body)), 405);
        {
            char out[4096];
            CHECK_INT(raw(NULL,
                          "PUT /live HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          "Connection: close\r\n\r\nhello",
                          out, sizeof(out)),
                      405);
            CHECK(strstr(out, "Allow: GET, HEAD\r\n") != NULL);
        }
        probe_set_not_ready(probe, "shutting down");
        break;
    case 2:
        CHECK_INT(request("GET", "/ready", body, sizeof(body)), 503);
        CHECK_STR(body, "not ready: shutting down\n");
        CHECK_INT(request("GET", "/live", body, sizeof(body)), 200);
        /* the loop stalls: 600 ms > the 300 ms bound */
        usleep(600 * 1000);
        CHECK_INT(request("GET", "/live", body, sizeof(body)), 503);
        CHECK(strncmp(body, "not live: the event loop has not turned for ", 44) == 0);
        CHECK(strstr(body, "bound 300 ms") != NULL);
        break;
    case 3: /* it turned again */
        CHECK_INT(request("GET", "/live", body, sizeof(body)), 200);
        ev_break(loop, EVBREAK_ALL);
        break;
    }
}

static int unit(void)
{
    struct ev_loop *loop = EV_DEFAULT;
    struct mm_error err = {0};
    struct probe_config pc = {
        .listen = "127.0.0.1:0", .stall_ms = 300, .not_ready = "waiting for the test"};
    REQUIRE(probe_new(loop, &pc, &probe, &port, &err) == 0);
    CHECK(port > 0);
    ev_timer t;
    ev_timer_init(&t, on_step, 0.3, 0.3);
    ev_timer_start(loop, &t);
    long long t0 = now_ms();
    ev_run(loop, 0);
    CHECK_INT(step, 4);
    CHECK(now_ms() - t0 < 10000);
    ev_timer_stop(loop, &t);

    /* the probe's timer alone keeps no loop running */
    ev_run(loop, 0);

    /* the port is taken: the error names the address */
    struct probe *other = NULL;
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", port);
    struct probe_config pc2 = {.listen = taken};
    int other_port = 0;
    CHECK_INT(probe_new(loop, &pc2, &other, &other_port, &err), -EADDRINUSE);
    CHECK(strstr(err.msg, taken) != NULL);
    CHECK(other == NULL);
    probe_free(probe);
    probe = NULL;
    /* freed: the port is closed */
    CHECK_INT(request("GET", "/live", NULL, 0), -1);

    const char *bad[] = {"8089",       "127.0.0.1:65536", "127.0.0.1:x",
                         "127.0.0.1:", "[::1:80",         "no.such.host.invalid:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mm_error_clear(&err);
        CHECK(probe_new(loop, &(struct probe_config){.listen = bad[i]}, &other, &other_port, &err) <
              0);
        CHECK(strstr(err.msg, "--probe-listen") != NULL);
        if (!strstr(err.msg, "--probe-listen"))
            fprintf(stderr, "  %s: %s\n", bad[i], err.msg);
    }
    CHECK(probe_is_off("off"));
    CHECK(!probe_is_off("127.0.0.1:0"));
    CHECK(!probe_is_off(NULL));
    probe_set_not_ready(NULL, "no probe: nothing happens");
    probe_free(NULL);

    /* [::1]:0 where the host has IPv6 loopback */
    if (probe_new(loop, &(struct probe_config){.listen = "[::1]:0"}, &other, &other_port, &err) ==
        0) {
        CHECK(other_port > 0);
        probe_free(other);
    }
    ev_loop_destroy(loop);
    return CHECK_DONE();
}

/* Hostile clients; the loop is not run here, so /live would stall: the bound is an hour. */
static int hostile(void)
{
    struct ev_loop *loop = EV_DEFAULT;
    struct mm_error err = {0};
    struct probe_config pc = {.listen = "127.0.0.1:0", .stall_ms = 3600000};
    REQUIRE(probe_new(loop, &pc, &probe, &port, &err) == 0);
    probe_set_not_ready(probe, NULL);
    char out[65536];
    long rss0 = rss_kib();

    /* garbage: a 4xx or a closed connection, and the next request is answered */
    const char *garbage[] = {"\x01\x02\x03\xff\xfe\r\n\r\n",
                             "GET\r\n\r\n",
                             "GET /live HTTP/9.9\r\n\r\n",
                             "GET /live\r\n\r\n",
                             "GET /live HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                             "GET /live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "zz\r\n",
                             "\r\n\r\n\r\n",
                             "GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        int st = raw(NULL, garbage[i], out, sizeof(out));
        CHECK(st == -1 || (st >= 200 && st < 600));
        CHECK_INT(request("GET", "/ready", NULL, 0), 200);
    }

    /* huge headers: refused (431 or cut), memory bounded */
    size_t big = 4u << 20;
    char *huge = malloc(big + 64);
    REQUIRE(huge);
    strcpy(huge, "GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: ");
    size_t at = strlen(huge);
    memset(huge + at, 'a', big - at);
    strcpy(huge + big, "\r\n\r\n");
    for (int i = 0; i < 4; i++) {
        int fd = dial(NULL, 3000);
        REQUIRE(fd >= 0);
        send(fd, huge, strlen(huge), MSG_NOSIGNAL); /* the server stops reading: partial */
        read_all(fd, out, sizeof(out));
        int st = -1;
        sscanf(out, "HTTP/1.%*d %d", &st);
        CHECK(st == -1 || st == 431 || st == 413 || st == 400);
        close(fd);
    }
    /* many header lines, each small */
    {
        size_t n = 0;
        n += (size_t)snprintf(huge, big, "GET /ready HTTP/1.1\r\nHost: x\r\n");
        while (n + 64 < big / 4)
            n += (size_t)snprintf(huge + n, big - n, "X-%zu: v\r\n", n);
        snprintf(huge + n, big - n, "\r\n");
        int st = raw(NULL, huge, out, sizeof(out));
        CHECK(st == -1 || st == 431 || st == 413 || st == 400);
    }
    free(huge);
    CHECK_INT(request("GET", "/ready", NULL, 0), 200);

    /* many connections from one address: at most PROBE_MAX_PER_IP are kept; another address
     * is still answered; once they close, all is answered again */
    enum { MANY = 200 };
    int fds[MANY];
    int opened = 0;
    for (int i = 0; i < MANY; i++)
        if ((fds[i] = dial("127.0.0.1", 3000)) >= 0)
            opened++;
    usleep(300 * 1000);
    char req[] = "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int other = raw("127.0.0.2", req, out, sizeof(out));
    CHECK_INT(other, 200);
    int kept = 0; /* connections the server has not closed */
    for (int i = 0; i < MANY; i++) {
        if (fds[i] < 0)
            continue;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 1000};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char c;
        ssize_t r = recv(fds[i], &c, 1, MSG_PEEK);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            kept++;
    }
    fprintf(stderr, "many connections: %d opened, %d kept by the server (bound %u per address)\n",
            opened, kept, PROBE_MAX_PER_IP);
    CHECK(kept <= (int)PROBE_MAX_PER_IP);
    for (int i = 0; i < MANY; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    usleep(200 * 1000);
    CHECK_INT(request("GET", "/ready", NULL, 0), 200);

    /* a slow client: half a request line, then nothing; cut after the idle timeout */
    int fd = dial(NULL, (PROBE_IDLE_TIMEOUT_S + 5) * 1000);
    REQUIRE(fd >= 0);
    send(fd, "GET /ready HT", 13, MSG_NOSIGNAL);
    long long t0 = now_ms();
    char c;
    errno = 0;
    ssize_t r = recv(fd, &c, 1, 0);
    long long took = now_ms() - t0;
    fprintf(stderr, "slow client cut after %lld ms (idle timeout %u s)\n", took,
            PROBE_IDLE_TIMEOUT_S);
    CHECK(r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)); /* closed, not timed out */
    CHECK(took <= (long long)(PROBE_IDLE_TIMEOUT_S + 3) * 1000);
    close(fd);

    long rss1 = rss_kib();
    fprintf(stderr, "RSS %ld KiB before, %ld KiB after\n", rss0, rss1);
    CHECK(rss1 - rss0 < 32 * 1024);
    CHECK_INT(request("GET", "/ready", NULL, 0), 200);
    probe_free(probe);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "hostile") == 0)
        return hostile();
    return unit();
}
