/* download.c - HTTP requests of the object-store providers on the shared curl multi (see
 * download.h).
 *
 * Each request is an xfer: one attempt at a time, each on a fresh curl handle prepared by the
 * provider, retried after a backoff (doubling, +-25 % jitter) on a 5xx answer, a connection
 * error, a stall, a cut answer or (objects) a length or MD5 mismatch. Object xfers wait in
 * one FIFO queue for one of max_transfers slots (a slot is held through the backoff of a
 * retry and until the object is written); text requests do not queue.
 *
 * Objects are written and hashed off the loop, pipelined with receiving: the transfer's
 * curlev sink (on_sink, inside curl's write callback: it calls nothing of curl but
 * curl_easy_getinfo, nothing of curlev and no user callback) copies curl's bytes into
 * fixed-size chunks (CHUNK_BYTES) and queues each full one on the object's writer; the writer
 * runs at most one job at a time on the dl's pool (pwrite + MD5 of every chunk queued when it
 * starts, in order), and its done callback on the loop recycles the chunks, counts the bytes,
 * starts the next job, and once the transfer has ended and the queue is empty checks, closes
 * and renames the file. An object holds at most XFER_CHUNKS chunks (filling, queued,
 * written): when the sink would need more it returns CURL_WRITEFUNC_PAUSE (curl keeps the
 * bytes) and the writer's done callback resumes the transfer (curl_easy_pause, outside curl,
 * which hands the kept bytes to the sink again). Chunks come from the dl's spare list (at
 * most SPARE_CHUNKS kept), so a pull allocates nothing per chunk after its first few. The sink
 * cannot fail the attempt itself: it records why in x->sink_err and aborts the transfer, and
 * on_done acts on it. While a job is in flight it alone touches the file, the MD5 state and
 * the chunks it was given; a job whose xfer is stopped (cancel, dl_free, the op failing) is
 * abandoned: the partial file's name is removed at once, the writer keeps its descriptor and
 * the MD5 state, and its done callback, which pool_free runs at the latest, closes and frees
 * them without touching the xfer or the dl. A retry waits for the previous attempt's job, whose
 * bytes are dropped.
 *
 * Every op starts from a zero timer (never inside dl_text / dl_files) and every loop entry
 * (timers, curlev callbacks) holds the dl and the op, so that a user callback may cancel any
 * op or free the dl: cancel releases the op's resources at once and its memory when the
 * entry that holds it returns; dl_free likewise for the dl. */
#include "mm/download.h"

#include <bsd/sys/queue.h>
#include <ctype.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "mm/buf.h"
#include "mm/curlev.h"
#include "mm/pool.h"

#define ERR_BODY_MAX (64 * 1024) /* of a non-2xx answer, for http_error */
#define FILE_RECV_BUFFER (256 * 1024L) /* curl's receive buffer for objects */
#define TEXT_HELD_SLACK (4u << 20)
#define PROGRESS_EVERY 0.25 /* seconds */
#define CHUNK_BYTES (512u << 10) /* received bytes go to the writer in chunks this size */
#define XFER_CHUNKS 8            /* an object's chunks at most (4 MiB): more pauses it */
#define SPARE_CHUNKS 8           /* chunks kept for reuse, per dl */
#define WRITER_THREADS 2

/* Bytes received, on their way to the file: CHUNK_BYTES of room. */
struct chunk {
    STAILQ_ENTRY(chunk) link;
    size_t len;
    char data[];
};
STAILQ_HEAD(chunk_list, chunk);

/* The writing side of an object xfer (see the top). */
struct writer {
    struct xfer *x;           /* NULL once abandoned */
    struct chunk *fill;       /* being filled by the sink, or NULL */
    struct chunk_list queue;  /* full (or the last), not yet handed to a job (loop) */
    unsigned chunks;          /* held: fill, queue and batch */
    bool busy;                /* a job runs with batch, fd, md5 */
    bool stale;               /* the job writes for an attempt that failed: its outcome is dropped */
    /* the job's, while busy */
    struct chunk_list batch;
    uint64_t batch_bytes;
    int fd;
    EVP_MD_CTX *md5;          /* NULL: not checked */
    uint64_t off;             /* where the batch goes in the file */
    uint64_t wrote;           /* bytes of the batch written */
    int werr;                 /* 0 or -errno of the write that failed */
    unsigned delay_us;        /* dl_test_slow_writer */
};

enum xfer_state { X_IDLE, X_QUEUED, X_RUNNING, X_BACKOFF, X_DONE };

struct xfer {
    struct dl_op *op;
    struct dl_request req; /* req.what points at what */
    char *what;
    unsigned attempt;
    enum xfer_state state;
    bool has_slot;
    struct curlev_transfer *t;
    struct curl_slist *headers;
    ev_timer backoff;
    struct mm_buf errbody; /* the first ERR_BODY_MAX bytes of a non-2xx answer */
    char errbuf[CURL_ERROR_SIZE];
    TAILQ_ENTRY(xfer) qlink;
    /* objects only */
    char *rel;
    const char *base; /* rel's last component */
    char *tmp;        /* ".<base>.part" */
    uint64_t size;    /* UINT64_MAX = unknown */
    char md5[33];     /* "" = not checked */
    int parent_fd;    /* the directory holding base, or -1 */
    int fd;           /* the temporary file, or -1 */
    uint64_t written;  /* by the writer, this attempt */
    uint64_t received; /* handed to the writer, this attempt */
    EVP_MD_CTX *md5ctx;
    struct writer *w;
    bool paused;       /* the transfer, by the sink, for the writer to catch up */
    bool recv_done;    /* the transfer ended with a 2xx answer: complete once written */
    long code;
    long sink_code;    /* the answer's status as the sink saw it, 0 = not yet */
    struct mm_error sink_err; /* code != 0: why the sink aborted the transfer */
    bool sink_retry;   /* ... and whether another attempt may help */
};

