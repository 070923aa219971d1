/* test_azure.c - the azure provider (remote.h's remote_azure, through download.h) against a
 * real azurite on loopback: a single blob, a prefix with several blobs (a "m12/" and a "m1-x"
 * sibling not picked, an empty blob and a folder marker skipped), a listing of several pages,
 * Shared Key from account_key and from a connection string, an account SAS made here (as
 * sas_token and inside a connection string), anonymous access to a public container and its
 * refusal on a private one, bad credentials of each kind, a missing container and a missing
 * blob, a 500 on the first listing and on the first download (faultproxy), a Content-MD5
 * mismatch, blob names that need escaping, a blob-only public container, a cancel; then the
 * same store through storage.h as the node fetches (the secret looked up by key, parameters
 * laid over it). Every message, this process's stderr and azurite's log are grepped for every
 * secret.
 *
 *   test_azure <path of azurite-blob>
 *
 * The fixtures are written with libcurl and the provider's own signer (azure.h); azurite
 * checks every signature itself. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "azurite.h"
#include "check.h"
#include "faultproxy.h"
#include "harness.h"
#include "pullcheck.h"
#include "mm/azure.h"
#include "mm/base64.h"
#include "mm/curlev.h"
#include "mm/download.h"
#include "mm/remote.h"
#include "mm/storage.h"

#define CONTAINER "modelmesh-example-models"
#define WRONG_KEY "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmdrd3Jvbmc="

static struct harness_azurite az;
static struct ev_loop *loop;
static struct curlev *cl;
static struct dl *dl;
static char tmp_root[] = "/tmp/mm-test-azure-XXXXXX";
static char messages[64 * 1024]; /* every error message seen, for the secrets grep */
static char sas[1024];           /* the account SAS made for the test (no leading '?') */
static char sas_sig[256];        /* its signature, as it appears in the query */

/* ---- fixtures, written with the provider's signer ---- */

static unsigned char dev_key[64];

static long az_request(const char *method, const char *path_query, const char *const *extra,
                       size_t n_extra, const void *body, size_t len, bool sign)
{
    char url[2048], date[64], hdr[8][256];
    snprintf(url, sizeof(url), "%s/%s", az.endpoint, path_query);
    azure_http_date((long long)time(NULL), date, sizeof(date));
    const char *h[16];
    size_t n = 0;
    snprintf(hdr[0], sizeof(hdr[0]), "x-ms-date: %s", date);
    h[n++] = hdr[0];
    h[n++] = "x-ms-version: 2021-08-06";
    snprintf(hdr[1], sizeof(hdr[1]), "Content-Length: %zu", len);
    h[n++] = hdr[1];
    h[n++] = "Content-Type: application/octet-stream";
    for (size_t i = 0; i < n_extra; i++)
        h[n++] = extra[i];
    struct curl_slist *l = NULL;
    for (size_t i = 0; i < n; i++)
        l = curl_slist_append(l, h[i]);
    if (sign) {
        char *sts = NULL, auth[300] = "Authorization: ";
        struct mm_error err;
        REQUIRE(azure_string_to_sign(AZURITE_ACCOUNT, method, url, h, n, &sts, &err) == 0);
        REQUIRE(azure_shared_key(AZURITE_ACCOUNT, dev_key, sizeof(dev_key), sts, auth + 15,
                                 sizeof(auth) - 15) == 0);
        free(sts);
        l = curl_slist_append(l, auth);
    }
    l = curl_slist_append(l, "Expect:");
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
    long code = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    fclose(devnull);
    curl_easy_cleanup(e);
    curl_slist_free_all(l);
    return code;
}

/* access: NULL (private), "container" (anyone lists and reads) or "blob" (anyone reads) */
static void make_container(const char *name, const char *access)
{
    char pq[256], pub[128];
    snprintf(pq, sizeof(pq), "%s?restype=container", name);
    snprintf(pub, sizeof(pub), "x-ms-blob-public-access: %s", access ? access : "");
    const char *h[] = {pub};
    REQUIRE(az_request("PUT", pq, h, access ? 1 : 0, NULL, 0, true) == 201);
}

