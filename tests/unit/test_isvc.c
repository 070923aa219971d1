/* test_isvc.c - InferenceServices (mm/isvc.h): the revision id check value, the canonical JSON
 * forms, every refusal with its field path and the node at fault, the specs that parse but
 * cannot be served (InvalidSpec), the old framework forms, storageUri forms, the model info a
 * revision registers with; ServingRuntime parsing and the matching cases; the status rules of
 * PROTOCOLS.md "How status moves" as a table; the status record both ways; RFC 3339 times. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/isvc.h"
#include "mm/mesh.h"

/* ---------------------------------------------------------------- helpers */

/* An InferenceService whose predictor is pred (JSON text of spec.predictor). */
static char *isvc_doc(const char *name, const char *ns, const char *pred)
{
    static char buf[16384];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
             "\"metadata\":{\"name\":\"%s\"%s%s%s,\"annotations\":{"
             "\"serving.kserve.io/deploymentMode\":\"ModelMesh\"}},"
             "\"spec\":{\"predictor\":%s}}",
             name, ns ? ",\"namespace\":\"" : "", ns ? ns : "", ns ? "\"" : "", pred);
    return buf;
}

static int parse(const char *json, struct isvc *s, struct mm_error *err)
{
    mm_error_clear(err);
    return isvc_parse_text(json, strlen(json), s, err);
}

static const char *MNIST_PRED =
    "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},"
    "\"storage\":{\"key\":\"localMinIO\",\"path\":\"sklearn/mnist-svm.joblib\"}}}";

/* ---------------------------------------------------------------- revision */

static void test_check_value(void)
{
    struct isvc s;
    struct mm_error err;
    REQUIRE(parse(isvc_doc("example-mnist-isvc", NULL, MNIST_PRED), &s, &err) == 0);
    CHECK_STR(s.revision, "example-mnist-isvc__isvc-6b2eb0b8bf");
    CHECK_STR(s.name, "example-mnist-isvc");
    CHECK_STR(s.ns, "");
    CHECK(s.modelmesh);
    CHECK_STR(s.format, "sklearn");
    CHECK_STR(s.storage_key, "localMinIO");
    CHECK_STR(s.storage_path, "sklearn/mnist-svm.joblib");
    CHECK_INT(s.invalid, ISVC_REASON_NONE);
    char *c = isvc_canonical_json(&s);
    CHECK_STR(c, "{\"modelType\":{\"name\":\"sklearn\"},\"path\":\"\",\"storage\":{\"path\":"
                 "\"sklearn/mnist-svm.joblib\",\"parameters\":{},\"key\":\"localMinIO\"}}");
    free(c);

    /* Every field of the canonical form, in upstream's order; parameters sorted. */
    REQUIRE(parse(isvc_doc("m", "ns1",
                           "{\"model\":{\"modelFormat\":{\"name\":\"xgboost\",\"version\":\"1\"},"
                           "\"runtime\":\"mm-runtime\",\"protocolVersion\":\"grpc-v2\","
                           "\"storage\":{\"key\":\"k\",\"path\":\"p/a<b>&c\",\"schemaPath\":"
                           "\"s.json\",\"parameters\":{\"zeta\":\"1\",\"bucket\":\"b\","
                           "\"alpha\":\"\\\"q\\n\"}}}}"),
                  &s, &err) == 0);
    c = isvc_canonical_json(&s);
    CHECK_STR(c, "{\"modelType\":{\"name\":\"xgboost\",\"version\":\"1\"},\"path\":\"\","
                 "\"storage\":{\"path\":\"p/a\\u003cb\\u003e\\u0026c\",\"schemaPath\":\"s.json\","
                 "\"parameters\":{\"alpha\":\"\\\"q\\n\",\"bucket\":\"b\",\"zeta\":\"1\"},"
                 "\"key\":\"k\"},\"runtime\":{\"name\":\"mm-runtime\"},"
                 "\"protocolVersion\":\"grpc-v2\"}");
    free(c);
    CHECK_STR(s.ns, "ns1");
    CHECK_STR(s.storage_params, "{\"alpha\":\"\\\"q\\n\",\"bucket\":\"b\",\"zeta\":\"1\"}");
    CHECK(strncmp(s.revision, "m__isvc-", 8) == 0 && strlen(s.revision) == 18);

    /* A different spec, a different id; the same spec written otherwise, the same id. */
    char first[ISVC_REVISION_MAX + 1];
    strcpy(first, s.revision);
    REQUIRE(parse(isvc_doc("m", "ns1",
                           "{\"model\":{\"protocolVersion\":\"grpc-v2\",\"runtime\":\"mm-runtime\","
                           "\"storage\":{\"parameters\":{\"bucket\":\"b\",\"alpha\":\"\\\"q\\n\","
                           "\"zeta\":\"1\"},\"schemaPath\":\"s.json\",\"path\":\"p/a<b>&c\","
                           "\"key\":\"k\"},\"modelFormat\":{\"version\":\"1\",\"name\":"
                           "\"xgboost\"}}}"),
                  &s, &err) == 0);
    CHECK_STR(s.revision, first);
    REQUIRE(parse(isvc_doc("example-mnist-isvc", NULL,
                           "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storage\":{"
                           "\"key\":\"localMinIO\",\"path\":\"sklearn/mnist-svm2.joblib\"}}}"),
                  &s, &err) == 0);
    CHECK(strcmp(s.revision, "example-mnist-isvc__isvc-6b2eb0b8bf") != 0);
    /* The namespace and the generation are not part of the spec. */
    REQUIRE(parse(isvc_doc("example-mnist-isvc", "other", MNIST_PRED), &s, &err) == 0);
    CHECK_STR(s.revision, "example-mnist-isvc__isvc-6b2eb0b8bf");
}

/* ---------------------------------------------------------------- refusals */

struct refusal {
    const char *json; /* the whole document */
    const char *msg;  /* a part of the message */
};

