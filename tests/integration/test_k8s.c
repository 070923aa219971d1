/* test_k8s.c - deploy/k8s agrees with the programs it runs. `kubectl kustomize deploy/k8s` is
 * rendered (the kustomization may use only what old kustomize knows: resources, namespace) and
 * its documents read with yamljson; then, against each program's --help (mm-node,
 * mm-controller, mm-runtime, the sklearn runtime, etcd):
 *   - every flag a container passes and every environment name it sets is one the program
 *     knows; images are modelmesh-c/<name> with a multi-stage, non-root
 *     deploy/k8s/images/<name>.Containerfile; pods run as non-root;
 *   - every non-loopback listen port is a containerPort and every containerPort is listened on;
 *     probes: mm-node and mm-controller have readiness /ready and liveness /live on their
 *     --probe-listen port; every probe's port is a containerPort;
 *   - runtime pods: instance id from the pod name; the node's --runtime is its runtime's
 *     --listen; --runtime-name, --model-types, image, args and loading concurrency as the
 *     ServingRuntime in deploy/runtimes says; --cache-dir and the runtime's --models-dir the
 *     same emptyDir at the same path; --storage-config-dir the storage-config Secret's mount;
 *     terminationGracePeriodSeconds above --shutdown-timeout;
 *   - --etcd-endpoints name a Service on etcd's client port; one --cluster everywhere;
 *   - Service modelmesh-serving: 8033, 8008 and 2112, selects exactly the runtime pods, each
 *     targetPort the node's --listen, --rest-listen, --metrics-listen; StatefulSets'
 *     serviceName a headless Service selecting their pods; etcd's
 *     --initial-cluster one member per replica, named and addressed as the StatefulSet's pods;
 *     the controller: 2 replicas, --service-name the Service.
 * The checks are then shown to fail: each of several broken copies of the manifests (a wrong
 * targetPort, 5 etcd replicas, a short grace, a flag the node lacks, a probe path, a models
 * mount elsewhere, an unknown environment name) must be reported.
 * argv: MM_NODE MM_CONTROLLER MM_RUNTIME PYTHON3 SKLEARN_SERVER SOURCE_ROOT; env KUBECTL: the
 * kubectl to render with (default the one on PATH; Debian's 1.20 and 1.32 render these alike). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/opts.h"
#include "mm/yamljson.h"

#define NS "modelmesh-serving"
#define OUT_MAX (2u << 20)
#define HELP_MAX 65536
#define ARGS_MAX 64

enum prog { P_NODE, P_CONTROLLER, P_RUNTIME, P_SKLEARN, P_ETCD, P_COUNT };
static const char *const prog_names[P_COUNT] = {"mm-node", "mm-controller", "mm-runtime",
                                                "mm-sklearn", "etcd"};
static char helps[P_COUNT][HELP_MAX];
static const char *root;

/* What the checks found wrong, each a line naming the document and the field. */
struct problems {
    char text[32768];
    int n;
};

static void problem(struct problems *p, const char *fmt, ...)
{
    size_t len = strlen(p->text);
    va_list ap;
    va_start(ap, fmt);
    if (len + 2 < sizeof(p->text)) {
        vsnprintf(p->text + len, sizeof(p->text) - len - 1, fmt, ap);
        len = strlen(p->text);
        p->text[len] = '\n';
        p->text[len + 1] = '\0';
    }
    va_end(ap);
    p->n++;
}

/* ------------------------------------------------------------------ reading the documents */

static const cJSON *at(const cJSON *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
        o = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return o;
}

