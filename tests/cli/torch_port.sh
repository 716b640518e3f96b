#!/bin/sh
# The yardstick: our PyTorch EDM2 (scripts/edm2_torch.py), which every speed
# ratio is measured against, checked against the reference's golden vectors
# (forward, one training step, the 8-step sampler); and the GPU script's
# benchmark program (scripts/bench_torch_gpu.py) run on the CPU in each of its
# modes, so that a lent GPU's minutes are not lost to a Python error.
# Needs python3 with torch (Debian's python3-torch); skipped (77) without it.
. "$srcdir/tests/tap.sh"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
need_python "torch"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port="$srcdir/scripts/edm2_torch.py"
for what in "" -step -sample; do
    if "$py" "$port" "--check-golden$what" "$golden" >"$tmp/check.out" 2>&1 && grep -q ': PASS' "$tmp/check.out"; then
        tap_ok "edm2_torch.py --check-golden$what: $(grep ': PASS' "$tmp/check.out")"
    else
        tap_not_ok "edm2_torch.py --check-golden$what" "$(tail -n 5 "$tmp/check.out")"
    fi
done
# bench_torch_gpu.py on the CPU (fp32: its fp16 is CUDA's): one JSON line a mode, a rate in it
for mode in forward train sample; do
    "$py" "$srcdir/scripts/bench_torch_gpu.py" --preset=tiny --mode="$mode" --batch=2 --device=cpu \
        --precision=fp32 --iters=1 --warmup=0 --steps=2 --threads=1 --json >"$tmp/b.out" 2>"$tmp/b.err"
    st=$?
    if [ "$st" -eq 0 ] && "$py" -c 'import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert r["mode"] == sys.argv[2] and r["img_per_s"] > 0 and r["params"] > 0, r' "$tmp/b.out" "$mode" 2>"$tmp/j.err"; then
        tap_ok "bench_torch_gpu.py --mode=$mode on the CPU: $(sed -n 's/.*"img_per_s": \([0-9.]*\).*/\1/p' "$tmp/b.out") images/s"
    else
        tap_not_ok "bench_torch_gpu.py --mode=$mode (exit $st)" "$(tail -n 3 "$tmp/b.err" "$tmp/j.err")"
    fi
done
tap_expect_error "bench_torch_gpu.py --steps=1" 2 "--steps >= 2" \
    "$py" "$srcdir/scripts/bench_torch_gpu.py" --preset=tiny --mode=sample --device=cpu --precision=fp32 --steps=1
tap_done
