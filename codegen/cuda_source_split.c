/* Splitting a fused module's CUDA C into parts NVRTC compiles at once (cuda_source_split.h). */
#include "codegen/cuda_source_split.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cubin_bundle.h"

#define MARK "\n/* edmc-unit "
#define END_MARK "\n/* edmc-units-end */\n"

void edm_source_unit_mark(sbuf *b, int unit, const int *needs, int nneeds)
{
    sb_printf(b, MARK "%d", unit);
    for (int i = 0; i < nneeds; i++)
        sb_printf(b, "%s %d", i ? "" : " needs", needs[i]);
    sb_puts(b, " */\n");
}

void edm_source_units_end(sbuf *b) { sb_puts(b, END_MARK); }

typedef struct {
    const char *text; /* from its mark */
    size_t len;
    int id;
    const char *needs; /* its mark's list of the units it needs (read_needs), NULL: none */
    double work;            /* NVRTC's time for it, roughly */
    int root;               /* union-find: the units that must share a part */
    int part;
} unit;

static int find(unit *u, int i)
{
    while (u[i].root != i) {
        u[i].root = u[u[i].root].root;
        i = u[i].root;
    }
    return i;
}

/* Reads the rest of a mark, "U [needs A ...]" and its end: 0, or -1 where
 * it is not that ("needs" without a unit). */
static int read_mark(const char *p, unit *u)
{
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 0 || v > 1000000000)
        return -1;
    u->id = (int)v;
    p = end;
    while (*p == ' ')
        p++;
    if (strncmp(p, "needs", 5) == 0) {
        u->needs = p += 5;
        int n = 0;
        for (;; n++) {
            while (*p == ' ')
                p++;
            v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (v < 0 || v > 1000000000)
                return -1;
            p = end;
        }
        if (n == 0)
            return -1;
    }
    return strncmp(p, "*/", 2) == 0 ? 0 : -1;
}

/* The next unit of a list read_mark accepted (*at moves past it), or -1 at its end. */
static int next_need(const char **at)
{
    char *end;
    long v = strtol(*at, &end, 10);
    if (end == *at)
        return -1;
    *at = end;
    return (int)v;
}

/* The first needle in [p, end), or NULL. */
static const char *find_in(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    while (p && (size_t)(end - p) >= n) {
        p = memchr(p, needle[0], (size_t)(end - p) - n + 1);
        if (p && memcmp(p, needle, n) == 0)
            return p;
        p = p ? p + 1 : NULL;
    }
    return NULL;
}

static int count_in(const char *p, const char *end, const char *needle)
{
    int n = 0;
    for (const char *q = p; (q = find_in(q, end, needle)) != NULL; q++)
        n++;
    return n;
}

/* Roughly NVRTC's seconds for a unit: a tensor-core contraction takes
 * about 0.11 s, another kernel about 0.04 s (docs/performance.md, v7). */
static double unit_work(const char *text, size_t len)
{
    const char *end = text + len;
    int mma = count_in(text, end, "edm_mma_f16(") + count_in(text, end, "edm_mma_bf16(");
    return 0.001 + 0.04 * count_in(text, end, "__global__") + 0.07 * mma;
}

/* Appends the names of the extern "C" __global__ kernels in text[0, len). */
static int add_kernel_names(const char *text, size_t len, char ***names, int *n, int *cap)
{
    static const char head[] = "extern \"C\" __global__ void ";
    const char *end = text + len;
    for (const char *q = text; (q = find_in(q, end, head)) != NULL; q++) {
        const char *r = q + sizeof head - 1;
        if (strncmp(r, "__launch_bounds__(", 18) == 0) {
            r = strchr(r, ')');
            if (!r)
                return -1;
            r++;
            while (*r == ' ')
                r++;
        }
        const char *s = r;
        while (isalnum((unsigned char)*r) || *r == '_')
            r++;
        if (r == s)
            continue;
        if (*n + 1 >= *cap) {
            int ncap = *cap ? *cap * 2 : 64;
            char **nn = realloc(*names, (size_t)ncap * sizeof *nn);
            if (!nn)
                return -1;
            *names = nn;
            *cap = ncap;
        }
        if (!((*names)[(*n)++] = strndup(s, (size_t)(r - s))))
            return -1;
        (*names)[*n] = NULL;
    }
    return 0;
}

void edm_source_parts_free(edm_source_parts *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->text ? p->text[i] : NULL);
        for (char **q = p->names && p->names[i] ? p->names[i] : NULL; q && *q; q++)
            free(*q);
        free(p->names ? p->names[i] : NULL);
    }
    free(p->text);
    free(p->names);
    memset(p, 0, sizeof *p);
}

