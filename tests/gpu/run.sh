#!/bin/sh
# The CUDA checks and benchmarks for a lent GPU machine: ONE prepared script,
# run from the repository root over a tree BUILT ELSEWHERE (it builds nothing;
# see docs/cuda.md, "Running the GPU script", for what to carry):
#
#   sh tests/gpu/run.sh          (logs and table.md under $OUT/gpu-logs)
#
#   1. ldd: libcuda must NOT be linked (it is dlopen'ed), nothing "not found"
#   2. nvidia-smi: name, driver, memory, compute capability
#   3. tests/unit/test_backend_ops, every op forward and backward against the
#      CPU in f64, with CUDA storage fp32, fp16 and bf16, and the fused plans'
#      kernels in fp16 and bf16 (their contractions on tensor cores: mma.sync)
#   4. tests/unit/test_cuda_codegen: NVRTC compiles of whole programs, then
#      CUDA vs CPU on every value
#   5. golden parity through the command line (../shared/testdata/edm2-tiny):
#      forward fp32 and fp16 (unfused, and fp16 fused on tensor cores), one
#      training step (fp32), the 8-step sampler with and without guidance
#   6. a short training run (edm2-tiny, 2 Ki images) on the CPU and on CUDA
#      (fp32 and fp16): the loss columns of stats.jsonl must agree; with
#      two GPUs or more, mpirun and libnccl.so.2 on the machine, the fp32 run
#      again as one rank per GPU over NCCL (overlapped buckets): its losses
#      must follow the single process's (the fp32 tolerance: NCCL sums the
#      ranks' parts in its own order); one GPU: skipped, and said so
#   7. benchmarks, fp16, batch 128: edmc bench --fuse=all (tensor-core
#      contractions; --profile: the slowest kernels of one more run) beside
#      scripts/bench_torch_gpu.py (xs and s, forward and train; then sampling,
#      a whole 32-step Heun run; then edmc in bf16 beside PyTorch's fp16), and xs
#      forward ablations (unfused, CUDA cores, no CUDA Graph, the convolutions' k order, the
#      fragments without ldmatrix, each fusion rule off alone, the tiles measured by bench
#      --tune: while the budget lasts)
#
# Steps 3-6 (correctness) run side by side (parallel processes; the GPU is
# shared, nothing there is timed) while the benchmarks' programs are compiled
# into the kernel cache; then the benchmarks run one at a time.
# Every step runs under `timeout`, clipped to a time budget, and a failing step
# never stops the others.  The table comes LAST; exit status 1 when anything
# failed.
#
# Environment (all optional):
#   OUT               where logs go ($OUT/gpu-logs; default /tmp)
#   EDMC_TESTDATA     the golden vectors: DIR/edm2-tiny or DIR itself (default:
#                     ../shared/testdata, shared/testdata, .gpulibs/testdata)
#   EDMC_CACHE_DIR    the NVRTC kernel cache (default .gpulibs/kernel-cache when
#                     carried, else a fresh temporary folder)
#   GPU_BUDGET_S      seconds after which no step is started and every running
#                     step is cut (default 500); GPU_PHASE1_S: the same for the
#                     correctness steps (default 240)
#   GPU_PARALLEL=0    run the correctness steps one after another
#   GPU_SAVE_CACHE=1  copy the kernel cache to $OUT/kernel-cache at the end
#   PYTHON            the Python with torch (default: the first of python3,
#                     /usr/bin/python3, python that imports torch)
# shellcheck disable=SC2317  # the step functions are called through spawn
set -u
cd "$(dirname "$0")/../.." || exit 1
logs=${OUT:-/tmp}/gpu-logs
mkdir -p "$logs" || exit 1
work=$(mktemp -d /tmp/edmc-gpu.XXXXXX) || exit 1
T0=$(date +%s)
budget=${GPU_BUDGET_S:-500}
phase1=${GPU_PHASE1_S:-240}
table=""
failed=0
: >"$logs/checks.tsv"
row() { # name status note
    table="$table$(printf '%-34s %-5s %s' "$1" "$2" "$3")
"
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$logs/checks.tsv"
    [ "$2" = FAIL ] && failed=1
    return 0
}

# ------------------------------------------------------------------ helpers
# clip LIMIT: LIMIT, or the seconds left before $deadline when fewer
clip() {
    _left=$((deadline - $(date +%s)))
    if [ "$_left" -lt "$1" ]; then echo "$_left"; else echo "$1"; fi
}

# run_step NAME LIMIT CMD...: CMD under timeout (clipped to the deadline), its
# output in $logs/NAME.log, "status seconds" in $logs/NAME.rc; status 200: not
# started (out of time).  Returns CMD's status.
run_step() {
    _n=$1
    _l=$(clip "$2")
    shift 2
    printf '$ %s\n' "$*" >"$logs/$_n.log"
    if [ "$_l" -lt 5 ]; then
        echo "not run: out of time (GPU_BUDGET_S=$budget)" >>"$logs/$_n.log"
        echo "200 0" >"$logs/$_n.rc"
        return 200
    fi
    _t=$(date +%s)
    timeout -k 5 "$_l" "$@" >>"$logs/$_n.log" 2>&1
    _r=$?
    echo "$_r $(($(date +%s) - _t))" >"$logs/$_n.rc"
    return "$_r"
}

# spawn FUNCTION: in the background (parallel), else now.  OpenMP threads
# sleep when idle: a dozen processes share the cores, spinning would starve them.
pids=""
spawn() {
    if [ "$parallel" -eq 1 ]; then
        (OMP_WAIT_POLICY=PASSIVE && export OMP_WAIT_POLICY && "$1") &
        pids="$pids $!"
    else
        "$1"
    fi
}

st() { if [ -f "$logs/$1.rc" ]; then cut -d' ' -f1 <"$logs/$1.rc"; else echo none; fi; }
secs() { if [ -f "$logs/$1.rc" ]; then cut -d' ' -f2 <"$logs/$1.rc"; else echo 0; fi; }

# why NAME: a short reason for a failed step
why() {
    case $(st "$1") in
    none) echo "did not run" ;;
    200) echo "not run: out of time" ;;
    124 | 137) echo "timeout after $(secs "$1") s" ;;
    *)
        _w=$(grep -v '^\$ ' "$logs/$1.log" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-110)
        echo "status $(st "$1"): ${_w:-no output}"
        ;;
    esac
}

