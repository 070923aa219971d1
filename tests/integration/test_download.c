/* test_download.c - the download engine (mm/download.h) against a real HTTP server (Python's
 * http.server over a temp dir), with tests/harness/faultproxy.c in front for 500s, resets, cut
 * and stalled answers, and openssl s_server for an untrusted certificate. Text requests: body,
 * max_body (-EFBIG), a 404 phrased by http_error and by default, a 500 retried then answered,
 * 500s until the attempts are spent (with the backoff's time), connection refused, name not
 * resolved, TLS refused (not retried), a stall timeout, a prepare failure. Files: one object
 * with size and MD5 (bytes equal, 0600, no temporary left, progress ending at total), a tree
 * under max_transfers = 2 (the queue bound seen by the proxy), a cut answer retried into a
 * truncated temporary, MD5 and length mismatches (-EBADMSG after the retries, nothing left),
 * refused names, symbolic links in the way (nothing written through them), the free-space
 * check (-ENOSPC), progress at most every 250 ms on a throttled transfer; cancel before the
 * start, while queued, while running, during a backoff (no callback, no file left); dl_free
 * with ops in flight and from inside a callback. Run under ASan too. */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "faultproxy.h"
#include "harness.h"
#include "mm/curlev.h"
#include "mm/download.h"

static struct ev_loop *loop;
static struct curlev *curl;
static char top[64], www[256], out_root[256];
static int http_port;
static struct faultproxy fp;
static int out_seq;

/* ---- requests ---- */

struct req {
    char url[512];
    int fail_prepare; /* -errno prepare returns */
    const char *cainfo;
    int prepares;
};

static int prepare(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err)
{
    struct req *r = arg;
    r->prepares++;
    if (r->fail_prepare)
        return mm_error_set(err, r->fail_prepare, "prepare refused %s", r->url);
    curl_easy_setopt(easy, CURLOPT_URL, r->url);
    *headers = curl_slist_append(*headers, "X-Test: yes");
    if (r->cainfo)
        curl_easy_setopt(easy, CURLOPT_CAINFO, r->cainfo);
    return 0;
}

static int phrase_404(long code, const char *body, size_t len, void *arg, struct mm_error *err)
{
    if (code == 404 && len > 0 && strlen(body) == len)
        return mm_error_set(err, -ENOENT, "not found (%ld, %zu bytes of body)", code, len);
    return mm_error_set(err, -EIO, "other %ld", code);
}

static void set_url(struct req *r, const char *base, const char *path)
{
    snprintf(r->url, sizeof r->url, "%.100s/%.300s", base, path);
}

static const char *direct(void)
{
    static char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", http_port);
    return url;
}

/* ---- results ---- */

struct result {
    int calls;
    int status;
    char msg[MM_ERROR_MSG_MAX];
    long code;
    char body[8192];
    size_t len;
    uint64_t bytes;
    int progress_calls;
    uint64_t done, total;
    double progress_at[256];
    struct dl_op *op;
    bool cancel_in_progress; /* cancel op from the first progress call */
    struct dl **free_in_cb;  /* dl_free this from the callback */
};

static bool called(void *arg)
{
    return ((struct result *)arg)->calls > 0;
}

static void on_text(int status, const struct mm_error *err, long code, const char *body, size_t len,
                    void *arg)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->code = code;
    snprintf(r->msg, sizeof r->msg, "%s", status ? err->msg : "");
    r->len = len;
    memcpy(r->body, body, len < sizeof(r->body) - 1 ? len : sizeof(r->body) - 1);
    r->body[len < sizeof(r->body) - 1 ? len : sizeof(r->body) - 1] = '\0';
    CHECK(body[len] == '\0');
    if (r->free_in_cb) {
        dl_free(*r->free_in_cb);
        *r->free_in_cb = NULL;
    }
}

static void on_files(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->bytes = bytes;
    snprintf(r->msg, sizeof r->msg, "%s", status ? err->msg : "");
    if (r->free_in_cb) {
        dl_free(*r->free_in_cb);
        *r->free_in_cb = NULL;
    }
}

static void on_progress(uint64_t done, uint64_t total, void *arg)
{
    struct result *r = arg;
    if (r->progress_calls < 256)
        r->progress_at[r->progress_calls] = (double)harness_now_ms() / 1000.0;
    r->progress_calls++;
    CHECK(done >= r->done); /* never backwards within one attempt run without retries */
    r->done = done;
    r->total = total;
    if (r->cancel_in_progress && r->op) {
        dl_cancel(r->op);
        r->op = NULL;
    }
}

