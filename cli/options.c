/* The option-table parser and the help it prints (cli/options.h). */
#include "config.h"

#include "cli/options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/source.h"

int cli_parse_int(const char *cmd, const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "edmc %s: %s=%s: expected an integer from %lld to %lld\n", cmd, name, v, (long long)lo,
                (long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_parse_real(const char *cmd, const char *name, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        if (lo == -HUGE_VAL && hi == HUGE_VAL)
            fprintf(stderr, "edmc %s: %s=%s: expected a number\n", cmd, name, v);
        else if (hi == HUGE_VAL)
            fprintf(stderr, "edmc %s: %s=%s: expected a number of at least %g\n", cmd, name, v, lo);
        else
            fprintf(stderr, "edmc %s: %s=%s: expected a number from %g to %g\n", cmd, name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_parse_images(const char *cmd, const char *name, const char *v, int64_t *out)
{
    static const struct {
        const char *suffix;
        double unit;
    } units[] = {{"", 1}, {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"k", 1e3}, {"M", 1e6}};
    char *end;
    errno = 0;
    double x = strtod(v, &end), unit = -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].suffix) == 0)
            unit = units[i].unit;
    if (errno || end == v || unit < 0 || !(x >= 0) || x * unit > 9e15) {
        fprintf(stderr, "edmc %s: %s=%s: expected a number of images like 4096, 64Ki, 8Mi or 10M\n", cmd, name, v);
        return -1;
    }
    *out = (int64_t)(x * unit + 0.5);
    return 0;
}

int cli_parse_real_list(const char *cmd, const char *name, const char *v, double lo, double hi, double *out, int max,
                        int *n)
{
    *n = 0;
    const char *p = v;
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[64];
        if (len == 3 && strncmp(p, "...", 3) == 0 && *n >= 2 && p[len] == ',') {
            /* a, b, ..., z: the series a + k (b - a) up to z */
            double a = out[*n - 2], step = out[*n - 1] - a, z;
            p += len + 1;
            len = strcspn(p, ",");
            snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
            if (cli_parse_real(cmd, name, item, lo, hi, &z) != 0)
                return -1;
            if (!(step > 0) || z < out[*n - 1]) {
                fprintf(stderr, "edmc %s: %s=%s: 'a,b,...,z' needs a < b <= z\n", cmd, name, v);
                return -1;
            }
            for (int k = 2;; k++) {
                double x = a + k * step;
                if (x > z + step * 1e-6)
                    break;
                if (*n == max) {
                    fprintf(stderr, "edmc %s: %s=%s: more than %d values\n", cmd, name, v, max);
                    return -1;
                }
                out[(*n)++] = x;
            }
        } else {
            if (len == 0 || len >= sizeof item) {
                fprintf(stderr, "edmc %s: %s=%s: expected numbers separated by commas\n", cmd, name, v);
                return -1;
            }
            snprintf(item, sizeof item, "%.*s", (int)len, p);
            if (*n == max) {
                fprintf(stderr, "edmc %s: %s=%s: more than %d values\n", cmd, name, v, max);
                return -1;
            }
            if (cli_parse_real(cmd, name, item, lo, hi, &out[*n]) != 0)
                return -1;
            (*n)++;
        }
        p += len;
        if (*p == ',' && !*++p) {
            fprintf(stderr, "edmc %s: %s=%s: a trailing comma\n", cmd, name, v);
            return -1;
        }
    }
    if (*n == 0) {
        fprintf(stderr, "edmc %s: %s needs at least one value\n", cmd, name);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ the table */

/* The i-th name of o (the option first, then its aliases) into out; 0 when
 * o has fewer names. */
static int nth_name(const cli_option *o, int i, char *out, size_t size)
{
    const char *p = o->names;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            return 0;
        if (i-- == 0) {
            snprintf(out, size, "%.*s", (int)n, p);
            return 1;
        }
        p += n;
    }
}

static const cli_option *find(const cli_command *c, const char *word, size_t len)
{
    char name[128];
    for (int t = 0; t < 4 && c->tables[t]; t++)
        for (int i = 0; i < c->ntables[t]; i++)
            for (int k = 0; nth_name(&c->tables[t][i], k, name, sizeof name); k++)
                if (strlen(name) == len && strncmp(name, word, len) == 0)
                    return &c->tables[t][i];
    return NULL;
}

/* The known name nearest to word, if it is near enough to be a slip. */
static void suggest(const cli_command *c, const char *word, size_t len, char *out, size_t size)
{
    char w[128], name[128];
    snprintf(w, sizeof w, "%.*s", (int)(len < sizeof w ? len : sizeof w - 1), word);
    int best = (int)len / 3 + 1; /* more edits than a third of the word: not a slip */
    if (best > 3)
        best = 3;
    best++;
    out[0] = '\0';
    for (int t = 0; t < 4 && c->tables[t]; t++)
        for (int i = 0; i < c->ntables[t]; i++)
            for (int k = 0; nth_name(&c->tables[t][i], k, name, sizeof name); k++) {
                int d = edm_edit_distance(w, name, best);
                if (d < best) {
                    best = d;
                    nth_name(&c->tables[t][i], 0, out, size);
                }
            }
}

static int choice_ok(const char *words, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = words; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        p += len;
        if (*p == '|')
            p++;
    }
    return 0;
}

