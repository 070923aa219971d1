/* records.c - JSON codecs of the registry records, driven by one field table per record. */
#include "mm/records.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mm/keys.h"
#include "mm/log.h"

#define MAX_EXACT 9007199254740992.0 /* 2^53: integers above lose precision as JSON numbers */

enum field_type {
    F_STR, F_U64, F_I64, F_U32, F_COPY_STATE, F_FAILURE, F_BOOL, F_LABELS, F_ID64,
    F_U64_OPT, /* a uint64_t left out when 0 */
    F_PARAMS,  /* a JSON object of strings, held as its compact text ("" = absent) */
};

struct field {
    const char *name;
    enum field_type type;
    size_t offset;
    size_t size;   /* F_STR: buffer size */
    bool required;
};

#define STR(T, f, req) {#f, F_STR, offsetof(T, f), sizeof(((T *)0)->f), req}
#define NUM(T, f, t) {#f, t, offsetof(T, f), 0, false}

static const struct field instance_fields[] = {
    STR(struct instance_record, address, true),
    STR(struct instance_record, runtime, false),
    STR(struct instance_record, zone, false),
    NUM(struct instance_record, capacity_bytes, F_U64),
    NUM(struct instance_record, used_bytes, F_U64),
    NUM(struct instance_record, loaded_count, F_U32),
    NUM(struct instance_record, lru_oldest_ms, F_I64),
    NUM(struct instance_record, start_ms, F_I64),
    NUM(struct instance_record, labels, F_LABELS),
    NUM(struct instance_record, loading_count, F_U32),
    NUM(struct instance_record, loading_threads, F_U32),
    NUM(struct instance_record, load_timeout_ms, F_U32),
    NUM(struct instance_record, shutting_down, F_BOOL),
    NUM(struct instance_record, lease, F_ID64),
    STR(struct instance_record, version, false),
    STR(struct instance_record, runtime_version, false),
    NUM(struct instance_record, default_model_size_bytes, F_U64_OPT),
    {0},
};

static const struct field failure_fields[] = {
    STR(struct model_failure, message, false),
    NUM(struct model_failure, time_ms, F_I64),
    STR(struct model_failure, instance, false),
    {0},
};

static const struct field model_fields[] = {
    STR(struct model_record, type, true),
    STR(struct model_record, runtime, false),
    STR(struct model_record, storage_key, false),
    STR(struct model_record, storage_path, false),
    NUM(struct model_record, size_bytes, F_U64),
    NUM(struct model_record, last_used_ms, F_I64),
    {"last_failure", F_FAILURE, offsetof(struct model_record, last_failure), 0, false},
    NUM(struct model_record, load_now, F_BOOL),
    NUM(struct model_record, registered_ms, F_I64),
    NUM(struct model_record, auto_delete, F_BOOL),
    {"storage_params", F_PARAMS, offsetof(struct model_record, storage_params),
     sizeof(((struct model_record *)0)->storage_params), false},
    {0},
};

static const struct field copy_fields[] = {
    {"state", F_COPY_STATE, offsetof(struct copy_record, state), 0, true},
    NUM(struct copy_record, since_ms, F_I64),
    NUM(struct copy_record, size_bytes, F_U64),
    STR(struct copy_record, error, false),
    NUM(struct copy_record, bytes_pulled, F_U64_OPT),
    NUM(struct copy_record, bytes_total, F_U64_OPT),
    {0},
};

static const struct field vmodel_fields[] = {
    STR(struct vmodel_record, active_model_id, false),
    STR(struct vmodel_record, target_model_id, false),
    STR(struct vmodel_record, owner, false),
    {0},
};

static const struct field election_fields[] = {
    STR(struct election_record, leader, true),
    NUM(struct election_record, since_ms, F_I64),
    {0},
};

