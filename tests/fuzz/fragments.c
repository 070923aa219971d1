/* fragments.c - see fragments.h. */
#include "fragments.h"

#include <stdlib.h>
#include <string.h>

/* run on an exact-size copy of doc[0, len) (one byte for an empty one, never read). */
static void run_exact(const char *doc, size_t len, void (*run)(const char *, size_t))
{
    char *exact = calloc(len ? len : 1, 1);
    if (!exact)
        return;
    if (len)
        memcpy(exact, doc, len);
    run(exact, len);
    free(exact);
}

void fragments_run(const uint8_t *data, size_t size, const char *const *fragments,
                   size_t n_fragments, void (*run)(const char *doc, size_t len))
{
    run_exact((const char *)data, size, run);
    size_t longest = 0;
    for (size_t k = 0; k < n_fragments; k++)
        if (strlen(fragments[k]) > longest)
            longest = strlen(fragments[k]);
    char *doc = malloc(size * longest + 1);
    if (!doc)
        return;
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        const char *f = fragments[data[i] % n_fragments];
        size_t fl = strlen(f);
        memcpy(doc + n, f, fl);
        n += fl;
    }
    run_exact(doc, n, run);
    free(doc);
}
