/* edmc phema: post-hoc EMA reconstruction (docs/edm2.md).  Reads the
 * power-function EMA snapshots network-snapshot-<kimg>-<σ_rel>.safetensors of
 * a training run, solves for the coefficients that best give each wanted
 * σ_rel, and writes phema-<kimg>-<σ_rel>.safetensors = Σ_i X[i,j]·snapshot_i
 * (learned parameters; buffers copied from the latest snapshot).  With
 * --eval=loss it then measures each reconstruction's validation loss on one
 * fixed evaluation set (runtime/evaluate.h) and can plot the curve. */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "compiler/passes/passes.h"
#include "runtime/evaluate.h"
#include "runtime/files.h"
#include "runtime/model_source.h"
#include "runtime/ref_import.h"
#include "runtime/image.h"
#include "runtime/phema.h"
#include "runtime/phema_snapshots.h"
#include "runtime/safetensors.h"
#include "runtime/train_run.h"
#include "runtime/weights.h"
#include "runtime/meta_keys.h"

#define MAX_OUT 1000

typedef struct {
    edm_phema_snapshots set;
    double out_std[MAX_OUT];
    int m;
    char **buffers; /* names of the tensors copied, not averaged */
    int nbuffers;
    const char *buffers_from;
} job;

/* The options of --eval=loss. */
typedef struct {
    const char *data, *plot;
    int64_t images;
    int has_data, has_images;
} eval_args;

/* Every option: the shared ones (base) first, for the shared option table. */
typedef struct {
    cli_opts base;
    eval_args ea;
    const char *inprefix, *outprefix; /* network-snapshot, phema */
    int skip;                         /* keep results that exist already */
} phema_opts;

/* ------------------------------------------------------------ --outstd */

static int add_std(job *j, double v, const char *item, edm_status *st)
{
    double g;
    if (j->m == MAX_OUT)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outstd: more than %d values", MAX_OUT);
    if (edm_phema_std_to_exp(v, &g, st) != 0) {
        edm_status_prefix(st, "--outstd=%s", item);
        return -1;
    }
    j->out_std[j->m++] = v;
    return 0;
}

/* A comma-separated list of σ_rel values and ranges lo:hi:step (hi included
 * when the steps land on it). */
static int parse_outstd(job *j, const char *list, edm_status *st)
{
    const char *p = list;
    for (;;) {
        size_t len = strcspn(p, ",");
        char item[64];
        snprintf(item, sizeof item, "%.*s", (int)(len < 63 ? len : 63), p);
        const char *c1 = memchr(p, ':', len);
        if (len == 3 && strncmp(p, "...", 3) == 0) {
            /* a,b,...,z: the series a, b, b + (b - a), ... up to z */
            double z, a = j->m >= 2 ? j->out_std[j->m - 2] : 0, step = j->m >= 2 ? j->out_std[j->m - 1] - a : 0;
            p += len + (p[len] ? 1 : 0);
            len = strcspn(p, ",");
            if (j->m < 2 || edm_phema_parse_number(p, len, &z) != 0 || !(step > 0) || z < j->out_std[j->m - 1])
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                                "--outstd: '...' needs two rising values before it and the last after it, as in "
                                "0.010,0.015,...,0.250");
            for (int k = 2; a + k * step <= z + step * 1e-6; k++) {
                char one[32];
                snprintf(one, sizeof one, "%g", a + k * step);
                if (add_std(j, a + k * step, one, st) != 0)
                    return -1;
            }
        } else if (!c1) {
            double v;
            if (edm_phema_parse_number(p, len, &v) != 0)
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outstd: '%s' is not a number", item);
            if (add_std(j, v, item, st) != 0)
                return -1;
        } else {
            const char *c2 = memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - p));
            double lo, hi, step;
            if (!c2 || edm_phema_parse_number(p, (size_t)(c1 - p), &lo) != 0 ||
                edm_phema_parse_number(c1 + 1, (size_t)(c2 - c1 - 1), &hi) != 0 ||
                edm_phema_parse_number(c2 + 1, len - (size_t)(c2 + 1 - p), &step) != 0)
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outstd: '%s' is not a range lo:hi:step", item);
            if (!(step > 0) || !(hi >= lo))
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                                "--outstd: range '%s' needs lo <= hi and a step > 0", item);
            double count = floor((hi - lo) / step + 1e-9) + 1;
            if (count > MAX_OUT)
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outstd: range '%s' has more than %d values", item,
                                MAX_OUT);
            for (int k = 0; k < (int)count; k++) {
                double v = lo + k * step;
                char one[32];
                snprintf(one, sizeof one, "%g", v);
                if (add_std(j, v, one, st) != 0)
                    return -1;
            }
        }
        if (!p[len])
            break;
        p += len + 1;
    }
    if (j->m == 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outstd: no values");
    /* two values that give the same file name */
    for (int a = 0; a < j->m; a++)
        for (int b = a + 1; b < j->m; b++) {
            char x[32], y[32];
            snprintf(x, sizeof x, "%.3f", j->out_std[a]);
            snprintf(y, sizeof y, "%.3f", j->out_std[b]);
            if (strcmp(x, y) == 0)
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                                "--outstd: %g and %g would both be written as sigma_rel %s", j->out_std[a],
                                j->out_std[b], x);
        }
    return 0;
}

