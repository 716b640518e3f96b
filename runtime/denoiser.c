/* The denoiser: a compiled model, its weights and an executor (CPU or CUDA).
 * On the CPU the executor is rebuilt for a smaller last batch; on CUDA (where
 * that means new kernels) a smaller batch is padded to the bound one. */
#include "config.h"

#include "runtime/denoiser.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interface_names.h"
#include "runtime/weights.h"
#include "runtime/meta_keys.h"

struct edm_denoiser {
    const edm_graph *g;
    const edm_st_file *f;
    /* what edm_denoiser_adopt handed over: the weights, the model's name and
     * the compiled program (freed by release) */
    edm_st_file *owned;
    char *model;
    void *owned_program;
    void (*release)(void *);
    edm_backend_options opt;
    int64_t capacity; /* the most samples per evaluation */
    int64_t bound;    /* the batch the executor was built for (0: none yet) */
    edm_backend *x;
    float *pad_x, *pad_sigma, *pad_labels, *pad_d, *pad_logvar; /* CUDA: inputs padded to the bound batch */
    edm_denoiser_shape shape;
    int out_d, out_logvar; /* node ids; out_logvar -1 when the model has none */
};

/* ------------------------------------------------------------ the graph */

/* The node (NULL if none), its id in *id when asked. */
static const edm_node *find_node(const edm_graph *g, edm_op op, const char *name, int *id)
{
    int i = edm_graph_find(g, op, name);
    if (i >= 0 && id)
        *id = i;
    return edm_graph_node(g, i);
}

static int batched(const edm_node *n, int rank) { return n && n->shape.rank == rank && n->shape.dim[0] == EDM_DIM_BATCH; }

int edm_denoiser_interface(const edm_graph *g, edm_denoiser_shape *shape, int *out_d, int *out_logvar,
                           edm_status *st)
{
    const edm_node *x = find_node(g, EDM_OP_INPUT, EDM_IN_X, NULL);
    const edm_node *sigma = find_node(g, EDM_OP_INPUT, EDM_IN_SIGMA, NULL);
    const edm_node *labels = find_node(g, EDM_OP_INPUT, EDM_IN_CLASS_LABELS, NULL);
    const edm_node *out = find_node(g, EDM_OP_OUTPUT, EDM_OUT_D_X, out_d);
    const edm_node *logvar = find_node(g, EDM_OP_OUTPUT, EDM_OUT_LOGVAR, out_logvar);
    if (!batched(x, 4))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the model has no input '" EDM_IN_X "' of shape [N, C, H, W]");
    if (!batched(sigma, 1))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no input '" EDM_IN_SIGMA "' of shape [N]");
    if (labels && !batched(labels, 2))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the model's '" EDM_IN_CLASS_LABELS "' is not of shape [N, L]");
    if (!out || !edm_shape_equal(&out->shape, &x->shape))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the model has no output '" EDM_OUT_D_X "' shaped like its input " EDM_IN_X);
    if (logvar && edm_shape_numel_per_sample(&logvar->shape) != 1)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model's '" EDM_OUT_LOGVAR "' is not one value per sample");
    if (!logvar)
        *out_logvar = -1;
    shape->channels = (int)x->shape.dim[1];
    shape->height = (int)x->shape.dim[2];
    shape->width = (int)x->shape.dim[3];
    shape->label_dim = labels ? (int)labels->shape.dim[1] : 0;
    return 0;
}

/* An executor for n samples with the weights loaded. */
static int bind(edm_denoiser *d, int64_t n, edm_status *st)
{
    if (d->x && d->bound == n)
        return 0;
    edm_backend_free(d->x);
    d->bound = 0;
    d->x = edm_backend_new(d->g, n, &d->opt, st);
    if (!d->x)
        return -1;
    if (edm_weights_load(d->x, d->g, d->f, st) != 0) {
        edm_backend_free(d->x);
        d->x = NULL;
        return -1;
    }
    d->bound = n;
    return 0;
}

