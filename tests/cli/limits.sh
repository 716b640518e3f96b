#!/bin/sh
# The compiler stays bounded on any input: programs at and past each limit of
# docs/language.md section 3.10 end in seconds, with a positioned error past
# the limit (exit 1, or 2 for a -D value) and no crash or sanitizer report.
# The programs are generated here (some are megabytes).
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# gen FILE AWK-PROGRAM: writes FILE from an awk BEGIN block
gen() { awk "BEGIN { $2 }" >"$tmp/$1"; }

# within DESC SECONDS WANT_STATUS WANT_TEXT COMMAND...: exit status, a line of
# stderr containing WANT_TEXT (empty: any), no sanitizer report, in time.
within() {
    desc=$1 budget=$2 want=$3 text=$4
    shift 4
    # CPU seconds (user + system) where /usr/bin/time can tell, so that a
    # loaded machine does not fail the budget; else wall-clock seconds
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%U %S' -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err"
        status=$?
        took=$(tail -n 1 "$tmp/time" | awk '{ printf "%d", $1 + $2 + 0.999 }' 2>/dev/null)
        [ -n "$took" ] || took=0
    else
        start=$(date +%s)
        "$@" >"$tmp/out" 2>"$tmp/err"
        status=$?
        took=$(($(date +%s) - start))
    fi
    problems=""
    [ "$status" -eq "$want" ] || problems="exit status $status, expected $want"
    [ -z "$text" ] || grep -qF -- "$text" "$tmp/err" || problems="$problems; no '$text' in stderr"
    ! grep -q 'Sanitizer\|runtime error' "$tmp/err" || problems="$problems; sanitizer report"
    [ "$took" -le "$budget" ] || problems="$problems; took ${took}s (budget ${budget}s)"
    if [ -z "$problems" ]; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "${problems#; }" "$(head -c 400 "$tmp/err")"
    fi
}

out='input x: [N, 4]; output y = x;'
deep="nested deeper than 1000 levels"

# --- recursion: long chains are refused by the parser, with a position
gen chain.edm "printf \"k = 1\"; for (i = 0; i < 30000; i++) printf \"+1\"; print \";\""
within "30,000-term + chain" 2 1 "chain.edm:1:" "$edmc" check "$tmp/chain.edm"
within "30,000-term + chain: the depth error" 2 1 "$deep" "$edmc" check "$tmp/chain.edm"
gen and.edm "printf \"k = true\"; for (i = 0; i < 30000; i++) printf \" and true\"; print \";\""
within "30,000-term 'and' chain" 2 1 "$deep" "$edmc" check "$tmp/and.edm"
gen index.edm "printf \"l = [1]; k = l\"; for (i = 0; i < 30000; i++) printf \"[0]\"; print \";\""
within "30,000-long index chain" 2 1 "$deep" "$edmc" check "$tmp/index.edm"
gen pow.edm "printf \"k = 1\"; for (i = 0; i < 30000; i++) printf \"**1\"; print \";\""
within "30,000-term ** chain (right-associative)" 2 1 "" "$edmc" check "$tmp/pow.edm"
gen neg.edm "printf \"k = \"; for (i = 0; i < 30000; i++) printf \"-\"; print \"1;\""
within "30,000 unary minus" 2 1 "" "$edmc" check "$tmp/neg.edm"
gen tensor.edm "printf \"input x: [N, 4]; output y = x\"; for (i = 0; i < 30000; i++) printf \" * x\"; print \";\""
within "30,000-term tensor expression" 2 1 "$deep" "$edmc" check "$tmp/tensor.edm"
gen ifs.edm "for (i = 0; i < 5000; i++) printf \"if true { \"; printf \"k = 1;\"; for (i = 0; i < 5000; i++) printf \"}\"; print \"\""
within "5,000 nested if statements" 2 1 "" "$edmc" check "$tmp/ifs.edm"
gen ok999.edm "printf \"k = 1\"; for (i = 0; i < 990; i++) printf \"+1\"; print \"; assert k == 991; $out\""
within "990-term chain (under the limit) compiles" 2 0 "" "$edmc" check "$tmp/ok999.edm"
# each file's tree is bounded; block recursion multiplies it: bounded at elaboration
gen rec.edm "printf \"block f(;n) { if n == 0 { return 0; } return f(n - 1)\"; for (i = 0; i < 900; i++) printf \"+0\"; print \"; } k = f(60); $out\""
within "deep expressions times recursion" 2 1 "nested deeper than 1500 levels at elaboration" "$edmc" check "$tmp/rec.edm"
gen dval "printf \"model_channels=\"; for (i = 0; i < 50000; i++) printf \"0+\"; printf \"32\""
within "100 KB -D value" 2 2 "$deep" "$edmc" check -D "$(cat "$tmp/dval")" "$tiny"

