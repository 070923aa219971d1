/* test_mmctl_kube.c - mmctl's kubectl verbs against a real etcd, with the status records written
 * by the test itself (no controller): apply's created / configured / unchanged and what it
 * stores (namespace, generation, uid, creationTimestamp), the walkthrough's get table, describe
 * layout and jsonpath query, -o json / yaml / name, namespaces, the Secret storage-config,
 * ServingRuntimes, delete, --watch, get/describe/delete secret, delete -f, kind: List, and bad
 * manifests refused with document, field and line
 * and nothing written. argv[1] = mmctl path. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"

static const char *mmctl;
static const char *endpoint;
static char dir[64];
static char out[1 << 17];

/* Run mmctl with args (shell-quoted), stdout and stderr captured together; the exit code. */
static int run(const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "MM_ETCD_ENDPOINTS='%s' MM_CLUSTER=k1 '%s' %s", endpoint, mmctl,
             args);
    return harness_capture(cmd, out, sizeof(out));
}

/* The same with stderr dropped: what a user's pipe sees. */
static int run_stdout(const char *args)
{
    char a[8192];
    snprintf(a, sizeof(a), "%s 2>/dev/null", args);
    return run(a);
}

#define EXPECT(args, code, fragment)                                                               \
    do {                                                                                           \
        int rc_ = run(args);                                                                       \
        CHECK_INT(rc_, code);                                                                      \
        CHECK(strstr(out, fragment) != NULL);                                                      \
        if (rc_ != (code) || !strstr(out, fragment))                                               \
            fprintf(stderr, "  mmctl %s\n  printed: %s\n  wanted: %s\n", args, out, fragment);     \
    } while (0)

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* Every line with its trailing blanks dropped (kubectl pads empty last cells). */
static void trim_lines(char *s)
{
    char *w = s;
    for (char *r = s;; r++) {
        if (*r == '\n' || *r == '\0') {
            while (w > s && w[-1] == ' ')
                w--;
        }
        *w++ = *r;
        if (!*r)
            break;
    }
}

static const char *walkthrough = HARNESS_WALKTHROUGH_ISVC;

/* The status of the walkthrough's first describe, as the controller writes it. */
static const char *loading_status =
    "{\"v\":1,\"generation\":1,\"status\":{\"conditions\":["
    "{\"type\":\"PredictorReady\",\"status\":\"False\",\"lastTransitionTime\":"
    "\"2022-07-15T04:59:45Z\"},{\"type\":\"Ready\",\"status\":\"False\",\"lastTransitionTime\":"
    "\"2022-07-15T04:59:45Z\"}],\"modelStatus\":{\"states\":{\"activeModelState\":\"Loading\","
    "\"targetModelState\":\"\"},\"transitionStatus\":\"UpToDate\",\"copies\":{\"totalCopies\":1,"
    "\"failedCopies\":0},\"lastFailureInfo\":{\"reason\":\"RuntimeUnhealthy\",\"message\":"
    "\"Waiting for runtime Pod to become available\",\"modelRevisionName\":"
    "\"example-mnist-isvc__isvc-6b2eb0b8bf\"}},\"components\":{\"predictor\":{\"grpcUrl\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\",\"restUrl\":"
    "\"http://modelmesh-serving.modelmesh-serving:8008\",\"url\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}},\"url\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}}";

static const char *ready_status =
    "{\"v\":1,\"generation\":1,\"status\":{\"conditions\":["
    "{\"type\":\"PredictorReady\",\"status\":\"True\",\"lastTransitionTime\":"
    "\"2022-07-15T04:59:50Z\"},{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
    "\"2022-07-15T04:59:50Z\"}],\"modelStatus\":{\"states\":{\"activeModelState\":\"Loaded\","
    "\"targetModelState\":\"\"},\"transitionStatus\":\"UpToDate\",\"copies\":{\"totalCopies\":1,"
    "\"failedCopies\":0}},\"components\":{\"predictor\":{\"grpcUrl\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\",\"restUrl\":"
    "\"http://modelmesh-serving.modelmesh-serving:8008\",\"url\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}},\"url\":"
    "\"grpc://modelmesh-serving.modelmesh-serving:8033\"}}";

static void put_status(const char *ns, const char *name, const char *json)
{
    char args[4096];
    snprintf(args, sizeof(args), "registry put isvc-status/%s/%s '%s'", ns, name, json);
    EXPECT(args, 0, "stored /modelmesh/k1/isvc-status/");
}

