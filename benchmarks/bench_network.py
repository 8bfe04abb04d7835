"""Benchmark: one LECL training step (forward, all loss terms incl. pixel contrast, backward, Adam) at full and
compact widths, measured in one run on this machine; prints each time and the speed ratio to full width.

    python benchmarks/bench_network.py                 # 256 x 256, batch 1, widths 1, 0.25, 0.125
    python benchmarks/bench_network.py --size 128 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import torch

from lecl_transforms.losses import LECLLoss
from lecl_transforms.networks import HoVerNetSCL


def step_time(width: float, size: int, batch: int, repeats: int, device: torch.device) -> float:
    torch.manual_seed(0)
    net = HoVerNetSCL(width=width).to(device).train()
    loss_fn = LECLLoss(contrast_start_epoch=0, memory_size=500, proj_dim=net.proj_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    target = {
        "np": (torch.rand(batch, 1, size, size, device=device) > 0.5).float(),
        "hv": torch.rand(batch, 2, size, size, device=device) * 2 - 1,
        "nc": torch.randint(0, 3, (batch, 1, size, size), device=device).float(),
        "ignore": (torch.rand(batch, 1, size, size, device=device) > 0.7).float(),
    }

    def one_step():
        opt.zero_grad()
        loss_fn(net(x), target).backward()
        opt.step()

    one_step()  # warm-up (allocations, memory fill)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25, 0.125])
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"train step, {args.batch} x 3 x {args.size} x {args.size}, {device}, {torch.get_num_threads()} threads")
    times = {w: step_time(w, args.size, args.batch, args.repeats, device) for w in args.widths}
    full = times.get(1.0)
    for w, t in times.items():
        params = sum(p.numel() for p in HoVerNetSCL(width=w).parameters()) / 1e6
        ratio = f"{full / t:6.1f}x faster than full width" if full else ""
        print(f"width {w:<6} {params:6.2f} M parameters  {t:8.3f} s/step  {ratio}")
    return times


if __name__ == "__main__":
    main()
