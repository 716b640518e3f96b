/* edmc train | step: training on the CPU backend. */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "compiler/passes/passes.h"
#include "runtime/files.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/train.h"
#include "runtime/train_loop.h"
#include "runtime/weights.h"

/* Options of train and step, parsed here: they share -D and the model with
 * the other commands but have many of their own. */
typedef struct {
    cli_opts base; /* file, defines, threads, seed */
    const char *preset, *data, *outdir, *weights, *batch_file, *output;
    int64_t batch, batch_gpu, duration, status, snapshot, checkpoint;
    long long max_nonfinite; /* train: status intervals with a non-finite loss before stopping */
    double lr, decay, rampup;
    int has_lr, has_decay, has_rampup, has_batch, resume, snapshot_fp32;
    char ema[128];
} train_opts;

/* "64Ki", "8Mi", "10k", "2M", "4096": a count of images. */
static int parse_images(const char *flag, const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double unit = 1;
    if (strcmp(end, "Ki") == 0)
        unit = 1024;
    else if (strcmp(end, "Mi") == 0)
        unit = 1024.0 * 1024;
    else if (strcmp(end, "Gi") == 0)
        unit = 1024.0 * 1024 * 1024;
    else if (strcmp(end, "k") == 0)
        unit = 1e3;
    else if (strcmp(end, "M") == 0)
        unit = 1e6;
    else if (*end)
        unit = -1;
    if (errno || end == v || unit < 0 || !(x >= 0) || x * unit > 9e15) {
        fprintf(stderr, "edmc: %s=%s: expected a number of images like 4096, 64Ki, 8Mi or 10M\n", flag, v);
        return -1;
    }
    *out = (int64_t)(x * unit + 0.5);
    return 0;
}

/* An integer in [lo, hi]: no silent clamping of 99999999999999999999. */
static int parse_int_in(const char *flag, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "edmc: %s=%s: expected an integer from %lld to %lld\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_double(const char *flag, const char *v, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(*out) || *out < 0) {
        fprintf(stderr, "edmc: %s=%s: expected a non-negative number\n", flag, v);
        return -1;
    }
    return 0;
}

