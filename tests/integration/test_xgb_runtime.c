/* test_xgb_runtime.c - the mm-runtime process (XGBoost) through its runtime SPI and KServe V2
 * inference, with the example model built at test time from Debian-shipped data.
 * argv: MM_RUNTIME MAKE_BREAST_CANCER */
#include <errno.h>
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "spiclient.h"
#include "model-runtime.pb-c.h"
#include "mm/rpc.h"

#define FEATURES 30

static struct spi_client sc;
static float row[FEATURES];
static float expected;

/* An inference request for `rows` copies of the example row. */
struct infer_req {
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in;
    Inference__ModelInferRequest__InferInputTensor *ins[1];
    Inference__InferTensorContents contents;
    int64_t shape[2];
    float data[FEATURES * 4];
    double data64[FEATURES * 4];
    ProtobufCBinaryData raw;
};

static void make_infer(struct infer_req *r, const char *model, int rows, const char *dtype,
                       bool raw)
{
    Inference__ModelInferRequest init = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in_init =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__InferTensorContents c_init = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    r->req = init;
    r->in = in_init;
    r->contents = c_init;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < FEATURES; j++) {
            r->data[i * FEATURES + j] = row[j];
            r->data64[i * FEATURES + j] = row[j];
        }
    r->shape[0] = rows;
    r->shape[1] = FEATURES;
    r->in.name = "input-0";
    r->in.datatype = (char *)dtype;
    r->in.shape = r->shape;
    r->in.n_shape = 2;
    bool fp64 = strcmp(dtype, "FP64") == 0;
    if (raw) {
        r->raw.data = fp64 ? (uint8_t *)r->data64 : (uint8_t *)r->data;
        r->raw.len = (size_t)rows * FEATURES * (fp64 ? 8 : 4);
        r->req.raw_input_contents = &r->raw;
        r->req.n_raw_input_contents = 1;
    } else if (fp64) {
        r->contents.fp64_contents = r->data64;
        r->contents.n_fp64_contents = (size_t)rows * FEATURES;
        r->in.contents = &r->contents;
    } else {
        r->contents.fp32_contents = r->data;
        r->contents.n_fp32_contents = (size_t)rows * FEATURES;
        r->in.contents = &r->contents;
    }
    r->ins[0] = &r->in;
    r->req.inputs = r->ins;
    r->req.n_inputs = 1;
    r->req.model_name = (char *)model;
    r->req.id = "req-1";
}

/* Predictions of a reply (contents or raw), count in *n; NULL if none. */
static float *predictions(Inference__ModelInferResponse *resp, size_t *n, float *buf, size_t cap)
{
    *n = 0;
    if (resp->n_outputs != 1)
        return NULL;
    Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[0];
    if (strcmp(o->name, "predict") != 0 || strcmp(o->datatype, "FP32") != 0)
        return NULL;
    if (resp->n_raw_output_contents == 1) {
        *n = resp->raw_output_contents[0].len / 4;
        if (*n > cap)
            return NULL;
        if (*n)
            memcpy(buf, resp->raw_output_contents[0].data, *n * 4);
        return buf;
    }
    if (o->contents && o->contents->n_fp32_contents <= cap) {
        *n = o->contents->n_fp32_contents;
        if (*n)
            memcpy(buf, o->contents->fp32_contents, *n * 4);
        return buf;
    }
    return NULL;
}

static struct testcall infer(struct infer_req *r, float *out, size_t *n)
{
    ProtobufCMessage *m = NULL;
    struct testcall res = spi_call(&sc, "/inference.GRPCInferenceService/ModelInfer", &r->req.base,
                                   &inference__model_infer_response__descriptor, &m);
    *n = 0;
    if (m) {
        Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)m;
        if (!predictions(resp, n, out, 8) || strcmp(resp->model_name, r->req.model_name) != 0 ||
            strcmp(resp->id, "req-1") != 0)
            res.status = GRPC_STATUS_DATA_LOSS;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return res;
}

