/* mailbox.h - hand items from other threads to one libev loop: a locked queue and an ev_async.
 *
 * Owns the queue and the async watcher, not the items: an item is a struct mailbox_item embedded
 * in the poster's own struct (the queue node), so posting never allocates and never fails.
 *
 * Threading: mailbox_post from any thread, the loop's own included. mailbox_new, mailbox_free
 * and the deliver callback are on the loop thread. Items are delivered one at a time, in the
 * order they were posted. While the mailbox lives its watcher keeps the loop running.
 *
 * Lifetime: the creator owns the mailbox. It may be freed from inside its own deliver callback
 * (a dispatching guard stops the delivery in progress). mailbox_free delivers whatever is still
 * queued before it returns, so nothing posted is lost; threads that post must have stopped
 * (joined) by then. */
#ifndef MM_MAILBOX_H
#define MM_MAILBOX_H

#include "mm/error.h"

struct ev_loop;
struct mailbox;

struct mailbox_item {
    struct mailbox_item *next; /* the mailbox's; untouched between post and delivery */
};

/* Runs on the loop for each posted item; arg is mailbox_new's. */
typedef void (*mailbox_deliver_fn)(struct mailbox_item *item, void *arg);

int mailbox_new(struct ev_loop *loop, mailbox_deliver_fn deliver, void *arg, struct mailbox **out,
                struct mm_error *err);
/* Queue item and wake the loop. Any thread. */
void mailbox_post(struct mailbox *mb, struct mailbox_item *item);
/* Deliver what is queued, stop the watcher, free. NULL is a no-op. */
void mailbox_free(struct mailbox *mb);

#endif
