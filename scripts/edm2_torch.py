#!/usr/bin/env python3
"""Small, self-contained PyTorch model of the EDM2 denoiser (Precond + U-Net + logvar head).

Written from docs/EDM2-SPEC.md (shared/docs) for cross-checking edmc. Parameter names follow
the reference state-dict layout so checkpoints load with plain `load_state_dict`
(learned scalar gains may be stored either as shape [] or [1]).

Only needs torch (numpy optional). Includes a minimal safetensors reader/writer.

CLI:
    edm2_torch.py --check-golden [DIR]       compare against DIR/weights.safetensors + forward.safetensors
    edm2_torch.py --check-golden-step [DIR]  one training step (forced WN, EDM2 loss, backward, Adam)
                                             against DIR/train_step.safetensors
    edm2_torch.py --check-golden-sample [DIR] the 8-step Heun sampler against DIR/sample.safetensors
    edm2_torch.py --params PRESET            parameter and buffer counts (compare `edmc info --json`)

Presets: tiny (models/edm2-tiny.edm), xs (models/edm2-img512-xs.edm), s (models/edm2-img512-s.edm);
scripts/bench_torch_gpu.py times them.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Minimal safetensors I/O.

_ST_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def load_safetensors(path, device='cpu'):
    """Return (dict name -> tensor, metadata dict or {})."""
    with open(path, 'rb') as f:
        data = f.read()
    (hlen,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + hlen].decode('utf-8'))
    meta = header.pop('__metadata__', None) or {}
    base = 8 + hlen
    buf = bytearray(data[base:])  # writable copy so frombuffer does not warn
    out = {}
    for name, info in header.items():
        dtype = _ST_DTYPES[info['dtype']]
        start, end = info['data_offsets']
        shape = list(info['shape'])
        if end == start:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(buf, dtype=dtype, count=(end - start) // torch.empty((), dtype=dtype).element_size(),
                                 offset=start).reshape(shape).clone()
        out[name] = t.to(device)
    return out, meta


def save_safetensors(path, tensors, metadata=None):
    """Write dict name -> tensor (little-endian, C-contiguous) as safetensors."""
    header = {}
    blobs = []
    off = 0
    for name in tensors:
        t = tensors[name].detach().to('cpu').contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {'dtype': _ST_NAMES[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(',', ':')).encode('utf-8')
    hb += b' ' * ((8 - len(hb) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)

# ----------------------------------------------------------------------------
# Magnitude-preserving primitives (EDM2-SPEC §1).


def normalize(x, dim=None, eps=1e-4):
    """x / (eps + RMS of x over `dim`); norm accumulated in float32."""
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))  # one op, as the reference
    return x / norm.to(x.dtype)


def mp_silu(x):
    return F.silu(x) / 0.596


def mp_sum(a, b, t=0.5):
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a, b, dim=1, t=0.5):
    na, nb = a.shape[dim], b.shape[dim]
    k = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (k / math.sqrt(na) * (1 - t)), b * (k / math.sqrt(nb) * t)], dim=dim)


def resample(x, mode='keep'):
    """As the reference writes it: a depthwise [1,1]x[1,1]/4 filter, a strided
    convolution down, a transposed convolution (filter x4) up."""
    if mode == 'keep':
        return x
    c = x.shape[1]
    f = torch.full([c, 1, 2, 2], 0.25, dtype=x.dtype, device=x.device)
    if mode == 'down':
        return F.conv2d(x, f, groups=c, stride=2)
    if mode == 'up':
        return F.conv_transpose2d(x, f * 4, groups=c, stride=2)
    raise ValueError(mode)


class MPFourier(torch.nn.Module):
    def __init__(self, num_channels, bandwidth=1.0):
        super().__init__()
        self.register_buffer('freqs', 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer('phases', 2 * math.pi * torch.rand(num_channels))

    def forward(self, x):
        y = x.to(torch.float32)
        y = torch.outer(y, self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(torch.nn.Module):
    """Weight-normalized conv (kernel [kh,kw]) or fully connected layer (kernel [])."""

    def __init__(self, in_channels, out_channels, kernel):
        super().__init__()
        self.out_channels = out_channels
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x, gain=1):
        w = self.weight.to(torch.float32)
        if self.training:  # forced weight normalization of the stored copy
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w)
        w = w * (gain / math.sqrt(w[0].numel()))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


def _gain_param():
    return torch.nn.Parameter(torch.zeros([]))

# ----------------------------------------------------------------------------
# U-Net (EDM2-SPEC §2).


class Block(torch.nn.Module):
    def __init__(self, in_channels, out_channels, emb_channels, flavor='enc', resample_mode='keep',
                 attention=False, channels_per_head=64, dropout=0, res_balance=0.3,
                 attn_balance=0.3, clip_act=256):
        super().__init__()
        self.out_channels = out_channels
        self.flavor = flavor
        self.resample_mode = resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.emb_gain = _gain_param()
        self.conv_res0 = MPConv(out_channels if flavor == 'enc' else in_channels, out_channels, [3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, [])
        self.conv_res1 = MPConv(out_channels, out_channels, [3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, [1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, [1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, [1, 1]) if self.num_heads else None

    def forward(self, x, emb):
        x = resample(x, self.resample_mode)
        if self.flavor == 'enc':
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm

        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.training and self.dropout != 0:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)

        if self.flavor == 'dec' and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)

        if self.num_heads:
            n, c_, h, w_ = x.shape
            y = self.attn_qkv(x)
            y = y.reshape(n, self.num_heads, -1, 3, h * w_)
            q, k, v = normalize(y, dim=2).unbind(3)  # each [n, heads, d, hw]
            d = q.shape[2]
            att = torch.einsum('nhcq,nhck->nhqk', q, k / math.sqrt(d)).softmax(dim=3)
            y = torch.einsum('nhqk,nhck->nhcq', att, v)
            y = self.attn_proj(y.reshape(n, c_, h, w_))
            x = mp_sum(x, y, t=self.attn_balance)

        if self.clip_act is not None:
            x = x.clip_(-self.clip_act, self.clip_act)  # in place, as the reference
        return x


class UNet(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim, model_channels=192,
                 channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(16, 8),
                 channels_per_head=64, label_balance=0.5, concat_balance=0.5,
                 dropout=0, res_balance=0.3, attn_balance=0.3, clip_act=256):
        super().__init__()
        cblock = [model_channels * m for m in channel_mult]
        cnoise = cblock[0]
        cemb = max(cblock)
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        self.out_gain = _gain_param()
        kw = dict(channels_per_head=channels_per_head, dropout=dropout, res_balance=res_balance,
                  attn_balance=attn_balance, clip_act=clip_act)

        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, [])
        self.emb_label = MPConv(label_dim, cemb, []) if label_dim else None

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        cout = img_channels + 1
        for level, ch in enumerate(cblock):
            r = img_resolution >> level
            if level == 0:
                cin, cout = cout, ch
                self.enc[f'{r}x{r}_conv'] = MPConv(cin, cout, [3, 3])
            else:
                self.enc[f'{r}x{r}_down'] = Block(cout, cout, cemb, 'enc', 'down', **kw)
            for i in range(num_blocks):
                cin, cout = cout, ch
                self.enc[f'{r}x{r}_block{i}'] = Block(cin, cout, cemb, 'enc',
                                                      attention=(r in attn_resolutions), **kw)

        # Decoder.
        skips = [m.out_channels for m in self.enc.values()]
        self.dec = torch.nn.ModuleDict()
        for level, ch in reversed(list(enumerate(cblock))):
            r = img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f'{r}x{r}_in0'] = Block(cout, cout, cemb, 'dec', attention=True, **kw)
                self.dec[f'{r}x{r}_in1'] = Block(cout, cout, cemb, 'dec', **kw)
            else:
                self.dec[f'{r}x{r}_up'] = Block(cout, cout, cemb, 'dec', 'up', **kw)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), ch
                self.dec[f'{r}x{r}_block{i}'] = Block(cin, cout, cemb, 'dec',
                                                      attention=(r in attn_resolutions), **kw)
        self.out_conv = MPConv(cout, img_channels, [3, 3])

    def forward(self, x, noise_labels, class_labels, record=None):
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if record is not None:
            record['act.emb_noise'] = emb
        if self.emb_label is not None:
            lab = class_labels * math.sqrt(class_labels.shape[1])
            emb = mp_sum(emb, self.emb_label(lab.to(emb.dtype)), t=self.label_balance)
        emb = mp_silu(emb)

        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, blk in self.enc.items():
            x = blk(x) if name.endswith('_conv') else blk(x, emb)
            skips.append(x)
            if record is not None:
                record['act.unet.enc.' + name] = x
        for name, blk in self.dec.items():
            if '_block' in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = blk(x, emb)
            if record is not None:
                record['act.unet.dec.' + name] = x
        return self.out_conv(x, gain=self.out_gain)


class Precond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim, sigma_data=0.5,
                 logvar_channels=128, use_fp16=False, **unet_kwargs):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.sigma_data = sigma_data
        self.use_fp16 = use_fp16
        self.unet = UNet(img_resolution, img_channels, label_dim, **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, [])
        self._register_load_state_dict_pre_hook(self._fix_gain_shapes)

    def _fix_gain_shapes(self, state_dict, prefix, *args, **kwargs):
        # Gains may be stored as [1] (edmc / golden files) or [] (reference).
        own = dict(self.named_parameters())
        for name, p in own.items():
            key = prefix + name
            if key in state_dict and state_dict[key].shape != p.shape and state_dict[key].numel() == p.numel():
                state_dict[key] = state_dict[key].reshape(p.shape)

    def forward(self, x, sigma, class_labels=None, return_logvar=False, record=None):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([x.shape[0], self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        dtype = torch.float16 if (self.use_fp16 and x.device.type == 'cuda') else torch.float32
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.flatten().log() / 4
        F_x = self.unet((c_in * x).to(dtype), c_noise,
                        None if class_labels is None else class_labels.to(dtype), record=record)
        D_x = c_skip * x + c_out * F_x.to(torch.float32)
        if not return_logvar:
            return D_x
        logvar = self.logvar_linear(self.logvar_fourier(c_noise)).reshape(-1, 1, 1, 1)
        return D_x, logvar

# ----------------------------------------------------------------------------
# Configs, construction, I/O helpers.


TINY_CONFIG = dict(img_resolution=16, img_channels=4, label_dim=10, model_channels=32,
                   channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=32,
                   logvar_channels=16, dropout=0)
XS_CONFIG = dict(img_resolution=64, img_channels=4, label_dim=1000, model_channels=128,
                 channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[16, 8],
                 channels_per_head=64, logvar_channels=128, dropout=0)
S_CONFIG = dict(XS_CONFIG, model_channels=192)
PRESETS = {'tiny': TINY_CONFIG, 'xs': XS_CONFIG, 's': S_CONFIG}
# The .edm file each preset mirrors, and its training constants (EDM2-SPEC §3; edm2-tiny keeps
# models/edm2.edm's defaults).
MODEL_NAMES = {'tiny': 'edm2-tiny', 'xs': 'edm2-img512-xs', 's': 'edm2-img512-s'}
TRAINING = {
    'tiny': dict(P_mean=-0.4, P_std=1.0, ref_lr=0.0100, sigma_data=0.5),
    'xs': dict(P_mean=-0.4, P_std=1.0, ref_lr=0.0120, sigma_data=0.5),
    's': dict(P_mean=-0.4, P_std=1.0, ref_lr=0.0100, sigma_data=0.5),
}


def preset_key(name):
    """'xs', 'img512-xs', 'edm2-img512-xs' or 'models/edm2-img512-xs.edm' -> 'xs'."""
    base = os.path.basename(name)
    if base.endswith('.edm'):
        base = base[:-4]
    for prefix in ('edm2-', 'img512-'):
        if base.startswith(prefix):
            base = base[len(prefix):]
    if base not in PRESETS:
        raise ValueError(f'unknown preset {name!r} (tiny, img512-xs, img512-s)')
    return base


def count_params(net):
    return (sum(p.numel() for p in net.parameters()), sum(b.numel() for b in net.buffers()))


def build(config, **extra):
    """Build a Precond from a config dict (keys as in the golden `config` metadata).

    Accepted keys: img_resolution, img_channels, label_dim, model_channels, channel_mult,
    num_blocks, attn_resolutions, channels_per_head, logvar_channels, dropout,
    label_balance, concat_balance, res_balance, attn_balance, clip_act, sigma_data, use_fp16.
    """
    cfg = dict(config)
    cfg.update(extra)
    return Precond(**cfg)


def randomize_(net, gain_low=0.5, gain_high=1.5, generator=None):
    """Raw N(0,1) weights (forward pass normalizes them) and nonzero gains."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith('gain'):
                p.uniform_(gain_low, gain_high, generator=generator)
            else:
                p.normal_(generator=generator)
    return net


