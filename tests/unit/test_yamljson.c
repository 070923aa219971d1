/* test_yamljson.c - YAML into cJSON with lines: the walkthrough's manifest, scalar resolution,
 * several documents, JSON input, aliases, every refusal naming document and line, and the
 * bounds (a billion-laughs file, deep nesting, too many keys, anchors, documents, bytes). */
#include <errno.h>
#include <time.h>

#include "check.h"
#include "mm/json.h"
#include "mm/yamljson.h"

static struct yamljson *parse(const char *text, struct mm_error *err)
{
    struct yamljson *y = NULL;
    int rc = yamljson_parse(text, strlen(text), NULL, &y, err);
    if (rc < 0) {
        CHECK(y == NULL);
        return NULL;
    }
    return y;
}

/* The compact JSON of document i. */
static char *json_of(const struct yamljson *y, size_t i)
{
    return json_print(yamljson_root(y, i), false);
}

#define CHECK_JSON(y, i, want)                                                                     \
    do {                                                                                           \
        char *j_ = json_of(y, i);                                                                  \
        CHECK_STR(j_, want);                                                                       \
        free(j_);                                                                                  \
    } while (0)

/* Parsing text fails with code and a message containing fragment. */
static void refused(const char *text, int code, const char *fragment)
{
    struct mm_error err = {0};
    struct yamljson *y = NULL;
    int rc = yamljson_parse(text, strlen(text), NULL, &y, &err);
    CHECK_INT(rc, code);
    CHECK(y == NULL);
    CHECK(strstr(err.msg, fragment) != NULL);
    if (!strstr(err.msg, fragment))
        fprintf(stderr, "  input: %s\n  message: %s\n  wanted: %s\n", text, err.msg, fragment);
    yamljson_free(y);
}

static void test_walkthrough(void)
{
    const char *m = "apiVersion: serving.kserve.io/v1beta1\n"           /* 1 */
                    "kind: InferenceService\n"                          /* 2 */
                    "metadata:\n"                                       /* 3 */
                    "  name: example-mnist-isvc\n"                      /* 4 */
                    "  annotations:\n"                                  /* 5 */
                    "    serving.kserve.io/deploymentMode: ModelMesh\n" /* 6 */
                    "spec:\n"                                           /* 7 */
                    "  predictor:\n"                                    /* 8 */
                    "    model:\n"                                      /* 9 */
                    "      modelFormat:\n"                              /* 10 */
                    "        name: sklearn\n"                           /* 11 */
                    "      storage:\n"                                  /* 12 */
                    "        key: localMinIO\n"                         /* 13 */
                    "        path: sklearn/mnist-svm.joblib\n";         /* 14 */
    struct mm_error err = {0};
    struct yamljson *y = parse(m, &err);
    REQUIRE(y != NULL);
    CHECK_INT(yamljson_count(y), 1);
    CHECK_INT(yamljson_doc_line(y, 0), 1);
    CHECK_JSON(y, 0,
               "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
               "\"metadata\":{\"name\":\"example-mnist-isvc\",\"annotations\":{"
               "\"serving.kserve.io/deploymentMode\":\"ModelMesh\"}},\"spec\":{\"predictor\":{"
               "\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storage\":{\"key\":"
               "\"localMinIO\",\"path\":\"sklearn/mnist-svm.joblib\"}}}}}");
    CHECK_INT(yamljson_path_line(y, 0, ""), 1);
    CHECK_INT(yamljson_path_line(y, 0, "metadata.name"), 4);
    CHECK_INT(
        yamljson_path_line(y, 0, "metadata.annotations[\"serving.kserve.io/deploymentMode\"]"), 6);
    CHECK_INT(yamljson_path_line(y, 0, "metadata.annotations['serving.kserve.io/deploymentMode']"),
              6);
    CHECK_INT(yamljson_path_line(y, 0, "spec.predictor.model.storage"), 12);
    CHECK_INT(yamljson_path_line(y, 0, "spec.predictor.model.storage.path"), 14);
    /* A missing field: the deepest node on the way. */
    CHECK_INT(yamljson_path_line(y, 0, "spec.predictor.model.storageUri"), 9);
    CHECK_INT(yamljson_path_line(y, 0, "spec.predictor.model.modelFormat.version"), 10);
    CHECK_INT(yamljson_path_line(y, 0, "spec[3].x"), 7);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(yamljson_root(y, 0), "spec");
    CHECK_INT(yamljson_line(y, spec), 7);
    CHECK_INT(yamljson_line(y, NULL), 0);
    yamljson_free(y);
}

