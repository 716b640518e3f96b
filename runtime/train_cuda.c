/* The trainer's state on a CUDA device (train_state.h): the parameters are
 * the executor's f32 leaves, and the accumulators, Adam's moments and the
 * EMAs live beside them (runtime/backend_cuda.h's edm_cuda_opt_*); the
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

static int sync_cuda(void *ctx, edm_status *st) { return edm_cuda_exec_sync(ctx, st); }

static edm_collective *cuda_nccl(edm_trainer *t, edm_dist *d, edm_status *st)
{
    return edm_nccl_open(d, edm_cuda_exec_stream(t->cuda), sync_cuda, t->cuda, edm_dist_timeout(d), st);
}

static int cuda_ema_attach(edm_trainer *t, int count, edm_status *st)
{
    return edm_cuda_opt_ema_attach(t->cuda, count, st);
}

static int cuda_ema_update(edm_trainer *t, const double *beta, edm_status *st)
{
    return edm_cuda_opt_ema_update(t->cuda, beta, st);
}

static int cuda_ema_get(edm_trainer *t, int k, float *flat, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        if (edm_cuda_opt_ema_download(t->cuda, k, i, flat, t->params[i].numel, st) != 0)
            return -1;
        flat += t->params[i].numel;
    }
    return 0;
}

static int cuda_ema_set(edm_trainer *t, int k, const float *flat, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        if (edm_cuda_opt_ema_upload(t->cuda, k, i, flat, t->params[i].numel, st) != 0)
            return -1;
        flat += t->params[i].numel;
    }
    return 0;
}

const edm_trainer_state edm_trainer_cuda_state = {
    .name = "cuda",
    .ema_on_device = 1,
    .attach = cuda_attach,
    .pull = cuda_pull,
    .push = cuda_push,
    .pull_grad = cuda_pull_grad,
    .force_wn = cuda_force_wn,
    .zero_grad = cuda_zero_grad,
    .set_masters = cuda_set_masters,
    .accumulate = cuda_accumulate,
    .adam = cuda_adam,
    .allreduce = cuda_allreduce,
    .nccl = cuda_nccl,
    .ema_attach = cuda_ema_attach,
    .ema_update = cuda_ema_update,
    .ema_get = cuda_ema_get,
    .ema_set = cuda_ema_set,
};