static void test_apply(void)
{
    char args[1024];
    write_file("isvc.yaml", walkthrough);
    snprintf(args, sizeof(args), "apply -f %s/isvc.yaml", dir);
    EXPECT(args, 0, "inferenceservice.serving.kserve.io/example-mnist-isvc created\n");
    /* What is stored: the object with namespace, generation 1, a uid and the time. */
    EXPECT("registry get isvcs/modelmesh-serving/example-mnist-isvc", 0, "\"generation\": 1");
    CHECK(strstr(out, "\"namespace\": \"modelmesh-serving\"") != NULL);
    CHECK(strstr(out, "\"creationTimestamp\": \"20") != NULL);
    CHECK(strstr(out, "\"uid\": \"") != NULL);
    CHECK(strstr(out, "\"v\"") == NULL);
    static char first[sizeof(out)];
    memcpy(first, out, sizeof(out));
    /* The same again: unchanged, nothing written. */
    EXPECT(args, 0, "inferenceservice.serving.kserve.io/example-mnist-isvc unchanged\n");
    EXPECT("registry get isvcs/modelmesh-serving/example-mnist-isvc", 0, "\"generation\": 1");
    CHECK_STR(out, first);
    /* From standard input, the kubectl apply -f - habit. */
    snprintf(args, sizeof(args), "apply -f - < %s/isvc.yaml", dir);
    EXPECT(args, 0, "inferenceservice.serving.kserve.io/example-mnist-isvc unchanged\n");

    /* A new path: configured, generation 2, uid and creation time kept. */
    char changed[2048];
    snprintf(changed, sizeof(changed), "%s", walkthrough);
    char *p = strstr(changed, "sklearn/mnist-svm.joblib");
    REQUIRE(p != NULL);
    memcpy(p, "sklearn/mnist-svm.joblin", 24);
    write_file("isvc2.yaml", changed);
    snprintf(args, sizeof(args), "apply -f %s/isvc2.yaml", dir);
    EXPECT(args, 0, "inferenceservice.serving.kserve.io/example-mnist-isvc configured\n");
    EXPECT("registry get isvcs/modelmesh-serving/example-mnist-isvc", 0, "\"generation\": 2");
    const char *uid = strstr(first, "\"uid\": \""), *ts = strstr(first, "\"creationTimestamp\"");
    REQUIRE(uid && ts);
    char want[128];
    snprintf(want, sizeof(want), "%.46s", uid);
    CHECK(strstr(out, want) != NULL);
    snprintf(want, sizeof(want), "%.43s", ts);
    CHECK(strstr(out, want) != NULL);
    /* Labels only: configured, the generation stays (it counts spec changes). */
    p = strstr(changed, "  annotations:");
    REQUIRE(p != NULL);
    memmove(p + 20, p, strlen(p) + 1);
    memcpy(p, "  labels: {team: a}\n", 20);
    write_file("isvc3.yaml", changed);
    snprintf(args, sizeof(args), "apply -f %s/isvc3.yaml", dir);
    EXPECT(args, 0, "example-mnist-isvc configured\n");
    EXPECT("registry get isvcs/modelmesh-serving/example-mnist-isvc", 0, "\"generation\": 2");
    CHECK(strstr(out, "\"team\": \"a\"") != NULL);
    /* Back to the walkthrough's spec: configured, generation 3. */
    snprintf(args, sizeof(args), "apply -f %s/isvc.yaml", dir);
    EXPECT(args, 0, "example-mnist-isvc configured\n");
    EXPECT("registry get isvcs/modelmesh-serving/example-mnist-isvc", 0, "\"generation\": 3");
}

