/* fault.c - the faults chaos injects into a world (see fault.h). */
#include "fault.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "world.h"

static int check_pod(const struct world *w, size_t pod, const char *what)
{
    if (pod >= w->cfg.n_pods) {
        fprintf(stderr, "fault: %s: no pod %zu (the world has %zu)\n", what, pod, w->cfg.n_pods);
        return -EINVAL;
    }
    return 0;
}

int fault_pod_kill(struct world *w, size_t pod)
{
    int rc = check_pod(w, pod, "pod kill");
    if (rc < 0)
        return rc;
    cluster_pod_kill(&w->cl, pod);
    return 0;
}

int fault_pod_start(struct world *w, size_t pod)
{
    int rc = check_pod(w, pod, "pod start");
    if (rc < 0)
        return rc;
    rc = cluster_pod_start(&w->cl, pod);
    if (rc < 0) {
        fprintf(stderr, "fault: pod %s did not start again: %s\n", w->cl.pods[pod].iid,
                strerror(-rc));
        harness_print_tail(w->cl.pods[pod].node_log, 4000);
    }
    return rc;
}

int fault_pod_roll(struct world *w, size_t pod, long timeout_ms)
{
    int rc = check_pod(w, pod, "pod roll");
    if (rc < 0)
        return rc;
    struct cluster_pod *p = &w->cl.pods[pod];
    if ((rc = cluster_node_signal(&w->cl, pod, SIGTERM)) < 0) {
        fprintf(stderr, "fault: SIGTERM to %s's node: %s\n", p->iid, strerror(-rc));
        return rc;
    }
    int status = cluster_node_wait(&w->cl, pod, timeout_ms);
    if (status == -1) {
        fprintf(stderr, "fault: %s's node did not exit within %ld ms of SIGTERM (killed)\n", p->iid,
                timeout_ms);
        harness_print_tail(p->node_log, 4000);
        cluster_pod_kill(&w->cl, pod);
        fault_pod_start(w, pod);
        return -ETIMEDOUT;
    }
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!clean) {
        if (WIFEXITED(status))
            fprintf(stderr, "fault: %s's node exited %d at SIGTERM\n", p->iid, WEXITSTATUS(status));
        else
            fprintf(stderr, "fault: %s's node died of signal %d at SIGTERM\n", p->iid,
                    WIFSIGNALED(status) ? WTERMSIG(status) : -1);
        harness_print_tail(p->node_log, 4000);
    }
    /* the runtime goes with its pod (the node is gone already: only the runtime is killed) */
    cluster_pod_kill(&w->cl, pod);
    rc = fault_pod_start(w, pod);
    return !clean ? -EIO : rc;
}

int fault_node_freeze(struct world *w, size_t pod)
{
    int rc = check_pod(w, pod, "freeze");
    if (rc < 0)
        return rc;
    pid_t pid = w->cl.pods[pod].node_pid;
    if (pid <= 0)
        return -ESRCH;
    rc = harness_freeze(pid);
    if (rc < 0)
        fprintf(stderr, "fault: freezing %s's node (pid %d): %s\n", w->cl.pods[pod].iid, (int)pid,
                strerror(-rc));
    return rc;
}

int fault_node_thaw(struct world *w, size_t pod)
{
    int rc = check_pod(w, pod, "thaw");
    if (rc < 0)
        return rc;
    pid_t pid = w->cl.pods[pod].node_pid;
    if (pid <= 0)
        return -ESRCH;
    if (kill(pid, SIGCONT) < 0) {
        rc = -errno;
        fprintf(stderr, "fault: SIGCONT to %s's node: %s\n", w->cl.pods[pod].iid, strerror(-rc));
    }
    return rc;
}

/* ---------------------------------------------------------------- etcd */