def load_net(weights_path, config=None, device='cpu'):
    sd, meta = load_safetensors(weights_path)
    if config is None:
        config = json.loads(meta['config'])
    net = build(config)
    net.load_state_dict(sd)
    return net.to(device).eval()


# ----------------------------------------------------------------------------
# Training (EDM2-SPEC §4), as the reference's EDM2Loss and training loop do it.


def edm2_loss(net, images, labels, P_mean=-0.4, P_std=1.0, sigma_data=0.5, rnd_normal=None, unit_noise=None):
    """The optimised scalar: Σ over all elements of λ(σ)/exp(u)·(D − y)² + u, divided by the batch.

    σ = exp(P_mean + P_std·n), n ~ N(0,1) per sample, noisy input y + σ·ε.  Preconditioning and
    loss are float32; the U-Net runs in the net's dtype (fp16 with use_fp16 on CUDA).  rnd_normal
    [N] and unit_noise [N,C,H,W] may be given (the golden step); otherwise drawn on images' device.
    """
    B = images.shape[0]
    if rnd_normal is None:
        rnd_normal = torch.randn([B], device=images.device)
    if unit_noise is None:
        unit_noise = torch.randn_like(images)
    sigma = (rnd_normal.to(torch.float32).reshape(B, 1, 1, 1) * P_std + P_mean).exp()
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    noise = unit_noise * sigma
    D, logvar = net(images + noise, sigma, labels, return_logvar=True)
    loss = (weight / logvar.exp()) * ((D - images) ** 2) + logvar
    return loss.sum() / B


