/* storage.c - models from storage into the node's cache dir (see storage.h): the interface,
 * the cache dir's names and removal, the dispatch of a model to its storage (stcfg.h), the
 * pvc provider and the object stores' (remote.h) fetch directories, progress and logs.
 *
 * pvc (and no storage config: the models root) is linked, not copied: on a pool thread the
 * model is walked beneath its root with openat2 RESOLVE_BENEATH (kinds, sizes, counts, depth;
 * neither ".." nor a symbolic link, however placed, leads out), then its real path is read
 * from the descriptor and a symbolic link to it made in the fetch directory. The runtime reads
 * the pvc through that link, which is why its models dirs include the models root.
 *
 * Object stores: the fetch directory is made on the loop and its descriptor handed to the
 * provider; when the provider is done, a pool thread walks what it wrote (no symbolic link
 * allowed, the same bounds) or removes it, and the fetch's callback runs from that job's done,
 * never from inside a provider's callback. Progress is delivered and logged from a 250 ms
 * timer, so that a progress callback may cancel its fetch or free the storage. */
#include "mm/storage.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mm/download.h"
#include "mm/log.h"
#include "mm/metrics.h"
#include "mm/pool.h"
#include "mm/remote.h"

#define DEFAULT_MAX_BYTES (64ull << 30)
#define DEFAULT_MAX_FILES 10000u
#define DEFAULT_MAX_DEPTH 16u
#define DEFAULT_THREADS 2u
#define NAME_PREFIX "mm-"   /* every entry of ours in the cache dir; nothing else is removed */
#define ENC_MAX 160         /* encoded id kept in a directory name; longer ones are hashed */
#define NAME_TRIES 64       /* sequence numbers tried when a name is taken */
#define REMOVE_MAX_DEPTH 64 /* nesting removal descends into */
#define QUOTE_MAX 72        /* bytes of an id or a path quoted in a message */
#define TICK_S 0.25         /* progress delivered at most this often */
#define LOG_EVERY_S 5.0     /* a pull's progress logged this often, once it has taken this long */
#define LOCATION_MAX 200

static const struct remote_provider *const providers[] = {&remote_s3, &remote_gcs,
                                                          &remote_azure, &remote_http};
#define N_PROVIDERS (sizeof(providers) / sizeof(providers[0]))

/* A model handed out by a fetch, until released. */
struct fetched {
    struct fetched *next;
    char *local_path;
    char *dir_name; /* its directory in the cache dir */
};

/* A model directory being removed on a pool thread. */
struct removal {
    struct storage *st;
    struct removal *prev, *next;
    char dir_name[NAME_MAX + 1];
};

enum phase {
    PH_JOB,     /* on the pool: a pvc walk and link, or an object store's finish */
    PH_PULLING, /* the provider downloads into dirfd */
    PH_DEFER,   /* the finish could not be queued: done inline from a timer */
};

struct storage_fetch {
    struct storage *st;
    struct storage_fetch *prev, *next;
    enum phase phase;
    bool remote;
    bool dead;             /* cancelled during a progress dispatch: freed after it */
    struct pool_job *job;  /* PH_JOB: NULL once its done has started */
    atomic_bool cancelled; /* set on the loop, read by the pool thread */
    storage_fetch_cb cb;
    void *arg;
    storage_progress_cb progress;
    void *progress_arg;
    char *model_id;
    char *path;       /* normalized: components joined by one '/', none "." */
    const char *base; /* its last component (inside path) */
    char key[254];    /* the storage key, for messages */
    char pvc[NAME_MAX + 1]; /* pvc: the claim's name; "" = the models root itself */
    char location[LOCATION_MAX]; /* s3://bucket/path, for logs */
    /* an object store's pull */
    size_t provider;
    void *pull;
    int dirfd;
    uint64_t done, total;
    bool changed;
    double started, last_log;
    uint64_t last_log_bytes;
    ev_timer defer;
    /* Written by the pool thread, read on the loop after its done. */
    int status;
    struct mm_error err;
    char dir_name[NAME_MAX + 1];
    char local_path[PATH_MAX];
    uint64_t disk_bytes;
};

struct storage {
    struct ev_loop *loop;
    struct pool *pool;
    int cache_fd;
    int root_fd;              /* -1: no models root, pvc paths refused */
    char cache_dir[PATH_MAX]; /* absolute, symlinks resolved */
    char models_root[PATH_MAX];
    uint64_t max_bytes;
    uint32_t max_files, max_depth;
    stcfg_lookup_fn lookup;
    void *lookup_arg;
    struct dl *dl; /* NULL: object stores refused */
    void *state[N_PROVIDERS];
    bool opened[N_PROVIDERS];
    ev_timer tick;
    unsigned pulling;     /* fetches in PH_PULLING */
    bool dispatching;     /* inside the tick's callbacks */
    bool free_requested;  /* storage_free called meanwhile */
    atomic_uint_fast64_t seq; /* directory names */
    struct storage_fetch *fetches;
    struct removal *removals;
    struct fetched *fetched;
    struct metric *pulled; /* mm_storage_pulled_bytes_total; NULL: metrics off */
};

/* ---- names and messages ---- */

