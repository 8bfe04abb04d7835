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

from ..data.datalist import load_datalist, read_datalist_json
from ..errors import LECLInputError, find_input_error, input_error
from ..transforms.compose import pseudo_label_transforms
from ..transforms.functional import percentile_range, slice_ranges
from ..transforms.rules import resolve_rules
from ..utils.files import check_out_dir, make_dirs, remove_empty_dirs, remove_stale, write_manifest
from ..utils.names import stem_of, unique_stems
from ..data.qc_picture import (MUTED, QC_MAX_SIDE, TEXT, downsampled, draw_rings, legend_line, qc_figure,
                               reduction_step)
from ..visualize import CLASS_COLOURS, composite_rgb, draw_mask_edges, draw_points, save_png

__all__ = ["prepare_one", "prepare_datalist", "output_paths", "cell_marker_scores",
           "MANIFEST_NAME", "OUTPUT_SUFFIXES"]

MANIFEST_NAME = "lecl_prepare.json"
OUTPUT_SUFFIXES = ("_emip.tif", "_mip.tif", "_nuclei.csv", "_labels.tif", "_instances.tif", "_qc.png")
NUCLEI_COLUMNS = ["id", "z", "y", "x", "label", "z_start", "z_stop"]


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


#: colours of the prepare QC picture's marks (the clicks have their class colours, ``visualize.CLASS_COLOURS``)
VORONOI_GREY, PSEUDO_LABEL_WHITE, REMOVED_ORANGE = (90, 90, 90), (255, 255, 255), (255, 140, 0)


def removed_overlaps(d: dict) -> np.ndarray:
    """``(N,)`` bool: the clicked nuclei whose marker the EMIP removed (bright in the plain MIP, at most half as
    bright in the EMIP): the false overlaps of a plain projection (marker from a cell above or below)."""
    emip, mip = np.asarray(d["emip"]), np.asarray(d["mip"])
    instances, n = np.asarray(d["instances"])[0], len(np.asarray(d["points"]))
    lo, hi = percentile_range(mip[1], (0.5, 99.8))
    emip_score = (cell_marker_scores(emip, instances, n) - lo) / (hi - lo + 1e-6)
    mip_score = (cell_marker_scores(mip, instances, n) - lo) / (hi - lo + 1e-6)
    return (mip_score > 0.3) & (emip_score < 0.5 * mip_score)


def qc_image(d: dict, stem: str = "", um_per_px: float | None = None, max_side: int = QC_MAX_SIDE) -> np.ndarray:
    """The prepare QC picture (:func:`~lecl_transforms.data.qc_picture.qc_figure` layout). Left: the EMIP composite
    (what the network trains on) with the Voronoi cell edges (grey), the pseudo-label nucleus outlines (white) and
    the clicks by class (magenta positive, yellow negative). Right: the plain MIP composite with the clicks, for
    comparison. Orange rings (both panels): nuclei whose marker the EMIP removed (:func:`removed_overlaps`).
    ``um_per_px``: ``dx`` for the scale bar (None: none). Fields over ``max_side`` are shown reduced by a whole
    factor (marks drawn at the shown scale)."""
    emip, mip = np.asarray(d["emip"]), np.asarray(d["mip"])
    cells, instances = np.asarray(d["cells"])[0], np.asarray(d["instances"])[0]
    points, labels = np.asarray(d["points"]), np.asarray(d["point_labels"])
    removed = removed_overlaps(d)
    step = reduction_step(mip.shape[1:], max_side)
    yx = points[:, 1:] // step
    left = downsampled(composite_rgb(emip[0], emip[1]), step)
    left = draw_mask_edges(left, cells[::step, ::step], colour=VORONOI_GREY)
    left = draw_mask_edges(left, instances[::step, ::step], colour=PSEUDO_LABEL_WHITE, only_labelled=True)
    right = downsampled(composite_rgb(mip[0], mip[1]), step)
    panels = [draw_points(draw_rings(panel, yx[removed], REMOVED_ORANGE), yx, labels) for panel in (left, right)]
    n, positive = len(labels), int((labels == 2).sum())
    title = (f"{stem}: {n} {'click' if n == 1 else 'clicks'}, {positive} positive, {n - positive} negative; "
             f"EMIP removed the marker of {int(removed.sum())} false overlap(s)")
    header = [[(title.lstrip(": "), TEXT)],
              legend_line([(CLASS_COLOURS[2], "positive click"), (CLASS_COLOURS[1], "negative click"),
                           (PSEUDO_LABEL_WHITE, "pseudo-label nucleus outline"), (VORONOI_GREY, "Voronoi cell edge")]),
              legend_line([(REMOVED_ORANGE, "ring: marker bright in the plain MIP, not in the EMIP (from a cell "
                                            "above/below)")]),
              [("EMIP = each click's Voronoi cell max-projected over its nucleus' own slices (the training input)",
                MUTED)]]
    return qc_figure([(panels[0], "EMIP composite: pseudo-labels and clicks"),
                      (panels[1], "plain MIP composite: marker red, nuclei cyan")], header, um_per_px, step)


