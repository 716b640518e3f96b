/* Ahead-of-time packages: the writer and the checking reader (package.h). */
#include "config.h"

#include "runtime/package.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "codegen/cubin_bundle.h"
#include "compiler/ir_io.h"
#include "runtime/checksum.h"
#include "runtime/files.h"
#include "runtime/weights.h"
#include "runtime/zip_read.h"
#include "runtime/zip_write.h"

#define FORMAT_NAME "edmc-package"
#define MAX_ENTRIES 4096
#define MAX_MANIFEST_BYTES (16u << 20)
#define MAX_ENTRY_BYTES ((uint64_t)2 << 30)

typedef struct {
    char *name;
    unsigned char *data; /* owned */
    size_t size;
} entry;

typedef struct {
    entry *items;
    int n;
} entry_list;

static void entries_free(entry_list *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].name);
        free(l->items[i].data);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Adds a copy of data under name. */
static int entries_add(entry_list *l, const char *name, const void *data, size_t size, edm_status *st)
{
    if (l->n == MAX_ENTRIES)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "a package holds at most %d entries", MAX_ENTRIES);
    entry *items = realloc(l->items, sizeof *items * (size_t)(l->n + 1));
    if (!items)
        return edm_nomem(st);
    l->items = items;
    entry *e = &items[l->n];
    e->name = strdup(name);
    e->data = malloc(size ? size : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return edm_nomem(st);
    }
    memcpy(e->data, data, size);
    e->size = size;
    l->n++;
    return 0;
}

static const entry *entries_find(const entry_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return &l->items[i];
    return NULL;
}

/* ------------------------------------------------------------------ JSON helpers */

/* Adds v under key (taking it); a NULL v (json-c out of memory) fails. */
static int j_add(json_object *o, const char *key, json_object *v, edm_status *st)
{
    if (!v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return edm_nomem(st);
    }
    return 0;
}

static int j_push(json_object *a, json_object *v, edm_status *st)
{
    if (!v || json_object_array_add(a, v) != 0) {
        json_object_put(v);
        return edm_nomem(st);
    }
    return 0;
}

static int j_str(json_object *o, const char *key, const char *v, edm_status *st)
{
    return j_add(o, key, json_object_new_string(v), st);
}

