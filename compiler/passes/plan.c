/* The execution plan (fusion.h): which values are stored and which are
 * inlined, the steps and groups, lifetimes and arena offsets.  One plan, read
 * by the CPU executor, `edmc info` and `edmc dump --stage=fused`. */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/passes/fusion.h"

/* An inlined value shared by several steps is recomputed in each; past this
 * many elementwise ops it is stored instead.  One step holds at most
 * CHAIN_MAX of them. */
#define RECOMPUTE_MAX 8
#define CHAIN_MAX 48

/* ------------------------------------------------------------------ rule names */

typedef struct {
    const char *name;
    unsigned flag;
} rule_name;

static const rule_name RULES[] = {
    {"wn", EDM_FUSE_WN}, {"prologue", EDM_FUSE_PROLOGUE}, {"epilogue", EDM_FUSE_EPILOGUE}, {"ew", EDM_FUSE_EW},
    {"attn", EDM_FUSE_ATTN}, {"taps", EDM_FUSE_TAPS}, {"attntrain", EDM_FUSE_ATTNTRAIN},
};
#define NRULES (sizeof RULES / sizeof RULES[0])

int edm_fuse_parse(const char *text, unsigned *out, edm_status *st)
{
    if (strcmp(text, "all") == 0) {
        *out = EDM_FUSE_ALL;
        return 0;
    }
    if (strcmp(text, "none") == 0) {
        *out = EDM_FUSE_NONE;
        return 0;
    }
    unsigned f = 0;
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        size_t r = 0;
        while (r < NRULES && (strlen(RULES[r].name) != len || strncmp(RULES[r].name, p, len) != 0))
            r++;
        if (r == NRULES)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "--fuse: unknown rule '%.*s' (all, none, or a list of wn, prologue, epilogue, ew, attn, taps, attntrain)",
                            (int)len, p);
        f |= RULES[r].flag;
        if (!p[len])
            break;
        p += len + 1;
    }
    *out = f;
    return 0;
}

const char *edm_fuse_str(unsigned fuse, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    if ((fuse & EDM_FUSE_ALL) == EDM_FUSE_ALL)
        snprintf(buf, size, "all");
    else if ((fuse & EDM_FUSE_ALL) == 0)
        snprintf(buf, size, "none");
    else {
        size_t used = 0;
        buf[0] = '\0';
        for (size_t r = 0; r < NRULES; r++)
            if ((fuse & RULES[r].flag) && used < size)
                used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "", RULES[r].name);
    }
    return buf;
}

/* ------------------------------------------------------------------ classes */

enum { K_LEAF, K_ALIAS, K_EW, K_CORE };
enum { R_MAIN, R_WEIGHTS, R_WGRAD };

int edm_plan_is_alias(const edm_plan_options *opt, const edm_node *n) { return edm_node_is_alias(n, opt->training); }

static int kind_of(const edm_plan_options *opt, const edm_node *n)
{
    edm_op_class c = edm_op_class_of(n->op);
    if (c == EDM_CLASS_LEAF)
        return K_LEAF;
    if (edm_plan_is_alias(opt, n))
        return K_ALIAS;
    if (c == EDM_CLASS_UNARY || c == EDM_CLASS_BINARY || n->op == EDM_OP_EXPAND || n->op == EDM_OP_DROPOUT)
        return K_EW;
    /* with the ew rule a concatenation or a slice is a gather: each element
     * read from one of its (stored) inputs, so it is recomputed where it is
     * read like any elementwise value (its inputs, over other elements, are
     * never inlined into it): slices of q/k/v are then read from the stored
     * qkv, not stored again */
    if ((n->op == EDM_OP_CONCAT || n->op == EDM_OP_SLICE) && (opt->fuse & EDM_FUSE_EW))
        return K_EW;
    return K_CORE;
}

/* Same elements in the same order (N symbolic). */
static int same_domain(const edm_shape *a, const edm_shape *b)
{
    return edm_dims_same_order(a->dim, a->rank, b->dim, b->rank);
}

typedef struct {
    const edm_graph *g;
    const edm_plan_options *opt;
    edm_uses uses;
    unsigned char *kind, *region, *inl, *hc, *kept;
    int *cost;
} planner;

/* A weight times a constant (mp_conv's gain / sqrt(fan_in) applied to the
 * normalized weight), seen through aliases: a contraction of the pass
 * applies it to its operand as it loads it, so that through the pass only
 * the normalized weight is stored (the backward pass of the normalization
 * reads that one), not a scaled copy beside it. */
static int weight_scaling(const planner *p, int v)
{
    while (p->kind[v] == K_ALIAS)
        v = edm_graph_node(p->g, v)->input[0];
    const edm_node *n = edm_graph_node(p->g, v);
    if (p->region[v] != R_WEIGHTS || n->op != EDM_OP_MUL)
        return 0;
    int consts = 0;
    for (int k = 0; k < n->ninputs; k++)
        consts += edm_graph_node(p->g, n->input[k])->op == EDM_OP_CONST;
    return consts == 1;
}

/* Whether user u can evaluate value v inside its own step (v with a core
 * inside when hc). */
static int absorbs(const planner *p, int v, int u, int hc)
{
    if (p->kept[u])
        return 0;
    if (p->region[u] != p->region[v])
        return p->region[u] == R_MAIN && p->kind[u] == K_CORE && !hc && (p->opt->fuse & EDM_FUSE_PROLOGUE) &&
               weight_scaling(p, v);
    const edm_node *nv = edm_graph_node(p->g, v), *nu = edm_graph_node(p->g, u);
    unsigned f = p->opt->fuse;
    switch (p->kind[u]) {
    case K_EW:
        return same_domain(&nu->shape, &nv->shape) && (f & (hc ? EDM_FUSE_EPILOGUE : EDM_FUSE_EW));
    case K_CORE:
        return !hc && (f & EDM_FUSE_PROLOGUE);
    case K_ALIAS:
        if (nu->op == EDM_OP_OUTPUT)
            return 0;
        if (hc && edm_uses_count(&p->uses, u) != 1)
            return 0;
        for (int k = p->uses.off[u]; k < p->uses.off[u + 1]; k++)
            if (!absorbs(p, u, p->uses.users[k], hc))
                return 0;
        return 1;
    default:
        return 0;
    }
}

