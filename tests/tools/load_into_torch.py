#!/usr/bin/python3
"""Loads a safetensors file written by edmc into a module tree shaped like
the reference's network (learned gains of shape [], as its modules have
them; built by make_ref_pickles.build) with torch's load_state_dict(strict=True),
and checks every value arrived.  usage: load_into_torch.py PARAMS.txt W.safetensors
Exits 0 when the load succeeds and the values match."""

import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_ref_pickles  # noqa: E402  (the module tree of the fixtures)


def read_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n])
    dtypes = {'F32': np.float32, 'F16': np.float16}
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        a, b = e['data_offsets']
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dtypes[e['dtype']]).reshape(e['shape'])
        out[name] = torch.from_numpy(arr.copy())
    return out


def main():
    params = []
    with open(sys.argv[1]) as f:
        for line in f:
            name, shape = line.split()
            params.append((name, json.loads(shape)))
    net, _ = make_ref_pickles.build(params, {}, torch.Generator().manual_seed(0), torch.float32)
    sd = read_safetensors(sys.argv[2])
    net.load_state_dict(sd, strict=True)
    got = net.state_dict()
    for name, t in sd.items():
        if not torch.equal(got[name].reshape(-1), t.reshape(-1).to(got[name].dtype)):
            sys.exit(f'{name}: the value did not arrive')
    scalars = [k for k, v in got.items() if v.dim() == 0]
    print(f'{len(sd)} tensors loaded with strict=True; {len(scalars)} learned scalars of shape [] took [1] values')


if __name__ == '__main__':
    main()
