#!/usr/bin/env python3
"""Throughput of our PyTorch EDM2 denoiser (scripts/edm2_torch.py) on a GPU, beside `edmc bench`.

    bench_torch_gpu.py --preset=img512-xs|img512-s|tiny --mode=forward|train|sample --batch=128
                       --device=cuda|cpu --precision=fp16|fp32 [--iters=K] [--json]

The networks are the presets of models/edm2-img512-xs.edm, models/edm2-img512-s.edm and
models/edm2-tiny.edm (the parameter count is printed; it equals `edmc info --json`'s).
Precision as the reference implementation runs it: --precision=fp16 keeps preconditioning,
the embedding, the logvar head and the loss in fp32 and runs the U-Net in fp16 (each MPConv
normalizes its fp32 weight in fp32 and casts it to fp16 per call; activations fp16; cuDNN /
cuBLAS accumulate in fp32).  Plain PyTorch, NCHW, no torch.compile; cuDNN autotuning on and
TF32 off, as the reference's training script sets them (EDM2-SPEC §7).

--mode=forward: the denoiser's forward pass (eval, no_grad), D(x; σ) and logvar, as
                `edmc bench --mode=forward`.
--mode=train:   one optimizer step, as `edmc bench --mode=train`: the net in training mode
                (forced weight normalization of the fp32 master weights inside the forward
                pass), the EDM2 loss (σ = exp(P_mean + P_std·n) per sample, noise drawn on the
                device each step, λ(σ)/exp(u)·(D − y)² + u summed and divided by the batch),
                backward, non-finite gradients zeroed, Adam(β 0.9/0.99, ε 1e-8, lr --lr).
--mode=sample:  one whole sampler run, as `edmc bench --mode=sample`: EDM2-SPEC §6's Heun
                sampler, --steps steps (default 32: 63 evaluations of the denoiser in eval
                mode, no guidance), σ from 80 down to 0.002 (ρ = 7), x in fp32 between the
                evaluations, the noise drawn on the device each run; an image a sample.

Random weights (raw N(0,1), gains in [0.5, 1.5)) and inputs.  Warm-up runs (cuDNN autotuning,
the allocator), then K timed runs between torch.cuda.synchronize() calls (K = 0: enough for
about 3 s, 2 to 1000).  Memory: torch.cuda.max_memory_allocated() over warm-up and timed runs
after reset_peak_memory_stats() (weights, gradients and Adam state included); 0 on the CPU.

--json prints one line on stdout:
    {"impl": "pytorch", "model", "mode", "device", "precision", "batch", "iters", "img_per_s",
     "ms_per_iter", "memory_bytes", "params", "torch", "device_name"}
Exit status: 0; 2 for bad options; 3 when the device ran out of memory; 1 otherwise.
"""
import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import edm2_torch as E  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def is_oom(exc):
    oom = getattr(torch.cuda, 'OutOfMemoryError', None)
    return (oom is not None and isinstance(exc, oom)) or 'out of memory' in str(exc).lower()


def build_net(key, precision, device, seed):
    cfg = E.PRESETS[key]
    use_fp16 = precision == 'fp16'
    # build directly on the device where torch can (2.x: torch.device is a context manager)
    if device.type == 'cuda' and hasattr(torch.device, '__enter__'):
        with device:
            net = E.build(cfg, use_fp16=use_fp16)
    else:
        net = E.build(cfg, use_fp16=use_fp16).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    E.randomize_(net, generator=g)
    return net, cfg


