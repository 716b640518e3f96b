/* NCCL for CUDA ranks (runtime/dist.h): opened at run time with dlopen like
 * the CUDA driver (runtime/cuda_api.c), so one edmc binary runs with and
 * without it; $EDMC_NCCL names another library (the tests' fake,
 * tests/fakecuda/fake_nccl.c).  The ranks meet through MPI: rank 0's
 * ncclUniqueId is broadcast, then ncclCommInitRank (bounded by the timeout,
 * init_bounded).  The gradient buffers
 * are reduced in place on the trainer's stream, in one ncclGroupStart/End,
 * or (overlapped with the backward pass) bucket by bucket on a stream of
 * their own, one group per bucket, as the trainer finds them ready; either
 * way the wait for them is bounded: past the timeout a watchdog thread calls
 * ncclCommAbort (NCCL's way out of a collective whose peer is gone) and the
 * rank fails naming the collective. */
#include "config.h"

#include "runtime/dist.h"
#include "runtime/dynlib.h"
#include "runtime/nccl_abi.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* one field per entry point of runtime/nccl_abi.h */
#define NCCL_FIELD(name, ret, params) ret(*name) params; /* NOLINT(bugprone-macro-parentheses): a declarator */
typedef struct {
    void *lib;
    NCCL_EDMC_ENTRY_POINTS(NCCL_FIELD)
} nccl_api;

typedef struct {
    edm_collective c;
    nccl_api api;
    nccl_comm comm;
    edm_dist *dist;
    void *stream;
    int (*sync)(void *exec, void *stream, edm_status *st);
    int (*bind)(void *exec, edm_status *st);
    void *exec; /* the executor, for sync and bind */
    double timeout;
    /* the watchdog of one wait */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_ok; /* mu and cv made */
    int done, aborted;
    /* the watchdog of a step's buckets, from the first bucket to bucket_end */
    pthread_t bucket_dog;
    int bucket_dog_made, bucket_dog_on, in_buckets;
    int init_abandoned; /* ncclCommInitRank timed out and still runs */
} nccl_ctx;

#define NCCL_RESOLVE(field, name) edm_dynlib_resolve(a->lib, "NCCL", name, &a->field, sizeof a->field, st)

static int nccl_open_api(nccl_api *a, edm_status *st)
{
    memset(a, 0, sizeof *a);
    a->lib = edm_dynlib_open("EDMC_NCCL", "libnccl.so.2", "NCCL", st);
    if (!a->lib)
        return -1;
    int rc = 0;
#define NCCL_RESOLVE_ONE(name, ret, params) rc |= NCCL_RESOLVE(name, "nccl" #name);
    NCCL_EDMC_ENTRY_POINTS(NCCL_RESOLVE_ONE)
#undef NCCL_RESOLVE_ONE
    if (rc != 0) {
        dlclose(a->lib);
        a->lib = NULL;
    }
    return rc;
}

static int nccl_check(const nccl_api *a, nccl_result r, const char *call, const char *what, edm_status *st)
{
    if (r == 0)
        return 0;
    const char *text = a->GetErrorString ? a->GetErrorString(r) : NULL;
    return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: %s failed: %s (%d)", what, call, text ? text : "NCCL error", r);
}

/* With mu held: waits on cv until *done or timeout_s pass; mu held again on return. */
static void wait_done(pthread_mutex_t *mu, pthread_cond_t *cv, const int *done, double timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    int e = 0;
    while (!*done && e != ETIMEDOUT)
        e = pthread_cond_timedwait(cv, mu, &until);
}

static void *watchdog(void *arg)
{
    nccl_ctx *n = arg;
    (void)pthread_mutex_lock(&n->mu);
    wait_done(&n->mu, &n->cv, &n->done, n->timeout);
    if (!n->done) {
        n->aborted = 1;
        (void)n->api.CommAbort(n->comm); /* the collective's kernels return; the stream drains */
    }
    (void)pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* One collective under the watchdog, from ncclGroupStart to the end of the
 * stream's work (ncclGroupEnd may block too, as a blocking communicator's
 * does), at most the timeout. */
