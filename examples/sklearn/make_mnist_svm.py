#!/usr/bin/python3
"""make_mnist_svm.py OUTDIR: build the sklearn example model from data Debian ships.

Fits SVC(gamma=0.001) on the first half of scikit-learn's bundled 8x8 digits data (python3-sklearn
ships it; nothing is downloaded), reports accuracy on the second half, and writes
  OUTDIR/sklearn/mnist-svm.joblib           the model (joblib)
  OUTDIR/sklearn/mnist-svm-request.json     a KServe V2 request (JSON form of ModelInferRequest)
It prints the expected prediction for that request: 8.
"""
import json
import os
import sys

# The sample input of the KServe / ModelMesh Serving walkthrough: an 8x8 image of an "8".
SAMPLE = [0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0,
          0.0, 8.0, 16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0,
          0.0, 0.0, 2.0, 12.0, 16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0,
          0.0, 0.0, 0.0, 16.0, 16.0, 16.0, 7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0]


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: make_mnist_svm.py OUTDIR\n")
        return 2
    import joblib
    import numpy as np
    from sklearn import datasets, svm

    digits = datasets.load_digits()
    n = len(digits.images)
    x = digits.images.reshape((n, -1))
    half = n // 2
    clf = svm.SVC(gamma=0.001)
    clf.fit(x[:half], digits.target[:half])
    right = int((clf.predict(x[half:]) == digits.target[half:]).sum())
    print("trained on %d images, held-out accuracy %d/%d = %.3f" %
          (half, right, n - half, right / (n - half)))

    out = os.path.join(argv[1], "sklearn")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "mnist-svm.joblib")
    joblib.dump(clf, path)
    request = {"inputs": [{"name": "predict", "shape": [1, 64], "datatype": "FP32",
                           "contents": {"fp32_contents": SAMPLE}}]}
    with open(os.path.join(out, "mnist-svm-request.json"), "w") as f:
        json.dump(request, f)
        f.write("\n")
    expected = clf.predict(np.array([SAMPLE], dtype=np.float32))
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))
    print("expected predict[0] = %d" % expected[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
