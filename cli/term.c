/* term.c - terminal-safe printing (see term.h). */
#include "term.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mm/log.h"

/* Length of the well-formed UTF-8 sequence at p (n bytes available), 0 for a NUL or bytes
 * that are not one; *cp = its code point. */
static size_t utf8_seq(const unsigned char *p, size_t n, unsigned *cp)
{
    uint32_t c = 0;
    size_t len = p[0] ? mm_utf8_char((const char *)p, n, &c) : 0;
    *cp = c;
    return len;
}

/* Code points a terminal acts on rather than shows: C1 controls and the bidirectional
 * embeddings, overrides and isolates (which reorder what follows them on the line). */
static bool is_control_cp(unsigned cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029;
}

bool term_is_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned cp;
        size_t n = utf8_seq(p + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

void term_write(FILE *f, const char *s, size_t len, bool escape_backslash)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned char ch = p[i];
        if (ch >= 0x20 && ch < 0x7f) {
            if (ch == '\\' && escape_backslash)
                fputs("\\\\", f);
            else
                fputc(ch, f);
            i++;
            continue;
        }
        if (ch == '\n' || ch == '\r' || ch == '\t') {
            fputs(ch == '\n' ? "\\n" : ch == '\r' ? "\\r" : "\\t", f);
            i++;
            continue;
        }
        unsigned cp = 0;
        size_t n = ch >= 0x80 ? utf8_seq(p + i, len - i, &cp) : 0;
        if (n > 0 && !is_control_cp(cp)) {
            fwrite(p + i, 1, n, f);
            i += n;
            continue;
        }
        if (n == 0)
            n = 1; /* a control byte, or one that does not start a sequence */
        for (size_t k = 0; k < n; k++)
            fprintf(f, "\\x%02x", p[i + k]);
        i += n;
    }
}

void term_write_json(FILE *f, const char *json)
{
    const unsigned char *p = (const unsigned char *)json;
    size_t len = strlen(json);
    for (size_t i = 0; i < len;) {
        unsigned cp = 0;
        size_t n = p[i] >= 0x80 ? utf8_seq(p + i, len - i, &cp) : 1;
        if (n == 0) { /* not UTF-8: the caller should not have sent it; never raw */
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (n > 1 && is_control_cp(cp))
            fprintf(f, "\\u%04x", cp); /* only strings hold non-ASCII: a valid escape there */
        else if (p[i] == 0x7f)
            fputs("\\u007f", f); /* cJSON writes DEL raw; inside a string, as JSON allows */
        else
            fwrite(p + i, 1, n, f);
        i += n;
    }
}

void term_error(const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    char *text = small;
    if (n >= (int)sizeof(small) && (text = malloc((size_t)n + 1))) {
        va_start(ap, fmt);
        vsnprintf(text, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    if (!text) { /* without memory: the part that fit */
        text = small;
        n = (int)strlen(small);
    }
    fflush(stdout); /* what was printed before comes before */
    fputs("mmctl: ", stderr);
    term_write(stderr, text, n > 0 ? (size_t)n : 0, false);
    fputc('\n', stderr);
    if (text != small)
        free(text);
}
