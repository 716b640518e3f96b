#!/bin/sh
# edmc generate: the golden samples through the command line (--noise,
# --save-raw), PNG output for a 3-channel model (per seed, grid, an image
# independent of its batch), latents for a 4-channel one, and one clear error
# with the right exit status for each kind of bad input.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
mk="$builddir/tests/tools/st_make"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# is_png FILE: the 8-byte PNG signature
is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }
check_png() {
    if [ -f "$2" ] && is_png "$2"; then tap_ok "$1"; else tap_not_ok "$1" "$2 is missing or not a PNG"; fi
}
check_file() { if [ -s "$2" ]; then tap_ok "$1"; else tap_not_ok "$1" "$2 is missing or empty"; fi; }

# --- the golden noise and labels; the reference's config metadata mapped to -D
tap_check "generate --noise on the golden weights (config metadata, --model)" \
    "$edmc" generate --net="$golden/weights.safetensors" --model="$srcdir/models/edm2.edm" \
    --noise="$golden/sample.safetensors" --steps=8 --save-raw="$tmp/raw.safetensors"
check_file "--save-raw writes the samples" "$tmp/raw.safetensors"
tap_check "generate with a guide, guidance 2" \
    "$edmc" generate --net="$golden/weights.safetensors" --model="$tiny" --noise="$golden/sample.safetensors" \
    --steps=8 --guide="$golden/guide_weights.safetensors" --guide-model="$tiny" --guidance=2 \
    --save-raw="$tmp/rawg.safetensors" --threads=2
check_file "--save-raw with guidance" "$tmp/rawg.safetensors"

# --- latents: one .safetensors per seed and a note about the VAE
"$edmc" generate --net="$golden/weights.safetensors" --model="$tiny" --seeds=4,9 --steps=3 \
    --outdir="$tmp/lat" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ -s "$tmp/lat/seed000004.safetensors" ] && [ -s "$tmp/lat/seed000009.safetensors" ] &&
    grep -q "Stable Diffusion VAE" "$tmp/err"; then
    tap_ok "latent model: raw tensors per seed and a note on decoding"
else
    tap_not_ok "latent model: raw tensors per seed" "$(cat "$tmp/err")"
fi

# --- a 3-channel model: PNGs, a grid, and seed 2 alone equals seed 2 in a batch.
# Fresh weights (init) have zero gains, so the net's output does not depend on
# the class: these weights are random with non-zero gains (no metadata, hence
# --model and -D); the init weights check that --net alone finds the model.
"$edmc" init "$tiny" -D img_channels=3 --seed=1 -o "$tmp/w3.safetensors" >/dev/null 2>&1
specs=$("$edmc" info "$tiny" -D img_channels=3 --params | awk '{ s = $2; gsub(/[][]/, "", s);
    printf "%s:F32:%s:%s\n", $1, s, ($1 ~ /gain$/) ? "0.8" : "normal" }')
# shellcheck disable=SC2086
"$mk" "$tmp/w3r.safetensors" $specs
rgb="--net=$tmp/w3r.safetensors --model=$tiny -D img_channels=3"
# shellcheck disable=SC2086
tap_check "generate PNGs for seeds 0-3 with a grid" \
    "$edmc" generate $rgb --seeds=0-3 --steps=4 --batch=4 --outdir="$tmp/png" --grid="$tmp/png/grid.png" --class=3
for s in 0 1 2 3; do check_png "seed $s is a PNG" "$tmp/png/seed00000$s.png"; done
check_png "the grid is a PNG" "$tmp/png/grid.png"
# shellcheck disable=SC2086
tap_check "generate seed 2 alone" "$edmc" generate $rgb --seeds=2 --steps=4 --batch=1 --outdir="$tmp/one" --class=3
if cmp -s "$tmp/png/seed000002.png" "$tmp/one/seed000002.png"; then
    tap_ok "seed 2 alone is the same image as in the batch"
else
    tap_not_ok "seed 2 alone differs from seed 2 in the batch"
fi
# shellcheck disable=SC2086
"$edmc" generate $rgb --seeds=2 --steps=4 --outdir="$tmp/other" --class=4 >/dev/null 2>&1
if cmp -s "$tmp/one/seed000002.png" "$tmp/other/seed000002.png"; then
    tap_not_ok "another class gave the same image"
else
    tap_ok "another class, another image"
fi
if cmp -s "$tmp/png/seed000001.png" "$tmp/png/seed000002.png"; then
    tap_not_ok "seeds 1 and 2 gave the same image"
else
    tap_ok "another seed, another image"
fi
tap_check "--net alone: the model from the weights' metadata (edmc init)" \
    "$edmc" generate --net="$tmp/w3.safetensors" --seeds=0-2 --steps=2 --outdir="$tmp/meta"
check_png "... writes PNGs" "$tmp/meta/seed000002.png"
tap_check "churn and a custom schedule" \
    "$edmc" generate --net="$tmp/w3.safetensors" --seeds=5 --steps=3 --sigma-min=0.01 --sigma-max=20 --rho=5 \
    --S-churn=10 --S-min=0.05 --S-max=10 --S-noise=1.003 --outdir="$tmp/churn"

