/* Option parsing and program loading shared by every edmc command. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "codegen/cuda_nvrtc.h"
#include "compiler/ir_io.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"
#include "runtime/backend_cuda.h"
#include "runtime/files.h"
#include "runtime/package.h"

static int store_define(void *opts, const char *cmd, const char *name, const char *v)
{
    (void)name;
    return cli_add_define(cmd, opts, v);
}

static int store_cuda(void *opts, const char *cmd, const char *name, const char *v)
{
    cli_opts *o = opts;
    return cli_cuda_flag(cmd, name, v, &o->matmul, &o->conv, &o->no_graph, &o->fuse) == 1 ? 0 : -1;
}

#define AT(field) .at = offsetof(cli_opts, field)
#define STR(name, field, arg_, def_, help_) \
    {.names = (name), .kind = CLI_STRING, AT(field), .arg = (arg_), .def = (def_), .help = (help_)}
#define INT(name, field, lo_, hi_, arg_, def_, help_) \
    {.names = (name), .kind = CLI_INT, AT(field), .lo = (lo_), .hi = (hi_), .arg = (arg_), .def = (def_), .help = (help_)}
#define SMALL(name, field, lo_, hi_, arg_, def_, help_) \
    {.names = (name), .kind = CLI_SMALL, AT(field), .lo = (lo_), .hi = (hi_), .arg = (arg_), .def = (def_), \
     .help = (help_)}
#define FLAG(name, field, help_) {.names = (name), .kind = CLI_FLAG, AT(field), .help = (help_)}
#define CALL(name, fn, arg_, def_, help_) \
    {.names = (name), .kind = CLI_CALL, .arg = (arg_), .def = (def_), .help = (help_), .call = (fn)}

/* The options of the commands that take a model file, each with the bit a
 * command's `allowed` selects it by. */
static const struct {
    unsigned bit;
    cli_option o;
} common_options[] = {
    {OPT_STAGE, STR("--stage", stage, "ir|fused|train", "ir", "what to print")},
    {OPT_FORMAT, STR("--format", format, "text|xml|dot", "text", "how to print it")},
    {OPT_OUTPUT, STR("--output -o", output, "FILE", NULL, "write to FILE")},
    {OPT_JSON, FLAG("--json", json, "print one JSON object")},
    {OPT_PARAMS, FLAG("--params", params, "print the parameters and buffers only")},
    {OPT_SEED, INT("--seed", seed, 0, 4611686018427387904.0, "S", "0", "the random seed")},
    {OPT_WEIGHTS, STR("--weights", weights, "W.safetensors", NULL, "the weights")},
    {OPT_INPUT, STR("--input", input, "IN.safetensors", NULL, "the inputs")},
    {OPT_BATCH, INT("--batch", batch, 1, 1 << 20, "B", "8", "images per batch")},
    {OPT_MODE, STR("--mode", mode, "forward|train|sample", "forward", "what to run")},
    {OPT_ITERS, SMALL("--iters", iters, 1, 1000000, "K", "as many as fit in a few seconds", "timed iterations")},
    {OPT_INDIR, STR("--indir", indir, "DIR", NULL, "the run folder with the snapshots")},
    {OPT_OUTDIR, STR("--outdir", outdir, "DIR", NULL, "where the results go")},
    {OPT_OUTSTD, STR("--outstd", outstd, "S1,S2,...", NULL,
                     "sigma_rel of the EMAs to reconstruct (also 0.010,0.015,...,0.250)")},
    {OPT_OUTKIMG, INT("--outkimg", outkimg, 0, 1000000000, "K", "the latest snapshot", "the time to reconstruct at")},
    {OPT_SWEEP, FLAG("--sweep", sweep, "a range of sigma_rel (--outstd=LO:HI:STEP)")},
    {OPT_EVAL, STR("--eval", eval, "loss", NULL, "evaluate each reconstruction")},
    {OPT_NONFINITE, FLAG("--allow-nonfinite", allow_nonfinite, "write NaN and infinite results instead of failing")},
    {OPT_PACKAGE, STR("--package", package, "X.edmpkg", NULL, "run an ahead-of-time package (edmc compile), not a model file")},
    {OPT_DEVICE, STR("--device", device, "cpu|cuda", "cpu", "the backend")},
    {OPT_PRECISION, STR("--precision", precision, "P", "f32 on cpu, fp16 on cuda", "cpu: f32|f64; cuda: fp16|bf16|fp32")},
    {OPT_THREADS, SMALL("--threads", threads, 1, 1024, "N", "every core", "CPU threads")},
    {OPT_CUDA | OPT_FUSE, CALL("--fuse", store_cuda, "all|none|LIST", "all on cpu", "the fusion rules")},
    {OPT_CUDA, CALL("--matmul", store_cuda, "cublaslt|generated", "cublaslt", "cuda: the matrix products")},
    {OPT_CUDA, CALL("--conv", store_cuda, "im2col|implicit", "im2col", "cuda: the convolutions")},
    {OPT_CUDA, FLAG("--no-graph", no_graph, "cuda: launch kernel by kernel")},
    {OPT_PROFILE, FLAG("--profile", profile, "cuda: time each kernel of one more run, print the slowest (fused plans)")},
    {OPT_TUNE, FLAG("--tune", tune,
                    "cuda: first time every tensor-core contraction with each tile, keep the fastest for "
                    "every later compile on this GPU architecture (fused plans, fp16/bf16)")},
    {OPT_CUDA, FLAG("--no-tensor-cores", no_tensor_cores,
                    "cuda: generated contractions on CUDA cores, not tensor cores (an ablation)")},
    {OPT_DEFINE, CALL("-D", store_define, "name=value", NULL, "set a model parameter (any number of times)")},
};