/* ------------------------------------------------------------ buffers */

static int add_buffer(job *j, const char *name, edm_status *st)
{
    char **b = realloc(j->buffers, sizeof *b * (size_t)(j->nbuffers + 1));
    if (!b)
        return edm_nomem(st);
    j->buffers = b;
    b[j->nbuffers] = strdup(name);
    if (!b[j->nbuffers])
        return edm_nomem(st);
    j->nbuffers++;
    return 0;
}

/* The model the snapshots were written from: FILE.edm when given, else their
 * edmc.model when it can be read; NULL when neither. */
static const char *model_path(const cli_opts *o, const edm_st_file *latest)
{
    const char *model = o->file ? o->file : edm_st_metadata(latest, EDM_META_MODEL);
    if (!o->file && model && edm_st_metadata(latest, EDM_META_SOURCE))
        return model; /* they carry its source: compile_model reads that */
    if (!o->file && model && access(model, R_OK) != 0)
        model = NULL;
    if (!o->file && model) { /* one the metadata names outside the model folders is not read */
        edm_model_dirs md;
        edm_model_dirs_get(&md);
        edm_sources *probe = edm_sources_new();
        edm_status ignored;
        edm_status_init(&ignored);
        if (!probe || edm_sources_restrict(probe, md.dir, md.n, &ignored) != 0 || !edm_sources_allows(probe, model))
            model = NULL;
        edm_sources_free(probe);
    }
    return model;
}

/* Snapshots are data: a model their metadata names is read only inside the
 * model folders, and with their edmc.config no import may leave those (and
 * the folder of a FILE.edm the user gave). */
static int restrict_sources(const cli_opts *o, const char *model, edm_sources *src, edm_status *st)
{
    edm_model_dirs md;
    edm_model_dirs_get(&md);
    char own[4096];
    if (o->file) {
        edm_folder_of(o->file, own, sizeof own);
        md.dir[md.n++] = own;
    }
    if (edm_sources_restrict(src, md.dir, md.n, st) != 0)
        return -1;
    if (!o->file && !edm_sources_allows(src, model))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "the snapshots name their model '%s' (metadata 'edmc.model'), which is outside the model "
                        "folders ($EDMC_MODELS, ./models, models/ beside edmc): give the .edm file if you trust it",
                        model);
    return 0;
}

/* Compiles model with the snapshots' edmc.config, then -D on top; training
 * set forces training=true (the training program, for the loss). */
static int compile_model(const cli_opts *o, const edm_st_file *latest, const char *model, int training,
                         edm_sources *src, edm_program *prog, const char *why, edm_status *st)
{
    edm_define defs[CLI_MAX_DEFINES * 2 + 1];
    int ndefs = 0;
    const char *cfg = edm_st_metadata(latest, EDM_META_CONFIG);
    json_object *jc = cfg ? json_tokener_parse(cfg) : NULL;
    if (jc && json_object_is_type(jc, json_type_object)) {
        json_object_object_foreach(jc, key, val)
        {
            int overridden = training && strcmp(key, "training") == 0;
            for (int i = 0; i < o->ndefines; i++)
                overridden |= strcmp(o->defines[i].name, key) == 0;
            if (!overridden && ndefs < CLI_MAX_DEFINES && json_object_is_type(val, json_type_string)) {
                defs[ndefs].name = key;
                defs[ndefs++].value = json_object_get_string(val);
            }
        }
    }
    for (int i = 0; i < o->ndefines; i++)
        if (!training || strcmp(o->defines[i].name, "training") != 0)
            defs[ndefs++] = o->defines[i];
    if (training) {
        defs[ndefs].name = "training";
        defs[ndefs++].value = "true";
    }
    edm_diags *d = malloc(sizeof *d);
    const char *embedded = o->file ? NULL : edm_st_metadata(latest, EDM_META_SOURCE);
    int at = embedded ? edm_model_source_add(src, embedded, edm_st_path(latest), st) : 0;
    if (embedded && at >= 0)
        model = edm_sources_get(src, at)->path;
    int rc = 0;
    if (!d) {
        rc = edm_nomem(st);
    } else if (at < 0 || (!embedded && restrict_sources(o, model, src, st) != 0)) {
        rc = -1;
    } else if (edm_compile_file(src, model, defs, ndefs, prog, d) != 0) {
        for (int i = 0; i < d->count; i++)
            cli_report(src, &d->items[i]);
        rc = edm_fail(st, d->count ? d->items[0].code : EDM_ERR_SEMANTIC, EDM_NO_LOC, "cannot compile %s %s", model,
                      why);
    }
    free(d);
    json_object_put(jc);
    return rc;
}