/* Bytes of a test blob: a pattern that differs by name and offset. */
static char *blob_bytes(const char *name, size_t len)
{
    char *b = malloc(len + 1);
    unsigned h = 2166136261u;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    for (size_t i = 0; i < len; i++) {
        h = h * 1103515245u + 12345u;
        b[i] = (char)(h >> 16);
    }
    return b;
}

static void put_blob(const char *container, const char *name, const char *escaped, size_t len,
                     const char *md5_header)
{
    char pq[1024];
    snprintf(pq, sizeof(pq), "%s/%s", container, escaped ? escaped : name);
    const char *h[2] = {"x-ms-blob-type: BlockBlob", md5_header};
    char *b = blob_bytes(name, len);
    long code = az_request("PUT", pq, h, md5_header ? 2 : 1, b, len, true);
    if (code != 201)
        fprintf(stderr, "put %s: HTTP %ld\n", pq, code);
    REQUIRE(code == 201);
    free(b);
}

/* An account SAS (read and list on blob service, container and object), version
 * 2021-08-06: the account, permissions, services, resource types, start, expiry, IP,
 * protocol, version and encryption scope, each followed by '\n'. */
static void make_sas(void)
{
    char expiry[32], sts[512];
    time_t t = time(NULL) + 3600;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(expiry, sizeof(expiry), "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(sts, sizeof(sts), "%s\nrl\nb\nsco\n\n%s\n\nhttps,http\n2021-08-06\n\n",
             AZURITE_ACCOUNT, expiry);
    unsigned char mac[32];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), dev_key, sizeof(dev_key), (unsigned char *)sts, strlen(sts), mac, &mac_len);
    char b64[64], *o = sas_sig;
    base64_encode(mac, mac_len, b64);
    for (const char *c = b64; *c; c++) /* escaped for a query */
        o += *c == '+'   ? sprintf(o, "%%2B")
             : *c == '/' ? sprintf(o, "%%2F")
             : *c == '=' ? sprintf(o, "%%3D")
                         : sprintf(o, "%c", *c);
    snprintf(sas, sizeof(sas), "sv=2021-08-06&ss=b&srt=sco&sp=rl&se=%s&spr=https,http&sig=%s",
             expiry, sas_sig);
}

/* ---- pulls ---- */

static void note_message(const char *msg)
{
    strncat(messages, msg, sizeof(messages) - strlen(messages) - 2);
    strcat(messages, "\n");
}

/* Called back once; a failure's message (err->code the status) is kept for the grep. */
static void on_done(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct pullcheck_pull *r = arg;
    CHECK(r->calls == 0);
    pullcheck_pull_done(status, status ? err : NULL, bytes, arg);
    if (status) {
        CHECK_INT(err->code, status);
        note_message(r->msg);
    }
}

static int pull_n;

/* Pull path with the config cfg_json (storage key "azkey") into a fresh directory, whose
 * path is left in dir. */
static struct pullcheck_pull pull(const char *cfg_json, const char *path, char *dir,
                                  size_t dir_size)
{
    struct pullcheck_pull r = {0};
    snprintf(dir, dir_size, "%s/pull%d", tmp_root, pull_n++);
    REQUIRE(mkdir(dir, 0700) == 0);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dirfd >= 0);
    cJSON *cfg = cJSON_Parse(cfg_json);
    REQUIRE(cfg);
    struct remote_source src = {.cfg = cfg, .key = "azkey", .model_id = "m", .path = path};
    struct mm_error err = {0};
    void *handle = NULL;
    int rc =
        remote_azure.pull(NULL, dl, &src, dirfd, pullcheck_progress, on_done, &r, &handle, &err);
    cJSON_Delete(cfg);
    if (rc) {
        r.calls = 1;
        r.status = rc;
        snprintf(r.msg, sizeof(r.msg), "%s", err.msg);
        note_message(r.msg);
    } else {
        CHECK(harness_run_until(loop, pullcheck_pull_called, &r, 30000));
    }
    close(dirfd);
    if (r.status)
        fprintf(stderr, "pull %s: %d %s\n", path, r.status, r.msg);
    return r;
}

