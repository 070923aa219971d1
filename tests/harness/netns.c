/* netns.c - a network namespace for one pod, and a silent partition from etcd (see netns.h).
 *
 * Everything is done with ip(8) and tc(8) through the shell (harness_capture), naming only the
 * namespace and the veth pair made here. The partition needs no tc action modules (kernels
 * without CONFIG_NET_CLS_ACT): each veth end gets an htb root whose unclassified packets pass
 * at full speed (its direct queue), and a u32 filter that sends the packets to or from
 * etcd_addr into a class whose leaf is a pfifo of limit 0, which drops all it is given. The
 * sender's stack sees a local queue drop (no error, no reset) and retransmits into the void,
 * as over a cut cable. */
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define NETNS_MAX 16
#define NETNS_READY_MS 5000

/* What was made and not yet removed, by value: removed at exit or on a fatal signal. */
static struct harness_netns made[NETNS_MAX];

static int run(const char *what, const char *cmd, bool quiet)
{
    char out[2048];
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc == 0)
        return 0;
    if (!quiet)
        fprintf(stderr, "netns: %s failed (exit %d): %s\n  command: %s\n", what, rc, out, cmd);
    if (strstr(out, "Operation not permitted") || strstr(out, "Permission denied"))
        return -EPERM;
    if (strstr(out, "File exists"))
        return -EEXIST;
    return -EIO;
}

static void remove_made(struct harness_netns *ns)
{
    char cmd[256];
    /* deleting one end deletes the pair, also while processes still hold the namespace */
    snprintf(cmd, sizeof(cmd), "ip link del %s 2>/dev/null; ip netns del %s 2>/dev/null; true",
             ns->host_if, ns->name);
    char out[256];
    harness_capture(cmd, out, sizeof(out));
}

static void remove_all(void)
{
    for (size_t i = 0; i < NETNS_MAX; i++)
        if (made[i].made) {
            remove_made(&made[i]);
            made[i].made = false;
        }
}

static void track(const struct harness_netns *ns, bool on)
{
    static bool registered;
    if (!registered) {
        registered = true;
        harness_at_cleanup(remove_all);
    }
    for (size_t i = 0; i < NETNS_MAX; i++) {
        if (on && !made[i].made) {
            made[i] = *ns;
            return;
        }
        if (!on && made[i].made && strcmp(made[i].name, ns->name) == 0) {
            made[i].made = false;
            return;
        }
    }
}

/* Whether the pod end answers: a connection to a port nobody listens on is refused at once
 * when the pair is up (a reset from the namespace's stack). */
static bool pod_answers(const char *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
    inet_pton(AF_INET, addr, &a.sin_addr);
    bool answered = false;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 200) == 1) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            answered = err == 0 || err == ECONNREFUSED;
        }
    } else {
        answered = errno == ECONNREFUSED;
    }
    close(fd);
    return answered;
}

