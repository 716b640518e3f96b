/* Front-end tests: the language's semantics on small programs, the EDM2
 * models against the reference's parameter table (golden safetensors header),
 * -D overrides, and an XML round trip of a whole model. */
#include "config.h"

#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compiler/elaborate.h"
#include "compiler/ir_io.h"
#include "compiler/passes/passes.h"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static void model_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/models/%s", env_or("srcdir", "."), name);
}

/* Compiles text; returns 0 and fills prog, or -1 with the first message in err. */
static int compile_text(const char *text, const edm_define *defs, int ndefs, edm_program *prog, char *err,
                        size_t errsize)
{
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_status st;
    edm_status_init(&st);
    int file = edm_sources_add_text(src, "test.edm", text, strlen(text), &st);
    assert_true(file >= 0);
    int rc = edm_compile_source(src, file, NULL, defs, ndefs, prog, d);
    if (rc != 0 && err)
        snprintf(err, errsize, "%d:%d: %s", d->items[0].loc.line, d->items[0].loc.col, d->items[0].msg);
    free(d);
    edm_sources_free(src);
    return rc;
}

static int compile_model(const char *name, const edm_define *defs, int ndefs, edm_program *prog)
{
    char path[1024];
    model_path(path, sizeof path, name);
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    int rc = edm_compile_file(src, path, defs, ndefs, prog, d);
    if (rc != 0)
        for (int i = 0; i < d->count; i++)
            edm_diag_print(src, &d->items[i], stderr);
    free(d);
    edm_sources_free(src);
    return rc;
}

static const edm_node *find_named(const edm_graph *g, edm_op op, const char *name)
{
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op == op && n->name && strcmp(n->name, name) == 0)
            return n;
    }
    return NULL;
}

static void expect_error(const char *text, const char *want)
{
    edm_program prog;
    char err[2048];
    int rc = compile_text(text, NULL, 0, &prog, err, sizeof err);
    if (rc == 0 || !strstr(err, want)) {
        print_error("program:\n%s\nexpected error containing '%s', got rc=%d '%s'\n", text, want, rc,
                    rc ? err : "");
        if (rc == 0)
            edm_program_free(&prog);
        fail();
    }
}

/* ------------------------------------------------------------------ language */

static void test_arithmetic_and_control(void **state)
{
    (void)state;
    const char *text = "param n = 3;\n"
                       "block Twice(x; k) { y = x; for i in range(k) { y = y + y; } return y; }\n"
                       "input x: [N, 2, 4, 4];\n"
                       "a = [];\n"
                       "for i in range(n) { a.push(i * 2); }\n"
                       "assert a == [0, 2, 4] and len(a) == 3 and a[-1] == 4;\n"
                       "assert 7 // 2 == 3 and 7 % 3 == 1 and 2 ** 10 == 1024 and 1 / 2 == 0.5;\n"
                       "assert (if 2 in a then \"yes\" else \"no\") == \"yes\";\n"
                       "assert reversed([1, 2, 3]) == [3, 2, 1] and max([1, 5, 2]) == 5 and min(4, 3) == 3;\n"
                       "assert str(3) + \"x\" + str(2.5) == \"3x2.5\";\n"
                       "r = 16; assert \"enc.{r}x{r}\" == \"enc.16x16\";\n"
                       "assert shape(x) == [N, 2, 4, 4] and channels(x) == 2 and rank(x) == 4;\n"
                       "b = a; b.push(6); assert len(a) == 4;\n"  /* lists are shared, like Python's */
                       "if n > 5 { error(\"no\"); } else if n == 3 { ok = true; } else { error(\"no\"); }\n"
                       "assert ok;\n"
                       "output y = Twice(x, n);\n";
    edm_program prog;
    char err[2048] = "";
    int rc = compile_text(text, NULL, 0, &prog, err, sizeof err);
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    /* 3 doublings = 3 adds */
    int adds = 0;
    for (int i = 0; i < edm_graph_count(prog.graph); i++)
        adds += edm_graph_node(prog.graph, i)->op == EDM_OP_ADD;
    assert_int_equal(adds, 3);
    assert_string_equal(edm_program_param(&prog, "n"), "3");
    edm_program_free(&prog);
}

