/* realpath() is XSI: declared by glibc for _XOPEN_SOURCE >= 500, not for
 * _POSIX_C_SOURCE alone */
#define _XOPEN_SOURCE 700 /* NOLINT(bugprone-reserved-identifier) */
#include "config.h"

#include "compiler/source.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Source files larger than this are refused: .edm programs are small. */
#define EDM_MAX_SOURCE_BYTES (16u << 20)

#define EDM_MAX_ROOTS 8

struct edm_sources {
    edm_source *files;
    int count, cap;
    int nroots; /* > 0: only files under these folders may be loaded */
    char *roots[EDM_MAX_ROOTS];
};

edm_sources *edm_sources_new(void) { return calloc(1, sizeof(edm_sources)); }

void edm_sources_free(edm_sources *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->count; i++) {
        free(s->files[i].path);
        free(s->files[i].text);
        free(s->files[i].line_start);
    }
    free(s->files);
    for (int i = 0; i < s->nroots; i++)
        free(s->roots[i]);
    free(s);
}

int edm_sources_restrict(edm_sources *s, const char *const *roots, int n, edm_status *st)
{
    for (int i = 0; i < n; i++) {
        if (!roots[i])
            continue;
        if (s->nroots == EDM_MAX_ROOTS)
            return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "more than %d source folders", EDM_MAX_ROOTS);
        char *r = realpath(roots[i], NULL);
        if (!r)
            continue; /* a folder that does not exist holds nothing */
        s->roots[s->nroots++] = r;
    }
    if (s->nroots == 0) { /* none exists: nothing may be loaded */
        s->roots[0] = strdup("/nonexistent/");
        if (!s->roots[0])
            return edm_nomem(st);
        s->nroots = 1;
    }
    return 0;
}

int edm_sources_allows(const edm_sources *s, const char *path)
{
    if (s->nroots == 0)
        return 1;
    char *r = realpath(path, NULL);
    if (!r)
        return 0;
    int ok = 0;
    for (int i = 0; i < s->nroots && !ok; i++) {
        size_t n = strlen(s->roots[i]);
        ok = strncmp(r, s->roots[i], n) == 0 && (r[n] == '/' || (n > 0 && s->roots[i][n - 1] == '/'));
    }
    free(r);
    return ok;
}

static int index_lines(edm_source *f)
{
    int n = 1;
    for (size_t i = 0; i < f->size; i++)
        if (f->text[i] == '\n')
            n++;
    f->line_start = malloc(sizeof(size_t) * (size_t)n);
    if (!f->line_start)
        return -1;
    f->nlines = 0;
    f->line_start[f->nlines++] = 0;
    for (size_t i = 0; i < f->size; i++)
        if (f->text[i] == '\n' && f->nlines < n)
            f->line_start[f->nlines++] = i + 1;
    return 0;
}

static int add(edm_sources *s, char *path, char *text, size_t size, edm_status *st)
{
    if (s->count == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        edm_source *f = realloc(s->files, sizeof *f * (size_t)cap);
        if (!f) {
            free(path);
            free(text);
            return edm_nomem(st);
        }
        s->files = f;
        s->cap = cap;
    }
    edm_source *f = &s->files[s->count];
    memset(f, 0, sizeof *f);
    f->path = path;
    f->text = text;
    f->size = size;
    if (index_lines(f) != 0) {
        free(path);
        free(text);
        return edm_nomem(st);
    }
    return s->count++;
}

int edm_sources_add_text(edm_sources *s, const char *name, const char *text, size_t size, edm_status *st)
{
    char *p = strdup(name);
    char *t = malloc(size + 1);
    if (!p || !t) {
        free(p);
        free(t);
        return edm_nomem(st);
    }
    memcpy(t, text, size);
    t[size] = '\0';
    return add(s, p, t, size, st);
}

