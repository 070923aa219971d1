/* test_etcd_paged.c - etcd_range_paged against a real etcd: pages bounded by keys and by bytes,
 * every page at the first page's revision (writes, updates and deletes made between pages are
 * not seen), keys holding NUL and 0xff bytes paged in byte order, the page bound, a stop from
 * the page callback, a cancel from inside it, compaction mid-scan, replies over the reply cap;
 * and against a server that misbehaves (no header revision, "more" forever, "more" with no
 * keys, counts that do not add up, {} to unary requests), which must end, not loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/base64.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "fakehttp.h"

static struct ev_loop *loop;

static struct etcd_client *client(const char *endpoints)
{
    struct etcd_config cfg = {.endpoints = endpoints, .request_timeout_ms = 2000};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (etcd_client_new(loop, &cfg, &c, &err) < 0) {
        fprintf(stderr, "client: %s\n", err.msg);
        exit(1);
    }
    return c;
}

#define MAX_SEEN 64

struct scan {
    int pages;
    size_t keys;
    size_t max_page_keys;
    size_t max_page_bytes;     /* of pages holding more than one key */
    int64_t revision;
    bool revision_changed;
    char keys_seen[MAX_SEEN][64];
    size_t key_lens[MAX_SEEN];
    char values_seen[MAX_SEEN][16];
    /* hooks */
    int (*on_first_page)(struct scan *s);
    int stop_at_page;          /* return -EINTR from this page (1-based); 0 = never */
    struct etcd_request *handle;
    bool cancel_at_first;
    struct etcd_client *writer;
    struct etcd_client *reader;
    /* done */
    bool done;
    int status;
    char msg[256];
};

static int on_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct scan *s = arg;
    s->pages++;
    if (s->revision && s->revision != revision)
        s->revision_changed = true;
    s->revision = revision;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += kvs[i].key_len + kvs[i].value_len;
        if (s->keys < MAX_SEEN && kvs[i].key_len < sizeof(s->keys_seen[0])) {
            memcpy(s->keys_seen[s->keys], kvs[i].key, kvs[i].key_len);
            s->key_lens[s->keys] = kvs[i].key_len;
            snprintf(s->values_seen[s->keys], sizeof(s->values_seen[0]), "%.15s", kvs[i].value);
        }
        s->keys++;
    }
    if (n > s->max_page_keys)
        s->max_page_keys = n;
    if (n > 1 && bytes > s->max_page_bytes)
        s->max_page_bytes = bytes;
    if (s->pages == 1 && s->cancel_at_first) {
        etcd_request_cancel(s->handle);
        return 0;
    }
    if (s->pages == 1 && s->on_first_page)
        return s->on_first_page(s);
    return s->pages == s->stop_at_page ? -EINTR : 0;
}

static void on_done(int status, const struct mm_error *err, int64_t revision, size_t n_keys,
                    void *arg)
{
    struct scan *s = arg;
    s->done = true;
    s->status = status;
    if (status == 0 && revision != s->revision)
        s->revision_changed = true;
    snprintf(s->msg, sizeof(s->msg), "%s", status < 0 && err ? err->msg : "");
    if (status == 0 && n_keys != s->keys)
        s->status = -EBADMSG; /* the count the done callback gives must match the pages */
}

static bool scan_done(void *arg)
{
    return ((struct scan *)arg)->done;
}

/* Scan [key, key's prefix end) to its end. */
static void scan(struct etcd_client *c, const char *prefix, struct etcd_paged_req req,
                 struct scan *s)
{
    char end[256];
    size_t end_len = etcd_prefix_end(prefix, strlen(prefix), end);
    req.key = prefix;
    req.range_end = end;
    req.range_end_len = end_len;
    s->reader = c;
    REQUIRE(etcd_range_paged(c, &req, on_page, on_done, s, &s->handle) == 0);
    harness_run_until(loop, scan_done, s, 10000);
}

static void put(struct etcd_client *c, const char *key, const char *value)
{
    struct mm_error err = {0};
    if (etcd_sync_put(c, key, value, 0, NULL, &err) < 0)
        fprintf(stderr, "put %s: %s\n", key, err.msg);
}

