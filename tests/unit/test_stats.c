#include "config.h"
#include "compiler/passes/passes.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#define N EDM_DIM_BATCH

/* ------------------------------------------------------------------ helpers */

/* Infers n's shape and adds it; fails the test on any error. */
static int add(edm_graph *g, edm_node n)
{
    edm_status st;
    edm_status_init(&st);
    if (edm_infer_node(g, &n, &st) != 0)
        fail_msg("infer %s: %s", edm_op_name(n.op), st.msg);
    int id = edm_graph_add(g, &n, &st);
    assert_true(id >= 0);
    return id;
}

static edm_shape shape4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    return (edm_shape){.rank = 4, .dim = {a, b, c, d}};
}

static edm_shape shape2(int64_t a, int64_t b) { return (edm_shape){.rank = 2, .dim = {a, b}}; }

static edm_shape shape3(int64_t a, int64_t b, int64_t c) { return (edm_shape){.rank = 3, .dim = {a, b, c}}; }

static int leaf(edm_graph *g, edm_op op, const char *name, edm_shape s)
{
    return add(g, (edm_node){.op = op, .name = name, .shape = s, .loc = EDM_NO_LOC});
}

static int un_o(edm_graph *g, edm_op op, int a, const char *origin)
{
    return add(g, (edm_node){.op = op, .ninputs = 1, .input = {a}, .loc = EDM_NO_LOC, .origin = origin});
}

static int un(edm_graph *g, edm_op op, int a) { return un_o(g, op, a, NULL); }

static int bin_o(edm_graph *g, edm_op op, int a, int b, const char *origin)
{
    return add(g, (edm_node){.op = op, .ninputs = 2, .input = {a, b}, .loc = EDM_NO_LOC, .origin = origin});
}

static int bin(edm_graph *g, edm_op op, int a, int b) { return bin_o(g, op, a, b, NULL); }

static int output(edm_graph *g, const char *name, int a)
{
    return add(g, (edm_node){.op = EDM_OP_OUTPUT, .name = name, .ninputs = 1, .input = {a}, .loc = EDM_NO_LOC});
}

static int conv_o(edm_graph *g, int x, int w, int stride, int pad, const char *origin)
{
    edm_node n = {.op = EDM_OP_CONV2D, .ninputs = 2, .input = {x, w}, .loc = EDM_NO_LOC, .origin = origin};
    n.attr.conv.stride = stride;
    n.attr.conv.pad = pad;
    return add(g, n);
}

static int matmul(edm_graph *g, int a, int b, int ta, int tb)
{
    edm_node n = {.op = EDM_OP_MATMUL, .ninputs = 2, .input = {a, b}, .loc = EDM_NO_LOC};
    n.attr.matmul.trans_a = ta;
    n.attr.matmul.trans_b = tb;
    return add(g, n);
}

static int reduce(edm_graph *g, edm_op op, int a, uint32_t axes, int keepdim)
{
    edm_node n = {.op = op, .ninputs = 1, .input = {a}, .loc = EDM_NO_LOC};
    n.attr.reduce.axes = axes;
    n.attr.reduce.keepdim = keepdim;
    return add(g, n);
}

static int reshape(edm_graph *g, int a, edm_shape target)
{
    return add(g, (edm_node){.op = EDM_OP_RESHAPE, .ninputs = 1, .input = {a}, .shape = target, .loc = EDM_NO_LOC});
}

static void compute(const edm_graph *g, edm_stats *s)
{
    edm_status st;
    edm_status_init(&st);
    if (edm_stats_compute(g, s, &st) != 0)
        fail_msg("stats: %s", st.msg);
}

static const edm_stat_row *find_row(const edm_stat_row *rows, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].key, key) == 0)
            return &rows[i];
    return NULL;
}

