/* test_stcfg.c - storage config resolution (mm/stcfg.h): the key's entry, the default keys
 * (default_<type>, default), parameters laid over the entry or alone, aliases made canonical
 * (the canonical name winning), "headers" as an object or a string, the refusals (a key not in
 * storage-config, no type, an unknown type, not an object, a value not a string, a name given
 * twice, \u0000, bounds, a failing lookup), no value of a secret in any message; and the
 * storageUri forms with their refusals. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/stcfg.h"

/* A fake secret: key = JSON text pairs. */
struct secret {
    const char *entries[16][2];
    int lookups;
    int fail; /* a failure to look, not a missing key */
};

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    struct secret *s = arg;
    s->lookups++;
    if (s->fail)
        return mm_error_set(err, s->fail, "mirror not ready");
    for (int i = 0; i < 16 && s->entries[i][0]; i++) {
        if (strcmp(s->entries[i][0], key) == 0) {
            *json = strdup(s->entries[i][1]);
            return *json ? 0 : -ENOMEM;
        }
    }
    return -ENOENT;
}

static const char *field(const struct stcfg *c, const char *name)
{
    const cJSON *f = c->cfg ? cJSON_GetObjectItemCaseSensitive(c->cfg, name) : NULL;
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

static int nfields(const struct stcfg *c)
{
    return c->cfg ? cJSON_GetArraySize(c->cfg) : -1;
}

static struct secret secret = {
    .entries =
        {
            {"mys3", "{\"type\":\"s3\",\"access_key\":\"AKIDSECRET1\",\"secret_access_key\":"
                     "\"SECRETVAL1\",\"endpoint_url\":\"http://127.0.0.1:9000\","
                     "\"default_bucket\":\"b1\",\"region\":\"eu-west-1\"}"},
            {"both", "{\"type\":\"s3\",\"access_key\":\"OLDID\",\"access_key_id\":\"NEWID\","
                     "\"default_bucket\":\"oldb\",\"bucket\":\"newb\"}"},
            {"default", "{\"type\":\"gcs\",\"bucket\":\"gdef\"}"},
            {"default_azure", "{\"type\":\"azure\",\"account_name\":\"acct\"}"},
            {"web", "{\"type\":\"http\",\"url\":\"https://h\",\"headers\":{\"Authorization\":"
                    "\"Bearer SECRETTOKEN\"}}"},
            {"web2", "{\"type\":\"http\",\"url\":\"https://h\",\"headers\":"
                     "\"{\\\"X-K\\\":\\\"v\\\"}\"}"},
            {"notype", "{\"bucket\":\"b\"}"},
            {"badtype", "{\"type\":\"ftp\"}"},
            {"array", "[\"type\",\"s3\"]"},
            {"number", "{\"type\":\"s3\",\"port\":9000}"},
            {"twice", "{\"type\":\"s3\",\"secret_access_key\":\"A1\",\"secret_access_key\":\"B2\"}"},
            {"nul", "{\"type\":\"s3\",\"secret_access_key\":\"ab\\u0000SECRETTAIL\"}"},
            {"broken", "{\"type\":\"s3\",\"secret_access_key\":\"SECRETBROKEN"},
            {"badhdr", "{\"type\":\"http\",\"url\":\"u\",\"headers\":{\"A\":1}}"},
            {"pvc1", "{\"type\":\"pvc\",\"name\":\"claim\"}"},
        },
};

static void no_secret_in(const char *msg)
{
    static const char *secrets[] = {"AKIDSECRET1", "SECRETVAL1", "SECRETTOKEN", "SECRETTAIL",
                                    "SECRETBROKEN", "A1", "B2"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (strstr(msg, secrets[i]))
            fprintf(stderr, "message \"%s\" holds a secret value\n", msg);
        CHECK(strstr(msg, secrets[i]) == NULL);
    }
}

static void expect_fail(const char *key, const char *params, int code, const char *part)
{
    struct stcfg c;
    struct mm_error err = {0};
    int rc = stcfg_resolve(key, params, lookup, &secret, &c, &err);
    if (rc != code || !strstr(err.msg, part))
        fprintf(stderr, "resolve(%s, %s): %d \"%s\", wanted %d \"%s\"\n", key ? key : "-",
                params ? params : "-", rc, err.msg, code, part);
    CHECK_INT(rc, code);
    CHECK(strstr(err.msg, part) != NULL);
    CHECK(c.cfg == NULL && c.key[0] == '\0');
    no_secret_in(err.msg);
}

static void test_entries(void)
{
    struct stcfg c;
    struct mm_error err = {0};

    /* a key's entry; aliases become canonical names */
    CHECK_INT(stcfg_resolve("mys3", NULL, lookup, &secret, &c, &err), 0);
    CHECK_STR(c.key, "mys3");
    CHECK_STR(field(&c, "type"), "s3");
    CHECK_STR(field(&c, "access_key_id"), "AKIDSECRET1");
    CHECK(field(&c, "access_key") == NULL);
    CHECK_STR(field(&c, "bucket"), "b1");
    CHECK(field(&c, "default_bucket") == NULL);
    CHECK_STR(field(&c, "region"), "eu-west-1");
    CHECK_INT(nfields(&c), 6);
    stcfg_clear(&c);
    CHECK(c.cfg == NULL);
    stcfg_clear(&c); /* twice is fine */
    stcfg_clear(NULL);

    /* the canonical name wins over its alias, whatever the order */
    CHECK_INT(stcfg_resolve("both", NULL, lookup, &secret, &c, &err), 0);
    CHECK_STR(field(&c, "access_key_id"), "NEWID");
    CHECK_STR(field(&c, "bucket"), "newb");
    CHECK_INT(nfields(&c), 3);
    stcfg_clear(&c);

    /* params overlay the entry, aliases in params too */
    CHECK_INT(stcfg_resolve("mys3", "{\"bucket\":\"other\",\"region\":\"us-east-2\"}", lookup,
                            &secret, &c, &err),
              0);
    CHECK_STR(field(&c, "bucket"), "other");
    CHECK_STR(field(&c, "region"), "us-east-2");
    CHECK_STR(field(&c, "access_key_id"), "AKIDSECRET1");
    stcfg_clear(&c);
    CHECK_INT(stcfg_resolve("mys3", "{\"default_bucket\":\"p\",\"access_key\":\"K2\"}", lookup,
                            &secret, &c, &err),
              0);
    CHECK_STR(field(&c, "bucket"), "p");
    CHECK_STR(field(&c, "access_key_id"), "K2");
    stcfg_clear(&c);
    /* params may change the type */
    CHECK_INT(stcfg_resolve("mys3", "{\"type\":\"gcs\"}", lookup, &secret, &c, &err), 0);
    CHECK_STR(field(&c, "type"), "gcs");
    stcfg_clear(&c);

    /* headers: an object kept as its JSON text, or a string as given */
    CHECK_INT(stcfg_resolve("web", NULL, lookup, &secret, &c, &err), 0);
    const char *h = field(&c, "headers");
    REQUIRE(h);
    cJSON *ho = cJSON_Parse(h);
    CHECK(cJSON_IsObject(ho));
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(ho, "Authorization")->valuestring,
              "Bearer SECRETTOKEN");
    cJSON_Delete(ho);
    stcfg_clear(&c);
    CHECK_INT(stcfg_resolve("web2", "", lookup, &secret, &c, &err), 0);
    CHECK_STR(field(&c, "headers"), "{\"X-K\":\"v\"}");
    stcfg_clear(&c);

    CHECK_INT(stcfg_resolve("pvc1", NULL, lookup, &secret, &c, &err), 0);
    CHECK_STR(field(&c, "type"), "pvc");
    CHECK_STR(field(&c, "name"), "claim");
    stcfg_clear(&c);
}

