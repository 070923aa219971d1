/* httpd.h - the start of a bounded libmicrohttpd server on a thread of its own, shared by the
 * programs' small HTTP servers (probe.h, metrics.h, the REST port): the listen address parsed
 * ("HOST:PORT", "[V6]:PORT", ":PORT" for every address; port 0 picks one; "off"), the socket
 * bound and listening, and the daemon started with limits on connections, idle time and
 * request memory. Errors name the flag (e.g. "--metrics-listen") and the address.
 *
 * Threading: httpd_start and httpd_stop from one thread (the program's loop thread); the
 * handler runs on the daemon's thread (MHD_USE_AUTO_INTERNAL_THREAD unless extra_flags asks
 * for a thread per connection). */
#ifndef MM_HTTPD_H
#define MM_HTTPD_H

#include <stddef.h>

#include <microhttpd.h>

#include "mm/error.h"

struct httpd_config {
    const char *flag;   /* the option's name for messages, e.g. "--probe-listen" */
    const char *listen; /* the address (see above); "off" is refused here (httpd_is_off) */
    unsigned max_connections; /* open at once; 0 = 64 */
    unsigned max_per_ip;      /* from one address; 0 = half of max_connections */
    unsigned idle_timeout_s;  /* an idle connection is closed after this; 0 = 5 */
    size_t memory_bytes;      /* per connection (headers, buffers); 0 = 16 KiB */
    unsigned extra_flags;     /* OR'ed into MHD_start_daemon's flags (MHD_ALLOW_SUSPEND_RESUME,
                               * MHD_USE_TLS, ...) */
    const struct MHD_OptionItem *extra_options; /* NULL or an array ended by MHD_OPTION_END */
    MHD_AccessHandlerCallback handler;          /* required */
    void *handler_cls;
    MHD_RequestCompletedCallback completed; /* NULL or called when a request ends */
    void *completed_cls;
};

/* Whether listen is "off". */
int httpd_is_off(const char *listen);
/* Binds and listens on cfg->listen (IPv4 or IPv6 as the address says) and starts the daemon;
 * *port is the bound port. 0 or -errno with err naming the flag, the address and the problem. */
int httpd_start(const struct httpd_config *cfg, struct MHD_Daemon **out, int *port,
                struct mm_error *err);
/* Stops the daemon (closes the listening socket; requests in flight are answered or cut).
 * NULL is fine. */
void httpd_stop(struct MHD_Daemon *d);

/* Queues a response with body (copied) and content type; adds Cache-Control: no-store and,
 * when allow is not NULL, Allow: <allow>. From a handler. */
enum MHD_Result httpd_reply(struct MHD_Connection *c, unsigned status, const char *content_type,
                            const char *body, size_t len, const char *allow);

#endif
