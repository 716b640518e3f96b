#!/bin/sh
# edmc phema: post-hoc EMA reconstruction from synthetic snapshots (edmc init
# with other seeds), checked against the coefficient-weighted sum of the
# inputs, and one clear error (non-zero exit) for each kind of bad input;
# then --eval=loss (the validation loss of each sigma_rel, and its plot) on
# the snapshots of a short training run.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
wsum="$builddir/tests/tools/st_wsum"
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect_error() {
    desc=$1 want=$2 text=$3; shift 3
    "$@" >"$tmp/stdout" 2>"$tmp/err"
    got=$?
    if [ "$got" -eq "$want" ] && grep -qF -- "$text" "$tmp/err" && ! grep -q "Sanitizer\|runtime error" "$tmp/err"; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "exit $got (want $want), stderr:" "$(head -c 600 "$tmp/err")"
    fi
}

# --- three times x sigma_rel 0.050/0.100, each with its own seed
in="$tmp/in"
mkdir -p "$in"
seed=1
for kimg in 0000065 0000131 0000196; do
    for std in 0.050 0.100; do
        "$edmc" init "$tiny" --seed=$seed -o "$in/network-snapshot-$kimg-$std.safetensors" >/dev/null 2>&1
        seed=$((seed + 1))
    done
done
printf 'ignored' >"$in/notes.txt"
latest=network-snapshot-0000196-0.100.safetensors

tap_check "phema reconstructs 0.05, 0.08, 0.15" "$edmc" phema --indir="$in" --outstd=0.05,0.08,0.15 --outdir="$tmp/out"
for std in 0.050 0.080 0.150; do
    tap_check "phema $std = the coefficient-weighted sum of the snapshots" \
        "$wsum" "$tmp/out/phema-0000196-$std.safetensors" "$in" "$latest"
done
tap_check "sigma_rel of a snapshot at the last time picks that snapshot" \
    "$wsum" "$tmp/out/phema-0000196-0.050.safetensors" "$in" "$latest" network-snapshot-0000196-0.050.safetensors
"$edmc" phema --indir="$in" --outstd=0.08 --outdir="$tmp/out" >"$tmp/table" 2>&1
if grep -q "network-snapshot-0000065-0.050.safetensors" "$tmp/table" && grep -q "0.080" "$tmp/table"; then
    tap_ok "phema prints the coefficients table"
else
    tap_not_ok "phema prints the coefficients table" "$(head -n 12 "$tmp/table")"
fi

# --- the model given: buffers from its graph, the same file
tap_check "phema with the model file given" "$edmc" phema "$tiny" --indir="$in" --outstd=0.08 --outdir="$tmp/outm"
if cmp -s "$tmp/out/phema-0000196-0.080.safetensors" "$tmp/outm/phema-0000196-0.080.safetensors"; then
    tap_ok "the model file gives the same reconstruction"
else
    tap_not_ok "the model file gave another reconstruction"
fi

# --- --outkimg: only the snapshots up to then
tap_check "phema --outkimg=131" "$edmc" phema --indir="$in" --outstd=0.1 --outkimg=131 --outdir="$tmp/out131"
tap_check "--outkimg=131 picks the kimg-131 sigma_rel 0.100 snapshot" \
    "$wsum" "$tmp/out131/phema-0000131-0.100.safetensors" "$in" network-snapshot-0000131-0.100.safetensors \
    network-snapshot-0000131-0.100.safetensors

# --- --sweep over a range
tap_check "phema --sweep over a range" "$edmc" phema --indir="$in" --outstd=0.04:0.12:0.04 --sweep --outdir="$tmp/sw"
n=$(ls "$tmp/sw" | grep -c '^phema-0000196-0\.\(040\|080\|120\)\.safetensors$')
if [ "$n" -eq 3 ]; then tap_ok "--sweep wrote 0.040, 0.080, 0.120"; else tap_not_ok "--sweep wrote $n of 3 files" "$(ls "$tmp/sw")"; fi
tap_check "swept 0.120 = the weighted sum" "$wsum" "$tmp/sw/phema-0000196-0.120.safetensors" "$in" "$latest"

