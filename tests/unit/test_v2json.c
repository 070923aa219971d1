/* test_v2json.c - V2 requests from both JSON forms, every datatype's contents field, rejects
 * that say what is wrong, and responses rendered from contents and from raw contents. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "mm/v2json.h"

static Inference__ModelInferRequest *parse(const char *json, const char *model)
{
    struct mm_error err = {0};
    Inference__ModelInferRequest *r = NULL;
    int rc = v2json_request_parse(json, strlen(json), model, &r, &err);
    CHECK_INT(rc, 0);
    if (rc < 0)
        fprintf(stderr, "  input %.100s\n  got '%s'\n", json, err.msg);
    return r;
}

/* The parse fails with code and a message containing want. */
static void rejects(const char *json, int code, const char *want)
{
    struct mm_error err = {0};
    Inference__ModelInferRequest *r = NULL;
    int rc = v2json_request_parse(json, strlen(json), NULL, &r, &err);
    CHECK_INT(rc, code);
    CHECK(r == NULL);
    CHECK(strstr(err.msg, want) != NULL);
    if (rc != code || !strstr(err.msg, want))
        fprintf(stderr, "  input %.100s\n  got %d '%s', wanted '%s'\n", json, rc, err.msg, want);
    v2json_request_free(r);
}

/* One input "x" of the datatype with values given as "data" (REST form). */
static void rejects_values(const char *datatype, const char *values, const char *want)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[1],\"data\":[%s]}]}",
             datatype, values);
    rejects(json, -EINVAL, want);
}

/* The request packed by protobuf-c, to compare two parses field by field. */
static char *packed(const Inference__ModelInferRequest *r, size_t *len)
{
    *len = inference__model_infer_request__get_packed_size(r);
    char *buf = malloc(*len + 1);
    inference__model_infer_request__pack(r, (uint8_t *)buf);
    return buf;
}

static void test_rest_form(void)
{
    const char *json = "{\"id\":\"x\",\"model_name\":\"from-doc\",\"model_version\":\"3\","
                       "\"parameters\":{\"priority\":1},"
                       "\"inputs\":[{\"name\":\"input-0\",\"datatype\":\"FP32\",\"shape\":[2,3],"
                       "\"data\":[[1.5,2,3],[4,5,6.25]]},"
                       "{\"name\":\"flat\",\"datatype\":\"INT32\",\"shape\":[2,2],"
                       "\"data\":[1,2,3,4]}],"
                       "\"outputs\":[{\"name\":\"predict\"},{\"name\":\"proba\"}]}";
    Inference__ModelInferRequest *r = parse(json, NULL);
    REQUIRE(r != NULL);
    CHECK_STR(r->id, "x");
    CHECK_STR(r->model_name, "from-doc");
    CHECK_STR(r->model_version, "3");
    REQUIRE(r->n_inputs == 2);
    Inference__ModelInferRequest__InferInputTensor *in = r->inputs[0];
    CHECK_STR(in->name, "input-0");
    CHECK_STR(in->datatype, "FP32");
    REQUIRE(in->n_shape == 2);
    CHECK_INT(in->shape[0], 2);
    CHECK_INT(in->shape[1], 3);
    REQUIRE(in->contents && in->contents->n_fp32_contents == 6);
    const float want[] = {1.5f, 2, 3, 4, 5, 6.25f}; /* nested rows flattened in order */
    CHECK(memcmp(in->contents->fp32_contents, want, sizeof(want)) == 0);
    REQUIRE(r->inputs[1]->contents && r->inputs[1]->contents->n_int_contents == 4);
    CHECK_INT(r->inputs[1]->contents->int_contents[3], 4);
    CHECK_INT(r->n_raw_input_contents, 0);
    REQUIRE(r->n_outputs == 2);
    CHECK_STR(r->outputs[0]->name, "predict");
    CHECK_STR(r->outputs[1]->name, "proba");
    v2json_request_free(r);

    /* The model given by the caller wins over the document's. */
    r = parse(json, "mnist-svm");
    REQUIRE(r != NULL);
    CHECK_STR(r->model_name, "mnist-svm");
    v2json_request_free(r);
}