static void test_defaults(void)
{
    struct stcfg c;
    struct mm_error err = {0};

    /* no key, no params: "default" */
    CHECK_INT(stcfg_resolve(NULL, NULL, lookup, &secret, &c, &err), 0);
    CHECK_STR(c.key, "default");
    CHECK_STR(field(&c, "bucket"), "gdef");
    stcfg_clear(&c);
    CHECK_INT(stcfg_resolve("", "", lookup, &secret, &c, &err), 0);
    CHECK_STR(c.key, "default");
    stcfg_clear(&c);

    /* params with a type: default_<type> first */
    CHECK_INT(stcfg_resolve(NULL, "{\"type\":\"azure\",\"container\":\"c\"}", lookup, &secret, &c,
                            &err),
              0);
    CHECK_STR(c.key, "default_azure");
    CHECK_STR(field(&c, "account_name"), "acct");
    CHECK_STR(field(&c, "container"), "c");
    stcfg_clear(&c);
    /* ... else default (its fields under the params) */
    CHECK_INT(stcfg_resolve(NULL, "{\"type\":\"s3\",\"bucket\":\"x\"}", lookup, &secret, &c, &err),
              0);
    CHECK_STR(c.key, "default");
    CHECK_STR(field(&c, "type"), "s3");
    CHECK_STR(field(&c, "bucket"), "x");
    stcfg_clear(&c);

    /* no entry at all: local (NULL), or the params alone */
    struct secret empty = {0};
    CHECK_INT(stcfg_resolve(NULL, NULL, lookup, &empty, &c, &err), 0);
    CHECK(c.cfg == NULL);
    CHECK_STR(c.key, "");
    CHECK_INT(empty.lookups, 1);
    CHECK_INT(stcfg_resolve(NULL, NULL, NULL, NULL, &c, &err), 0); /* no lookup: local */
    CHECK(c.cfg == NULL);
    empty.lookups = 0;
    CHECK_INT(stcfg_resolve(NULL, "{\"type\":\"s3\",\"bucket\":\"b\"}", lookup, &empty, &c, &err),
              0);
    CHECK_INT(empty.lookups, 2); /* default_s3, default */
    CHECK_STR(c.key, "");
    CHECK_STR(field(&c, "type"), "s3");
    CHECK_STR(field(&c, "bucket"), "b");
    CHECK_INT(nfields(&c), 2);
    stcfg_clear(&c);
    CHECK_INT(stcfg_resolve(NULL, "{\"type\":\"pvc\",\"name\":\"n\"}", NULL, NULL, &c, &err), 0);
    CHECK_STR(field(&c, "name"), "n");
    stcfg_clear(&c);
    CHECK_INT(stcfg_resolve(NULL, "{\"bucket\":\"b\"}", lookup, &empty, &c, &err), -EINVAL);
    CHECK(strstr(err.msg, "no type") != NULL);
    CHECK_INT(stcfg_resolve(NULL, "{}", lookup, &empty, &c, &err), -EINVAL);
    CHECK(strstr(err.msg, "no type") != NULL);
}