/* Which tensors are buffers: from the model (FILE.edm given, or the
 * edmc.model the snapshots were written from, with their edmc.config), else
 * by the reference's names (the Fourier embeddings' freqs and phases). */
static int find_buffers(job *j, const cli_opts *o, const edm_st_file *latest, edm_status *st)
{
    const char *model = model_path(o, latest);
    if (!model) {
        j->buffers_from = NULL; /* by name */
        for (int k = 0; k < edm_st_count(latest); k++) {
            const char *name = edm_st_entry_at(latest, k)->name;
            size_t n = strlen(name);
            if ((n > 6 && strcmp(name + n - 6, ".freqs") == 0) || (n > 7 && strcmp(name + n - 7, ".phases") == 0))
                if (add_buffer(j, name, st) != 0)
                    return -1;
        }
        return 0;
    }
    j->buffers_from = model;
    edm_sources *src = edm_sources_new();
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    int rc = src ? compile_model(o, latest, model, 0, src, &prog, "to tell parameters from buffers", st)
                 : edm_nomem(st);
    for (int i = 0; rc == 0 && i < edm_graph_count(prog.graph); i++) {
        const edm_node *n = edm_graph_node(prog.graph, i);
        if (n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        const edm_st_entry *e = edm_st_find(latest, n->name);
        char want[128], got[128];
        if (!e) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '%s' (a %s of %s)", edm_st_path(latest),
                          n->name, n->op == EDM_OP_PARAM ? "parameter" : "buffer", model);
            break;
        }
        edm_shape_str(&n->shape, want, sizeof want);
        edm_st_entry_shape_str(e, got, sizeof got);
        if (!edm_weights_shape_fits(e->rank, e->dim, &n->shape))
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' is %s, %s wants %s", edm_st_path(latest), n->name,
                          got, model, want);
        else if (n->op == EDM_OP_BUFFER)
            rc = add_buffer(j, n->name, st);
    }
    edm_program_free(&prog);
    edm_sources_free(src);
    return rc;
}

/* ------------------------------------------------------------ output */

/* Profile col of the solution x (n×m) as a reconstruction; coef: n doubles. */
static edm_phema_output profile(const job *j, const double *x, int col, int64_t kimg, double nimg, double *coef)
{
    for (int i = 0; i < j->set.n; i++)
        coef[i] = x[i * j->m + col];
    return (edm_phema_output){.coef = coef, .buffers = (const char *const *)j->buffers, .nbuffers = j->nbuffers,
                              .kimg = kimg, .std = j->out_std[col], .nimg = nimg};
}

static void print_table(const job *j, const double *x, double out_nimg)
{
    printf("%d snapshots -> %d profiles at nimg %.0f\n", j->set.n, j->m, out_nimg);
    printf("%-44s %8s %10s", "snapshot", "kimg", "sigma_rel");
    for (int c = 0; c < j->m; c++)
        printf(" %15.3f", j->out_std[c]);
    printf("\n");
    for (int i = 0; i < j->set.n; i++) {
        printf("%-44s %8lld %10.5f", j->set.s[i].name, (long long)j->set.s[i].kimg, j->set.s[i].std);
        for (int c = 0; c < j->m; c++)
            printf(" %15.8g", x[i * j->m + c]);
        printf("\n");
    }
}

/* --sweep: one line per σ_rel, with how hard the reconstruction leans on
 * cancellation (Σ|X| is 1 for a plain average). */
