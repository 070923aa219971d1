/* json.h - printing cJSON documents the way every mmctl answer looks: indented by two spaces,
 * or compact. */
#ifndef MM_JSON_H
#define MM_JSON_H

#include <stdbool.h>

#include <cjson/cJSON.h>

/* doc as text (malloc'd, NUL-terminated; the caller frees), or NULL without memory. */
char *json_print(const cJSON *doc, bool pretty);

#endif