/* ---- files ---- */

static void write_random(const char *rel, size_t size, char md5_hex[33])
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", www, rel);
    for (char *p = path + strlen(www) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    unsigned long long x = 0x1234567ull + size;
    char buf[4096];
    for (size_t done = 0; done < size;) {
        size_t n = size - done < sizeof buf ? size - done : sizeof buf;
        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (char)(x >> 56);
        }
        REQUIRE(fwrite(buf, 1, n, f) == n);
        EVP_DigestUpdate(ctx, buf, n);
        done += n;
    }
    REQUIRE(fclose(f) == 0);
    unsigned char d[16];
    EVP_DigestFinal_ex(ctx, d, NULL);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 16; i++)
        sprintf(md5_hex + 2 * i, "%02x", d[i]);
}

static bool same_file(const char *served_rel, const char *path)
{
    char a[PATH_MAX * 2], cmd[PATH_MAX * 5], outb[64];
    snprintf(a, sizeof a, "%s/%s", www, served_rel);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, path);
    return harness_capture(cmd, outb, sizeof outb) == 0;
}

/* A fresh output directory, opened. */
static int new_out(char *path, size_t size)
{
    snprintf(path, size, "%s/out%d", out_root, ++out_seq);
    REQUIRE(mkdir(path, 0700) == 0);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    return fd;
}

/* Entries in dir, recursively, files only; and whether a temporary is among them. */
static int count_files(const char *dir, bool *has_part)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            n += count_files(p, has_part);
        } else {
            n++;
            if (strstr(e->d_name, ".part"))
                *has_part = true;
        }
    }
    closedir(d);
    return n;
}

static struct dl *new_dl(unsigned max_transfers, unsigned attempts, uint32_t backoff_ms,
                         uint32_t stall_ms)
{
    struct dl_config cfg = {.curl = curl,
                            .max_transfers = max_transfers,
                            .max_attempts = attempts,
                            .backoff_ms = backoff_ms,
                            .connect_timeout_ms = 2000,
                            .stall_timeout_ms = stall_ms};
    struct dl *dl;
    struct mm_error err;
    REQUIRE(dl_new(&cfg, &dl, &err) == 0);
    return dl;
}

static void set_fault(enum faultproxy_kind kind, const char *match, long count, long bytes,
                      long stall_ms)
{
    struct faultproxy_fault f = {
        .kind = kind, .match = match, .count = count, .bytes = bytes, .stall_ms = stall_ms};
    faultproxy_set(&fp, &f);
}

static void text(struct dl *dl, struct req *rq, size_t max_body, bool with_phrase, struct result *r,
                 long ms)
{
    struct dl_request req = {.prepare = prepare,
                             .http_error = with_phrase ? phrase_404 : NULL,
                             .arg = rq,
                             .what = "test://text"};
    struct mm_error err;
    REQUIRE(dl_text(dl, &req, max_body, on_text, r, &r->op, &err) == 0);
    CHECK(r->calls == 0); /* never inside the call */
    harness_run_until(loop, called, r, ms);
}

/* ---- text ---- */

