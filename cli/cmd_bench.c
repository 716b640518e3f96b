/* edmc bench: images per second of one model on one backend, in one of three
 * modes: forward (one evaluation of the denoiser), train (one optimizer step:
 * forced WN, forward + backward of the training program, Adam) and sample
 * (a whole Heun sampler run, 2·steps − 1 evaluations).  Weights and inputs
 * are random: timing does not depend on the values. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_tune.h"
#include "cli/cli.h"
#include "compiler/passes/passes.h"
#include "runtime/backend.h"
#include "runtime/denoiser.h"
#include "runtime/interface_names.h"
#include "runtime/rng.h"
#include "runtime/sample.h"
#include "runtime/train.h"
#include "runtime/weights.h"
#include "runtime/clock.h"

/* Random values for the graph's inputs (σ log-normal, as training draws it). */
static int fill_random(const edm_graph *g, edm_backend *x, edm_status *st)
{
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_INPUT)
            continue;
        int64_t count = edm_backend_numel(x, i);
        float *data = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1));
        if (!data)
            return edm_nomem(st);
        edm_rng r = edm_rng_make(1, n->name);
        edm_rng_normal(&r, 0, data, count);
        if (n->op == EDM_OP_INPUT && strcmp(n->name, EDM_IN_SIGMA) == 0)
            for (int64_t k = 0; k < count; k++)
                data[k] = expf(-0.4f + data[k]);
        int rc = edm_backend_set_f32(x, n->name, data, count, st);
        free(data);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* One timed unit of work. */
typedef struct {
    int (*run)(void *ctx, edm_status *st);
    void *ctx;
} bench_work;

/* Warm-up (compiles, captures the CUDA Graph, allocates), then `iters` runs
 * (0: enough for about 3 seconds, 2 to 1000). */
static int time_work(const bench_work *w, int iters, int *done, double *elapsed, double *cpu, edm_status *st)
{
    if (w->run(w->ctx, st) != 0)
        return -1;
    if (iters == 0) {
        double t0 = edm_now_seconds();
        if (w->run(w->ctx, st) != 0)
            return -1;
        double one = edm_now_seconds() - t0;
        iters = one > 0 ? (int)(3.0 / one) : 10;
        iters = iters < 2 ? 2 : iters > 1000 ? 1000 : iters;
    }
    double t0 = edm_now_seconds(), c0 = edm_cpu_seconds();
    for (int i = 0; i < iters; i++)
        if (w->run(w->ctx, st) != 0)
            return -1;
    *elapsed = edm_now_seconds() - t0;
    *cpu = edm_cpu_seconds() - c0;
    *done = iters;
    return 0;
}

static int run_forward(void *ctx, edm_status *st) { return edm_backend_run(ctx, st); }

typedef struct {
    edm_trainer *t;
    int64_t batch;
    int64_t step;
} train_ctx;

static int run_train_step(void *ctx, edm_status *st)
{
    train_ctx *c = ctx;
    edm_adam adam = {0.9, 0.99, 1e-8};
    double loss = 0;
    int64_t nonfinite = 0;
    if (edm_trainer_force_wn(c->t, st) != 0 || edm_trainer_zero_grad(c->t, st) != 0 ||
        edm_trainer_accumulate(c->t, c->batch, &loss, st) != 0)
        return -1;
    return edm_trainer_adam(c->t, &adam, 1e-4, ++c->step, &nonfinite, st);
}

typedef struct {
    edm_denoiser *d;
    edm_sample_params p;
    int64_t batch;
    uint64_t *seeds;
    float *x, *labels;
} sample_ctx;

static int run_sample(void *ctx, edm_status *st)
{
    sample_ctx *c = ctx;
    int64_t per = edm_denoiser_sample_numel(c->d);
    for (int64_t i = 0; i < c->batch; i++)
        edm_sample_noise(c->seeds[i], c->x + i * per, per);
    return edm_sample_run(&c->p, c->d, NULL, c->seeds, c->labels, c->batch, c->x, st);
}

