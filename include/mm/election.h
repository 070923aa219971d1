/* election.h - leader election on an etcd lease. The leader holds `key` (created only if absent,
 * in one txn) attached to its own lease; followers watch the key and campaign again when it is
 * deleted or expires. The value is the election record of records.h:
 * {"v":1,"leader":"<identity>","since_ms":N}. Leadership ends when the lease is lost (as lease.h
 * defines it), on resign, or on free.
 *
 * Threading: the client's loop thread only.
 * Lifetime: the owner may call election_free() from inside its own election_cb (the memory goes
 * when the callback returns; nothing of the election runs after it). election_free() cancels
 * the campaign in flight and stops the watch, so no callback runs after it. Free the election
 * before its etcd client. */
#ifndef MM_ELECTION_H
#define MM_ELECTION_H

#include <stdbool.h>
#include <stdint.h>

#include "mm/error.h"

struct etcd_client;
struct election;

enum election_state {
    ELECTION_LEADER,   /* we hold the key */
    ELECTION_FOLLOWER, /* someone else does; leader() names them */
};

typedef void (*election_cb)(struct election *e, enum election_state state, void *arg);

/* identity: non-empty, under 256 bytes. */
int election_new(struct etcd_client *c, const char *key, const char *identity, int64_t ttl_s,
                 election_cb cb, void *arg, struct election **out, struct mm_error *err);
bool election_is_leader(const struct election *e);
/* Identity of the current leader as last seen ("" if unknown). */
const char *election_leader(const struct election *e);
/* Give up leadership (if held) by revoking our lease, and stop campaigning. Allowed from inside
 * the election's callback. NULL is a no-op. */
void election_free(struct election *e);

#endif
