/* yamljson.c - libyaml's event stream built into cJSON documents, with a line per node and
 * every bound of yamljson.h checked before the work it limits is done. */
#include "mm/yamljson.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct node_line {
    const cJSON *node;
    unsigned line;
};

struct document {
    cJSON *root;
    unsigned line;
};

struct yamljson {
    struct document *docs;
    size_t n_docs, cap_docs;
    struct node_line *lines; /* sorted by node address once parsed */
    size_t n_lines, cap_lines;
};

struct anchor {
    char *name;
    const cJSON *node;
    size_t nodes, bytes; /* what a copy costs */
    unsigned depth;      /* levels below the node */
};

/* One open collection. */
struct frame {
    cJSON *node;
    bool mapping;
    char *key; /* mapping: the key read, its value not yet */
    unsigned key_line;
    size_t n_keys;
    char *anchor; /* registered when the collection ends */
    size_t nodes0, bytes0;
    unsigned below; /* deepest level reached under this node */
};

struct builder {
    struct yamljson *y;
    unsigned last_line; /* the text's last line: libyaml marks an empty node at the end of the
                           text (a document with no content) on the line after it */
    struct yamljson_limits lim;
    struct frame *stack; /* lim.max_depth entries */
    unsigned depth;
    cJSON *root; /* the current document's root, until the document ends */
    bool have_root;
    unsigned doc_line;
    size_t doc_no; /* 1-based, of the document being read */
    size_t nodes, bytes;
    struct anchor *anchors;
    size_t n_anchors;
    struct mm_error *err;
};

static int fail(struct builder *b, int code, unsigned line, const char *fmt, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof(msg), fmt, what ? what : "");
    if (b->doc_no)
        return mm_error_set(b->err, code, "document %zu, line %u: %s", b->doc_no, line, msg);
    return mm_error_set(b->err, code, "line %u: %s", line, msg);
}

/* A name or value quoted for a message: at most 40 bytes, controls as '?'. */
static const char *quoted(const char *s, char *out, size_t size)
{
    size_t n = 0, i = 0;
    for (; s[i] && n + 5 < size && i < 40; i++)
        out[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i])
        out[n++] = '.', out[n++] = '.', out[n++] = '.';
    out[n] = '\0';
    return out;
}

static int record_line(struct builder *b, const cJSON *node, unsigned line)
{
    struct yamljson *y = b->y;
    if (y->n_lines == y->cap_lines) {
        size_t cap = y->cap_lines ? y->cap_lines * 2 : 64;
        struct node_line *l = realloc(y->lines, cap * sizeof(*l));
        if (!l)
            return mm_error_set(b->err, -ENOMEM, "out of memory");
        y->lines = l;
        y->cap_lines = cap;
    }
    y->lines[y->n_lines++] = (struct node_line){node, line};
    return 0;
}

static int charge(struct builder *b, size_t nodes, size_t bytes, unsigned line)
{
    if (nodes > b->lim.max_nodes - b->nodes) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", b->lim.max_nodes);
        return fail(b, -E2BIG, line, "more than %s nodes (aliases count as their copies)", n);
    }
    if (bytes > b->lim.max_scalar_bytes - b->bytes) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", b->lim.max_scalar_bytes);
        return fail(b, -E2BIG, line,
                    "more than %s bytes of scalars (aliases count as their copies)", n);
    }
    b->nodes += nodes;
    b->bytes += bytes;
    return 0;
}

/* Integers: [-+]?[0-9]+, 0x[0-9a-fA-F]+, 0o[0-7]+. 1 and *v, 0 if not one, -ERANGE past 2^53. */
static int parse_int(const char *s, double *v)
{
    const char *p = s;
    int base = 10;
    bool neg = false;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
    } else if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    if (!*p)
        return 0;
    uint64_t n = 0;
    for (; *p; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (base == 16 && *p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            return 0;
        if (d >= base)
            return 0;
        if (n > ((uint64_t)1 << 53))
            continue; /* keep checking the syntax; the value is out of range anyway */
        n = n * (uint64_t)base + (uint64_t)d;
    }
    if (n > ((uint64_t)1 << 53))
        return -ERANGE;
    *v = neg ? -(double)n : (double)n;
    return 1;
}