static void test_grpc_form(void)
{
    /* As KServe's ModelMesh sample sends it with grpcurl (64 features, trimmed to 4 here). */
    const char *json = "{\"inputs\":[{\"name\":\"predict\",\"shape\":[1,4],\"datatype\":\"FP32\","
                       "\"contents\":{\"fp32_contents\":[0.0,1.0,2.5,-3.0]}}]}";
    Inference__ModelInferRequest *r = parse(json, "example-sklearn-isvc");
    REQUIRE(r != NULL);
    CHECK_STR(r->model_name, "example-sklearn-isvc");
    CHECK_STR(r->id, "");
    CHECK_INT(r->n_outputs, 0);
    REQUIRE(r->n_inputs == 1 && r->inputs[0]->contents);
    REQUIRE(r->inputs[0]->contents->n_fp32_contents == 4);
    CHECK(r->inputs[0]->contents->fp32_contents[2] == 2.5f);
    v2json_request_free(r);

    /* proto3 JSON: lowerCamelCase keys, 64-bit integers (and the shape) as strings. */
    json = "{\"modelName\":\"m\",\"inputs\":[{\"name\":\"ids\",\"shape\":[\"2\",\"2\"],"
           "\"datatype\":\"INT64\",\"contents\":{\"int64Contents\":[\"9007199254740993\",-2,"
           "\"-9223372036854775808\",\"9223372036854775807\"]}}]}";
    r = parse(json, NULL);
    REQUIRE(r != NULL);
    CHECK_STR(r->model_name, "m");
    REQUIRE(r->n_inputs == 1 && r->inputs[0]->contents);
    CHECK_INT(r->inputs[0]->shape[1], 2);
    REQUIRE(r->inputs[0]->contents->n_int64_contents == 4);
    CHECK(r->inputs[0]->contents->int64_contents[0] == 9007199254740993LL);
    CHECK_INT(r->inputs[0]->contents->int64_contents[1], -2);
    CHECK(r->inputs[0]->contents->int64_contents[2] == INT64_MIN);
    CHECK(r->inputs[0]->contents->int64_contents[3] == INT64_MAX);
    v2json_request_free(r);

    /* An empty batch: proto3 JSON leaves the empty field out; REST sends []. */
    r = parse("{\"inputs\":[{\"name\":\"e\",\"shape\":[0,64],\"datatype\":\"FP32\","
              "\"contents\":{}},{\"name\":\"f\",\"shape\":[0],\"datatype\":\"BOOL\",\"data\":[]}]}",
              NULL);
    REQUIRE(r != NULL && r->n_inputs == 2);
    CHECK(r->inputs[0]->contents && r->inputs[0]->contents->n_fp32_contents == 0);
    CHECK(r->inputs[1]->contents && r->inputs[1]->contents->n_bool_contents == 0);
    v2json_request_free(r);
}

/* Each datatype lands in the contents field KServe V2 assigns it, the same from "data", from
 * snake_case contents and from lowerCamelCase contents. */
