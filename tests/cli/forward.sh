#!/bin/sh
# edmc init | forward | bench on the CPU: golden parity through the command
# line, determinism of init, and one clear error (non-zero exit) for each kind
# of bad input.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
mk="$builddir/tests/tools/st_make"
tiny="$srcdir/models/edm2-tiny.edm"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT


# --- init: seeded, reproducible, the reference's names
tap_check "init writes weights" "$edmc" init "$tiny" --seed=3 -o "$tmp/w3.safetensors"
"$edmc" init "$tiny" --seed=3 -o "$tmp/w3b.safetensors" >/dev/null 2>&1
"$edmc" init "$tiny" --seed=4 -o "$tmp/w4.safetensors" >/dev/null 2>&1
if cmp -s "$tmp/w3.safetensors" "$tmp/w3b.safetensors"; then tap_ok "init: same seed, same file"; else tap_not_ok "init: same seed gave different files"; fi
if cmp -s "$tmp/w3.safetensors" "$tmp/w4.safetensors"; then tap_not_ok "init: seeds 3 and 4 gave the same file"; else tap_ok "init: other seed, other weights"; fi

# --- forward on the golden inputs through the command line
tap_check "forward on the golden weights and inputs" "$edmc" forward "$tiny" --weights="$golden/weights.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/out.safetensors" --threads=1
tap_check "forward in float64" "$edmc" forward "$tiny" --weights="$golden/weights.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/out64.safetensors" --precision=f64
tap_check "forward with fresh weights" "$edmc" forward "$tiny" --weights="$tmp/w3.safetensors" \
    --input="$golden/forward.safetensors" --output="$tmp/out3.safetensors"
tap_check "bench --device=cpu" "$edmc" bench "$tiny" --device=cpu --batch=2 --iters=2
tap_check "bench --mode=train" "$edmc" bench "$tiny" --mode=train --batch=2 --iters=1
tap_check "bench --mode=sample" "$edmc" bench "$tiny" --mode=sample --batch=2 --iters=1
"$edmc" bench "$tiny" --batch=2 --iters=2 --json >"$tmp/bench.json" 2>&1
if /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["img_per_s"] > 0 and d["iters"] == 2 and d["mode"] == "forward"' "$tmp/bench.json" 2>/dev/null ||
    grep -q '"img_per_s": [0-9]' "$tmp/bench.json"; then
    tap_ok "bench --json prints one JSON line"
else
    tap_not_ok "bench --json prints one JSON line" "$(cat "$tmp/bench.json")"
fi
# bench's TFLOP/s is the work of docs/edm2.md §2 (info's multiply-adds, 2 operations each) over the time: a forward
# pass at batch 2, a whole sampler run (63 evaluations), and a training step (the backward pass about twice the forward)
"$edmc" info "$tiny" --json >"$tmp/info.json" 2>&1
for mode in forward sample train; do
    "$edmc" bench "$tiny" --batch=2 --iters=1 --threads=1 --mode=$mode --json >"$tmp/bench-$mode.json" 2>&1
done
if /usr/bin/python3 - "$tmp/info.json" "$tmp"/bench-forward.json "$tmp"/bench-sample.json "$tmp"/bench-train.json <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
per_iter = lambda d: d["tflop_s"] * 1e12 * d["ms_per_iter"] * 1e-3
fwd, smp, trn = (json.loads(open(f).read().splitlines()[-1]) for f in sys.argv[2:5])
want = 2e9 * (info["gmacs_per_sample"] * 2 + info["gmacs_weight_prep"])
assert abs(per_iter(fwd) / want - 1) < 1e-2, (per_iter(fwd), want)
assert abs(per_iter(smp) / (63 * want) - 1) < 1e-2, (per_iter(smp), 63 * want)
assert 2.5 < per_iter(trn) / want < 3.5, (per_iter(trn), want)
PY
then
    tap_ok "bench --json: tflop_s is info's work an iteration over its time (forward, sample: 63 evaluations, train)"
else
    tap_not_ok "bench --json tflop_s" "$(cat "$tmp"/bench-*.json)"
fi
tap_expect_error "bench --mode=backward" 2 "forward, train or sample" "$edmc" bench "$tiny" --mode=backward
tap_expect_error "--conv on the CPU" 2 "apply to --device=cuda" "$edmc" bench "$tiny" --conv=implicit
tap_expect_error "--matmul=magic" 2 "cublaslt or generated" "$edmc" bench "$tiny" --device=cuda --matmul=magic

