"""``lecl prepare``: from stacks + clicks to EMIP/MIP images, weak labels, instances, per-nucleus z-ranges and a QC
picture, through the same MONAI ``Compose`` pipeline the bundle configs use."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from monai.transforms import Compose

from ..data.datalist import load_datalist
from ..errors import input_error
from ..transforms.compose import pseudo_label_transforms
from ..transforms.functional import slice_ranges
from ..transforms.rules import resolve_rules
from .visualize import composite_rgb, draw_mask_edges, draw_points, save_png, side_by_side

__all__ = ["prepare_one", "prepare_datalist", "output_paths", "stem_of", "cell_marker_scores",
           "MANIFEST_NAME", "OUTPUT_SUFFIXES"]

MANIFEST_NAME = "lecl_prepare.json"
OUTPUT_SUFFIXES = ("_emip.tif", "_mip.tif", "_nuclei.csv", "_labels.tif", "_instances.tif", "_qc.png")
NUCLEI_COLUMNS = ["id", "z", "y", "x", "label", "z_start", "z_stop"]


def stem_of(path) -> str:
    """File name without its image/CSV extension (``a.ome.tif`` -> ``a``, ``b.nii.gz`` -> ``b``)."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def output_paths(out_dir, stem: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {suffix[1:].split(".")[0]: out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES}


def _write_tiff(path: Path, array: np.ndarray, axes: str, spacing_yx=None) -> None:
    import tifffile

    kwargs = {}
    if spacing_yx is not None:
        kwargs = dict(resolution=(1 / spacing_yx[1], 1 / spacing_yx[0]))
    metadata = {"axes": axes, **({"unit": "um"} if spacing_yx is not None else {})}
    tifffile.imwrite(path, np.ascontiguousarray(array), imagej=True, metadata=metadata, **kwargs)


def cell_marker_scores(projection, instances, n: int) -> np.ndarray:
    """Mean marker (channel 1 of a ``(2, Y, X)`` projection) per nucleus over its instance pixels, ``(n,)``;
    ``instances`` ``(Y, X)`` or ``(1, Y, X)`` with ids ``1..n``."""
    projection, ids = np.asarray(projection), np.asarray(instances).reshape(-1)
    area = np.bincount(ids, minlength=n + 1)[1:]
    total = np.bincount(ids, weights=projection[1].ravel(), minlength=n + 1)[1:]
    return total / np.maximum(area, 1)


def qc_image(d: dict) -> np.ndarray:
    """Left: EMIP composite with Voronoi edges (grey), weak-label nucleus contours (white), clicks by class.
    Right: plain MIP composite with the clicks. Orange rings (both panels): nuclei whose marker EMIP removed
    (bright in the MIP, at most half as bright in the EMIP): the false overlaps of a plain projection."""
    emip, mip = np.asarray(d["emip"]), np.asarray(d["mip"])
    cells, instances = np.asarray(d["cells"])[0], np.asarray(d["instances"])[0]
    points, labels = np.asarray(d["points"]), np.asarray(d["point_labels"])
    n = len(points)
    lo, hi = np.percentile(mip[1], [0.5, 99.8])
    emip_score = (cell_marker_scores(emip, instances, n) - lo) / (hi - lo + 1e-6)
    mip_score = (cell_marker_scores(mip, instances, n) - lo) / (hi - lo + 1e-6)
    removed = (mip_score > 0.3) & (emip_score < 0.5 * mip_score)
    left = draw_mask_edges(composite_rgb(emip[0], emip[1]), cells, colour=(90, 90, 90))
    left = draw_mask_edges(left, instances, colour=(255, 255, 255), only_labelled=True)
    right = composite_rgb(mip[0], mip[1])
    panels = []
    for panel in (left, right):
        panel = _rings(panel, points[removed, 1:], (255, 140, 0))
        panels.append(draw_points(panel, points[:, 1:], labels))
    return side_by_side(*panels)


def _rings(rgb: np.ndarray, yx: np.ndarray, colour, radius: float = 7.0) -> np.ndarray:
    from scipy import ndimage

    if len(yx) == 0:
        return rgb
    seeds = np.ones(rgb.shape[:2], bool)
    seeds[yx[:, 0], yx[:, 1]] = False
    distance = ndimage.distance_transform_edt(seeds)
    out = rgb.copy()
    out[(distance >= radius - 0.7) & (distance <= radius + 0.7)] = colour
    return out


def _nuclei_rows(d: dict) -> list[list[int]]:
    points, labels = np.asarray(d["points"]), np.asarray(d["point_labels"])
    ranges = slice_ranges(np.asarray(d["slice_sets"]))
    return [[j + 1, *map(int, points[j]), int(labels[j]), int(ranges[j, 0]), int(ranges[j, 1])]
            for j in range(len(points))]


