/* test_http.c - the http provider (mm/remote.h) against tests/servers/https_server.js, a real
 * HTTPS server on loopback with a CA, server and client certificates made here with openssl:
 * a file fetched over HTTPS with the test CA and an auth header (given as an object and as
 * JSON text), a url with a query kept after the path, a missing file, a missing or wrong
 * header, a wrong CA and no CA (TLS failures), a server requiring a client certificate (with
 * it, without it), a directory path refused, config errors, a 500 on the first attempt and on
 * every attempt through the fault proxy (plain HTTP behind it); through storage.h, the secret
 * from a lookup. Every message the provider
 * gave is grepped for the header value and the client key.
 *   test_http <https_server.js> */
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
#include "harness.h"
#include "pullcheck.h"
#include "httpsserver.h"
#include "mm/curlev.h"
#include "mm/download.h"
#include "mm/remote.h"
#include "mm/storage.h"

#define SECRET_HEADER "Bearer s3cr3t-http-header-value-0123456789"

static struct ev_loop *loop;
static struct curlev *curl;
static struct dl *dl;
static char top[64], root[PATH_MAX], certs[PATH_MAX];
static char *ca_pem, *other_ca_pem, *client_pem, *client_key;
static FILE *messages;
static char messages_path[PATH_MAX];
static int dest_seq;

static void write_file(const char *rel, size_t size, unsigned seed)
{
    REQUIRE(pullcheck_write_pattern(root, rel, size, seed) == 0);
}

static cJSON *config(const char *url)
{
    cJSON *cfg = cJSON_CreateObject();
    REQUIRE(cfg && cJSON_AddStringToObject(cfg, "type", "http") &&
            cJSON_AddStringToObject(cfg, "url", url));
    return cfg;
}

static void add(cJSON *cfg, const char *name, const char *value)
{
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, name);
    if (value)
        REQUIRE(cJSON_AddStringToObject(cfg, name, value));
}