static const struct {
    const char *name;
    const struct field *fields;
    size_t size;
} kinds[] = {
    [RECORD_INSTANCE] = {"instance", instance_fields, sizeof(struct instance_record)},
    [RECORD_MODEL] = {"model", model_fields, sizeof(struct model_record)},
    [RECORD_COPY] = {"copy", copy_fields, sizeof(struct copy_record)},
    [RECORD_VMODEL] = {"vmodel", vmodel_fields, sizeof(struct vmodel_record)},
    [RECORD_ELECTION] = {"election", election_fields, sizeof(struct election_record)},
};

static const char *const state_names[] = {"Pending", "Loading", "Loaded", "Failed"};

const char *copy_state_name(enum copy_state s)
{
    return (unsigned)s < 4 ? state_names[s] : "Unknown";
}

int copy_state_parse(const char *name, enum copy_state *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum copy_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *record_kind_name(enum record_kind kind)
{
    return (unsigned)kind <= RECORD_ELECTION ? kinds[kind].name : "unknown";
}

/* ---------------------------------------------------------------- encode */

static bool add_fields(cJSON *o, const struct field *fields, const char *base)
{
    for (const struct field *f = fields; f->name; f++) {
        const char *p = base + f->offset;
        cJSON *v = NULL;
        char num[24];
        switch (f->type) {
        case F_STR:
            if (!p[0] && !f->required)
                continue; /* absent = empty: keep values short */
            v = cJSON_CreateString(p);
            break;
        /* Integers are written as exact text: cJSON prints doubles with 15 significant
         * digits, which would round sizes and times above 10^15. */
        case F_U64_OPT:
            if (*(const uint64_t *)p == 0)
                continue;
            /* fallthrough */
        case F_U64:
            snprintf(num, sizeof(num), "%" PRIu64, *(const uint64_t *)p);
            v = cJSON_CreateRaw(num);
            break;
        case F_PARAMS:
            if (!p[0])
                continue;
            /* Parsed, not copied raw: the text is ours (decoded or built through
             * record_params_text), and a malformed one must not make the record invalid. */
            v = cJSON_Parse(p);
            if (!cJSON_IsObject(v)) {
                cJSON_Delete(v);
                return false;
            }
            break;
        case F_I64:
            snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)p);
            v = cJSON_CreateRaw(num);
            break;
        case F_U32:
            snprintf(num, sizeof(num), "%" PRIu32, *(const uint32_t *)p);
            v = cJSON_CreateRaw(num);
            break;
        case F_COPY_STATE:
            v = cJSON_CreateString(copy_state_name(*(const enum copy_state *)p));
            break;
        case F_BOOL:
            v = cJSON_CreateBool(*(const bool *)p);
            break;
        case F_ID64: /* a string: ids use all 64 bits, beyond what JSON numbers keep exact */
            if (*(const int64_t *)p == 0)
                continue;
            snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)p);
            v = cJSON_CreateString(num);
            break;
        case F_LABELS: {
            const struct record_labels *l = (const struct record_labels *)p;
            if (l->n == 0)
                continue;
            v = cJSON_CreateArray();
            for (uint32_t i = 0; v && i < l->n && i < RECORD_LABELS_MAX; i++) {
                cJSON *s = cJSON_CreateString(l->label[i]);
                if (!s || !cJSON_AddItemToArray(v, s)) {
                    cJSON_Delete(s);
                    cJSON_Delete(v);
                    v = NULL;
                }
            }
            break;
        }
        case F_FAILURE:
            if (!((const struct model_failure *)p)->message[0])
                continue;
            v = cJSON_CreateObject();
            if (v && !add_fields(v, failure_fields, p)) {
                cJSON_Delete(v);
                return false;
            }
            break;
        }
        if (!v || !cJSON_AddItemToObject(o, f->name, v)) {
            cJSON_Delete(v);
            return false;
        }
    }
    return true;
}

