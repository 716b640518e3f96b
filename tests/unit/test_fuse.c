/* Fusion: the groups each rule makes (kernel counts asserted, the way
 * tinygrad's schedule tests do, on edm2-tiny, img512-s and the variants),
 * the plan's invariants, and that every --fuse setting gives the numbers of
 * --fuse=none: forward and a training step (dropout on), f64 to 1e-10 and
 * f32 to 1e-5, on the CPU backend. */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "compiler/elaborate.h"
#include "compiler/ew_math.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/passes.h"
#include "runtime/backend_cpu.h"
#include "runtime/rng.h"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

/* Compiles models/<file> with the defines; training: differentiated too. */
static edm_graph *compile(const char *file, const edm_define *defs, int ndefs, int training)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", env_or("srcdir", "."), file);
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_define all[8];
    if (ndefs > 0)
        memcpy(all, defs, sizeof *defs * (size_t)ndefs);
    if (training)
        all[ndefs++] = (edm_define){"training", "true"};
    edm_program prog;
    if (edm_compile_file(src, path, all, ndefs, &prog, d) != 0)
        edm_diag_print(src, &d->items[0], stderr);
    assert_non_null(prog.graph);
    edm_graph *g = prog.graph;
    prog.graph = NULL;
    edm_program_free(&prog);
    edm_sources_free(src);
    free(d);
    edm_status st;
    edm_status_init(&st);
    edm_pipeline_options po = {.training = training};
    assert_int_equal(edm_pipeline_run(g, &po, "train", NULL, &st), 0);
    return g;
}

/* The plan of g at `fuse`, over the rewritten graph (*rw, freed by the caller). */
static edm_plan *plan_of(const edm_graph *g, unsigned fuse, int training, edm_graph **rw)
{
    edm_status st;
    edm_status_init(&st);
    int *map = malloc(sizeof *map * (size_t)edm_graph_count(g));
    assert_non_null(map);
    *rw = edm_pass_fuse_rewrite(g, fuse, NULL, map, &st);
    free(map);
    if (!*rw)
        print_error("%s\n", st.msg);
    assert_non_null(*rw);
    assert_int_equal(edm_pass_verify(*rw, &st), 0);
    edm_plan_options o = {.fuse = fuse, .training = training};
    edm_plan *p = edm_plan_build(*rw, &o, &st);
    assert_non_null(p);
    assert_int_equal(edm_plan_bind(p, 2, 4, &st), 0);
    return p;
}

static int kernels(const edm_graph *g, unsigned fuse, int training)
{
    edm_graph *rw;
    edm_plan *p = plan_of(g, fuse, training, &rw);
    int k = edm_plan_kernels(p);
    edm_plan_free(p);
    edm_graph_free(rw);
    return k;
}

static void test_parse(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    unsigned f = 99;
    assert_int_equal(edm_fuse_parse("all", &f, &st), 0);
    assert_int_equal(f, EDM_FUSE_ALL);
    assert_int_equal(edm_fuse_parse("none", &f, &st), 0);
    assert_int_equal(f, EDM_FUSE_NONE);
    assert_int_equal(edm_fuse_parse("wn,ew", &f, &st), 0);
    assert_int_equal(f, EDM_FUSE_WN | EDM_FUSE_EW);
    assert_int_equal(edm_fuse_parse("attn", &f, &st), 0);
    assert_int_equal(f, EDM_FUSE_ATTN);
    assert_int_equal(edm_fuse_parse("wn,bogus", &f, &st), -1);
    assert_non_null(strstr(st.msg, "'bogus'"));
    char buf[64];
    assert_string_equal(edm_fuse_str(EDM_FUSE_PROLOGUE | EDM_FUSE_EPILOGUE, buf, sizeof buf), "prologue,epilogue");
    assert_string_equal(edm_fuse_str(EDM_FUSE_ALL, buf, sizeof buf), "all");
}

/* Every plan: each non-leaf value stored or inlined, every step's inputs
 * stored or its own members, epilogue members on the root's domain,
 * lifetimes cover their reads, no two roots live in the same group (whose
 * steps may run at once) overlap in the arena. */
