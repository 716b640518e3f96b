/* Tensor-core tiles measured on a device (`edmc bench --tune`), by
 * contraction: what codegen uses instead of the cost model's choice
 * (codegen/cuda_gemm_mma.h) for a GEMM the table names.
 *
 * A contraction is named by its op and its GEMM: gb GEMMs of gm × gn × gk,
 * k read a tap a tile when ktaps > 0 (cuda_gemm_mma.h).  The table's text,
 * one contraction a line ('#' starts a comment):
 *     OP GMxGNxGK GB KTAPS BMxBN/SPLITS [MS]
 * e.g. "conv2d 192x32768x1728 1 9 64x128/1 0.412", MS the time it measured
 * (informative). */
#ifndef EDMC_CODEGEN_CUDA_TILES_H
#define EDMC_CODEGEN_CUDA_TILES_H

#include <stdint.h>

#include "codegen/cuda_gemm_mma.h"
#include "codegen/text.h"
#include "compiler/status.h"

#define EDM_MMA_OP_NAME 24

typedef struct {
    char op[EDM_MMA_OP_NAME]; /* the contraction's op name ("" : none) */
    int64_t gm, gn, gk, gb, ktaps;
} edm_mma_key;

typedef struct {
    edm_mma_key key;
    edm_mma_tile tile;
    double ms; /* measured time of one launch (0: not recorded) */
} edm_mma_tuned;

typedef struct {
    edm_mma_tuned *e;
    int n, cap;
} edm_mma_tiles;

/* Whether two keys name the same contraction. */
int edm_mma_key_equal(const edm_mma_key *a, const edm_mma_key *b);
/* The entry for key, or NULL. */
const edm_mma_tuned *edm_mma_tiles_find(const edm_mma_tiles *t, const edm_mma_key *key);
/* Adds or replaces key's entry; 0 or -1 (out of memory, st set). */
int edm_mma_tiles_set(edm_mma_tiles *t, const edm_mma_key *key, edm_mma_tile tile, double ms, edm_status *st);
/* Parses the table's text (name: for the errors' positions, "FILE:LINE: ..."); 0 or -1. */
int edm_mma_tiles_parse(const char *text, const char *name, edm_mma_tiles *t, edm_status *st);
/* The table as text, its entries in order, after a comment line `header` (may be NULL). */
void edm_mma_tiles_format(const edm_mma_tiles *t, const char *header, sbuf *out);
void edm_mma_tiles_free(edm_mma_tiles *t);

#endif
