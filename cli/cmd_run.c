/* edmc init | forward: fresh weights, and one run of a model on a backend
 * (CPU or CUDA).  bench is cli/cmd_bench.c. */
#include "config.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/backend.h"
#include "runtime/files.h"
#include "runtime/interface_names.h"
#include "runtime/package.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "runtime/meta_keys.h"

/* The model's configuration as safetensors metadata: the .edm file and every
 * parameter's final value, so a later command can rebuild the same graph. */
static int add_config_metadata(edm_st_writer *w, const cli_opts *o, const edm_program *prog, edm_status *st)
{
    json_object *cfg = json_object_new_object();
    if (!cfg)
        return edm_nomem(st);
    for (int i = 0; i < prog->nparams; i++)
        if (json_object_object_add(cfg, prog->params[i].name, json_object_new_string(prog->params[i].value)) != 0) {
            json_object_put(cfg);
            return edm_nomem(st);
        }
    /* an absolute path, so generate and phema find the model from any folder */
    char *abs = edm_absolute_path(o->file);
    int rc = edm_st_writer_meta(w, EDM_META_MODEL, abs ? abs : o->file, st);
    free(abs);
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_CONFIG, json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN), st);
    json_object_put(cfg);
    return rc;
}

static int do_init(const cli_opts *o, const edm_program *prog)
{
    edm_status st;
    edm_status_init(&st);
    if (!o->output) {
        fprintf(stderr, "edmc init: give the weights file with -o FILE.safetensors\n");
        return 2;
    }
    edm_st_writer *w = edm_st_writer_new();
    if (!w) {
        fprintf(stderr, "edmc: out of memory\n");
        return 1;
    }
    int rc = edm_weights_init(prog->graph, o->seed, w, &st);
    if (rc == 0)
        rc = add_config_metadata(w, o, prog, &st);
    if (rc == 0)
        rc = edm_st_writer_write(w, o->output, &st);
    edm_st_writer_free(w);
    if (rc != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    int n = 0;
    for (int i = 0; i < edm_graph_count(prog->graph); i++) {
        edm_op op = edm_graph_node(prog->graph, i)->op;
        n += op == EDM_OP_PARAM || op == EDM_OP_BUFFER;
    }
    printf("%s: %d tensors drawn with seed %llu\n", o->output, n, (unsigned long long)o->seed);
    return 0;
}

/* Reads every input of the graph from the file, checks shapes against the
 * model, finds the batch size and refuses non-finite values (and σ <= 0). */
static int load_inputs(const edm_graph *g, const edm_st_file *in, edm_backend **x, const edm_backend_options *opt,
                       edm_status *st)
{
    int64_t batch = -1;
    const char *first = NULL;
    char want[128], got[128];
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_INPUT)
            continue;
        const edm_st_entry *e = edm_st_find(in, n->name);
        edm_shape_str(&n->shape, want, sizeof want);
        if (!e)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '%s' %s (the model's input)",
                            edm_st_path(in), n->name, want);
        edm_shape es = {.rank = e->rank};
        for (int k = 0; k < e->rank; k++)
            es.dim[k] = e->dim[k];
        edm_shape_str(&es, got, sizeof got);
        int ok = e->rank == n->shape.rank && e->rank > 0;
        for (int k = 1; ok && k < e->rank; k++)
            ok = e->dim[k] == n->shape.dim[k];
        if (!ok)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' is %s, the model wants %s", edm_st_path(in),
                            n->name, got, want);
        if (batch < 0) {
            batch = e->dim[0];
            first = n->name;
        } else if (e->dim[0] != batch) {
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' has %lld samples but '%s' has %lld",
                            edm_st_path(in), n->name, (long long)e->dim[0], first, (long long)batch);
        }
    }
    /* other tensors (outputs of an earlier run, say) are ignored, but labels
     * given to an unconditional model are a mistake worth naming */
    if (edm_st_find(in, EDM_IN_CLASS_LABELS)) {
        int conditional = 0;
        for (int i = 0; i < edm_graph_count(g); i++) {
            const edm_node *n = edm_graph_node(g, i);
            conditional |= n->op == EDM_OP_INPUT && strcmp(n->name, EDM_IN_CLASS_LABELS) == 0;
        }
        if (!conditional)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: has " EDM_IN_CLASS_LABELS ", but the model is unconditional (label_dim = 0)",
                            edm_st_path(in));
    }
    if (batch < 1)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: the inputs hold no samples", edm_st_path(in));
    *x = edm_backend_new(g, batch, opt, st);
    if (!*x)
        return -1;
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_INPUT)
            continue;
        const edm_st_entry *e = edm_st_find(in, n->name);
        float *data = malloc(sizeof(float) * (size_t)e->numel);
        if (!data)
            return edm_nomem(st);
        int rc = edm_st_read_f32(in, e, data, e->numel, st);
        for (int64_t k = 0; rc == 0 && k < e->numel; k++) {
            if (!isfinite(data[k]))
                rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' element %lld is %g (not finite)",
                              edm_st_path(in), n->name, (long long)k, (double)data[k]);
            else if (strcmp(n->name, EDM_IN_SIGMA) == 0 && !(data[k] > 0))
                rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: sigma[%lld] = %g: noise levels must be > 0",
                              edm_st_path(in), (long long)k, (double)data[k]);
        }
        if (rc == 0)
            rc = edm_backend_set_f32(*x, n->name, data, e->numel, st);
        free(data);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* A non-finite output is an error naming its first bad element, unless the
 * user asked for it (--allow-nonfinite): the inputs and weights were finite,
 * so the model itself overflowed. */
