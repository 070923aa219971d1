/* test_storage.c - storage (mm/storage.h) on real files in a temp dir: the models root and
 * pvcs beneath it, linked, not copied: a file and a directory tree fetched as a symbolic link
 * in the cache dir to the model's real path (bytes read through it equal, disk size summed,
 * paths inside the cache dir under encoded names for hostile ids, two fetches of one id apart);
 * released (the link's directory removed off the loop, the model itself untouched, a second
 * release refused); what an earlier run left removed at start, nothing else. Hostile storage:
 * "..", absolute paths and the root itself refused before any I/O; symbolic links out of the
 * root (to a file, to a directory, inside a tree) refused and nothing left, a link staying
 * inside followed (the fetch links its real path); a FIFO (without hanging), a device and a
 * socket refused; too big (one file, a tree's sum), too many files, too deep; not found. The
 * storage config: a pvc by its storage key or by parameters alone, a link out of the pvc (into
 * the models root beside it) refused, a pvc not mounted, a bad pvc name, a key not in
 * storage-config, an object store without an HTTP client. mm-runtime loads the model through
 * the link when its models dirs are the cache dir and the models root, and refuses it with the
 * cache dir alone. Cancel while queued and right after the start (no callback, nothing left);
 * free with fetches in flight and from inside a callback; release of paths that are not
 * fetches (outside the cache dir, inside it, a ".." spelling of a fetched one) refused. An
 * object store through its provider (s3, against s3rver behind the fault proxy's slow link):
 * the download a regular file in its fetch directory, a prefix a directory, progress delivered
 * (rising to the total) and a long pull logged, a pull over max_model_bytes stopped early,
 * cancel and free from inside a progress callback, the provider's not-found surfaced unchanged,
 * the secret in no message or log; nothing left in the cache dir after any failure. Run under
 * ASan too. argv: MM_RUNTIME MAKE_BREAST_CANCER tests/servers */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "faultproxy.h"
#include "harness.h"
#include "pullcheck.h"
#include "s3rver.h"
#include "mm/curlev.h"
#include "mm/storage.h"
#include "rtclient.h"

static struct ev_loop *loop;
static const char *mm_runtime, *make_breast_cancer;
static char top[64], root[PATH_MAX], cache[PATH_MAX], outside[PATH_MAX];

/* ---- files ---- */

static void write_file(const char *dir, const char *rel, size_t size, char fill)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; *p; p++) { /* make the parents */
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    for (size_t i = 0; i < size; i++)
        fputc(fill + (char)(i % 7), f);
    REQUIRE(fclose(f) == 0);
}

static bool same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = false;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* path is a symbolic link whose target is exactly target's real path. */
static bool is_link_to(const char *path, const char *target)
{
    char got[PATH_MAX], want[PATH_MAX];
    struct stat sb;
    ssize_t n = readlink(path, got, sizeof got - 1);
    if (lstat(path, &sb) < 0 || !S_ISLNK(sb.st_mode) || n <= 0 || !realpath(target, want))
        return false;
    got[n] = '\0';
    if (strcmp(got, want) != 0)
        fprintf(stderr, "%s links to %s, not %s\n", path, got, want);
    return strcmp(got, want) == 0;
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Entries of the cache dir named mm-* (ours). */
static int cache_entries(void)
{
    DIR *d = opendir(cache);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "mm-", 3) == 0)
            n++;
    closedir(d);
    return n;
}

static bool cache_empty(void *arg)
{
    return cache_entries() == 0;
}

/* The parent directory of local_path is a direct child of the cache dir named mm-... */
static bool inside_cache(const char *local_path)
{
    size_t n = strlen(cache);
    if (strncmp(local_path, cache, n) != 0 || local_path[n] != '/')
        return false;
    const char *name = local_path + n + 1;
    const char *slash = strchr(name, '/');
    return strncmp(name, "mm-", 3) == 0 && slash && !strchr(slash + 1, '/') &&
           strstr(local_path, "/../") == NULL;
}

static struct storage *make_storage(uint64_t max_bytes, uint32_t max_files, uint32_t max_depth,
                                    unsigned threads)
{
    struct storage_config cfg = {.cache_dir = cache,
                                 .models_root = root,
                                 .max_model_bytes = max_bytes,
                                 .max_files = max_files,
                                 .max_depth = max_depth,
                                 .threads = threads};
    struct storage *st = NULL;
    struct mm_error err = {0};
    int rc = storage_new(loop, &cfg, &st, &err);
    if (rc < 0)
        fprintf(stderr, "storage_new: %s\n", err.msg);
    REQUIRE(rc == 0 && st);
    return st;
}

/* Fetch and wait for the callback (bounded); returns the result. */
static struct pullcheck_fetch fetch(struct storage *st, const char *id, const char *key,
                                    const char *path)
{
    struct pullcheck_fetch r = {0};
    struct storage_model m = {.model_id = id, .storage_key = key, .storage_path = path};
    struct mm_error err = {0};
    int rc = storage_fetch(st, &m, pullcheck_fetch_done, &r, NULL, &err);
    if (rc < 0) {
        r.calls = -1; /* refused at once */
        r.status = rc;
        snprintf(r.msg, sizeof r.msg, "%s", err.msg);
        return r;
    }
    harness_run_until(loop, pullcheck_fetch_called, &r, 20000);
    CHECK_INT(r.calls, 1);
    return r;
}

