/* edmc dataset convert and encode: the reference's `dataset_tool.py convert`
 * (runtime/dataset_convert.h) and `encode` (the same loop, each image made
 * into its latents by runtime/latent_dataset.h).  Their options are parsed
 * here. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/clock.h"
#include "runtime/dataset_convert.h"
#include "runtime/latent_dataset.h"

typedef struct {
    const char *cmd; /* convert, encode */
    double start, last;
} progress;

static void on_unreadable(void *ctx, const edm_status *why)
{
    const progress *p = ctx;
    fprintf(stderr, "edmc dataset %s: left out %s\n", p->cmd, why->msg);
}

static void on_progress(void *ctx, int64_t done, int64_t total)
{
    progress *p = ctx;
    double now = edm_now_seconds();
    if (done < total && now - p->last < 1.0)
        return;
    p->last = now;
    double rate = now > p->start ? (double)done / (now - p->start) : 0;
    fprintf(stderr, "%s: %lld/%lld images, %.1f s, %.1f images/s\n", p->cmd, (long long)done, (long long)total,
            now - p->start, rate);
}

static int usage(const char *cmd, const char *why)
{
    if (why) /* NULL: --help */
        fprintf(stderr, "edmc dataset %s: %s\n", cmd, why);
    if (strcmp(cmd, "convert") == 0)
        fprintf(stderr, "usage: edmc dataset convert --source=DIR|ZIP --dest=DIR|ZIP [--resolution=WxH]\n"
                        "           [--transform=none|center-crop|center-crop-wide|center-crop-dhariwal] [--max-images=N]\n");
    else
        fprintf(stderr, "usage: edmc dataset encode --source=DIR|ZIP --dest=DIR|ZIP --vae=VAE.safetensors\n"
                        "           [--max-images=N] [--device=cpu|cuda] [--threads=N]\n");
    return 2;
}

/* The options of encode that convert does not have. */
typedef struct {
    const char *vae, *device;
    int threads;
} encode_opts;

/* "64x64" or "64,64". */
static int parse_resolution(const char *v, int *w, int *h)
{
    char *end;
    errno = 0;
    long a = strtol(v, &end, 10);
    if (end == v || (*end != 'x' && *end != ',') || a < 1 || a > 65536 || errno)
        return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || b < 1 || b > 65536 || errno)
        return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

/* convert's options (eo NULL), or encode's (the reference's encode takes
 * no transform: its source is a dataset). */
static int parse_options(int argc, char **argv, const char *cmd, edm_convert_opts *o, encode_opts *eo)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
#define IS(name) (len == strlen(name) && strncmp(a, name, len) == 0)
        if (IS("--help") || IS("-h")) {
            usage(cmd, NULL);
            return 1;
        }
        int known = IS("--source") || IS("--dest") || IS("--max-images");
        known |= eo ? IS("--vae") || IS("--device") || IS("--threads") : IS("--transform") || IS("--resolution");
        if (!known) {
            fprintf(stderr, "edmc dataset %s: unknown option '%.*s'\n", cmd, (int)len, a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "edmc dataset %s: %.*s needs a value\n", cmd, (int)len, a);
            return 2;
        }
        if (!eq)
            i++;
        if (IS("--source")) {
            o->source = v;
        } else if (IS("--dest")) {
            o->dest = v;
        } else if (IS("--max-images")) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (end == v || *end || n < 1 || errno) {
                fprintf(stderr, "edmc dataset %s: --max-images=%s: expected a whole number of at least 1\n", cmd, v);
                return 2;
            }
            o->max_images = n;
        } else if (IS("--vae")) {
            eo->vae = v;
        } else if (IS("--device")) {
            eo->device = v;
        } else if (IS("--threads")) {
            int64_t t;
            if (cli_parse_int(cmd, "--threads", v, 1, 1024, &t) != 0)
                return 2;
            eo->threads = (int)t;
        } else if (IS("--transform")) {
            if (edm_transform_parse(v, &o->transform) != 0) {
                fprintf(stderr,
                        "edmc dataset %s: --transform=%s: expected none, center-crop, center-crop-wide or "
                        "center-crop-dhariwal\n",
                        cmd, v);
                return 2;
            }
        } else if (parse_resolution(v, &o->width, &o->height) != 0) {
            fprintf(stderr, "edmc dataset %s: --resolution=%s: expected WxH like 64x64\n", cmd, v);
            return 2;
        }
