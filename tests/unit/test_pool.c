/* test_pool.c - the worker pool on a real loop and real threads: every job's done runs exactly
 * once, with 0 after its work or -ECANCELED when it was dropped before starting (pool_cancel,
 * pool_stop, pool_free); a running job is never dropped; the pool may be freed from inside a
 * done callback. Each job's record is malloc'd and freed by its done, so under ASan a done that
 * never ran is a leak and one that ran twice a double free. */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "mm/pool.h"

static struct ev_loop *loop;

/* A gate that holds workers until opened. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int waiting; /* workers inside a gated job */

static void gate_set(bool open)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = open;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static int gate_waiting(void)
{
    pthread_mutex_lock(&gate_lock);
    int n = waiting;
    pthread_mutex_unlock(&gate_lock);
    return n;
}

struct record {
    int id;
    bool gated;      /* work waits at the gate */
    bool worked;     /* set by work */
    int *done_count; /* per-test tallies, indexed by id */
    int *status;
};

static void work(void *arg)
{
    struct record *r = arg;
    if (r->gated) {
        pthread_mutex_lock(&gate_lock);
        waiting++;
        while (!gate_open)
            pthread_cond_wait(&gate_cond, &gate_lock);
        waiting--;
        pthread_mutex_unlock(&gate_lock);
    }
    r->worked = true;
}

static void done(int status, void *arg)
{
    struct record *r = arg;
    r->done_count[r->id]++;
    r->status[r->id] = status;
    /* a job that ran has status 0; one that did not, -ECANCELED */
    CHECK(r->worked == (status == 0));
    free(r);
}

static struct record *record(int id, bool gated, int *count, int *status)
{
    struct record *r = calloc(1, sizeof(*r));
    REQUIRE(r);
    *r = (struct record){id, gated, false, count, status};
    return r;
}