static const char *quote(char *out, size_t size, const char *s)
{
    mm_log_escape(out, size, s, strlen(s));
    return out;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* "mm-" + the id with bytes outside [A-Za-z0-9_.-] as %XX (so never "." or "..", never a '/'),
 * cut and hashed past ENC_MAX ('~' never appears otherwise) + "." + seq: the last '.' always
 * starts the sequence number, and the encoding is one-to-one below the cut. */
static void dir_name_for(char *out, size_t size, const char *id, uint64_t seq)
{
    static const char hex[] = "0123456789ABCDEF";
    char enc[ENC_MAX + 1];
    size_t n = 0;
    bool cut = false;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-';
        if (n + (plain ? 1 : 3) > ENC_MAX - 17) {
            cut = true;
            break;
        }
        if (plain) {
            enc[n++] = (char)*p;
        } else {
            enc[n++] = '%';
            enc[n++] = hex[*p >> 4];
            enc[n++] = hex[*p & 15];
        }
    }
    if (cut)
        n += (size_t)snprintf(enc + n, sizeof(enc) - n, "~%016llx", (unsigned long long)fnv1a(id));
    enc[n] = '\0';
    snprintf(out, size, NAME_PREFIX "%s.%llu", enc, (unsigned long long)seq);
}

/* Split a storage path into components without I/O: refuse an absolute path (an object
 * store's path may start with '/': it is dropped), "..", and a path naming the root itself;
 * drop empty and "." components. 0 and a malloc'd normalized path. */
static int normalize(const char *path, bool remote, char **out, struct mm_error *err,
                     const char *id)
{
    char qi[QUOTE_MAX], qp[QUOTE_MAX];
    const char *root = remote ? "its bucket or container" : "the models root";
    if (!path || !path[0])
        return mm_error_set(err, -EINVAL, "model %s: storage path is required",
                            quote(qi, sizeof(qi), id));
    if (path[0] == '/' && !remote)
        return mm_error_set(err, -EINVAL,
                            "model %s: storage path %s: absolute; a path is relative to the "
                            "models root",
                            quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path));
    size_t len = strlen(path);
    if (len >= PATH_MAX)
        return mm_error_set(err, -EINVAL, "model %s: storage path of %zu bytes: longer than %d",
                            quote(qi, sizeof(qi), id), len, PATH_MAX - 1);
    char *norm = malloc(len + 1);
    if (!norm)
        return mm_error_set(err, -ENOMEM, "model %s: out of memory", quote(qi, sizeof(qi), id));
    size_t n = 0;
    for (const char *p = path; *p;) {
        const char *end = strchr(p, '/');
        size_t clen = end ? (size_t)(end - p) : strlen(p);
        if (clen == 2 && p[0] == '.' && p[1] == '.') {
            free(norm);
            return mm_error_set(err, -EINVAL, "model %s: storage path %s: \"..\" leaves %s",
                                quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path), root);
        }
        if (clen > NAME_MAX) {
            free(norm);
            return mm_error_set(err, -EINVAL,
                                "model %s: storage path %s: a component longer than %d bytes",
                                quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path), NAME_MAX);
        }
        if (clen > 0 && !(clen == 1 && p[0] == '.')) {
            if (n)
                norm[n++] = '/';
            memcpy(norm + n, p, clen);
            n += clen;
        }
        p += clen;
        if (*p == '/')
            p++;
    }
    norm[n] = '\0';
    if (n == 0) {
        free(norm);
        return mm_error_set(err, -EINVAL, "model %s: storage path %s names %s itself, not a model",
                            quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path), root);
    }
    *out = norm;
    return 0;
}

/* ---- removal (no symbolic link followed: a link is removed, not what it points to) ---- */

static int remove_tree(int dir_fd, const char *name, unsigned depth)
{
    if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    if (depth > REMOVE_MAX_DEPTH)
        return -ELOOP;
    int rc = 0;
    for (int pass = 0; pass < 3; pass++) {
        int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return errno == ENOENT ? 0 : -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
            return -errno;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            int r = remove_tree(fd, e->d_name, depth + 1);
            if (r < 0 && rc == 0)
                rc = r;
        }
        closedir(d);
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY || rc < 0)
            return rc < 0 ? rc : -errno;
    }
    return -ENOTEMPTY;
}

/* ---- walking a model beneath a root, on a pool thread ---- */

struct walk {
    struct storage_fetch *f;
    const struct storage *st;
    int root_fd;        /* what rel resolves beneath */
    uint64_t resolve;   /* openat2's RESOLVE_* */
    const char *root;   /* "the models root", "pvc 'x'", "the download" for messages */
    uint64_t bytes;
    uint32_t entries;   /* files and directories */
    char rel[PATH_MAX]; /* the entry being looked at, relative to the root */
};

