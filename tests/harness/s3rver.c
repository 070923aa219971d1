/* s3rver.c - s3rver for the s3 tests (see s3rver.h). */
#include "s3rver.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

int harness_s3rver_start(struct harness_s3rver *s, const char *servers_dir, const char *bucket,
                         const char *access_key_id, const char *secret, const char *extra_args)
{
    memset(s, 0, sizeof(*s));
    char script[512], module[512];
    snprintf(script, sizeof(script), "%s/s3rver_run.js", servers_dir);
    snprintf(module, sizeof(module), "%s/node_modules/s3rver/package.json", servers_dir);
    if (access(module, R_OK) != 0 || access(script, R_OK) != 0) {
        fprintf(stderr, "s3rver is not installed in %s/node_modules: run scripts/setup.sh\n",
                servers_dir);
        return -ENOENT;
    }
    snprintf(s->dir, sizeof(s->dir), "/tmp/mm-s3rver-XXXXXX");
    if (!mkdtemp(s->dir))
        return -errno;
    char data[300];
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(s->log_path, sizeof(s->log_path), "%s/s3rver.log", s->dir);
    char *argv[32];
    int n = 0;
    char extra[512] = "";
    argv[n++] = "node";
    argv[n++] = script;
    argv[n++] = "--dir";
    argv[n++] = data;
    argv[n++] = "--bucket";
    argv[n++] = (char *)bucket;
    if (extra_args) {
        snprintf(extra, sizeof(extra), "%s", extra_args);
        for (char *save = NULL, *t = strtok_r(extra, " ", &save); t && n < 30;
             t = strtok_r(NULL, " ", &save))
            argv[n++] = t;
    }
    argv[n] = NULL;
    /* The key pair through the environment: nothing secret on a command line. */
    setenv("S3RVER_ACCESS_KEY_ID", access_key_id, 1);
    setenv("S3RVER_SECRET_ACCESS_KEY", secret, 1);
    int rc = harness_spawn_logged(argv, s->log_path, 20000, &s->pid, &s->port);
    unsetenv("S3RVER_ACCESS_KEY_ID");
    unsetenv("S3RVER_SECRET_ACCESS_KEY");
    if (rc < 0) {
        s->pid = 0;
        return rc;
    }
    snprintf(s->endpoint, sizeof(s->endpoint), "http://127.0.0.1:%d", s->port);
    return 0;
}

struct upload {
    const char *p;
    size_t left;
};

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nmemb < u->left ? size * nmemb : u->left;
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

static size_t sink(char *p, size_t size, size_t nmemb, void *arg)
{
    (void)p, (void)arg;
    return size * nmemb;
}

int harness_s3rver_put(const struct harness_s3rver *s, const char *bucket, const char *key,
                       const void *data, size_t len)
{
    CURL *c = curl_easy_init();
    if (!c)
        return -ENOMEM;
    char url[2048];
    snprintf(url, sizeof(url), "%s/%s/%s", s->endpoint, bucket, key);
    struct upload u = {data, len};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode res = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (res != CURLE_OK || code != 200) {
        fprintf(stderr, "s3rver PUT %s: %s, HTTP %ld\n", url, curl_easy_strerror(res), code);
        return -EIO;
    }
    return 0;
}

void harness_s3rver_stop(struct harness_s3rver *s)
{
    if (s->pid > 0)
        harness_stop_pid(s->pid, 3000);
    s->pid = 0;
    if (s->dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        char out[256];
        harness_capture(cmd, out, sizeof(out));
        s->dir[0] = '\0';
    }
}
