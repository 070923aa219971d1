/* stcfg.c - which storage a model is pulled from (see stcfg.h): the storage key's entry and
 * the model's parameters, read as JSON objects of strings, aliases made canonical, the
 * parameters laid over the entry; and storageUri forms into parameters and a path.
 *
 * Entries come from a secret anyone with write access to the registry can put, so they are
 * bounded (bytes, fields, name and value lengths) and refused where JSON readers disagree (a
 * name given twice, "\u0000" in a string). Messages name keys and fields, never values. */
#include "mm/stcfg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/log.h"

#define ENTRY_MAX_BYTES (256u << 10) /* an entry's or the params' JSON text */
#define FIELDS_MAX 64                /* fields of one object */
#define NAME_MAX_BYTES 64            /* a field's name */
#define VALUE_MAX_BYTES (128u << 10) /* a field's value (a PEM CA bundle fits) */
#define KEY_MAX 253                  /* a storage key (a Kubernetes secret data key) */
#define URI_MAX 4096
#define QUOTE_MAX 80

static const char *const types[] = {"s3", "gcs", "azure", "http", "pvc"};

/* Older or other spellings, and the canonical name each one stands for. */
static const struct {
    const char *alias, *name;
} aliases[] = {
    {"access_key", "access_key_id"},
    {"default_bucket", "bucket"},
};

static const char *quote(char *out, size_t size, const char *s, size_t len)
{
    mm_log_escape(out, size, s, len);
    return out;
}

/* A storage key: what a Kubernetes secret's data key may be ([-._a-zA-Z0-9], 1..253), since
 * it also becomes part of an etcd key. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > KEY_MAX)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_'))
            return false;
    return strcmp(k, ".") != 0 && strcmp(k, "..") != 0;
}

/* "\u0000" inside a string of the text: cJSON would cut the value there. */
static bool has_escaped_nul(const char *json, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = json[i] == '"';
        } else if (json[i] == '"') {
            in_string = false;
        } else if (json[i] == '\\') {
            if (i + 5 < len && json[i + 1] == 'u' && memcmp(json + i + 2, "0000", 4) == 0)
                return true;
            i++;
        }
    }
    return false;
}

/* The canonical name of a field. */
static const char *canonical(const char *name)
{
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcmp(name, aliases[i].alias) == 0)
            return aliases[i].name;
    return name;
}

/* Parse what (an entry or the params) into a fresh object of strings under canonical names
 * (the canonical name wins over its alias). "headers" may be an object of strings: it is kept
 * as its compact JSON text, so every field of the result is a string. */