static int all_absorb(const planner *p, int v, int hc)
{
    int n = edm_uses_count(&p->uses, v);
    if (n == 0 || (hc && n != 1))
        return 0;
    for (int k = p->uses.off[v]; k < p->uses.off[v + 1]; k++)
        if (!absorbs(p, v, p->uses.users[k], hc))
            return 0;
    return 1;
}

/* Stores v (and the aliases it is seen through) after all. */
static void demote(planner *p, int v)
{
    p->inl[v] = 0;
    p->hc[v] = 0;
    p->cost[v] = 0;
    if (p->kind[v] == K_ALIAS)
        demote(p, edm_graph_node(p->g, v)->input[0]);
}

static void decide(planner *p, int i)
{
    const edm_node *n = edm_graph_node(p->g, i);
    switch (p->kind[i]) {
    case K_ALIAS: {
        int a = n->input[0];
        p->inl[i] = n->op != EDM_OP_OUTPUT && p->inl[a];
        p->hc[i] = p->inl[i] && p->hc[a];
        p->cost[i] = p->inl[i] ? p->cost[a] : 0;
        return;
    }
    case K_CORE:
        p->inl[i] = !p->kept[i] && (p->opt->fuse & EDM_FUSE_EPILOGUE) && all_absorb(p, i, 1);
        p->hc[i] = p->inl[i];
        return;
    case K_EW: {
        if (p->kept[i])
            return;
        int hc = 0, cost = 1;
        for (int k = 0; k < n->ninputs; k++) {
            int a = n->input[k];
            if (!p->inl[a])
                continue;
            if (p->hc[a] && hc)
                demote(p, a); /* one core per step */
            else
                hc |= p->hc[a];
            cost += p->cost[a];
        }
        int users = edm_uses_count(&p->uses, i);
        if (cost > CHAIN_MAX || (users > 1 && cost > RECOMPUTE_MAX))
            return;
        p->inl[i] = all_absorb(p, i, hc);
        p->hc[i] = p->inl[i] && hc;
        p->cost[i] = p->inl[i] ? cost : 0;
        return;
    }
    default:
        return;
    }
}

/* The taps rule's copy of a weight for the backward-data pass (every reader
 * a conv2d_bwd_data): made where the pass reaches it, in node order, not
 * with the weights, which would hold it through the forward pass. */
static int backward_copy(const planner *p, int v)
{
    const edm_node *n = edm_graph_node(p->g, v);
    if (n->op != EDM_OP_PERMUTE || edm_uses_count(&p->uses, v) == 0)
        return 0;
    for (int k = p->uses.off[v]; k < p->uses.off[v + 1]; k++)
        if (edm_graph_node(p->g, p->uses.users[k])->op != EDM_OP_CONV2D_BWD_DATA)
            return 0;
    return 1;
}

static void classify(planner *p)
{
    const edm_graph *g = p->g;
    int count = edm_graph_count(g);
    for (int i = 0; i < count; i++)
        p->kind[i] = (unsigned char)kind_of(p->opt, edm_graph_node(g, i));
    if (!(p->opt->fuse & EDM_FUSE_WN))
        return;
    /* weights: work on parameters alone (no batch, every input a batch-free leaf or such work) */
    for (int i = 0; i < count; i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (p->kind[i] == K_LEAF || edm_shape_has_batch(&n->shape) || n->op == EDM_OP_OUTPUT || backward_copy(p, i))
            continue;
        int ok = 1;
        for (int k = 0; k < n->ninputs && ok; k++) {
            int a = n->input[k];
            ok = p->kind[a] == K_LEAF ? !edm_shape_has_batch(&edm_graph_node(g, a)->shape) : p->region[a] == R_WEIGHTS;
        }
        if (ok)
            p->region[i] = R_WEIGHTS;
    }
    /* wgrad: batch-free work on batch-free values (the weight-gradient
     * contractions themselves stay where they are: they read activations),
     * every reader of which is such work or an output.  Work on parameters
     * alone that only the weight gradients read (a parameter times a constant
     * of the weight normalization's backward) is wgrad too: as weights it
     * would run before the pass and be held through it. */
    for (int i = count - 1; i >= 0; i--) {
        const edm_node *n = edm_graph_node(g, i);
        if (p->kind[i] == K_LEAF || edm_shape_has_batch(&n->shape) || n->op == EDM_OP_OUTPUT)
            continue;
        int ok = edm_uses_count(&p->uses, i) > 0, wgrad_reader = 0;
        for (int k = 0; k < n->ninputs && ok; k++)
            ok = !edm_shape_has_batch(&edm_graph_node(g, n->input[k])->shape);
        for (int k = p->uses.off[i]; k < p->uses.off[i + 1] && ok; k++) {
            int u = p->uses.users[k];
            ok = p->region[u] == R_WGRAD || edm_graph_node(g, u)->op == EDM_OP_OUTPUT;
            wgrad_reader |= p->region[u] == R_WGRAD;
        }
        if (ok && (p->region[i] != R_WEIGHTS || wgrad_reader))
            p->region[i] = R_WGRAD;
    }
}

/* ------------------------------------------------------------------ steps */

typedef struct {
    edm_plan_member *m;
    int n, cap;
} member_list;

static int add_member(member_list *l, int node, edm_member_role role, int operand)
{
    for (int i = 0; i < l->n; i++)
        if (l->m[i].node == node && l->m[i].role == role && l->m[i].operand == operand)
            return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        edm_plan_member *nm = realloc(l->m, sizeof *nm * (size_t)cap);
        if (!nm)
            return -1;
        l->m = nm;
        l->cap = cap;
    }
    l->m[l->n++] = (edm_plan_member){.node = node, .role = role, .operand = operand};
    return 0;
}

