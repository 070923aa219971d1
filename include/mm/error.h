/* error.h - errors as values: a negative errno plus a message naming what failed and where. */
#ifndef MM_ERROR_H
#define MM_ERROR_H

#include <stddef.h>

#define MM_ERROR_MSG_MAX 256

struct mm_error {
    int code;                    /* 0 or a negative errno */
    char msg[MM_ERROR_MSG_MAX];  /* "etcd 127.0.0.1:2379: txn on /k: compare failed" */
};

/* Fill err (may be NULL) with code and a printf-style message; returns code so callers can
 * write `return mm_error_set(err, -EINVAL, "...")`. code must be negative. */
int mm_error_set(struct mm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with more context ("loading x: " + old message). */
int mm_error_prefix(struct mm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void mm_error_clear(struct mm_error *err);

/* Name of a negative errno ("ENOENT"-style text via strerror). */
const char *mm_strerror(int code);

#endif
