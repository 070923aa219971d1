/* storage.h - models from shared storage into the node's cache dir, where its runtime loads
 * them. Providers sit behind this one interface; the first is pvc (a directory the node can
 * read, a PersistentVolumeClaim mounted at models_root); s3, gcs, azure and http(s) follow.
 *
 * A fetch materializes one model (a file or a directory tree) under cache_dir, in a directory
 * of its own whose name the module derives from the model id (ids may be "." or ".." or hold
 * any printable byte but '/' and space: the name is encoded, never the raw id) plus a sequence
 * number, so that a reload of the same id while the old copy is still being released never
 * collides: local_path = <cache_dir, absolute>/mm-<encoded id>.<seq>/<last component of the
 * storage path>, a regular file or a directory (files 0600, directories 0700: the runtime runs
 * as the node's user). The runtime is handed that path; runtimes refuse paths outside their
 * models dir, so the runtime's --models-dir is the node's cache_dir.
 *
 * Bytes from outside are bounded: a storage path is relative, resolved beneath its root
 * (openat2 RESOLVE_BENEATH, Linux 5.6+) so that nothing leads out of it: "..", absolute paths
 * and a path naming the root itself are refused before any I/O, a symbolic link pointing out
 * while copying (one pointing inside the root is followed); FIFOs, devices and sockets are
 * refused without being opened; each message names the model and the path. A model bigger
 * than max_model_bytes (counted as read: a file growing meanwhile is caught), with more than
 * max_files files and directories or nested deeper than max_depth directories (the model's
 * own counts as one), is refused while it is being copied; a failed or cancelled copy is
 * removed before its callback (or, cancelled, its end) comes.
 *
 * Owns: its fetches in flight and the threads (pool.h) that copy files, so the loop never
 * blocks on a disk. Threading: every call and callback on the loop thread.
 * Lifetime: a fetch calls back exactly once unless cancelled first (then never); its handle is
 * valid until its callback starts. storage_free cancels every fetch (no callback runs after),
 * waits for the copying threads, and removes the partial copies and the releases still queued;
 * models fetched and not released stay on disk (the runtime may hold them) until the next
 * storage_new on that cache dir. The storage may be freed from inside a fetch's callback. */
#ifndef MM_STORAGE_H
#define MM_STORAGE_H

#include <stdint.h>

#include "mm/error.h"

struct ev_loop;
struct storage;
struct storage_fetch;

struct storage_config {
    const char *cache_dir;    /* required: created if missing (0700); the runtime's models dir */
    const char *models_root;  /* the pvc provider's root; NULL = pvc paths are refused */
    uint64_t max_model_bytes; /* 0 = 64 GiB */
    uint32_t max_files;       /* files and directories in one model; 0 = 10,000 */
    uint32_t max_depth;       /* directories nested, the model's own included; 0 = 16 */
    unsigned threads;         /* copying threads; 0 = 2 */
};

/* What to fetch: the model record's storage fields (records.h model_record). */
struct storage_model {
    const char *model_id;     /* required */
    const char *storage_key;  /* NULL or "" = the default provider (pvc, for now) */
    const char *storage_path; /* required: relative to the provider's root */
};

/* status 0: local_path (NUL-terminated, valid during the call) holds the model, disk_bytes
 * its size on disk (the sum of its regular files), err->code 0. Else a negative errno and err
 * naming the model and the path: -ENOENT (not in storage), -EACCES (not readable), -EINVAL (a
 * path that leaves its root, or of a kind that cannot be a model: a FIFO, a device, a socket),
 * -EFBIG (over max_model_bytes, max_files or max_depth), -ENOSPC (cache dir full), -EIO. err
 * is valid during the call. */
typedef void (*storage_fetch_cb)(int status, const struct mm_error *err, const char *local_path,
                                 uint64_t disk_bytes, void *arg);

/* Create the cache dir if needed (parents too) and remove what an earlier run left in it (the
 * runtime was purged at start: nothing there is in use): every entry named mm-*, and nothing
 * else, so that a mistaken --cache-dir costs no one's files. The models root, if given, must
 * exist and not be the cache dir or inside it (-EINVAL). 0, or -errno with err naming the
 * directory (-ENOSYS: the kernel lacks openat2). */
int storage_new(struct ev_loop *loop, const struct storage_config *cfg, struct storage **out,
                struct mm_error *err);
/* NULL is ignored. See the lifetime rule above. */
void storage_free(struct storage *st);

/* Start fetching m. 0 and *out (may be NULL if never cancelled); or -EINVAL (a required field
 * missing, a path refused before any I/O: err says which) / -ENOMEM, and cb never runs. */
int storage_fetch(struct storage *st, const struct storage_model *m, storage_fetch_cb cb,
                  void *arg, struct storage_fetch **out, struct mm_error *err);
/* Its callback never runs; the partial copy is removed. NULL is ignored. */
void storage_fetch_cancel(struct storage_fetch *f);

/* Remove a fetched model (local_path exactly as the fetch gave it: its whole mm-* directory),
 * off the loop. A path that is not one of this storage's fetches not yet released is refused
 * (-EINVAL): nothing outside cache_dir is ever removed. 0 or -EINVAL / -ENOMEM. */
int storage_release(struct storage *st, const char *local_path);

#endif