static void test_text(void)
{
    struct dl *dl = new_dl(0, 3, 100, 0);
    struct req rq = {0};
    struct result r = {0};

    set_url(&rq, direct(), "hello.txt");
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.code, 200);
    CHECK_STR(r.body, "hello, world\n");

    /* max_body */
    memset(&r, 0, sizeof r);
    text(dl, &rq, 5, false, &r, 5000);
    CHECK_INT(r.status, -EFBIG);
    CHECK(strstr(r.msg, "test://text") == r.msg);

    /* 404: the provider's phrase with the body, or ours */
    memset(&r, 0, sizeof r);
    set_url(&rq, direct(), "missing.txt");
    text(dl, &rq, 1024, true, &r, 5000);
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "not found (404") != NULL);
    CHECK_INT(r.code, 404);
    memset(&r, 0, sizeof r);
    long before = faultproxy_requests(&fp);
    set_url(&rq, fp.url, "missing.txt");
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, -EIO);
    CHECK_STR(r.msg, "test://text: HTTP 404");
    CHECK_INT(faultproxy_requests(&fp) - before, 1); /* a 4xx is not retried */

    /* a 500 first, then the answer */
    set_fault(FAULTPROXY_STATUS, "hello", 1, 0, 0);
    memset(&r, 0, sizeof r);
    rq.prepares = 0;
    set_url(&rq, fp.url, "hello.txt");
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.body, "hello, world\n");
    CHECK_INT(faultproxy_faults(&fp), 1);
    CHECK_INT(rq.prepares, 2); /* each attempt prepared afresh */

    /* 500s until the attempts are spent: 3 requests, backoffs of ~100 and ~200 ms */
    set_fault(FAULTPROXY_STATUS, "hello", -1, 0, 0);
    memset(&r, 0, sizeof r);
    long long t0 = harness_now_ms();
    text(dl, &rq, 1024, false, &r, 5000);
    long long took = harness_now_ms() - t0;
    CHECK_INT(r.status, -EIO);
    CHECK_STR(r.msg, "test://text: HTTP 500");
    CHECK_INT(r.code, 500);
    CHECK(strstr(r.body, "injected") != NULL);
    CHECK_INT(faultproxy_faults(&fp), 3);
    CHECK(took >= 225 && took < 3000);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);

    /* a reset connection is retried */
    set_fault(FAULTPROXY_RESET, "hello", 1, 0, 0);
    memset(&r, 0, sizeof r);
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, 0);
    CHECK_INT(faultproxy_faults(&fp), 1);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);

    /* connection refused, retried */
    int dead = harness_free_port();
    memset(&r, 0, sizeof r);
    rq.prepares = 0;
    snprintf(rq.url, sizeof rq.url, "http://127.0.0.1:%d/x", dead);
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, -ECONNREFUSED);
    CHECK(strstr(r.msg, "test://text: no connection") == r.msg);
    CHECK_INT(rq.prepares, 3);

    /* name not resolved */
    memset(&r, 0, sizeof r);
    snprintf(rq.url, sizeof rq.url, "http://no-such-host.invalid/x");
    text(dl, &rq, 1024, false, &r, 20000);
    CHECK_INT(r.status, -EHOSTUNREACH);

    /* TLS to a plain HTTP server: a handshake failure, not retried */
    memset(&r, 0, sizeof r);
    rq.prepares = 0;
    snprintf(rq.url, sizeof rq.url, "https://127.0.0.1:%d/hello.txt", http_port);
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, -EPROTO);
    CHECK(strstr(r.msg, "TLS") != NULL);
    CHECK_INT(rq.prepares, 1);

    /* prepare fails: its error, nothing sent */
    memset(&r, 0, sizeof r);
    rq.fail_prepare = -EINVAL;
    set_url(&rq, fp.url, "hello.txt");
    before = faultproxy_requests(&fp);
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.status, -EINVAL);
    CHECK(strstr(r.msg, "prepare refused") != NULL);
    CHECK_INT(faultproxy_requests(&fp), before);
    rq.fail_prepare = 0;

    /* refused arguments */
    struct mm_error err;
    struct dl_request req = {.prepare = prepare, .arg = &rq, .what = "t"};
    CHECK_INT(dl_text(dl, &req, 0, on_text, &r, NULL, &err), -EINVAL);
    req.prepare = NULL;
    CHECK_INT(dl_text(dl, &req, 10, on_text, &r, NULL, &err), -EINVAL);

    /* cancel while running: no callback */
    memset(&r, 0, sizeof r);
    set_fault(FAULTPROXY_STALL, "hello", 1, 1, 3000);
    set_url(&rq, fp.url, "hello.txt");
    req.prepare = prepare;
    REQUIRE(dl_text(dl, &req, 1024, on_text, &r, &r.op, &err) == 0);
    harness_run_until(loop, NULL, NULL, 300);
    dl_cancel(r.op);
    harness_run_until(loop, NULL, NULL, 200);
    CHECK_INT(r.calls, 0);

    /* free from inside the callback */
    memset(&r, 0, sizeof r);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);
    r.free_in_cb = &dl;
    text(dl, &rq, 1024, false, &r, 5000);
    CHECK_INT(r.calls, 1);
    CHECK(dl == NULL);
    dl_free(dl);
}

