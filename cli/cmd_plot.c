/* edmc plot: the pictures that show a run at a glance — the loss curve of a
 * run's stats.jsonl, and a grid of a dataset's images (what the samples
 * should look like). */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/data.h"
#include "runtime/image.h"

typedef struct {
    cli_opts base; /* -o */
    const char *stats, *data;
    int resolution, channels, count, scale;
    int64_t seed;
} plot_opts;

#define AT(field) .at = offsetof(plot_opts, field)

static const cli_option plot_table[] = {
    {.names = "--stats", .kind = CLI_STRING, AT(stats), .arg = "STATS.jsonl",
     .help = "plot the loss of a run's stats.jsonl against kimg"},
    {.names = "--data", .kind = CLI_STRING, AT(data), .arg = "DATASET", .help = "draw a grid of a dataset's images"},
    {.names = "--output -o", .kind = CLI_STRING, AT(base.output), .arg = "OUT.png", .help = "the picture"},
    {.names = "--resolution", .kind = CLI_SMALL, AT(resolution), .lo = 1, .hi = 4096, .arg = "R",
     .def = "the data's, 16 for built-ins", .help = "--data: image size"},
    {.names = "--channels", .kind = CLI_SMALL, AT(channels), .lo = 1, .hi = 3, .arg = "C",
     .def = "the data's, 3 for built-ins", .help = "--data: 1 (gray) or 3 (RGB)"},
    {.names = "--count", .kind = CLI_SMALL, AT(count), .lo = 1, .hi = 1024, .arg = "N", .def = "16",
     .help = "--data: images in the grid"},
    {.names = "--scale", .kind = CLI_SMALL, AT(scale), .lo = 1, .hi = 64, .arg = "K", .def = "1",
     .help = "--data: each pixel a K x K block"},
    {.names = "--seed", .kind = CLI_INT, AT(seed), .lo = 0, .hi = 4611686018427387904.0, .arg = "S", .def = "0",
     .help = "--data: the images of this seed's first epoch, in its order"},
};

/* kimg and loss of every record (a null loss, not finite, is a gap). */
static int read_stats(const char *path, double **kimg, double **loss, int *n, edm_status *st)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int count = 0, room = 0, rc = 0, lineno = 0;
    *kimg = *loss = NULL;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        json_object *j = json_tokener_parse(line), *k = NULL, *l = NULL;
        if (!j || !json_object_object_get_ex(j, "kimg", &k) || !json_object_object_get_ex(j, "loss", &l)) {
            rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s:%d: not a stats record (JSON with kimg and loss)", path,
                          lineno);
        } else if (count == room) {
            room = room ? 2 * room : 256;
            double *a = realloc(*kimg, sizeof(double) * (size_t)room), *b = a ? realloc(*loss, sizeof(double) * (size_t)room) : NULL;
            if (a)
                *kimg = a;
            if (b)
                *loss = b;
            rc = a && b ? 0 : edm_nomem(st);
        }
        if (rc == 0) {
            (*kimg)[count] = json_object_get_double(k);
            (*loss)[count++] = l ? json_object_get_double(l) : NAN;
        }
        json_object_put(j);
    }
    if (rc == 0 && ferror(f))
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot read %s: %s", path, strerror(errno));
    if (rc == 0 && count == 0)
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s holds no records", path);
    free(line);
    fclose(f);
    *n = count;
    return rc;
}

static int plot_loss(const plot_opts *o, edm_status *st)
{
    double *kimg = NULL, *loss = NULL;
    int n = 0;
    int rc = read_stats(o->stats, &kimg, &loss, &n, st);
    if (rc == 0)
        rc = edm_image_plot(o->base.output, kimg, loss, n, -1, "kimg", "loss", st);
    if (rc == 0)
        printf("%s: the loss of %d records of %s\n", o->base.output, n, o->stats);
    free(kimg);
    free(loss);
    return rc;
}

static int plot_data(const plot_opts *o, edm_status *st)
{
    edm_dataset_geometry g;
    if (edm_dataset_probe(o->data, &g, st) != 0)
        return -1;
    if (g.latent)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s holds latents: they are not pictures", o->data);
    int res = o->resolution ? o->resolution : g.resolution ? g.resolution : 16;
    int ch = o->channels ? o->channels : g.channels ? g.channels : 3;
    edm_dataset *ds = edm_dataset_open(o->data, res, ch, 0, st);
    if (!ds)
        return -1;
    int64_t n = edm_dataset_size(ds) < o->count ? edm_dataset_size(ds) : o->count, per = (int64_t)ch * res * res;
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)edm_dataset_size(ds));
    float *images = malloc(sizeof(float) * (size_t)(n * per));
    int rc = perm && images ? 0 : edm_nomem(st);
    if (rc == 0)
        edm_dataset_permutation(ds, (uint64_t)o->seed, 0, perm);
    for (int64_t i = 0; rc == 0 && i < n; i++)
        rc = edm_dataset_read(ds, perm[i], (uint64_t)o->seed, (uint64_t)i, images + i * per, NULL, st);
    if (rc == 0)
        rc = edm_image_write_grid(o->base.output, images, n, ch, res, res, o->scale, st);
    if (rc == 0)
        printf("%s: %lld images of %s (%dx%d)\n", o->base.output, (long long)n, o->data, res, res);
    free(perm);
    free(images);
    edm_dataset_close(ds);
    return rc;
}

int cmd_plot(int argc, char **argv)
{
    plot_opts o = {.count = 16, .scale = 1};
    cli_opts_defaults(&o.base);
    int rc = cli_parse_own(argc, argv, "plot", plot_table, CLI_COUNT(plot_table), 0, &o, NULL);
    if (rc == 0 && (!o.base.output || !o.stats == !o.data)) {
        fprintf(stderr, "edmc plot: needs --stats=STATS.jsonl or --data=DATASET, and -o OUT.png\n");
        rc = -1;
    }
    edm_status st;
    edm_status_init(&st);
    if (rc != 0) {
        rc = rc > 0 ? 0 : 2; /* --help, or a usage error */
    } else if ((o.stats ? plot_loss(&o, &st) : plot_data(&o, &st)) != 0) {
        cli_report(NULL, &st);
        rc = cli_exit_code(&st);
    }
    cli_opts_free(&o.base);
    return rc;
}