edm_denoiser *edm_denoiser_new(const edm_graph *g, const edm_st_file *f, int64_t batch,
                               const edm_backend_options *opt, edm_status *st)
{
    if (batch < 1) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "batch size %lld: must be at least 1", (long long)batch);
        return NULL;
    }
    edm_denoiser *d = calloc(1, sizeof *d);
    if (!d) {
        edm_nomem(st);
        return NULL;
    }
    d->g = g;
    d->f = f;
    d->capacity = batch;
    d->opt = opt ? *opt : edm_backend_defaults(EDM_DEVICE_CPU);
    d->opt.cpu.training = 0;
    d->opt.cpu.keep_all = 0;
    /* build the executor now, so a weights mismatch shows before sampling */
    if (edm_denoiser_interface(d->g, &d->shape, &d->out_d, &d->out_logvar, st) != 0 || bind(d, batch, st) != 0) {
        edm_denoiser_free(d);
        return NULL;
    }
    return d;
}

int edm_denoiser_adopt(edm_denoiser *d, edm_st_file *weights, const char *model, void *program,
                       void (*release)(void *), edm_status *st)
{
    char *name = strdup(model);
    if (!name)
        return edm_nomem(st);
    d->owned = weights;
    d->model = name;
    d->owned_program = program;
    d->release = release;
    return 0;
}

void edm_denoiser_free(edm_denoiser *d)
{
    if (!d)
        return;
    edm_backend_free(d->x);
    free(d->pad_x);
    free(d->pad_sigma);
    free(d->pad_labels);
    free(d->pad_d);
    free(d->pad_logvar);
    if (d->release)
        d->release(d->owned_program);
    edm_st_close(d->owned);
    free(d->model);
    free(d);
}

edm_denoiser_shape edm_denoiser_get_shape(const edm_denoiser *d) { return d->shape; }
int64_t edm_denoiser_batch(const edm_denoiser *d) { return d->capacity; }
int64_t edm_denoiser_sample_numel(const edm_denoiser *d)
{
    return (int64_t)d->shape.channels * d->shape.height * d->shape.width;
}
size_t edm_denoiser_peak_bytes(const edm_denoiser *d) { return d->x ? edm_backend_peak_bytes(d->x) : 0; }

const char *edm_denoiser_model(const edm_denoiser *d) { return d->model ? d->model : ""; }

static int check_eval_args(const edm_denoiser *d, const float *sigma, const float *labels, int64_t n,
                           edm_status *st)
{
    if (n < 1 || n > d->capacity)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "denoiser: %lld samples, expected 1 to %lld",
                        (long long)n, (long long)d->capacity);
    if (!labels != !d->shape.label_dim)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "denoiser: class labels %s for a model with label_dim %d",
                        labels ? "given" : "missing", d->shape.label_dim);
    for (int64_t i = 0; i < n; i++)
        if (!(sigma[i] > 0))
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "denoiser: sigma[%lld] = %g: must be > 0", (long long)i,
                            (double)sigma[i]);
    return 0;
}

/* One run of the bound executor on exactly `bound` samples. */
static int run_bound(edm_denoiser *d, const float *x, const float *sigma, const float *labels, float *D,
                     float *logvar, edm_status *st)
{
    int64_t n = d->bound, numel = n * edm_denoiser_sample_numel(d);
    if (edm_backend_set_f32(d->x, EDM_IN_X, x, numel, st) != 0 ||
        edm_backend_set_f32(d->x, EDM_IN_SIGMA, sigma, n, st) != 0)
        return -1;
    if (labels && edm_backend_set_f32(d->x, EDM_IN_CLASS_LABELS, labels, n * d->shape.label_dim, st) != 0)
        return -1;
    if (edm_backend_run(d->x, st) != 0)
        return -1;
    if (edm_backend_get_f32(d->x, d->out_d, D, numel, st) != 0)
        return -1;
    if (logvar && edm_backend_get_f32(d->x, d->out_logvar, logvar, n, st) != 0)
        return -1;
    return 0;
}