/* Stall timeout: an answer that stops moving fails with -ETIMEDOUT. */
static void test_stall(void)
{
    struct dl *dl = new_dl(0, 1, 100, 1000);
    struct req rq = {0};
    struct result r = {0};
    set_fault(FAULTPROXY_STALL, "big", 1, 200, 15000);
    set_url(&rq, fp.url, "big.bin");
    long long t0 = harness_now_ms();
    text(dl, &rq, 64 << 20, false, &r, 15000);
    CHECK_INT(r.status, -ETIMEDOUT);
    CHECK(strstr(r.msg, "stalled") != NULL);
    CHECK(harness_now_ms() - t0 < 12000);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);
    dl_free(dl);
}

/* An untrusted certificate: -EPROTO, not retried. */
static void test_tls(void)
{
    char cmd[PATH_MAX * 3], outb[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 "
             "-keyout tls.key -out tls.crt -days 1 2>&1",
             top);
    REQUIRE(harness_capture(cmd, outb, sizeof outb) == 0);
    int port = harness_free_port();
    char portarg[32], cert[PATH_MAX], key[PATH_MAX], log[PATH_MAX];
    snprintf(portarg, sizeof portarg, "%d", port);
    snprintf(cert, sizeof cert, "%s/tls.crt", top);
    snprintf(key, sizeof key, "%s/tls.key", top);
    snprintf(log, sizeof log, "%s/s_server.log", top);
    char *argv[] = {"openssl", "s_server", "-accept", portarg,  "-cert", cert,
                    "-key",    key,        "-www",    "-quiet", NULL};
    pid_t pid;
    REQUIRE(harness_spawn(argv, log, &pid) == 0);
    struct dl *dl = new_dl(0, 3, 50, 0);
    struct req rq = {0};
    struct result r = {0};
    snprintf(rq.url, sizeof rq.url, "https://127.0.0.1:%d/", port);
    snprintf(cmd, sizeof cmd, "curl -sk -o /dev/null https://127.0.0.1:%d/", port);
    for (long long until = harness_now_ms() + 10000;
         harness_capture(cmd, outb, sizeof outb) != 0 && harness_now_ms() < until;)
        usleep(50000); /* until it answers */
    text(dl, &rq, 1 << 20, false, &r, 5000);
    CHECK_INT(r.status, -EPROTO);
    CHECK(strstr(r.msg, "not trusted") != NULL);
    CHECK_INT(rq.prepares, 1);
    /* trusted through the CA file: answered */
    memset(&r, 0, sizeof r);
    rq.cainfo = cert;
    text(dl, &rq, 1 << 20, false, &r, 5000);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.code, 200);
    dl_free(dl);
    harness_stop_pid(pid, 1000);
}

/* ---- files ---- */

static int files(struct dl *dl, int dirfd, struct dl_file *f, size_t n, struct result *r, long ms)
{
    struct mm_error err;
    int rc = dl_files(dl, dirfd, f, n, on_progress, on_files, r, &r->op, &err);
    if (rc < 0) {
        snprintf(r->msg, sizeof r->msg, "%s", err.msg);
        return rc;
    }
    CHECK(r->calls == 0);
    if (ms)
        harness_run_until(loop, called, r, ms);
    return 0;
}

