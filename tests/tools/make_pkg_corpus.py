#!/usr/bin/env python3
"""Writes the seed packages of tests/fuzz/pkg_corpus (tests/fuzz/fuzz_package.c).

usage: make_pkg_corpus.py EDMC SRCDIR OUTDIR
A good package of the tiny model and of a small one, a training package of
a smaller tiny model (the differentiated program), and the small one with
an entry changed: checksums stale, or recomputed (so the readers behind the
checksums meet a plan, a parameter table or a manifest that do not fit; a
plan with a cuda memory table),
another format version, a cubin the manifest names but the zip lacks, and
cut files; the training package also named a forward one (its graph is
still the training program)."""
import hashlib, json, os, subprocess, sys, zipfile

edmc, srcdir, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)


def compile_(model, dst, *args):
    subprocess.run([edmc, "compile", os.path.join(srcdir, model), *args, "-o", dst], check=True,
                   stdout=subprocess.DEVNULL)


def entries(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write(name, e, resum=True):
    m = json.loads(e["manifest.json"])
    if resum:
        m["sha256"] = {n: hashlib.sha256(b).hexdigest() for n, b in e.items() if n != "manifest.json"}
        e["manifest.json"] = json.dumps(m).encode()
    with zipfile.ZipFile(os.path.join(out, name), "w", zipfile.ZIP_STORED) as z:
        for n, b in e.items():
            z.writestr(n, b)


compile_("models/edm2-tiny.edm", os.path.join(out, "tiny.edmpkg"))
small = os.path.join(out, "small.edmpkg")
compile_("tests/fuzz/corpus/blocks.edm", small)
base = entries(small)


def variant(name, change, resum=True):
    e = dict(base)
    change(e)
    write(name, e, resum)


def manifest(f):
    def change(e):
        m = json.loads(e["manifest.json"])
        f(m)
        e["manifest.json"] = json.dumps(m).encode()
    return change


variant("graph_stale.edmpkg", lambda e: e.update({"graph.xml": e["graph.xml"].replace(b"matmul", b"add", 1)}), False)
variant("plan_other_root.edmpkg", lambda e: e.update({"plan.xml": e["plan.xml"].replace(b'root="', b'root="1', 1)}))
variant("plan_no_steps.edmpkg", lambda e: e.update({"plan.xml": b'<?xml version="1.0"?><edmc-plan version="1" fuse="all" training="0" nodes="3"/>'}))
variant("plan_memory.edmpkg", lambda e: e.update({"plan.xml": e["plan.xml"].replace(b"</edmc-plan>", (
    b'<memory arch="sm_90" batch="3" arena="1024" workspace="0">'
    b'<value node="0" dtype="f16" base="0" first="-1" last="-1" offset="-1" bytes="6"/>'
    b'<value node="1" dtype="f32" base="0" first="0" last="2" offset="0" bytes="12"/></memory></edmc-plan>'))}))
variant("plan_not_xml.edmpkg", lambda e: e.update({"plan.xml": b"<edmc-plan"}))
variant("params_other.edmpkg", lambda e: e.update({"params.json": e["params.json"].replace(b"8", b"9", 1)}))
variant("fuse_none.edmpkg", manifest(lambda m: m.update({"fuse": "none"})))
variant("fuse_bad.edmpkg", manifest(lambda m: m.update({"fuse": "wn,magic"})))
variant("version2.edmpkg", manifest(lambda m: m.update({"version": 2})))
variant("device_tpu.edmpkg", manifest(lambda m: m.update({"device": "tpu"})))
variant("kernel_missing.edmpkg", manifest(lambda m: m.update(
    {"kernels": [{"arch": "sm_90", "batch": 3, "entry": "cuda/sm_90/batch3.cubin", "source_sha256": "0" * 64}]})))
variant("kernel_bad_batch.edmpkg", manifest(lambda m: m.update(
    {"kernels": [{"arch": "sm_90", "batch": -3, "entry": "graph.xml", "source_sha256": "0" * 64}]})))
variant("manifest_array.edmpkg", lambda e: e.update({"manifest.json": b"[1, 2, 3]"}), False)
train = os.path.join(out, "train.edmpkg")
compile_("models/edm2-tiny.edm", train, "--mode=train", "-D", "model_channels=8", "-D", "channels_per_head=8",
         "-D", "channel_mult=[1]", "-D", "attn_resolutions=[]", "-D", "img_resolution=8", "-D", "logvar_channels=4")
t = entries(train)
t["manifest.json"] = json.dumps(dict(json.loads(t["manifest.json"]), mode="forward")).encode()
write("train_as_forward.edmpkg", t)
data = open(small, "rb").read()
open(os.path.join(out, "cut_half.edmpkg"), "wb").write(data[: len(data) // 2])
open(os.path.join(out, "cut_tail.edmpkg"), "wb").write(data[:-10])
open(os.path.join(out, "not_zip.edmpkg"), "wb").write(b"not a package\n")
