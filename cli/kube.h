/* kube.h - mmctl's kubectl-shaped verbs over the registry: apply -f FILE|- and delete -f
 * FILE|- (InferenceService, ServingRuntime, ClusterServingRuntime, the Secret storage-config,
 * kind: List of those), get isvc [NAME], get servingruntimes and get secrets (table,
 * -o json|yaml|wide|name|jsonpath=..., isvc --watch), describe isvc NAME and describe secret
 * storage-config, delete isvc|servingruntime|clusterservingruntime|secret NAME. Output shapes are kubectl's (WALKTHROUGH.md). Runs on the caller's etcd
 * client and loop (etcd_sync.h: a CLI only). */
#ifndef MM_CLI_KUBE_H
#define MM_CLI_KUBE_H

#include <stdbool.h>

struct etcd_client;

struct kube_options {
    const char *cluster;
    const char *ns;          /* -n / --namespace; NULL = env MM_NAMESPACE, else modelmesh-serving */
    const char *file;        /* apply, delete: -f FILE, "-" = standard input */
    const char *output;      /* -o: json, yaml, wide, name, jsonpath=TEMPLATE; NULL = the table */
    bool watch;              /* get: -w / --watch */
    const char *const *args; /* args[0] is the verb */
    int n_args;
};

/* Whether verb is one of these (apply, get, describe, delete). */
bool kube_is_verb(const char *verb);
/* Exit code: 0 done, 1 failed (message printed), 2 usage. */
int kube_run(struct etcd_client *c, const struct kube_options *o);

#endif
