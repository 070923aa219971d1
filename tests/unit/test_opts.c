/* test_opts.c - option values: accepted forms, units, the edges of each range, and refusals that
 * name the flag and the value (never a wrapped or truncated number). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>

#include "check.h"
#include "mm/opts.h"

static struct mm_error err;

/* The call failed with rc, left *out alone, and the message contains want. */
#define REFUSES(call, out, sentinel, rc, want)                                             \
    do {                                                                                   \
        out = sentinel;                                                                    \
        int rc_ = (call);                                                                  \
        CHECK_INT(rc_, rc);                                                                \
        CHECK(out == sentinel);                                                            \
        CHECK(strstr(err.msg, want) != NULL);                                              \
        if (!strstr(err.msg, want))                                                        \
            fprintf(stderr, "  %s\n  said '%s', wanted '%s'\n", #call, err.msg, want);     \
    } while (0)

static void test_u64(void)
{
    uint64_t v = 0;
    CHECK_INT(opts_u64("--n", "0", 0, 10, &v, &err), 0);
    CHECK_INT(v, 0);
    CHECK_INT(opts_u64("--n", "10", 0, 10, &v, &err), 0);
    CHECK_INT(v, 10);
    CHECK_INT(opts_u64("--n", "18446744073709551615", 0, UINT64_MAX, &v, &err), 0);
    CHECK(v == UINT64_MAX);
    CHECK_INT(opts_u64("--n", "007", 0, 10, &v, &err), 0); /* leading zeros are decimal */
    CHECK_INT(v, 7);

    /* 2^32 does not wrap to 0 in a 32-bit range, 2^64 does not wrap at all. */
    REFUSES(opts_u64("--workers", "4294967296", 1, UINT32_MAX, &v, &err), v, 99, -ERANGE,
            "--workers: '4294967296' is out of range 1..4294967295");
    REFUSES(opts_u64("--n", "18446744073709551616", 0, UINT64_MAX, &v, &err), v, 99, -ERANGE,
            "--n: '18446744073709551616' is out of range");
    REFUSES(opts_u64("--n", "99999999999999999999999999", 0, UINT64_MAX, &v, &err), v, 99,
            -ERANGE, "out of range");
    REFUSES(opts_u64("--n", "11", 0, 10, &v, &err), v, 99, -ERANGE, "'11' is out of range 0..10");
    REFUSES(opts_u64("--n", "0", 1, 10, &v, &err), v, 99, -ERANGE, "'0' is out of range 1..10");
    REFUSES(opts_u64("--n", "-1", 0, 10, &v, &err), v, 99, -ERANGE, "'-1' is out of range");
    CHECK_INT(opts_u64("--n", "-0", 0, 10, &v, &err), 0);

    /* Only digits: no junk after, no sign, space, hex or units before or after. */
    REFUSES(opts_u64("--n", "4x", 0, 10, &v, &err), v, 99, -EINVAL,
            "--n: '4x' is not a whole number");
    REFUSES(opts_u64("--n", "4294967297x", 0, UINT64_MAX, &v, &err), v, 99, -EINVAL, "not a");
    REFUSES(opts_u64("--n", "99999999999999999999999x", 0, 10, &v, &err), v, 99, -EINVAL,
            "not a whole number");
    REFUSES(opts_u64("--n", "", 0, 10, &v, &err), v, 99, -EINVAL, "'' is not a whole number");
    REFUSES(opts_u64("--n", " 1", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "1 ", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "+1", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "0x1", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "1.5", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "1k", 0, 10000, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", "-", 0, 10, &v, &err), v, 99, -EINVAL, "not a whole number");
    REFUSES(opts_u64("--n", NULL, 0, 10, &v, &err), v, 99, -EINVAL, "--n needs a value");
}

static void test_i64(void)
{
    int64_t v = 0;
    CHECK_INT(opts_i64("--d", "-5", -10, 10, &v, &err), 0);
    CHECK_INT(v, -5);
    CHECK_INT(opts_i64("--d", "9223372036854775807", INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK(v == INT64_MAX);
    CHECK_INT(opts_i64("--d", "-9223372036854775808", INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK(v == INT64_MIN);
    REFUSES(opts_i64("--d", "9223372036854775808", INT64_MIN, INT64_MAX, &v, &err), v, 7,
            -ERANGE, "'9223372036854775808' is out of range");
    REFUSES(opts_i64("--d", "-9223372036854775809", INT64_MIN, INT64_MAX, &v, &err), v, 7,
            -ERANGE, "out of range");
    REFUSES(opts_i64("--d", "-11", -10, 10, &v, &err), v, 7, -ERANGE,
            "--d: '-11' is out of range -10..10");
    REFUSES(opts_i64("--d", "--1", -10, 10, &v, &err), v, 7, -EINVAL, "not a whole number");
    REFUSES(opts_i64("--d", "1s", -10, 10, &v, &err), v, 7, -EINVAL, "not a whole number");
    REFUSES(opts_i64("--d", NULL, -10, 10, &v, &err), v, 7, -EINVAL, "needs a value");
}

static void test_ms(void)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } ok[] = {{"250", 250}, {"250ms", 250}, {"90s", 90000}, {"2m", 120000}, {"1h", 3600000},
              {"0s", 0}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 1;
        CHECK_INT(opts_ms("--timeout", ok[i].text, 0, UINT64_MAX, &v, &err), 0);
        CHECK_INT(v, ok[i].ms);
    }
    uint64_t v;
    /* 2^32 + 1 ms is not 1 ms in a 32-bit range. */
    REFUSES(opts_ms("--timeout", "4294967297", 1, 86400000, &v, &err), v, 5, -ERANGE,
            "--timeout: '4294967297' is out of range 1..86400000 ms");
    REFUSES(opts_ms("--timeout", "25h", 1, 86400000, &v, &err), v, 5, -ERANGE,
            "'25h' is out of range");
    REFUSES(opts_ms("--t", "5124095576030432h", 0, UINT64_MAX, &v, &err), v, 5, -ERANGE,
            "out of range"); /* the product overflows 64 bits */
    REFUSES(opts_ms("--t", "5sec", 0, UINT64_MAX, &v, &err), v, 5, -EINVAL,
            "'5sec' is not a duration");
    REFUSES(opts_ms("--t", "s", 0, UINT64_MAX, &v, &err), v, 5, -EINVAL, "not a duration");
    REFUSES(opts_ms("--t", "5S", 0, UINT64_MAX, &v, &err), v, 5, -EINVAL, "not a duration");
}

static void test_bytes(void)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {{"1000", 1000},          {"1k", 1000},          {"1K", 1000},
              {"3M", 3000000},         {"2G", 2000000000},    {"1T", 1000000000000},
              {"1Ki", 1024},           {"512Mi", 512u << 20}, {"1Gi", 1u << 30},
              {"16Ti", 16ull << 40}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 1;
        CHECK_INT(opts_bytes("--capacity-bytes", ok[i].text, 0, UINT64_MAX, &v, &err), 0);
        CHECK(v == ok[i].bytes);
    }
    uint64_t v;
    REFUSES(opts_bytes("--capacity-bytes", "16777216Ti", 0, UINT64_MAX, &v, &err), v, 5, -ERANGE,
            "--capacity-bytes: '16777216Ti' is out of range 0..18446744073709551615 bytes");
    REFUSES(opts_bytes("--capacity-bytes", "1GB", 0, UINT64_MAX, &v, &err), v, 5, -EINVAL,
            "'1GB' is not a size");
    REFUSES(opts_bytes("--capacity-bytes", "1Pi", 0, UINT64_MAX, &v, &err), v, 5, -EINVAL,
            "not a size");
    REFUSES(opts_bytes("--capacity-bytes", "0", 1, UINT64_MAX, &v, &err), v, 5, -ERANGE,
            "'0' is out of range 1..");
}

static void test_port(void)
{
    uint16_t p = 0;
    CHECK_INT(opts_port("--port", "1", &p, &err), 0);
    CHECK_INT(p, 1);
    CHECK_INT(opts_port("--port", "65535", &p, &err), 0);
    CHECK_INT(p, 65535);
    REFUSES(opts_port("--port", "0", &p, &err), p, 7, -ERANGE, "'0' is out of range 1..65535");
    REFUSES(opts_port("--port", "65536", &p, &err), p, 7, -ERANGE, "'65536' is out of range");
    REFUSES(opts_port("--port", "80a", &p, &err), p, 7, -EINVAL, "'80a' is not a whole number");
}

/* A password file: its first line, without LF or CRLF; empty, NUL-bearing, oversized and
 * missing files are refused naming the flag and the file. */
static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static void test_password_file(void)
{
    char dir[] = "/tmp/mm-opts-XXXXXX", path[64], pw[OPTS_PASSWORD_MAX + 1];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/pw", dir);
    write_file(path, "s3cr3t\r\nsecond line\n", 21);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), 0);
    CHECK_STR(pw, "s3cr3t");
    write_file(path, "no newline", 10);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), 0);
    CHECK_STR(pw, "no newline");
    write_file(path, "\nlater", 6);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), -EINVAL);
    CHECK(strstr(err.msg, "is empty") != NULL);
    write_file(path, "a\0b\n", 4);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), -EINVAL);
    CHECK(strstr(err.msg, "NUL") != NULL);
    char *big = malloc(OPTS_PASSWORD_MAX + 1);
    REQUIRE(big != NULL);
    memset(big, 'x', OPTS_PASSWORD_MAX + 1);
    write_file(path, big, OPTS_PASSWORD_MAX + 1);
    free(big);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), -EFBIG);
    CHECK(strstr(err.msg, "--password-file") && strstr(err.msg, "larger than 4096 bytes"));
    unlink(path);
    CHECK_INT(opts_password_file("--password-file", path, pw, sizeof(pw), &err), -ENOENT);
    CHECK(strstr(err.msg, path) != NULL);
    rmdir(dir);
}

int main(void)
{
    test_u64();
    test_password_file();
    test_i64();
    test_ms();
    test_bytes();
    test_port();
    /* A long value is quoted shortened, the message still whole. */
    char long_value[300];
    memset(long_value, '9', sizeof(long_value) - 2);
    long_value[sizeof(long_value) - 2] = 'x';
    long_value[sizeof(long_value) - 1] = '\0';
    uint64_t v;
    REFUSES(opts_u64("--workers", long_value, 0, 10, &v, &err), v, 3, -EINVAL,
            "' is not a whole number");
    CHECK(strncmp(err.msg, "--workers: '9999", 16) == 0);
    return CHECK_DONE();
}
