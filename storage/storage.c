/* storage.c - models from storage into the node's cache dir (see storage.h): the interface, the
 * cache dir's names and removal, and the pvc provider, which copies a file or a directory tree
 * from beneath the models root on pool threads. Every path from storage is opened with openat2
 * RESOLVE_BENEATH from the root's descriptor, so that neither ".." nor a symbolic link, however
 * placed and whenever swapped in, leads out of the root. */
#include "mm/storage.h"

#include <dirent.h>
#include <errno.h>
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

#include "mm/log.h"
#include "mm/pool.h"

#define DEFAULT_MAX_BYTES (64ull << 30)
#define DEFAULT_MAX_FILES 10000u
#define DEFAULT_MAX_DEPTH 16u
#define DEFAULT_THREADS 2u
#define CHUNK (1u << 20)    /* bytes copied between two looks at the cancel flag */
#define NAME_PREFIX "mm-"   /* every entry of ours in the cache dir; nothing else is removed */
#define ENC_MAX 160         /* encoded id kept in a directory name; longer ones are hashed */
#define NAME_TRIES 64       /* sequence numbers tried when a name is taken */
#define REMOVE_MAX_DEPTH 64 /* nesting removal descends into */
#define QUOTE_MAX 72        /* bytes of an id or a path quoted in a message */

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

