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
#include "runtime/data.h"
#include "runtime/dist.h"
#include "runtime/files.h"
#include "runtime/interface_names.h"
#include "runtime/model_source.h"
#include "runtime/package.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/train.h"
#include "runtime/train_loop.h"
#include "runtime/train_run.h"
#include "runtime/weights.h"
#include "runtime/meta_keys.h"

/* Options of train and step: the shared device options and -D (into base),
 * and their own. */
typedef struct {
    cli_opts base; /* file, defines, threads, seed, device */
    const char *preset, *data, *outdir, *batch_file, *ema;
    int64_t batch, batch_gpu, duration, status, snapshot, checkpoint;
    int64_t max_nonfinite; /* train: status intervals with a non-finite loss before stopping */
    double rank_timeout;   /* train: seconds a rank waits for the others (data parallel) */
    const char *collective; /* train: ranks on CUDA: auto, nccl or mpi */
    const char *overlap;    /* train: NCCL's buckets during the backward pass: on (default) or off */
    double bucket_mib;      /* train: their bound */
    double lr, decay, rampup;
    int has_lr, has_decay, has_rampup, has_batch, has_seed, has_ema, has_duration, resume, snapshot_fp32, dry_run;
    char ema_buf[128];   /* --resume: the run's EMA lengths */
    json_object *run;    /* --resume: the checkpoint's edmc.run record (NULL: none, or an older edmc's) */
    char *run_config;    /* --resume: the checkpoint's edmc.config */
    char *run_source;    /* --resume: the checkpoint's edmc.source (the model's files) */
    int model_from_run;  /* --resume without --model: the run's model, compiled from run_source when it has it */
    json_object *run_cfg; /* --resume: the same parsed, when the model comes from it */
    char data_abs[4096]; /* --data as recorded: absolute unless builtin: */
    edm_dataset_geometry geo; /* what --data fixes of the model's shape */
    char geo_text[3][16];     /* the -D values taken from it */
    char resume_from[4096]; /* --resume: the checkpoint the settings came from */
    int64_t resume_nimg;    /* and the images it had seen */
} train_opts;

