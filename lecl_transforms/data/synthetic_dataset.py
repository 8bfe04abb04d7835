"""Writing a synthetic dataset to disk: stacks, clicks, ground truth, a datalist and a manifest."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from ..errors import input_error
from ..utils.files import check_out_dir, make_dirs, remove_empty_dirs, remove_stale, write_manifest
from .synthetic import REGIMES, SynthConfig, generate_stack

__all__ = [
    "write_dataset",
    "config_from_options",
    "check_synth_options",
    "MANIFEST_NAME",
]


MANIFEST_NAME = "lecl_synth.json"


#: config field -> the ``lecl synth`` option that sets it, so messages name what the user typed
OPTIONS = {"size_yx": "--size", "pixel_size": "--pixel-size", "anisotropy": "--anisotropy", "photons": "--photons",
           "density": "--density", "haze": "--haze", "positive_fraction": "--positive-fraction",
           "decoy_fraction": "--decoy-fraction", "point_jitter_px": "--jitter", "z_click_error": "--z-click-error",
           "missed_click_rate": "--missed-click-rate", "z_slices": "--z-slices"}
MIN_SIZE, MAX_SIZE = 32, 4096  # below 32 px a nucleus (6-9 px wide) barely fits; above, one stack needs GBs
MAX_DENSITY = 0.1  # nuclei per um^2: denser cannot be placed without overlap (the placement loop would spin)


def check_synth_options(cfg: SynthConfig, n_images: int = 1, seed: int = 0) -> None:
    """Refuse values the generator cannot honour, naming the ``lecl synth`` option and its valid range."""
    def bad(field_or_option, value, valid):
        return input_error(OPTIONS.get(field_or_option, field_or_option), f"got {value}", f"give {valid}")

    if not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise bad("--n-images", n_images, "at least 1 image")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise bad("--seed", seed, "a whole number >= 0 (the same seed gives identical files)")
    if not MIN_SIZE <= cfg.size_yx <= MAX_SIZE:
        raise bad("size_yx", cfg.size_yx, f"a size from {MIN_SIZE} to {MAX_SIZE} pixels (nuclei are 6-9 px wide)")
    lo_hi = tuple(cfg.z_slices)
    if len(lo_hi) != 2 or not 2 <= lo_hi[0] <= lo_hi[1] <= 200:
        raise bad("z_slices", " ".join(map(str, lo_hi)), "MIN MAX with 2 <= MIN <= MAX <= 200")
    for name in ("pixel_size", "anisotropy", "photons"):
        value = getattr(cfg, name)
        if not (0 < value < float("inf")):
            raise bad(name, value, "a number > 0")
    if not 0 < cfg.density <= MAX_DENSITY:
        raise bad("density", cfg.density, f"nuclei per um^2 in (0, {MAX_DENSITY}] (clean 0.0035, dense 0.025)")
    for name in ("haze", "positive_fraction", "decoy_fraction", "z_click_error"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise bad(name, getattr(cfg, name), "a value between 0 and 1")
    if not 0 <= cfg.missed_click_rate < 1:
        raise bad("missed_click_rate", cfg.missed_click_rate, "a value from 0 up to (not including) 1")
    if not 0 <= cfg.point_jitter_px < float("inf"):
        raise bad("point_jitter_px", cfg.point_jitter_px, "a click error >= 0 pixels")
    # a click error wider than a nucleus is not an annotator's slip but a click on another nucleus (or on none)
    largest_radius_px = max(cfg.nucleus_radius_xy) * (1 + cfg.elongation / 2) / cfg.pixel_size
    if cfg.point_jitter_px > largest_radius_px:
        raise input_error("--jitter", f"got {cfg.point_jitter_px:g} px, more than the largest nucleus radius "
                          f"({largest_radius_px:.1f} px at --pixel-size {cfg.pixel_size:g})",
                          f"give a click error from 0 to {largest_radius_px:.1f} px (clicks that leave their nucleus "
                          "are moved onto its nearest pixel)")
    field_um = cfg.size_yx * cfg.pixel_size
    expected = cfg.density * field_um**2
    if round(expected) < 1:
        raise input_error("--density/--size", f"{cfg.density} nuclei per um^2 on a {field_um:g} x {field_um:g} um "
                          f"field is {expected:.2f} nuclei per stack", "raise --density, --size or --pixel-size")


def _no_clicks(stem: str, stack, cfg: SynthConfig):
    placed = len(stack.nuclei)
    if placed:
        return input_error(f"lecl synth: stack {stem}", f"would have no clicks: none of its {placed} nuclei was "
                           f"clicked (--missed-click-rate {cfg.missed_click_rate})",
                           "lower --missed-click-rate, or raise --density or --size")
    return input_error(f"lecl synth: stack {stem}", "would have no clicks: no nucleus fits in it "
                       f"(--size {cfg.size_yx}, --density {cfg.density}, --pixel-size {cfg.pixel_size})",
                       "raise --density or --size, or lower --pixel-size")


# -- writing a dataset -------------------------------------------------------------------------------------------------
def _split(n: int) -> list[str]:
    n_test = max(1, round(0.15 * n)) if n >= 3 else 0
    n_val = max(1, round(0.15 * n)) if n >= 2 else 0
    return ["training"] * (n - n_val - n_test) + ["validation"] * n_val + ["test"] * n_test


def write_dataset(out_dir, n_images: int = 10, seed: int = 0, cfg: SynthConfig = SynthConfig(),
                  overwrite: bool = False, progress: bool = False, regime: str = "custom") -> Path:
    """Generate ``n_images`` stacks into ``out_dir`` with ground truth and a datalist; returns the datalist path.

    Layout: ``images/synth_###.tif`` (ImageJ hyperstack ZCYX uint16 with spacing), ``points/synth_###.csv``
    (``z,y,x,label``), ``ground_truth/synth_###_{instances,marker}.tif`` and ``_nuclei.csv``, ``datalist.json``,
    and ``lecl_synth.json`` (the parameters and the files written). Refuses a non-empty folder that is not an earlier
    synthetic set, and an earlier set unless ``overwrite``. Everything is generated into a hidden staging folder
    first: a failure (bad options, a stack without clicks) leaves ``out_dir`` as it was.
    """

    check_synth_options(cfg, n_images, seed)
    out = Path(out_dir)
    targets = [out / rel for i in range(n_images) for rel in _entry(f"synth_{i:03d}").values()]
    earlier = check_out_dir(out, command="lecl synth", manifest=MANIFEST_NAME, overwrite=overwrite,
                            targets=targets + [out / "datalist.json"])
    created = make_dirs(out)
    stage = Path(tempfile.mkdtemp(prefix=".lecl_synth_", dir=out))
    try:
        files = _write_stacks(stage, n_images, seed, cfg, progress, regime)
        for rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out / rel)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        remove_empty_dirs(created)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    remove_stale(out, earlier, files)
    manifest = {"generator": "lecl synth", "regime": regime, "seed": seed, "n_images": n_images, "config": asdict(cfg),
                "files": files}
    write_manifest(out, MANIFEST_NAME, manifest)  # last: other processes wait for it before reading the datalist
    return out / "datalist.json"


def _entry(stem: str) -> dict[str, str]:
    return {
        "image": f"images/{stem}.tif",
        "points": f"points/{stem}.csv",
        "instances": f"ground_truth/{stem}_instances.tif",
        "marker_mask": f"ground_truth/{stem}_marker.tif",
        "nuclei": f"ground_truth/{stem}_nuclei.csv",
    }


def _write_stacks(out: Path, n_images: int, seed: int, cfg: SynthConfig, progress: bool, regime: str) -> list[str]:
    """Write every stack, its ground truth and the datalist into ``out``; returns the relative paths written."""
    import tifffile

    for sub in ("images", "points", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    iterator = range(n_images)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="lecl synth", unit="image")
    dz, dy, dx = cfg.spacing()
    files = []
    for i, section in zip(iterator, _split(n_images)):
        stem = f"synth_{i:03d}"
        s = generate_stack(cfg, seed, i)
        if len(s.points()) == 0:
            raise _no_clicks(stem, s, cfg)
        entry = _entry(stem)
        tifffile.imwrite(
            out / entry["image"], np.ascontiguousarray(s.image.transpose(1, 0, 2, 3)), imagej=True,
            resolution=(1 / dx, 1 / dy), metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"},
        )
        tifffile.imwrite(out / entry["instances"], s.instances, imagej=True, metadata={"axes": "ZYX"})
        tifffile.imwrite(out / entry["marker_mask"], s.marker_mask.astype(np.uint8), imagej=True,
                         metadata={"axes": "ZYX"})
        _write_csv(out / entry["points"], ["z", "y", "x", "label"], s.points().tolist())
        cols = list(s.nuclei[0].keys()) if s.nuclei else ["id"]
        _write_csv(out / entry["nuclei"], cols, [[n[c] for c in cols] for n in s.nuclei])
        datalist[section].append(entry)
        files += entry.values()
    datalist = {k: v for k, v in datalist.items() if v}
    datalist["description"] = f"LECL synthetic 3D IF stacks ({regime}), seed {seed}"
    datalist["spacing"] = list(cfg.spacing())
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2) + "\n")
    return files + ["datalist.json"]


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