static const char *str_at(const cJSON *o, const char *path)
{
    const cJSON *v = at(o, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long num_at(const cJSON *o, const char *path, long dflt)
{
    const cJSON *v = at(o, path);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : dflt;
}

static const char *name_of(const cJSON *doc)
{
    const char *n = str_at(doc, "metadata.name");
    return n ? n : "(no name)";
}

static bool is_kind(const cJSON *doc, const char *kind)
{
    const char *k = str_at(doc, "kind");
    return k && strcmp(k, kind) == 0;
}

static const cJSON *find_doc(cJSON *const *docs, size_t n, const char *kind, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (is_kind(docs[i], kind) && strcmp(name_of(docs[i]), name) == 0)
            return docs[i];
    return NULL;
}

/* Every label of sel is on labels (an empty selector selects nothing here). */
static bool selects(const cJSON *sel, const cJSON *labels)
{
    if (!cJSON_IsObject(sel) || !sel->child)
        return false;
    for (const cJSON *l = sel->child; l; l = l->next) {
        const cJSON *v =
            cJSON_IsObject(labels) ? cJSON_GetObjectItemCaseSensitive(labels, l->string) : NULL;
        if (!cJSON_IsString(v) || !cJSON_IsString(l) || strcmp(v->valuestring, l->valuestring))
            return false;
    }
    return true;
}

static bool is_workload(const cJSON *doc)
{
    return is_kind(doc, "StatefulSet") || is_kind(doc, "Deployment");
}

/* ------------------------------------------------------------------ containers and their flags */

struct container {
    const cJSON *c;
    enum prog prog; /* P_COUNT: not ours */
    const char *name;
    size_t n;
    const char *flag[ARGS_MAX];
    char flag_buf[ARGS_MAX][64];
    const char *value[ARGS_MAX]; /* NULL: a flag without a value */
};

static enum prog program_of(const cJSON *c)
{
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(c, "command");
    const cJSON *c0 = cJSON_GetArrayItem(cmd, 0), *c1 = cJSON_GetArrayItem(cmd, 1);
    if (!cJSON_IsString(c0))
        return P_COUNT;
    const char *base = strrchr(c0->valuestring, '/');
    base = base ? base + 1 : c0->valuestring;
    if (strcmp(base, "python3") == 0 && cJSON_IsString(c1)) {
        size_t l = strlen(c1->valuestring), s = strlen("runtimes/sklearn/server.py");
        return l >= s && strcmp(c1->valuestring + l - s, "runtimes/sklearn/server.py") == 0
                   ? P_SKLEARN
                   : P_COUNT;
    }
    for (int p = 0; p < P_COUNT; p++)
        if (p != P_SKLEARN && strcmp(base, prog_names[p]) == 0)
            return (enum prog)p;
    return P_COUNT;
}

static void read_container(const cJSON *c, struct container *k, const char *where,
                           struct problems *pr)
{
    memset(k, 0, sizeof(*k));
    k->c = c;
    k->name = str_at(c, "name") ? str_at(c, "name") : "(no name)";
    k->prog = program_of(c);
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(c, "args");
    int n = cJSON_GetArraySize(args);
    for (int i = 0; i < n && k->n < ARGS_MAX; i++) {
        const cJSON *a = cJSON_GetArrayItem(args, i);
        if (!cJSON_IsString(a) || strncmp(a->valuestring, "--", 2) != 0) {
            problem(pr, "%s container %s: args[%d] is no --flag", where, k->name, i);
            continue;
        }
        const char *eq = strchr(a->valuestring, '=');
        size_t fl = eq ? (size_t)(eq - a->valuestring) : strlen(a->valuestring);
        snprintf(k->flag_buf[k->n], sizeof(k->flag_buf[k->n]), "%.*s", (int)fl, a->valuestring);
        k->flag[k->n] = k->flag_buf[k->n];
        if (eq) {
            k->value[k->n] = eq + 1;
        } else {
            const cJSON *nx = cJSON_GetArrayItem(args, i + 1);
            if (cJSON_IsString(nx) && strncmp(nx->valuestring, "--", 2) != 0) {
                k->value[k->n] = nx->valuestring;
                i++;
            }
        }
        k->n++;
    }
}

static const char *flag_value(const struct container *k, const char *flag)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->flag[i], flag) == 0)
            return k->value[i];
    return NULL;
}

/* word appears in text as a whole word (flag or environment name). */
static bool help_has(const char *text, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        char before = p == text ? ' ' : p[-1], after = p[wl];
        bool wb = !(before == '-' || before == '_' || (before >= 'A' && before <= 'Z') ||
                    (before >= 'a' && before <= 'z') || (before >= '0' && before <= '9'));
        bool wa = !(after == '-' || after == '_' || (after >= 'A' && after <= 'Z') ||
                    (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9'));
        if (wb && wa)
            return true;
    }
    return false;
}

/* The port of "host:port" or "scheme://host:port[/...]", and whether host is loopback. */
static int addr_port(const char *addr, bool *loopback)
{
    if (!addr)
        return -1;
    const char *h = strstr(addr, "://");
    h = h ? h + 3 : addr;
    const char *colon = strrchr(h, ':');
    if (!colon)
        return -1;
    if (loopback)
        *loopback = strncmp(h, "127.0.0.1:", 10) == 0 || strncmp(h, "localhost:", 10) == 0 ||
                    strncmp(h, "[::1]:", 6) == 0;
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    return end != colon + 1 && (*end == '\0' || *end == '/') && p > 0 && p < 65536 ? (int)p : -1;
}

/* A port of a probe or Service targetPort: a number, or a containerPort's name in c. */
static int resolve_port(const cJSON *c, const cJSON *port)
{
    if (cJSON_IsNumber(port))
        return (int)port->valuedouble;
    if (!cJSON_IsString(port) || !c)
        return -1;
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(c, "ports");
    for (const cJSON *p = ports ? ports->child : NULL; p; p = p->next) {
        const char *n = str_at(p, "name");
        if (n && strcmp(n, port->valuestring) == 0)
            return (int)num_at(p, "containerPort", -1);
    }
    return -1;
}

static bool has_container_port(const cJSON *c, int port)
{
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(c, "ports");
    for (const cJSON *p = ports ? ports->child : NULL; p; p = p->next)
        if (num_at(p, "containerPort", -1) == port)
            return true;
    return false;
}

static const cJSON *env_entry(const cJSON *c, const char *name)
{
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(c, "env");
    for (const cJSON *e = env ? env->child : NULL; e; e = e->next) {
        const char *n = str_at(e, "name");
        if (n && strcmp(n, name) == 0)
            return e;
    }
    return NULL;
}

static bool env_is_field(const cJSON *c, const char *name, const char *field_path)
{
    const char *f = str_at(env_entry(c, name), "valueFrom.fieldRef.fieldPath");
    return f && strcmp(f, field_path) == 0;
}

/* The mount of c whose volume is name: its mountPath, else NULL. */
static const cJSON *mount_of_path(const cJSON *c, const char *path)
{
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "volumeMounts");
    for (const cJSON *m = ms ? ms->child : NULL; m; m = m->next) {
        const char *mp = str_at(m, "mountPath");
        if (mp && strcmp(mp, path) == 0)
            return m;
    }
    return NULL;
}