/* Collects the inlined nodes behind input v of a member with `role`. */
static int collect(const planner *p, int v, edm_member_role role, int operand, member_list *l, int *core)
{
    if (p->kind[v] == K_LEAF || !p->inl[v])
        return 0;
    const edm_node *n = edm_graph_node(p->g, v);
    if (p->kind[v] == K_CORE) {
        *core = v;
        if (add_member(l, v, EDM_ROLE_CORE, 0) != 0)
            return -1;
        for (int k = 0; k < n->ninputs; k++)
            if (collect(p, n->input[k], EDM_ROLE_PROLOGUE, k, l, core) != 0)
                return -1;
        return 0;
    }
    if (add_member(l, v, role, operand) != 0)
        return -1;
    for (int k = 0; k < n->ninputs; k++)
        if (collect(p, n->input[k], role, operand, l, core) != 0)
            return -1;
    return 0;
}

static int member_order(const void *pa, const void *pb)
{
    const edm_plan_member *a = pa, *b = pb;
    if (a->role != b->role)
        return (int)a->role - (int)b->role;
    if (a->operand != b->operand)
        return a->operand - b->operand;
    return a->node - b->node;
}

/* The step's kind, from its core (or its root when it has none). */
static const char *kind_name(const planner *p, int c)
{
    if (p->kind[c] == K_EW)
        return "ew";
    switch (edm_op_class_of(edm_graph_node(p->g, c)->op)) {
    case EDM_CLASS_CONTRACT: return "contract";
    case EDM_CLASS_REDUCE: return "reduce";
    default: return "op";
    }
}

static int make_step(edm_plan *plan, const planner *p, int r, edm_status *st)
{
    member_list l = {0};
    const edm_node *n = edm_graph_node(p->g, r);
    int core = -1;
    int rc = 0;
    if (p->kind[r] == K_CORE) {
        /* its inputs hold no other core: a core is inlined only into an elementwise reader */
        for (int k = 0; k < n->ninputs && rc == 0; k++)
            rc = collect(p, n->input[k], EDM_ROLE_PROLOGUE, k, &l, &core);
        core = r;
    } else {
        for (int k = 0; k < n->ninputs && rc == 0; k++)
            rc = collect(p, n->input[k], EDM_ROLE_EPILOGUE, 0, &l, &core);
    }
    if (rc == 0)
        rc = add_member(&l, r, p->kind[r] == K_CORE ? EDM_ROLE_CORE : EDM_ROLE_EPILOGUE, 0);
    if (rc != 0) {
        free(l.m);
        return edm_nomem(st);
    }
    qsort(l.m, (size_t)l.n, sizeof *l.m, member_order);
    edm_plan_step *s = &plan->steps[plan->nsteps++];
    *s = (edm_plan_step){.root = r, .core = core, .members = l.m, .nmembers = l.n, .kind = kind_name(p, core >= 0 ? core : r)};
    return 0;
}

static void add_group(edm_plan *plan, const char *name, int first, int n)
{
    plan->groups[plan->ngroups++] = (edm_plan_group){.name = name, .first_step = first, .nsteps = n};
    for (int s = first; s < first + n; s++)
        plan->steps[s].group = plan->ngroups - 1;
}

/* The steps [first, first + n) of a parameter-sized region, ordered by their
 * dependency level (0: reads nothing the region writes; k: reads a level
 * k-1 root), one group per level: the steps of a level are independent, so
 * a backend may run them as one kernel. */
typedef struct {
    int level, step; /* step: index into the region */
} level_pair;

static int level_order(const void *pa, const void *pb)
{
    const level_pair *a = pa, *b = pb;
    return a->level != b->level ? a->level - b->level : a->step - b->step;
}

/* step_of[a] for input q of nd, a seen through aliases. */
static int input_step(const planner *p, const edm_node *nd, int q, const int *step_of)
{
    int a = nd->input[q];
    while (p->kind[a] == K_ALIAS)
        a = edm_graph_node(p->g, a)->input[0];
    return step_of[a];
}

/* The most of val[step_of[a]] over the inputs a (aliases resolved) of s's
 * members that a step indexed in step_of writes; -1 when none is. */
static int latest_input(const planner *p, const edm_plan_step *s, const int *step_of, const int *val)
{
    int most = -1;
    for (int m = 0; m < s->nmembers; m++) {
        const edm_node *nd = edm_graph_node(p->g, s->members[m].node);
        for (int q = 0; q < nd->ninputs; q++) {
            int j = input_step(p, nd, q, step_of);
            if (j >= 0 && val[j] > most)
                most = val[j];
        }
    }
    return most;
}

static int group_levels(edm_plan *plan, const planner *p, int first, int n, const char *name, edm_status *st)
{
    int count = edm_graph_count(p->g);
    int *step_of = malloc(sizeof *step_of * (size_t)(count ? count : 1));
    int *level = malloc(sizeof *level * (size_t)n);
    level_pair *lv = malloc(sizeof *lv * (size_t)n);
    edm_plan_step *copy = malloc(sizeof *copy * (size_t)n);
    if (!step_of || !level || !lv || !copy) {
        free(step_of);
        free(level);
        free(lv);
        free(copy);
        return edm_nomem(st);
    }
    for (int i = 0; i < count; i++)
        step_of[i] = -1;
    for (int k = 0; k < n; k++) {
        const edm_plan_step *s = &plan->steps[first + k];
        level[k] = latest_input(p, s, step_of, level) + 1;
        lv[k] = (level_pair){.level = level[k], .step = k};
        step_of[s->root] = k;
    }
    qsort(lv, (size_t)n, sizeof *lv, level_order);
    memcpy(copy, plan->steps + first, sizeof *copy * (size_t)n);
    for (int k = 0; k < n; k++)
        plan->steps[first + k] = copy[lv[k].step];
    for (int k = 0; k < n;) {
        int e = k;
        while (e < n && lv[e].level == lv[k].level)
            e++;
        add_group(plan, name, first + k, e - k);
        k = e;
    }
    free(step_of);
    free(level);
    free(lv);
    free(copy);
    return 0;
}

