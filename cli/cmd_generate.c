/* edmc generate: sampling images (or latents) with the EDM Heun sampler.
 *
 * Its own options (--net, --seeds, --steps, ...) are taken out of argv here;
 * the rest (-D, --threads, --batch, --outdir, --device, --precision, a model
 * file) go through the shared cli_parse. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "runtime/denoiser_open.h"
#include "runtime/files.h"
#include "runtime/image.h"
#include "runtime/interface_names.h"
#include "runtime/package.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/sample.h"
#include "runtime/vae.h"
#include "runtime/clock.h"

#define MAX_IMAGES (1 << 24)

typedef struct {
    cli_opts base; /* -D, the model file, --threads, --batch, --outdir, the device options */
    const char *net, *model, *preset, *guide, *guide_model, *grid, *noise, *save_raw, *seeds, *names, *vae;
    edm_define guide_defs[CLI_MAX_DEFINES];
    int nguide_defs;
    int guide_opts; /* --guide-model or --guide-D given */
    int subdirs;    /* one folder per thousand seeds, as the reference writes them */
    int grid_scale; /* each pixel of --grid as a block of this many */
    edm_sample_params sp;
    int64_t cls;    /* -1: a random class per seed */
    char preset_path[4096];
    char vae_model[4096]; /* models/sd-vae.edm, for --vae */
} gen_opts;

/* Everything one run holds. */
typedef struct {
    const cli_opts *o;
    const gen_opts *g;
    edm_sources *src, *gsrc, *vsrc; /* one per compiled model (a manager loads each file once) */
    int guide_failed;        /* the error is about the guide: print it from gsrc */
    int vae_failed;          /* or about the VAE: from vsrc */
    edm_denoiser *net, *guide;
    edm_vae *vae;            /* --vae: the decoder the samples go through */
    edm_graph *pkg_graph;                /* --package: its graph, */
    edm_st_file *pkg_net, *pkg_guide;    /* and the weights the denoisers run it with */
    edm_backend_options backend; /* --device, --precision, --threads, CUDA ablations */
    edm_denoiser_shape shape;
    int64_t numel, batch;
    int64_t n;         /* images */
    uint64_t *seeds;   /* n */
    float *labels;     /* n × label_dim, or NULL */
    float *noise;      /* n × numel from --noise, or NULL */
    float *all;        /* n × numel results, kept for --save-raw (and --grid without --vae) */
    int png;           /* 1 or 3 channels (or decoded by --vae): PNG files; otherwise raw tensors */
    int out_ch, out_h, out_w; /* the images written: the samples, or --vae's pictures of them */
    int64_t out_numel;
    float *decoded;    /* --vae: the batch's pictures */
    float *shown;      /* n × out_numel images for --grid (r->all without --vae) */
} gen_run;

/* ------------------------------------------------------------ options */

static int store_guide_define(void *opts, const char *cmd, const char *name, const char *v)
{
    gen_opts *g = opts;
    g->guide_opts = 1;
    return cli_define_append(cmd, name, g->guide_defs, &g->nguide_defs, v);
}

static int store_sampler(void *opts, const char *cmd, const char *name, const char *v)
{
    int s = edm_sampler_from_name(v);
    if (s < 0) {
        fprintf(stderr, "edmc %s: %s=%s: expected heun, euler or dpmpp-2m\n", cmd, name, v);
        return -1;
    }
    ((gen_opts *)opts)->sp.sampler = (edm_sampler)s;
    return 0;
}

static int store_interval(void *opts, const char *cmd, const char *name, const char *v)
{
    double lohi[2];
    int n;
    if (cli_parse_real_list(cmd, name, v, 0, HUGE_VAL, lohi, 2, &n) != 0)
        return -1;
    if (n != 2 || lohi[0] > lohi[1]) {
        fprintf(stderr, "edmc %s: %s=%s: expected LO,HI with 0 <= LO <= HI (σ values)\n", cmd, name, v);
        return -1;
    }
    edm_sample_params *p = &((gen_opts *)opts)->sp;
    p->guidance_lo = lohi[0];
    p->guidance_hi = lohi[1];
    return 0;
}

