/* test_wire.c - the field reader against messages packed by protobuf-c, whole and split at
 * every byte boundary, and against malformed input. */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "mm/wire.h"

/* A ModelInferRequest with fields before and after model_name and a 64 KiB tensor. */
static uint8_t *packed_request(const char *name, size_t *len)
{
    static float data[16384];
    for (size_t i = 0; i < 16384; i++)
        data[i] = (float)i * 0.5f;
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor *ins[] = {&in};
    int64_t shape[] = {1, 16384};
    in.name = "input-0";
    in.datatype = "FP32";
    in.shape = shape;
    in.n_shape = 2;
    ProtobufCBinaryData raw = {sizeof(data), (uint8_t *)data};
    req.model_name = (char *)name;
    req.id = "request-1";
    req.inputs = ins;
    req.n_inputs = 1;
    req.raw_input_contents = &raw;
    req.n_raw_input_contents = 1;
    *len = inference__model_infer_request__get_packed_size(&req);
    uint8_t *buf = malloc(*len);
    inference__model_infer_request__pack(&req, buf);
    return buf;
}

static int find(const uint8_t *buf, size_t len, uint32_t field, char *scratch, size_t ss,
                const char **out, size_t *out_len)
{
    struct wire_segment seg = {buf, len};
    return wire_find_field(&seg, 1, field, scratch, ss, out, out_len);
}

/* wire_check_bounds with a schema like mm-runtime's: tensors (counter 0) holding dims
 * (counter 1, packed or not) and contents (counter 2: fp32 fixed, int64 varints). */
static const struct wire_rule contents_rules[] = {{3, WIRE_VARINT, 2, NULL},
                                                  {6, WIRE_FIXED32, 2, NULL}};
static const struct wire_schema contents_schema = {contents_rules, 2};
static const struct wire_rule tensor_rules[] = {{3, WIRE_VARINT, 1, NULL},
                                                {5, WIRE_MESSAGE, -1, &contents_schema}};
static const struct wire_schema tensor_schema = {tensor_rules, 2};
static const struct wire_rule top_rules[] = {{5, WIRE_MESSAGE, 0, &tensor_schema}};
static const struct wire_schema top_schema = {top_rules, 1};

static int bounds(const uint8_t *buf, size_t len, size_t split, uint64_t max_fields,
                  int *which)
{
    struct wire_limits lim = {.max = {2, 4, 8}, .max_fields = max_fields};
    struct wire_segment segs[2] = {{buf, split}, {buf + split, len - split}};
    return wire_check_bounds(segs, 2, &top_schema, &lim, which);
}

