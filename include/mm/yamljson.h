/* yamljson.h - YAML (and JSON, which is YAML) read with libyaml into cJSON documents, every node
 * remembering its line, so that a manifest's errors name the document, the field and the line.
 *
 * A stream may hold several documents ("---"). Scalars are resolved as YAML 1.2's core schema
 * does: null / ~ / empty, true / false, decimal, 0x and 0o integers and decimal floats become
 * JSON null, booleans and numbers; quoted scalars and everything else are strings; the tags
 * !!str, !!int, !!float, !!bool and !!null force a type. Refused (an error naming the document
 * and line): mapping keys that are not scalars, a key twice in one mapping, merge keys (<<),
 * .inf / .nan and integers JSON cannot hold exactly (beyond 2^53), scalars holding NUL.
 *
 * Everything is bounded (struct yamljson_limits): the input bytes, the nesting depth, the nodes
 * built and the scalar bytes they hold in the whole stream (aliases count as the copies they
 * make, so a "billion laughs" file fails at the bound after bounded work), the keys of one
 * mapping, the anchors of one document and the documents. Aliases expand to copies of the node
 * anchored (recursive ones cannot occur: an anchor is known once its node is complete).
 *
 * Pure: no I/O, no global state; a parsed stream is immutable and may be read from any thread. */
#ifndef MM_YAMLJSON_H
#define MM_YAMLJSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "mm/error.h"

#define YAMLJSON_MAX_BYTES (4u << 20) /* input: 4 MiB */
#define YAMLJSON_MAX_DEPTH 64
#define YAMLJSON_MAX_NODES 200000             /* in the whole stream, alias copies included */
#define YAMLJSON_MAX_SCALAR_BYTES (16u << 20) /* scalar and key bytes built, copies included */
#define YAMLJSON_MAX_KEYS 10000               /* keys in one mapping */
#define YAMLJSON_MAX_ANCHORS 1000             /* anchors in one document */
#define YAMLJSON_MAX_DOCUMENTS 1000

/* 0 in a field = its default above. */
struct yamljson_limits {
    size_t max_bytes;
    unsigned max_depth;
    size_t max_nodes;
    size_t max_scalar_bytes;
    size_t max_keys;
    size_t max_anchors;
    size_t max_documents;
};

struct yamljson;

/* Parse text[0..len) (need not be NUL-terminated). lim NULL = the defaults. 0 and *out (free it
 * with yamljson_free), or:
 *   -EINVAL  not YAML, or YAML that is refused above: err says "document N, line L[, column C]:
 *            what" (lines and columns from 1; lines count from the start of the stream)
 *   -E2BIG   a bound exceeded: err names the bound and where it was reached
 *   -ENOMEM
 * An empty stream parses to zero documents; an empty document ("---" alone) to a JSON null. */
int yamljson_parse(const char *text, size_t len, const struct yamljson_limits *lim,
                   struct yamljson **out, struct mm_error *err);
void yamljson_free(struct yamljson *y);

size_t yamljson_count(const struct yamljson *y);
/* Document i's root (i < count), owned by y. */
const cJSON *yamljson_root(const struct yamljson *y, size_t i);
/* The line document i starts on (its "---", else its first node). */
unsigned yamljson_doc_line(const struct yamljson *y, size_t i);
/* The line of a node of any document: for a mapping's value, the line of its key; for an
 * element of a sequence and for a root, the node's first line; for a node inside an alias's
 * copy, 0 (unknown: use yamljson_path_line, which falls back to the alias). */
unsigned yamljson_line(const struct yamljson *y, const cJSON *node);
/* The line of the field at path in document i: "spec.predictor.model.storage", with [N] for a
 * sequence element ("spec.containers[0].name") and ["key"] for keys holding dots
 * (metadata.annotations["serving.kserve.io/deploymentMode"]). Where the path leaves the
 * document (a field that is missing), the line of the deepest node it reached; "" = the root. */
unsigned yamljson_path_line(const struct yamljson *y, size_t i, const char *path);

/* doc as a YAML document in block style (as kubectl -o yaml prints: keys in the object's order,
 * strings quoted where plain text would read back as another type or not at all), malloc'd
 * and NUL-terminated (the caller frees), or NULL without memory or for a doc nested deeper than
 * YAMLJSON_MAX_DEPTH. yamljson_parse reads it back to an equal document. */
char *yamljson_print(const cJSON *doc);

#endif
