/* edmc's C API (api/edmc.h) over the runtime: a package's graph, a denoiser
 * on it (runtime/denoiser.h) and the EDM sampler (runtime/sample.h).  Built
 * only into the installed runtime library, which links no front end. */
#include "config.h"

#include "api/edmc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/denoiser.h"
#include "runtime/package.h"
#include "runtime/ref_import.h"
#include "runtime/sample.h"

struct edmc_model {
    edm_package *pkg;
    edm_graph *graph; /* taken from the package */
    edm_backend_options backend;
    edm_st_file *weights; /* NULL until edmc_set_weights */
    edm_denoiser *d;      /* built on first use, rebuilt for a larger n */
    edm_denoiser_shape shape; /* of the package's graph */
};

/* The runtime's status as the API's code, into err (when given). */
static edmc_code report(const edm_status *st, edmc_error *err)
{
    edmc_code code;
    switch (st->code) {
    case EDM_OK: code = EDMC_OK; break;
    case EDM_ERR_USAGE: code = EDMC_ERR_USAGE; break;
    case EDM_ERR_IO: code = EDMC_ERR_IO; break;
    case EDM_ERR_SYNTAX:
    case EDM_ERR_SEMANTIC:
    case EDM_ERR_FORMAT: code = EDMC_ERR_FORMAT; break;
    case EDM_ERR_NOMEM: code = EDMC_ERR_NOMEM; break;
    default: code = EDMC_ERR_INTERNAL; break;
    }
    if (err) {
        err->code = code;
        snprintf(err->message, sizeof err->message, "%s", code == EDMC_OK ? "" : st->msg);
    }
    return code;
}

/* A usage mistake (a bad argument) as the API's code. */
static edmc_code misuse(edmc_error *err, const char *what)
{
    edm_status st;
    edm_status_init(&st);
    edm_fail(&st, EDM_ERR_USAGE, EDM_NO_LOC, "%s", what);
    return report(&st, err);
}

static edmc_code ok(edmc_error *err)
{
    edm_status st;
    edm_status_init(&st);
    return report(&st, err);
}

edmc_code edmc_open(const char *package, int threads, edmc_model **out, edmc_error *err)
{
    if (!out)
        return misuse(err, "edmc_open: out is NULL");
    *out = NULL;
    if (!package)
        return misuse(err, "edmc_open: no package path");
    if (threads < 0)
        return misuse(err, "edmc_open: threads must be 0 (the default) or more");
    edm_status st;
    edm_status_init(&st);
    edmc_model *m = calloc(1, sizeof *m);
    if (!m) {
        edm_nomem(&st);
        return report(&st, err);
    }
    m->backend = edm_backend_defaults(EDM_DEVICE_CPU);
    m->backend.cpu.threads = threads;
    m->pkg = edm_package_open(package, &st);
    int rc = m->pkg ? edm_package_backend(m->pkg, &m->backend, &st) : -1;
    if (rc == 0 && strcmp(edm_package_mode(m->pkg), "train") == 0) /* the training program: no denoiser */
        rc = edm_fail(&st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "%s holds a training run (edmc train --package): compile the model with --mode=forward or "
                      "--mode=sample for the C API", package);
    if (rc == 0 && !(m->graph = edm_package_take_graph(m->pkg)))
        rc = edm_fail(&st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the package's graph is missing", package);
    int out_d, out_logvar;
    if (rc == 0 && edm_denoiser_interface(m->graph, &m->shape, &out_d, &out_logvar, &st) != 0) {
        edm_status_prefix(&st, "%s", package);
        st.code = EDM_ERR_FORMAT; /* a package of a model that is not a denoiser */
        rc = -1;
    }
    if (rc != 0) {
        edmc_close(m);
        return report(&st, err);
    }
    *out = m;
    return ok(err);
}

void edmc_close(edmc_model *m)
{
    if (!m)
        return;
    edm_denoiser_free(m->d);
    edm_st_close(m->weights);
    edm_graph_free(m->graph);
    edm_package_close(m->pkg);
    free(m);
}

edmc_code edmc_set_weights(edmc_model *m, const char *safetensors, edmc_error *err)
{
    if (!m || !safetensors)
        return misuse(err, "edmc_set_weights: no model or no weights path");
    edm_status st;
    edm_status_init(&st);
    edm_st_file *w = edm_weights_open(safetensors, &st);
    if (!w || edm_package_check_weights(m->pkg, w, &st) != 0) {
        edm_st_close(w);
        return report(&st, err);
    }
    /* the denoiser reads its weights when it is built: rebuilt on next use */
    edm_denoiser_free(m->d);
    m->d = NULL;
    edm_st_close(m->weights);
    m->weights = w;
    return ok(err);
}

/* A denoiser that takes n images at a time (on cuda, bound to a batch the
 * package holds kernels for; fewer images are padded). */
static int ready(edmc_model *m, int64_t n, edm_status *st)
{
    if (!m->weights)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "no weights: call edmc_set_weights first");
    if (m->d && edm_denoiser_batch(m->d) >= n)
        return 0;
    edm_denoiser_free(m->d);
    m->d = edm_denoiser_new(m->graph, m->weights, edm_package_fit_batch(m->pkg, n), &m->backend, st);
    return m->d ? 0 : -1;
}

