/* PNG output (through runtime/png_io.c), grids of images and plots. */
#include "config.h"

#include "runtime/image.h"

#include "runtime/files.h"
#include "runtime/png_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SIDE 65536 /* pixels per side of any image written */

unsigned char edm_image_to_u8(float x)
{
    float v = x * 127.5f + 128.0f;
    if (!(v > 0)) /* NaN too */
        return 0;
    return v >= 255 ? 255 : (unsigned char)v;
}

/* ------------------------------------------------------ atomic writing */

typedef struct {
    unsigned char **rows;
    int channels, height, width;
} rows_ctx;

static int write_png_body(FILE *fp, void *ctx, char *err, size_t errsize)
{
    const rows_ctx *r = ctx;
    char msg[EDM_PNG_MSG];
    int rc = edm_png_write(fp, r->rows, r->channels, r->height, r->width, msg);
    if (rc != 0)
        snprintf(err, errsize, "PNG: %s", msg);
    return rc;
}

static int write_rows(const char *path, unsigned char **rows, int channels, int height, int width, edm_status *st)
{
    rows_ctx ctx = {rows, channels, height, width};
    return edm_write_atomic(path, write_png_body, &ctx, st);
}

/* ------------------------------------------------------------ images */

static int check_dims(const char *path, int channels, int64_t height, int64_t width, edm_status *st)
{
    if (channels != 1 && channels != 3)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: a PNG needs 1 or 3 channels, the images have %d", path,
                        channels);
    if (height < 1 || width < 1 || height > MAX_SIDE || width > MAX_SIDE)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: %lldx%lld pixels: each side must be 1 to %d", path,
                        (long long)width, (long long)height, MAX_SIDE);
    return 0;
}

/* Copies image chw into the HWC byte canvas at pixel (x0, y0), each pixel
 * as a scale × scale block. */
static void paint(unsigned char *canvas, int64_t canvas_w, const float *chw, int channels, int height, int width,
                  int scale, int64_t x0, int64_t y0)
{
    int64_t plane = (int64_t)height * width;
    for (int64_t y = 0; y < (int64_t)height * scale; y++)
        for (int64_t x = 0; x < (int64_t)width * scale; x++) {
            unsigned char *px = canvas + ((y0 + y) * canvas_w + x0 + x) * channels;
            for (int c = 0; c < channels; c++)
                px[c] = edm_image_to_u8(chw[c * plane + y / scale * width + x / scale]);
        }
}

/* Writes a HWC byte canvas. */
static int write_canvas(const char *path, unsigned char *canvas, int channels, int height, int width, edm_status *st)
{
    unsigned char **rows = malloc(sizeof *rows * (size_t)height);
    if (!rows)
        return edm_nomem(st);
    for (int64_t y = 0; y < height; y++)
        rows[y] = canvas + y * width * channels;
    int rc = write_rows(path, rows, channels, height, width, st);
    free(rows);
    return rc;
}

int edm_image_write_png(const char *path, const float *chw, int channels, int height, int width, edm_status *st)
{
    if (check_dims(path, channels, height, width, st) != 0)
        return -1;
    unsigned char *canvas = malloc((size_t)height * (size_t)width * (size_t)channels);
    if (!canvas)
        return edm_nomem(st);
    paint(canvas, width, chw, channels, height, width, 1, 0, 0);
    int rc = write_canvas(path, canvas, channels, height, width, st);
    free(canvas);
    return rc;
}

int edm_image_write_grid(const char *path, const float *images, int64_t n, int channels, int height, int width,
                         int scale, edm_status *st)
{
    if (n < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: a grid of no images", path);
    if (scale < 1 || scale > 64)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: scale %d: expected 1 to 64", path, scale);
    int64_t cols = (int64_t)ceil(sqrt((double)n));
    while (cols * cols < n) /* guard against rounding */
        cols++;
    int64_t rows = (n + cols - 1) / cols;
    int64_t gw = cols * width * scale, gh = rows * height * scale;
    if (check_dims(path, channels, gh, gw, st) != 0)
        return -1;
    unsigned char *canvas = calloc((size_t)(gh * gw), (size_t)channels);
    if (!canvas)
        return edm_nomem(st);
    int64_t size = (int64_t)channels * height * width;
    for (int64_t i = 0; i < n; i++)
        paint(canvas, gw, images + i * size, channels, height, width, scale, (i % cols) * width * scale,
              (i / cols) * height * scale);
    int rc = write_canvas(path, canvas, channels, (int)gh, (int)gw, st);
    free(canvas);
    return rc;
}

/* ------------------------------------------------------------ plots */

#define PLOT_W 640
#define PLOT_H 420
#define PLOT_LEFT 110 /* the plot area inside the canvas */
#define PLOT_RIGHT 620
#define PLOT_TOP 40
#define PLOT_BOTTOM 350
#define FONT_SCALE 2 /* each font pixel is 2×2 canvas pixels */
#define CHAR_W (6 * FONT_SCALE)

typedef struct {
    char c;
    unsigned char rows[7]; /* 5 bits each, bit 4 the leftmost */
} glyph;

static const glyph font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x00, 0x0F, 0x11, 0x0F, 0x01, 0x0E}}, {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}}, {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}}, {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
};