static void expect_fail(struct storage *st, const char *id, const char *path, int code,
                        const char *msg_part)
{
    struct pullcheck_fetch r = fetch(st, id, NULL, path);
    CHECK_INT(r.status, code);
    if (!strstr(r.msg, msg_part))
        fprintf(stderr, "fetch %s: message \"%s\" lacks \"%s\"\n", path, r.msg, msg_part);
    CHECK(strstr(r.msg, msg_part) != NULL);
    CHECK(r.calls == 1 || r.calls == -1);
    CHECK_STR(r.path, "");
    CHECK_INT(cache_entries(), 0); /* the partial copy removed */
}

/* ---- cases ---- */

static void test_file_and_tree(void)
{
    struct storage *st = make_storage(0, 0, 0, 0);
    write_file(root, "xgboost/model.json", 5000, 'a');
    struct pullcheck_fetch r = fetch(st, "m1", NULL, "xgboost/model.json");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 5000);
    CHECK(inside_cache(r.path));
    char src[PATH_MAX * 2];
    snprintf(src, sizeof src, "%s/xgboost/model.json", root);
    CHECK(same_bytes(src, r.path));
    const char *base = strrchr(r.path, '/');
    CHECK_STR(base, "/model.json");
    CHECK(is_link_to(r.path, src)); /* linked, not copied */

    /* "./" and doubled slashes are only spelling */
    struct pullcheck_fetch r2 = fetch(st, "m1", "", ".//xgboost/./model.json");
    CHECK_INT(r2.status, 0);
    CHECK(strcmp(r.path, r2.path) != 0); /* the same id twice: two directories */
    CHECK(same_bytes(src, r2.path));

    /* a tree: bytes summed, layout kept */
    write_file(root, "tree/a.bin", 100, 'x');
    write_file(root, "tree/sub/b.bin", 200, 'y');
    write_file(root, "tree/sub/deeper/c.bin", 300, 'z');
    write_file(root, "tree/empty.bin", 0, 'z');
    struct pullcheck_fetch t = fetch(st, "tree-model", NULL, "tree");
    CHECK_INT(t.status, 0);
    CHECK_INT(t.bytes, 600);
    CHECK(inside_cache(t.path));
    char a[PATH_MAX * 2], b[PATH_MAX * 2];
    snprintf(a, sizeof a, "%s/tree/sub/deeper/c.bin", root);
    snprintf(b, sizeof b, "%s/sub/deeper/c.bin", t.path);
    CHECK(same_bytes(a, b));
    snprintf(b, sizeof b, "%s/empty.bin", t.path);
    CHECK(exists(b));
    snprintf(b, sizeof b, "%s/tree", root);
    CHECK(is_link_to(t.path, b));

    /* release: removed off the loop; the same path again, or a spelling of it, is refused */
    CHECK_INT(cache_entries(), 3);
    char spelled[PATH_MAX * 2];
    snprintf(spelled, sizeof spelled, "%s/../%s", t.path, strrchr(t.path, '/') + 1);
    CHECK_INT(storage_release(st, spelled), -EINVAL);
    CHECK_INT(storage_release(st, t.path), 0);
    CHECK_INT(storage_release(st, t.path), -EINVAL);
    CHECK_INT(storage_release(st, r.path), 0);
    CHECK_INT(storage_release(st, r2.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);
    CHECK_INT(cache_entries(), 0);
    CHECK(exists(src)); /* storage itself untouched: removal does not follow the links */
    CHECK(exists(a));

    /* never a path that is not a fetch of this storage */
    CHECK_INT(storage_release(st, "/etc/passwd"), -EINVAL);
    CHECK_INT(storage_release(st, root), -EINVAL);
    CHECK_INT(storage_release(st, cache), -EINVAL);
    char fake[PATH_MAX * 2];
    snprintf(fake, sizeof fake, "%s/mm-m1.0/model.json", cache);
    CHECK_INT(storage_release(st, fake), -EINVAL);
    CHECK_INT(storage_release(st, NULL), -EINVAL);
    CHECK(exists("/etc/passwd"));
    storage_free(st);
}

static void test_hostile_ids(void)
{
    struct storage *st = make_storage(0, 0, 0, 0);
    write_file(root, "small.bin", 10, 's');
    char long_id[251];
    memset(long_id, '%', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    const char *ids[] = {".", "..", "a b", "x\x01\x7f\xff", "../../etc", "mm-", long_id};
    char paths[7][PATH_MAX];
    for (size_t i = 0; i < 7; i++) {
        struct pullcheck_fetch r = fetch(st, ids[i], NULL, "small.bin");
        CHECK_INT(r.status, 0);
        CHECK(inside_cache(r.path));
        snprintf(paths[i], sizeof paths[i], "%s", r.path);
        CHECK(exists(r.path));
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(paths[i], paths[j]) != 0);
    }
    CHECK_INT(cache_entries(), 7);
    for (size_t i = 0; i < 7; i++)
        CHECK_INT(storage_release(st, paths[i]), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);
    CHECK_INT(cache_entries(), 0);
    storage_free(st);
}

