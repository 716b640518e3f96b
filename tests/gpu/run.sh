#!/bin/sh
# The CUDA checks for a lent GPU machine: one prepared script, run from the
# repository root over a tree that was BUILT ELSEWHERE (carry ./edmc and
# tests/unit/test_cuda_codegen; it builds nothing).  Optionally
# .gpulibs/libs.tar.xz holds the shared libraries the binaries need that the
# GPU image may lack (OpenBLAS, cmocka, libxml2, ...): unpacked to a
# temporary folder and put on LD_LIBRARY_PATH.
#
#   1. ldd ./edmc: libcuda must NOT be linked (it is dlopen'ed), nothing missing
#   2. nvidia-smi
#   3. edmc forward --device=cuda: the probe must find the device
#   4. test_cuda_codegen: every kernel of edm2-tiny / edm2-img512-s compiled by
#      NVRTC for sm_90, then CUDA vs CPU on every value of edm2-tiny (forward
#      f32 and bf16, training f32 with dropout and backward) and of
#      edm2-img512-s forward (f16), with per-run times
#   5. the same CUDA vs CPU case again: the kernel cache must answer
# and prints a table last.  Exit status 1 when anything failed.
set -u
cd "$(dirname "$0")/../.." || exit 1
logs=${OUT:-/tmp}/gpu-logs
mkdir -p "$logs"
table=""
failed=0
row() { # name status note
    table="$table$(printf '%-34s %-5s %s' "$1" "$2" "$3")
"
    [ "$2" = FAIL ] && failed=1
    return 0
}

if [ -f .gpulibs/libs.tar.xz ]; then
    libdir=$(mktemp -d /tmp/edmc-libs.XXXXXX) && tar -C "$libdir" -xJf .gpulibs/libs.tar.xz &&
        LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && export LD_LIBRARY_PATH
fi
export EDMC_CACHE_DIR="$(mktemp -d /tmp/edmc-cache.XXXXXX)"
export srcdir=. CMOCKA_MESSAGE_OUTPUT=TAP

for f in ./edmc ./tests/unit/test_cuda_codegen; do
    [ -x "$f" ] || { echo "tests/gpu/run.sh: $f is missing: build elsewhere and carry it" >&2; exit 1; }
done

echo "== ldd ./edmc"
ldd ./edmc | tee "$logs/ldd.log"
if grep -q "not found" "$logs/ldd.log"; then
    row "ldd ./edmc" FAIL "libraries missing: $(grep 'not found' "$logs/ldd.log" | awk '{print $1}' | tr '\n' ' ')"
elif grep -q "libcuda\.so" "$logs/ldd.log"; then
    row "ldd ./edmc" FAIL "libcuda is linked (it must be dlopen'ed)"
else
    row "ldd ./edmc" ok "libcuda not linked; $(grep -o 'libnvrtc[^ ]*' "$logs/ldd.log" | head -n 1)"
fi

echo "== nvidia-smi"
if nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >"$logs/smi.log" 2>&1; then
    cat "$logs/smi.log"
    row "nvidia-smi" ok "$(tail -n 1 "$logs/smi.log")"
else
    cat "$logs/smi.log"
    row "nvidia-smi" FAIL "no answer"
fi

echo "== edmc forward --device=cuda (probe)"
./edmc forward --device=cuda models/edm2-tiny.edm >"$logs/probe.log" 2>&1
cat "$logs/probe.log"
if grep -q "found" "$logs/probe.log"; then
    row "edmc --device=cuda probe" ok "$(sed -n 's/.*found \([^,]*, sm_[0-9]*\).*/\1/p' "$logs/probe.log")"
else
    row "edmc --device=cuda probe" FAIL "$(head -c 120 "$logs/probe.log")"
fi

echo "== test_cuda_codegen (NVRTC, then CUDA vs CPU)"
t0=$(date +%s)
./tests/unit/test_cuda_codegen >"$logs/codegen.log" 2>&1
status=$?
t1=$(date +%s)
grep -v '^    \|^Remark\|^$' "$logs/codegen.log"
ok=$(grep -c '^ok ' "$logs/codegen.log")
bad=$(grep -c '^not ok ' "$logs/codegen.log")
if [ "$status" -ne 0 ] || [ "$bad" -gt 0 ] || ! grep -q 'test_cuda_vs_cpu' "$logs/codegen.log"; then
    row "test_cuda_codegen" FAIL "$ok ok, $bad not ok, status $status, $((t1 - t0)) s"
else
    row "test_cuda_codegen" ok "$ok cases in $((t1 - t0)) s"
fi
grep '^# edm2-' "$logs/codegen.log" | sed 's/^# //' | while IFS= read -r l; do echo "  nvrtc: $l"; done >"$logs/nvrtc.rows"
grep '^# cuda-vs-cpu' "$logs/codegen.log" | sed 's/^# cuda-vs-cpu //' >"$logs/vs.rows"

echo "== again, with the kernel cache warm"
EDMC_TEST_FILTER='test_cuda_vs_cpu_tiny_forward_f32' ./tests/unit/test_cuda_codegen >"$logs/cached.log" 2>&1
status=$?
cat "$logs/cached.log"
if [ "$status" -ne 0 ] || grep -q '^not ok ' "$logs/cached.log"; then
    row "cached rerun" FAIL "status $status"
else
    row "cached rerun" ok "$(sed -n 's/.*(NVRTC\/cache \([0-9.]* s\)).*/cache read \1/p' "$logs/cached.log")"
fi
row "edmc bench --device=cuda" n/a "not wired yet: per-run times are in the CUDA vs CPU rows"

echo
echo "==================== CUDA checks"
printf '%s' "$table"
[ -s "$logs/nvrtc.rows" ] && cat "$logs/nvrtc.rows"
[ -s "$logs/vs.rows" ] && sed 's/^/  vs cpu: /' "$logs/vs.rows"
[ "$failed" -eq 0 ] && echo "all CUDA checks passed" || echo "SOME CUDA CHECKS FAILED"
exit "$failed"
