/* edmc compile: a model ahead of time into one package (runtime/package.h):
 * its graph, the plan the backend runs, the parameter table, the source, and
 * for cuda the kernels compiled by NVRTC for each architecture and batch.
 * --mode=train packages the training program (training=true, differentiated)
 * with the plan and kernels of the trainer's backend (training, optimizer). */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "codegen/cuda_nvrtc.h"
#include "compiler/passes/fusion.h"
#include "runtime/checksum.h"
#include "runtime/package.h"

#define MAX_ARCHS 8

typedef struct {
    cli_opts base; /* the model file, -D, -o, --device, --precision, --fuse, --mode */
    const char *arch, *batch;
} compile_opts;

#define AT(field) .at = offsetof(compile_opts, field)
static const cli_option compile_table[] = {
    {.names = "--arch", .kind = CLI_STRING, AT(arch), .arg = "sm_XY[,sm_XY...]", .def = "sm_90",
     .help = "cuda: the GPU architectures to compile the kernels for"},
    {.names = "--batch", .kind = CLI_STRING, AT(batch), .arg = "B[,B...]", .def = "8",
     .help = "cuda: the batch sizes to compile the kernels for (the CPU runs any)"},
};

/* Everything made on the way to the package. */
typedef struct {
    int64_t batches[EDM_PACKAGE_MAX_BATCHES];
    int nbatches;
    char archs[MAX_ARCHS][16];
    int narchs;
    edm_cuda_kernel_image kernels[MAX_ARCHS * EDM_PACKAGE_MAX_BATCHES];
    char sha[MAX_ARCHS * EDM_PACKAGE_MAX_BATCHES][EDM_SHA256_HEX];
    edm_cubin cubins[MAX_ARCHS * EDM_PACKAGE_MAX_BATCHES];
    edm_plan_layout layouts[MAX_ARCHS * EDM_PACKAGE_MAX_BATCHES]; /* the fused plan's memory per cubin */
    int nkernels, nlayouts;
    char *plan_xml;
    size_t plan_size;
} compile_work;

/* --batch=8,32 and --arch=sm_80,sm_90 into w; prints the problem. */
static int parse_lists(const compile_opts *c, int cuda, compile_work *w)
{
    if (!cuda) {
        if (c->batch || c->arch) {
            fprintf(stderr, "edmc compile: --batch and --arch apply to --device=cuda (a CPU package runs any batch)\n");
            return 2;
        }
        return 0;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", c->batch ? c->batch : "8");
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (w->nbatches == EDM_PACKAGE_MAX_BATCHES) {
            fprintf(stderr, "edmc compile: --batch: at most %d batch sizes\n", EDM_PACKAGE_MAX_BATCHES);
            return 2;
        }
        if (cli_parse_int("compile", "--batch", t, 1, 1 << 20, &w->batches[w->nbatches]) != 0)
            return 2;
        for (int k = 0; k < w->nbatches; k++)
            if (w->batches[k] == w->batches[w->nbatches]) {
                fprintf(stderr, "edmc compile: --batch=%s: %s twice\n", c->batch, t);
                return 2;
            }
        w->nbatches++;
    }
    snprintf(buf, sizeof buf, "%s", c->arch ? c->arch : "sm_90");
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int major = 0;
        char tail = 0;
        if (w->narchs == MAX_ARCHS || sscanf(t, "sm_%d%c", &major, &tail) != 1 || major < 50 || major > 199) {
            fprintf(stderr, "edmc compile: --arch=%s: expected up to %d architectures like sm_80,sm_90\n", c->arch,
                    MAX_ARCHS);
            return 2;
        }
        snprintf(w->archs[w->narchs++], sizeof w->archs[0], "%s", t);
    }
    if (w->nbatches == 0 || w->narchs == 0) {
        fprintf(stderr, "edmc compile: --batch and --arch need at least one value each\n");
        return 2;
    }
    return 0;
}

/* The plan the backend makes for the graph (what a run from the package
 * reads instead of planning), with the memory tables of a fused cuda plan
 * (one per architecture and batch, made by make_kernels: lent to the plan
 * while it is written). */
static int make_plan(const edm_graph *g, const edm_backend_options *bo, compile_work *w, edm_status *st)
{
    int n = edm_graph_count(g);
    int *map = malloc(sizeof *map * (size_t)(n > 0 ? n : 1));
    if (!map)
        return edm_nomem(st);
    /* the rules the backend that runs the package applies (edm_backend_new) */
    edm_plan_options po = {.fuse = bo->device == EDM_DEVICE_CPU ? edm_fuse_cpu(bo->cpu.fuse) : bo->cpu.fuse,
                           .training = bo->cpu.training};
    edm_graph *own = NULL;
    const edm_graph *run = NULL;
    edm_plan *p = edm_plan_for_run(g, &po, NULL, 0, &own, &run, map, st);
    int rc = p ? 0 : -1;
    FILE *f = rc == 0 ? open_memstream(&w->plan_xml, &w->plan_size) : NULL;
    if (rc == 0 && !f)
        rc = edm_nomem(st);
    if (f) {
        p->layouts = w->layouts;
        p->nlayouts = w->nlayouts;
        rc = edm_plan_write_xml(f, p, st);
        p->layouts = NULL;
        p->nlayouts = 0;
        if (fclose(f) != 0 && rc == 0)
            rc = edm_nomem(st);
    }
    edm_plan_free(p);
    edm_graph_free(own);
    free(map);
    return rc;
}