struct dl_op {
    struct dl *dl;
    bool files_job;
    TAILQ_ENTRY(dl_op) link;
    ev_timer kick;
    int holds;
    bool ended;
    void *arg;
    struct xfer *x;
    size_t n;
    /* text */
    size_t max_body;
    dl_text_cb text_cb;
    /* files */
    int dirfd;
    dev_t dev;
    bool committed; /* its remaining bytes count against other jobs' free space */
    size_t completed;
    uint64_t total, done;
    ev_tstamp last_progress;
    dl_progress_cb progress;
    dl_files_cb files_cb;
};

TAILQ_HEAD(op_list, dl_op);
TAILQ_HEAD(xfer_queue, xfer);

struct dl {
    struct dl_config cfg;
    struct ev_loop *loop;
    struct op_list ops;
    struct xfer_queue queue;
    unsigned active; /* object slots taken */
    ev_timer pump;
    struct pool *pool; /* the writers', made with the first files job */
    struct chunk_list spare;
    unsigned spare_chunks;
    uint64_t rng;
    int depth;
    bool free_requested;
    unsigned test_delay_us; /* dl_test_slow_writer */
    unsigned long pauses;   /* transfers paused by their sink, ever */
};

/* For tests only (no header: a test declares them): every writer job sleeps us first, so that
 * receiving outruns writing and the sink must pause; and how many times a sink paused. */
void dl_test_slow_writer(struct dl *dl, unsigned us);
unsigned long dl_test_pauses(const struct dl *dl);

/* --- holding the dl and ops across user callbacks --------------------------------------- */

static void chunks_free(struct chunk_list *l)
{
    struct chunk *c;
    while ((c = STAILQ_FIRST(l))) {
        STAILQ_REMOVE_HEAD(l, link);
        free(c);
    }
}

/* A chunk from the spare list, or a new one; NULL if out of memory. */
static struct chunk *chunk_get(struct dl *dl)
{
    struct chunk *c = STAILQ_FIRST(&dl->spare);
    if (c) {
        STAILQ_REMOVE_HEAD(&dl->spare, link);
        dl->spare_chunks--;
    } else if (!(c = malloc(sizeof(*c) + CHUNK_BYTES))) {
        return NULL;
    }
    c->len = 0;
    return c;
}

static void chunk_put(struct dl *dl, struct chunk *c)
{
    if (dl->spare_chunks < SPARE_CHUNKS) {
        STAILQ_INSERT_HEAD(&dl->spare, c, link);
        dl->spare_chunks++;
    } else {
        free(c);
    }
}

/* Give back the chunks of l; how many. */
static unsigned chunks_recycle(struct dl *dl, struct chunk_list *l)
{
    unsigned n = 0;
    struct chunk *c;
    while ((c = STAILQ_FIRST(l))) {
        STAILQ_REMOVE_HEAD(l, link);
        chunk_put(dl, c);
        n++;
    }
    return n;
}

/* Drop what the writer holds that no job has: the chunk being filled and the queue. */
static void writer_drop_pending(struct dl *dl, struct writer *w)
{
    if (w->fill) {
        chunk_put(dl, w->fill);
        w->fill = NULL;
        w->chunks--;
    }
    w->chunks -= chunks_recycle(dl, &w->queue);
}

static void dl_destroy(struct dl *dl)
{
    ev_timer_stop(dl->loop, &dl->pump);
    pool_free(dl->pool); /* waits for writers in flight; their done callbacks clean up */
    chunks_free(&dl->spare);
    free(dl);
}

static void enter(struct dl *dl, struct dl_op *op)
{
    dl->depth++;
    if (op)
        op->holds++;
}

static void op_free(struct dl_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        struct xfer *x = &op->x[i];
        free(x->what);
        free(x->rel);
        free(x->tmp);
        mm_buf_free(&x->errbody);
        EVP_MD_CTX_free(x->md5ctx);
        if (x->w) { /* never busy here, holding nothing: see xfer_stop */
            free(x->w->fill);
            chunks_free(&x->w->queue);
            free(x->w);
        }
    }
    free(op->x);
    free(op);
}

static void leave(struct dl *dl, struct dl_op *op)
{
    if (op && --op->holds == 0 && op->ended)
        op_free(op);
    if (--dl->depth == 0 && dl->free_requested)
        dl_destroy(dl);
}

static void schedule_pump(struct dl *dl)
{
    if (!dl->free_requested && !ev_is_active(&dl->pump) && !TAILQ_EMPTY(&dl->queue)) {
        ev_timer_set(&dl->pump, 0., 0.);
        ev_timer_start(dl->loop, &dl->pump);
    }
}

/* Leave a busy writer to its job, which already holds the file's descriptor and the MD5
 * state (writer_kick gave them: written here, they would race with it): the partial file's
 * name goes at once, and the job's done callback closes and frees the rest. */
static void writer_abandon(struct xfer *x)
{
    struct writer *w = x->w;
    writer_drop_pending(x->op->dl, w);
    w->x = NULL;
    unlinkat(x->parent_fd, x->tmp, 0);
    x->fd = -1;             /* w->fd */
    x->md5ctx = NULL;       /* w->md5, or NULL when not checked */
    x->w = NULL;
}

/* Stop whatever x has going; a partial file is removed, a complete one stays. */
static void xfer_stop(struct xfer *x)
{
    struct dl *dl = x->op->dl;
    if (x->w && x->w->busy)
        writer_abandon(x);
    else if (x->w)
        writer_drop_pending(dl, x->w);
    x->paused = false;
    if (x->state == X_QUEUED)
        TAILQ_REMOVE(&dl->queue, x, qlink);
    ev_timer_stop(dl->loop, &x->backoff);
    curlev_transfer_free(x->t);
    x->t = NULL;
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    if (x->has_slot) {
        x->has_slot = false;
        dl->active--;
        schedule_pump(dl);
    }
    if (x->fd >= 0) {
        close(x->fd);
        x->fd = -1;
        unlinkat(x->parent_fd, x->tmp, 0);
    }
    if (x->parent_fd >= 0) {
        close(x->parent_fd);
        x->parent_fd = -1;
    }
    if (x->state != X_DONE)
        x->state = X_IDLE;
}

