/* test_prefix_end.c - etcd_prefix_end: the range end of a key prefix, byte by byte. */
#include <string.h>

#include "check.h"
#include "mm/etcd.h"

/* prefix (len bytes) -> want (want_len bytes), NUL-terminated, nothing written past it. */
static void expect(const char *prefix, size_t len, const char *want, size_t want_len)
{
    char out[64];
    memset(out, 0x5a, sizeof(out));
    size_t n = etcd_prefix_end(prefix, len, out);
    CHECK_INT(n, want_len);
    CHECK(memcmp(out, want, want_len) == 0);
    CHECK_INT(out[n], 0);
    size_t room = (len ? len : 1) + 1;
    CHECK_INT((unsigned char)out[room], 0x5a);
}

int main(void)
{
    expect("/modelmesh/c/", 13, "/modelmesh/c0", 13);       /* '/' + 1 = '0' */
    expect("a", 1, "b", 1);
    expect("a\x7f", 2, "a\x80", 2);                          /* no signed-char overflow */
    expect("a\xfe", 2, "a\xff", 2);
    expect("a\xff", 2, "b", 1);                              /* trailing 0xff dropped */
    expect("a\xff\xff\xff", 4, "b", 1);
    expect("a\xfe\xff", 3, "a\xff", 2);
    expect("\xff\xff", 2, "\0", 1);                          /* all 0xff: to the end */
    expect("\xff", 1, "\0", 1);
    expect("", 0, "\0", 1);                                  /* empty: the whole keyspace */
    expect("a\0b", 3, "a\0c", 3);                            /* a NUL inside is a byte */
    expect("a\0", 2, "a\x01", 2);
    expect("a\0\xff", 3, "a\x01", 2);

    /* In place: out may be the prefix's own buffer. */
    char buf[8] = "ab\xff";
    CHECK_INT(etcd_prefix_end(buf, 3, buf), 2);
    CHECK_STR(buf, "ac");
    return CHECK_DONE();
}
