/* The denoiser: a compiled model, its weights and an executor (CPU or CUDA).
 * On the CPU the executor is rebuilt for a smaller last batch; on CUDA (where
 * that means new kernels) a smaller batch is padded to the bound one. */
#include "config.h"

#include "runtime/denoiser.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/files.h"
#include "runtime/model_source.h"
#include "runtime/ref_import.h"
#include "runtime/weights.h"
#include "runtime/meta_keys.h"

struct edm_denoiser {
    const edm_graph *g;
    const edm_st_file *f;
    edm_program prog;   /* owned when opened from a file */
    edm_st_file *owned; /* likewise */
    char *model;
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

/* The model's interface: x [N, C, H, W], sigma [N], optional class_labels
 * [N, L]; outputs D_x like x, optional logvar with one value per sample. */
static int read_interface(edm_denoiser *d, edm_status *st)
{
    const edm_node *x = find_node(d->g, EDM_OP_INPUT, "x", NULL);
    const edm_node *sigma = find_node(d->g, EDM_OP_INPUT, "sigma", NULL);
    const edm_node *labels = find_node(d->g, EDM_OP_INPUT, "class_labels", NULL);
    const edm_node *out = find_node(d->g, EDM_OP_OUTPUT, "D_x", &d->out_d);
    const edm_node *logvar = find_node(d->g, EDM_OP_OUTPUT, "logvar", &d->out_logvar);
    if (!batched(x, 4))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no input 'x' of shape [N, C, H, W]");
    if (!batched(sigma, 1))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no input 'sigma' of shape [N]");
    if (labels && !batched(labels, 2))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model's 'class_labels' is not of shape [N, L]");
    if (!out || !edm_shape_equal(&out->shape, &x->shape))
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no output 'D_x' shaped like its input x");
    if (logvar && edm_shape_numel_per_sample(&logvar->shape) != 1)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model's 'logvar' is not one value per sample");
    if (!logvar)
        d->out_logvar = -1;
    d->shape.channels = (int)x->shape.dim[1];
    d->shape.height = (int)x->shape.dim[2];
    d->shape.width = (int)x->shape.dim[3];
    d->shape.label_dim = labels ? (int)labels->shape.dim[1] : 0;
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
    if (read_interface(d, st) != 0 || bind(d, batch, st) != 0) {
        edm_denoiser_free(d);
        return NULL;
    }
    return d;
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
    edm_program_free(&d->prog);
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
    if (edm_backend_set_f32(d->x, "x", x, numel, st) != 0 || edm_backend_set_f32(d->x, "sigma", sigma, n, st) != 0)
        return -1;
    if (labels && edm_backend_set_f32(d->x, "class_labels", labels, n * d->shape.label_dim, st) != 0)
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
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "the model has no output 'logvar'");
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

/* ------------------------------------------------------------ compiling */

int edm_compile_model(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                      edm_status *st)
{
    edm_diags *diags = malloc(sizeof *diags);
    if (!diags)
        return edm_nomem(st);
    int rc = edm_compile_file(src, path, defs, ndefs, prog, diags);
    if (rc != 0) {
        if (diags->count > 0)
            *st = diags->items[0];
        else
            edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: compilation failed", path);
        if (diags->count > 1)
            edm_note_add(st, EDM_NO_LOC, "and %d more errors", diags->count - 1);
    }
    free(diags);
    return rc;
}

static int is_param(const edm_program *p, const char *name) { return edm_program_param(p, name) != NULL; }

static int given(const edm_define *defs, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(defs[i].name, name) == 0)
            return 1;
    return 0;
}

/* The parameters model has (with the -D defines): compiled on its own source
 * manager, since one manager loads each file once. */
static int probe_params(const edm_denoiser_spec *spec, const char *model, const char *embedded, edm_program *prog)
{
    edm_sources *tmp = edm_sources_new();
    edm_status ignored;
    edm_status_init(&ignored);
    int rc = tmp ? 0 : -1;
    if (rc == 0 && embedded)
        rc = edm_model_source_add(tmp, embedded, spec->weights, &ignored) < 0 ? -1 : 0;
    if (rc == 0)
        rc = edm_compile_model(tmp, model, spec->defines, spec->ndefines, prog, &ignored);
    edm_sources_free(tmp);
    return rc;
}

/* The weights' configuration (for parameters the model has, and that no -D
 * overrides) followed by the -D defines; then the program compiled with them. */
