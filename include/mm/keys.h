/* keys.h - the etcd key layout, in one place. Every key lives under /modelmesh/<cluster>/:
 *   instances/<iid>              models/<model-id>          copies/<model-id>/<iid>
 *   vmodels/<name>               isvcs/<ns>/<name>          isvc-status/<ns>/<name>
 *   runtimes/<name>              storage-config/<key>       election/controller
 * Names are 1..253 printable ASCII characters without '/' or spaces. Formatters write into a
 * caller buffer and return 0, -EINVAL (bad name, with the reason in err) or -ENAMETOOLONG. */
#ifndef MM_KEYS_H
#define MM_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "mm/error.h"

#define KEYS_NAME_MAX 253
#define KEYS_MAX 1024 /* a buffer this size holds any key */

enum key_kind {
    KEY_UNKNOWN, KEY_INSTANCE, KEY_MODEL, KEY_COPY, KEY_VMODEL, KEY_ISVC, KEY_ISVC_STATUS,
    KEY_RUNTIME, KEY_STORAGE_CONFIG, KEY_ELECTION,
};

/* A parsed key: components point into the parsed bytes (not NUL-terminated there). */
struct key_parts {
    enum key_kind kind;
    const char *first;  /* iid, model id, vmodel, namespace, runtime, storage key, "controller" */
    size_t first_len;
    const char *second; /* copy: iid; isvc / isvc-status: name; else NULL */
    size_t second_len;
};

int keys_check_name(const char *what, const char *name, struct mm_error *err);

int keys_prefix(char *out, size_t size, const char *cluster, struct mm_error *err);
int keys_instance(char *out, size_t size, const char *cluster, const char *iid,
                  struct mm_error *err);
int keys_model(char *out, size_t size, const char *cluster, const char *model_id,
               struct mm_error *err);
int keys_copy(char *out, size_t size, const char *cluster, const char *model_id, const char *iid,
              struct mm_error *err);
/* "…/copies/<model-id>/": every copy of one model. */
int keys_copies_of(char *out, size_t size, const char *cluster, const char *model_id,
                   struct mm_error *err);
int keys_vmodel(char *out, size_t size, const char *cluster, const char *name,
                struct mm_error *err);
int keys_isvc(char *out, size_t size, const char *cluster, const char *ns, const char *name,
              struct mm_error *err);
int keys_isvc_status(char *out, size_t size, const char *cluster, const char *ns,
                     const char *name, struct mm_error *err);
int keys_runtime(char *out, size_t size, const char *cluster, const char *name,
                 struct mm_error *err);
int keys_storage_config(char *out, size_t size, const char *cluster, const char *key,
                        struct mm_error *err);
int keys_election(char *out, size_t size, const char *cluster, struct mm_error *err);

/* Parse a full key of this cluster, key_len bytes (any bytes: a key from etcd may hold NUL,
 * which no name of the layout does); -EINVAL for keys outside the cluster or the layout. */
int keys_parse(const char *key, size_t key_len, const char *cluster, struct key_parts *out);
/* Parse a key relative to the cluster prefix ("models/m1"), rel_len bytes. */
int keys_parse_relative(const char *rel, size_t rel_len, struct key_parts *out);
const char *keys_kind_name(enum key_kind kind);

#endif
