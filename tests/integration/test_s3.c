/* test_s3.c - the s3 provider through storage.h against a real s3rver (tests/servers, started
 * on a free loopback port and stopped by pid) whose wrapper verifies SigV4 signatures: a single
 * object (bytes equal, MD5 from the ETag checked); a prefix with several files, a zero-byte
 * object and a folder marker skipped and a `tree2/` sibling not picked; more objects than one
 * listing page (list_page_size, through a proxy counting continuation requests); the key's
 * alias access_key; bad credentials (a wrong secret, an unknown key id), a missing bucket, a
 * missing object, a wrong region, anonymous access refused, each with the message a user acts
 * on; a 500 on the first attempt of an object (faultproxy) retried; and no secret value in any
 * message or in the servers' logs. argv[1]: tests/servers. */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "faultproxy.h"
#include "harness.h"
#include "pullcheck.h"
#include "mm/curlev.h"
#include "mm/storage.h"
#include "s3rver.h"

#define BUCKET "modelmesh-example-models"

static struct ev_loop *loop;
static struct harness_s3rver s3, s3auth;
static struct faultproxy proxy;
static char key_id[40], secret[48], cache[PATH_MAX];
static char messages[16384]; /* every message seen, for the secrets grep */

/* ---- the storage-config secret ---- */

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    (void)arg, (void)err;
    char buf[1024];
    const char *ep = s3.endpoint;
    if (!strcmp(key, "s3good"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\","
                 "\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
                 key_id, secret, ep);
    else if (!strcmp(key, "s3alias")) /* the walkthrough's spelling, and default_bucket */
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key\":\"%s\",\"secret_access_key\":\"%s\","
                 "\"endpoint_url\":\"%s/\",\"default_bucket\":\"" BUCKET "\","
                 "\"region\":\"us-east-1\"}",
                 key_id, secret, ep);
    else if (!strcmp(key, "s3proxy"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\","
                 "\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
                 key_id, secret, proxy.url);
    else if (!strcmp(key, "s3badsecret"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%s\",\"secret_access_key\":\"%sX\","
                 "\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
                 key_id, secret, ep);
    else if (!strcmp(key, "s3badid"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%sX\",\"secret_access_key\":\"%s\","
                 "\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
                 key_id, secret, ep);
    else if (!strcmp(key, "s3region"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%s\",\"secret_access_key\":\"%s\","
                 "\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\",\"region\":\"eu-west-3\"}",
                 key_id, secret, ep);
    else if (!strcmp(key, "s3anon"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
                 s3auth.endpoint);
    else if (!strcmp(key, "s3half"))
        snprintf(buf, sizeof buf,
                 "{\"type\":\"s3\",\"access_key_id\":\"%s\",\"endpoint_url\":\"%s\","
                 "\"bucket\":\"" BUCKET "\"}",
                 key_id, ep);
    else
        return -ENOENT;
    *json = strdup(buf);
    return *json ? 0 : -ENOMEM;
}

/* ---- fetching ---- */

static struct pullcheck_fetch fetch(struct storage *st, const char *id, const char *key,
                                    const char *params, const char *path)
{
    struct pullcheck_fetch r = {0};
    struct storage_model m = {.model_id = id,
                              .storage_key = key,
                              .storage_params = params,
                              .storage_path = path,
                              .progress = pullcheck_fetch_progress,
                              .progress_arg = &r};
    struct mm_error err = {0};
    int rc = storage_fetch(st, &m, pullcheck_fetch_done, &r, NULL, &err);
    if (rc < 0) {
        r.calls = -1;
        r.status = rc;
        snprintf(r.msg, sizeof r.msg, "%s", err.msg);
    } else {
        harness_run_until(loop, pullcheck_fetch_called, &r, 30000);
        CHECK_INT(r.calls, 1);
    }
    size_t l = strlen(messages);
    snprintf(messages + l, sizeof messages - l, "%s\n", r.msg);
    if (r.status != 0)
        fprintf(stderr, "  fetch %s %s: %d %s\n", key, path, r.status, r.msg);
    return r;
}

static void expect_fail(struct storage *st, const char *key, const char *path, int code,
                        const char *part1, const char *part2)
{
    struct pullcheck_fetch r = fetch(st, "bad", key, NULL, path);
    CHECK_INT(r.status, code);
    if (!strstr(r.msg, part1) || (part2 && !strstr(r.msg, part2)))
        fprintf(stderr, "  message \"%s\" lacks \"%s\" or \"%s\"\n", r.msg, part1,
                part2 ? part2 : "");
    CHECK(strstr(r.msg, part1) != NULL);
    CHECK(!part2 || strstr(r.msg, part2) != NULL);
    CHECK_STR(r.path, "");
}

/* ---- objects ---- */

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (char)(seed >> 16);
    }
}

static void put(struct harness_s3rver *s, const char *key, size_t n, unsigned seed)
{
    char *p = malloc(n ? n : 1);
    REQUIRE(p);
    fill(p, n, seed);
    REQUIRE(harness_s3rver_put(s, BUCKET, key, p, n) == 0);
    free(p);
}

/* The file at path holds n bytes of fill(seed). */
static bool holds(const char *path, size_t n, unsigned seed)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0)
        return false;
    char *want = malloc(n + 1), *got = malloc(n + 1);
    fill(want, n, seed);
    ssize_t r = read(fd, got, n + 1);
    close(fd);
    bool same = r == (ssize_t)n && memcmp(want, got, n) == 0;
    free(want);
    free(got);
    return same;
}