/* The op is over: nothing of it runs any more; its memory goes with the last hold. */
static void op_end(struct dl_op *op)
{
    if (op->ended)
        return;
    for (size_t i = 0; i < op->n; i++)
        xfer_stop(&op->x[i]);
    ev_timer_stop(op->dl->loop, &op->kick);
    TAILQ_REMOVE(&op->dl->ops, op, link);
    op->ended = true;
    if (op->holds == 0)
        op_free(op);
}

/* The op fails with rc and err: its callback, once. */
static void op_fail(struct dl_op *op, int rc, const struct mm_error *err, long code,
                    const struct mm_buf *body)
{
    void *arg = op->arg;
    if (op->files_job) {
        dl_files_cb cb = op->files_cb;
        uint64_t done = op->done;
        op_end(op);
        cb(rc, err, done, arg);
    } else {
        dl_text_cb cb = op->text_cb;
        op_end(op);
        cb(rc, err, code, body && body->data ? body->data : "", body ? body->len : 0, arg);
    }
}

/* --- attempts --------------------------------------------------------------------------- */

static void on_data(struct curlev_transfer *t, struct mm_buf *body, void *arg);
static size_t on_sink(const char *ptr, size_t len, void *arg);
static void on_done(struct curlev_transfer *t, CURLcode result, void *arg);

static uint64_t next_random(struct dl *dl)
{
    uint64_t z = (dl->rng += 0x9E3779B97F4A7C15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The delay before attempt number x->attempt + 1, in seconds. */
static double backoff_delay(struct xfer *x)
{
    struct dl *dl = x->op->dl;
    double ms = dl->cfg.backoff_ms;
    for (unsigned i = 1; i < x->attempt && ms < 3600e3; i++)
        ms *= 2;
    double jitter = (double)(next_random(dl) % 10001) / 10000.0; /* 0..1 */
    return ms * (0.75 + 0.5 * jitter) / 1000.0;
}

/* Open (create) the temporary file of x beneath the job's directory, one component at a
 * time, never through a symbolic link. */
static int open_file(struct xfer *x, struct mm_error *err)
{
    struct dl_op *op = x->op;
    int dir = dup(op->dirfd);
    if (dir < 0)
        return mm_error_set(err, -errno, "%s: %s: %s", x->what, x->rel, strerror(errno));
    const char *p = x->rel;
    char comp[NAME_MAX + 1];
    for (const char *slash; (slash = strchr(p, '/')); p = slash + 1) {
        size_t len = (size_t)(slash - p);
        if (len > NAME_MAX) {
            close(dir);
            return mm_error_set(err, -ENAMETOOLONG, "%s: %s: a name too long", x->what, x->rel);
        }
        memcpy(comp, p, len);
        comp[len] = '\0';
        if (mkdirat(dir, comp, 0700) < 0 && errno != EEXIST) {
            int rc = -errno;
            close(dir);
            return mm_error_set(err, rc, "%s: creating the directory of %s: %s", x->what, x->rel,
                                strerror(-rc));
        }
        int sub = openat(dir, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int rc = -errno;
        close(dir);
        if (sub < 0)
            return mm_error_set(
                err, rc == -ELOOP ? -EEXIST : rc, "%s: %s: '%s' is %s", x->what, x->rel, comp,
                rc == -ELOOP || rc == -ENOTDIR ? "not a directory (or a link)" : strerror(-rc));
        dir = sub;
    }
    x->fd = openat(dir, x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (x->fd < 0) {
        int rc = -errno;
        close(dir);
        return mm_error_set(err, rc, "%s: creating %s: %s", x->what, x->rel, strerror(-rc));
    }
    x->parent_fd = dir;
    return 0;
}

/* Start the next attempt of x: a fresh handle, prepared by the provider. */
static int attempt(struct xfer *x, struct mm_error *err)
{
    struct dl_op *op = x->op;
    struct dl *dl = op->dl;
    x->attempt++;
    mm_buf_reset(&x->errbody);
    x->errbuf[0] = '\0';
    size_t held = op->files_job ? 0 : op->max_body + TEXT_HELD_SLACK;
    if (curlev_transfer_new(dl->cfg.curl, held, on_data, on_done, x, &x->t) < 0)
        return mm_error_set(err, -ENOMEM, "%s: out of memory", x->what);
    CURL *easy = curlev_transfer_easy(x->t);
    mm_error_clear(err);
    int rc = x->req.prepare(easy, &x->headers, x->req.arg, err);
    if (rc < 0) {
        if (!err->msg[0])
            mm_error_set(err, rc, "%s: preparing the request: %s", x->what, mm_strerror(rc));
        return rc;
    }
    if (x->headers)
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, NULL);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)dl->cfg.connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, (long)((dl->cfg.stall_timeout_ms + 999) / 1000));
    if (op->files_job) {
        curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, FILE_RECV_BUFFER);
        curlev_transfer_set_sink(x->t, on_sink, x);
        if (x->fd < 0) {
            if ((rc = open_file(x, err)) < 0)
                return rc;
        } else if (ftruncate(x->fd, 0) < 0) {
            return mm_error_set(err, -errno, "%s: truncating %s: %s", x->what, x->rel,
                                strerror(errno));
        }
        if (!x->w) {
            if (!(x->w = calloc(1, sizeof(*x->w))))
                return mm_error_set(err, -ENOMEM, "%s: out of memory", x->what);
            x->w->x = x;
            x->w->fd = -1;
            STAILQ_INIT(&x->w->queue);
            STAILQ_INIT(&x->w->batch);
        }
        op->done -= x->written;
        x->written = x->received = 0;
        x->recv_done = x->paused = false;
        x->sink_code = 0;
        mm_error_clear(&x->sink_err);
        if (x->md5[0] && (!x->md5ctx && !(x->md5ctx = EVP_MD_CTX_new())))
            return mm_error_set(err, -ENOMEM, "%s: out of memory", x->what);
        if (x->md5[0] && !EVP_DigestInit_ex(x->md5ctx, EVP_md5(), NULL))
            return mm_error_set(err, -EIO, "%s: MD5 is not available", x->what);
    }
    if (curlev_transfer_start(x->t) < 0)
        return mm_error_set(err, -ENOMEM, "%s: out of memory", x->what);
    x->state = X_RUNNING;
    return 0;
}