static void assert_sorted(const edm_stat_row *rows, int n)
{
    for (int i = 1; i < n; i++) {
        assert_true(rows[i - 1].macs_per_sample >= rows[i].macs_per_sample);
        if (rows[i - 1].macs_per_sample == rows[i].macs_per_sample)
            assert_true(strcmp(rows[i - 1].key, rows[i].key) < 0);
    }
}

/* ------------------------------------------------------------------ tests */

static void test_conv_silu(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 4, 16, 16));
    int w = leaf(g, EDM_OP_PARAM, "w", shape4(8, 4, 3, 3));
    int c = conv_o(g, x, w, 1, 1, NULL);
    int s = un(g, EDM_OP_SILU, c);
    output(g, "y", s);

    edm_stats st;
    compute(g, &st);
    assert_int_equal(st.params, 288);
    assert_int_equal(st.param_tensors, 1);
    assert_int_equal(st.buffers, 0);
    assert_int_equal(st.buffer_tensors, 0);
    assert_int_equal(st.nodes, 5);
    assert_true(st.macs_per_sample == 8.0 * 16 * 16 * 4 * 9 + 3.0 * 8 * 16 * 16);
    assert_true(st.macs_per_step == 0.0);
    /* x (4·256) + conv (8·256) + silu (8·256), 4 bytes each; output aliases */
    assert_true(st.act_bytes_per_sample == 4.0 * (1024 + 2048 + 2048));
    /* at most two of them live at once: conv and silu */
    assert_true(st.peak_act_bytes_per_sample == 4.0 * (2048 + 2048));

    assert_int_equal(st.nrows, 5);
    assert_sorted(st.rows, st.nrows);
    assert_string_equal(st.rows[0].key, "conv2d");
    assert_true(st.rows[0].macs_per_sample == 8.0 * 16 * 16 * 4 * 9);
    assert_int_equal(st.rows[0].nodes, 1);
    assert_true(st.rows[0].act_bytes_per_sample == 4.0 * 2048);
    assert_string_equal(st.rows[1].key, "silu");
    assert_true(st.rows[1].macs_per_sample == 3.0 * 8 * 16 * 16);
    /* zero-cost rows tie, ordered by name */
    assert_string_equal(st.rows[2].key, "input");
    assert_true(st.rows[2].act_bytes_per_sample == 4.0 * 1024);
    assert_string_equal(st.rows[3].key, "output");
    assert_true(st.rows[3].act_bytes_per_sample == 0.0);
    assert_string_equal(st.rows[4].key, "param");

    /* with no origins given, each node's origin is its op name */
    assert_int_equal(st.norigins, 5);
    assert_string_equal(st.origins[0].key, "conv2d");
    edm_stats_free(&st);
    assert_null(st.rows);
    assert_null(st.origins);
    edm_graph_free(g);
}

