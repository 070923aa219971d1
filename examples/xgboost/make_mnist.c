/* make_mnist.c - builds the XGBoost digits classifier of the walkthrough from data shipped in a
 * Debian package (python3-sklearn's digits.csv.gz: 1797 8x8 images, 64 pixel values 0..16 and
 * the digit, one row each, no header). Trains multi:softmax (10 classes) on the first half of
 * the rows, reports accuracy on the second half, writes OUTDIR/xgboost/mnist.json and
 * OUTDIR/xgboost/mnist-request.json (the walkthrough's sample, an "8"), and prints the sample's
 * expected prediction. Deterministic: exact trees, one thread, fixed seed.
 * usage: make-mnist OUTDIR [CSV] (CSV may be gzipped or plain; zlib reads both) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xgboost/c_api.h>
#include <zlib.h>

#define DEFAULT_CSV "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
#define FEATURES 64
#define CLASSES 10
#define MAX_ROWS 100000 /* the file is ours to trust no further than this */
#define MAX_LINE 1024
#define ROUNDS 20

/* The sample input of the KServe / ModelMesh Serving walkthrough: an 8x8 image of an "8". */
static const float sample[FEATURES] = {
    0, 0, 1,  11, 14, 15, 3,  0, 0, 1,  13, 16, 12, 16, 8,  0, 0, 8,  16, 4,  6,  16,
    5, 0, 0,  5,  15, 11, 13, 14, 0, 0, 0,  0,  2,  12, 16, 13, 0, 0,  0,  0,  0,  13,
    16, 16, 6, 0, 0,  0,  0,  16, 16, 16, 7,  0,  0,  0,  0,  11, 13, 12, 1,  0};

struct digits {
    float *x; /* n rows of FEATURES */
    float *y; /* n labels */
    int n;
};

/* Reads every row of the CSV into d; 0, or 1 with the reason printed. */
static int read_digits(const char *csv, struct digits *d)
{
    gzFile f = gzopen(csv, "rb");
    if (!f) {
        fprintf(stderr, "make-mnist: %s: %s (install python3-sklearn)\n", csv,
                errno ? strerror(errno) : "cannot open");
        return 1;
    }
    int rc = 1, cap = 0;
    char line[MAX_LINE];
    while (gzgets(f, line, sizeof(line))) {
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "make-mnist: %s: row %d is longer than %d bytes\n", csv, d->n + 1,
                    MAX_LINE - 1);
            goto out;
        }
        if (len == 0 || line[0] == '\n')
            continue;
        if (d->n == MAX_ROWS) {
            fprintf(stderr, "make-mnist: %s: more than %d rows\n", csv, MAX_ROWS);
            goto out;
        }
        if (d->n == cap) {
            cap = cap ? cap * 2 : 2048;
            float *x = realloc(d->x, sizeof(float) * FEATURES * (size_t)cap);
            if (x)
                d->x = x;
            float *y = realloc(d->y, sizeof(float) * (size_t)cap);
            if (y)
                d->y = y;
            if (!x || !y) {
                fprintf(stderr, "make-mnist: out of memory for %d rows\n", cap);
                goto out;
            }
        }
        char *p = line;
        for (int j = 0; j <= FEATURES; j++) {
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            char want = j < FEATURES ? ',' : '\n';
            if (end == p || errno || (*end != want && !(j == FEATURES && *end == '\0')) ||
                v < 0 || v > (j < FEATURES ? 16 : CLASSES - 1)) {
                fprintf(stderr,
                        "make-mnist: %s: row %d, column %d: expected %s, got \"%.20s\"\n", csv,
                        d->n + 1, j + 1, j < FEATURES ? "a pixel 0..16" : "a digit 0..9", p);
                goto out;
            }
            if (j < FEATURES)
                d->x[(size_t)d->n * FEATURES + j] = (float)v;
            else
                d->y[d->n] = (float)v;
            p = end + 1;
        }
        d->n++;
    }
    if (!gzeof(f)) {
        int zerr = 0;
        fprintf(stderr, "make-mnist: %s: %s\n", csv, gzerror(f, &zerr));
        goto out;
    }
    if (d->n < 2 * CLASSES) {
        fprintf(stderr, "make-mnist: %s: %d rows, too few to train on\n", csv, d->n);
        goto out;
    }
    rc = 0;
out:
    gzclose(f);
    return rc;
}

/* Writes the sample as a KServe V2 request (JSON form of ModelInferRequest, as mmctl infer
 * --file reads it). */