def _nuclei_rows(d: dict) -> list[list[int]]:
    points, labels = np.asarray(d["points"]), np.asarray(d["point_labels"])
    ranges = slice_ranges(np.asarray(d["slice_sets"]))
    return [[j + 1, *map(int, points[j]), int(labels[j]), int(ranges[j, 0]), int(ranges[j, 1])]
            for j in range(len(points))]


def prepare_one(image, points, out_dir, pipeline: Compose, stem: str | None = None) -> tuple[dict[str, Path], dict]:
    """Run the pipeline on one stack and write its outputs into ``out_dir``; returns the written paths and the
    spacing the stack was read with (``spacing``, ``spacing_source``)."""
    d = pipeline({"image": str(image), "points": str(points)})  # runs fully before anything of this stack is written
    stem = stem or stem_of(image)
    paths = output_paths(out_dir, stem)
    meta = getattr(d["image"], "meta", {})
    spacing = np.asarray(meta["spacing"], np.float64) if "spacing" in meta else None
    spacing_yx = tuple(spacing[1:]) if spacing is not None else None
    _write_tiff(paths["emip"], np.asarray(d["emip"], np.float32), "CYX", spacing_yx)
    _write_tiff(paths["mip"], np.asarray(d["mip"], np.float32), "CYX", spacing_yx)
    _write_tiff(paths["labels"], np.asarray(d["label"], np.uint8)[0], "YX", spacing_yx)
    _write_tiff(paths["instances"], np.asarray(d["instances"])[0].astype(np.uint16), "YX", spacing_yx)
    with open(paths["nuclei"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(NUCLEI_COLUMNS)
        writer.writerows(_nuclei_rows(d))
    save_png(paths["qc"], qc_image(d, stem,
                                   float(spacing[2]) if spacing is not None else None))
    info = {"spacing": [float(v) for v in spacing] if spacing is not None else None,
            "spacing_source": meta.get("spacing_source")}
    return paths, info


def check_seed(seed) -> None:
    if not 0 <= seed < 2**32:  # sklearn's KMeans takes seeds in [0, 2**32)
        raise input_error("--seed", f"got {seed}", "give a k-means seed from 0 to 4294967295")


def prepare_datalist(entries: dict[str, list[dict]], out_dir, *, nuclei_channel: int = 0, marker_channel: int = 1,
                     spacing: Sequence[float] | None = None, axes: str | None = None, rules="robust",
                     emip_channels: str = "both", seed: int = 0, overwrite: bool = False, progress: bool = True,
                     allow_suspicious_input: bool = False, override_spacing: bool = False,
                     inputs: Sequence = ()) -> Path:
    """Prepare every entry (``{section: [{"image", "points"}, ...]}``) into ``out_dir``; returns the path of the
    written ``prepared.json`` datalist (same sections, entries pointing to the outputs, each with the ``spacing``
    its stack was read with). ``inputs``: other files read (the datalist), kept apart from ``out_dir`` too.

    A stack that fails with an input error does not stop the batch: the others are prepared and listed, then one
    :class:`LECLInputError` names every failed stack."""

    out_dir = Path(out_dir)
    check_seed(seed)
    jobs = [(section, e) for section, items in entries.items() for e in items]
    if not jobs:
        raise input_error("lecl prepare", "nothing to prepare",
                          "give --datalist DATALIST, or --image STACK --points CSV")
    stems = unique_stems(e["image"] for _, e in jobs)
    sources = [Path(e[k]) for _, e in jobs for k in ("image", "points")] + [Path(p) for p in inputs]
    targets = [p for stem in stems for p in output_paths(out_dir, stem).values()] + [out_dir / "prepared.json"]
    rules = resolve_rules(rules)
    pipeline = pseudo_label_transforms(nuclei_channel, marker_channel, spacing, axes, rules, emip_channels, seed,
                                       allow_suspicious_input=allow_suspicious_input,
                                       override_spacing=override_spacing)
    earlier = check_out_dir(out_dir, command="lecl prepare", manifest=MANIFEST_NAME, overwrite=overwrite,
                            inputs=sources, targets=targets)
    created = make_dirs(out_dir)
    planned = sorted({p.name for p in targets} | set((earlier or {}).get("files", [])))
    # listed before writing: an interrupted run can be replaced with --overwrite
    write_manifest(out_dir, MANIFEST_NAME, {"command": "lecl prepare", "complete": False, "files": planned})
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="lecl prepare", unit="stack")
    prepared: dict[str, list] = {section: [] for section in entries}
    written: list[str] = []
    failures: list[tuple[str, LECLInputError]] = []
    for section, e in iterator:
        try:
            paths, info = prepare_one(e["image"], e["points"], out_dir, pipeline)
        except Exception as exc:  # noqa: BLE001 - a bad stack is reported with the others; a bug still raises
            cause = find_input_error(exc)
            if cause is None:
                raise
            failures.append((str(e["image"]), cause))
            continue
        written += [p.name for p in paths.values()]
        prepared[section].append({
            "image": paths["emip"].name, "mip": paths["mip"].name, "label": paths["labels"].name,
            "instances": paths["instances"].name, "nuclei": paths["nuclei"].name, "qc": paths["qc"].name,
            "source_image": os.path.abspath(e["image"]), "source_points": os.path.abspath(e["points"]), **info,
        })
    if not written:  # nothing prepared: leave no trace of this run in a new folder
        if earlier is None:
            (out_dir / MANIFEST_NAME).unlink()
            remove_empty_dirs(created)
        raise failures[0][1] if len(failures) == 1 else _failure_summary(failures, len(jobs), None)
    # the given --spacing is recorded as given; what each stack was read with is its entry's "spacing"
    parameters = {"nuclei_channel": nuclei_channel, "marker_channel": marker_channel,
                  "spacing_given": list(spacing) if spacing else None, "override_spacing": override_spacing,
                  "axes": axes, "rules": asdict(rules), "emip_channels": emip_channels, "seed": seed,
                  "allow_suspicious_input": allow_suspicious_input}
    datalist = out_dir / "prepared.json"
    datalist.write_text(json.dumps({**prepared, "parameters": parameters}, indent=2) + "\n")
    remove_stale(out_dir, earlier, written + ["prepared.json"])
    write_manifest(out_dir, MANIFEST_NAME, {"command": "lecl prepare", "complete": True,
                                            "files": written + ["prepared.json"]})
    if failures:
        raise _failure_summary(failures, len(jobs), datalist)
    return datalist


def _failure_summary(failures, n_jobs: int, datalist: Path | None) -> LECLInputError:
    listed = "".join(f"\n  - {image}: {e.where}: {e.problem}" if e.where != image else f"\n  - {image}: {e.problem}"
                     for image, e in failures)
    done = (f"\n  the other {n_jobs - len(failures)} stack(s) are prepared; {datalist} lists only those"
            if datalist else "")
    fixes = list(dict.fromkeys(e.fix for _, e in failures))
    return input_error("lecl prepare", f"{len(failures)} of {n_jobs} stacks could not be prepared:{listed}{done}",
                       "; ".join(fixes) + " (then run again with --overwrite)")


def entries_from_args(datalist: str | None, image: str | None, points: str | None,
                      sections: Sequence[str] = ("training", "validation", "test")) -> dict[str, list[dict]]:
    """What to prepare: one ``--image``/``--points`` pair, or every datalist entry that has points."""
    if datalist:
        if image or points:
            raise input_error("lecl prepare", "both --datalist and --image/--points given", "use one or the other")
        content = read_datalist_json(datalist) if Path(datalist).is_file() else {}
        found = {}
        for section in sections:
            items = content.get(section) if isinstance(content, dict) else None
            if not items:
                continue
            with_points = [i for i, e in enumerate(items) if isinstance(e, dict) and "points" in e]
            for i in with_points:  # "points": null is a path left out, not "no clicks": say where
                if items[i]["points"] is None:
                    raise input_error(f"{datalist}, {section}[{i}].points", "is null, not a file path",
                                      'write "points": "path/to/clicks.csv", or remove the "points" key to leave '
                                      "this entry out of lecl prepare")
            if with_points:
                loaded = load_datalist(datalist, section, required=("image",))
                found[section] = [loaded[i] for i in with_points]
        if not found:
            load_datalist(datalist, sections[0])  # raises the precise error (missing file, section, field)
            raise input_error(datalist, "no entry has points", 'add "points" to the entries to prepare')
        return found
    if not (image and points):
        raise input_error("lecl prepare", "nothing to prepare",
                          "give --datalist DATALIST, or --image STACK --points CSV")
    for flag, path in (("--image", image), ("--points", points)):
        if not Path(path).is_file():
            raise input_error(f"{flag} {path}", "file not found", "check the path")
    return {"training": [{"image": image, "points": points}]}
