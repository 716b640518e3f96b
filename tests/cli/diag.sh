#!/bin/sh
# Diagnostics: every tests/diag/NAME.edm is a malformed program that `edmc check`
# must reject cleanly: exit status exactly 1 (no crash, no sanitizer report), and
# stderr as NAME.expect says:
#   - line 1 of NAME.expect is the exact first line of stderr;
#   - every further line of NAME.expect must appear, exactly, as some line of
#     stderr (notes, the "N errors" count line, ...), in any order.
# In NAME.expect, @FILE@ stands for the path of NAME.edm as passed to edmc and
# @DIR@ for the folder it is in (imports resolve relative to it), @ROOT@ for the
# source tree; all three are absolute paths without "." or ".." (edmc writes an
# imported file's path that way).
# Then the -D command-line overrides, against the tiny and the full model.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
root=$(cd "$srcdir" && pwd) || exit 1
diag="$root/tests/diag"
models="$srcdir/models"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# check_diag DESCRIPTION EXPECT_FILE FILE_SUBST STATUS_WANTED COMMAND...
check_diag() {
    desc=$1 expect=$2 file=$3 want=$4
    shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    sed -e "s|@FILE@|$file|g" -e "s|@DIR@|$(dirname "$file")|g" -e "s|@ROOT@|$root|g" "$expect" >"$tmp/want"
    first=$(head -n 1 "$tmp/err")
    want_first=$(head -n 1 "$tmp/want")
    problems=""
    [ "$status" -eq "$want" ] || problems="exit status $status, expected $want"
    if grep -q 'AddressSanitizer\|runtime error\|LeakSanitizer' "$tmp/err"; then
        problems="$problems; sanitizer report"
    fi
    [ "$first" = "$want_first" ] || problems="$problems; first line differs"
    tail -n +2 "$tmp/want" >"$tmp/rest"
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        grep -qxF -- "$line" "$tmp/err" || problems="$problems; missing line: $line"
    done <"$tmp/rest"
    if [ -z "$problems" ]; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "${problems#; }" "expected: $want_first" "got:      $first" \
            "$(head -n 12 "$tmp/err")"
    fi
}

for f in "$diag"/*.edm; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .edm)
    if [ ! -f "$diag/$name.expect" ]; then
        tap_not_ok "diag $name" "no $name.expect"
        continue
    fi
    start=$(date +%s)
    check_diag "diag $name" "$diag/$name.expect" "$f" 1 "$edmc" check "$f"
    # limits must trip quickly (the endless loop, deep recursion, ...): CPU
    # seconds where /usr/bin/time can tell (a loaded machine stretches the
    # wall clock), else wall-clock seconds
    took=$(($(date +%s) - start))
    rm -f "$tmp/time"
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%U %S' -o "$tmp/time" "$edmc" check "$f" >/dev/null 2>&1
        [ -s "$tmp/time" ] && took=$(tail -n 1 "$tmp/time" | awk '{ printf "%d", $1 + $2 }')
    fi
    [ "$took" -le 2 ] || tap_not_ok "diag $name took ${took}s (limits must fail fast)"
done

# -D NAME=VALUE: mistakes are usage errors (exit 2), good overrides compile.
tiny="$models/edm2-tiny.edm"
d_case() { # NAME STATUS EXPECTED_FIRST_LINE ARGS...
    name=$1 want=$2
    printf '%s\n' "$3" >"$tmp/expect"
    shift 3
    check_diag "-D $name" "$tmp/expect" "" "$want" "$edmc" check "$@"
}
d_case "unknown parameter" 2 \
    "<-D model_channel>:1:1: error: -D model_channel: the program has no parameter 'model_channel' (did you mean 'model_channels'?)" \
    -D model_channel=3 "$tiny"
d_case "wrong type" 2 \
    "<-D channel_mult>:1:1: error: -D channel_mult: expected a list like [1, 2], got 3
$tiny:7:7: note: parameter 'channel_mult' is declared here" \
    -D channel_mult=3 "$tiny"
d_case "malformed value" 2 \
    "<-D model_channels>:1:3: error: -D model_channels=[1,: not a valid value: syntax error, unexpected end of file, expecting ']'" \
    -D 'model_channels=[1,' "$tiny"
d_case "missing '='" 2 "edmc check: -D 'model_channels': expected name=value" -D model_channels "$tiny"
d_case "not a name" 2 "edmc: error: -D 1x: not a parameter name" -D 1x=3 "$tiny"
d_case "string for a number" 2 \
    "<-D model_channels>:1:1: error: -D model_channels: expected a number like 32, got \"a\"" \
    -D 'model_channels="a"' "$tiny"
d_case "given twice" 2 "<-D model_channels>:1:1: error: -D model_channels given twice" \
    -D model_channels=64 -D model_channels=32 "$tiny"
d_case "unknown name in the value" 2 "<-D img_channels>:1:1: error: -D img_channels: unknown name 'x'" -D img_channels=x "$tiny"

# out-of-range parameters are refused where models/edm2.edm declares them
edm2="$root/models/edm2.edm"
d_case "attention at a resolution the U-Net lacks" 1 \
    "$edm2:55:5: error: attn_resolutions: 3 is not a resolution of this U-Net (those are [16, 8])" \
    -D 'attn_resolutions=[3]' "$tiny"
d_case "negative label_dim" 1 \
    "$edm2:41:1: error: label_dim must be a non-negative integer (0: unconditional), got -5" -D label_dim=-5 "$tiny"
d_case "negative num_blocks" 1 "$edm2:49:1: error: num_blocks must be a non-negative integer, got -1" \
    -D num_blocks=-1 "$tiny"
d_case "sigma_data zero" 1 "$edm2:61:1: error: sigma_data must be positive, got 0" -D sigma_data=0 "$tiny"
d_case "fractional resolution" 1 "$edm2:39:1: error: img_resolution must be a positive integer, got 16.5" \
    -D img_resolution=16.5 "$tiny"
d_case "resolution not divisible" 1 \
    "$edm2:47:1: error: img_resolution 15 must be divisible by 2^(levels - 1) for [1, 2]" -D img_resolution=15 "$tiny"
d_case "dropout of 1" 1 "$edm2:63:1: error: dropout must be in [0, 1), got 1.0" -D dropout=1.0 "$tiny"
d_case "non-UTF-8 string value" 2 \
    "<-D ops_library>:1:1: error: -D ops_library=\"lib/?.edm\": not a valid value: string is not valid UTF-8 (byte 0xff)" \
    -D "$(printf 'ops_library="lib/\377.edm"')" "$tiny"
d_case "integer out of range in a value" 2 \
    "<-D model_channels>:1:5: error: -D model_channels: int: 1e+300 is out of the integer range (magnitude at most 2^53)" \
    -D 'model_channels=int(1e300)' "$tiny"

tap_check "-D model_channels=64 (tiny)" "$edmc" check -D model_channels=64 "$tiny"
tap_check "-D channel_mult=[1,2,2] -D attn_resolutions=[4] (tiny)" \
    "$edmc" check -D 'channel_mult=[1,2,2]' -D 'attn_resolutions=[4]' "$tiny"
tap_check "-D model_channels=256 -D channel_mult=[1,2,2,4] -D attn_resolutions=[16] (edm2)" \
    "$edmc" check -D model_channels=256 -D 'channel_mult=[1,2,2,4]' -D 'attn_resolutions=[16]' "$models/edm2.edm"
tap_check "-Dname=value without a space" "$edmc" check -Dmodel_channels=64 "$tiny"
tap_done
