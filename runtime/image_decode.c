/* PNG and JPEG decoding to RGB, and uncompressed PNG encoding (image_decode.h). */
#include "config.h"

#include "runtime/image_decode.h"

#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "runtime/png_io.h"

/* Larger sources are refused before their pixels are allocated. */
#define DECODE_MAX_PIXELS ((size_t)1 << 28)

void edm_rgb8_free(edm_rgb8 *im)
{
    free(im->px);
    im->px = NULL;
    im->width = im->height = 0;
}

static int too_large(const char *name, size_t w, size_t h, edm_status *st)
{
    if (w == 0 || h == 0 || w > DECODE_MAX_PIXELS / h)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %zux%zu pixels: empty or larger than edmc reads", name, w,
                        h);
    return 0;
}

/* ------------------------------------------------------------ PNG */

typedef struct {
    const char *name;
    edm_status *st;
} size_check;

static int png_too_big(uint32_t w, uint32_t h, void *ctx)
{
    const size_check *c = ctx;
    return too_large(c->name, w, h, c->st);
}

/* libpng's simplified reader: every PNG colour type and depth as 8-bit RGB,
 * the alpha dropped (PIL's convert('RGB') drops it too). */
static int decode_png(const unsigned char *bytes, size_t len, const char *name, edm_rgb8 *out, edm_status *st)
{
    char msg[EDM_PNG_MSG];
    size_check c = {name, st};
    int rc = edm_png_read_rgb8(bytes, len, png_too_big, &c, &out->px, &out->width, &out->height, msg);
    if (rc == EDM_PNG_NOMEM)
        return edm_nomem(st);
    if (rc == EDM_PNG_DAMAGED)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a damaged PNG (%s)", name, msg);
    return rc; /* 0, or too large (said) */
}

/* ------------------------------------------------------------ JPEG */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX]; /* the first corrupt-data warning */
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo) { (void)cinfo; }

/* libjpeg only warns about damaged data (a truncated file is filled with
 * gray); PIL refuses such files, and so does edmc. */
static void jpeg_on_emit(j_common_ptr cinfo, int level)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    if (level < 0 && !e->warning[0])
        e->pub.format_message(cinfo, e->warning);
}

/* What the decoder allocated, kept outside the locals a longjmp may clobber. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    unsigned char *px;
    int too_big, cmyk;
} jpeg_state;

static int jpeg_run(jpeg_state *s, const unsigned char *bytes, size_t len)
{
    if (setjmp(s->err.jump))
        return -1;
    jpeg_create_decompress(&s->cinfo);
    jpeg_mem_src(&s->cinfo, bytes, (unsigned long)len);
    (void)jpeg_read_header(&s->cinfo, TRUE);
    if (s->cinfo.jpeg_color_space == JCS_CMYK || s->cinfo.jpeg_color_space == JCS_YCCK) {
        s->cmyk = 1;
        return -1;
    }
    s->cinfo.out_color_space = JCS_RGB;
    (void)jpeg_start_decompress(&s->cinfo);
    size_t w = s->cinfo.output_width, h = s->cinfo.output_height;
    if (w == 0 || h == 0 || w > DECODE_MAX_PIXELS / h || s->cinfo.output_components != 3) {
        s->too_big = 1;
        return -1;
    }
    s->px = malloc(w * h * 3);
    if (!s->px)
        return -1;
    while (s->cinfo.output_scanline < s->cinfo.output_height) {
        JSAMPROW row = s->px + (size_t)s->cinfo.output_scanline * w * 3;
        (void)jpeg_read_scanlines(&s->cinfo, &row, 1);
    }
    (void)jpeg_finish_decompress(&s->cinfo);
    return 0;
}

static int decode_jpeg(const unsigned char *bytes, size_t len, const char *name, edm_rgb8 *out, edm_status *st)
{
    jpeg_state *s = calloc(1, sizeof *s);
    if (!s)
        return edm_nomem(st);
    s->cinfo.err = jpeg_std_error(&s->err.pub);
    s->err.pub.error_exit = jpeg_on_error;
    s->err.pub.output_message = jpeg_on_message;
    s->err.pub.emit_message = jpeg_on_emit;
    int rc = jpeg_run(s, bytes, len);
    if (rc == 0 && s->err.warning[0]) {
        snprintf(s->err.msg, sizeof s->err.msg, "%s", s->err.warning);
        rc = -1;
    }
    if (rc == 0) {
        out->width = (int)s->cinfo.output_width;
        out->height = (int)s->cinfo.output_height;
        out->px = s->px;
    } else if (s->cmyk) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a CMYK JPEG (edmc reads RGB and gray JPEGs)", name);
    } else if (s->too_big) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %ux%u pixels: empty or larger than edmc reads", name,
                 (unsigned)s->cinfo.output_width, (unsigned)s->cinfo.output_height);
    } else if (s->err.msg[0]) {
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a damaged JPEG (%s)", name, s->err.msg);
    } else {
        edm_nomem(st);
    }
    if (rc != 0)
        free(s->px);
    jpeg_destroy_decompress(&s->cinfo);
    free(s);
    return rc;
}

int edm_decode_image(const unsigned char *bytes, size_t len, const char *name, edm_rgb8 *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (edm_png_is_png(bytes, len))
        return decode_png(bytes, len, name, out, st);
    if (len >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
        return decode_jpeg(bytes, len, name, out, st);
    return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: neither a PNG nor a JPEG file (edmc reads those two)", name);
}

/* ------------------------------------------------------------ PNG out */

int edm_encode_png_rgb8(const edm_rgb8 *im, unsigned char **out, size_t *len, edm_status *st)
{
    char msg[EDM_PNG_MSG];
    int rc = edm_png_encode_rgb8(im->px, im->width, im->height, out, len, msg);
    if (rc == EDM_PNG_NOMEM)
        return edm_nomem(st);
    if (rc != 0)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "PNG encoding failed: %s", msg);
    return 0;
}
