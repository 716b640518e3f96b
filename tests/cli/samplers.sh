#!/bin/sh
# edmc generate --sampler=heun|euler|dpmpp-2m, --guidance-interval, the ETA:
# each sampler is deterministic per seed (the same image in any batch), the
# default is Heun, bad combinations are usage errors.
. "$srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
edmc="$builddir/edmc" tiny="$srcdir/models/edm2-tiny.edm"
"$edmc" init "$tiny" -D model_channels=16 -D channels_per_head=16 -D img_channels=3 -o "$tmp/w.safetensors" \
    >/dev/null 2>&1
gen() { "$edmc" generate --net="$tmp/w.safetensors" --steps=4 --threads=1 "$@"; }

gen --seeds=0-2 --outdir="$tmp/default" >/dev/null 2>&1
gen --seeds=0-2 --outdir="$tmp/heun" --sampler=heun >/dev/null 2>&1
if cmp -s "$tmp/default/seed000001.png" "$tmp/heun/seed000001.png"; then tap_ok "Heun is the default"
else tap_not_ok "--sampler=heun differs from the default"; fi
for s in euler dpmpp-2m; do
    tap_check "--sampler=$s" gen --seeds=0-2 --batch=3 --outdir="$tmp/$s" --sampler="$s" --save-raw="$tmp/$s.safetensors"
    gen --seeds=1 --batch=1 --outdir="$tmp/$s-alone" --sampler="$s" >/dev/null 2>&1
    if cmp -s "$tmp/$s/seed000001.png" "$tmp/$s-alone/seed000001.png"; then
        tap_ok "$s: seed 1 alone is seed 1 in a batch of three"
    else
        tap_not_ok "$s: seed 1 depends on its batch"
    fi
    if cmp -s "$tmp/$s/seed000001.png" "$tmp/heun/seed000001.png"; then tap_not_ok "$s gives Heun's image"
    else tap_ok "$s is another solver than Heun"; fi
    if head -c 4096 "$tmp/$s.safetensors" | grep -q "\"sampler\":\"$s\""; then tap_ok "$s: --save-raw records the sampler"
    else tap_not_ok "$s: no sampler in the --save-raw metadata"; fi
done
gen --seeds=0-2 --batch=1 --outdir="$tmp/eta" 2>"$tmp/eta.log" >/dev/null
if grep -q "generate: 1/3 images, .*ETA [0-9][0-9]:[0-9][0-9]:[0-9][0-9]" "$tmp/eta.log"; then tap_ok "generate prints an ETA"
else tap_not_ok "no ETA" "$(cat "$tmp/eta.log")"; fi

tap_expect_error "an unknown sampler" 2 "--sampler=dpm: expected heun, euler or dpmpp-2m" gen --seeds=0 \
    --outdir="$tmp/x" --sampler=dpm
tap_expect_error "churn with dpmpp-2m" 2 "dpmpp-2m is deterministic" gen --seeds=0 --outdir="$tmp/x" \
    --sampler=dpmpp-2m --S_churn=10

# guidance only inside [lo, hi] (the golden net and guide: freshly initialised
# nets all give D = c_skip x, so guiding one by another changes nothing)
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
ggen() {
    out=$1; shift
    "$edmc" generate --net="$golden/weights.safetensors" --model="$tiny" --seeds=0-1 --steps=4 --threads=1 \
        --save-raw="$tmp/$out.safetensors" "$@" >/dev/null 2>&1
}
gg() { ggen "$@" --guide="$golden/guide_weights.safetensors" --guide-model="$tiny" --guidance=2; }
ggen plain
gg out --guidance-interval=1000,2000
gg in --guidance-interval=0.001,100
gg all
gg part --guidance-interval=0.1,5   # the steps at σ 80 and 9.7 unguided, 0.47 guided
diff_ok() { "$builddir/tests/tools/st_diff" "$tmp/$1.safetensors" "$tmp/$2.safetensors" 0 sample >/dev/null 2>&1; }
if diff_ok out plain; then tap_ok "an interval no step reaches: the net alone"; else tap_not_ok "interval outside"; fi
if diff_ok in all; then tap_ok "an interval holding every step: guidance everywhere"; else tap_not_ok "interval all"; fi
if ! diff_ok part all && ! diff_ok part plain && ! diff_ok all plain; then tap_ok "a part of the steps: neither"
else tap_not_ok "interval part"; fi
tap_expect_error "an interval upside down" 2 "expected LO,HI with 0 <= LO <= HI" gen --seeds=0 --outdir="$tmp/x" \
    --guide="$tmp/w.safetensors" --guidance=2 --guidance-interval=5,1
tap_done