/* The attempt failed with rc and err: again after a backoff if it may be, else the op fails. */
static void attempt_failed(struct xfer *x, int rc, const struct mm_error *err, bool retry,
                           long code)
{
    struct dl *dl = x->op->dl;
    curlev_transfer_free(x->t);
    x->t = NULL;
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    x->paused = x->recv_done = false;
    if (x->w) { /* the bytes of this attempt not yet written are dropped */
        writer_drop_pending(dl, x->w);
        x->w->stale = x->w->busy;
    }
    if (retry && x->attempt < dl->cfg.max_attempts) {
        x->state = X_BACKOFF;
        ev_timer_set(&x->backoff, backoff_delay(x), 0.);
        ev_timer_start(dl->loop, &x->backoff);
        return;
    }
    op_fail(x->op, rc, err, code, &x->errbody);
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct xfer *x = w->data;
    struct dl_op *op = x->op;
    struct dl *dl = op->dl;
    struct mm_error err;
    if (x->w && x->w->busy) { /* the previous attempt's job still writes: soon */
        ev_timer_set(&x->backoff, 0.005, 0.);
        ev_timer_start(loop, &x->backoff);
        return;
    }
    enter(dl, op);
    int rc = attempt(x, &err);
    if (rc < 0)
        op_fail(op, rc, &err, 0, NULL);
    leave(dl, op);
}

/* --- answers ---------------------------------------------------------------------------- */

static void report_progress(struct dl_op *op, bool last)
{
    if (!op->progress)
        return;
    ev_tstamp now = ev_now(op->dl->loop);
    if (!last && now - op->last_progress < PROGRESS_EVERY)
        return;
    op->last_progress = now;
    op->progress(op->done, op->total, op->arg);
}

/* --- writers ----------------------------------------------------------------------------- */

/* On a pool thread: write the batch at off, in order, and hash it, a chunk at a time (hashed
 * while it is still in the cache). */
static void writer_work(void *arg)
{
    struct writer *w = arg;
    if (w->delay_us)
        usleep(w->delay_us);
    w->wrote = 0;
    w->werr = 0;
    for (struct chunk *c = STAILQ_FIRST(&w->batch); c; c = STAILQ_NEXT(c, link)) {
        for (size_t done = 0; done < c->len;) {
            ssize_t r = pwrite(w->fd, c->data + done, c->len - done, (off_t)(w->off + w->wrote));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                w->werr = r < 0 ? -errno : -EIO;
                return; /* the attempt ends: the hash no longer matters */
            }
            done += (size_t)r;
            w->wrote += (uint64_t)r;
        }
        if (w->md5)
            EVP_DigestUpdate(w->md5, c->data, c->len);
    }
}

static void writer_done(int status, void *arg);

/* Hand everything queued to a job. 0 or -ENOMEM. Called from the sink too: it touches
 * nothing of curl or curlev. */
static int writer_kick(struct xfer *x)
{
    struct writer *w = x->w;
    struct dl *dl = x->op->dl;
    w->batch_bytes = 0;
    for (struct chunk *c = STAILQ_FIRST(&w->queue); c; c = STAILQ_NEXT(c, link))
        w->batch_bytes += c->len;
    STAILQ_CONCAT(&w->batch, &w->queue);
    w->fd = x->fd;
    w->md5 = x->md5[0] ? x->md5ctx : NULL;
    w->off = x->written;
    w->delay_us = dl->test_delay_us;
    w->busy = true;
    if (pool_submit(dl->pool, writer_work, writer_done, w, NULL) < 0) {
        w->busy = false;
        STAILQ_CONCAT(&w->queue, &w->batch);
        return -ENOMEM;
    }
    return 0;
}

static void writer_destroy(struct writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    EVP_MD_CTX_free(w->md5);
    free(w->fill);
    chunks_free(&w->batch);
    chunks_free(&w->queue);
    free(w);
}

static void file_complete(struct xfer *x);

/* On the loop: a job ended (status -ECANCELED: it never ran, which only pool_free does, after
 * every op has ended). */
