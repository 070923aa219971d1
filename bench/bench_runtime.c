/* bench_runtime.c - what serving costs: ModelInfer on the mm-runtime process (KServe V2 over
 * loopback gRPC, prediction on its worker threads) against the same prediction called directly
 * in this process through libxgboost, measured in the same run, for 1 and 64 rows per request
 * at concurrency 1 and 16. The model is the XGBoost example, built at start.
 * usage: bench_runtime MM_RUNTIME MAKE_BREAST_CANCER [seconds per cell (default 1.5)] */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "model-runtime.pb-c.h"
#include "mm/rpc.h"
#include "mm/xgb.h"
#include "testcall.h"

#define FEATURES 30
#define MAX_SAMPLES 1000000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct load {
    struct rpc_channel *ch;
    grpc_byte_buffer *request;
    double end;
    double *lat;
    size_t n;
    int in_flight;
    int failures;
};

struct slot {
    struct load *l;
    double start;
};

static void send_one(struct slot *s);

static void on_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                     void *arg)
{
    struct slot *s = arg;
    struct load *l = s->l;
    double t = now_s();
    if (response)
        grpc_byte_buffer_destroy(response);
    if (status == GRPC_STATUS_OK && l->n < MAX_SAMPLES)
        l->lat[l->n++] = t - s->start;
    else if (status != GRPC_STATUS_OK && l->failures++ == 0)
        fprintf(stderr, "ModelInfer failed: %s\n", details);
    l->in_flight--;
    if (t < l->end)
        send_one(s);
}

static void send_one(struct slot *s)
{
    s->start = now_s();
    if (rpc_unary(s->l->ch, "/inference.GRPCInferenceService/ModelInfer", s->l->request, NULL, 0,
                  10000, NULL, on_reply, s) == 0)
        s->l->in_flight++;
}

static grpc_byte_buffer *infer_request(const float *rows, int n_rows)
{
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor *ins[1] = {&in};
    int64_t shape[2] = {n_rows, FEATURES};
    ProtobufCBinaryData raw = {(size_t)n_rows * FEATURES * 4, (uint8_t *)rows};
    in.name = "input-0";
    in.datatype = "FP32";
    in.shape = shape;
    in.n_shape = 2;
    req.model_name = "bc";
    req.inputs = ins;
    req.n_inputs = 1;
    req.raw_input_contents = &raw;
    req.n_raw_input_contents = 1;
    return rpc_encode(&req.base);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_runtime MM_RUNTIME MAKE_BREAST_CANCER [seconds]\n");
        return 2;
    }
    double seconds = argc > 3 ? atof(argv[3]) : 1.5;
    char dir[] = "/tmp/mm-bench-rt-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cmd[1024], model[600];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' > /dev/null", argv[2], dir);
    if (system(cmd) != 0)
        return 1;
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", dir);

    static float rows[64 * FEATURES];
    for (int i = 0; i < 64 * FEATURES; i++)
        rows[i] = (float)((i * 37) % 100) / 7.0f;
    double *lat = malloc(MAX_SAMPLES * sizeof(double));

    /* Baseline: the same prediction, called directly. */
    struct xgb_model *xm = NULL;
    struct mm_error err = {0};
    if (xgb_model_load(model, &xm, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double direct_rps[2];
    int batch[2] = {1, 64};
    for (int b = 0; b < 2; b++) {
        size_t n = 0;
        double t0 = now_s();
        while (now_s() - t0 < seconds && n < MAX_SAMPLES) {
            float *out = NULL;
            size_t per = 0;
            if (xgb_model_predict(xm, rows, (size_t)batch[b], &out, &per, &err) < 0)
                return 1;
            free(out);
            n++;
        }
        direct_rps[b] = n / (now_s() - t0);
    }
    xgb_model_free(xm);

    char *const args[] = {argv[1], "--listen", "127.0.0.1:0", "--workers", "2", NULL};
    pid_t pid = 0;
    int port = 0;
    if (harness_spawn_listening(args, 10000, &pid, &port) < 0)
        return 1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct rpc_channel *ch = NULL;
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_channel_new(ctx, target, 0, &ch, &err) < 0)
        return 1;
    Mmesh__LoadModelRequest lr = MMESH__LOAD_MODEL_REQUEST__INIT;
    lr.modelid = "bc";
    lr.modeltype = "xgboost";
    lr.modelpath = model;
    grpc_byte_buffer *lb = rpc_encode(&lr.base);
    struct testcall lc = testcall_run(loop, ch, "/mmesh.ModelRuntime/loadModel", lb, NULL, 0,
                                      10000);
    grpc_byte_buffer_destroy(lb);
    if (lc.status != GRPC_STATUS_OK) {
        fprintf(stderr, "loadModel: %s\n", lc.details);
        return 1;
    }
    testcall_clear(&lc);

    printf("| rows/request | concurrency | mm-runtime req/s | p50 | p99 | direct libxgboost "
           "predictions/s | ratio |\n|---|---|---|---|---|---|---|\n");
    int concs[2] = {1, 16};
    for (int b = 0; b < 2; b++) {
        for (int c = 0; c < 2; c++) {
            struct load l = {.ch = ch, .request = infer_request(rows, batch[b]), .lat = lat};
            struct slot slots[16];
            double t0 = now_s();
            l.end = t0 + seconds;
            for (int i = 0; i < concs[c]; i++) {
                slots[i].l = &l;
                send_one(&slots[i]);
            }
            while (l.in_flight)
                ev_run(loop, EVRUN_ONCE);
            double elapsed = now_s() - t0;
            grpc_byte_buffer_destroy(l.request);
            if (!l.n || l.failures)
                return 1;
            qsort(lat, l.n, sizeof(double), cmp_double);
            double rps = l.n / elapsed;
            printf("| %d | %d | %.0f | %.0f us | %.0f us | %.0f | %.3f |\n", batch[b], concs[c],
                   rps, lat[l.n / 2] * 1e6, lat[(size_t)(l.n * 0.99)] * 1e6, direct_rps[b],
                   rps / direct_rps[b]);
            fflush(stdout);
        }
    }
    rpc_channel_free(ch);
    harness_stop_pid(pid, 5000);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    free(lat);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
