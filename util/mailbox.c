/* mailbox.c - a thread -> loop queue woken by ev_async (see mailbox.h). */
#include "mm/mailbox.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct mailbox {
    struct ev_loop *loop;
    mailbox_deliver_fn deliver;
    void *arg;
    pthread_mutex_t lock;
    struct mailbox_item *head, *tail; /* guarded by lock */
    ev_async wake;
    bool *gone; /* set while delivering: mailbox_free from a callback sets *gone */
};

static struct mailbox_item *pop(struct mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    struct mailbox_item *it = mb->head;
    if (it) {
        mb->head = it->next;
        if (!mb->head)
            mb->tail = NULL;
    }
    pthread_mutex_unlock(&mb->lock);
    return it;
}

/* One item at a time, so that nothing is held outside the queue if a callback frees us. */
static void deliver_all(struct mailbox *mb)
{
    bool gone = false, *outer = mb->gone;
    mb->gone = &gone;
    struct mailbox_item *it;
    while ((it = pop(mb))) {
        it->next = NULL;
        mb->deliver(it, mb->arg);
        if (gone)
            break;
    }
    if (gone) {
        if (outer)
            *outer = true;
        return;
    }
    mb->gone = outer;
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    deliver_all(w->data);
}

int mailbox_new(struct ev_loop *loop, mailbox_deliver_fn deliver, void *arg, struct mailbox **out,
                struct mm_error *err)
{
    struct mailbox *mb = calloc(1, sizeof(*mb));
    if (!mb)
        return mm_error_set(err, -ENOMEM, "mailbox: out of memory");
    mb->loop = loop;
    mb->deliver = deliver;
    mb->arg = arg;
    pthread_mutex_init(&mb->lock, NULL);
    ev_async_init(&mb->wake, on_wake);
    mb->wake.data = mb;
    ev_async_start(loop, &mb->wake);
    *out = mb;
    return 0;
}

void mailbox_post(struct mailbox *mb, struct mailbox_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&mb->lock);
    if (mb->tail)
        mb->tail->next = item;
    else
        mb->head = item;
    mb->tail = item;
    pthread_mutex_unlock(&mb->lock);
    ev_async_send(mb->loop, &mb->wake);
}

void mailbox_free(struct mailbox *mb)
{
    if (!mb)
        return;
    bool *outer = mb->gone;
    mb->gone = NULL;
    deliver_all(mb); /* a callback may free us again: see below */
    if (outer)
        *outer = true; /* freed from inside a delivery: that delivery stops */
    ev_async_stop(mb->loop, &mb->wake);
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}
