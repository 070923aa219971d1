/* test_mmctl_serving.c - mmctl's gRPC verbs (infer, metadata, runtime ...) against both real
 * runtime processes, with the example models made at test time: answers printed as JSON, and
 * clear errors with exit code 1 (the call failed) or 2 (usage).
 * argv: MMCTL MM_RUNTIME MAKE_BREAST_CANCER PYTHON SERVER_PY MAKE_MNIST_SVM_PY */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "harness.h"

static const char *mmctl;
static char out[65536];

/* Run mmctl with args (shell-quoted), capturing what it prints; returns its exit code. */
static int run(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s' %s", mmctl, args);
    return harness_capture(cmd, out, sizeof(out));
}

/* Run mmctl with args, the request json (no single quotes) on its standard input. */
static int run_with_input(const char *json, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "printf '%%s' '%s' | '%s' %s", json, mmctl, args);
    return harness_capture(cmd, out, sizeof(out));
}

#define EXPECT_IN(json, args, code, fragment)                                                      \
    do {                                                                                           \
        int rc_ = run_with_input(json, args);                                                      \
        CHECK_INT(rc_, code);                                                                      \
        CHECK(strstr(out, fragment) != NULL);                                                      \
        if (rc_ != (code) || !strstr(out, fragment))                                               \
            fprintf(stderr, "  mmctl %s < %s\n  printed: %s\n  wanted: %s\n", args, json, out,     \
                    fragment);                                                                     \
    } while (0)

#define EXPECT(args, code, fragment)                                                               \
    do {                                                                                           \
        int rc_ = run(args);                                                                       \
        CHECK_INT(rc_, code);                                                                      \
        CHECK(strstr(out, fragment) != NULL);                                                      \
        if (rc_ != (code) || !strstr(out, fragment))                                               \
            fprintf(stderr, "  mmctl %s\n  printed: %s\n  wanted: %s\n", args, out, fragment);     \
    } while (0)

/* The first number of the first "data" array in out. */
static bool first_datum(double *v)
{
    const char *d = strstr(out, "\"data\": [");
    char *end = NULL;
    if (!d)
        return false;
    *v = strtod(d + 9, &end);
    return end != d + 9;
}

/* Run a model maker; return the value after "expected predict[0] = " in what it prints. */
static double maker_expects(const char *cmd)
{
    static char said[8192];
    REQUIRE(harness_capture(cmd, said, sizeof(said)) == 0);
    const char *e = strstr(said, "expected predict[0] = ");
    REQUIRE(e != NULL);
    return strtod(e + 22, NULL);
}