# diffnote NAME: "4.4e-07 (D_x)" from st_diff's output
diffnote() { sed -n 's/.*largest relative difference //p' "$logs/$1.log" 2>/dev/null | head -n 1; }

# jget KEY FILE: a string or number from the last JSON line of FILE
jget() {
    _line=$(grep '^{' "$2" 2>/dev/null | tail -n 1)
    _v=$(printf '%s\n' "$_line" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p")
    [ -z "$_v" ] && _v=$(printf '%s\n' "$_line" | sed -n "s/.*\"$1\": *\([^,}\"]*\)[,}].*/\1/p")
    echo "$_v"
}

count() { _c=$(grep -c "$1" "$2" 2>/dev/null); echo "${_c:-0}"; }
is_oom() { grep -qi 'out of memory\|OUT_OF_MEMORY' "$logs/$1.log" 2>/dev/null; }

# find_lib NAME: a file NAME in the usual CUDA places (and pip's nvidia packages)
find_lib() {
    for _f in /usr/local/cuda/lib64/"$1" /usr/local/cuda-*/lib64/"$1" /usr/local/cuda*/targets/*/lib/"$1" \
        /usr/lib/x86_64-linux-gnu/"$1" /usr/lib64/"$1" /usr/lib/"$1"; do
        [ -e "$_f" ] && { echo "$_f"; return 0; }
    done
    if [ -n "$pyany" ]; then
        for _d in $(env LD_LIBRARY_PATH="$orig_ld" "$pyany" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
            for _f in "$_d"/nvidia/*/lib/"$1"; do
                [ -e "$_f" ] && { echo "$_f"; return 0; }
            done
        done
    fi
    return 1
}

# ------------------------------------------------------------------ setup
orig_ld=${LD_LIBRARY_PATH:-}   # PyTorch runs with this: the carried libraries are for edmc
libnote=""
if [ -f .gpulibs/libs.tar.xz ]; then
    libdir=$work/libs
    mkdir -p "$libdir"
    if tar -C "$libdir" -xJf .gpulibs/libs.tar.xz; then
        LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
        libnote="; .gpulibs unpacked"
    else
        libnote="; .gpulibs/libs.tar.xz did not unpack"
    fi
fi
if [ -z "${EDMC_CACHE_DIR:-}" ]; then
    if [ -d .gpulibs/kernel-cache ]; then EDMC_CACHE_DIR=$(pwd)/.gpulibs/kernel-cache
    else EDMC_CACHE_DIR=$work/kernel-cache; fi
    # tests/gpu/prepare.sh --cache packs the cubins (they compress ~40x)
    if [ -f .gpulibs/kernel-cache.tar.xz ]; then
        mkdir -p "$EDMC_CACHE_DIR" && tar -C "$EDMC_CACHE_DIR" -xJf .gpulibs/kernel-cache.tar.xz ||
            echo "tests/gpu/run.sh: .gpulibs/kernel-cache.tar.xz did not unpack" >&2
    fi
fi
mkdir -p "$EDMC_CACHE_DIR"
export EDMC_CACHE_DIR
cache_before=$(find "$EDMC_CACHE_DIR" -name '*.cubin' 2>/dev/null | wc -l)
export srcdir=. CMOCKA_MESSAGE_OUTPUT=TAP

pyany=""
for _c in python3 /usr/bin/python3 python; do
    command -v "$_c" >/dev/null 2>&1 && { pyany=$_c; break; }
done
py=""
for _c in ${PYTHON:-} python3 /usr/bin/python3 python; do
    command -v "$_c" >/dev/null 2>&1 || continue
    if env LD_LIBRARY_PATH="$orig_ld" "$_c" -c 'import torch' >/dev/null 2>&1; then py=$_c; break; fi
done

td=""
for _d in ${EDMC_TESTDATA:-} ../shared/testdata shared/testdata .gpulibs/testdata; do
    if [ -f "$_d/edm2-tiny/weights.safetensors" ]; then td=$_d/edm2-tiny; break; fi
    if [ -f "$_d/weights.safetensors" ] && [ -f "$_d/train_step.safetensors" ]; then td=$_d; break; fi
done

# the binaries this script runs (built elsewhere, carried)
missing=""
wrappers=""
for f in ./edmc ./tests/unit/test_backend_ops ./tests/unit/test_cuda_codegen ./tests/tools/st_diff; do
    if [ ! -x "$f" ]; then
        missing="$missing $f"
    elif [ "$(head -c 2 "$f")" = "#!" ]; then
        # a libtool wrapper script: the real program is in .libs beside it
        wrappers="$wrappers $f"
        [ -d "$(dirname "$f")/.libs" ] || missing="$missing $(dirname "$f")/.libs"
    fi
done
have() { case " $missing " in *" $1 "*) return 1 ;; *) return 0 ;; esac; }

echo "== tests/gpu/run.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), logs in $logs, kernel cache $EDMC_CACHE_DIR ($cache_before cubins)"
echo "   python with torch: ${py:-none}; testdata: ${td:-not found}"
if [ -n "$missing" ]; then
    row "binaries" FAIL "missing:$missing (build here, carry them)"
else
    row "binaries" ok "edmc, test_backend_ops, test_cuda_codegen, st_diff${wrappers:+; libtool wrappers:$wrappers}"
fi

