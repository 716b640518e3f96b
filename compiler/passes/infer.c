#include "config.h"

#include "compiler/passes/passes.h"

int edm_pass_infer(edm_graph *g, edm_status *st)
{
    for (int id = 0; id < edm_graph_count(g); id++) {
        edm_node *n = edm_graph_node_mut(g, id);
        /* edm_infer_node only checks that inputs exist; a later input would be
         * read before its own shape is recomputed. */
        for (int i = 0; i < n->ninputs && i < EDM_MAX_INPUTS; i++)
            if (n->input[i] >= id)
                return edm_fail(st, EDM_ERR_INTERNAL, n->loc,
                                "%%%d %s: input %%%d does not come before it (not in topological order)", id,
                                edm_op_name(n->op), n->input[i]);
        if (edm_infer_node(g, n, st) != 0)
            return -1;
    }
    return 0;
}
