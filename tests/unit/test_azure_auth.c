/* test_azure_auth.c - the pure parts of the azure provider (azure.h): storage config and connection
 * string rules, Shared Key's string to sign (the canonicalization examples of Microsoft's
 * "Authorize with Shared Key" page) and its signature (a value computed independently with
 * `openssl dgst -sha256 -mac HMAC` under the emulator's published key), and x-ms-date. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/azure.h"

#define DEV_KEY                                                                                    \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

/* Resolve a config given as JSON text; the message must never hold a secret value. */
static int resolve(const char *json, struct azure_account *a, struct mm_error *err)
{
    cJSON *cfg = cJSON_Parse(json);
    REQUIRE(cfg);
    mm_error_clear(err);
    int rc = azure_account_from_config(cfg, "k1", a, err);
    CHECK(!strstr(err->msg, "Eby8vd"));
    CHECK(!strstr(err->msg, "sig="));
    CHECK(!strstr(err->msg, "c2VjcmV0"));
    cJSON_Delete(cfg);
    return rc;
}

static void test_config(void)
{
    struct azure_account a;
    struct mm_error err;

    /* account key, default endpoint */
    CHECK_INT(resolve("{\"type\":\"azure\",\"account_name\":\"acct1\",\"container\":\"c\","
                      "\"account_key\":\"" DEV_KEY "\"}",
                      &a, &err),
              0);
    CHECK_STR(a.account, "acct1");
    CHECK_STR(a.container, "c");
    CHECK_STR(a.endpoint, "https://acct1.blob.core.windows.net");
    CHECK_INT(a.auth, AZURE_SHARED_KEY);
    CHECK_STR(a.cred_field, "account_key");
    CHECK_INT(a.key_len, 64);
    CHECK_INT(a.list_page_size, 0);
    azure_account_clear(&a);
    CHECK(a.account == NULL && a.key == NULL);

    /* a connection string: its account, key and endpoint; endpoint's trailing '/' dropped */
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"DefaultEndpointsProtocol="
                      "http; AccountName=devstoreaccount1;AccountKey=" DEV_KEY
                      ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;"
                      "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;\"}",
                      &a, &err),
              0);
    CHECK_STR(a.account, "devstoreaccount1");
    CHECK_STR(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
    CHECK_INT(a.auth, AZURE_SHARED_KEY);
    CHECK_STR(a.cred_field, "connection_string");
    CHECK_INT(a.key_len, 64);
    azure_account_clear(&a);

    /* protocol and suffix make the endpoint; keys are case-insensitive; endpoint_url wins */
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"defaultendpointsprotocol="
                      "http;accountname=a2;accountkey=" DEV_KEY
                      ";EndpointSuffix=core.chinacloudapi.cn\"}",
                      &a, &err),
              0);
    CHECK_STR(a.endpoint, "http://a2.blob.core.chinacloudapi.cn");
    azure_account_clear(&a);
    CHECK_INT(resolve("{\"container\":\"c\",\"endpoint_url\":\"http://127.0.0.1:9/a2\","
                      "\"connection_string\":\"AccountName=a2;AccountKey=" DEV_KEY
                      ";BlobEndpoint=https://x.example\"}",
                      &a, &err),
              0);
    CHECK_STR(a.endpoint, "http://127.0.0.1:9/a2");
    azure_account_clear(&a);

    /* the emulator's shortcut */
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"UseDevelopmentStorage=true\"}",
                      &a, &err),
              0);
    CHECK_STR(a.account, "devstoreaccount1");
    CHECK_STR(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
    CHECK_INT(a.auth, AZURE_SHARED_KEY);
    azure_account_clear(&a);

    /* a SAS in the connection string, or given alone (the leading '?' dropped) */
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"BlobEndpoint=https://a3.blob."
                      "core.windows.net/;AccountName=a3;SharedAccessSignature=sv=2020-08-04&"
                      "sig=c2VjcmV0%3D\"}",
                      &a, &err),
              0);
    CHECK_INT(a.auth, AZURE_SAS);
    CHECK_STR(a.sas, "sv=2020-08-04&sig=c2VjcmV0%3D");
    CHECK_STR(a.cred_field, "connection_string");
    azure_account_clear(&a);
    CHECK_INT(
        resolve("{\"account_name\":\"a4\",\"container\":\"c\",\"sas_token\":\"?sv=1&sig=c2VjcmV0\","
                "\"certificate\":\"-----BEGIN CERTIFICATE-----\",\"list_page_size\":\"2\"}",
                &a, &err),
        0);
    CHECK_INT(a.auth, AZURE_SAS);
    CHECK_STR(a.sas, "sv=1&sig=c2VjcmV0");
    CHECK_STR(a.cred_field, "sas_token");
    CHECK_STR(a.ca_pem, "-----BEGIN CERTIFICATE-----");
    CHECK_INT(a.list_page_size, 2);
    azure_account_clear(&a);

    /* anonymous: no credential; empty strings count as absent */
    CHECK_INT(
        resolve("{\"account_name\":\"a5\",\"container\":\"c\",\"account_key\":\"\"}", &a, &err), 0);
    CHECK_INT(a.auth, AZURE_ANONYMOUS);
    CHECK_STR(a.cred_field, "");
    azure_account_clear(&a);

    /* refusals, each naming the field */
    CHECK_INT(resolve("{\"container\":\"c\"}", &a, &err), -EINVAL);
    CHECK(strstr(err.msg, "account_name") && strstr(err.msg, "'k1'"));
    CHECK_INT(resolve("{\"account_name\":\"a\"}", &a, &err), -EINVAL);
    CHECK(strstr(err.msg, "container"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"account_key\":\"" DEV_KEY
                      "\",\"sas_token\":\"sig=c2VjcmV0\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "account_key") && strstr(err.msg, "sas_token"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"account_key\":\"not*b64\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "account_key") && !strstr(err.msg, "not*b64"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"connection_string\":"
                      "\"AccountName=b;AccountKey=" DEV_KEY "\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "AccountName"));
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"AccountName=a;Eby8vdM02x\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "Key=Value"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"endpoint_url\":\"ftp://x\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "endpoint_url"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"endpoint_url\":"
                      "\"https://x/?sig=c2VjcmV0\"}",
                      &a, &err),
              -EINVAL);
    CHECK_INT(resolve("{\"account_name\":\"a/b\",\"container\":\"c\"}", &a, &err), -EINVAL);
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c/d\"}", &a, &err), -EINVAL);
    CHECK_INT(
        resolve("{\"account_name\":\"a\",\"container\":\"c\",\"sas_token\":\"sig=a b\"}", &a, &err),
        -EINVAL);
    CHECK(strstr(err.msg, "sas_token"));
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"sas_token\":\"?\"}", &a, &err),
              -EINVAL);
    CHECK_INT(resolve("{\"account_name\":5,\"container\":\"c\"}", &a, &err), -EINVAL);
    CHECK(strstr(err.msg, "account_name") && strstr(err.msg, "not a string"));
    CHECK_INT(
        resolve("{\"account_name\":\"a\",\"container\":\"c\",\"list_page_size\":\"0\"}", &a, &err),
        -EINVAL);
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"list_page_size\":\"5001\"}",
                      &a, &err),
              -EINVAL);
    CHECK_INT(resolve("{\"account_name\":\"a\",\"container\":\"c\",\"connection_string\":"
                      "\"AccountName=a;DefaultEndpointsProtocol=ftp\"}",
                      &a, &err),
              -EINVAL);
    CHECK(strstr(err.msg, "DefaultEndpointsProtocol"));
}

