/* curlev.h - libcurl's multi interface on a libev loop: the HTTP transport that the etcd client
 * (and the storage pullers) share. Owns: one CURLM driven by the loop's socket and timer watchers,
 * and the transfers started on it, each with its easy handle and its reply bytes. It knows
 * nothing of what the bytes mean.
 *
 * One per loop: a program makes one with curlev_new() and hands it to every client on that loop
 * (etcd_config.curl), so that connections are pooled and one timer serves every transfer.
 *
 * Callbacks never run inside curl: curl's write callback only appends to the transfer's body
 * (or hands the bytes to the transfer's sink, below); data and done callbacks run after
 * curl_multi_socket_action() has returned. So a callback may start transfers, free any
 * transfer (its own included) and free the curlev itself.
 *
 * Threading: everything on the loop's thread. */
#ifndef MM_CURLEV_H
#define MM_CURLEV_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "mm/buf.h"
#include "mm/error.h"

struct ev_loop;
struct curlev;
struct curlev_transfer;

/* New bytes were appended to body; the callee may consume what it has used
 * (mm_buf_consume). Runs before the done callback for the last bytes of a transfer. */
typedef void (*curlev_data_cb)(struct curlev_transfer *t, struct mm_buf *body, void *arg);
/* The transfer ended (result CURLE_OK or curl's error); it is off the multi handle and its
 * easy handle can be asked (curl_easy_getinfo) until the transfer is freed. Runs once. */
typedef void (*curlev_done_cb)(struct curlev_transfer *t, CURLcode result, void *arg);

int curlev_new(struct ev_loop *loop, struct curlev **out, struct mm_error *err);
/* Free after every transfer started on it has been freed. Allowed from inside a callback of
 * one of its transfers (the free then happens when the dispatch returns). NULL is a no-op. */
void curlev_free(struct curlev *cl);
struct ev_loop *curlev_loop(const struct curlev *cl);

/* A transfer with a fresh easy handle, for the caller to set its URL, headers, body and
 * timeouts on. The transport sets CURLOPT_WRITEFUNCTION, _WRITEDATA and _PRIVATE: do not.
 * on_data may be NULL (the body is then read in on_done). max_body bounds the body held at
 * once (0 = unbounded): more aborts the transfer with CURLE_WRITE_ERROR. */
int curlev_transfer_new(struct curlev *cl, size_t max_body, curlev_data_cb on_data,
                        curlev_done_cb on_done, void *arg, struct curlev_transfer **out);
CURL *curlev_transfer_easy(struct curlev_transfer *t);
/* Whether the transfer was aborted because its body would have passed max_body (rather than
 * for want of memory): the CURLE_WRITE_ERROR is then the bound's doing. */
bool curlev_transfer_over_limit(const struct curlev_transfer *t);
struct mm_buf *curlev_transfer_body(struct curlev_transfer *t);
/* A sink takes a transfer's bytes straight from curl, instead of the body: no copy into the
 * body, no on_data for them. It runs INSIDE curl's write callback, on the loop thread, from
 * curl_multi_socket_action() or from curl_easy_pause(CURLPAUSE_CONT) on this transfer's
 * handle. So, while it runs, it must not:
 *   - call any libcurl function, except curl_easy_getinfo() on this transfer's own handle
 *     (libcurl allows that in a callback: e.g. the response code);
 *   - call any curlev function (start, free, pause or read any transfer, free the curlev);
 *   - run the loop, or anything that may call back into one of the above (a user callback).
 * It may copy the bytes, keep counts, and hand work to other threads (pool_submit). It returns
 * what curl's write callback returns: len (all taken), CURL_WRITEFUNC_PAUSE (none taken: curl
 * keeps them and pauses the transfer; the owner resumes it later with
 * curl_easy_pause(CURLPAUSE_CONT) from outside curl, which hands the kept bytes to the sink
 * again, inside that call), or anything else to abort the transfer (its done callback then
 * gets CURLE_WRITE_ERROR: the owner records why before returning). ptr is valid during the
 * call only. Set before curlev_transfer_start; max_body then bounds nothing, and on_data (if
 * given) runs after curl has returned whenever the sink took bytes, with an empty body: the
 * place to act on them outside curl. */
typedef size_t (*curlev_sink_fn)(const char *ptr, size_t len, void *arg);
void curlev_transfer_set_sink(struct curlev_transfer *t, curlev_sink_fn sink, void *arg);
/* Hand the transfer to curl; callbacks follow on the loop. 0 or -ENOMEM. */
int curlev_transfer_start(struct curlev_transfer *t);
/* Stop it if running (no callback runs after this) and free it with its easy handle and body.
 * Allowed from inside its own callbacks. NULL is a no-op. */
void curlev_transfer_free(struct curlev_transfer *t);

#endif
