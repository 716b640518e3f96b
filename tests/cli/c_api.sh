#!/bin/sh
# The C API (api/edmc.h, docs/c-api.md): the runtime library, its header and
# edmc.pc installed with `make install` into a scratch DESTDIR; the example
# examples/sample.c built against them with pkg-config alone and run on a
# package of the tiny model: its samples and its forward equal edmc's; bad
# input is one error and a non-zero exit; and the installed library holds no
# front end and no NVRTC.
. "$srcdir/tests/tap.sh"
edmc="$builddir/edmc"
golden="${EDMC_TESTDATA:-$srcdir/../shared/testdata}/edm2-tiny"
cc=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $edmc in /*) ;; *) edmc="$PWD/$edmc" ;; esac
case $golden in /*) ;; *) golden="$PWD/$golden" ;; esac
W="$golden/weights.safetensors"
IN="$golden/forward.safetensors"
if ! command -v pkg-config >/dev/null 2>&1 || ! command -v "$cc" >/dev/null 2>&1; then
    echo "# pkg-config or $cc missing: skipped"
    exit 77
fi

# --- install the library, header and .pc (nothing else) into $tmp/root
root="$tmp/root"
if out=$(${MAKE:-make} -s -C "$builddir" install-libLTLIBRARIES install-includeHEADERS install-pkgconfigDATA \
    DESTDIR="$root" 2>&1); then
    tap_ok "make install of libedmc, edmc.h and edmc.pc into a DESTDIR"
else
    tap_not_ok "make install into a DESTDIR" "$(printf '%s' "$out" | tail -n 20)"
fi
pc=$(find "$root" -name edmc.pc | head -n 1)
so=$(find "$root" -name 'libedmc.so.*' -type f | head -n 1)
ar=$(find "$root" -name libedmc.a | head -n 1)
hdr=$(find "$root" -name edmc.h | head -n 1)
if [ -n "$pc" ] && [ -n "$so" ] && [ -n "$ar" ] && [ -n "$hdr" ]; then tap_ok "installed: ${pc#"$root"}, ${so#"$root"}, ${ar#"$root"}, ${hdr#"$root"}"
else tap_not_ok "installed files missing" "pc=$pc so=$so a=$ar h=$hdr"; fi

# --- the layers: the installed library has no front end and no NVRTC
front='yyparse|edm_compile_file|edm_compile_source|edm_elaborate|edm_parse|nvrtc'
nm_a=$(nm "$ar" 2>/dev/null)
if printf '%s\n' "$nm_a" | grep -q ' T edmc_open$' && printf '%s\n' "$nm_a" | grep -q ' T edm_backend_new$'; then
    bad=$(printf '%s\n' "$nm_a" | grep -E "$front" | head -n 5)
    if [ -z "$bad" ]; then tap_ok "libedmc.a: the runtime, no parser, elaborator or NVRTC symbol (defined or used)"
    else tap_not_ok "libedmc.a refers to the front end or NVRTC" "$bad"; fi
else
    tap_not_ok "nm of libedmc.a does not show the API and the runtime" "$(printf '%s\n' "$nm_a" | head -n 5)"
fi
exported=$(nm -D --defined-only "$so" 2>/dev/null | awk '$2 == "T" { print $3 }')
if [ -n "$exported" ] && ! printf '%s\n' "$exported" | grep -qv '^edmc_'; then
    tap_ok "libedmc.so exports only edmc_*: $(printf '%s' "$exported" | tr '\n' ' ')"
else
    tap_not_ok "libedmc.so exports other functions (or none)" "$(printf '%s\n' "$exported" | head -n 5)"
fi
if ldd "$so" >"$tmp/ldd" 2>&1 && ! grep -qi nvrtc "$tmp/ldd"; then tap_ok "libedmc.so does not link NVRTC"
else tap_not_ok "libedmc.so links NVRTC (or ldd failed)" "$(head -n 5 "$tmp/ldd")"; fi
# nor training, ranks or images: their libraries are not the runtime's
# (edmc.pc's Libs.private names the runtime's alone)
needed=$(readelf -d "$so" 2>/dev/null | grep NEEDED)
extra=$(printf '%s\n' "$needed" | grep -E 'libmpi|libpng|libjpeg')
training=$(printf '%s\n' "$nm_a" | grep -E ' T (edm_trainer_|edm_dist_|edm_image_|edm_dataset_)' | head -n 3)
if printf '%s\n' "$needed" | grep -q libxml2 && [ -z "$extra" ] && [ -z "$training" ]; then
    tap_ok "libedmc needs no MPI, libpng or libjpeg and holds no training code"
else
    tap_not_ok "libedmc links MPI or an image library, or holds training code" "$extra" "$training"
fi

# --- the example, built from the installed files alone
export PKG_CONFIG_PATH="${pc%/edmc.pc}${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# edmc.pc names the prefix it was configured for; the files lie under $root
prefix=$(pkg-config --variable=prefix edmc)
if flags=$(pkg-config --define-variable=prefix="$root$prefix" --cflags --libs edmc 2>&1) && out=$(cd "$tmp" && \
    "$cc" ${CFLAGS:-} -std=c11 -Wall -Wextra -Werror "$srcdir/examples/sample.c" -o "$tmp/sample" $flags ${LDFLAGS:-} 2>&1); then
    tap_ok "examples/sample.c builds with pkg-config --cflags --libs edmc ($flags)"
else
    tap_not_ok "examples/sample.c does not build against the installed library" "$flags" "$out"
fi
export LD_LIBRARY_PATH="${so%/*}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

tap_check "edmc compile the tiny model for the CPU" "$edmc" compile "$srcdir/models/edm2-tiny.edm" -o "$tmp/tiny.edmpkg"
P="$tmp/tiny.edmpkg"

# compare SAFETENSORS TENSOR TEXT TOL: the example's printed values against a
# tensor, as one TAP line with the largest difference
compare() {
    python3 - "$@" <<'EOF'
import json, struct, sys
path, name, text, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
with open(path, "rb") as f:
    b = f.read()
n = struct.unpack("<Q", b[:8])[0]
e = json.loads(b[8:8 + n])[name]
lo, hi = e["data_offsets"]
want = struct.unpack("<%df" % ((hi - lo) // 4), b[8 + n + lo:8 + n + hi])
lines = open(text).read().split("\n")
shape = [int(v) for v in lines[0].split()[1:]]
# each printed value (%.9g) read back as the float it was
got = [struct.unpack("<f", struct.pack("<f", float(v)))[0] for v in lines[1:] if v]
if shape != e["shape"] or len(got) != len(want):
    sys.exit("shape %s, %d values; %s has %s" % (shape, len(got), name, e["shape"]))
d = max(abs(a - b) for a, b in zip(got, want))
print("max |diff| %.3g over %d values" % (d, len(got)))
sys.exit(0 if d <= tol else 1)
EOF
}
# cmp_ok DESC ...: compare's verdict as a TAP line
cmp_ok() {
    desc=$1; shift
    if d=$(compare "$@" 2>&1); then tap_ok "$desc: $d"; else tap_not_ok "$desc" "$d"; fi
}

# --- sampling: the example and `edmc generate` on the same seeds, batch and steps
if "$tmp/sample" "$P" "$W" 3 4 >"$tmp/c-sample.txt" 2>"$tmp/err"; then tap_ok "the example samples seeds 0-2"
else tap_not_ok "the example failed to sample" "$(head -c 600 "$tmp/err")"; fi
tap_check "edmc generate --package, seeds 0-2" "$edmc" generate --package="$P" --net="$W" --seeds=0-2 --steps=4 \
    --batch=3 --save-raw="$tmp/gen.safetensors"
cmp_ok "C API sample = edmc generate --package (exact)" "$tmp/gen.safetensors" sample "$tmp/c-sample.txt" 0
# linked statically against libedmc.a with the .pc's Libs.private
if sflags=$(pkg-config --define-variable=prefix="$root$prefix" --static --libs edmc 2>&1) && out=$(cd "$tmp" && \
    "$cc" ${CFLAGS:-} -std=c11 "$srcdir/examples/sample.c" -o "$tmp/sample-static" \
    $(pkg-config --define-variable=prefix="$root$prefix" --cflags edmc) \
    $(printf '%s' "$sflags" | sed 's/-ledmc/-l:libedmc.a/') ${LDFLAGS:-} 2>&1) &&
    "$tmp/sample-static" "$P" "$W" 3 4 >"$tmp/c-static.txt" 2>"$tmp/err" && cmp -s "$tmp/c-static.txt" "$tmp/c-sample.txt"; then
    tap_ok "linked with libedmc.a and pkg-config --static: the same samples"
else
    tap_not_ok "the static link (pkg-config --static) failed or sampled otherwise" "$sflags" "$out" "$(head -c 600 "$tmp/err")"
fi

# --- forward on the golden inputs: x, sigma, class_labels as raw floats
python3 - "$IN" "$tmp/in.f32" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
with open(sys.argv[2], "wb") as f:
    for name in ("x", "sigma", "class_labels"):
        lo, hi = h[name]["data_offsets"]
        f.write(b[8 + n + lo:8 + n + hi])
EOF
if "$tmp/sample" "$P" "$W" 3 forward "$tmp/in.f32" >"$tmp/c-forward.txt" 2>"$tmp/err"; then
    tap_ok "the example runs the forward on the golden inputs"
else
    tap_not_ok "the example's forward failed" "$(head -c 600 "$tmp/err")"
fi
tap_check "edmc forward --package" "$edmc" forward --package="$P" --weights="$W" --input="$IN" \
    --output="$tmp/fwd.safetensors"
cmp_ok "C API forward = edmc forward --package (exact)" "$tmp/fwd.safetensors" D_x "$tmp/c-forward.txt" 0
cmp_ok "C API forward vs the golden D_x (1e-4)" "$IN" D_x "$tmp/c-forward.txt" 1e-4

# --- errors: a status and a message, a non-zero exit, no crash
tap_expect_error "no such package" 1 "absent.edmpkg: cannot read it (No such file)" \
    "$tmp/sample" "$tmp/absent.edmpkg" "$W" 1 2
printf 'not a package at all\n' >"$tmp/text.edmpkg"
tap_expect_error "not a package" 1 "not a zip archive) (edmc error 3)" "$tmp/sample" "$tmp/text.edmpkg" "$W" 1 2
"$edmc" compile "$srcdir/models/edm2-tiny.edm" --mode=train -o "$tmp/train.edmpkg" >/dev/null 2>&1
tap_expect_error "a training package" 1 "holds a training run (edmc train --package)" \
    "$tmp/sample" "$tmp/train.edmpkg" "$W" 1 2
"$edmc" init "$srcdir/models/edm2-tiny.edm" -D model_channels=16 -D channels_per_head=16 \
    -o "$tmp/w16.safetensors" >/dev/null 2>&1
tap_expect_error "weights of another size" 1 "does not match the parameter table of" \
    "$tmp/sample" "$P" "$tmp/w16.safetensors" 1 2
tap_expect_error "steps = 1" 1 "(edmc error 1)" "$tmp/sample" "$P" "$W" 1 1
head -c 100 "$tmp/in.f32" >"$tmp/short.f32"
tap_expect_error "a forward input file too short" 1 "expected exactly" "$tmp/sample" "$P" "$W" 3 forward "$tmp/short.f32"

# --- a cuda package, run by the example (which links no NVRTC) on the emulator
fake="$builddir/tests/fakecuda/fake_cuda.so"
emu="$builddir/tests/emu/cuda_emu.so"
if [ ! -f "$emu" ] || [ ! -f "$fake" ]; then
    echo "# the emulator was not built: the cuda half is skipped"
    tap_done
    exit
fi
case $emu in /*) ;; *) emu="$PWD/$emu" ;; esac
case $fake in /*) ;; *) fake="$PWD/$fake" ;; esac
# NVRTC's cache for the compilation, shared with package.sh and cuda_emu.sh
cache="${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}"
case $cache in /*) ;; *) cache="$PWD/$cache" ;; esac
mkdir -p "$cache" "$tmp/nocache" || exit 1
C="$tmp/cuda.edmpkg"
EDMC_CACHE_DIR="$cache" tap_check "compile for cuda, sm_90, batch 3" "$edmc" compile "$srcdir/models/edm2-tiny.edm" \
    --device=cuda --arch=sm_90 --batch=3 --precision=fp32 -o "$C"
# the fake driver loads the package's cubin; the library has no compiler to fall back on
if EDMC_CUDA_DRIVER="$fake" EDMC_CUBLASLT="$fake" EDMC_CACHE_DIR="$tmp/nocache" \
    "$tmp/sample" "$C" "$W" 3 forward "$tmp/in.f32" >/dev/null 2>"$tmp/err" && ! grep -q "^fake cu" "$tmp/err"; then
    tap_ok "the example runs the cuda package's cubin on the fake driver"
else
    tap_not_ok "the example on the fake driver" "$(head -n 5 "$tmp/err")"
fi
export EDMC_CUDA_DRIVER="$emu" EDMC_CUBLASLT="$emu" EDMC_CACHE_DIR="$cache"
if "$tmp/sample" "$C" "$W" 3 forward "$tmp/in.f32" >"$tmp/c-cuda.txt" 2>"$tmp/err"; then
    tap_ok "the example runs the cuda package on the emulator"
else
    tap_not_ok "the example on the emulator" "$(head -c 600 "$tmp/err")"
fi
cmp_ok "C API cuda forward vs the golden D_x (1e-4)" "$IN" D_x "$tmp/c-cuda.txt" 1e-4
# two images on the batch-3 kernels (padded) give the batch-3 run's first two
python3 - "$tmp/in.f32" "$tmp/in2.f32" <<'EOF'
import sys
b = open(sys.argv[1], "rb").read()
img, n = 4 * 16 * 16 * 4, 3  # bytes of one image of x; images in the file
x, sigma, labels = b[:n * img], b[n * img:n * img + n * 4], b[n * img + n * 4:]
open(sys.argv[2], "wb").write(x[:2 * img] + sigma[:8] + labels[:len(labels) // n * 2])
EOF
sed '1d' "$tmp/c-cuda.txt" | head -n 2048 >"$tmp/first2.txt"
if "$tmp/sample" "$C" "$W" 2 forward "$tmp/in2.f32" >"$tmp/c-cuda2.txt" 2>"$tmp/err" &&
    [ "$(head -n 1 "$tmp/c-cuda2.txt")" = "shape 2 4 16 16" ] && sed '1d' "$tmp/c-cuda2.txt" | cmp -s - "$tmp/first2.txt"; then
    tap_ok "2 images on the package's batch-3 kernels (padded): the batch-3 run's first two, bit for bit"
else
    tap_not_ok "2 images on the batch-3 cuda package" "$(head -c 600 "$tmp/err")" "$(head -n 2 "$tmp/c-cuda2.txt")"
fi
tap_expect_error "more images than the cuda package's batch" 1 "not batch 4" "$tmp/sample" "$C" "$W" 4 4
tap_done
