/* edmc dataset convert: the reference's `dataset_tool.py convert`
 * (runtime/dataset_convert.h).  Its options are parsed here, one table. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/clock.h"
#include "runtime/dataset_convert.h"

typedef struct {
    double start, last;
} progress;

static void on_unreadable(void *ctx, const edm_status *why)
{
    (void)ctx;
    fprintf(stderr, "edmc dataset convert: left out %s\n", why->msg);
}

static void on_progress(void *ctx, int64_t done, int64_t total)
{
    progress *p = ctx;
    double now = edm_now_seconds();
    if (done < total && now - p->last < 1.0)
        return;
    p->last = now;
    double rate = now > p->start ? (double)done / (now - p->start) : 0;
    fprintf(stderr, "convert: %lld/%lld images, %.1f s, %.1f images/s\n", (long long)done, (long long)total,
            now - p->start, rate);
}

static int usage(const char *why)
{
    fprintf(stderr,
            "edmc dataset convert: %s\n"
            "usage: edmc dataset convert --source=DIR|ZIP --dest=DIR|ZIP [--resolution=WxH]\n"
            "           [--transform=none|center-crop|center-crop-wide|center-crop-dhariwal] [--max-images=N]\n",
            why);
    return 2;
}

/* "64x64" or "64,64". */
static int parse_resolution(const char *v, int *w, int *h)
{
    char *end;
    errno = 0;
    long a = strtol(v, &end, 10);
    if (end == v || (*end != 'x' && *end != ',') || a < 1 || a > 65536 || errno)
        return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || b < 1 || b > 65536 || errno)
        return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

static int parse_convert(int argc, char **argv, edm_convert_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
#define IS(name) (len == strlen(name) && strncmp(a, name, len) == 0)
        if (!(IS("--source") || IS("--dest") || IS("--max-images") || IS("--transform") || IS("--resolution"))) {
            fprintf(stderr, "edmc dataset convert: unknown option '%.*s'\n", (int)len, a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "edmc dataset convert: %.*s needs a value\n", (int)len, a);
            return 2;
        }
        if (!eq)
            i++;
        if (IS("--source")) {
            o->source = v;
        } else if (IS("--dest")) {
            o->dest = v;
        } else if (IS("--max-images")) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (end == v || *end || n < 1 || errno) {
                fprintf(stderr, "edmc dataset convert: --max-images=%s: expected a whole number of at least 1\n", v);
                return 2;
            }
            o->max_images = n;
        } else if (IS("--transform")) {
            if (edm_transform_parse(v, &o->transform) != 0) {
                fprintf(stderr,
                        "edmc dataset convert: --transform=%s: expected none, center-crop, center-crop-wide or "
                        "center-crop-dhariwal\n",
                        v);
                return 2;
            }
        } else if (parse_resolution(v, &o->width, &o->height) != 0) {
            fprintf(stderr, "edmc dataset convert: --resolution=%s: expected WxH like 64x64\n", v);
            return 2;
        }
#undef IS
    }
    if (!o->source || !o->dest || !o->source[0] || !o->dest[0])
        return usage("give --source and --dest");
    return 0;
}

static int convert(int argc, char **argv)
{
    progress p = {.start = edm_now_seconds()};
    edm_convert_opts o = {.max_images = -1, .on_unreadable = on_unreadable, .on_progress = on_progress, .ctx = &p};
    int rc = parse_convert(argc, argv, &o);
    if (rc != 0)
        return rc;
    edm_convert_result r;
    edm_status st;
    edm_status_init(&st);
    if (edm_dataset_convert(&o, &r, &st) != 0) {
        cli_report(NULL, &st);
        return cli_exit_code(&st);
    }
    printf("%s: %lld images of %dx%d, %s", o.dest, (long long)r.written, r.resolution, r.resolution,
           r.labelled ? "labelled (dataset.json)" : "no labels");
    if (r.skipped)
        printf(", %lld too small for center-crop-wide left out", (long long)r.skipped);
    printf("\n");
    if (r.unreadable) {
        fprintf(stderr, "edmc dataset convert: %lld of %lld source files could not be read and are left out\n",
                (long long)r.unreadable, (long long)r.sources);
        return 1;
    }
    return 0;
}

int cmd_dataset(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "edmc dataset: give a subcommand: edmc dataset convert --source=... --dest=...\n");
        return 2;
    }
    if (strcmp(argv[1], "convert") == 0)
        return convert(argc - 1, argv + 1);
    fprintf(stderr, "edmc dataset: unknown subcommand '%s' (convert)\n", argv[1]);
    return 2;
}
