/* bare_proxy.c - the baseline a forwarding hop is measured against: the least a gRPC C-core
 * program does to forward a unary call, on one thread and one completion queue. A registered
 * method receives its call with the message already read; a client call to the backend is
 * started on the same completion queue (the served call as its parent: deadline and
 * cancellation propagate); its response buffer is replied as it came, status and message
 * passed through. No libev, no mailbox, no limits beyond gRPC's defaults: the physical limit of
 * a hop with this gRPC build on this machine. Without --backend it is an echo server (replies
 * with the request), the baseline of a served call.
 * usage: bare_proxy [--listen ADDR] [--backend TARGET] [--method PATH]
 * prints "LISTENING <port>" once serving; runs until SIGTERM or SIGINT. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALLS_AHEAD 64

enum stage { ARRIVED, FORWARDED, REPLIED };

struct hop {
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array headers;
    grpc_byte_buffer *request;
    int cancelled;
    grpc_call *fwd;
    grpc_metadata_array fwd_initial, fwd_trailing;
    grpc_byte_buffer *response;
    grpc_status_code status;
    grpc_slice details;
};

static grpc_server *server;
static grpc_completion_queue *cq;
static grpc_channel *backend;
static void *method;
static const char *method_path = "/inference.GRPCInferenceService/ModelInfer";
static volatile sig_atomic_t stopping;

/* A tag is the hop's address with its stage in the low bits (the struct is 8-aligned). */
static void *tag(struct hop *h, enum stage s)
{
    return (void *)((uintptr_t)h | (uintptr_t)s);
}

static void request_one(void)
{
    struct hop *h = calloc(1, sizeof(*h));
    if (!h)
        return;
    grpc_metadata_array_init(&h->headers);
    h->details = grpc_empty_slice();
    if (grpc_server_request_registered_call(server, method, &h->call, &h->deadline, &h->headers,
                                            &h->request, cq, cq, tag(h, ARRIVED)) !=
        GRPC_CALL_OK)
        free(h);
}

static void hop_free(struct hop *h)
{
    if (h->call)
        grpc_call_unref(h->call);
    if (h->fwd)
        grpc_call_unref(h->fwd);
    grpc_metadata_array_destroy(&h->headers);
    if (h->fwd) {
        grpc_metadata_array_destroy(&h->fwd_initial);
        grpc_metadata_array_destroy(&h->fwd_trailing);
    }
    if (h->request)
        grpc_byte_buffer_destroy(h->request);
    if (h->response)
        grpc_byte_buffer_destroy(h->response);
    grpc_slice_unref(h->details);
    free(h);
}

/* One batch: headers, the message (if any), the status; and the close, so that one completion
 * ends the call. */
static void reply(struct hop *h, grpc_byte_buffer *msg, grpc_status_code status)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (msg && status == GRPC_STATUS_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = msg;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n++].data.send_status_from_server.status_details = &h->details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &h->cancelled;
    if (grpc_call_start_batch(h->call, ops, n, tag(h, REPLIED), NULL) != GRPC_CALL_OK)
        hop_free(h);
}

static void forward(struct hop *h)
{
    grpc_slice path = grpc_slice_from_static_string(method_path);
    h->fwd = grpc_channel_create_call(backend, h->call, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL,
                                      gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_metadata_array_init(&h->fwd_initial);
    grpc_metadata_array_init(&h->fwd_trailing);
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = h->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &h->fwd_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &h->response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &h->fwd_trailing;
    ops[5].data.recv_status_on_client.status = &h->status;
    ops[5].data.recv_status_on_client.status_details = &h->details;
    if (!h->fwd || grpc_call_start_batch(h->fwd, ops, 6, tag(h, FORWARDED), NULL) != GRPC_CALL_OK)
        reply(h, NULL, GRPC_STATUS_UNAVAILABLE);
}

static void on_signal(int sig)
{
    stopping = 1;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *target = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc)
            method_path = argv[++i];
        else {
            fprintf(stderr, "usage: bare_proxy [--listen ADDR] [--backend TARGET] "
                            "[--method PATH]\n");
            return 2;
        }
    }
    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = 16 << 20},
    };
    grpc_channel_args ca = {1, args};
    server = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    method = grpc_server_register_method(server, method_path, NULL,
                                         GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        fprintf(stderr, "bare_proxy: cannot listen on %s\n", listen);
        return 1;
    }
    if (target) {
        grpc_channel_credentials *cc = grpc_insecure_credentials_create();
        backend = grpc_channel_create(target, cc, &ca);
        grpc_channel_credentials_release(cc);
    }
    grpc_server_start(server);
    for (int i = 0; i < CALLS_AHEAD; i++)
        request_one();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("LISTENING %d\n", port);
    fflush(stdout);
    while (!stopping) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200,
                                                                              GPR_TIMESPAN)),
            NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct hop *h = (struct hop *)((uintptr_t)ev.tag & ~(uintptr_t)3);
        switch ((enum stage)((uintptr_t)ev.tag & 3)) {
        case ARRIVED:
            if (!ev.success) {
                hop_free(h);
                break;
            }
            request_one();
            if (!h->request)
                reply(h, NULL, GRPC_STATUS_INVALID_ARGUMENT);
            else if (backend)
                forward(h);
            else
                reply(h, h->request, GRPC_STATUS_OK);
            break;
        case FORWARDED:
            reply(h, ev.success ? h->response : NULL,
                  ev.success ? h->status : GRPC_STATUS_UNAVAILABLE);
            break;
        case REPLIED:
            hop_free(h);
            break;
        }
    }
    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag) /* each hop has one batch pending at most */
            hop_free((struct hop *)((uintptr_t)ev.tag & ~(uintptr_t)3));
    }
    grpc_server_destroy(server);
    if (backend)
        grpc_channel_destroy(backend);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return 0;
}
