/* buf.h - a growable byte buffer, always NUL-terminated for convenient parsing. */
#ifndef MM_BUF_H
#define MM_BUF_H

#include <stddef.h>

struct mm_buf {
    char *data; /* NULL until the first append; data[len] == '\0' once allocated */
    size_t len;
    size_t cap;
};

int mm_buf_append(struct mm_buf *b, const void *p, size_t n);   /* 0 or -ENOMEM */
int mm_buf_printf(struct mm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mm_buf_consume(struct mm_buf *b, size_t n);  /* drop the first n bytes */
void mm_buf_reset(struct mm_buf *b);              /* len = 0, keep memory */
void mm_buf_free(struct mm_buf *b);

#endif
