/* fuzz_wire.c - fuzz target: the field reader on arbitrary bytes split at arbitrary points, and
 * protobuf-c's decoding of every request type the mesh accepts. Built as a libFuzzer target with
 * clang (-Dfuzz=true), and linked with fuzz_driver.c into a unit test everywhere else. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "grpc_predict_v2.pb-c.h"
#include "model-mesh.pb-c.h"
#include "model-runtime.pb-c.h"
#include "mm/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A nested schema like mm-runtime's ModelInferRequest: tensors holding dims and contents. */
static const struct wire_rule contents_rules[] = {{1, WIRE_VARINT, 2, NULL},
                                                  {6, WIRE_FIXED32, 2, NULL},
                                                  {7, WIRE_FIXED64, 2, NULL},
                                                  {8, WIRE_BYTES, 2, NULL}};
static const struct wire_schema contents_schema = {contents_rules, 4};
static const struct wire_rule tensor_rules[] = {{3, WIRE_VARINT, 1, NULL},
                                                {5, WIRE_MESSAGE, -1, &contents_schema}};
static const struct wire_schema tensor_schema = {tensor_rules, 2};
static const struct wire_rule top_rules[] = {{5, WIRE_MESSAGE, 0, &tensor_schema},
                                             {7, WIRE_BYTES, 3, NULL}};
static const struct wire_schema top_schema = {top_rules, 2};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte chooses where the message is split in two. */
    size_t cut = size ? data[0] % (size + 1) : 0;
    struct wire_segment segs[2] = {{data, cut}, {data + cut, size - cut}};
    char scratch[64];
    const char *v;
    size_t vl;
    for (uint32_t field = 1; field <= 3; field++) {
        if (wire_find_field(segs, 2, field, scratch, sizeof(scratch), &v, &vl) == 0) {
            volatile char sink = vl ? v[vl - 1] : 0; /* the reported bytes are readable */
            (void)sink;
        }
    }
    static const struct wire_limits lim = {.max = {64, 1024, 4096, 64}, .max_fields = 65536};
    int which = 0;
    int rc = wire_check_bounds(segs, 2, &top_schema, &lim, &which);
    if (rc != 0 && rc != -E2BIG && rc != -EBADMSG)
        __builtin_trap(); /* no other outcome exists */
#define TRY(type)                                                                          \
    do {                                                                                   \
        ProtobufCMessage *m = protobuf_c_message_unpack(&type##__descriptor, NULL, size, data); \
        if (m)                                                                             \
            protobuf_c_message_free_unpacked(m, NULL);                                     \
    } while (0)
    TRY(inference__model_infer_request);
    TRY(inference__model_metadata_request);
    TRY(inference__model_ready_request);
    TRY(inference__model_infer_response);
    TRY(mmesh__load_model_request);
    TRY(mmesh__runtime_status_response);
    TRY(mmesh__register_model_request);
    TRY(mmesh__set_vmodel_request);
#undef TRY
    return 0;
}
