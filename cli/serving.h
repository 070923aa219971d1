/* serving.h - mmctl's gRPC verbs: KServe V2 inference and metadata against the mesh (or any V2
 * server), and the runtime SPI against one runtime process, for operators who want to see what
 * a runtime answers without a mesh in front of it. */
#ifndef MM_CLI_SERVING_H
#define MM_CLI_SERVING_H

#include <stdbool.h>

struct serving_options {
    const char *address; /* host:port, unix:PATH; NULL: the verb's default */
    const char *file;    /* infer: request JSON file, "-" or NULL for stdin */
    const char *type;    /* runtime load: model type */
    unsigned timeout_ms; /* 0: the verb's default */
    bool purge;          /* runtime status: the caller knows it unloads every model */
    const char *args[4]; /* positional words after the verb group */
    int n_args;
};

/* `mmctl infer MODEL` / `mmctl metadata MODEL` / `mmctl runtime VERB ...`. args[0] names the
 * group. Prints the answer as JSON on stdout; returns 0, 1 (the call failed: reason on stderr)
 * or 2 (usage). */
int serving_run(const struct serving_options *o);

#endif
