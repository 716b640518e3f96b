#!/bin/sh
# Hostile or careless inputs outside the .edm language (which tests/diag and
# tests/cli/limits.sh cover): graph files, non-finite numbers, failing writes.
# Each ends in one clear error and a non-zero exit, never a silent wrong file.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
mk="$builddir/tests/tools/st_make"
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# --- the XML reader refuses what .edm refuses
"$edmc" dump "$tiny" --format=xml -o "$tmp/tiny.xml" >/dev/null 2>&1 || tap_not_ok "dump --format=xml"
sed '0,/value="0.25"/s//value="nan"/' "$tmp/tiny.xml" >"$tmp/nan.xml"
tap_expect_error "XML: value=\"nan\"" 1 "bad value 'nan'" "$edmc" check "$tmp/nan.xml"
sed '0,/value="0.25"/s//value="-inf"/' "$tmp/tiny.xml" >"$tmp/inf.xml"
tap_expect_error "XML: value=\"-inf\"" 1 "bad value '-inf'" "$edmc" check "$tmp/inf.xml"
sed '0,/value="0.25"/s//value="1e999"/' "$tmp/tiny.xml" >"$tmp/big.xml"
tap_expect_error "XML: value=\"1e999\"" 1 "bad value '1e999'" "$edmc" check "$tmp/big.xml"
sed 's/shape="N,4,16,16" name="x"/shape="N,0,16,16" name="x"/' "$tmp/tiny.xml" >"$tmp/zero.xml"
tap_expect_error "XML: a zero-size dimension" 1 "bad shape 'N,0,16,16'" "$edmc" check "$tmp/zero.xml"
tap_expect_error "XML: bench on a zero-size dimension" 1 "bad shape 'N,0,16,16'" "$edmc" bench "$tmp/zero.xml" --iters=1

# --- forward: weights checked on the way in, outputs on the way out
cat >"$tmp/lin.edm" <<'P'
input x: [N, 4];
w = weight: parameter([4], init = "ones");
output y = x * x * w;
P
"$mk" "$tmp/w1.safetensors" weight:F32:4:1 && "$mk" "$tmp/wnan.safetensors" weight:F32:4:nan &&
    "$mk" "$tmp/winf.safetensors" weight:F32:4:inf && "$mk" "$tmp/in1.safetensors" x:F32:2,4:1 &&
    "$mk" "$tmp/inbig.safetensors" x:F32:2,4:3e38 && "$mk" "$tmp/innan.safetensors" x:F32:2,4:nan ||
    tap_not_ok "st_make"
tap_check "forward: finite weights and inputs" "$edmc" forward "$tmp/lin.edm" --weights="$tmp/w1.safetensors" \
    --input="$tmp/in1.safetensors" --output="$tmp/o.safetensors"
rm -f "$tmp/o.safetensors"
tap_expect_error "forward: a NaN weight" 1 "wnan.safetensors: 'weight' element 0 is nan (not finite)" \
    "$edmc" forward "$tmp/lin.edm" --weights="$tmp/wnan.safetensors" --input="$tmp/in1.safetensors" \
    --output="$tmp/o.safetensors"
tap_expect_error "forward: an infinite weight" 1 "'weight' element 0 is inf (not finite)" \
    "$edmc" forward "$tmp/lin.edm" --weights="$tmp/winf.safetensors" --input="$tmp/in1.safetensors" \
    --output="$tmp/o.safetensors"
tap_expect_error "forward: a NaN input" 1 "'x' element 0 is nan" \
    "$edmc" forward "$tmp/lin.edm" --weights="$tmp/w1.safetensors" --input="$tmp/innan.safetensors" \
    --output="$tmp/o.safetensors"
tap_expect_error "forward: a huge input overflows" 1 "output: 'y' element 0 is inf (not finite)" \
    "$edmc" forward "$tmp/lin.edm" --weights="$tmp/w1.safetensors" --input="$tmp/inbig.safetensors" \
    --output="$tmp/o.safetensors"
if [ -e "$tmp/o.safetensors" ]; then tap_not_ok "forward: no output file after a non-finite result"; else
    tap_ok "forward: no output file after a non-finite result"; fi