static void writer_done(int status, void *arg)
{
    struct writer *w = arg;
    struct xfer *x = w->x;
    if (!x) { /* abandoned: the dl may be going; touch nothing of it */
        writer_destroy(w);
        return;
    }
    struct dl_op *op = x->op;
    struct dl *dl = op->dl;
    struct mm_error err;
    enter(dl, op);
    w->busy = false;
    w->chunks -= chunks_recycle(dl, &w->batch);
    if (w->stale) { /* the attempt failed meanwhile; the retry waits for this */
        w->stale = false;
        goto out;
    }
    if (status < 0 || w->werr) {
        int rc = status < 0 ? -EIO : w->werr;
        uint64_t at = x->written + w->wrote;
        if (rc == -ENOSPC || rc == -EDQUOT)
            mm_error_set(&err, -ENOSPC,
                         "%s: the disk is full writing %s (%" PRIu64 " bytes written)", x->what,
                         x->rel, at);
        else
            mm_error_set(&err, rc, "%s: writing %s: %s", x->what, x->rel,
                         status < 0 ? "interrupted" : strerror(-rc));
        op_fail(op, err.code, &err, 0, NULL);
        goto out;
    }
    x->written += w->batch_bytes;
    op->done += w->batch_bytes;
    if (!STAILQ_EMPTY(&w->queue) && writer_kick(x) < 0) {
        op_fail(op, mm_error_set(&err, -ENOMEM, "%s: out of memory", x->what), &err, 0, NULL);
        goto out;
    }
    if (x->paused) {
        /* Room again: curl hands the bytes it kept to the sink inside this call (which may
         * pause again, or abort: then the attempt fails here, outside curl). It fails
         * harmlessly when the transfer has just ended. */
        x->paused = false;
        curl_easy_pause(curlev_transfer_easy(x->t), CURLPAUSE_CONT);
        if (x->sink_err.code) {
            struct mm_error e = x->sink_err;
            attempt_failed(x, e.code, &e, x->sink_retry, x->sink_code);
            goto out;
        }
    }
    if (!w->busy && x->recv_done) {
        file_complete(x);
        goto out;
    }
    report_progress(op, false);
out:
    leave(dl, op);
}

/* The sink aborts the transfer (x->sink_err set): on_done fails the attempt with it. */
static size_t sink_fail(struct xfer *x, int rc, bool retry)
{
    (void)rc;
    x->sink_retry = retry;
    return 0;
}

/* curlev's sink of an object xfer: INSIDE curl's write callback (see curlev.h and the top). */
static size_t on_sink(const char *ptr, size_t len, void *arg)
{
    struct xfer *x = arg;
    struct writer *w = x->w;
    struct dl *dl = x->op->dl;
    if (!x->sink_code)
        curl_easy_getinfo(curlev_transfer_easy(x->t), CURLINFO_RESPONSE_CODE, &x->sink_code);
    if (x->sink_code < 200 || x->sink_code > 299) { /* kept for http_error, up to a bound */
        size_t room = ERR_BODY_MAX - x->errbody.len;
        if (mm_buf_append(&x->errbody, ptr, len < room ? len : room) < 0)
            return sink_fail(
                x, mm_error_set(&x->sink_err, -ENOMEM, "%s: out of memory", x->what), false);
        return len;
    }
    if (x->size != UINT64_MAX && x->received + len > x->size)
        return sink_fail(x,
                         mm_error_set(&x->sink_err, -EBADMSG,
                                      "%s: more than the %" PRIu64 " bytes expected", x->what,
                                      x->size),
                         true);
    size_t room = w->fill ? CHUNK_BYTES - w->fill->len : 0;
    if (len > room) {
        size_t need = (len - room + CHUNK_BYTES - 1) / CHUNK_BYTES;
        /* Over the bound, wait for the job in flight to give chunks back. (Not busy: nothing
         * is queued, so the bytes fit unless curl hands over more than XFER_CHUNKS at once.) */
        if (w->chunks + need > XFER_CHUNKS && w->busy) {
            x->paused = true;
            dl->pauses++;
            return CURL_WRITEFUNC_PAUSE;
        }
    }
    for (size_t off = 0; off < len;) {
        if (!w->fill) {
            if (!(w->fill = chunk_get(dl)))
                return sink_fail(
                x, mm_error_set(&x->sink_err, -ENOMEM, "%s: out of memory", x->what), false);
            w->chunks++;
        }
        size_t n = CHUNK_BYTES - w->fill->len;
        if (n > len - off)
            n = len - off;
        memcpy(w->fill->data + w->fill->len, ptr + off, n);
        w->fill->len += n;
        off += n;
        if (w->fill->len == CHUNK_BYTES) {
            STAILQ_INSERT_TAIL(&w->queue, w->fill, link);
            w->fill = NULL;
        }
    }
    x->received += len;
    if (!w->busy && !STAILQ_EMPTY(&w->queue) && writer_kick(x) < 0)
        return sink_fail(
                x, mm_error_set(&x->sink_err, -ENOMEM, "%s: out of memory", x->what), false);
    return len;
}

/* Text answers arrived; or an object's sink took bytes (body empty): if they wait in a
 * chunk not yet full while the writer idles, a slow answer, hand them over for progress'
 * sake (at most every PROGRESS_EVERY). */
static void on_data(struct curlev_transfer *t, struct mm_buf *body, void *arg)
{
    struct xfer *x = arg;
    struct dl_op *op = x->op;
    struct dl *dl = op->dl;
    struct mm_error err;
    long code = 0;
    curl_easy_getinfo(curlev_transfer_easy(t), CURLINFO_RESPONSE_CODE, &code);
    enter(dl, op);
    if (op->files_job) {
        struct writer *w = x->w;
        if (!w->busy && w->fill && w->fill->len && !x->sink_err.code &&
            ev_now(dl->loop) - op->last_progress >= PROGRESS_EVERY) {
            STAILQ_INSERT_TAIL(&w->queue, w->fill, link);
            w->fill = NULL;
            if (writer_kick(x) < 0)
                op_fail(op, mm_error_set(&err, -ENOMEM, "%s: out of memory", x->what), &err, 0,
                        NULL);
        }
    } else if (code < 200 || code > 299) { /* kept for http_error, up to a bound */
        size_t room = ERR_BODY_MAX - x->errbody.len;
        if (mm_buf_append(&x->errbody, body->data, body->len < room ? body->len : room) < 0)
            op_fail(op, mm_error_set(&err, -ENOMEM, "%s: out of memory", x->what), &err, 0, NULL);
        else
            mm_buf_consume(body, body->len);
    } else if (body->len > op->max_body) { /* held until done, within max_body */
        mm_error_set(&err, -EFBIG, "%s: the answer is over %zu bytes", x->what, op->max_body);
        attempt_failed(x, -EFBIG, &err, false, code);
    }
    leave(dl, op);
}

