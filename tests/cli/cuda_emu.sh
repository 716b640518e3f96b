#!/bin/sh
# The generated CUDA kernels, run on the CPU: edmc --device=cuda over the
# emulating driver tests/emu/cuda_emu.so (docs/cuda.md, "Running the kernels
# without a GPU").  Every kernel is compiled from its CUDA C by g++ with
# tests/emu/cuda_emu.h and executed block by block (threads as fibers switched
# at __syncthreads); cuBLASLt products are computed; CUDA Graphs replay what
# they captured.  The fake driver's checks stay on: any "fake cuda:" /
# "fake cublasLt:" line fails the case.  First, the emulator's f16/bf16
# conversions against references (tests/emu/cvt_check.cpp) and its
# tensor-core product against the PTX ISA's fragment layout
# (tests/emu/mma_check.cpp).
#   (a) tests/unit/test_backend_ops with EDMC_TEST_DEVICE=cuda: every op forward
#       and backward against the CPU in f64; fp32 (cuBLASLt and generated
#       GEMMs), fp16 and bf16 (cuBLASLt; fp16 also the generated tensor-core
#       GEMMs), fused plans in fp32, fp16 and bf16 (tensor-core contractions)
#   (b) golden vectors (../shared/testdata/edm2-tiny) through the command line:
#       forward fp32 (1e-4) and fp16 (1e-2), one training step, the 8-step
#       sampler with and without guidance (1e-3)
#   (c) a short training run, CPU against CUDA fp32 (unfused and --fuse=all): the
#       loss of every status line
# Fused plans (--fuse=all) are checked in (a), (b) and (c) too.
# The compiled modules are kept in $builddir/tests/emu-cache, or
# $EDMC_TEST_KERNEL_CACHE (.ci/run: one folder for both of its runs), keyed by
# source, header and flags, so only the first run compiles.  Skips (77) when the
# emulator was not built (configured without the CUDA toolkit) or g++ is missing.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
emu="$builddir/tests/emu/cuda_emu.so"
ops="$builddir/tests/unit/test_backend_ops"
st_diff="$builddir/tests/tools/st_diff"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
if [ ! -f "$emu" ]; then
    echo "# SKIP tests/emu/cuda_emu.so was not built (no CUDA toolkit at configure time)"
    exit 77
fi
if ! command -v "${EDMC_EMU_CXX:-g++}" >/dev/null 2>&1; then
    echo "# SKIP no ${EDMC_EMU_CXX:-g++} to compile the kernels with"
    exit 77
fi
case $emu in /*) ;; *) emu="$PWD/$emu" ;; esac
cache="${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}"
case $cache in /*) ;; *) cache="$PWD/$cache" ;; esac
mkdir -p "$cache" || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache" FAKE_CUDA_LEAKS=1 FAKE_CUDA_VERBOSE=1
unset FAKE_CUDA_FAIL FAKE_CUDA_NO_DEVICE FAKE_CUDA_COMPUTE

complained() { grep -q "^fake cuda: \|^fake cublasLt: \|Sanitizer\|runtime error" "$1"; }
why() { { grep "^fake cu" "$1"; grep -v "^fake cu" "$1"; } | head -n 12 | cut -c 1-400; }
kernels_run() { sed -n 's/^fake-cuda stats:.* kernels_run=\([0-9]*\).*/\1/p' "$1" | tail -n 1; }

