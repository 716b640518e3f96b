#!/bin/sh
# The sampler table of docs/sampling.md: for each budget of network
# evaluations (NFE), the relative distance ‖x − x_ref‖ / ‖x_ref‖ of each
# sampler's samples to Heun's with 256 steps (the converged ODE solution),
# same seeds and noise.  usage: scripts/sampler-table.sh [NET.safetensors [MODEL.edm]]
# (default: the golden edm2-tiny weights).  Needs a built tree (make check
# builds tests/tools/st_diff).
set -eu
cd "$(dirname "$0")/.."
golden="${EDMC_TESTDATA:-../shared/testdata}/edm2-tiny"
net=${1:-$golden/weights.safetensors}
model=${2:-models/edm2-tiny.edm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gen() { # OUT SAMPLER STEPS
    ./edmc generate --net="$net" --model="$model" --seeds=0-7 --batch=8 --sampler="$2" --steps="$3" \
        --save-raw="$tmp/$1.safetensors" >/dev/null 2>&1
}
dist() { ./tests/tools/st_diff "$tmp/$1.safetensors" "$tmp/ref.safetensors" 1e9 sample | sed -n 's/.*difference \([0-9.e+-]*\).*/\1/p'; }
gen ref heun 256
echo "| NFE | heun (steps) | heun | euler | dpmpp-2m |"
echo "|---:|---:|---:|---:|---:|"
for n in 3 5 9 17 33 65; do
    h=$(( (n + 1) / 2 ))
    gen h heun "$h"
    gen e euler "$n"
    gen d dpmpp-2m "$n"
    echo "| $n | $h | $(dist h) | $(dist e) | $(dist d) |"
done