# ------------------------------------------------------------------ 1. ldd
echo "== 1. ldd"
if have ./edmc; then
    ldd ./edmc >"$logs/ldd.log" 2>&1
    if grep -q 'libnvrtc[^ ]* => not found' "$logs/ldd.log" && p=$(find_lib libnvrtc.so.13); then
        LD_LIBRARY_PATH="$(dirname "$p")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
        libnote="$libnote; NVRTC from $(dirname "$p")"
        ldd ./edmc >"$logs/ldd.log" 2>&1
    fi
    for f in ./tests/unit/test_backend_ops ./tests/unit/test_cuda_codegen ./tests/tools/st_diff; do
        have "$f" && { echo "-- $f"; ldd "$f"; } >>"$logs/ldd-tests.log" 2>&1
    done
    cat "$logs/ldd.log"
    # cuBLASLt is dlopen'ed by soname (edmc's RUNPATH has /usr/local/cuda/lib64); EDMC_CUBLASLT overrides
    if [ -z "${EDMC_CUBLASLT:-}" ] && [ ! -e /usr/local/cuda/lib64/libcublasLt.so.13 ] &&
        ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.13 ' && p=$(find_lib libcublasLt.so.13); then
        EDMC_CUBLASLT=$p
        export EDMC_CUBLASLT
    fi
    lt=${EDMC_CUBLASLT:-$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || echo "libcublasLt.so.13 (ld cache)")}
    if grep -q "not found" "$logs/ldd.log" "$logs/ldd-tests.log" 2>/dev/null; then
        row "ldd" FAIL "missing: $(grep -h 'not found' "$logs/ldd.log" "$logs/ldd-tests.log" | awk '{print $1}' | sort -u | tr '\n' ' ')"
    elif grep -q 'libcuda\.so' "$logs/ldd.log"; then
        row "ldd" FAIL "libcuda is linked (it must be dlopen'ed)"
    else
        row "ldd" ok "libcuda not linked; $(grep -o 'libnvrtc[^ ]*' "$logs/ldd.log" | head -n 1); cuBLASLt: $lt$libnote"
    fi
else
    row "ldd" FAIL "no ./edmc"
fi

# ------------------------------------------------------------------ 2. nvidia-smi
echo "== 2. nvidia-smi"
card="no GPU"
driver="-"
parallel=1
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi: not found" >"$logs/smi.log"
    cat "$logs/smi.log"
    row "nvidia-smi" FAIL "not found"
elif timeout 60 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,compute_mode \
    --format=csv,noheader >"$logs/smi.log" 2>&1; then
    cat "$logs/smi.log"
    card=$(head -n 1 "$logs/smi.log" | cut -d, -f1)
    driver=$(head -n 1 "$logs/smi.log" | cut -d, -f2 | tr -d ' ')
    row "nvidia-smi" ok "$(head -n 1 "$logs/smi.log")"
    grep -qi exclusive "$logs/smi.log" && parallel=0   # one CUDA process at a time
    timeout 60 nvidia-smi >"$logs/smi-full.log" 2>&1
else
    cat "$logs/smi.log"
    row "nvidia-smi" FAIL "$(head -n 1 "$logs/smi.log" | cut -c1-100)"
fi
[ "${GPU_PARALLEL:-1}" = 0 ] && parallel=0

# ------------------------------------------------------------------ 3-6: correctness, side by side
deadline=$((T0 + phase1))
echo "== 3-6. op tests, codegen, golden parity, training (parallel=$parallel; cut at $phase1 s)"

ops_job() { # the op-by-op test at one precision [GEMM [VAR=VALUE]]
    run_step "ops-$1" 150 env EDMC_TEST_DEVICE=cuda EDMC_TEST_PRECISION="${1%-fused}" \
        ${2:+EDMC_TEST_GEMM="$2"} ${3:+"$3"} ./tests/unit/test_backend_ops
}
ops_fp32() { ops_job fp32; }
ops_fp16() { ops_job fp16; }
ops_bf16() { ops_job bf16; }
ops_fp16_fused() { ops_job fp16-fused fused; }
# bf16 with one tile and no split-K: the (halo) convolution cases read x through halo tiles, one
# with 65 KB of them (the raised shared-memory limit)
ops_bf16_fused() { ops_job bf16-fused fused EDMC_MMA_TILE=64x128/1; }
# test_cuda_codegen in two halves side by side: whole-program NVRTC compiles, CUDA vs CPU
codegen_nvrtc() { run_step codegen-nvrtc 200 env EDMC_TEST_FILTER='test_nvrtc*' ./tests/unit/test_cuda_codegen; }
codegen_vs() { run_step codegen-vs 240 env EDMC_TEST_FILTER='test_cuda_vs_cpu*' ./tests/unit/test_cuda_codegen; }

golden_chain() {
    g=$td
    o=$work/golden
    mkdir -p "$o"
    tiny=models/edm2-tiny.edm
    run_step g-fwd32 90 ./edmc forward "$tiny" --device=cuda --precision=fp32 --weights="$g/weights.safetensors" \
        --input="$g/forward.safetensors" --output="$o/fwd32.safetensors" &&
        run_step g-fwd32-diff 30 ./tests/tools/st_diff "$o/fwd32.safetensors" "$g/forward.safetensors" 1e-4
    run_step g-fwd16 90 ./edmc forward "$tiny" --device=cuda --precision=fp16 --weights="$g/weights.safetensors" \
        --input="$g/forward.safetensors" --output="$o/fwd16.safetensors" &&
        run_step g-fwd16-diff 30 ./tests/tools/st_diff "$o/fwd16.safetensors" "$g/forward.safetensors" 1e-2
    run_step g-fwd16f 90 ./edmc forward "$tiny" --device=cuda --precision=fp16 --fuse=all \
        --weights="$g/weights.safetensors" --input="$g/forward.safetensors" --output="$o/fwd16f.safetensors" &&
        run_step g-fwd16f-diff 30 ./tests/tools/st_diff "$o/fwd16f.safetensors" "$g/forward.safetensors" 1e-2
    if run_step g-step 120 ./edmc step "$tiny" --device=cuda --precision=fp32 --weights="$g/weights.safetensors" \
        --batch="$g/train_step.safetensors" --lr=0.01 --output="$o/step.safetensors"; then
        run_step g-step-loss 30 ./tests/tools/st_diff "$o/step.safetensors" "$g/train_step.safetensors" 1e-4 loss
        run_step g-step-norm 30 ./tests/tools/st_diff "$o/step.safetensors" "$g/train_step.safetensors" 1e-4 normalized.
        run_step g-step-grad 30 ./tests/tools/st_diff "$o/step.safetensors" "$g/train_step.safetensors" 1e-3 grad.
        run_step g-step-adam 30 ./tests/tools/st_diff "$o/step.safetensors" "$g/train_step.safetensors" 1e-3 step1.
    fi
    run_step g-sample 90 ./edmc generate --device=cuda --precision=fp32 --net="$g/weights.safetensors" \
        --model="$tiny" --noise="$g/sample.safetensors" --steps=8 --save-raw="$o/sample.safetensors" &&
        run_step g-sample-diff 30 ./tests/tools/st_diff "$o/sample.safetensors" "$g/sample.safetensors" 1e-3
    run_step g-guided 90 ./edmc generate --device=cuda --precision=fp32 --net="$g/weights.safetensors" \
        --model="$tiny" --noise="$g/sample.safetensors" --steps=8 --guide="$g/guide_weights.safetensors" \
        --guide-model="$tiny" --guidance=2 --save-raw="$o/guided.safetensors" &&
        # st_diff compares by name: a copy of the golden file whose sample_guided is called sample
        run_step g-guided-rename 30 env LD_LIBRARY_PATH="$orig_ld" "${pyany:-python3}" -c '
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
' "$g/sample.safetensors" "$o/golden-guided.safetensors" &&
        run_step g-guided-diff 30 ./tests/tools/st_diff "$o/guided.safetensors" "$o/golden-guided.safetensors" 1e-3
}