char *record_encode(enum record_kind kind, const void *rec)
{
    if ((unsigned)kind > RECORD_ELECTION)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    if (o && cJSON_AddNumberToObject(o, "v", RECORD_VERSION) &&
        add_fields(o, kinds[kind].fields, rec))
        out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* ---------------------------------------------------------------- what cJSON lets through */

/* cJSON accepts what other readers of the same value would read differently: a name given twice
 * (cJSON finds the first, Go and Python keep the last), "\u0000" or a raw NUL in a string (cut
 * there by every C reader), raw control characters and bytes that are not UTF-8 (Go and Python
 * refuse them or read U+FFFD). Values holding any of these are refused, naming the field. */

#define PATH_MAX_SHOWN 96

struct text_scan {
    const char *p, *end;
    char path[PATH_MAX_SHOWN + 8]; /* "last_failure.message", bytes escaped, cut at the end */
    size_t path_len;
    bool in_name; /* the problem is in the last name of the path (shown up to it) */
};

/* Append bytes to the path for messages: printable ASCII as is, the rest as \xNN. */
static void path_push(struct text_scan *t, const char *name, size_t len)
{
    if (t->path_len && t->path_len < PATH_MAX_SHOWN)
        t->path[t->path_len++] = '.';
    for (size_t i = 0; i < len && t->path_len < PATH_MAX_SHOWN; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            t->path[t->path_len++] = (char)ch;
        else
            t->path_len += (size_t)snprintf(t->path + t->path_len, 5, "\\x%02x", ch);
    }
    if (t->path_len >= PATH_MAX_SHOWN) {
        memcpy(t->path + PATH_MAX_SHOWN, "...", 3);
        t->path_len = PATH_MAX_SHOWN + 3;
    }
    t->path[t->path_len] = '\0';
}

/* The string at t->p (its opening quote), which cJSON has read already: find what it let
 * through. Leaves t->p after the closing quote; *raw, *raw_len: the text between the
 * quotes. */
static const char *scan_string(struct text_scan *t, const char **raw, size_t *raw_len)
{
    const char *p = ++t->p, *why = NULL;
    uint32_t cp;
    *raw = p;
    while (!why && p < t->end && *p != '"') {
        unsigned char ch = (unsigned char)*p;
        size_t n = 1;
        if (ch == '\\') {
            if (p + 5 < t->end && p[1] == 'u' && memcmp(p + 2, "0000", 4) == 0)
                why = "holds \\u0000 (a NUL)";
            n = p + 1 < t->end ? 2 : 1;
        } else if (ch == 0) {
            why = "holds a NUL byte";
        } else if (ch < 0x20) {
            why = "holds a control character that is not escaped";
        } else if ((n = mm_utf8_char(p, (size_t)(t->end - p), &cp)) == 0) {
            why = "is not valid UTF-8";
        }
        if (!why)
            p += n;
    }
    *raw_len = (size_t)(p - *raw); /* on a problem: the text before it */
    t->p = p < t->end && !why ? p + 1 : p;
    return why;
}

static void skip_space(struct text_scan *t)
{
    while (t->p < t->end && strchr(" \t\r\n", *t->p) && *t->p)
        t->p++;
}

/* One value at t->p; NULL, or what is wrong with it (t->path says where). */
static const char *scan_value(struct text_scan *t)
{
    skip_space(t);
    if (t->p >= t->end)
        return NULL;
    const char *raw;
    size_t raw_len;
    if (*t->p == '"')
        return scan_string(t, &raw, &raw_len);
    if (*t->p != '{' && *t->p != '[') { /* number, true, false, null */
        while (t->p < t->end && !strchr(",]} \t\r\n", *t->p))
            t->p++;
        return NULL;
    }
    bool object = *t->p++ == '{';
    for (;;) {
        skip_space(t);
        if (t->p >= t->end)
            return NULL;
        if (*t->p == (object ? '}' : ']')) {
            t->p++;
            return NULL;
        }
        if (*t->p == ',') {
            t->p++;
            continue;
        }
        size_t saved = t->path_len;
        if (object) {
            const char *why = scan_string(t, &raw, &raw_len);
            path_push(t, raw, raw_len); /* on a problem in the name: as far as it goes */
            if (why) {
                t->in_name = true;
                return why;
            }
            skip_space(t);
            if (t->p < t->end && *t->p == ':')
                t->p++;
        }
        const char *why = scan_value(t);
        if (why)
            return why;
        t->path_len = saved;
        t->path[saved] = '\0';
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A name that appears twice in any object of the tree: 1 with t->path naming it, 0, or
 * -ENOMEM. Sorting keeps a value of thousands of names linear-logarithmic. */
static int find_duplicate(const cJSON *o, struct text_scan *t)
{
    if (!cJSON_IsObject(o) && !cJSON_IsArray(o))
        return 0;
    size_t n = 0;
    for (const cJSON *c = o->child; c; c = c->next, n++) {
        size_t saved = t->path_len;
        if (cJSON_IsObject(o))
            path_push(t, c->string, strlen(c->string));
        int rc = find_duplicate(c, t);
        if (rc != 0)
            return rc;
        t->path_len = saved;
        t->path[saved] = '\0';
    }
    if (!cJSON_IsObject(o) || n < 2)
        return 0;
    const cJSON **names = malloc(n * sizeof(*names));
    if (!names)
        return -ENOMEM;
    size_t i = 0;
    for (const cJSON *c = o->child; c; c = c->next)
        names[i++] = c;
    qsort(names, n, sizeof(*names), by_name);
    int rc = 0;
    for (i = 1; i < n && rc == 0; i++) {
        if (strcmp(names[i - 1]->string, names[i]->string) == 0) {
            path_push(t, names[i]->string, strlen(names[i]->string));
            rc = 1;
        }
    }
    free(names);
    return rc;
}

/* The checks above for json (len bytes, parsed into root by cJSON); what = "model record" or
 * "the value". 0, or -EINVAL (-ENOMEM) with err naming the field. */
static int check_text(const char *what, const char *json, size_t len, const cJSON *root,
                      struct mm_error *err)
{
    struct text_scan t = {.p = json, .end = json + len};
    const char *why = scan_value(&t);
    if (why) {
        if (t.path_len == 0)
            return mm_error_set(err, -EINVAL, "%s: a string %s", what, why);
        return mm_error_set(err, -EINVAL, "%s: %s '%s%s' %s", what,
                            t.in_name ? "the name of field" : "field", t.path,
                            t.in_name ? "..." : "", why);
    }
    struct text_scan names = {0};
    int rc = find_duplicate(root, &names);
    if (rc < 0)
        return mm_error_set(err, rc, "%s: out of memory", what);
    if (rc > 0)
        return mm_error_set(err, -EINVAL,
                            "%s: field '%s' is given twice (readers differ on which one counts)",
                            what, names.path);
    return 0;
}

/* Parse exactly json[0..len) (space may follow the value); NULL with *at = where it breaks. */
static cJSON *parse_whole(const char *json, size_t len, size_t *at)
{
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(json, len, &end, false);
    *at = end && end >= json ? (size_t)(end - json) : 0;
    while (o && *at < len && json[*at] && strchr(" \t\r\n", json[*at]))
        (*at)++;
    if (o && *at != len) {
        cJSON_Delete(o);
        o = NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- decode */

static int integer(const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v))
        return -EINVAL;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
        return -EINVAL;
    *out = d;
    return 0;
}

/* A 64-bit id: a string of decimal digits (a '-' allowed first) within int64, or a JSON
 * integer up to 2^53 (a value written by hand). */
static int id64(const cJSON *v, int64_t *out)
{
    double d;
    if (integer(v, -MAX_EXACT, MAX_EXACT, &d) == 0) {
        *out = (int64_t)d;
        return 0;
    }
    if (!cJSON_IsString(v))
        return -EINVAL;
    const char *s = v->valuestring;
    bool neg = s[0] == '-';
    const char *digits = s + neg;
    if (!digits[0] || strlen(digits) > 19 || strspn(digits, "0123456789") != strlen(digits))
        return -EINVAL;
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno == ERANGE || *end)
        return -EINVAL;
    *out = (int64_t)n;
    return 0;
}

static int decode_fields(const char *what, const struct field *fields, const cJSON *o, char *base,
                         struct mm_error *err)
{
    for (const struct field *f = fields; f->name; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f->name);
        char *p = base + f->offset;
        if (!v || cJSON_IsNull(v)) {
            if (f->required)
                return mm_error_set(err, -EINVAL, "%s record: field '%s' is required", what,
                                    f->name);
            continue;
        }
        double d;
        switch (f->type) {
        case F_STR: {
            if (!cJSON_IsString(v))
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must be a string", what,
                                    f->name);
            size_t n = strlen(v->valuestring);
            if (n >= f->size)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' is %zu bytes, the limit is %zu", what,
                                    f->name, n, f->size - 1);
            if (f->required && n == 0)
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must not be empty",
                                    what, f->name);
            memcpy(p, v->valuestring, n + 1);
            break;
        }
        case F_PARAMS: {
            int rc = record_params_text(v, p, f->size, err);
            if (rc < 0) {
                mm_error_prefix(err, "%s record: field '%s': ", what, f->name);
                return rc;
            }
            break;
        }
        case F_U64:
        case F_U64_OPT:
            if (integer(v, 0, MAX_EXACT, &d) < 0)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' must be a non-negative integer "
                                    "(at most 2^53)", what, f->name);
            *(uint64_t *)p = (uint64_t)d;
            break;
        case F_I64:
            if (integer(v, -MAX_EXACT, MAX_EXACT, &d) < 0)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' must be an integer (|n| <= 2^53)", what,
                                    f->name);
            *(int64_t *)p = (int64_t)d;
            break;
        case F_U32:
            if (integer(v, 0, 4294967295.0, &d) < 0)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' must be an integer in 0..4294967295",
                                    what, f->name);
            *(uint32_t *)p = (uint32_t)d;
            break;
        case F_COPY_STATE:
            if (!cJSON_IsString(v) || copy_state_parse(v->valuestring, (enum copy_state *)p) < 0)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' must be one of Pending, Loading, "
                                    "Loaded, Failed", what, f->name);
            break;
        case F_BOOL:
            if (!cJSON_IsBool(v))
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must be true or false",
                                    what, f->name);
            *(bool *)p = cJSON_IsTrue(v);
            break;
        case F_ID64:
            if (id64(v, (int64_t *)p) < 0)
                return mm_error_set(err, -EINVAL,
                                    "%s record: field '%s' must be a 64-bit integer as a decimal "
                                    "string (or a JSON integer up to 2^53)", what, f->name);
            break;
        case F_LABELS: {
            struct record_labels *l = (struct record_labels *)p;
            if (!cJSON_IsArray(v))
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must be an array of "
                                    "strings", what, f->name);
            int n = cJSON_GetArraySize(v);
            if (n > RECORD_LABELS_MAX)
                return mm_error_set(err, -EINVAL, "%s record: field '%s' has %d entries, the "
                                    "limit is %d", what, f->name, n, RECORD_LABELS_MAX);
            int i = 0;
            for (const cJSON *s = v->child; s; s = s->next, i++) {
                size_t len = cJSON_IsString(s) ? strlen(s->valuestring) : 0;
                if (!cJSON_IsString(s) || len == 0 || len >= RECORD_LABEL_BYTES)
                    return mm_error_set(err, -EINVAL, "%s record: field '%s[%d]' must be a "
                                        "string of 1..%d bytes", what, f->name, i,
                                        RECORD_LABEL_BYTES - 1);
                memcpy(l->label[i], s->valuestring, len + 1);
            }
            l->n = (uint32_t)i;
            break;
        }
        case F_FAILURE:
            if (!cJSON_IsObject(v))
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must be an object",
                                    what, f->name);
            int rc = decode_fields(what, failure_fields, v, p, err);
            if (rc < 0) { /* mm_error_prefix gives 0 when err is NULL */
                mm_error_prefix(err, "in '%s': ", f->name);
                return rc;
            }
            break;
        }
    }
    return 0;
}