static void test_stride_conv(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 3, 8, 8));
    int w = leaf(g, EDM_OP_PARAM, "w", shape4(5, 3, 1, 1));
    int c = conv_o(g, x, w, 2, 0, NULL); /* [N,5,4,4] */
    output(g, "y", c);
    edm_stats st;
    compute(g, &st);
    assert_true(st.macs_per_sample == 5.0 * 4 * 4 * 3);
    assert_int_equal(st.params, 15);
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_weight_norm_per_step(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 4, 16, 16));
    int w = leaf(g, EDM_OP_PARAM, "w", shape4(8, 4, 3, 3));
    int ss = reduce(g, EDM_OP_SUMSQ, w, 0xEu, 1); /* [8,1,1,1] */
    int nrm = un(g, EDM_OP_SQRT, ss);
    int wn = bin(g, EDM_OP_DIV, w, nrm); /* [8,4,3,3] */
    int c = conv_o(g, x, wn, 1, 1, NULL);
    output(g, "y", c);

    edm_stats st;
    compute(g, &st);
    assert_int_equal(st.params, 288);
    assert_true(st.macs_per_sample == 8.0 * 16 * 16 * 4 * 9);
    assert_true(st.macs_per_step == 288.0 + 8.0 + 288.0);
    /* parameter-only values are not activations */
    assert_true(st.act_bytes_per_sample == 4.0 * (1024 + 2048));

    const edm_stat_row *r = find_row(st.rows, st.nrows, "sumsq");
    assert_non_null(r);
    assert_true(r->macs_per_step == 288.0);
    assert_true(r->macs_per_sample == 0.0);
    assert_true(r->act_bytes_per_sample == 0.0);
    r = find_row(st.rows, st.nrows, "div");
    assert_non_null(r);
    assert_true(r->macs_per_step == 288.0);
    assert_sorted(st.rows, st.nrows);
    assert_string_equal(st.rows[0].key, "conv2d");
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_matmul(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape2(N, 16));
    int w = leaf(g, EDM_OP_PARAM, "w", shape2(32, 16));
    int y = matmul(g, x, w, 0, 1); /* [N,32], K = 16 */
    output(g, "y", y);
    /* parameter-only matmul with trans_a: [16,8]^T · [16,5] = [8,5], K = 16 */
    int p = leaf(g, EDM_OP_PARAM, "p", shape2(16, 8));
    int q = leaf(g, EDM_OP_PARAM, "q", shape2(16, 5));
    int pq = matmul(g, p, q, 1, 0);
    output(g, "pq", pq);
    /* batched: [N,4,16] · [16,8] = [N,4,8], K = 16 */
    int x3 = leaf(g, EDM_OP_INPUT, "x3", shape3(N, 4, 16));
    int v = leaf(g, EDM_OP_PARAM, "v", shape2(16, 8));
    int z = matmul(g, x3, v, 0, 0);
    output(g, "z", z);

    edm_stats st;
    compute(g, &st);
    assert_int_equal(st.params, 512 + 128 + 80 + 128);
    assert_int_equal(st.param_tensors, 4);
    assert_true(st.macs_per_sample == 32.0 * 16 + 4.0 * 8 * 16);
    assert_true(st.macs_per_step == 8.0 * 5 * 16);
    const edm_stat_row *r = find_row(st.rows, st.nrows, "matmul");
    assert_non_null(r);
    assert_int_equal(r->nodes, 3);
    assert_true(r->macs_per_sample == 32.0 * 16 + 4.0 * 8 * 16);
    assert_true(r->macs_per_step == 640.0);
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_reduce_counts_input(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 4, 8, 8));
    int s1 = reduce(g, EDM_OP_SUMSQ, x, 0xEu, 1); /* [N,1,1,1] */
    int s2 = reduce(g, EDM_OP_SUM, x, 0x2u, 0);   /* [N,8,8] */
    output(g, "a", s1);
    output(g, "b", s2);
    edm_stats st;
    compute(g, &st);
    assert_true(st.macs_per_sample == 256.0 + 256.0);
    assert_true(find_row(st.rows, st.nrows, "sumsq")->macs_per_sample == 256.0);
    assert_true(find_row(st.rows, st.nrows, "sum")->macs_per_sample == 256.0);
    assert_true(st.act_bytes_per_sample == 4.0 * (256 + 1 + 64));
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_other_ops(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 2, 8, 8));
    int p = un(g, EDM_OP_AVGPOOL2, x); /* [N,2,4,4]: 32 */
    int u = un(g, EDM_OP_UPSAMPLE2, p); /* 0 */
    edm_node sm = {.op = EDM_OP_SOFTMAX, .ninputs = 1, .input = {u}, .loc = EDM_NO_LOC};
    sm.attr.softmax.axis = 1;
    int s = add(g, sm); /* 3 · 128 */
    edm_node dr = {.op = EDM_OP_DROPOUT, .ninputs = 1, .input = {s}, .loc = EDM_NO_LOC};
    dr.attr.dropout.p = 0.1;
    int d = add(g, dr); /* 128 */
    int cl = un(g, EDM_OP_CLAMP, d); /* 2 · 128 */
    edm_node pm = {.op = EDM_OP_PERMUTE, .ninputs = 1, .input = {cl}, .loc = EDM_NO_LOC};
    pm.attr.permute.perm[0] = 0;
    pm.attr.permute.perm[1] = 2;
    pm.attr.permute.perm[2] = 3;
    pm.attr.permute.perm[3] = 1;
    int pr = add(g, pm); /* 0 */
    int b = leaf(g, EDM_OP_BUFFER, "freq", shape2(3, 7));
    output(g, "y", pr);
    output(g, "b", b);
    edm_stats st;
    compute(g, &st);
    assert_true(st.macs_per_sample == 32.0 + 3 * 128.0 + 128.0 + 2 * 128.0);
    assert_true(st.macs_per_step == 0.0);
    assert_int_equal(st.buffers, 21);
    assert_int_equal(st.buffer_tensors, 1);
    assert_int_equal(st.params, 0);
    /* permute copies: it is an activation; reshape would not be */
    assert_true(find_row(st.rows, st.nrows, "permute")->act_bytes_per_sample == 4.0 * 128);
    assert_true(find_row(st.rows, st.nrows, "upsample2")->macs_per_sample == 0.0);
    assert_sorted(st.rows, st.nrows);
    assert_string_equal(st.rows[0].key, "softmax");
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_peak_chain(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int v = leaf(g, EDM_OP_INPUT, "x", shape2(N, 64));
    static const edm_op chain[] = {EDM_OP_EXP, EDM_OP_NEG, EDM_OP_SQRT, EDM_OP_SQUARE};
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++)
        v = un(g, chain[i], v);
    output(g, "y", v);
    edm_stats st;
    compute(g, &st);
    assert_true(st.act_bytes_per_sample == 5 * 256.0);
    assert_true(st.peak_act_bytes_per_sample < st.act_bytes_per_sample);
    assert_true(st.peak_act_bytes_per_sample == 2 * 256.0);
    edm_stats_free(&st);
    edm_graph_free(g);
}