typedef struct {
    unsigned char r, g, b;
} rgb;

static const rgb BLACK = {0, 0, 0}, GRID = {225, 225, 225}, LINE = {31, 90, 180}, MARK = {210, 30, 30};

static void put(unsigned char *canvas, int x, int y, rgb c)
{
    if (x < 0 || y < 0 || x >= PLOT_W || y >= PLOT_H)
        return;
    unsigned char *p = canvas + ((size_t)y * PLOT_W + (size_t)x) * 3;
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

static void fill_rect(unsigned char *canvas, int x0, int y0, int x1, int y1, rgb c)
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
            put(canvas, x, y, c);
}

/* Bresenham, `width` pixels thick (a square brush). */
static void draw_line(unsigned char *canvas, int x0, int y0, int x1, int y1, int width, rgb c)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    int lo = -(width - 1) / 2, hi = width / 2;
    for (;;) {
        fill_rect(canvas, x0 + lo, y0 + lo, x0 + hi, y0 + hi, c);
        if (x0 == x1 && y0 == y1)
            break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

static void draw_circle(unsigned char *canvas, int cx, int cy, int radius, rgb c)
{
    for (int y = -radius - 1; y <= radius + 1; y++)
        for (int x = -radius - 1; x <= radius + 1; x++) {
            double d = sqrt((double)(x * x + y * y));
            if (fabs(d - radius) < 1.0)
                put(canvas, cx + x, cy + y, c);
        }
}

/* Text with its top-left corner at (x, y). */
static void draw_text(unsigned char *canvas, int x, int y, const char *text, rgb c)
{
    for (; *text; text++, x += CHAR_W) {
        const glyph *g = NULL;
        for (size_t k = 0; k < sizeof font / sizeof font[0]; k++)
            if (font[k].c == *text)
                g = &font[k];
        if (!g)
            continue;
        for (int row = 0; row < 7; row++)
            for (int col = 0; col < 5; col++)
                if (g->rows[row] & (0x10 >> col))
                    fill_rect(canvas, x + col * FONT_SCALE, y + row * FONT_SCALE, x + col * FONT_SCALE + FONT_SCALE - 1,
                              y + row * FONT_SCALE + FONT_SCALE - 1, c);
    }
}

static int text_width(const char *text) { return (int)strlen(text) * CHAR_W - FONT_SCALE; }

/* A range [lo, hi] widened by pad (a fraction) and never empty. */
static void pad_range(double *lo, double *hi, double pad)
{
    if (!(*hi > *lo)) {
        double d = fabs(*lo) > 0 ? 0.05 * fabs(*lo) : 1.0;
        *lo -= d;
        *hi += d;
        return;
    }
    double d = (*hi - *lo) * pad;
    *lo -= d;
    *hi += d;
}

/* A step of 1, 2 or 5 × 10^k giving about `want` ticks over [lo, hi]. */
static double nice_step(double lo, double hi, int want)
{
    double raw = (hi - lo) / want;
    double p = pow(10, floor(log10(raw)));
    double f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void tick_label(double v, double step, char *buf, size_t size)
{
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) < step * 1e-6)
        v = 0; /* no "-0.00" */
    if (decimals > 6 || fabs(v) >= 1e7)
        snprintf(buf, size, "%.3g", v);
    else
        snprintf(buf, size, "%.*f", decimals, v);
}

static int to_px(double v, double lo, double hi, int p0, int p1)
{
    return (int)lround(p0 + (v - lo) / (hi - lo) * (p1 - p0));
}

/* The x step: the most ticks (up to 8) whose labels keep apart. */
static double x_step(double lo, double hi)
{
    char buf[64];
    double step = nice_step(lo, hi, 2);
    for (int want = 8; want > 2; want--) {
        double s = nice_step(lo, hi, want);
        int widest = 0;
        for (double t = ceil(lo / s - 1e-9) * s; t <= hi + s * 1e-9; t += s) {
            tick_label(t, s, buf, sizeof buf);
            widest = text_width(buf) > widest ? text_width(buf) : widest;
        }
        if (s / (hi - lo) * (PLOT_RIGHT - PLOT_LEFT) >= widest + 2 * CHAR_W) {
            step = s;
            break;
        }
    }
    return step;
}