static int parse_train(int argc, char **argv, const char *cmd, int is_step, train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->status = 128 << 10;
    o->snapshot = 8 << 20;
    o->checkpoint = 128 << 20;
    o->duration = (int64_t)2048 << 20;
    snprintf(o->ema, sizeof o->ema, "0.050,0.100");
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        const char *v = strchr(a, '=') ? strchr(a, '=') + 1 : NULL;
        size_t len = v ? (size_t)(v - 1 - a) : strlen(a);
        char flag[64]; /* the option without its value, for messages */
        snprintf(flag, sizeof flag, "%.*s", (int)len, a);
#define IS(name) (strlen(name) == len && strncmp(a, name, len) == 0)
        int rc = 0;
        if (a[0] == '-' && a[1] == 'D') {
            const char *def = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!def) {
                fprintf(stderr, "edmc %s: -D needs name=value\n", cmd);
                return -1;
            }
            if (cli_add_define(cmd, &o->base, def) != 0)
                return -1;
            continue;
        }
        if (a[0] != '-') {
            if (o->base.file) {
                fprintf(stderr, "edmc %s: more than one model ('%s' and '%s')\n", cmd, o->base.file, a);
                return -1;
            }
            o->base.file = a;
            continue;
        }
        if (IS("--resume") && !is_step) {
            o->resume = 1;
            if (v)
                o->outdir = v;
            continue;
        }
        if (IS("--snapshot-fp32") && !is_step && !v) {
            o->snapshot_fp32 = 1;
            continue;
        }
        if (IS("--allow-nonfinite") && is_step && !v) {
            o->base.allow_nonfinite = 1;
            continue;
        }
        int cuda = cli_cuda_flag(cmd, a, v, &o->base.matmul, &o->base.conv, &o->base.no_graph, &o->base.fuse);
        if (cuda < 0)
            return -1;
        if (cuda > 0)
            continue;
        if (!v) {
            fprintf(stderr, "edmc %s: %s needs a value (%s=...)\n", cmd, a, a);
            return -1;
        }
        long long n;
        if (IS("--model"))
            o->base.file = v;
        else if (IS("--weights"))
            o->weights = v;
        else if (IS("--threads"))
            rc = parse_int_in(flag, v, 1, 1024, &n) != 0 ? -1 : (o->base.threads = (int)n, 0);
        else if (IS("--seed"))
            rc = parse_int_in(flag, v, 0, (long long)1 << 62, &n) != 0 ? -1 : (o->base.seed = (uint64_t)n, 0);
        else if (IS("--device"))
            o->base.device = v;
        else if (IS("--precision"))
            o->base.precision = v;
        else if (IS("--lr"))
            rc = parse_double(flag, v, &o->lr), o->has_lr = 1;
        else if (is_step && IS("--batch"))
            o->batch_file = v;
        else if (is_step && (IS("--output") || IS("-o")))
            o->output = v;
        else if (!is_step && IS("--preset"))
            o->preset = v;
        else if (!is_step && IS("--data"))
            o->data = v;
        else if (!is_step && IS("--outdir"))
            o->outdir = v;
        else if (!is_step && IS("--batch"))
            rc = parse_images(flag, v, &o->batch), o->has_batch = 1;
        else if (!is_step && IS("--batch-gpu"))
            rc = parse_images(flag, v, &o->batch_gpu);
        else if (!is_step && IS("--duration"))
            rc = parse_images(flag, v, &o->duration);
        else if (!is_step && IS("--status"))
            rc = parse_images(flag, v, &o->status);
        else if (!is_step && IS("--snapshot"))
            rc = parse_images(flag, v, &o->snapshot);
        else if (!is_step && IS("--checkpoint"))
            rc = parse_images(flag, v, &o->checkpoint);
        else if (!is_step && IS("--decay"))
            rc = parse_double(flag, v, &o->decay), o->has_decay = 1;
        else if (!is_step && IS("--rampup"))
            rc = parse_double(flag, v, &o->rampup), o->has_rampup = 1;
        else if (!is_step && IS("--max-nonfinite"))
            rc = parse_int_in(flag, v, 1, 1000000, &o->max_nonfinite);
        else if (!is_step && IS("--ema"))
            snprintf(o->ema, sizeof o->ema, "%s", v);
        else {
            fprintf(stderr, "edmc %s: unknown option '%.*s' (see docs/cli.md)\n", cmd, (int)len, a);
            return -1;
        }
        if (rc != 0) /* the parser said why */
            return -1;
#undef IS
    }
    return 0;
}

/* models/<preset>.edm, looked up beside the working directory and beside the binary. */
static int preset_path(const char *preset, char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *dirs[3] = {getenv("EDMC_MODELS"), "models", NULL};
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            snprintf(slash, sizeof exe - (size_t)(slash - exe), "/models");
            dirs[2] = exe;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (!dirs[i])
            continue;
        snprintf(out, size, "%s/%s.edm", dirs[i], preset);
        if (access(out, R_OK) == 0)
            return 0;
    }
    fprintf(stderr, "edmc train: --preset=%s: no models/%s.edm (presets: edm2-img512-xs ... edm2-img64-xl, edm2-tiny)\n",
            preset, preset);
    return -1;
}

/* Compiles the training program: the model with training=true, differentiated. */
static int load_training(train_opts *o, edm_sources *src, edm_program *prog)
{
    int has = 0;
    for (int i = 0; i < o->base.ndefines; i++)
        has |= strcmp(o->base.defines[i].name, "training") == 0;
    if (!has && o->base.ndefines < CLI_MAX_DEFINES) {
        char *name = strdup("training");
        if (!name)
            return 1;
        o->base.defines[o->base.ndefines].name = name;
        o->base.defines[o->base.ndefines++].value = "true";
    }
    int rc = cli_load(&o->base, src, prog);
    if (rc != 0)
        return rc;
    edm_status st;
    edm_status_init(&st);
    edm_pipeline_options po = {.training = 1};
    if (edm_pipeline_run(prog->graph, &po, "train", NULL, &st) != 0) {
        cli_report(src, &st);
        return cli_exit_code(&st);
    }
    return 0;
}

