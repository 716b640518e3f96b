#include "config.h"

#include "runtime/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend_cuda.h"
#include "runtime/dist.h"
#include "runtime/weights.h"

struct edm_trainer {
    const edm_graph *g;
    edm_backend *be;
    edm_cuda_exec *cuda; /* the device state's owner (NULL on the CPU) */
    int64_t batch;
    int nparams;
    edm_train_param *params;
    int loss_node;
    float *scratch; /* the largest gradient, read back */
    float *seed;    /* grad.loss: 1 / total batch for each sample */
    /* CPU: the passes' gradients summed in double (grad is their float
     * value), so that the sum does not depend on how the passes are grouped:
     * one process or several ranks give the same bits */
    double **acc;
    void *flat_grad; /* every gradient in one buffer for the all-reduce (allocated on first use) */
    int64_t nflat;
};

static void free_params(edm_trainer *t)
{
    for (int i = 0; t->acc && i < t->nparams; i++)
        free(t->acc[i]);
    free(t->acc);
    for (int i = 0; i < t->nparams; i++) {
        free(t->params[i].value);
        free(t->params[i].m);
        free(t->params[i].v);
        free(t->params[i].grad);
    }
    free(t->params);
}

void edm_trainer_free(edm_trainer *t)
{
    if (!t)
        return;
    free_params(t);
    edm_backend_free(t->be);
    free(t->scratch);
    free(t->seed);
    free(t->flat_grad);
    free(t);
}

edm_trainer *edm_trainer_new(const edm_graph *g, int64_t batch, const edm_backend_options *opt, edm_status *st)
{
    edm_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        edm_nomem(st);
        return NULL;
    }
    t->g = g;
    t->batch = batch;
    t->loss_node = edm_graph_find(g, EDM_OP_OUTPUT, "loss");
    if (t->loss_node < 0) {
        edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the training program has no output 'loss' (compile with training=true)");
        goto fail;
    }
    int count = 0;
    for (int i = 0; i < edm_graph_count(g); i++)
        count += edm_graph_node(g, i)->op == EDM_OP_PARAM;
    t->params = calloc((size_t)(count ? count : 1), sizeof *t->params);
    if (!t->params) {
        edm_nomem(st);
        goto fail;
    }
    int64_t largest = 1;
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_PARAM)
            continue;
        edm_train_param *p = &t->params[t->nparams++];
        char gname[512];
        snprintf(gname, sizeof gname, "grad.%s", n->name);
        p->name = n->name;
        p->node = i;
        p->grad_node = edm_graph_find(g, EDM_OP_OUTPUT, gname);
        p->forced_wn = n->attr.init.forced_wn;
        p->shape = n->shape;
        p->numel = edm_shape_numel_per_sample(&n->shape);
        size_t bytes = sizeof(float) * (size_t)(p->numel ? p->numel : 1);
        p->value = calloc(1, bytes);
        p->m = calloc(1, bytes);
        p->v = calloc(1, bytes);
        p->grad = calloc(1, bytes);
        if (!p->value || !p->m || !p->v || !p->grad) {
            edm_nomem(st);
            goto fail;
        }
        if (p->grad_node < 0) {
            edm_fail(st, EDM_ERR_SEMANTIC, n->loc, "the training graph has no gradient for '%s' (run autodiff)",
                     n->name);
            goto fail;
        }
        largest = p->numel > largest ? p->numel : largest;
    }
    t->acc = calloc((size_t)(t->nparams ? t->nparams : 1), sizeof *t->acc);
    for (int i = 0; t->acc && i < t->nparams; i++)
        if (!(t->acc[i] = calloc((size_t)(t->params[i].numel ? t->params[i].numel : 1), sizeof(double))))
            break;
    if (!t->acc || (t->nparams && !t->acc[t->nparams - 1])) {
        edm_nomem(st);
        goto fail;
    }
    t->scratch = malloc(sizeof(float) * (size_t)largest);
    t->seed = malloc(sizeof(float) * (size_t)batch);
    if (!t->scratch || !t->seed) {
        edm_nomem(st);
        goto fail;
    }
    edm_backend_options o = opt ? *opt : edm_backend_defaults(EDM_DEVICE_CPU);
    o.cpu.training = 1;
    o.optimizer = 1;
    t->be = edm_backend_new(g, batch, &o, st);
    if (!t->be)
        goto fail;
    t->cuda = edm_backend_cuda(t->be);
    if (t->cuda) {
        edm_cuda_opt_param *cp = calloc((size_t)(t->nparams ? t->nparams : 1), sizeof *cp);
        if (!cp) {
            edm_nomem(st);
            goto fail;
        }
        for (int i = 0; i < t->nparams; i++) {
            const edm_train_param *p = &t->params[i];
            cp[i] = (edm_cuda_opt_param){.node = p->node, .grad_node = p->grad_node, .forced_wn = p->forced_wn,
                                         .rows = p->shape.rank > 0 ? p->shape.dim[0] : 1};
        }
        int rc = edm_cuda_opt_attach(t->cuda, cp, t->nparams, st);
        free(cp);
        if (rc != 0)
            goto fail;
    }
    return t;