int edm_sources_load(edm_sources *s, const char *path, edm_loc from, edm_status *st)
{
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->files[i].path, path) == 0)
            return i;
    if (!edm_sources_allows(s, path))
        return edm_fail(st, EDM_ERR_FORMAT, from,
                        "'%s' is outside the model folders this compilation may read (a weights file's "
                        "configuration cannot name other files)", path);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return edm_fail(st, EDM_ERR_IO, from, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 4096, size = 0;
    char *text = malloc(cap);
    if (!text) {
        fclose(fp);
        return edm_nomem(st);
    }
    for (;;) {
        if (size + 1 >= cap) {
            if (cap >= EDM_MAX_SOURCE_BYTES) {
                free(text);
                fclose(fp);
                return edm_fail(st, EDM_ERR_LIMIT, from, "'%s' is larger than %u bytes", path, EDM_MAX_SOURCE_BYTES);
            }
            char *t = realloc(text, cap * 2);
            if (!t) {
                free(text);
                fclose(fp);
                return edm_nomem(st);
            }
            text = t;
            cap *= 2;
        }
        size_t n = fread(text + size, 1, cap - size - 1, fp);
        size += n;
        if (n == 0)
            break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(text);
        return edm_fail(st, EDM_ERR_IO, from, "error reading '%s'", path);
    }
    text[size] = '\0';
    const char *nul = memchr(text, '\0', size);
    char *p = strdup(path);
    if (!p) {
        free(text);
        return edm_nomem(st);
    }
    int index = add(s, p, text, size, st);
    if (index >= 0 && nul) {
        /* kept in the table so that the error can show the line */
        int line = 1, col = 1;
        for (const char *c = text; c < nul; c++) {
            col = *c == '\n' ? 1 : col + 1;
            line += *c == '\n';
        }
        return edm_fail(st, EDM_ERR_IO, (edm_loc){index, line, col, 1},
                        "'%s' is not a text file (it contains a NUL byte)", path);
    }
    return index;
}

const edm_source *edm_sources_get(const edm_sources *s, int index)
{
    return s && index >= 0 && index < s->count ? &s->files[index] : NULL;
}

int edm_sources_count(const edm_sources *s) { return s->count; }

static void print_one(const edm_sources *s, edm_loc loc, const char *kind, const char *msg, FILE *out)
{
    const edm_source *f = edm_sources_get(s, loc.file);
    if (!f || loc.line < 1) {
        fprintf(out, "edmc: %s: %s\n", kind, msg);
        return;
    }
    fprintf(out, "%s:%d:%d: %s: %s\n", f->path, loc.line, loc.col, kind, msg);
    if (loc.line > f->nlines)
        return;
    const char *line = f->text + f->line_start[loc.line - 1];
    size_t len = strcspn(line, "\r\n");
    /* a long line (a generated program, a 100 KB -D value) shows 160 columns
     * around the caret, cut ends marked "..." */
    size_t col = loc.col > 0 ? (size_t)loc.col - 1 : 0, from = 0, to = len;
    if (len > 160) {
        from = col > 80 ? col - 80 : 0;
        if (from > len)
            from = len;
        to = from + 160 < len ? from + 160 : len;
    }
    fprintf(out, "%5d | %s%.*s%s\n      | %s", loc.line, from ? "..." : "", (int)(to - from), line + from,
            to < len ? "..." : "", from ? "   " : "");
    /* keep tabs so the caret lines up under the same columns */
    for (size_t i = from; i < col && i < to; i++)
        fputc(line[i] == '\t' ? '\t' : ' ', out);
    fputc('^', out);
    for (int i = 1; i < loc.span && col + (size_t)i < to; i++)
        fputc('~', out);
    fputc('\n', out);
}

void edm_diag_print(const edm_sources *s, const edm_status *st, FILE *out)
{
    print_one(s, st->loc, "error", st->msg, out);
    for (int i = 0; i < st->nnotes; i++)
        print_one(s, st->notes[i].loc, "note", st->notes[i].msg, out);
}

int edm_edit_distance(const char *a, const char *b, int cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return cap + 1;
    int prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb] > cap ? cap + 1 : prev[lb];
}
