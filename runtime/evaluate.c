#include "config.h"

#include "runtime/evaluate.h"

#include "runtime/backend.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/backend_cpu.h"
#include "runtime/data.h"
#include "runtime/interface_names.h"
#include "runtime/rng.h"

struct edm_loss_eval {
    edm_backend *cpu;
    int loss_node;
    int64_t images, batch, per, label_dim;
    float *all_images, *all_labels, *all_rnd, *all_noise; /* the whole evaluation set */
    float *images_b, *labels_b, *rnd_b, *noise_b;         /* one batch */
    float *loss_b;
};

static float *alloc_floats(int64_t n) { return malloc(sizeof(float) * (size_t)(n > 0 ? n : 1)); }

/* Reads the evaluation images and draws their σ and noise. */
static int draw_set(edm_loss_eval *e, const edm_eval_opts *o, int channels, int res, edm_status *st)
{
    edm_dataset *ds = edm_dataset_open(o->data, res, channels, (int)e->label_dim, st);
    if (!ds)
        return -1;
    int rc = 0;
    int64_t size = edm_dataset_size(ds);
    int64_t *perm = NULL;
    if (size < e->images)
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s has %lld images, fewer than the %lld to evaluate on", o->data,
                      (long long)size, (long long)e->images);
    if (rc == 0) {
        perm = malloc(sizeof *perm * (size_t)size);
        rc = perm ? 0 : edm_nomem(st);
    }
    if (rc == 0)
        edm_dataset_permutation(ds, o->seed, 0, perm);
    for (int64_t k = 0; rc == 0 && k < e->images; k++)
        rc = edm_dataset_read(ds, perm[k], o->seed, (uint64_t)k, e->all_images + k * e->per,
                              e->label_dim ? e->all_labels + k * e->label_dim : NULL, st);
    free(perm);
    edm_dataset_close(ds);
    if (rc != 0)
        return -1;
    edm_rng rs = edm_rng_make(o->seed, "edm.eval.rnd_normal"), rn = edm_rng_make(o->seed, "edm.eval.unit_noise");
    edm_rng_normal(&rs, 0, e->all_rnd, e->images);
    edm_rng_normal(&rn, 0, e->all_noise, e->images * e->per);
    return 0;
}

edm_loss_eval *edm_loss_eval_new(const edm_graph *g, const edm_eval_opts *o, edm_status *st)
{
    if (o->images < 1) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "evaluation needs at least one image");
        return NULL;
    }
    int img = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_IMAGES);
    int lab = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_CLASS_LABELS);
    int loss = edm_graph_find(g, EDM_OP_OUTPUT, EDM_OUT_LOSS);
    if (img < 0 || loss < 0 || edm_graph_find(g, EDM_OP_INPUT, EDM_IN_RND_NORMAL) < 0 ||
        edm_graph_find(g, EDM_OP_INPUT, EDM_IN_UNIT_NOISE) < 0) {
        edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                 "the evaluation needs the training program (inputs " EDM_IN_IMAGES ", " EDM_IN_RND_NORMAL
                 ", " EDM_IN_UNIT_NOISE "; output " EDM_OUT_LOSS ")");
        return NULL;
    }
    const edm_node *in = edm_graph_node(g, img);
    if (in->shape.rank != 4 || in->shape.dim[2] != in->shape.dim[3] || in->shape.dim[2] < 1 || in->shape.dim[1] < 1) {
        edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the training program's images are not [N, C, R, R]");
        return NULL;
    }
    edm_loss_eval *e = calloc(1, sizeof *e);
    if (!e) {
        edm_nomem(st);
        return NULL;
    }
    int res = (int)in->shape.dim[2];
    e->images = o->images;
    e->batch = o->batch > 0 ? o->batch : EDM_EVAL_DEFAULT_BATCH;
    if (e->batch > e->images)
        e->batch = e->images;
    e->per = in->shape.dim[1] * in->shape.dim[2] * in->shape.dim[3];
    e->label_dim = lab >= 0 ? edm_graph_node(g, lab)->shape.dim[1] : 0;
    e->all_images = alloc_floats(e->images * e->per);
    e->all_noise = alloc_floats(e->images * e->per);
    e->all_labels = alloc_floats(e->images * e->label_dim);
    e->all_rnd = alloc_floats(e->images);
    e->images_b = alloc_floats(e->batch * e->per);
    e->noise_b = alloc_floats(e->batch * e->per);
    e->labels_b = alloc_floats(e->batch * e->label_dim);
    e->rnd_b = alloc_floats(e->batch);
    e->loss_b = alloc_floats(e->batch);
    if (!e->all_images || !e->all_noise || !e->all_labels || !e->all_rnd || !e->images_b || !e->noise_b ||
        !e->labels_b || !e->rnd_b || !e->loss_b) {
        edm_nomem(st);
        edm_loss_eval_free(e);
        return NULL;
    }
    if (draw_set(e, o, (int)in->shape.dim[1], res, st) != 0) {
        edm_loss_eval_free(e);
        return NULL;
    }
    edm_backend_options opt = edm_backend_defaults(EDM_DEVICE_CPU);
    opt.cpu.threads = o->threads;
    opt.cpu.seed = o->seed;
    e->cpu = edm_backend_new(g, e->batch, &opt, st);
    if (!e->cpu) {
        edm_loss_eval_free(e);
        return NULL;
    }
    e->loss_node = edm_backend_find(e->cpu, EDM_OP_OUTPUT, EDM_OUT_LOSS);
    if (e->loss_node < 0 || edm_backend_numel(e->cpu, e->loss_node) != e->batch) {
        edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the training program's output loss is not one value per image");
        edm_loss_eval_free(e);
        return NULL;
    }
    return e;
}

