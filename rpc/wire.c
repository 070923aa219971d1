/* wire.c - protobuf wire-format field lookup over segmented buffers (see wire.h). */
#include "mm/wire.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define MAX_FIELD 536870911u /* 2^29 - 1 */

struct cursor {
    const struct wire_segment *segs;
    size_t n;
    size_t seg;   /* current segment */
    size_t off;   /* offset in it */
    uint64_t pos; /* bytes read from the start */
};

static bool at_end(struct cursor *c)
{
    while (c->seg < c->n && c->off >= c->segs[c->seg].len) {
        c->seg++;
        c->off = 0;
    }
    return c->seg >= c->n;
}

static int read_byte(struct cursor *c, uint8_t *b)
{
    if (at_end(c))
        return -EBADMSG;
    *b = c->segs[c->seg].data[c->off++];
    c->pos++;
    return 0;
}

static int read_varint(struct cursor *c, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (read_byte(c, &b) < 0)
            return -EBADMSG;
        if (shift == 63 && b > 1)
            return -EBADMSG; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -EBADMSG;
}

static int skip(struct cursor *c, uint64_t len)
{
    while (len > 0) {
        if (at_end(c))
            return -EBADMSG;
        size_t avail = c->segs[c->seg].len - c->off;
        size_t step = len < avail ? (size_t)len : avail;
        c->off += step;
        c->pos += step;
        len -= step;
    }
    return 0;
}

/* Capture len bytes at the cursor: a pointer if contiguous, else a copy into scratch. */
static int capture(struct cursor *c, uint64_t len, char *scratch, size_t scratch_size,
                   const char **out)
{
    if (len == 0) {
        *out = "";
        return 0;
    }
    if (at_end(c))
        return -EBADMSG;
    const struct wire_segment *s = &c->segs[c->seg];
    if (s->len - c->off >= len) {
        *out = (const char *)s->data + c->off;
        c->off += (size_t)len;
        c->pos += len;
        return 0;
    }
    /* spans segments: validate the length first, then copy if it fits */
    struct cursor probe = *c;
    if (skip(&probe, len) < 0)
        return -EBADMSG;
    if (len > scratch_size)
        return -E2BIG;
    size_t done = 0;
    while (done < len) {
        at_end(c);
        size_t avail = c->segs[c->seg].len - c->off;
        size_t step = len - done < avail ? (size_t)(len - done) : avail;
        memcpy(scratch + done, c->segs[c->seg].data + c->off, step);
        c->off += step;
        c->pos += step;
        done += step;
    }
    *out = scratch;
    return 0;
}

