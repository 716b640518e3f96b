#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler/ir.h"
#include "compiler/ir_io.h"
#include "compiler/passes/passes.h"

/* ------------------------------------------------------------------ helpers */

#define SHAPE(...) \
    ((edm_shape){.rank = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dim = {__VA_ARGS__}})
#define N EDM_DIM_BATCH

static edm_node mk(edm_op op, int a, int b)
{
    edm_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.ninputs = edm_op_arity(op);
    n.input[0] = a;
    n.input[1] = b;
    n.dtype = EDM_F32;
    n.loc = EDM_NO_LOC;
    return n;
}

/* Infers and adds; -1 with st set when inference fails. */
static int try_add(edm_graph *g, edm_node n, edm_status *st)
{
    if (edm_infer_node(g, &n, st) != 0)
        return -1;
    return edm_graph_add(g, &n, st);
}

static int add(edm_graph *g, edm_node n)
{
    edm_status st;
    edm_status_init(&st);
    int id = try_add(g, n, &st);
    if (id < 0)
        fail_msg("adding %s failed: %s", edm_op_name(n.op), st.msg);
    return id;
}

static int add_input(edm_graph *g, const char *name, edm_shape s)
{
    edm_node n = mk(EDM_OP_INPUT, 0, 0);
    n.name = name;
    n.shape = s;
    return add(g, n);
}

static int add_param(edm_graph *g, edm_op op, const char *name, edm_shape s, edm_init_kind k, double scale,
                     uint64_t seed)
{
    edm_node n = mk(op, 0, 0);
    n.name = name;
    n.shape = s;
    n.attr.init.kind = k;
    n.attr.init.scale = scale;
    n.attr.init.seed = seed;
    return add(g, n);
}

static edm_shape shape_of(const edm_graph *g, int id) { return edm_graph_node(g, id)->shape; }

static void assert_shape(const edm_graph *g, int id, edm_shape want)
{
    char a[128], b[128];
    edm_shape got = shape_of(g, id);
    if (!edm_shape_equal(&got, &want))
        fail_msg("node %d: shape %s, expected %s", id, edm_shape_str(&got, a, sizeof a),
                 edm_shape_str(&want, b, sizeof b));
}

/* Captures a writer's output as a string (caller frees). */
typedef int (*writer_fn)(const edm_graph *, FILE *, edm_status *);

static char *write_to_string(writer_fn fn, const edm_graph *g, size_t *len, edm_status *st)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    assert_non_null(f);
    int rc = fn(g, f, st);
    assert_int_equal(fclose(f), 0);
    if (len)
        *len = size;
    if (rc != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("expected to find\n  %s\nin\n%s", needle, haystack ? haystack : "(null)");
}

/* ------------------------------------------------------------------ the sample graph */

typedef struct {
    int x, w, conv, bias, addb, sumsq, half, mul, pool, up, clamp, reshape, permute, fcw, matmul, softmax, concat,
        slice, dropout, freqs, silu, sum, out;
} sample_ids;

