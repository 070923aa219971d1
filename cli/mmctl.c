/* mmctl.c - the command-line tool. Verbs so far: registry get | dump | put (etcd), and the gRPC
 * verbs of serving.c: infer, metadata, runtime status | load | unload | size, model register |
 * unregister | status | ensure.
 * Keys are given relative to the cluster prefix (models/m1) or absolute
 * (/modelmesh/c/models/m1). Keys and values from etcd are bytes: printed with their length,
 * control characters escaped (term.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/etcd.h"
#include "mm/etcd_opts.h"
#include "mm/etcd_sync.h"
#include "mm/json.h"
#include "mm/keys.h"
#include "mm/opts.h"
#include "mm/records.h"
#include "kube.h"
#include "serving.h"
#include "term.h"

#define MAX_TIMEOUT_MS 86400000 /* --timeout: a day */
#define DEFAULT_PAGE_KEYS 500
#define MAX_PAGE_KEYS 100000
#define DEFAULT_PAGE_BYTES (1u << 20)
#define MAX_PAGE_BYTES ((uint64_t)1 << 30)
#define MIN_REPLY_BYTES 4096
#define MAX_REPLY_BYTES ((uint64_t)4 << 30)

struct options {
    struct etcd_opts etcd;
    const char *prefix;        /* dump --prefix */
    bool password_given;       /* --password on the command line */
    size_t page_keys, page_bytes;
    char *password; /* a copy of --password's argument */
    struct serving_options serving;
    const char *ns;            /* -n, --namespace */
    const char *manifest;      /* -f, --filename */
    bool watch;                /* -w, --watch */
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
            "       mmctl [--address A] runtime status --purge | load ID PATH [--type T] |\n"
            "                                   unload ID | size ID\n"
            "       mmctl [--node A] model register ID --type T [--path P | --uri URI] [--key K]\n"
            "                                   [--param NAME=VALUE]... [--load-now] [--sync]\n"
            "                                   [--timeout D]\n"
            "       mmctl [--node A] model unregister ID | status ID | ensure ID [--sync]\n"
            "       mmctl [--node A] vmodel set NAME TARGET [--type T [--path P] [--key K]]\n"
            "                                   [--auto-delete] [--load-now] [--force]\n"
            "                                   [--update-only] [--expected ID] [--owner O]\n"
            "                                   [--sync] [--timeout D]\n"
            "       mmctl [--node A] vmodel status NAME | delete NAME [--owner O]\n"
            "       mmctl [options] apply -f FILE|-\n"
            "       mmctl [options] get isvc [NAME] [-o FORMAT] [-w]\n"
            "       mmctl [options] get servingruntimes|clusterservingruntimes [NAME] [-o FORMAT]\n"
            "       mmctl [options] get secrets [storage-config] [-o FORMAT]\n"
            "       mmctl [options] describe isvc NAME | secret storage-config\n"
            "       mmctl [options] delete isvc|servingruntime|clusterservingruntime|secret NAME\n"
            "       mmctl [options] delete -f FILE|-\n"
            "\n"
            "KEY and P are relative to /modelmesh/<cluster>/ (e.g. models/m1, copies/) or start\n"
            "with '/'. put validates instance, model, copy and vmodel records before writing.\n"
            "Keys and values are printed with control characters, backslashes and bytes that\n"
            "are not UTF-8 escaped (\\n, \\\\, \\x1b).\n"
            "\n"
            "infer sends a KServe V2 request written as JSON (REST style with \"data\", or gRPC\n"
            "style with \"contents\"; from --file, or standard input) as ModelInfer for MODEL and\n"
            "prints the answer as JSON. metadata prints ModelMetadata. Both go to the mesh's\n"
            "inference port (default 127.0.0.1:8033) or any KServe V2 gRPC server. runtime calls\n"
            "one model runtime's SPI directly (default 127.0.0.1:8085). runtime status calls\n"
            "runtimeStatus, which makes the runtime unload every model it holds (the mesh calls\n"
            "it when it starts): it needs --purge.\n"
            "\n"
            "model calls a node's model API (mmesh.ModelMesh; default 127.0.0.1:8033, env\n"
            "MM_NODE_ADDRESS): register a model (its type, its storage path relative to the\n"
            "models root, its storage key; --load-now: load it without waiting for a request),\n"
            "unregister it (unloaded everywhere), show its status and copies (a copy being\n"
            "loaded shows the bytes pulled from storage so far), or ensure it is\n"
            "loaded somewhere. --sync waits until the model is LOADED or failed (default\n"
            "timeout 120s, else 5s) and exits 1 unless it is LOADED. Exit codes: 0 done, 1 the\n"
            "call failed (the message names the gRPC status) or the model is not registered\n"
            "or not loaded as asked, 2 usage.\n"
            "\n"
            "vmodel manages a vmodel (an InferenceService name) on a node's model API: set points\n"
            "NAME at the model TARGET (registered from --type/--path/--key if absent; with\n"
            "--auto-delete it is unregistered once no vmodel refers to it). While another model\n"
            "is active and loaded, it keeps serving until TARGET has a loaded copy (the status\n"
            "is TRANSITIONING, or TRANSITION_FAILED if TARGET cannot load); --force switches at\n"
            "once. --expected ID: only if the current target is ID. --owner O: only O's vmodel.\n"
            "--sync waits until the transition ended (creating: until TARGET is loaded, with\n"
            "--load-now) and exits 1 if it failed. status exits 1 for an unknown vmodel.\n"
            "\n"
            "apply, get, describe and delete work as kubectl's do, on the registry: apply reads\n"
            "YAML or JSON manifests (several documents per file; every one is checked before\n"
            "anything is written; errors name the document, field and line) of\n"
            "InferenceServices (ModelMesh mode), ServingRuntimes, ClusterServingRuntimes and\n"
            "the Secret storage-config (stringData, or base64 data: one JSON document per key)\n"
            "and prints NAME created|configured|unchanged; a kind: List's items count as\n"
            "documents. delete -f deletes every object a file names (checked first). get prints\n"
            "kubectl's table, or -o json|yaml|wide|name|jsonpath=TEMPLATE (fields {.a.b}, [N],\n"
            "[*], ['key'], {range ...}{end}, {\"text\"}); -w prints the table, then a line per\n"
            "change. describe lays the object and its status out as kubectl describe does.\n"
            "get secret storage-config shows the storage keys as kubectl's Secret (data base64;\n"
            "AGE <unknown>: etcd keeps no times), describe secret their sizes, not values.\n"
            "\n"
            "options:\n"
            "  --endpoints URLS   etcd endpoints, comma-separated (env MM_ETCD_ENDPOINTS;\n"
            "                     default http://127.0.0.1:2379)\n"
            "  --cluster NAME     cluster name (env MM_CLUSTER; default local)\n"
            "  --cacert FILE      CA bundle for https endpoints\n"
            "  --cert FILE --key FILE   client certificate and key\n"
            "  --user NAME        etcd user (env MM_ETCD_USER); its password from\n"
            "                     --password-file FILE (the first line), env MM_ETCD_PASSWORD,\n"
            "                     or --password PW (visible to other users in the process list)\n"
            "  --timeout MS       per-request deadline in ms (or with a unit: 90s, 2m), at most\n"
            "                     a day (default 5000; infer 30000, runtime load 120000)\n"
            "  --page-keys N      dump: at most N keys per etcd request (default 500)\n"
            "  --page-bytes SIZE  dump: about SIZE bytes of keys and values per etcd request\n"
            "                     (default 1Mi; a single larger value comes alone)\n"
            "  --max-reply-bytes SIZE   refuse an etcd reply larger than SIZE (default 512Mi)\n"
            "  --address HOST:PORT   gRPC server for infer, metadata, runtime (or unix:PATH)\n"
            "  --file FILE        infer: the request (default: standard input)\n"
            "  --type T           runtime load: the model type (e.g. sklearn, xgboost)\n"
            "  --purge            runtime status: yes, unload every model\n"
            "  --node HOST:PORT   model: the node's model API (env MM_NODE_ADDRESS;\n"
            "                     default 127.0.0.1:8033)\n"
            "  --path P           model register: storage path (relative to the models root)\n"
            "  --key K, --storage-key K   model register: storage key (its entry in the\n"
            "                     storage-config secret; none = the default keys, docs/storage.md)\n"
            "  --uri URI          model register, vmodel set: s3://B/P, gs://B/P, pvc://NAME/P,\n"
            "                     https://A.blob.core.windows.net/C/P or http(s)://HOST/P:\n"
            "                     the storage type and bucket as parameters, and the path\n"
            "  --param NAME=VALUE model register, vmodel set: a storage parameter laid over the\n"
            "                     key's entry (repeatable; over --uri's); sent in ModelMesh\n"
            "                     Serving's JSON key form\n"
            "  --load-now         model register, vmodel set: load it now\n"
            "  --sync             model register, ensure: wait until LOADED or failed;\n"
            "                     vmodel set: until the transition ended\n"
            "  --auto-delete, --force, --update-only, --expected ID, --owner O\n"
            "                     vmodel set (--owner: status and delete too), as above\n"
            "  -o text|json       model: readable lines (default) or the answer as JSON\n"
            "  -o FORMAT          get: json, yaml, wide, name, jsonpath=TEMPLATE\n"
            "  -n, --namespace NS apply, get, describe, delete: the namespace (env\n"
            "                     MM_NAMESPACE; default modelmesh-serving)\n"
            "  -f, --filename FILE   apply, delete: the manifests ('-': standard input)\n"
            "  -w, --watch        get isvc: print again on each change (until interrupted)\n"
            "  -h, --help\n");
}

