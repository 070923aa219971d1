/* storage.h - models from shared storage into the node's cache dir, where its runtime loads
 * them. Which storage holds a model comes from its storage key and parameters (stcfg.h):
 * object stores (s3, gcs, azure, http(s): remote.h, downloading through download.h on the
 * loop's shared curl multi) or a directory the node can read (pvc: a PersistentVolumeClaim
 * mounted read-only; no key at all means the node's local models root).
 *
 * A fetch materializes one model (a file or a directory tree) under cache_dir, in a directory
 * of its own whose name the module derives from the model id (ids may be "." or ".." or hold
 * any printable byte but '/' and space: the name is encoded, never the raw id) plus a sequence
 * number, so that a reload of the same id while the old copy is still being released never
 * collides: local_path = <cache_dir, absolute>/mm-<encoded id>.<seq>/<last component of the
 * storage path>. From an object store it is a regular file or a directory (files 0600,
 * directories 0700: the runtime runs as the node's user), downloaded under temporary names
 * and complete before the callback. From a pvc it is a symbolic link to the model's real
 * path beneath the pvc's root (linked, not copied: the runtime must be allowed to read the
 * pvc's root as well as its models dir). The runtime is handed local_path; runtimes refuse
 * paths outside their models dirs, so the runtime's models dirs are the node's cache_dir and
 * the pvc roots.
 *
 * Bytes from outside are bounded: a storage path is relative; a pvc path is resolved beneath
 * its root (openat2 RESOLVE_BENEATH, Linux 5.6+) so that nothing leads out of it: "..",
 * absolute paths and a path naming the root itself are refused before any I/O, a symbolic
 * link pointing out of the root is refused when the model is checked; FIFOs, devices and
 * sockets are refused without being opened; each message names the model and the path. An
 * object's key that would leave the model's directory is refused. A model bigger than
 * max_model_bytes, with more than max_files files and directories or nested deeper than
 * max_depth directories (the model's own counts as one), is refused; a failed or cancelled
 * fetch's files are removed before its callback (or, cancelled, its end) comes.
 *
 * Owns: its fetches in flight, the threads (pool.h) that walk pvc trees and downloaded models
 * and remove released ones, so the loop never blocks on a disk walk, and the downloader
 * (download.h) with the providers' state (a token cache). A pull over 5 s is logged every 5 s
 * ("pulling M from s3://b/p: 120.0/200.0 MB, 85 MB/s") and at its end. Threading: every call and callback on the loop thread.
 * Lifetime: a fetch calls back exactly once unless cancelled first (then never); its handle is
 * valid until its callback starts. storage_free cancels every fetch (no callback runs after),
 * waits for its threads, and removes the partial fetches and the releases still queued;
 * models fetched and not released stay on disk (the runtime may hold them) until the next
 * storage_new on that cache dir. The storage may be freed from inside a fetch's callback. */
#ifndef MM_STORAGE_H
#define MM_STORAGE_H

#include <stdint.h>

#include "mm/error.h"
#include "mm/stcfg.h"

struct curlev;
struct ev_loop;
struct metrics;
struct storage;
struct storage_fetch;

struct storage_config {
    const char *cache_dir;    /* required: created if missing (0700); the runtime's models dir */
    const char *models_root;  /* where a model with no storage config is read (its path
                                 beneath this root), and where pvc NAME is mounted: at
                                 <models_root>/NAME; NULL = both refused */
    struct curlev *curl;      /* the loop's curl multi; NULL = object stores refused */
    stcfg_lookup_fn lookup;   /* reads storage-config/<key>; NULL = no secret: only models
                                 with no storage key resolve */
    void *lookup_arg;
    unsigned max_transfers;   /* object downloads at once; 0 = download.h's default (8) */
    uint64_t max_model_bytes; /* 0 = 64 GiB */
    uint32_t max_files;       /* files and directories in one model; 0 = 10,000 */
    uint32_t max_depth;       /* directories nested, the model's own included; 0 = 16 */
    unsigned threads;         /* threads walking models and removing them; 0 = 2 */
    struct metrics *metrics;  /* NULL = none; else mm_storage_pulled_bytes_total: the bytes of
                                 the models fetched from object stores, counted when a fetch
                                 succeeds (a pvc's link pulls nothing). It must outlive the
                                 storage */
};

/* Bytes of the model fetched so far and its total (0 = not known yet), at most every 250 ms
 * while bytes arrive (object stores only: a pvc is linked, nothing arrives). It runs from a
 * timer of the storage's, never inside a provider: it may cancel its fetch or free the
 * storage. */
typedef void (*storage_progress_cb)(uint64_t done, uint64_t total, void *arg);

/* What to fetch: the model record's storage fields (records.h model_record). */
struct storage_model {
    const char *model_id;       /* required */
    const char *storage_key;    /* NULL or "" = none (stcfg.h: the default keys) */
    const char *storage_params; /* a JSON object of strings laid over the key's entry; NULL or
                                   "" = none */
    const char *storage_path;   /* required: relative to the storage's root */
    storage_progress_cb progress; /* NULL = not told */
    void *progress_arg;
};

/* status 0: local_path (NUL-terminated, valid during the call) holds the model, disk_bytes
 * its size (the sum of its regular files), err->code 0. Else a negative errno and err naming
 * the model, the storage key and the location: -ENOENT (not in storage; a bucket or
 * container missing; a storage key not in storage-config), -EACCES (not readable;
 * credentials refused: the message names the secret's fields to check), -EINVAL (a path
 * that leaves its root, or of a kind that cannot be a model: a FIFO, a device, a socket; a
 * storage config lacking a field), -EFBIG (over max_model_bytes, max_files or max_depth),
 * -ENOSPC (the cache dir's disk full, or too full for the model), -EBADMSG (length or MD5
 * mismatch), -EPROTO (TLS), -ETIMEDOUT / -ECONNREFUSED / -EHOSTUNREACH (the store
 * unreachable), -EIO. No message holds a secret. err is valid during the call. */
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

/* Start fetching m. 0 and *out (may be NULL if never cancelled); or, with err saying which
 * and cb never run: -EINVAL (a required field missing, a path refused before any I/O, a
 * storage config that lacks a field, names an unknown type, or that its provider refuses),
 * -ENOENT (a storage key not in storage-config), -EPROTONOSUPPORT (an object store while
 * cfg->curl is NULL), -ENOSPC / -EACCES / -EIO (an object store's fetch directory could not be
 * made in the cache dir), -ENOMEM. */
int storage_fetch(struct storage *st, const struct storage_model *m, storage_fetch_cb cb,
                  void *arg, struct storage_fetch **out, struct mm_error *err);
/* Its callback never runs; the partial copy is removed. NULL is ignored. */
void storage_fetch_cancel(struct storage_fetch *f);

/* Remove a fetched model (local_path exactly as the fetch gave it: its whole mm-* directory),
 * off the loop. A path that is not one of this storage's fetches not yet released is refused
 * (-EINVAL): nothing outside cache_dir is ever removed. 0 or -EINVAL / -ENOMEM. */
int storage_release(struct storage *st, const char *local_path);

#endif
