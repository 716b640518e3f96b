#include "config.h"

#include "runtime/latent_dataset.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int edm_npy_f32(const float *v, int rank, const int64_t *dim, unsigned char **out, size_t *len, edm_status *st)
{
    char shape[256], header[512];
    size_t used = 0;
    int64_t count = 1;
    shape[0] = '\0';
    for (int d = 0; d < rank && used < sizeof shape; d++) {
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%lld,%s", (long long)dim[d],
                                 d + 1 < rank ? " " : "");
        count *= dim[d];
    }
    if (rank > 1) /* numpy writes (8,) for one dimension, (8, 64, 64) for more */
        shape[strlen(shape) - 1] = '\0';
    int h = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    size_t total = 10 + (size_t)h + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)h + pad + 1, bytes = (size_t)count * 4;
    unsigned char *b = malloc(10 + hlen + bytes);
    if (!b)
        return edm_nomem(st);
    static const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    memcpy(b, magic, sizeof magic);
    b[8] = (unsigned char)(hlen & 0xff);
    b[9] = (unsigned char)(hlen >> 8);
    memcpy(b + 10, header, (size_t)h);
    memset(b + 10 + h, ' ', pad);
    b[10 + hlen - 1] = '\n';
    unsigned char *p = b + 10 + hlen;
    for (int64_t k = 0; k < count; k++) { /* little-endian, whatever the host */
        uint32_t u;
        memcpy(&u, &v[k], 4);
        for (int i = 0; i < 4; i++)
            p[4 * k + i] = (unsigned char)(u >> (8 * i));
    }
    *out = b;
    *len = 10 + hlen + bytes;
    return 0;
}

int edm_latent_encode_image(void *encoder, const edm_rgb8 *img, unsigned char **data, size_t *len, edm_status *st)
{
    edm_latent_encoder *e = encoder;
    if (!e->vae) {
        edm_vae_spec spec = {.weights = e->weights, .model = e->model, .decoder = 0, .resolution = img->width,
                             .batch = 1, .backend = e->backend};
        if (!(e->vae = edm_vae_open(&spec, e->src, st)))
            return -1;
    }
    int R = edm_vae_image_resolution(e->vae), r = edm_vae_latent_resolution(e->vae);
    int C = edm_vae_latent_channels(e->vae);
    if (img->width != R || img->height != R)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "an image of %dx%d among images of %dx%d", img->width,
                        img->height, R, R);
    size_t plane = (size_t)R * (size_t)R;
    unsigned char *chw = malloc(3 * plane);
    float *ms = malloc(sizeof(float) * 2 * (size_t)C * (size_t)r * (size_t)r);
    int rc = chw && ms ? 0 : edm_nomem(st);
    for (size_t i = 0; rc == 0 && i < plane; i++)
        for (int c = 0; c < 3; c++)
            chw[(size_t)c * plane + i] = img->px[3 * i + (size_t)c];
    if (rc == 0)
        rc = edm_vae_encode(e->vae, chw, 1, ms, st);
    int64_t dim[3] = {2 * (int64_t)C, r, r};
    if (rc == 0)
        rc = edm_npy_f32(ms, 3, dim, data, len, st);
    free(chw);
    free(ms);
    return rc;
}

void edm_latent_encoder_close(edm_latent_encoder *e)
{
    edm_vae_free(e->vae);
    e->vae = NULL;
}
