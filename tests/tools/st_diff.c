/* st_diff: compares the tensors two safetensors files share by name, for the
 * command-line tests.  usage: st_diff A B TOLERANCE [PREFIX]
 * Prints the largest ‖a − b‖ / ‖b‖ over tensors (whose name starts with
 * PREFIX, when given) and exits 1 when it exceeds TOLERANCE, when the files
 * hold different names or shapes, or when nothing was compared. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/safetensors.h"

static int compare(const edm_st_file *a, const edm_st_file *b, double tol, const char *prefix, edm_status *st)
{
    double worst = 0;
    const char *worst_name = "";
    int compared = 0;
    for (int i = 0; i < edm_st_count(a); i++) {
        const edm_st_entry *ea = edm_st_entry_at(a, i);
        if (prefix && strncmp(ea->name, prefix, strlen(prefix)) != 0)
            continue;
        const edm_st_entry *eb = edm_st_find(b, ea->name);
        if (!eb || eb->numel != ea->numel)
            return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "'%s' is missing from %s or has another size", ea->name,
                            edm_st_path(b));
        double *x = malloc(sizeof(double) * (size_t)(ea->numel ? ea->numel : 1));
        double *y = malloc(sizeof(double) * (size_t)(ea->numel ? ea->numel : 1));
        int rc = x && y ? 0 : edm_nomem(st);
        if (rc == 0)
            rc = edm_st_read_f64(a, ea, x, ea->numel, st);
        if (rc == 0)
            rc = edm_st_read_f64(b, eb, y, eb->numel, st);
        double num = 0, den = 0;
        for (int64_t k = 0; rc == 0 && k < ea->numel; k++) {
            num += (x[k] - y[k]) * (x[k] - y[k]);
            den += y[k] * y[k];
        }
        free(x);
        free(y);
        if (rc != 0)
            return -1;
        double e = den > 0 ? sqrt(num / den) : sqrt(num);
        if (e > worst || !isfinite(e)) {
            worst = e;
            worst_name = ea->name;
        }
        compared++;
    }
    printf("%d tensors, largest relative difference %.3g (%s)\n", compared, worst, worst_name);
    if (compared == 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "no tensors compared");
    if (!(worst <= tol))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s differs by %.3g > %g", worst_name, worst, tol);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: st_diff A B TOLERANCE [PREFIX]\n");
        return 2;
    }
    edm_status st;
    edm_status_init(&st);
    edm_st_file *a = edm_st_open(argv[1], &st);
    edm_st_file *b = a ? edm_st_open(argv[2], &st) : NULL;
    int rc = b ? compare(a, b, strtod(argv[3], NULL), argc > 4 ? argv[4] : NULL, &st) : -1;
    if (rc != 0)
        fprintf(stderr, "st_diff: %s\n", st.msg);
    edm_st_close(b);
    edm_st_close(a);
    return rc ? 1 : 0;
}
