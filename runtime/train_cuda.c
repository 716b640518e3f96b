/* The trainer's state on a CUDA device (train_state.h): the parameters are
 * the executor's f32 leaves, and Adam's moments, the EMAs and (for steps of
 * several passes or ranks) the gradient accumulators live beside them
 * (runtime/backend_cuda.h's edm_cuda_opt_*); the
 * trainer's value, m, v and grad arrays are host copies, refreshed on
 * request (snapshots, checkpoints, `edmc step`). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "runtime/train_state.h"

static int cuda_attach(edm_trainer *t, edm_status *st)
{
    edm_cuda_opt_param *cp = calloc((size_t)(t->nparams ? t->nparams : 1), sizeof *cp);
    if (!cp)
        return edm_nomem(st);
    for (int i = 0; i < t->nparams; i++) {
        const edm_train_param *p = &t->params[i];
        cp[i] = (edm_cuda_opt_param){.node = p->node, .grad_node = p->grad_node, .forced_wn = p->forced_wn,
                                     .rows = p->shape.rank > 0 ? p->shape.dim[0] : 1};
    }
    int rc = edm_cuda_opt_attach(t->cuda, cp, t->nparams, st);
    free(cp);
    return rc;
}

static int cuda_pull(edm_trainer *t, int moments, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cuda_opt_download(t->cuda, i, p->value, moments ? p->m : NULL, moments ? p->v : NULL, p->numel, st) !=
            0)
            return -1;
    }
    return 0;
}

static int cuda_push(edm_trainer *t, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cuda_opt_upload(t->cuda, i, p->value, p->m, p->v, p->numel, st) != 0)
            return -1;
    }
    return 0;
}

static int cuda_pull_grad(edm_trainer *t, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++)
        if (edm_cuda_opt_download_grad(t->cuda, i, t->params[i].grad, t->params[i].numel, st) != 0)
            return -1;
    return 0;
}

static int cuda_force_wn(edm_trainer *t, edm_status *st) { return edm_cuda_opt_force_wn(t->cuda, st); }
static int cuda_zero_grad(edm_trainer *t, edm_status *st) { return edm_cuda_opt_zero_grad(t->cuda, st); }
static int cuda_direct_grads(edm_trainer *t, int on, edm_status *st)
{
    return edm_cuda_opt_direct_grads(t->cuda, on, st);
}
static int cuda_accumulate(edm_trainer *t, edm_status *st) { return edm_cuda_opt_accumulate(t->cuda, st); }

/* The leaves are the masters: nothing to set before a pass. */
static int cuda_set_masters(edm_trainer *t, edm_status *st)
{
    (void)t;
    (void)st;
    return 0;
}

static int cuda_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite, edm_status *st)
{
    return edm_cuda_opt_adam(t->cuda, lr, adam->beta1, adam->beta2, adam->eps, step, nonfinite, st);
}

/* The device's accumulators reduced in place (NCCL), one buffer per parameter. */
static int allreduce_on_device(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    if (!c->allreduce_many_f32)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the device collective %s reduces no buffer list", what,
                        c->name);
    void **bufs = malloc(sizeof(void *) * (size_t)(t->nparams ? t->nparams : 1));
    int64_t *n = malloc(sizeof(int64_t) * (size_t)(t->nparams ? t->nparams : 1));
    int rc = bufs && n ? 0 : edm_nomem(st);
    for (int i = 0; rc == 0 && i < t->nparams; i++) {
        bufs[i] = (void *)(uintptr_t)edm_cuda_opt_grad_ptr(t->cuda, i);
        n[i] = t->params[i].numel;
    }
    if (rc == 0)
        rc = c->allreduce_many_f32(c, bufs, n, t->nparams, what, st);
    free(bufs);
    free(n);
    return rc;
}

static void *host_copy(edm_trainer *t, int i) { return t->params[i].grad; }

/* A host collective: the f32 accumulators staged through the host. */
static int cuda_allreduce(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    if (c->device)
        return allreduce_on_device(t, c, what, st);
    if (cuda_pull_grad(t, st) != 0 ||
        edm_trainer_allreduce_staged(t, sizeof(float), host_copy, c->allreduce_sum_f32, c, what, st) != 0)
        return -1;
    for (int i = 0; i < t->nparams; i++)
        if (edm_cuda_opt_upload_grad(t->cuda, i, t->params[i].grad, t->params[i].numel, st) != 0)
            return -1;
    return 0;
}

static int sync_cuda(void *ctx, void *stream, edm_status *st) { return edm_cuda_exec_sync_stream(ctx, stream, st); }

static int bind_cuda(void *ctx, edm_status *st) { return edm_cuda_exec_bind_thread(ctx, st); }

/* ---------------------------------------------------------------- the all-reduce overlapped with the last pass */

static int cuda_form_buckets(edm_trainer *t, edm_status *st)
{
    size_t n = (size_t)(t->nparams ? t->nparams : 1);
    int *ready = malloc(n * sizeof *ready);
    int64_t *bytes = malloc(n * sizeof *bytes);
    int rc = ready && bytes ? 0 : edm_nomem(st);
    for (int i = 0; rc == 0 && i < t->nparams; i++) {
        ready[i] = edm_cuda_opt_grad_ready(t->cuda, i);
        bytes[i] = (int64_t)sizeof(float) * t->params[i].numel; /* the f32 accumulators */
    }
    if (rc == 0)
        rc = edm_grad_buckets_make(ready, bytes, t->nparams, t->bucket_cap, &t->buckets, st);
    free(ready);
    free(bytes);
    return rc;
}

/* Bucket k's sum over the ranks queued on the collective's stream, after
 * everything queued so far on the executor's (its members' accumulation
 * among it). */