static bool exists(const char *dir, const char *rel)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static int count_files(const char *dir)
{
    char cmd[PATH_MAX + 64], out[64];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    if (harness_capture(cmd, out, sizeof out) != 0)
        return -1;
    return atoi(out);
}

static void random_hex(char *out, size_t n)
{
    FILE *f = fopen("/dev/urandom", "rb");
    REQUIRE(f);
    for (size_t i = 0; i + 1 < n; i++)
        out[i] = "0123456789abcdef"[fgetc(f) & 15];
    out[n - 1] = '\0';
    fclose(f);
}

static bool file_contains(const char *path, const char *s)
{
    char cmd[PATH_MAX + 128], out[16];
    snprintf(cmd, sizeof cmd, "grep -c -F -- '%s' '%s'", s, path);
    harness_capture(cmd, out, sizeof out);
    return atoi(out) > 0;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    random_hex(key_id, 21);
    random_hex(secret, 41);
    int rc = harness_s3rver_start(&s3, argv[1], BUCKET, key_id, secret, NULL);
    if (rc < 0)
        fprintf(stderr, "s3rver did not start (%d): is tests/servers/node_modules installed? "
                        "run scripts/setup.sh\n", rc);
    REQUIRE(rc == 0);
    REQUIRE(harness_s3rver_start(&s3auth, argv[1], BUCKET, key_id, secret, "--require-auth") ==
            0);
    REQUIRE(faultproxy_start(&proxy, "127.0.0.1", s3.port, NULL) == 0);

    put(&s3, "models/one.bin", 300000, 1);
    put(&s3, "models/tree/a.json", 1000, 2);
    put(&s3, "models/tree/sub/b.bin", 70000, 3);
    put(&s3, "models/tree/sub/deeper/c%20d.txt", 10, 4); /* a space in a key */
    put(&s3, "models/tree/empty", 0, 5);                 /* zero bytes: skipped */
    put(&s3, "models/tree/dir/", 0, 6);                  /* a folder marker: skipped */
    put(&s3, "models/tree2/not-me.bin", 100, 7);         /* a sibling: never picked */
    put(&s3, "models/tree.txt", 100, 8);                 /* neither */
    for (int i = 0; i < 7; i++) {
        char k[64];
        snprintf(k, sizeof k, "models/paged/f%d", i);
        put(&s3, k, 100 + (size_t)i, 100 + (unsigned)i);
    }
    put(&s3auth, "models/one.bin", 10, 1);

    loop = ev_loop_new(EVFLAG_AUTO);
    struct curlev *cl = NULL;
    struct mm_error err = {0};
    REQUIRE(curlev_new(loop, &cl, &err) == 0);
    snprintf(cache, sizeof cache, "%s/cache", s3.dir);
    struct storage_config cfg = {.cache_dir = cache, .curl = cl, .lookup = lookup};
    struct storage *st = NULL;
    rc = storage_new(loop, &cfg, &st, &err);
    if (rc < 0)
        fprintf(stderr, "storage_new: %s\n", err.msg);
    REQUIRE(rc == 0);

    /* A single object. */
    struct pullcheck_fetch r = fetch(st, "m1", "s3good", NULL, "models/one.bin");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 300000);
    CHECK(holds(r.path, 300000, 1));
    CHECK(strlen(r.path) > 8 && !strcmp(r.path + strlen(r.path) - 8, "/one.bin"));
    CHECK(r.progress_done <= 300000); /* storage reports at most every 250 ms: maybe never here */
    storage_release(st, r.path);

    /* A prefix: three files, the empty object and the marker skipped, tree2/ not picked. A
     * trailing '/' and a leading '/' mean the same path. */
    r = fetch(st, "m2", "s3good", NULL, "/models/tree/");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 1000 + 70000 + 10);
    CHECK(strlen(r.path) > 5 && !strcmp(r.path + strlen(r.path) - 5, "/tree"));
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/a.json", r.path);
    CHECK(holds(p, 1000, 2));
    snprintf(p, sizeof p, "%s/sub/b.bin", r.path);
    CHECK(holds(p, 70000, 3));
    snprintf(p, sizeof p, "%s/sub/deeper/c d.txt", r.path);
    CHECK(holds(p, 10, 4));
    CHECK(!exists(r.path, "empty"));
    CHECK(!exists(r.path, "dir"));
    CHECK(!exists(r.path, "../tree2"));
    CHECK_INT(count_files(r.path), 3);
    storage_release(st, r.path);

    /* The walkthrough's field names. */
    r = fetch(st, "m3", "s3alias", NULL, "models/one.bin");
    CHECK_INT(r.status, 0);
    CHECK(holds(r.path, 300000, 1));
    storage_release(st, r.path);

    /* Pages of 2 keys: 7 objects take 4 listings, 3 of them with a continuation token. */
    long before = faultproxy_seen(&proxy, "continuation-token=");
    r = fetch(st, "m4", "s3proxy", "{\"list_page_size\":\"2\"}", "models/paged");
    CHECK_INT(r.status, 0);
    CHECK_INT(count_files(r.path), 7);
    snprintf(p, sizeof p, "%s/f6", r.path);
    CHECK(holds(p, 106, 106));
    CHECK_INT(faultproxy_seen(&proxy, "continuation-token=") - before, 3);
    storage_release(st, r.path);

    /* A 500 on the first attempt of the object: retried, then whole. */
    struct faultproxy_fault f500 = {.kind = FAULTPROXY_STATUS, .match = "/models/one.bin",
                                    .count = 1, .status = 500};
    faultproxy_set(&proxy, &f500);
    r = fetch(st, "m5", "s3proxy", NULL, "models/one.bin");
    CHECK_INT(r.status, 0);
    CHECK(holds(r.path, 300000, 1));
    CHECK_INT(faultproxy_faults(&proxy), 1);
    storage_release(st, r.path);
    faultproxy_set(&proxy, NULL);

    /* What a user must act on. */
    expect_fail(st, "s3badsecret", "models/one.bin", -EACCES,
                "check access_key_id and secret_access_key of storage key 's3badsecret'",
                "SignatureDoesNotMatch");
    expect_fail(st, "s3badid", "models/one.bin", -EACCES,
                "check access_key_id and secret_access_key of storage key 's3badid'",
                "InvalidAccessKeyId");
    expect_fail(st, "s3good", "models/nothing-here", -ENOENT,
                "s3://" BUCKET "/models/nothing-here", "storage key 's3good'");
    expect_fail(st, "s3good", "models/tre", -ENOENT, "s3://" BUCKET "/models/tre", NULL);
    r = fetch(st, "bad", "s3good", "{\"bucket\":\"no-such-bucket\"}", "models/one.bin");
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "bucket 'no-such-bucket' not found") != NULL);
    CHECK(strstr(r.msg, "storage key 's3good'") != NULL);
    expect_fail(st, "s3region", "models/one.bin", -EINVAL, "check region", "s3region");
    expect_fail(st, "s3anon", "models/one.bin", -EACCES, "anonymous access refused",
                "set access_key_id and secret_access_key in storage key 's3anon'");
    expect_fail(st, "s3half", "models/one.bin", -EINVAL,
                "access_key_id is set but secret_access_key is not", "s3half");

    storage_free(st);
    curlev_free(cl);
    ev_loop_destroy(loop);

    /* No secret anywhere: not in a message, not in a server's log. */
    CHECK(strstr(messages, secret) == NULL);
    CHECK(strstr(messages, key_id) == NULL);
    CHECK(!file_contains(s3.log_path, secret));
    CHECK(!file_contains(s3auth.log_path, secret));

    faultproxy_stop(&proxy);
    harness_s3rver_stop(&s3);
    harness_s3rver_stop(&s3auth);
    return CHECK_DONE();
}