/* A .edm parameter as a number (presets carry the training hyperparameters). */
static double param_number(const edm_program *prog, const char *name, double def)
{
    const char *v = edm_program_param(prog, name);
    return v ? strtod(v, NULL) : def;
}

/* The evaluation configuration for snapshots: every parameter, training off. */
static char *config_json(const edm_program *prog)
{
    json_object *cfg = json_object_new_object();
    if (!cfg)
        return NULL;
    for (int i = 0; i < prog->nparams; i++) {
        int training = strcmp(prog->params[i].name, "training") == 0;
        json_object_object_add(cfg, prog->params[i].name,
                               json_object_new_string(training ? "false" : prog->params[i].value));
    }
    char *s = strdup(json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN));
    json_object_put(cfg);
    return s;
}

/* Ctrl-C: the one piece of global state — a signal handler can only reach
 * the loop through a flag it polls. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int parse_ema(const char *list, edm_train_opts *t)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    t->nstd = 0;
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        char *end;
        double v = strtod(p, &end);
        if (*end || !(v > 0) || t->nstd == EDM_TRAIN_MAX_EMA) {
            fprintf(stderr, "edmc train: --ema=%s: expected up to %d σ_rel values like 0.050,0.100\n", list,
                    EDM_TRAIN_MAX_EMA);
            return -1;
        }
        t->std[t->nstd++] = v;
    }
    return t->nstd > 0 ? 0 : -1;
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    char preset[4096];
    if (parse_train(argc, argv, "train", 0, &o) != 0) {
        cli_opts_free(&o.base);
        return 2;
    }
    if (o.preset && !o.base.file) {
        if (preset_path(o.preset, preset, sizeof preset) != 0) {
            cli_opts_free(&o.base);
            return 2;
        }
        o.base.file = preset;
    }
    if (!o.base.file || !o.outdir || (!o.data && !o.resume)) {
        fprintf(stderr, "edmc train: needs --model=FILE.edm (or --preset=NAME), --data=DATASET and --outdir=DIR\n");
        cli_opts_free(&o.base);
        return 2;
    }
    edm_sources *src = edm_sources_new();
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    int rc = src ? load_training(&o, src, &prog) : 1;
    char *config = rc == 0 ? config_json(&prog) : NULL;
    /* snapshots name the model by absolute path: generate and phema may run elsewhere */
    char *model_abs = o.base.file ? edm_absolute_path(o.base.file) : NULL;
    edm_st_file *init = NULL;
    edm_status st;
    edm_status_init(&st);
    if (rc == 0 && o.weights) {
        init = edm_weights_open(o.weights, &st);
        if (!init) {
            cli_report(NULL, &st);
            rc = 1;
        }
    }
    edm_train_opts t = {
        .outdir = o.outdir, .data = o.data ? o.data : "builtin:shapes",
        .batch = o.has_batch ? o.batch : (int64_t)param_number(&prog, "batch_size", 2048),
        .batch_gpu = o.batch_gpu, .duration = o.duration, .status_every = o.status,
        .snapshot_every = o.snapshot, .checkpoint_every = o.checkpoint,
        .ref_lr = o.has_lr ? o.lr : param_number(&prog, "ref_lr", 0.01),
        .ref_batches = o.has_decay ? o.decay : param_number(&prog, "ref_batches", 70000),
        .rampup_mimg = o.has_rampup ? o.rampup : param_number(&prog, "rampup_Mimg", 10),
        .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .seed = o.base.seed, .snapshot_fp32 = o.snapshot_fp32,
        .threads = o.base.threads, .resume = o.resume, .model = model_abs ? model_abs : o.base.file,
        .config = config, .max_nonfinite = (int)o.max_nonfinite};
    if (rc == 0)
        rc = cli_backend_of("train", &o.base, &t.backend);
    if (rc == 0 && parse_ema(o.ema, &t) != 0)
        rc = 2;
    if (rc == 0 && t.snapshot_every > 0 && t.snapshot_every < 1000) {
        fprintf(stderr, "edmc train: --snapshot=%lld: snapshots are named by kimg, so they must be at least 1000 "
                        "images apart\n", (long long)t.snapshot_every);
        rc = 2;
    }
    if (rc == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        /* a closed terminal (SIGHUP) stops the run like Ctrl-C, with a checkpoint */
        if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
            sigaction(SIGHUP, &sa, NULL) != 0) {
            fprintf(stderr, "edmc train: cannot install the signal handlers\n");
            rc = 1;
        }
    }
    if (rc == 0) {
        if (edm_train(prog.graph, &t, init, &stop_requested, stdout, &st) != 0) {
            cli_report(NULL, &st);
            rc = cli_exit_code(&st);
        }
    }
    free(config);
    free(model_abs);
    edm_st_close(init);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o.base);
    return rc;
}