# host_check NAME LABEL WANT [INCLUDE-DIR]: compiles tests/emu/NAME.cpp with the emulator's header
# and runs it; each "ok N - ..." / "not ok N - ..." line of its becomes a case
# (LABEL: ...), and it must print WANT "ok" lines
host_check() {
    if "${EDMC_EMU_CXX:-g++}" -std=c++17 -O2 -ffp-contract=off -w -include "$srcdir/tests/emu/cuda_emu.h" \
        ${4:+-I"$4"} -o "$tmp/$1" "$srcdir/tests/emu/$1.cpp" 2>"$tmp/$1.err"; then
        "$tmp/$1" >"$tmp/$1.out" 2>&1
        while IFS= read -r line; do
            case $line in
            "ok "*) tap_ok "$2: ${line#ok [0-9]* - }" ;;
            "not ok "*) tap_not_ok "$2: ${line#not ok [0-9]* - }" ;;
            esac
        done <"$tmp/$1.out"
        [ "$(grep -c "^ok " "$tmp/$1.out")" -eq "$3" ] || tap_not_ok "$2: $1 printed fewer than $3 ok lines" \
            "$(head -n 5 "$tmp/$1.out")"
    else
        tap_not_ok "$2: $1 does not compile" "$(head -n 10 "$tmp/$1.err")"
    fi
}
# the emulator's f16/bf16 conversions round as cvt.rn does
host_check cvt_check conversions 3
# the emulator's tensor-core product against the PTX ISA's fragment layout
host_check mma_check "tensor cores" 2
# the GPU's fragment loads (ldmatrix, its lanes' row offsets) against the word-by-word ones, on the
# preamble of a generated module
mkdir -p "$tmp/ldsm"
"$edmc" dump "$tiny" --stage=cuda --fuse=all --batch=1 --precision=fp16 2>"$tmp/ldsm/err" |
    sed -n '/^#define EDM_LDMATRIX/,/^static __device__ __forceinline__ unsigned edm_mma_pack_f16/p' |
    sed '$d' >"$tmp/ldsm/preamble.inc"
if grep -q "edm_ldsm_a_offset" "$tmp/ldsm/preamble.inc"; then
    host_check ldsm_check "fragment loads" 2 "$tmp/ldsm"
else
    tap_not_ok "fragment loads: no ldmatrix preamble in the generated module" "$(head -n 5 "$tmp/ldsm/err")"
fi

# --- (a) op by op: one line per configuration
# ops_case DESC PRECISION GEMM FILTER [VAR=VALUE]
ops_case() {
    env EDMC_TEST_DEVICE=cuda EDMC_TEST_PRECISION="$2" EDMC_TEST_GEMM="$3" ${4:+EDMC_TEST_FILTER="$4"} ${5:+"$5"} \
        "$ops" >"$tmp/ops.out" 2>&1
    status=$?
    n=$(grep -c "^ok " "$tmp/ops.out")
    if [ "$status" -eq 0 ] && [ "$n" -ge 1 ] && ! grep -q "^not ok " "$tmp/ops.out" && ! complained "$tmp/ops.out" &&
        [ "$(kernels_run "$tmp/ops.out")" -gt 0 ] 2>/dev/null; then
        tap_ok "$1: $n ops forward and backward within tolerance ($(grep -c '^# op ' "$tmp/ops.out") cases)"
    else
        tap_not_ok "$1 (exit $status)" "$(grep "FAILED\|^not ok\|^fake cu\|no CUDA" "$tmp/ops.out" | head -n 12)"
    fi
}
ops_case "ops on the emulator, fp32, cuBLASLt + im2col" fp32 library ""
ops_case "ops on the emulator, fp32, generated GEMMs" fp32 generated ""
ops_case "ops on the emulator, fp16" fp16 library ""
ops_case "ops on the emulator, bf16" bf16 library ""
ops_case "ops on the emulator, fp16, generated GEMMs (tensor-core)" fp16 generated ""
ops_case "ops on the emulator, fp32, fused plans" fp32 fused ""
ops_case "ops on the emulator, fp16, fused plans (tensor-core contractions)" fp16 fused ""
ops_case "ops on the emulator, bf16, fused plans (tensor-core contractions)" bf16 fused ""
# the fragments word by word (EDMC_LDMATRIX=off, the GPU script's ablation): every case above
# with tensor cores ran ldmatrix as the emulator models it, at the addresses the GPU is given
ops_case "ops on the emulator, fp16, fused plans, fragments without ldmatrix" fp16 fused "" EDMC_LDMATRIX=off
# the weights' k tiles through registers (EDMC_CP_ASYNC=off, the GPU script's ablation): the cases
# above copied them by cp.async, which the emulator lands at the wait
ops_case "ops on the emulator, fp16, fused plans, weight tiles without cp.async" fp16 fused "test_op_conv2d*" \
    EDMC_CP_ASYNC=off
# the weight gradients' dy a pair at a time (EDMC_WIDE_LOADS=off, the GPU script's ablation): the cases
# above whose pixels fill whole k tiles read it eight elements a load
ops_case "ops on the emulator, fp16, fused plans, weight gradients without wide loads" fp16 fused \
    "test_op_conv2d_bwd_weight*" EDMC_WIDE_LOADS=off