edmc_code edmc_image_shape(const edmc_model *m, int *channels, int *height, int *width, int *label_dim,
                           edmc_error *err)
{
    if (!m)
        return misuse(err, "edmc_image_shape: no model");
    if (channels)
        *channels = m->shape.channels;
    if (height)
        *height = m->shape.height;
    if (width)
        *width = m->shape.width;
    if (label_dim)
        *label_dim = m->shape.label_dim;
    return ok(err);
}

static int64_t image_numel(const edmc_model *m)
{
    return (int64_t)m->shape.channels * m->shape.height * m->shape.width;
}

edmc_code edmc_forward(edmc_model *m, int64_t n, const float *x, const float *sigma, const float *labels, float *D,
                       edmc_error *err)
{
    if (!m || !x || !sigma || !D)
        return misuse(err, "edmc_forward: no model, x, sigma or D");
    if (n < 1)
        return misuse(err, "edmc_forward: n must be 1 or more");
    edm_status st;
    edm_status_init(&st);
    if (ready(m, n, &st) != 0)
        return report(&st, err);
    if (!labels != !m->shape.label_dim)
        return misuse(err, m->shape.label_dim ? "edmc_forward: the model is class-conditional: give labels"
                                              : "edmc_forward: the model is unconditional: labels must be NULL");
    for (int64_t i = 0; i < n; i++)
        if (!(sigma[i] > 0) || !isfinite(sigma[i])) {
            edm_fail(&st, EDM_ERR_USAGE, EDM_NO_LOC, "edmc_forward: sigma[%lld] = %g: must be finite and > 0",
                     (long long)i, (double)sigma[i]);
            return report(&st, err);
        }
    if (edm_denoiser_eval(m->d, x, sigma, labels, n, D, NULL, &st) != 0)
        return report(&st, err);
    return ok(err);
}

edmc_code edmc_sample(edmc_model *m, const uint64_t *seeds, int64_t n, int steps, float *images, edmc_error *err)
{
    if (!m || !seeds || !images)
        return misuse(err, "edmc_sample: no model, seeds or images");
    if (n < 1)
        return misuse(err, "edmc_sample: n must be 1 or more");
    edm_status st;
    edm_status_init(&st);
    edm_sample_params p;
    edm_sample_params_default(&p);
    p.steps = steps;
    if (edm_sample_params_check(&p, &st) != 0 || ready(m, n, &st) != 0)
        return report(&st, err);
    int64_t numel = image_numel(m);
    int L = m->shape.label_dim;
    float *labels = L ? calloc((size_t)(n * L), sizeof *labels) : NULL;
    if (L && !labels) {
        edm_nomem(&st);
        return report(&st, err);
    }
    for (int64_t i = 0; i < n; i++) {
        edm_sample_noise(seeds[i], images + i * numel, numel);
        if (L)
            labels[i * L + edm_sample_class(seeds[i], L)] = 1;
    }
    int rc = edm_sample_run(&p, m->d, NULL, seeds, labels, n, images, &st);
    free(labels);
    for (int64_t k = 0; rc == 0 && k < n * numel; k++)
        if (!isfinite(images[k]))
            rc = edm_fail(&st, EDM_ERR_FORMAT, EDM_NO_LOC, "the sample of seed %llu is not finite (element %lld)",
                          (unsigned long long)seeds[k / numel], (long long)(k % numel));
    return rc == 0 ? ok(err) : report(&st, err);
}
