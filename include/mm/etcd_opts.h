/* etcd_opts.h - the etcd and cluster options every program takes, parsed one way: the flags
 * --etcd-endpoints (or --endpoints), --cluster, --cacert, --cert, --key, --user and
 * --password-file, the environment variables that stand in for them (MM_ETCD_ENDPOINTS,
 * MM_CLUSTER, MM_ETCD_USER; an empty one counts as unset) and the password (the first line of
 * --password-file, else MM_ETCD_PASSWORD).
 *
 * Owns nothing but the password buffer inside struct etcd_opts: the other strings point into
 * argv or the environment. No global state; reads the environment, and the password file. */
#ifndef MM_ETCD_OPTS_H
#define MM_ETCD_OPTS_H

#include <stddef.h>

#include "mm/error.h"
#include "mm/etcd.h"
#include "mm/opts.h"

#define ETCD_OPTS_DEFAULT_ENDPOINTS "http://127.0.0.1:2379"
#define ETCD_OPTS_DEFAULT_CLUSTER "local"

/* The lines of a server's --help for these options, to paste into its usage text. */
#define ETCD_OPTS_USAGE                                                                            \
    "  --etcd-endpoints URLS        etcd, comma-separated (env MM_ETCD_ENDPOINTS;\n"               \
    "                               default " ETCD_OPTS_DEFAULT_ENDPOINTS ")\n"                    \
    "  --cluster NAME               key prefix /modelmesh/NAME/ (env MM_CLUSTER; "                 \
    "default " ETCD_OPTS_DEFAULT_CLUSTER ")\n"                                                     \
    "  --cacert FILE, --cert FILE, --key FILE   TLS to etcd\n"                                     \
    "  --user NAME                  etcd user (env MM_ETCD_USER); password from\n"                 \
    "                               --password-file FILE or env MM_ETCD_PASSWORD\n"

struct etcd_opts {
    struct etcd_config config; /* endpoints, TLS files, user; password by etcd_opts_password() */
    const char *cluster;       /* the key prefix's name: /modelmesh/<cluster>/ */
    const char *password_file; /* --password-file, NULL when not given */
    char password_buf[OPTS_PASSWORD_MAX + 1]; /* the password read from password_file */
};

/* Clears o and sets the defaults, from the environment where it has them. */
void etcd_opts_init(struct etcd_opts *o);

/* One command-line option: name is its name (name_len bytes: "--cluster" of "--cluster=c1"),
 * value its value (NULL when there is none). 1 when it is one of these options and is stored,
 * 0 when it is not one of them (nothing changes), -EINVAL when it is one without a value (err:
 * "--cluster needs a value"). */
int etcd_opts_flag(struct etcd_opts *o, const char *name, size_t name_len, const char *value,
                   struct mm_error *err);

/* Sets config.password: the first line of password_file (into password_buf), else
 * MM_ETCD_PASSWORD, else NULL. 0, or -errno with err naming the flag, the file and the
 * problem (opts_password_file()). */
int etcd_opts_password(struct etcd_opts *o, struct mm_error *err);

#endif
