/* Importing the reference's network pickles (ref_import.h). */
#include "config.h"

#include "runtime/ref_import.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "compiler/arena.h"
#include "runtime/files.h"
#include "runtime/pickle.h"
#include "runtime/zip_read.h"
#include "runtime/meta_keys.h"

/* The tree of values of one network pickle is small next to its tensors
 * (which stay in the file's bytes): this bounds what a hostile file can make
 * the reader allocate. */
#define IMPORT_ARENA_LIMIT ((size_t)512 << 20)
/* Module nesting (Precond → UNet → ModuleDict → Block → MPConv is 4). */
#define IMPORT_MAX_DEPTH 32

/* What the reference's snapshot pickles name: its persistence wrapper and
 * EasyDict, torch's tensor, parameter and storage reducers and containers,
 * and numpy's array reducers (the VAE encoder's latent scale and bias). */
static const char *const outer_globals[] = {
    "torch_utils.persistence._reconstruct_persistent_obj",
    "dnnlib.util.EasyDict",
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.storage._load_from_bytes",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.container.ModuleList",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "_codecs.encode",
};

/* A storage's legacy torch.save image names its element type. */
static const struct {
    const char *global;
    edm_dtype dtype;
} storage_types[] = {
    {"torch.HalfStorage", EDM_F16},
    {"torch.FloatStorage", EDM_F32},
    {"torch.BFloat16Storage", EDM_BF16},
    {"torch.DoubleStorage", EDM_F64},
};

static const char *const storage_globals[] = {"torch.HalfStorage", "torch.FloatStorage", "torch.BFloat16Storage",
                                              "torch.DoubleStorage"};

/* What a torch.save zip file holds besides its data.pkl: the storages, one
 * entry each ("<prefix>/data/<key>"), read as the tensors name them. */
typedef struct {
    zip_t *zip;
    char prefix[256];
    void **bufs; /* the storages read so far, freed with the importer */
    int nbufs, cap;
} zip_storages;

typedef struct {
    const char *what; /* the file, for errors */
    const unsigned char *data; /* the whole pickle (offsets in errors are into it) */
    edm_arena *a;
    edm_st_writer *w;
    edm_status *st;
    int tensors;
    zip_storages *zs; /* NULL: storages are inside the pickle (the reference's network pickles) */
} importer;