static void check_invariants(const edm_graph *g, const edm_plan *p)
{
    int n = edm_graph_count(g);
    for (int s = 0; s < p->nsteps; s++) {
        const edm_plan_step *st = &p->steps[s];
        assert_int_equal(p->values[st->root].step, s);
        for (int m = 0; m < st->nmembers; m++) {
            const edm_node *nd = edm_graph_node(g, st->members[m].node);
            for (int k = 0; k < nd->ninputs; k++) {
                int a = nd->input[k], in_step = 0;
                for (int q = 0; q < st->nmembers; q++)
                    in_step |= st->members[q].node == a;
                const edm_plan_value *v = &p->values[a];
                if (!in_step) {
                    assert_true(v->stored);
                    assert_true(p->values[v->base].last >= s || p->values[v->base].step < 0);
                }
            }
        }
    }
    /* roots by offset; each against those that start inside it */
    int *ids = malloc(sizeof *ids * (size_t)(n ? n : 1)), m = 0;
    assert_non_null(ids);
    for (int i = 0; i < n; i++)
        if (p->values[i].step >= 0 && p->values[i].base == i && p->values[i].bytes > 0)
            ids[m++] = i;
    for (int i = 1; i < m; i++) /* insertion sort by offset: plans are mostly in order */
        for (int j = i; j > 0 && p->values[ids[j - 1]].offset > p->values[ids[j]].offset; j--) {
            int t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (int i = 0; i < m; i++) {
        const edm_plan_value *a = &p->values[ids[i]];
        for (int j = i + 1; j < m && p->values[ids[j]].offset < a->offset + a->bytes; j++) {
            const edm_plan_value *b = &p->values[ids[j]];
            /* in groups: the steps of one group kernel run at the same time */
            int fa = p->steps[a->first].group, la = a->last < p->nsteps ? p->steps[a->last].group : p->ngroups;
            int fb = p->steps[b->first].group, lb = b->last < p->nsteps ? p->steps[b->last].group : p->ngroups;
            int overlap_time = fa <= lb && fb <= la;
            if (overlap_time)
                print_error("%%%d [groups %d,%d] and %%%d [groups %d,%d] share memory\n", ids[i], fa, la, ids[j], fb,
                            lb);
            assert_false(overlap_time);
        }
    }
    free(ids);
}

/* The schedule of edm2-tiny: kernels per rule, asserted exactly.  With the
 * weight-norm rule, training's weight-gradient work runs in up to 8 parts
 * placed where the backward pass finishes their inputs (each part one kernel
 * per level), not in one block of levels at the end. */
static void test_tiny_kernels(void **state)
{
    (void)state;
    edm_graph *fwd = compile("edm2-tiny.edm", NULL, 0, 0), *train = compile("edm2-tiny.edm", NULL, 0, 1);
    static const struct {
        unsigned fuse;
        int forward, train;
    } rows[] = {
        {EDM_FUSE_NONE, 568, 1805},    {EDM_FUSE_WN, 322, 980},        {EDM_FUSE_PROLOGUE, 479, 1585},
        {EDM_FUSE_EPILOGUE, 307, 1334}, {EDM_FUSE_EW, 311, 884},         {EDM_FUSE_ATTN, 560, 1805},
        {EDM_FUSE_TAPS, 590, 1848} /* a copy a 3×3 weight (two in training), each its own kernel without wn */,
        {EDM_FUSE_ALL, 75, 292} /* training: the 21 backward-data copies, each its own kernel */,
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        int kf = kernels(fwd, rows[r].fuse, 0), kt = kernels(train, rows[r].fuse, 1);
        char buf[64];
        if (kf != rows[r].forward || kt != rows[r].train)
            print_error("--fuse=%s: %d / %d kernels, expected %d / %d\n", edm_fuse_str(rows[r].fuse, buf, sizeof buf),
                        kf, kt, rows[r].forward, rows[r].train);
        assert_int_equal(kf, rows[r].forward);
        assert_int_equal(kt, rows[r].train);
    }
    /* unfused: one kernel per compute node */
    int compute = 0;
    for (int i = 0; i < edm_graph_count(fwd); i++) {
        const edm_node *n = edm_graph_node(fwd, i);
        edm_plan_options o = {0};
        compute += edm_op_class_of(n->op) != EDM_CLASS_LEAF && !edm_plan_is_alias(&o, n);
    }
    assert_int_equal(kernels(fwd, EDM_FUSE_NONE, 0), compute);
    edm_graph_free(fwd);
    edm_graph_free(train);
}

/* What the groups of --fuse=all hold on edm2-tiny's forward pass. */
static void test_tiny_groups(void **state)
{
    (void)state;
    edm_graph *fwd = compile("edm2-tiny.edm", NULL, 0, 0), *rw;
    edm_plan *p = plan_of(fwd, EDM_FUSE_ALL, 0, &rw);
    check_invariants(rw, p);
    int convs = 0, conv_steps = 0, silu_stored = 0, prologue_silu = 0, weights_group = 0, taps = 0;
    for (int i = 0; i < edm_graph_count(rw); i++) {
        const edm_node *n = edm_graph_node(rw, i);
        if (n->op == EDM_OP_CONV2D) {
            convs++;
            /* wn: every convolution reads its raw parameter; taps: a k×k one (k > 1) through
             * its tap-major copy, made in the weights group */
            const edm_node *w = edm_graph_node(rw, n->input[1]);
            assert_int_equal(n->attr.conv.taps, w->op == EDM_OP_PERMUTE);
            if (n->attr.conv.taps) {
                static const int tap_major[4] = {0, 2, 3, 1};
                assert_memory_equal(w->attr.permute.perm, tap_major, sizeof tap_major);
                assert_true(w->shape.dim[1] > 1);
                assert_int_equal(n->shape.dim[1], w->shape.dim[0]);
                int step = p->values[n->input[1]].step;
                assert_true(step >= 0);
                assert_string_equal(p->groups[p->steps[step].group].name, "weights");
                w = edm_graph_node(rw, w->input[0]);
                taps++;
            } else {
                assert_int_equal(w->shape.dim[2], 1);
            }
            assert_int_equal(w->op, EDM_OP_PARAM);
        }
        if (n->op == EDM_OP_SILU && p->values[i].stored)
            silu_stored++;
    }
    for (int s = 0; s < p->nsteps; s++) {
        const edm_plan_step *st = &p->steps[s];
        if (st->core >= 0 && edm_graph_node(rw, st->core)->op == EDM_OP_CONV2D) {
            conv_steps++;
            /* the weight-norm scale is applied in the epilogue: the root is not the raw convolution */
            assert_int_not_equal(st->root, st->core);
            for (int m = 0; m < st->nmembers; m++)
                prologue_silu += st->members[m].role == EDM_ROLE_PROLOGUE &&
                                 edm_graph_node(rw, st->members[m].node)->op == EDM_OP_SILU;
        }
    }
    for (int gi = 0; gi < p->ngroups; gi++)
        weights_group += strcmp(p->groups[gi].name, "weights") == 0;
    assert_int_equal(conv_steps, convs); /* one kernel per convolution, with its epilogue */
    assert_true(taps >= 10);             /* the 3×3 convolutions of every block */
    assert_int_equal(silu_stored, 0);    /* every mp_silu is a prologue or an epilogue */
    assert_true(prologue_silu >= 10);    /* conv_res0 and conv_res1 of each block read silu'd operands */
    /* the weight normalisation: once per call, in as many kernels as it has dependency levels */
    assert_true(weights_group >= 1 && weights_group <= 2);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(fwd);
}

/* taps in a training step: the forward convolutions read their copy made
 * with the weights, each backward-data pass its own [C, k, k, O] copy, made
 * in the backward pass before it (not with the weights: held through the
 * forward pass, it would add to the peak). */
static void test_taps_training(void **state)
{
    (void)state;
    edm_graph *train = compile("edm2-tiny.edm", NULL, 0, 1), *rw;
    edm_plan *p = plan_of(train, EDM_FUSE_ALL, 1, &rw);
    int fwd = 0, bwd = 0;
    for (int i = 0; i < edm_graph_count(rw); i++) {
        const edm_node *n = edm_graph_node(rw, i);
        if ((n->op != EDM_OP_CONV2D && n->op != EDM_OP_CONV2D_BWD_DATA) || !n->attr.conv.taps)
            continue;
        const edm_node *w = edm_graph_node(rw, n->input[1]);
        int backward = n->op == EDM_OP_CONV2D_BWD_DATA;
        static const int forward_perm[4] = {0, 2, 3, 1}, backward_perm[4] = {1, 2, 3, 0};
        assert_int_equal(w->op, EDM_OP_PERMUTE);
        assert_memory_equal(w->attr.permute.perm, backward ? backward_perm : forward_perm, sizeof forward_perm);
        /* the parameter, or in training its normalized self times a constant (a prologue of the copy) */
        assert_false(edm_shape_has_batch(&edm_graph_node(rw, w->input[0])->shape));
        const edm_plan_value *v = &p->values[n->input[1]];
        int weights = strcmp(p->groups[p->steps[v->step].group].name, "weights") == 0;
        assert_int_equal(weights, !backward);
        if (backward) { /* in the backward pass before its reader (at its node: the reader's step sits at
                         * its root, which may be later), free after it */
            int reader = -1, forward_end = -1;
            for (int s = 0; s < p->nsteps && reader < 0; s++)
                reader = p->steps[s].core == i ? s : -1;
            for (int s = 0; s < p->nsteps; s++) /* the forward pass's last convolution */
                if (p->steps[s].core >= 0 && edm_graph_node(rw, p->steps[s].core)->op == EDM_OP_CONV2D)
                    forward_end = s;
            assert_true(forward_end >= 0 && v->step > forward_end && v->step < reader);
            assert_int_equal(v->last, reader);
        }
        fwd += !backward;
        bwd += backward;
    }
    print_message("tiny training --fuse=all: %d forward and %d backward-data convolutions read taps copies\n", fwd, bwd);
    assert_true(fwd >= 10 && bwd >= 10);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(train);
}

/* Training's weight-gradient work sits among the backward pass in parts (so
 * a data-parallel all-reduce of finished gradients overlaps the rest of the
 * pass), the network's own steps keep their order, and nothing is read
 * before it is written (edm_plan_finish checks that much on every plan). */
static void test_wgrad_placement(void **state)
{
    (void)state;
    edm_graph *train = compile("edm2-tiny.edm", NULL, 0, 1), *rw;
    edm_plan *p = plan_of(train, EDM_FUSE_ALL, 1, &rw);
    int parts = 0, main_after_wgrad = 0, seen_wgrad = 0, last_root = -1, in_order = 1;
    for (int gi = 0; gi < p->ngroups; gi++) {
        const edm_plan_group *g = &p->groups[gi];
        int wgrad = strcmp(g->name, "wgrad") == 0;
        parts += wgrad && (gi == 0 || strcmp(p->groups[gi - 1].name, "wgrad") != 0);
        if (wgrad || strcmp(g->name, "weights") == 0) {
            seen_wgrad |= wgrad;
            continue;
        }
        main_after_wgrad += seen_wgrad;
        int root = p->steps[g->first_step].root;
        in_order &= root > last_root;
        last_root = root;
    }
    print_message("tiny training --fuse=all: the weight gradients in %d parts, %d network kernels after the first\n",
                  parts, main_after_wgrad);
    assert_true(parts >= 2 && parts <= 8);
    assert_true(main_after_wgrad > 0);
    assert_true(in_order);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(train);
}

/* attn: every q·kᵀ → softmax → ·v of the forward pass is one attention
 * step (no scores stored).  In training the backward pass reads the
 * softmax's weights, so attn does not match there; attntrain makes the
 * forward's attention one step all the same and the backward pass read the
 * scores and softmax recomputed, in the backward pass, before their first
 * reader: the weights no longer live from the forward pass to the backward. */
static void test_attn_rule(void **state)
{
    (void)state;
    edm_graph *fwd = compile("edm2-tiny.edm", NULL, 0, 0), *train = compile("edm2-tiny.edm", NULL, 0, 1), *rw;
    int softmax = 0;
    for (int i = 0; i < edm_graph_count(fwd); i++)
        softmax += edm_graph_node(fwd, i)->op == EDM_OP_SOFTMAX;
    assert_true(softmax >= 2);
    edm_plan *p = plan_of(fwd, EDM_FUSE_ATTN, 0, &rw);
    check_invariants(rw, p);
    int attention = 0, left = 0, steps = 0;
    for (int i = 0; i < edm_graph_count(rw); i++) {
        const edm_node *n = edm_graph_node(rw, i);
        attention += n->op == EDM_OP_ATTENTION;
        left += n->op == EDM_OP_SOFTMAX;
    }
    for (int s = 0; s < p->nsteps; s++)
        steps += p->steps[s].core >= 0 && edm_graph_node(rw, p->steps[s].core)->op == EDM_OP_ATTENTION;
    assert_int_equal(attention, softmax);
    assert_int_equal(left, 0);
    assert_int_equal(steps, softmax); /* each its own kernel */
    /* each replaced three kernels (two matmuls and the softmax) */
    assert_int_equal(kernels(fwd, EDM_FUSE_NONE, 0) - kernels(fwd, EDM_FUSE_ATTN, 0), 2 * softmax);
    /* attntrain changes nothing in a forward pass alone */
    assert_int_equal(kernels(fwd, EDM_FUSE_ALL, 0), kernels(fwd, EDM_FUSE_ALL & ~(unsigned)EDM_FUSE_ATTNTRAIN, 0));
    edm_plan_free(p);
    edm_graph_free(rw);

    unsigned without = EDM_FUSE_ALL & ~(unsigned)EDM_FUSE_ATTNTRAIN;
    p = plan_of(train, without, 1, &rw);
    attention = 0;
    for (int i = 0; i < edm_graph_count(rw); i++)
        attention += edm_graph_node(rw, i)->op == EDM_OP_ATTENTION;
    assert_int_equal(attention, 0);
    int64_t peak_without = p->act_peak_bytes;
    edm_plan_free(p);
    edm_graph_free(rw);

    p = plan_of(train, EDM_FUSE_ALL, 1, &rw);
    check_invariants(rw, p);
    int forward_end = -1, last_attention = -1, recomputed = 0;
    attention = 0;
    for (int s = 0; s < p->nsteps; s++) {
        if (p->steps[s].core < 0)
            continue;
        edm_op op = edm_graph_node(rw, p->steps[s].core)->op;
        forward_end = op == EDM_OP_CONV2D ? s : forward_end; /* the forward pass's last convolution */
        last_attention = op == EDM_OP_ATTENTION ? s : last_attention;
    }
    for (int i = 0; i < edm_graph_count(rw); i++) {
        const edm_node *n = edm_graph_node(rw, i);
        attention += n->op == EDM_OP_ATTENTION;
        if (n->op != EDM_OP_SOFTMAX)
            continue;
        const edm_node *scores = edm_graph_node(rw, n->input[0]);
        assert_string_equal(n->origin, "attntrain");
        assert_int_equal(scores->op, EDM_OP_MATMUL);
        assert_string_equal(scores->origin, "attntrain");
        /* stored, made after the forward pass (so read there too) */
        const edm_plan_value *v = &p->values[i];
        assert_true(v->step > forward_end && v->last > v->step);
        recomputed++;
    }
    print_message("tiny training --fuse=all: %d attention steps in the forward pass, %d recomputed softmaxes; "
                  "activations at the peak %.3f MiB, %.3f MiB without attntrain (batch 2)\n",
                  attention, recomputed, (double)p->act_peak_bytes / (1 << 20), (double)peak_without / (1 << 20));
    assert_int_equal(attention, softmax);
    assert_int_equal(recomputed, softmax);
    assert_true(last_attention >= 0 && last_attention < forward_end);
    assert_true(p->act_peak_bytes < peak_without);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(fwd);
    edm_graph_free(train);
}

/* img512-s: ≤ 400 kernels per forward (from 1917 unfused); the variants fuse too. */
static void test_big_models(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int all, none;
    } models[] = {
        {"edm2-img512-s.edm", 238, 1917},
        {"variants/edm2-img512-s-plain.edm", 238, 1810},
        {"variants/edm2-img512-s-attn32.edm", 238, 1917},
        {"variants/edm2-img512-s-2blocks.edm", 186, 1485},
    };
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        edm_graph *g = compile(models[m].file, NULL, 0, 0), *rw;
        int ka = kernels(g, EDM_FUSE_ALL, 0), kn = kernels(g, EDM_FUSE_NONE, 0);
        if (ka != models[m].all || kn != models[m].none)
            print_error("%s: %d fused, %d unfused kernels\n", models[m].file, ka, kn);
        assert_int_equal(ka, models[m].all);
        assert_int_equal(kn, models[m].none);
        assert_true(ka <= 400);
        edm_plan *p = plan_of(g, EDM_FUSE_ALL, 0, &rw);
        check_invariants(rw, p);
        edm_plan_free(p);
        edm_graph_free(rw);
        edm_graph_free(g);
    }
}