/* The reference's options that set a model parameter: --channels=192 is -D model_channels=192. */
static int store_param(void *opts, const char *cmd, const char *name, const char *v)
{
    static const char *const map[][2] = {
        {"--channels", "model_channels"}, {"--dropout", "dropout"}, {"--P_mean", "P_mean"}, {"--P_std", "P_std"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(name, map[i][0]) == 0)
            return cli_define_set(cmd, opts, map[i][1], v);
    return -1;
}

/* --cond=false (the reference's switch) trains an unconditional model. */
static int store_cond(void *opts, const char *cmd, const char *name, const char *v)
{
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return cli_define_set(cmd, opts, "label_dim", "0");
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return 0;
    fprintf(stderr, "edmc %s: %s=%s: expected true or false\n", cmd, name, v);
    return -1;
}

#define AT(field) .at = offsetof(train_opts, field)
#define GIVEN(field) .given = CLI_GIVEN(train_opts, field)
#define IMAGES(name, field, def_, help_) \
    {.names = (name), .kind = CLI_IMAGES, AT(field), .arg = "N", .def = (def_), .help = (help_)}
#define STR(name, field, arg_, help_) \
    {.names = (name), .kind = CLI_STRING, AT(field), .arg = (arg_), .help = (help_)}

static const cli_option train_table[] = {
    {.names = "--model", .kind = CLI_STRING, AT(base.file), .arg = "FILE.edm", .help = "the model"},
    STR("--preset", preset, "NAME", "models/NAME.edm (edm2-img512-xs ... edm2-img64-xl, edm2-tiny)"),
    STR("--data", data, "DATASET",
        "a folder or .zip of images/latents, or builtin:shapes|shapes16|stripes|blobs (on resume: the run's)"),
    STR("--outdir", outdir, "DIR", "the run's folder: snapshots, checkpoints, stats.jsonl"),
    {.names = "--resume", .kind = CLI_FLAG, AT(resume), .help = "continue the run in --outdir with its settings"},
    {.names = "--dry-run -n", .kind = CLI_FLAG, AT(dry_run),
     .help = "print the resolved configuration and the plan, run nothing"},
    {.names = "--batch", .kind = CLI_IMAGES, AT(batch), GIVEN(has_batch), .arg = "B", .def = "the model's batch_size",
     .help = "images per optimizer step"},
    {.names = "--batch-gpu", .kind = CLI_IMAGES, AT(batch_gpu), .arg = "B", .def = "--batch",
     .help = "images per forward/backward pass (gradients accumulate)"},
    {.names = "--duration", .kind = CLI_IMAGES, AT(duration), GIVEN(has_duration), .arg = "N",
     .def = "the model's duration_Mi, 2Gi", .help = "images in all"},
    IMAGES("--status", status, "128Ki", "a status line and a stats.jsonl record every N images"),
    IMAGES("--snapshot", snapshot, "8Mi", "PH-EMA snapshots every N images (0: none)"),
    IMAGES("--checkpoint", checkpoint, "128Mi", "a training state every N images (and at the end)"),
    {.names = "--lr", .kind = CLI_REAL, AT(lr), GIVEN(has_lr), .hi = HUGE_VAL, .arg = "LR",
     .def = "the model's ref_lr", .help = "the reference learning rate"},
    {.names = "--decay", .kind = CLI_REAL, AT(decay), GIVEN(has_decay), .hi = HUGE_VAL, .arg = "BATCHES",
     .def = "the model's ref_batches", .help = "t_ref of the inverse-sqrt decay"},
    {.names = "--rampup", .kind = CLI_REAL, AT(rampup), GIVEN(has_rampup), .hi = HUGE_VAL, .arg = "MIMG",
     .def = "the model's rampup_Mimg", .help = "learning-rate warm-up, in millions of images"},
    {.names = "--ema", .kind = CLI_STRING, AT(ema), GIVEN(has_ema), .arg = "S1,S2,...", .def = "0.050,0.100",
     .help = "sigma_rel of the tracked EMAs"},
    {.names = "--snapshot-fp32", .kind = CLI_FLAG, AT(snapshot_fp32), .help = "snapshots in float32 (else fp16)"},
    {.names = "--seed", .kind = CLI_INT, AT(base.seed), GIVEN(has_seed), .hi = 4611686018427387904.0, .arg = "S",
     .def = "0", .help = "weights, data order, sigma and noise draws, dropout"},
    STR("--weights", base.weights, "W.safetensors", "start from these weights"),
    {.names = "--rank-timeout", .kind = CLI_REAL, AT(rank_timeout), .lo = 1, .hi = 1e7, .arg = "SECONDS",
     .def = "600", .help = "several ranks (mpirun, srun): how long a rank waits for the others before every rank "
                           "stops with an error"},
    STR("--collective", collective, "auto|nccl|mpi",
        "several CUDA ranks: the gradients' all-reduce by NCCL on the devices, or by MPI through the host (auto: "
        "NCCL when it opens)"),
    STR("--overlap", overlap, "on|off",
        "NCCL: sum each bucket of gradients as the last pass's backward pass finishes it (on, the default), or all "
        "of them after it (off)"),
    {.names = "--bucket-mib", .kind = CLI_REAL, AT(bucket_mib), .lo = 1.0 / 1024, .hi = 1048576, .arg = "MIB",
     .def = "25", .help = "NCCL overlapped: the most gradient bytes of one bucket, in MiB"},
    {.names = "--max-nonfinite", .kind = CLI_INT, AT(max_nonfinite), .lo = 1, .hi = 1000000, .arg = "K", .def = "2",
     .help = "stop after K status intervals in a row with a non-finite loss"},
    {.names = "--channels", .kind = CLI_CALL, .arg = "C", .help = "-D model_channels=C", .call = store_param},
    {.names = "--dropout", .kind = CLI_CALL, .arg = "P", .help = "-D dropout=P", .call = store_param},
    {.names = "--P_mean --P-mean", .kind = CLI_CALL, .arg = "X", .help = "-D P_mean=X", .call = store_param},
    {.names = "--P_std --P-std", .kind = CLI_CALL, .arg = "X", .help = "-D P_std=X", .call = store_param},
    {.names = "--cond", .kind = CLI_CALL, .arg = "true|false", .def = "true",
     .help = "class-conditional (false: -D label_dim=0)", .call = store_cond},
};

static const cli_option step_table[] = {
    STR("--weights", base.weights, "W.safetensors", "the weights before the step"),
    STR("--batch", batch_file, "IN.safetensors",
        EDM_IN_IMAGES ", " EDM_IN_CLASS_LABELS ", " EDM_IN_RND_NORMAL ", " EDM_IN_UNIT_NOISE),
    STR("--output -o", base.output, "OUT.safetensors", "loss, normalized, grad and step1 tensors"),
    {.names = "--lr", .kind = CLI_REAL, AT(lr), GIVEN(has_lr), .hi = HUGE_VAL, .arg = "LR",
     .def = "the model's ref_lr", .help = "Adam's learning rate"},
    {.names = "--seed", .kind = CLI_INT, AT(base.seed), .hi = 4611686018427387904.0, .arg = "S", .def = "0",
     .help = "dropout's seed"},
    {.names = "--allow-nonfinite", .kind = CLI_FLAG, AT(base.allow_nonfinite),
     .help = "write non-finite results instead of failing"},
};

static int parse_train(int argc, char **argv, const char *cmd, int is_step, train_opts *o)
{
    memset(o, 0, sizeof *o);
    cli_opts_defaults(&o->base);
    o->status = 128 << 10;
    o->snapshot = 8 << 20;
    o->checkpoint = 128 << 20;
    o->ema = "0.050,0.100";
    const char *file = NULL;
    int rc = cli_parse_own(argc, argv, cmd, is_step ? step_table : train_table,
                           is_step ? CLI_COUNT(step_table) : CLI_COUNT(train_table),
                           OPT_DEVICE | OPT_PRECISION | OPT_THREADS | OPT_CUDA | OPT_DEFINE | (is_step ? 0 : OPT_PACKAGE),
                           o, &file);
    if (rc == 0 && file) {
        if (o->base.file) {
            fprintf(stderr, "edmc %s: the model given twice ('%s' and '%s')\n", cmd, o->base.file, file);
            return -1;
        }
        o->base.file = file;
    }
    return rc;
}

/* A .edm parameter as a number (presets carry the training hyperparameters). */
static double param_number(const edm_program *prog, const char *name, double def)
{
    const char *v = edm_program_param(prog, name);
    return v ? strtod(v, NULL) : def;
}

/* A number as short as it reads back exactly ("0.01", not 0.01000000000000000021). */
static void format_number(double x, char *buf, size_t size)
{
    snprintf(buf, size, "%.15g", x);
    if (strtod(buf, NULL) != x)
        snprintf(buf, size, "%.17g", x);
}

/* The evaluation configuration for snapshots: every parameter, training off,
 * and the training hyperparameters as this run uses them (a run with --batch=16
 * records batch_size 16, not the .edm's default). */
static char *config_json(const edm_program *prog, const edm_train_opts *t)
{
    json_object *cfg = json_object_new_object();
    if (!cfg)
        return NULL;
    const struct {
        const char *name;
        double value;
    } used[] = {{"batch_size", (double)t->batch},
                {"ref_lr", t->ref_lr},
                {"ref_batches", t->ref_batches},
                {"rampup_Mimg", t->rampup_mimg}};
    for (int i = 0; i < prog->nparams; i++) {
        const char *name = prog->params[i].name, *value = prog->params[i].value;
        char buf[64];
        if (strcmp(name, "training") == 0)
            value = "false";
        for (size_t k = 0; k < sizeof used / sizeof used[0]; k++)
            if (strcmp(name, used[k].name) == 0) {
                format_number(used[k].value, buf, sizeof buf);
                value = buf;
            }
        json_object_object_add(cfg, name, json_object_new_string(value));
    }
    char *s = strdup(json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN));
    json_object_put(cfg);
    return s;
}