# --- bad input: one clear error each
"$edmc" init "$tiny" -D img_resolution=8 -D 'attn_resolutions=[4]' -o "$tmp/w8.safetensors" >/dev/null 2>&1
"$mk" "$tmp/noise_shape.st" noise:F32:2,3,16,16:normal
"$mk" "$tmp/noise_nan.st" noise:F32:2,4,16,16:nan
printf 'not a safetensors file' >"$tmp/garbage.st"
g="$golden/weights.safetensors"
tap_expect_error "missing --net" 2 "give the network's weights with --net" "$edmc" generate --seeds=0-3 --outdir="$tmp/x"
tap_expect_error "bad --seeds" 2 "--seeds=3-1x: expected seeds like 0-63" \
    "$edmc" generate --net="$g" --model="$tiny" --seeds=3-1x --outdir="$tmp/x"
tap_expect_error "descending seed range" 2 "--seeds=5-2" "$edmc" generate --net="$g" --model="$tiny" --seeds=5-2 --outdir="$tmp/x"
tap_expect_error "steps < 2" 2 "--steps=1: expected an integer from 2" \
    "$edmc" generate --net="$g" --model="$tiny" --steps=1 --outdir="$tmp/x"
tap_expect_error "sigma_max below sigma_min" 2 "must be finite and above sigma_min" \
    "$edmc" generate --net="$g" --model="$tiny" --sigma-max=0.001 --outdir="$tmp/x"
tap_expect_error "--guidance without --guide" 2 "--guidance needs a guide network" \
    "$edmc" generate --net="$g" --model="$tiny" --guidance=1.5 --outdir="$tmp/x"
tap_expect_error "no output asked for" 2 "give --outdir=DIR" "$edmc" generate --net="$g" --model="$tiny"
tap_expect_error "--noise with --seeds" 2 "does not take --seeds" \
    "$edmc" generate --net="$g" --model="$tiny" --noise="$golden/sample.safetensors" --seeds=1 --outdir="$tmp/x"
tap_expect_error "weights naming no model" 2 "give the .edm file with --model" \
    "$edmc" generate --net="$g" --seeds=0 --outdir="$tmp/x"
tap_expect_error "missing weights file" 1 "cannot open" \
    "$edmc" generate --net="$tmp/nothing.safetensors" --model="$tiny" --outdir="$tmp/x"
tap_expect_error "weights not a safetensors file" 1 "garbage.st" \
    "$edmc" generate --net="$tmp/garbage.st" --model="$tiny" --outdir="$tmp/x"
tap_expect_error "guide of another image shape" 1 "the guide makes 4x8x8 images" \
    "$edmc" generate --net="$g" --model="$tiny" --guide="$tmp/w8.safetensors" --guidance=1.4 --seeds=0 \
    --outdir="$tmp/x"
tap_expect_error "weights of another configuration" 1 "does not fit the model:" \
    "$edmc" generate --net="$tmp/w3.safetensors" --model="$tiny" -D img_channels=4 --seeds=0 --outdir="$tmp/x"
tap_expect_error "--class out of range" 2 "--class=10: the model has classes 0 to 9" \
    "$edmc" generate --net="$g" --model="$tiny" --class=10 --seeds=0 --outdir="$tmp/x"
tap_expect_error "--grid for a latent model" 2 "--grid: the model makes 4-channel images" \
    "$edmc" generate --net="$g" --model="$tiny" --grid="$tmp/g.png" --seeds=0 --outdir="$tmp/x"
tap_expect_error "noise of the wrong shape" 1 "'noise' is not [N, 4, 16, 16]" \
    "$edmc" generate --net="$g" --model="$tiny" --noise="$tmp/noise_shape.st" --save-raw="$tmp/r.st"
tap_expect_error "noise not finite" 1 "'noise' element 0 is nan" \
    "$edmc" generate --net="$g" --model="$tiny" --noise="$tmp/noise_nan.st" --save-raw="$tmp/r.st"
tap_expect_error "unknown -D parameter" 2 "no parameter 'model_channel'" \
    "$edmc" generate --net="$g" --model="$tiny" -D model_channel=3 --outdir="$tmp/x"
tap_expect_error "unknown option" 2 "unknown option '--sedes'" "$edmc" generate --net="$g" --sedes=1
if ldconfig -p 2>/dev/null | grep -q "libcuda.so.1"; then
    tap_ok "# SKIP generate --device=cuda without a GPU (this machine has a CUDA driver)"
else
    tap_expect_error "generate --device=cuda without a GPU says so" 1 "no CUDA driver" \
        "$edmc" generate --net="$g" --model="$tiny" --device=cuda --outdir="$tmp/x"
fi
tap_expect_error "--device=tpu" 2 "expected cpu or cuda" "$edmc" generate --net="$g" --model="$tiny" --device=tpu --outdir="$tmp/x"
tap_expect_error "--precision=bf16 on the CPU" 2 "f32 or f64" "$edmc" generate --net="$g" --model="$tiny" --precision=bf16 --outdir="$tmp/x"
tap_done
