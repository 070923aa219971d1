/* pullcheck.c - see pullcheck.h. */
#include "pullcheck.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int pullcheck_write_pattern(const char *root, const char *rel, size_t size, unsigned seed)
{
    char path[PATH_MAX * 2];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", root, rel) >= sizeof path)
        return -ENAMETOOLONG;
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    for (size_t i = 0; i < size; i++)
        fputc((int)((i * 31 + seed * 7 + i / 251) & 0xff), f);
    return fclose(f) == 0 ? 0 : -EIO;
}

bool pullcheck_same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = pullcheck_read_all(a, &la), *y = pullcheck_read_all(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x), free(y);
    return same;
}

bool pullcheck_exists(const char *dir, const char *rel)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    return lstat(path, &st) == 0;
}
