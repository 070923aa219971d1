/* stdir.h - storage-config entries from a directory: the storage-config Secret mounted in a
 * pod, one file per key whose content is the entry's JSON. The node looks a key up here first
 * and in the registry (storage-config/<key>) only when there is no file for it.
 *
 * Read at each lookup, nothing cached: the kubelet updates a mounted Secret in place (it swaps
 * the ..data link), so the next resolve sees the new entry. Bounded (STDIR_MAX_BYTES a file),
 * key names validated as Kubernetes validates a Secret's data keys, so a key never names a
 * path outside the directory nor the kubelet's own ..data entries. Blocking reads of one small
 * file (a tmpfs in a pod). Threading: none. */
#ifndef MM_STDIR_H
#define MM_STDIR_H

#include "mm/error.h"

#define STDIR_MAX_BYTES (64u << 10) /* one entry's file */

/* dir must be a directory that can be read: 0, or -errno with err naming it. */
int stdir_check(const char *dir, struct mm_error *err);

/* 0 and *json (malloc'd, NUL-terminated, the caller frees) with the content of dir/key;
 * -ENOENT (err untouched) when there is no such file (a dangling link too); or, with err
 * naming the directory and the key (never the content):
 *   -EINVAL  the key is no Secret data key ([-._a-zA-Z0-9], 1..253 bytes, not "." nor
 *            starting with ".."), the file is no regular file, or it holds a NUL byte
 *   -EFBIG   the file is larger than STDIR_MAX_BYTES
 *   another -errno: it cannot be opened or read */
int stdir_read(const char *dir, const char *key, char **json, struct mm_error *err);

#endif
