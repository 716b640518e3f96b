// The tensor-core GEMM's fragment loads (codegen/cuda_gemm_mma.c): on the
// GPU one ldmatrix.x4 a fragment (or two of B's), each lane giving the
// address of one row; without EDM_LDMATRIX the same words read one by one
// (edm_frag_*_words).  The emulator's runs check both against the CPU backend
// (the first through its own model of ldmatrix); this checks the offsets the
// lanes give against the word-by-word loads, with ldmatrix modelled as the PTX ISA states it
// (ldmatrix.sync.aligned.m8n8.x4.shared.b16): lane 8·i + r gives the address
// of row r of 8×8 matrix i (16 bytes, 16-byte aligned), and lane l receives,
// in its register i, 32-bit word l % 4 of row l / 4 of matrix i.
// preamble.inc is the generated module's tensor-core preamble, cut out of
// `edmc dump --stage=cuda` by tests/cli/cuda_emu.sh, which compiles this with
// g++ -include tests/emu/cuda_emu.h and runs it; prints "ok N - ..." lines.
#include <cstdio>

#include "preamble.inc"

enum { ROWS = 128, PITCH = 20, WORDS = 2 * ROWS * PITCH };

// The words lane `lane` receives from ldmatrix.x4 when every lane p gives word offset offset(p).
template <class Offset> static void ldmatrix_x4(const unsigned *stage, Offset offset, int lane, unsigned out[4], int *bad)
{
    for (int i = 0; i < 4; i++) {
        const int provider = 8 * i + lane / 4, at = offset(provider);
        if (at % 4 != 0 || at < 0 || at + 4 > WORDS) /* a row: 4 words at a 16-byte boundary, inside the stage */
            (*bad)++;
        out[i] = at >= 0 && at + 4 <= WORDS ? stage[at + lane % 4] : 0u;
    }
}

int main()
{
    static unsigned stage[WORDS];
    for (int w = 0; w < WORDS; w++)
        stage[w] = 0x9e3779b9u * (unsigned)(w + 1); /* every word distinct */
    int n = 0, bad = 0, cases = 0;
    // the fragments of every row and k offset a kernel uses (rows 16 apart for A, 8 for B; ks 0 and 1)
    for (int row0 = 0; row0 + 16 <= ROWS; row0 += 8)
        for (int ks = 0; ks < 2; ks++) {
            const unsigned *base = stage + row0 * PITCH + ks * 8;
            const int origin = row0 * PITCH + ks * 8;
            for (int lane = 0; lane < 32; lane++) {
                unsigned want[4], got[4];
                if (row0 % 16 == 0) {
                    edm_frag_a_words(want, base, PITCH, lane);
                    ldmatrix_x4(stage, [&](int p) { return origin + edm_ldsm_a_offset(p, PITCH); }, lane, got, &bad);
                    for (int i = 0; i < 4; i++)
                        bad += got[i] != want[i];
                    cases++;
                }
                unsigned wantb[2][2];
                edm_frag_b2_words(wantb, base, PITCH, lane);
                ldmatrix_x4(stage, [&](int p) { return origin + edm_ldsm_b_offset(p, PITCH); }, lane, got, &bad);
                bad += got[0] != wantb[0][0] || got[1] != wantb[0][1] || got[2] != wantb[1][0] || got[3] != wantb[1][1];
                cases++;
            }
        }
    printf("%s %d - ldmatrix's lanes and addresses give the fragments the word-by-word loads do (%d lane cases)\n",
           bad ? "not ok" : "ok", ++n, cases);
    // the stage's rows start 16-byte aligned (PITCH words of 4 bytes)
    printf("%s %d - a stage row is %d bytes, a multiple of 16\n", (PITCH * 4) % 16 ? "not ok" : "ok", ++n, PITCH * 4);
    return bad ? 1 : 0;
}
