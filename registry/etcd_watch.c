/* etcd_watch.c - etcd watch streams (see etcd.h): one long POST to /v3/watch whose reply is a
 * stream of JSON objects, framed here and delivered one batch per object.
 *
 * Framing: the stream's bytes stay in the transfer's body. Each read resumes the scan where the
 * last stopped (string and nesting state kept), delivers every complete object in place, and
 * trims the delivered bytes once at the end of the read. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_impl.h"

/* Run the owner's callback; false if the owner freed the watch meanwhile (it is gone then). */
static bool notify(struct request *r, int status, const struct mm_error *err,
                   const struct etcd_watch_batch *batch, int64_t compact_revision)
{
    r->dispatching = true;
    if (r->watch_cb)
        r->watch_cb((struct etcd_watch *)r, status, err, batch, compact_revision, r->arg);
    r->dispatching = false;
    if (r->free_requested) {
        request_free(r);
        return false;
    }
    return true;
}

void watch_fail(struct request *r, int status, const struct mm_error *err)
{
    r->finished = true;
    request_detach(r);
    request_unlink(r); /* ended: the owner's now, whatever happens to the client */
    struct etcd_watch_batch batch = {.endpoint = request_endpoint(r)};
    notify(r, status, err, &batch, 0);
}

void watch_drop(struct request *r)
{
    request_detach(r);
    r->watch_cb = NULL;
    if (r->dispatching) {
        r->free_requested = true;
        return;
    }
    request_free(r);
}

/* Parse one watch reply object and deliver it. Returns false if the watch ended or was freed. */
static bool watch_deliver(struct request *r, const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    struct mm_error err;
    if (!cJSON_IsObject(res)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        mm_error_set(&err, e ? -ECANCELED : -EPROTO, "etcd %s: %s: %s", request_endpoint(r),
                     r->what, cJSON_IsString(m) ? m->valuestring : "unparseable stream object");
        if (cJSON_IsString(m)) /* refused for its token: the owner's next attempt re-auths */
            client_drop_token(r->c, m->valuestring);
        cJSON_Delete(j);
        watch_fail(r, err.code, &err);
        return false;
    }
    const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(res, "header");
    struct etcd_watch_batch batch = {
        .revision = json_int64(hdr, "revision"),
        .member_id = json_int64(hdr, "member_id"),
        .endpoint = request_endpoint(r),
        .created = json_bool(res, "created"),
    };
    /* Every etcd reply has a header with a revision; a cancel for compaction only leaves it
     * at 0. */
    bool canceled = json_bool(res, "canceled");
    if (!cJSON_IsObject(hdr) || (batch.revision <= 0 && !canceled)) {
        mm_error_set(&err, -EPROTO,
                     "etcd %s: %s: a watch reply without a header revision: is "
                     "this etcd?",
                     request_endpoint(r), r->what);
        cJSON_Delete(j);
        watch_fail(r, -EPROTO, &err);
        return false;
    }
    if (canceled) {
        int64_t compact = json_int64(res, "compact_revision");
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");
        if (compact > 0)
            mm_error_set(&err, -ESTALE,
                         "etcd %s: %s: revision compacted, oldest available is %" PRId64,
                         request_endpoint(r), r->what, compact);
        else
            mm_error_set(&err, -ECANCELED, "etcd %s: %s: canceled by etcd: %s",
                         request_endpoint(r), r->what,
                         cJSON_IsString(why) ? why->valuestring : "no reason given");
        if (cJSON_IsString(why)) /* refused for its token: the owner's next attempt re-auths */
            client_drop_token(r->c, why->valuestring);
        cJSON_Delete(j);
        r->finished = true;
        request_detach(r);
        request_unlink(r);
        batch.created = false;
        notify(r, err.code, &err, &batch, compact);
        return false;
    }
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(res, "events");
    struct arena_chunk *arena = NULL;
    int rc = 0;
    if (cJSON_IsArray(events)) {
        size_t n = (size_t)cJSON_GetArraySize(events);
        struct etcd_event *evs = n ? arena_alloc(&arena, n * sizeof(*evs)) : NULL;
        if (n && !evs)
            rc = -ENOMEM;
        size_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, events) {
            if (rc < 0)
                break;
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
            evs[i].type = cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0
                              ? ETCD_EVENT_DELETE
                              : ETCD_EVENT_PUT;
            rc = parse_kv(cJSON_GetObjectItemCaseSensitive(it, "kv"), &arena, &evs[i].kv);
            i++;
        }
        batch.events = evs;
        batch.n_events = n;
    }
    cJSON_Delete(j);
    if (rc < 0) {
        arena_free(arena);
        mm_error_set(&err, -EPROTO, "etcd %s: %s: malformed watch event", request_endpoint(r),
                     r->what);
        watch_fail(r, -EPROTO, &err);
        return false;
    }
    bool alive = notify(r, 0, NULL, &batch, 0);
    arena_free(arena);
    return alive;
}

