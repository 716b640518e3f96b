/* Training data: image datasets in the reference's layout and a prefetching
 * loader that turns them into batches as the model sees them (spec §4 "Data
 * encodings").
 *
 * A dataset is a folder or a .zip holding .png (pixels) or .npy (latents)
 * files, found recursively and sorted by relative path ("00000/img00000000.png"),
 * plus an optional dataset.json = {"labels": [["<relative path>", <class>], …]}.
 * Every .png / .npy file counts (the reference's files are named img*.png /
 * img*.npy); names starting with '.' (and __MACOSX/ in zips) are skipped, and
 * mixing .png and .npy is an error.  Only the names are indexed at open;
 * images are read when used.
 *
 *   pixels  (.png, 8-bit gray/gray+alpha/RGB/RGBA/palette): x/127.5 − 1 per
 *           channel; alpha is dropped, gray is repeated for 3-channel models,
 *           colour into a 1-channel model is an error.
 *   latents (.npy, '<f4' or '<f2', C order, shape (2C, R, R) with C = 4): the
 *           first C planes are the VAE mean, the next C its std; each use draws
 *           z = mean + std·ε and stores z·scale + bias per channel with
 *           scale = 0.5 / [4.17, 4.62, 3.71, 3.28], bias = −[5.81, 3.25, 0.12, −2.15]·scale.
 *
 * Built-in synthetic datasets (spec "builtin:NAME" or "builtin:NAMEres"):
 *   builtin:shapes   one circle, square or triangle (class 0, 1, 2) in random
 *                    colours, size and position on a plain background;
 *   builtin:stripes  soft stripes in one of 4 directions (class 0..3: horizontal,
 *                    vertical, diagonal, anti-diagonal), random period, phase, colours;
 *   builtin:blobs    1..4 soft round blobs (class = count − 1) on a background.
 * They exist at any resolution and channel count (3: images; 4: latent-like
 * fields), values in [−1, 1]; image i is a pure function of i; the label is
 * class mod label_dim.  Their nominal size is EDM_BUILTIN_SIZE.  A number after
 * the name ("builtin:shapes16") is the resolution it is meant for: it must equal
 * the model's resolution, or opening fails.
 *
 * Order: the stream of images is epoch after epoch, each epoch a permutation
 * of 0..size−1 drawn by Fisher–Yates from Philox under (seed, epoch).  Stream
 * position s is image perm_{s / size}[s % size]; its latent noise ε is drawn
 * from Philox under (seed, s).  So the whole stream is a function of the seed,
 * and a loader started at s = k gives exactly what an uninterrupted one gives
 * from its k-th image on.  Precisely: perm_e is Fisher–Yates (i = size−1 … 1,
 * swap i with j uniform in 0..i) with j from Philox under key (seed) and
 * counter (i, stream "edm.data.shuffle" mixed with e); and latent element e of
 * stream position s uses ε = edm_rng_normal(edm_rng_make(seed,
 * "edm.data.latent_noise"), s·C·R·R + e). */
#ifndef EDMC_DATA_H
#define EDMC_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/status.h"

#define EDM_BUILTIN_SIZE 10000

typedef struct edm_dataset edm_dataset;
typedef struct edm_loader edm_loader;

/* Opens spec (a folder, a .zip file or builtin:NAME) for a model of the given
 * resolution, channels and label_dim (0: unconditional; labels are then
 * ignored).  Checks the labels (count = number of images, one per file, each in
 * 0..label_dim−1; a conditional model needs dataset.json) and reads the first
 * image to check its size.  NULL and st filled on error. */
edm_dataset *edm_dataset_open(const char *spec, int resolution, int channels, int label_dim, edm_status *st);
void edm_dataset_close(edm_dataset *ds);

/* What a dataset fixes of a model's shape, read from its first file and its
 * dataset.json without a model: resolution and channels (0 where any fits:
 * the built-ins, unless named with a resolution), latent (1 for .npy), and
 * the number of classes (the largest label + 1; 0 without labels; 3 or 4
 * for the built-ins). */
typedef struct {
    int resolution, channels, classes, latent;
} edm_dataset_geometry;
int edm_dataset_probe(const char *spec, edm_dataset_geometry *g, edm_status *st);

int64_t edm_dataset_size(const edm_dataset *ds);
int edm_dataset_resolution(const edm_dataset *ds);
int edm_dataset_channels(const edm_dataset *ds);
int edm_dataset_label_dim(const edm_dataset *ds);
/* 1: the files are latents (.npy) and each read draws noise. */
int edm_dataset_is_latent(const edm_dataset *ds);
/* Relative path of image i ("00000/img00000000.png"); for built-ins "shapes#i"
 * written into buf.  Returns buf. */
const char *edm_dataset_name(const edm_dataset *ds, int64_t i, char *buf, size_t bufsize);
/* Class of image i (−1 when label_dim = 0). */
int edm_dataset_label(const edm_dataset *ds, int64_t i);

/* Image i (in name order), encoded as the model sees it, into image
 * [C, R, R]; labels (may be NULL) gets its one-hot row [label_dim].  For
 * latents ε comes from (seed, stream_pos); pixels and built-ins ignore both.
 * Safe to call from several threads at once. */
int edm_dataset_read(edm_dataset *ds, int64_t i, uint64_t seed, uint64_t stream_pos, float *image, float *labels,
                     edm_status *st);

/* The order of epoch `epoch` under seed: perm[0..size−1]. */
void edm_dataset_permutation(const edm_dataset *ds, uint64_t seed, uint64_t epoch, int64_t *perm);

/* A loader: background threads fill a small queue with the next batches of
 * the stream, from stream position start_index on (images already consumed,
 * for resume; need not be a multiple of batch).  The batches are the same
 * whatever the number of threads.  The dataset must outlive the loader;
 * several loaders may share one dataset. */
#define EDM_LOADER_DEFAULT_THREADS 4
#define EDM_LOADER_MAX_THREADS 64
edm_loader *edm_loader_new(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, edm_status *st);
/* The same with nthreads decoding threads (0: EDM_LOADER_DEFAULT_THREADS). */
edm_loader *edm_loader_new_threads(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, int nthreads,
                                   edm_status *st);
/* A rank's share of the stream (data-parallel training): of every `period`
 * positions from start_index on (a multiple of period), the `take` from
 * `offset` on.  Rank r of N with global batch B: period B, offset r·B/N, take
 * B/N; the union of the ranks' batches is the single-process stream. */
edm_loader *edm_loader_new_shard(edm_dataset *ds, int64_t batch, uint64_t seed, int64_t start_index, int64_t period,
                                 int64_t offset, int64_t take, edm_status *st);
/* The next batch: images [batch, C, R, R], labels [batch, label_dim] one-hot
 * (may be NULL; ignored when label_dim = 0).  A read error of a thread is
 * returned here, naming the file, at the batch it concerns, and on every call
 * after.  Returns 0 or -1. */
int edm_loader_next(edm_loader *ld, float *images, float *labels, edm_status *st);
/* Stream position of the first image of the batch edm_loader_next returns next. */
int64_t edm_loader_position(const edm_loader *ld);
/* Stops and joins the threads (also after an error); NULL is fine. */
void edm_loader_free(edm_loader *ld);

#endif
