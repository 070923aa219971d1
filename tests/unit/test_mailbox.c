/* test_mailbox.c - the thread -> loop mailbox: items posted from several threads arrive on the
 * loop, each once, in each thread's order; mailbox_free delivers what is left; the mailbox may be
 * freed from inside its own delivery. */
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "check.h"
#include "mm/mailbox.h"

enum { THREADS = 4, PER_THREAD = 2000 };

struct note {
    struct mailbox_item item;
    int thread, seq;
};

static struct mailbox *mb;
static int last_seq[THREADS], delivered;
static bool in_order = true;

static void deliver(struct mailbox_item *item, void *arg)
{
    struct note *n = (struct note *)item;
    if (n->seq != last_seq[n->thread] + 1)
        in_order = false;
    last_seq[n->thread] = n->seq;
    delivered++;
    free(n);
}

static void *poster(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 1; i <= PER_THREAD; i++) {
        struct note *n = malloc(sizeof(*n));
        n->thread = t;
        n->seq = i;
        mailbox_post(mb, &n->item);
    }
    return NULL;
}

/* Freed from inside the delivery of its first item; the second is delivered by that free. */
static struct mailbox *self_freeing;
static int self_count;

static void deliver_and_free(struct mailbox_item *item, void *arg)
{
    self_count++;
    free(item);
    if (self_freeing) {
        struct mailbox *m = self_freeing;
        self_freeing = NULL;
        mailbox_free(m);
    }
}

int main(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct mm_error err = {0};
    REQUIRE(mailbox_new(loop, deliver, NULL, &mb, &err) == 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, poster, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < 1000 && delivered < THREADS * PER_THREAD; i++)
        ev_run(loop, EVRUN_ONCE);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    mailbox_free(mb); /* whatever was still queued */
    CHECK_INT(delivered, THREADS * PER_THREAD);
    CHECK(in_order);

    REQUIRE(mailbox_new(loop, deliver_and_free, NULL, &self_freeing, &err) == 0);
    struct mailbox *m = self_freeing;
    for (int i = 0; i < 3; i++)
        mailbox_post(m, malloc(sizeof(struct mailbox_item)));
    ev_run(loop, EVRUN_ONCE);
    CHECK_INT(self_count, 3);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