int record_params_text(const cJSON *obj, char *out, size_t size, struct mm_error *err)
{
    if (size)
        out[0] = '\0';
    if (!cJSON_IsObject(obj))
        return mm_error_set(err, -EINVAL, "storage parameters must be a JSON object of strings");
    int n = 0;
    for (const cJSON *f = obj->child; f; f = f->next, n++) {
        if (n >= RECORD_PARAMS_MAX)
            return mm_error_set(err, -EINVAL, "more than %d storage parameters",
                                RECORD_PARAMS_MAX);
        if (!f->string || !f->string[0])
            return mm_error_set(err, -EINVAL, "a storage parameter has an empty name");
        if (!cJSON_IsString(f)) {
            char name[72];
            mm_log_escape(name, sizeof(name), f->string, strlen(f->string));
            return mm_error_set(err, -EINVAL, "storage parameter '%s' must be a string", name);
        }
    }
    if (n == 0)
        return 0; /* {} = none */
    char *text = cJSON_PrintUnformatted(obj);
    if (!text)
        return mm_error_set(err, -ENOMEM, "storage parameters: out of memory");
    size_t len = strlen(text);
    int rc = 0;
    if (len >= size)
        rc = mm_error_set(err, -EINVAL, "storage parameters are %zu bytes as JSON, the limit is "
                          "%zu", len, size ? size - 1 : 0);
    else
        memcpy(out, text, len + 1);
    free(text);
    return rc;
}

