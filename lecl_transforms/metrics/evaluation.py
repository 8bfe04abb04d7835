"""Evaluating a ``lecl predict`` folder against a datalist's clicks (method step 5): reading the prediction CSVs,
the stacks' spacing, per-stack and pooled scores, and ``metrics.json`` / ``metrics.md``. The matching and the
scores themselves are in :mod:`.detection`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.config import PathLike

from ..errors import input_error
from ..utils.files import atomic_path, check_out_files, read_manifest, remove_stale, write_manifest
from ..utils.names import decode_text, stem_of
from .detection import SCORE_NAMES, NucleusCounts, check_settings, counts_from_matches, match_nuclei, scores

__all__ = ["read_prediction_csv", "evaluate_stack", "evaluate_predictions", "write_metrics", "check_metrics_out",
           "write_evaluation_picture", "EVALUATE_MANIFEST", "METRICS_FILES", "EVAL_PICTURE_SUFFIX"]

#: what an evaluation writes into its output folder, and the manifest listing them (so a re-run recognises its own)
METRICS_FILES = ("metrics.json", "metrics.md")
EVALUATE_MANIFEST = "lecl_evaluate.json"
#: each stack's evaluation picture, ``STEM_eval_qc.png``
EVAL_PICTURE_SUFFIX = "_eval_qc.png"


# -- files ------------------------------------------------------------------------------------------------------------
def read_prediction_csv(path: PathLike) -> dict[str, np.ndarray]:
    """A ``STEM_pred.csv`` as arrays: ``zyx`` ``(P, 3)`` float64, ``z_range`` ``(P, 2)`` float64 (``z_start``,
    ``z_stop``), ``label`` ``(P,)`` int64 in {1, 2}, ``id`` ``(P,)`` int64 (the nucleus' id in ``STEM_instances.tif``;
    1..P without a usable ``id`` column), ``centre_slice`` ``(P,)`` int64 or None (without that column). Needs the
    columns ``z, y, x, label``; without ``z_start`` / ``z_stop`` (a plain points CSV) each nucleus spans its
    centroid's nearest slice. A header without rows is a stack with no nucleus found."""
    from ..data.points import POINT_LABELS

    path = Path(path)
    text = decode_text(path.read_bytes(), path, "prediction CSV", "save the CSV as UTF-8")
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise input_error(path, f"not a CSV text file ({e})",
                          "give the STEM_pred.csv that lecl predict wrote") from None
    if not rows:
        raise input_error(path, "empty file (not even a header)",
                          "run lecl predict again: it writes a header even for a stack without nuclei")
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("z", "y", "x", "label") if c not in header]
    if missing:
        raise input_error(path, f"header {rows[0]} lacks column(s) {missing}",
                          "give the STEM_pred.csv that lecl predict wrote (header id,z,y,x,label,...,z_start,z_stop)")
    has_range = "z_start" in header and "z_stop" in header
    names = ["z", "y", "x", *(["z_start", "z_stop"] if has_range else [])]
    width = len(header)
    body = [(r + [""] * (width - len(r)))[:width] for r in rows[1:]]
    table = np.asarray(body, dtype=object).reshape(-1, width)
    try:
        numbers = table[:, [header.index(n) for n in names]].astype(np.float64)
    except ValueError:
        line = next(i + 2 for i, r in enumerate(body) if not _all_numbers([r[header.index(n)] for n in names]))
        raise input_error(f"{path}, line {line}", f"{names} are not all numbers",
                          "write numeric voxel coordinates (lecl predict's own CSV always has them)") from None
    if not np.all(np.isfinite(numbers)):
        line = int(np.flatnonzero(~np.isfinite(numbers).all(axis=1))[0]) + 2
        raise input_error(f"{path}, line {line}", "a coordinate is NaN or infinite", "write finite voxel coordinates")
    words, inverse = np.unique(np.char.lower(np.char.strip(table[:, header.index("label")].astype(str))),
                               return_inverse=True)
    codes = np.asarray([POINT_LABELS.get(w.removesuffix(".0"), 0) for w in words], dtype=np.int64)
    labels = codes[inverse.ravel()] if len(table) else np.zeros(0, np.int64)
    if np.any(labels == 0):
        line = int(np.flatnonzero(labels == 0)[0]) + 2
        raise input_error(f"{path}, line {line}", f"unknown label '{table[line - 2, header.index('label')]}'",
                          "use 1 (negative) or 2 (positive)")
    zyx = numbers[:, :3]
    z_range = numbers[:, 3:5] if has_range else np.repeat(np.rint(zyx[:, :1]), 2, axis=1)
    ids = _whole_numbers(table, header, "id")
    if ids is None or len(np.unique(ids)) != len(ids) or (ids < 1).any():
        ids = np.arange(1, len(table) + 1, dtype=np.int64)
    return {"zyx": zyx, "z_range": z_range, "label": labels, "id": ids,
            "centre_slice": _whole_numbers(table, header, "centre_slice")}


