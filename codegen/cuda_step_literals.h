/* The literals of a grouped step's text made its arguments, so that steps
 * which differ only in their shapes and constants share one function.
 *
 * A group kernel (the weight preparation, the weight gradients) runs
 * hundreds of small steps over the parameters, each as its own
 * `__noinline__` function: for img512-s training, 304 such functions in
 * 28 group kernels, 32 once their literals are taken out.  NVRTC's time for
 * those kernels is mostly the functions and their call sites
 * (docs/performance.md, v13), and what they do is memory-bound, so
 * the shapes can be read at run time there; the network's own kernels keep
 * theirs baked in. */
#ifndef EDMC_CODEGEN_CUDA_STEP_LITERALS_H
#define EDMC_CODEGEN_CUDA_STEP_LITERALS_H

#include "codegen/text.h"

/* Copies text to out with every index literal `N_ix` (N other than 0 and 1)
 * replaced by `P.k_[j]` and every f32 literal (digits with a point or an
 * exponent and the suffix f; not 0.0f or 1.0f) by `P.f_[j]`, j counting
 * up from *nints / *nfloats (zero for a step's own text) in the order
 * they appear.  Each literal taken is
 * appended to ints (as `N`, then ", ") or floats (its text, then ", ") and
 * counted.  Identifiers, hexadecimal numbers and comments are copied as
 * they are.  Allocation failures set the buffers' oom. */
void edm_cuda_step_literals(const char *text, sbuf *out, sbuf *ints, int *nints, sbuf *floats, int *nfloats);

#endif
