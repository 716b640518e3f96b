/* The named pass pipeline every command runs (passes.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"

static const char *const STAGES[] = {"ir", "train", "rewrite", "fused"};
#define NSTAGES ((int)(sizeof STAGES / sizeof STAGES[0]))

int edm_pipeline_stage(const char *name)
{
    for (int i = 0; i < NSTAGES; i++)
        if (strcmp(STAGES[i], name) == 0)
            return i;
    return -1;
}

int edm_pipeline_run(edm_graph *g, const edm_pipeline_options *o, const char *until, edm_graph **rewritten,
                     edm_status *st)
{
    int last = until ? edm_pipeline_stage(until) : EDM_STAGE_TRAIN;
    if (last < 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no stage '%s' (ir, train, rewrite, fused)", until);
    if (rewritten)
        *rewritten = NULL;
    if (edm_pass_verify(g, st) != 0)
        return -1;
    if (last >= EDM_STAGE_TRAIN && o->training) {
        if (edm_pass_autodiff(g, NULL, 0, st) != 0 || edm_pass_verify(g, st) != 0)
            return -1;
    }
    if (last < EDM_STAGE_REWRITE || !rewritten)
        return 0;
    int count = edm_graph_count(g);
    int *map = malloc(sizeof *map * (size_t)(count ? count : 1));
    if (!map)
        return edm_nomem(st);
    edm_graph *r = edm_pass_fuse_rewrite(g, o->fuse, NULL, map, st);
    free(map);
    if (!r)
        return -1;
    if (edm_pass_verify(r, st) != 0) {
        edm_graph_free(r);
        return -1;
    }
    *rewritten = r;
    return 0;
}
