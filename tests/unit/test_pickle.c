/* The restricted pickle reader (runtime/pickle.c) on hand-made opcode
 * sequences, and the import of the reference's network pickles
 * (runtime/ref_import.c) on the fixtures in tests/ref (written by
 * tests/tools/make_ref_pickles.py with torch): every tensor byte for byte,
 * and every cut or damaged file refused with a message, never a crash. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/pickle.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"

static const char *const test_globals[] = {"collections.OrderedDict", "dnnlib.util.EasyDict"};

/* Reads bytes as one pickle; NULL with st filled on failure. */
static edm_pk *read_bytes(edm_arena *a, const char *bytes, size_t len, edm_status *st)
{
    edm_pk_rules r = {.globals = test_globals, .nglobals = 2, .what = "t.pkl"};
    size_t at = 0;
    edm_status_init(st);
    return edm_pk_read(a, (const unsigned char *)bytes, len, &at, &r, st);
}

#define READ(a, lit, st) read_bytes(a, lit, sizeof(lit) - 1, st)

static void test_scalars_and_containers(void **state)
{
    (void)state;
    edm_arena *a = edm_arena_new(0);
    edm_status st;
    /* PROTO 2, MARK, BININT1 7, BININT -2, LONG1 (2 bytes) -300, BINFLOAT 1.5, NONE, NEWTRUE, TUPLE, STOP */
    edm_pk *v = READ(a, "\x80\x02(K\x07J\xfe\xff\xff\xff\x8a\x02\xd4\xfeG\x3f\xf8\x00\x00\x00\x00\x00\x00N\x88t.", &st);
    assert_non_null(v);
    assert_int_equal(v->kind, EDM_PK_TUPLE);
    assert_int_equal(v->n, 6);
    assert_int_equal(v->items[0]->i, 7);
    assert_int_equal(v->items[1]->i, -2);
    assert_int_equal(v->items[2]->i, -300);
    assert_true(v->items[3]->f == 1.5);
    assert_int_equal(v->items[4]->kind, EDM_PK_NONE);
    assert_int_equal(v->items[5]->kind, EDM_PK_BOOL);
    /* a dict with a memoized list used twice: {'a': [1], 'b': <the same list>} */
    v = READ(a, "\x80\x04}(\x8c\x01" "a]\x94K\x01" "a\x8c\x01" "bh\x00u.", &st);
    assert_non_null(v);
    assert_int_equal(edm_pk_dict_size(v), 2);
    assert_ptr_equal(edm_pk_get(v, "a"), edm_pk_get(v, "b"));
    assert_int_equal(edm_pk_get(v, "a")->items[0]->i, 1);
    assert_null(edm_pk_get(v, "c"));
    edm_arena_free(a);
}

static void test_objects_are_recorded_not_run(void **state)
{
    (void)state;
    edm_arena *a = edm_arena_new(0);
    edm_status st;
    /* EasyDict() via NEWOBJ, then SETITEMS {'x': 2}, then BUILD with None */
    edm_pk *v = READ(a, "\x80\x04\x8c\x0b" "dnnlib.util\x8c\x08" "EasyDict\x93)\x81(\x8c\x01xK\x02uNb.", &st);
    assert_non_null(v);
    assert_true(edm_pk_global_is(v, "dnnlib.util.EasyDict"));
    assert_int_equal(edm_pk_get(v, "x")->i, 2);
    assert_int_equal(v->state->kind, EDM_PK_NONE);
    /* the text GLOBAL opcode and REDUCE */
    v = READ(a, "\x80\x02" "ccollections\nOrderedDict\n)R.", &st);
    assert_non_null(v);
    assert_true(edm_pk_global_is(v, "collections.OrderedDict"));
    edm_arena_free(a);
}

/* The pickle is refused with an error that contains `text`. */
static void refused(const char *bytes, size_t len, const char *text)
{
    edm_arena *a = edm_arena_new(1 << 20);
    edm_status st;
    edm_pk *v = read_bytes(a, bytes, len, &st);
    if (v || !strstr(st.msg, text))
        fail_msg("expected an error with '%s', got %s: %s", text, v ? "a value" : "error", st.msg);
    edm_arena_free(a);
}

#define REFUSED(lit, text) refused(lit, sizeof(lit) - 1, text)

