/* test_e2e_storage.c - models pulled from object stores through the real node, end to end: etcd,
 * a pod of mm-runtime (xgboost) + mm-node, and real storage servers on loopback: s3rver (npm),
 * azurite (npm; an account of our own with a random key, AZURITE_ACCOUNTS), our GCS server
 * (tests/servers/gcs_server.js: the service account's JWT verified) and our HTTPS server
 * (tests/servers/https_server.js: a test CA, header auth), and a pvc (a directory mounted at
 * <models root>/<name>). For each provider the secret is put in etcd at storage-config/<key>, a
 * model registered with key + path (one with ModelMesh Serving's JSON key, its bucket given as
 * a storage parameter; azure once with Shared Key from account_key and once from a connection
 * string; one model by storageUri alone, as mmctl --uri sends it, through the `default` key),
 * loaded by the runtime from the node's cache dir, and an inference answered. The pvc model is
 * a link in the cache dir to its file beneath the pvc, and the runtime loads through it. Then:
 *   - the mounted Secret (--storage-config-dir): a key's file wins over the registry's entry
 *     (right in the file, wrong in etcd: loaded), a key only in the directory is found, and a
 *     file replaced in place is read at the next resolve (now wrong: the load fails);
 *   - bad credentials: the model fails to load; the copy record's error and the model status
 *     name the secret's fields to check and the storage key;
 *   - progress: a 24 MB object whose download stalls once half way (a fault proxy in front of
 *     s3rver) shows bytes_pulled / bytes_total in its Loading copy record (every version of
 *     the record is read back from etcd's history), and no version after Loading has them;
 *   - secrets: every log of the run (nodes, runtimes, servers) and every error seen is
 *     grepped for every secret value used.
 * The npm servers must be installed (scripts/setup.sh): missing, the test fails saying so.
 * argv: MM_NODE MM_RUNTIME MAKE_BREAST_CANCER SERVERS_DIR */
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "azurite.h"
#include "check.h"
#include "cluster.h"
#include "faultproxy.h"
#include "gcsserver.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "httpsserver.h"
#include "mm/azure.h"
#include "mm/base64.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/keys.h"
#include "mm/rpc.h"
#include "mm/stcfg.h"
#include "mmclient.h"
#include "pullcheck.h"
#include "rtclient.h"
#include "s3rver.h"
#include "testcall.h"

#define CALL_MS 60000
#define INFER_PATH "/inference.GRPCInferenceService/ModelInfer"
#define BUCKET "modelmesh-example-models"
#define GCS_BUCKET "gcs-models"
#define BIG_BYTES (24u << 20)
#define AZ_ACCOUNT "mme2eaccount"
#define AZ_CONTAINER "azure-models"
#define PVC_NAME "models-pvc"
#define MAX_SECRETS 12

static const char *mm_node, *mm_runtime, *maker_xgb, *servers_dir;
static char work[256];
static struct cluster cl;
static bool cluster_up;
static struct harness_s3rver s3;
static struct harness_gcs gcs;
static struct harness_https https;
static struct harness_azurite az;
static char az_endpoint[128]; /* path-style, our account: http://127.0.0.1:PORT/AZ_ACCOUNT */
static unsigned char az_key[64];
static struct faultproxy proxy;
static char *secrets[MAX_SECRETS];
static size_t n_secrets;
static char seen_errors[16384]; /* every error message the test saw, for the secrets grep */
static size_t model_bytes;      /* the example model's size */

static void stop_all(void)
{
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    faultproxy_stop(&proxy);
    harness_s3rver_stop(&s3);
    harness_gcs_stop(&gcs);
    harness_https_stop(&https);
    harness_azurite_stop(&az);
    if (work[0] && !getenv("MM_TEST_KEEP")) {
        char cmd[400], out[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
        harness_capture(cmd, out, sizeof(out));
    }
    work[0] = '\0';
}

static void sh(const char *cmd)
{
    static char out[8192];
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "%s: exit %d: %s\n", cmd, rc, out);
    REQUIRE(rc == 0);
}

static void write_file(const char *path, const void *data, size_t len)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
    sh(cmd);
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, len, f) == len);
    REQUIRE(fclose(f) == 0);
}