#undef IS
    }
    if (!o->source || !o->dest || !o->source[0] || !o->dest[0])
        return usage(cmd, "give --source and --dest");
    if (eo && (!eo->vae || !eo->vae[0]))
        return usage(cmd, "give the VAE's weights with --vae=VAE.safetensors (diffusers' sd-vae-ft-mse file)");
    return 0;
}

/* encode: the VAE's encoder as the conversion's hook (opened at the first image). */
static int set_encoder(const encode_opts *eo, edm_latent_encoder *e, char *model, size_t size, edm_convert_opts *o)
{
    int rc = cli_preset_path("dataset encode", "sd-vae", model, size);
    if (rc == 0)
        rc = cli_backend("dataset encode", eo->device, NULL, NULL, NULL, 0, NULL, eo->threads, &e->backend);
    if (rc != 0)
        return rc < 0 ? 2 : rc;
    e->weights = eo->vae;
    e->model = model;
    e->src = edm_sources_new();
    if (!e->src) {
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    o->encode = edm_latent_encode_image;
    o->encode_ctx = e;
    o->entry_stem = EDM_LATENT_ENTRY_STEM;
    o->entry_ext = EDM_LATENT_ENTRY_EXT;
    return 0;
}

static int convert(int argc, char **argv, const char *cmd)
{
    progress p = {.cmd = cmd, .start = edm_now_seconds()};
    edm_convert_opts o = {.max_images = -1, .on_unreadable = on_unreadable, .on_progress = on_progress, .ctx = &p};
    encode_opts eo = {0};
    int encode = strcmp(cmd, "encode") == 0;
    int rc = parse_options(argc, argv, cmd, &o, encode ? &eo : NULL);
    edm_latent_encoder e = {0};
    char model[4096];
    if (rc == 1) /* --help */
        return 0;
    if (rc == 0 && encode)
        rc = set_encoder(&eo, &e, model, sizeof model, &o);
    edm_convert_result r;
    edm_status st;
    edm_status_init(&st);
    if (rc == 0 && edm_dataset_convert(&o, &r, &st) != 0) {
        cli_report(e.src, &st);
        rc = cli_exit_code(&st);
    }
    edm_latent_encoder_close(&e);
    edm_sources_free(e.src);
    if (rc != 0)
        return rc;
    printf("%s: %lld %s of %dx%d, %s", o.dest, (long long)r.written, encode ? "latents of images" : "images",
           r.resolution, r.resolution, r.labelled ? "labelled (dataset.json)" : "no labels");
    if (r.skipped)
        printf(", %lld too small for center-crop-wide left out", (long long)r.skipped);
    printf("\n");
    if (r.unreadable) {
        fprintf(stderr, "edmc dataset %s: %lld of %lld source files could not be read and are left out\n", cmd,
                (long long)r.unreadable, (long long)r.sources);
        return 1;
    }
    return 0;
}

int cmd_dataset(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "edmc dataset: give a subcommand: edmc dataset convert|encode --source=... --dest=...\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: edmc dataset convert|encode --source=DIR|ZIP --dest=DIR|ZIP ... (edmc dataset convert --help)\n");
        return 0;
    }
    if (strcmp(argv[1], "convert") == 0 || strcmp(argv[1], "encode") == 0)
        return convert(argc - 1, argv + 1, argv[1]);
    fprintf(stderr, "edmc dataset: unknown subcommand '%s' (convert, encode)\n", argv[1]);
    return 2;
}
