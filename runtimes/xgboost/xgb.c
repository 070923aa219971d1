/* xgb.c - XGBoost models through the C API (see xgb.h). */
#include "mm/xgb.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xgboost/c_api.h>

struct xgb_model {
    BoosterHandle booster;
    size_t features;
    size_t outputs; /* values per row predicted: learnt at load */
    uint64_t size;
};

static bool model_file_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcmp(dot, ".json") == 0 || strcmp(dot, ".ubj") == 0 ||
                   strcmp(dot, ".bin") == 0 || strcmp(dot, ".model") == 0 ||
                   strcmp(dot, ".bst") == 0);
}

/* A file path, or the single model file inside a directory. */
static int resolve(const char *path, char *out, size_t size, struct mm_error *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return mm_error_set(err, -ENOENT, "model path %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        snprintf(out, size, "%s", path);
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return mm_error_set(err, -ENOENT, "model directory %s: %s", path, strerror(errno));
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !model_file_name(e->d_name))
            continue;
        if (found++ == 0)
            snprintf(out, size, "%s/%s", path, e->d_name);
    }
    closedir(d);
    if (found == 0)
        return mm_error_set(err, -ENOENT,
                            "model directory %s holds no .json, .ubj, .bin, .bst or .model file",
                            path);
    if (found > 1)
        return mm_error_set(err, -EINVAL, "model directory %s holds %d model files, expected one",
                            path, found);
    return 0;
}

int xgb_model_load(const char *path, struct xgb_model **out, struct mm_error *err)
{
    char file[4096];
    int rc = resolve(path, file, sizeof(file), err);
    if (rc < 0)
        return rc;
    struct xgb_model *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_error_set(err, -ENOMEM, "out of memory loading %s", path);
    bst_ulong features = 0, len = 0;
    const char *buf = NULL;
    if (XGBoosterCreate(NULL, 0, &m->booster) != 0 ||
        XGBoosterLoadModel(m->booster, file) != 0 ||
        XGBoosterGetNumFeature(m->booster, &features) != 0) {
        rc = mm_error_set(err, -EINVAL, "cannot load XGBoost model %s: %s", file,
                          XGBGetLastError());
        goto fail;
    }
    if (features == 0) {
        rc = mm_error_set(err, -EINVAL, "XGBoost model %s has no features", file);
        goto fail;
    }
    /* nthread 1 per prediction: concurrency comes from several requests, not one. */
    XGBoosterSetParam(m->booster, "nthread", "1");
    if (XGBoosterSerializeToBuffer(m->booster, &len, &buf) != 0) {
        rc = mm_error_set(err, -EINVAL, "cannot measure XGBoost model %s: %s", file,
                          XGBGetLastError());
        goto fail;
    }
    m->features = (size_t)features;
    m->size = (uint64_t)len;
    /* One row of missing values tells how many values a row predicts (k for a k-class softprob
     * model), so that metadata and empty batches are right before the first request. */
    float *probe = malloc(m->features * sizeof(float)), *result = NULL;
    if (!probe) {
        rc = mm_error_set(err, -ENOMEM, "out of memory loading %s", path);
        goto fail;
    }
    for (size_t i = 0; i < m->features; i++)
        probe[i] = NAN;
    m->outputs = 1;
    rc = xgb_model_predict(m, probe, 1, &result, &m->outputs, err);
    free(probe);
    free(result);
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    xgb_model_free(m);
    return rc;
}

void xgb_model_free(struct xgb_model *m)
{
    if (!m)
        return;
    if (m->booster)
        XGBoosterFree(m->booster);
    free(m);
}

size_t xgb_model_features(const struct xgb_model *m)
{
    return m->features;
}

size_t xgb_model_outputs(const struct xgb_model *m)
{
    return m->outputs;
}

uint64_t xgb_model_size(const struct xgb_model *m)
{
    return m->size;
}

int xgb_model_predict(struct xgb_model *m, const float *rows, size_t n_rows, float **out,
                      size_t *out_per_row, struct mm_error *err)
{
    if (n_rows == 0) { /* an empty batch: nothing to ask XGBoost (which may answer NULL) */
        *out = malloc(1);
        *out_per_row = m->outputs;
        return *out ? 0 : mm_error_set(err, -ENOMEM, "out of memory for 0 predictions");
    }
    char array[256];
    snprintf(array, sizeof(array),
             "{\"data\":[%llu,true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
             (unsigned long long)(uintptr_t)rows, n_rows, m->features);
    static const char config[] = "{\"type\":0,\"training\":false,\"iteration_begin\":0,"
                                 "\"iteration_end\":0,\"strict_shape\":false,\"missing\":NaN,"
                                 "\"cache_id\":0}";
    const bst_ulong *shape = NULL;
    bst_ulong dim = 0;
    const float *result = NULL;
    if (XGBoosterPredictFromDense(m->booster, array, config, NULL, &shape, &dim, &result) != 0)
        return mm_error_set(err, -EINVAL, "XGBoost prediction failed: %s", XGBGetLastError());
    size_t total = 1;
    for (bst_ulong i = 0; i < dim; i++)
        total *= (size_t)shape[i];
    size_t per_row = total / n_rows;
    float *copy = malloc(total ? total * sizeof(float) : 1);
    if (!copy)
        return mm_error_set(err, -ENOMEM, "out of memory for %zu predictions", total);
    memcpy(copy, result, total * sizeof(float)); /* result lives in thread-local storage */
    *out = copy;
    *out_per_row = per_row ? per_row : 1;
    return 0;
}

int xgb_path_size(const char *path, uint64_t *out)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -ENOENT;
    if (!S_ISDIR(st.st_mode)) {
        *out = (uint64_t)st.st_size;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return -ENOENT;
    uint64_t sum = 0;
    struct dirent *e;
    char file[4096];
    while ((e = readdir(d))) {
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        if (e->d_name[0] != '.' && stat(file, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    *out = sum;
    return 0;
}