static int start_watchdog(nccl_ctx *n, pthread_t *t, const char *what)
{
    n->done = n->aborted = 0;
    /* without a watchdog thread the wait is the driver's, unbounded: say so rather than hang silently */
    int have_dog = pthread_create(t, NULL, watchdog, n) == 0;
    if (!have_dog)
        fprintf(stderr, "warning: NCCL: no watchdog thread for %s (the wait is not bounded)\n", what);
    return have_dog;
}

/* Stops the watchdog; -1 when it had aborted the communicator. */
static int stop_watchdog(nccl_ctx *n, pthread_t t, int have_dog, const char *what, edm_status *st)
{
    (void)pthread_mutex_lock(&n->mu);
    n->done = 1;
    (void)pthread_cond_signal(&n->cv);
    (void)pthread_mutex_unlock(&n->mu);
    if (have_dog)
        (void)pthread_join(t, NULL);
    if (!n->aborted)
        return 0;
    n->comm = NULL; /* aborted: destroyed */
    n->c.aborted = 1;
    return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC,
                    "%s: no answer from the other ranks for %.0f s (NCCL): a rank died, hangs or is far behind "
                    "(--rank-timeout); every rank stops",
                    what, n->timeout);
}

/* One group of in-place sums, queued on stream. */
static int enqueue(nccl_ctx *n, void *const *bufs, const int64_t *count, int nbufs, void *stream, const char *what,
                   edm_status *st)
{
    if (nccl_check(&n->api, n->api.GroupStart(), "ncclGroupStart", what, st) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < nbufs && rc == 0; i++)
        if (count[i] > 0)
            rc = nccl_check(&n->api,
                            n->api.AllReduce(bufs[i], bufs[i], (size_t)count[i], NCCL_FLOAT32, NCCL_SUM, n->comm,
                                             stream),
                            "ncclAllReduce", what, st);
    /* the group ends even after a failed call: NCCL needs the pairs matched */
    nccl_result end = n->api.GroupEnd();
    if (rc != 0 || nccl_check(&n->api, end, "ncclGroupEnd", what, st) != 0)
        return -1;
    return 0;
}

/* The end of the work queued on stream, and NCCL's verdict on it. */
static int wait_stream(nccl_ctx *n, void *stream, const char *what, edm_status *st)
{
    if (n->sync(n->exec, stream, st) != 0)
        return -1;
    nccl_result async = 0;
    if (n->api.CommGetAsyncError(n->comm, &async) == 0 && async != 0)
        return nccl_check(&n->api, async, "the collective", what, st);
    return 0;
}

static int enqueue_and_wait(nccl_ctx *n, void *const *bufs, const int64_t *count, int nbufs, const char *what,
                            edm_status *st)
{
    return enqueue(n, bufs, count, nbufs, n->stream, what, st) != 0 ? -1 : wait_stream(n, n->stream, what, st);
}

static int nccl_allreduce_many(edm_collective *c, void *const *bufs, const int64_t *count, int nbufs,
                               const char *what, edm_status *st)
{
    nccl_ctx *n = c->ctx;
    if (!n->comm)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the NCCL communicator was aborted", what);
    pthread_t t;
    int have_dog = start_watchdog(n, &t, what);
    edm_status why;
    edm_status_init(&why);
    int rc = enqueue_and_wait(n, bufs, count, nbufs, what, &why);
    /* an abort explains the failure it caused: its message wins */
    if (stop_watchdog(n, t, have_dog, what, st) != 0)
        return -1;
    if (rc != 0)
        *st = why;
    return rc;
}

static int nccl_allreduce_one(edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st)
{
    return nccl_allreduce_many(c, &buf, &n, 1, what, st);
}

/* A step's buckets: the watchdog runs from the first one queued (not from
 * here: the pass that makes them may take long) to the end of the last. */
static int nccl_bucket_begin(edm_collective *c, const char *what, edm_status *st)
{
    nccl_ctx *n = c->ctx;
    if (!n->comm)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the NCCL communicator was aborted", what);
    if (n->in_buckets)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the buckets of the last step were not ended", what);
    n->in_buckets = 1;
    n->bucket_dog_on = 0;
    return 0;
}

