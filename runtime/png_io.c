/* libpng in one place (png_io.h). */
#include "config.h"

#include "runtime/png_io.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ handlers */

/* The error pointer of every low-level read or write struct: where the
 * message goes, and (reading) the bytes. */
typedef struct {
    const unsigned char *p;
    size_t n, pos;
    char *msg; /* EDM_PNG_MSG bytes */
} png_ctx;

static void on_error(png_structp png, png_const_charp text)
{
    png_ctx *c = png_get_error_ptr(png);
    if (c && c->msg)
        snprintf(c->msg, EDM_PNG_MSG, "%s", text);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp text)
{
    (void)png;
    (void)text;
}

static void read_mem(png_structp png, png_bytep out, size_t len)
{
    png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos)
        png_error(png, "the file is truncated");
    memcpy(out, c->p + c->pos, len);
    c->pos += len;
}

int edm_png_is_png(const unsigned char *bytes, size_t len) { return len >= 8 && png_sig_cmp(bytes, 0, 8) == 0; }

/* ------------------------------------------------------------ reading */

/* All libpng calls, under its setjmp handler; allocations are kept in *o
 * (not in locals the longjmp could clobber) and freed by the caller.
 * accept (if given) sees o->header before any pixel is allocated; its
 * non-zero answer ends the read and is returned. */
static int read_png(png_ctx *c, int (*accept)(const edm_png_header *h, void *ctx), void *ctx, edm_png_rows *o)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return EDM_PNG_NOMEM;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return o->nc < 0 ? EDM_PNG_NOMEM : EDM_PNG_DAMAGED;
    }
    png_set_read_fn(png, c, read_mem);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    o->header = (edm_png_header){.width = w, .height = h, .depth = depth, .colour = (ctype & PNG_COLOR_MASK_COLOR) != 0};
    int verdict = accept ? accept(&o->header, ctx) : 0;
    if (verdict != 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return verdict;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    o->nc = png_get_channels(png, info);
    o->rowbytes = png_get_rowbytes(png, info);
    if (png_get_bit_depth(png, info) != 8 || o->nc < 1 || o->nc > 4 || o->rowbytes != (size_t)w * (size_t)o->nc)
        png_error(png, "unexpected pixel layout after conversion to 8 bits");
    o->rows = malloc((h ? h : 1) * sizeof *o->rows);
    o->pix = o->rows ? malloc(o->rowbytes * h) : NULL;
    if (!o->pix) {
        o->nc = -1; /* out of memory, said after the longjmp */
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++)
        o->rows[y] = o->pix + (size_t)y * o->rowbytes;
    png_read_image(png, o->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

static int read_mem_png(const unsigned char *bytes, size_t len, int (*accept)(const edm_png_header *h, void *ctx),
                        void *ctx, edm_png_rows *out, char msg[EDM_PNG_MSG])
{
    memset(out, 0, sizeof *out);
    snprintf(msg, EDM_PNG_MSG, "unknown error");
    if (!edm_png_is_png(bytes, len)) {
        snprintf(msg, EDM_PNG_MSG, "not a PNG file");
        return EDM_PNG_DAMAGED;
    }
    png_ctx c = {bytes, len, 0, msg};
    int rc = read_png(&c, accept, ctx, out);
    if (rc != 0)
        edm_png_rows_free(out);
    return rc;
}

static int header_only(const edm_png_header *h, void *ctx)
{
    (void)h;
    (void)ctx;
    return 1;
}

int edm_png_read_header(const unsigned char *bytes, size_t len, edm_png_header *h, char msg[EDM_PNG_MSG])
{
    edm_png_rows o;
    int rc = read_mem_png(bytes, len, header_only, NULL, &o, msg);
    *h = o.header;
    return rc == 1 ? 0 : rc;
}

int edm_png_read_rows(const unsigned char *bytes, size_t len, int (*accept)(const edm_png_header *h, void *ctx),
                      void *ctx, edm_png_rows *out, char msg[EDM_PNG_MSG])
{
    return read_mem_png(bytes, len, accept, ctx, out, msg);
}

void edm_png_rows_free(edm_png_rows *r)
{
    free(r->pix);
    free(r->rows);
    r->pix = NULL;
    r->rows = NULL;
}

int edm_png_read_rgb8(const unsigned char *bytes, size_t len, int (*too_big)(uint32_t w, uint32_t h, void *ctx),
                      void *ctx, unsigned char **px, int *width, int *height, char msg[EDM_PNG_MSG])
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, bytes, len)) {
        snprintf(msg, EDM_PNG_MSG, "%s", img.message);
        return EDM_PNG_DAMAGED;
    }
    int rc = too_big(img.width, img.height, ctx);
    if (rc != 0) {
        png_image_free(&img);
        return rc;
    }
    img.format = PNG_FORMAT_RGBA;
    unsigned char *rgba = malloc(PNG_IMAGE_SIZE(img));
    if (!rgba) {
        png_image_free(&img);
        return EDM_PNG_NOMEM;
    }
    if (!png_image_finish_read(&img, NULL, rgba, 0, NULL)) {
        snprintf(msg, EDM_PNG_MSG, "%s", img.message);
        free(rgba);
        return EDM_PNG_DAMAGED;
    }
    size_t n = (size_t)img.width * img.height;
    for (size_t i = 0; i < n; i++) /* in place: RGBA to RGB */
        memmove(rgba + 3 * i, rgba + 4 * i, 3);
    *px = rgba;
    *width = (int)img.width;
    *height = (int)img.height;
    return 0;
}

/* ------------------------------------------------------------ writing */

int edm_png_write(FILE *fp, unsigned char *const *rows, int channels, int height, int width, char msg[EDM_PNG_MSG])
{
    png_ctx c = {NULL, 0, 0, msg};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
    if (!png) {
        snprintf(msg, EDM_PNG_MSG, "cannot create a PNG writer");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(msg, EDM_PNG_MSG, "cannot create a PNG info structure");
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
    png_write_image(png, (png_bytepp)rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int edm_png_encode_rgb8(const unsigned char *px, int width, int height, unsigned char **out, size_t *len,
                        char msg[EDM_PNG_MSG])
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    img.flags = PNG_IMAGE_FLAG_FAST; /* quick to write and to read back; the pixels are what matter */
    /* the size first (a NULL buffer), then the image */
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, px, 0, NULL)) {
        snprintf(msg, EDM_PNG_MSG, "%s", img.message);
        return -1;
    }
    unsigned char *buf = malloc(size);
    if (!buf)
        return EDM_PNG_NOMEM;
    if (!png_image_write_to_memory(&img, buf, &size, 0, px, 0, NULL)) {
        snprintf(msg, EDM_PNG_MSG, "%s", img.message);
        free(buf);
        return -1;
    }
    *out = buf;
    *len = size;
    return 0;
}
