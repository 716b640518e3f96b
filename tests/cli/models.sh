#!/bin/sh
# Every model and preset compiles; the presets' parameter counts and
# multiply-adds match EDM2-SPEC §3 (Table 2 of the paper).
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
tap_done
