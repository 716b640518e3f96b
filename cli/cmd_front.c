/* edmc check | info | dump: the front-end commands. */
#include "config.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "compiler/ir_io.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"
#include "codegen/cuda_codegen.h"
#include "runtime/backend.h"
#include "runtime/cuda_tiles_file.h"
#include "runtime/files.h"
#include "runtime/safetensors.h"

static int count_op(const edm_graph *g, edm_op op)
{
    int n = 0;
    for (int i = 0; i < edm_graph_count(g); i++)
        n += edm_graph_node(g, i)->op == op;
    return n;
}

static int do_check(const cli_opts *o, const edm_program *prog)
{
    const edm_graph *g = prog->graph;
    printf("%s: ok (%d nodes, %d inputs, %d outputs, %d parameter tensors)\n", o->file, edm_graph_count(g),
           count_op(g, EDM_OP_INPUT), count_op(g, EDM_OP_OUTPUT), count_op(g, EDM_OP_PARAM));
    return 0;
}

int cmd_check(int argc, char **argv) { return cli_run(argc, argv, "check", 0, do_check); }

static void print_params(const edm_graph *g)
{
    char buf[128];
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        /* "[32,5,3,3]": no spaces, so each line splits into two fields */
        size_t used = 0;
        used += (size_t)snprintf(buf, sizeof buf, "[");
        for (int k = 0; k < n->shape.rank && used < sizeof buf; k++)
            used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%lld", k ? "," : "", (long long)n->shape.dim[k]);
        if (used < sizeof buf)
            snprintf(buf + used, sizeof buf - used, "]");
        printf("%s %s\n", n->name, buf);
    }
}

static void print_commas(int64_t v, char *buf, size_t size)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)v);
    size_t n = strlen(digits), j = 0;
    for (size_t i = 0; i < n && j + 2 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
}

/* What the plan of a program looks like at one --fuse setting: kernels per
 * call and the activation bytes it keeps live at its peak, per sample (f32,
 * batch-dependent values only: weights and their gradients are not counted). */
typedef struct {
    unsigned fuse;
    int kernels_forward, kernels_train;
    double bytes_forward, bytes_train;
    /* --device=cuda: the CUDA executor's memory at --batch and --precision
     * (co): its activation arena, and the leaves (parameters f32, inputs) */
    int cuda;
    edm_cuda_options co;
    double arena_forward, arena_train, leaf_forward, leaf_train, param_bytes;
} plan_summary;

/* --precision for CUDA storage: fp16 (the default), bf16 or fp32 (also f16, …). */
static int cuda_storage(const char *cmd, const char *precision, edm_dtype *out)
{
    const char *p = precision ? precision : "fp16";
    char name[16];
    snprintf(name, sizeof name, "%s%s", strncmp(p, "fp", 2) == 0 ? "f" : "", strncmp(p, "fp", 2) == 0 ? p + 2 : p);
    if (edm_dtype_from_name(name, out) != 0 || *out == EDM_F64) {
        fprintf(stderr, "edmc %s: --precision=%s: CUDA kernels store fp16, bf16 or fp32\n", cmd, p);
        return -1;
    }
    return 0;
}

static double aligned(double bytes) { return 256 * ceil(bytes / 256); }

/* The arena of plan p with the CUDA storage types at co's batch (the
 * executor's edm_plan_bind_sizes), and its leaves' bytes. */