/* Floats: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?. 1 and *v, or 0. */
static int parse_float(const char *s, double *v)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (!digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return 0;
    char *end = NULL;
    double d = strtod(s, &end);
    if (!end || *end || !isfinite(d))
        return 0;
    *v = d;
    return 1;
}

static bool one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const trues[] = {"true", "True", "TRUE", NULL};
static const char *const falses[] = {"false", "False", "FALSE", NULL};
static const char *const specials[] = {".inf",  ".Inf",  ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
                                       "-.Inf", "-.INF", ".nan", ".NaN",  ".NAN",  NULL};

#define TAG_PREFIX "tag:yaml.org,2002:"

/* A scalar event as a JSON value (NULL with err set). */
static cJSON *scalar_value(struct builder *b, const yaml_event_t *ev, unsigned line)
{
    const char *s = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    char q[48];
    if (tag && strncmp(tag, TAG_PREFIX, strlen(TAG_PREFIX)) == 0)
        tag += strlen(TAG_PREFIX);
    else
        tag = NULL; /* local and unknown tags: resolved as untagged */
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (tag && strcmp(tag, "str") == 0)
        return cJSON_CreateString(s);
    if (!plain && (!tag || strcmp(tag, "map") == 0 || strcmp(tag, "seq") == 0))
        return cJSON_CreateString(s);
    if (tag && strcmp(tag, "null") == 0) {
        if (!one_of(s, nulls)) {
            fail(b, -EINVAL, line, "'%s' is tagged !!null but is not null",
                 quoted(s, q, sizeof(q)));
            return NULL;
        }
        return cJSON_CreateNull();
    }
    if (tag && strcmp(tag, "bool") == 0) {
        if (!one_of(s, trues) && !one_of(s, falses)) {
            fail(b, -EINVAL, line, "'%s' is tagged !!bool but is not true or false",
                 quoted(s, q, sizeof(q)));
            return NULL;
        }
        return cJSON_CreateBool(one_of(s, trues));
    }
    bool want_num = tag && (strcmp(tag, "int") == 0 || strcmp(tag, "float") == 0);
    if (!want_num) {
        if (one_of(s, nulls))
            return cJSON_CreateNull();
        if (one_of(s, trues))
            return cJSON_CreateTrue();
        if (one_of(s, falses))
            return cJSON_CreateFalse();
    }
    if (one_of(s, specials)) {
        fail(b, -EINVAL, line, "'%s' (infinity or not-a-number) has no JSON form",
             quoted(s, q, sizeof(q)));
        return NULL;
    }
    double v = 0;
    int rc = parse_int(s, &v);
    if (rc < 0) {
        fail(b, -EINVAL, line,
             "the integer '%s' is beyond 2^53, which JSON numbers cannot hold "
             "exactly (quote it to keep it as a string)",
             quoted(s, q, sizeof(q)));
        return NULL;
    }
    if (rc > 0 || parse_float(s, &v) > 0)
        return cJSON_CreateNumber(v);
    if (want_num) {
        fail(b, -EINVAL, line, "'%s' is tagged as a number but is not one",
             quoted(s, q, sizeof(q)));
        return NULL;
    }
    return cJSON_CreateString(s);
}

static const struct anchor *find_anchor(const struct builder *b, const char *name)
{
    for (size_t i = b->n_anchors; i-- > 0;)
        if (strcmp(b->anchors[i].name, name) == 0)
            return &b->anchors[i];
    return NULL;
}

static int add_anchor(struct builder *b, char *name, const cJSON *node, size_t nodes, size_t bytes,
                      unsigned depth, unsigned line)
{
    if (b->n_anchors == b->lim.max_anchors) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", b->lim.max_anchors);
        free(name);
        return fail(b, -E2BIG, line, "more than %s anchors", n);
    }
    b->anchors[b->n_anchors++] = (struct anchor){name, node, nodes, bytes, depth};
    return 0;
}

