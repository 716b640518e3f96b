/* Elaboration: runs a .edm program at compile time and records the IR graph it
 * describes.  Parameters, loops, conditionals and block calls are evaluated
 * here; what remains in the graph is primitive tensor ops with static shapes. */
#ifndef EDMC_ELABORATE_H
#define EDMC_ELABORATE_H

#include "compiler/ir.h"
#include "compiler/parse.h"
#include "compiler/source.h"

/* A -D override: name and the text of its value (an .edm expression). */
typedef struct {
    const char *name;
    const char *value;
} edm_define;

/* Errors from one compilation: several syntax errors, or one semantic error. */
typedef struct {
    int count;
    edm_status items[EDM_MAX_SYNTAX_ERRORS];
} edm_diags;

/* A program's compile-time parameters as they ended up (after -D and presets). */
typedef struct {
    const char *name;
    const char *value; /* formatted as .edm source: 192, [1, 2, 3, 4], "keep" */
} edm_param_value;

typedef struct {
    edm_graph *graph;
    int nparams;
    edm_param_value *params; /* owned; strings owned too */
} edm_program;

/* Parses, elaborates and verifies `path`. Returns 0 and fills prog, or -1 with
 * diags filled (positions refer to files in src, which the caller keeps to
 * print them). */
int edm_compile_file(edm_sources *src, const char *path, const edm_define *defs, int ndefs, edm_program *prog,
                     edm_diags *diags);
/* The same for a source already in src (file >= 0; path is then unused). */
int edm_compile_source(edm_sources *src, int file, const char *path, const edm_define *defs, int ndefs,
                       edm_program *prog, edm_diags *diags);
void edm_program_free(edm_program *prog);
/* The value of a parameter, or NULL. */
const char *edm_program_param(const edm_program *prog, const char *name);

#endif
