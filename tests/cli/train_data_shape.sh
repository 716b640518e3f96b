#!/bin/sh
# edmc train: the dataset decides what the model does not fix.  label_dim
# comes from the data's classes (unless -D label_dim or --cond=false), the
# resolution and channels of a --model file from its images; a --preset made
# for other images is one clear error.
. "$srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
edmc="$builddir/edmc" tiny="$srcdir/models/edm2-tiny.edm"
small="-D model_channels=16 -D channels_per_head=16"

# a folder of 16x16 RGB PNGs in two classes, made with edmc itself
"$edmc" init "$tiny" $small -D img_channels=3 -o "$tmp/w.safetensors" >/dev/null 2>&1
"$edmc" generate --net="$tmp/w.safetensors" --seeds=0-3 --steps=2 --threads=1 --names=reference \
    --outdir="$tmp/two" >/dev/null 2>&1
printf '{"labels": [["000000.png", 0], ["000001.png", 1], ["000002.png", 0], ["000003.png", 1]]}' \
    >"$tmp/two/dataset.json"
mkdir -p "$tmp/nolabels" && cp "$tmp/two"/*.png "$tmp/nolabels/"

plan() { "$edmc" train -n --outdir="$tmp/run" "$@" 2>&1; }
p=$(plan --model="$tiny" --data="$tmp/two")
if echo "$p" | grep -q "img_resolution=16 img_channels=3 label_dim=2" && echo "$p" | grep -q "16x16, 3 channels, 2 classes"; then
    tap_ok "a 2-class RGB folder: edm2-tiny (4 channels, 10 classes) becomes 3 channels and 2 classes"
else
    tap_not_ok "shape from a PNG folder" "$p"
fi
p=$(plan --model="$tiny" --data="$tmp/nolabels")
if echo "$p" | grep -q "label_dim=0"; then tap_ok "no dataset.json: an unconditional model"
else tap_not_ok "no labels" "$p"; fi
p=$(plan --model="$tiny" --data=builtin:stripes)
if echo "$p" | grep -q "img_resolution=16 img_channels=4 label_dim=4"; then
    tap_ok "a built-in set fixes the classes (4 stripes), not the size"
else tap_not_ok "builtin:stripes" "$p"; fi
p=$(plan --model="$tiny" --data="$tmp/two" -D label_dim=5)
if echo "$p" | grep -q "label_dim=5"; then tap_ok "-D label_dim wins over the data"
else tap_not_ok "-D label_dim" "$p"; fi
p=$(plan --model="$tiny" --data="$tmp/two" --cond=false)
if echo "$p" | grep -q "label_dim=0"; then tap_ok "--cond=false wins over the data"
else tap_not_ok "--cond=false" "$p"; fi
p=$(plan --model="$srcdir/models/edm2-img64-s.edm" --data="$tmp/two")
if echo "$p" | grep -q "img_resolution=16 img_channels=3 label_dim=2"; then
    tap_ok "a --model file takes the data's resolution"
else tap_not_ok "--model img64-s on 16px data" "$p"; fi
tap_expect_error "a preset made for other images" 2 \
    "--preset=edm2-img64-s is made for 64x64 images with 3 channels, but $tmp/two holds 16x16 images with 3 channels" \
    env EDMC_MODELS="$srcdir/models" "$edmc" train -n --preset=edm2-img64-s --data="$tmp/two" --outdir="$tmp/run"
tap_check "training on the 2-class folder runs" "$edmc" train --model="$tiny" $small --data="$tmp/two" \
    --outdir="$tmp/run" --batch=4 --duration=8 --status=4 --snapshot=0 --rampup=0 --threads=1
if head -c 8192 "$tmp/run/training-state-000000000008.safetensors" | tr -d '\\' | grep -q '"label_dim":"2"'; then
    tap_ok "and its checkpoint records label_dim 2"
else tap_not_ok "label_dim in the checkpoint"; fi
tap_expect_error "an unreadable first image" 1 "not a PNG file" sh -c \
    "mkdir -p '$tmp/bad' && echo x >'$tmp/bad/a.png' && '$edmc' train -n --model='$tiny' --data='$tmp/bad' --outdir='$tmp/run2'"
tap_done