# edm2-tiny, 2 Ki images, batch 32 (64 steps).  --rampup=0.01: the learning rate
# ramps to 2e-3 over these images (the preset's 10 Mimg warm-up would leave it
# at ~2e-6, and then only the forward pass would be compared).
train_batch=32
train_args="--model=models/edm2-tiny.edm --data=builtin:shapes16 --batch=$train_batch --duration=2Ki --status=512 --seed=1 --rampup=0.01 --snapshot=0 --checkpoint=0"
ncpu=$(nproc 2>/dev/null || echo 4)
cpu_threads=$((ncpu / 4))
[ "$cpu_threads" -lt 2 ] && cpu_threads=2
# shellcheck disable=SC2086
train_cpu() { rm -rf "$work/train-cpu"; run_step train-cpu 180 ./edmc train $train_args --device=cpu --threads="$cpu_threads" --outdir="$work/train-cpu"; }
# shellcheck disable=SC2086
train_fp32() { rm -rf "$work/train-fp32"; run_step train-fp32 150 ./edmc train $train_args --device=cuda --precision=fp32 --outdir="$work/train-fp32"; }
# NCCL: one rank per GPU, as many as divide the global batch ($train_batch: the largest
# power of 2 up to the GPUs, so 2 of 3 GPUs), the global batch unchanged, so the
# losses follow the single process's.  mpirun and NCCL (a system library, or
# PyTorch's nvidia-nccl wheel) are looked for; without either the row says so.
nccl_lib=$(find_lib libnccl.so.2 || true)
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
[ "${ngpu:-0}" -ge 1 ] || ngpu=1
nccl_ranks=1
while [ $((nccl_ranks * 2)) -le "$ngpu" ] && [ $((train_batch % (nccl_ranks * 2))) -eq 0 ]; do nccl_ranks=$((nccl_ranks * 2)); done
nccl_row="train nccl $nccl_ranks rank(s) of $ngpu GPU(s) = 1 process"
nccl_skip=""   # why the step does not run, when it does not
if [ "$nccl_ranks" -lt 2 ]; then
    # one rank alone sums nothing (edmc makes no collective), and NCCL takes one GPU per rank
    nccl_skip="one GPU: NCCL needs a GPU per rank and 2 ranks"
elif ! command -v mpirun >/dev/null 2>&1; then
    nccl_skip="no mpirun on this machine"
elif [ -z "$nccl_lib" ]; then
    nccl_skip="no libnccl.so.2 (system or PyTorch's nvidia-nccl)"
fi
# shellcheck disable=SC2086
train_nccl() {
    rm -rf "$work/train-nccl"
    run_step train-nccl 180 env EDMC_NCCL="$nccl_lib" mpirun --allow-run-as-root --oversubscribe -n "$nccl_ranks" \
        -x EDMC_NCCL -x LD_LIBRARY_PATH -x EDMC_CACHE_DIR -x EDMC_CUDA_DRIVER -x EDMC_CUBLASLT \
        ./edmc train $train_args --device=cuda --precision=fp32 --collective=nccl --outdir="$work/train-nccl"
}
# shellcheck disable=SC2086
train_fp16() { rm -rf "$work/train-fp16"; run_step train-fp16 150 ./edmc train $train_args --device=cuda --precision=fp16 --outdir="$work/train-fp16"; }

# The benchmarks' programs into the kernel cache meanwhile (NVRTC takes 10-40 s
# a program), one at a time: the training programs at batch 128 hold about 30 GiB (xs)
# and 47 GiB (s) of device memory (the fake driver says), room left for the jobs above.
prewarm_chain() {
    for cfg in "xs train --fuse=all" "s train --fuse=all" "xs forward --fuse=all" "s forward --fuse=all" \
        "xs forward --fuse=none" "xs forward --fuse=all --no-tensor-cores"; do
        # shellcheck disable=SC2086
        set -- $cfg
        _m=$1 _mode=$2
        shift 2
        run_step "prewarm-$_m-$_mode$(echo "$*" | tr -d ' =')" 150 ./edmc bench "models/edm2-img512-$_m.edm" \
            --device=cuda --precision=fp16 --batch=128 --mode="$_mode" --iters=1 --json "$@"
    done
}

have ./tests/unit/test_backend_ops && { spawn ops_fp32; spawn ops_fp16; spawn ops_bf16; spawn ops_fp16_fused; spawn ops_bf16_fused; }
have ./tests/unit/test_cuda_codegen && { spawn codegen_nvrtc; spawn codegen_vs; }
if have ./edmc; then
    have ./tests/tools/st_diff && [ -n "$td" ] && spawn golden_chain
    spawn train_cpu
    spawn train_fp32
    spawn train_fp16
    [ -z "$nccl_skip" ] && spawn train_nccl
    spawn prewarm_chain
fi
# shellcheck disable=SC2086
[ -n "$pids" ] && wait $pids
echo "   done after $(($(date +%s) - T0)) s"