/* Training memory: the activations the fused step keeps live at its peak,
 * against --fuse=none (per sample, batch-dependent values): at most half. */
static void test_training_memory(void **state)
{
    (void)state;
    static const char *const models[] = {"edm2-tiny.edm", "edm2-img512-s.edm"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        edm_graph *g = compile(models[m], NULL, 0, 1), *rw;
        edm_plan *a = plan_of(g, EDM_FUSE_ALL, 1, &rw);
        edm_graph *rn;
        edm_plan *n = plan_of(g, EDM_FUSE_NONE, 1, &rn);
        double ratio = (double)a->act_peak_bytes / (double)n->act_peak_bytes;
        print_message("%s training activations at the peak: %.2f vs %.2f MiB (batch 2): %.3fx\n", models[m],
                      (double)a->act_peak_bytes / (1 << 20), (double)n->act_peak_bytes / (1 << 20), ratio);
        assert_true(ratio <= 0.5);
        check_invariants(rw, a);
        edm_plan_free(a);
        edm_plan_free(n);
        edm_graph_free(rw);
        edm_graph_free(rn);
        edm_graph_free(g);
    }
}

/* The arena is as small as the lifetimes allow: no larger than the most
 * bytes live at one step (a step's value lives from its step to the end of
 * the group of its last reader), at a batch and element size where the
 * difference is large (first fit in step order left img512-s's training
 * arena 0.7 GiB above it at batch 128, f16). */
