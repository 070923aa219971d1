/* keys.c - the etcd key layout (see keys.h). */
#include "mm/keys.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ROOT "/modelmesh/"

static const struct {
    enum key_kind kind;
    const char *dir;  /* first path element under the cluster prefix */
    int parts;        /* name components after it */
} layout[] = {
    {KEY_INSTANCE, "instances", 1}, {KEY_MODEL, "models", 1},
    {KEY_COPY, "copies", 2},        {KEY_VMODEL, "vmodels", 1},
    {KEY_ISVC, "isvcs", 2},         {KEY_ISVC_STATUS, "isvc-status", 2},
    {KEY_RUNTIME, "runtimes", 1},   {KEY_STORAGE_CONFIG, "storage-config", 1},
    {KEY_ELECTION, "election", 1},
};

static const char *name_problem(const char *name)
{
    size_t n = strnlen(name, KEYS_NAME_MAX + 1);
    if (n == 0)
        return "is empty";
    if (n > KEYS_NAME_MAX)
        return "is longer than 253 characters";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/')
            return "contains '/'";
        if (c <= ' ' || c >= 0x7f)
            return "contains a space, control or non-ASCII character";
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return "is '.' or '..'";
    return NULL;
}

int keys_check_name(const char *what, const char *name, struct mm_error *err)
{
    if (!name)
        return mm_error_set(err, -EINVAL, "%s is missing", what);
    const char *why = name_problem(name);
    if (why)
        return mm_error_set(err, -EINVAL, "%s '%.64s%s' %s", what, name,
                            strlen(name) > 64 ? "..." : "", why);
    return 0;
}

/* Format ROOT<cluster>/<dir>[/<a>[/<b>]][/] after checking every name. */
static int format(char *out, size_t size, struct mm_error *err, const char *cluster,
                  const char *dir, const char *a_what, const char *a, const char *b_what,
                  const char *b, bool trailing)
{
    int rc = keys_check_name("cluster name", cluster, err);
    if (rc == 0 && a_what)
        rc = keys_check_name(a_what, a, err);
    if (rc == 0 && b_what)
        rc = keys_check_name(b_what, b, err);
    if (rc < 0)
        return rc;
    int n = snprintf(out, size, ROOT "%s/%s%s%s%s%s%s", cluster, dir ? dir : "",
                     a_what ? "/" : "", a_what ? a : "", b_what ? "/" : "", b_what ? b : "",
                     trailing ? "/" : "");
    if (n < 0 || (size_t)n >= size)
        return mm_error_set(err, -ENAMETOOLONG, "key for %s does not fit in %zu bytes",
                            dir ? dir : "cluster prefix", size);
    return 0;
}

int keys_prefix(char *out, size_t size, const char *cluster, struct mm_error *err)
{
    int rc = keys_check_name("cluster name", cluster, err);
    if (rc < 0)
        return rc;
    int n = snprintf(out, size, ROOT "%s/", cluster);
    if (n < 0 || (size_t)n >= size)
        return mm_error_set(err, -ENAMETOOLONG, "cluster prefix does not fit in %zu bytes", size);
    return 0;
}

int keys_instance(char *out, size_t size, const char *cluster, const char *iid,
                  struct mm_error *err)
{
    return format(out, size, err, cluster, "instances", "instance id", iid, NULL, NULL, false);
}

int keys_model(char *out, size_t size, const char *cluster, const char *model_id,
               struct mm_error *err)
{
    return format(out, size, err, cluster, "models", "model id", model_id, NULL, NULL, false);
}

int keys_copy(char *out, size_t size, const char *cluster, const char *model_id, const char *iid,
              struct mm_error *err)
{
    return format(out, size, err, cluster, "copies", "model id", model_id, "instance id", iid,
                  false);
}

int keys_copies_of(char *out, size_t size, const char *cluster, const char *model_id,
                   struct mm_error *err)
{
    return format(out, size, err, cluster, "copies", "model id", model_id, NULL, NULL, true);
}

int keys_vmodel(char *out, size_t size, const char *cluster, const char *name,
                struct mm_error *err)
{
    return format(out, size, err, cluster, "vmodels", "vmodel name", name, NULL, NULL, false);
}

