/* kube_secret.h - the Secret storage-config as the registry holds it: one record per key,
 * storage-config/<key>, its value the entry's JSON (what nodes resolve a storage key with).
 * The Secret exists while it has a key. etcd keeps revisions, not times: the Secret has no
 * creation time to show (kubectl's AGE is <unknown>). For mmctl's kube verbs (kube.h); runs on
 * the caller's etcd client (etcd_sync.h). */
#ifndef MM_CLI_KUBE_SECRET_H
#define MM_CLI_KUBE_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mm/error.h"

struct etcd_client;

#define KUBE_SECRET_NAME "storage-config"
#define KUBE_SECRET_MAX_KEYS 100

struct kube_secret_entry {
    char *key;   /* the storage key ("localMinIO") */
    char *value; /* the entry's JSON, NUL-terminated; wiped when freed */
    size_t len;
};

/* Entries sorted by key once loaded; owned by the struct (kube_secret_clear). */
struct kube_secret {
    struct kube_secret_entry *v;
    size_t n, cap;
};

/* Free every entry (values wiped first) and empty s. */
void kube_secret_clear(struct kube_secret *s);
/* Add key = value, taking value (malloc'd, NUL-terminated; freed on failure too); a key given
 * again replaces its value (stringData over data, as Kubernetes). 0, -ENOMEM, or -E2BIG (more
 * than KUBE_SECRET_MAX_KEYS). */
int kube_secret_add(struct kube_secret *s, const char *key, char *value);
/* Read every storage-config/<key> of cluster into s (empty: no Secret). 0 or -errno with err. */
int kube_secret_load(struct etcd_client *c, const char *cluster, struct kube_secret *s,
                     struct mm_error *err);

enum kube_secret_change { KUBE_SECRET_UNCHANGED, KUBE_SECRET_CREATED, KUBE_SECRET_CONFIGURED };

/* Make the registry hold exactly want: new and changed keys put, keys want has not deleted,
 * in one transaction. 0 with *change, or -errno with err. */
int kube_secret_write(struct etcd_client *c, const char *cluster, const struct kube_secret *want,
                      enum kube_secret_change *change, struct mm_error *err);
/* Delete every key, in one request. 0 with *deleted (0: there was no Secret), or -errno. */
int kube_secret_delete(struct etcd_client *c, const char *cluster, int64_t *deleted,
                       struct mm_error *err);

/* kubectl's shape: {"apiVersion":"v1","kind":"Secret","metadata":{"name":"storage-config",
 * "namespace":ns},"type":"Opaque","data":{KEY: base64(value)}}. A new cJSON (the caller's),
 * NULL when out of memory. */
cJSON *kube_secret_object(const struct kube_secret *s, const char *ns);

#endif