/* The file dir/rel (dir itself if rel is "") holds the bytes of blob name, len long. */
static bool file_is(const char *dir, const char *rel, const char *name, size_t len)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s%s%s", dir, *rel ? "/" : "", rel);
    FILE *f = fopen(p, "rb");
    if (!f) {
        fprintf(stderr, "%s: missing\n", p);
        return false;
    }
    char *want = blob_bytes(name, len), *got = malloc(len + 1);
    size_t n = fread(got, 1, len + 1, f);
    fclose(f);
    bool same = n == len && memcmp(got, want, len) == 0;
    if (!same)
        fprintf(stderr, "%s: %zu bytes, not the %zu of blob %s\n", p, n, len, name);
    free(want);
    free(got);
    return same;
}

static bool exists(const char *dir, const char *rel)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &st) == 0;
}

static int count_entries(const char *dir)
{
    char cmd[600], out[64];
    snprintf(cmd, sizeof(cmd), "find '%s' -mindepth 1 -type f | wc -l", dir);
    harness_capture(cmd, out, sizeof(out));
    return atoi(out);
}

static char cfg_key[1024], cfg_conn[1024], cfg_sas[2048], cfg_conn_sas[2048], cfg_anon[512],
    cfg_anon_private[512], cfg_wrong_key[1024], cfg_wrong_sas[2048], cfg_wrong_conn[1024],
    cfg_no_container[1024], cfg_proxy[1024], cfg_paged[1024];

