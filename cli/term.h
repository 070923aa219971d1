/* term.h - what mmctl prints that came from elsewhere (keys, values, servers' messages), made
 * safe for a terminal: no byte of it can move the cursor, change colours, set the title or
 * forge a line. Pure functions over bytes; the caller owns the FILE. */
#ifndef MM_CLI_TERM_H
#define MM_CLI_TERM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Write s[0..len) with every control character escaped: \n \r \t as such, other C0 bytes,
 * DEL, the C1 controls (U+0080..U+009F), bidirectional overrides and bytes that are not UTF-8
 * as \xNN (each byte of the sequence). Printable ASCII and other UTF-8 pass. With
 * escape_backslash, a backslash is written \\ so that the output reads back to the same bytes
 * (keys and values); without, messages keep their own backslashes. */
void term_write(FILE *f, const char *s, size_t len, bool escape_backslash);

/* "mmctl: " + the formatted message, escaped as term_write without escape_backslash (what it
 * quotes may come from a server or a file), + a line end, on stderr. */
void term_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether s[0..len) is valid UTF-8 (NUL bytes excepted: they are not text). */
bool term_is_utf8(const char *s, size_t len);

/* Write JSON text (as cJSON prints it: C0 controls already \u-escaped) with the C1 controls and
 * bidirectional overrides inside it written as \u escapes too; the text must be UTF-8. */
void term_write_json(FILE *f, const char *json);

#endif
