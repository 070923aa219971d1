/* v2json.c - KServe V2 inference request/response <-> JSON (see v2json.h). */
#include "mm/v2json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/base64.h"
#include "mm/json.h"

#define MAX_DIMS 8
#define EXACT_INT_MAX 9007199254740992.0          /* 2^53: from here on, doubles skip integers */
#define FP32_OVERFLOW ((double)FLT_MAX + 0x1p103) /* from here on, a float rounds to infinity */

/* The contents field a datatype's values travel in. */
enum field { F_BOOL, F_INT, F_INT64, F_UINT, F_UINT64, F_FP32, F_FP64, F_BYTES };

struct datatype {
    const char *name;
    enum field field;
    unsigned width; /* bytes per value in raw contents; 0 for BYTES */
    int64_t min;    /* range of an integer datatype */
    uint64_t max;
};

static const struct datatype datatypes[] = {
    {"BOOL", F_BOOL, 1, 0, 1},
    {"UINT8", F_UINT, 1, 0, UINT8_MAX},
    {"UINT16", F_UINT, 2, 0, UINT16_MAX},
    {"UINT32", F_UINT, 4, 0, UINT32_MAX},
    {"UINT64", F_UINT64, 8, 0, UINT64_MAX},
    {"INT8", F_INT, 1, INT8_MIN, INT8_MAX},
    {"INT16", F_INT, 2, INT16_MIN, INT16_MAX},
    {"INT32", F_INT, 4, INT32_MIN, INT32_MAX},
    {"INT64", F_INT64, 8, INT64_MIN, INT64_MAX},
    {"FP32", F_FP32, 4, 0, 0},
    {"FP64", F_FP64, 8, 0, 0},
    {"BYTES", F_BYTES, 0, 0, 0},
};

/* Each field's name in protobuf and in proto3 JSON. */
static const char *const field_names[][2] = {
    [F_BOOL] = {"bool_contents", "boolContents"},
    [F_INT] = {"int_contents", "intContents"},
    [F_INT64] = {"int64_contents", "int64Contents"},
    [F_UINT] = {"uint_contents", "uintContents"},
    [F_UINT64] = {"uint64_contents", "uint64Contents"},
    [F_FP32] = {"fp32_contents", "fp32Contents"},
    [F_FP64] = {"fp64_contents", "fp64Contents"},
    [F_BYTES] = {"bytes_contents", "bytesContents"},
};

/* One value on its way between JSON and contents; which member is set follows the field. */
union scalar {
    bool b;
    int64_t i;
    uint64_t u;
    double d;
    ProtobufCBinaryData bytes;
};

static int oom(struct mm_error *err)
{
    return mm_error_set(err, -ENOMEM, "v2json: out of memory");
}

static const struct datatype *find_datatype(const char *name)
{
    for (size_t i = 0; i < sizeof(datatypes) / sizeof(datatypes[0]); i++)
        if (strcmp(datatypes[i].name, name) == 0)
            return &datatypes[i];
    return NULL;
}

/* what is "input" or "output"; code is the error for a name that is no datatype at all. */
static int datatype_error(const char *what, const char *name, const char *datatype, int code,
                          struct mm_error *err)
{
    if (strcmp(datatype, "FP16") == 0 || strcmp(datatype, "BF16") == 0)
        return mm_error_set(err, -ENOTSUP, "%s '%s': datatype %s is not supported in JSON", what,
                            name, datatype);
    return mm_error_set(err, code, "%s '%s': unknown datatype '%.32s'", what, name, datatype);
}

/* "[1, 64]" for messages; cut short when it does not fit. */
static const char *shape_text(const int64_t *dims, size_t n, char *buf, size_t size)
{
    int used = snprintf(buf, size, "[");
    for (size_t i = 0; i < n && (size_t)used < size; i++)
        used += snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", dims[i]);
    if ((size_t)used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* *count = the number of values the shape holds. A negative dimension fails with code, more
 * than V2JSON_MAX_VALUES with -E2BIG; err names the tensor (what is "input" or "output"). */
static int shape_count(const char *what, const char *name, const int64_t *dims, size_t n, int code,
                       size_t *count, struct mm_error *err)
{
    size_t c = 1;
    bool zero = false, big = false;
    for (size_t i = 0; i < n; i++) {
        char text[96];
        if (dims[i] < 0)
            return mm_error_set(err, code, "%s '%s': shape %s has a negative dimension", what, name,
                                shape_text(dims, n, text, sizeof(text)));
        if (dims[i] == 0)
            zero = true;
        else if ((uint64_t)dims[i] > V2JSON_MAX_VALUES / c)
            big = true;
        else
            c *= (size_t)dims[i];
    }
    if (big && !zero) {
        char text[96];
        return mm_error_set(err, -E2BIG, "%s '%s': shape %s holds more than %u values", what, name,
                            shape_text(dims, n, text, sizeof(text)), V2JSON_MAX_VALUES);
    }
    *count = zero ? 0 : c;
    return 0;
}

/* The fewest digits that read back as the same finite value: "0.1", not "0.100000001". */
static const char *shortest(double d, bool single, char text[32])
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(text, 32, "%.*g", digits, d);
        double back = strtod(text, NULL);
        if (single ? (float)back == (float)d : back == d)
            break;
    }
    return text;
}