static edm_graph *build_sample(sample_ids *ids)
{
    edm_graph *g = edm_graph_new();
    edm_status st;
    edm_status_init(&st);
    assert_non_null(g);
    assert_int_equal(edm_graph_add_file(g, "models/edm2.edm", &st), 0);
    assert_int_equal(edm_graph_add_file(g, "models/lib.edm", &st), 1);

    ids->x = add_input(g, "x", SHAPE(N, 4, 16, 16));
    edm_graph_node_mut(g, ids->x)->loc = (edm_loc){0, 12, 5, 3};
    ids->w = add_param(g, EDM_OP_PARAM, "enc.conv.weight", SHAPE(8, 4, 3, 3), EDM_INIT_NORMAL, 1.0, 42);

    edm_node n = mk(EDM_OP_CONV2D, ids->x, ids->w);
    n.attr.conv.stride = 1;
    n.attr.conv.pad = 1;
    n.scope = "enc.block0";
    n.origin = "mp_conv";
    n.loc = (edm_loc){0, 40, 9, 7};
    ids->conv = add(g, n);

    ids->bias = add_param(g, EDM_OP_PARAM, "enc.bias", SHAPE(8, 1, 1), EDM_INIT_ZEROS, 0.0, 0);
    ids->addb = add(g, mk(EDM_OP_ADD, ids->conv, ids->bias));

    n = mk(EDM_OP_SUMSQ, ids->addb, 0);
    n.attr.reduce.axes = 0xe;
    n.attr.reduce.keepdim = 1;
    n.loc = (edm_loc){1, 3, 1, 0};
    ids->sumsq = add(g, n);

    n = mk(EDM_OP_CONST, 0, 0);
    n.attr.constant.value = 1.0 / 3.0;
    ids->half = add(g, n);
    ids->mul = add(g, mk(EDM_OP_MUL, ids->addb, ids->half));
    ids->pool = add(g, mk(EDM_OP_AVGPOOL2, ids->mul, 0));
    ids->up = add(g, mk(EDM_OP_UPSAMPLE2, ids->pool, 0));

    n = mk(EDM_OP_CLAMP, ids->up, 0);
    n.attr.clamp.lo = -0.1;
    n.attr.clamp.hi = 1e-310; /* subnormal: must round-trip too */
    n.scope = "odd <&>\"' scope";
    ids->clamp = add(g, n);

    n = mk(EDM_OP_RESHAPE, ids->clamp, 0);
    n.shape = SHAPE(N, 8, 256);
    ids->reshape = add(g, n);

    n = mk(EDM_OP_PERMUTE, ids->reshape, 0);
    n.attr.permute.perm[0] = 0;
    n.attr.permute.perm[1] = 2;
    n.attr.permute.perm[2] = 1;
    ids->permute = add(g, n);

    ids->fcw = add_param(g, EDM_OP_PARAM, "enc.fc.weight", SHAPE(16, 8), EDM_INIT_UNIFORM, 0.125, UINT64_MAX);
    n = mk(EDM_OP_MATMUL, ids->permute, ids->fcw);
    n.attr.matmul.trans_b = 1;
    ids->matmul = add(g, n);

    n = mk(EDM_OP_SOFTMAX, ids->matmul, 0);
    n.attr.softmax.axis = -1;
    ids->softmax = add(g, n);

    n = mk(EDM_OP_CONCAT, ids->softmax, ids->softmax);
    n.attr.concat.axis = 2;
    ids->concat = add(g, n);

    n = mk(EDM_OP_SLICE, ids->concat, 0);
    n.attr.slice.axis = 1;
    n.attr.slice.start = 4;
    n.attr.slice.len = 100;
    ids->slice = add(g, n);

    n = mk(EDM_OP_DROPOUT, ids->slice, 0);
    n.attr.dropout.p = 0.1;
    ids->dropout = add(g, n);

    ids->freqs = add_param(g, EDM_OP_BUFFER, "enc.freqs", SHAPE(16), EDM_INIT_NORMAL, 6.283185307179586, 7);
    ids->silu = add(g, mk(EDM_OP_SILU, ids->dropout, 0));

    n = mk(EDM_OP_SUM, ids->silu, 0);
    n.attr.reduce.axes = 1u << 2;
    ids->sum = add(g, n);

    n = mk(EDM_OP_OUTPUT, ids->sum, 0);
    n.name = "D";
    ids->out = add(g, n);
    return g;
}

/* ------------------------------------------------------------------ shape inference */

static void test_inferred_shapes(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    assert_shape(g, s.conv, SHAPE(N, 8, 16, 16));
    assert_shape(g, s.addb, SHAPE(N, 8, 16, 16));
    assert_shape(g, s.sumsq, SHAPE(N, 1, 1, 1));
    assert_int_equal(shape_of(g, s.half).rank, 0);
    assert_shape(g, s.mul, SHAPE(N, 8, 16, 16));
    assert_shape(g, s.pool, SHAPE(N, 8, 8, 8));
    assert_shape(g, s.up, SHAPE(N, 8, 16, 16));
    assert_shape(g, s.clamp, SHAPE(N, 8, 16, 16));
    assert_shape(g, s.reshape, SHAPE(N, 8, 256));
    assert_shape(g, s.permute, SHAPE(N, 256, 8));
    assert_shape(g, s.matmul, SHAPE(N, 256, 16));
    assert_shape(g, s.softmax, SHAPE(N, 256, 16));
    assert_int_equal(edm_graph_node(g, s.softmax)->attr.softmax.axis, 2); /* normalised */
    assert_shape(g, s.concat, SHAPE(N, 256, 32));
    assert_shape(g, s.slice, SHAPE(N, 100, 32));
    assert_shape(g, s.sum, SHAPE(N, 100));
    assert_shape(g, s.out, SHAPE(N, 100));
    assert_string_equal(edm_graph_node(g, s.conv)->origin, "mp_conv");
    assert_string_equal(edm_graph_node(g, s.addb)->origin, "add");
    assert_string_equal(edm_graph_node(g, s.addb)->scope, "");

    /* nodes by op and name; a backend's leaves by name alone */
    assert_int_equal(edm_graph_find(g, EDM_OP_INPUT, "x"), s.x);
    assert_int_equal(edm_graph_find(g, EDM_OP_OUTPUT, "D"), s.out);
    assert_int_equal(edm_graph_find(g, EDM_OP_PARAM, "x"), -1);
    assert_int_equal(edm_graph_find(g, EDM_OP_INPUT, "D"), -1);
    assert_int_equal(edm_graph_find_leaf(g, "x"), s.x);
    assert_int_equal(edm_graph_find_leaf(g, "enc.fc.weight"), s.fcw);
    assert_int_equal(edm_graph_find_leaf(g, "D"), -1); /* an output is not a leaf */

    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_pass_verify(g, &st), 0);
    edm_graph_free(g);
}

