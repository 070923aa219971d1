/* error.c - one place that formats errors (see error.h). */
#include "mm/error.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int mm_error_set(struct mm_error *err, int code, const char *fmt, ...)
{
    assert(code <= 0);
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int mm_error_prefix(struct mm_error *err, const char *fmt, ...)
{
    if (!err)
        return 0;
    char prefix[MM_ERROR_MSG_MAX], old[MM_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Truncation is acceptable: the start of a message names the operation. */
    size_t n = strnlen(prefix, sizeof(err->msg) - 1);
    memcpy(err->msg, prefix, n);
    size_t rest = strnlen(old, sizeof(old) - 1);
    if (rest > sizeof(err->msg) - 1 - n)
        rest = sizeof(err->msg) - 1 - n;
    memcpy(err->msg + n, old, rest);
    err->msg[n + rest] = '\0';
    return err->code;
}

void mm_error_clear(struct mm_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

const char *mm_strerror(int code)
{
    return strerror(code < 0 ? -code : code);
}
