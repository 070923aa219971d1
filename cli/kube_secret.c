/* kube_secret.c - the Secret storage-config in the registry (kube_secret.h). */
#include "kube_secret.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/base64.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/keys.h"

#define STORAGE_DIR "storage-config/"

static void wipe_free(char *s, size_t len)
{
    if (s)
        memset(s, 0, len);
    free(s);
}

void kube_secret_clear(struct kube_secret *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].key);
        wipe_free(s->v[i].value, s->v[i].len);
    }
    free(s->v);
    *s = (struct kube_secret){0};
}

int kube_secret_add(struct kube_secret *s, const char *key, char *value)
{
    size_t len = strlen(value);
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].key, key) == 0) {
            wipe_free(s->v[i].value, s->v[i].len);
            s->v[i].value = value;
            s->v[i].len = len;
            return 0;
        }
    if (s->n == KUBE_SECRET_MAX_KEYS) {
        wipe_free(value, len);
        return -E2BIG;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct kube_secret_entry *v = realloc(s->v, cap * sizeof(*v));
        if (!v) {
            wipe_free(value, len);
            return -ENOMEM;
        }
        s->v = v;
        s->cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        wipe_free(value, len);
        return -ENOMEM;
    }
    s->v[s->n++] = (struct kube_secret_entry){.key = k, .value = value, .len = len};
    return 0;
}

/* "/modelmesh/<cluster>/storage-config/" (malloc'd), or NULL with err. */
static char *dir_key(const char *cluster, struct mm_error *err)
{
    char prefix[KEYS_MAX];
    if (keys_prefix(prefix, sizeof(prefix), cluster, err) < 0)
        return NULL;
    size_t n = strlen(prefix) + sizeof(STORAGE_DIR);
    char *k = malloc(n);
    if (!k) {
        mm_error_set(err, -ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(k, n, "%s%s", prefix, STORAGE_DIR);
    return k;
}

struct load {
    struct kube_secret *s;
    size_t prefix_len;
};

static int load_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct load *l = arg;
    (void)revision;
    for (size_t i = 0; i < n; i++) {
        const char *key = kvs[i].key + l->prefix_len;
        struct mm_error ignored = {0};
        /* Only records a Secret key can name (the ones nodes resolve). */
        if (kvs[i].key_len <= l->prefix_len || strlen(key) != kvs[i].key_len - l->prefix_len ||
            keys_check_name("storage key", key, &ignored) < 0 ||
            strlen(kvs[i].value) != kvs[i].value_len)
            continue;
        char *value = strndup(kvs[i].value, kvs[i].value_len);
        if (!value)
            return -ENOMEM;
        int rc = kube_secret_add(l->s, key, value);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct kube_secret_entry *)a)->key,
                  ((const struct kube_secret_entry *)b)->key);
}

int kube_secret_load(struct etcd_client *c, const char *cluster, struct kube_secret *s,
                     struct mm_error *err)
{
    char *prefix = dir_key(cluster, err);
    char *end = prefix ? malloc(strlen(prefix) + 2) : NULL;
    int rc;
    if (!prefix)
        return err->code;
    if (!end) {
        rc = mm_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    struct etcd_paged_req req = {.key = prefix};
    req.range_end = end;
    req.range_end_len = etcd_prefix_end(prefix, strlen(prefix), end);
    struct load l = {.s = s, .prefix_len = strlen(prefix)};
    rc = etcd_sync_range_paged(c, &req, load_page, &l, NULL, err);
    if (rc == -E2BIG && !err->msg[0])
        mm_error_set(err, rc, "%s holds more than %d keys", prefix, KUBE_SECRET_MAX_KEYS);
    else if (rc < 0 && !err->msg[0])
        mm_error_set(err, rc, "reading %s: out of memory", prefix);
    if (rc == 0 && s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), by_key);
out:
    free(prefix);
    free(end);
    return rc;
}

static const struct kube_secret_entry *find(const struct kube_secret *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].key, key) == 0)
            return &s->v[i];
    return NULL;
}

int kube_secret_write(struct etcd_client *c, const char *cluster, const struct kube_secret *want,
                      enum kube_secret_change *change, struct mm_error *err)
{
    struct kube_secret old = {0};
    size_t n_keys = want->n + KUBE_SECRET_MAX_KEYS;
    char(*keys)[KEYS_MAX] = calloc(n_keys, KEYS_MAX);
    struct etcd_op *ops = calloc(n_keys, sizeof(*ops));
    int rc = -ENOMEM;
    if (!keys || !ops) {
        mm_error_set(err, rc, "out of memory");
        goto out;
    }
    if ((rc = kube_secret_load(c, cluster, &old, err)) < 0)
        goto out;
    size_t n_ops = 0;
    for (size_t i = 0; i < want->n; i++) {
        const struct kube_secret_entry *o = find(&old, want->v[i].key);
        if (o && strcmp(o->value, want->v[i].value) == 0)
            continue;
        if ((rc = keys_storage_config(keys[n_ops], KEYS_MAX, cluster, want->v[i].key, err)) < 0)
            goto out;
        ops[n_ops] = (struct etcd_op){.kind = ETCD_OP_PUT, .key = keys[n_ops],
                                      .value = want->v[i].value};
        n_ops++;
    }
    for (size_t k = 0; k < old.n; k++) {
        if (find(want, old.v[k].key))
            continue;
        if ((rc = keys_storage_config(keys[n_ops], KEYS_MAX, cluster, old.v[k].key, err)) < 0)
            goto out;
        ops[n_ops] = (struct etcd_op){.kind = ETCD_OP_DELETE, .key = keys[n_ops]};
        n_ops++;
    }
    *change = n_ops == 0 ? KUBE_SECRET_UNCHANGED
              : old.n    ? KUBE_SECRET_CONFIGURED
                         : KUBE_SECRET_CREATED;
    rc = 0;
    if (n_ops) {
        struct etcd_txn txn = {.success = ops, .n_success = n_ops};
        struct etcd_response *r = NULL;
        rc = etcd_sync_txn(c, &txn, &r, err);
        etcd_response_free(r);
    }
out:
    kube_secret_clear(&old);
    free(ops);
    free(keys);
    return rc;
}

int kube_secret_delete(struct etcd_client *c, const char *cluster, int64_t *deleted,
                       struct mm_error *err)
{
    char *prefix = dir_key(cluster, err);
    if (!prefix)
        return err->code;
    int rc = etcd_sync_delete(c, prefix, true, deleted, err);
    free(prefix);
    return rc;
}

cJSON *kube_secret_object(const struct kube_secret *s, const char *ns)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(o, "metadata");
    cJSON *data = cJSON_AddObjectToObject(o, "data");
    if (!meta || !data || !cJSON_AddStringToObject(o, "apiVersion", "v1") ||
        !cJSON_AddStringToObject(o, "kind", "Secret") ||
        !cJSON_AddStringToObject(o, "type", "Opaque") ||
        !cJSON_AddStringToObject(meta, "name", KUBE_SECRET_NAME) ||
        !cJSON_AddStringToObject(meta, "namespace", ns))
        goto fail;
    for (size_t i = 0; i < s->n; i++) {
        char *b = malloc(base64_encoded_size(s->v[i].len));
        if (!b)
            goto fail;
        base64_encode(s->v[i].value, s->v[i].len, b);
        cJSON *v = cJSON_AddStringToObject(data, s->v[i].key, b);
        wipe_free(b, strlen(b));
        if (!v)
            goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}
