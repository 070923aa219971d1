/* v2json.h - KServe V2 inference requests from JSON and responses to JSON, for people and
 * scripts (mmctl); the serving path itself never decodes tensors.
 *
 * Requests are accepted in two forms, and keys in snake_case or lowerCamelCase:
 *   REST:      {"id":"x","inputs":[{"name":"in","datatype":"FP32","shape":[1,2],"data":[1,2]}],
 *               "outputs":[{"name":"predict"}]}     "data" flat or nested (flattened row-major)
 *   gRPC JSON: {"inputs":[{"name":"in","datatype":"FP32","shape":["1","2"],
 *               "contents":{"fp32_contents":[1,2]}}]}   (what grpcurl sends)
 * Values go to the contents field KServe V2 assigns the datatype (INT8/16/32 -> int_contents,
 * UINT8/16/32 -> uint_contents, ...), never to raw_input_contents. Integers may be written as
 * decimal strings (proto3 JSON writes 64-bit ones so) and must be, beyond 2^53; floats may be
 * "NaN", "Infinity" or "-Infinity"; BYTES values are strings, taken as their UTF-8 bytes, or
 * "b64:" + base64 for any bytes (\u0000 is refused: cJSON cannot carry it). Nested "data" must
 * nest exactly as the shape.
 * FP16 and BF16 are refused. Limits: 8 dimensions, V2JSON_MAX_VALUES values per request.
 * "parameters" are ignored.
 *
 * Rendering writes integers and floats in digits that read back exactly (64-bit integers in
 * full, floats in the fewest digits that round-trip), NaN and infinities as the strings above,
 * BYTES as strings when they are UTF-8 text without NUL, else as "b64:" + base64 (also when the
 * text itself starts with "b64:", so the prefix is never ambiguous).
 *
 * Built as its own library beside the protos (v2json_dep: proto/v2json.c and the generated
 * protobuf-c code), which mmctl, tests and the fuzz target link; the core library does not. */
#ifndef MM_V2JSON_H
#define MM_V2JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/error.h"

#define V2JSON_MAX_VALUES (64u << 20)  /* in a request parsed */
#define V2JSON_MAX_RENDERED (1u << 20) /* in a response rendered (memory: ~100 bytes each) */
#define V2JSON_MAX_PARSED (1u << 20)   /* JSON values in a request text (memory while it is
                                          parsed: ~80 bytes each, whatever the body's size) */

/* Parse a KServe V2 inference request written as JSON into *out (caller frees with
 * v2json_request_free). model, if not NULL, sets model_name (overriding any "model_name" in
 * the document). The text is counted before it is parsed: more than V2JSON_MAX_PARSED JSON
 * values (numbers, strings, arrays, objects...) is -E2BIG at once, so that a large body of
 * small values ("1,1,1,...") cannot make the parse take ~40 times its size. Returns 0, -EINVAL
 * (not JSON, or not a valid request: err says what and where), -ENOTSUP (FP16/BF16), -E2BIG
 * (over the limits) or -ENOMEM. */
int v2json_request_parse(const char *json, size_t len, const char *model,
                         Inference__ModelInferRequest **out, struct mm_error *err);
void v2json_request_free(Inference__ModelInferRequest *r);

/* The response as JSON text in *out (malloc'd, NUL-terminated, caller frees):
 * {"model_name":..,"model_version":..,"id":..,"outputs":[{"name":..,"datatype":..,
 * "shape":[..],"data":[..]}]}, model_version and id only when set. Output i's data come from
 * raw_output_contents[i] (little-endian; BYTES as 4-byte length + bytes each) when the response
 * has raw contents, else from its contents. pretty: indented by 2 spaces, else compact.
 * Returns 0, -EBADMSG (contents that do not match an output's shape or datatype: err names the
 * output), -ENOTSUP (FP16/BF16), -E2BIG (more than V2JSON_MAX_RENDERED values in all) or
 * -ENOMEM. */
int v2json_response_render(const Inference__ModelInferResponse *r, bool pretty, char **out,
                           struct mm_error *err);

#endif
