/* test_remote.c - the pieces the object-store providers share (remote.h): the config field
 * reader, the storage key's name in messages, an MD5 from base64, percent-encoding, and
 * freeing a secret. */
#include "check.h"
#include "mm/buf.h"
#include "mm/remote.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void encoded(const char *s, bool keep_slash, const char *want)
{
    struct mm_buf b = {0};
    CHECK_INT(remote_pct_encode(&b, s, keep_slash), 0);
    CHECK_STR(b.data ? b.data : "", want);
    mm_buf_free(&b);
}

int main(void)
{
    cJSON *cfg = cJSON_Parse("{\"a\":\"x\",\"empty\":\"\",\"num\":1,\"obj\":{}}");
    REQUIRE(cfg);
    CHECK_STR(remote_field(cfg, "a"), "x");
    CHECK(remote_field(cfg, "empty") == NULL);
    CHECK(remote_field(cfg, "num") == NULL);
    CHECK(remote_field(cfg, "obj") == NULL);
    CHECK(remote_field(cfg, "missing") == NULL);
    CHECK(remote_field(cfg, "A") == NULL); /* names are case-sensitive */
    cJSON_Delete(cfg);

    char name[32];
    CHECK_STR(remote_key_name("k1", name, sizeof(name)), "storage key 'k1'");
    CHECK_STR(remote_key_name("", name, sizeof(name)), "the storage parameters");
    CHECK_STR(remote_key_name(NULL, name, sizeof(name)), "the storage parameters");
    CHECK_STR(remote_key_name("a-very-long-storage-key-name", name, sizeof(name)),
              "storage key 'a-very-long-storag"); /* truncated, terminated */

    char hex[33];
    /* MD5("") = d41d8cd98f00b204e9800998ecf8427e */
    CHECK_INT(remote_md5_hex("1B2M2Y8AsgTpgAmY7PhCfg==", hex), 0);
    CHECK_STR(hex, "d41d8cd98f00b204e9800998ecf8427e");
    CHECK_INT(remote_md5_hex("1B2M2Y8AsgTpgAmY7PhCfg", hex), 0); /* padding optional */
    CHECK_STR(hex, "d41d8cd98f00b204e9800998ecf8427e");
    CHECK_INT(remote_md5_hex("", hex), -EINVAL);
    CHECK_STR(hex, "");
    CHECK_INT(remote_md5_hex("AAAA", hex), -EINVAL); /* 3 bytes */
    CHECK_STR(hex, "");
    CHECK_INT(remote_md5_hex("1B2M2Y8AsgTpgAmY7PhCfgAA", hex), -EINVAL); /* 18 bytes */
    CHECK_INT(remote_md5_hex("1B2M2Y8AsgTpgAmY7PhCf!==", hex), -EINVAL); /* not base64 */
    CHECK_INT(remote_md5_hex("1B2M2Y8AsgTpgAmY7PhCfg==1B2M2Y8AsgTpgAmY7PhCfg==", hex), -EINVAL);

    encoded("", false, "");
    encoded("AZaz09-._~", false, "AZaz09-._~");
    encoded("a/b c", false, "a%2Fb%20c");
    encoded("a/b c", true, "a/b%20c");
    encoded("%+?&=#\x7f\xc3\xa9", true, "%25%2B%3F%26%3D%23%7F%C3%A9");

    remote_free_secret(NULL);
    remote_free_secret(strdup("s3cr3t"));
    return CHECK_DONE();
}
