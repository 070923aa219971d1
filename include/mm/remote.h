/* remote.h - the interface of the object-store providers (storage/s3.c, gcs.c, azure.c,
 * http.c): find the objects a model's storage path names, and download them (download.h)
 * into the directory storage.c made for the fetch.
 *
 * A path names a single object when one matches it exactly, else the objects under the
 * prefix "<path>/" (never "<path>2/..."), with zero-byte objects and keys ending in '/'
 * skipped. A single object becomes the file <base>, a prefix the directory <base>/ holding
 * the objects by their names relative to the prefix, where base is the path's last
 * component. Neither: -ENOENT naming the full location (and the prefix tried).
 *
 * Errors a user can act on, each naming the storage key: -EACCES credentials refused (which
 * secret field to check), -ENOENT bucket or container missing / object not found (the full
 * location), -EINVAL the config lacks a field or has a bad one (which), -EPROTO TLS, and
 * download.h's. No message or log line holds a secret: a secret key, a private key, a token,
 * a SAS signature, a header value from the config.
 *
 * Threading: the loop's thread. Lifetime: a pull calls back exactly once unless cancelled
 * first; its handle is valid until its callback starts. */
#ifndef MM_REMOTE_H
#define MM_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/download.h"
#include "mm/error.h"

struct cJSON;
struct mm_buf;

struct remote_source {
    const struct cJSON *cfg; /* the resolved storage config (stcfg.h): an object whose fields
                                are strings, "type" among them; copied by pull */
    const char *key;         /* the storage key it came from ("" = none), for messages */
    const char *model_id;    /* for messages and logs */
    const char *path;        /* the storage path, relative: within the bucket / container /
                                the http url; a leading '/' is ignored */
};

/* status 0: the model is in the directory, bytes long. Else -errno (above) with err, valid
 * during the call; whatever was written stays for the caller to remove. */
typedef void (*remote_done_cb)(int status, const struct mm_error *err, uint64_t bytes,
                               void *arg);

struct remote_provider {
    const char *type; /* "s3", "gcs", "azure", "http" */
    /* State the provider's pulls share for the life of one storage (gcs: its token cache).
     * May be NULL (then state is NULL). 0 or -ENOMEM. */
    int (*open)(struct dl *dl, void **state, struct mm_error *err);
    void (*close)(void *state);
    /* Check src's config (-EINVAL naming a missing or bad field), then list and download.
     * src and its strings are copied. progress (may be NULL) is called as progress(done,
     * total, arg) with the caller's arg, as cb is (not with the provider's own: wrap
     * dl_files' progress). 0 and *out (may be NULL), or -errno with err, and cb never runs. */
    int (*pull)(void *state, struct dl *dl, const struct remote_source *src, int dirfd,
                dl_progress_cb progress, remote_done_cb cb, void *arg, void **out,
                struct mm_error *err);
    /* A pull (the provider's own type, handed out as *out): no callback after; its
     * requests are cancelled. NULL is ignored. */
    void (*cancel)(void *pull);
};

extern const struct remote_provider remote_s3;
extern const struct remote_provider remote_gcs;
extern const struct remote_provider remote_azure;
extern const struct remote_provider remote_http;

/* ---- pieces the providers share (storage/remote.c); pure, any thread ---- */

/* cfg's field name if it is a non-empty string, else NULL (absent, "", not a string). */
const char *remote_field(const struct cJSON *cfg, const char *name);

/* How messages name where a config came from: "storage key 'K'", or with no key (NULL or "")
 * "the storage parameters"; written into buf (truncated to size), which is returned. */
const char *remote_key_name(const char *key, char *buf, size_t size);

/* An MD5 given as base64 (Azure's Content-MD5, GCS's md5Hash) as 32 lowercase hex digits in
 * out: 0, or -EINVAL (out = "") unless b64 is base64 of exactly 16 bytes. */
int remote_md5_hex(const char *b64, char out[33]);

/* Append s percent-encoded to b: RFC 3986's unreserved characters (A-Z a-z 0-9 - . _ ~) kept,
 * '/' kept if keep_slash, every other byte as %XX (uppercase hex). 0 or -ENOMEM. */
int remote_pct_encode(struct mm_buf *b, const char *s, bool keep_slash);

/* Overwrite a secret string with zeros, then free it. NULL is ignored. */
void remote_free_secret(char *s);

#endif