#define AT(field) .at = offsetof(gen_opts, field)
#define STR(name, field, arg_, help_) \
    {.names = (name), .kind = CLI_STRING, AT(field), .arg = (arg_), .help = (help_)}
#define REAL(name, field, def_, help_) \
    {.names = (name), .kind = CLI_REAL, AT(field), .lo = -HUGE_VAL, .hi = HUGE_VAL, .arg = "X", .def = (def_), \
     .help = (help_)}

static const cli_option gen_table[] = {
    STR("--net", net, "W.safetensors", "the network's weights (a snapshot, a PH-EMA result, init's output)"),
    STR("--model", model, "FILE.edm", "the model, when the weights do not name theirs"),
    STR("--preset", preset, "NAME", "the model models/NAME.edm"),
    {.names = "--seeds", .kind = CLI_STRING, AT(seeds), .arg = "LIST", .def = "0-63",
     .help = "one image per seed: 0-63, 1,5,7, 0-3,10"},
    STR("--grid", grid, "PNG", "also every image in one grid picture"),
    {.names = "--grid-scale", .kind = CLI_SMALL, AT(grid_scale), .lo = 1, .hi = 64, .arg = "K", .def = "1",
     .help = "enlarge the grid: each pixel a K x K block"},
    {.names = "--names", .kind = CLI_CHOICE, AT(names), .arg = "edmc|reference", .def = "edmc",
     .help = "file names: seedNNNNNN.png, or the reference's NNNNNN.png"},
    {.names = "--subdirs", .kind = CLI_FLAG, AT(subdirs),
     .help = "a folder per thousand seeds (000000/, 001000/, ...), as the reference's --subdirs"},
    {.names = "--class", .kind = CLI_INT, AT(cls), .hi = 1 << 30, .arg = "C", .def = "a random class per seed",
     .help = "the class label"},
    {.names = "--sampler", .kind = CLI_CALL, .arg = "heun|euler|dpmpp-2m", .def = "heun",
     .help = "the ODE solver", .call = store_sampler},
    {.names = "--steps", .kind = CLI_SMALL, AT(sp.steps), .lo = 2, .hi = 100000, .arg = "N",
     .def = "32", .help = "noise levels (Heun: 2N-1 evaluations, the others N)"},
    STR("--guide --gnet", guide, "G.safetensors", "the guiding network (autoguidance or CFG)"),
    STR("--guide-model", guide_model, "FILE.edm", "the guide's model"),
    {.names = "--guide-D", .kind = CLI_CALL, .arg = "name=value", .help = "a guide model parameter",
     .call = store_guide_define},
    REAL("--guidance", sp.guidance, "1", "guidance weight w: D = D_g + w (D - D_g)"),
    {.names = "--guidance-interval", .kind = CLI_CALL, .arg = "LO,HI", .def = "every σ",
     .help = "guide only at noise levels σ in [LO, HI]", .call = store_interval},
    REAL("--sigma-min --sigma_min", sp.sigma_min, "0.002", "the lowest noise level"),
    REAL("--sigma-max --sigma_max", sp.sigma_max, "80", "the highest noise level"),
    REAL("--rho", sp.rho, "7", "the schedule's exponent"),
    REAL("--S-churn --S_churn", sp.S_churn, "0", "stochastic churn (heun, euler)"),
    REAL("--S-min --S_min", sp.S_min, "0", "churn only at σ >= S_min"),
    REAL("--S-max --S_max", sp.S_max, "inf", "churn only at σ <= S_max"),
    REAL("--S-noise --S_noise", sp.S_noise, "1", "the churn noise's scale"),
    STR("--noise", noise, "N.safetensors",
        "the initial noise (tensor '" EDM_NOISE_TENSOR "' [N, C, H, W]) instead of seeds"),
    STR("--save-raw", save_raw, "FILE.safetensors", "every sample as floats, with the settings"),
    STR("--vae", vae, "VAE.safetensors",
        "latent models: decode the samples to PNGs with this Stable Diffusion VAE (diffusers' sd-vae-ft-mse file)"),
};

