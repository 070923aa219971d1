/* cluster.c - a local mesh of real processes for tests and benchmarks (see cluster.h). */
#include "cluster.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netns.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/yamljson.h"
#include "mm/rpc.h"
#include "mm/spi.h"

#define SIZE_CALL_MS 10000

int64_t cluster_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool cluster_node_has_listen(const char *mm_node)
{
    char cmd[1200], out[16384];
    snprintf(cmd, sizeof(cmd), "'%s' --help", mm_node);
    int rc = harness_capture(cmd, out, sizeof(out));
    return rc == 0 && strstr(out, "--listen") != NULL;
}

/* ---------------------------------------------------------------- temp dir */

static char temp_dirs[4][256];
static pid_t temp_owner;

static void remove_dir(const char *dir)
{
    if (!dir[0])
        return;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static void remove_temp_dirs(void)
{
    if (getpid() != temp_owner)
        return;
    for (size_t i = 0; i < sizeof(temp_dirs) / sizeof(temp_dirs[0]); i++) {
        remove_dir(temp_dirs[i]);
        temp_dirs[i][0] = '\0';
    }
}

static void keep_temp_dir(const char *dir, bool on)
{
    static bool registered;
    if (!registered) {
        registered = true;
        temp_owner = getpid();
        atexit(remove_temp_dirs);
    }
    for (size_t i = 0; i < sizeof(temp_dirs) / sizeof(temp_dirs[0]); i++) {
        if (on && !temp_dirs[i][0]) {
            snprintf(temp_dirs[i], sizeof(temp_dirs[i]), "%s", dir);
            return;
        }
        if (!on && strcmp(temp_dirs[i], dir) == 0) {
            temp_dirs[i][0] = '\0';
            return;
        }
    }
}

int cluster_make_dirs(const char *path)
{
    char buf[1024];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---------------------------------------------------------------- processes */

/* Split a space-separated list into argv slots after *n (bounded); buf is modified. */
static void add_args(char **argv, int *n, int max, char *buf)
{
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t && *n < max - 1; t = strtok_r(NULL, " ", &save))
        argv[(*n)++] = t;
}

/* Where pod i's processes listen and are reached: its namespace's pod_addr, or loopback. */
static const char *pod_host(const struct cluster *c, size_t i)
{
    const struct harness_netns *ns = c->cfg.pod_runtimes[i].netns;
    return ns ? ns->pod_addr : "127.0.0.1";
}

/* argv's prefix that runs a program in pod i's namespace (none on the host): its length. */
static int pod_prefix(const struct cluster *c, size_t i, char **argv)
{
    const struct harness_netns *ns = c->cfg.pod_runtimes[i].netns;
    if (!ns)
        return 0;
    harness_netns_argv(ns, argv);
    return 4;
}

static int runtime_start(struct cluster *c, size_t i, int port)
{
    struct cluster_pod *p = &c->pods[i];
    if (p->runtime_pid > 0)
        return -EALREADY;
    char cap[32], dflt[32], timeout[32], conc[32], listen[64];
    char *argv[40];
    int n = pod_prefix(c, i, argv);
    const struct cluster_pod_runtime *pr = &c->cfg.pod_runtimes[i];
    snprintf(listen, sizeof(listen), "%s:%d", pod_host(c, i), port);
    if (pr->program) {
        if (pr->interpreter)
            argv[n++] = (char *)pr->interpreter;
        argv[n++] = (char *)pr->program;
    } else {
        if (c->cfg.runtime_interpreter)
            argv[n++] = (char *)c->cfg.runtime_interpreter;
        argv[n++] = (char *)c->cfg.mm_runtime;
    }
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--models-dir"; /* what the node downloads or links */
    argv[n++] = p->cache_dir;
    argv[n++] = "--models-dir"; /* what a link from the cache dir leads to (pvc, local) */
    argv[n++] = c->models_root;
    argv[n++] = "--log-level";
    argv[n++] = "info";
    if (c->cfg.capacity_bytes) {
        snprintf(cap, sizeof(cap), "%llu", (unsigned long long)c->cfg.capacity_bytes);
        argv[n++] = "--capacity-bytes";
        argv[n++] = cap;
    }
    if (c->cfg.default_model_size) {
        snprintf(dflt, sizeof(dflt), "%llu", (unsigned long long)c->cfg.default_model_size);
        argv[n++] = "--default-model-size";
        argv[n++] = dflt;
    }
    if (c->cfg.runtime_load_timeout_ms) {
        snprintf(timeout, sizeof(timeout), "%u", c->cfg.runtime_load_timeout_ms);
        argv[n++] = "--load-timeout-ms";
        argv[n++] = timeout;
    }
    if (c->cfg.max_loading_concurrency) {
        snprintf(conc, sizeof(conc), "%u", c->cfg.max_loading_concurrency);
        argv[n++] = "--max-loading-concurrency";
        argv[n++] = conc;
    }
    argv[n] = NULL;
    int rc = harness_spawn_logged(argv, p->runtime_log, CLUSTER_START_MS, &p->runtime_pid,
                                  &p->runtime_port);
    if (rc < 0) {
        p->runtime_pid = 0;
        return rc;
    }
    char target[64];
    struct mm_error err = {0};
    snprintf(target, sizeof(target), "%s:%d", pod_host(c, i), p->runtime_port);
    rc = spi_client_new(c->rpc, target, &p->spi, &err);
    if (rc < 0)
        fprintf(stderr, "cluster: SPI client of %s's runtime: %s\n", p->iid, err.msg);
    return rc;
}

int cluster_runtime_start(struct cluster *c, size_t i)
{
    return runtime_start(c, i, 0);
}

/* The etcd endpoints pod i's node is given: every member's, at the namespace's etcd_addr for
 * a pod in one. */
static void pod_endpoints(struct cluster *c, size_t i, char *out, size_t size)
{
    const struct harness_netns *ns = c->cfg.pod_runtimes[i].netns;
    if (!ns) {
        snprintf(out, size, "%s", c->etcd_endpoints);
        return;
    }
    size_t used = 0;
    out[0] = '\0';
    for (size_t k = 0; k < cluster_etcd_members(c) && used < size; k++) {
        const struct harness_etcd *e = cluster_etcd_member(c, k);
        used += (size_t)snprintf(out + used, size - used, "%shttp://%s:%d", k ? "," : "",
                                 ns->etcd_addr, e->client_port);
    }
}

static int node_start(struct cluster *c, size_t i, int port)
{
    struct cluster_pod *p = &c->pods[i];
    if (p->node_pid > 0)
        return -EALREADY;
    if (p->runtime_pid <= 0)
        return -ENOTCONN;
    /* Fixed ports, so that a node started again is where it was (and --listen's port 0 is not
     * relied on); LISTENING must still name it. The internal port is where peers forward to
     * (the instance record's address). */
    if (port <= 0)
        port = harness_free_port();
    if (port < 0)
        return port;
    int iport = p->internal_port ? p->internal_port : harness_free_port();
    if (iport < 0)
        return iport;
    p->internal_port = iport;
    const char *host = pod_host(c, i);
    bool in_ns = c->cfg.pod_runtimes[i].netns != NULL;
    char runtime[64], listen[64], internal[64], side[64], endpoints[sizeof(c->etcd_endpoints)];
    char extra[sizeof(c->node_args)];
    snprintf(runtime, sizeof(runtime), "%s:%d", host, p->runtime_port);
    snprintf(listen, sizeof(listen), "%s:%d", host, port);
    snprintf(internal, sizeof(internal), "%s:%d", in_ns ? host : c->internal_host, iport);
    snprintf(side, sizeof(side), "%s:0", host);
    pod_endpoints(c, i, endpoints, sizeof(endpoints));
    memcpy(extra, c->node_args, sizeof(extra));
    char *argv[104];
    int n = pod_prefix(c, i, argv);
    char *fixed[] = {(char *)c->cfg.mm_node,
                     "--etcd-endpoints", endpoints,
                     "--cluster", c->name,
                     "--instance-id", p->iid,
                     "--runtime", runtime,
                     "--model-types", (char *)(c->cfg.pod_runtimes[i].model_types
                                                   ? c->cfg.pod_runtimes[i].model_types
                                               : c->cfg.model_types ? c->cfg.model_types
                                                                    : "xgboost"),
                     "--internal-listen", internal,
                     "--listen", listen,
                     "--models-root", c->models_root,
                     "--cache-dir", p->cache_dir,
                     "--lease-ttl", (char *)(c->cfg.lease_ttl ? c->cfg.lease_ttl : "2s"),
                     "--publish-min-interval", "100ms",
                     "--probe-listen", side,
                     "--rest-listen", side,
                     "--metrics-listen", side,
                     "--log-level", "info"};
    for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
        argv[n++] = fixed[k];
    if (in_ns) { /* said, though it is what the node would derive from --internal-listen */
        argv[n++] = "--internal-address";
        argv[n++] = internal;
    }
    if (c->cfg.pod_runtimes[i].runtime_name) {
        argv[n++] = "--runtime-name";
        argv[n++] = (char *)c->cfg.pod_runtimes[i].runtime_name;
    }
    add_args(argv, &n, 104, extra);
    argv[n] = NULL;
    long long t0 = harness_now_ms();
    int got = 0;
    struct stat st;
    long offset = stat(p->node_log, &st) == 0 ? (long)st.st_size : 0;
    int rc = harness_spawn_logged(argv, p->node_log, CLUSTER_START_MS, &p->node_pid, &got);
    if (rc < 0) {
        p->node_pid = 0;
        return rc;
    }
    p->node_probe_port = harness_probe_port(p->node_log, offset);
    p->node_rest_port = harness_rest_port(p->node_log, offset);
    p->node_metrics_port = harness_metrics_port(p->node_log, offset);
    p->node_started_ms = harness_now_ms();
    p->node_start_took_ms = p->node_started_ms - t0;
    if (got != port)
        fprintf(stderr, "cluster: %s announced LISTENING %d, asked to listen on %d\n", p->iid,
                got, port);
    p->node_port = got;
    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "%s:%d", host, got);
    rc = rpc_channel_new(c->rpc, target, 0, &p->api, &err);
    if (rc < 0)
        fprintf(stderr, "cluster: channel to %s: %s\n", p->iid, err.msg);
    return rc;
}