/* A use of a reshape keeps the reshaped value's storage alive. */
static void test_peak_reshape_alias(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape2(N, 64));
    int e = un(g, EDM_OP_EXP, x);
    int r = reshape(g, e, shape3(N, 8, 8));
    int s = un(g, EDM_OP_SQRT, r);
    int t = un(g, EDM_OP_NEG, s);
    int u = bin(g, EDM_OP_ADD, t, r);
    output(g, "y", u);
    edm_stats st;
    compute(g, &st);
    /* x, e, s, t, u; the reshape allocates nothing */
    assert_true(st.act_bytes_per_sample == 5 * 256.0);
    assert_true(find_row(st.rows, st.nrows, "reshape")->act_bytes_per_sample == 0.0);
    /* at the neg: e (through r), s, t */
    assert_true(st.peak_act_bytes_per_sample == 3 * 256.0);
    edm_stats_free(&st);
    edm_graph_free(g);
}

/* A value that is an output lives to the end. */
static void test_peak_output_lives(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape2(N, 64));
    int e = un(g, EDM_OP_EXP, x);
    output(g, "e", e);
    int n = un(g, EDM_OP_NEG, x);
    output(g, "n", n);
    edm_stats st;
    compute(g, &st);
    assert_true(st.act_bytes_per_sample == 3 * 256.0);
    /* at the neg: x, e (an output), n */
    assert_true(st.peak_act_bytes_per_sample == 3 * 256.0);
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_origins(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape4(N, 4, 8, 8));
    int w = leaf(g, EDM_OP_PARAM, "w", shape4(4, 4, 1, 1));
    int c = conv_o(g, x, w, 1, 0, "mp_conv"); /* 256 · 4 */
    int k = add(g, (edm_node){.op = EDM_OP_CONST, .loc = EDM_NO_LOC, .origin = "mp_silu"});
    int s = un_o(g, EDM_OP_SILU, c, "mp_silu");     /* 3 · 256 */
    int m = bin_o(g, EDM_OP_MUL, s, k, "mp_silu");  /* 256 */
    int s2 = un_o(g, EDM_OP_SILU, m, "mp_silu");    /* 3 · 256 */
    int a = bin_o(g, EDM_OP_ADD, s2, x, "mp_sum");  /* 256 */
    output(g, "y", a);

    edm_stats st;
    compute(g, &st);
    assert_true(st.macs_per_sample == 1024.0 + 768 + 256 + 768 + 256);
    assert_sorted(st.origins, st.norigins);
    /* mp_silu (1792), mp_conv (1024), mp_sum (256), then input, output, param */
    assert_int_equal(st.norigins, 6);
    assert_string_equal(st.origins[0].key, "mp_silu");
    assert_int_equal(st.origins[0].nodes, 4);
    assert_true(st.origins[0].macs_per_sample == 1792.0);
    assert_true(st.origins[0].act_bytes_per_sample == 3 * 1024.0);
    assert_string_equal(st.origins[1].key, "mp_conv");
    assert_int_equal(st.origins[1].nodes, 1);
    assert_true(st.origins[1].macs_per_sample == 1024.0);
    assert_string_equal(st.origins[2].key, "mp_sum");
    assert_string_equal(st.origins[3].key, "input");
    assert_string_equal(st.origins[4].key, "output");
    assert_string_equal(st.origins[5].key, "param");

    /* by op: silu 1536, conv2d 1024, add = mul = 256 (ties by name) */
    assert_sorted(st.rows, st.nrows);
    assert_string_equal(st.rows[0].key, "silu");
    assert_int_equal(st.rows[0].nodes, 2);
    assert_string_equal(st.rows[1].key, "conv2d");
    assert_string_equal(st.rows[2].key, "add");
    assert_string_equal(st.rows[3].key, "mul");
    assert_non_null(find_row(st.rows, st.nrows, "const"));
    edm_stats_free(&st);
    edm_graph_free(g);
}