static void test_refusals(void **state)
{
    (void)state;
    REFUSED("\x80\x02" "cos\nsystem\n(\x8c\x02lsR.", "'os.system', which is not a class or function edmc reads");
    REFUSED("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93.", "'builtins.eval'");
    REFUSED("\x80\x02(i__main__\nX\n.", "opcode INST (0x69)");
    REFUSED("\x80\x02(o.", "opcode OBJ (0x6f)");
    REFUSED("\x80\x02\x82\x01.", "opcode EXT1");
    REFUSED("\x80\x02I1\n.", "opcode INT (0x49)");
    REFUSED("\x80\x02\xff.", "unknown opcode 0xff");
    REFUSED("\x80\x01K\x01.", "pickle protocol 1");
    REFUSED("\x80\x02K\x01", "without its STOP");
    REFUSED("\x80\x02X\xff\x00\x00\x00" "ab.", "runs past the end");
    REFUSED("\x80\x02h\x05.", "memo entry 5 is read before it is written");
    REFUSED("\x80\x02R.", "stack is empty");
    REFUSED("\x80\x02K\x01K\x02.", "more than one value");
    REFUSED("\x80\x02(K\x01.", "MARK still open");
    REFUSED("\x80\x02t.", "needs a MARK");
    REFUSED("\x80\x02K\x01)R.", "not a named class or function");
    REFUSED("\x80\x02K\x01Nb.", "not a new object");
    REFUSED("\x80\x02K\x01K\x02" "a.", "not the right kind of container");
    REFUSED("\x80\x02}K\x01s.", "needs more values");
    REFUSED("\x80\x02Q.", "persistent reference");
    REFUSED("\x80\x02\x8c\x02osK\x01\x93.", "needs two strings");
}

/* A list that contains itself (through the memo) reads, and the importer,
 * which walks the tree, refuses it without recursing forever. */
static void test_cycle(void **state)
{
    (void)state;
    static const char cyc[] = "\x80\x04]\x94h\x00" "a.";
    edm_arena *a = edm_arena_new(0);
    edm_status st;
    edm_pk *v = READ(a, cyc, &st);
    assert_non_null(v);
    assert_ptr_equal(v->items[0], v);
    edm_arena_free(a);
    edm_st_writer *w = edm_st_writer_new();
    edm_status_init(&st);
    assert_int_equal(edm_ref_import((const unsigned char *)cyc, sizeof cyc - 1, "cyc.pkl", w, &st), -1);
    assert_non_null(strstr(st.msg, "not a snapshot dict"));
    edm_st_writer_free(w);
}

/* ------------------------------------------------------------ fixtures */

