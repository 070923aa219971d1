/* probe.c - /live and /ready over libmicrohttpd (probe.h). The server's thread reads two atomics
 * the loop writes: the monotonic time of the loop's last turn and the reason it is not ready. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "mm/opts.h"
#include "mm/probe.h"

struct probe {
    struct ev_loop *loop;
    ev_timer beat;
    struct MHD_Daemon *daemon;
    unsigned stall_ms;
    _Atomic int64_t last_turn_ms;
    _Atomic(const char *) not_ready; /* NULL: ready */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_beat(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct probe *p = w->data;
    atomic_store_explicit(&p->last_turn_ms, mono_ms(), memory_order_relaxed);
}

int probe_is_off(const char *listen)
{
    return listen && strcmp(listen, "off") == 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
                             int allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* Answered on the first call (headers complete); a body sent with it is not read: MHD closes
 * the connection after the answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size, void **ctx)
{
    struct probe *p = cls;
    bool live = strcmp(url, "/live") == 0, ready = strcmp(url, "/ready") == 0;
    if (!live && !ready)
        return reply(c, MHD_HTTP_NOT_FOUND, "not found: the probes are /live and /ready\n", 0);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: GET or HEAD\n", 1);
    char body[160];
    if (live) {
        int64_t idle = mono_ms() - atomic_load_explicit(&p->last_turn_ms, memory_order_relaxed);
        if (idle > (int64_t)p->stall_ms) {
            snprintf(body, sizeof(body),
                     "not live: the event loop has not turned for %lld ms (bound %u ms)\n",
                     (long long)idle, p->stall_ms);
            return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, body, 0);
        }
        return reply(c, MHD_HTTP_OK, "live\n", 0);
    }
    const char *why = atomic_load_explicit(&p->not_ready, memory_order_acquire);
    if (why) {
        snprintf(body, sizeof(body), "not ready: %s\n", why);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, body, 0);
    }
    return reply(c, MHD_HTTP_OK, "ready\n", 0);
}

/* A bound, listening socket for "HOST:PORT", "[V6]:PORT" or ":PORT"; -errno with err set. */
static int listen_on(const char *addr, int *family, struct mm_error *err)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return mm_error_set(err, -EINVAL, "--probe-listen '%s': not HOST:PORT (or off)", addr);
    char host[256];
    size_t hn = (size_t)(colon - addr);
    const char *h = addr;
    if (hn >= 2 && addr[0] == '[' && addr[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    if (hn >= sizeof(host))
        return mm_error_set(err, -EINVAL, "--probe-listen '%s': host too long", addr);
    memcpy(host, h, hn);
    host[hn] = '\0';
    uint64_t port;
    struct mm_error perr = {0};
    if (opts_u64("--probe-listen port", colon + 1, 0, 65535, &port, &perr) < 0)
        return mm_error_set(err, -EINVAL, "--probe-listen '%s': %s", addr, perr.msg);
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, service, &hints, &res);
    if (gai != 0)
        return mm_error_set(err, -EINVAL, "--probe-listen '%s': %s", addr, gai_strerror(gai));
    int fd = -1, last = EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
            last = errno;
            close(fd);
            fd = -1;
            continue;
        }
        *family = ai->ai_family;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return mm_error_set(err, -last, "--probe-listen '%s': %s", addr, strerror(last));
    return fd;
}

int probe_new(struct ev_loop *loop, const struct probe_config *cfg, struct probe **out, int *port,
              struct mm_error *err)
{
    *out = NULL;
    int family = AF_INET;
    int fd = listen_on(cfg->listen ? cfg->listen : PROBE_DEFAULT_LISTEN, &family, err);
    if (fd < 0)
        return fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        int e = errno;
        close(fd);
        return mm_error_set(err, -e, "--probe-listen '%s': getsockname: %s", cfg->listen,
                            strerror(e));
    }
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    struct probe *p = calloc(1, sizeof(*p));
    if (!p) {
        close(fd);
        return mm_error_set(err, -ENOMEM, "probes: out of memory");
    }
    p->loop = loop;
    p->stall_ms = cfg->stall_ms ? cfg->stall_ms : PROBE_STALL_MS;
    atomic_init(&p->last_turn_ms, mono_ms());
    atomic_init(&p->not_ready, cfg->not_ready ? cfg->not_ready : "starting");
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    p->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, p, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)PROBE_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PROBE_MAX_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)PROBE_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)PROBE_MEMORY_BYTES, MHD_OPTION_END);
    if (!p->daemon) {
        close(fd);
        free(p);
        return mm_error_set(err, -EIO, "--probe-listen '%s': the HTTP server did not start",
                            cfg->listen);
    }
    double every = p->stall_ms / 4000.;
    ev_timer_init(&p->beat, on_beat, 0., every < 1. ? every : 1.);
    p->beat.data = p;
    ev_timer_again(loop, &p->beat);
    ev_unref(loop); /* the probes alone keep no loop running */
    *out = p;
    return 0;
}

void probe_set_not_ready(struct probe *p, const char *reason)
{
    if (p)
        atomic_store_explicit(&p->not_ready, reason, memory_order_release);
}

void probe_free(struct probe *p)
{
    if (!p)
        return;
    MHD_stop_daemon(p->daemon); /* closes the listening socket too */
    ev_ref(p->loop);
    ev_timer_stop(p->loop, &p->beat);
    free(p);
}