static void clear_anchors(struct builder *b)
{
    for (size_t i = 0; i < b->n_anchors; i++)
        free(b->anchors[i].name);
    b->n_anchors = 0;
}

/* Where a new node goes: returns 0 with *key_line set (the line its value is known by), or an
 * error. A key position (a mapping waiting for a key) takes only scalars: is_key says whether
 * this node is read as a key. */
static int place(struct builder *b, bool scalar, unsigned line, bool *is_key)
{
    *is_key = false;
    if (b->depth == 0) {
        if (b->have_root) /* libyaml emits one root per document; defensive */
            return fail(b, -EINVAL, line, "a second root in one document%s", NULL);
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    if (f->mapping && !f->key) {
        if (!scalar)
            return fail(b, -EINVAL, line,
                        "a mapping key must be a scalar (a string), not a collection or an "
                        "alias%s",
                        NULL);
        *is_key = true;
    }
    return 0;
}

/* Attach a built node where place() said (the mapping's pending key is consumed). */
static int attach(struct builder *b, cJSON *node, unsigned line)
{
    if (b->depth == 0) {
        b->root = node;
        b->have_root = true;
        return record_line(b, node, line);
    }
    struct frame *f = &b->stack[b->depth - 1];
    if (f->mapping) {
        unsigned kl = f->key_line;
        if (!cJSON_AddItemToObject(f->node, f->key, node)) {
            cJSON_Delete(node);
            free(f->key);
            f->key = NULL;
            return mm_error_set(b->err, -ENOMEM, "out of memory");
        }
        free(f->key);
        f->key = NULL;
        return record_line(b, node, kl);
    }
    if (!cJSON_AddItemToArray(f->node, node)) {
        cJSON_Delete(node);
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    }
    return record_line(b, node, line);
}

static int take_key(struct builder *b, const yaml_event_t *ev, unsigned line)
{
    struct frame *f = &b->stack[b->depth - 1];
    const char *s = (const char *)ev->data.scalar.value;
    char q[48];
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(s, "<<") == 0)
        return fail(b, -EINVAL, line, "merge keys (<<) are not supported: write the fields out%s",
                    NULL);
    if (f->n_keys == b->lim.max_keys) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", b->lim.max_keys);
        return fail(b, -E2BIG, line, "more than %s keys in one mapping", n);
    }
    for (const cJSON *c = f->node->child; c; c = c->next)
        if (strcmp(c->string, s) == 0)
            return fail(b, -EINVAL, line, "the key '%s' appears twice in one mapping",
                        quoted(s, q, sizeof(q)));
    int rc = charge(b, 0, ev->data.scalar.length, line);
    if (rc < 0)
        return rc;
    f->key = strdup(s);
    if (!f->key)
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    f->key_line = line;
    f->n_keys++;
    return 0;
}

static void note_depth(struct builder *b, unsigned levels)
{
    /* The frames from the innermost outwards see levels, levels+1, ... below them. */
    for (unsigned i = b->depth; i-- > 0; levels++)
        if (b->stack[i].below < levels)
            b->stack[i].below = levels;
}

static char *own_anchor(const yaml_char_t *a, struct builder *b)
{
    if (!a)
        return NULL;
    char *s = strdup((const char *)a);
    if (!s)
        mm_error_set(b->err, -ENOMEM, "out of memory");
    return s;
}

static int on_scalar(struct builder *b, const yaml_event_t *ev, unsigned line)
{
    bool is_key;
    int rc = place(b, true, line, &is_key);
    if (rc < 0)
        return rc;
    if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length))
        return fail(b, -EINVAL, line, "a scalar holds a NUL byte%s", NULL);
    if (is_key) {
        if (ev->data.scalar.anchor)
            return fail(b, -EINVAL, line, "an anchor on a mapping key%s", NULL);
        return take_key(b, ev, line);
    }
    rc = charge(b, 1, ev->data.scalar.length, line);
    if (rc < 0)
        return rc;
    cJSON *v = scalar_value(b, ev, line);
    if (!v)
        return b->err->code ? b->err->code : mm_error_set(b->err, -ENOMEM, "out of memory");
    rc = attach(b, v, line);
    if (rc < 0)
        return rc;
    note_depth(b, 1);
    if (ev->data.scalar.anchor) {
        char *name = own_anchor(ev->data.scalar.anchor, b);
        if (!name)
            return -ENOMEM;
        return add_anchor(b, name, v, 1, ev->data.scalar.length, 0, line);
    }
    return 0;
}

