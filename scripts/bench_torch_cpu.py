#!/usr/bin/env python3
"""CPU forward-pass throughput of the EDM2 denoiser in PyTorch (float32, eval, no_grad).

Random weights (raw N(0,1), gains in [0.5,1.5)), random inputs. Prints one machine-readable line
    torch_cpu img_per_s=<float> batch=<B> threads=<T> preset=<p>
followed by a human-readable summary.
"""
import argparse
import os
import signal
import sys
import time



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--preset', choices=['tiny', 'xs'], default='tiny')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--omp-wait', choices=['default', 'passive', 'active'], default='default',
                    help='set OMP_WAIT_POLICY before torch loads (on this 2-vCPU VM, passive avoids '
                         'a large slowdown of big OpenMP ops at 2 threads but slows small models)')
    args = ap.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet exit when piped into `head`
    if args.omp_wait != 'default':
        os.environ['OMP_WAIT_POLICY'] = args.omp_wait.upper()
    # torch is imported only now so that OMP_WAIT_POLICY takes effect.
    global torch, E
    import torch
    sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import edm2_torch as E

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    cfg = E.PRESETS[args.preset]
    net = E.randomize_(E.build(cfg), generator=g).eval()

    B, C, R, L = args.batch, cfg['img_channels'], cfg['img_resolution'], cfg['label_dim']
    sigma = torch.exp(-0.4 + 1.0 * torch.randn(B, generator=g))  # log-normal, P_mean -0.4, P_std 1.0
    x = torch.randn(B, C, R, R, generator=g) * (sigma.reshape(-1, 1, 1, 1) ** 2 + 0.25).sqrt()
    labels = torch.zeros(B, L)
    labels[torch.arange(B), torch.randint(0, L, (B,), generator=g)] = 1

    with torch.no_grad():
        for _ in range(args.warmup):
            net(x, sigma, labels, return_logvar=True)
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            D, lv = net(x, sigma, labels, return_logvar=True)
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(D).all() and torch.isfinite(lv).all()
    total = sum(times)
    ips = B * len(times) / total
    print(f'torch_cpu img_per_s={ips:.4f} batch={B} threads={args.threads} preset={args.preset}')
    print(f'# EDM2 {args.preset} forward, torch {torch.__version__} CPU fp32: {ips:.2f} img/s '
          f'(mean {1e3 * total / len(times):.1f} ms/batch, best {1e3 * min(times):.1f} ms, '
          f'{args.iters} iters after {args.warmup} warmup, {args.threads} threads, '
          f'OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "unset")}, '
          f'{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
