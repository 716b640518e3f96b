// The emulator's f16/bf16 conversions (tests/emu/cuda_emu.h) against
// references, as the hardware's cvt.rn rounds: to nearest, ties to even,
// overflow to infinity, gradual underflow; NaN stays NaN.  Compiled and run by
// tests/cli/cuda_emu.sh (g++ -O2 -include tests/emu/cuda_emu.h).
//   f16:  GCC's _Float16 conversions (IEEE binary16, round to nearest even)
//   bf16: the nearest of the two bfloat16 neighbours, computed in double
// Checked: every f16 and bf16 value back and forth, every halfway point
// between neighbours and the floats just around it, and every 251st float bit
// pattern.  Prints "ok N - ..." / "not ok N - ..." lines; exit 1 on a mismatch.
#include <cstdio>

static unsigned ref_f16(float f)
{
    _Float16 h = (_Float16)f;
    unsigned short u;
    memcpy(&u, &h, sizeof u);
    return u;
}

static double bf16_value(unsigned b) /* exponent unbounded for the step past the largest finite */
{
    if ((b & 0x7fffu) == 0x7f80u)
        return (b & 0x8000u ? -1.0 : 1.0) * 3.4028236692093846346e38; /* 2^128 */
    return (double)__uint_as_float(b << 16);
}

static unsigned ref_bf16(float f)
{
    unsigned u = __float_as_uint(f), lo = u >> 16, hi = lo + 1;
    if ((u & 0xffffu) == 0)
        return lo;
    double x = (double)f, dlo = fabs(x - bf16_value(lo)), dhi = fabs(bf16_value(hi) - x);
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return hi;
    return lo & 1u ? hi : lo;
}

static int nan16(unsigned h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }
static int nanb16(unsigned b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu); }

struct tally {
    long checked, bad;
    char first[160];
};

static void check(tally &t, float f)
{
    unsigned got = edm_cvt_rn_f16_f32(f), want = ref_f16(f);
    t.checked++;
    if (std::isnan(f) ? !(got == 0x7fffu) : got != want) {
        if (!t.bad++)
            snprintf(t.first, sizeof t.first, "f16 of %a (0x%08x): 0x%04x, want 0x%04x", (double)f, __float_as_uint(f),
                     got, std::isnan(f) ? 0x7fffu : want);
    }
    got = edm_cvt_rn_bf16_f32(f);
    want = std::isnan(f) ? 0x7fffu : ref_bf16(f);
    t.checked++;
    if (got != want && !t.bad++)
        snprintf(t.first, sizeof t.first, "bf16 of %a (0x%08x): 0x%04x, want 0x%04x", (double)f, __float_as_uint(f),
                 got, want);
}

int main()
{
    int n = 0, failed = 0;
    /* every f16 and bf16 value, widened exactly and narrowed back */
    long bad = 0;
    char first[160] = "";
    for (unsigned h = 0; h < 65536; h++) {
        _Float16 r;
        unsigned short hs = (unsigned short)h;
        memcpy(&r, &hs, sizeof r);
        float f = edm_cvt_f32_f16((unsigned short)h), want = (float)r;
        int same = nan16(h) ? std::isnan(f) : __float_as_uint(f) == __float_as_uint(want);
        int back = nan16(h) || edm_cvt_rn_f16_f32(f) == h;
        float fb = __uint_as_float(h << 16);
        int backb = nanb16(h) || edm_cvt_rn_bf16_f32(fb) == h;
        if ((!same || !back || !backb) && !bad++)
            snprintf(first, sizeof first, "0x%04x: f16 -> %a (want %a), back %d, bf16 back %d", h, (double)f,
                     (double)want, back, backb);
    }
    printf("%s %d - every f16 widened exactly and every f16 and bf16 narrowed back to itself%s%s\n",
           bad ? "not ok" : "ok", ++n, bad ? ": " : "", first);
    failed += bad != 0;

    /* halfway points between neighbours (the ties), and the floats either side */
    tally t = {0, 0, ""};
    for (unsigned h = 0; h < 0x7c00; h++) {
        _Float16 a, b;
        unsigned short ha = (unsigned short)h, hb = (unsigned short)(h + 1);
        memcpy(&a, &ha, sizeof a);
        memcpy(&b, &hb, sizeof b);
        double mid = ((double)(float)a + (double)(float)b) / 2;
        if (h + 1 == 0x7c00)
            mid = 65520.0; /* the overflow threshold: 65504 + half an ulp */
        float m = (float)mid; /* exact: a float has room for the halfway point of two halves */
        for (float s : {1.0f, -1.0f}) {
            check(t, s * m);
            check(t, s * __uint_as_float(__float_as_uint(m) + 1));
            if (m != 0)
                check(t, s * __uint_as_float(__float_as_uint(m) - 1));
        }
    }
    for (unsigned b = 0; b < 0x7f80; b++) {
        unsigned m = (b << 16) | 0x8000u; /* the halfway point to the next bf16 */
        for (unsigned s : {0u, 0x80000000u}) {
            check(t, __uint_as_float(m | s));
            check(t, __uint_as_float((m + 1) | s));
            check(t, __uint_as_float((m - 1) | s));
        }
    }
    printf("%s %d - ties and their neighbours: %ld conversions%s%s\n", t.bad ? "not ok" : "ok", ++n, t.checked,
           t.bad ? ", first mismatch: " : "", t.first);
    failed += t.bad != 0;

    /* a sweep over the float bit patterns (every 251st), infinities and NaNs included */
    tally w = {0, 0, ""};
    for (unsigned long long u = 0; u <= 0xffffffffull; u += 251)
        check(w, __uint_as_float((unsigned)u));
    check(w, __uint_as_float(0x7f800000u));
    check(w, __uint_as_float(0xff800000u));
    check(w, __uint_as_float(0x7fc00000u));
    printf("%s %d - every 251st float bit pattern: %ld conversions%s%s\n", w.bad ? "not ok" : "ok", ++n, w.checked,
           w.bad ? ", first mismatch: " : "", w.first);
    failed += w.bad != 0;
    return failed ? 1 : 0;
}