static int on_start(struct builder *b, const yaml_event_t *ev, bool mapping, unsigned line)
{
    bool is_key;
    int rc = place(b, false, line, &is_key);
    if (rc < 0)
        return rc;
    if (b->depth == b->lim.max_depth) {
        char n[32];
        snprintf(n, sizeof(n), "%u", b->lim.max_depth);
        return fail(b, -E2BIG, line, "nested deeper than %s levels", n);
    }
    rc = charge(b, 1, 0, line);
    if (rc < 0)
        return rc;
    cJSON *c = mapping ? cJSON_CreateObject() : cJSON_CreateArray();
    if (!c)
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    rc = attach(b, c, line);
    if (rc < 0)
        return rc;
    const yaml_char_t *a = mapping ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    struct frame *f = &b->stack[b->depth++];
    *f = (struct frame){.node = c, .mapping = mapping, .nodes0 = b->nodes - 1, .bytes0 = b->bytes};
    if (a && !(f->anchor = own_anchor(a, b)))
        return -ENOMEM;
    return 0;
}

static int on_end(struct builder *b, unsigned line)
{
    struct frame *f = &b->stack[b->depth - 1];
    if (f->mapping && f->key) /* libyaml pairs keys with values; defensive */
        return fail(b, -EINVAL, line, "a key without a value%s", NULL);
    unsigned below = f->below;
    char *anchor = f->anchor;
    f->anchor = NULL;
    size_t nodes = b->nodes - f->nodes0, bytes = b->bytes - f->bytes0;
    const cJSON *node = f->node;
    b->depth--;
    note_depth(b, below + 1);
    if (anchor)
        return add_anchor(b, anchor, node, nodes, bytes, below, line);
    return 0;
}

static int on_alias(struct builder *b, const yaml_event_t *ev, unsigned line)
{
    bool is_key;
    int rc = place(b, false, line, &is_key);
    if (rc < 0)
        return rc;
    char q[48];
    const struct anchor *a = find_anchor(b, (const char *)ev->data.alias.anchor);
    if (!a)
        return fail(b, -EINVAL, line, "the alias *%s names no anchor before it",
                    quoted((const char *)ev->data.alias.anchor, q, sizeof(q)));
    if (b->depth + a->depth >= b->lim.max_depth) {
        char n[32];
        snprintf(n, sizeof(n), "%u", b->lim.max_depth);
        return fail(b, -E2BIG, line, "an alias nests deeper than %s levels", n);
    }
    rc = charge(b, a->nodes, a->bytes, line);
    if (rc < 0)
        return rc;
    cJSON *copy = cJSON_Duplicate(a->node, true);
    if (!copy)
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    unsigned depth = a->depth;
    rc = attach(b, copy, line);
    if (rc < 0)
        return rc;
    note_depth(b, depth + 1);
    return 0;
}

static int add_document(struct builder *b)
{
    struct yamljson *y = b->y;
    if (y->n_docs == y->cap_docs) {
        size_t cap = y->cap_docs ? y->cap_docs * 2 : 4;
        struct document *d = realloc(y->docs, cap * sizeof(*d));
        if (!d)
            return mm_error_set(b->err, -ENOMEM, "out of memory");
        y->docs = d;
        y->cap_docs = cap;
    }
    cJSON *root = b->root;
    if (!root && !(root = cJSON_CreateNull()))
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    if (!b->root) {
        int rc = record_line(b, root, b->doc_line);
        if (rc < 0) {
            cJSON_Delete(root);
            return rc;
        }
    }
    y->docs[y->n_docs++] = (struct document){root, b->doc_line};
    b->root = NULL;
    b->have_root = false;
    b->doc_no = y->n_docs + 1; /* an error after this document's end is in the next one */
    return 0;
}