/* The weight-gradient work in at most this many parts, by bytes written. */
#define WGRAD_PARTS 8

typedef struct {
    int ready, step; /* ready: the main step after which its inputs are all written (-1: before them) */
    int64_t numel;
} ready_pair;

static int ready_order(const void *pa, const void *pb)
{
    const ready_pair *a = pa, *b = pb;
    return a->ready != b->ready ? a->ready - b->ready : a->step - b->step;
}

/* A weight-gradient step that reads only leaves (ready -1: parameters and
 * constants, such as a parameter times a constant of the weight
 * normalization's backward) would run before the whole pass and hold its
 * value until its readers run, late in the backward pass (img512-s at batch
 * 128: 0.5 GiB live at the peak); it goes with its earliest reader's part
 * instead.  The steps are in node order, so walking them backwards settles
 * every reader's `ready` before its inputs'. */
static void sink_leaf_steps(const edm_plan *plan, const planner *p, int w0, int nm, const int *step_of, int *ready,
                            unsigned char *leaf_only)
{
    int nw = plan->nsteps - w0;
    for (int k = 0; k < nw; k++) {
        leaf_only[k] = ready[nm + k] < 0;
        if (leaf_only[k])
            ready[nm + k] = INT_MAX; /* no reader seen yet */
    }
    for (int k = nw - 1; k >= 0; k--) {
        const edm_plan_step *s = &plan->steps[w0 + k];
        if (ready[nm + k] == INT_MAX) /* read by no weight-gradient step: first, as before */
            ready[nm + k] = -1;
        for (int m = 0; m < s->nmembers; m++) {
            const edm_node *nd = edm_graph_node(p->g, s->members[m].node);
            for (int q = 0; q < nd->ninputs; q++) {
                int j = input_step(p, nd, q, step_of) - nm; /* the weight-gradient step it reads, if any */
                if (j < 0 || j >= k || !leaf_only[j])
                    continue;
                if (ready[nm + k] < ready[nm + j])
                    ready[nm + j] = ready[nm + k];
            }
        }
    }
}

/* The main steps [m0, w0), one group each, with the weight-gradient steps
 * [w0, nsteps) placed among them: the latter go, in parts of about an
 * (1 / WGRAD_PARTS)th of their bytes, right after the main step that writes
 * the last of a part's inputs, each part grouped by level.  So a parameter's
 * gradient is final soon after the backward pass reaches its layer, not at
 * the end of the run, and a data-parallel all-reduce of it can overlap the
 * rest of the pass (and its inputs are freed sooner). */
static int place_wgrad(edm_plan *plan, const planner *p, int m0, int w0, edm_status *st)
{
    int nm = w0 - m0, nw = plan->nsteps - w0, count = edm_graph_count(p->g), ntotal = plan->nsteps - m0;
    size_t nt = (size_t)(ntotal ? ntotal : 1);
    int *step_of = malloc(sizeof *step_of * (size_t)(count ? count : 1)); /* a root's step, from m0 */
    int *ready = malloc(sizeof *ready * nt); /* per step from m0: the main step after which it can run */
    int *part_end = malloc(sizeof *part_end * nt); /* per part: one past its last pair */
    ready_pair *rp = malloc(sizeof *rp * nt);
    edm_plan_step *copy = malloc(sizeof *copy * nt);
    unsigned char *leaf_only = malloc(nt); /* per weight-gradient step: reads only leaves */
    if (!step_of || !ready || !part_end || !rp || !copy || !leaf_only) {
        free(step_of);
        free(ready);
        free(part_end);
        free(rp);
        free(copy);
        free(leaf_only);
        return edm_nomem(st);
    }
    for (int i = 0; i < count; i++)
        step_of[i] = -1;
    for (int j = 0; j < ntotal; j++) {
        step_of[plan->steps[m0 + j].root] = j;
        ready[j] = j;
    }
    /* the steps are in node order, so a step's inputs from this region come from earlier steps */
    int64_t total = 0;
    for (int k = 0; k < nw; k++) {
        const edm_plan_step *s = &plan->steps[w0 + k];
        ready[nm + k] = latest_input(p, s, step_of, ready);
        int64_t numel = edm_shape_numel_per_sample(&edm_graph_node(p->g, s->root)->shape);
        rp[k] = (ready_pair){.ready = ready[nm + k], .step = k, .numel = numel};
        total += numel;
    }
    sink_leaf_steps(plan, p, w0, nm, step_of, ready, leaf_only);
    for (int k = 0; k < nw; k++)
        rp[k].ready = ready[nm + k];
    qsort(rp, (size_t)nw, sizeof *rp, ready_order);
    int nparts = 0;
    int64_t acc = 0;
    for (int k = 0; k < nw; k++) {
        acc += rp[k].numel;
        int run_ends = k + 1 == nw || rp[k + 1].ready != rp[k].ready;
        if (run_ends && (k + 1 == nw || acc * WGRAD_PARTS >= total)) {
            part_end[nparts++] = k + 1;
            acc = 0;
        }
    }
    /* the new order: the parts due before the first main step, then each main step and the parts due after it */
    memcpy(copy, plan->steps + m0, sizeof *copy * (size_t)ntotal);
    int at = m0, part = 0, rc = 0;
    for (int j = -1; j < nm; j++) {
        if (j >= 0)
            plan->steps[at++] = copy[j];
        for (; part < nparts && rp[part_end[part] - 1].ready <= j; part++)
            for (int k = part ? part_end[part - 1] : 0; k < part_end[part]; k++)
                plan->steps[at++] = copy[nm + rp[k].step];
    }
    /* the groups, once every step is in place (a failure leaves each step owned once) */
    for (int s = m0; s < plan->nsteps && rc == 0;) {
        int n = 0;
        while (s + n < plan->nsteps && step_of[plan->steps[s + n].root] >= nm) /* a part */
            n++;
        if (n) {
            rc = group_levels(plan, p, s, n, "wgrad", st);
            s += n;
        } else {
            add_group(plan, plan->steps[s].kind, s, 1);
            s++;
        }
    }
    free(step_of);
    free(ready);
    free(part_end);
    free(rp);
    free(copy);
    free(leaf_only);
    return rc;
}