static int numeric(const char *flag, const char *val, struct options *o)
{
    uint64_t v;
    struct mm_error err = {0};
    int rc;
    if (strcmp(flag, "--timeout") == 0) {
        rc = opts_ms(flag, val, 1, MAX_TIMEOUT_MS, &v, &err);
        if (rc == 0)
            o->etcd.config.request_timeout_ms = o->serving.timeout_ms = (unsigned)v;
    } else if (strcmp(flag, "--page-keys") == 0) {
        rc = opts_u64(flag, val, 1, MAX_PAGE_KEYS, &v, &err);
        o->page_keys = (size_t)v;
    } else if (strcmp(flag, "--page-bytes") == 0) {
        rc = opts_bytes(flag, val, 1, MAX_PAGE_BYTES, &v, &err);
        o->page_bytes = (size_t)v;
    } else {
        rc = opts_bytes(flag, val, MIN_REPLY_BYTES, MAX_REPLY_BYTES, &v, &err);
        o->etcd.config.max_reply_bytes = (size_t)v;
    }
    if (rc < 0)
        term_error("%s", err.msg);
    return rc;
}

/* Returns 0, or 2 for a usage error (message printed). */
static int parse(int argc, char **argv, struct options *o)
{
    etcd_opts_init(&o->etcd);
    o->page_keys = DEFAULT_PAGE_KEYS;
    o->page_bytes = DEFAULT_PAGE_BYTES;
    static const struct {
        const char *name;
        size_t offset;
    } opts[] = {
        {"--prefix", offsetof(struct options, prefix)},
        {"--address", offsetof(struct options, serving.address)},
        {"--file", offsetof(struct options, serving.file)},
        {"--type", offsetof(struct options, serving.type)},
        {"--node", offsetof(struct options, serving.node)},
        {"--path", offsetof(struct options, serving.path)},
        {"--storage-key", offsetof(struct options, serving.storage_key)},
        {"--uri", offsetof(struct options, serving.uri)},
        {"--output", offsetof(struct options, serving.output)},
        {"--expected", offsetof(struct options, serving.expected)},
        {"--owner", offsetof(struct options, serving.owner)},
        {"--namespace", offsetof(struct options, ns)},
        {"--filename", offsetof(struct options, manifest)},
    };
    static const char *const numeric_flags[] = {"--timeout", "--page-keys", "--page-bytes",
                                                "--max-reply-bytes"};
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "-o=", 3) == 0) {
            o->serving.output = a + 3;
            continue;
        }
        if (strcmp(a, "-n") == 0 || strcmp(a, "-f") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mmctl: %s needs a value\n", a);
                return 2;
            }
            if (a[1] == 'n')
                o->ns = argv[++i];
            else
                o->manifest = argv[++i];
            continue;
        }
        if (strcmp(a, "-w") == 0 || strcmp(a, "--watch") == 0) {
            o->watch = true;
            continue;
        }
        if (strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mmctl: -o needs a value (text or json)\n");
                return 2;
            }
            o->serving.output = argv[++i];
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (o->n_args == 4) {
                fprintf(stderr, "mmctl: too many arguments\n");
                return 2;
            }
            o->args[o->n_args++] = a;
            continue;
        }
        if (strcmp(a, "--param") == 0 || strncmp(a, "--param=", 8) == 0) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "mmctl: --param needs NAME=VALUE\n");
                return 2;
            }
            if (o->serving.n_params == SERVING_MAX_PARAMS) {
                fprintf(stderr, "mmctl: more than %d --param\n", SERVING_MAX_PARAMS);
                return 2;
            }
            o->serving.params[o->serving.n_params++] = v;
            continue;
        }
        if (strcmp(a, "--purge") == 0) {

            o->serving.purge = true;
            continue;
        }
        if (strcmp(a, "--load-now") == 0) {
            o->serving.load_now = true;
            continue;
        }
        if (strcmp(a, "--sync") == 0) {
            o->serving.sync = true;
            continue;
        }
        if (strcmp(a, "--auto-delete") == 0) {
            o->serving.auto_delete = true;
            continue;
        }
        if (strcmp(a, "--force") == 0) {
            o->serving.force = true;
            continue;
        }
        if (strcmp(a, "--update-only") == 0) {
            o->serving.update_only = true;
            continue;
        }
        char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        bool known = false;
        if (nl == 10 && strncmp(a, "--password", 10) == 0) {
            if (!val) {
                fprintf(stderr, "mmctl: --password needs a value\n");
                return 2;
            }
            free(o->password);
            o->password = strdup(val);
            if (!o->password) {
                fprintf(stderr, "mmctl: out of memory\n");
                return 2;
            }
            /* Gone from /proc/PID/cmdline from here on (not before: prefer the file or env). */
            memset(val, 'x', strlen(val));
            o->password_given = true;
            known = true;
        }
        for (size_t k = 0; !known && k < sizeof(numeric_flags) / sizeof(numeric_flags[0]); k++) {
            if (strlen(numeric_flags[k]) != nl || strncmp(a, numeric_flags[k], nl) != 0)
                continue;
            if (numeric(numeric_flags[k], val, o) < 0)
                return 2;
            known = true;
        }
        /* The servers' --etcd-endpoints is not mmctl's: it spells it --endpoints only. */
        if (!known && !(nl == 16 && strncmp(a, "--etcd-endpoints", nl) == 0)) {
            struct mm_error err = {0};
            int rc = etcd_opts_flag(&o->etcd, a, nl, val, &err);
            if (rc < 0) {
                fprintf(stderr, "mmctl: %s\n", err.msg);
                return 2;
            }
            known = rc > 0;
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
            fprintf(stderr, "mmctl: unknown option ");
            term_write(stderr, a, nl, false);
            fputc('\n', stderr);
            return 2;
        }
        if (!eq)
            i++;
    }
    return 0;
}