static void test_get_describe(void)
{
    /* No status yet: the row with empty URL and READY. */
    CHECK_INT(run_stdout("get isvc"), 0);
    const char *bare = "NAME                 URL   READY   PREV   LATEST   PREVROLLEDOUTREVISION   "
                       "LATESTREADYREVISION   AGE\nexample-mnist-isvc   ";
    CHECK(strncmp(out, bare, strlen(bare)) == 0);
    if (strncmp(out, bare, strlen(bare)) != 0)
        fprintf(stderr, "  printed:\n%s", out);

    put_status("modelmesh-serving", "example-mnist-isvc", loading_status);
    /* The walkthrough's jsonpath query, in both spellings. */
    CHECK_INT(run_stdout("get isvc example-mnist-isvc "
                         "-o=jsonpath='{.status.components.predictor.grpcUrl}'"),
              0);
    CHECK_STR(out, "grpc://modelmesh-serving.modelmesh-serving:8033");
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o "
                         "jsonpath='{.status.components.predictor.grpcUrl}'"),
              0);
    CHECK_STR(out, "grpc://modelmesh-serving.modelmesh-serving:8033");
    /* The describe of step 2, Status part, word for word. */
    CHECK_INT(run_stdout("describe isvc example-mnist-isvc"), 0);
    trim_lines(out);
    const char *status_part = "Status:\n"
                              "  Components:\n"
                              "    Predictor:\n"
                              "      Grpc URL:  grpc://modelmesh-serving.modelmesh-serving:8033\n"
                              "      Rest URL:  http://modelmesh-serving.modelmesh-serving:8008\n"
                              "      URL:       grpc://modelmesh-serving.modelmesh-serving:8033\n"
                              "  Conditions:\n"
                              "    Last Transition Time:  2022-07-15T04:59:45Z\n"
                              "    Status:                False\n"
                              "    Type:                  PredictorReady\n"
                              "    Last Transition Time:  2022-07-15T04:59:45Z\n"
                              "    Status:                False\n"
                              "    Type:                  Ready\n"
                              "  Model Status:\n"
                              "    Copies:\n"
                              "      Failed Copies:  0\n"
                              "      Total Copies:   1\n"
                              "    Last Failure Info:\n"
                              "      Message:              Waiting for runtime Pod to become "
                              "available\n"
                              "      Model Revision Name:  example-mnist-isvc__isvc-6b2eb0b8bf\n"
                              "      Reason:               RuntimeUnhealthy\n"
                              "    States:\n"
                              "      Active Model State:  Loading\n"
                              "      Target Model State:\n"
                              "    Transition Status:     UpToDate\n"
                              "  URL:                     "
                              "grpc://modelmesh-serving.modelmesh-serving:8033\n"
                              "Events:                    <none>\n";
    CHECK(strstr(out, status_part) != NULL);
    const char *head = "Name:         example-mnist-isvc\n"
                       "Namespace:    modelmesh-serving\n"
                       "Labels:       <none>\n"
                       "Annotations:  serving.kserve.io/deploymentMode: ModelMesh\n"
                       "API Version:  serving.kserve.io/v1beta1\n"
                       "Kind:         InferenceService\n"
                       "Metadata:\n"
                       "  Creation Timestamp:  20";
    CHECK(strncmp(out, head, strlen(head)) == 0);
    CHECK(strstr(out, "  Generation:          3\n  UID:                 ") != NULL);
    CHECK(strstr(out, "Spec:\n  Predictor:\n    Model:\n      Model Format:\n        Name:  "
                      "sklearn\n      Storage:\n        Key:   localMinIO\n        Path:  "
                      "sklearn/mnist-svm.joblib\n") != NULL);
    if (!strstr(out, status_part))
        fprintf(stderr, "  describe printed:\n%s", out);

    /* Ready: the table of step 4, word for word up to AGE. */
    put_status("modelmesh-serving", "example-mnist-isvc", ready_status);
    CHECK_INT(run_stdout("get isvc"), 0);
    /* After True: the empty cells of PREV .. LATESTREADYREVISION, 66 blanks in all. */
    char table[512];
    snprintf(
        table, sizeof(table),
        "NAME                 URL                                               READY   PREV   "
        "LATEST   PREVROLLEDOUTREVISION   LATESTREADYREVISION   AGE\n"
        "example-mnist-isvc   grpc://modelmesh-serving.modelmesh-serving:8033   True%66s",
        "");
    CHECK(strncmp(out, table, strlen(table)) == 0);
    if (strncmp(out, table, strlen(table)) != 0)
        fprintf(stderr, "  get printed:\n%s  wanted:\n%s\n", out, table);
    const char *age = out + strlen(table);
    CHECK(age[0] >= '0' && age[0] <= '9' && strchr(age, 's') != NULL);
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o wide"), 0);
    CHECK(strncmp(out, table, strlen(table)) == 0);

    /* The other forms. */
    EXPECT("get isvc example-mnist-isvc -o json", 0, "\"kind\": \"InferenceService\"");
    CHECK(strstr(out, "\"transitionStatus\": \"UpToDate\"") != NULL);
    EXPECT("get isvc -o json", 0, "\"kind\": \"List\"");
    CHECK(strstr(out, "\"items\": [") != NULL && strstr(out, "\"activeModelState\": \"Loaded\""));
    /* Keys sorted at every level, as kubectl prints. */
    EXPECT("get isvc example-mnist-isvc -o yaml", 0,
           "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n"
           "  annotations:\n    serving.kserve.io/deploymentMode: ModelMesh\n"
           "  creationTimestamp: ");
    CHECK(strstr(out, "  name: example-mnist-isvc\n  namespace: modelmesh-serving\n") != NULL);
    CHECK(strstr(out, "status:\n  components:\n") != NULL);
    CHECK(strstr(out, "  conditions:\n  - lastTransitionTime: 2022-07-15T04:59:50Z\n"
                      "    status: \"True\"\n    type: PredictorReady\n") != NULL);
    if (!strstr(out, "    status: \"True\"\n"))
        fprintf(stderr, "  -o yaml printed:\n%s", out);
    CHECK_INT(run_stdout("get isvc -o name"), 0);
    CHECK_STR(out, "inferenceservice.serving.kserve.io/example-mnist-isvc\n");

    /* The jsonpath subset. */
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o jsonpath='{.status.conditions[*].type}'"),
              0);
    CHECK_STR(out, "PredictorReady Ready");
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o "
                         "jsonpath='{.status.conditions[-1].status}{\"\\n\"}'"),
              0);
    CHECK_STR(out, "True\n");
    CHECK_INT(
        run_stdout("get isvc example-mnist-isvc -o "
                   "jsonpath=\"{.metadata.annotations['serving.kserve.io/deploymentMode']}\""),
        0);
    CHECK_STR(out, "ModelMesh");
    CHECK_INT(run_stdout("get isvc -o jsonpath='{range .items[*]}{.metadata.name}:"
                         "{.status.modelStatus.copies.totalCopies}{\"\\n\"}{end}'"),
              0);
    CHECK_STR(out, "example-mnist-isvc:1\n");
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o jsonpath='{.status.nothing}'"), 0);
    CHECK_STR(out, "");
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o jsonpath='{.spec.predictor.model}'"), 0);
    CHECK_STR(out, "{\"modelFormat\":{\"name\":\"sklearn\"},\"storage\":{\"key\":\"localMinIO\","
                   "\"path\":\"sklearn/mnist-svm.joblib\"}}");
    CHECK_INT(run_stdout("get isvc example-mnist-isvc -o jsonpath=.metadata.name"), 0);
    CHECK_STR(out, "example-mnist-isvc");
    EXPECT("get isvc example-mnist-isvc -o jsonpath='{.status.conditions[?(@.type==\"Ready\")]}'",
           1, "filters and slices are not supported");
    EXPECT("get isvc example-mnist-isvc -o jsonpath='{range .items[*]}{.x}'", 1,
           "{range} without {end}");
    EXPECT("get isvc -o table", 2, "unable to match a printer");

    /* Not found, and an empty namespace. */
    EXPECT("get isvc nope", 1,
           "Error from server (NotFound): inferenceservices.serving.kserve.io \"nope\" not found");
    EXPECT("describe isvc nope", 1, "\"nope\" not found");
    EXPECT("get isvc -n elsewhere", 0, "No resources found in elsewhere namespace.");
    EXPECT("get pods", 2, "doesn't have a resource type \"pods\"");
}