static int write_outputs(const edm_graph *g, edm_backend *x, const char *path, int allow_nonfinite, edm_status *st)
{
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int rc = 0;
    for (int i = 0; i < edm_graph_count(g) && rc == 0; i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_OUTPUT)
            continue;
        int64_t count = edm_backend_numel(x, i);
        float *data = malloc(sizeof(float) * (size_t)count);
        if (!data) {
            rc = edm_nomem(st);
            break;
        }
        int64_t dim[EDM_MAX_RANK];
        for (int k = 0; k < n->shape.rank; k++)
            dim[k] = n->shape.dim[k] == EDM_DIM_BATCH ? count / edm_shape_numel_per_sample(&n->shape) : n->shape.dim[k];
        rc = edm_backend_get_f32(x, i, data, count, st);
        if (rc == 0 && !allow_nonfinite && edm_check_finite(data, count, "output", n->name, st) != 0) {
            edm_note_add(st, EDM_NO_LOC, "the inputs and weights are finite: the model overflowed (--allow-nonfinite "
                                         "writes the result anyway)");
            rc = -1;
        }
        if (rc == 0)
            rc = edm_st_writer_add_f32(w, n->name, EDM_F32, n->shape.rank, dim, data, st);
        free(data);
    }
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    return rc;
}

static int do_forward(const cli_opts *o, const edm_program *prog)
{
    edm_backend_options opt;
    int rc = cli_backend_of("forward", o, &opt);
    if (rc != 0)
        return rc;
    if (!o->weights || !o->input || !o->output) {
        fprintf(stderr, "edmc forward: needs --weights=W.safetensors --input=IN.safetensors --output=OUT.safetensors\n");
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    edm_backend *x = NULL;
    edm_st_file *w = edm_weights_open(o->weights, &st);
    edm_st_file *in = w ? edm_st_open(o->input, &st) : NULL;
    rc = in ? 0 : -1;
    if (rc == 0 && o->pkg)
        rc = edm_package_check_weights(o->pkg, w, &st);
    if (rc == 0)
        rc = load_inputs(prog->graph, in, &x, &opt, &st);
    if (rc == 0)
        rc = edm_weights_load(x, prog->graph, w, &st);
    if (rc == 0 && !o->allow_nonfinite)
        rc = edm_weights_check_finite(prog->graph, w, &st);
    if (rc == 0)
        rc = edm_backend_run(x, &st);
    if (rc == 0)
        rc = write_outputs(prog->graph, x, o->output, o->allow_nonfinite, &st);
    if (rc == 0 && opt.device == EDM_DEVICE_CUDA)
        fprintf(stderr, "edmc forward: ran on %s\n", edm_backend_describe(x));
    edm_backend_free(x);
    edm_st_close(in);
    edm_st_close(w);
    if (rc != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    return 0;
}


int cmd_init(int argc, char **argv) { return cli_run(argc, argv, "init", OPT_SEED | OPT_OUTPUT, do_init); }

int cmd_forward(int argc, char **argv)
{
    return cli_run(argc, argv, "forward",
                   OPT_WEIGHTS | OPT_INPUT | OPT_OUTPUT | OPT_THREADS | OPT_DEVICE | OPT_PRECISION | OPT_CUDA |
                       OPT_NONFINITE | OPT_PACKAGE,
                   do_forward);
}


