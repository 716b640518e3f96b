#!/bin/sh
# The reference's network pickles: `edmc import` against the tensors the
# fixtures were made from (tests/ref, written by tests/tools/make_ref_pickles.py),
# `generate --net=X.pkl` and `phema --indir=<folder of .pkl>` against the same
# commands on the imported safetensors, and one clear error (exit 1 or 2) for
# each kind of bad pickle.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
diff="$builddir/tests/tools/st_diff"
ref="$srcdir/tests/ref"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
EDMC_MODELS="$srcdir/models"
export EDMC_MODELS

# --- import: every tensor as stored, the configuration from init_kwargs
for f in snapshot-fp16 released-fp32; do
    tap_check "import $f.pkl" "$edmc" import "$ref/$f.pkl" -o "$tmp/$f.safetensors"
    tap_check "$f: the tensors the pickle was made from" "$diff" "$tmp/$f.safetensors" "$ref/$f.expect.safetensors" 0
    tap_check "$f: and no others" "$diff" "$ref/$f.expect.safetensors" "$tmp/$f.safetensors" 0
done
"$edmc" import "$ref/snapshot-fp16.pkl" -o "$tmp/s.safetensors" >"$tmp/out" 2>&1
if grep -q '63 tensors' "$tmp/out" && grep -q '"model_channels":"8"' "$tmp/out" && grep -q '"P_mean":"-0.4"' "$tmp/out"; then
    tap_ok "import prints the tensor count and the configuration (network and loss)"
else
    tap_not_ok "import prints the tensor count and the configuration" "$(cat "$tmp/out")"
fi

# --- generate: the pickle directly, the same samples as its import
tap_check "generate --net=X.pkl" "$edmc" generate --net="$ref/snapshot-fp16.pkl" --seeds=0-2 --steps=3 \
    --save-raw="$tmp/raw-pkl.safetensors"
"$edmc" generate --net="$tmp/snapshot-fp16.safetensors" --seeds=0-2 --steps=3 --save-raw="$tmp/raw-st.safetensors" \
    >/dev/null 2>&1
tap_check "generate: the pickle and its import sample the same" "$diff" "$tmp/raw-pkl.safetensors" \
    "$tmp/raw-st.safetensors" 0
tap_check "generate --guide=X.pkl" "$edmc" generate --net="$tmp/snapshot-fp16.safetensors" \
    --guide="$ref/released-fp32.pkl" --guidance=1.5 --seeds=0 --steps=2 --save-raw="$tmp/raw-g.safetensors"

# --- forward: --weights=X.pkl (the configuration given with -D, as for any weights)
cfg="-D model_channels=8 -D channel_mult=[1,2] -D num_blocks=1 -D attn_resolutions=[8] -D channels_per_head=8 -D logvar_channels=8 -D img_resolution=16 -D label_dim=10"
"$builddir/tests/tools/st_make" "$tmp/in.safetensors" x:F32:2,4,16,16:normal sigma:F32:2:0.7 class_labels:F32:2,10:onehot
# shellcheck disable=SC2086
tap_check "forward --weights=X.pkl" "$edmc" forward "$srcdir/models/edm2.edm" $cfg --weights="$ref/snapshot-fp16.pkl" \
    --input="$tmp/in.safetensors" --output="$tmp/fw-pkl.safetensors"
# shellcheck disable=SC2086
"$edmc" forward "$srcdir/models/edm2.edm" $cfg --weights="$tmp/snapshot-fp16.safetensors" --input="$tmp/in.safetensors" \
    --output="$tmp/fw-st.safetensors" >/dev/null 2>&1
tap_check "forward: the pickle and its import give the same D_x" "$diff" "$tmp/fw-pkl.safetensors" "$tmp/fw-st.safetensors" 0

# --- a state dict written by torch.save (its zip format): the tensors, no configuration
tap_check "import state-dict-fp32.pt (torch.save)" "$edmc" import "$ref/state-dict-fp32.pt" -o "$tmp/sd.safetensors"
tap_check "the state dict's tensors" "$diff" "$tmp/sd.safetensors" "$ref/released-fp32.expect.safetensors" 0
tap_check "and no others" "$diff" "$ref/released-fp32.expect.safetensors" "$tmp/sd.safetensors" 0
# shellcheck disable=SC2086
tap_check "forward --weights=X.pt" "$edmc" forward "$srcdir/models/edm2.edm" $cfg --weights="$ref/state-dict-fp32.pt" \
    --input="$tmp/in.safetensors" --output="$tmp/fw-pt.safetensors"
# shellcheck disable=SC2086
"$edmc" forward "$srcdir/models/edm2.edm" $cfg --weights="$ref/released-fp32.pkl" --input="$tmp/in.safetensors" \
    --output="$tmp/fw-rel.safetensors" >/dev/null 2>&1
tap_check "forward: the state dict and the pickle of the same network agree" "$diff" "$tmp/fw-pt.safetensors" \
    "$tmp/fw-rel.safetensors" 0
tap_expect_error "generate with a state dict names no model" 2 "give the .edm file with --model" \
    "$edmc" generate --net="$ref/state-dict-fp32.pt" --seeds=0 --outdir="$tmp/gsd"

