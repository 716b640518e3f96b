#!/bin/sh
# edmc train over several processes (issue 14, docs/distributed.md): 2 CPU
# ranks under mpirun against 1 process for the same global batch (the same
# bits: weights, Adam's moments, EMAs, snapshots, losses), a resume with
# another number of ranks, a failure of one rank said once by that rank, and
# a rank that hangs or dies ending every rank within a bounded time, leaving
# only whole checkpoints.  Skipped (77) without mpirun or an edmc built with MPI.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
st_diff="$builddir/tests/tools/st_diff"
tiny="$srcdir/models/edm2-tiny.edm"
command -v mpirun >/dev/null 2>&1 || { echo "# no mpirun (scripts/install-deps.sh installs openmpi-bin)"; exit 77; }
grep -q '^#define EDMC_HAVE_MPI 1' "$builddir/config.h" 2>/dev/null || { echo "# edmc built without MPI"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# root in containers and CI; 2 ranks on however few cores
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# under LeakSanitizer (the ASan run of CI) what Open MPI and OpenBLAS keep at
# exit is not ours to report: full stacks (their libraries have no frame
# pointers) and components kept loaded, so that the suppressions can name them
export OMPI_MCA_mca_base_component_disable_dlclose=1
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
printf 'leak:%s\n' libmpi libopen-pal libopen-rte libpmix libhwloc libevent mca_ libucp libucs libfabric libopenblas \
    >"$tmp/lsan.supp"
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$tmp/lsan.supp:print_suppressions=0"
mpi() { mpirun -n "$@"; }
small="-D model_channels=16 -D channels_per_head=16"
args="--model=$tiny $small --data=builtin:shapes --batch=8 --batch-gpu=2 --rampup=0 --lr=0.01 --threads=1 --status=32 --snapshot=1000"
# same tensors, to the bit (st_diff's tolerance 0 over every tensor)
same_tensors() { "$st_diff" "$1" "$2" 0 >/dev/null 2>&1; }

# ---------------------------------------------------------------- 2 ranks = 1 process
# 2 passes of 2 images per rank and step, 4 passes in the single process
# shellcheck disable=SC2086
"$edmc" train $args --outdir="$tmp/one" --duration=64 >"$tmp/one.out" 2>&1
# shellcheck disable=SC2086
if mpi 2 "$edmc" train $args --outdir="$tmp/two" --duration=64 >"$tmp/two.out" 2>"$tmp/two.err"; then
    tap_ok "2 ranks under mpirun train"
else
    tap_not_ok "2 ranks under mpirun" "$(head -c 800 "$tmp/two.err")"
fi
if grep -q "over 2 ranks (4 per rank, 2 per pass)" "$tmp/two.out" && [ "$(grep -c '^kimg' "$tmp/two.out")" -eq 2 ]; then
    tap_ok "rank 0 alone prints the status, which names the ranks"
else
    tap_not_ok "the status of 2 ranks" "$(cat "$tmp/two.out")"
fi
state=training-state-000000000064.safetensors
if same_tensors "$tmp/one/$state" "$tmp/two/$state"; then
    tap_ok "the checkpoint of 2 ranks holds the single process's weights, moments and EMAs, bit for bit"
else
    tap_not_ok "2 ranks vs 1 process" "$("$st_diff" "$tmp/one/$state" "$tmp/two/$state" 0 2>&1 | tail -n 3)"
fi
snap=network-snapshot-0000000-0.100.safetensors
if same_tensors "$tmp/one/$snap" "$tmp/two/$snap"; then
    tap_ok "and so does its EMA snapshot"
else
    tap_not_ok "snapshots of 2 ranks vs 1 process" "$("$st_diff" "$tmp/one/$snap" "$tmp/two/$snap" 0 2>&1 | tail -n 3)"
fi
loss() { sed 's/.*"loss":\([^,]*\),.*/\1/' "$1/stats.jsonl" | tr '\n' ' '; }
if [ "$(loss "$tmp/one")" = "$(loss "$tmp/two")" ] && [ -n "$(loss "$tmp/one")" ]; then
    tap_ok "the losses in stats.jsonl are the same numbers ($(loss "$tmp/two"))"
else
    tap_not_ok "losses differ" "1 process: $(loss "$tmp/one")" "2 ranks: $(loss "$tmp/two")"
fi
if [ "$(find "$tmp/two" -name '*.tmp.*' | wc -l)" -eq 0 ] && [ "$(find "$tmp/two" -type f ! -name .lock | wc -l)" -eq 4 ]; then
    tap_ok "rank 0 alone wrote the folder (stats, checkpoint, 2 snapshots)"
else
    tap_not_ok "the folder of 2 ranks" "$(ls -a "$tmp/two")"
fi

# ---------------------------------------------------------------- 3 ranks = 1 process
# a number of ranks that is not a power of 2 (the all-reduce's slices of unequal sizes): 12 images a step,
# 2 passes of 2 on each of 3 ranks, 6 passes in the single process
state48=training-state-000000000048.safetensors
# shellcheck disable=SC2086
"$edmc" train $args --batch=12 --outdir="$tmp/one12" --duration=48 >/dev/null 2>&1
# shellcheck disable=SC2086
mpi 3 "$edmc" train $args --batch=12 --outdir="$tmp/three" --duration=48 >"$tmp/three.out" 2>"$tmp/three.err"
st=$?
if [ "$st" -eq 0 ] && grep -q "over 3 ranks (4 per rank, 2 per pass)" "$tmp/three.out" &&
    same_tensors "$tmp/one12/$state48" "$tmp/three/$state48" && [ "$(loss "$tmp/one12")" = "$(loss "$tmp/three")" ]; then
    tap_ok "3 ranks: the single process's weights, moments, EMAs and losses, bit for bit"
else
    tap_not_ok "3 ranks vs 1 process (exit $st)" "$(head -c 600 "$tmp/three.err")" \
        "$("$st_diff" "$tmp/one12/$state48" "$tmp/three/$state48" 0 2>&1 | tail -n 3)"
fi

# ---------------------------------------------------------------- non-finite gradients
# a diverging run (--lr=1e30): the count of non-finite gradients zeroed is of the summed gradients, so 2 ranks
# count what 1 process counts (not each rank's count added up), and both stop after the same records
nf() { sed 's/.*"loss":\([^,]*\),.*"nonfinite_grads":\([0-9]*\).*/\1:\2/' "$1/stats.jsonl" | tr '\n' ' '; }
# shellcheck disable=SC2086
"$edmc" train $args --lr=1e30 --status=8 --max-nonfinite=3 --outdir="$tmp/nf1" --duration=64 >/dev/null 2>&1
# shellcheck disable=SC2086
mpi 2 "$edmc" train $args --lr=1e30 --status=8 --max-nonfinite=3 --outdir="$tmp/nf2" --duration=64 >/dev/null 2>"$tmp/nf2.err"
st=$?
if [ "$st" -ne 0 ] && [ "$(nf "$tmp/nf1")" = "$(nf "$tmp/nf2")" ] && nf "$tmp/nf2" | grep -q "null:[1-9]" &&
    grep -q "^rank 0: edmc: error: the loss was not finite for 3 status intervals" "$tmp/nf2.err"; then
    tap_ok "non-finite gradients over 2 ranks: the single process's counts ($(nf "$tmp/nf2" | cut -d' ' -f2))"
else
    tap_not_ok "non-finite gradients, 2 ranks vs 1 (exit $st)" "1 process: $(nf "$tmp/nf1")" "2 ranks: $(nf "$tmp/nf2")" \
        "$(head -c 400 "$tmp/nf2.err")"
fi

# ---------------------------------------------------------------- resume with other numbers of ranks
# 2 ranks to 64 images, 1 process to 96, 2 ranks to 128 = 1 process to 128
# shellcheck disable=SC2086
"$edmc" train $args --outdir="$tmp/one" --resume --duration=128 >/dev/null 2>&1
"$edmc" train --resume --outdir="$tmp/two" --batch-gpu=2 --threads=1 --duration=96 >/dev/null 2>&1
if mpi 2 "$edmc" train --resume --outdir="$tmp/two" --batch-gpu=2 --threads=1 --duration=128 >"$tmp/r.out" 2>"$tmp/r.err" &&
    same_tensors "$tmp/one/training-state-000000000128.safetensors" "$tmp/two/training-state-000000000128.safetensors"; then
    tap_ok "2 ranks, then 1 process, then 2 ranks again: the single run's state at 128 images"
else
    tap_not_ok "resume with another number of ranks" "$(cat "$tmp/r.out" "$tmp/r.err" | head -c 800)" \
        "$("$st_diff" "$tmp/one/training-state-000000000128.safetensors" "$tmp/two/training-state-000000000128.safetensors" 0 2>&1 | tail -n 2)"
fi
if [ "$(loss "$tmp/one")" = "$(loss "$tmp/two")" ]; then
    tap_ok "and the same stats.jsonl losses"
else
    tap_not_ok "losses after resuming" "1 process: $(loss "$tmp/one")" "ranks: $(loss "$tmp/two")"
fi

# ---------------------------------------------------------------- errors
# shellcheck disable=SC2086
mpi 2 "$edmc" train $args --batch=6 --outdir="$tmp/odd" --duration=64 >/dev/null 2>"$tmp/odd.err"
st=$?
if [ "$st" -ne 0 ] && grep -q "^rank 0: edmc: error: --batch=6 over 2 ranks is 3 images per rank" "$tmp/odd.err" &&
    grep -q "^rank 1: edmc: error: --batch=6 over 2 ranks" "$tmp/odd.err" && [ "$(grep -c "error" "$tmp/odd.err")" -eq 2 ] &&
    [ "$(grep -c "^rank 0: " "$tmp/odd.err")" -eq 1 ] && [ "$(grep -c "^rank 1: " "$tmp/odd.err")" -eq 1 ]; then
    tap_ok "an error of every rank: each rank says it once, prefixed with its rank"
else
    tap_not_ok "a usage error over 2 ranks (exit $st)" "$(head -c 800 "$tmp/odd.err")"
fi
# shellcheck disable=SC2086
if ! mpi 2 "$edmc" train $args --collective=nccl --outdir="$tmp/nccl-cpu" --duration=8 >/dev/null 2>"$tmp/nccl-cpu.err" &&
    [ "$(grep -c "edmc: error: --collective=nccl reduces device memory" "$tmp/nccl-cpu.err")" -eq 2 ]; then
    tap_ok "--collective=nccl on CPU ranks: a usage error"
else
    tap_not_ok "--collective=nccl on the CPU" "$(head -c 600 "$tmp/nccl-cpu.err")"
fi
: >"$tmp/afile"
# shellcheck disable=SC2086
mpi 2 "$edmc" train $args --outdir="$tmp/afile/run" --duration=64 >/dev/null 2>"$tmp/r0.err"
st=$?
if [ "$st" -ne 0 ] && [ "$(grep -c 'error' "$tmp/r0.err")" -eq 1 ] && grep -q "^rank 0: edmc: error: .*afile/run" "$tmp/r0.err"; then
    tap_ok "a failure of rank 0 alone (its folder) ends both ranks, said once by rank 0"
else
    tap_not_ok "rank 0's failure (exit $st)" "$(head -c 800 "$tmp/r0.err")"
fi
# shellcheck disable=SC2086
if ! SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=2 SLURM_LOCALID=1 "$edmc" train $args --outdir="$tmp/slurm" --duration=8 \
    >/dev/null 2>"$tmp/slurm.err" && grep -q "^rank 1: edmc: error: Slurm says rank 1 of 2" "$tmp/slurm.err"; then
    tap_ok "Slurm's variables give the rank (and a process alone is told it is not rank 1 of 2)"
else
    tap_not_ok "Slurm's rank" "$(head -c 600 "$tmp/slurm.err")"
fi

# the launcher's variables without a launcher (runtime/dist.h): a rank out of range, a batch script's
# SLURM_NTASKS (no srun step: one process), PMI's variables (MPICH's Hydra), a rank on the node out of range
# alone ENV...: edmc train started by hand with ENV (no other launcher's variables), output in $tmp/alone.{out,err}
alone() {
    # shellcheck disable=SC2086
    env -u SLURM_PROCID -u SLURM_STEP_NUM_TASKS -u SLURM_NTASKS -u SLURM_LOCALID -u PMI_RANK -u PMI_SIZE \
        -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE "$@" "$edmc" train $args --outdir="$tmp/alone" --duration=8 \
        >"$tmp/alone.out" 2>"$tmp/alone.err"
}
alone SLURM_PROCID=2 SLURM_STEP_NUM_TASKS=2
st=$?
if [ "$st" -eq 2 ] && [ "$(cat "$tmp/alone.err")" = "edmc: error: the launcher's environment is inconsistent: \
SLURM_PROCID=2, SLURM_STEP_NUM_TASKS=2 (a rank in 0..size-1)" ] && [ ! -e "$tmp/alone" ]; then
    tap_ok "SLURM_PROCID=2 of SLURM_STEP_NUM_TASKS=2: a usage error, one line, nothing written"
else
    tap_not_ok "an inconsistent Slurm rank (exit $st)" "$(cat "$tmp/alone.err")"
fi
alone SLURM_PROCID=0 SLURM_NTASKS=4
st=$?
if [ "$st" -eq 0 ] && grep -q "^training .*: 8 images per step (2 per pass)" "$tmp/alone.out" && [ ! -s "$tmp/alone.err" ]; then
    tap_ok "SLURM_NTASKS=4 without an srun step (a batch script): one process trains alone"
else
    tap_not_ok "a batch script's SLURM_NTASKS (exit $st)" "$(cat "$tmp/alone.out" "$tmp/alone.err" | head -c 600)"
fi
rm -rf "$tmp/alone"
alone PMI_RANK=1 PMI_SIZE=2
st=$?
if [ "$st" -ne 0 ] && [ "$(cat "$tmp/alone.err")" = "rank 1: edmc: error: PMI says rank 1 of 2, MPI says rank 0 of 1: is edmc \
started by the launcher of the MPI it was built with?" ]; then
    tap_ok "PMI_RANK and PMI_SIZE give the rank (and a process alone is told it is not rank 1 of 2)"
else
    tap_not_ok "PMI's rank (exit $st)" "$(cat "$tmp/alone.err")"
fi
alone PMI_RANK=0 PMI_SIZE=2 MPI_LOCALRANKID=2 MPI_LOCALNRANKS=2
st=$?
if [ "$st" -eq 2 ] && grep -q "^edmc: error: the launcher's environment is inconsistent: MPI_LOCALRANKID=2, \
MPI_LOCALNRANKS=2 (the rank on the node" "$tmp/alone.err"; then
    tap_ok "a rank on the node beyond the node's ranks (MPI_LOCALRANKID=2 of 2): a usage error naming them"
else
    tap_not_ok "an inconsistent local rank (exit $st)" "$(cat "$tmp/alone.err")"
fi

# ---------------------------------------------------------------- CUDA ranks (emulated)
# --device=cuda over the emulating driver (tests/cli/cuda_emu.sh): 2 ranks on
# "GPU 0" (CUDA_VISIBLE_DEVICES=0: one GPU each) against 1 CUDA process, one
# step of one pass per rank, so the same bits: the gradients through the host
# by MPI (--collective=mpi), then on the "devices" by the fake NCCL
# (tests/fakecuda/fake_nccl.c: its checks of the calls, buffers and order)
emu="$builddir/tests/emu/cuda_emu.so"
fake_nccl="$builddir/tests/fakecuda/fake_nccl.so"
if [ -f "$emu" ] && [ -f "$fake_nccl" ] && command -v "${EDMC_EMU_CXX:-g++}" >/dev/null 2>&1; then
    case $emu in /*) ;; *) emu="$PWD/$emu" ;; esac
    case $fake_nccl in /*) ;; *) fake_nccl="$PWD/$fake_nccl" ;; esac
    cache="${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}"
    case $cache in /*) ;; *) cache="$PWD/$cache" ;; esac
    mkdir -p "$cache"
    mkdir -p "$tmp/ncclfiles"
    export EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache"
    cuda_args="--model=$tiny --data=builtin:shapes16 --batch=4 --batch-gpu=2 --duration=4 --status=4 --seed=1
        --rampup=0.01 --snapshot=0 --device=cuda --precision=fp32"
    state=training-state-000000000004.safetensors
    # shellcheck disable=SC2086
    "$edmc" train $cuda_args --outdir="$tmp/cuda1" >"$tmp/cuda1.out" 2>&1
    # cuda_ranks NAME ARGS...: 2 emulated CUDA ranks into $tmp/NAME (output in $tmp/NAME.out)
    cuda_ranks() {
        name=$1
        shift
        # shellcheck disable=SC2086
        CUDA_VISIBLE_DEVICES=0 FAKE_CUDA_VERBOSE=1 FAKE_NCCL_VERBOSE=1 EDMC_NCCL="$fake_nccl" TMPDIR="$tmp/ncclfiles" \
            FAKE_CUDA_DROP_WAITS="${FAKE_CUDA_DROP_WAITS:-0}" mpi 2 -x EDMC_CUDA_DRIVER -x EDMC_CUBLASLT -x EDMC_CACHE_DIR -x CUDA_VISIBLE_DEVICES -x FAKE_CUDA_VERBOSE \
            -x FAKE_NCCL_VERBOSE -x EDMC_NCCL -x TMPDIR -x FAKE_CUDA_DROP_WAITS \
            "$edmc" train $cuda_args "$@" --outdir="$tmp/$name" >"$tmp/$name.out" 2>&1
    }
    clean() { ! grep -q "fake cuda: \|fake cublasLt: \|fake nccl: " "$1"; }
    # mpi: through the host; nccl: overlapped, one bucket of at most 25 MiB (the tiny model's 2.8 MiB); nccl-small:
    # buckets of at most 0.25 MiB, each reduced as the backward pass finishes it; nccl-off: after the backward pass
    for run in mpi:--collective=mpi nccl:--collective=nccl nccl-small:--collective=nccl:--bucket-mib=0.25 \
        nccl-off:--collective=nccl:--overlap=off; do
        name=${run%%:*}
        # shellcheck disable=SC2046
        cuda_ranks "$name" $(echo "${run#*:}" | tr ':' ' ')
        coll=${name%%-*}
        if same_tensors "$tmp/cuda1/$state" "$tmp/$name/$state" && grep -q "summed over the ranks by $coll" \
            "$tmp/$name.out" && clean "$tmp/$name.out"; then
            tap_ok "2 CUDA ranks (emulated), $(echo "${run#*:}" | tr ':' ' '): the single CUDA process's state, bit for bit"
        else
            tap_not_ok "2 CUDA ranks vs 1, $name" \
                "$(grep -v 'fake-cuda stats' "$tmp/$name.out" | head -c 800)" \
                "$("$st_diff" "$tmp/cuda1/$state" "$tmp/$name/$state" 0 2>&1 | tail -n 2)"
        fi
    done
    # not overlapped: one group of one all-reduce per parameter; overlapped: one group per bucket, as many as
    # edmc formed (and more than one), the same calls on both ranks (the fake compares call k's floats and group);
    # the fake's files gone
    calls=$(grep -c "fake-nccl stats: rank=[01] groups=1 allreduces=59 " "$tmp/nccl-off.out")
    buckets=$(sed -n 's/.*by nccl, in \([0-9]*\) buckets of at most 0.25 MiB.*/\1/p' "$tmp/nccl-small.out")
    grouped=$(grep -c "fake-nccl stats: rank=[01] groups=${buckets:-x} allreduces=59 " "$tmp/nccl-small.out")
    if [ "$calls" -eq 2 ] && [ "${buckets:-0}" -gt 1 ] && [ "$grouped" -eq 2 ] && [ -z "$(ls -A "$tmp/ncclfiles")" ]; then
        tap_ok "NCCL: 59 in-place float32 sums on each rank, in one group (--overlap=off) or one per bucket ($buckets)"
    else
        tap_not_ok "NCCL's calls (buckets '$buckets')" "$(grep "fake-nccl\|bucket" "$tmp/nccl-off.out" "$tmp/nccl-small.out")" \
            "$(ls -A "$tmp/ncclfiles")"
    fi
    # the overlap overlaps: the fake driver counts the kernels and matmuls queued between the step's first
    # all-reduce and its last (gradient accumulations left out): the backward pass's work after the first bucket
    # went out, on both ranks; none after the backward pass (--overlap=off)
    between() { sed -n 's/.*fake-cuda stats: .* work_between_collectives=\([0-9]*\).*/\1/p' "$1" | sort -n | tr '\n' ' '; }
    on=$(between "$tmp/nccl-small.out")
    off=$(between "$tmp/nccl-off.out")
    if [ "$(printf '%s' "$on" | wc -w)" -eq 2 ] && [ "${on%% *}" -gt 0 ] && [ "$off" = "0 0 " ]; then
        tap_ok "the first bucket's all-reduce is queued before the backward pass ends (then ${on%% *} and more kernels)"
    else
        tap_not_ok "the overlap (kernels between the first and last all-reduce: overlapped '$on', --overlap=off '$off')" \
            "$(grep "fake-cuda stats" "$tmp/nccl-small.out" "$tmp/nccl-off.out")"
    fi
    # fused plans (--fuse=all) over NCCL: the single fused process's state
    # shellcheck disable=SC2086
    "$edmc" train $cuda_args --fuse=all --outdir="$tmp/cuda1-fused" >"$tmp/cuda1-fused.out" 2>&1
    cuda_ranks nccl-fused --collective=nccl --bucket-mib=0.25 --fuse=all
    if same_tensors "$tmp/cuda1-fused/$state" "$tmp/nccl-fused/$state" && grep -q "summed over the ranks by nccl" \
        "$tmp/nccl-fused.out" && clean "$tmp/nccl-fused.out"; then
        tap_ok "2 CUDA ranks (emulated), --fuse=all over NCCL: the single fused process's state, bit for bit"
    else
        tap_not_ok "2 fused CUDA ranks vs 1" "$(grep -v 'fake-cuda stats' "$tmp/nccl-fused.out" | head -c 800)" \
            "$("$st_diff" "$tmp/cuda1-fused/$state" "$tmp/nccl-fused/$state" 0 2>&1 | tail -n 2)"
    fi
    # the fused plan computes a parameter's final gradient (the weight-normalization backward) soon after the
    # backward pass reaches its layer, not at the end: its buckets overlap the rest of the pass too
    on=$(between "$tmp/nccl-fused.out")
    if [ "$(printf '%s' "$on" | wc -w)" -eq 2 ] && [ "${on%% *}" -gt 0 ]; then
        tap_ok "--fuse=all: the first bucket's all-reduce is queued before the backward pass ends (then ${on%% *} and more kernels)"
    else
        tap_not_ok "the fused plan's overlap (kernels between the first and last all-reduce: '$on')" \
            "$(grep "fake-cuda stats\|bucket" "$tmp/nccl-fused.out")"
    fi
    # --collective=auto (the default) where NCCL does not open, on every rank or on rank 1 only (NCCL's set-up
    # agrees first): the gradients go through MPI, rank 0 says why, once; --collective=nccl: an error, said by
    # the rank that failed and by rank 0; a rank whose ncclCommInitRank fails after the others' returned (the
    # fake's FAKE_NCCL_FAIL_INIT_RANK) would sum with another library than theirs: every rank stops
    # nccl_where NAME MISSING FAIL_INIT ARGS...: 2 emulated CUDA ranks, no NCCL on rank MISSING (all: on every rank)
    nccl_where() {
        name=$1 missing=$2 fail_init=$3
        shift 3
        # shellcheck disable=SC2016,SC2086
        CUDA_VISIBLE_DEVICES=0 EDMC_NCCL="$fake_nccl" TMPDIR="$tmp/ncclfiles" MISSING=$missing \
            FAKE_NCCL_FAIL_INIT_RANK=$fail_init mpi 2 -x EDMC_CUDA_DRIVER -x EDMC_CUBLASLT -x EDMC_CACHE_DIR \
            -x CUDA_VISIBLE_DEVICES -x EDMC_NCCL -x TMPDIR -x MISSING -x FAKE_NCCL_FAIL_INIT_RANK sh -c \
            'if [ "$MISSING" = all ] || [ "$MISSING" = "$OMPI_COMM_WORLD_RANK" ]; then
                export EDMC_NCCL=/nonexistent/libnccl.so.2; fi; exec "$@"' sh "$edmc" train $cuda_args "$@" \
            --outdir="$tmp/$name" >"$tmp/$name.out" 2>&1
    }
    nccl_where auto-none all ""
    st=$?
    if [ "$st" -eq 0 ] && [ "$(grep -c "^NCCL not used (no NCCL (/nonexistent/libnccl.so.2 not found" "$tmp/auto-none.out")" -eq 1 ] &&
        grep -q "summed over the ranks by mpi" "$tmp/auto-none.out" && same_tensors "$tmp/cuda1/$state" "$tmp/auto-none/$state"; then
        tap_ok "--collective=auto, no NCCL on any rank: MPI, rank 0 says why once; the single process's state"
    else
        tap_not_ok "auto without NCCL (exit $st)" "$(head -c 800 "$tmp/auto-none.out")"
    fi
    nccl_where auto-r1 1 ""
    st=$?
    if [ "$st" -eq 0 ] && [ "$(grep -c "^NCCL not used (rank 1 could not set NCCL up): the gradients go through the host, \
by MPI" "$tmp/auto-r1.out")" -eq 1 ] && same_tensors "$tmp/cuda1/$state" "$tmp/auto-r1/$state"; then
        tap_ok "--collective=auto, no NCCL on rank 1 only: every rank sums by MPI, rank 0 names rank 1"
    else
        tap_not_ok "auto without NCCL on rank 1 (exit $st)" "$(head -c 800 "$tmp/auto-r1.out")"
    fi
    nccl_where nccl-r1 1 "" --collective=nccl
    st=$?
    if [ "$st" -ne 0 ] && grep -q "^rank 1: edmc: error: no NCCL (/nonexistent/libnccl.so.2" "$tmp/nccl-r1.out" &&
        grep -q "^rank 0: edmc: error: rank 1 could not set NCCL up" "$tmp/nccl-r1.out" &&
        [ "$(grep -c "edmc: error" "$tmp/nccl-r1.out")" -eq 2 ]; then
        tap_ok "--collective=nccl, no NCCL on rank 1: rank 1 says why, rank 0 names it"
    else
        tap_not_ok "nccl without NCCL on rank 1 (exit $st)" "$(head -c 800 "$tmp/nccl-r1.out")"
    fi
    nccl_where init-r1 none 1
    st=$?
    if [ "$st" -ne 0 ] && [ "$(grep -c "^rank [01]: edmc: error: rank 1 could not set up NCCL and rank 0 did: every rank \
must find the same libraries" "$tmp/init-r1.out")" -eq 2 ] &&
        grep -q "^rank 1: edmc: note: here NCCL failed: NCCL: ncclCommInitRank failed" "$tmp/init-r1.out"; then
        tap_ok "--collective=auto, NCCL set up on rank 0 only: every rank stops, saying so (rank 1 why)"
    else
        tap_not_ok "NCCL on rank 0 only (exit $st)" "$(head -c 800 "$tmp/init-r1.out")"
    fi
    # accumulation over 2 passes per rank: the last pass's buckets are reduced as its backward pass goes, the
    # first pass only accumulates: the same bits as reducing after the backward pass
    cuda_ranks acc-on --collective=nccl --bucket-mib=0.25 --batch-gpu=1
    cuda_ranks acc-off --collective=nccl --overlap=off --batch-gpu=1
    if same_tensors "$tmp/acc-on/$state" "$tmp/acc-off/$state" && clean "$tmp/acc-on.out" && clean "$tmp/acc-off.out"; then
        tap_ok "2 passes per rank: overlapped buckets give the bits of the all-reduce after the backward pass"
    else
        tap_not_ok "overlap with accumulation" "$(grep -v 'fake-cuda stats' "$tmp/acc-on.out" | head -c 600)" \
            "$("$st_diff" "$tmp/acc-on/$state" "$tmp/acc-off/$state" 0 2>&1 | tail -n 2)"
    fi
    # the check can fail: with the driver's cuStreamWaitEvent made a no-op (as if edmc forgot it), the first
    # bucket's all-reduce is not ordered after the kernel that accumulated its last gradient: a race, every rank stops
    FAKE_CUDA_DROP_WAITS=1 cuda_ranks race --collective=nccl --bucket-mib=0.25 --rank-timeout=10
    st=$?
    if [ "$st" -ne 0 ] && grep -q "fake cuda: ncclAllReduce (call 1): a race: .* which edm_grad_acc_f32 (stream 1) touched" \
        "$tmp/race.out" && grep -q "^rank 0: edmc: error: the gradient all-reduce of step 1" "$tmp/race.out"; then
        tap_ok "an all-reduce not ordered after its bucket's last writer is caught (a race, every rank stops)"
    else
        tap_not_ok "the race check (exit $st)" "$(grep -v 'fake-cuda stats' "$tmp/race.out" | head -c 800)"
    fi
    # a rank that fails during its last pass (rank 1's first cuStreamWaitEvent) still sends every bucket, so
    # rank 0's all-reduce ends and both learn of it at the agreement after the passes, not after --rank-timeout
    t0=$(date +%s)
    # shellcheck disable=SC2016,SC2086
    CUDA_VISIBLE_DEVICES=0 FAKE_NCCL_VERBOSE=1 EDMC_NCCL="$fake_nccl" TMPDIR="$tmp/ncclfiles" \
        mpi 2 -x EDMC_CUDA_DRIVER -x EDMC_CUBLASLT -x EDMC_CACHE_DIR -x CUDA_VISIBLE_DEVICES -x FAKE_NCCL_VERBOSE \
        -x EDMC_NCCL -x TMPDIR sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export FAKE_CUDA_FAIL=cuStreamWaitEvent; fi
            exec "$@"' sh "$edmc" train $cuda_args --collective=nccl --bucket-mib=0.25 --rank-timeout=100 \
        --outdir="$tmp/fail1" >"$tmp/fail1.out" 2>&1
    st=$?
    secs=$(($(date +%s) - t0))
    if [ "$st" -ne 0 ] && [ "$secs" -lt 100 ] && grep -q "^rank 1: edmc: error: the gradient all-reduce of step 1, bucket 0: \
cuStreamWaitEvent failed" "$tmp/fail1.out" && grep -q "^rank 0: edmc: error: rank 1 failed" "$tmp/fail1.out" &&
        [ "$(grep -c "fake-nccl stats: rank=[01] groups=${buckets:-x} " "$tmp/fail1.out")" -eq 2 ]; then
        tap_ok "a rank failing in its last pass still sends its $buckets buckets: both stop in $secs s, not --rank-timeout"
    else
        tap_not_ok "a rank failing during the overlap (exit $st after $secs s)" \
            "$(grep -v 'fake-cuda stats' "$tmp/fail1.out" | head -c 800)"
    fi
    # nccl_stuck NAME VAR: 2 emulated CUDA ranks over the fake NCCL with VAR=1 (rank 1 hangs where VAR says),
    # --rank-timeout=3, into $tmp/NAME.out; st: the exit status, secs: how long it took
    nccl_stuck() {
        t0=$(date +%s)
        # shellcheck disable=SC2086
        env CUDA_VISIBLE_DEVICES=0 EDMC_NCCL="$fake_nccl" TMPDIR="$tmp/ncclfiles" "$2=1" \
            mpirun -n 2 -x EDMC_CUDA_DRIVER -x EDMC_CUBLASLT -x EDMC_CACHE_DIR -x CUDA_VISIBLE_DEVICES -x EDMC_NCCL \
            -x TMPDIR -x "$2" "$edmc" train $cuda_args --duration=8 --collective=nccl --rank-timeout=3 \
            --outdir="$tmp/$1" >"$tmp/$1.out" 2>&1
        st=$?
        secs=$(($(date +%s) - t0))
    }
    # a rank stuck inside NCCL: the watchdog aborts the communicator after --rank-timeout, every rank stops
    nccl_stuck cuda-hang FAKE_NCCL_HANG_RANK
    if [ "$st" -ne 0 ] && [ "$secs" -lt 120 ] && grep -q "^rank 0: edmc: error: the gradient all-reduce of step 1: no \
answer from the other ranks for 3 s (NCCL)" "$tmp/cuda-hang.out"; then
        tap_ok "a rank stuck in NCCL: the watchdog aborts, every rank ends ($secs s in all, --rank-timeout=3)"
    else
        tap_not_ok "a rank stuck in NCCL (exit $st after $secs s)" "$(grep -v 'fake-cuda stats' "$tmp/cuda-hang.out" | head -c 800)"
    fi
    # a rank whose ncclCommInitRank never returns (a blocking init waiting for a peer that never connects):
    # that rank gives up after --rank-timeout, naming the call, and every rank ends
    nccl_stuck cuda-init-hang FAKE_NCCL_HANG_INIT_RANK
    if [ "$st" -ne 0 ] && [ "$secs" -lt 120 ] && grep -q "^rank 1: edmc: error: .*ncclCommInitRank did not return \
within 3 s" "$tmp/cuda-init-hang.out"; then
        tap_ok "a rank stuck in ncclCommInitRank: it says so after --rank-timeout=3, every rank ends ($secs s in all)"
    else
        tap_not_ok "a rank stuck in ncclCommInitRank (exit $st after $secs s)" \
            "$(grep -v 'fake-cuda stats' "$tmp/cuda-init-hang.out" | head -c 800)"
    fi
    unset EDMC_CUDA_DRIVER EDMC_CUBLASLT EDMC_CACHE_DIR
else
    echo "# no emulating CUDA driver or fake NCCL (configured without the CUDA toolkit): the CUDA ranks are not checked"
fi

# ---------------------------------------------------------------- a rank that hangs or dies
# rank_pid DIR R: the pid of rank R of the run writing DIR
rank_pid() {
    for p in $(pgrep -f "outdir=$1 "); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
    done
}
long() { # DIR TIMEOUT: a long run in the background; $run_pid is mpirun's
    # shellcheck disable=SC2086
    mpi 2 "$edmc" train $args --snapshot=0 --checkpoint=16 --outdir="$1" --duration=1000000 --rank-timeout="$2" \
        >"$1.out" 2>"$1.err" &
    run_pid=$!
    i=0
    while [ $i -lt 300 ] && ! grep -q '"step":8' "$1/stats.jsonl" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
}
# waits at most $2 seconds for pid $1; 0 when it ended (its status in $ended)
wait_bounded() {
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -9 "$1"; wait "$1"; return 1; fi
    wait "$1"
    ended=$?
    return 0
}

long "$tmp/hang" 3
p=$(rank_pid "$tmp/hang" 1)
t0=$(date +%s)
[ -n "$p" ] && kill -STOP "$p"
if [ -n "$p" ] && wait_bounded "$run_pid" 60 && [ "$ended" -ne 0 ] &&
    grep -q "rank 0: edmc: error: .*no answer from the other ranks for [0-9]* s" "$tmp/hang.err"; then
    tap_ok "a rank that hangs (SIGSTOP): rank 0 says so and every rank ends, in $(($(date +%s) - t0)) s (--rank-timeout=3)"
else
    tap_not_ok "a hanging rank (pid '$p', exit ${ended:-none})" "$(head -c 800 "$tmp/hang.err")"
fi
[ -n "$p" ] && kill -9 "$p" 2>/dev/null

long "$tmp/dead" 600
p=$(rank_pid "$tmp/dead" 1)
p0=$(rank_pid "$tmp/dead" 0)
t0=$(date +%s)
[ -n "$p" ] && kill -9 "$p"
if [ -n "$p" ] && wait_bounded "$run_pid" 60 && [ "$ended" -ne 0 ] &&
    grep -q "process rank 1 .*exited on signal 9" "$tmp/dead.err"; then
    tap_ok "a rank that dies (SIGKILL): every rank ends, in $(($(date +%s) - t0)) s, not at --rank-timeout=600 (mpirun names it)"
else
    tap_not_ok "a dead rank (pid '$p', exit ${ended:-none})" "$(head -c 800 "$tmp/dead.err")"
fi
# what the dead run left, before anything resumes: every checkpoint whole (each reads through, st_diff against
# itself), a partial write only under rank 0's temporary names (NAME.tmp.PID.N: mpirun may kill rank 0 while it
# writes); then the newest resumes with no warning (stdout: resume's fallback says "cannot resume from"), the
# temporaries removed
whole=0 broken=""
for f in "$tmp/dead"/training-state-*.safetensors; do
    if [ -f "$f" ] && same_tensors "$f" "$f"; then whole=$((whole + 1)); else broken="$broken $f"; fi
done
foreign=$(find "$tmp/dead" -name '*.tmp.*' ! -name "*.safetensors.tmp.${p0:-x}.*" ! -name "stats.jsonl.tmp.${p0:-x}.*")
newest=$(find "$tmp/dead" -name 'training-state-*.safetensors' | sort | tail -n 1)
n=$(basename "${newest:-x}" .safetensors | sed 's/^training-state-0*//')
if [ "$whole" -gt 0 ] && [ -z "$broken" ] && [ -z "$foreign" ] && [ -n "$p0" ] &&
    "$edmc" train --resume --outdir="$tmp/dead" --threads=1 --batch-gpu=2 --duration=$((${n:-0} + 8)) \
        >"$tmp/dead2.out" 2>"$tmp/dead2.err" && [ ! -s "$tmp/dead2.err" ] && ! grep -q "cannot resume" "$tmp/dead2.out" &&
    grep -q "from kimg $(awk "BEGIN { printf \"%.3f\", ${n:-0} / 1000 }") to" "$tmp/dead2.out" &&
    [ "$(find "$tmp/dead" -name '*.tmp.*' | wc -l)" -eq 0 ]; then
    tap_ok "the $whole checkpoints the dead run left are whole: one process resumes from the newest (at $n images)"
else
    tap_not_ok "resuming after a dead rank ($newest; damaged:${broken:- none}; others' temporaries: ${foreign:-none})" \
        "$(cat "$tmp/dead2.out" "$tmp/dead2.err" 2>/dev/null | head -c 600)" "$(ls -a "$tmp/dead")"
fi
tap_done
