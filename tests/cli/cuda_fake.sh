#!/bin/sh
# edmc --device=cuda end to end without a GPU: the CUDA driver and cuBLASLt
# are tests/fakecuda/fake_cuda.so (EDMC_CUDA_DRIVER, EDMC_CUBLASLT).  Kernels
# and GEMMs do not run (results are garbage), but every host-side call is
# checked the way a real driver would refuse it, and more: bounds of every
# copy and GEMM operand, kernel names against the cubin, launch limits,
# capture rules, cuBLASLt shapes, types, batches and alignment, leaks.  Any
# "fake cuda:" / "fake cublasLt:" line on stderr fails the case.  NVRTC is
# real: one cache folder for the whole script keeps it to six compilations.
# Skips (77) when the fake was not built (configured without the toolkit).
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
fake="$builddir/tests/fakecuda/fake_cuda.so"
selftest="$builddir/tests/fakecuda/fake_cuda_selftest"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
if [ ! -f "$fake" ] || [ ! -x "$selftest" ]; then
    echo "# SKIP tests/fakecuda/fake_cuda.so was not built (no CUDA toolkit at configure time)"
    exit 77
fi
case $fake in /*) ;; *) fake="$PWD/$fake" ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- the fake itself refuses what it must (so it cannot accept everything)
# selftest MODE [VAR=VALUE...]: one TAP line per check of tests/fakecuda/selftest.c
selftest() {
    mode=$1; shift
    env "$@" "$selftest" "$fake" "$mode" >"$tmp/self.out" 2>"$tmp/self.err"
    status=$?
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        case $line in
        "ok "*) tap_ok "fake driver: ${line#ok }" ;;
        *) tap_not_ok "fake driver: ${line#not ok }" ;;
        esac
    done <"$tmp/self.out"
    bad=$(grep -vc "^ok " "$tmp/self.out")
    if { [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; } || [ "$n" -eq 0 ] || grep -q "Sanitizer\|runtime error" "$tmp/self.err"; then
        tap_not_ok "fake driver self-test ($mode) exited $status" "$(head -c 800 "$tmp/self.err")"
    fi
}
selftest checks
selftest inject FAKE_CUDA_FAIL=cuMemAlloc_v2:2,cublasLtMatmul,cuGraphLaunch FAKE_CUDA_LEAKS=1
selftest nodevice FAKE_CUDA_NO_DEVICE=1

# --- edmc on the fake
export EDMC_CUDA_DRIVER="$fake" EDMC_CUBLASLT="$fake" EDMC_CACHE_DIR="$tmp/cache"
export FAKE_CUDA_VERBOSE=1 FAKE_CUDA_LEAKS=1
unset FAKE_CUDA_FAIL FAKE_CUDA_NO_DEVICE

# fake_lines FILE: the fake's complaints first, then the rest of the stderr
fake_lines() { { grep "^fake cu" "$1"; grep -v "^fake cu" "$1"; } | head -n 12 | cut -c 1-400; }
complained() { grep -q "^fake cuda: \|^fake cublasLt: \|Sanitizer\|runtime error" "$1"; }

# cuda_run DESC CMD...: exit 0, the fake loaded (its stats line), and no complaint from it
cuda_run() {
    desc=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    if [ "$status" -eq 0 ] && ! complained "$tmp/err" && grep -q "^fake-cuda stats:" "$tmp/err"; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "exit $status, stderr:" "$(fake_lines "$tmp/err")"
    fi
}
# cuda_error DESC STATUS TEXT CMD...: exits STATUS saying TEXT, and the error path
# itself gets no complaint from the fake (bounds, capture state, leaks)
cuda_error() {
    desc=$1 want=$2 text=$3; shift 3
    "$@" >/dev/null 2>"$tmp/err"
    status=$?
    if [ "$status" -eq "$want" ] && grep -qF -- "$text" "$tmp/err" && ! complained "$tmp/err"; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "exit $status (want $want and '$text'), stderr:" "$(fake_lines "$tmp/err")"
    fi
}
# fake_stat KEY: a count from the last run's "fake-cuda stats:" line
fake_stat() { sed -n "s/^fake-cuda stats:.* $1=\([0-9]*\).*/\1/p" "$tmp/err"; }
check_file() { if [ -s "$2" ]; then tap_ok "$1"; else tap_not_ok "$1" "$2 is missing or empty"; fi; }

fwd() { "$edmc" forward "$tiny" --device=cuda --weights="$golden/weights.safetensors" --input="$golden/forward.safetensors" "$@"; }

cuda_run "forward --device=cuda --precision=fp32" fwd --precision=fp32 --output="$tmp/f32.safetensors"
check_file "... writes its output" "$tmp/f32.safetensors"
if [ "$(fake_stat graph_launches)" -ge 1 ] 2>/dev/null && [ "$(fake_stat matmuls_replayed)" -ge 1 ] 2>/dev/null; then
    tap_ok "... through one CUDA Graph with cuBLASLt products in it"
else
    tap_not_ok "... through one CUDA Graph with cuBLASLt products in it" "$(grep "^fake-cuda stats:" "$tmp/err")"
fi
cuda_run "forward --device=cuda --precision=fp16" fwd --precision=fp16 --output="$tmp/f16.safetensors"
check_file "... writes its output" "$tmp/f16.safetensors"
cuda_run "forward --matmul=generated --conv=implicit --no-graph" fwd --matmul=generated --conv=implicit --no-graph \
    --output="$tmp/gen.safetensors"