static int store(const cli_command *c, const cli_option *o, const char *name, const char *v, void *opts)
{
    char *base = opts;
    switch (o->kind) {
    case CLI_FLAG:
        *(int *)(base + o->at) = 1;
        return o->call ? o->call(opts, c->name, name, NULL) : 0;
    case CLI_STRING:
        *(const char **)(base + o->at) = v;
        return 0;
    case CLI_CHOICE:
        if (!choice_ok(o->arg, v)) {
            fprintf(stderr, "edmc %s: %s=%s: expected one of %s\n", c->name, name, v, o->arg);
            return -1;
        }
        *(const char **)(base + o->at) = v;
        return 0;
    case CLI_INT:
        return cli_parse_int(c->name, name, v, (int64_t)o->lo, (int64_t)o->hi, (int64_t *)(void *)(base + o->at));
    case CLI_SMALL: {
        int64_t x;
        if (cli_parse_int(c->name, name, v, (int64_t)o->lo, (int64_t)o->hi, &x) != 0)
            return -1;
        *(int *)(void *)(base + o->at) = (int)x;
        return 0;
    }
    case CLI_REAL:
        return cli_parse_real(c->name, name, v, o->lo, o->hi, (double *)(void *)(base + o->at));
    case CLI_IMAGES:
        return cli_parse_images(c->name, name, v, (int64_t *)(void *)(base + o->at));
    case CLI_CALL:
        return o->call(opts, c->name, name, v);
    }
    return -1;
}

int cli_parse_command(const cli_command *c, int argc, char **argv, void *opts, const char **file)
{
    if (file)
        *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(c, stdout);
            return 1;
        }
        if (a[0] != '-' || !a[1]) {
            if (!c->file) {
                fprintf(stderr, "edmc %s: unexpected argument '%s' (see edmc %s --help)\n", c->name, a, c->name);
                return -1;
            }
            if (*file) {
                fprintf(stderr, "edmc %s: more than one %s ('%s' and '%s')\n", c->name, c->file, *file, a);
                return -1;
            }
            *file = a;
            continue;
        }
        /* -Dname=value and -ofile: a short option glued to its value */
        size_t len = strcspn(a, "=");
        const char *v = a[len] == '=' ? a + len + 1 : NULL;
        const cli_option *o = find(c, a, len);
        if (!o && a[1] != '-' && a[2]) {
            o = find(c, a, 2);
            if (o && o->kind != CLI_FLAG) {
                len = 2;
                v = a + 2;
            } else {
                o = NULL;
            }
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), a);
        if (!o) {
            char near[128];
            suggest(c, a, len, near, sizeof near);
            fprintf(stderr, "edmc %s: unknown option '%s'%s%s%s (see edmc %s --help)\n", c->name, name,
                    near[0] ? " (did you mean '" : "", near, near[0] ? "'?)" : "", c->name);
            return -1;
        }
        if (o->kind == CLI_FLAG) {
            if (v) {
                fprintf(stderr, "edmc %s: %s takes no value\n", c->name, name);
                return -1;
            }
        } else if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "edmc %s: %s needs a value (%s=%s)\n", c->name, name, name, o->arg ? o->arg : "...");
                return -1;
            }
            v = argv[++i];
        }
        if (store(c, o, name, v, opts) != 0)
            return -1;
        if (o->given)
            *(int *)(void *)((char *)opts + o->given - 1) = 1;
    }
    return 0;
}

/* ------------------------------------------------------------ help */

void cli_print_help(const cli_command *c, FILE *out)
{
    fprintf(out, "usage: edmc %s %s\n\n%s\n\noptions:\n", c->name, c->synopsis, c->summary);
    for (int t = 0; t < 4 && c->tables[t]; t++)
        for (int i = 0; i < c->ntables[t]; i++) {
            const cli_option *o = &c->tables[t][i];
            char left[160];
            int n = snprintf(left, sizeof left, "  %.*s", (int)strcspn(o->names, " "), o->names);
            if (o->kind != CLI_FLAG && n > 0 && (size_t)n < sizeof left)
                n += snprintf(left + n, sizeof left - (size_t)n, o->names[1] == '-' ? "=%s" : " %s",
                              o->arg ? o->arg : "X");
            const char *aliases = strchr(o->names, ' ');
            fprintf(out, "%-30s %s", left, o->help);
            if (o->def)
                fprintf(out, " (default: %s)", o->def);
            if (aliases)
                fprintf(out, " [also:%s]", aliases);
            fputc('\n', out);
        }
    fprintf(out, "%-30s this help\n", "  --help, -h");
    if (c->notes)
        fprintf(out, "\n%s\n", c->notes);
}
