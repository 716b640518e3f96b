/* The batch loader (data.h): worker threads fill the batches of a
 * dataset's deterministic stream ahead of the trainer, in order; a rank takes
 * its own share of every global batch. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/data.h"

/* Batch b (counted from the loader's start) covers stream positions
 * start + b·batch … and lives in slot b mod depth.  Workers claim batch
 * numbers in order, at most depth ahead of the consumer, and fill their slots
 * in parallel; the consumer takes batch after batch in order, so the result
 * does not depend on the number of workers or their timing. */

typedef struct {
    struct edm_loader *ld;
    int64_t *perm; /* this worker's cached epoch order */
    uint64_t perm_epoch;
    int have_perm;
    pthread_t thread;
    int started;
} loader_worker;

struct edm_loader {
    edm_dataset *ds;
    int64_t batch, start;
    int64_t period, offset, take; /* a rank's share: take of every period positions from offset; 0: all */
    uint64_t seed;
    size_t img_elems, lab_elems; /* per image */
    int depth, nworkers;
    float **images, **labels; /* depth slots */
    loader_worker *workers;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    int64_t next_claim, consumed;
    unsigned char *ready; /* per slot */
    int failed;
    int64_t failed_batch; /* the earliest batch that failed */
    edm_status err;
    atomic_int stop;
    /* consumer-only */
    int broken; /* an error was returned: keep returning it */
    edm_status last;
    int mu_ok, ne_ok, nf_ok;
};

static int fill_batch(loader_worker *w, int64_t bno, edm_status *st)
{
    edm_loader *ld = w->ld;
    int64_t n = edm_dataset_size(ld->ds);
    int slot = (int)(bno % ld->depth);
    for (int64_t b = 0; b < ld->batch; b++) {
        if (atomic_load(&ld->stop))
            return 1;
        int64_t q = bno * ld->batch + b; /* the loader's own count */
        uint64_t pos = (uint64_t)(ld->period ? ld->start + q / ld->take * ld->period + ld->offset + q % ld->take
                                             : ld->start + q);
        uint64_t epoch = pos / (uint64_t)n;
        if (!w->have_perm || w->perm_epoch != epoch) {
            edm_dataset_permutation(ld->ds, ld->seed, epoch, w->perm);
            w->perm_epoch = epoch;
            w->have_perm = 1;
        }
        int64_t img = w->perm[pos % (uint64_t)n];
        float *lab = ld->labels[slot] ? ld->labels[slot] + (size_t)b * ld->lab_elems : NULL;
        if (edm_dataset_read(ld->ds, img, ld->seed, pos, ld->images[slot] + (size_t)b * ld->img_elems, lab, st)) {
            edm_note_add(st, EDM_NO_LOC, "at image %llu of the stream (seed %llu)", (unsigned long long)pos,
                         (unsigned long long)ld->seed);
            return -1;
        }
    }
    return 0;
}

static void *loader_main(void *arg)
{
    loader_worker *w = arg;
    edm_loader *ld = w->ld;
    for (;;) {
        if (pthread_mutex_lock(&ld->mu) != 0)
            return NULL;
        int wait_ok = 1;
        while (wait_ok && !atomic_load(&ld->stop) && !ld->failed && ld->next_claim >= ld->consumed + ld->depth)
            wait_ok = pthread_cond_wait(&ld->not_full, &ld->mu) == 0;
        int quit = !wait_ok || atomic_load(&ld->stop) || ld->failed;
        int64_t bno = ld->next_claim;
        if (!quit)
            ld->next_claim++;
        (void)pthread_mutex_unlock(&ld->mu);
        if (quit)
            return NULL;
        edm_status st;
        edm_status_init(&st);
        int rc = fill_batch(w, bno, &st);
        if (pthread_mutex_lock(&ld->mu) != 0)
            return NULL;
        if (rc < 0) {
            if (!ld->failed || bno < ld->failed_batch) {
                ld->failed_batch = bno;
                ld->err = st;
            }
            ld->failed = 1;
        } else if (rc == 0) {
            ld->ready[bno % ld->depth] = 1;
        }
        (void)pthread_cond_broadcast(&ld->not_empty);
        (void)pthread_cond_broadcast(&ld->not_full); /* other workers: stop on failure */
        (void)pthread_mutex_unlock(&ld->mu);
        if (rc)
            return NULL;
    }
}

