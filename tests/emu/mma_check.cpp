// The emulator's tensor-core product (edm_mma_f16 / edm_mma_bf16 in
// tests/emu/cuda_emu.h) against a product computed here, with the operands
// placed in the lanes' registers by the PTX ISA's element formulas for
// mma.m16n8k16 (.row.col, f16/bf16, f32 accumulators), written out
// element by element as the ISA states them (groupID = lane >> 2,
// threadID_in_group = lane % 4):
//   A: a_i, i = 0..7:  row groupID for i < 2 and 4 <= i < 6, else groupID + 8;
//                      column 2·threadID_in_group + (i & 1), + 8 for i >= 4
//   B: b_i, i = 0..3:  row 2·threadID_in_group + (i & 1), + 8 for i >= 2; column groupID
//   C, D: c_i, i = 0..3: row groupID for i < 2, else groupID + 8; column 2·threadID_in_group + (i & 1)
// Two warps, three accumulating products each, over operands that are
// multiples of 1/16 (exact in f16 and bf16, so every sum is exact and the
// comparison is for equality).  Compiled and run by tests/cli/cuda_emu.sh
// (g++ -include tests/emu/cuda_emu.h); prints "ok N - ..." / "not ok N - ...".
#include <cstdio>

enum { WARPS = 2, CALLS = 3 };

extern "C" __global__ void mma_kernel(const float *A, const float *B, float *D, int bf16)
{
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = lane >> 2, tig = lane % 4;
    float d[4];
    for (int i = 0; i < 4; i++) {
        const unsigned row = i < 2 ? group : group + 8, col = tig * 2 + (i & 1);
        d[i] = D[(warp * 16 + row) * 8 + col];
    }
    for (int call = 0; call < CALLS; call++) {
        const float *a = A + (warp * CALLS + call) * 16 * 16, *b = B + (warp * CALLS + call) * 16 * 8;
        unsigned short ah[8], bh[4];
        for (int i = 0; i < 8; i++) {
            const unsigned row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
            const unsigned col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
            const float v = a[row * 16 + col];
            ah[i] = bf16 ? edm_cvt_rn_bf16_f32(v) : edm_cvt_rn_f16_f32(v);
        }
        for (int i = 0; i < 4; i++) {
            const unsigned row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0), col = group;
            const float v = b[row * 8 + col];
            bh[i] = bf16 ? edm_cvt_rn_bf16_f32(v) : edm_cvt_rn_f16_f32(v);
        }
        unsigned ar[4], br[2];
        for (int r = 0; r < 4; r++)
            ar[r] = (unsigned)ah[2 * r] | (unsigned)ah[2 * r + 1] << 16;
        for (int r = 0; r < 2; r++)
            br[r] = (unsigned)bh[2 * r] | (unsigned)bh[2 * r + 1] << 16;
        if (bf16)
            edm_mma_bf16(d, ar, br);
        else
            edm_mma_f16(d, ar, br);
    }
    for (int i = 0; i < 4; i++) {
        const unsigned row = i < 2 ? group : group + 8, col = tig * 2 + (i & 1);
        D[(warp * 16 + row) * 8 + col] = d[i];
    }
}

extern "C" {
const edm_emu_kernel edm_emu_kernels[] = {EDM_EMU_KERNEL(mma_kernel, 1)};
const int edm_emu_nkernels = 1;
}

int main()
{
    static float A[WARPS * CALLS * 16 * 16], B[WARPS * CALLS * 16 * 8], C[WARPS * 16 * 8], D[WARPS * 16 * 8];
    unsigned long long r = 12345;
    auto next = [&r]() { /* multiples of 1/16 in [-2, 2) */
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        return (float)((int)((r >> 33) % 64) - 32) / 16.0f;
    };
    int failed = 0, n = 0;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        for (float &v : A)
            v = next();
        for (float &v : B)
            v = next();
        for (float &v : C)
            v = next();
        memcpy(D, C, sizeof D);
        const float *pa = A, *pb = B;
        float *pd = D;
        int flag = bf16;
        void *args[] = {&pa, &pb, &pd, &flag};
        const unsigned grid[3] = {1, 1, 1}, block[3] = {32 * WARPS, 1, 1};
        char err[300] = "";
        if (edm_emu_launch(&edm_emu_kernels[0], grid, block, args, err, sizeof err) != 0) {
            printf("not ok %d - mma.m16n8k16 %s: the launch failed: %s\n", ++n, bf16 ? "bf16" : "f16", err);
            failed++;
            continue;
        }
        int bad = 0;
        double worst = 0;
        for (int w = 0; w < WARPS; w++)
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 8; j++) {
                    double want = C[(w * 16 + i) * 8 + j];
                    for (int c = 0; c < CALLS; c++)
                        for (int k = 0; k < 16; k++)
                            want += (double)A[((w * CALLS + c) * 16 + i) * 16 + k] *
                                    (double)B[((w * CALLS + c) * 16 + k) * 8 + j];
                    double diff = fabs(want - (double)D[(w * 16 + i) * 8 + j]);
                    if (diff > worst)
                        worst = diff;
                    bad += diff != 0;
                }
        printf("%s %d - mma.m16n8k16 %s, %d warps x %d accumulating products: %d of %d results differ "
               "(largest difference %g)\n",
               bad ? "not ok" : "ok", ++n, bf16 ? "bf16" : "f16", WARPS, CALLS, bad, WARPS * 16 * 8, worst);
        failed += bad != 0;
    }
    return failed ? 1 : 0;
}