# ---- 3. op by op
for p in fp32 fp16 bf16 fp16-fused bf16-fused; do
    n="ops-$p"
    if ! have ./tests/unit/test_backend_ops; then row "test_backend_ops $p" FAIL "not built"; continue; fi
    grep '^# op' "$logs/$n.log" >"$logs/$n.rows" 2>/dev/null
    ok=$(count '^ok ' "$logs/$n.log")
    bad=$(count '^not ok ' "$logs/$n.log")
    cases=$(count '^# op' "$logs/$n.log")
    badcases=$(count 'FAILED$\|: error: ' "$logs/$n.rows")
    s=$(st "$n")
    echo "-- test_backend_ops $p: status $s, $ok ok, $bad not ok, $cases cases ($badcases failed)"
    grep 'FAILED$\|: error: ' "$logs/$n.rows" | head -n 8 | sed 's/^/   /'
    if [ "$s" = 77 ]; then
        if [ "$card" = "no GPU" ]; then row "test_backend_ops $p" skip "$(grep -m1 '^# no CUDA' "$logs/$n.log" | cut -c3-100)"
        else row "test_backend_ops $p" FAIL "exit 77 on a GPU machine: $(grep -m1 '^# no CUDA' "$logs/$n.log" | cut -c3-90)"; fi
    elif [ "$s" = 0 ] && [ "$bad" -eq 0 ] && [ "$ok" -gt 0 ]; then
        row "test_backend_ops $p" ok "$ok tests, $cases cases in $(secs "$n") s"
    else
        first=$(grep -m1 'FAILED$\|: error: ' "$logs/$n.rows" | sed 's/^# op //' | cut -c1-60)
        [ -z "$first" ] && first=$(grep -m1 '^not ok ' "$logs/$n.log" | cut -c1-60)
        row "test_backend_ops $p" FAIL "$ok ok, $bad not ok, $badcases/$cases cases, $(why "$n" | cut -c1-40); ${first:-?}"
    fi
done

# ---- 4. codegen
if have ./tests/unit/test_cuda_codegen; then
    for half in nvrtc vs; do
        n="codegen-$half"
        ok=$(count '^ok ' "$logs/$n.log")
        bad=$(count '^not ok ' "$logs/$n.log")
        echo "-- test_cuda_codegen ($half): status $(st "$n"), $ok ok, $bad not ok, $(secs "$n") s"
        grep '^# edm2-\|^# cuda-vs-cpu\|^# CUDA\|^not ok' "$logs/$n.log" | sed 's/^/   /'
        want=test_nvrtc
        [ "$half" = vs ] && want=test_cuda_vs_cpu
        if [ "$(st "$n")" = 0 ] && [ "$bad" -eq 0 ] && grep -q "^ok .*$want" "$logs/$n.log"; then
            row "test_cuda_codegen $half" ok "$ok cases in $(secs "$n") s"
        else
            note=$(grep -m1 '^# CUDA vs CPU cases not run' "$logs/$n.log" | cut -c3-90)
            row "test_cuda_codegen $half" FAIL "$ok ok, $bad not ok; ${note:-$(why "$n")}"
        fi
    done
else
    row "test_cuda_codegen" FAIL "not built"
fi

# ---- 5. golden parity
golden_row() { # label run-step diff-step tolerance
    if [ -z "$td" ]; then row "$1" FAIL "no testdata (EDMC_TESTDATA, ../shared/testdata, shared/testdata)"
    elif ! have ./edmc || ! have ./tests/tools/st_diff; then row "$1" FAIL "edmc or st_diff missing"
    elif [ "$(st "$2")" != 0 ]; then row "$1" FAIL "$(why "$2")"
    elif [ "$(st "$3")" != 0 ]; then
        _e=$(grep -m1 '^st_diff: ' "$logs/$3.log" | sed 's/^st_diff: //' | cut -c1-100)
        row "$1" FAIL "${_e:-$(why "$3")}"
    else row "$1" ok "$(diffnote "$3") (tol $4)"; fi
}
grep -h 'ran on' "$logs/g-fwd32.log" "$logs/g-fwd16.log" "$logs/g-fwd16f.log" 2>/dev/null | sed 's/^/-- golden: /'
for n in g-fwd32-diff g-fwd16-diff g-fwd16f-diff g-step-loss g-step-norm g-step-grad g-step-adam g-sample-diff g-guided-diff; do
    [ -f "$logs/$n.log" ] && echo "-- $n: $(grep -v '^\$ ' "$logs/$n.log" | tr '\n' ' ')"