static void test_refusals(void)
{
    expect_fail("nokey", NULL, -ENOENT, "storage key 'nokey' not in storage-config");
    expect_fail("notype", NULL, -EINVAL, "storage key 'notype': no type");
    expect_fail("badtype", NULL, -EINVAL, "unknown type 'ftp'");
    expect_fail("mys3", "{\"type\":\"ftp\"}", -EINVAL, "unknown type 'ftp'");
    expect_fail("array", NULL, -EINVAL, "storage key 'array': not a JSON object");
    expect_fail("number", NULL, -EINVAL, "field 'port' is not a string");
    expect_fail("twice", NULL, -EINVAL, "field 'secret_access_key' is given twice");
    expect_fail("nul", NULL, -EINVAL, "\\u0000");
    expect_fail("broken", NULL, -EINVAL, "storage key 'broken': not valid JSON");
    expect_fail("badhdr", NULL, -EINVAL, "'headers': every header value must be a string");
    expect_fail("mys3", "[1]", -EINVAL, "storage parameters: not a JSON object");
    expect_fail("mys3", "{\"bucket\":1}", -EINVAL, "storage parameters: field 'bucket'");
    expect_fail("mys3", "{\"x\":\"SECRETVAL1", -EINVAL, "storage parameters: not valid JSON");
    expect_fail("mys3", "{\"a\":\"1\"} {", -EINVAL, "not valid JSON");
    expect_fail("mys3", "{\"\":\"1\"}", -EINVAL, "a field name of 0 bytes");
    expect_fail("mys3", "{\"a\":\"\xff\"}", -EINVAL, "not UTF-8");
    expect_fail("../etc", NULL, -EINVAL, "not a secret key");
    expect_fail("a/b", NULL, -EINVAL, "not a secret key");
    expect_fail("a\x01", NULL, -EINVAL, "storage key 'a\\x01'");

    /* bounds */
    char *big = malloc(300 << 10);
    REQUIRE(big);
    int n = snprintf(big, 64, "{\"type\":\"s3\",\"v\":\"");
    memset(big + n, 'x', (200 << 10));
    snprintf(big + n + (200 << 10), 16, "\"}");
    expect_fail("mys3", big, -EINVAL, "field 'v' is longer than");
    memset(big + n, 'x', (280 << 10));
    snprintf(big + n + (280 << 10), 16, "\"}");
    expect_fail("mys3", big, -EINVAL, "more than 262144");
    n = snprintf(big, 64, "{\"type\":\"s3\"");
    for (int i = 0; i < 70; i++)
        n += snprintf(big + n, 32, ",\"f%d\":\"v\"", i);
    snprintf(big + n, 4, "}");
    expect_fail("mys3", big, -EINVAL, "more than 64 fields");
    /* the entry's and the params' fields together */
    n = snprintf(big, 64, "{\"type\":\"s3\"");
    for (int i = 0; i < 60; i++)
        n += snprintf(big + n, 32, ",\"f%d\":\"v\"", i);
    snprintf(big + n, 4, "}");
    expect_fail("mys3", big, -EINVAL, "more than 64 fields");
    free(big);

    /* a failure to look is not "no such key" */
    struct secret failing = {.fail = -EAGAIN};
    struct stcfg c;
    struct mm_error err = {0};
    CHECK_INT(stcfg_resolve("k", NULL, lookup, &failing, &c, &err), -EAGAIN);
    CHECK(strstr(err.msg, "storage key 'k': mirror not ready") != NULL);
    CHECK_INT(stcfg_resolve(NULL, NULL, lookup, &failing, &c, &err), -EAGAIN);
    /* a key with no lookup function: not there */
    CHECK_INT(stcfg_resolve("k", NULL, NULL, NULL, &c, &err), -ENOENT);
}