static const cJSON *pod_volume(const cJSON *spec, const char *name)
{
    const cJSON *vs = at(spec, "volumes");
    for (const cJSON *v = vs ? vs->child : NULL; v; v = v->next) {
        const char *n = str_at(v, "name");
        if (n && strcmp(n, name) == 0)
            return v;
    }
    return NULL;
}

/* ------------------------------------------------------------------ the checks */

static void check_image(const cJSON *c, const char *where, struct problems *pr)
{
    const char *image = str_at(c, "image"), *name = str_at(c, "name");
    char want[128];
    snprintf(want, sizeof(want), "modelmesh-c/%s:", name ? name : "?");
    if (!image || strncmp(image, want, strlen(want)) != 0) {
        problem(pr, "%s container %s: image %s is not %s<tag>", where, name, image, want);
        return;
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/deploy/k8s/images/%s.Containerfile", root, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        problem(pr, "%s container %s: no %s", where, name, path);
        return;
    }
    char line[1024];
    int froms = 0;
    bool user = false;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "FROM ", 5) == 0)
            froms++;
        if (strncmp(line, "USER ", 5) == 0)
            user = strncmp(line + 5, "0", 1) != 0 && strncmp(line + 5, "root", 4) != 0;
    }
    fclose(f);
    if (froms < 2 || !user)
        problem(pr, "%s: %d stages (want 2 or more), %s", path, froms,
                user ? "non-root" : "no non-root USER last");
}