static char *sts(const char *account, const char *method, const char *url, const char *const *h,
                 size_t n)
{
    char *out = NULL;
    struct mm_error err;
    int rc = azure_string_to_sign(account, method, url, h, n, &out, &err);
    CHECK_INT(rc, 0);
    return out;
}

static void test_string_to_sign(void)
{
    char *s;
    /* canonicalized resources, as the examples of "Authorize with Shared Key" */
    s = sts("myaccount", "GET",
            "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata",
            NULL, 0);
    CHECK_STR(s, "GET\n\n\n\n\n\n\n\n\n\n\n\n/myaccount/mycontainer\ncomp:metadata\n"
                 "restype:container");
    free(s);
    s = sts("myaccount", "GET",
            "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list&"
            "include=snapshots&include=metadata&include=uncommittedblobs",
            NULL, 0);
    CHECK_STR(s, "GET\n\n\n\n\n\n\n\n\n\n\n\n/myaccount/mycontainer\ncomp:list\n"
                 "include:metadata,snapshots,uncommittedblobs\nrestype:container");
    free(s);
    /* the emulator is path-style: the account appears twice */
    s = sts("devstoreaccount1", "GET", "http://127.0.0.1:10000/devstoreaccount1/mycontainer", NULL,
            0);
    CHECK_STR(s, "GET\n\n\n\n\n\n\n\n\n\n\n\n/devstoreaccount1/devstoreaccount1/mycontainer");
    free(s);
    /* standard headers in their slots (Content-Length 0 is empty), x-ms-* lowercased, sorted,
     * whitespace folded; other headers ignored; query values decoded, names lowercased */
    const char *h[] = {"X-MS-Version: 2021-08-06",
                       "Content-Type:  text/plain;  charset=UTF-8",
                       "x-ms-date: Sun, 11 Oct 2009 21:49:13 GMT",
                       "x-ms-meta-m1:  a   b ",
                       "Content-Length: 11",
                       "Range: bytes=0-9",
                       "User-Agent: x",
                       "If-Match: \"e\"",
                       "Content-MD5: abc="};
    s = sts("a", "PUT",
            "https://a.blob.core.windows.net/c/dir%20x/b%2Bc.txt?Comp=block&"
            "blockid=YQ%3D%3D",
            h, sizeof(h) / sizeof(h[0]));
    CHECK_STR(s, "PUT\n\n\n11\nabc=\ntext/plain; charset=UTF-8\n\n\n\"e\"\n\n\nbytes=0-9\n"
                 "x-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\nx-ms-meta-m1:a b\n"
                 "x-ms-version:2021-08-06\n/a/c/dir%20x/b%2Bc.txt\nblockid:YQ==\ncomp:block");
    free(s);
    const char *h0[] = {"Content-Length: 0"};
    s = sts("a", "GET", "https://a.blob.core.windows.net", h0, 1);
    CHECK_STR(s, "GET\n\n\n\n\n\n\n\n\n\n\n\n/a/");
    free(s);

    char *out = (char *)1;
    struct mm_error err;
    CHECK_INT(azure_string_to_sign("a", "GET", "no-scheme/x", NULL, 0, &out, &err), -EINVAL);
    CHECK(out == NULL);
    CHECK_INT(azure_string_to_sign("a", "GET", "http://h/x?a=%zz", NULL, 0, &out, &err), -EINVAL);
    CHECK_INT(azure_string_to_sign("a", "GET", "http://h/x?a=%4", NULL, 0, &out, &err), -EINVAL);
    const char *bad[] = {"no colon"};
    CHECK_INT(azure_string_to_sign("a", "GET", "http://h/x", bad, 1, &out, &err), -EINVAL);
}