/* ------------------------------------------------------------------ step */

static int write_step(edm_trainer *t, const char *path, double loss, float **normalized, edm_status *st)
{
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int64_t one = 1;
    float l = (float)loss;
    int rc = edm_st_writer_add_f32(w, "loss", EDM_F32, 1, &one, &l, st);
    char name[600];
    for (int i = 0; i < edm_trainer_nparams(t) && rc == 0; i++) {
        edm_train_param *p = edm_trainer_param(t, i);
        const float *parts[3] = {normalized[i], p->grad, p->value};
        const char *prefix[3] = {"normalized.", "grad.", "step1."};
        for (int k = 0; k < 3 && rc == 0; k++) {
            snprintf(name, sizeof name, "%s%s", prefix[k], p->name);
            rc = edm_st_writer_add_f32(w, name, EDM_F32, p->shape.rank, p->shape.dim, parts[k], st);
        }
    }
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    return rc;
}

static int run_step(const train_opts *o, const edm_program *prog, const edm_backend_options *bo, edm_status *st)
{
    /* writing the step over its own weights would lose them */
    struct stat sw, so;
    if (stat(o->weights, &sw) == 0 && stat(o->output, &so) == 0 && sw.st_dev == so.st_dev && sw.st_ino == so.st_ino)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--output=%s is the --weights file: write the step elsewhere",
                        o->output);
    edm_st_file *w = edm_st_open(o->weights, st);
    edm_st_file *in = w ? edm_st_open(o->batch_file, st) : NULL;
    if (!in) {
        edm_st_close(w);
        return -1;
    }
    const edm_st_entry *images = edm_st_find(in, "images");
    int rc = images && images->rank == 4
                 ? 0
                 : edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: needs 'images' [N, C, H, W]", o->batch_file);
    edm_trainer *t = NULL;
    float **normalized = NULL;
    if (rc == 0) {
        edm_backend_options opt = *bo;
        opt.cpu.seed = o->base.seed;
        t = edm_trainer_new(prog->graph, images->dim[0], &opt, st);
        rc = t ? edm_trainer_load(t, w, st) : -1;
        if (rc == 0 && !o->base.allow_nonfinite)
            rc = edm_weights_check_finite(prog->graph, w, st);
    }
    const char *names[] = {"images", "class_labels", "rnd_normal", "unit_noise"};
    for (int i = 0; i < 4 && rc == 0; i++) {
        const edm_st_entry *e = edm_st_find(in, names[i]);
        int node = edm_backend_find(edm_trainer_backend(t), EDM_OP_INPUT, names[i]);
        if (node < 0)
            continue; /* class_labels of an unconditional model */
        if (!e) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '%s'", o->batch_file, names[i]);
            break;
        }
        int64_t n = edm_backend_numel(edm_trainer_backend(t), node);
        float *data = malloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1));
        rc = !data ? edm_nomem(st)
             : e->numel != n
                 ? edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' has %lld elements, the model wants %lld",
                            o->batch_file, names[i], (long long)e->numel, (long long)n)
                 : edm_st_read_f32(in, e, data, n, st);
        /* a NaN or infinity in the batch only ever gives a NaN loss */
        if (rc == 0)
            rc = edm_check_finite(data, n, o->batch_file, names[i], st);
        if (rc == 0)
            rc = edm_backend_set_f32(edm_trainer_backend(t), names[i], data, n, st);
        free(data);
    }
    double loss = 0;
    if (rc == 0)
        rc = edm_trainer_force_wn(t, st) == 0 ? edm_trainer_pull(t, 0, st) : -1;
    if (rc == 0) {
        normalized = calloc((size_t)edm_trainer_nparams(t), sizeof *normalized);
        rc = normalized ? 0 : edm_nomem(st);
        for (int i = 0; i < edm_trainer_nparams(t) && rc == 0; i++) {
            edm_train_param *p = edm_trainer_param(t, i);
            normalized[i] = malloc(sizeof(float) * (size_t)(p->numel ? p->numel : 1));
            if (!normalized[i])
                rc = edm_nomem(st);
            else
                memcpy(normalized[i], p->value, sizeof(float) * (size_t)p->numel);
        }
    }
    if (rc == 0 && edm_trainer_zero_grad(t, st) == 0 && edm_trainer_accumulate(t, images->dim[0], &loss, st) == 0)
        rc = edm_trainer_pull_grad(t, st);
    else if (rc == 0)
        rc = -1;
    /* finite batch and weights, yet a non-finite loss or gradient: the step
     * overflowed (a huge input, say); say where instead of writing NaNs */
    if (rc == 0 && !o->base.allow_nonfinite) {
        float l = (float)loss;
        rc = edm_check_finite(&l, 1, "step", "loss", st);
        for (int i = 0; i < edm_trainer_nparams(t) && rc == 0; i++) {
            edm_train_param *p = edm_trainer_param(t, i);
            char name[600];
            snprintf(name, sizeof name, "grad.%s", p->name);
            rc = edm_check_finite(p->grad, p->numel, "step", name, st);
        }
        if (rc != 0)
            edm_note_add(st, EDM_NO_LOC, "the batch and weights are finite: the step overflowed (--allow-nonfinite "
                                         "writes the result anyway)");
    }
    double lr = o->lr; /* cmd_step defaults it to the model's ref_lr */
    if (rc == 0) {
        edm_adam adam = {0.9, 0.99, 1e-8};
        int64_t nonfinite = 0;
        rc = edm_trainer_adam(t, &adam, lr, 1, &nonfinite, st);
    }
    if (rc == 0)
        rc = edm_trainer_pull(t, 0, st);
    if (rc == 0) {
        rc = write_step(t, o->output, loss, normalized, st);
        printf("loss %.9g (lr %g): %s\n", loss, lr, o->output);
    }
    for (int i = 0; normalized && i < edm_trainer_nparams(t); i++)
        free(normalized[i]);
    free(normalized);
    edm_trainer_free(t);
    edm_st_close(in);
    edm_st_close(w);
    return rc;
}

int cmd_step(int argc, char **argv)
{
    train_opts o;
    if (parse_train(argc, argv, "step", 1, &o) != 0) {
        cli_opts_free(&o.base);
        return 2;
    }
    if (!o.base.file || !o.weights || !o.batch_file || !o.output) {
        fprintf(stderr, "edmc step: needs FILE.edm --weights=W.safetensors --batch=IN.safetensors "
                        "--output=OUT.safetensors [--lr=0.01]\n");
        cli_opts_free(&o.base);
        return 2;
    }
    edm_sources *src = edm_sources_new();
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    int rc = src ? load_training(&o, src, &prog) : 1;
    if (rc == 0) {
        if (!o.has_lr) {
            o.lr = param_number(&prog, "ref_lr", 0.01);
            o.has_lr = 1;
        }
        edm_status st;
        edm_status_init(&st);
        edm_backend_options bo;
        rc = cli_backend_of("step", &o.base, &bo);
        if (rc == 0 && run_step(&o, &prog, &bo, &st) != 0) {
            cli_report(NULL, &st);
            rc = cli_exit_code(&st);
        }
    }
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o.base);
    return rc;
}
