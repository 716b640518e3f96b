#!/bin/sh
# edmc train: one run per folder.  A folder that holds a run is refused
# without --resume; a resumed run takes its settings from its checkpoint and
# a setting given again must agree; the metadata says what the run used; the
# files follow the umask.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small="-D model_channels=16 -D channels_per_head=16"
run() { "$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --lr=0.01 --threads=1 \
    --status=32 "$@"; }
meta() { head -c 8192 "$1" | tr -d '\\'; }   # the safetensors header, JSON escapes dropped

umask 022
tap_check "a first run" run --outdir="$tmp/a" --duration=64 --snapshot=0
sum=$(cat "$tmp/a/stats.jsonl" "$tmp/a"/training-state-* | cksum)
tap_expect_error "the same command again is refused" 2 "holds a run already" run --outdir="$tmp/a" --duration=64
tap_expect_error "and says how to continue" 2 "continue it with --resume" run --outdir="$tmp/a" --duration=64
if [ "$(cat "$tmp/a/stats.jsonl" "$tmp/a"/training-state-* | cksum)" = "$sum" ]; then
    tap_ok "the refused run left the folder as it was"
else
    tap_not_ok "the refused run changed the folder"
fi

state="$tmp/a/training-state-000000000064.safetensors"
if meta "$state" | grep -q '"batch_size":"8"' && meta "$state" | grep -q '"rampup_Mimg":"0"'; then
    tap_ok "edmc.config records the batch and warm-up the run used"
else
    tap_not_ok "edmc.config" "$(meta "$state" | grep -o '"edmc.config":"[^}]*}' | head -c 600)"
fi
if meta "$state" | grep -q '"edmc.run":"{"model":"[^"]*edm2-tiny.edm","data":"builtin:shapes","seed":0,"batch":8'; then
    tap_ok "edmc.run records the model, the dataset, the seed and the batch"
else
    tap_not_ok "edmc.run" "$(meta "$state" | grep -o '"edmc.run":"[^}]*}' | head -c 600)"
fi
mode=$(stat -c %a "$state")
if [ "$mode" = 644 ]; then tap_ok "a checkpoint follows the umask (644)"; else tap_not_ok "checkpoint mode $mode under umask 022"; fi

# resuming: settings come from the checkpoint, a different one is an error naming both
tap_check "--resume with nothing but the folder and a longer duration" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=128 --threads=1 --status=64
if [ -f "$tmp/a/training-state-000000000128.safetensors" ]; then tap_ok "the resumed run went on to 128 images"
else tap_not_ok "no checkpoint at 128 images"; fi
tap_expect_error "a changed --ema on resume" 2 "--ema=0.2 differs from the run in '$tmp/a', which used 0.05,0.1" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=192 --ema=0.2
tap_expect_error "a changed --batch on resume" 2 "--batch=16 differs from the run in '$tmp/a', which used 8" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=192 --batch=16
tap_expect_error "a changed --data on resume" 2 "--data=builtin:shapes16 differs" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=192 --data=builtin:shapes16
tap_expect_error "a changed --lr on resume" 2 "--lr=0.02 differs" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=192 --lr=0.02
tap_expect_error "a model configured otherwise on resume names the difference" 2 "model_channels = 16 vs 32" \
    "$edmc" train --resume --outdir="$tmp/a" --duration=192 --model="$tiny"
tap_check "the same settings given again are accepted" run --resume --outdir="$tmp/a" --duration=192
tap_expect_error "--resume where no run is" 2 "no checkpoint" "$edmc" train --resume --outdir="$tmp" --duration=64

# a run that failed before its first step blocks nothing
tap_expect_error "a missing dataset" 1 "nowhere" run --outdir="$tmp/b" --duration=16 --data="$tmp/nowhere"
tap_check "the folder of the failed run takes a new one" run --outdir="$tmp/b" --duration=16 --snapshot=0

umask 077
tap_check "a run under umask 077" run --outdir="$tmp/c" --duration=1000 --status=1000 --snapshot=1000
mode=$(stat -c %a "$tmp/c/network-snapshot-0000001-0.100.safetensors" 2>/dev/null)
if [ "$mode" = 600 ]; then tap_ok "a snapshot follows umask 077 (600)"; else tap_not_ok "snapshot mode '$mode' under umask 077"; fi
tap_done