/* A transport failure: its -errno and message; *retry when another attempt may help. */
static int transport_error(struct xfer *x, CURLcode result, struct mm_error *err, bool *retry)
{
    struct dl *dl = x->op->dl;
    CURL *easy = curlev_transfer_easy(x->t);
    const char *words = x->errbuf[0] ? x->errbuf : curl_easy_strerror(result);
    *retry = true;
    switch (result) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return mm_error_set(err, -EHOSTUNREACH, "%s: name not resolved: %s", x->what, words);
    case CURLE_COULDNT_CONNECT:
        return mm_error_set(err, -ECONNREFUSED, "%s: no connection: %s", x->what, words);
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connected = 0;
        curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0)
            return mm_error_set(err, -ETIMEDOUT, "%s: no connection within %" PRIu32 " ms", x->what,
                                dl->cfg.connect_timeout_ms);
        return mm_error_set(err, -ETIMEDOUT,
                            "%s: stalled: no byte for %" PRIu32 " s (stall timeout)", x->what,
                            (dl->cfg.stall_timeout_ms + 999) / 1000);
    }
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED: {
        *retry = false;
        const char *what_tls =
            result == CURLE_PEER_FAILED_VERIFICATION ? "the server's certificate is not trusted"
            : result == CURLE_SSL_CACERT_BADFILE     ? "the CA certificate is unusable"
            : result == CURLE_SSL_CERTPROBLEM        ? "the client certificate is unusable"
                                                     : "the TLS handshake failed";
        return mm_error_set(err, -EPROTO, "%s: TLS: %s: %s", x->what, what_tls, words);
    }
    case CURLE_RECV_ERROR:
        /* A TLS alert after the handshake (TLS 1.3 refusing a missing or bad client
         * certificate does so): a TLS failure, which another attempt will not mend. OpenSSL's
         * other read errors ("unexpected eof") are a cut connection, retried. */
        if (strstr(words, "SSL routines") && strstr(words, "alert")) {
            *retry = false;
            return mm_error_set(err, -EPROTO, "%s: TLS: the server refused the connection: %s",
                                x->what, words);
        }
        /* fall through */
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return mm_error_set(err, -EIO, "%s: connection failed: %s", x->what, words);
    default:
        *retry = false;
        return mm_error_set(err, -EIO, "%s: %s", x->what, words);
    }
}

/* A non-2xx final answer: the provider's words, or ours. */
static int http_failure(struct xfer *x, long code, struct mm_error *err)
{
    mm_error_clear(err);
    if (x->req.http_error) {
        int rc = x->req.http_error(code, x->errbody.data ? x->errbody.data : "", x->errbody.len,
                                   x->req.arg, err);
        if (rc < 0) {
            if (!err->msg[0])
                mm_error_set(err, rc, "%s: HTTP %ld", x->what, code);
            err->code = rc;
            return rc;
        }
    }
    return mm_error_set(err, -EIO, "%s: HTTP %ld", x->what, code);
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The object of x is whole and written: check it, rename it, and end the job if it was the
 * last. */
static void file_complete(struct xfer *x)
{
    struct dl_op *op = x->op;
    long code = x->code;
    struct mm_error err;
    CURL *easy = curlev_transfer_easy(x->t);
    curl_off_t announced = -1;
    curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
    uint64_t expected = x->size != UINT64_MAX ? x->size
                        : announced >= 0      ? (uint64_t)announced
                                              : UINT64_MAX;
    if (expected != UINT64_MAX && x->written != expected) {
        mm_error_set(&err, -EBADMSG, "%s: %" PRIu64 " bytes received, %" PRIu64 " expected",
                     x->what, x->written, expected);
        attempt_failed(x, -EBADMSG, &err, true, code);
        return;
    }
    if (x->md5[0]) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dn = 0;
        char got[2 * EVP_MAX_MD_SIZE + 1];
        EVP_DigestFinal_ex(x->md5ctx, d, &dn);
        hex(d, dn, got);
        if (strcmp(got, x->md5) != 0) {
            mm_error_set(&err, -EBADMSG, "%s: MD5 %s, expected %s", x->what, got, x->md5);
            attempt_failed(x, -EBADMSG, &err, true, code);
            return;
        }
    }
    int fd = x->fd;
    x->fd = -1;
    if (close(fd) < 0) {
        int rc = -errno;
        unlinkat(x->parent_fd, x->tmp, 0);
        mm_error_set(&err, rc == -EDQUOT ? -ENOSPC : rc, "%s: writing %s: %s", x->what, x->rel,
                     strerror(-rc));
        op_fail(op, err.code, &err, 0, NULL);
        return;
    }
    if (renameat2(x->parent_fd, x->tmp, x->parent_fd, x->base, RENAME_NOREPLACE) < 0) {
        int rc = -errno;
        unlinkat(x->parent_fd, x->tmp, 0);
        mm_error_set(&err, rc, "%s: naming %s: %s", x->what, x->rel,
                     rc == -EEXIST ? "it exists already" : strerror(-rc));
        op_fail(op, rc, &err, 0, NULL);
        return;
    }
    x->state = X_DONE;
    xfer_stop(x); /* closes the directory, frees the handle and the slot */
    if (++op->completed < op->n)
        return;
    report_progress(op, true);
    if (op->ended)
        return;
    dl_files_cb cb = op->files_cb;
    void *arg = op->arg;
    uint64_t done = op->done;
    op_end(op);
    cb(0, NULL, done, arg);
}