static void test_namespaces(void)
{
    char args[1024];
    snprintf(args, sizeof(args), "apply -n team-a -f %s/isvc.yaml", dir);
    EXPECT(args, 0, "example-mnist-isvc created\n");
    EXPECT("registry get isvcs/team-a/example-mnist-isvc", 0, "\"namespace\": \"team-a\"");
    CHECK_INT(run_stdout("get isvc --namespace team-a -o name"), 0);
    CHECK_STR(out, "inferenceservice.serving.kserve.io/example-mnist-isvc\n");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "MM_NAMESPACE=team-a MM_ETCD_ENDPOINTS='%s' MM_CLUSTER=k1 '%s' get "
             "isvc -o jsonpath='{.items[0].metadata.namespace}'",
             endpoint, mmctl);
    harness_capture(cmd, out, sizeof(out));
    CHECK_STR(out, "team-a");
    /* The object's namespace against -n: kubectl's refusal. */
    char ns[4096];
    snprintf(ns, sizeof(ns), "%s", walkthrough);
    char *p = strstr(ns, "  annotations:");
    REQUIRE(p != NULL);
    memmove(p + 17, p, strlen(p) + 1);
    memcpy(p, "  namespace: t-b\n", 17);
    write_file("ns.yaml", ns);
    snprintf(args, sizeof(args), "apply -n team-a -f %s/ns.yaml", dir);
    EXPECT(args, 1,
           "the namespace from the provided object \"t-b\" does not match the "
           "namespace \"team-a\"");
    snprintf(args, sizeof(args), "apply -f %s/ns.yaml", dir);
    EXPECT(args, 0, "example-mnist-isvc created");
    EXPECT("registry get isvcs/t-b/example-mnist-isvc", 0, "\"namespace\": \"t-b\"");
    EXPECT("delete isvc example-mnist-isvc -n t-b", 0,
           "inferenceservice.serving.kserve.io \"example-mnist-isvc\" deleted");
}

static void test_bad_manifests(void)
{
    char args[1024];
    /* Document 2 is bad: document 1 must not be written either. */
    write_file("bad.yaml", "apiVersion: serving.kserve.io/v1beta1\n"                        /* 1 */
                           "kind: InferenceService\n"                                       /* 2 */
                           "metadata:\n"                                                    /* 3 */
                           "  name: good-one\n"                                             /* 4 */
                           "  annotations: {serving.kserve.io/deploymentMode: ModelMesh}\n" /* 5 */
                           "spec: {predictor: {model: {modelFormat: {name: sklearn}, storage: "
                           "{key: k, path: p}}}}\n"                            /* 6 */
                           "---\n"                                             /* 7 */
                           "apiVersion: serving.kserve.io/v1beta1\n"           /* 8 */
                           "kind: InferenceService\n"                          /* 9 */
                           "metadata:\n"                                       /* 10 */
                           "  name: bad-one\n"                                 /* 11 */
                           "  annotations:\n"                                  /* 12 */
                           "    serving.kserve.io/deploymentMode: ModelMesh\n" /* 13 */
                           "spec:\n"                                           /* 14 */
                           "  predictor:\n"                                    /* 15 */
                           "    model:\n"                                      /* 16 */
                           "      modelFormat:\n"                              /* 17 */
                           "        name: [sklearn]\n"                         /* 18 */
                           "      storage: {key: k, path: p}\n");              /* 19 */
    snprintf(args, sizeof(args), "apply -f %s/bad.yaml", dir);
    EXPECT(args, 1,
           "document 2 (InferenceService bad-one), line 18: "
           "spec.predictor.model.modelFormat.name");
    CHECK(strstr(out, "nothing applied") != NULL);
    CHECK(strstr(out, "created") == NULL);
    EXPECT("get isvc good-one", 1, "not found");
    EXPECT("registry dump --prefix isvcs/modelmesh-serving/good", 0, "0 records");

    /* YAML that is not: the line and column. */
    write_file("syntax.yaml", "kind: InferenceService\nmetadata:\n  name: x\n  labels: [a\n"
                              "spec: {}\n");
    snprintf(args, sizeof(args), "apply -f %s/syntax.yaml", dir);
    EXPECT(args, 1, "syntax.yaml: document 1, line 5, column");
    /* A key twice. */
    write_file("dup.yaml", "---\nkind: Secret\n---\nkind: InferenceService\nmetadata:\n"
                           "  name: x\n  name: y\n");
    snprintf(args, sizeof(args), "apply -f %s/dup.yaml", dir);
    EXPECT(args, 1, "document 2, line 7: the key 'name' appears twice");
    /* Kinds not kept, a missing kind, a list that is not a manifest, no annotation. */
    write_file("kind.yaml", "a: 1\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    snprintf(args, sizeof(args), "apply -f %s/kind.yaml", dir);
    EXPECT(args, 1, "document 1, line 1: kind: missing is not kept here");
    CHECK(strstr(out, "document 2, line 4: kind: \"Pod\" is not kept here") != NULL);
    write_file("list.yaml", "- a\n- b\n");
    snprintf(args, sizeof(args), "apply -f %s/list.yaml", dir);
    EXPECT(args, 1, "document 1, line 1: not an object");
    write_file("serverless.yaml", "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
                                  "metadata:\n  name: sl\nspec: {predictor: {model: {modelFormat:"
                                  " {name: sklearn}, storageUri: 's3://b/p'}}}\n");
    snprintf(args, sizeof(args), "apply -f %s/serverless.yaml", dir);
    EXPECT(args, 1,
           "(InferenceService sl), line 3: metadata.annotations: "
           "serving.kserve.io/deploymentMode must be ModelMesh");
    /* Nothing to apply, no file, a file too large. */
    write_file("empty.yaml", "# nothing\n---\n");
    snprintf(args, sizeof(args), "apply -f %s/empty.yaml", dir);
    EXPECT(args, 1, "no objects passed to apply");
    snprintf(args, sizeof(args), "apply -f %s/none.yaml", dir);
    EXPECT(args, 1, "none.yaml: No such file or directory");
    EXPECT("apply", 2, "apply needs -f FILE");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "head -c 5000000 /dev/zero | tr '\\0' 'a' > %s/big.yaml", dir);
    REQUIRE(system(cmd) == 0);
    snprintf(args, sizeof(args), "apply -f %s/big.yaml", dir);
    EXPECT(args, 1, "larger than 4194304 bytes");
    /* A billion laughs: refused at the bound, quickly. */
    write_file("laughs.yaml", "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                              "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c]\n"
                              "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e]\n"
                              "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g]\n");
    snprintf(args, sizeof(args), "apply -f %s/laughs.yaml", dir);
    long long t0 = harness_now_ms();
    EXPECT(args, 1, "nodes (aliases count as their copies)");
    CHECK(harness_now_ms() - t0 < 5000);
}