static void test_arena_placement(void **state)
{
    (void)state;
    static const char *const models[] = {"edm2-tiny.edm", "edm2-img512-s.edm"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
        for (int training = 0; training <= 1; training++) {
            edm_graph *g = compile(models[m], NULL, 0, training), *rw;
            edm_plan *p = plan_of(g, EDM_FUSE_ALL, training, &rw);
            edm_status st;
            edm_status_init(&st);
            assert_int_equal(edm_plan_bind(p, 128, 2, &st), 0);
            int64_t *delta = calloc((size_t)p->nsteps + 2, sizeof *delta), live = 0, peak = 0;
            assert_non_null(delta);
            for (int s = 0; s < p->nsteps; s++) {
                const edm_plan_value *v = &p->values[p->steps[s].root];
                int last = v->last < s ? s : v->last >= p->nsteps ? p->nsteps - 1 : v->last;
                const edm_plan_group *gr = &p->groups[p->steps[last].group];
                delta[s] += (v->bytes + 255) & ~(int64_t)255;
                delta[gr->first_step + gr->nsteps] -= (v->bytes + 255) & ~(int64_t)255;
            }
            for (int s = 0; s < p->nsteps; s++) {
                live += delta[s];
                peak = live > peak ? live : peak;
            }
            print_message("%s %s at batch 128, 2-byte values: arena %.1f MiB, most live at a step %.1f MiB\n",
                          models[m], training ? "training" : "forward", (double)p->arena_bytes / (1 << 20),
                          (double)peak / (1 << 20));
            assert_true(p->arena_bytes <= peak + peak / 1000);
            check_invariants(rw, p);
            free(delta);
            edm_plan_free(p);
            edm_graph_free(rw);
            edm_graph_free(g);
        }
}

/* One table holds each elementwise op's math: the CPU kernels (f64, fused
 * and unfused) give exactly edm_ew_eval's numbers. */
static void test_ew_math_table(void **state)
{
    (void)state;
    static const edm_op ops[] = {EDM_OP_NEG,     EDM_OP_EXP,  EDM_OP_LOG,     EDM_OP_SQRT, EDM_OP_RSQRT, EDM_OP_SIN,
                                 EDM_OP_COS,     EDM_OP_SQUARE, EDM_OP_SIGMOID, EDM_OP_SILU, EDM_OP_CLAMP, EDM_OP_STEP,
                                 EDM_OP_ADD,     EDM_OP_SUB,  EDM_OP_MUL,     EDM_OP_DIV,  EDM_OP_MAXIMUM};
    const double xs[] = {0.25, 1.5, 3.0, -2.0, 7.5, 300.0};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        edm_status st;
        edm_status_init(&st);
        edm_graph *g = edm_graph_new();
        assert_non_null(g);
        edm_node in = {.op = EDM_OP_INPUT, .shape = {.rank = 2, .dim = {EDM_DIM_BATCH, 6}}, .name = "x"};
        int x = edm_graph_add(g, &in, &st);
        in.name = "y";
        int y = edm_graph_add(g, &in, &st);
        edm_node n = {.op = ops[k], .ninputs = edm_op_arity(ops[k]), .input = {x, y}};
        n.attr.clamp.lo = -1;
        n.attr.clamp.hi = 2;
        assert_int_equal(edm_infer_node(g, &n, &st), 0);
        int r = edm_graph_add(g, &n, &st);
        edm_node out = {.op = EDM_OP_OUTPUT, .ninputs = 1, .input = {r}, .name = "r"};
        assert_int_equal(edm_infer_node(g, &out, &st), 0);
        int o = edm_graph_add(g, &out, &st);
        for (int f = 0; f < 2; f++) {
            edm_cpu_options opt = {.compute = EDM_F64, .fuse = f ? EDM_FUSE_ALL : EDM_FUSE_NONE};
            edm_cpu *c = edm_cpu_new(g, 1, &opt, &st);
            assert_non_null(c);
            double ys[6] = {0.5, -1.0, 2.0, 4.0, -0.5, 1e-3};
            assert_int_equal(edm_cpu_set_f64(c, "x", xs, 6, &st), 0);
            assert_int_equal(edm_cpu_set_f64(c, "y", ys, 6, &st), 0);
            assert_int_equal(edm_cpu_run(c, &st), 0);
            double got[6];
            assert_int_equal(edm_cpu_get_f64(c, o, got, 6, &st), 0);
            for (int i = 0; i < 6; i++) {
                double want = edm_ew_eval(&n, xs[i], ys[i]);
                if (!(got[i] == want || (isnan(got[i]) && isnan(want))))
                    print_error("%s(%g, %g): CPU %.17g, table %.17g\n", edm_op_name(ops[k]), xs[i], ys[i], got[i], want);
                assert_true(got[i] == want || (isnan(got[i]) && isnan(want)));
            }
            edm_cpu_free(c);
        }
        edm_graph_free(g);
    }
}