/* generate's table, and the shared options it takes (the device's, --batch, --outdir, -D). */
static int parse_generate(int argc, char **argv, gen_opts *g)
{
    return cli_parse_own(argc, argv, "generate", gen_table, CLI_COUNT(gen_table),
                         OPT_THREADS | OPT_BATCH | OPT_DEVICE | OPT_PRECISION | OPT_CUDA | OPT_OUTDIR | OPT_DEFINE |
                             OPT_PACKAGE,
                         g, &g->base.file);
}

static void gen_opts_free(gen_opts *g)
{
    for (int i = 0; i < g->nguide_defs; i++)
        free((char *)g->guide_defs[i].name);
    g->nguide_defs = 0;
}

/* Combinations that make no sense, before anything is loaded. */
static int check_usage(const cli_opts *o, const gen_opts *g)
{
    const char *why = NULL;
    if (!g->net)
        why = "give the network's weights with --net=W.safetensors";
    else if (!!o->file + !!g->model + !!g->preset + !!o->package > 1)
        why = "give the model once: as a file, with --model, with --preset or with --package";
    else if (!g->guide && g->sp.guidance != 1)
        why = "--guidance needs a guide network (--guide=G.safetensors)";
    else if (!g->guide && g->guide_opts)
        why = "--guide-model and --guide-D need --guide=G.safetensors";
    else if (g->noise && g->seeds)
        why = "--noise gives the images' noise: it does not take --seeds";
    else if (!o->outdir && !g->save_raw)
        why = "give --outdir=DIR (one file per image) and/or --save-raw=FILE.safetensors";
    if (why) {
        fprintf(stderr, "edmc generate: %s\n", why);
        return -1;
    }
    edm_status st;
    edm_status_init(&st);
    if (edm_sample_params_check(&g->sp, &st) != 0) {
        fprintf(stderr, "edmc generate: %s\n", st.msg);
        return -1;
    }
    return 0;
}

/* "0-63", "1,5,7", "0-3,10": the seeds in order. */
static int parse_seeds(const char *text, uint64_t **out, int64_t *n)
{
    *out = NULL;
    *n = 0;
    int64_t cap = 0;
    const char *p = text;
    while (1) {
        char *end;
        errno = 0;
        unsigned long long a = *p >= '0' && *p <= '9' ? strtoull(p, &end, 10) : 0, b;
        if (!(*p >= '0' && *p <= '9') || errno)
            goto bad;
        b = a;
        p = end;
        if (*p == '-') {
            p++;
            if (!(*p >= '0' && *p <= '9'))
                goto bad;
            b = strtoull(p, &end, 10);
            if (errno || b < a)
                goto bad;
            p = end;
        }
        if (b - a >= (unsigned long long)(MAX_IMAGES - *n)) {
            fprintf(stderr, "edmc generate: --seeds=%s: more than %d images\n", text, MAX_IMAGES);
            free(*out);
            return -1;
        }
        if (*n + (int64_t)(b - a) + 1 > cap) {
            cap = (*n + (int64_t)(b - a) + 1) * 2;
            uint64_t *grown = realloc(*out, sizeof *grown * (size_t)cap);
            if (!grown) {
                fprintf(stderr, "edmc: out of memory\n");
                free(*out);
                return -1;
            }
            *out = grown;
        }
        for (unsigned long long s = a;; s++) {
            (*out)[(*n)++] = s;
            if (s == b)
                break;
        }
        if (*p == '\0')
            return 0;
        if (*p++ != ',')
            goto bad;
    }
bad:
    fprintf(stderr, "edmc generate: --seeds=%s: expected seeds like 0-63 or 1,5,7 (ranges low-high)\n", text);
    free(*out);
    *out = NULL;
    return -1;
}

/* ------------------------------------------------------------ loading */

static int report(const gen_run *r, edm_status *st)
{
    cli_report(r->guide_failed ? r->gsrc : r->vae_failed ? r->vsrc : r->src, st);
    return cli_exit_code(st);
}

/* A denoiser on the package's graph with the weights of path, checked
 * against its parameter table. */
static edm_denoiser *open_packaged(gen_run *r, const char *path, edm_st_file **weights, edm_status *st)
{
    if (!r->pkg_graph)
        r->pkg_graph = edm_package_take_graph(r->o->pkg);
    *weights = edm_weights_open(path, st);
    if (!*weights || edm_package_check_weights(r->o->pkg, *weights, st) != 0)
        return NULL;
    return edm_denoiser_new(r->pkg_graph, *weights, r->batch, &r->backend, st);
}

