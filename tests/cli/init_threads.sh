#!/bin/sh
# edmc init draws every tensor in chunks on every core: the weights are the
# same, byte for byte, whatever the number of threads.
. "$srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
edmc="$builddir/edmc"
# model_channels 64: tensors of more than one chunk (65536 values)
for t in 1 3; do
    OMP_NUM_THREADS=$t "$edmc" init "$srcdir/models/edm2-tiny.edm" -D model_channels=64 -D channels_per_head=32 \
        --seed=7 -o "$tmp/w$t.safetensors" >/dev/null 2>&1
done
tap_check "init with 1 thread" test -s "$tmp/w1.safetensors"
if cmp -s "$tmp/w1.safetensors" "$tmp/w3.safetensors"; then tap_ok "1 and 3 threads draw the same weights"
else tap_not_ok "the weights depend on the thread count"; fi
OMP_NUM_THREADS=3 "$edmc" init "$srcdir/models/edm2-tiny.edm" -D model_channels=64 -D channels_per_head=32 \
    --seed=8 -o "$tmp/w8.safetensors" >/dev/null 2>&1
if cmp -s "$tmp/w3.safetensors" "$tmp/w8.safetensors"; then tap_not_ok "another seed gives the same weights"
else tap_ok "another seed, other weights"; fi
tap_done