static int walk_fail(struct walk *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* err = "model <id>: storage path <rel>: " + the message. */
static int walk_fail(struct walk *w, int code, const char *fmt, ...)
{
    char what[160], qi[QUOTE_MAX], qp[QUOTE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return mm_error_set(&w->f->err, code, "model %s: storage path %s: %s",
                        quote(qi, sizeof(qi), w->f->model_id), quote(qp, sizeof(qp), w->rel), what);
}

static int open_beneath(int root_fd, const char *rel, int flags, uint64_t resolve)
{
    struct open_how how = {
        /* openat2 takes no flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC with O_PATH */
        .flags = (uint64_t)flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY),
        .resolve = resolve,
    };
    for (int i = 0; i < 8; i++) {
        long fd = syscall(SYS_openat2, root_fd, rel, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno != EAGAIN && errno != EINTR) /* EAGAIN: a rename raced the lookup */
            break;
    }
    return -errno;
}

#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)

static int open_fail(struct walk *w, int rc)
{
    switch (rc) {
    case -ENOENT:
    case -ENOTDIR:
        return walk_fail(w, -ENOENT, "not found beneath %s", w->root);
    case -EXDEV:
        return walk_fail(w, -EINVAL, "leaves %s (a symbolic link out of it)", w->root);
    case -ELOOP:
        return walk_fail(w, -EINVAL, "%s",
                         (w->resolve & RESOLVE_NO_SYMLINKS) ? "a symbolic link in a download"
                                                            : "too many levels of symbolic links");
    case -EACCES:
    case -EPERM:
        return walk_fail(w, -EACCES, "not readable: %s", mm_strerror(rc));
    case -ENAMETOOLONG:
        return walk_fail(w, -EINVAL, "path too long");
    default:
        return walk_fail(w, -EIO, "cannot open: %s", mm_strerror(rc));
    }
}

static const char *kind_name(mode_t mode)
{
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "a special file";
}

static bool cancelled(const struct walk *w)
{
    return atomic_load_explicit(&w->f->cancelled, memory_order_relaxed);
}

static int walk_fs_fail(struct walk *w, int e)
{
    if (e == ENOSPC || e == EDQUOT)
        return walk_fail(w, -ENOSPC, "cache dir %.80s full", w->st->cache_dir);
    return walk_fail(w, -EIO, "in the cache dir: %s", strerror(e));
}

static int walk_entry(struct walk *w, unsigned depth);

static int walk_dir(struct walk *w, unsigned depth)
{
    if (depth > w->st->max_depth)
        return walk_fail(w, -EFBIG, "nested deeper than %u directories", w->st->max_depth);
    int in = open_beneath(w->root_fd, w->rel, O_RDONLY | O_DIRECTORY, w->resolve);
    if (in < 0)
        return open_fail(w, in);
    DIR *d = fdopendir(in);
    if (!d) {
        close(in);
        return walk_fail(w, -EIO, "opendir: %s", strerror(errno));
    }
    int rc = 0;
    size_t len = strlen(w->rel);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                rc = walk_fail(w, -EIO, "readdir: %s", strerror(errno));
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t nlen = strlen(e->d_name);
        if (len + 1 + nlen >= sizeof(w->rel)) {
            rc = walk_fail(w, -EFBIG, "a path inside longer than %zu bytes", sizeof(w->rel) - 1);
            break;
        }
        w->rel[len] = '/';
        memcpy(w->rel + len + 1, e->d_name, nlen + 1);
        rc = walk_entry(w, depth + 1);
        if (rc < 0)
            break;
        w->rel[len] = '\0';
    }
    closedir(d);
    return rc;
}

/* w->rel names the entry; depth counts the directories from the model's top to it. Sizes are
 * read from the inode (st_size): nothing is read, the runtime reads. */
static int walk_entry(struct walk *w, unsigned depth)
{
    if (cancelled(w))
        return -ECANCELED;
    if (++w->entries > w->st->max_files)
        return walk_fail(w, -EFBIG, "more than %u files and directories", w->st->max_files);
    /* O_PATH: looking at what the entry is opens nothing (a FIFO, a device) for real. */
    int fd = open_beneath(w->root_fd, w->rel, O_PATH, w->resolve);
    if (fd < 0)
        return open_fail(w, fd);
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) < 0) {
        rc = walk_fail(w, -EIO, "stat: %s", strerror(errno));
    } else if (S_ISREG(sb.st_mode)) {
        if ((uint64_t)sb.st_size > w->st->max_bytes - w->bytes)
            rc = walk_fail(w, -EFBIG, "larger than %llu bytes",
                           (unsigned long long)w->st->max_bytes);
        else
            w->bytes += (uint64_t)sb.st_size;
    } else if (S_ISDIR(sb.st_mode)) {
        rc = walk_dir(w, depth);
    } else {
        rc = walk_fail(w, -EINVAL, "%s cannot be a model or part of one", kind_name(sb.st_mode));
    }
    close(fd);
    return rc;
}

/* Make the fetch's directory mm-<enc id>.<seq> in the cache dir: 0 and f->dir_name, or -errno. */
static int make_fetch_dir(struct storage *st, struct storage_fetch *f)
{
    int rc = -EEXIST;
    for (int i = 0; i < NAME_TRIES && rc == -EEXIST; i++) {
        dir_name_for(f->dir_name, sizeof(f->dir_name), f->model_id, atomic_fetch_add(&st->seq, 1));
        rc = mkdirat(st->cache_fd, f->dir_name, 0700) == 0 ? 0 : -errno;
    }
    if (rc < 0)
        f->dir_name[0] = '\0';
    return rc;
}

static int set_local_path(struct walk *w)
{
    struct storage_fetch *f = w->f;
    int n = snprintf(f->local_path, sizeof(f->local_path), "%s/%s/%s", w->st->cache_dir,
                     f->dir_name, f->base);
    if (n < 0 || (size_t)n >= sizeof(f->local_path))
        return walk_fail(w, -EINVAL, "the local path would exceed %d bytes", PATH_MAX - 1);
    return 0;
}

