/* safetensors files (the reference's checkpoint format): an 8-byte little-
 * endian header length, a JSON header {name: {dtype, shape, data_offsets},
 * "__metadata__": {string: string}}, then the raw little-endian data.
 *
 * The reader maps the file and validates everything before handing out a
 * tensor: the JSON, every dtype, shape and offset, that the data regions
 * exactly tile the data section without overlap, and that the file is not
 * truncated.  Every error names the file (and the tensor). */
#ifndef EDMC_SAFETENSORS_H
#define EDMC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/ir.h"
#include "compiler/status.h"

size_t edm_dtype_size(edm_dtype t);

typedef struct {
    const char *name;
    edm_dtype dtype;
    int rank;
    int64_t dim[EDM_MAX_RANK];
    int64_t numel;
    const void *data; /* points into the mapping; little-endian, maybe unaligned */
    size_t nbytes;
} edm_st_entry;

/* An entry's shape as edm_shape_str writes one ("[3, 64]"). */
char *edm_st_entry_shape_str(const edm_st_entry *e, char *buf, size_t size);

typedef struct edm_st_file edm_st_file;

edm_st_file *edm_st_open(const char *path, edm_status *st);
/* The same over a file image in memory (a malloc'd buffer the file then owns
 * and frees, also on failure); path names it in errors. */
edm_st_file *edm_st_open_memory(const char *path, void *image, size_t len, edm_status *st);
void edm_st_close(edm_st_file *f);
const char *edm_st_path(const edm_st_file *f);
int edm_st_count(const edm_st_file *f);
const edm_st_entry *edm_st_entry_at(const edm_st_file *f, int i); /* in file order of offsets */
const edm_st_entry *edm_st_find(const edm_st_file *f, const char *name);
/* A string value of __metadata__, or NULL. */
const char *edm_st_metadata(const edm_st_file *f, const char *key);
int edm_st_metadata_count(const edm_st_file *f);
const char *edm_st_metadata_key(const edm_st_file *f, int i);

/* Converts an entry's data (F32, F16, BF16 or F64) into out (n elements, n
 * must equal the entry's element count). */
int edm_st_read_f32(const edm_st_file *f, const edm_st_entry *e, float *out, int64_t n, edm_status *st);
int edm_st_read_f64(const edm_st_file *f, const edm_st_entry *e, double *out, int64_t n, edm_status *st);

/* The writer collects tensors (copied, converted to the stored dtype) and
 * metadata, then writes the file atomically: a temporary file in the same
 * folder, fsync, rename over the target, fsync of the folder. */
typedef struct edm_st_writer edm_st_writer;

edm_st_writer *edm_st_writer_new(void);
void edm_st_writer_free(edm_st_writer *w);
/* Adds a tensor from float data, stored as `stored` (F32, F16, BF16, F64).
 * Duplicate names are an error. */
int edm_st_writer_add_f32(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const float *data, edm_status *st);
int edm_st_writer_add_f64(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const double *data, edm_status *st);
/* Adds a tensor from its little-endian bytes in the stored dtype, as they are. */
int edm_st_writer_add_raw(edm_st_writer *w, const char *name, edm_dtype stored, int rank, const int64_t *dim,
                          const void *data, edm_status *st);
int edm_st_writer_meta(edm_st_writer *w, const char *key, const char *value, edm_status *st);
int edm_st_writer_write(edm_st_writer *w, const char *path, edm_status *st);
/* The file's bytes in a malloc'd buffer instead (for edm_st_open_memory). */
int edm_st_writer_to_memory(edm_st_writer *w, void **image, size_t *len, edm_status *st);

/* Half-precision conversions (round to nearest even), exposed for tests and
 * for the backends. */
uint16_t edm_f32_to_f16(float x);
float edm_f16_to_f32(uint16_t h);
uint16_t edm_f32_to_bf16(float x);
float edm_bf16_to_f32(uint16_t h);

#endif