/* Flags, environment names, listen ports vs containerPorts, probes. */
static void check_container(const cJSON *spec, const struct container *k, const char *where,
                            struct problems *pr)
{
    if (k->prog == P_COUNT) {
        problem(pr, "%s container %s: runs none of our programs", where, k->name);
        return;
    }
    const char *help = helps[k->prog];
    check_image(k->c, where, pr);
    for (size_t i = 0; i < k->n; i++)
        if (!help_has(help, k->flag[i]))
            problem(pr, "%s container %s: %s --help has no %s", where, k->name, prog_names[k->prog],
                    k->flag[i]);
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(k->c, "env");
    for (const cJSON *e = env ? env->child : NULL; e; e = e->next) {
        const char *n = str_at(e, "name");
        char ref[128];
        snprintf(ref, sizeof(ref), "$(%s)", n ? n : "");
        bool referenced = false;
        for (size_t i = 0; i < k->n; i++)
            referenced = referenced || (k->value[i] && strstr(k->value[i], ref));
        if (!n || (!referenced && !help_has(help, n)))
            problem(pr, "%s container %s: env %s is neither in %s --help nor used in its args",
                    where, k->name, n, prog_names[k->prog]);
    }
    /* listen ports */
    static const char *const listens[] = {"--listen",           "--internal-listen",
                                          "--probe-listen",     "--rest-listen",
                                          "--metrics-listen",   "--listen-client-urls",
                                          "--listen-peer-urls"};
    int listened[12];
    size_t n_listened = 0;
    for (size_t l = 0; l < sizeof(listens) / sizeof(listens[0]); l++) {
        const char *v = flag_value(k, listens[l]);
        bool lo = false;
        int port = addr_port(v, &lo);
        if (!v)
            continue;
        if (port < 0) {
            problem(pr, "%s container %s: %s=%s has no port", where, k->name, listens[l], v);
        } else if (lo) {
            if (has_container_port(k->c, port))
                problem(pr, "%s container %s: %s is loopback but %d is a containerPort", where,
                        k->name, listens[l], port);
        } else {
            listened[n_listened++] = port;
            if (!has_container_port(k->c, port))
                problem(pr, "%s container %s: %s port %d is no containerPort", where, k->name,
                        listens[l], port);
        }
    }
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(k->c, "ports");
    for (const cJSON *p = ports ? ports->child : NULL; p; p = p->next) {
        long cp = num_at(p, "containerPort", -1);
        bool found = false;
        for (size_t i = 0; i < n_listened; i++)
            found = found || listened[i] == cp;
        if (!found)
            problem(pr, "%s container %s: containerPort %ld: nothing listens there", where, k->name,
                    cp);
    }
    /* probes: each port a containerPort; ours on --probe-listen */
    static const char *const probes[] = {"readinessProbe", "livenessProbe"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *pb = cJSON_GetObjectItemCaseSensitive(k->c, probes[i]);
        if (!pb)
            continue;
        const cJSON *port = at(pb, "httpGet.port");
        if (!port)
            port = at(pb, "tcpSocket.port");
        int pn = resolve_port(k->c, port);
        if (pn < 0 || !has_container_port(k->c, pn))
            problem(pr, "%s container %s: %s's port is no containerPort", where, k->name,
                    probes[i]);
    }
    if (k->prog == P_NODE || k->prog == P_CONTROLLER) {
        int probe_port = addr_port(flag_value(k, "--probe-listen"), NULL);
        if (probe_port < 0)
            problem(pr, "%s container %s: no --probe-listen with a port", where, k->name);
        static const char *const paths[] = {"/ready", "/live"};
        for (size_t i = 0; i < 2; i++) {
            const cJSON *pb = cJSON_GetObjectItemCaseSensitive(k->c, probes[i]);
            const char *path = str_at(pb, "httpGet.path");
            if (!path || strcmp(path, paths[i]) != 0 ||
                resolve_port(k->c, at(pb, "httpGet.port")) != probe_port)
                problem(pr, "%s container %s: %s is not GET %s on --probe-listen's port %d", where,
                        k->name, probes[i], paths[i], probe_port);
        }
    }
    /* mounts name the pod's volumes (or the StatefulSet's claims, checked by the caller) */
    (void)spec;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(OUT_MAX);
    size_t n = buf ? fread(buf, 1, OUT_MAX - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* The ServingRuntime of deploy/runtimes/<name>.yaml against the runtime pod. */
static void check_serving_runtime(const struct container *node, const struct container *rt,
                                  const char *where, struct problems *pr)
{
    const char *rt_name = flag_value(node, "--runtime-name");
    if (!rt_name || strcmp(rt_name, rt->name) != 0) {
        problem(pr, "%s: mm-node --runtime-name %s is not the runtime container's name %s", where,
                rt_name, rt->name);
        return;
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/deploy/runtimes/%s.yaml", root, rt_name);
    char *text = read_text(path);
    if (!text) {
        problem(pr, "%s: --runtime-name %s: no %s", where, rt_name, path);
        return;
    }
    struct yamljson *y = NULL;
    struct mm_error err = {0};
    if (yamljson_parse(text, strlen(text), NULL, &y, &err) < 0 || yamljson_count(y) != 1) {
        problem(pr, "%s: %s: %s", where, path, err.msg);
        free(text);
        yamljson_free(y);
        return;
    }
    const cJSON *sr = yamljson_root(y, 0);
    if (!is_kind(sr, "ServingRuntime") || strcmp(name_of(sr), rt_name) != 0)
        problem(pr, "%s: %s is not ServingRuntime %s", where, path, rt_name);
    char types[256] = "";
    const cJSON *fmts = at(sr, "spec.supportedModelFormats");
    for (const cJSON *f = fmts ? fmts->child : NULL; f; f = f->next)
        snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s", types[0] ? "," : "",
                 str_at(f, "name") ? str_at(f, "name") : "?");
    const char *mt = flag_value(node, "--model-types");
    if (!mt || strcmp(mt, types) != 0)
        problem(pr, "%s: mm-node --model-types %s, ServingRuntime %s supports %s", where, mt,
                rt_name, types);
    const cJSON *src = cJSON_GetArrayItem(at(sr, "spec.containers"), 0);
    const char *img = str_at(src, "image"), *ours = str_at(rt->c, "image");
    if (!img || !ours || strcmp(img, ours) != 0)
        problem(pr, "%s: runtime image %s, ServingRuntime %s says %s", where, ours, rt_name, img);
    struct container srk;
    read_container(src, &srk, path, pr);
    for (size_t i = 0; i < srk.n; i++) {
        const char *v = flag_value(rt, srk.flag[i]);
        if (!v || !srk.value[i] || strcmp(v, srk.value[i]) != 0)
            problem(pr, "%s: runtime %s %s, ServingRuntime %s says %s", where, srk.flag[i], v,
                    rt_name, srk.value[i]);
    }
    const char *conc = str_at(sr, "metadata.annotations.maxLoadingConcurrency");
    const char *ours_conc = flag_value(rt, "--max-loading-concurrency");
    if (conc && (!ours_conc || strcmp(conc, ours_conc) != 0))
        problem(pr, "%s: runtime --max-loading-concurrency %s, ServingRuntime %s says %s", where,
                ours_conc, rt_name, conc);
    const char *rt_listen = flag_value(rt, "--listen"), *node_rt = flag_value(node, "--runtime");
    if (!rt_listen || !node_rt || strcmp(rt_listen, node_rt) != 0)
        problem(pr, "%s: mm-node --runtime %s is not the runtime's --listen %s", where, node_rt,
                rt_listen);
    yamljson_free(y);
    free(text);
}

/* A runtime pod: mm-node beside its runtime. */
static void check_runtime_pod(const cJSON *doc, const cJSON *spec, const struct container *node,
                              const struct container *rt, const char *where, struct problems *pr)
{
    if (!is_kind(doc, "StatefulSet"))
        problem(pr, "%s: runtime pods must be a StatefulSet (stable instance ids)", where);
    if (!env_is_field(node->c, "POD_NAME", "metadata.name") || flag_value(node, "--instance-id"))
        problem(pr,
                "%s: mm-node's instance id is not the pod name (POD_NAME from metadata.name, "
                "no --instance-id)",
                where);
    if (!rt) {
        problem(pr, "%s: no runtime container beside mm-node", where);
        return;
    }
    check_serving_runtime(node, rt, where, pr);
    /* models: one emptyDir at one path, the node's --cache-dir and the runtime's --models-dir */
    const char *cache = flag_value(node, "--cache-dir"), *models = flag_value(rt, "--models-dir");
    const cJSON *nm = cache ? mount_of_path(node->c, cache) : NULL;
    const cJSON *rm = models ? mount_of_path(rt->c, models) : NULL;
    const char *nv = str_at(nm, "name"), *rv = str_at(rm, "name");
    if (!cache || !models || strcmp(cache, models) != 0 || !nv || !rv || strcmp(nv, rv) != 0 ||
        !cJSON_IsObject(at(pod_volume(spec, nv), "emptyDir")))
        problem(pr,
                "%s: mm-node --cache-dir %s and the runtime's --models-dir %s are not one "
                "emptyDir mounted at the same path in both",
                where, cache, models);
    const char *sc = flag_value(node, "--storage-config-dir");
    const cJSON *sm = sc ? mount_of_path(node->c, sc) : NULL;
    const char *secret = str_at(pod_volume(spec, str_at(sm, "name")), "secret.secretName");
    if (!sc || !secret || strcmp(secret, "storage-config") != 0 ||
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sm, "readOnly")))
        problem(pr,
                "%s: mm-node --storage-config-dir %s is not the storage-config Secret mounted "
                "read-only",
                where, sc);
    /* grace above the node's shutdown bound */
    const char *st = flag_value(node, "--shutdown-timeout");
    uint64_t ms = 0;
    struct mm_error err = {0};
    long grace = num_at(spec, "terminationGracePeriodSeconds", 30);
    if (!st || opts_ms("--shutdown-timeout", st, 1, UINT64_MAX, &ms, &err) < 0)
        problem(pr, "%s: mm-node has no valid --shutdown-timeout (%s)", where, err.msg);
    else if ((uint64_t)grace * 1000 <= ms)
        problem(pr, "%s: terminationGracePeriodSeconds %ld is not above --shutdown-timeout %s",
                where, grace, st);
}

