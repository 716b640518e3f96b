/* Option parsing and program loading shared by every edmc command. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "compiler/ir_io.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"
#include "runtime/backend_cuda.h"

typedef struct {
    const char *name; /* "--seed" */
    unsigned bit;
    int has_value;
} opt_spec;

static const opt_spec specs[] = {
    {"--allow-nonfinite", OPT_NONFINITE, 0},
    {"--stage", OPT_STAGE, 1},     {"--format", OPT_FORMAT, 1}, {"--output", OPT_OUTPUT, 1},
    {"--json", OPT_JSON, 0},       {"--params", OPT_PARAMS, 0}, {"--seed", OPT_SEED, 1},
    {"--weights", OPT_WEIGHTS, 1}, {"--input", OPT_INPUT, 1},   {"--threads", OPT_THREADS, 1},
    {"--device", OPT_DEVICE, 1},   {"--batch", OPT_BATCH, 1},   {"--mode", OPT_MODE, 1},
    {"--iters", OPT_ITERS, 1},     {"--precision", OPT_PRECISION, 1},
    {"--indir", OPT_INDIR, 1},     {"--outdir", OPT_OUTDIR, 1}, {"--outstd", OPT_OUTSTD, 1},
    {"--outkimg", OPT_OUTKIMG, 1}, {"--sweep", OPT_SWEEP, 0},   {"--eval", OPT_EVAL, 1},
    {"--matmul", OPT_CUDA, 1},     {"--conv", OPT_CUDA, 1},     {"--no-graph", OPT_CUDA, 0},
    {"--fuse", OPT_CUDA | OPT_FUSE, 1},
};