int cli_select_options(unsigned allowed, cli_option *out, int max)
{
    int n = 0;
    for (size_t k = 0; k < sizeof common_options / sizeof common_options[0] && n < max; k++)
        if (allowed & common_options[k].bit)
            out[n++] = common_options[k].o;
    return n;
}

int cli_define_append(const char *cmd, const char *flag, edm_define *defs, int *n, const char *def)
{
    const char *eq = strchr(def, '=');
    if (!eq || eq == def) {
        fprintf(stderr, "edmc %s: %s '%s': expected name=value\n", cmd, flag, def);
        return -1;
    }
    if (*n == CLI_MAX_DEFINES) {
        fprintf(stderr, "edmc %s: more than %d %s options\n", cmd, CLI_MAX_DEFINES, flag);
        return -1;
    }
    char *name = strndup(def, (size_t)(eq - def));
    if (!name) {
        fprintf(stderr, "edmc: out of memory\n");
        return -1;
    }
    defs[*n].name = name;
    defs[(*n)++].value = eq + 1;
    return 0;
}

int cli_define_set(const char *cmd, cli_opts *o, const char *name, const char *value)
{
    if (o->ndefines == CLI_MAX_DEFINES) {
        fprintf(stderr, "edmc %s: more than %d model parameters\n", cmd, CLI_MAX_DEFINES);
        return -1;
    }
    char *copy = strdup(name);
    if (!copy) {
        fprintf(stderr, "edmc: out of memory\n");
        return -1;
    }
    o->defines[o->ndefines].name = copy;
    o->defines[o->ndefines++].value = value;
    return 0;
}

int cli_has_define(const cli_opts *o, const char *name)
{
    for (int i = 0; i < o->ndefines; i++)
        if (strcmp(o->defines[i].name, name) == 0)
            return 1;
    return 0;
}

int cli_add_define(const char *cmd, cli_opts *o, const char *def)
{
    return cli_define_append(cmd, "-D", o->defines, &o->ndefines, def);
}

void cli_opts_defaults(cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "ir";
    o->format = "text";
    o->mode = "forward";
    o->batch = 8;
    o->outkimg = -1;
}

int cli_parse_own(int argc, char **argv, const char *cmd, const cli_option *own, int nown, unsigned shared,
                  void *opts, const char **file)
{
    cli_option table[64];
    const cli_usage *u = cli_usage_of(cmd);
    cli_command c = {.name = cmd, .synopsis = u ? u->synopsis : "", .summary = u ? u->summary : "",
                     .notes = u ? u->notes : NULL, .file = file ? "FILE.edm" : NULL,
                     .tables = {own ? own : table, table},
                     .ntables = {own ? nown : 0, cli_select_options(shared, table, 64)}};
    return cli_parse_command(&c, argc, argv, opts, file);
}

