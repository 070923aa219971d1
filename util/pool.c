/* pool.c - worker threads with completion on the loop (see pool.h). Finished and cancelled
 * jobs go back to the loop through one mailbox; a job's status says which. */
#include "mm/pool.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "mm/mailbox.h"

#define MAX_THREADS POOL_MAX_THREADS
#define MAX_SLOTS (POOL_MAX_THREADS + POOL_MAX_ABANDONED)

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_FINISHED };

struct pool_job {
    struct mailbox_item item;        /* back to the loop; first member */
    struct pool_job *prev, *next;    /* in the queue while JOB_QUEUED */
    struct pool *p;
    enum job_state state;            /* guarded by p->lock */
    bool abandoned;                  /* its thread leaves after it; guarded by p->lock */
    int status;
    pool_work_fn work;
    pool_done_fn done;
    void *arg;
};

/* A thread's place: used from its creation until pool_free joins it; exited once its thread has
 * left (after an abandoned job), when pool_abandon may join it and start another there. */
struct slot {
    struct pool *p;
    pthread_t thread;
    bool used;
    bool exited;                     /* guarded by p->lock */
};

struct pool {
    struct ev_loop *loop;
    struct slot slots[MAX_SLOTS];
    unsigned n_threads;              /* the pool's size */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct pool_job *head, *tail;    /* queued, oldest first; guarded by lock */
    bool stopping;                   /* workers leave; guarded by lock */
    bool refusing;                   /* loop side: pool_stop was called */
    unsigned pending;                /* loop side: accepted, done not yet run */
    unsigned abandoned;              /* loop side: abandoned, done not yet run */
    struct mailbox *back;
};

static void unqueue(struct pool *p, struct pool_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        p->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        p->tail = j->prev;
    j->prev = j->next = NULL;
}

static void *worker(void *arg)
{
    struct slot *slot = arg;
    struct pool *p = slot->p;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stopping)
            break;
        struct pool_job *j = p->head;
        unqueue(p, j);
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&p->lock);
        j->work(j->arg);
        pthread_mutex_lock(&p->lock);
        j->state = JOB_FINISHED;
        j->status = 0;
        bool leave = j->abandoned; /* a replacement has taken this thread's place */
        mailbox_post(p->back, &j->item);
        if (leave) {
            slot->exited = true;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* On the loop: the job's done, after which nothing here touches the pool (done may free it). */
static void deliver(struct mailbox_item *item, void *arg)
{
    struct pool_job *j = (struct pool_job *)item;
    struct pool *p = arg;
    pool_done_fn done = j->done;
    void *job_arg = j->arg;
    int status = j->status;
    p->pending--;
    if (j->abandoned)
        p->abandoned--;
    free(j);
    if (done)
        done(status, job_arg);
}

int pool_new(struct ev_loop *loop, unsigned threads, struct pool **out, struct mm_error *err)
{
    if (threads == 0 || threads > MAX_THREADS)
        return mm_error_set(err, -EINVAL, "pool: threads must be 1..%d (got %u)", MAX_THREADS,
                            threads);
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return mm_error_set(err, -ENOMEM, "pool: out of memory");
    p->loop = loop;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    int rc = mailbox_new(loop, deliver, p, &p->back, err);
    if (rc < 0) {
        pool_free(p);
        return rc;
    }
    for (; p->n_threads < threads; p->n_threads++) {
        struct slot *slot = &p->slots[p->n_threads];
        slot->p = p;
        if (pthread_create(&slot->thread, NULL, worker, slot) != 0) {
            pool_free(p);
            return mm_error_set(err, -EAGAIN, "pool: cannot start worker thread");
        }
        slot->used = true;
    }
    *out = p;
    return 0;
}

int pool_submit(struct pool *p, pool_work_fn work, pool_done_fn done, void *arg,
                struct pool_job **out)
{
    if (p->refusing)
        return -ESHUTDOWN;
    struct pool_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->p = p;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&p->lock);
    j->state = JOB_QUEUED;
    j->prev = p->tail;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    p->pending++;
    if (out)
        *out = j;
    return 0;
}

/* With p->lock held: take a queued job out and send it back cancelled. */
static void cancel_locked(struct pool *p, struct pool_job *j)
{
    unqueue(p, j);
    j->state = JOB_FINISHED;
    j->status = -ECANCELED;
    mailbox_post(p->back, &j->item);
}

int pool_cancel(struct pool_job *j)
{
    struct pool *p = j->p;
    pthread_mutex_lock(&p->lock);
    bool queued = j->state == JOB_QUEUED;
    if (queued)
        cancel_locked(p, j);
    pthread_mutex_unlock(&p->lock);
    return queued ? 0 : -EBUSY;
}

int pool_abandon(struct pool_job *j)
{
    struct pool *p = j->p;
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    struct slot *slot = NULL;
    for (size_t i = 0; i < MAX_SLOTS && !slot; i++)
        if (!p->slots[i].used || p->slots[i].exited)
            slot = &p->slots[i];
    if (j->state != JOB_RUNNING || j->abandoned) {
        rc = -EBUSY;
    } else if (p->abandoned >= POOL_MAX_ABANDONED || !slot) {
        rc = -EAGAIN;
    } else {
        if (slot->used) /* its thread has left (or is leaving: it holds no lock any more) */
            pthread_join(slot->thread, NULL);
        slot->used = slot->exited = false;
        slot->p = p;
        if (pthread_create(&slot->thread, NULL, worker, slot) != 0) {
            rc = -EAGAIN;
        } else {
            slot->used = true;
            j->abandoned = true;
            p->abandoned++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

unsigned pool_abandoned(const struct pool *p)
{
    return p->abandoned;
}

void pool_stop(struct pool *p)
{
    p->refusing = true;
    pthread_mutex_lock(&p->lock);
    while (p->head)
        cancel_locked(p, p->head);
    pthread_mutex_unlock(&p->lock);
}

unsigned pool_pending(const struct pool *p)
{
    return p->pending;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pool_stop(p);
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < MAX_SLOTS; i++)
        if (p->slots[i].used)
            pthread_join(p->slots[i].thread, NULL);
    mailbox_free(p->back); /* every done not yet run runs here */
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}
