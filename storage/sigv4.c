/* sigv4.c - AWS Signature Version 4 (see sigv4.h). The canonical request is hashed as it is
 * produced, so nothing is built in memory but the header value itself. */
#include "mm/sigv4.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_HEADERS 16

static void to_hex(const unsigned char *b, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[b[i] >> 4];
        hex[2 * i + 1] = digits[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    to_hex(md, 32, hex);
}

int sigv4_encode(const char *s, size_t n, bool keep_slash, char *out, size_t size, size_t *len)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        size_t need = plain ? 1 : 3;
        if (size == 0 || need > size - 1 - o)
            return -E2BIG;
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = digits[c >> 4];
            out[o++] = digits[c & 15];
        }
    }
    if (size == 0)
        return -E2BIG;
    out[o] = '\0';
    if (len)
        *len = o;
    return 0;
}

static void hash_str(EVP_MD_CTX *ctx, const char *s)
{
    EVP_DigestUpdate(ctx, s, strlen(s));
}

/* A header value trimmed and with inner runs of blanks squeezed to one space. */
static void hash_value(EVP_MD_CTX *ctx, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    bool blank = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            blank = true;
            continue;
        }
        if (blank)
            EVP_DigestUpdate(ctx, " ", 1);
        blank = false;
        EVP_DigestUpdate(ctx, v + i, 1);
    }
}

static int hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len))
        return -ENOMEM;
    return 0;
}

int sigv4_authorization(const struct sigv4_input *in, char *out, size_t size)
{
    if (!in->method || !in->canonical_uri || !in->canonical_query || !in->payload_hash ||
        !in->amz_date || !in->region || !in->service || !in->access_key_id ||
        !in->secret_access_key || strlen(in->amz_date) != 16 || in->n_headers > MAX_HEADERS ||
        (in->n_headers && !in->headers))
        return -EINVAL;
    /* Headers sorted by name (insertion sort of indexes: there are few). */
    size_t order[MAX_HEADERS];
    for (size_t i = 0; i < in->n_headers; i++) {
        const char *name = in->headers[i].name;
        if (!name || !*name || !in->headers[i].value)
            return -EINVAL;
        for (const char *c = name; *c; c++) {
            if ((*c >= 'A' && *c <= 'Z') || *c == ':' || *c == ' ')
                return -EINVAL;
        }
        size_t j = i;
        while (j > 0 && strcmp(in->headers[order[j - 1]].name, name) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        if (j > 0 && strcmp(in->headers[order[j - 1]].name, name) == 0)
            return -EINVAL;
        order[j] = i;
    }
    char signed_headers[MAX_HEADERS * 64];
    size_t sh = 0;
    for (size_t i = 0; i < in->n_headers; i++) {
        int n = snprintf(signed_headers + sh, sizeof(signed_headers) - sh, "%s%s",
                         i ? ";" : "", in->headers[order[i]].name);
        if (n < 0 || (size_t)n >= sizeof(signed_headers) - sh)
            return -EINVAL;
        sh += (size_t)n;
    }
    signed_headers[sh] = '\0';

    /* The canonical request, hashed. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    hash_str(ctx, in->method);
    hash_str(ctx, "\n");
    hash_str(ctx, in->canonical_uri);
    hash_str(ctx, "\n");
    hash_str(ctx, in->canonical_query);
    hash_str(ctx, "\n");
    for (size_t i = 0; i < in->n_headers; i++) {
        hash_str(ctx, in->headers[order[i]].name);
        hash_str(ctx, ":");
        hash_value(ctx, in->headers[order[i]].value);
        hash_str(ctx, "\n");
    }
    hash_str(ctx, "\n");
    hash_str(ctx, signed_headers);
    hash_str(ctx, "\n");
    hash_str(ctx, in->payload_hash);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    char creq_hex[65];
    to_hex(md, 32, creq_hex);

    char date[9];
    memcpy(date, in->amz_date, 8);
    date[8] = '\0';
    char scope[256];
    int n = snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, in->region,
                     in->service);
    if (n < 0 || (size_t)n >= sizeof(scope))
        return -EINVAL;
    char to_sign[512];
    n = snprintf(to_sign, sizeof(to_sign), "AWS4-HMAC-SHA256\n%s\n%s\n%s", in->amz_date, scope,
                 creq_hex);
    if (n < 0 || (size_t)n >= sizeof(to_sign))
        return -EINVAL;

    /* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
     * "aws4_request"); the secret's copy is wiped after use. */
    size_t slen = strlen(in->secret_access_key);
    unsigned char key0[4 + 256];
    if (slen > 256)
        return -EINVAL;
    memcpy(key0, "AWS4", 4);
    memcpy(key0 + 4, in->secret_access_key, slen);
    unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
    int rc = hmac(key0, 4 + slen, date, k1);
    OPENSSL_cleanse(key0, sizeof(key0));
    if (rc == 0)
        rc = hmac(k1, 32, in->region, k2);
    if (rc == 0)
        rc = hmac(k2, 32, in->service, k3);
    if (rc == 0)
        rc = hmac(k3, 32, "aws4_request", k4);
    if (rc == 0)
        rc = hmac(k4, 32, to_sign, sig);
    OPENSSL_cleanse(k1, 32);
    OPENSSL_cleanse(k2, 32);
    OPENSSL_cleanse(k3, 32);
    OPENSSL_cleanse(k4, 32);
    if (rc < 0)
        return rc;
    char sig_hex[65];
    to_hex(sig, 32, sig_hex);
    n = snprintf(out, size, "AWS4-HMAC-SHA256 Credential=%s/%s,SignedHeaders=%s,Signature=%s",
                 in->access_key_id, scope, signed_headers, sig_hex);
    if (n < 0 || (size_t)n >= size)
        return -E2BIG;
    return 0;
}
