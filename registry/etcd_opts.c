/* etcd_opts.c - the etcd and cluster options of every program (see etcd_opts.h). */
#include "mm/etcd_opts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

void etcd_opts_init(struct etcd_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->config.endpoints = env_or("MM_ETCD_ENDPOINTS", ETCD_OPTS_DEFAULT_ENDPOINTS);
    o->config.user = env_or("MM_ETCD_USER", NULL);
    o->cluster = env_or("MM_CLUSTER", ETCD_OPTS_DEFAULT_CLUSTER);
}

int etcd_opts_flag(struct etcd_opts *o, const char *name, size_t name_len, const char *value,
                   struct mm_error *err)
{
    const struct {
        const char *flag;
        const char **field;
    } flags[] = {
        {"--etcd-endpoints", &o->config.endpoints},
        {"--endpoints", &o->config.endpoints},
        {"--cluster", &o->cluster},
        {"--cacert", &o->config.ca_file},
        {"--cert", &o->config.cert_file},
        {"--key", &o->config.key_file},
        {"--user", &o->config.user},
        {"--password-file", &o->password_file},
    };
    for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
        if (strlen(flags[k].flag) != name_len || memcmp(name, flags[k].flag, name_len) != 0)
            continue;
        if (!value)
            return mm_error_set(err, -EINVAL, "%s needs a value", flags[k].flag);
        *flags[k].field = value;
        return 1;
    }
    return 0;
}

int etcd_opts_password(struct etcd_opts *o, struct mm_error *err)
{
    if (!o->password_file) {
        o->config.password = env_or("MM_ETCD_PASSWORD", NULL);
        return 0;
    }
    int rc = opts_password_file("--password-file", o->password_file, o->password_buf,
                                sizeof(o->password_buf), err);
    if (rc < 0)
        return rc;
    o->config.password = o->password_buf;
    return 0;
}