static void expect_uri(const char *uri, const char *params, const char *path)
{
    char *p = NULL, *q = NULL;
    struct mm_error err = {0};
    int rc = stcfg_parse_uri(uri, &p, &q, &err);
    if (rc != 0)
        fprintf(stderr, "parse %s: %s\n", uri, err.msg);
    CHECK_INT(rc, 0);
    if (rc == 0) {
        CHECK_STR(p, params);
        CHECK_STR(q, path);
    }
    free(p);
    free(q);
}

static void expect_bad_uri(const char *uri, const char *part)
{
    char *p = (char *)1, *q = (char *)1;
    struct mm_error err = {0};
    int rc = stcfg_parse_uri(uri, &p, &q, &err);
    if (rc != -EINVAL || !strstr(err.msg, part))
        fprintf(stderr, "parse %s: %d \"%s\", wanted \"%s\"\n", uri ? uri : "NULL", rc, err.msg,
                part);
    CHECK_INT(rc, -EINVAL);
    CHECK(strstr(err.msg, part) != NULL);
    CHECK(p == NULL && q == NULL);
}

static void test_uris(void)
{
    expect_uri("s3://modelmesh-example-models/sklearn/mnist-svm.joblib",
               "{\"type\":\"s3\",\"bucket\":\"modelmesh-example-models\"}",
               "sklearn/mnist-svm.joblib");
    expect_uri("gs://b/dir/", "{\"type\":\"gcs\",\"bucket\":\"b\"}", "dir/");
    expect_uri("pvc://claim-1/models/x", "{\"type\":\"pvc\",\"name\":\"claim-1\"}", "models/x");
    expect_uri("https://acct.blob.core.windows.net/cont/a/b.json",
               "{\"type\":\"azure\",\"account_name\":\"acct\",\"container\":\"cont\"}",
               "a/b.json");
    expect_uri("https://example.com:8443/m/model.bst",
               "{\"type\":\"http\",\"url\":\"https://example.com:8443\"}", "m/model.bst");
    expect_uri("http://127.0.0.1/model.json", "{\"type\":\"http\",\"url\":\"http://127.0.0.1\"}",
               "model.json");
    expect_uri("s3://b//p", "{\"type\":\"s3\",\"bucket\":\"b\"}", "p");

    expect_bad_uri("ftp://h/p", "unknown scheme");
    expect_bad_uri("s3:/b/p", "unknown scheme");
    expect_bad_uri("S3://b/p", "unknown scheme");
    expect_bad_uri("", "empty");
    expect_bad_uri(NULL, "empty");
    expect_bad_uri("s3:///p", "no bucket");
    expect_bad_uri("gs://", "no bucket");
    expect_bad_uri("pvc:///x", "no name");
    expect_bad_uri("https:///x", "no host");
    expect_bad_uri("s3://b", "no path");
    expect_bad_uri("s3://b/", "no path");
    expect_bad_uri("s3://b///", "no path");
    expect_bad_uri("https://acct.blob.core.windows.net/cont", "no path");
    expect_bad_uri("https://acct.blob.core.windows.net//x", "no container");
    expect_bad_uri("s3://b/a/../../x", "\"..\"");
    expect_bad_uri("s3://b/..", "\"..\"");
    expect_bad_uri("pvc://../x", "not a name");
    expect_bad_uri("s3://b:1/x", "not a bucket");
    expect_bad_uri("https://user:SECRETPW@h/x", "credentials in the URI");
    expect_bad_uri("https://h/x?sig=SECRETSIG", "a query or fragment");
    expect_bad_uri("s3://b/x#SECRETSIG", "a query or fragment");
    expect_bad_uri("s3://b/a b", "a space");
    expect_bad_uri("s3://b/a\x01", "control");
    char err_msg[MM_ERROR_MSG_MAX];
    {
        char *p, *q;
        struct mm_error err = {0};
        stcfg_parse_uri("https://user:SECRETPW@h/x?sig=SECRETSIG", &p, &q, &err);
        snprintf(err_msg, sizeof err_msg, "%s", err.msg);
    }
    /* a URI that may hold a credential is not quoted */
    CHECK(strstr(err_msg, "credentials") != NULL);
    CHECK(strstr(err_msg, "SECRET") == NULL);
    char *longuri = malloc(5000);
    REQUIRE(longuri);
    memcpy(longuri, "s3://b/", 7);
    memset(longuri + 7, 'a', 4990);
    longuri[4997] = '\0';
    expect_bad_uri(longuri, "longer than 4096");
    free(longuri);
}

int main(void)
{
    test_entries();
    test_defaults();
    test_refusals();
    test_uris();
    return CHECK_DONE();
}