/* The shape as a JSON list, the batch dimension as "N". */
static json_object *shape_json(const edm_shape *s)
{
    json_object *a = json_object_new_array();
    for (int k = 0; a && k < s->rank; k++) {
        json_object *d = s->dim[k] == EDM_DIM_BATCH ? json_object_new_string("N") : json_object_new_int64(s->dim[k]);
        if (!d || json_object_array_add(a, d) != 0) {
            json_object_put(d);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* {"name", "shape", "dtype"} of node n (and "kind" when kind is set). */
static json_object *tensor_json(const edm_node *n, int kind)
{
    json_object *o = json_object_new_object();
    edm_status ignored;
    edm_status_init(&ignored);
    if (!o || j_str(o, "name", n->name ? n->name : "", &ignored) != 0 ||
        j_add(o, "shape", shape_json(&n->shape), &ignored) != 0 ||
        j_str(o, "dtype", edm_dtype_name(n->dtype), &ignored) != 0 ||
        (kind && j_str(o, "kind", edm_op_name(n->op), &ignored) != 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Every node of op `op` (or of op2) as tensor_json, in graph order. */
static json_object *tensors_json(const edm_graph *g, edm_op op, edm_op op2, int kind)
{
    json_object *a = json_object_new_array();
    for (int i = 0; a && i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != op && n->op != op2)
            continue;
        json_object *t = tensor_json(n, kind);
        if (!t || json_object_array_add(a, t) != 0) {
            json_object_put(t);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* ------------------------------------------------------------------ writer */

/* XML of the graph into a malloc'd buffer. */
static int graph_xml(const edm_graph *g, char **out, size_t *size, edm_status *st)
{
    *out = NULL;
    FILE *f = open_memstream(out, size);
    if (!f)
        return edm_nomem(st);
    int rc = edm_ir_write_xml(g, f, st);
    if (fclose(f) != 0 && rc == 0)
        rc = edm_nomem(st);
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* source/<i>/<file name>: each file the compilation read. */
static int add_sources(entry_list *l, json_object *list, const edm_sources *src, edm_status *st)
{
    for (int i = 0; i < edm_sources_count(src); i++) {
        const edm_source *s = edm_sources_get(src, i);
        const char *base = strrchr(s->path, '/');
        char name[512];
        snprintf(name, sizeof name, "source/%d/%s", i, base ? base + 1 : s->path);
        json_object *o = json_object_new_object();
        if (!o)
            return edm_nomem(st);
        if (j_push(list, o, st) != 0 || j_str(o, "entry", name, st) != 0 || j_str(o, "path", s->path, st) != 0 ||
            entries_add(l, name, s->text, s->size, st) != 0)
            return -1;
    }
    return 0;
}

static int add_kernels(entry_list *l, json_object *m, const edm_package_spec *sp, edm_status *st)
{
    json_object *list = json_object_new_array(), *archs = json_object_new_array();
    if (j_add(m, "kernels", list, st) != 0 || j_add(m, "archs", archs, st) != 0)
        return -1;
    for (int i = 0; i < sp->nkernels; i++) {
        const edm_cuda_kernel_image *k = &sp->kernels[i];
        char name[128];
        /* a cubin, or a bundle of them (codegen/cubin_bundle.h: the kernels compiled in parts) */
        snprintf(name, sizeof name, "cuda/%s/batch%lld.%s", k->arch, (long long)k->batch,
                 edm_cubin_is_bundle(k->cubin, k->size) ? "cubins" : "cubin");
        json_object *o = json_object_new_object();
        if (j_push(list, o, st) != 0 || j_str(o, "arch", k->arch, st) != 0 ||
            j_add(o, "batch", json_object_new_int64(k->batch), st) != 0 || j_str(o, "entry", name, st) != 0 ||
            j_str(o, "source_sha256", k->source_sha256, st) != 0 || entries_add(l, name, k->cubin, k->size, st) != 0)
            return -1;
        int seen = 0;
        for (size_t a = 0; a < json_object_array_length(archs); a++)
            seen |= strcmp(json_object_get_string(json_object_array_get_idx(archs, a)), k->arch) == 0;
        if (!seen && j_push(archs, json_object_new_string(k->arch), st) != 0)
            return -1;
    }
    json_object *batches = json_object_new_array();
    if (j_add(m, "batches", batches, st) != 0)
        return -1;
    for (int i = 0; i < sp->nbatches; i++)
        if (j_push(batches, json_object_new_int64(sp->batches[i]), st) != 0)
            return -1;
    return 0;
}

static int add_model(json_object *m, const edm_package_spec *sp, edm_status *st)
{
    json_object *model = json_object_new_object(), *defs = json_object_new_object(), *params = json_object_new_object();
    const char *base = strrchr(sp->model_path, '/');
    char name[256];
    snprintf(name, sizeof name, "%s", base ? base + 1 : sp->model_path);
    char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".edm") == 0)
        *dot = '\0';
    /* a training run from the package records the model as a run from the file does */
    char *abs = edm_absolute_path(sp->model_path);
    if (!abs)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot make the path absolute", sp->model_path);
    int rc = j_add(m, "model", model, st) != 0 || j_add(model, "defines", defs, st) != 0 ||
                     j_add(model, "params", params, st) != 0 || j_str(model, "name", name, st) != 0 ||
                     j_str(model, "path", sp->model_path, st) != 0 || j_str(model, "absolute_path", abs, st) != 0
                 ? -1
                 : 0;
    free(abs);
    if (rc != 0)
        return -1;
    for (int i = 0; i < sp->ndefines; i++)
        if (j_str(defs, sp->defines[i].name, sp->defines[i].value, st) != 0)
            return -1;
    for (int i = 0; i < sp->prog->nparams; i++)
        if (j_str(params, sp->prog->params[i].name, sp->prog->params[i].value, st) != 0)
            return -1;
    return 0;
}

static const char *precision_name(const edm_backend_options *o)
{
    return edm_dtype_name(o->device == EDM_DEVICE_CPU ? o->cpu.compute : o->storage);
}

/* The manifest's fields other than the checksums. */
static int describe(json_object *m, const edm_package_spec *sp, edm_status *st)
{
    const edm_graph *g = sp->prog->graph;
    char fuse[64];
    json_object *iface = json_object_new_object();
    int rc = j_str(m, "format", FORMAT_NAME, st);
    rc = rc ? rc : j_add(m, "version", json_object_new_int(EDM_PACKAGE_VERSION), st);
    rc = rc ? rc : j_str(m, "edmc", PACKAGE_VERSION, st);
    rc = rc ? rc : add_model(m, sp, st);
    rc = rc ? rc : j_str(m, "device", sp->backend->device == EDM_DEVICE_CUDA ? "cuda" : "cpu", st);
    rc = rc ? rc : j_str(m, "precision", precision_name(sp->backend), st);
    rc = rc ? rc : j_str(m, "fuse", edm_fuse_str(sp->backend->cpu.fuse, fuse, sizeof fuse), st);
    rc = rc ? rc : j_str(m, "mode", sp->mode, st);
    rc = rc ? rc : j_add(m, "interface", iface, st);
    rc = rc ? rc : j_add(iface, "inputs", tensors_json(g, EDM_OP_INPUT, EDM_OP_INPUT, 0), st);
    rc = rc ? rc : j_add(iface, "outputs", tensors_json(g, EDM_OP_OUTPUT, EDM_OP_OUTPUT, 0), st);
    return rc;
}

typedef struct {
    const entry_list *l;
    const char *manifest;
} zip_body_ctx;

static int write_zip(FILE *fp, void *ctx, char *errbuf, size_t errsize)
{
    const zip_body_ctx *c = ctx;
    edm_zip_writer *z = edm_zip_writer_new(fp);
    int rc = z ? edm_zip_add(z, "manifest.json", c->manifest, strlen(c->manifest)) : -1;
    for (int i = 0; rc == 0 && i < c->l->n; i++)
        rc = edm_zip_add(z, c->l->items[i].name, c->l->items[i].data, c->l->items[i].size);
    if (rc == 0)
        rc = edm_zip_finish(z);
    if (rc != 0)
        snprintf(errbuf, errsize, "writing the zip archive: %s", strerror(errno ? errno : ENOMEM));
    edm_zip_writer_free(z);
    return rc;
}

int edm_package_write(const char *path, const edm_package_spec *sp, edm_status *st)
{
    entry_list l = {0};
    json_object *m = json_object_new_object(), *sums = json_object_new_object(), *srcs = json_object_new_array();
    char *gx = NULL;
    size_t gsize = 0;
    json_object *ptable = tensors_json(sp->prog->graph, EDM_OP_PARAM, EDM_OP_BUFFER, 1);
    const char *ptext = ptable ? json_object_to_json_string_ext(ptable, JSON_C_TO_STRING_PRETTY) : NULL;
    int rc = m && ptext ? 0 : edm_nomem(st);
    rc = rc ? rc : j_add(m, "sources", srcs, st);
    rc = rc ? rc : describe(m, sp, st);
    rc = rc ? rc : graph_xml(sp->prog->graph, &gx, &gsize, st);
    rc = rc ? rc : entries_add(&l, "graph.xml", gx, gsize, st);
    rc = rc ? rc : entries_add(&l, "plan.xml", sp->plan_xml, sp->plan_size, st);
    rc = rc ? rc : entries_add(&l, "params.json", ptext, strlen(ptext), st);
    rc = rc ? rc : add_sources(&l, srcs, sp->src, st);
    rc = rc ? rc : add_kernels(&l, m, sp, st);
    for (int i = 0; rc == 0 && i < l.n; i++) {
        char sha[EDM_SHA256_HEX];
        edm_sha256_hex(l.items[i].data, l.items[i].size, sha);
        rc = j_str(sums, l.items[i].name, sha, st);
    }
    rc = rc ? rc : j_add(m, "sha256", json_object_get(sums), st);
    const char *text = rc == 0 ? json_object_to_json_string_ext(m, JSON_C_TO_STRING_PRETTY) : NULL;
    if (rc == 0 && !text)
        rc = edm_nomem(st);
    if (rc == 0) {
        zip_body_ctx c = {.l = &l, .manifest = text};
        rc = edm_write_atomic(path, write_zip, &c, st);
    }
    free(gx);
    json_object_put(sums);
    json_object_put(ptable);
    json_object_put(m);
    entries_free(&l);
    return rc;
}

/* ------------------------------------------------------------------ reader */

struct edm_package {
    char *path;
    char *plan_name; /* "PATH:plan.xml", for errors */
    entry_list entries;
    json_object *manifest;
    json_object *ptable; /* params.json */
    edm_graph *graph;
    edm_plan_text plan;
    edm_cuda_kernel_image *kernels;
    int nkernels;
    const char *device, *precision, *fuse, *mode;
};

/* A string member of o, or NULL. */
static const char *j_get_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static int read_entries(edm_package *p, zip_t *z, edm_status *st)
{
    zip_int64_t n = zip_get_num_entries(z, 0);
    if (n < 1 || n > MAX_ENTRIES)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not an edmc package (%lld entries)", p->path, (long long)n);
    p->entries.items = calloc((size_t)n, sizeof *p->entries.items);
    if (!p->entries.items)
        return edm_nomem(st);
    for (zip_int64_t i = 0; i < n; i++) {
        entry *e = &p->entries.items[i];
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        if (!name || !(e->name = strdup(name)))
            return name ? edm_nomem(st) : edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %s", p->path, zip_strerror(z));
        p->entries.n++;
        uint64_t max = strcmp(name, "manifest.json") == 0 ? MAX_MANIFEST_BYTES : MAX_ENTRY_BYTES;
        if (edm_zip_read_entry(z, (zip_uint64_t)i, max, p->path, &e->data, &e->size, st) != 0)
            return -1;
    }
    return 0;
}

/* manifest.json: this format and version, a checksum for every other entry
 * and an entry for every checksum. */
static int check_manifest(edm_package *p, edm_status *st)
{
    const entry *me = entries_find(&p->entries, "manifest.json");
    if (!me)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not an edmc package (no manifest.json)", p->path);
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return edm_nomem(st);
    p->manifest = json_tokener_parse_ex(tok, (const char *)me->data, (int)me->size);
    json_tokener_free(tok);
    if (!p->manifest || !json_object_is_type(p->manifest, json_type_object))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json is not a JSON object", p->path);
    const char *format = j_get_str(p->manifest, "format");
    json_object *version, *sums;
    if (!format || strcmp(format, FORMAT_NAME) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not an edmc package (manifest format '%s')", p->path,
                        format ? format : "(none)");
    if (!json_object_object_get_ex(p->manifest, "version", &version) || !json_object_is_type(version, json_type_int))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json has no format version", p->path);
    if (json_object_get_int64(version) != EDM_PACKAGE_VERSION)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: package format version %lld; this edmc reads version %d (compile the model again)",
                        p->path, (long long)json_object_get_int64(version), EDM_PACKAGE_VERSION);
    if (!json_object_object_get_ex(p->manifest, "sha256", &sums) || !json_object_is_type(sums, json_type_object))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json has no sha256 checksums", p->path);
    for (int i = 0; i < p->entries.n; i++) {
        const entry *e = &p->entries.items[i];
        if (e == me)
            continue;
        const char *want = j_get_str(sums, e->name);
        char got[EDM_SHA256_HEX];
        if (!want)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: entry '%s' is not in the manifest's checksums", p->path,
                            e->name);
        edm_sha256_hex(e->data, e->size, got);
        if (strcmp(got, want) != 0)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s: entry '%s' is damaged or altered: its SHA-256 is %.12s..., the manifest says %.12s...",
                            p->path, e->name, got, want);
    }
    json_object_object_foreach(sums, name, val)
    {
        (void)val;
        if (!entries_find(&p->entries, name))
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: the manifest lists '%s', which the package lacks",
                            p->path, name);
    }
    return 0;
}

/* An entry the manifest's checksums covered. */
static const entry *need(const edm_package *p, const char *name, edm_status *st)
{
    const entry *e = entries_find(&p->entries, name);
    if (!e)
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: the package has no %s", p->path, name);
    return e;
}

/* params.json must be the graph's own parameter table. */
static int check_param_table(edm_package *p, const entry *e, edm_status *st)
{
    json_object *want = tensors_json(p->graph, EDM_OP_PARAM, EDM_OP_BUFFER, 1);
    json_tokener *tok = json_tokener_new();
    p->ptable = tok ? json_tokener_parse_ex(tok, (const char *)e->data, (int)e->size) : NULL;
    json_tokener_free(tok);
    int rc = 0;
    if (!want)
        rc = edm_nomem(st);
    else if (!p->ptable || !json_object_equal(want, p->ptable))
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: params.json is not the parameter table of graph.xml",
                      p->path);
    json_object_put(want);
    return rc;
}

static int read_kernels(edm_package *p, edm_status *st)
{
    json_object *list;
    if (!json_object_object_get_ex(p->manifest, "kernels", &list) || !json_object_is_type(list, json_type_array))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json has no kernels list", p->path);
    size_t n = json_object_array_length(list);
    p->kernels = calloc(n ? n : 1, sizeof *p->kernels);
    if (!p->kernels)
        return edm_nomem(st);
    for (size_t i = 0; i < n; i++) {
        json_object *k = json_object_array_get_idx(list, i), *batch;
        edm_cuda_kernel_image *img = &p->kernels[i];
        const char *name = j_get_str(k, "entry");
        img->arch = j_get_str(k, "arch");
        img->source_sha256 = j_get_str(k, "source_sha256");
        if (!name || !img->arch || !img->source_sha256 || !json_object_object_get_ex(k, "batch", &batch) ||
            !json_object_is_type(batch, json_type_int) || json_object_get_int64(batch) < 1)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json: kernels[%zu] lacks arch, batch, entry "
                                                             "or source_sha256", p->path, i);
        img->batch = json_object_get_int64(batch);
        const entry *e = need(p, name, st);
        if (!e)
            return -1;
        img->cubin = e->data;
        img->size = e->size;
        p->nkernels++;
    }
    return 0;
}

static int read_settings(edm_package *p, edm_status *st)
{
    p->device = j_get_str(p->manifest, "device");
    p->precision = j_get_str(p->manifest, "precision");
    p->fuse = j_get_str(p->manifest, "fuse");
    p->mode = j_get_str(p->manifest, "mode");
    if (!p->device || !p->precision || !p->fuse || !p->mode)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json lacks device, precision, fuse or mode",
                        p->path);
    if (strcmp(p->mode, "forward") != 0 && strcmp(p->mode, "sample") != 0 && strcmp(p->mode, "train") != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json: mode '%s' (expected forward, sample or train)",
                        p->path, p->mode);
    edm_backend_options probe = edm_backend_defaults(EDM_DEVICE_CPU);
    return edm_package_backend(p, &probe, st);
}

