/* fdlimit.h - the process's open-file limit (RLIMIT_NOFILE). Every connection a server accepts
 * is a descriptor: programs raise the soft limit to the hard one at start (the soft default,
 * often 1024, is far below what the system allows), and servers size their connection caps
 * from what is then in force. */
#ifndef MM_FDLIMIT_H
#define MM_FDLIMIT_H

#include <stdint.h>

#include "mm/error.h"

/* Raise the soft open-file limit to the hard limit. *limit (may be NULL) gets the soft limit
 * in force afterwards. 0, or -errno with err naming the limits (the soft limit is then
 * unchanged, and still in *limit). Process-wide: call from main, before threads start. */
int fdlimit_raise(uint64_t *limit, struct mm_error *err);
/* The soft open-file limit in force (UINT64_MAX if unlimited or unknown). */
uint64_t fdlimit_current(void);

#endif