static void test_scopes_make_parameter_names(void **state)
{
    (void)state;
    const char *text = "block Lin(x; cout) { w = weight: parameter([cout, channels(x)]); return matmul(x, w, trans_b = true); }\n"
                       "block Two(x) { return second: Lin(first: Lin(x, 8), 4); }\n"
                       "input x: [N, 3];\n"
                       "i = 2;\n"
                       "output y = \"outer.block{i}\": Two(x);\n"
                       "g = gain: scalar(init = 0.5);\n"
                       "f = freqs: buffer([5], init = \"normal\", scale = 2 * pi, seed = 7);\n";
    edm_program prog;
    char err[2048] = "";
    int rc = compile_text(text, NULL, 0, &prog, err, sizeof err);
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    const edm_node *w1 = find_named(prog.graph, EDM_OP_PARAM, "outer.block2.first.weight");
    const edm_node *w2 = find_named(prog.graph, EDM_OP_PARAM, "outer.block2.second.weight");
    const edm_node *g = find_named(prog.graph, EDM_OP_PARAM, "gain");
    const edm_node *f = find_named(prog.graph, EDM_OP_BUFFER, "freqs");
    assert_non_null(w1);
    assert_non_null(w2);
    assert_non_null(g);
    assert_non_null(f);
    assert_int_equal(w1->shape.dim[0], 8);
    assert_int_equal(w1->shape.dim[1], 3);
    assert_int_equal(w2->shape.dim[0], 4);
    assert_int_equal(w2->shape.dim[1], 8);
    assert_int_equal(g->attr.init.kind, EDM_INIT_CONST);
    assert_true(g->attr.init.value == 0.5);
    assert_int_equal(f->attr.init.kind, EDM_INIT_NORMAL);
    assert_int_equal((int)f->attr.init.seed, 7);
    assert_string_equal(w1->origin, "Lin");
    edm_program_free(&prog);
}

static void test_semantic_errors(void **state)
{
    (void)state;
    expect_error("input x: [N, 4];\noutput y = mp_slu(x);\n", "2:12: unknown op 'mp_slu'");
    expect_error("block mp_silu(x) { return x; }\ninput x: [N, 4];\noutput y = mp_slu(x);\n",
                 "did you mean 'mp_silu'?");
    expect_error("input x: [N, 4];\noutput y = x + cout;\n", "unknown name 'cout'");
    expect_error("input x: [N, 4, 8, 8];\ninput z: [N, 3, 8, 8];\noutput y = x + z;\n",
                 "cannot broadcast shapes [N, 4, 8, 8] and [N, 3, 8, 8]");
    expect_error("input x: [N, 4];\noutput y = x;\noutput y = x;\n", "output 'y' declared twice");
    expect_error("a = b: parameter([2]);\nc = b: parameter([3]);\n", "'b' already exists");
    expect_error("block F(x) { return F(x); }\ninput x: [N, 1];\noutput y = F(x);\n", "nested deeper");
    expect_error("a = 0;\nfor i in range(1000000) { for j in range(1000000) { a = a + 1; } }\n", "steps");
    expect_error("block F(x; k) { return x; }\ninput x: [N, 1];\noutput y = F(x, x);\n",
                 "compile-time value, not a tensor");
    expect_error("block F(x; k) { return x; }\ninput x: [N, 1];\noutput y = F(x, kk = 1);\n",
                 "no parameter 'kk' (did you mean 'k'?)");
    expect_error("input x: [4, N];\n", "N may only be the first");
    expect_error("input x: [N, 4];\noutput y = reshape(x, [N, 3]);\n", "cannot reshape [N, 4] into [N, 3]");
    expect_error("param p = 1;\np = 2;\n", "cannot assign to parameter 'p'");
    expect_error("x = [1, 2][5];\n", "index 5 out of range");
    expect_error("x = 1 / 0;\n", "division by zero");
    expect_error("assert 1 == 2, \"one is not two\";\n", "one is not two");
    expect_error("input x: [N, 4];\n", "no output");
    expect_error("input x: [N, 4, 8, 8];\nw = k: parameter([2, 3, 3, 3]);\noutput y = conv2d(x, w);\n",
                 "input channels do not match");
}