static void test_bounds(void)
{
    int which = -5;
    /* 2 tensors, dims [1 packed x3] + [1 unpacked], contents 2 fp32 packed + 3 int64 packed */
    const uint8_t good[] = {0x2a, 0x05, 0x1a, 0x03, 0x01, 0x02, 0x03, /* dims packed: 1, 2, 3 */
                            0x2a, 0x0e, 0x18, 0x07,                   /* dim unpacked: 7 */
                            0x2a, 0x0a, 0x32, 0x08, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, /* fp32 */
                            0x50, 0x01};                              /* unknown field 10 */
    int bad = 0;
    for (size_t split = 0; split <= sizeof(good); split++)
        bad += bounds(good, sizeof(good), split, 100, &which) != 0 || which != -1;
    CHECK_INT(bad, 0);
    /* 7 field occurrences at all levels, field 10 the 7th: 6 allowed is one too few */
    CHECK_INT(bounds(good, sizeof(good), 3, 6, &which), -E2BIG);
    CHECK_INT(which, -1);
    CHECK_INT(bounds(good, sizeof(good), 3, 7, &which), 0);
    /* a third tensor: counter 0 past 2 */
    uint8_t three[sizeof(good) + 2];
    memcpy(three, good, sizeof(good));
    three[sizeof(good)] = 0x2a;
    three[sizeof(good) + 1] = 0x00;
    CHECK_INT(bounds(three, sizeof(three), 1, 100, &which), -E2BIG);
    CHECK_INT(which, 0);
    /* 5 dims (packed 4 + unpacked 1... here 3 + 2): counter 1 past 4 */
    const uint8_t dims[] = {0x2a, 0x05, 0x1a, 0x03, 0x01, 0x02, 0x03, 0x2a, 0x04, 0x18, 0x07,
                            0x18, 0x08};
    CHECK_INT(bounds(dims, sizeof(dims), 6, 100, &which), -E2BIG);
    CHECK_INT(which, 1);
    /* 9 packed int64 values in contents (one of 2 bytes): counter 2 past 8 */
    const uint8_t values[] = {0x2a, 0x0d, 0x2a, 0x0b, 0x1a, 0x09, 1, 2, 3, 4, 5, 6, 7, 0x81,
                              0x01};
    CHECK_INT(bounds(values, sizeof(values), 9, 100, &which), 0); /* 8 values: 0x81 0x01 is one */
    const uint8_t values9[] = {0x2a, 0x0d, 0x2a, 0x0b, 0x1a, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_INT(bounds(values9, sizeof(values9), 9, 100, &which), -E2BIG);
    CHECK_INT(which, 2);
    /* packed fp32 of a length that is no multiple of 4; a nested field past its message */
    const uint8_t odd[] = {0x2a, 0x05, 0x2a, 0x03, 0x32, 0x01, 0};
    CHECK_INT(bounds(odd, sizeof(odd), 2, 100, &which), -EBADMSG);
    const uint8_t past[] = {0x2a, 0x02, 0x1a, 0x03, 1, 2, 3};
    CHECK_INT(bounds(past, sizeof(past), 2, 100, &which), -EBADMSG);
    /* the field occurrence bound holds for the top level too (8M empty tensors are refused
     * after the third, without reading on) */
    size_t n = 1 << 20;
    uint8_t *many = calloc(n, 2);
    for (size_t i = 0; i < n; i++)
        many[2 * i] = 0x2a;
    CHECK_INT(bounds(many, 2 * n, n, 1u << 30, &which), -E2BIG);
    CHECK_INT(which, 0);
    free(many);
}

int main(void)
{
    char scratch[256];
    const char *v = NULL;
    size_t vl = 0;
    size_t len;
    const char *name = "example-mnist-isvc__isvc-6b2eb0b8bf";
    uint8_t *buf = packed_request(name, &len);
    CHECK(len > 65536);

    CHECK_INT(find(buf, len, 1, scratch, sizeof(scratch), &v, &vl), 0);
    CHECK_INT(vl, strlen(name));
    CHECK(memcmp(v, name, vl) == 0);
    CHECK(v >= (const char *)buf && v < (const char *)buf + len); /* no copy */
    CHECK_INT(find(buf, len, 3, scratch, sizeof(scratch), &v, &vl), 0); /* id */
    CHECK(vl == 9 && memcmp(v, "request-1", 9) == 0);
    CHECK_INT(find(buf, len, 2, scratch, sizeof(scratch), &v, &vl), -ENOENT); /* empty version */

    /* Split at every boundary within the first 80 bytes (and a few far ones): the name is
     * found, copied into scratch only when it straddles the split. */
    size_t splits[] = {0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 70, 1000, 65000, len - 1, len};
    int bad = 0;
    for (size_t cut = 0; cut < 80 + sizeof(splits) / sizeof(splits[0]); cut++) {
        size_t at = cut < 80 ? cut : splits[cut - 80];
        struct wire_segment segs[2] = {{buf, at}, {buf + at, len - at}};
        int rc = wire_find_field(segs, 2, 1, scratch, sizeof(scratch), &v, &vl);
        bad += rc != 0 || vl != strlen(name) || memcmp(v, name, vl) != 0;
    }
    CHECK_INT(bad, 0);
    /* Many one-byte segments, then the rest of the message in one. */
    struct wire_segment *bytes = calloc(201, sizeof(*bytes));
    for (size_t i = 0; i < 200; i++)
        bytes[i] = (struct wire_segment){buf + i, 1};
    bytes[200] = (struct wire_segment){buf + 200, len - 200};
    CHECK_INT(wire_find_field(bytes, 201, 1, scratch, sizeof(scratch), &v, &vl), 0);
    CHECK(vl == strlen(name) && memcmp(v, name, vl) == 0);
    /* A straddling value larger than scratch: -E2BIG, not an overflow. */
    CHECK_INT(wire_find_field(bytes, 201, 1, scratch, 4, &v, &vl), -E2BIG);
    free(bytes);

    /* Truncation anywhere in the header fields is malformed, never a crash or a false hit. */
    int wrong = 0;
    for (size_t cut = 1; cut < 120; cut++) {
        int rc = find(buf, cut, 1, scratch, sizeof(scratch), &v, &vl);
        /* a cut after model_name ended may still find it; any other outcome must be EBADMSG */
        if (rc == 0)
            wrong += vl != strlen(name) || memcmp(v, name, vl) != 0;
        else
            wrong += rc != -EBADMSG && rc != -ENOENT;
    }
    CHECK_INT(wrong, 0);
    CHECK_INT(find(buf, len - 1, 5, scratch, sizeof(scratch), &v, &vl), -EBADMSG);
    free(buf);

    /* Hand-made wire: the last occurrence wins; other wire types are skipped. */
    const uint8_t twice[] = {0x0a, 0x01, 'a', 0x10, 0x96, 0x01, 0x1d, 1, 2, 3, 4,
                             0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x02, 'b', 'c'};
    CHECK_INT(find(twice, sizeof(twice), 1, scratch, sizeof(scratch), &v, &vl), 0);
    CHECK(vl == 2 && memcmp(v, "bc", 2) == 0);
    const uint8_t empty_name[] = {0x0a, 0x00};
    CHECK_INT(find(empty_name, 2, 1, scratch, sizeof(scratch), &v, &vl), 0);
    CHECK_INT(vl, 0);
    const uint8_t field_zero[] = {0x02, 0x00};
    CHECK_INT(find(field_zero, 2, 1, scratch, sizeof(scratch), &v, &vl), -EBADMSG);
    const uint8_t group[] = {0x0b, 0x0c};
    CHECK_INT(find(group, 2, 1, scratch, sizeof(scratch), &v, &vl), -EBADMSG);
    const uint8_t wrong_type[] = {0x08, 0x01}; /* field 1 as a varint */
    CHECK_INT(find(wrong_type, 2, 1, scratch, sizeof(scratch), &v, &vl), -EBADMSG);
    const uint8_t huge_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
    CHECK_INT(find(huge_len, sizeof(huge_len), 1, scratch, sizeof(scratch), &v, &vl), -EBADMSG);
    const uint8_t long_varint[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                   0x80, 0x01};
    CHECK_INT(find(long_varint, sizeof(long_varint), 1, scratch, sizeof(scratch), &v, &vl),
              -EBADMSG);
    CHECK_INT(find(NULL, 0, 1, scratch, sizeof(scratch), &v, &vl), -ENOENT);
    CHECK_INT(find(twice, sizeof(twice), 0, scratch, sizeof(scratch), &v, &vl), -EINVAL);
    CHECK_STR(wire_strerror(-EBADMSG), "malformed protobuf");
    test_bounds();
    return CHECK_DONE();
}