static int alloc_parts(edm_source_parts *out, int n)
{
    out->text = calloc((size_t)n, sizeof *out->text);
    out->names = calloc((size_t)n, sizeof *out->names);
    out->n = n;
    return out->text && out->names ? 0 : -1;
}

static int one_part(const char *source, edm_source_parts *out, edm_status *st)
{
    int n = 0, cap = 0;
    if (alloc_parts(out, 1) != 0 || !(out->text[0] = strdup(source)) ||
        add_kernel_names(source, strlen(source), &out->names[0], &n, &cap) != 0 ||
        (!out->names[0] && !(out->names[0] = calloc(1, sizeof *out->names[0])))) {
        edm_source_parts_free(out);
        return edm_nomem(st);
    }
    return 0;
}

int edm_cuda_source_split(const char *source, int max_parts, edm_source_parts *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    const char *first = strstr(source, MARK), *end = strstr(source, END_MARK);
    if (max_parts <= 1 || !first)
        return one_part(source, out, st);
    if (!end || end < first)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "kernel source: units without their end mark");
    int nunits = 0;
    for (const char *q = first; q; q = find_in(q + 1, end, MARK))
        nunits++;
    unit *u = calloc((size_t)nunits, sizeof *u);
    if (!u)
        return edm_nomem(st);
    int rc = 0, i = 0;
    for (const char *q = first; q && rc == 0; q = find_in(q + 1, end, MARK), i++) {
        const char *next = find_in(q + 1, end, MARK);
        if (!next)
            next = end;
        u[i] = (unit){.text = q, .len = (size_t)(next - q), .root = i, .part = -1};
        if (read_mark(q + strlen(MARK), &u[i]) != 0)
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "kernel source: unreadable unit mark %.60s", q + 1);
        u[i].work = unit_work(u[i].text, u[i].len);
    }
    /* units that call into each other share a part: join each with the (earlier) units it needs */
    for (i = 0; i < nunits && rc == 0; i++)
        for (const char *at = u[i].needs; at && rc == 0;) {
            int need = next_need(&at), j = i - 1;
            if (need < 0)
                break;
            while (j >= 0 && u[j].id != need)
                j--;
            if (j < 0)
                rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "kernel source: unit %d needs unit %d, not before it",
                              u[i].id, need);
            else
                u[find(u, i)].root = find(u, j);
        }
    /* the groups of units, heaviest first, each to the part with the least work so far */
    double *group_work = calloc((size_t)nunits, sizeof *group_work), part_work[EDM_CUBIN_BUNDLE_MAX] = {0};
    int *order = calloc((size_t)nunits, sizeof *order), ngroups = 0;
    if (rc == 0 && (!group_work || !order))
        rc = edm_nomem(st);
    for (i = 0; i < nunits && rc == 0; i++) {
        group_work[find(u, i)] += u[i].work;
        if (find(u, i) == i)
            order[ngroups++] = i;
    }
    int nparts = max_parts < ngroups ? max_parts : ngroups;
    nparts = nparts < EDM_CUBIN_BUNDLE_MAX ? nparts : EDM_CUBIN_BUNDLE_MAX; /* a bundle's cubins at most */
    for (int a = 1; a < ngroups && rc == 0; a++) /* insertion sort: heaviest first, then source order */
        for (int b = a; b > 0 && group_work[order[b]] > group_work[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int a = 0; a < ngroups && rc == 0; a++) {
        int best = 0;
        for (int p = 1; p < nparts; p++)
            best = part_work[p] < part_work[best] ? p : best;
        u[order[a]].part = best;
        part_work[best] += group_work[order[a]];
    }
    if (rc == 0 && nparts <= 1) {
        free(u);
        free(group_work);
        free(order);
        return one_part(source, out, st);
    }
    if (rc == 0 && alloc_parts(out, nparts) != 0)
        rc = edm_nomem(st);
    for (int p = 0; p < nparts && rc == 0; p++) {
        sbuf b = {0};
        int nn = 0, cap = 0;
        sb_putn(&b, source, (size_t)(first - source));
        for (i = 0; i < nunits; i++) {
            if (u[find(u, i)].part != p)
                continue;
            sb_putn(&b, u[i].text, u[i].len);
            if (add_kernel_names(u[i].text, u[i].len, &out->names[p], &nn, &cap) != 0)
                b.oom = 1;
        }
        sb_puts(&b, end);
        out->text[p] = b.p;
        if (b.oom || !out->text[p] || (!out->names[p] && !(out->names[p] = calloc(1, sizeof *out->names[p]))))
            rc = edm_nomem(st);
    }
    free(u);
    free(group_work);
    free(order);
    if (rc != 0)
        edm_source_parts_free(out);
    return rc;
}