static void test_syntax_errors_are_all_reported(void **state)
{
    (void)state;
    const char *text = "a = 1\nb = 2;\nc = (3;\nd = 4;\ne = $;\n";
    edm_sources *src = edm_sources_new();
    edm_diags *d = malloc(sizeof *d);
    assert_non_null(src);
    assert_non_null(d);
    edm_status st;
    edm_status_init(&st);
    int file = edm_sources_add_text(src, "bad.edm", text, strlen(text), &st);
    edm_program prog;
    assert_int_equal(edm_compile_source(src, file, NULL, NULL, 0, &prog, d), -1);
    assert_int_equal(d->count, 3);
    assert_int_equal(d->items[0].loc.line, 2); /* "b" where ';' was expected after "a = 1" */
    assert_int_equal(d->items[1].loc.line, 3);
    assert_int_equal(d->items[2].loc.line, 5);
    assert_non_null(strstr(d->items[2].msg, "unexpected character '$'"));
    free(d);
    edm_sources_free(src);
}

/* ------------------------------------------------------------------ models */

/* Reads the JSON header of a safetensors file (8-byte little-endian length + JSON). */
static json_object *read_safetensors_header(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        print_error("cannot open %s (set EDMC_TESTDATA to ../shared/testdata)\n", path);
        return NULL;
    }
    unsigned char len8[8];
    json_object *j = NULL;
    if (fread(len8, 1, 8, f) == 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | len8[i];
        char *buf = n < (1u << 26) ? malloc(n + 1) : NULL;
        if (buf && fread(buf, 1, n, f) == n) {
            buf[n] = '\0';
            j = json_tokener_parse(buf);
        }
        free(buf);
    }
    fclose(f);
    return j;
}

static void test_tiny_parameters_match_reference(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/edm2-tiny/weights.safetensors",
             env_or("EDMC_TESTDATA", "../shared/testdata"));
    json_object *hdr = read_safetensors_header(path);
    assert_non_null(hdr);
    edm_program prog;
    assert_int_equal(compile_model("edm2-tiny.edm", NULL, 0, &prog), 0);
    const edm_graph *g = prog.graph;

    int ours = 0, matched = 0;
    for (int i = 0; i < edm_graph_count(g); i++) {
        const edm_node *n = edm_graph_node(g, i);
        if (n->op != EDM_OP_PARAM && n->op != EDM_OP_BUFFER)
            continue;
        ours++;
        json_object *t, *shape;
        if (!json_object_object_get_ex(hdr, n->name, &t) || !json_object_object_get_ex(t, "shape", &shape)) {
            print_error("%s: not in the reference's weights\n", n->name);
            continue;
        }
        int ok = (int)json_object_array_length(shape) == n->shape.rank;
        for (int k = 0; ok && k < n->shape.rank; k++)
            ok = json_object_get_int64(json_object_array_get_idx(shape, (size_t)k)) == n->shape.dim[k];
        if (!ok)
            print_error("%s: shape differs from the reference's %s\n", n->name, json_object_to_json_string(shape));
        matched += ok;
    }
    int theirs = 0;
    json_object_object_foreach(hdr, key, val)
    {
        (void)val;
        theirs += strcmp(key, "__metadata__") != 0;
    }
    assert_int_equal(matched, ours);
    assert_int_equal(ours, theirs);

    /* inputs and outputs of the denoiser */
    const edm_node *x = find_named(g, EDM_OP_INPUT, "x");
    const edm_node *d = find_named(g, EDM_OP_OUTPUT, "D_x");
    const edm_node *u = find_named(g, EDM_OP_OUTPUT, "logvar");
    assert_non_null(find_named(g, EDM_OP_INPUT, "class_labels"));
    assert_non_null(x);
    assert_non_null(d);
    assert_non_null(u);
    assert_true(edm_shape_equal(&x->shape, &d->shape));
    assert_int_equal(u->shape.rank, 4);
    assert_int_equal(u->shape.dim[0], EDM_DIM_BATCH);
    assert_int_equal(u->shape.dim[1], 1);
    json_object_put(hdr);
    edm_program_free(&prog);
}

