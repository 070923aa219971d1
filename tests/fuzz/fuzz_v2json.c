/* fuzz_v2json.c - fuzz target: the JSON request parser on arbitrary text, and the response
 * renderer on whatever protobuf-c decodes from arbitrary bytes as a ModelInferResponse (a
 * server's answer is untrusted input to mmctl). Built as a libFuzzer target with clang
 * (-Dfuzz=true), and linked with fuzz_driver.c into a unit test everywhere else. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/v2json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mm_error err = {0};
    Inference__ModelInferRequest *req = NULL;
    if (v2json_request_parse((const char *)data, size, NULL, &req, &err) == 0)
        v2json_request_free(req);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(&inference__model_infer_response__descriptor, NULL, size, data);
    if (m) {
        char *text = NULL;
        for (int pretty = 0; pretty < 2; pretty++) {
            if (v2json_response_render((Inference__ModelInferResponse *)m, pretty, &text, &err) ==
                0)
                free(text);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