# the 64-bit index arithmetic of values over 2^30 elements, forced on the same cases
ops_case "ops on the emulator, fp16, fused plans, 64-bit indices" fp16 fused "" EDMC_INDEX_BITS=64
ops_case "ops on the emulator, fp32, generated GEMMs, 64-bit indices" fp32 generated "" EDMC_INDEX_BITS=64

# every tensor-core tile shape, split-K with uneven ranges, edge tiles (the op cases are far
# smaller than a tile): the contractions' cases with the tile forced (EDMC_MMA_TILE)
tile_case() { # TILE PRECISION
    all=0 n=0 bad=""
    for f in "test_op_conv2d*" "test_op_matmul"; do
        env EDMC_MMA_TILE="$1" EDMC_TEST_DEVICE=cuda EDMC_TEST_PRECISION="$2" EDMC_TEST_GEMM=fused \
            EDMC_TEST_FILTER="$f" "$ops" >"$tmp/tile.out" 2>&1
        st=$?
        n=$((n + $(grep -c "^ok " "$tmp/tile.out")))
        all=$((all + $(grep -c '^# op ' "$tmp/tile.out")))
        if [ "$st" -ne 0 ] || grep -q "^not ok " "$tmp/tile.out" || complained "$tmp/tile.out"; then
            bad="$bad$(grep "FAILED\|^not ok\|^fake cu\|error" "$tmp/tile.out" | head -n 6)"
        fi
    done
    if [ -z "$bad" ] && [ "$n" -ge 4 ]; then
        tap_ok "tensor-core tile $1, $2: $n contraction ops forward and backward within tolerance ($all cases)"
    else
        tap_not_ok "tensor-core tile $1, $2" "$bad"
    fi
}
tile_case 128x128/3 fp16
tile_case 64x128/2 bf16
tile_case 128x64 fp16
# without split-K, so that the convolutions whose tiles are whole rows read x through a halo tile
# (cuda_gemm_mma.h), one of them with 65 KB of stages (past the default 48 KiB of shared memory)
tile_case 64x64/1 fp16
tile_case 64x128/1 bf16

# bench --profile: every kernel of the fused plan timed by events, the slowest listed, the JSON intact
"$edmc" bench "$tiny" --device=cuda --precision=fp16 --fuse=all --batch=2 --iters=1 --profile --json >"$tmp/prof.out" 2>"$tmp/prof.err"
pk=$(sed -n 's/^profile: \([0-9]*\) kernels.*/\1/p' "$tmp/prof.err")
# and the tensor-core contractions' share and rate, each listed contraction's rate (2·gm·gn·gk·gb a launch)
if [ "$pk" -gt 0 ] 2>/dev/null && [ "$(grep -c '^ *[0-9.]* ms .*%  [sg][0-9]*_' "$tmp/prof.err")" -ge 10 ] &&
    grep -q '"img_per_s"' "$tmp/prof.out" && grep -q '"tflop_s": [0-9]' "$tmp/prof.out" &&
    grep -q '^profile: the tensor-core contractions [0-9.]* ms ([0-9.]*%), [0-9.]* TFLOP/s$' "$tmp/prof.err" &&
    grep -q ', tile [0-9x/@]*, [0-9.]* TFLOP/s)$' "$tmp/prof.err" && ! complained "$tmp/prof.err"; then
    tap_ok "bench --profile: $pk kernels timed, the slowest listed, the contractions' TFLOP/s"
else
    tap_not_ok "bench --profile" "$(why "$tmp/prof.err")"
fi

# --- (b) golden vectors through the command line
# emu_run DESC CMD...: exit 0, kernels ran, no complaint
emu_run() {
    desc=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    if [ "$status" -eq 0 ] && ! complained "$tmp/err" && [ "$(kernels_run "$tmp/err")" -gt 0 ] 2>/dev/null; then
        return 0
    fi
    tap_not_ok "$desc" "exit $status, stderr:" "$(why "$tmp/err")"
    return 1
}
# golden DESC OUT REF TOL [PREFIX]
golden() {
    if d=$("$st_diff" "$2" "$3" "$4" ${5:+"$5"} 2>&1); then
        tap_ok "$1: $(printf '%s' "$d" | head -n 1)"
    else
        tap_not_ok "$1" "$d"
    fi
}
o=$tmp/golden
mkdir -p "$o"
fwd() { "$edmc" forward "$tiny" --device=cuda --weights="$golden/weights.safetensors" --input="$golden/forward.safetensors" "$@"; }
emu_run "golden forward fp32" fwd --precision=fp32 --output="$o/fwd32.safetensors" &&
    golden "golden forward fp32 (1e-4)" "$o/fwd32.safetensors" "$golden/forward.safetensors" 1e-4
