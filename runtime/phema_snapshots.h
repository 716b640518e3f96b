/* A training run's power-function EMA snapshots as post-hoc EMA reads them:
 * finding them in a folder (network-snapshot-<kimg>-<σ_rel>.safetensors, or
 * the reference's .pkl), checking that they belong to one run, and writing a
 * reconstruction Σ_i c_i·snapshot_i (runtime/phema.h solves for c). */
#ifndef EDMC_PHEMA_SNAPSHOTS_H
#define EDMC_PHEMA_SNAPSHOTS_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/status.h"
#include "runtime/safetensors.h"

typedef struct {
    char *name; /* the file's name inside the folder */
    char *path;
    int64_t kimg;
    double std;  /* σ_rel */
    double nimg; /* the profile's end, in images, recovered from kimg as the reference does */
    edm_st_file *f;
} edm_phema_snapshot;

typedef struct {
    edm_phema_snapshot *s; /* by nimg, then σ_rel */
    int n, cap;
} edm_phema_snapshots;

/* The snapshots named <prefix>-<kimg>-<σ_rel> in dir up to max_kimg (< 0:
 * all), opened, sorted; kimg and σ_rel from their metadata where it has
 * them.  Fails when there are none, when none is early enough, when two have
 * the same time and σ_rel, or when they differ in configuration or tensors. */
int edm_phema_snapshots_find(edm_phema_snapshots *set, const char *dir, const char *prefix, int64_t max_kimg,
                             edm_status *st);
void edm_phema_snapshots_free(edm_phema_snapshots *set);

/* s[0, len) as a finite number (σ_rel in a file name or an option). */
int edm_phema_parse_number(const char *s, size_t len, double *out);

/* What one reconstruction is. */
typedef struct {
    const double *coef; /* [set->n]: snapshot i's weight */
    const char *const *buffers; /* tensors copied from the latest snapshot, not averaged */
    int nbuffers;
    int64_t kimg;
    double std, nimg;
} edm_phema_output;

/* Tensor e (an entry of the latest snapshot) of the reconstruction into acc
 * (e->numel values; tmp as large): a buffer is the latest snapshot's, a
 * parameter Σ_i coef[i]·snapshot_i. */
int edm_phema_tensor(const edm_phema_snapshots *set, const edm_phema_output *out, const edm_st_entry *e, double *acc,
                     double *tmp, edm_status *st);

/* Writes Σ_i coef[i]·snapshot_i (each tensor of the latest snapshot, in its
 * dtype) to path, atomically, with the latest snapshot's metadata and the
 * profile's kimg, σ_rel, nimg and coefficients. */
int edm_phema_write(const edm_phema_snapshots *set, const edm_phema_output *out, const char *path, edm_status *st);

#endif