static void on_done(struct curlev_transfer *t, CURLcode result, void *arg)
{
    struct xfer *x = arg;
    struct dl_op *op = x->op;
    struct dl *dl = op->dl;
    struct mm_error err;
    long code = 0;
    curl_easy_getinfo(curlev_transfer_easy(t), CURLINFO_RESPONSE_CODE, &code);
    enter(dl, op);
    if (result != CURLE_OK) {
        bool retry;
        if (x->sink_err.code) {
            err = x->sink_err;
            retry = x->sink_retry;
        } else if (result == CURLE_WRITE_ERROR && curlev_transfer_over_limit(t)) {
            mm_error_set(&err, -EFBIG, "%s: the answer is over %zu bytes", x->what,
                         op->max_body);
            retry = false;
        } else {
            transport_error(x, result, &err, &retry);
        }
        attempt_failed(x, err.code, &err, retry, 0);
    } else if (code >= 500 && code <= 599 && x->attempt < dl->cfg.max_attempts) {
        mm_error_set(&err, -EIO, "%s: HTTP %ld", x->what, code);
        attempt_failed(x, -EIO, &err, true, code);
    } else if (code < 200 || code > 299) {
        int rc = http_failure(x, code, &err);
        attempt_failed(x, rc, &err, false, code);
    } else if (!op->files_job) {
        struct mm_buf *body = curlev_transfer_body(t);
        dl_text_cb cb = op->text_cb;
        void *cb_arg = op->arg;
        op_end(op); /* t is freed once this callback returns: body stays valid during cb */
        cb(0, NULL, code, body->data ? body->data : "", body->len, cb_arg);
    } else {
        struct writer *w = x->w;
        x->recv_done = true;
        x->code = code;
        if (w->fill && w->fill->len) { /* the last bytes */
            STAILQ_INSERT_TAIL(&w->queue, w->fill, link);
            w->fill = NULL;
        }
        if (!w->busy && !STAILQ_EMPTY(&w->queue) && writer_kick(x) < 0)
            op_fail(op, mm_error_set(&err, -ENOMEM, "%s: out of memory", x->what), &err, 0,
                    NULL);
        else if (!w->busy)
            file_complete(x);
    }
    leave(dl, op);
}

/* --- ops ----------------------------------------------------------------------------------- */

static void on_pump(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dl *dl = w->data;
    struct xfer *x;
    enter(dl, NULL);
    while (!dl->free_requested && dl->active < dl->cfg.max_transfers &&
           (x = TAILQ_FIRST(&dl->queue))) {
        TAILQ_REMOVE(&dl->queue, x, qlink);
        x->state = X_IDLE;
        x->has_slot = true;
        dl->active++;
        struct dl_op *op = x->op;
        struct mm_error err;
        enter(dl, op);
        int rc = attempt(x, &err);
        if (rc < 0)
            op_fail(op, rc, &err, 0, NULL);
        leave(dl, op);
    }
    leave(dl, NULL);
}

static double mb(uint64_t b)
{
    return (double)b / 1e6;
}

/* The job may start if its file system has room for it, the other jobs' remaining bytes
 * there and the reserve. */
static int check_space(struct dl_op *op, struct mm_error *err)
{
    struct statvfs vfs;
    if (fstatvfs(op->dirfd, &vfs) < 0)
        return mm_error_set(err, -errno, "%s: checking free disk space: %s", op->x[0].what,
                            strerror(errno));
    uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize, others = 0;
    struct dl_op *o;
    TAILQ_FOREACH(o, &op->dl->ops, link)
    if (o != op && o->committed && o->dev == op->dev && o->total > o->done)
        others += o->total - o->done;
    uint64_t need = op->total + op->dl->cfg.disk_reserve + others;
    if (free_bytes < need)
        return mm_error_set(err, -ENOSPC,
                            "%s: not enough disk space: %.1f MB needed (%.1f MB for %zu "
                            "file(s), %.1f MB kept free, %.1f MB for other downloads), "
                            "%.1f MB free",
                            op->x[0].what, mb(need), mb(op->total), op->n,
                            mb(op->dl->cfg.disk_reserve), mb(others), mb(free_bytes));
    return 0;
}

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dl_op *op = w->data;
    struct dl *dl = op->dl;
    struct mm_error err;
    enter(dl, op);
    if (!op->files_job) {
        int rc = attempt(&op->x[0], &err);
        if (rc < 0)
            op_fail(op, rc, &err, 0, NULL);
    } else if (check_space(op, &err) < 0) {
        op_fail(op, err.code, &err, 0, NULL);
    } else if (!dl->pool && pool_new(dl->loop, WRITER_THREADS, &dl->pool, &err) < 0) {
        op_fail(op, err.code, &err, 0, NULL);
    } else {
        op->committed = true;
        for (size_t i = 0; i < op->n; i++) {
            op->x[i].state = X_QUEUED;
            TAILQ_INSERT_TAIL(&dl->queue, &op->x[i], qlink);
        }
        schedule_pump(dl);
    }
    leave(dl, op);
}

static struct dl_op *op_new(struct dl *dl, size_t n, void *arg)
{
    struct dl_op *op = calloc(1, sizeof(*op));
    if (!op || !(op->x = calloc(n, sizeof(*op->x)))) {
        free(op);
        return NULL;
    }
    op->dl = dl;
    op->n = n;
    op->arg = arg;
    op->dirfd = -1;
    ev_init(&op->kick, on_kick);
    op->kick.data = op;
    for (size_t i = 0; i < n; i++) {
        struct xfer *x = &op->x[i];
        x->op = op;
        x->fd = x->parent_fd = -1;
        ev_init(&x->backoff, on_backoff);
        x->backoff.data = x;
    }
    return op;
}

static int xfer_init(struct xfer *x, const struct dl_request *req, struct mm_error *err)
{
    if (!req->prepare)
        return mm_error_set(err, -EINVAL, "%s: no prepare function",
                            req->what ? req->what : "download");
    x->req = *req;
    x->what = strdup(req->what ? req->what : "download");
    if (!x->what)
        return mm_error_set(err, -ENOMEM, "out of memory");
    x->req.what = x->what;
    return 0;
}

static void op_start(struct dl_op *op, struct dl_op **out)
{
    TAILQ_INSERT_TAIL(&op->dl->ops, op, link);
    ev_timer_set(&op->kick, 0., 0.);
    ev_timer_start(op->dl->loop, &op->kick);
    if (out)
        *out = op;
}