static void test_files(void)
{
    char md5_big[33], md5_a[33], md5_b[33], md5_c[33], md5_d[33], out[PATH_MAX], p[PATH_MAX * 2];
    write_random("models/big.bin", 3 << 20, md5_big);
    write_random("models/tree/a.bin", 100000, md5_a);
    write_random("models/tree/sub/b.bin", 200000, md5_b);
    write_random("models/tree/sub/deeper/c.bin", 300000, md5_c);
    write_random("models/tree/d.bin", 0, md5_d);

    struct dl *dl = new_dl(2, 3, 50, 5000);
    struct req rq[4] = {0}, rqb = {0};
    struct result r = {0};

    /* one object with size and MD5 */
    int dirfd = new_out(out, sizeof out);
    set_url(&rqb, fp.url, "models/big.bin");
    struct dl_file f1 = {.rel = "big.bin",
                         .size = 3 << 20,
                         .md5_hex = md5_big,
                         .req = {.prepare = prepare, .arg = &rqb, .what = "test://big"}};
    REQUIRE(files(dl, dirfd, &f1, 1, &r, 10000) == 0);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 3 << 20);
    CHECK_INT(r.done, 3 << 20);
    CHECK_INT(r.total, 3 << 20);
    CHECK(r.progress_calls >= 1);
    snprintf(p, sizeof p, "%s/big.bin", out);
    CHECK(same_file("models/big.bin", p));
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
    bool part = false;
    CHECK_INT(count_files(out, &part), 1);
    CHECK(!part);
    close(dirfd);

    /* a tree, two at a time: the first two answers stall 1 s, so the proxy sees two requests
     * only until they are cut and retried */
    dirfd = new_out(out, sizeof out);
    const char *rels[4] = {"tree/a.bin", "tree/sub/b.bin", "tree/sub/deeper/c.bin", "tree/d.bin"};
    const char *md5s[4] = {md5_a, md5_b, md5_c, md5_d};
    uint64_t sizes[4] = {100000, 200000, 300000, 0};
    struct dl_file ft[4];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "models/%s", rels[i]);
        set_url(&rq[i], fp.url, p);
        ft[i] = (struct dl_file){.rel = rels[i] + 5,
                                 .size = sizes[i],
                                 .md5_hex = md5s[i],
                                 .req = {.prepare = prepare, .arg = &rq[i], .what = "test://tree"}};
    }
    set_fault(FAULTPROXY_STALL, "/models/tree/", 2, 300, 1000);
    long before = faultproxy_requests(&fp);
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, ft, 4, &r, 0) == 0);
    harness_run_until(loop, NULL, NULL, 600);
    CHECK_INT(faultproxy_requests(&fp) - before, 2);
    harness_run_until(loop, called, &r, 10000);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 600000);
    CHECK_INT(faultproxy_requests(&fp) - before, 6);
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", out, rels[i] + 5);
        char served[PATH_MAX];
        snprintf(served, sizeof served, "models/%s", rels[i]);
        CHECK(same_file(served, p));
    }
    part = false;
    CHECK_INT(count_files(out, &part), 4);
    CHECK(!part);
    snprintf(p, sizeof p, "%s/sub/deeper", out);
    CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    close(dirfd);

    /* a cut answer (size unknown: Content-Length rules), retried into a fresh temporary */
    dirfd = new_out(out, sizeof out);
    set_fault(FAULTPROXY_CUT, "big.bin", 1, 100000, 0);
    struct dl_file fu = f1;
    fu.size = UINT64_MAX;
    fu.md5_hex = NULL;
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &fu, 1, &r, 10000) == 0);
    CHECK_INT(r.status, 0);
    CHECK_INT(faultproxy_faults(&fp), 1);
    snprintf(p, sizeof p, "%s/big.bin", out);
    CHECK(same_file("models/big.bin", p));
    close(dirfd);

    /* a 500 first */
    dirfd = new_out(out, sizeof out);
    set_fault(FAULTPROXY_STATUS, "big.bin", 1, 0, 0);
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &f1, 1, &r, 10000) == 0);
    CHECK_INT(r.status, 0);
    CHECK_INT(faultproxy_faults(&fp), 1);
    close(dirfd);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);

    /* MD5 mismatch: -EBADMSG after 3 attempts, nothing left */
    dirfd = new_out(out, sizeof out);
    struct dl_file fm = f1;
    fm.md5_hex = md5_a;
    rqb.prepares = 0;
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &fm, 1, &r, 10000) == 0);
    CHECK_INT(r.status, -EBADMSG);
    CHECK(strstr(r.msg, "test://big: MD5") == r.msg);
    CHECK_INT(rqb.prepares, 3);
    part = false;
    CHECK_INT(count_files(out, &part), 0);
    close(dirfd);

    /* lengths: one byte short of the listing, one over */
    for (int k = 0; k < 2; k++) {
        dirfd = new_out(out, sizeof out);
        struct dl_file fl = f1;
        fl.md5_hex = "";
        fl.size = k ? (3 << 20) - 1 : (3 << 20) + 1;
        memset(&r, 0, sizeof r);
        REQUIRE(files(dl, dirfd, &fl, 1, &r, 10000) == 0);
        CHECK_INT(r.status, -EBADMSG);
        CHECK(strstr(r.msg, k ? "more than" : "bytes received") != NULL);
        part = false;
        CHECK_INT(count_files(out, &part), 0);
        close(dirfd);
    }

    /* refused names and arguments: -EINVAL at once, no callback */
    dirfd = new_out(out, sizeof out);
    const char *bad[] = {"../x", "/abs", "a//b", "a/./b", "", "a/..", "a/", "."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct dl_file fb = f1;
        fb.rel = bad[i];
        memset(&r, 0, sizeof r);
        CHECK_INT(files(dl, dirfd, &fb, 1, &r, 0), -EINVAL);
        CHECK(strstr(r.msg, "refused file name") != NULL);
    }
    memset(&r, 0, sizeof r);
    CHECK_INT(files(dl, dirfd, &f1, 0, &r, 0), -EINVAL);
    struct dl_file fx = f1;
    fx.md5_hex = "xyz";
    CHECK_INT(files(dl, dirfd, &fx, 1, &r, 0), -EINVAL);
    CHECK_INT(files(dl, -1, &f1, 1, &r, 0), -EINVAL);
    harness_run_until(loop, NULL, NULL, 50);
    CHECK_INT(r.calls, 0);
    close(dirfd);

    /* symbolic links in the way: a directory link, a final name that is a link */
    dirfd = new_out(out, sizeof out);
    char outside[PATH_MAX];
    snprintf(outside, sizeof outside, "%s/outside", top);
    REQUIRE(mkdir(outside, 0700) == 0);
    snprintf(p, sizeof p, "%s/link", out);
    REQUIRE(symlink(outside, p) == 0);
    snprintf(p, sizeof p, "%s/big.bin", out);
    char target[PATH_MAX + 16];
    snprintf(target, sizeof target, "%s/victim", outside);
    REQUIRE(symlink(target, p) == 0);
    struct dl_file fl = f1;
    fl.rel = "link/big.bin";
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &fl, 1, &r, 10000) == 0);
    CHECK(r.status < 0);
    CHECK(strstr(r.msg, "link") != NULL);
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &f1, 1, &r, 10000) == 0);
    CHECK_INT(r.status, -EEXIST);
    part = false;
    CHECK_INT(count_files(outside, &part), 0);
    CHECK(access(target, F_OK) != 0);
    CHECK(!part);
    close(dirfd);

    /* the free-space check */
    dl_free(dl);
    struct dl_config cfg = {.curl = curl, .disk_reserve = UINT64_MAX / 4};
    struct mm_error err;
    REQUIRE(dl_new(&cfg, &dl, &err) == 0);
    dirfd = new_out(out, sizeof out);
    memset(&r, 0, sizeof r);
    before = faultproxy_requests(&fp);
    REQUIRE(files(dl, dirfd, &f1, 1, &r, 5000) == 0);
    CHECK_INT(r.status, -ENOSPC);
    CHECK(strstr(r.msg, "not enough disk space") != NULL);
    CHECK_INT(faultproxy_requests(&fp), before);
    close(dirfd);
    dl_free(dl);
}

