#!/bin/sh
# Every model and preset compiles; the presets' parameter counts and
# multiply-adds match docs/edm2.md §1 (Table 2 of the paper).
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
models="$srcdir/models"

for m in "$models"/*.edm "$models"/variants/*.edm; do
    [ -f "$m" ] || continue
    tap_check "check $(basename "$m")" "$edmc" check "$m"
done

# name  params(exact or to the rounding shown)  table Gflops  tolerance (relative)
while read -r preset params_m gflops tol; do
    json=$("$edmc" info --json "$models/$preset.edm" 2>&1) || { tap_not_ok "info $preset" "$json"; continue; }
    p=$(printf '%s' "$json" | sed -n 's/.*"params": *\([0-9]*\).*/\1/p')
    g=$(printf '%s' "$json" | sed -n 's/.*"gmacs": *\([0-9.e+-]*\).*/\1/p')
    if awk -v p="$p" -v want="$params_m" 'BEGIN { exit !(int(p / 1e6 + 0.5) == want) }'; then
        tap_ok "$preset: $p parameters round to ${params_m}M"
    else
        tap_not_ok "$preset: $p parameters, table says ${params_m}M"
    fi
    if awk -v g="$g" -v want="$gflops" -v tol="$tol" 'BEGIN { d = (g - want) / want; if (d < 0) d = -d; exit !(d <= tol) }'; then
        tap_ok "$preset: $g Gflops within $tol of $gflops"
    else
        tap_not_ok "$preset: $g Gflops, table says $gflops (tolerance $tol)"
    fi
done <<'TABLE'
edm2-img512-xs 125 46 0.012
edm2-img512-s 280 102 0.005
edm2-img512-m 498 181 0.005
edm2-img512-l 777 282 0.005
edm2-img512-xl 1119 406 0.005
edm2-img512-xxl 1523 552 0.005
edm2-img64-s 280 102 0.005
edm2-img64-m 498 181 0.005
edm2-img64-l 777 282 0.005
edm2-img64-xl 1119 406 0.005
TABLE

p=$("$edmc" info --json "$models/edm2-img512-s.edm" | sed -n 's/.*"params": *\([0-9]*\).*/\1/p')
if [ "$p" = 280212837 ]; then tap_ok "edm2-img512-s has exactly 280,212,837 parameters"; else tap_not_ok "edm2-img512-s has $p parameters, not 280212837"; fi
# the guides of the autoguidance setups, with the reference's training settings (duration included)
plan() { "$edmc" train -n --preset="$1" --data=builtin:shapes64 --outdir="$(mktemp -d)/run" 2>&1; }
preset_is() { # PRESET PARAMETERS IMAGES LR DESCRIPTION
    p=$(EDMC_MODELS="$models" plan "$1")
    if echo "$p" | grep -q "$2" && echo "$p" | grep -q "duration     $3 images" && echo "$p" | grep -q "lr           $4"; then
        tap_ok "$1: $5"
    else
        tap_not_ok "$1" "$p"
    fi
}
preset_is edm2-img512-xxs "img_channels=4 label_dim=3 model_channels=64 dropout=0 P_mean=-0.4 duration_Mi=2048 P_std=1.0" \
    2147483648 "0.017, .* / 70000)" "64 channels, lr 0.017, t_ref 70000, 2048 Mi images"
preset_is edm2-img64-xs "img_channels=3 label_dim=3 model_channels=128 dropout=0 P_mean=-0.8 duration_Mi=1024 P_std=1.6" \
    1073741824 "0.012, .* / 35000)" "128 channels, lr 0.012, t_ref 35000, P_mean -0.8, P_std 1.6, 1024 Mi images"
p=$(EDMC_MODELS="$models" plan edm2-img512-xxl)
if echo "$p" | grep -q "duration     939524096 images"; then tap_ok "edm2-img512-xxl trains 896 Mi images by default"
else tap_not_ok "edm2-img512-xxl duration" "$p"; fi
tap_done