emu_run "golden forward fp16" fwd --precision=fp16 --output="$o/fwd16.safetensors" &&
    golden "golden forward fp16 (1e-2)" "$o/fwd16.safetensors" "$golden/forward.safetensors" 1e-2
# the fused plan: one generated kernel per group, prologues and epilogues inside the contractions
fused_kernels() { sed -n 's/.*fused plan (--fuse=all, \([0-9]*\) kernels.*/\1/p' "$tmp/err" | head -n 1; }
if emu_run "golden forward fp32, --fuse=all" fwd --precision=fp32 --fuse=all --output="$o/fwdf32.safetensors"; then
    k=$(fused_kernels)
    if [ "$(kernels_run "$tmp/err")" = "$k" ] 2>/dev/null; then
        tap_ok "fused forward: $k kernels launched, one per plan group"
    else
        tap_not_ok "fused forward: kernels launched" "launched $(kernels_run "$tmp/err"), the plan has ${k:-?} groups"
    fi
    golden "golden forward fp32, --fuse=all (1e-4)" "$o/fwdf32.safetensors" "$golden/forward.safetensors" 1e-4
fi
emu_run "golden forward fp16, --fuse=all" fwd --precision=fp16 --fuse=all --output="$o/fwdf16.safetensors" &&
    golden "golden forward fp16, --fuse=all (1e-2)" "$o/fwdf16.safetensors" "$golden/forward.safetensors" 1e-2
# bench --tune (cli/bench_tune.h): every tensor-core contraction timed as it stands and on the candidate
# tiles (here 128x128), the fastest of each into the table $EDMC_TILES names, one line a contraction
tiles=$tmp/tiles.txt
env EDMC_TILES="$tiles" EDMC_TUNE_TILES=128x128 "$edmc" bench "$tiny" --device=cuda --precision=fp16 --fuse=all \
    --batch=3 --iters=1 --tune >"$tmp/tune.out" 2>"$tmp/tune.err"
nt=$(sed -n 's/^tune: \([0-9]*\) contractions, each on 2 tilings.*/\1/p' "$tmp/tune.err")
lines=$(grep -c '^[a-z0-9_]* [0-9]*x[0-9]*x[0-9]* [0-9]* [0-9]* [0-9]*x[0-9]*/[0-9]* [0-9.e+-]*$' "$tiles" 2>/dev/null)
if [ "$nt" -gt 0 ] 2>/dev/null && [ "$lines" -eq "$nt" ] && grep -q "images/s" "$tmp/tune.out" &&
    ! complained "$tmp/tune.err"; then
    tap_ok "bench --tune: $nt contractions timed on 2 tilings each, the table written ($lines lines)"
else
    tap_not_ok "bench --tune" "contractions $nt, table lines $lines" "$(why "$tmp/tune.err")"
fi
# the table with every contraction on 128x128 tiles one block an SM ("@1"): the executor runs them there
# (--profile names each contraction's tile) and the golden forward holds
sed 's#^\([a-z0-9_]* [0-9x]* [0-9]* [0-9]*\) [0-9x/]*#\1 128x128/1@1#' "$tiles" >"$tmp/tiles128.txt"
if emu_run "golden forward fp16, --fuse=all, the table's tiles" env EDMC_TILES="$tmp/tiles128.txt" "$edmc" forward \
    "$tiny" --device=cuda --weights="$golden/weights.safetensors" --input="$golden/forward.safetensors" \
    --precision=fp16 --fuse=all --output="$o/fwdtiled.safetensors"; then
    golden "golden forward fp16, --fuse=all, every contraction on the table's 128x128@1 tiles (1e-2)" \
        "$o/fwdtiled.safetensors" "$golden/forward.safetensors" 1e-2
fi
env EDMC_TILES="$tmp/tiles128.txt" "$edmc" bench "$tiny" --device=cuda --precision=fp16 --fuse=all --batch=3 \
    --iters=1 --profile >"$tmp/tprof.out" 2>"$tmp/tprof.err"
