/* serving.c - mmctl's gRPC verbs (see serving.h). Each verb makes one unary call and waits for
 * it on a private loop; answers are printed as JSON, the field names those of the .proto, or
 * (model verbs) as readable lines. */
#include "serving.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc_predict_v2.pb-c.h"
#include "model-mesh.pb-c.h"
#include "mm/base64.h"
#include "mm/buf.h"
#include "mm/json.h"
#include "mm/rpc.h"
#include "mm/spi.h"
#include "mm/spi_sync.h"
#include "mm/stcfg.h"
#include "mm/v2json.h"
#include "term.h"

#define INFER_ADDRESS "127.0.0.1:8033"
#define RUNTIME_ADDRESS "127.0.0.1:8085"
#define NODE_ADDRESS "127.0.0.1:8033"
#define MODEL_TIMEOUT_MS 5000
#define MODEL_SYNC_TIMEOUT_MS 120000 /* --sync waits for a load: the runtime's timeout and more */
#define MAX_REQUEST_FILE (64u << 20)

/* ---------------------------------------------------------------- one call, waited for */

/* Call method on address with msg; decode the answer as out_desc into *out. 0, or 1 with the
 * reason printed (what was called, where, the status and its message). */
static int call(const char *address, unsigned timeout_ms, const char *method, const char *what,
                const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *out_desc,
                ProtobufCMessage **out)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct rpc_channel *ch = NULL;
    struct mm_error err = {0};
    struct rpc_reply r = {0};
    grpc_byte_buffer *bb = NULL;
    int rc = 1;
    *out = NULL;
    if (!loop) {
        term_error("cannot create an event loop");
        return 1;
    }
    if (rpc_context_new(loop, &ctx, &err) < 0 || rpc_channel_new(ctx, address, 0, &ch, &err) < 0) {
        term_error("%s: %s", address, err.msg);
        goto out;
    }
    bb = rpc_encode(msg);
    if (!bb) {
        term_error("%s: out of memory", what);
        goto out;
    }
    rpc_unary_wait(ch, method, bb, NULL, 0, timeout_ms, &r); /* r says why if it fails */
    if (r.status != GRPC_STATUS_OK) {
        term_error("%s at %s: %s: %s", what, address, rpc_status_name(r.status),
                   r.details[0] ? r.details : "(no message)");
        goto out;
    }
    if (rpc_decode(r.response, out_desc, out, &err) < 0) {
        term_error("%s at %s: the answer does not decode: %s", what, address, err.msg);
        goto out;
    }
    rc = 0;
out:
    rpc_reply_clear(&r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    rpc_channel_free(ch);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    return rc;
}

/* ---------------------------------------------------------------- messages as JSON */

static cJSON *message_json(const ProtobufCMessage *m);