/* Writes the text with its first `from` at or after `after` (NULL: the
 * start) replaced by `to` into path. */
static void write_replaced(const char *path, const char *text, const char *after, const char *from, const char *to)
{
    const char *at = strstr(after ? after : text, from);
    assert_non_null(at);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fwrite(text, 1, (size_t)(at - text), out);
    fputs(to, out);
    fputs(at + strlen(from), out);
    assert_int_equal(fclose(out), 0);
}

/* Writes p's XML into a new file named from path ("/tmp/x-XXXXXX",
 * rewritten in place) and returns the file's text (malloc'd). */
static char *write_plan_file(const edm_plan *p, char *path)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_plan_write_xml(f, p, &st), 0);
    assert_int_equal(fclose(f), 0);
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    assert_int_equal(fseek(in, 0, SEEK_END), 0);
    long size = ftell(in);
    assert_true(size > 0);
    rewind(in);
    char *text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    text[size] = '\0';
    return text;
}

/* The plan's XML reads back into the same plan; damaged files are one error each. */
static void test_plan_xml(void **state)
{
    (void)state;
    edm_graph *g = compile("edm2-tiny.edm", NULL, 0, 1), *rw;
    edm_plan *p = plan_of(g, EDM_FUSE_ALL, 1, &rw);
    char path[] = "/tmp/edmc-plan-XXXXXX";
    char *text = write_plan_file(p, path);
    edm_status st;
    edm_status_init(&st);
    edm_plan *q = edm_plan_read_xml(path, rw, &st);
    if (!q)
        print_error("%s\n", st.msg);
    assert_non_null(q);
    assert_int_equal(q->nsteps, p->nsteps);
    assert_int_equal(q->ngroups, p->ngroups);
    assert_int_equal(q->opt.fuse, p->opt.fuse);
    for (int s = 0; s < p->nsteps; s++) {
        assert_int_equal(q->steps[s].root, p->steps[s].root);
        assert_int_equal(q->steps[s].core, p->steps[s].core);
        assert_int_equal(q->steps[s].group, p->steps[s].group);
        assert_string_equal(q->steps[s].kind, p->steps[s].kind);
        assert_int_equal(q->steps[s].nmembers, p->steps[s].nmembers);
        assert_memory_equal(q->steps[s].members, p->steps[s].members, sizeof *p->steps[s].members * (size_t)p->steps[s].nmembers);
    }
    assert_int_equal(edm_plan_bind(q, 2, 4, &st), 0);
    for (int i = 0; i < p->nvalues; i++)
        assert_memory_equal(&q->values[i], &p->values[i], sizeof p->values[i]);
    edm_plan_free(q);
    /* damage: another graph, a step reading a value nobody writes, a made-up kind */
    static const struct {
        const char *from, *to, *expect;
    } damage[] = {
        {"nodes=\"", "nodes=\"1", "another graph"},
        {"role=\"prologue\"", "role=\"sideways\"", "without a role"},
        {"kind=\"contract\"", "kind=\"magic\"", "known kind"},
        {"<member node=\"", "<member node=\"99999", "expected an integer"},
        {"role=\"core\"", "role=\"epilogue\"", "lists it once"},
    };
    for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
        write_replaced(path, text, NULL, damage[d].from, damage[d].to);
        edm_status_init(&st);
        edm_plan *bad = edm_plan_read_xml(path, rw, &st);
        if (bad || !strstr(st.msg, damage[d].expect))
            print_error("damage %zu: %s\n", d, st.msg);
        assert_null(bad);
        assert_non_null(strstr(st.msg, damage[d].expect));
    }
    unlink(path);
    free(text);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(g);
}