t128=$(grep -c ', tile 128x128/1@1, [0-9.]* TFLOP/s)$' "$tmp/tprof.err")
tother=$(grep -c ', tile [0-9]*x[0-9]*/[0-9]*\(@1\)\{0,1\}, [0-9.]* TFLOP/s)$' "$tmp/tprof.err")
if [ "$t128" -gt 0 ] && [ "$t128" -eq "$tother" ] && ! complained "$tmp/tprof.err"; then
    tap_ok "bench --profile with EDMC_TILES: the $t128 contractions listed run on the table's tiles"
else
    tap_not_ok "EDMC_TILES in the executor" "128x128@1: $t128 of $tother listed contractions" "$(why "$tmp/tprof.err")"
fi
# bench --tune checks its settings, and where its table goes, before it runs anything
for bad in "EDMC_CACHE_DIR=off EDMC_TILES=|--tune: nowhere to keep the measured tiles" \
    "EDMC_TUNE_TILES=64x64,96x64|EDMC_TUNE_TILES: '96x64': expected BMxBN"; do
    # shellcheck disable=SC2086
    if env ${bad%%|*} "$edmc" bench "$tiny" --device=cuda --precision=fp16 --fuse=all --batch=3 --iters=1 --tune \
        >"$tmp/bt.out" 2>"$tmp/bt.err"; then
        tap_not_ok "bench --tune, ${bad%%|*}" "exit 0"
    elif grep -qF -e "${bad#*|}" "$tmp/bt.err" && ! grep -q "^tune:" "$tmp/bt.err" && ! complained "$tmp/bt.err"; then
        tap_ok "bench --tune, ${bad%%|*}: stops before its runs (${bad#*|})"
    else
        tap_not_ok "bench --tune, ${bad%%|*}" "$(why "$tmp/bt.err")"
    fi
done
printf 'matmul 2x64\n' >"$tmp/badtiles.txt"
if env EDMC_TILES="$tmp/badtiles.txt" "$edmc" bench "$tiny" --device=cuda --precision=fp16 --fuse=all --batch=3 \
    --iters=1 >"$tmp/bt.out" 2>"$tmp/bt.err"; then
    tap_not_ok "EDMC_TILES malformed: the executor" "exit 0"
elif grep -q "badtiles.txt:1: expected OP" "$tmp/bt.err" && ! complained "$tmp/bt.err"; then
    tap_ok "EDMC_TILES malformed: the executor stops with the table's path and line"
else
    tap_not_ok "EDMC_TILES malformed: the executor" "$(why "$tmp/bt.err")"
fi
emu_run "golden forward bf16, --fuse=all" fwd --precision=bf16 --fuse=all --output="$o/fwdfb16.safetensors" &&
    golden "golden forward bf16, --fuse=all (5e-2)" "$o/fwdfb16.safetensors" "$golden/forward.safetensors" 5e-2
if emu_run "golden training step fp32, --fuse=all" "$edmc" step "$tiny" --device=cuda --precision=fp32 --fuse=all \
    --weights="$golden/weights.safetensors" --batch="$golden/train_step.safetensors" --lr=0.01 \
    --output="$o/stepf.safetensors"; then
    golden "golden step, --fuse=all: loss (1e-4)" "$o/stepf.safetensors" "$golden/train_step.safetensors" 1e-4 loss
    golden "golden step, --fuse=all: gradients (1e-3)" "$o/stepf.safetensors" "$golden/train_step.safetensors" 1e-3 grad.
    golden "golden step, --fuse=all: Adam step (1e-3)" "$o/stepf.safetensors" "$golden/train_step.safetensors" 1e-3 step1.
fi
# fp16 on tensor cores: the training step's contractions as mma.sync kernels, its weight gradients split-K
if emu_run "golden training step fp16, --fuse=all (tensor cores)" "$edmc" step "$tiny" --device=cuda --precision=fp16 \
    --fuse=all --weights="$golden/weights.safetensors" --batch="$golden/train_step.safetensors" --lr=0.01 \
    --output="$o/stepf16.safetensors"; then
    golden "golden step fp16, --fuse=all: loss (1e-2)" "$o/stepf16.safetensors" "$golden/train_step.safetensors" 1e-2 loss
    golden "golden step fp16, --fuse=all: gradients (5e-2)" "$o/stepf16.safetensors" "$golden/train_step.safetensors" 5e-2 grad.
    golden "golden step fp16, --fuse=all: Adam step (1e-2)" "$o/stepf16.safetensors" "$golden/train_step.safetensors" 1e-2 step1.