static void make_configs(const char *proxy_url)
{
    snprintf(cfg_key, sizeof(cfg_key),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, AZURITE_KEY, az.endpoint);
    snprintf(cfg_paged, sizeof(cfg_paged),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s\",\"list_page_size\":\"2\"}",
             AZURITE_ACCOUNT, AZURITE_KEY, az.endpoint);
    snprintf(cfg_conn, sizeof(cfg_conn),
             "{\"type\":\"azure\",\"container\":\"" CONTAINER
             "\",\"connection_string\":\"DefaultEndpointsProtocol=http;AccountName=%s;"
             "AccountKey=%s;BlobEndpoint=%s;\"}",
             AZURITE_ACCOUNT, AZURITE_KEY, az.endpoint);
    snprintf(cfg_sas, sizeof(cfg_sas),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"sas_token\":\"?%s\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, sas, az.endpoint);
    snprintf(cfg_conn_sas, sizeof(cfg_conn_sas),
             "{\"type\":\"azure\",\"container\":\"" CONTAINER
             "\",\"connection_string\":\"BlobEndpoint=%s;SharedAccessSignature=%s\","
             "\"account_name\":\"%s\"}",
             az.endpoint, sas, AZURITE_ACCOUNT);
    snprintf(cfg_anon, sizeof(cfg_anon),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"public\","
             "\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, az.endpoint);
    snprintf(cfg_anon_private, sizeof(cfg_anon_private),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, az.endpoint);
    snprintf(cfg_wrong_key, sizeof(cfg_wrong_key),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, WRONG_KEY, az.endpoint);
    /* the SAS with its signature's first character changed */
    char wrong[1024];
    snprintf(wrong, sizeof(wrong), "%s", sas);
    char *sig = strstr(wrong, "sig=") + 4;
    *sig = *sig == 'A' ? 'B' : 'A';
    snprintf(cfg_wrong_sas, sizeof(cfg_wrong_sas),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"sas_token\":\"%s\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, wrong, az.endpoint);
    snprintf(cfg_wrong_conn, sizeof(cfg_wrong_conn),
             "{\"type\":\"azure\",\"container\":\"" CONTAINER
             "\",\"connection_string\":\"AccountName=%s;AccountKey=%s;BlobEndpoint=%s\"}",
             AZURITE_ACCOUNT, WRONG_KEY, az.endpoint);
    snprintf(cfg_no_container, sizeof(cfg_no_container),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"no-such-container\","
             "\"account_key\":\"%s\",\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, AZURITE_KEY, az.endpoint);
    snprintf(cfg_proxy, sizeof(cfg_proxy),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s/%s\"}",
             AZURITE_ACCOUNT, AZURITE_KEY, proxy_url, AZURITE_ACCOUNT);
}

/* ---- the cases ---- */

#define SINGLE_LEN 300000
#define A_LEN 1234
#define B_LEN 5000

static void fixtures(void)
{
    make_container(CONTAINER, NULL);
    make_container("public", "container");
    make_container("blobpublic", "blob");
    put_blob(CONTAINER, "single/model.bin", NULL, SINGLE_LEN, NULL);
    put_blob(CONTAINER, "single/model.bin.sha", NULL, 10, NULL); /* sorts after: not picked */
    put_blob(CONTAINER, "multi/m1/a.json", NULL, A_LEN, NULL);
    put_blob(CONTAINER, "multi/m1/sub/b.bin", NULL, B_LEN, NULL);
    put_blob(CONTAINER, "multi/m1/empty", NULL, 0, NULL);       /* skipped: empty */
    put_blob(CONTAINER, "multi/m1/folder/", NULL, 0, NULL);     /* skipped: folder marker */
    put_blob(CONTAINER, "multi/m12/not-this", NULL, 10, NULL);  /* the "path2/" sibling */
    put_blob(CONTAINER, "multi/m1-x/not-this", NULL, 10, NULL); /* sorts before "m1/" */
    put_blob(CONTAINER, "multi/m1.txt", NULL, 10, NULL);
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof(name), "paged/p/f%d", i);
        put_blob(CONTAINER, name, NULL, 100 + (size_t)i, NULL);
    }
    put_blob(CONTAINER, "special/a b+c%d=e&f.txt", "special/a%20b%2Bc%25d%3De%26f.txt", 77, NULL);
    /* a stored Content-MD5 that is not the content's (the MD5 of "x"): azurite checks it on
     * upload, so it is set afterwards, as a property */
    put_blob(CONTAINER, "badmd5/model.bin", NULL, 1000, NULL);
    const char *md5[] = {"x-ms-blob-content-md5: nVRzR9WXbuDvYv2PvaDncQ=="};
    REQUIRE(az_request("PUT", CONTAINER "/badmd5/model.bin?comp=properties", md5, 1, NULL, 0,
                       true) == 200);
    put_blob("public", "pub/model.bin", NULL, 4321, NULL);
    put_blob("blobpublic", "pub/model.bin", NULL, 4321, NULL);
    put_blob("blobpublic", "pub/dir/a", NULL, 10, NULL);
}

static void test_single(void)
{
    char dir[600];
    struct pullcheck_pull r = pull(cfg_key, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, SINGLE_LEN);
    CHECK(file_is(dir, "model.bin", "single/model.bin", SINGLE_LEN));
    CHECK_INT(count_entries(dir), 1);
    CHECK(r.progress_calls >= 1);
    CHECK_INT(r.progress_done, SINGLE_LEN);
    CHECK_INT(r.progress_total, SINGLE_LEN);
    /* a leading and a trailing '/' are ignored */
    r = pull(cfg_key, "/single/model.bin/", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "model.bin", "single/model.bin", SINGLE_LEN));
}

static void test_prefix(void)
{
    char dir[600];
    struct pullcheck_pull r = pull(cfg_key, "multi/m1", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, A_LEN + B_LEN);
    CHECK(file_is(dir, "m1/a.json", "multi/m1/a.json", A_LEN));
    CHECK(file_is(dir, "m1/sub/b.bin", "multi/m1/sub/b.bin", B_LEN));
    CHECK(!exists(dir, "m1/empty"));
    CHECK(!exists(dir, "m1/folder"));
    CHECK(!exists(dir, "m12"));
    CHECK(!exists(dir, "m1-x"));
    CHECK_INT(count_entries(dir), 2);
    CHECK_INT(r.progress_done, A_LEN + B_LEN);

    /* several pages of 2 blobs */
    r = pull(cfg_paged, "paged/p", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(count_entries(dir), 7);
    for (int i = 0; i < 7; i++) {
        char name[64], rel[64];
        snprintf(name, sizeof(name), "paged/p/f%d", i);
        snprintf(rel, sizeof(rel), "p/f%d", i);
        CHECK(file_is(dir, rel, name, 100 + (size_t)i));
    }
    /* names that need escaping, signed as sent */
    r = pull(cfg_key, "special", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "special/a b+c%d=e&f.txt", "special/a b+c%d=e&f.txt", 77));
}

static void test_credentials(void)
{
    char dir[600];
    struct pullcheck_pull r = pull(cfg_conn, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "model.bin", "single/model.bin", SINGLE_LEN));

    r = pull(cfg_sas, "multi/m1", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "m1/sub/b.bin", "multi/m1/sub/b.bin", B_LEN));
    r = pull(cfg_conn_sas, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "model.bin", "single/model.bin", SINGLE_LEN));

    r = pull(cfg_anon, "pub/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK(file_is(dir, "model.bin", "pub/model.bin", 4321));
    /* anonymous on a private container: refused, saying which fields would give access */
    r = pull(cfg_anon_private, "single/model.bin", dir, sizeof(dir));
    CHECK(r.status == -EACCES || r.status == -ENOENT);
    CHECK(strstr(r.msg, "account_key") && strstr(r.msg, "sas_token"));
    CHECK(strstr(r.msg, "storage key 'azkey'"));
    /* a container whose blobs are public but not its listing: a blob is read directly (its
     * length from the answer), a prefix cannot be listed */
    char cfg[512];
    snprintf(cfg, sizeof(cfg),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"blobpublic\","
             "\"endpoint_url\":\"%s\"}",
             AZURITE_ACCOUNT, az.endpoint);
    r = pull(cfg, "pub/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 4321);
    CHECK(file_is(dir, "model.bin", "pub/model.bin", 4321));
    r = pull(cfg, "pub/dir", dir, sizeof(dir));
    CHECK(r.status == -EACCES || r.status == -ENOENT);
    CHECK(strstr(r.msg, "azure://" AZURITE_ACCOUNT "/blobpublic/pub/dir"));
    CHECK(strstr(r.msg, "sas_token"));
    r = pull(cfg, "pub/missing", dir, sizeof(dir));
    CHECK(r.status == -EACCES || r.status == -ENOENT);

    r = pull(cfg_wrong_key, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -EACCES);
    CHECK(strstr(r.msg, "check account_key"));
    CHECK(strstr(r.msg, "storage key 'azkey'"));
    CHECK(strstr(r.msg, "azure://" AZURITE_ACCOUNT "/" CONTAINER "/single/model.bin"));
    r = pull(cfg_wrong_sas, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -EACCES);
    CHECK(strstr(r.msg, "check sas_token"));
    r = pull(cfg_wrong_conn, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -EACCES);
    CHECK(strstr(r.msg, "check connection_string"));
}

static void test_missing(void)
{
    char dir[600];
    struct pullcheck_pull r = pull(cfg_no_container, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "azure://" AZURITE_ACCOUNT "/no-such-container"));
    CHECK(strstr(r.msg, "container not found"));
    CHECK(strstr(r.msg, "storage key 'azkey'"));

    r = pull(cfg_key, "multi/nothing", dir, sizeof(dir));
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "azure://" AZURITE_ACCOUNT "/" CONTAINER "/multi/nothing"));
    CHECK(strstr(r.msg, "multi/nothing/"));
    /* "multi/m" prefixes other names but is neither a blob nor a directory of blobs */
    r = pull(cfg_key, "multi/m", dir, sizeof(dir));
    CHECK_INT(r.status, -ENOENT);
    /* an empty blob alone is no model */
    r = pull(cfg_key, "multi/m1/empty", dir, sizeof(dir));
    CHECK_INT(r.status, -ENOENT);

    /* a config lacking a field: refused before any request */
    r = pull("{\"type\":\"azure\",\"account_name\":\"a\"}", "x", dir, sizeof(dir));
    CHECK_INT(r.status, -EINVAL);
    CHECK(strstr(r.msg, "container"));
}