int cli_parse(int argc, char **argv, const char *cmd, unsigned allowed, cli_opts *o)
{
    cli_opts_defaults(o);
    int rc = cli_parse_own(argc, argv, cmd, NULL, 0, allowed | OPT_DEFINE, o, &o->file);
    if (rc != 0)
        return rc;
    if (!o->file && !(allowed & OPT_NOFILE) && !o->package) {
        fprintf(stderr, "edmc %s: no model file%s (see edmc %s --help)\n", cmd,
                allowed & OPT_PACKAGE ? " or --package" : "", cmd);
        return -1;
    }
    return 0;
}

void cli_opts_free(cli_opts *o)
{
    edm_package_close(o->pkg);
    o->pkg = NULL;
    for (int i = 0; i < o->ndefines; i++)
        free((char *)o->defines[i].name);
    o->ndefines = 0;
}

int cli_cuda_flag(const char *cmd, const char *a, const char *v, const char **matmul, const char **conv,
                  int *no_graph, const char **fuse)
{
    size_t len = strcspn(a, "=");
    if (len == 10 && strncmp(a, "--no-graph", len) == 0) {
        *no_graph = 1;
        return 1;
    }
    if (len == 6 && strncmp(a, "--fuse", len) == 0) {
        edm_status st;
        edm_status_init(&st);
        unsigned f;
        if (!v) {
            fprintf(stderr, "edmc %s: --fuse needs a value\n", cmd);
            return -1;
        }
        if (edm_fuse_parse(v, &f, &st) != 0) {
            fprintf(stderr, "edmc %s: %s\n", cmd, st.msg);
            return -1;
        }
        *fuse = v;
        return 1;
    }
    int is_matmul = len == 8 && strncmp(a, "--matmul", len) == 0, is_conv = len == 6 && strncmp(a, "--conv", len) == 0;
    if (!is_matmul && !is_conv)
        return 0;
    if (!v) {
        fprintf(stderr, "edmc %s: %.*s needs a value\n", cmd, (int)len, a);
        return -1;
    }
    if (is_matmul && strcmp(v, "cublaslt") != 0 && strcmp(v, "generated") != 0) {
        fprintf(stderr, "edmc %s: --matmul=%s: expected cublaslt or generated\n", cmd, v);
        return -1;
    }
    if (is_conv && strcmp(v, "im2col") != 0 && strcmp(v, "implicit") != 0) {
        fprintf(stderr, "edmc %s: --conv=%s: expected im2col (im2col + cuBLASLt) or implicit (generated implicit GEMM)\n",
                cmd, v);
        return -1;
    }
    *(is_matmul ? matmul : conv) = v;
    return 1;
}

int cli_backend(const char *cmd, const char *device, const char *precision, const char *matmul, const char *conv,
                int no_graph, const char *fuse, int threads, edm_backend_options *out)
{
    edm_device dev;
    if (edm_device_from_name(device ? device : "cpu", &dev) != 0) {
        fprintf(stderr, "edmc %s: --device=%s: expected cpu or cuda\n", cmd, device);
        return 2;
    }
    *out = edm_backend_defaults(dev);
    /* edmc compiles kernels itself (a package's runs get its cubins instead) */
    out->compile_kernels = edm_nvrtc_available() ? edm_nvrtc_compile_kernels : NULL;
    out->cpu.threads = threads;
    if (fuse) {
        edm_status st;
        edm_status_init(&st);
        if (edm_fuse_parse(fuse, &out->cpu.fuse, &st) != 0) {
            fprintf(stderr, "edmc %s: %s\n", cmd, st.msg);
            return 2;
        }
    }
    if (dev == EDM_DEVICE_CUDA && out->cpu.fuse != EDM_FUSE_NONE && (matmul || conv)) {
        /* a fused plan's contractions are generated kernels with their prologues and epilogues inside */
        fprintf(stderr, "edmc %s: --matmul and --conv choose the contractions of --fuse=none; with --fuse=%s "
                        "they are generated kernels\n", cmd, fuse);
        return 2;
    }
    if (dev == EDM_DEVICE_CPU) {
        if (matmul || conv || no_graph) {
            fprintf(stderr, "edmc %s: --matmul, --conv and --no-graph apply to --device=cuda\n", cmd);
            return 2;
        }
        if (!precision || strcmp(precision, "f32") == 0 || strcmp(precision, "fp32") == 0) {
            out->cpu.compute = EDM_F32;
        } else if (strcmp(precision, "f64") == 0 || strcmp(precision, "fp64") == 0) {
            out->cpu.compute = EDM_F64;
        } else {
            fprintf(stderr, "edmc %s: --precision=%s: the CPU backend computes in f32 or f64\n", cmd, precision);
            return 2;
        }
        return 0;
    }
    if (!precision || strcmp(precision, "fp16") == 0 || strcmp(precision, "f16") == 0) {
        out->storage = EDM_F16;
    } else if (strcmp(precision, "bf16") == 0) {
        out->storage = EDM_BF16;
    } else if (strcmp(precision, "fp32") == 0 || strcmp(precision, "f32") == 0) {
        out->storage = EDM_F32;
    } else {
        fprintf(stderr, "edmc %s: --precision=%s: CUDA stores activations in fp16, bf16 or fp32\n", cmd, precision);
        return 2;
    }
    out->matmul = matmul && strcmp(matmul, "generated") == 0 ? EDM_MATMUL_GENERATED : EDM_MATMUL_CUBLASLT;
    out->conv = conv && strcmp(conv, "implicit") == 0 ? EDM_CONV_IMPLICIT : EDM_CONV_IM2COL;
    out->no_graph = no_graph;
    return 0;
}

