/* stcfg.h - which storage a model is pulled from, and with what credentials: its storage
 * key's entry in the storage-config secret (one JSON document per key, stored under
 * storage-config/<key>), the model's storage parameters laid over it, and the defaults
 * ModelMesh Serving has (../PROTOCOLS.md, "Storage secret"). Also the storageUri forms an
 * InferenceService may give instead of a key and a path.
 *
 * Pure: entries are looked up through the caller's function (the node reads its registry
 * mirror), nothing is cached. Messages never hold a field's value, only its name (values are
 * secrets). Threading: none. */
#ifndef MM_STCFG_H
#define MM_STCFG_H

#include "mm/error.h"

struct cJSON;

/* 0 and *json (malloc'd, NUL-terminated, the caller frees) for the entry of key; -ENOENT
 * when there is none; another -errno with err for a failure to look. */
typedef int (*stcfg_lookup_fn)(const char *key, char **json, void *arg, struct mm_error *err);

struct stcfg {
    struct cJSON *cfg; /* NULL: no remote storage (the path is the node's local models root,
                          the pvc provider's default); else an object of string fields with
                          "type" one of s3, gcs, azure, http, pvc */
    char key[254];     /* the key whose entry was used, "" if none */
};

/* Resolve a model's storage.
 *   key (NULL or "" = none) given: its entry (none: -ENOENT "storage key 'K' not in
 *     storage-config"); else with params holding "type" T: the entry default_T, or else
 *     default, or else none; else: the entry default, or none.
 *   The entry must be a JSON object of strings (else -EINVAL naming the key and the field).
 *   params (NULL or "" = none; a JSON object of strings, else -EINVAL) overlay its fields.
 *   Aliases become the canonical names: access_key -> access_key_id, default_bucket ->
 *     bucket (the canonical name wins if both are given).
 *   With no entry and no params: out->cfg = NULL (local). With params but no entry, the
 *     params alone are the config. "type" is required then (-EINVAL "storage key 'K': no
 *     type"), and must be one of the five (-EINVAL naming it).
 * out is zeroed first; 0, or -errno with err (and out holds nothing to clear). */
int stcfg_resolve(const char *key, const char *params, stcfg_lookup_fn lookup, void *arg,
                  struct stcfg *out, struct mm_error *err);
/* Free what out holds and zero it; NULL or a zeroed one is fine. */
void stcfg_clear(struct stcfg *c);

/* A storageUri into storage parameters (a JSON object text, malloc'd) and a path (malloc'd):
 *   s3://B/p            {"type":"s3","bucket":B}, p
 *   gs://B/p            {"type":"gcs","bucket":B}, p
 *   pvc://NAME/p        {"type":"pvc","name":NAME}, p
 *   https://A.blob.core.windows.net/C/p   {"type":"azure","account_name":A,"container":C}, p
 *   http(s)://host[:port]/p               {"type":"http","url":"http(s)://host[:port]"}, p
 * 0, or -EINVAL with err naming what is wrong (an unknown scheme, no bucket, an empty path, a
 * path with a ".." component). */
int stcfg_parse_uri(const char *uri, char **params, char **path, struct mm_error *err);

#endif