/* "PATH:entry" (malloc'd), how errors name an entry. */
static char *entry_label(const edm_package *p, const char *entry_name)
{
    size_t n = strlen(p->path) + strlen(entry_name) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s:%s", p->path, entry_name);
    return s;
}

edm_package *edm_package_open(const char *path, edm_status *st)
{
    edm_package *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path))) {
        free(p);
        edm_nomem(st);
        return NULL;
    }
    int err = 0;
    zip_t *z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    int rc = 0;
    if (!z) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        if (err == ZIP_ER_NOENT || err == ZIP_ER_OPEN || err == ZIP_ER_READ)
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot read it (%s)", path, zip_error_strerror(&ze));
        else
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not an edmc package (%s)", path,
                          err == ZIP_ER_NOZIP ? "not a zip archive" : zip_error_strerror(&ze));
        zip_error_fini(&ze);
    }
    if (rc == 0)
        rc = read_entries(p, z, st);
    if (z)
        zip_discard(z);
    rc = rc ? rc : check_manifest(p, st);
    const entry *g = rc == 0 ? need(p, "graph.xml", st) : NULL;
    const entry *plan = g ? need(p, "plan.xml", st) : NULL;
    const entry *params = plan ? need(p, "params.json", st) : NULL;
    rc = params ? rc : -1;
    char *graph_name = rc == 0 ? entry_label(p, "graph.xml") : NULL;
    p->plan_name = rc == 0 ? entry_label(p, "plan.xml") : NULL;
    if (rc == 0 && (!graph_name || !p->plan_name))
        rc = edm_nomem(st);
    if (rc == 0 && !(p->graph = edm_ir_read_xml_memory((const char *)g->data, g->size, graph_name, st)))
        rc = -1;
    free(graph_name);
    rc = rc ? rc : check_param_table(p, params, st);
    rc = rc ? rc : read_kernels(p, st);
    rc = rc ? rc : read_settings(p, st);
    if (rc != 0) {
        edm_package_close(p);
        return NULL;
    }
    p->plan = (edm_plan_text){.xml = (const char *)plan->data, .size = plan->size, .name = p->plan_name};
    return p;
}

