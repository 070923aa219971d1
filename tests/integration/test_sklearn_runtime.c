/* test_sklearn_runtime.c - what is particular to the sklearn runtime process (Debian Python):
 * its defaults, the sizes it measures, KServe V2 inference of sklearn models of several kinds
 * and the errors their files give, driven by our C client, with the example model and a few
 * test models built at test time from data python3-sklearn ships. What every runtime must answer
 * through the runtime SPI is test_spi_conformance's, run against this runtime too.
 * argv: PYTHON SERVER_PY MAKE_MNIST_SVM_PY SKLEARN_MODELS_PY */
#include <cjson/cJSON.h>
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

#define DIGIT 64 /* 8x8 pixels */
#define MAXV 256 /* values per test request */

static struct rt_client sc;
static double digit[DIGIT]; /* the walkthrough's sample input: an "8" */
static double diabetes[10], diabetes_expected, two_targets_expected[2];
static double iris[4], iris_proba[3];
static char iris_expected[32];

/* ------------------------------------------------------------------------ requests */

struct tensor_req {
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *ins[2];
    Inference__ModelInferRequest__InferRequestedOutputTensor outs[2], *out_ptrs[2];
    Inference__InferTensorContents contents;
    int64_t shape[2];
    float f32[MAXV];
    double f64[MAXV];
    int32_t i32[MAXV];
    int64_t i64[MAXV];
    ProtobufCBinaryData raw;
};

/* rows copies of row (features values) as dtype, in contents or raw bytes. */
static void make_req(struct tensor_req *r, const char *model, const double *row, size_t features,
                     size_t rows, const char *dtype, bool raw)
{
    Inference__ModelInferRequest init = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in_init =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__InferTensorContents c_init = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    REQUIRE(rows * features <= MAXV);
    r->req = init;
    r->in = in_init;
    r->contents = c_init;
    size_t count = rows * features;
    for (size_t i = 0; i < count; i++) {
        double v = row[i % features];
        r->f32[i] = (float)v;
        r->f64[i] = v;
        r->i32[i] = (int32_t)v;
        r->i64[i] = (int64_t)v;
    }
    r->shape[0] = (int64_t)rows;
    r->shape[1] = (int64_t)features;
    r->in.name = "input-0";
    r->in.datatype = (char *)dtype;
    r->in.shape = r->shape;
    r->in.n_shape = 2;
    struct {
        const char *name;
        void *data;
        size_t width;
    } types[] = {{"FP32", r->f32, 4},
                 {"FP64", r->f64, 8},
                 {"INT32", r->i32, 4},
                 {"INT64", r->i64, 8},
                 {"BYTES", r->f32, 4}};
    size_t t = 0;
    while (t < 4 && strcmp(types[t].name, dtype) != 0)
        t++;
    if (raw) {
        r->raw.data = types[t].data;
        r->raw.len = count * types[t].width;
        r->req.raw_input_contents = &r->raw;
        r->req.n_raw_input_contents = 1;
    } else {
        switch (t) {
        case 1:
            r->contents.fp64_contents = r->f64, r->contents.n_fp64_contents = count;
            break;
        case 2:
            r->contents.int_contents = r->i32, r->contents.n_int_contents = count;
            break;
        case 3:
            r->contents.int64_contents = r->i64, r->contents.n_int64_contents = count;
            break;
        default:
            r->contents.fp32_contents = r->f32, r->contents.n_fp32_contents = count;
            break;
        }
        r->in.contents = &r->contents;
    }
    r->ins[0] = &r->in;
    r->req.inputs = r->ins;
    r->req.n_inputs = 1;
    r->req.model_name = (char *)model;
    r->req.id = "req-7";
}

/* Ask for these outputs by name. */
static void want_outputs(struct tensor_req *r, const char *a, const char *b)
{
    Inference__ModelInferRequest__InferRequestedOutputTensor init =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    const char *names[2] = {a, b};
    size_t n = 0;
    for (size_t i = 0; i < 2; i++)
        if (names[i]) {
            r->outs[n] = init;
            r->outs[n].name = (char *)names[i];
            r->out_ptrs[n] = &r->outs[n];
            n++;
        }
    r->req.outputs = r->out_ptrs;
    r->req.n_outputs = n;
}

