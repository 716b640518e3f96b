#!/bin/sh
# What edmc writes loads into a network shaped like the reference's (gains
# of shape [], as its modules hold them) with torch's load_state_dict, strict.
# Needs python3 with torch (Debian's python3-torch); skipped (77) without it.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
need_python "torch, numpy"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg="-D model_channels=8 -D channels_per_head=8 -D logvar_channels=8"
# shellcheck disable=SC2086
"$edmc" info --params "$srcdir/models/edm2-tiny.edm" $cfg >"$tmp/params.txt"
# shellcheck disable=SC2086
"$edmc" init "$srcdir/models/edm2-tiny.edm" $cfg --seed=3 -o "$tmp/w.safetensors" >/dev/null
tap_check "edmc init's weights load into the reference's module shapes (load_state_dict, strict)" \
    "$py" "$srcdir/tests/tools/load_into_torch.py" "$tmp/params.txt" "$tmp/w.safetensors"
"$edmc" import "$srcdir/tests/ref/snapshot-fp16.pkl" -o "$tmp/imported.safetensors" >/dev/null 2>&1
tap_check "an imported snapshot loads back into torch the same way" \
    "$py" "$srcdir/tests/tools/load_into_torch.py" "$tmp/params.txt" "$tmp/imported.safetensors"
tap_done
