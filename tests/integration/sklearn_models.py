#!/usr/bin/python3
"""sklearn_models.py OUTDIR: extra models for test_sklearn_runtime, from data python3-sklearn
ships. Prints what the runtime must answer for them, one "key = values" line each."""
import os
import pickle
import sys

import joblib
import numpy as np
from sklearn import datasets, ensemble, linear_model


def show(key, values):
    print("%s = %s" % (key, " ".join(repr(float(v)) if not isinstance(v, str) else v
                                      for v in values)))


def main(out):
    os.makedirs(out, exist_ok=True)
    # A regressor: FP64 predictions.
    d = datasets.load_diabetes()
    reg = linear_model.LinearRegression().fit(d.data, d.target)
    joblib.dump(reg, os.path.join(out, "regressor.joblib"))
    show("regressor row", d.data[0])
    show("regressor expected", reg.predict(d.data[:1]))

    # A regressor with two targets: predict is [N, 2].
    two_targets = np.stack([d.target, -d.target], axis=1)
    multi = linear_model.LinearRegression().fit(d.data, two_targets)
    joblib.dump(multi, os.path.join(out, "two-targets.joblib"))
    show("two-targets expected", multi.predict(d.data[:1])[0])

    # A classifier with string classes, pickled: BYTES predictions and predict_proba.
    iris = datasets.load_iris()
    names = np.array(iris.target_names)[iris.target]
    clf = linear_model.LogisticRegression(max_iter=1000).fit(iris.data, names)
    with open(os.path.join(out, "iris.pkl"), "wb") as f:
        pickle.dump(clf, f)
    row = iris.data[100:101]
    show("iris row", row[0])
    show("iris expected", [str(clf.predict(row)[0])])
    show("iris proba", clf.predict_proba(row)[0])

    # A forest: its trees keep their nodes in C buffers, which a size measure must not miss.
    digits = datasets.load_digits()
    forest = ensemble.RandomForestClassifier(n_estimators=20, random_state=0)
    joblib.dump(forest.fit(digits.data, digits.target), os.path.join(out, "forest.joblib"))

    # Not models: a pickled dict, a text file, half a model, a directory with two model files.
    with open(os.path.join(out, "dict.pkl"), "wb") as f:
        pickle.dump({"weights": [1, 2, 3]}, f)
    with open(os.path.join(out, "garbage.joblib"), "w") as f:
        f.write("not a model\n")
    with open(os.path.join(out, "regressor.joblib"), "rb") as f:
        whole = f.read()
    with open(os.path.join(out, "truncated.joblib"), "wb") as f:
        f.write(whole[:len(whole) // 2])
    two = os.path.join(out, "two")
    os.makedirs(two, exist_ok=True)
    for name in ("a.joblib", "b.joblib"):
        joblib.dump(reg, os.path.join(two, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