/* The driver is opened at run time: say plainly what is missing. */
static int probe_cuda(const char *cmd)
{
    edm_status st;
    edm_status_init(&st);
    char desc[512];
    if (edm_cuda_probe(desc, sizeof desc, &st) != 0) {
        fprintf(stderr, "edmc %s: --device=cuda: %s\n", cmd, st.msg);
        return 1;
    }
    return 0;
}

static edm_dtype precision_of(const edm_backend_options *b)
{
    return b->device == EDM_DEVICE_CPU ? b->cpu.compute : b->storage;
}

/* A package decides the device, precision and fusion rules: an option that
 * asks for others is a mistake worth naming. */
static int package_backend(const char *cmd, const cli_opts *o, edm_backend_options *out)
{
    const edm_package *p = o->pkg;
    if (o->matmul || o->conv || o->no_tensor_cores) {
        fprintf(stderr, "edmc %s: --matmul, --conv and --no-tensor-cores do not apply to a package (its kernels are "
                        "made)\n", cmd);
        return 2;
    }
    edm_backend_options want;
    int rc = cli_backend(cmd, o->device ? o->device : edm_package_device(p), o->precision, NULL, NULL, 0, o->fuse,
                         o->threads, &want);
    if (rc != 0)
        return rc;
    *out = want;
    edm_status st;
    edm_status_init(&st);
    if (edm_package_backend(p, out, &st) != 0) {
        cli_report(NULL, &st);
        return 1;
    }
    const char *what = o->device && want.device != out->device                         ? "--device"
                       : o->precision && precision_of(&want) != precision_of(out) ? "--precision"
                       : o->fuse && want.cpu.fuse != out->cpu.fuse                 ? "--fuse"
                                                                                   : NULL;
    if (what) {
        fprintf(stderr, "edmc %s: %s: the package %s was compiled for --device=%s --precision=%s --fuse=%s "
                        "(edmc compile it again for others)\n",
                cmd, what, edm_package_path(p), edm_package_device(p), edm_package_precision(p), edm_package_fuse(p));
        return 2;
    }
    out->no_graph = o->no_graph;
    return out->device == EDM_DEVICE_CUDA ? probe_cuda(cmd) : 0;
}

int cli_backend_of(const char *cmd, const cli_opts *o, edm_backend_options *out)
{
    if (o->pkg)
        return package_backend(cmd, o, out);
    int rc = cli_backend(cmd, o->device, o->precision, o->matmul, o->conv, o->no_graph, o->fuse, o->threads, out);
    if (rc == 0 && o->no_tensor_cores && out->device != EDM_DEVICE_CUDA) {
        fprintf(stderr, "edmc %s: --no-tensor-cores applies to --device=cuda\n", cmd);
        return 2;
    }
    out->no_tensor_cores = o->no_tensor_cores;
    return rc == 0 && out->device == EDM_DEVICE_CUDA ? probe_cuda(cmd) : rc;
}