static void test_datatypes(void)
{
    static const struct {
        const char *datatype, *values, *key;
        size_t field; /* index into the counts below */
    } cases[] = {
        {"BOOL", "true,false", "boolContents", 0},
        {"INT8", "-128,127", "intContents", 1},
        {"INT16", "-32768,32767", "intContents", 1},
        {"INT32", "-2147483648,2147483647", "intContents", 1},
        {"INT64", "\"-9223372036854775808\",9007199254740991", "int64Contents", 2},
        {"UINT8", "0,255", "uintContents", 3},
        {"UINT16", "0,65535", "uintContents", 3},
        {"UINT32", "0,4294967295", "uintContents", 3},
        {"UINT64", "0,\"18446744073709551615\"", "uint64Contents", 4},
        {"FP32", "0.00155334454,-1e30", "fp32Contents", 5},
        {"FP64", "0.1,\"-Infinity\"", "fp64Contents", 6},
        {"BYTES", "\"h\\u00e9llo\",\"\"", "bytesContents", 7},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char json[512], snake[32];
        char *first = NULL;
        size_t first_len = 0;
        /* key in snake_case: fp32Contents -> fp32_contents */
        size_t n = strcspn(cases[k].key, "C");
        snprintf(snake, sizeof(snake), "%.*s_contents", (int)n, cases[k].key);
        for (int form = 0; form < 3; form++) {
            char values[256];
            if (form == 0)
                snprintf(values, sizeof(values), "\"data\":[%s]", cases[k].values);
            else
                snprintf(values, sizeof(values), "\"contents\":{\"%s\":[%s]}",
                         form == 1 ? snake : cases[k].key, cases[k].values);
            snprintf(json, sizeof(json),
                     "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"%s\",\"shape\":[2],%s}]}",
                     cases[k].datatype, values);
            Inference__ModelInferRequest *r = parse(json, NULL);
            REQUIRE(r != NULL);
            const Inference__InferTensorContents *c = r->inputs[0]->contents;
            REQUIRE(c != NULL);
            size_t counts[] = {c->n_bool_contents, c->n_int_contents,    c->n_int64_contents,
                               c->n_uint_contents, c->n_uint64_contents, c->n_fp32_contents,
                               c->n_fp64_contents, c->n_bytes_contents};
            for (size_t f = 0; f < 8; f++)
                CHECK_INT(counts[f], f == cases[k].field ? 2 : 0);
            size_t len;
            char *p = packed(r, &len);
            if (!first) {
                first = p;
                first_len = len;
            } else {
                CHECK(len == first_len && memcmp(p, first, len) == 0);
                free(p);
            }
            v2json_request_free(r);
        }
        free(first);
    }

    /* Values at the edges of each range. */
    Inference__ModelInferRequest *r =
        parse("{\"inputs\":["
              "{\"name\":\"a\",\"datatype\":\"INT8\",\"shape\":[2],\"data\":[-128,\"127\"]},"
              "{\"name\":\"b\",\"datatype\":\"UINT32\",\"shape\":[1],\"data\":[4294967295]},"
              "{\"name\":\"c\",\"datatype\":\"UINT64\",\"shape\":[1],\"data\":["
              "\"18446744073709551615\"]},"
              "{\"name\":\"d\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[0.00155334454,\"NaN\","
              "3.4028235e38]},"
              "{\"name\":\"e\",\"datatype\":\"BOOL\",\"shape\":[2,1],\"data\":[[true],[false]]},"
              "{\"name\":\"f\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"h\\u00e9\",\"\"]},"
              "{\"name\":\"g\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[1e300]}]}",
              NULL);
    REQUIRE(r != NULL && r->n_inputs == 7);
    CHECK_INT(r->inputs[0]->contents->int_contents[0], -128);
    CHECK_INT(r->inputs[0]->contents->int_contents[1], 127);
    CHECK(r->inputs[1]->contents->uint_contents[0] == UINT32_MAX);
    CHECK(r->inputs[2]->contents->uint64_contents[0] == UINT64_MAX);
    CHECK(r->inputs[3]->contents->fp32_contents[0] == 0.00155334454f);
    CHECK(isnan(r->inputs[3]->contents->fp32_contents[1]));
    CHECK(r->inputs[3]->contents->fp32_contents[2] == FLT_MAX);
    CHECK_INT(r->inputs[4]->contents->bool_contents[0], 1);
    CHECK_INT(r->inputs[4]->contents->bool_contents[1], 0);
    const ProtobufCBinaryData *b = r->inputs[5]->contents->bytes_contents;
    CHECK(b[0].len == 3 && memcmp(b[0].data, "h\xc3\xa9", 3) == 0); /* UTF-8 bytes */
    CHECK_INT(b[1].len, 0);
    CHECK(r->inputs[6]->contents->fp64_contents[0] == 1e300);
    v2json_request_free(r);
}

