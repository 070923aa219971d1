#!/usr/bin/env bash
# make_models.sh BUILD_DIR OUTDIR - every example model and its sample request, from data Debian
# ships (nothing is downloaded). The local cluster (deploy/local) puts OUTDIR into its bucket.
#   OUTDIR/sklearn/mnist-svm.joblib, sklearn/mnist-svm-request.json   (the walkthrough's model)
#   OUTDIR/xgboost/breast-cancer.json, xgboost/breast-cancer-request.json
#   OUTDIR/xgboost/mnist.json, xgboost/mnist-request.json     (the walkthrough's second model)
set -euo pipefail
build=${1:?usage: make_models.sh BUILD_DIR OUTDIR}
out=${2:?usage: make_models.sh BUILD_DIR OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
"$build/examples/xgboost/make-breast-cancer" "$out"
"$build/examples/xgboost/make-mnist" "$out"
/usr/bin/python3 "$here/sklearn/make_mnist_svm.py" "$out"
