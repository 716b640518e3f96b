#include "config.h"

#include "runtime/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/weights.h"

struct edm_trainer {
    const edm_graph *g;
    edm_cpu *cpu;
    int64_t batch;
    int nparams;
    edm_train_param *params;
    int loss_node;
    float *scratch; /* the largest gradient, read back */
    float *seed;    /* grad.loss: 1 / total batch for each sample */
};

static void free_params(edm_trainer *t)
{
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
    edm_cpu_free(t->cpu);
    free(t->scratch);
    free(t->seed);
    free(t);
}

static int find_output(const edm_graph *g, const char *name)
{
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op == EDM_OP_OUTPUT && strcmp(n->name, name) == 0)
            return i;
    }
    return -1;
}

edm_trainer *edm_trainer_new(const edm_graph *g, int64_t batch, const edm_cpu_options *opt, edm_status *st)
{
    edm_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        edm_nomem(st);
        return NULL;
    }
    t->g = g;
    t->batch = batch;
    t->loss_node = find_output(g, "loss");
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
        p->grad_node = find_output(g, gname);
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
    edm_cpu_options o = opt ? *opt : (edm_cpu_options){0};
    o.training = 1;
    t->cpu = edm_cpu_new(g, batch, &o, st);
    if (!t->cpu)
        goto fail;
    return t;
fail:
    edm_trainer_free(t);
    return NULL;
}

int edm_trainer_nparams(const edm_trainer *t) { return t->nparams; }
edm_train_param *edm_trainer_param(edm_trainer *t, int i) { return i >= 0 && i < t->nparams ? &t->params[i] : NULL; }
edm_cpu *edm_trainer_backend(edm_trainer *t) { return t->cpu; }

edm_train_param *edm_trainer_find(edm_trainer *t, const char *name)
{
    for (int i = 0; i < t->nparams; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return &t->params[i];
    return NULL;
}

/* The trainer's float32 masters from the values now on the backend. */
static int pull_params(edm_trainer *t, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cpu_get_f32(t->cpu, p->node, p->value, p->numel, st) != 0)
            return -1;
    }
    return 0;
}

int edm_trainer_init(edm_trainer *t, uint64_t seed, edm_status *st)
{
    return edm_weights_init_cpu(t->g, seed, t->cpu, st) == 0 ? pull_params(t, st) : -1;
}

int edm_trainer_load(edm_trainer *t, const edm_st_file *f, edm_status *st)
{
    if (edm_weights_load(t->cpu, t->g, f, st) != 0)
        return -1;
    return pull_params(t, st);
}

void edm_trainer_force_wn(edm_trainer *t)
{
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
}

void edm_trainer_zero_grad(edm_trainer *t)
{
    for (int i = 0; i < t->nparams; i++)
        memset(t->params[i].grad, 0, sizeof(float) * (size_t)t->params[i].numel);
}

int edm_trainer_accumulate(edm_trainer *t, int64_t total_batch, double *loss, edm_status *st)
{
    for (int i = 0; i < t->nparams; i++)
        if (edm_cpu_set_f32(t->cpu, t->params[i].name, t->params[i].value, t->params[i].numel, st) != 0)
            return -1;
    for (int64_t n = 0; n < t->batch; n++)
        t->seed[n] = (float)(1.0 / (double)total_batch);
    if (edm_cpu_set_f32(t->cpu, "grad.loss", t->seed, t->batch, st) != 0 || edm_cpu_run(t->cpu, st) != 0)
        return -1;
    if (edm_cpu_get_f32(t->cpu, t->loss_node, t->scratch, t->batch, st) != 0)
        return -1;
    double sum = 0;
    for (int64_t n = 0; n < t->batch; n++)
        sum += t->scratch[n];
    *loss += sum / (double)total_batch;
    for (int i = 0; i < t->nparams; i++) {
        edm_train_param *p = &t->params[i];
        if (edm_cpu_get_f32(t->cpu, p->grad_node, t->scratch, p->numel, st) != 0)
            return -1;
        for (int64_t k = 0; k < p->numel; k++)
            p->grad[k] += t->scratch[k];
    }
    return 0;
}

int64_t edm_trainer_adam(edm_trainer *t, const edm_adam *adam, double lr, int64_t step)
{
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
    return bad;
}
