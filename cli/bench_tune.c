/* edmc bench --tune (bench_tune.h). */
#include "config.h"

#include "cli/bench_tune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/cuda_tiles_file.h"

#define DEFAULT_CANDIDATES "64x64,64x128,128x64,128x128,128x128@1"
#define MAX_CANDIDATES 16
/* A candidate replaces the tile so far only when it is this much faster (timing noise). */
#define MARGIN 0.97

/* One contraction: the tile it runs as things stand, and the fastest seen. */
typedef struct {
    edm_mma_key key;
    edm_mma_tile now, best;
    double now_ms, best_ms;
    double sum_ms; /* this run's launches of it, */
    int launches;  /* for its mean */
    edm_mma_tile run_tile;
} contraction;

typedef struct {
    contraction *c;
    int n, cap;
} contractions;

static contraction *find_or_add(contractions *all, const edm_mma_key *key, edm_status *st)
{
    for (int i = 0; i < all->n; i++)
        if (edm_mma_key_equal(&all->c[i].key, key))
            return &all->c[i];
    if (all->n == all->cap) {
        int cap = all->cap ? 2 * all->cap : 64;
        contraction *c = realloc(all->c, sizeof *c * (size_t)cap);
        if (!c) {
            edm_nomem(st);
            return NULL;
        }
        all->c = c;
        all->cap = cap;
    }
    contraction *c = &all->c[all->n++];
    memset(c, 0, sizeof *c);
    c->key = *key;
    c->now_ms = c->best_ms = -1;
    return c;
}

/* One profiled run's contractions into all: run 0 is things as they stand. */
static int add_run(contractions *all, const edm_cuda_profile_row *rows, int n, int run, edm_status *st)
{
    for (int i = 0; i < all->n; i++) {
        all->c[i].sum_ms = 0;
        all->c[i].launches = 0;
    }
    for (int i = 0; i < n; i++) {
        if (!rows[i].mma.op[0])
            continue;
        contraction *c = find_or_add(all, &rows[i].mma, st);
        if (!c)
            return -1;
        c->sum_ms += rows[i].ms;
        c->launches++;
        c->run_tile = rows[i].mma_tile;
    }
    for (int i = 0; i < all->n; i++) {
        contraction *c = &all->c[i];
        if (c->launches == 0)
            continue;
        double ms = c->sum_ms / c->launches;
        if (run == 0) {
            c->now = c->best = c->run_tile;
            c->now_ms = c->best_ms = ms;
        } else if (c->best_ms < 0 || ms < MARGIN * c->best_ms) {
            c->best = c->run_tile;
            c->best_ms = ms;
        }
    }
    return 0;
}

/* $EDMC_TUNE_TILES (or the default): BMxBN[/SPLITS][@1],...; splits 0 (the cost model's) unless given. */
static int candidates(edm_mma_tile *out, int *n, edm_status *st)
{
    const char *env = getenv("EDMC_TUNE_TILES");
    const char *list = env && env[0] ? env : DEFAULT_CANDIDATES;
    *n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char one[32];
        if (len == 0 || len >= sizeof one || *n == MAX_CANDIDATES)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "EDMC_TUNE_TILES=%s: expected up to %d tiles BMxBN[/SPLITS][@1], comma-separated", list,
                            MAX_CANDIDATES);
        memcpy(one, p, len);
        one[len] = '\0';
        edm_mma_tile t;
        if (edm_mma_parse_tile(one, &t) != 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "EDMC_TUNE_TILES: '%s': expected BMxBN or BMxBN/SPLITS, BM and BN 64 or 128, then @1 (one block an SM) "
                            "or nothing", one);
        if (!strchr(one, '/'))
            t.splits = 0;
        out[(*n)++] = t;
        p += len + (p[len] == ',' ? 1 : 0);
    }
    return 0;
}

static int tile_equal(edm_mma_tile a, edm_mma_tile b)
{
    return a.bm == b.bm && a.bn == b.bn && a.splits == b.splits && a.one_block == b.one_block;
}

/* The chosen tiles into the architecture's table (the other entries kept), and a summary. */
static int save(const contractions *all, const cli_opts *o, const edm_backend_options *bo, const char *arch,
                const char *device, int ncand, edm_status *st)
{
    edm_mma_tiles table;
    if (edm_cuda_tiles_load(arch, &table, st) != 0)
        return -1;
    int rc = 0, changed = 0;
    double before = 0, after = 0;
    for (int i = 0; i < all->n && rc == 0; i++) {
        const contraction *c = &all->c[i];
        if (c->now_ms < 0) /* not in the run as things stand: cannot be compared */
            continue;
        changed += !tile_equal(c->now, c->best);
        before += c->now_ms;
        after += c->best_ms;
        rc = edm_mma_tiles_set(&table, &c->key, c->best, c->best_ms, st);
    }
    char header[512]; /* room for the longest device name (255), architecture and date */
    time_t now = time(NULL);
    struct tm tm;
    char date[32] = "";
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%Y-%m-%d", &tm);
    snprintf(header, sizeof header, "tensor-core tiles measured by edmc bench --tune on %s (%s), %s, batch %lld, %s",
             device, arch, edm_dtype_name(bo->storage), (long long)o->batch, date);
    char path[4200];
    if (rc == 0)
        rc = edm_cuda_tiles_save_path(arch, path, sizeof path, st);
    if (rc == 0)
        rc = edm_cuda_tiles_save(path, &table, header, st);
    if (rc == 0)
        fprintf(stderr,
                "tune: %d contractions, each on %d tilings; %d on another tile than before; their kernels "
                "%.3f ms -> %.3f ms a run (%.1f%%); the table: %s\n",
                all->n, ncand + 1, changed, before, after, before > 0 ? 100 * (after - before) / before : 0.0, path);
    edm_mma_tiles_free(&table);
    return rc;
}

int bench_tune(const cli_opts *o, const edm_graph *g, const edm_backend_options *bo, edm_status *st)
{
    if (bo->device != EDM_DEVICE_CUDA || !bo->cpu.fuse || (bo->storage != EDM_F16 && bo->storage != EDM_BF16) ||
        bo->no_tensor_cores || o->pkg)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--tune measures the tensor-core tiles of a fused plan compiled here: --device=cuda, "
                        "--precision=fp16 or bf16, --fuse=all (or a list), not --package");
    edm_mma_tile cand[MAX_CANDIDATES];
    int ncand = 0;
    if (candidates(cand, &ncand, st) != 0)
        return -1;
    /* somewhere to keep the result, known before the runs (the architecture only names the file) */
    char where[4200];
    if (edm_cuda_tiles_save_path("sm_00", where, sizeof where, st) != 0) {
        edm_status_prefix(st, "--tune");
        return -1;
    }
    contractions all = {0};
    char arch[16] = "", device[256] = "";
    int rc = 0;
    for (int run = 0; run <= ncand && rc == 0; run++) {
        edm_backend_options b = *bo;
        b.mma_tile = run == 0 ? (edm_mma_tile){0} : cand[run - 1];
        edm_cuda_profile_row *rows = NULL;
        int n = 0;
        rc = bench_profile(o, g, &b, &rows, &n, arch, sizeof arch, device, sizeof device, st);
        if (rc == 0)
            rc = add_run(&all, rows, n, run, st);
        free(rows);
    }
    if (rc == 0 && all.n == 0)
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "--tune: the plan runs no tensor-core contraction on this device (%s)", arch);
    if (rc == 0)
        rc = save(&all, o, bo, arch, device, ncand, st);
    free(all.c);
    return rc;
}
