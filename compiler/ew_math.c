/* edm_ew_eval: the elementwise math of compiler/ew_math.h in double. */
#include "config.h"

#include <math.h>

#include "compiler/ew_math.h"

#define EW_EXP exp
#define EW_LOG log
#define EW_SQRT sqrt
#define EW_SIN sin
#define EW_COS cos
#define EW_ONE 1.0
#define EW_ZERO 0.0
#define EW_SIGMOID(x) EDM_SIGMOID_MATH(x, exp)

double edm_ew_eval(const edm_node *n, double a, double b)
{
    const double lo = n->attr.clamp.lo, hi = n->attr.clamp.hi;
    const double x = a, u = a, v = b;
    (void)lo;
    (void)hi;
    (void)x;
    (void)u;
    (void)v;
    switch (n->op) {
#define EW_UNARY_CASE(op, simd, expr) \
    case EDM_OP_##op:                 \
        return (expr);
        EDM_UNARY_MATH(EW_UNARY_CASE)
#undef EW_UNARY_CASE
#define EW_BINARY_CASE(op, simd, expr) \
    case EDM_OP_##op:                  \
        return (expr);
        EDM_BINARY_MATH(EW_BINARY_CASE)
#undef EW_BINARY_CASE
    default:
        return NAN;
    }
}
