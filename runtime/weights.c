#include "config.h"

#include "runtime/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rng.h"

static int is_weight(const edm_node *n) { return n->op == EDM_OP_PARAM || n->op == EDM_OP_BUFFER; }

static int64_t numel(const edm_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dim[i];
    return n;
}

/* count values of rng (normal or uniform) times scale into data.  Element k
 * is a pure function of (stream, k), so chunks drawn on every core give the
 * values one thread would (img512-s: 280M values, mostly Box-Muller). */
static void fill(const edm_rng *rng, int normal, double scale, float *data, int64_t count)
{
    const int64_t chunk = (int64_t)1 << 16;
    int64_t nchunks = (count + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t first = c * chunk, n = count - first < chunk ? count - first : chunk;
        if (normal)
            edm_rng_normal(rng, (uint64_t)first, data + first, n);
        else
            edm_rng_uniform(rng, (uint64_t)first, data + first, n);
        for (int64_t k = first; k < first + n; k++)
            data[k] = (float)(data[k] * scale);
    }
}

/* The initial values of one PARAM or BUFFER node: a counter-based stream per
 * tensor, keyed by the run's seed, the tensor's own seed and its name. */
static void draw(const edm_node *n, uint64_t seed, float *data, int64_t count)
{
    edm_rng rng = edm_rng_make(seed * 0x9E3779B97F4A7C15ull + n->attr.init.seed, n->name);
    double scale = n->attr.init.scale;
    switch (n->attr.init.kind) {
    case EDM_INIT_ZEROS:
    case EDM_INIT_ONES:
    case EDM_INIT_CONST: {
        float v = n->attr.init.kind == EDM_INIT_ZEROS  ? 0.0f
                  : n->attr.init.kind == EDM_INIT_ONES ? 1.0f
                                                       : (float)n->attr.init.value;
        for (int64_t k = 0; k < count; k++)
            data[k] = v;
        break;
    }
    case EDM_INIT_NORMAL:
    case EDM_INIT_UNIFORM:
        fill(&rng, n->attr.init.kind == EDM_INIT_NORMAL, scale, data, count);
        break;
    }
}

