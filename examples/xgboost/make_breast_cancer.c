/* make_breast_cancer.c - builds the XGBoost example model from data shipped in a Debian package
 * (python3-sklearn's breast_cancer.csv: 569 rows, 30 features, label 0 = malignant, 1 = benign).
 * Trains binary:logistic on two thirds of the rows, reports accuracy on the other third, writes
 * OUTDIR/xgboost/breast-cancer.json and OUTDIR/xgboost/breast-cancer-request.json (a KServe V2
 * request for the first held-out row), and prints that row's expected prediction.
 * usage: make-breast-cancer OUTDIR [CSV] */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xgboost/c_api.h>

#define DEFAULT_CSV "/usr/lib/python3/dist-packages/sklearn/datasets/data/breast_cancer.csv"
#define ROUNDS 30

#define XGB(call)                                                                          \
    do {                                                                                   \
        if ((call) != 0) {                                                                 \
            fprintf(stderr, "make-breast-cancer: %s: %s\n", #call, XGBGetLastError());    \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: make-breast-cancer OUTDIR [CSV (default %s)]\n", DEFAULT_CSV);
        return 2;
    }
    const char *csv = argc == 3 ? argv[2] : DEFAULT_CSV;
    FILE *f = fopen(csv, "r");
    if (!f) {
        fprintf(stderr, "make-breast-cancer: %s: %s (install python3-sklearn)\n", csv,
                strerror(errno));
        return 1;
    }
    int n = 0, nf = 0;
    if (fscanf(f, "%d,%d,%*[^\n]\n", &n, &nf) != 2 || n <= 0 || nf <= 0 || nf > 1000) {
        fprintf(stderr, "make-breast-cancer: %s: unexpected header\n", csv);
        return 1;
    }
    float *x = malloc(sizeof(float) * (size_t)n * (size_t)nf);
    float *y = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < nf; j++) {
            if (fscanf(f, "%f,", &x[(size_t)i * nf + j]) != 1) {
                fprintf(stderr, "make-breast-cancer: %s: row %d is short\n", csv, i + 1);
                return 1;
            }
        }
        if (fscanf(f, "%f\n", &y[i]) != 1) {
            fprintf(stderr, "make-breast-cancer: %s: row %d has no label\n", csv, i + 1);
            return 1;
        }
    }
    fclose(f);

    /* rows i % 3 != 2 train, the rest are held out */
    int n_train = 0, n_test = 0;
    float *xtr = malloc(sizeof(float) * (size_t)n * nf), *ytr = malloc(sizeof(float) * n);
    float *xte = malloc(sizeof(float) * (size_t)n * nf), *yte = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) {
        bool test = i % 3 == 2;
        float *dst = test ? xte + (size_t)n_test * nf : xtr + (size_t)n_train * nf;
        memcpy(dst, x + (size_t)i * nf, sizeof(float) * nf);
        if (test)
            yte[n_test++] = y[i];
        else
            ytr[n_train++] = y[i];
    }

    DMatrixHandle dtrain, dtest;
    BoosterHandle booster;
    XGB(XGDMatrixCreateFromMat(xtr, n_train, nf, -1e30f, &dtrain));
    XGB(XGDMatrixSetFloatInfo(dtrain, "label", ytr, n_train));
    XGB(XGDMatrixCreateFromMat(xte, n_test, nf, -1e30f, &dtest));
    XGB(XGBoosterCreate(&dtrain, 1, &booster));
    XGB(XGBoosterSetParam(booster, "objective", "binary:logistic"));
    XGB(XGBoosterSetParam(booster, "max_depth", "3"));
    XGB(XGBoosterSetParam(booster, "eta", "0.3"));
    XGB(XGBoosterSetParam(booster, "tree_method", "exact")); /* deterministic */
    XGB(XGBoosterSetParam(booster, "nthread", "1"));
    XGB(XGBoosterSetParam(booster, "seed", "0"));
    for (int r = 0; r < ROUNDS; r++)
        XGB(XGBoosterUpdateOneIter(booster, r, dtrain));

    bst_ulong len = 0;
    const float *pred = NULL;
    XGB(XGBoosterPredict(booster, dtest, 0, 0, 0, &len, &pred));
    int correct = 0;
    for (int i = 0; i < n_test; i++)
        correct += (pred[i] >= 0.5f) == (yte[i] >= 0.5f);
    float first = pred[0];

    char dir[4096], model[4200], request[4200];
    snprintf(dir, sizeof(dir), "%s/xgboost", argv[1]);
    mkdir(argv[1], 0755);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "make-breast-cancer: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(model, sizeof(model), "%s/breast-cancer.json", dir);
    XGB(XGBoosterSaveModel(booster, model));
    snprintf(request, sizeof(request), "%s/breast-cancer-request.json", dir);
    FILE *rq = fopen(request, "w");
    if (!rq) {
        fprintf(stderr, "make-breast-cancer: %s: %s\n", request, strerror(errno));
        return 1;
    }
    fprintf(rq, "{\"inputs\":[{\"name\":\"input-0\",\"datatype\":\"FP32\",\"shape\":[1,%d],"
                "\"data\":[", nf);
    for (int j = 0; j < nf; j++)
        fprintf(rq, "%s%.9g", j ? "," : "", xte[j]);
    fprintf(rq, "]}]}\n");
    fclose(rq);

    printf("model %s\n", model);
    printf("request %s\n", request);
    printf("trained on %d rows, held-out accuracy %d/%d = %.3f\n", n_train, correct, n_test,
           (double)correct / n_test);
    printf("expected predict[0] = %.9g (label %g)\n", first, yte[0]);
    printf("row[0] =");
    for (int j = 0; j < nf; j++)
        printf(" %.9g", xte[j]);
    printf("\n");
    XGBoosterFree(booster);
    XGDMatrixFree(dtrain);
    XGDMatrixFree(dtest);
    free(x);
    free(y);
    free(xtr);
    free(ytr);
    free(xte);
    free(yte);
    return 0;
}
