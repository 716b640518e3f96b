#!/usr/bin/env python3
"""CPU throughput of the EDM2 denoiser in PyTorch (float32).

--mode forward: the denoiser's forward pass (eval, no_grad), as `edmc bench`.
--mode train:   one training step as `edmc train` takes it (EDM2-SPEC §4): σ = exp(P_mean + P_std·n),
                noisy input, the network in training mode (forced weight normalisation), the loss
                Σ λ(σ)/exp(u)·(D − y)² + u over all elements divided by the batch size, backward,
                non-finite gradients zeroed, Adam (β = 0.9, 0.99, ε = 1e-8, lr 0.01).

Random weights (raw N(0,1), gains in [0.5,1.5)), random inputs. Prints one machine-readable line
    torch_cpu img_per_s=<float> batch=<B> threads=<T> preset=<p> mode=<m>
followed by a human-readable summary.
"""
import argparse
import os
import signal
import sys
import time



def edm2_loss(net, images, labels, g, P_mean=-0.4, P_std=1.0, sigma_data=0.5):
    """EDM2-SPEC §4: the scalar optimised, Σ over all elements / batch size."""
    B = images.shape[0]
    sigma = torch.exp(P_mean + P_std * torch.randn(B, 1, 1, 1, generator=g))
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    noise = torch.randn(images.shape, generator=g) * sigma
    D, logvar = net(images + noise, sigma, labels, return_logvar=True)
    loss = (weight / logvar.exp()) * (D - images) ** 2 + logvar
    return loss.sum() / B


def train_steps(net, args, g):
    """Times `iters` training steps (after `warmup`) on one fixed random batch."""
    cfg = E.PRESETS[args.preset]
    B, C, R, L = args.batch, cfg['img_channels'], cfg['img_resolution'], cfg['label_dim']
    images = torch.randn(B, C, R, R, generator=g) * 0.5
    labels = torch.zeros(B, L)
    labels[torch.arange(B), torch.randint(0, L, (B,), generator=g)] = 1
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    times = []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = edm2_loss(net, images, labels, g)
        loss.backward()
        for p in net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(loss)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--preset', choices=['tiny', 'xs'], default='tiny')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--mode', choices=['forward', 'train'], default='forward')
    ap.add_argument('--omp-wait', choices=['default', 'passive', 'active'], default='default',
                    help='set OMP_WAIT_POLICY before torch loads (on this 2-vCPU VM, passive avoids '
                         'a large slowdown of big OpenMP ops at 2 threads but slows small models)')
    ap.add_argument('--cores', type=int, default=0,
                    help='run on the first CORES of the CPUs this process may use (0: all); with --threads 2 '
                         '--cores 1 PyTorch takes its multi-thread paths (oneDNN for 1x1 convolutions, which '
                         'at one thread it sends through its slower native kernel) on one core')
    args = ap.parse_args(argv)
    if args.cores > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
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

    if args.mode == 'train':
        c0 = time.process_time()
        times = train_steps(net, args, g)
        cpu = (time.process_time() - c0) * args.iters / (args.iters + args.warmup)  # approx.: warm-up steps excluded
    else:
        with torch.no_grad():
            for _ in range(args.warmup):
                net(x, sigma, labels, return_logvar=True)
            times = []
            c0 = time.process_time()
            for _ in range(args.iters):
                t0 = time.perf_counter()
                D, lv = net(x, sigma, labels, return_logvar=True)
                times.append(time.perf_counter() - t0)
            cpu = time.process_time() - c0
        assert torch.isfinite(D).all() and torch.isfinite(lv).all()
    total = sum(times)
    ips = B * len(times) / total
    cpu_ips = B * len(times) / cpu if cpu > 0 else 0
    print(f'torch_cpu img_per_s={ips:.4f} cpu_img_per_s={cpu_ips:.4f} batch={B} threads={args.threads} '
          f'cores={args.cores or len(os.sched_getaffinity(0))} preset={args.preset} mode={args.mode}')
    print(f'# EDM2 {args.preset} {args.mode}, torch {torch.__version__} CPU fp32: {ips:.2f} img/s '
          f'(mean {1e3 * total / len(times):.1f} ms/batch, best {1e3 * min(times):.1f} ms, '
          f'{args.iters} iters after {args.warmup} warmup, {args.threads} threads, '
          f'OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "unset")}, '
          f'{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
