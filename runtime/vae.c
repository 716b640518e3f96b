#include "config.h"

#include "runtime/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/denoiser.h"
#include "runtime/denoiser_open.h"
#include "runtime/latent.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"

struct edm_vae {
    edm_program prog;
    edm_st_file *f;
    edm_backend *x;
    int decoder;
    int64_t batch;
    int out_node;
    int img_ch, img_res, lat_ch, lat_res;
    int64_t in_numel, out_numel; /* per image */
    float *in, *out;             /* batch × in_numel, batch × out_numel */
};

/* The graph's node op named name, or NULL. */
static const edm_node *find_node(const edm_graph *g, edm_op op, const char *name)
{
    int id = edm_graph_find(g, op, name);
    return id < 0 ? NULL : edm_graph_node(g, id);
}

/* The number of levels of block_out_channels as the program ended up with it. */
static int count_levels(const edm_program *p)
{
    const char *v = edm_program_param(p, "block_out_channels");
    int n = v && v[0] == '[' && v[1] != ']' ? 1 : 0;
    for (; v && *v; v++)
        n += *v == ',';
    return n;
}

/* The defines of the part: the file's edmc.config (for parameters the
 * model has, except those set here), the part, the attention's names as the
 * file has them, and the resolution (the decoder's from its latents' side
 * and the number of levels). */
typedef struct {
    edm_define defs[64];
    int n;
    char part[16], attention[16], resolution[32];
} vae_defines;

static int is_ours(const char *name)
{
    return strcmp(name, "part") == 0 || strcmp(name, "attention_names") == 0 || strcmp(name, "resolution") == 0;
}

/* Compiles the model with d on a source manager of its own into *p. */
static int probe(const edm_vae_spec *spec, const vae_defines *d, edm_program *p, edm_status *st)
{
    return edm_compile_probe(spec->model, NULL, NULL, d->defs, d->n, p, st);
}

static int make_defines(const edm_vae_spec *spec, const edm_st_file *f, const edm_define_list *meta, vae_defines *d,
                        edm_status *st)
{
    const char *part = spec->decoder ? "decoder" : "encoder";
    snprintf(d->part, sizeof d->part, "\"%s\"", part);
    char legacy[96];
    snprintf(legacy, sizeof legacy, "%s.mid_block.attentions.0.query.weight", part);
    snprintf(d->attention, sizeof d->attention, "\"%s\"", edm_st_find(f, legacy) ? "query" : "to_q");
    d->defs[0] = (edm_define){"part", d->part};
    d->defs[1] = (edm_define){"attention_names", d->attention};
    d->n = 2;
    edm_program p;
    if (probe(spec, d, &p, st) != 0)
        return -1;
    for (int i = 0; i < meta->count && d->n < 60; i++)
        if (!is_ours(meta->items[i].name) && edm_program_param(&p, meta->items[i].name))
            d->defs[d->n++] = meta->items[i];
    edm_program_free(&p);
    int res = spec->resolution;
    if (spec->decoder) { /* the image side: the latent side times 2^(levels - 1) */
        if (probe(spec, d, &p, st) != 0)
            return -1;
        int levels = count_levels(&p);
        edm_program_free(&p);
        if (levels < 1 || levels > 16)
            return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "%s: block_out_channels has %d levels", spec->model,
                            levels);
        res = spec->resolution << (levels - 1);
    }
    snprintf(d->resolution, sizeof d->resolution, "%d", res);
    d->defs[d->n++] = (edm_define){"resolution", d->resolution};
    return 0;
}

/* The input and output of the part, their shapes and buffers. */
static int bind_shapes(edm_vae *v, edm_status *st)
{
    const edm_graph *g = v->prog.graph;
    const edm_node *lat = find_node(g, v->decoder ? EDM_OP_INPUT : EDM_OP_OUTPUT, v->decoder ? "latent" : "mean_std");
    const edm_node *img = find_node(g, v->decoder ? EDM_OP_OUTPUT : EDM_OP_INPUT, "image");
    if (!lat || !img || lat->shape.rank != 4 || img->shape.rank != 4)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the VAE model has no 'latent' input and 'image' output (or 'image' input and 'mean_std' output)");
    v->img_ch = (int)img->shape.dim[1];
    v->img_res = (int)img->shape.dim[2];
    v->lat_ch = (int)lat->shape.dim[1] / (v->decoder ? 1 : 2);
    v->lat_res = (int)lat->shape.dim[2];
    if (v->lat_ch != EDM_LATENT_CHANNELS || v->img_ch != 3)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the VAE has %d latent and %d image channels; the latent models use 4 and 3", v->lat_ch,
                        v->img_ch);
    int64_t lat_numel = (int64_t)lat->shape.dim[1] * v->lat_res * v->lat_res;
    int64_t img_numel = (int64_t)v->img_ch * v->img_res * v->img_res;
    v->in_numel = v->decoder ? lat_numel : img_numel;
    v->out_numel = v->decoder ? img_numel : lat_numel;
    v->in = calloc((size_t)(v->batch * v->in_numel), sizeof(float));
    v->out = malloc(sizeof(float) * (size_t)(v->batch * v->out_numel));
    if (!v->in || !v->out)
        return edm_nomem(st);
    return 0;
}

