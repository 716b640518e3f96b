/* A model's source files as safetensors metadata ("edmc.source"), so that
 * snapshots and checkpoints carry their model instead of a path: a run
 * folder moved to another machine still compiles what it was trained with.
 *
 * The value is JSON: {"files": [{"path": P, "text": T}, ...]}, the main file
 * first, each path as the compilation named it, so that loading the texts
 * under those names lets its imports find them without reading the disk. */
#ifndef EDMC_MODEL_SOURCE_H
#define EDMC_MODEL_SOURCE_H

#include "compiler/source.h"
#include "compiler/status.h"
#include "runtime/meta_keys.h"


/* Every file src holds (not the -D snippets), as the JSON text above
 * (malloc'd), or NULL (st set). */
char *edm_model_source_json(const edm_sources *src, edm_status *st);
/* Loads the files of json (from `what`, named in errors) into src, which may
 * then read nothing else from the disk; returns the main file's index in src,
 * or -1 with st set. */
int edm_model_source_add(edm_sources *src, const char *json, const char *what, edm_status *st);

#endif
