/* stdir.c - storage-config entries from a mounted Secret's directory (see stdir.h). */
#include "mm/stdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mm/log.h"

#define KEY_MAX 253 /* a Secret's data key */
#define QUOTE_MAX 80

/* What Kubernetes accepts as a Secret's data key. ".." at the start is refused there, and it
 * is what the kubelet names its own entries (..data, ..2026_...), so none of them is read. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > KEY_MAX || strcmp(k, ".") == 0 || strncmp(k, "..", 2) == 0)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_'))
            return false;
    return true;
}

int stdir_check(const char *dir, struct mm_error *err)
{
    struct stat st;
    if (!dir || !dir[0])
        return mm_error_set(err, -EINVAL, "storage-config dir: empty path");
    if (stat(dir, &st) < 0)
        return mm_error_set(err, -errno, "storage-config dir %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mm_error_set(err, -ENOTDIR, "storage-config dir %s: not a directory", dir);
    if (access(dir, R_OK | X_OK) < 0)
        return mm_error_set(err, -errno, "storage-config dir %s: %s", dir, strerror(errno));
    return 0;
}

int stdir_read(const char *dir, const char *key, char **json, struct mm_error *err)
{
    char qk[QUOTE_MAX], path[4096 + KEY_MAX + 2];
    *json = NULL;
    mm_log_escape(qk, sizeof(qk), key, strlen(key));
    if (!key_ok(key))
        return mm_error_set(err, -EINVAL,
                            "storage-config dir %s: key '%s' is no Secret data key "
                            "([-._a-zA-Z0-9], 1..%d bytes, not starting with '..')",
                            dir, qk, KEY_MAX);
    int len = snprintf(path, sizeof(path), "%s/%s", dir, key);
    if (len < 0 || (size_t)len >= sizeof(path))
        return mm_error_set(err, -ENAMETOOLONG, "storage-config dir %s: path too long", dir);
    /* O_NONBLOCK: a FIFO put there must not stall the node's loop (it is refused below) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return mm_error_set(err, -errno, "storage-config dir %s: key '%s': %s", dir, qk,
                            strerror(errno));
    }
    int rc = 0;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = mm_error_set(err, -errno, "storage-config dir %s: key '%s': %s", dir, qk,
                          strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mm_error_set(err, -EINVAL, "storage-config dir %s: key '%s' is not a regular file",
                          dir, qk);
        goto out;
    }
    /* the size is checked on what is read, not on st_size: the file may change meanwhile */
    if (!(buf = malloc(STDIR_MAX_BYTES + 2))) {
        rc = mm_error_set(err, -ENOMEM, "storage-config dir %s: key '%s': out of memory", dir, qk);
        goto out;
    }
    size_t got = 0;
    while (got <= STDIR_MAX_BYTES) {
        ssize_t r = read(fd, buf + got, STDIR_MAX_BYTES + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mm_error_set(err, -errno, "storage-config dir %s: key '%s': read: %s", dir, qk,
                              strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got > STDIR_MAX_BYTES) {
        rc = mm_error_set(err, -EFBIG, "storage-config dir %s: key '%s': more than %u bytes", dir,
                          qk, STDIR_MAX_BYTES);
        goto out;
    }
    if (memchr(buf, '\0', got)) {
        rc = mm_error_set(err, -EINVAL,
                          "storage-config dir %s: key '%s': the file holds a NUL byte", dir, qk);
        goto out;
    }
    buf[got] = '\0';
    *json = buf;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}