static void test_rejects(void)
{
    rejects("", -EINVAL, "request is not JSON near byte 0");
    rejects("{\"inputs\": [}", -EINVAL, "request is not JSON near byte 12");
    rejects("{\"inputs\":[]} x", -EINVAL, "request is not JSON near byte 14");
    rejects("[1]", -EINVAL, "request is not a JSON object");
    rejects("{}", -EINVAL, "request: \"inputs\" must be a non-empty array");
    rejects("{\"inputs\":[]}", -EINVAL, "\"inputs\" must be a non-empty array");
    rejects("{\"inputs\":{\"name\":\"x\"}}", -EINVAL, "\"inputs\" must be a non-empty array");
    rejects("{\"id\":7,\"inputs\":[]}", -EINVAL, "request: \"id\" is not a string");
    rejects("{\"inputs\":[3]}", -EINVAL, "inputs[0] is not an object");
    rejects("{\"inputs\":[{\"name\":\"a\",\"datatype\":\"BOOL\",\"shape\":[0],\"data\":[]},"
            "{\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
            -EINVAL, "inputs[1]: missing \"name\"");
    rejects("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"data\":[1]}]}", -EINVAL,
            "input 'x': missing \"datatype\"");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"data\":[1]}]}", -EINVAL,
            "input 'x': missing \"shape\"");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":3,\"data\":[1]}]}",
            -EINVAL, "input 'x': \"shape\" is not an array");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1.5],\"data\":[1]}]}",
            -EINVAL, "input 'x': \"shape\" holds a value that is not an integer");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP33\",\"shape\":[1],\"data\":[1]}]}",
            -EINVAL, "input 'x': unknown datatype 'FP33'");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP16\",\"shape\":[1],\"data\":[1]}]}",
            -ENOTSUP, "input 'x': datatype FP16 is not supported in JSON");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BF16\",\"shape\":[1],\"data\":[1]}]}",
            -ENOTSUP, "input 'x': datatype BF16 is not supported in JSON");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,-2],\"data\":[]}]}",
            -EINVAL, "input 'x': shape [1, -2] has a negative dimension");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
            "\"data\":[1]}]}",
            -E2BIG, "input 'x': shape has 9 dimensions, at most 8 are supported");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[65536,1025],"
            "\"data\":[1]}]}",
            -E2BIG, "input 'x': shape [65536, 1025] holds more than 67108864 values");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1],"
            "\"contents\":{\"fp32_contents\":[1]}}]}",
            -EINVAL, "input 'x': both \"data\" and \"contents\" given");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1]}]}", -EINVAL,
            "input 'x': no \"data\" or \"contents\"");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
            "\"contents\":{\"int_contents\":[1]}}]}",
            -EINVAL, "input 'x': \"contents\" has no \"fp32_contents\", which datatype FP32 uses");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":1}]}",
            -EINVAL, "input 'x': \"data\" is not an array");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}],"
            "\"outputs\":[{\"id\":\"y\"}]}",
            -EINVAL, "outputs[0]: missing \"name\"");

    /* 63 values for 64 */
    char json[1024];
    int n = snprintf(json, sizeof(json),
                     "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                     "\"shape\":[1,64],\"contents\":{\"fp32Contents\":[0");
    for (int i = 1; i < 63; i++)
        n += snprintf(json + n, sizeof(json) - n, ",%d", i);
    snprintf(json + n, sizeof(json) - n, "]}}]}");
    rejects(json, -EINVAL, "input 'x': 63 values for shape [1, 64], which needs 64");

    rejects_values("FP32", "\"3\"", "input 'x': value \"3\" is not a number");
    rejects_values("FP64", "null", "input 'x': value null is not a number");
    rejects_values("INT32", "1.5", "input 'x': value 1.5 is not an integer");
    rejects_values("INT64", "\"12a\"", "input 'x': value \"12a\" is not an integer");
    rejects_values("INT64", "\" 12\"", "value \" 12\" is not an integer");
    rejects_values("BOOL", "1", "input 'x': value 1 is not true or false");
    rejects_values("BYTES", "3", "input 'x': value 3 is not a string");
    rejects_values("INT8", "128", "input 'x': value 128 is out of range for INT8");
    rejects_values("INT8", "-129", "value -129 is out of range for INT8");
    rejects_values("INT16", "32768", "value 32768 is out of range for INT16");
    rejects_values("INT32", "-2147483649", "value -2147483649 is out of range for INT32");
    rejects_values("UINT8", "-1", "value -1 is out of range for UINT8");
    rejects_values("UINT32", "4294967296", "value 4294967296 is out of range for UINT32");
    rejects_values("UINT64", "\"-1\"", "value \"-1\" is out of range for UINT64");
    rejects_values("UINT64", "\"18446744073709551616\"", "is out of range for UINT64");
    rejects_values("INT64", "\"9223372036854775808\"", "is out of range for INT64");
    rejects_values("INT64", "\"-9223372036854775809\"", "is out of range for INT64");
    rejects_values("FP32", "1e39", "value 1e+39 is out of range for FP32");
    rejects_values("FP64", "1e999", "is out of range for FP64");
    rejects_values("INT64", "9007199254740993",
                   "value 9007199254740992 is beyond 2^53, where JSON numbers lose digits: write "
                   "it as a string");
    rejects_values("INT32", "-9007199254740993", "is out of range for INT32");
    rejects_values("UINT64", "-9007199254740993", "is out of range for UINT64");
    rejects_values("UINT64", "1e30", "value 1e+30 is out of range for UINT64");
    rejects_values("INT64", "-1e19", "is out of range for INT64");
    rejects_values("INT64", "9223372036854775808", "is out of range for INT64");

    /* Nested data must nest as the shape does: same depth, each level as long as its dimension. */
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],"
            "\"data\":[[1,2,3],[4]]}]}",
            -EINVAL, "input 'x': nested \"data\" does not follow shape [2, 2]");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[4],"
            "\"data\":[[1,2],[3,4]]}]}",
            -EINVAL, "does not follow shape [4]");
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT32\",\"shape\":[1,2],"
            "\"contents\":{\"int_contents\":[1,[2]]}}]}",
            -EINVAL, "nested \"int_contents\" does not follow shape [1, 2]");

    /* BYTES: NUL cannot travel in a JSON string here, so it is refused, not cut short; "b64:"
     * must be followed by base64. */
    rejects("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[1],"
            "\"data\":[\"a\\u0000b\"]}]}",
            -EINVAL, "a string holds \\u0000");
    rejects_values("BYTES", "\"b64:&&&\"", "input 'x': value 0 starts with \"b64:\" but the rest is "
                                          "not base64");
    Inference__ModelInferRequest *r =
        parse("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[2],"
              "\"data\":[\"b64:AAH/\",\"a\\\\u0000\"]}]}",
              NULL); /* an escaped backslash before u0000 is text, not NUL */
    REQUIRE(r != NULL);
    const ProtobufCBinaryData *b = r->inputs[0]->contents->bytes_contents;
    CHECK(b[0].len == 3 && b[0].data[0] == 0 && b[0].data[1] == 1 && b[0].data[2] == 0xff);
    CHECK(b[1].len == 7 && memcmp(b[1].data, "a\\u0000", 7) == 0);
    v2json_request_free(r);
}