/* etcd's StatefulSet: one member per replica, named and addressed as its pods. */
static void check_etcd(const cJSON *doc, const struct container *k, const char *where,
                       struct problems *pr)
{
    const char *sts = name_of(doc), *svc = str_at(doc, "spec.serviceName");
    long replicas = num_at(doc, "spec.replicas", 1);
    int peer = addr_port(flag_value(k, "--listen-peer-urls"), NULL);
    if (replicas < 3 || replicas % 2 == 0)
        problem(pr, "%s: %ld replicas (an odd number, 3 or more)", where, replicas);
    const char *name = flag_value(k, "--name");
    if (!name || strcmp(name, "$(POD_NAME)") != 0 ||
        !env_is_field(k->c, "POD_NAME", "metadata.name"))
        problem(pr, "%s: --name is not the pod name", where);
    char want[256];
    snprintf(want, sizeof(want), "http://$(POD_NAME).%s:%d", svc ? svc : "?", peer);
    const char *adv = flag_value(k, "--initial-advertise-peer-urls");
    if (!adv || strcmp(adv, want) != 0)
        problem(pr, "%s: --initial-advertise-peer-urls %s, want %s", where, adv, want);
    const char *ic = flag_value(k, "--initial-cluster");
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s", ic ? ic : "");
    long members = 0;
    char *save = NULL;
    for (char *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save), members++) {
        char member[256];
        snprintf(member, sizeof(member), "%s-%ld=http://%s-%ld.%s:%d", sts, members, sts, members,
                 svc ? svc : "?", peer);
        if (strcmp(m, member) != 0)
            problem(pr, "%s: --initial-cluster member %ld is %s, want %s", where, members, m,
                    member);
    }
    if (members != replicas)
        problem(pr, "%s: --initial-cluster has %ld members, the StatefulSet %ld replicas", where,
                members, replicas);
    const char *data = flag_value(k, "--data-dir");
    bool mounted = false;
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(k->c, "volumeMounts");
    for (const cJSON *m = ms ? ms->child : NULL; m && data; m = m->next) {
        const char *mp = str_at(m, "mountPath");
        size_t l = mp ? strlen(mp) : 0;
        const cJSON *claims = at(doc, "spec.volumeClaimTemplates");
        bool claim = false;
        for (const cJSON *c = claims ? claims->child : NULL; c; c = c->next)
            claim = claim || (str_at(c, "metadata.name") && str_at(m, "name") &&
                              strcmp(str_at(c, "metadata.name"), str_at(m, "name")) == 0);
        mounted = mounted ||
                  (claim && l && strncmp(data, mp, l) == 0 && (data[l] == '/' || data[l] == '\0'));
    }
    if (!mounted)
        problem(pr, "%s: --data-dir %s is not on a volumeClaimTemplate's mount", where, data);
}