check_file "... writes its output" "$tmp/gen.safetensors"
if [ "$(fake_stat captures)" = 0 ] && [ "$(fake_stat graph_launches)" = 0 ] && [ "$(fake_stat matmuls)" = 0 ] &&
    [ "$(fake_stat launches)" -ge 1 ] 2>/dev/null; then
    tap_ok "... launch by launch, no capture, no cuBLASLt"
else
    tap_not_ok "... launch by launch, no capture, no cuBLASLt" "$(grep "^fake-cuda stats:" "$tmp/err")"
fi

for mode in forward train sample; do
    cuda_run "bench --device=cuda --mode=$mode" "$edmc" bench "$tiny" --device=cuda --batch=2 --iters=1 --mode="$mode"
done

# the fused training step's device memory is what `edmc info --device=cuda` plans (arena, leaves, Adam's
# state) and the 16 MiB staging buffer, no more: a constant no kernel reads (a fused kernel takes constants
# as literals; zeros padding a slice's gradient took 24 MiB here) gets none; one tile, so no split-K workspace
"$edmc" info "$tiny" --device=cuda --batch=64 --precision=fp16 --json >"$tmp/info64.json" 2>&1
cuda_run "bench --device=cuda --fuse=all --mode=train, batch 64" env EDMC_MMA_TILE=64x64/1 "$edmc" bench "$tiny" \
    --device=cuda --precision=fp16 --fuse=all --batch=64 --iters=1 --mode=train --json
if note=$(/usr/bin/python3 - "$tmp/info64.json" "$tmp/out" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cuda_memory"]
held = json.loads(open(sys.argv[2]).read().splitlines()[-1])["memory_bytes"]
planned = c["arena_bytes_train"] + c["leaf_bytes_train"] + c["optimizer_bytes"] + 16 * 2**20
print(f"{held / 2**20:.2f} MiB held, {planned / 2**20:.2f} MiB planned with the staging buffer")
sys.exit(0 if planned <= held <= planned + 2**20 else 1)
PY
); then
    tap_ok "... holds the memory info plans: $note"
else
    tap_not_ok "... holds the memory info plans" "$note"
fi

cuda_run "step --device=cuda on the golden batch" "$edmc" step "$tiny" --device=cuda \
    --weights="$golden/weights.safetensors" --batch="$golden/train_step.safetensors" --lr=0.01 \
    --output="$tmp/step.safetensors"
check_file "... writes its result" "$tmp/step.safetensors"

cuda_run "generate --device=cuda: 3 seeds at batch 2 (a padded last batch)" "$edmc" generate \
    --net="$golden/weights.safetensors" --model="$tiny" --device=cuda --seeds=0-2 --batch=2 --steps=2 --outdir="$tmp/gen"
for s in 0 1 2; do check_file "... seed $s" "$tmp/gen/seed00000$s.safetensors"; done

# batch 2: the training program bench compiled above
train() { "$edmc" train --model="$tiny" --device=cuda --data=builtin:shapes --batch=2 --rampup=0 --lr=0.01 \
    --outdir="$tmp/train" --status=2 --checkpoint=4 --snapshot=0 "$@"; }
cuda_run "train --device=cuda, 4 images" train --duration=4
check_file "... writes a checkpoint" "$tmp/train/training-state-000000000004.safetensors"
cuda_run "train --device=cuda --resume to 8 images" train --duration=8 --resume
check_file "... writes the next checkpoint" "$tmp/train/training-state-000000000008.safetensors"
# snapshots (at least 1000 images apart) read the EMAs the device keeps
cuda_run "train --device=cuda with EMA snapshots" "$edmc" train --model="$tiny" --device=cuda --data=builtin:shapes \
    --batch=2 --rampup=0 --lr=0.01 --outdir="$tmp/snap" --status=1000 --snapshot=1000 --duration=1000
check_file "... writes the EMA snapshots" "$tmp/snap/network-snapshot-0000001-0.100.safetensors"

# --- failures: one clear error naming the call, exit 1, and a clean error path
unset FAKE_CUDA_VERBOSE
cuda_error "a failing cuMemAlloc is named" 1 "cuMemAlloc" env FAKE_CUDA_FAIL=cuMemAlloc_v2 \
    "$edmc" forward "$tiny" --device=cuda --precision=fp32 --weights="$golden/weights.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/x.safetensors"
cuda_error "a failing cublasLtMatmul is named" 1 "cublasLtMatmul" env FAKE_CUDA_FAIL=cublasLtMatmul \
    "$edmc" forward "$tiny" --device=cuda --precision=fp32 --weights="$golden/weights.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/x.safetensors"
cuda_error "a failing cuGraphLaunch is named" 1 "cuGraphLaunch" env FAKE_CUDA_FAIL=cuGraphLaunch \
    "$edmc" forward "$tiny" --device=cuda --precision=fp32 --weights="$golden/weights.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/x.safetensors"
cuda_error "a failing launch in training is named" 1 "cuLaunchKernel" env FAKE_CUDA_FAIL=cuLaunchKernel:100 \
    "$edmc" step "$tiny" --device=cuda --weights="$golden/weights.safetensors" \
    --batch="$golden/train_step.safetensors" --lr=0.01 --output="$tmp/x.safetensors"
cuda_error "no device" 1 "no CUDA device" env FAKE_CUDA_NO_DEVICE=1 \
    "$edmc" bench "$tiny" --device=cuda --batch=2 --iters=1
cuda_error "no driver" 1 "no CUDA driver" env EDMC_CUDA_DRIVER=/nonexistent.so \
    "$edmc" bench "$tiny" --device=cuda --batch=2 --iters=1
tap_done
