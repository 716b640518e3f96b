#!/bin/sh
# Self-contained runs: snapshots and checkpoints carry their model's source
# (edmc.source), so generate and phema work on a run folder moved elsewhere
# after the model files are gone, with the results of the model file itself.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $edmc in /*) ;; *) edmc="$PWD/$edmc" ;; esac
small="-D model_channels=16 -D channels_per_head=16"
mkdir -p "$tmp/m"
cp -R "$srcdir/models/." "$tmp/m/"
tap_check "train a few steps from a copy of the models" "$edmc" train --model="$tmp/m/edm2-tiny.edm" $small \
    --data=builtin:shapes --batch=8 --rampup=0 --threads=1 --duration=2048 --snapshot=1024 --status=1024 \
    --outdir="$tmp/run"
mv "$tmp/run" "$tmp/moved"
rm -rf "$tmp/m"
cd "$tmp" || exit 1
snap="$tmp/moved/network-snapshot-0000002-0.100.safetensors"
if head -c 65536 "$snap" | grep -q '"edmc.source"'; then tap_ok "a snapshot carries edmc.source"; else tap_not_ok "no edmc.source in $snap"; fi
if head -c 65536 "$tmp/moved/training-state-000000002048.safetensors" | grep -q '"edmc.source"'; then
    tap_ok "a checkpoint carries edmc.source"
else
    tap_not_ok "no edmc.source in the checkpoint"
fi
if head -c 65536 "$snap" | tr -d '\\' | grep -q '"device":"cpu","precision":"f32"'; then
    tap_ok "edmc.run records the device and precision"
else
    tap_not_ok "edmc.run lacks the device and precision"
fi
tap_check "generate from the moved folder, the models gone" "$edmc" generate --net="$snap" --seeds=0-2 --steps=4 \
    --save-raw="$tmp/moved.safetensors"
"$edmc" generate --net="$snap" --model="$srcdir/models/edm2-tiny.edm" --seeds=0-2 --steps=4 \
    --save-raw="$tmp/file.safetensors" >/dev/null 2>&1
if [ -s "$tmp/file.safetensors" ] && cmp -s "$tmp/moved.safetensors" "$tmp/file.safetensors"; then
    tap_ok "the same images as with the model file"
else
    tap_not_ok "the carried model gave other images than the model file"
fi
tap_check "phema on the moved folder" "$edmc" phema --indir="$tmp/moved" --outstd=0.07 --outdir="$tmp/ph"
tap_check "phema --eval=loss compiles the carried model" "$edmc" phema --indir="$tmp/moved" --sweep \
    --outstd=0.05:0.10:0.05 --eval=loss
tap_check "train --resume in the moved folder, the models gone" "$edmc" train --resume --outdir="$tmp/moved" \
    --duration=3072 --threads=1
if [ -s "$tmp/moved/training-state-000000003072.safetensors" ]; then
    tap_ok "the resumed run went on to 3072 images"
else
    tap_not_ok "no checkpoint at 3072 images after the resume" "$(ls "$tmp/moved")"
fi
# a carried source that does not compile is an error naming the file, not a crash
if command -v python3 >/dev/null 2>&1; then
    python3 - "$snap" "$tmp/bad.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
src = json.loads(h["__metadata__"]["edmc.source"])
src["files"] = src["files"][:1]  # the preset without the network it imports
h["__metadata__"]["edmc.source"] = json.dumps(src)
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
    tap_expect_error "a carried source without its imports" 1 "outside the model folders" \
        "$edmc" generate --net="$tmp/bad.safetensors" --seeds=0 --steps=2 --save-raw="$tmp/o.safetensors"
fi
tap_done