done
golden_row "golden forward fp32" g-fwd32 g-fwd32-diff 1e-4
golden_row "golden forward fp16" g-fwd16 g-fwd16-diff 1e-2
golden_row "golden forward fp16 fused (mma)" g-fwd16f g-fwd16f-diff 1e-2
if [ -n "$td" ] && [ "$(st g-step)" = 0 ]; then
    s=ok
    note=""
    for part in loss:1e-4 norm:1e-4 grad:1e-3 adam:1e-3; do
        k=${part%%:*}
        [ "$(st "g-step-$k")" = 0 ] || s=FAIL
        note="$note$k $(diffnote "g-step-$k" | cut -d' ' -f1)$([ "$(st "g-step-$k")" = 0 ] || echo "(>${part#*:})"), "
    done
    row "golden train step fp32" "$s" "${note%, } (tol 1e-4 loss/WN, 1e-3 grad/step1)"
else
    golden_row "golden train step fp32" g-step g-step-loss 1e-4
fi
golden_row "golden sample (8 steps)" g-sample g-sample-diff 1e-3
if [ -n "$td" ] && [ "$(st g-guided)" = 0 ] && [ "$(st g-guided-rename)" != 0 ]; then
    row "golden sample guided" FAIL "could not rename sample_guided: $(why g-guided-rename)"
else
    golden_row "golden sample guided" g-guided g-guided-diff 1e-3
fi

# ---- 6. training: the loss columns of stats.jsonl
# cmp_loss A B RTOL ATOL: every status line within RTOL relative or ATOL absolute
cmp_loss() {
    awk -v rtol="$3" -v atol="$4" '
        function field(s, key,   i, r) {
            i = index(s, "\"" key "\":"); if (i == 0) return "x"
            r = substr(s, i + length(key) + 3); sub(/[,}].*/, "", r); return r
        }
        function finite(v) { return v ~ /^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }
        function fmt(v) { return finite(v) ? sprintf("%.6g", v) : v }
        NR == FNR { a[FNR] = field($0, "loss"); ka[FNR] = field($0, "kimg"); na = FNR; next }
        { b[FNR] = field($0, "loss"); nb = FNR }
        END {
            bad = (na != nb || na == 0); worst = 0; at = "-"
            for (i = 1; i <= na && i <= nb; i++) {
                if (!finite(a[i]) || !finite(b[i])) { bad = 1; worst = "nan"; at = fmt(ka[i]); continue }
                d = a[i] - b[i]; if (d < 0) d = -d
                m = b[i] < 0 ? -b[i] : b[i]
                r = m > 0 ? d / m : d
                if (worst != "nan" && r > worst) { worst = r; at = fmt(ka[i]) }
                if (d > rtol * m && d > atol) bad = 1
            }
            printf "%d/%d lines, worst rel %.2g at kimg %s; loss %s -> %s (cpu %s -> %s)",
                na, nb, worst, at, fmt(a[1]), fmt(a[na]), fmt(b[1]), fmt(b[nb])
            exit bad
        }' "$1" "$2"
}
cpu_stats=$work/train-cpu/stats.jsonl
if [ "$(st train-cpu)" = 0 ] && [ -s "$cpu_stats" ]; then
    row "train cpu (baseline)" ok "$(wc -l <"$cpu_stats") lines, loss $(sed -n '1s/.*"loss":\([^,]*\).*/\1/p' "$cpu_stats" | cut -c1-8) -> $(sed -n '$s/.*"loss":\([^,]*\).*/\1/p' "$cpu_stats" | cut -c1-8), $(secs train-cpu) s at $cpu_threads threads"
else
    row "train cpu (baseline)" FAIL "$(why train-cpu)"
fi
for p in fp32:0.02:1 fp16:0.10:10; do
    prec=${p%%:*}
    tol=${p#*:}
    rtol=${tol%%:*}
    atol=${tol#*:}
    s=$work/train-$prec/stats.jsonl
    if [ "$(st "train-$prec")" != 0 ] || [ ! -s "$s" ]; then
        row "train cuda $prec vs cpu" FAIL "$(why "train-$prec")"
    elif [ ! -s "$cpu_stats" ]; then
        row "train cuda $prec vs cpu" FAIL "no CPU baseline to compare with"
    elif note=$(cmp_loss "$s" "$cpu_stats" "$rtol" "$atol"); then
        row "train cuda $prec vs cpu" ok "$note (tol ${rtol} rel or $atol abs), $(secs "train-$prec") s"
    else
        row "train cuda $prec vs cpu" FAIL "$note (tol ${rtol} rel or $atol abs)"
    fi
    [ -s "$s" ] && cp "$s" "$logs/train-$prec.stats.jsonl"
done
[ -s "$cpu_stats" ] && cp "$cpu_stats" "$logs/train-cpu.stats.jsonl"
s=$work/train-nccl/stats.jsonl
if [ -n "$nccl_skip" ]; then
    row "$nccl_row" skip "$nccl_skip"
elif [ "$(st train-nccl)" != 0 ] || [ ! -s "$s" ]; then
    row "$nccl_row" FAIL "$(why train-nccl)"
elif ! grep -q 'summed over the ranks by nccl' "$logs/train-nccl.log"; then
    row "$nccl_row" FAIL "the run did not sum by NCCL: $(grep -m1 -i 'nccl\|collective' "$logs/train-nccl.log" | cut -c1-80)"
elif note=$(cmp_loss "$s" "$work/train-fp32/stats.jsonl" 0.02 1); then
    row "$nccl_row" ok "$note (tol 0.02 rel or 1 abs), $(secs train-nccl) s"
else
    row "$nccl_row" FAIL "$note (tol 0.02 rel or 1 abs)"
fi

# ------------------------------------------------------------------ 7. benchmarks, one at a time
deadline=$((T0 + budget))
echo "== 7. benchmarks: fp16, batch 128 ($(($(date +%s) - T0)) s so far; cut at $budget s)"
bench=$logs/bench.tsv
: >"$bench"
benchfail=""
# edmc_bench KEY MODEL MODE BATCH [FLAGS]: one edmc bench run into $logs/b-KEY.log
edmc_bench() {
    _k=$1 _m=$2 _mode=$3 _b=$4
    shift 4
    _lim=150
    [ "$_mode" = train ] && _lim=240
    if have ./edmc; then
        run_step "b-$_k" "$_lim" ./edmc bench "models/edm2-img512-$_m.edm" --device=cuda --precision=fp16 \
            --batch="$_b" --mode="$_mode" --json "$@"
    else
        echo "200 0" >"$logs/b-$_k.rc"
        echo "no ./edmc" >"$logs/b-$_k.log"
    fi
    tail -n 1 "$logs/b-$_k.log" | cut -c1-300
}
torch_bench() { # KEY MODEL MODE BATCH
    if [ -n "$py" ]; then
        run_step "t-$1" 180 env LD_LIBRARY_PATH="$orig_ld" "$py" scripts/bench_torch_gpu.py --preset="img512-$2" \
            --mode="$3" --batch="$4" --device=cuda --precision=fp16 --json
    else
        echo "200 0" >"$logs/t-$1.rc"
        echo "no python with torch (PYTHON=...)" >"$logs/t-$1.log"
    fi
    tail -n 1 "$logs/t-$1.log" | cut -c1-300
}
result() { # NAME: img/s or a word for what went wrong
    if [ "$(st "$1")" = 0 ] && [ -n "$(jget img_per_s "$logs/$1.log")" ]; then jget img_per_s "$logs/$1.log"
    elif [ "$(st "$1")" = 200 ]; then echo "not run"
    elif [ "$(st "$1")" = 124 ] || [ "$(st "$1")" = 137 ]; then echo "timeout"
    elif is_oom "$1"; then echo "OOM"
    else echo "FAIL"; fi
}
mib() { _b=$(jget memory_bytes "$logs/$1.log"); [ -n "$_b" ] && awk -v b="$_b" 'BEGIN { printf "%.0f", b / 1048576 }' || echo "-"; }
tflops() { _t=$(jget tflop_s "$logs/$1.log"); [ -n "$_t" ] && awk -v t="$_t" 'BEGIN { printf "%.0f", t }' || echo "-"; }
add_bench() { # MODEL LABEL EDMC-STEP TORCH-STEP [ablation]
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(result "$3")" "$(result "$4")" "$(mib "$3")" "$(mib "$4")" \
        "$(tflops "$3")" >>"$bench"
    case $(result "$3") in
    [0-9]*) ;;
    "not run") [ $# -gt 4 ] || benchfail="$benchfail edmc:${1#edm2-img512-}/$2=not run" ;; # an ablation past the budget: no failure
    *) benchfail="$benchfail edmc:${1#edm2-img512-}/$2=$(result "$3")" ;;
    esac
    [ $# -gt 4 ] && return 0   # an ablation row: its PyTorch number is the default row's
    case $(result "$4") in [0-9]*) ;; *) benchfail="$benchfail pytorch:${1#edm2-img512-}/$2=$(result "$4")" ;; esac
}
for cfg in "xs forward" "xs train" "s forward" "s train"; do
    # shellcheck disable=SC2086
    set -- $cfg
    echo "-- edm2-img512-$1 $2: $(edmc_bench "$1-$2" "$1" "$2" 128 --fuse=all --profile)"
    grep -A8 '^profile:' "$logs/b-$1-$2.log" | sed 's/^/   /'   # the slowest kernels (bench --profile)
    echo "   pytorch: $(torch_bench "$1-$2" "$1" "$2" 128)"
    add_bench "edm2-img512-$1" "$2" "b-$1-$2" "t-$1-$2"
    # a fallback row at batch 32, both sides, when edmc failed or either side ran
    # out of memory or time (not without a GPU: nothing to learn there)
    case "$(result "b-$1-$2")/$(result "t-$1-$2")" in
    "not run"* | */"not run" | [0-9]*/[0-9]* | [0-9]*/FAIL) ;;
    *)
        [ "$card" = "no GPU" ] && continue
        echo "   batch 32: $(edmc_bench "$1-$2-b32" "$1" "$2" 32 --fuse=all)"
        echo "   pytorch batch 32: $(torch_bench "$1-$2-b32" "$1" "$2" 32)"
        add_bench "edm2-img512-$1" "$2 (batch 32)" "b-$1-$2-b32" "t-$1-$2-b32"
        ;;
    esac