void edm_loader_free(edm_loader *ld)
{
    if (!ld)
        return;
    atomic_store(&ld->stop, 1);
    if (ld->mu_ok && ld->nf_ok && pthread_mutex_lock(&ld->mu) == 0) {
        (void)pthread_cond_broadcast(&ld->not_full);
        (void)pthread_mutex_unlock(&ld->mu);
    }
    for (int k = 0; ld->workers && k < ld->nworkers; k++) {
        if (ld->workers[k].started)
            (void)pthread_join(ld->workers[k].thread, NULL);
        free(ld->workers[k].perm);
    }
    if (ld->nf_ok)
        pthread_cond_destroy(&ld->not_full);
    if (ld->ne_ok)
        pthread_cond_destroy(&ld->not_empty);
    if (ld->mu_ok)
        pthread_mutex_destroy(&ld->mu);
    for (int q = 0; q < ld->depth; q++) {
        if (ld->images)
            free(ld->images[q]);
        if (ld->labels)
            free(ld->labels[q]);
    }
    free(ld->images);
    free(ld->labels);
    free(ld->ready);
    free(ld->workers);
    free(ld);
}

static edm_loader *loader_create(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, int nthreads,
                                 int64_t period, int64_t offset, int64_t take, edm_status *st)
{
    if (!ds || batch <= 0 || start_index < 0 || nthreads < 0 || nthreads > EDM_LOADER_MAX_THREADS) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "loader: bad batch size %lld, start index %lld or thread count %d",
                 (long long)batch, (long long)start_index, nthreads);
        return NULL;
    }
    if (nthreads == 0)
        nthreads = EDM_LOADER_DEFAULT_THREADS;
    size_t img = (size_t)edm_dataset_channels(ds) * (size_t)edm_dataset_resolution(ds) * (size_t)edm_dataset_resolution(ds);
    int depth = nthreads + 2;
    if ((uint64_t)batch > SIZE_MAX / sizeof(float) / img / (size_t)depth) {
        edm_fail(st, EDM_ERR_LIMIT, EDM_NO_LOC, "loader: batch %lld is too large", (long long)batch);
        return NULL;
    }
    edm_loader *ld = calloc(1, sizeof *ld);
    if (!ld) {
        edm_nomem(st);
        return NULL;
    }
    ld->ds = ds;
    ld->batch = batch;
    ld->start = start_index;
    if (take < period) { /* else the whole stream */
        ld->period = period;
        ld->offset = offset;
        ld->take = take;
    }
    ld->seed = seed;
    ld->img_elems = img;
    ld->lab_elems = (size_t)edm_dataset_label_dim(ds);
    ld->depth = depth;
    atomic_init(&ld->stop, 0);
    ld->images = calloc((size_t)depth, sizeof *ld->images);
    ld->labels = calloc((size_t)depth, sizeof *ld->labels);
    ld->ready = calloc((size_t)depth, 1);
    ld->workers = calloc((size_t)nthreads, sizeof *ld->workers);
    if (!ld->images || !ld->labels || !ld->ready || !ld->workers)
        goto nomem;
    ld->nworkers = nthreads;
    for (int q = 0; q < depth; q++) {
        ld->images[q] = malloc((size_t)batch * img * sizeof(float));
        if (!ld->images[q])
            goto nomem;
        if (edm_dataset_label_dim(ds) > 0) {
            ld->labels[q] = malloc((size_t)batch * ld->lab_elems * sizeof(float));
            if (!ld->labels[q])
                goto nomem;
        }
    }
    for (int k = 0; k < nthreads; k++) {
        ld->workers[k].ld = ld;
        ld->workers[k].perm = malloc((size_t)edm_dataset_size(ds) * sizeof *ld->workers[k].perm);
        if (!ld->workers[k].perm)
            goto nomem;
    }
    if (pthread_mutex_init(&ld->mu, NULL) != 0)
        goto fail_sync;
    ld->mu_ok = 1;
    if (pthread_cond_init(&ld->not_empty, NULL) != 0)
        goto fail_sync;
    ld->ne_ok = 1;
    if (pthread_cond_init(&ld->not_full, NULL) != 0)
        goto fail_sync;
    ld->nf_ok = 1;
    for (int k = 0; k < nthreads; k++) {
        int e = pthread_create(&ld->workers[k].thread, NULL, loader_main, &ld->workers[k]);
        if (e != 0) {
            edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "loader: cannot start a thread: %s", strerror(e));
            edm_loader_free(ld);
            return NULL;
        }
        ld->workers[k].started = 1;
    }
    return ld;