/* ---------------------------------------------------------------- render */

static char *render(const Inference__ModelInferResponse *r, bool pretty)
{
    struct mm_error err = {0};
    char *out = NULL;
    int rc = v2json_response_render(r, pretty, &out, &err);
    CHECK_INT(rc, 0);
    if (rc < 0)
        fprintf(stderr, "  render failed: %s\n", err.msg);
    return out;
}

static void render_fails(const Inference__ModelInferResponse *r, int code, const char *want)
{
    struct mm_error err = {0};
    char *out = NULL;
    int rc = v2json_response_render(r, false, &out, &err);
    CHECK_INT(rc, code);
    CHECK(out == NULL);
    CHECK(strstr(err.msg, want) != NULL);
    if (!strstr(err.msg, want))
        fprintf(stderr, "  got '%s', wanted '%s'\n", err.msg, want);
}

static void put_le(uint8_t *p, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A response of one output "out" of the datatype and shape [n]; the caller fills contents or
 * raw. Everything points at the struct itself: nothing to free. */
struct one_output {
    Inference__ModelInferResponse r;
    Inference__ModelInferResponse__InferOutputTensor t;
    Inference__ModelInferResponse__InferOutputTensor *ts[1];
    Inference__InferTensorContents c;
    int64_t shape[1];
    ProtobufCBinaryData raw;
    uint8_t bytes[256];
};

static void one_output(struct one_output *o, const char *datatype, int64_t n)
{
    inference__model_infer_response__init(&o->r);
    inference__model_infer_response__infer_output_tensor__init(&o->t);
    inference__infer_tensor_contents__init(&o->c);
    o->r.model_name = "m";
    o->ts[0] = &o->t;
    o->r.outputs = o->ts;
    o->r.n_outputs = 1;
    o->t.name = "out";
    o->t.datatype = (char *)datatype;
    o->shape[0] = n;
    o->t.shape = o->shape;
    o->t.n_shape = 1;
    o->t.contents = &o->c;
}

/* Switch o from contents to raw contents of len bytes (already written to o->bytes). */
static void use_raw(struct one_output *o, size_t len)
{
    o->t.contents = NULL;
    o->raw = (ProtobufCBinaryData){len, o->bytes};
    o->r.raw_output_contents = &o->raw;
    o->r.n_raw_output_contents = 1;
}

/* Render o from contents and then from raw (len bytes) and check both give want. */
static void renders_both(struct one_output *o, size_t raw_len, const char *want_data)
{
    char want[512];
    snprintf(want, sizeof(want),
             "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"out\",\"datatype\":\"%s\","
             "\"shape\":[%lld],\"data\":%s}]}",
             o->t.datatype, (long long)o->shape[0], want_data);
    char *text = render(&o->r, false);
    CHECK_STR(text, want);
    free(text);
    use_raw(o, raw_len);
    text = render(&o->r, false);
    CHECK_STR(text, want);
    free(text);
}

static void test_render(void)
{
    struct one_output o;

    /* FP32: the fewest digits that read back as the same float */
    float f32[] = {0.00155334454f, 1.0f, -2.5f, 0.1f, 3.40282347e38f};
    one_output(&o, "FP32", 5);
    o.c.fp32_contents = f32;
    o.c.n_fp32_contents = 5;
    for (int i = 0; i < 5; i++) {
        uint32_t bits;
        memcpy(&bits, &f32[i], 4);
        put_le(o.bytes + 4 * i, bits, 4);
    }
    char *text = render(&o.r, false);
    cJSON *j = cJSON_Parse(text);
    cJSON *data =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "outputs"), 0), "data");
    REQUIRE(cJSON_GetArraySize(data) == 5);
    for (int i = 0; i < 5; i++)
        CHECK((float)cJSON_GetArrayItem(data, i)->valuedouble == f32[i]);
    cJSON_Delete(j);
    free(text);
    renders_both(&o, 20, "[0.0015533445,1,-2.5,0.1,3.4028235e+38]");

    /* FP64, with what JSON numbers cannot say */
    double f64[] = {0.1, 1e300, -0.0, NAN, -INFINITY};
    one_output(&o, "FP64", 5);
    o.c.fp64_contents = f64;
    o.c.n_fp64_contents = 5;
    for (int i = 0; i < 5; i++) {
        uint64_t bits;
        memcpy(&bits, &f64[i], 8);
        put_le(o.bytes + 8 * i, bits, 8);
    }
    renders_both(&o, 40, "[0.1,1e+300,-0,\"NaN\",\"-Infinity\"]");

    /* INT64 past 2^53 keeps every digit */
    int64_t i64[] = {9007199254740993LL, INT64_MIN, -1};
    one_output(&o, "INT64", 3);
    o.c.int64_contents = i64;
    o.c.n_int64_contents = 3;
    for (int i = 0; i < 3; i++)
        put_le(o.bytes + 8 * i, (uint64_t)i64[i], 8);
    renders_both(&o, 24, "[9007199254740993,-9223372036854775808,-1]");

    uint64_t u64[] = {UINT64_MAX, 0};
    one_output(&o, "UINT64", 2);
    o.c.uint64_contents = u64;
    o.c.n_uint64_contents = 2;
    put_le(o.bytes, UINT64_MAX, 8);
    put_le(o.bytes + 8, 0, 8);
    renders_both(&o, 16, "[18446744073709551615,0]");

    /* narrow integers: raw values are sign-extended by datatype */
    int32_t i8[] = {-1, -128, 127};
    one_output(&o, "INT8", 3);
    o.c.int_contents = i8;
    o.c.n_int_contents = 3;
    memcpy(o.bytes, "\xff\x80\x7f", 3);
    renders_both(&o, 3, "[-1,-128,127]");
    int32_t i16[] = {-2, 300};
    one_output(&o, "INT16", 2);
    o.c.int_contents = i16;
    o.c.n_int_contents = 2;
    memcpy(o.bytes, "\xfe\xff\x2c\x01", 4);
    renders_both(&o, 4, "[-2,300]");
    uint32_t u16[] = {65535, 1};
    one_output(&o, "UINT16", 2);
    o.c.uint_contents = u16;
    o.c.n_uint_contents = 2;
    memcpy(o.bytes, "\xff\xff\x01\x00", 4);
    renders_both(&o, 4, "[65535,1]");

    protobuf_c_boolean bools[] = {1, 0, 1};
    one_output(&o, "BOOL", 3);
    o.c.bool_contents = bools;
    o.c.n_bool_contents = 3;
    memcpy(o.bytes, "\x01\x00\x01", 3);
    renders_both(&o, 3, "[true,false,true]");

    /* BYTES: text as strings, anything else (and text that looks like our prefix) as base64 */
    ProtobufCBinaryData strs[] = {{5, (uint8_t *)"hello"},
                                  {2, (uint8_t *)"\x00\xff"},
                                  {5, (uint8_t *)"b64:x"},
                                  {3, (uint8_t *)"h\xc3\xa9"},
                                  {0, NULL},
                                  {2, (uint8_t *)"\xc0\x80"}};
    one_output(&o, "BYTES", 6);
    o.c.bytes_contents = strs;
    o.c.n_bytes_contents = 6;
    size_t off = 0;
    for (int i = 0; i < 6; i++) {
        put_le(o.bytes + off, strs[i].len, 4);
        if (strs[i].len)
            memcpy(o.bytes + off + 4, strs[i].data, strs[i].len);
        off += 4 + strs[i].len;
    }
    renders_both(&o, off,
                 "[\"hello\",\"b64:AP8=\",\"b64:YjY0Ong=\",\"h\xc3\xa9\",\"\","
                 "\"b64:wIA=\"]");
    /* truncated: the last value's length says more than is there */
    use_raw(&o, off - 1);
    render_fails(&o.r, -EBADMSG,
                 "output 'out': raw contents are not the 6 length-prefixed BYTES values of "
                 "shape [6]");
    use_raw(&o, off + 1); /* a byte too many */
    render_fails(&o.r, -EBADMSG, "output 'out': raw contents are not");

    /* an empty batch */
    one_output(&o, "FP32", 0);
    renders_both(&o, 0, "[]");

    /* more values than are rendered: refused before any memory is spent on them */
    one_output(&o, "UINT8", (int64_t)V2JSON_MAX_RENDERED + 1);
    use_raw(&o, 1);
    render_fails(&o.r, -E2BIG, "output 'out': the answer holds more than 1048576 values");

    /* raw of the wrong size, or missing for an output */
    one_output(&o, "FP32", 2);
    use_raw(&o, 7);
    render_fails(&o.r, -EBADMSG,
                 "output 'out': 7 bytes of raw contents for shape [2] of FP32, which needs 8");
    Inference__ModelInferResponse__InferOutputTensor second;
    inference__model_infer_response__infer_output_tensor__init(&second);
    second.name = "proba";
    second.datatype = "FP32";
    Inference__ModelInferResponse__InferOutputTensor *two[] = {&o.t, &second};
    o.r.outputs = two;
    o.r.n_outputs = 2;
    use_raw(&o, 8);
    render_fails(&o.r, -EBADMSG,
                 "output 'proba': no raw contents (the response has 1 for 2 outputs)");

    /* contents that do not fill the shape, and datatypes JSON cannot carry */
    one_output(&o, "FP32", 3);
    o.c.fp32_contents = f32;
    o.c.n_fp32_contents = 2;
    render_fails(&o.r, -EBADMSG, "output 'out': 2 fp32_contents for shape [3], which needs 3");
    one_output(&o, "INT64", 1);
    o.c.fp32_contents = f32; /* the wrong field for the datatype */
    o.c.n_fp32_contents = 1;
    render_fails(&o.r, -EBADMSG, "output 'out': 0 int64_contents for shape [1], which needs 1");
    one_output(&o, "FP16", 0);
    render_fails(&o.r, -ENOTSUP, "output 'out': datatype FP16 is not supported in JSON");
    one_output(&o, "FLOAT", 0);
    render_fails(&o.r, -EBADMSG, "output 'out': unknown datatype 'FLOAT'");
    one_output(&o, "FP32", -1);
    render_fails(&o.r, -EBADMSG, "output 'out': shape [-1] has a negative dimension");

    /* model_version and id when set; pretty output indents by two spaces */
    int32_t one[] = {7};
    one_output(&o, "INT32", 1);
    o.c.int_contents = one;
    o.c.n_int_contents = 1;
    o.r.model_version = "2";
    o.r.id = "req-1";
    text = render(&o.r, true);
    CHECK_STR(text, "{\n"
                    "  \"model_name\": \"m\",\n"
                    "  \"model_version\": \"2\",\n"
                    "  \"id\": \"req-1\",\n"
                    "  \"outputs\": [{\n"
                    "      \"name\": \"out\",\n"
                    "      \"datatype\": \"INT32\",\n"
                    "      \"shape\": [1],\n"
                    "      \"data\": [7]\n"
                    "    }]\n"
                    "}");
    free(text);
}

