/* test_gcs.c - the gcs provider (mm/remote.h) against tests/servers/gcs_server.js, a real
 * server on loopback that verifies the JWT's RS256 signature with the service account's public
 * key (a key pair made here with openssl) and serves the JSON API subset the provider uses:
 * a single object; a prefix with several files, a zero-byte object and a folder marker
 * skipped, and a "m12/" sibling not picked; more objects than one listing page; the token
 * fetched once for several pulls (three waiting for one request) and again once it nears its
 * expiry; a token the store no longer knows (server restarted) fetched again; a key written
 * with "\n" escapes; anonymous pulls of a public and of a private bucket; a wrong key, a wrong
 * client_email; a missing bucket and object; an md5Hash mismatch; config errors; cancel while
 * the token is fetched; a 500 on the first attempt through the fault proxy; through
 * storage.h, the secret from a lookup and the bucket from the model's parameters. Every
 * message the provider gave is grepped for the private keys and every token the server issued.
 *   test_gcs <gcs_server.js> */
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

#include <cjson/cJSON.h>

#include "check.h"
#include "faultproxy.h"
#include "gcsserver.h"
#include "harness.h"
#include "pullcheck.h"
#include "mm/curlev.h"
#include "mm/download.h"
#include "mm/remote.h"
#include "mm/storage.h"

#define BUCKET "modelmesh-example-models"
#define EMAIL "puller@modelmesh-test.iam.gserviceaccount.com"

static struct ev_loop *loop;
static struct curlev *curl;
static struct dl *dl;
static void *state;
static char top[64], root[PATH_MAX], keyfile[PATH_MAX], pubfile[PATH_MAX];
static char *private_key, *wrong_key;
static FILE *messages; /* every message the provider gave */
static char messages_path[PATH_MAX];
static int dest_seq;

static void write_file(const char *rel, size_t size, unsigned seed)
{
    REQUIRE(pullcheck_write_pattern(root, rel, size, seed) == 0);
}

/* The config: a JSON object text with the server's endpoint filled in where "@E" stands and
 * its token_uri where "@T" does. */
static cJSON *config(const struct harness_gcs *g, const char *json)
{
    char text[16384];
    size_t at = 0;
    for (const char *c = json; *c && at + 128 < sizeof text; c++) {
        if (c[0] == '@' && (c[1] == 'E' || c[1] == 'T')) {
            at += (size_t)snprintf(text + at, sizeof text - at, "%s",
                                   c[1] == 'E' ? g->endpoint : g->token_uri);
            c++;
        } else {
            text[at++] = *c;
        }
    }
    text[at] = '\0';
    cJSON *cfg = cJSON_Parse(text);
    REQUIRE(cfg);
    return cfg;
}

static void add(cJSON *cfg, const char *name, const char *value)
{
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, name);
    REQUIRE(cJSON_AddStringToObject(cfg, name, value));
}

/* Pull path with cfg into a fresh directory; wait up to 20 s. The status, or the synchronous
 * error's. */
static int pull(const cJSON *cfg, const char *path, struct pullcheck_pull *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dest, sizeof r->dest, "%s/dest%d", top, ++dest_seq);
    REQUIRE(mkdir(r->dest, 0700) == 0);
    int dirfd = open(r->dest, O_RDONLY | O_DIRECTORY);
    REQUIRE(dirfd >= 0);
    struct remote_source src = {.cfg = cfg, .key = "gcs-test", .model_id = "m", .path = path};
    struct mm_error err = {0};
    void *handle = NULL;
    int rc = remote_gcs.pull(state, dl, &src, dirfd, pullcheck_progress, pullcheck_pull_done, r,
                             &handle, &err);
    if (rc < 0) {
        r->status = rc;
        snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    } else {
        harness_run_until(loop, pullcheck_pull_called, r, 20000);
        CHECK_INT(r->calls, 1);
    }
    close(dirfd);
    fprintf(messages, "%s\n", r->msg);
    fflush(messages);
    if (r->status != 0)
        fprintf(stderr, "  pull %s: %s\n", path, r->msg);
    return r->status;
}

static long token_requests(const struct harness_gcs *g)
{
    char cmd[256], out[256];
    snprintf(cmd, sizeof cmd, "curl -s %s/_stats", g->endpoint);
    if (harness_capture(cmd, out, sizeof out) != 0)
        return -1;
    const char *p = strstr(out, "\"tokenRequests\":");
    return p ? atol(p + 16) : -1;
}

