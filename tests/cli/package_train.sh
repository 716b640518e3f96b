#!/bin/sh
# edmc compile --mode=train and train --package: a training package of the
# tiny model trains as the model file does, bit for bit (checkpoints,
# snapshots, the status lines' losses), without opening an .edm file; its
# checkpoints carry the model's source and resume, with the package or
# without it; every mistake is one clear error and a non-zero exit.  The cuda
# half runs on the fake driver (no NVRTC call, the batch and architecture
# checks) and on the emulator (the same bits as a run from the model file),
# and is skipped without them (tests/fakecuda, tests/emu).
. "$srcdir/tests/tap.sh"
edmc=$(abspath "$builddir/edmc")
tiny=$(abspath "$srcdir/models/edm2-tiny.edm")
cache=$(kernel_cache) || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# builtin:shapes has 3 classes: a run from the model file takes label_dim from
# it, a package is compiled with it
P="$tmp/train.edmpkg"
args="--data=builtin:shapes --batch=8 --rampup=0 --threads=1 --status=16 --snapshot=0"
state64=training-state-000000000064.safetensors

# same DESC A B: the two files are the same bytes
same() { if cmp -s "$2" "$3"; then tap_ok "$1"; else tap_not_ok "$1" "$(cmp "$2" "$3" 2>&1)"; fi; }
# losses DIR: the step and loss of every status line (the rest is timing)
losses() { sed 's/,"img_per_s".*//' "$1/stats.jsonl"; }

tap_check "compile --mode=train for the CPU" "$edmc" compile "$tiny" -D label_dim=3 --mode=train -o "$P"
if tr -d ' \n' <"$P" | grep -qF '"mode":"train"'; then tap_ok "the manifest says mode train"
else tap_not_ok "the manifest lacks mode train"; fi

# --- the same run from the model file and from the package
tap_check "train from the model file" "$edmc" train --model="$tiny" $args --duration=64 --outdir="$tmp/file"
if strace_usable; then
    tap_check "train --package (under strace)" traced_opens "$tmp/trace" \
        "$edmc" train --package="$P" $args --duration=64 --outdir="$tmp/pkg"
    if grep -q 'edmpkg"' "$tmp/trace" && ! grep -q '\.edm"' "$tmp/trace"; then
        tap_ok "training from the package opens no .edm file"
    else
        tap_not_ok "training from the package opened an .edm file (or not the package)" "$(grep '\.edm' "$tmp/trace" | head -n 3)"
    fi
else
    echo "# strace unavailable: the .edm check is skipped"
    tap_check "train --package" "$edmc" train --package="$P" $args --duration=64 --outdir="$tmp/pkg"
fi
same "the package's checkpoint = the model file's, bit for bit (weights, moments, EMAs, metadata)" \
    "$tmp/pkg/$state64" "$tmp/file/$state64"
losses "$tmp/file" >"$tmp/file.loss"
losses "$tmp/pkg" >"$tmp/pkg.loss"
same "the same losses at every status line" "$tmp/pkg.loss" "$tmp/file.loss"
if head -c 65536 "$tmp/pkg/$state64" | grep -q 'edmc.source'; then tap_ok "the checkpoint carries the model's source"
else tap_not_ok "the checkpoint lacks edmc.source"; fi

# --- resume: with the package, and without it (from the source the checkpoint carries)
tap_check "train --package to 32 images" "$edmc" train --package="$P" $args --duration=32 --outdir="$tmp/r1"
cp -R "$tmp/r1" "$tmp/r2"
tap_check "--resume --package to 64" "$edmc" train --package="$P" --outdir="$tmp/r1" --resume --duration=64 --threads=1
same "resumed with the package = the whole run, bit for bit" "$tmp/r1/$state64" "$tmp/file/$state64"
tap_check "--resume without the package" "$edmc" train --outdir="$tmp/r2" --resume --duration=64 --threads=1
same "resumed from the checkpoint's source = the whole run, bit for bit" "$tmp/r2/$state64" "$tmp/file/$state64"

