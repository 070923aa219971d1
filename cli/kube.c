/* kube.c - mmctl's kubectl-shaped verbs (kube.h). Objects live in the registry in Kubernetes
 * shape: isvcs/<ns>/<name> (the InferenceService as applied, with namespace, generation, uid
 * and creationTimestamp set here), isvc-status/<ns>/<name> (written by the leader controller;
 * only read here, deleted with its isvc), runtimes/<name>, storage-config/<key> (the Secret,
 * kube_secret.h).
 *
 * apply and delete -f check every object of the file (a kind: List's items too) before they
 * write or delete anything. Tables are laid out as
 * kubectl's tabwriter does (get: minimum width 6, padding 3; describe: padding 2), describe
 * prints the object as kubectl's generic describer does (keys sorted, camelCase split into
 * words). Everything printed that came from the file or the registry goes through term.h. */
#include "kube.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mm/base64.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "mm/json.h"
#include "mm/keys.h"
#include "mm/yamljson.h"
#include "kube_secret.h"
#include "term.h"

#define ISVC_RESOURCE "inferenceservice.serving.kserve.io"
#define ISVC_RESOURCES "inferenceservices.serving.kserve.io"
#define SECRET_NAME KUBE_SECRET_NAME
#define MAX_OBJECTS 10000 /* listed by one get */
#define MAX_MANIFEST_OBJECTS 1000 /* in one file given to apply or delete */
#define MAX_ANNOTATION_LEN 140
#define MAX_RANGE_DEPTH 8 /* jsonpath {range} nesting */

static const char *namespace_of(const struct kube_options *o)
{
    if (o->ns && o->ns[0])
        return o->ns;
    const char *env = getenv("MM_NAMESPACE");
    return env && env[0] ? env : ISVC_DEFAULT_NAMESPACE;
}

static void oom(void)
{
    fprintf(stderr, "mmctl: out of memory\n");
}

/* ---- Reading a file or standard input, bounded ---- */

static char *read_input(const char *file, size_t *len)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (!f) {
        term_error("%s: %s", file, strerror(errno));
        return NULL;
    }
    size_t cap = YAMLJSON_MAX_BYTES + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        oom();
        goto out;
    }
    while (n < cap) {
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    if (ferror(f)) {
        term_error("%s: %s", file, strerror(errno));
        free(buf);
        buf = NULL;
    } else if (n > YAMLJSON_MAX_BYTES) {
        term_error("%s: larger than %u bytes, the most a manifest may have", file,
                   YAMLJSON_MAX_BYTES);
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
        *len = n;
    }
out:
    if (f != stdin)
        fclose(f);
    return buf;
}

/* ---- Text laid out as Go's text/tabwriter does (cells end with '\t') ---- */

struct tab_line {
    char **cells;
    size_t n;
};

struct tabwriter {
    struct tab_line *lines;
    size_t n, cap;
    size_t minwidth, padding;
    size_t *remember; /* NULL, or widths kept from one flush to the next (a watch's rows) */
    size_t n_remember;
    bool failed;
};

/* Display width: code points. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Add one line (no '\n' inside; '\t' ends a cell). */
static void tw_add(struct tabwriter *t, const char *line)
{
    if (t->failed)
        return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        struct tab_line *l = realloc(t->lines, cap * sizeof(*l));
        if (!l) {
            t->failed = true;
            return;
        }
        t->lines = l;
        t->cap = cap;
    }
    size_t cells = 1;
    for (const char *p = line; *p; p++)
        cells += *p == '\t';
    struct tab_line *l = &t->lines[t->n];
    l->cells = calloc(cells, sizeof(char *));
    l->n = 0;
    if (!l->cells) {
        t->failed = true;
        return;
    }
    t->n++;
    const char *start = line;
    for (;;) {
        const char *tab = strchr(start, '\t');
        size_t len = tab ? (size_t)(tab - start) : strlen(start);
        char *c = strndup(start, len);
        if (!c) {
            t->failed = true;
            return;
        }
        l->cells[l->n++] = c;
        if (!tab)
            break;
        start = tab + 1;
    }
}

/* Add text holding several lines, empty ones kept (they end a column block, as in Go). */
static void tw_add_text(struct tabwriter *t, char *text)
{
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        tw_add(t, line);
        if (!nl)
            break;
        line = nl + 1;
    }
}

static void tw_write_lines(const struct tabwriter *t, size_t line0, size_t line1,
                           const size_t *widths, size_t nw, FILE *out)
{
    for (size_t i = line0; i < line1; i++) {
        const struct tab_line *l = &t->lines[i];
        for (size_t j = 0; j < l->n; j++) {
            term_write(out, l->cells[j], strlen(l->cells[j]), false);
            if (j < nw && j + 1 < l->n)
                for (size_t w = text_width(l->cells[j]); w < widths[j]; w++)
                    fputc(' ', out);
        }
        fputc('\n', out);
    }
}

/* Go's text/tabwriter format(): a column's width is set by the block of consecutive lines that
 * have a cell in it. */
static void tw_format(struct tabwriter *t, size_t line0, size_t line1, size_t *widths, size_t nw,
                      FILE *out)
{
    size_t column = nw;
    for (size_t cur = line0; cur < line1; cur++) {
        if (column + 1 >= t->lines[cur].n)
            continue;
        tw_write_lines(t, line0, cur, widths, nw, out);
        line0 = cur;
        size_t width = t->minwidth;
        for (; cur < line1; cur++) {
            const struct tab_line *l = &t->lines[cur];
            if (column + 1 >= l->n)
                break;
            size_t w = text_width(l->cells[column]) + t->padding;
            if (w > width)
                width = w;
        }
        if (nw < t->n_remember) {
            if (t->remember[nw] > width)
                width = t->remember[nw];
            t->remember[nw] = width;
        }
        widths[nw] = width;
        tw_format(t, line0, cur, widths, nw + 1, out);
        line0 = cur;
    }
    tw_write_lines(t, line0, line1, widths, nw, out);
}

static int tw_flush(struct tabwriter *t, FILE *out)
{
    size_t maxcells = 1;
    for (size_t i = 0; i < t->n; i++)
        if (t->lines[i].n > maxcells)
            maxcells = t->lines[i].n;
    size_t *widths = calloc(maxcells, sizeof(size_t));
    int rc = 0;
    if (!widths || t->failed) {
        oom();
        rc = -ENOMEM;
    } else {
        tw_format(t, 0, t->n, widths, 0, out);
    }
    free(widths);
    for (size_t i = 0; i < t->n; i++) {
        for (size_t j = 0; j < t->lines[i].n; j++)
            free(t->lines[i].cells[j]);
        free(t->lines[i].cells);
    }
    free(t->lines);
    t->lines = NULL;
    t->n = t->cap = 0;
    return rc;
}

/* A value as one cell: tabs and line ends escaped so that they stay inside it. */
static void put_cell(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\t')
            fputs("\\t", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else if (*s == '\r')
            fputs("\\r", f);
        else
            fputc(*s, f);
    }
}

/* ---- Small JSON helpers ---- */

static const cJSON *field(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

static const char *str_at(const cJSON *obj, const char *a, const char *b, const char *c)
{
    const cJSON *n = field(obj, a);
    if (b)
        n = field(n, b);
    if (c)
        n = field(n, c);
    return cJSON_IsString(n) ? n->valuestring : "";
}

/* A scalar as Go's %v prints it from unstructured JSON. */
static void put_scalar(FILE *f, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        put_cell(f, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == (double)(int64_t)d && d > -9.2e18 && d < 9.2e18)
            fprintf(f, "%" PRId64, (int64_t)d);
        else
            fprintf(f, "%g", d);
    } else if (cJSON_IsBool(v)) {
        fputs(cJSON_IsTrue(v) ? "true" : "false", f);
    } else {
        fputs("<nil>", f);
    }
}

/* ---- The objects of one get: name, object as stored, its status ---- */

struct kobj {
    char *name;
    cJSON *obj;    /* as stored */
    cJSON *status; /* KServe's status object from isvc-status/, or NULL */
};

struct kset {
    struct kobj *v;
    size_t n, cap;
};

static void kset_free(struct kset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].name);
        cJSON_Delete(s->v[i].obj);
        cJSON_Delete(s->v[i].status);
    }
    free(s->v);
    *s = (struct kset){0};
}

static struct kobj *kset_find(struct kset *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return &s->v[i];
    return NULL;
}

static struct kobj *kset_add(struct kset *s, const char *name)
{
    if (s->n == MAX_OBJECTS)
        return NULL;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct kobj *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        s->v = v;
        s->cap = cap;
    }
    struct kobj *k = &s->v[s->n];
    *k = (struct kobj){.name = strdup(name)};
    if (!k->name)
        return NULL;
    s->n++;
    return k;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct kobj *)a)->name, ((const struct kobj *)b)->name);
}

/* The full object: as stored with "status" added. A new cJSON (caller deletes), NULL on OOM. */
static cJSON *full_object(const struct kobj *k)
{
    cJSON *o = cJSON_Duplicate(k->obj, true);
    if (o && k->status) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, "status");
        cJSON *st = cJSON_Duplicate(k->status, true);
        if (!st || !cJSON_AddItemToObject(o, "status", st)) {
            cJSON_Delete(st);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

static char *prefix_key(const struct kube_options *o, const char *dir, const char *ns)
{
    char prefix[KEYS_MAX];
    struct mm_error err = {0};
    if (keys_prefix(prefix, sizeof(prefix), o->cluster, &err) < 0) {
        term_error("%s", err.msg);
        return NULL;
    }
    char *k = NULL;
    if (asprintf(&k, "%s%s%s%s", prefix, dir, ns ? ns : "", ns ? "/" : "") < 0) {
        oom();
        return NULL;
    }
    return k;
}

struct load {
    struct kset *set;
    const char *prefix;
    bool status; /* reading isvc-status/ */
    const char *only;
    int rc;
};

static int load_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct load *l = arg;
    size_t pl = strlen(l->prefix);
    for (size_t i = 0; i < n; i++) {
        const char *name = kvs[i].key + pl;
        if (kvs[i].key_len <= pl || memchr(name, '/', kvs[i].key_len - pl) ||
            strlen(name) != kvs[i].key_len - pl)
            continue;
        if (l->only && strcmp(name, l->only) != 0)
            continue;
        cJSON *j = cJSON_ParseWithLength(kvs[i].value, kvs[i].value_len);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            fflush(stdout);
            fprintf(stderr, "mmctl: warning: ");
            term_write(stderr, kvs[i].key, kvs[i].key_len, true);
            fprintf(stderr, ": not a JSON object, skipped\n");
            continue;
        }
        struct kobj *k = kset_find(l->set, name);
        if (l->status) {
            if (!k) { /* a status without its object: nothing to show */
                cJSON_Delete(j);
                continue;
            }
            cJSON *st = cJSON_DetachItemFromObjectCaseSensitive(j, "status");
            cJSON_Delete(j);
            cJSON_Delete(k->status);
            k->status = cJSON_IsObject(st) ? st : NULL;
            if (!cJSON_IsObject(st))
                cJSON_Delete(st);
            continue;
        }
        if (!k && !(k = kset_add(l->set, name))) {
            cJSON_Delete(j);
            return -E2BIG;
        }
        cJSON_Delete(k->obj);
        k->obj = j;
    }
    return 0;
}

