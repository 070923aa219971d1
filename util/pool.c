/* pool.c - worker threads with completion on the loop (see pool.h). */
#include "mm/pool.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define MAX_THREADS POOL_MAX_THREADS

struct job {
    struct job *next;
    pool_work_fn work;
    pool_done_fn done;
    void *arg;
};

struct pool {
    struct ev_loop *loop;
    pthread_t threads[MAX_THREADS];
    unsigned n_threads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *queue_head, *queue_tail;  /* waiting for a worker */
    struct job *done_head, *done_tail;    /* finished, waiting for the loop */
    unsigned pending;                     /* loop-side count, queued + running */
    bool stopping;
    ev_async wake;
};

static void *worker(void *arg)
{
    struct pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->queue_head && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stopping)
            break;
        struct job *j = p->queue_head;
        p->queue_head = j->next;
        if (!p->queue_head)
            p->queue_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        j->work(j->arg);
        j->next = NULL;
        pthread_mutex_lock(&p->lock);
        if (p->done_tail)
            p->done_tail->next = j;
        else
            p->done_head = j;
        p->done_tail = j;
        ev_async_send(p->loop, &p->wake);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pool *p = w->data;
    pthread_mutex_lock(&p->lock);
    struct job *j = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (j) {
        struct job *next = j->next;
        p->pending--;
        if (j->done)
            j->done(j->arg);
        free(j);
        j = next;
    }
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
    ev_async_init(&p->wake, on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    for (; p->n_threads < threads; p->n_threads++) {
        if (pthread_create(&p->threads[p->n_threads], NULL, worker, p) != 0) {
            pool_free(p);
            return mm_error_set(err, -EAGAIN, "pool: cannot start worker thread");
        }
    }
    *out = p;
    return 0;
}

int pool_submit(struct pool *p, pool_work_fn work, pool_done_fn done, void *arg)
{
    if (p->stopping)
        return -ESHUTDOWN;
    struct job *j = malloc(sizeof(*j));
    if (!j)
        return -ENOMEM;
    *j = (struct job){NULL, work, done, arg};
    pthread_mutex_lock(&p->lock);
    if (p->queue_tail)
        p->queue_tail->next = j;
    else
        p->queue_head = j;
    p->queue_tail = j;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    p->pending++;
    return 0;
}

unsigned pool_pending(const struct pool *p)
{
    return p->pending;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    on_wake(p->loop, &p->wake, 0); /* finished jobs still get their done */
    for (struct job *j = p->queue_head, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    ev_async_stop(p->loop, &p->wake);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}