def make_adam(net, lr=0.01):
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8)


def train_step(net, opt, images, labels, **loss_kw):
    """One optimizer step: the net in training mode does forced weight normalisation of the
    master weights inside its forward pass (MPConv), then the loss, backward, non-finite
    gradients set to 0 (the reference's force_finite) and Adam.  Returns the loss (a tensor)."""
    net.train()
    opt.zero_grad(set_to_none=True)
    loss = edm2_loss(net, images, labels, **loss_kw)
    loss.backward()
    for p in net.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
    opt.step()
    return loss.detach()


# ----------------------------------------------------------------------------
# Sampling (EDM2-SPEC §6): the Heun sampler, no guidance.


def heun_sigmas(steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The noise levels t_0 > ... > t_{N-1}, then t_N = 0 (host floats)."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)] + [0.0]


def heun_step(net, x, t, t_next, labels, last):
    """One step from t to t_next: Euler, then (but on the last step) the trapezoid correction."""
    B = x.shape[0]
    d = (x - net(x, torch.full([B], t, device=x.device), labels)) / t
    x_next = x + (t_next - t) * d
    if last:
        return x_next
    d_next = (x_next - net(x_next, torch.full([B], t_next, device=x.device), labels)) / t_next
    return x + (t_next - t) * (0.5 * d + 0.5 * d_next)


def heun_sample(net, noise, labels, steps):
    sigmas = heun_sigmas(steps)
    x = noise * sigmas[0]
    with torch.no_grad():
        for i in range(steps):
            x = heun_step(net, x, sigmas[i], sigmas[i + 1], labels, last=i == steps - 1)
    return x


def rel_err(a, b):
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def check_golden(d, verbose=True, tol=1e-4):
    net = load_net(os.path.join(d, 'weights.safetensors'))
    fw, _ = load_safetensors(os.path.join(d, 'forward.safetensors'))
    rec = {}
    with torch.no_grad():
        D_x, logvar = net(fw['x'], fw['sigma'], fw['class_labels'], return_logvar=True, record=rec)
    errs = {'D_x': rel_err(D_x, fw['D_x']), 'logvar': rel_err(logvar, fw['logvar'])}
    act = {k: rel_err(v, fw[k]) for k, v in rec.items() if k in fw}
    if verbose:
        for k, v in act.items():
            print(f'  {k:32s} rel_err={v:.3e}')
        for k, v in errs.items():
            print(f'{k} rel_err={v:.3e}')
    ok = all(v < tol for v in list(errs.values()) + list(act.values()))
    print('golden check:', 'PASS' if ok else 'FAIL', f'(tol {tol:g})')
    return ok, errs


def check_golden_step(d, verbose=True, tol=1e-3):
    """One training step from DIR/weights.safetensors on DIR/train_step.safetensors's batch:
    forced WN, loss, gradients and the Adam step (lr 0.01), with the README's tolerances
    (loss and normalized 1e-5, gradients and the update 1e-3 with an absolute floor of 1e-6)."""
    net = load_net(os.path.join(d, 'weights.safetensors'))
    ts, _ = load_safetensors(os.path.join(d, 'train_step.safetensors'))
    opt = make_adam(net, lr=0.01)
    params = dict(net.named_parameters())
    # forced WN happens inside the forward pass; the values it leaves are the masters Adam updates
    net.train()
    opt.zero_grad(set_to_none=True)
    loss = edm2_loss(net, ts['images'], ts['class_labels'], rnd_normal=ts['rnd_normal'],
                     unit_noise=ts['unit_noise'])
    normalized = {k: p.detach().clone() for k, p in params.items()}
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in params.items()}
    opt.step()
    errs = {'loss': rel_err(loss.reshape(-1), ts['loss'].reshape(-1))}
    worst = {'normalized': (0.0, ''), 'grad': (0.0, ''), 'update': (0.0, '')}

    def note(what, e, k):
        if not e <= worst[what][0]:  # NaN counts as worst
            worst[what] = (e, k)

    for k, p in params.items():
        note('normalized', rel_err(normalized[k].reshape(-1), ts[f'normalized.{k}'].reshape(-1)), k)
        note('grad', rel_err(grads[k].reshape(-1), ts[f'grad.{k}'].reshape(-1)), k)
        upd = (p.detach() - normalized[k]).double().reshape(-1)
        want = (ts[f'step1.{k}'] - ts[f'normalized.{k}']).double().reshape(-1)
        note('update', (torch.linalg.vector_norm(upd - want) /
                        max(torch.linalg.vector_norm(want).item(), 1e-6)).item(), k)
    tols = {'loss': 1e-5, 'normalized': 1e-5, 'grad': tol, 'update': tol}
    ok = errs['loss'] < tols['loss']
    if verbose:
        print(f'loss {loss.item():.9g} (golden {ts["loss"].reshape(-1)[0].item():.9g}) rel_err={errs["loss"]:.3e}')
    for what, (e, k) in worst.items():
        ok = ok and e < tols[what]
        if verbose:
            print(f'{what:10s} worst rel_err={e:.3e} ({k})')
    print('golden step check:', 'PASS' if ok else 'FAIL')
    return ok