# --- two snapshots only
meta="$tmp/meta"
mkdir -p "$meta"
cp "$in"/network-snapshot-0000065-0.050.safetensors "$in"/network-snapshot-0000131-0.100.safetensors "$meta"/
tap_check "phema with two snapshots" "$edmc" phema --indir="$meta" --outstd=0.07 --outdir="$tmp/out2"
tap_check "two snapshots: the weighted sum" "$wsum" "$tmp/out2/phema-0000131-0.070.safetensors" "$meta" \
    network-snapshot-0000131-0.100.safetensors

# --- errors
expect_error "missing folder" 1 "cannot open --indir=$tmp/nothing" \
    "$edmc" phema --indir="$tmp/nothing" --outstd=0.1 --outdir="$tmp/o"
mkdir -p "$tmp/empty"
expect_error "no snapshots" 1 "no snapshots in $tmp/empty" \
    "$edmc" phema --indir="$tmp/empty" --outstd=0.1 --outdir="$tmp/o"
expect_error "sigma_rel out of range (too large)" 2 "--outstd=0.3: sigma_rel 0.3 is out of range" \
    "$edmc" phema --indir="$in" --outstd=0.1,0.3 --outdir="$tmp/o"
expect_error "sigma_rel out of range (zero)" 2 "sigma_rel 0 is out of range" \
    "$edmc" phema --indir="$in" --outstd=0 --outdir="$tmp/o"
expect_error "--outstd not a number" 2 "--outstd: 'abc' is not a number" \
    "$edmc" phema --indir="$in" --outstd=abc --outdir="$tmp/o"
expect_error "--outstd bad range" 2 "needs lo <= hi and a step > 0" \
    "$edmc" phema --indir="$in" --outstd=0.1:0.05:0.01 --outdir="$tmp/o"
mixed="$tmp/mixed"
mkdir -p "$mixed"
cp "$in"/network-snapshot-0000065-0.050.safetensors "$mixed"/
"$edmc" init "$tiny" -D model_channels=16 -o "$mixed/network-snapshot-0000131-0.050.safetensors" >/dev/null 2>&1
expect_error "mixed configurations" 1 "snapshots of mixed configurations: network-snapshot-0000065-0.050.safetensors and network-snapshot-0000131-0.050.safetensors" \
    "$edmc" phema --indir="$mixed" --outstd=0.1 --outdir="$tmp/o"
expect_error "a model that does not fit the snapshots" 1 "'unet.emb_fourier.freqs' is [32], $tiny wants [16]" \
    "$edmc" phema "$tiny" -D model_channels=16 --indir="$in" --outstd=0.1 --outdir="$tmp/o"
expect_error "--outkimg before every snapshot" 2 "--outkimg=10: none of the 6 snapshots" \
    "$edmc" phema --indir="$in" --outstd=0.1 --outkimg=10 --outdir="$tmp/o"
printf 'not a safetensors file' >"$tmp/empty/network-snapshot-0000065-0.050.safetensors"
expect_error "a snapshot that is not a safetensors file" 1 "network-snapshot-0000065-0.050.safetensors" \
    "$edmc" phema --indir="$tmp/empty" --outstd=0.1 --outdir="$tmp/o"
expect_error "--eval=foo" 2 "--eval=foo: the only evaluation is --eval=loss" \
    "$edmc" phema --indir="$in" --outstd=0.1 --eval=foo
expect_error "--eval=loss without snapshots" 1 "no snapshots in $tmp/nosnap" \
    sh -c 'mkdir -p "$1" && "$2" phema --indir="$1" --sweep --eval=loss' sh "$tmp/nosnap" "$edmc"
expect_error "--plot without --eval" 2 "--data, --eval-images and --plot go with --eval=loss" \
    "$edmc" phema --indir="$in" --outstd=0.1 --outdir="$tmp/o" --plot="$tmp/p.png"