/* A random secret of 32 hex digits with a prefix, remembered for the grep. */
static const char *new_secret(const char *prefix)
{
    unsigned char raw[16];
    FILE *f = fopen("/dev/urandom", "rb");
    REQUIRE(f && fread(raw, 1, sizeof(raw), f) == sizeof(raw));
    fclose(f);
    char *s = malloc(strlen(prefix) + 33);
    REQUIRE(s != NULL);
    strcpy(s, prefix);
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(s + strlen(prefix) + 2 * i, "%02x", raw[i]);
    REQUIRE(n_secrets < MAX_SECRETS);
    secrets[n_secrets++] = s;
    return s;
}

/* The azure account key: 64 random bytes (az_key), its base64 text remembered for the grep. */
static const char *new_azure_key(void)
{
    FILE *f = fopen("/dev/urandom", "rb");
    REQUIRE(f && fread(az_key, 1, sizeof(az_key), f) == sizeof(az_key));
    fclose(f);
    char *s = malloc(base64_encoded_size(sizeof(az_key)));
    REQUIRE(s != NULL);
    base64_encode(az_key, sizeof(az_key), s);
    REQUIRE(n_secrets < MAX_SECRETS);
    secrets[n_secrets++] = s;
    return s;
}

/* cJSON-free JSON string escaping for the PEM texts (newlines). */
static void json_str(char *out, size_t size, const char *s)
{
    size_t o = 0;
    out[o++] = '"';
    for (; *s && o + 8 < size; s++) {
        if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (*s == '"' || *s == '\\') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if ((unsigned char)*s >= 0x20) {
            out[o++] = *s;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    REQUIRE(o < size);
}

static void put_secret(const char *key, const char *json)
{
    char k[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_storage_config(k, sizeof(k), cl.name, key, &err) == 0);
    if (etcd_sync_put(cl.etcd_client, k, json, 0, NULL, &err) < 0)
        fprintf(stderr, "put %s: %s\n", k, err.msg);
    REQUIRE(err.code == 0);
}

/* An s3 entry as a file of the mounted Secret, replaced whole (a rename, as the kubelet swaps
 * its ..data link), so the node never reads half of it. */
static void put_secret_file(const char *dir, const char *key, const char *secret_key)
{
    char json[1024], tmp[400], path[400];
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"bucket\":\"%s\"}\n",
             secret_key, s3.endpoint, BUCKET);
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", dir, key);
    snprintf(path, sizeof(path), "%s/%s", dir, key);
    write_file(tmp, json, strlen(json));
    REQUIRE(rename(tmp, path) == 0);
}

static void note_error(const char *what)
{
    size_t n = strlen(seen_errors);
    snprintf(seen_errors + n, sizeof(seen_errors) - n, "%s\n", what);
}

/* ---------------------------------------------------------------- inference */

/* One inference through the node: OK, answered by model, one output. */
static bool infer(const char *model)
{
    grpc_byte_buffer *req = rt_xgb_request(model);
    struct testcall t = testcall_run(cl.pods[0].api, INFER_PATH, req, NULL, 0, CALL_MS);
    grpc_byte_buffer_destroy(req);
    bool ok = false;
    if (t.status == GRPC_STATUS_OK && t.response) {
        ProtobufCMessage *m = NULL;
        struct mm_error err = {0};
        if (rpc_decode(t.response, &inference__model_infer_response__descriptor, &m, &err) == 0) {
            Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
            ok = strcmp(r->model_name, model) == 0 && r->n_outputs == 1;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    if (!ok)
        fprintf(stderr, "inference of %s: status %d %s\n", model, (int)t.status, t.details);
    testcall_clear(&t);
    return ok;
}

/* Register id (sync, load now) and expect it LOADED and answering. */
static void load_and_infer(const char *id, const char *key, const char *path)
{
    struct mmc_reply r;
    long long t0 = harness_now_ms();
    mmc_register(cl.pods[0].api, id, "xgboost", path, key, true, true, 0, CALL_MS, &r);
    char buf[2048];
    fprintf(stderr, "%s (key %s, path %s): %s in %lld ms\n", id, key, path,
            mmc_describe(&r, buf, sizeof(buf)), harness_now_ms() - t0);
    for (size_t i = 0; i < r.n_errors; i++)
        note_error(r.errors[i]);
    if (!mmc_is(&r, MMC_LOADED)) {
        cluster_dump_logs(&cl, true);
        CHECK(false);
        return;
    }
    CHECK(infer(id));
}

/* The node's mm_storage_pulled_bytes_total from its /metrics, or -1. */
static double pulled_bytes(void)
{
    static char body[262144];
    int st = harness_http(cl.pods[0].node_metrics_port, "GET", "/metrics", 5000, body,
                          sizeof(body));
    const char *p = st == 200 ? strstr(body, "\nmm_storage_pulled_bytes_total ") : NULL;
    if (!p) {
        fprintf(stderr, "  /metrics: HTTP %d, no mm_storage_pulled_bytes_total\n", st);
        return -1;
    }
    return strtod(p + strlen("\nmm_storage_pulled_bytes_total "), NULL);
}

/* ---------------------------------------------------------------- the servers */

static void start_servers(const char *model, size_t model_len, const char *s3_secret,
                          const char *token)
{
    char path[512], cmd[2048];
    /* s3rver: the model, and the big object for the progress check */
    int rc = harness_s3rver_start(&s3, servers_dir, BUCKET, "AKIAE2ESTORAGE", s3_secret, NULL);
    if (rc < 0)
        fprintf(stderr,
                "s3rver did not start (%s): run scripts/setup.sh to install the test "
                "servers\n",
                strerror(-rc));
    REQUIRE(rc == 0);
    REQUIRE(harness_s3rver_put(&s3, BUCKET, "xgb/bc/model.json", model, model_len) == 0);
    char *big = malloc(BIG_BYTES);
    REQUIRE(big != NULL);
    for (size_t i = 0; i < BIG_BYTES; i++)
        big[i] = (char)('a' + (i * 7919) % 26);
    REQUIRE(harness_s3rver_put(&s3, BUCKET, "big/model.bin", big, BIG_BYTES) == 0);
    free(big);
    /* the big object's download stalls once, half way, for 3 s: its progress is visible */
    const struct faultproxy_fault stall = {.kind = FAULTPROXY_STALL,
                                           .match = "/big/model.bin",
                                           .count = 1,
                                           .bytes = BIG_BYTES / 2,
                                           .stall_ms = 3000};
    REQUIRE(faultproxy_start(&proxy, "127.0.0.1", s3.port, &stall) == 0);

    /* GCS: the service account's key pair, the bucket as a directory */
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s/sa.key' "
             "2>&1 && openssl pkey -in '%s/sa.key' -pubout -out '%s/sa.pub' 2>&1",
             work, work, work);
    sh(cmd);
    snprintf(path, sizeof(path), "%s/gcs/%s/xgb/bc.json", work, GCS_BUCKET);
    write_file(path, model, model_len);
    char root[300], pub[300], log[300];
    snprintf(root, sizeof(root), "%s/gcs", work);
    snprintf(pub, sizeof(pub), "%s/sa.pub", work);
    snprintf(log, sizeof(log), "%s/gcs.log", work);
    snprintf(path, sizeof(path), "%s/gcs_server.js", servers_dir);
    REQUIRE(harness_gcs_start(&gcs, path, root, pub, "e2e@mm-test.iam.gserviceaccount.com", log,
                              NULL) == 0);

    /* HTTPS: a test CA, a bearer token */
    char tls[300];
    snprintf(tls, sizeof(tls), "%s/tls", work);
    REQUIRE(mkdir(tls, 0700) == 0);
    REQUIRE(harness_tls_make(tls) == 0);
    snprintf(path, sizeof(path), "%s/www/models/bc.json", work);
    write_file(path, model, model_len);
    char cert[320], key[320], header[128];
    snprintf(cert, sizeof(cert), "%s/server.pem", tls);
    snprintf(key, sizeof(key), "%s/server.key", tls);
    snprintf(header, sizeof(header), "Authorization: Bearer %s", token);
    snprintf(root, sizeof(root), "%s/www", work);
    snprintf(log, sizeof(log), "%s/https.log", work);
    snprintf(path, sizeof(path), "%s/https_server.js", servers_dir);
    const char *const args[] = {"--cert", cert, "--key", key, "--header", header, NULL};
    REQUIRE(harness_https_start(&https, path, root, log, args) == 0);
}

/* A request to azurite signed with Shared Key (the provider's signer, azure.h) for the
 * fixtures: its HTTP status, 0 when there was no answer. */
static long az_request(const char *method, const char *path_query, const char *extra,
                       const void *body, size_t len)
{
    char url[1024], date[64], h_date[96], h_len[64];
    snprintf(url, sizeof(url), "%s/%s", az_endpoint, path_query);
    azure_http_date((long long)time(NULL), date, sizeof(date));
    snprintf(h_date, sizeof(h_date), "x-ms-date: %s", date);
    snprintf(h_len, sizeof(h_len), "Content-Length: %zu", len);
    const char *h[5] = {h_date, "x-ms-version: 2021-08-06", h_len,
                        "Content-Type: application/octet-stream", extra};
    size_t n = extra ? 5 : 4;
    struct curl_slist *l = NULL;
    for (size_t i = 0; i < n; i++)
        l = curl_slist_append(l, h[i]);
    char *sts = NULL, auth[300] = "Authorization: ";
    struct mm_error err = {0};
    REQUIRE(azure_string_to_sign(AZ_ACCOUNT, method, url, h, n, &sts, &err) == 0);
    REQUIRE(azure_shared_key(AZ_ACCOUNT, az_key, sizeof(az_key), sts, auth + 15,
                             sizeof(auth) - 15) == 0);
    free(sts);
    l = curl_slist_append(l, auth);
    l = curl_slist_append(l, "Expect:");
    CURL *e = curl_easy_init();
    REQUIRE(e != NULL);
    FILE *devnull = fopen("/dev/null", "w");
    REQUIRE(devnull != NULL);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
    long code = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    fclose(devnull);
    curl_easy_cleanup(e);
    curl_slist_free_all(l);
    return code;
}

/* azurite with one account of ours (AZURITE_ACCOUNTS replaces its development account: the key
 * is random, so the grep means something), a private container, the model as a blob. The
 * variable is set only while azurite starts: the node and runtime never see it. */
static void start_azurite(const char *model, size_t model_len, const char *key_b64)
{
    char bin[600], accounts[256];
    snprintf(bin, sizeof(bin), "%s/node_modules/.bin/azurite-blob", servers_dir);
    snprintf(accounts, sizeof(accounts), "%s:%s", AZ_ACCOUNT, key_b64);
    REQUIRE(setenv("AZURITE_ACCOUNTS", accounts, 1) == 0);
    int rc = harness_azurite_start(&az, bin);
    unsetenv("AZURITE_ACCOUNTS");
    REQUIRE(rc == 0);
    snprintf(az_endpoint, sizeof(az_endpoint), "http://127.0.0.1:%d/" AZ_ACCOUNT, az.port);
    long code = az_request("PUT", AZ_CONTAINER "?restype=container", NULL, NULL, 0);
    if (code != 201)
        fprintf(stderr, "azurite: create container: HTTP %ld\n", code);
    REQUIRE(code == 201);
    code = az_request("PUT", AZ_CONTAINER "/xgb/bc/model.json", "x-ms-blob-type: BlockBlob", model,
                      model_len);
    if (code != 201)
        fprintf(stderr, "azurite: put blob: HTTP %ld\n", code);
    REQUIRE(code == 201);
}

/* ---------------------------------------------------------------- the checks */

/* The pvc model's copy (model id): in the pod's cache dir, its fetch directory (mm-<id>.<seq>)
 * holds a symbolic link whose target resolves to the file beneath the pvc, and no regular
 * file (linked, not copied). */
static void check_pvc_link(const char *id, const char *rel_in_root)
{
    char cmd[1200], out[4096], want[700];
    snprintf(want, sizeof(want), "%s/%s", cl.models_root, rel_in_root);
    char *real_want = realpath(want, NULL);
    REQUIRE(real_want != NULL);
    /* every link in the model's fetch directory, resolved */
    snprintf(cmd, sizeof(cmd), "find '%s' -path '*/mm-%s.*' -type l -exec readlink -f {} \\;",
             cl.pods[0].cache_dir, id);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    bool linked = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        linked = linked || strcmp(line, real_want) == 0;
    if (!linked)
        fprintf(stderr, "no link to %s for %s in %s: %s\n", real_want, id, cl.pods[0].cache_dir,
                out);
    CHECK(linked);
    snprintf(cmd, sizeof(cmd), "find '%s' -path '*/mm-%s.*' -type f", cl.pods[0].cache_dir, id);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    if (out[0])
        fprintf(stderr, "%s was copied: %s\n", id, out);
    CHECK(out[0] == '\0');
    free(real_want);
}

/* Every version of the copy record of model on n0, from etcd's history: whether one was
 * Loading with 0 < bytes_pulled <= bytes_total == total, and whether one after Loading still
 * had progress. */
static void check_progress_history(const char *model, uint64_t total)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_copy(key, sizeof(key), cl.name, model, cl.pods[0].iid, &err) == 0);
    struct etcd_response *resp = NULL;
    struct etcd_range_req now = {.key = key};
    REQUIRE(etcd_sync_range(cl.etcd_client, &now, &resp, &err) == 0);
    REQUIRE(resp->op.n_kvs == 1);
    int64_t first = resp->op.kvs[0].create_revision, last = resp->op.kvs[0].mod_revision;
    etcd_response_free(resp);
    REQUIRE(last - first < 5000);
    int64_t seen_rev = 0;
    bool progress = false, progress_after = false, left_loading = false;
    uint64_t max_pulled = 0;
    int versions = 0;
    for (int64_t rev = first; rev <= last; rev++) {
        struct etcd_range_req at = {.key = key, .revision = rev};
        resp = NULL;
        REQUIRE(etcd_sync_range(cl.etcd_client, &at, &resp, &err) == 0);
        if (resp->op.n_kvs == 1 && resp->op.kvs[0].mod_revision != seen_rev) {
            const struct etcd_kv *kv = &resp->op.kvs[0];
            seen_rev = kv->mod_revision;
            versions++;
            struct copy_record rec;
            REQUIRE(record_decode(RECORD_COPY, kv->value, kv->value_len, &rec, &err) == 0);
            fprintf(stderr, "  rev %lld: %s\n", (long long)kv->mod_revision, kv->value);
            if (rec.state == COPY_LOADING && rec.bytes_pulled > 0) {
                CHECK(!left_loading);
                CHECK(rec.bytes_total == total);
                CHECK(rec.bytes_pulled <= total);
                progress = true;
                if (rec.bytes_pulled > max_pulled)
                    max_pulled = rec.bytes_pulled;
            }
            if (rec.state != COPY_LOADING && rec.state != COPY_PENDING)
                left_loading = true;
            if (rec.state != COPY_LOADING && (rec.bytes_pulled || rec.bytes_total))
                progress_after = true;
        }
        etcd_response_free(resp);
    }
    fprintf(stderr,
            "%s: %d versions of its copy record, progress seen %s (up to %llu of %llu "
            "bytes)\n",
            model, versions, progress ? "yes" : "no", (unsigned long long)max_pulled,
            (unsigned long long)total);
    CHECK(progress);
    CHECK(!progress_after);
}