static void test_scalars(void)
{
    struct mm_error err = {0};
    struct yamljson *y =
        parse("n1: ~\nn2: null\nn3:\nt: true\nf: False\ni: -42\nh: 0x1F\no: 0o17\nx: 1.5\n"
              "e: 2e3\nz: 007\ns1: '123'\ns2: \"true\"\ns3: !!str 12\ns4: yes\ns5: 1.2.3\n"
              "s6: 0x\ns7: -x\nv: 1.0\nb: !!bool TRUE\nnum: !!int \"5\"\nu: \"caf\\u00e9\"\n"
              "lit: |\n  a\n  b\nfold: >\n  a\n  b\n",
              &err);
    REQUIRE(y != NULL);
    CHECK_JSON(y, 0,
               "{\"n1\":null,\"n2\":null,\"n3\":null,\"t\":true,\"f\":false,\"i\":-42,\"h\":31,"
               "\"o\":15,\"x\":1.5,\"e\":2000,\"z\":7,\"s1\":\"123\",\"s2\":\"true\",\"s3\":\"12\","
               "\"s4\":\"yes\",\"s5\":\"1.2.3\",\"s6\":\"0x\",\"s7\":\"-x\",\"v\":1,\"b\":true,"
               "\"num\":5,\"u\":\"caf\xc3\xa9\",\"lit\":\"a\\nb\\n\","
               "\"fold\":\"a b\\n\"}");
    /* 2^53 exactly (cJSON prints it with 15 digits; the value is exact). */
    yamljson_free(y);
    y = parse("big: 9007199254740992\n", &err);
    REQUIRE(y != NULL);
    const cJSON *big = cJSON_GetObjectItemCaseSensitive(yamljson_root(y, 0), "big");
    CHECK(cJSON_IsNumber(big) && big->valuedouble == 9007199254740992.0);
    yamljson_free(y);
}

static void test_documents(void)
{
    struct mm_error err = {0};
    struct yamljson *y =
        parse("a: 1\n---\n---\n# only a comment\n---\n[1, 2]\n...\n---\nx\n", &err);
    REQUIRE(y != NULL);
    REQUIRE(yamljson_count(y) == 5);
    CHECK_JSON(y, 0, "{\"a\":1}");
    CHECK_JSON(y, 1, "null");
    CHECK_JSON(y, 2, "null"); /* a comment alone is an empty document too */
    CHECK_JSON(y, 3, "[1,2]");
    CHECK_JSON(y, 4, "\"x\"");
    CHECK_INT(yamljson_doc_line(y, 0), 1);
    CHECK_INT(yamljson_doc_line(y, 1), 2);
    CHECK_INT(yamljson_doc_line(y, 2), 3);
    CHECK_INT(yamljson_doc_line(y, 3), 5);
    CHECK_INT(yamljson_doc_line(y, 4), 8);
    CHECK(yamljson_root(y, 5) == NULL);
    yamljson_free(y);

    /* An empty last document: libyaml marks its null on the line after the text's last; the
     * line given is never past the text (found by fuzz_yaml). */
    y = parse("b: ---\n---\n\n    ", &err);
    REQUIRE(y != NULL);
    REQUIRE(yamljson_count(y) == 2);
    CHECK_JSON(y, 1, "null");
    CHECK(yamljson_doc_line(y, 1) <= 4);
    CHECK(yamljson_line(y, yamljson_root(y, 1)) <= 4);
    yamljson_free(y);

    y = parse("", &err);
    REQUIRE(y != NULL);
    CHECK_INT(yamljson_count(y), 0);
    yamljson_free(y);
    y = parse("# nothing\n\n", &err);
    REQUIRE(y != NULL);
    CHECK_INT(yamljson_count(y), 0);
    yamljson_free(y);
}

static void test_json(void)
{
    struct mm_error err = {0};
    struct yamljson *y = parse("{\"kind\": \"Secret\",\n \"stringData\": {\"k\": \"{\\\"type\\\": "
                               "\\\"s3\\\"}\"},\n \"list\": [1, -2.5e-1, true, null, \"a\\/b\"]}",
                               &err);
    REQUIRE(y != NULL);
    CHECK_JSON(y, 0,
               "{\"kind\":\"Secret\",\"stringData\":{\"k\":\"{\\\"type\\\": \\\"s3\\\"}\"},"
               "\"list\":[1,-0.25,true,null,\"a/b\"]}");
    CHECK_INT(yamljson_path_line(y, 0, "list"), 3);
    CHECK_INT(yamljson_path_line(y, 0, "list[2]"), 3);
    yamljson_free(y);
}

