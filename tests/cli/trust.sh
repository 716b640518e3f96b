#!/bin/sh
# Weights files are data from strangers: the model and imports their metadata
# name are read only inside the model folders ($EDMC_MODELS, ./models, models/
# beside edmc), unless the user names the model; no error echoes another file.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
root=$(cd "$srcdir" && pwd) || exit 1
tiny="$root/models/edm2-tiny.edm"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
mkdir -p elsewhere
printf 'import "%s";\n' "$tiny" >elsewhere/m.edm
"$edmc" init elsewhere/m.edm -o w.safetensors >/dev/null 2>&1 || tap_not_ok "init from a model outside the folders"
tap_expect_error "edmc.model outside the model folders" 1 "which is outside the model folders" \
    "$edmc" generate --net=w.safetensors --seeds=0 --steps=2 --outdir=out
tap_check "the same model named by the user" "$edmc" generate --net=w.safetensors --model=elsewhere/m.edm --seeds=0 \
    --steps=2 --outdir=out
# the file the metadata names is now another one: it is never opened, never echoed
printf 'root:x:0:0:secret line\n' >secret
rm elsewhere/m.edm && ln -s "$tmp/secret" elsewhere/m.edm
"$edmc" generate --net=w.safetensors --seeds=0 --steps=2 --outdir=out >out.txt 2>&1
status=$?
if [ "$status" -eq 1 ] && ! grep -q "secret line" out.txt; then tap_ok "a model path in the metadata is not read"
else tap_not_ok "metadata model: exit $status" "$(head -c 300 out.txt)"; fi
# an import named in edmc.config (ops_library) outside the folders is refused
cp "$root/models/lib/mp.edm" lib.edm
"$edmc" init "$tiny" -D "ops_library=\"$tmp/lib.edm\"" -o wl.safetensors >/dev/null 2>&1 || tap_not_ok "init with ops_library"
tap_expect_error "an import named by edmc.config outside the folders" 1 "is outside the model folders" \
    "$edmc" generate --net=wl.safetensors --model="$tiny" --seeds=0 --steps=2 --outdir=out
tap_check "models from the model folders still work" "$edmc" generate --net="$tmp/w.safetensors" --model="$tiny" \
    --seeds=0 --steps=2 --outdir=out
tap_done
