/* lease.h - a lease kept alive: granted, refreshed every TTL/3, and declared lost once a full TTL
 * has passed since the send time of the last confirmed keep-alive (so we never believe in a
 * lease the server may already have expired). After a loss it grants a new lease by itself.
 * The owner re-attaches its keys on every LEASE_GRANTED.
 *
 * Threading: the client's loop thread only.
 * Lifetime: the owner may call lease_free() from inside its own lease_cb (the memory goes when
 * the callback returns; nothing of the lease runs after it). lease_free() cancels the request in
 * flight, so no callback runs after it. Free the lease before its etcd client. */
#ifndef MM_LEASE_H
#define MM_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "mm/error.h"

struct etcd_client;
struct lease;

enum lease_state {
    LEASE_GRANTED, /* a (new) lease id is live: attach keys to lease_id() */
    LEASE_LOST,    /* the lease expired or was revoked: keys attached to it are gone */
};

typedef void (*lease_cb)(struct lease *l, enum lease_state state, const struct mm_error *err,
                         void *arg);

/* Start granting a lease of ttl_s seconds (>= 2). cb runs on the loop thread. */
int lease_new(struct etcd_client *c, int64_t ttl_s, lease_cb cb, void *arg, struct lease **out,
              struct mm_error *err);
/* The live lease id, or 0 while none is held. */
int64_t lease_id(const struct lease *l);
/* Stop keeping alive; revoke = also revoke it now (keys vanish at once) instead of letting it
 * expire. The revoke is sent and not waited for. No callback runs after this. Allowed from
 * inside the lease's callback. NULL is a no-op. */
void lease_free(struct lease *l, bool revoke);

#endif