int wire_find_field(const struct wire_segment *segs, size_t n, uint32_t field, char *scratch,
                    size_t scratch_size, const char **out, size_t *out_len)
{
    struct cursor c = {segs, n, 0, 0, 0};
    bool found = false;
    if (field == 0 || field > MAX_FIELD)
        return -EINVAL;
    while (!at_end(&c)) {
        uint64_t tag, v;
        if (read_varint(&c, &tag) < 0)
            return -EBADMSG;
        uint64_t number = tag >> 3;
        unsigned type = (unsigned)(tag & 7);
        if (number == 0 || number > MAX_FIELD)
            return -EBADMSG;
        int rc;
        switch (type) {
        case 0: /* varint */
            rc = read_varint(&c, &v);
            break;
        case 1: /* fixed64 */
            rc = skip(&c, 8);
            break;
        case 2: /* length-delimited */
            rc = read_varint(&c, &v);
            if (rc == 0 && number == field) {
                const char *p = NULL;
                /* An earlier occurrence that was copied into scratch is overwritten: fine,
                 * only the last one counts. */
                rc = capture(&c, v, scratch, scratch_size, &p);
                if (rc == 0) {
                    *out = p;
                    *out_len = (size_t)v;
                    found = true;
                }
            } else if (rc == 0) {
                rc = skip(&c, v);
            }
            break;
        case 5: /* fixed32 */
            rc = skip(&c, 4);
            break;
        default: /* groups (3, 4) are not used by our protocols; 6, 7 do not exist */
            rc = -EBADMSG;
            break;
        }
        if (rc < 0)
            return rc;
        if (number == field && type != 2)
            return -EBADMSG;
    }
    return found ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------- bounds */

#define MAX_DEPTH 32 /* a schema nested deeper is a programmer error (a cycle) */

struct tally {
    const struct wire_limits *lim;
    uint64_t counts[WIRE_MAX_COUNTERS];
    uint64_t fields;
    int which;
};

/* Count one occurrence (or n packed values) against counter k; -E2BIG past its bound. */
static int add(struct tally *t, int k, uint64_t n)
{
    if (k < 0 || k >= WIRE_MAX_COUNTERS)
        return 0;
    t->counts[k] += n;
    if (t->counts[k] > t->lim->max[k]) {
        t->which = k;
        return -E2BIG;
    }
    return 0;
}

/* Values in len bytes of packed varints: one per byte without the continuation bit. */
static int count_varints(struct cursor *c, uint64_t len, uint64_t *out)
{
    uint64_t n = 0;
    while (len > 0) {
        if (at_end(c))
            return -EBADMSG;
        const uint8_t *p = c->segs[c->seg].data + c->off;
        size_t avail = c->segs[c->seg].len - c->off;
        size_t step = len < avail ? (size_t)len : avail;
        for (size_t i = 0; i < step; i++)
            n += p[i] < 0x80;
        c->off += step;
        c->pos += step;
        len -= step;
    }
    *out = n;
    return 0;
}

static const struct wire_rule *rule_for(const struct wire_schema *s, uint64_t number)
{
    for (size_t i = 0; s && i < s->n_rules; i++)
        if (s->rules[i].field == number)
            return &s->rules[i];
    return NULL;
}

/* The fields of one message: len bytes from the cursor (UINT64_MAX: to the end). */
static int check_message(struct cursor *c, uint64_t len, const struct wire_schema *schema,
                         struct tally *t, int depth)
{
    uint64_t end = len == UINT64_MAX ? UINT64_MAX : c->pos + len;
    if (depth > MAX_DEPTH)
        return -EINVAL;
    while (end == UINT64_MAX ? !at_end(c) : c->pos < end) {
        uint64_t tag, v;
        if (read_varint(c, &tag) < 0)
            return -EBADMSG;
        uint64_t number = tag >> 3;
        unsigned type = (unsigned)(tag & 7);
        if (number == 0 || number > MAX_FIELD)
            return -EBADMSG;
        if (++t->fields > t->lim->max_fields) {
            t->which = -1;
            return -E2BIG;
        }
        const struct wire_rule *r = rule_for(schema, number);
        int rc = 0;
        switch (type) {
        case 0:
            rc = read_varint(c, &v);
            if (rc == 0 && r && r->kind == WIRE_VARINT)
                rc = add(t, r->counter, 1);
            break;
        case 1:
            rc = skip(c, 8);
            if (rc == 0 && r && r->kind == WIRE_FIXED64)
                rc = add(t, r->counter, 1);
            break;
        case 5:
            rc = skip(c, 4);
            if (rc == 0 && r && r->kind == WIRE_FIXED32)
                rc = add(t, r->counter, 1);
            break;
        case 2:
            rc = read_varint(c, &v);
            if (rc < 0)
                break;
            if (end != UINT64_MAX && v > end - c->pos)
                return -EBADMSG; /* runs past its message */
            if (!r) {
                rc = skip(c, v);
            } else if (r->kind == WIRE_MESSAGE) {
                rc = add(t, r->counter, 1);
                if (rc == 0)
                    rc = r->message ? check_message(c, v, r->message, t, depth + 1) : skip(c, v);
            } else if (r->kind == WIRE_BYTES) {
                rc = add(t, r->counter, 1);
                if (rc == 0)
                    rc = skip(c, v);
            } else if (r->kind == WIRE_VARINT) { /* packed */
                uint64_t n = 0;
                rc = count_varints(c, v, &n);
                if (rc == 0)
                    rc = add(t, r->counter, n);
            } else {
                unsigned width = r->kind == WIRE_FIXED32 ? 4 : 8;
                if (v % width)
                    return -EBADMSG;
                rc = add(t, r->counter, v / width);
                if (rc == 0)
                    rc = skip(c, v);
            }
            break;
        default:
            rc = -EBADMSG;
            break;
        }
        if (rc < 0)
            return rc;
    }
    return end == UINT64_MAX || c->pos == end ? 0 : -EBADMSG;
}

int wire_check_bounds(const struct wire_segment *segs, size_t n, const struct wire_schema *schema,
                      const struct wire_limits *lim, int *which)
{
    struct cursor c = {segs, n, 0, 0, 0};
    struct tally t = {.lim = lim, .which = -1};
    int rc = check_message(&c, UINT64_MAX, schema, &t, 0);
    if (which)
        *which = rc == -E2BIG ? t.which : -1;
    return rc;
}

const char *wire_strerror(int code)
{
    switch (code) {
    case 0: return "ok";
    case -ENOENT: return "field absent";
    case -EBADMSG: return "malformed protobuf";
    case -E2BIG: return "field too large, or a bound exceeded";
    case -EINVAL: return "invalid field number";
    default: return "unknown error";
    }
}
