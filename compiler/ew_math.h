/* The math of every elementwise op, written once.  The CPU kernels
 * (runtime/cpu_kernels.inc, float and double), the CUDA renderer
 * (codegen/cuda_codegen.c, which stringifies the expressions and defines the
 * EW_* names in the kernels' preamble) and edm_ew_eval (double: constant
 * folding, tests) all expand these tables, so they cannot disagree.
 *
 * X(OP, SIMD, expression): unary ops in x (clamp also reads lo, hi);
 * binary ops in u, v.  SIMD: 1 where the CPU loop vectorises (no libm
 * call).  The expressions use EW_EXP, EW_LOG, EW_SQRT, EW_SIN, EW_COS,
 * EW_SIGMOID, EW_ONE and EW_ZERO, which each expander defines. */
#ifndef EDMC_EW_MATH_H
#define EDMC_EW_MATH_H

#include "compiler/ir.h"

#define EDM_UNARY_MATH(X)                                  \
    X(NEG, 1, -x)                                          \
    X(EXP, 0, EW_EXP(x))                                   \
    X(LOG, 0, EW_LOG(x))                                   \
    X(SQRT, 1, EW_SQRT(x))                                 \
    X(RSQRT, 1, EW_ONE / EW_SQRT(x))                       \
    X(SIN, 0, EW_SIN(x))                                   \
    X(COS, 0, EW_COS(x))                                   \
    X(SQUARE, 1, x * x)                                    \
    X(SIGMOID, 1, EW_SIGMOID(x))                           \
    X(SILU, 1, x * EW_SIGMOID(x))                          \
    X(CLAMP, 1, x < lo ? lo : x > hi ? hi : x)             \
    X(STEP, 1, x >= EW_ZERO ? EW_ONE : EW_ZERO)

#define EDM_BINARY_MATH(X) \
    X(ADD, 1, u + v)       \
    X(SUB, 1, u - v)       \
    X(MUL, 1, u * v)       \
    X(DIV, 1, u / v)       \
    X(MAXIMUM, 1, u > v ? u : v)

/* sigmoid itself, with the exponential an expander chooses for it (the CPU's
 * float kernels a vectorisable one) */
#define EDM_SIGMOID_MATH(x, EXPF) (EW_ONE / (EW_ONE + EXPF(-(x))))

/* The op in double: unary (b ignored; clamp reads its bounds from n) or binary. */
double edm_ew_eval(const edm_node *n, double a, double b);

#endif
