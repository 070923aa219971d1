/* bench_pull.c - model pulls from a real s3rver over loopback through storage_fetch (the s3
 * provider and the download engine) against `curl` fetching the same objects in the same run:
 * (1) one 200 MB object: throughput of ours / curl -o's (best of 3 each, interleaved), the CPU
 * time and minor page faults of each pull (this process's threads; curl as a waited-for
 * child), and the peak RSS growth of this process during our pull (VmHWM after the pull
 * minus VmRSS before, the peak reset through /proc/self/clear_refs): a streamed pull stays
 * far below the object's size. Twice: an object uploaded whole (a simple ETag: its MD5,
 * which the pull checks) and the same bytes uploaded in two parts (a multipart ETag "...-2":
 * only the length is checked), so that the difference is what the MD5 check costs;
 * (2) 50 small models (1 MB each) pulled at once: wall time of ours (max_transfers 8 and 50)
 * against curl --parallel (--parallel-max 8 and 50).
 *
 *   bench_pull SERVERS_DIR [MB]    (SERVERS_DIR: tests/servers with its node_modules) */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "mm/curlev.h"
#include "mm/storage.h"
#include "s3rver.h"

#define BUCKET "modelmesh-example-models"
#define SMALL 50
#define SMALL_BYTES (1 << 20)

static struct ev_loop *loop;
static struct harness_s3rver s3;
static char top[64];

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"type\":\"s3\",\"access_key_id\":\"benchkey\",\"secret_access_key\":"
             "\"benchsecret\",\"endpoint_url\":\"%s\",\"bucket\":\"" BUCKET "\"}",
             s3.endpoint);
    *json = strdup(buf);
    return *json ? 0 : -ENOMEM;
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n))
            v = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static void reset_peak(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1)
            fprintf(stderr, "bench_pull: cannot reset VmHWM\n");
        close(fd);
    }
}

static int run(const char *cmd)
{
    char out[4096];
    int rc = harness_capture(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "bench_pull: `%s` failed (%d): %s\n", cmd, rc, out);
    return rc;
}

struct pull {
    int done;
    int failed;
    char path[PATH_MAX];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) of this process's threads, or of its waited-for children. */
static double cpu_s(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Minor page faults so far, likewise. */
static long faults(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return ru.ru_minflt;
}

static void on_fetch(int status, const struct mm_error *err, const char *local_path,
                     uint64_t disk_bytes, void *arg)
{
    struct pull *p = arg;
    p->done++;
    if (status) {
        p->failed++;
        fprintf(stderr, "bench_pull: fetch failed: %s\n", err->msg);
    } else {
        snprintf(p->path, sizeof p->path, "%s", local_path);
    }
}

struct many {
    struct pull *p;
    int n;
};

static bool all_done(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < m->n; i++)
        if (!m->p[i].done)
            return false;
    return true;
}


/* Pull n models at once; seconds, or -1. */
static double pull_many(struct storage *st, const char *const *paths, int n)
{
    struct pull p[SMALL] = {0};
    struct many m = {p, n};
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "m%d", i);
        struct storage_model sm = {
            .model_id = id, .storage_key = "s3", .storage_path = paths[i]};
        struct mm_error err;
        if (storage_fetch(st, &sm, on_fetch, &p[i], NULL, &err) < 0) {
            fprintf(stderr, "bench_pull: %s\n", err.msg);
            return -1;
        }
    }
    if (!harness_run_until(loop, all_done, &m, 600000))
        return -1;
    double took = now_s() - t0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        failed += p[i].failed;
        if (!p[i].failed)
            storage_release(st, p[i].path);
    }
    harness_run_until(loop, NULL, NULL, 300); /* removals, off the loop */
    return failed ? -1 : took;
}