static int open_part(edm_vae *v, const edm_vae_spec *spec, edm_sources *src, edm_status *st)
{
    edm_define_list meta;
    if (edm_define_list_from_weights(v->f, &meta, st) != 0)
        return -1;
    vae_defines d;
    int rc = make_defines(spec, v->f, &meta, &d, st);
    if (rc == 0)
        rc = edm_compile_model(src, spec->model, d.defs, d.n, &v->prog, st);
    /* every define comes from the file or from here: a bad one is a bad file */
    if (rc != 0 && st->code == EDM_ERR_USAGE)
        st->code = EDM_ERR_FORMAT;
    edm_define_list_free(&meta);
    if (rc == 0)
        rc = bind_shapes(v, st);
    /* float32 storage, as the reference runs its VAE; never a package's
     * plan or cubins (they are the net's); no training, nothing kept */
    edm_backend_options opt = spec->backend;
    opt.storage = EDM_F32;
    opt.kernels = NULL;
    opt.nkernels = 0;
    opt.optimizer = 0;
    opt.cpu.training = 0;
    opt.cpu.keep_all = 0;
    opt.cpu.keep = NULL;
    opt.cpu.nkeep = 0;
    opt.cpu.plan = NULL;
    if (rc == 0 && !(v->x = edm_backend_new(v->prog.graph, v->batch, &opt, st)))
        rc = -1;
    if (rc == 0)
        v->out_node = edm_backend_find(v->x, EDM_OP_OUTPUT, v->decoder ? "image" : "mean_std");
    if (rc == 0)
        rc = edm_weights_load_part(v->x, v->prog.graph, v->f, 1, st);
    if (rc == 0)
        rc = edm_weights_check_finite(v->prog.graph, v->f, st);
    return rc;
}

edm_vae *edm_vae_open(const edm_vae_spec *spec, edm_sources *src, edm_status *st)
{
    if (spec->batch < 1 || spec->resolution < 1) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "the VAE: batch %lld and resolution %d must be positive",
                 (long long)spec->batch, spec->resolution);
        return NULL;
    }
    edm_vae *v = calloc(1, sizeof *v);
    if (!v) {
        edm_nomem(st);
        return NULL;
    }
    v->decoder = spec->decoder;
    v->batch = spec->batch;
    v->f = edm_weights_open(spec->weights, st);
    if (!v->f || open_part(v, spec, src, st) != 0) {
        if (v->f && st->code != EDM_ERR_USAGE)
            edm_status_prefix(st, "the VAE %s (%s)", spec->weights, v->decoder ? "decoder" : "encoder");
        edm_vae_free(v);
        return NULL;
    }
    return v;
}

void edm_vae_free(edm_vae *v)
{
    if (!v)
        return;
    edm_backend_free(v->x);
    edm_program_free(&v->prog);
    edm_st_close(v->f);
    free(v->in);
    free(v->out);
    free(v);
}

int edm_vae_image_channels(const edm_vae *v) { return v->img_ch; }
int edm_vae_image_resolution(const edm_vae *v) { return v->img_res; }
int edm_vae_latent_channels(const edm_vae *v) { return v->lat_ch; }
int edm_vae_latent_resolution(const edm_vae *v) { return v->lat_res; }
int64_t edm_vae_batch(const edm_vae *v) { return v->batch; }

/* v->in (n filled; the rest of the batch stays as it was) through the part into v->out. */
static int run(edm_vae *v, int64_t n, edm_status *st)
{
    if (n < 1 || n > v->batch)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "VAE: %lld images for a batch of %lld", (long long)n,
                        (long long)v->batch);
    if (edm_backend_set_f32(v->x, v->decoder ? "latent" : "image", v->in, v->batch * v->in_numel, st) != 0 ||
        edm_backend_run(v->x, st) != 0 ||
        edm_backend_get_f32(v->x, v->out_node, v->out, v->batch * v->out_numel, st) != 0)
        return -1;
    for (int64_t k = 0; k < n * v->out_numel; k++)
        if (!isfinite(v->out[k]))
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "the VAE's %s of image %lld is not finite (element %lld)",
                            v->decoder ? "output" : "latent", (long long)(k / v->out_numel),
                            (long long)(k % v->out_numel));
    return 0;
}

int edm_vae_decode(edm_vae *v, const float *latents, int64_t n, float *images, edm_status *st)
{
    int64_t plane = (int64_t)v->lat_res * v->lat_res;
    for (int64_t i = 0; i < n && i < v->batch; i++)
        for (int c = 0; c < v->lat_ch; c++) {
            const float *z = latents + (i * v->lat_ch + c) * plane;
            float *raw = v->in + (i * v->lat_ch + c) * plane, scale = edm_latent_scale(c), bias = edm_latent_bias(c);
            for (int64_t k = 0; k < plane; k++) /* the reference: (x - bias) / scale */
                raw[k] = (z[k] - bias) / scale;
        }
    if (run(v, n, st) != 0)
        return -1;
    for (int64_t k = 0; k < n * v->out_numel; k++) {
        float y = v->out[k] < 0 ? 0 : v->out[k] > 1 ? 1 : v->out[k];
        float byte = floorf(y * 255.0f); /* clamp(0, 1).mul(255).to(uint8) */
        /* the middle of that byte's interval of edm_image_to_u8 (x·127.5 + 128, rounded down) */
        images[k] = (byte + 0.5f - 128.0f) / 127.5f;
    }
    return 0;
}

int edm_vae_encode(edm_vae *v, const unsigned char *pixels, int64_t n, float *mean_std, edm_status *st)
{
    for (int64_t k = 0; k < n * v->in_numel && n <= v->batch; k++)
        v->in[k] = (float)pixels[k] / 255.0f;
    if (run(v, n, st) != 0)
        return -1;
    memcpy(mean_std, v->out, sizeof(float) * (size_t)(n * v->out_numel));
    return 0;
}
