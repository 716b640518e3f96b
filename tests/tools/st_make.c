/* st_make: writes a safetensors file of test tensors, for the command-line
 * tests.  usage: st_make OUT.safetensors NAME:DTYPE:D0,D1,...:FILL ...
 * FILL: a number (every element), normal (N(0,1), seeded by the name),
 * onehot (one-hot rows over the last dimension), nan, inf.
 * An empty shape ("x:F32::1") is a scalar. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rng.h"
#include "runtime/safetensors.h"

static int add_tensor(edm_st_writer *w, char *spec, edm_status *st)
{
    char *name = strtok(spec, ":"), *dtype = strtok(NULL, ":"), *dims = strtok(NULL, ":"), *fill = strtok(NULL, ":");
    if (!fill) { /* an empty shape leaves three fields */
        fill = dims;
        dims = "";
    }
    edm_dtype t;
    if (!name || !dtype || !fill || edm_dtype_from_name(dtype, &t) != 0) {
        /* safetensors spells dtypes in capitals; the IR in lower case */
        char lower[8] = {0};
        for (int i = 0; dtype && dtype[i] && i < 7; i++)
            lower[i] = (char)(dtype[i] | 0x20);
        if (!name || !fill || edm_dtype_from_name(lower, &t) != 0)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "bad tensor spec '%s'", spec);
    }
    int64_t dim[EDM_MAX_RANK], n = 1;
    int rank = 0;
    for (char *d = strtok(dims, ","); d && rank < EDM_MAX_RANK; d = strtok(NULL, ",")) {
        dim[rank] = atoll(d);
        n *= dim[rank++];
    }
    float *data = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!data)
        return edm_nomem(st);
    edm_rng r = edm_rng_make(7, name);
    if (strcmp(fill, "normal") == 0) {
        edm_rng_normal(&r, 0, data, n);
    } else if (strcmp(fill, "onehot") == 0) {
        int64_t width = rank ? dim[rank - 1] : 1;
        for (int64_t i = 0; i < n; i++)
            data[i] = (float)((i % width) == (i / width) % width);
    } else {
        float v = strcmp(fill, "nan") == 0 ? NAN : strcmp(fill, "inf") == 0 ? INFINITY : strtof(fill, NULL);
        for (int64_t i = 0; i < n; i++)
            data[i] = v;
    }
    int rc = edm_st_writer_add_f32(w, name, t, rank, dim, data, st);
    free(data);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: st_make OUT NAME:DTYPE:DIMS:FILL ...\n");
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    edm_st_writer *w = edm_st_writer_new();
    int rc = w ? 0 : edm_nomem(&st);
    for (int i = 2; i < argc && rc == 0; i++)
        rc = add_tensor(w, argv[i], &st);
    if (rc == 0)
        rc = edm_st_writer_write(w, argv[1], &st);
    edm_st_writer_free(w);
    if (rc != 0)
        fprintf(stderr, "st_make: %s\n", st.msg);
    return rc ? 1 : 0;
}
