/* test_etcd_opts.c - the etcd options every program takes: defaults and environment, each flag
 * (with and without a value, "--flag=value" names), flags that are not ours, and the password
 * from the file or MM_ETCD_PASSWORD. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "mm/etcd_opts.h"

static struct etcd_opts o;
static struct mm_error err;

static void clear_env(void)
{
    unsetenv("MM_ETCD_ENDPOINTS");
    unsetenv("MM_CLUSTER");
    unsetenv("MM_ETCD_USER");
    unsetenv("MM_ETCD_PASSWORD");
}

/* One flag as the programs pass it: its name (up to '=') and its value. */
static int flag(const char *arg, const char *value)
{
    const char *eq = strchr(arg, '=');
    return etcd_opts_flag(&o, arg, eq ? (size_t)(eq - arg) : strlen(arg), eq ? eq + 1 : value,
                          &err);
}

static void test_defaults(void)
{
    clear_env();
    etcd_opts_init(&o);
    CHECK_STR(o.config.endpoints, "http://127.0.0.1:2379");
    CHECK_STR(o.cluster, "local");
    CHECK(o.config.user == NULL && o.password_file == NULL && o.config.ca_file == NULL);

    setenv("MM_ETCD_ENDPOINTS", "http://e1:2379,http://e2:2379", 1);
    setenv("MM_CLUSTER", "c1", 1);
    setenv("MM_ETCD_USER", "u1", 1);
    etcd_opts_init(&o);
    CHECK_STR(o.config.endpoints, "http://e1:2379,http://e2:2379");
    CHECK_STR(o.cluster, "c1");
    CHECK_STR(o.config.user, "u1");

    /* An empty variable is an unset one. */
    setenv("MM_ETCD_ENDPOINTS", "", 1);
    setenv("MM_CLUSTER", "", 1);
    setenv("MM_ETCD_USER", "", 1);
    etcd_opts_init(&o);
    CHECK_STR(o.config.endpoints, "http://127.0.0.1:2379");
    CHECK_STR(o.cluster, "local");
    CHECK(o.config.user == NULL);
    clear_env();
}

static void test_flags(void)
{
    etcd_opts_init(&o);
    CHECK_INT(flag("--etcd-endpoints", "http://a:1"), 1);
    CHECK_STR(o.config.endpoints, "http://a:1");
    CHECK_INT(flag("--endpoints=http://b:2", NULL), 1);
    CHECK_STR(o.config.endpoints, "http://b:2");
    CHECK_INT(flag("--cluster", "c2"), 1);
    CHECK_STR(o.cluster, "c2");
    CHECK_INT(flag("--cacert", "ca.pem"), 1);
    CHECK_STR(o.config.ca_file, "ca.pem");
    CHECK_INT(flag("--cert", "c.pem"), 1);
    CHECK_STR(o.config.cert_file, "c.pem");
    CHECK_INT(flag("--key", "k.pem"), 1);
    CHECK_STR(o.config.key_file, "k.pem");
    CHECK_INT(flag("--user", "root"), 1);
    CHECK_STR(o.config.user, "root");
    CHECK_INT(flag("--password-file=/p", NULL), 1);
    CHECK_STR(o.password_file, "/p");

    /* Not ours: nothing changes. Prefixes and longer names are other flags. */
    CHECK_INT(flag("--listen", "x"), 0);
    CHECK_INT(flag("--password", "x"), 0);
    CHECK_INT(flag("--clusters", "x"), 0);
    CHECK_INT(flag("--key-file", "x"), 0);
    CHECK_INT(flag("--cluster-x=y", NULL), 0);
    CHECK_STR(o.cluster, "c2");
    CHECK_STR(o.config.key_file, "k.pem");

    /* Ours without a value. */
    CHECK_INT(flag("--cluster", NULL), -EINVAL);
    CHECK_STR(err.msg, "--cluster needs a value");
    CHECK_INT(flag("--endpoints", NULL), -EINVAL);
    CHECK_STR(err.msg, "--endpoints needs a value");
    CHECK_STR(o.cluster, "c2");
    /* "--user=" is an empty value, not a missing one. */
    CHECK_INT(flag("--user=", NULL), 1);
    CHECK_STR(o.config.user, "");
}

static void test_password(void)
{
    clear_env();
    etcd_opts_init(&o);
    CHECK_INT(etcd_opts_password(&o, &err), 0);
    CHECK(o.config.password == NULL);
    setenv("MM_ETCD_PASSWORD", "from-env", 1);
    CHECK_INT(etcd_opts_password(&o, &err), 0);
    CHECK_STR(o.config.password, "from-env");

    /* The file wins over the environment: its first line, without the line end. */
    char path[] = "/tmp/test_etcd_opts_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_INT((int)write(fd, "s3cret\r\nnext\n", 13), 13);
    close(fd);
    o.password_file = path;
    CHECK_INT(etcd_opts_password(&o, &err), 0);
    CHECK_STR(o.config.password, "s3cret");
    CHECK(o.config.password == o.password_buf);

    /* A file that cannot be read is an error naming the flag and the file, whatever the
     * environment says. */
    unlink(path);
    CHECK_INT(etcd_opts_password(&o, &err), -ENOENT);
    CHECK(strstr(err.msg, "--password-file") && strstr(err.msg, path));
    clear_env();
}

int main(void)
{
    test_defaults();
    test_flags();
    test_password();
    return CHECK_DONE();
}
