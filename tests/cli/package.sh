#!/bin/sh
# edmc compile and --package: a package of the tiny model gives the model
# file's results (golden parity) with no .edm file left to read and, on cuda,
# without NVRTC; every kind of bad package is one clear error and a non-zero
# exit.  The cuda half runs on the fake driver and the emulator
# (tests/fakecuda, tests/emu) and is skipped without them.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
st_diff="$builddir/tests/tools/st_diff"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
fake="$builddir/tests/fakecuda/fake_cuda.so"
emu="$builddir/tests/emu/cuda_emu.so"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $edmc in /*) ;; *) edmc="$PWD/$edmc" ;; esac
case $st_diff in /*) ;; *) st_diff="$PWD/$st_diff" ;; esac
case $golden in /*) ;; *) golden="$PWD/$golden" ;; esac
# NVRTC's cache for the compilations (kept between runs, like cuda_emu.sh's)
cache="${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}"
case $cache in /*) ;; *) cache="$PWD/$cache" ;; esac
mkdir -p "$cache" || exit 1
W="$golden/weights.safetensors"
IN="$golden/forward.safetensors"

# diff DESC A B TOL: st_diff's verdict as one TAP line
diff_ok() {
    if d=$("$st_diff" "$2" "$3" "$4" 2>&1); then tap_ok "$1: $d"; else tap_not_ok "$1" "$d"; fi
}
# rewrite IN OUT PYTHON: a copy of package IN with its entries changed by the
# PYTHON statements (on `e`, a dict name -> bytes), written as a valid zip
rewrite() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys, zipfile
src, dst, code = sys.argv[1:4]
with zipfile.ZipFile(src) as z:
    e = {n: z.read(n) for n in z.namelist()}
exec(code)
with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
    for n, b in e.items():
        z.writestr(n, b)
EOF
}

# st_drop IN OUT NAME: a copy of safetensors file IN without tensor NAME
st_drop() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
src, dst, drop = sys.argv[1:4]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head, data = json.loads(b[8:8 + n]), b[8 + n:]
out, body = {}, b""
for k, v in head.items():
    if k == "__metadata__":
        out[k] = v
    elif k != drop:
        lo, hi = v["data_offsets"]
        out[k] = dict(v, data_offsets=[len(body), len(body) + hi - lo])
        body += data[lo:hi]
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + body)
EOF
}
# --- a CPU package of a model copied aside, which is then removed
mkdir -p "$tmp/m"
cp -R "$srcdir/models/." "$tmp/m/"
tap_check "compile the tiny model for the CPU" "$edmc" compile "$tmp/m/edm2-tiny.edm" -o "$tmp/tiny.edmpkg"
for e in manifest.json graph.xml plan.xml params.json edm2-tiny.edm edm2.edm mp.edm '"format":"edmc-package"' \
    '"version":1' '"sha256":{'; do
    # stored entries: their names and the manifest's text are in the file as they are
    if tr -d ' \n' <"$tmp/tiny.edmpkg" | grep -qF "$e"; then tap_ok "the package holds $e"; else tap_not_ok "the package lacks $e"; fi
done
rm -rf "$tmp/m"
cd "$tmp" || exit 1
tap_check "forward --package with the model gone" "$edmc" forward --package="$tmp/tiny.edmpkg" --weights="$W" \
    --input="$IN" --output="$tmp/pkg.safetensors"
diff_ok "package forward vs the golden D_x (1e-4)" "$tmp/pkg.safetensors" "$IN" 1e-4
"$edmc" forward "$srcdir/models/edm2-tiny.edm" --weights="$W" --input="$IN" --output="$tmp/file.safetensors" 2>/dev/null
if cmp -s "$tmp/pkg.safetensors" "$tmp/file.safetensors"; then tap_ok "package forward = model file forward, bit for bit"
else tap_not_ok "package forward differs from the model file's"; fi
if strace_usable; then
    traced_opens "$tmp/trace" "$edmc" forward --package="$tmp/tiny.edmpkg" --weights="$W" \
        --input="$IN" --output="$tmp/pkg2.safetensors" >/dev/null 2>&1
    traced_opens "$tmp/trace-file" "$edmc" forward "$srcdir/models/edm2-tiny.edm" --weights="$W" \
        --input="$IN" --output="$tmp/file2.safetensors" >/dev/null 2>&1
    if grep -q '\.edm"' "$tmp/trace-file" && ! grep -q '\.edm"' "$tmp/trace"; then
        tap_ok "a run from the package opens no .edm file (a run from the model file opens $(grep -c '\.edm"' "$tmp/trace-file"))"
    else
        tap_not_ok "a run from the package opened an .edm file (or the model file's run none)" "$(grep '\.edm"' "$tmp/trace" | head -n 3)"
    fi
else
    echo "# strace unavailable: the .edm check rests on the removed model copy"
fi
tap_check "bench --package" "$edmc" bench --package="$tmp/tiny.edmpkg" --batch=2 --iters=1
tap_check "generate --package on the golden noise" "$edmc" generate --package="$tmp/tiny.edmpkg" --net="$W" \
    --noise="$golden/sample.safetensors" --steps=8 --save-raw="$tmp/sample.safetensors"
diff_ok "package sample vs the golden sample (1e-3)" "$tmp/sample.safetensors" "$golden/sample.safetensors" 1e-3
tap_check "generate --package with a guide (same architecture)" "$edmc" generate --package="$tmp/tiny.edmpkg" \
    --net="$W" --guide="$golden/guide_weights.safetensors" --guidance=2 --seeds=0-1 --steps=4 \
    --save-raw="$tmp/guided.safetensors"
# --mode=sample: the same program as forward, recorded as a sampling package
tap_check "compile --mode=sample" "$edmc" compile "$srcdir/models/edm2-tiny.edm" --mode=sample -o "$tmp/smp.edmpkg"
if tr -d ' \n' <"$tmp/smp.edmpkg" | grep -qF '"mode":"sample"'; then tap_ok "its manifest says mode sample"
else tap_not_ok "the sample package's manifest does not say mode sample"; fi
tap_check "generate from the sample package" "$edmc" generate --package="$tmp/smp.edmpkg" --net="$W" \
    --noise="$golden/sample.safetensors" --steps=8 --save-raw="$tmp/sample2.safetensors"
diff_ok "sample package = forward package's sample (0)" "$tmp/sample2.safetensors" "$tmp/sample.safetensors" 0
tap_expect_error "train from a sample package" 2 "holds a sample run: training needs a package compiled with --mode=train" \
    "$edmc" train --package="$tmp/smp.edmpkg" --data=builtin:shapes --outdir="$tmp/smp-run" --duration=8 --batch=8

# --- usage mistakes
P="$tmp/tiny.edmpkg"
fwd() { "$edmc" forward --package="$1" --weights="${2:-$W}" --input="$IN" --output="$tmp/o.safetensors"; }
tap_expect_error "a model file and --package" 2 "not both" "$edmc" forward "$srcdir/models/edm2-tiny.edm" \
    --package="$P" --weights="$W" --input="$IN" --output="$tmp/o.safetensors"
tap_expect_error "-D with --package" 2 "-D does not apply to a package" "$edmc" forward --package="$P" \
    -D model_channels=16 --weights="$W" --input="$IN" --output="$tmp/o.safetensors"
tap_expect_error "--precision other than the package's" 2 "was compiled for --device=cpu --precision=f32" \
    "$edmc" forward --package="$P" --precision=f64 --weights="$W" --input="$IN" --output="$tmp/o.safetensors"
tap_expect_error "--fuse other than the package's" 2 "--fuse: the package" \
    "$edmc" bench --package="$P" --fuse=none --batch=2 --iters=1
tap_expect_error "bench --mode=train on a forward package" 2 "holds a forward run: training needs a package compiled with --mode=train" \
    "$edmc" bench --package="$P" --mode=train --batch=2 --iters=1
tap_expect_error "compile --batch for the CPU" 2 "apply to --device=cuda" \
    "$edmc" compile "$srcdir/models/edm2-tiny.edm" --batch=4 -o "$tmp/x.edmpkg"
tap_expect_error "compile --arch=90" 2 "expected up to 8 architectures like sm_80,sm_90" \
    "$edmc" compile "$srcdir/models/edm2-tiny.edm" --device=cuda --arch=90 -o "$tmp/x.edmpkg"
tap_expect_error "compile --mode=denoise" 2 "--mode=denoise: expected forward, sample or train" \
    "$edmc" compile "$srcdir/models/edm2-tiny.edm" --mode=denoise -o "$tmp/x.edmpkg"
tap_expect_error "compile without -o" 2 "needs a model file and -o" "$edmc" compile "$srcdir/models/edm2-tiny.edm"

# --- bad packages: one clear error each, exit 1
printf 'not a package at all\n' >"$tmp/text.edmpkg"
tap_expect_error "not a zip" 1 "not a zip archive" fwd "$tmp/text.edmpkg"
tap_expect_error "no such file" 1 "absent.edmpkg: cannot read it (No such file)" fwd "$tmp/absent.edmpkg"
size=$(wc -c <"$P")
head -c $((size / 2)) "$P" >"$tmp/half.edmpkg"
tap_expect_error "truncated to half" 1 "not an edmc package" fwd "$tmp/half.edmpkg"
head -c $((size - 10)) "$P" >"$tmp/short.edmpkg"
tap_expect_error "the last 10 bytes missing" 1 "not an edmc package" fwd "$tmp/short.edmpkg"
# a byte of graph.xml changed in place (the zip's CRC no longer fits)
off=$(grep -abo '<edmc-ir' "$P" | head -n 1 | cut -d: -f1)
cp "$P" "$tmp/flip.edmpkg"
printf 'E' | dd of="$tmp/flip.edmpkg" bs=1 seek=$((off + 1)) conv=notrunc 2>/dev/null
tap_expect_error "a byte changed inside graph.xml" 1 "graph.xml" fwd "$tmp/flip.edmpkg"
"$edmc" init "$srcdir/models/edm2-tiny.edm" -D model_channels=16 -D channels_per_head=16 -o "$tmp/w16.safetensors" >/dev/null 2>&1
tap_expect_error "weights of another size" 1 "does not match the parameter table of" fwd "$P" "$tmp/w16.safetensors"
tap_expect_error "generate: weights of another size" 1 "does not match the parameter table of" \
    "$edmc" generate --package="$P" --net="$tmp/w16.safetensors" --seeds=0 --steps=2 --save-raw="$tmp/o.safetensors"
if command -v python3 >/dev/null 2>&1; then
    rewrite "$P" "$tmp/v2.edmpkg" 'e["manifest.json"] = e["manifest.json"].replace(b"\"version\":1", b"\"version\":2")'
    tap_expect_error "format version 2" 1 "package format version 2; this edmc reads version 1" fwd "$tmp/v2.edmpkg"
    rewrite "$P" "$tmp/alt.edmpkg" 'e["plan.xml"] = e["plan.xml"].replace(b"root=\"", b"root=\"1", 1)'
    tap_expect_error "plan.xml altered (valid zip)" 1 "entry 'plan.xml' is damaged or altered" fwd "$tmp/alt.edmpkg"
    rewrite "$P" "$tmp/extra.edmpkg" 'e["extra.bin"] = b"x"'
    tap_expect_error "an entry the manifest does not list" 1 "'extra.bin' is not in the manifest" fwd "$tmp/extra.edmpkg"
    rewrite "$P" "$tmp/lack.edmpkg" 'del e["params.json"]'
    tap_expect_error "an entry missing" 1 "lists 'params.json', which the package lacks" fwd "$tmp/lack.edmpkg"
    rewrite "$P" "$tmp/nomanifest.edmpkg" 'del e["manifest.json"]'
    tap_expect_error "no manifest" 1 "no manifest.json" fwd "$tmp/nomanifest.edmpkg"
    st_drop "$W" "$tmp/lacking.safetensors" unet.emb_noise.weight
    tap_expect_error "weights missing a tensor" 1 \
        "lacking.safetensors does not match the parameter table of $P: no tensor 'unet.emb_noise.weight' [64, 32]" \
        fwd "$P" "$tmp/lacking.safetensors"
    tap_expect_error "generate: weights missing a tensor" 1 "no tensor 'unet.emb_noise.weight'" \
        "$edmc" generate --package="$P" --net="$tmp/lacking.safetensors" --seeds=0 --steps=2 \
        --save-raw="$tmp/o.safetensors"
else
    echo "# python3 unavailable: the rewritten-package cases are skipped"
fi

# --- cuda: the package's cubins, no NVRTC (fake driver), golden parity (emulator)
if [ ! -f "$fake" ] || [ ! -f "$emu" ]; then
    echo "# the fake CUDA driver and the emulator were not built: the cuda half is skipped"
    tap_done
    exit
fi
case $fake in /*) ;; *) fake="$PWD/$fake" ;; esac
case $emu in /*) ;; *) emu="$PWD/$emu" ;; esac
C="$tmp/cuda.edmpkg"
tiny="$srcdir/models/edm2-tiny.edm"
EDMC_CACHE_DIR="$cache" tap_check "compile for cuda, sm_90, batch 3" "$edmc" compile "$tiny" --device=cuda \
    --arch=sm_90 --batch=3 --precision=fp32 -o "$C"
EDMC_CACHE_DIR="$cache" tap_check "compile for cuda, sm_80 only" "$edmc" compile "$tiny" --device=cuda \
    --arch=sm_80 --batch=3 --precision=fp32 -o "$tmp/sm80.edmpkg"
if tr -d ' \n' <"$C" | grep -qF 'cuda/sm_90/batch3.cubin'; then tap_ok "the package holds cuda/sm_90/batch3.cubin"
else tap_not_ok "the package lacks cuda/sm_90/batch3.cubin"; fi
cfwd() { "$edmc" forward --package="$1" --weights="$W" --input="${2:-$IN}" --output="$tmp/c.safetensors"; }
# under the fake driver (which checks the cubin's architecture and kernel
# names) with an empty NVRTC cache: a compilation would leave a file there
mkdir -p "$tmp/nocache" "$tmp/control"
export EDMC_CUDA_DRIVER="$fake" EDMC_CUBLASLT="$fake" EDMC_CACHE_DIR="$tmp/nocache"
    if cfwd "$C" >/dev/null 2>"$tmp/fake.err" && ! grep -q "^fake cu" "$tmp/fake.err"; then
        tap_ok "forward --package on the fake driver"
    else
        tap_not_ok "forward --package on the fake driver" "$(head -n 5 "$tmp/fake.err")"
    fi
    n=$(ls "$tmp/nocache" | wc -l)
    EDMC_CACHE_DIR="$tmp/control" "$edmc" forward "$tiny" --device=cuda --precision=fp32 --weights="$W" --input="$IN" \
        --output="$tmp/c2.safetensors" >/dev/null 2>&1
    m=$(ls "$tmp/control" | wc -l)
    if [ "$n" -eq 0 ] && [ "$m" -gt 0 ]; then
        tap_ok "no NVRTC compilation from the package (the model file's run cached $m)"
    else
        tap_not_ok "NVRTC cache after the package run: $n files (model file run: $m)"
    fi
    tap_expect_error "a batch the package does not hold" 2 "holds kernels for batch 3 on sm_90, not batch 2" \
        "$edmc" bench --package="$C" --batch=2 --iters=1
    tap_expect_error "the wrong architecture" 2 "holds kernels for sm_80; this GPU (NVIDIA H100 80GB HBM3 (fake)) is sm_90" \
        cfwd "$tmp/sm80.edmpkg"
    tap_expect_error "--device=cpu for a cuda package" 2 "was compiled for --device=cuda" \
        "$edmc" forward --package="$C" --device=cpu --weights="$W" --input="$IN" --output="$tmp/o.safetensors"
    if command -v python3 >/dev/null 2>&1; then
        # the manifest names the CUDA C each cubin was compiled from by its
        # SHA-256; a cubin of another source is refused before it is loaded
        rewrite "$C" "$tmp/othersrc.edmpkg" 'import re
e["manifest.json"] = re.sub(rb"\"source_sha256\": *\"[0-9a-f]{64}\"", b"\"source_sha256\":\"" + b"0" * 64 + b"\"",
                            e["manifest.json"])'
        tap_expect_error "a cubin of another source (source_sha256)" 2 \
            "the package's kernels for sm_90, batch 3, were generated from another source than this run's" \
            cfwd "$tmp/othersrc.edmpkg"
    fi
# the emulator runs kernels from their CUDA C: the executor hands it the
# source whose SHA-256 the package's cubin records (checked), not the cubin
export EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache"
tap_check "forward --package on the emulator" cfwd "$C"
diff_ok "emulated package forward vs the golden D_x (1e-4)" "$tmp/c.safetensors" "$IN" 1e-4
# the fused plan: the CUDA executor reads the package's plan.xml too
tap_check "compile for cuda with --fuse=all" "$edmc" compile "$tiny" --device=cuda --arch=sm_90 --batch=3 \
    --precision=fp32 --fuse=all -o "$tmp/fused.edmpkg"
tap_check "forward --package (fused plan) on the emulator" cfwd "$tmp/fused.edmpkg"
diff_ok "emulated fused package forward vs the golden D_x (1e-4)" "$tmp/c.safetensors" "$IN" 1e-4
# its plan.xml holds the memory table of sm_90, batch 3, which the executor's
# binding must equal: one offset altered (the manifest's checksum made to
# fit) stops the run naming the value
if tr -d '\n' <"$tmp/fused.edmpkg" | grep -qF '<memory arch="sm_90" batch="3" arena="'; then
    tap_ok "the fused package's plan.xml holds the memory table of sm_90, batch 3"
else
    tap_not_ok "the fused package's plan.xml lacks a memory table for sm_90, batch 3"
fi
if command -v python3 >/dev/null 2>&1; then
    rewrite "$tmp/fused.edmpkg" "$tmp/offset.edmpkg" 'import hashlib, json, re
p = e["plan.xml"]
v = re.search(rb"<value node=\"(\d+)\"[^>]* offset=\"([1-9]\d*)\"", p)
e["plan.xml"] = p[:v.start(2)] + str(int(v.group(2)) + 256).encode() + p[v.end(2):]
m = json.loads(e["manifest.json"])
m["sha256"]["plan.xml"] = hashlib.sha256(e["plan.xml"]).hexdigest()
e["manifest.json"] = json.dumps(m).encode()
open(sys.argv[2] + ".node", "w").write(v.group(1).decode() + " " + v.group(2).decode())'
    read -r node off <"$tmp/offset.edmpkg.node"
    tap_expect_error "plan.xml: an arena offset altered (checksum fitted)" 1 \
        "plan.xml: the memory table for sm_90, batch 3, does not fit this run: value $node (" cfwd "$tmp/offset.edmpkg"
    tap_expect_error "... and the message gives both offsets" 1 \
        "has arena offset $((off + 256)) in the package, $off as this run binds it" cfwd "$tmp/offset.edmpkg"
fi
tap_done
