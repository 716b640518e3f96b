/* libpng, in one place: the error and warning handlers (a message, then a
 * longjmp back under the caller's setjmp), reading a PNG held in memory,
 * and writing one.  No other file includes <png.h>.  Errors are a message in
 * the caller's buffer; the callers add the file's name and the context. */
#ifndef EDMC_PNG_IO_H
#define EDMC_PNG_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EDM_PNG_MSG 256

/* What a PNG's header says. */
typedef struct {
    uint32_t width, height;
    int depth;  /* bits per sample, as stored */
    int colour; /* 1: RGB or palette, 0: gray (with or without alpha) */
} edm_png_header;

/* 1 when bytes start with the PNG signature. */
int edm_png_is_png(const unsigned char *bytes, size_t len);

/* The header of the PNG in bytes.  0, or -1 with msg (a damaged file). */
int edm_png_read_header(const unsigned char *bytes, size_t len, edm_png_header *h, char msg[EDM_PNG_MSG]);

/* A PNG's pixels as 8-bit samples: a palette expanded to RGB, gray of 1, 2
 * or 4 bits widened to 8, transparency made an alpha channel; nc channels
 * per pixel (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA), rows rowbytes apart. */
typedef struct {
    edm_png_header header;
    int nc;
    size_t rowbytes;
    unsigned char *pix;   /* header.height rows */
    unsigned char **rows; /* the start of each row in pix */
} edm_png_rows;

enum { EDM_PNG_DAMAGED = -1, EDM_PNG_NOMEM = -2 };

/* Decodes an 8-bit PNG (a 16-bit one is refused as damaged, unless accept
 * refuses it first).  accept (NULL: every file) sees the header before any
 * pixel is allocated; a positive answer ends the read and is returned as
 * is.  0; EDM_PNG_DAMAGED with msg; EDM_PNG_NOMEM; accept's answer.  Free
 * with edm_png_rows_free. */
int edm_png_read_rows(const unsigned char *bytes, size_t len, int (*accept)(const edm_png_header *h, void *ctx),
                      void *ctx, edm_png_rows *out, char msg[EDM_PNG_MSG]);
void edm_png_rows_free(edm_png_rows *r);

/* libpng's simplified reader: any colour type and depth as 8-bit RGB of
 * width x height (alpha dropped, not composited; 16-bit samples through its
 * sRGB handling).  *px is malloc'd.  0; EDM_PNG_DAMAGED with msg;
 * EDM_PNG_NOMEM.  too_big(width, height, ctx) != 0 stops before the pixels
 * are allocated (returned as is). */
int edm_png_read_rgb8(const unsigned char *bytes, size_t len, int (*too_big)(uint32_t w, uint32_t h, void *ctx),
                      void *ctx, unsigned char **px, int *width, int *height, char msg[EDM_PNG_MSG]);

/* Writes height rows of width x channels bytes (1 gray, 3 RGB) to fp as an
 * 8-bit PNG.  0, or -1 with msg. */
int edm_png_write(FILE *fp, unsigned char *const *rows, int channels, int height, int width, char msg[EDM_PNG_MSG]);

/* 8-bit RGB pixels (width x height x 3) as a PNG in a malloc'd buffer,
 * compressed with libpng's fast setting.  0; -1 with msg; EDM_PNG_NOMEM. */
int edm_png_encode_rgb8(const unsigned char *px, int width, int height, unsigned char **out, size_t *len,
                        char msg[EDM_PNG_MSG]);

#endif
