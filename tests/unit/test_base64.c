/* test_base64.c - RFC 4648 vectors, binary round trips and rejects. */
#include "check.h"
#include "mm/base64.h"

#include <errno.h>

static void vector(const char *plain, const char *encoded)
{
    char out[64], back[64];
    size_t n = base64_encode(plain, strlen(plain), out);
    CHECK_INT(n, strlen(encoded));
    CHECK_STR(out, encoded);
    long m = base64_decode(encoded, strlen(encoded), back);
    CHECK_INT(m, (long)strlen(plain));
    back[m < 0 ? 0 : m] = '\0';
    CHECK_STR(back, plain);
}

int main(void)
{
    vector("", "");
    vector("f", "Zg==");
    vector("fo", "Zm8=");
    vector("foo", "Zm9v");
    vector("foob", "Zm9vYg==");
    vector("fooba", "Zm9vYmE=");
    vector("foobar", "Zm9vYmFy");

    unsigned char bin[256], enc[400], dec[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(255 - i);
    for (size_t len = 0; len <= 256; len += 37) {
        size_t n = base64_encode(bin, len, (char *)enc);
        CHECK(n + 1 <= base64_encoded_size(len));
        long m = base64_decode((char *)enc, n, dec);
        CHECK_INT(m, (long)len);
        CHECK(memcmp(bin, dec, len) == 0);
    }
    char junk[8];
    CHECK_INT(base64_decode("Zm9v!", 5, junk), -EINVAL);
    CHECK_INT(base64_decode("Zg==Zg", 6, junk), -EINVAL);
    CHECK_INT(base64_decode("Z", 1, junk), -EINVAL);
    return CHECK_DONE();
}
