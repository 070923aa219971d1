/* serving.h - mmctl's gRPC verbs: KServe V2 inference and metadata against the mesh (or any V2
 * server), the mesh's model API (mmesh.ModelMesh: register, unregister, status, ensure; vmodel
 * set, status, delete) against
 * a node, and the runtime SPI against one runtime process, for operators who want to see what
 * a runtime answers without a mesh in front of it. */
#ifndef MM_CLI_SERVING_H
#define MM_CLI_SERVING_H

#include <stdbool.h>

#define SERVING_MAX_PARAMS 64

struct serving_options {
    const char *address; /* host:port, unix:PATH; NULL: the verb's default */
    const char *file;    /* infer: request JSON file, "-" or NULL for stdin */
    const char *type;    /* runtime load, model register: model type */
    const char *node;    /* model verbs: the node's address (--node); NULL: MM_NODE_ADDRESS,
                          * else address, else 127.0.0.1:8033 */
    const char *path;    /* model register: storage path */
    const char *storage_key; /* model register: storage key */
    const char *uri;     /* model register, vmodel set: a storageUri (stcfg.h: s3://B/p, ...),
                          * instead of --path: its parameters and path */
    const char *params[SERVING_MAX_PARAMS]; /* model register, vmodel set: "k=v" storage
                          * parameters (over the URI's); with any of these or uri, the key is
                          * sent in ModelMesh Serving's JSON form */
    int n_params;
    const char *output;  /* model verbs: "text" (NULL) or "json" */
    unsigned timeout_ms; /* 0: the verb's default */
    bool purge;          /* runtime status: the caller knows it unloads every model */
    bool load_now;       /* model register */
    bool sync;           /* model register, ensure: wait until loaded or failed; vmodel set:
                          * until the transition ended (or, creating, the model loaded) */
    bool auto_delete;    /* vmodel set: autoDeleteTargetModel */
    bool force;          /* vmodel set: make the target active at once */
    bool update_only;    /* vmodel set: the vmodel must exist */
    const char *expected; /* vmodel set: expectedTargetModelId */
    const char *owner;   /* vmodel set, status, delete: owner */
    const char *args[4]; /* positional words after the verb group */
    int n_args;
};

/* `mmctl infer MODEL` / `mmctl metadata MODEL` / `mmctl runtime VERB ...` / `mmctl model VERB
 * ID` / `mmctl vmodel set NAME TARGET | status NAME | delete NAME`. args[0] names the group. Prints the answer on stdout (JSON; model verbs: readable lines,
 * or JSON with output "json"); returns 0, 1 (the call failed, or a model verb's outcome is not
 * what was asked: a --sync that did not end LOADED, a model or vmodel not found, a vmodel set
 * --sync whose transition failed; reason on stderr) or 2
 * (usage). */
int serving_run(const struct serving_options *o);

#endif