static void test_secret_and_runtimes(void)
{
    char args[1024];
    write_file("secret.yaml",
               "apiVersion: v1\nkind: Secret\nmetadata:\n  name: storage-config\n"
               "stringData:\n  localMinIO: |\n    {\"type\": \"s3\", \"access_key\": "
               "\"AKIAIOSFODNN7EXAMPLE\", \"secret_access_key\": "
               "\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\", \"endpoint_url\": "
               "\"http://minio:9000\", \"bucket\": \"modelmesh-example-models\"}\n");
    snprintf(args, sizeof(args), "apply -f %s/secret.yaml", dir);
    EXPECT(args, 0, "secret/storage-config created\n");
    EXPECT("registry get storage-config/localMinIO", 0, "\"bucket\": \"modelmesh-example-models\"");
    EXPECT(args, 0, "secret/storage-config unchanged\n");
    /* data (base64) instead: the old key goes, the new one comes. */
    write_file("secret2.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: storage-config}\n"
                               "data:\n  other: eyJ0eXBlIjogInB2YyIsICJuYW1lIjogInYifQ==\n");
    snprintf(args, sizeof(args), "apply -f %s/secret2.yaml", dir);
    EXPECT(args, 0, "secret/storage-config configured\n");
    EXPECT("registry get storage-config/other", 0, "\"type\": \"pvc\"");
    EXPECT("registry get storage-config/localMinIO", 1, "no record");
    /* Values that are not one JSON object, bad base64, another Secret. */
    write_file("secret3.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: storage-config}\n"
                               "stringData:\n  k1: '{\"type\": \"s3\"}'\n  k2: not json\n");
    snprintf(args, sizeof(args), "apply -f %s/secret3.yaml", dir);
    EXPECT(args, 1,
           "document 1 (Secret storage-config), line 6: stringData[\"k2\"]: not a JSON "
           "object");
    EXPECT("registry get storage-config/k1", 1, "no record");
    write_file("secret4.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: storage-config}\n"
                               "data:\n  k1: '!!!'\n");
    snprintf(args, sizeof(args), "apply -f %s/secret4.yaml", dir);
    EXPECT(args, 1, "line 5: data[\"k1\"]: not base64");
    write_file("secret5.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: mine\n");
    snprintf(args, sizeof(args), "apply -f %s/secret5.yaml", dir);
    EXPECT(args, 1, "line 4: metadata.name: the only Secret kept here is storage-config");

    /* A ServingRuntime and a ClusterServingRuntime in one file. */
    write_file("rt.yaml",
               "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata:\n"
               "  name: mm-sklearn\nspec:\n  supportedModelFormats:\n"
               "    - name: sklearn\n      version: \"1\"\n      autoSelect: true\n"
               "  multiModel: true\n  protocolVersions: [grpc-v2]\n"
               "  grpcEndpoint: \"port:8085\"\n  grpcDataEndpoint: \"port:8001\"\n"
               "  containers:\n    - name: sklearn-runtime\n      image: local\n"
               "---\n"
               "apiVersion: serving.kserve.io/v1alpha1\nkind: ClusterServingRuntime\nmetadata:\n"
               "  name: mm-runtime\nspec:\n  supportedModelFormats:\n"
               "    - {name: xgboost, autoSelect: true}\n  multiModel: true\n");
    snprintf(args, sizeof(args), "apply -f %s/rt.yaml", dir);
    EXPECT(args, 0,
           "servingruntime.serving.kserve.io/mm-sklearn created\n"
           "clusterservingruntime.serving.kserve.io/mm-runtime created\n");
    EXPECT(args, 0,
           "servingruntime.serving.kserve.io/mm-sklearn unchanged\n"
           "clusterservingruntime.serving.kserve.io/mm-runtime unchanged\n");
    EXPECT("registry get runtimes/mm-sklearn", 0, "\"kind\": \"ServingRuntime\"");
    CHECK_INT(run_stdout("get servingruntimes"), 0);
    const char *head = "NAME         DISABLED   MODELTYPE   CONTAINERS        AGE\n"
                       "mm-sklearn              sklearn     sklearn-runtime   ";
    CHECK(strncmp(out, head, strlen(head)) == 0);
    if (strncmp(out, head, strlen(head)) != 0)
        fprintf(stderr, "  get servingruntimes printed:\n%s", out);
    CHECK_INT(run_stdout("get clusterservingruntimes -o name"), 0);
    CHECK_STR(out, "clusterservingruntime.serving.kserve.io/mm-runtime\n");
    CHECK_INT(run_stdout("get servingruntime mm-sklearn -o "
                         "jsonpath='{.spec.supportedModelFormats[0].version}'"),
              0);
    CHECK_STR(out, "1");
    EXPECT("delete clusterservingruntime mm-sklearn", 1, "not found");
    EXPECT("delete clusterservingruntime mm-runtime", 0,
           "clusterservingruntime.serving.kserve.io \"mm-runtime\" deleted");
}