/* ModelInfer; *resp (caller frees) set when OK. */
static struct testcall infer(struct tensor_req *r, Inference__ModelInferResponse **resp)
{
    ProtobufCMessage *m = NULL;
    struct testcall c = rt_call(&sc, "/inference.GRPCInferenceService/ModelInfer", &r->req.base,
                                &inference__model_infer_response__descriptor, &m);
    *resp = (Inference__ModelInferResponse *)m;
    if (c.status != GRPC_STATUS_OK)
        fprintf(stderr, "  ModelInfer %s: status %d %s\n", r->req.model_name, c.status, c.details);
    return c;
}

static void free_resp(Inference__ModelInferResponse *resp)
{
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* The INT64 predictions of a one-output reply (contents or raw) into out; count or -1. */
static int int64_predictions(const Inference__ModelInferResponse *resp, int64_t *out, size_t cap)
{
    if (!resp || resp->n_outputs != 1 || strcmp(resp->outputs[0]->name, "predict") != 0 ||
        strcmp(resp->outputs[0]->datatype, "INT64") != 0)
        return -1;
    const Inference__ModelInferResponse__InferOutputTensor *o = resp->outputs[0];
    size_t n;
    if (resp->n_raw_output_contents == 1) {
        n = resp->raw_output_contents[0].len / 8;
        if (n > cap || resp->raw_output_contents[0].len % 8)
            return -1;
        memcpy(out, resp->raw_output_contents[0].data, n * 8);
    } else {
        if (!o->contents || o->contents->n_int64_contents > cap)
            return -1;
        n = o->contents->n_int64_contents;
        memcpy(out, o->contents->int64_contents, n * 8);
    }
    if (o->n_shape != 1 || o->shape[0] != (int64_t)n)
        return -1;
    return (int)n;
}

/* One infer of the digit with these options; the predicted class, or -1. */
static int64_t digit_class(const char *model, size_t rows, const char *dtype, bool raw)
{
    struct tensor_req q;
    make_req(&q, model, digit, DIGIT, rows, dtype, raw);
    Inference__ModelInferResponse *resp = NULL;
    infer(&q, &resp);
    int64_t got[8] = {0};
    int n = int64_predictions(resp, got, 8);
    bool echoed = resp && strcmp(resp->model_name, model) == 0 && strcmp(resp->id, "req-7") == 0;
    free_resp(resp);
    if (n != (int)rows || !echoed)
        return -1;
    for (int i = 1; i < n; i++)
        if (got[i] != got[0])
            return -1;
    return got[0];
}

static Inference__ModelMetadataResponse *metadata(const char *model)
{
    Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    req.name = (char *)model;
    ProtobufCMessage *m = NULL;
    rt_call(&sc, "/inference.GRPCInferenceService/ModelMetadata", &req.base,
            &inference__model_metadata_response__descriptor, &m);
    return (Inference__ModelMetadataResponse *)m;
}

/* ------------------------------------------------------------------------ fixtures */

/* Run a maker; hand each output line to line_cb. */
static void run_maker(const char *python, const char *script, const char *dir,
                      void (*line_cb)(const char *))
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", python, script, dir);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char line[8192];
    while (fgets(line, sizeof(line), p))
        line_cb(line);
    REQUIRE(pclose(p) == 0);
}

static bool maker_said_8;

static void mnist_line(const char *line)
{
    int expected = -1;
    if (sscanf(line, "expected predict[0] = %d", &expected) == 1)
        maker_said_8 = expected == 8;
    if (strstr(line, "held-out accuracy") || strstr(line, "wrote"))
        fprintf(stderr, "maker: %s", line);
}

static size_t parse_doubles(const char *s, double *out, size_t cap)
{
    size_t n = 0;
    for (char *end; n < cap; n++, s = end) {
        out[n] = strtod(s, &end);
        if (end == s)
            break;
    }
    return n;
}

static int models_seen;