static int parse_int(const char *cmd, const char *opt, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "edmc %s: %s=%s: expected an integer from %lld to %lld\n", cmd, opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int set_value(const char *cmd, cli_opts *o, unsigned bit, const char *opt, const char *v)
{
    long long x;
    switch (bit) {
    case OPT_STAGE: o->stage = v; return 0;
    case OPT_FORMAT: o->format = v; return 0;
    case OPT_OUTPUT: o->output = v; return 0;
    case OPT_WEIGHTS: o->weights = v; return 0;
    case OPT_INPUT: o->input = v; return 0;
    case OPT_DEVICE: o->device = v; return 0;
    case OPT_MODE: o->mode = v; return 0;
    case OPT_PRECISION: o->precision = v; return 0;
    case OPT_CUDA | OPT_FUSE:
    case OPT_CUDA: return cli_cuda_flag(cmd, opt, v, &o->matmul, &o->conv, &o->no_graph, &o->fuse) == 1 ? 0 : -1;
    case OPT_INDIR: o->indir = v; return 0;
    case OPT_OUTDIR: o->outdir = v; return 0;
    case OPT_OUTSTD: o->outstd = v; return 0;
    case OPT_EVAL: o->eval = v; return 0;
    case OPT_OUTKIMG:
        if (parse_int(cmd, opt, v, 0, 1000000000, &x) != 0)
            return -1;
        o->outkimg = x;
        return 0;
    case OPT_SEED:
        if (parse_int(cmd, opt, v, 0, (long long)1 << 62, &x) != 0)
            return -1;
        o->seed = (uint64_t)x;
        return 0;
    case OPT_THREADS:
        if (parse_int(cmd, opt, v, 1, 1024, &x) != 0)
            return -1;
        o->threads = (int)x;
        return 0;
    case OPT_BATCH:
        if (parse_int(cmd, opt, v, 1, 1 << 20, &x) != 0)
            return -1;
        o->batch = x;
        return 0;
    case OPT_ITERS:
        if (parse_int(cmd, opt, v, 1, 1000000, &x) != 0)
            return -1;
        o->iters = (int)x;
        return 0;
    default:
        return -1;
    }
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

int cli_add_define(const char *cmd, cli_opts *o, const char *def)
{
    return cli_define_append(cmd, "-D", o->defines, &o->ndefines, def);
}

int cli_parse(int argc, char **argv, const char *cmd, unsigned allowed, cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "ir";
    o->format = "text";
    o->device = "cpu";
    o->mode = "forward";
    o->batch = 8;
    o->iters = 0;
    o->outkimg = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-D") == 0 || strncmp(a, "-D", 2) == 0) {
            const char *def = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (!def) {
                fprintf(stderr, "edmc %s: -D needs name=value\n", cmd);
                return -1;
            }
            if (cli_add_define(cmd, o, def) != 0)
                return -1;
            continue;
        }
        if (strcmp(a, "-o") == 0 && (allowed & OPT_OUTPUT)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "edmc %s: -o needs a file name\n", cmd);
                return -1;
            }
            o->output = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1]) {
            const opt_spec *spec = NULL;
            size_t len = strcspn(a, "=");
            for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++)
                if (strlen(specs[k].name) == len && strncmp(specs[k].name, a, len) == 0)
                    spec = &specs[k];
            if (!spec || !(allowed & spec->bit)) {
                fprintf(stderr, "edmc %s: unknown option '%.*s' (see edmc --help)\n", cmd, (int)len, a);
                return -1;
            }
            if (!spec->has_value) {
                if (a[len]) {
                    fprintf(stderr, "edmc %s: %s takes no value\n", cmd, spec->name);
                    return -1;
                }
                if (spec->bit == OPT_JSON)
                    o->json = 1;
                else if (spec->bit == OPT_CUDA)
                    o->no_graph = 1;
                else if (spec->bit == OPT_SWEEP)
                    o->sweep = 1;
                else if (spec->bit == OPT_NONFINITE)
                    o->allow_nonfinite = 1;
                else
                    o->params = 1;
                continue;
            }
            const char *v = a[len] == '=' ? a + len + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "edmc %s: %s needs a value\n", cmd, spec->name);
                return -1;
            }
            if (set_value(cmd, o, spec->bit, spec->name, v) != 0)
                return -1;
            continue;
        }
        if (o->file) {
            fprintf(stderr, "edmc %s: more than one model file ('%s' and '%s')\n", cmd, o->file, a);
            return -1;
        }
        o->file = a;
    }
    if (!o->file && !(allowed & OPT_NOFILE)) {
        fprintf(stderr, "edmc %s: no model file\n", cmd);
        return -1;
    }
    return 0;
}

void cli_opts_free(cli_opts *o)
{
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
    /* the driver is opened at run time: say plainly what is missing */
    edm_status st;
    edm_status_init(&st);
    char desc[512];
    if (edm_cuda_probe(desc, sizeof desc, &st) != 0) {
        fprintf(stderr, "edmc %s: --device=cuda: %s\n", cmd, st.msg);
        return 1;
    }
    return 0;
}

int cli_backend_of(const char *cmd, const cli_opts *o, edm_backend_options *out)
{
    return cli_backend(cmd, o->device, o->precision, o->matmul, o->conv, o->no_graph, o->fuse, o->threads, out);
}

int cli_exit_code(const edm_status *st) { return st->code == EDM_ERR_USAGE ? 2 : 1; }

void cli_report(const edm_sources *src, const edm_status *st) { edm_diag_print(src, st, stderr); }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int cli_load(const cli_opts *o, edm_sources *src, edm_program *prog)
{
    memset(prog, 0, sizeof *prog);
    edm_status st;
    edm_status_init(&st);
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
    if (cli_parse(argc, argv, cmd, allowed, &o) != 0) {
        cli_opts_free(&o);
        return 2;
    }
    edm_sources *src = edm_sources_new();
    if (!src) {
        fprintf(stderr, "edmc: out of memory\n");
        cli_opts_free(&o);
        return 1;
    }
    edm_program prog;
    int rc = cli_load(&o, src, &prog);
    if (rc == 0)
        rc = fn(&o, &prog);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o);
    return rc;
}
