/* sigv4.h - AWS Signature Version 4 for header-authenticated requests (the Authorization
 * header of S3 and any AWS-style store): the canonical request, the string to sign and the
 * derived signing key, with OpenSSL's SHA-256 and HMAC. Our own, because libcurl 7.88's
 * CURLOPT_AWS_SIGV4 canonicalises query strings wrongly for values that need encoding.
 *
 * Pure: no allocation, no clock (the caller gives the time). Threading: none. The secret key
 * is used, never copied or written out. */
#ifndef MM_SIGV4_H
#define MM_SIGV4_H

#include <stdbool.h>
#include <stddef.h>

/* A signed header: name lowercase, value as sent (leading and trailing blanks are trimmed
 * and inner runs of blanks squeezed for the signature, as SigV4 says). */
struct sigv4_header {
    const char *name;
    const char *value;
};

struct sigv4_input {
    const char *method;          /* "GET" */
    const char *canonical_uri;   /* the path as sent, already URI-encoded (sigv4_encode) */
    const char *canonical_query; /* "k=v&k2=v2" with keys sorted and both sides encoded, or "" */
    const struct sigv4_header *headers; /* every signed header (host among them), any order */
    size_t n_headers;                   /* at most 16 */
    const char *payload_hash;    /* lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
    const char *amz_date;        /* "YYYYMMDDTHHMMSSZ", the x-amz-date header's value */
    const char *region;          /* "us-east-1" */
    const char *service;         /* "s3" */
    const char *access_key_id;
    const char *secret_access_key;
};

/* The Authorization header's value ("AWS4-HMAC-SHA256 Credential=...,SignedHeaders=...,
 * Signature=<64 hex>") into out, NUL-terminated. 0, -EINVAL (a field missing, amz_date not
 * 16 characters, a header name not lowercase or repeated, too many headers), -E2BIG (out is
 * too small: 512 bytes is enough for short keys and a few headers). */
int sigv4_authorization(const struct sigv4_input *in, char *out, size_t size);

/* URI-encode n bytes of s the SigV4 way: unreserved characters (A-Z a-z 0-9 - . _ ~) kept,
 * '/' kept if keep_slash, every other byte as %XX (uppercase hex). NUL-terminated into out;
 * 0 and the length in *len (may be NULL), or -E2BIG (out holds nothing useful). */
int sigv4_encode(const char *s, size_t n, bool keep_slash, char *out, size_t size, size_t *len);

/* The lowercase hex SHA-256 of n bytes (65 bytes with the NUL). */
void sigv4_sha256_hex(const void *p, size_t n, char hex[65]);

#endif
