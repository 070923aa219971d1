/* fakehttp.h - a tiny HTTP/1.1 server on loopback that is not etcd: it answers every request
 * with 200 and the JSON its reply function writes, on kept-alive connections, one at a time.
 * For tests of what a client does with answers a real server never gives. It runs in a forked
 * child (the reply function runs there), which dies with the test (PR_SET_PDEATHSIG) and after
 * 60 s in any case. */
#ifndef MM_TEST_FAKEHTTP_H
#define MM_TEST_FAKEHTTP_H

#include <stddef.h>
#include <sys/types.h>

/* Write the reply body for the n-th request (0-based) to path with body into out (size bytes);
 * return its length. */
typedef size_t (*fakehttp_reply_fn)(long n, const char *path, const char *body, size_t body_len,
                                    char *out, size_t size, void *arg);

/* Start it on 127.0.0.1, a free port; 0 with *pid and *port, or -errno. Stop it with
 * harness_stop_pid(). */
int fakehttp_start(fakehttp_reply_fn reply, void *arg, pid_t *pid, int *port);

#endif
