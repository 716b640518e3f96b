#!/bin/sh
# --fuse through the command line: every command that runs a model takes it
# and gives the numbers of --fuse=none; info reports kernels; dump shows the
# plan; bad settings are one clear error.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
diff="$builddir/tests/tools/st_diff"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- forward, step and the sampler: fused as unfused (f32 to 1e-5), and still golden
for f in none all wn prologue epilogue ew; do
    tap_check "forward --fuse=$f" "$edmc" forward "$tiny" --weights="$golden/weights.safetensors" \
        --input="$golden/forward.safetensors" --output="$tmp/fwd-$f.safetensors" --fuse=$f
done
tap_check "forward --fuse=all is golden" "$diff" "$tmp/fwd-all.safetensors" "$golden/forward.safetensors" 1e-4
for f in all wn prologue epilogue ew; do
    tap_check "forward --fuse=$f equals --fuse=none" "$diff" "$tmp/fwd-$f.safetensors" "$tmp/fwd-none.safetensors" 1e-5
done
for f in none all; do
    tap_check "step --fuse=$f" "$edmc" step "$tiny" --weights="$golden/weights.safetensors" \
        --batch="$golden/train_step.safetensors" --lr=0.01 --output="$tmp/step-$f.safetensors" --fuse=$f
    tap_check "generate --fuse=$f (8 steps, guided)" "$edmc" generate --net="$golden/weights.safetensors" --model="$tiny" \
        --noise="$golden/sample.safetensors" --steps=8 --guide="$golden/guide_weights.safetensors" --guide-model="$tiny" \
        --guidance=2 --save-raw="$tmp/gen-$f.safetensors" --fuse=$f
done
tap_check "step: fused equals unfused" "$diff" "$tmp/step-all.safetensors" "$tmp/step-none.safetensors" 1e-5
tap_check "generate: fused equals unfused" "$diff" "$tmp/gen-all.safetensors" "$tmp/gen-none.safetensors" 1e-5
tap_check "bench --fuse=ew --mode=train" "$edmc" bench "$tiny" --fuse=ew --mode=train --batch=2 --iters=1

# --- info and dump
"$edmc" info --json "$tiny" >"$tmp/info.json" 2>&1
if grep -q '"kernels_forward": *75' "$tmp/info.json" && grep -q '"kernels_train": *245' "$tmp/info.json"; then
    tap_ok "info --json: kernels_forward and kernels_train at --fuse=all"
else
    tap_not_ok "info --json: kernels" "$(grep kernels "$tmp/info.json")"
fi
"$edmc" info --json --fuse=none "$tiny" >"$tmp/none.json" 2>&1
if grep -q '"kernels_forward": *568' "$tmp/none.json" && grep -q '"fuse": *"none"' "$tmp/none.json"; then
    tap_ok "info --fuse=none: one kernel per node"
else
    tap_not_ok "info --fuse=none" "$(grep -E 'kernels|fuse' "$tmp/none.json")"
fi
"$edmc" dump "$tiny" --stage=fused >"$tmp/plan.txt" 2>&1
if head -1 "$tmp/plan.txt" | grep -q "^plan fuse=all: 75 kernels" && grep -q "kernel 0 weights" "$tmp/plan.txt" &&
    grep -q "pro0 %[0-9]* silu" "$tmp/plan.txt"; then
    tap_ok "dump --stage=fused: the kernels, the weight prep group, silu prologues"
else
    tap_not_ok "dump --stage=fused" "$(head -3 "$tmp/plan.txt")"
fi
"$edmc" dump "$tiny" --stage=fused --mode=train >"$tmp/plan-train.txt" 2>&1
if head -1 "$tmp/plan-train.txt" | grep -q "^plan fuse=all: 245 kernels" && grep -q "wgrad" "$tmp/plan-train.txt"; then
    tap_ok "dump --stage=fused --mode=train"
else
    tap_not_ok "dump --stage=fused --mode=train" "$(head -3 "$tmp/plan-train.txt")"
fi
tap_check "dump --stage=rewrite" "$edmc" dump "$tiny" --stage=rewrite -o "$tmp/rw.txt"
if grep -q "(wn)" "$tmp/rw.txt"; then tap_ok "the rewrite applies the weight-norm scale"; else tap_not_ok "no wn nodes after the rewrite"; fi

# --- errors
tap_expect_error "--fuse=bogus" 2 "unknown rule 'bogus'" "$edmc" forward "$tiny" --fuse=bogus \
    --weights="$golden/weights.safetensors" --input="$golden/forward.safetensors" --output="$tmp/x.safetensors"
tap_expect_error "info --fuse=wn,nope" 2 "unknown rule 'nope'" "$edmc" info "$tiny" --fuse=wn,nope
tap_expect_error "dump --stage=fused --format=dot" 2 "written as text or xml" "$edmc" dump "$tiny" --stage=fused --format=dot
"$edmc" dump "$tiny" --stage=fused --format=xml -o "$tmp/plan.xml" 2>&1
if grep -q '<edmc-plan version="1" fuse="all"' "$tmp/plan.xml" && [ "$(grep -c '<group ' "$tmp/plan.xml")" -eq 75 ]; then
    tap_ok "dump --stage=fused --format=xml: the plan, 75 groups"
else
    tap_not_ok "dump --stage=fused --format=xml" "$(head -3 "$tmp/plan.xml")"
fi
tap_expect_error "dump --stage=nothing" 2 "unknown stage" "$edmc" dump "$tiny" --stage=nothing
tap_done
