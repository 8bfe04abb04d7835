"""Benchmark: whole-stack inference (method step 4) of a 13 x 1024 x 1024 stack, measured in one run: the network
forward alone (the same number of sliding windows, nothing else) against everything else (composite, window
blending, HoVer-Net post-processing, 3D integration), and peak memory.

    python benchmarks/bench_inference.py                          # full width, 13 x 1024 x 1024, GPU if present
    python benchmarks/bench_inference.py --width 0.125 --size 512 # a quick CPU run
    python benchmarks/bench_inference.py --checkpoint models/model.pt  # a trained model (realistic detections)

Goal on a GPU: everything else <= the forward time (end to end <= 2x forward). Peak memory should not grow with Z
beyond the stack and its outputs: run with ``--z 4`` and ``--z 13`` and compare "working memory".
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from lecl_transforms.data.synthetic import REGIMES, generate_stack
from lecl_transforms.inferers import SliceHoVerNetInferer
from lecl_transforms.inferers.slice_inferer import autocast_dtype
from lecl_transforms.networks import HoVerNetSCL, load_model
from lecl_transforms.transforms import LinkSlices


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def windows_per_slice(size: int, patch: int, overlap: float) -> int:
    step = max(1, int(patch * (1 - overlap)))
    per_axis = 1 if size <= patch else math.ceil((size - patch) / step) + 1
    return per_axis * per_axis


def forward_alone(network, n_windows: int, batch: int, patch: int, device, amp: bool) -> float:
    """The network on ``n_windows`` windows in batches of ``batch``: what the sliding windows cost at the least."""
    x = torch.rand(batch, 3, patch, patch, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
        network(x)  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(math.ceil(n_windows / batch)):
            network(x)
        sync(device)
    return time.perf_counter() - start


def _write_stack(path: str, size: int, n_z: int) -> None:
    cfg = replace(REGIMES["dense"], size_yx=size, z_slices=(n_z, n_z))
    np.save(path, generate_stack(cfg, seed=0).image.astype(np.float32))


def load_stack(size: int, n_z: int) -> torch.Tensor:
    """The dense synthetic stack (2, Z, Y, X), generated in a child process (so its memory does not count in this
    process's peak) and kept in the temp folder for later runs."""
    path = os.path.join(tempfile.gettempdir(), f"lecl_bench_stack_{size}_{n_z}.npy")
    if not os.path.isfile(path):
        child = multiprocessing.get_context("spawn").Process(target=_write_stack, args=(path, size, n_z))
        child.start()
        child.join()
    return torch.from_numpy(np.load(path))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--z", type=int, default=13)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch", type=int, default=8)
    parser.add_argument("--slice-batch", type=int, default=4)
    parser.add_argument("--checkpoint", help="a trained model (else random weights at --width)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    spacing = REGIMES["dense"].spacing()
    stack = load_stack(args.size, args.z)  # (2, Z, Y, X)
    if args.checkpoint:
        network, description = load_model(args.checkpoint, device)
        patch = description.patch_size
    else:
        torch.manual_seed(0)
        network, patch = HoVerNetSCL(width=args.width).to(device).eval(), args.patch
    baseline = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_windows = windows_per_slice(args.size, patch, args.overlap) * args.z
    print(f"stack 2 x {args.z} x {args.size} x {args.size}, width {getattr(network, 'width', args.width)}, "
          f"patch {patch}, overlap {args.overlap}: {n_windows} windows; {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, amp {amp}")
    forward = forward_alone(network, n_windows, args.sw_batch, patch, device, amp)
    inferer = SliceHoVerNetInferer(roi_size=patch, overlap=args.overlap, sw_batch_size=args.sw_batch,
                                   slice_batch=args.slice_batch, amp=amp)
    sync(device)
    start = time.perf_counter()
    out = inferer(stack, network)
    nuclei = LinkSlices()(out["instances"], out["slice_class"], out["slice_score"], spacing)
    sync(device)
    total = time.perf_counter() - start
    other = total - forward
    stack_mb = stack.numel() * 4 / 2**20
    outputs_mb = (out["instances"].nbytes + nuclei.labels.nbytes + nuclei.labels.size) / 2**20
    working = peak_rss_mb() - baseline
    print(f"  network forward alone:   {forward:8.2f} s")
    print(f"  end to end:              {total:8.2f} s ({len(nuclei.id)} nuclei; inferer: network+windows "
          f"{out['timing']['network']:.2f} s, post-processing {out['timing']['postprocess']:.2f} s)")
    print(f"  everything else:         {other:8.2f} s = {other / forward:.2f} x forward; end to end = "
          f"{total / forward:.2f} x forward")
    print(f"  memory: stack {stack_mb:.0f} MB, outputs {outputs_mb:.0f} MB, peak RSS growth during inference "
          f"{working:.0f} MB" + (f", GPU peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
                                 if device.type == "cuda" else ""))
    return {"forward_s": forward, "total_s": total, "other_s": other, "nuclei": int(len(nuclei.id)),
            "peak_growth_mb": working}


if __name__ == "__main__":
    main()
