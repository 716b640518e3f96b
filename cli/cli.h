/* The edmc command line: one function per subcommand, sharing one option
 * parser and the program loader.  Each returns the process exit status:
 * 0 ok, 1 an error in the input, 2 a usage error. */
#ifndef EDMC_CLI_H
#define EDMC_CLI_H

#include <stdint.h>

#include <stdio.h>

#include "cli/options.h"
#include "compiler/elaborate.h"
#include "compiler/source.h"
#include "runtime/backend.h"

#define CLI_MAX_DEFINES 64

/* Which options a command takes (a bit each). */
enum {
    OPT_STAGE = 1 << 0,
    OPT_FORMAT = 1 << 1,
    OPT_OUTPUT = 1 << 2, /* -o / --output */
    OPT_JSON = 1 << 3,
    OPT_PARAMS = 1 << 4,
    OPT_SEED = 1 << 5,
    OPT_WEIGHTS = 1 << 6,
    OPT_INPUT = 1 << 7,
    OPT_THREADS = 1 << 8,
    OPT_DEVICE = 1 << 9,
    OPT_BATCH = 1 << 10,
    OPT_MODE = 1 << 11,
    OPT_ITERS = 1 << 12,
    OPT_PRECISION = 1 << 13,
    OPT_CUDA = 1 << 14, /* --fuse, and --matmul, --conv, --no-graph (the CUDA backend's ablations) */
    OPT_FUSE = 1 << 15, /* --fuse alone (info, dump) */
    OPT_PACKAGE = 1 << 16, /* --package: an ahead-of-time package instead of the model file */
    OPT_PROFILE = 1 << 17, /* bench --profile */
    OPT_TUNE = 1 << 18,    /* bench --tune */
    OPT_DEFINE = 1 << 22, /* -D (cli_parse adds it for every command) */
    /* phema (high bits, clear of the others) */
    OPT_NONFINITE = 1 << 23, /* --allow-nonfinite */
    OPT_INDIR = 1 << 24,
    OPT_OUTDIR = 1 << 25,
    OPT_OUTSTD = 1 << 26,
    OPT_OUTKIMG = 1 << 27,
    OPT_SWEEP = 1 << 28,
    OPT_EVAL = 1 << 29,
    OPT_NOFILE = 1 << 30, /* not an option: the model file may be left out */
};

typedef struct {
    const char *file;
    edm_define defines[CLI_MAX_DEFINES];
    int ndefines;
    const char *stage;     /* dump: ir */
    const char *format;    /* dump: text, xml, dot */
    const char *output;    /* -o, --output */
    int json, params;      /* info */
    uint64_t seed;         /* init */
    const char *weights;   /* forward, bench */
    const char *input;     /* forward */
    int threads;           /* 0: default */
    const char *device;    /* cpu, cuda */
    int64_t batch;         /* bench */
    const char *mode;      /* bench: forward */
    int iters;             /* bench */
    const char *precision; /* NULL: the device's default (cpu f32, cuda fp16) */
    const char *matmul;    /* cuda: cublaslt, generated */
    const char *conv;      /* cuda: im2col, implicit */
    int no_graph;          /* cuda: launch node by node */
    int no_tensor_cores;   /* cuda: generated contractions on CUDA cores */
    int profile;           /* bench: time each kernel of one run */
    int tune;              /* bench: measure the tensor-core tiles first (cli/bench_tune.h) */
    const char *fuse;      /* fusion rules (NULL: the device's default) */
    const char *indir, *outdir, *outstd, *eval; /* phema */
    int64_t outkimg;                            /* phema: -1 = the latest snapshot */
    int sweep;                                  /* phema */
    int allow_nonfinite;                        /* forward: write NaN/Inf results instead of failing */
    const char *package;                        /* --package=X.edmpkg */
    struct edm_package *pkg;                    /* it, opened (cli_open_package); closed by cli_opts_free */
} cli_opts;

/* Parses argv[1..] (argv[0] is the command name) with the shared options
 * `allowed` selects (cli/options.h); prints the problem and returns -1 on a
 * usage error, 1 when --help was given (and printed). */
