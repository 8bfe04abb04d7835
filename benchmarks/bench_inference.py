"""Benchmark: whole-stack inference (method step 4) of a 13 x 1024 x 1024 stack, measured in one run: the network
forward alone (the same number of sliding windows, nothing else) against everything else (composite, window
blending, HoVer-Net post-processing, 3D integration), and peak memory.

    python benchmarks/bench_inference.py                          # full width, 13 x 1024 x 1024, GPU if present
    python benchmarks/bench_inference.py --width 0.125 --size 512 # a quick CPU run
    python benchmarks/bench_inference.py --checkpoint models/model.pt  # a trained model (realistic detections)
    python benchmarks/bench_inference.py --size 256 --z 2 --width 0.125 --zoo-slices 1  # smallest useful run

Goal on a GPU: everything else <= the forward time (end to end <= 2x forward). Peak memory should not grow with Z
beyond the stack and its outputs: run with ``--z 4`` and ``--z 13`` and compare "working memory".

``--zoo`` (on by default; ``--no-zoo`` to skip) also times MONAI's model-zoo HoVer-Net pipeline in the same run on
the first ``--zoo-slices`` slices of the SAME stack, as the same 3-channel composites LECL feeds its network (made
before the timer: the zoo's own preprocessing would be a ScaleIntensityRange), slice by slice as the zoo's
``inference.json`` runs it (batch 1): MONAI ``HoVerNet(mode="fast", in_channels=3, out_classes=3,
decoder_padding=True)`` at full width (MONAI's only width; LECL's weights when LECL's network is full width too,
else random), ``SlidingWindowHoVerNetInferer`` (the zoo's constant blending, LECL's window, overlap and window
batch; with decoder padding the output fills the window, so no extra input padding), fp16 autocast on CUDA (the
zoo evaluator's ``amp``), then ``HoVerNetInstanceMapPostProcessingd`` + ``HoVerNetNuclearTypePostProcessingd``.
Their parameters are MONAI's defaults, the ones LECL's post-processing uses, so that with shared weights both do
the same work (the zoo's ``inference.json`` sets sobel 3 / marker threshold 0.7 for its own trained model). Its
time per slice is extrapolated from the timed slices. LECL's per-slice time is its end to end (composite, windows,
post-processing, 3D linking) / Z, so the comparison charges LECL with more steps than the zoo.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from lecl_transforms.data.synthetic import REGIMES, generate_stack
from lecl_transforms.inferers import SliceHoVerNetInferer
from lecl_transforms.inferers.slice_inferer import autocast_dtype
from lecl_transforms.networks import EXTRA_STATE_KEY, HoVerNetSCL, load_model
from lecl_transforms.transforms import LinkSlices, MaxIntensityProjection


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
    """The network on ``n_windows`` windows in batches of ``batch`` (the last one partial, not padded to ``batch``:
    a small run would otherwise time several times the windows it has): what the sliding windows cost at the
    least."""
    sizes = [batch] * (n_windows // batch) + ([n_windows % batch] if n_windows % batch else [])
    x = torch.rand(batch, 3, patch, patch, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
        for size in sorted(set(sizes)):
            network(x[:size])  # warm-up, each batch shape once
        sync(device)
        start = time.perf_counter()
        for size in sizes:
            network(x[:size])
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


def zoo_network(network, device: torch.device) -> tuple[torch.nn.Module, str]:
    """MONAI's HoVerNet as the zoo pipeline runs it (fast mode, decoder padding so the output fills the window,
    3 classes), full width; with LECL's weights when LECL's network is full width (the state dicts match)."""
    from monai.networks.nets import HoVerNet

    torch.manual_seed(0)
    zoo = HoVerNet(mode="fast", in_channels=3, out_classes=3, decoder_padding=True)
    weights = "random weights"
    if float(getattr(network, "width", 0.0)) == 1.0:
        state = {k: v for k, v in network.state_dict().items()
                 if not k.startswith("projection_head.") and k != EXTRA_STATE_KEY}  # LECL's own keys
        try:
            zoo.load_state_dict(state)
            weights = "LECL's weights"
        except RuntimeError:  # another architecture (e.g. other classes): keep the random weights
            pass
    return zoo.to(device).eval(), weights


def zoo_pipeline(slices: torch.Tensor, zoo: torch.nn.Module, patch: int, overlap: float, sw_batch: int,
                 device: torch.device, amp: bool) -> dict:
    """The zoo's per-image inference on ``slices`` ``(n, 3, Y, X)`` (composites, on ``device``), one slice at a
    time: sliding windows, then MONAI's instance-map and nuclear-type post-processing. Returns seconds for the
    network + windows and for the post-processing, and the instances found per slice."""
    from monai.apps.pathology.inferers import SlidingWindowHoVerNetInferer
    from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessingd, HoVerNetNuclearTypePostProcessingd

    inferer = SlidingWindowHoVerNetInferer(roi_size=patch, sw_batch_size=sw_batch, overlap=overlap,
                                           padding_mode="constant", cval=0, sw_device=device, device=device)
    instance_map = HoVerNetInstanceMapPostProcessingd()
    nuclear_type = HoVerNetNuclearTypePostProcessingd()
    size = slices.shape[-1]
    if device.type == "cuda":  # warm-up (cuDNN algorithms for this window batch); on a CPU it is negligible
        warm = torch.rand(min(sw_batch, windows_per_slice(size, patch, overlap)), 3, patch, patch, device=device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            zoo(warm)
    timing, instances = {"network": 0.0, "postprocess": 0.0}, []
    with torch.inference_mode(), warnings.catch_warnings():
        # MONAI's own deprecation notices inside these calls (tensor indexing, skimage min_size): not ours to fix
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        for image in slices:
            sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                pred = inferer(image[None], zoo)
            item = {key: value[0] for key, value in pred.items()}  # decollated, as the zoo's evaluator does
            sync(device)
            middle = time.perf_counter()
            item = nuclear_type(instance_map(item))
            sync(device)
            timing["network"] += middle - start
            timing["postprocess"] += time.perf_counter() - middle
            instances.append(len(item["instance_info"]))
    return {**timing, "total": timing["network"] + timing["postprocess"], "instances": instances}


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
    parser.add_argument("--zoo", action=argparse.BooleanOptionalAction, default=True,
                        help="also time MONAI's zoo HoVer-Net pipeline on the same slices (default on)")
    parser.add_argument("--zoo-slices", type=int, default=2, help="slices timed for the zoo pipeline (extrapolated)")
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
    print(f"  stacks per second:       end to end {1 / total:.4f}, network only {1 / forward:.4f}")
    result = {"forward_s": forward, "total_s": total, "other_s": other, "nuclei": int(len(nuclei.id)),
              "peak_growth_mb": working}
    if args.zoo:
        result.update(compare_zoo(args, stack, network, patch, out, total, forward, device, amp, inferer.composite))
    return result


def compare_zoo(args, stack: torch.Tensor, network, patch: int, out: dict, total: float, forward: float,
                device: torch.device, amp: bool, composite) -> dict:
    """Time the zoo pipeline on the first ``--zoo-slices`` slices of ``stack`` ``(2, Z, Y, X)``, composited by LECL's
    inferer's ``composite`` with the stack's scale (as LECL's run did), and print per-slice times against LECL's."""
    n_zoo = max(1, min(args.zoo_slices, args.z))
    lo_hi = composite.scale(MaxIntensityProjection()(stack))
    slices = composite.apply(stack[:, :n_zoo].float(), lo_hi).permute(1, 0, 2, 3).contiguous().to(device)
    zoo, weights = zoo_network(network, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = zoo_pipeline(slices, zoo, patch, args.overlap, args.sw_batch, device, amp)
    lecl_slice, lecl_forward_slice = total / args.z, forward / args.z
    zoo_slice = timing["total"] / n_zoo
    lecl_instances = (len(out["slice_class"]) - 1) / args.z
    print(f"zoo pipeline: MONAI HoVerNet fast at full width (MONAI's only width; LECL's is "
          f"{getattr(network, 'width', args.width)}), {weights}, SlidingWindowHoVerNetInferer + "
          f"HoVerNetInstanceMapPostProcessingd + HoVerNetNuclearTypePostProcessingd, {n_zoo} slice(s) timed, "
          f"amp {amp}" + (f", GPU peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
                          if device.type == "cuda" else ""))
    print(f"  per slice, LECL:         {lecl_slice:8.3f} s end to end, {lecl_forward_slice:.3f} s network alone "
          f"({lecl_instances:.1f} slice instances per slice)")
    print(f"  per slice, zoo pipeline: {zoo_slice:8.3f} s end to end (network + windows "
          f"{timing['network'] / n_zoo:.3f} s, post-processing {timing['postprocess'] / n_zoo:.3f} s; "
          f"{sum(timing['instances']) / n_zoo:.1f} instances per slice); x {args.z} slices = "
          f"{zoo_slice * args.z:.2f} s per stack (extrapolated)")
    ratio = zoo_slice / lecl_slice
    verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
    print(f"  end to end per slice: LECL is {verdict} the zoo pipeline")
    return {"zoo_slice_s": zoo_slice, "lecl_slice_s": lecl_slice, "zoo_network_slice_s": timing["network"] / n_zoo,
            "zoo_postprocess_slice_s": timing["postprocess"] / n_zoo, "zoo_instances": timing["instances"],
            "zoo_weights": weights, "zoo_faster_ratio": ratio}


if __name__ == "__main__":
    main()