static void planner_free(planner *p)
{
    edm_uses_free(&p->uses);
    free(p->kind);
    free(p->region);
    free(p->inl);
    free(p->hc);
    free(p->kept);
    free(p->cost);
}

void edm_plan_free(edm_plan *p)
{
    if (!p)
        return;
    for (int s = 0; s < p->nsteps; s++)
        free(p->steps[s].members);
    free(p->steps);
    free(p->groups);
    free(p->values);
    for (int i = 0; i < p->nlayouts; i++)
        edm_plan_layout_free(&p->layouts[i]);
    free(p->layouts);
    free(p);
}

/* The value table from the steps: stored values (leaves, roots, aliases of
 * stored values), lifetimes; checks that every read is stored or inside its
 * step, that a stored input is written by an earlier step, that kept values
 * are stored. */
int edm_plan_finish(edm_plan *plan, const unsigned char *kept, edm_status *st)
{
    const edm_graph *g = plan->g;
    int count = plan->nvalues;
    for (int i = 0; i < count; i++)
        plan->values[i] = (edm_plan_value){.base = i, .step = -1, .first = -1, .last = -1};
    for (int s = 0; s < plan->nsteps; s++) {
        int r = plan->steps[s].root;
        if (plan->values[r].step >= 0)
            return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "plan: %%%d is the root of two steps", r);
        plan->values[r].step = s;
    }
    for (int i = 0; i < count; i++) {
        edm_plan_value *v = &plan->values[i];
        const edm_node *n = edm_graph_node(g, i);
        int leaf = edm_op_class_of(n->op) == EDM_CLASS_LEAF;
        v->keep = leaf || (kept && kept[i]);
        if (!leaf && edm_plan_is_alias(&plan->opt, n)) {
            if (v->step >= 0)
                return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "plan: %%%d, an alias, is a step's root", i);
            v->base = plan->values[n->input[0]].base;
            v->stored = plan->values[n->input[0]].stored;
        } else {
            v->stored = leaf || v->step >= 0;
        }
        if (v->keep && !v->stored)
            return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC, "plan: %%%d is kept but not stored", i);
    }
    for (int s = 0; s < plan->nsteps; s++) {
        const edm_plan_step *step = &plan->steps[s];
        plan->values[step->root].first = s;
        if (plan->values[step->root].last < s)
            plan->values[step->root].last = s;
        for (int m = 0; m < step->nmembers; m++) {
            const edm_node *n = edm_graph_node(g, step->members[m].node);
            for (int k = 0; k < n->ninputs; k++) {
                int a = n->input[k], inside = 0;
                for (int q = 0; q < step->nmembers && !inside; q++)
                    inside = step->members[q].node == a;
                const edm_plan_value *in = &plan->values[a];
                if (inside)
                    continue;
                if (!in->stored)
                    return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                                    "plan: step %d reads %%%d, which is neither stored nor in the step", s, a);
                int ws = plan->values[in->base].step;
                if (ws >= s)
                    return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                                    "plan: step %d reads %%%d before step %d writes it", s, a, ws);
                if (plan->values[in->base].last < s)
                    plan->values[in->base].last = s;
            }
        }
    }
    for (int i = 0; i < count; i++)
        if (plan->values[i].keep && plan->values[i].stored)
            plan->values[plan->values[i].base].last = plan->nsteps; /* read after the run */
    /* and the weights groups' values, read by the next run on the same parameters */
    for (int gi = 0; gi < edm_plan_weights_groups(plan); gi++)
        for (int s = plan->groups[gi].first_step; s < plan->groups[gi].first_step + plan->groups[gi].nsteps; s++)
            plan->values[plan->steps[s].root].last = plan->nsteps;
    return 0;
}

int edm_plan_weights_groups(const edm_plan *p)
{
    int n = 0;
    if (!p->opt.training)
        while (n < p->ngroups && strcmp(p->groups[n].name, "weights") == 0)
            n++;
    return n;
}

edm_plan *edm_plan_build(const edm_graph *g, const edm_plan_options *opt, edm_status *st)
{
    int count = edm_graph_count(g);
    size_t cnt = (size_t)(count ? count : 1);
    planner p = {.g = g, .opt = opt};
    edm_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        edm_nomem(st);
        return NULL;
    }
    if (edm_uses_build(g, &p.uses, st) != 0) {
        free(plan);
        return NULL;
    }
    p.kind = calloc(cnt, 1);
    p.region = calloc(cnt, 1);
    p.inl = calloc(cnt, 1);
    p.hc = calloc(cnt, 1);
    p.kept = calloc(cnt, 1);
    p.cost = calloc(cnt, sizeof *p.cost);
    plan->g = g;
    plan->opt = *opt;
    plan->nvalues = count;
    plan->values = calloc(cnt, sizeof *plan->values);
    plan->steps = calloc(cnt, sizeof *plan->steps);
    plan->groups = calloc(cnt, sizeof *plan->groups);
    if (!p.kind || !p.region || !p.inl || !p.hc || !p.kept || !p.cost || !plan->values || !plan->steps ||
        !plan->groups) {
        planner_free(&p);
        edm_plan_free(plan);
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < count; i++)
        p.kept[i] = opt->keep_all || (opt->keep && opt->keep[i]) || edm_graph_node(g, i)->op == EDM_OP_OUTPUT;
    /* a kept alias keeps what it shows */
    for (int i = count - 1; i >= 0; i--) {
        const edm_node *n = edm_graph_node(g, i);
        if (p.kept[i] && edm_plan_is_alias(opt, n))
            p.kept[n->input[0]] = 1;
    }
    classify(&p);
    for (int i = 0; i < count; i++)
        decide(&p, i);
    /* steps: weight prep first, then the network in order with the weight gradients among it */
    static const int order[] = {R_WEIGHTS, R_MAIN, R_WGRAD};
    int rc = 0, first[3] = {0};
    for (int o = 0; o < 3 && rc == 0; o++) {
        first[o] = plan->nsteps;
        for (int i = 0; i < count && rc == 0; i++)
            if (p.region[i] == order[o] && (p.kind[i] == K_EW || p.kind[i] == K_CORE) && !p.inl[i])
                rc = make_step(plan, &p, i, st);
        if (order[o] == R_WEIGHTS && plan->nsteps > first[o] && rc == 0)
            rc = group_levels(plan, &p, first[o], plan->nsteps - first[o], "weights", st);
    }
    if (rc == 0)
        rc = place_wgrad(plan, &p, first[1], first[2], st);
    if (rc != 0) {
        planner_free(&p);
        edm_plan_free(plan);
        return NULL;
    }
    rc = edm_plan_finish(plan, p.kept, st);
    if (rc != 0) {
        planner_free(&p);
        edm_plan_free(plan);
        return NULL;
    }
    planner_free(&p);
    return plan;
}