static void test_bounds(struct etcd_client *c)
{
    for (int i = 0; i < 25; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/pg/k/%02d", i);
        put(c, k, "v");
    }
    put(c, "/pg/kz", "outside the prefix");
    struct scan s = {0};
    scan(c, "/pg/k/", (struct etcd_paged_req){.page_keys = 4}, &s);
    CHECK(s.done);
    CHECK_INT(s.status, 0);
    CHECK_INT(s.keys, 25);
    CHECK_INT(s.pages, 7); /* 6 x 4 + 1 */
    CHECK_INT(s.max_page_keys, 4);
    CHECK(!s.revision_changed);
    CHECK_STR(s.keys_seen[0], "/pg/k/00");
    CHECK_STR(s.keys_seen[24], "/pg/k/24");

    /* Bytes: pairs of ~108 bytes, pages of at most 250 bytes hold two; a pair larger than a
     * page comes alone. */
    char big[1001], hundred[101];
    memset(big, 'b', 1000);
    big[1000] = '\0';
    memset(hundred, 'h', 100);
    hundred[100] = '\0';
    for (int i = 0; i < 9; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/pg/b/%02d", i);
        put(c, k, i == 4 ? big : hundred);
    }
    struct scan b = {0};
    scan(c, "/pg/b/", (struct etcd_paged_req){.page_keys = 100, .page_bytes = 250}, &b);
    CHECK_INT(b.status, 0);
    CHECK_INT(b.keys, 9);
    CHECK(b.max_page_bytes <= 250);
    CHECK_INT(b.max_page_keys, 2);
    CHECK(b.pages >= 5);

    /* More pages than allowed: -E2BIG after max_pages requests. */
    struct scan m = {0};
    scan(c, "/pg/k/", (struct etcd_paged_req){.page_keys = 1, .max_pages = 3}, &m);
    CHECK_INT(m.status, -E2BIG);
    CHECK_INT(m.pages, 3);
    CHECK(strstr(m.msg, "after 3 pages") != NULL);

    /* The page callback stops the scan: done gets its status, no further page. */
    struct scan st = {.stop_at_page = 2};
    scan(c, "/pg/k/", (struct etcd_paged_req){.page_keys = 5}, &st);
    CHECK_INT(st.status, -EINTR);
    CHECK_INT(st.pages, 2);

    /* Cancelled from inside its first page: no more pages, no done callback. */
    struct scan cn = {.cancel_at_first = true};
    scan(c, "/pg/k/", (struct etcd_paged_req){.page_keys = 5}, &cn);
    harness_run_until(loop, NULL, NULL, 500);
    CHECK(!cn.done);
    CHECK_INT(cn.pages, 1);
}

/* Between the first and second page another client adds a key, changes one and deletes one,
 * all in the range: the scan still shows the range as it was at its first revision. */
static int mutate(struct scan *s)
{
    struct mm_error err = {0};
    put(s->writer, "/pg/r/02", "changed");
    put(s->writer, "/pg/r/025", "added");
    CHECK_INT(etcd_sync_delete(s->writer, "/pg/r/04", false, NULL, &err), 0);
    return 0;
}

static void test_one_revision(struct etcd_client *c, struct etcd_client *writer)
{
    for (int i = 0; i < 6; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/pg/r/%02d", i);
        put(c, k, "orig");
    }
    struct scan s = {.on_first_page = mutate, .writer = writer};
    scan(c, "/pg/r/", (struct etcd_paged_req){.page_keys = 2}, &s);
    CHECK_INT(s.status, 0);
    CHECK_INT(s.keys, 6);
    CHECK(!s.revision_changed);
    CHECK_STR(s.keys_seen[2], "/pg/r/02");
    CHECK_STR(s.values_seen[2], "orig");
    CHECK_STR(s.keys_seen[3], "/pg/r/03"); /* not /pg/r/025 */
    CHECK_STR(s.keys_seen[4], "/pg/r/04"); /* deleted after the first page, still here */
    /* A new scan sees the new state. */
    struct scan now = {0};
    scan(c, "/pg/r/", (struct etcd_paged_req){.page_keys = 2}, &now);
    CHECK_INT(now.keys, 6);
    CHECK(now.revision > s.revision);
    CHECK_STR(now.keys_seen[3], "/pg/r/025");
}

/* Compacted past the pinned revision between pages: the scan ends with -ESTALE. */
static int compact_now(struct scan *s)
{
    struct mm_error err = {0};
    int64_t rev = 0;
    CHECK_INT(etcd_sync_put(s->writer, "/pg/c/zz", "x", 0, &rev, &err), 0);
    CHECK_INT(etcd_sync_compact(s->writer, rev, &err), 0);
    return 0;
}