/* Where the password comes from: --password-file, then --password, then MM_ETCD_PASSWORD.
 * 0, or 2 (message printed). */
static int resolve_password(struct options *o)
{
    struct etcd_config *cfg = &o->etcd.config;
    if (o->etcd.password_file && o->password_given) {
        fprintf(stderr, "mmctl: give the password with --password-file or --password, not both\n");
        return 2;
    }
    struct mm_error err = {0};
    if (o->password_given) {
        cfg->password = o->password;
    } else if (etcd_opts_password(&o->etcd, &err) < 0) {
        fprintf(stderr, "mmctl: %s\n", err.msg);
        return 2;
    }
    if (cfg->password && !cfg->user) {
        fprintf(stderr,
                "mmctl: a password was given (%s) but no user: add --user NAME or "
                "MM_ETCD_USER\n",
                o->etcd.password_file ? "--password-file"
                : o->password_given   ? "--password"
                                      : "MM_ETCD_PASSWORD");
        return 2;
    }
    if (cfg->user && !cfg->password) {
        fprintf(stderr,
                "mmctl: --user %s needs a password: --password-file FILE, "
                "MM_ETCD_PASSWORD or --password\n",
                cfg->user);
        return 2;
    }
    return 0;
}

/* The password, then a loop and an etcd client on it, for the verbs that use etcd. 0, or
 * the exit code (message printed). */
