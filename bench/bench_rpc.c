/* bench_rpc.c - the physical limit: unary echo over loopback on the gRPC C core (our rpc layer),
 * requests/s and p50/p99 latency at concurrency 1, 16, 64 for 100 B and 64 KiB payloads,
 * against a plain TCP echo (4-byte length + payload, one connection per concurrent client)
 * measured in the same run: the ratio is what gRPC costs over the kernel's loopback alone.
 * The servers run in a child process; the load generator in this one.
 * usage: bench_rpc [seconds per cell (default 1.5)] */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"
#include "mm/rpc.h"

#define MAX_SAMPLES 2000000

/* ---------------------------------------------------------------- servers (child process) */

static void echo(struct rpc_call *c, void *arg)
{
    rpc_call_reply(c, grpc_byte_buffer_copy(rpc_call_request(c)), GRPC_STATUS_OK, NULL);
}

static int read_full(int fd, void *p, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
    for (size_t put = 0; put < n;) {
        ssize_t w = write(fd, (const char *)p + put, n - put);
        if (w <= 0)
            return -1;
        put += (size_t)w;
    }
    return 0;
}

static void *tcp_echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(1 << 20);
    uint32_t len;
    while (buf && read_full(fd, &len, 4) == 0 && len <= (1u << 20) &&
           read_full(fd, buf, len) == 0)
        if (write_full(fd, &len, 4) < 0 || write_full(fd, buf, len) < 0)
            break;
    free(buf);
    close(fd);
    return NULL;
}

static void *tcp_accept(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        if (pthread_create(&t, NULL, tcp_echo_conn, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
    return NULL;
}

static void run_servers(int report_fd)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct rpc_server *s = NULL;
    struct mm_error err = {0};
    int port = 0;
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_server_new(ctx, NULL, &s, &err) < 0 ||
        rpc_server_listen(s, "127.0.0.1:0", &port, &err) < 0 ||
        rpc_server_register(s, "/bench.Echo/Echo", echo, NULL, &err) < 0 ||
        rpc_server_start(s, &err) < 0) {
        fprintf(stderr, "server: %s\n", err.msg);
        _exit(1);
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
        _exit(1);
    pthread_t t;
    pthread_create(&t, NULL, tcp_accept, (void *)(intptr_t)lfd);
    int ports[2] = {port, ntohs(a.sin_port)};
    if (write(report_fd, ports, sizeof(ports)) != sizeof(ports))
        _exit(1);
    close(report_fd);
    alarm(600); /* bounded even if the parent dies */
    ev_run(loop, 0);
    for (;;)
        pause();
}

/* ---------------------------------------------------------------- gRPC load */

static struct loadgen_stats grpc_cell(struct ev_loop *loop, struct rpc_channel *ch, size_t size,
                                      int conc, double seconds, double *lat)
{
    char *data = calloc(1, size);
    grpc_byte_buffer *payload = rpc_buffer_from(data, size);
    free(data);
    struct loadgen_stats s =
        loadgen_run(loop, ch, "/bench.Echo/Echo", payload, conc, seconds, lat, MAX_SAMPLES);
    grpc_byte_buffer_destroy(payload);
    return s;
}

/* ---------------------------------------------------------------- TCP load */

struct tcp_worker {
    int port;
    size_t size;
    double end;
    double *lat;
    size_t n, cap;
};

static void *tcp_client(void *arg)
{
    struct tcp_worker *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return NULL;
    }
    char *buf = calloc(1, w->size + 4);
    uint32_t len = (uint32_t)w->size;
    memcpy(buf, &len, 4);
    while (loadgen_now() < w->end && w->n < w->cap) {
        double t0 = loadgen_now();
        if (write_full(fd, buf, w->size + 4) < 0 || read_full(fd, buf, w->size + 4) < 0)
            break;
        w->lat[w->n++] = loadgen_now() - t0;
    }
    free(buf);
    close(fd);
    return NULL;
}

static struct loadgen_stats tcp_cell(int port, size_t size, int conc, double seconds, double *lat)
{
    struct tcp_worker w[64];
    pthread_t t[64];
    size_t per = MAX_SAMPLES / (size_t)conc;
    double t0 = loadgen_now();
    for (int i = 0; i < conc; i++) {
        w[i] = (struct tcp_worker){port, size, t0 + seconds, lat + (size_t)i * per, 0, per};
        pthread_create(&t[i], NULL, tcp_client, &w[i]);
    }
    size_t n = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(t[i], NULL);
        memmove(lat + n, w[i].lat, w[i].n * sizeof(double));
        n += w[i].n;
    }
    return loadgen_summarize(lat, n, loadgen_now() - t0);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.5;
    if (seconds <= 0 || seconds > 60) {
        fprintf(stderr, "usage: bench_rpc [seconds per cell, 0..60]\n");
        return 2;
    }
    int pfd[2];
    if (pipe(pfd) < 0)
        return 1;
    pid_t server = fork();
    if (server == 0) {
        close(pfd[0]);
        run_servers(pfd[1]);
    }
    close(pfd[1]);
    int ports[2];
    if (read(pfd[0], ports, sizeof(ports)) != sizeof(ports)) {
        fprintf(stderr, "servers did not start\n");
        return 1;
    }
    close(pfd[0]);

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct rpc_channel *ch = NULL;
    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", ports[0]);
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_channel_new(ctx, target, 0, &ch, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double *lat = malloc(MAX_SAMPLES * sizeof(double));
    printf("| payload | concurrency | gRPC req/s | gRPC p50 | gRPC p99 | TCP req/s | TCP p50 | "
           "TCP p99 | gRPC/TCP req/s |\n|---|---|---|---|---|---|---|---|---|\n");
    size_t sizes[] = {100, 65536};
    int concs[] = {1, 16, 64};
    for (int si = 0; si < 2; si++) {
        for (int ci = 0; ci < 3; ci++) {
            struct loadgen_stats g = grpc_cell(loop, ch, sizes[si], concs[ci], seconds, lat);
            struct loadgen_stats t = tcp_cell(ports[1], sizes[si], concs[ci], seconds, lat);
            printf("| %s | %d | %.0f | %.0f us | %.0f us | %.0f | %.0f us | %.0f us | %.2f |\n",
                   sizes[si] == 100 ? "100 B" : "64 KiB", concs[ci], g.rps, g.p50_us, g.p99_us,
                   t.rps, t.p50_us, t.p99_us, t.rps > 0 ? g.rps / t.rps : 0);
            fflush(stdout);
        }
    }
    free(lat);
    rpc_channel_free(ch);
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    return 0;
}
