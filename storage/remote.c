/* remote.c - the small pieces the object-store providers (s3.c, gcs.c, azure.c, http.c)
 * share: reading a config field, naming the storage key in messages, an MD5 from base64,
 * percent-encoding, and freeing a secret. See remote.h. */
#include "mm/remote.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/base64.h"
#include "mm/buf.h"

const char *remote_field(const struct cJSON *cfg, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(cfg, name);
    return cJSON_IsString(f) && f->valuestring && f->valuestring[0] ? f->valuestring : NULL;
}

const char *remote_key_name(const char *key, char *buf, size_t size)
{
    if (key && key[0])
        snprintf(buf, size, "storage key '%s'", key);
    else
        snprintf(buf, size, "the storage parameters");
    return buf;
}

int remote_md5_hex(const char *b64, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[32];
    size_t n = strlen(b64);
    out[0] = '\0';
    /* base64 of 16 bytes is 24 characters at most: a longer text cannot be one */
    if (n == 0 || base64_decoded_max(n) > sizeof(raw) || base64_decode(b64, n, raw) != 16)
        return -EINVAL;
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = '\0';
    return 0;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int remote_pct_encode(struct mm_buf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (unreserved(*c) || (keep_slash && *c == '/')) {
            if (mm_buf_append(b, c, 1))
                return -ENOMEM;
        } else {
            char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
            if (mm_buf_append(b, e, 3))
                return -ENOMEM;
        }
    }
    return 0;
}

void remote_free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}
