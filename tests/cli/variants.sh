#!/bin/sh
# The variants in models/variants/ compile and differ from edm2-img512-s
# exactly as their architecture says: same size with plain building blocks,
# attention moved to 32x32, two blocks per level.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
models="$srcdir/models"
base="$models/edm2-img512-s.edm"
plain="$models/variants/edm2-img512-s-plain.edm"
attn32="$models/variants/edm2-img512-s-attn32.edm"
blocks2="$models/variants/edm2-img512-s-2blocks.edm"

# top-level integer "params" of `edmc info --json` output on stdin
json_params() { awk -F: '/"params":/ { gsub(/[^0-9]/, "", $2); print $2; exit }'; }
# top-level "gmacs" (the first one; the per-op ones come after it)
json_gmacs() { awk -F: '/"gmacs":/ { gsub(/[ ,]/, "", $2); print $2; exit }'; }
# "gmacs" of op $1 in the "ops" table (0 when the op is absent)
json_op_gmacs() {
    awk -F: -v key="\"$1\"" '
        $1 ~ key "$" { inop = 1; next }
        inop && /"gmacs":/ { gsub(/[ ,]/, "", $2); print $2; found = 1; exit }
        inop && /}/ { exit }
        END { if (!found) print 0 }'
}
# "nodes" of op $1
json_op_nodes() {
    awk -F: -v key="\"$1\"" '
        $1 ~ key "$" { inop = 1; next }
        inop && /"nodes":/ { gsub(/[^0-9]/, "", $2); print $2; found = 1; exit }
        inop && /}/ { exit }
        END { if (!found) print 0 }'
}
# awk_true DESC EXPR [var=value ...]: ok when the awk expression is true
awk_true() {
    desc=$1; expr=$2; shift 2
    set -- $(for a in "$@"; do printf -- '-v %s ' "$a"; done)
    if awk "$@" "BEGIN { exit !($expr) }"; then tap_ok "$desc"; else tap_not_ok "$desc"; fi
}

for m in "$base" "$plain" "$attn32" "$blocks2"; do
    tap_check "check $(basename "$m")" "$edmc" check "$m"
done
info() { "$edmc" info --json "$1" 2>&1; }
S=$(info "$base") || { tap_not_ok "info edm2-img512-s" "$S"; tap_done; exit 1; }
P=$(info "$plain") || tap_not_ok "info plain" "$P"
A=$(info "$attn32") || tap_not_ok "info attn32" "$A"
B=$(info "$blocks2") || tap_not_ok "info 2blocks" "$B"

s_params=$(printf '%s\n' "$S" | json_params)
s_gmacs=$(printf '%s\n' "$S" | json_gmacs)
s_conv=$(printf '%s\n' "$S" | json_op_gmacs conv2d)
s_matmul=$(printf '%s\n' "$S" | json_op_gmacs matmul)
s_mul=$(printf '%s\n' "$S" | json_op_nodes mul)
if [ "$s_params" = 280212837 ]; then tap_ok "S: 280212837 parameters"
else tap_not_ok "S: $s_params parameters, not 280212837"; fi

# ---------------------------------------------------------------- plain
# Only fixed-function layers change (silu, lerp, concat, fourier gain): the
# weights and every convolution stay; the magnitude-preserving scale
# multiplies (after each silu, on both concat inputs, ...) go away.
p_params=$(printf '%s\n' "$P" | json_params)
p_gmacs=$(printf '%s\n' "$P" | json_gmacs)
p_conv=$(printf '%s\n' "$P" | json_op_gmacs conv2d)
p_mul=$(printf '%s\n' "$P" | json_op_nodes mul)
if [ "$p_params" = "$s_params" ]; then tap_ok "plain: same parameter count as S ($p_params)"
else tap_not_ok "plain: $p_params parameters, S has $s_params"; fi
awk_true "plain: fewer multiply-adds than S ($p_gmacs < $s_gmacs G)" "p < s" p="$p_gmacs" s="$s_gmacs"
awk_true "plain: identical conv2d multiply-adds ($p_conv G)" "p == s" p="$p_conv" s="$s_conv"
awk_true "plain: fewer mul nodes than S ($p_mul < $s_mul)" "p < s" p="$p_mul" s="$s_mul"
names() { "$edmc" info --params "$1" | awk '{ print $1 }' | LC_ALL=C sort; }
if d=$( { names "$base" >"${TMPDIR:-/tmp}/variants_s.$$"; names "$plain" | diff "${TMPDIR:-/tmp}/variants_s.$$" -; } 2>&1); then
    tap_ok "plain: info --params lists exactly the names of S"
else
    tap_not_ok "plain: info --params names differ from S" "$(printf '%s' "$d" | head -n 20)"
