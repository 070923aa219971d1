/* download.h - HTTP requests of the object-store providers, on the loop's shared curl multi
 * (curlev.h): small answers read into memory (listings, tokens) and objects streamed into the
 * files of a model directory. A request is retried with backoff on a 5xx answer or a
 * connection error, and on nothing else; each attempt is prepared afresh (a signature carries
 * its time). Objects are checked (length, MD5 where the listing gave one), written under a
 * temporary name and renamed once whole; the disk's free space is checked before a job
 * starts.
 *
 * Owns: its ops (each with its transfers, files being written and copies of what it was
 * given) and a queue bounding the object transfers in flight across all jobs.
 * Threading: every call and callback on the loop thread of its curlev.
 * Lifetime: an op calls back exactly once unless cancelled first (then never); its handle is
 * valid until its callback starts. dl_free cancels every op. A callback may free the dl. */
#ifndef MM_DOWNLOAD_H
#define MM_DOWNLOAD_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct curlev;
struct dl;
struct dl_op;

struct dl_config {
    struct curlev *curl;         /* required; shared with the etcd client */
    unsigned max_transfers;      /* object downloads at once, all jobs together; 0 = 8 */
    unsigned max_attempts;       /* per request, the first included; 0 = 4 */
    uint32_t backoff_ms;         /* before the second attempt, doubled for each after, with
                                    jitter of +-25 %; 0 = 250 */
    uint32_t connect_timeout_ms; /* 0 = 10,000 */
    uint32_t stall_timeout_ms;   /* a transfer that moves no byte this long fails (and is
                                    retried); 0 = 60,000 */
    uint64_t disk_reserve;       /* bytes a job leaves free on the cache dir's disk; 0 = 64 MiB */
};

/* How to make one request. Every pointer must stay valid until the op ends (callback or
 * cancel); `what` is copied. */
struct dl_request {
    /* Set the URL, the method's body if any (POST: CURLOPT_COPYPOSTFIELDS), the headers and
     * the TLS options on easy, a fresh handle for each attempt. The engine sets the write
     * function and data, PRIVATE, NOSIGNAL, the timeouts, FOLLOWLOCATION off and
     * ACCEPT_ENCODING off (bytes are stored as sent): prepare must not. It hands the
     * engine a header list in *headers (may stay NULL), which the engine frees after the
     * attempt. 0, or -errno with err: the op fails with it, nothing is sent. */
    int (*prepare)(CURL *easy, struct curl_slist **headers, void *arg, struct mm_error *err);
    /* The final answer was not 2xx (after the retries a 5xx gets): phrase it in err, from
     * the status code and the body (the first 64 KiB), and return the -errno the op fails
     * with. NULL: -EIO with "<what>: HTTP <code>". */
    int (*http_error)(long code, const char *body, size_t len, void *arg, struct mm_error *err);
    void *arg;                   /* for both */
    const char *what;            /* how messages name the request, e.g. "s3://bucket/key";
                                    never a URL that holds a credential (a SAS token) */
};

/* Transport errors, after their retries, fail an op with: -EHOSTUNREACH (name not
 * resolved), -ECONNREFUSED (no connection), -ETIMEDOUT (connect or stall timeout), -EPROTO
 * (TLS: a certificate not trusted, a handshake failure; the message says which and names
 * the CA file if one was set), -EIO (anything else, with curl's words). Each message starts
 * with `what`. */

/* status 0: a 2xx answer; body holds len bytes (NUL-terminated), valid during the call. Else
 * a -errno (above, or http_error's) with err. err and body are valid during the call. */
typedef void (*dl_text_cb)(int status, const struct mm_error *err, long http_code,
                           const char *body, size_t len, void *arg);

/* One file of a job. */
struct dl_file {
    const char *rel;     /* its path under the job's directory, '/'-separated; a component
                            that is empty, "." or "..", or a leading '/', is refused */
    uint64_t size;       /* expected length; UINT64_MAX = unknown (Content-Length rules) */
    const char *md5_hex; /* expected MD5, 32 hex digits; NULL or "" = not checked */
    struct dl_request req;
};

/* A job ended: status 0 and the bytes written; or the first failure (-ENOSPC: the disk is
 * full or would be, the message says how much is needed and free; -EBADMSG: a length or MD5
 * mismatch, after retries; -EINVAL: a bad rel; else as above), err valid during the call.
 * After a failure the files already complete stay in the directory, the partial ones are
 * removed: the caller removes the directory. */
typedef void (*dl_files_cb)(int status, const struct mm_error *err, uint64_t bytes, void *arg);
/* Bytes written so far and the job's total (sum of the sizes known), after data arrived, at
 * most every 250 ms, and once more when the last byte is in. */
typedef void (*dl_progress_cb)(uint64_t done, uint64_t total, void *arg);

int dl_new(const struct dl_config *cfg, struct dl **out, struct mm_error *err);
/* Cancels every op (no callback runs after). NULL is ignored. */
void dl_free(struct dl *dl);

/* Make req and read its answer into memory (at most max_body bytes: more fails the op with
 * -EFBIG). Not bounded by max_transfers (listings and tokens are small and come first). 0
 * and *out (may be NULL if never cancelled), or -EINVAL / -ENOMEM with err, and cb never
 * runs. */
int dl_text(struct dl *dl, const struct dl_request *req, size_t max_body, dl_text_cb cb,
            void *arg, struct dl_op **out, struct mm_error *err);

/* Download files[0..n) into the directory dirfd (kept open by the caller until the op ends).
 * Directories on the way are created (0700), files created 0600 with O_EXCL under a
 * temporary name ".<name>.part" beside their final name, and renamed once whole and checked;
 * nothing is opened through a symbolic link (O_NOFOLLOW at every step), so nothing is
 * written outside dirfd. Before the first byte, the free space of dirfd's file system must
 * exceed the known total plus disk_reserve (else -ENOSPC). progress may be NULL. files and
 * their strings are copied. 0 and *out (may be NULL), or -EINVAL (n == 0, a bad rel: err
 * names it) / -ENOMEM, and cb never runs. */
int dl_files(struct dl *dl, int dirfd, const struct dl_file *files, size_t n,
             dl_progress_cb progress, dl_files_cb cb, void *arg, struct dl_op **out,
             struct mm_error *err);

/* No callback runs after; a job's partial files are removed. NULL is ignored. */
void dl_cancel(struct dl_op *op);

#endif
