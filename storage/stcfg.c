/* stcfg.c - which storage a model is pulled from (see stcfg.h). Placeholder until written. */
#include "mm/stcfg.h"

#include <errno.h>
#include <string.h>

int stcfg_resolve(const char *key, const char *params, stcfg_lookup_fn lookup, void *arg,
                  struct stcfg *out, struct mm_error *err)
{
    (void)key, (void)params, (void)lookup, (void)arg, (void)err;
    memset(out, 0, sizeof(*out));
    return 0;
}

void stcfg_clear(struct stcfg *c)
{
    (void)c;
}

int stcfg_parse_uri(const char *uri, char **params, char **path, struct mm_error *err)
{
    (void)uri, (void)params, (void)path;
    return mm_error_set(err, -ENOSYS, "storage URIs are not parsed yet");
}