nomem:
    edm_nomem(st);
    edm_loader_free(ld);
    return NULL;
fail_sync:
    edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "loader: cannot create a mutex or condition variable");
    edm_loader_free(ld);
    return NULL;
}

edm_loader *edm_loader_new_shard(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, int64_t period,
                                 int64_t offset, int64_t take, edm_status *st)
{
    if (period <= 0 || take <= 0 || offset < 0 || offset + take > period || start_index % period != 0) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "loader: bad share %lld+%lld of %lld from %lld", (long long)offset,
                 (long long)take, (long long)period, (long long)start_index);
        return NULL;
    }
    return loader_create(ds, batch, seed, start_index, 0, period, offset, take, st);
}

edm_loader *edm_loader_new_threads(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, int nthreads,
                                   edm_status *st)
{
    return loader_create(ds, batch, seed, start_index, nthreads, 1, 0, 1, st);
}

edm_loader *edm_loader_new(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, edm_status *st)
{
    return edm_loader_new_threads(ds, batch, seed, start_index, 0, st);
}

int edm_loader_next(edm_loader *ld, float *images, float *labels, edm_status *st)
{
    if (ld->broken) {
        *st = ld->last;
        return -1;
    }
    if (pthread_mutex_lock(&ld->mu) != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "loader: cannot lock");
    int slot = (int)(ld->consumed % ld->depth);
    while (!ld->ready[slot] && !(ld->failed && ld->failed_batch == ld->consumed))
        if (pthread_cond_wait(&ld->not_empty, &ld->mu) != 0) {
            (void)pthread_mutex_unlock(&ld->mu);
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "loader: cannot wait");
        }
    if (!ld->ready[slot]) {
        ld->last = ld->err;
        ld->broken = 1;
        (void)pthread_mutex_unlock(&ld->mu);
        *st = ld->last;
        return -1;
    }
    (void)pthread_mutex_unlock(&ld->mu);
    /* the slot is ours until it is marked free: copy without the lock */
    memcpy(images, ld->images[slot], (size_t)ld->batch * ld->img_elems * sizeof(float));
    if (labels && ld->labels[slot])
        memcpy(labels, ld->labels[slot], (size_t)ld->batch * ld->lab_elems * sizeof(float));
    if (pthread_mutex_lock(&ld->mu) != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "loader: cannot lock");
    ld->ready[slot] = 0;
    ld->consumed++;
    (void)pthread_cond_broadcast(&ld->not_full);
    (void)pthread_mutex_unlock(&ld->mu);
    return 0;
}

int64_t edm_loader_position(const edm_loader *ld)
{
    int64_t q = ld->consumed * ld->batch; /* the loader's own count */
    return ld->period ? ld->start + q / ld->take * ld->period + ld->offset + q % ld->take : ld->start + q;
}