def _whole_numbers(table: np.ndarray, header: list[str], name: str) -> np.ndarray | None:
    """A column of whole numbers as int64, or None when it is absent or not all whole numbers (these columns only
    draw the evaluation picture; the scores never need them)."""
    if name not in header:
        return None
    try:
        values = table[:, header.index(name)].astype(np.float64)
    except ValueError:
        return None
    return values.astype(np.int64) if np.all(np.isfinite(values) & (values == np.rint(values))) else None


def _all_numbers(cells) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def evaluate_stack(
    pred_csv: PathLike, points_csv: PathLike, spacing: Sequence[float], radius_um: float = 3.0, z_tolerance: int = 1,
    shape: Sequence[int] | None = None,
) -> tuple[NucleusCounts, tuple[np.ndarray, np.ndarray]]:
    """Counts of one stack: its ``STEM_pred.csv`` against its points file (``read_points``: CSV ``z,y,x,label`` or a
    point-label volume). ``shape`` ``(Z, Y, X)``: clicks outside the stack are refused (as ``lecl prepare`` does).
    Returns ``(counts, (pred_idx, true_idx))``, the matched rows of the two files (in file order, header and blank
    lines not counted)."""
    counts, _, _, match = _match_stack(pred_csv, points_csv, spacing, radius_um, z_tolerance, shape)
    return counts, match


def _match_stack(pred_csv, points_csv, spacing, radius_um, z_tolerance, shape):
    """:func:`evaluate_stack` keeping what it read: ``(counts, pred (read_prediction_csv), (true_zyx, true_labels),
    (pred_idx, true_idx))``."""
    from ..data.points import read_points

    pred = read_prediction_csv(pred_csv)
    true_zyx, true_labels = read_points(points_csv, shape)
    pred_idx, true_idx = match_nuclei(pred["zyx"], pred["z_range"], true_zyx, spacing, radius_um, z_tolerance)
    counts = counts_from_matches(pred["label"], true_labels, pred_idx, true_idx)
    return counts, pred, (true_zyx, true_labels), (pred_idx, true_idx)


def _header_spacing(path: Path) -> tuple[float, float, float] | None:
    """``(dz, dy, dx)`` in um from a stack's header only (no pixels read), or None when the file does not state all
    three (or cannot be read)."""
    from ..data.reader import nifti_spacing, tiff_spacing

    name = path.name.lower()
    try:
        if name.endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                values = tiff_spacing(tif)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            header = nib.load(str(path)).header
            values = nifti_spacing(header, len(header.get_data_shape()))
        else:
            return None
    except Exception:  # noqa: BLE001 - an unreadable header only means "not stated here"
        return None
    if any(v is None or not v > 0 for v in values):
        return None
    return tuple(float(v) for v in values)


def _stack_spacing(image: Path, pred_dir: Path, stem: str) -> tuple[tuple[float, float, float], str]:
    """Spacing of one stack when none is given: the one ``lecl predict`` used (written into ``STEM_instances.tif``;
    "pixel" there means it had none), else the image's own header."""
    instances = pred_dir / f"{stem}_instances.tif"
    for source, path in (("prediction", instances), ("image", image)):
        if path.is_file():
            found = _header_spacing(path)
            if found is not None:
                return found, f"{source} ({path.name})"
    raise input_error(
        image, "voxel spacing is stated neither in the image's metadata nor in the prediction's instances TIFF",
        "give the spacing used for lecl predict: lecl evaluate --spacing DZ DY DX (micrometres; config key spacing)")


