/* The trainer's state on the host (train_state.h), for the CPU backend: the
 * float32 masters, Adam's moments, the passes' gradients summed in double and
 * the EMAs are the trainer's own arrays; the masters go to the backend before
 * every pass.  The gradients are host memory: MPI sums them, no device
 * collective. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/phema.h"
#include "runtime/train_state.h"

static int host_attach(edm_trainer *t, edm_status *st)
{
    t->acc = calloc((size_t)(t->nparams ? t->nparams : 1), sizeof *t->acc);
    if (!t->acc)
        return edm_nomem(st);
    for (int i = 0; i < t->nparams; i++)
        if (!(t->acc[i] = calloc((size_t)(t->params[i].numel ? t->params[i].numel : 1), sizeof(double))))
            return edm_nomem(st);
    return 0;
}

/* The masters are the trainer's arrays: nothing to copy. */
static int host_nothing(edm_trainer *t, edm_status *st)
{
    (void)t;
    (void)st;
    return 0;
}

static int host_pull(edm_trainer *t, int moments, edm_status *st)
{
    (void)moments;
    return host_nothing(t, st);
}

static int host_force_wn(edm_trainer *t, edm_status *st)
{
    (void)st;
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

static int host_zero_grad(edm_trainer *t, edm_status *st)
{
    (void)st;
    for (int i = 0; i < t->nparams; i++) {
        memset(t->params[i].grad, 0, sizeof(float) * (size_t)t->params[i].numel);
        memset(t->acc[i], 0, sizeof(double) * (size_t)t->params[i].numel);
    }
    return 0;
}

/* The masters are set before every pass (the backend computes from them). */
static int host_set_masters(edm_trainer *t, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++)
        if (edm_backend_set_f32(t->be, t->params[i].name, t->params[i].value, t->params[i].numel, st) != 0)
            return -1;
    return 0;
}

static int host_accumulate(edm_trainer *t, edm_status *st)
{
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

static int host_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite, edm_status *st)
{
    (void)st;
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

static void *host_acc(edm_trainer *t, int i) { return t->acc[i]; }

/* The double sums over the ranks; grad their float value again. */
static int host_allreduce(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    if (c->device)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the device collective %s needs a CUDA trainer", what,
                        c->name);
    if (edm_trainer_allreduce_staged(t, sizeof(double), host_acc, c->allreduce_sum_f64, c, what, st) != 0)
        return -1;
    for (int i = 0; i < t->nparams; i++)
        for (int64_t k = 0; k < t->params[i].numel; k++)
            t->params[i].grad[k] = (float)t->acc[i][k];
    return 0;
}

/* The EMAs beside the masters: copy k of parameter i at t->ema[k * nparams + i]. */
static void free_emas(float **ema, int n)
{
    for (int i = 0; ema && i < n; i++)
        free(ema[i]);
    free(ema);
}

static int host_ema_attach(edm_trainer *t, int count, edm_status *st)
{
    int n = count * t->nparams;
    float **ema = calloc((size_t)(n ? n : 1), sizeof *ema);
    if (!ema)
        return edm_nomem(st);
    for (int k = 0; k < count; k++)
        for (int i = 0; i < t->nparams; i++) {
            const edm_train_param *p = &t->params[i];
            float *e = malloc(sizeof(float) * (size_t)(p->numel ? p->numel : 1));
            if (!e) {
                free_emas(ema, n);
                return edm_nomem(st);
            }
            memcpy(e, p->value, sizeof(float) * (size_t)p->numel);
            ema[k * t->nparams + i] = e;
        }
    t->ema = ema;
    return 0;
}

static int host_ema_update(edm_trainer *t, const double *beta, edm_status *st)
{
    (void)st;
    for (int k = 0; k < t->nema; k++)
        for (int i = 0; i < t->nparams; i++)
            edm_phema_ema_lerp(t->ema[k * t->nparams + i], t->params[i].value, t->params[i].numel, beta[k]);
    return 0;
}

static int host_ema_get(edm_trainer *t, int k, int i, float *out, edm_status *st)
{
    (void)st;
    memcpy(out, t->ema[k * t->nparams + i], sizeof(float) * (size_t)t->params[i].numel);
    return 0;
}

static int host_ema_set(edm_trainer *t, int k, int i, const float *in, edm_status *st)
{
    (void)st;
    memcpy(t->ema[k * t->nparams + i], in, sizeof(float) * (size_t)t->params[i].numel);
    return 0;
}

const edm_trainer_state edm_trainer_host_state = {
    .name = "host",
    .attach = host_attach,
    .pull = host_pull,
    .push = host_nothing,
    .pull_grad = host_nothing,
    .force_wn = host_force_wn,
    .zero_grad = host_zero_grad,
    .set_masters = host_set_masters,
    .accumulate = host_accumulate,
    .adam = host_adam,
    .allreduce = host_allreduce,
    .nccl = NULL, /* the gradients are host memory: MPI sums them */
    .ema_attach = host_ema_attach,
    .ema_update = host_ema_update,
    .ema_get = host_ema_get,
    .ema_set = host_ema_set,
};