int record_model_key(const char *key, size_t len, struct model_record *rec,
                     struct mm_error *err)
{
    rec->storage_key[0] = rec->storage_params[0] = '\0';
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", key[i]) && key[i])
        i++;
    if (i == len || key[i] != '{') { /* a plain storage key */
        if (len >= sizeof(rec->storage_key))
            return mm_error_set(err, -EINVAL, "modelInfo.key is %zu bytes, the limit is %zu",
                                len, sizeof(rec->storage_key) - 1);
        if (memchr(key, '\0', len))
            return mm_error_set(err, -EINVAL, "modelInfo.key holds a NUL byte");
        memcpy(rec->storage_key, key, len);
        rec->storage_key[len] = '\0';
        return 0;
    }
    if (len > RECORD_MAX_BYTES)
        return mm_error_set(err, -E2BIG, "modelInfo.key is %zu bytes, the limit is %d", len,
                            RECORD_MAX_BYTES);
    size_t at = 0;
    cJSON *o = parse_whole(key, len, &at);
    if (!o)
        return mm_error_set(err, -EINVAL, "modelInfo.key: malformed JSON at byte %zu of %zu", at,
                            len);
    int rc = check_text("modelInfo.key", key, len, o, err);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "storage_key");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "storage_params");
    if (rc < 0) {
    } else if (!cJSON_IsObject(o)) {
        rc = mm_error_set(err, -EINVAL, "modelInfo.key: a JSON key must be an object");
    } else if (k && !cJSON_IsNull(k) && !cJSON_IsString(k)) {
        rc = mm_error_set(err, -EINVAL, "modelInfo.key: 'storage_key' must be a string");
    } else if (k && cJSON_IsString(k) && strlen(k->valuestring) >= sizeof(rec->storage_key)) {
        rc = mm_error_set(err, -EINVAL, "modelInfo.key: 'storage_key' is %zu bytes, the limit "
                          "is %zu", strlen(k->valuestring), sizeof(rec->storage_key) - 1);
    } else if (p && !cJSON_IsNull(p) &&
               (rc = record_params_text(p, rec->storage_params, sizeof(rec->storage_params),
                                        err)) < 0) {
        mm_error_prefix(err, "modelInfo.key: 'storage_params': ");
    } else if (k && cJSON_IsString(k)) {
        snprintf(rec->storage_key, sizeof(rec->storage_key), "%s", k->valuestring);
    }
    cJSON_Delete(o);
    if (rc < 0)
        rec->storage_key[0] = rec->storage_params[0] = '\0';
    return rc;
}

