/* pullcheck.h - what the provider tests share: recording a pull's outcome (remote.h's
 * callbacks) or a fetch's (storage.h's), the files served and compared, reading a file whole,
 * and the secrets grep.
 * Nothing here asserts (check.h's counters are per test file): the callers CHECK what these
 * record or return. Threading: the test's loop thread. */
#ifndef MM_TEST_PULLCHECK_H
#define MM_TEST_PULLCHECK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

/* A provider's pull (remote.h): pass pullcheck_pull_done as cb and pullcheck_progress as
 * progress, with a struct pullcheck_pull as arg. */
struct pullcheck_pull {
    int calls; /* done callbacks seen */
    int status;
    char msg[MM_ERROR_MSG_MAX]; /* err's message, "" without one */
    uint64_t bytes;
    char dest[PATH_MAX]; /* the directory pulled into, if the test keeps it here */
    int progress_calls;
    uint64_t progress_done, progress_total; /* the last progress call's */
};

void pullcheck_pull_done(int status, const struct mm_error *err, uint64_t bytes, void *arg);
void pullcheck_progress(uint64_t done, uint64_t total, void *arg);
bool pullcheck_pull_called(void *arg); /* for harness_run_until */

/* A storage_fetch (storage.h): pullcheck_fetch_done as cb, pullcheck_fetch_progress as
 * progress, with a struct pullcheck_fetch as arg. */
struct pullcheck_fetch {
    int calls;
    int status;
    char msg[MM_ERROR_MSG_MAX]; /* err's message, "" without one */
    char path[PATH_MAX];        /* local_path, "" without one */
    uint64_t bytes;             /* disk_bytes */
    int progress_calls;
    uint64_t progress_done, progress_total;
};

void pullcheck_fetch_done(int status, const struct mm_error *err, const char *local_path,
                          uint64_t disk_bytes, void *arg);
void pullcheck_fetch_progress(uint64_t done, uint64_t total, void *arg);
bool pullcheck_fetch_called(void *arg);

/* root/rel, its missing parent directories made, holding size bytes of a pattern that depends
 * on seed (files with other seeds differ). 0 or -errno. */
int pullcheck_write_pattern(const char *root, const char *rel, size_t size, unsigned seed);
/* Whether files a and b hold the same bytes (false if either cannot be read). */
bool pullcheck_same_file(const char *a, const char *b);
/* Whether dir/rel exists (lstat: a link counts, dangling or not). */
bool pullcheck_exists(const char *dir, const char *rel);

/* The whole file, NUL-terminated (malloc'd; *len its length, may be NULL); NULL if it
 * cannot be read or memory runs out. */
char *pullcheck_read_all(const char *path, size_t *len);

/* The secrets grep: true if secret does not occur in text. Else (and for an empty secret,
 * which cannot be grepped for) false, after printing where it was found and what it is
 * (never the secret itself). */
bool pullcheck_no_secret(const char *text, const char *secret, const char *where, const char *what);

#endif
