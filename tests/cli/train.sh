#!/bin/sh
# edmc step | train on the CPU: golden parity of one step through the command
# line, a short run whose loss falls, PH-EMA snapshots and their post-hoc
# reconstruction, bit-for-bit resume, Ctrl-C, and bad options.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
wsum="$builddir/tests/tools/st_wsum"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small="-D model_channels=16 -D channels_per_head=16"   # a quicker net for the runs


# The training program: the model with training=true, differentiated.
"$edmc" dump "$tiny" --stage=train >"$tmp/train.txt" 2>&1
if grep -q "conv2d_bwd_weight" "$tmp/train.txt" && grep -q 'grad.unet.out_conv.weight' "$tmp/train.txt"; then
    tap_ok "dump --stage=train shows the backward graph"
else
    tap_not_ok "dump --stage=train" "$(head -n 3 "$tmp/train.txt")"
fi
tap_check "the training graph round-trips through XML" sh -c \
    "'$edmc' dump '$tiny' --stage=train --format=xml -o '$tmp/train.xml' && '$edmc' check '$tmp/train.xml'"

tap_check "step on the golden batch" "$edmc" step "$tiny" --weights="$golden/weights.safetensors" \
    --batch="$golden/train_step.safetensors" --lr=0.01 --output="$tmp/step.safetensors"
if [ -s "$tmp/step.safetensors" ]; then tap_ok "step wrote its result"; else tap_not_ok "step wrote nothing"; fi