/* The watch's output so far into out: its rows naming example-mnist-isvc. */
static int read_watch(const char *log)
{
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    if (f)
        fclose(f);
    out[n] = '\0';
    int rows = 0;
    for (char *p = out; (p = strstr(p, "\nexample-mnist-isvc")); p++)
        rows++;
    return rows;
}

static void test_watch(void)
{
    char cmd[2048], log[128];
    snprintf(log, sizeof(log), "%s/watch.out", dir);
    snprintf(cmd, sizeof(cmd),
             "MM_ETCD_ENDPOINTS='%s' MM_CLUSTER=k1 '%s' get isvc --watch >%s 2>&1 & echo $!",
             endpoint, mmctl, log);
    REQUIRE(harness_capture(cmd, out, sizeof(out)) == 0);
    pid_t pid = (pid_t)atol(out);
    REQUIRE(pid > 0);
    /* The table first, then one line per change. */
    bool listed = false, changed = false, gone = false;
    long long deadline = harness_now_ms() + 10000;
    int step = 0;
    while (harness_now_ms() < deadline && !gone) {
        usleep(100 * 1000);
        int rows = read_watch(log);
        listed = strstr(out, "NAME") && strstr(out, "example-mnist-isvc");
        if (listed && step == 0) {
            /* another namespace's status, inside the key range the watch reads: no row */
            put_status("other-ns", "example-mnist-isvc", loading_status);
            put_status("modelmesh-serving", "example-mnist-isvc", loading_status);
            step = 1;
        }
        char *second = strstr(out, "\nexample-mnist-isvc");
        changed = second && strstr(second + 1, "\nexample-mnist-isvc") && strstr(out, "False");
        if (changed && step == 1) {
            EXPECT("delete isvc example-mnist-isvc", 0, "deleted");
            step = 2;
        }
        /* A row for the delete (its last state) after the change. */
        gone = step == 2 && rows >= 3;
    }
    /* nothing more comes: exactly the list, the change and the delete */
    usleep(300 * 1000);
    int rows = read_watch(log);
    CHECK(listed);
    CHECK(changed);
    CHECK(gone);
    CHECK_INT(rows, 3);
    if (!gone || rows != 3)
        fprintf(stderr, "  watch printed:\n%s\n", out);
    kill(pid, SIGTERM);
    harness_wait_pid(pid, 2000);
}

/* The Secret storage-config as kubectl shows a Secret: the table, -o json|yaml|name|jsonpath
 * (data base64 of each entry's JSON, which decodes to what was applied), describe (sizes, never
 * values), delete; what get prints applies back unchanged. */
static void test_secret_verbs(void)
{
    char args[1024];
    const char *minio = "{\"type\": \"s3\", \"access_key\": \"AKIAIOSFODNN7EXAMPLE\", "
                        "\"secret_access_key\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\", "
                        "\"endpoint_url\": \"http://127.0.0.1:9000\", \"bucket\": "
                        "\"modelmesh-example-models\"}";
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "apiVersion: v1\nkind: Secret\nmetadata:\n  name: storage-config\n"
             "stringData:\n  localMinIO: '%s'\n"
             "data:\n  other: eyJ0eXBlIjogInB2YyIsICJuYW1lIjogInYifQ==\n",
             minio);
    write_file("sv.yaml", yaml);
    snprintf(args, sizeof(args), "apply -f %s/sv.yaml", dir);
    EXPECT(args, 0, "secret/storage-config configured\n"); /* "other" was there already */

    CHECK_INT(run_stdout("get secrets"), 0);
    CHECK_STR(out, "NAME             TYPE     DATA   AGE\n"
                   "storage-config   Opaque   2      <unknown>\n");
    CHECK_INT(run_stdout("get secret storage-config -o name"), 0);
    CHECK_STR(out, "secret/storage-config\n");
    CHECK_INT(run_stdout("get secrets -o name"), 0);
    CHECK_STR(out, "secret/storage-config\n");
    /* kubectl's shape, keys sorted; data is base64 of the stored entry, byte for byte. */
    CHECK_INT(run_stdout("-n team-a get secret storage-config -o json"), 0);
    CHECK_STR(out, "{\n  \"apiVersion\": \"v1\",\n  \"data\": {\n"
                   "    \"localMinIO\": \"eyJ0eXBlIjogInMzIiwgImFjY2Vzc19rZXkiOiAiQUtJQUlPU0ZPRE5O"
                   "N0VYQU1QTEUiLCAic2VjcmV0X2FjY2Vzc19rZXkiOiAid0phbHJYVXRuRkVNSS9LN01ERU5HL2JQeFJm"
                   "aUNZRVhBTVBMRUtFWSIsICJlbmRwb2ludF91cmwiOiAiaHR0cDovLzEyNy4wLjAuMTo5MDAwIiwgImJ1"
                   "Y2tldCI6ICJtb2RlbG1lc2gtZXhhbXBsZS1tb2RlbHMifQ==\",\n"
                   "    \"other\": \"eyJ0eXBlIjogInB2YyIsICJuYW1lIjogInYifQ==\"\n  },\n"
                   "  \"kind\": \"Secret\",\n  \"metadata\": {\n    \"name\": \"storage-config\",\n"
                   "    \"namespace\": \"team-a\"\n  },\n  \"type\": \"Opaque\"\n}\n");
    /* The walkthrough's decode: jsonpath of .data.KEY through base64 -d gives the entry. */
    CHECK_INT(run_stdout("get secret storage-config -o jsonpath='{.data.localMinIO}' | base64 -d"),
              0);
    CHECK_STR(out, minio);
    CHECK_INT(run_stdout("get secret storage-config -o=jsonpath='{.data.other}'"), 0);
    CHECK_STR(out, "eyJ0eXBlIjogInB2YyIsICJuYW1lIjogInYifQ==");
    CHECK_INT(run_stdout("get secret storage-config -o jsonpath='{.data.nokey}'"), 0);
    CHECK_STR(out, "");
    /* What get prints is a manifest: -o yaml (the object) and -o json (a List) apply back. */
    snprintf(args, sizeof(args), "get secret storage-config -o yaml > %s/back.yaml", dir);
    CHECK_INT(run_stdout(args), 0);
    snprintf(args, sizeof(args), "apply -f %s/back.yaml", dir);
    EXPECT(args, 0, "secret/storage-config unchanged\n");
    snprintf(args, sizeof(args), "get secrets -o json > %s/back.json", dir);
    CHECK_INT(run_stdout(args), 0);
    snprintf(args, sizeof(args), "apply -f %s/back.json", dir);
    EXPECT(args, 0, "secret/storage-config unchanged\n");
    /* describe: kubectl's layout, the sizes and never a value. */
    CHECK_INT(run_stdout("describe secret storage-config"), 0);
    char want[1024];
    snprintf(want, sizeof(want),
             "Name:         storage-config\nNamespace:    modelmesh-serving\n"
             "Labels:       <none>\nAnnotations:  <none>\n\nType:  Opaque\n\nData\n====\n"
             "localMinIO:  %zu bytes\nother:       28 bytes\n",
             strlen(minio));
    CHECK_STR(out, want);
    CHECK(strstr(out, "EXAMPLEKEY") == NULL);
    /* Other names: not found, as kubectl says it. */
    EXPECT("get secret mine", 1, "Error from server (NotFound): secrets \"mine\" not found");
    EXPECT("describe secret mine", 1, "secrets \"mine\" not found");
    EXPECT("delete secret mine", 1, "secrets \"mine\" not found");
    EXPECT("registry get storage-config/other", 0, "pvc");
    EXPECT("get secret -w", 2, "--watch goes with get isvc");
    EXPECT("describe secret", 2, "usage: mmctl describe secret NAME");
    EXPECT("get secret storage-config -o wide", 0, "storage-config   Opaque   2      <unknown>");
    /* delete: every key, in one request; then there is no Secret. */
    EXPECT("delete secret storage-config", 0, "secret \"storage-config\" deleted\n");
    EXPECT("registry dump --prefix storage-config/", 0, "0 records");
    EXPECT("get secrets", 0, "No resources found in modelmesh-serving namespace.");
    CHECK_INT(run_stdout("get secrets -o json"), 0);
    CHECK(strstr(out, "\"items\": []") != NULL);
    EXPECT("get secret storage-config", 1, "secrets \"storage-config\" not found");
    EXPECT("describe secret storage-config", 1, "secrets \"storage-config\" not found");
    EXPECT("delete secret storage-config", 1, "secrets \"storage-config\" not found");
}

