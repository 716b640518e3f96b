#!/bin/sh
# The Stable Diffusion VAE (models/sd-vae.edm) against an AutoencoderKL
# written in PyTorch from the architecture description
# (tests/tools/vae_torch.py), random weights under diffusers' names: both
# halves, fused and not, both attention namings, on the CPU and (when the
# emulator is built) the CUDA backend; generate --vae's PNGs and dataset
# encode's .npy files against the reference's decoding and encoding in
# PyTorch. Then, always: generate --vae and dataset encode with edmc init's
# VAE files (edmc train reads the latents), and one clear error for each
# malformed or mismatched VAE file.
# The comparisons need python3 with torch, numpy and PIL (Debian:
# python3-torch, python3-pil) and are skipped without them.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
diff="$builddir/tests/tools/st_diff"
vae="$srcdir/models/sd-vae.edm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=$(python_with "torch, numpy, PIL")

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
    # the same on the CUDA backend, its kernels run by the emulator (docs/cuda.md), fused and not
    emu="$builddir/tests/emu/cuda_emu.so"
    if [ -f "$emu" ] && command -v "${EDMC_EMU_CXX:-g++}" >/dev/null 2>&1; then
        case $emu in /*) ;; *) emu="$PWD/$emu" ;; esac
        cache="${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}"
        case $cache in /*) ;; *) cache="$PWD/$cache" ;; esac
        mkdir -p "$cache"
        EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache" \
            compare "$tmp/a" -D 'block_out_channels=[32,64]' -D norm_groups=8 -D resolution=16 --device=cuda \
            --precision=f32
        # generate --vae on the device, net and VAE in f32: the CPU's pictures (a byte may round the other way)
        "$edmc" init "$srcdir/models/edm2-tiny.edm" --seed=1 -o "$tmp/netc.safetensors" >/dev/null
        for d in cpu cuda; do
            EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache" "$edmc" generate --device=$d \
                --precision=f32 --net="$tmp/netc.safetensors" --vae="$tmp/a/vae.safetensors" --seeds=5 --steps=3 \
                --outdir="$tmp/g_$d" >"$tmp/log_$d" 2>&1
        done
        tap_check "generate --vae --device=cuda gives the CPU's picture" "$builddir/tests/tools/img_diff" \
            "$tmp/g_cuda/seed000005.png" "$tmp/g_cpu/seed000005.png" 1
    else
        echo "# the CUDA emulator was not built: the CUDA comparisons are skipped"
    fi
    # generate --vae: the PNGs are the reference's decoding of the samples
    tiny="$srcdir/models/edm2-tiny.edm"
    "$edmc" init "$tiny" --seed=1 -o "$tmp/net.safetensors" >/dev/null
    if "$edmc" generate --net="$tmp/net.safetensors" --vae="$tmp/a/vae.safetensors" --seeds=0-2 --steps=4 --batch=2 \
        --outdir="$tmp/gen" --grid="$tmp/grid.png" --save-raw="$tmp/raw.safetensors" >"$tmp/log" 2>&1 &&
        "$py" "$srcdir/tests/tools/vae_torch.py" decode-check "$tmp/a/vae.safetensors" "$tmp/raw.safetensors" \
            "$tmp/gen/seed000000.png" "$tmp/gen/seed000001.png" "$tmp/gen/seed000002.png" >>"$tmp/log" 2>&1; then
        tap_ok "generate --vae writes the reference's decoding of its latents: $(tail -n 1 "$tmp/log")"
    else
        tap_not_ok "generate --vae writes the reference's decoding of its latents" "$(cat "$tmp/log")"
    fi
    # three 32x32 pictures in two columns: the PNG's IHDR says 64 x 64
    if [ "$(od -An -tu1 -j16 -N8 "$tmp/grid.png" 2>/dev/null | tr -s ' ')" = " 0 0 0 64 0 0 0 64" ]; then
        tap_ok "generate --vae --grid writes the grid of the pictures"
    else
        tap_not_ok "generate --vae --grid writes the grid of the pictures"
    fi
    # dataset encode: the .npy entries are the reference's encoding of the images
    "$edmc" dataset convert --source="$srcdir/tests/dataset/src" --dest="$tmp/img32" --resolution=32x32 \
        --transform=center-crop --max-images=4 >/dev/null 2>&1
    if "$edmc" dataset encode --source="$tmp/img32" --dest="$tmp/lat.zip" --vae="$tmp/a/vae.safetensors" >"$tmp/log" 2>&1 &&
        "$py" "$srcdir/tests/tools/vae_torch.py" encode-check "$tmp/a/vae.safetensors" "$tmp/lat.zip" \
            "$tmp"/img32/00000/img*.png >>"$tmp/log" 2>&1; then
        tap_ok "dataset encode writes the reference's latents: $(tail -n 1 "$tmp/log")"
    else
        tap_not_ok "dataset encode writes the reference's latents" "$(cat "$tmp/log")"
    fi
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
# shellcheck disable=SC2086
run() { "$edmc" forward "$vae" $small --weights="$1" --input="$tmp/lat.safetensors" --output="$tmp/o.safetensors"; }
tap_check "decoder of edmc init's weights runs" run "$tmp/dec.safetensors"
tap_expect_error "a VAE file without the attention's to_q" 1 "missing decoder.mid_block.attentions.0.to_q.weight [64, 64]" \
    run "$tmp/legacy.safetensors"
tap_expect_error "a VAE file with a tensor of the wrong shape" 1 \
    "decoder.conv_in.weight: expected [64, 4, 3, 3], found [96, 4, 3, 3]" run "$tmp/wide.safetensors"
tap_expect_error "norm groups that do not divide the channels" 1 "positive multiples of norm_groups" \
    "$edmc" info "$vae" -D 'block_out_channels=[32,48]' -D norm_groups=32
tap_expect_error "an unknown part" 1 "part must be" "$edmc" info "$vae" -D 'part="both"'

# --- generate --vae: what it refuses
"$edmc" init "$srcdir/models/edm2-tiny.edm" --seed=1 -o "$tmp/net4.safetensors" >/dev/null
"$edmc" init "$srcdir/models/edm2-tiny.edm" -D img_channels=3 --seed=1 -o "$tmp/net3.safetensors" >/dev/null
gen() { "$edmc" generate --net="$1" --vae="$2" --seeds=0 --steps=2 --outdir="$tmp/g"; }
tap_check "generate --vae with edmc init's VAE (its configuration from the file)" gen "$tmp/net4.safetensors" "$tmp/dec.safetensors"
if [ -f "$tmp/g/seed000000.png" ]; then tap_ok "... writes seed000000.png"; else tap_not_ok "... writes seed000000.png"; fi
# with the net from a package: the VAE is planned anew, not with the package's plan
"$edmc" compile "$srcdir/models/edm2-tiny.edm" -o "$tmp/tiny.edmpkg" >/dev/null 2>&1
tap_check "generate --package --vae" "$edmc" generate --package="$tmp/tiny.edmpkg" --net="$tmp/net4.safetensors" \
    --vae="$tmp/dec.safetensors" --seeds=0 --steps=2 --outdir="$tmp/gp"
tap_check "... the same picture as without the package" "$builddir/tests/tools/img_diff" "$tmp/gp/seed000000.png" \
    "$tmp/g/seed000000.png" 0
tap_expect_error "--vae for a pixel model" 2 "--vae: the model makes 3-channel pixel images, not latents" \
    gen "$tmp/net3.safetensors" "$tmp/dec.safetensors"
tap_expect_error "--vae file that is not there" 1 "nothere.safetensors" gen "$tmp/net4.safetensors" "$tmp/nothere.safetensors"
# a file without edmc.config is taken for sd-vae-ft-mse
"$builddir/tests/tools/st_make" "$tmp/bare.safetensors" decoder.conv_in.weight:F32:96,4,3,3:normal
tap_expect_error "--vae file with a tensor of the wrong shape" 1 \
    "decoder.conv_in.weight: expected [512, 4, 3, 3], found [96, 4, 3, 3]" gen "$tmp/net4.safetensors" "$tmp/bare.safetensors"
tap_expect_error "--vae file that is a network, not a VAE" 1 "missing decoder.conv_in.weight" \
    gen "$tmp/net4.safetensors" "$tmp/net4.safetensors"
# malformed VAE files
head -c 100000 "$tmp/dec.safetensors" >"$tmp/cut.safetensors"
tap_expect_error "--vae file cut short" 1 "file truncated?" gen "$tmp/net4.safetensors" "$tmp/cut.safetensors"
cp "$tmp/dec.safetensors" "$tmp/nan.safetensors"
hlen=$(od -An -tu8 -N8 "$tmp/dec.safetensors" | tr -d ' ')
printf '\000\000\300\177' | dd of="$tmp/nan.safetensors" bs=1 seek=$((8 + hlen)) conv=notrunc 2>/dev/null
tap_expect_error "--vae file with a NaN weight" 1 "element 0 is nan (not finite)" \
    gen "$tmp/net4.safetensors" "$tmp/nan.safetensors"
printf 'garbage' >"$tmp/garbage.safetensors"
tap_expect_error "--vae file that is not safetensors" 1 "too short for the 8-byte header length" \
    gen "$tmp/net4.safetensors" "$tmp/garbage.safetensors"
if command -v python3 >/dev/null 2>&1; then
    # a configuration in the file's metadata that the model refuses: a bad file (exit 1), named
    python3 - "$tmp/dec.safetensors" "$tmp/badcfg.safetensors" <<'PY'
import json, struct, sys
d = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', d[:8])[0]
h = json.loads(d[8:8 + n])
h['__metadata__'] = {'edmc.config': json.dumps({'block_out_channels': '[32, 64]', 'norm_groups': '7'})}
b = json.dumps(h).encode()
b += b' ' * (-len(b) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(b)) + b + d[8 + n:])
PY
    tap_expect_error "--vae file whose edmc.config the model refuses" 1 \
        "badcfg.safetensors (decoder): block_out_channels must be positive multiples of norm_groups (7)" \
        gen "$tmp/net4.safetensors" "$tmp/badcfg.safetensors"
fi
tap_expect_error "--grid of latents without --vae" 2 "give --vae=VAE.safetensors" \
    "$edmc" generate --net="$tmp/net4.safetensors" --seeds=0 --steps=2 --outdir="$tmp/g2" --grid="$tmp/g2.png"

# --- dataset encode: the reference's layout, read by edmc train; what it refuses
"$edmc" init "$vae" -D 'block_out_channels=[32,64]' -D norm_groups=8 -D 'part="encoder"' -o "$tmp/enc.safetensors" >/dev/null
"$edmc" dataset convert --source="$srcdir/tests/dataset/src" --dest="$tmp/src32.zip" --resolution=32x32 \
    --transform=center-crop --max-images=3 >/dev/null 2>&1
tap_check "dataset encode into a folder" "$edmc" dataset encode --source="$tmp/src32.zip" --dest="$tmp/latdir" \
    --vae="$tmp/enc.safetensors"
if [ -f "$tmp/latdir/00000/img-mean-std-00000002.npy" ] &&
    grep -q '"00000/img-mean-std-00000000.npy", [0-9]' "$tmp/latdir/dataset.json"; then
    tap_ok "... NNNNN/img-mean-std-NNNNNNNN.npy and dataset.json with the labels"
else
    tap_not_ok "... NNNNN/img-mean-std-NNNNNNNN.npy and dataset.json with the labels" "$(ls -R "$tmp/latdir")"
fi
# an .npy as numpy writes it: format 1.0, a header of 118 bytes padded to 128
if [ "$(od -An -c -j1 -N5 "$tmp/latdir/00000/img-mean-std-00000000.npy" | tr -d ' ')" = "NUMPY" ] &&
    head -c 128 "$tmp/latdir/00000/img-mean-std-00000000.npy" | grep -q "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 16, 16), }"; then
    tap_ok "... each a float32 (8, 16, 16) .npy"
else
    tap_not_ok "... each a float32 (8, 16, 16) .npy"
fi
tap_check "edmc train reads the latent dataset" "$edmc" train --model="$srcdir/models/edm2-tiny.edm" \
    -D model_channels=16 -D channels_per_head=16 --data="$tmp/latdir" --batch=3 --rampup=0 --lr=0.01 --threads=1 \
    --outdir="$tmp/run" --duration=6 --status=3 --snapshot=0
tap_expect_error "dataset encode without --vae" 2 "give the VAE's weights with --vae" \
    "$edmc" dataset encode --source="$tmp/src32.zip" --dest="$tmp/x.zip"
tap_expect_error "dataset encode takes no --transform" 2 "unknown option '--transform'" \
    "$edmc" dataset encode --source="$tmp/src32.zip" --dest="$tmp/x.zip" --vae="$tmp/enc.safetensors" --transform=none
tap_expect_error "dataset encode with a decoder's file" 1 "missing encoder.conv_in.weight" \
    "$edmc" dataset encode --source="$tmp/src32.zip" --dest="$tmp/x.zip" --vae="$tmp/dec.safetensors"
if [ -e "$tmp/x.zip" ]; then tap_not_ok "... leaves no zip behind"; else tap_ok "... leaves no zip behind"; fi
tap_done