/* Progress at most every 250 ms, on an answer slowed to 2 MB/s; then cancel from it. */
static void test_progress(void)
{
    char md5[33], out[PATH_MAX];
    write_random("models/slow.bin", 3 << 20, md5);
    struct dl *dl = new_dl(0, 3, 50, 0);
    struct req rq = {0};
    set_url(&rq, fp.url, "models/slow.bin");
    set_fault(FAULTPROXY_SLOW, "slow.bin", -1, 2 << 20, 0);
    struct dl_file f = {.rel = "slow.bin",
                        .size = 3 << 20,
                        .md5_hex = md5,
                        .req = {.prepare = prepare, .arg = &rq, .what = "test://slow"}};
    struct result r = {0};
    int dirfd = new_out(out, sizeof out);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 10000) == 0);
    CHECK_INT(r.status, 0);
    CHECK(r.progress_calls >= 4);
    for (int i = 1; i < r.progress_calls - 1 && i < 256; i++)
        CHECK(r.progress_at[i] - r.progress_at[i - 1] >= 0.24);
    CHECK_INT(r.done, 3 << 20);
    close(dirfd);

    /* cancel while running, from the progress callback: no callback, no file */
    dirfd = new_out(out, sizeof out);
    memset(&r, 0, sizeof r);
    r.cancel_in_progress = true;
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    harness_run_until(loop, NULL, NULL, 1000);
    CHECK_INT(r.calls, 0);
    CHECK_INT(r.progress_calls, 1);
    bool part = false;
    CHECK_INT(count_files(out, &part), 0);
    close(dirfd);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);
    dl_free(dl);
}