static int read_object(const char *json, const char *what, cJSON **out, struct mm_error *err)
{
    char qn[QUOTE_MAX];
    size_t len = strlen(json);
    *out = NULL;
    if (len > ENTRY_MAX_BYTES)
        return mm_error_set(err, -EINVAL, "%s: %zu bytes, more than %u", what, len,
                            ENTRY_MAX_BYTES);
    if (!mm_utf8_valid(json, len))
        return mm_error_set(err, -EINVAL, "%s: not UTF-8", what);
    if (has_escaped_nul(json, len))
        return mm_error_set(err, -EINVAL, "%s: a string holds \\u0000", what);
    cJSON *in = cJSON_ParseWithOpts(json, NULL, true);
    if (!in)
        return mm_error_set(err, -EINVAL, "%s: not valid JSON", what);
    int rc = 0;
    cJSON *res = cJSON_CreateObject();
    if (!res) {
        rc = mm_error_set(err, -ENOMEM, "%s: out of memory", what);
        goto out;
    }
    if (!cJSON_IsObject(in)) {
        rc = mm_error_set(err, -EINVAL, "%s: not a JSON object", what);
        goto out;
    }
    int n = 0;
    for (cJSON *f = in->child; f; f = f->next) {
        size_t nlen = strlen(f->string);
        if (++n > FIELDS_MAX) {
            rc = mm_error_set(err, -EINVAL, "%s: more than %d fields", what, FIELDS_MAX);
            goto out;
        }
        if (nlen == 0 || nlen > NAME_MAX_BYTES) {
            rc = mm_error_set(err, -EINVAL, "%s: a field name of %zu bytes (1..%d)", what, nlen,
                              NAME_MAX_BYTES);
            goto out;
        }
        quote(qn, sizeof(qn), f->string, nlen);
        for (cJSON *g = in->child; g != f; g = g->next) {
            if (strcmp(g->string, f->string) == 0) {
                rc = mm_error_set(err, -EINVAL,
                                  "%s: field '%s' is given twice (readers differ on which one "
                                  "counts)",
                                  what, qn);
                goto out;
            }
        }
        char *text = NULL;
        if (cJSON_IsString(f)) {
            text = strdup(f->valuestring);
        } else if (cJSON_IsObject(f) && strcmp(f->string, "headers") == 0) {
            for (cJSON *h = f->child; h; h = h->next) {
                if (!cJSON_IsString(h)) {
                    rc = mm_error_set(err, -EINVAL,
                                      "%s: field 'headers': every header value must be a string",
                                      what);
                    goto out;
                }
            }
            text = cJSON_PrintUnformatted(f);
        } else {
            rc = mm_error_set(err, -EINVAL, "%s: field '%s' is not a string", what, qn);
            goto out;
        }
        if (!text) {
            rc = mm_error_set(err, -ENOMEM, "%s: out of memory", what);
            goto out;
        }
        if (strlen(text) > VALUE_MAX_BYTES) {
            free(text);
            rc = mm_error_set(err, -EINVAL, "%s: field '%s' is longer than %u bytes", what, qn,
                              VALUE_MAX_BYTES);
            goto out;
        }
        const char *name = canonical(f->string);
        bool is_alias = name != f->string;
        cJSON *have = cJSON_GetObjectItemCaseSensitive(res, name);
        if (have && is_alias) { /* the canonical name is already there: it wins */
            free(text);
            continue;
        }
        cJSON *v = cJSON_CreateString(text);
        free(text);
        if (!v) {
            rc = mm_error_set(err, -ENOMEM, "%s: out of memory", what);
            goto out;
        }
        if (have)
            cJSON_ReplaceItemInObjectCaseSensitive(res, name, v);
        else
            cJSON_AddItemToObject(res, name, v);
    }
out:
    cJSON_Delete(in);
    if (rc < 0) {
        cJSON_Delete(res);
        return rc;
    }
    *out = res;
    return 0;
}

/* Look key up: 0 with *obj (NULL when there is no entry), or -errno. */
static int lookup_entry(const char *key, stcfg_lookup_fn lookup, void *arg, cJSON **obj,
                        struct mm_error *err)
{
    *obj = NULL;
    if (!lookup)
        return 0;
    char *json = NULL;
    struct mm_error lerr = {0};
    int rc = lookup(key, &json, arg, &lerr);
    if (rc == -ENOENT) {
        free(json);
        return 0;
    }
    if (rc < 0) {
        free(json);
        if (lerr.msg[0])
            return mm_error_set(err, rc, "storage key '%s': %s", key, lerr.msg);
        return mm_error_set(err, rc, "storage key '%s': cannot read storage-config: %s", key,
                            mm_strerror(rc));
    }
    if (!json)
        return 0;
    char what[KEY_MAX + 64];
    snprintf(what, sizeof(what), "storage key '%s'", key);
    rc = read_object(json, what, obj, err);
    free(json);
    return rc;
}

static bool type_known(const char *t)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(t, types[i]) == 0)
            return true;
    return false;
}

