/* The built-in datasets (data_builtin.h). */
#include "config.h"

#include "runtime/data_builtin.h"

#include <math.h>
#include <stddef.h>

#include "runtime/rng.h"

typedef struct {
    edm_rng r;
    uint64_t next;
} draw;

static float draw_u(draw *d)
{
    float v;
    edm_rng_uniform(&d->r, d->next++, &v, 1);
    return v;
}

int edm_builtin_class(edm_builtin_kind k, int64_t i)
{
    static const char *const names[] = {"edm.data.builtin.shapes", "edm.data.builtin.stripes",
                                        "edm.data.builtin.blobs"};
    draw d = {edm_rng_make((uint64_t)i, names[k]), 0};
    float u = draw_u(&d);
    int n = k == EDM_BUILTIN_STRIPES || k == EDM_BUILTIN_BLOBS ? 4 : 3;
    int c = (int)(u * (float)n);
    return c < n ? c : n - 1;
}

/* Background and a contrasting foreground colour per channel. */
static void two_colours(draw *d, int ch, float *bg, float *fg)
{
    for (int c = 0; c < ch; c++) {
        bg[c] = draw_u(d) * 2.0f - 1.0f;
        float delta = 0.6f + 0.4f * draw_u(d);
        fg[c] = bg[c] > 0 ? bg[c] - delta : bg[c] + delta;
    }
}

static int inside_shape(int kind, float x, float y)
{
    /* x, y in the shape's frame, unit size */
    if (kind == 0)
        return x * x + y * y <= 1.0f;
    if (kind == 1)
        return fabsf(x) <= 0.85f && fabsf(y) <= 0.85f;
    /* equilateral triangle of circumradius 1, apex up (y grows downwards) */
    const float s3 = 1.7320508f;
    return y <= 0.5f && (s3 * x - y) <= 1.0f && (-s3 * x - y) <= 1.0f;
}

void edm_builtin_render(edm_builtin_kind kind, int res, int ch, int64_t i, float *out)
{
    static const char *const names[] = {"edm.data.builtin.shapes", "edm.data.builtin.stripes",
                                        "edm.data.builtin.blobs"};
    int C = ch < EDM_BUILTIN_MAX_CHANNELS ? ch : EDM_BUILTIN_MAX_CHANNELS, R = res;
    size_t plane = (size_t)R * (size_t)R;
    draw d = {edm_rng_make((uint64_t)i, names[kind]), 1}; /* element 0 chose the class */
    int cls = edm_builtin_class(kind, i);
    draw dc = {d.r, 1000}; /* colours, apart from the geometry */
    float fr = (float)R;
    float bg[EDM_BUILTIN_MAX_CHANNELS], fg[EDM_BUILTIN_MAX_CHANNELS];
    if (kind == EDM_BUILTIN_SHAPES) {
        /* upright and at least a quarter of the image across: what makes a
         * shape a square or a triangle is then plain at 16x16, and a small
         * model learns it within minutes (rotated, 0.18 to 0.35 of the image,
         * the main job's samples were blobs after the same training) */
        float size = fr * (0.25f + 0.15f * draw_u(&d));
        float cx = size + (fr - 2 * size) * draw_u(&d), cy = size + (fr - 2 * size) * draw_u(&d);
        two_colours(&dc, C, bg, fg);
        for (int y = 0; y < R; y++)
            for (int x = 0; x < R; x++) {
                int hits = 0; /* 4×4 samples per pixel */
                for (int sy = 0; sy < 4; sy++)
                    for (int sx = 0; sx < 4; sx++) {
                        float px = ((float)x + ((float)sx + 0.5f) / 4 - cx) / size;
                        float py = ((float)y + ((float)sy + 0.5f) / 4 - cy) / size;
                        hits += inside_shape(cls, px, py);
                    }
                float cov = (float)hits / 16.0f;
                size_t at = (size_t)y * (size_t)R + (size_t)x;
                for (int c = 0; c < C; c++)
                    out[(size_t)c * plane + at] = bg[c] * (1 - cov) + fg[c] * cov;
            }
    } else if (kind == EDM_BUILTIN_STRIPES) {
        static const float dirs[4][2] = {{0, 1}, {1, 0}, {0.70710678f, 0.70710678f}, {0.70710678f, -0.70710678f}};
        float period = fmaxf(3.0f, fr * (0.2f + 0.3f * draw_u(&d)));
        float phase = 6.2831853f * draw_u(&d);
        two_colours(&dc, C, bg, fg);
        for (int y = 0; y < R; y++)
            for (int x = 0; x < R; x++) {
                float p = dirs[cls][0] * ((float)x + 0.5f) + dirs[cls][1] * ((float)y + 0.5f);
                float t = 0.5f + 0.5f * sinf(6.2831853f * p / period + phase);
                size_t at = (size_t)y * (size_t)R + (size_t)x;
                for (int c = 0; c < C; c++)
                    out[(size_t)c * plane + at] = bg[c] * (1 - t) + fg[c] * t;
            }
    } else {
        int nb = cls + 1;
        float bx[4], by[4], bs[4], col[4][EDM_BUILTIN_MAX_CHANNELS];
        for (int b = 0; b < nb; b++) {
            bs[b] = fr * (0.07f + 0.08f * draw_u(&d));
            bx[b] = fr * (0.15f + 0.7f * draw_u(&d));
            by[b] = fr * (0.15f + 0.7f * draw_u(&d));
        }
        for (int c = 0; c < C; c++) {
            bg[c] = draw_u(&dc) * 2.0f - 1.0f;
            for (int b = 0; b < nb; b++) {
                float delta = 0.6f + 0.4f * draw_u(&dc);
                col[b][c] = bg[c] > 0 ? bg[c] - delta : bg[c] + delta;
            }
        }
        for (int y = 0; y < R; y++)
            for (int x = 0; x < R; x++) {
                float cov[4];
                for (int b = 0; b < nb; b++) {
                    float dx = (float)x + 0.5f - bx[b], dy = (float)y + 0.5f - by[b];
                    cov[b] = expf(-(dx * dx + dy * dy) / (2 * bs[b] * bs[b]));
                }
                size_t at = (size_t)y * (size_t)R + (size_t)x;
                for (int c = 0; c < C; c++) {
                    float v = bg[c];
                    for (int b = 0; b < nb; b++)
                        v = v * (1 - cov[b]) + col[b][c] * cov[b];
                    out[(size_t)c * plane + at] = v;
                }
            }
    }
}
