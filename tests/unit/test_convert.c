/* The pieces of `edmc dataset convert`: the stored-zip writer (with and
 * without zip64 records, read back by libzip), PNG encode/decode round
 * trips, the resampling filters on cases with known answers, and the
 * transforms' output sizes and skips.  (The images themselves are checked
 * against PIL's in tests/cli/convert.sh.) */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zip.h>

#include "runtime/dataset_convert.h"
#include "runtime/image_decode.h"
#include "runtime/resample.h"
#include "runtime/zip_write.h"

/* Writes n entries "d/NNNNNNNN" holding their own name, reads them back. */
static void zip_round_trip(int n)
{
    char path[] = "/tmp/edmc-zip-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "wb");
    assert_non_null(fp);
    edm_zip_writer *z = edm_zip_writer_new(fp);
    assert_non_null(z);
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "d/%08d", i);
        assert_int_equal(edm_zip_add(z, name, name, strlen(name)), 0);
    }
    assert_int_equal(edm_zip_finish(z), 0);
    edm_zip_writer_free(z);
    assert_int_equal(fclose(fp), 0);
    int err = 0;
    zip_t *zr = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    assert_non_null(zr);
    assert_int_equal(zip_get_num_entries(zr, 0), n);
    int probe[] = {0, n / 2, n - 1};
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "d/%08d", probe[k]);
        zip_int64_t idx = zip_name_locate(zr, name, 0);
        assert_true(idx >= 0);
        zip_file_t *f = zip_fopen_index(zr, (zip_uint64_t)idx, 0);
        assert_non_null(f);
        char buf[32] = {0};
        assert_int_equal(zip_fread(f, buf, sizeof buf), (zip_int64_t)strlen(name));
        assert_string_equal(buf, name);
        zip_fclose(f);
    }
    zip_discard(zr);
    unlink(path);
}

static void test_zip_small(void **state)
{
    (void)state;
    zip_round_trip(3);
}

static void test_zip64_many_entries(void **state)
{
    (void)state;
    zip_round_trip(70000); /* past the 16-bit entry count: zip64 end records */
}

static edm_rgb8 make_image(int w, int h, unsigned seed)
{
    edm_rgb8 im = {w, h, malloc((size_t)w * (size_t)h * 3)};
    assert_non_null(im.px);
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++)
        im.px[i] = (unsigned char)((i * 37 + seed * 11) % 251);
    return im;
}

static void test_png_round_trip(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    edm_rgb8 im = make_image(13, 7, 1), back;
    unsigned char *png;
    size_t len;
    assert_int_equal(edm_encode_png_rgb8(&im, &png, &len, &st), 0);
    assert_int_equal(edm_decode_image(png, len, "x.png", &back, &st), 0);
    assert_int_equal(back.width, 13);
    assert_int_equal(back.height, 7);
    assert_memory_equal(back.px, im.px, 13 * 7 * 3);
    edm_rgb8_free(&back);
    /* cut short, and not an image at all */
    assert_int_equal(edm_decode_image(png, len / 2, "cut.png", &back, &st), -1);
    assert_non_null(strstr(st.msg, "cut.png"));
    assert_int_equal(edm_decode_image((const unsigned char *)"hello", 5, "h.jpg", &back, &st), -1);
    assert_non_null(strstr(st.msg, "neither a PNG nor a JPEG"));
    free(png);
    edm_rgb8_free(&im);
}

static void test_resample_known(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    /* the box filter halving: the mean of each 2x2 block, rounded half up */
    edm_rgb8 im = {4, 2, calloc(4 * 2 * 3, 1)}, out;
    assert_non_null(im.px);
    const unsigned char v[8] = {0, 10, 200, 201, 1, 3, 255, 255};
    for (int i = 0; i < 8; i++)
        for (int c = 0; c < 3; c++)
            im.px[i * 3 + c] = v[i];
    assert_int_equal(edm_resize_rgb8(&im, 2, 1, EDM_FILTER_BOX, &out, &st), 0);
    assert_int_equal(out.px[0], 4);   /* (0 + 10 + 1 + 3) / 4 = 3.5 */
    assert_int_equal(out.px[3], 228); /* (200 + 201 + 255 + 255) / 4 = 227.75 */
    edm_rgb8_free(&out);
    edm_rgb8_free(&im);
    /* a constant image stays constant under every filter, up and down */
    edm_rgb8 flat = {9, 5, malloc(9 * 5 * 3)};
    assert_non_null(flat.px);
    memset(flat.px, 77, 9 * 5 * 3);
    edm_filter f[] = {EDM_FILTER_BOX, EDM_FILTER_BICUBIC, EDM_FILTER_LANCZOS};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(edm_resize_rgb8(&flat, 20, 3, f[k], &out, &st), 0);
        for (int i = 0; i < 20 * 3 * 3; i++)
            assert_int_equal(out.px[i], 77);
        edm_rgb8_free(&out);
    }
    /* the same size is a copy */
    edm_rgb8 im2 = make_image(6, 4, 2);
    assert_int_equal(edm_resize_rgb8(&im2, 6, 4, EDM_FILTER_LANCZOS, &out, &st), 0);
    assert_memory_equal(out.px, im2.px, 6 * 4 * 3);
    edm_rgb8_free(&out);
    edm_rgb8_free(&im2);
    edm_rgb8_free(&flat);
}

static void test_transform_sizes(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    edm_rgb8 im = make_image(70, 50, 3), out;
    assert_int_equal(edm_transform_image(&im, EDM_TRANSFORM_CENTER_CROP, 16, 16, &out, &st), 0);
    assert_true(out.width == 16 && out.height == 16);
    edm_rgb8_free(&out);
    assert_int_equal(edm_transform_image(&im, EDM_TRANSFORM_CENTER_CROP_DHARIWAL, 16, 16, &out, &st), 0);
    assert_true(out.width == 16 && out.height == 16);
    edm_rgb8_free(&out);
    /* wide: a 32x32 canvas with a 32x16 band in the middle rows, black above and below */
    assert_int_equal(edm_transform_image(&im, EDM_TRANSFORM_CENTER_CROP_WIDE, 32, 16, &out, &st), 0);
    assert_true(out.width == 32 && out.height == 32);
    for (int x = 0; x < 32 * 3; x++) {
        assert_int_equal(out.px[x], 0);
        assert_int_equal(out.px[31 * 32 * 3 + x], 0);
    }
    edm_rgb8_free(&out);
    /* an image narrower than the output is skipped */
    assert_int_equal(edm_transform_image(&im, EDM_TRANSFORM_CENTER_CROP_WIDE, 128, 64, &out, &st), 0);
    assert_null(out.px);
    /* no resolution: the image as it is */
    assert_int_equal(edm_transform_image(&im, EDM_TRANSFORM_NONE, 0, 0, &out, &st), 0);
    assert_memory_equal(out.px, im.px, 70 * 50 * 3);
    edm_rgb8_free(&out);
    edm_rgb8_free(&im);
    edm_transform t;
    assert_int_equal(edm_transform_parse("center-crop-wide", &t), 0);
    assert_int_equal(t, EDM_TRANSFORM_CENTER_CROP_WIDE);
    assert_int_equal(edm_transform_parse("centre-crop", &t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zip_small),      cmocka_unit_test(test_zip64_many_entries),
        cmocka_unit_test(test_png_round_trip), cmocka_unit_test(test_resample_known),
        cmocka_unit_test(test_transform_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