/* ---------------------------------------------------------------- contents */

/* Give c an array of n zeroed values in field f. */
static int contents_alloc(Inference__InferTensorContents *c, enum field f, size_t n)
{
    static const size_t sizes[] = {
        [F_BOOL] = sizeof(protobuf_c_boolean),
        [F_INT] = sizeof(int32_t),
        [F_INT64] = sizeof(int64_t),
        [F_UINT] = sizeof(uint32_t),
        [F_UINT64] = sizeof(uint64_t),
        [F_FP32] = sizeof(float),
        [F_FP64] = sizeof(double),
        [F_BYTES] = sizeof(ProtobufCBinaryData),
    };
    void *values = calloc(n ? n : 1, sizes[f]);
    if (!values)
        return -ENOMEM;
    switch (f) {
    case F_BOOL:
        c->bool_contents = values;
        c->n_bool_contents = n;
        break;
    case F_INT:
        c->int_contents = values;
        c->n_int_contents = n;
        break;
    case F_INT64:
        c->int64_contents = values;
        c->n_int64_contents = n;
        break;
    case F_UINT:
        c->uint_contents = values;
        c->n_uint_contents = n;
        break;
    case F_UINT64:
        c->uint64_contents = values;
        c->n_uint64_contents = n;
        break;
    case F_FP32:
        c->fp32_contents = values;
        c->n_fp32_contents = n;
        break;
    case F_FP64:
        c->fp64_contents = values;
        c->n_fp64_contents = n;
        break;
    case F_BYTES:
        c->bytes_contents = values;
        c->n_bytes_contents = n;
        break;
    }
    return 0;
}

static size_t contents_count(const Inference__InferTensorContents *c, enum field f)
{
    switch (f) {
    case F_BOOL:
        return c->n_bool_contents;
    case F_INT:
        return c->n_int_contents;
    case F_INT64:
        return c->n_int64_contents;
    case F_UINT:
        return c->n_uint_contents;
    case F_UINT64:
        return c->n_uint64_contents;
    case F_FP32:
        return c->n_fp32_contents;
    case F_FP64:
        return c->n_fp64_contents;
    case F_BYTES:
        return c->n_bytes_contents;
    }
    return 0;
}

static union scalar contents_get(const Inference__InferTensorContents *c, enum field f, size_t i)
{
    union scalar x = {.u = 0};
    switch (f) {
    case F_BOOL:
        x.b = c->bool_contents[i];
        break;
    case F_INT:
        x.i = c->int_contents[i];
        break;
    case F_INT64:
        x.i = c->int64_contents[i];
        break;
    case F_UINT:
        x.u = c->uint_contents[i];
        break;
    case F_UINT64:
        x.u = c->uint64_contents[i];
        break;
    case F_FP32:
        x.d = c->fp32_contents[i];
        break;
    case F_FP64:
        x.d = c->fp64_contents[i];
        break;
    case F_BYTES:
        x.bytes = c->bytes_contents[i];
        break;
    }
    return x;
}

/* Store x as value i of c; BYTES are copied. */
static int contents_set(Inference__InferTensorContents *c, enum field f, size_t i, union scalar x)
{
    switch (f) {
    case F_BOOL:
        c->bool_contents[i] = x.b;
        break;
    case F_INT:
        c->int_contents[i] = (int32_t)x.i;
        break;
    case F_INT64:
        c->int64_contents[i] = x.i;
        break;
    case F_UINT:
        c->uint_contents[i] = (uint32_t)x.u;
        break;
    case F_UINT64:
        c->uint64_contents[i] = x.u;
        break;
    case F_FP32:
        c->fp32_contents[i] = (float)x.d;
        break;
    case F_FP64:
        c->fp64_contents[i] = x.d;
        break;
    case F_BYTES: {
        uint8_t *copy = malloc(x.bytes.len + 1);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, x.bytes.data, x.bytes.len);
        c->bytes_contents[i] = (ProtobufCBinaryData){x.bytes.len, copy};
        break;
    }
    }
    return 0;
}