static int open_etcd(struct options *o, struct ev_loop **loop, struct etcd_client **c)
{
    int rc = resolve_password(o);
    if (rc)
        return rc;
    struct mm_error err = {0};
    if (!(*loop = ev_loop_new(EVFLAG_AUTO))) {
        fprintf(stderr, "mmctl: cannot create an event loop\n");
        return 1;
    }
    if (etcd_client_new(*loop, &o->etcd.config, c, &err) < 0) {
        term_error("%s", err.msg);
        ev_loop_destroy(*loop);
        return 1;
    }
    return 0;
}

/* An etcd error, and what to do about the ones a user can fix. */
static void etcd_fail(const struct options *o, const struct mm_error *err)
{
    term_error("%s", err->msg);
    if (err->code == -EACCES && !o->etcd.config.user)
        fprintf(stderr, "mmctl: give credentials: --user NAME (or MM_ETCD_USER) and the password "
                        "in a file (--password-file FILE) or in MM_ETCD_PASSWORD\n");
    else if (err->code == -EMSGSIZE)
        fprintf(stderr, "mmctl: raise the cap with --max-reply-bytes SIZE (dump pages by "
                        "--page-bytes too)\n");
}

/* Absolute key for a user-given one ("" is the cluster prefix): malloc'd, *len its length;
 * NULL (message printed) on a bad cluster name or without memory. */
