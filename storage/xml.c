/* xml.c - element text of object-store listings (see xml.h).
 *
 * One tokenizer walks the document: text, start tags (attributes skipped, quoted values may hold
 * '>'), end tags, empty-element tags, CDATA sections, comments and processing instructions.
 * Both entry points first walk the whole document once to check that it is well-formed enough
 * for finding (every construct terminated, end tags balanced, entities known), so a malformed
 * document gives -EINVAL before any callback runs and no partial text is returned. DTDs
 * (<!DOCTYPE ...>) are refused: listings never carry them and they are where XML's expansion
 * attacks live. Nesting is only counted (a size_t), so depth costs no memory. */
#include "mm/xml.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

enum tok_kind { TOK_TEXT, TOK_START, TOK_END, TOK_EMPTY, TOK_CDATA, TOK_SKIP, TOK_EOF };

struct tok {
    enum tok_kind kind;
    const char *p; /* the whole token */
    size_t len;
    const char *name; /* TOK_START, TOK_END, TOK_EMPTY */
    size_t name_len;
    const char *body; /* TOK_TEXT: the text; TOK_CDATA: between the brackets */
    size_t body_len;
};

/* The first occurrence of needle in [p, p + n), or NULL. */
static const char *find(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(p + i, needle, k) == 0)
            return p + i;
    }
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool ends_name(char c)
{
    return is_space(c) || c == '/' || c == '>' || c == '<' || c == '=' || c == '"' ||
           c == '\'';
}

/* The next token at *pos; *pos moves past it. 0 or -EINVAL. */
static int next_tok(const char *doc, size_t n, size_t *pos, struct tok *t)
{
    size_t i = *pos;
    memset(t, 0, sizeof(*t));
    t->p = doc + i;
    if (i >= n) {
        t->kind = TOK_EOF;
        return 0;
    }
    if (doc[i] != '<') {
        const char *lt = memchr(doc + i, '<', n - i);
        size_t end = lt ? (size_t)(lt - doc) : n;
        t->kind = TOK_TEXT;
        t->body = doc + i;
        t->body_len = end - i;
        t->len = end - i;
        *pos = end;
        return 0;
    }
    const char *rest = doc + i;
    size_t left = n - i;
    const char *stop;
    if (left >= 4 && memcmp(rest, "<!--", 4) == 0) {
        if (!(stop = find(rest + 4, left - 4, "-->")))
            return -EINVAL;
        t->kind = TOK_SKIP;
        t->len = (size_t)(stop - rest) + 3;
    } else if (left >= 9 && memcmp(rest, "<![CDATA[", 9) == 0) {
        if (!(stop = find(rest + 9, left - 9, "]]>")))
            return -EINVAL;
        t->kind = TOK_CDATA;
        t->body = rest + 9;
        t->body_len = (size_t)(stop - t->body);
        t->len = (size_t)(stop - rest) + 3;
    } else if (left >= 2 && rest[1] == '?') {
        if (!(stop = find(rest + 2, left - 2, "?>")))
            return -EINVAL;
        t->kind = TOK_SKIP;
        t->len = (size_t)(stop - rest) + 2;
    } else if (left >= 2 && rest[1] == '!') {
        return -EINVAL; /* DOCTYPE and other declarations: not in listings */
    } else {
        size_t j = 1;
        bool end_tag = left > 1 && rest[1] == '/';
        if (end_tag)
            j = 2;
        size_t name_at = j;
        while (j < left && !ends_name(rest[j]))
            j++;
        if (j == name_at || j >= left)
            return -EINVAL;
        t->name = rest + name_at;
        t->name_len = j - name_at;
        if (end_tag) {
            while (j < left && is_space(rest[j]))
                j++;
            if (j >= left || rest[j] != '>')
                return -EINVAL;
            t->kind = TOK_END;
            t->len = j + 1;
        } else {
            /* Attributes: skipped, but a quoted value may hold '>' or '/'. */
            char quote = 0;
            for (; j < left; j++) {
                char c = rest[j];
                if (quote) {
                    if (c == quote)
                        quote = 0;
                } else if (c == '"' || c == '\'') {
                    quote = c;
                } else if (c == '<') {
                    return -EINVAL;
                } else if (c == '>') {
                    break;
                }
            }
            if (j >= left)
                return -EINVAL;
            t->kind = rest[j - 1] == '/' ? TOK_EMPTY : TOK_START;
            t->len = j + 1;
        }
    }
    *pos = i + t->len;
    return 0;
}

static bool name_is(const struct tok *t, const char *name, size_t name_len)
{
    return t->name_len == name_len && memcmp(t->name, name, name_len) == 0;
}

/* Appends bytes to out when it is not NULL; counts them always. */
struct sink {
    char *out;
    size_t size; /* room, including the NUL */
    size_t len;
    bool full;
};

static void put(struct sink *s, const char *p, size_t n)
{
    if (s->out && !s->full) {
        if (s->size == 0 || n > s->size - 1 - s->len)
            s->full = true;
        else
            memcpy(s->out + s->len, p, n);
    }
    s->len += n;
}

