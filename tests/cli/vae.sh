#!/bin/sh
# The Stable Diffusion VAE (models/sd-vae.edm) against an AutoencoderKL
# written in PyTorch from the architecture description
# (tests/tools/vae_torch.py), random weights under diffusers' names: both
# parts, fused and not, both attention naming schemes; and one clear error
# for VAE files that miss a tensor or hold one of the wrong shape.
# The comparisons need python3 with torch (Debian's python3-torch) and are
# skipped without it; the bad-input cases always run.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
diff="$builddir/tests/tools/st_diff"
vae="$srcdir/models/sd-vae.edm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=""
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import torch' >/dev/null 2>&1; then py=$p; break; fi
done

# compare DIR DEFINES...: both parts, --fuse=none and all, against torch
compare() {
    dir=$1; shift
    for part in encoder decoder; do
        io=$(echo "$part" | cut -c1-3)
        for fuse in none all; do
            if "$edmc" forward "$vae" "$@" -D "part=\"$part\"" --fuse=$fuse --weights="$dir/$part.safetensors" \
                --input="$dir/${io}_in.safetensors" --output="$tmp/out.safetensors" >"$tmp/log" 2>&1 &&
                "$diff" "$tmp/out.safetensors" "$dir/${io}_out.safetensors" 1e-4 >>"$tmp/log" 2>&1; then
                tap_ok "$part ($*, --fuse=$fuse) matches torch: $(tail -n 1 "$tmp/log")"
            else
                tap_not_ok "$part ($*, --fuse=$fuse) matches torch" "$(cat "$tmp/log")"
            fi
        done
    done
}

if [ -n "$py" ]; then
    mkdir "$tmp/a" "$tmp/b"
    "$py" "$srcdir/tests/tools/vae_torch.py" "$tmp/a" --channels=32,64 --groups=8 --resolution=16 --batch=2 >/dev/null
    compare "$tmp/a" -D 'block_out_channels=[32,64]' -D norm_groups=8 -D resolution=16
    # three levels (two down/upsamplers), one resnet per level, the old attention names
    "$py" "$srcdir/tests/tools/vae_torch.py" "$tmp/b" --channels=32,32,64 --layers=1 --groups=16 --resolution=24 \
        --batch=1 --legacy-names --seed=1 >/dev/null
    compare "$tmp/b" -D 'block_out_channels=[32,32,64]' -D layers_per_block=1 -D norm_groups=16 -D resolution=24 \
        -D 'attention_names="query"'
else
    echo "# no python3 with torch: the comparisons are skipped"
fi

# --- the real configuration: diffusers' parameter counts for sd-vae-ft-mse
count() { "$edmc" info "$vae" -D "part=\"$1\"" | sed -n 's/^ *parameters *\([0-9,]*\) learned.*/\1/p'; }
got=$(count decoder)
if [ "$got" = "49,490,199" ]; then tap_ok "decoder + post_quant_conv: 49,490,199 parameters"; else tap_not_ok "decoder parameters" "$got"; fi
got=$(count encoder)
if [ "$got" = "34,163,664" ]; then tap_ok "encoder + quant_conv: 34,163,664 parameters"; else tap_not_ok "encoder parameters" "$got"; fi

# --- bad VAE files: one error naming the tensor
small="-D block_out_channels=[32,64] -D norm_groups=8 -D resolution=16"
# shellcheck disable=SC2086
"$edmc" init "$vae" $small -o "$tmp/dec.safetensors" >/dev/null
# shellcheck disable=SC2086
"$edmc" init "$vae" $small -D 'attention_names="query"' -o "$tmp/legacy.safetensors" >/dev/null
# shellcheck disable=SC2086
"$edmc" init "$vae" -D 'block_out_channels=[32,96]' -D norm_groups=8 -D resolution=16 -o "$tmp/wide.safetensors" >/dev/null
"$builddir/tests/tools/st_make" "$tmp/lat.safetensors" latent:F32:1,4,8,8:normal
run() { "$edmc" forward "$vae" $small --weights="$1" --input="$tmp/lat.safetensors" --output="$tmp/o.safetensors"; }
tap_check "decoder of edmc init's weights runs" run "$tmp/dec.safetensors"
tap_expect_error "a VAE file without the attention's to_q" 1 "missing decoder.mid_block.attentions.0.to_q.weight [64, 64]" \
    run "$tmp/legacy.safetensors"
tap_expect_error "a VAE file with a tensor of the wrong shape" 1 \
    "decoder.conv_in.weight: expected [64, 4, 3, 3], found [96, 4, 3, 3]" run "$tmp/wide.safetensors"
tap_expect_error "norm groups that do not divide the channels" 1 "positive multiples of norm_groups" \
    "$edmc" info "$vae" -D 'block_out_channels=[32,48]' -D norm_groups=32
tap_expect_error "an unknown part" 1 "part must be" "$edmc" info "$vae" -D 'part="both"'
tap_done
