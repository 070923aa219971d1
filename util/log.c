/* log.c - timestamped log lines on stderr. The level is process-wide configuration set once at
 * start-up, the one piece of global state the library keeps. */
#include "mm/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_MESSAGE 1024 /* bytes of a formatted message before escaping */

static enum mm_log_level min_level = MM_LOG_INFO;

void mm_log_set_level(enum mm_log_level level)
{
    min_level = level;
}

int mm_log_parse_level(const char *s, enum mm_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum mm_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

size_t mm_utf8_char(const char *text, size_t len, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n;
    uint32_t c, min;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        n = 2, c = s[0] & 0x1f, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3, c = s[0] & 0x0f, min = 0x800;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

bool mm_utf8_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    uint32_t cp;
    for (size_t i = 0; i < len;) {
        size_t n = mm_utf8_char((const char *)s + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* The escaped form of the character at text[i]: *piece (len *piece_len), which is either the
 * character itself or esc; returns how many bytes of text it stands for. */
static size_t piece_at(const unsigned char *s, size_t len, size_t i, char esc[8],
                       const char **piece, size_t *piece_len)
{
    uint32_t cp = 0;
    size_t n = mm_utf8_char((const char *)s + i, len - i, &cp);
    if (n > 0 && cp >= 0x20 && !(cp >= 0x7f && cp < 0xa0) && cp != 0x2028 && cp != 0x2029) {
        *piece = (const char *)s + i;
        *piece_len = n;
        return n;
    }
    /* a control character (C0, DEL, C1, line separators) or a byte that is no UTF-8 */
    if (n == 0 || cp < 0x100)
        snprintf(esc, 8, "\\x%02x", n == 0 ? s[i] : (unsigned)cp);
    else
        snprintf(esc, 8, "\\u%04x", (unsigned)cp);
    *piece = esc;
    *piece_len = strlen(esc);
    return n ? n : 1;
}

size_t mm_log_escape(char *out, size_t size, const char *text, size_t len)
{
    static const char ellipsis[] = "...";
    const size_t room = size - 1, dots = sizeof(ellipsis) - 1;
    const unsigned char *s = (const unsigned char *)text;
    const char *piece;
    size_t o = 0, piece_len, i = 0;
    char esc[8];
    if (size == 0)
        return 0;
    /* Whole pieces while they leave room for the ellipsis... */
    while (i < len) {
        size_t n = piece_at(s, len, i, esc, &piece, &piece_len);
        if (o + piece_len + dots > room)
            break;
        memcpy(out + o, piece, piece_len);
        o += piece_len;
        i += n;
    }
    /* ...then the rest if it fits whole, else the ellipsis. */
    size_t rest = 0;
    for (size_t j = i; j < len && o + rest <= room;)
        j += piece_at(s, len, j, esc, &piece, &piece_len), rest += piece_len;
    if (o + rest <= room) {
        while (i < len) {
            i += piece_at(s, len, i, esc, &piece, &piece_len);
            memcpy(out + o, piece, piece_len);
            o += piece_len;
        }
    } else if (o + dots <= room) {
        memcpy(out + o, ellipsis, dots);
        o += dots;
    }
    out[o] = '\0';
    return o;
}

void mm_log(enum mm_log_level level, const char *who, const char *fmt, ...)
{
    static const char *tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if (level < min_level)
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char message[MAX_MESSAGE], line[4 * MAX_MESSAGE + 128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (len < 0)
        len = 0;
    if ((size_t)len >= sizeof(message))
        len = sizeof(message) - 1;
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tags[level], who);
    /* Escaped, so that what a message quotes (ids, paths) cannot forge lines or drive a
     * terminal. */
    if (n > 0 && (size_t)n < sizeof(line))
        mm_log_escape(line + n, sizeof(line) - (size_t)n, message, (size_t)len);
    fprintf(stderr, "%s\n", line);
}