/* pvc (or the models root): walk the model, then link it from a fetch directory. */
static void pvc_work(void *arg)
{
    struct storage_fetch *f = arg;
    struct storage *st = f->st;
    struct walk *w = calloc(1, sizeof(*w));
    char qn[QUOTE_MAX], root_name[QUOTE_MAX + 8];
    if (!w) {
        f->status = mm_error_set(&f->err, -EIO, "storage: out of memory");
        return;
    }
    w->f = f;
    w->st = st;
    w->root_fd = st->root_fd;
    w->resolve = BENEATH;
    w->root = "the models root";
    int pvc_fd = -1, model_fd = -1, dir = -1, rc = 0;
    if (f->pvc[0]) {
        snprintf(root_name, sizeof(root_name), "pvc %s", quote(qn, sizeof(qn), f->pvc));
        w->root = root_name;
        pvc_fd = open_beneath(st->root_fd, f->pvc, O_PATH | O_DIRECTORY, BENEATH);
        if (pvc_fd < 0) {
            snprintf(w->rel, sizeof(w->rel), "%s", f->path);
            rc = mm_error_set(&f->err, pvc_fd == -EXDEV ? -EINVAL : -ENOENT,
                              "model %s: pvc %s: %s at %.80s/%s",
                              quote(qn, sizeof(qn), f->model_id), f->pvc,
                              pvc_fd == -EXDEV ? "leaves the models root" : "not mounted",
                              st->models_root, f->pvc);
            goto out;
        }
        w->root_fd = pvc_fd;
    }
    snprintf(w->rel, sizeof(w->rel), "%s", f->path);
    if ((rc = walk_entry(w, 1)) < 0)
        goto out;
    /* The model's real path, from the descriptor the walk was made beneath. */
    char proc[64], real[PATH_MAX];
    model_fd = open_beneath(w->root_fd, f->path, O_PATH, w->resolve);
    if (model_fd < 0) {
        rc = open_fail(w, model_fd);
        goto out;
    }
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", model_fd);
    ssize_t n = readlink(proc, real, sizeof(real) - 1);
    size_t rl = strlen(st->models_root);
    if (n <= 0 || (size_t)n >= sizeof(real) - 1) {
        rc = walk_fail(w, -EIO, "cannot read its real path: %s", n < 0 ? strerror(errno) : "long");
        goto out;
    }
    real[n] = '\0';
    if (strncmp(real, st->models_root, rl) != 0 || (real[rl] != '/' && rl != 1)) {
        rc = walk_fail(w, -EINVAL, "leaves %s (its real path is elsewhere)", w->root);
        goto out;
    }
    if ((rc = make_fetch_dir(st, f)) < 0) {
        rc = walk_fs_fail(w, -rc);
        goto out;
    }
    dir = openat(st->cache_fd, f->dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0 || symlinkat(real, dir, f->base) < 0) {
        rc = walk_fs_fail(w, errno);
        goto out;
    }
    if ((rc = set_local_path(w)) < 0)
        goto out;
    f->disk_bytes = w->bytes;
out:
    if (rc < 0 && f->dir_name[0]) {
        remove_tree(st->cache_fd, f->dir_name, 0);
        f->dir_name[0] = '\0';
    }
    if (dir >= 0)
        close(dir);
    if (model_fd >= 0)
        close(model_fd);
    if (pvc_fd >= 0)
        close(pvc_fd);
    f->status = rc;
    free(w);
}

/* An object store's pull ended: walk what it wrote (sizes, counts, kinds, no link), or remove
 * it after a failure. */