/* Cancel before the start, while queued, during a backoff; free with ops in flight. */
static void test_cancel(void)
{
    char out[PATH_MAX], p[PATH_MAX * 2];
    struct dl *dl = new_dl(1, 3, 1000, 5000);
    struct req rq = {0}, rq2 = {0};
    set_url(&rq, fp.url, "models/big.bin");
    set_url(&rq2, fp.url, "models/tree/a.bin");
    struct dl_file f = {.rel = "big.bin",
                        .size = 3 << 20,
                        .req = {.prepare = prepare, .arg = &rq, .what = "test://big"}};
    struct dl_file f2 = {.rel = "a.bin",
                         .size = 100000,
                         .req = {.prepare = prepare, .arg = &rq2, .what = "test://a"}};

    /* before the start */
    int dirfd = new_out(out, sizeof out);
    struct result r = {0}, r2 = {0};
    long before = faultproxy_requests(&fp);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    dl_cancel(r.op);
    harness_run_until(loop, NULL, NULL, 200);
    CHECK_INT(r.calls, 0);
    CHECK_INT(faultproxy_requests(&fp), before);

    /* while queued: the one slot is held by a stalled answer */
    set_fault(FAULTPROXY_STALL, "big.bin", 1, 300, 800);
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    REQUIRE(files(dl, dirfd, &f2, 1, &r2, 0) == 0);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(faultproxy_requests(&fp) - before, 1);
    dl_cancel(r2.op);
    harness_run_until(loop, called, &r, 10000);
    CHECK_INT(r.status, 0);
    CHECK_INT(r2.calls, 0);
    CHECK_INT(faultproxy_requests(&fp) - before, 2); /* big.bin twice, a.bin never */
    snprintf(p, sizeof p, "%s/a.bin", out);
    CHECK(access(p, F_OK) != 0);
    close(dirfd);

    /* during a backoff (1 s): no callback, no second request */
    dirfd = new_out(out, sizeof out);
    set_fault(FAULTPROXY_STATUS, "a.bin", -1, 0, 0);
    memset(&r2, 0, sizeof r2);
    before = faultproxy_requests(&fp);
    REQUIRE(files(dl, dirfd, &f2, 1, &r2, 0) == 0);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(faultproxy_requests(&fp) - before, 1);
    dl_cancel(r2.op);
    harness_run_until(loop, NULL, NULL, 1500);
    CHECK_INT(faultproxy_requests(&fp) - before, 1);
    CHECK_INT(r2.calls, 0);
    bool part = false;
    CHECK_INT(count_files(out, &part), 0);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);
    close(dirfd);

    /* free with a job running and one queued: no callback, partial files removed */
    dirfd = new_out(out, sizeof out);
    set_fault(FAULTPROXY_STALL, "big.bin", 1, 300, 2000);
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    REQUIRE(files(dl, dirfd, &f2, 1, &r2, 0) == 0);
    harness_run_until(loop, NULL, NULL, 300);
    dl_free(dl);
    harness_run_until(loop, NULL, NULL, 100);
    CHECK_INT(r.calls + r2.calls, 0);
    part = false;
    CHECK_INT(count_files(out, &part), 0);
    close(dirfd);

    /* free from inside a files callback, with another job in flight */
    dl = new_dl(1, 3, 50, 5000);
    dirfd = new_out(out, sizeof out);
    set_fault(FAULTPROXY_NONE, NULL, 0, 0, 0);
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    r2.free_in_cb = &dl;
    REQUIRE(files(dl, dirfd, &f2, 1, &r2, 0) == 0);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    harness_run_until(loop, called, &r2, 5000);
    CHECK_INT(r2.status, 0);
    CHECK(dl == NULL);
    harness_run_until(loop, NULL, NULL, 200);
    CHECK_INT(r.calls, 0);
    close(dirfd);
}

/* download.c's test hooks */
void dl_test_slow_writer(struct dl *dl, unsigned us);
unsigned long dl_test_pauses(const struct dl *dl);

/* Backpressure: a writer slower than the answer pauses the transfer (the sink returns
 * CURL_WRITEFUNC_PAUSE) and resumes it; the object arrives whole, MD5 checked. Then a cancel
 * and a failure while paused. */
