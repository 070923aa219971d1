/* xgb.h - an XGBoost model through libxgboost's C API: loaded from a JSON, UBJSON or legacy
 * binary model file (or a directory holding exactly one), predicted in place from dense float
 * rows. Prediction is safe from several threads at once (XGBoost's in-place prediction is);
 * loading and freeing are not concurrent with prediction on the same model.
 *
 * Model files come from outside and XGBoost trusts the sizes they declare (a 160-byte file can
 * make it zero-fill gigabytes, or read past its buffer): xgb_model_load reads the file itself,
 * once, checks it with xgb_check_model and only then hands the bytes to XGBoost, so that a load
 * uses memory bounded by a small multiple of the file's size. Errors name the kind of failure
 * and the path, never the file's bytes; XGBoost's own message is cut to its first line (its
 * full text, with its stack trace, goes to the log at debug level).
 *
 * What the checks do not cover: XGBoost trusts a model's trees (child and feature indices are
 * used unchecked when it predicts), so a crafted model can still crash the process; serve models
 * from storage you trust. */
#ifndef MM_XGB_H
#define MM_XGB_H

#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct xgb_model;

#define XGB_MAX_OUTPUTS 65536 /* classes or targets a model may declare */

struct xgb_limits {
    uint64_t max_file_bytes; /* a larger model file is refused (-EFBIG); 0: no limit */
    size_t max_features;     /* a model with more features is refused; 0: no limit */
    const char *const *models_dirs; /* resolved directories (NULL-terminated) a model path must
                                       be inside one of, or NULL: any path */
};

/* Load the model at path (a file, or a directory holding one model file: .json, .ubj, .bin,
 * .bst, .model), which must be a regular file or a FIFO (read like streaming storage: the open
 * and the read block until it delivers). 0, or: -ENOENT (missing, or a directory without a
 * model file), -EACCES (unreadable, or outside every one of lim->models_dirs once symlinks are resolved),
 * -EFBIG (larger than lim->max_file_bytes), -EINVAL (a device or socket, or not a model
 * XGBoost can read safely), -ENOMEM; err says what and where. */
int xgb_model_load(const char *path, const struct xgb_limits *lim, struct xgb_model **out,
                   struct mm_error *err);
/* Check len bytes of a model file before XGBoost reads them (legacy binary: every declared
 * size against the bytes left; UBJSON: well-formed, counts and lengths within the bytes left,
 * nesting at most 64; JSON: well-formed, nesting at most 64), and the sizes XGBoost allocates
 * from before it checks them: trees at most one per two bytes of file, features at most
 * lim->max_features, classes and targets at most XGB_MAX_OUTPUTS. 0 or -EINVAL (err names the
 * offset and what is wrong, never the bytes). */
int xgb_check_model(const void *buf, size_t len, const struct xgb_limits *lim,
                    struct mm_error *err);
void xgb_model_free(struct xgb_model *m);
/* Number of input features the model was trained with. */
size_t xgb_model_features(const struct xgb_model *m);
/* Values per row in the prediction (1 for regression and binary classification, k for a
 * k-class softprob model), learnt at load from a prediction of one row of missing values. */
size_t xgb_model_outputs(const struct xgb_model *m);
/* Bytes of the loaded booster, measured as the size of its serialized in-memory state. */
uint64_t xgb_model_size(const struct xgb_model *m);
/* Predict rows x features (row-major) into out (rows * outputs floats, allocated by the callee,
 * freed with free()). */
int xgb_model_predict(struct xgb_model *m, const float *rows, size_t n_rows, float **out,
                      size_t *out_per_row, struct mm_error *err);
/* Size on disk of a model path: a regular file's, or the sum of a directory's regular files
 * (one level). -ENOENT when there is nothing to measure: missing, a device, FIFO or socket,
 * outside every one of models_dirs (NULL-terminated; NULL: any) once resolved; 0 bytes is a
 * size (the caller decides). */
int xgb_path_size(const char *path, const char *const *models_dirs, uint64_t *out);

#endif