expect_error "--eval-images=0" 2 "--eval-images=0: expected an integer from 1 to 1000000" \
    "$edmc" phema --indir="$in" --outstd=0.1 --eval=loss --eval-images=0
expect_error "--eval-images beyond the dataset" 2 "fewer than the 20000 to evaluate on" \
    "$edmc" phema --indir="$in" --outstd=0.1 --eval=loss --eval-images=20000
expect_error "--eval=loss on a dataset that is not there" 1 "$tmp/nodata" \
    "$edmc" phema --indir="$in" --outstd=0.1 --eval=loss --data="$tmp/nodata"
expect_error "phema without --indir" 2 "needs --indir=DIR" "$edmc" phema --outstd=0.1 --outdir="$tmp/o"
expect_error "phema: unknown option" 2 "unknown option '--outsdt'" "$edmc" phema --outsdt=0.1

# --- --eval=loss: the EMA-length curve of a short training run
run="$tmp/run"
tap_check "a short training run with snapshots every kimg" \
    "$edmc" train --model="$tiny" -D model_channels=16 -D channels_per_head=16 --data=builtin:shapes --batch=8 \
    --rampup=0 --lr=0.01 --threads=1 --outdir="$run" --duration=3000 --status=1000 --snapshot=1000 --checkpoint=0
sweep_eval() { # OUT PLOT
    "$edmc" phema --indir="$run" --sweep --outstd=0.03:0.15:0.03 --eval=loss --eval-images=32 --threads=1 \
        --plot="$2" >"$1" 2>"$1.err"
}
# the loss lines: "sigma_rel loss", both numbers finite
loss_lines() { grep -E '^ +0\.[0-9]{4} +-?[0-9]+\.[0-9]+$' "$1"; }
if sweep_eval "$tmp/eval1" "$tmp/curve1.png"; then
    tap_ok "phema --sweep --eval=loss"
else
    tap_not_ok "phema --sweep --eval=loss" "$(head -c 600 "$tmp/eval1.err")"
fi
n=$(loss_lines "$tmp/eval1" | wc -l)
stds=$(loss_lines "$tmp/eval1" | awk '{printf "%s ", $1}')
if [ "$n" -eq 5 ] && [ "$stds" = "0.0300 0.0600 0.0900 0.1200 0.1500 " ] && grep -q '^minimum: sigma_rel 0\.[0-9]*, loss ' "$tmp/eval1"; then
    tap_ok "one finite loss per sigma_rel, and the minimum"
else
    tap_not_ok "one finite loss per sigma_rel, and the minimum" "$(tail -n 12 "$tmp/eval1")"
fi
sig=$(head -c 8 "$tmp/curve1.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')
if [ "$sig" = "89504e470d0a1a0a" ]; then
    tap_ok "--plot writes a PNG"
else
    tap_not_ok "--plot writes a PNG" "first bytes: $sig"
fi
sweep_eval "$tmp/eval2" "$tmp/curve2.png"
if [ "$n" -eq 5 ] && [ "$(loss_lines "$tmp/eval1")" = "$(loss_lines "$tmp/eval2")" ] && cmp -s "$tmp/curve1.png" "$tmp/curve2.png"; then
    tap_ok "--eval=loss is deterministic (the same losses and plot twice)"
else
    tap_not_ok "--eval=loss is not deterministic" "$(loss_lines "$tmp/eval1")" "$(loss_lines "$tmp/eval2")"
fi
# with --outdir it also writes the reconstructions
if "$edmc" phema --indir="$run" --outstd=0.06 --eval=loss --eval-images=32 --threads=1 --outdir="$tmp/evout" \
    >"$tmp/eval3" 2>&1 && [ -f "$tmp/evout/phema-0000003-0.060.safetensors" ] &&
    [ "$(loss_lines "$tmp/eval3")" = "$(loss_lines "$tmp/eval1" | grep '^ *0\.0600 ')" ]; then
    tap_ok "--eval=loss with --outdir: the file and the same loss as in the sweep"
else
    tap_not_ok "--eval=loss with --outdir" "$(tail -n 8 "$tmp/eval3")"
fi
tap_done