int cli_open_package(const char *cmd, cli_opts *o)
{
    if (!o->package || o->pkg)
        return 0;
    if (o->file) {
        fprintf(stderr, "edmc %s: give a model file or --package, not both\n", cmd);
        return 2;
    }
    if (o->ndefines) {
        fprintf(stderr, "edmc %s: -D does not apply to a package (its model was compiled with its defines)\n", cmd);
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    o->pkg = edm_package_open(o->package, &st);
    if (!o->pkg) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    /* a training package holds the differentiated training program only */
    int want_train = strcmp(cmd, "train") == 0 || (o->mode && strcmp(o->mode, "train") == 0);
    const char *mode = edm_package_mode(o->pkg);
    if (want_train && strcmp(mode, "train") != 0) {
        fprintf(stderr, "edmc %s: %s holds a %s run: training needs a package compiled with --mode=train\n", cmd,
                o->package, mode);
        return 2;
    }
    if (!want_train && strcmp(mode, "train") == 0) {
        fprintf(stderr, "edmc %s: %s holds a training run (edmc train, bench --mode=train): compile the model with "
                        "--mode=forward or --mode=sample for this\n", cmd, o->package);
        return 2;
    }
    return 0;
}

int cli_load_training(const char *cmd, cli_opts *o, edm_sources *src, edm_program *prog)
{
    if (!cli_has_define(o, "training") && cli_define_set(cmd, o, "training", "true") != 0)
        return 2;
    int rc = cli_load(o, src, prog);
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

int cli_preset_path(const char *cmd, const char *preset, char *out, size_t size)
{
    edm_model_dirs md;
    edm_model_dirs_get(&md);
    for (int i = 0; i < md.n; i++) {
        snprintf(out, size, "%s/%s.edm", md.dir[i], preset);
        if (strchr(preset, '/') == NULL && access(out, R_OK) == 0)
            return 0;
    }
    fprintf(stderr, "edmc %s: --preset=%s: no models/%s.edm (presets: edm2-img512-xxs, edm2-img512-xs ... "
                    "edm2-img512-xxl, edm2-img64-xs ... edm2-img64-xl, edm2-tiny)\n", cmd, preset, preset);
    return -1;
}

int cli_exit_code(const edm_status *st) { return st->code == EDM_ERR_USAGE ? 2 : 1; }

void cli_report(const edm_sources *src, const edm_status *st) { edm_diag_print(src, st, stderr); }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int cli_load(cli_opts *o, edm_sources *src, edm_program *prog)
{
    memset(prog, 0, sizeof *prog);
    edm_status st;
    edm_status_init(&st);
    if (o->package) {
        int rc = cli_open_package("run", o);
        if (rc == 0)
            prog->graph = edm_package_take_graph(o->pkg);
        return rc;
    }
    if (ends_with(o->file, ".xml")) {
        if (o->ndefines) {
            fprintf(stderr, "edmc: -D does not apply to an IR file (%s)\n", o->file);
            return 2;
        }
        prog->graph = edm_ir_read_xml_file(o->file, &st);
        if (!prog->graph || edm_pass_verify(prog->graph, &st) != 0) {
            cli_report(src, &st);
            return cli_exit_code(&st);
        }
        return 0;
    }
    edm_diags *d = malloc(sizeof *d);
    if (!d) {
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    int rc = 0;
    if (edm_compile_file(src, o->file, o->defines, o->ndefines, prog, d) != 0) {
        for (int i = 0; i < d->count; i++)
            cli_report(src, &d->items[i]);
        if (d->count > 1)
            fprintf(stderr, "%d errors\n", d->count);
        rc = d->count > 0 ? cli_exit_code(&d->items[0]) : 1;
    }
    free(d);
    return rc;
}

int cli_run(int argc, char **argv, const char *cmd, unsigned allowed, cli_fn fn)
{
    cli_opts o;
    int parsed = cli_parse(argc, argv, cmd, allowed, &o);
    if (parsed != 0) {
        cli_opts_free(&o);
        return parsed > 0 ? 0 : 2;
    }
    edm_sources *src = edm_sources_new();
    if (!src) {
        fprintf(stderr, "edmc: out of memory\n");
        cli_opts_free(&o);
        return 1;
    }
    edm_program prog = {0};
    int rc = cli_open_package(cmd, &o);
    if (rc == 0)
        rc = cli_load(&o, src, &prog);
    if (rc == 0)
        rc = fn(&o, &prog);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o);
    return rc;
}
