/* curlev.c - curl multi on a libev loop (see curlev.h). The socket and timer glue is curl's own
 * recipe (docs/examples/multi-event.c, ev variant): curl says which sockets to watch and when to
 * time out; the loop calls curl_multi_socket_action() back. A finished transfer is found from
 * its easy handle through CURLINFO_PRIVATE. */
#include "mm/curlev.h"

#include <bsd/sys/queue.h>
#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <stdlib.h>

struct curlev_transfer {
    struct curlev *cl;
    CURL *easy;
    struct mm_buf body;
    size_t max_body;
    bool over_limit;                    /* aborted because the body would pass max_body */
    curlev_data_cb on_data;
    curlev_done_cb on_done;
    void *arg;
    curlev_sink_fn sink;                /* takes the bytes instead of body, inside curl */
    void *sink_arg;
    TAILQ_ENTRY(curlev_transfer) dirty; /* has bytes its owner has not been told of */
    bool on_dirty;
    bool running;                       /* added to the multi handle */
    bool data_pending;                  /* on_data is due */
    bool done_pending;                  /* on_done is due, with result */
    CURLcode result;
    bool dispatching;                   /* one of its callbacks is running */
    bool free_requested;                /* freed by its owner during that callback */
};

TAILQ_HEAD(transfer_list, curlev_transfer);

struct socket_watch {
    ev_io io;
    struct curlev *cl;
};

struct curlev {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    struct transfer_list dirty;
    int dispatching;                    /* depth of process() */
    bool free_requested;
};

static void destroy(struct curlev *cl)
{
    ev_timer_stop(cl->loop, &cl->timer);
    if (cl->multi)
        curl_multi_cleanup(cl->multi); /* removes the socket watchers through socket_cb */
    free(cl);
}

static void transfer_destroy(struct curlev_transfer *t)
{
    if (t->easy)
        curl_easy_cleanup(t->easy);
    mm_buf_free(&t->body);
    free(t);
}

/* Deliver what is due to t's owner, data before done. A callback that runs the loop (a
 * synchronous helper) may make more due meanwhile: the outer run delivers it, so the owner
 * never sees its own callbacks nested. */
static void run(struct curlev_transfer *t)
{
    if (t->dispatching)
        return;
    t->dispatching = true;
    while (!t->free_requested && (t->data_pending || t->done_pending)) {
        if (t->data_pending) {
            t->data_pending = false;
            t->on_data(t, &t->body, t->arg);
        } else {
            t->done_pending = false;
            t->on_done(t, t->result, t->arg);
        }
    }
    t->dispatching = false;
    if (t->free_requested)
        transfer_destroy(t);
}

