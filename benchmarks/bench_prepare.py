"""Benchmark: LECL's vectorised weak-label steps against a naive implementation of the same algorithm.

The naive version is written here the way the published code works: scikit-learn ``KMeans`` over every voxel, then
a Python loop over Voronoi cells that multiplies whole volumes per cell to find each cell's slices and to build the
EMIP. Both run with the paper's literal rules, so they compute the same thing; the script prints both times, the speed
ratio, the share of cells whose slice sets agree, and the time of the default robust rules.

    python benchmarks/bench_prepare.py                      # 13 x 1024 x 1024, 800 nuclei (about 2-4 min on 2 cores)
    python benchmarks/bench_prepare.py --size 256 --nuclei 60   # a quick look
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from lecl_transforms.transforms import RULES, PseudoLabelRules
from lecl_transforms.transforms import functional as P
from lecl_transforms.data import REGIMES, generate_stack


def lecl_steps(image: np.ndarray, points: np.ndarray, spacing, rules: PseudoLabelRules) -> dict:
    """Alg. 1 steps 1-6 and a-e as lecl_transforms computes them (vectorised)."""
    mask = P.nuclei_mask_3d(image[0], points, spacing, rules)
    cells = P.voronoi_cells(points[:, 1:], image.shape[2:])
    sets = P.slice_sets(mask, cells, points, rules)
    emip = P.extended_mip(image, cells, sets)
    return {"sets": sets, "emip": emip, "cells": cells}


def naive_steps(image: np.ndarray, points: np.ndarray, spacing, cells: np.ndarray) -> dict:
    """The same algorithm, written as the published code does (k-means on all voxels, per-cell whole-volume loop)."""
    from sklearn.cluster import KMeans

    from scipy import ndimage

    nuclei8 = P.scale_to_8bit(image[0], "minmax")
    point_map = np.zeros(nuclei8.shape, bool)
    point_map[tuple(points.T)] = True
    sampling = np.asarray(spacing) / spacing[-1]
    distance = np.minimum(ndimage.distance_transform_edt(~point_map, sampling=sampling), 20)
    features = np.stack([nuclei8.ravel() / 10.0, distance.ravel()], axis=1)
    clusters = KMeans(n_clusters=3, random_state=0).fit(features).labels_.reshape(nuclei8.shape)
    overlap = [np.sum((clusters == i) * point_map) for i in range(3)]
    nuclei_idx = int(np.argmax(overlap))
    remaining = [i for i in range(3) if i != nuclei_idx]
    zz, yy, xx = np.mgrid[-4:5, -4:5, -4:5]
    ball = ndimage.binary_dilation(point_map, structure=zz**2 + yy**2 + xx**2 <= 16)
    background = remaining[int(np.argmin([np.sum((clusters == i) * ball) for i in remaining]))]
    mask = clusters != background
    n = len(points)
    sets = np.zeros((n, image.shape[1]), bool)
    projected = np.zeros_like(image)
    for j in range(n):  # one pass over the whole volume per cell
        cell = cells == j + 1
        in_cell = cell[None] * mask
        sets[j] = in_cell.sum(axis=(1, 2)) > 0
        if not sets[j].any():
            sets[j, points[j, 0]] = True
        projected += cell[None, None] * image * sets[j][None, :, None, None]
    return {"sets": sets, "emip": projected.max(axis=1)}


def _time_full_prepare(stack) -> float:
    """The whole ``lecl prepare`` on the stack written as a TIFF: reading, all steps, QC picture, writing."""
    import tempfile
    from pathlib import Path

    import tifffile

    from lecl_transforms.tools.prepare import prepare_datalist

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        dz, dy, dx = stack.spacing
        tifffile.imwrite(tmp / "data" / "stack.tif", np.ascontiguousarray(stack.image.transpose(1, 0, 2, 3)),
                         imagej=True, resolution=(1 / dx, 1 / dy),
                         metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"})
        np.savetxt(tmp / "data" / "points.csv", stack.points(), fmt="%d", delimiter=",", header="z,y,x,label",
                   comments="")
        t0 = time.perf_counter()
        prepare_datalist({"training": [{"image": str(tmp / "data" / "stack.tif"),
                                        "points": str(tmp / "data" / "points.csv")}]}, tmp / "out", progress=False)
        return time.perf_counter() - t0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--slices", type=int, default=13)
    parser.add_argument("--nuclei", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    base = REGIMES["clean"]
    field = (args.size * base.pixel_size) ** 2
    cfg = replace(base, size_yx=args.size, z_slices=(args.slices, args.slices), density=args.nuclei / field)
    t0 = time.perf_counter()
    stack = generate_stack(cfg, args.seed, 0)
    image, points = stack.image.astype(np.float32), stack.points()[:, :3]
    print(f"volume: 2 x {image.shape[1]} x {image.shape[2]} x {image.shape[3]}, {len(points)} nuclei "
          f"(generated in {time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    ours = lecl_steps(image, points, stack.spacing, RULES["paper"])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    robust = lecl_steps(image, points, stack.spacing, RULES["robust"])
    t_robust = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_steps(image, points, stack.spacing, ours["cells"])
    t_naive = time.perf_counter() - t0

    t_full = _time_full_prepare(stack)
    agree = np.mean((ours["sets"] == naive["sets"]).all(axis=1))
    emip_equal = np.mean(ours["emip"] == naive["emip"])
    result = {"naive_s": t_naive, "lecl_paper_s": t_ours, "lecl_robust_s": t_robust,
              "full_prepare_s": t_full, "speedup": t_naive / t_ours, "slice_set_agreement": agree,
              "emip_pixels_equal": emip_equal,
              "robust_mean_slices": robust["sets"].sum(1).mean(), "paper_mean_slices": ours["sets"].sum(1).mean()}
    print(f"naive (sklearn KMeans on all voxels + per-cell loop): {t_naive:8.2f} s")
    print(f"lecl_transforms, paper rules:                         {t_ours:8.2f} s")
    print(f"lecl_transforms, robust rules (default):              {t_robust:8.2f} s")
    print(f"lecl prepare, whole (read, 2D labels, QC, write):     {t_full:8.2f} s")
    print(f"speed ratio naive / lecl (same rules):                {result['speedup']:8.1f} x")
    print(f"cells whose slice sets agree:                         {100 * agree:8.1f} %")
    print(f"EMIP pixels equal:                                    {100 * emip_equal:8.1f} %")
    print(f"mean slices per nucleus: paper {result['paper_mean_slices']:.1f}, robust "
          f"{result['robust_mean_slices']:.1f} of {image.shape[1]}")
    return result


if __name__ == "__main__":
    main()