/* One value of field f stored at p. 64-bit integers are written as exact decimal text. */
static cJSON *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char num[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return cJSON_CreateNumber(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return cJSON_CreateNumber(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)p);
        return cJSON_CreateRaw(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof(num), "%" PRIu64, *(const uint64_t *)p);
        return cJSON_CreateRaw(num);
    case PROTOBUF_C_TYPE_FLOAT: { /* the fewest digits that read back as the same float */
        float v = *(const float *)p;
        if (!isfinite(v)) /* as proto3 JSON writes them */
            return cJSON_CreateString(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        for (int digits = 1; digits <= 9; digits++) {
            snprintf(num, sizeof(num), "%.*g", digits, (double)v);
            if ((float)strtod(num, NULL) == v)
                break;
        }
        return cJSON_CreateRaw(num);
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v = *(const double *)p;
        if (!isfinite(v))
            return cJSON_CreateString(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return cJSON_CreateNumber(v);
    }
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        return v ? cJSON_CreateString(v->name) : cJSON_CreateNumber(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING:
        return cJSON_CreateString(*(char *const *)p ? *(char *const *)p : "");
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *text = malloc(base64_encoded_size(b->len));
        if (!text)
            return NULL;
        base64_encode(b->data, b->len, text);
        cJSON *s = cJSON_CreateString(text);
        free(text);
        return s;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p ? message_json(*(ProtobufCMessage *const *)p)
                                             : cJSON_CreateNull();
    }
    return cJSON_CreateNull();
}

static size_t type_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

/* Whether field f is a map (repeated entries of a message with key and value). */
static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    return d->n_fields == 2 && strcmp(d->fields[0].name, "key") == 0 &&
           strcmp(d->fields[1].name, "value") == 0 && d->fields[0].type == PROTOBUF_C_TYPE_STRING;
}

static cJSON *message_json(const ProtobufCMessage *m)
{
    cJSON *o = cJSON_CreateObject();
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; o && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        const void *p = base + f->offset;
        cJSON *v = NULL;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
            v = value_json(f, p);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *items = *(char *const *)p;
            bool map = is_map(f);
            v = map ? cJSON_CreateObject() : cJSON_CreateArray();
            for (size_t k = 0; v && k < n; k++) {
                const void *item = items + k * type_size(f);
                if (map) {
                    const ProtobufCMessage *e = *(ProtobufCMessage *const *)item;
                    const ProtobufCMessageDescriptor *ed = e->descriptor;
                    const char *key = *(char *const *)((const char *)e + ed->fields[0].offset);
                    cJSON_AddItemToObject(
                        v, key, value_json(&ed->fields[1], (const char *)e + ed->fields[1].offset));
                } else {
                    cJSON_AddItemToArray(v, value_json(f, item));
                }
            }
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   f->type != PROTOBUF_C_TYPE_STRING) {
            if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                continue;
            v = value_json(f, p);
        } else {
            v = value_json(f, p);
        }
        cJSON_AddItemToObject(o, f->name, v);
    }
    return o;
}

static int print_message(const ProtobufCMessage *m)
{
    cJSON *j = message_json(m);
    char *text = j ? json_print(j, true) : NULL;
    cJSON_Delete(j);
    if (!text) {
        term_error("out of memory printing the answer");
        return 1;
    }
    term_write_json(stdout, text);
    fputc('\n', stdout);
    free(text);
    return 0;
}

/* ---------------------------------------------------------------- verbs */

