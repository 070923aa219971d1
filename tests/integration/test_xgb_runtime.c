/* test_xgb_runtime.c - what is particular to the mm-runtime process (XGBoost): its defaults,
 * the sizes it measures, KServe V2 inference and metadata of XGBoost models, with the example
 * model built at test time from Debian-shipped data. What every runtime must answer through the
 * runtime SPI is test_spi_conformance's, run against mm-runtime too.
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
#include "mm/rpc.h"
#include "rtclient.h"

#define FEATURES 30

static struct rt_client sc;
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
    struct testcall res = rt_call(&sc, "/inference.GRPCInferenceService/ModelInfer", &r->req.base,
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

/* ModelInfer, ModelMetadata and ModelReady with model_name "some-vmodel" and the header
 * mm-model-id: bc. */
static void header_names_model(struct infer_req *q)
{
    const struct rpc_header h[] = {{"mm-model-id", "bc"}};
    make_infer(q, "some-vmodel", 1, "FP32", false);
    grpc_byte_buffer *b = rpc_encode(&q->req.base);
    struct testcall t = testcall_run(sc.ch, "/inference.GRPCInferenceService/ModelInfer", b, h, 1,
                                     RT_CALL_MS);
    CHECK_INT(t.status, GRPC_STATUS_OK);
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (t.status == GRPC_STATUS_OK &&
        rpc_decode(t.response, &inference__model_infer_response__descriptor, &m, &err) == 0) {
        Inference__ModelInferResponse *resp = (Inference__ModelInferResponse *)m;
        float out[8];
        size_t n = 0;
        CHECK_STR(resp->model_name, "bc");
        CHECK(predictions(resp, &n, out, 8) && n == 1 && fabsf(out[0] - expected) < 1e-6f);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        fprintf(stderr, "  ModelInfer with mm-model-id: %s\n", t.details);
        CHECK(false);
    }
    testcall_clear(&t);
    /* without the header, or with one naming a model not loaded: NOT_FOUND; metadata and
     * readiness by the header too */
    CHECK(rt_header_names_model(&sc, b, "some-vmodel", "bc"));
    grpc_byte_buffer_destroy(b);
}

/* Several models dirs (--models-dir repeated, or MM_MODELS_DIR ':'-separated): a model inside
 * any of them loads, also through a symbolic link from one into another (how the node links a
 * pvc's model from its cache dir); one outside all of them, or linked to from inside, is
 * refused. */