static void check_all(cJSON *const *docs, size_t n, struct problems *pr)
{
    size_t namespaces = 0;
    const char *cluster = NULL;
    for (size_t i = 0; i < n; i++) {
        const cJSON *d = docs[i];
        const char *ns = str_at(d, "metadata.namespace");
        if (is_kind(d, "Namespace")) {
            namespaces += strcmp(name_of(d), NS) == 0;
        } else if (!ns || strcmp(ns, NS) != 0) {
            problem(pr, "%s %s: namespace %s, not " NS, str_at(d, "kind"), name_of(d), ns);
        }
    }
    if (namespaces != 1)
        problem(pr, "%zu Namespace " NS " documents, not 1", namespaces);

    size_t runtime_pods = 0, controllers = 0, etcds = 0;
    for (size_t i = 0; i < n; i++) {
        const cJSON *d = docs[i];
        if (!is_workload(d))
            continue;
        char where[160];
        snprintf(where, sizeof(where), "%s %s", str_at(d, "kind"), name_of(d));
        const cJSON *tmpl_labels = at(d, "spec.template.metadata.labels");
        if (!selects(at(d, "spec.selector.matchLabels"), tmpl_labels))
            problem(pr, "%s: selector.matchLabels do not select its pod template", where);
        const cJSON *spec = at(d, "spec.template.spec");
        if (!cJSON_IsTrue(at(spec, "securityContext.runAsNonRoot")))
            problem(pr, "%s: pods not runAsNonRoot", where);
        if (is_kind(d, "StatefulSet")) {
            const char *svc = str_at(d, "spec.serviceName");
            const cJSON *s = svc ? find_doc(docs, n, "Service", svc) : NULL;
            const char *cip = str_at(s, "spec.clusterIP");
            if (!s || !cip || strcmp(cip, "None") != 0 ||
                !selects(at(s, "spec.selector"), tmpl_labels))
                problem(pr, "%s: serviceName %s is no headless Service selecting its pods", where,
                        svc);
        }
        const cJSON *cs = at(spec, "containers");
        struct container ks[8];
        size_t nk = 0;
        const struct container *node = NULL, *rt = NULL;
        for (const cJSON *c = cs ? cs->child : NULL; c && nk < 8; c = c->next) {
            struct container *k = &ks[nk++];
            read_container(c, k, where, pr);
            check_container(spec, k, where, pr);
            const cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "volumeMounts");
            for (const cJSON *m = ms ? ms->child : NULL; m; m = m->next) {
                const char *vn = str_at(m, "name");
                bool claim = false;
                const cJSON *claims = at(d, "spec.volumeClaimTemplates");
                for (const cJSON *t = claims ? claims->child : NULL; t && vn; t = t->next)
                    claim = claim || (str_at(t, "metadata.name") &&
                                      strcmp(str_at(t, "metadata.name"), vn) == 0);
                if (!vn || (!pod_volume(spec, vn) && !claim))
                    problem(pr, "%s container %s: mount of %s: no such volume", where, k->name, vn);
            }
            if (k->prog == P_NODE)
                node = k;
            else if (k->prog == P_RUNTIME || k->prog == P_SKLEARN)
                rt = k;
            if (k->prog == P_NODE || k->prog == P_CONTROLLER) {
                const char *cl = flag_value(k, "--cluster");
                if (!cl)
                    problem(pr, "%s container %s: no --cluster", where, k->name);
                else if (cluster && strcmp(cl, cluster) != 0)
                    problem(pr, "%s container %s: --cluster %s, elsewhere %s", where, k->name, cl,
                            cluster);
                else
                    cluster = cl;
                /* --etcd-endpoints: Services on etcd's client port */
                const char *ep = flag_value(k, "--etcd-endpoints");
                char buf[512];
                snprintf(buf, sizeof(buf), "%s", ep ? ep : "");
                char *save = NULL;
                int eps = 0;
                for (char *u = strtok_r(buf, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
                    eps++;
                    char host[128] = "";
                    int port = addr_port(u, NULL);
                    sscanf(u, "http://%127[^:/]", host);
                    const cJSON *s = find_doc(docs, n, "Service", host);
                    bool ok = false;
                    const cJSON *sp = at(s, "spec.ports");
                    for (const cJSON *p = sp ? sp->child : NULL; p; p = p->next)
                        ok = ok || num_at(p, "port", -1) == port;
                    const cJSON *etcd_sts = find_doc(docs, n, "StatefulSet", "etcd");
                    if (!ok || !selects(at(s, "spec.selector"),
                                        at(etcd_sts, "spec.template.metadata.labels")))
                        problem(pr,
                                "%s container %s: etcd endpoint %s is no Service port of "
                                "etcd's pods",
                                where, k->name, u);
                }
                if (eps == 0)
                    problem(pr, "%s container %s: no --etcd-endpoints", where, k->name);
            }
            if (k->prog == P_ETCD) {
                etcds++;
                check_etcd(d, k, where, pr);
            }
        }
        if (node) {
            runtime_pods++;
            check_runtime_pod(d, spec, node, rt, where, pr);
        }
        if (nk && ks[0].prog == P_CONTROLLER) {
            controllers++;
            if (!is_kind(d, "Deployment") || num_at(d, "spec.replicas", 1) != 2)
                problem(pr, "%s: the controller is not a Deployment of 2 replicas", where);
            const char *sn = flag_value(&ks[0], "--service-name");
            if (!sn || !find_doc(docs, n, "Service", sn))
                problem(pr, "%s: --service-name %s is no Service here", where, sn);
        }
    }
    if (runtime_pods != 2 || controllers != 1 || etcds != 1)
        problem(pr, "%zu runtime workloads (want 2), %zu controller (1), %zu etcd (1)",
                runtime_pods, controllers, etcds);

    /* the Service clients call */
    const cJSON *svc = find_doc(docs, n, "Service", "modelmesh-serving");
    /* the ports the controller's URLs name (grpcUrl 8033, restUrl 8008) and the metrics',
     * each reaching its mm-node flag */
    static const struct {
        int port;
        const char *flag;
    } want[] = {{8033, "--listen"}, {8008, "--rest-listen"}, {2112, "--metrics-listen"}};
    const cJSON *sp[3] = {NULL, NULL, NULL};
    const cJSON *ports = at(svc, "spec.ports");
    if (!svc || cJSON_GetArraySize(ports) != 3) {
        problem(pr, "Service modelmesh-serving: not 3 ports (8033, 8008, 2112)");
        return;
    }
    for (size_t k = 0; k < 3; k++) {
        for (const cJSON *p = ports->child; p; p = p->next)
            if (num_at(p, "port", -1) == want[k].port)
                sp[k] = p;
        if (!sp[k]) {
            problem(pr, "Service modelmesh-serving: no port %d", want[k].port);
            return;
        }
    }
    size_t selected = 0;
    for (size_t i = 0; i < n; i++) {
        const cJSON *d = docs[i];
        if (!is_workload(d) ||
            !selects(at(svc, "spec.selector"), at(d, "spec.template.metadata.labels")))
            continue;
        selected++;
        const cJSON *cs = at(d, "spec.template.spec.containers");
        const cJSON *nodec = NULL;
        for (const cJSON *c = cs ? cs->child : NULL; c; c = c->next)
            if (program_of(c) == P_NODE)
                nodec = c;
        if (!nodec) {
            problem(pr, "Service modelmesh-serving selects %s %s, which has no mm-node",
                    str_at(d, "kind"), name_of(d));
            continue;
        }
        struct container k;
        read_container(nodec, &k, name_of(d), pr);
        for (size_t j = 0; j < 3; j++) {
            int tp = resolve_port(nodec, at(sp[j], "targetPort"));
            if (tp < 0 || tp != addr_port(flag_value(&k, want[j].flag), NULL))
                problem(pr,
                        "Service modelmesh-serving: port %d's targetPort in %s is %d, not "
                        "mm-node's %s port",
                        want[j].port, name_of(d), tp, want[j].flag);
        }
    }
    if (selected != runtime_pods)
        problem(pr, "Service modelmesh-serving selects %zu workloads, there are %zu runtime ones",
                selected, runtime_pods);
}