done
# env_ablation KEY LABEL VAR=VALUE [MODE]: xs's fused forward (or MODE, train) with one setting from the environment
env_ablation() {
    _mode=${4:-forward}
    echo "-- edm2-img512-xs $_mode --fuse=all, $3: $(
        export "$3"
        edmc_bench "$1" xs "$_mode" 128 --fuse=all
    )"
    add_bench "edm2-img512-xs" "$_mode --fuse=all, $2" "b-$1" "t-xs-$_mode" ablation
}
# first among the edmc-only rows (cheap, and what the designs of docs/performance.md v15 and v16 hinge
# on): the tiles of the cost model before it counted issue time (cuda_gemm_mma.h; docs/cuda.md, "The tile
# cost model")
env_ablation xs-forward-tiles-by-loads "the tiles of the cost model without issue time" EDMC_TILE_MODEL=loads
env_ablation xs-train-tiles-by-loads "the tiles of the cost model without issue time" EDMC_TILE_MODEL=loads train
# a candidate the model cannot judge (docs/performance.md v16): 128x128 one block an SM for the bodies that spill
# at two (the weight gradients, 1x1 convolutions): fewer instructions a product, no second block to hide latency
env_ablation xs-train-one-block "128x128 one block an SM where two spill" EDMC_ONE_BLOCK_TILES=on train
# sampling, as the reference's sampler costs it: one whole Heun run (32 steps, 63 evaluations) an iteration
for m in xs s; do
    echo "-- edm2-img512-$m sample: $(edmc_bench "$m-sample" "$m" sample 128 --fuse=all)"
    echo "   pytorch: $(torch_bench "$m-sample" "$m" sample 128)"
    add_bench "edm2-img512-$m" "sample (32 Heun steps)" "b-$m-sample" "t-$m-sample"
done
# bf16 storage; the PyTorch reference runs fp16, so each row's PyTorch number is the fp16 row's
for cfg in "xs forward" "xs train" "s forward" "s train" "xs sample" "s sample"; do
    # shellcheck disable=SC2086
    set -- $cfg
    echo "-- edm2-img512-$1 $2 bf16: $(edmc_bench "$1-$2-bf16" "$1" "$2" 128 --fuse=all --precision=bf16)"
    add_bench "edm2-img512-$1" "$2 bf16" "b-$1-$2-bf16" "t-$1-$2" ablation
done
# ablations of xs forward: the unfused path (cuBLASLt + im2col), the fused plan on CUDA cores, no CUDA Graph
for flags in "--fuse=none" "--fuse=all --no-tensor-cores" "--fuse=all --no-graph"; do
    k="xs-forward$(echo "$flags" | tr -d ' =')"
    # shellcheck disable=SC2086
    echo "-- edm2-img512-xs forward $flags: $(edmc_bench "$k" xs forward 128 $flags)"
    add_bench "edm2-img512-xs" "forward $flags" "b-$k" "t-xs-forward" ablation
done
# the tensor-core convolutions' k order (docs/cuda.md): flat, in the weight's order, not a tap a k tile
env_ablation xs-forward-flat-k "k flat (EDMC_CONV_ORDER=channel)" EDMC_CONV_ORDER=channel
# the tensor-core fragments word by word instead of by ldmatrix
env_ablation xs-forward-no-ldmatrix "fragments without ldmatrix" EDMC_LDMATRIX=off
# the taps convolutions' weight tiles through registers, not copied by cp.async
env_ablation xs-forward-no-cp-async "weight tiles without cp.async" EDMC_CP_ASYNC=off
# the 3x3 convolutions' activations read directly, a tap a k tile, not through a halo tile
env_ablation xs-forward-no-halo "activations without the halo tile" EDMC_CONV_HALO=off
# ... and in the training step, where the same setting also reads the weight gradients' x directly,
# each element once a tap, not once a k tile through a stage (cuda_gemm_mma.h, edm_mma_wgrad_fits)
env_ablation xs-train-no-halo "no halo tiles, no weight-gradient stage" EDMC_CONV_HALO=off train
# the weight gradients' dy a pair at a time, not eight elements a load (cuda_gemm_mma.h, EDM_MMA_A_WIDE)
env_ablation xs-train-no-wide-loads "the weight gradients' dy a pair a load" EDMC_WIDE_LOADS=off train
# each fusion rule off alone (docs/fusion.md), while the budget lasts: taps first (the weights'
# tap-major copy, never measured), then prologue (a 3x3 convolution evaluates its operand's
# prologue once per tap; off, the silu(x / norm) is stored once); attntrain is a training step's
# (off, the attention's weights are kept from the forward pass instead of recomputed in the backward)
for off in taps prologue epilogue ew wn attn attntrain; do
    rules=$(echo "wn prologue epilogue ew attn taps attntrain" | tr ' ' '\n' | grep -vx "$off" | paste -sd, -)
    mode=forward
    [ "$off" = attntrain ] && mode=train
    k="xs-$mode-no-$off"
    echo "-- edm2-img512-xs $mode --fuse=$rules ($off off): $(edmc_bench "$k" xs $mode 128 --fuse="$rules")"
    add_bench "edm2-img512-xs" "$mode, $off rule off" "b-$k" "t-xs-$mode" ablation