static int by_node(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct node_line *)a)->node;
    uintptr_t y = (uintptr_t)((const struct node_line *)b)->node;
    return x < y ? -1 : x > y;
}

static int parser_error(struct builder *b, const yaml_parser_t *p)
{
    unsigned line = (unsigned)p->problem_mark.line + 1, col = (unsigned)p->problem_mark.column + 1;
    if (line > b->last_line)
        line = b->last_line;
    const char *what = p->problem ? p->problem : "not YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return mm_error_set(b->err, -ENOMEM, "out of memory");
    if (p->context)
        return mm_error_set(b->err, -EINVAL, "document %zu, line %u, column %u: %s %s",
                            b->doc_no ? b->doc_no : 1, line, col, what, p->context);
    return mm_error_set(b->err, -EINVAL, "document %zu, line %u, column %u: %s",
                        b->doc_no ? b->doc_no : 1, line, col, what);
}

static int run(struct builder *b, yaml_parser_t *p)
{
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev))
            return parser_error(b, p);
        unsigned line = (unsigned)ev.start_mark.line + 1;
        if (line > b->last_line)
            line = b->last_line;
        int rc = 0;
        bool done = false;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (b->y->n_docs == b->lim.max_documents) {
                char n[32];
                snprintf(n, sizeof(n), "%zu", b->lim.max_documents);
                b->doc_no = b->y->n_docs + 1;
                rc = fail(b, -E2BIG, line, "more than %s documents", n);
                break;
            }
            b->doc_no = b->y->n_docs + 1;
            b->doc_line = line;
            clear_anchors(b);
            break;
        case YAML_DOCUMENT_END_EVENT:
            rc = add_document(b);
            break;
        case YAML_SCALAR_EVENT:
            rc = on_scalar(b, &ev, line);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = on_start(b, &ev, false, line);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = on_start(b, &ev, true, line);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = on_end(b, line);
            break;
        case YAML_ALIAS_EVENT:
            rc = on_alias(b, &ev, line);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
        if (rc < 0)
            return rc;
        if (done)
            return 0;
    }
}

