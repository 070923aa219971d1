/* log.h - process log lines on stderr: "2026-11-25T03:40:00.123Z INFO  node: text".
 * Programs log; library code returns struct mm_error and leaves logging to its caller,
 * except for background work (watch resumes, lease loss) that has no caller to return to.
 * A message is escaped (mm_log_escape) before it is written: what it quotes from outside (ids,
 * paths, a library's error text) cannot forge a log line or drive a terminal. */
#ifndef MM_LOG_H
#define MM_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mm_log_level { MM_LOG_DEBUG, MM_LOG_INFO, MM_LOG_WARN, MM_LOG_ERROR };

void mm_log_set_level(enum mm_log_level level);
/* Parse "debug|info|warn|error"; returns 0 or -EINVAL. */
int mm_log_parse_level(const char *s, enum mm_log_level *out);
void mm_log(enum mm_log_level level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copy len bytes of text into out (size > 0; always NUL-terminated) with control characters
 * (C0, DEL, C1, U+2028/U+2029) and bytes that are not UTF-8 written as \xNN (\uNNNN past
 * U+00FF), the way the sklearn runtime's logs write them. What does not fit is cut at a
 * character boundary and marked "...". Returns the length written. */
size_t mm_log_escape(char *out, size_t size, const char *text, size_t len);
/* Length of the UTF-8 character at text (at most len > 0 bytes), 0 if the bytes are not one:
 * overlong forms, surrogates and code points past U+10FFFF are not (a NUL is: length 1). *cp
 * gets the code point. */
size_t mm_utf8_char(const char *text, size_t len, uint32_t *cp);
/* Whether text holds well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF); NUL bytes are UTF-8. */
bool mm_utf8_valid(const char *text, size_t len);

#endif
