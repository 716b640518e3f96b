#!/bin/sh
# edmc plot: a run's loss curve and a grid of a dataset's images, as PNG;
# generate --grid-scale enlarges a grid.
. "$srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
edmc="$builddir/edmc"
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{ print $3 * 256 + $4 "x" $7 * 256 + $8 }'; }  # IHDR width, height

printf '{"kimg":1,"loss":5.5}\n{"kimg":2,"loss":null}\n{"kimg":3,"loss":2.25}\n' >"$tmp/stats.jsonl"
tap_check "plot --stats" "$edmc" plot --stats="$tmp/stats.jsonl" -o "$tmp/loss.png"
if [ "$(png_size "$tmp/loss.png")" = "640x420" ]; then tap_ok "the loss curve is a 640x420 PNG"
else tap_not_ok "loss.png is $(png_size "$tmp/loss.png")"; fi
tap_check "plot --data=builtin:shapes --count=9 --scale=4" "$edmc" plot --data=builtin:shapes --count=9 --scale=4 \
    -o "$tmp/real.png"
if [ "$(png_size "$tmp/real.png")" = "192x192" ]; then tap_ok "3x3 images of 16x16 pixels, 4x: 192x192"
else tap_not_ok "real.png is $(png_size "$tmp/real.png")"; fi
"$edmc" plot --data=builtin:shapes --count=9 --scale=4 -o "$tmp/real2.png" >/dev/null 2>&1
if cmp -s "$tmp/real.png" "$tmp/real2.png"; then tap_ok "the same images every time"; else tap_not_ok "not reproducible"; fi
tap_check "plot --data at another resolution" "$edmc" plot --data=builtin:stripes --resolution=32 --count=4 \
    -o "$tmp/s.png"
if [ "$(png_size "$tmp/s.png")" = "64x64" ]; then tap_ok "2x2 stripes of 32 pixels"; else tap_not_ok "$(png_size "$tmp/s.png")"; fi

printf '{"kimg":1}\n' >"$tmp/bad.jsonl"
tap_expect_error "a stats file without losses" 1 "bad.jsonl:1: not a stats record" \
    "$edmc" plot --stats="$tmp/bad.jsonl" -o "$tmp/x.png"
tap_expect_error "neither --stats nor --data" 2 "needs --stats=STATS.jsonl or --data=DATASET" "$edmc" plot -o "$tmp/x.png"
tap_expect_error "both" 2 "needs --stats" "$edmc" plot --stats="$tmp/stats.jsonl" --data=builtin:shapes -o "$tmp/x.png"
tap_expect_error "plot takes no file" 2 "unexpected argument 'x.edm'" "$edmc" plot x.edm --data=builtin:shapes -o "$tmp/x.png"

"$edmc" init "$srcdir/models/edm2-tiny.edm" -D model_channels=16 -D channels_per_head=16 -D img_channels=3 \
    -o "$tmp/w.safetensors" >/dev/null 2>&1
tap_check "generate --grid-scale=3" "$edmc" generate --net="$tmp/w.safetensors" --seeds=0-3 --steps=2 --threads=1 \
    --outdir="$tmp/g" --grid="$tmp/grid.png" --grid-scale=3
if [ "$(png_size "$tmp/grid.png")" = "96x96" ]; then tap_ok "a 2x2 grid of 16 pixels, 3x: 96x96"
else tap_not_ok "grid.png is $(png_size "$tmp/grid.png")"; fi
tap_done
