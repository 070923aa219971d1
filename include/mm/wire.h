/* wire.h - read protobuf wire format without decoding: find one top-level length-delimited
 * field (e.g. ModelInferRequest.model_name, field 1) in a message that may be split over
 * several segments (gRPC slices). Tensors and other fields are skipped by their length, never
 * copied or parsed, so the cost is one step per top-level field.
 *
 * Protobuf's rule for a repeated occurrence of a singular field is "the last one wins"; the
 * reader honours it by scanning every top-level field. */
#ifndef MM_WIRE_H
#define MM_WIRE_H

#include <stddef.h>
#include <stdint.h>

struct wire_segment {
    const uint8_t *data;
    size_t len;
};

/* Find field `field` (wire type 2) at the top level of the message in segs[0..n).
 * On success *out points at the value: into the segment when it lies within one, else into
 * scratch (a copy). Returns 0, -ENOENT (absent), -EBADMSG (malformed: bad varint, length past
 * the end, invalid field number, group or unknown wire type, the field present with another
 * wire type) or -E2BIG (the value spans segments and exceeds scratch_size). */
int wire_find_field(const struct wire_segment *segs, size_t n, uint32_t field, char *scratch,
                    size_t scratch_size, const char **out, size_t *out_len);

/* Human-readable name of a wire_find_field error. */
const char *wire_strerror(int code);

#endif
