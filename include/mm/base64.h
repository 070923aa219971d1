/* base64.h - standard base64 (RFC 4648, with padding), as the etcd JSON gateway uses for bytes. */
#ifndef MM_BASE64_H
#define MM_BASE64_H

#include <stddef.h>

/* Bytes needed to encode n bytes, including the terminating NUL. */
size_t base64_encoded_size(size_t n);
/* Upper bound of the decoded size of n base64 characters (no NUL). */
size_t base64_decoded_max(size_t n);

/* Encode src into out (size >= base64_encoded_size(len)); returns the length written, NUL added. */
size_t base64_encode(const void *src, size_t len, char *out);

/* Decode len characters into out (size >= base64_decoded_max(len)); returns the decoded length
 * or -EINVAL on a character outside the alphabet or bad padding. */
long base64_decode(const char *src, size_t len, void *out);

#endif