static void test_shape_errors(void **state)
{
    edm_graph *g = edm_graph_new();
    edm_status st;
    edm_status_init(&st);
    int a = add_input(g, "a", SHAPE(N, 4, 16, 16));
    int b = add_input(g, "b", SHAPE(N, 3, 16, 16));
    int w = add_param(g, EDM_OP_PARAM, "w", SHAPE(8, 3, 3, 3), EDM_INIT_NORMAL, 1, 1);
    int m = add_param(g, EDM_OP_PARAM, "m", SHAPE(5, 7), EDM_INIT_NORMAL, 1, 1);
    int odd = add_input(g, "odd", SHAPE(N, 4, 15, 16));

    assert_int_equal(try_add(g, mk(EDM_OP_ADD, a, b), &st), -1);
    assert_int_equal(st.code, EDM_ERR_SEMANTIC);
    assert_contains(st.msg, "[N, 4, 16, 16]");
    assert_contains(st.msg, "[N, 3, 16, 16]");

    edm_node n = mk(EDM_OP_CONV2D, a, w);
    n.attr.conv.stride = 1;
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "input channels");

    n = mk(EDM_OP_MATMUL, a, m);
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "inner dimensions");

    n = mk(EDM_OP_RESHAPE, a, 0);
    n.shape = SHAPE(N, 1000);
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "cannot reshape [N, 4, 16, 16] into [N, 1000]");

    n = mk(EDM_OP_SLICE, a, 0);
    n.attr.slice.axis = 1;
    n.attr.slice.start = 2;
    n.attr.slice.len = 3;
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "out of range");

    assert_int_equal(try_add(g, mk(EDM_OP_AVGPOOL2, odd, 0), &st), -1);
    assert_contains(st.msg, "even");

    /* summing the batch away is allowed: it is how a parameter's gradient forms */
    n = mk(EDM_OP_SUM, a, 0);
    n.attr.reduce.axes = 1; /* the batch axis */
    int summed = try_add(g, n, &st);
    assert_true(summed >= 0);
    assert_false(edm_shape_has_batch(&edm_graph_node(g, summed)->shape));

    n = mk(EDM_OP_PERMUTE, a, 0);
    n.attr.permute.perm[0] = 1; /* also: perm[2] = perm[3] = 0 repeats */
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "not a permutation");

    n = mk(EDM_OP_PARAM, 0, 0);
    n.name = "p";
    n.shape = SHAPE(N, 3);
    assert_int_equal(try_add(g, n, &st), -1);
    assert_contains(st.msg, "cannot have the batch dimension");

    edm_graph_free(g);
}

/* ------------------------------------------------------------------ XML */