def prepare_one(image: str, points: str, out_dir, pipeline: Compose, stem: str | None = None) -> dict[str, Path]:
    """Run the pipeline on one stack and write its outputs into ``out_dir``; returns the written paths."""
    d = pipeline({"image": str(image), "points": str(points)})
    paths = output_paths(out_dir, stem or stem_of(image))
    spacing = np.asarray(d["image"].meta["spacing"]) if hasattr(d["image"], "meta") else None
    spacing_yx = tuple(spacing[1:]) if spacing is not None else None
    _write_tiff(paths["emip"], np.asarray(d["emip"], np.float32), "CYX", spacing_yx)
    _write_tiff(paths["mip"], np.asarray(d["mip"], np.float32), "CYX", spacing_yx)
    _write_tiff(paths["labels"], np.asarray(d["label"], np.uint8)[0], "YX", spacing_yx)
    _write_tiff(paths["instances"], np.asarray(d["instances"])[0].astype(np.uint16), "YX", spacing_yx)
    with open(paths["nuclei"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(NUCLEI_COLUMNS)
        writer.writerows(_nuclei_rows(d))
    save_png(paths["qc"], qc_image(d))
    return paths


def _check_out_dir(out_dir: Path, inputs: list[Path], targets: list[Path], overwrite: bool) -> None:
    """Never write into an input folder or over an input; replace earlier outputs only with ``overwrite``."""
    out = out_dir.resolve()
    for src in inputs:
        if src.resolve().parent == out:
            raise input_error(out_dir, f"is the folder of the input {src}",
                              "choose a separate --out folder: lecl prepare never writes beside or over your data")
    resolved_inputs = {p.resolve() for p in inputs}
    earlier: set[str] = set()
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file():
        earlier = set(json.loads(manifest.read_text()).get("files", []))
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise input_error(target, "would overwrite an input", "choose another --out folder")
        if target.exists():
            if not overwrite:
                raise input_error(target, "exists already", "pass --overwrite to replace earlier outputs, or a new --out")
            if target.name not in earlier:
                raise input_error(target, "exists and was not written by lecl prepare",
                                  "choose another --out folder (nothing of yours is overwritten)")


def prepare_datalist(entries: dict[str, list[dict]], out_dir, *, nuclei_channel: int = 0, marker_channel: int = 1,
                     spacing: Sequence[float] | None = None, axes: str | None = None, rules="robust",
                     emip_channels: str = "both", seed: int = 0, overwrite: bool = False,
                     progress: bool = True) -> Path:
    """Prepare every entry (``{section: [{"image", "points"}, ...]}``) into ``out_dir``; returns the path of the
    written ``prepared.json`` datalist (same sections, entries pointing to the outputs)."""
    out_dir = Path(out_dir)
    jobs = [(section, e) for section, items in entries.items() for e in items]
    stems: dict[str, str] = {}
    for section, e in jobs:
        stem = stem_of(e["image"])
        if stem in stems:
            raise input_error(e["image"], f"has the same name '{stem}' as {stems[stem]}",
                              "give every stack a distinct file name")
        stems[stem] = e["image"]
    inputs = [Path(e[k]) for _, e in jobs for k in ("image", "points")]
    targets = [p for stem in stems for p in output_paths(out_dir, stem).values()]
    _check_out_dir(out_dir, inputs, targets + [out_dir / "prepared.json"], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    rules = resolve_rules(rules)
    pipeline = pseudo_label_transforms(nuclei_channel, marker_channel, spacing, axes, rules, emip_channels, seed)
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="lecl prepare", unit="stack")
    prepared: dict[str, list] = {section: [] for section in entries}
    written: list[str] = []
    for section, e in iterator:
        paths = prepare_one(e["image"], e["points"], out_dir, pipeline)
        written += [p.name for p in paths.values()]
        prepared[section].append({
            "image": paths["emip"].name, "mip": paths["mip"].name, "label": paths["labels"].name,
            "instances": paths["instances"].name, "nuclei": paths["nuclei"].name, "qc": paths["qc"].name,
            "source_image": os.path.abspath(e["image"]), "source_points": os.path.abspath(e["points"]),
        })
    parameters = {"nuclei_channel": nuclei_channel, "marker_channel": marker_channel,
                  "spacing": list(spacing) if spacing else None, "axes": axes, "rules": asdict(rules),
                  "emip_channels": emip_channels, "seed": seed}
    datalist = out_dir / "prepared.json"
    datalist.write_text(json.dumps({**prepared, "parameters": parameters}, indent=2) + "\n")
    (out_dir / MANIFEST_NAME).write_text(json.dumps({"files": written + ["prepared.json"]}, indent=2) + "\n")
    return datalist


def entries_from_args(datalist: str | None, image: str | None, points: str | None,
                      sections: Sequence[str] = ("training", "validation", "test")) -> dict[str, list[dict]]:
    """What to prepare: one ``--image``/``--points`` pair, or every datalist entry that has points."""
    if datalist:
        if image or points:
            raise input_error("lecl prepare", "both --datalist and --image/--points given", "use one or the other")
        content = json.loads(Path(datalist).read_text()) if Path(datalist).is_file() else {}
        found = {}
        for section in sections:
            items = content.get(section) if isinstance(content, dict) else None
            if not items:
                continue
            with_points = [i for i, e in enumerate(items) if isinstance(e, dict) and "points" in e]
            if with_points:
                loaded = load_datalist(datalist, section, required=("image",))
                found[section] = [loaded[i] for i in with_points]
        if not found:
            load_datalist(datalist, sections[0])  # raises the precise error (missing file, section, field)
            raise input_error(datalist, "no entry has points", 'add "points" to the entries to prepare')
        return found
    if not (image and points):
        raise input_error("lecl prepare", "nothing to prepare", "give --datalist DATALIST, or --image STACK --points CSV")
    for flag, path in (("--image", image), ("--points", points)):
        if not Path(path).is_file():
            raise input_error(f"{flag} {path}", "file not found", "check the path")
    return {"training": [{"image": image, "points": points}]}
