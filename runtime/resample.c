/* Separable resampling of RGB8 images (resample.h). */
#include "config.h"

#include "runtime/resample.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static double filter_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

static double filter_bicubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0)
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= 3.14159265358979323846;
    return sin(x) / x;
}

static double filter_lanczos(double x) { return x >= -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0; }

typedef struct {
    double (*f)(double);
    double support;
} filter_def;

static filter_def filter_of(edm_filter f)
{
    switch (f) {
    case EDM_FILTER_BOX: return (filter_def){filter_box, 0.5};
    case EDM_FILTER_BICUBIC: return (filter_def){filter_bicubic, 2.0};
    default: return (filter_def){filter_lanczos, 3.0};
    }
}

/* Per output sample: the first input index, the count, and `ksize` fixed-point
 * weights. */
typedef struct {
    int ksize;
    int *first, *count;
    int32_t *k;
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->first);
    free(c->count);
    free(c->k);
}

static int make_coeffs(int in_size, int out_size, filter_def fd, coeffs *c)
{
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = fd.support * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->first = malloc(sizeof(int) * (size_t)out_size);
    c->count = malloc(sizeof(int) * (size_t)out_size);
    c->k = calloc((size_t)out_size * (size_t)c->ksize, sizeof(int32_t));
    double *w = malloc(sizeof(double) * (size_t)c->ksize);
    if (!c->first || !c->count || !c->k || !w) {
        free(w);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ss = 1.0 / filterscale, total = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > c->ksize)
            xmax = c->ksize;
        for (int x = 0; x < xmax; x++) {
            w[x] = fd.f((x + xmin - center + 0.5) * ss);
            total += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = total != 0.0 ? w[x] / total : w[x];
            double fixed = v * (double)(1U << PRECISION_BITS);
            c->k[(size_t)xx * (size_t)c->ksize + (size_t)x] = (int32_t)(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
        }
        c->first[xx] = xmin;
        c->count[xx] = xmax;
    }
    free(w);
    return 0;
}

static unsigned char clip8(int64_t v)
{
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

/* One pass along x (horizontal) or y, from in (w × h) to out. */
static void pass(const unsigned char *in, int w, int h, int horizontal, const coeffs *c, unsigned char *out, int out_n)
{
    int ow = horizontal ? out_n : w, oh = horizontal ? h : out_n;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int o = horizontal ? x : y;
            const int32_t *k = c->k + (size_t)o * (size_t)c->ksize;
            for (int ch = 0; ch < 3; ch++) {
                int64_t acc = (int64_t)1 << (PRECISION_BITS - 1);
                for (int i = 0; i < c->count[o]; i++) {
                    int src = c->first[o] + i;
                    size_t at = horizontal ? ((size_t)y * (size_t)w + (size_t)src) : ((size_t)src * (size_t)w + (size_t)x);
                    acc += (int64_t)in[at * 3 + (size_t)ch] * k[i];
                }
                out[((size_t)y * (size_t)ow + (size_t)x) * 3 + (size_t)ch] = clip8(acc);
            }
        }
}

int edm_resize_rgb8(const edm_rgb8 *in, int width, int height, edm_filter filter, edm_rgb8 *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (width < 1 || height < 1 || in->width < 1 || in->height < 1)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "resize %dx%d to %dx%d", in->width, in->height, width,
                        height);
    filter_def fd = filter_of(filter);
    coeffs ch = {0}, cv = {0};
    unsigned char *mid = NULL, *px = malloc((size_t)width * (size_t)height * 3);
    int rc = px ? 0 : -1;
    const unsigned char *src = in->px;
    int sw = in->width;
    if (rc == 0 && width != in->width) {
        mid = malloc((size_t)width * (size_t)in->height * 3);
        rc = mid && make_coeffs(in->width, width, fd, &ch) == 0 ? 0 : -1;
        if (rc == 0)
            pass(in->px, in->width, in->height, 1, &ch, mid, width);
        src = mid;
        sw = width;
    }
    if (rc == 0 && height != in->height) {
        rc = make_coeffs(in->height, height, fd, &cv);
        if (rc == 0)
            pass(src, sw, in->height, 0, &cv, px, height);
    } else if (rc == 0) {
        memcpy(px, src, (size_t)width * (size_t)height * 3);
    }
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(mid);
    if (rc != 0) {
        free(px);
        return edm_nomem(st);
    }
    out->width = width;
    out->height = height;
    out->px = px;
    return 0;
}

int edm_crop_rgb8(const edm_rgb8 *in, int x0, int y0, int w, int h, edm_rgb8 *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (x0 < 0 || y0 < 0 || w < 1 || h < 1 || x0 + w > in->width || y0 + h > in->height)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "crop %dx%d at %d,%d of %dx%d", w, h, x0, y0, in->width,
                        in->height);
    out->px = malloc((size_t)w * (size_t)h * 3);
    if (!out->px)
        return edm_nomem(st);
    for (int y = 0; y < h; y++)
        memcpy(out->px + (size_t)y * (size_t)w * 3, in->px + ((size_t)(y0 + y) * (size_t)in->width + (size_t)x0) * 3,
               (size_t)w * 3);
    out->width = w;
    out->height = h;
    return 0;
}