/* A plan written before, over g, if it is one opt would make: the same
 * rules and mode, every value opt keeps kept. */
static edm_plan *plan_from_xml(const edm_graph *g, const edm_plan_options *opt, edm_status *st)
{
    const char *name = opt->written->name ? opt->written->name : "plan.xml";
    edm_plan *p = edm_plan_read_xml_memory(opt->written->xml, opt->written->size, name, g, st);
    if (!p)
        return NULL;
    char want[64], got[64];
    int rc = 0;
    if (p->opt.fuse != opt->fuse || p->opt.training != opt->training)
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s: the plan is for --fuse=%s%s, this run wants --fuse=%s%s",
                      name, edm_fuse_str(p->opt.fuse, got, sizeof got), p->opt.training ? " (training)" : "",
                      edm_fuse_str(opt->fuse, want, sizeof want), opt->training ? " (training)" : "");
    for (int i = 0; rc == 0 && i < p->nvalues; i++)
        if (opt->keep && opt->keep[i] && !p->values[i].keep &&
            edm_op_class_of(edm_graph_node(g, i)->op) != EDM_CLASS_LEAF)
            rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                          "%s: the plan does not keep node %d, which this run reads (made for another use)", name,
                          i);
    if (rc != 0) {
        edm_plan_free(p);
        return NULL;
    }
    p->opt.keep_all = opt->keep_all;
    return p;
}

edm_plan *edm_plan_for_run(const edm_graph *g, const edm_plan_options *opt, const int *keep, int nkeep,
                           edm_graph **own_g, const edm_graph **run, int *map, edm_status *st)
{
    *own_g = NULL;
    *run = g;
    int ucount = edm_graph_count(g);
    unsigned char *ukeep = calloc((size_t)(ucount > 0 ? ucount : 1), 1);
    if (!ukeep) {
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < ucount; i++) {
        ukeep[i] = (unsigned char)opt->keep_all;
        map[i] = i;
    }
    for (int k = 0; k < nkeep; k++)
        if (keep[k] >= 0 && keep[k] < ucount)
            ukeep[keep[k]] = 1;
    if (opt->fuse & (EDM_FUSE_WN | EDM_FUSE_ATTN | EDM_FUSE_EW | EDM_FUSE_TAPS | EDM_FUSE_ATTNTRAIN)) { /* the rules that rewrite the graph */
        *own_g = edm_pass_fuse_rewrite(g, opt->fuse, ukeep, map, st);
        if (!*own_g) {
            free(ukeep);
            return NULL;
        }
        *run = *own_g;
    }
    int count = edm_graph_count(*run);
    unsigned char *kept = calloc((size_t)(count > 0 ? count : 1), 1);
    if (!kept) {
        free(ukeep);
        edm_nomem(st);
        return NULL;
    }
    for (int i = 0; i < ucount; i++)
        if (ukeep[i] && map[i] >= 0)
            kept[map[i]] = 1;
    free(ukeep);
    edm_plan_options po = *opt;
    po.keep = kept;
    edm_plan *p = opt->written ? plan_from_xml(*run, &po, st) : edm_plan_build(*run, &po, st);
    free(kept);
    if (p)
        p->opt.keep = NULL; /* it pointed at kept, freed above */
    return p;
}

/* ------------------------------------------------------------------ memory */

typedef struct {
    int64_t offset, bytes;
    int last;
} live_block;