int stcfg_resolve(const char *key, const char *params, stcfg_lookup_fn lookup, void *arg,
                  struct stcfg *out, struct mm_error *err)
{
    char qk[QUOTE_MAX];
    memset(out, 0, sizeof(*out));
    cJSON *entry = NULL, *over = NULL;
    int rc = 0;
    if (params && params[0] && (rc = read_object(params, "storage parameters", &over, err)) < 0)
        return rc;
    if (key && key[0]) {
        if (!key_ok(key)) {
            rc = mm_error_set(err, -EINVAL,
                              "storage key '%s': not a secret key (1..%d of [-._a-zA-Z0-9])",
                              quote(qk, sizeof(qk), key, strlen(key)), KEY_MAX);
            goto out;
        }
        if ((rc = lookup_entry(key, lookup, arg, &entry, err)) < 0)
            goto out;
        if (!entry) {
            rc = mm_error_set(err, -ENOENT, "storage key '%s' not in storage-config", key);
            goto out;
        }
        snprintf(out->key, sizeof(out->key), "%s", key);
    } else {
        const cJSON *t = over ? cJSON_GetObjectItemCaseSensitive(over, "type") : NULL;
        char typed[32] = "";
        if (t && strlen(t->valuestring) < sizeof(typed) - 8 && type_known(t->valuestring))
            snprintf(typed, sizeof(typed), "default_%s", t->valuestring);
        if (typed[0] && (rc = lookup_entry(typed, lookup, arg, &entry, err)) < 0)
            goto out;
        if (entry)
            snprintf(out->key, sizeof(out->key), "%s", typed);
        else if ((rc = lookup_entry("default", lookup, arg, &entry, err)) < 0)
            goto out;
        else if (entry)
            snprintf(out->key, sizeof(out->key), "default");
    }
    if (!entry && !over)
        goto out; /* local */
    if (!entry) {
        entry = over;
        over = NULL;
    }
    for (cJSON *f = over ? over->child : NULL; f; f = f->next) {
        cJSON *v = cJSON_CreateString(f->valuestring);
        cJSON *have = cJSON_GetObjectItemCaseSensitive(entry, f->string);
        if (!v) {
            rc = mm_error_set(err, -ENOMEM, "storage key '%s': out of memory", out->key);
            goto out;
        }
        if (have)
            cJSON_ReplaceItemInObjectCaseSensitive(entry, f->string, v);
        else if (cJSON_GetArraySize(entry) >= FIELDS_MAX) {
            cJSON_Delete(v);
            rc = mm_error_set(err, -EINVAL,
                              "storage key '%s' with the storage parameters: more than %d fields",
                              out->key, FIELDS_MAX);
            goto out;
        } else
            cJSON_AddItemToObject(entry, f->string, v);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(entry, "type");
    if (!t || !t->valuestring[0]) {
        rc = mm_error_set(err, -EINVAL, "storage key '%s': no type", out->key);
        goto out;
    }
    if (!type_known(t->valuestring)) {
        rc = mm_error_set(err, -EINVAL,
                          "storage key '%s': unknown type '%s' (s3, gcs, azure, http or pvc)",
                          out->key, quote(qk, sizeof(qk), t->valuestring, strlen(t->valuestring)));
        goto out;
    }
    out->cfg = entry;
    entry = NULL;
out:
    cJSON_Delete(entry);
    cJSON_Delete(over);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

void stcfg_clear(struct stcfg *c)
{
    if (!c)
        return;
    cJSON_Delete(c->cfg);
    memset(c, 0, sizeof(*c));
}

/* ---- storage URIs ---- */

/* Printable ASCII but space: what a URI may hold here. */
static bool uri_chars_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static bool has_dotdot(const char *path)
{
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += n;
        if (*p == '/')
            p++;
    }
    return false;
}

static int uri_out(cJSON *o, const char *path, char **params, char **path_out, const char *uri,
                   struct mm_error *err)
{
    char *p = o ? cJSON_PrintUnformatted(o) : NULL;
    char *q = strdup(path);
    cJSON_Delete(o);
    if (!p || !q) {
        free(p);
        free(q);
        return mm_error_set(err, -ENOMEM, "storage URI %s: out of memory", uri);
    }
    *params = p;
    *path_out = q;
    return 0;
}

int stcfg_parse_uri(const char *uri, char **params, char **path, struct mm_error *err)
{
    char qu[QUOTE_MAX + 40];
    *params = *path = NULL;
    if (!uri || !uri[0])
        return mm_error_set(err, -EINVAL, "storage URI: empty");
    quote(qu, sizeof(qu), uri, strlen(uri));
    if (strlen(uri) > URI_MAX)
        return mm_error_set(err, -EINVAL, "storage URI of %zu bytes: longer than %d",
                            strlen(uri), URI_MAX);
    if (!uri_chars_ok(uri))
        return mm_error_set(err, -EINVAL, "storage URI %s: a space, control or non-ASCII byte",
                            qu);
    static const struct {
        const char *scheme, *type, *field;
    } schemes[] = {
        {"s3://", "s3", "bucket"},   {"gs://", "gcs", "bucket"},   {"pvc://", "pvc", "name"},
        {"https://", "http", "url"}, {"http://", "http", "url"},
    };
    size_t i = 0, ns = sizeof(schemes) / sizeof(schemes[0]);
    while (i < ns && strncmp(uri, schemes[i].scheme, strlen(schemes[i].scheme)) != 0)
        i++;
    if (i == ns)
        return mm_error_set(err, -EINVAL,
                            "storage URI %s: unknown scheme (s3://, gs://, pvc://, http(s)://)",
                            qu);
    const char *auth = uri + strlen(schemes[i].scheme);
    const char *slash = strchr(auth, '/');
    size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
    const char *rest = slash ? slash + 1 : "";
    bool http = strcmp(schemes[i].type, "http") == 0;
    if (alen == 0)
        return mm_error_set(err, -EINVAL, "storage URI %s: no %s", qu,
                            http ? "host" : schemes[i].field);
    if (alen > 255)
        return mm_error_set(err, -EINVAL, "storage URI %s: a %s longer than 255 bytes", qu,
                            http ? "host" : schemes[i].field);
    if (memchr(auth, '@', alen))
        return mm_error_set(err, -EINVAL,
                            "storage URI of scheme %s: credentials in the URI (give them in a "
                            "storage key; the URI is not shown, it holds them)",
                            schemes[i].scheme);
    if (strpbrk(uri, "?#"))
        return mm_error_set(err, -EINVAL,
                            "storage URI of scheme %s: a query or fragment (give credentials and "
                            "headers in a storage key; the URI is not shown, it may hold them)",
                            schemes[i].scheme);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return mm_error_set(err, -ENOMEM, "storage URI %s: out of memory", qu);
    char host[256];
    memcpy(host, auth, alen);
    host[alen] = '\0';
    static const char azure_suffix[] = ".blob.core.windows.net";
    size_t sl = strlen(azure_suffix);
    const char *p = rest;
    if (http && strncmp(uri, "https://", 8) == 0 && alen > sl &&
        strcmp(host + alen - sl, azure_suffix) == 0) {
        /* https://ACCOUNT.blob.core.windows.net/CONTAINER/path */
        const char *cs = strchr(rest, '/');
        size_t clen = cs ? (size_t)(cs - rest) : strlen(rest);
        if (clen == 0 || clen > 63) {
            cJSON_Delete(o);
            return mm_error_set(err, -EINVAL, "storage URI %s: no container", qu);
        }
        host[alen - sl] = '\0';
        char container[64];
        memcpy(container, rest, clen);
        container[clen] = '\0';
        if (!cJSON_AddStringToObject(o, "type", "azure") ||
            !cJSON_AddStringToObject(o, "account_name", host) ||
            !cJSON_AddStringToObject(o, "container", container)) {
            cJSON_Delete(o);
            return mm_error_set(err, -ENOMEM, "storage URI %s: out of memory", qu);
        }
        p = cs ? cs + 1 : "";
    } else {
        char url[8 + 256];
        const char *value = host;
        if (http) {
            snprintf(url, sizeof(url), "%.*s%s", (int)strlen(schemes[i].scheme), uri, host);
            value = url;
        } else if (strchr(host, ':') || strcmp(host, ".") == 0 || strcmp(host, "..") == 0) {
            cJSON_Delete(o);
            return mm_error_set(err, -EINVAL, "storage URI %s: not a %s", qu,
                                schemes[i].field);
        }
        if (!cJSON_AddStringToObject(o, "type", schemes[i].type) ||
            !cJSON_AddStringToObject(o, schemes[i].field, value)) {
            cJSON_Delete(o);
            return mm_error_set(err, -ENOMEM, "storage URI %s: out of memory", qu);
        }
    }
    while (*p == '/')
        p++;
    if (!*p) {
        cJSON_Delete(o);
        return mm_error_set(err, -EINVAL, "storage URI %s: no path (the model within)", qu);
    }
    if (has_dotdot(p)) {
        cJSON_Delete(o);
        return mm_error_set(err, -EINVAL, "storage URI %s: a \"..\" component in the path", qu);
    }
    return uri_out(o, p, params, path, qu, err);
}