/* ---------------------------------------------------------------- request */

enum problem { VALUE_OK, NOT_BOOLEAN, NOT_NUMBER, NOT_INTEGER, NOT_STRING, OUT_OF_RANGE, INEXACT };

/* obj's member by its protobuf name or, as proto3 JSON may write it, its lowerCamelCase one. */
static const cJSON *member(const cJSON *obj, const char *name, const char *camel)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v || !camel ? v : cJSON_GetObjectItemCaseSensitive(obj, camel);
}

static int set_string(char **field, const char *s, struct mm_error *err)
{
    if (!(*field = strdup(s)))
        return oom(err);
    return 0;
}

/* An optional string member of the request into *field, left at its default when absent. */
static int copy_member(const cJSON *obj, const char *name, const char *camel, char **field,
                       struct mm_error *err)
{
    const cJSON *v = member(obj, name, camel);
    if (!v)
        return 0;
    if (!cJSON_IsString(v))
        return mm_error_set(err, -EINVAL, "request: \"%s\" is not a string", name);
    return set_string(field, v->valuestring, err);
}

/* v as an integer in [min, max]: a JSON number, exact up to 2^53, or a decimal string (proto3
 * JSON writes 64-bit integers so). The result is in x->i for signed types, x->u for others. */
static enum problem to_integer(const cJSON *v, int64_t min, uint64_t max, union scalar *x)
{
    bool negative;
    uint64_t magnitude;
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d != trunc(d))
            return NOT_INTEGER;
        if (fabs(d) >= EXACT_INT_MAX) /* 64-bit types' maxima round up to 2^63 and 2^64 */
            return d >= (double)max || d < (double)min ? OUT_OF_RANGE : INEXACT;
        negative = d < 0;
        magnitude = (uint64_t)fabs(d);
    } else if (cJSON_IsString(v)) {
        const char *s = v->valuestring + (v->valuestring[0] == '-');
        char *end;
        negative = s != v->valuestring;
        errno = 0;
        magnitude = strtoull(s, &end, 10);
        if (*s < '0' || *s > '9' || *end)
            return NOT_INTEGER;
        if (errno == ERANGE)
            return OUT_OF_RANGE;
    } else {
        return NOT_INTEGER;
    }
    if (negative && magnitude) {
        if (min == 0 || magnitude - 1 > (uint64_t)(-(min + 1)))
            return OUT_OF_RANGE;
        x->i = -(int64_t)(magnitude - 1) - 1;
    } else {
        if (magnitude > max)
            return OUT_OF_RANGE;
        x->u = magnitude;
    }
    return VALUE_OK;
}

/* A number, or proto3 JSON's names for what JSON numbers cannot say. */
static enum problem to_float(const cJSON *v, bool single, double *d)
{
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (strcmp(s, "NaN") == 0)
            *d = NAN;
        else if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0)
            *d = s[0] == '-' ? -INFINITY : INFINITY;
        else
            return NOT_NUMBER;
        return VALUE_OK;
    }
    if (!cJSON_IsNumber(v))
        return NOT_NUMBER;
    *d = v->valuedouble;
    if (isinf(*d) || (single && fabs(*d) >= FP32_OVERFLOW))
        return OUT_OF_RANGE;
    return VALUE_OK;
}

static enum problem convert(const cJSON *v, const struct datatype *dt, union scalar *x)
{
    switch (dt->field) {
    case F_BOOL:
        x->b = cJSON_IsTrue(v);
        return cJSON_IsBool(v) ? VALUE_OK : NOT_BOOLEAN;
    case F_FP32:
    case F_FP64:
        return to_float(v, dt->field == F_FP32, &x->d);
    case F_BYTES:
        if (!cJSON_IsString(v))
            return NOT_STRING;
        x->bytes = (ProtobufCBinaryData){strlen(v->valuestring), (uint8_t *)v->valuestring};
        return VALUE_OK;
    default:
        return to_integer(v, dt->min, dt->max, x);
    }
}