/* --package: the net, and a guide without a model of its own, on its graph. */
static int open_packaged_nets(gen_run *r, edm_status *st)
{
    if (!(r->net = open_packaged(r, r->g->net, &r->pkg_net, st)))
        return -1;
    if (!r->g->guide || r->g->guide_model)
        return 1;
    if (!(r->guide = open_packaged(r, r->g->guide, &r->pkg_guide, st))) {
        edm_status_prefix(st, "guide %s", r->g->guide);
        return -1;
    }
    return 0;
}

static int open_nets(gen_run *r, edm_status *st)
{
    if (r->o->pkg) {
        int rc = open_packaged_nets(r, st);
        if (rc <= 0)
            return rc;
    }
    edm_denoiser_spec spec = {.weights = r->g->net, .model = r->g->model ? r->g->model : r->o->file,
                              .defines = r->o->defines, .ndefines = r->o->ndefines, .batch = r->batch,
                              .backend = r->backend};
    if (!r->net && !(r->net = edm_denoiser_open(&spec, r->src, st)))
        return -1;
    if (!r->g->guide)
        return 0;
    /* a guide without a model of its own is taken for the net's architecture */
    edm_denoiser_spec gs = {.weights = r->g->guide, .model = r->g->guide_model,
                            .fallback_model = edm_denoiser_model(r->net), .defines = r->g->guide_defs,
                            .ndefines = r->g->nguide_defs, .batch = r->batch, .backend = r->backend};
    r->guide = edm_denoiser_open(&gs, r->gsrc, st);
    if (!r->guide) {
        r->guide_failed = 1;
        edm_status_prefix(st, "guide %s", r->g->guide);
        return -1;
    }
    if (edm_sample_check_guide(r->net, r->guide, st) != 0) {
        edm_status_prefix(st, "--guide=%s", r->g->guide);
        return -1;
    }
    return 0;
}

/* Reads `noise` [n, C, H, W] (and `class_labels` [n, L] when present) from
 * --noise: the images are then the file's rows, numbered 0..n-1. */
static int read_tensor(const edm_st_file *f, const edm_st_entry *e, float **out, edm_status *st)
{
    *out = malloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1));
    if (!*out)
        return edm_nomem(st);
    if (edm_st_read_f32(f, e, *out, e->numel, st) != 0)
        return -1;
    for (int64_t k = 0; k < e->numel; k++)
        if (!isfinite((*out)[k]))
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' element %lld is %g (not finite)",
                            edm_st_path(f), e->name, (long long)k, (double)(*out)[k]);
    return 0;
}

static int check_noise_shapes(const gen_run *r, const edm_st_file *f, const edm_st_entry *e,
                              const edm_st_entry *l, edm_status *st)
{
    const edm_denoiser_shape *s = &r->shape;
    if (!e)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '" EDM_NOISE_TENSOR "' [N, %d, %d, %d]",
                        edm_st_path(f),
                        s->channels, s->height, s->width);
    if (e->rank != 4 || e->dim[0] < 1 || e->dim[0] > MAX_IMAGES || e->dim[1] != s->channels ||
        e->dim[2] != s->height || e->dim[3] != s->width)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: '" EDM_NOISE_TENSOR "' is not [N, %d, %d, %d] (the model's images)",
                        edm_st_path(f), s->channels, s->height, s->width);
    if (l && !s->label_dim)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: has " EDM_IN_CLASS_LABELS ", but the model is unconditional (label_dim = 0)",
                        edm_st_path(f));
    if (l && (l->rank != 2 || l->dim[0] != e->dim[0] || l->dim[1] != s->label_dim))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '" EDM_IN_CLASS_LABELS "' is not [%lld, %d]",
                        edm_st_path(f),
                        (long long)e->dim[0], s->label_dim);
    return 0;
}