/* Draws every PARAM and BUFFER and hands it to sink (a writer or a backend). */
static int init_each(const edm_graph *g, uint64_t seed,
                     int (*sink)(void *ctx, const edm_node *n, const float *data, int64_t count, edm_status *st),
                     void *ctx, edm_status *st)
{
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (!is_weight(n))
            continue;
        int64_t count = numel(&n->shape);
        float *data = malloc(sizeof(float) * (size_t)(count ? count : 1));
        if (!data)
            return edm_nomem(st);
        draw(n, seed, data, count);
        int rc = sink(ctx, n, data, count, st);
        free(data);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int to_writer(void *ctx, const edm_node *n, const float *data, int64_t count, edm_status *st)
{
    (void)count;
    return edm_st_writer_add_f32(ctx, n->name, EDM_F32, n->shape.rank, n->shape.dim, data, st);
}

static int to_backend(void *ctx, const edm_node *n, const float *data, int64_t count, edm_status *st)
{
    return edm_backend_set_f32(ctx, n->name, data, count, st);
}

int edm_weights_init(const edm_graph *g, uint64_t seed, edm_st_writer *w, edm_status *st)
{
    return init_each(g, seed, to_writer, w, st);
}

int edm_weights_init_backend(const edm_graph *g, uint64_t seed, edm_backend *x, edm_status *st)
{
    return init_each(g, seed, to_backend, x, st);
}

static void shape_text(int rank, const int64_t *dim, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)dim[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* Appends one problem line to msg, counting those that no longer fit. */
static void add_problem(char *msg, size_t size, int *shown, int *hidden, const char *line)
{
    size_t used = strlen(msg);
    if (*shown < 12 && used + strlen(line) + 4 < size) {
        snprintf(msg + used, size - used, "\n  %s", line);
        (*shown)++;
    } else {
        (*hidden)++;
    }
}

int edm_weights_shape_fits(int rank, const int64_t *dim, const edm_shape *want)
{
    /* a learned scalar: the reference's modules hold shape [], its state
     * dicts and edmc's models [1]; one element either way */
    if (rank <= 1 && want->rank <= 1 && (rank == 0 || dim[0] == 1) && (want->rank == 0 || want->dim[0] == 1))
        return 1;
    if (rank != want->rank)
        return 0;
    for (int k = 0; k < rank; k++)
        if (dim[k] != want->dim[k])
            return 0;
    return 1;
}

int edm_weights_load(edm_backend *x, const edm_graph *g, const edm_st_file *f, edm_status *st)
{
    return edm_weights_load_part(x, g, f, 0, st);
}

int edm_weights_load_part(edm_backend *x, const edm_graph *g, const edm_st_file *f, int ignore_others,
                          edm_status *st)
{
    char msg[EDM_STATUS_MSG];
    snprintf(msg, sizeof msg, "%s does not fit the model:", edm_st_path(f));
    int shown = 0, hidden = 0, problems = 0;
    char line[512], want[128], got[128];
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (!is_weight(n))
            continue;
        const edm_st_entry *e = edm_st_find(f, n->name);
        shape_text(n->shape.rank, n->shape.dim, want, sizeof want);
        if (!e) {
            snprintf(line, sizeof line, "missing %s %s", n->name, want);
            add_problem(msg, sizeof msg, &shown, &hidden, line);
            problems++;
            continue;
        }
        if (!edm_weights_shape_fits(e->rank, e->dim, &n->shape)) {
            shape_text(e->rank, e->dim, got, sizeof got);
            snprintf(line, sizeof line, "%s: expected %s, found %s", n->name, want, got);
            add_problem(msg, sizeof msg, &shown, &hidden, line);
            problems++;
        }
    }
    for (int k = 0; k < edm_st_count(f) && !ignore_others; k++) {
        const edm_st_entry *e = edm_st_entry_at(f, k);
        int known = 0;
        for (int i = 0; i < edm_graph_count(g) && !known; i++) {
            const edm_node *n = edm_graph_node(g, i);
            known = is_weight(n) && strcmp(n->name, e->name) == 0;
        }
        if (!known) {
            shape_text(e->rank, e->dim, got, sizeof got);
            snprintf(line, sizeof line, "unexpected %s %s", e->name, got);
            add_problem(msg, sizeof msg, &shown, &hidden, line);
            problems++;
        }
    }
    if (problems) {
        if (hidden) {
            size_t used = strlen(msg);
            snprintf(msg + used, sizeof msg - used, "\n  ... and %d more", hidden);
        }
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s", msg);
    }
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (!is_weight(n))
            continue;
        const edm_st_entry *e = edm_st_find(f, n->name);
        float *data = malloc(sizeof(float) * (size_t)(e->numel ? e->numel : 1));
        if (!data)
            return edm_nomem(st);
        int rc = edm_st_read_f32(f, e, data, e->numel, st);
        if (rc == 0)
            rc = edm_backend_set_f32(x, n->name, data, e->numel, st);
        free(data);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int edm_check_finite(const float *v, int64_t n, const char *what, const char *name, edm_status *st)
{
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(v[k]))
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: '%s' element %lld is %s (not finite)", what, name,
                            (long long)k, isnan(v[k]) ? "nan" : v[k] > 0 ? "inf" : "-inf");
    return 0;
}

int edm_weights_check_finite(const edm_graph *g, const edm_st_file *f, edm_status *st)
{
    float *buf = NULL;
    int64_t cap = 0;
    int rc = 0;
    for (int i = 0; i < edm_graph_count(g) && rc == 0; i++) {
        const edm_node *n = edm_graph_node(g, i);
        if ((n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER) || !n->name)
            continue;
        const edm_st_entry *e = edm_st_find(f, n->name);
        if (!e || e->numel < 1)
            continue;
        if (e->numel > cap) {
            float *nb = realloc(buf, sizeof(float) * (size_t)e->numel);
            if (!nb) {
                rc = edm_nomem(st);
                break;
            }
            buf = nb;
            cap = e->numel;
        }
        rc = edm_st_read_f32(f, e, buf, e->numel, st);
        if (rc == 0)
            rc = edm_check_finite(buf, e->numel, edm_st_path(f), n->name, st);
    }
    free(buf);
    return rc;
}