int cluster_node_start(struct cluster *c, size_t i)
{
    return node_start(c, i, 0);
}

int cluster_pod_start(struct cluster *c, size_t i)
{
    if (i >= c->cfg.n_pods)
        return -EINVAL;
    struct cluster_pod *p = &c->pods[i];
    int rc = 0;
    if (p->runtime_pid <= 0) {
        int was = p->runtime_port;
        rc = runtime_start(c, i, was);
        if (rc == -ECHILD && was > 0) {
            fprintf(stderr, "cluster: %s's runtime could not have port %d again; another\n",
                    p->iid, was);
            rc = runtime_start(c, i, 0);
        }
        if (rc < 0)
            return rc;
    }
    int was = p->node_port;
    rc = node_start(c, i, was);
    if (rc == -ECHILD && was > 0) {
        fprintf(stderr, "cluster: %s's node could not have port %d again; another\n", p->iid,
                was);
        rc = node_start(c, i, 0);
    }
    return rc;
}

int cluster_node_signal(struct cluster *c, size_t i, int sig)
{
    struct cluster_pod *p = &c->pods[i];
    if (p->node_pid <= 0)
        return -ESRCH;
    return kill(p->node_pid, sig) == 0 ? 0 : -errno;
}

static void node_gone(struct cluster *c, size_t i)
{
    struct cluster_pod *p = &c->pods[i];
    p->node_pid = 0;
    if (p->api)
        rpc_channel_free(p->api);
    p->api = NULL;
}