static int write_request(const char *path)
{
    FILE *rq = fopen(path, "w");
    if (!rq) {
        fprintf(stderr, "make-mnist: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(rq, "{\"inputs\":[{\"name\":\"predict\",\"shape\":[1,%d],\"datatype\":\"FP32\","
                "\"contents\":{\"fp32_contents\":[",
            FEATURES);
    for (int j = 0; j < FEATURES; j++)
        fprintf(rq, "%s%.1f", j ? "," : "", (double)sample[j]);
    fprintf(rq, "]}}]}\n");
    if (fclose(rq) != 0) {
        fprintf(stderr, "make-mnist: %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

#define XGB(call)                                                                          \
    do {                                                                                   \
        if ((call) != 0) {                                                                 \
            fprintf(stderr, "make-mnist: %s: %s\n", #call, XGBGetLastError());            \
            goto out;                                                                      \
        }                                                                                  \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: make-mnist OUTDIR [CSV (default %s)]\n", DEFAULT_CSV);
        return 2;
    }
    const char *csv = argc == 3 ? argv[2] : DEFAULT_CSV;
    struct digits d = {0};
    DMatrixHandle dtrain = NULL, dtest = NULL, dsample = NULL;
    BoosterHandle booster = NULL;
    int rc = 1;
    if (read_digits(csv, &d) != 0)
        goto out;

    /* the first half trains, the second half is held out (as the sklearn example splits) */
    int n_train = d.n / 2, n_test = d.n - n_train;
    XGB(XGDMatrixCreateFromMat(d.x, (bst_ulong)n_train, FEATURES, -1e30f, &dtrain));
    XGB(XGDMatrixSetFloatInfo(dtrain, "label", d.y, (bst_ulong)n_train));
    XGB(XGDMatrixCreateFromMat(d.x + (size_t)n_train * FEATURES, (bst_ulong)n_test, FEATURES,
                               -1e30f, &dtest));
    XGB(XGDMatrixCreateFromMat(sample, 1, FEATURES, -1e30f, &dsample));
    XGB(XGBoosterCreate(&dtrain, 1, &booster));
    XGB(XGBoosterSetParam(booster, "objective", "multi:softmax"));
    XGB(XGBoosterSetParam(booster, "num_class", "10"));
    XGB(XGBoosterSetParam(booster, "max_depth", "4"));
    XGB(XGBoosterSetParam(booster, "eta", "0.3"));
    XGB(XGBoosterSetParam(booster, "tree_method", "exact")); /* deterministic */
    XGB(XGBoosterSetParam(booster, "nthread", "1"));
    XGB(XGBoosterSetParam(booster, "seed", "0"));
    for (int r = 0; r < ROUNDS; r++)
        XGB(XGBoosterUpdateOneIter(booster, r, dtrain));

    bst_ulong len = 0;
    const float *pred = NULL;
    XGB(XGBoosterPredict(booster, dtest, 0, 0, 0, &len, &pred));
    if (len != (bst_ulong)n_test) {
        fprintf(stderr, "make-mnist: %llu predictions for %d rows\n", (unsigned long long)len,
                n_test);
        goto out;
    }
    int correct = 0;
    for (int i = 0; i < n_test; i++)
        correct += pred[i] == d.y[n_train + i];
    printf("trained on %d images, held-out accuracy %d/%d = %.3f\n", n_train, correct, n_test,
           (double)correct / n_test);
    XGB(XGBoosterPredict(booster, dsample, 0, 0, 0, &len, &pred));
    if (len != 1) {
        fprintf(stderr, "make-mnist: %llu predictions for the sample\n", (unsigned long long)len);
        goto out;
    }
    float expected = pred[0];

    char dir[4096], model[4200], request[4200];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/xgboost", argv[1]) >= sizeof(dir)) {
        fprintf(stderr, "make-mnist: %s: path too long\n", argv[1]);
        goto out;
    }
    if ((mkdir(argv[1], 0755) < 0 && errno != EEXIST) || (mkdir(dir, 0755) < 0 && errno != EEXIST)) {
        fprintf(stderr, "make-mnist: %s: %s\n", dir, strerror(errno));
        goto out;
    }
    snprintf(model, sizeof(model), "%s/mnist.json", dir);
    XGB(XGBoosterSaveModel(booster, model));
    snprintf(request, sizeof(request), "%s/mnist-request.json", dir);
    if (write_request(request) != 0)
        goto out;
    struct stat st;
    printf("wrote %s (%lld bytes)\n", model, stat(model, &st) == 0 ? (long long)st.st_size : -1LL);
    printf("request %s\n", request);
    printf("expected predict[0] = %g\n", (double)expected);
    rc = 0;
out:
    if (booster)
        XGBoosterFree(booster);
    if (dtrain)
        XGDMatrixFree(dtrain);
    if (dtest)
        XGDMatrixFree(dtest);
    if (dsample)
        XGDMatrixFree(dsample);
    free(d.x);
    free(d.y);
    return rc;
}
