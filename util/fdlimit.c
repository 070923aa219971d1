/* fdlimit.c - the open-file limit (see fdlimit.h). */
#include "mm/fdlimit.h"

#include <errno.h>
#include <sys/resource.h>

static uint64_t as_u64(rlim_t v)
{
    return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

uint64_t fdlimit_current(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return UINT64_MAX;
    return as_u64(rl.rlim_cur);
}

int fdlimit_raise(uint64_t *limit, struct mm_error *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        int code = -errno;
        return mm_error_set(err, code, "open-file limit: getrlimit: %s", mm_strerror(code));
    }
    if (limit)
        *limit = as_u64(rl.rlim_cur);
    if (rl.rlim_cur == rl.rlim_max)
        return 0;
    rlim_t soft = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        int code = -errno;
        return mm_error_set(err, code, "open-file limit: cannot raise %llu to %llu: %s",
                            (unsigned long long)soft, (unsigned long long)rl.rlim_max,
                            mm_strerror(code));
    }
    if (limit)
        *limit = as_u64(rl.rlim_cur);
    return 0;
}