# --- bad input: one clear error each
"$mk" "$tmp/ok.st" x:F32:2,4,16,16:normal sigma:F32:2:0.5 class_labels:F32:2,10:onehot
"$mk" "$tmp/shape.st" x:F32:2,3,16,16:normal sigma:F32:2:0.5 class_labels:F32:2,10:onehot
"$mk" "$tmp/sigma0.st" x:F32:2,4,16,16:normal sigma:F32:2:0 class_labels:F32:2,10:onehot
"$mk" "$tmp/sigmanan.st" x:F32:2,4,16,16:normal sigma:F32:2:nan class_labels:F32:2,10:onehot
"$mk" "$tmp/xinf.st" x:F32:2,4,16,16:inf sigma:F32:2:0.5 class_labels:F32:2,10:onehot
"$mk" "$tmp/labels.st" x:F32:2,4,16,16:normal sigma:F32:2:0.5 class_labels:F32:2,7:onehot
"$mk" "$tmp/nolabels.st" x:F32:2,4,16,16:normal sigma:F32:2:0.5
"$mk" "$tmp/batch.st" x:F32:2,4,16,16:normal sigma:F32:3:0.5 class_labels:F32:2,10:onehot
"$mk" "$tmp/uncond.st" x:F32:2,4,16,16:normal sigma:F32:2:0.5 class_labels:F32:2,10:onehot
printf 'not a safetensors file' >"$tmp/garbage.st"
w="$tmp/w3.safetensors"
run() { "$edmc" forward "$tiny" --weights="$1" --input="$2" --output="$tmp/o.st"; }
tap_check "forward on good random inputs" run "$w" "$tmp/ok.st"
tap_expect_error "wrong input shape" 1 "'x' is [2, 3, 16, 16], the model wants [N, 4, 16, 16]" run "$w" "$tmp/shape.st"
tap_expect_error "sigma = 0" 1 "sigma[0] = 0: noise levels must be > 0" run "$w" "$tmp/sigma0.st"
tap_expect_error "sigma not finite" 1 "'sigma' element 0 is nan (not finite)" run "$w" "$tmp/sigmanan.st"
tap_expect_error "x not finite" 1 "'x' element 0 is inf (not finite)" run "$w" "$tmp/xinf.st"
tap_expect_error "labels of the wrong width" 1 "'class_labels' is [2, 7], the model wants [N, 10]" run "$w" "$tmp/labels.st"
tap_expect_error "labels missing" 1 "no tensor 'class_labels' [N, 10] (the model's input)" run "$w" "$tmp/nolabels.st"
tap_expect_error "batch sizes disagree" 1 "'sigma' has 3 samples but 'x' has 2" run "$w" "$tmp/batch.st"
tap_expect_error "labels for an unconditional model" 1 "the model is unconditional" \
    "$edmc" forward "$tiny" -D label_dim=0 --weights="$w" --input="$tmp/uncond.st" --output="$tmp/o.st"
"$edmc" init "$tiny" -D model_channels=16 -o "$tmp/w16.safetensors" >/dev/null 2>&1
tap_expect_error "weights of another configuration" 1 "does not fit the model:" run "$tmp/w16.safetensors" "$tmp/ok.st"
tap_expect_error "weights: every mismatch listed" 1 "unet.enc.16x16_conv.weight: expected [32, 5, 3, 3], found [16, 5, 3, 3]" \
    run "$tmp/w16.safetensors" "$tmp/ok.st"
tap_expect_error "input not a safetensors file" 1 "garbage.st" run "$w" "$tmp/garbage.st"
tap_expect_error "missing weights file" 1 "cannot open" run "$tmp/nothing.safetensors" "$tmp/ok.st"
tap_expect_error "forward without --input" 2 "needs --weights" "$edmc" forward "$tiny" --weights="$w"
if ldconfig -p 2>/dev/null | grep -q "libcuda.so.1"; then
    tap_ok "# SKIP --device=cuda without a GPU (this machine has a CUDA driver)"
else
    tap_expect_error "--device=cuda without a GPU says so" 1 "no CUDA driver" "$edmc" bench "$tiny" --device=cuda
fi
tap_expect_error "--precision=bf16 on the CPU" 2 "f32 or f64" "$edmc" forward "$tiny" --precision=bf16 \
    --weights="$w" --input="$tmp/ok.st" --output="$tmp/o.st"
tap_expect_error "unknown option" 2 "unknown option '--wieghts'" "$edmc" forward "$tiny" --wieghts=x
tap_done
