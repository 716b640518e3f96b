/* The table of measured tensor-core tiles (cuda_tiles.h). */
#include "config.h"

#include "codegen/cuda_tiles.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int edm_mma_key_equal(const edm_mma_key *a, const edm_mma_key *b)
{
    return strcmp(a->op, b->op) == 0 && a->gm == b->gm && a->gn == b->gn && a->gk == b->gk && a->gb == b->gb &&
           a->ktaps == b->ktaps;
}

const edm_mma_tuned *edm_mma_tiles_find(const edm_mma_tiles *t, const edm_mma_key *key)
{
    for (int i = 0; t && i < t->n; i++)
        if (edm_mma_key_equal(&t->e[i].key, key))
            return &t->e[i];
    return NULL;
}

int edm_mma_tiles_set(edm_mma_tiles *t, const edm_mma_key *key, edm_mma_tile tile, double ms, edm_status *st)
{
    for (int i = 0; i < t->n; i++)
        if (edm_mma_key_equal(&t->e[i].key, key)) {
            t->e[i].tile = tile;
            t->e[i].ms = ms;
            return 0;
        }
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 32;
        edm_mma_tuned *e = realloc(t->e, sizeof *e * (size_t)cap);
        if (!e)
            return edm_nomem(st);
        t->e = e;
        t->cap = cap;
    }
    t->e[t->n++] = (edm_mma_tuned){.key = *key, .tile = tile, .ms = ms};
    return 0;
}

/* One line's fields; 0, or -1 with what is wrong in why. */
static int parse_line(const char *line, edm_mma_tuned *out, const char **why)
{
    char op[EDM_MMA_OP_NAME + 1] = "", tile[32] = "";
    long long gm = 0, gn = 0, gk = 0, gb = 0, taps = -1;
    double ms = 0;
    int used = 0;
    int got = sscanf(line, " %24s %lldx%lldx%lld %lld %lld %31s%n", op, &gm, &gn, &gk, &gb, &taps, tile, &used);
    if (got != 7) {
        *why = "expected OP GMxGNxGK GB KTAPS BMxBN/SPLITS[@1] [MS]";
        return -1;
    }
    if (strlen(op) >= EDM_MMA_OP_NAME) {
        *why = "the op name is too long";
        return -1;
    }
    if (gm < 1 || gn < 1 || gk < 1 || gb < 1 || taps < 0) {
        *why = "the GEMM's sizes must be positive (KTAPS 0 or more)";
        return -1;
    }
    const char *rest = line + used;
    int more = 0;
    if (sscanf(rest, " %lf%n", &ms, &more) == 1) {
        if (!(ms >= 0)) {
            *why = "MS must be a time, 0 or more";
            return -1;
        }
        rest += more;
    }
    rest += strspn(rest, " \t\r");
    if (*rest != '\0' && *rest != '#') {
        *why = "unexpected text after the tile";
        return -1;
    }
    edm_mma_tile t;
    if (edm_mma_parse_tile(tile, &t) != 0) {
        *why = "the tile must be BMxBN or BMxBN/SPLITS, BM and BN 64 or 128, 1 to 1024 splits, then @1 or nothing";
        return -1;
    }
    memset(out, 0, sizeof *out);
    memcpy(out->key.op, op, strlen(op) + 1); /* shorter than EDM_MMA_OP_NAME, checked above */
    out->key.gm = gm;
    out->key.gn = gn;
    out->key.gk = gk;
    out->key.gb = gb;
    out->key.ktaps = taps;
    out->tile = t;
    out->ms = ms;
    return 0;
}

int edm_mma_tiles_parse(const char *text, const char *name, edm_mma_tiles *t, edm_status *st)
{
    memset(t, 0, sizeof *t);
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        lineno++;
        char line[512];
        if (len >= sizeof line) {
            edm_mma_tiles_free(t);
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%d: the line is too long", name, lineno);
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (end ? 1 : 0);
        const char *s = line + strspn(line, " \t\r");
        if (*s == '\0' || *s == '#')
            continue;
        edm_mma_tuned e;
        const char *why = "";
        if (parse_line(s, &e, &why) != 0) {
            edm_mma_tiles_free(t);
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%d: %s", name, lineno, why);
        }
        if (edm_mma_tiles_set(t, &e.key, e.tile, e.ms, st) != 0) {
            edm_mma_tiles_free(t);
            return -1;
        }
    }
    return 0;
}

void edm_mma_tiles_format(const edm_mma_tiles *t, const char *header, sbuf *out)
{
    if (header)
        sb_printf(out, "# %s\n", header);
    sb_puts(out, "# op gm x gn x gk, gemms, taps, tile bm x bn / splits [@1: one block an SM], ms a launch\n");
    for (int i = 0; i < t->n; i++) {
        const edm_mma_tuned *e = &t->e[i];
        char tile[48];
        edm_mma_format_tile(tile, sizeof tile, e->tile);
        sb_printf(out, "%s %lldx%lldx%lld %lld %lld %s %.6g\n", e->key.op, (long long)e->key.gm, (long long)e->key.gn,
                  (long long)e->key.gk, (long long)e->key.gb, (long long)e->key.ktaps, tile, e->ms);
    }
}

void edm_mma_tiles_free(edm_mma_tiles *t)
{
    if (!t)
        return;
    free(t->e);
    memset(t, 0, sizeof *t);
}
