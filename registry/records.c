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

#define MAX_EXACT 9007199254740992.0 /* 2^53: integers above lose precision as JSON numbers */

enum field_type { F_STR, F_U64, F_I64, F_U32, F_COPY_STATE, F_FAILURE };

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
    {0},
};

static const struct field copy_fields[] = {
    {"state", F_COPY_STATE, offsetof(struct copy_record, state), 0, true},
    NUM(struct copy_record, since_ms, F_I64),
    NUM(struct copy_record, size_bytes, F_U64),
    STR(struct copy_record, error, false),
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
        case F_U64:
            snprintf(num, sizeof(num), "%" PRIu64, *(const uint64_t *)p);
            v = cJSON_CreateRaw(num);
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
        case F_U64:
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
        case F_FAILURE:
            if (!cJSON_IsObject(v))
                return mm_error_set(err, -EINVAL, "%s record: field '%s' must be an object",
                                    what, f->name);
            if (decode_fields(what, failure_fields, v, p, err) < 0)
                return mm_error_prefix(err, "in '%s': ", f->name);
            break;
        }
    }
    return 0;
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
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!o) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return mm_error_set(err, -EINVAL, "%s record: malformed JSON at byte %zu of %zu", what,
                            at, len);
    }
    int rc = 0;
    double v;
    if (!cJSON_IsObject(o)) {
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

int record_kind_of_key(const char *key, const char *cluster, enum record_kind *kind)
{
    struct key_parts kp;
    if (keys_parse(key, cluster, &kp) < 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(key_records) / sizeof(key_records[0]); i++) {
        if (key_records[i].key == kp.kind) {
            *kind = key_records[i].record;
            return 0;
        }
    }
    return -ENOENT;
}

int record_validate_at(const char *key, const char *cluster, const char *json, size_t len,
                       struct mm_error *err)
{
    enum record_kind kind;
    if (record_kind_of_key(key, cluster, &kind) == 0)
        return record_validate(kind, json, len, err);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(json, len, &end, false);
    bool parsed = o != NULL;
    cJSON_Delete(o);
    size_t at = end && end >= json ? (size_t)(end - json) : 0;
    while (parsed && at < len && json[at] && strchr(" \t\r\n", json[at])) /* only space after */
        at++;
    if (parsed && at == len)
        return 0;
    return mm_error_set(err, -EINVAL, "the value is not valid JSON (at byte %zu of %zu)", at,
                        len);
}