static char *full_key(const struct options *o, const char *k, size_t *len)
{
    struct mm_error err = {0};
    char prefix[KEYS_MAX];
    if (keys_prefix(prefix, sizeof(prefix), o->etcd.cluster, &err) < 0) {
        term_error("%s", err.msg);
        return NULL;
    }
    const char *base = k[0] == '/' ? "" : prefix;
    size_t bl = strlen(base), kl = strlen(k);
    char *out = malloc(bl + kl + 1);
    if (!out) {
        fprintf(stderr, "mmctl: out of memory\n");
        return NULL;
    }
    memcpy(out, base, bl);
    memcpy(out + bl, k, kl + 1);
    *len = bl + kl;
    return out;
}

/* A key: escaped, backslashes doubled, so that what is printed reads back to its bytes. */
static void print_key(FILE *f, const char *key, size_t len)
{
    term_write(f, key, len, true);
}

/* A value: JSON (whole, UTF-8) pretty-printed with controls escaped; anything else as text,
 * escaped. A value that is not the record its key holds is shown too, after a warning. */
static void print_value(const struct options *o, const struct etcd_kv *kv)
{
    struct mm_error err = {0};
    if (record_validate_at(kv->key, kv->key_len, o->etcd.cluster, kv->value, kv->value_len,
                           &err) < 0) {
        fflush(stdout);
        fprintf(stderr, "mmctl: warning: ");
        print_key(stderr, kv->key, kv->key_len);
        fprintf(stderr, ": ");
        term_write(stderr, err.msg, strlen(err.msg), false);
        fputc('\n', stderr);
    }
    const char *end = NULL;
    cJSON *j = NULL;
    if (term_is_utf8(kv->value, kv->value_len)) {
        j = cJSON_ParseWithLengthOpts(kv->value, kv->value_len, &end, false);
        size_t at = j && end ? (size_t)(end - kv->value) : 0;
        while (j && at < kv->value_len && strchr(" \t\r\n", kv->value[at]))
            at++;
        if (j && at != kv->value_len) { /* text after the JSON: show it all as text */
            cJSON_Delete(j);
            j = NULL;
        }
    }
    char *pretty = j ? json_print(j, true) : NULL;
    if (pretty)
        term_write_json(stdout, pretty);
    else
        term_write(stdout, kv->value, kv->value_len, true);
    fputc('\n', stdout);
    free(pretty);
    cJSON_Delete(j);
}