# A short run: warm-up off so the learning rate is ref_lr from the start.
run() { "$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --lr=0.01 --threads=1 "$@"; }
tap_check "train 512 images" run --outdir="$tmp/a" --duration=512 --status=128 --checkpoint=256 --snapshot=0
lines=$(wc -l <"$tmp/a/stats.jsonl" 2>/dev/null || echo 0)
if [ "$lines" -eq 4 ]; then tap_ok "stats.jsonl has one line per status"; else tap_not_ok "stats.jsonl has $lines lines"; fi
first=$(sed -n '1s/.*"loss":\([0-9.e+-]*\).*/\1/p' "$tmp/a/stats.jsonl")
last=$(sed -n '$s/.*"loss":\([0-9.e+-]*\).*/\1/p' "$tmp/a/stats.jsonl")
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; then tap_ok "loss falls ($first -> $last)"
else tap_not_ok "loss did not fall ($first -> $last)"; fi
for k in kimg loss img_per_s sec_per_kimg lr mem_mib eta_s; do
    grep -q "\"$k\"" "$tmp/a/stats.jsonl" && tap_ok "stats.jsonl has $k" || tap_not_ok "stats.jsonl lacks $k"
done

# Resume: 256 images, stop, resume to 512 — the state must equal the uninterrupted run's, bit for bit.
run --outdir="$tmp/b" --duration=256 --status=128 --checkpoint=256 --snapshot=0 >/dev/null 2>&1
tap_check "resume" run --outdir="$tmp/b" --duration=512 --status=128 --checkpoint=256 --snapshot=0 --resume
if cmp -s "$tmp/a/training-state-000000000512.safetensors" "$tmp/b/training-state-000000000512.safetensors"; then
    tap_ok "resumed run ends bit for bit where the uninterrupted one does"
else
    tap_not_ok "resumed run differs from the uninterrupted one"
fi
# Gradient accumulation: batch 8 as two passes of 4 is the same step as one pass of 8
# (up to the order of float sums).
run --outdir="$tmp/g1" --duration=64 --status=64 --snapshot=0 >/dev/null 2>&1
run --outdir="$tmp/g2" --duration=64 --status=64 --snapshot=0 --batch-gpu=4 >/dev/null 2>&1
tap_check "--batch-gpu=4 gives the same weights as one pass of 8" "$builddir/tests/tools/st_diff" \
    "$tmp/g2/training-state-000000000064.safetensors" "$tmp/g1/training-state-000000000064.safetensors" 1e-4 net.
tap_check "and the same Adam moments" "$builddir/tests/tools/st_diff" \
    "$tmp/g2/training-state-000000000064.safetensors" "$tmp/g1/training-state-000000000064.safetensors" 1e-3 adam.m.

tap_expect_error "resume with another seed" 2 "--seed=5 differs from the run" run --outdir="$tmp/b" --duration=768 --resume --seed=5

# Ctrl-C: a checkpoint, a clean exit, and a note on how to resume.
# (edmc itself in the background, not a function: a subshell would ignore SIGINT)
"$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 \
    --outdir="$tmp/c" --duration=1Mi --status=64 --snapshot=0 >"$tmp/c.log" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q "kimg" "$tmp/c.log" 2>/dev/null && break; sleep 0.2; done
kill -INT "$pid"
for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
kill -KILL "$pid" 2>/dev/null   # never leave it running, whatever happened
wait "$pid"
status=$?
if [ "$status" -eq 0 ] && grep -q "stopped at" "$tmp/c.log" && ls "$tmp/c"/training-state-*.safetensors >/dev/null 2>&1; then
    tap_ok "Ctrl-C writes a checkpoint and exits cleanly"
else
    tap_not_ok "Ctrl-C: exit $status" "$(tail -n 3 "$tmp/c.log")"
fi

# PH-EMA: snapshots every 1000 images, then a post-hoc reconstruction that must
# equal the coefficient-weighted sum of the snapshots.
tap_check "train with snapshots (fp32)" run --outdir="$tmp/e" --duration=3000 --status=1000 --snapshot=1000 --checkpoint=0 --snapshot-fp32
n=$(ls "$tmp/e"/network-snapshot-*.safetensors 2>/dev/null | wc -l)
if [ "$n" -eq 6 ]; then tap_ok "6 snapshots (3 kimg x 2 std)"; else tap_not_ok "$n snapshots"; fi
tap_check "phema reconstructs from the run's snapshots" \
    "$edmc" phema --indir="$tmp/e" --outstd=0.08 --outdir="$tmp/e/phema"
tap_check "the reconstruction is the coefficient-weighted sum" "$wsum" \
    "$tmp/e/phema/phema-0000003-0.080.safetensors" "$tmp/e" network-snapshot-0000003-0.100.safetensors
tap_check "generate from a snapshot" "$edmc" generate --net="$tmp/e/network-snapshot-0000003-0.100.safetensors" \
    --seeds=0-1 --steps=4 --outdir="$tmp/e/out"

# a preset by name, and snapshots that work from any folder (the model is named by absolute path)
tap_check "--preset=edm2-tiny" env EDMC_MODELS="$srcdir/models" "$edmc" train --preset=edm2-tiny $small \
    --data=builtin:shapes --outdir="$tmp/p" --batch=8 --duration=16 --status=16 --snapshot=0 --threads=1
tap_check "generate from a snapshot in another folder" sh -c \
    "cd / && '$edmc' generate --net='$tmp/e/network-snapshot-0000003-0.050.safetensors' --seeds=0 --steps=2 --outdir='$tmp/e/out2'"

tap_expect_error "train without --data" 2 "needs --model" "$edmc" train --model="$tiny" --outdir="$tmp/x"
tap_expect_error "unknown preset" 2 "no models/edm2-huge.edm" "$edmc" train --preset=edm2-huge --data=builtin:shapes --outdir="$tmp/x"
tap_expect_error "batch not a multiple of batch-gpu" 2 "must be a multiple" run --outdir="$tmp/x" --batch=8 --batch-gpu=3
tap_expect_error "snapshots closer than 1 kimg" 2 "at least 1000 images" run --outdir="$tmp/x" --snapshot=100
tap_expect_error "bad duration" 2 "number of images" run --outdir="$tmp/x" --duration=lots
tap_expect_error "missing dataset" 1 "nowhere" run --outdir="$tmp/x" --data="$tmp/nowhere"
tap_done
