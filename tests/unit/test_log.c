/* test_log.c - escaping of log lines and status messages: control characters, C1, line
 * separators and bytes that are not UTF-8 are written as escapes; text is cut at a character
 * boundary with an ellipsis; UTF-8 validity. */
#include <string.h>

#include "check.h"
#include "mm/log.h"

static const char *esc(const char *text, size_t len, size_t size)
{
    static char out[256];
    size_t n = mm_log_escape(out, size, text, len);
    CHECK(n == strlen(out) && n < size);
    return out;
}

int main(void)
{
    const char evil[] = "x\nFORGED LINE\x1b[31mred\x07";
    CHECK_STR(esc(evil, strlen(evil), 256), "x\\x0aFORGED LINE\\x1b[31mred\\x07");
    CHECK_STR(esc("a\0b", 3, 256), "a\\x00b");
    CHECK_STR(esc("caf\xc3\xa9 \xe2\x82\xac", 9, 256), "caf\xc3\xa9 \xe2\x82\xac"); /* é € */
    CHECK_STR(esc("\xc2\x9b"
                  "2J",
                  4, 256),
              "\\x9b2J"); /* C1 CSI */
    CHECK_STR(esc("a\xe2\x80\xa8"
                  "b",
                  5, 256),
              "a\\u2028b"); /* line sep */
    CHECK_STR(esc("bad\xff\xfe", 5, 256), "bad\\xff\\xfe");
    CHECK_STR(esc("\xc0\xaf", 2, 256), "\\xc0\\xaf");          /* overlong */
    CHECK_STR(esc("\xed\xa0\x80", 3, 256), "\\xed\\xa0\\x80"); /* surrogate */
    CHECK_STR(esc("\x7f", 1, 256), "\\x7f");
    /* Cut: whole characters and escapes only, "..." when something was left out. */
    CHECK_STR(esc("abcdefgh", 8, 9), "abcdefgh");
    CHECK_STR(esc("abcdefghi", 9, 9), "abcde...");
    CHECK_STR(esc("ab\ncdefgh", 9, 9), "ab...");
    CHECK_STR(esc("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", 9, 9), "\xe2\x82\xac...");
    CHECK_STR(esc("abc", 3, 1), "");
    CHECK_STR(esc("abcd", 4, 4), "...");
    CHECK_STR(esc("abc", 3, 4), "abc");
    char big[600];
    memset(big, 'y', sizeof(big));
    CHECK_INT(strlen(esc(big, sizeof(big), 256)), 255);

    CHECK(mm_utf8_valid("caf\xc3\xa9", 5));
    CHECK(mm_utf8_valid("a\0b", 3));
    CHECK(!mm_utf8_valid("bad\xff", 4));
    CHECK(!mm_utf8_valid("\xc3", 1));             /* truncated */
    CHECK(!mm_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    CHECK(mm_utf8_valid("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    return CHECK_DONE();
}