/* --data as a run records it: folders and archives by absolute path (a resumed
 * run may start from another working folder), builtin:NAME as it is. */
static int absolute_data(const char *data, char *out, size_t size)
{
    if (strncmp(data, "builtin:", 8) == 0 || data[0] == '/') {
        snprintf(out, size, "%s", data);
        return 0;
    }
    char *abs = edm_absolute_path(data);
    if (!abs) {
        fprintf(stderr, "edmc train: --data=%s: cannot make the path absolute\n", data);
        return 1;
    }
    snprintf(out, size, "%s", abs);
    free(abs);
    return 0;
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
    return cli_parse_real_list("train", "--ema", list, 1e-6, 1.0, t->std, EDM_TRAIN_MAX_EMA, &t->nstd);
}

/* ------------------------------------------------------------------ shape */

/* The dataset decides what the model does not: label_dim always (unless -D
 * label_dim or --cond=false sets it), resolution and channels for a --model
 * file (a --preset fixes them; check_preset_shape compares). */
static int shape_from_data(train_opts *o)
{
    edm_status st;
    edm_status_init(&st);
    if (edm_dataset_probe(o->data, &o->geo, &st) != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    if (o->base.package) /* its model's shape was fixed when it was compiled: check_package_shape */
        return 0;
    const struct {
        const char *name;
        int value, applies;
    } from_data[] = {{"label_dim", o->geo.classes, 1},
                     {"img_resolution", o->geo.resolution, o->geo.resolution > 0 && !o->preset},
                     {"img_channels", o->geo.channels, o->geo.channels > 0 && !o->preset}};
    for (int k = 0; k < 3; k++) {
        if (!from_data[k].applies || cli_has_define(&o->base, from_data[k].name))
            continue;
        snprintf(o->geo_text[k], sizeof o->geo_text[k], "%d", from_data[k].value);
        if (cli_define_set("train", &o->base, from_data[k].name, o->geo_text[k]) != 0)
            return 2;
    }
    return 0;
}

/* A preset made for other images than the dataset's: one error naming both. */
static int check_preset_shape(const train_opts *o, const edm_program *prog)
{
    int res = (int)param_number(prog, "img_resolution", 0), ch = (int)param_number(prog, "img_channels", 0);
    if (!o->preset || ((!o->geo.resolution || o->geo.resolution == res) && (!o->geo.channels || o->geo.channels == ch)))
        return 0;
    fprintf(stderr,
            "edmc train: --preset=%s is made for %dx%d images with %d channels, but %s holds %dx%d images with %d "
            "channels: give -D img_resolution=%d -D img_channels=%d to train its architecture on them, or choose "
            "another preset\n",
            o->preset, res, res, ch, o->data, o->geo.resolution ? o->geo.resolution : res,
            o->geo.resolution ? o->geo.resolution : res, o->geo.channels ? o->geo.channels : ch,
            o->geo.resolution ? o->geo.resolution : res, o->geo.channels ? o->geo.channels : ch);
    return 2;
}

/* A package compiled for other images than the dataset's: one error naming
 * the -D that compiles one for them. */
static int check_package_shape(const train_opts *o, const edm_graph *g)
{
    int img = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_IMAGES);
    int lab = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_CLASS_LABELS);
    if (img < 0 || edm_graph_node(g, img)->shape.rank != 4) {
        fprintf(stderr, "edmc train: %s: the training program has no input images [N, C, H, W]\n", o->base.package);
        return 1;
    }
    const edm_shape *s = &edm_graph_node(g, img)->shape;
    int res = (int)s->dim[2], ch = (int)s->dim[1], classes = lab >= 0 ? (int)edm_graph_node(g, lab)->shape.dim[1] : 0;
    const struct {
        const char *name;
        int data, model;
    } fixed[] = {{"label_dim", o->geo.classes, classes},
                 {"img_resolution", o->geo.resolution, res},
                 {"img_channels", o->geo.channels, ch}};
    for (int k = 0; k < 3; k++)
        if ((k == 0 || fixed[k].data > 0) && fixed[k].data != fixed[k].model) {
            fprintf(stderr,
                    "edmc train: %s holds a model for %dx%d images with %d channels and %d classes, but %s has %s "
                    "%d: compile the package with -D %s=%d\n",
                    o->base.package, res, res, ch, classes, o->data, fixed[k].name, fixed[k].data, fixed[k].name,
                    fixed[k].data);
            return 2;
        }
    return 0;
}

