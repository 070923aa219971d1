/* fuzz_yaml.c - fuzz target: yamljson on arbitrary bytes, and on streams assembled from YAML
 * fragments (indentation, flow and block collections, anchors and aliases, tags, quotes,
 * document markers) chosen by the input bytes, so that the deterministic driver's random bytes
 * reach the builder too. Checks: success or one of the documented codes with a message; every
 * root present and printable; every line found within the input. Small bounds make the bound
 * paths (depth, nodes, bytes, keys, anchors, documents) reachable. Built as a libFuzzer target
 * with clang (-Dfuzz=true), and linked with fuzz_driver.c into a unit test everywhere else. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fragments.h"
#include "mm/json.h"
#include "mm/yamljson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fragments[] = {
    "a: ",     "b: ",     "kind: ",
    "\n",      "\n  ",    "\n    ",
    "- ",      "[",       "]",
    "{",       "}",       ", ",
    ": ",      "&x ",     "*x",
    "&y ",     "*y",      "!!str ",
    "!!int ",  "!!bool ", "!!null ",
    "!local ", "\"",      "'",
    "\\0",     "\\u00e9", "---\n",
    "...\n",   "# c\n",   "? ",
    "|\n  ",   ">\n  ",   "<<: ",
    "~",       "true",    "0x1F",
    "1.5e3",   ".inf",    "9007199254740993",
    "text",    " ",       "\t",
    "a",       "1",
};

static void run(const char *text, size_t len)
{
    struct yamljson_limits lim = {.max_depth = 8,
                                  .max_nodes = 200,
                                  .max_scalar_bytes = 4096,
                                  .max_keys = 16,
                                  .max_anchors = 8,
                                  .max_documents = 8};
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n' || text[i] == '\r';
    for (int pass = 0; pass < 2; pass++) {
        struct yamljson *y = (struct yamljson *)1;
        struct mm_error err = {0};
        int rc = yamljson_parse(text, len, pass ? &lim : NULL, &y, &err);
        if (rc < 0) {
            if ((rc != -EINVAL && rc != -E2BIG && rc != -ENOMEM) || y || !err.msg[0] ||
                err.code != rc)
                __builtin_trap();
            continue;
        }
        for (size_t i = 0; i < yamljson_count(y); i++) {
            const cJSON *root = yamljson_root(y, i);
            if (!root || yamljson_doc_line(y, i) > lines || yamljson_line(y, root) > lines)
                __builtin_trap();
            char *s = json_print(root, false);
            free(s);
            static const char *const paths[] = {"",       "a",        "a.b",   "a[0]",
                                                "a[1].b", "b['a.b']", "kind[", "[\"x"};
            for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++)
                if (yamljson_path_line(y, i, paths[k]) > lines)
                    __builtin_trap();
        }
        yamljson_free(y);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fragments_run(data, size, fragments, sizeof(fragments) / sizeof(fragments[0]), run);
    return 0;
}