int dl_new(const struct dl_config *cfg, struct dl **out, struct mm_error *err)
{
    if (!cfg || !cfg->curl)
        return mm_error_set(err, -EINVAL, "downloads: no curl multi given");
    struct dl *dl = calloc(1, sizeof(*dl));
    if (!dl)
        return mm_error_set(err, -ENOMEM, "downloads: out of memory");
    dl->cfg = *cfg;
    if (!dl->cfg.max_transfers)
        dl->cfg.max_transfers = 8;
    if (!dl->cfg.max_attempts)
        dl->cfg.max_attempts = 4;
    if (!dl->cfg.backoff_ms)
        dl->cfg.backoff_ms = 250;
    if (!dl->cfg.connect_timeout_ms)
        dl->cfg.connect_timeout_ms = 10000;
    if (!dl->cfg.stall_timeout_ms)
        dl->cfg.stall_timeout_ms = 60000;
    if (!dl->cfg.disk_reserve)
        dl->cfg.disk_reserve = 64u << 20;
    dl->loop = curlev_loop(cfg->curl);
    TAILQ_INIT(&dl->ops);
    TAILQ_INIT(&dl->queue);
    STAILQ_INIT(&dl->spare);
    ev_init(&dl->pump, on_pump);
    dl->pump.data = dl;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    dl->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)dl ^
              (uint64_t)getpid();
    *out = dl;
    return 0;
}

void dl_free(struct dl *dl)
{
    if (!dl)
        return;
    struct dl_op *op;
    while ((op = TAILQ_FIRST(&dl->ops)))
        op_end(op);
    ev_timer_stop(dl->loop, &dl->pump);
    if (dl->depth > 0) {
        dl->free_requested = true;
        return;
    }
    dl_destroy(dl);
}

int dl_text(struct dl *dl, const struct dl_request *req, size_t max_body, dl_text_cb cb, void *arg,
            struct dl_op **out, struct mm_error *err)
{
    if (!dl || !req || !cb || max_body == 0 || max_body > SIZE_MAX - TEXT_HELD_SLACK)
        return mm_error_set(err, -EINVAL, "%s: a request without %s",
                            req && req->what ? req->what : "download",
                            !cb ? "a callback" : "a body bound");
    struct dl_op *op = op_new(dl, 1, arg);
    if (!op)
        return mm_error_set(err, -ENOMEM, "%s: out of memory", req->what ? req->what : "download");
    int rc = xfer_init(&op->x[0], req, err);
    if (rc < 0) {
        op_free(op);
        return rc;
    }
    op->max_body = max_body;
    op->text_cb = cb;
    op_start(op, out);
    return 0;
}

/* rel: '/'-separated components, none empty, "." or "..", no leading '/', each a name. */
static bool rel_ok(const char *rel)
{
    if (!rel || !*rel || *rel == '/')
        return false;
    const char *p = rel;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len > NAME_MAX || (len == 1 && p[0] == '.') ||
            (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

int dl_files(struct dl *dl, int dirfd, const struct dl_file *files, size_t n,
             dl_progress_cb progress, dl_files_cb cb, void *arg, struct dl_op **out,
             struct mm_error *err)
{
    if (!dl || !cb || n == 0 || !files)
        return mm_error_set(err, -EINVAL, "download: no files to download");
    struct stat st;
    if (fstat(dirfd, &st) < 0 || !S_ISDIR(st.st_mode))
        return mm_error_set(err, -EINVAL, "%s: the download directory is not an open directory",
                            files[0].req.what ? files[0].req.what : "download");
    struct dl_op *op = op_new(dl, n, arg);
    if (!op)
        return mm_error_set(err, -ENOMEM, "download: out of memory");
    op->files_job = true;
    op->dirfd = dirfd;
    op->dev = st.st_dev;
    op->progress = progress;
    op->files_cb = cb;
    op->last_progress = ev_now(dl->loop);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const struct dl_file *f = &files[i];
        struct xfer *x = &op->x[i];
        const char *what = f->req.what ? f->req.what : "download";
        if (!rel_ok(f->rel)) {
            rc = mm_error_set(err, -EINVAL, "%s: refused file name '%.100s'", what,
                              f->rel ? f->rel : "");
            goto fail;
        }
        size_t md5_len = f->md5_hex ? strlen(f->md5_hex) : 0;
        if (md5_len) {
            bool hexok = md5_len == 32;
            for (size_t k = 0; hexok && k < 32; k++)
                hexok = isxdigit((unsigned char)f->md5_hex[k]);
            if (!hexok) {
                rc = mm_error_set(err, -EINVAL, "%s: an MD5 that is not 32 hex digits", what);
                goto fail;
            }
            for (size_t k = 0; k < 32; k++)
                x->md5[k] = (char)tolower((unsigned char)f->md5_hex[k]);
        }
        if ((rc = xfer_init(x, &f->req, err)) < 0)
            goto fail;
        x->rel = strdup(f->rel);
        if (!x->rel) {
            rc = mm_error_set(err, -ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        const char *slash = strrchr(x->rel, '/');
        x->base = slash ? slash + 1 : x->rel;
        if (asprintf(&x->tmp, ".%s.part", x->base) < 0) {
            x->tmp = NULL;
            rc = mm_error_set(err, -ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        x->size = f->size;
        if (f->size != UINT64_MAX)
            op->total += f->size;
    }
    op_start(op, out);
    return 0;
fail:
    op_free(op);
    return rc;
}

void dl_cancel(struct dl_op *op)
{
    if (op)
        op_end(op);
}

void dl_test_slow_writer(struct dl *dl, unsigned us)
{
    dl->test_delay_us = us;
}

unsigned long dl_test_pauses(const struct dl *dl)
{
    return dl->pauses;
}