/* CUDA: n < capacity samples run padded to capacity (σ = 1, zeros). */
static int eval_padded(edm_denoiser *d, const float *x, const float *sigma, const float *labels, int64_t n, float *D,
                       float *logvar, edm_status *st)
{
    int64_t cap = d->capacity, per = edm_denoiser_sample_numel(d), ld = d->shape.label_dim;
    if (!d->pad_x) {
        d->pad_x = calloc((size_t)(cap * per), sizeof(float));
        d->pad_d = calloc((size_t)(cap * per), sizeof(float));
        d->pad_sigma = calloc((size_t)cap, sizeof(float));
        d->pad_logvar = calloc((size_t)cap, sizeof(float));
        d->pad_labels = calloc((size_t)(cap * (ld ? ld : 1)), sizeof(float));
        if (!d->pad_x || !d->pad_d || !d->pad_sigma || !d->pad_logvar || !d->pad_labels)
            return edm_nomem(st);
    }
    memcpy(d->pad_x, x, sizeof(float) * (size_t)(n * per));
    memset(d->pad_x + n * per, 0, sizeof(float) * (size_t)((cap - n) * per));
    for (int64_t i = 0; i < cap; i++)
        d->pad_sigma[i] = i < n ? sigma[i] : 1.0f;
    if (labels) {
        memcpy(d->pad_labels, labels, sizeof(float) * (size_t)(n * ld));
        memset(d->pad_labels + n * ld, 0, sizeof(float) * (size_t)((cap - n) * ld));
    }
    if (run_bound(d, d->pad_x, d->pad_sigma, labels ? d->pad_labels : NULL, d->pad_d, logvar ? d->pad_logvar : NULL,
                  st) != 0)
        return -1;
    memcpy(D, d->pad_d, sizeof(float) * (size_t)(n * per));
    if (logvar)
        memcpy(logvar, d->pad_logvar, sizeof(float) * (size_t)n);
    return 0;
}

int edm_denoiser_eval(edm_denoiser *d, const float *x, const float *sigma, const float *labels, int64_t n, float *D,
                      float *logvar, edm_status *st)
{
    if (check_eval_args(d, sigma, labels, n, st) != 0)
        return -1;
    if (logvar && d->out_logvar < 0)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no output '" EDM_OUT_LOGVAR "'");
    if (d->opt.device == EDM_DEVICE_CUDA && n < d->capacity)
        return bind(d, d->capacity, st) == 0 ? eval_padded(d, x, sigma, labels, n, D, logvar, st) : -1;
    if (bind(d, n, st) != 0)
        return -1;
    return run_bound(d, x, sigma, labels, D, logvar, st);
}

/* ------------------------------------------------- configuration metadata */

void edm_define_list_free(edm_define_list *l)
{
    for (int i = 0; i < l->count; i++) {
        free((char *)l->items[i].name);
        free((char *)l->items[i].value);
    }
    free(l->items);
    free(l->model);
    memset(l, 0, sizeof *l);
}

static int list_add(edm_define_list *l, const char *name, const char *value, edm_status *st)
{
    edm_define *items = realloc(l->items, sizeof *items * (size_t)(l->count + 1));
    if (!items)
        return edm_nomem(st);
    l->items = items;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return edm_nomem(st);
    }
    items[l->count].name = n;
    items[l->count++].value = v;
    return 0;
}

/* edmc.config holds .edm source text per parameter (strings); the reference's
 * config holds JSON values, whose JSON text is also .edm text (numbers, lists,
 * strings, true/false); nulls are skipped. */
static int add_json_config(const edm_st_file *f, const char *key, const char *text, int edm_text,
                           edm_define_list *l, edm_status *st)
{
    json_object *root = json_tokener_parse(text);
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata '%s' is not a JSON object", edm_st_path(f), key);
    }
    int rc = 0;
    json_object_object_foreach(root, name, val)
    {
        if (rc != 0 || (!edm_text && json_object_is_type(val, json_type_null)))
            continue;
        if (edm_text && !json_object_is_type(val, json_type_string)) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: metadata '%s': the value of '%s' is not a string",
                          edm_st_path(f), key, name);
            continue;
        }
        const char *v = edm_text ? json_object_get_string(val)
                                 : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
        rc = v ? list_add(l, name, v, st) : edm_nomem(st);
    }
    json_object_put(root);
    return rc;
}

int edm_define_list_from_weights(const edm_st_file *f, edm_define_list *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    const char *model = edm_st_metadata(f, EDM_META_MODEL);
    if (model && !(out->model = strdup(model)))
        return edm_nomem(st);
    const char *keys[] = {EDM_META_CONFIG, "config"};
    for (int k = 0; k < 2; k++) {
        const char *text = edm_st_metadata(f, keys[k]);
        if (!text)
            continue;
        out->source = keys[k];
        if (add_json_config(f, keys[k], text, k == 0, out, st) != 0) {
            edm_define_list_free(out);
            return -1;
        }
        return 0;
    }
    return 0;
}