static int load_noise(gen_run *r, edm_status *st)
{
    edm_st_file *f = edm_st_open(r->g->noise, st);
    if (!f)
        return -1;
    const edm_st_entry *e = edm_st_find(f, EDM_NOISE_TENSOR), *l = edm_st_find(f, EDM_IN_CLASS_LABELS);
    int rc = check_noise_shapes(r, f, e, l, st);
    if (rc == 0)
        rc = read_tensor(f, e, &r->noise, st);
    if (rc == 0 && l)
        rc = read_tensor(f, l, &r->labels, st);
    if (rc == 0) {
        r->n = e->dim[0];
        r->seeds = malloc(sizeof *r->seeds * (size_t)r->n);
        rc = r->seeds ? 0 : edm_nomem(st);
        for (int64_t i = 0; rc == 0 && i < r->n; i++)
            r->seeds[i] = (uint64_t)i;
    }
    edm_st_close(f);
    return rc;
}

/* One-hot labels per image: --class, or each seed's random class. */
static int make_labels(gen_run *r, edm_status *st)
{
    int L = r->shape.label_dim;
    if (r->g->cls >= 0 && !L)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--class=%lld: the model is unconditional (label_dim = 0)",
                        (long long)r->g->cls);
    if (r->g->cls >= L)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--class=%lld: the model has classes 0 to %d", (long long)r->g->cls,
                        L - 1);
    if (!L || (r->labels && r->g->cls < 0))
        return 0;
    free(r->labels);
    r->labels = calloc((size_t)(r->n * L), sizeof(float));
    if (!r->labels)
        return edm_nomem(st);
    for (int64_t i = 0; i < r->n; i++) {
        int c = r->g->cls >= 0 ? (int)r->g->cls : edm_sample_class(r->seeds[i], L);
        r->labels[i * L + c] = 1;
    }
    return 0;
}

/* ------------------------------------------------------------ output */

static int write_raw_one(const gen_run *r, const char *path, int64_t i, const float *x, edm_status *st)
{
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int64_t dim[4] = {1, r->shape.channels, r->shape.height, r->shape.width}, ldim[2] = {1, r->shape.label_dim};
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seeds[i]);
    int rc = edm_st_writer_add_f32(w, EDM_SAMPLE_TENSOR, EDM_F32, 4, dim, x, st);
    if (rc == 0 && r->labels)
        rc = edm_st_writer_add_f32(w, EDM_IN_CLASS_LABELS, EDM_F32, 2, ldim, r->labels + i * r->shape.label_dim, st);
    if (rc == 0)
        rc = edm_st_writer_meta(w, "seed", seed, st);
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    return rc;
}

/* Image i (its values x) as outdir/seedNNNNNN.png or .safetensors (NNNNNN.png
 * with --names=reference; in outdir/KKK000/ with --subdirs). */
static int write_one(const gen_run *r, int64_t i, const float *x, edm_status *st)
{
    size_t len = strlen(r->o->outdir) + 64;
    char *path = malloc(len);
    if (!path)
        return edm_nomem(st);
    unsigned long long seed = r->seeds[i];
    int plain = r->g->names && strcmp(r->g->names, "reference") == 0;
    int n = snprintf(path, len, "%s/", r->o->outdir);
    if (r->g->subdirs) { /* the reference's layout: 000000/, 001000/, ... */
        n += snprintf(path + n, len - (size_t)n, "%06llu", seed / 1000 * 1000);
        if (edm_make_dirs(path, st) != 0) {
            free(path);
            return -1;
        }
        n += snprintf(path + n, len - (size_t)n, "/");
    }
    snprintf(path + n, len - (size_t)n, "%s%06llu.%s", plain ? "" : "seed", seed, r->png ? "png" : "safetensors");
    int rc = r->png ? edm_image_write_png(path, x, r->out_ch, r->out_h, r->out_w, st)
                    : write_raw_one(r, path, i, x, st);
    free(path);
    return rc;
}