void edm_package_close(edm_package *p)
{
    if (!p)
        return;
    edm_graph_free(p->graph);
    json_object_put(p->ptable);
    json_object_put(p->manifest);
    entries_free(&p->entries);
    free(p->kernels);
    free(p->plan_name);
    free(p->path);
    free(p);
}

const char *edm_package_path(const edm_package *p) { return p->path; }
edm_graph *edm_package_take_graph(edm_package *p)
{
    edm_graph *g = p->graph;
    p->graph = NULL;
    return g;
}
const char *edm_package_mode(const edm_package *p) { return p->mode; }
const char *edm_package_device(const edm_package *p) { return p->device; }
const char *edm_package_precision(const edm_package *p) { return p->precision; }
const char *edm_package_fuse(const edm_package *p) { return p->fuse; }

int edm_package_backend(const edm_package *p, edm_backend_options *opt, edm_status *st)
{
    edm_device dev;
    edm_dtype precision;
    unsigned fuse;
    if (edm_device_from_name(p->device, &dev) != 0 || edm_dtype_from_name(p->precision, &precision) != 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json: device '%s', precision '%s'", p->path,
                        p->device, p->precision);
    if (edm_fuse_parse(p->fuse, &fuse, st) != 0) {
        edm_status_prefix(st, "%s: manifest.json", p->path);
        return -1;
    }
    int threads = opt->cpu.threads;
    *opt = edm_backend_defaults(dev);
    opt->cpu.threads = threads;
    opt->cpu.fuse = fuse;
    opt->cpu.plan = &p->plan;
    if (dev == EDM_DEVICE_CPU) {
        opt->cpu.compute = precision;
    } else {
        opt->storage = precision;
        opt->kernels = p->kernels;
        opt->nkernels = p->nkernels;
    }
    return 0;
}