static void test_refused_before_io(void)
{
    struct storage *st = make_storage(0, 0, 0, 0);
    const char *bad[] = {"../x", "a/../../x", "a/..", "..", "/etc/passwd",
                         "",     ".",         "./",   "//", "a/./../b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pullcheck_fetch r = fetch(st, "bad", NULL, bad[i]);
        CHECK_INT(r.calls, -1); /* refused by storage_fetch: no callback */
        CHECK_INT(r.status, -EINVAL);
        CHECK(strstr(r.msg, "model bad") != NULL);
    }
    struct pullcheck_fetch r = fetch(st, "m", "s3-key", "x");
    CHECK_INT(r.calls, -1);
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "model m: storage key 's3-key' not in storage-config") != NULL);
    struct storage_model none = {.model_id = "", .storage_path = "x"};
    struct mm_error err = {0};
    CHECK_INT(storage_fetch(st, &none, pullcheck_fetch_done, &r, NULL, &err), -EINVAL);
    struct storage_model nopath = {.model_id = "m"};
    CHECK_INT(storage_fetch(st, &nopath, pullcheck_fetch_done, &r, NULL, &err), -EINVAL);
    storage_free(st);

    /* without a models root, pvc paths are refused */
    struct storage_config cfg = {.cache_dir = cache};
    REQUIRE(storage_new(loop, &cfg, &st, &err) == 0);
    struct storage_model m = {.model_id = "m", .storage_path = "small.bin"};
    CHECK_INT(storage_fetch(st, &m, pullcheck_fetch_done, &r, NULL, &err), -EINVAL);
    CHECK(strstr(err.msg, "no models root") != NULL);
    storage_free(st);
}

static void test_links_and_kinds(void)
{
    struct storage *st = make_storage(0, 0, 0, 0);
    char p[PATH_MAX * 2], t[PATH_MAX * 2];
    write_file(outside, "secret.bin", 50, 'S');
    snprintf(t, sizeof t, "%s/secret.bin", outside);

    snprintf(p, sizeof p, "%s/evil-file", root);
    REQUIRE(symlink(t, p) == 0);
    expect_fail(st, "l1", "evil-file", -EINVAL, "leaves the models root");
    snprintf(p, sizeof p, "%s/evil-dir", root);
    REQUIRE(symlink(outside, p) == 0);
    expect_fail(st, "l2", "evil-dir/secret.bin", -EINVAL, "leaves the models root");
    expect_fail(st, "l3", "evil-dir", -EINVAL, "leaves the models root");
    snprintf(p, sizeof p, "%s/evil-rel", root);
    REQUIRE(symlink("../outside/secret.bin", p) == 0);
    expect_fail(st, "l4", "evil-rel", -EINVAL, "leaves the models root");

    /* inside a tree: good files first, then the link; the partial copy goes */
    write_file(root, "linktree/a/good.bin", 1000, 'g');
    snprintf(p, sizeof p, "%s/linktree/a/zz-link", root);
    REQUIRE(symlink("../../../outside", p) == 0);
    expect_fail(st, "l5", "linktree", -EINVAL, "linktree/a/zz-link: leaves the models root");

    /* a link that stays inside the root is followed */
    write_file(root, "real/model.bin", 77, 'r');
    snprintf(p, sizeof p, "%s/alias.bin", root);
    REQUIRE(symlink("real/model.bin", p) == 0);
    struct pullcheck_fetch r = fetch(st, "alias", NULL, "alias.bin");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 77);
    char real[PATH_MAX * 2];
    snprintf(real, sizeof real, "%s/real/model.bin", root);
    CHECK(is_link_to(r.path, real)); /* to the real path, not to the alias */
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);

    /* a FIFO: refused, and nothing hangs opening it */
    snprintf(p, sizeof p, "%s/fifo", root);
    REQUIRE(mkfifo(p, 0644) == 0);
    long long t0 = harness_now_ms();
    expect_fail(st, "f1", "fifo", -EINVAL, "a FIFO cannot be a model");
    CHECK(harness_now_ms() - t0 < 5000);
    write_file(root, "fifotree/model.bin", 10, 'f');
    snprintf(p, sizeof p, "%s/fifotree/pipe", root);
    REQUIRE(mkfifo(p, 0644) == 0);
    expect_fail(st, "f2", "fifotree", -EINVAL, "fifotree/pipe: a FIFO");

    /* a socket */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(p, sizeof p, "%s/sock", root);
    REQUIRE(strlen(p) < sizeof sa.sun_path);
    memcpy(sa.sun_path, p, strlen(p) + 1);
    REQUIRE(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
    expect_fail(st, "s1", "sock", -EINVAL, "a socket cannot be a model");
    close(s);

    /* a device: made here when allowed, and /dev/null through a root of /dev in any case */
    snprintf(p, sizeof p, "%s/null-dev", root);
    if (mknod(p, S_IFCHR | 0666, makedev(1, 3)) == 0)
        expect_fail(st, "d1", "null-dev", -EINVAL, "a character device");
    else
        fprintf(stderr, "mknod not allowed here (%s): device made by the system only\n",
                strerror(errno));
    storage_free(st);
    struct storage_config cfg = {.cache_dir = cache, .models_root = "/dev"};
    struct mm_error err = {0};
    REQUIRE(storage_new(loop, &cfg, &st, &err) == 0);
    expect_fail(st, "d2", "null", -EINVAL, "a character device cannot be a model");
    expect_fail(st, "d3", "zero", -EINVAL, "a character device cannot be a model");
    storage_free(st);

    st = make_storage(0, 0, 0, 0);
    expect_fail(st, "n1", "no/such/model.bin", -ENOENT, "not found");
    expect_fail(st, "n2", "small.bin/below-a-file", -ENOENT, "not found");
    storage_free(st);
}

