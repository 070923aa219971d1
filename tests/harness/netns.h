/* netns.h - a network namespace for one pod (chaos scenario 5: a node partitioned from etcd),
 * made with ip(8) and tc(8): a veth pair between the host and the namespace, addresses from
 * 10.213.<k>.0/24 on the pair only (nothing else on the host is touched), and the namespace's
 * own loopback up.
 *   host end:  host_addr (10.213.k.1, what the pod reaches the host at) and etcd_addr
 *              (10.213.k.3: the address etcd listens on for this pod, and nothing else);
 *   pod end:   pod_addr (10.213.k.2): where the pod's processes listen, and where peers, the
 *              gateway and the test reach them.
 * A partition drops packets between the pod and etcd_addr silently, both ways (as a cut
 * cable would: no reset, no ICMP): the node's etcd connections stall, its lease expires in
 * etcd; everything else (peers, the gateway, the test) still reaches the pod.
 *
 * Needs root (CAP_NET_ADMIN): -EPERM otherwise, so that a caller can skip saying why. What is
 * made is removed by harness_netns_destroy, and at exit (atexit and the harness's signal
 * handlers) if still there. */
#ifndef MM_TEST_NETNS_H
#define MM_TEST_NETNS_H

#include <stdbool.h>

struct harness_netns {
    char name[32];      /* "mm<pid>n<k>" */
    char host_if[16];   /* the veth ends: host side, namespace side */
    char pod_if[16];
    char host_addr[16]; /* "10.213.<k>.1" */
    char etcd_addr[16]; /* "10.213.<k>.3" */
    char pod_addr[16];  /* "10.213.<k>.2" */
    bool made;
    bool partitioned;
};

/* Make namespace k (0..255) with its veth pair and addresses; waits until the pod end answers
 * (bounded). 0, -EPERM (not permitted), -EEXIST (k in use), or -errno with ip's message. */
int harness_netns_create(struct harness_netns *ns, unsigned k);
/* argv prefix that runs a program inside it: {"ip", "netns", "exec", name} (4 entries). */
void harness_netns_argv(const struct harness_netns *ns, char *argv[4]);
/* Drop (on) / pass again (off) every packet between the pod and etcd_addr. 0 or -errno. */
int harness_netns_partition(struct harness_netns *ns, bool on);
/* Remove the namespace and the veth pair (idempotent). */
void harness_netns_destroy(struct harness_netns *ns);

#endif