static void test_defines_override_presets(void **state)
{
    (void)state;
    edm_program base, wide, noclass;
    assert_int_equal(compile_model("edm2-tiny.edm", NULL, 0, &base), 0);
    edm_define d1[] = {{"model_channels", "64"}, {"channel_mult", "[1, 2, 2]"}, {"attn_resolutions", "[4]"}};
    assert_int_equal(compile_model("edm2-tiny.edm", d1, 3, &wide), 0);
    assert_string_equal(edm_program_param(&wide, "model_channels"), "64");
    assert_string_equal(edm_program_param(&wide, "channel_mult"), "[1, 2, 2]");
    assert_string_equal(edm_program_param(&base, "model_channels"), "32");
    /* three levels now: a 4x4 level exists, with attention */
    assert_non_null(find_named(wide.graph, EDM_OP_PARAM, "unet.enc.4x4_block0.attn_qkv.weight"));
    assert_null(find_named(base.graph, EDM_OP_PARAM, "unet.enc.4x4_block0.attn_qkv.weight"));
    const edm_node *w = find_named(wide.graph, EDM_OP_PARAM, "unet.enc.16x16_conv.weight");
    assert_non_null(w);
    assert_int_equal(w->shape.dim[0], 64);
    edm_define d2[] = {{"label_dim", "0"}};
    assert_int_equal(compile_model("edm2-tiny.edm", d2, 1, &noclass), 0);
    assert_null(find_named(noclass.graph, EDM_OP_INPUT, "class_labels"));
    assert_null(find_named(noclass.graph, EDM_OP_PARAM, "unet.emb_label.weight"));
    edm_program_free(&base);
    edm_program_free(&wide);
    edm_program_free(&noclass);

    edm_program bad;
    edm_define d3[] = {{"model_channel", "3"}};
    assert_int_equal(compile_model("edm2-tiny.edm", d3, 1, &bad), -1);
    edm_define d4[] = {{"channel_mult", "3"}};
    assert_int_equal(compile_model("edm2-tiny.edm", d4, 1, &bad), -1);
}

static void test_model_xml_round_trip(void **state)
{
    (void)state;
    edm_program prog;
    assert_int_equal(compile_model("edm2-tiny.edm", NULL, 0, &prog), 0);
    char *buf = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&buf, &size);
    assert_non_null(mem);
    edm_status st;
    edm_status_init(&st);
    assert_int_equal(edm_ir_write_xml(prog.graph, mem, &st), 0);
    assert_int_equal(fclose(mem), 0);
    edm_graph *back = edm_ir_read_xml_memory(buf, size, "tiny.xml", &st);
    if (!back)
        print_error("%s\n", st.msg);
    assert_non_null(back);
    assert_true(edm_graph_equal(prog.graph, back));
    assert_int_equal(edm_pass_verify(back, &st), 0);
    edm_graph_free(back);
    free(buf);
    edm_program_free(&prog);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arithmetic_and_control),
        cmocka_unit_test(test_scopes_make_parameter_names),
        cmocka_unit_test(test_semantic_errors),
        cmocka_unit_test(test_syntax_errors_are_all_reported),
        cmocka_unit_test(test_tiny_parameters_match_reference),
        cmocka_unit_test(test_defines_override_presets),
        cmocka_unit_test(test_model_xml_round_trip),
    };
    cmocka_set_message_output(CM_OUTPUT_TAP);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