static void test_xml_roundtrip(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    edm_status st;
    edm_status_init(&st);
    size_t len = 0, len2 = 0;
    char *xml = write_to_string(edm_ir_write_xml, g, &len, &st);
    assert_non_null(xml);
    assert_contains(xml, "<edmc-ir version=\"1\">");
    assert_contains(xml, "<file index=\"0\" path=\"models/edm2.edm\"/>");
    assert_contains(xml, "op=\"conv2d\"");
    assert_contains(xml, "inputs=\"0,1\"");
    assert_contains(xml, "shape=\"N,4,16,16\"");
    assert_contains(xml, "axes=\"1,2,3\"");
    assert_contains(xml, "perm=\"0,2,1\"");
    assert_contains(xml, "seed=\"18446744073709551615\"");

    edm_graph *back = edm_ir_read_xml_memory(xml, len, "sample.xml", &st);
    if (!back)
        fail_msg("read back failed: %s", st.msg);
    assert_true(edm_graph_equal(g, back));
    assert_true(edm_graph_equal(back, g));
    assert_int_equal(edm_pass_verify(back, &st), 0);
    assert_true(edm_graph_node(back, s.clamp)->attr.clamp.hi == 1e-310);
    assert_true(edm_graph_node(back, s.half)->attr.constant.value == 1.0 / 3.0);

    /* writing the copy gives the same bytes */
    char *xml2 = write_to_string(edm_ir_write_xml, back, &len2, &st);
    assert_non_null(xml2);
    assert_int_equal(len, len2);
    assert_memory_equal(xml, xml2, len);
    free(xml2);

    /* one changed attribute, name, loc, file or double ulp makes them differ */
    edm_graph_node_mut(back, s.conv)->attr.conv.pad = 2;
    assert_false(edm_graph_equal(g, back));
    edm_graph_node_mut(back, s.conv)->attr.conv.pad = 1;
    assert_true(edm_graph_equal(g, back));

    double *p = &edm_graph_node_mut(back, s.dropout)->attr.dropout.p;
    *p = nextafter(*p, 1.0);
    assert_false(edm_graph_equal(g, back));
    *p = 0.1;
    edm_graph_node_mut(back, s.fcw)->attr.init.seed = 0;
    assert_false(edm_graph_equal(g, back));
    edm_graph_node_mut(back, s.fcw)->attr.init.seed = UINT64_MAX;
    edm_graph_node_mut(back, s.sum)->attr.reduce.keepdim = 1;
    assert_false(edm_graph_equal(g, back));
    edm_graph_node_mut(back, s.sum)->attr.reduce.keepdim = 0;
    edm_graph_node_mut(back, s.out)->name = NULL;
    assert_false(edm_graph_equal(g, back));
    edm_graph_node_mut(back, s.out)->name = edm_graph_intern(back, "D");
    edm_graph_node_mut(back, s.x)->loc.col = 6;
    assert_false(edm_graph_equal(g, back));
    edm_graph_node_mut(back, s.x)->loc.col = 5;
    assert_true(edm_graph_equal(g, back));
    assert_int_equal(edm_graph_add_file(back, "extra.edm", &st), 2);
    assert_false(edm_graph_equal(g, back));

    edm_graph_free(back);
    free(xml);
    edm_graph_free(g);
}

static void test_xml_file(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    edm_status st;
    edm_status_init(&st);
    char path[] = "/tmp/test_ir_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(edm_ir_write_xml(g, f, &st), 0);
    assert_int_equal(fclose(f), 0);
    edm_graph *back = edm_ir_read_xml_file(path, &st);
    unlink(path);
    if (!back)
        fail_msg("%s", st.msg);
    assert_true(edm_graph_equal(g, back));
    edm_graph_free(back);

    assert_null(edm_ir_read_xml_file("/nonexistent/dir/ir.xml", &st));
    assert_int_equal(st.code, EDM_ERR_IO);
    assert_contains(st.msg, "/nonexistent/dir/ir.xml");
    edm_graph_free(g);
}

static void test_xml_writer_rejects_control_chars(void **state)
{
    edm_graph *g = edm_graph_new();
    edm_status st;
    edm_status_init(&st);
    add_input(g, "bad\nname", SHAPE(N, 2));
    assert_null(write_to_string(edm_ir_write_xml, g, NULL, &st));
    assert_contains(st.msg, "control character");
    edm_graph_free(g);
}

#define HEAD                                                              \
    "<edmc-ir version=\"1\">\n"                                           \
    "<files><file index=\"0\" path=\"a.edm\"/></files>\n"                 \
    "<nodes>\n"                                                           \
    "<node id=\"0\" op=\"input\" dtype=\"f32\" shape=\"N,4\" name=\"x\"/>\n"
#define TAIL "</nodes></edmc-ir>\n"
#define NODE1(attrs) HEAD "<node id=\"1\" " attrs "/>\n" TAIL

typedef struct {
    const char *doc;
    const char *expect;
} bad_doc;