static void print_sweep(const job *j, const double *x, double out_nimg)
{
    printf("%d snapshots -> %d profiles at nimg %.0f\n", j->set.n, j->m, out_nimg);
    printf("%10s %12s %12s  %s\n", "sigma_rel", "gamma", "sum|coef|", "largest coefficient");
    for (int c = 0; c < j->m; c++) {
        double g = 0, l1 = 0;
        int best = 0;
        edm_status ignored;
        edm_status_init(&ignored);
        (void)edm_phema_std_to_exp(j->out_std[c], &g, &ignored);
        for (int i = 0; i < j->set.n; i++) {
            l1 += fabs(x[i * j->m + c]);
            if (fabs(x[i * j->m + c]) > fabs(x[best * j->m + c]))
                best = i;
        }
        printf("%10.4f %12.4f %12.4f  %.6f on %s\n", j->out_std[c], g, l1, x[best * j->m + c], j->set.s[best].name);
    }
}

/* ------------------------------------------------------------ --eval=loss */

/* Sets every parameter and buffer of the evaluation graph g to profile col. */
static int set_profile(const job *j, const double *x, int col, const edm_graph *g, edm_loss_eval *ev,
                       edm_status *st)
{
    const edm_phema_snapshot *latest = &j->set.s[j->set.n - 1];
    double *coef = malloc(sizeof(double) * (size_t)j->set.n);
    int rc = coef ? 0 : edm_nomem(st);
    for (int i = 0; rc == 0 && i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        const edm_st_entry *e = edm_st_find(latest->f, n->name);
        char want[128], got[128] = "";
        edm_shape_str(&n->shape, want, sizeof want);
        if (e)
            edm_st_entry_shape_str(e, got, sizeof got);
        if (!e || strcmp(want, got) != 0) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: no tensor '%s' %s (of the training program)",
                          latest->path, n->name, want);
            break;
        }
        double *acc = malloc(sizeof(double) * (size_t)(e->numel ? e->numel : 1));
        double *tmp = malloc(sizeof(double) * (size_t)(e->numel ? e->numel : 1));
        if (!acc || !tmp)
            rc = edm_nomem(st);
        edm_phema_output out = profile(j, x, col, 0, 0, coef);
        if (rc == 0)
            rc = edm_phema_tensor(&j->set, &out, e, acc, tmp, st);
        if (rc == 0)
            rc = edm_loss_eval_set_f64(ev, n->name, acc, e->numel, st);
        free(acc);
        free(tmp);
    }
    free(coef);
    return rc;
}

/* The validation loss of every profile on one evaluation set (the same
 * images, σ and noise for all), printed as it comes, then the minimum and
 * the plot. */
static int eval_loss(const cli_opts *o, const eval_args *ea, const job *j, const double *x, edm_status *st)
{
    const edm_phema_snapshot *latest = &j->set.s[j->set.n - 1];
    const char *model = model_path(o, latest->f);
    if (!model)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--eval=loss needs the model: give FILE.edm (the snapshots name %s)",
                        edm_st_metadata(latest->f, EDM_META_MODEL) ? edm_st_metadata(latest->f, EDM_META_MODEL)
                                                                  : "none in edmc.model");
    if (ea->plot) { /* fail before the evaluation, not after */
        const char *slash = strrchr(ea->plot, '/');
        char dir[4096];
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - ea->plot) + 1 : 1, slash ? ea->plot : ".");
        if (access(dir, W_OK) != 0)
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "--plot=%s: cannot write into %s: %s", ea->plot, dir,
                            strerror(errno));
    }
    edm_sources *src = edm_sources_new();
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    edm_loss_eval *ev = NULL;
    double *loss = malloc(sizeof(double) * (size_t)j->m);
    int rc = src && loss ? compile_model(o, latest->f, model, 1, src, &prog, "with training=true for --eval=loss", st)
                         : edm_nomem(st);
    if (rc == 0)
        rc = edm_pass_verify(prog.graph, st);
    edm_eval_opts eo = {.data = ea->data ? ea->data : "builtin:shapes",
                        .images = ea->has_images ? ea->images : EDM_EVAL_DEFAULT_IMAGES,
                        .batch = 0,
                        .seed = EDM_EVAL_SEED,
                        .threads = o->threads};
    if (rc == 0) {
        ev = edm_loss_eval_new(prog.graph, &eo, st);
        if (!ev) {
            edm_status_prefix(st, "--eval=loss");
            rc = -1;
        }
    }
    if (rc == 0) {
        printf("validation loss on %lld images of %s (evaluation seed %llu; the same sigma and noise for every "
               "sigma_rel)\n",
               (long long)eo.images, eo.data, (unsigned long long)eo.seed);
        printf("%10s %14s\n", "sigma_rel", "loss");
        fflush(stdout);
    }
    int best = -1;
    for (int c = 0; rc == 0 && c < j->m; c++) {
        rc = set_profile(j, x, c, prog.graph, ev, st);
        if (rc == 0)
            rc = edm_loss_eval_run(ev, &loss[c], st);
        if (rc != 0)
            break;
        printf("%10.4f %14.6f\n", j->out_std[c], loss[c]);
        fflush(stdout);
        if (isfinite(loss[c]) && (best < 0 || loss[c] < loss[best]))
            best = c;
    }
    if (rc == 0) {
        if (best >= 0)
            printf("minimum: sigma_rel %.4f, loss %.6f\n", j->out_std[best], loss[best]);
        else
            printf("minimum: none (every loss is non-finite)\n");
    }
    if (rc == 0 && ea->plot) {
        rc = edm_image_plot(ea->plot, j->out_std, loss, j->m, best, "sigma_rel", "loss", st);
        if (rc == 0)
            printf("wrote %s\n", ea->plot);
    }
    edm_loss_eval_free(ev);
    free(loss);
    edm_program_free(&prog);
    edm_sources_free(src);
    return rc;
}