static void test_signature(void)
{
    unsigned char key[64];
    /* the emulator's key as the provider decodes it, checked at both ends */
    struct azure_account a;
    struct mm_error err;
    CHECK_INT(resolve("{\"container\":\"c\",\"connection_string\":\"UseDevelopmentStorage=true\"}",
                      &a, &err),
              0);
    REQUIRE(a.key_len == sizeof(key));
    memcpy(key, a.key, sizeof(key));
    CHECK_INT(key[0], 0x11);
    CHECK_INT(key[63], 0x1b);
    azure_account_clear(&a);

    const char *h[] = {"x-ms-date: Sun, 11 Oct 2009 21:49:13 GMT", "x-ms-version: 2021-08-06"};
    char *s = sts("devstoreaccount1", "GET",
                  "http://127.0.0.1:10000/devstoreaccount1/models?restype=container&comp=list&"
                  "prefix=m1&maxresults=1",
                  h, 2);
    char auth[256];
    CHECK_INT(azure_shared_key("devstoreaccount1", key, sizeof(key), s, auth, sizeof(auth)), 0);
    /* printf '<the string>' | openssl dgst -sha256 -mac HMAC -macopt hexkey:<key> -binary |
     * base64 */
    CHECK_STR(auth, "SharedKey devstoreaccount1:uRhanFLEsZ9wrngN74+ug4XFyRLvkqLGzXyHj6XBh9k=");
    CHECK_INT(azure_shared_key("devstoreaccount1", key, sizeof(key), s, auth, 40), -ENOSPC);
    free(s);
}

static void test_date(void)
{
    char d[64];
    azure_http_date(0, d, sizeof(d));
    CHECK_STR(d, "Thu, 01 Jan 1970 00:00:00 GMT");
    azure_http_date(1254597753, d, sizeof(d));
    CHECK_STR(d, "Sat, 03 Oct 2009 19:22:33 GMT");
}

int main(void)
{
    test_config();
    test_string_to_sign();
    test_signature();
    test_date();
    return CHECK_DONE();
}
