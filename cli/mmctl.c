/* mmctl.c - the command-line tool. Verbs so far: registry get | dump | put (etcd), and the gRPC
 * verbs of serving.c: infer, metadata, runtime status | load | unload | size.
 * Keys are given relative to the cluster prefix (models/m1) or absolute
 * (/modelmesh/c/models/m1). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/json.h"
#include "mm/keys.h"
#include "mm/opts.h"
#include "mm/records.h"
#include "serving.h"

#define MAX_TIMEOUT_MS 86400000 /* --timeout: a day */

struct options {
    struct etcd_config etcd;
    const char *cluster;
    const char *prefix; /* dump --prefix */
    struct serving_options serving;
    const char *args[4];
    int n_args;
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: mmctl [options] registry get KEY\n"
            "       mmctl [options] registry dump [--prefix P]\n"
            "       mmctl [options] registry put KEY JSON\n"
            "       mmctl [--address A] infer MODEL [--file REQUEST.json]\n"
            "       mmctl [--address A] metadata MODEL\n"
            "       mmctl [--address A] runtime status | load ID PATH [--type T] | unload ID |\n"
            "                                   size ID\n"
            "\n"
            "KEY and P are relative to /modelmesh/<cluster>/ (e.g. models/m1, copies/) or start\n"
            "with '/'. put validates instance, model, copy and vmodel records before writing.\n"
            "\n"
            "infer sends a KServe V2 request written as JSON (REST style with \"data\", or gRPC\n"
            "style with \"contents\"; from --file, or standard input) as ModelInfer for MODEL and\n"
            "prints the answer as JSON. metadata prints ModelMetadata. Both go to the mesh's\n"
            "inference port (default 127.0.0.1:8033) or any KServe V2 gRPC server. runtime calls\n"
            "one model runtime's SPI directly (default 127.0.0.1:8085).\n"
            "\n"
            "options:\n"
            "  --endpoints URLS   etcd endpoints, comma-separated (env MM_ETCD_ENDPOINTS;\n"
            "                     default http://127.0.0.1:2379)\n"
            "  --cluster NAME     cluster name (env MM_CLUSTER; default local)\n"
            "  --cacert FILE      CA bundle for https endpoints\n"
            "  --cert FILE --key FILE   client certificate and key\n"
            "  --user NAME --password PW   etcd authentication\n"
            "  --timeout MS       per-request deadline in ms (or with a unit: 90s, 2m), at most\n"
            "                     a day (default 5000; infer 30000, runtime load 120000)\n"
            "  --address HOST:PORT   gRPC server for infer, metadata, runtime (or unix:PATH)\n"
            "  --file FILE        infer: the request (default: standard input)\n"
            "  --type T           runtime load: the model type (e.g. sklearn, xgboost)\n"
            "  -h, --help\n");
}

/* Returns 0, or 2 for a usage error (message printed). */
static int parse(int argc, char **argv, struct options *o)
{
    const char *env = getenv("MM_ETCD_ENDPOINTS");
    o->etcd.endpoints = env && env[0] ? env : "http://127.0.0.1:2379";
    env = getenv("MM_CLUSTER");
    o->cluster = env && env[0] ? env : "local";
    static const struct {
        const char *name;
        size_t offset;
    } opts[] = {
        {"--endpoints", offsetof(struct options, etcd.endpoints)},
        {"--cluster", offsetof(struct options, cluster)},
        {"--cacert", offsetof(struct options, etcd.ca_file)},
        {"--cert", offsetof(struct options, etcd.cert_file)},
        {"--key", offsetof(struct options, etcd.key_file)},
        {"--user", offsetof(struct options, etcd.user)},
        {"--password", offsetof(struct options, etcd.password)},
        {"--prefix", offsetof(struct options, prefix)},
        {"--address", offsetof(struct options, serving.address)},
        {"--file", offsetof(struct options, serving.file)},
        {"--type", offsetof(struct options, serving.type)},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            if (o->n_args == 4) {
                fprintf(stderr, "mmctl: too many arguments\n");
                return 2;
            }
            o->args[o->n_args++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        bool known = false;
        if (nl == 9 && strncmp(a, "--timeout", 9) == 0) {
            uint64_t ms;
            struct mm_error err = {0};
            if (opts_ms("--timeout", val, 1, MAX_TIMEOUT_MS, &ms, &err) < 0) {
                fprintf(stderr, "mmctl: %s\n", err.msg);
                return 2;
            }
            o->etcd.request_timeout_ms = o->serving.timeout_ms = (unsigned)ms;
            known = true;
        }
        for (size_t k = 0; !known && k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strlen(opts[k].name) != nl || strncmp(a, opts[k].name, nl) != 0)
                continue;
            if (!val) {
                fprintf(stderr, "mmctl: %s needs a value\n", opts[k].name);
                return 2;
            }
            *(const char **)((char *)o + opts[k].offset) = val;
            known = true;
        }
        if (!known) {
            fprintf(stderr, "mmctl: unknown option %.*s\n", (int)nl, a);
            return 2;
        }
        if (!eq)
            i++;
    }
    return 0;
}