static void start(struct harness_gcs *g, const char *script, const char *log,
                  const char *const *extra)
{
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/%s", top, log);
    int rc = harness_gcs_start(g, script, root, pubfile, EMAIL, log_path, extra);
    if (rc < 0)
        fprintf(stderr, "gcs_server.js did not start (%d): run scripts/setup.sh\n", rc);
    REQUIRE(rc == 0);
}

/* ---- cases ---- */

static void test_objects(struct harness_gcs *g)
{
    char src[PATH_MAX * 2], dst[PATH_MAX * 2];
    struct pullcheck_pull r;
    const char *base = "{\"type\":\"gcs\",\"bucket\":\"" BUCKET "\",\"endpoint_url\":\"@E\","
                       "\"token_uri\":\"@T\",\"client_email\":\"" EMAIL "\"}";
    cJSON *cfg = config(g, base);
    add(cfg, "private_key", private_key);

    /* a single object */
    CHECK_INT(pull(cfg, "models/single.bin", &r), 0);
    CHECK_INT(r.bytes, 150000);
    CHECK(r.progress_calls >= 1);
    CHECK_INT(r.progress_done, 150000);
    CHECK_INT(r.progress_total, 150000);
    snprintf(src, sizeof src, "%s/" BUCKET "/models/single.bin", root);
    snprintf(dst, sizeof dst, "%s/single.bin", r.dest);
    CHECK(pullcheck_same_file(src, dst));

    /* a prefix: files, nested, a zero-byte object and a folder marker skipped, m12 not */
    CHECK_INT(pull(cfg, "/models/m1/", &r), 0);
    CHECK_INT(r.bytes, 3000 + 70000 + 5);
    static const char *const in_m1[] = {"a.bin", "sub/b.bin", "sub/deeper/c.txt"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/" BUCKET "/models/m1/%s", root, in_m1[i]);
        snprintf(dst, sizeof dst, "%s/m1/%s", r.dest, in_m1[i]);
        CHECK(pullcheck_same_file(src, dst));
    }
    CHECK(!pullcheck_exists(r.dest, "m1/zero.bin"));
    CHECK(!pullcheck_exists(r.dest, "m1/folder"));
    CHECK(!pullcheck_exists(r.dest, "m12"));
    CHECK(!pullcheck_exists(r.dest, "m1/x"));

    /* more objects than one page */
    cJSON *paged = cJSON_Duplicate(cfg, 1);
    add(paged, "list_page_size", "2");
    CHECK_INT(pull(paged, "models/many", &r), 0);
    for (int i = 0; i < 7; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "many/f%d", i);
        CHECK(pullcheck_exists(r.dest, rel));
    }
    CHECK_INT(r.bytes, 7 * 1000);
    cJSON_Delete(paged);

    /* one token for all of it */
    CHECK_INT(token_requests(g), 1);

    /* the key with its newlines written as \n */
    char *escaped = malloc(strlen(private_key) * 2 + 1), *w = escaped;
    REQUIRE(escaped);
    for (const char *c = private_key; *c; c++) {
        if (*c == '\n') {
            *w++ = '\\';
            *w++ = 'n';
        } else {
            *w++ = *c;
        }
    }
    *w = '\0';
    cJSON *esc = cJSON_Duplicate(cfg, 1);
    add(esc, "private_key", escaped);
    CHECK_INT(pull(esc, "models/single.bin", &r), 0);
    cJSON_Delete(esc);
    free(escaped);

    /* missing object, missing bucket */
    CHECK_INT(pull(cfg, "models/none", &r), -ENOENT);
    CHECK(strstr(r.msg, "gs://" BUCKET "/models/none") != NULL);
    CHECK(strstr(r.msg, "gcs-test") != NULL);
    cJSON *nob = cJSON_Duplicate(cfg, 1);
    add(nob, "bucket", "no-such-bucket");
    CHECK_INT(pull(nob, "models/single.bin", &r), -ENOENT);
    CHECK(strstr(r.msg, "gs://no-such-bucket") != NULL && strstr(r.msg, "bucket not found"));
    cJSON_Delete(nob);

    /* the listing's md5Hash does not match the bytes */
    CHECK_INT(pull(cfg, "models/bad.bin", &r), -EBADMSG);
    CHECK(!pullcheck_exists(r.dest, "bad.bin"));

    /* refused credentials: another key, another account */
    cJSON *bad = cJSON_Duplicate(cfg, 1);
    add(bad, "private_key", wrong_key);
    CHECK_INT(pull(bad, "models/single.bin", &r), -EACCES);
    CHECK(strstr(r.msg, "private_key") && strstr(r.msg, "client_email") &&
          strstr(r.msg, "'gcs-test'"));
    add(bad, "private_key", private_key);
    add(bad, "client_email", "someone-else@modelmesh-test.iam.gserviceaccount.com");
    CHECK_INT(pull(bad, "models/single.bin", &r), -EACCES);
    CHECK(strstr(r.msg, "private_key") && strstr(r.msg, "client_email"));
    cJSON_Delete(bad);

    /* anonymous: refused on a private bucket, served from a public one */
    cJSON *anon = config(g, "{\"type\":\"gcs\",\"bucket\":\"" BUCKET "\",\"endpoint_url\":\"@E\"}");
    CHECK_INT(pull(anon, "models/single.bin", &r), -EACCES);
    CHECK(strstr(r.msg, "anonymous") && strstr(r.msg, "private_key"));
    add(anon, "bucket", "public-models");
    CHECK_INT(pull(anon, "open/model.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "model.bin"));
    cJSON_Delete(anon);

    /* config errors, before any request */
    cJSON *c1 = config(g, "{\"type\":\"gcs\",\"endpoint_url\":\"@E\"}");
    CHECK_INT(pull(c1, "models/single.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "bucket") != NULL);
    add(c1, "bucket", BUCKET);
    add(c1, "private_key", private_key);
    CHECK_INT(pull(c1, "models/single.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "client_email") != NULL);
    add(c1, "client_email", EMAIL);
    add(c1, "private_key",
        "-----BEGIN PRIVATE KEY-----\nnot a key at all\n-----END PRIVATE KEY-----\n");
    CHECK_INT(pull(c1, "models/single.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "private_key") != NULL && !strstr(r.msg, "not a key at all"));
    add(c1, "private_key", private_key);
    add(c1, "endpoint_url", "ftp://127.0.0.1/");
    CHECK_INT(pull(c1, "models/single.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "endpoint_url") != NULL);
    cJSON_Delete(c1);

    /* cancelled while its token is being fetched (a new account: no token cached) */
    cJSON *fresh = cJSON_Duplicate(cfg, 1);
    add(fresh, "token_uri", g->token_uri);
    add(fresh, "client_email", "x@modelmesh-test.iam.gserviceaccount.com");
    struct pullcheck_pull rc = {0};
    snprintf(rc.dest, sizeof rc.dest, "%s/dest-cancel", top);
    REQUIRE(mkdir(rc.dest, 0700) == 0);
    int dirfd = open(rc.dest, O_RDONLY | O_DIRECTORY);
    struct remote_source s = {
        .cfg = fresh, .key = "gcs-test", .model_id = "m", .path = "models/single.bin"};
    void *handle = NULL;
    struct mm_error err = {0};
    CHECK_INT(remote_gcs.pull(state, dl, &s, dirfd, NULL, pullcheck_pull_done, &rc, &handle, &err),
              0);
    remote_gcs.cancel(handle);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(rc.calls, 0);
    CHECK(!pullcheck_exists(rc.dest, "single.bin"));
    close(dirfd);
    cJSON_Delete(fresh);
    cJSON_Delete(cfg);
}

/* The token's life: fetched once while fresh, again past half its life; a token the server
 * forgot (it restarted on the same port) is refused and fetched again, once. */
static void test_token_life(const char *script)
{
    struct harness_gcs g;
    static const char *const ttl[] = {"--token-ttl", "4", NULL};
    start(&g, script, "gcs-ttl.log", ttl);
    cJSON *cfg = config(&g, "{\"type\":\"gcs\",\"bucket\":\"" BUCKET "\",\"endpoint_url\":\"@E\","
                            "\"token_uri\":\"@T\",\"client_email\":\"" EMAIL "\"}");
    add(cfg, "private_key", private_key);
    /* a state of its own: test_objects's cache holds other servers' tokens */
    void *saved = state;
    struct mm_error err = {0};
    REQUIRE(remote_gcs.open(dl, &state, &err) == 0);
    struct pullcheck_pull r;
    /* three pulls at once wait for one token request */
    struct pullcheck_pull many[3];
    int fds[3];
    for (int i = 0; i < 3; i++) {
        memset(&many[i], 0, sizeof many[i]);
        snprintf(many[i].dest, sizeof many[i].dest, "%s/dest-many%d", top, i);
        REQUIRE(mkdir(many[i].dest, 0700) == 0);
        fds[i] = open(many[i].dest, O_RDONLY | O_DIRECTORY);
        REQUIRE(fds[i] >= 0);
        struct remote_source src = {.cfg = cfg,
                                    .key = "gcs-test",
                                    .model_id = "m",
                                    .path = i == 1 ? "models/m1" : "models/single.bin"};
        REQUIRE(remote_gcs.pull(state, dl, &src, fds[i], NULL, pullcheck_pull_done, &many[i], NULL,
                                &err) == 0);
    }
    for (int i = 0; i < 3; i++) {
        harness_run_until(loop, pullcheck_pull_called, &many[i], 20000);
        CHECK_INT(many[i].calls, 1);
        CHECK_INT(many[i].status, 0);
        fprintf(messages, "%s\n", many[i].msg);
        close(fds[i]);
    }
    CHECK(pullcheck_exists(many[1].dest, "m1/a.bin"));
    CHECK_INT(token_requests(&g), 1);
    CHECK_INT(pull(cfg, "models/single.bin", &r), 0);
    CHECK_INT(token_requests(&g), 1);
    usleep(2300 * 1000); /* 4 s life: refreshed after 2 s */
    CHECK_INT(pull(cfg, "models/single.bin", &r), 0);
    CHECK_INT(token_requests(&g), 2);

    /* the server restarts: the cached token is unknown to it */
    char port[16];
    snprintf(port, sizeof port, "%d", g.port);
    harness_gcs_stop(&g);
    static const char *extra[] = {"--port", NULL, "--token-ttl", "3600", NULL};
    extra[1] = port;
    struct harness_gcs g2;
    start(&g2, script, "gcs-restarted.log", extra);
    CHECK_INT(pull(cfg, "models/single.bin", &r), 0);
    CHECK_INT(token_requests(&g2), 1);
    harness_gcs_stop(&g2);
    remote_gcs.close(state);
    state = saved;
    cJSON_Delete(cfg);
}

/* A 500 to the first listing request and to the first download: retried, and the pull ends
 * well; a listing answered 500 every time fails with the status. */
static void test_fault(const struct harness_gcs *g)
{
    struct faultproxy fp;
    struct faultproxy_fault fault = {
        .kind = FAULTPROXY_STATUS, .match = "prefix=", .count = 1, .status = 500};
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", g->port, &fault) == 0);
    cJSON *cfg = config(g, "{\"type\":\"gcs\",\"bucket\":\"" BUCKET "\",\"token_uri\":\"@T\","
                           "\"client_email\":\"" EMAIL "\"}");
    add(cfg, "private_key", private_key);
    add(cfg, "endpoint_url", fp.url);
    struct pullcheck_pull r;
    CHECK_INT(pull(cfg, "models/m1", &r), 0);
    CHECK(pullcheck_exists(r.dest, "m1/a.bin"));
    CHECK_INT(faultproxy_faults(&fp), 1);

    fault.match = "alt=media";
    faultproxy_set(&fp, &fault);
    CHECK_INT(pull(cfg, "models/single.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "single.bin"));
    CHECK_INT(faultproxy_faults(&fp), 1);

    /* always 500: the pull fails after its attempts, saying so */
    fault.match = "prefix=";
    fault.count = -1;
    faultproxy_set(&fp, &fault);
    CHECK_INT(pull(cfg, "models/single.bin", &r), -EIO);
    CHECK(strstr(r.msg, "500") != NULL && strstr(r.msg, "gs://" BUCKET "/models/single.bin"));
    CHECK_INT(faultproxy_faults(&fp), 3); /* max_attempts */
    faultproxy_stop(&fp);
    cJSON_Delete(cfg);
}

/* ---- through storage.h: the secret from a lookup, the bucket from the model's parameters ---- */

static char *secret_good, *secret_bad;

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    (void)arg, (void)err;
    const char *s = strcmp(key, "gcs-secret") == 0 ? secret_good
                    : strcmp(key, "gcs-bad") == 0  ? secret_bad
                                                   : NULL;
    if (!s)
        return -ENOENT;
    *json = strdup(s);
    return *json ? 0 : -ENOMEM;
}

static void test_storage(const struct harness_gcs *g)
{
    cJSON *sec = cJSON_CreateObject();
    REQUIRE(sec && cJSON_AddStringToObject(sec, "type", "gcs") &&
            cJSON_AddStringToObject(sec, "private_key", private_key) &&
            cJSON_AddStringToObject(sec, "client_email", EMAIL) &&
            cJSON_AddStringToObject(sec, "token_uri", g->token_uri) &&
            cJSON_AddStringToObject(sec, "endpoint_url", g->endpoint));
    secret_good = cJSON_PrintUnformatted(sec);
    cJSON_DeleteItemFromObjectCaseSensitive(sec, "private_key");
    REQUIRE(cJSON_AddStringToObject(sec, "private_key", wrong_key));
    secret_bad = cJSON_PrintUnformatted(sec);
    cJSON_Delete(sec);
    REQUIRE(secret_good && secret_bad);

    char cache[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/cache", top);
    struct storage_config sc = {.cache_dir = cache, .curl = curl, .lookup = lookup};
    struct storage *st = NULL;
    struct mm_error err = {0};
    REQUIRE(storage_new(loop, &sc, &st, &err) == 0);

    struct storage_model m = {.model_id = "gcs-model",
                              .storage_key = "gcs-secret",
                              .storage_params = "{\"bucket\":\"" BUCKET "\"}",
                              .storage_path = "models/m1"};
    struct pullcheck_fetch f = {0};
    REQUIRE(storage_fetch(st, &m, pullcheck_fetch_done, &f, NULL, &err) == 0);
    harness_run_until(loop, pullcheck_fetch_called, &f, 20000);
    CHECK_INT(f.status, 0);
    CHECK_INT(f.bytes, 3000 + 70000 + 5);
    char want[PATH_MAX * 2], got[PATH_MAX * 2];
    snprintf(want, sizeof want, "%s/" BUCKET "/models/m1/sub/b.bin", root);
    snprintf(got, sizeof got, "%s/sub/b.bin", f.path);
    CHECK(pullcheck_same_file(want, got));
    CHECK(strstr(f.path, cache) == f.path);
    CHECK_INT(storage_release(st, f.path), 0);

    struct storage_model bad = m;
    bad.storage_key = "gcs-bad";
    memset(&f, 0, sizeof f);
    REQUIRE(storage_fetch(st, &bad, pullcheck_fetch_done, &f, NULL, &err) == 0);
    harness_run_until(loop, pullcheck_fetch_called, &f, 20000);
    CHECK_INT(f.status, -EACCES);
    CHECK(strstr(f.msg, "'gcs-bad'") && strstr(f.msg, "private_key") &&
          strstr(f.msg, "client_email"));
    fprintf(messages, "%s\n", f.msg);
    fprintf(stderr, "  fetch through storage: %s\n", f.msg);
    storage_free(st);
    free(secret_good), free(secret_bad);
}

/* ---- secrets ---- */

static void check_secrets(const char *const *server_logs, size_t n_logs)
{
    fflush(messages);
    char *msgs = pullcheck_read_all(messages_path, NULL);
    REQUIRE(msgs);
    const char *keys[] = {private_key, wrong_key};
    for (size_t k = 0; k < 2; k++) { /* the base64 of a PEM's first line: a piece of each key */
        const char *nl = strchr(keys[k], '\n');
        REQUIRE(nl);
        char line[80];
        snprintf(line, sizeof line, "%.64s", nl + 1);
        CHECK(
            pullcheck_no_secret(msgs, line, "the provider's messages", "a line of a private key"));
    }
    int tokens = 0;
    for (size_t i = 0; i < n_logs; i++) {
        char *log = pullcheck_read_all(server_logs[i], NULL);
        for (char *p = log ? strstr(log, "token issued: ") : NULL; p;
             p = strstr(p + 1, "token issued: ")) {
            char tok[128];
            if (sscanf(p + 14, "%127s", tok) == 1) {
                CHECK(pullcheck_no_secret(msgs, tok, "the provider's messages", "an access token"));
                tokens++;
            }
        }
        free(log);
    }
    CHECK(tokens >= 4);
    free(msgs);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_gcs <gcs_server.js>\n");
        return 2;
    }
    const char *script = argv[1];
    snprintf(top, sizeof top, "/tmp/test_gcs.XXXXXX");
    REQUIRE(mkdtemp(top));
    snprintf(root, sizeof root, "%s/root", top);
    REQUIRE(mkdir(root, 0700) == 0);
    snprintf(keyfile, sizeof keyfile, "%s/sa.pem", top);
    snprintf(pubfile, sizeof pubfile, "%s/sa.pub", top);
    char cmd[PATH_MAX * 5], out[4096], wrongfile[PATH_MAX];
    snprintf(wrongfile, sizeof wrongfile, "%s/wrong.pem", top);
    snprintf(cmd, sizeof cmd,
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s && "
             "openssl pkey -in %s -pubout -out %s && "
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s",
             keyfile, keyfile, pubfile, wrongfile);
    if (harness_capture(cmd, out, sizeof out) != 0) {
        fprintf(stderr, "openssl: %s\n", out);
        return 1;
    }
    private_key = pullcheck_read_all(keyfile, NULL);
    wrong_key = pullcheck_read_all(wrongfile, NULL);
    REQUIRE(private_key && wrong_key);

    write_file(BUCKET "/models/single.bin", 150000, 1);
    write_file(BUCKET "/models/m1/a.bin", 3000, 2);
    write_file(BUCKET "/models/m1/sub/b.bin", 70000, 3);
    write_file(BUCKET "/models/m1/sub/deeper/c.txt", 5, 4);
    write_file(BUCKET "/models/m1/zero.bin", 0, 5);
    char marker[PATH_MAX * 2];
    snprintf(marker, sizeof marker, "%s/" BUCKET "/models/m1/folder", root);
    REQUIRE(mkdir(marker, 0755) == 0); /* listed as the folder marker "models/m1/folder/" */
    write_file(BUCKET "/models/m12/x", 10, 6);
    write_file(BUCKET "/models/m1x", 10, 7);
    write_file(BUCKET "/models/bad.bin", 4000, 8);
    for (int i = 0; i < 7; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, BUCKET "/models/many/f%d", i);
        write_file(rel, 1000, (unsigned)(10 + i));
    }
    write_file("public-models/open/model.bin", 2048, 9);

    snprintf(messages_path, sizeof messages_path, "%s/messages.log", top);
    messages = fopen(messages_path, "w");
    REQUIRE(messages);

    loop = ev_default_loop(0);
    struct mm_error err = {0};
    REQUIRE(curlev_new(loop, &curl, &err) == 0);
    struct dl_config dc = {.curl = curl, .backoff_ms = 20, .max_attempts = 3};
    REQUIRE(dl_new(&dc, &dl, &err) == 0);
    REQUIRE(remote_gcs.open(dl, &state, &err) == 0);

    struct harness_gcs g;
    static const char *const extra[] = {"--public", "public-models", "--bad-md5", "models/bad.bin",
                                        NULL};
    start(&g, script, "gcs.log", extra);
    test_objects(&g);
    test_fault(&g);
    test_storage(&g);
    test_token_life(script);
    harness_gcs_stop(&g);

    char logs[3][PATH_MAX];
    snprintf(logs[0], sizeof logs[0], "%s/gcs.log", top);
    snprintf(logs[1], sizeof logs[1], "%s/gcs-ttl.log", top);
    snprintf(logs[2], sizeof logs[2], "%s/gcs-restarted.log", top);
    const char *const log_list[] = {logs[0], logs[1], logs[2]};
    check_secrets(log_list, 3);

    remote_gcs.close(state);
    dl_free(dl);
    curlev_free(curl);
    fclose(messages);
    free(private_key), free(wrong_key);
    if (!getenv("MM_TEST_KEEP")) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", top);
        harness_capture(cmd, out, sizeof out);
    } else {
        fprintf(stderr, "kept %s\n", top);
    }
    return CHECK_DONE();
}