static const bad_doc bad_docs[] = {
    {"", "not well-formed XML"},
    {"<edmc-ir version=\"1\"><nodes>", "bad.xml:1: not well-formed XML"},
    {"<other/>", "expected <edmc-ir>"},
    {"<edmc-ir version=\"2\"><nodes/></edmc-ir>", "unsupported version '2'"},
    {"<edmc-ir version=\"1\"><files/></edmc-ir>", "no <nodes> element"},
    {"<edmc-ir version=\"1\"><nodes/><extra/></edmc-ir>", "unexpected element <extra>"},
    {NODE1("op=\"foo\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\""), "bad.xml:5: node 1: unknown op 'foo'"},
    {NODE1("op=\"add\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\""), "node 1: add takes 2 inputs, got 1"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\""), "no 'inputs' attribute"},
    {NODE1("op=\"input\" dtype=\"f32\" shape=\"N,4\" name=\"y\" inputs=\"0\""), "input takes 0 inputs, got 1"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"1\""), "input 1 is not an earlier node"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"-1\""), "input -1 is not an earlier node"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"x\""), "bad inputs 'x'"},
    {NODE1("op=\"clamp\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" lo=\"0\""), "clamp needs attribute 'hi'"},
    {NODE1("op=\"clamp\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" lo=\"abc\" hi=\"1\""), "bad lo 'abc'"},
    {NODE1("op=\"clamp\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" lo=\"1e999\" hi=\"1\""), "bad lo '1e999'"},
    {NODE1("op=\"clamp\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" lo=\" 1\" hi=\"1\""), "bad lo ' 1'"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" stride=\"1\""), "unexpected attribute 'stride' for neg"},
    {NODE1("op=\"param\" dtype=\"f32\" shape=\"1,1,1,1,1,1,1\" name=\"p\" init=\"zeros\" init_value=\"0\" "
           "init_scale=\"1\" seed=\"0\""),
     "more than 6 items"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,four\" inputs=\"0\""), "bad shape 'N,four'"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,,4\" inputs=\"0\""), "bad shape 'N,,4'"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,5\" inputs=\"0\""), "shape [N, 5] in the file, but neg gives [N, 4]"},
    {NODE1("op=\"neg\" dtype=\"f16\" shape=\"N,4\" inputs=\"0\""), "dtype f16 in the file, but neg gives f32"},
    {NODE1("op=\"neg\" dtype=\"f8\" shape=\"N,4\" inputs=\"0\""), "unknown dtype 'f8'"},
    {NODE1("op=\"neg\" dtype=\"f32\" inputs=\"0\""), "missing attribute 'shape'"},
    {NODE1("op=\"neg\" shape=\"N,4\" inputs=\"0\""), "missing attribute 'dtype'"},
    {NODE1("dtype=\"f32\" shape=\"N,4\" inputs=\"0\""), "missing attribute 'op'"},
    {HEAD "<node op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\"/>" TAIL, "node 1: missing attribute 'id'"},
    {HEAD "<node id=\"0\" op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\"/>" TAIL, "id '0' out of order"},
    {HEAD "<node id=\"2\" op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\"/>" TAIL, "id '2' out of order"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" loc=\"3:1:1:1\""),
     "loc file index 3, but the file table has 1 entries"},
    {NODE1("op=\"neg\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" loc=\"0:1:1\""), "bad loc '0:1:1'"},
    {NODE1("op=\"sum\" dtype=\"f32\" shape=\"N,1\" inputs=\"0\" axes=\"1\" keepdim=\"2\""),
     "bad keepdim '2': expected 0 or 1"},
    {NODE1("op=\"sum\" dtype=\"f32\" shape=\"N\" inputs=\"0\" axes=\"1,1\" keepdim=\"0\""), "axis 1 listed twice"},
    {NODE1("op=\"sum\" dtype=\"f32\" shape=\"N\" inputs=\"0\" axes=\"32\" keepdim=\"0\""), "bad axes '32'"},
    {NODE1("op=\"sum\" dtype=\"f32\" shape=\"N\" inputs=\"0\" axes=\"5\" keepdim=\"0\""),
     "reduction axis out of range"},
    {NODE1("op=\"permute\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" perm=\"0,1,2\""),
     "3 entries for an input of rank 2"},
    {NODE1("op=\"param\" dtype=\"f32\" shape=\"3\" name=\"p\" init=\"gauss\" init_value=\"0\" init_scale=\"1\" "
           "seed=\"0\""),
     "unknown init kind"},
    {NODE1("op=\"param\" dtype=\"f32\" shape=\"3\" name=\"p\" init=\"zeros\" init_value=\"0\" init_scale=\"1\" "
           "seed=\"-1\""),
     "bad seed '-1'"},
    {NODE1("op=\"param\" dtype=\"f32\" shape=\"N,3\" name=\"p\" init=\"zeros\" init_value=\"0\" init_scale=\"1\" "
           "seed=\"1\" forced_wn=\"0\""),
     "cannot have the batch dimension"},
    {NODE1("op=\"slice\" dtype=\"f32\" shape=\"N,4\" inputs=\"0\" axis=\"1\" start=\"0\" len=\"99999999999999999999\""),
     "bad len"},
    {"<edmc-ir version=\"1\"><files><file index=\"0\" path=\"a\"/><file index=\"1\" path=\"a\"/></files><nodes/>"
     "</edmc-ir>",
     "file 1 repeats the path of file 0"},
    {"<edmc-ir version=\"1\"><files><file index=\"1\" path=\"a\"/></files><nodes/></edmc-ir>",
     "file index '1' out of order"},
    {"<edmc-ir version=\"1\"><files><file index=\"0\"/></files><nodes/></edmc-ir>", "file 0 has no path"},
    {"<edmc-ir version=\"1\"><nodes><edge/></nodes></edmc-ir>", "unexpected element <edge> in <nodes>"},
};