static void test_backpressure(void)
{
    char md5[33], out[PATH_MAX], p[PATH_MAX * 2];
    write_random("models/bp.bin", 12 << 20, md5);
    struct dl *dl = new_dl(0, 3, 50, 0);
    dl_test_slow_writer(dl, 20000);
    struct req rq = {0};
    set_url(&rq, fp.url, "models/bp.bin");
    struct dl_file f = {.rel = "bp.bin",
                        .size = 12 << 20,
                        .md5_hex = md5,
                        .req = {.prepare = prepare, .arg = &rq, .what = "test://bp"}};
    struct result r = {0};
    int dirfd = new_out(out, sizeof out);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 20000) == 0);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 12 << 20);
    CHECK(dl_test_pauses(dl) > 0);
    snprintf(p, sizeof p, "%s/bp.bin", out);
    CHECK(same_file("models/bp.bin", p));
    close(dirfd);

    /* cancelled while paused: no callback, no file */
    unsigned long pauses = dl_test_pauses(dl);
    dl_test_slow_writer(dl, 200000);
    dirfd = new_out(out, sizeof out);
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &f, 1, &r, 0) == 0);
    for (int i = 0; i < 100 && dl_test_pauses(dl) == pauses; i++)
        harness_run_until(loop, NULL, NULL, 20);
    CHECK(dl_test_pauses(dl) > pauses);
    dl_cancel(r.op);
    harness_run_until(loop, NULL, NULL, 100);
    CHECK_INT(r.calls, 0);
    bool part = false;
    CHECK_INT(count_files(out, &part), 0);
    close(dirfd);

    /* an MD5 mismatch found after pauses: -EBADMSG after the retries, nothing left */
    dl_test_slow_writer(dl, 5000);
    dirfd = new_out(out, sizeof out);
    struct dl_file fm = f;
    fm.md5_hex = "0123456789abcdef0123456789abcdef";
    memset(&r, 0, sizeof r);
    REQUIRE(files(dl, dirfd, &fm, 1, &r, 30000) == 0);
    CHECK_INT(r.status, -EBADMSG);
    part = false;
    CHECK_INT(count_files(out, &part), 0);
    close(dirfd);
    dl_free(dl);
}

static bool http_up(void *arg)
{
    char cmd[128], outb[64];
    snprintf(cmd, sizeof cmd, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/",
             http_port);
    harness_capture(cmd, outb, sizeof outb);
    return strcmp(outb, "200") == 0;
}

int main(void)
{
    snprintf(top, sizeof top, "/tmp/test_download.XXXXXX");
    REQUIRE(mkdtemp(top));
    snprintf(www, sizeof www, "%s/www", top);
    snprintf(out_root, sizeof out_root, "%s/out", top);
    REQUIRE(mkdir(www, 0755) == 0 && mkdir(out_root, 0700) == 0);
    char p[PATH_MAX * 2], log[PATH_MAX], portarg[16];
    snprintf(p, sizeof p, "%s/hello.txt", www);
    FILE *f = fopen(p, "w");
    REQUIRE(f && fputs("hello, world\n", f) >= 0 && fclose(f) == 0);
    char md5[33];
    write_random("big.bin", 8 << 20, md5);

    http_port = harness_free_port();
    snprintf(portarg, sizeof portarg, "%d", http_port);
    snprintf(log, sizeof log, "%s/http.log", top);
    char *argv[] = {"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1",
                    "--directory",      www,  portarg,       NULL};
    pid_t http_pid;
    REQUIRE(harness_spawn(argv, log, &http_pid) == 0);
    long long deadline = harness_now_ms() + 10000;
    while (!http_up(NULL) && harness_now_ms() < deadline)
        usleep(50000);
    REQUIRE(http_up(NULL));
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", http_port, NULL) == 0);

    loop = ev_loop_new(EVFLAG_AUTO);
    struct mm_error err;
    REQUIRE(curlev_new(loop, &curl, &err) == 0);

    test_text();
    test_stall();
    test_tls();
    test_files();
    test_progress();
    test_cancel();
    test_backpressure();

    curlev_free(curl);
    ev_loop_destroy(loop);
    faultproxy_stop(&fp);
    harness_stop_pid(http_pid, 1000);
    snprintf(p, sizeof p, "rm -rf %s", top);
    char outb[64];
    harness_capture(p, outb, sizeof outb);
    return CHECK_DONE();
}