/* Read the objects under dir/<ns>/ (ns NULL: dir/), and with_status their isvc-status/ at the
 * same revision. 0 and *revision, or 1 (message printed). */
static int load_objects(struct etcd_client *c, const struct kube_options *o, const char *dir,
                        const char *ns, const char *only, bool with_status, struct kset *set,
                        int64_t *revision)
{
    int rc = 1;
    char *prefix = prefix_key(o, dir, ns);
    char *sprefix = with_status ? prefix_key(o, "isvc-status/", ns) : NULL;
    char *end = prefix ? malloc(strlen(prefix) + 2) : NULL;
    char *send = sprefix ? malloc(strlen(sprefix) + 2) : NULL;
    if (!prefix || !end || (with_status && (!sprefix || !send)))
        goto out;
    struct etcd_paged_req req = {.key = prefix};
    req.range_end = end;
    req.range_end_len = etcd_prefix_end(prefix, strlen(prefix), end);
    struct load l = {.set = set, .prefix = prefix, .only = only};
    struct mm_error err = {0};
    int r = etcd_sync_range_paged(c, &req, load_page, &l, revision, &err);
    if (r == -E2BIG && !err.msg[0])
        mm_error_set(&err, -E2BIG, "more than %d objects", MAX_OBJECTS);
    if (r < 0) {
        term_error("%s", err.msg[0] ? err.msg : "out of memory");
        goto out;
    }
    if (with_status) {
        struct etcd_paged_req sreq = {.key = sprefix, .revision = *revision};
        sreq.range_end = send;
        sreq.range_end_len = etcd_prefix_end(sprefix, strlen(sprefix), send);
        struct load sl = {.set = set, .prefix = sprefix, .status = true, .only = only};
        if (etcd_sync_range_paged(c, &sreq, load_page, &sl, NULL, &err) < 0) {
            term_error("%s", err.msg);
            goto out;
        }
    }
    if (set->n)
        qsort(set->v, set->n, sizeof(*set->v), by_name);
    rc = 0;
out:
    if (rc && !prefix)
        ;
    else if (rc && (!end || (with_status && !send)))
        oom();
    free(prefix);
    free(sprefix);
    free(end);
    free(send);
    return rc;
}

/* ---- Ages as kubectl prints them (apimachinery's HumanDuration) ---- */

static void human_age(int64_t seconds, char *out, size_t size)
{
    if (seconds < -1) {
        snprintf(out, size, "<invalid>");
        return;
    }
    if (seconds < 0)
        seconds = 0;
    if (seconds < 120) {
        snprintf(out, size, "%" PRId64 "s", seconds);
        return;
    }
    int64_t minutes = seconds / 60, hours = seconds / 3600, days = hours / 24;
    if (minutes < 10) {
        int64_t s = seconds % 60;
        if (s == 0)
            snprintf(out, size, "%" PRId64 "m", minutes);
        else
            snprintf(out, size, "%" PRId64 "m%" PRId64 "s", minutes, s);
    } else if (minutes < 180) {
        snprintf(out, size, "%" PRId64 "m", minutes);
    } else if (hours < 8) {
        int64_t m = minutes % 60;
        if (m == 0)
            snprintf(out, size, "%" PRId64 "h", hours);
        else
            snprintf(out, size, "%" PRId64 "h%" PRId64 "m", hours, m);
    } else if (hours < 48) {
        snprintf(out, size, "%" PRId64 "h", hours);
    } else if (hours < 24 * 8) {
        int64_t h = hours % 24;
        if (h == 0)
            snprintf(out, size, "%" PRId64 "d", days);
        else
            snprintf(out, size, "%" PRId64 "d%" PRId64 "h", days, h);
    } else if (hours < 24 * 365 * 2) {
        snprintf(out, size, "%" PRId64 "d", days);
    } else if (hours < 24 * 365 * 8) {
        int64_t y = days / 365, d = days % 365;
        if (d == 0)
            snprintf(out, size, "%" PRId64 "y", y);
        else
            snprintf(out, size, "%" PRId64 "y%" PRId64 "d", y, d);
    } else {
        snprintf(out, size, "%" PRId64 "y", days / 365);
    }
}

static void age_of(const cJSON *obj, char *out, size_t size)
{
    int64_t t = 0;
    const char *ts = str_at(obj, "metadata", "creationTimestamp", NULL);
    if (!ts[0] || isvc_time_parse(ts, &t) < 0) {
        snprintf(out, size, "<unknown>");
        return;
    }
    human_age((int64_t)time(NULL) - t, out, size);
}

/* ---- JSONPath, the subset users query with: {.a.b}, [N], [-N], [*], ['k'], ["k"], .*, @, $,
 * {range EXPR}...{end}, {"text"} ---- */

struct jp_out {
    FILE *f;
    bool first; /* within one {} expression: values are separated by a space */
};

struct jp_results {
    const cJSON **v;
    size_t n, cap;
};

static int jp_push(struct jp_results *r, const cJSON *n)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        if (cap > 1000000)
            return -E2BIG;
        const cJSON **v = realloc(r->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = n;
    return 0;
}

/* Evaluate expr[0..len) from cur (root for $): results in *r. 0, or -EINVAL with err. */
static int jp_eval(const char *expr, size_t len, const cJSON *root, const cJSON *cur,
                   struct jp_results *r, struct mm_error *err)
{
    struct jp_results a = {0}, b = {0};
    int rc = 0;
    size_t i = 0;
    while (i < len && expr[i] == ' ')
        i++;
    while (len > i && expr[len - 1] == ' ')
        len--;
    if (i < len && expr[i] == '$') {
        cur = root;
        i++;
    } else if (i < len && expr[i] == '@') {
        i++;
    }
    if ((rc = jp_push(&a, cur)) < 0)
        goto out;
    while (i < len) {
        b.n = 0;
        char key[256];
        bool all = false;
        long index = 0;
        bool is_index = false;
        if (expr[i] == '.' && i + 1 < len && expr[i + 1] == '.') {
            rc = mm_error_set(err, -EINVAL, "'..' (recursive descent) is not supported");
            goto out;
        }
        if (expr[i] == '.') {
            i++;
            if (i < len && expr[i] == '*') {
                all = true;
                i++;
            } else if (i < len && expr[i] == '[') {
                continue; /* ".[0]" */
            } else {
                size_t n = 0;
                while (i < len && expr[i] != '.' && expr[i] != '[' && n + 1 < sizeof(key))
                    key[n++] = expr[i++];
                key[n] = '\0';
                if (!n) { /* "{.}": the current object */
                    continue;
                }
            }
        } else if (expr[i] == '[') {
            i++;
            if (i < len && (expr[i] == '\'' || expr[i] == '"')) {
                char q = expr[i++];
                size_t n = 0;
                while (i < len && expr[i] != q && n + 1 < sizeof(key))
                    key[n++] = expr[i++];
                key[n] = '\0';
                if (i + 1 >= len || expr[i] != q || expr[i + 1] != ']') {
                    rc = mm_error_set(err, -EINVAL, "unterminated quoted key");
                    goto out;
                }
                i += 2;
            } else if (i < len && expr[i] == '*') {
                all = true;
                if (i + 1 >= len || expr[i + 1] != ']') {
                    rc = mm_error_set(err, -EINVAL, "expected ']' after '[*'");
                    goto out;
                }
                i += 2;
            } else {
                char num[24];
                size_t n = 0;
                while (i < len && expr[i] != ']' && n + 1 < sizeof(num))
                    num[n++] = expr[i++];
                num[n] = '\0';
                char *e = NULL;
                index = strtol(num, &e, 10);
                if (!n || !e || *e || i >= len) {
                    rc = mm_error_set(err, -EINVAL,
                                      "'[%s' is not an index ([N], [-N], [*], ['key'] are; "
                                      "filters and slices are not supported)",
                                      num);
                    goto out;
                }
                i++;
                is_index = true;
            }
        } else {
            rc = mm_error_set(err, -EINVAL, "unexpected '%c' in '%.*s'", expr[i], (int)len, expr);
            goto out;
        }
        for (size_t k = 0; k < a.n && rc == 0; k++) {
            const cJSON *n = a.v[k];
            if (all) {
                if (cJSON_IsArray(n) || cJSON_IsObject(n))
                    for (const cJSON *ch = n->child; ch && rc == 0; ch = ch->next)
                        rc = jp_push(&b, ch);
            } else if (is_index) {
                int size = cJSON_IsArray(n) ? cJSON_GetArraySize(n) : 0;
                long at = index < 0 ? size + index : index;
                if (at >= 0 && at < size)
                    rc = jp_push(&b, cJSON_GetArrayItem(n, (int)at));
            } else {
                const cJSON *ch = field(n, key);
                if (ch)
                    rc = jp_push(&b, ch);
            }
        }
        if (rc < 0) {
            mm_error_set(err, rc, "too many results");
            goto out;
        }
        struct jp_results t = a;
        a = b;
        b = t;
    }
    for (size_t k = 0; k < a.n && rc == 0; k++)
        rc = jp_push(r, a.v[k]);
out:
    free(a.v);
    free(b.v);
    return rc;
}

static void jp_print_value(FILE *f, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        term_write(f, v->valuestring, strlen(v->valuestring), false);
    } else if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        char *s = json_print(v, false);
        if (s)
            term_write_json(f, s);
        free(s);
    } else if (cJSON_IsNull(v)) {
        fputs("null", f);
    } else {
        put_scalar(f, v);
    }
}

/* Find the '}' closing the expression at t[i] (after '{'), skipping quoted text. */
static size_t jp_close(const char *t, size_t i)
{
    char q = 0;
    for (; t[i]; i++) {
        if (q) {
            if (t[i] == '\\' && t[i + 1])
                i++;
            else if (t[i] == q)
                q = 0;
        } else if (t[i] == '"' || t[i] == '\'') {
            q = t[i];
        } else if (t[i] == '}') {
            return i;
        }
    }
    return 0;
}