int record_decode(enum record_kind kind, const char *json, size_t len, void *rec,
                  struct mm_error *err)
{
    if ((unsigned)kind > RECORD_ELECTION)
        return mm_error_set(err, -EINVAL, "record: unknown record kind %d", (int)kind);
    const char *what = kinds[kind].name;
    memset(rec, 0, kinds[kind].size);
    if (len > RECORD_MAX_BYTES)
        return mm_error_set(err, -E2BIG, "%s record: value is %zu bytes, the limit is %d", what,
                            len, RECORD_MAX_BYTES);
    if (len == 0)
        return mm_error_set(err, -EINVAL, "%s record: value is empty", what);
    size_t at = 0;
    cJSON *o = parse_whole(json, len, &at);
    if (!o)
        return mm_error_set(err, -EINVAL, "%s record: malformed JSON at byte %zu of %zu", what, at,
                            len);
    int rc = 0;
    double v;
    char what_record[32];
    snprintf(what_record, sizeof(what_record), "%s record", what);
    if (check_text(what_record, json, len, o, err) < 0) {
        rc = err ? err->code : -EINVAL;
    } else if (!cJSON_IsObject(o)) {
        rc = mm_error_set(err, -EINVAL, "%s record: value must be a JSON object", what);
    } else if (!cJSON_GetObjectItemCaseSensitive(o, "v")) {
        rc = mm_error_set(err, -EINVAL, "%s record: schema version 'v' is missing", what);
    } else if (integer(cJSON_GetObjectItemCaseSensitive(o, "v"), 1, 1e9, &v) < 0) {
        rc = mm_error_set(err, -EINVAL, "%s record: schema version 'v' must be an integer >= 1",
                          what);
    } else {
        rc = decode_fields(what, kinds[kind].fields, o, rec, err);
    }
    cJSON_Delete(o);
    if (rc < 0)
        memset(rec, 0, kinds[kind].size); /* no half-decoded record escapes */
    return rc;
}