/* Split the new bytes into top-level JSON objects and deliver each; trim once at the end. */
static void watch_parse(struct request *r, struct mm_buf *body)
{
    size_t consumed = 0; /* bytes of the objects delivered in this read */
    for (;;) {
        const char *d = body->data;
        size_t i = r->scan_pos, end = 0;
        bool found = false;
        for (; i < body->len; i++) {
            char ch = d[i];
            if (r->in_string) {
                if (r->escaped)
                    r->escaped = false;
                else if (ch == '\\')
                    r->escaped = true;
                else if (ch == '"')
                    r->in_string = false;
            } else if (ch == '"') {
                r->in_string = true;
            } else if (ch == '{') {
                if (r->depth++ == 0)
                    r->obj_start = i;
            } else if (ch == '}' && r->depth > 0 && --r->depth == 0) {
                end = i + 1;
                found = true;
                break;
            }
        }
        r->scan_pos = found ? end : i;
        if (!found)
            break;
        if (!watch_deliver(r, d + r->obj_start, end - r->obj_start))
            return; /* ended or freed: the body is not ours any more */
        consumed = end;
    }
    if (consumed == 0)
        return;
    if (r->depth == 0) /* nothing open: only separators since the last object */
        consumed = r->scan_pos;
    mm_buf_consume(body, consumed);
    r->scan_pos -= consumed;
    if (r->depth > 0)
        r->obj_start -= consumed;
}

void watch_on_data(struct curlev_transfer *t, struct mm_buf *body, void *arg)
{
    struct request *r = arg;
    struct etcd_client *c = r->c;
    client_enter(c);
    watch_parse(r, body);
    client_leave(c);
}

static void complete_watch(struct request *r, CURLcode res)
{
    CURL *e = curlev_transfer_easy(r->t);
    long http = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &http);
    char msg[CURL_ERROR_SIZE];
    snprintf(msg, sizeof(msg), "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
    const struct mm_buf *rest = curlev_transfer_body(r->t);
    char body[128];
    snprintf(body, sizeof(body), "%.120s", rest->data ? rest->data : "");
    bool over_cap = res == CURLE_WRITE_ERROR && curlev_transfer_over_limit(r->t);
    request_detach(r);
    request_advance_endpoint(r);
    struct mm_error err;
    if (over_cap)
        mm_error_set(&err, -EMSGSIZE,
                     "etcd %s: %s: a watch reply larger than the reply cap of %zu bytes",
                     request_endpoint(r), r->what, r->c->max_reply_bytes);
    else if (res == CURLE_OK && http != 200)
        mm_error_set(&err, http == 401 || http == 403 ? -EACCES : -ECONNRESET,
                     "etcd %s: %s: watch refused: HTTP %ld: %s", request_endpoint(r), r->what,
                     http, body);
    else
        mm_error_set(&err, -ECONNRESET, "etcd %s: %s: watch stream ended: %s",
                     request_endpoint(r), r->what,
                     res == CURLE_OK ? "closed by server" : msg);
    watch_fail(r, err.code, &err);
}

void watch_on_done(struct curlev_transfer *t, CURLcode res, void *arg)
{
    struct request *r = arg;
    struct etcd_client *c = r->c;
    client_enter(c);
    complete_watch(r, res);
    client_leave(c);
}

int etcd_watch_start(struct etcd_client *c, const struct etcd_watch_req *req, etcd_watch_cb cb,
                     void *arg, struct etcd_watch **out)
{
    if (!req || !req->key || !cb || !out)
        return -EINVAL;
    size_t klen = strlen(req->key);
    struct mm_buf b = {0};
    int rc = mm_buf_append(&b, "{\"create_request\":{", 19);
    if (rc == 0)
        rc = add_key_range(&b, req->key, klen, req->prefix, req->range_end,
                           req->range_end && !req->range_end_len ? strlen(req->range_end)
                                                                 : req->range_end_len);
    if (rc == 0 && req->start_revision)
        rc = mm_buf_printf(&b, ",\"start_revision\":\"%" PRId64 "\"", req->start_revision);
    if (rc == 0 && req->progress_notify)
        rc = mm_buf_printf(&b, ",\"progress_notify\":true");
    if (rc == 0)
        rc = mm_buf_append(&b, "}}", 2);
    if (rc < 0) {
        mm_buf_free(&b);
        return rc;
    }
    struct request *r = NULL;
    rc = request_submit(c, REQ_WATCH, b.data, b.len, true, NULL, arg,
                        req->prefix ? "watch prefix" : req->range_end ? "watch range" : "watch",
                        req->key, klen, &r);
    if (rc < 0)
        return rc;
    r->watch_cb = cb;
    *out = (struct etcd_watch *)r;
    return 0;
}

void etcd_watch_free(struct etcd_watch *w)
{
    struct request *r = (struct request *)w;
    if (!r)
        return;
    r->watch_cb = NULL;
    request_detach(r);
    request_unlink(r);
    if (r->dispatching) { /* inside our own delivery: notify() frees it */
        r->free_requested = true;
        return;
    }
    request_free(r);
}