int keys_isvc(char *out, size_t size, const char *cluster, const char *ns, const char *name,
              struct mm_error *err)
{
    return format(out, size, err, cluster, "isvcs", "namespace", ns, "InferenceService name",
                  name, false);
}

int keys_isvc_status(char *out, size_t size, const char *cluster, const char *ns,
                     const char *name, struct mm_error *err)
{
    return format(out, size, err, cluster, "isvc-status", "namespace", ns,
                  "InferenceService name", name, false);
}

int keys_runtime(char *out, size_t size, const char *cluster, const char *name,
                 struct mm_error *err)
{
    return format(out, size, err, cluster, "runtimes", "runtime name", name, NULL, NULL, false);
}

int keys_storage_config(char *out, size_t size, const char *cluster, const char *key,
                        struct mm_error *err)
{
    return format(out, size, err, cluster, "storage-config", "storage key", key, NULL, NULL,
                  false);
}

int keys_election(char *out, size_t size, const char *cluster, struct mm_error *err)
{
    return format(out, size, err, cluster, "election", "election", "controller", NULL, NULL,
                  false);
}

/* Split one name component of p[0..n) ending at '/' or the end; checks it is a valid name. */
static const char *component(const char *p, size_t n, size_t *len)
{
    const char *slash = memchr(p, '/', n);
    *len = slash ? (size_t)(slash - p) : n;
    if (*len == 0 || *len > KEYS_NAME_MAX)
        return NULL;
    for (size_t i = 0; i < *len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= ' ' || c >= 0x7f) /* NUL included: a key is bytes, not a C string */
            return NULL;
    }
    if ((*len == 1 && p[0] == '.') || (*len == 2 && p[0] == '.' && p[1] == '.'))
        return NULL;
    return p;
}

int keys_parse_relative(const char *rel, size_t rel_len, struct key_parts *out)
{
    memset(out, 0, sizeof(*out));
    const char *end = rel + rel_len;
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++) {
        size_t dl = strlen(layout[i].dir);
        if (rel_len <= dl || memcmp(rel, layout[i].dir, dl) != 0 || rel[dl] != '/')
            continue;
        const char *p = rel + dl + 1;
        size_t len;
        if (!component(p, (size_t)(end - p), &len))
            return -EINVAL;
        out->first = p;
        out->first_len = len;
        p += len;
        if (layout[i].parts == 2) {
            if (p == end || *p != '/' || !component(p + 1, (size_t)(end - p - 1), &len))
                return -EINVAL;
            out->second = p + 1;
            out->second_len = len;
            p += 1 + len;
        }
        if (p != end)
            return -EINVAL;
        if (layout[i].kind == KEY_ELECTION &&
            (out->first_len != 10 || memcmp(out->first, "controller", 10) != 0))
            return -EINVAL;
        out->kind = layout[i].kind;
        return 0;
    }
    return -EINVAL;
}

int keys_parse(const char *key, size_t key_len, const char *cluster, struct key_parts *out)
{
    memset(out, 0, sizeof(*out));
    size_t rl = strlen(ROOT), cl = strlen(cluster);
    if (key_len <= rl + cl || memcmp(key, ROOT, rl) != 0 || memcmp(key + rl, cluster, cl) != 0 ||
        key[rl + cl] != '/')
        return -EINVAL;
    return keys_parse_relative(key + rl + cl + 1, key_len - rl - cl - 1, out);
}

const char *keys_kind_name(enum key_kind kind)
{
    static const char *const names[] = {
        [KEY_UNKNOWN] = "unknown", [KEY_INSTANCE] = "instance", [KEY_MODEL] = "model",
        [KEY_COPY] = "copy", [KEY_VMODEL] = "vmodel", [KEY_ISVC] = "isvc",
        [KEY_ISVC_STATUS] = "isvc-status", [KEY_RUNTIME] = "runtime",
        [KEY_STORAGE_CONFIG] = "storage-config", [KEY_ELECTION] = "election",
    };
    return kind <= KEY_ELECTION ? names[kind] : "unknown";
}