int64_t edm_package_fit_batch(const edm_package *p, int64_t n)
{
    int64_t best = 0;
    for (int k = 0; k < p->nkernels; k++)
        if (p->kernels[k].batch >= n && (best == 0 || p->kernels[k].batch < best))
            best = p->kernels[k].batch;
    return best ? best : n;
}

/* One row of the parameter table as a shape (checked when the package was
 * opened: it equals the graph's). */
static edm_shape table_shape(json_object *row)
{
    json_object *dims;
    edm_shape s = {0};
    if (!json_object_object_get_ex(row, "shape", &dims))
        return s;
    s.rank = (int)json_object_array_length(dims);
    for (int k = 0; k < s.rank && k < EDM_MAX_RANK; k++)
        s.dim[k] = json_object_get_int64(json_object_array_get_idx(dims, (size_t)k));
    return s;
}

int edm_package_check_weights(const edm_package *p, const edm_st_file *w, edm_status *st)
{
    char want[128], got[128];
    for (size_t i = 0; i < json_object_array_length(p->ptable); i++) {
        json_object *row = json_object_array_get_idx(p->ptable, i);
        const char *name = j_get_str(row, "name");
        edm_shape shape = table_shape(row);
        const edm_st_entry *e = edm_st_find(w, name);
        edm_shape_str(&shape, want, sizeof want);
        if (!e)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s does not match the parameter table of %s: no tensor '%s' %s", edm_st_path(w), p->path,
                            name, want);
        if (!edm_weights_shape_fits(e->rank, e->dim, &shape)) {
            edm_shape es = {.rank = e->rank};
            for (int k = 0; k < e->rank; k++)
                es.dim[k] = e->dim[k];
            edm_shape_str(&es, got, sizeof got);
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                            "%s does not match the parameter table of %s: '%s' is %s, the package has %s",
                            edm_st_path(w), p->path, name, got, want);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ training runs */

/* manifest.json's "model" object, or NULL. */
static json_object *model_object(const edm_package *p)
{
    json_object *m;
    return json_object_object_get_ex(p->manifest, "model", &m) && json_object_is_type(m, json_type_object) ? m : NULL;
}

/* What edm_package_program filled so far, freed (edm_program_free belongs to
 * the front end, which the C API's library leaves out). */
static void program_drop(edm_program *prog)
{
    for (int i = 0; i < prog->nparams; i++) {
        free((char *)prog->params[i].name);
        free((char *)prog->params[i].value);
    }
    free(prog->params);
    memset(prog, 0, sizeof *prog);
}

int edm_package_program(edm_package *p, edm_program *prog, edm_status *st)
{
    memset(prog, 0, sizeof *prog);
    json_object *m = model_object(p), *params;
    if (!m || !json_object_object_get_ex(m, "params", &params) || !json_object_is_type(params, json_type_object))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json has no model parameters", p->path);
    int n = json_object_object_length(params);
    prog->params = calloc((size_t)(n > 0 ? n : 1), sizeof *prog->params);
    if (!prog->params)
        return edm_nomem(st);
    /* json-c keeps the members in the order written: the compilation's */
    json_object_object_foreach(params, name, val)
    {
        if (!json_object_is_type(val, json_type_string)) {
            program_drop(prog);
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json: model parameter '%s' is not a string",
                            p->path, name);
        }
        edm_param_value *v = &prog->params[prog->nparams];
        v->name = strdup(name);
        v->value = strdup(json_object_get_string(val));
        prog->nparams++;
        if (!v->name || !v->value) {
            program_drop(prog);
            return edm_nomem(st);
        }
    }
    prog->graph = edm_package_take_graph(p);
    if (!prog->graph) {
        program_drop(prog);
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the package's graph was taken already", p->path);
    }
    return 0;
}