static int add_settings(const gen_run *r, edm_st_writer *w, edm_status *st)
{
    const edm_sample_params *p = &r->g->sp;
    char v[64];
    snprintf(v, sizeof v, "%d", p->steps);
    int rc = edm_st_writer_meta(w, "num_steps", v, st);
    if (rc == 0)
        rc = edm_st_writer_meta(w, "sampler", edm_sampler_name(p->sampler), st);
    const char *keys[] = {"sigma_min", "sigma_max", "rho", "guidance", "S_churn", "S_min", "S_max", "S_noise",
                          "guidance_lo", "guidance_hi"};
    const double vals[] = {p->sigma_min, p->sigma_max, p->rho,     p->guidance,    p->S_churn,
                           p->S_min,     p->S_max,     p->S_noise, p->guidance_lo, p->guidance_hi};
    for (int k = 0; rc == 0 && k < 10; k++) {
        snprintf(v, sizeof v, "%.17g", vals[k]);
        rc = edm_st_writer_meta(w, keys[k], v, st);
    }
    if (rc == 0)
        rc = edm_st_writer_meta(w, "net", r->g->net, st);
    if (rc == 0 && r->g->guide)
        rc = edm_st_writer_meta(w, "guide", r->g->guide, st);
    return rc;
}

/* --save-raw: every sample, the labels and the settings in one file. */
static int write_raw_all(const gen_run *r, edm_status *st)
{
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int64_t dim[4] = {r->n, r->shape.channels, r->shape.height, r->shape.width}, ldim[2] = {r->n, r->shape.label_dim};
    int rc = edm_st_writer_add_f32(w, EDM_SAMPLE_TENSOR, EDM_F32, 4, dim, r->all, st);
    if (rc == 0 && r->labels)
        rc = edm_st_writer_add_f32(w, EDM_IN_CLASS_LABELS, EDM_F32, 2, ldim, r->labels, st);
    if (rc == 0)
        rc = add_settings(r, w, st);
    if (rc == 0)
        rc = edm_st_writer_write(w, r->g->save_raw, st);
    edm_st_writer_free(w);
    return rc;
}

/* ------------------------------------------------------------ sampling */

static int check_finite(const gen_run *r, const float *x, int64_t first, int64_t count, edm_status *st)
{
    for (int64_t i = 0; i < count; i++)
        for (int64_t k = 0; k < r->numel; k++)
            if (!isfinite(x[i * r->numel + k]))
                return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                                "the sample of seed %llu is not finite (element %lld is %g)",
                                (unsigned long long)r->seeds[first + i], (long long)k, (double)x[i * r->numel + k]);
    return 0;
}

/* Images first .. first+count-1: noise, sampler, files. */
static int run_batch(gen_run *r, int64_t first, int64_t count, float *x, edm_status *st)
{
    for (int64_t i = 0; i < count; i++) {
        float *xi = x + i * r->numel;
        if (r->noise)
            memcpy(xi, r->noise + (first + i) * r->numel, sizeof(float) * (size_t)r->numel);
        else
            edm_sample_noise(r->seeds[first + i], xi, r->numel);
    }
    const float *labels = r->labels ? r->labels + first * r->shape.label_dim : NULL;
    if (edm_sample_run(&r->g->sp, r->net, r->guide, r->seeds + first, labels, count, x, st) != 0)
        return -1;
    if (check_finite(r, x, first, count, st) != 0)
        return -1;
    const float *img = x;
    if (r->vae) {
        int64_t vb = edm_vae_batch(r->vae);
        for (int64_t k = 0; k < count; k += vb)
            if (edm_vae_decode(r->vae, x + k * r->numel, count - k < vb ? count - k : vb,
                               r->decoded + k * r->out_numel, st) != 0) {
                edm_status_prefix(st, "seed %llu", (unsigned long long)r->seeds[first + k]);
                return -1;
            }
        img = r->decoded;
    }
    for (int64_t i = 0; r->o->outdir && i < count; i++)
        if (write_one(r, first + i, img + i * r->out_numel, st) != 0)
            return -1;
    if (r->all)
        memcpy(r->all + first * r->numel, x, sizeof(float) * (size_t)(count * r->numel));
    if (r->shown && r->shown != r->all)
        memcpy(r->shown + first * r->out_numel, img, sizeof(float) * (size_t)(count * r->out_numel));
    return 0;
}

