/* opts.h - numeric values of command-line options (and of the environment variables that stand
 * in for them), parsed the same way in every program.
 *
 * A value is decimal digits, nothing before them (no sign, space or "0x" where a sign is not
 * allowed) and nothing after them but a unit where the kind takes one. A value that is missing,
 * is not such a number, carries an unknown unit or lies outside [min, max] (including numbers
 * too large for 64 bits, which never wrap) is refused with a message naming the flag and the
 * value as given: "--workers: '4294967296' is out of range 1..1024".
 *
 * Returns 0 with *out set, -EINVAL (missing, malformed, unknown unit) or -ERANGE (out of range);
 * on error *out is left alone and err says why. Pure: no allocation, no I/O, no global state;
 * safe from any thread. */
#ifndef MM_OPTS_H
#define MM_OPTS_H

#include <stdint.h>

#include "mm/error.h"

/* flag names the option in messages ("--workers", "MM_RUNTIME_CAPACITY"); value may be NULL
 * (the option was last on the command line): "--workers needs a value". */
int opts_u64(const char *flag, const char *value, uint64_t min, uint64_t max, uint64_t *out,
             struct mm_error *err);
/* As opts_u64, with an optional leading '-'. */
int opts_i64(const char *flag, const char *value, int64_t min, int64_t max, int64_t *out,
             struct mm_error *err);
/* A duration in milliseconds: N (milliseconds), or N followed by ms, s, m or h ("90s"). */
int opts_ms(const char *flag, const char *value, uint64_t min_ms, uint64_t max_ms, uint64_t *out,
            struct mm_error *err);
/* A size in bytes: N, or N followed by k (or K), M, G, T (powers of 1000) or Ki, Mi, Gi, Ti
 * (powers of 1024), as Kubernetes writes quantities ("512Mi", "2G"). */
int opts_bytes(const char *flag, const char *value, uint64_t min, uint64_t max, uint64_t *out,
               struct mm_error *err);
/* A password read from a file, so that it is not in the process list: its first line,
 * without the line end (LF or CRLF), into out (out_size bytes, NUL-terminated; give
 * OPTS_PASSWORD_MAX + 1). 0, or -errno with err naming the flag, the file and the problem:
 * unreadable, larger than out_size - 1 bytes, empty, or a NUL on the first line. */
#define OPTS_PASSWORD_MAX 4096
int opts_password_file(const char *flag, const char *path, char *out, size_t out_size,
                     struct mm_error *err);
/* A TCP port, 1..65535. */
int opts_port(const char *flag, const char *value, uint16_t *out, struct mm_error *err);

#endif