/* Run template t from *pos until its end or a matching {end}. */
static int jp_run(const char *t, size_t *pos, const cJSON *root, const cJSON *cur, FILE *f,
                  int depth, bool *ended, struct mm_error *err)
{
    size_t i = *pos;
    *ended = false;
    while (t[i]) {
        if (t[i] != '{') {
            /* Literal text; \n and \t as kubectl's template text reads them. */
            if (t[i] == '\\' && t[i + 1] == 'n') {
                fputc('\n', f);
                i += 2;
            } else if (t[i] == '\\' && t[i + 1] == 't') {
                fputc('\t', f);
                i += 2;
            } else {
                fputc(t[i++], f);
            }
            continue;
        }
        size_t close = jp_close(t, i + 1);
        if (!close)
            return mm_error_set(err, -EINVAL, "unclosed '{' at offset %zu", i);
        const char *e = t + i + 1;
        size_t el = close - i - 1;
        while (el && *e == ' ')
            e++, el--;
        i = close + 1;
        if (el >= 2 && (e[0] == '"' || e[0] == '\'') && e[el - 1] == e[0]) {
            for (size_t k = 1; k + 1 < el; k++) {
                if (e[k] == '\\' && k + 2 < el) {
                    k++;
                    fputc(e[k] == 'n' ? '\n' : e[k] == 't' ? '\t' : e[k], f);
                } else {
                    fputc(e[k], f);
                }
            }
            continue;
        }
        if (el >= 3 && strncmp(e, "end", 3) == 0 && (el == 3 || e[3] == ' ')) {
            if (!depth)
                return mm_error_set(err, -EINVAL, "{end} without {range}");
            *pos = i;
            *ended = true;
            return 0;
        }
        struct jp_results r = {0};
        if (el > 6 && strncmp(e, "range ", 6) == 0) {
            if (depth == MAX_RANGE_DEPTH)
                return mm_error_set(err, -EINVAL, "{range} nested deeper than %d", MAX_RANGE_DEPTH);
            int rc = jp_eval(e + 6, el - 6, root, cur, &r, err);
            size_t body = i, after = i;
            bool end = false;
            if (rc == 0 && r.n == 0) { /* skip the body: run it on nothing, printing nowhere */
                FILE *null = fopen("/dev/null", "w");
                if (!null) {
                    free(r.v);
                    return mm_error_set(err, -EIO, "cannot open /dev/null");
                }
                after = body;
                rc = jp_run(t, &after, root, cur, null, depth + 1, &end, err);
                fclose(null);
            }
            for (size_t k = 0; k < r.n && rc == 0; k++) {
                after = body;
                rc = jp_run(t, &after, root, r.v[k], f, depth + 1, &end, err);
            }
            free(r.v);
            if (rc < 0)
                return rc;
            if (!end)
                return mm_error_set(err, -EINVAL, "{range} without {end}");
            i = after;
            continue;
        }
        int rc = jp_eval(e, el, root, cur, &r, err);
        for (size_t k = 0; k < r.n && rc == 0; k++) {
            if (k)
                fputc(' ', f);
            jp_print_value(f, r.v[k]);
        }
        free(r.v);
        if (rc < 0)
            return rc;
    }
    *pos = i;
    return 0;
}

/* Print doc through a jsonpath template. 0, or 1 (message printed). */
static int jsonpath_print(const char *tmpl, const cJSON *doc)
{
    /* kubectl accepts the template with or without its braces around a single expression. */
    char *t = NULL;
    if (!strchr(tmpl, '{') && asprintf(&t, "{%s}", tmpl) < 0) {
        oom();
        return 1;
    }
    struct mm_error err = {0};
    size_t pos = 0;
    bool ended = false;
    int rc = jp_run(t ? t : tmpl, &pos, doc, doc, stdout, 0, &ended, &err);
    free(t);
    if (rc < 0) {
        fflush(stdout);
        term_error("error parsing jsonpath %s: %s", tmpl, err.msg);
        return 1;
    }
    return 0;
}

/* ---- Output forms ---- */

enum out_form { OUT_TABLE, OUT_WIDE, OUT_JSON, OUT_YAML, OUT_NAME, OUT_JSONPATH };

static int parse_output(const char *o, enum out_form *form, const char **tmpl)
{
    *tmpl = NULL;
    if (!o || !o[0])
        *form = OUT_TABLE;
    else if (strcmp(o, "wide") == 0)
        *form = OUT_WIDE;
    else if (strcmp(o, "json") == 0)
        *form = OUT_JSON;
    else if (strcmp(o, "yaml") == 0)
        *form = OUT_YAML;
    else if (strcmp(o, "name") == 0)
        *form = OUT_NAME;
    else if (strncmp(o, "jsonpath=", 9) == 0) {
        *form = OUT_JSONPATH;
        *tmpl = o + 9;
    } else {
        fprintf(stderr, "mmctl: unable to match a printer suitable for the output format \"");
        term_write(stderr, o, strlen(o), false);
        fprintf(stderr, "\", the formats are: json, jsonpath=TEMPLATE, name, wide, yaml\n");
        return 2;
    }
    return 0;
}

