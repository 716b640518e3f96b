#!/bin/sh
# edmc against our PyTorch implementation (scripts/bench_torch_cpu.py), side by side on this
# machine in one run, at 1 and 2 threads:
#   tiny forward  edm2-tiny, batch 8        (edmc bench / bench_torch_cpu.py --mode forward)
#   xs forward    edm2-img512-xs, batch 1   (few iterations: about a second an image)
#   tiny train    edm2-tiny, batch 8        (edmc train on builtin:shapes / --mode train:
#                                            EDM2 loss + backward + Adam, forward and backward)
# Each number is the best of REPEAT runs (img/s of one run = images / time over its timed
# iterations); the spread (worst run) is printed too.  Prints one table at the end.
#
# Usage: scripts/bench-cpu.sh [--repeat N] [--threads "1 2"] [--quick]
# Environment: EDMC (default ./edmc), PYTHON (default /usr/bin/python3, Debian's torch).
# Runs in about 2.5 minutes on a 2-core VM with the defaults (--quick: about 40 s).
set -eu

EDMC=${EDMC:-./edmc}
PYTHON=${PYTHON:-/usr/bin/python3}
REPEAT=3
THREADS="1 2"
QUICK=0
while [ $# -gt 0 ]; do
    case $1 in
    --repeat) REPEAT=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --quick) QUICK=1; REPEAT=1; shift ;;
    *) echo "usage: $0 [--repeat N] [--threads \"1 2\"] [--quick]" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# img/s from a line "… img_per_s=X …" (PyTorch) or '{… "img_per_s": X, …}' (edmc bench --json)
ips() { sed -n 's/.*img_per_s[=": ]*\([0-9.]*\).*/\1/p' | head -n 1; }

# best and worst of the numbers on stdin, as "best worst"
best_worst() { awk 'NF { v = $1 + 0; if (n == 0 || v > b) b = v; if (n == 0 || v < w) w = v; n++ }
                    END { if (n) printf "%.2f %.2f\n", b, w; else print "- -" }'; }

edmc_forward() { # model batch iters threads
    "$EDMC" bench "$1" --device=cpu --batch="$2" --iters="$3" --threads="$4" --json | ips
}
torch_forward() { # preset batch iters threads
    "$PYTHON" "$here/bench_torch_cpu.py" --preset "$1" --batch "$2" --iters "$3" --warmup 1 --threads "$4" | ips
}
# edmc train: the best img/s among the status lines after the first (which includes start-up)
edmc_train() { # batch threads
    rm -rf "$tmp/train"
    "$EDMC" train --model=models/edm2-tiny.edm --data=builtin:shapes --outdir="$tmp/train" --batch="$1" \
        --duration="$TRAIN_IMAGES" --status="$TRAIN_STATUS" --rampup=0 --threads="$2" 2>&1 |
        awk '/^kimg/ { for (i = 1; i < NF; i++) if ($i == "img/s") v = $(i + 1); n++; if (n > 1 && v > b) b = v }
             END { if (b) print b }'
}
# PyTorch at 1 thread sends the batch-8 1x1 convolutions through its native
# (THNN) kernel, not oneDNN (its heuristic wants more threads, a larger batch or
# a larger kernel), which costs it about a third of the tiny forward; 2 threads
# pinned to 1 core take oneDNN.  The yardstick at 1 core is the better of the two.
torch_forward_1core() { # preset batch iters
    "$PYTHON" "$here/bench_torch_cpu.py" --preset "$1" --batch "$2" --iters "$3" --warmup 1 --threads 2 --cores 1 \
        --omp-wait passive | ips
}
torch_train() { # batch iters threads
    "$PYTHON" "$here/bench_torch_cpu.py" --preset tiny --mode train --batch "$1" --iters "$2" --warmup 2 \
        --threads "$3" | ips
}

TINY_ITERS=30 XS_ITERS=3 TRAIN_IMAGES=384 TRAIN_STATUS=96 TORCH_TRAIN_ITERS=12
if [ "$QUICK" = 1 ]; then TINY_ITERS=10 XS_ITERS=1 TRAIN_IMAGES=192 TRAIN_STATUS=64 TORCH_TRAIN_ITERS=4; fi

measure() { # label cmd... : REPEAT runs, "best worst" into $tmp/label
    label=$1; shift
    : > "$tmp/$label.runs"
    r=0
    while [ "$r" -lt "$REPEAT" ]; do
        "$@" >> "$tmp/$label.runs" || true
        r=$((r + 1))
    done
    best_worst < "$tmp/$label.runs" > "$tmp/$label"
    printf '  %-22s %s\n' "$label" "$(tr '\n' ' ' < "$tmp/$label.runs")" >&2
}

echo "# $(uname -n): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2
echo "# edmc $(git -C "$here/.." describe --always --dirty 2>/dev/null || echo '?');" \
     "torch $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?'); best of $REPEAT" >&2
start=$(date +%s)
for t in $THREADS; do
    echo "# threads $t" >&2
    measure "edmc.tiny.fwd.$t" edmc_forward models/edm2-tiny.edm 8 "$TINY_ITERS" "$t"
    measure "torch.tiny.fwd.$t" torch_forward tiny 8 "$TINY_ITERS" "$t"
    if [ "$t" = 1 ]; then measure "torch.tiny.fwd.1c2t" torch_forward_1core tiny 8 "$TINY_ITERS"; fi
    measure "edmc.xs.fwd.$t" edmc_forward models/edm2-img512-xs.edm 1 "$XS_ITERS" "$t"
    measure "torch.xs.fwd.$t" torch_forward xs 1 "$XS_ITERS" "$t"
    measure "edmc.tiny.train.$t" edmc_train 8 "$t"
    measure "torch.tiny.train.$t" torch_train 8 "$TORCH_TRAIN_ITERS" "$t"
done
end=$(date +%s)

printf '\n| config | mode | batch | threads | edmc img/s (best, worst) | torch img/s (best, worst) | edmc/torch |\n'
printf '|---|---|---|---|---|---|---|\n'
for row in "tiny fwd forward 8" "xs fwd forward 1" "tiny train train 8"; do
    set -- $row
    for t in $THREADS; do
        read -r eb ew < "$tmp/edmc.$1.$2.$t"
        read -r tb tw < "$tmp/torch.$1.$2.$t"
        ratio=$(awk -v a="$eb" -v b="$tb" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }')
        name=$1; [ "$1" = xs ] && name=edm2-img512-xs; [ "$1" = tiny ] && name=edm2-tiny
        printf '| %s | %s | %s | %s | %s (%s) | %s (%s) | %s |\n' "$name" "$3" "$4" "$t" "$eb" "$ew" "$tb" "$tw" "$ratio"
    done
done
if [ -f "$tmp/torch.tiny.fwd.1c2t" ]; then
    read -r pb pw < "$tmp/torch.tiny.fwd.1c2t"
    read -r eb ew < "$tmp/edmc.tiny.fwd.1"
    printf '| edm2-tiny | forward, torch 2 threads pinned to 1 core | 8 | 1 core | %s (%s) | %s (%s) | %s |\n' "$eb" "$ew" "$pb" "$pw" \
        "$(awk -v a="$eb" -v b="$pb" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2f", a / b; else print "-" }')"
fi
echo "# $((end - start)) s; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end" >&2
