/* download.c - HTTP requests of the object-store providers (see download.h). Placeholder until
 * the engine is written: every op fails with -ENOSYS. */
#include "mm/download.h"

#include <errno.h>
#include <stdlib.h>

struct dl {
    int unused;
};

int dl_new(const struct dl_config *cfg, struct dl **out, struct mm_error *err)
{
    (void)cfg;
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : mm_error_set(err, -ENOMEM, "out of memory");
}

void dl_free(struct dl *dl)
{
    free(dl);
}

int dl_text(struct dl *dl, const struct dl_request *req, size_t max_body, dl_text_cb cb,
            void *arg, struct dl_op **out, struct mm_error *err)
{
    (void)dl, (void)req, (void)max_body, (void)cb, (void)arg, (void)out;
    return mm_error_set(err, -ENOSYS, "downloads are not written yet");
}

int dl_files(struct dl *dl, int dirfd, const struct dl_file *files, size_t n,
             dl_progress_cb progress, dl_files_cb cb, void *arg, struct dl_op **out,
             struct mm_error *err)
{
    (void)dl, (void)dirfd, (void)files, (void)n, (void)progress, (void)cb, (void)arg, (void)out;
    return mm_error_set(err, -ENOSYS, "downloads are not written yet");
}

void dl_cancel(struct dl_op *op)
{
    (void)op;
}
