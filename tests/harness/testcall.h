/* testcall.h - collecting replies of rpc_unary calls in tests: a result struct the reply
 * callback fills, and bounded waits for many of them (one call waited for: rpc_unary_wait). */
#ifndef MM_TEST_TESTCALL_H
#define MM_TEST_TESTCALL_H

#include <stdbool.h>
#include <stddef.h>

#include "mm/rpc.h"

struct ev_loop;

struct testcall {
    bool done;
    grpc_status_code status;
    char details[1024]; /* room for any status message the rpc layer sends */
    grpc_byte_buffer *response; /* owned: testcall_clear frees it */
};

/* An rpc_reply_cb; arg is a struct testcall. */
void testcall_cb(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                 void *arg);
/* Wait until all n are done (bounded by ms); true if they are. */
bool testcall_wait(struct ev_loop *loop, struct testcall *calls, size_t n, long long ms);
/* One call, waited for with rpc_unary_wait (which see: status UNKNOWN if no reply in time,
 * INTERNAL if it could not start), as a testcall. */
struct testcall testcall_run(struct rpc_channel *ch, const char *method,
                             grpc_byte_buffer *request, const struct rpc_header *headers,
                             size_t n_headers, int64_t timeout_ms);
/* Free the response and reset. */
void testcall_clear(struct testcall *c);

#endif