static void test_empty_and_free(void **state)
{
    (void)state;
    edm_stats z;
    memset(&z, 0, sizeof z);
    edm_stats_free(&z);
    edm_stats_free(NULL);

    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    edm_stats st;
    compute(g, &st);
    assert_int_equal(st.nodes, 0);
    assert_int_equal(st.nrows, 0);
    assert_int_equal(st.norigins, 0);
    assert_true(st.macs_per_sample == 0.0);
    assert_true(st.peak_act_bytes_per_sample == 0.0);
    edm_stats_free(&st);
    edm_stats_free(&st); /* twice is fine */
    edm_graph_free(g);
}

static void test_malformed(void **state)
{
    (void)state;
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = leaf(g, EDM_OP_INPUT, "x", shape2(N, 4));
    int e = un(g, EDM_OP_EXP, x);
    output(g, "y", e);
    edm_graph_node_mut(g, e)->input[0] = 7; /* not an earlier node */
    edm_stats st;
    edm_status es;
    edm_status_init(&es);
    assert_int_equal(edm_stats_compute(g, &st, &es), -1);
    assert_int_equal(es.code, EDM_ERR_INTERNAL);
    assert_null(st.rows);
    assert_null(st.origins);
    assert_int_equal(st.nrows, 0);
    edm_stats_free(&st);
    edm_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_silu),
        cmocka_unit_test(test_stride_conv),
        cmocka_unit_test(test_weight_norm_per_step),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_reduce_counts_input),
        cmocka_unit_test(test_other_ops),
        cmocka_unit_test(test_peak_chain),
        cmocka_unit_test(test_peak_reshape_alias),
        cmocka_unit_test(test_peak_output_lives),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_empty_and_free),
        cmocka_unit_test(test_malformed),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