# shellcheck disable=SC2086
tap_check "train --weights=X.pkl (8 images)" "$edmc" train --model="$srcdir/models/edm2.edm" $cfg --data=builtin:shapes \
    --weights="$ref/snapshot-fp16.pkl" --outdir="$tmp/train" --batch=4 --duration=8 --status=8

# --- phema: a folder of reference snapshots, the same as their imports
mkdir -p "$tmp/run"
for f in "$ref"/run/*.pkl; do
    "$edmc" import "$f" -o "$tmp/run/$(basename "$f" .pkl).safetensors" >/dev/null 2>&1
done
tap_check "phema --indir=<folder of .pkl>" "$edmc" phema --indir="$ref/run" --outstd=0.07,0.12 --outdir="$tmp/ph-pkl"
"$edmc" phema --indir="$tmp/run" --outstd=0.07,0.12 --outdir="$tmp/ph-st" >/dev/null 2>"$tmp/ph-st.err" || cat "$tmp/ph-st.err"
for std in 0.070 0.120; do
    tap_check "phema $std: the pickles give their imports' reconstruction" "$diff" \
        "$tmp/ph-pkl/phema-0000032-$std.safetensors" "$tmp/ph-st/phema-0000032-$std.safetensors" 0
done

# --- bad pickles: one line, naming the opcode, the class or the field
snap="$ref/snapshot-fp16.pkl"
swap() { # swap FROM TO OUT: the snapshot with one same-length string replaced
    perl -0777 -pe "s/\Q$1\E/$2/g" "$snap" >"$3"
}
swap num_blocks num_blockz "$tmp/kwarg.pkl"
swap Precond Precone "$tmp/class.pkl"
swap "torch
HalfStorage" "torch
LongStorage" "$tmp/storage.pkl"
swap _rebuild_tensor_v2 _rebuild_tensor_v9 "$tmp/reducer.pkl"
head -c 5000 "$snap" >"$tmp/cut.pkl"
printf '\200\002cos\nsystem\n(X\002\000\000\000lstR.' >"$tmp/os.pkl"
printf '\200\002(i__main__\nX\n.' >"$tmp/inst.pkl"
tap_expect_error "an unknown constructor argument" 1 "init_kwargs 'num_blockz' has no counterpart in models/edm2.edm" \
    "$edmc" import "$tmp/kwarg.pkl" -o "$tmp/x.safetensors"
tap_expect_error "another network class" 1 "the network is a 'Precone'" "$edmc" import "$tmp/class.pkl" -o "$tmp/x.safetensors"
tap_expect_error "a storage type edmc does not read" 1 "'torch.LongStorage', which is not a class or function edmc reads" \
    "$edmc" import "$tmp/storage.pkl" -o "$tmp/x.safetensors"
tap_expect_error "an unknown reducer" 1 "'torch._utils._rebuild_tensor_v9'" "$edmc" import "$tmp/reducer.pkl" -o "$tmp/x.safetensors"
tap_expect_error "a cut pickle" 1 "truncated" "$edmc" import "$tmp/cut.pkl" -o "$tmp/x.safetensors"
tap_expect_error "a pickle that would run os.system" 1 "'os.system', which is not a class or function edmc reads (nothing was run)" \
    "$edmc" import "$tmp/os.pkl" -o "$tmp/x.safetensors"
tap_expect_error "the INST opcode" 1 "opcode INST (0x69)" "$edmc" import "$tmp/inst.pkl" -o "$tmp/x.safetensors"
tap_expect_error "generate names the bad pickle" 1 "os.pkl: byte" "$edmc" generate --net="$tmp/os.pkl" --seeds=0 \
    --outdir="$tmp/g"
cp "$tmp/cut.pkl" "$tmp/run/network-snapshot-0000048-0.050.pkl"
tap_expect_error "phema names the bad snapshot" 1 "network-snapshot-0000048-0.050.pkl: byte" \
    "$edmc" phema --indir="$tmp/run" --outstd=0.1 --outdir="$tmp/ph-bad"
printf 'PK\003\004junk' >"$tmp/junk.pt"
tap_expect_error "a zip that is not a torch.save file" 1 "junk.pt: cannot open the zip" "$edmc" import "$tmp/junk.pt" \
    -o "$tmp/x.safetensors"
"$edmc" dataset convert --source="$srcdir/tests/dataset/src" --dest="$tmp/ds.zip" --resolution=16x16 >/dev/null 2>&1
tap_expect_error "a zip without data.pkl (a dataset)" 1 "without a <folder>/data.pkl" "$edmc" import "$tmp/ds.zip" \
    -o "$tmp/x.safetensors"
tap_expect_error "import of a safetensors file" 1 "not a pickle" "$edmc" import "$ref/snapshot-fp16.expect.safetensors" \
    -o "$tmp/x.safetensors"
tap_expect_error "import without -o" 2 "give the output file with -o" "$edmc" import "$snap"
tap_expect_error "import with -D" 2 "-D does not apply" "$edmc" import "$snap" -D model_channels=4 -o "$tmp/x.safetensors"
tap_expect_error "import of a missing file" 1 "cannot open" "$edmc" import "$tmp/none.pkl" -o "$tmp/x.safetensors"
if [ ! -e "$tmp/x.safetensors" ]; then
    tap_ok "no output is written for a bad pickle"
else
    tap_not_ok "an output was written for a bad pickle"
fi
tap_done
