/* fragments.h - the text targets' two passes over one input: the bytes as they are, and the
 * bytes as a choice of fragments of the format (each byte picks one), so that random bytes
 * also make documents that reach deep into a parser. */
#ifndef MM_FUZZ_FRAGMENTS_H
#define MM_FUZZ_FRAGMENTS_H

#include <stddef.h>
#include <stdint.h>

/* run(doc, len) on data[0, size), then on the document of fragments data picks
 * (fragments[data[i] % n_fragments], joined); each in an exact-size heap copy, so that a read
 * past the end is caught. A pass is skipped without memory. */
void fragments_run(const uint8_t *data, size_t size, const char *const *fragments,
                   size_t n_fragments, void (*run)(const char *doc, size_t len));

#endif