static void test_bounds(void)
{
    /* too big: one file, and a tree whose sum is over */
    struct storage *st = make_storage(1000, 0, 0, 0);
    write_file(root, "big/one.bin", 1001, 'b');
    expect_fail(st, "b1", "big/one.bin", -EFBIG, "larger than 1000 bytes");
    write_file(root, "exact.bin", 1000, 'e');
    struct pullcheck_fetch r = fetch(st, "b2", NULL, "exact.bin");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 1000);
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);
    write_file(root, "sum/a.bin", 400, 'a');
    write_file(root, "sum/b.bin", 400, 'b');
    write_file(root, "sum/c.bin", 400, 'c');
    expect_fail(st, "b3", "sum", -EFBIG, "larger than 1000 bytes");
    storage_free(st);

    /* too many files and directories */
    st = make_storage(0, 5, 0, 0);
    for (int i = 0; i < 10; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "many/f%d.bin", i);
        write_file(root, rel, 10, 'm');
    }
    expect_fail(st, "c1", "many", -EFBIG, "more than 5 files and directories");
    storage_free(st);

    /* too deep: 3 directories allowed (the model's own and two below) */
    st = make_storage(0, 0, 3, 0);
    write_file(root, "deep/1/2/3/4/f.bin", 10, 'd');
    expect_fail(st, "e1", "deep", -EFBIG, "nested deeper than 3 directories");
    r = fetch(st, "e2", NULL, "deep/1/2/3");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 10);
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);
    /* a link cycle inside the root ends at the bounds */
    char p[PATH_MAX * 2];
    write_file(root, "cycle/f.bin", 1, 'c');
    snprintf(p, sizeof p, "%s/cycle/again", root);
    REQUIRE(symlink(".", p) == 0);
    expect_fail(st, "e3", "cycle", -EFBIG, "nested deeper than 3 directories");
    storage_free(st);
}

/* A tree big enough that copying it takes a while. */
static void make_big_tree(const char *name, int files, size_t size)
{
    for (int i = 0; i < files; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "%s/d%d/f%d.bin", name, i % 10, i);
        write_file(root, rel, size, 'q');
    }
}

static bool pool_idle_for(struct storage *st, long long ms)
{
    (void)st;
    return harness_run_until(loop, NULL, NULL, ms);
}

static void test_cancel_and_free(void)
{
    make_big_tree("bigtree", 1500, 16);

    /* cancel while queued behind another walk (one thread) */
    struct storage *st = make_storage(0, 0, 0, 1);
    struct pullcheck_fetch r1 = {0}, r2 = {0}, r3 = {0};
    struct storage_model m1 = {.model_id = "c1", .storage_path = "bigtree"};
    struct storage_model m2 = {.model_id = "c2", .storage_path = "bigtree"};
    struct storage_fetch *f1 = NULL, *f2 = NULL, *f3 = NULL;
    struct mm_error err = {0};
    REQUIRE(storage_fetch(st, &m1, pullcheck_fetch_done, &r1, &f1, &err) == 0);
    REQUIRE(storage_fetch(st, &m2, pullcheck_fetch_done, &r2, &f2, &err) == 0);
    storage_fetch_cancel(f2); /* queued behind c1 */
    CHECK(harness_run_until(loop, pullcheck_fetch_called, &r1, 10000));
    pool_idle_for(st, 100);
    CHECK_INT(r1.status, 0);
    CHECK_INT(r2.calls, 0);
    CHECK_INT(cache_entries(), 1);
    CHECK_INT(storage_release(st, r1.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);

    /* cancel right after the start: queued or walking, no callback and nothing left */
    struct storage_model m3 = {.model_id = "c3", .storage_path = "bigtree"};
    REQUIRE(storage_fetch(st, &m3, pullcheck_fetch_done, &r3, &f3, &err) == 0);
    storage_fetch_cancel(f3);
    pool_idle_for(st, 300);
    CHECK_INT(r3.calls, 0);
    CHECK_INT(cache_entries(), 0);
    storage_fetch_cancel(NULL);

    /* a fetch still runs after another was cancelled */
    struct pullcheck_fetch r4 = fetch(st, "c4", NULL, "small.bin");
    CHECK_INT(r4.status, 0);
    storage_free(st); /* a fetched model stays on disk for the next run to remove */
    CHECK(exists(r4.path));

    /* the next run removes what this one left, and nothing that is not ours */
    char keep[PATH_MAX * 2], target[PATH_MAX * 2];
    snprintf(keep, sizeof keep, "%s/not-ours", cache);
    write_file(cache, "not-ours", 3, 'k');
    write_file(cache, "mm-stale.7/x/y.bin", 3, 'k');
    snprintf(target, sizeof target, "%s/small.bin", root);
    st = make_storage(0, 0, 0, 2);
    CHECK_INT(cache_entries(), 0);
    CHECK(!exists(r4.path));
    CHECK(exists(keep));
    CHECK(exists(target)); /* the link went, not what it led to */

    /* free with fetches in flight: no callback, nothing left */
    struct pullcheck_fetch rs[4] = {{0}};
    for (int i = 0; i < 4; i++) {
        struct storage_model m = {.model_id = "inflight", .storage_path = "bigtree"};
        REQUIRE(storage_fetch(st, &m, pullcheck_fetch_done, &rs[i], NULL, &err) == 0);
    }
    storage_free(st);
    pool_idle_for(NULL, 100);
    for (int i = 0; i < 4; i++)
        CHECK_INT(rs[i].calls, 0);
    CHECK_INT(cache_entries(), 0);
}

/* Free the storage from inside a fetch's callback while another fetch is queued or walking. */
static struct storage *freeing_st;
static int freeing_calls;

static void free_in_cb(int status, const struct mm_error *err, const char *local_path,
                       uint64_t disk_bytes, void *arg)
{
    freeing_calls++;
    CHECK_INT(status, 0);
    CHECK(local_path && exists(local_path));
    storage_free(freeing_st);
    freeing_st = NULL;
}

static bool freed(void *arg)
{
    return freeing_st == NULL;
}

static void test_free_in_callback(void)
{
    freeing_st = make_storage(0, 0, 0, 1);
    struct pullcheck_fetch big = {0};
    struct storage_model mb = {.model_id = "big", .storage_path = "bigtree"};
    struct storage_model ms = {.model_id = "small", .storage_path = "small.bin"};
    struct mm_error err = {0};
    REQUIRE(storage_fetch(freeing_st, &ms, free_in_cb, NULL, NULL, &err) == 0);
    REQUIRE(storage_fetch(freeing_st, &mb, pullcheck_fetch_done, &big, NULL, &err) == 0);
    CHECK(harness_run_until(loop, freed, NULL, 20000));
    harness_run_until(loop, NULL, NULL, 100);
    CHECK_INT(freeing_calls, 1);
    CHECK_INT(big.calls, 0);
    CHECK_INT(cache_entries(), 1); /* the small model, fetched: left for the next run */
}

/* ---- the storage config: pvcs by key or parameters ---- */

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    static const char *const entries[][2] = {
        {"claim", "{\"type\":\"pvc\",\"name\":\"claim\"}"},
        {"absent", "{\"type\":\"pvc\",\"name\":\"absent\"}"},
        {"badname", "{\"type\":\"pvc\",\"name\":\"../claim\"}"},
        {"noname", "{\"type\":\"pvc\"}"},
        {"escape", "{\"type\":\"pvc\",\"name\":\"escape\"}"},
        {"s3", "{\"type\":\"s3\",\"bucket\":\"b\",\"secret_access_key\":\"SECRETS3\"}"},
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if (strcmp(key, entries[i][0]) == 0) {
            *json = strdup(entries[i][1]);
            return *json ? 0 : -ENOMEM;
        }
    }
    return -ENOENT;
}