static int watchdog_fired(nccl_ctx *n)
{
    (void)pthread_mutex_lock(&n->mu);
    int fired = n->aborted;
    (void)pthread_mutex_unlock(&n->mu);
    return fired;
}

static int nccl_bucket(edm_collective *c, void *const *bufs, const int64_t *count, int nbufs, void *stream,
                       const char *what, edm_status *st)
{
    nccl_ctx *n = c->ctx;
    if (!n->in_buckets)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: a bucket outside bucket_begin/end", what);
    if (!n->bucket_dog_on) {
        n->bucket_dog_made = start_watchdog(n, &n->bucket_dog, what);
        n->bucket_dog_on = 1;
    }
    if (watchdog_fired(n)) /* the communicator is gone; bucket_end says why */
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: the NCCL communicator was aborted", what);
    return enqueue(n, bufs, count, nbufs, stream, what, st);
}

static int nccl_bucket_end(edm_collective *c, void *stream, const char *what, edm_status *st)
{
    nccl_ctx *n = c->ctx;
    if (!n->in_buckets)
        return 0;
    n->in_buckets = 0;
    if (!n->bucket_dog_on) /* nothing was queued */
        return 0;
    n->bucket_dog_on = 0;
    edm_status why;
    edm_status_init(&why);
    int rc = watchdog_fired(n) ? -1 : wait_stream(n, stream, what, &why);
    /* an abort explains the failure it caused: its message wins */
    if (stop_watchdog(n, n->bucket_dog, n->bucket_dog_made, what, st) != 0)
        return -1;
    if (rc != 0)
        *st = why;
    return rc;
}

/* One ncclCommInitRank on a thread of its own, so that the wait is bounded:
 * a blocking init waits for every rank to join and gives no handle to abort
 * until it returns.  On a timeout the thread is left blocked in NCCL, and
 * this record (and the library) are never freed: the thread may still
 * return into them.  Then the error goes up as any other, and the process
 * ends. */
typedef struct {
    nccl_result (*init)(nccl_comm *, int, nccl_unique_id, int);
    int (*bind)(void *exec, edm_status *st);
    void *exec;
    edm_status bind_st; /* why bind failed (bind_failed) */
    int bind_failed;
    nccl_unique_id id;
    int nranks, rank;
    nccl_comm comm;
    nccl_result result;
    int done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} init_call;

static void *init_thread(void *arg)
{
    init_call *c = arg;
    nccl_comm comm = NULL;
    nccl_result r = 0;
    /* NCCL binds the communicator to the calling thread's device: the executor's */
    int bound = c->bind(c->exec, &c->bind_st) == 0;
    if (bound)
        r = c->init(&comm, c->nranks, c->id, c->rank);
    (void)pthread_mutex_lock(&c->mu);
    c->bind_failed = !bound;
    c->comm = comm;
    c->result = r;
    c->done = 1;
    (void)pthread_cond_signal(&c->cv);
    (void)pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* 0 with n->comm made; -1 with st filled (*abandoned: the call is still running). */
static int init_bounded(nccl_ctx *n, nccl_unique_id id, int *abandoned, edm_status *st)
{
    *abandoned = 0;
    int size = edm_dist_size(n->dist), rank = edm_dist_rank(n->dist);
    init_call *c = calloc(1, sizeof *c);
    if (!c)
        return edm_nomem(st);
    *c = (init_call){.init = n->api.CommInitRank, .bind = n->bind, .exec = n->exec, .id = id, .nranks = size,
                     .rank = rank};
    edm_status_init(&c->bind_st);
    pthread_t t;
    int made = pthread_mutex_init(&c->mu, NULL) == 0;
    if (made && pthread_cond_init(&c->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&c->mu);
        made = 0;
    }
    if (!made || pthread_create(&t, NULL, init_thread, c) != 0) {
        /* no thread: the wait is NCCL's own, unbounded; say so rather than hang silently */
        fprintf(stderr, "warning: NCCL: no watchdog thread for ncclCommInitRank (the wait is not bounded)\n");
        if (made) {
            (void)pthread_mutex_destroy(&c->mu);
            (void)pthread_cond_destroy(&c->cv);
        }
        free(c);
        return nccl_check(&n->api, n->api.CommInitRank(&n->comm, size, id, rank), "ncclCommInitRank", "NCCL", st);
    }
    (void)pthread_mutex_lock(&c->mu);
    wait_done(&c->mu, &c->cv, &c->done, n->timeout);
    int done = c->done;
    (void)pthread_mutex_unlock(&c->mu);
    if (!done) {
        (void)pthread_detach(t);
        *abandoned = 1;
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC,
                        "NCCL: ncclCommInitRank did not return within %.0f s: a rank died, hangs or cannot reach this "
                        "one (--rank-timeout); every rank stops",
                        n->timeout);
    }
    (void)pthread_join(t, NULL);
    n->comm = c->comm;
    int rc = 0;
    if (c->bind_failed) {
        *st = c->bind_st;
        edm_status_prefix(st, "NCCL: the device of the thread calling ncclCommInitRank");
        rc = -1;
    } else {
        rc = nccl_check(&n->api, c->result, "ncclCommInitRank", "NCCL", st);
    }
    (void)pthread_mutex_destroy(&c->mu);
    (void)pthread_cond_destroy(&c->cv);
    free(c);
    return rc;
}