static int by_string(const void *a, const void *b)
{
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Keys in byte order at every level, as kubectl prints objects (Go's maps marshal sorted). */
static int sort_keys(cJSON *n, int depth)
{
    if (depth > YAMLJSON_MAX_DEPTH)
        return 0;
    size_t count = 0;
    for (cJSON *c = n->child; c; c = c->next) {
        count++;
        if (sort_keys(c, depth + 1) < 0)
            return -ENOMEM;
    }
    if (!cJSON_IsObject(n) || count < 2)
        return 0;
    cJSON **v = malloc(count * sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t i = 0;
    for (cJSON *c = n->child; c; c = c->next)
        v[i++] = c;
    qsort(v, count, sizeof(*v), by_string);
    for (i = 0; i < count; i++) { /* cJSON's list: prev of the head is the tail */
        v[i]->next = i + 1 < count ? v[i + 1] : NULL;
        v[i]->prev = i ? v[i - 1] : v[count - 1];
    }
    n->child = v[0];
    free(v);
    return 0;
}

static int print_doc(enum out_form form, const char *tmpl, cJSON *doc, bool separator)
{
    if (sort_keys(doc, 0) < 0) {
        oom();
        return 1;
    }
    if (form == OUT_JSONPATH)
        return jsonpath_print(tmpl, doc);
    char *s = form == OUT_YAML ? yamljson_print(doc) : json_print(doc, true);
    if (!s) {
        oom();
        return 1;
    }
    if (form == OUT_YAML) {
        if (separator)
            fputs("---\n", stdout);
        term_write_json(stdout, s); /* YAML from libyaml escapes controls in quoted scalars */
    } else {
        term_write_json(stdout, s);
        fputc('\n', stdout);
    }
    free(s);
    return 0;
}

/* {"apiVersion":"v1","items":[...],"kind":"List","metadata":{"resourceVersion":""}}. */
static cJSON *list_of(const struct kset *set, bool with_status)
{
    cJSON *list = cJSON_CreateObject(), *items = cJSON_CreateArray();
    cJSON *meta = cJSON_CreateObject();
    if (!list || !items || !meta || !cJSON_AddStringToObject(list, "apiVersion", "v1") ||
        !cJSON_AddItemToObject(list, "items", items)) {
        cJSON_Delete(list);
        cJSON_Delete(items);
        cJSON_Delete(meta);
        return NULL;
    }
    if (!cJSON_AddStringToObject(list, "kind", "List") ||
        !cJSON_AddItemToObject(list, "metadata", meta) ||
        !cJSON_AddStringToObject(meta, "resourceVersion", "")) {
        cJSON_Delete(list);
        return NULL;
    }
    for (size_t i = 0; i < set->n; i++) {
        cJSON *o = with_status ? full_object(&set->v[i]) : cJSON_Duplicate(set->v[i].obj, true);
        if (!o || !cJSON_AddItemToArray(items, o)) {
            cJSON_Delete(o);
            cJSON_Delete(list);
            return NULL;
        }
    }
    return list;
}

/* ---- get isvc ---- */

static const char *const isvc_columns =
    "NAME\tURL\tREADY\tPREV\tLATEST\tPREVROLLEDOUTREVISION\tLATESTREADYREVISION\tAGE";

static const char *ready_of(const cJSON *status)
{
    const cJSON *conds = field(status, "conditions"), *c;
    if (!cJSON_IsArray(conds))
        return "";
    cJSON_ArrayForEach(c, conds)
    {
        if (strcmp(str_at(c, "type", NULL, NULL), "Ready") == 0)
            return str_at(c, "status", NULL, NULL);
    }
    return "";
}

/* The traffic entry of the predictor with tag "prev" (prev) or latestRevision true (latest):
 * serverless mode has them; a mesh's status has none, and the columns stay empty. */
static const cJSON *traffic(const cJSON *status, bool prev)
{
    const cJSON *t = field(field(field(status, "components"), "predictor"), "traffic"), *e;
    if (!cJSON_IsArray(t))
        return NULL;
    cJSON_ArrayForEach(e, t)
    {
        if (prev && strcmp(str_at(e, "tag", NULL, NULL), "prev") == 0)
            return e;
        if (!prev && cJSON_IsTrue(field(e, "latestRevision")))
            return e;
    }
    return NULL;
}

static void isvc_row(FILE *f, const struct kobj *k)
{
    char age[32];
    age_of(k->obj, age, sizeof(age));
    const cJSON *st = k->status;
    put_cell(f, k->name);
    fputc('\t', f);
    put_cell(f, str_at(st, "url", NULL, NULL));
    fputc('\t', f);
    put_cell(f, ready_of(st));
    fputc('\t', f);
    const cJSON *p = traffic(st, true), *l = traffic(st, false);
    if (field(p, "percent"))
        put_scalar(f, field(p, "percent"));
    fputc('\t', f);
    if (field(l, "percent"))
        put_scalar(f, field(l, "percent"));
    fputc('\t', f);
    put_cell(f, str_at(p, "revisionName", NULL, NULL));
    fputc('\t', f);
    put_cell(f, str_at(st, "components", "predictor", "latestReadyRevision"));
    fputc('\t', f);
    put_cell(f, age);
}

#define TABLE_COLUMNS 16

static int print_table_rows(const struct kset *set, void (*row)(FILE *, const struct kobj *),
                            const char *header, bool with_header, size_t *remember)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) {
        oom();
        return 1;
    }
    if (with_header)
        fprintf(m, "%s\n", header);
    for (size_t i = 0; i < set->n; i++) {
        if (!set->v[i].obj)
            continue;
        row(m, &set->v[i]);
        fputc('\n', m);
    }
    fclose(m);
    struct tabwriter t = {.minwidth = 6,
                          .padding = 3,
                          .remember = remember,
                          .n_remember = remember ? TABLE_COLUMNS : 0};
    tw_add_text(&t, text);
    free(text);
    return tw_flush(&t, stdout) < 0 ? 1 : 0;
}

static int print_set(const struct kset *set, enum out_form form, const char *tmpl, const char *name,
                     const char *resource, void (*row)(FILE *, const struct kobj *),
                     const char *header, bool with_status, size_t *remember)
{
    if (form == OUT_TABLE || form == OUT_WIDE)
        return print_table_rows(set, row, header, true, remember);
    if (form == OUT_NAME) {
        for (size_t i = 0; i < set->n; i++) {
            printf("%s/", resource);
            term_write(stdout, set->v[i].name, strlen(set->v[i].name), false);
            fputc('\n', stdout);
        }
        return 0;
    }
    cJSON *doc =
        name ? (with_status ? full_object(&set->v[0]) : cJSON_Duplicate(set->v[0].obj, true))
             : list_of(set, with_status);
    if (!doc) {
        oom();
        return 1;
    }
    int rc = print_doc(form, tmpl, doc, false);
    cJSON_Delete(doc);
    return rc;
}

/* ---- --watch: the list, then a line (or document) per change ---- */

struct watcher {
    struct kset *set;
    const char *isvc_prefix, *status_prefix;
    const char *only;
    enum out_form form;
    const char *tmpl;
    int rc;
    bool done;
    struct etcd_watch *w;
    size_t *widths; /* the table's, as first printed */
};

static void watch_print(struct watcher *wt, const struct kobj *k)
{
    if (!k->obj)
        return;
    if (wt->form == OUT_TABLE || wt->form == OUT_WIDE) {
        struct kset one = {.v = (struct kobj *)k, .n = 1};
        print_table_rows(&one, isvc_row, isvc_columns, false, wt->widths);
    } else if (wt->form == OUT_NAME) {
        printf(ISVC_RESOURCE "/");
        term_write(stdout, k->name, strlen(k->name), false);
        fputc('\n', stdout);
    } else {
        cJSON *doc = full_object(k);
        if (doc)
            print_doc(wt->form, wt->tmpl, doc, true);
        cJSON_Delete(doc);
    }
    fflush(stdout);
}

static void on_watch(struct etcd_watch *w, int status, const struct mm_error *err,
                     const struct etcd_watch_batch *batch, int64_t compact_revision, void *arg)
{
    struct watcher *wt = arg;
    if (status < 0) {
        term_error("watch: %s", err && err->msg[0] ? err->msg : "ended");
        wt->rc = 1;
        wt->done = true;
        return;
    }
    for (size_t i = 0; i < batch->n_events; i++) {
        const struct etcd_event *ev = &batch->events[i];
        bool is_status = strncmp(ev->kv.key, wt->status_prefix, strlen(wt->status_prefix)) == 0;
        if (!is_status && strncmp(ev->kv.key, wt->isvc_prefix, strlen(wt->isvc_prefix)) != 0)
            continue; /* another namespace's, inside the watched range */
        const char *name = ev->kv.key + strlen(is_status ? wt->status_prefix : wt->isvc_prefix);
        if (strchr(name, '/') || (wt->only && strcmp(name, wt->only) != 0))
            continue;
        struct kobj *k = kset_find(wt->set, name);
        if (!k && !(k = kset_add(wt->set, name)))
            continue;
        cJSON *j = ev->type == ETCD_EVENT_PUT
                       ? cJSON_ParseWithLength(ev->kv.value, ev->kv.value_len)
                       : NULL;
        if (ev->type == ETCD_EVENT_PUT && !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            continue;
        }
        if (is_status) {
            cJSON_Delete(k->status);
            k->status = j ? cJSON_DetachItemFromObjectCaseSensitive(j, "status") : NULL;
            cJSON_Delete(j);
            watch_print(wt, k);
        } else if (j) {
            cJSON_Delete(k->obj);
            k->obj = j;
            watch_print(wt, k);
        } else {
            watch_print(wt, k); /* deleted: its last state, as kubectl shows it */
            cJSON_Delete(k->obj);
            k->obj = NULL;
        }
    }
    if (ferror(stdout)) {
        wt->done = true;
        wt->rc = 1;
    }
}

static int watch_isvcs(struct etcd_client *c, const struct kube_options *o, const char *ns,
                       const char *only, struct kset *set, int64_t revision, enum out_form form,
                       const char *tmpl, size_t *widths)
{
    char *ip = prefix_key(o, "isvcs/", ns), *sp = prefix_key(o, "isvc-status/", ns);
    struct watcher wt = {.set = set,
                         .isvc_prefix = ip,
                         .status_prefix = sp,
                         .only = only,
                         .form = form,
                         .tmpl = tmpl,
                         .widths = widths};
    int rc = 1;
    if (!ip || !sp)
        goto out;
    /* One watch from isvc-status/<ns>/ to the end of isvcs/<ns>/ ("isvc-status/" sorts before
     * "isvcs/"), so that spec and status changes come in the order they were made: two watches
     * could show a new status beside the old generation, or skip the status between (the
     * other namespaces' keys in that range are passed over). */
    size_t ilen = strlen(ip);
    char *end = malloc(ilen + 2);
    if (!end) {
        oom();
        goto out;
    }
    size_t elen = etcd_prefix_end(ip, ilen, end);
    struct etcd_watch_req req = {
        .key = sp, .range_end = end, .range_end_len = elen, .start_revision = revision + 1};
    rc = etcd_watch_start(c, &req, on_watch, &wt, &wt.w);
    free(end);
    if (rc < 0) {
        term_error("watch: cannot start");
        rc = 1;
        goto out;
    }
    rc = 1;
    fflush(stdout);
    struct ev_loop *loop = etcd_client_loop(c);
    while (!wt.done)
        ev_run(loop, EVRUN_ONCE);
    rc = wt.rc;
out:
    etcd_watch_free(wt.w);
    free(ip);
    free(sp);
    return rc;
}

static void not_found(const char *resources, const char *name)
{
    fflush(stdout);
    fprintf(stderr, "Error from server (NotFound): %s \"", resources);
    term_write(stderr, name, strlen(name), false);
    fprintf(stderr, "\" not found\n");
}

static bool is_isvc_word(const char *w)
{
    return strcmp(w, "isvc") == 0 || strcmp(w, "isvcs") == 0 ||
           strcmp(w, "inferenceservice") == 0 || strcmp(w, "inferenceservices") == 0 ||
           strcmp(w, ISVC_RESOURCE) == 0 || strcmp(w, ISVC_RESOURCES) == 0;
}

static bool is_runtime_word(const char *w, bool *cluster)
{
    *cluster = strncmp(w, "cluster", 7) == 0;
    const char *b = *cluster ? w + 7 : w;
    return strcmp(b, "servingruntime") == 0 || strcmp(b, "servingruntimes") == 0 ||
           strcmp(b, "servingruntime.serving.kserve.io") == 0 ||
           strcmp(b, "servingruntimes.serving.kserve.io") == 0;
}

static int cmd_get_isvc(struct etcd_client *c, const struct kube_options *o, const char *name,
                        enum out_form form, const char *tmpl)
{
    const char *ns = namespace_of(o);
    struct kset set = {0};
    int64_t rev = 0;
    size_t widths[TABLE_COLUMNS] = {0};
    int rc = load_objects(c, o, "isvcs/", ns, name, true, &set, &rev);
    if (rc)
        goto out;
    if (name && set.n == 0 && !o->watch) {
        not_found(ISVC_RESOURCES, name);
        rc = 1;
        goto out;
    }
    if (set.n == 0 && form != OUT_JSON && form != OUT_YAML && form != OUT_JSONPATH) {
        fprintf(stderr, "No resources found in ");
        term_write(stderr, ns, strlen(ns), false);
        fprintf(stderr, " namespace.\n");
    } else {
        rc = print_set(&set, form, tmpl, name, ISVC_RESOURCE, isvc_row, isvc_columns, true, widths);
    }
    if (rc == 0 && o->watch)
        rc = watch_isvcs(c, o, ns, name, &set, rev, form, tmpl, widths);
out:
    kset_free(&set);
    return rc;
}

/* ---- get servingruntimes ---- */

static void runtime_row(FILE *f, const struct kobj *k)
{
    char age[32];
    age_of(k->obj, age, sizeof(age));
    const cJSON *spec = field(k->obj, "spec");
    put_cell(f, k->name);
    fputc('\t', f);
    if (field(spec, "disabled"))
        put_scalar(f, field(spec, "disabled"));
    fputc('\t', f);
    /* The printer columns' jsonPaths ([*].name) print the first match. */
    const cJSON *fm = field(spec, "supportedModelFormats"), *ct = field(spec, "containers");
    put_cell(f, str_at(cJSON_IsArray(fm) ? cJSON_GetArrayItem(fm, 0) : NULL, "name", NULL, NULL));
    fputc('\t', f);
    put_cell(f, str_at(cJSON_IsArray(ct) ? cJSON_GetArrayItem(ct, 0) : NULL, "name", NULL, NULL));
    fputc('\t', f);
    put_cell(f, age);
}

static int cmd_get_runtimes(struct etcd_client *c, const struct kube_options *o, bool cluster,
                            const char *name, enum out_form form, const char *tmpl)
{
    struct kset all = {0}, set = {0};
    int64_t rev = 0;
    int rc = load_objects(c, o, "runtimes/", NULL, name, false, &all, &rev);
    const char *kind = cluster ? "ClusterServingRuntime" : "ServingRuntime";
    for (size_t i = 0; rc == 0 && i < all.n; i++) {
        if (strcmp(str_at(all.v[i].obj, "kind", NULL, NULL), kind) != 0)
            continue;
        if (set.n == set.cap) {
            size_t cap = set.cap ? set.cap * 2 : 8;
            struct kobj *v = realloc(set.v, cap * sizeof(*v));
            if (!v) {
                oom();
                rc = 1;
                break;
            }
            set.v = v;
            set.cap = cap;
        }
        set.v[set.n++] = all.v[i];
        all.v[i] = (struct kobj){0};
        all.v[i].name = strdup("");
    }
    const char *resource =
        cluster ? "clusterservingruntime.serving.kserve.io" : "servingruntime.serving.kserve.io";
    if (rc == 0 && name && set.n == 0) {
        not_found(cluster ? "clusterservingruntimes.serving.kserve.io"
                          : "servingruntimes.serving.kserve.io",
                  name);
        rc = 1;
    } else if (rc == 0 && set.n == 0 && form != OUT_JSON && form != OUT_YAML &&
               form != OUT_JSONPATH) {
        fprintf(stderr, "No resources found\n");
    } else if (rc == 0) {
        rc = print_set(&set, form, tmpl, name, resource, runtime_row,
                       "NAME\tDISABLED\tMODELTYPE\tCONTAINERS\tAGE", false, NULL);
    }
    kset_free(&all);
    kset_free(&set);
    return rc;
}

/* ---- describe: kubectl's generic describer ---- */

enum char_class { CC_LOWER, CC_UPPER, CC_DIGIT, CC_OTHER };

static enum char_class class_of(char ch)
{
    if (ch >= 'a' && ch <= 'z')
        return CC_LOWER;
    if (ch >= 'A' && ch <= 'Z')
        return CC_UPPER;
    if (ch >= '0' && ch <= '9')
        return CC_DIGIT;
    return CC_OTHER;
}

/* "grpcUrl" -> "Grpc URL", "lastTransitionTime" -> "Last Transition Time", "apiVersion" ->
 * "API Version": camel case split into words, each titled, the common acronyms in capitals.
 * Names with anything but letters and '-' are kept as they are. */
static void smart_label(const char *f, char *out, size_t size)
{
    bool plain = true;
    for (const char *p = f; *p; p++)
        if (!isalpha((unsigned char)*p) && *p != '-')
            plain = false;
    if (!plain || !*f) {
        snprintf(out, size, "%s", f);
        return;
    }
    /* Runs of one class; an upper run followed by lower gives its last letter to the next. */
    char runs[64][64];
    size_t nr = 0, len = strlen(f);
    for (size_t i = 0; i < len && nr < 64;) {
        size_t j = i + 1;
        while (j < len && class_of(f[j]) == class_of(f[i]))
            j++;
        snprintf(runs[nr++], sizeof(runs[0]), "%.*s", (int)(j - i), f + i);
        i = j;
    }
    for (size_t r = 0; r + 1 < nr; r++) {
        size_t l = strlen(runs[r]);
        if (l && class_of(runs[r][0]) == CC_UPPER && class_of(runs[r + 1][0]) == CC_LOWER &&
            strlen(runs[r + 1]) + 2 < sizeof(runs[0])) {
            memmove(runs[r + 1] + 1, runs[r + 1], strlen(runs[r + 1]) + 1);
            runs[r + 1][0] = runs[r][l - 1];
            runs[r][l - 1] = '\0';
        }
    }
    static const char *const acronyms[] = {"API", "URL", "UID", "OSB", "GUID"};
    size_t n = 0;
    out[0] = '\0';
    for (size_t r = 0; r < nr; r++) {
        char word[64];
        snprintf(word, sizeof(word), "%.63s", runs[r]);
        if (!word[0] || strcmp(word, "_") == 0)
            continue;
        char up[64];
        for (size_t k = 0; k < sizeof(up); k++)
            if (!(up[k] = (char)toupper((unsigned char)word[k])))
                break;
        bool acr = false;
        for (size_t a = 0; a < sizeof(acronyms) / sizeof(acronyms[0]); a++)
            acr = acr || strcmp(up, acronyms[a]) == 0;
        if (acr)
            memcpy(word, up, strlen(up) + 1);
        else
            word[0] = (char)toupper((unsigned char)word[0]);
        n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%s", n ? " " : "", word);
        if (n >= size)
            break;
    }
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static void indent(FILE *f, int level)
{
    for (int i = 0; i < level; i++)
        fputs("  ", f);
}

static bool skipped(const char *path)
{
    static const char *const skip[] = {".metadata.name", ".metadata.namespace", ".metadata.labels",
                                       ".metadata.annotations", ".metadata.managedFields"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcmp(path, skip[i]) == 0)
            return true;
    return false;
}

static void describe_content(FILE *f, int level, const cJSON *obj, const char *path, int depth)
{
    size_t n = (size_t)cJSON_GetArraySize(obj);
    if (depth > YAMLJSON_MAX_DEPTH || n == 0)
        return;
    const cJSON **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return;
    size_t k = 0;
    for (const cJSON *c = obj->child; c && k < n; c = c->next)
        keys[k++] = c;
    qsort(keys, k, sizeof(*keys), by_key);
    for (size_t i = 0; i < k; i++) {
        const cJSON *v = keys[i];
        char sub[512], label[256];
        snprintf(sub, sizeof(sub), "%s.%s", path, v->string);
        if (skipped(sub))
            continue;
        smart_label(v->string, label, sizeof(label));
        indent(f, level);
        put_cell(f, label);
        if (cJSON_IsObject(v)) {
            fputs(":\n", f);
            describe_content(f, level + 1, v, sub, depth + 1);
        } else if (cJSON_IsArray(v)) {
            fputs(":\n", f);
            const cJSON *e;
            cJSON_ArrayForEach(e, v)
            {
                if (cJSON_IsObject(e)) {
                    describe_content(f, level + 1, e, sub, depth + 1);
                } else if (cJSON_IsArray(e)) {
                    char *s = json_print(e, false);
                    indent(f, level + 1);
                    put_cell(f, s ? s : "");
                    fputc('\n', f);
                    free(s);
                } else {
                    indent(f, level + 1);
                    put_scalar(f, e);
                    fputc('\n', f);
                }
            }
        } else {
            fputs(":\t", f);
            put_scalar(f, v);
            fputc('\n', f);
        }
    }
    free(keys);
}

static void describe_map(FILE *f, const char *title, const cJSON *map, bool annotations)
{
    fprintf(f, "%s:\t", title);
    size_t n = 0;
    const cJSON *c;
    const cJSON *sorted[256];
    if (!cJSON_IsObject(map))
        map = NULL;
    cJSON_ArrayForEach(c, map)
    {
        if (annotations &&
            strcmp(c->string, "kubectl.kubernetes.io/last-applied-configuration") == 0)
            continue;
        if (n < 256)
            sorted[n++] = c;
    }
    if (!n) {
        fputs("<none>\n", f);
        return;
    }
    qsort(sorted, n, sizeof(sorted[0]), by_key);
    for (size_t i = 0; i < n; i++) {
        const char *v = cJSON_IsString(sorted[i]) ? sorted[i]->valuestring : "";
        if (i)
            fputc('\t', f);
        put_cell(f, sorted[i]->string);
        if (!annotations) {
            fputc('=', f);
            put_cell(f, v);
        } else if (strlen(v) + strlen(sorted[i]->string) + 2 > MAX_ANNOTATION_LEN ||
                   strchr(v, '\n')) {
            fputs(":\n", f);
            char *copy = strdup(v), *save = NULL;
            for (char *s = copy ? strtok_r(copy, "\n", &save) : NULL; s;
                 s = strtok_r(NULL, "\n", &save)) {
                fputs("\t  ", f);
                if (strlen(s) > MAX_ANNOTATION_LEN - 2)
                    strcpy(s + MAX_ANNOTATION_LEN - 5, "...");
                put_cell(f, s);
                fputc('\n', f);
            }
            free(copy);
            continue;
        } else {
            fputs(": ", f);
            put_cell(f, v);
        }
        fputc('\n', f);
    }
}

static int cmd_describe(struct etcd_client *c, const struct kube_options *o, const char *name)
{
    const char *ns = namespace_of(o);
    struct kset set = {0};
    int64_t rev = 0;
    int rc = load_objects(c, o, "isvcs/", ns, name, true, &set, &rev);
    if (rc)
        goto out;
    if (set.n == 0) {
        not_found(ISVC_RESOURCES, name);
        rc = 1;
        goto out;
    }
    cJSON *doc = full_object(&set.v[0]);
    char *text = NULL;
    size_t len = 0;
    FILE *m = doc ? open_memstream(&text, &len) : NULL;
    if (!m) {
        cJSON_Delete(doc);
        oom();
        rc = 1;
        goto out;
    }
    fputs("Name:\t", m);
    put_cell(m, set.v[0].name);
    fputs("\nNamespace:\t", m);
    put_cell(m, str_at(doc, "metadata", "namespace", NULL));
    fputc('\n', m);
    const cJSON *meta = field(doc, "metadata");
    describe_map(m, "Labels", field(meta, "labels"), false);
    describe_map(m, "Annotations", field(meta, "annotations"), true);
    describe_content(m, 0, doc, "", 0);
    fputs("Events:\t<none>\n", m);
    fclose(m);
    cJSON_Delete(doc);
    struct tabwriter t = {.minwidth = 0, .padding = 2};
    tw_add_text(&t, text);
    free(text);
    rc = tw_flush(&t, stdout) < 0 ? 1 : 0;
out:
    kset_free(&set);
    return rc;
}

/* ---- delete ---- */

static int cmd_delete(struct etcd_client *c, const struct kube_options *o, const char *ns,
                      bool isvc, bool cluster, const char *name)
{
    char key[KEYS_MAX], skey[KEYS_MAX];
    struct mm_error err = {0};
    if ((isvc && (keys_isvc(key, sizeof(key), o->cluster, ns, name, &err) < 0 ||
                  keys_isvc_status(skey, sizeof(skey), o->cluster, ns, name, &err) < 0)) ||
        (!isvc && keys_runtime(key, sizeof(key), o->cluster, name, &err) < 0)) {
        term_error("%s", err.msg);
        return 1;
    }
    if (!isvc) { /* only a runtime of the kind named */
        struct etcd_range_req req = {.key = key};
        struct etcd_response *r = NULL;
        if (etcd_sync_range(c, &req, &r, &err) < 0) {
            term_error("%s", err.msg);
            return 1;
        }
        cJSON *j =
            r->op.n_kvs ? cJSON_ParseWithLength(r->op.kvs[0].value, r->op.kvs[0].value_len) : NULL;
        bool match = j && strcmp(str_at(j, "kind", NULL, NULL),
                                 cluster ? "ClusterServingRuntime" : "ServingRuntime") == 0;
        cJSON_Delete(j);
        etcd_response_free(r);
        if (!match) {
            not_found(cluster ? "clusterservingruntimes.serving.kserve.io"
                              : "servingruntimes.serving.kserve.io",
                      name);
            return 1;
        }
    }
    /* The status goes with its object (the controller writes none for an object gone). */
    struct etcd_op ops[2] = {{.kind = ETCD_OP_DELETE, .key = key},
                             {.kind = ETCD_OP_DELETE, .key = skey}};
    struct etcd_txn txn = {.success = ops, .n_success = isvc ? 2 : 1};
    struct etcd_response *r = NULL;
    if (etcd_sync_txn(c, &txn, &r, &err) < 0) {
        term_error("%s", err.msg);
        return 1;
    }
    bool deleted = r->n_results > 0 && r->results[0].deleted > 0;
    etcd_response_free(r);
    const char *resource = isvc      ? ISVC_RESOURCE
                           : cluster ? "clusterservingruntime.serving.kserve.io"
                                     : "servingruntime.serving.kserve.io";
    if (!deleted) {
        char plural[64];
        snprintf(plural, sizeof(plural), "%.*ss.serving.kserve.io",
                 (int)(strchr(resource, '.') - resource), resource);
        not_found(plural, name);
        return 1;
    }
    printf("%s \"", resource);
    term_write(stdout, name, strlen(name), false);
    printf("\" deleted\n");
    return 0;
}

/* ---- The Secret storage-config: get, describe, delete ---- */

#define SECRETS "secrets"

static bool is_secret_word(const char *w)
{
    return strcmp(w, "secret") == 0 || strcmp(w, "secrets") == 0;
}

/* The Secret, when name is NULL or storage-config and it has a key, as a one-object set (the
 * object in kubectl's shape). 0 (set->n 0: none), or 1 (message printed). */
static int load_secret(struct etcd_client *c, const struct kube_options *o, const char *name,
                       struct kset *set, size_t *n_keys)
{
    *n_keys = 0;
    if (name && strcmp(name, SECRET_NAME) != 0)
        return 0; /* the only Secret kept here */
    struct kube_secret s = {0};
    struct mm_error err = {0};
    if (kube_secret_load(c, o->cluster, &s, &err) < 0) {
        kube_secret_clear(&s);
        term_error("%s", err.msg);
        return 1;
    }
    int rc = 0;
    if (s.n) {
        struct kobj *k = kset_add(set, SECRET_NAME);
        if (!k || !(k->obj = kube_secret_object(&s, namespace_of(o)))) {
            oom();
            rc = 1;
        }
        *n_keys = s.n;
    }
    kube_secret_clear(&s);
    return rc;
}

/* NAME TYPE DATA AGE. etcd keeps revisions, not times: the age is unknown, as kubectl prints an
 * object without a creationTimestamp. */
static void secret_row(FILE *f, const struct kobj *k)
{
    put_cell(f, k->name);
    fprintf(f, "\t%s\t%d\t<unknown>", str_at(k->obj, "type", NULL, NULL),
            cJSON_GetArraySize(field(k->obj, "data")));
}

static int cmd_get_secret(struct etcd_client *c, const struct kube_options *o, const char *name,
                          enum out_form form, const char *tmpl)
{
    struct kset set = {0};
    size_t n_keys = 0;
    int rc = load_secret(c, o, name, &set, &n_keys);
    if (rc == 0 && name && set.n == 0) {
        not_found(SECRETS, name);
        rc = 1;
    } else if (rc == 0 && set.n == 0 && form != OUT_JSON && form != OUT_YAML &&
               form != OUT_JSONPATH) {
        const char *ns = namespace_of(o);
        fprintf(stderr, "No resources found in ");
        term_write(stderr, ns, strlen(ns), false);
        fprintf(stderr, " namespace.\n");
    } else if (rc == 0) {
        rc = print_set(&set, form, tmpl, name, "secret", secret_row, "NAME\tTYPE\tDATA\tAGE", false,
                       NULL);
    }
    kset_free(&set);
    return rc;
}

/* kubectl's Secret describer: the metadata, the type, and each key's size (never its value). */
static int cmd_describe_secret(struct etcd_client *c, const struct kube_options *o,
                               const char *name)
{
    struct kube_secret s = {0};
    struct mm_error err = {0};
    if (strcmp(name, SECRET_NAME) == 0 && kube_secret_load(c, o->cluster, &s, &err) < 0) {
        kube_secret_clear(&s);
        term_error("%s", err.msg);
        return 1;
    }
    if (s.n == 0) {
        not_found(SECRETS, name);
        return 1;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) {
        kube_secret_clear(&s);
        oom();
        return 1;
    }
    const char *ns = namespace_of(o);
    fputs("Name:\t" SECRET_NAME "\nNamespace:\t", m);
    put_cell(m, ns);
    fputs("\nLabels:\t<none>\nAnnotations:\t<none>\n\nType:\tOpaque\n\nData\n====\n", m);
    for (size_t i = 0; i < s.n; i++) {
        put_cell(m, s.v[i].key);
        fprintf(m, ":\t%zu bytes\n", s.v[i].len);
    }
    fclose(m);
    kube_secret_clear(&s);
    struct tabwriter t = {.minwidth = 0, .padding = 2};
    tw_add_text(&t, text);
    free(text);
    return tw_flush(&t, stdout) < 0 ? 1 : 0;
}

static int cmd_delete_secret(struct etcd_client *c, const struct kube_options *o,
                             const char *name)
{
    int64_t deleted = 0;
    struct mm_error err = {0};
    if (strcmp(name, SECRET_NAME) == 0 && kube_secret_delete(c, o->cluster, &deleted, &err) < 0) {
        term_error("%s", err.msg);
        return 1;
    }
    if (deleted == 0) {
        not_found(SECRETS, name);
        return 1;
    }
    printf("secret \"");
    term_write(stdout, name, strlen(name), false);
    printf("\" deleted\n");
    return 0;
}

/* ---- apply ---- */

enum item_kind { ITEM_ISVC, ITEM_RUNTIME, ITEM_SECRET };

struct apply_item {
    enum item_kind kind;
    size_t doc;        /* 1-based */
    char resource[64]; /* "inferenceservice.serving.kserve.io" */
    char name[KEYS_NAME_MAX + 1];
    char key[KEYS_MAX];
    bool cluster;              /* a ClusterServingRuntime */
    char ns[KEYS_NAME_MAX + 1]; /* delete -f: an InferenceService's namespace */
    cJSON *obj;                /* isvc, runtime: the object to store */
    struct kube_secret secret; /* the Secret's entries */
};

static void item_free(struct apply_item *it)
{
    cJSON_Delete(it->obj);
    kube_secret_clear(&it->secret);
}

/* Where a manifest object is: the file, its document, and within a List, its item. */
struct src {
    const char *file;
    const struct yamljson *y;
    size_t d;
    long item; /* -1: the document itself */
};

/* A refusal naming the file, document (and List item), line and object. */
static void doc_error(const struct src *src, const cJSON *where, const char *path,
                      const char *kind, const char *name, const char *msg)
{
    unsigned line = where ? yamljson_line(src->y, where) : 0;
    char full[512] = "", item[48] = "";
    if (src->item >= 0) {
        snprintf(item, sizeof(item), ", items[%ld]", src->item);
        if (path)
            snprintf(full, sizeof(full), "items[%ld]%s%s", src->item, path[0] ? "." : "", path);
        path = full;
    }
    if (!line && path)
        line = yamljson_path_line(src->y, src->d, path);
    if (!line)
        line = yamljson_doc_line(src->y, src->d);
    char what[400] = "";
    if (kind && name && name[0])
        snprintf(what, sizeof(what), " (%s %s)", kind, name);
    else if (kind)
        snprintf(what, sizeof(what), " (%s)", kind);
    term_error("error: %s: document %zu%s%s, line %u: %s",
               strcmp(src->file, "-") ? src->file : "<stdin>", src->d + 1, item, what, line, msg);
}

/* The field path an error message starts with ("spec.x.y: ..."), for its line. */
static void path_of(const char *msg, char *out, size_t size)
{
    const char *colon = strstr(msg, ": ");
    size_t n = colon ? (size_t)(colon - msg) : 0;
    if (n >= size || memchr(msg, ' ', n))
        n = 0;
    memcpy(out, msg, n);
    out[n] = '\0';
}

static int validate_isvc(const struct src *src, const cJSON *doc,
                         const struct kube_options *o, struct apply_item *it)
{
    struct isvc *s = calloc(1, sizeof(*s));
    const cJSON *where = NULL;
    struct mm_error err = {0};
    char path[256];
    const char *name = str_at(doc, "metadata", "name", NULL);
    if (!s) {
        oom();
        return -ENOMEM;
    }
    int rc = isvc_parse(doc, s, &where, &err);
    if (rc < 0) {
        path_of(err.msg, path, sizeof(path));
        doc_error(src, where, path, "InferenceService", name, err.msg);
        goto out;
    }
    rc = -EINVAL;
    if (!s->modelmesh) {
        doc_error(src, NULL, "metadata.annotations", "InferenceService", s->name,
                  "metadata.annotations: " ISVC_ANNOTATION_MODE
                  " must be ModelMesh (this mesh serves InferenceServices in ModelMesh mode)");
        goto out;
    }
    const char *ns = namespace_of(o);
    if (s->ns[0] && o->ns && o->ns[0] && strcmp(s->ns, o->ns) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "the namespace from the provided object \"%s\" does not match the namespace "
                 "\"%s\". You must pass '--namespace=%s' to perform this operation.",
                 s->ns, o->ns, s->ns);
        doc_error(src, NULL, "metadata.namespace", "InferenceService", s->name, msg);
        goto out;
    }
    if (s->ns[0])
        ns = s->ns;
    if (keys_isvc(it->key, sizeof(it->key), o->cluster, ns, s->name, &err) < 0) {
        doc_error(src, NULL, "metadata", "InferenceService", s->name, err.msg);
        goto out;
    }
    if (s->invalid != ISVC_REASON_NONE) {
        fflush(stdout);
        fprintf(stderr, "Warning: ");
        term_write(stderr, s->name, strlen(s->name), false);
        fprintf(stderr, ": ");
        term_write(stderr, s->invalid_msg, strlen(s->invalid_msg), false);
        fprintf(stderr, " (its status will say InvalidSpec)\n");
    }
    it->kind = ITEM_ISVC;
    snprintf(it->resource, sizeof(it->resource), ISVC_RESOURCE);
    snprintf(it->name, sizeof(it->name), "%s", s->name);
    it->obj = cJSON_Duplicate(doc, true);
    cJSON *meta = it->obj ? cJSON_GetObjectItemCaseSensitive(it->obj, "metadata") : NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "namespace");
    if (!it->obj || !cJSON_AddStringToObject(meta, "namespace", ns)) {
        oom();
        rc = -ENOMEM;
        goto out;
    }
    rc = 0;
out:
    free(s);
    return rc;
}