static void grep_secrets(void)
{
    const char *files[5 + 2 * CLUSTER_MAX_PODS];
    size_t n = 0;
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        files[n++] = cl.pods[i].node_log;
        files[n++] = cl.pods[i].runtime_log;
    }
    files[n++] = s3.log_path;
    files[n++] = gcs.log_path;
    files[n++] = https.log_path;
    files[n++] = az.log_path;
    size_t checked = 0;
    for (size_t f = 0; f < n; f++) {
        size_t len = 0;
        char *text = pullcheck_read_all(files[f], &len);
        if (!text) {
            fprintf(stderr, "cannot read %s\n", files[f]);
            CHECK(false);
            continue;
        }
        checked += len;
        for (size_t s = 0; s < n_secrets; s++) {
            char what[32];
            snprintf(what, sizeof(what), "secret %zu", s);
            CHECK(pullcheck_no_secret(text, secrets[s], files[f], what));
        }
        free(text);
    }
    for (size_t s = 0; s < n_secrets; s++)
        CHECK(pullcheck_no_secret(seen_errors, secrets[s], "the errors seen", "a secret"));
    fprintf(stderr, "%zu secrets grepped for in %zu logs (%zu bytes) and the errors seen\n",
            n_secrets, n, checked);
    CHECK(checked > 0);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s MM_NODE MM_RUNTIME MAKE_BREAST_CANCER SERVERS_DIR\n", argv[0]);
        return 2;
    }
    mm_node = argv[1];
    mm_runtime = argv[2];
    maker_xgb = argv[3];
    servers_dir = argv[4];
    if (!cluster_node_has_listen(mm_node)) {
        fprintf(stderr, "mm-node has no --listen yet: skipped\n");
        return 77;
    }
    char s3bin[600];
    snprintf(s3bin, sizeof(s3bin), "%s/node_modules/.bin/s3rver", servers_dir);
    if (access(s3bin, X_OK) != 0) {
        fprintf(stderr, "%s is missing: run scripts/setup.sh to install the test servers\n", s3bin);
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(work, sizeof(work), "%s/mm-e2e-storage-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    REQUIRE(mkdtemp(work) != NULL);
    atexit(stop_all);

    /* the model */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker_xgb, work);
    sh(cmd);
    char path[400];
    snprintf(path, sizeof(path), "%s/xgboost/breast-cancer.json", work);
    size_t model_len = 0;
    char *model = pullcheck_read_all(path, &model_len);
    REQUIRE(model && model_len > 0);
    model_bytes = model_len;

    const char *s3_secret = new_secret("s3sk-");
    const char *s3_wrong = new_secret("s3bad-");
    const char *token = new_secret("tok-");
    start_servers(model, model_len, s3_secret, token);
    const char *az_key_b64 = new_azure_key();
    long long t_az = harness_now_ms();
    start_azurite(model, model_len, az_key_b64);
    fprintf(stderr, "azurite up with the model in %lld ms\n", harness_now_ms() - t_az);
    free(model);

    /* the GCS private key is a secret too: a line of its body, and the whole PEM in JSON */
    snprintf(path, sizeof(path), "%s/sa.key", work);
    char *pem = pullcheck_read_all(path, NULL);
    REQUIRE(pem != NULL);
    char *line = strchr(pem, '\n');
    REQUIRE(line && strlen(line + 1) > 64);
    REQUIRE(n_secrets < MAX_SECRETS);
    secrets[n_secrets] = strndup(line + 1, 64);
    REQUIRE(secrets[n_secrets] != NULL);
    n_secrets++;
    snprintf(path, sizeof(path), "%s/tls/ca.pem", work);
    char *ca = pullcheck_read_all(path, NULL);
    REQUIRE(ca != NULL);

    /* the storage-config Secret as a pod mounts it (--storage-config-dir) */
    char secret_dir[300], node_args[512];
    snprintf(secret_dir, sizeof(secret_dir), "%s/storage-config", work);
    REQUIRE(mkdir(secret_dir, 0700) == 0);
    snprintf(node_args, sizeof(node_args),
             "--pull-concurrency 4 --max-load-failures 1 --storage-config-dir %s", secret_dir);
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .n_pods = 1,
        .runtime_load_timeout_ms = 30000,
        .lease_ttl = "2s",
        .model_types = "xgboost",
        .node_args = node_args,
    };
    long long t0 = harness_now_ms();
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    fprintf(stderr, "cluster up in %lld ms\n", harness_now_ms() - t0);
    /* the pvc: mounted at <models root>/<name> */
    snprintf(path, sizeof(path), "%s/xgboost/breast-cancer.json", work);
    REQUIRE(cluster_copy_file(&cl, path, PVC_NAME "/xgb/bc.json") == 0);

    /* the secrets, as ModelMesh Serving's controller puts them */
    static char json[16384], pem_json[8192], ca_json[8192];
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"region\":\"us-east-1\",\"bucket\":\"%s\"}",
             s3_secret, s3.endpoint, BUCKET);
    put_secret("s3e2e", json);
    /* the walkthrough's spelling: access_key, default_bucket */
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"default_bucket\":\"%s\"}",
             s3_secret, proxy.url, BUCKET);
    put_secret("s3slow", json);
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"bucket\":\"%s\"}",
             s3_wrong, s3.endpoint, BUCKET);
    put_secret("s3bad", json);
    json_str(pem_json, sizeof(pem_json), pem);
    snprintf(json, sizeof(json),
             "{\"type\":\"gcs\",\"private_key\":%s,\"client_email\":"
             "\"e2e@mm-test.iam.gserviceaccount.com\",\"token_uri\":\"%s\",\"endpoint_url\":"
             "\"%s\"}",
             pem_json, gcs.token_uri, gcs.endpoint);
    put_secret("gcse2e", json); /* no bucket: the model's storage parameters give it */
    json_str(ca_json, sizeof(ca_json), ca);
    snprintf(json, sizeof(json),
             "{\"type\":\"http\",\"url\":\"%s\",\"headers\":{\"Authorization\":\"Bearer %s\"},"
             "\"certificate\":%s}",
             https.url, token, ca_json);
    put_secret("httpse2e", json);
    snprintf(json, sizeof(json),
             "{\"type\":\"azure\",\"account_name\":\"" AZ_ACCOUNT "\",\"container\":\"" AZ_CONTAINER
             "\",\"account_key\":\"%s\",\"endpoint_url\":\"%s\"}",
             az_key_b64, az_endpoint);
    put_secret("azuree2e", json);
    snprintf(json, sizeof(json),
             "{\"type\":\"azure\",\"container\":\"" AZ_CONTAINER "\",\"connection_string\":"
             "\"DefaultEndpointsProtocol=http;AccountName=" AZ_ACCOUNT ";AccountKey=%s;"
             "BlobEndpoint=%s;\"}",
             az_key_b64, az_endpoint);
    put_secret("azureconn", json);
    put_secret("pvce2e", "{\"type\":\"pvc\",\"name\":\"" PVC_NAME "\"}");
    /* the key a storageUri alone resolves to (no bucket: the URI gives it) */
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\"}",
             s3_secret, s3.endpoint);
    put_secret("default", json);
    free(pem);
    free(ca);

    /* every provider: pulled, loaded, answering; the node counts the bytes pulled */
    double pulled0 = pulled_bytes();
    CHECK(pulled0 >= 0);
    load_and_infer("bc-s3", "s3e2e", "xgb/bc/model.json");
    CHECK(pulled_bytes() == pulled0 + (double)model_bytes);
    load_and_infer("bc-gcs",
                   "{\"storage_key\":\"gcse2e\",\"storage_params\":{\"bucket\":\"" GCS_BUCKET
                   "\"},\"model_type\":{\"name\":\"xgboost\"}}",
                   "xgb/bc.json");
    load_and_infer("bc-https", "httpse2e", "models/bc.json");
    load_and_infer("bc-azure", "azuree2e", "xgb/bc/model.json");
    load_and_infer("bc-azure-conn", "azureconn", "xgb/bc/model.json");
    double pulled1 = pulled_bytes();
    load_and_infer("bc-pvc", "pvce2e", "xgb/bc.json");
    CHECK(pulled_bytes() == pulled1); /* a pvc is linked: nothing pulled */
    check_pvc_link("bc-pvc", PVC_NAME "/xgb/bc.json");
    /* by storageUri, as mmctl model register --uri sends it: the URI's parameters as the
     * model's storage_params, no storage key (so the `default` entry) */
    char *uri_params = NULL, *uri_path = NULL;
    struct mm_error uerr = {0};
    REQUIRE(stcfg_parse_uri("s3://" BUCKET "/xgb/bc/model.json", &uri_params, &uri_path, &uerr) ==
            0);
    char uri_key[512];
    snprintf(uri_key, sizeof(uri_key), "{\"storage_params\":%s}", uri_params);
    load_and_infer("bc-uri", uri_key, uri_path);
    free(uri_params);
    free(uri_path);

    /* the mounted Secret's file wins over the registry's entry, and is read again at each
     * resolve: s3dir is wrong in etcd and right in the file, then the file turns wrong */
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"AKIAE2ESTORAGE\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"bucket\":\"%s\"}",
             s3_wrong, s3.endpoint, BUCKET);
    put_secret("s3dir", json);
    put_secret_file(secret_dir, "s3dir", s3_secret);
    load_and_infer("bc-dir", "s3dir", "xgb/bc/model.json");
    put_secret_file(secret_dir, "s3fileonly", s3_secret); /* in no etcd entry */
    load_and_infer("bc-dir-only", "s3fileonly", "xgb/bc/model.json");
    put_secret_file(secret_dir, "s3dir", s3_wrong);
    struct mmc_reply r;
    mmc_register(cl.pods[0].api, "bc-dir-changed", "xgboost", "xgb/bc/model.json", "s3dir", true,
                 true, 0, CALL_MS, &r);
    char buf[2048];
    fprintf(stderr, "bc-dir-changed (the file now wrong): %s\n",
            mmc_describe(&r, buf, sizeof(buf)));
    for (size_t i = 0; i < r.n_errors; i++)
        note_error(r.errors[i]);
    CHECK(r.code == GRPC_STATUS_OK && r.status == MMC_LOADING_FAILED);

    /* bad credentials: the failure names the secret's fields and the key */
    mmc_register(cl.pods[0].api, "bc-bad", "xgboost", "xgb/bc/model.json", "s3bad", true, true, 0,
                 CALL_MS, &r);
    fprintf(stderr, "bc-bad: %s\n", mmc_describe(&r, buf, sizeof(buf)));
    CHECK(r.code == GRPC_STATUS_OK && r.status == MMC_LOADING_FAILED);
    bool named = false;
    for (size_t i = 0; i < r.n_errors; i++) {
        note_error(r.errors[i]);
        if (strstr(r.errors[i], "access_key_id") && strstr(r.errors[i], "secret_access_key") &&
            strstr(r.errors[i], "'s3bad'"))
            named = true;
    }
    CHECK(named);
    struct cluster_copy copies[4];
    int n = cluster_copies(&cl, "bc-bad", copies, 4);
    CHECK(n == 1);
    if (n == 1) {
        note_error(copies[0].rec.error);
        CHECK(copies[0].rec.state == COPY_FAILED);
        CHECK(strstr(copies[0].rec.error, "secret_access_key") != NULL);
        fprintf(stderr, "bc-bad's copy record: %s\n", copies[0].rec.error);
    }

    /* progress: the big object stalls half way once, then is pulled again; it is no model,
     * so it fails to load after */
    mmc_register(cl.pods[0].api, "big", "xgboost", "big/model.bin", "s3slow", true, false, 0,
                 CALL_MS, &r);
    CHECK(r.code == GRPC_STATUS_OK);
    long long deadline = harness_now_ms() + 40000;
    bool over = false;
    while (!over && harness_now_ms() < deadline) {
        cluster_run(&cl, 200);
        n = cluster_copies(&cl, "big", copies, 4);
        over = n == 1 && (copies[0].rec.state == COPY_LOADED || copies[0].rec.state == COPY_FAILED);
    }
    CHECK(over);
    if (n == 1) {
        note_error(copies[0].rec.error);
        fprintf(stderr, "big: %s %s (the proxy gave %ld faults, saw %ld requests)\n",
                copy_state_name(copies[0].rec.state), copies[0].rec.error,
                faultproxy_faults(&proxy), faultproxy_requests(&proxy));
    }
    CHECK(faultproxy_faults(&proxy) == 1);
    check_progress_history("big", BIG_BYTES);
    /* the node logged the pull's progress without its secret (grepped below) */

    grep_secrets();
    if (check_failures)
        cluster_dump_logs(&cl, true);
    for (size_t s = 0; s < n_secrets; s++)
        free(secrets[s]);
    return CHECK_DONE();
}
