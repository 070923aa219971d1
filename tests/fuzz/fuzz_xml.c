/* fuzz_xml.c - fuzz target: the listing reader (xml.c) on arbitrary bytes, and on documents
 * assembled from XML fragments (tags, entities, CDATA, comments, quotes) chosen by the input
 * bytes, so that the deterministic driver's random bytes reach deep into the tokenizer too.
 * Built as a libFuzzer target with clang (-Dfuzz=true), and linked with fuzz_driver.c into a
 * unit test everywhere else. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fragments.h"
#include "mm/xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fragments[] = {
    "<a>", "</a>", "<a/>", "<b>", "</b>", "<Key>", "</Key>", "<a x=\"1>/\">", "<a y='\"'>",
    "&amp;", "&lt;", "&#65;", "&#x20AC;", "&#x10FFFF;", "&#0;", "&#xD800;", "&", ";", "#",
    "<![CDATA[", "]]>", "<!--", "-->", "<?x", "?>", "<!DOCTYPE", "<", ">", "/", "\"", "'",
    "text", " ", "\n", "</a >", "<a >", "&quot;", "&bogus;", "<s:a>", "</s:a>", "=",
};

struct walk {
    const char *doc;
    size_t len;
    int visits;
};

static int visit(const struct xml_span *c, void *arg)
{
    struct walk *w = arg;
    /* The span lies within the document. */
    if (c->p < w->doc || c->len > w->len || (size_t)(c->p - w->doc) > w->len - c->len)
        __builtin_trap();
    char out[32];
    int rc = xml_text(c->p, c->len, "b", out, sizeof(out), NULL);
    if (rc != 0 && rc != -ENOENT && rc != -E2BIG && rc != -EINVAL)
        __builtin_trap();
    return ++w->visits == 50 ? 1 : 0;
}

static void run(const char *doc, size_t len)
{
    static const char *const names[] = {"a", "b", "Key", "s:a"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char out[16];
        size_t n = 999;
        int rc = xml_text(doc, len, names[i], out, sizeof(out), &n);
        if (rc == 0 && (n >= sizeof(out) || out[n] != '\0'))
            __builtin_trap();
        if (rc != 0 && rc != -ENOENT && rc != -E2BIG && rc != -EINVAL)
            __builtin_trap();
        struct walk w = {doc, len, 0};
        rc = xml_each(doc, len, names[i], visit, &w);
        if (rc != 0 && rc != 1 && rc != -EINVAL)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fragments_run(data, size, fragments, sizeof(fragments) / sizeof(fragments[0]), run);
    return 0;
}
