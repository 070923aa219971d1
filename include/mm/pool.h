/* pool.h - a fixed set of worker threads for blocking work (model loads, predictions), with
 * results handed back to the libev loop: `work` runs on a worker, then `done` runs on the loop
 * thread, in no particular order between jobs. The loop never blocks on a job.
 *
 * Owns its threads and its job records, not the jobs' arguments.
 *
 * Threading: every function here is called on the loop thread; `work` runs on a worker, `done`
 * on the loop thread.
 *
 * Lifetime and cancellation: every job accepted by pool_submit gets its `done` exactly once:
 * with 0 after `work` ran, or with -ECANCELED when it was dropped before it started (pool_cancel,
 * pool_stop, pool_free). A running job is never interrupted. The job handle is valid until its
 * `done` starts. The pool may be freed from inside a `done` callback (the remaining callbacks of
 * that delivery then run inside pool_free, as below). */
#ifndef MM_POOL_H
#define MM_POOL_H

#include "mm/error.h"

struct ev_loop;
struct pool;
struct pool_job;

#define POOL_MAX_THREADS 64   /* threads one pool may have */
#define POOL_MAX_ABANDONED 16 /* threads of abandoned jobs one pool may have besides */

typedef void (*pool_work_fn)(void *arg);              /* on a worker thread */
/* On the loop thread, once per job: status 0 after work, -ECANCELED if work never ran. */
typedef void (*pool_done_fn)(int status, void *arg);

int pool_new(struct ev_loop *loop, unsigned threads, struct pool **out, struct mm_error *err);
/* Queue a job; 0 or -ENOMEM / -ESHUTDOWN (after pool_stop; done is not called then). out (may
 * be NULL) gets a handle for pool_cancel, valid until done starts. */
int pool_submit(struct pool *p, pool_work_fn work, pool_done_fn done, void *arg,
                struct pool_job **out);
/* Drop a job that has not started: 0, and its done runs with -ECANCELED on the loop shortly
 * after (never inside pool_cancel). -EBUSY if it is running or has run: it completes normally. */
int pool_cancel(struct pool_job *j);
/* Stop waiting for a running job (a model load blocked on storage, which nothing can interrupt
 * safely): a new thread takes its thread's place in the pool, so queued jobs go on; the job's
 * work goes on too, its done runs once after work returns (its arg must live until then), and
 * its thread then leaves. 0; -EBUSY if the job is not running (queued: pool_cancel it) or
 * already abandoned; -EAGAIN if POOL_MAX_ABANDONED jobs of this pool are abandoned and still
 * running, or no thread can be started. */
int pool_abandon(struct pool_job *j);
/* Abandoned jobs whose done has not run yet. */
unsigned pool_abandoned(const struct pool *p);
/* Refuse new jobs (-ESHUTDOWN) and cancel every queued one as pool_cancel does; running jobs go
 * on. For a graceful stop: their done callbacks tell when the pool is idle (pool_pending). */
void pool_stop(struct pool *p);
/* Jobs accepted whose done has not run yet (queued, running, or waiting for the loop). */
unsigned pool_pending(const struct pool *p);
/* Stop, wait for running jobs (a job stuck in work blocks this: stop and wait first if that can
 * happen), then run every outstanding done before returning: 0 for jobs that ran, -ECANCELED
 * for queued ones. From the loop thread, inside a done callback too. */
void pool_free(struct pool *p);

#endif