tap_check "forward --allow-nonfinite writes it anyway" "$edmc" forward "$tmp/lin.edm" --weights="$tmp/w1.safetensors" \
    --input="$tmp/inbig.safetensors" --output="$tmp/o.safetensors" --allow-nonfinite

# --- step: the batch checked on the way in, loss and gradients on the way out
"$edmc" init "$tiny" -o "$tmp/wt.safetensors" >/dev/null 2>&1 || tap_not_ok "init tiny"
for fill in nan inf 3e38 normal; do
    "$mk" "$tmp/b_$fill.safetensors" images:F32:2,4,16,16:$fill class_labels:F32:2,10:onehot rnd_normal:F32:2:0 \
        unit_noise:F32:2,4,16,16:normal || tap_not_ok "st_make batch $fill"
done
tap_check "step: a finite batch" "$edmc" step "$tiny" --weights="$tmp/wt.safetensors" --batch="$tmp/b_normal.safetensors" \
    --output="$tmp/s.safetensors"
tap_expect_error "step: a NaN in the batch" 1 "b_nan.safetensors: 'images' element 0 is nan (not finite)" \
    "$edmc" step "$tiny" --weights="$tmp/wt.safetensors" --batch="$tmp/b_nan.safetensors" --output="$tmp/s2.safetensors"
tap_expect_error "step: an infinity in the batch" 1 "'images' element 0 is inf (not finite)" \
    "$edmc" step "$tiny" --weights="$tmp/wt.safetensors" --batch="$tmp/b_inf.safetensors" --output="$tmp/s2.safetensors"
tap_expect_error "step: a huge batch overflows" 1 "step: 'loss' element 0 is nan (not finite)" \
    "$edmc" step "$tiny" --weights="$tmp/wt.safetensors" --batch="$tmp/b_3e38.safetensors" --output="$tmp/s2.safetensors"
if [ -e "$tmp/s2.safetensors" ]; then tap_not_ok "step: no output after a non-finite loss"; else
    tap_ok "step: no output after a non-finite loss"; fi
tap_check "step --allow-nonfinite" "$edmc" step "$tiny" --weights="$tmp/wt.safetensors" \
    --batch="$tmp/b_3e38.safetensors" --output="$tmp/s2.safetensors" --allow-nonfinite

# --- writes: stdout errors are errors; dump -o is atomic and names its file
if [ -w /dev/full ]; then
    tap_expect_error "info > /dev/full" 1 "error writing to standard output" sh -c "'$edmc' info '$tiny' >/dev/full"
    tap_expect_error "info --json > /dev/full" 1 "error writing to standard output" \
        sh -c "'$edmc' info --json '$tiny' >/dev/full"
    tap_expect_error "check > /dev/full" 1 "error writing to standard output" sh -c "'$edmc' check '$tiny' >/dev/full"
    tap_expect_error "dump > /dev/full" 1 "" sh -c "'$edmc' dump '$tiny' >/dev/full"
    tap_expect_error "dump --stage=cuda > /dev/full" 1 "error writing to standard output" \
        sh -c "'$edmc' dump '$tiny' --stage=cuda >/dev/full"
fi
tap_expect_error "dump --stage=cuda -o into a missing folder names the file" 1 \
    "$tmp/nodir/k.cu: cannot create a temporary file" "$edmc" dump "$tiny" --stage=cuda -o "$tmp/nodir/k.cu"
tap_expect_error "dump -o into a missing folder names the file" 1 "$tmp/nodir/g.xml: cannot create a temporary file" \
    "$edmc" dump "$tiny" --format=xml -o "$tmp/nodir/g.xml"
echo previous >"$tmp/g.txt"
tap_check "dump -o replaces a file" "$edmc" dump "$tiny" -o "$tmp/g.txt"
if grep -q previous "$tmp/g.txt" || ls "$tmp" | grep -q '\.tmp\.'; then tap_not_ok "dump -o: old text or a temporary file left"
else tap_ok "dump -o: new text, no temporary file left"; fi
tap_done
