/* xml.c - element text of object-store listings (see xml.h). Placeholder until written. */
#include "mm/xml.h"

#include <errno.h>

int xml_text(const char *doc, size_t doc_len, const char *name, char *out, size_t size,
             size_t *len)
{
    (void)doc, (void)doc_len, (void)name, (void)out, (void)size, (void)len;
    return -ENOSYS;
}

int xml_each(const char *doc, size_t doc_len, const char *name, xml_each_cb cb, void *arg)
{
    (void)doc, (void)doc_len, (void)name, (void)cb, (void)arg;
    return -ENOSYS;
}