# --- snapshots (at least 1Ki images apart): a narrower model keeps it short
small="-D model_channels=16 -D channels_per_head=16"
sargs="--data=builtin:shapes --batch=32 --duration=1Ki --rampup=0 --threads=1 --status=512 --snapshot=1Ki"
tap_check "compile a narrower model --mode=train" "$edmc" compile "$tiny" -D label_dim=3 $small --mode=train \
    -o "$tmp/small.edmpkg"
tap_check "train the narrower model from its file, with snapshots" "$edmc" train --model="$tiny" $small $sargs \
    --outdir="$tmp/sfile"
tap_check "train it from the package, with snapshots" "$edmc" train --package="$tmp/small.edmpkg" $sargs \
    --outdir="$tmp/spkg"
for std in 0.050 0.100; do
    snap=network-snapshot-0000001-$std.safetensors
    same "snapshot $std from the package = the model file's, bit for bit (the source it carries included)" \
        "$tmp/spkg/$snap" "$tmp/sfile/$snap"
done

tap_check "bench --mode=train --package" "$edmc" bench --package="$P" --mode=train --batch=2 --iters=1
if "$edmc" train --package="$P" --data=builtin:shapes --outdir="$tmp/dry" -n 2>&1 | grep -q "label_dim=3"; then
    tap_ok "train --package --dry-run shows the package's parameters"
else
    tap_not_ok "train --package --dry-run"
fi

# --- mistakes
run() { "$edmc" train $args --duration=8 --outdir="$tmp/bad" "$@"; }
"$edmc" compile "$tiny" -o "$tmp/fwd.edmpkg" >/dev/null 2>&1
"$edmc" compile "$tiny" --mode=train -o "$tmp/ten.edmpkg" >/dev/null 2>&1
"$edmc" compile "$tiny" -D label_dim=3 -D dropout=0.1 --mode=train -o "$tmp/drop.edmpkg" >/dev/null 2>&1
tap_expect_error "a forward package given to train" 2 "holds a forward run: training needs a package compiled with --mode=train" \
    run --package="$tmp/fwd.edmpkg"
tap_expect_error "a training package given to forward" 2 "holds a training run" \
    "$edmc" forward --package="$P" --weights=w --input=i --output="$tmp/o.safetensors"
tap_expect_error "--model beside --package" 2 "--model (or --preset) or --package, not both" \
    run --package="$P" --model="$tiny"
tap_expect_error "-D beside --package" 2 "do not apply to a package" run --package="$P" -D dropout=0.1
tap_expect_error "--dropout beside --package" 2 "do not apply to a package" run --package="$P" --dropout=0.1
tap_expect_error "--precision other than the package's" 2 "was compiled for --device=cpu --precision=f32 --fuse=all" \
    run --package="$P" --precision=f64
tap_expect_error "--fuse other than the package's" 2 "--fuse: the package" run --package="$P" --fuse=none
tap_expect_error "a dataset of other classes than the package's" 2 "compile the package with -D label_dim=3" \
    run --package="$tmp/ten.edmpkg"
tap_expect_error "resume a run with another package's model" 2 "configured otherwise than the run" \
    "$edmc" train --package="$tmp/drop.edmpkg" --outdir="$tmp/r1" --resume --duration=128
if [ ! -d "$tmp/bad" ]; then tap_ok "the refused runs wrote nothing"; else tap_not_ok "a refused run left $tmp/bad"; fi

# --- cuda: the package's cubins (fake driver: no NVRTC), the same bits (emulator)
fake=$(abspath "$builddir/tests/fakecuda/fake_cuda.so")
emu=$(abspath "$builddir/tests/emu/cuda_emu.so")
if [ ! -f "$fake" ] || [ ! -f "$emu" ]; then
    echo "# the fake CUDA driver and the emulator were not built: the cuda half is skipped"
    tap_done
    exit