int cluster_node_wait(struct cluster *c, size_t i, long ms)
{
    struct cluster_pod *p = &c->pods[i];
    if (p->node_pid <= 0)
        return -1;
    int status = harness_wait_pid(p->node_pid, ms);
    if (status != -1)
        node_gone(c, i);
    return status;
}

static void runtime_gone(struct cluster *c, size_t i)
{
    struct cluster_pod *p = &c->pods[i];
    p->runtime_pid = 0;
    spi_client_free(p->spi);
    p->spi = NULL;
}

void cluster_pod_kill(struct cluster *c, size_t i)
{
    struct cluster_pod *p = &c->pods[i];
    if (p->node_pid > 0)
        kill(p->node_pid, SIGKILL);
    if (p->runtime_pid > 0)
        kill(p->runtime_pid, SIGKILL);
    if (p->node_pid > 0) {
        harness_wait_pid(p->node_pid, 5000);
        node_gone(c, i);
    }
    if (p->runtime_pid > 0) {
        harness_wait_pid(p->runtime_pid, 5000);
        runtime_gone(c, i);
    }
}

int cluster_pod_of(const struct cluster *c, const char *iid, size_t len)
{
    for (size_t i = 0; i < c->cfg.n_pods; i++)
        if (strlen(c->pods[i].iid) == len && memcmp(c->pods[i].iid, iid, len) == 0)
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------- start and stop */

/* etcd: one member or a cluster of them, each also on cfg.etcd_listen_host when given; the
 * endpoints everyone on the host is given. Where the host's pods serve peers. */
static int start_etcd(struct cluster *c)
{
    const char *host = c->cfg.etcd_listen_host;
    snprintf(c->internal_host, sizeof(c->internal_host), "127.0.0.1");
    for (size_t i = c->cfg.n_pods; i-- > 0;) {
        const struct harness_netns *ns = c->cfg.pod_runtimes[i].netns;
        if (!ns)
            continue;
        if (!host || strcmp(host, ns->etcd_addr) != 0) {
            fprintf(stderr, "cluster: pod %zu is in namespace %s, whose etcd_addr %s is not "
                            "etcd_listen_host (%s)\n", i, ns->name, ns->etcd_addr,
                    host ? host : "none");
            return -EINVAL;
        }
        snprintf(c->internal_host, sizeof(c->internal_host), "%s", ns->host_addr);
    }
    size_t n = c->cfg.etcd_members ? c->cfg.etcd_members : 1;
    if (n > CLUSTER_MAX_ETCD)
        return -EINVAL;
    int rc = n == 1 ? harness_etcd_start_on(&c->etcd, NULL, host)
                    : harness_etcd_cluster_start_on(c->etcd_cluster, n, NULL, host);
    if (rc < 0) {
        fprintf(stderr, "cluster: etcd (%zu member%s): %s\n", n, n == 1 ? "" : "s",
                strerror(-rc));
        return rc;
    }
    size_t used = 0;
    for (size_t k = 0; k < n; k++)
        used += (size_t)snprintf(c->etcd_endpoints + used, sizeof(c->etcd_endpoints) - used,
                                 "%s%s", k ? "," : "", cluster_etcd_member(c, k)->endpoint);
    return 0;
}

size_t cluster_etcd_members(const struct cluster *c)
{
    return c->cfg.etcd_members > 1 ? c->cfg.etcd_members : 1;
}

struct harness_etcd *cluster_etcd_member(struct cluster *c, size_t k)
{
    if (k >= cluster_etcd_members(c))
        return NULL;
    return c->cfg.etcd_members > 1 ? &c->etcd_cluster[k] : &c->etcd;
}

/* The value of `"Name" : <number>` in etcdctl's -w fields output, or 0. */
static unsigned long long field_number(const char *out, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "\"%s\" : ", name);
    const char *at = strstr(out, key);
    return at ? strtoull(at + strlen(key), NULL, 10) : 0;
}

