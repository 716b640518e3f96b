#!/usr/bin/python3
"""Writes the small reference-format pickles under tests/ref/ (committed, so
`make check` needs no torch).  Run by hand with Debian's python3-torch:

    /usr/bin/python3 tests/tools/make_ref_pickles.py PARAMS.txt tests/ref

PARAMS.txt is `edmc info --params` of the fixtures' configuration (the names
and shapes the network has).  The pickles have the structure the reference's
training loop writes with pickle.dump: a dict (dnnlib.util.EasyDict) of ema,
loss_fn, encoder and dataset_kwargs; every network module a record of the
reference's persistence wrapper (torch_utils.persistence._reconstruct_persistent_obj
with type, version, module_src, class_name and the module's state, which holds
_init_kwargs), enc/dec as torch ModuleDicts, tensors pickled by torch's own
reducers.  The reference's classes are stood in for by stubs of the same
module and class names, which only decide how objects pickle; nothing here
loads the pickles back.  Beside each pickle goes the same tensors as a
safetensors file (the expected result of `edmc import`); and one network's
state dict as torch.save writes it (state-dict-fp32.pt, the tensors of
released-fp32)."""

import collections
import json
import os
import pickle
import struct
import sys
import types

import numpy as np
import torch

# ---------------------------------------------------------------- the names the pickles carry


def _stub_module(name):
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    return mod


_persistence = _stub_module('torch_utils.persistence')
_stub_module('torch_utils').persistence = _persistence
_util = _stub_module('dnnlib.util')
_stub_module('dnnlib').util = _util


def _reconstruct_persistent_obj(meta):
    raise RuntimeError('a fixture stub: edmc reads these pickles, Python does not')


_reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
_persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj


class EasyDict(dict):
    pass


EasyDict.__module__ = 'dnnlib.util'
_util.EasyDict = EasyDict


class Recorded:
    """Pickles as the reference's persistence wrapper does: the reconstruct
    function with one meta dict, no state of its own."""
    def __reduce__(self):
        meta = dict(type='class', version=6, module_src='# source text: edmc never reads it\n',
                    class_name=self.record_class, state=dict(self.__dict__))
        meta['state'].pop('record_class', None)
        return (_reconstruct_persistent_obj, (meta,))


class RecordedModule(Recorded, torch.nn.Module):
    def __init__(self, record_class, **init_kwargs):
        torch.nn.Module.__init__(self)
        self.record_class = record_class
        self._init_args = ()
        self._init_kwargs = dict(init_kwargs)


class RecordedObject(Recorded):
    def __init__(self, record_class, init_kwargs, **attrs):
        self.record_class = record_class
        self._init_args = ()
        self._init_kwargs = dict(init_kwargs)
        self.__dict__.update(attrs)


# ---------------------------------------------------------------- the network


def leaf_class(path):
    last = path.split('.')[-1]
    if last in ('emb_fourier', 'logvar_fourier'):
        return 'MPFourier'
    if last in ('unet',):
        return 'UNet'
    if path.count('.') == 2 and path.split('.')[1] in ('enc', 'dec') and not last.endswith('_conv'):
        return 'Block'
    return 'MPConv'


def build(params, config, gen, dtype):
    """The module tree of `params` [(name, shape)] with random values; returns
    (net, {name: tensor}) with scalar gains of shape [] as the reference has."""
    net = RecordedModule('Precond', **config)
    values = {}
    modules = {'': net}

    def module(path):
        if path in modules:
            return modules[path]
        parent, _, last = path.rpartition('.')
        owner = module(parent)
        if path in ('unet.enc', 'unet.dec'):
            m = torch.nn.ModuleDict()
        else:
            m = RecordedModule(leaf_class(path))
        owner.add_module(last, m)
        modules[path] = m
        return m

    for name, shape in params:
        owner_path, _, last = name.rpartition('.')
        owner = module(owner_path)
        if last in ('emb_gain', 'out_gain'):
            shape = []
        t = torch.randn(shape, generator=gen).to(dtype)
        if last in ('freqs', 'phases'):
            owner.register_buffer(last, t)
        else:
            setattr(owner, last, torch.nn.Parameter(t, requires_grad=False))
        values[name] = t
    # a non-persistent buffer is not part of the state dict: edmc skips it too
    net.register_buffer('scratch', torch.zeros(3, dtype=dtype), persistent=False)
    return net, values