/* A plan read back with the plan's own memory table, bound as before: the
 * check passes; edm_plan_layout_check's verdict on q, and its message. */
static int layout_verdict(const char *path, const edm_graph *rw, const int64_t *esize, const edm_dtype *dtype,
                          int64_t batch, edm_status *st)
{
    edm_status_init(st);
    edm_plan *q = edm_plan_read_xml(path, rw, st);
    if (!q)
        print_error("%s\n", st->msg);
    assert_non_null(q);
    assert_int_equal(q->nlayouts, 1);
    assert_int_equal(edm_plan_bind_sizes(q, batch, 4, esize, st), 0);
    int rc = edm_plan_layout_check(q, "sm_90", batch, dtype, 1 << 20, st);
    edm_plan_free(q);
    return rc;
}

/* A plan's memory table (a CUDA package's plan.xml) reads back and fits the
 * same binding; an altered offset, a value left out, another storage type, or
 * a batch without a table is one error naming what differs. */
static void test_plan_memory_xml(void **state)
{
    (void)state;
    edm_graph *g = compile("edm2-tiny.edm", NULL, 0, 1), *rw;
    edm_plan *p = plan_of(g, EDM_FUSE_ALL, 1, &rw);
    int n = edm_graph_count(rw);
    int64_t *esize = malloc(sizeof *esize * (size_t)n);
    edm_dtype *dtype = malloc(sizeof *dtype * (size_t)n);
    assert_non_null(esize);
    assert_non_null(dtype);
    for (int i = 0; i < n; i++) { /* half precision on every other value, as the CUDA executor stores some */
        dtype[i] = i % 2 ? EDM_F16 : EDM_F32;
        esize[i] = i % 2 ? 2 : 4;
    }
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_plan_bind_sizes(p, 3, 4, esize, &st), 0);
    p->layouts = calloc(1, sizeof *p->layouts);
    assert_non_null(p->layouts);
    assert_int_equal(edm_plan_layout_make(p, "sm_90", 3, dtype, 1 << 20, &p->layouts[0], &st), 0);
    p->nlayouts = 1;
    /* a root stored in the arena, to alter */
    const edm_plan_layout_value *root = NULL;
    for (int i = 0; i < p->layouts[0].nvalues && !root; i++)
        if (p->layouts[0].values[i].offset > 0)
            root = &p->layouts[0].values[i];
    assert_non_null(root);
    char path[] = "/tmp/edmc-plan-mem-XXXXXX";
    char *text = write_plan_file(p, path);

    /* the round trip: the same table, and it fits */
    edm_plan *q = edm_plan_read_xml(path, rw, &st);
    assert_non_null(q);
    assert_int_equal(q->nlayouts, 1);
    assert_string_equal(q->layouts[0].arch, "sm_90");
    assert_int_equal(q->layouts[0].batch, 3);
    assert_int_equal(q->layouts[0].arena_bytes, p->arena_bytes);
    assert_int_equal(q->layouts[0].nvalues, p->layouts[0].nvalues);
    assert_memory_equal(q->layouts[0].values, p->layouts[0].values,
                        sizeof *p->layouts[0].values * (size_t)p->layouts[0].nvalues);
    edm_plan_free(q);
    assert_int_equal(layout_verdict(path, rw, esize, dtype, 3, &st), 0);

    /* no table for batch 4 */
    assert_int_equal(layout_verdict(path, rw, esize, dtype, 4, &st), -1);
    assert_non_null(strstr(st.msg, "has no memory table for sm_90, batch 4 (it has sm_90 batch 3)"));
    /* another storage type for the value at node 1 than the table's */
    dtype[1] = EDM_BF16;
    assert_int_equal(layout_verdict(path, rw, esize, dtype, 3, &st), -1);
    assert_non_null(strstr(st.msg, "value 1 ("));
    assert_non_null(strstr(st.msg, "has storage type f16 in the package, bf16 as this run binds it"));
    dtype[1] = EDM_F16;

    /* an altered offset */
    char from[96], to[96], expect[160];
    snprintf(from, sizeof from, "<value node=\"%d\"", root->node);
    const char *line = strstr(text, from);
    assert_non_null(line);
    snprintf(from, sizeof from, "offset=\"%lld\"", (long long)root->offset);
    snprintf(to, sizeof to, "offset=\"%lld\"", (long long)root->offset + 256);
    assert_non_null(strstr(line, from));
    write_replaced(path, text, line, from, to); /* in this value's element, not an earlier one */
    assert_int_equal(layout_verdict(path, rw, esize, dtype, 3, &st), -1);
    snprintf(expect, sizeof expect, "value %d (", root->node);
    assert_non_null(strstr(st.msg, expect));
    snprintf(expect, sizeof expect, "has arena offset %lld in the package, %lld as this run binds it",
             (long long)root->offset + 256, (long long)root->offset);
    if (!strstr(st.msg, expect))
        print_error("%s\n", st.msg);
    assert_non_null(strstr(st.msg, expect));
    assert_non_null(strstr(st.msg, "the memory table for sm_90, batch 3, does not fit this run"));

    /* a value left out of the table */
    snprintf(from, sizeof from, "<value node=\"%d\"", root->node);
    const char *start = strstr(text, from), *end = strstr(start, "/>");
    assert_non_null(end);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fwrite(text, 1, (size_t)(start - text), out);
    fputs(end + 2, out);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(layout_verdict(path, rw, esize, dtype, 3, &st), -1);
    snprintf(expect, sizeof expect, "value %d (", root->node);
    assert_non_null(strstr(st.msg, expect));
    assert_non_null(strstr(st.msg, "missing from the package's table"));

    /* damage the reader refuses: values out of order, an unknown dtype */
    write_replaced(path, text, NULL, "dtype=\"f16\"", "dtype=\"f12\"");
    edm_status_init(&st);
    assert_null(edm_plan_read_xml(path, rw, &st));
    assert_non_null(strstr(st.msg, "without a known dtype"));
    write_replaced(path, text, NULL, "<value node=\"1\"", "<value node=\"0\"");
    edm_status_init(&st);
    assert_null(edm_plan_read_xml(path, rw, &st));
    assert_non_null(strstr(st.msg, "not in node order"));
    unlink(path);
    free(text);
    free(esize);
    free(dtype);
    edm_plan_free(p);
    edm_graph_free(rw);
    edm_graph_free(g);
}