int cluster_etcd_leader(struct cluster *c)
{
    size_t n = cluster_etcd_members(c);
    unsigned long long ids[CLUSTER_MAX_ETCD] = {0}, leader = 0;
    for (size_t k = 0; k < n; k++) {
        struct harness_etcd *e = cluster_etcd_member(c, k);
        if (e->pid <= 0)
            continue;
        char cmd[512], out[4096];
        snprintf(cmd, sizeof(cmd),
                 "ETCDCTL_API=3 etcdctl --endpoints %s --command-timeout 2s endpoint status "
                 "-w fields",
                 e->endpoint);
        if (harness_capture(cmd, out, sizeof(out)) != 0)
            continue;
        ids[k] = field_number(out, "MemberID");
        unsigned long long l = field_number(out, "Leader");
        if (l)
            leader = l;
    }
    for (size_t k = 0; leader && k < n; k++)
        if (ids[k] == leader)
            return (int)k;
    return -1;
}

int cluster_start(struct cluster *c, const struct cluster_config *cfg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    if (!cfg->mm_node || !cfg->mm_runtime || cfg->n_pods == 0 || cfg->n_pods > CLUSTER_MAX_PODS)
        return -EINVAL;
    snprintf(c->name, sizeof(c->name), "%s", cfg->name ? cfg->name : "c");
    const char *more = getenv("MM_TEST_NODE_ARGS"); /* e.g. "--log-level debug" for a run */
    snprintf(c->node_args, sizeof(c->node_args), "%s %s", cfg->node_args ? cfg->node_args : "",
             more ? more : "");
    c->cfg.name = c->name;
    c->cfg.node_args = c->node_args;
    const char *tmp = getenv("TMPDIR");
    snprintf(c->dir, sizeof(c->dir), "%s/mm-cluster-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(c->dir)) {
        c->dir[0] = '\0';
        return -errno;
    }
    keep_temp_dir(c->dir, true);
    snprintf(c->models_root, sizeof(c->models_root), "%s/models", c->dir);
    int rc = cluster_make_dirs(c->models_root);
    for (size_t i = 0; rc == 0 && i < cfg->n_pods; i++) {
        struct cluster_pod *p = &c->pods[i];
        snprintf(p->iid, sizeof(p->iid), "n%zu", i);
        snprintf(p->cache_dir, sizeof(p->cache_dir), "%s/cache-%s", c->dir, p->iid);
        snprintf(p->runtime_log, sizeof(p->runtime_log), "%s/%s-runtime.log", c->dir, p->iid);
        snprintf(p->node_log, sizeof(p->node_log), "%s/%s-node.log", c->dir, p->iid);
        rc = cluster_make_dirs(p->cache_dir);
    }
    if (rc < 0) {
        fprintf(stderr, "cluster: temp dirs under %s: %s\n", c->dir, strerror(-rc));
        return rc;
    }
    for (size_t k = 0; k < CLUSTER_MAX_CONTROLLERS; k++) {
        snprintf(c->controllers[k].identity, sizeof(c->controllers[k].identity), "ctl%zu", k);
        snprintf(c->controllers[k].log, sizeof(c->controllers[k].log), "%s/controller-%zu.log",
                 c->dir, k);
    }
    rc = start_etcd(c);
    if (rc < 0)
        return rc;
    struct mm_error err = {0};
    c->loop = ev_loop_new(EVFLAG_AUTO);
    if (!c->loop)
        return -ENOMEM;
    struct etcd_config ecfg = {.endpoints = c->etcd_endpoints};
    rc = etcd_client_new(c->loop, &ecfg, &c->etcd_client, &err);
    if (rc == 0)
        rc = rpc_context_new(c->loop, &c->rpc, &err);
    if (rc < 0) {
        fprintf(stderr, "cluster: clients: %s\n", err.msg);
        return rc;
    }
    if (cfg->runtimes_dir && (rc = cluster_apply_runtimes(c, cfg->runtimes_dir)) > 0)
        rc = 0;
    for (size_t i = 0; rc == 0 && i < cfg->n_pods; i++)
        rc = cluster_runtime_start(c, i);
    for (size_t i = 0; rc == 0 && !cfg->start_nodes_later && i < cfg->n_pods; i++)
        rc = cluster_node_start(c, i);
    if (rc < 0)
        fprintf(stderr, "cluster: start: %s\n", strerror(-rc));
    return rc;
}

