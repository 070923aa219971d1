/* test_mmctl_hostile.c - mmctl's registry verbs against keys, values and servers that once made
 * it loop, lose records, print duplicates, drive the terminal or fail without saying why:
 *   - keys longer than 1023 bytes and keys holding NUL, at page boundaries (small pages): every
 *     record once, its key printed whole and escaped, "N records" of N; get and put of a
 *     2000-byte key;
 *   - a server that is not etcd ({} to everything, "more" forever with a stuck count, the same
 *     key again): an error, never "0 records at revision 0", never a loop;
 *   - keys, values and server messages holding ESC, other control characters, C1 controls and
 *     bytes that are not UTF-8: nothing raw reaches the terminal;
 *   - values of 1.4 MB: paged by bytes under a small reply cap; a cap below one value names
 *     the cap and the flag.
 * argv[1] = mmctl. Real etcd and a fake server on loopback. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fakehttp.h"
#include "harness.h"
#include "mm/base64.h"

static const char *mmctl;
static char *out; /* what the last run printed, stdout then stderr (malloc'd) */
static size_t out_len;
static char *err_text; /* its stderr alone */

/* Run `mmctl ARGS` (shell words) with the endpoint; stdout and stderr kept apart. */
static int run(const char *endpoint, const char *args)
{
    char dir[] = "/tmp/mm-hostile-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    size_t size = strlen(args) + 1024;
    char *cmd = malloc(size);
    REQUIRE(cmd != NULL);
    snprintf(cmd, size, "MM_ETCD_ENDPOINTS='%s' MM_CLUSTER=h timeout 60 '%s' %s >%s/out 2>%s/err",
             endpoint, mmctl, args, dir, dir);
    int status = system(cmd);
    free(cmd);
    free(out);
    free(err_text);
    out = NULL;
    err_text = NULL;
    out_len = 0;
    char path[64];
    for (int which = 0; which < 2; which++) {
        snprintf(path, sizeof(path), "%s/%s", dir, which ? "err" : "out");
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL);
        REQUIRE(fseek(f, 0, SEEK_END) == 0);
        long n = ftell(f);
        rewind(f);
        char *buf = malloc((size_t)n + 1);
        REQUIRE(buf != NULL);
        REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n);
        buf[n] = '\0';
        fclose(f);
        unlink(path);
        if (which == 0) {
            out = buf;
            out_len = (size_t)n;
        } else {
            err_text = buf;
            char *both = realloc(out, out_len + (size_t)n + 1);
            REQUIRE(both != NULL);
            memcpy(both + out_len, buf, (size_t)n + 1);
            out = both;
            out_len += (size_t)n;
        }
    }
    rmdir(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Occurrences of needle (nlen bytes) in what was printed. */
static size_t count(const char *needle, size_t nlen)
{
    size_t n = 0;
    for (const char *p = out; (p = memmem(p, out_len - (size_t)(p - out), needle, nlen)); p++)
        n++;
    return n;
}

/* Nothing printed holds a byte a terminal acts on: C0 controls but the line end, DEL, C1 as
 * raw bytes or as UTF-8. */
static bool terminal_safe(void)
{
    for (size_t i = 0; i < out_len; i++) {
        unsigned char ch = (unsigned char)out[i];
        if ((ch < 0x20 && ch != '\n') || ch == 0x7f ||
            (ch >= 0x80 && ch <= 0x9f && i > 0 && (unsigned char)out[i - 1] == 0xc2)) {
            fprintf(stderr, "  raw byte 0x%02x at %zu of %zu\n", ch, i, out_len);
            return false;
        }
        if (ch >= 0x80 && ch < 0xc2 && (i == 0 || (unsigned char)out[i - 1] < 0xc2) &&
            (i < 2 || (unsigned char)out[i - 2] < 0xe0) &&
            (i < 3 || (unsigned char)out[i - 3] < 0xf0)) {
            fprintf(stderr, "  stray byte 0x%02x at %zu of %zu\n", ch, i, out_len);
            return false;
        }
    }
    return true;
}

#define EXPECT(endpoint, args, code, fragment)                                                     \
    do {                                                                                           \
        int rc_ = run(endpoint, args);                                                             \
        CHECK_INT(rc_, code);                                                                      \
        CHECK(strstr(out, fragment) != NULL);                                                      \
        if (rc_ != (code) || !strstr(out, fragment))                                               \
            fprintf(stderr, "  mmctl %.200s\n  exited %d, printed: %.2000s\n  wanted: %s\n", args, \
                    rc_, out, fragment);                                                           \
    } while (0)

/* Write key (any bytes) = value through etcd's gateway with curl, the body from a file. */
static void raw_put(const char *endpoint, const char *key, size_t klen, const char *value,
                    size_t vlen)
{
    char path[] = "/tmp/mm-put-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    REQUIRE(f != NULL);
    char *k64 = malloc(base64_encoded_size(klen)), *v64 = malloc(base64_encoded_size(vlen));
    REQUIRE(k64 && v64);
    base64_encode(key, klen, k64);
    base64_encode(value, vlen, v64);
    fprintf(f, "{\"key\":\"%s\",\"value\":\"%s\"}", k64, v64);
    fclose(f);
    free(k64);
    free(v64);
    char cmd[512], said[1024];
    snprintf(cmd, sizeof(cmd), "curl -sS -X POST %s/v3/kv/put --data-binary @%s", endpoint, path);
    int rc = harness_capture(cmd, said, sizeof(said));
    CHECK(rc == 0 && strstr(said, "\"revision\"") != NULL);
    if (rc != 0 || !strstr(said, "\"revision\""))
        fprintf(stderr, "  raw put: %d %.300s\n", rc, said);
    unlink(path);
}

/* ---------------------------------------------------------------- long and NUL-bearing keys */

static void test_byte_keys(const char *e)
{
    /* Keys that share a prefix up to a NUL, and keys of 1500 and 3000 bytes that differ only
     * at their ends: a C-string cursor repeats or skips them at page boundaries. */
    static const char *const nul_keys[] = {"/modelmesh/h/x/a", "/modelmesh/h/x/a\0b",
                                           "/modelmesh/h/x/a\0c", "/modelmesh/h/x/a\0\0",
                                           "/modelmesh/h/x/a\001"};
    static const size_t nul_lens[] = {16, 18, 18, 18, 17};
    for (size_t i = 0; i < 5; i++)
        raw_put(e, nul_keys[i], nul_lens[i], "{\"v\":1}", 7);
    size_t n_long = 6;
    char *longk = malloc(3001);
    REQUIRE(longk != NULL);
    for (size_t i = 0; i < n_long; i++) {
        size_t len = i < 3 ? 1500 : 3000;
        memset(longk, 'k', len);
        memcpy(longk, "/modelmesh/h/y/", 15);
        longk[len - 1] = (char)('0' + i);
        raw_put(e, longk, len, "{\"v\":1}", 7);
    }
    for (int page = 1; page <= 3; page++) {
        char args[128];
        snprintf(args, sizeof(args), "registry dump --page-keys %d", page);
        EXPECT(e, args, 0, "11 records under /modelmesh/h/ at revision");
        /* Every key once, whole, its NUL bytes escaped. */
        CHECK_INT(count("/modelmesh/h/x/a\n", 17), 1);
        CHECK_INT(count("/modelmesh/h/x/a\\x00b\n", 22), 1);
        CHECK_INT(count("/modelmesh/h/x/a\\x00c\n", 22), 1);
        CHECK_INT(count("/modelmesh/h/x/a\\x00\\x00\n", 25), 1);
        CHECK_INT(count("/modelmesh/h/x/a\\x01\n", 21), 1);
        for (size_t i = 0; i < n_long; i++) {
            size_t len = i < 3 ? 1500 : 3000;
            memset(longk, 'k', len);
            memcpy(longk, "/modelmesh/h/y/", 15);
            longk[len - 1] = (char)('0' + i);
            longk[len] = '\n';
            CHECK_INT(count(longk, len + 1), 1);
        }
        CHECK_INT(count("\"v\": 1", 6), 11);
        CHECK(terminal_safe());
    }
    /* By bytes: pages of about 2000 bytes hold one long key each. */
    EXPECT(e, "registry dump --page-keys 100 --page-bytes 2000 --prefix y/", 0,
           "6 records under /modelmesh/h/y/");
    /* get and put of a key longer than the 1024 bytes a buffer once had. */
    memset(longk, 'g', 2000);
    memcpy(longk, "blobs/", 6);
    longk[2000] = '\0';
    char args[2200];
    snprintf(args, sizeof(args), "registry put %s '{\"v\":1}'", longk);
    EXPECT(e, args, 0, "stored /modelmesh/h/blobs/ggg");
    CHECK(strstr(out, longk + 6) != NULL);
    snprintf(args, sizeof(args), "registry get %s", longk);
    EXPECT(e, args, 0, "\"v\": 1");
    snprintf(args, sizeof(args), "registry get %sx", longk);
    EXPECT(e, args, 1, "no record at /modelmesh/h/blobs/ggg");
    free(longk);
}

/* ---------------------------------------------------------------- a server that is not etcd */

enum fake_mode { FAKE_EMPTY, FAKE_MORE_STUCK, FAKE_SAME_KEY, FAKE_ESC_ERROR };

static size_t fake_reply(long n, const char *path, const char *body, size_t body_len, char *o,
                         size_t size, void *arg)
{
    enum fake_mode mode = *(const enum fake_mode *)arg;
    char key[64], k64[128];
    snprintf(key, sizeof(key), "/modelmesh/h/f/%08ld", mode == FAKE_SAME_KEY ? 0 : n);
    base64_encode(key, strlen(key), k64);
    const char *hdr = "\"header\":{\"revision\":\"9\",\"member_id\":\"1\"}";
    int len = 0;
    switch (mode) {
    case FAKE_EMPTY:
        len = snprintf(o, size, "{}");
        break;
    case FAKE_MORE_STUCK:
        len = snprintf(o, size,
                       "{%s,\"kvs\":[{\"key\":\"%s\",\"value\":\"e30=\"}],\"more\":true,"
                       "\"count\":\"5000000\"}",
                       hdr, k64);
        break;
    case FAKE_SAME_KEY:
        len = snprintf(o, size,
                       "{%s,\"kvs\":[{\"key\":\"%s\",\"value\":\"e30=\"}],\"more\":true,"
                       "\"count\":\"%ld\"}",
                       hdr, k64, 5000000 - n);
        break;
    case FAKE_ESC_ERROR:
        len = snprintf(o, size,
                       "{\"error\":\"x\",\"code\":3,\"message\":\"\\u001b[2J\\u001b]0;"
                       "owned\\u0007 \\u009b31m bad\"}");
        break;
    }
    return (size_t)len;
}

static void test_not_etcd(void)
{
    static const struct {
        enum fake_mode mode;
        const char *args;
        const char *fragment;
    } cases[] = {
        {FAKE_EMPTY, "registry dump", "a reply without a header revision: is this etcd?"},
        {FAKE_EMPTY, "registry get models/m",
         "range /modelmesh/h/models/m: a reply without a "
         "header revision"},
        {FAKE_EMPTY, "registry put models/m '{\"v\":1,\"type\":\"t\"}'",
         "put /modelmesh/h/models/m: a reply without a header revision"},
        {FAKE_MORE_STUCK, "registry dump", "more keys left than the page before"},
        {FAKE_SAME_KEY, "registry dump --page-keys 1", "keys are out of order"},
        {FAKE_ESC_ERROR, "registry dump", "\\x1b[2J\\x1b]0;owned\\x07 \\xc2\\x9b31m bad"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum fake_mode mode = cases[i].mode;
        pid_t pid = 0;
        int port = 0;
        REQUIRE(fakehttp_start(fake_reply, &mode, &pid, &port) == 0);
        char ep[64];
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
        long long t0 = harness_now_ms();
        EXPECT(ep, cases[i].args, 1, cases[i].fragment);
        CHECK(harness_now_ms() - t0 < 10000); /* ends, and soon */
        CHECK(strstr(out, "at revision 0") == NULL);
        CHECK(strstr(out, "stored") == NULL);
        CHECK(out_len < 100000); /* no flood of records */
        CHECK(terminal_safe());
        harness_stop_pid(pid, 1000);
    }
}

/* ---------------------------------------------------------------- terminal injection */

static void test_terminal(const char *e)
{
    /* A key with an ANSI sequence and a title-setting OSC; values that are not JSON, with ESC,
     * CR, a C1 CSI as UTF-8 and as a raw byte; JSON whose strings hold the same (escaped by the
     * JSON printer or raw in it); a bidi override. */
#define RAW_PUT(k, v) raw_put(e, k, sizeof(k) - 1, v, sizeof(v) - 1)
    RAW_PUT("/modelmesh/h/t/\033[31mred\033]0;title\007", "\033[2J\rplain\n");
    RAW_PUT("/modelmesh/h/t/c1", "\xc2\x9b"
                                 "31m \x9b"
                                 "31m \xff");
    RAW_PUT("/modelmesh/h/t/json", "{\"v\":1,\"s\":\"\\u001b[2J \xc2\x9b"
                                   "31m \xe2\x80\xae"
                                   "evil\"}");
    RAW_PUT("/modelmesh/h/t/ctl\xc2\x9b", "{\"v\":1}");
    EXPECT(e, "registry dump --prefix t/", 0, "4 records under /modelmesh/h/t/");
    CHECK(terminal_safe());
    CHECK(strstr(out, "/modelmesh/h/t/\\x1b[31mred\\x1b]0;title\\x07\n") != NULL);
    CHECK(strstr(out, "\\x1b[2J\\rplain\\n\n") != NULL);
    CHECK(strstr(out, "\\xc2\\x9b31m \\x9b31m \\xff\n") != NULL);
    CHECK(strstr(out, "\"s\": \"\\u001b[2J \\u009b31m \\u202eevil\"") != NULL);
    CHECK(strstr(out, "/modelmesh/h/t/ctl\\xc2\\x9b\n") != NULL);
    if (!terminal_safe())
        fprintf(stderr, "  printed: %s\n", out);
    /* The warning about a value that is not JSON names the key escaped. */
    CHECK(strstr(err_text, "warning: /modelmesh/h/t/\\x1b[31mred\\x1b]0;title\\x07: the value is "
                           "not valid JSON") != NULL);
    /* get, and what mmctl echoes from its command line. */
    EXPECT(e, "registry get \"$(printf 't/\\033[31mred\\033]0;title\\007')\"", 0, "\\x1b[2J");
    CHECK(terminal_safe());
    EXPECT(e, "registry get \"$(printf 't/\\033[1mnone')\"", 1,
           "no record at /modelmesh/h/t/\\x1b[1mnone");
    CHECK(terminal_safe());
    EXPECT(e, "registry \"$(printf 'fr\\033[1mob')\"", 2, "unknown registry verb 'fr\\x1b[1mob'");
    CHECK(terminal_safe());
    EXPECT(e, "\"$(printf -- '--x\\033[1m')\" registry dump", 2, "unknown option --x\\x1b[1m");
    CHECK(terminal_safe());
    /* A backslash in a key is doubled, so what is printed reads back to one key. */
    RAW_PUT("/modelmesh/h/t2/a\\x1b", "{\"v\":1}");
#undef RAW_PUT
    EXPECT(e, "registry dump --prefix t2/", 0, "/modelmesh/h/t2/a\\\\x1b\n");
}

/* ---------------------------------------------------------------- values of 1.4 MB */

static void test_big_values(const char *e)
{
    size_t vlen = 1400000;
    char *v = malloc(vlen);
    REQUIRE(v != NULL);
    memset(v, 'b', vlen);
    memcpy(v, "{\"v\":1,\"blob\":\"", 15);
    memcpy(v + vlen - 2, "\"}", 2);
    for (int i = 0; i < 5; i++) {
        char k[64];
        int n = snprintf(k, sizeof(k), "/modelmesh/h/big/%d", i);
        raw_put(e, k, (size_t)n, v, vlen);
    }
    free(v);
    /* The first request used to ask for 500 keys: 5 x 1.87 MB of base64 in one reply, over a
     * 4 MiB cap ("Failure writing output to destination"). Now pages are bounded by bytes. */
    EXPECT(e, "--max-reply-bytes 4Mi registry dump --prefix big/", 0,
           "5 records under /modelmesh/h/big/");
    CHECK(out_len > 5 * vlen);
    EXPECT(e, "registry dump --prefix big/ --page-bytes 1", 0, "5 records");
    EXPECT(e, "registry dump --prefix big/", 0, "5 records");
    /* A cap below one value: the cause and the cure. */
    EXPECT(e, "--max-reply-bytes 1Mi registry dump --prefix big/", 1,
           "the reply is larger than the reply cap of 1 MiB with one key in it");
    CHECK(strstr(out, "--max-reply-bytes") != NULL);
    CHECK(strstr(out, "Failure writing output") == NULL);
    EXPECT(e, "--max-reply-bytes 1Mi registry get big/0", 1,
           "the reply is larger than the reply cap of 1 MiB");
    /* The flags are range-checked. */
    EXPECT(e, "--max-reply-bytes 100 registry dump", 2, "--max-reply-bytes: '100' is out of range");
    EXPECT(e, "--page-keys 0 registry dump", 2, "--page-keys: '0' is out of range");
    EXPECT(e, "--page-keys 4294967297 registry dump", 2, "--page-keys: '4294967297' is out of");
    EXPECT(e, "--page-bytes 2Gi registry dump", 2, "--page-bytes: '2Gi' is out of range");
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    mmctl = argv[1];
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    test_byte_keys(etcd.endpoint);
    test_not_etcd();
    test_terminal(etcd.endpoint);
    test_big_values(etcd.endpoint);
    harness_etcd_cleanup(&etcd);
    free(out);
    free(err_text);
    return CHECK_DONE();
}
