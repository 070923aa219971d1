/* test_xgb_check.c - the checks mm-runtime runs on a model file before XGBoost reads it, on
 * models XGBoost itself writes (gbtree, dart, multi-class; JSON, UBJSON and the legacy binary
 * format): every one passes and loads, every truncation is refused; gblinear models (which
 * mm-runtime cannot predict) are refused; crafted files declaring more than they hold are
 * refused, naming what. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xgboost/c_api.h>

#include "check.h"
#include "mm/xgb.h"

#define ROWS 60
#define FEATURES 5

static const struct xgb_limits limits = {.max_file_bytes = 1u << 30, .max_features = 1u << 24};

/* A model trained on a fixed synthetic set, saved in format ("json", "ubj", "deprecated"). */
static unsigned char *model_bytes(const char *booster, const char *objective, const char *format,
                                  size_t *len)
{
    static float x[ROWS * FEATURES], y[ROWS];
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < FEATURES; j++)
            x[i * FEATURES + j] = (float)((i * 7 + j * 13) % 17) / 4.0f;
        y[i] = (float)(i % 3);
        if (strcmp(objective, "binary:logistic") == 0)
            y[i] = (float)(i % 2);
    }
    DMatrixHandle d;
    BoosterHandle b;
    REQUIRE(XGDMatrixCreateFromMat(x, ROWS, FEATURES, -1e30f, &d) == 0);
    REQUIRE(XGDMatrixSetFloatInfo(d, "label", y, ROWS) == 0);
    REQUIRE(XGBoosterCreate(&d, 1, &b) == 0);
    REQUIRE(XGBoosterSetParam(b, "booster", booster) == 0);
    REQUIRE(XGBoosterSetParam(b, "objective", objective) == 0);
    if (strncmp(objective, "multi:", 6) == 0)
        REQUIRE(XGBoosterSetParam(b, "num_class", "3") == 0);
    REQUIRE(XGBoosterSetParam(b, "max_depth", "3") == 0);
    REQUIRE(XGBoosterSetParam(b, "nthread", "1") == 0);
    REQUIRE(XGBoosterSetAttr(b, "note", "an attribute") == 0); /* legacy: extra attrs */
    for (int r = 0; r < 4; r++)
        REQUIRE(XGBoosterUpdateOneIter(b, r, d) == 0);
    char config[64];
    snprintf(config, sizeof(config), "{\"format\":\"%s\"}", format);
    bst_ulong n = 0;
    const char *buf = NULL;
    if (XGBoosterSaveModelToBuffer(b, config, &n, &buf) != 0) {
        fprintf(stderr, "save %s %s as %s: %s\n", booster, objective, format, XGBGetLastError());
        REQUIRE(0);
    }
    unsigned char *copy = malloc(n);
    REQUIRE(copy);
    memcpy(copy, buf, n);
    XGBoosterFree(b);
    XGDMatrixFree(d);
    *len = n;
    return copy;
}

static int load_file(const unsigned char *bytes, size_t len, const char *suffix,
                     struct mm_error *err)
{
    char path[128];
    snprintf(path, sizeof(path), "/tmp/mm-xgb-check-%d%s", (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(bytes, 1, len, f) == len && fclose(f) == 0);
    struct xgb_model *m = NULL;
    int rc = xgb_model_load(path, &limits, &m, err);
    xgb_model_free(m);
    unlink(path);
    return rc;
}

static void one_model(const char *booster, const char *objective, const char *format)
{
    size_t len = 0;
    unsigned char *bytes = model_bytes(booster, objective, format, &len);
    struct mm_error err = {0};
    int rc = xgb_check_model(bytes, len, &limits, &err);
    if (rc != 0)
        fprintf(stderr, "%s %s %s: %s\n", booster, objective, format, err.msg);
    CHECK_INT(rc, 0);
    rc = load_file(bytes, len, strcmp(format, "json") == 0 ? ".json" : ".bin", &err);
    if (rc != 0)
        fprintf(stderr, "%s %s %s: %s\n", booster, objective, format, err.msg);
    CHECK_INT(rc, 0);
    /* every truncation is refused (trailing bytes may be cut from JSON text only if they are
     * space: XGBoost writes none) */
    int passed = 0;
    for (size_t cut = 0; cut < len; cut++)
        passed += xgb_check_model(bytes, cut, &limits, &err) == 0;
    if (passed)
        fprintf(stderr, "%s %s %s: %d truncations pass\n", booster, objective, format, passed);
    CHECK_INT(passed, 0);
    free(bytes);
}

static void refused(const char *what, const void *bytes, size_t len, const char *fragment)
{
    struct mm_error err = {0};
    int rc = xgb_check_model(bytes, len, &limits, &err);
    if (rc != -EINVAL || !strstr(err.msg, fragment))
        fprintf(stderr, "%s: %d '%s', wanted '%s'\n", what, rc, err.msg, fragment);
    CHECK(rc == -EINVAL && strstr(err.msg, fragment));
}

int main(void)
{
    const char *formats[] = {"json", "ubj", "deprecated"};
    for (int f = 0; f < 3; f++) {
        one_model("gbtree", "binary:logistic", formats[f]);
        one_model("gbtree", "multi:softprob", formats[f]);
        one_model("dart", "reg:squarederror", formats[f]);
        size_t len = 0;
        unsigned char *linear = model_bytes("gblinear", "reg:squarederror", formats[f], &len);
        refused("a gblinear model", linear, len, "gblinear");
        free(linear);
    }

    /* A legacy binary file declaring an 8 GiB objective name in 160 bytes. */
    unsigned char crafted[160] = {0};
    crafted[4] = 30;      /* features */
    crafted[136 + 4] = 2; /* length 8 GiB = 2^33, little-endian */
    refused("an 8 GiB string", crafted, sizeof(crafted), "declares 8589934592 items");
    crafted[136 + 4] = 0;
    crafted[4] = 0xff, crafted[5] = 0xff, crafted[6] = 0xff, crafted[7] = 0x7f;
    refused("2^31 features", crafted, sizeof(crafted), "features, more than");
    const char trees[] = "{\"learner\":{\"gradient_booster\":{\"model\":{\"gbtree_model_param\":"
                         "{\"num_trees\":\"2147483647\"}}}}}";
    refused("2^31 trees", trees, sizeof(trees) - 1, "declares 2147483647 trees");
    const char classes[] = "{\"learner\":{\"learner_model_param\":{\"num_class\":\"100000000\"}}}";
    refused("10^8 classes", classes, sizeof(classes) - 1, "classes, more than 65536");
    const unsigned char ubj[] = {'{', 'L', 0, 0, 0, 0, 0, 0, 0, 1, 'a', '[', '$', 'd', '#',
                                 'L', 0,   0, 0, 2, 0, 0, 0, 0, 0, 0,   0,   0,   '}'};
    refused("an 8 GiB typed array", ubj, sizeof(ubj), "more than the");
    const unsigned char ff[] = {'{', 'L', 0, 0, 0, 0, 0, 0, 0, 1, 'a', '[', 0xff, ']', '}'};
    refused("a 0xff marker (XGBoost reads it as the end)", ff, sizeof(ff), "marker");
    char deep[300];
    memset(deep, '[', sizeof(deep));
    memcpy(deep, "{\"a\":", 5);
    refused("deep nesting", deep, sizeof(deep), "nesting deeper than 64");
    refused("an empty file", "", 0, "empty");
    refused("a JSON string with a raw newline", "{\"a\":\"x\ny\"}", 11, "control character");
    return CHECK_DONE();
}