static struct pullcheck_fetch fetch_params(struct storage *st, const char *id, const char *key,
                                           const char *params, const char *path)
{
    struct pullcheck_fetch r = {0};
    struct storage_model m = {
        .model_id = id, .storage_key = key, .storage_params = params, .storage_path = path};
    struct mm_error err = {0};
    int rc = storage_fetch(st, &m, pullcheck_fetch_done, &r, NULL, &err);
    if (rc < 0) {
        r.calls = -1;
        r.status = rc;
        snprintf(r.msg, sizeof r.msg, "%s", err.msg);
        return r;
    }
    harness_run_until(loop, pullcheck_fetch_called, &r, 20000);
    CHECK_INT(r.calls, 1);
    return r;
}

static void expect_cfg_fail(struct storage *st, const char *key, const char *params,
                            const char *path, int code, const char *part)
{
    struct pullcheck_fetch r = fetch_params(st, "p", key, params, path);
    if (r.status != code || !strstr(r.msg, part))
        fprintf(stderr, "fetch %s %s: %d \"%s\", wanted %d \"%s\"\n", key ? key : "-",
                path, r.status, r.msg, code, part);
    CHECK_INT(r.status, code);
    CHECK(strstr(r.msg, part) != NULL);
    CHECK(strstr(r.msg, "SECRET") == NULL);
    CHECK_INT(cache_entries(), 0);
}

static void test_pvc(void)
{
    struct storage_config cfg = {
        .cache_dir = cache, .models_root = root, .lookup = lookup, .lookup_arg = NULL};
    struct storage *st = NULL;
    struct mm_error err = {0};
    REQUIRE(storage_new(loop, &cfg, &st, &err) == 0);
    write_file(root, "claim/m/model.json", 321, 'p');
    write_file(root, "beside/secret.bin", 10, 'S');
    char p[PATH_MAX * 2], want[PATH_MAX * 2];
    snprintf(want, sizeof want, "%s/claim/m/model.json", root);

    /* by key, and by parameters alone (no default key in storage-config) */
    struct pullcheck_fetch r = fetch_params(st, "pk", "claim", NULL, "m/model.json");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 321);
    CHECK(inside_cache(r.path));
    CHECK(is_link_to(r.path, want));
    CHECK_INT(storage_release(st, r.path), 0);
    r = fetch_params(st, "pp", NULL, "{\"type\":\"pvc\",\"name\":\"claim\"}", "m");
    CHECK_INT(r.status, 0);
    snprintf(want, sizeof want, "%s/claim/m", root);
    CHECK(is_link_to(r.path, want));
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);
    /* no key, no params: the models root itself */
    r = fetch_params(st, "pr", NULL, NULL, "claim/m/model.json");
    CHECK_INT(r.status, 0);
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);

    /* a link out of the pvc, even into the models root beside it, is refused */
    snprintf(p, sizeof p, "%s/claim/evil", root);
    REQUIRE(symlink("../beside/secret.bin", p) == 0);
    expect_cfg_fail(st, "claim", NULL, "evil", -EINVAL, "leaves pvc claim");
    snprintf(p, sizeof p, "%s/claim/m/zz-evil", root);
    REQUIRE(symlink("../../beside", p) == 0);
    expect_cfg_fail(st, "claim", NULL, "m", -EINVAL, "m/zz-evil: leaves pvc claim");
    REQUIRE(unlink(p) == 0);
    expect_cfg_fail(st, "claim", NULL, "../beside/secret.bin", -EINVAL, "\"..\"");
    /* a pvc whose mount point leads out of the models root */
    snprintf(p, sizeof p, "%s/escape", root);
    REQUIRE(symlink(outside, p) == 0);
    expect_cfg_fail(st, "escape", NULL, "secret.bin", -EINVAL, "pvc escape: leaves the models root");
    expect_cfg_fail(st, "absent", NULL, "m", -ENOENT, "pvc absent: not mounted");
    expect_cfg_fail(st, "claim", NULL, "m/none.json", -ENOENT, "not found beneath pvc claim");
    expect_cfg_fail(st, "badname", NULL, "m", -EINVAL, "field 'name' is not a pvc name");
    expect_cfg_fail(st, "noname", NULL, "m", -EINVAL, "pvc without a name");
    expect_cfg_fail(st, "nokey", NULL, "m", -ENOENT, "storage key 'nokey' not in storage-config");
    expect_cfg_fail(st, NULL, "{\"name\":\"claim\"}", "m", -EINVAL, "no type");
    expect_cfg_fail(st, NULL, "{\"type\":\"pvc\",\"name\":1}", "m", -EINVAL,
                    "field 'name' is not a string");
    /* an object store, and this storage has no HTTP client */
    expect_cfg_fail(st, "s3", NULL, "m", -EPROTONOSUPPORT, "no HTTP client");
    storage_free(st);
}