static void test_compacted(struct etcd_client *c, struct etcd_client *writer)
{
    for (int i = 0; i < 4; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/pg/c/%02d", i);
        put(c, k, "x");
    }
    struct scan s = {.on_first_page = compact_now, .writer = writer};
    scan(c, "/pg/c/", (struct etcd_paged_req){.page_keys = 2}, &s);
    CHECK_INT(s.status, -ESTALE);
    CHECK_INT(s.pages, 1);
}

/* Write a key that holds any bytes through the gateway itself (etcd_put takes C strings). */
static void raw_put(const char *endpoint, const char *key, size_t len)
{
    char k64[128], cmd[512], out[512];
    base64_encode(key, len, k64);
    snprintf(cmd, sizeof(cmd),
             "curl -sS -X POST %s/v3/kv/put -d '{\"key\":\"%s\",\"value\":\"eA==\"}'", endpoint,
             k64);
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "raw put: %d %s\n", rc, out);
}

/* Keys that differ after a NUL byte, and keys with 0xff bytes: one key per page, in byte
 * order, none skipped or repeated (a C-string cursor would skip "/pg/n/a\0b" after
 * "/pg/n/a"). */
static void test_byte_keys(struct etcd_client *c, const char *endpoint)
{
    static const struct {
        const char *k;
        size_t len;
    } keys[] = {
        {"/pg/n/a", 7},           {"/pg/n/a\0b", 9},       {"/pg/n/a\0c", 9},
        {"/pg/n/a\x01", 8},       {"/pg/n/a\xff", 8},      {"/pg/n/a\xff\xff", 9},
        {"/pg/n/\xff", 7},
    };
    size_t n = sizeof(keys) / sizeof(keys[0]);
    for (size_t i = n; i-- > 0;)
        raw_put(endpoint, keys[i].k, keys[i].len);
    struct scan s = {0};
    scan(c, "/pg/n/", (struct etcd_paged_req){.page_keys = 1}, &s);
    CHECK_INT(s.status, 0);
    CHECK_INT(s.keys, n);
    CHECK_INT(s.pages, (int)n);
    for (size_t i = 0; i < n && i < s.keys; i++) {
        CHECK_INT(s.key_lens[i], keys[i].len);
        CHECK(memcmp(s.keys_seen[i], keys[i].k, keys[i].len) == 0);
    }
    /* A prefix ending in 0xff: its end drops the 0xff and increments the byte before. */
    struct scan f = {0};
    scan(c, "/pg/n/a\xff", (struct etcd_paged_req){.page_keys = 1}, &f);
    CHECK_INT(f.status, 0);
    CHECK_INT(f.keys, 2);
}

/* ---------------------------------------------------------------- a misbehaving server */

enum fake_mode {
    FAKE_NO_HEADER,
    FAKE_MORE_FOREVER,
    FAKE_MORE_EMPTY,
    FAKE_COUNT_STUCK,
    FAKE_STOPS_EARLY,
    FAKE_OVER_LIMIT,
    FAKE_EMPTY_OBJECT
};

/* A range reply of the mode's kind, one new key per request: "/fake/<n>". */
static size_t fake_reply(long n, const char *path, const char *body, size_t body_len, char *out,
                         size_t size, void *arg)
{
    enum fake_mode mode = *(const enum fake_mode *)arg;
    char key[64], k64[128], k64b[128];
    snprintf(key, sizeof(key), "/fake/%08ld", n);
    base64_encode(key, strlen(key), k64);
    snprintf(key, sizeof(key), "/fake/%08ldb", n);
    base64_encode(key, strlen(key), k64b);
    const char *hdr = "\"header\":{\"revision\":\"7\",\"member_id\":\"1\"}";
    int len = 0;
    switch (mode) {
    case FAKE_NO_HEADER:
        len = snprintf(out, size, "{\"kvs\":[{\"key\":\"%s\"}],\"more\":true}", k64);
        break;
    case FAKE_MORE_FOREVER: /* counts that add up: only max_pages ends it */
        len = snprintf(out, size,
                       "{%s,\"kvs\":[{\"key\":\"%s\"}],\"more\":true,"
                       "\"count\":\"%ld\"}",
                       hdr, k64, 1000000 - n);
        break;
    case FAKE_MORE_EMPTY:
        len = snprintf(out, size, "{%s,\"more\":true}", hdr);
        break;
    case FAKE_COUNT_STUCK: /* "more" forever, the same count every time */
        len = snprintf(out, size,
                       "{%s,\"kvs\":[{\"key\":\"%s\"}],\"more\":true,"
                       "\"count\":\"1000000\"}",
                       hdr, k64);
        break;
    case FAKE_STOPS_EARLY: /* "no more" while counting 3 keys: records would be lost */
        len = snprintf(out, size, "{%s,\"kvs\":[{\"key\":\"%s\"}],\"count\":\"3\"}", hdr, k64);
        break;
    case FAKE_OVER_LIMIT: /* two keys when the client asked for one */
        len = snprintf(out, size,
                       "{%s,\"kvs\":[{\"key\":\"%s\"},{\"key\":\"%s\"}],"
                       "\"more\":true,\"count\":\"100\"}",
                       hdr, k64, k64b);
        break;
    case FAKE_EMPTY_OBJECT:
        len = snprintf(out, size, "{}");
        break;
    }
    return (size_t)len;
}