int cluster_gateway_start(struct cluster *c)
{
    if (!c->cfg.mm_gateway)
        return -EINVAL;
    if (c->gateway_pid > 0)
        return -EALREADY;
    snprintf(c->gateway_log, sizeof(c->gateway_log), "%s/gateway.log", c->dir);
    char extra[256];
    snprintf(extra, sizeof(extra), "%s", c->cfg.gateway_args ? c->cfg.gateway_args : "");
    char *argv[32] = {(char *)c->cfg.mm_gateway, "--etcd-endpoints", c->etcd_endpoints,
                      "--cluster", c->name, "--gateway-id", "gw0", "--listen", "127.0.0.1:0",
                      "--probe-listen", "127.0.0.1:0", "--rest-listen", "127.0.0.1:0",
                      "--metrics-listen", "127.0.0.1:0",
                      "--log-level", "info"};
    int n = 17;
    add_args(argv, &n, 32, extra);
    argv[n] = NULL;
    struct stat st;
    long offset = stat(c->gateway_log, &st) == 0 ? (long)st.st_size : 0;
    int rc = harness_spawn_logged(argv, c->gateway_log, CLUSTER_START_MS, &c->gateway_pid,
                                  &c->gateway_port);
    if (rc < 0) {
        c->gateway_pid = 0;
        return rc;
    }
    c->gateway_probe_port = harness_probe_port(c->gateway_log, offset);
    c->gateway_rest_port = harness_rest_port(c->gateway_log, offset);
    c->gateway_metrics_port = harness_metrics_port(c->gateway_log, offset);
    struct mm_error err = {0};
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", c->gateway_port);
    rc = rpc_channel_new(c->rpc, target, 0, &c->gateway, &err);
    if (rc < 0)
        fprintf(stderr, "cluster: channel to the gateway: %s\n", err.msg);
    return rc;
}

/* ---------------------------------------------------------------- runtimes and controllers */

static int get_record(struct cluster *c, const char *key, enum record_kind kind, void *rec,
                      int64_t *lease);

static int apply_runtime_file(struct cluster *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cluster: %s: %s\n", path, strerror(errno));
        return -errno;
    }
    char *text = malloc(YAMLJSON_MAX_BYTES);
    size_t len = text ? fread(text, 1, YAMLJSON_MAX_BYTES, f) : 0;
    fclose(f);
    if (!text)
        return -ENOMEM;
    struct yamljson *y = NULL;
    struct mm_error err = {0};
    int rc = yamljson_parse(text, len, NULL, &y, &err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "cluster: %s: %s\n", path, err.msg);
        return rc;
    }
    int applied = 0;
    for (size_t i = 0; rc >= 0 && i < yamljson_count(y); i++) {
        const cJSON *doc = yamljson_root(y, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(doc, "metadata"), "name");
        char key[KEYS_MAX];
        char *json = cJSON_PrintUnformatted(doc);
        if (!cJSON_IsString(name) || !json ||
            keys_runtime(key, sizeof(key), c->name, name->valuestring, &err) < 0) {
            fprintf(stderr, "cluster: %s: document %zu: no usable metadata.name %s\n", path,
                    i + 1, err.msg);
            rc = -EINVAL;
        } else if ((rc = etcd_sync_put(c->etcd_client, key, json, 0, NULL, &err)) < 0) {
            fprintf(stderr, "cluster: put %s: %s\n", key, err.msg);
        } else {
            applied++;
        }
        free(json);
    }
    yamljson_free(y);
    return rc < 0 ? rc : applied;
}

int cluster_apply_runtimes(struct cluster *c, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cluster: runtimes dir %s: %s\n", dir, strerror(errno));
        return -errno;
    }
    int total = 0, rc = 0;
    struct dirent *de;
    while (rc >= 0 && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        rc = apply_runtime_file(c, path);
        if (rc > 0)
            total += rc;
    }
    closedir(d);
    return rc < 0 ? rc : total;
}