/* ------------------------------------------------------------------ broken copies */

static cJSON *container_named(cJSON **docs, size_t n, const char *kind, const char *doc,
                              const char *container)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_kind(docs[i], kind) || strcmp(name_of(docs[i]), doc) != 0)
            continue;
        cJSON *cs = (cJSON *)at(docs[i], "spec.template.spec.containers");
        for (cJSON *c = cs ? cs->child : NULL; c; c = c->next)
            if (str_at(c, "name") && strcmp(str_at(c, "name"), container) == 0)
                return c;
    }
    return NULL;
}

static void set_num(cJSON *o, const char *path, double v)
{
    cJSON *x = (cJSON *)at(o, path);
    REQUIRE(cJSON_IsNumber(x));
    cJSON_SetNumberValue(x, v);
}

static void set_str(cJSON *o, const char *path, const char *v)
{
    cJSON *x = (cJSON *)at(o, path);
    REQUIRE(cJSON_IsString(x));
    REQUIRE(cJSON_SetValuestring(x, v) != NULL);
}

/* Apply breakage b to docs; its description. */
static const char *break_docs(int b, cJSON **docs, size_t n)
{
    const char *rt = "modelmesh-serving-mm-runtime";
    cJSON *node = container_named(docs, n, "StatefulSet", rt, "mm-node");
    REQUIRE(node != NULL);
    for (size_t i = 0; i < n; i++) {
        cJSON *d = docs[i];
        switch (b) {
        case 0:
            if (is_kind(d, "Service") && strcmp(name_of(d), "modelmesh-serving") == 0) {
                cJSON *p = cJSON_GetArrayItem(at(d, "spec.ports"), 0);
                cJSON_ReplaceItemInObjectCaseSensitive(p, "targetPort", cJSON_CreateNumber(9999));
            }
            break;
        case 1:
            if (is_kind(d, "StatefulSet") && strcmp(name_of(d), "etcd") == 0)
                set_num(d, "spec.replicas", 5);
            break;
        case 2:
            if (is_kind(d, "StatefulSet") && strcmp(name_of(d), rt) == 0)
                set_num(d, "spec.template.spec.terminationGracePeriodSeconds", 30);
            break;
        case 7:
            if (is_kind(d, "Service") && strcmp(name_of(d), "modelmesh-serving") == 0) {
                cJSON *ps = (cJSON *)at(d, "spec.ports");
                for (cJSON *p = ps ? ps->child : NULL; p; p = p->next)
                    if (num_at(p, "port", -1) == 8008)
                        cJSON_ReplaceItemInObjectCaseSensitive(p, "targetPort",
                                                               cJSON_CreateString("probes"));
            }
            break;
        default:
            break;
        }
    }
    switch (b) {
    case 0:
        return "Service targetPort 9999";
    case 1:
        return "etcd replicas 5";
    case 2:
        return "grace 30 s under a 60 s --shutdown-timeout";
    case 3:
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(node, "args"),
                             cJSON_CreateString("--no-such-flag=1"));
        return "a flag mm-node lacks";
    case 4:
        set_str(node, "readinessProbe.httpGet.path", "/readyz");
        return "readiness path /readyz";
    case 5: {
        cJSON *r = container_named(docs, n, "StatefulSet", rt, "mm-runtime");
        REQUIRE(r != NULL);
        set_str(cJSON_GetArrayItem(at(r, "volumeMounts"), 0), "mountPath", "/elsewhere");
        return "the runtime's models mount elsewhere";
    }
    case 6: {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", "MM_STORAGE_CONFIG_DIRS");
        cJSON_AddStringToObject(e, "value", "/x");
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(node, "env"), e);
        return "an environment name mm-node does not know";
    }
    case 7:
        return "the REST port 8008 sent to the probes port";
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------------ main */