static int compile_configured(const edm_denoiser_spec *spec, const edm_define_list *meta, const char *model,
                              const char *embedded, edm_sources *src, edm_program *prog, edm_status *st)
{
    edm_program probe;
    memset(&probe, 0, sizeof probe);
    if (meta->count == 0 || probe_params(spec, model, embedded, &probe) != 0) /* errors are reported from src */
        return edm_compile_model(src, model, spec->defines, spec->ndefines, prog, st);
    edm_define *all = malloc(sizeof *all * (size_t)(meta->count + spec->ndefines));
    if (!all) {
        edm_program_free(&probe);
        return edm_nomem(st);
    }
    int n = 0;
    for (int i = 0; i < meta->count; i++)
        if (is_param(&probe, meta->items[i].name) && !given(spec->defines, spec->ndefines, meta->items[i].name))
            all[n++] = meta->items[i];
    for (int i = 0; i < spec->ndefines; i++)
        all[n++] = spec->defines[i];
    edm_program_free(&probe);
    int rc = edm_compile_model(src, model, all, n, prog, st);
    if (rc != 0 && st->code == EDM_ERR_USAGE) {
        /* a bad value from the file's metadata is a bad file, not a bad command line */
        for (int i = 0; i < n - spec->ndefines; i++) {
            size_t len = strlen(all[i].name);
            if (strncmp(st->msg, "-D ", 3) == 0 && strncmp(st->msg + 3, all[i].name, len) == 0 &&
                (st->msg[3 + len] == '=' || st->msg[3 + len] == ':' || st->msg[3 + len] == ' '))
                st->code = EDM_ERR_FORMAT;
        }
    }
    if (rc != 0)
        edm_status_prefix(st, "%s with the configuration in %s (metadata '%s')", model, spec->weights, meta->source);
    free(all);
    return rc;
}

/* Weights files are data from strangers: the model their metadata names must
 * lie in the model folders (runtime/files.h), and a compilation that takes
 * parameters from their metadata may read files only there (and in the
 * folder of a model the user named), so no imported path from edmc.config can
 * open, and echo in an error, a file elsewhere. */
static int trust_boundary(const edm_denoiser_spec *spec, const edm_define_list *meta, const char *model,
                          edm_sources *src, edm_status *st)
{
    int from_meta = !spec->model && meta->model && model == meta->model;
    if (!from_meta && meta->count == 0)
        return 0;
    edm_model_dirs md;
    edm_model_dirs_get(&md);
    char own[4096];
    if (!from_meta) { /* a model the user named: its folder is theirs to read */
        edm_folder_of(model, own, sizeof own);
        md.dir[md.n++] = own;
    }
    if (edm_sources_restrict(src, md.dir, md.n, st) != 0)
        return -1;
    if (from_meta && !edm_sources_allows(src, model))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s names its model '%s' (metadata 'edmc.model'), which is outside the model folders "
                        "($EDMC_MODELS, ./models, models/ beside edmc): give the .edm file with --model if you trust it",
                        spec->weights, model);
    return 0;
}

edm_denoiser *edm_denoiser_open(const edm_denoiser_spec *spec, edm_sources *src, edm_status *st)
{
    edm_st_file *f = edm_weights_open(spec->weights, st);
    if (!f)
        return NULL;
    edm_define_list meta;
    if (edm_define_list_from_weights(f, &meta, st) != 0) {
        edm_st_close(f);
        return NULL;
    }
    const char *model = spec->model ? spec->model : meta.model ? meta.model : spec->fallback_model;
    /* weights that carry their model's source (a training run's) compile it,
     * not a file that may have moved or changed since */
    const char *embedded = spec->model ? NULL : edm_st_metadata(f, EDM_META_SOURCE);
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    edm_denoiser *d = NULL;
    int at = embedded ? edm_model_source_add(src, embedded, spec->weights, st) : 0;
    if (embedded && at >= 0)
        model = edm_sources_get(src, at)->path;
    if (at >= 0 && !model)
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "%s does not name its model (no 'edmc.model' metadata): give the .edm file with --model", spec->weights);
    else if (at >= 0 && (embedded || trust_boundary(spec, &meta, model, src, st) == 0) &&
             compile_configured(spec, &meta, model, embedded, src, &prog, st) == 0)
        d = edm_denoiser_new(prog.graph, f, spec->batch, &spec->backend, st);
    if (d) {
        d->prog = prog;
        d->owned = f;
        d->model = strdup(model);
        if (!d->model) {
            edm_nomem(st);
            edm_denoiser_free(d);
            d = NULL;
        }
    } else {
        edm_program_free(&prog);
        edm_st_close(f);
    }
    edm_define_list_free(&meta);
    return d;
}