static void test_misbehaving_server(void)
{
    static const struct {
        enum fake_mode mode;
        size_t page_keys;
        int status;
        const char *msg;
        int pages;
    } cases[] = {
        {FAKE_NO_HEADER, 10, -EPROTO, "without a header revision", 0},
        {FAKE_EMPTY_OBJECT, 10, -EPROTO, "without a header revision", 0},
        {FAKE_MORE_FOREVER, 10, -E2BIG, "still more after 50 pages", 50},
        {FAKE_MORE_EMPTY, 10, -EPROTO, "says more but holds no keys", 0},
        {FAKE_COUNT_STUCK, 10, -EPROTO, "more keys left than the page before", 1},
        {FAKE_STOPS_EARLY, 10, -EPROTO, "no more, but counts more keys", 0},
        {FAKE_OVER_LIMIT, 1, -EPROTO, "more keys than the limit asked for", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int port = 0;
        pid_t pid = 0;
        enum fake_mode mode = cases[i].mode;
        REQUIRE(fakehttp_start(fake_reply, &mode, &pid, &port) == 0);
        char ep[64];
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
        struct etcd_client *c = client(ep);
        struct scan s = {0};
        scan(c, "/fake/", (struct etcd_paged_req){.page_keys = cases[i].page_keys, .max_pages = 50},
             &s);
        CHECK(s.done);
        CHECK_INT(s.status, cases[i].status);
        CHECK_INT(s.pages, cases[i].pages);
        CHECK(strstr(s.msg, cases[i].msg) != NULL);
        if (!strstr(s.msg, cases[i].msg) || s.status != cases[i].status)
            fprintf(stderr, "  case %zu: got %d '%s'\n", i, s.status, s.msg);
        etcd_client_free(c);
        harness_stop_pid(pid, 1000);
    }
}

/* Unary requests to a server that answers {} to everything: each is refused, none reads as
 * "nothing there" or "done at revision 0". */
static void test_not_etcd(void)
{
    int port = 0;
    pid_t pid = 0;
    enum fake_mode mode = FAKE_EMPTY_OBJECT;
    REQUIRE(fakehttp_start(fake_reply, &mode, &pid, &port) == 0);
    char ep[64];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
    struct etcd_client *c = client(ep);
    struct mm_error err = {0};
    struct etcd_response *r = NULL;
    struct etcd_range_req rr = {.key = "/a"};
    CHECK_INT(etcd_sync_range(c, &rr, &r, &err), -EPROTO);
    CHECK(strstr(err.msg, "range /a: a reply without a header revision: is this etcd?") != NULL);
    CHECK(r == NULL);
    int64_t rev = -1, id = 0, deleted = -1;
    memset(&err, 0, sizeof(err));
    CHECK_INT(etcd_sync_put(c, "/a", "1", 0, &rev, &err), -EPROTO);
    CHECK(strstr(err.msg, "put /a: a reply without a header revision") != NULL);
    CHECK_INT(rev, -1);
    CHECK_INT(etcd_sync_delete(c, "/a", false, &deleted, &err), -EPROTO);
    CHECK_INT(deleted, -1);
    CHECK_INT(etcd_sync_lease_grant(c, 5, &id, &err), -EPROTO);
    CHECK_INT(etcd_sync_compact(c, 3, &err), -EPROTO);
    struct etcd_op op = {.kind = ETCD_OP_PUT, .key = "/a", .value = "1"};
    struct etcd_txn txn = {.success = &op, .n_success = 1};
    CHECK_INT(etcd_sync_txn(c, &txn, &r, &err), -EPROTO);
    etcd_client_free(c);
    /* With a user: the authentication reply is refused too (no token is taken from it). */
    struct etcd_config cfg = {
        .endpoints = ep, .user = "u", .password = "p", .request_timeout_ms = 2000};
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);
    CHECK_INT(etcd_sync_range(c, &rr, &r, &err), -EPROTO);
    CHECK(strstr(err.msg, "authenticate: a reply without a header revision") != NULL);
    etcd_client_free(c);
    harness_stop_pid(pid, 1000);
}