/* Wait until the log has a line "LEADING" or "FOLLOWING ..." past offset. */
static int wait_role(const char *log, long offset, pid_t pid, long ms)
{
    long long until = harness_now_ms() + ms;
    while (harness_now_ms() < until) {
        FILE *f = fopen(log, "r");
        if (f) {
            fseek(f, offset, SEEK_SET);
            char line[512];
            while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "LEADING", 7) == 0 || strncmp(line, "FOLLOWING", 9) == 0) {
                    fclose(f);
                    return 0;
                }
            }
            fclose(f);
        }
        if (harness_wait_pid(pid, 20) != -1)
            return -ECHILD;
    }
    return -ETIMEDOUT;
}

int cluster_controller_start(struct cluster *c, size_t k)
{
    if (!c->cfg.mm_controller || k >= CLUSTER_MAX_CONTROLLERS)
        return -EINVAL;
    struct cluster_controller *ct = &c->controllers[k];
    if (ct->pid > 0)
        return -EALREADY;
    char extra[1024];
    const char *more = getenv("MM_TEST_CONTROLLER_ARGS");
    snprintf(extra, sizeof(extra), "%s %s", c->cfg.controller_args ? c->cfg.controller_args : "",
             more ? more : "");
    char *argv[64] = {(char *)c->cfg.mm_controller, "--etcd-endpoints", c->etcd_endpoints,
                      "--cluster", c->name, "--identity", ct->identity, "--lease-ttl",
                      (char *)(c->cfg.controller_lease_ttl ? c->cfg.controller_lease_ttl : "2s"),
                      "--replace-delay", "500ms", "--probe-listen", "127.0.0.1:0",
                      "--metrics-listen", "127.0.0.1:0", "--log-level", "info"};
    int n = 0;
    while (argv[n])
        n++;
    add_args(argv, &n, 64, extra);
    argv[n] = NULL;
    struct stat st;
    long offset = stat(ct->log, &st) == 0 ? (long)st.st_size : 0;
    int rc = harness_spawn(argv, ct->log, &ct->pid);
    if (rc < 0) {
        ct->pid = 0;
        return rc;
    }
    rc = wait_role(ct->log, offset, ct->pid, CLUSTER_START_MS);
    if (rc < 0) {
        fprintf(stderr, "cluster: controller %s did not announce its role: %s\n", ct->identity,
                strerror(-rc));
        harness_print_tail(ct->log, 4096);
        if (rc == -ECHILD)
            ct->pid = 0;
        else
            cluster_controller_kill(c, k);
        return rc;
    }
    ct->started_ms = harness_now_ms();
    ct->probe_port = harness_probe_port(ct->log, offset);
    ct->metrics_port = harness_metrics_port(ct->log, offset);
    return 0;
}

void cluster_controller_kill(struct cluster *c, size_t k)
{
    struct cluster_controller *ct = &c->controllers[k];
    if (ct->pid <= 0)
        return;
    kill(ct->pid, SIGKILL);
    harness_wait_pid(ct->pid, 5000);
    ct->pid = 0;
}

int cluster_controller_stop(struct cluster *c, size_t k, long ms)
{
    struct cluster_controller *ct = &c->controllers[k];
    if (ct->pid <= 0)
        return -1;
    kill(ct->pid, SIGTERM);
    int status = harness_wait_pid(ct->pid, ms);
    if (status != -1)
        ct->pid = 0;
    return status;
}

int cluster_controller_leader(struct cluster *c)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    int rc = keys_election(key, sizeof(key), c->name, &err);
    if (rc < 0)
        return rc;
    struct election_record er;
    rc = get_record(c, key, RECORD_ELECTION, &er, NULL);
    if (rc <= 0)
        return rc < 0 ? rc : -1;
    for (size_t k = 0; k < CLUSTER_MAX_CONTROLLERS; k++)
        if (strcmp(c->controllers[k].identity, er.leader) == 0)
            return (int)k;
    return -1;
}

int cluster_start_with(struct cluster *c, const struct cluster_config *cfg, bool with_gateway,
                       bool with_controller)
{
    int rc = cluster_start(c, cfg);
    if (rc == 0 && with_gateway)
        rc = cluster_gateway_start(c);
    if (rc == 0 && with_controller)
        rc = cluster_controller_start(c, 0);
    if (rc < 0) {
        cluster_dump_logs(c, true);
        cluster_free(c);
    }
    return rc;
}

