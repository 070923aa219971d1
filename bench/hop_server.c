/* hop_server.c - an echo server or a forwarding proxy on the project's rpc layer, to be measured
 * against bare_proxy (same shapes, plain C core) by bench_hop.py:
 *   echo        the handler on the loop (completion-queue thread -> mailbox -> loop)
 *   echo-fast   the handler on the completion-queue thread (rpc_server_register_fast)
 *   proxy       rpc_unary from the loop, the served call as parent (the path before the fast one)
 *   proxy-fast  rpc_forward from a fast handler, on the completion-queue thread
 * usage: hop_server MODE [--listen ADDR] [--backend TARGET] [--method PATH]
 * prints "LISTENING <port>" once serving; runs until SIGTERM or SIGINT. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/rpc.h"

static struct rpc_channel *backend;
static const char *method = "/inference.GRPCInferenceService/ModelInfer";

static void echo(struct rpc_call *c, void *arg)
{
    rpc_call_reply(c, grpc_byte_buffer_copy(rpc_call_request(c)), GRPC_STATUS_OK, NULL);
}

static enum rpc_next echo_fast(struct rpc_call *c, void *arg)
{
    echo(c, arg);
    return RPC_NEXT_DONE;
}

static void forwarded(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                      void *arg)
{
    rpc_call_reply(arg, response, status, details);
}

static void proxy(struct rpc_call *c, void *arg)
{
    if (rpc_unary(backend, method, rpc_call_request(c), NULL, 0, 0, c, forwarded, c, NULL) < 0)
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "cannot forward");
}

static enum rpc_next proxy_fast(struct rpc_call *c, void *arg)
{
    return rpc_forward(c, backend, NULL, 0, NULL, NULL) == 0 ? RPC_NEXT_DONE : RPC_NEXT_LOOP;
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "", *listen = "127.0.0.1:0", *target = NULL;
    bool usage = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "--method") == 0 && i + 1 < argc)
            method = argv[++i];
        else
            usage = true;
    }
    bool is_proxy = strcmp(mode, "proxy") == 0 || strcmp(mode, "proxy-fast") == 0;
    if (usage || (!is_proxy && strcmp(mode, "echo") && strcmp(mode, "echo-fast")) ||
        is_proxy != (target != NULL)) {
        fprintf(stderr, "usage: hop_server echo|echo-fast|proxy|proxy-fast [--listen ADDR] "
                        "[--backend TARGET (proxies)] [--method PATH]\n");
        return 2;
    }
    struct ev_loop *loop = ev_default_loop(0);
    struct mm_error err = {0};
    struct rpc_context *ctx = NULL;
    struct rpc_server *s = NULL;
    int port = 0;
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_server_new(ctx, NULL, &s, &err) < 0 ||
        rpc_server_listen(s, listen, &port, &err) < 0) {
        fprintf(stderr, "hop_server: %s\n", err.msg);
        return 1;
    }
    if (target && !(backend = rpc_channel_for(ctx, target, &err))) {
        fprintf(stderr, "hop_server: %s\n", err.msg);
        return 1;
    }
    int rc;
    if (strcmp(mode, "echo") == 0)
        rc = rpc_server_register(s, method, echo, NULL, &err);
    else if (strcmp(mode, "echo-fast") == 0)
        rc = rpc_server_register_fast(s, method, echo_fast, echo, NULL, &err);
    else if (strcmp(mode, "proxy") == 0)
        rc = rpc_server_register(s, method, proxy, NULL, &err);
    else
        rc = rpc_server_register_fast(s, method, proxy_fast, proxy, NULL, &err);
    if (rc < 0 || rpc_server_start(s, &err) < 0) {
        fprintf(stderr, "hop_server: %s\n", err.msg);
        return 1;
    }
    ev_signal term, intr;
    ev_signal_init(&term, on_stop, SIGTERM);
    ev_signal_init(&intr, on_stop, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    printf("LISTENING %d\n", port);
    fflush(stdout);
    ev_run(loop, 0);
    return 0; /* the process ends here: nothing to flush */
}