static int block_order(const void *pa, const void *pb)
{
    const live_block *a = pa, *b = pb;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

int edm_plan_bind(edm_plan *p, int64_t batch, int64_t elem_bytes, edm_status *st)
{
    return edm_plan_bind_sizes(p, batch, elem_bytes, NULL, st);
}

/* The last step of the group holding step s (steps of one group may run at
 * once: memory a step reads is free only after its whole group). */
static int group_end(const edm_plan *p, int s)
{
    if (s < 0 || s >= p->nsteps)
        return s;
    const edm_plan_group *gr = &p->groups[p->steps[s].group];
    return gr->first_step + gr->nsteps - 1;
}

/* A stored root's block and lifetime, for place_by_size. */
typedef struct {
    int64_t offset, bytes;
    int first, last, value;
} lifetime;

static int larger_first(const void *pa, const void *pb)
{
    const lifetime *a = pa, *b = pb;
    if (a->bytes != b->bytes)
        return a->bytes > b->bytes ? -1 : 1;
    return a->first - b->first;
}

/* A second placement of the same lifetimes, largest block first, each at the
 * lowest offset clear of the placed blocks it shares a step with; kept when
 * its arena is smaller than first fit's in step order (img512-s training at
 * batch 128: 13.3 GiB instead of 14.0 where the live peak is 13.3). */
static int place_by_size(edm_plan *p)
{
    int n = p->nsteps;
    lifetime *blk = malloc(sizeof *blk * (size_t)(n ? n : 1));
    int *by_offset = malloc(sizeof *by_offset * (size_t)(n ? n : 1)); /* placed blocks, by offset */
    if (!blk || !by_offset) {
        free(blk);
        free(by_offset);
        return -1;
    }
    for (int s = 0; s < n; s++) {
        const edm_plan_value *v = &p->values[p->steps[s].root];
        int last = group_end(p, v->last);
        blk[s] = (lifetime){.bytes = (v->bytes + 255) & ~(int64_t)255, .first = s, .last = last > s ? last : s,
                            .value = p->steps[s].root};
    }
    qsort(blk, (size_t)n, sizeof *blk, larger_first);
    int64_t arena = 0;
    for (int i = 0; i < n; i++) {
        int64_t at = 0;
        for (int k = 0; k < i; k++) {
            const lifetime *b = &blk[by_offset[k]];
            if (b->last < blk[i].first || b->first > blk[i].last)
                continue;
            if (b->offset - at >= blk[i].bytes)
                break;
            if (b->offset + b->bytes > at)
                at = b->offset + b->bytes;
        }
        blk[i].offset = at;
        int pos = 0;
        while (pos < i && blk[by_offset[pos]].offset <= at)
            pos++;
        memmove(by_offset + pos + 1, by_offset + pos, sizeof *by_offset * (size_t)(i - pos));
        by_offset[pos] = i;
        if (at + blk[i].bytes > arena)
            arena = at + blk[i].bytes;
    }
    if (arena < p->arena_bytes) {
        p->arena_bytes = arena;
        for (int i = 0; i < n; i++)
            p->values[blk[i].value].offset = blk[i].offset;
    }
    free(blk);
    free(by_offset);
    return 0;
}

int edm_plan_bind_sizes(edm_plan *p, int64_t batch, int64_t elem_bytes, const int64_t *value_elem_bytes,
                        edm_status *st)
{
    live_block *live = malloc(sizeof *live * (size_t)(p->nsteps ? p->nsteps : 1));
    if (!live)
        return edm_nomem(st);
    int nlive = 0;
    p->arena_bytes = 0;
    p->stored_bytes = 0;
    for (int i = 0; i < p->nvalues; i++) {
        const edm_shape *s = &edm_graph_node(p->g, i)->shape;
        int64_t numel = 1;
        for (int d = 0; d < s->rank; d++)
            numel *= s->dim[d] == EDM_DIM_BATCH ? batch : s->dim[d];
        p->values[i].bytes = numel * (value_elem_bytes ? value_elem_bytes[i] : elem_bytes);
        p->values[i].offset = -1;
    }
    for (int s = 0; s < p->nsteps; s++) {
        edm_plan_value *v = &p->values[p->steps[s].root];
        int keep = 0;
        for (int k = 0; k < nlive; k++)
            if (live[k].last >= s)
                live[keep++] = live[k];
        nlive = keep;
        qsort(live, (size_t)nlive, sizeof *live, block_order);
        int64_t need = (v->bytes + 255) & ~(int64_t)255, at = 0;
        for (int k = 0; k < nlive; k++) {
            if (live[k].offset - at >= need)
                break;
            int64_t end = live[k].offset + live[k].bytes;
            at = end > at ? end : at;
        }
        v->offset = at;
        p->stored_bytes += need;
        live[nlive++] = (live_block){.offset = at, .bytes = need, .last = group_end(p, v->last)};
        if (at + need > p->arena_bytes)
            p->arena_bytes = at + need;
    }
    free(live);
    if (place_by_size(p) != 0)
        return edm_nomem(st);
    /* activations: the live sum of batch-dependent roots over the steps */
    int64_t *delta = calloc((size_t)p->nsteps + 2, sizeof *delta);
    if (!delta)
        return edm_nomem(st);
    for (int s = 0; s < p->nsteps; s++) {
        const edm_plan_value *v = &p->values[p->steps[s].root];
        if (!edm_shape_has_batch(&edm_graph_node(p->g, p->steps[s].root)->shape))
            continue;
        delta[s] += v->bytes;
        delta[(v->last < p->nsteps ? v->last : p->nsteps) + 1] -= v->bytes;
    }
    /* the inputs are live throughout (constants are not counted: a reader
     * can take them as one number) */
    int64_t cur = 0;
    for (int i = 0; i < p->nvalues; i++) {
        const edm_node *n = edm_graph_node(p->g, i);
        if (n->op == EDM_OP_INPUT && edm_shape_has_batch(&n->shape))
            cur += p->values[i].bytes;
    }
    p->act_peak_bytes = 0;
    for (int s = 0; s <= p->nsteps; s++) {
        cur += delta[s];
        p->act_peak_bytes = cur > p->act_peak_bytes ? cur : p->act_peak_bytes;
    }
    free(delta);
    return 0;
}

void edm_plan_layout_free(edm_plan_layout *l)
{
    if (!l)
        return;
    free(l->values);
    l->values = NULL;
    l->nvalues = 0;
}

int edm_plan_layout_make(const edm_plan *p, const char *arch, int64_t batch, const edm_dtype *dtype,
                         int64_t workspace, edm_plan_layout *out, edm_status *st)
{
    memset(out, 0, sizeof *out);
    if (snprintf(out->arch, sizeof out->arch, "%s", arch) >= (int)sizeof out->arch)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "'%s' is too long for an architecture", arch);
    out->batch = batch;
    out->arena_bytes = p->arena_bytes;
    out->workspace_bytes = workspace;
    int count = 0;
    for (int i = 0; i < p->nvalues; i++)
        count += p->values[i].stored != 0;
    out->values = calloc((size_t)(count ? count : 1), sizeof *out->values);
    if (!out->values)
        return edm_nomem(st);
    for (int i = 0; i < p->nvalues; i++) {
        const edm_plan_value *v = &p->values[i];
        if (!v->stored)
            continue;
        int root = v->base == i && v->step >= 0;
        out->values[out->nvalues++] = (edm_plan_layout_value){
            .node = i, .base = v->base, .first = root ? v->first : -1, .last = root ? v->last : -1,
            .offset = root ? v->offset : -1, .bytes = v->bytes, .dtype = dtype ? dtype[i] : EDM_F32};
    }
    return 0;
}

