#!/bin/sh
# The main job on its built-in default: build, check every model, then train
# a small EDM2 (edm2-tiny with 3 channels) on the built-in shapes dataset for a
# few thousand images on the CPU, reconstruct a post-hoc EMA from its
# snapshots, and sample 16 images from it with the EDM Heun sampler.
# Output: runs/main/ (stats.jsonl, snapshots, checkpoints, phema/, samples/grid.png).
set -eu
cd "$(dirname "$0")/.."
sh scripts/build.sh
for m in models/*.edm models/variants/*.edm; do ./edmc check "$m"; done
./edmc info models/edm2-img512-s.edm | head -n 6
out=${EDMC_MAIN_OUT:-runs/main}
rm -rf "$out"
model="models/edm2-tiny.edm"
./edmc train --model="$model" -D img_channels=3 --data=builtin:shapes --outdir="$out" \
    --batch=16 --duration=4000 --status=1000 --snapshot=1000 --checkpoint=2000 --rampup=0 --lr=0.01
./edmc phema --indir="$out" --outstd=0.08 --outdir="$out/phema"
./edmc generate --net="$out/phema/phema-0000004-0.080.safetensors" --seeds=0-15 --steps=16 \
    --outdir="$out/samples" --grid="$out/samples/grid.png"
echo "main job done: $out/stats.jsonl, $out/phema/, $out/samples/grid.png"