/* A body of small values is counted before it is parsed: V2JSON_MAX_PARSED values pass (the
 * shape then decides), one more is refused at once; commas inside strings are not values. */
static void test_parse_bound(void)
{
    const char *head = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,%u],"
                       "\"data\":[";
    for (unsigned extra = 0; extra < 2; extra++) {
        /* the rest of the document counts 12: the count is a bound, not a census (a member
         * after a ',' counts at the ',' and at its ':') */
        unsigned n = V2JSON_MAX_PARSED - 12 + extra;
        size_t cap = 128 + 2 * (size_t)n;
        char *json = malloc(cap);
        REQUIRE(json != NULL);
        size_t len = (size_t)snprintf(json, cap, head, n);
        for (unsigned i = 0; i < n; i++) {
            json[len++] = '1';
            json[len++] = i + 1 < n ? ',' : ']';
        }
        len += (size_t)snprintf(json + len, cap - len, "}]}");
        Inference__ModelInferRequest *r = NULL;
        struct mm_error err = {0};
        int rc = v2json_request_parse(json, len, NULL, &r, &err);
        if (extra == 0) {
            CHECK_INT(rc, 0);
            CHECK(r && r->n_inputs == 1 && r->inputs[0]->contents &&
                  r->inputs[0]->contents->n_fp32_contents == n);
        } else {
            CHECK_INT(rc, -E2BIG);
            CHECK_STR(err.msg, "request: more than 1048576 JSON values (send tensors this large "
                               "over gRPC, or as fewer, larger requests)");
        }
        v2json_request_free(r);
        free(json);
    }
    /* commas and colons inside strings (escaped quotes too) are text, not values */
    Inference__ModelInferRequest *r =
        parse("{\"id\":\"a,b:c[\\\",,,\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
              "\"shape\":[1],\"data\":[1]}]}",
              NULL);
    CHECK(r && strcmp(r->id, "a,b:c[\",,,") == 0);
    v2json_request_free(r);
}

int main(void)
{
    test_parse_bound();
    test_rest_form();
    test_grpc_form();
    test_datatypes();
    test_rejects();
    test_render();
    return CHECK_DONE();
}
