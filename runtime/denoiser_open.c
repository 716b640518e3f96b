/* Opening a denoiser from a weights file: its model worked out and compiled
 * (runtime/denoiser_open.h). */
#include "config.h"

#include "runtime/denoiser_open.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/files.h"
#include "runtime/meta_keys.h"
#include "runtime/model_source.h"
#include "runtime/ref_import.h"

/* The denoiser's release of the program it adopted. */
static void release_program(void *program)
{
    edm_program_free(program);
    free(program);
}

int edm_compile_model(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                      edm_status *st)
{
    edm_diags *diags = malloc(sizeof *diags);
    if (!diags)
        return edm_nomem(st);
    int rc = edm_compile_file(src, path, defs, ndefs, prog, diags);
    if (rc != 0) {
        if (diags->count > 0)
            *st = diags->items[0];
        else
            edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: compilation failed", path);
        if (diags->count > 1)
            edm_note_add(st, EDM_NO_LOC, "and %d more errors", diags->count - 1);
    }
    free(diags);
    return rc;
}

static int is_param(const edm_program *p, const char *name) { return edm_program_param(p, name) != NULL; }

static int given(const edm_define *defs, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(defs[i].name, name) == 0)
            return 1;
    return 0;
}

int edm_compile_probe(const char *model, const char *embedded, const char *from, const edm_define *defs, int ndefs,
                      edm_program *prog, edm_status *st)
{
    edm_sources *tmp = edm_sources_new();
    memset(prog, 0, sizeof *prog);
    int rc = tmp ? 0 : edm_nomem(st);
    if (rc == 0 && embedded)
        rc = edm_model_source_add(tmp, embedded, from, st) < 0 ? -1 : 0;
    if (rc == 0)
        rc = edm_compile_model(tmp, model, defs, ndefs, prog, st);
    edm_sources_free(tmp);
    return rc;
}

/* The parameters model has (with the -D defines); its errors are reported
 * later, from the real compilation. */
static int probe_params(const edm_denoiser_spec *spec, const char *model, const char *embedded, edm_program *prog)
{
    edm_status ignored;
    edm_status_init(&ignored);
    return edm_compile_probe(model, embedded, spec->weights, spec->defines, spec->ndefines, prog, &ignored);
}

/* The weights' configuration (for parameters the model has, and that no -D
 * overrides) followed by the -D defines; then the program compiled with them. */
static int compile_configured(const edm_denoiser_spec *spec, const edm_define_list *meta, const char *model,
                              const char *embedded, edm_sources *src, edm_program *prog, edm_status *st)
{
    edm_program probe;
    memset(&probe, 0, sizeof probe);
    if (meta->count == 0 || probe_params(spec, model, embedded, &probe) != 0) /* errors are reported from src */
        return edm_compile_model(src, model, spec->defines, spec->ndefines, prog, st);
    edm_define *all = malloc(sizeof *all * (size_t)(meta->count + spec->ndefines));
    if (!all) {
        edm_program_free(&probe);
        return edm_nomem(st);
    }
    int n = 0;
    for (int i = 0; i < meta->count; i++)
        if (is_param(&probe, meta->items[i].name) && !given(spec->defines, spec->ndefines, meta->items[i].name))
            all[n++] = meta->items[i];
    for (int i = 0; i < spec->ndefines; i++)
        all[n++] = spec->defines[i];
    edm_program_free(&probe);
    int rc = edm_compile_model(src, model, all, n, prog, st);
    if (rc != 0 && st->code == EDM_ERR_USAGE) {
        /* a bad value from the file's metadata is a bad file, not a bad command line */
        for (int i = 0; i < n - spec->ndefines; i++) {
            size_t len = strlen(all[i].name);
            if (strncmp(st->msg, "-D ", 3) == 0 && strncmp(st->msg + 3, all[i].name, len) == 0 &&
                (st->msg[3 + len] == '=' || st->msg[3 + len] == ':' || st->msg[3 + len] == ' '))
                st->code = EDM_ERR_FORMAT;
        }
    }
    if (rc != 0)
        edm_status_prefix(st, "%s with the configuration in %s (metadata '%s')", model, spec->weights, meta->source);
    free(all);
    return rc;
}

/* Weights files are data from strangers: the model their metadata names must
 * lie in the model folders (runtime/files.h), and a compilation that takes
 * parameters from their metadata may read files only there (and in the
 * folder of a model the user named), so no imported path from edmc.config can
 * open, and echo in an error, a file elsewhere. */
static int trust_boundary(const edm_denoiser_spec *spec, const edm_define_list *meta, const char *model,
                          edm_sources *src, edm_status *st)
{
    int from_meta = !spec->model && meta->model && model == meta->model;
    if (!from_meta && meta->count == 0)
        return 0;
    edm_model_dirs md;
    edm_model_dirs_get(&md);
    char own[4096];
    if (!from_meta) { /* a model the user named: its folder is theirs to read */
        edm_folder_of(model, own, sizeof own);
        md.dir[md.n++] = own;
    }
    if (edm_sources_restrict(src, md.dir, md.n, st) != 0)
        return -1;
    if (from_meta && !edm_sources_allows(src, model))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s names its model '%s' (metadata 'edmc.model'), which is outside the model folders "
                        "($EDMC_MODELS, ./models, models/ beside edmc): give the .edm file with --model if you trust it",
                        spec->weights, model);
    return 0;
}

edm_denoiser *edm_denoiser_open(const edm_denoiser_spec *spec, edm_sources *src, edm_status *st)
{
    edm_st_file *f = edm_weights_open(spec->weights, st);
    if (!f)
        return NULL;
    edm_define_list meta;
    if (edm_define_list_from_weights(f, &meta, st) != 0) {
        edm_st_close(f);
        return NULL;
    }
    const char *model = spec->model ? spec->model : meta.model ? meta.model : spec->fallback_model;
    /* weights that carry their model's source (a training run's) compile it,
     * not a file that may have moved or changed since */
    const char *embedded = spec->model ? NULL : edm_st_metadata(f, EDM_META_SOURCE);
    edm_program prog;
    memset(&prog, 0, sizeof prog);
    edm_denoiser *d = NULL;
    int at = embedded ? edm_model_source_add(src, embedded, spec->weights, st) : 0;
    if (embedded && at >= 0)
        model = edm_sources_get(src, at)->path;
    if (at >= 0 && !model)
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "%s does not name its model (no 'edmc.model' metadata): give the .edm file with --model", spec->weights);
    else if (at >= 0 && (embedded || trust_boundary(spec, &meta, model, src, st) == 0) &&
             compile_configured(spec, &meta, model, embedded, src, &prog, st) == 0)
        d = edm_denoiser_new(prog.graph, f, spec->batch, &spec->backend, st);
    edm_program *kept = d ? malloc(sizeof *kept) : NULL;
    if (d && kept) {
        *kept = prog;
        if (edm_denoiser_adopt(d, f, model, kept, release_program, st) == 0) {
            edm_define_list_free(&meta);
            return d;
        }
    } else if (d) {
        edm_nomem(st);
    }
    free(kept);
    edm_denoiser_free(d);
    edm_program_free(&prog);
    edm_st_close(f);
    edm_define_list_free(&meta);
    return NULL;
}