static size_t utf8_encode(uint32_t cp, char *b)
{
    if (cp < 0x80) {
        b[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The entity starting at p[0] == '&' within n bytes: its decoded bytes into s; the entity's
 * length in *used. 0 or -EINVAL. */
static int decode_entity(const char *p, size_t n, struct sink *s, size_t *used)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}};
    /* The longest valid one is &#x10FFFF; with leading zeros allowed, so look for ';' within a
     * bound and refuse longer references (leading zeros beyond it are not worth honouring). */
    size_t lim = n < 16 ? n : 16;
    const char *semi = memchr(p, ';', lim);
    if (!semi)
        return -EINVAL;
    size_t body = (size_t)(semi - p) - 1; /* between '&' and ';' */
    const char *b = p + 1;
    *used = body + 2;
    if (body >= 2 && b[0] == '#') {
        bool hex = b[1] == 'x';
        size_t k = hex ? 2 : 1;
        if (k >= body)
            return -EINVAL;
        uint32_t cp = 0;
        for (; k < body; k++) {
            char c = b[k];
            uint32_t d;
            if (c >= '0' && c <= '9')
                d = (uint32_t)(c - '0');
            else if (hex && c >= 'a' && c <= 'f')
                d = (uint32_t)(c - 'a' + 10);
            else if (hex && c >= 'A' && c <= 'F')
                d = (uint32_t)(c - 'A' + 10);
            else
                return -EINVAL;
            cp = cp * (hex ? 16 : 10) + d;
            if (cp > 0x10FFFF)
                return -EINVAL;
        }
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
            return -EINVAL;
        char enc[4];
        put(s, enc, utf8_encode(cp, enc));
        return 0;
    }
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        if (strlen(named[i].name) == body && memcmp(b, named[i].name, body) == 0) {
            put(s, &named[i].c, 1);
            return 0;
        }
    }
    return -EINVAL;
}

/* Text with entities decoded into s. 0 or -EINVAL. */
static int decode_text(const char *p, size_t n, struct sink *s)
{
    size_t i = 0;
    while (i < n) {
        const char *amp = memchr(p + i, '&', n - i);
        size_t plain = amp ? (size_t)(amp - (p + i)) : n - i;
        put(s, p + i, plain);
        i += plain;
        if (i < n) {
            size_t used;
            int rc = decode_entity(p + i, n - i, s, &used);
            if (rc < 0)
                return rc;
            i += used;
        }
    }
    return 0;
}

/* The whole document is checked once: constructs terminated, end tags balanced, entities
 * known. Only the depth is counted; an end tag's name is checked where finding relies on it. */
static int check_doc(const char *doc, size_t n)
{
    size_t pos = 0, depth = 0;
    struct tok t;
    for (;;) {
        int rc = next_tok(doc, n, &pos, &t);
        if (rc < 0)
            return rc;
        switch (t.kind) {
        case TOK_EOF:
            return depth == 0 ? 0 : -EINVAL;
        case TOK_TEXT: {
            struct sink count = {0};
            if ((rc = decode_text(t.body, t.body_len, &count)) < 0)
                return rc;
            break;
        }
        case TOK_START:
            depth++;
            break;
        case TOK_END:
            if (depth == 0)
                return -EINVAL;
            depth--;
            break;
        default:
            break;
        }
    }
}

/* With *pos just past the start tag of an element named name, the element's content and *pos
 * past its end tag. 0 or -EINVAL (the matching end tag has another name, or none exists). */
static int element_content(const char *doc, size_t n, size_t *pos, const char *name,
                           size_t name_len, struct xml_span *content)
{
    size_t depth = 1;
    content->p = doc + *pos;
    struct tok t;
    for (;;) {
        int rc = next_tok(doc, n, pos, &t);
        if (rc < 0)
            return rc;
        if (t.kind == TOK_EOF)
            return -EINVAL;
        if (t.kind == TOK_START) {
            depth++;
        } else if (t.kind == TOK_END && --depth == 0) {
            if (!name_is(&t, name, name_len))
                return -EINVAL;
            content->len = (size_t)(t.p - content->p);
            return 0;
        }
    }
}

/* The next element named name from *pos in document order: its content and *pos past it.
 * 1 found, 0 none, -EINVAL. */
static int next_element(const char *doc, size_t n, size_t *pos, const char *name,
                        struct xml_span *content)
{
    size_t name_len = strlen(name);
    struct tok t;
    for (;;) {
        int rc = next_tok(doc, n, pos, &t);
        if (rc < 0)
            return rc;
        if (t.kind == TOK_EOF)
            return 0;
        if ((t.kind == TOK_START || t.kind == TOK_EMPTY) && name_is(&t, name, name_len)) {
            if (t.kind == TOK_EMPTY) {
                content->p = doc + *pos;
                content->len = 0;
                return 1;
            }
            rc = element_content(doc, n, pos, name, name_len, content);
            return rc < 0 ? rc : 1;
        }
    }
}

int xml_text(const char *doc, size_t doc_len, const char *name, char *out, size_t size,
             size_t *len)
{
    int rc = check_doc(doc, doc_len);
    if (rc < 0)
        return rc;
    size_t pos = 0;
    struct xml_span c;
    rc = next_element(doc, doc_len, &pos, name, &c);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return -ENOENT;
    struct sink s = {.out = out, .size = size, .len = 0, .full = out == NULL || size == 0};
    size_t cpos = 0;
    struct tok t;
    for (;;) {
        if ((rc = next_tok(c.p, c.len, &cpos, &t)) < 0)
            return rc;
        if (t.kind == TOK_EOF)
            break;
        if (t.kind == TOK_TEXT) {
            if ((rc = decode_text(t.body, t.body_len, &s)) < 0)
                return rc;
        } else if (t.kind == TOK_CDATA) {
            put(&s, t.body, t.body_len);
        }
        /* tags of child elements, comments and instructions: dropped */
    }
    if (s.full)
        return -E2BIG;
    out[s.len] = '\0';
    if (len)
        *len = s.len;
    return 0;
}

int xml_each(const char *doc, size_t doc_len, const char *name, xml_each_cb cb, void *arg)
{
    int rc = check_doc(doc, doc_len);
    if (rc < 0)
        return rc;
    size_t pos = 0;
    struct xml_span c;
    while ((rc = next_element(doc, doc_len, &pos, name, &c)) == 1) {
        int r = cb(&c, arg);
        if (r != 0)
            return r;
    }
    return rc;
}