static int cuda_memory(edm_plan *p, const edm_cuda_options *co, double *arena, double *leaves, double *params,
                       edm_status *st)
{
    int n = edm_graph_count(p->g);
    edm_dtype *types = malloc(sizeof *types * (size_t)(n ? n : 1));
    int64_t *esize = malloc(sizeof *esize * (size_t)(n ? n : 1));
    int rc = types && esize ? edm_cuda_value_types(p->g, co, types, st) : edm_nomem(st);
    *leaves = *params = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        const edm_node *nd = edm_graph_node(p->g, i);
        esize[i] = (int64_t)edm_dtype_size(types[i]);
        if (edm_op_class_of(nd->op) != EDM_CLASS_LEAF || nd->op == EDM_OP_CONST)
            continue;
        double numel = 1;
        for (int d = 0; d < nd->shape.rank; d++)
            numel *= nd->shape.dim[d] == EDM_DIM_BATCH ? (double)co->batch : (double)nd->shape.dim[d];
        *leaves += aligned(numel * (double)esize[i]);
        if (nd->op == EDM_OP_PARAM)
            *params += numel * (double)esize[i];
    }
    if (rc == 0)
        rc = edm_plan_bind_sizes(p, co->batch, (int64_t)sizeof(float), esize, st);
    if (rc == 0)
        *arena = (double)p->arena_bytes;
    free(types);
    free(esize);
    return rc;
}

static int summarize(edm_graph *g, int training, plan_summary *ps, edm_status *st)
{
    edm_pipeline_options po = {.training = training, .fuse = ps->fuse};
    edm_graph *r = NULL;
    if (edm_pipeline_run(g, &po, "rewrite", &r, st) != 0)
        return -1;
    edm_plan_options pl = {.fuse = ps->fuse, .training = training};
    edm_plan *p = edm_plan_build(r, &pl, st);
    int rc = p ? edm_plan_bind(p, 1, 4, st) : -1;
    if (rc == 0) {
        *(training ? &ps->kernels_train : &ps->kernels_forward) = edm_plan_kernels(p);
        *(training ? &ps->bytes_train : &ps->bytes_forward) = (double)p->act_peak_bytes;
    }
    if (rc == 0 && ps->cuda) {
        edm_cuda_options co = ps->co;
        co.training = co.optimizer = training;
        rc = cuda_memory(p, &co, training ? &ps->arena_train : &ps->arena_forward,
                         training ? &ps->leaf_train : &ps->leaf_forward, &ps->param_bytes, st);
    }
    edm_plan_free(p);
    edm_graph_free(r);
    return rc;
}

/* The forward from the program as compiled; the training step from the model
 * compiled again with training=true and differentiated (-1: not available,
 * e.g. for an IR file or a program without the parameter). */
static int plan_summaries(const cli_opts *o, const edm_program *prog, plan_summary *ps, edm_status *st)
{
    ps->fuse = EDM_FUSE_ALL;
    if (o->fuse && edm_fuse_parse(o->fuse, &ps->fuse, st) != 0)
        return -1;
    ps->kernels_train = -1;
    ps->bytes_train = ps->arena_train = ps->leaf_train = -1;
    if (summarize(prog->graph, 0, ps, st) != 0)
        return -1;
    size_t n = strlen(o->file);
    int has_training = 0;
    for (int i = 0; i < o->ndefines; i++)
        has_training |= strcmp(o->defines[i].name, "training") == 0;
    /* a program without `param training` (the VAE) has no training step */
    if ((n > 4 && strcmp(o->file + n - 4, ".xml") == 0) || has_training || o->ndefines >= CLI_MAX_DEFINES ||
        !edm_program_param(prog, "training"))
        return 0;
    cli_opts t = *o;
    t.defines[t.ndefines].name = "training";
    t.defines[t.ndefines++].value = "true";
    edm_sources *src = edm_sources_new();
    edm_program train;
    int rc = src ? cli_load(&t, src, &train) : edm_nomem(st);
    if (rc > 0)
        rc = edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "%s does not compile with training=true", o->file);
    if (rc == 0)
        rc = summarize(train.graph, 1, ps, st);
    if (src) {
        edm_program_free(&train);
        edm_sources_free(src);
    }
    return rc;
}