static void test_xml_malformed(void **state)
{
    for (size_t i = 0; i < sizeof bad_docs / sizeof bad_docs[0]; i++) {
        edm_status st;
        edm_status_init(&st);
        const char *doc = bad_docs[i].doc;
        edm_graph *g = edm_ir_read_xml_memory(doc, strlen(doc), "bad.xml", &st);
        if (g) {
            edm_graph_free(g);
            fail_msg("bad document %zu was accepted:\n%s", i, doc);
        }
        assert_int_equal(st.code, EDM_ERR_FORMAT);
        if (!strstr(st.msg, bad_docs[i].expect))
            fail_msg("bad document %zu: message\n  %s\nlacks\n  %s", i, st.msg, bad_docs[i].expect);
    }
}

/* Truncations and byte flips of a valid document: never a crash, and either a
 * graph or an error message. */
static void test_xml_mangled(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    edm_status st;
    edm_status_init(&st);
    size_t len;
    char *xml = write_to_string(edm_ir_write_xml, g, &len, &st);
    assert_non_null(xml);
    char *copy = malloc(len);
    assert_non_null(copy);
    for (size_t cut = 0; cut < len; cut += 7) {
        edm_graph *back = edm_ir_read_xml_memory(xml, cut, "cut.xml", &st);
        if (back)
            edm_graph_free(back);
        else
            assert_true(st.msg[0] != '\0');
    }
    static const char flips[] = "0123456789-,N<>\"=: xa";
    uint64_t rng = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, xml, len);
        for (int k = 0; k < 3; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % len;
            copy[at] = flips[(rng >> 20) % (sizeof flips - 1)];
        }
        edm_status_init(&st);
        edm_graph *back = edm_ir_read_xml_memory(copy, len, "flip.xml", &st);
        if (back) {
            edm_pass_verify(back, &st);
            edm_graph_free(back);
        } else {
            assert_true(st.msg[0] != '\0');
        }
    }
    free(copy);
    free(xml);
    edm_graph_free(g);
}

/* ------------------------------------------------------------------ verify / infer */

static edm_graph *build_small(void)
{
    edm_graph *g = edm_graph_new();
    int x = add_input(g, "x", SHAPE(N, 4, 8, 8));
    int w = add_param(g, EDM_OP_PARAM, "w", SHAPE(2, 4, 1, 1), EDM_INIT_NORMAL, 1, 3);
    edm_node n = mk(EDM_OP_CONV2D, x, w);
    n.attr.conv.stride = 1;
    int c = add(g, n);
    int y = add(g, mk(EDM_OP_SIGMOID, c, 0));
    n = mk(EDM_OP_OUTPUT, y, 0);
    n.name = "y";
    add(g, n);
    return g;
}

static void expect_verify_error(const edm_graph *g, const char *expect)
{
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_pass_verify(g, &st), -1);
    assert_contains(st.msg, expect);
}

