#!/bin/sh
# Training runs that lose nothing: one run per folder (a lock), stats.jsonl
# checked as written and cut back to the checkpoint on resume, stale temporary
# files cleaned, a non-finite loss stopping the run, SIGHUP treated like
# SIGTERM, and range checks on the options; step refusing non-finite results
# and its own weights as the output.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
small="-D model_channels=16 -D channels_per_head=16"
run() { "$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 "$@"; }

# --- resume cuts stats.jsonl back to the checkpoint and removes stale temporaries
run --outdir="$tmp/a" --lr=0.01 --duration=256 --status=64 --checkpoint=128 --snapshot=0 >/dev/null 2>&1 ||
    tap_not_ok "first run"
echo '{"kimg":9.0,"step":999,"loss":1.0}' >>"$tmp/a/stats.jsonl"   # written after the checkpoint, then killed
touch "$tmp/a/training-state-000000000999.safetensors.tmp.AbCdEf"
tap_check "resume" run --outdir="$tmp/a" --lr=0.01 --duration=384 --status=64 --checkpoint=128 --snapshot=0 --resume
steps=$(sed 's/.*"step":\([0-9]*\).*/\1/' "$tmp/a/stats.jsonl" | tr '\n' ' ')
if [ "$steps" = "8 16 24 32 40 48 " ]; then tap_ok "stats.jsonl: one record per interval, none repeated"
else tap_not_ok "stats.jsonl steps after resume: $steps"; fi
if ls "$tmp/a" | grep -q '\.tmp\.'; then tap_not_ok "a stale temporary file is left"; else
    tap_ok "stale temporary files removed on start"; fi
tap_expect_error "--resume with a shorter --duration" 2 "is at 384 images already" \
    run --outdir="$tmp/a" --lr=0.01 --duration=256 --resume

# --- a truncated newest checkpoint: resume from the one before it, saying so
truncate -s 5000 "$tmp/a/training-state-000000000384.safetensors"
run --outdir="$tmp/a" --lr=0.01 --duration=512 --status=64 --checkpoint=128 --snapshot=0 --resume >"$tmp/fb.out" 2>&1
status=$?
if [ "$status" -eq 0 ] && grep -q "cannot resume from .*000384.safetensors.*trying the checkpoint before it" "$tmp/fb.out"
then tap_ok "a truncated checkpoint falls back to the previous one"
else tap_not_ok "truncated checkpoint: exit $status" "$(head -c 400 "$tmp/fb.out")"; fi
steps=$(sed 's/.*"step":\([0-9]*\).*/\1/' "$tmp/a/stats.jsonl" | tr '\n' ' ')
if [ "$steps" = "8 16 24 32 40 48 56 64 " ]; then tap_ok "stats.jsonl cut back to the older checkpoint"
else tap_not_ok "stats.jsonl steps after the fallback: $steps"; fi

# --- one training per folder
"$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 \
    --outdir="$tmp/l" --lr=0.01 --duration=1Mi --status=1Mi --snapshot=0 >/dev/null 2>&1 &
first=$!
i=0
while [ ! -e "$tmp/l/.lock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
tap_expect_error "a second training into the same folder" 2 "is in use by another training" \
    run --outdir="$tmp/l" --lr=0.01 --duration=512
# SIGHUP stops the first like SIGTERM: a checkpoint, exit 0
kill -HUP "$first"
wait "$first"
status=$?
if [ "$status" -eq 0 ] && ls "$tmp/l" | grep -q '^training-state-'; then tap_ok "SIGHUP: stopped with a checkpoint"
else tap_not_ok "SIGHUP: exit $status, $(ls "$tmp/l" | tr '\n' ' ')"; fi

# --- SIGTERM mid-interval: the first record after --resume averages the whole
# interval, as in the uninterrupted run
"$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 \
    --outdir="$tmp/t" --lr=0.01 --duration=1Mi --status=1Mi --snapshot=0 >/dev/null 2>&1 &
pid=$!
sleep 2
kill -TERM "$pid"
wait "$pid"
ckpt=$(ls "$tmp/t" | grep '^training-state-' | tail -n 1)
n=$(echo "$ckpt" | sed 's/training-state-0*\([0-9][0-9]*\)\.safetensors/\1/')
if [ -n "$n" ] && [ "$n" -gt 0 ] 2>/dev/null; then
    d=$((n + 16))
    run --outdir="$tmp/t" --lr=0.01 --duration="$d" --status=1Mi --snapshot=0 --resume >/dev/null 2>&1
    run --outdir="$tmp/u" --lr=0.01 --duration="$d" --status=1Mi --snapshot=0 >/dev/null 2>&1
    a=$(sed 's/.*"loss":\([^,]*\).*/\1/' "$tmp/t/stats.jsonl")
    b=$(sed 's/.*"loss":\([^,]*\).*/\1/' "$tmp/u/stats.jsonl")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then tap_ok "after SIGTERM and --resume the record covers its whole interval"
    else tap_not_ok "record after SIGTERM and resume: '$a' vs uninterrupted '$b'"; fi
else
    tap_not_ok "SIGTERM left no checkpoint ($(ls "$tmp/t" | tr '\n' ' '))"
fi

# --- a loss that is not finite stops the run; stats.jsonl stays JSON
tap_expect_error "a diverging run stops" 1 "the loss was not finite for 2 status intervals in a row" \
    run --outdir="$tmp/n" --lr=1e30 --duration=1024 --status=32 --snapshot=0
if grep -qi 'nan\|inf' "$tmp/n/stats.jsonl"; then tap_not_ok "stats.jsonl holds NaN/Infinity"; else
    tap_ok "stats.jsonl: a non-finite loss is null"; fi
tap_expect_error "--max-nonfinite=0" 2 "--max-nonfinite=0: expected an integer from 1 to" \
    run --outdir="$tmp/n2" --max-nonfinite=0

# --- a NaN in a latent of the dataset is found when it is loaded
mk_npy() { # FILE INDEX_OF_A_NAN (-1: none): a latent (8, 16, 16) of 0.1
    {
        printf '\223NUMPY\001\000\166\000'
        printf '%s' "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 16, 16), }"
        printf '%53s\n' ''
        k=0
        while [ $k -lt 2048 ]; do
            if [ $k -eq "$2" ]; then printf '\000\000\300\177'; else printf '\315\314\314\075'; fi
            k=$((k + 1))
        done
    } >"$1"
}
mkdir -p "$tmp/npy"
for k in 0 1 3; do mk_npy "$tmp/npy/img0000000$k.npy" -1; done
mk_npy "$tmp/npy/img00000002.npy" 5
tap_expect_error "a NaN latent in the dataset" 1 "img00000002.npy: latent element 5 of channel 0 is not finite" \
    run --outdir="$tmp/d" -D label_dim=0 --data="$tmp/npy" --batch=4 --lr=0.01 --duration=16 --status=4 --snapshot=0

# --- options out of range are errors, each named once
tap_expect_error "--seed past 2^62" 2 "--seed=99999999999999999999: expected an integer from 0 to" \
    run --outdir="$tmp/s" --seed=99999999999999999999
tap_expect_error "--batch=-4 names the value once" 2 "edmc train: --batch=-4: expected a number of images" \
    run --outdir="$tmp/s" --batch=-4

# --- a malformed edmc.config in a weights file is a bad file (exit 1), not a usage error
"$edmc" init "$tiny" -o "$tmp/wc.safetensors" >/dev/null 2>&1
sed 's/\\"model_channels\\":\\"32\\"/\\"model_channels\\":\\"3+\\"/' "$tmp/wc.safetensors" >"$tmp/wbad.safetensors"
if cmp -s "$tmp/wc.safetensors" "$tmp/wbad.safetensors"; then tap_not_ok "could not corrupt edmc.config"; fi
tap_expect_error "generate with a malformed edmc.config" 1 "(metadata 'edmc.config'): -D model_channels=3+: not a valid value" \
    "$edmc" generate --net="$tmp/wbad.safetensors" --seeds=0 --steps=2 --outdir="$tmp/g"

# --- step: its output may not be its weights
"$edmc" init "$tiny" -o "$tmp/w.safetensors" >/dev/null 2>&1
cp "$tmp/w.safetensors" "$tmp/w.copy"
tap_expect_error "step --output equal to --weights" 2 "is the --weights file" \
    "$edmc" step "$tiny" --weights="$tmp/w.safetensors" --batch="$tmp/none.safetensors" --output="$tmp/w.safetensors"
if cmp -s "$tmp/w.safetensors" "$tmp/w.copy"; then tap_ok "step: the weights are untouched"; else
    tap_not_ok "step changed its weights file"; fi
tap_done
