/* check.h - assertions for tests: each failed check prints where and what, and the test exits
 * non-zero at the end (CHECK_DONE) or at once (REQUIRE). */
#ifndef MM_TEST_CHECK_H
#define MM_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        check_count++;                                                                     \
        if (!(cond)) {                                                                     \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                  \
    } while (0)

#define CHECK_INT(a, b)                                                                    \
    do {                                                                                   \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                    \
        check_count++;                                                                     \
        if (check_a_ != check_b_) {                                                        \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,    \
                    __LINE__, #a, #b, check_a_, check_b_);                                 \
        }                                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *check_a_ = (a), *check_b_ = (b);                                       \
        check_count++;                                                                     \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                  \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                      \
                    check_b_ ? check_b_ : "(null)");                                       \
        }                                                                                  \
    } while (0)

/* Stop the test now: later steps make no sense without this. */
#define REQUIRE(cond)                                                                      \
    do {                                                                                   \
        check_count++;                                                                     \
        if (!(cond)) { /* evaluated once: cond may have side effects */                    \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: REQUIRE failed, stopping: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                                \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_DONE()                                                                       \
    (fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures),               \
     check_failures ? 1 : (check_count ? 0 : 1))

#endif