def _stack_shape(image: Path, pred_dir: Path, stem: str) -> tuple[int, int, int] | None:
    """``(Z, Y, X)`` of one stack, for checking its clicks: from ``STEM_instances.tif`` (``lecl predict`` writes it on
    the stack's grid; only its header is read), else from the image itself; None when neither can be read (the
    clicks are then matched unchecked)."""
    instances = pred_dir / f"{stem}_instances.tif"
    if instances.is_file():
        try:
            import tifffile

            with tifffile.TiffFile(instances) as tif:
                shape = tuple(int(v) for v in tif.series[0].shape)
            if len(shape) == 3:
                return shape
        except Exception:  # noqa: BLE001 - an unreadable file here only means "ask the image"
            pass
    try:
        from ..data.reader import IFStackReader

        reader = IFStackReader(min_channels=1, require_spacing=False, check_values=False)
        return tuple(int(v) for v in reader.get_data(reader.read(image))[0].shape[-3:])
    except Exception:  # noqa: BLE001 - e.g. a plain TIFF whose axes only the user knows: matched unchecked
        return None


def evaluate_predictions(
    pred_dir: PathLike, datalist: PathLike, section: str = "test", radius_um: float = 3.0, z_tolerance: int = 1,
    spacing: Sequence[float] | None = None, picture_dir: PathLike | None = None,
) -> dict:
    """Score ``lecl predict``'s output folder against a datalist section's clicks.

    For each entry ``{"image", "points"}`` of ``section``, ``pred_dir/STEM_pred.csv`` (``STEM`` = image file name
    without ``.ome.tif``/``.tif``/``.tiff``/``.nii.gz``/``.nii``) is matched to the entry's points. ``spacing``
    ``(dz, dy, dx)`` um applies to every stack; None takes each stack's from ``STEM_instances.tif`` (the spacing
    prediction used), else from the image's header.

    ``picture_dir``: where to write each stack's ``STEM_eval_qc.png`` (:func:`write_evaluation_picture`, drawn from
    this matching; call :func:`check_metrics_out` with the datalist first); its name is the row's ``qc_picture``.

    Returns ``{"per_stack": [{"image", "stem", "pred_csv", "points", "spacing", "spacing_source", "counts",
    "matches", **scores}], "pooled": scores of the summed counts, "pooled_counts": the summed counts,
    "mean_over_stacks": mean of each per-stack score (``count_rel_error_positive`` over the stacks that have
    positives), "settings": {...}}``; ``matches`` is ``{"pred_row": [...], "true_row": [...]}``, the matched rows of
    the prediction CSV and of the points file (0-based, file order, header not counted), one pair per match.
    Missing prediction files are reported together, in one error.
    """
    from ..data.datalist import load_datalist

    pred_dir, datalist = Path(pred_dir), Path(datalist)
    if spacing is not None:
        spacing = tuple(float(v) for v in check_settings(spacing, radius_um, z_tolerance))
    else:
        check_settings((1.0, 1.0, 1.0), radius_um, z_tolerance)
    if not pred_dir.is_dir():
        raise input_error(pred_dir, "prediction folder not found", "give the --out folder of lecl predict")
    entries = load_datalist(datalist, section, required=("image", "points"))
    failures = _predict_failures(pred_dir)
    stems = [stem_of(e["image"]) for e in entries]
    missing = [(e["image"], pred_dir / f"{s}_pred.csv") for e, s in zip(entries, stems)
               if not (pred_dir / f"{s}_pred.csv").is_file()]
    if missing:
        listed = "; ".join(f"{csv_path.name} (for {image})" + (f", lecl predict failed: {failures[image]}"
                                                              if image in failures else "")
                           for image, csv_path in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise input_error(
            pred_dir, f"{len(missing)} of {len(entries)} prediction file(s) missing: {listed}{more}",
            f"run lecl predict on the datalist's '{section}' section with --out {pred_dir}, or give the folder "
            "that holds those STEM_pred.csv files")

    if picture_dir is not None:  # listed before the first picture: an interrupted run is replaced with --overwrite
        _list_outputs(picture_dir, [*METRICS_FILES, *(f"{s}{EVAL_PICTURE_SUFFIX}" for s in stems)], pred_dir,
                      keep_earlier=True)
    rows, pooled = [], NucleusCounts()
    for entry, stem in zip(entries, stems):
        image, pred_csv = Path(entry["image"]), pred_dir / f"{stem}_pred.csv"
        stack_spacing, source = (spacing, "given") if spacing is not None else _stack_spacing(image, pred_dir, stem)
        counts, pred, truth, match = _match_stack(pred_csv, entry["points"], stack_spacing, radius_um, z_tolerance,
                                                  _stack_shape(image, pred_dir, stem))
        pooled = pooled + counts
        row = {"image": str(image), "stem": stem, "pred_csv": str(pred_csv), "points": str(entry["points"]),
               "spacing": list(stack_spacing), "spacing_source": source, "counts": counts.as_dict(),
               "matches": {"pred_row": match[0].tolist(), "true_row": match[1].tolist()}, **scores(counts)}
        if picture_dir is not None:
            picture = Path(picture_dir) / f"{stem}{EVAL_PICTURE_SUFFIX}"
            write_evaluation_picture(picture, row, pred, truth, match, pred_dir, radius_um)
            row["qc_picture"] = picture.name
        rows.append(row)
    with warnings.catch_warnings():  # all-NaN relative errors (no positives anywhere) stay NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in SCORE_NAMES}
    return {
        "per_stack": rows,
        "pooled": scores(pooled),
        "pooled_counts": pooled.as_dict(),
        "mean_over_stacks": mean,
        "settings": {"radius_um": float(radius_um), "z_tolerance": int(z_tolerance), "section": section,
                     "datalist": str(datalist.resolve()), "pred_dir": str(pred_dir.resolve()),
                     "spacing": list(spacing) if spacing is not None else None,
                     "matching": "one-to-one, most pairs then least total distance (Hungarian); a pair needs "
                                 "distance <= radius_um (anisotropic, um) and the click's z within the prediction's "
                                 "z_start - z_tolerance .. z_stop + z_tolerance"},
    }


def _predict_parameters(pred_dir: Path) -> dict:
    """The settings ``lecl predict`` recorded in ``predict_summary.json`` (channels, ...), or {} without one."""
    try:
        content = json.loads((pred_dir / "predict_summary.json").read_text(encoding="utf-8"))
        return dict(content.get("parameters") or {})
    except Exception:  # noqa: BLE001 - only picks the channels of the picture's background
        return {}


def _stack_projection(image: Path, channels: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """``((2, Y, X) max projection of the nuclei and marker channels, None)``, or ``(None, why)`` when the stack
    cannot be read here (e.g. a plain TIFF whose axes only ``lecl predict --axes`` knew)."""
    from ..data.reader import IFStackReader

    try:
        reader = IFStackReader(min_channels=1, require_spacing=False, check_values=False)  # pixels only
        data = np.asarray(reader.get_data(reader.read(image))[0])
        if data.ndim != 4 or max(channels) >= data.shape[0]:
            return None, f"stack {image.name} has no channels {channels}: predicted footprints shown, not the stack"
        return data[list(channels)].max(axis=1).astype(np.float32), None
    except Exception as e:  # noqa: BLE001 - the picture then shows the predicted footprints instead
        return None, f"{image.name} not readable here ({type(e).__name__}): predicted footprints shown, not the stack"


def write_evaluation_picture(path: PathLike, row: Mapping, pred: Mapping, truth: tuple, match: tuple,
                             pred_dir: PathLike, radius_um: float) -> Path:
    """Draw one stack's ``STEM_eval_qc.png`` (:func:`~lecl_transforms.data.qc_picture.evaluation_picture`) from the
    evaluation's own matching ``match`` of ``pred`` (``read_prediction_csv``) and ``truth`` (clicks, labels), with the
    row's scores in the header, on the max projection of the row's ``image`` (channels as ``lecl predict`` used them,
    from its ``predict_summary.json``), the predictions outlined from ``STEM_instances.tif`` when it is there and
    on the stack's grid. Written atomically."""
    import tifffile

    from ..data.prediction_writer import largest_slices
    from ..data.qc_picture import evaluation_picture
    from ..visualize import save_png

    pred_dir, image, stem = Path(pred_dir), Path(row["image"]), row["stem"]
    parameters = _predict_parameters(pred_dir)
    channels = (int(parameters.get("nuclei_channel", 0)), int(parameters.get("marker_channel", 1)))
    mip, note = _stack_projection(image, channels)
    labels = centre_z = None
    instances = pred_dir / f"{stem}_instances.tif"
    if not instances.is_file():
        note = "; ".join(filter(None, [note, f"no {instances.name}"]))
    else:
        labels = np.asarray(tifffile.imread(instances))
        on_grid = labels.ndim == 3 and (mip is None or labels.shape[1:] == mip.shape[1:])
        ids = np.asarray(pred["id"], np.int64)
        if not on_grid or (len(ids) and ids.max() > labels.max()):
            labels = None
            note = "; ".join(filter(None, [note, f"{instances.name} does not fit the stack"]))
        else:
            n = int(max(labels.max(initial=0), ids.max(initial=0)))
            centre_z = largest_slices(labels, n)[0]  # the CSV's centre_slice, where given, wins
            if pred["centre_slice"] is not None and len(ids):
                centre_z[ids] = np.clip(pred["centre_slice"], -1, labels.shape[0] - 1)
    shape_yx = None
    if mip is None and labels is None:
        extent = np.concatenate([np.asarray(pred["zyx"])[:, 1:], np.asarray(truth[0])[:, 1:], np.zeros((1, 2))])
        shape_yx = tuple(int(v) + 1 for v in np.ceil(extent.max(axis=0)))
    picture = evaluation_picture(mip, stem, pred, truth, match, row, labels=labels, centre_z=centre_z,
                                 um_per_px=float(row["spacing"][2]), radius_um=radius_um, shape_yx=shape_yx,
                                 note=note)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_png(tmp, picture)
    return path


def _predict_failures(pred_dir: Path) -> dict[str, str]:
    """``{image: error}`` of the stacks ``lecl predict`` reported as failed in ``predict_summary.json``, if any."""
    summary = pred_dir / "predict_summary.json"
    try:
        content = json.loads(summary.read_text(encoding="utf-8"))
        return {str(f["image"]): str(f["error"]) for f in content.get("failures", [])}
    except Exception:  # noqa: BLE001 - the summary only adds detail to an error message
        return {}


# -- report -----------------------------------------------------------------------------------------------------------
_TABLE = (  # (column title, score key)
    ("NP P", "np_precision"), ("NP R", "np_recall"), ("NP F1", "np_f1"),
    ("NC P", "nc_precision"), ("NC R", "nc_recall"), ("NC F1", "nc_f1"),
    ("macro F1", "macro_f1"), ("F1_d", "f1_d"), ("F1_t(neg)", "f1_t_negative"), ("F1_t(pos)", "f1_t_positive"),
    ("true pos", "n_true_positive"), ("pred pos", "n_pred_positive"),
)


def _cell(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _json_safe(value):
    """NaN -> None (JSON has no NaN), numpy -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def check_metrics_out(out_dir: PathLike, overwrite: bool = False, datalist: PathLike | None = None,
                      section: str = "test", pictures: bool = False) -> PathLike:
    """Refuse, before any work, an output folder that is a file, cannot be written, holds a ``metrics.json`` /
    ``metrics.md`` (or, with ``pictures``, a ``STEM_eval_qc.png`` of a stack of the ``datalist`` section) that
    ``lecl evaluate`` did not write (not in its ``lecl_evaluate.json``), or an earlier evaluation without
    ``overwrite``. Returns ``out_dir``."""
    targets = list(METRICS_FILES)
    if pictures and datalist is not None:
        from ..data.datalist import load_datalist

        entries = load_datalist(datalist, section, required=("image", "points"))
        targets += [f"{stem_of(e['image'])}{EVAL_PICTURE_SUFFIX}" for e in entries]
    check_out_files(out_dir, targets, command="lecl evaluate", manifest=EVALUATE_MANIFEST,
                    overwrite=overwrite, option="output_dir (--out)")
    return out_dir


def _list_outputs(out_dir: PathLike, files: Sequence[str], pred_dir, keep_earlier: bool) -> set[str]:
    """Write ``lecl_evaluate.json`` listing ``files`` (and, with ``keep_earlier``, what the earlier one listed, so
    an interrupted run's files stay recognisably lecl's); returns what the earlier manifest listed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / EVALUATE_MANIFEST
    earlier = set(read_manifest(manifest).get("files", [])) if manifest.is_file() else set()
    listed = sorted(set(files) | earlier) if keep_earlier else list(files)
    write_manifest(out_dir, EVALUATE_MANIFEST, {"command": "lecl evaluate", "files": listed,
                                                "pred_dir": str(pred_dir) if pred_dir is not None else None})
    return earlier


def write_metrics(report: Mapping, out_dir: PathLike) -> tuple[Path, ...]:
    """Write ``metrics.json`` (``report`` as returned by :func:`evaluate_predictions`, NaN written as null) and
    ``metrics.md`` (one table row per stack, then the pooled and mean rows, 3 decimals; the settings below) into
    ``out_dir``, each atomically, and list them with the report's pictures (the rows' ``qc_picture``) in
    ``lecl_evaluate.json`` (call :func:`check_metrics_out` before the evaluation); files an earlier evaluation listed
    there and this one did not write are removed. Returns ``(json_path, md_path, *picture paths)``."""

    out_dir = Path(out_dir)
    json_path, md_path = (out_dir / name for name in METRICS_FILES)
    pictures = [r["qc_picture"] for r in report["per_stack"] if r.get("qc_picture")]
    files = [*METRICS_FILES, *pictures]
    # first: from here on the files are recognisably lecl's, so an interrupted run can be replaced with --overwrite
    earlier = _list_outputs(out_dir, files, report.get("settings", {}).get("pred_dir"), keep_earlier=True)

    lines = ["# LECL detection and classification metrics", "",
             "| stack | " + " | ".join(title for title, _ in _TABLE) + " |",
             "|---|" + "---:|" * len(_TABLE)]
    for name, row in ([(r["stem"], r) for r in report["per_stack"]]
                      + [("**pooled**", report["pooled"]), ("mean over stacks", report["mean_over_stacks"])]):
        lines.append(f"| {name} | " + " | ".join(_cell(row[key]) for _, key in _TABLE) + " |")
    lines += ["", "NP = detection (nuclear pixel branch), NC = classification of the positive class over detected and "
              "missed nuclei, macro F1 = mean of the negative and positive class F1, F1_d / F1_t = HoVer-Net's "
              "detection / per-type scores (TN_t = 0 as in its code). Pooled = scores of the counts summed over "
              "stacks.", "", "Settings:", ""]
    lines += [f"- {key}: {value}" for key, value in report.get("settings", {}).items()]
    if report.get("settings", {}).get("spacing") is None and report["per_stack"]:
        lines.append("- spacing per stack (dz, dy, dx um): " + "; ".join(
            f"{r['stem']}: {tuple(r['spacing'])} from {r['spacing_source']}" for r in report["per_stack"]))
    if pictures:
        lines += ["", f"Pictures: STEM{EVAL_PICTURE_SUFFIX} for each of the {len(pictures)} stack(s): matched (green), "
                  "missed (orange) and false (magenta) nuclei, and the wrong marker calls, on the max projection."]

    text = json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n"
    with atomic_path(json_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    remove_stale(out_dir, {"files": sorted(earlier)}, files)
    _list_outputs(out_dir, files, report.get("settings", {}).get("pred_dir"), keep_earlier=False)
    return (json_path, md_path, *(out_dir / name for name in pictures))