static pid_t start(char *const argv[], char *address, size_t size)
{
    pid_t pid = 0;
    int port = 0;
    REQUIRE(harness_spawn_listening(argv, 60000, &pid, &port) == 0);
    snprintf(address, size, "127.0.0.1:%d", port);
    return pid;
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 7);
    mmctl = argv[1];
    char dir[] = "/tmp/mm-mmctl-XXXXXX", cmd[4096], a[4096], addr[64];
    REQUIRE(mkdtemp(dir) != NULL);

    /* mm-runtime with the breast-cancer model. */
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", argv[3], dir);
    double bc_expected = maker_expects(cmd);
    char *const xgb_args[] = {argv[2], "--listen", "127.0.0.1:0", NULL};
    pid_t xgb = start(xgb_args, addr, sizeof(addr));
    snprintf(a, sizeof(a), "--address %s runtime status --purge", addr);
    EXPECT(a, 0, "\"status\": \"READY\"");
    CHECK(strstr(out, "\"capacityInBytes\": 1073741824") != NULL);
    CHECK(strstr(out, "\"runtimeVersion\": \"mm-runtime ") != NULL);
    CHECK(strstr(out, "\"maxLoadingConcurrency\": 1") != NULL);
    snprintf(a, sizeof(a),
             "--address %s runtime load bc %s/xgboost/breast-cancer.json --type xgboost", addr,
             dir);
    EXPECT(a, 0, "\"sizeInBytes\": ");
    snprintf(a, sizeof(a), "--address %s runtime size bc", addr);
    EXPECT(a, 0, "\"sizeInBytes\": ");
    /* runtime status purges (the SPI's runtimeStatus unloads every model): without --purge it
     * says so and calls nothing, and the model stays loaded. */
    snprintf(a, sizeof(a), "--address %s runtime status", addr);
    EXPECT(a, 2,
           "runtime status calls the runtime SPI's runtimeStatus, and a runtime answers it "
           "by unloading every model it has loaded");
    CHECK(strstr(out, "add --purge") != NULL);
    CHECK(strstr(out, "\"status\"") == NULL);
    snprintf(a, sizeof(a), "--address %s runtime size bc", addr);
    EXPECT(a, 0, "\"sizeInBytes\": ");
    snprintf(a, sizeof(a), "--address %s infer bc --file %s/xgboost/breast-cancer-request.json",
             addr, dir);
    EXPECT(a, 0, "\"datatype\": \"FP32\"");
    snprintf(a, sizeof(a), "--address %s runtime size bc --purge", addr);
    EXPECT(a, 2, "--purge goes with runtime status only");
    snprintf(a, sizeof(a), "--address %s runtime size nope", addr);
    EXPECT(a, 1, "modelSize nope at 127.0.0.1:");
    CHECK(strstr(out, "NOT_FOUND: model nope is not loaded") != NULL);
    snprintf(a, sizeof(a), "--address %s infer bc --file %s/xgboost/breast-cancer-request.json",
             addr, dir);
    EXPECT(a, 0, "\"datatype\": \"FP32\"");
    double v = 0;
    CHECK(first_datum(&v) && (float)v == (float)bc_expected);
    fprintf(stderr, "mmctl infer bc: %.9g, the maker expected %.9g\n", v, bc_expected);
    /* The same request from standard input, and the model's metadata. */
    snprintf(a, sizeof(a), "--address %s infer bc < %s/xgboost/breast-cancer-request.json", addr,
             dir);
    EXPECT(a, 0, "\"name\": \"predict\"");
    CHECK(first_datum(&v) && (float)v == (float)bc_expected);
    snprintf(a, sizeof(a), "--address %s metadata bc", addr);
    EXPECT(a, 0, "\"platform\": \"xgboost\"");
    CHECK(strstr(out, "\"shape\": [-1, 30]") != NULL);

    /* Errors: the call, where, the status and the server's message; exit 1. */
    snprintf(a, sizeof(a), "--address %s infer nope --file %s/xgboost/breast-cancer-request.json",
             addr, dir);
    EXPECT(a, 1, "ModelInfer nope at 127.0.0.1:");
    CHECK(strstr(out, "NOT_FOUND: model nope is not loaded") != NULL);
    snprintf(a, sizeof(a), "--address %s infer bc", addr);
    EXPECT_IN("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,3],"
              "\"data\":[1,2,3]}]}",
              a, 1, "INVALID_ARGUMENT: input 'x': expected shape [-1, 30], got [1, 3]");
    EXPECT_IN("{\"inputs\":[", a, 1, "standard input: request is not JSON");
    EXPECT_IN("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,2],\"data\":[1]}]}",
              a, 1, "input 'x': 1 values for shape [1, 2], which needs 2");
    EXPECT_IN("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP33\",\"shape\":[1],\"data\":[1]}]}", a,
              1, "unknown datatype 'FP33'");
    snprintf(a, sizeof(a), "--address %s infer bc --file %s/nonexistent.json", addr, dir);
    EXPECT(a, 1, "nonexistent.json: No such file or directory");
    snprintf(a, sizeof(a), "--address %s runtime load x /nonexistent/m.json --type xgboost", addr);
    EXPECT(a, 1, "loadModel x at 127.0.0.1:");
    CHECK(strstr(out, "NOT_FOUND") && strstr(out, "/nonexistent/m.json"));
    snprintf(a, sizeof(a),
             "--address %s runtime load x %s/xgboost/breast-cancer.json --type sklearn", addr, dir);
    EXPECT(a, 1, "serves xgboost models, not 'sklearn'");
    EXPECT("--address 127.0.0.1:1 runtime status --purge", 1,
           "runtimeStatus at 127.0.0.1:1: UNAVAILABLE");
    EXPECT("--address 127.0.0.1:1 --timeout 300 metadata m", 1, "ModelMetadata m at 127.0.0.1:1");
    /* What a server says back, and what mmctl repeats of its command line, reaches the terminal
     * escaped: an id with ESC and a C1 CSI. */
    snprintf(a, sizeof(a), "--address %s runtime size \"$(printf 'm\\033[2Jx\\302\\233')\"", addr);
    EXPECT(a, 1, "modelSize m\\x1b[2Jx\\xc2\\x9b at 127.0.0.1:");
    CHECK(strchr(out, '\033') == NULL && strstr(out, "\302\233") == NULL);
    snprintf(a, sizeof(a), "--address %s metadata \"$(printf 'm\\033]0;t\\007')\"", addr);
    EXPECT(a, 1, "ModelMetadata m\\x1b]0;t\\x07 at");
    CHECK(strchr(out, '\033') == NULL && strchr(out, '\007') == NULL);
    EXPECT("runtime \"$(printf 'st\\033[1matus')\"", 2, "unknown runtime verb 'st\\x1b[1matus'");
    CHECK(strchr(out, '\033') == NULL);

    /* Usage errors: exit 2, saying what was wrong. */
    EXPECT("runtime frob", 2, "unknown runtime verb 'frob'");
    EXPECT("runtime load x", 2, "runtime load takes 2 arguments");
    EXPECT("infer", 2, "infer takes one MODEL");
    EXPECT("frob x", 2, "unknown command 'frob'");

    /* Unload: then inference is NOT_FOUND. */
    snprintf(a, sizeof(a), "--address %s runtime unload bc", addr);
    EXPECT(a, 0, "{");
    snprintf(a, sizeof(a), "--address %s infer bc --file %s/xgboost/breast-cancer-request.json",
             addr, dir);
    EXPECT(a, 1, "NOT_FOUND: model bc is not loaded");
    /* With --purge, status does unload: loaded before, gone after. */
    snprintf(a, sizeof(a),
             "--address %s runtime load bc %s/xgboost/breast-cancer.json --type xgboost", addr,
             dir);
    EXPECT(a, 0, "\"sizeInBytes\": ");
    snprintf(a, sizeof(a), "--address %s runtime status --purge", addr);
    EXPECT(a, 0, "\"status\": \"READY\"");
    snprintf(a, sizeof(a), "--address %s runtime size bc", addr);
    EXPECT(a, 1, "NOT_FOUND");
    int status = harness_stop_pid(xgb, 10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The sklearn runtime with the walkthrough's MNIST SVM and KServe's sample request, whose
     * gRPC-JSON form ("contents": {"fp32_contents": ...}) mmctl takes as it is: the digit 8. */
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", argv[4], argv[6], dir);
    double digit = maker_expects(cmd);
    CHECK(digit == 8);
    char *const skl_args[] = {argv[4],       argv[5], "--listen", "127.0.0.1:0",
                              "--log-level", "error", NULL};
    pid_t skl = start(skl_args, addr, sizeof(addr));
    snprintf(a, sizeof(a),
             "--address %s runtime load mnist %s/sklearn/mnist-svm.joblib --type sklearn", addr,
             dir);
    EXPECT(a, 0, "\"sizeInBytes\": ");
    snprintf(a, sizeof(a), "--address %s infer mnist --file %s/sklearn/mnist-svm-request.json",
             addr, dir);
    EXPECT(a, 0, "\"datatype\": \"INT64\"");
    CHECK(first_datum(&v) && v == digit);
    snprintf(a, sizeof(a), "--address %s metadata mnist", addr);
    EXPECT(a, 0, "\"platform\": \"sklearn\"");
    status = harness_stop_pid(skl, 15000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
