/* img_diff: compares two PNG/JPEG images pixel by pixel, for the
 * command-line tests.  usage: img_diff A B TOLERANCE
 * Prints the largest absolute difference of an 8-bit sample and exits 1
 * when it exceeds TOLERANCE, when the sizes differ or a file is unreadable. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "runtime/image_decode.h"

static int load(const char *path, edm_rgb8 *im, edm_status *st)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot open", path);
    unsigned char *buf = malloc(1 << 24);
    size_t n = buf ? fread(buf, 1, 1 << 24, f) : 0;
    fclose(f);
    int rc = buf ? edm_decode_image(buf, n, path, im, st) : edm_nomem(st);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: img_diff A B TOLERANCE\n");
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    edm_rgb8 a = {0}, b = {0};
    if (load(argv[1], &a, &st) != 0 || load(argv[2], &b, &st) != 0) {
        fprintf(stderr, "img_diff: %s\n", st.msg);
        edm_rgb8_free(&a);
        return 1;
    }
    int rc = 0;
    if (a.width != b.width || a.height != b.height) {
        fprintf(stderr, "img_diff: %dx%d vs %dx%d\n", a.width, a.height, b.width, b.height);
        rc = 1;
    } else {
        int worst = 0;
        for (size_t i = 0; i < (size_t)a.width * (size_t)a.height * 3; i++) {
            int d = abs((int)a.px[i] - (int)b.px[i]);
            worst = d > worst ? d : worst;
        }
        printf("largest difference %d\n", worst);
        rc = worst > atoi(argv[3]);
    }
    edm_rgb8_free(&a);
    edm_rgb8_free(&b);
    return rc;
}