/* mm-runtime loads a model through the link when its models dirs are the cache dir and the
 * models root; with the cache dir alone, the link leads outside and it is refused. */
static void test_runtime_loads_link(void)
{
    char cmd[PATH_MAX * 3], claim[PATH_MAX * 2];
    snprintf(claim, sizeof claim, "%s/claim", root);
    snprintf(cmd, sizeof cmd, "'%s' '%s' >/dev/null", make_breast_cancer, claim);
    REQUIRE(system(cmd) == 0);
    struct storage_config cfg = {.cache_dir = cache, .models_root = root, .lookup = lookup};
    struct storage *st = NULL;
    struct mm_error err = {0};
    REQUIRE(storage_new(loop, &cfg, &st, &err) == 0);
    struct pullcheck_fetch r = fetch_params(st, "bc", "claim", NULL, "xgboost/breast-cancer.json");
    REQUIRE(r.status == 0);
    for (int round = 0; round < 2; round++) {
        char *const both[] = {(char *)mm_runtime, "--listen", "127.0.0.1:0", "--models-dir",
                              cache, "--models-dir", root, "--log-level", "warn", NULL};
        char *const one[] = {(char *)mm_runtime, "--listen", "127.0.0.1:0", "--models-dir",
                             cache, "--log-level", "warn", NULL};
        pid_t pid = 0;
        int port = 0;
        struct rt_client rc;
        REQUIRE(harness_spawn_listening(round == 0 ? both : one, 10000, &pid, &port) == 0);
        REQUIRE(rt_open(&rc, port) == 0);
        struct spi_result lr = rt_load(&rc, "bc", "xgboost", r.path, NULL);
        if (round == 0) {
            CHECK_INT(lr.code, 0);
            CHECK(rt_ready(&rc, "bc"));
        } else {
            CHECK(rt_spi_failed_with(lr, GRPC_STATUS_PERMISSION_DENIED, "outside"));
        }
        rt_close(&rc, pid, 10000);
    }
    CHECK_INT(storage_release(st, r.path), 0);
    storage_free(st);
    CHECK_INT(cache_entries(), 0);
}