static void remote_finish_work(void *arg)
{
    struct storage_fetch *f = arg;
    struct storage *st = f->st;
    if (f->status == 0) {
        struct walk *w = calloc(1, sizeof(*w));
        int dir = openat(st->cache_fd, f->dir_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (!w || dir < 0) {
            f->status = mm_error_set(&f->err, -EIO, "storage: %s",
                                     w ? strerror(errno) : "out of memory");
        } else {
            w->f = f;
            w->st = st;
            w->root_fd = dir;
            w->resolve = BENEATH | RESOLVE_NO_SYMLINKS;
            w->root = "the download";
            snprintf(w->rel, sizeof(w->rel), "%s", f->base);
            f->status = walk_entry(w, 1);
            if (f->status == -ENOENT) /* the provider said done and wrote nothing */
                f->status = walk_fail(w, -EIO, "the download holds nothing");
            if (f->status == 0)
                f->status = set_local_path(w);
            f->disk_bytes = w->bytes;
        }
        if (dir >= 0)
            close(dir);
        free(w);
    }
    if (f->status < 0 && f->dir_name[0]) {
        remove_tree(st->cache_fd, f->dir_name, 0);
        f->dir_name[0] = '\0';
    }
}

/* ---- removal jobs ---- */

static void removal_work(void *arg)
{
    struct removal *r = arg;
    remove_tree(r->st->cache_fd, r->dir_name, 0);
}

static void removal_done(int status, void *arg)
{
    struct removal *r = arg;
    struct storage *st = r->st;
    if (r->prev)
        r->prev->next = r->next;
    else
        st->removals = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (status == -ECANCELED) /* dropped by storage_free: removed now, the loop is stopping */
        remove_tree(st->cache_fd, r->dir_name, 0);
    free(r);
}

/* Remove a model directory off the loop (on it when the pool no longer takes jobs). */
static void remove_later(struct storage *st, const char *dir_name)
{
    struct removal *r = calloc(1, sizeof(*r));
    if (r) {
        r->st = st;
        snprintf(r->dir_name, sizeof(r->dir_name), "%s", dir_name);
    }
    if (!r || pool_submit(st->pool, removal_work, removal_done, r, NULL) < 0) {
        remove_tree(st->cache_fd, dir_name, 0);
        free(r);
        return;
    }
    r->next = st->removals;
    if (r->next)
        r->next->prev = r;
    st->removals = r;
}

/* ---- fetches, on the loop ---- */

static void fetch_unlink(struct storage_fetch *f)
{
    struct storage *st = f->st;
    if (f->prev)
        f->prev->next = f->next;
    else
        st->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

static void fetch_link(struct storage *st, struct storage_fetch *f)
{
    f->next = st->fetches;
    if (f->next)
        f->next->prev = f;
    st->fetches = f;
}

static void fetch_free(struct storage_fetch *f)
{
    free(f->model_id);
    free(f->path);
    free(f);
}

static void rate_text(char *out, size_t size, double bytes_per_s)
{
    double r = bytes_per_s / 1e6;
    snprintf(out, size, r < 10 ? "%.1f MB/s" : "%.0f MB/s", r);
}

static void mb(char *out, size_t size, uint64_t bytes)
{
    snprintf(out, size, "%.1f", (double)bytes / 1e6);
}

static void fetch_done(int status, void *arg)
{
    struct storage_fetch *f = arg;
    struct storage *st = f->st;
    f->job = NULL;
    fetch_unlink(f);
    if (status == -ECANCELED) { /* never ran: a pvc fetch has nothing on disk, a download has */
        if (f->dir_name[0])
            remove_later(st, f->dir_name);
        fetch_free(f);
        return;
    }
    if (atomic_load(&f->cancelled)) { /* finished before it saw the flag */
        if (f->dir_name[0])
            remove_later(st, f->dir_name);
        fetch_free(f);
        return;
    }
    if (f->status == 0) {
        struct fetched *m = calloc(1, sizeof(*m));
        if (m && (m->local_path = strdup(f->local_path)) && (m->dir_name = strdup(f->dir_name))) {
            m->next = st->fetched;
            st->fetched = m;
        } else {
            if (m) {
                free(m->local_path);
                free(m);
            }
            remove_later(st, f->dir_name);
            char qi[QUOTE_MAX];
            f->status = mm_error_set(&f->err, -ENOMEM, "model %s: out of memory",
                                     quote(qi, sizeof(qi), f->model_id));
        }
    }
    double took = ev_now(st->loop) - f->started;
    if (f->remote && f->status == 0 && took >= LOG_EVERY_S) {
        char qi[QUOTE_MAX], rate[32];
        rate_text(rate, sizeof(rate), (double)f->disk_bytes / took);
        mm_log(MM_LOG_INFO, "storage", "pulled %s from %s: %.1f MB in %.1f s, %s",
               quote(qi, sizeof(qi), f->model_id), f->location, (double)f->disk_bytes / 1e6, took,
               rate);
    }
    /* The last progress (the last bytes arrived after the tick's last look), from here: not
     * inside the provider. Like the tick, it may cancel the fetch or free the storage. */
    if (f->status == 0 && f->progress && f->changed) {
        f->changed = false;
        st->dispatching = true;
        f->progress(f->done, f->total, f->progress_arg);
        st->dispatching = false;
        if (st->free_requested) { /* the model stays, as every fetched one, for the next run */
            fetch_free(f);
            storage_free(st);
            return;
        }
        if (atomic_load(&f->cancelled)) {
            storage_release(st, f->local_path);
            fetch_free(f);
            return;
        }
    }
    if (f->status == 0)
        mm_error_clear(&f->err);
    if (f->status == 0 && f->remote)
        metric_add(st->pulled, METRIC_MODEL_OTHER, 0, 0, f->disk_bytes);
    /* Nothing of st is touched after the callback: it may free the storage. */
    f->cb(f->status, &f->err, f->status == 0 ? f->local_path : NULL,
          f->status == 0 ? f->disk_bytes : 0, f->arg);
    fetch_free(f);
}

static void defer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct storage_fetch *f = t->data;
    ev_timer_stop(loop, t);
    remote_finish_work(f); /* on the loop: the pool refused the job (out of memory) */
    fetch_done(0, f);
}

/* The provider is done with the pull (ended, or cancelled). */
static void pull_end(struct storage_fetch *f)
{
    f->pull = NULL;
    f->st->pulling--;
    if (f->dirfd >= 0)
        close(f->dirfd);
    f->dirfd = -1;
}

/* The pull is over (status < 0: failed with err): the rest on a pool thread. */
static void pull_over(struct storage_fetch *f, int status, const struct mm_error *err)
{
    struct storage *st = f->st;
    pull_end(f);
    f->status = status;
    if (status < 0 && err && err != &f->err)
        f->err = *err;
    else if (status < 0 && !err)
        mm_error_set(&f->err, status, "model %s: pull failed", f->model_id);
    f->phase = PH_JOB;
    if (pool_submit(st->pool, remote_finish_work, fetch_done, f, &f->job) < 0) {
        f->job = NULL;
        f->phase = PH_DEFER;
        ev_timer_init(&f->defer, defer_cb, 0., 0.);
        f->defer.data = f;
        ev_timer_start(st->loop, &f->defer);
    }
}

static void on_pulled(int status, const struct mm_error *err, uint64_t bytes, void *arg)
{
    struct storage_fetch *f = arg;
    char qi[QUOTE_MAX];
    if (status == 0 && bytes > f->st->max_bytes) {
        struct mm_error big;
        mm_error_set(&big, -EFBIG, "model %s: %s: larger than %llu bytes",
                     quote(qi, sizeof(qi), f->model_id), f->location,
                     (unsigned long long)f->st->max_bytes);
        pull_over(f, -EFBIG, &big);
        return;
    }
    pull_over(f, status, err);
}

static void on_pull_progress(uint64_t done, uint64_t total, void *arg)
{
    struct storage_fetch *f = arg;
    if (done != f->done || total != f->total) {
        f->done = done;
        f->total = total;
        f->changed = true;
    }
}

/* Stop a pull: no callback of the provider after. */
static void pull_stop(struct storage_fetch *f)
{
    providers[f->provider]->cancel(f->pull);
    pull_end(f);
}

/* Every TICK_S while pulls run: progress to the callbacks, over-size pulls stopped, logs. */
static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct storage *st = t->data;
    double now = ev_now(loop);
    st->dispatching = true;
    for (struct storage_fetch *f = st->fetches; f && !st->free_requested; f = f->next) {
        if (f->dead || f->phase != PH_PULLING)
            continue;
        char qi[QUOTE_MAX];
        if (f->done > st->max_bytes || (f->total > st->max_bytes && f->total != UINT64_MAX)) {
            struct mm_error big;
            mm_error_set(&big, -EFBIG, "model %s: %s: larger than %llu bytes",
                         quote(qi, sizeof(qi), f->model_id), f->location,
                         (unsigned long long)st->max_bytes);
            providers[f->provider]->cancel(f->pull);
            pull_over(f, -EFBIG, &big);
            continue;
        }
        if (now - f->started >= LOG_EVERY_S && now - f->last_log >= LOG_EVERY_S) {
            char d[32], tot[32];
            mb(d, sizeof(d), f->done);
            mb(tot, sizeof(tot), f->total);
            char rate[32];
            rate_text(rate, sizeof(rate),
                      (double)(f->done - f->last_log_bytes) / (now - f->last_log));
            mm_log(MM_LOG_INFO, "storage", "pulling %s from %s: %s/%s MB, %s",
                   quote(qi, sizeof(qi), f->model_id), f->location, d, f->total ? tot : "?",
                   rate);
            f->last_log = now;
            f->last_log_bytes = f->done;
        }
        if (f->changed && f->progress) {
            f->changed = false;
            f->progress(f->done, f->total, f->progress_arg);
        }
    }
    st->dispatching = false;
    if (st->free_requested) {
        storage_free(st);
        return;
    }
    for (struct storage_fetch *f = st->fetches, *next; f; f = next) {
        next = f->next;
        if (f->dead) {
            fetch_unlink(f);
            fetch_free(f);
        }
    }
    if (st->pulling == 0)
        ev_timer_stop(loop, t);
}