void cluster_free(struct cluster *c)
{
    for (size_t k = 0; k < CLUSTER_MAX_CONTROLLERS; k++) {
        if (c->controllers[k].pid > 0)
            harness_stop_pid(c->controllers[k].pid, 3000);
        c->controllers[k].pid = 0;
    }
    if (c->gateway_pid > 0) {
        harness_stop_pid(c->gateway_pid, 3000);
        c->gateway_pid = 0;
    }
    if (c->gateway)
        rpc_channel_free(c->gateway);
    c->gateway = NULL;
    for (size_t i = 0; i < c->cfg.n_pods; i++) {
        struct cluster_pod *p = &c->pods[i];
        if (p->node_pid > 0) {
            harness_stop_pid(p->node_pid, 3000);
            node_gone(c, i);
        }
        if (p->runtime_pid > 0) {
            harness_stop_pid(p->runtime_pid, 3000);
            runtime_gone(c, i);
        }
    }
    if (c->rpc)
        rpc_context_free(c->rpc);
    c->rpc = NULL;
    etcd_client_free(c->etcd_client);
    c->etcd_client = NULL;
    if (c->loop)
        ev_loop_destroy(c->loop);
    c->loop = NULL;
    harness_etcd_cleanup(&c->etcd);
    for (size_t k = 0; c->cfg.etcd_members > 1 && k < c->cfg.etcd_members; k++)
        harness_etcd_cleanup(&c->etcd_cluster[k]);
    if (c->dir[0] && getenv("MM_TEST_KEEP") && getenv("MM_TEST_KEEP")[0]) {
        fprintf(stderr, "cluster: logs and caches kept in %s (MM_TEST_KEEP)\n", c->dir);
        keep_temp_dir(c->dir, false);
        c->dir[0] = '\0';
    }
    if (c->dir[0]) {
        remove_dir(c->dir);
        keep_temp_dir(c->dir, false);
        c->dir[0] = '\0';
    }
}

/* ---------------------------------------------------------------- files */

int cluster_put_file(struct cluster *c, const char *rel, const void *data, size_t len)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s/%s", c->models_root, rel) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    char *slash = strrchr(path, '/');
    *slash = '\0';
    int rc = cluster_make_dirs(path);
    *slash = '/';
    if (rc < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    const char *b = data;
    while (len > 0) {
        ssize_t n = write(fd, b, len);
        if (n < 0) {
            rc = -errno;
            break;
        }
        b += n;
        len -= (size_t)n;
    }
    close(fd);
    return rc;
}

int cluster_copy_file(struct cluster *c, const char *src, const char *rel)
{
    FILE *f = fopen(src, "rb");
    if (!f)
        return -errno;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > 256L * 1024 * 1024) {
        fclose(f);
        return -EFBIG;
    }
    char *buf = malloc((size_t)size + 1);
    int rc = buf ? 0 : -ENOMEM;
    if (rc == 0 && fread(buf, 1, (size_t)size, f) != (size_t)size)
        rc = -EIO;
    fclose(f);
    if (rc == 0)
        rc = cluster_put_file(c, rel, buf, (size_t)size);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- the registry */

int cluster_copies(struct cluster *c, const char *model, struct cluster_copy *out, size_t max)
{
    char prefix[KEYS_MAX];
    struct mm_error err = {0};
    int rc = model ? keys_copies_of(prefix, sizeof(prefix), c->name, model, &err)
                   : (snprintf(prefix, sizeof(prefix), "/modelmesh/%s/copies/", c->name), 0);
    if (rc < 0) {
        fprintf(stderr, "cluster: %s\n", err.msg);
        return rc;
    }
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    struct etcd_response *r = NULL;
    rc = etcd_sync_range(c->etcd_client, &req, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "cluster: range %s: %s\n", prefix, err.msg);
        return rc;
    }
    size_t n = 0;
    for (size_t k = 0; k < r->op.n_kvs && rc == 0; k++) {
        const struct etcd_kv *kv = &r->op.kvs[k];
        struct key_parts parts;
        if (keys_parse(kv->key, kv->key_len, c->name, &parts) < 0 || parts.kind != KEY_COPY) {
            fprintf(stderr, "cluster: %s is not a copy key\n", kv->key);
            rc = -EINVAL;
            break;
        }
        if (n < max) {
            struct cluster_copy *o = &out[n];
            memcpy(o->model, parts.first, parts.first_len);
            o->model[parts.first_len] = '\0';
            memcpy(o->iid, parts.second, parts.second_len);
            o->iid[parts.second_len] = '\0';
            o->lease = kv->lease;
            o->mod_revision = kv->mod_revision;
            if (record_decode(RECORD_COPY, kv->value, kv->value_len, &o->rec, &err) < 0) {
                fprintf(stderr, "cluster: %s: %s\n", kv->key, err.msg);
                rc = -EINVAL;
            }
        }
        n++;
    }
    etcd_response_free(r);
    return rc < 0 ? rc : (int)n;
}