/* One cubin per (architecture, batch): NVRTC, through its cache.  The
 * source depends on both (the batch is baked in; tensor cores from sm_80). */
static int make_kernels(const edm_graph *g, const edm_backend_options *bo, compile_work *w, edm_status *st)
{
    for (int b = 0; b < w->nbatches; b++)
        for (int a = 0; a < w->narchs; a++) {
            char *source = NULL;
            edm_cubin *c = &w->cubins[w->nkernels];
            char *sha = w->sha[w->nkernels];
            edm_plan_layout *layout = &w->layouts[w->nlayouts];
            if (edm_backend_kernel_source(g, w->batches[b], bo, w->archs[a], &source, layout, st) != 0)
                return -1;
            if (layout->nvalues > 0)
                w->nlayouts++;
            edm_sha256_hex(source, strlen(source), sha);
            int rc = edm_nvrtc_compile_cached(source, w->archs[a], c, st);
            free(source);
            if (rc != 0) {
                edm_status_prefix(st, "%s, batch %lld", w->archs[a], (long long)w->batches[b]);
                return -1;
            }
            w->kernels[w->nkernels++] = (edm_cuda_kernel_image){.arch = w->archs[a], .batch = w->batches[b],
                                                                 .source_sha256 = sha, .cubin = c->data,
                                                                 .size = c->size};
            fprintf(stderr, "edmc compile: %s, batch %lld: %zu bytes of kernels (%.1f s%s)\n", w->archs[a],
                    (long long)w->batches[b], c->size, c->seconds, c->from_cache ? ", from the cache" : "");
        }
    return 0;
}

static int compile_package(compile_opts *c, const edm_program *prog, const edm_sources *src, edm_backend_options *bo,
                           compile_work *w)
{
    edm_status st;
    edm_status_init(&st);
    const char *mode = c->base.mode;
    int rc = bo->device == EDM_DEVICE_CUDA ? make_kernels(prog->graph, bo, w, &st) : 0;
    if (rc == 0)
        rc = make_plan(prog->graph, bo, w, &st);
    if (rc == 0) {
        edm_package_spec sp = {.model_path = c->base.file, .defines = c->base.defines, .ndefines = c->base.ndefines,
                               .prog = prog, .src = src, .backend = bo, .mode = mode, .batches = w->batches,
                               .nbatches = w->nbatches, .plan_xml = w->plan_xml, .plan_size = w->plan_size,
                               .kernels = w->kernels, .nkernels = w->nkernels};
        rc = edm_package_write(c->base.output, &sp, &st);
    }
    if (rc != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    char fuse[64];
    printf("%s: %s for %s (%s %s, --fuse=%s)", c->base.output, c->base.file, mode,
           bo->device == EDM_DEVICE_CUDA ? "cuda" : "cpu",
           edm_dtype_name(bo->device == EDM_DEVICE_CUDA ? bo->storage : bo->cpu.compute),
           edm_fuse_str(bo->cpu.fuse, fuse, sizeof fuse));
    if (w->nkernels)
        printf(", %d cubins", w->nkernels);
    printf("\n");
    return 0;
}

int cmd_compile(int argc, char **argv)
{
    compile_opts c;
    memset(&c, 0, sizeof c);
    cli_opts_defaults(&c.base);
    int rc = cli_parse_own(argc, argv, "compile", compile_table, CLI_COUNT(compile_table),
                           OPT_OUTPUT | OPT_DEVICE | OPT_PRECISION | OPT_FUSE | OPT_MODE | OPT_DEFINE, &c,
                           &c.base.file);
    if (rc != 0) {
        cli_opts_free(&c.base);
        return rc > 0 ? 0 : 2;
    }
    if (!c.base.file || !c.base.output) {
        fprintf(stderr, "edmc compile: needs a model file and -o X.edmpkg (see edmc compile --help)\n");
        rc = 2;
    } else if (strcmp(c.base.mode, "forward") != 0 && strcmp(c.base.mode, "sample") != 0 &&
               strcmp(c.base.mode, "train") != 0) {
        fprintf(stderr, "edmc compile: --mode=%s: expected forward, sample or train\n", c.base.mode);
        rc = 2;
    }
    int train = rc == 0 && strcmp(c.base.mode, "train") == 0;
    edm_backend_options bo;
    if (rc == 0)
        rc = cli_backend("compile", c.base.device, c.base.precision, NULL, NULL, 0, c.base.fuse, 0, &bo);
    /* what the trainer's backend is made with (runtime/train.c): its plan and kernels depend on them */
    if (rc == 0)
        bo.cpu.training = bo.optimizer = train;
    compile_work *w = calloc(1, sizeof *w);
    edm_sources *src = edm_sources_new();
    if (rc == 0 && (!w || !src)) {
        fprintf(stderr, "edmc: out of memory\n");
        rc = 1;
    }
    rc = rc ? rc : parse_lists(&c, bo.device == EDM_DEVICE_CUDA, w);
    edm_program prog = {0};
    rc = rc ? rc : train ? cli_load_training("compile", &c.base, src, &prog) : cli_load(&c.base, src, &prog);
    if (rc == 0)
        rc = compile_package(&c, &prog, src, &bo, w);
    for (int k = 0; w && k < w->nkernels; k++)
        edm_cubin_free(&w->cubins[k]);
    for (int k = 0; w && k < w->nlayouts; k++)
        edm_plan_layout_free(&w->layouts[k]);
    if (w)
        free(w->plan_xml);
    free(w);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&c.base);
    return rc;
}
