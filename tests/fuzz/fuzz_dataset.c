/* Fuzz target for the dataset readers (runtime/data.c): PNG images, latent
 * .npy files, dataset.json labels and zip archives, any bytes, must open and
 * read or fail with a status — never crash, hang, leak or read out of bounds.
 *
 * An input is a small header and a file:
 *   byte 0     what the file is: 0 an image (img00000000.png), 1 latents
 *              (img00000000.npy), 2 dataset.json beside a valid 4×4 RGB
 *              image, 3 a zip archive (data.zip) opened as the dataset
 *   bytes 1-3  the model it is opened for: resolution 1 + b1 % 16,
 *              channels 1 + b2 % 4, label_dim b3 % 4
 *   the rest   the file's bytes
 * The dataset is opened for that model and its first images read (pixels,
 * labels; latents with their noise).  Replayed over tests/fuzz/data_corpus by
 * `make check` (replay_main.c); EDMC_FUZZ_VERBOSE=1 prints what each input
 * came to (opened and read, or the error), to see what a corpus reaches. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/data.h"
#include "runtime/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int put_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = size == 0 || fwrite(data, 1, size, fp) == size;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* Opens the dataset at spec for the model and reads its first images. */
static void open_and_read(const char *spec, int resolution, int channels, int label_dim)
{
    edm_status st;
    edm_status_init(&st);
    int verbose = getenv("EDMC_FUZZ_VERBOSE") != NULL;
    edm_dataset *ds = edm_dataset_open(spec, resolution, channels, label_dim, &st);
    if (!ds) {
        if (verbose)
            fprintf(stderr, "# not opened: %s\n", st.msg);
        return;
    }
    size_t n = (size_t)channels * (size_t)resolution * (size_t)resolution;
    float *image = malloc(sizeof *image * n), *labels = malloc(sizeof *labels * (size_t)(label_dim + 1));
    int64_t count = edm_dataset_size(ds);
    for (int64_t i = 0; image && labels && i < count && i < 4; i++) {
        char name[256];
        (void)edm_dataset_name(ds, i, name, sizeof name);
        (void)edm_dataset_label(ds, i);
        int rc = edm_dataset_read(ds, i, 1, (uint64_t)i, image, labels, &st);
        if (verbose)
            fprintf(stderr, "# image %lld of %lld: %s\n", (long long)i, (long long)count, rc == 0 ? "read" : st.msg);
    }
    free(image);
    free(labels);
    edm_dataset_close(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    char dir[] = "/tmp/edmc-fuzz-data-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    int kind = data[0] % 4, resolution = 1 + data[1] % 16, channels = 1 + data[2] % 4, label_dim = data[3] % 4;
    const uint8_t *body = data + 4;
    size_t len = size - 4;
    char file[64], spec[64], image[64];
    static const char *const names[] = {"img00000000.png", "img00000000.npy", "dataset.json", "data.zip"};
    snprintf(file, sizeof file, "%s/%s", dir, names[kind]);
    snprintf(image, sizeof image, "%s/img00000000.png", dir);
    snprintf(spec, sizeof spec, "%s", kind == 3 ? file : dir);
    int ok = put_file(file, body, len) == 0;
    if (ok && kind == 2) { /* labels for a valid image */
        static const float pixels[3 * 4 * 4] = {0.5f, -0.5f, 0.25f};
        edm_status st;
        edm_status_init(&st);
        ok = edm_image_write_png(image, pixels, 3, 4, 4, &st) == 0;
    }
    if (ok)
        open_and_read(spec, resolution, channels, label_dim);
    unlink(file);
    unlink(image);
    rmdir(dir);
    return 0;
}