static void test_refusals(void)
{
    static char docs[32][4096];
    int n = 0;
#define DOC(...) (snprintf(docs[n], sizeof(docs[n]), __VA_ARGS__), docs[n++])
#define HEAD "\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\""
    const struct refusal cases[] = {
        {"[]", "not an object"},
        {"{\"kind\":\"InferenceService\"}", "apiVersion: missing"},
        {"{\"apiVersion\":\"serving.kserve.io/v1alpha1\",\"kind\":\"InferenceService\"}",
         "apiVersion: 'serving.kserve.io/v1alpha1', expected serving.kserve.io/v1beta1"},
        {"{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"Predictor\"}",
         "kind: 'Predictor', expected InferenceService"},
        {"{" HEAD "}", "metadata: missing"},
        {DOC("{" HEAD ",\"metadata\":{}}"), "metadata.name: missing"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"Upper\"}}"), "metadata.name: 'Upper' is not"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"1abc\"}}"), "metadata.name: '1abc' is not"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"%064d\"}}", 0), "metadata.name: 64 bytes, longer than 63"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":7}}"), "metadata.name: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\",\"namespace\":\"A_b\"}}"),
         "metadata.namespace: 'A_b' is not"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\",\"generation\":-1}}"),
         "metadata.generation: not an integer"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\",\"annotations\":{\"x\":1}}}"),
         "metadata.annotations.x: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"}}"), "spec: missing"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{}}"), "spec.predictor: missing"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":[]}}"),
         "spec.predictor: not an object"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{}}}"),
         "spec.predictor: no model"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":\"sklearn\"}},\"sklearn\":{}}}}"),
         "spec.predictor: exactly one of model"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{}}}}"),
         "spec.predictor.model.modelFormat: missing"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{}}}}}"),
         "spec.predictor.model.modelFormat.name: missing"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":3}}}}}"),
         "spec.predictor.model.modelFormat.name: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":\"s\"},\"storage\":\"x\"}}}}"),
         "spec.predictor.model.storage: not an object"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":\"s\"},\"storage\":{\"path\":[]}}}}}"),
         "spec.predictor.model.storage.path: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":\"s\"},\"storage\":{\"path\":\"p\",\"parameters\":{"
             "\"type\":1}}}}}}"),
         "spec.predictor.model.storage.parameters.type: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"model\":{"
             "\"modelFormat\":{\"name\":\"s\"},\"runtime\":\"a b\"}}}}"),
         "spec.predictor.model.runtime:"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\"},\"spec\":{\"predictor\":{\"sklearn\":{"
             "\"storageUri\":5}}}}"),
         "spec.predictor.sklearn.storageUri: not a string"},
        {DOC("{" HEAD ",\"metadata\":{\"name\":\"a\",\"name\":\"b\"}}"), "given twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct isvc s;
        struct mm_error err;
        int rc = parse(cases[i].json, &s, &err);
        CHECK_INT(rc, -EINVAL);
        if (!strstr(err.msg, cases[i].msg)) {
            fprintf(stderr, "case %zu: message '%s' lacks '%s'\n", i, err.msg, cases[i].msg);
            CHECK(0);
        }
        CHECK_STR(s.name, ""); /* nothing half-parsed */
    }

    /* The node at fault, for a YAML reader's line. */
    cJSON *doc = cJSON_Parse(isvc_doc("a", NULL, "{\"model\":{\"modelFormat\":{\"name\":3}}}"));
    const cJSON *where = NULL;
    struct isvc s;
    struct mm_error err;
    CHECK_INT(isvc_parse(doc, &s, &where, &err), -EINVAL);
    const cJSON *expect = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(doc,
                                                                                         "spec"),
                                                                     "predictor"),
                                                "model"),
                            "modelFormat"),
        "name");
    CHECK(where == expect);
    cJSON_Delete(doc);
    /* A missing field: its parent. */
    doc = cJSON_Parse(isvc_doc("a", NULL, "{\"model\":{\"modelFormat\":{}}}"));
    CHECK_INT(isvc_parse(doc, &s, &where, &err), -EINVAL);
    CHECK(where == cJSON_GetObjectItem(
                       cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "spec"),
                                                               "predictor"),
                                           "model"),
                       "modelFormat"));
    cJSON_Delete(doc);

    /* Text checks: bounds, JSON that readers disagree on. */
    char *big = malloc(ISVC_MAX_BYTES + 2);
    memset(big, ' ', ISVC_MAX_BYTES + 1);
    big[0] = '{', big[ISVC_MAX_BYTES] = '}', big[ISVC_MAX_BYTES + 1] = '\0';
    CHECK_INT(isvc_parse_text(big, ISVC_MAX_BYTES + 1, &s, &err), -E2BIG);
    free(big);
    CHECK_INT(parse("{\"a\":\"\\u0000\"}", &s, &err), -EINVAL);
    CHECK_INT(parse("{\"apiVersion\"", &s, &err), -EINVAL);
    /* Unknown fields are ignored. */
    CHECK_INT(parse(isvc_doc("a", NULL,
                             "{\"minReplicas\":1,\"model\":{\"modelFormat\":{\"name\":\"s\"},"
                             "\"new\":{},\"storage\":{\"path\":\"p\",\"later\":1}}}"),
                    &s, &err),
              0);
#undef DOC
#undef HEAD
}

/* Specs that parse but cannot be served: reported in the status, as KServe's controller does. */
static void test_invalid_specs(void)
{
    const struct {
        const char *pred;
        const char *msg;
    } cases[] = {
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"}}}", "Predictor Storage field missing"},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"s3://b/p\","
         "\"storage\":{\"path\":\"x\"}}}",
         "spec.predictor.model.storage: path and storageUri both set"},
        {"{\"sklearn\":{\"storageUri\":\"s3://b/p\",\"storage\":{\"path\":\"x\"}}}",
         "spec.predictor.sklearn.storage: path and storageUri both set"},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"ftp://h/p\"}}",
         "spec.predictor.model.storageUri: "},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"s3://b/../x\"}}",
         "spec.predictor.model.storageUri: "},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storage\":{\"key\":\"k\"}}}",
         "spec.predictor.model.storage.path: missing"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct isvc s;
        struct mm_error err;
        CHECK_INT(parse(isvc_doc("bad", NULL, cases[i].pred), &s, &err), 0);
        CHECK_INT(s.invalid, ISVC_REASON_INVALID_PREDICTOR_SPEC);
        if (!strstr(s.invalid_msg, cases[i].msg)) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, s.invalid_msg, cases[i].msg);
            CHECK(0);
        }
        CHECK(strncmp(s.revision, "bad__isvc-", 10) == 0);
        struct mesh_model_info info;
        char key[512];
        CHECK_INT(isvc_model_info(&s, &info, key, sizeof(key), &err), -EINVAL);
    }
    /* No storage at all: the canonical form has no "storage". */
    struct isvc s;
    struct mm_error err;
    REQUIRE(parse(isvc_doc("bad", NULL, cases[0].pred), &s, &err) == 0);
    char *c = isvc_canonical_json(&s);
    CHECK_STR(c, "{\"modelType\":{\"name\":\"sklearn\"},\"path\":\"\"}");
    free(c);
}

/* ---------------------------------------------------------------- old forms, URIs */