static char *fixture(const char *name)
{
    const char *dir = getenv("srcdir");
    static char path[4096];
    snprintf(path, sizeof path, "%s/tests/ref/%s", dir ? dir : ".", name);
    return path;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Imports data; the file (in memory), or NULL with st filled. */
static edm_st_file *import_bytes(const unsigned char *data, size_t len, edm_status *st)
{
    edm_status_init(st);
    edm_st_writer *w = edm_st_writer_new();
    assert_non_null(w);
    void *image = NULL;
    size_t ilen = 0;
    int rc = edm_ref_import(data, len, "fixture.pkl", w, st);
    if (rc == 0)
        rc = edm_st_writer_to_memory(w, &image, &ilen, st);
    edm_st_writer_free(w);
    return rc == 0 ? edm_st_open_memory("fixture.pkl", image, ilen, st) : NULL;
}

/* The import holds exactly the expected tensors: names, dtypes, shapes,
 * bytes; and, from a network pickle, the configuration. */
static void check_fixture(const char *pkl, const char *expect, edm_dtype dtype, int has_config)
{
    edm_status st;
    edm_status_init(&st);
    edm_st_file *got = edm_weights_open(fixture(pkl), &st);
    if (!got)
        fail_msg("%s", st.msg);
    edm_st_file *want = edm_st_open(fixture(expect), &st);
    assert_non_null(want);
    assert_int_equal(edm_st_count(got), edm_st_count(want));
    assert_int_equal(edm_st_count(got), 63);
    int scalars = 0;
    for (int i = 0; i < edm_st_count(want); i++) {
        const edm_st_entry *w = edm_st_entry_at(want, i), *g = edm_st_find(got, w->name);
        if (!g)
            fail_msg("'%s' is missing from the import", w->name);
        assert_int_equal(g->dtype, dtype);
        assert_int_equal(g->dtype, w->dtype);
        assert_int_equal(g->rank, w->rank);
        for (int k = 0; k < w->rank; k++)
            assert_int_equal(g->dim[k], w->dim[k]);
        assert_int_equal(g->nbytes, w->nbytes);
        assert_memory_equal(g->data, w->data, w->nbytes);
        scalars += g->rank == 0;
    }
    assert_int_equal(scalars, 11); /* emb_gain of 10 blocks and out_gain, shape [] as the reference has them */
    assert_null(edm_st_find(got, "scratch")); /* a non-persistent buffer */
    assert_non_null(edm_st_metadata(got, "edmc.import"));
    if (!has_config) {
        assert_null(edm_st_metadata(got, "edmc.config"));
        edm_st_close(got);
        edm_st_close(want);
        return;
    }
    const char *cfg = edm_st_metadata(got, "edmc.config");
    assert_non_null(cfg);
    assert_non_null(strstr(cfg, "\"model_channels\":\"8\""));
    assert_non_null(strstr(cfg, "\"channel_mult\":\"[1, 2]\""));
    assert_null(strstr(cfg, "use_fp16"));
    assert_non_null(strstr(edm_st_metadata(got, "edmc.model"), "edm2.edm"));
    edm_st_close(got);
    edm_st_close(want);
}

static void test_snapshot_fp16(void **state)
{
    (void)state;
    check_fixture("snapshot-fp16.pkl", "snapshot-fp16.expect.safetensors", EDM_F16, 1);
    /* the loss function's arguments join the configuration */
    edm_status st;
    edm_st_file *f = edm_weights_open(fixture("snapshot-fp16.pkl"), &st);
    assert_non_null(f);
    assert_non_null(strstr(edm_st_metadata(f, "edmc.config"), "\"P_mean\":\"-0.4\""));
    edm_st_close(f);
}

static void test_released_fp32_protocol5(void **state)
{
    (void)state;
    check_fixture("released-fp32.pkl", "released-fp32.expect.safetensors", EDM_F32, 1);
}

/* torch.save's zip format: a state dict, its storages as archive entries */
static void test_torch_save_state_dict(void **state)
{
    (void)state;
    check_fixture("state-dict-fp32.pt", "released-fp32.expect.safetensors", EDM_F32, 0);
}

/* Every cut of the snapshot is refused with a message; so is a sample of
 * single-byte changes, or they import (no crash, no read out of bounds:
 * the sanitizer build checks). */
static void test_damaged_snapshots(void **state)
{
    (void)state;
    size_t len;
    unsigned char *data = slurp(fixture("snapshot-fp16.pkl"), &len);
    edm_status st;
    for (size_t cut = 0; cut < len; cut += cut < 4096 ? 7 : 997) {
        edm_st_file *f = import_bytes(data, cut, &st);
        if (f)
            fail_msg("a cut at %zu imported", cut);
        assert_true(st.msg[0] != '\0');
    }
    unsigned char *copy = malloc(len);
    assert_non_null(copy);
    int refused_count = 0;
    for (size_t at = 0; at < len; at += 61) {
        memcpy(copy, data, len);
        copy[at] ^= (unsigned char)(0x5a + at);
        edm_st_file *f = import_bytes(copy, len, &st);
        if (f)
            edm_st_close(f);
        else
            refused_count++;
    }
    assert_true(refused_count > 0);
    free(copy);
    free(data);
}

static void test_not_a_network(void **state)
{
    (void)state;
    edm_status st;
    static const char dict[] = "\x80\x04}\x8c\x01xK\x01s.";
    assert_null(import_bytes((const unsigned char *)dict, sizeof dict - 1, &st));
    assert_non_null(strstr(st.msg, "has no 'ema' network"));
    static const char text[] = "hello";
    assert_null(import_bytes((const unsigned char *)text, sizeof text - 1, &st));
    assert_non_null(strstr(st.msg, "not a pickle"));
}

/* A safetensors file whose header length starts with the pickle marker
 * (640 = 0x0280: bytes 80 02) is still read as safetensors. */
static void test_safetensors_that_looks_like_a_pickle(void **state)
{
    (void)state;
    char path[] = "/tmp/edmc-sniff-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "wb");
    assert_non_null(fp);
    char header[640];
    memset(header, ' ', sizeof header);
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    memcpy(header, json, strlen(json));
    const unsigned char len[8] = {0x80, 0x02, 0, 0, 0, 0, 0, 0};
    const float one = 1.0f;
    assert_int_equal(fwrite(len, 1, 8, fp), 8);
    assert_int_equal(fwrite(header, 1, sizeof header, fp), sizeof header);
    assert_int_equal(fwrite(&one, 4, 1, fp), 1);
    assert_int_equal(fclose(fp), 0);
    edm_status st;
    edm_status_init(&st);
    edm_st_file *f = edm_weights_open(path, &st);
    if (!f)
        fail_msg("%s", st.msg);
    assert_non_null(edm_st_find(f, "a"));
    edm_st_close(f);
    unlink(path);
}

static void test_scalar_shapes(void **state)
{
    (void)state;
    edm_shape one = {.rank = 1, .dim = {1}}, none = {.rank = 0}, two = {.rank = 1, .dim = {2}};
    int64_t d1[] = {1}, d2[] = {2}, d11[] = {1, 1};
    assert_true(edm_weights_shape_fits(0, NULL, &one));
    assert_true(edm_weights_shape_fits(1, d1, &none));
    assert_true(edm_weights_shape_fits(1, d1, &one));
    assert_true(edm_weights_shape_fits(0, NULL, &none));
    assert_false(edm_weights_shape_fits(1, d2, &none));
    assert_false(edm_weights_shape_fits(0, NULL, &two));
    assert_false(edm_weights_shape_fits(2, d11, &one));
    assert_true(edm_weights_shape_fits(1, d2, &two));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_and_containers),
        cmocka_unit_test(test_objects_are_recorded_not_run),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_snapshot_fp16),
        cmocka_unit_test(test_released_fp32_protocol5),
        cmocka_unit_test(test_torch_save_state_dict),
        cmocka_unit_test(test_damaged_snapshots),
        cmocka_unit_test(test_not_a_network),
        cmocka_unit_test(test_safetensors_that_looks_like_a_pickle),
        cmocka_unit_test(test_scalar_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