/* "s3://bucket/path" etc.: where a model is, for logs and messages (no credential: an http
 * url loses its user info and query). */
static void make_location(char *out, size_t size, const char *type, const cJSON *cfg,
                          const char *path)
{
    const cJSON *b;
#define FIELD(name) \
    ((b = cJSON_GetObjectItemCaseSensitive(cfg, name)) && cJSON_IsString(b) ? b->valuestring : "")
    char tmp[LOCATION_MAX * 2];
    if (strcmp(type, "s3") == 0) {
        snprintf(tmp, sizeof(tmp), "s3://%.100s/%s", FIELD("bucket"), path);
    } else if (strcmp(type, "gcs") == 0) {
        snprintf(tmp, sizeof(tmp), "gs://%.100s/%s", FIELD("bucket"), path);
    } else if (strcmp(type, "azure") == 0) {
        char acct[100];
        snprintf(acct, sizeof(acct), "%s", FIELD("account_name"));
        snprintf(tmp, sizeof(tmp), "azure://%s/%.100s/%s", acct, FIELD("container"), path);
    } else {
        const char *url = FIELD("url"), *sep = strstr(url, "://");
        int slen = sep ? (int)(sep + 3 - url) : 0;
        const char *host = url + slen;
        size_t hlen = strcspn(host, "/?#");
        const char *at = memrchr(host, '@', hlen); /* user info: never shown */
        if (at) {
            hlen -= (size_t)(at + 1 - host);
            host = at + 1;
        }
        const char *rest = host + hlen;
        size_t rlen = strcspn(rest, "?#");
        while (rlen && rest[rlen - 1] == '/')
            rlen--;
        snprintf(tmp, sizeof(tmp), "%.*s%.*s%.*s/%s", slen, url, (int)(hlen > 100 ? 100 : hlen),
                 host, (int)(rlen > 100 ? 100 : rlen), rest, path);
    }
#undef FIELD
    mm_log_escape(out, size, tmp, strlen(tmp));
}

static bool pvc_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > NAME_MAX || strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
        return false;
    for (; *n; n++)
        if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
              *n == '-' || *n == '.' || *n == '_'))
            return false;
    return true;
}