static int bad(importer *im, const edm_pk *v, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(importer *im, const edm_pk *v, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (v)
        return edm_fail(im->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: byte %zu: %s", im->what, v->pos, msg);
    return edm_fail(im->st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: %s", im->what, msg);
}

int edm_ref_is_pickle(const unsigned char *data, size_t len) { return len >= 2 && data[0] == 0x80 && data[1] >= 2; }

/* ------------------------------------------------------------ storages */

typedef struct {
    edm_dtype dtype;
    int64_t numel;
    const unsigned char *data;
} storage;

static const unsigned char torch_magic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static int get_int(const edm_pk *v, int64_t *out)
{
    if (!v || v->kind != EDM_PK_INT)
        return -1;
    *out = v->i;
    return 0;
}

/* The persistent id ('storage', torch.HalfStorage, key, location, numel, view). */
static int storage_id(importer *im, const edm_pk *id, edm_dtype *dtype, int64_t *numel, const edm_pk **key)
{
    if (!id || id->kind != EDM_PK_TUPLE || id->n < 5 || !edm_pk_str_is(id->items[0], "storage") ||
        id->items[1]->kind != EDM_PK_GLOBAL || id->items[2]->kind != EDM_PK_STR ||
        get_int(id->items[4], numel) != 0 || *numel < 0)
        return bad(im, id, "a storage's persistent id is not ('storage', type, key, location, size)");
    if (id->n > 5 && id->items[5]->kind != EDM_PK_NONE)
        return bad(im, id, "a storage view is not read");
    for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
        if (strcmp(id->items[1]->s, storage_types[i].global) == 0)
            *dtype = storage_types[i].dtype;
    *key = id->items[2];
    return 0;
}

/* A legacy torch.save image of one storage: four pickles (magic number,
 * protocol version, system info, the storage as a persistent id), the list
 * of storage keys, then per key its element count (int64) and its bytes. */
static int read_storage_image(importer *im, const edm_pk *blob, const char *name, storage *out)
{
    const unsigned char *d = (const unsigned char *)blob->s;
    size_t len = blob->len, at = 0;
    char what[700];
    snprintf(what, sizeof what, "%s (the storage of '%s')", im->what, name);
    edm_pk_rules rules = {.globals = storage_globals, .nglobals = 4, .allow_persid = 1, .what = what,
                          .base = (size_t)(d - im->data)};
    edm_pk *v[5];
    for (int k = 0; k < 5; k++)
        if (!(v[k] = edm_pk_read(im->a, d, len, &at, &rules, im->st)))
            return -1;
    if (v[0]->kind != EDM_PK_BIGINT || v[0]->len != sizeof torch_magic || memcmp(v[0]->s, torch_magic, v[0]->len) != 0)
        return bad(im, blob, "'%s': its storage is not a torch.save image (no magic number)", name);
    if (v[1]->kind != EDM_PK_INT || v[1]->i != 1001)
        return bad(im, blob, "'%s': its storage has torch.save protocol %lld, edmc reads 1001", name,
                   v[1]->kind == EDM_PK_INT ? (long long)v[1]->i : -1LL);
    const edm_pk *little = edm_pk_get(v[2], "little_endian");
    if (!little || little->kind != EDM_PK_BOOL || !little->i)
        return bad(im, blob, "'%s': its storage was saved big-endian", name);
    if (v[3]->kind != EDM_PK_PERSID)
        return bad(im, blob, "'%s': its storage image holds something other than one storage", name);
    const edm_pk *key;
    out->dtype = (edm_dtype)-1;
    if (storage_id(im, v[3]->args, &out->dtype, &out->numel, &key) != 0)
        return -1;
    if ((int)out->dtype < 0)
        return bad(im, blob, "storage type %s is not read (edmc reads half, float, bfloat16 and double tensors)",
                   v[3]->args->items[1]->s);
    if (v[4]->kind != EDM_PK_LIST || v[4]->n != 1 || v[4]->items[0]->kind != EDM_PK_STR ||
        v[4]->items[0]->len != key->len || memcmp(v[4]->items[0]->s, key->s, key->len) != 0)
        return bad(im, blob, "'%s': its storage image does not list exactly its one storage", name);
    size_t esize = edm_dtype_size(out->dtype);
    if (len - at < 8)
        return bad(im, blob, "'%s': its storage image ends before its data (truncated?)", name);
    uint64_t count = 0;
    for (int i = 7; i >= 0; i--)
        count = count << 8 | d[at + (size_t)i];
    at += 8;
    if (count != (uint64_t)out->numel)
        return bad(im, blob, "'%s': its storage holds %llu elements, its id says %lld", name, (unsigned long long)count,
                   (long long)out->numel);
    if (count > (len - at) / esize)
        return bad(im, blob, "'%s': its storage's %llu elements run past its image (truncated?)", name,
                   (unsigned long long)count);
    out->data = d + at;
    return 0;
}

/* ------------------------------------------------------------ tensors */

typedef struct {
    edm_dtype dtype;
    int rank;
    int64_t dim[EDM_MAX_RANK];
    const unsigned char *data;
} tensor;

static int int_tuple(const edm_pk *t, int64_t *out, int *n)
{
    if (!t || t->kind != EDM_PK_TUPLE || t->n > EDM_MAX_RANK)
        return -1;
    for (int64_t i = 0; i < t->n; i++)
        if (get_int(t->items[i], &out[i]) != 0 || out[i] < 0)
            return -1;
    *n = (int)t->n;
    return 0;
}

/* A storage of a torch.save zip file: its persistent id names the entry. */
static int zip_storage(importer *im, const edm_pk *id, const char *name, storage *out)
{
    const edm_pk *key;
    out->dtype = (edm_dtype)-1;
    if (storage_id(im, id, &out->dtype, &out->numel, &key) != 0)
        return -1;
    char entry[600];
    snprintf(entry, sizeof entry, "%sdata/%.*s", im->zs->prefix, (int)(key->len < 200 ? key->len : 200), key->s);
    zip_int64_t idx = zip_name_locate(im->zs->zip, entry, 0);
    if (idx < 0)
        return bad(im, id, "'%s': its storage %s is not in the archive", name, entry);
    if (im->zs->nbufs == im->zs->cap) {
        int cap = im->zs->cap ? 2 * im->zs->cap : 64;
        void **b = realloc(im->zs->bufs, sizeof *b * (size_t)cap);
        if (!b)
            return edm_nomem(im->st);
        im->zs->bufs = b;
        im->zs->cap = cap;
    }
    unsigned char *buf;
    size_t len;
    if (edm_zip_read_entry(im->zs->zip, (zip_uint64_t)idx, (uint64_t)1 << 36, im->what, &buf, &len, im->st) != 0)
        return -1;
    im->zs->bufs[im->zs->nbufs++] = buf;
    size_t esize = edm_dtype_size(out->dtype);
    if ((uint64_t)out->numel > len / esize)
        return bad(im, id, "'%s': its storage %s holds %zu bytes, fewer than %lld elements", name, entry, len,
                   (long long)out->numel);
    out->data = buf;
    return 0;
}

/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static int read_tensor(importer *im, const edm_pk *v, const char *name, tensor *out)
{
    char kind[160];
    if (!edm_pk_global_is(v, "torch._utils._rebuild_tensor_v2"))
        return bad(im, v, "'%s' is %s, not a tensor", name, edm_pk_describe(v, kind, sizeof kind));
    const edm_pk *args = v->args;
    int64_t offset, stride[EDM_MAX_RANK];
    int nstride = 0;
    if (args->n < 4 || get_int(args->items[1], &offset) != 0 || offset < 0 ||
        int_tuple(args->items[2], out->dim, &out->rank) != 0 || int_tuple(args->items[3], stride, &nstride) != 0 ||
        nstride != out->rank)
        return bad(im, v, "'%s': the tensor's offset, size and stride are not integers of one rank (at most %d)", name,
                   EDM_MAX_RANK);
    const edm_pk *s = args->items[0];
    storage sto = {0};
    if (s->kind == EDM_PK_PERSID && im->zs) {
        if (zip_storage(im, s->args, name, &sto) != 0)
            return -1;
    } else if (!edm_pk_global_is(s, "torch.storage._load_from_bytes") || s->args->n != 1 ||
               s->args->items[0]->kind != EDM_PK_BYTES) {
        return bad(im, s, "'%s': the tensor's storage is %s, not torch's storage bytes", name,
                   edm_pk_describe(s, kind, sizeof kind));
    } else if (read_storage_image(im, s->args->items[0], name, &sto) != 0) {
        return -1;
    }
    int64_t numel = 1, expect = 1;
    for (int k = out->rank - 1; k >= 0; k--) {
        if (out->dim[k] != 1 && stride[k] != expect)
            return bad(im, v, "'%s': the tensor is not contiguous (stride %lld of dimension %d)", name,
                       (long long)stride[k], k);
        if (out->dim[k] > 0 && expect > INT64_MAX / out->dim[k])
            return bad(im, v, "'%s': the tensor's size overflows", name);
        expect *= out->dim[k];
    }
    numel = expect;
    if (offset > sto.numel || numel > sto.numel - offset)
        return bad(im, v, "'%s': the tensor (%lld elements from %lld) lies outside its storage of %lld", name,
                   (long long)numel, (long long)offset, (long long)sto.numel);
    out->dtype = sto.dtype;
    out->data = sto.data + (size_t)offset * edm_dtype_size(sto.dtype);
    return 0;
}

/* A parameter: torch._utils._rebuild_parameter[_with_state](tensor, requires_grad, hooks[, state]). */
static const edm_pk *unwrap_parameter(const edm_pk *v)
{
    if ((edm_pk_global_is(v, "torch._utils._rebuild_parameter") ||
         edm_pk_global_is(v, "torch._utils._rebuild_parameter_with_state")) &&
        v->args->n >= 1)
        return v->args->items[0];
    return v;
}

static int emit(importer *im, const char *name, const edm_pk *v)
{
    tensor t;
    if (read_tensor(im, unwrap_parameter(v), name, &t) != 0)
        return -1;
    if (edm_st_writer_add_raw(im->w, name, t.dtype, t.rank, t.dim, t.data, im->st) != 0)
        return edm_status_prefix(im->st, "%s: ", im->what), -1;
    im->tensors++;
    return 0;
}

/* ------------------------------------------------------------ modules */

/* A module's attribute dict: a persistent record's meta.state, or the state
 * a plain torch container (ModuleDict) was built with.  *cls: the class name. */
static const edm_pk *module_state(importer *im, const edm_pk *v, const char *name, const char **cls)
{
    char kind[160];
    if (edm_pk_global_is(v, "torch_utils.persistence._reconstruct_persistent_obj")) {
        const edm_pk *meta = v->args->n == 1 ? v->args->items[0] : NULL;
        const edm_pk *type = edm_pk_get(meta, "type"), *cname = edm_pk_get(meta, "class_name");
        const edm_pk *state = edm_pk_get(meta, "state");
        if (!edm_pk_str_is(type, "class") || !cname || cname->kind != EDM_PK_STR || edm_pk_dict_size(state) < 0) {
            bad(im, v, "'%s': a persistent object without type 'class', a class name and a state dict",
                name[0] ? name : "(the network)");
            return NULL;
        }
        *cls = edm_arena_strndup(im->a, cname->s, cname->len);
        return *cls ? state : (edm_nomem(im->st), NULL);
    }
    if (v && v->kind == EDM_PK_OBJECT && v->cls && strncmp(v->cls->s, "torch.nn.modules.", 17) == 0 &&
        edm_pk_dict_size(v->state) >= 0) {
        *cls = v->cls->s;
        return v->state;
    }
    bad(im, v, "'%s' is %s, not a torch module", name[0] ? name : "(the network)", edm_pk_describe(v, kind, sizeof kind));
    return NULL;
}

static int join_name(importer *im, const edm_pk *key, const char *prefix, char *out, size_t size)
{
    if (!key || key->kind != EDM_PK_STR || key->len == 0 || memchr(key->s, '\0', key->len))
        return bad(im, key, "a name under '%s' is not a non-empty string", prefix[0] ? prefix : "(the network)");
    int n = snprintf(out, size, "%s%s%.*s", prefix, prefix[0] ? "." : "", (int)key->len, key->s);
    if (n < 0 || (size_t)n >= size)
        return bad(im, key, "a name under '%s' is too long", prefix);
    return 0;
}

/* Whether key is in the module's non-persistent buffer set (a set, or
 * builtins.set([...]) as protocol 2 writes it). */
static int non_persistent(const edm_pk *state, const edm_pk *key)
{
    const edm_pk *set = edm_pk_get(state, "_non_persistent_buffers_set");
    if (set && set->kind == EDM_PK_OBJECT && set->args->n == 1)
        set = set->args->items[0];
    if (!set || (set->kind != EDM_PK_SET && set->kind != EDM_PK_LIST))
        return 0;
    for (int64_t i = 0; i < set->n; i++)
        if (set->items[i]->kind == EDM_PK_STR && set->items[i]->len == key->len &&
            memcmp(set->items[i]->s, key->s, key->len) == 0)
            return 1;
    return 0;
}

/* The tensors of one of a module's dicts (_parameters, or _buffers, whose
 * non-persistent entries are not part of its state dict). */
static int walk_tensors(importer *im, const edm_pk *state, const char *field, int buffers, const char *prefix)
{
    const edm_pk *d = edm_pk_get(state, field);
    if (!d)
        return 0;
    int64_t n = edm_pk_dict_size(d);
    if (n < 0)
        return bad(im, d, "'%s': the module's %s is not a dict", prefix, field);
    char name[512];
    for (int64_t i = 0; i < n; i++) {
        const edm_pk *key = edm_pk_dict_key(d, i), *val = edm_pk_dict_value(d, i);
        if (join_name(im, key, prefix, name, sizeof name) != 0)
            return -1;
        if (val->kind == EDM_PK_NONE || (buffers && non_persistent(state, key)))
            continue;
        if (emit(im, name, val) != 0)
            return -1;
    }
    return 0;
}

static int walk_module(importer *im, const edm_pk *v, const char *prefix, int depth)
{
    if (depth > IMPORT_MAX_DEPTH)
        return bad(im, v, "'%s': modules nested more than %d deep", prefix, IMPORT_MAX_DEPTH);
    const char *cls;
    const edm_pk *state = module_state(im, v, prefix, &cls);
    if (!state)
        return -1;
    if (walk_tensors(im, state, "_parameters", 0, prefix) != 0 || walk_tensors(im, state, "_buffers", 1, prefix) != 0)
        return -1;
    const edm_pk *mods = edm_pk_get(state, "_modules");
    if (!mods)
        return 0;
    int64_t n = edm_pk_dict_size(mods);
    if (n < 0)
        return bad(im, mods, "'%s': the module's _modules is not a dict", prefix);
    char name[512];
    for (int64_t i = 0; i < n; i++) {
        const edm_pk *val = edm_pk_dict_value(mods, i);
        if (join_name(im, edm_pk_dict_key(mods, i), prefix, name, sizeof name) != 0)
            return -1;
        if (val->kind != EDM_PK_NONE && walk_module(im, val, name, depth + 1) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ configuration */

/* A constructor argument as .edm text: numbers, booleans and lists of
 * numbers; 1 for None (left at the .edm default). */
static int edm_text(importer *im, const char *key, const edm_pk *v, char *out, size_t size, int depth)
{
    switch (v->kind) {
    case EDM_PK_NONE: return depth == 0 ? 1 : bad(im, v, "init_kwargs '%s': None inside a list", key);
    case EDM_PK_BOOL: snprintf(out, size, "%s", v->i ? "true" : "false"); return 0;
    case EDM_PK_INT: snprintf(out, size, "%lld", (long long)v->i); return 0;
    case EDM_PK_FLOAT:
        if (!isfinite(v->f))
            return bad(im, v, "init_kwargs '%s' is not finite", key);
        for (int digits = 15; digits <= 17; digits++) { /* the shortest text that reads back the same */
            snprintf(out, size, "%.*g", digits, v->f);
            if (strtod(out, NULL) == v->f)
                break;
        }
        return 0;
    case EDM_PK_LIST:
    case EDM_PK_TUPLE: {
        if (depth > 0)
            return bad(im, v, "init_kwargs '%s': a list inside a list", key);
        size_t used = (size_t)snprintf(out, size, "[");
        for (int64_t i = 0; i < v->n; i++) {
            char item[64];
            if (edm_text(im, key, v->items[i], item, sizeof item, 1) != 0)
                return -1;
            int k = snprintf(out + used, size - used, "%s%s", i ? ", " : "", item);
            if (k < 0 || (size_t)k >= size - used - 1)
                return bad(im, v, "init_kwargs '%s': the list is too long", key);
            used += (size_t)k;
        }
        snprintf(out + used, size - used, "]");
        return 0;
    }
    default: {
        char kind[160];
        return bad(im, v, "init_kwargs '%s' is %s; edmc takes numbers, booleans and lists of numbers", key,
                   edm_pk_describe(v, kind, sizeof kind));
    }
    }
}

/* The arguments of the reference's Precond (and UNet, Block, EDM2Loss) that
 * models/edm2.edm has as parameters of the same name and meaning. */
static const char *const edm_params[] = {
    "img_resolution", "img_channels",    "label_dim",  "model_channels", "channel_mult", "num_blocks",
    "attn_resolutions", "channels_per_head", "label_balance", "concat_balance", "res_balance", "attn_balance",
    "clip_act",       "dropout",         "logvar_channels", "sigma_data", "P_mean",      "P_std",
};

/* Arguments with no .edm counterpart that are fine at these values. */
static int harmless(const char *key, const edm_pk *v)
{
    if (strcmp(key, "use_fp16") == 0) /* a precision choice, made by --device/--precision here */
        return 1;
    if (strcmp(key, "channel_mult_noise") == 0 || strcmp(key, "channel_mult_emb") == 0)
        return v->kind == EDM_PK_NONE;
    if (strcmp(key, "resample_filter") == 0)
        return (v->kind == EDM_PK_LIST || v->kind == EDM_PK_TUPLE) && v->n == 2 && v->items[0]->kind == EDM_PK_INT &&
               v->items[0]->i == 1 && v->items[1]->kind == EDM_PK_INT && v->items[1]->i == 1;
    return 0;
}

/* A persistent object's constructor keyword arguments, or NULL. */
static const edm_pk *init_kwargs(const edm_pk *obj)
{
    if (!edm_pk_global_is(obj, "torch_utils.persistence._reconstruct_persistent_obj") || obj->args->n != 1)
        return NULL;
    return edm_pk_get(edm_pk_get(obj->args->items[0], "state"), "_init_kwargs");
}

static int add_config(importer *im, json_object *cfg, const edm_pk *kwargs, const char *whose)
{
    int64_t n = edm_pk_dict_size(kwargs);
    if (n < 0)
        return bad(im, kwargs, "the %s's init_kwargs is not a dict", whose);
    for (int64_t i = 0; i < n; i++) {
        const edm_pk *k = edm_pk_dict_key(kwargs, i), *v = edm_pk_dict_value(kwargs, i);
        char key[64], text[512];
        if (k->kind != EDM_PK_STR || k->len >= sizeof key || memchr(k->s, '\0', k->len))
            return bad(im, k, "the %s's init_kwargs has a key that is not a short string", whose);
        snprintf(key, sizeof key, "%.*s", (int)k->len, k->s);
        int known = 0;
        for (size_t j = 0; j < sizeof edm_params / sizeof edm_params[0]; j++)
            known |= strcmp(key, edm_params[j]) == 0;
        if (!known) {
            if (harmless(key, v))
                continue;
            return bad(im, v, "the %s's init_kwargs '%s' has no counterpart in models/edm2.edm", whose, key);
        }
        int rc = edm_text(im, key, v, text, sizeof text, 0);
        if (rc < 0)
            return -1;
        if (rc == 1)
            continue;
        json_object *s = json_object_new_string(text);
        if (!s || json_object_object_add(cfg, key, s) != 0) {
            json_object_put(s);
            return edm_nomem(im->st);
        }
    }
    return 0;
}

/* models/edm2.edm in the first model folder that has it. */
static int find_model(importer *im, char *out, size_t size)
{
    edm_model_dirs md;
    edm_model_dirs_get(&md);
    for (int i = 0; i < md.n; i++) {
        snprintf(out, size, "%s/edm2.edm", md.dir[i]);
        if (access(out, R_OK) == 0)
            return 0;
    }
    return edm_fail(im->st, EDM_ERR_IO, EDM_NO_LOC,
                    "%s: no edm2.edm in the model folders ($EDMC_MODELS, ./models, models/ beside edmc) to describe "
                    "the imported network",
                    im->what);
}

static int add_metadata(importer *im, const edm_pk *root, const edm_pk *net, const char *cls)
{
    char model[4200];
    if (find_model(im, model, sizeof model) != 0)
        return -1;
    json_object *cfg = json_object_new_object();
    if (!cfg)
        return edm_nomem(im->st);
    const edm_pk *net_kwargs = init_kwargs(net);
    int rc = 0;
    if (!net_kwargs)
        rc = bad(im, net, "the network records no init_kwargs (its configuration)");
    if (rc == 0)
        rc = add_config(im, cfg, net_kwargs, cls);
    const edm_pk *loss = init_kwargs(edm_pk_get(root, "loss_fn"));
    if (rc == 0 && loss)
        rc = add_config(im, cfg, loss, "loss_fn");
    const char *text = rc == 0 ? json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN) : NULL;
    if (rc == 0 && !text)
        rc = edm_nomem(im->st);
    char origin[800];
    snprintf(origin, sizeof origin, "%.600s (the reference's %.80s, %d tensors)", im->what, cls, im->tensors);
    if (rc == 0 && (edm_st_writer_meta(im->w, EDM_META_MODEL, model, im->st) != 0 ||
                    edm_st_writer_meta(im->w, EDM_META_CONFIG, text, im->st) != 0 ||
                    edm_st_writer_meta(im->w, EDM_META_IMPORT, origin, im->st) != 0))
        rc = -1;
    json_object_put(cfg);
    return rc;
}

/* The network: the snapshot dict's 'ema', or the pickle itself when it is
 * one persistent module. */
static const edm_pk *find_network(importer *im, const edm_pk *root)
{
    if (edm_pk_global_is(root, "torch_utils.persistence._reconstruct_persistent_obj"))
        return root;
    const edm_pk *net = edm_pk_get(root, "ema");
    if (net)
        return net;
    char kind[160];
    if (edm_pk_dict_size(root) < 0)
        bad(im, root, "the pickle holds %s, not a snapshot dict with an 'ema' network",
            edm_pk_describe(root, kind, sizeof kind));
    else
        bad(im, root, "the pickle's dict has no 'ema' network (a reference snapshot has ema, loss_fn, encoder, "
                      "dataset_kwargs)");
    return NULL;
}

int edm_ref_import(const unsigned char *data, size_t len, const char *what, edm_st_writer *w, edm_status *st)
{
    if (!edm_ref_is_pickle(data, len))
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC,
                        "%s: not a pickle of protocol 2 or later (it does not start with byte 0x80)", what);
    importer im = {.what = what, .data = data, .w = w, .st = st, .a = edm_arena_new(IMPORT_ARENA_LIMIT)};
    if (!im.a)
        return edm_nomem(st);
    edm_pk_rules rules = {.globals = outer_globals,
                          .nglobals = (int)(sizeof outer_globals / sizeof outer_globals[0]),
                          .what = what};
    size_t at = 0;
    int rc = -1;
    const edm_pk *root = edm_pk_read(im.a, data, len, &at, &rules, st);
    const edm_pk *net = root ? find_network(&im, root) : NULL;
    const char *cls = NULL;
    if (net && module_state(&im, net, "", &cls)) {
        if (strcmp(cls, "Precond") != 0)
            bad(&im, net, "the network is a '%s'; edmc imports the reference's EDM2 network (class Precond)", cls);
        else if (walk_module(&im, net, "", 0) == 0)
            rc = add_metadata(&im, root, net, cls);
    }
    edm_arena_free(im.a);
    return rc;
}

/* ------------------------------------------------------------ files */

typedef struct {
    void *map;
    size_t len;
} mapped;

static int map_read(const char *path, mapped *m, edm_status *st)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) != 0)
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: not a regular file", path);
    else if (sb.st_size == 0)
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: empty file", path);
    if (rc == 0) {
        m->len = (size_t)sb.st_size;
        m->map = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->map == MAP_FAILED) {
            m->map = NULL;
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    return rc;
}

int edm_ref_import_file(const char *path, edm_st_writer *w, edm_status *st)
{
    mapped m = {0};
    if (map_read(path, &m, st) != 0)
        return -1;
    int rc = edm_ref_import(m.map, m.len, path, w, st);
    munmap(m.map, m.len);
    return rc;
}

/* ------------------------------------------------------------ torch.save zip files */

/* What data.pkl of a torch.save archive may name: a state dict's containers and
 * tensors, and the storage types of its persistent ids. */
static const char *const zip_globals[] = {
    "collections.OrderedDict",         "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch.HalfStorage", "torch.FloatStorage",
    "torch.BFloat16Storage",           "torch.DoubleStorage",
};

/* The archive's one "<folder>/data.pkl", read into a malloc'd buffer. */
static int read_data_pkl(const char *path, zip_storages *zs, unsigned char **out, size_t *len, edm_status *st)
{
    zip_int64_t n = zip_get_num_entries(zs->zip, 0), found = -1;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(zs->zip, (zip_uint64_t)i, 0);
        const char *slash = name ? strchr(name, '/') : NULL;
        if (slash && strcmp(slash, "/data.pkl") == 0 && (size_t)(slash - name) + 2 < sizeof zs->prefix) {
            found = i;
            snprintf(zs->prefix, sizeof zs->prefix, "%.*s/", (int)(slash - name), name);
            break;
        }
    }
    if (found < 0)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: a zip without a <folder>/data.pkl: not a file torch.save wrote",
                        path);
    return edm_zip_read_entry(zs->zip, (zip_uint64_t)found, (uint64_t)1 << 30, path, out, len, st);
}