/* Build the example model; read the expected prediction and the row it is for. */
static void make_model(const char *maker, const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker, dir);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char line[4096];
    bool got_expected = false, got_row = false;
    while (fgets(line, sizeof(line), p)) {
        if (sscanf(line, "expected predict[0] = %f", &expected) == 1)
            got_expected = true;
        if (strncmp(line, "row[0] =", 8) == 0) {
            char *s = line + 8;
            int j = 0;
            for (char *end; j < FEATURES; j++, s = end) {
                row[j] = strtof(s, &end);
                if (end == s)
                    break;
            }
            got_row = j == FEATURES;
        }
        if (strstr(line, "held-out accuracy"))
            fprintf(stderr, "%s", line);
    }
    REQUIRE(pclose(p) == 0);
    REQUIRE(got_expected && got_row);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    char dir[] = "/tmp/mm-xgb-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    make_model(argv[2], dir);
    char model[512], only[512], only_model[600], junk[512], cmd[4096];
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", dir);
    snprintf(only, sizeof(only), "%s/only", dir);
    snprintf(only_model, sizeof(only_model), "%s/model.json", only);
    snprintf(junk, sizeof(junk), "%s/junk.json", dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s' '%s' && echo 'not a model' > '%s'", only,
             model, only_model, junk);
    REQUIRE(system(cmd) == 0);

    char *const args[] = {argv[1],     "--listen",  "127.0.0.1:0", "--capacity-bytes",
                          "123456789", "--workers", "2",           NULL};
    pid_t pid = 0;
    int port = 0;
    REQUIRE(harness_spawn_listening(args, 10000, &pid, &port) == 0);
    REQUIRE(spi_client_open(&sc, port) == 0);

    /* runtimeStatus: READY with what we configured. */
    Mmesh__RuntimeStatusRequest rs = MMESH__RUNTIME_STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    struct testcall r = spi_call(&sc, "/mmesh.ModelRuntime/runtimeStatus", &rs.base,
                                 &mmesh__runtime_status_response__descriptor, &m);
    REQUIRE(r.status == GRPC_STATUS_OK && m);
    Mmesh__RuntimeStatusResponse *st = (Mmesh__RuntimeStatusResponse *)m;
    CHECK_INT(st->status, MMESH__RUNTIME_STATUS_RESPONSE__STATUS__READY);
    CHECK_INT(st->capacityinbytes, 123456789);
    CHECK_INT(st->modelloadingtimeoutms, 90000);
    CHECK_INT(st->defaultmodelsizeinbytes, 1000000);
    CHECK_INT(st->maxloadingconcurrency, 1);
    protobuf_c_message_free_unpacked(m, NULL);

    /* predictModelSize: disk size x 1.25. */
    struct stat sb;
    REQUIRE(stat(model, &sb) == 0);
    Mmesh__PredictModelSizeRequest ps = MMESH__PREDICT_MODEL_SIZE_REQUEST__INIT;
    ps.modelid = "bc";
    ps.modelpath = model;
    r = spi_call(&sc, "/mmesh.ModelRuntime/predictModelSize", &ps.base,
                 &mmesh__predict_model_size_response__descriptor, &m);
    CHECK(m && ((Mmesh__PredictModelSizeResponse *)m)->sizeinbytes ==
                   (uint64_t)sb.st_size + (uint64_t)sb.st_size / 4);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);

    /* loadModel: measured size, idempotent; modelSize agrees. */
    uint64_t size = 0, again = 0;
    long long t0 = harness_now_ms();
    r = spi_load(&sc, "bc", "xgboost", model, &size);
    fprintf(stderr, "loaded %s in %lld ms: %llu bytes measured, %lld on disk\n", model,
            harness_now_ms() - t0, (unsigned long long)size, (long long)sb.st_size);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    /* the serialized booster (UBJSON) is smaller than the JSON file, but not absurdly */
    CHECK(size > (uint64_t)sb.st_size / 10 && size < (uint64_t)sb.st_size * 2);
    r = spi_load(&sc, "bc", "xgboost", model, &again);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    CHECK_INT(again, size);
    Mmesh__ModelSizeRequest ms = MMESH__MODEL_SIZE_REQUEST__INIT;
    ms.modelid = "bc";
    r = spi_call(&sc, "/mmesh.ModelRuntime/modelSize", &ms.base,
                 &mmesh__model_size_response__descriptor, &m);
    CHECK(m && ((Mmesh__ModelSizeResponse *)m)->sizeinbytes == size);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    CHECK(spi_ready(&sc, "bc"));
    CHECK(!spi_ready(&sc, "nope"));

    /* A directory holding one model file loads too. */
    r = spi_load(&sc, "bc-dir", "", only, &again);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    CHECK_INT(again, size);

    /* ModelInfer: contents, raw, FP64, batch - all give the maker's prediction. */
    struct infer_req q;
    float out[8];
    size_t n = 0;
    make_infer(&q, "bc", 1, "FP32", false);
    r = infer(&q, out, &n);
    CHECK_INT(r.status, GRPC_STATUS_OK);
    if (r.status != GRPC_STATUS_OK)
        fprintf(stderr, "  ModelInfer: %s\n", r.details);
    CHECK(n == 1 && fabsf(out[0] - expected) < 1e-6f);
    if (n == 1)
        fprintf(stderr, "predict = %.9g, maker expected %.9g\n", out[0], expected);
    make_infer(&q, "bc", 1, "FP32", true);
    r = infer(&q, out, &n);
    CHECK(r.status == GRPC_STATUS_OK && n == 1 && fabsf(out[0] - expected) < 1e-6f);
    make_infer(&q, "bc-dir", 1, "FP64", false);
    r = infer(&q, out, &n);
    CHECK(r.status == GRPC_STATUS_OK && n == 1 && fabsf(out[0] - expected) < 1e-6f);
    make_infer(&q, "bc", 3, "FP64", true);
    r = infer(&q, out, &n);
    CHECK(r.status == GRPC_STATUS_OK && n == 3 && fabsf(out[2] - expected) < 1e-6f);
    for (int raw = 0; raw < 2; raw++) { /* an empty batch has an empty answer */
        make_infer(&q, "bc", 0, "FP32", raw);
        n = 99;
        r = infer(&q, out, &n);
        CHECK(r.status == GRPC_STATUS_OK && n == 0);
    }

    /* Bad input: clear INVALID_ARGUMENT / NOT_FOUND, the runtime keeps serving. */
    make_infer(&q, "bc", 1, "INT32", false);
    CHECK(
        spi_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT, "model expects 'FP32'"));
    make_infer(&q, "bc", 1, "FP32", false);
    q.shape[1] = 29;
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                          "expected shape [-1, 30], got [1, 29]"));
    make_infer(&q, "bc", 2, "FP32", false);
    q.contents.n_fp32_contents = 30;
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                          "30 FP32 values for shape [2, 30], which needs 60"));
    make_infer(&q, "bc", 1, "FP32", true);
    q.raw.len = 7;
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                          "raw contents hold 7 bytes"));
    make_infer(&q, "unknown-model", 1, "FP32", false);
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_NOT_FOUND,
                          "model unknown-model is not loaded"));
    make_infer(&q, "", 1, "FP32", false);
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                          "model_name is required"));
    CHECK(spi_failed_with(
        spi_call_raw(&sc, "/inference.GRPCInferenceService/ModelInfer", "\x0a\xff\xff\x01x", 5),
        GRPC_STATUS_INVALID_ARGUMENT, "malformed inference.ModelInferRequest"));

    /* Metadata. */
    Inference__ModelMetadataRequest mm = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mm.name = "bc";
    r = spi_call(&sc, "/inference.GRPCInferenceService/ModelMetadata", &mm.base,
                 &inference__model_metadata_response__descriptor, &m);
    REQUIRE(r.status == GRPC_STATUS_OK && m);
    Inference__ModelMetadataResponse *md = (Inference__ModelMetadataResponse *)m;
    CHECK_STR(md->platform, "xgboost");
    CHECK(md->n_inputs == 1 && strcmp(md->inputs[0]->datatype, "FP32") == 0 &&
          md->inputs[0]->n_shape == 2 && md->inputs[0]->shape[0] == -1 &&
          md->inputs[0]->shape[1] == FEATURES);
    CHECK(md->n_outputs == 1 && strcmp(md->outputs[0]->name, "predict") == 0);
    protobuf_c_message_free_unpacked(m, NULL);
    Inference__ServerMetadataRequest smr = INFERENCE__SERVER_METADATA_REQUEST__INIT;
    r = spi_call(&sc, "/inference.GRPCInferenceService/ServerMetadata", &smr.base,
                 &inference__server_metadata_response__descriptor, &m);
    CHECK(m && strcmp(((Inference__ServerMetadataResponse *)m)->name, "mm-runtime") == 0);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    Inference__ServerLiveRequest slr = INFERENCE__SERVER_LIVE_REQUEST__INIT;
    r = spi_call(&sc, "/inference.GRPCInferenceService/ServerLive", &slr.base,
                 &inference__server_live_response__descriptor, &m);
    CHECK(m && ((Inference__ServerLiveResponse *)m)->live);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);

    /* Bad loads: clear errors, nothing half-loaded. */
    CHECK(spi_failed_with(spi_load(&sc, "x", "sklearn", model, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                          "serves xgboost models, not 'sklearn'"));
    CHECK(spi_failed_with(spi_load(&sc, "x", "xgboost", "/nonexistent/model.json", NULL),
                          GRPC_STATUS_NOT_FOUND, "/nonexistent/model.json"));
    CHECK(spi_failed_with(spi_load(&sc, "x", "xgboost", junk, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                          "cannot load XGBoost model"));
    char two[600];
    snprintf(two, sizeof(two), "%s/xgboost", dir); /* the model and its sample request */
    CHECK(spi_failed_with(spi_load(&sc, "x", "xgboost", two, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                          "holds 2 model files"));
    CHECK(!spi_ready(&sc, "x"));

    /* 50 concurrent predictions; then 20 more with an unload right behind them: those already
     * accepted still complete (the model is freed after the last one). */
    enum { C = 50 };
    struct testcall many[C] = {0};
    make_infer(&q, "bc", 1, "FP32", false);
    grpc_byte_buffer *qb = rpc_encode(&q.req.base);
    for (int i = 0; i < C; i++)
        REQUIRE(rpc_unary(sc.ch, "/inference.GRPCInferenceService/ModelInfer", qb, NULL, 0, 15000,
                          NULL, testcall_cb, &many[i], NULL) == 0);
    testcall_wait(sc.loop, many, C, 20000);
    int ok = 0;
    for (int i = 0; i < C; i++) {
        ProtobufCMessage *pm = NULL;
        struct mm_error err = {0};
        if (many[i].status == GRPC_STATUS_OK &&
            rpc_decode(many[i].response, &inference__model_infer_response__descriptor, &pm, &err) ==
                0) {
            size_t k = 0;
            ok += predictions((Inference__ModelInferResponse *)pm, &k, out, 8) && k == 1 &&
                  fabsf(out[0] - expected) < 1e-6f;
            protobuf_c_message_free_unpacked(pm, NULL);
        }
        if (many[i].response)
            grpc_byte_buffer_destroy(many[i].response);
    }
    CHECK_INT(ok, C);
    grpc_byte_buffer_destroy(qb);

    /* unload: not ready, inference NOT_FOUND; unloading again (or an unknown id) is OK. */
    CHECK_INT(spi_unload(&sc, "bc").status, GRPC_STATUS_OK);
    CHECK(!spi_ready(&sc, "bc"));
    make_infer(&q, "bc", 1, "FP32", false);
    CHECK(spi_failed_with(infer(&q, out, &n), GRPC_STATUS_NOT_FOUND, "not loaded"));
    CHECK_INT(spi_unload(&sc, "bc").status, GRPC_STATUS_OK);

    /* runtimeStatus purges what is loaded. */
    CHECK(spi_ready(&sc, "bc-dir"));
    r = spi_call(&sc, "/mmesh.ModelRuntime/runtimeStatus", &rs.base,
                 &mmesh__runtime_status_response__descriptor, &m);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    CHECK(!spi_ready(&sc, "bc-dir"));

    /* Unloaded, or purged by runtimeStatus, while loading: the load answers ABORTED, inference
     * meanwhile UNAVAILABLE, and the id loads normally afterwards. */
    char fifo[600];
    snprintf(fifo, sizeof(fifo), "%s/held.json", dir);
    CHECK(spi_cancel_during_load(&sc, pid, "held", "xgboost", fifo, model, false));
    CHECK(spi_cancel_during_load(&sc, pid, "held", "xgboost", fifo, model, true));

    /* A load that fails, asked for twice while it runs: both get its error. */
    CHECK(spi_shared_failed_load(&sc, pid, "held", "xgboost", fifo));

    /* SIGTERM: a graceful exit. */
    int status = spi_client_close(&sc, pid, 10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* SIGTERM while a load is stuck reading its model: in-flight calls are cancelled after the
     * grace period, the stuck job gets as long again, then the process exits by itself. */
    snprintf(fifo, sizeof(fifo), "%s/stuck.json", dir);
    char *const grace_args[] = {argv[1], "--listen", "127.0.0.1:0", "--grace-ms", "300", NULL};
    struct testcall stuck;
    status = spi_term_during_stuck_load(grace_args, "xgboost", fifo, 5000, &stuck);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(stuck.done && stuck.status != GRPC_STATUS_OK);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