int harness_netns_create(struct harness_netns *ns, unsigned k)
{
    memset(ns, 0, sizeof(*ns));
    if (k > 255)
        return -EINVAL;
    if (geteuid() != 0)
        return -EPERM;
    int pid = (int)getpid() % 10000000;
    snprintf(ns->name, sizeof(ns->name), "mm%dn%u", pid, k);
    snprintf(ns->host_if, sizeof(ns->host_if), "vh%dn%u", pid, k);
    snprintf(ns->pod_if, sizeof(ns->pod_if), "vp%dn%u", pid, k);
    snprintf(ns->host_addr, sizeof(ns->host_addr), "10.213.%u.1", k);
    snprintf(ns->pod_addr, sizeof(ns->pod_addr), "10.213.%u.2", k);
    snprintf(ns->etcd_addr, sizeof(ns->etcd_addr), "10.213.%u.3", k);

    /* k in use (by another test process): its addresses are on the host already */
    char cmd[1024], out[1024];
    snprintf(cmd, sizeof(cmd), "ip -o addr show to 10.213.%u.0/24", k);
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0) {
        fprintf(stderr, "netns: ip addr show failed (exit %d): %s\n", rc, out);
        return -EIO;
    }
    if (out[0]) {
        fprintf(stderr, "netns: 10.213.%u.0/24 is in use on this host already:\n%s", k, out);
        return -EEXIST;
    }
    rc = run("ip netns add", (snprintf(cmd, sizeof(cmd), "ip netns add %s", ns->name), cmd), false);
    if (rc < 0)
        return rc;
    ns->made = true;
    track(ns, true);
    snprintf(cmd, sizeof(cmd),
             "set -e; ip link add %s type veth peer name %s netns %s; "
             "ip addr add %s/24 dev %s; ip addr add %s/32 dev %s; ip link set %s up; "
             "ip -n %s addr add %s/24 dev %s; ip -n %s link set %s up; ip -n %s link set lo up; "
             /* other namespaces' host ends (another netns pod's peers) through this one */
             "ip -n %s route add 10.213.0.0/16 via %s",
             ns->host_if, ns->pod_if, ns->name, ns->host_addr, ns->host_if, ns->etcd_addr,
             ns->host_if, ns->host_if, ns->name, ns->pod_addr, ns->pod_if, ns->name, ns->pod_if,
             ns->name, ns->name, ns->host_addr);
    rc = run("veth pair", cmd, false);
    for (long long end = harness_now_ms() + NETNS_READY_MS;
         rc == 0 && !pod_answers(ns->pod_addr);) {
        if (harness_now_ms() >= end) {
            fprintf(stderr, "netns: %s (%s) does not answer within %d ms\n", ns->name, ns->pod_addr,
                    NETNS_READY_MS);
            rc = -ETIMEDOUT;
        }
        usleep(10000);
    }
    if (rc < 0)
        harness_netns_destroy(ns);
    return rc;
}

void harness_netns_argv(const struct harness_netns *ns, char *argv[4])
{
    argv[0] = "ip";
    argv[1] = "netns";
    argv[2] = "exec";
    argv[3] = (char *)ns->name;
}

int harness_netns_partition(struct harness_netns *ns, bool on)
{
    if (!ns->made)
        return -ENODEV;
    if (on == ns->partitioned)
        return 0;
    char cmd[2048];
    int rc;
    if (on) {
        /* host end: what etcd_addr sends; pod end: what goes to etcd_addr */
        const char *ends[2][3] = {{"", ns->host_if, "src"}, {ns->name, ns->pod_if, "dst"}};
        size_t used = (size_t)snprintf(cmd, sizeof(cmd), "set -e; ");
        for (size_t i = 0; i < 2; i++) {
            char tc[64];
            snprintf(tc, sizeof(tc), "tc%s%s", ends[i][0][0] ? " -n " : "", ends[i][0]);
            used += (size_t)snprintf(
                cmd + used, sizeof(cmd) - used,
                "%s qdisc add dev %s root handle 1: htb default 0; "
                "%s class add dev %s parent 1: classid 1:9 htb rate 1mbit; "
                "%s qdisc add dev %s parent 1:9 handle 9: pfifo limit 0; "
                "%s filter add dev %s parent 1: protocol ip prio 1 u32 match ip %s %s/32 "
                "flowid 1:9; ",
                tc, ends[i][1], tc, ends[i][1], tc, ends[i][1], tc, ends[i][1], ends[i][2],
                ns->etcd_addr);
        }
        cmd[used > 2 && used < sizeof(cmd) ? used - 2 : 0] = '\0'; /* no trailing "; " */
        rc = run("partition", cmd, false);
        if (rc < 0) { /* leave nothing half made */
            snprintf(cmd, sizeof(cmd), "tc qdisc del dev %s root; tc -n %s qdisc del dev %s root",
                     ns->host_if, ns->name, ns->pod_if);
            run("partition undone", cmd, true);
            return rc;
        }
    } else {
        snprintf(cmd, sizeof(cmd), "tc qdisc del dev %s root; tc -n %s qdisc del dev %s root",
                 ns->host_if, ns->name, ns->pod_if);
        rc = run("partition off", cmd, false);
        if (rc < 0)
            return rc;
    }
    ns->partitioned = on;
    return 0;
}

void harness_netns_destroy(struct harness_netns *ns)
{
    if (!ns->made)
        return;
    remove_made(ns);
    track(ns, false);
    ns->made = false;
    ns->partitioned = false;
}