static int pull(const cJSON *cfg, const char *path, struct pullcheck_pull *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dest, sizeof r->dest, "%s/dest%d", top, ++dest_seq);
    REQUIRE(mkdir(r->dest, 0700) == 0);
    int dirfd = open(r->dest, O_RDONLY | O_DIRECTORY);
    REQUIRE(dirfd >= 0);
    struct remote_source src = {.cfg = cfg, .key = "http-test", .model_id = "m", .path = path};
    struct mm_error err = {0};
    void *handle = NULL;
    int rc = remote_http.pull(NULL, dl, &src, dirfd, pullcheck_progress, pullcheck_pull_done, r,
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

static void start(struct harness_https *h, const char *script, const char *log,
                  const char *const *args)
{
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/%s", top, log);
    int rc = harness_https_start(h, script, root, log_path, args);
    if (rc < 0)
        fprintf(stderr, "https_server.js did not start (%d): run scripts/setup.sh\n", rc);
    REQUIRE(rc == 0);
}

static char *cert_path(const char *name)
{
    static char paths[8][PATH_MAX * 2];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", certs, name);
    return p;
}

/* HTTPS with header auth: the CA and the header right, then each wrong. */
static void test_https(const char *script)
{
    struct harness_https h;
    const char *args[] = {
        "--cert",   cert_path("server.pem"),         "--key", cert_path("server.key"),
        "--header", "Authorization: " SECRET_HEADER, NULL};
    start(&h, script, "https.log", args);
    char src[PATH_MAX * 2], dst[PATH_MAX * 2];
    struct pullcheck_pull r;
    cJSON *cfg = config(h.url);
    add(cfg, "certificate", ca_pem);
    add(cfg, "headers", "{\"Authorization\":\"" SECRET_HEADER "\",\"X-Extra\":\"1\"}");

    CHECK_INT(pull(cfg, "models/model.bin", &r), 0);
    CHECK_INT(r.bytes, 200000);
    CHECK(r.progress_calls >= 1);
    CHECK_INT(r.progress_done, 200000);
    snprintf(src, sizeof src, "%s/models/model.bin", root);
    snprintf(dst, sizeof dst, "%s/model.bin", r.dest);
    CHECK(pullcheck_same_file(src, dst));

    /* headers as an object; the url with a trailing '/' and a query; a leading '/' */
    cJSON *obj = cJSON_Duplicate(cfg, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "headers");
    cJSON *hdrs = cJSON_AddObjectToObject(obj, "headers");
    REQUIRE(hdrs && cJSON_AddStringToObject(hdrs, "Authorization", SECRET_HEADER));
    char url[128];
    snprintf(url, sizeof url, "%s/models/?sig=abc", h.url);
    add(obj, "url", url);
    CHECK_INT(pull(obj, "/model.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "model.bin"));
    cJSON_Delete(obj);

    /* a name that needs encoding on the way */
    CHECK_INT(pull(cfg, "models/with space.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "with space.bin"));

    /* not there */
    CHECK_INT(pull(cfg, "models/none.bin", &r), -ENOENT);
    CHECK(strstr(r.msg, "/models/none.bin") && strstr(r.msg, "'http-test'"));

    /* the header missing, then wrong */
    cJSON *noh = cJSON_Duplicate(cfg, 1);
    add(noh, "headers", NULL);
    CHECK_INT(pull(noh, "models/model.bin", &r), -EACCES);
    CHECK(strstr(r.msg, "headers") && strstr(r.msg, "'http-test'"));
    add(noh, "headers", "{\"Authorization\":\"Bearer wrong\"}");
    CHECK_INT(pull(noh, "models/model.bin", &r), -EACCES);
    /* a user:password in the url is not shown */
    char with_user[96];
    snprintf(with_user, sizeof with_user, "https://user:pw-s3cr3t@127.0.0.1:%d", h.port);
    add(noh, "url", with_user);
    CHECK_INT(pull(noh, "models/model.bin", &r), -EACCES);
    CHECK(strstr(r.msg, "pw-s3cr3t") == NULL && strstr(r.msg, "https://127.0.0.1:") != NULL);
    cJSON_Delete(noh);

    /* TLS: a CA that signed nothing here, and none (the system's do not know ours) */
    cJSON *tls = cJSON_Duplicate(cfg, 1);
    add(tls, "certificate", other_ca_pem);
    CHECK_INT(pull(tls, "models/model.bin", &r), -EPROTO);
    CHECK(strstr(r.msg, "certificate") != NULL);
    CHECK(!pullcheck_exists(r.dest, "model.bin"));
    add(tls, "certificate", NULL);
    CHECK_INT(pull(tls, "models/model.bin", &r), -EPROTO);
    cJSON_Delete(tls);

    /* refused before any request */
    CHECK_INT(pull(cfg, "models/", &r), -EINVAL);
    CHECK(strstr(r.msg, "directory") != NULL);
    cJSON *bad = cJSON_Duplicate(cfg, 1);
    add(bad, "headers", "[1,2]");
    CHECK_INT(pull(bad, "models/model.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "headers") != NULL);
    add(bad, "headers", "{\"X-Bad\":\"a\\r\\nInjected: " SECRET_HEADER "\"}");
    CHECK_INT(pull(bad, "models/model.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "X-Bad") != NULL);
    add(bad, "headers", NULL);
    add(bad, "client_certificate", client_pem);
    CHECK_INT(pull(bad, "models/model.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "client_key") != NULL);
    add(bad, "client_certificate", NULL);
    add(bad, "url", "ftp://127.0.0.1/x");
    CHECK_INT(pull(bad, "models/model.bin", &r), -EINVAL);
    CHECK(strstr(r.msg, "url") != NULL);
    add(bad, "url", NULL);
    CHECK_INT(pull(bad, "models/model.bin", &r), -EINVAL);
    cJSON_Delete(bad);
    cJSON_Delete(cfg);
    harness_https_stop(&h);
}

/* A server that verifies client certificates. */
static void test_client_cert(const char *script)
{
    struct harness_https h;
    const char *args[] = {"--cert",      cert_path("server.pem"), "--key", cert_path("server.key"),
                          "--client-ca", cert_path("ca.pem"),     NULL};
    start(&h, script, "https-mtls.log", args);
    struct pullcheck_pull r;
    cJSON *cfg = config(h.url);
    add(cfg, "certificate", ca_pem);
    CHECK_INT(pull(cfg, "models/model.bin", &r), -EPROTO);
    CHECK(!pullcheck_exists(r.dest, "model.bin"));
    add(cfg, "client_certificate", client_pem);
    add(cfg, "client_key", client_key);
    CHECK_INT(pull(cfg, "models/model.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "model.bin"));
    cJSON_Delete(cfg);
    harness_https_stop(&h);
}

/* Plain HTTP behind the fault proxy: a 500 first, then always. */
static void test_fault(const char *script)
{
    struct harness_https h;
    const char *args[] = {"--plain", NULL};
    start(&h, script, "http-plain.log", args);
    struct faultproxy fp;
    struct faultproxy_fault fault = {
        .kind = FAULTPROXY_STATUS, .match = "model.bin", .count = 1, .status = 500};
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", h.port, &fault) == 0);
    struct pullcheck_pull r;
    cJSON *cfg = config(fp.url);
    CHECK_INT(pull(cfg, "models/model.bin", &r), 0);
    CHECK(pullcheck_exists(r.dest, "model.bin"));
    CHECK_INT(r.bytes, 200000);
    CHECK_INT(faultproxy_faults(&fp), 1);
    fault.count = -1;
    faultproxy_set(&fp, &fault);
    CHECK_INT(pull(cfg, "models/model.bin", &r), -EIO);
    CHECK(strstr(r.msg, "500") != NULL);
    CHECK_INT(faultproxy_faults(&fp), 3);
    faultproxy_stop(&fp);
    cJSON_Delete(cfg);
    harness_https_stop(&h);
}

/* Through storage.h: the secret (headers as an object, the CA) from a lookup. */
static char *secret;

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    (void)arg, (void)err;
    if (strcmp(key, "http-secret") != 0)
        return -ENOENT;
    *json = strdup(secret);
    return *json ? 0 : -ENOMEM;
}

static void test_storage(const char *script)
{
    struct harness_https h;
    const char *args[] = {
        "--cert",   cert_path("server.pem"),         "--key", cert_path("server.key"),
        "--header", "Authorization: " SECRET_HEADER, NULL};
    start(&h, script, "https-storage.log", args);
    cJSON *sec = config(h.url);
    add(sec, "certificate", ca_pem);
    cJSON *hdrs = cJSON_AddObjectToObject(sec, "headers");
    REQUIRE(hdrs && cJSON_AddStringToObject(hdrs, "Authorization", SECRET_HEADER));
    secret = cJSON_PrintUnformatted(sec);
    cJSON_Delete(sec);
    REQUIRE(secret);

    char cache[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/cache", top);
    struct storage_config sc = {.cache_dir = cache, .curl = curl, .lookup = lookup};
    struct storage *st = NULL;
    struct mm_error err = {0};
    REQUIRE(storage_new(loop, &sc, &st, &err) == 0);
    struct storage_model m = {
        .model_id = "http-model", .storage_key = "http-secret", .storage_path = "models/model.bin"};
    struct pullcheck_fetch f = {0};
    REQUIRE(storage_fetch(st, &m, pullcheck_fetch_done, &f, NULL, &err) == 0);
    harness_run_until(loop, pullcheck_fetch_called, &f, 20000);
    CHECK_INT(f.status, 0);
    char want[PATH_MAX * 2];
    snprintf(want, sizeof want, "%s/models/model.bin", root);
    CHECK(pullcheck_same_file(want, f.path));
    CHECK_INT(storage_release(st, f.path), 0);

    /* the params replace the headers: refused, naming the key */
    m.storage_params = "{\"headers\":\"{}\"}";
    memset(&f, 0, sizeof f);
    int rc = storage_fetch(st, &m, pullcheck_fetch_done, &f, NULL, &err);
    if (rc == 0)
        harness_run_until(loop, pullcheck_fetch_called, &f, 20000);
    else
        f.status = rc, snprintf(f.msg, sizeof f.msg, "%s", err.msg);
    CHECK_INT(f.status, -EACCES);
    CHECK(strstr(f.msg, "'http-secret'") && strstr(f.msg, "headers"));
    fprintf(messages, "%s\n", f.msg);
    fprintf(stderr, "  fetch through storage: %s\n", f.msg);
    storage_free(st);
    free(secret);
    harness_https_stop(&h);
}

static void check_secrets(void)
{
    fflush(messages);
    char *msgs = pullcheck_read_all(messages_path, NULL);
    REQUIRE(msgs);
    CHECK(pullcheck_no_secret(msgs, "s3cr3t-http-header-value", "the provider's messages",
                              "a header value"));
    const char *nl = strchr(client_key, '\n');
    REQUIRE(nl);
    char line[80];
    snprintf(line, sizeof line, "%.64s", nl + 1);
    CHECK(pullcheck_no_secret(msgs, line, "the provider's messages", "a line of the client key"));
    CHECK(pullcheck_no_secret(msgs, "sig=abc", "the provider's messages", "a url's query"));
    CHECK(pullcheck_no_secret(msgs, "pw-s3cr3t", "the provider's messages", "a url's password"));
    /* the servers log no header value either */
    free(msgs);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_http <https_server.js>\n");
        return 2;
    }
    const char *script = argv[1];
    snprintf(top, sizeof top, "/tmp/test_http.XXXXXX");
    REQUIRE(mkdtemp(top));
    snprintf(root, sizeof root, "%s/root", top);
    snprintf(certs, sizeof certs, "%s/certs", top);
    REQUIRE(mkdir(root, 0700) == 0 && mkdir(certs, 0700) == 0);
    REQUIRE(harness_tls_make(certs) == 0);
    ca_pem = pullcheck_read_all(cert_path("ca.pem"), NULL);
    other_ca_pem = pullcheck_read_all(cert_path("other-ca.pem"), NULL);
    client_pem = pullcheck_read_all(cert_path("client.pem"), NULL);
    client_key = pullcheck_read_all(cert_path("client.key"), NULL);
    REQUIRE(ca_pem && other_ca_pem && client_pem && client_key);
    write_file("models/model.bin", 200000, 1);
    write_file("models/with space.bin", 100, 2);

    snprintf(messages_path, sizeof messages_path, "%s/messages.log", top);
    messages = fopen(messages_path, "w");
    REQUIRE(messages);
    loop = ev_default_loop(0);
    struct mm_error err = {0};
    REQUIRE(curlev_new(loop, &curl, &err) == 0);
    struct dl_config dc = {.curl = curl, .backoff_ms = 20, .max_attempts = 3};
    REQUIRE(dl_new(&dc, &dl, &err) == 0);

    test_https(script);
    test_client_cert(script);
    test_fault(script);
    test_storage(script);
    check_secrets();

    dl_free(dl);
    curlev_free(curl);
    fclose(messages);
    free(ca_pem), free(other_ca_pem), free(client_pem), free(client_key);
    char cmd[256], out[256];
    if (!getenv("MM_TEST_KEEP")) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", top);
        harness_capture(cmd, out, sizeof out);
    } else {
        fprintf(stderr, "kept %s\n", top);
    }
    return CHECK_DONE();
}