static void test_integrity(void)
{
    char dir[600];
    struct pullcheck_pull r = pull(cfg_key, "badmd5/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -EBADMSG);
    CHECK(!exists(dir, "model.bin"));
}

static void test_faults(void)
{
    struct faultproxy fp;
    struct faultproxy_fault f = {
        .kind = FAULTPROXY_STATUS, .match = "comp=list", .count = 1, .status = 500};
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", az.port, &f) == 0);
    make_configs(fp.url);
    char dir[600];
    struct pullcheck_pull r = pull(cfg_proxy, "multi/m1", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(faultproxy_faults(&fp), 1);
    CHECK(file_is(dir, "m1/a.json", "multi/m1/a.json", A_LEN));

    f = (struct faultproxy_fault){
        .kind = FAULTPROXY_STATUS, .match = "/single/model.bin", .count = 1, .status = 500};
    faultproxy_set(&fp, &f);
    long before = faultproxy_seen(&fp, "/single/model.bin");
    r = pull(cfg_proxy, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, 0);
    CHECK_INT(faultproxy_faults(&fp), 1);
    CHECK(faultproxy_seen(&fp, "/single/model.bin") - before >= 2);
    CHECK(file_is(dir, "model.bin", "single/model.bin", SINGLE_LEN));

    /* a 403 is not retried */
    f = (struct faultproxy_fault){.kind = FAULTPROXY_NONE};
    faultproxy_set(&fp, &f);
    before = faultproxy_requests(&fp);
    snprintf(cfg_proxy, sizeof(cfg_proxy),
             "{\"type\":\"azure\",\"account_name\":\"%s\",\"container\":\"" CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s/%s\"}",
             AZURITE_ACCOUNT, WRONG_KEY, fp.url, AZURITE_ACCOUNT);
    r = pull(cfg_proxy, "single/model.bin", dir, sizeof(dir));
    CHECK_INT(r.status, -EACCES);
    CHECK_INT(faultproxy_requests(&fp) - before, 1);
    faultproxy_stop(&fp);
}

static void test_cancel(void)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/cancelled", tmp_root);
    REQUIRE(mkdir(dir, 0700) == 0);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cJSON *cfg = cJSON_Parse(cfg_key);
    struct remote_source src = {
        .cfg = cfg, .key = "azkey", .model_id = "m", .path = "single/model.bin"};
    struct pullcheck_pull r = {0};
    struct mm_error err;
    void *handle = NULL;
    REQUIRE(remote_azure.pull(NULL, dl, &src, dirfd, pullcheck_progress, on_done, &r, &handle,
                              &err) == 0);
    cJSON_Delete(cfg);
    REQUIRE(handle);
    /* once at once, once after the listing has started */
    remote_azure.cancel(handle);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK(r.calls == 0);
    remote_azure.cancel(NULL);
    close(dirfd);
}

/* ---- through storage.h, as the node fetches: the secret looked up by key ---- */

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    (void)arg, (void)err;
    if (strcmp(key, "azkey") == 0)
        *json = strdup(cfg_key);
    else if (strcmp(key, "azwrong") == 0)
        *json = strdup(cfg_wrong_key);
    else
        return -ENOENT;
    return *json ? 0 : -ENOMEM;
}