fi
rm -f "${TMPDIR:-/tmp}/variants_s.$$"
if [ "$("$edmc" info --params "$plain" | LC_ALL=C sort)" = "$("$edmc" info --params "$base" | LC_ALL=C sort)" ]; then
    tap_ok "plain: and the same shapes"
else
    tap_not_ok "plain: parameter shapes differ from S"
fi

# ---------------------------------------------------------------- attn32
# cblock = [192, 384, 576, 768] at 64, 32, 16, 8.  An attended block of width
# c adds attn_qkv (c -> 3c, 1x1) + attn_proj (c -> c, 1x1) = 4 c^2 weights
# (no biases; channels_per_head changes only the head count, not weights).
# Attention is on in the num_blocks = 3 encoder blocks and the 4 decoder
# blocks of each attended level, plus dec.8x8_in0 always (unchanged).
#   gained at 32x32: 7 * 4 * 384^2 = 7 * 4 * 147456 =  4128768
#   lost   at  8x8:  7 * 4 * 768^2 = 7 * 4 * 589824 = 16515072
#   difference: 4128768 - 16515072 = -12386304
#   attn32 params = 280212837 - 12386304 = 267826533
# Attention matmuls (q^T k and v w^T) cost 2 * c * (H W)^2 per block, whatever
# the head count:
#   32x32: 7 * 2 * 384 * 1024^2 = 5637144576;  8x8: 7 * 2 * 768 * 64^2 = 44040192
#   matmul difference = 5637144576 - 44040192 = 5593104384 = 5.593104384 G
a_params=$(printf '%s\n' "$A" | json_params)
a_matmul=$(printf '%s\n' "$A" | json_op_gmacs matmul)
a_gmacs=$(printf '%s\n' "$A" | json_gmacs)
if [ "$((a_params - s_params))" = -12386304 ] && [ "$a_params" = 267826533 ]; then
    tap_ok "attn32: parameters differ from S by -12386304 (= 267826533)"
else
    tap_not_ok "attn32: $a_params parameters, difference $((a_params - s_params)), want -12386304"
fi
awk_true "attn32: larger matmul multiply-adds ($a_matmul > $s_matmul G)" "a > s" a="$a_matmul" s="$s_matmul"
awk_true "attn32: matmul grows by 5.593104384 G ($a_matmul - $s_matmul)" \
    "(a - s - 5.593104384) ^ 2 < 1e-12" a="$a_matmul" s="$s_matmul"
awk_true "attn32: more multiply-adds in all ($a_gmacs > $s_gmacs G)" "a > s" a="$a_gmacs" s="$s_gmacs"

# ---------------------------------------------------------------- 2blocks
# Dropping one block per level removes, at each level of width c, one encoder
# block c -> c and one decoder block 2c -> c (a middle one: main path c plus a
# skip of width c; the first and last decoder blocks keep their inputs):
#   enc c->c:  conv_res0 9c^2 + conv_res1 9c^2 + emb_linear 768c + emb_gain 1
#   dec 2c->c: conv_res0 18c^2 + conv_res1 9c^2 + conv_skip 2c^2 + 768c + 1
#   per level: 47c^2 + 1536c + 2, plus 2 * 4c^2 of attention at 16x16, 8x8
#   c=192:  47*36864  + 1536*192 + 2                     =  2027522
#   c=384:  47*147456 + 1536*384 + 2                     =  7520258
#   c=576: (47+8)*331776 + 1536*576 + 2                  = 19132418
#   c=768: (47+8)*589824 + 1536*768 + 2                  = 33619970
#   removed: 62300168;  2blocks params = 280212837 - 62300168 = 217912669
# (A full count of every block's weights gives the same number.)
b_params=$(printf '%s\n' "$B" | json_params)
b_gmacs=$(printf '%s\n' "$B" | json_gmacs)
removed=$(awk 'BEGIN { n = split("192 384 576 768", c, " "); t = 0
    for (i = 1; i <= n; i++) t += (47 + (i >= 3 ? 8 : 0)) * c[i] * c[i] + 1536 * c[i] + 2
    printf "%d\n", t }')
if [ "$b_params" = 217912669 ] && [ "$((s_params - b_params))" = "$removed" ]; then
    tap_ok "2blocks: 217912669 parameters ($removed fewer than S)"
else
    tap_not_ok "2blocks: $b_params parameters, $((s_params - b_params)) fewer than S; want 217912669 ($removed fewer)"
fi
awk_true "2blocks: fewer multiply-adds ($b_gmacs < $s_gmacs G)" "b < s" b="$b_gmacs" s="$s_gmacs"
tap_done