int edm_package_sources(const edm_package *p, edm_sources *src, edm_status *st)
{
    json_object *list;
    if (!json_object_object_get_ex(p->manifest, "sources", &list) || !json_object_is_type(list, json_type_array))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json has no sources list", p->path);
    if (edm_sources_restrict(src, NULL, 0, st) != 0) /* the disk holds nothing for it */
        return -1;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *o = json_object_array_get_idx(list, i);
        const char *name = j_get_str(o, "entry"), *path = j_get_str(o, "path");
        if (!name || !path)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: manifest.json: sources[%zu] lacks entry or path",
                            p->path, i);
        const entry *e = need(p, name, st);
        if (!e || edm_sources_add_text(src, path, (const char *)e->data, e->size, st) < 0)
            return -1;
    }
    return 0;
}

const char *edm_package_model_path(const edm_package *p)
{
    json_object *m = model_object(p);
    const char *abs = m ? j_get_str(m, "absolute_path") : NULL;
    return abs ? abs : m ? j_get_str(m, "path") : NULL;
}

int edm_package_holds_batch(const edm_package *p, int64_t n, char *held, size_t size)
{
    int found = p->nkernels == 0; /* a CPU package runs any batch */
    size_t used = 0;
    if (size)
        held[0] = '\0';
    for (int k = 0; k < p->nkernels; k++) {
        found |= p->kernels[k].batch == n;
        int seen = 0; /* each batch once, though every architecture has it */
        for (int j = 0; j < k; j++)
            seen |= p->kernels[j].batch == p->kernels[k].batch;
        if (!seen && used < size)
            used += (size_t)snprintf(held + used, size - used, "%s%lld", used ? ", " : "",
                                     (long long)p->kernels[k].batch);
    }
    return found;
}