static int sample_all(gen_run *r, edm_status *st)
{
    float *x = malloc(sizeof(float) * (size_t)(r->batch * r->numel));
    if (!x)
        return edm_nomem(st);
    int tty = isatty(STDERR_FILENO);
    double t0 = edm_now_seconds();
    int rc = 0;
    for (int64_t first = 0; rc == 0 && first < r->n; first += r->batch) {
        int64_t count = r->n - first < r->batch ? r->n - first : r->batch;
        rc = run_batch(r, first, count, x, st);
        double dt = edm_now_seconds() - t0;
        long long done = first + count;
        double rate = (double)done / (dt > 0 ? dt : 1e-9), eta = (double)(r->n - done) / rate;
        if (rc == 0)
            fprintf(stderr, "%sgenerate: %lld/%lld images, %.1f s, %.3g images/s, ETA %02d:%02d:%02d%s",
                    tty ? "\r" : "", done, (long long)r->n, dt, rate, (int)(eta / 3600), (int)fmod(eta / 60, 60),
                    (int)fmod(eta, 60), tty ? "" : "\n");
    }
    if (tty)
        fprintf(stderr, "\n");
    free(x);
    return rc;
}

/* The number of rows of --noise, to size the batch before the nets are built
 * (the shapes are checked once the model is known). */
static int noise_count(gen_run *r, edm_status *st)
{
    edm_st_file *f = edm_st_open(r->g->noise, st);
    if (!f)
        return -1;
    const edm_st_entry *e = edm_st_find(f, EDM_NOISE_TENSOR);
    int rc = 0;
    if (!e || e->rank != 4 || e->dim[0] < 1 || e->dim[0] > MAX_IMAGES)
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '" EDM_NOISE_TENSOR "' of shape [N, C, H, W]",
                      edm_st_path(f));
    else
        r->n = e->dim[0];
    edm_st_close(f);
    return rc;
}

/* --vae: the decoder for the net's latents, and the pictures' shape. */
static int open_vae(gen_run *r, edm_status *st)
{
    if (r->png)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--vae: the model makes %d-channel pixel images, not latents",
                        r->shape.channels);
    if (r->shape.height != r->shape.width)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--vae: the model's latents are %dx%d, not square",
                        r->shape.height, r->shape.width);
    /* the reference runs its VAE 8 images at a time */
    edm_vae_spec spec = {.weights = r->g->vae, .model = r->g->vae_model, .decoder = 1,
                         .resolution = r->shape.height, .batch = r->batch < 8 ? r->batch : 8, .backend = r->backend};
    r->vae = edm_vae_open(&spec, r->vsrc, st);
    if (!r->vae) {
        r->vae_failed = 1;
        return -1;
    }
    if (edm_vae_latent_channels(r->vae) != r->shape.channels || edm_vae_latent_resolution(r->vae) != r->shape.height)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--vae=%s decodes %d-channel %dx%d latents; the model makes %d-channel %dx%d ones", r->g->vae,
                        edm_vae_latent_channels(r->vae), edm_vae_latent_resolution(r->vae),
                        edm_vae_latent_resolution(r->vae), r->shape.channels, r->shape.height, r->shape.width);
    r->png = 1;
    r->out_ch = edm_vae_image_channels(r->vae);
    r->out_h = r->out_w = edm_vae_image_resolution(r->vae);
    r->out_numel = (int64_t)r->out_ch * r->out_h * r->out_w;
    r->decoded = malloc(sizeof(float) * (size_t)(r->batch * r->out_numel));
    return r->decoded ? 0 : edm_nomem(st);
}

static int prepare(gen_run *r, edm_status *st)
{
    if (r->g->noise && noise_count(r, st) != 0)
        return -1;
    r->batch = r->o->batch < r->n ? r->o->batch : r->n;
    if (r->o->outdir && edm_make_dirs(r->o->outdir, st) != 0)
        return -1;
    if (open_nets(r, st) != 0)
        return -1;
    r->shape = edm_denoiser_get_shape(r->net);
    r->numel = edm_denoiser_sample_numel(r->net);
    r->out_ch = r->shape.channels;
    r->out_h = r->shape.height;
    r->out_w = r->shape.width;
    r->out_numel = r->numel;
    r->png = r->shape.channels == 1 || r->shape.channels == 3;
    if (r->g->vae && open_vae(r, st) != 0)
        return -1;
    if (r->g->grid && !r->png)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--grid: the model makes %d-channel images (latents), not 1- or 3-channel pixels: give "
                        "--vae=VAE.safetensors to decode them",
                        r->shape.channels);
    if (r->g->noise && load_noise(r, st) != 0)
        return -1;
    if (make_labels(r, st) != 0)
        return -1;
    if ((r->g->grid && !r->vae) || r->g->save_raw) {
        r->all = malloc(sizeof(float) * (size_t)(r->n * r->numel));
        if (!r->all)
            return edm_nomem(st);
    }
    r->shown = r->g->grid && r->vae ? malloc(sizeof(float) * (size_t)(r->n * r->out_numel)) : r->all;
    if (r->g->grid && !r->shown)
        return edm_nomem(st);
    return 0;
}

