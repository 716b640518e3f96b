#!/bin/sh
# A full disk for real, not simulated: the run folder on a small tmpfs that is
# then filled.  A training run that cannot write its next checkpoint (or its
# stats) stops with an error naming the file and the cause, leaves no
# temporary file and keeps the previous checkpoint intact, from which it
# resumes once there is room again.  Skipped (77) where a tmpfs cannot be
# mounted (not root, or a container without the capability).
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
case $edmc in /*) ;; *) edmc="$PWD/$edmc" ;; esac
tiny="$srcdir/models/edm2-tiny.edm"
tmp=$(mktemp -d) || exit 1
mnt="$tmp/disk"
mkdir -p "$mnt" || exit 1
if ! mount -t tmpfs -o size=16m tmpfs "$mnt" 2>/dev/null; then
    rm -rf "$tmp"
    echo "# SKIP cannot mount a tmpfs here (needs root and the mount capability)"
    exit 77
fi
trap 'umount "$mnt" 2>/dev/null; rm -rf "$tmp"' EXIT
small="-D model_channels=16 -D channels_per_head=16"
run() { "$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 --lr=0.01 \
    --status=64 --checkpoint=128 --snapshot=0 --outdir="$mnt/run" "$@"; }

tap_check "a run on the small disk writes its checkpoint" run --duration=128
ckpt=$(ls "$mnt/run"/training-state-*.safetensors 2>/dev/null | tail -n 1)
[ -n "$ckpt" ] || { tap_not_ok "no checkpoint written"; tap_done; }
sum=$(cksum <"$ckpt")

# fill the disk, leaving less than a checkpoint
avail=$(df -Pk "$mnt" | awk 'NR == 2 { print $4 }')
dd if=/dev/zero of="$mnt/filler" bs=1024 count=$((avail - 48)) 2>/dev/null
run --duration=256 --resume >"$tmp/full.out" 2>&1
status=$?
if [ "$status" -ne 0 ] && grep -q "No space left on device" "$tmp/full.out" &&
    grep -q "$mnt/run/" "$tmp/full.out"; then
    tap_ok "the full disk stops the run with an error naming the file: $(grep -m1 'No space' "$tmp/full.out" | cut -c1-160)"
else
    tap_not_ok "full disk: exit $status" "$(tail -n 5 "$tmp/full.out")"
fi
if ls "$mnt/run" | grep -q '\.tmp'; then
    tap_not_ok "a temporary file is left on the full disk" "$(ls "$mnt/run")"
else
    tap_ok "no temporary file left behind"
fi
if [ "$(cksum <"$ckpt")" = "$sum" ]; then tap_ok "the previous checkpoint is intact"
else tap_not_ok "the previous checkpoint changed"; fi

# room again: the run resumes from that checkpoint and finishes
rm -f "$mnt/filler"
if run --duration=256 --resume >"$tmp/again.out" 2>&1 &&
    ls "$mnt/run"/training-state-*256*.safetensors >/dev/null 2>&1; then
    tap_ok "resumed once there was room, and finished"
else
    tap_not_ok "resume after freeing space" "$(tail -n 5 "$tmp/again.out")"
fi
steps=$(sed 's/.*"step":\([0-9]*\).*/\1/' "$mnt/run/stats.jsonl" | tr '\n' ' ')
if [ "$steps" = "8 16 24 32 " ]; then tap_ok "stats.jsonl whole: one record per interval, none lost or repeated"
else tap_not_ok "stats.jsonl steps: $steps"; fi
tap_done