/* Random weights for the sampler's denoiser, through a temporary file (the
 * denoiser reads its weights from a safetensors file). */
static edm_st_file *random_weights(const edm_graph *g, edm_status *st)
{
    char path[] = "/tmp/edmc-bench-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot create a temporary weights file in /tmp");
        return NULL;
    }
    close(fd);
    edm_st_writer *w = edm_st_writer_new();
    int rc = w ? edm_weights_init(g, 1, w, st) : edm_nomem(st);
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    edm_st_file *f = rc == 0 ? edm_st_open(path, st) : NULL;
    unlink(path);
    return f;
}

typedef struct {
    double ips, ms;
    double cpu_ips; /* images per CPU second of the process (all threads) */
    int iters;
    size_t mem;
    char describe[320];
    /* seconds from the command's start to a backend ready for weights: the
     * model compiled or the package opened, the backend made (not the
     * random weights); and the CPU seconds of the process till then */
    double start, setup_s, setup_cpu_s;
    double start_cpu; /* the process's CPU seconds at start (after --tune's runs: they are not setup) */
    int evaluations;  /* of the network an iteration: 1, or the sampler's 2·steps − 1 */
    double tflop_s;   /* the work of an iteration (work_flop) over its time */
} bench_result;

/* The floating-point operations of one iteration, 2 a multiply-add as docs/edm2.md §2 counts
 * them on graph g (the training program for a training step: the forward and backward pass,
 * the forced weight normalization; not Adam), times the sampler's evaluations (2·steps − 1)
 * for a sampling run; 0 or -1. */
static int work_flop(const edm_graph *g, int64_t batch, int evaluations, double *flop, edm_status *st)
{
    edm_stats s;
    if (edm_stats_compute(g, &s, st) != 0)
        return -1;
    *flop = 2 * (s.macs_per_sample * (double)batch + s.macs_per_step) * evaluations;
    edm_stats_free(&s);
    return 0;
}

