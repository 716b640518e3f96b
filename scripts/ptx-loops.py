#!/usr/bin/env python3
"""The k-tile loop of each tensor-core contraction kernel, counted in its PTX.

    edmc dump MODEL.edm --stage=cuda --fuse=all [--mode=train] --batch=8 > m.cu
    python3 scripts/ptx-loops.py m.cu [--arch=compute_90] [--kernels=REGEX]

Compiles the module with libnvrtc (the executor's options, to PTX for a
virtual architecture: no ptxas, so a few seconds) and, for every kernel with
an mma.sync, finds the innermost loop that holds its mma instructions (the
shortest backward branch around them) and counts that loop's instructions:
all of them, the mma, global loads, div.rn, ex2 (expf), mul.hi (divisions
by constants) and branches.  One line a kernel, then the mean by operation.
A static measure of how much work a k tile costs beside its tensor-core
products; it says nothing of latency or of what ptxas makes of it.
"""
import argparse
import ctypes
import re
import sys
from collections import defaultdict

OPTIONS = ["--std=c++17", "-default-device", "--split-compile=0", "-diag-suppress=177"]


def compile_ptx(source, arch):
    for name in ("libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        sys.exit("ptx-loops: libnvrtc not found")
    prog = ctypes.c_void_p()
    src = source.encode()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"edmc_kernels.cu", 0, None, None) != 0:
        sys.exit("ptx-loops: nvrtcCreateProgram failed")
    opts = ["--gpu-architecture=" + arch] + OPTIONS
    argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), argv)
    if rc != 0:
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        sys.exit("ptx-loops: NVRTC failed:\n" + log.value.decode(errors="replace"))
    size = ctypes.c_size_t()
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def kernels(ptx):
    for m in re.finditer(r"\.entry (\w+)\(", ptx):
        end = ptx.index("\n}\n", m.start())
        yield m.group(1), ptx[m.start():end].split("\n")


def mma_loop(lines):
    labels = {}
    for n, line in enumerate(lines):
        m = re.match(r"^(\$L__\w+):", line)
        if m:
            labels[m.group(1)] = n
    best = None
    for n, line in enumerate(lines):
        m = re.search(r"bra(?:\.uni)?\s+(\$L__\w+);", line)
        if not m or labels.get(m.group(1), n) >= n:
            continue
        start = labels[m.group(1)]
        if any("mma.sync" in x for x in lines[start:n + 1]) and (best is None or n - start < best[1] - best[0]):
            best = (start, n)
    if best is None:
        return None
    body = [x.strip() for x in lines[best[0]:best[1] + 1]]
    return [x for x in body if x and x[0] not in "$/.{}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module")
    ap.add_argument("--arch", default="compute_90")
    ap.add_argument("--kernels", default=".", help="a regular expression the kernel names must match")
    a = ap.parse_args()
    with open(a.module) as f:
        ptx = compile_ptx(f.read(), a.arch)
    sums = defaultdict(lambda: [0, 0, 0])
    keys = [("mma.sync", "mma"), ("ld.global", "global loads"), ("div.rn", "div.rn"), ("ex2", "ex2"),
            ("mul.hi", "mul.hi"), ("bra", "branches")]
    for name, lines in kernels(ptx):
        if not re.search(a.kernels, name):
            continue
        loop = mma_loop(lines)
        if loop is None:
            continue
        counts = {label: sum(k in x for x in loop) for k, label in keys}
        print(f"{name}: {len(loop)} instructions a k tile, "
              + ", ".join(f"{v} {label}" for label, v in counts.items())
              + f" ({len(loop) / max(1, counts['mma']):.1f} a mma)")
        op = re.sub(r"^s\d+_", "", name)
        sums[op][0] += 1
        sums[op][1] += len(loop)
        sums[op][2] += counts["mma"]
    for op, (n, total, mma) in sorted(sums.items()):
        print(f"# {op}: {n} kernels, {total / n:.1f} instructions a k tile on average ({total / max(1, mma):.1f} a mma)")


if __name__ == "__main__":
    main()
