/* The trainer (train.h): the parameters, the step's passes and its Adam
 * step, over a backend; what differs between keeping the state on the host
 * and on a device is the backend's table (train_state.h). */
#include "config.h"

#include "runtime/interface_names.h"
#include "runtime/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/train_state.h"
#include "runtime/weights.h"

static void free_params(edm_trainer *t)
{
    for (int i = 0; t->acc && i < t->nparams; i++)
        free(t->acc[i]);
    free(t->acc);
    for (int i = 0; t->ema && i < t->nema * t->nparams; i++)
        free(t->ema[i]);
    free(t->ema);
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
    edm_grad_buckets_free(&t->buckets);
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
    t->loss_node = edm_graph_find(g, EDM_OP_OUTPUT, EDM_OUT_LOSS);
    if (t->loss_node < 0) {
        edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                 "the training program has no output '" EDM_OUT_LOSS "' (compile with training=true)");
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
    t->state = t->cuda ? &edm_trainer_cuda_state : &edm_trainer_host_state;
    if (t->state->attach(t, st) != 0)
        goto fail;
    return t;
fail:
    edm_trainer_free(t);
    return NULL;
}

int edm_trainer_nparams(const edm_trainer *t) { return t->nparams; }
edm_train_param *edm_trainer_param(edm_trainer *t, int i) { return i >= 0 && i < t->nparams ? &t->params[i] : NULL; }
edm_backend *edm_trainer_backend(edm_trainer *t) { return t->be; }

int edm_trainer_pull(edm_trainer *t, int moments, edm_status *st) { return t->state->pull(t, moments, st); }
int edm_trainer_push(edm_trainer *t, edm_status *st) { return t->state->push(t, st); }
int edm_trainer_pull_grad(edm_trainer *t, edm_status *st) { return t->state->pull_grad(t, st); }
int edm_trainer_ema_attach(edm_trainer *t, int count, edm_status *st)
{
    if (t->nema || count < 1)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%d EMAs attached to a trainer with %d", count, t->nema);
    if (t->state->ema_attach(t, count, st) != 0)
        return -1;
    t->nema = count;
    return 0;
}
int edm_trainer_ema_update(edm_trainer *t, const double *beta, edm_status *st)
{
    return t->state->ema_update(t, beta, st);
}

static int check_ema(const edm_trainer *t, int k, int i, edm_status *st)
{
    return k >= 0 && k < t->nema && i >= 0 && i < t->nparams
               ? 0
               : edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "EMA %d of parameter %d: the trainer has %d of %d", k, i,
                          t->nema, t->nparams);
}

int edm_trainer_ema_get(edm_trainer *t, int k, int i, float *out, edm_status *st)
{
    return check_ema(t, k, i, st) == 0 ? t->state->ema_get(t, k, i, out, st) : -1;
}

int edm_trainer_ema_set(edm_trainer *t, int k, int i, const float *in, edm_status *st)
{
    return check_ema(t, k, i, st) == 0 ? t->state->ema_set(t, k, i, in, st) : -1;
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

int edm_trainer_force_wn(edm_trainer *t, edm_status *st) { return t->state->force_wn(t, st); }
int edm_trainer_zero_grad(edm_trainer *t, edm_status *st) { return t->state->zero_grad(t, st); }
int edm_trainer_direct_grads(edm_trainer *t, int on, edm_status *st)
{
    return t->state->direct_grads ? t->state->direct_grads(t, on, st) : 0;
}

int edm_trainer_accumulate(edm_trainer *t, int64_t total_batch, double *loss, edm_status *st)
{
    if (t->state->set_masters(t, st) != 0)
        return -1;
    for (int64_t n = 0; n < t->batch; n++)
        t->seed[n] = (float)(1.0 / (double)total_batch);
    if (edm_backend_set_f32(t->be, "grad.loss", t->seed, t->batch, st) != 0)
        return -1;
    /* overlapped: the buckets' accumulation is part of the run */
    if ((t->ov ? t->state->run_overlapped(t, st) : edm_backend_run(t->be, st)) != 0)
        return -1;
    if (edm_backend_get_f32(t->be, t->loss_node, t->scratch, t->batch, st) != 0)
        return -1;
    double sum = 0;
    for (int64_t n = 0; n < t->batch; n++)
        sum += t->scratch[n];
    *loss += sum / (double)total_batch;
    return t->ov ? 0 : t->state->accumulate(t, st);
}

static int form_buckets(edm_trainer *t, int64_t bucket_bytes, edm_status *st)
{
    if (!t->state->form_buckets)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "the all-reduce overlaps the backward pass on a device collective only (the %s state)",
                        t->state->name);
    if (bucket_bytes <= 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "gradient buckets of %lld bytes", (long long)bucket_bytes);
    if (t->bucket_cap == bucket_bytes)
        return 0;
    edm_grad_buckets_free(&t->buckets);
    t->bucket_cap = bucket_bytes;
    if (t->state->form_buckets(t, st) != 0) {
        t->bucket_cap = 0;
        return -1;
    }
    return 0;
}