/* The whole of path ("-": stdin) in a malloc'd NUL-terminated buffer, at most MAX_REQUEST_FILE. */
static char *read_all(const char *path, size_t *len)
{
    bool in = strcmp(path, "-") == 0;
    const char *name = in ? "standard input" : path;
    FILE *f = in ? stdin : fopen(path, "rb");
    if (!f) {
        term_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    struct mm_buf b = {0};
    char chunk[1 << 16];
    size_t got;
    const char *problem = NULL;
    while (!problem && (got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.len + got > MAX_REQUEST_FILE)
            problem = "larger than 64 MiB";
        else if (mm_buf_append(&b, chunk, got) < 0)
            problem = "out of memory";
    }
    if (!problem && ferror(f))
        problem = strerror(errno);
    if (!problem && !b.data && mm_buf_append(&b, "", 0) < 0) /* an empty file: "" */
        problem = "out of memory";
    if (!in)
        fclose(f);
    if (problem) {
        term_error("reading %s: %s", name, problem);
        mm_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data; /* NUL-terminated; the caller frees it */
}

static int infer(const struct serving_options *o)
{
    const char *model = o->args[1], *address = o->address ? o->address : INFER_ADDRESS;
    const char *path = o->file ? o->file : "-";
    size_t len = 0;
    char *json = read_all(path, &len);
    if (!json)
        return 1;
    Inference__ModelInferRequest *req = NULL;
    struct mm_error err = {0};
    int rc = v2json_request_parse(json, len, model, &req, &err);
    free(json);
    if (rc < 0) {
        term_error("%s: %s", strcmp(path, "-") ? path : "standard input", err.msg);
        return 1;
    }
    char what[512];
    snprintf(what, sizeof(what), "ModelInfer %s", model);
    ProtobufCMessage *m = NULL;
    rc = call(address, o->timeout_ms ? o->timeout_ms : 30000,
              "/inference.GRPCInferenceService/ModelInfer", what, &req->base,
              &inference__model_infer_response__descriptor, &m);
    v2json_request_free(req);
    if (rc)
        return rc;
    char *text = NULL;
    if (v2json_response_render((Inference__ModelInferResponse *)m, true, &text, &err) < 0) {
        term_error("%s at %s: %s", what, address, err.msg);
        rc = 1;
    } else {
        term_write_json(stdout, text);
        fputc('\n', stdout);
        free(text);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static int metadata(const struct serving_options *o)
{
    Inference__ModelMetadataRequest req = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    req.name = (char *)o->args[1];
    char what[512];
    snprintf(what, sizeof(what), "ModelMetadata %s", req.name);
    ProtobufCMessage *m = NULL;
    int rc = call(o->address ? o->address : INFER_ADDRESS, o->timeout_ms ? o->timeout_ms : 5000,
                  "/inference.GRPCInferenceService/ModelMetadata", what, &req.base,
                  &inference__model_metadata_response__descriptor, &m);
    if (rc == 0) {
        rc = print_message(m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

/* A uint64 as exact decimal text (a JSON number of more than 53 bits would lose digits). */
static void add_u64(cJSON *o, const char *name, uint64_t v)
{
    char num[32];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    cJSON_AddItemToObject(o, name, cJSON_CreateRaw(num));
}

/* The answer as JSON, field names those of the .proto. */
static cJSON *result_json(const struct spi_result *res)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    switch (res->method) {
    case SPI_RUNTIME_STATUS: {
        const struct spi_runtime_status *s = &res->runtime;
        cJSON_AddStringToObject(o, "status", spi_runtime_state_name(s->state));
        add_u64(o, "capacityInBytes", s->capacity_bytes);
        cJSON_AddNumberToObject(o, "maxLoadingConcurrency", s->max_loading_concurrency);
        cJSON_AddNumberToObject(o, "modelLoadingTimeoutMs", s->load_timeout_ms);
        add_u64(o, "defaultModelSizeInBytes", s->default_model_size_bytes);
        cJSON_AddStringToObject(o, "runtimeVersion", s->version);
        add_u64(o, "numericRuntimeVersion", s->numeric_version);
        cJSON_AddBoolToObject(o, "limitModelConcurrency", s->limit_model_concurrency);
        cJSON_AddBoolToObject(o, "allowAnyMethod", s->allow_any_method);
        break;
    }
    case SPI_LOAD_MODEL:
        add_u64(o, "sizeInBytes", res->size_bytes);
        cJSON_AddNumberToObject(o, "maxConcurrency", res->max_concurrency);
        break;
    case SPI_PREDICT_MODEL_SIZE:
    case SPI_MODEL_SIZE:
        add_u64(o, "sizeInBytes", res->size_bytes);
        break;
    case SPI_UNLOAD_MODEL:
        break;
    }
    return o;
}

static int runtime(const struct serving_options *o)
{
    const char *verb = o->args[1];
    unsigned timeout = 5000;
    int want_args;
    if (strcmp(verb, "status") == 0) {
        want_args = 2;
    } else if (strcmp(verb, "load") == 0) {
        timeout = 120000; /* loads may be slow; the runtime's own timeout is longer than most */
        want_args = 4;
    } else if (strcmp(verb, "unload") == 0 || strcmp(verb, "size") == 0) {
        want_args = 3;
    } else {
        term_error("unknown runtime verb '%s'", verb);
        return 2;
    }
    if (o->n_args != want_args) {
        term_error("runtime %s takes %d argument%s", verb, want_args - 2,
                   want_args == 3 ? "" : "s");
        return 2;
    }
    bool status = strcmp(verb, "status") == 0;
    if (status && !o->purge) {
        term_error("runtime status calls the runtime SPI's runtimeStatus, and a runtime answers "
                   "it by unloading every model it has loaded (the mesh calls it when it starts "
                   "with a runtime); add --purge to do that");
        return 2;
    }
    if (!status && o->purge) {
        term_error("--purge goes with runtime status only");
        return 2;
    }
    const char *address = o->address ? o->address : RUNTIME_ADDRESS;
    int64_t timeout_ms = o->timeout_ms ? o->timeout_ms : timeout;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rpc_context *ctx = NULL;
    struct spi_client *cl = NULL;
    struct mm_error err = {0};
    struct spi_result res;
    int rc = 1;
    if (!loop) {
        term_error("cannot create an event loop");
        return 1;
    }
    if (rpc_context_new(loop, &ctx, &err) < 0 || spi_client_new(ctx, address, &cl, &err) < 0) {
        term_error("%s: %s", address, err.msg);
        goto out;
    }
    struct spi_model m = {.id = o->args[2], .path = o->args[3], .type = o->type};
    if (strcmp(verb, "status") == 0)
        spi_sync_runtime_status(cl, timeout_ms, &res);
    else if (strcmp(verb, "load") == 0)
        spi_sync_load_model(cl, &m, timeout_ms, &res);
    else if (strcmp(verb, "unload") == 0)
        spi_sync_unload_model(cl, m.id, timeout_ms, &res);
    else
        spi_sync_model_size(cl, m.id, timeout_ms, &res);
    if (res.code < 0) {
        term_error("%s", res.err.msg);
        goto out;
    }
    cJSON *j = result_json(&res);
    char *text = j ? json_print(j, true) : NULL;
    cJSON_Delete(j);
    if (!text) {
        term_error("out of memory printing the answer");
        goto out;
    }
    term_write_json(stdout, text);
    fputc('\n', stdout);
    free(text);
    rc = 0;
out:
    spi_client_free(cl);
    rpc_context_free(ctx);
    ev_loop_destroy(loop);
    return rc;
}

/* ---------------------------------------------------------------- model verbs (mmesh) */

static const char *model_status_name(Mmesh__ModelStatusInfo__ModelStatus s)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &mmesh__model_status_info__model_status__descriptor, s);
    return v ? v->name : "UNKNOWN";
}

/* "model ID: STATUS", a line per copy (location, status, since when) and per error; the id, the
 * locations and the errors come from outside: escaped. */
static void print_model_status(const char *id, const Mmesh__ModelStatusInfo *m)
{
    fputs("model ", stdout);
    term_write(stdout, id, strlen(id), false);
    printf(": %s\n", model_status_name(m->status));
    for (size_t i = 0; i < m->n_modelcopyinfos; i++) {
        const Mmesh__ModelStatusInfo__ModelCopyInfo *c = m->modelcopyinfos[i];
        fputs("  copy ", stdout);
        term_write(stdout, c->location ? c->location : "", c->location ? strlen(c->location) : 0,
                   false);
        printf(": %s", model_status_name(c->copystatus));
        time_t secs = (time_t)(c->time / 1000);
        struct tm tm;
        char when[32];
        if (c->time > 0 && c->time < UINT64_C(253402300800000) && gmtime_r(&secs, &tm) &&
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm))
            printf(" since %s.%03uZ", when, (unsigned)(c->time % 1000));
        if (c->bytespulled || c->bytestotal) {
            printf(", pulled %.1f", (double)c->bytespulled / 1e6);
            if (c->bytestotal)
                printf("/%.1f", (double)c->bytestotal / 1e6);
            printf(" MB");
        }
        fputc('\n', stdout);
    }
    for (size_t i = 0; i < m->n_errors; i++) {
        fputs("  error: ", stdout);
        term_write(stdout, m->errors[i] ? m->errors[i] : "",
                   m->errors[i] ? strlen(m->errors[i]) : 0, false);
        fputc('\n', stdout);
    }
}

/* The modelInfo key and path of model register / vmodel set: --key alone as it is; with --uri or
 * --param, ModelMesh Serving's JSON form {"storage_key":K,"storage_params":{..}} (the URI's
 * parameters first, each --param k=v over them). *key and *path: malloc'd, the caller frees.
 * 0 or 2 (usage; message printed). */
static int model_key(const struct serving_options *o, char **key, char **path)
{
    *key = *path = NULL;
    if (!o->uri && o->n_params == 0) {
        *key = strdup(o->storage_key ? o->storage_key : "");
        *path = strdup(o->path ? o->path : "");
        if (!*key || !*path)
            goto nomem;
        return 0;
    }
    if (o->uri && o->path) {
        term_error("give --uri or --path, not both (the URI holds the path)");
        return 2;
    }
    cJSON *params = NULL;
    if (o->uri) {
        char *ptext = NULL;
        struct mm_error err = {0};
        if (stcfg_parse_uri(o->uri, &ptext, path, &err) < 0) {
            term_error("--uri: %s", err.msg);
            return 2;
        }
        params = cJSON_Parse(ptext);
        free(ptext);
    } else {
        params = cJSON_CreateObject();
        *path = strdup(o->path ? o->path : "");
    }
    if (!params || !*path)
        goto nomem_params;
    for (int i = 0; i < o->n_params; i++) {
        const char *eq = strchr(o->params[i], '=');
        if (!eq || eq == o->params[i]) {
            term_error("--param takes NAME=VALUE, not '%s'", o->params[i]);
            cJSON_Delete(params);
            free(*path);
            *path = NULL;
            return 2;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - o->params[i]), o->params[i]);
        cJSON *v = cJSON_CreateString(eq + 1);
        if (!v)
            goto nomem_params;
        if (cJSON_GetObjectItemCaseSensitive(params, name))
            cJSON_ReplaceItemInObjectCaseSensitive(params, name, v);
        else
            cJSON_AddItemToObject(params, name, v);
    }
    cJSON *k = cJSON_CreateObject();
    if (!k || (o->storage_key && o->storage_key[0] &&
               !cJSON_AddStringToObject(k, "storage_key", o->storage_key))) {
        cJSON_Delete(k);
        goto nomem_params;
    }
    cJSON_AddItemToObject(k, "storage_params", params);
    *key = cJSON_PrintUnformatted(k);
    cJSON_Delete(k);
    if (!*key)
        goto nomem;
    return 0;
nomem_params:
    cJSON_Delete(params);
nomem:
    free(*key);
    free(*path);
    *key = *path = NULL;
    term_error("out of memory");
    return 1;
}

/* `mmctl model register|unregister|status|ensure ID`: one call to the node's model API. */
static int model(const struct serving_options *o)
{
    const char *verb = o->args[1];
    bool reg = strcmp(verb, "register") == 0, unreg = strcmp(verb, "unregister") == 0;
    bool status = strcmp(verb, "status") == 0, ensure = strcmp(verb, "ensure") == 0;
    if (!reg && !unreg && !status && !ensure) {
        term_error("unknown model verb '%s' (register, unregister, status, ensure)", verb);
        return 2;
    }
    if (o->n_args != 3 || !o->args[2][0]) {
        term_error("model %s takes one model ID", verb);
        return 2;
    }
    if (reg && (!o->type || !o->type[0])) {
        term_error("model register needs --type T (the model's format, e.g. sklearn)");
        return 2;
    }
    if (!reg && (o->type || o->path || o->storage_key || o->load_now || o->uri || o->n_params)) {
        term_error("--type, --path, --key, --uri, --param and --load-now go with model register "
                   "only");
        return 2;
    }
    if (o->auto_delete || o->force || o->update_only || o->expected || o->owner) {
        term_error("--auto-delete, --force, --update-only, --expected and --owner go with "
                   "vmodel verbs only");
        return 2;
    }
    if (o->sync && !reg && !ensure) {
        term_error("--sync goes with model register and model ensure only");
        return 2;
    }
    if (o->purge) {
        term_error("--purge goes with runtime status only");
        return 2;
    }
    bool json = o->output && strcmp(o->output, "json") == 0;
    if (o->output && !json && strcmp(o->output, "text") != 0) {
        term_error("-o takes text or json");
        return 2;
    }
    if (o->node && o->address) {
        term_error("give the node's address with --node (or --address), not both");
        return 2;
    }
    const char *env = getenv("MM_NODE_ADDRESS");
    const char *address = o->node         ? o->node
                          : o->address    ? o->address
                          : env && env[0] ? env
                                          : NODE_ADDRESS;
    unsigned timeout_ms = o->timeout_ms ? o->timeout_ms
                          : o->sync     ? MODEL_SYNC_TIMEOUT_MS
                                        : MODEL_TIMEOUT_MS;
    char *id = (char *)o->args[2];

    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    Mmesh__RegisterModelRequest reg_req = MMESH__REGISTER_MODEL_REQUEST__INIT;
    Mmesh__UnregisterModelRequest unreg_req = MMESH__UNREGISTER_MODEL_REQUEST__INIT;
    Mmesh__GetStatusRequest status_req = MMESH__GET_STATUS_REQUEST__INIT;
    Mmesh__EnsureLoadedRequest ensure_req = MMESH__ENSURE_LOADED_REQUEST__INIT;
    const ProtobufCMessage *req;
    const char *method;
    char *key = NULL, *spath = NULL;
    if (reg) {
        int krc = model_key(o, &key, &spath);
        if (krc)
            return krc;
        info.type = (char *)o->type;
        info.path = spath;
        info.key = key;
        reg_req.modelid = id;
        reg_req.modelinfo = &info;
        reg_req.loadnow = o->load_now;
        reg_req.sync = o->sync;
        req = &reg_req.base;
        method = "registerModel";
    } else if (unreg) {
        unreg_req.modelid = id;
        req = &unreg_req.base;
        method = "unregisterModel";
    } else if (status) {
        status_req.modelid = id;
        req = &status_req.base;
        method = "getModelStatus";
    } else {
        ensure_req.modelid = id;
        ensure_req.sync = o->sync;
        req = &ensure_req.base;
        method = "ensureLoaded";
    }
    char path[64], what[600];
    snprintf(path, sizeof(path), "/mmesh.ModelMesh/%s", method);
    snprintf(what, sizeof(what), "%s %.500s", method, id);
    ProtobufCMessage *m = NULL;
    int rc = call(address, timeout_ms, path, what, req,
                  unreg ? &mmesh__unregister_model_response__descriptor
                        : &mmesh__model_status_info__descriptor,
                  &m);
    free(key);
    free(spath);
    if (rc)
        return rc;
    if (unreg) {
        if (json) {
            rc = print_message(m);
        } else {
            fputs("model ", stdout);
            term_write(stdout, id, strlen(id), false);
            fputs(": unregistered\n", stdout);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    const Mmesh__ModelStatusInfo *info_out = (const Mmesh__ModelStatusInfo *)m;
    if (json)
        rc = print_message(m);
    else
        print_model_status(id, info_out);
    /* What was asked did not happen: a script must see it in the exit code. */
    if (rc == 0 && info_out->status == MMESH__MODEL_STATUS_INFO__MODEL_STATUS__NOT_FOUND) {
        term_error("%s at %s: the model is not registered", what, address);
        rc = 1;
    } else if (rc == 0 && o->sync &&
               info_out->status != MMESH__MODEL_STATUS_INFO__MODEL_STATUS__LOADED) {
        term_error("%s at %s: ended %s, not LOADED%s%s", what, address,
                   model_status_name(info_out->status), info_out->n_errors ? ": " : "",
                   info_out->n_errors ? info_out->errors[info_out->n_errors - 1] : "");
        rc = 1;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* ---------------------------------------------------------------- vmodel verbs (mmesh) */

static const char *vmodel_status_name(Mmesh__VModelStatusInfo__VModelStatus s)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &mmesh__vmodel_status_info__vmodel_status__descriptor, s);
    return v ? v->name : "UNKNOWN";
}

/* "vmodel NAME: STATUS", its owner, "active ID: STATUS" and, during a transition, "target ID:
 * STATUS", each model's copies and errors below it; names from outside are escaped. */
static void print_vmodel_status(const char *name, const Mmesh__VModelStatusInfo *v)
{
    fputs("vmodel ", stdout);
    term_write(stdout, name, strlen(name), false);
    printf(": %s\n", vmodel_status_name(v->status));
    if (v->owner && v->owner[0]) {
        fputs("  owner ", stdout);
        term_write(stdout, v->owner, strlen(v->owner), false);
        fputc('\n', stdout);
    }
    const struct {
        const char *label, *id;
        const Mmesh__ModelStatusInfo *st;
    } parts[] = {{"active", v->activemodelid, v->activemodelstatus},
                 {"target", v->targetmodelid, v->targetmodelstatus}};
    for (size_t i = 0; i < 2; i++) {
        if (!parts[i].id || !parts[i].id[0] || (i == 1 && !parts[i].st))
            continue;
        printf("  %s ", parts[i].label);
        term_write(stdout, parts[i].id, strlen(parts[i].id), false);
        if (!parts[i].st) {
            fputc('\n', stdout);
            continue;
        }
        printf(": %s\n", model_status_name(parts[i].st->status));
        for (size_t k = 0; k < parts[i].st->n_modelcopyinfos; k++) {
            const Mmesh__ModelStatusInfo__ModelCopyInfo *c = parts[i].st->modelcopyinfos[k];
            fputs("    copy ", stdout);
            term_write(stdout, c->location ? c->location : "",
                       c->location ? strlen(c->location) : 0, false);
            printf(": %s\n", model_status_name(c->copystatus));
        }
        for (size_t k = 0; k < parts[i].st->n_errors; k++) {
            const char *e = parts[i].st->errors[k] ? parts[i].st->errors[k] : "";
            fputs("    error: ", stdout);
            term_write(stdout, e, strlen(e), false);
            fputc('\n', stdout);
        }
    }
}

/* `mmctl vmodel set NAME TARGET | status NAME | delete NAME`: one call to the node's model
 * API. */
static int vmodel(const struct serving_options *o)
{
    const char *verb = o->args[1];
    bool set = strcmp(verb, "set") == 0, status = strcmp(verb, "status") == 0,
         del = strcmp(verb, "delete") == 0;
    if (!set && !status && !del) {
        term_error("unknown vmodel verb '%s' (set, status, delete)", verb);
        return 2;
    }
    if (o->n_args != (set ? 4 : 3) || !o->args[2][0] || (set && !o->args[3][0])) {
        term_error(set ? "vmodel set takes a NAME and a TARGET model id"
                       : "vmodel %s takes one NAME", verb);
        return 2;
    }
    if (!set && (o->type || o->path || o->storage_key || o->load_now || o->sync ||
                 o->auto_delete || o->force || o->update_only || o->expected || o->uri ||
                 o->n_params)) {
        term_error("--type, --path, --key, --uri, --param, --load-now, --sync, --auto-delete, "
                   "--force, --update-only and --expected go with vmodel set only");
        return 2;
    }
    if (set && (o->path || o->storage_key || o->uri || o->n_params) &&
        (!o->type || !o->type[0])) {
        term_error("vmodel set: --path, --key, --uri and --param describe the target with "
                   "--type T");
        return 2;
    }
    if (o->purge) {
        term_error("--purge goes with runtime status only");
        return 2;
    }
    bool json = o->output && strcmp(o->output, "json") == 0;
    if (o->output && !json && strcmp(o->output, "text") != 0) {
        term_error("-o takes text or json");
        return 2;
    }
    if (o->node && o->address) {
        term_error("give the node's address with --node (or --address), not both");
        return 2;
    }
    const char *env = getenv("MM_NODE_ADDRESS");
    const char *address = o->node         ? o->node
                          : o->address    ? o->address
                          : env && env[0] ? env
                                          : NODE_ADDRESS;
    unsigned timeout_ms = o->timeout_ms ? o->timeout_ms
                          : o->sync     ? MODEL_SYNC_TIMEOUT_MS
                                        : MODEL_TIMEOUT_MS;
    char *name = (char *)o->args[2];
    char *owner = (char *)(o->owner ? o->owner : "");

    Mmesh__ModelInfo info = MMESH__MODEL_INFO__INIT;
    Mmesh__SetVModelRequest set_req = MMESH__SET_VMODEL_REQUEST__INIT;
    Mmesh__GetVModelStatusRequest status_req = MMESH__GET_VMODEL_STATUS_REQUEST__INIT;
    Mmesh__DeleteVModelRequest del_req = MMESH__DELETE_VMODEL_REQUEST__INIT;
    const ProtobufCMessage *req;
    const char *method;
    char *key = NULL, *spath = NULL;
    if (set) {
        set_req.vmodelid = name;
        set_req.targetmodelid = (char *)o->args[3];
        if (o->type && o->type[0]) {
            int krc = model_key(o, &key, &spath);
            if (krc)
                return krc;
            info.type = (char *)o->type;
            info.path = spath;
            info.key = key;
            set_req.modelinfo = &info;
        }
        set_req.autodeletetargetmodel = o->auto_delete;
        set_req.loadnow = o->load_now;
        set_req.force = o->force;
        set_req.updateonly = o->update_only;
        set_req.sync = o->sync;
        set_req.expectedtargetmodelid = (char *)(o->expected ? o->expected : "");
        set_req.owner = owner;
        req = &set_req.base;
        method = "setVModel";
    } else if (status) {
        status_req.vmodelid = name;
        status_req.owner = owner;
        req = &status_req.base;
        method = "getVModelStatus";
    } else {
        del_req.vmodelid = name;
        del_req.owner = owner;
        req = &del_req.base;
        method = "deleteVModel";
    }
    char path[64], what[600];
    snprintf(path, sizeof(path), "/mmesh.ModelMesh/%s", method);
    snprintf(what, sizeof(what), "%s %.500s", method, name);
    ProtobufCMessage *m = NULL;
    int rc = call(address, timeout_ms, path, what, req,
                  del ? &mmesh__delete_vmodel_response__descriptor
                      : &mmesh__vmodel_status_info__descriptor,
                  &m);
    free(key);
    free(spath);
    if (rc)
        return rc;
    if (del) {
        if (json) {
            rc = print_message(m);
        } else {
            fputs("vmodel ", stdout);
            term_write(stdout, name, strlen(name), false);
            fputs(": deleted\n", stdout);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    const Mmesh__VModelStatusInfo *v = (const Mmesh__VModelStatusInfo *)m;
    if (json)
        rc = print_message(m);
    else
        print_vmodel_status(name, v);
    if (rc == 0 && v->status == MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__NOT_FOUND) {
        term_error("%s at %s: no such vmodel%s", what, address,
                   owner[0] ? " with that owner" : "");
        rc = 1;
    } else if (rc == 0 && set && o->sync &&
               v->status == MMESH__VMODEL_STATUS_INFO__VMODEL_STATUS__TRANSITION_FAILED) {
        term_error("%s at %s: the transition to %s failed; %s still serves", what, address,
                   v->targetmodelid, v->activemodelid);
        rc = 1;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int serving_run(const struct serving_options *o)
{
    const char *group = o->args[0];
    if (strcmp(group, "vmodel") == 0) {
        if (o->n_args < 2) {
            term_error("vmodel takes a verb (set, status, delete) and a NAME");
            return 2;
        }
        return vmodel(o);
    }
    if (strcmp(group, "model") == 0) {
        if (o->n_args < 2) {
            term_error("model takes a verb (register, unregister, status, ensure) and an ID");
            return 2;
        }
        return model(o);
    }
    if (o->node || o->path || o->storage_key || o->output || o->load_now || o->sync ||
        o->auto_delete || o->force || o->update_only || o->expected || o->owner) {
        term_error("--node, --path, --storage-key, -o, --load-now, --sync and the vmodel flags "
                   "go with model verbs only (model and vmodel)");
        return 2;
    }
    bool model_verb = strcmp(group, "infer") == 0 || strcmp(group, "metadata") == 0;
    if (!model_verb && strcmp(group, "runtime") != 0) {
        term_error("unknown command '%s'", group);
        return 2;
    }
    if (o->n_args < 2 || (model_verb && o->n_args != 2)) {
        term_error("%s takes %s", group, model_verb ? "one MODEL" : "a verb");
        return 2;
    }
    if (!model_verb)
        return runtime(o);
    if (o->purge) {
        term_error("--purge goes with runtime status only");
        return 2;
    }
    return group[0] == 'i' ? infer(o) : metadata(o);
}
