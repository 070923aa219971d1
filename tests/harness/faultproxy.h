/* faultproxy.h - an HTTP/1.1 reverse proxy on loopback that injects faults: every connection
 * it accepts is forwarded to one upstream (host:port), the request passed byte for byte except
 * that its Connection / Keep-Alive / Proxy-Connection headers are replaced by
 * `Connection: close`, so that each request arrives on its own connection and is counted. The
 * Host header is kept: a client signing the request (SigV4, Shared Key) signs the proxy's
 * address, and the upstream checks the same header. A request in absolute form
 * ("GET http://h:p/x") is forwarded as "GET /x".
 *
 * Fault: the first `count` requests whose target contains `match` get the fault (counted across
 * parallel connections, exactly); later ones, and all others, are forwarded untouched. The fault
 * can be changed while it runs (faultproxy_set): it lives in memory shared with the test.
 *
 * Use it as a provider's endpoint_url (http://127.0.0.1:<port>) in place of the real server's.
 * It runs in a forked child (one more per connection), which dies with the test
 * (PR_SET_PDEATHSIG) and after 120 s in any case (or the lifetime it was started with). */
#ifndef MM_TEST_FAULTPROXY_H
#define MM_TEST_FAULTPROXY_H

#include <stddef.h>
#include <sys/types.h>

enum faultproxy_kind {
    FAULTPROXY_NONE,   /* forward everything */
    FAULTPROXY_STATUS, /* answer `status` (0 = 500) with a short text body, not forwarded */
    FAULTPROXY_RESET,  /* close the connection at once, without an answer */
    FAULTPROXY_CUT,    /* forward, but close after `bytes` bytes of the answer (head included) */
    FAULTPROXY_STALL,  /* forward `bytes` bytes of the answer, then send nothing for `stall_ms`
                          (0 = 30 s) with the connection open, then close it */
    FAULTPROXY_SLOW,   /* forward the whole answer at `bytes` bytes per second (a slow link:
                          progress, and pulls that last) */
};

struct faultproxy_fault {
    enum faultproxy_kind kind;
    const char *match; /* substring of the request target; NULL or "" = every request */
    long count;        /* how many matching requests get it; < 0 = all of them */
    int status;        /* FAULTPROXY_STATUS; 0 = 500 */
    long bytes;        /* FAULTPROXY_CUT / _STALL: a count; FAULTPROXY_SLOW: per second */
    long stall_ms;     /* FAULTPROXY_STALL */
};

struct faultproxy_shared;

struct faultproxy {
    pid_t pid;    /* 0 when stopped */
    int port;     /* where it listens, on 127.0.0.1 */
    char url[64]; /* "http://127.0.0.1:<port>" (its listen_host when started on one) */
    struct faultproxy_shared *shared;
};

/* Start it on 127.0.0.1, a free port, forwarding to upstream_host:upstream_port (an IPv4
 * address) with fault (may be NULL = none). 0, or -errno. */
int faultproxy_start(struct faultproxy *fp, const char *upstream_host, int upstream_port,
                     const struct faultproxy_fault *fault);
/* The same, listening on listen_host (an IPv4 address of this host: one a network namespace
 * reaches, for instance) and living lifetime_s seconds (0 = 120 s) instead. */
int faultproxy_start_on(struct faultproxy *fp, const char *listen_host, const char *upstream_host,
                        int upstream_port, const struct faultproxy_fault *fault,
                        unsigned lifetime_s);
/* Replace the fault and reset the count of faults given (not the request count). For requests
 * arriving after the call. */
void faultproxy_set(struct faultproxy *fp, const struct faultproxy_fault *fault);
/* Requests received since the start (whole heads read), and faults given since the last set. */
long faultproxy_requests(const struct faultproxy *fp);
long faultproxy_faults(const struct faultproxy *fp);
/* Requests received whose target contained s (s up to 127 bytes; the last 64 targets are kept:
 * counts among those). */
long faultproxy_seen(const struct faultproxy *fp, const char *s);
/* Kill it (and its connections) and release the shared memory. A stopped one is ignored. */
void faultproxy_stop(struct faultproxy *fp);

#endif