void edm_loss_eval_free(edm_loss_eval *e)
{
    if (!e)
        return;
    edm_backend_free(e->cpu);
    free(e->all_images);
    free(e->all_labels);
    free(e->all_rnd);
    free(e->all_noise);
    free(e->images_b);
    free(e->labels_b);
    free(e->rnd_b);
    free(e->noise_b);
    free(e->loss_b);
    free(e);
}

int edm_loss_eval_set_f32(edm_loss_eval *e, const char *name, const float *data, int64_t n, edm_status *st)
{
    return edm_backend_set_f32(e->cpu, name, data, n, st);
}

int edm_loss_eval_set_f64(edm_loss_eval *e, const char *name, const double *data, int64_t n, edm_status *st)
{
    return edm_backend_set_f64(e->cpu, name, data, n, st);
}

/* Batch b of the set; the last one, when short, is padded with copies of the
 * set's first images whose losses are left out. */
static int64_t fill_batch(edm_loss_eval *e, int64_t first)
{
    int64_t count = e->images - first < e->batch ? e->images - first : e->batch;
    for (int64_t i = 0; i < e->batch; i++) {
        int64_t k = i < count ? first + i : i - count;
        memcpy(e->images_b + i * e->per, e->all_images + k * e->per, sizeof(float) * (size_t)e->per);
        memcpy(e->noise_b + i * e->per, e->all_noise + k * e->per, sizeof(float) * (size_t)e->per);
        if (e->label_dim)
            memcpy(e->labels_b + i * e->label_dim, e->all_labels + k * e->label_dim,
                   sizeof(float) * (size_t)e->label_dim);
        e->rnd_b[i] = e->all_rnd[k];
    }
    return count;
}

int edm_loss_eval_run(edm_loss_eval *e, double *loss, edm_status *st)
{
    double sum = 0;
    for (int64_t first = 0; first < e->images; first += e->batch) {
        int64_t count = fill_batch(e, first);
        if (edm_backend_set_f32(e->cpu, EDM_IN_IMAGES, e->images_b, e->batch * e->per, st) != 0 ||
            edm_backend_set_f32(e->cpu, EDM_IN_RND_NORMAL, e->rnd_b, e->batch, st) != 0 ||
            edm_backend_set_f32(e->cpu, EDM_IN_UNIT_NOISE, e->noise_b, e->batch * e->per, st) != 0 ||
            (e->label_dim &&
             edm_backend_set_f32(e->cpu, EDM_IN_CLASS_LABELS, e->labels_b, e->batch * e->label_dim, st) != 0) ||
            edm_backend_run(e->cpu, st) != 0 || edm_backend_get_f32(e->cpu, e->loss_node, e->loss_b, e->batch, st) != 0)
            return -1;
        for (int64_t i = 0; i < count; i++)
            sum += (double)e->loss_b[i];
    }
    *loss = sum / (double)e->images;
    return 0;
}