fi
if emu_run "golden training step fp32" "$edmc" step "$tiny" --device=cuda --precision=fp32 \
    --weights="$golden/weights.safetensors" --batch="$golden/train_step.safetensors" --lr=0.01 \
    --output="$o/step.safetensors"; then
    golden "golden step: loss (1e-4)" "$o/step.safetensors" "$golden/train_step.safetensors" 1e-4 loss
    golden "golden step: forced weight normalization (1e-4)" "$o/step.safetensors" "$golden/train_step.safetensors" 1e-4 normalized.
    golden "golden step: gradients (1e-3)" "$o/step.safetensors" "$golden/train_step.safetensors" 1e-3 grad.
    golden "golden step: Adam step (1e-3)" "$o/step.safetensors" "$golden/train_step.safetensors" 1e-3 step1.
fi
# the sampler with generated GEMMs (the cuBLASLt path is covered above; this keeps it quick)
gen() { "$edmc" generate --device=cuda --precision=fp32 --matmul=generated --conv=implicit \
    --net="$golden/weights.safetensors" --model="$tiny" --noise="$golden/sample.safetensors" --steps=8 "$@"; }
emu_run "golden sample, 8 steps" gen --save-raw="$o/sample.safetensors" &&
    golden "golden sample, 8 steps (1e-3)" "$o/sample.safetensors" "$golden/sample.safetensors" 1e-3
if emu_run "golden sample, 8 steps, --fuse=all" "$edmc" generate --device=cuda --precision=fp32 --fuse=all \
    --net="$golden/weights.safetensors" --model="$tiny" --noise="$golden/sample.safetensors" --steps=8 \
    --save-raw="$o/samplef.safetensors"; then
    golden "golden sample, 8 steps, --fuse=all (1e-3)" "$o/samplef.safetensors" "$golden/sample.safetensors" 1e-3
    # 15 evaluations (8 Heun steps), one set of weights: the weights groups run in the first only
    "$edmc" dump "$tiny" --stage=fused >"$tmp/plan.txt" 2>&1
    k=$(sed -n 's/^plan fuse=all: \([0-9]*\) kernels.*/\1/p' "$tmp/plan.txt")
    w=$(grep -c '^kernel [0-9]* weights' "$tmp/plan.txt")
    want=$((k + 14 * (k - w)))
    if [ "$w" -gt 0 ] && [ "$(kernels_run "$tmp/err")" = "$want" ]; then
        tap_ok "sample --fuse=all: $want kernels for 15 evaluations, the $w weights groups in the first only"
    else
        tap_not_ok "sample --fuse=all: kernels launched" "$(kernels_run "$tmp/err"), want $want ($k groups, $w weights)"
    fi
fi
if command -v python3 >/dev/null 2>&1; then
    # st_diff compares by name: a copy of the golden file whose sample_guided is called sample
    python3 -c '
import json, struct, sys
src, dst = sys.argv[1:3]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["sample_unguided"] = h.pop("sample")
h["sample"] = h.pop("sample_guided")
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
' "$golden/sample.safetensors" "$o/golden-guided.safetensors" &&
        emu_run "golden sample with guidance 2" gen --guide="$golden/guide_weights.safetensors" --guide-model="$tiny" \
            --guidance=2 --save-raw="$o/guided.safetensors" &&
        golden "golden sample with guidance 2 (1e-3)" "$o/guided.safetensors" "$o/golden-guided.safetensors" 1e-3
else
    tap_ok "golden sample with guidance # SKIP no python3 to rename the golden tensor"
fi