fail:
    edm_trainer_free(t);
    return NULL;
}

int edm_trainer_nparams(const edm_trainer *t) { return t->nparams; }
edm_train_param *edm_trainer_param(edm_trainer *t, int i) { return i >= 0 && i < t->nparams ? &t->params[i] : NULL; }
edm_backend *edm_trainer_backend(edm_trainer *t) { return t->be; }

int edm_trainer_pull(edm_trainer *t, int moments, edm_status *st)
{
    if (!t->cuda)
        return 0;
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cuda_opt_download(t->cuda, i, p->value, moments ? p->m : NULL, moments ? p->v : NULL, p->numel, st) !=
            0)
            return -1;
    }
    return 0;
}

int edm_trainer_ema_on_device(const edm_trainer *t) { return t->cuda != NULL; }

static int no_device(edm_status *st)
{
    return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "the CPU trainer keeps no EMAs");
}

int edm_trainer_ema_attach(edm_trainer *t, int count, edm_status *st)
{
    return t->cuda ? edm_cuda_opt_ema_attach(t->cuda, count, st) : no_device(st);
}

int edm_trainer_ema_update(edm_trainer *t, const double *beta, edm_status *st)
{
    return t->cuda ? edm_cuda_opt_ema_update(t->cuda, beta, st) : no_device(st);
}

int edm_trainer_ema_get(edm_trainer *t, int k, float *flat, edm_status *st)
{
    if (!t->cuda)
        return no_device(st);
    for (int i = 0; i < t->nparams; i++) {
        if (edm_cuda_opt_ema_download(t->cuda, k, i, flat, t->params[i].numel, st) != 0)
            return -1;
        flat += t->params[i].numel;
    }
    return 0;
}

int edm_trainer_ema_set(edm_trainer *t, int k, const float *flat, edm_status *st)
{
    if (!t->cuda)
        return no_device(st);
    for (int i = 0; i < t->nparams; i++) {
        if (edm_cuda_opt_ema_upload(t->cuda, k, i, flat, t->params[i].numel, st) != 0)
            return -1;
        flat += t->params[i].numel;
    }
    return 0;
}

int edm_trainer_pull_grad(edm_trainer *t, edm_status *st)
{
    for (int i = 0; t->cuda && i < t->nparams; i++)
        if (edm_cuda_opt_download_grad(t->cuda, i, t->params[i].grad, t->params[i].numel, st) != 0)
            return -1;
    return 0;
}

int edm_trainer_push(edm_trainer *t, edm_status *st)
{
    if (!t->cuda)
        return 0;
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cuda_opt_upload(t->cuda, i, p->value, p->m, p->v, p->numel, st) != 0)
            return -1;
    }
    return 0;
}

edm_train_param *edm_trainer_find(edm_trainer *t, const char *name)
{
    for (int i = 0; i < t->nparams; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return &t->params[i];
    return NULL;
}

/* The trainer's float32 masters from the values now on the backend (on a
 * device they stay there: the leaves are the masters). */
static int pull_params(edm_trainer *t, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_backend_get_f32(t->be, p->node, p->value, p->numel, st) != 0)
            return -1;
    }
    return 0;
}

int edm_trainer_init(edm_trainer *t, uint64_t seed, edm_status *st)
{
    return edm_weights_init_backend(t->g, seed, t->be, st) == 0 ? pull_params(t, st) : -1;
}

int edm_trainer_load(edm_trainer *t, const edm_st_file *f, edm_status *st)
{
    if (edm_weights_load(t->be, t->g, f, st) != 0)
        return -1;
    return pull_params(t, st);
}

int edm_trainer_force_wn(edm_trainer *t, edm_status *st)
{
    if (t->cuda)
        return edm_cuda_opt_force_wn(t->cuda, st);
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (!p->forced_wn || p->shape.rank < 1 || p->shape.dim[0] < 1)
            continue;
        int64_t rows = p->shape.dim[0], fan_in = p->numel / rows;
        for (int64_t r = 0; r < rows; r++) {
            float *w = p->value + r * fan_in;
            double ss = 0;
            for (int64_t k = 0; k < fan_in; k++)
                ss += (double)w[k] * w[k];
            float norm = (float)(1e-4 + sqrt(ss / (double)fan_in));
            for (int64_t k = 0; k < fan_in; k++)
                w[k] /= norm;
        }
    }
    return 0;
}

int edm_trainer_zero_grad(edm_trainer *t, edm_status *st)
{
    if (t->cuda)
        return edm_cuda_opt_zero_grad(t->cuda, st);
    for (int i = 0; i < t->nparams; i++) {
        memset(t->params[i].grad, 0, sizeof(float) * (size_t)t->params[i].numel);
        memset(t->acc[i], 0, sizeof(double) * (size_t)t->params[i].numel);
    }
    return 0;
}