int storage_fetch(struct storage *st, const struct storage_model *m, storage_fetch_cb cb, void *arg,
                  struct storage_fetch **out, struct mm_error *err)
{
    char qi[QUOTE_MAX];
    if (!m || !m->model_id || !m->model_id[0])
        return mm_error_set(err, -EINVAL, "storage: model id is required");
    if (!cb)
        return mm_error_set(err, -EINVAL, "storage: a callback is required");
    quote(qi, sizeof(qi), m->model_id);
    struct stcfg sc;
    int rc = stcfg_resolve(m->storage_key, m->storage_params, st->lookup, st->lookup_arg, &sc,
                           err);
    if (rc < 0) {
        mm_error_prefix(err, "model %s: ", qi);
        return rc;
    }
    const cJSON *type = sc.cfg ? cJSON_GetObjectItemCaseSensitive(sc.cfg, "type") : NULL;
    const char *t = type ? type->valuestring : "pvc";
    bool remote = strcmp(t, "pvc") != 0;
    size_t provider = 0;
    const char *pvc = "";
    if (remote) {
        while (provider < N_PROVIDERS && strcmp(providers[provider]->type, t) != 0)
            provider++;
        if (provider == N_PROVIDERS) { /* stcfg knows no other type */
            rc = mm_error_set(err, -EINVAL, "model %s: storage key '%s': unknown type", qi,
                              sc.key);
            goto fail;
        }
        if (!st->dl) {
            rc = mm_error_set(err, -EPROTONOSUPPORT,
                              "model %s: storage key '%s': %s storage, and this storage has no "
                              "HTTP client",
                              qi, sc.key, t);
            goto fail;
        }
    } else {
        if (st->root_fd < 0) {
            rc = mm_error_set(err, -EINVAL,
                              "model %s: no models root is configured for pvc storage paths", qi);
            goto fail;
        }
        if (sc.cfg) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(sc.cfg, "name");
            if (!name) {
                rc = mm_error_set(err, -EINVAL, "model %s: storage key '%s': pvc without a name",
                                  qi, sc.key);
                goto fail;
            }
            if (!pvc_name_ok(name->valuestring)) {
                rc = mm_error_set(err, -EINVAL,
                                  "model %s: storage key '%s': field 'name' is not a pvc name "
                                  "(one path component of [-._a-zA-Z0-9])",
                                  qi, sc.key);
                goto fail;
            }
            pvc = name->valuestring;
        }
    }
    char *norm = NULL;
    if ((rc = normalize(m->storage_path, remote, &norm, err, m->model_id)) < 0)
        goto fail;
    const char *slash = strrchr(norm, '/');
    const char *base = slash ? slash + 1 : norm;
    if (strlen(st->cache_dir) + 2 + NAME_MAX + strlen(base) >= PATH_MAX) {
        free(norm);
        rc = mm_error_set(err, -EINVAL, "model %s: the local path would exceed %d bytes", qi,
                          PATH_MAX - 1);
        goto fail;
    }
    struct storage_fetch *f = calloc(1, sizeof(*f));
    if (!f || !(f->model_id = strdup(m->model_id))) {
        free(f);
        free(norm);
        rc = mm_error_set(err, -ENOMEM, "model %s: out of memory", qi);
        goto fail;
    }
    f->st = st;
    f->path = norm;
    f->base = base;
    f->cb = cb;
    f->arg = arg;
    f->progress = m->progress;
    f->progress_arg = m->progress_arg;
    f->remote = remote;
    f->dirfd = -1;
    f->provider = provider;
    f->started = f->last_log = ev_time(); /* the loop's time may be stale here */
    snprintf(f->key, sizeof(f->key), "%s", sc.key);
    snprintf(f->pvc, sizeof(f->pvc), "%s", pvc);
    atomic_init(&f->cancelled, false);
    if (!remote) {
        f->phase = PH_JOB;
        rc = pool_submit(st->pool, pvc_work, fetch_done, f, &f->job);
        if (rc < 0) {
            fetch_free(f);
            rc = mm_error_set(err, rc, "model %s: cannot queue the fetch: %s", qi,
                              mm_strerror(rc));
            goto fail;
        }
        fetch_link(st, f);
    } else {
        make_location(f->location, sizeof(f->location), t, sc.cfg, norm);
        /* The directory is made here, on the loop: one mkdir. */
        if ((rc = make_fetch_dir(st, f)) < 0 ||
            (f->dirfd = openat(st->cache_fd, f->dir_name,
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
            rc = rc < 0 ? rc : -errno;
            if (f->dir_name[0])
                unlinkat(st->cache_fd, f->dir_name, AT_REMOVEDIR);
            fetch_free(f);
            rc = mm_error_set(err, rc == -EDQUOT ? -ENOSPC : rc,
                              "model %s: cache dir %.80s: cannot make its directory: %s", qi,
                              st->cache_dir, mm_strerror(rc));
            goto fail;
        }
        struct remote_source src = {
            .cfg = sc.cfg, .key = sc.key, .model_id = m->model_id, .path = norm};
        f->phase = PH_PULLING;
        st->pulling++;
        fetch_link(st, f);
        void *pull = NULL;
        rc = providers[provider]->pull(st->state[provider], st->dl, &src, f->dirfd,
                                       on_pull_progress, on_pulled, f, &pull, err);
        if (rc < 0) {
            st->pulling--;
            close(f->dirfd);
            remove_tree(st->cache_fd, f->dir_name, 0); /* empty, or nearly */
            fetch_unlink(f);
            fetch_free(f);
            goto fail;
        }
        if (f->phase == PH_PULLING) /* (not over already) */
            f->pull = pull;
        if (!ev_is_active(&st->tick))
            ev_timer_again(st->loop, &st->tick);
    }
    if (out)
        *out = f;
    stcfg_clear(&sc);
    return 0;
fail:
    stcfg_clear(&sc);
    return rc;
}

void storage_fetch_cancel(struct storage_fetch *f)
{
    if (!f || f->dead)
        return;
    struct storage *st = f->st;
    atomic_store(&f->cancelled, true);
    switch (f->phase) {
    case PH_JOB:
        if (f->job)
            pool_cancel(f->job); /* -EBUSY when running: the thread sees the flag */
        return;
    case PH_PULLING:
        pull_stop(f);
        break;
    case PH_DEFER:
        ev_timer_stop(st->loop, &f->defer);
        break;
    }
    if (f->dir_name[0])
        remove_later(st, f->dir_name);
    if (st->dispatching) {
        f->dead = true; /* the tick frees it */
        return;
    }
    fetch_unlink(f);
    fetch_free(f);
}

int storage_release(struct storage *st, const char *local_path)
{
    if (!local_path)
        return -EINVAL;
    struct fetched **pp = &st->fetched;
    while (*pp && strcmp((*pp)->local_path, local_path) != 0)
        pp = &(*pp)->next;
    if (!*pp)
        return -EINVAL;
    struct fetched *m = *pp;
    remove_later(st, m->dir_name);
    *pp = m->next;
    free(m->local_path);
    free(m->dir_name);
    free(m);
    return 0;
}

/* ---- the storage ---- */

/* mkdir -p, the last component 0700. */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* What an earlier run left: every entry named NAME_PREFIX..., and nothing else. */
static int remove_leftovers(struct storage *st, struct mm_error *err)
{
    int fd = dup(st->cache_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return mm_error_set(err, -e, "storage: cache dir %s: %s", st->cache_dir, strerror(e));
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, NAME_PREFIX, strlen(NAME_PREFIX)) != 0)
            continue;
        int r = remove_tree(st->cache_fd, e->d_name, 0);
        if (r < 0 && rc == 0) {
            char qn[QUOTE_MAX];
            rc = mm_error_set(err, r,
                              "storage: cache dir %s: removing %s left by an earlier run: %s",
                              st->cache_dir, quote(qn, sizeof(qn), e->d_name), mm_strerror(r));
        }
    }
    closedir(d);
    return rc;
}

