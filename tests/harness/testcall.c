/* testcall.c - reply collection for rpc tests (see testcall.h). */
#include "testcall.h"

#include <stdio.h>
#include <string.h>

#include "harness.h"

void testcall_cb(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                 void *arg)
{
    struct testcall *c = arg;
    c->done = true;
    c->status = status;
    snprintf(c->details, sizeof(c->details), "%s", details);
    c->response = response;
}

struct batch {
    struct testcall *calls;
    size_t n;
};

static bool all_done(void *arg)
{
    struct batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        if (!b->calls[i].done)
            return false;
    return true;
}

bool testcall_wait(struct ev_loop *loop, struct testcall *calls, size_t n, long long ms)
{
    struct batch b = {calls, n};
    return harness_run_until(loop, all_done, &b, ms);
}

struct testcall testcall_run(struct rpc_channel *ch, const char *method,
                             grpc_byte_buffer *request, const struct rpc_header *headers,
                             size_t n_headers, int64_t timeout_ms)
{
    struct rpc_reply r;
    rpc_unary_wait(ch, method, request, headers, n_headers, timeout_ms > 0 ? timeout_ms : 10000,
                   &r);
    struct testcall c = {.done = true, .status = r.status, .response = r.response};
    snprintf(c.details, sizeof(c.details), "%s", r.details);
    return c;
}

void testcall_clear(struct testcall *c)
{
    if (c->response)
        grpc_byte_buffer_destroy(c->response);
    memset(c, 0, sizeof(*c));
}