static int make_dir(const char *dir, edm_status *st)
{
    struct stat sb;
    if (stat(dir, &sb) == 0)
        return S_ISDIR(sb.st_mode) ? 0
                                   : edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "--outdir=%s exists and is not a folder", dir);
    if (mkdir(dir, 0777) != 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot create --outdir=%s: %s", dir, strerror(errno));
    return 0;
}

static int run_phema(const phema_opts *po, job *j, edm_status *st)
{
    const cli_opts *o = &po->base;
    const eval_args *ea = &po->ea;
    if (parse_outstd(j, o->outstd ? o->outstd : "0.025:0.200:0.025", st) != 0)
        return -1;
    if (edm_phema_snapshots_find(&j->set, o->indir, po->inprefix, o->outkimg, st) != 0)
        return -1;
    const edm_phema_snapshot *latest = &j->set.s[j->set.n - 1];
    if (find_buffers(j, o, latest->f, st) != 0)
        return -1;
    int64_t out_kimg = o->outkimg >= 0 ? o->outkimg : latest->kimg;
    double out_nimg = (double)edm_phema_kimg_to_nimg(out_kimg);
    if (!(out_nimg > 0))
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--outkimg=%lld: a profile must cover some images",
                        (long long)out_kimg);
    double *in_t = malloc(sizeof(double) * (size_t)j->set.n), *in_std = malloc(sizeof(double) * (size_t)j->set.n);
    double *x = malloc(sizeof(double) * (size_t)j->set.n * (size_t)j->m);
    double *coef = malloc(sizeof(double) * (size_t)j->set.n);
    int rc = 0;
    if (!in_t || !in_std || !x || !coef)
        rc = edm_nomem(st);
    for (int i = 0; rc == 0 && i < j->set.n; i++) {
        in_t[i] = j->set.s[i].nimg;
        in_std[i] = j->set.s[i].std;
    }
    if (rc == 0)
        rc = edm_phema_solve(j->set.n, in_t, in_std, j->m, out_nimg, j->out_std, x, st);
    if (rc == 0) {
        if (o->sweep)
            print_sweep(j, x, out_nimg);
        else
            print_table(j, x, out_nimg);
        printf("buffers copied from %s: %d tensors (%s%s)\n", latest->name, j->nbuffers,
               j->buffers_from ? "the buffers of " : "named *.freqs or *.phases",
               j->buffers_from ? j->buffers_from : "");
        fflush(stdout);
        if (o->outdir)
            rc = make_dir(o->outdir, st);
    }
    for (int c = 0; rc == 0 && o->outdir && c < j->m; c++) {
        char name[4200];
        snprintf(name, sizeof name, "%s-%07lld-%.3f.safetensors", po->outprefix, (long long)out_kimg, j->out_std[c]);
        size_t len = strlen(o->outdir) + strlen(name) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = edm_nomem(st);
            break;
        }
        snprintf(path, len, "%s/%s", o->outdir, name);
        if (po->skip && access(path, F_OK) == 0) {
            printf("kept %s (--skip)\n", path);
        } else {
            edm_phema_output out = profile(j, x, c, out_kimg, out_nimg, coef);
            rc = edm_phema_write(&j->set, &out, path, st);
            if (rc == 0)
                printf("wrote %s\n", path);
        }
        free(path);
    }
    if (rc == 0 && o->eval)
        rc = eval_loss(o, ea, j, x, st);
    free(in_t);
    free(in_std);
    free(x);
    free(coef);
    return rc;
}

