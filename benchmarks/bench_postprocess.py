"""Benchmark: LECL's vectorised HoVer-Net post-processing against MONAI's on the same network-like outputs.

Synthesises the NP/HV/NC outputs of a HoVer-Net for one slice with many nuclei (touching pairs included, noisy logits
and HV maps), runs MONAI's ``HoVerNetInstanceMapPostProcessingd`` + ``HoVerNetNuclearTypePostProcessingd`` and
``lecl_transforms``' ``hovernet_postprocess`` on them in one run, and prints both times, the speed ratio and the share
of MONAI's instances matched by LECL's at IoU >= 0.5 (vectorised IoU from a contingency table).

    python benchmarks/bench_postprocess.py                          # 1024 x 1024, ~600 nuclei, CPU
    python benchmarks/bench_postprocess.py --size 256 --nuclei 40   # a quick look
    python benchmarks/bench_postprocess.py --device cuda            # also the torch path on the GPU
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from lecl_transforms.transforms.functional import hover_maps
from lecl_transforms.transforms.functional.hovernet_post import hovernet_postprocess


def synthesize(size: int, nuclei: int, n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Ground-truth instances ``(H, W)`` and network-like outputs: NP logits ``(2, H, W)``, HV ``(2, H, W)``, NC logits
    ``(n_classes, H, W)``. Ellipses of radius 4-10 px, every third one with a touching round partner, drawn on their
    bounding boxes only (later ones over earlier ones); logits and HV with smooth noise."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.int32)
    n_seeds = max(1, int(round(nuclei / 4 * 3)))  # each third seed gets a partner: ~nuclei instances in all
    next_id = 1
    for i in range(n_seeds):
        cy, cx = rng.uniform(12, size - 12, 2)
        a, b = rng.uniform(4, 10, 2)
        theta = rng.uniform(0, np.pi)
        shapes = [(cy, cx, a, b, theta)]
        if i % 3 == 0:
            r = rng.uniform(4, 7)
            shapes.append((cy + (a + r - 1) * np.cos(theta), cx + (a + r - 1) * np.sin(theta), r, r, 0.0))
        for y, x, a_, b_, t in shapes:
            y0, y1 = max(int(y - 11), 0), min(int(y + 12), size)
            x0, x1 = max(int(x - 11), 0), min(int(x + 12), size)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            u = (yy - y) * np.cos(t) + (xx - x) * np.sin(t)
            v = -(yy - y) * np.sin(t) + (xx - x) * np.cos(t)
            inside = (u / a_) ** 2 + (v / b_) ** 2 <= 1
            gt[y0:y1, x0:x1][inside] = next_id
            next_id += 1
    # drop nuclei overdrawn down to < 12 px, then renumber 1..n
    sizes = np.bincount(gt.ravel())
    gt[(sizes < 12)[gt]] = 0
    gt = np.unique(gt, return_inverse=True)[1].reshape(gt.shape).astype(np.int32)

    def smooth_noise(shape, sigma, scale):
        return ndimage.gaussian_filter(rng.normal(0, 1, shape), (0, sigma, sigma)) * scale

    fg = (gt > 0).astype(np.float32)
    nucleus = np.stack([2 - 4 * fg, 4 * fg - 2]) + smooth_noise((2, size, size), 1.5, 4.0)
    hv = hover_maps(gt) + smooth_noise((2, size, size), 1.0, 0.3)
    kinds = rng.integers(1, n_classes, gt.max() + 1)
    kinds[0] = 0
    onehot = np.arange(n_classes)[:, None, None] == kinds[gt][None]
    types = 3.0 * onehot + smooth_noise((n_classes, size, size), 1.0, 3.0)
    outputs = {"nucleus_prediction": nucleus, "horizontal_vertical": hv, "type_prediction": types}
    return gt, {k: v.astype(np.float32) for k, v in outputs.items()}


def matched_share(reference: np.ndarray, ours: np.ndarray, threshold: float = 0.5) -> float:
    """Share of ``reference``'s instances with an instance of ``ours`` at IoU >= ``threshold`` (contingency table of
    co-occurring id pairs; IoU > 0.5 pairs are unique, so no assignment is needed)."""
    ref_ids, ref = np.unique(reference, return_inverse=True)
    our_ids, our = np.unique(ours, return_inverse=True)
    ref, our = ref.ravel(), our.ravel()
    n_ref, n_our = len(ref_ids), len(our_ids)
    ref_area, our_area = np.bincount(ref, minlength=n_ref), np.bincount(our, minlength=n_our)
    both = (reference.ravel() > 0) & (ours.ravel() > 0)
    pairs, inter = np.unique(ref[both].astype(np.int64) * n_our + our[both], return_counts=True)
    r, o = pairs // n_our, pairs % n_our
    iou = inter / (ref_area[r] + our_area[o] - inter)
    best = np.zeros(n_ref)
    np.maximum.at(best, r, iou)
    foreground = ref_ids > 0
    return float((best[foreground] >= threshold).mean()) if foreground.any() else 1.0


def run_monai(outputs: dict[str, torch.Tensor]) -> np.ndarray:
    from monai.apps.pathology.transforms.post.dictionary import (
        HoVerNetInstanceMapPostProcessingd,
        HoVerNetNuclearTypePostProcessingd,
    )

    d = HoVerNetInstanceMapPostProcessingd()(dict(outputs))
    d = HoVerNetNuclearTypePostProcessingd()(d)
    return np.asarray(d["instance_map"])[0]


def timed(fn, repeats: int, device: torch.device | None = None):
    best, result = float("inf"), None
    for _ in range(repeats):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="slice height and width (pixels)")
    parser.add_argument("--nuclei", type=int, default=600, help="approximate number of nuclei")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method; the best time is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="also time LECL's torch path here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # skimage's min_size deprecation inside MONAI

    gt, outputs_np = synthesize(args.size, args.nuclei, seed=args.seed)
    outputs = {k: torch.from_numpy(v) for k, v in outputs_np.items()}
    print(f"slice {args.size} x {args.size}, {gt.max()} ground-truth nuclei, torch threads {torch.get_num_threads()}")

    # MONAI's rule (a mask component without marker vanishes), so the maps can be compared pixel for pixel
    ours_fn = lambda: hovernet_postprocess(outputs["nucleus_prediction"], outputs["horizontal_vertical"],  # noqa: E731
                                           outputs["type_prediction"], keep_unmarked=False)[0]
    # warm-up both on a corner (imports, first-call allocations), so the timings compare the steady state
    hovernet_postprocess(*(o[:, :128, :128] for o in outputs.values()))
    run_monai({k: o[:, :128, :128] for k, o in outputs.items()})
    t_ours, det = timed(ours_fn, args.repeats)
    t_monai, monai_map = timed(lambda: run_monai(outputs), args.repeats)

    share = matched_share(monai_map, det.instances)
    identical = np.array_equal(np.unique(monai_map, return_inverse=True)[1].reshape(monai_map.shape), det.instances)
    print(f"MONAI  HoVerNetInstanceMapPostProcessingd + HoVerNetNuclearTypePostProcessingd: {t_monai:8.3f} s"
          f"  ({len(np.unique(monai_map)) - 1} instances)")
    print(f"LECL   hovernet_postprocess (cpu):                                              {t_ours:8.3f} s"
          f"  ({det.n} instances)")
    print(f"speed-up: {t_monai / t_ours:.1f}x   MONAI instances matched at IoU >= 0.5: {100 * share:.1f} %"
          f"   identical instance maps: {identical}")
    t_robust, robust = timed(lambda: hovernet_postprocess(*outputs.values())[0], args.repeats)
    print(f"ground truth recovered at IoU >= 0.5: MONAI {100 * matched_share(gt, monai_map):.1f} %, "
          f"LECL {100 * matched_share(gt, det.instances):.1f} %, LECL keeping unmarked components (default) "
          f"{100 * matched_share(gt, robust.instances):.1f} % in {t_robust:.3f} s")

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("cuda requested but not available: skipped the GPU timing")
            return
        device = torch.device("cuda")
        gpu = {k: v.to(device) for k, v in outputs.items()}
        gpu_fn = lambda: hovernet_postprocess(gpu["nucleus_prediction"], gpu["horizontal_vertical"],  # noqa: E731
                                              gpu["type_prediction"], keep_unmarked=False)[0]
        gpu_fn()  # warm-up (CUDA context, kernels)
        t_gpu, det_gpu = timed(gpu_fn, args.repeats, device)
        print(f"LECL   hovernet_postprocess ({torch.cuda.get_device_name(0)}): {t_gpu:8.3f} s  ({det_gpu.n} instances,"
              f" {100 * matched_share(monai_map, det_gpu.instances):.1f} % of MONAI's matched)   "
              f"speed-up vs MONAI (CPU): {t_monai / t_gpu:.1f}x")


if __name__ == "__main__":
    main()