/* A reply over the client's reply cap: a paged range asks again for fewer keys and goes on; a
 * single key and value over the cap, or a unary reply over it, fail saying so. */
static void test_reply_cap(const char *endpoint, struct etcd_client *writer)
{
    size_t vlen = 100000;
    char *v = malloc(vlen + 1);
    REQUIRE(v != NULL);
    memset(v, 'v', vlen);
    v[vlen] = '\0';
    for (int i = 0; i < 12; i++) {
        char k[32];
        snprintf(k, sizeof(k), "/pg/cap/%02d", i);
        put(writer, k, v);
    }
    free(v);
    /* 16 pairs of 100 kB are 2.1 MB in base64: over a 1 MiB cap; 4 are 530 kB. */
    struct etcd_config cfg = {.endpoints = endpoint, .max_reply_bytes = 1u << 20};
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);
    struct scan s = {0};
    scan(c, "/pg/cap/", (struct etcd_paged_req){.page_keys = 500, .page_bytes = 1u << 20}, &s);
    CHECK_INT(s.status, 0);
    CHECK_INT(s.keys, 12);
    if (s.status)
        fprintf(stderr, "  capped scan: %s\n", s.msg);
    /* One range for all of it: over the cap, named. */
    struct etcd_range_req rr = {.key = "/pg/cap/", .prefix = true};
    struct etcd_response *r = NULL;
    CHECK_INT(etcd_sync_range(c, &rr, &r, &err), -EMSGSIZE);
    CHECK(strstr(err.msg, "larger than the reply cap of 1 MiB") != NULL);
    etcd_client_free(c);
    /* A cap below one pair. */
    cfg.max_reply_bytes = 64 << 10;
    REQUIRE(etcd_client_new(loop, &cfg, &c, &err) == 0);
    struct scan one = {0};
    scan(c, "/pg/cap/", (struct etcd_paged_req){.page_keys = 500}, &one);
    CHECK_INT(one.status, -EMSGSIZE);
    CHECK_INT(one.keys, 0);
    CHECK(strstr(one.msg, "larger than the reply cap of 64 KiB with one key in it") != NULL);
    etcd_client_free(c);
}

/* The synchronous form, as mmctl uses it. */
static int count_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    *(size_t *)arg += n;
    return 0;
}

static void test_sync(struct etcd_client *c)
{
    char end[16];
    size_t end_len = etcd_prefix_end("/pg/k/", 6, end);
    struct etcd_paged_req req = {.key = "/pg/k/", .range_end = end, .range_end_len = end_len,
                                 .page_keys = 7};
    size_t n = 0;
    int64_t rev = 0;
    struct mm_error err = {0};
    CHECK_INT(etcd_sync_range_paged(c, &req, count_page, &n, &rev, &err), 0);
    CHECK_INT(n, 25);
    CHECK(rev > 0);
    /* The whole keyspace: key "" and end "\0". */
    struct etcd_paged_req all = {.key = "", .range_end = "", .range_end_len = 1, .page_keys = 50};
    n = 0;
    CHECK_INT(etcd_sync_range_paged(c, &all, count_page, &n, NULL, &err), 0);
    CHECK(n >= 25 + 9 + 6);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    struct etcd_client *c = client(etcd.endpoint);
    struct etcd_client *writer = client(etcd.endpoint);

    test_bounds(c);
    test_one_revision(c, writer);
    test_byte_keys(c, etcd.endpoint);
    test_sync(c);
    test_misbehaving_server();
    test_not_etcd();
    test_reply_cap(etcd.endpoint, writer);
    test_compacted(c, writer);

    etcd_client_free(writer);
    etcd_client_free(c);
    harness_etcd_cleanup(&etcd);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