# --- (c) training: CPU against CUDA fp32, 64 images at batch 8, the loss every 16
train_args="--model=$tiny --data=builtin:shapes16 --batch=8 --duration=64 --status=16 --seed=1 --rampup=0.01 --snapshot=0 --checkpoint=0"
# field(s, key): the text of key's value in one stats.jsonl line ("x" without it), for awk
awk_field='function field(s, key,   i, r) { i = index(s, "\"" key "\":"); if (i == 0) return "x"; r = substr(s, i + length(key) + 3); sub(/[,}].*/, "", r); return r }'
# loss_note EMU CPU: the status lines' losses within 1e-4 (relative)
loss_note() {
    awk -v rtol=1e-4 "$awk_field"'
        function loss(s) { return field(s, "loss") }
        NR == FNR { a[FNR] = loss($0); na = FNR; next }
        { b[FNR] = loss($0); nb = FNR }
        END {
            bad = (na != nb || na < 2); worst = 0
            for (i = 1; i <= na && i <= nb; i++) {
                if (a[i] !~ /^-?[0-9]/ || b[i] !~ /^-?[0-9]/) { bad = 1; continue }
                d = a[i] - b[i]; if (d < 0) d = -d
                m = b[i] < 0 ? -b[i] : b[i]; r = m > 0 ? d / m : d
                if (r > worst) worst = r
                if (r > rtol) bad = 1
            }
            printf "%d/%d status lines, worst relative difference %.2g (tol %g)", na, nb, worst, rtol
            exit bad
        }' "$1" "$2"
}
# shellcheck disable=SC2086
if "$edmc" train $train_args --device=cpu --threads=1 --outdir="$tmp/train-cpu" >/dev/null 2>"$tmp/cpu.err"; then
    for fuse in none all; do
        # shellcheck disable=SC2086
        if emu_run "training on the emulator, --fuse=$fuse" "$edmc" train $train_args --device=cuda --precision=fp32 \
            --fuse=$fuse --outdir="$tmp/train-emu-$fuse"; then
            if note=$(loss_note "$tmp/train-emu-$fuse/stats.jsonl" "$tmp/train-cpu/stats.jsonl"); then
                tap_ok "training loss, CUDA fp32 --fuse=$fuse on the emulator against the CPU: $note"
            else
                tap_not_ok "training loss, CUDA fp32 --fuse=$fuse on the emulator against the CPU" "$note"
            fi
        fi
    done
else
    tap_not_ok "training on the CPU (the baseline)" "$(head -n 5 "$tmp/cpu.err")"
fi
# two passes a step (--batch-gpu): the device's f32 accumulators, which a
# step of one pass (above) does without
# shellcheck disable=SC2086
if "$edmc" train $train_args --batch-gpu=4 --device=cpu --threads=1 --outdir="$tmp/train-cpu-acc" >/dev/null \
    2>"$tmp/cpu-acc.err"; then
    # shellcheck disable=SC2086
    if emu_run "training on the emulator, --batch-gpu=4 --fuse=all" "$edmc" train $train_args --batch-gpu=4 \
        --device=cuda --precision=fp32 --fuse=all --outdir="$tmp/train-emu-acc"; then
        if note=$(loss_note "$tmp/train-emu-acc/stats.jsonl" "$tmp/train-cpu-acc/stats.jsonl"); then
            tap_ok "training loss, CUDA fp32 in two passes a step on the emulator against the CPU: $note"
        else
            tap_not_ok "training loss, CUDA fp32 in two passes a step on the emulator against the CPU" "$note"
        fi
    fi
else
    tap_not_ok "training on the CPU in two passes a step (the baseline)" "$(head -n 5 "$tmp/cpu-acc.err")"
fi
# ... and their memory: one pass of 4 a step binds the same arena as those two
# passes of 4, without the accumulators (4 bytes per parameter, each 256-aligned)
one_args="--model=$tiny --data=builtin:shapes16 --batch=4 --duration=16 --status=16 --seed=1 --rampup=0.01 --snapshot=0 --checkpoint=0"
# shellcheck disable=SC2086
if [ -f "$tmp/train-emu-acc/stats.jsonl" ] &&
    emu_run "training on the emulator, one pass of 4 a step" "$edmc" train $one_args --device=cuda --precision=fp32 \
        --fuse=all --outdir="$tmp/train-emu-one"; then
    params=$("$edmc" info "$tiny" -D label_dim=3 --json 2>/dev/null | sed -n 's/^ *"params": *\([0-9]*\),*$/\1/p')
    if note=$(awk -v p="$params" "$awk_field"'
        function mem(s,   r) { r = field(s, "mem_mib"); return r == "x" ? -1 : r + 0 }
        NR == FNR { if (FNR == 1) acc = mem($0); next }
        FNR == 1 { one = mem($0) }
        END {
            want = 4 * p / 1048576; d = acc - one
            printf "%.3f MiB more with them, %d parameters: %.3f MiB", d, p, want
            exit !(p > 0 && acc > 0 && one > 0 && d >= want && d <= want + 59 * 256 / 1048576)
        }' "$tmp/train-emu-acc/stats.jsonl" "$tmp/train-emu-one/stats.jsonl"); then
        tap_ok "a step of one pass holds no gradient accumulators: $note"
    else
        tap_not_ok "a step of one pass holds no gradient accumulators" "$note"
    fi
fi
tap_done
