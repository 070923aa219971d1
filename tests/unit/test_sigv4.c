/* test_sigv4.c - SigV4 against AWS's published examples: the S3 documentation's GET Object
 * (with a Range header) and GET Bucket (list objects, a query string) examples, and the
 * sig-v4 test suite's get-vanilla; the encoding rules; refusals. */
#include "check.h"
#include "mm/sigv4.h"

#include <errno.h>

static const char empty_hash[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

int main(void)
{
    char auth[512];
    char hex[65];
    sigv4_sha256_hex("", 0, hex);
    CHECK_STR(hex, empty_hash);

    /* S3 docs, "Example: GET Object". */
    struct sigv4_header get_obj_h[] = {{"x-amz-date", "20130524T000000Z"},
                                       {"range", "bytes=0-9"},
                                       {"host", "examplebucket.s3.amazonaws.com"},
                                       {"x-amz-content-sha256", empty_hash}};
    struct sigv4_input get_obj = {
        .method = "GET", .canonical_uri = "/test.txt", .canonical_query = "",
        .headers = get_obj_h, .n_headers = 4, .payload_hash = empty_hash,
        .amz_date = "20130524T000000Z", .region = "us-east-1", .service = "s3",
        .access_key_id = "AKIAIOSFODNN7EXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};
    CHECK_INT(sigv4_authorization(&get_obj, auth, sizeof(auth)), 0);
    CHECK_STR(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                    "aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");

    /* S3 docs, "Example: GET Bucket (List Objects)": GET /?max-keys=2&prefix=J. */
    struct sigv4_header list_h[] = {{"host", "examplebucket.s3.amazonaws.com"},
                                    {"x-amz-content-sha256", empty_hash},
                                    {"x-amz-date", "20130524T000000Z"}};
    struct sigv4_input list = get_obj;
    list.canonical_uri = "/";
    list.canonical_query = "max-keys=2&prefix=J";
    list.headers = list_h;
    list.n_headers = 3;
    CHECK_INT(sigv4_authorization(&list, auth, sizeof(auth)), 0);
    CHECK(strstr(auth, "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));

    /* The sig-v4 test suite's get-vanilla (service "service"); values with blanks to trim and
     * squeeze sign the same. */
    struct sigv4_header van_h[] = {{"host", "  example.amazonaws.com "},
                                   {"x-amz-date", "20150830T123600Z"}};
    struct sigv4_input van = {
        .method = "GET", .canonical_uri = "/", .canonical_query = "", .headers = van_h,
        .n_headers = 2, .payload_hash = empty_hash, .amz_date = "20150830T123600Z",
        .region = "us-east-1", .service = "service", .access_key_id = "AKIDEXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
    CHECK_INT(sigv4_authorization(&van, auth, sizeof(auth)), 0);
    CHECK_STR(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                    "aws4_request,SignedHeaders=host;x-amz-date,"
                    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    /* A different secret, region or query changes the signature. */
    char other[512];
    van.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ";
    CHECK_INT(sigv4_authorization(&van, other, sizeof(other)), 0);
    CHECK(strcmp(auth, other) != 0);

    /* Refusals. */
    CHECK_INT(sigv4_authorization(&van, auth, 40), -E2BIG);
    struct sigv4_header upper[] = {{"Host", "x"}};
    struct sigv4_input bad = van;
    bad.headers = upper;
    bad.n_headers = 1;
    CHECK_INT(sigv4_authorization(&bad, auth, sizeof(auth)), -EINVAL);
    struct sigv4_header twice[] = {{"host", "x"}, {"host", "y"}};
    bad.headers = twice;
    bad.n_headers = 2;
    CHECK_INT(sigv4_authorization(&bad, auth, sizeof(auth)), -EINVAL);
    bad = van;
    bad.amz_date = "20150830";
    CHECK_INT(sigv4_authorization(&bad, auth, sizeof(auth)), -EINVAL);

    /* Encoding: unreserved kept, '/' kept only when asked, everything else %XX uppercase,
     * bytes beyond ASCII one by one. */
    char enc[64];
    size_t len;
    CHECK_INT(sigv4_encode("a-b_c.d~e/f g+h=%", 17, true, enc, sizeof(enc), &len), 0);
    CHECK_STR(enc, "a-b_c.d~e/f%20g%2Bh%3D%25");
    CHECK_INT(len, strlen(enc));
    CHECK_INT(sigv4_encode("a/b", 3, false, enc, sizeof(enc), NULL), 0);
    CHECK_STR(enc, "a%2Fb");
    CHECK_INT(sigv4_encode("\xc3\xa9\0", 3, false, enc, sizeof(enc), NULL), 0);
    CHECK_STR(enc, "%C3%A9%00");
    CHECK_INT(sigv4_encode("abc", 3, false, enc, 4, NULL), 0);
    CHECK_INT(sigv4_encode("abc", 3, false, enc, 3, NULL), -E2BIG);
    CHECK_INT(sigv4_encode(" ", 1, false, enc, 3, NULL), -E2BIG);
    return CHECK_DONE();
}