int record_validate(enum record_kind kind, const char *json, size_t len, struct mm_error *err)
{
    union {
        struct instance_record instance;
        struct model_record model;
        struct copy_record copy;
        struct vmodel_record vmodel;
        struct election_record election;
    } any;
    return record_decode(kind, json, len, &any, err);
}

/* ---------------------------------------------------------------- records by key */

static const struct {
    enum key_kind key;
    enum record_kind record;
} key_records[] = {
    {KEY_INSTANCE, RECORD_INSTANCE},
    {KEY_MODEL, RECORD_MODEL},
    {KEY_COPY, RECORD_COPY},
    {KEY_VMODEL, RECORD_VMODEL},
    {KEY_ELECTION, RECORD_ELECTION},
};

int record_kind_of_key(const char *key, size_t key_len, const char *cluster, enum record_kind *kind)
{
    struct key_parts kp;
    if (keys_parse(key, key_len, cluster, &kp) < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(key_records) / sizeof(key_records[0]); i++) {
        if (key_records[i].key == kp.kind) {
            *kind = key_records[i].record;
            return 0;
        }
    }
    return -ENOENT;
}

int record_validate_at(const char *key, size_t key_len, const char *cluster, const char *json,
                       size_t len, struct mm_error *err)
{
    enum record_kind kind;
    if (record_kind_of_key(key, key_len, cluster, &kind) == 0)
        return record_validate(kind, json, len, err);
    size_t at = 0;
    cJSON *o = parse_whole(json, len, &at);
    if (!o)
        return mm_error_set(err, -EINVAL, "the value is not valid JSON (at byte %zu of %zu)", at,
                            len);
    int rc = check_text("the value", json, len, o, err);
    cJSON_Delete(o);
    return rc;
}
