/* isvc.c - InferenceServices and ServingRuntimes: parsing, validation, the canonical JSON and
 * revision id, the model info a revision is registered with, and runtime matching (isvc.h).
 * The status is in isvc_status.c. */
#include "mm/isvc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mm/buf.h"
#include "mm/keys.h"
#include "mm/mesh.h"
#include "mm/records.h"
#include "mm/stcfg.h"

static const char *const reason_names[] = {
    [ISVC_REASON_NONE] = "",
    [ISVC_REASON_MODEL_LOAD_FAILED] = "ModelLoadFailed",
    [ISVC_REASON_RUNTIME_UNHEALTHY] = "RuntimeUnhealthy",
    [ISVC_REASON_NO_SUPPORTING_RUNTIME] = "NoSupportingRuntime",
    [ISVC_REASON_RUNTIME_NOT_RECOGNIZED] = "RuntimeNotRecognized",
    [ISVC_REASON_INVALID_PREDICTOR_SPEC] = "InvalidPredictorSpec",
};

const char *isvc_reason_name(enum isvc_reason r)
{
    if ((unsigned)r >= sizeof(reason_names) / sizeof(reason_names[0]))
        return "";
    return reason_names[r];
}

int isvc_reason_parse(const char *name, enum isvc_reason *out)
{
    for (unsigned i = 0; i < sizeof(reason_names) / sizeof(reason_names[0]); i++) {
        if (strcmp(name, reason_names[i]) == 0) {
            *out = (enum isvc_reason)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---------------------------------------------------------------- field access */

/* Where a parse is: the document's kind for messages, the node at fault. */
struct walk {
    const cJSON **where;
    struct mm_error *err;
};

static int fail(struct walk *w, const cJSON *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct walk *w, const cJSON *node, const char *fmt, ...)
{
    char msg[MM_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (w->where)
        *w->where = node;
    return mm_error_set(w->err, -EINVAL, "%s", msg);
}

/* The member name of o, or NULL; a name given twice is refused (readers differ on which one
 * counts). */
static int member(struct walk *w, const cJSON *o, const char *path, const char *name,
                  const cJSON **out)
{
    *out = NULL;
    for (const cJSON *c = o->child; c; c = c->next) {
        if (c->string && strcmp(c->string, name) == 0) {
            if (*out)
                return fail(w, c, "%s%s%s: given twice", path, path[0] ? "." : "", name);
            *out = c;
        }
    }
    return 0;
}

static int object_at(struct walk *w, const cJSON *o, const char *path, const char *name,
                     bool required, const cJSON **out)
{
    int rc = member(w, o, path, name, out);
    if (rc < 0)
        return rc;
    if (!*out || cJSON_IsNull(*out)) {
        *out = NULL;
        if (required)
            return fail(w, o, "%s%s%s: missing", path, path[0] ? "." : "", name);
        return 0;
    }
    if (!cJSON_IsObject(*out))
        return fail(w, *out, "%s%s%s: not an object", path, path[0] ? "." : "", name);
    return 0;
}

/* A string member into out (size bytes); absent or null leaves out "" and *given false. */
static int string_at(struct walk *w, const cJSON *o, const char *path, const char *name,
                     char *out, size_t size, bool *given)
{
    const cJSON *v;
    out[0] = '\0';
    if (given)
        *given = false;
    int rc = member(w, o, path, name, &v);
    if (rc < 0)
        return rc;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v) || !v->valuestring)
        return fail(w, v, "%s%s%s: not a string", path, path[0] ? "." : "", name);
    size_t len = strlen(v->valuestring);
    if (len >= size)
        return fail(w, v, "%s%s%s: %zu bytes, longer than %zu", path, path[0] ? "." : "", name,
                    len, size - 1);
    memcpy(out, v->valuestring, len + 1);
    if (given)
        *given = true;
    return 0;
}

static int bool_at(struct walk *w, const cJSON *o, const char *path, const char *name,
                   bool *out)
{
    const cJSON *v;
    *out = false;
    int rc = member(w, o, path, name, &v);
    if (rc < 0 || !v || cJSON_IsNull(v))
        return rc;
    if (!cJSON_IsBool(v))
        return fail(w, v, "%s.%s: not a boolean", path, name);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int int_at(struct walk *w, const cJSON *o, const char *path, const char *name,
                  double lo, double hi, int64_t *out)
{
    const cJSON *v;
    *out = 0;
    int rc = member(w, o, path, name, &v);
    if (rc < 0 || !v || cJSON_IsNull(v))
        return rc;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != (double)(int64_t)d || d < lo || d > hi)
        return fail(w, v, "%s.%s: not an integer in [%.0f, %.0f]", path, name, lo, hi);
    *out = (int64_t)d;
    return 0;
}

/* [a-z]([-a-z0-9]*[a-z0-9])? (dns1035) or [a-z0-9]([-a-z0-9]*[a-z0-9])? of at most max. */
static bool dns_label(const char *s, size_t max, bool letter_first)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-')
            return false;
    }
    if (s[0] == '-' || s[n - 1] == '-')
        return false;
    if (letter_first && !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    return true;
}

/* metadata: name (a label as given), namespace, generation; annotations in *ann (or NULL). */
static int parse_metadata(struct walk *w, const cJSON *doc, bool dns1035, char *name,
                          size_t name_size, char *ns, int64_t *generation, const cJSON **ann,
                          const cJSON **meta_out)
{
    const cJSON *meta;
    int rc = object_at(w, doc, "", "metadata", true, &meta);
    if (rc < 0)
        return rc;
    *meta_out = meta;
    bool given;
    if ((rc = string_at(w, meta, "metadata", "name", name, name_size, &given)) < 0)
        return rc;
    if (!given || !name[0])
        return fail(w, meta, "metadata.name: missing");
    if (dns1035 && !dns_label(name, ISVC_NAME_MAX, true))
        return fail(w, cJSON_GetObjectItemCaseSensitive(meta, "name"),
                    "metadata.name: '%s' is not a lower case name of at most %d characters "
                    "([a-z]([-a-z0-9]*[a-z0-9])?)", name, ISVC_NAME_MAX);
    if (!dns1035) {
        struct mm_error kerr;
        if (keys_check_name("metadata.name", name, &kerr) < 0)
            return fail(w, cJSON_GetObjectItemCaseSensitive(meta, "name"), "%s", kerr.msg);
    }
    char nsbuf[256];
    if ((rc = string_at(w, meta, "metadata", "namespace", nsbuf, sizeof(nsbuf), &given)) < 0)
        return rc;
    if (given && !dns_label(nsbuf, ISVC_NS_MAX, false))
        return fail(w, cJSON_GetObjectItemCaseSensitive(meta, "namespace"),
                    "metadata.namespace: '%.80s' is not a lower case name of at most %d "
                    "characters ([a-z0-9]([-a-z0-9]*[a-z0-9])?)", nsbuf, ISVC_NS_MAX);
    memcpy(ns, nsbuf, strlen(nsbuf) + 1); /* a label: at most ISVC_NS_MAX, checked above */
    if (generation &&
        (rc = int_at(w, meta, "metadata", "generation", 0, 9007199254740991.0, generation)) < 0)
        return rc;
    if ((rc = object_at(w, meta, "metadata", "annotations", false, ann)) < 0)
        return rc;
    if (*ann) {
        for (const cJSON *a = (*ann)->child; a; a = a->next)
            if (!cJSON_IsString(a))
                return fail(w, a, "metadata.annotations.%s: not a string",
                            a->string ? a->string : "");
    }
    return 0;
}

static int check_kind(struct walk *w, const cJSON *doc, const char *api, const char *kind1,
                      const char *kind2, char *kind_out)
{
    char v[128];
    bool given;
    int rc;
    if (!cJSON_IsObject(doc))
        return fail(w, doc, "not an object");
    if ((rc = string_at(w, doc, "", "apiVersion", v, sizeof(v), &given)) < 0)
        return rc;
    if (!given)
        return fail(w, doc, "apiVersion: missing");
    if (strcmp(v, api) != 0)
        return fail(w, cJSON_GetObjectItemCaseSensitive(doc, "apiVersion"),
                    "apiVersion: '%.80s', expected %s", v, api);
    if ((rc = string_at(w, doc, "", "kind", v, sizeof(v), &given)) < 0)
        return rc;
    if (!given)
        return fail(w, doc, "kind: missing");
    if (strcmp(v, kind1) != 0 && (!kind2 || strcmp(v, kind2) != 0))
        return fail(w, cJSON_GetObjectItemCaseSensitive(doc, "kind"),
                    "kind: '%.80s', expected %s%s%s", v, kind1, kind2 ? " or " : "",
                    kind2 ? kind2 : "");
    if (kind_out)
        strcpy(kind_out, v);
    return 0;
}

/* ---------------------------------------------------------------- InferenceService */

static const char *const frameworks[] = {
    "sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx", "triton", "pmml",
    "paddle", "keras",
};
#define N_FRAMEWORKS (sizeof(frameworks) / sizeof(frameworks[0]))

static int by_string(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* Lay the string members of from over into (replacing same names). */
static int overlay(cJSON *into, const cJSON *from)
{
    for (const cJSON *f = from->child; f; f = f->next) {
        cJSON *v = cJSON_CreateString(f->valuestring);
        if (!v)
            return -ENOMEM;
        if (cJSON_GetObjectItemCaseSensitive(into, f->string)) {
            cJSON_ReplaceItemInObjectCaseSensitive(into, f->string, v);
        } else if (!cJSON_AddItemToObject(into, f->string, v)) {
            cJSON_Delete(v);
            return -ENOMEM;
        }
    }
    return 0;
}

/* params as compact JSON with names sorted (Go's map order) into out; "" when empty. */
static int sorted_params_text(struct walk *w, const cJSON *node, cJSON *params, char *out,
                              size_t size, const char *path)
{
    int n = cJSON_GetArraySize(params);
    if (n > RECORD_PARAMS_MAX)
        return fail(w, node, "%s: more than %d parameters", path, RECORD_PARAMS_MAX);
    cJSON *items[RECORD_PARAMS_MAX];
    int i = 0;
    while (params->child && i < n)
        items[i++] = cJSON_DetachItemViaPointer(params, params->child);
    qsort(items, (size_t)i, sizeof(items[0]), by_string);
    for (int j = 0; j < i; j++)
        cJSON_AddItemToArray(params, items[j]); /* detached items keep their names */
    struct mm_error perr;
    int rc = record_params_text(params, out, size, &perr);
    if (rc < 0)
        return fail(w, node, "%s: %s", path, perr.msg);
    return 0;
}

/* The predictor implementation: model, or one old framework form. */
static int parse_predictor_impl(struct walk *w, const cJSON *pred, struct isvc *s,
                                const cJSON **impl_out, char *path, size_t path_size)
{
    const cJSON *impl = NULL;
    const char *impl_name = NULL;
    int rc;
    const cJSON *m;
    if ((rc = object_at(w, pred, "spec.predictor", "model", false, &m)) < 0)
        return rc;
    if (m) {
        impl = m;
        impl_name = "model";
    }
    for (size_t i = 0; i < N_FRAMEWORKS; i++) {
        const cJSON *f;
        if ((rc = object_at(w, pred, "spec.predictor", frameworks[i], false, &f)) < 0)
            return rc;
        if (!f)
            continue;
        if (impl)
            return fail(w, f, "spec.predictor: exactly one of model, %s, ... must be given "
                        "(both %s and %s are)", frameworks[0], impl_name, frameworks[i]);
        impl = f;
        impl_name = frameworks[i];
    }
    if (!impl)
        return fail(w, pred, "spec.predictor: no model (spec.predictor.model.modelFormat and "
                    "storage, or an old form such as spec.predictor.sklearn.storageUri)");
    snprintf(path, path_size, "spec.predictor.%s", impl_name);
    *impl_out = impl;
    if (strcmp(impl_name, "model") == 0) {
        const cJSON *fmt;
        bool given;
        char p[96];
        snprintf(p, sizeof(p), "%s.modelFormat", path);
        if ((rc = object_at(w, impl, path, "modelFormat", true, &fmt)) < 0 ||
            (rc = string_at(w, fmt, p, "name", s->format, sizeof(s->format), &given)) < 0 ||
            (rc = string_at(w, fmt, p, "version", s->format_version,
                            sizeof(s->format_version), NULL)) < 0)
            return rc;
        if (!given || !s->format[0])
            return fail(w, fmt, "%s.name: missing", p);
        if ((rc = string_at(w, impl, path, "runtime", s->runtime, sizeof(s->runtime), &given)) <
            0)
            return rc;
        if (given && s->runtime[0]) {
            struct mm_error kerr;
            if (keys_check_name("runtime", s->runtime, &kerr) < 0)
                return fail(w, cJSON_GetObjectItemCaseSensitive(impl, "runtime"), "%s.runtime: %s",
                            path, kerr.msg);
        }
    } else {
        snprintf(s->format, sizeof(s->format), "%s", impl_name);
    }
    return string_at(w, impl, path, "protocolVersion", s->protocol, sizeof(s->protocol), NULL);
}

static void set_invalid(struct isvc *s, enum isvc_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_invalid(struct isvc *s, enum isvc_reason reason, const char *fmt, ...)
{
    if (s->invalid != ISVC_REASON_NONE)
        return; /* the first reason found is the one reported */
    s->invalid = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->invalid_msg, sizeof(s->invalid_msg), fmt, ap);
    va_end(ap);
}

static int parse_storage(struct walk *w, const cJSON *impl, const char *path,
                         const cJSON *ann, struct isvc *s)
{
    const cJSON *st;
    bool uri_given;
    int rc;
    char sp[96];
    snprintf(sp, sizeof(sp), "%s.storage", path);
    if ((rc = object_at(w, impl, path, "storage", false, &st)) < 0 ||
        (rc = string_at(w, impl, path, "storageUri", s->storage_uri, sizeof(s->storage_uri),
                        &uri_given)) < 0)
        return rc;
    cJSON *params = cJSON_CreateObject();
    if (!params)
        return mm_error_set(w->err, -ENOMEM, "%s: out of memory", sp);
    const cJSON *pnode = st ? st : impl;
    if (st) {
        const cJSON *p;
        if ((rc = string_at(w, st, sp, "key", s->storage_key, sizeof(s->storage_key),
                            &s->has_key)) < 0 ||
            (rc = string_at(w, st, sp, "path", s->storage_path, sizeof(s->storage_path),
                            &s->has_path)) < 0 ||
            (rc = string_at(w, st, sp, "schemaPath", s->schema_path, sizeof(s->schema_path),
                            &s->has_schema_path)) < 0 ||
            (rc = object_at(w, st, sp, "parameters", false, &p)) < 0)
            goto out;
        if (s->has_key && s->storage_key[0]) {
            struct mm_error kerr;
            if (keys_check_name("storage key", s->storage_key, &kerr) < 0) {
                rc = fail(w, cJSON_GetObjectItemCaseSensitive(st, "key"), "%s.key: %s", sp,
                          kerr.msg);
                goto out;
            }
        }
        if (p) {
            pnode = p;
            for (const cJSON *f = p->child; f; f = f->next) {
                if (!f->string || !f->string[0]) {
                    rc = fail(w, f, "%s.parameters: a parameter with an empty name", sp);
                    goto out;
                }
                if (!cJSON_IsString(f)) {
                    rc = fail(w, f, "%s.parameters.%.64s: not a string", sp, f->string);
                    goto out;
                }
                if (cJSON_GetObjectItemCaseSensitive(params, f->string)) {
                    rc = fail(w, f, "%s.parameters.%.64s: given twice", sp, f->string);
                    goto out;
                }
                if (cJSON_GetArraySize(params) >= RECORD_PARAMS_MAX) {
                    rc = fail(w, f, "%s.parameters: more than %d", sp, RECORD_PARAMS_MAX);
                    goto out;
                }
                if (!cJSON_AddStringToObject(params, f->string, f->valuestring)) {
                    rc = mm_error_set(w->err, -ENOMEM, "%s: out of memory", sp);
                    goto out;
                }
            }
        }
    }
    /* The annotations older ModelMesh Serving read when the spec has no such field. */
    if (ann && !s->has_key) {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(ann, "serving.kserve.io/secretKey");
        if (cJSON_IsString(k) && k->valuestring[0] &&
            strlen(k->valuestring) < sizeof(s->storage_key) &&
            keys_check_name("storage key", k->valuestring, NULL) == 0) {
            strcpy(s->storage_key, k->valuestring);
            s->has_key = true;
        }
    }
    if (ann && !s->has_schema_path) {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(ann, "serving.kserve.io/schemaPath");
        if (cJSON_IsString(k) && strlen(k->valuestring) < sizeof(s->schema_path)) {
            strcpy(s->schema_path, k->valuestring);
            s->has_schema_path = true;
        }
    }
    s->has_storage = st || uri_given;
    if (!s->has_storage) {
        set_invalid(s, ISVC_REASON_INVALID_PREDICTOR_SPEC, "Predictor Storage field missing");
    } else if (uri_given && s->has_path) {
        set_invalid(s, ISVC_REASON_INVALID_PREDICTOR_SPEC, "%s: path and storageUri both set",
                    sp);
    } else if (uri_given) {
        char *uparams = NULL, *upath = NULL;
        struct mm_error uerr;
        if (stcfg_parse_uri(s->storage_uri, &uparams, &upath, &uerr) < 0) {
            set_invalid(s, ISVC_REASON_INVALID_PREDICTOR_SPEC, "%s.storageUri: %s", path,
                        uerr.msg);
        } else if (strlen(upath) >= sizeof(s->storage_path)) {
            set_invalid(s, ISVC_REASON_INVALID_PREDICTOR_SPEC, "%s.storageUri: path longer "
                        "than %zu bytes", path, sizeof(s->storage_path) - 1);
        } else {
            strcpy(s->storage_path, upath);
            s->has_path = true;
            cJSON *u = cJSON_Parse(uparams);
            rc = u ? overlay(params, u) : -ENOMEM;
            cJSON_Delete(u);
            if (rc < 0) {
                free(uparams);
                free(upath);
                rc = mm_error_set(w->err, -ENOMEM, "%s: out of memory", sp);
                goto out;
            }
        }
        free(uparams);
        free(upath);
    } else if (!s->has_path || !s->storage_path[0]) {
        set_invalid(s, ISVC_REASON_INVALID_PREDICTOR_SPEC,
                    "%s.path: missing (and no storageUri)", sp);
    }
    char ppath[112];
    snprintf(ppath, sizeof(ppath), "%s.parameters", sp);
    rc = sorted_params_text(w, pnode, params, s->storage_params, sizeof(s->storage_params),
                            ppath);
out:
    cJSON_Delete(params);
    return rc;
}

int isvc_parse(const cJSON *doc, struct isvc *out, const cJSON **where, struct mm_error *err)
{
    struct walk w = {.where = where, .err = err};
    memset(out, 0, sizeof(*out));
    if (where)
        *where = NULL;
    int rc;
    const cJSON *ann = NULL, *meta = NULL, *spec = NULL, *pred = NULL, *impl = NULL;
    if ((rc = check_kind(&w, doc, "serving.kserve.io/v1beta1", "InferenceService", NULL,
                         NULL)) < 0 ||
        (rc = parse_metadata(&w, doc, true, out->name, sizeof(out->name), out->ns,
                             &out->generation, &ann, &meta)) < 0)
        goto fail;
    if (ann) {
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(ann, ISVC_ANNOTATION_MODE);
        out->modelmesh = cJSON_IsString(mode) && strcmp(mode->valuestring, "ModelMesh") == 0;
    }
    char path[64];
    if ((rc = object_at(&w, doc, "", "spec", true, &spec)) < 0 ||
        (rc = object_at(&w, spec, "spec", "predictor", true, &pred)) < 0 ||
        (rc = parse_predictor_impl(&w, pred, out, &impl, path, sizeof(path))) < 0 ||
        (rc = parse_storage(&w, impl, path, ann, out)) < 0)
        goto fail;
    for (size_t i = 0; out->format[i] && i + 1 < sizeof(out->type); i++) {
        char c = out->format[i];
        out->type[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (isvc_revision(out, out->revision, sizeof(out->revision)) < 0) {
        rc = mm_error_set(err, -ENOMEM, "%s: out of memory", out->name);
        goto fail;
    }
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    return rc;
}

/* Parse text as registry values are checked (names twice, NUL, control characters, UTF-8). */
static cJSON *parse_checked(const char *what, const char *json, size_t len,
                            struct mm_error *err)
{
    if (len > ISVC_MAX_BYTES) {
        mm_error_set(err, -E2BIG, "%s: %zu bytes, the limit is %d", what, len, ISVC_MAX_BYTES);
        return NULL;
    }
    char key[KEYS_MAX];
    if (keys_isvc(key, sizeof(key), "c", "ns", "name", err) < 0)
        return NULL;
    if (record_validate_at(key, strlen(key), "c", json, len, err) < 0) {
        mm_error_prefix(err, "%s: ", what);
        return NULL;
    }
    cJSON *doc = cJSON_ParseWithLength(json, len);
    if (!doc)
        mm_error_set(err, -ENOMEM, "%s: out of memory", what);
    return doc;
}

int isvc_parse_text(const char *json, size_t len, struct isvc *out, struct mm_error *err)
{
    memset(out, 0, sizeof(*out));
    cJSON *doc = parse_checked("InferenceService", json, len, err);
    if (!doc)
        return err && err->code ? err->code : -EINVAL;
    int rc = isvc_parse(doc, out, NULL, err);
    cJSON_Delete(doc);
    return rc;
}

/* ---------------------------------------------------------------- canonical JSON */

/* A JSON string as Go's encoding/json writes it (HTML-safe escapes included), so that the
 * SHA-1 matches upstream's for any text. */
static int go_string(struct mm_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    int rc = mm_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        unsigned char c = *p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            rc = mm_buf_append(b, esc, 2);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            rc = mm_buf_append(b, esc, 2);
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            rc = mm_buf_append(b, esc, 6);
        } else if (c == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
            rc = mm_buf_append(b, p[2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
            p += 2;
        } else {
            rc = mm_buf_append(b, (const char *)p, 1);
        }
    }
    return rc ? rc : mm_buf_append(b, "\"", 1);
}

static int lit(struct mm_buf *b, const char *s)
{
    return mm_buf_append(b, s, strlen(s));
}

/* ModelMesh Serving's PredictorSpec marshalled by Go, fields in its declaration order. The
 * deprecated top-level schemaPath is never set from an InferenceService (its schema path goes
 * into storage), and the storage's parameters are always there, {} when empty. */
char *isvc_canonical_json(const struct isvc *s)
{
    struct mm_buf b = {0};
    cJSON *params = NULL;
    int rc = lit(&b, "{\"modelType\":{\"name\":");
    rc = rc ? rc : go_string(&b, s->format);
    if (!rc && s->format_version[0]) {
        rc = lit(&b, ",\"version\":");
        rc = rc ? rc : go_string(&b, s->format_version);
    }
    rc = rc ? rc : lit(&b, "},\"path\":\"\"");
    if (!rc && s->has_storage) {
        rc = lit(&b, ",\"storage\":{");
        if (!rc && s->has_path) {
            rc = lit(&b, "\"path\":");
            rc = rc ? rc : go_string(&b, s->storage_path);
            rc = rc ? rc : lit(&b, ",");
        }
        if (!rc && s->has_schema_path) {
            rc = lit(&b, "\"schemaPath\":");
            rc = rc ? rc : go_string(&b, s->schema_path);
            rc = rc ? rc : lit(&b, ",");
        }
        rc = rc ? rc : lit(&b, "\"parameters\":{");
        if (!rc && s->storage_params[0]) {
            params = cJSON_Parse(s->storage_params);
            if (!params)
                rc = -ENOMEM;
            for (const cJSON *f = params ? params->child : NULL; !rc && f; f = f->next) {
                if (f != params->child)
                    rc = lit(&b, ",");
                rc = rc ? rc : go_string(&b, f->string);
                rc = rc ? rc : lit(&b, ":");
                rc = rc ? rc : go_string(&b, cJSON_IsString(f) ? f->valuestring : "");
            }
        }
        rc = rc ? rc : lit(&b, "}");
        if (!rc && s->has_key) {
            rc = lit(&b, ",\"key\":");
            rc = rc ? rc : go_string(&b, s->storage_key);
        }
        rc = rc ? rc : lit(&b, "}");
    }
    if (!rc && s->runtime[0]) {
        rc = lit(&b, ",\"runtime\":{\"name\":");
        rc = rc ? rc : go_string(&b, s->runtime);
        rc = rc ? rc : lit(&b, "}");
    }
    if (!rc && s->protocol[0]) {
        rc = lit(&b, ",\"protocolVersion\":");
        rc = rc ? rc : go_string(&b, s->protocol);
    }
    rc = rc ? rc : mm_buf_append(&b, "}", 1);
    cJSON_Delete(params);
    if (rc) {
        mm_buf_free(&b);
        return NULL;
    }
    return b.data; /* NUL-terminated, the caller's */
}

int isvc_revision(const struct isvc *s, char *out, size_t size)
{
    char *canon = isvc_canonical_json(s);
    if (!canon)
        return -ENOMEM;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha1(), NULL);
    free(canon);
    if (!ok || mdlen < 5)
        return -ENOMEM;
    int n = snprintf(out, size, "%s__isvc-%02x%02x%02x%02x%02x", s->name, md[0], md[1], md[2],
                     md[3], md[4]);
    if (n < 0 || (size_t)n >= size)
        return -ENOSPC;
    return 0;
}

int isvc_model_info(const struct isvc *s, struct mesh_model_info *info, char *keybuf,
                    size_t keysize, struct mm_error *err)
{
    memset(info, 0, sizeof(*info));
    if (s->invalid != ISVC_REASON_NONE)
        return mm_error_set(err, -EINVAL, "InferenceService %s: %s", s->name, s->invalid_msg);
    if (keysize)
        keybuf[0] = '\0';
    int n;
    if (!s->storage_params[0] && !s->has_schema_path) {
        n = snprintf(keybuf, keysize, "%s", s->has_key ? s->storage_key : "");
    } else {
        cJSON *k = cJSON_CreateObject();
        cJSON *p = s->storage_params[0] ? cJSON_Parse(s->storage_params) : NULL;
        bool ok = k && (!s->storage_params[0] || p);
        if (ok && s->has_key)
            ok = cJSON_AddStringToObject(k, "storage_key", s->storage_key) != NULL;
        if (ok && p) {
            ok = cJSON_AddItemToObject(k, "storage_params", p);
            if (ok)
                p = NULL;
        }
        if (ok && s->has_schema_path)
            ok = cJSON_AddStringToObject(k, "schema_path", s->schema_path) != NULL;
        char *text = ok ? cJSON_PrintUnformatted(k) : NULL;
        cJSON_Delete(k);
        cJSON_Delete(p);
        if (!text)
            return mm_error_set(err, -ENOMEM, "InferenceService %s: out of memory", s->name);
        n = snprintf(keybuf, keysize, "%s", text);
        free(text);
    }
    if (n < 0 || (size_t)n >= keysize)
        return mm_error_set(err, -ENOSPC, "InferenceService %s: the model key needs %d bytes",
                            s->name, n + 1);
    info->type = s->type;
    info->path = s->storage_path;
    info->key = keybuf;
    return 0;
}

int isvc_owner(const char *ns, char *out, size_t size)
{
    int n = snprintf(out, size, "isvc:%s", ns && ns[0] ? ns : ISVC_DEFAULT_NAMESPACE);
    return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}

/* ---------------------------------------------------------------- ServingRuntime */

int isvc_runtime_parse(const cJSON *doc, struct isvc_runtime *out, const cJSON **where,
                       struct mm_error *err)
{
    struct walk w = {.where = where, .err = err};
    memset(out, 0, sizeof(*out));
    if (where)
        *where = NULL;
    char kind[128];
    const cJSON *ann, *meta, *spec, *formats, *protos;
    int rc;
    if ((rc = check_kind(&w, doc, "serving.kserve.io/v1alpha1", "ServingRuntime",
                         "ClusterServingRuntime", kind)) < 0 ||
        (rc = parse_metadata(&w, doc, false, out->name, sizeof(out->name), out->ns, NULL, &ann,
                             &meta)) < 0)
        goto fail;
    out->cluster = strcmp(kind, "ClusterServingRuntime") == 0;
    if (ann) {
        const cJSON *mlc = cJSON_GetObjectItemCaseSensitive(ann, "maxLoadingConcurrency");
        if (mlc) {
            char *end = NULL;
            unsigned long v = strtoul(mlc->valuestring, &end, 10);
            if (!mlc->valuestring[0] || *end || v > 1000000) {
                rc = fail(&w, mlc, "metadata.annotations.maxLoadingConcurrency: not an integer "
                          "in [0, 1000000]");
                goto fail;
            }
            out->max_loading_concurrency = (uint32_t)v;
        }
    }
    if ((rc = object_at(&w, doc, "", "spec", true, &spec)) < 0 ||
        (rc = bool_at(&w, spec, "spec", "multiModel", &out->multi_model)) < 0 ||
        (rc = bool_at(&w, spec, "spec", "disabled", &out->disabled)) < 0 ||
        (rc = string_at(&w, spec, "spec", "grpcEndpoint", out->grpc_endpoint,
                        sizeof(out->grpc_endpoint), NULL)) < 0 ||
        (rc = string_at(&w, spec, "spec", "grpcDataEndpoint", out->grpc_data_endpoint,
                        sizeof(out->grpc_data_endpoint), NULL)) < 0 ||
        (rc = member(&w, spec, "spec", "supportedModelFormats", &formats)) < 0 ||
        (rc = member(&w, spec, "spec", "protocolVersions", &protos)) < 0)
        goto fail;
    if (formats && !cJSON_IsNull(formats)) {
        if (!cJSON_IsArray(formats)) {
            rc = fail(&w, formats, "spec.supportedModelFormats: not a list");
            goto fail;
        }
        int i = 0;
        for (const cJSON *f = formats->child; f; f = f->next, i++) {
            char p[64];
            snprintf(p, sizeof(p), "spec.supportedModelFormats[%d]", i);
            if (i >= ISVC_RT_FORMATS_MAX) {
                rc = fail(&w, f, "spec.supportedModelFormats: more than %d", ISVC_RT_FORMATS_MAX);
                goto fail;
            }
            if (!cJSON_IsObject(f)) {
                rc = fail(&w, f, "%s: not an object", p);
                goto fail;
            }
            struct isvc_runtime_format *rf = &out->formats[i];
            bool given;
            int64_t prio;
            if ((rc = string_at(&w, f, p, "name", rf->name, sizeof(rf->name), &given)) < 0 ||
                (rc = string_at(&w, f, p, "version", rf->version, sizeof(rf->version), NULL)) <
                    0 ||
                (rc = bool_at(&w, f, p, "autoSelect", &rf->auto_select)) < 0 ||
                (rc = int_at(&w, f, p, "priority", 0, 2147483647.0, &prio)) < 0)
                goto fail;
            if (!given || !rf->name[0]) {
                rc = fail(&w, f, "%s.name: missing", p);
                goto fail;
            }
            rf->priority = (int32_t)prio;
            out->n_formats++;
        }
    }
    if (protos && !cJSON_IsNull(protos)) {
        if (!cJSON_IsArray(protos)) {
            rc = fail(&w, protos, "spec.protocolVersions: not a list");
            goto fail;
        }
        int i = 0;
        for (const cJSON *p = protos->child; p; p = p->next, i++) {
            if (i >= ISVC_RT_PROTOCOLS_MAX) {
                rc = fail(&w, p, "spec.protocolVersions: more than %d", ISVC_RT_PROTOCOLS_MAX);
                goto fail;
            }
            if (!cJSON_IsString(p) || !p->valuestring[0] ||
                strlen(p->valuestring) >= sizeof(out->protocols[0])) {
                rc = fail(&w, p, "spec.protocolVersions[%d]: not a string of 1 to %zu bytes", i,
                          sizeof(out->protocols[0]) - 1);
                goto fail;
            }
            strcpy(out->protocols[i], p->valuestring);
            out->n_protocols++;
        }
    }
    if (out->n_protocols == 0) {
        strcpy(out->protocols[0], "grpc-v2");
        out->n_protocols = 1;
    }
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    return rc;
}

int isvc_runtime_parse_text(const char *json, size_t len, struct isvc_runtime *out,
                            struct mm_error *err)
{
    memset(out, 0, sizeof(*out));
    cJSON *doc = parse_checked("ServingRuntime", json, len, err);
    if (!doc)
        return err && err->code ? err->code : -EINVAL;
    int rc = isvc_runtime_parse(doc, out, NULL, err);
    cJSON_Delete(doc);
    return rc;
}

/* ---------------------------------------------------------------- matching */

/* "v2" and "grpc-v2" name one protocol family on ModelMesh's single gRPC port; so do "v1" and
 * "grpc-v1". */
static bool protocol_matches(const char *want, const char *have)
{
    if (strcasecmp(want, have) == 0)
        return true;
    const char *w = strncasecmp(want, "grpc-", 5) == 0 ? want + 5 : want;
    const char *h = strncasecmp(have, "grpc-", 5) == 0 ? have + 5 : have;
    return strcasecmp(w, h) == 0;
}

/* The format of rt that serves s (auto: autoSelect required), or NULL. */
static const struct isvc_runtime_format *supports(const struct isvc *s,
                                                  const struct isvc_runtime *rt, bool auto_only)
{
    if (s->protocol[0]) {
        bool ok = false;
        for (uint32_t i = 0; i < rt->n_protocols && !ok; i++)
            ok = protocol_matches(s->protocol, rt->protocols[i]);
        if (!ok)
            return NULL;
    }
    const struct isvc_runtime_format *best = NULL;
    for (uint32_t i = 0; i < rt->n_formats; i++) {
        const struct isvc_runtime_format *f = &rt->formats[i];
        if (strcasecmp(f->name, s->format) != 0)
            continue;
        if (s->format_version[0] && strcmp(f->version, s->format_version) != 0)
            continue;
        if (auto_only && !f->auto_select)
            continue;
        if (!best || f->priority > best->priority)
            best = f;
    }
    return best;
}

static bool in_namespace(const struct isvc *s, const struct isvc_runtime *rt)
{
    return rt->cluster || !rt->ns[0] || !s->ns[0] || strcmp(rt->ns, s->ns) == 0;
}

int isvc_match_runtime(const struct isvc *s, const struct isvc_runtime *rts, size_t n,
                       size_t *chosen, enum isvc_reason *reason, struct mm_error *err)
{
    if (reason)
        *reason = ISVC_REASON_NONE;
    if (s->runtime[0]) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(rts[i].name, s->runtime) != 0 || !in_namespace(s, &rts[i]))
                continue;
            if (rts[i].disabled || !rts[i].multi_model || !supports(s, &rts[i], false)) {
                if (reason)
                    *reason = ISVC_REASON_NO_SUPPORTING_RUNTIME;
                return mm_error_set(err, -ENOTSUP, "Specified runtime does not support "
                                    "specified model type and/or protocol");
            }
            *chosen = i;
            return 0;
        }
        if (reason)
            *reason = ISVC_REASON_RUNTIME_NOT_RECOGNIZED;
        return mm_error_set(err, -ENOENT, "Specified runtime name not recognized");
    }
    size_t best = n;
    int32_t best_prio = 0;
    for (size_t i = 0; i < n; i++) {
        const struct isvc_runtime *rt = &rts[i];
        if (rt->disabled || !rt->multi_model || !in_namespace(s, rt))
            continue;
        const struct isvc_runtime_format *f = supports(s, rt, true);
        if (!f)
            continue;
        bool better = best == n || f->priority > best_prio;
        if (!better && f->priority == best_prio) {
            const struct isvc_runtime *b = &rts[best];
            if (b->cluster != rt->cluster)
                better = !rt->cluster;
            else
                better = strcmp(rt->name, b->name) < 0;
        }
        if (better) {
            best = i;
            best_prio = f->priority;
        }
    }
    if (best == n) {
        if (reason)
            *reason = ISVC_REASON_NO_SUPPORTING_RUNTIME;
        return mm_error_set(err, -ENOTSUP,
                            "No ServingRuntime supports specified model type and/or protocol");
    }
    *chosen = best;
    return 0;
}
