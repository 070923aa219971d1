/* http.c - the http object-store provider (see remote.h). Placeholder until written: a pull fails
 * with -ENOSYS. */
#include "mm/remote.h"

#include <errno.h>

static int pull(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err)
{
    (void)state, (void)dl, (void)src, (void)dirfd, (void)progress, (void)cb, (void)arg, (void)out;
    return mm_error_set(err, -ENOSYS, "the http provider is not written yet");
}

static void cancel(void *p)
{
    (void)p;
}

const struct remote_provider remote_http = {.type = "http", .pull = pull, .cancel = cancel};