static int cmd_get(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 3) {
        usage(stderr);
        return 2;
    }
    size_t len = 0;
    char *key = full_key(o, o->args[2], &len);
    if (!key)
        return 2;
    struct etcd_range_req req = {.key = key, .key_len = len};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = 0;
    if (etcd_sync_range(c, &req, &r, &err) < 0) {
        etcd_fail(o, &err);
        rc = 1;
    } else if (r->op.n_kvs == 0) {
        fprintf(stderr, "mmctl: no record at ");
        print_key(stderr, key, len);
        fputc('\n', stderr);
        rc = 1;
    } else {
        print_value(o, &r->op.kvs[0]);
    }
    etcd_response_free(r);
    free(key);
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
        if (d->total)
            fputc('\n', stdout);
        print_key(stdout, kvs[i].key, kvs[i].key_len);
        fputc('\n', stdout);
        print_value(d->o, &kvs[i]);
        d->total++;
    }
    if (ferror(stdout)) /* the reader went away: stop reading etcd */
        return -EPIPE;
    return 0;
}

static int cmd_dump(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 2) {
        usage(stderr);
        return 2;
    }
    size_t len = 0;
    char *prefix = full_key(o, o->prefix ? o->prefix : "", &len);
    if (!prefix)
        return 2;
    char *end = malloc(len + 2);
    if (!end) {
        fprintf(stderr, "mmctl: out of memory\n");
        free(prefix);
        return 1;
    }
    size_t end_len = etcd_prefix_end(prefix, len, end);
    /* Pages at one revision: a consistent view of any size, bounded by keys and bytes. */
    struct etcd_paged_req req = {.key = prefix,
                                 .key_len = len,
                                 .range_end = end,
                                 .range_end_len = end_len,
                                 .page_keys = o->page_keys,
                                 .page_bytes = o->page_bytes};
    struct dump_state d = {.o = o};
    int64_t revision = 0;
    struct mm_error err = {0};
    int rc = 0;
    if (etcd_sync_range_paged(c, &req, print_page, &d, &revision, &err) < 0) {
        fflush(stdout);
        if (d.total)
            fprintf(stderr, "mmctl: stopped after %" PRId64 " record%s\n", d.total,
                    d.total == 1 ? "" : "s");
        etcd_fail(o, &err);
        rc = 1;
    } else {
        printf("%s%" PRId64 " record%s under ", d.total ? "\n" : "", d.total,
               d.total == 1 ? "" : "s");
        print_key(stdout, prefix, len);
        printf(" at revision %" PRId64 "\n", revision);
    }
    free(prefix);
    free(end);
    return rc;
}

static int cmd_put(struct etcd_client *c, const struct options *o)
{
    if (o->n_args != 4) {
        usage(stderr);
        return 2;
    }
    size_t len = 0;
    char *key = full_key(o, o->args[2], &len);
    if (!key)
        return 2;
    const char *value = o->args[3];
    struct mm_error err = {0};
    int rc = 1;
    if (record_validate_at(key, len, o->etcd.cluster, value, strlen(value), &err) < 0) {
        fprintf(stderr, "mmctl: refusing to write ");
        print_key(stderr, key, len);
        fputs(": ", stderr);
        term_write(stderr, err.msg, strlen(err.msg), false);
        fputc('\n', stderr);
        goto out;
    }
    int64_t rev = 0;
    if (etcd_sync_put(c, key, value, 0, &rev, &err) < 0) {
        etcd_fail(o, &err);
        goto out;
    }
    printf("stored ");
    print_key(stdout, key, len);
    printf(" at revision %" PRId64 "\n", rev);
    rc = 0;
out:
    free(key);
    return rc;
}