# ---------------------------------------------------------------- files


def write_safetensors(path, values):
    names = {torch.float16: 'F16', torch.float32: 'F32'}
    header, blobs, at = {}, [], 0
    for name in sorted(values):
        t = values[name].contiguous()
        raw = t.numpy().tobytes()
        header[name] = dict(dtype=names[t.dtype], shape=list(t.shape), data_offsets=[at, at + len(raw)])
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header, separators=(',', ':')).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + b''.join(blobs))


def snapshot(net, P_mean):
    encoder = RecordedObject('StabilityVAEEncoder', {}, vae_name='stabilityai/sd-vae-ft-mse',
                             scale=np.float32(0.5) / np.float32([4.17, 4.62, 3.71, 3.28]),
                             bias=np.float32([0.1, 0.2, 0.3, 0.4]), batch_size=8, _vae=None)
    loss_fn = RecordedObject('EDM2Loss', dict(P_mean=P_mean, P_std=1.0), P_mean=P_mean, P_std=1.0, sigma_data=0.5)
    return EasyDict(encoder=encoder, dataset_kwargs=EasyDict(class_name='training.dataset.ImageFolderDataset',
                                                             path='datasets/img512-sd.zip', use_labels=True),
                    loss_fn=loss_fn, ema=net)


def main():
    params_file, outdir = sys.argv[1], sys.argv[2]
    params = []
    with open(params_file) as f:
        for line in f:
            name, shape = line.split()
            params.append((name, json.loads(shape)))
    config = dict(img_resolution=16, img_channels=4, label_dim=10, model_channels=8, channel_mult=[1, 2],
                  num_blocks=1, attn_resolutions=[8], channels_per_head=8, logvar_channels=8, dropout=0.0,
                  use_fp16=True)
    os.makedirs(os.path.join(outdir, 'run'), exist_ok=True)

    # a snapshot as the training loop writes it: fp16, pickle.dump's default protocol
    gen = torch.Generator().manual_seed(1)
    net, values = build(params, config, gen, torch.float16)
    with open(os.path.join(outdir, 'snapshot-fp16.pkl'), 'wb') as f:
        pickle.dump(snapshot(net, -0.4), f)
    write_safetensors(os.path.join(outdir, 'snapshot-fp16.expect.safetensors'), values)

    # a network pickled on its own, fp32, as a plain dict, protocol 5
    gen = torch.Generator().manual_seed(2)
    net, values = build(params, config, gen, torch.float32)
    with open(os.path.join(outdir, 'released-fp32.pkl'), 'wb') as f:
        pickle.dump(dict(ema=net), f, protocol=5)
    write_safetensors(os.path.join(outdir, 'released-fp32.expect.safetensors'), values)
    # the same network's state dict, as torch.save writes it (its zip format)
    torch.save(net.state_dict(), os.path.join(outdir, 'state-dict-fp32.pt'))

    # a run folder for phema: two times, two EMA lengths
    for seed, kimg, std in ((3, 16, 0.050), (4, 16, 0.100), (5, 32, 0.050), (6, 32, 0.100)):
        gen = torch.Generator().manual_seed(seed)
        net, _ = build(params, config, gen, torch.float16)
        with open(os.path.join(outdir, 'run', f'network-snapshot-{kimg:07d}-{std:.3f}.pkl'), 'wb') as f:
            pickle.dump(snapshot(net, -0.4), f)


if __name__ == '__main__':
    main()