/* The axes, grid and tick labels for the ranges [xlo, xhi] × [ylo, yhi]. */
static void draw_axes(unsigned char *canvas, double xlo, double xhi, double ylo, double yhi)
{
    char buf[64];
    double xs = x_step(xlo, xhi), ys = nice_step(ylo, yhi, 6);
    for (double t = ceil(xlo / xs - 1e-9) * xs; t <= xhi + xs * 1e-9; t += xs) {
        int px = to_px(t, xlo, xhi, PLOT_LEFT, PLOT_RIGHT);
        draw_line(canvas, px, PLOT_TOP, px, PLOT_BOTTOM, 1, GRID);
        draw_line(canvas, px, PLOT_BOTTOM, px, PLOT_BOTTOM + 5, 1, BLACK);
        tick_label(t, xs, buf, sizeof buf);
        draw_text(canvas, px - text_width(buf) / 2, PLOT_BOTTOM + 10, buf, BLACK);
    }
    for (double t = ceil(ylo / ys - 1e-9) * ys; t <= yhi + ys * 1e-9; t += ys) {
        int py = to_px(t, ylo, yhi, PLOT_BOTTOM, PLOT_TOP);
        draw_line(canvas, PLOT_LEFT, py, PLOT_RIGHT, py, 1, GRID);
        draw_line(canvas, PLOT_LEFT - 5, py, PLOT_LEFT, py, 1, BLACK);
        tick_label(t, ys, buf, sizeof buf);
        draw_text(canvas, PLOT_LEFT - 10 - text_width(buf), py - 7, buf, BLACK);
    }
    draw_line(canvas, PLOT_LEFT, PLOT_TOP, PLOT_RIGHT, PLOT_TOP, 1, BLACK);
    draw_line(canvas, PLOT_LEFT, PLOT_BOTTOM, PLOT_RIGHT, PLOT_BOTTOM, 1, BLACK);
    draw_line(canvas, PLOT_LEFT, PLOT_TOP, PLOT_LEFT, PLOT_BOTTOM, 1, BLACK);
    draw_line(canvas, PLOT_RIGHT, PLOT_TOP, PLOT_RIGHT, PLOT_BOTTOM, 1, BLACK);
}

int edm_image_plot(const char *path, const double *x, const double *y, int n, int mark, const char *xlabel,
                   const char *ylabel, edm_status *st)
{
    if (n < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: a plot of no points", path);
    int *order = malloc(sizeof *order * (size_t)n);
    unsigned char *canvas = malloc((size_t)PLOT_W * PLOT_H * 3);
    if (!order || !canvas) {
        free(order);
        free(canvas);
        return edm_nomem(st);
    }
    memset(canvas, 255, (size_t)PLOT_W * PLOT_H * 3);
    /* the finite points, sorted by x (insertion sort: plots are small) */
    int m = 0;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            continue;
        int k = m++;
        while (k > 0 && x[order[k - 1]] > x[i]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
        xlo = fmin(xlo, x[i]);
        xhi = fmax(xhi, x[i]);
        ylo = fmin(ylo, y[i]);
        yhi = fmax(yhi, y[i]);
    }
    if (m == 0) {
        xlo = ylo = 0;
        xhi = yhi = 1;
    }
    pad_range(&xlo, &xhi, 0.04);
    pad_range(&ylo, &yhi, 0.08);
    draw_axes(canvas, xlo, xhi, ylo, yhi);
    if (xlabel)
        draw_text(canvas, (PLOT_LEFT + PLOT_RIGHT - text_width(xlabel)) / 2, PLOT_BOTTOM + 36, xlabel, BLACK);
    if (ylabel)
        draw_text(canvas, PLOT_LEFT - text_width(ylabel) / 2 < 4 ? 4 : PLOT_LEFT - text_width(ylabel) / 2,
                  PLOT_TOP - 26, ylabel, BLACK);
    for (int k = 0; k < m; k++) {
        int i = order[k];
        int px = to_px(x[i], xlo, xhi, PLOT_LEFT, PLOT_RIGHT), py = to_px(y[i], ylo, yhi, PLOT_BOTTOM, PLOT_TOP);
        if (k > 0) {
            int j = order[k - 1];
            /* a non-finite point between them breaks the line */
            int broken = 0;
            for (int q = 0; q < n; q++)
                broken |= (!isfinite(y[q]) && isfinite(x[q]) && x[q] > x[j] && x[q] < x[i]);
            if (!broken)
                draw_line(canvas, to_px(x[j], xlo, xhi, PLOT_LEFT, PLOT_RIGHT),
                          to_px(y[j], ylo, yhi, PLOT_BOTTOM, PLOT_TOP), px, py, 2, LINE);
        }
    }
    for (int k = 0; k < m; k++) {
        int i = order[k];
        int px = to_px(x[i], xlo, xhi, PLOT_LEFT, PLOT_RIGHT), py = to_px(y[i], ylo, yhi, PLOT_BOTTOM, PLOT_TOP);
        fill_rect(canvas, px - 2, py - 2, px + 2, py + 2, LINE);
    }
    if (mark >= 0 && mark < n && isfinite(x[mark]) && isfinite(y[mark])) {
        int px = to_px(x[mark], xlo, xhi, PLOT_LEFT, PLOT_RIGHT), py = to_px(y[mark], ylo, yhi, PLOT_BOTTOM, PLOT_TOP);
        draw_circle(canvas, px, py, 8, MARK);
        draw_circle(canvas, px, py, 9, MARK);
        char buf[96];
        snprintf(buf, sizeof buf, "min %.4g at %s%s%.4g", y[mark], xlabel ? xlabel : "", xlabel ? "=" : "", x[mark]);
        draw_text(canvas, PLOT_RIGHT - text_width(buf), PLOT_TOP - 26, buf, MARK);
    }
    int rc = write_canvas(path, canvas, 3, PLOT_H, PLOT_W, st);
    free(order);
    free(canvas);
    return rc;
}