static int generate(gen_run *r, edm_status *st)
{
    if (prepare(r, st) != 0 || sample_all(r, st) != 0)
        return -1;
    if (r->g->grid &&
        edm_image_write_grid(r->g->grid, r->shown, r->n, r->out_ch, r->out_h, r->out_w, r->g->grid_scale, st) != 0)
        return -1;
    if (r->g->save_raw && write_raw_all(r, st) != 0)
        return -1;
    if (r->o->outdir)
        printf("%s: %lld %s (seed%06llu...)\n", r->o->outdir, (long long)r->n,
               r->png ? "PNG images" : "latent tensors (.safetensors)", (unsigned long long)r->seeds[0]);
    if (r->g->grid)
        printf("%s: grid of %lld images\n", r->g->grid, (long long)r->n);
    if (r->g->save_raw)
        printf("%s: %lld raw samples\n", r->g->save_raw, (long long)r->n);
    if (!r->png)
        fprintf(stderr, "note: the model makes %d-channel latents; --vae=VAE.safetensors (the Stable Diffusion VAE, "
                        "sd-vae-ft-mse) decodes them to PNGs\n",
                r->shape.channels);
    return 0;
}

static void gen_run_free(gen_run *r)
{
    edm_denoiser_free(r->net);
    edm_denoiser_free(r->guide);
    edm_vae_free(r->vae);
    edm_st_close(r->pkg_net);
    edm_st_close(r->pkg_guide);
    edm_graph_free(r->pkg_graph);
    free(r->seeds);
    free(r->labels);
    free(r->noise);
    if (r->shown != r->all)
        free(r->shown);
    free(r->all);
    free(r->decoded);
    edm_sources_free(r->src);
    edm_sources_free(r->gsrc);
    edm_sources_free(r->vsrc);
}

static int run_generate(cli_opts *o, const gen_opts *g)
{
    gen_run r = {.o = o, .g = g};
    int brc = cli_open_package("generate", o);
    if (brc == 0)
        brc = cli_backend_of("generate", o, &r.backend);
    if (brc != 0)
        return brc;
    if (!g->noise && parse_seeds(g->seeds ? g->seeds : "0-63", &r.seeds, &r.n) != 0)
        return 2;
    edm_status st;
    edm_status_init(&st);
    r.src = edm_sources_new();
    r.gsrc = edm_sources_new();
    r.vsrc = edm_sources_new();
    int rc = 0;
    if (!r.src || !r.gsrc || !r.vsrc) {
        fprintf(stderr, "edmc: out of memory\n");
        rc = 1;
    } else {
        if (generate(&r, &st) != 0)
            rc = report(&r, &st);
    }
    gen_run_free(&r);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    gen_opts g;
    memset(&g, 0, sizeof g);
    cli_opts_defaults(&g.base);
    edm_sample_params_default(&g.sp);
    g.cls = -1;
    g.grid_scale = 1;
    int rc = parse_generate(argc, argv, &g);
    if (rc > 0) { /* --help */
        rc = 0;
    } else if (rc < 0 || check_usage(&g.base, &g) != 0 ||
               (g.preset && cli_preset_path("generate", g.preset, g.preset_path, sizeof g.preset_path) != 0) ||
               (g.vae && cli_preset_path("generate", "sd-vae", g.vae_model, sizeof g.vae_model) != 0)) {
        rc = 2;
    } else {
        if (g.preset)
            g.model = g.preset_path;
        rc = run_generate(&g.base, &g);
    }
    cli_opts_free(&g.base);
    gen_opts_free(&g);
    return rc;
}