static void test_old_forms_and_uris(void)
{
    struct isvc s;
    struct mm_error err;
    const char *fw[] = {"sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx",
                        "triton", "pmml", "paddle", "keras"};
    for (size_t i = 0; i < sizeof(fw) / sizeof(fw[0]); i++) {
        char pred[256];
        snprintf(pred, sizeof(pred), "{\"%s\":{\"storageUri\":\"s3://bucket/dir/m\"}}", fw[i]);
        CHECK_INT(parse(isvc_doc("old", NULL, pred), &s, &err), 0);
        CHECK_STR(s.format, fw[i]);
        CHECK_INT(s.invalid, ISVC_REASON_NONE);
        CHECK_STR(s.storage_path, "dir/m");
        CHECK_STR(s.storage_params, "{\"bucket\":\"bucket\",\"type\":\"s3\"}");
    }
    /* The old form with a protocol and a storage key. */
    CHECK_INT(parse(isvc_doc("old", NULL,
                             "{\"sklearn\":{\"protocolVersion\":\"v2\",\"storageUri\":"
                             "\"gs://b/x\",\"storage\":{\"key\":\"gk\"}}}"),
                    &s, &err),
              0);
    CHECK_STR(s.protocol, "v2");
    CHECK_STR(s.storage_key, "gk");
    CHECK_STR(s.storage_params, "{\"bucket\":\"b\",\"type\":\"gcs\"}");
    char *c = isvc_canonical_json(&s);
    CHECK_STR(c, "{\"modelType\":{\"name\":\"sklearn\"},\"path\":\"\",\"storage\":{\"path\":"
                 "\"x\",\"parameters\":{\"bucket\":\"b\",\"type\":\"gcs\"},\"key\":\"gk\"},"
                 "\"protocolVersion\":\"v2\"}");
    free(c);

    /* storageUri forms: parameters from the URI laid over storage.parameters. */
    const struct {
        const char *uri, *params, *path;
    } uris[] = {
        {"s3://b1/m/x.joblib", "{\"bucket\":\"b1\",\"extra\":\"e\",\"type\":\"s3\"}", "m/x.joblib"},
        {"gs://g/p", "{\"bucket\":\"g\",\"extra\":\"e\",\"type\":\"gcs\"}", "p"},
        {"pvc://claim/models/m", "{\"extra\":\"e\",\"name\":\"claim\",\"type\":\"pvc\"}",
         "models/m"},
        {"https://acct.blob.core.windows.net/cont/p/q",
         "{\"account_name\":\"acct\",\"container\":\"cont\",\"extra\":\"e\",\"type\":\"azure\"}",
         "p/q"},
        {"http://host:8080/a/b", "{\"extra\":\"e\",\"type\":\"http\",\"url\":\"http://host:8080\"}",
         "a/b"},
    };
    for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
        char pred[512];
        snprintf(pred, sizeof(pred),
                 "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"%s\","
                 "\"storage\":{\"parameters\":{\"type\":\"gcs\",\"extra\":\"e\"}}}}",
                 uris[i].uri);
        CHECK_INT(parse(isvc_doc("u", NULL, pred), &s, &err), 0);
        CHECK_INT(s.invalid, ISVC_REASON_NONE);
        CHECK_STR(s.storage_params, uris[i].params);
        CHECK_STR(s.storage_path, uris[i].path);
        CHECK_STR(s.storage_uri, uris[i].uri);
    }

    /* The annotations older ModelMesh Serving reads. */
    const char *doc =
        "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
        "\"metadata\":{\"name\":\"an\",\"annotations\":{\"serving.kserve.io/secretKey\":\"sk\","
        "\"serving.kserve.io/schemaPath\":\"schema.json\"}},\"spec\":{\"predictor\":{\"sklearn\":"
        "{\"storageUri\":\"s3://b/p\"}}}}";
    CHECK_INT(parse(doc, &s, &err), 0);
    CHECK(!s.modelmesh);
    CHECK_STR(s.storage_key, "sk");
    CHECK_STR(s.schema_path, "schema.json");

    /* The model info: plain key, or ModelMesh Serving's JSON key. */
    struct mesh_model_info info;
    char key[1024];
    REQUIRE(parse(isvc_doc("example-mnist-isvc", NULL, MNIST_PRED), &s, &err) == 0);
    CHECK_INT(isvc_model_info(&s, &info, key, sizeof(key), &err), 0);
    CHECK_STR(info.type, "sklearn");
    CHECK_STR(info.path, "sklearn/mnist-svm.joblib");
    CHECK_STR(info.key, "localMinIO");
    CHECK_INT(mesh_check_model(s.revision, &info, &err), 0);
    /* A format name in capitals: the type registered is lower case (nodes label their types
     * so), the revision id is over the name as written. */
    REQUIRE(parse(isvc_doc("caps", NULL,
                           "{\"model\":{\"modelFormat\":{\"name\":\"SKLearn\"},"
                           "\"storage\":{\"key\":\"k\",\"path\":\"m.joblib\"}}}"),
                  &s, &err) == 0);
    CHECK_STR(s.format, "SKLearn");
    CHECK_INT(isvc_model_info(&s, &info, key, sizeof(key), &err), 0);
    CHECK_STR(info.type, "sklearn");
    char *canon = isvc_canonical_json(&s);
    REQUIRE(canon);
    CHECK(strstr(canon, "\"name\":\"SKLearn\"") != NULL);
    free(canon);
    CHECK_INT(parse(doc, &s, &err), 0);
    CHECK_INT(isvc_model_info(&s, &info, key, sizeof(key), &err), 0);
    CHECK_STR(info.key, "{\"storage_key\":\"sk\",\"storage_params\":{\"bucket\":\"b\",\"type\":"
                        "\"s3\"},\"schema_path\":\"schema.json\"}");
    CHECK_INT(mesh_check_model(s.revision, &info, &err), 0);
    struct model_record rec;
    memset(&rec, 0, sizeof(rec));
    CHECK_INT(mesh_info_record(s.revision, &info, &rec, &err), 0);
    CHECK_STR(rec.storage_key, "sk");
    CHECK_STR(rec.storage_params, "{\"bucket\":\"b\",\"type\":\"s3\"}");
    CHECK_INT(isvc_model_info(&s, &info, key, 10, &err), -ENOSPC);
    char owner[80];
    CHECK_INT(isvc_owner("ns1", owner, sizeof(owner)), 0);
    CHECK_STR(owner, "isvc:ns1");
    CHECK_INT(isvc_owner(NULL, owner, sizeof(owner)), 0);
    CHECK_STR(owner, "isvc:modelmesh-serving");
    CHECK_INT(isvc_owner("ns1", owner, 4), -ENOSPC);
}

/* ---------------------------------------------------------------- runtimes */

static char *rt_doc(const char *kind, const char *name, const char *spec)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"serving.kserve.io/v1alpha1\",\"kind\":\"%s\",\"metadata\":{"
             "\"name\":\"%s\",\"annotations\":{\"maxLoadingConcurrency\":\"2\"}},\"spec\":%s}",
             kind, name, spec);
    return buf;
}

static void rt(struct isvc_runtime *out, const char *kind, const char *name, const char *spec)
{
    struct mm_error err;
    const char *d = rt_doc(kind, name, spec);
    int rc = isvc_runtime_parse_text(d, strlen(d), out, &err);
    if (rc < 0)
        fprintf(stderr, "runtime %s: %s\n", name, err.msg);
    REQUIRE(rc == 0);
}