static void test_cache_dir_made(void)
{
    char nested[PATH_MAX * 2];
    snprintf(nested, sizeof nested, "%s/new/cache/dir", top);
    struct storage_config cfg = {.cache_dir = nested, .models_root = root};
    struct storage *st = NULL;
    struct mm_error err = {0};
    CHECK_INT(storage_new(loop, &cfg, &st, &err), 0);
    struct stat sb;
    CHECK(stat(nested, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
    storage_free(st);

    /* a models root in the cache dir would lose its mm-* entries at the next start */
    char inside[PATH_MAX * 2 + 16];
    snprintf(inside, sizeof inside, "%s/mm-models", nested);
    REQUIRE(mkdir(inside, 0755) == 0);
    cfg.models_root = inside;
    CHECK_INT(storage_new(loop, &cfg, &st, &err), -EINVAL);
    CHECK(strstr(err.msg, "inside it") != NULL);
    CHECK(exists(inside));
    cfg.models_root = nested;
    CHECK_INT(storage_new(loop, &cfg, &st, &err), -EINVAL);
    cfg.models_root = top; /* the cache dir inside the models root is fine */
    CHECK_INT(storage_new(loop, &cfg, &st, &err), 0);
    storage_free(st);

    cfg.models_root = "/no/such/root";
    CHECK(storage_new(loop, &cfg, &st, &err) == -ENOENT);
    CHECK(strstr(err.msg, "/no/such/root") != NULL);
    cfg.cache_dir = "/proc/version/cache"; /* under a file */
    CHECK(storage_new(loop, &cfg, &st, &err) < 0);
    CHECK(strstr(err.msg, "/proc/version/cache") != NULL);
}


/* ---- an object store: the s3 provider against s3rver, through the fault proxy ---- */

#define BUCKET "modelmesh-example-models"
#define KEY_ID "AKIDSTORAGETEST1"
#define SECRET "storageTestSecretValue/0123456789abcdef"

static const char *servers_dir;
static struct faultproxy fp;
static struct curlev *curl;

static int s3_lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    char buf[512];
    if (strcmp(key, "s3") != 0)
        return -ENOENT;
    snprintf(buf, sizeof buf,
             "{\"type\":\"s3\",\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\","
             "\"access_key\":\"" KEY_ID "\",\"secret_access_key\":\"" SECRET "\"}",
             fp.url);
    *json = strdup(buf);
    return *json ? 0 : -ENOMEM;
}

struct progress {
    int calls;
    bool rising;
    uint64_t done, total;
    struct storage_fetch *cancel; /* cancel this at the first call */
    struct storage **free_st;     /* free this at the first call */
};

static void on_progress(uint64_t done, uint64_t total, void *arg)
{
    struct progress *p = arg;
    if (p->calls++ > 0 && done < p->done)
        p->rising = false;
    p->done = done;
    p->total = total;
    if (p->cancel) {
        storage_fetch_cancel(p->cancel);
        p->cancel = NULL;
    }
    if (p->free_st && *p->free_st) {
        storage_free(*p->free_st);
        *p->free_st = NULL;
    }
}

static bool progressed(void *arg)
{
    return ((struct progress *)arg)->calls > 0;
}

static struct storage *s3_storage(uint64_t max_bytes)
{
    struct storage_config cfg = {.cache_dir = cache,
                                 .models_root = root,
                                 .curl = curl,
                                 .lookup = s3_lookup,
                                 .max_model_bytes = max_bytes};
    struct storage *st = NULL;
    struct mm_error err = {0};
    int rc = storage_new(loop, &cfg, &st, &err);
    if (rc < 0)
        fprintf(stderr, "storage_new: %s\n", err.msg);
    REQUIRE(rc == 0);
    return st;
}

static void put(const struct harness_s3rver *s3, const char *key, size_t size, char fill)
{
    char *buf = malloc(size ? size : 1);
    REQUIRE(buf);
    for (size_t i = 0; i < size; i++)
        buf[i] = (char)(fill + (char)(i % 7));
    REQUIRE(harness_s3rver_put(s3, BUCKET, key, buf, size) == 0);
    free(buf);
}

static bool no_secret(const char *text)
{
    return !strstr(text, SECRET) && !strstr(text, "storageTestSecretValue");
}

static void test_object_store(void)
{
    struct harness_s3rver s3 = {0};
    int rc = harness_s3rver_start(&s3, servers_dir, BUCKET, KEY_ID, SECRET, "--require-auth");
    if (rc < 0)
        fprintf(stderr, "s3rver did not start (%d): is tests/servers/node_modules installed? "
                        "run scripts/setup.sh\n", rc);
    REQUIRE(rc == 0);
    REQUIRE(faultproxy_start(&fp, "127.0.0.1", s3.port, NULL) == 0);
    struct mm_error err = {0};
    REQUIRE(curlev_new(loop, &curl, &err) == 0);
    const size_t big = 3 << 20;
    put(&s3, "models/big.bin", big, 'w');
    put(&s3, "models/tree/a.bin", 1000, 'a');
    put(&s3, "models/tree/sub/b.bin", 2000, 'b');
    put(&s3, "models/tree2/not-this.bin", 10, 'n');

    /* a pull of ~6 s over a slow link: a regular file, progress rising to the total, logged
     * while it runs (the log goes to our stderr: caught in a file meanwhile) */
    struct storage *st = s3_storage(0);
    struct faultproxy_fault slow = {
        .kind = FAULTPROXY_SLOW, .match = "big.bin", .count = -1, .bytes = 512 << 10};
    faultproxy_set(&fp, &slow);
    char errlog[PATH_MAX * 2];
    snprintf(errlog, sizeof errlog, "%s/stderr.log", top);
    fflush(stderr);
    int saved = dup(2), logfd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(saved >= 0 && logfd >= 0 && dup2(logfd, 2) == 2);
    close(logfd);
    struct progress pr = {.rising = true};
    struct pullcheck_fetch r = {0};
    struct storage_model m = {.model_id = "big",
                              .storage_key = "s3",
                              .storage_path = "/models/big.bin",
                              .progress = on_progress,
                              .progress_arg = &pr};
    long long t0 = harness_now_ms();
    REQUIRE(storage_fetch(st, &m, pullcheck_fetch_done, &r, NULL, &err) == 0);
    harness_run_until(loop, pullcheck_fetch_called, &r, 30000);
    long long took = harness_now_ms() - t0;
    fflush(stderr);
    REQUIRE(dup2(saved, 2) == 2);
    close(saved);
    char logged[8192] = "";
    FILE *lf = fopen(errlog, "r");
    if (lf) {
        size_t n = fread(logged, 1, sizeof logged - 1, lf);
        logged[n] = '\0';
        fclose(lf);
    }
    fprintf(stderr, "pulled %zu bytes in %lld ms, %d progress calls; logged:\n%s", big, took,
            pr.calls, logged);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, big);
    CHECK(inside_cache(r.path));
    struct stat sb;
    CHECK(lstat(r.path, &sb) == 0 && S_ISREG(sb.st_mode)); /* downloaded, not linked */
    CHECK_INT(sb.st_size, big);
    CHECK_STR(strrchr(r.path, '/'), "/big.bin");
    CHECK(pr.calls >= 8); /* every 250 ms over ~6 s */
    CHECK(pr.rising);
    CHECK_INT(pr.done, big);
    CHECK_INT(pr.total, big);
    char want[160];
    snprintf(want, sizeof want, "pulling big from s3://" BUCKET "/models/big.bin: ");
    CHECK(strstr(logged, want) != NULL);
    CHECK(strstr(logged, "/3.1 MB, 0.") != NULL); /* 0.5 MB/s, less the listing's time */
    snprintf(want, sizeof want, "pulled big from s3://" BUCKET "/models/big.bin: 3.1 MB in ");
    CHECK(strstr(logged, want) != NULL);
    CHECK(no_secret(logged));
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);

    /* a prefix: a directory, the sibling "tree2/" not picked */
    faultproxy_set(&fp, NULL);
    r = fetch(st, "tree", "s3", "models/tree");
    CHECK_INT(r.status, 0);
    CHECK_INT(r.bytes, 3000);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sub/b.bin", r.path);
    CHECK(lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == 2000);
    CHECK(lstat(r.path, &sb) == 0 && S_ISDIR(sb.st_mode));
    snprintf(p, sizeof p, "%s/../tree2", r.path);
    CHECK(!exists(p));
    CHECK_INT(storage_release(st, r.path), 0);
    harness_run_until(loop, cache_empty, NULL, 10000);

    /* the provider's not-found, unchanged; nothing left */
    r = fetch(st, "nf", "s3", "models/none.bin");
    CHECK_INT(r.status, -ENOENT);
    CHECK(strstr(r.msg, "s3://" BUCKET "/models/none.bin") != NULL);
    CHECK(no_secret(r.msg));
    fprintf(stderr, "not found: %s\n", r.msg);
    CHECK_INT(cache_entries(), 0);

    /* cancel from inside a progress callback: no callback, nothing left */
    faultproxy_set(&fp, &slow);
    struct progress pc = {.rising = true};
    struct pullcheck_fetch rc2 = {0};
    struct storage_fetch *f = NULL;
    m = (struct storage_model){.model_id = "cancelled",
                               .storage_key = "s3",
                               .storage_path = "models/big.bin",
                               .progress = on_progress,
                               .progress_arg = &pc};
    REQUIRE(storage_fetch(st, &m, pullcheck_fetch_done, &rc2, &f, &err) == 0);
    pc.cancel = f;
    CHECK(harness_run_until(loop, progressed, &pc, 10000));
    harness_run_until(loop, cache_empty, NULL, 10000);
    harness_run_until(loop, NULL, NULL, 300);
    CHECK_INT(rc2.calls, 0);
    CHECK_INT(cache_entries(), 0);
    storage_free(st);

    /* over max_model_bytes: stopped as soon as the listing's total is known */
    st = s3_storage(1 << 20);
    t0 = harness_now_ms();
    r = fetch(st, "toobig", "s3", "models/big.bin");
    CHECK_INT(r.status, -EFBIG);
    CHECK(strstr(r.msg, "larger than 1048576 bytes") != NULL);
    CHECK(harness_now_ms() - t0 < 3000); /* not the whole 6 s */
    CHECK_INT(cache_entries(), 0);
    storage_free(st);

    /* free the storage from inside a progress callback */
    struct storage *fst = s3_storage(0);
    struct progress pf = {.rising = true, .free_st = &fst};
    struct pullcheck_fetch rf = {0};
    m = (struct storage_model){.model_id = "freed",
                               .storage_key = "s3",
                               .storage_path = "models/big.bin",
                               .progress = on_progress,
                               .progress_arg = &pf};
    REQUIRE(storage_fetch(fst, &m, pullcheck_fetch_done, &rf, NULL, &err) == 0);
    CHECK(harness_run_until(loop, progressed, &pf, 10000));
    harness_run_until(loop, NULL, NULL, 300);
    CHECK(fst == NULL);
    CHECK_INT(rf.calls, 0);
    CHECK_INT(cache_entries(), 0);
    if (fst)
        storage_free(fst);

    /* the secret in no log of the servers */
    char cmd[PATH_MAX * 2], out[256];
    snprintf(cmd, sizeof cmd, "grep -c -r -F 'storageTestSecretValue' '%s' || true", s3.dir);
    harness_capture(cmd, out, sizeof out);
    CHECK(atoi(out) == 0);

    faultproxy_stop(&fp);
    curlev_free(curl);
    harness_s3rver_stop(&s3);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 4);
    mm_runtime = argv[1];
    make_breast_cancer = argv[2];
    servers_dir = argv[3];
    loop = ev_loop_new(EVFLAG_AUTO);
    snprintf(top, sizeof top, "/tmp/test-storage-XXXXXX");
    REQUIRE(mkdtemp(top));
    snprintf(root, sizeof root, "%s/models", top);
    snprintf(cache, sizeof cache, "%s/cache", top);
    snprintf(outside, sizeof outside, "%s/outside", top);
    REQUIRE(mkdir(root, 0755) == 0 && mkdir(outside, 0755) == 0);

    test_file_and_tree();
    test_hostile_ids();
    test_refused_before_io();
    test_links_and_kinds();
    test_bounds();
    test_cancel_and_free();
    test_free_in_callback();
    test_cache_dir_made();
    test_pvc();
    test_runtime_loads_link();
    test_object_store();

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", top);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