/* ------------------------------------------------------------------ numbers */

/* Runs g on the CPU with every leaf filled from seeded streams (σ-like
 * inputs positive) and returns every output, concatenated, in f64. */
static double *run_all(const edm_graph *g, unsigned fuse, edm_dtype compute, int training, int64_t batch, int64_t *n)
{
    edm_status st;
    edm_status_init(&st);
    edm_cpu_options o = {.compute = compute, .fuse = fuse, .training = training, .seed = 7, .threads = 2};
    edm_cpu *x = edm_cpu_new(g, batch, &o, &st);
    if (!x)
        print_error("%s\n", st.msg);
    assert_non_null(x);
    int64_t total = 0;
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *nd = edm_graph_node(g, i);
        if (nd->op == EDM_OP_OUTPUT)
            total += edm_cpu_numel(x, i);
        if (nd->op != EDM_OP_INPUT && nd->op != EDM_OP_PARAM && nd->op != EDM_OP_BUFFER)
            continue;
        int64_t cnt = edm_cpu_numel(x, i);
        double *v = malloc(sizeof *v * (size_t)(cnt ? cnt : 1));
        assert_non_null(v);
        edm_rng r = edm_rng_make(11, nd->name);
        edm_rng_normal_f64(&r, 0, v, cnt);
        if (strcmp(nd->name, "sigma") == 0)
            for (int64_t k = 0; k < cnt; k++)
                v[k] = exp(v[k]);
        assert_int_equal(edm_cpu_set_f64(x, nd->name, v, cnt, &st), 0);
        free(v);
    }
    if (edm_cpu_run(x, &st) != 0)
        print_error("%s\n", st.msg);
    double *out = malloc(sizeof *out * (size_t)(total ? total : 1));
    assert_non_null(out);
    int64_t at = 0;
    for (int i = 0; i < edm_graph_count(g); i++)
        if (edm_graph_node(g, i)->op == EDM_OP_OUTPUT) {
            int64_t cnt = edm_cpu_numel(x, i);
            assert_int_equal(edm_cpu_get_f64(x, i, out + at, cnt, &st), 0);
            at += cnt;
        }
    edm_cpu_free(x);
    *n = total;
    return out;
}