static int validate_runtime(const struct src *src, const cJSON *doc,
                            const struct kube_options *o, bool cluster, struct apply_item *it)
{
    struct isvc_runtime *rt = calloc(1, sizeof(*rt));
    const cJSON *where = NULL;
    struct mm_error err = {0};
    char path[256];
    const char *kind = cluster ? "ClusterServingRuntime" : "ServingRuntime";
    if (!rt) {
        oom();
        return -ENOMEM;
    }
    int rc = isvc_runtime_parse(doc, rt, &where, &err);
    if (rc < 0) {
        path_of(err.msg, path, sizeof(path));
        doc_error(src, where, path, kind, str_at(doc, "metadata", "name", NULL), err.msg);
        goto out;
    }
    if ((rc = keys_runtime(it->key, sizeof(it->key), o->cluster, rt->name, &err)) < 0) {
        doc_error(src, NULL, "metadata.name", kind, rt->name, err.msg);
        goto out;
    }
    it->kind = ITEM_RUNTIME;
    it->cluster = cluster;
    snprintf(it->resource, sizeof(it->resource), "%sservingruntime.serving.kserve.io",
             cluster ? "cluster" : "");
    snprintf(it->name, sizeof(it->name), "%s", rt->name);
    it->obj = cJSON_Duplicate(doc, true);
    cJSON *meta = it->obj ? cJSON_GetObjectItemCaseSensitive(it->obj, "metadata") : NULL;
    if (meta && !cluster) {
        const char *ns = rt->ns[0] ? rt->ns : namespace_of(o);
        cJSON_DeleteItemFromObjectCaseSensitive(meta, "namespace");
        if (!cJSON_AddStringToObject(meta, "namespace", ns))
            meta = NULL;
    }
    if (!meta) {
        oom();
        rc = -ENOMEM;
    }
out:
    free(rt);
    return rc;
}