int storage_new(struct ev_loop *loop, const struct storage_config *cfg, struct storage **out,
                struct mm_error *err)
{
    if (!cfg || !cfg->cache_dir || !cfg->cache_dir[0])
        return mm_error_set(err, -EINVAL, "storage: a cache dir is required");
    unsigned threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    if (threads > POOL_MAX_THREADS)
        return mm_error_set(err, -EINVAL, "storage: threads must be 1..%d (got %u)",
                            POOL_MAX_THREADS, threads);
    struct storage *st = calloc(1, sizeof(*st));
    if (!st)
        return mm_error_set(err, -ENOMEM, "storage: out of memory");
    st->loop = loop;
    st->cache_fd = st->root_fd = -1;
    st->lookup = cfg->lookup;
    st->lookup_arg = cfg->lookup_arg;
    ev_init(&st->tick, tick_cb);
    st->tick.repeat = TICK_S;
    st->tick.data = st;
    st->max_bytes = cfg->max_model_bytes ? cfg->max_model_bytes : DEFAULT_MAX_BYTES;
    st->max_files = cfg->max_files ? cfg->max_files : DEFAULT_MAX_FILES;
    st->max_depth = cfg->max_depth ? cfg->max_depth : DEFAULT_MAX_DEPTH;
    atomic_init(&st->seq, 0);
    char q[QUOTE_MAX * 2];
    struct metric_desc md = {.name = "mm_storage_pulled_bytes_total",
                             .help = "Bytes of models fetched from object stores",
                             .type = METRIC_COUNTER};
    int rc = metrics_register(cfg->metrics, &md, &st->pulled, err);
    if (rc < 0)
        goto fail;
    rc = make_dirs(cfg->cache_dir);
    if (rc < 0) {
        mm_error_set(err, rc, "storage: cache dir %s: cannot create: %s",
                     quote(q, sizeof(q), cfg->cache_dir), mm_strerror(rc));
        goto fail;
    }
    struct stat sb;
    if (!realpath(cfg->cache_dir, st->cache_dir) ||
        (st->cache_fd = open(st->cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
        fstat(st->cache_fd, &sb) < 0) {
        rc = mm_error_set(err, -errno, "storage: cache dir %s: %s",
                          quote(q, sizeof(q), cfg->cache_dir), strerror(errno));
        goto fail;
    }
    if (cfg->models_root && cfg->models_root[0]) {
        if (!realpath(cfg->models_root, st->models_root) ||
            (st->root_fd = open(st->models_root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
            rc = mm_error_set(err, -errno, "storage: models root %s: %s",
                              quote(q, sizeof(q), cfg->models_root), strerror(errno));
            goto fail;
        }
        size_t cl = strlen(st->cache_dir);
        if (strncmp(st->models_root, st->cache_dir, cl) == 0 &&
            (st->models_root[cl] == '/' || st->models_root[cl] == '\0' || cl == 1)) {
            rc = mm_error_set(err, -EINVAL,
                              "storage: models root %s is the cache dir %s or inside it, whose "
                              "entries the node removes",
                              quote(q, sizeof(q), st->models_root), st->cache_dir);
            goto fail;
        }
        int probe = open_beneath(st->root_fd, ".", O_PATH, BENEATH);
        if (probe < 0) {
            rc = mm_error_set(err, probe == -ENOSYS ? -ENOSYS : probe,
                              "storage: models root %s: openat2 (Linux 5.6+), which resolves "
                              "storage paths beneath the root, failed: %s",
                              quote(q, sizeof(q), st->models_root), mm_strerror(probe));
            goto fail;
        }
        close(probe);
    }
    if ((rc = remove_leftovers(st, err)) < 0)
        goto fail;
    if ((rc = pool_new(loop, threads, &st->pool, err)) < 0) {
        mm_error_prefix(err, "storage: ");
        goto fail;
    }
    if (cfg->curl) {
        struct dl_config dc = {.curl = cfg->curl, .max_transfers = cfg->max_transfers};
        if ((rc = dl_new(&dc, &st->dl, err)) < 0) {
            mm_error_prefix(err, "storage: ");
            goto fail;
        }
        for (size_t i = 0; i < N_PROVIDERS; i++) {
            if (providers[i]->open &&
                (rc = providers[i]->open(st->dl, &st->state[i], err)) < 0) {
                mm_error_prefix(err, "storage: %s: ", providers[i]->type);
                goto fail;
            }
            st->opened[i] = true;
        }
    }
    *out = st;
    return 0;
fail:
    storage_free(st);
    return rc;
}

void storage_free(struct storage *st)
{
    if (!st)
        return;
    if (st->dispatching) { /* from a progress callback: the tick frees it when it returns */
        st->free_requested = true;
        return;
    }
    ev_timer_stop(st->loop, &st->tick);
    for (struct storage_fetch *f = st->fetches, *next; f; f = next) {
        next = f->next;
        atomic_store(&f->cancelled, true);
        if (f->phase == PH_JOB && !f->dead)
            continue; /* the pool's done below */
        if (!f->dead && f->phase == PH_PULLING)
            pull_stop(f);
        else if (!f->dead && f->phase == PH_DEFER)
            ev_timer_stop(st->loop, &f->defer);
        if (!f->dead && f->dir_name[0])
            remove_tree(st->cache_fd, f->dir_name, 0);
        fetch_unlink(f);
        fetch_free(f);
    }
    /* Queued jobs are dropped, running walks see the flag and remove what they made; every
     * done runs in here (removals the pool no longer takes run on this thread). */
    pool_free(st->pool);
    while (st->fetched) {
        struct fetched *m = st->fetched;
        st->fetched = m->next;
        free(m->local_path);
        free(m->dir_name);
        free(m);
    }
    for (size_t i = 0; i < N_PROVIDERS; i++)
        if (st->opened[i] && providers[i]->close)
            providers[i]->close(st->state[i]);
    dl_free(st->dl);
    if (st->cache_fd >= 0)
        close(st->cache_fd);
    if (st->root_fd >= 0)
        close(st->root_fd);
    free(st);
}
