#!/usr/bin/python3
"""An AutoencoderKL as diffusers configures it for stabilityai/sd-vae-ft-mse,
written with torch.nn from the public architecture description, to check
models/sd-vae.edm against.  Builds a configuration with random weights
(biases and norm affines included, so that none is an identity) under
diffusers' state-dict names, encodes a fixed image and decodes a fixed
latent, and writes into OUTDIR:

  vae.safetensors        every tensor (what a diffusers file holds), and the
                         configuration as metadata edmc.config
  encoder.safetensors    quant_conv.* and encoder.* only
  decoder.safetensors    post_quant_conv.* and decoder.* only
  enc_in.safetensors     image [N, C, R, R]
  enc_out.safetensors    mean_std [N, 2L, R/f, R/f]: mean, then std
  dec_in.safetensors     latent [N, L, R/f, R/f]
  dec_out.safetensors    image [N, C, R, R]

usage: vae_torch.py OUTDIR [--channels=32,64] [--layers=2] [--groups=8]
       [--resolution=16] [--batch=2] [--legacy-names] [--seed=0]

       vae_torch.py decode-check VAE.safetensors RAW.safetensors PNG...
decodes the samples of RAW (edmc generate --save-raw) as the EDM2
reference does (its StabilityVAEEncoder.decode: undo the latent
normalisation, the VAE's decoder, clamp(0, 1)·255 to uint8) and compares
the bytes with the PNGs (one per sample, in order); exits 1 when a byte
differs by more than 1 or more than 1% differ at all.

       vae_torch.py encode-check VAE.safetensors LATENTS.zip PNG...
encodes the PNGs as the reference's `dataset_tool.py encode` does (pixels /
255, the encoder, the posterior's mean and std) and compares them with the
.npy entries of LATENTS.zip (in name order; edmc dataset encode's output);
exits 1 beyond 1e-4 relative (largest |a - b| / max |b| per entry).
"""

import json
import os
import struct
import sys

import torch
import torch.nn.functional as F
from torch import nn


class Resnet(nn.Module):
    """ResnetBlock2D without a time embedding: norm, SiLU, conv, twice, plus a
    1x1 shortcut when the width changes; output scale factor 1."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """One head over all channels of each pixel, group norm first, residual."""

    def __init__(self, c, groups, legacy):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.legacy = legacy
        names = ['query', 'key', 'value', 'proj_attn'] if legacy else ['to_q', 'to_k', 'to_v', 'to_out']
        for n in names:
            lin = nn.Linear(c, c)
            setattr(self, n, nn.ModuleList([lin]) if n == 'to_out' else lin)
        self.names = names

    def forward(self, x):
        n, c, h, w = x.shape
        t = self.group_norm(x).reshape(n, c, h * w).transpose(1, 2)
        q, k, v = (getattr(self, name)(t) for name in self.names[:3])
        p = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / c ** 0.5, dim=-1)
        o = torch.bmm(p, v)
        out = self.to_out[0](o) if not self.legacy else self.proj_attn(o)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, c, groups, legacy):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(c, c, groups), Resnet(c, c, groups)])
        self.attentions = nn.ModuleList([Attention(c, groups, legacy)])

    def forward(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Downsampler(nn.Module):
    """Zero padding on the right and bottom, then a 3x3 conv of stride 2."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsampler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Level(nn.Module):
    def __init__(self, resnets, sampler_name, sampler):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.sampler_name = sampler_name
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if hasattr(self, self.sampler_name):
            x = getattr(self, self.sampler_name)[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cin, latent, chans, layers, groups, legacy):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, chans[0], 3, padding=1)
        blocks, c = [], chans[0]
        for i, cout in enumerate(chans):
            resnets = [Resnet(c if j == 0 else cout, cout, groups) for j in range(layers)]
            last = i == len(chans) - 1
            blocks.append(Level(resnets, 'downsamplers', None if last else Downsampler(cout)))
            c = cout
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(chans[-1], groups, legacy)
        self.conv_norm_out = nn.GroupNorm(groups, chans[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chans[-1], 2 * latent, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cout_img, latent, chans, layers, groups, legacy):
        super().__init__()
        rev = list(reversed(chans))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups, legacy)
        blocks, c = [], rev[0]
        for i, cout in enumerate(rev):
            resnets = [Resnet(c if j == 0 else cout, cout, groups) for j in range(layers + 1)]
            last = i == len(rev) - 1
            blocks.append(Level(resnets, 'upsamplers', None if last else Upsampler(cout)))
            c = cout
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=1e-6)
        self.conv_out = nn.Conv2d(chans[0], cout_img, 3, padding=1)

    def forward(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, chans, layers, groups, legacy, cin=3, latent=4):
        super().__init__()
        self.encoder = Encoder(cin, latent, chans, layers, groups, legacy)
        self.decoder = Decoder(cin, latent, chans, layers, groups, legacy)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)

    def encode(self, x):
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        return torch.cat([mean, torch.exp(0.5 * logvar)], dim=1)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header['__metadata__'] = metadata
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def read_safetensors(path):
    import numpy as np
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop('__metadata__', {})
    out = {}
    for name, e in header.items():
        a, b = e['data_offsets']
        dtype = {'F32': np.float32, 'F16': np.float16}[e['dtype']]
        arr = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dtype).reshape(e['shape'])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out, meta


# the reference's latent normalisation (float32, as numpy computes it there)
RAW_MEAN = [5.81, 3.25, 0.12, -2.15]
RAW_STD = [4.17, 4.62, 3.71, 3.28]