/* Member k's own id and the leader it knows (etcdctl endpoint status): 0, or -errno. */
static int member_status(struct world *w, size_t k, unsigned long long *id,
                         unsigned long long *leader)
{
    struct harness_etcd *e = cluster_etcd_member(&w->cl, k);
    if (!e || e->pid <= 0)
        return -ESRCH;
    char cmd[512], out[4096];
    snprintf(cmd, sizeof(cmd),
             "ETCDCTL_API=3 etcdctl --endpoints %s --dial-timeout 1s --command-timeout 2s "
             "endpoint status -w json 2>&1",
             e->endpoint);
    if (harness_capture(cmd, out, sizeof(out)) != 0)
        return -EIO;
    cJSON *doc = cJSON_Parse(out);
    const cJSON *first = cJSON_IsArray(doc) ? cJSON_GetArrayItem(doc, 0) : NULL;
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(first, "Status");
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(status, "header");
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(header, "member_id");
    const cJSON *lead = cJSON_GetObjectItemCaseSensitive(status, "leader");
    int rc = -EBADMSG;
    if (cJSON_IsNumber(mid) && cJSON_IsNumber(lead)) {
        /* the ids are 64-bit: cJSON keeps them as doubles, so compare them as such */
        *id = (unsigned long long)mid->valuedouble;
        *leader = (unsigned long long)lead->valuedouble;
        rc = 0;
    }
    cJSON_Delete(doc);
    return rc;
}

int fault_etcd_leader(struct world *w)
{
    size_t n = cluster_etcd_members(&w->cl);
    unsigned long long ids[8] = {0}, leader = 0;
    bool known[8] = {false};
    for (size_t k = 0; k < n && k < 8; k++) {
        unsigned long long l = 0;
        if (member_status(w, k, &ids[k], &l) == 0) {
            known[k] = true;
            if (l)
                leader = l;
        }
    }
    for (size_t k = 0; leader && k < n && k < 8; k++)
        if (known[k] && ids[k] == leader)
            return (int)k;
    return -1;
}

int fault_etcd_kill(struct world *w, size_t k)
{
    if (k >= cluster_etcd_members(&w->cl))
        return -EINVAL;
    return harness_etcd_kill(cluster_etcd_member(&w->cl, k));
}

int fault_etcd_start(struct world *w, size_t k, bool wait_healthy)
{
    if (k >= cluster_etcd_members(&w->cl))
        return -EINVAL;
    struct harness_etcd *e = cluster_etcd_member(&w->cl, k);
    int rc = wait_healthy ? harness_etcd_restart(e) : harness_etcd_launch(e);
    if (rc < 0)
        fprintf(stderr, "fault: etcd member %s did not start again: %s\n", e->name, strerror(-rc));
    return rc;
}

/* ---------------------------------------------------------------- network, storage */

int fault_partition(struct world *w, bool on)
{
    if (!w->ns.made)
        return -ENODEV;
    int rc = harness_netns_partition(&w->ns, on);
    if (rc < 0)
        fprintf(stderr, "fault: partition %s of %s: %s\n", on ? "on" : "off", w->ns.name,
                strerror(-rc));
    return rc;
}

int fault_storage(struct world *w, bool down)
{
    if (w->storage.pid <= 0)
        return -ENODEV;
    const struct faultproxy_fault gone = {.kind = FAULTPROXY_RESET, .count = -1};
    const struct faultproxy_fault none = {.kind = FAULTPROXY_NONE};
    faultproxy_set(&w->storage, down ? &gone : &none);
    return 0;
}

/* ---------------------------------------------------------------- controllers */

int fault_controller_leader_kill(struct world *w, size_t *which)
{
    int k = cluster_controller_leader(&w->cl);
    if (k < 0) {
        fprintf(stderr, "fault: no controller leads (%s)\n", k == -1 ? "none named" : strerror(-k));
        return k == -1 ? -ENOENT : k;
    }
    cluster_controller_kill(&w->cl, (size_t)k);
    if (which)
        *which = (size_t)k;
    return 0;
}

int fault_controller_start(struct world *w, size_t k)
{
    int rc = cluster_controller_start(&w->cl, k);
    if (rc < 0)
        fprintf(stderr, "fault: controller %zu did not start: %s\n", k, strerror(-rc));
    return rc;
}