# --- exponential: == and 'in' on lists sharing sub-lists count as steps
cat >"$tmp/shared.edm" <<'P'
l = [1]; m = [1];
for i in range(60) { l = [l, l]; m = [m, m]; }
assert l == m;
P
within "== on lists sharing sub-lists" 10 1 "shared.edm:3:10: error: elaboration takes more than" "$edmc" check "$tmp/shared.edm"
sed 's/assert l == m;/assert l in [m];/' "$tmp/shared.edm" >"$tmp/shared_in.edm"
within "'in' on lists sharing sub-lists" 10 1 "steps (comparing lists" "$edmc" check "$tmp/shared_in.edm"
cat >"$tmp/selfeq.edm" <<'P'
l = []; l.push(l); m = []; m.push(m);
assert l == m;
P
within "== on two lists that contain themselves" 10 1 "steps (comparing lists" "$edmc" check "$tmp/selfeq.edm"

# --- quadratic: programs near each documented limit, in seconds
gen stmts.edm "print \"$out\"; for (i = 0; i < 100000; i++) print \"a = 1;\""
within "100,000 statements" 5 0 "" "$edmc" check "$tmp/stmts.edm"
gen list.edm "print \"$out\"; printf \"l = [\"; for (i = 0; i < 900000; i++) printf \"1,\"; print \"]; assert len(l) == 900000;\""
within "900,000-item list literal" 10 0 "" "$edmc" check "$tmp/list.edm"
gen blocks.edm "print \"$out\"; for (i = 0; i < 100000; i++) print \"block b\" i \"(x) { return x; }\"; print \"output z = b99999(x);\""
within "100,000 block definitions" 5 0 "" "$edmc" check "$tmp/blocks.edm"
gen globals.edm "print \"$out\"; for (i = 0; i < 100000; i++) print \"g\" i \" = \" i \";\"; print \"assert g99999 == 99999;\""
within "100,000 globals" 5 0 "" "$edmc" check "$tmp/globals.edm"
gen params.edm "print \"$out\"; for (i = 0; i < 100000; i++) print \"param p\" i \" = \" i \";\"; print \"assert p99999 == 99999;\""
within "100,000 params" 5 0 "" "$edmc" check "$tmp/params.edm"
cat >"$tmp/names.edm" <<P
$out
block B(;i) { w = "w{i}": scalar(); return w; }
for i in range(100000) { t = "b{i}": B(i); }
P
within "100,000 parameter names and labelled calls" 10 0 "" "$edmc" check "$tmp/names.edm"
gen outputs.edm "print \"input x: [N, 4];\"; for (i = 0; i < 100000; i++) print \"output y\" i \" = x;\""
within "100,000 outputs" 10 0 "" "$edmc" check "$tmp/outputs.edm"
cat >"$tmp/push.edm" <<P
$out
l = [];
for i in range(1000000) { l.push(i); }
assert len(l) == 1000000;
P
within "1,000,000 pushes" 10 0 "" "$edmc" check "$tmp/push.edm"
within "-D num_blocks=1000" 10 0 "" "$edmc" check -D num_blocks=1000 "$tiny"

# --- exact results past the old silent cuts
cat >"$tmp/exact.edm" <<P
$out
s = "0123456789";
for i in range(899) { s = s + "0123456789"; }
t = "<{s}>";
assert len(t) == 9002, "interpolation cut: " + str(len(t));
l = [1]; m = [1];
for i in range(70) { l = [l]; m = [m]; }
assert l == m, "70-deep lists compare unequal";
assert l in [m], "70-deep list not found";
k = [1];
for i in range(19) { k = [k]; }
assert str(k) == "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]", str(k);
c = []; c.push(c);
assert str(c) == "[[...]]", str(c);
P
within "exact interpolation, deep equality, deep str" 2 0 "" "$edmc" check "$tmp/exact.edm"
cat >"$tmp/deepstr.edm" <<'P'
l = [1];
for i in range(1000) { l = [l]; }
s = str(l);
P
within "str of a 1001-deep list" 2 1 "deepstr.edm:3:5: error: str: a list nested deeper than 1000 levels" "$edmc" check "$tmp/deepstr.edm"
cat >"$tmp/longstr.edm" <<'P'
s = "0123456789";
for i in range(13) { s = s + s; }
P
within "string over 64 KiB by +" 2 1 "string longer than 64 KiB" "$edmc" check "$tmp/longstr.edm"
cat >"$tmp/longinterp.edm" <<'P'
s = "0123456789";
for i in range(12) { s = s + s; }
t = "{s}{s}";
P
within "interpolation over 64 KiB" 2 1 "longinterp.edm:3:5: error: string longer than 64 KiB" "$edmc" check "$tmp/longinterp.edm"
cat >"$tmp/longlist.edm" <<'P'
l = range(100000);
s = str(l);
P
within "str of a list over 64 KiB" 2 1 "str: longer than 64 KiB" "$edmc" check "$tmp/longlist.edm"
gen literal.edm "printf \"s = \\\"\"; for (i = 0; i < 70000; i++) printf \"a\"; print \"\\\";\""
within "string literal over 64 KiB" 2 1 "literal.edm:1:5: error: string longer than 64 KiB" "$edmc" check "$tmp/literal.edm"
gen literal_ok.edm "printf \"s = \\\"\"; for (i = 0; i < 65536; i++) printf \"a\"; print \"\\\"; assert len(s) == 65536; $out\""
within "string literal of 64 KiB" 2 0 "" "$edmc" check "$tmp/literal_ok.edm"
tap_done