int edm_trainer_accumulate(edm_trainer *t, int64_t total_batch, double *loss, edm_status *st)
{
    /* on the CPU the masters are set every run; on a device they are the leaves */
    for (int i = 0; i < t->nparams && !t->cuda; i++)
        if (edm_backend_set_f32(t->be, t->params[i].name, t->params[i].value, t->params[i].numel, st) != 0)
            return -1;
    for (int64_t n = 0; n < t->batch; n++)
        t->seed[n] = (float)(1.0 / (double)total_batch);
    if (edm_backend_set_f32(t->be, "grad.loss", t->seed, t->batch, st) != 0 || edm_backend_run(t->be, st) != 0)
        return -1;
    if (edm_backend_get_f32(t->be, t->loss_node, t->scratch, t->batch, st) != 0)
        return -1;
    double sum = 0;
    for (int64_t n = 0; n < t->batch; n++)
        sum += t->scratch[n];
    *loss += sum / (double)total_batch;
    if (t->cuda)
        return edm_cuda_opt_accumulate(t->cuda, st);
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_backend_get_f32(t->be, p->grad_node, t->scratch, p->numel, st) != 0)
            return -1;
        double *acc = t->acc[i];
        for (int64_t k = 0; k < p->numel; k++) {
            acc[k] += t->scratch[k];
            p->grad[k] = (float)acc[k];
        }
    }
    return 0;
}

int edm_trainer_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite,
                     edm_status *st)
{
    if (t->cuda)
        return edm_cuda_opt_adam(t->cuda, lr, adam->beta1, adam->beta2, adam->eps, step, nonfinite, st);
    int64_t bad = 0;
    double c1 = 1 - pow(adam->beta1, (double)step), c2 = 1 - pow(adam->beta2, (double)step);
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        for (int64_t k = 0; k < p->numel; k++) {
            float g = p->grad[k];
            if (!isfinite(g)) {
                g = 0;
                bad++;
            }
            p->m[k] = (float)(adam->beta1 * p->m[k] + (1 - adam->beta1) * g);
            p->v[k] = (float)(adam->beta2 * p->v[k] + (1 - adam->beta2) * (double)g * g);
            double mhat = p->m[k] / c1, vhat = p->v[k] / c2;
            p->value[k] = (float)(p->value[k] - lr * mhat / (sqrt(vhat) + adam->eps));
        }
    }
    *nonfinite = bad;
    return 0;
}

/* The device's accumulators reduced in place (NCCL), one buffer per parameter. */
static int allreduce_on_device(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    if (!t->cuda || !c->allreduce_many_f32)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the device collective %s needs a CUDA trainer", what,
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

/* Parameter i's gradient as the host reduces it: the CPU's double sums, or
 * a device's f32 accumulator (already downloaded into grad). */
static void *host_grad(edm_trainer *t, int i) { return t->cuda ? (void *)t->params[i].grad : (void *)t->acc[i]; }

int edm_trainer_allreduce_grad(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    if (c->device)
        return allreduce_on_device(t, c, what, st);
    if (!t->flat_grad) {
        for (int i = 0; i < t->nparams; i++)
            t->nflat += t->params[i].numel;
        t->flat_grad = malloc(sizeof(double) * (size_t)(t->nflat ? t->nflat : 1));
        if (!t->flat_grad)
            return edm_nomem(st);
    }
    /* a device's accumulators are staged through the host in f32 */
    size_t es = t->cuda ? sizeof(float) : sizeof(double);
    if (t->cuda && edm_trainer_pull_grad(t, st) != 0)
        return -1;
    char *at = t->flat_grad;
    for (int i = 0; i < t->nparams; i++) {
        memcpy(at, host_grad(t, i), es * (size_t)t->params[i].numel);
        at += es * (size_t)t->params[i].numel;
    }
    if ((t->cuda ? c->allreduce_sum_f32 : c->allreduce_sum_f64)(c, t->flat_grad, t->nflat, what, st) != 0)
        return -1;
    at = t->flat_grad;
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        memcpy(host_grad(t, i), at, es * (size_t)p->numel);
        at += es * (size_t)p->numel;
        if (t->cuda && edm_cuda_opt_upload_grad(t->cuda, i, p->grad, p->numel, st) != 0)
            return -1;
        for (int64_t k = 0; !t->cuda && k < p->numel; k++)
            p->grad[k] = (float)t->acc[i][k];
    }
    return 0;
}

static int sync_cuda(void *ctx, edm_status *st) { return edm_cuda_exec_sync(ctx, st); }

edm_collective *edm_trainer_nccl(edm_trainer *t, edm_dist *d, edm_status *st)
{
    if (!t->cuda) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "NCCL reduces device memory: it needs --device=cuda");
        return NULL;
    }
    return edm_nccl_open(d, edm_cuda_exec_stream(t->cuda), sync_cuda, t->cuda, edm_dist_timeout(d), st);
}
