"""Writing a synthetic dataset to disk: stacks, clicks, ground truth, a datalist and a manifest."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from ..errors import input_error
from .synthetic import REGIMES, SynthConfig, generate_stack

__all__ = [
    "write_dataset",
    "config_from_options",
    "MANIFEST_NAME",
]


MANIFEST_NAME = "lecl_synth.json"


# -- writing a dataset ---------------------------------------------------------------------------------------------------
def _split(n: int) -> list[str]:
    n_test = max(1, round(0.15 * n)) if n >= 3 else 0
    n_val = max(1, round(0.15 * n)) if n >= 2 else 0
    return ["training"] * (n - n_val - n_test) + ["validation"] * n_val + ["test"] * n_test


def write_dataset(out_dir, n_images: int = 10, seed: int = 0, cfg: SynthConfig = SynthConfig(),
                  overwrite: bool = False, progress: bool = False, regime: str = "custom") -> Path:
    """Generate ``n_images`` stacks into ``out_dir`` with ground truth and a datalist; returns the datalist path.

    Layout: ``images/synth_###.tif`` (ImageJ hyperstack ZCYX uint16 with spacing), ``points/synth_###.csv``
    (``z,y,x,label``), ``ground_truth/synth_###_{instances,marker}.tif`` and ``_nuclei.csv``, ``datalist.json``,
    and ``lecl_synth.json`` (the parameters). Refuses a non-empty folder that is not an earlier synthetic set, and
    an earlier set unless ``overwrite``.
    """
    import tifffile

    out = Path(out_dir)
    if n_images < 1:
        raise input_error("--n-images", f"got {n_images}", "ask for at least one image")
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise input_error(out, "folder exists and holds files that lecl synth did not write",
                              "choose a new or empty --out folder (nothing of yours is overwritten)")
        if not overwrite:
            raise input_error(out, "already holds a synthetic dataset", "pass --overwrite to replace it, or a new --out")
    for sub in ("images", "points", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    iterator = range(n_images)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="lecl synth", unit="image")
    dz, dy, dx = cfg.spacing()
    for i, section in zip(iterator, _split(n_images)):
        stem = f"synth_{i:03d}"
        s = generate_stack(cfg, seed, i)
        tifffile.imwrite(
            out / "images" / f"{stem}.tif", np.ascontiguousarray(s.image.transpose(1, 0, 2, 3)), imagej=True,
            resolution=(1 / dx, 1 / dy), metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"},
        )
        tifffile.imwrite(out / "ground_truth" / f"{stem}_instances.tif", s.instances, imagej=True,
                         metadata={"axes": "ZYX"})
        tifffile.imwrite(out / "ground_truth" / f"{stem}_marker.tif", s.marker_mask.astype(np.uint8), imagej=True,
                         metadata={"axes": "ZYX"})
        _write_csv(out / "points" / f"{stem}.csv", ["z", "y", "x", "label"], s.points().tolist())
        cols = list(s.nuclei[0].keys()) if s.nuclei else ["id"]
        _write_csv(out / "ground_truth" / f"{stem}_nuclei.csv", cols, [[n[c] for c in cols] for n in s.nuclei])
        datalist[section].append({
            "image": f"images/{stem}.tif",
            "points": f"points/{stem}.csv",
            "instances": f"ground_truth/{stem}_instances.tif",
            "marker_mask": f"ground_truth/{stem}_marker.tif",
            "nuclei": f"ground_truth/{stem}_nuclei.csv",
        })
    datalist = {k: v for k, v in datalist.items() if v}
    datalist["description"] = f"LECL synthetic 3D IF stacks ({regime}), seed {seed}"
    datalist["spacing"] = list(cfg.spacing())
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2) + "\n")
    manifest = {"generator": "lecl synth", "regime": regime, "seed": seed, "n_images": n_images, "config": asdict(cfg)}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out / "datalist.json"


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def config_from_options(regime: str = "clean", **overrides) -> SynthConfig:
    """A preset from :data:`REGIMES` with the given fields replaced (``None`` values are ignored)."""
    if regime not in REGIMES:
        raise input_error("--regime", f"unknown regime '{regime}'", f"choose one of {sorted(REGIMES)}")
    known = {f.name for f in fields(SynthConfig)}
    bad = [k for k in overrides if k not in known]
    if bad:
        raise input_error("synth options", f"unknown option(s) {bad}", f"use fields of SynthConfig: {sorted(known)}")
    return replace(REGIMES[regime], **{k: v for k, v in overrides.items() if v is not None})