def check_golden_sample(d, tol=1e-3):
    """The 8-step sampler from DIR/sample.safetensors's noise, against its `sample` (README: 1e-3)."""
    net = load_net(os.path.join(d, 'weights.safetensors'))
    sm, _ = load_safetensors(os.path.join(d, 'sample.safetensors'))
    x = heun_sample(net, sm['noise'].float(), sm['class_labels'].float(), 8)
    e = rel_err(x, sm['sample'])
    ok = e < tol
    print(f'sample rel_err={e:.3e}')
    print('golden sample check:', 'PASS' if ok else 'FAIL', f'(tol {tol:g})')
    return ok


def main(argv=None):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default_dir = os.path.normpath(os.path.join(repo, '..', 'shared', 'testdata', 'edm2-tiny'))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check-golden', nargs='?', const=default_dir, metavar='DIR',
                    help=f'verify the forward pass against golden vectors (default {default_dir})')
    ap.add_argument('--check-golden-step', nargs='?', const=default_dir, metavar='DIR',
                    help='verify one training step (loss, forced WN, gradients, Adam) against golden vectors')
    ap.add_argument('--check-golden-sample', nargs='?', const=default_dir, metavar='DIR',
                    help='verify the 8-step Heun sampler (no guidance) against golden vectors')
    ap.add_argument('--params', metavar='PRESET', help='print {"model", "params", "buffers"} of a preset as JSON')
    args = ap.parse_args(argv)
    if args.params:
        key = preset_key(args.params)
        params, buffers = count_params(build(PRESETS[key]))
        print(json.dumps({'model': MODEL_NAMES[key], 'params': params, 'buffers': buffers}))
        return 0
    rc = None
    if args.check_golden:
        ok, _ = check_golden(args.check_golden)
        rc = 0 if ok else 1
    if args.check_golden_step:
        ok = check_golden_step(args.check_golden_step)
        rc = (rc or 0) if ok else 1
    if args.check_golden_sample:
        ok = check_golden_sample(args.check_golden_sample)
        rc = (rc or 0) if ok else 1
    if rc is not None:
        return rc
    ap.print_help()
    return 0


if __name__ == '__main__':
    sys.exit(main())
