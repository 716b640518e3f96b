/* Ahead-of-time packages (docs/packages.md): one zip file holding a model's
 * graph, its execution plan, its parameter table, the model's source for
 * provenance and, for CUDA, one cubin per (architecture, batch), described by
 * manifest.json with a format version and the SHA-256 of every other entry.
 *
 * Running from a package reads no .edm file and calls neither the parser nor
 * NVRTC: the graph is read from its XML, the plan from its XML (checked
 * against the graph) and the kernels are the package's cubins. */
#ifndef EDMC_PACKAGE_H
#define EDMC_PACKAGE_H

#include <stddef.h>
#include <stdint.h>

#include "compiler/elaborate.h"
#include "compiler/ir.h"
#include "compiler/passes/fusion.h"
#include "compiler/source.h"
#include "compiler/status.h"
#include "runtime/backend.h"
#include "runtime/backend_cuda.h"
#include "runtime/safetensors.h"

#define EDM_PACKAGE_VERSION 1
#define EDM_PACKAGE_MAX_BATCHES 16

/* What `edmc compile` puts into a package. */
typedef struct {
    const char *model_path;          /* the .edm file as given */
    const edm_define *defines;       /* -D as given */
    int ndefines;
    const edm_program *prog;         /* the compiled model: its graph and final parameter values */
    const edm_sources *src;          /* every file it read (the model and its imports) */
    const edm_backend_options *backend; /* device, precision, fuse */
    const char *mode;                /* "forward", "sample" or "train" (prog is then the differentiated
                                      * training program) */
    const int64_t *batches;          /* CUDA: the batches of the cubins (CPU: any batch runs) */
    int nbatches;
    const char *plan_xml;            /* the plan the backend makes for the graph */
    size_t plan_size;
    const edm_cuda_kernel_image *kernels; /* CUDA: one per (arch, batch) */
    int nkernels;
} edm_package_spec;

/* Writes the package atomically (temporary file, then rename). */
int edm_package_write(const char *path, const edm_package_spec *spec, edm_status *st);

typedef struct edm_package edm_package;

/* Opens path: a zip whose manifest has this format version, every entry
 * listed with a matching SHA-256, a graph that reads back, a parameter table
 * that is the graph's.  NULL with st naming the problem. */
edm_package *edm_package_open(const char *path, edm_status *st);
void edm_package_close(edm_package *p);

const char *edm_package_path(const edm_package *p);
/* The graph, handed to the caller (who frees it); NULL once taken. */
edm_graph *edm_package_take_graph(edm_package *p);
/* "forward", "sample" or "train". */
const char *edm_package_mode(const edm_package *p);
/* The device, precision, fusion rules, plan and kernels into opt (threads
 * and the other options stay as they are). */
int edm_package_backend(const edm_package *p, edm_backend_options *opt, edm_status *st);
/* The device, precision and fusion rules it was compiled for, as the
 * command line spells them. */
const char *edm_package_device(const edm_package *p);
const char *edm_package_precision(const edm_package *p);
const char *edm_package_fuse(const edm_package *p);
/* The batch a run of n samples binds: for a cuda package the smallest batch
 * of its kernels that is at least n (the denoiser pads the rest), else n
 * (a cpu package runs any batch; a cuda one then names what it holds). */
int64_t edm_package_fit_batch(const edm_package *p, int64_t n);
/* Weights that fit the parameter table (every parameter and buffer present,
 * with its shape); otherwise -1 naming the first that does not. */
int edm_package_check_weights(const edm_package *p, const edm_st_file *w, edm_status *st);

/* A training run from a package (its mode "train"): the program, its graph
 * taken and its compile-time parameters (in the compilation's order) copied
 * from the manifest, as edm_compile_file would have made it. */
int edm_package_program(edm_package *p, edm_program *prog, edm_status *st);
/* Every source file the compilation read, into src under the paths it named
 * them (the main file first); src then reads nothing from the disk. */
int edm_package_sources(const edm_package *p, edm_sources *src, edm_status *st);
/* The model file it was compiled from, as an absolute path (what a run from
 * the file records), or NULL. */
const char *edm_package_model_path(const edm_package *p);
/* Whether a run of batch n has kernels (always, for a cpu package); held
 * gets the batches it has, "8, 32". */
int edm_package_holds_batch(const edm_package *p, int64_t n, char *held, size_t size);

#endif
