/* A C program that runs an edmc package through the C API (docs/c-api.md):
 *
 *   sample PACKAGE WEIGHTS N STEPS           N images from seeds 0..N-1
 *   sample PACKAGE WEIGHTS N forward IN.f32  D(x; sigma, labels) for N images,
 *                                            IN.f32 holding x, sigma, labels
 *                                            as little-endian floats
 *
 * It prints "shape N C H W" and then every value of the result, one a line.
 * Build it with:  cc sample.c $(pkg-config --cflags --libs edmc) */
#include <edmc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads count floats from path; 0 or -1 (with a message). */
static int read_floats(const char *path, float *out, size_t count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t got = fread(out, sizeof *out, count, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != count || extra) {
        fprintf(stderr, "%s: expected exactly %zu floats\n", path, count);
        return -1;
    }
    return 0;
}

static int run(edmc_model *m, int argc, char **argv, long n, float *out, edmc_error *err)
{
    int C, H, W, L;
    if (edmc_image_shape(m, &C, &H, &W, &L, err) != EDMC_OK)
        return -1;
    size_t numel = (size_t)n * (size_t)C * (size_t)H * (size_t)W;
    if (argc == 6 && strcmp(argv[4], "forward") == 0) {
        float *in = malloc(sizeof *in * (numel + (size_t)n + (size_t)n * (size_t)L));
        int rc = in ? read_floats(argv[5], in, numel + (size_t)n + (size_t)n * (size_t)L) : -1;
        if (rc == 0)
            rc = edmc_forward(m, n, in, in + numel, L ? in + numel + n : NULL, out, err) == EDMC_OK ? 0 : -1;
        free(in);
        return rc;
    }
    uint64_t *seeds = malloc(sizeof *seeds * (size_t)n);
    if (!seeds)
        return -1;
    for (long i = 0; i < n; i++)
        seeds[i] = (uint64_t)i;
    int rc = edmc_sample(m, seeds, n, atoi(argv[4]), out, err) == EDMC_OK ? 0 : -1;
    free(seeds);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s PACKAGE WEIGHTS N STEPS | PACKAGE WEIGHTS N forward IN.f32\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[3], NULL, 10);
    if (n < 1 || n > 4096) {
        fprintf(stderr, "N must be 1 to 4096\n");
        return 2;
    }
    edmc_error err = {EDMC_OK, ""};
    edmc_model *m = NULL;
    float *out = NULL;
    int C = 0, H = 0, W = 0, rc = 1;
    if (edmc_open(argv[1], 0, &m, &err) == EDMC_OK && edmc_set_weights(m, argv[2], &err) == EDMC_OK &&
        edmc_image_shape(m, &C, &H, &W, NULL, &err) == EDMC_OK) {
        size_t numel = (size_t)n * (size_t)C * (size_t)H * (size_t)W;
        out = malloc(sizeof *out * numel);
        if (out && run(m, argc, argv, n, out, &err) == 0) {
            printf("shape %ld %d %d %d\n", n, C, H, W);
            for (size_t k = 0; k < numel; k++)
                printf("%.9g\n", (double)out[k]);
            rc = fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
            if (rc != 0)
                snprintf(err.message, sizeof err.message, "writing the values to stdout failed");
        }
    }
    if (rc != 0)
        fprintf(stderr, "sample: %s (edmc error %d)\n", err.code != EDMC_OK ? err.message : "failed", (int)err.code);
    free(out);
    edmc_close(m);
    return rc;
}
