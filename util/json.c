/* json.c - printing cJSON documents (see json.h). */
#include "mm/json.h"

#include <stdlib.h>
#include <string.h>

/* cJSON indents with tabs and puts one after each ':'. Its strings never hold a raw tab (it
 * escapes them), so every tab is layout: two spaces at the start of a line, else one. */
static char *reindent(const char *text)
{
    size_t tabs = 0;
    for (const char *p = text; *p; p++)
        tabs += *p == '\t';
    char *out = malloc(strlen(text) + tabs + 1);
    if (!out)
        return NULL;
    char *o = out;
    bool line_start = true;
    for (const char *p = text; *p; p++) {
        if (*p == '\t') {
            *o++ = ' ';
            if (line_start)
                *o++ = ' ';
        } else {
            *o++ = *p;
            line_start = *p == '\n';
        }
    }
    *o = '\0';
    return out;
}

char *json_print(const cJSON *doc, bool pretty)
{
    if (!pretty)
        return cJSON_PrintUnformatted(doc); /* cJSON allocates with malloc: no hooks are set */
    char *tabbed = cJSON_Print(doc);
    char *out = tabbed ? reindent(tabbed) : NULL;
    cJSON_free(tabbed);
    return out;
}