int cli_parse(int argc, char **argv, const char *cmd, unsigned allowed, cli_opts *o);
/* The same for a command with options of its own (own[0..nown), into opts,
 * whose first member is the cli_opts the shared ones go into; -D only with
 * OPT_DEFINE); the positional argument goes into *file (file NULL: the
 * command takes none). */
int cli_parse_own(int argc, char **argv, const char *cmd, const cli_option *own, int nown, unsigned shared,
                  void *opts, const char **file);
/* o with every default (what cli_parse starts from). */
void cli_opts_defaults(cli_opts *o);
/* The shared options `allowed` selects into out (at most max);
 * their values go into a cli_opts at the start of the command's options. */
int cli_select_options(unsigned allowed, cli_option *out, int max);

/* What `edmc --help` and each command's --help say about a command. */
typedef struct {
    const char *name, *synopsis, *summary;
    const char *notes; /* after the options, or NULL */
} cli_usage;
const cli_usage *cli_usage_of(const char *name);
void cli_print_usage(FILE *out);
void cli_opts_free(cli_opts *o);
/* Appends "name=value" (given with option flag) to defs[*n]; prints the
 * problem and returns -1 when it is malformed or there are too many. */
int cli_define_append(const char *cmd, const char *flag, edm_define *defs, int *n, const char *def);
/* Sets parameter name to value (which must outlive o) in o's defines. */
int cli_define_set(const char *cmd, cli_opts *o, const char *name, const char *value);
/* Whether -D name=... was given (or set). */
int cli_has_define(const cli_opts *o, const char *name);
/* The same for -D into o (commands with parsers of their own use it too). */
int cli_add_define(const char *cmd, cli_opts *o, const char *def);

/* The backend options from --device, --precision, --threads and the CUDA
 * ablations (NULL: defaults), without looking for a device.  Prints the
 * problem and returns the exit status (2 usage), or 0. */
int cli_backend(const char *cmd, const char *device, const char *precision, const char *matmul, const char *conv,
                int no_graph, const char *fuse, int threads, edm_backend_options *out);
/* The same from parsed options (or from the package opened), and for cuda
 * the driver and device are probed, so a machine without them gets one
 * plain line (exit status 1). */
int cli_backend_of(const char *cmd, const cli_opts *o, edm_backend_options *out);
/* The CUDA ablation options any command parser can accept: 1 if `a` (with
 * its value v, which may be NULL) was one of them, 0 if not, -1 malformed. */
int cli_cuda_flag(const char *cmd, const char *a, const char *v, const char **matmul, const char **conv,
                  int *no_graph, const char **fuse);

/* models/<preset>.edm in the model folders ($EDMC_MODELS, ./models, beside
 * the binary) into out; prints the problem and returns -1 when there is none. */
int cli_preset_path(const char *cmd, const char *preset, char *out, size_t size);

/* Compiles o->file (or reads an IR .xml, or takes the graph of the package
 * o->package, opening it), printing every diagnostic.  Returns 0, or the
 * exit status (1 input error, 2 usage error). */
int cli_load(cli_opts *o, edm_sources *src, edm_program *prog);
/* The training program: o->file compiled with training=true (unless -D
 * training is given) and differentiated.  0 or the exit status. */
int cli_load_training(const char *cmd, cli_opts *o, edm_sources *src, edm_program *prog);
/* Opens o->package into o->pkg (nothing when there is none); a model file
 * or -D beside it is a usage error, and so is a training package for a
 * command other than train and bench --mode=train, or another package for
 * those.  0 or the exit status. */
int cli_open_package(const char *cmd, cli_opts *o);
/* The usual shape of a command: parse, load the model, call fn, clean up. */
typedef int (*cli_fn)(const cli_opts *o, const edm_program *prog);
int cli_run(int argc, char **argv, const char *cmd, unsigned allowed, cli_fn fn);
/* Prints a status once, at the top. */
void cli_report(const edm_sources *src, const edm_status *st);
int cli_exit_code(const edm_status *st);

int cmd_check(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_phema(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_dataset(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_step(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_compile(int argc, char **argv);

#endif