static int print_json(const cli_opts *o, const edm_program *prog, const edm_stats *s, const plan_summary *ps)
{
    json_object *root = json_object_new_object();
    json_object *ops = json_object_new_object();
    json_object *cfg = json_object_new_object();
    if (!root || !ops || !cfg) {
        json_object_put(root);
        json_object_put(ops);
        json_object_put(cfg);
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    int bad = 0;
    bad |= json_object_object_add(root, "model", json_object_new_string(o->file));
    bad |= json_object_object_add(root, "params", json_object_new_int64(s->params));
    bad |= json_object_object_add(root, "param_tensors", json_object_new_int64(s->param_tensors));
    bad |= json_object_object_add(root, "buffers", json_object_new_int64(s->buffers));
    /* "gmacs": one forward pass at batch 1, weight normalization included, as
     * the reference recomputes it on every call (the paper's convention) */
    bad |= json_object_object_add(root, "gmacs", json_object_new_double((s->macs_per_sample + s->macs_per_step) / 1e9));
    bad |= json_object_object_add(root, "gmacs_per_sample", json_object_new_double(s->macs_per_sample / 1e9));
    bad |= json_object_object_add(root, "gmacs_weight_prep", json_object_new_double(s->macs_per_step / 1e9));
    bad |= json_object_object_add(root, "act_bytes_per_sample", json_object_new_double(s->act_bytes_per_sample));
    bad |= json_object_object_add(root, "peak_act_bytes_per_sample",
                                  json_object_new_double(s->peak_act_bytes_per_sample));
    bad |= json_object_object_add(root, "nodes", json_object_new_int64(s->nodes));
    char fuse[64];
    bad |= json_object_object_add(root, "fuse", json_object_new_string(edm_fuse_str(ps->fuse, fuse, sizeof fuse)));
    bad |= json_object_object_add(root, "kernels_forward", json_object_new_int(ps->kernels_forward));
    bad |= json_object_object_add(root, "kernels_train", json_object_new_int(ps->kernels_train));
    bad |= json_object_object_add(root, "planned_act_bytes_per_sample_forward", json_object_new_double(ps->bytes_forward));
    bad |= json_object_object_add(root, "planned_act_bytes_per_sample_train", json_object_new_double(ps->bytes_train));
    if (ps->cuda) { /* the CUDA executor's memory at --batch and --precision */
        json_object *cu = json_object_new_object();
        bad |= !cu;
        bad |= json_object_object_add(cu, "batch", json_object_new_int64(ps->co.batch));
        bad |= json_object_object_add(cu, "storage", json_object_new_string(edm_dtype_name(ps->co.storage)));
        bad |= json_object_object_add(cu, "arena_bytes_forward", json_object_new_double(ps->arena_forward));
        bad |= json_object_object_add(cu, "arena_bytes_train", json_object_new_double(ps->arena_train));
        bad |= json_object_object_add(cu, "leaf_bytes_forward", json_object_new_double(ps->leaf_forward));
        bad |= json_object_object_add(cu, "leaf_bytes_train", json_object_new_double(ps->leaf_train));
        /* Adam's m and v; the f32 accumulators only for --batch-gpu passes or several ranks */
        bad |= json_object_object_add(cu, "optimizer_bytes", json_object_new_double(2 * ps->param_bytes));
        bad |= json_object_object_add(cu, "accumulator_bytes", json_object_new_double(ps->param_bytes));
        bad |= json_object_object_add(cu, "ema_bytes_each", json_object_new_double(ps->param_bytes));
        bad |= json_object_object_add(root, "cuda_memory", cu);
    }
    for (int i = 0; i < s->nrows; i++) {
        json_object *row = json_object_new_object();
        if (!row) {
            bad = 1;
            break;
        }
        bad |= json_object_object_add(row, "nodes", json_object_new_int64(s->rows[i].nodes));
        bad |= json_object_object_add(row, "gmacs", json_object_new_double(s->rows[i].macs_per_sample / 1e9));
        bad |= json_object_object_add(ops, s->rows[i].key, row);
    }
    bad |= json_object_object_add(root, "ops", ops);
    for (int i = 0; i < prog->nparams; i++)
        bad |= json_object_object_add(cfg, prog->params[i].name, json_object_new_string(prog->params[i].value));
    bad |= json_object_object_add(root, "config", cfg);
    if (bad) {
        json_object_put(root);
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return 0;
}

/* --device=cuda: what the executor allocates (GiB). */
static void print_cuda_memory(const plan_summary *ps)
{
    const double gib = 1024.0 * 1024 * 1024;
    printf("  CUDA memory     batch %lld, %s storage: forward %.2f GiB arena + %.2f GiB parameters and inputs",
           (long long)ps->co.batch, edm_dtype_name(ps->co.storage), ps->arena_forward / gib, ps->leaf_forward / gib);
    if (ps->arena_train >= 0)
        printf(";\n                  training step %.2f GiB arena + %.2f GiB parameters and inputs + %.2f GiB "
               "optimizer state + %.2f GiB per EMA\n                  (+ %.2f GiB of gradient accumulators with "
               "--batch-gpu passes or several ranks)",
               ps->arena_train / gib, ps->leaf_train / gib, 2 * ps->param_bytes / gib, ps->param_bytes / gib,
               ps->param_bytes / gib);
    printf("\n");
}

static void print_table(const char *title, const edm_stat_row *rows, int n, double total)
{
    printf("\n  %-16s %7s %14s %7s %14s\n", title, "nodes", "GMACs/sample", "share", "act MiB/sample");
    for (int i = 0; i < n; i++) {
        const edm_stat_row *r = &rows[i];
        printf("  %-16s %7lld %14.4f %6.2f%% %14.3f\n", r->key, (long long)r->nodes, r->macs_per_sample / 1e9,
               total > 0 ? 100 * r->macs_per_sample / total : 0.0, r->act_bytes_per_sample / (1 << 20));
    }
}

static int do_info(const cli_opts *o, const edm_program *prog)
{
    if (o->params) {
        print_params(prog->graph);
        return 0;
    }
    edm_stats s;
    edm_status st;
    edm_status_init(&st);
    if (edm_stats_compute(prog->graph, &s, &st) != 0) {
        edm_diag_print(NULL, &st, stderr);
        return 1;
    }
    plan_summary ps = {0};
    edm_device dev = EDM_DEVICE_CPU;
    if (o->device && edm_device_from_name(o->device, &dev) != 0) {
        fprintf(stderr, "edmc info: --device=%s: expected cpu or cuda\n", o->device);
        edm_stats_free(&s);
        return 2;
    }
    if (dev == EDM_DEVICE_CUDA) { /* as on an sm_80+ device */
        ps.cuda = 1;
        ps.co = (edm_cuda_options){.batch = o->batch, .storage = EDM_F16, .tensor_cores = 1};
        if (cuda_storage("info", o->precision, &ps.co.storage) != 0) {
            edm_stats_free(&s);
            return 2;
        }
    }
    if (plan_summaries(o, prog, &ps, &st) != 0) {
        edm_diag_print(NULL, &st, stderr);
        edm_stats_free(&s);
        return cli_exit_code(&st);
    }
    int rc = 0;
    if (o->json) {
        rc = print_json(o, prog, &s, &ps);
    } else {
        char p[32];
        print_commas(s.params, p, sizeof p);
        printf("%s\n", o->file);
        printf("  parameters      %s learned (%lld tensors), %lld buffer elements\n", p,
               (long long)s.param_tensors, (long long)s.buffers);
        printf("  multiply-adds   %.3f G per forward at batch 1 (docs/edm2.md §2 convention):\n"
               "                  %.3f G per sample + %.3f G of weight normalization per call\n",
               (s.macs_per_sample + s.macs_per_step) / 1e9, s.macs_per_sample / 1e9, s.macs_per_step / 1e9);
        printf("  activations     %.2f MiB per sample in all, %.2f MiB per sample live at the peak (fp32)\n",
               s.act_bytes_per_sample / (1 << 20), s.peak_act_bytes_per_sample / (1 << 20));
        printf("  graph           %lld nodes\n", (long long)s.nodes);
        char fuse[64];
        printf("  kernels         %d per forward", ps.kernels_forward);
        if (ps.kernels_train >= 0)
            printf(", %d per training step", ps.kernels_train);
        printf(" (--fuse=%s)\n", edm_fuse_str(ps.fuse, fuse, sizeof fuse));
        printf("  planned memory  %.2f MiB per sample forward", ps.bytes_forward / (1 << 20));
        if (ps.bytes_train >= 0)
            printf(", %.2f MiB training", ps.bytes_train / (1 << 20));
        printf(" (activations live at the peak, fp32)\n");
        if (ps.cuda)
            print_cuda_memory(&ps);
        if (prog->nparams) {
            printf("\n  configuration\n");
            for (int i = 0; i < prog->nparams; i++)
                printf("    %-20s %s\n", prog->params[i].name, prog->params[i].value);
        }
        print_table("op", s.rows, s.nrows, s.macs_per_sample);
        print_table("from", s.origins, s.norigins, s.macs_per_sample);
    }
    edm_stats_free(&s);
    return rc;
}

int cmd_info(int argc, char **argv)
{
    return cli_run(argc, argv, "info", OPT_JSON | OPT_PARAMS | OPT_FUSE | OPT_DEVICE | OPT_BATCH | OPT_PRECISION,
                   do_info);
}

/* --fuse: the kernels of the plan over the rewritten graph, as the CUDA
 * executor makes them. */
static int fused_cuda_source(const edm_graph *g, const edm_cuda_options *co, unsigned fuse, edm_cuda_plan_module *pm,
                             edm_status *st)
{
    edm_plan_options pl = {.fuse = fuse, .training = co->training};
    edm_plan *plan = edm_plan_build(g, &pl, st);
    int rc = plan ? edm_cuda_codegen_plan(plan, co, pm, st) : -1;
    edm_plan_free(plan);
    return rc;
}

/* dump_cuda with its options made */
static int dump_cuda_with(const cli_opts *o, const edm_program *prog, const edm_cuda_options *co_in)
{
    edm_cuda_options co = *co_in;
    edm_status st;
    edm_status_init(&st);
    unsigned fuse = EDM_FUSE_NONE; /* as the CUDA executor's default */
    if (o->fuse && edm_fuse_parse(o->fuse, &fuse, &st) != 0) {
        fprintf(stderr, "edmc dump: %s\n", st.msg);
        return 2;
    }
    if (strcmp(o->mode, "train") != 0 && strcmp(o->mode, "forward") != 0) {
        fprintf(stderr, "edmc dump: --mode=%s: forward or train\n", o->mode);
        return 2;
    }
    co.training = co.optimizer = strcmp(o->mode, "train") == 0;
    /* training: differentiated (the rewrites of --fuse, too) */
    edm_pipeline_options po = {.training = co.training, .fuse = fuse};
    edm_graph *rewritten = NULL;
    if (edm_pipeline_run(prog->graph, &po, fuse == EDM_FUSE_NONE ? "train" : "rewrite", &rewritten, &st) != 0) {
        edm_diag_print(NULL, &st, stderr);
        return 1;
    }
    edm_cuda_module m = {0};
    edm_cuda_plan_module pm = {0};
    const char *source = NULL;
    size_t len = 0;
    if (fuse == EDM_FUSE_NONE) {
        if (edm_cuda_codegen(prog->graph, &co, &m, &st) == 0) {
            source = m.source;
            len = m.len;
        }
    } else if (fused_cuda_source(rewritten ? rewritten : prog->graph, &co, fuse, &pm, &st) == 0) {
        source = pm.source;
        len = pm.len;
    }
    int rc = 0;
    if (!source) {
        edm_diag_print(NULL, &st, stderr);
        rc = 1;
    } else if (o->output) { /* atomically, as every file edmc writes */
        if (edm_write_bytes_atomic(o->output, source, len, &st) != 0) {
            edm_diag_print(NULL, &st, stderr);
            rc = 1;
        }
    } else if (fwrite(source, 1, len, stdout) != len) {
        rc = 1; /* main's check of stdout at exit says so, once */
    }
    edm_cuda_module_free(&m);
    edm_cuda_plan_module_free(&pm);
    edm_graph_free(rewritten);
    return rc;
}

/* --stage=cuda: the generated CUDA C (needs no toolkit); --mode=train adds
 * the backward pass (autodiff), active dropout and the optimizer kernels. */
static int dump_cuda(const cli_opts *o, const edm_program *prog)
{
    /* as on an sm_80+ device: the generated contractions on tensor cores */
    edm_cuda_options co = {.batch = o->batch, .storage = EDM_F16, .gemm_library = 1, .tensor_cores = 1};
    if (cuda_storage("dump", o->precision, &co.storage) != 0)
        return 2;
    edm_status st;
    edm_status_init(&st);
    if (edm_cuda_options_env(&co, &st) != 0) {
        fprintf(stderr, "edmc dump: %s\n", st.msg);
        return 2;
    }
    /* the tiles measured on a device, when $EDMC_TILES names their table (runtime/cuda_tiles_file.h) */
    edm_mma_tiles tiles = {0};
    const char *tiles_file = getenv("EDMC_TILES");
    if (tiles_file && tiles_file[0] && edm_cuda_tiles_load("sm_90", &tiles, &st) != 0) {
        fprintf(stderr, "edmc dump: %s\n", st.msg);
        return 2;
    }
    co.tiles = &tiles;
    int rc = dump_cuda_with(o, prog, &co);
    edm_mma_tiles_free(&tiles);
    return rc;
}

/* Whether the dump wants the training program: --stage=train, or a later
 * stage with --mode=train. */
static int dump_training(const char *stage, const char *mode)
{
    int s = edm_pipeline_stage(stage);
    return s == EDM_STAGE_TRAIN || (s > EDM_STAGE_TRAIN && mode && strcmp(mode, "train") == 0);
}

typedef struct {
    const edm_graph *g;
    const edm_plan *plan; /* --stage=fused */
    const char *format;
    edm_status *st;
} dump_ctx;

/* Writes the graph (or the plan) in its format (an edm_write_body for -o). */
static int dump_body(FILE *fp, void *ctx, char *err, size_t errsize)
{
    const dump_ctx *d = ctx;
    int rc;
    if (d->plan && strcmp(d->format, "xml") == 0)
        rc = edm_plan_write_xml(fp, d->plan, d->st);
    else if (d->plan)
        rc = edm_plan_write_text(fp, d->plan) == 0 ? 0 : edm_fail(d->st, EDM_ERR_IO, EDM_NO_LOC, "error writing the plan");
    else
        rc = strcmp(d->format, "text") == 0  ? edm_ir_write_text(d->g, fp, d->st)
             : strcmp(d->format, "xml") == 0 ? edm_ir_write_xml(d->g, fp, d->st)
                                             : edm_ir_write_dot(d->g, fp, d->st);
    if (rc != 0 && err)
        snprintf(err, errsize, "%s", d->st->msg);
    return rc;
}

static int do_dump(const cli_opts *o, const edm_program *prog)
{
    if (strcmp(o->stage, "cuda") == 0)
        return dump_cuda(o, prog);
    int stage = edm_pipeline_stage(o->stage);
    if (stage < 0) {
        fprintf(stderr, "edmc dump: unknown stage '%s' (ir: the model as written; train: compiled with "
                        "training=true and differentiated; rewrite: after the fusion rules' rewrites; fused: the "
                        "execution plan, kernels and steps; cuda: the generated CUDA C)\n", o->stage);
        return 2;
    }
    if (strcmp(o->format, "text") != 0 && strcmp(o->format, "xml") != 0 && strcmp(o->format, "dot") != 0) {
        fprintf(stderr, "edmc dump: unknown format '%s' (text, xml or dot)\n", o->format);
        return 2;
    }
    if (stage == EDM_STAGE_FUSED && strcmp(o->format, "dot") == 0) {
        fprintf(stderr, "edmc dump: --stage=fused is written as text or xml\n");
        return 2;
    }
    edm_pipeline_options po = {.training = dump_training(o->stage, o->mode), .fuse = EDM_FUSE_ALL};
    edm_status st;
    edm_status_init(&st);
    if (o->fuse && edm_fuse_parse(o->fuse, &po.fuse, &st) != 0) {
        fprintf(stderr, "edmc dump: %s\n", st.msg);
        return 2;
    }
    /* the program is ours to extend: cmd_dump compiled it with training=true where it differentiates */
    edm_graph *rewritten = NULL;
    if (edm_pipeline_run(prog->graph, &po, o->stage, &rewritten, &st) != 0) {
        edm_diag_print(NULL, &st, stderr);
        return 1;
    }
    dump_ctx d = {rewritten ? rewritten : prog->graph, NULL, o->format, &st};
    edm_plan *plan = NULL;
    if (stage == EDM_STAGE_FUSED) {
        edm_plan_options pl = {.fuse = po.fuse, .training = po.training};
        d.plan = plan = edm_plan_build(d.g, &pl, &st);
        if (!plan) {
            edm_diag_print(NULL, &st, stderr);
            edm_graph_free(rewritten);
            return 1;
        }
    }
    int rc;
    /* -o: all or nothing (a full disk leaves the previous file as it was) */
    if (o->output) {
        rc = edm_write_atomic(o->output, dump_body, &d, &st);
    } else {
        rc = dump_body(stdout, &d, NULL, 0);
        if (fflush(stdout) != 0 && rc == 0)
            rc = edm_fail(&st, EDM_ERR_IO, EDM_NO_LOC, "error writing the output");
    }
    edm_plan_free(plan);
    edm_graph_free(rewritten);
    if (rc == -1)
        edm_diag_print(NULL, &st, stderr);
    return rc == 0 ? 0 : 1;
}

/* --stage=train dumps the training program: the model compiled with
 * training=true (unless -D says otherwise), then differentiated. */
int cmd_dump(int argc, char **argv)
{
    int train = 0, has_define = 0;
    const char *stage = "", *mode = NULL;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--stage=", 8) == 0)
            stage = argv[i] + 8;
        else if (strcmp(argv[i], "--stage") == 0 && i + 1 < argc)
            stage = argv[i + 1];
        if (strncmp(argv[i], "--mode=", 7) == 0)
            mode = argv[i] + 7;
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            mode = argv[i + 1];
        has_define |= strncmp(argv[i], "-Dtraining=", 11) == 0 ||
                      (strcmp(argv[i], "-D") == 0 && i + 1 < argc && strncmp(argv[i + 1], "training=", 9) == 0);
    }
    train = dump_training(stage, mode);
    if (!train || has_define)
        return cli_run(argc, argv, "dump", OPT_STAGE | OPT_FORMAT | OPT_OUTPUT | OPT_BATCH | OPT_PRECISION | OPT_MODE | OPT_FUSE, do_dump);
    char **args = malloc(sizeof(char *) * (size_t)(argc + 2));
    if (!args) {
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    char define[] = "-Dtraining=true";
    memcpy(args, argv, sizeof(char *) * (size_t)argc);
    args[argc] = define;
    args[argc + 1] = NULL;
    int rc = cli_run(argc + 1, args, "dump", OPT_STAGE | OPT_FORMAT | OPT_OUTPUT | OPT_BATCH | OPT_PRECISION | OPT_MODE | OPT_FUSE, do_dump);
    free(args);
    return rc;
}
