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

/* Bounds checked before a message is decoded: decoders allocate per occurrence of a field (a
 * repeated message, a map entry, an unknown field, the bookkeeping of every field), so a 16 MiB
 * message of 8M empty entries costs a gigabyte once unpacked. wire_check_bounds walks the wire
 * format once, without allocating or copying, descending into the messages the schema names,
 * and counts: every field occurrence at every level (a packed array counts once), and for the
 * fields the schema lists, their occurrences (or packed values) against counters shared by
 * whichever fields name them, over the whole message. */
enum wire_kind {
    WIRE_VARINT,  /* int32, int64, uint32, uint64, bool, enum: may come packed */
    WIRE_FIXED32, /* float, fixed32: may come packed */
    WIRE_FIXED64, /* double, fixed64: may come packed */
    WIRE_BYTES,   /* string, bytes */
    WIRE_MESSAGE, /* a message or a map entry */
};

#define WIRE_MAX_COUNTERS 8

struct wire_schema;
struct wire_rule {
    uint32_t field;
    enum wire_kind kind;
    int counter;                       /* counter its occurrences (values) add to; -1: none */
    const struct wire_schema *message; /* WIRE_MESSAGE: its fields, looked into; NULL: not */
};
struct wire_schema {
    const struct wire_rule *rules;
    size_t n_rules;
};
struct wire_limits {
    uint64_t max[WIRE_MAX_COUNTERS]; /* per counter, in the whole message */
    uint64_t max_fields;             /* field occurrences at every level looked into */
};

/* 0 when the message in segs[0..n) stays within lim; -E2BIG when it does not (*which, may be
 * NULL: the counter that went past its bound, or -1 for max_fields), -EBADMSG when it is
 * malformed (as wire_find_field says, and a nested field running past its message, packed
 * fixed-width values of a length that is no multiple of their width), -EINVAL for a schema
 * nested deeper than 32. The walk stops at the first bound exceeded. */
int wire_check_bounds(const struct wire_segment *segs, size_t n, const struct wire_schema *schema,
                      const struct wire_limits *lim, int *which);

/* Human-readable name of a wire_find_field error. */
const char *wire_strerror(int code);

#endif