/* After curl has returned: tell owners of new bytes, then of finished transfers. */
static void process(struct curlev *cl)
{
    cl->dispatching++;
    struct curlev_transfer *t;
    while (!cl->free_requested && (t = TAILQ_FIRST(&cl->dirty))) {
        TAILQ_REMOVE(&cl->dirty, t, dirty);
        t->on_dirty = false;
        t->data_pending = true;
        run(t);
    }
    CURLMsg *m;
    int left;
    while (!cl->free_requested && (m = curl_multi_info_read(cl->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        t = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        t->result = m->data.result;
        curl_multi_remove_handle(cl->multi, t->easy); /* m is invalid from here */
        t->running = false;
        if (t->on_dirty) { /* the last bytes came with the end */
            TAILQ_REMOVE(&cl->dirty, t, dirty);
            t->on_dirty = false;
            t->data_pending = true;
        }
        t->done_pending = true;
        run(t);
    }
    if (--cl->dispatching == 0 && cl->free_requested)
        destroy(cl);
}

static void on_socket(struct ev_loop *loop, ev_io *w, int revents)
{
    struct socket_watch *sw = (struct socket_watch *)w;
    int flags =
        (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    struct curlev *cl = sw->cl; /* sw may be freed by socket_cb during the action */
    int running;
    curl_multi_socket_action(cl->multi, w->fd, flags, &running);
    process(cl);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct curlev *cl = userp;
    struct socket_watch *sw = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sw) {
            ev_io_stop(cl->loop, &sw->io);
            free(sw);
            curl_multi_assign(cl->multi, s, NULL);
        }
        return 0;
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!sw) {
        sw = calloc(1, sizeof(*sw));
        if (!sw)
            return -1;
        sw->cl = cl;
        ev_io_init(&sw->io, on_socket, s, events);
        curl_multi_assign(cl->multi, s, sw);
    } else {
        ev_io_stop(cl->loop, &sw->io);
        ev_io_set(&sw->io, s, events);
    }
    ev_io_start(cl->loop, &sw->io);
    return 0;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct curlev *cl = w->data;
    int running;
    curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    process(cl);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct curlev *cl = userp;
    ev_timer_stop(cl->loop, &cl->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&cl->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(cl->loop, &cl->timer);
    }
    return 0;
}

int curlev_new(struct ev_loop *loop, struct curlev **out, struct mm_error *err)
{
    static bool curl_ready;
    if (!curl_ready) { /* process-wide init, first use only */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
            return mm_error_set(err, -ENOMEM, "curl: curl_global_init failed");
        curl_ready = true;
    }
    struct curlev *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return mm_error_set(err, -ENOMEM, "curl: out of memory");
    cl->loop = loop;
    TAILQ_INIT(&cl->dirty);
    ev_init(&cl->timer, on_timer);
    cl->timer.data = cl;
    cl->multi = curl_multi_init();
    if (!cl->multi) {
        free(cl);
        return mm_error_set(err, -ENOMEM, "curl: curl_multi_init failed");
    }
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    *out = cl;
    return 0;
}

void curlev_free(struct curlev *cl)
{
    if (!cl)
        return;
    if (cl->dispatching) {
        cl->free_requested = true;
        return;
    }
    destroy(cl);
}

struct ev_loop *curlev_loop(const struct curlev *cl)
{
    return cl->loop;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct curlev_transfer *t = userdata;
    size_t n = size * nmemb;
    if (t->sink) {
        size_t r = t->sink(ptr, n, t->sink_arg);
        if (r == n && n && t->on_data && !t->on_dirty) {
            TAILQ_INSERT_TAIL(&t->cl->dirty, t, dirty);
            t->on_dirty = true;
        }
        return r;
    }
    if (t->max_body && t->body.len + n > t->max_body) {
        t->over_limit = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (mm_buf_append(&t->body, ptr, n) < 0)
        return 0;
    if (t->on_data && !t->on_dirty) {
        TAILQ_INSERT_TAIL(&t->cl->dirty, t, dirty);
        t->on_dirty = true;
    }
    return n;
}

int curlev_transfer_new(struct curlev *cl, size_t max_body, curlev_data_cb on_data,
                        curlev_done_cb on_done, void *arg, struct curlev_transfer **out)
{
    struct curlev_transfer *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->easy = curl_easy_init();
    if (!t->easy) {
        free(t);
        return -ENOMEM;
    }
    t->cl = cl;
    t->max_body = max_body;
    t->on_data = on_data;
    t->on_done = on_done;
    t->arg = arg;
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    *out = t;
    return 0;
}

void curlev_transfer_set_sink(struct curlev_transfer *t, curlev_sink_fn sink, void *arg)
{
    t->sink = sink;
    t->sink_arg = arg;
}

bool curlev_transfer_over_limit(const struct curlev_transfer *t)
{
    return t->over_limit;
}

CURL *curlev_transfer_easy(struct curlev_transfer *t)
{
    return t->easy;
}

struct mm_buf *curlev_transfer_body(struct curlev_transfer *t)
{
    return &t->body;
}

int curlev_transfer_start(struct curlev_transfer *t)
{
    if (t->running)
        return -EALREADY;
    if (curl_multi_add_handle(t->cl->multi, t->easy) != CURLM_OK)
        return -ENOMEM;
    t->running = true;
    return 0;
}

void curlev_transfer_free(struct curlev_transfer *t)
{
    if (!t)
        return;
    if (t->running) {
        curl_multi_remove_handle(t->cl->multi, t->easy);
        t->running = false;
    }
    if (t->on_dirty) {
        TAILQ_REMOVE(&t->cl->dirty, t, dirty);
        t->on_dirty = false;
    }
    t->data_pending = t->done_pending = false;
    if (t->dispatching) { /* inside its own callback: the dispatcher frees it */
        t->free_requested = true;
        return;
    }
    transfer_destroy(t);
}
