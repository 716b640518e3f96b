/* `edmc dataset convert`: an image folder or zip (PNG and JPEG files) made
 * into a training dataset in the layout the reference's dataset tool writes:
 * NNNNN/imgNNNNNNNN.png (uncompressed-style PNGs, 8-bit RGB, named by the
 * source image's index in sorted order) plus dataset.json =
 * {"labels": [["NNNNN/imgNNNNNNNN.png", class], ...]} or {"labels": null},
 * in a folder (which must be empty or new) or a stored zip.
 *
 * Sources: every file with an image extension (as the reference's tool
 * counts them; only PNG and JPEG decode), sorted by path.  Labels: the
 * source's dataset.json, else the sorted top-level folder names when there
 * are two or more; a file without a label makes the whole dataset unlabelled
 * (labels null), as in the reference.
 *
 * Transforms (the reference's): none (a resize to --resolution when given,
 * Lanczos), center-crop (the largest centered square, Lanczos),
 * center-crop-wide (a centered band of the output's aspect ratio, Lanczos,
 * on a black square canvas; images too small for it are skipped),
 * center-crop-dhariwal (ADM's: box halvings while at least twice the size,
 * bicubic to the short side, centered crop).  Every output image must be
 * square, a power of two wide, and all of one size. */
#ifndef EDMC_DATASET_CONVERT_H
#define EDMC_DATASET_CONVERT_H

#include <stdint.h>

#include "compiler/status.h"
#include "runtime/image_decode.h"

typedef enum {
    EDM_TRANSFORM_NONE,
    EDM_TRANSFORM_CENTER_CROP,
    EDM_TRANSFORM_CENTER_CROP_WIDE,
    EDM_TRANSFORM_CENTER_CROP_DHARIWAL,
} edm_transform;

/* "center-crop" etc. to the enum; -1 if unknown. */
int edm_transform_parse(const char *name, edm_transform *out);

/* The transform of one image to width × height (0 × 0: none given, only for
 * EDM_TRANSFORM_NONE).  out->px is NULL when the transform skips the image. */
int edm_transform_image(const edm_rgb8 *in, edm_transform t, int width, int height, edm_rgb8 *out, edm_status *st);

typedef struct {
    const char *source, *dest;
    int64_t max_images; /* < 0: all */
    edm_transform transform;
    int width, height; /* --resolution; 0 when not given */
    /* Called for each source file that cannot be read or decoded (it is left
     * out, and the conversion goes on), and after each image with the counts. */
    void (*on_unreadable)(void *ctx, const edm_status *why);
    void (*on_progress)(void *ctx, int64_t done, int64_t total);
    void *ctx;
    /* `dataset encode`: each image (after the transform) becomes the entry
     * NNNNN/<stem>NNNNNNNN.<ext> this function makes (malloc'd into *data)
     * instead of a PNG; NULL: NNNNN/imgNNNNNNNN.png. */
    int (*encode)(void *encode_ctx, const edm_rgb8 *img, unsigned char **data, size_t *len, edm_status *st);
    void *encode_ctx;
    const char *entry_stem, *entry_ext;
} edm_convert_opts;

typedef struct {
    int64_t sources;    /* image files found (after --max-images) */
    int64_t written;    /* images in the dataset */
    int64_t skipped;    /* left out by center-crop-wide */
    int64_t unreadable; /* left out because they could not be read */
    int resolution;     /* of the images written (0 if none) */
    int labelled;       /* 1: dataset.json has labels */
} edm_convert_result;

/* Converts; an error (bad options, a source that cannot be listed, an
 * image of the wrong size, a destination that cannot be written) leaves no
 * zip behind.  Unreadable files are not errors here: they are counted. */
int edm_dataset_convert(const edm_convert_opts *o, edm_convert_result *r, edm_status *st);

#endif
