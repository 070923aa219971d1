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
    return CHECK_DONE();
}