#define AT(field) .at = offsetof(phema_opts, field)

static const cli_option phema_table[] = {
    {.names = "--data", .kind = CLI_STRING, AT(ea.data), .given = CLI_GIVEN(phema_opts, ea.has_data),
     .arg = "DATASET", .def = "the run's", .help = "--eval=loss: the images to evaluate on"},
    {.names = "--eval-images", .kind = CLI_INT, AT(ea.images), .given = CLI_GIVEN(phema_opts, ea.has_images),
     .lo = 1, .hi = 1000000, .arg = "N", .def = "256", .help = "--eval=loss: images per reconstruction"},
    {.names = "--plot", .kind = CLI_STRING, AT(ea.plot), .arg = "CURVE.png",
     .help = "--eval=loss: the loss against sigma_rel as a picture"},
    {.names = "--inprefix", .kind = CLI_STRING, AT(inprefix), .arg = "NAME", .def = "network-snapshot",
     .help = "the snapshots are NAME-<kimg>-<sigma_rel>.safetensors"},
    {.names = "--outprefix", .kind = CLI_STRING, AT(outprefix), .arg = "NAME", .def = "phema",
     .help = "write NAME-<kimg>-<sigma_rel>.safetensors"},
    {.names = "--skip", .kind = CLI_FLAG, AT(skip), .help = "keep results that exist already"},
};

static int parse_phema(int argc, char **argv, phema_opts *po)
{
    memset(po, 0, sizeof *po);
    cli_opts_defaults(&po->base);
    po->inprefix = "network-snapshot";
    po->outprefix = "phema";
    int rc = cli_parse_own(argc, argv, "phema", phema_table, CLI_COUNT(phema_table),
                           OPT_INDIR | OPT_OUTDIR | OPT_OUTSTD | OPT_OUTKIMG | OPT_SWEEP | OPT_EVAL | OPT_THREADS |
                               OPT_DEFINE,
                           po, &po->base.file);
    if (rc == 0 && (!po->inprefix[0] || strchr(po->inprefix, '/') || !po->outprefix[0] || strchr(po->outprefix, '/'))) {
        fprintf(stderr, "edmc phema: --inprefix and --outprefix are file-name prefixes (not empty, no '/')\n");
        rc = -1;
    }
    return rc;
}

int cmd_phema(int argc, char **argv)
{
    phema_opts po;
    int parsed = parse_phema(argc, argv, &po);
    if (parsed != 0) {
        cli_opts_free(&po.base);
        return parsed > 0 ? 0 : 2;
    }
    const cli_opts *o = &po.base;
    const eval_args *ea = &po.ea;
    int rc = 0;
    if (o->eval && strcmp(o->eval, "loss") != 0) {
        fprintf(stderr, "edmc phema: --eval=%s: the only evaluation is --eval=loss\n", o->eval);
        rc = 2;
    } else if (!o->eval && (ea->has_data || ea->has_images || ea->plot)) {
        fprintf(stderr, "edmc phema: --data, --eval-images and --plot go with --eval=loss\n");
        rc = 2;
    } else if (!o->indir || (!o->outdir && !o->eval) || (!o->outstd && !o->sweep)) {
        fprintf(stderr, "edmc phema: needs --indir=DIR --outstd=S1,S2,... --outdir=DIR (or --sweep for a range; "
                        "--eval=loss in place of --outdir)\n");
        rc = 2;
    }
    if (rc != 0) {
        cli_opts_free(&po.base);
        return rc;
    }
    job *j = calloc(1, sizeof *j);
    edm_status st;
    edm_status_init(&st);
    if (!j) {
        fprintf(stderr, "edmc: out of memory\n");
        cli_opts_free(&po.base);
        return 1;
    }
    if (run_phema(&po, j, &st) != 0) {
        cli_report(NULL, &st);
        rc = cli_exit_code(&st);
    }
    edm_phema_snapshots_free(&j->set);
    for (int i = 0; i < j->nbuffers; i++)
        free(j->buffers[i]);
    free(j->buffers);
    free(j);
    cli_opts_free(&po.base);
    return rc;
}