/* Whether a (the package's) and b (this run's) differ; what says how. */
static int value_differs(const edm_plan_layout_value *a, const edm_plan_layout_value *b, char *what, size_t size)
{
    static const char *const fields[] = {"alias base", "first step", "last step", "arena offset", "bytes"};
    const long long va[] = {a->base, a->first, a->last, (long long)a->offset, (long long)a->bytes};
    const long long vb[] = {b->base, b->first, b->last, (long long)b->offset, (long long)b->bytes};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
        if (va[k] != vb[k]) {
            snprintf(what, size, "has %s %lld in the package, %lld as this run binds it", fields[k], va[k], vb[k]);
            return 1;
        }
    if (a->dtype != b->dtype) {
        snprintf(what, size, "has storage type %s in the package, %s as this run binds it", edm_dtype_name(a->dtype),
                 edm_dtype_name(b->dtype));
        return 1;
    }
    return 0;
}

/* The error for value id of the table `want` (the package's) against `got`
 * (this run's binding). */
static int layout_mismatch(const edm_plan *p, const edm_plan_layout *want, int id, const char *what, edm_status *st)
{
    const edm_node *n = edm_graph_node(p->g, id);
    return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                    "%s: the memory table for %s, batch %lld, does not fit this run: value %d (%s%s%s) %s",
                    p->source[0] ? p->source : "the plan", want->arch, (long long)want->batch, id,
                    edm_op_name(n->op), n->name && n->name[0] ? " " : "", n->name ? n->name : "", what);
}

int edm_plan_layout_check(const edm_plan *p, const char *arch, int64_t batch, const edm_dtype *dtype,
                          int64_t workspace, edm_status *st)
{
    if (p->nlayouts == 0)
        return 0;
    const edm_plan_layout *want = NULL;
    char held[256] = "";
    size_t nh = 0;
    for (int i = 0; i < p->nlayouts; i++) {
        const edm_plan_layout *l = &p->layouts[i];
        if (strcmp(l->arch, arch) == 0 && l->batch == batch)
            want = l;
        if (nh < sizeof held)
            nh += (size_t)snprintf(held + nh, sizeof held - nh, "%s%s batch %lld", nh ? ", " : "", l->arch,
                                   (long long)l->batch);
    }
    const char *src = p->source[0] ? p->source : "the plan";
    if (!want)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s has no memory table for %s, batch %lld (it has %s)", src,
                        arch, (long long)batch, held);
    edm_plan_layout got;
    if (edm_plan_layout_make(p, arch, batch, dtype, workspace, &got, st) != 0)
        return -1;
    char what[200];
    int rc = 0;
    int i = 0, k = 0;
    while (rc == 0 && (i < want->nvalues || k < got.nvalues)) {
        const edm_plan_layout_value *a = i < want->nvalues ? &want->values[i] : NULL;
        const edm_plan_layout_value *b = k < got.nvalues ? &got.values[k] : NULL;
        if (a && (!b || a->node < b->node)) {
            rc = layout_mismatch(p, want, a->node, "is stored in the package's table, not in this run's binding", st);
        } else if (b && (!a || b->node < a->node)) {
            rc = layout_mismatch(p, want, b->node, "is stored in this run's binding but missing from the package's table",
                                 st);
        } else {
            if (value_differs(a, b, what, sizeof what))
                rc = layout_mismatch(p, want, a->node, what, st);
            i++;
            k++;
        }
    }
    if (rc == 0 && (want->arena_bytes != got.arena_bytes || want->workspace_bytes != got.workspace_bytes))
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                      "%s: the memory table for %s, batch %lld, does not fit this run: an arena of %lld bytes and a "
                      "workspace of %lld in the package, %lld and %lld as this run binds them",
                      src, arch, (long long)batch, (long long)want->arena_bytes, (long long)want->workspace_bytes,
                      (long long)got.arena_bytes, (long long)got.workspace_bytes);
    edm_plan_layout_free(&got);
    return rc;
}

/* ------------------------------------------------------------------ text */

static const char *role_name(edm_member_role r)
{
    return r == EDM_ROLE_PROLOGUE ? "pro" : r == EDM_ROLE_CORE ? "core" : "epi";
}

int edm_plan_write_text(FILE *f, const edm_plan *p)
{
    char fuse[64], shape[96];
    int stored = 0;
    for (int i = 0; i < p->nvalues; i++)
        stored += p->values[i].stored && p->values[i].base == i && p->values[i].step >= 0;
    fprintf(f, "plan fuse=%s: %d kernels, %d steps, %d stored values of %d\n", edm_fuse_str(p->opt.fuse, fuse, sizeof fuse),
            p->ngroups, p->nsteps, stored, p->nvalues);
    for (int gi = 0; gi < p->ngroups; gi++) {
        const edm_plan_group *gr = &p->groups[gi];
        fprintf(f, "kernel %d %s (%d step%s)\n", gi, gr->name, gr->nsteps, gr->nsteps == 1 ? "" : "s");
        for (int s = gr->first_step; s < gr->first_step + gr->nsteps; s++) {
            const edm_plan_step *step = &p->steps[s];
            const edm_node *r = edm_graph_node(p->g, step->root);
            fprintf(f, "  step %d %s -> %%%d %s %s%s%s\n", s, step->kind, step->root, edm_op_name(r->op),
                    edm_shape_str(&r->shape, shape, sizeof shape), r->scope[0] ? " in " : "", r->scope);
            for (int m = 0; m < step->nmembers; m++) {
                const edm_plan_member *mb = &step->members[m];
                const edm_node *n = edm_graph_node(p->g, mb->node);
                fprintf(f, "    %s", role_name(mb->role));
                if (mb->role == EDM_ROLE_PROLOGUE)
                    fprintf(f, "%d", mb->operand);
                fprintf(f, " %%%d %s (%s)", mb->node, edm_op_name(n->op), n->origin);
                for (int k = 0; k < n->ninputs; k++)
                    fprintf(f, "%s%%%d", k ? ", " : " <- ", n->input[k]);
                fputc('\n', f);
            }
        }
    }
    return ferror(f) ? -1 : 0;
}