int yamljson_parse(const char *text, size_t len, const struct yamljson_limits *lim,
                   struct yamljson **out, struct mm_error *err)
{
    struct mm_error local = {0};
    if (!err)
        err = &local;
    mm_error_clear(err);
    *out = NULL;
    struct builder b = {.err = err};
    if (lim)
        b.lim = *lim;
    if (!b.lim.max_bytes)
        b.lim.max_bytes = YAMLJSON_MAX_BYTES;
    if (!b.lim.max_depth)
        b.lim.max_depth = YAMLJSON_MAX_DEPTH;
    if (!b.lim.max_nodes)
        b.lim.max_nodes = YAMLJSON_MAX_NODES;
    if (!b.lim.max_scalar_bytes)
        b.lim.max_scalar_bytes = YAMLJSON_MAX_SCALAR_BYTES;
    if (!b.lim.max_keys)
        b.lim.max_keys = YAMLJSON_MAX_KEYS;
    if (!b.lim.max_anchors)
        b.lim.max_anchors = YAMLJSON_MAX_ANCHORS;
    if (!b.lim.max_documents)
        b.lim.max_documents = YAMLJSON_MAX_DOCUMENTS;
    if (len > b.lim.max_bytes)
        return mm_error_set(err, -E2BIG, "%zu bytes: more than the %zu a manifest may have", len,
                            b.lim.max_bytes);
    /* Lines as an editor counts them: LF, CRLF or a lone CR ends one. */
    b.last_line = 1;
    for (size_t i = 0; i < len; i++)
        b.last_line +=
            text[i] == '\n' || (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n'));
    b.y = calloc(1, sizeof(*b.y));
    b.stack = calloc(b.lim.max_depth, sizeof(*b.stack));
    b.anchors = calloc(b.lim.max_anchors, sizeof(*b.anchors));
    yaml_parser_t p;
    bool parser = false;
    int rc;
    if (!b.y || !b.stack || !b.anchors) {
        rc = mm_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (!yaml_parser_initialize(&p)) {
        rc = mm_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    parser = true;
    yaml_parser_set_input_string(&p, (const unsigned char *)(len ? text : ""), len);
    rc = run(&b, &p);
    if (rc == 0 && b.y->n_lines)
        qsort(b.y->lines, b.y->n_lines, sizeof(*b.y->lines), by_node);
out:
    if (parser)
        yaml_parser_delete(&p);
    for (unsigned i = 0; b.stack && i < b.lim.max_depth; i++) {
        free(b.stack[i].key);
        free(b.stack[i].anchor);
    }
    if (b.anchors)
        clear_anchors(&b);
    free(b.anchors);
    free(b.stack);
    cJSON_Delete(b.root); /* a document left unfinished */
    if (rc < 0) {
        yamljson_free(b.y);
        return rc;
    }
    *out = b.y;
    return 0;
}

void yamljson_free(struct yamljson *y)
{
    if (!y)
        return;
    for (size_t i = 0; i < y->n_docs; i++)
        cJSON_Delete(y->docs[i].root);
    free(y->docs);
    free(y->lines);
    free(y);
}

size_t yamljson_count(const struct yamljson *y)
{
    return y->n_docs;
}

const cJSON *yamljson_root(const struct yamljson *y, size_t i)
{
    return i < y->n_docs ? y->docs[i].root : NULL;
}

unsigned yamljson_doc_line(const struct yamljson *y, size_t i)
{
    return i < y->n_docs ? y->docs[i].line : 0;
}

unsigned yamljson_line(const struct yamljson *y, const cJSON *node)
{
    struct node_line key = {node, 0};
    const struct node_line *l =
        y->n_lines ? bsearch(&key, y->lines, y->n_lines, sizeof(key), by_node) : NULL;
    return l ? l->line : 0;
}

/* The next component of a path: a key (into key, NUL-terminated) or an index. Returns the
 * bytes consumed, or 0 at the end or on a malformed path. */
static size_t next_part(const char *p, char *key, size_t size, long *index)
{
    size_t i = 0, n = 0;
    *index = -1;
    if (p[0] == '.')
        i++;
    if (p[i] == '[' && (p[i + 1] == '"' || p[i + 1] == '\'')) {
        char q = p[i + 1];
        i += 2;
        while (p[i] && p[i] != q && n + 1 < size)
            key[n++] = p[i++];
        if (p[i] != q || p[i + 1] != ']')
            return 0;
        key[n] = '\0';
        return i + 2;
    }
    if (p[i] == '[') {
        char *end = NULL;
        long v = strtol(p + i + 1, &end, 10);
        if (!end || *end != ']' || v < 0)
            return 0;
        *index = v;
        return (size_t)(end + 1 - p);
    }
    while (p[i] && p[i] != '.' && p[i] != '[' && n + 1 < size)
        key[n++] = p[i++];
    if (!n)
        return 0;
    key[n] = '\0';
    return i;
}

unsigned yamljson_path_line(const struct yamljson *y, size_t i, const char *path)
{
    const cJSON *node = yamljson_root(y, i);
    if (!node)
        return 0;
    unsigned line = yamljson_line(y, node);
    char key[256];
    long index;
    size_t used;
    while (path && *path && (used = next_part(path, key, sizeof(key), &index)) > 0) {
        path += used;
        const cJSON *next = NULL;
        if (index >= 0 && cJSON_IsArray(node))
            next = cJSON_GetArrayItem(node, (int)(index > 1000000 ? 1000000 : index));
        else if (index < 0 && cJSON_IsObject(node))
            next = cJSON_GetObjectItemCaseSensitive(node, key);
        if (!next)
            break;
        node = next;
        unsigned l = yamljson_line(y, node);
        if (l)
            line = l;
    }
    return line;
}

/* ---- Printing ---- */

struct sink {
    char *buf;
    size_t len, cap;
    bool failed;
};

static int sink_write(void *data, unsigned char *bytes, size_t size)
{
    struct sink *s = data;
    if (size > SIZE_MAX / 2 - s->len - 1) {
        s->failed = true;
        return 0;
    }
    if (s->len + size + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + size + 1)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->failed = true;
            return 0;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, bytes, size);
    s->len += size;
    s->buf[s->len] = '\0';
    return 1;
}

/* Whether a plain scalar with this text would read back as something other than this string. */
static bool reads_as_other(const char *s)
{
    double v;
    return one_of(s, nulls) || one_of(s, trues) || one_of(s, falses) || one_of(s, specials) ||
           parse_int(s, &v) != 0 || parse_float(s, &v) > 0 || strcmp(s, "<<") == 0;
}

static int emit_scalar(yaml_emitter_t *e, const char *text, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    size_t len = strlen(text);
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)len, 1, 1, style))
        return -ENOMEM;
    return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
}