static int validate_secret(const struct src *src, const cJSON *doc,
                           const struct kube_options *o, struct apply_item *it)
{
    const char *name = str_at(doc, "metadata", "name", NULL);
    char msg[800];
    if (strcmp(str_at(doc, "apiVersion", NULL, NULL), "v1") != 0) {
        doc_error(src, field(doc, "apiVersion"), "apiVersion", "Secret", name,
                  "apiVersion: a Secret is v1");
        return -EINVAL;
    }
    if (strcmp(name, SECRET_NAME) != 0) {
        doc_error(src, field(field(doc, "metadata"), "name"), "metadata.name", "Secret",
                  name,
                  "metadata.name: the only Secret kept here is storage-config (the storage "
                  "keys)");
        return -EINVAL;
    }
    it->kind = ITEM_SECRET;
    snprintf(it->resource, sizeof(it->resource), "secret");
    snprintf(it->name, sizeof(it->name), SECRET_NAME);
    for (int pass = 0; pass < 2; pass++) {
        const char *fname = pass ? "stringData" : "data";
        const cJSON *map = field(doc, fname), *e;
        if (!map || cJSON_IsNull(map))
            continue;
        if (!cJSON_IsObject(map)) {
            snprintf(msg, sizeof(msg), "%s: not a map of strings", fname);
            doc_error(src, map, fname, "Secret", name, msg);
            return -EINVAL;
        }
        cJSON_ArrayForEach(e, map)
        {
            struct mm_error err = {0};
            char path[400];
            snprintf(path, sizeof(path), "%s[\"%s\"]", fname, e->string);
            if (keys_check_name("storage key", e->string, &err) < 0) {
                snprintf(msg, sizeof(msg), "%s: %s", path, err.msg);
                doc_error(src, e, path, "Secret", name, msg);
                return -EINVAL;
            }
            if (!cJSON_IsString(e)) {
                snprintf(msg, sizeof(msg), "%s: not a string", path);
                doc_error(src, e, path, "Secret", name, msg);
                return -EINVAL;
            }
            size_t len = strlen(e->valuestring);
            char *value = malloc(pass ? len + 1 : base64_decoded_max(len) + 1);
            if (!value) {
                oom();
                return -ENOMEM;
            }
            if (pass) {
                memcpy(value, e->valuestring, len + 1);
            } else {
                long n = base64_decode(e->valuestring, len, value);
                if (n < 0) {
                    free(value);
                    snprintf(msg, sizeof(msg), "%s: not base64 (stringData takes plain text)",
                             path);
                    doc_error(src, e, path, "Secret", name, msg);
                    return -EINVAL;
                }
                value[n] = '\0';
                len = (size_t)n;
                if (strlen(value) != len) {
                    free(value);
                    snprintf(msg, sizeof(msg), "%s: holds a NUL byte", path);
                    doc_error(src, e, path, "Secret", name, msg);
                    return -EINVAL;
                }
            }
            cJSON *j = len <= ISVC_MAX_BYTES ? cJSON_ParseWithLength(value, len) : NULL;
            bool ok = cJSON_IsObject(j);
            cJSON_Delete(j);
            if (!ok) {
                free(value);
                snprintf(msg, sizeof(msg),
                         "%s: not a JSON object (each key of storage-config holds one JSON "
                         "document, at most %d bytes)",
                         path, ISVC_MAX_BYTES);
                doc_error(src, e, path, "Secret", name, msg);
                return -EINVAL;
            }
            int r = kube_secret_add(&it->secret, e->string, value);
            if (r == -ENOMEM) {
                oom();
                return -ENOMEM;
            }
            if (r < 0) {
                snprintf(msg, sizeof(msg), "more than %d keys", KUBE_SECRET_MAX_KEYS);
                doc_error(src, e, path, "Secret", name, msg);
                return -EINVAL;
            }
        }
    }
    (void)o;
    return 0;
}