static void get_help(enum prog p, const char *cmd)
{
    int rc = harness_capture(cmd, helps[p], HELP_MAX);
    if (rc != 0 || strlen(helps[p]) < 100)
        fprintf(stderr, "%s (exit %d): %s\n", cmd, rc, helps[p]);
    REQUIRE(strlen(helps[p]) >= 100);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr,
                "usage: %s MM_NODE MM_CONTROLLER MM_RUNTIME PYTHON3 SKLEARN_SERVER "
                "SOURCE_ROOT\n",
                argv[0]);
        return 2;
    }
    root = argv[6];
    char cmd[2048];
    static char out[OUT_MAX];
    const char *kubectl = getenv("KUBECTL") && getenv("KUBECTL")[0] ? getenv("KUBECTL") : "kubectl";
    snprintf(cmd, sizeof(cmd), "command -v '%s'", kubectl);
    if (harness_capture(cmd, out, sizeof(out)) != 0) {
        fprintf(stderr, "kubectl is missing: run scripts/setup.sh (it installs Debian's "
                        "kubernetes-client)\n");
        return 1;
    }
    snprintf(cmd, sizeof(cmd), "'%s' --help", argv[1]);
    get_help(P_NODE, cmd);
    snprintf(cmd, sizeof(cmd), "'%s' --help", argv[2]);
    get_help(P_CONTROLLER, cmd);
    snprintf(cmd, sizeof(cmd), "'%s' --help", argv[3]);
    get_help(P_RUNTIME, cmd);
    snprintf(cmd, sizeof(cmd), "'%s' '%s' --help", argv[4], argv[5]);
    get_help(P_SKLEARN, cmd);
    get_help(P_ETCD, "etcd --help");

    /* the kustomization: only what old kustomize knows */
    snprintf(cmd, sizeof(cmd), "%s/deploy/k8s/kustomization.yaml", root);
    char *kz = read_text(cmd);
    REQUIRE(kz != NULL);
    struct yamljson *y = NULL;
    struct mm_error err = {0};
    REQUIRE(yamljson_parse(kz, strlen(kz), NULL, &y, &err) == 0 && yamljson_count(y) == 1);
    for (const cJSON *f = yamljson_root(y, 0)->child; f; f = f->next) {
        static const char *const allowed[] = {"apiVersion", "kind", "namespace", "resources"};
        bool ok = false;
        for (size_t i = 0; i < 4; i++)
            ok = ok || strcmp(f->string, allowed[i]) == 0;
        if (!ok)
            fprintf(stderr, "kustomization.yaml: %s is more than old kustomize knows\n", f->string);
        CHECK(ok);
    }
    yamljson_free(y);
    free(kz);

    snprintf(cmd, sizeof(cmd), "'%s' kustomize '%s/deploy/k8s'", kubectl, root);
    long long t0 = harness_now_ms();
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "%s (exit %d):\n%s\n", cmd, rc, out);
    REQUIRE(rc == 0);
    REQUIRE(strlen(out) < sizeof(out) - 1);
    rc = yamljson_parse(out, strlen(out), NULL, &y, &err);
    if (rc < 0)
        fprintf(stderr, "the rendered manifests: %s\n", err.msg);
    REQUIRE(rc == 0);
    size_t n = yamljson_count(y);
    fprintf(stderr, "%s kustomize: %zu documents in %lld ms\n", kubectl, n, harness_now_ms() - t0);
    REQUIRE(n > 0 && n < 64);
    cJSON *docs[64];
    for (size_t i = 0; i < n; i++) {
        docs[i] = cJSON_Duplicate(yamljson_root(y, i), true);
        REQUIRE(docs[i] != NULL);
    }

    struct problems pr = {0};
    check_all(docs, n, &pr);
    if (pr.n)
        fprintf(stderr, "deploy/k8s: %d problems:\n%s", pr.n, pr.text);
    CHECK_INT(pr.n, 0);

    /* each breakage must be found */
    for (int b = 0;; b++) {
        cJSON *copy[64];
        for (size_t i = 0; i < n; i++)
            REQUIRE((copy[i] = cJSON_Duplicate(yamljson_root(y, i), true)) != NULL);
        const char *what = break_docs(b, copy, n);
        if (what) {
            struct problems bp = {0};
            check_all(copy, n, &bp);
            char *nl = strchr(bp.text, '\n');
            if (nl)
                *nl = '\0';
            fprintf(stderr, "broken (%s): %d problems, first: %s\n", what, bp.n, bp.text);
            CHECK(bp.n > 0);
        }
        for (size_t i = 0; i < n; i++)
            cJSON_Delete(copy[i]);
        if (!what)
            break;
    }
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(docs[i]);
    yamljson_free(y);
    return CHECK_DONE();
}
