/* probe.h - the HTTP health probes of a program (what Kubernetes' httpGet liveness and readiness
 * probes ask), on a port of their own (--probe-listen, env MM_PROBE_LISTEN, default
 * 0.0.0.0:8089; "off" disables them).
 *
 *   GET|HEAD /live   200 "live", or 503 "not live: the event loop has not turned for N ms"
 *                    once the loop has not turned for longer than the stall bound
 *   GET|HEAD /ready  200 "ready", or 503 "not ready: <reason>" (probe_set_not_ready)
 *   other paths 404, other methods on these paths 405 (with Allow: GET, HEAD)
 *
 * The HTTP server (libmicrohttpd) runs on a thread of its own, so that a probe answers even
 * while the loop is busy (and says so through /live); the loop only writes two atomics: the
 * time of its last turn (a timer of its own, probe_new) and the reason it is not ready.
 * Bounded: connections open at once (PROBE_MAX_CONNECTIONS, PROBE_MAX_PER_IP from one address),
 * an idle connection is closed after PROBE_IDLE_TIMEOUT_S, a request's headers may take
 * PROBE_MEMORY_BYTES (larger ones are answered 431 and the connection closed).
 *
 * probe_new, probe_set_not_ready and probe_free are called from the loop's thread. */
#ifndef MM_PROBE_H
#define MM_PROBE_H

#include <ev.h>

#include "mm/error.h"

#define PROBE_DEFAULT_LISTEN "0.0.0.0:8089"
#define PROBE_STALL_MS 10000u       /* /live fails when the loop has not turned this long */
#define PROBE_MAX_CONNECTIONS 64u
#define PROBE_MAX_PER_IP 32u
#define PROBE_IDLE_TIMEOUT_S 5u
#define PROBE_MEMORY_BYTES 16384u

/* The --help lines of --probe-listen, as the programs print them. */
#define PROBE_USAGE                                                                                \
    "  --probe-listen ADDR          HTTP probes GET /live and /ready; port 0 picks one, off\n"     \
    "                               disables them (env MM_PROBE_LISTEN; default "                 \
    PROBE_DEFAULT_LISTEN ")\n"

struct probe;

struct probe_config {
    const char *listen;  /* "HOST:PORT", "[V6]:PORT" or ":PORT" (every address); port 0 picks */
    unsigned stall_ms;   /* 0 = PROBE_STALL_MS */
    const char *not_ready; /* the reason until probe_set_not_ready says otherwise; NULL =
                            * "starting". A string that outlives the probe (a literal) */
};

/* Binds cfg->listen and serves the probes from a thread of its own; *port is the bound port.
 * Starts a timer on loop that marks each turn (it does not keep ev_run from returning). 0 or
 * -errno with err naming the address and the problem. */
int probe_new(struct ev_loop *loop, const struct probe_config *cfg, struct probe **out, int *port,
              struct mm_error *err);
/* Whether listen is "off" (the probes disabled). */
int probe_is_off(const char *listen);
/* NULL: ready. Otherwise /ready answers 503 "not ready: <reason>"; reason must outlive the probe
 * (a string literal). p may be NULL (probes off): nothing happens. */
void probe_set_not_ready(struct probe *p, const char *reason);
/* Stops the server (a probe in flight is answered or cut) and the timer. NULL is fine. */
void probe_free(struct probe *p);

#endif