static int emit_string(yaml_emitter_t *e, const char *s)
{
    return emit_scalar(e, s,
                       reads_as_other(s) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
}

static int emit_node(yaml_emitter_t *e, const cJSON *n, unsigned depth)
{
    yaml_event_t ev;
    if (depth > YAMLJSON_MAX_DEPTH)
        return -E2BIG;
    if (cJSON_IsObject(n) || cJSON_IsArray(n)) {
        bool map = cJSON_IsObject(n), empty = !n->child; /* {} and [] read better in flow */
        int ok = map ? yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                           empty ? YAML_FLOW_MAPPING_STYLE
                                                                 : YAML_BLOCK_MAPPING_STYLE)
                     : yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                            empty ? YAML_FLOW_SEQUENCE_STYLE
                                                                  : YAML_BLOCK_SEQUENCE_STYLE);
        if (!ok)
            return -ENOMEM;
        if (!yaml_emitter_emit(e, &ev))
            return -EIO;
        for (const cJSON *c = n->child; c; c = c->next) {
            int rc = map ? emit_string(e, c->string ? c->string : "") : 0;
            if (rc == 0)
                rc = emit_node(e, c, depth + 1);
            if (rc < 0)
                return rc;
        }
        ok = map ? yaml_mapping_end_event_initialize(&ev) : yaml_sequence_end_event_initialize(&ev);
        if (!ok)
            return -ENOMEM;
        return yaml_emitter_emit(e, &ev) ? 0 : -EIO;
    }
    if (cJSON_IsString(n))
        return emit_string(e, n->valuestring);
    if (cJSON_IsNumber(n)) {
        char num[64];
        double d = n->valuedouble;
        if (d == (double)(int64_t)d && d > -9007199254740992.0 && d < 9007199254740992.0)
            snprintf(num, sizeof(num), "%lld", (long long)d);
        else
            snprintf(num, sizeof(num), "%.17g", d);
        return emit_scalar(e, num, YAML_PLAIN_SCALAR_STYLE);
    }
    if (cJSON_IsBool(n))
        return emit_scalar(e, cJSON_IsTrue(n) ? "true" : "false", YAML_PLAIN_SCALAR_STYLE);
    return emit_scalar(e, "null", YAML_PLAIN_SCALAR_STYLE);
}

char *yamljson_print(const cJSON *doc)
{
    yaml_emitter_t e;
    yaml_event_t ev;
    struct sink s = {0};
    if (!yaml_emitter_initialize(&e))
        return NULL;
    yaml_emitter_set_output(&e, sink_write, &s);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    int rc = -EIO;
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || !yaml_emitter_emit(&e, &ev))
        goto out;
    if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) ||
        !yaml_emitter_emit(&e, &ev))
        goto out;
    if ((rc = emit_node(&e, doc, 0)) < 0)
        goto out;
    rc = -EIO;
    if (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(&e, &ev))
        goto out;
    if (!yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(&e, &ev) ||
        !yaml_emitter_flush(&e))
        goto out;
    rc = 0;
out:
    yaml_emitter_delete(&e);
    if (rc < 0 || s.failed) {
        free(s.buf);
        return NULL;
    }
    return s.buf;
}