edm_collective *edm_nccl_open(edm_dist *d, void *stream, int (*sync)(void *exec, void *stream, edm_status *st),
                              int (*bind)(void *exec, edm_status *st), void *exec, double timeout_s, edm_status *st)
{
    nccl_ctx *n = calloc(1, sizeof *n);
    if (!n) {
        edm_nomem(st);
        return NULL;
    }
    n->dist = d;
    n->stream = stream;
    n->sync = sync;
    n->bind = bind;
    n->exec = exec;
    n->timeout = timeout_s > 0 ? timeout_s : 600;
    n->sync_ok = pthread_mutex_init(&n->mu, NULL) == 0;
    if (n->sync_ok && pthread_cond_init(&n->cv, NULL) != 0) {
        (void)pthread_mutex_destroy(&n->mu);
        n->sync_ok = 0;
    }
    nccl_unique_id id;
    memset(&id, 0, sizeof id);
    /* a rank without the library, or rank 0 without an id: every rank learns it and gives up alike */
    int rc = n->sync_ok ? nccl_open_api(&n->api, st)
                        : edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "NCCL: cannot make a mutex for its watchdog");
    if (rc == 0 && edm_dist_rank(d) == 0)
        rc = nccl_check(&n->api, n->api.GetUniqueId(&id), "ncclGetUniqueId", "NCCL", st);
    int first = -1, any = 0;
    edm_status other;
    edm_status_init(&other);
    if (edm_dist_agree(d, rc != 0, 0, &first, &any, "NCCL's set-up", rc != 0 ? &other : st) != 0)
        rc = -1;
    else if (rc == 0 && first >= 0)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "rank %d could not set NCCL up", first);
    if (rc == 0)
        rc = edm_dist_bcast(d, &id, sizeof id, 0, "NCCL's unique id", st);
    if (rc == 0 && init_bounded(n, id, &n->init_abandoned, st) != 0)
        rc = -1;
    if (rc != 0) {
        edm_nccl_close(&n->c);
        return NULL;
    }
    n->c = (edm_collective){.name = "nccl",
                            .device = 1,
                            .allreduce_sum_f32 = nccl_allreduce_one,
                            .allreduce_sum_f64 = NULL,
                            .allreduce_many_f32 = nccl_allreduce_many,
                            .bucket_begin = nccl_bucket_begin,
                            .bucket_f32 = nccl_bucket,
                            .bucket_end = nccl_bucket_end,
                            .ctx = n};
    return &n->c;
}

void edm_nccl_close(edm_collective *c)
{
    if (!c)
        return;
    nccl_ctx *n = c->ctx ? c->ctx : (nccl_ctx *)c; /* c is the first member */
    if (n->comm)
        (void)n->api.CommDestroy(n->comm);
    if (n->api.lib && !n->init_abandoned) /* else a thread is still inside it */
        dlclose(n->api.lib);
    if (n->sync_ok) {
        (void)pthread_mutex_destroy(&n->mu);
        (void)pthread_cond_destroy(&n->cv);
    }
    free(n);
}