static void models_line(const char *line)
{
    const char *v = strstr(line, " = ");
    if (!v)
        return;
    v += 3;
    if (strncmp(line, "regressor row", 13) == 0)
        models_seen += parse_doubles(v, diabetes, 10) == 10;
    else if (strncmp(line, "regressor expected", 18) == 0)
        models_seen += parse_doubles(v, &diabetes_expected, 1) == 1;
    else if (strncmp(line, "two-targets expected", 20) == 0)
        models_seen += parse_doubles(v, two_targets_expected, 2) == 2;
    else if (strncmp(line, "iris row", 8) == 0)
        models_seen += parse_doubles(v, iris, 4) == 4;
    else if (strncmp(line, "iris proba", 10) == 0)
        models_seen += parse_doubles(v, iris_proba, 3) == 3;
    else if (strncmp(line, "iris expected", 13) == 0)
        models_seen += sscanf(v, "%31s", iris_expected) == 1;
}

/* The sample request the maker wrote: a KServe V2 request whose input we keep. */
static void read_sample(const char *path)
{
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    REQUIRE(j != NULL);
    cJSON *in = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "inputs"), 0);
    cJSON *vals = cJSON_GetObjectItem(cJSON_GetObjectItem(in, "contents"), "fp32_contents");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(in, "datatype")), "FP32");
    REQUIRE(cJSON_GetArraySize(vals) == DIGIT);
    for (int i = 0; i < DIGIT; i++)
        digit[i] = cJSON_GetArrayItem(vals, i)->valuedouble;
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------ the test */

/* runtimeStatus: this runtime's defaults. */
static void status_defaults(void)
{
    struct spi_result r = rt_status(&sc);
    REQUIRE(r.code == 0);
    CHECK_INT(r.runtime.capacity_bytes, 1073741824);
    CHECK_INT(r.runtime.max_loading_concurrency, 1);
    CHECK_INT(r.runtime.load_timeout_ms, 90000);
    CHECK_INT(r.runtime.default_model_size_bytes, 1000000);
    CHECK(strstr(r.runtime.version, "mm-sklearn-runtime") != NULL);
}

static void load_mnist(const char *mnist, const char *mnist_dir)
{
    struct stat sb;
    REQUIRE(stat(mnist, &sb) == 0);
    uint64_t size = 0;
    long long t0 = harness_now_ms();
    struct spi_result r = rt_load(&sc, "mnist", "sklearn", mnist, &size);
    CHECK_INT(r.code, 0);
    fprintf(stderr, "loaded %s in %lld ms: %llu bytes measured, %lld on disk\n", mnist,
            harness_now_ms() - t0, (unsigned long long)size, (long long)sb.st_size);
    /* The in-memory object graph holds what the pickle holds (support vectors, coefficients),
     * plus object overhead: near the file size, never a made-up constant. */
    CHECK(size > (uint64_t)sb.st_size / 2 && size < (uint64_t)sb.st_size * 3);
    CHECK(size != 1000000);

    /* A directory holding one model file; empty modelType means "ours". */
    CHECK_INT(rt_load(&sc, "mnist-dir", "", mnist_dir, NULL).code, 0);
}