static void models_dirs(const char *runtime, const char *dir, const char *model)
{
    char cmd[16384], a[600], b[600], c[600], env[1300], p[700];
    snprintf(a, sizeof a, "%s/dirA", dir);
    snprintf(b, sizeof b, "%s/dirB", dir);
    snprintf(c, sizeof c, "%s/dirC", dir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' '%s' '%s' && cp '%s' '%s/a.json' && cp '%s' '%s/b.json' && "
             "cp '%s' '%s/c.json' && ln -s '%s/b.json' '%s/link.json' && "
             "ln -s '%s/c.json' '%s/out.json'",
             a, b, c, model, a, model, b, model, c, b, a, c, a);
    REQUIRE(system(cmd) == 0);
    for (int round = 0; round < 2; round++) {
        char *const flags[] = {(char *)runtime, "--listen", "127.0.0.1:0", "--models-dir", a,
                               "--models-dir", b, NULL};
        char *const plain[] = {(char *)runtime, "--listen", "127.0.0.1:0", NULL};
        snprintf(env, sizeof env, "%s::%s", a, b); /* an empty element is skipped */
        if (round == 1)
            REQUIRE(setenv("MM_MODELS_DIR", env, 1) == 0);
        pid_t pid = 0;
        int port = 0;
        struct rt_client rc;
        REQUIRE(harness_spawn_listening(round == 0 ? flags : plain, 10000, &pid, &port) == 0);
        unsetenv("MM_MODELS_DIR");
        REQUIRE(rt_open(&rc, port) == 0);
        fprintf(stderr, "models dirs given by %s\n", round == 0 ? "flags" : "MM_MODELS_DIR");
        snprintf(p, sizeof p, "%s/a.json", a);
        CHECK_INT(rt_load(&rc, "in-a", "xgboost", p, NULL).code, 0);
        snprintf(p, sizeof p, "%s/b.json", b);
        CHECK_INT(rt_load(&rc, "in-b", "xgboost", p, NULL).code, 0);
        snprintf(p, sizeof p, "%s/link.json", a);
        CHECK_INT(rt_load(&rc, "linked", "xgboost", p, NULL).code, 0);
        CHECK(rt_ready(&rc, "linked"));
        snprintf(p, sizeof p, "%s/c.json", c);
        CHECK(rt_spi_failed_with(rt_load(&rc, "in-c", "xgboost", p, NULL),
                                 GRPC_STATUS_PERMISSION_DENIED, "outside the models directories"));
        snprintf(p, sizeof p, "%s/out.json", a);
        CHECK(rt_spi_failed_with(rt_load(&rc, "out", "xgboost", p, NULL),
                                 GRPC_STATUS_PERMISSION_DENIED, "outside the models directories"));
        rt_close(&rc, pid, 10000);
    }
    /* a models dir that is not one is refused at start */
    snprintf(p, sizeof p, "%s/a.json", a);
    char *const bad[] = {(char *)runtime, "--listen", "127.0.0.1:0", "--models-dir", a,
                         "--models-dir", p, NULL};
    pid_t pid = 0;
    REQUIRE(harness_spawn(bad, "/dev/null", &pid) == 0);
    int status = harness_wait_pid(pid, 10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    char dir[] = "/tmp/mm-xgb-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    REQUIRE(harness_example_model(argv[2], dir, row, FEATURES, &expected) == 0);
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
    REQUIRE(rt_open(&sc, port) == 0);

    /* runtimeStatus: our defaults, and the capacity we configured. */
    struct spi_result r = rt_status(&sc);
    REQUIRE(r.code == 0);
    CHECK_INT(r.runtime.capacity_bytes, 123456789);
    CHECK_INT(r.runtime.load_timeout_ms, 90000);
    CHECK_INT(r.runtime.default_model_size_bytes, 1000000);
    CHECK_INT(r.runtime.max_loading_concurrency, 1);
    CHECK(strncmp(r.runtime.version, "mm-runtime ", 11) == 0);

    /* loadModel: the measured size of the booster. */
    struct stat sb;
    REQUIRE(stat(model, &sb) == 0);
    uint64_t size = 0;
    long long t0 = harness_now_ms();
    r = rt_load(&sc, "bc", "xgboost", model, &size);
    fprintf(stderr, "loaded %s in %lld ms: %llu bytes measured, %lld on disk\n", model,
            harness_now_ms() - t0, (unsigned long long)size, (long long)sb.st_size);
    CHECK_INT(r.code, 0);
    /* the serialized booster (UBJSON) is smaller than the JSON file, but not absurdly */
    CHECK(size > (uint64_t)sb.st_size / 10 && size < (uint64_t)sb.st_size * 2);
    CHECK_INT(rt_load(&sc, "bc-dir", "", only, NULL).code, 0);

    /* ModelInfer: contents, raw, FP64, batch - all give the maker's prediction. */
    struct infer_req q;
    float out[8];
    size_t n = 0;
    make_infer(&q, "bc", 1, "FP32", false);
    struct testcall t = infer(&q, out, &n);
    CHECK_INT(t.status, GRPC_STATUS_OK);
    if (t.status != GRPC_STATUS_OK)
        fprintf(stderr, "  ModelInfer: %s\n", t.details);
    CHECK(n == 1 && fabsf(out[0] - expected) < 1e-6f);
    if (n == 1)
        fprintf(stderr, "predict = %.9g, maker expected %.9g\n", out[0], expected);
    make_infer(&q, "bc", 1, "FP32", true);
    t = infer(&q, out, &n);
    CHECK(t.status == GRPC_STATUS_OK && n == 1 && fabsf(out[0] - expected) < 1e-6f);
    make_infer(&q, "bc-dir", 1, "FP64", false);
    t = infer(&q, out, &n);
    CHECK(t.status == GRPC_STATUS_OK && n == 1 && fabsf(out[0] - expected) < 1e-6f);
    make_infer(&q, "bc", 3, "FP64", true);
    t = infer(&q, out, &n);
    CHECK(t.status == GRPC_STATUS_OK && n == 3 && fabsf(out[2] - expected) < 1e-6f);
    for (int raw = 0; raw < 2; raw++) { /* an empty batch has an empty answer */
        make_infer(&q, "bc", 0, "FP32", raw);
        n = 99;
        t = infer(&q, out, &n);
        CHECK(t.status == GRPC_STATUS_OK && n == 0);
    }

    /* The mm-model-id header names the model instead of model_name (a mesh node forwards a
     * vmodel's name untouched): the answer names the concrete id. */
    header_names_model(&q);

    /* Bad input: clear INVALID_ARGUMENT / NOT_FOUND, the runtime keeps serving. */
    make_infer(&q, "bc", 1, "INT32", false);
    CHECK(rt_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT, "model expects 'FP32'"));
    make_infer(&q, "bc", 1, "FP32", false);
    q.shape[1] = 29;
    CHECK(rt_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                         "expected shape [-1, 30], got [1, 29]"));
    make_infer(&q, "bc", 2, "FP32", false);
    q.contents.n_fp32_contents = 30;
    CHECK(rt_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                         "30 FP32 values for shape [2, 30], which needs 60"));
    make_infer(&q, "bc", 1, "FP32", true);
    q.raw.len = 7;
    CHECK(rt_failed_with(infer(&q, out, &n), GRPC_STATUS_INVALID_ARGUMENT,
                         "raw contents hold 7 bytes"));
    /* Metadata. */
    Inference__ModelMetadataRequest mm = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mm.name = "bc";
    ProtobufCMessage *m = NULL;
    t = rt_call(&sc, "/inference.GRPCInferenceService/ModelMetadata", &mm.base,
                &inference__model_metadata_response__descriptor, &m);
    REQUIRE(t.status == GRPC_STATUS_OK && m);
    Inference__ModelMetadataResponse *md = (Inference__ModelMetadataResponse *)m;
    CHECK_STR(md->platform, "xgboost");
    CHECK(md->n_inputs == 1 && strcmp(md->inputs[0]->datatype, "FP32") == 0 &&
          md->inputs[0]->n_shape == 2 && md->inputs[0]->shape[0] == -1 &&
          md->inputs[0]->shape[1] == FEATURES);
    CHECK(md->n_outputs == 1 && strcmp(md->outputs[0]->name, "predict") == 0);
    protobuf_c_message_free_unpacked(m, NULL);
    Inference__ServerMetadataRequest smr = INFERENCE__SERVER_METADATA_REQUEST__INIT;
    rt_call(&sc, "/inference.GRPCInferenceService/ServerMetadata", &smr.base,
            &inference__server_metadata_response__descriptor, &m);
    CHECK(m && strcmp(((Inference__ServerMetadataResponse *)m)->name, "mm-runtime") == 0);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    /* A file that is no model: XGBoost's own words, nothing half-loaded. */
    CHECK(rt_spi_failed_with(rt_load(&sc, "x", "xgboost", junk, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "cannot load XGBoost model"));
    CHECK(!rt_ready(&sc, "x"));

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

    rt_close(&sc, pid, 10000);
    models_dirs(argv[1], dir, model);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
