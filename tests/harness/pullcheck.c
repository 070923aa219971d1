/* pullcheck.c - see pullcheck.h. */
#include "pullcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pullcheck_pull_done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct pullcheck_pull *r = arg;
    r->calls++;
    r->status = status;
    snprintf(r->msg, sizeof r->msg, "%s", err ? err->msg : "");
    r->bytes = bytes;
}

void pullcheck_progress(uint64_t done, uint64_t total, void *arg)
{
    struct pullcheck_pull *r = arg;
    r->progress_calls++;
    r->progress_done = done;
    r->progress_total = total;
}

bool pullcheck_pull_called(void *arg)
{
    return ((struct pullcheck_pull *)arg)->calls > 0;
}

void pullcheck_fetch_done(int status, const struct mm_error *err, const char *local_path,
                          uint64_t disk_bytes, void *arg)
{
    struct pullcheck_fetch *r = arg;
    r->calls++;
    r->status = status;
    snprintf(r->msg, sizeof r->msg, "%s", err ? err->msg : "");
    snprintf(r->path, sizeof r->path, "%s", local_path ? local_path : "");
    r->bytes = disk_bytes;
}

void pullcheck_fetch_progress(uint64_t done, uint64_t total, void *arg)
{
    struct pullcheck_fetch *r = arg;
    r->progress_calls++;
    r->progress_done = done;
    r->progress_total = total;
}

bool pullcheck_fetch_called(void *arg)
{
    return ((struct pullcheck_fetch *)arg)->calls > 0;
}

char *pullcheck_read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

bool pullcheck_no_secret(const char *text, const char *secret, const char *where, const char *what)
{
    if (!secret[0]) {
        fprintf(stderr, "an empty secret (%s) cannot be grepped for\n", what);
        return false;
    }
    if (!strstr(text, secret))
        return true;
    fprintf(stderr, "a secret (%s) is in %s\n", what, where);
    return false;
}