def load_vae(vae_path):
    sd, meta = read_safetensors(vae_path)
    cfg = json.loads(meta['edmc.config'])
    chans = json.loads(cfg['block_out_channels'])
    legacy = any('.query.' in k for k in sd)
    vae = AutoencoderKL(chans, int(cfg['layers_per_block']), int(cfg['norm_groups']), legacy).eval()
    vae.load_state_dict(sd, strict=True)
    return vae


def encode_check(vae_path, zip_path, pngs):
    import io
    import zipfile
    import numpy as np
    from PIL import Image
    vae = load_vae(vae_path)
    z = zipfile.ZipFile(zip_path)
    names = sorted(n for n in z.namelist() if n.endswith('.npy'))
    if len(names) != len(pngs):
        sys.exit(f'{len(names)} latents for {len(pngs)} images')
    worst = 0.0
    for name, path in zip(names, pngs):
        got = np.load(io.BytesIO(z.read(name)))
        img = torch.from_numpy(np.asarray(Image.open(path).convert('RGB')).copy()).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            want = vae.encode(img.to(torch.float32) / 255)[0].numpy()
        if got.dtype != np.float32 or got.shape != want.shape:
            sys.exit(f'{name}: {got.dtype} {got.shape}, expected float32 {want.shape}')
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    print(f'{len(names)} latents {list(want.shape)}: largest relative difference {worst:.3g}')
    if worst > 1e-4:
        sys.exit(1)


def decode_check(vae_path, raw_path, pngs):
    import numpy as np
    from PIL import Image
    vae = load_vae(vae_path)
    scale = np.float32(0.5) / np.array(RAW_STD, dtype=np.float32)
    bias = np.float32(0) - np.array(RAW_MEAN, dtype=np.float32) * scale
    x = read_safetensors(raw_path)[0]['sample']
    with torch.no_grad():
        x = x - torch.from_numpy(bias).reshape(1, -1, 1, 1)
        x = x / torch.from_numpy(scale).reshape(1, -1, 1, 1)
        x = vae.decode(x).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    if len(pngs) != x.shape[0]:
        sys.exit(f'{len(pngs)} PNGs for {x.shape[0]} samples')
    worst, differ, total, inside = 0, 0, 0, 0
    for i, path in enumerate(pngs):
        got = np.asarray(Image.open(path).convert('RGB')).transpose(2, 0, 1).astype(int)
        want = x[i].astype(int)
        if got.shape != want.shape:
            sys.exit(f'{path}: {got.shape}, expected {want.shape}')
        d = np.abs(got - want)
        worst, differ, total = max(worst, int(d.max())), differ + int((d > 0).sum()), total + d.size
        inside += int(((want > 0) & (want < 255)).sum())
    print(f'{total} bytes ({inside} strictly inside 0..255): {differ} differ, by at most {worst}')
    if worst > 1 or differ > total // 100:
        sys.exit(1)


def main():
    if sys.argv[1] == 'decode-check':
        decode_check(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    if sys.argv[1] == 'encode-check':
        encode_check(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    args = dict(a[2:].split('=', 1) if '=' in a else (a[2:], '1') for a in sys.argv[2:])
    outdir = sys.argv[1]
    chans = [int(c) for c in args.get('channels', '32,64').split(',')]
    layers = int(args.get('layers', '2'))
    groups = int(args.get('groups', '8'))
    res = int(args.get('resolution', '16'))
    batch = int(args.get('batch', '2'))
    legacy = 'legacy-names' in args
    torch.manual_seed(int(args.get('seed', '0')))
    vae = AutoencoderKL(chans, layers, groups, legacy).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            # weights at a scale that keeps activations O(1) through the depth
            if p.dim() >= 2:
                p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5))
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
        sd = {k: v for k, v in vae.state_dict().items()}
        image = torch.rand(batch, 3, res, res)
        f = 2 ** (len(chans) - 1)
        latent = 2 * torch.randn(batch, 4, res // f, res // f)
        mean_std = vae.encode(image)
        decoded = vae.decode(latent)
    config = {'resolution': str(res), 'block_out_channels': '[' + ', '.join(map(str, chans)) + ']',
              'layers_per_block': str(layers), 'norm_groups': str(groups)}
    # the configuration as `edmc init` records it, so that --vae= needs no -D
    write_safetensors(os.path.join(outdir, 'vae.safetensors'), sd, {'edmc.config': json.dumps(config)})
    write_safetensors(os.path.join(outdir, 'encoder.safetensors'),
                      {k: v for k, v in sd.items() if k.startswith(('encoder.', 'quant_conv.'))})
    write_safetensors(os.path.join(outdir, 'decoder.safetensors'),
                      {k: v for k, v in sd.items() if k.startswith(('decoder.', 'post_quant_conv.'))})
    write_safetensors(os.path.join(outdir, 'enc_in.safetensors'), {'image': image})
    write_safetensors(os.path.join(outdir, 'enc_out.safetensors'), {'mean_std': mean_std})
    write_safetensors(os.path.join(outdir, 'dec_in.safetensors'), {'latent': latent})
    write_safetensors(os.path.join(outdir, 'dec_out.safetensors'), {'image': decoded})
    print(f'{len(sd)} tensors; mean_std {list(mean_std.shape)} (std range {mean_std[:, 4:].min():.3g}..'
          f'{mean_std[:, 4:].max():.3g}); image {list(decoded.shape)} (range {decoded.min():.3g}..{decoded.max():.3g})')


if __name__ == '__main__':
    main()