/* Every tensor of a state dict (name -> tensor). */
static int import_state_dict(importer *im, const edm_pk *root)
{
    char kind[160];
    int64_t n = edm_pk_dict_size(root);
    if (n < 0)
        return bad(im, root, "the file holds %s, not a state dict (names to tensors)",
                   edm_pk_describe(root, kind, sizeof kind));
    char name[512];
    for (int64_t i = 0; i < n; i++) {
        const edm_pk *val = edm_pk_dict_value(root, i);
        if (join_name(im, edm_pk_dict_key(root, i), "", name, sizeof name) != 0)
            return -1;
        if (edm_pk_dict_size(val) >= 0 && val->kind != EDM_PK_OBJECT)
            return bad(im, val, "'%s' is a dict: edmc imports a state dict (names to tensors), not a dict of them",
                       name);
        if (emit(im, name, val) != 0)
            return -1;
    }
    char origin[800];
    snprintf(origin, sizeof origin, "%.600s (a torch.save state dict, %d tensors)", im->what, im->tensors);
    return edm_st_writer_meta(im->w, EDM_META_IMPORT, origin, im->st);
}

static int import_torch_zip(const char *path, edm_st_writer *w, edm_status *st)
{
    int err = 0;
    zip_storages zs = {.zip = zip_open(path, ZIP_RDONLY, &err)};
    if (!zs.zip) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: cannot open the zip: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    unsigned char *pkl = NULL;
    size_t len = 0;
    int rc = read_data_pkl(path, &zs, &pkl, &len, st);
    char what[600];
    snprintf(what, sizeof what, "%s:%sdata.pkl", path, zs.prefix);
    importer im = {.what = what, .data = pkl, .w = w, .st = st, .zs = &zs};
    if (rc == 0 && !(im.a = edm_arena_new(IMPORT_ARENA_LIMIT)))
        rc = edm_nomem(st);
    if (rc == 0) {
        edm_pk_rules rules = {.globals = zip_globals,
                              .nglobals = (int)(sizeof zip_globals / sizeof zip_globals[0]),
                              .allow_persid = 1,
                              .what = what};
        size_t at = 0;
        const edm_pk *root = edm_pk_read(im.a, pkl, len, &at, &rules, st);
        rc = root ? import_state_dict(&im, root) : -1;
    }
    edm_arena_free(im.a);
    for (int i = 0; i < zs.nbufs; i++)
        free(zs.bufs[i]);
    free(zs.bufs);
    free(pkl);
    zip_discard(zs.zip);
    return rc;
}