static double max_rel(const double *a, const double *b, int64_t n)
{
    double num = 0, den = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
        assert_false(isnan(a[i]));
    }
    worst = sqrt(num / (den > 0 ? den : 1));
    return worst;
}

static void compare_settings(const edm_graph *g, int training, const char *what)
{
    static const unsigned settings[] = {EDM_FUSE_ALL, EDM_FUSE_WN, EDM_FUSE_PROLOGUE, EDM_FUSE_EPILOGUE, EDM_FUSE_EW, EDM_FUSE_ATTN,
                                        EDM_FUSE_PROLOGUE | EDM_FUSE_EPILOGUE | EDM_FUSE_EW, EDM_FUSE_ATTNTRAIN};
    for (int prec = 0; prec < 2; prec++) {
        edm_dtype t = prec ? EDM_F32 : EDM_F64;
        double tol = prec ? 1e-5 : 1e-10;
        int64_t nn, na;
        double *ref = run_all(g, EDM_FUSE_NONE, t, training, 3, &nn);
        for (size_t s = 0; s < sizeof settings / sizeof settings[0]; s++) {
            double *got = run_all(g, settings[s], t, training, 3, &na);
            assert_int_equal(na, nn);
            double e = max_rel(got, ref, nn);
            char buf[64];
            print_message("%s %s --fuse=%s vs none: %.2e\n", what, prec ? "f32" : "f64",
                          edm_fuse_str(settings[s], buf, sizeof buf), e);
            assert_true(e < tol);
            free(got);
        }
        free(ref);
    }
}

static void test_forward_numbers(void **state)
{
    (void)state;
    edm_graph *g = compile("edm2-tiny.edm", NULL, 0, 0);
    compare_settings(g, 0, "tiny forward");
    edm_graph_free(g);
    /* attention at 32×32: 1024 keys, so the CPU's score tiles hold 64 queries (several tiles) */
    static const edm_define d[] = {{"img_resolution", "32"}, {"attn_resolutions", "[32]"}, {"channel_mult", "[1]"}};
    g = compile("edm2-tiny.edm", d, 3, 0);
    compare_settings(g, 0, "tiny 32x32 attention forward");
    edm_graph_free(g);
}

/* A training step's loss and every gradient, with dropout drawing masks. */
static void test_training_numbers(void **state)
{
    (void)state;
    edm_define d[] = {{"dropout", "0.1"}};
    edm_graph *g = compile("edm2-tiny.edm", d, 1, 1);
    compare_settings(g, 1, "tiny training (dropout 0.1)");
    edm_graph_free(g);
}

static void test_variant_numbers(void **state)
{
    (void)state;
    edm_define d[] = {{"img_resolution", "16"}, {"model_channels", "32"}, {"channel_mult", "[1,2]"},
                      {"attn_resolutions", "[8]"}, {"label_dim", "10"}, {"logvar_channels", "16"}};
    edm_graph *g = compile("variants/edm2-img512-s-plain.edm", d, 6, 0);
    compare_settings(g, 0, "plain variant forward");
    edm_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_tiny_kernels),
        cmocka_unit_test(test_tiny_groups),
        cmocka_unit_test(test_wgrad_placement),
        cmocka_unit_test(test_taps_training),
        cmocka_unit_test(test_attn_rule),
        cmocka_unit_test(test_big_models),
        cmocka_unit_test(test_training_memory),
        cmocka_unit_test(test_arena_placement),
        cmocka_unit_test(test_forward_numbers),
        cmocka_unit_test(test_training_numbers),
        cmocka_unit_test(test_variant_numbers),
        cmocka_unit_test(test_plan_xml),
        cmocka_unit_test(test_plan_memory_xml),
        cmocka_unit_test(test_ew_math_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
