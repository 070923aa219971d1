/* xml.h - just enough XML to read object-store listings and error bodies (S3's ListObjectsV2
 * and Error, Azure's EnumerationResults and Error). Not a parser of XML in general: it finds
 * elements by name in a well-formed document and decodes their text; no DTDs, no namespaces
 * (a prefix is part of the name), no validation beyond what finding needs. Bytes come from
 * the network: every input is bounded by its length, nothing is assumed NUL-terminated, and
 * a malformed document gives -EINVAL, never a read past the end.
 *
 * Owns nothing: spans point into the caller's document. Threading: none (pure functions). */
#ifndef MM_XML_H
#define MM_XML_H

#include <stddef.h>

/* A part of a document: the content of one element (between its start and end tags). */
struct xml_span {
    const char *p;
    size_t len;
};

/* The text of the first element named name (exact, case-sensitive) anywhere in doc, at any
 * depth, decoded (the five named entities, &#N; and &#xH; as UTF-8, CDATA sections; child
 * elements' tags dropped, their text kept) into out as a NUL-terminated string. An empty
 * element (<a/> or <a></a>) gives "". 0 and the decoded length (excluding the NUL) in *len
 * (may be NULL); -ENOENT (no such element), -E2BIG (the text needs more than size - 1 bytes:
 * out holds nothing useful), -EINVAL (malformed: an unterminated tag, comment or entity; an
 * unknown entity; a character reference that is not a Unicode scalar value or is 0). */
int xml_text(const char *doc, size_t doc_len, const char *name, char *out, size_t size,
             size_t *len);

/* Call cb for each element named name, in document order, with its content (which may itself
 * hold elements named name: they are not visited separately). Stops at the first cb returning
 * non-zero and returns that. 0 when all were visited (none is fine), -EINVAL (malformed). */
typedef int (*xml_each_cb)(const struct xml_span *content, void *arg);
int xml_each(const char *doc, size_t doc_len, const char *name, xml_each_cb cb, void *arg);

#endif
