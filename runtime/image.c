/* PNG output through libpng, every call under its setjmp error handler. */
#include "config.h"

#include "runtime/image.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
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

/* ------------------------------------------------------------ libpng */

typedef struct {
    char msg[256];
} png_failure;

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_failure *f = png_get_error_ptr(png);
    if (f)
        snprintf(f->msg, sizeof f->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Encodes rows (height rows of width·channels bytes) to fp; on an error
 * libpng reports, fail->msg says what and -1 is returned. */
static int encode_png(FILE *fp, png_bytep *rows, int channels, int height, int width, png_failure *fail)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, fail, on_png_error, on_png_warning);
    if (!png) {
        snprintf(fail->msg, sizeof fail->msg, "cannot create a PNG writer");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(fail->msg, sizeof fail->msg, "cannot create a PNG info structure");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* ------------------------------------------------------ atomic writing */

static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if ((size_t)(slash - path) >= sizeof dir)
        return 0; /* too long to name here; the file itself is synced */
    else
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && (err == EINVAL || err == ENOTSUP))
        rc = 0;
    errno = err;
    return rc;
}

/* Writes the temporary file fd (closed here) and syncs it. */
static int write_temp(int fd, png_bytep *rows, int channels, int height, int width, png_failure *fail)
{
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        snprintf(fail->msg, sizeof fail->msg, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    int rc = encode_png(fp, rows, channels, height, width, fail);
    if (rc == 0 && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) {
        snprintf(fail->msg, sizeof fail->msg, "%s", strerror(errno));
        rc = -1;
    }
    if (fclose(fp) != 0 && rc == 0) {
        snprintf(fail->msg, sizeof fail->msg, "%s", strerror(errno));
        rc = -1;
    }
    return rc;
}

static int write_rows(const char *path, png_bytep *rows, int channels, int height, int width, edm_status *st)
{
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp)
        return edm_nomem(st);
    snprintf(tmp, len, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int err = errno;
        free(tmp);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot create a temporary file: %s", path, strerror(err));
    }
    png_failure fail = {{0}};
    int rc = 0;
    if (write_temp(fd, rows, channels, height, width, &fail) != 0) {
        remove(tmp);
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot write the PNG: %s", path, fail.msg);
    } else if (rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot rename %s over it: %s", path, tmp, strerror(err));
    } else if (sync_parent(path) != 0) {
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot sync its folder: %s", path, strerror(errno));
    }
    free(tmp);
    return rc;
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

/* Copies image chw into the HWC byte canvas at pixel (x0, y0). */
static void paint(unsigned char *canvas, int64_t canvas_w, const float *chw, int channels, int height, int width,
                  int64_t x0, int64_t y0)
{
    int64_t plane = (int64_t)height * width;
    for (int64_t y = 0; y < height; y++)
        for (int64_t x = 0; x < width; x++) {
            unsigned char *px = canvas + ((y0 + y) * canvas_w + x0 + x) * channels;
            for (int c = 0; c < channels; c++)
                px[c] = edm_image_to_u8(chw[c * plane + y * width + x]);
        }
}

/* Writes a HWC byte canvas. */
static int write_canvas(const char *path, unsigned char *canvas, int channels, int height, int width, edm_status *st)
{
    png_bytep *rows = malloc(sizeof *rows * (size_t)height);
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
    paint(canvas, width, chw, channels, height, width, 0, 0);
    int rc = write_canvas(path, canvas, channels, height, width, st);
    free(canvas);
    return rc;
}

int edm_image_write_grid(const char *path, const float *images, int64_t n, int channels, int height, int width,
                         edm_status *st)
{
    if (n < 1)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: a grid of no images", path);
    int64_t cols = (int64_t)ceil(sqrt((double)n));
    while (cols * cols < n) /* guard against rounding */
        cols++;
    int64_t rows = (n + cols - 1) / cols;
    int64_t gw = cols * width, gh = rows * height;
    if (check_dims(path, channels, gh, gw, st) != 0)
        return -1;
    unsigned char *canvas = calloc((size_t)(gh * gw), (size_t)channels);
    if (!canvas)
        return edm_nomem(st);
    int64_t size = (int64_t)channels * height * width;
    for (int64_t i = 0; i < n; i++)
        paint(canvas, gw, images + i * size, channels, height, width, (i % cols) * width, (i / cols) * height);
    int rc = write_canvas(path, canvas, channels, (int)gh, (int)gw, st);
    free(canvas);
    return rc;
}