/* A failure's message is kept for the grep. */
static void fetched(int status, const struct mm_error *err, const char *local_path,
                    uint64_t disk_bytes, void *arg)
{
    struct pullcheck_fetch *r = arg;
    pullcheck_fetch_done(status, status ? err : NULL, status ? NULL : local_path, disk_bytes, arg);
    if (status)
        note_message(r->msg);
}

static struct pullcheck_fetch fetch(struct storage *st, const char *key, const char *params,
                                    const char *path)
{
    struct pullcheck_fetch r = {0};
    struct storage_model m = {.model_id = "azure-model",
                              .storage_key = key,
                              .storage_params = params,
                              .storage_path = path};
    struct mm_error err = {0};
    int rc = storage_fetch(st, &m, fetched, &r, NULL, &err);
    if (rc) {
        r.calls = 1;
        r.status = rc;
        snprintf(r.msg, sizeof(r.msg), "%s", err.msg);
    } else {
        CHECK(harness_run_until(loop, pullcheck_fetch_called, &r, 30000));
    }
    return r;
}

static void test_storage(void)
{
    char cache[600];
    snprintf(cache, sizeof(cache), "%s/cache", tmp_root);
    struct storage_config sc = {.cache_dir = cache, .curl = cl, .lookup = lookup};
    struct storage *st = NULL;
    struct mm_error err;
    REQUIRE(storage_new(loop, &sc, &st, &err) == 0);

    struct pullcheck_fetch r = fetch(st, "azkey", NULL, "multi/m1");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, A_LEN + B_LEN);
    size_t pl = strlen(r.path);
    CHECK(pl > 3 && strcmp(r.path + pl - 3, "/m1") == 0);
    CHECK(file_is(r.path, "a.json", "multi/m1/a.json", A_LEN));
    CHECK(file_is(r.path, "sub/b.bin", "multi/m1/sub/b.bin", B_LEN));
    CHECK_INT(storage_release(st, r.path), 0);

    /* the model's parameters laid over the secret: another container */
    r = fetch(st, "azkey", "{\"container\":\"public\"}", "pub/model.bin");
    CHECK_INT(r.status, 0);
    CHECK(file_is(r.path, "", "pub/model.bin", 4321));
    r = fetch(st, "azkey", "{\"container\":\"no-such-container\"}", "pub/model.bin");
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "azure://" AZURITE_ACCOUNT "/no-such-container"));

    r = fetch(st, "azwrong", NULL, "single/model.bin");
    CHECK_INT(r.status, -EACCES);
    CHECK(strstr(r.msg, "check account_key"));
    CHECK(strstr(r.msg, "azwrong"));
    r = fetch(st, "azkey", NULL, "multi/nothing");
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "multi/nothing"));
    storage_free(st);
}