static int value_error(const char *input, const struct datatype *dt, const cJSON *v, enum problem p,
                       struct mm_error *err)
{
    static const char *const says[] = {
        [NOT_BOOLEAN] = "is not true or false",
        [NOT_NUMBER] = "is not a number",
        [NOT_INTEGER] = "is not an integer",
        [NOT_STRING] = "is not a string",
        [OUT_OF_RANGE] = "is out of range for",
        [INEXACT] = "is beyond 2^53, where JSON numbers lose digits: write it as a string",
    };
    char number[32]; /* cJSON would print 15 digits, not the value it holds */
    char *text = cJSON_IsNumber(v) ? NULL : cJSON_PrintUnformatted(v);
    mm_error_set(err, -EINVAL, "input '%s': value %.40s %s%s%s", input,
                 cJSON_IsNumber(v) ? shortest(v->valuedouble, false, number)
                 : text            ? text
                                   : "?",
                 says[p], p == OUT_OF_RANGE ? " " : "", p == OUT_OF_RANGE ? dt->name : "");
    cJSON_free(text);
    return -EINVAL;
}

static size_t count_values(const cJSON *v)
{
    if (!cJSON_IsArray(v))
        return 1;
    size_t n = 0;
    for (const cJSON *e = v->child; e; e = e->next)
        n += count_values(e);
    return n;
}

struct fill {
    const char *input; /* its name, for messages */
    const struct datatype *dt;
    Inference__InferTensorContents *contents;
    size_t next;
};

/* A BYTES value written as "b64:" + base64 (as rendering writes bytes that are not text) into
 * x as a malloc'd buffer in *decoded; 0, or -EINVAL if the base64 does not decode. */
static int decode_b64(const char *s, union scalar *x, uint8_t **decoded)
{
    size_t n = strlen(s + 4);
    if (!(*decoded = malloc(base64_decoded_max(n) + 1)))
        return -ENOMEM;
    long got = base64_decode(s + 4, n, *decoded);
    if (got < 0) {
        free(*decoded);
        *decoded = NULL;
        return -EINVAL;
    }
    x->bytes = (ProtobufCBinaryData){(size_t)got, *decoded};
    return 0;
}