struct storage_fetch {
    struct storage *st;
    struct storage_fetch *prev, *next;
    struct pool_job *job;  /* NULL once its done has started */
    atomic_bool cancelled; /* set on the loop, read by the copying thread */
    storage_fetch_cb cb;
    void *arg;
    char *model_id;
    char *path;       /* normalized: components joined by one '/', none "." */
    const char *base; /* its last component (inside path) */
    /* Written by the copying thread, read on the loop after its done. */
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
    atomic_uint_fast64_t seq; /* directory names; taken by the copying threads */
    struct storage_fetch *fetches;
    struct removal *removals;
    struct fetched *fetched;
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

/* Split a storage path into components without I/O: refuse an absolute path, "..", and a path
 * naming the root itself; drop empty and "." components. 0 and a malloc'd normalized path. */
static int normalize(const char *path, char **out, struct mm_error *err, const char *id)
{
    char qi[QUOTE_MAX], qp[QUOTE_MAX];
    if (!path || !path[0])
        return mm_error_set(err, -EINVAL, "model %s: storage path is required",
                            quote(qi, sizeof(qi), id));
    if (path[0] == '/')
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
            return mm_error_set(err, -EINVAL,
                                "model %s: storage path %s: \"..\" leaves the models root",
                                quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path));
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
        return mm_error_set(err, -EINVAL,
                            "model %s: storage path %s names the models root itself, not a model",
                            quote(qi, sizeof(qi), id), quote(qp, sizeof(qp), path));
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

/* ---- the pvc provider, on a copying thread ---- */

struct copy {
    struct storage_fetch *f;
    const struct storage *st;
    uint64_t bytes;
    uint32_t entries;   /* files and directories */
    char *buf;          /* read/write fallback, allocated when first needed */
    char rel[PATH_MAX]; /* the entry being copied, relative to the root */
};

static int copy_fail(struct copy *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* err = "model <id>: storage path <rel>: " + the message. */
static int copy_fail(struct copy *c, int code, const char *fmt, ...)
{
    char what[160], qi[QUOTE_MAX], qp[QUOTE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return mm_error_set(&c->f->err, code, "model %s: storage path %s: %s",
                        quote(qi, sizeof(qi), c->f->model_id), quote(qp, sizeof(qp), c->rel), what);
}

static int open_beneath(int root_fd, const char *rel, int flags)
{
    struct open_how how = {
        /* openat2 takes no flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC with O_PATH */
        .flags = (uint64_t)flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
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

static int open_fail(struct copy *c, int rc)
{
    switch (rc) {
    case -ENOENT:
    case -ENOTDIR:
        return copy_fail(c, -ENOENT, "not found beneath the models root");
    case -EXDEV:
        return copy_fail(c, -EINVAL, "leaves the models root (a symbolic link out of it)");
    case -ELOOP:
        return copy_fail(c, -EINVAL, "too many levels of symbolic links");
    case -EACCES:
    case -EPERM:
        return copy_fail(c, -EACCES, "not readable: %s", mm_strerror(rc));
    case -ENAMETOOLONG:
        return copy_fail(c, -EINVAL, "path too long");
    default:
        return copy_fail(c, -EIO, "cannot open: %s", mm_strerror(rc));
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

static bool cancelled(const struct copy *c)
{
    return atomic_load_explicit(&c->f->cancelled, memory_order_relaxed);
}

static int write_fail(struct copy *c, int e)
{
    if (e == ENOSPC || e == EDQUOT)
        return copy_fail(c, -ENOSPC, "cache dir %.80s full", c->st->cache_dir);
    return copy_fail(c, -EIO, "writing into the cache dir: %s", strerror(e));
}

/* Copy in chunks, looking at the cancel flag and the byte budget between them; the file may
 * grow while it is read, so the budget is enforced on what is read, not on st_size. */
static int copy_data(struct copy *c, int in, int out)
{
    bool plain = false; /* read/write instead of copy_file_range */
    for (;;) {
        if (cancelled(c))
            return -ECANCELED;
        uint64_t room = c->st->max_bytes - c->bytes;
        size_t want = room < CHUNK ? (size_t)room + 1 : CHUNK;
        ssize_t n;
        if (!plain) {
            n = copy_file_range(in, NULL, out, NULL, want, 0);
            if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                          errno == EOPNOTSUPP || errno == EBADF)) {
                plain = true;
                continue;
            }
            if (n < 0 && errno != EINTR && errno != EAGAIN) {
                int e = errno;
                if (e == ENOSPC || e == EDQUOT)
                    return write_fail(c, e);
                return copy_fail(c, -EIO, "copying: %s", strerror(e));
            }
        } else {
            if (!c->buf && !(c->buf = malloc(CHUNK)))
                return copy_fail(c, -EIO, "out of memory");
            n = read(in, c->buf, want);
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                return copy_fail(c, -EIO, "reading: %s", strerror(errno));
            for (ssize_t done = 0; n > 0 && done < n;) {
                ssize_t w = write(out, c->buf + done, (size_t)(n - done));
                if (w < 0 && errno != EINTR)
                    return write_fail(c, errno);
                if (w > 0)
                    done += w;
            }
        }
        if (n == 0)
            return 0;
        if (n < 0)
            continue; /* EINTR / EAGAIN */
        c->bytes += (uint64_t)n;
        if (c->bytes > c->st->max_bytes)
            return copy_fail(c, -EFBIG, "larger than %llu bytes",
                             (unsigned long long)c->st->max_bytes);
    }
}

static int copy_file(struct copy *c, const struct stat *path_st, int dst_dir, const char *dst_name)
{
    if ((uint64_t)path_st->st_size > c->st->max_bytes - c->bytes)
        return copy_fail(c, -EFBIG, "larger than %llu bytes", (unsigned long long)c->st->max_bytes);
    /* O_NONBLOCK: if a FIFO was swapped in since the O_PATH look, opening it must not hang. */
    int in = open_beneath(c->st->root_fd, c->rel, O_RDONLY | O_NONBLOCK);
    if (in < 0)
        return open_fail(c, in);
    struct stat sb;
    int rc = 0, out = -1;
    if (fstat(in, &sb) < 0) {
        rc = copy_fail(c, -EIO, "stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_ino != path_st->st_ino || sb.st_dev != path_st->st_dev) {
        rc = copy_fail(c, -EIO, "changed while it was being copied");
        goto out;
    }
    out = openat(dst_dir, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = write_fail(c, errno);
        goto out;
    }
    rc = copy_data(c, in, out);
    if (close(out) < 0 && rc == 0)
        rc = write_fail(c, errno);
out:
    close(in);
    return rc;
}

static int copy_entry(struct copy *c, int dst_dir, const char *dst_name, unsigned depth);

static int copy_dir(struct copy *c, int dst_dir, const char *dst_name, unsigned depth)
{
    if (depth > c->st->max_depth)
        return copy_fail(c, -EFBIG, "nested deeper than %u directories", c->st->max_depth);
    int in = open_beneath(c->st->root_fd, c->rel, O_RDONLY | O_DIRECTORY);
    if (in < 0)
        return open_fail(c, in);
    DIR *d = fdopendir(in);
    if (!d) {
        close(in);
        return copy_fail(c, -EIO, "opendir: %s", strerror(errno));
    }
    int rc = 0, out = -1;
    if (mkdirat(dst_dir, dst_name, 0700) < 0 ||
        (out = openat(dst_dir, dst_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        rc = write_fail(c, errno);
        goto out;
    }
    size_t len = strlen(c->rel);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                rc = copy_fail(c, -EIO, "readdir: %s", strerror(errno));
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t nlen = strlen(e->d_name);
        if (len + 1 + nlen >= sizeof(c->rel)) {
            rc = copy_fail(c, -EFBIG, "a path inside longer than %zu bytes", sizeof(c->rel) - 1);
            break;
        }
        c->rel[len] = '/';
        memcpy(c->rel + len + 1, e->d_name, nlen + 1);
        rc = copy_entry(c, out, e->d_name, depth + 1);
        if (rc < 0)
            break;
        c->rel[len] = '\0';
    }
out:
    if (out >= 0)
        close(out);
    closedir(d);
    return rc;
}

/* c->rel names the entry; depth counts the directories from the model's top to it. */
static int copy_entry(struct copy *c, int dst_dir, const char *dst_name, unsigned depth)
{
    if (cancelled(c))
        return -ECANCELED;
    if (++c->entries > c->st->max_files)
        return copy_fail(c, -EFBIG, "more than %u files and directories", c->st->max_files);
    /* O_PATH: looking at what the entry is opens nothing (a FIFO, a device) for real. */
    int fd = open_beneath(c->st->root_fd, c->rel, O_PATH);
    if (fd < 0)
        return open_fail(c, fd);
    struct stat sb;
    int rc;
    if (fstat(fd, &sb) < 0)
        rc = copy_fail(c, -EIO, "stat: %s", strerror(errno));
    else if (S_ISREG(sb.st_mode))
        rc = copy_file(c, &sb, dst_dir, dst_name);
    else if (S_ISDIR(sb.st_mode))
        rc = copy_dir(c, dst_dir, dst_name, depth);
    else
        rc = copy_fail(c, -EINVAL, "%s cannot be a model or part of one", kind_name(sb.st_mode));
    close(fd);
    return rc;
}

static void fetch_work(void *arg)
{
    struct storage_fetch *f = arg;
    struct storage *st = f->st;
    struct copy *c = calloc(1, sizeof(*c));
    if (!c) {
        f->status = mm_error_set(&f->err, -EIO, "storage: out of memory");
        return;
    }
    c->f = f;
    c->st = st;
    snprintf(c->rel, sizeof(c->rel), "%s", f->path);
    int rc = -EEXIST;
    for (int i = 0; i < NAME_TRIES && rc == -EEXIST; i++) {
        dir_name_for(f->dir_name, sizeof(f->dir_name), f->model_id, atomic_fetch_add(&st->seq, 1));
        rc = mkdirat(st->cache_fd, f->dir_name, 0700) == 0 ? 0 : -errno;
    }
    if (rc < 0) {
        f->dir_name[0] = '\0';
        f->status = write_fail(c, -rc);
        goto out;
    }
    int dir = openat(st->cache_fd, f->dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0) {
        rc = write_fail(c, errno);
    } else {
        rc = copy_entry(c, dir, f->base, 1);
        close(dir);
    }
    if (rc < 0) {
        remove_tree(st->cache_fd, f->dir_name, 0);
        f->dir_name[0] = '\0';
    } else {
        /* storage_fetch checked that it fits */
        int n = snprintf(f->local_path, sizeof(f->local_path), "%s/%s/%s", st->cache_dir,
                         f->dir_name, f->base);
        if (n < 0 || (size_t)n >= sizeof(f->local_path)) {
            remove_tree(st->cache_fd, f->dir_name, 0);
            f->dir_name[0] = '\0';
            rc = copy_fail(c, -EINVAL, "the local path would exceed %d bytes", PATH_MAX - 1);
        }
        f->disk_bytes = c->bytes;
    }
    f->status = rc;
out:
    free(c->buf);
    free(c);
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
static int remove_later(struct storage *st, const char *dir_name)
{
    struct removal *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->st = st;
    snprintf(r->dir_name, sizeof(r->dir_name), "%s", dir_name);
    if (pool_submit(st->pool, removal_work, removal_done, r, NULL) < 0) {
        remove_tree(st->cache_fd, r->dir_name, 0);
        free(r);
        return 0;
    }
    r->next = st->removals;
    if (r->next)
        r->next->prev = r;
    st->removals = r;
    return 0;
}

/* ---- fetches, on the loop ---- */

static void fetch_free(struct storage_fetch *f)
{
    free(f->model_id);
    free(f->path);
    free(f);
}

static void fetch_done(int status, void *arg)
{
    struct storage_fetch *f = arg;
    struct storage *st = f->st;
    f->job = NULL;
    if (f->prev)
        f->prev->next = f->next;
    else
        st->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
    if (status == -ECANCELED) { /* never ran: cancelled while queued, nothing on disk */
        fetch_free(f);
        return;
    }
    if (atomic_load(&f->cancelled)) { /* finished before it saw the flag */
        if (f->status == 0 && remove_later(st, f->dir_name) < 0)
            remove_tree(st->cache_fd, f->dir_name, 0);
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
            if (remove_later(st, f->dir_name) < 0)
                remove_tree(st->cache_fd, f->dir_name, 0);
            char qi[QUOTE_MAX];
            f->status = mm_error_set(&f->err, -ENOMEM, "model %s: out of memory",
                                     quote(qi, sizeof(qi), f->model_id));
        }
    }
    if (f->status == 0)
        mm_error_clear(&f->err);
    /* Nothing of st is touched after the callback: it may free the storage. */
    f->cb(f->status, &f->err, f->status == 0 ? f->local_path : NULL,
          f->status == 0 ? f->disk_bytes : 0, f->arg);
    fetch_free(f);
}

int storage_fetch(struct storage *st, const struct storage_model *m, storage_fetch_cb cb, void *arg,
                  struct storage_fetch **out, struct mm_error *err)
{
    char qi[QUOTE_MAX], qk[QUOTE_MAX];
    if (!m || !m->model_id || !m->model_id[0])
        return mm_error_set(err, -EINVAL, "storage: model id is required");
    if (!cb)
        return mm_error_set(err, -EINVAL, "storage: a callback is required");
    if (m->storage_key && m->storage_key[0])
        return mm_error_set(
            err, -EINVAL, "model %s: storage key %s: no such provider (only pvc, key \"\")",
            quote(qi, sizeof(qi), m->model_id), quote(qk, sizeof(qk), m->storage_key));
    if (st->root_fd < 0)
        return mm_error_set(err, -EINVAL,
                            "model %s: no models root is configured for pvc storage paths",
                            quote(qi, sizeof(qi), m->model_id));
    char *norm = NULL;
    int rc = normalize(m->storage_path, &norm, err, m->model_id);
    if (rc < 0)
        return rc;
    const char *slash = strrchr(norm, '/');
    const char *base = slash ? slash + 1 : norm;
    if (strlen(st->cache_dir) + 2 + NAME_MAX + strlen(base) >= PATH_MAX) {
        free(norm);
        return mm_error_set(err, -EINVAL, "model %s: the local path would exceed %d bytes",
                            quote(qi, sizeof(qi), m->model_id), PATH_MAX - 1);
    }
    struct storage_fetch *f = calloc(1, sizeof(*f));
    if (!f || !(f->model_id = strdup(m->model_id))) {
        free(f);
        free(norm);
        return mm_error_set(err, -ENOMEM, "model %s: out of memory",
                            quote(qi, sizeof(qi), m->model_id));
    }
    f->st = st;
    f->path = norm;
    f->base = base;
    f->cb = cb;
    f->arg = arg;
    atomic_init(&f->cancelled, false);
    rc = pool_submit(st->pool, fetch_work, fetch_done, f, &f->job);
    if (rc < 0) {
        fetch_free(f);
        return mm_error_set(err, rc, "model %s: cannot queue the copy: %s",
                            quote(qi, sizeof(qi), m->model_id), mm_strerror(rc));
    }
    f->next = st->fetches;
    if (f->next)
        f->next->prev = f;
    st->fetches = f;
    if (out)
        *out = f;
    return 0;
}

void storage_fetch_cancel(struct storage_fetch *f)
{
    if (!f)
        return;
    atomic_store(&f->cancelled, true);
    if (f->job)
        pool_cancel(f->job); /* -EBUSY when copying: the thread sees the flag */
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
    int rc = remove_later(st, m->dir_name);
    if (rc < 0)
        return rc;
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
    st->max_bytes = cfg->max_model_bytes ? cfg->max_model_bytes : DEFAULT_MAX_BYTES;
    st->max_files = cfg->max_files ? cfg->max_files : DEFAULT_MAX_FILES;
    st->max_depth = cfg->max_depth ? cfg->max_depth : DEFAULT_MAX_DEPTH;
    atomic_init(&st->seq, 0);
    char q[QUOTE_MAX * 2];
    int rc = make_dirs(cfg->cache_dir);
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
        int probe = open_beneath(st->root_fd, ".", O_PATH);
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
    for (struct storage_fetch *f = st->fetches; f; f = f->next)
        atomic_store(&f->cancelled, true);
    /* Queued jobs are dropped, running copies see the flag and remove what they wrote; every
     * done runs in here (removals the pool no longer takes run on this thread). */
    pool_free(st->pool);
    while (st->fetched) {
        struct fetched *m = st->fetched;
        st->fetched = m->next;
        free(m->local_path);
        free(m->dir_name);
        free(m);
    }
    if (st->cache_fd >= 0)
        close(st->cache_fd);
    if (st->root_fd >= 0)
        close(st->root_fd);
    free(st);
}