int edm_trainer_buckets(edm_trainer *t, int64_t bucket_bytes, int64_t *bytes, int cap, int *n, edm_status *st)
{
    if (form_buckets(t, bucket_bytes, st) != 0)
        return -1;
    *n = t->buckets.n;
    for (int k = 0; k < t->buckets.n && k < cap; k++)
        bytes[k] = t->buckets.bucket[k].bytes;
    return 0;
}

int edm_trainer_overlap_begin(edm_trainer *t, edm_collective *c, int64_t bucket_bytes, const char *what,
                              edm_status *st)
{
    if (t->ov)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the last step's overlap was not ended", what);
    if (!c->bucket_begin || !c->device)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: the collective %s cannot overlap the backward pass",
                        what, c->name);
    if (form_buckets(t, bucket_bytes, st) != 0 || c->bucket_begin(c, what, st) != 0)
        return -1;
    t->ov = c;
    t->ov_what = what;
    t->ov_sent = 0;
    return 0;
}

int edm_trainer_overlap_end(edm_trainer *t, int failed, edm_status *st)
{
    edm_status mine;
    edm_status_init(&mine);
    int rc = t->ov ? t->state->overlap_end(t, failed, &mine)
                   : edm_fail(&mine, EDM_ERR_INTERNAL, EDM_NO_LOC, "the overlapped all-reduce was not begun");
    /* a collective that timed out explains the failure it caused (a bucket that could not be sent) */
    int aborted = t->ov && t->ov->aborted;
    t->ov = NULL;
    if (rc != 0 && (!failed || aborted))
        *st = mine;
    return failed ? -1 : rc;
}

int edm_trainer_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step, int64_t *nonfinite,
                     edm_status *st)
{
    return t->state->adam(t, adam, lr, step, nonfinite, st);
}

int edm_trainer_allreduce_staged(edm_trainer *t, size_t elem_bytes, void *(*grad_of)(edm_trainer *t, int i),
                                 int (*sum)(edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st),
                                 edm_collective *c, const char *what, edm_status *st)
{
    if (!t->flat_grad) { /* sized for the widest element, double */
        for (int i = 0; i < t->nparams; i++)
            t->nflat += t->params[i].numel;
        t->flat_grad = malloc(sizeof(double) * (size_t)(t->nflat ? t->nflat : 1));
        if (!t->flat_grad)
            return edm_nomem(st);
    }
    char *at = t->flat_grad;
    for (int i = 0; i < t->nparams; i++) {
        memcpy(at, grad_of(t, i), elem_bytes * (size_t)t->params[i].numel);
        at += elem_bytes * (size_t)t->params[i].numel;
    }
    if (sum(c, t->flat_grad, t->nflat, what, st) != 0)
        return -1;
    at = t->flat_grad;
    for (int i = 0; i < t->nparams; i++) {
        memcpy(grad_of(t, i), at, elem_bytes * (size_t)t->params[i].numel);
        at += elem_bytes * (size_t)t->params[i].numel;
    }
    return 0;
}

int edm_trainer_allreduce_grad(edm_trainer *t, edm_collective *c, const char *what, edm_status *st)
{
    return t->state->allreduce(t, c, what, st);
}

int edm_trainer_device_grads(const edm_trainer *t) { return t->state->nccl != NULL; }

edm_collective *edm_trainer_nccl(edm_trainer *t, edm_dist *d, edm_status *st)
{
    if (t->state->nccl)
        return t->state->nccl(t, d, st);
    edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "NCCL reduces device memory: the %s trainer's gradients are host memory "
                                            "(it needs --device=cuda)", t->state->name);
    return NULL;
}