/* Store the leaves of v, nested arrays flattened in row-major order. */
static int fill_values(struct fill *f, const cJSON *v, struct mm_error *err)
{
    if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e; e = e->next) {
            int rc = fill_values(f, e, err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    union scalar x;
    enum problem p = convert(v, f->dt, &x);
    if (p != VALUE_OK)
        return value_error(f->input, f->dt, v, p, err);
    uint8_t *decoded = NULL;
    if (f->dt->field == F_BYTES && strncmp(v->valuestring, "b64:", 4) == 0) {
        int rc = decode_b64(v->valuestring, &x, &decoded);
        if (rc == -EINVAL)
            return mm_error_set(err, -EINVAL, "input '%s': value %zu starts with \"b64:\" but "
                                "the rest is not base64", f->input, f->next);
        if (rc < 0)
            return oom(err);
    }
    int rc = contents_set(f->contents, f->dt->field, f->next++, x);
    free(decoded);
    return rc < 0 ? oom(err) : 0;
}

/* Nested data must follow the shape: as deep as it has dimensions, each level as long as its
 * dimension. (Flat data is laid out by the shape and needs no check.) */
static bool nesting_fits(const cJSON *v, const int64_t *dims, size_t n)
{
    if (!cJSON_IsArray(v))
        return n == 0;
    if (n == 0 || cJSON_GetArraySize(v) != dims[0])
        return false;
    for (const cJSON *e = v->child; e; e = e->next)
        if (!nesting_fits(e, dims + 1, n - 1))
            return false;
    return true;
}

static bool is_nested(const cJSON *v)
{
    for (const cJSON *e = v->child; e; e = e->next)
        if (cJSON_IsArray(e))
            return true;
    return false;
}

static int parse_shape(const cJSON *in, Inference__ModelInferRequest__InferInputTensor *t,
                       size_t *count, struct mm_error *err)
{
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(in, "shape");
    if (!shape)
        return mm_error_set(err, -EINVAL, "input '%s': missing \"shape\"", t->name);
    if (!cJSON_IsArray(shape))
        return mm_error_set(err, -EINVAL, "input '%s': \"shape\" is not an array", t->name);
    int n = cJSON_GetArraySize(shape);
    if (n > MAX_DIMS)
        return mm_error_set(err, -E2BIG,
                            "input '%s': shape has %d dimensions, at most %d are supported",
                            t->name, n, MAX_DIMS);
    if (!(t->shape = calloc(n ? (size_t)n : 1, sizeof(*t->shape))))
        return oom(err);
    for (const cJSON *d = shape->child; d; d = d->next) {
        union scalar x;
        if (to_integer(d, INT64_MIN, INT64_MAX, &x) != VALUE_OK)
            return mm_error_set(err, -EINVAL,
                                "input '%s': \"shape\" holds a value that is not an integer",
                                t->name);
        t->shape[t->n_shape++] = x.i;
    }
    return shape_count("input", t->name, t->shape, t->n_shape, -EINVAL, count, err);
}

/* One input; *total counts the values of the request so far. */
static int parse_input(const cJSON *in, size_t index,
                       Inference__ModelInferRequest__InferInputTensor *t, size_t *total,
                       struct mm_error *err)
{
    if (!cJSON_IsObject(in))
        return mm_error_set(err, -EINVAL, "inputs[%zu] is not an object", index);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(in, "name");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return mm_error_set(err, -EINVAL, "inputs[%zu]: missing \"name\"", index);
    int rc = set_string(&t->name, name->valuestring, err);
    if (rc < 0)
        return rc;
    const cJSON *datatype = cJSON_GetObjectItemCaseSensitive(in, "datatype");
    if (!cJSON_IsString(datatype))
        return mm_error_set(err, -EINVAL, "input '%s': missing \"datatype\"", t->name);
    const struct datatype *dt = find_datatype(datatype->valuestring);
    if (!dt)
        return datatype_error("input", t->name, datatype->valuestring, -EINVAL, err);
    size_t count;
    if ((rc = set_string(&t->datatype, dt->name, err)) < 0 ||
        (rc = parse_shape(in, t, &count, err)) < 0)
        return rc;

    const cJSON *data = cJSON_GetObjectItemCaseSensitive(in, "data");
    const cJSON *contents = cJSON_GetObjectItemCaseSensitive(in, "contents");
    if (data && contents)
        return mm_error_set(err, -EINVAL, "input '%s': both \"data\" and \"contents\" given",
                            t->name);
    if (!data && !contents)
        return mm_error_set(err, -EINVAL, "input '%s': no \"data\" or \"contents\"", t->name);
    const char *key = "data";
    const cJSON *values = data;
    if (contents) {
        if (!cJSON_IsObject(contents))
            return mm_error_set(err, -EINVAL, "input '%s': \"contents\" is not an object", t->name);
        key = field_names[dt->field][0];
        values = member(contents, key, field_names[dt->field][1]);
        /* proto3 JSON leaves out empty repeated fields: {} is how an empty tensor looks */
        if (!values && count)
            return mm_error_set(err, -EINVAL,
                                "input '%s': \"contents\" has no \"%s\", which datatype %s uses",
                                t->name, key, dt->name);
    }
    if (values && !cJSON_IsArray(values))
        return mm_error_set(err, -EINVAL, "input '%s': \"%s\" is not an array", t->name, key);
    size_t n = values ? count_values(values) : 0;
    if (n > V2JSON_MAX_VALUES - *total)
        return mm_error_set(err, -E2BIG, "request: more than %u values", V2JSON_MAX_VALUES);
    *total += n;
    if (n != count) {
        char text[96];
        return mm_error_set(err, -EINVAL, "input '%s': %zu values for shape %s, which needs %zu",
                            t->name, n, shape_text(t->shape, t->n_shape, text, sizeof(text)),
                            count);
    }
    if (values && is_nested(values) && !nesting_fits(values, t->shape, t->n_shape)) {
        char text[96];
        return mm_error_set(err, -EINVAL, "input '%s': nested \"%s\" does not follow shape %s "
                            "(nest it exactly as the shape, or give it flat)", t->name, key,
                            shape_text(t->shape, t->n_shape, text, sizeof(text)));
    }
    if (!(t->contents = malloc(sizeof(*t->contents))))
        return oom(err);
    inference__infer_tensor_contents__init(t->contents);
    if (contents_alloc(t->contents, dt->field, n) < 0)
        return oom(err);
    struct fill f = {t->name, dt, t->contents, 0};
    return values ? fill_values(&f, values, err) : 0;
}

static int parse_inputs(const cJSON *inputs, Inference__ModelInferRequest *r, struct mm_error *err)
{
    if (!cJSON_IsArray(inputs) || !inputs->child)
        return mm_error_set(err, -EINVAL, "request: \"inputs\" must be a non-empty array");
    if (!(r->inputs = calloc((size_t)cJSON_GetArraySize(inputs), sizeof(*r->inputs))))
        return oom(err);
    size_t total = 0;
    for (const cJSON *in = inputs->child; in; in = in->next) {
        Inference__ModelInferRequest__InferInputTensor *t = malloc(sizeof(*t));
        if (!t)
            return oom(err);
        inference__model_infer_request__infer_input_tensor__init(t);
        r->inputs[r->n_inputs++] = t;
        int rc = parse_input(in, r->n_inputs - 1, t, &total, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int parse_outputs(const cJSON *outputs, Inference__ModelInferRequest *r,
                         struct mm_error *err)
{
    if (!outputs)
        return 0;
    if (!cJSON_IsArray(outputs))
        return mm_error_set(err, -EINVAL, "request: \"outputs\" is not an array");
    int n = cJSON_GetArraySize(outputs);
    if (n == 0)
        return 0;
    if (!(r->outputs = calloc((size_t)n, sizeof(*r->outputs))))
        return oom(err);
    for (const cJSON *o = outputs->child; o; o = o->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !name->valuestring[0])
            return mm_error_set(err, -EINVAL, "outputs[%zu]: missing \"name\"", r->n_outputs);
        Inference__ModelInferRequest__InferRequestedOutputTensor *t = malloc(sizeof(*t));
        if (!t)
            return oom(err);
        inference__model_infer_request__infer_requested_output_tensor__init(t);
        r->outputs[r->n_outputs++] = t;
        int rc = set_string(&t->name, name->valuestring, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int parse_request(const cJSON *doc, const char *model, Inference__ModelInferRequest *r,
                         struct mm_error *err)
{
    if (!cJSON_IsObject(doc))
        return mm_error_set(err, -EINVAL, "request is not a JSON object");
    int rc = model ? set_string(&r->model_name, model, err)
                   : copy_member(doc, "model_name", "modelName", &r->model_name, err);
    if (rc == 0)
        rc = copy_member(doc, "model_version", "modelVersion", &r->model_version, err);
    if (rc == 0)
        rc = copy_member(doc, "id", NULL, &r->id, err);
    if (rc == 0)
        rc = parse_inputs(cJSON_GetObjectItemCaseSensitive(doc, "inputs"), r, err);
    if (rc == 0)
        rc = parse_outputs(cJSON_GetObjectItemCaseSensitive(doc, "outputs"), r, err);
    return rc;
}

/* Where the text holds the escape \u0000 (a backslash that is not itself escaped, then u0000),
 * or -1: cJSON ends its strings at NUL, so such a string would arrive cut short. */
static long escaped_nul(const char *json, size_t len)
{
    size_t backslashes = 0;
    for (size_t i = 0; i < len; i++) {
        if (json[i] == '\\') {
            backslashes++;
            continue;
        }
        if (backslashes % 2 == 1 && len - i >= 5 && memcmp(json + i, "u0000", 5) == 0)
            return (long)i - 1;
        backslashes = 0;
    }
    return -1;
}

/* How many JSON values the text holds at most, counted up to limit + 1: every value but the
 * first follows a ',', a ':' or an opening bracket outside strings (a bound, exact for valid
 * JSON, cheap: one pass, no allocation). */
static size_t json_values(const char *json, size_t len, size_t limit)
{
    size_t n = 1;
    bool in_string = false;
    for (size_t i = 0; i < len && n <= limit; i++) {
        char ch = json[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == ',' || ch == ':' || ch == '[') {
            n++;
        }
    }
    return n;
}

int v2json_request_parse(const char *json, size_t len, const char *model,
                         Inference__ModelInferRequest **out, struct mm_error *err)
{
    *out = NULL;
    if (json_values(json, len, V2JSON_MAX_PARSED) > V2JSON_MAX_PARSED)
        return mm_error_set(err, -E2BIG, "request: more than %u JSON values (send tensors this "
                            "large over gRPC, or as fewer, larger requests)", V2JSON_MAX_PARSED);
    long nul = escaped_nul(json, len);
    if (nul >= 0)
        return mm_error_set(err, -EINVAL, "request: a string holds \\u0000 (byte %ld), which "
                            "is not carried; write BYTES holding NUL as \"b64:\" + base64", nul);
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(json, len, &end, false);
    while (doc && end < json + len && memchr(" \t\r\n", *end, 4))
        end++;
    if (!doc || end != json + len) {
        cJSON_Delete(doc);
        return mm_error_set(err, -EINVAL, "request is not JSON near byte %zu",
                            end ? (size_t)(end - json) : 0);
    }
    Inference__ModelInferRequest *r = malloc(sizeof(*r));
    int rc;
    if (r) {
        inference__model_infer_request__init(r);
        rc = parse_request(doc, model, r, err);
    } else {
        rc = oom(err);
    }
    cJSON_Delete(doc);
    if (rc < 0) {
        v2json_request_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void v2json_request_free(Inference__ModelInferRequest *r)
{
    if (r)
        inference__model_infer_request__free_unpacked(r, NULL);
}

/* ---------------------------------------------------------------- response */

/* Append item to array, which takes it; false (and item freed) if either is missing. */
static bool append(cJSON *array, cJSON *item)
{
    if (item && cJSON_AddItemToArray(array, item))
        return true;
    cJSON_Delete(item);
    return false;
}

/* UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) without NUL. */
static bool is_text(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t c = p[i];
        size_t more;
        uint32_t cp, least;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            more = 1;
            cp = c & 0x1f;
            least = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2;
            cp = c & 0x0f;
            least = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3;
            cp = c & 0x07;
            least = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < least || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += 1 + more;
    }
    return true;
}

static cJSON *bytes_item(ProtobufCBinaryData b)
{
    bool text = is_text(b.data, b.len) && !(b.len >= 4 && memcmp(b.data, "b64:", 4) == 0);
    char *s = malloc(text ? b.len + 1 : 4 + base64_encoded_size(b.len));
    if (!s)
        return NULL;
    if (text) {
        if (b.len)
            memcpy(s, b.data, b.len);
        s[b.len] = '\0';
    } else {
        memcpy(s, "b64:", 4);
        base64_encode(b.data, b.len, s + 4);
    }
    cJSON *item = cJSON_CreateString(s);
    free(s);
    return item;
}

static cJSON *float_item(double d, bool single)
{
    if (isnan(d))
        return cJSON_CreateString("NaN");
    if (isinf(d))
        return cJSON_CreateString(d > 0 ? "Infinity" : "-Infinity");
    char text[32];
    return cJSON_CreateRaw(shortest(d, single, text));
}

/* Integers as their decimal text: a double would round those past 2^53. */
static cJSON *value_item(enum field f, union scalar x)
{
    char text[24];
    switch (f) {
    case F_BOOL:
        return cJSON_CreateBool(x.b);
    case F_FP32:
        return float_item(x.d, true);
    case F_FP64:
        return float_item(x.d, false);
    case F_BYTES:
        return bytes_item(x.bytes);
    case F_INT:
    case F_INT64:
        snprintf(text, sizeof(text), "%" PRId64, x.i);
        break;
    case F_UINT:
    case F_UINT64:
        snprintf(text, sizeof(text), "%" PRIu64, x.u);
        break;
    }
    return cJSON_CreateRaw(text);
}

static uint64_t load_le(const uint8_t *p, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* A fixed-width value of raw contents. */
static union scalar raw_value(const uint8_t *p, const struct datatype *dt)
{
    uint64_t bits = load_le(p, dt->width);
    union scalar x = {.u = bits};
    switch (dt->field) {
    case F_BOOL:
        x.b = bits != 0;
        break;
    case F_INT: /* sign-extend INT8/16/32 */
        if ((bits >> (8 * dt->width - 1)) & 1)
            x.u = bits | UINT64_MAX << (8 * dt->width);
        break;
    case F_FP32: {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof(f));
        x.d = f;
        break;
    }
    case F_FP64:
        memcpy(&x.d, &bits, sizeof(x.d));
        break;
    default:
        break;
    }
    return x;
}

static int render_raw(cJSON *data, const Inference__ModelInferResponse__InferOutputTensor *t,
                      const struct datatype *dt, const ProtobufCBinaryData *raw, size_t count,
                      struct mm_error *err)
{
    char text[96];
    if (dt->field != F_BYTES) {
        if (raw->len != count * dt->width)
            return mm_error_set(err, -EBADMSG,
                                "output '%s': %zu bytes of raw contents for shape %s of %s, which "
                                "needs %zu",
                                t->name, raw->len,
                                shape_text(t->shape, t->n_shape, text, sizeof(text)), dt->name,
                                count * dt->width);
        for (size_t i = 0; i < count; i++)
            if (!append(data, value_item(dt->field, raw_value(raw->data + i * dt->width, dt))))
                return oom(err);
        return 0;
    }
    /* Each value: a 4-byte little-endian length, then that many bytes. */
    size_t off = 0, i = 0;
    for (; i < count && raw->len - off >= 4; i++) {
        size_t len = load_le(raw->data + off, 4);
        off += 4;
        if (len > raw->len - off)
            break;
        ProtobufCBinaryData b = {len, raw->data + off};
        if (!append(data, bytes_item(b)))
            return oom(err);
        off += len;
    }
    if (i < count || off != raw->len)
        return mm_error_set(err, -EBADMSG,
                            "output '%s': raw contents are not the %zu length-prefixed BYTES "
                            "values of shape %s",
                            t->name, count, shape_text(t->shape, t->n_shape, text, sizeof(text)));
    return 0;
}

static int render_contents(cJSON *data, const Inference__ModelInferResponse__InferOutputTensor *t,
                           const struct datatype *dt, size_t count, struct mm_error *err)
{
    size_t n = t->contents ? contents_count(t->contents, dt->field) : 0;
    if (n != count) {
        char text[96];
        return mm_error_set(err, -EBADMSG, "output '%s': %zu %s for shape %s, which needs %zu",
                            t->name, n, field_names[dt->field][0],
                            shape_text(t->shape, t->n_shape, text, sizeof(text)), count);
    }
    for (size_t i = 0; i < n; i++)
        if (!append(data, value_item(dt->field, contents_get(t->contents, dt->field, i))))
            return oom(err);
    return 0;
}

/* Output t as an object appended to outputs; raw is its raw contents, NULL to use contents. */
static int render_output(cJSON *outputs, const Inference__ModelInferResponse__InferOutputTensor *t,
                         const ProtobufCBinaryData *raw, size_t *budget, struct mm_error *err)
{
    const struct datatype *dt = find_datatype(t->datatype);
    if (!dt)
        return datatype_error("output", t->name, t->datatype, -EBADMSG, err);
    size_t count;
    int rc = shape_count("output", t->name, t->shape, t->n_shape, -EBADMSG, &count, err);
    if (rc < 0)
        return rc;
    if (count > *budget) /* each value becomes a cJSON node of ~100 bytes */
        return mm_error_set(err, -E2BIG, "output '%s': the answer holds more than %u values, "
                            "more than are rendered as JSON", t->name, V2JSON_MAX_RENDERED);
    *budget -= count;
    cJSON *o = cJSON_CreateObject(), *shape, *data;
    if (!append(outputs, o) || !cJSON_AddStringToObject(o, "name", t->name) ||
        !cJSON_AddStringToObject(o, "datatype", t->datatype) ||
        !(shape = cJSON_AddArrayToObject(o, "shape")) ||
        !(data = cJSON_AddArrayToObject(o, "data")))
        return oom(err);
    for (size_t i = 0; i < t->n_shape; i++)
        if (!append(shape, value_item(F_INT64, (union scalar){.i = t->shape[i]})))
            return oom(err);
    return raw ? render_raw(data, t, dt, raw, count, err)
               : render_contents(data, t, dt, count, err);
}

static int render_response(cJSON *doc, const Inference__ModelInferResponse *r, struct mm_error *err)
{
    cJSON *outputs;
    if (!cJSON_AddStringToObject(doc, "model_name", r->model_name) ||
        (r->model_version[0] && !cJSON_AddStringToObject(doc, "model_version", r->model_version)) ||
        (r->id[0] && !cJSON_AddStringToObject(doc, "id", r->id)) ||
        !(outputs = cJSON_AddArrayToObject(doc, "outputs")))
        return oom(err);
    bool raw = r->n_raw_output_contents > 0;
    if (raw && r->n_raw_output_contents < r->n_outputs)
        return mm_error_set(
            err, -EBADMSG, "output '%s': no raw contents (the response has %zu for %zu outputs)",
            r->outputs[r->n_raw_output_contents]->name, r->n_raw_output_contents, r->n_outputs);
    size_t budget = V2JSON_MAX_RENDERED;
    for (size_t i = 0; i < r->n_outputs; i++) {
        int rc = render_output(outputs, r->outputs[i], raw ? &r->raw_output_contents[i] : NULL,
                               &budget, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int v2json_response_render(const Inference__ModelInferResponse *r, bool pretty, char **out,
                           struct mm_error *err)
{
    *out = NULL;
    cJSON *doc = cJSON_CreateObject();
    int rc = doc ? render_response(doc, r, err) : oom(err);
    if (rc == 0)
        *out = json_print(doc, pretty);
    if (rc == 0 && !*out)
        rc = oom(err);
    cJSON_Delete(doc);
    return rc;
}
