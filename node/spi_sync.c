/* spi_sync.c - runtime SPI calls waited for on the client's loop (see spi_sync.h). */
#include "mm/spi_sync.h"

#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <string.h>

#include "mm/rpc.h"

struct waiter {
    bool done;
    struct spi_result *res;
};

static void on_result(const struct spi_result *res, void *arg)
{
    struct waiter *w = arg;
    *w->res = *res;
    w->done = true;
}

static void on_overdue(struct ev_loop *loop, ev_timer *t, int revents)
{
    *(bool *)t->data = true;
}

/* started: what spi_* returned for the request r. Wait for it (bounded) and fill res. */
static int wait_for(struct spi_client *cl, enum spi_method method, const char *id, int started,
                    struct spi_request *r, struct waiter *w, int64_t timeout_ms)
{
    struct spi_result *res = w->res;
    const char *model = id ? id : "";
    if (started < 0) {
        memset(res, 0, sizeof(*res));
        res->method = method;
        res->code = started;
        res->status = started == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_INTERNAL;
        mm_error_set(&res->err, started, "%s%s%s at %s: cannot start the call: %s",
                     spi_method_name(method), *model ? " " : "", model,
                     cl ? spi_client_target(cl) : "(no client)", mm_strerror(started));
        return started;
    }
    struct ev_loop *loop = rpc_context_loop(spi_client_context(cl));
    bool overdue = false;
    ev_timer timer;
    ev_timer_init(&timer, on_overdue, (double)(timeout_ms + SPI_SYNC_GRACE_MS) / 1000., 0.);
    timer.data = &overdue;
    if (timeout_ms > 0)
        ev_timer_start(loop, &timer);
    while (!w->done && !overdue)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &timer);
    if (!w->done) { /* gRPC did not end the call at its deadline: give up on it */
        spi_request_cancel(r);
        memset(res, 0, sizeof(*res));
        res->method = method;
        res->code = -ETIMEDOUT;
        res->status = GRPC_STATUS_DEADLINE_EXCEEDED;
        mm_error_set(&res->err, -ETIMEDOUT, "%s%s%s at %s: no answer within %lld ms",
                     spi_method_name(method), *model ? " " : "", model, spi_client_target(cl),
                     (long long)(timeout_ms + SPI_SYNC_GRACE_MS));
    }
    return res->code;
}

int spi_sync_runtime_status(struct spi_client *cl, int64_t timeout_ms, struct spi_result *res)
{
    struct waiter w = {false, res};
    struct spi_request *r = NULL;
    int rc = spi_runtime_status(cl, timeout_ms, on_result, &w, &r);
    return wait_for(cl, SPI_RUNTIME_STATUS, NULL, rc, r, &w, timeout_ms);
}

int spi_sync_load_model(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                        struct spi_result *res)
{
    struct waiter w = {false, res};
    struct spi_request *r = NULL;
    int rc = spi_load_model(cl, m, timeout_ms, on_result, &w, &r);
    return wait_for(cl, SPI_LOAD_MODEL, m ? m->id : NULL, rc, r, &w, timeout_ms);
}

int spi_sync_unload_model(struct spi_client *cl, const char *id, int64_t timeout_ms,
                          struct spi_result *res)
{
    struct waiter w = {false, res};
    struct spi_request *r = NULL;
    int rc = spi_unload_model(cl, id, timeout_ms, on_result, &w, &r);
    return wait_for(cl, SPI_UNLOAD_MODEL, id, rc, r, &w, timeout_ms);
}

int spi_sync_predict_model_size(struct spi_client *cl, const struct spi_model *m,
                                int64_t timeout_ms, struct spi_result *res)
{
    struct waiter w = {false, res};
    struct spi_request *r = NULL;
    int rc = spi_predict_model_size(cl, m, timeout_ms, on_result, &w, &r);
    return wait_for(cl, SPI_PREDICT_MODEL_SIZE, m ? m->id : NULL, rc, r, &w, timeout_ms);
}

int spi_sync_model_size(struct spi_client *cl, const char *id, int64_t timeout_ms,
                        struct spi_result *res)
{
    struct waiter w = {false, res};
    struct spi_request *r = NULL;
    int rc = spi_model_size(cl, id, timeout_ms, on_result, &w, &r);
    return wait_for(cl, SPI_MODEL_SIZE, id, rc, r, &w, timeout_ms);
}