static void new_uid(char *out, size_t size)
{
    unsigned char b[16] = {0};
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        memcpy(b, &t, sizeof(t));
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, size, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* The object as stored: the user's, without what the server owns, with metadata's
 * generation (1, +1 when spec changes), creationTimestamp and uid (kept from old). */
static cJSON *stored_form(const cJSON *obj, const cJSON *old)
{
    cJSON *s = cJSON_Duplicate(obj, true);
    if (!s)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(s, "status");
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(s, "metadata");
    static const char *const server[] = {"generation",      "creationTimestamp", "uid",
                                         "resourceVersion", "managedFields",     "selfLink"};
    for (size_t i = 0; i < sizeof(server) / sizeof(server[0]); i++)
        cJSON_DeleteItemFromObjectCaseSensitive(meta, server[i]);
    const cJSON *om = field(old, "metadata");
    const cJSON *og = field(om, "generation");
    double gen = cJSON_IsNumber(og) ? og->valuedouble : 0;
    if (!old || !cJSON_Compare(field(old, "spec"), field(s, "spec"), true) || gen < 1)
        gen += 1;
    char ts[32], uid[40];
    const char *ots = str_at(old, "metadata", "creationTimestamp", NULL);
    const char *ouid = str_at(old, "metadata", "uid", NULL);
    if (ots[0])
        snprintf(ts, sizeof(ts), "%s", ots);
    else
        isvc_time_format((int64_t)time(NULL), ts, sizeof(ts));
    if (ouid[0])
        snprintf(uid, sizeof(uid), "%s", ouid);
    else
        new_uid(uid, sizeof(uid));
    if (!meta || !cJSON_AddNumberToObject(meta, "generation", gen) ||
        !cJSON_AddStringToObject(meta, "creationTimestamp", ts) ||
        !cJSON_AddStringToObject(meta, "uid", uid)) {
        cJSON_Delete(s);
        return NULL;
    }
    return s;
}

static void print_applied(const char *resource, const char *name, const char *what)
{
    printf("%s/", resource);
    term_write(stdout, name, strlen(name), false);
    printf(" %s\n", what);
}

/* Write one object: compare-and-swap on the revision read, a few tries. 0 or 1. */
static int write_object(struct etcd_client *c, const struct apply_item *it)
{
    struct mm_error err = {0};
    for (int attempt = 0; attempt < 5; attempt++) {
        struct etcd_range_req req = {.key = it->key};
        struct etcd_response *r = NULL;
        if (etcd_sync_range(c, &req, &r, &err) < 0) {
            term_error("%s", err.msg);
            return 1;
        }
        int64_t mod = r->op.n_kvs ? r->op.kvs[0].mod_revision : 0;
        cJSON *old =
            r->op.n_kvs ? cJSON_ParseWithLength(r->op.kvs[0].value, r->op.kvs[0].value_len) : NULL;
        etcd_response_free(r);
        if (old && !cJSON_IsObject(old)) {
            cJSON_Delete(old);
            old = NULL;
        }
        cJSON *s = stored_form(it->obj, old);
        if (!s) {
            cJSON_Delete(old);
            oom();
            return 1;
        }
        bool same = old && cJSON_Compare(old, s, true);
        cJSON_Delete(old);
        if (same) {
            cJSON_Delete(s);
            print_applied(it->resource, it->name, "unchanged");
            return 0;
        }
        char *text = json_print(s, false);
        cJSON_Delete(s);
        if (!text) {
            oom();
            return 1;
        }
        if (strlen(text) > ISVC_MAX_BYTES) {
            term_error("%s/%s: %zu bytes as JSON, more than the %d an object may have",
                       it->resource, it->name, strlen(text), ISVC_MAX_BYTES);
            free(text);
            return 1;
        }
        struct etcd_compare cmp = {.key = it->key,
                                   .target = mod ? ETCD_CMP_MOD : ETCD_CMP_VERSION,
                                   .result = ETCD_CMP_EQUAL,
                                   .number = mod};
        struct etcd_op op = {.kind = ETCD_OP_PUT, .key = it->key, .value = text};
        struct etcd_txn txn = {.compare = &cmp, .n_compare = 1, .success = &op, .n_success = 1};
        int rc = etcd_sync_txn(c, &txn, &r, &err);
        free(text);
        if (rc < 0) {
            term_error("%s", err.msg);
            return 1;
        }
        bool ok = r->succeeded;
        etcd_response_free(r);
        if (ok) {
            print_applied(it->resource, it->name, mod ? "configured" : "created");
            return 0;
        }
    }
    term_error("%s/%s: changed by someone else at each of 5 tries; try again", it->resource,
               it->name);
    return 1;
}

/* The storage-config keys: new and changed ones put, ones the Secret no longer has deleted,
 * in one transaction. */
static int write_secret(struct etcd_client *c, const struct kube_options *o,
                        const struct apply_item *it)
{
    struct mm_error err = {0};
    enum kube_secret_change change;
    if (kube_secret_write(c, o->cluster, &it->secret, &change, &err) < 0) {
        term_error("%s", err.msg);
        return 1;
    }
    print_applied(it->resource, it->name,
                  change == KUBE_SECRET_UNCHANGED  ? "unchanged"
                  : change == KUBE_SECRET_CREATED ? "created"
                                                  : "configured");
    return 0;
}

/* What delete -f needs of an object: a kind kept here, its name, its namespace. The rest of the
 * object is not looked at (kubectl deletes what a file names, whatever its spec). */
static int validate_ref(const struct src *src, const cJSON *doc, const struct kube_options *o,
                        struct apply_item *it)
{
    const char *kind = str_at(doc, "kind", NULL, NULL);
    const cJSON *mn = field(field(doc, "metadata"), "name");
    const char *name = cJSON_IsString(mn) ? mn->valuestring : "";
    struct mm_error err = {0};
    char msg[512];
    bool isvc = strcmp(kind, "InferenceService") == 0;
    it->cluster = strcmp(kind, "ClusterServingRuntime") == 0;
    if (strcmp(kind, "Secret") == 0) {
        if (strcmp(name, SECRET_NAME) != 0) {
            doc_error(src, mn, "metadata.name", "Secret", name,
                      "metadata.name: the only Secret kept here is storage-config (the storage "
                      "keys)");
            return -EINVAL;
        }
        it->kind = ITEM_SECRET;
        snprintf(it->resource, sizeof(it->resource), "secret");
        snprintf(it->name, sizeof(it->name), SECRET_NAME);
        return 0;
    }
    if (keys_check_name("metadata.name", name, &err) < 0) {
        doc_error(src, mn, "metadata.name", kind, name, err.msg);
        return -EINVAL;
    }
    snprintf(it->name, sizeof(it->name), "%s", name);
    if (!isvc) {
        it->kind = ITEM_RUNTIME;
        snprintf(it->resource, sizeof(it->resource), "%sservingruntime.serving.kserve.io",
                 it->cluster ? "cluster" : "");
        return 0;
    }
    it->kind = ITEM_ISVC;
    snprintf(it->resource, sizeof(it->resource), ISVC_RESOURCE);
    const cJSON *nsn = field(field(doc, "metadata"), "namespace");
    const char *ns = cJSON_IsString(nsn) ? nsn->valuestring : "";
    if (ns[0] && o->ns && o->ns[0] && strcmp(ns, o->ns) != 0) {
        snprintf(msg, sizeof(msg),
                 "the namespace from the provided object \"%s\" does not match the namespace "
                 "\"%s\". You must pass '--namespace=%s' to perform this operation.",
                 ns, o->ns, ns);
        doc_error(src, nsn, "metadata.namespace", kind, name, msg);
        return -EINVAL;
    }
    if (ns[0] && keys_check_name("metadata.namespace", ns, &err) < 0) {
        doc_error(src, nsn, "metadata.namespace", kind, name, err.msg);
        return -EINVAL;
    }
    snprintf(it->ns, sizeof(it->ns), "%s", ns[0] ? ns : namespace_of(o));
    return 0;
}

/* The objects of a manifest file, every one checked. */
struct manifest {
    struct yamljson *y;
    struct apply_item *items;
    size_t n, cap;
};

static void manifest_free(struct manifest *m)
{
    for (size_t i = 0; i < m->n; i++)
        item_free(&m->items[i]);
    free(m->items);
    yamljson_free(m->y);
    *m = (struct manifest){0};
}

/* Check one object (for apply: all of it; for delete: what names it) into a new item.
 * 0, -EINVAL (message printed), -ENOMEM. */
static int add_object(struct manifest *m, const struct src *src, const cJSON *doc,
                      const struct kube_options *o, bool for_delete)
{
    if (!cJSON_IsObject(doc)) {
        doc_error(src, doc, "", NULL, NULL, "not an object (a manifest is a map)");
        return -EINVAL;
    }
    if (m->n == MAX_MANIFEST_OBJECTS) {
        char msg[128];
        snprintf(msg, sizeof(msg), "more than %d objects in one file", MAX_MANIFEST_OBJECTS);
        doc_error(src, doc, "", NULL, NULL, msg);
        return -EINVAL;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct apply_item *v = realloc(m->items, cap * sizeof(*v));
        if (!v) {
            oom();
            return -ENOMEM;
        }
        m->items = v;
        m->cap = cap;
    }
    const char *kind = str_at(doc, "kind", NULL, NULL);
    struct apply_item *it = &m->items[m->n++];
    *it = (struct apply_item){.doc = src->d + 1};
    bool known = strcmp(kind, "InferenceService") == 0 || strcmp(kind, "ServingRuntime") == 0 ||
                 strcmp(kind, "ClusterServingRuntime") == 0 || strcmp(kind, "Secret") == 0;
    if (!known) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "kind: %s%s%s is not kept here (InferenceService, ServingRuntime, "
                 "ClusterServingRuntime and the Secret storage-config are)",
                 kind[0] ? "\"" : "", kind[0] ? kind : "missing", kind[0] ? "\"" : "");
        doc_error(src, field(doc, "kind"), "kind", NULL, NULL, msg);
        return -EINVAL;
    }
    if (for_delete)
        return validate_ref(src, doc, o, it);
    if (strcmp(kind, "InferenceService") == 0)
        return validate_isvc(src, doc, o, it);
    if (strcmp(kind, "Secret") == 0)
        return validate_secret(src, doc, o, it);
    return validate_runtime(src, doc, o, strcmp(kind, "ClusterServingRuntime") == 0, it);
}

