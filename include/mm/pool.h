/* pool.h - a fixed set of worker threads for blocking work (model loads, predictions), with
 * results handed back to the libev loop: `work` runs on a worker, then `done` runs on the loop
 * thread, in no particular order between jobs. The loop never blocks on a job. */
#ifndef MM_POOL_H
#define MM_POOL_H

#include "mm/error.h"

struct ev_loop;
struct pool;

#define POOL_MAX_THREADS 64 /* threads one pool may have */

typedef void (*pool_work_fn)(void *arg);  /* on a worker thread */
typedef void (*pool_done_fn)(void *arg);  /* on the loop thread, after work */

int pool_new(struct ev_loop *loop, unsigned threads, struct pool **out, struct mm_error *err);
/* Queue a job; 0 or -ENOMEM / -ESHUTDOWN. */
int pool_submit(struct pool *p, pool_work_fn work, pool_done_fn done, void *arg);
/* Jobs queued or running. */
unsigned pool_pending(const struct pool *p);
/* Waits for running jobs (their done runs), drops queued ones (never run: drain the pool first
 * when their arguments own resources), joins the threads. From the loop thread, outside any
 * done callback. */
void pool_free(struct pool *p);

#endif