static void infer_mnist(void)
{
    /* The walkthrough's answer in every input form. */
    CHECK_INT(digit_class("mnist", 1, "FP32", false), 8);
    CHECK_INT(digit_class("mnist", 1, "FP32", true), 8);
    CHECK_INT(digit_class("mnist", 1, "FP64", false), 8);
    CHECK_INT(digit_class("mnist", 1, "INT32", false), 8);
    CHECK_INT(digit_class("mnist", 1, "INT64", true), 8);
    CHECK_INT(digit_class("mnist", 3, "FP32", false), 8);
    CHECK_INT(digit_class("mnist-dir", 2, "FP64", true), 8);

    /* Shape [64]: one row. */
    struct tensor_req q;
    Inference__ModelInferResponse *resp = NULL;
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    q.in.n_shape = 1;
    q.in.shape = &q.shape[1];
    int64_t got[4] = {0};
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    CHECK(int64_predictions(resp, got, 4) == 1 && got[0] == 8);
    free_resp(resp);

    /* The mm-model-id header names the model instead of model_name (a mesh node forwards a
     * vmodel's name untouched): the answer names the concrete id. */
    const struct rpc_header h[] = {{"mm-model-id", "mnist"}};
    make_req(&q, "some-vmodel", digit, DIGIT, 1, "FP32", false);
    grpc_byte_buffer *b = rpc_encode(&q.req.base);
    struct testcall t = testcall_run(sc.ch, "/inference.GRPCInferenceService/ModelInfer", b, h,
                                     1, RT_CALL_MS);
    CHECK_INT(t.status, GRPC_STATUS_OK);
    ProtobufCMessage *pm = NULL;
    struct mm_error err = {0};
    if (t.status == GRPC_STATUS_OK &&
        rpc_decode(t.response, &inference__model_infer_response__descriptor, &pm, &err) == 0) {
        resp = (Inference__ModelInferResponse *)pm;
        CHECK_STR(resp->model_name, "mnist");
        CHECK(int64_predictions(resp, got, 4) == 1 && got[0] == 8);
        free_resp(resp);
    } else {
        fprintf(stderr, "  ModelInfer with mm-model-id: %s\n", t.details);
        CHECK(false);
    }
    testcall_clear(&t);
    CHECK(rt_header_names_model(&sc, b, "some-vmodel", "mnist"));
    grpc_byte_buffer_destroy(b);

    /* Bad input: clear errors naming what was wrong; the runtime keeps serving. */
    make_req(&q, "mnist", digit, DIGIT, 1, "BYTES", false);
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "datatype 'BYTES' is not supported, model expects 'FP32'"));
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    q.shape[1] = 63;
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "expected shape [-1, 64], got [1, 63]"));
    make_req(&q, "mnist", digit, DIGIT, 2, "FP32", false);
    q.contents.n_fp32_contents = 100;
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "100 FP32 values for shape [2, 64], which needs 128"));
    make_req(&q, "mnist", digit, DIGIT, 1, "FP64", true);
    q.raw.len = 7;
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "raw contents hold 7 bytes, shape [1, 64] of FP64 needs 512"));
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    q.ins[1] = &q.in;
    q.req.n_inputs = 2;
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "model mnist expects 1 input tensor, got 2"));
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    q.f32[5] = NAN; /* sklearn's own verdict, passed on */
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT, "NaN"));
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    want_outputs(&q, "scores", NULL);
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "model mnist has no output 'scores' (it has 'predict')"));
    want_outputs(&q, "predict_proba", NULL); /* SVC without probability=True has none */
    CHECK(rt_failed_with(infer(&q, &resp), GRPC_STATUS_INVALID_ARGUMENT,
                         "has no output 'predict_proba'"));
    CHECK_INT(digit_class("mnist", 1, "FP32", false), 8);

    /* An empty batch [0, 64] has an empty answer of the output's datatype. */
    for (int raw = 0; raw < 2; raw++) {
        make_req(&q, "mnist", digit, DIGIT, 0, "FP32", raw);
        CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
        CHECK(resp && resp->n_outputs == 1 && strcmp(resp->outputs[0]->datatype, "INT64") == 0 &&
              resp->outputs[0]->n_shape == 1 && resp->outputs[0]->shape[0] == 0);
        CHECK(resp &&
              (raw ? resp->n_raw_output_contents == 1 && resp->raw_output_contents[0].len == 0
                   : resp->n_raw_output_contents == 0));
        free_resp(resp);
    }

    /* Metadata and the server calls. */
    Inference__ModelMetadataResponse *md = metadata("mnist");
    REQUIRE(md != NULL);
    CHECK_STR(md->name, "mnist");
    CHECK_STR(md->platform, "sklearn");
    CHECK(md->n_inputs == 1 && md->inputs[0]->n_shape == 2 && md->inputs[0]->shape[0] == -1 &&
          md->inputs[0]->shape[1] == DIGIT && strcmp(md->inputs[0]->datatype, "FP32") == 0);
    CHECK(md->n_outputs == 1 && strcmp(md->outputs[0]->name, "predict") == 0 &&
          strcmp(md->outputs[0]->datatype, "INT64") == 0);
    protobuf_c_message_free_unpacked(&md->base, NULL);
    CHECK(metadata("nope") == NULL);
    ProtobufCMessage *m = NULL;
    Inference__ServerMetadataRequest smr = INFERENCE__SERVER_METADATA_REQUEST__INIT;
    rt_call(&sc, "/inference.GRPCInferenceService/ServerMetadata", &smr.base,
            &inference__server_metadata_response__descriptor, &m);
    CHECK(m && strcmp(((Inference__ServerMetadataResponse *)m)->name, "mm-sklearn-runtime") == 0);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static void other_models(const char *dir)
{
    char path[700];
    struct tensor_req q;
    Inference__ModelInferResponse *resp = NULL;

    /* A regressor answers FP64, exactly sklearn's number for FP64 input. */
    snprintf(path, sizeof(path), "%s/regressor.joblib", dir);
    CHECK_INT(rt_load(&sc, "reg", "sklearn", path, NULL).code, 0);
    make_req(&q, "reg", diabetes, 10, 1, "FP64", false);
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    CHECK(resp && resp->n_outputs == 1 && strcmp(resp->outputs[0]->datatype, "FP64") == 0 &&
          resp->outputs[0]->contents && resp->outputs[0]->contents->n_fp64_contents == 1 &&
          fabs(resp->outputs[0]->contents->fp64_contents[0] - diabetes_expected) < 1e-9);
    free_resp(resp);
    make_req(&q, "reg", diabetes, 10, 2, "FP32", true); /* FP32 in, raw FP64 out */
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    double two[2] = {0};
    CHECK(resp && resp->n_raw_output_contents == 1 && resp->raw_output_contents[0].len == 16);
    if (resp && resp->n_raw_output_contents == 1 && resp->raw_output_contents[0].len == 16)
        memcpy(two, resp->raw_output_contents[0].data, 16);
    CHECK(fabs(two[0] - diabetes_expected) < 1e-3 && fabs(two[1] - diabetes_expected) < 1e-3);
    free_resp(resp);
    Inference__ModelMetadataResponse *md = metadata("reg");
    CHECK(md && md->n_outputs == 1 && strcmp(md->outputs[0]->datatype, "FP64") == 0 &&
          md->inputs[0]->shape[1] == 10);
    if (md)
        protobuf_c_message_free_unpacked(&md->base, NULL);

    /* Two targets: predict [N, 2], in the metadata and for an empty batch too. */
    snprintf(path, sizeof(path), "%s/two-targets.joblib", dir);
    CHECK_INT(rt_load(&sc, "two", "sklearn", path, NULL).code, 0);
    md = metadata("two");
    CHECK(md && md->n_outputs == 1 && md->outputs[0]->n_shape == 2 &&
          md->outputs[0]->shape[0] == -1 && md->outputs[0]->shape[1] == 2);
    if (md)
        protobuf_c_message_free_unpacked(&md->base, NULL);
    for (size_t rows = 0; rows < 2; rows++) {
        make_req(&q, "two", diabetes, 10, rows, "FP64", false);
        CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
        Inference__ModelInferResponse__InferOutputTensor *o =
            resp && resp->n_outputs == 1 ? resp->outputs[0] : NULL;
        CHECK(o && o->n_shape == 2 && o->shape[0] == (int64_t)rows && o->shape[1] == 2);
        CHECK(o && o->contents && o->contents->n_fp64_contents == rows * 2);
        if (rows == 1 && o && o->contents && o->contents->n_fp64_contents == 2)
            CHECK(fabs(o->contents->fp64_contents[0] - two_targets_expected[0]) < 1e-9 &&
                  fabs(o->contents->fp64_contents[1] - two_targets_expected[1]) < 1e-9);
        free_resp(resp);
    }
    CHECK_INT(rt_unload(&sc, "two").code, 0);

    /* A plain pickle of a classifier with string classes: BYTES, and predict_proba on request. */
    snprintf(path, sizeof(path), "%s/iris.pkl", dir);
    CHECK_INT(rt_load(&sc, "iris", "sklearn", path, NULL).code, 0);
    make_req(&q, "iris", iris, 4, 1, "FP64", false);
    want_outputs(&q, "predict", "predict_proba");
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    CHECK(resp && resp->n_outputs == 2);
    if (resp && resp->n_outputs == 2) {
        Inference__ModelInferResponse__InferOutputTensor *p = resp->outputs[0],
                                                         *pp = resp->outputs[1];
        CHECK_STR(p->datatype, "BYTES");
        CHECK(p->contents && p->contents->n_bytes_contents == 1 &&
              p->contents->bytes_contents[0].len == strlen(iris_expected) &&
              memcmp(p->contents->bytes_contents[0].data, iris_expected, strlen(iris_expected)) ==
                  0);
        CHECK_STR(pp->name, "predict_proba");
        CHECK(pp->n_shape == 2 && pp->shape[0] == 1 && pp->shape[1] == 3);
        CHECK(pp->contents && pp->contents->n_fp64_contents == 3 &&
              fabs(pp->contents->fp64_contents[0] - iris_proba[0]) < 1e-9 &&
              fabs(pp->contents->fp64_contents[2] - iris_proba[2]) < 1e-9);
    }
    free_resp(resp);
    make_req(&q, "iris", iris, 4, 1, "FP64", true); /* raw BYTES: 4-byte length + bytes */
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    size_t len = strlen(iris_expected);
    CHECK(resp && resp->n_raw_output_contents == 1 && resp->raw_output_contents[0].len == 4 + len &&
          resp->raw_output_contents[0].data[0] == len &&
          memcmp(resp->raw_output_contents[0].data + 4, iris_expected, len) == 0);
    free_resp(resp);
    make_req(&q, "iris", iris, 4, 0, "FP64", false); /* empty batch: BYTES [0], FP64 [0, 3] */
    want_outputs(&q, "predict", "predict_proba");
    CHECK_INT(infer(&q, &resp).status, GRPC_STATUS_OK);
    CHECK(resp && resp->n_outputs == 2 && strcmp(resp->outputs[0]->datatype, "BYTES") == 0 &&
          resp->outputs[0]->n_shape == 1 && resp->outputs[0]->shape[0] == 0 &&
          strcmp(resp->outputs[1]->datatype, "FP64") == 0 && resp->outputs[1]->n_shape == 2 &&
          resp->outputs[1]->shape[0] == 0 && resp->outputs[1]->shape[1] == 3);
    free_resp(resp);
    md = metadata("iris");
    CHECK(md && md->n_outputs == 2 && strcmp(md->outputs[0]->datatype, "BYTES") == 0 &&
          strcmp(md->outputs[1]->name, "predict_proba") == 0 && md->outputs[1]->shape[1] == 3);
    if (md)
        protobuf_c_message_free_unpacked(&md->base, NULL);

    /* Decision trees hold their nodes in C buffers: the measured size still counts them (the
     * pickled form holds the same nodes, so the file size is the yardstick). */
    snprintf(path, sizeof(path), "%s/forest.joblib", dir);
    struct stat sb;
    uint64_t forest = 0;
    REQUIRE(stat(path, &sb) == 0);
    CHECK_INT(rt_load(&sc, "forest", "sklearn", path, &forest).code, 0);
    fprintf(stderr, "forest: %llu bytes measured, %lld on disk\n", (unsigned long long)forest,
            (long long)sb.st_size);
    CHECK(forest > (uint64_t)sb.st_size * 8 / 10 && forest < (uint64_t)sb.st_size * 2);
    CHECK_INT(digit_class("forest", 1, "FP32", false), 8);

    /* Bad loads: clear errors, nothing half-loaded, the runtime still serves. */
    snprintf(path, sizeof(path), "%s/garbage.joblib", dir);
    CHECK(rt_spi_failed_with(rt_load(&sc, "x", "sklearn", path, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "cannot load sklearn model"));
    snprintf(path, sizeof(path), "%s/truncated.joblib", dir);
    CHECK(rt_spi_failed_with(rt_load(&sc, "x", "sklearn", path, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "truncated"));
    snprintf(path, sizeof(path), "%s/dict.pkl", dir);
    CHECK(rt_spi_failed_with(rt_load(&sc, "x", "sklearn", path, NULL), GRPC_STATUS_INVALID_ARGUMENT,
                             "holds a dict, not an sklearn model"));
    CHECK(!rt_ready(&sc, "x"));
    CHECK_INT(digit_class("mnist", 1, "FP32", false), 8);
}

/* Three loads of one new id at once share one load, and the model they share predicts. */
static void shared_load_predicts(const char *mnist)
{
    enum { L = 3 };
    struct rt_spi_wait loads[L];
    memset(loads, 0, sizeof(loads));
    struct spi_model m = {.id = "mnist-3", .type = "sklearn", .path = mnist};
    for (int i = 0; i < L; i++)
        REQUIRE(spi_load_model(sc.spi, &m, 20000, rt_spi_cb, &loads[i], NULL) == 0);
    CHECK(rt_spi_wait_all(sc.loop, loads, L, 25000));
    for (int i = 0; i < L; i++)
        CHECK(loads[i].done && loads[i].res.code == 0);
    CHECK_INT(digit_class("mnist-3", 1, "FP32", false), 8);
}

static void concurrency(void)
{
    /* 40 predictions at once. */
    enum { C = 40 };
    struct testcall many[C] = {{0}};
    struct tensor_req q;
    make_req(&q, "mnist", digit, DIGIT, 1, "FP32", false);
    grpc_byte_buffer *qb = rpc_encode(&q.req.base);
    for (int i = 0; i < C; i++)
        REQUIRE(rpc_unary(sc.ch, "/inference.GRPCInferenceService/ModelInfer", qb, NULL, 0, 20000,
                          NULL, testcall_cb, &many[i], NULL) == 0);
    testcall_wait(sc.loop, many, C, 25000);
    grpc_byte_buffer_destroy(qb);
    int ok = 0;
    for (int i = 0; i < C; i++) {
        ProtobufCMessage *pm = NULL;
        struct mm_error err = {0};
        int64_t got[2];
        if (many[i].status == GRPC_STATUS_OK &&
            rpc_decode(many[i].response, &inference__model_infer_response__descriptor, &pm, &err) ==
                0) {
            ok +=
                int64_predictions((Inference__ModelInferResponse *)pm, got, 2) == 1 && got[0] == 8;
            protobuf_c_message_free_unpacked(pm, NULL);
        }
        testcall_clear(&many[i]);
    }
    CHECK_INT(ok, C);
}

/* Several models dirs (--models-dir repeated, or MM_MODELS_DIR ':'-separated): a model inside
 * any of them loads, also through a symbolic link from one into another (how the node links a
 * pvc's model from its cache dir); one outside all of them, or linked to from inside, is
 * refused. */
static void models_dirs(const char *python, const char *server, const char *dir,
                        const char *model)
{
    char cmd[16384], a[600], b[600], c[600], env[1300], p[700];
    snprintf(a, sizeof a, "%s/dirA", dir);
    snprintf(b, sizeof b, "%s/dirB", dir);
    snprintf(c, sizeof c, "%s/dirC", dir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' '%s' '%s' && cp '%s' '%s/a.joblib' && cp '%s' '%s/b.joblib' && "
             "cp '%s' '%s/c.joblib' && ln -s '%s/b.joblib' '%s/link.joblib' && "
             "ln -s '%s/c.joblib' '%s/out.joblib'",
             a, b, c, model, a, model, b, model, c, b, a, c, a);
    REQUIRE(system(cmd) == 0);
    for (int round = 0; round < 2; round++) {
        char *const flags[] = {(char *)python, (char *)server, "--listen", "127.0.0.1:0",
                               "--log-level", "warn", "--models-dir", a, "--models-dir", b, NULL};
        char *const plain[] = {(char *)python, (char *)server, "--listen", "127.0.0.1:0",
                               "--log-level", "warn", NULL};
        snprintf(env, sizeof env, "%s::%s", a, b); /* an empty element is skipped */
        if (round == 1)
            REQUIRE(setenv("MM_MODELS_DIR", env, 1) == 0);
        pid_t pid = 0;
        int port = 0;
        struct rt_client rc;
        REQUIRE(harness_spawn_listening(round == 0 ? flags : plain, 60000, &pid, &port) == 0);
        unsetenv("MM_MODELS_DIR");
        REQUIRE(rt_open(&rc, port) == 0);
        fprintf(stderr, "models dirs given by %s\n", round == 0 ? "flags" : "MM_MODELS_DIR");
        snprintf(p, sizeof p, "%s/a.joblib", a);
        CHECK_INT(rt_load(&rc, "in-a", "sklearn", p, NULL).code, 0);
        snprintf(p, sizeof p, "%s/b.joblib", b);
        CHECK_INT(rt_load(&rc, "in-b", "sklearn", p, NULL).code, 0);
        snprintf(p, sizeof p, "%s/link.joblib", a);
        CHECK_INT(rt_load(&rc, "linked", "sklearn", p, NULL).code, 0);
        CHECK(rt_ready(&rc, "linked"));
        snprintf(p, sizeof p, "%s/c.joblib", c);
        CHECK(rt_spi_failed_with(rt_load(&rc, "in-c", "sklearn", p, NULL),
                                 GRPC_STATUS_PERMISSION_DENIED, "outside the models directories"));
        snprintf(p, sizeof p, "%s/out.joblib", a);
        CHECK(rt_spi_failed_with(rt_load(&rc, "out", "sklearn", p, NULL),
                                 GRPC_STATUS_PERMISSION_DENIED, "outside the models directories"));
        rt_close(&rc, pid, 15000);
    }
    /* a models dir that is not one is refused at start */
    snprintf(cmd, sizeof cmd, "'%s' '%s' --models-dir '%s' --models-dir '%s/a.joblib' 2>&1",
             python, server, a, a);
    FILE *f = popen(cmd, "r");
    REQUIRE(f != NULL);
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    CHECK(WEXITSTATUS(pclose(f)) == 2 && strstr(out, "is not a directory"));
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 5);
    const char *python = argv[1];
    char dir[] = "/tmp/mm-sklearn-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char mnist[600], sample[600], mnist_dir[600], extra[600], cmd[4096];
    snprintf(mnist, sizeof(mnist), "%s/sklearn/mnist-svm.joblib", dir);
    snprintf(sample, sizeof(sample), "%s/sklearn/mnist-svm-request.json", dir);
    snprintf(mnist_dir, sizeof(mnist_dir), "%s/only", dir);
    snprintf(extra, sizeof(extra), "%s/extra", dir);
    run_maker(python, argv[3], dir, mnist_line);
    CHECK(maker_said_8);
    read_sample(sample);
    run_maker(python, argv[4], extra, models_line);
    REQUIRE(models_seen == 6);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s' '%s/model.joblib'", mnist_dir, mnist,
             mnist_dir);
    REQUIRE(system(cmd) == 0);

    /* A bad flag is refused with its name, before anything starts. */
    snprintf(cmd, sizeof(cmd), "'%s' '%s' --workers 0 2>&1", python, argv[2]);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char out[2048] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    CHECK(WEXITSTATUS(pclose(p)) == 2 && strstr(out, "--workers") && strstr(out, "'0'"));

    char *const args[] = {(char *)python, argv[2], "--listen", "127.0.0.1:0", "--workers", "4",
                          "--log-level",  "warn",  NULL};
    pid_t pid = 0;
    int port = 0;
    long long t0 = harness_now_ms();
    REQUIRE(harness_spawn_listening(args, 60000, &pid, &port) == 0);
    fprintf(stderr, "runtime listening on %d after %lld ms\n", port, harness_now_ms() - t0);
    REQUIRE(rt_open(&sc, port) == 0);

    status_defaults();
    load_mnist(mnist, mnist_dir);
    infer_mnist();
    other_models(extra);
    concurrency();
    shared_load_predicts(mnist);
    rt_close(&sc, pid, 15000);
    models_dirs(python, argv[2], dir, mnist);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
