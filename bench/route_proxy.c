/* route_proxy.c - the anchor of bench_route: a bare forwarding hop on plain gRPC C core, with
 * nothing of the project in it. One thread drains one completion queue; a call served is
 * forwarded as a client call started on the same queue (same method, the request buffer as it
 * is, the client's deadline and cancellation propagated from the server call), and its answer
 * (message, status, status message) is replied as it is. Whatever the mesh adds over this on
 * the same machine is the mesh's cost.
 *
 * usage: route_proxy LISTEN TARGET   e.g. route_proxy 127.0.0.1:0 127.0.0.1:8085
 * Prints "LISTENING <port>" once serving; runs until killed. Every method is forwarded. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_CALLS 256 /* calls requested ahead: above any concurrency the bench uses */
#define MAX_MESSAGE (16 << 20)

enum step { ARRIVED, REQUEST_READ, UPSTREAM_DONE, REPLIED, CLOSED };

struct proxied;

struct tag {
    struct proxied *p;
    enum step step;
};

/* One call from arrival to release: every tag completes exactly once. */
struct proxied {
    struct tag arrived, request_read, upstream_done, replied, closed;
    grpc_call *server_call, *client_call;
    grpc_call_details details;
    grpc_metadata_array request_headers;
    grpc_byte_buffer *request, *response;
    grpc_metadata_array upstream_headers, upstream_trailers;
    grpc_status_code status;
    grpc_slice status_details;
    int cancelled;
    int pending; /* tags of this call still to complete after ARRIVED */
};

static grpc_server *server;
static grpc_channel *upstream;
static grpc_completion_queue *cq;

static void request_next(void)
{
    struct proxied *p = calloc(1, sizeof(*p));
    if (!p) {
        fprintf(stderr, "route_proxy: out of memory\n");
        exit(1);
    }
    p->arrived = (struct tag){p, ARRIVED};
    p->request_read = (struct tag){p, REQUEST_READ};
    p->upstream_done = (struct tag){p, UPSTREAM_DONE};
    p->replied = (struct tag){p, REPLIED};
    p->closed = (struct tag){p, CLOSED};
    grpc_call_details_init(&p->details);
    grpc_metadata_array_init(&p->request_headers);
    grpc_metadata_array_init(&p->upstream_headers);
    grpc_metadata_array_init(&p->upstream_trailers);
    grpc_call_error e = grpc_server_request_call(server, &p->server_call, &p->details,
                                                 &p->request_headers, cq, cq, &p->arrived);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "route_proxy: grpc_server_request_call: %d\n", e);
        exit(1);
    }
}

static void release(struct proxied *p)
{
    if (p->client_call)
        grpc_call_unref(p->client_call);
    grpc_call_unref(p->server_call);
    if (p->request)
        grpc_byte_buffer_destroy(p->request);
    if (p->response)
        grpc_byte_buffer_destroy(p->response);
    grpc_slice_unref(p->status_details);
    grpc_call_details_destroy(&p->details);
    grpc_metadata_array_destroy(&p->request_headers);
    grpc_metadata_array_destroy(&p->upstream_headers);
    grpc_metadata_array_destroy(&p->upstream_trailers);
    free(p);
}

static void start(grpc_call *call, grpc_op *ops, size_t n, struct tag *t)
{
    grpc_call_error e = grpc_call_start_batch(call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "route_proxy: grpc_call_start_batch (step %d): %d\n", t->step, e);
        exit(1);
    }
    t->p->pending++;
}

/* The client's request is in: forward it, or end the call if there is none. */
static void forward(struct proxied *p)
{
    if (!p->request) { /* the client went away before sending its message */
        grpc_op ops[2] = {{.op = GRPC_OP_SEND_INITIAL_METADATA},
                          {.op = GRPC_OP_SEND_STATUS_FROM_SERVER}};
        ops[1].data.send_status_from_server.status = GRPC_STATUS_CANCELLED;
        start(p->server_call, ops, 2, &p->replied);
        return;
    }
    p->client_call = grpc_channel_create_call(upstream, p->server_call, GRPC_PROPAGATE_DEFAULTS,
                                              cq, p->details.method, NULL, p->details.deadline,
                                              NULL);
    grpc_op ops[6] = {{.op = GRPC_OP_SEND_INITIAL_METADATA},
                      {.op = GRPC_OP_SEND_MESSAGE},
                      {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT},
                      {.op = GRPC_OP_RECV_INITIAL_METADATA},
                      {.op = GRPC_OP_RECV_MESSAGE},
                      {.op = GRPC_OP_RECV_STATUS_ON_CLIENT}};
    ops[1].data.send_message.send_message = p->request;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &p->upstream_headers;
    ops[4].data.recv_message.recv_message = &p->response;
    ops[5].data.recv_status_on_client.trailing_metadata = &p->upstream_trailers;
    ops[5].data.recv_status_on_client.status = &p->status;
    ops[5].data.recv_status_on_client.status_details = &p->status_details;
    start(p->client_call, ops, 6, &p->upstream_done);
}

/* The upstream answered: reply its message and status as they are. */
static void reply(struct proxied *p)
{
    grpc_op ops[3] = {{.op = GRPC_OP_SEND_INITIAL_METADATA}};
    size_t n = 1;
    if (p->response && p->status == GRPC_STATUS_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = p->response;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = p->status;
    ops[n++].data.send_status_from_server.status_details =
        GRPC_SLICE_LENGTH(p->status_details) ? &p->status_details : NULL;
    start(p->server_call, ops, n, &p->replied);
}

static void on_event(struct tag *t, int success)
{
    struct proxied *p = t->p;
    switch (t->step) {
    case ARRIVED: {
        request_next();
        if (!success) { /* the server is shutting down */
            release(p);
            return;
        }
        grpc_op close = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
        close.data.recv_close_on_server.cancelled = &p->cancelled;
        start(p->server_call, &close, 1, &p->closed);
        grpc_op read = {.op = GRPC_OP_RECV_MESSAGE};
        read.data.recv_message.recv_message = &p->request;
        start(p->server_call, &read, 1, &p->request_read);
        return;
    }
    case REQUEST_READ:
        forward(p);
        break;
    case UPSTREAM_DONE:
        reply(p);
        break;
    case REPLIED:
    case CLOSED:
        break;
    }
    if (--p->pending == 0)
        release(p);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN TARGET\n", argv[0]);
        return 2;
    }
    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = MAX_MESSAGE},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = MAX_MESSAGE},
    };
    grpc_channel_args ca = {.num_args = 2, .args = args};
    server = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *sc = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, argv[1], sc);
    grpc_server_credentials_release(sc);
    if (port <= 0) {
        fprintf(stderr, "route_proxy: cannot listen on %s\n", argv[1]);
        return 1;
    }
    grpc_channel_credentials *cc = grpc_insecure_credentials_create();
    upstream = grpc_channel_create(argv[2], cc, &ca);
    grpc_channel_credentials_release(cc);
    grpc_server_start(server);
    for (int i = 0; i < PENDING_CALLS; i++)
        request_next();
    printf("LISTENING %d\n", port);
    fflush(stdout);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            on_event(ev.tag, ev.success);
    }
    return 0;
}