static int get_record(struct cluster *c, const char *key, enum record_kind kind, void *rec,
                      int64_t *lease)
{
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = etcd_sync_range(c->etcd_client, &req, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "cluster: range %s: %s\n", key, err.msg);
        return rc;
    }
    rc = r->op.n_kvs == 1;
    if (rc == 1) {
        if (lease)
            *lease = r->op.kvs[0].lease;
        if (rec &&
            record_decode(kind, r->op.kvs[0].value, r->op.kvs[0].value_len, rec, &err) < 0) {
            fprintf(stderr, "cluster: %s: %s\n", key, err.msg);
            rc = -EINVAL;
        }
    }
    etcd_response_free(r);
    return rc;
}

int cluster_instance(struct cluster *c, const char *iid, struct instance_record *rec,
                     int64_t *lease)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    int rc = keys_instance(key, sizeof(key), c->name, iid, &err);
    return rc < 0 ? rc : get_record(c, key, RECORD_INSTANCE, rec, lease);
}

int cluster_model(struct cluster *c, const char *id, struct model_record *rec)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    int rc = keys_model(key, sizeof(key), c->name, id, &err);
    return rc < 0 ? rc : get_record(c, key, RECORD_MODEL, rec, NULL);
}

int cluster_count(struct cluster *c, const char *rel)
{
    char key[KEYS_MAX];
    snprintf(key, sizeof(key), "/modelmesh/%s/%s", c->name, rel);
    struct etcd_range_req req = {.key = key, .prefix = true, .count_only = true};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = etcd_sync_range(c->etcd_client, &req, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "cluster: count %s: %s\n", key, err.msg);
        return rc;
    }
    rc = (int)r->op.count;
    etcd_response_free(r);
    return rc;
}

/* ---------------------------------------------------------------- runtimes */

struct size_wait {
    bool done;
    int code;
    grpc_status_code status;
    uint64_t size;
    char msg[MM_ERROR_MSG_MAX];
};

static void size_cb(const struct spi_result *res, void *arg)
{
    struct size_wait *w = arg;
    w->done = true;
    w->code = res->code;
    w->status = res->status;
    w->size = res->size_bytes;
    snprintf(w->msg, sizeof(w->msg), "%s", res->err.msg);
}

struct size_batch {
    struct size_wait *w;
    size_t n;
};

static bool sizes_done(void *arg)
{
    struct size_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        if (!b->w[i].done)
            return false;
    return true;
}

int cluster_runtime_sizes(struct cluster *c, size_t i, const char *const *models, size_t n,
                          uint64_t *sizes)
{
    struct cluster_pod *p = &c->pods[i];
    if (!p->spi)
        return -ENOTCONN;
    struct size_wait *w = calloc(n ? n : 1, sizeof(*w));
    struct spi_request **req = calloc(n ? n : 1, sizeof(*req));
    int rc = w && req ? 0 : -ENOMEM;
    for (size_t j = 0; rc == 0 && j < n; j++)
        if (spi_model_size(p->spi, models[j], SIZE_CALL_MS, size_cb, &w[j], &req[j]) < 0)
            w[j] = (struct size_wait){.done = true, .code = -EIO, .msg = "could not start"};
    struct size_batch b = {w, n};
    if (rc == 0 && !harness_run_until(c->loop, sizes_done, &b, SIZE_CALL_MS + 2000)) {
        for (size_t j = 0; j < n; j++)
            if (!w[j].done)
                spi_request_cancel(req[j]);
        fprintf(stderr, "cluster: %s's runtime: modelSize unanswered\n", p->iid);
        rc = -ETIMEDOUT;
    }
    int held = 0;
    for (size_t j = 0; rc == 0 && j < n; j++) {
        sizes[j] = 0;
        if (w[j].code == 0) {
            sizes[j] = w[j].size;
            held++;
        } else if (w[j].code != -ENOENT) {
            fprintf(stderr, "cluster: %s's runtime: modelSize %s: %s\n", p->iid, models[j],
                    w[j].msg);
            rc = w[j].code;
        }
    }
    free(w);
    free(req);
    return rc < 0 ? rc : held;
}

/* ---------------------------------------------------------------- misc */

int cluster_etcdctl(struct cluster *c, const char *args, char *out, size_t size)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints %s %s", c->etcd_endpoints, args);
    return harness_capture(cmd, out, size);
}

void cluster_run(struct cluster *c, long long ms)
{
    harness_run_until(c->loop, NULL, NULL, ms);
}

void cluster_dump_logs(const struct cluster *c, bool with_runtimes)
{
    if (c->gateway_log[0])
        harness_print_tail(c->gateway_log, 4000);
    for (size_t k = 0; c->cfg.mm_controller && k < CLUSTER_MAX_CONTROLLERS; k++) {
        struct stat st;
        if (stat(c->controllers[k].log, &st) == 0)
            harness_print_tail(c->controllers[k].log, 6000);
    }
    for (size_t i = 0; i < c->cfg.n_pods; i++) {
        harness_print_tail(c->pods[i].node_log, 6000);
        if (with_runtimes)
            harness_print_tail(c->pods[i].runtime_log, 2000);
    }
}