/* Run the loop until every one of n jobs has had its done, or 5 s. */
static bool all_done(const int *count, int n)
{
    for (long long i = 0; i < 500; i++) {
        int k = 0;
        for (int j = 0; j < n; j++)
            k += count[j] > 0;
        if (k == n)
            return true;
        ev_run(loop, EVRUN_NOWAIT);
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void wait_for_workers(int n)
{
    for (int i = 0; i < 500 && gate_waiting() < n; i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    REQUIRE(gate_waiting() == n);
}

/* pool_cancel: a queued job is dropped (done -ECANCELED, once, work never ran); a running one
 * answers -EBUSY and completes with 0. */
static void test_cancel(void)
{
    int count[3] = {0}, status[3] = {0};
    struct pool *p = NULL;
    struct mm_error err = {0};
    REQUIRE(pool_new(loop, 1, &p, &err) == 0);
    gate_set(false);
    struct pool_job *running = NULL, *queued = NULL, *kept = NULL;
    REQUIRE(pool_submit(p, work, done, record(0, true, count, status), &running) == 0);
    wait_for_workers(1);
    REQUIRE(pool_submit(p, work, done, record(1, false, count, status), &queued) == 0);
    REQUIRE(pool_submit(p, work, done, record(2, false, count, status), &kept) == 0);
    CHECK_INT(pool_pending(p), 3);
    CHECK_INT(pool_cancel(queued), 0);
    CHECK_INT(pool_cancel(running), -EBUSY);
    CHECK_INT(count[1], 0); /* never inside pool_cancel */
    gate_set(true);
    CHECK(all_done(count, 3));
    CHECK_INT(count[0], 1);
    CHECK_INT(status[0], 0);
    CHECK_INT(count[1], 1);
    CHECK_INT(status[1], -ECANCELED);
    CHECK_INT(count[2], 1);
    CHECK_INT(status[2], 0);
    CHECK_INT(pool_pending(p), 0);
    pool_free(p);
    CHECK_INT(count[0] + count[1] + count[2], 3); /* nothing twice */
}

/* pool_stop drops what is queued and refuses more; pool_free then runs every outstanding done
 * before it returns: 0 for the job that was running, -ECANCELED for those still queued. */
static void test_stop_and_free(void)
{
    enum { N = 6 };
    int count[N] = {0}, status[N] = {0};
    struct pool *p = NULL;
    struct mm_error err = {0};
    REQUIRE(pool_new(loop, 1, &p, &err) == 0);
    gate_set(false);
    REQUIRE(pool_submit(p, work, done, record(0, true, count, status), NULL) == 0);
    wait_for_workers(1);
    for (int i = 1; i < 3; i++)
        REQUIRE(pool_submit(p, work, done, record(i, false, count, status), NULL) == 0);
    pool_stop(p);
    struct record *refused = record(3, false, count, status);
    CHECK_INT(pool_submit(p, work, done, refused, NULL), -ESHUTDOWN);
    free(refused);
    CHECK(all_done(count + 1, 2)); /* the dropped ones come back on the loop */
    CHECK_INT(status[1], -ECANCELED);
    CHECK_INT(status[2], -ECANCELED);
    CHECK_INT(count[0], 0);
    gate_set(true);
    pool_free(p); /* waits for job 0 and runs its done */
    CHECK_INT(count[0], 1);
    CHECK_INT(status[0], 0);

    /* pool_free with jobs queued and none delivered yet */
    int c2[N] = {0}, s2[N] = {0};
    REQUIRE(pool_new(loop, 2, &p, &err) == 0);
    gate_set(false);
    for (int i = 0; i < N; i++)
        REQUIRE(pool_submit(p, work, done, record(i, true, c2, s2), NULL) == 0);
    wait_for_workers(2);
    gate_set(true);
    pool_free(p);
    int ran = 0, dropped = 0;
    for (int i = 0; i < N; i++) {
        CHECK_INT(c2[i], 1);
        ran += s2[i] == 0;
        dropped += s2[i] == -ECANCELED;
    }
    CHECK(ran >= 2 && ran + dropped == N);
}

/* The pool freed from inside a done callback: the other outstanding dones run inside that
 * pool_free, none twice, nothing touched after. */
static struct pool *freed_from_done;
static int free_count[8], free_status[8];

static void done_and_free(int status, void *arg)
{
    done(status, arg);
    if (freed_from_done) {
        struct pool *p = freed_from_done;
        freed_from_done = NULL;
        pool_free(p);
    }
}

static void test_free_from_done(void)
{
    struct pool *p = NULL;
    struct mm_error err = {0};
    REQUIRE(pool_new(loop, 2, &p, &err) == 0);
    gate_set(false);
    for (int i = 0; i < 8; i++)
        REQUIRE(pool_submit(p, work, done_and_free, record(i, i < 2, free_count, free_status),
                            NULL) == 0);
    wait_for_workers(2);
    freed_from_done = p;
    gate_set(true);
    CHECK(all_done(free_count, 8));
    CHECK(freed_from_done == NULL);
    int ran = 0;
    for (int i = 0; i < 8; i++) {
        CHECK_INT(free_count[i], 1);
        ran += free_status[i] == 0;
    }
    CHECK(ran >= 1);
    ev_run(loop, EVRUN_NOWAIT); /* nothing of the pool is left on the loop */
}

/* pool_abandon: a running job given up on no longer holds its thread's place, so a queued job
 * runs on a pool of one thread while it is stuck; its done still runs once, with 0, after its
 * work returns; at most POOL_MAX_ABANDONED at once; a queued or finished job is not abandoned. */
static void test_abandon(void)
{
    enum { N = POOL_MAX_ABANDONED + 3 };
    int count[N] = {0}, status[N] = {0};
    struct pool_job *jobs[N];
    struct pool *p = NULL;
    struct mm_error err = {0};
    REQUIRE(pool_new(loop, 1, &p, &err) == 0);
    gate_set(false);
    REQUIRE(pool_submit(p, work, done, record(0, true, count, status), &jobs[0]) == 0);
    wait_for_workers(1);
    REQUIRE(pool_submit(p, work, done, record(1, false, count, status), &jobs[1]) == 0);
    CHECK_INT(pool_abandon(jobs[1]), -EBUSY); /* queued: not running */
    CHECK_INT(pool_abandon(jobs[0]), 0);
    CHECK_INT(pool_abandon(jobs[0]), -EBUSY); /* already */
    CHECK_INT(pool_abandoned(p), 1);
    CHECK(all_done(count + 1, 1)); /* job 1 ran beside the stuck one */
    CHECK_INT(status[1], 0);
    CHECK_INT(count[0], 0);
    /* Fill the pool with stuck jobs up to the bound: each gets a replacement thread. */
    for (int i = 2; i < 1 + POOL_MAX_ABANDONED; i++) {
        REQUIRE(pool_submit(p, work, done, record(i, true, count, status), &jobs[i]) == 0);
        wait_for_workers(i);
        CHECK_INT(pool_abandon(jobs[i]), 0);
    }
    CHECK_INT(pool_abandoned(p), POOL_MAX_ABANDONED);
    int last = 1 + POOL_MAX_ABANDONED;
    REQUIRE(pool_submit(p, work, done, record(last, true, count, status), &jobs[last]) == 0);
    wait_for_workers(POOL_MAX_ABANDONED + 1);
    CHECK_INT(pool_abandon(jobs[last]), -EAGAIN); /* the bound: it keeps its thread */
    gate_set(true);
    CHECK(all_done(count, last + 1));
    for (int i = 0; i <= last; i++) {
        CHECK_INT(count[i], 1);
        CHECK_INT(status[i], 0);
    }
    CHECK_INT(pool_abandoned(p), 0);
    CHECK_INT(pool_pending(p), 0);
    /* The threads that left made room: abandoning works again, reusing their places. */
    gate_set(false);
    int again = last + 1;
    REQUIRE(pool_submit(p, work, done, record(again, true, count, status), &jobs[again]) == 0);
    wait_for_workers(1);
    CHECK_INT(pool_abandon(jobs[again]), 0);
    gate_set(true);
    CHECK(all_done(count + again, 1));
    pool_free(p);
    CHECK_INT(count[again], 1);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    REQUIRE(loop);
    test_cancel();
    test_stop_and_free();
    test_free_from_done();
    test_abandon();
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