/* The big object at path: curl -o vs storage_fetch, interleaved, best of 3. */
static void big_pulls(struct storage *st, const char *path, const char *checks, long mb)
{
    char cmd[PATH_MAX * 2];
    double best_curl = 1e9, best_ours = 1e9, cpu_curl = 1e9, cpu_ours = 1e9;
    long rss_before = 0, hwm = 0, growth_max = 0, flt_curl = 0, flt_ours = 0;
    const char *big[] = {path};
    printf("%s (%s):\n", path, checks);
    for (int round = 0; round < 3; round++) {
        snprintf(cmd, sizeof cmd, "curl -sf -o %s/curl.bin %s/" BUCKET "/%s", top, s3.endpoint,
                 path);
        double t0 = now_s(), c0 = cpu_s(RUSAGE_CHILDREN);
        long f0 = faults(RUSAGE_CHILDREN);
        if (run(cmd) != 0)
            exit(1);
        double tc = now_s() - t0, cc = cpu_s(RUSAGE_CHILDREN) - c0;
        long fc = faults(RUSAGE_CHILDREN) - f0;
        unlink(strcat(strcpy(cmd, top), "/curl.bin"));
        if (tc < best_curl)
            best_curl = tc;
        rss_before = status_kb("VmRSS:");
        reset_peak();
        double c1 = cpu_s(RUSAGE_SELF);
        long f1 = faults(RUSAGE_SELF);
        double to = pull_many(st, big, 1);
        double co = cpu_s(RUSAGE_SELF) - c1;
        long fo = faults(RUSAGE_SELF) - f1;
        hwm = status_kb("VmHWM:");
        if (to < 0)
            exit(1);
        if (to < best_ours)
            best_ours = to;
        if (cc < cpu_curl) {
            cpu_curl = cc;
            flt_curl = fc;
        }
        if (co < cpu_ours) {
            cpu_ours = co;
            flt_ours = fo;
        }
        if (hwm - rss_before > growth_max)
            growth_max = hwm - rss_before;
        printf("  round %d: curl %.3f s (CPU %.3f s, %ld faults), ours %.3f s (CPU %.3f s, %ld "
               "faults), peak RSS growth %ld KiB\n",
               round, tc, cc, fc, to, co, fo, hwm - rss_before);
    }
    double mbs_curl = (double)mb * 1.048576 / best_curl;
    double mbs_ours = (double)mb * 1.048576 / best_ours;
    printf("  pull %ld MiB (%s): curl -o %.0f MB/s, storage_fetch %.0f MB/s, ratio %.2f (goal >= "
           "0.9); peak RSS growth during the pull %.1f MiB (RSS before %.1f MiB)\n",
           mb, checks, mbs_curl, mbs_ours, mbs_ours / mbs_curl, (double)growth_max / 1024,
           (double)rss_before / 1024);
    printf("  CPU per pull (least of 3): curl -o %.3f s (%ld faults), storage_fetch %.3f s (%ld "
           "faults; all threads), ours/curl %.2f\n",
           cpu_curl, flt_curl, cpu_ours, flt_ours, cpu_ours / cpu_curl);
}

