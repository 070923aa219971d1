/* xgb.h - an XGBoost model through libxgboost's C API: loaded from a JSON, UBJSON or binary
 * model file (or a directory holding exactly one), predicted in place from dense float rows.
 * Prediction is safe from several threads at once (XGBoost's in-place prediction is); loading
 * and freeing are not concurrent with prediction on the same model. */
#ifndef MM_XGB_H
#define MM_XGB_H

#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct xgb_model;

/* -ENOENT (path missing, or a directory without a model file), -EINVAL (not a model libxgboost
 * can read; err carries its message), -ENOMEM. */
int xgb_model_load(const char *path, struct xgb_model **out, struct mm_error *err);
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
/* Size on disk of a model path (file, or sum of a directory's regular files); -ENOENT. */
int xgb_path_size(const char *path, uint64_t *out);

#endif
