/* opts.c - numeric option values, range-checked (see opts.h). */
#include "mm/opts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct unit {
    const char *suffix;
    uint64_t scale;
};

/* One kind of value: its units (NULL-terminated) and how messages name it. */
struct kind {
    const struct unit *units;
    const char *what;  /* "'x' is not <what>" */
    const char *label; /* after the range: " ms" */
};

static const struct unit no_units[] = {{NULL, 0}};
static const struct unit ms_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0}};
static const struct unit byte_units[] = {
    {"k", 1000},          {"K", 1000},          {"M", 1000000},       {"G", 1000000000},
    {"T", 1000000000000}, {"Ki", 1ull << 10},   {"Mi", 1ull << 20},   {"Gi", 1ull << 30},
    {"Ti", 1ull << 40},   {NULL, 0}};

static const struct kind number = {no_units, "a whole number", ""};
static const struct kind duration = {
    ms_units, "a duration (N milliseconds, or N with ms, s, m or h)", " ms"};
static const struct kind size = {
    byte_units, "a size (N bytes, or N with k, M, G, T, Ki, Mi, Gi or Ti)", " bytes"};

/* An optional '-', digits, an optional unit of k. The magnitude is exact or the result is
 * -ERANGE (it does not fit 64 bits); -EINVAL for anything else. */
static int scan(const char *value, const struct kind *k, bool *negative, uint64_t *magnitude)
{
    const char *p = value;
    *negative = *p == '-';
    p += *negative;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    uint64_t v = 0;
    bool over = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            over = true; /* keep reading: trailing junk is still -EINVAL */
        else
            v = v * 10 + d;
    }
    uint64_t scale = 1;
    if (*p) {
        const struct unit *u = k->units;
        while (u->suffix && strcmp(p, u->suffix) != 0)
            u++;
        if (!u->suffix)
            return -EINVAL;
        scale = u->scale;
    }
    if (over || v > UINT64_MAX / scale)
        return -ERANGE;
    *magnitude = v * scale;
    return 0;
}

static int needs_value(const char *flag, struct mm_error *err)
{
    return mm_error_set(err, -EINVAL, "%s needs a value", flag);
}

static int malformed(const char *flag, const char *value, const struct kind *k,
                     struct mm_error *err)
{
    return mm_error_set(err, -EINVAL, "%s: '%.64s' is not %s", flag, value, k->what);
}

static int unsigned_value(const char *flag, const char *value, const struct kind *k, uint64_t min,
                          uint64_t max, uint64_t *out, struct mm_error *err)
{
    if (!value)
        return needs_value(flag, err);
    bool negative;
    uint64_t v = 0;
    int rc = scan(value, k, &negative, &v);
    if (rc == -EINVAL)
        return malformed(flag, value, k, err);
    if (rc < 0 || (negative && v) || v < min || v > max)
        return mm_error_set(err, -ERANGE, "%s: '%.64s' is out of range %" PRIu64 "..%" PRIu64 "%s",
                            flag, value, min, max, k->label);
    *out = v;
    return 0;
}

int opts_u64(const char *flag, const char *value, uint64_t min, uint64_t max, uint64_t *out,
             struct mm_error *err)
{
    return unsigned_value(flag, value, &number, min, max, out, err);
}

int opts_ms(const char *flag, const char *value, uint64_t min_ms, uint64_t max_ms, uint64_t *out,
            struct mm_error *err)
{
    return unsigned_value(flag, value, &duration, min_ms, max_ms, out, err);
}

int opts_bytes(const char *flag, const char *value, uint64_t min, uint64_t max, uint64_t *out,
               struct mm_error *err)
{
    return unsigned_value(flag, value, &size, min, max, out, err);
}

int opts_port(const char *flag, const char *value, uint16_t *out, struct mm_error *err)
{
    uint64_t v;
    int rc = unsigned_value(flag, value, &number, 1, 65535, &v, err);
    if (rc == 0)
        *out = (uint16_t)v;
    return rc;
}

int opts_i64(const char *flag, const char *value, int64_t min, int64_t max, int64_t *out,
             struct mm_error *err)
{
    if (!value)
        return needs_value(flag, err);
    bool negative;
    uint64_t mag = 0;
    int rc = scan(value, &number, &negative, &mag);
    if (rc == -EINVAL)
        return malformed(flag, value, &number, err);
    /* -2^63 is the one magnitude a negative value may have beyond INT64_MAX. */
    bool fits = rc == 0 && mag <= (negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX);
    int64_t v = !fits ? 0 : negative ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    if (!fits || v < min || v > max)
        return mm_error_set(err, -ERANGE, "%s: '%.64s' is out of range %" PRId64 "..%" PRId64,
                            flag, value, min, max);
    *out = v;
    return 0;
}

int opts_password_file(const char *flag, const char *path, char *out, size_t out_size,
                     struct mm_error *err)
{
    if (out_size < 2)
        return mm_error_set(err, -EINVAL, "%s: no room for a password", flag);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return mm_error_set(err, -errno, "%s %s: %s", flag, path, strerror(errno));
    size_t n = fread(out, 1, out_size - 1, f);
    bool more = fgetc(f) != EOF, failed = ferror(f) != 0;
    fclose(f);
    if (failed)
        return mm_error_set(err, -EIO, "%s %s cannot be read", flag, path);
    if (more)
        return mm_error_set(err, -EFBIG, "%s %s is larger than %zu bytes", flag, path, out_size - 1);
    char *nl = memchr(out, '\n', n);
    size_t len = nl ? (size_t)(nl - out) : n;
    if (len && out[len - 1] == '\r')
        len--;
    out[len] = '\0';
    if (memchr(out, '\0', len))
        return mm_error_set(err, -EINVAL, "%s %s holds a NUL byte on its first line", flag, path);
    if (len == 0)
        return mm_error_set(err, -EINVAL, "%s %s is empty: the password is its first line", flag,
                            path);
    return 0;
}