static void test_runtimes(void)
{
    struct isvc_runtime r[6];
    struct mm_error err;
    rt(&r[0], "ServingRuntime", "mm-sklearn",
       "{\"multiModel\":true,\"protocolVersions\":[\"grpc-v2\"],\"grpcEndpoint\":\"port:8085\","
       "\"grpcDataEndpoint\":\"port:8001\",\"supportedModelFormats\":[{\"name\":\"sklearn\","
       "\"version\":\"0\",\"autoSelect\":true}],\"containers\":[{\"name\":\"x\"}]}");
    CHECK_STR(r[0].name, "mm-sklearn");
    CHECK(!r[0].cluster && r[0].multi_model && !r[0].disabled);
    CHECK_INT(r[0].n_formats, 1);
    CHECK_STR(r[0].formats[0].version, "0");
    CHECK(r[0].formats[0].auto_select);
    CHECK_INT(r[0].n_protocols, 1);
    CHECK_STR(r[0].grpc_endpoint, "port:8085");
    CHECK_STR(r[0].grpc_data_endpoint, "port:8001");
    CHECK_INT(r[0].max_loading_concurrency, 2);
    rt(&r[1], "ClusterServingRuntime", "mm-runtime",
       "{\"multiModel\":true,\"supportedModelFormats\":[{\"name\":\"xgboost\",\"autoSelect\":"
       "true},{\"name\":\"lightgbm\"}]}");
    CHECK(r[1].cluster);
    CHECK_STR(r[1].protocols[0], "grpc-v2"); /* the default */
    rt(&r[2], "ServingRuntime", "b-xgb",
       "{\"multiModel\":true,\"protocolVersions\":[\"grpc-v1\"],\"supportedModelFormats\":[{"
       "\"name\":\"xgboost\",\"autoSelect\":true}]}");
    rt(&r[3], "ServingRuntime", "disabled-onnx",
       "{\"multiModel\":true,\"disabled\":true,\"supportedModelFormats\":[{\"name\":\"onnx\","
       "\"autoSelect\":true}]}");
    rt(&r[4], "ServingRuntime", "single-pt",
       "{\"supportedModelFormats\":[{\"name\":\"pytorch\",\"autoSelect\":true}]}");
    rt(&r[5], "ServingRuntime", "a-xgb-prio",
       "{\"multiModel\":true,\"supportedModelFormats\":[{\"name\":\"xgboost\",\"autoSelect\":"
       "true,\"priority\":5}]}");

    const struct {
        const char *pred;
        size_t n_rts;
        int rc;
        const char *chosen;
        enum isvc_reason reason;
    } cases[] = {
        /* format by name, case-insensitive */
        {"{\"model\":{\"modelFormat\":{\"name\":\"SKLearn\"},\"storageUri\":\"s3://b/p\"}}", 5, 0,
         "mm-sklearn", 0},
        /* version must match when given */
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\",\"version\":\"0\"},\"storageUri\":"
         "\"s3://b/p\"}}", 5, 0, "mm-sklearn", 0},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\",\"version\":\"1\"},\"storageUri\":"
         "\"s3://b/p\"}}", 5, -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        /* a ServingRuntime before a ClusterServingRuntime, then by name */
        {"{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},\"storageUri\":\"s3://b/p\"}}", 5, 0,
         "b-xgb", 0},
        /* the format's priority first */
        {"{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},\"storageUri\":\"s3://b/p\"}}", 6, 0,
         "a-xgb-prio", 0},
        /* protocol: grpc-v2 and v2 are one */
        {"{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},\"protocolVersion\":\"v2\","
         "\"storageUri\":\"s3://b/p\"}}", 5, 0, "mm-runtime", 0},
        {"{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},\"protocolVersion\":\"grpc-v1\","
         "\"storageUri\":\"s3://b/p\"}}", 5, 0, "b-xgb", 0},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"protocolVersion\":\"v1\","
         "\"storageUri\":\"s3://b/p\"}}", 5, -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        /* autoSelect required to be chosen without a name */
        {"{\"model\":{\"modelFormat\":{\"name\":\"lightgbm\"},\"storageUri\":\"s3://b/p\"}}", 5,
         -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        /* ... but not when named */
        {"{\"model\":{\"modelFormat\":{\"name\":\"lightgbm\"},\"runtime\":\"mm-runtime\","
         "\"storageUri\":\"s3://b/p\"}}", 5, 0, "mm-runtime", 0},
        /* disabled, single-model runtimes are never chosen */
        {"{\"model\":{\"modelFormat\":{\"name\":\"onnx\"},\"storageUri\":\"s3://b/p\"}}", 5,
         -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        {"{\"model\":{\"modelFormat\":{\"name\":\"pytorch\"},\"storageUri\":\"s3://b/p\"}}", 5,
         -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        {"{\"model\":{\"modelFormat\":{\"name\":\"onnx\"},\"runtime\":\"disabled-onnx\","
         "\"storageUri\":\"s3://b/p\"}}", 5, -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        /* an unknown format, an unknown runtime, a runtime without the format */
        {"{\"model\":{\"modelFormat\":{\"name\":\"caffe\"},\"storageUri\":\"s3://b/p\"}}", 5,
         -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"runtime\":\"nope\","
         "\"storageUri\":\"s3://b/p\"}}", 5, -ENOENT, NULL, ISVC_REASON_RUNTIME_NOT_RECOGNIZED},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"runtime\":\"mm-runtime\","
         "\"storageUri\":\"s3://b/p\"}}", 5, -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
        /* no runtimes at all */
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"s3://b/p\"}}", 0,
         -ENOTSUP, NULL, ISVC_REASON_NO_SUPPORTING_RUNTIME},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct isvc s;
        REQUIRE(parse(isvc_doc("m", NULL, cases[i].pred), &s, &err) == 0);
        size_t chosen = 99;
        enum isvc_reason reason = 99;
        mm_error_clear(&err);
        int rc = isvc_match_runtime(&s, r, cases[i].n_rts, &chosen, &reason, &err);
        if (rc != cases[i].rc)
            fprintf(stderr, "match case %zu: %d (%s)\n", i, rc, err.msg);
        CHECK_INT(rc, cases[i].rc);
        CHECK_INT(reason, cases[i].reason);
        if (cases[i].chosen && rc == 0)
            CHECK_STR(r[chosen].name, cases[i].chosen);
    }
    struct isvc s;
    REQUIRE(parse(isvc_doc("m", NULL, "{\"model\":{\"modelFormat\":{\"name\":\"caffe\"},"
                                      "\"storageUri\":\"s3://b/p\"}}"),
                  &s, &err) == 0);
    size_t chosen;
    isvc_match_runtime(&s, r, 5, &chosen, NULL, &err);
    CHECK_STR(err.msg, "No ServingRuntime supports specified model type and/or protocol");
    REQUIRE(parse(isvc_doc("m", NULL, "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},"
                                      "\"runtime\":\"nope\",\"storageUri\":\"s3://b/p\"}}"),
                  &s, &err) == 0);
    isvc_match_runtime(&s, r, 5, &chosen, NULL, &err);
    CHECK_STR(err.msg, "Specified runtime name not recognized");
    /* A ServingRuntime of another namespace is not a candidate; a cluster one is. */
    strcpy(r[0].ns, "other");
    REQUIRE(parse(isvc_doc("m", "mine", "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},"
                                        "\"storageUri\":\"s3://b/p\"}}"),
                  &s, &err) == 0);
    CHECK_INT(isvc_match_runtime(&s, r, 5, &chosen, NULL, &err), -ENOTSUP);
    strcpy(r[0].ns, "mine");
    CHECK_INT(isvc_match_runtime(&s, r, 5, &chosen, NULL, &err), 0);

    /* Refusals. */
    const struct {
        const char *kind, *spec, *msg;
    } bad[] = {
        {"InferenceService", "{}", "kind: 'InferenceService', expected ServingRuntime or"},
        {"ServingRuntime", "[]", "spec: not an object"},
        {"ServingRuntime", "{\"multiModel\":\"yes\"}", "spec.multiModel: not a boolean"},
        {"ServingRuntime", "{\"supportedModelFormats\":{}}", "spec.supportedModelFormats: not a list"},
        {"ServingRuntime", "{\"supportedModelFormats\":[{}]}",
         "spec.supportedModelFormats[0].name: missing"},
        {"ServingRuntime", "{\"supportedModelFormats\":[{\"name\":\"a\",\"autoSelect\":1}]}",
         "spec.supportedModelFormats[0].autoSelect: not a boolean"},
        {"ServingRuntime", "{\"supportedModelFormats\":[{\"name\":\"a\",\"priority\":-1}]}",
         "spec.supportedModelFormats[0].priority: not an integer"},
        {"ServingRuntime", "{\"protocolVersions\":[1]}", "spec.protocolVersions[0]: not a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct isvc_runtime x;
        const char *d = rt_doc(bad[i].kind, "x", bad[i].spec);
        mm_error_clear(&err);
        CHECK_INT(isvc_runtime_parse_text(d, strlen(d), &x, &err), -EINVAL);
        if (!strstr(err.msg, bad[i].msg)) {
            fprintf(stderr, "runtime case %zu: '%s' lacks '%s'\n", i, err.msg, bad[i].msg);
            CHECK(0);
        }
    }
    const char *many = "{\"apiVersion\":\"serving.kserve.io/v1alpha1\",\"kind\":\"ServingRuntime\","
                       "\"metadata\":{\"name\":\"x\",\"annotations\":{\"maxLoadingConcurrency\":"
                       "\"lots\"}},\"spec\":{}}";
    struct isvc_runtime x;
    CHECK_INT(isvc_runtime_parse_text(many, strlen(many), &x, &err), -EINVAL);
    CHECK(strstr(err.msg, "maxLoadingConcurrency") != NULL);
}

/* ---------------------------------------------------------------- status */

/* A small world: runtimes mm-sklearn, mm-runtime; instances; the vmodel; two models. */
struct world {
    struct isvc s;
    struct isvc_runtime rts[2];
    struct instance_record inst[2];
    struct isvc_instance_view iv[2];
    struct vmodel_record vm;
    bool has_vm;
    struct model_record mrec[2];
    struct copy_record crec[2][3];
    struct isvc_copy_view cv[2][3];
    struct isvc_model_view mv[2];
    struct isvc_world w;
};

static void world_init(struct world *wd, const char *pred)
{
    memset(wd, 0, sizeof(*wd));
    struct mm_error err;
    REQUIRE(parse(isvc_doc("example-mnist-isvc", NULL, pred), &wd->s, &err) == 0);
    rt(&wd->rts[0], "ServingRuntime", "mm-sklearn",
       "{\"multiModel\":true,\"supportedModelFormats\":[{\"name\":\"sklearn\",\"autoSelect\":"
       "true}]}");
    rt(&wd->rts[1], "ServingRuntime", "mm-runtime",
       "{\"multiModel\":true,\"supportedModelFormats\":[{\"name\":\"xgboost\",\"autoSelect\":"
       "true}]}");
    strcpy(wd->inst[0].runtime, "mm-sklearn");
    wd->inst[1].labels.n = 1;
    strcpy(wd->inst[1].labels.label[0], "rt:mm-runtime");
    wd->iv[0] = (struct isvc_instance_view){"node-a", &wd->inst[0]};
    wd->iv[1] = (struct isvc_instance_view){"node-b", &wd->inst[1]};
    wd->w.isvc = &wd->s;
    wd->w.runtimes = wd->rts;
    wd->w.n_runtimes = 2;
    wd->w.instances = wd->iv;
    wd->w.n_instances = 2;
    wd->w.now_s = 1657861185; /* 2022-07-15T04:59:45Z */
}

/* Model i has id and copies of the given states (-1 = none) on node-a, node-b, node-c. */
static void world_model(struct world *wd, int i, const char *id, int c0, int c1, int c2)
{
    int st[3] = {c0, c1, c2};
    size_t n = 0;
    strcpy(wd->mrec[i].type, "sklearn");
    static const char *iids[] = {"node-a", "node-b", "node-c"};
    for (int k = 0; k < 3; k++) {
        if (st[k] < 0)
            continue;
        memset(&wd->crec[i][n], 0, sizeof(wd->crec[i][n]));
        wd->crec[i][n].state = (enum copy_state)st[k];
        wd->crec[i][n].since_ms = 1657861000000 + k * 1000;
        if (st[k] == COPY_FAILED)
            snprintf(wd->crec[i][n].error, sizeof(wd->crec[i][n].error), "no such object %d",
                     k);
        wd->cv[i][n] = (struct isvc_copy_view){iids[k], &wd->crec[i][n]};
        n++;
    }
    wd->mv[i] = (struct isvc_model_view){id, &wd->mrec[i], wd->cv[i], n};
    if (i == 0)
        wd->w.active = &wd->mv[0];
    else
        wd->w.target = &wd->mv[1];
}

static void world_vmodel(struct world *wd, const char *active, const char *target)
{
    memset(&wd->vm, 0, sizeof(wd->vm));
    snprintf(wd->vm.active_model_id, sizeof(wd->vm.active_model_id), "%s", active);
    snprintf(wd->vm.target_model_id, sizeof(wd->vm.target_model_id), "%s", target);
    strcpy(wd->vm.owner, "isvc:modelmesh-serving");
    wd->w.vmodel = &wd->vm;
}

#define N -1
#define P COPY_PENDING
#define LG COPY_LOADING
#define LD COPY_LOADED
#define F COPY_FAILED

/* S(available, active, target, transition) and the rest, checked. */
static void expect(const char *what, const struct isvc_status *st, bool avail,
                   enum isvc_model_state act, enum isvc_model_state tgt,
                   enum isvc_transition tr, uint32_t total, uint32_t failed,
                   enum isvc_reason reason)
{
    bool ok = st->ready.status == avail && st->predictor_ready.status == avail &&
              st->active_state == act && st->target_state == tgt && st->transition == tr &&
              st->total_copies == total && st->failed_copies == failed &&
              st->failure.reason == reason;
    if (!ok)
        fprintf(stderr,
                "%s: got S(%d, %s, '%s', %s) copies %u/%u reason '%s' (%s), want S(%d, %s, '%s', "
                "%s) copies %u/%u reason '%s'\n",
                what, st->ready.status, isvc_model_state_name(st->active_state),
                isvc_model_state_name(st->target_state), isvc_transition_name(st->transition),
                st->total_copies, st->failed_copies, isvc_reason_name(st->failure.reason),
                st->failure.message, avail, isvc_model_state_name(act),
                isvc_model_state_name(tgt), isvc_transition_name(tr), total, failed,
                isvc_reason_name(reason));
    CHECK(ok);
}

static const char *SK2_PRED =
    "{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},"
    "\"storage\":{\"key\":\"localMinIO\",\"path\":\"sklearn/other.joblib\"}}}";
static const char *XGB_PRED =
    "{\"model\":{\"modelFormat\":{\"name\":\"xgboost\"},"
    "\"storage\":{\"key\":\"localMinIO\",\"path\":\"xgboost/m.json\"}}}";

static void test_status_create(void)
{
    struct world wd;
    struct isvc_status st, prev;
    const char *rev = "example-mnist-isvc__isvc-6b2eb0b8bf";

    /* Applied, nothing yet: S(false, Pending, "", UpToDate) at once. */
    world_init(&wd, MNIST_PRED);
    isvc_status_compute(&wd.w, &st);
    expect("create: nothing yet", &st, false, ISVC_STATE_PENDING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_NONE);
    CHECK_STR(st.active_model_id, rev);
    CHECK_STR(st.grpc_url, "grpc://modelmesh-serving.modelmesh-serving:8033");
    CHECK_STR(st.rest_url, "http://modelmesh-serving.modelmesh-serving:8008");
    CHECK_STR(st.url, st.grpc_url);
    CHECK_INT(st.ready.last_transition_s, wd.w.now_s);
    prev = st;

    /* The vmodel, the model registered, no copy yet. */
    world_vmodel(&wd, rev, rev);
    world_model(&wd, 0, rev, N, N, N);
    wd.w.prev = &prev;
    wd.w.now_s += 1;
    isvc_status_compute(&wd.w, &st);
    expect("create: registered", &st, false, ISVC_STATE_PENDING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_NONE);
    CHECK_INT(st.ready.last_transition_s, prev.ready.last_transition_s); /* no flip */
    CHECK(isvc_status_same(&st, &prev));
    prev = st;

    /* A copy loading. */
    world_model(&wd, 0, rev, LG, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("create: loading", &st, false, ISVC_STATE_LOADING, ISVC_STATE_NONE, ISVC_UP_TO_DATE,
           1, 0, ISVC_REASON_NONE);
    CHECK(!isvc_status_same(&st, &prev));
    prev = st;

    /* The copy gone, another not yet placed: Loading, never back to Pending. */
    world_model(&wd, 0, rev, N, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("create: forward only", &st, false, ISVC_STATE_LOADING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_NONE);
    /* A pending copy counts as loading. */
    world_model(&wd, 0, rev, P, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("create: pending copy", &st, false, ISVC_STATE_LOADING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 1, 0, ISVC_REASON_NONE);

    /* Loaded: S(true, Loaded, "", UpToDate), the conditions flip now. */
    world_model(&wd, 0, rev, LD, N, N);
    wd.w.now_s += 5;
    isvc_status_compute(&wd.w, &st);
    expect("create: loaded", &st, true, ISVC_STATE_LOADED, ISVC_STATE_NONE, ISVC_UP_TO_DATE, 1, 0,
           ISVC_REASON_NONE);
    CHECK_INT(st.ready.last_transition_s, wd.w.now_s);
    CHECK_INT(st.predictor_ready.last_transition_s, wd.w.now_s);
    prev = st;
    /* Recomputed later without change: the same (the controller writes nothing). */
    wd.w.now_s += 100;
    isvc_status_compute(&wd.w, &st);
    CHECK(isvc_status_same(&st, &prev));

    /* One copy failed, one loaded: still Loaded; failures counted. */
    world_model(&wd, 0, rev, LD, F, N);
    isvc_status_compute(&wd.w, &st);
    expect("loaded + failed copy", &st, true, ISVC_STATE_LOADED, ISVC_STATE_NONE, ISVC_UP_TO_DATE,
           2, 1, ISVC_REASON_NONE);
    /* Evicted (no copies) after being loaded: Standby, not Ready. */
    world_model(&wd, 0, rev, N, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("evicted", &st, false, ISVC_STATE_STANDBY, ISVC_STATE_NONE, ISVC_UP_TO_DATE, 0, 0,
           ISVC_REASON_NONE);

    /* A failed create: S(false, FailedToLoad, "", UpToDate) with the failure's location. */
    world_init(&wd, MNIST_PRED);
    world_vmodel(&wd, rev, rev);
    world_model(&wd, 0, rev, F, F, N);
    isvc_status_compute(&wd.w, &st);
    expect("create: failed", &st, false, ISVC_STATE_FAILED_TO_LOAD, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 2, 2, ISVC_REASON_MODEL_LOAD_FAILED);
    CHECK_STR(st.failure.location, "node-b"); /* the latest failure */
    CHECK_STR(st.failure.message, "no such object 1");
    CHECK_STR(st.failure.model_revision, rev);
    CHECK_INT(st.failure.time_s, 1657861001);
    /* The failure kept on the model record, its copies gone. */
    world_model(&wd, 0, rev, N, N, N);
    strcpy(wd.mrec[0].last_failure.message, "load timed out");
    strcpy(wd.mrec[0].last_failure.instance, "node-c");
    wd.mrec[0].last_failure.time_ms = 1657861100000;
    isvc_status_compute(&wd.w, &st);
    expect("create: failed, record", &st, false, ISVC_STATE_FAILED_TO_LOAD, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_MODEL_LOAD_FAILED);
    CHECK_STR(st.failure.location, "node-c");
    CHECK_STR(st.failure.message, "load timed out");
    CHECK_INT(st.failure.time_s, 1657861100);
}

static void test_status_runtime_unhealthy(void)
{
    struct world wd;
    struct isvc_status st;
    const char *rev = "example-mnist-isvc__isvc-6b2eb0b8bf";
    /* The walkthrough's first describe: no node of the runtime. */
    world_init(&wd, MNIST_PRED);
    wd.w.n_instances = 1;
    wd.inst[0].runtime[0] = '\0'; /* node-a no longer serves mm-sklearn */
    isvc_status_compute(&wd.w, &st);
    expect("no runtime, no vmodel", &st, false, ISVC_STATE_LOADING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_RUNTIME_UNHEALTHY);
    CHECK_STR(st.failure.message, "Waiting for runtime Pod to become available");
    CHECK_STR(st.failure.model_revision, rev);
    CHECK_STR(st.failure.location, "");
    CHECK_INT(st.failure.time_s, 0);
    world_vmodel(&wd, rev, rev);
    world_model(&wd, 0, rev, N, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("no runtime, registered", &st, false, ISVC_STATE_LOADING, ISVC_STATE_NONE,
           ISVC_UP_TO_DATE, 0, 0, ISVC_REASON_RUNTIME_UNHEALTHY);
    /* The node is shutting down: no better. */
    strcpy(wd.inst[0].runtime, "mm-sklearn");
    wd.inst[0].shutting_down = true;
    isvc_status_compute(&wd.w, &st);
    CHECK_INT(st.failure.reason, ISVC_REASON_RUNTIME_UNHEALTHY);
    /* It comes: no failure. */
    wd.inst[0].shutting_down = false;
    isvc_status_compute(&wd.w, &st);
    expect("runtime up", &st, false, ISVC_STATE_PENDING, ISVC_STATE_NONE, ISVC_UP_TO_DATE, 0, 0,
           ISVC_REASON_NONE);
    /* The runtime named by the model record is the one waited for. */
    strcpy(wd.mrec[0].runtime, "mm-runtime");
    wd.w.n_instances = 1;
    isvc_status_compute(&wd.w, &st);
    CHECK_INT(st.failure.reason, ISVC_REASON_RUNTIME_UNHEALTHY);
    wd.w.n_instances = 2; /* node-b: label rt:mm-runtime */
    isvc_status_compute(&wd.w, &st);
    CHECK_INT(st.failure.reason, ISVC_REASON_NONE);
}

static void test_status_update(void)
{
    struct world wd;
    struct isvc_status st;
    const char *old = "example-mnist-isvc__isvc-6b2eb0b8bf";
    /* The spec changed: the revision is new, the vmodel still points at the old one. */
    world_init(&wd, SK2_PRED);
    const char *rev = wd.s.revision;
    CHECK(strcmp(rev, old) != 0);
    world_vmodel(&wd, old, old);
    world_model(&wd, 0, old, LD, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("update: not yet targeted", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADING,
           ISVC_IN_PROGRESS, 1, 0, ISVC_REASON_NONE);
    CHECK_STR(st.active_model_id, old);
    CHECK_STR(st.target_model_id, rev);
    /* Targeted, loading: S(true, Loaded, Loading, InProgress), copies of both. */
    world_vmodel(&wd, old, rev);
    world_model(&wd, 1, rev, LG, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("update: loading", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADING, ISVC_IN_PROGRESS,
           2, 0, ISVC_REASON_NONE);
    /* Target loaded, not yet switched. */
    world_model(&wd, 1, rev, LD, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("update: target loaded", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADED,
           ISVC_IN_PROGRESS, 2, 0, ISVC_REASON_NONE);
    /* Switched: S(true, Loaded, "", UpToDate). */
    world_vmodel(&wd, rev, rev);
    world_model(&wd, 0, rev, LD, N, N);
    wd.w.target = NULL;
    isvc_status_compute(&wd.w, &st);
    expect("update: switched", &st, true, ISVC_STATE_LOADED, ISVC_STATE_NONE, ISVC_UP_TO_DATE, 1,
           0, ISVC_REASON_NONE);
    CHECK_STR(st.target_model_id, "");

    /* A failed update: S(true, Loaded, FailedToLoad, BlockedByFailedLoad), still available. */
    world_init(&wd, SK2_PRED);
    world_vmodel(&wd, old, wd.s.revision);
    world_model(&wd, 0, old, LD, N, N);
    world_model(&wd, 1, wd.s.revision, N, N, F);
    isvc_status_compute(&wd.w, &st);
    expect("update: failed", &st, true, ISVC_STATE_LOADED, ISVC_STATE_FAILED_TO_LOAD,
           ISVC_BLOCKED_BY_FAILED_LOAD, 2, 1, ISVC_REASON_MODEL_LOAD_FAILED);
    CHECK_STR(st.failure.location, "node-c");
    CHECK_STR(st.failure.model_revision, wd.s.revision);
    CHECK_STR(st.failure.message, "no such object 2");
    CHECK(st.failure.time_s > 0);
    /* Retried elsewhere: InProgress again. */
    world_model(&wd, 1, wd.s.revision, LG, N, F);
    isvc_status_compute(&wd.w, &st);
    expect("update: retry", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADING, ISVC_IN_PROGRESS, 3,
           1, ISVC_REASON_NONE);

    /* Format switch (sklearn -> xgboost): the new target waits for mm-runtime's node. */
    world_init(&wd, XGB_PRED);
    world_vmodel(&wd, old, wd.s.revision);
    world_model(&wd, 0, old, LD, N, N);
    world_model(&wd, 1, wd.s.revision, N, N, N);
    wd.w.n_instances = 1; /* only the sklearn node */
    isvc_status_compute(&wd.w, &st);
    expect("switch: no xgboost node", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADING,
           ISVC_IN_PROGRESS, 1, 0, ISVC_REASON_RUNTIME_UNHEALTHY);
    CHECK_STR(st.failure.model_revision, wd.s.revision);
    wd.w.n_instances = 2;
    isvc_status_compute(&wd.w, &st);
    expect("switch: xgboost node", &st, true, ISVC_STATE_LOADED, ISVC_STATE_LOADING,
           ISVC_IN_PROGRESS, 1, 0, ISVC_REASON_NONE);
}

static void test_status_invalid(void)
{
    struct world wd;
    struct isvc_status st;
    const char *old = "example-mnist-isvc__isvc-6b2eb0b8bf";
    const struct {
        const char *pred;
        enum isvc_reason reason;
        const char *msg;
    } cases[] = {
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"}}}", ISVC_REASON_INVALID_PREDICTOR_SPEC,
         "Predictor Storage field missing"},
        {"{\"model\":{\"modelFormat\":{\"name\":\"caffe\"},\"storageUri\":\"s3://b/p\"}}",
         ISVC_REASON_NO_SUPPORTING_RUNTIME,
         "No ServingRuntime supports specified model type and/or protocol"},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"runtime\":\"nope\","
         "\"storageUri\":\"s3://b/p\"}}",
         ISVC_REASON_RUNTIME_NOT_RECOGNIZED, "Specified runtime name not recognized"},
        {"{\"model\":{\"modelFormat\":{\"name\":\"sklearn\"},\"storageUri\":\"s3://b/p\","
         "\"storage\":{\"path\":\"x\"}}}",
         ISVC_REASON_INVALID_PREDICTOR_SPEC,
         "spec.predictor.model.storage: path and storageUri both set"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* On create: S(false, FailedToLoad, "", InvalidSpec). */
        world_init(&wd, cases[i].pred);
        isvc_status_compute(&wd.w, &st);
        expect(cases[i].msg, &st, false, ISVC_STATE_FAILED_TO_LOAD, ISVC_STATE_NONE,
               ISVC_INVALID_SPEC, 0, 0, cases[i].reason);
        CHECK_STR(st.failure.message, cases[i].msg);
        CHECK_STR(st.failure.model_revision, wd.s.revision);
        CHECK_STR(st.failure.location, "");
        /* On update of a serving InferenceService: the old model still serves. */
        world_vmodel(&wd, old, old);
        world_model(&wd, 0, old, LD, N, N);
        isvc_status_compute(&wd.w, &st);
        expect(cases[i].msg, &st, true, ISVC_STATE_LOADED, ISVC_STATE_FAILED_TO_LOAD,
               ISVC_INVALID_SPEC, 1, 0, cases[i].reason);
    }
    /* The vmodel belongs to another namespace's InferenceService. */
    world_init(&wd, MNIST_PRED);
    world_vmodel(&wd, old, old);
    strcpy(wd.vm.owner, "isvc:team-b");
    world_model(&wd, 0, old, LD, N, N);
    isvc_status_compute(&wd.w, &st);
    expect("foreign vmodel", &st, false, ISVC_STATE_FAILED_TO_LOAD, ISVC_STATE_NONE,
           ISVC_INVALID_SPEC, 0, 0, ISVC_REASON_INVALID_PREDICTOR_SPEC);
    CHECK_STR(st.failure.message, "vmodel example-mnist-isvc already owned by namespace team-b");
    CHECK_STR(st.active_model_id, "");
}

static void test_status_record(void)
{
    struct world wd;
    struct isvc_status st, back;
    struct mm_error err;
    const char *old = "example-mnist-isvc__isvc-6b2eb0b8bf";
    world_init(&wd, SK2_PRED);
    wd.s.generation = 3;
    world_vmodel(&wd, old, wd.s.revision);
    world_model(&wd, 0, old, LD, N, N);
    world_model(&wd, 1, wd.s.revision, N, N, F);
    isvc_status_compute(&wd.w, &st);
    char *text = isvc_status_encode(&st);
    REQUIRE(text != NULL);
    char expect_text[4096];
    snprintf(expect_text, sizeof(expect_text),
             "{\"v\":1,\"generation\":3,\"activeModelId\":\"%s\",\"targetModelId\":\"%s\","
             "\"status\":{\"conditions\":[{\"type\":\"PredictorReady\",\"status\":\"True\","
             "\"lastTransitionTime\":\"2022-07-15T04:59:45Z\"},{\"type\":\"Ready\",\"status\":"
             "\"True\",\"lastTransitionTime\":\"2022-07-15T04:59:45Z\"}],\"modelStatus\":{"
             "\"states\":{\"activeModelState\":\"Loaded\",\"targetModelState\":\"FailedToLoad\"},"
             "\"transitionStatus\":\"BlockedByFailedLoad\",\"copies\":{\"totalCopies\":2,"
             "\"failedCopies\":1},\"lastFailureInfo\":{\"reason\":\"ModelLoadFailed\","
             "\"message\":\"no such object 2\",\"modelRevisionName\":\"%s\",\"location\":"
             "\"node-c\",\"time\":\"2022-07-15T04:56:42Z\"}},\"components\":{\"predictor\":{"
             "\"grpcUrl\":\"grpc://modelmesh-serving.modelmesh-serving:8033\",\"restUrl\":"
             "\"http://modelmesh-serving.modelmesh-serving:8008\",\"url\":"
             "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}},\"url\":"
             "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}}",
             old, wd.s.revision, wd.s.revision);
    CHECK_STR(text, expect_text);
    CHECK_INT(isvc_status_decode(text, strlen(text), &back, &err), 0);
    CHECK(isvc_status_same(&st, &back));
    CHECK_INT(back.generation, 3);
    CHECK_INT(back.failure.time_s, st.failure.time_s);
    CHECK_STR(back.target_model_id, wd.s.revision);
    free(text);

    /* Without a failure: no lastFailureInfo; a custom service and namespace. */
    world_init(&wd, MNIST_PRED);
    strcpy(wd.s.ns, "team-a");
    wd.w.service = "mm";
    isvc_status_compute(&wd.w, &st);
    text = isvc_status_encode(&st);
    CHECK(strstr(text, "lastFailureInfo") == NULL);
    CHECK(strstr(text, "\"grpcUrl\":\"grpc://mm.team-a:8033\"") != NULL);
    CHECK(strstr(text, "\"targetModelState\":\"\"") != NULL);
    CHECK_INT(isvc_status_decode(text, strlen(text), &back, &err), 0);
    CHECK(isvc_status_same(&st, &back));
    free(text);

    /* Decoding refusals. */
    const char *bad[] = {
        "[]",
        "{\"v\":0,\"status\":{}}",
        "{\"v\":1}",
        "{\"v\":1,\"status\":{\"conditions\":{}}}",
        "{\"v\":1,\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"Maybe\"}]}}",
        "{\"v\":1,\"status\":{\"modelStatus\":{\"states\":{\"activeModelState\":\"Gone\"}}}}",
        "{\"v\":1,\"status\":{\"modelStatus\":{\"transitionStatus\":\"Odd\"}}}",
        "{\"v\":1,\"status\":{\"modelStatus\":{\"copies\":{\"totalCopies\":-1}}}}",
        "{\"v\":1,\"status\":{\"modelStatus\":{\"lastFailureInfo\":{\"reason\":\"Why\"}}}}",
        "{\"v\":1,\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\","
        "\"lastTransitionTime\":\"yesterday\"}]}}",
        "{\"v\":1,\"v\":2,\"status\":{}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mm_error_clear(&err);
        int rc = isvc_status_decode(bad[i], strlen(bad[i]), &back, &err);
        if (rc != -EINVAL)
            fprintf(stderr, "status case %zu: %d\n", i, rc);
        CHECK_INT(rc, -EINVAL);
        CHECK(err.msg[0] != '\0');
    }
    /* Fields we do not know are ignored (a newer writer). */
    const char *newer = "{\"v\":2,\"extra\":1,\"status\":{\"more\":[],\"modelStatus\":{"
                        "\"states\":{\"activeModelState\":\"Loaded\"}}}}";
    CHECK_INT(isvc_status_decode(newer, strlen(newer), &back, &err), 0);
    CHECK_INT(back.active_state, ISVC_STATE_LOADED);
}

static void test_names_and_times(void)
{
    enum isvc_model_state s;
    enum isvc_transition t;
    enum isvc_reason r;
    for (int i = ISVC_STATE_NONE; i <= ISVC_STATE_FAILED_TO_LOAD; i++) {
        CHECK_INT(isvc_model_state_parse(isvc_model_state_name(i), &s), 0);
        CHECK_INT(s, i);
    }
    for (int i = ISVC_UP_TO_DATE; i <= ISVC_INVALID_SPEC; i++) {
        CHECK_INT(isvc_transition_parse(isvc_transition_name(i), &t), 0);
        CHECK_INT(t, i);
    }
    for (int i = ISVC_REASON_NONE; i <= ISVC_REASON_INVALID_PREDICTOR_SPEC; i++) {
        CHECK_INT(isvc_reason_parse(isvc_reason_name(i), &r), 0);
        CHECK_INT(r, i);
    }
    CHECK_STR(isvc_model_state_name(ISVC_STATE_FAILED_TO_LOAD), "FailedToLoad");
    CHECK_STR(isvc_transition_name(ISVC_BLOCKED_BY_FAILED_LOAD), "BlockedByFailedLoad");
    CHECK_STR(isvc_reason_name(ISVC_REASON_RUNTIME_UNHEALTHY), "RuntimeUnhealthy");
    CHECK_INT(isvc_model_state_parse("loaded", &s), -EINVAL);

    char buf[32];
    isvc_time_format(1657861185, buf, sizeof(buf));
    CHECK_STR(buf, "2022-07-15T04:59:45Z");
    int64_t e;
    CHECK_INT(isvc_time_parse("2022-07-15T04:59:45Z", &e), 0);
    CHECK_INT(e, 1657861185);
    CHECK_INT(isvc_time_parse("2022-07-15T06:59:45.123+02:00", &e), 0);
    CHECK_INT(e, 1657861185);
    CHECK_INT(isvc_time_parse("2022-07-15 04:59:45Z", &e), -EINVAL);
    CHECK_INT(isvc_time_parse("2022-07-15T04:59:45", &e), -EINVAL);
    CHECK_INT(isvc_time_parse("2022-13-15T04:59:45Z", &e), -EINVAL);
    CHECK_INT(isvc_time_parse("2022-07-15T04:59:45Zjunk", &e), -EINVAL);
}

int main(void)
{
    test_check_value();
    test_refusals();
    test_invalid_specs();
    test_old_forms_and_uris();
    test_runtimes();
    test_status_create();
    test_status_runtime_unhealthy();
    test_status_update();
    test_status_invalid();
    test_status_record();
    test_names_and_times();
    return CHECK_DONE();
}