done
# the tiles measured here (bench --tune, cli/bench_tune.h): every contraction timed on each tile, the
# fastest kept in a table of its own ($OUT/tiles-xs.txt when $OUT is set), then the benchmark on them
k="xs-forward-tuned"
tiles_xs="$logs/tiles-xs.txt"
echo "-- edm2-img512-xs forward --fuse=all --tune: $(
    EDMC_TILES=$tiles_xs
    export EDMC_TILES
    edmc_bench "$k" xs forward 128 --fuse=all --tune
)"
grep '^tune:' "$logs/b-$k.log" | cut -c1-200 | sed 's/^/   /'
[ -n "${OUT:-}" ] && [ -f "$tiles_xs" ] && cp "$tiles_xs" "$OUT/tiles-xs.txt"
add_bench "edm2-img512-xs" "forward --fuse=all, tiles measured (--tune)" "b-$k" "t-xs-forward" ablation
# the PyTorch networks must be edmc's: the same parameter count
for m in xs s; do
    want=$(./edmc info --json "models/edm2-img512-$m.edm" 2>/dev/null | sed -n 's/^ *"params": *\([0-9]*\).*/\1/p' | head -n 1)
    got=$(jget params "$logs/t-$m-forward.log")
    [ -z "$got" ] && got=$(jget params "$logs/t-$m-train.log")
    if [ -z "$got" ] || [ -z "$want" ]; then row "pytorch = edmc network ($m)" FAIL "params: pytorch ${got:-?}, edmc ${want:-?}"
    elif [ "$got" = "$want" ]; then row "pytorch = edmc network ($m)" ok "$got parameters in both"
    else row "pytorch = edmc network ($m)" FAIL "params: pytorch $got, edmc $want"; fi
done
if [ -z "$benchfail" ]; then row "benchmarks" ok "every run gave a number"
else row "benchmarks" FAIL "$(echo "$benchfail" | cut -c2-110)"; fi
backend=$(jget backend "$logs/b-xs-forward.log")
torchv=$(jget torch "$logs/t-xs-forward.log")

# ------------------------------------------------------------------ the table, last
cache_after=$(find "$EDMC_CACHE_DIR" -name '*.cubin' 2>/dev/null | wc -l)
if [ "${GPU_SAVE_CACHE:-0}" = 1 ] && [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/kernel-cache" && cp "$EDMC_CACHE_DIR"/*.cubin "$OUT/kernel-cache/" 2>/dev/null
fi
when=$(date -u '+%Y-%m-%d %H:%M UTC')
total=$(($(date +%s) - T0))
{
    echo "## CUDA checks: $card (driver $driver), $when"
    echo
    echo "| check | status | note |"
    echo "|---|---|---|"
    awk -F'\t' '{ gsub(/\|/, "/", $3); printf "| %s | %s | %s |\n", $1, $2, $3 }' "$logs/checks.tsv"
    echo
    echo "## Throughput: fp16 (but the bf16 rows), batch 128 (img/s; memory MiB), $card, $when"
    echo
    echo "| model | mode | edmc img/s | PyTorch img/s | edmc/PyTorch | edmc TFLOP/s | edmc MiB | PyTorch MiB |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{ r = ($3 ~ /^[0-9]/ && $4 ~ /^[0-9]/ && $4 > 0) ? sprintf("%.2f", $3 / $4) : "-"
        e = ($3 ~ /^[0-9]/) ? sprintf("%.1f", $3) : $3; t = ($4 ~ /^[0-9]/) ? sprintf("%.1f", $4) : $4
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, e, t, r, $7, $5, $6 }' "$bench"
    echo
    # the dense f16/bf16 tensor-core peak of the card's spec sheet, for the TFLOP/s column
    case $card in
    *H100*PCIe*) echo "TFLOP/s: edmc bench's count (docs/edm2.md §2, 2 a multiply-add); the H100 PCIe's dense f16 peak is 756." ;;
    *H100* | *H200*) echo "TFLOP/s: edmc bench's count (docs/edm2.md §2, 2 a multiply-add); the $card's dense f16 peak is 989 (SXM)." ;;
    *) echo "TFLOP/s: edmc bench's count (docs/edm2.md §2, 2 a multiply-add); no peak on record for $card." ;;
    esac
    echo "Card: $card (driver $driver), $when."
    echo "edmc $(./edmc --version 2>/dev/null | cut -d' ' -f2) ($(git rev-parse --short HEAD 2>/dev/null || echo 'git ?')): ${backend:-?}."
    echo "PyTorch ${torchv:-?}: scripts/bench_torch_gpu.py (plain, NCHW, U-Net fp16, cuDNN benchmark on, TF32 off);"
    echo "ablation and bf16 rows compare with the PyTorch fp16 row of their mode.  Kernel cache: $cache_before -> $cache_after cubins. Run: $total s."
} >"$logs/table.md"

echo
echo "==================== CUDA checks: $card (driver $driver), $when, $total s"
printf '%s' "$table"
echo
sed -n '/^## Throughput/,$p' "$logs/table.md"
echo
[ "$failed" -eq 0 ] && echo "all CUDA checks passed" || echo "SOME CUDA CHECKS FAILED (logs: $logs)"
rm -rf "$work"
exit "$failed"
