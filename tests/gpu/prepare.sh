#!/bin/sh
# Prepares what tests/gpu/run.sh needs on a lent GPU machine, HERE (where the
# build tools are), into .gpulibs/ (ignored by git, carried by the device tool):
#
#   1. builds edmc and the three programs run.sh runs;
#   2. .gpulibs/libs.tar.xz: the shared libraries they link that are not part
#      of glibc or the CUDA toolkit (the GPU image lacks OpenBLAS, json-c, ...);
#   3. .gpulibs/testdata/edm2-tiny: the golden vectors (the carried tree has no ../shared);
#   4. with --cache: .gpulibs/kernel-cache.tar.xz, every kernel run.sh compiles, built by
#      running run.sh itself over the fake driver (tests/fakecuda, which reports an
#      sm_90 device), so the GPU run reads cubins instead of running NVRTC — they
#      are used when the GPU machine's NVRTC has the same version (the key has it);
#   5. prints what to carry and its size (the device tool carries at most 64 MiB).
#
# Usage: sh tests/gpu/prepare.sh [--cache]      (from the repository root)
set -eu
cd "$(dirname "$0")/../.."
cache=0
[ "${1:-}" = "--cache" ] && cache=1
testdata=${EDMC_TESTDATA:-../shared/testdata}
[ -d "$testdata/edm2-tiny" ] && testdata=$testdata/edm2-tiny

make -j2 edmc tests/unit/test_backend_ops tests/unit/test_cuda_codegen tests/tools/st_diff \
    tests/fakecuda/fake_cuda.so >/dev/null
mkdir -p .gpulibs/testdata
rm -rf .gpulibs/testdata/edm2-tiny
cp -r "$testdata" .gpulibs/testdata/edm2-tiny

# every library the binaries resolve outside glibc's own and the CUDA toolkit
libs=$(mktemp -d)
trap 'rm -rf "$libs"' EXIT INT TERM
for b in edmc tests/unit/test_backend_ops tests/unit/test_cuda_codegen tests/tools/st_diff; do
    ldd "$b" | awk '$3 ~ /^\// { print $3 }'
done | sort -u | grep -v -e '/libc\.so' -e '/libm\.so' -e '/libpthread' -e '/libdl\.so' -e '/librt\.so' \
    -e '/ld-linux' -e '/cuda' | while read -r f; do cp -L "$f" "$libs/"; done
tar -C "$libs" -cJf .gpulibs/libs.tar.xz .

if [ "$cache" -eq 1 ]; then
    rm -rf .gpulibs/kernel-cache .gpulibs/kernel-cache.tar.xz
    out=$(mktemp -d)
    mkdir -p "$out/cache"
    echo "filling the kernel cache over the fake driver (long: every NVRTC compile of run.sh) ..."
    EDMC_CUDA_DRIVER="$(pwd)/tests/fakecuda/fake_cuda.so" EDMC_CUBLASLT="$(pwd)/tests/fakecuda/fake_cuda.so" \
        EDMC_CACHE_DIR="$out/cache" OUT="$out" EDMC_TESTDATA="$(pwd)/.gpulibs/testdata" \
        GPU_BUDGET_S=3000 GPU_PHASE1_S=2000 GPU_PARALLEL=0 sh tests/gpu/run.sh >"$out/run.log" 2>&1 || true
    tar -C "$out/cache" -cJf .gpulibs/kernel-cache.tar.xz .
    echo "$(find "$out/cache" -name '*.cubin' | wc -l) cubins ($(du -sh "$out/cache" | cut -f1)," \
        "$(du -h .gpulibs/kernel-cache.tar.xz | cut -f1) packed); run.sh's log over the fake: $out/run.log"
    rm -rf "$out/cache"
fi

echo "carry: edmc tests/unit/test_backend_ops tests/unit/test_cuda_codegen tests/tools/st_diff .gpulibs"
du -sch edmc tests/unit/test_backend_ops tests/unit/test_cuda_codegen tests/tools/st_diff .gpulibs | tail -n 1