static void test_verify(void **state)
{
    edm_status st;
    edm_status_init(&st);
    edm_graph *g = build_small();
    assert_int_equal(edm_pass_verify(g, &st), 0);

    /* a buffer sharing a parameter's name; then a param sharing an input's (fine) */
    int b = add_param(g, EDM_OP_BUFFER, "w", SHAPE(3), EDM_INIT_ONES, 1, 0);
    expect_verify_error(g, "duplicate name");
    expect_verify_error(g, "%5 buffer \"w\"");
    edm_graph_node_mut(g, b)->name = "x";
    assert_int_equal(edm_pass_verify(g, &st), 0);
    edm_graph_node_mut(g, b)->name = "";
    expect_verify_error(g, "has no name");
    edm_graph_node_mut(g, b)->name = "b";

    /* two inputs with the same name */
    int x2 = add_input(g, "x", SHAPE(N, 1));
    expect_verify_error(g, "%6 input \"x\": duplicate name, also used by %0 input");
    edm_graph_node_mut(g, x2)->name = "x2";

    /* two outputs with the same name */
    edm_node n = mk(EDM_OP_OUTPUT, x2, 0);
    n.name = "y";
    int o2 = add(g, n);
    expect_verify_error(g, "duplicate name");
    edm_graph_node_mut(g, o2)->name = "y2";
    assert_int_equal(edm_pass_verify(g, &st), 0);

    /* inputs out of order, out of range; wrong stored shape; const rank */
    edm_graph_node_mut(g, 3)->input[0] = 4;
    expect_verify_error(g, "%3 sigmoid: input 0 is %4, which does not come before it");
    edm_graph_node_mut(g, 3)->input[0] = 99;
    expect_verify_error(g, "missing value %99");
    edm_graph_node_mut(g, 3)->input[0] = 2;
    edm_graph_node_mut(g, 3)->shape.dim[1] = 3;
    expect_verify_error(g, "%3 sigmoid: stored shape [N, 3, 8, 8], but inference gives [N, 2, 8, 8]");
    edm_graph_node_mut(g, 3)->shape.dim[1] = 2;
    edm_graph_node_mut(g, 3)->ninputs = 2;
    expect_verify_error(g, "2 inputs, expected 1");
    edm_graph_node_mut(g, 3)->ninputs = 1;
    assert_int_equal(edm_pass_verify(g, &st), 0);
    edm_graph_free(g);

    /* no output */
    g = edm_graph_new();
    add_input(g, "x", SHAPE(N, 1));
    expect_verify_error(g, "no output");
    /* a filled constant may carry a shape, even the batch size */
    n = mk(EDM_OP_CONST, 0, 0);
    n.shape = SHAPE(N, 2);
    add(g, n);
    expect_verify_error(g, "no output");
    edm_graph_free(g);
}

static void test_infer_pass(void **state)
{
    edm_status st;
    edm_status_init(&st);
    edm_graph *g = build_small();
    edm_graph_node_mut(g, 0)->shape = SHAPE(N, 4, 32, 16);
    assert_int_equal(edm_pass_infer(g, &st), 0);
    assert_shape(g, 2, SHAPE(N, 2, 32, 16));
    assert_shape(g, 4, SHAPE(N, 2, 32, 16));
    assert_int_equal(edm_pass_verify(g, &st), 0);

    edm_graph_node_mut(g, 0)->shape = SHAPE(N, 3, 32, 16);
    assert_int_equal(edm_pass_infer(g, &st), -1);
    assert_contains(st.msg, "input channels");
    edm_graph_free(g);
}

/* ------------------------------------------------------------------ text and dot */

static void test_text(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    edm_status st;
    edm_status_init(&st);
    char *text = write_to_string(edm_ir_write_text, g, NULL, &st);
    assert_non_null(text);
    assert_contains(text, "%0 = input \"x\" : f32[N, 4, 16, 16]  (input) models/edm2.edm:12:5\n");
    assert_contains(text, "%1 = param \"enc.conv.weight\" {init=normal, value=0, scale=1, seed=42} : f32[8, 4, 3, 3]");
    assert_contains(text,
                    "%2 = conv2d(%0, %1) {stride=1, pad=1} : f32[N, 8, 16, 16]  @enc.block0 (mp_conv) "
                    "models/edm2.edm:40:9\n");
    assert_contains(text, "%4 = add(%2, %3) : f32[N, 8, 16, 16]  (add)\n");
    assert_contains(text, "sumsq(%4) {axes=[1, 2, 3], keepdim=1} : f32[N, 1, 1, 1]  (sumsq) models/lib.edm:3:1");
    assert_contains(text, "const {value=0.3333333333333333} : f32[]  (const)");
    assert_contains(text, "clamp(%9) {lo=-0.1, hi=1e-310}");
    assert_contains(text, "permute(%11) {perm=[0, 2, 1]}");
    assert_contains(text, "matmul(%12, %13) {trans_a=0, trans_b=1}");
    assert_contains(text, "softmax(%14) {axis=2}");
    assert_contains(text, "slice(%16) {axis=1, start=4, len=100}");
    assert_contains(text, "dropout(%17) {p=0.1}");
    assert_contains(text, "output \"D\"(%21) : f32[N, 100]");
    free(text);
    edm_graph_free(g);
}