/* Absolute key for a user-given one; "" → the cluster prefix. */
static int full_key(const struct options *o, const char *k, char *out, size_t size)
{
    struct mm_error err = {0};
    char prefix[KEYS_MAX];
    if (keys_prefix(prefix, sizeof(prefix), o->cluster, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        return -EINVAL;
    }
    int n = k[0] == '/' ? snprintf(out, size, "%s", k) : snprintf(out, size, "%s%s", prefix, k);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "mmctl: key too long\n");
        return -ENAMETOOLONG;
    }
    return 0;
}

static void print_value(const struct options *o, const struct etcd_kv *kv)
{
    struct mm_error err = {0};
    if (record_validate_at(kv->key, o->cluster, kv->value, kv->value_len, &err) < 0)
        fprintf(stderr, "mmctl: warning: %s: %s\n", kv->key, err.msg);
    cJSON *j = cJSON_ParseWithLength(kv->value, kv->value_len);
    char *pretty = j ? json_print(j, true) : NULL;
    printf("%s\n", pretty ? pretty : kv->value);
    free(pretty);
    cJSON_Delete(j);
}

static int cmd_get(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 3) {
        usage(stderr);
        return 2;
    }
    char key[KEYS_MAX];
    if (full_key(o, o->args[2], key, sizeof(key)) < 0)
        return 2;
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    if (etcd_sync_range(c, &req, &r, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (r->op.n_kvs == 0) {
        fprintf(stderr, "mmctl: no record at %s\n", key);
        rc = 1;
    } else {
        print_value(o, &r->op.kvs[0]);
    }
    etcd_response_free(r);
    return rc;
}

struct dump_state {
    const struct options *o;
    int64_t total;
};

static int print_page(const struct etcd_kv *kvs, size_t n, int64_t revision, void *arg)
{
    struct dump_state *d = arg;
    for (size_t i = 0; i < n; i++) {
        printf("%s%s\n", d->total ? "\n" : "", kvs[i].key);
        print_value(d->o, &kvs[i]);
        d->total++;
    }
    return 0;
}

static int cmd_dump(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 2) {
        usage(stderr);
        return 2;
    }
    char prefix[KEYS_MAX];
    if (full_key(o, o->prefix ? o->prefix : "", prefix, sizeof(prefix)) < 0)
        return 2;
    char end[KEYS_MAX + 1];
    size_t len = strlen(prefix);
    size_t end_len = etcd_prefix_end(prefix, len, end);
    /* Pages of 500 at one revision: a consistent view of any size. */
    struct etcd_paged_req req = {.key = prefix, .key_len = len, .range_end = end,
                                 .range_end_len = end_len, .page_keys = 500};
    struct dump_state d = {.o = o};
    int64_t revision = 0;
    struct mm_error err = {0};
    if (etcd_sync_range_paged(c, &req, print_page, &d, &revision, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        return 1;
    }
    printf("%s%" PRId64 " record%s under %s at revision %" PRId64 "\n", d.total ? "\n" : "",
           d.total, d.total == 1 ? "" : "s", prefix, revision);
    return 0;
}

static int cmd_put(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 4) {
        usage(stderr);
        return 2;
    }
    char key[KEYS_MAX];
    if (full_key(o, o->args[2], key, sizeof(key)) < 0)
        return 2;
    const char *value = o->args[3];
    struct mm_error err = {0};
    if (record_validate_at(key, o->cluster, value, strlen(value), &err) < 0) {
        fprintf(stderr, "mmctl: refusing to write %s: %s\n", key, err.msg);
        return 1;
    }
    int64_t rev = 0;
    if (etcd_sync_put(c, key, value, 0, &rev, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        return 1;
    }
    printf("stored %s at revision %" PRId64 "\n", key, rev);
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    if (o.n_args >= 1 && strcmp(o.args[0], "registry") != 0) {
        memcpy(o.serving.args, o.args, sizeof(o.args));
        o.serving.n_args = o.n_args;
        rc = serving_run(&o.serving);
        if (rc == 2)
            fprintf(stderr, "mmctl: usage: mmctl --help\n");
        return rc;
    }
    if (o.n_args < 2) {
        usage(stderr);
        return 2;
    }
    int (*cmd)(struct etcd_client *, const struct options *) = NULL;
    if (strcmp(o.args[1], "get") == 0)
        cmd = cmd_get;
    else if (strcmp(o.args[1], "dump") == 0)
        cmd = cmd_dump;
    else if (strcmp(o.args[1], "put") == 0)
        cmd = cmd_put;
    if (!cmd) {
        fprintf(stderr, "mmctl: unknown registry verb '%s'\n", o.args[1]);
        usage(stderr);
        return 2;
    }
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct etcd_client *c = NULL;
    struct mm_error err = {0};
    if (!loop) {
        fprintf(stderr, "mmctl: cannot create an event loop\n");
        return 1;
    }
    if (etcd_client_new(loop, &o.etcd, &c, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        ev_loop_destroy(loop);
        return 1;
    }
    rc = cmd(c, &o);
    etcd_client_free(c);
    ev_loop_destroy(loop);
    return rc;
}