/* kind: List in apply and delete -f: every object of a file, each checked before anything is
 * written or deleted; errors name the document, the item, the line. */
static void test_delete_file_and_list(void)
{
    char args[1024];
    const char *objects =
        "apiVersion: v1\n"                                                      /* 1 */
        "kind: List\n"                                                          /* 2 */
        "items:\n"                                                              /* 3 */
        "- apiVersion: serving.kserve.io/v1beta1\n"                             /* 4 */
        "  kind: InferenceService\n"                                            /* 5 */
        "  metadata:\n"                                                         /* 6 */
        "    name: list-a\n"                                                    /* 7 */
        "    annotations: {serving.kserve.io/deploymentMode: ModelMesh}\n"      /* 8 */
        "  spec:\n"                                                             /* 9 */
        "    predictor:\n"                                                      /* 10 */
        "      model:\n"                                                        /* 11 */
        "        modelFormat: {name: sklearn}\n"                                /* 12 */
        "        storage: {key: k, path: p}\n"                                  /* 13 */
        "- apiVersion: serving.kserve.io/v1alpha1\n"                            /* 14 */
        "  kind: ServingRuntime\n"                                              /* 15 */
        "  metadata: {name: list-rt}\n"                                         /* 16 */
        "  spec: {supportedModelFormats: [{name: sklearn}], multiModel: true}\n" /* 17 */
        "- apiVersion: v1\n"                                                    /* 18 */
        "  kind: Secret\n"                                                      /* 19 */
        "  metadata: {name: storage-config}\n"                                  /* 20 */
        "  stringData: {k: '{\"type\": \"pvc\", \"name\": \"v\"}'}\n"           /* 21 */
        "---\n"                                                                 /* 22 */
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n  name: list-b\n  namespace: team-b\n"
        "  annotations: {serving.kserve.io/deploymentMode: ModelMesh}\n"
        "spec: {predictor: {model: {modelFormat: {name: sklearn}, storage: {key: k, path: p}}}}\n";
    write_file("objs.yaml", objects);
    snprintf(args, sizeof(args), "apply -f %s/objs.yaml", dir);
    EXPECT(args, 0,
           "inferenceservice.serving.kserve.io/list-a created\n"
           "servingruntime.serving.kserve.io/list-rt created\n"
           "secret/storage-config created\n"
           "inferenceservice.serving.kserve.io/list-b created\n");
    EXPECT(args, 0, "list-a unchanged\n");
    put_status("modelmesh-serving", "list-a", ready_status);

    /* One bad object in the file: nothing is deleted. */
    char bad[4096];
    snprintf(bad, sizeof(bad), "%s---\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: p}\n",
             objects);
    write_file("objs-bad.yaml", bad);
    snprintf(args, sizeof(args), "delete -f %s/objs-bad.yaml", dir);
    EXPECT(args, 1, "objs-bad.yaml: document 3, items[0], line 33: kind: \"Pod\" is not kept");
    CHECK(strstr(out, "nothing deleted") != NULL);
    CHECK(strstr(out, "\" deleted") == NULL);
    EXPECT("registry get isvcs/modelmesh-serving/list-a", 0, "list-a");
    EXPECT("registry get storage-config/k", 0, "pvc");
    /* A List item's error: its line inside the item. */
    char item_bad[2048];
    snprintf(item_bad, sizeof(item_bad), "%.*s        modelFormat: {name: [sklearn]}\n%s",
             (int)(strstr(objects, "        modelFormat") - objects), objects,
             strstr(objects, "        storage:"));
    write_file("item-bad.yaml", item_bad);
    snprintf(args, sizeof(args), "apply -f %s/item-bad.yaml", dir);
    EXPECT(args, 1,
           "document 1, items[0] (InferenceService list-a), line 12: "
           "spec.predictor.model.modelFormat.name");
    CHECK(strstr(out, "nothing applied") != NULL);
    /* Lists that are not. */
    write_file("list-bad.yaml", "kind: List\nitems: {a: 1}\n---\nkind: List\nitems:\n- 5\n"
                                "- kind: List\n  items: []\n");
    snprintf(args, sizeof(args), "delete -f %s/list-bad.yaml", dir);
    EXPECT(args, 1, "document 1 (List), line 2: items: not a sequence of objects");
    CHECK(strstr(out, "document 2, items[0], line 6: not an object") != NULL);
    CHECK(strstr(out, "document 2, items[1] (List), line 7: kind: a List inside a List") != NULL);
    write_file("list-empty.yaml", "apiVersion: v1\nkind: List\nitems: []\n");
    snprintf(args, sizeof(args), "delete -f %s/list-empty.yaml", dir);
    EXPECT(args, 1, "no objects passed to delete");
    /* delete -f checks the namespace as apply does, and names objects only by kind and name. */
    write_file("ns.yaml", "kind: InferenceService\nmetadata: {name: list-b, namespace: team-b}\n");
    snprintf(args, sizeof(args), "delete -n team-c -f - < %s/ns.yaml", dir);
    EXPECT(args, 1,
           "<stdin>: document 1 (InferenceService list-b), line 2: the namespace from the "
           "provided object \"team-b\" does not match the namespace \"team-c\"");
    write_file("mine.yaml", "kind: Secret\nmetadata: {name: mine}\n");
    snprintf(args, sizeof(args), "delete -f %s/mine.yaml", dir);
    EXPECT(args, 1, "line 2: metadata.name: the only Secret kept here is storage-config");
    EXPECT("registry get isvcs/team-b/list-b", 0, "list-b");

    /* Every object, in the file's order; the status goes with its isvc. */
    snprintf(args, sizeof(args), "delete -f - < %s/objs.yaml", dir);
    EXPECT(args, 0,
           "inferenceservice.serving.kserve.io \"list-a\" deleted\n"
           "servingruntime.serving.kserve.io \"list-rt\" deleted\n"
           "secret \"storage-config\" deleted\n"
           "inferenceservice.serving.kserve.io \"list-b\" deleted\n");
    EXPECT("registry dump --prefix isvcs/modelmesh-serving/list-", 0, "0 records");
    EXPECT("registry dump --prefix isvcs/team-b/", 0, "0 records");
    EXPECT("registry dump --prefix isvc-status/modelmesh-serving/list-", 0, "0 records");
    EXPECT("registry dump --prefix storage-config/", 0, "0 records");
    EXPECT("registry get runtimes/list-rt", 1, "no record");
    /* Again: each one not found, the others still tried, exit 1. */
    snprintf(args, sizeof(args), "delete -f %s/objs.yaml", dir);
    EXPECT(args, 1, "inferenceservices.serving.kserve.io \"list-a\" not found");
    CHECK(strstr(out, "servingruntimes.serving.kserve.io \"list-rt\" not found") != NULL);
    CHECK(strstr(out, "secrets \"storage-config\" not found") != NULL);
    CHECK(strstr(out, "inferenceservices.serving.kserve.io \"list-b\" not found") != NULL);
    /* Usage. */
    snprintf(args, sizeof(args), "delete -f %s/objs.yaml isvc list-a", dir);
    EXPECT(args, 2, "usage: mmctl delete -f FILE|- (or delete TYPE NAME, not both)");
    EXPECT("get isvc -f x", 2, "-f goes with apply and delete");
}

static void test_delete(void)
{
    EXPECT("delete isvc example-mnist-isvc", 1,
           "Error from server (NotFound): inferenceservices.serving.kserve.io "
           "\"example-mnist-isvc\" not found");
    EXPECT("registry get isvc-status/modelmesh-serving/example-mnist-isvc", 1, "no record");
    EXPECT("delete isvc", 2, "usage: mmctl delete isvc NAME");
    EXPECT("describe isvc", 2, "usage");
    EXPECT("get isvc -w -o name x y", 2, "usage: mmctl get isvc");
    EXPECT("registry dump -n x", 2, "-n, -f and -w go with apply");
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    mmctl = argv[1];
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, NULL) == 0);
    endpoint = etcd.endpoint;
    snprintf(dir, sizeof(dir), "/tmp/mm-kube-XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    test_apply();
    test_get_describe();
    test_namespaces();
    test_bad_manifests();
    test_secret_and_runtimes();
    test_watch();
    test_secret_verbs();
    test_delete_file_and_list();
    test_delete();
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    harness_etcd_cleanup(&etcd);
    return CHECK_DONE();
}
