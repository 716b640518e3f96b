/* The source manager: every file (and command-line snippet) the front end
 * reads, kept whole so diagnostics can print the offending line with a caret.
 * A file's index here is the file index of every edm_loc made from it. */
#ifndef EDMC_SOURCE_H
#define EDMC_SOURCE_H

#include <stddef.h>
#include <stdio.h>

#include "compiler/status.h"

typedef struct {
    char *path;  /* as given, or the resolved import path */
    char *text;  /* NUL-terminated contents */
    size_t size;
    size_t *line_start; /* byte offset of each line */
    int nlines;
} edm_source;

typedef struct edm_sources edm_sources;

edm_sources *edm_sources_new(void);
void edm_sources_free(edm_sources *s);
/* Reads a file; returns its index (an already loaded path returns the same
 * index) or -1 with st set. */
int edm_sources_load(edm_sources *s, const char *path, edm_loc from, edm_status *st);
/* From now on, only files under these folders (resolved, links followed) may
 * be loaded; a folder that does not exist is skipped.  For programs whose
 * parameters come from a file (a weights file's edmc.config): no import it
 * names may read elsewhere. */
int edm_sources_restrict(edm_sources *s, const char *const *roots, int n, edm_status *st);
/* Whether path may be loaded (always, when not restricted). */
int edm_sources_allows(const edm_sources *s, const char *path);
/* Adds in-memory text under a display name (e.g. "<-D model_channels>"). */
int edm_sources_add_text(edm_sources *s, const char *name, const char *text, size_t size, edm_status *st);
const edm_source *edm_sources_get(const edm_sources *s, int index);
int edm_sources_count(const edm_sources *s);

/* Prints "file:line:col: error: msg", the source line and a caret underline,
 * then each note the same way. Works without sources (positions only). */
void edm_diag_print(const edm_sources *s, const edm_status *st, FILE *out);

/* Damerau-free Levenshtein distance, capped: for "did you mean". */
int edm_edit_distance(const char *a, const char *b, int cap);

#endif