/* This process's stderr (the library's log lines, the test's own output) goes to a file while
 * the pulls run, so that it can be grepped for secrets; it is copied to the real stderr after. */
static char stderr_path[600];
static int saved_stderr = -1;

static void capture_stderr(void)
{
    snprintf(stderr_path, sizeof(stderr_path), "%s/stderr.log", tmp_root);
    int fd = open(stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    REQUIRE(saved_stderr >= 0 && dup2(fd, 2) == 2);
    close(fd);
}

/* Restore stderr; the captured text (malloc'd) is returned after being echoed. */
static char *release_stderr(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(stderr_path, "r");
    char *text = calloc(1, 1 << 20);
    if (f && text) {
        size_t n = fread(text, 1, (1 << 20) - 1, f);
        text[n] = '\0';
        fputs(text, stderr);
    }
    if (f)
        fclose(f);
    return text;
}

/* A REQUIRE that stops the test: its words reach the real stderr, nothing is left behind. */
static void at_exit(void)
{
    if (saved_stderr >= 0)
        free(release_stderr());
    harness_azurite_stop(&az);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_root);
}

static void test_secrets(void)
{
    char *captured = release_stderr();
    REQUIRE(captured);
    const char *secrets[] = {AZURITE_KEY, WRONG_KEY, sas, sas_sig, "sig="};
    const char *what[] = {"the account key", "the wrong key", "the SAS", "the SAS signature",
                          "a SAS signature's name"};
    char *az_log = pullcheck_read_all(az.log_path, NULL);
    CHECK(strlen(messages) > 200); /* the failures above did leave messages */
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        CHECK(pullcheck_no_secret(messages, secrets[i], "the messages", what[i]));
        CHECK(pullcheck_no_secret(az_log ? az_log : "", secrets[i], "azurite's log", what[i]));
        CHECK(pullcheck_no_secret(captured, secrets[i], "the captured stderr", what[i]));
    }
    /* the key's first 12 characters alone neither */
    CHECK(pullcheck_no_secret(messages, "Eby8vdM02xNO", "the messages", "the key's start"));
    CHECK(pullcheck_no_secret(captured, "Eby8vdM02xNO", "the captured stderr", "the key's start"));
    CHECK(strstr(captured, "pull ")); /* the capture did capture */
    free(az_log);
    free(captured);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_azure <azurite-blob>\n");
        return 2;
    }
    REQUIRE(base64_decode(AZURITE_KEY, strlen(AZURITE_KEY), dev_key) == 64);
    REQUIRE(mkdtemp(tmp_root));
    atexit(at_exit);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    long long t0 = harness_now_ms();
    REQUIRE(harness_azurite_start(&az, argv[1]) == 0);
    fprintf(stderr, "azurite up in %lld ms on %d\n", harness_now_ms() - t0, az.port);
    make_sas();
    make_configs("http://127.0.0.1:1");
    fixtures();

    loop = ev_loop_new(EVFLAG_AUTO);
    struct mm_error err;
    REQUIRE(curlev_new(loop, &cl, &err) == 0);
    struct dl_config dc = {.curl = cl, .backoff_ms = 50};
    REQUIRE(dl_new(&dc, &dl, &err) == 0);
    capture_stderr();

    test_single();
    test_prefix();
    test_credentials();
    test_missing();
    test_integrity();
    test_faults();
    test_cancel();
    test_storage();
    test_secrets();

    dl_free(dl);
    curlev_free(cl);
    ev_loop_destroy(loop);
    curl_global_cleanup();
    return CHECK_DONE();
}