static void test_aliases(void)
{
    struct mm_error err = {0};
    struct yamljson *y =
        parse("base: &b\n  x: 1\n  y: [a, b]\nother: *b\ns: &s str\nt: *s\n", &err);
    REQUIRE(y != NULL);
    CHECK_JSON(y, 0,
               "{\"base\":{\"x\":1,\"y\":[\"a\",\"b\"]},\"other\":{\"x\":1,\"y\":[\"a\",\"b\"]},"
               "\"s\":\"str\",\"t\":\"str\"}");
    CHECK_INT(yamljson_path_line(y, 0, "base.y"), 3);
    CHECK_INT(yamljson_path_line(y, 0, "other"), 4);
    CHECK_INT(yamljson_path_line(y, 0, "other.y"), 4); /* inside the copy: the alias's line */
    yamljson_free(y);
    /* Anchors belong to their document. */
    refused("a: &x 1\n---\nb: *x\n", -EINVAL, "document 2, line 3: the alias *x names no anchor");
    /* An anchor is known once its node is complete: no recursion. */
    refused("a: &x [1, *x]\n", -EINVAL, "document 1, line 1: the alias *x names no anchor");
}

static void test_refusals(void)
{
    refused("a: 1\nb: 2\na: 3\n", -EINVAL, "document 1, line 3: the key 'a' appears twice");
    refused("x: 1\n---\nkind: A\nspec:\n  k: 1\n  k: 2\n", -EINVAL,
            "document 2, line 6: the key 'k' appears twice");
    refused("a: 1\n---\nb: [1, 2\nc: 3\n", -EINVAL, "document 2, line 4, column");
    refused("a: b: c\n", -EINVAL, "document 1, line 1, column 5: mapping values are not allowed");
    refused("? [a]\n: 1\n", -EINVAL, "document 1, line 1: a mapping key must be a scalar");
    refused("{[1]: 2}\n", -EINVAL, "a mapping key must be a scalar");
    refused("a: &x 1\n*x : 2\n", -EINVAL, "line 2: a mapping key must be a scalar");
    refused("base: &b {x: 1}\nm:\n  <<: *b\n", -EINVAL,
            "line 3: merge keys (<<) are not supported");
    refused("a:\n  b: .inf\n", -EINVAL, "line 2: '.inf' (infinity or not-a-number) has no JSON");
    refused("a: .NaN\n", -EINVAL, "no JSON form");
    refused("a: 9007199254740993\n", -EINVAL, "line 1: the integer '9007199254740993' is beyond");
    refused("a: \"x\\0y\"\n", -EINVAL, "line 1: a scalar holds a NUL byte");
    refused("a: !!int abc\n", -EINVAL, "'abc' is tagged as a number but is not one");
    refused("a: !!bool maybe\n", -EINVAL, "tagged !!bool");
    refused("a: !!null x\n", -EINVAL, "tagged !!null");
    refused("a: \"\xff\"\n", -EINVAL, "document 1, line 1");
    refused("a:\n\tb: 1\n", -EINVAL, "line 2");
    /* A parse error clears nothing the caller keeps, and an earlier code does not leak. */
    struct mm_error err = {.code = -EIO};
    struct yamljson *y = NULL;
    CHECK_INT(yamljson_parse("a: 1", 4, NULL, &y, &err), 0);
    CHECK_INT(err.code, 0);
    yamljson_free(y);
    /* Not NUL-terminated: only len bytes are read. */
    CHECK_INT(yamljson_parse("a: 1zzz", 4, NULL, &y, NULL), 0);
    REQUIRE(y != NULL);
    CHECK_JSON(y, 0, "{\"a\":1}");
    yamljson_free(y);
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void test_bounds(void)
{
    /* Billion laughs: nine levels of ten aliases each would be 10^9 strings. */
    const char *laughs =
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
        "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
        "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    long long t0 = now_ms();
    refused(laughs, -E2BIG, "nodes (aliases count as their copies)");
    long long took = now_ms() - t0;
    CHECK(took < 2000);
    fprintf(stderr, "billion laughs refused in %lld ms\n", took);
    /* Long strings multiplied by aliases hit the scalar bytes bound instead. */
    size_t n = 1 << 20;
    char *big = malloc(n + 200);
    REQUIRE(big != NULL);
    strcpy(big, "a: &a \"");
    size_t at = strlen(big);
    memset(big + at, 'x', n);
    strcpy(big + at + n, "\"\nb: [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n");
    refused(big, -E2BIG, "line 2: more than 16777216 bytes of scalars");
    free(big);

    /* Depth, in flow and block style. */
    char deep[512] = "";
    for (int i = 0; i < 65; i++)
        strcat(deep, "[");
    for (int i = 0; i < 65; i++)
        strcat(deep, "]");
    refused(deep, -E2BIG, "nested deeper than 64 levels");
    deep[0] = '\0';
    for (int i = 0; i < 64; i++)
        strcat(deep, "[");
    for (int i = 0; i < 64; i++)
        strcat(deep, "]");
    struct yamljson *y = NULL;
    CHECK_INT(yamljson_parse(deep, strlen(deep), NULL, &y, NULL), 0);
    yamljson_free(y);
    /* An alias that would nest past the bound. */
    struct yamljson_limits lim = {.max_depth = 4};
    struct mm_error err = {0};
    const char *nest = "a: &a [[[1]]]\nb: [*a]\n";
    CHECK_INT(yamljson_parse(nest, strlen(nest), &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "document 1, line 2: an alias nests deeper than 4 levels") != NULL);

    /* Keys, anchors, documents, bytes. */
    lim = (struct yamljson_limits){.max_keys = 3};
    CHECK_INT(yamljson_parse("a: 1\nb: 2\nc: 3\n", 15, &lim, &y, &err), 0);
    yamljson_free(y);
    CHECK_INT(yamljson_parse("a: 1\nb: 2\nc: 3\nd: 4\n", 20, &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "line 4: more than 3 keys in one mapping") != NULL);
    lim = (struct yamljson_limits){.max_anchors = 2};
    const char *anchors = "- &a 1\n- &b 2\n- &c 3\n";
    CHECK_INT(yamljson_parse(anchors, strlen(anchors), &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "line 3: more than 2 anchors") != NULL);
    lim = (struct yamljson_limits){.max_documents = 2};
    const char *docs = "a\n---\nb\n---\nc\n";
    CHECK_INT(yamljson_parse(docs, strlen(docs), &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "document 3, line 4: more than 2 documents") != NULL);
    lim = (struct yamljson_limits){.max_bytes = 10};
    CHECK_INT(yamljson_parse("a: 12345678", 11, &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "11 bytes: more than the 10") != NULL);
    lim = (struct yamljson_limits){.max_nodes = 3};
    CHECK_INT(yamljson_parse("[1, 2]", 6, &lim, &y, &err), 0);
    yamljson_free(y);
    CHECK_INT(yamljson_parse("[1, 2, 3]", 9, &lim, &y, &err), -E2BIG);
    CHECK(strstr(err.msg, "more than 3 nodes") != NULL);
    CHECK(y == NULL);
}

/* Printing reads back to an equal document, strings that look like other types included. */
static void test_print(void)
{
    const char *j =
        "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"a\":\"true\",\"b\":\"123\","
        "\"c\":\"\",\"d\":\"a: b\",\"e\":\"- x\",\"f\":\"multi\\nline\",\"g\":\"null\","
        "\"h\":\"~\",\"i\":\"0x1F\",\"k\":\".inf\",\"l\":\"<<\",\"m\":\"caf\u00e9\","
        "\"n\":\"\\u0001\\t\",\"o\":\"#x\",\"p\":\" pad \"},[],{},1.5,-3,true,null,"
        "[[1,2],{\"x\":{\"y\":[]}}]],\"metadata\":{\"resourceVersion\":\"\"}}";
    cJSON *doc = cJSON_Parse(j);
    REQUIRE(doc != NULL);
    char *text = yamljson_print(doc);
    REQUIRE(text != NULL);
    struct mm_error err = {0};
    struct yamljson *y = parse(text, &err);
    CHECK(y != NULL);
    if (y) {
        CHECK_INT(yamljson_count(y), 1);
        CHECK(cJSON_Compare(doc, yamljson_root(y, 0), true));
        yamljson_free(y);
    } else {
        fprintf(stderr, "  %s\n%s\n", err.msg, text);
    }
    CHECK(strncmp(text, "apiVersion: v1\nkind: List\nitems:\n- a: \"true\"\n", 44) == 0);
    free(text);
    cJSON_Delete(doc);
}

int main(void)
{
    test_walkthrough();
    test_scalars();
    test_documents();
    test_json();
    test_aliases();
    test_refusals();
    test_bounds();
    test_print();
    return CHECK_DONE();
}