fi
C="$tmp/cuda.edmpkg"
cargs="--data=builtin:shapes --batch=8 --duration=8 --rampup=0 --status=8 --snapshot=0 --device=cuda --precision=fp32"
state8=training-state-000000000008.safetensors
EDMC_CACHE_DIR="$cache" tap_check "compile --mode=train for cuda, sm_90, batch 8" "$edmc" compile "$tiny" -D label_dim=3 \
    --mode=train --device=cuda --arch=sm_90 --batch=8 --precision=fp32 -o "$C"
mkdir -p "$tmp/nocache"
export EDMC_CUDA_DRIVER="$fake" EDMC_CUBLASLT="$fake" EDMC_CACHE_DIR="$tmp/nocache"
    if "$edmc" train --package="$C" $cargs --outdir="$tmp/fake" >/dev/null 2>"$tmp/fake.err" &&
        ! grep -q "^fake cu" "$tmp/fake.err"; then
        tap_ok "train --package on the fake driver"
    else
        tap_not_ok "train --package on the fake driver" "$(head -n 5 "$tmp/fake.err")"
    fi
    n=$(ls "$tmp/nocache" | wc -l)
    if [ "$n" -eq 0 ]; then tap_ok "no NVRTC compilation from the package (the cache stayed empty)"
    else tap_not_ok "NVRTC cache after training from the package: $n files"; fi
    tap_expect_error "passes of a batch the package does not hold" 2 "holds kernels for passes of batch 8, but this run's passes are of 4 images" \
        "$edmc" train --package="$C" $cargs --batch-gpu=4 --outdir="$tmp/bad"
    tap_expect_error "--precision other than the cuda package's" 2 "was compiled for --device=cuda --precision=f32" \
        "$edmc" train --package="$C" $cargs --precision=fp16 --outdir="$tmp/bad"
    if command -v python3 >/dev/null 2>&1; then
        # the manifest names the cubin's architecture (it is not under a checksum of its own)
        python3 - "$C" "$tmp/sm80.edmpkg" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    e = {n: z.read(n) for n in z.namelist()}
e["manifest.json"] = e["manifest.json"].replace(b'"sm_90"', b'"sm_80"')
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as z:
    for n, b in e.items():
        z.writestr(n, b)
EOF
        tap_expect_error "the wrong architecture" 2 "holds kernels for sm_80; this GPU (NVIDIA H100 80GB HBM3 (fake)) is sm_90" \
            "$edmc" train --package="$tmp/sm80.edmpkg" $cargs --outdir="$tmp/bad"
    else
        echo "# python3 unavailable: the architecture case is skipped"
    fi
# the emulator runs the kernels' CUDA C: the package's run hands it the source
# its cubin was checked to come from
export EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache"
tap_check "train from the model file on the emulator" "$edmc" train --model="$tiny" $cargs --outdir="$tmp/efile"
tap_check "train --package on the emulator" "$edmc" train --package="$C" $cargs --outdir="$tmp/epkg"
same "emulated: the package's checkpoint = the model file's, bit for bit" "$tmp/epkg/$state8" "$tmp/efile/$state8"
# the fused plan: the executor runs the package's training plan.xml too
tap_check "compile --mode=train for cuda with --fuse=all" "$edmc" compile "$tiny" -D label_dim=3 --mode=train \
    --device=cuda --arch=sm_90 --batch=8 --precision=fp32 --fuse=all -o "$tmp/fused.edmpkg"
tap_check "train from the model file on the emulator, --fuse=all" "$edmc" train --model="$tiny" $cargs --fuse=all \
    --outdir="$tmp/ffile"
tap_check "train --package (fused plan) on the emulator" "$edmc" train --package="$tmp/fused.edmpkg" $cargs \
    --outdir="$tmp/fpkg"
same "emulated, fused: the package's checkpoint = the model file's, bit for bit" "$tmp/fpkg/$state8" "$tmp/ffile/$state8"
tap_done