static void test_dot(void **state)
{
    sample_ids s;
    edm_graph *g = build_sample(&s);
    add_input(g, "q\"uote\\d", SHAPE(2));
    edm_status st;
    edm_status_init(&st);
    char *dot = write_to_string(edm_ir_write_dot, g, NULL, &st);
    assert_non_null(dot);
    assert_contains(dot, "digraph");
    assert_contains(dot, "n0 -> n2 [label=\"0\"];");
    assert_contains(dot, "n1 -> n2 [label=\"1\"];");
    assert_contains(dot, "n2 [label=\"%2 conv2d\\nf32[N, 8, 16, 16]\", shape=ellipse];");
    assert_contains(dot, "n1 [label=\"%1 param\\nenc.conv.weight\\nf32[8, 4, 3, 3]\", shape=box");
    assert_contains(dot, "q\\\"uote\\\\d");
    assert_contains(dot, "fillcolor=grey85");
    size_t n = strlen(dot);
    assert_true(n > 2 && strcmp(dot + n - 2, "}\n") == 0);
    free(dot);
    edm_graph_free(g);
}

/* Rewriting: use lists, replace-all-uses, and a rebuild that drops nodes and
 * maps ids (with a node replaced by two). */
static int drop_neg_double_exp(edm_rewriter *rw, int old, const edm_node *n, void *ctx, edm_status *st)
{
    (void)ctx;
    (void)old;
    if (n->op == EDM_OP_NEG)
        return EDM_REWRITE_DROP;
    if (n->op == EDM_OP_EXP) { /* exp(a) → sqrt(exp(a))·sqrt(exp(a)) would not infer differently: emit exp then square(sqrt) */
        int e = edm_rewriter_emit(rw, n, st);
        edm_node r = mk(EDM_OP_SQRT, e, 0);
        int q = edm_rewriter_emit(rw, &r, st);
        edm_node sq = mk(EDM_OP_SQUARE, q, 0);
        return q < 0 ? -1 : edm_rewriter_emit(rw, &sq, st);
    }
    return edm_rewriter_emit(rw, n, st);
}

static void test_rewrite(void **state)
{
    (void)state;
    edm_status st;
    edm_status_init(&st);
    edm_graph *g = edm_graph_new();
    assert_non_null(g);
    int x = add_input(g, "x", SHAPE(N, 4));
    int e = add(g, mk(EDM_OP_EXP, x, 0));
    int m = add(g, mk(EDM_OP_MUL, e, x));
    int dead = add(g, mk(EDM_OP_NEG, x, 0));
    edm_node out = mk(EDM_OP_OUTPUT, m, 0);
    out.name = "y";
    int o = add(g, out);
    assert_int_equal(edm_graph_add_tap(g, "the product", m, &st), 0);
    assert_int_equal(edm_graph_add_tap(g, "the dead one", dead, &st), 0);

    edm_uses u;
    assert_int_equal(edm_uses_build(g, &u, &st), 0);
    assert_int_equal(edm_uses_count(&u, x), 3); /* exp, mul, neg */
    assert_int_equal(edm_uses_count(&u, e), 1);
    assert_int_equal(u.users[u.off[e]], m);
    assert_int_equal(edm_uses_count(&u, o), 0);
    edm_uses_free(&u);

    int map[8];
    edm_graph *r = edm_graph_rewrite(g, drop_neg_double_exp, NULL, map, &st);
    assert_non_null(r);
    assert_int_equal(edm_pass_verify(r, &st), 0);
    assert_int_equal(map[dead], -1);
    assert_int_equal(edm_graph_count(r), 6); /* x, exp, sqrt, square, mul, output */
    assert_int_equal(edm_graph_node(r, map[e])->op, EDM_OP_SQUARE);
    assert_int_equal(edm_graph_node(r, map[m])->input[0], map[e]);
    assert_int_equal(edm_graph_find_tap(r, "the product"), map[m]);
    assert_int_equal(edm_graph_find_tap(r, "the dead one"), -1);

    /* replace-all-uses: mul reads x twice after this; a value may not be read before it is made */
    assert_int_equal(edm_graph_replace_uses(g, e, x, &st), 1);
    assert_int_equal(edm_graph_node(g, m)->input[0], x);
    assert_int_equal(edm_graph_replace_uses(g, x, m, &st), -1);
    assert_non_null(strstr(st.msg, "comes after it"));
    edm_graph_free(r);
    edm_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inferred_shapes),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_xml_roundtrip),
        cmocka_unit_test(test_xml_file),
        cmocka_unit_test(test_xml_writer_rejects_control_chars),
        cmocka_unit_test(test_xml_malformed),
        cmocka_unit_test(test_xml_mangled),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_infer_pass),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_dot),
        cmocka_unit_test(test_rewrite),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
