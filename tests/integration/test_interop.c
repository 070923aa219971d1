/* test_interop.c - real clients no one here wrote: Python grpcio (Debian python3-grpcio, with our
 * .proto compiled by python3-grpc-tools at test time) calls our C server, and our C client calls
 * a grpcio server. argv: PYTHON PROTO_DIR INTEROP_DIR. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "testcall.h"
#include "model-runtime.pb-c.h"
#include "mm/rpc.h"

static struct ev_loop *loop;
static const char *python, *proto_dir, *interop_dir;

/* ModelInfer: outputs mirror the inputs; id carries the mm-vmodel-id header. */
static void infer(struct rpc_call *c, void *arg)
{
    ProtobufCMessage *m = NULL;
    if (rpc_call_decode(c, &inference__model_infer_request__descriptor, &m) < 0)
        return;
    Inference__ModelInferRequest *req = (Inference__ModelInferRequest *)m;
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    Inference__ModelInferResponse__InferOutputTensor out[4], *outs[4];
    size_t n = req->n_inputs < 4 ? req->n_inputs : 4;
    for (size_t i = 0; i < n; i++) {
        Inference__ModelInferResponse__InferOutputTensor init =
            INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
        out[i] = init;
        out[i].name = req->inputs[i]->name;
        out[i].datatype = req->inputs[i]->datatype;
        out[i].shape = req->inputs[i]->shape;
        out[i].n_shape = req->inputs[i]->n_shape;
        out[i].contents = req->inputs[i]->contents;
        outs[i] = &out[i];
    }
    resp.outputs = outs;
    resp.n_outputs = n;
    size_t hl = 0;
    const char *h = rpc_call_header(c, "mm-vmodel-id", &hl);
    char id[128];
    snprintf(id, sizeof(id), "%.*s", h ? (int)hl : 0, h ? h : "");
    resp.model_name = req->model_name;
    resp.id = id;
    rpc_call_reply(c, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void runtime_status(struct rpc_call *c, void *arg)
{
    Mmesh__RuntimeStatusResponse r = MMESH__RUNTIME_STATUS_RESPONSE__INIT;
    r.status = MMESH__RUNTIME_STATUS_RESPONSE__STATUS__READY;
    r.capacityinbytes = 1ull << 30;
    rpc_call_reply(c, rpc_encode(&r.base), GRPC_STATUS_OK, NULL);
}

static struct rpc_call *held[4];
static int n_held;

static void hold(struct rpc_call *c, void *arg)
{
    if (n_held < 4)
        held[n_held++] = c;
    else
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many held");
}

struct child {
    pid_t pid;
    int status;
};

static bool child_exited(void *arg)
{
    struct child *c = arg;
    return waitpid(c->pid, &c->status, WNOHANG) == c->pid;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static void on_down(void *arg)
{
    *(bool *)arg = true;
}

static void test_python_client(struct rpc_context *ctx)
{
    struct mm_error err = {0};
    struct rpc_server *s = NULL;
    int port = 0;
    REQUIRE(rpc_server_new(ctx, NULL, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", &port, &err) == 0);
    REQUIRE(rpc_server_register(s, "/inference.GRPCInferenceService/ModelInfer", infer, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_register(s, "/mmesh.ModelRuntime/runtimeStatus", runtime_status, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_register(s, "/test.Hold/Hold", hold, NULL, &err) == 0);
    REQUIRE(rpc_server_start(s, &err) == 0);

    char script[512], port_s[16];
    snprintf(script, sizeof(script), "%s/client.py", interop_dir);
    snprintf(port_s, sizeof(port_s), "%d", port);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        execl(python, python, script, proto_dir, port_s, (char *)NULL);
        perror("exec python");
        _exit(127);
    }
    /* Serve on the loop until the client exits (bounded). */
    struct child c = {pid, -1};
    long long end = harness_now_ms() + 60000;
    harness_run_until(loop, child_exited, &c, 60000);
    int status = c.status;
    if (harness_now_ms() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < n_held; i++)
        rpc_call_reply(held[i], NULL, GRPC_STATUS_CANCELLED, "test over");
    n_held = 0;
    bool down = false;
    rpc_server_shutdown(s, 500, on_down, &down);
    CHECK(harness_run_until(loop, flag_set, &down, 2000));
    rpc_server_free(s);
}

static struct testcall call(struct rpc_channel *ch, const char *method,
                            const ProtobufCMessage *msg, const struct rpc_header *h, size_t nh)
{
    grpc_byte_buffer *bb = rpc_encode(msg);
    struct testcall r = testcall_run(ch, method, bb, h, nh, 10000);
    grpc_byte_buffer_destroy(bb);
    return r;
}

static void test_python_server(struct rpc_context *ctx)
{
    char script[512];
    snprintf(script, sizeof(script), "%s/server.py", interop_dir);
    int to_child[2], from_child[2];
    REQUIRE(pipe(to_child) == 0 && pipe(from_child) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[1]);
        close(from_child[0]);
        execl(python, python, script, proto_dir, (char *)NULL);
        perror("exec python");
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    FILE *out = fdopen(from_child[0], "r");
    char line[128] = "";
    int port = 0;
    /* fgets blocks until the server prints its port or exits (then EOF). */
    while (fgets(line, sizeof(line), out))
        if (sscanf(line, "PORT %d", &port) == 1)
            break;
    REQUIRE(port > 0);

    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct rpc_channel *ch = NULL;
    REQUIRE(rpc_channel_new(ctx, target, 0, &ch, &err) == 0);

    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = "mnist";
    ProtobufCBinaryData raw[2] = {{3, (uint8_t *)"abc"}, {2, (uint8_t *)"de"}};
    req.raw_input_contents = raw;
    req.n_raw_input_contents = 2;
    struct rpc_header h = {"mm-vmodel-id", "example-isvc"};
    struct testcall r = call(ch, "/inference.GRPCInferenceService/ModelInfer", &req.base, &h, 1);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    ProtobufCMessage *m = NULL;
    if (r.response &&
        rpc_decode(r.response, &inference__model_infer_response__descriptor, &m, &err) == 0) {
        Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)m;
        CHECK_STR(resp->model_name, "mnist");
        CHECK_STR(resp->id, "example-isvc");
        CHECK(resp->n_outputs == 1 && resp->outputs[0]->contents &&
              resp->outputs[0]->contents->n_fp32_contents == 1 &&
              resp->outputs[0]->contents->fp32_contents[0] == 2.0f);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        CHECK(!"ModelInfer response decodes");
    }
    if (r.response)
        grpc_byte_buffer_destroy(r.response);

    /* A Python-side error reaches us with its code and message. */
    req.model_name = "";
    r = call(ch, "/inference.GRPCInferenceService/ModelInfer", &req.base, NULL, 0);
    CHECK_INT(r.status, GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(r.details, "model_name is required") != NULL);

    Mmesh__RuntimeStatusRequest rs = MMESH__RUNTIME_STATUS_REQUEST__INIT;
    r = call(ch, "/mmesh.ModelRuntime/runtimeStatus", &rs.base, NULL, 0);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    if (r.response &&
        rpc_decode(r.response, &mmesh__runtime_status_response__descriptor, &m, &err) == 0) {
        CHECK_INT(((Mmesh__RuntimeStatusResponse *)m)->capacityinbytes, 123456789);
        CHECK_INT(((Mmesh__RuntimeStatusResponse *)m)->maxloadingconcurrency, 3);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (r.response)
        grpc_byte_buffer_destroy(r.response);

    rpc_channel_free(ch);
    close(to_child[1]); /* the server stops when its stdin closes */
    int status = 0;
    long long end = harness_now_ms() + 5000;
    while (waitpid(pid, &status, WNOHANG) != pid && harness_now_ms() < end)
        usleep(10000);
    if (harness_now_ms() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    fclose(out);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 4);
    python = argv[1];
    proto_dir = argv[2];
    interop_dir = argv[3];
    loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct mm_error err = {0};
    REQUIRE(rpc_context_new(loop, &ctx, &err) == 0);
    test_python_client(ctx);
    test_python_server(ctx);
    rpc_context_free(ctx); /* runs the completions that are still due */
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
