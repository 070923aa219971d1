/* fakehttp.c - see fakehttp.h. */
#include "fakehttp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX (1 << 20)
#define REPLY_MAX (1 << 20)

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Serve one connection until the client closes it. */
static void serve(int s, fakehttp_reply_fn reply, void *arg, long *served, char *req, char *out)
{
    size_t have = 0;
    for (;;) {
        ssize_t got = read(s, req + have, REQUEST_MAX - 1 - have);
        if (got <= 0)
            return;
        have += (size_t)got;
        req[have] = '\0';
        for (;;) { /* every whole request in the buffer */
            char *hdr_end = strstr(req, "\r\n\r\n");
            if (!hdr_end)
                break;
            char *cl = strcasestr(req, "Content-Length:");
            size_t body_len = cl && cl < hdr_end ? strtoul(cl + 15, NULL, 10) : 0;
            size_t head = (size_t)(hdr_end + 4 - req), total = head + body_len;
            if (total >= REQUEST_MAX)
                return;
            if (have < total)
                break;
            char path[256] = "";
            sscanf(req, "%*s %255s", path);
            char saved = req[total];
            req[total] = '\0';
            size_t n =
                reply((*served)++, path, req + head, body_len, out + 256, REPLY_MAX - 256, arg);
            req[total] = saved;
            int h = snprintf(out, 256,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n",
                             n);
            memmove(out + h, out + 256, n);
            if (!write_all(s, out, (size_t)h + n))
                return;
            memmove(req, req + total, have - total);
            have -= total;
            req[have] = '\0';
        }
    }
}

int fakehttp_start(fakehttp_reply_fn reply, void *arg, pid_t *pid, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *port = ntohs(a.sin_port);
    pid_t child = fork();
    if (child < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (child != 0) {
        close(fd);
        *pid = child;
        return 0;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(60); /* bounded even if the test forgets it */
    char *req = malloc(REQUEST_MAX), *out = malloc(REPLY_MAX);
    if (!req || !out)
        _exit(1);
    long served = 0;
    for (;;) {
        int s = accept(fd, NULL, NULL);
        if (s < 0)
            continue;
        serve(s, reply, arg, &served, req, out);
        close(s);
    }
}