static struct storage *new_storage(struct curlev *curl, unsigned max_transfers)
{
    char cache[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/cache%u", top, max_transfers);
    struct storage_config cfg = {.cache_dir = cache,
                                 .curl = curl,
                                 .lookup = lookup,
                                 .max_transfers = max_transfers};
    struct storage *st;
    struct mm_error err;
    if (storage_new(loop, &cfg, &st, &err) < 0) {
        fprintf(stderr, "bench_pull: %s\n", err.msg);
        exit(1);
    }
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_pull SERVERS_DIR [MB]\n");
        return 2;
    }
    long mb = argc > 2 ? atol(argv[2]) : 200;
    snprintf(top, sizeof top, "/tmp/bench_pull.XXXXXX");
    if (!mkdtemp(top))
        return 1;
    if (harness_s3rver_start(&s3, argv[1], BUCKET, "benchkey", "benchsecret", NULL) < 0) {
        fprintf(stderr, "bench_pull: s3rver did not start (run scripts/setup.sh)\n");
        return 1;
    }
    char cmd[PATH_MAX * 3];
    /* the objects, uploaded by curl (unsigned PUTs) so that this process never holds them */
    snprintf(cmd, sizeof cmd,
             "head -c %ldM /dev/urandom > %s/big.bin && curl -sf -T %s/big.bin %s/" BUCKET
             "/big/model.bin && head -c %d /dev/urandom > %s/small.bin",
             mb, top, top, s3.endpoint, SMALL_BYTES, top);
    if (run(cmd) != 0)
        return 1;
    /* The same bytes with a multipart ETag, as S3 gives an object uploaded in parts (aws s3
     * cp does so above 8 MiB): "<MD5 of the parts' MD5s>-<parts>", which is no MD5 of the
     * object, so the pull checks the length only. s3rver computes a whole-object MD5 even for
     * a multipart upload, so the object is uploaded whole and the ETag it keeps beside it
     * (data/<bucket>/<key>._S3rver_object.md5) is set to that of two 5+ MiB parts. */
    long part = mb / 2 + 1 < 5 ? 5 : mb / 2 + 1;
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; curl -sf -T big.bin %s/" BUCKET "/bigmp/model.bin; "
             "split -b %ldM big.bin part.; e=$(for p in part.*; do md5sum < $p | cut -c1-32; "
             "done | xxd -r -p | md5sum | cut -c1-32)-$(ls part.* | wc -l); rm -f part.*; "
             "printf %%s $e > %s/data/" BUCKET "/bigmp/model.bin._S3rver_object.md5; "
             "curl -sfI %s/" BUCKET "/bigmp/model.bin | grep -qi \"^etag: .*-2\"",
             top, s3.endpoint, part, s3.dir, s3.endpoint);
    if (run(cmd) != 0)
        return 1;
    static char small_paths[SMALL][64];
    const char *paths[SMALL];
    for (int i = 0; i < SMALL; i++) {
        snprintf(small_paths[i], sizeof small_paths[i], "small/m%02d/model.bin", i);
        paths[i] = small_paths[i];
        snprintf(cmd, sizeof cmd, "curl -sf -T %s/small.bin %s/" BUCKET "/%s", top, s3.endpoint,
                 paths[i]);
        if (run(cmd) != 0)
            return 1;
    }

    loop = ev_loop_new(EVFLAG_AUTO);
    struct curlev *curl;
    struct mm_error err;
    if (curlev_new(loop, &curl, &err) < 0)
        return 1;
    struct storage *st = new_storage(curl, 8);

    /* (1) the big object, with the MD5 check and without */
    big_pulls(st, "big/model.bin", "MD5 and length checked", mb);
    big_pulls(st, "bigmp/model.bin", "length checked only", mb);

    /* (2) 50 small models at once */
    struct storage *st50 = new_storage(curl, 50);
    unsigned widths[2] = {8, 50};
    for (int w = 0; w < 2; w++) {
        char list[SMALL * 200 + 256];
        size_t len = (size_t)snprintf(list, sizeof list, "curl -sf --parallel --parallel-max %u",
                                      widths[w]);
        for (int i = 0; i < SMALL; i++)
            len += (size_t)snprintf(list + len, sizeof list - len,
                                    " -o %s/s%02d.bin %s/" BUCKET "/%s", top, i, s3.endpoint,
                                    paths[i]);
        double best_c = 1e9, best_o = 1e9;
        for (int round = 0; round < 3; round++) {
            double t0 = now_s();
            if (run(list) != 0)
                return 1;
            double tc = now_s() - t0;
            double to = pull_many(w ? st50 : st, paths, SMALL);
            if (to < 0)
                return 1;
            best_c = tc < best_c ? tc : best_c;
            best_o = to < best_o ? to : best_o;
        }
        printf("%d x %d KiB at once, %u transfers: curl --parallel %.3f s, storage_fetch %.3f s, "
               "ratio (curl time / ours) %.2f\n",
               SMALL, SMALL_BYTES / 1024, widths[w], best_c, best_o, best_c / best_o);
    }

    storage_free(st50);
    storage_free(st);
    curlev_free(curl);
    ev_loop_destroy(loop);
    harness_s3rver_stop(&s3);
    snprintf(cmd, sizeof cmd, "rm -rf %s", top);
    run(cmd);
    return 0;
}
