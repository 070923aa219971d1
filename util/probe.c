/* probe.c - /live and /ready over libmicrohttpd (probe.h). The server's thread reads two atomics
 * the loop writes: the monotonic time of the loop's last turn and the reason it is not ready. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "mm/httpd.h"
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
    return httpd_is_off(listen);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body, int allow)
{
    return httpd_reply(c, status, "text/plain; charset=utf-8", body, strlen(body),
                       allow ? "GET, HEAD" : NULL);
}

/* Answered on the first call (headers complete); a body sent with it is not read: MHD closes
 * the connection after the answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **ctx)
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

int probe_new(struct ev_loop *loop, const struct probe_config *cfg, struct probe **out, int *port,
              struct mm_error *err)
{
    *out = NULL;
    struct probe *p = calloc(1, sizeof(*p));
    if (!p)
        return mm_error_set(err, -ENOMEM, "probes: out of memory");
    p->loop = loop;
    p->stall_ms = cfg->stall_ms ? cfg->stall_ms : PROBE_STALL_MS;
    atomic_init(&p->last_turn_ms, mono_ms());
    atomic_init(&p->not_ready, cfg->not_ready ? cfg->not_ready : "starting");
    struct httpd_config hc = {.flag = "--probe-listen",
                              .listen = cfg->listen ? cfg->listen : PROBE_DEFAULT_LISTEN,
                              .max_connections = PROBE_MAX_CONNECTIONS,
                              .max_per_ip = PROBE_MAX_PER_IP,
                              .idle_timeout_s = PROBE_IDLE_TIMEOUT_S,
                              .memory_bytes = PROBE_MEMORY_BYTES,
                              .handler = on_request,
                              .handler_cls = p};
    int rc = httpd_start(&hc, &p->daemon, port, err);
    if (rc < 0) {
        free(p);
        return rc;
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
    httpd_stop(p->daemon);
    ev_ref(p->loop);
    ev_timer_stop(p->loop, &p->beat);
    free(p);
}