def random_batch(cfg, batch, device, seed):
    g = torch.Generator(device=device).manual_seed(seed + 1)
    B, C, R, L = batch, cfg['img_channels'], cfg['img_resolution'], cfg['label_dim']
    images = torch.randn([B, C, R, R], device=device, generator=g) * 0.5
    labels = None
    if L:
        labels = torch.zeros([B, L], device=device)
        labels[torch.arange(B, device=device), torch.randint(0, L, (B,), device=device, generator=g)] = 1
    return images, labels, g


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_runs(fn, device, iters, warmup):
    """Warm-up, then `iters` timed runs (0: enough for about 3 s, 2 to 1000)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if iters == 0:
        t0 = time.perf_counter()
        fn()
        sync(device)
        one = time.perf_counter() - t0
        iters = min(max(int(3.0 / one) if one > 0 else 10, 2), 1000)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return iters, time.perf_counter() - t0


def run(args):
    key = E.preset_key(args.preset)
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('bench_torch_gpu.py: --device=cuda: torch.cuda.is_available() is False '
                             f'(torch {torch.__version__}, built for CUDA {torch.version.cuda})')
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        if hasattr(torch.backends.cuda.matmul, 'allow_fp16_reduced_precision_reduction'):
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    elif args.precision == 'fp16':
        raise SystemExit('bench_torch_gpu.py: --precision=fp16 runs the U-Net in fp16 on CUDA only '
                         '(the reference does the same); use --precision=fp32 on the CPU')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    net, cfg = build_net(key, args.precision, device, args.seed)
    params, _ = E.count_params(net)
    tr = E.TRAINING[key]
    images, labels, g = random_batch(cfg, args.batch, device, args.seed)
    losses = []

    if args.mode == 'forward':
        net.eval()
        sigma = (tr['P_mean'] + tr['P_std'] * torch.randn([args.batch], device=device, generator=g)).exp()
        x = images + torch.randn(images.shape, device=device, generator=g) * sigma.reshape(-1, 1, 1, 1)

        def work():
            with torch.no_grad():
                D, logvar = net(x, sigma, labels, return_logvar=True)
            return D, logvar
    elif args.mode == 'sample':
        net.eval()
        sigmas = E.heun_sigmas(args.steps)
        shape = images.shape

        def work():
            with torch.no_grad():
                x = torch.randn(shape, device=device, generator=g) * sigmas[0]
                for i in range(args.steps):
                    x = E.heun_step(net, x, sigmas[i], sigmas[i + 1], labels, last=i == args.steps - 1)
            return x
    else:
        opt = E.make_adam(net, lr=args.lr)

        def work():
            losses.append(E.train_step(net, opt, images, labels, P_mean=tr['P_mean'], P_std=tr['P_std'],
                                       sigma_data=tr['sigma_data']))
            del losses[:-1]  # keep the last loss only (no host sync inside the timed loop)

    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    iters, elapsed = time_runs(work, device, args.iters, args.warmup)
    memory = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else 0
    finite = True
    if args.mode == 'forward':
        D, logvar = work()
        finite = bool(torch.isfinite(D).all() and torch.isfinite(logvar).all())
    elif args.mode == 'sample':
        finite = bool(torch.isfinite(work()).all())
    elif losses:
        finite = bool(torch.isfinite(losses[-1]))
    if not finite:
        log('bench_torch_gpu.py: warning: non-finite output (random weights); the timing stands')
    return {
        'impl': 'pytorch',
        'model': E.MODEL_NAMES[key],
        'mode': args.mode,
        'device': device.type,
        'precision': args.precision,
        'batch': args.batch,
        'iters': iters,
        'img_per_s': round(args.batch * iters / elapsed, 4),
        'ms_per_iter': round(1000 * elapsed / iters, 4),
        'memory_bytes': int(memory),
        'params': params,
        'torch': torch.__version__,
        'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--preset', default='img512-xs', help='img512-xs, img512-s or tiny (default img512-xs)')
    ap.add_argument('--mode', choices=['forward', 'train', 'sample'], default='forward')
    ap.add_argument('--steps', type=int, default=32, help='--mode=sample: the sampler\'s steps (default 32)')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    ap.add_argument('--precision', choices=['fp16', 'fp32'], default='fp16')
    ap.add_argument('--iters', type=int, default=0, help='timed runs (0: enough for about 3 s)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed runs first (default 2 on cuda, 1 on cpu)')
    ap.add_argument('--lr', type=float, default=1e-4, help='Adam learning rate in train mode (edmc bench: 1e-4)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    ap.add_argument('--tf32', action='store_true', help='allow TF32 (off, as in the reference)')
    ap.add_argument('--no-cudnn-benchmark', action='store_true', help='cuDNN autotuning off')
    ap.add_argument('--json', action='store_true', help='one JSON line on stdout')
    args = ap.parse_args(argv)
    try:
        E.preset_key(args.preset)
    except ValueError as e:
        ap.error(str(e))
    if args.batch < 1 or args.iters < 0 or args.steps < 2:
        ap.error('--batch must be >= 1, --iters >= 0 and --steps >= 2')
    if args.warmup is None:
        args.warmup = 2 if args.device == 'cuda' else 1
    try:
        r = run(args)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if is_oom(e):
            log(f'bench_torch_gpu.py: out of memory: {args.preset} {args.mode} batch {args.batch}: '
                f'{str(e).splitlines()[0]}')
            return 3
        raise
    if args.json:
        print(json.dumps(r), flush=True)
    else:
        print(f'{r["model"]}: {r["mode"]}, pytorch {r["torch"]} {r["device"]} {r["precision"]} '
              f'({r["device_name"]}), batch {r["batch"]}, {r["iters"]} runs: {r["img_per_s"]:.2f} images/s, '
              f'{r["ms_per_iter"]:.1f} ms/run; memory {r["memory_bytes"] / 2**20:.1f} MiB; '
              f'{r["params"]} parameters')
    return 0


if __name__ == '__main__':
    sys.exit(main())
