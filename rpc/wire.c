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
        done += step;
    }
    *out = scratch;
    return 0;
}

int wire_find_field(const struct wire_segment *segs, size_t n, uint32_t field, char *scratch,
                    size_t scratch_size, const char **out, size_t *out_len)
{
    struct cursor c = {segs, n, 0, 0};
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

const char *wire_strerror(int code)
{
    switch (code) {
    case 0: return "ok";
    case -ENOENT: return "field absent";
    case -EBADMSG: return "malformed protobuf";
    case -E2BIG: return "field too large";
    case -EINVAL: return "invalid field number";
    default: return "unknown error";
    }
}