/* ------------------------------------------------------------ any of them */

typedef enum { FILE_OTHER, FILE_PICKLE, FILE_ZIP } file_kind;

/* What the file starts like (unreadable files count as other: the
 * safetensors reader's error then names the cause).  A safetensors file's
 * 8-byte header length may start with the pickle marker 0x80, so its JSON
 * header's '{' at byte 8 is checked first. */
static file_kind sniff(const char *path)
{
    FILE *fp = fopen(path, "rb");
    unsigned char head[9] = {0};
    size_t n = fp ? fread(head, 1, sizeof head, fp) : 0;
    if (fp)
        fclose(fp);
    if (n == sizeof head && head[8] == '{')
        return FILE_OTHER;
    if (edm_ref_is_pickle(head, n))
        return FILE_PICKLE;
    return n >= 4 && memcmp(head, "PK\x03\x04", 4) == 0 ? FILE_ZIP : FILE_OTHER;
}

int edm_ref_import_any(const char *path, edm_st_writer *w, edm_status *st)
{
    if (sniff(path) == FILE_ZIP)
        return import_torch_zip(path, w, st);
    return edm_ref_import_file(path, w, st);
}

edm_st_file *edm_weights_open(const char *path, edm_status *st)
{
    if (sniff(path) == FILE_OTHER)
        return edm_st_open(path, st);
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st), NULL;
    void *image = NULL;
    size_t len = 0;
    int rc = edm_ref_import_any(path, w, st);
    if (rc == 0)
        rc = edm_st_writer_to_memory(w, &image, &len, st);
    edm_st_writer_free(w);
    return rc == 0 ? edm_st_open_memory(path, image, len, st) : NULL;
}