/* Read o->file and check every object in it (kind: List's items too) before anything is done.
 * 0, or 1 (messages printed). */
static int read_manifest(const struct kube_options *o, bool for_delete, struct manifest *m)
{
    const char *verb = for_delete ? "delete" : "apply";
    size_t len = 0;
    char *text = read_input(o->file, &len);
    if (!text)
        return 1;
    struct mm_error err = {0};
    int rc = yamljson_parse(text, len, NULL, &m->y, &err);
    memset(text, 0, len); /* it may hold a Secret */
    free(text);
    if (rc < 0) {
        term_error("error: %s: %s", strcmp(o->file, "-") ? o->file : "<stdin>", err.msg);
        return 1;
    }
    size_t n = yamljson_count(m->y);
    bool bad = false;
    for (size_t d = 0; d < n; d++) {
        const cJSON *doc = yamljson_root(m->y, d);
        struct src src = {.file = o->file, .y = m->y, .d = d, .item = -1};
        if (cJSON_IsNull(doc))
            continue; /* an empty document */
        if (strcmp(str_at(doc, "kind", NULL, NULL), "List") != 0) {
            int r = add_object(m, &src, doc, o, for_delete);
            if (r == -ENOMEM)
                return 1;
            bad |= r < 0;
            continue;
        }
        /* kind: List (what get -o json|yaml prints): its items, each an object. */
        const cJSON *items = field(doc, "items"), *e;
        if (!cJSON_IsArray(items) && !cJSON_IsNull(items) && items) {
            doc_error(&src, items, "items", "List", NULL, "items: not a sequence of objects");
            bad = true;
            continue;
        }
        long i = 0;
        cJSON_ArrayForEach(e, items)
        {
            src.item = i++;
            int r;
            if (strcmp(str_at(e, "kind", NULL, NULL), "List") == 0) {
                doc_error(&src, field(e, "kind"), "kind", "List", NULL,
                          "kind: a List inside a List (its items go in the outer one)");
                r = -EINVAL;
            } else {
                r = add_object(m, &src, e, o, for_delete);
            }
            if (r == -ENOMEM)
                return 1;
            bad |= r < 0;
        }
    }
    if (bad) {
        fprintf(stderr, "mmctl: nothing %s\n", for_delete ? "deleted" : "applied");
        return 1;
    }
    if (m->n == 0) {
        fprintf(stderr, "error: no objects passed to %s\n", verb);
        return 1;
    }
    return 0;
}

static int cmd_apply(struct etcd_client *c, const struct kube_options *o)
{
    if (!o->file) {
        fprintf(stderr, "mmctl: apply needs -f FILE (or -f - for standard input)\n");
        return 2;
    }
    struct manifest m = {0};
    int rc = read_manifest(o, false, &m);
    for (size_t i = 0; i < m.n && rc == 0; i++)
        rc = m.items[i].kind == ITEM_SECRET ? write_secret(c, o, &m.items[i])
                                            : write_object(c, &m.items[i]);
    manifest_free(&m);
    return rc;
}

/* delete -f: every object the file names, in its order; one not found is said and the rest are
 * deleted (kubectl's way), the exit code 1. */
static int cmd_delete_file(struct etcd_client *c, const struct kube_options *o)
{
    struct manifest m = {0};
    int rc = read_manifest(o, true, &m);
    for (size_t i = 0; i < m.n && rc != 1; i++) {
        const struct apply_item *it = &m.items[i];
        int r = it->kind == ITEM_SECRET
                    ? cmd_delete_secret(c, o, it->name)
                    : cmd_delete(c, o, it->ns, it->kind == ITEM_ISVC, it->cluster, it->name);
        if (r)
            rc = 3; /* go on with the others */
    }
    manifest_free(&m);
    return rc ? 1 : 0;
}

/* ---- Dispatch ---- */

bool kube_is_verb(const char *verb)
{
    return strcmp(verb, "apply") == 0 || strcmp(verb, "get") == 0 ||
           strcmp(verb, "describe") == 0 || strcmp(verb, "delete") == 0;
}

int kube_run(struct etcd_client *c, const struct kube_options *o)
{
    const char *verb = o->args[0];
    enum out_form form;
    const char *tmpl;
    if (parse_output(o->output, &form, &tmpl))
        return 2;
    if (o->watch && strcmp(verb, "get") != 0) {
        fprintf(stderr, "mmctl: --watch goes with get\n");
        return 2;
    }
    bool deleting = strcmp(verb, "delete") == 0;
    if (o->file && strcmp(verb, "apply") != 0 && !deleting) {
        fprintf(stderr, "mmctl: -f goes with apply and delete\n");
        return 2;
    }
    if (strcmp(verb, "apply") == 0 || (deleting && o->file)) {
        if (o->n_args != 1 || o->output) {
            fprintf(stderr, "mmctl: usage: mmctl %s -f FILE|-%s\n", verb,
                    deleting ? " (or delete TYPE NAME, not both)" : "");
            return 2;
        }
        return deleting ? cmd_delete_file(c, o) : cmd_apply(c, o);
    }
    bool cluster = false;
    if (o->n_args < 2 || o->n_args > 3) {
        fprintf(stderr, "mmctl: usage: mmctl %s %s\n", verb,
                strcmp(verb, "get") == 0
                    ? "isvc [NAME] | servingruntimes [NAME] | secrets [storage-config]"
                : deleting ? "isvc|servingruntime|clusterservingruntime|secret NAME, or delete -f "
                             "FILE|-"
                           : "isvc|secret NAME");
        return 2;
    }
    const char *what = o->args[1], *name = o->n_args == 3 ? o->args[2] : NULL;
    bool isvc = is_isvc_word(what), secret = !isvc && is_secret_word(what);
    bool runtime = !isvc && !secret && is_runtime_word(what, &cluster);
    if (!isvc && !runtime && !secret) {
        fprintf(stderr, "mmctl: error: the server doesn't have a resource type \"");
        term_write(stderr, what, strlen(what), false);
        fprintf(stderr, "\" (isvc / inferenceservice, servingruntime, clusterservingruntime, "
                        "secret)\n");
        return 2;
    }
    if (name) {
        struct mm_error err = {0};
        if (keys_check_name("name", name, &err) < 0) {
            term_error("%s", err.msg);
            return 2;
        }
    }
    if (strcmp(verb, "get") == 0) {
        if (!isvc && o->watch) {
            fprintf(stderr, "mmctl: --watch goes with get isvc\n");
            return 2;
        }
        return isvc     ? cmd_get_isvc(c, o, name, form, tmpl)
               : secret ? cmd_get_secret(c, o, name, form, tmpl)
                        : cmd_get_runtimes(c, o, cluster, name, form, tmpl);
    }
    if (!name) {
        fprintf(stderr, "mmctl: usage: mmctl %s %s NAME\n", verb, what);
        return 2;
    }
    if (o->output) {
        fprintf(stderr, "mmctl: -o goes with get\n");
        return 2;
    }
    if (strcmp(verb, "describe") == 0) {
        if (runtime) {
            fprintf(stderr, "mmctl: describe shows InferenceServices and the Secret "
                            "storage-config (describe isvc NAME, describe secret "
                            "storage-config)\n");
            return 2;
        }
        return secret ? cmd_describe_secret(c, o, name) : cmd_describe(c, o, name);
    }
    if (secret)
        return cmd_delete_secret(c, o, name);
    return cmd_delete(c, o, namespace_of(o), isvc, cluster, name);
}