static int run_registry(struct options *o)
{
    if (o->n_args < 2) {
        usage(stderr);
        return 2;
    }
    int (*cmd)(struct etcd_client *, const struct options *) = NULL;
    if (strcmp(o->args[1], "get") == 0)
        cmd = cmd_get;
    else if (strcmp(o->args[1], "dump") == 0)
        cmd = cmd_dump;
    else if (strcmp(o->args[1], "put") == 0)
        cmd = cmd_put;
    if (!cmd) {
        fprintf(stderr, "mmctl: unknown registry verb '");
        term_write(stderr, o->args[1], strlen(o->args[1]), false);
        fprintf(stderr, "'\n");
        usage(stderr);
        return 2;
    }
    if (o->serving.purge) {
        fprintf(stderr, "mmctl: --purge goes with runtime status only\n");
        return 2;
    }
    const struct serving_options *s = &o->serving;
    if (s->node || s->path || s->storage_key || s->output || s->load_now || s->sync ||
        s->auto_delete || s->force || s->update_only || s->expected || s->owner || s->uri ||
        s->n_params) {
        fprintf(stderr, "mmctl: --node, --path, --storage-key, --uri, --param, -o, --load-now, "
                        "--sync and the vmodel flags go with model verbs only (model and "
                        "vmodel)\n");
        return 2;
    }
    struct ev_loop *loop = NULL;
    struct etcd_client *c = NULL;
    int rc = open_etcd(o, &loop, &c);
    if (rc)
        return rc;
    rc = cmd(c, o);
    etcd_client_free(c);
    ev_loop_destroy(loop);
    return rc;
}

/* apply, get, describe, delete: on an etcd client, as the registry verbs. */
static int run_kube(struct options *o)
{
    const struct serving_options *s = &o->serving;
    if (s->node || s->path || s->storage_key || s->load_now || s->sync || s->auto_delete ||
        s->force || s->update_only || s->expected || s->owner || s->uri || s->n_params ||
        s->purge || s->address || s->file || s->type) {
        fprintf(stderr, "mmctl: apply, get, describe and delete take the etcd options, -n, -f, "
                        "-o and -w only\n");
        return 2;
    }
    if (o->prefix) {
        fprintf(stderr, "mmctl: --prefix goes with registry dump only\n");
        return 2;
    }
    struct ev_loop *loop = NULL;
    struct etcd_client *c = NULL;
    int rc = open_etcd(o, &loop, &c);
    if (rc)
        return rc;
    struct kube_options k = {.cluster = o->etcd.cluster,
                             .ns = o->ns,
                             .file = o->manifest,
                             .output = s->output,
                             .watch = o->watch,
                             .args = o->args,
                             .n_args = o->n_args};
    rc = kube_run(c, &k);
    etcd_client_free(c);
    ev_loop_destroy(loop);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    int rc = parse(argc, argv, &o);
    if (rc == 0 && o.n_args >= 1 &&
        (strcmp(o.args[0], "model") == 0 || strcmp(o.args[0], "vmodel") == 0) &&
        o.etcd.config.key_file) {
        /* Model verbs talk to a node, not etcd: --key is the model's storage key there. */
        if (o.serving.storage_key) {
            fprintf(stderr, "mmctl: give the storage key with --key or --storage-key, not both\n");
            rc = 2;
        }
        o.serving.storage_key = o.etcd.config.key_file;
    }
    if (rc == 0 && o.n_args >= 1 && kube_is_verb(o.args[0])) {
        rc = run_kube(&o);
    } else if (rc == 0 && (o.ns || o.manifest || o.watch)) {
        fprintf(stderr, "mmctl: -n, -f and -w go with apply, get, describe and delete\n");
        rc = 2;
    } else if (rc == 0 && o.n_args >= 1 && strcmp(o.args[0], "registry") != 0) {
        memcpy(o.serving.args, o.args, sizeof(o.args));
        o.serving.n_args = o.n_args;
        rc = serving_run(&o.serving);
        if (rc == 2)
            fprintf(stderr, "mmctl: usage: mmctl --help\n");
    } else if (rc == 0) {
        rc = run_registry(&o);
    }
    if (o.password) {
        memset(o.password, 0, strlen(o.password));
        free(o.password);
    }
    explicit_bzero(o.etcd.password_buf, sizeof(o.etcd.password_buf));
    return rc;
}
