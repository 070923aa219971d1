/* httpd.c - a bounded libmicrohttpd daemon on a socket we bind ourselves (httpd.h). */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mm/httpd.h"
#include "mm/opts.h"

int httpd_is_off(const char *listen)
{
    return listen && strcmp(listen, "off") == 0;
}

/* A bound, listening socket for "HOST:PORT", "[V6]:PORT" or ":PORT"; -errno with err set. */
static int listen_on(const char *flag, const char *addr, int *family, struct mm_error *err)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return mm_error_set(err, -EINVAL, "%s '%s': not HOST:PORT (or off)", flag, addr);
    char host[256];
    size_t hn = (size_t)(colon - addr);
    const char *h = addr;
    if (hn >= 2 && addr[0] == '[' && addr[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    if (hn >= sizeof(host))
        return mm_error_set(err, -EINVAL, "%s '%s': host too long", flag, addr);
    memcpy(host, h, hn);
    host[hn] = '\0';
    uint64_t port;
    struct mm_error perr = {0};
    char what[64];
    snprintf(what, sizeof(what), "%s port", flag);
    if (opts_u64(what, colon + 1, 0, 65535, &port, &perr) < 0)
        return mm_error_set(err, -EINVAL, "%s '%s': %s", flag, addr, perr.msg);
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, service, &hints, &res);
    if (gai != 0)
        return mm_error_set(err, -EINVAL, "%s '%s': %s", flag, addr, gai_strerror(gai));
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
        return mm_error_set(err, -last, "%s '%s': %s", flag, addr, strerror(last));
    return fd;
}

int httpd_start(const struct httpd_config *cfg, struct MHD_Daemon **out, int *port,
                struct mm_error *err)
{
    *out = NULL;
    const char *flag = cfg->flag ? cfg->flag : "listen";
    if (!cfg->listen || !cfg->handler)
        return mm_error_set(err, -EINVAL, "%s: no address or no handler", flag);
    if (httpd_is_off(cfg->listen))
        return mm_error_set(err, -EINVAL, "%s is off: nothing to start", flag);
    int family = AF_INET;
    int fd = listen_on(flag, cfg->listen, &family, err);
    if (fd < 0)
        return fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        int e = errno;
        close(fd);
        return mm_error_set(err, -e, "%s '%s': getsockname: %s", flag, cfg->listen, strerror(e));
    }
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    unsigned conns = cfg->max_connections ? cfg->max_connections : 64u;
    unsigned per_ip = cfg->max_per_ip ? cfg->max_per_ip : (conns + 1) / 2;
    unsigned idle = cfg->idle_timeout_s ? cfg->idle_timeout_s : 5u;
    size_t mem = cfg->memory_bytes ? cfg->memory_bytes : 16384u;
    unsigned flags = cfg->extra_flags;
    if (!(flags & MHD_USE_THREAD_PER_CONNECTION))
        flags |= MHD_USE_AUTO_INTERNAL_THREAD;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    static const struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    *out = MHD_start_daemon(
        flags, 0, NULL, NULL, cfg->handler, cfg->handler_cls, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        per_ip, MHD_OPTION_CONNECTION_TIMEOUT, idle, MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem,
        MHD_OPTION_NOTIFY_COMPLETED, cfg->completed, cfg->completed_cls, MHD_OPTION_ARRAY,
        cfg->extra_options ? cfg->extra_options : none, MHD_OPTION_END);
    if (!*out) {
        close(fd);
        return mm_error_set(err, -EIO, "%s '%s': the HTTP server did not start", flag,
                            cfg->listen);
    }
    return 0;
}

void httpd_stop(struct MHD_Daemon *d)
{
    if (d)
        MHD_stop_daemon(d); /* closes the listening socket too */
}

enum MHD_Result httpd_reply(struct MHD_Connection *c, unsigned status, const char *content_type,
                            const char *body, size_t len, const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}