/* A cuda package runs the passes of the batch its kernels were made for:
 * --batch-gpu (or the batch over the ranks) must be one of them. */
static int check_package_batch(const train_opts *o, const edm_train_opts *t, int ranks)
{
    int64_t micro = t->batch_gpu > 0 ? t->batch_gpu : t->batch / (ranks > 0 ? ranks : 1);
    char held[256];
    if (edm_package_holds_batch(o->base.pkg, micro, held, sizeof held))
        return 0;
    fprintf(stderr,
            "edmc train: %s holds kernels for passes of batch %s, but this run's passes are of %lld images "
            "(--batch-gpu, or --batch over the ranks): give --batch-gpu one of its batches, or compile the "
            "package with --batch=%lld\n",
            o->base.package, held, (long long)micro, (long long)micro);
    return 2;
}

/* --package: the training program, its parameters and its source files
 * from the package (nothing read from .edm files), checked against --data. */
static int load_package(train_opts *o, edm_sources *src, edm_program *prog)
{
    if (o->base.ndefines) {
        fprintf(stderr, "edmc train: -D, --channels, --dropout, --P_mean, --P_std and --cond do not apply to a "
                        "package: its model was compiled with its parameters (edmc compile it again to change them)\n");
        return 2;
    }
    int rc = cli_open_package("train", &o->base);
    if (rc != 0)
        return rc;
    edm_status st;
    edm_status_init(&st);
    if (edm_package_program(o->base.pkg, prog, &st) != 0 || edm_package_sources(o->base.pkg, src, &st) != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    if (!edm_package_model_path(o->base.pkg)) {
        fprintf(stderr, "edmc train: %s: manifest.json names no model file\n", o->base.package);
        return 1;
    }
    return check_package_shape(o, prog->graph);
}

/* ------------------------------------------------------------------ resume */

static int differs(const train_opts *o, const char *opt, const char *given, const char *recorded)
{
    fprintf(stderr,
            "edmc train: --resume: %s=%s differs from the run in '%s', which used %s: a resumed run keeps its "
            "settings (leave %s out, or start a new run in another --outdir)\n",
            opt, given, o->outdir, recorded, opt);
    return 2;
}

/* A numeric setting (into num, or into an integer: seeds exceed a double's
 * precision): the run's value, unless given again (then it must agree). */
static int agree(const train_opts *o, const char *opt, const char *key, int *given, double *num, int64_t *integer)
{
    json_object *v;
    if (!json_object_object_get_ex(o->run, key, &v))
        return 0;
    double rec = json_object_get_double(v);
    int64_t rec_int = json_object_get_int64(v);
    if (*given && (num ? rec != *num : rec_int != *integer)) {
        char a[64], b[64];
        if (num) {
            format_number(*num, a, sizeof a);
            format_number(rec, b, sizeof b);
        } else {
            snprintf(a, sizeof a, "%lld", (long long)*integer);
            snprintf(b, sizeof b, "%lld", (long long)rec_int);
        }
        return differs(o, opt, a, b);
    }
    if (num)
        *num = rec;
    else
        *integer = rec_int;
    *given = 1;
    return 0;
}

/* The EMA lengths: a snapshot named -0.200 must come from an EMA that tracked 0.200. */
static int agree_ema(train_opts *o)
{
    json_object *v;
    if (!json_object_object_get_ex(o->run, "ema", &v) || !json_object_is_type(v, json_type_array))
        return 0;
    char rec[128] = "";
    size_t used = 0, n = json_object_array_length(v);
    for (size_t i = 0; i < n; i++) {
        char num[64];
        format_number(json_object_get_double(json_object_array_get_idx(v, i)), num, sizeof num);
        used += (size_t)snprintf(rec + used, sizeof rec - used, "%s%s", i ? "," : "", num);
        if (used >= sizeof rec)
            return differs(o, "--ema", o->ema, "(too many EMA lengths)");
    }
    if (o->has_ema) {
        edm_train_opts given = {0};
        if (parse_ema(o->ema, &given) != 0)
            return 2;
        int same = (size_t)given.nstd == n;
        for (int i = 0; same && i < given.nstd; i++)
            same = given.std[i] == json_object_get_double(json_object_array_get_idx(v, (size_t)i));
        if (!same)
            return differs(o, "--ema", o->ema, rec);
    }
    snprintf(o->ema_buf, sizeof o->ema_buf, "%s", rec);
    o->ema = o->ema_buf;
    return 0;
}

/* The model: the run's .edm with the run's parameters, unless one is given
 * (then compare_config checks that it is configured the same).  The values
 * point into o->run_cfg, which lives as long as o. */
static int take_model(train_opts *o)
{
    json_object *m;
    if (o->base.file || o->base.package || !json_object_object_get_ex(o->run, "model", &m))
        return 0;
    o->base.file = json_object_get_string(m);
    o->model_from_run = 1;
    o->run_cfg = o->run_config ? json_tokener_parse(o->run_config) : NULL;
    if (!o->run_cfg || !json_object_is_type(o->run_cfg, json_type_object))
        return 0;
    json_object_object_foreach(o->run_cfg, key, val)
    {
        int given = strcmp(key, "training") == 0;
        for (int i = 0; i < o->base.ndefines; i++)
            given |= strcmp(o->base.defines[i].name, key) == 0;
        if (given)
            continue;
        if (o->base.ndefines == CLI_MAX_DEFINES) {
            fprintf(stderr, "edmc train: --resume: the run has more than %d parameters\n", CLI_MAX_DEFINES);
            return 2;
        }
        char *name = strdup(key);
        if (!name) {
            fprintf(stderr, "edmc: out of memory\n");
            return 1;
        }
        o->base.defines[o->base.ndefines].name = name;
        o->base.defines[o->base.ndefines++].value = json_object_get_string(val);
    }
    return 0;
}

/* Reads the newest readable checkpoint's record into o and resolves every
 * setting from it.  Returns 0 or the exit status. */
static int resume_settings(train_opts *o)
{
    edm_status st;
    edm_status_init(&st);
    char path[4096], name[256] = "";
    edm_st_file *f = NULL;
    for (;;) {
        if (edm_train_newest_checkpoint(o->outdir, name, path, sizeof path, &st) != 0) {
            cli_report(NULL, &st);
            return 1;
        }
        if (!path[0]) {
            fprintf(stderr, "edmc train: --resume: no checkpoint (training-state-*.safetensors) in '%s' to continue "
                            "from\n", o->outdir);
            return 2;
        }
        f = edm_st_open(path, &st);
        if (f)
            break;
        /* damaged: the training loop skips it too, saying so */
        snprintf(name, sizeof name, "%s", strrchr(path, '/') + 1);
        edm_status_init(&st);
    }
    const char *run = edm_st_metadata(f, EDM_META_RUN), *cfg = edm_st_metadata(f, EDM_META_CONFIG);
    const char *source = edm_st_metadata(f, EDM_META_SOURCE);
    const char *nimg = edm_st_metadata(f, EDM_META_NIMG);
    snprintf(o->resume_from, sizeof o->resume_from, "%s", path);
    o->resume_nimg = nimg ? atoll(nimg) : 0;
    int rc = 0;
    if (run) {
        o->run = json_tokener_parse(run);
        if (!o->run || !json_object_is_type(o->run, json_type_object)) {
            fprintf(stderr, "edmc train: --resume: %s: its edmc.run metadata is not a JSON object\n", path);
            rc = 1;
        }
    }
    if (rc == 0 && ((cfg && !(o->run_config = strdup(cfg))) || (source && !(o->run_source = strdup(source))))) {
        fprintf(stderr, "edmc: out of memory\n");
        rc = 1;
    }
    edm_st_close(f);
    if (rc != 0 || !o->run)
        return rc; /* an older edmc's checkpoint: the command line says everything */
    json_object *v;
    if (json_object_object_get_ex(o->run, "data", &v)) {
        const char *rec = json_object_get_string(v);
        if (!o->data) {
            o->data = rec;
        } else {
            char given[4096];
            if (absolute_data(o->data, given, sizeof given) != 0)
                return 1;
            if (strcmp(given, rec) != 0)
                return differs(o, "--data", o->data, rec);
        }
    }
    int64_t seed = (int64_t)o->base.seed;
    if ((rc = agree(o, "--seed", "seed", &o->has_seed, NULL, &seed)) != 0 ||
        (rc = agree(o, "--batch", "batch", &o->has_batch, NULL, &o->batch)) != 0 ||
        (rc = agree(o, "--lr", "ref_lr", &o->has_lr, &o->lr, NULL)) != 0 ||
        (rc = agree(o, "--decay", "ref_batches", &o->has_decay, &o->decay, NULL)) != 0 ||
        (rc = agree(o, "--rampup", "rampup_Mimg", &o->has_rampup, &o->rampup, NULL)) != 0 ||
        (rc = agree_ema(o)) != 0)
        return rc;
    o->base.seed = (uint64_t)seed;
    if (json_object_object_get_ex(o->run, "snapshot_fp32", &v)) {
        int rec = json_object_get_boolean(v);
        if (o->snapshot_fp32 && !rec)
            return differs(o, "--snapshot-fp32", "(given)", "fp16 snapshots");
        o->snapshot_fp32 = rec;
    }
    return take_model(o);
}

/* A model given on resume must be configured as the run's was. */
static int compare_config(const train_opts *o, const char *config)
{
    if (!o->run || !o->run_config || !config || strcmp(o->run_config, config) == 0)
        return 0;
    char why[600];
    edm_config_diff(o->run_config, config, why, sizeof why);
    fprintf(stderr, "edmc train: --resume: the model is configured otherwise than the run in '%s': %s (the run's "
                    "vs this command's); leave %s out to continue it as it was\n",
            o->outdir, why, o->base.package ? "--package" : "--model, --preset and -D");
    return 2;
}

/* --dry-run: what the run would be, resolved, and its plan. */
static void print_plan(const train_opts *o, const edm_train_opts *t, const edm_program *prog)
{
    int64_t micro = t->batch_gpu > 0 ? t->batch_gpu : t->batch, start = o->resume ? o->resume_nimg : 0;
    int64_t left = t->duration > start ? t->duration - start : 0;
    printf("edmc train --dry-run: nothing is run or written\n");
    printf("  model        %s\n  parameters  ", t->model);
    for (int i = 0; i < prog->nparams; i++)
    {
        /* the training hyperparameters are on their own lines, as the run uses them */
        static const char *const own_line[] = {"training", "ops_library", "batch_size", "ref_lr", "ref_batches",
                                               "rampup_Mimg"};
        int skip = 0;
        for (size_t k = 0; k < sizeof own_line / sizeof own_line[0]; k++)
            skip |= strcmp(prog->params[i].name, own_line[k]) == 0;
        if (!skip)
            printf(" %s=%s", prog->params[i].name, prog->params[i].value);
    }
    printf("\n  data         %s (", t->data);
    if (o->geo.resolution && o->geo.channels > 0)
        printf("%dx%d, %d channels%s, ", o->geo.resolution, o->geo.resolution, o->geo.channels,
               o->geo.latent ? " of latents" : "");
    else if (o->geo.resolution) /* a built-in set draws the channels the model has */
        printf("%dx%d, the model's channels, ", o->geo.resolution, o->geo.resolution);
    printf("%d classes)\n", o->geo.classes);
    if (o->resume)
        printf("  outdir       %s: resumes from %s (kimg %.3f)\n", t->outdir, o->resume_from, (double)start / 1000);
    else
        printf("  outdir       %s: a new run\n", t->outdir);
    printf("  seed         %llu\n", (unsigned long long)t->seed);
    printf("  batch        %lld images per step, %lld per pass (%lld passes)\n", (long long)t->batch,
           (long long)micro, (long long)(t->batch / (micro > 0 ? micro : 1)));
    printf("  duration     %lld images (kimg %.3f), %lld steps to go\n", (long long)t->duration,
           (double)t->duration / 1000, (long long)((left + t->batch - 1) / t->batch));
    printf("  lr           %g, times 1/sqrt(t / %g) past step t = %g; warm-up over %g Mimg\n", t->ref_lr,
           t->ref_batches, t->ref_batches, t->rampup_mimg);
    printf("  ema          sigma_rel %s\n", o->ema);
    printf("  status       every %lld images\n", (long long)t->status_every);
    if (t->snapshot_every > 0)
        printf("  snapshots    every %lld images: %lld x %d files (%s)\n", (long long)t->snapshot_every,
               (long long)(t->duration / t->snapshot_every - start / t->snapshot_every), t->nstd,
               t->snapshot_fp32 ? "fp32" : "fp16");
    else
        printf("  snapshots    none\n");
    printf("  checkpoints  every %lld images, and at the end\n", (long long)t->checkpoint_every);
    printf("  device       %s\n", o->base.device ? o->base.device : "cpu");
}

/* One rank per GPU: the node's GPU of this rank's local index (or the only
 * one Slurm's --gpus-per-task / CUDA_VISIBLE_DEVICES leaves it). */
static int rank_device(int local_rank)
{
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    if (vis && *vis && !strchr(vis, ','))
        return 0;
    return local_rank;
}

/* Several ranks (mpirun, srun): join them.  0 when alone or joined; the
 * exit status otherwise. */
static int join_ranks(const train_opts *o, edm_backend_options *be, edm_dist **out)
{
    edm_dist_env env;
    edm_status st;
    edm_status_init(&st);
    *out = NULL;
    if (edm_dist_env_read(&env, &st) != 0) {
        cli_report(NULL, &st);
        return 2;
    }
    if (env.size <= 1)
        return 0;
    edm_dist *d = edm_dist_open(&env, o->rank_timeout, &st);
    if (!d) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    *out = d;
    if (be->device == EDM_DEVICE_CUDA)
        be->cuda_device = rank_device(edm_dist_local_rank(d));
    return 0;
}

static int train_command(int argc, char **argv)
{
    train_opts o;
    char preset[4096];
    int parsed = parse_train(argc, argv, "train", 0, &o);
    if (parsed > 0) { /* --help */
        cli_opts_free(&o.base);
        return 0;
    }
    int rc = parsed != 0 ? 2 : 0;
    if (rc == 0 && o.base.package && (o.base.file || o.preset)) {
        fprintf(stderr, "edmc train: give the model once: --model (or --preset) or --package, not both\n");
        rc = 2;
    }
    if (rc == 0 && o.preset && !o.base.file) {
        if (cli_preset_path("train", o.preset, preset, sizeof preset) != 0)
            rc = 2;
        o.base.file = preset;
    }
    if (rc == 0 && !o.outdir) {
        fprintf(stderr, "edmc train: needs --outdir=DIR\n");
        rc = 2;
    }
    if (rc == 0 && o.resume)
        rc = resume_settings(&o);
    if (rc == 0 && !o.resume) { /* said early; the training loop checks again with the folder locked */
        edm_status st;
        edm_status_init(&st);
        if (edm_train_check_fresh(o.outdir, &st) != 0) {
            cli_report(NULL, &st);
            rc = cli_exit_code(&st);
        }
    }
    if (rc == 0 && ((!o.base.file && !o.base.package) || !o.data)) {
        fprintf(stderr, "edmc train: needs --model=FILE.edm (or --preset=NAME, or --package=X.edmpkg), "
                        "--data=DATASET and --outdir=DIR\n");
        rc = 2;
    }
    if (rc == 0)
        rc = absolute_data(o.data, o.data_abs, sizeof o.data_abs);
    if (rc == 0)
        rc = shape_from_data(&o);
    edm_sources *src = rc == 0 ? edm_sources_new() : NULL;
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    if (rc == 0 && src && o.model_from_run && o.run_source) {
        /* the run carries its model: a moved folder resumes without the .edm files */
        edm_status mst;
        edm_status_init(&mst);
        int at = edm_model_source_add(src, o.run_source, o.resume_from, &mst);
        if (at < 0) {
            cli_report(NULL, &mst);
            rc = 1;
        } else {
            o.base.file = edm_sources_get(src, at)->path;
        }
    }
    if (rc == 0 && o.base.package)
        rc = src ? load_package(&o, src, &prog) : 1;
    else if (rc == 0)
        rc = src ? cli_load_training("train", &o.base, src, &prog) : 1;
    /* snapshots name the model by absolute path: generate and phema may run elsewhere */
    char *model_abs = rc == 0 ? edm_absolute_path(o.base.package ? edm_package_model_path(o.base.pkg)
                                                                 : o.base.file)
                              : NULL;
    edm_st_file *init = NULL;
    edm_status st;
    edm_status_init(&st);
    if (rc == 0 && o.base.weights) {
        init = edm_weights_open(o.base.weights, &st);
        if (!init) {
            cli_report(NULL, &st);
            rc = 1;
        }
    }
    edm_train_opts t = {
        .outdir = o.outdir, .data = o.data_abs,
        .batch = o.has_batch ? o.batch : (int64_t)param_number(&prog, "batch_size", 2048),
        .batch_gpu = o.batch_gpu,
        .duration = o.has_duration ? o.duration : (int64_t)(param_number(&prog, "duration_Mi", 2048) * 1048576.0),
        .status_every = o.status,
        .snapshot_every = o.snapshot, .checkpoint_every = o.checkpoint,
        .ref_lr = o.has_lr ? o.lr : param_number(&prog, "ref_lr", 0.01),
        .ref_batches = o.has_decay ? o.decay : param_number(&prog, "ref_batches", 70000),
        .rampup_mimg = o.has_rampup ? o.rampup : param_number(&prog, "rampup_Mimg", 10),
        .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .seed = o.base.seed, .snapshot_fp32 = o.snapshot_fp32,
        .threads = o.base.threads, .resume = o.resume, .model = model_abs ? model_abs : o.base.file,
        .max_nonfinite = (int)o.max_nonfinite, .collective = o.collective,
        .no_overlap = o.overlap && strcmp(o.overlap, "off") == 0,
        .bucket_bytes = o.bucket_mib > 0 ? (int64_t)(o.bucket_mib * 1048576.0) : 0};
    if (rc == 0)
        rc = check_preset_shape(&o, &prog);
    char *config = rc == 0 ? config_json(&prog, &t) : NULL;
    t.config = config;
    /* and carry the model itself, so a moved run folder still generates */
    char *source = rc == 0 ? edm_model_source_json(src, &st) : NULL;
    if (rc == 0 && !source) {
        cli_report(NULL, &st);
        rc = 1;
    }
    t.source = source;
    if (rc == 0)
        rc = compare_config(&o, config);
    if (rc == 0)
        rc = cli_backend_of("train", &o.base, &t.backend);
    edm_dist *dist = NULL;
    int rank = 0;
    if (rc == 0 && o.collective && strcmp(o.collective, "auto") != 0 && strcmp(o.collective, "nccl") != 0 &&
        strcmp(o.collective, "mpi") != 0) {
        fprintf(stderr, "edmc train: --collective=%s: expected auto, nccl or mpi\n", o.collective);
        rc = 2;
    }
    if (rc == 0 && o.overlap && strcmp(o.overlap, "on") != 0 && strcmp(o.overlap, "off") != 0) {
        fprintf(stderr, "edmc train: --overlap=%s: expected on or off\n", o.overlap);
        rc = 2;
    }
    if (rc == 0 && parse_ema(o.ema, &t) != 0)
        rc = 2;
    if (rc == 0 && t.snapshot_every > 0 && t.snapshot_every < 1000) {
        fprintf(stderr, "edmc train: --snapshot=%lld: snapshots are named by kimg, so they must be at least 1000 "
                        "images apart\n", (long long)t.snapshot_every);
        rc = 2;
    }
    if (rc == 0 && o.dry_run) {
        print_plan(&o, &t, &prog);
    } else if (rc == 0) {
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
    if (rc == 0 && !o.dry_run) {
        rc = join_ranks(&o, &t.backend, &dist);
        t.dist = dist;
        rank = dist ? edm_dist_rank(dist) : 0;
        if (rc == 0 && dist && o.base.threads == 0) { /* the cores this rank may use, shared with the ranks on them */
            edm_status tst;
            edm_status_init(&tst);
            if (edm_dist_cpu_threads(dist, &t.threads, &tst) != 0) {
                cli_report(NULL, &tst);
                rc = cli_exit_code(&tst);
            }
            t.backend.cpu.threads = t.threads;
        }
        if (rc == 0 && o.base.pkg)
            rc = check_package_batch(&o, &t, dist ? edm_dist_size(dist) : 1);
    }
    if (rc == 0 && !o.dry_run) {
        if (edm_train(prog.graph, &t, init, &stop_requested, rank == 0 ? stdout : NULL, &st) != 0) {
            /* a rank that stops because another failed leaves the saying to rank 0 */
            if (!dist || rank == 0 || edm_dist_peer_failed(dist) < 0)
                cli_report(NULL, &st);
            rc = cli_exit_code(&st);
        }
    }
    /* ranks out of step (a timeout, or a failure only this rank saw) end every rank */
    if (dist)
        edm_dist_close(dist, rc == 0 || !edm_dist_broken(dist), rc);
    free(config);
    free(source);
    free(model_abs);
    edm_st_close(init);
    edm_program_free(&prog);
    edm_sources_free(src);
    cli_opts_free(&o.base);
    json_object_put(o.run);
    json_object_put(o.run_cfg);
    free(o.run_config);
    free(o.run_source);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    /* every line a rank writes on stderr says whose it is (an inconsistent
     * environment is said again, prefixed, where the ranks are joined) */
    edm_dist_env env;
    edm_status st;
    edm_status_init(&st);
    FILE *saved = edm_dist_env_read(&env, &st) == 0 && env.size > 1 ? edm_dist_prefix_stderr(env.rank) : NULL;
    int rc = train_command(argc, argv);
    edm_dist_unprefix_stderr(saved);
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
    int rc = edm_st_writer_add_f32(w, EDM_OUT_LOSS, EDM_F32, 1, &one, &l, st);
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
    if (stat(o->base.weights, &sw) == 0 && stat(o->base.output, &so) == 0 && sw.st_dev == so.st_dev && sw.st_ino == so.st_ino)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--output=%s is the --weights file: write the step elsewhere",
                        o->base.output);
    edm_st_file *w = edm_st_open(o->base.weights, st);
    edm_st_file *in = w ? edm_st_open(o->batch_file, st) : NULL;
    if (!in) {
        edm_st_close(w);
        return -1;
    }
    const edm_st_entry *images = edm_st_find(in, EDM_IN_IMAGES);
    int rc = images && images->rank == 4
                 ? 0
                 : edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: needs '" EDM_IN_IMAGES "' [N, C, H, W]",
                            o->batch_file);
    edm_trainer *t = NULL;
    float **normalized = NULL;
    if (rc == 0) {
        edm_backend_options opt = *bo;
        opt.cpu.seed = o->base.seed;
        t = edm_trainer_new(prog->graph, images->dim[0], &opt, st);
        rc = t ? edm_trainer_direct_grads(t, 1, st) : -1; /* one step of one pass */
        if (rc == 0)
            rc = edm_trainer_load(t, w, st);
        if (rc == 0 && !o->base.allow_nonfinite)
            rc = edm_weights_check_finite(prog->graph, w, st);
    }
    const char *names[] = {EDM_IN_IMAGES, EDM_IN_CLASS_LABELS, EDM_IN_RND_NORMAL, EDM_IN_UNIT_NOISE};
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
        rc = edm_check_finite(&l, 1, "step", EDM_OUT_LOSS, st);
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
        rc = write_step(t, o->base.output, loss, normalized, st);
        printf("loss %.9g (lr %g): %s\n", loss, lr, o->base.output);
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
    int parsed = parse_train(argc, argv, "step", 1, &o);
    if (parsed != 0) {
        cli_opts_free(&o.base);
        return parsed > 0 ? 0 : 2;
    }
    if (!o.base.file || !o.base.weights || !o.batch_file || !o.base.output) {
        fprintf(stderr, "edmc step: needs FILE.edm --weights=W.safetensors --batch=IN.safetensors "
                        "--output=OUT.safetensors [--lr=0.01]\n");
        cli_opts_free(&o.base);
        return 2;
    }
    edm_sources *src = edm_sources_new();
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    int rc = src ? cli_load_training("step", &o.base, src, &prog) : 1;
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