static int send_bucket(edm_trainer *t, int k, edm_status *st)
{
    const edm_grad_bucket *b = &t->buckets.bucket[k];
    const int *member = t->buckets.order + b->first;
    void *comm = edm_cuda_exec_comm_stream(t->cuda, st);
    if (!comm || edm_cuda_exec_comm_waits(t->cuda, st) != 0) {
        edm_status_prefix(st, "%s, bucket %d", t->ov_what, k);
        return -1;
    }
    void **bufs = malloc(sizeof(void *) * (size_t)b->count);
    int64_t *n = malloc(sizeof(int64_t) * (size_t)b->count);
    int rc = bufs && n ? 0 : edm_nomem(st);
    for (int j = 0; rc == 0 && j < b->count; j++) {
        bufs[j] = (void *)(uintptr_t)edm_cuda_opt_grad_ptr(t->cuda, member[j]);
        n[j] = t->params[member[j]].numel;
    }
    if (rc == 0)
        rc = t->ov->bucket_f32(t->ov, bufs, n, b->count, comm, t->ov_what, st);
    free(bufs);
    free(n);
    if (rc == 0)
        t->ov_sent = k + 1;
    return rc;
}

/* At bucket k's ready point of the run: its members' gradients into their accumulators, then its sum. */
static int bucket_ready(void *ctx, int k, edm_status *st)
{
    edm_trainer *t = ctx;
    const edm_grad_bucket *b = &t->buckets.bucket[k];
    if (k != t->ov_sent)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: bucket %d ready before bucket %d was sent", t->ov_what,
                        k, t->ov_sent);
    if (edm_cuda_opt_accumulate_some(t->cuda, t->buckets.order + b->first, b->count, st) != 0) {
        edm_status_prefix(st, "%s, bucket %d", t->ov_what, k);
        return -1;
    }
    return send_bucket(t, k, st);
}

static int cuda_run_overlapped(edm_trainer *t, edm_status *st)
{
    if (t->ov_sent != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: a second overlapped pass in one step", t->ov_what);
    int *cut = malloc(sizeof(int) * (size_t)(t->buckets.n ? t->buckets.n : 1));
    if (!cut)
        return edm_nomem(st);
    for (int k = 0; k < t->buckets.n; k++)
        cut[k] = t->buckets.bucket[k].ready;
    int rc = edm_cuda_exec_run_cut(t->cuda, cut, t->buckets.n, bucket_ready, t, st);
    free(cut);
    return rc;
}

static int cuda_overlap_end(edm_trainer *t, int failed, edm_status *st)
{
    int rc = 0;
    if (!failed && t->ov_sent != t->buckets.n)
        rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: %d of %d buckets sent", t->ov_what, t->ov_sent,
                      t->buckets.n);
    /* every bucket goes out, also after a failure (then with whatever the accumulators hold: the step is
     * lost), so that the other ranks' collectives end; a failure of NCCL itself stops it */
    edm_status drain;
    edm_status_init(&drain);
    for (int k = t->ov_sent; k < t->buckets.n; k++)
        if (send_bucket(t, k, &drain) != 0)
            break;
    void *comm = edm_cuda_exec_comm_stream(t->cuda, &drain);
    if (!comm) /* not even made: nothing was queued on it */
        comm = edm_cuda_exec_stream(t->cuda);
    edm_status ended;
    edm_status_init(&ended);
    if (t->ov->bucket_end(t->ov, comm, t->ov_what, &ended) != 0) {
        if (rc == 0 || t->ov->aborted) /* a timeout explains the rest */
            *st = ended;
        rc = -1;
    }
    /* Adam reads the sums: the executor's stream waits for the collective's */
    if (rc == 0 && edm_cuda_exec_compute_waits(t->cuda, st) != 0)
        rc = -1;
    return rc;
}

static edm_collective *cuda_nccl(edm_trainer *t, edm_dist *d, edm_status *st)
{
    return edm_nccl_open(d, edm_cuda_exec_stream(t->cuda), sync_cuda, bind_cuda, t->cuda, edm_dist_timeout(d), st);
}

static int cuda_ema_attach(edm_trainer *t, int count, edm_status *st)
{
    return edm_cuda_opt_ema_attach(t->cuda, count, st);
}

static int cuda_ema_update(edm_trainer *t, const double *beta, edm_status *st)
{
    return edm_cuda_opt_ema_update(t->cuda, beta, st);
}

static int cuda_ema_get(edm_trainer *t, int k, int i, float *out, edm_status *st)
{
    return edm_cuda_opt_ema_download(t->cuda, k, i, out, t->params[i].numel, st);
}

static int cuda_ema_set(edm_trainer *t, int k, int i, const float *in, edm_status *st)
{
    return edm_cuda_opt_ema_upload(t->cuda, k, i, in, t->params[i].numel, st);
}

const edm_trainer_state edm_trainer_cuda_state = {
    .name = "cuda",
    .attach = cuda_attach,
    .pull = cuda_pull,
    .push = cuda_push,
    .pull_grad = cuda_pull_grad,
    .force_wn = cuda_force_wn,
    .zero_grad = cuda_zero_grad,
    .set_masters = cuda_set_masters,
    .accumulate = cuda_accumulate,
    .direct_grads = cuda_direct_grads,
    .adam = cuda_adam,
    .allreduce = cuda_allreduce,
    .nccl = cuda_nccl,
    .form_buckets = cuda_form_buckets,
    .run_overlapped = cuda_run_overlapped,
    .overlap_end = cuda_overlap_end,
    .ema_attach = cuda_ema_attach,
    .ema_update = cuda_ema_update,
    .ema_get = cuda_ema_get,
    .ema_set = cuda_ema_set,
};