static int by_time(const void *a, const void *b)
{
    double x = ((const edm_cuda_profile_row *)a)->ms, y = ((const edm_cuda_profile_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static double contraction_flop(const edm_mma_key *k)
{
    return 2.0 * (double)k->gm * (double)k->gn * (double)k->gk * (double)k->gb;
}

/* flop floating-point operations in ms milliseconds, as TFLOP/s (0 for no time). */
static double tflop_per_s(double flop, double ms) { return ms > 0 ? flop / (ms * 1e-3) / 1e12 : 0; }

/* --profile: one more run with each kernel timed; the slowest to stderr (stdout keeps --json's one object). */
static int print_profile(edm_backend *x, edm_status *st)
{
    edm_cuda_profile_row *rows;
    int n;
    if (edm_backend_profile(x, &rows, &n, st) != 0)
        return -1;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += rows[i].ms;
    qsort(rows, (size_t)n, sizeof *rows, by_time);
    /* the tensor-core contractions: 2·gm·gn·gk·gb operations a launch */
    double mma_ms = 0, mma_flop = 0;
    for (int i = 0; i < n; i++)
        if (rows[i].mma.op[0]) {
            mma_ms += rows[i].ms;
            mma_flop += contraction_flop(&rows[i].mma);
        }
    fprintf(stderr, "profile: %d kernels, %.3f ms in all (one run, launch by launch, CUDA events)\n", n, total);
    if (mma_ms > 0)
        fprintf(stderr, "profile: the tensor-core contractions %.3f ms (%.1f%%), %.1f TFLOP/s\n", mma_ms,
                total > 0 ? 100 * mma_ms / total : 0.0, tflop_per_s(mma_flop, mma_ms));
    for (int i = 0; i < n && i < 15; i++) {
        char tile[96] = "", name[48];
        if (rows[i].mma.op[0]) {
            edm_mma_format_tile(name, sizeof name, rows[i].mma_tile);
            snprintf(tile, sizeof tile, ", tile %s, %.1f TFLOP/s", name,
                     tflop_per_s(contraction_flop(&rows[i].mma), rows[i].ms));
        }
        fprintf(stderr, "  %9.3f ms %5.1f%%  %s (%d step%s%s)\n", rows[i].ms, total > 0 ? 100 * rows[i].ms / total : 0.0,
                rows[i].kernel, rows[i].steps, rows[i].steps == 1 ? "" : "s", tile);
    }
    free(rows);
    return 0;
}

/* A backend of the benchmark's kind: mode forward or sample, the network's; train, the
 * training step's (t, whose backend x is). */
typedef struct {
    edm_backend *x;
    edm_trainer *t;
} bench_backend;

static void bench_backend_free(bench_backend *b)
{
    if (b->t)
        edm_trainer_free(b->t);
    else
        edm_backend_free(b->x);
    memset(b, 0, sizeof *b);
}

/* Made (the setup a benchmark reports: the kernels compiled or loaded); 0 or -1. */
static int bench_backend_make(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, bench_backend *b,
                              edm_status *st)
{
    memset(b, 0, sizeof *b);
    if (strcmp(o->mode, "train") == 0) {
        b->t = edm_trainer_new(g, o->batch, bo, st);
        b->x = b->t ? edm_trainer_backend(b->t) : NULL;
    } else {
        b->x = edm_backend_new(g, o->batch, bo, st);
    }
    return b->x ? 0 : -1;
}

/* Its random values: the inputs, and the parameters as `edmc init` draws them (on every
 * core: img512-s has 280M); a training step is one pass, as a run without --batch-gpu's. */
static int bench_backend_fill(const edm_graph *g, bench_backend *b, edm_status *st)
{
    if (b->t) {
        int rc = edm_trainer_direct_grads(b->t, 1, st);
        if (rc == 0)
            rc = edm_trainer_init(b->t, 1, st);
        return rc == 0 ? fill_random(g, b->x, st) : -1;
    }
    int rc = fill_random(g, b->x, st);
    return rc == 0 ? edm_weights_init_backend(g, 1, b->x, st) : -1;
}

int bench_profile(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, edm_cuda_profile_row **rows,
                  int *nrows, char *arch, size_t arch_size, char *device, size_t device_size, edm_status *st)
{
    *rows = NULL;
    *nrows = 0;
    bench_backend b;
    int rc = bench_backend_make(o, g, bo, &b, st);
    if (rc == 0)
        rc = bench_backend_fill(g, &b, st);
    /* a first profiled run warms the caches and clocks; the second is kept */
    if (rc == 0)
        rc = edm_backend_profile(b.x, rows, nrows, st);
    if (rc == 0) {
        free(*rows);
        rc = edm_backend_profile(b.x, rows, nrows, st);
    }
    const edm_cuda_exec *cx = rc == 0 ? edm_backend_cuda(b.x) : NULL;
    if (cx) {
        snprintf(arch, arch_size, "%s", edm_cuda_exec_arch(cx));
        snprintf(device, device_size, "%s", edm_cuda_exec_device_name(cx));
    }
    bench_backend_free(&b);
    return rc;
}

/* Modes forward and train: the backend made (its setup timed), filled, then its unit of
 * work timed (a forward pass, or an optimizer step). */
static int bench_backend_run(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, bench_result *r,
                             edm_status *st)
{
    bench_backend b;
    int rc = bench_backend_make(o, g, bo, &b, st);
    r->setup_s = edm_now_seconds() - r->start;
    r->setup_cpu_s = edm_cpu_seconds() - r->start_cpu;
    if (rc == 0)
        rc = bench_backend_fill(g, &b, st);
    train_ctx c = {.t = b.t, .batch = o->batch};
    bench_work w = b.t ? (bench_work){run_train_step, &c} : (bench_work){run_forward, b.x};
    double elapsed = 0, cpu = 0;
    if (rc == 0)
        rc = time_work(&w, o->iters, &r->iters, &elapsed, &cpu, st);
    if (rc == 0) {
        r->ips = (double)o->batch * r->iters / elapsed;
        r->ms = 1000 * elapsed / r->iters;
        r->cpu_ips = cpu > 0 ? (double)o->batch * r->iters / cpu : 0;
        r->mem = edm_backend_peak_bytes(b.x);
        r->evaluations = 1;
        snprintf(r->describe, sizeof r->describe, "%s", edm_backend_describe(b.x));
    }
    /* training: the forward and backward pass (the optimizer's kernels are not in it) */
    if (rc == 0 && o->profile)
        rc = print_profile(b.x, st);
    bench_backend_free(&b);
    return rc;
}

static int bench_sample(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, bench_result *r,
                        edm_status *st)
{
    sample_ctx c = {.batch = o->batch};
    edm_sample_params_default(&c.p);
    double drawn = edm_now_seconds(), drawn_cpu = edm_cpu_seconds();
    edm_st_file *f = random_weights(g, st);
    drawn = edm_now_seconds() - drawn;
    drawn_cpu = edm_cpu_seconds() - drawn_cpu;
    c.d = f ? edm_denoiser_new(g, f, o->batch, bo, st) : NULL;
    r->setup_s = edm_now_seconds() - r->start - drawn;
    r->setup_cpu_s = edm_cpu_seconds() - drawn_cpu - r->start_cpu;
    int rc = c.d ? 0 : -1;
    if (rc == 0) {
        edm_denoiser_shape sh = edm_denoiser_get_shape(c.d);
        c.seeds = malloc(sizeof *c.seeds * (size_t)o->batch);
        c.x = malloc(sizeof(float) * (size_t)(o->batch * edm_denoiser_sample_numel(c.d)));
        c.labels = sh.label_dim ? calloc((size_t)(o->batch * sh.label_dim), sizeof(float)) : NULL;
        if (!c.seeds || !c.x || (sh.label_dim && !c.labels))
            rc = edm_nomem(st);
        for (int64_t i = 0; rc == 0 && i < o->batch; i++) {
            c.seeds[i] = (uint64_t)i;
            if (sh.label_dim)
                c.labels[i * sh.label_dim + edm_sample_class((uint64_t)i, sh.label_dim)] = 1;
        }
    }
    double elapsed = 0, cpu = 0;
    if (rc == 0) {
        bench_work w = {run_sample, &c};
        rc = time_work(&w, o->iters ? o->iters : 1, &r->iters, &elapsed, &cpu, st);
    }
    if (rc == 0) {
        r->ips = (double)o->batch * r->iters / elapsed;
        r->ms = 1000 * elapsed / r->iters;
        r->cpu_ips = cpu > 0 ? (double)o->batch * r->iters / cpu : 0;
        r->mem = edm_denoiser_peak_bytes(c.d);
        r->evaluations = 2 * c.p.steps - 1;
        snprintf(r->describe, sizeof r->describe, "%d steps", c.p.steps);
    }
    edm_denoiser_free(c.d);
    edm_st_close(f);
    free(c.seeds);
    free(c.x);
    free(c.labels);
    return rc;
}

static int do_bench(const cli_opts *o, const edm_program *prog, const edm_backend_options *bo, double start)
{
    edm_status st;
    edm_status_init(&st);
    bench_result r = {.start = start};
    int rc = 0;
    /* the training program differentiated once (a training package's is already) */
    edm_pipeline_options po = {.training = 1};
    if (strcmp(o->mode, "train") == 0 && !o->pkg)
        rc = edm_pipeline_run(prog->graph, &po, "train", NULL, &st);
    if (rc == 0 && o->tune) {
        rc = bench_tune(o, prog->graph, bo, &st);
        r.start = edm_now_seconds(); /* the setup reported is the benchmark's own */
        r.start_cpu = edm_cpu_seconds();
    }
    /* g, for training: the training program, differentiated above */
    if (rc == 0 && strcmp(o->mode, "sample") == 0)
        rc = bench_sample(o, prog->graph, bo, &r, &st);
    else if (rc == 0)
        rc = bench_backend_run(o, prog->graph, bo, &r, &st);
    double flop = 0;
    if (rc == 0)
        rc = work_flop(prog->graph, o->batch, r.evaluations, &flop, &st);
    if (rc == 0)
        r.tflop_s = tflop_per_s(flop, r.ms);
    if (rc != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    const char *device = bo->device == EDM_DEVICE_CUDA ? "cuda" : "cpu";
    const char *precision = bo->device == EDM_DEVICE_CUDA ? edm_dtype_name(bo->storage) : edm_dtype_name(bo->cpu.compute);
    if (o->json)
        printf("{\"model\": \"%s\", \"mode\": \"%s\", \"device\": \"%s\", \"precision\": \"%s\", \"batch\": %lld, "
               "\"iters\": %d, \"img_per_s\": %.4f, \"cpu_img_per_s\": %.4f, \"ms_per_iter\": %.4f, \"memory_bytes\": %zu, "
               "\"tflop_s\": %.6g, \"setup_s\": %.4f, \"setup_cpu_s\": %.4f, \"backend\": \"%s\"}\n",
               o->file ? o->file : o->package, o->mode, device, precision, (long long)o->batch, r.iters, r.ips, r.cpu_ips, r.ms, r.mem,
               r.tflop_s, r.setup_s, r.setup_cpu_s, r.describe);
    else
        printf("%s: %s, %s %s, batch %lld, %d runs: %.2f images/s, %.1f ms/run, %.3f TFLOP/s; memory %.1f MiB (%s); "
               "setup %.3f s (%.3f s CPU)\n",
               o->file ? o->file : o->package, o->mode, device, precision, (long long)o->batch, r.iters, r.ips, r.ms,
               r.tflop_s, (double)r.mem / (1 << 20), r.describe, r.setup_s, r.setup_cpu_s);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    const unsigned allowed =
        OPT_BATCH | OPT_THREADS | OPT_DEVICE | OPT_MODE | OPT_ITERS | OPT_PRECISION | OPT_CUDA | OPT_JSON | OPT_PACKAGE |
        OPT_PROFILE | OPT_TUNE;
    double start = edm_now_seconds();
    cli_opts o;
    int parsed = cli_parse(argc, argv, "bench", allowed, &o);
    if (parsed != 0) {
        cli_opts_free(&o);
        return parsed > 0 ? 0 : 2;
    }
    int rc = 0;
    if (strcmp(o.mode, "forward") != 0 && strcmp(o.mode, "train") != 0 && strcmp(o.mode, "sample") != 0) {
        fprintf(stderr, "edmc bench: --mode=%s: expected forward, train or sample\n", o.mode);
        rc = 2;
    }
    /* the training program is the same .edm file with training=true */
    if (rc == 0 && strcmp(o.mode, "train") == 0 && !o.package && cli_add_define("bench", &o, "training=true") != 0)
        rc = 2;
    if (rc == 0)
        rc = cli_open_package("bench", &o);
    edm_backend_options bo;
    if (rc == 0)
        rc = cli_backend_of("bench", &o, &bo);
    edm_sources *src = rc == 0 ? edm_sources_new() : NULL;
    if (rc == 0 && !src) {
        fprintf(stderr, "edmc: out of memory\n");
        rc = 1;
    }
    edm_program prog = {0};
    if (rc == 0)
        rc = cli_load(&o, src, &prog);
    if (rc == 0)
        rc = do_bench(&o, &prog, &bo, start);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o);
    return rc;
}
