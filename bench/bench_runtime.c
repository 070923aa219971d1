/* bench_runtime.c - what serving costs: ModelInfer on a runtime process (KServe V2 over
 * loopback gRPC) against the same prediction called directly, measured in the same run, for 1
 * and 64 rows per request at concurrency 1 and 16.
 * - mm-runtime (C, XGBoost example model) against libxgboost called in this process;
 * - with PYTHON SERVER_PY MAKE_MNIST_SVM_PY: the sklearn runtime (example MNIST SVM) against
 *   sklearn's predict called in a Python process.
 * usage: bench_runtime MM_RUNTIME MAKE_BREAST_CANCER [seconds per cell (default 1.5)]
 *                      [PYTHON SERVER_PY MAKE_MNIST_SVM_PY] */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "loadgen.h"
#include "model-runtime.pb-c.h"
#include "mm/rpc.h"
#include "mm/xgb.h"
#include "rtclient.h"

#define MAX_FEATURES 64
#define MAX_SAMPLES 1000000

struct bench {
    const char *name;     /* column title: "mm-runtime", "sklearn runtime" */
    const char *baseline; /* "direct libxgboost predictions/s" */
    char *const *args;    /* the runtime's command line */
    const char *model_id, *model_type, *model_path;
    const float *rows;
    int features;
    double direct_rps[2]; /* for 1 and 64 rows */
    double seconds;
};

static const int batch[2] = {1, 64};

/* Start the runtime, load the model, print a table of served vs direct rates. 0 or -1. */
static int serve_and_measure(const struct bench *b, double *lat)
{
    pid_t pid = 0;
    int port = 0;
    if (harness_spawn_listening(b->args, 60000, &pid, &port) < 0)
        return -1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct rpc_channel *ch = NULL;
    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_channel_new(ctx, target, 0, &ch, &err) < 0)
        return -1;
    Mmesh__LoadModelRequest lr = MMESH__LOAD_MODEL_REQUEST__INIT;
    lr.modelid = (char *)b->model_id;
    lr.modeltype = (char *)b->model_type;
    lr.modelpath = (char *)b->model_path;
    grpc_byte_buffer *lb = rpc_encode(&lr.base);
    struct rpc_reply lc;
    rpc_unary_wait(ch, "/mmesh.ModelRuntime/loadModel", lb, NULL, 0, 30000, &lc);
    grpc_byte_buffer_destroy(lb);
    if (lc.status != GRPC_STATUS_OK) {
        fprintf(stderr, "loadModel: %s\n", lc.details);
        return -1;
    }
    rpc_reply_clear(&lc);

    printf("| rows/request | concurrency | %s req/s | p50 | p99 | %s | ratio |\n"
           "|---|---|---|---|---|---|---|\n",
           b->name, b->baseline);
    int concs[2] = {1, 16};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        for (int c = 0; c < 2 && rc == 0; c++) {
            grpc_byte_buffer *request =
                rt_infer_request_fp32(b->model_id, "input-0", b->rows, batch[k], b->features, true);
            struct loadgen_stats l =
                loadgen_run(loop, ch, "/inference.GRPCInferenceService/ModelInfer", request,
                            concs[c], b->seconds, lat, MAX_SAMPLES);
            grpc_byte_buffer_destroy(request);
            if (!l.n || l.failures) {
                rc = -1;
                break;
            }
            printf("| %d | %d | %.0f | %.0f us | %.0f us | %.0f | %.3f |\n", batch[k], concs[c],
                   l.rps, l.p50_us, l.p99_us, b->direct_rps[k], l.rps / b->direct_rps[k]);
            fflush(stdout);
        }
    }
    rpc_channel_free(ch);
    harness_stop_pid(pid, 5000);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    return rc;
}

/* The pixels both sides use: 64 rows of 64, value (i * 37) % 17. */
static float pixel(int i)
{
    return (float)((i * 37) % 17);
}

/* sklearn's predict called directly in a Python process, for 1 and 64 rows: predictions/s. */
static int python_direct(const char *python, const char *model, double seconds, double rps[2])
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "'%s' -c 'import sys, time, joblib, numpy as np\n"
             "m = joblib.load(sys.argv[1])\n"
             "x = ((np.arange(64 * 64) * 37) %% 17).astype(np.float32).reshape(64, 64)\n"
             "for n in (1, 64):\n"
             "    k = 0; t0 = time.perf_counter()\n"
             "    while time.perf_counter() - t0 < float(sys.argv[2]):\n"
             "        m.predict(x[:n]); k += 1\n"
             "    print(k / (time.perf_counter() - t0))' '%s' %g",
             python, model, seconds);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int got = fscanf(p, "%lf %lf", &rps[0], &rps[1]);
    return pclose(p) == 0 && got == 2 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (argc > 4 && argc != 7)) {
        fprintf(stderr, "usage: bench_runtime MM_RUNTIME MAKE_BREAST_CANCER [seconds] [PYTHON "
                        "SERVER_PY MAKE_MNIST_SVM_PY]\n");
        return 2;
    }
    double seconds = argc > 3 ? atof(argv[3]) : 1.5;
    char dir[] = "/tmp/mm-bench-rt-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cmd[1024], model[600], mnist[600];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' > /dev/null", argv[2], dir);
    if (system(cmd) != 0)
        return 1;
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", dir);

    static float rows[64 * MAX_FEATURES];
    for (int i = 0; i < 64 * MAX_FEATURES; i++)
        rows[i] = (float)((i * 37) % 100) / 7.0f;
    double *lat = malloc(MAX_SAMPLES * sizeof(double));

    /* Baseline: the same prediction, called directly. */
    struct xgb_model *xm = NULL;
    struct mm_error err = {0};
    if (xgb_model_load(model, NULL, &xm, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char *const xgb_args[] = {argv[1], "--listen", "127.0.0.1:0", "--workers", "2", NULL};
    struct bench xb = {"mm-runtime", "direct libxgboost predictions/s",
                       xgb_args,     "bc",
                       "xgboost",    model,
                       rows,         30,
                       {0, 0},       seconds};
    for (int k = 0; k < 2; k++) {
        size_t n = 0;
        double t0 = loadgen_now();
        while (loadgen_now() - t0 < seconds && n < MAX_SAMPLES) {
            float *out = NULL;
            size_t per = 0;
            if (xgb_model_predict(xm, rows, (size_t)batch[k], &out, &per, &err) < 0)
                return 1;
            free(out);
            n++;
        }
        xb.direct_rps[k] = n / (loadgen_now() - t0);
    }
    xgb_model_free(xm);
    if (serve_and_measure(&xb, lat) < 0)
        return 1;

    if (argc == 7) {
        snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' > /dev/null", argv[4], argv[6], dir);
        if (system(cmd) != 0)
            return 1;
        snprintf(mnist, sizeof(mnist), "%s/sklearn/mnist-svm.joblib", dir);
        static float pixels[64 * 64];
        for (int i = 0; i < 64 * 64; i++)
            pixels[i] = pixel(i);
        char *const sk_args[] = {argv[4], argv[5],       "--listen", "127.0.0.1:0", "--workers",
                                 "2",     "--log-level", "warn",     NULL};
        struct bench sb = {"sklearn runtime",
                           "direct sklearn predictions/s (Python)",
                           sk_args,
                           "mnist",
                           "sklearn",
                           mnist,
                           pixels,
                           64,
                           {0, 0},
                           seconds};
        printf("\n");
        if (python_direct(argv[4], mnist, seconds, sb.direct_rps) < 0 ||
            serve_and_measure(&sb, lat) < 0)
            return 1;
    }
    free(lat);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
