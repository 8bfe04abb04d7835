"""The per-stack files of LECL inference, in the formats labs open directly:

=========================  ===========================================================================================
file                       opened in / content
=========================  ===========================================================================================
``STEM_pred.csv``          spreadsheets, and ``read_points`` (a points file): one row per nucleus, columns
                           :data:`CSV_COLUMNS` (position, class, extent, then the measurements of
                           :mod:`~lecl_transforms.data.measurements`: volume, raw intensities per channel)
``STEM_instances.tif``     napari / Fiji: ``(Z, Y, X)`` nucleus id per voxel (0 background); uint16 ImageJ hyperstack
                           with the voxel spacing, or uint32 OME-TIFF from 65535 nuclei on (ImageJ has no uint32)
``STEM_classes.tif``       napari / Fiji: ``(Z, Y, X)`` uint8 class per voxel, 0 background, 1 negative, 2 positive
``STEM_pred_qc.png``       a person, at a glance (:mod:`~lecl_transforms.data.qc_picture`): the nuclei/marker MIP
                           composite (marker red, nuclei cyan) as is and with each nucleus outlined once on its
                           centre slice (yellow negative, magenta positive); counts, legend, scale bar
``STEM_pred.geojson``      QuPath (File > Import objects): one detection per nucleus, its centre-slice outline
=========================  ===========================================================================================

Coordinates are 0-based voxel indices ``(z, y, x)``; the CSV's ``*_um`` columns are those times the spacing
``(dz, dy, dx)``. GeoJSON polygons are in QuPath's pixel coordinates, where pixel ``(y, x)`` covers the square
``[x, x + 1) x [y, y + 1)`` (its centre is the voxel index + 0.5), so an outline runs along the pixel borders.

The *centre slice* of a nucleus is the slice where its footprint is largest (the first such slice on ties), unless the
caller gives one. Every file is written under a temporary name in the output folder and renamed into place, so an
interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.utils import convert_data_type
from scipy import ndimage

from ..errors import input_error
from ..utils.files import atomic_path, write_json
from .measurements import MEASUREMENT_COLUMNS, nucleus_measurements
from .qc_picture import qc_picture, qc_title

__all__ = [
    "write_predictions",
    "write_run_summary",
    "write_summary_csv",
    "stack_figures",
    "SUMMARY_CSV_COLUMNS",
    "instance_dtype",
    "largest_slices",
    "qc_picture",
    "qc_title",
    "nucleus_outlines",
    "CSV_COLUMNS",
    "PRED_FILE_SUFFIXES",
    "CLASS_NAMES",
]

_TABLE_KEYS = ("id", "z", "y", "x", "label", "score", "z_start", "z_stop", "area_px", "positive_slices")

#: header of ``STEM_pred.csv``: the table's columns, the centroid in um, then the measurements
CSV_COLUMNS = (*_TABLE_KEYS[:9], "z_um", "y_um", "x_um", "n_slices", "positive_slices",
               *MEASUREMENT_COLUMNS[1:])
_INTEGER_COLUMNS = {"id", "label", "z_start", "z_stop", "area_px", "n_slices", "positive_slices", "centre_slice",
                    "volume_voxels"}
# raw intensities may be counts or floats in [0, 1]: significant digits, not decimals (float32 holds ~7)
_CSV_FORMATS = {"z": "%.2f", "y": "%.2f", "x": "%.2f", "score": "%.4f", "z_um": "%.3f", "y_um": "%.3f",
                "x_um": "%.3f", "volume_um3": "%.3f", "nuclei_integrated": "%.10g", "marker_integrated": "%.10g",
                **{k: "%d" for k in _INTEGER_COLUMNS}}

#: file of each output, keyed as :func:`write_predictions` returns them
PRED_FILE_SUFFIXES = {"csv": "_pred.csv", "instances": "_instances.tif", "classes": "_classes.tif",
                      "qc": "_pred_qc.png", "geojson": "_pred.geojson"}

#: QuPath class names of the two nucleus classes (those its positive-cell tools use)
CLASS_NAMES = {1: "Negative", 2: "Positive"}

_UINT16_LIMIT = 65535  # ids from here on need uint32


def write_run_summary(out_dir, summary: dict, name: str = "predict_summary.json") -> Path:
    """Write ``summary`` as indented JSON to ``out_dir / name`` (atomically); numpy values and paths are converted."""
    return write_json(Path(out_dir) / name, summary)


# -- per-stack figures (predict_summary.json, summary.csv) -------------------------------------------------------------
#: header of the run's ``summary.csv``: one row per stack
SUMMARY_CSV_COLUMNS = ("stack", "nuclei", "positive", "negative", "positive_fraction", "field_area_mm2",
                       "nuclei_per_mm2", "positive_per_mm2")
_SUMMARY_FORMATS = {"positive_fraction": "{:.4f}", "field_area_mm2": "{:.6g}", "nuclei_per_mm2": "{:.1f}",
                    "positive_per_mm2": "{:.1f}"}


def stack_figures(nuclei: int, positive: int, field_yx: Sequence[int],
                  spacing: Sequence[float] | None) -> dict[str, float | None]:
    """What a paper reports of one stack: ``positive_fraction`` (positive / nuclei), ``field_area_mm2`` (the imaged
    (y, x) field: ``Y * X * dy * dx``, in mm^2) and the densities ``nuclei_per_mm2``, ``positive_per_mm2`` over that
    field. ``None`` where undefined: the fraction without nuclei, the area and densities without a spacing."""
    fraction = positive / nuclei if nuclei else None
    area = None if spacing is None else float(field_yx[0] * field_yx[1] * spacing[1] * spacing[2]) * 1e-6
    return {"positive_fraction": fraction, "field_area_mm2": area,
            "nuclei_per_mm2": nuclei / area if area else None, "positive_per_mm2": positive / area if area else None}


def write_summary_csv(path, rows: Sequence[Mapping]) -> Path:
    """``summary.csv``: one row per stack with the :data:`SUMMARY_CSV_COLUMNS` of ``rows`` (``None`` -> empty cell),
    ready to paste into a spreadsheet."""
    def cell(key, value) -> str:
        if value is None:
            return ""
        return _SUMMARY_FORMATS.get(key, "{}").format(value)

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")  # quotes a stack name that holds a comma
        writer.writerow(SUMMARY_CSV_COLUMNS)
        writer.writerows([cell(k, row[k]) for k in SUMMARY_CSV_COLUMNS] for row in rows)
    return path


# -- inputs -----------------------------------------------------------------------------------------------------------
def _numpy(x, dtype=None) -> np.ndarray:
    """numpy view of an array, tensor (MetaTensor included) or list."""
    if isinstance(x, (np.ndarray, list, tuple)) or np.isscalar(x):
        return np.asarray(x, dtype=dtype)
    return convert_data_type(x, np.ndarray, dtype=dtype)[0]


def _check_spacing(spacing, where: str) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    values = tuple(float(v) for v in _numpy(spacing, np.float64).ravel())
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise input_error(where, f"spacing {values} is not three positive numbers (dz, dy, dx)",
                          "give the voxel spacing (dz, dy, dx) in um, or None when it is unknown")
    return values


def _check_inputs(labels, table: Mapping, mip, image, where: str):
    """``labels`` (Z, Y, X) int with ids 1..M, the table's columns as numpy (rows of ids 1..M, any order), mip,
    image (2, Z, Y, X)."""
    labels = _numpy(labels)
    if labels.ndim == 4 and labels.shape[0] == 1:  # channel-first (1, Z, Y, X) from a MONAI pipeline
        labels = labels[0]
    if labels.ndim != 3:
        raise input_error(where, f"labels of shape {labels.shape} are not (Z, Y, X)", "give the 3D nucleus ids")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise input_error(where, f"labels of dtype {labels.dtype}", "give integer nucleus ids (0 = background)")
    n = len(_numpy(table.get("id", ())).ravel())
    columns = {}
    for key in _TABLE_KEYS:
        if key not in table:
            if n == 0:  # nothing detected: a table without columns is fine
                columns[key] = np.zeros(0)
                continue
            raise input_error(where, f"the nucleus table lacks the column '{key}'",
                              f"give the columns {', '.join(_TABLE_KEYS)}")
        columns[key] = _numpy(table[key], np.float64).ravel()
        if len(columns[key]) != n:
            raise input_error(where, f"table column '{key}' has {len(columns[key])} rows, 'id' has {n}",
                              "give every column one value per nucleus")
        if not np.isfinite(columns[key]).all():
            raise input_error(where, f"table column '{key}' holds NaN or infinite values",
                              "give finite values for every nucleus")
    ids = columns["id"]
    if (ids != np.rint(ids)).any() or not np.array_equal(np.sort(ids), np.arange(1, n + 1)):
        raise input_error(where, "table ids are not 1..M, each once", "number the nuclei 1..M as in the labels")
    if not np.isin(columns["label"], (1, 2)).all():
        raise input_error(where, f"table labels {np.unique(columns['label'])[:5]} are not 1 / 2",
                          "use 1 = negative, 2 = positive")
    if labels.size and (labels.min() < 0 or labels.max() > n):
        raise input_error(where, f"labels hold ids {labels.min()}..{labels.max()} but the table has {n} nuclei",
                          "give labels with ids 0 (background) and 1..M, M = the table's rows")
    mip = _numpy(mip, np.float32)
    if mip.ndim != 3 or mip.shape[0] < 2 or mip.shape[1:] != labels.shape[1:]:
        raise input_error(where, f"mip of shape {mip.shape} does not match the labels' (Y, X) {labels.shape[1:]}",
                          "give the (2, Y, X) max projection of the nuclei (0) and marker (1) channels")
    image = _numpy(image)
    if image.ndim != 4 or image.shape[0] != 2 or image.shape[1:] != labels.shape:
        raise input_error(where, f"image of shape {image.shape} does not match the labels' (Z, Y, X) {labels.shape}",
                          "give the (2, Z, Y, X) nuclei (0) and marker (1) stack the nuclei were predicted on")
    return labels, columns, mip, image


def instance_dtype(n_nuclei: int) -> np.dtype:
    """Smallest unsigned type for ids 0..n_nuclei that ImageJ/Fiji and napari open: uint16 below 65535 nuclei, else
    uint32 (written as OME-TIFF, since ImageJ hyperstacks have no 32-bit integer type)."""
    if n_nuclei < 0 or n_nuclei > np.iinfo(np.uint32).max:
        raise ValueError(f"cannot store {n_nuclei} nucleus ids in a label image")
    return np.dtype(np.uint16 if n_nuclei < _UINT16_LIMIT else np.uint32)


# -- centre slices and outlines ---------------------------------------------------------------------------------------
def largest_slices(labels: np.ndarray, n_nuclei: int) -> tuple[np.ndarray, np.ndarray]:
    """Each nucleus' slice of largest footprint, and that footprint's area.

    ``labels`` ``(Z, Y, X)`` int, ids 0..n_nuclei. Returns ``(centre_z, area)``, both ``(n_nuclei + 1,)`` int64
    indexed by id (entry 0 unused; an id without voxels gets ``centre_z = -1``, area 0). Ties go to the first slice.
    One ``bincount`` per slice: memory stays O(M), not O(M * Z).
    """
    best_z = np.full(n_nuclei + 1, -1, np.int64)
    best_area = np.zeros(n_nuclei + 1, np.int64)
    for z, plane in enumerate(labels):
        area = np.bincount(plane.ravel().astype(np.intp, copy=False), minlength=n_nuclei + 1)
        better = area > best_area
        best_z[better], best_area[better] = z, area[better]
    best_z[0], best_area[0] = -1, 0
    return best_z, best_area


def _resolve_centres(labels: np.ndarray, n: int, given, where: str) -> np.ndarray:
    """Centre slice per id ``(n + 1,)``: the given ones where the nucleus has voxels on them, else its largest slice."""
    centre_z, _ = largest_slices(labels, n)
    if given is None or n == 0:
        return centre_z
    given = _numpy(given).ravel()
    if len(given) != n or (given != np.rint(given)).any() or given.min() < 0 or given.max() >= labels.shape[0]:
        raise input_error(where, f"centre_slices must hold {n} slice indices in 0..{labels.shape[0] - 1}",
                          "give centre_slices[id - 1] = the slice of nucleus id (or None for its largest slice)")
    given = np.concatenate([[-1], given.astype(np.int64)])
    ids = np.arange(1, n + 1)
    # a nucleus absent from the slice it was given (e.g. a rounded centroid of a curved nucleus) keeps its largest one
    present = np.zeros(n + 1, bool)
    for z in np.unique(given[1:]):
        on_z = ids[given[1:] == z]
        present[on_z] = np.bincount(labels[z].ravel().astype(np.intp, copy=False), minlength=n + 1)[on_z] > 0
    return np.where(present, given, centre_z)


def nucleus_outlines(labels: np.ndarray, centre_z: np.ndarray, tolerance: float = 0.5) -> list[np.ndarray]:
    """Each nucleus' outline on its centre slice as a closed ring ``(K, 2)`` of ``(x, y)`` QuPath pixel coordinates
    (pixel borders at integers; first point == last).

    ``labels`` ``(Z, Y, X)``, ids 1..M; ``centre_z`` ``(M + 1,)`` indexed by id. Work is per nucleus on its bounding
    box only: the longest ``find_contours`` contour of the padded centre-slice crop, simplified by Douglas-Peucker
    within ``tolerance`` px (its vertices are a subset of the contour's). Nuclei of 1-2 pixels, or whose contour is
    degenerate, get the rectangle of their pixels' bounding box. Returns a list of M rings (id order).
    """
    from skimage.measure import approximate_polygon, find_contours

    rings = []
    for index, box in enumerate(ndimage.find_objects(labels, max_label=len(centre_z) - 1)):
        nucleus = index + 1
        crop = labels[centre_z[nucleus], box[1], box[2]] == nucleus
        y0, x0 = box[1].start, box[2].start
        ring = None
        if crop.sum() > 2:
            contours = find_contours(np.pad(crop, 1).astype(np.float32), 0.5)
            longest = max(contours, key=len) if contours else None
            if longest is not None and len(longest) >= 4:
                simple = approximate_polygon(longest, tolerance)
                longest = simple if len(simple) >= 4 else longest
                # padded-crop index -> voxel index -> QuPath pixel coordinate (+0.5: pixel centres)
                ring = longest[:, ::-1] + np.array([x0 - 1 + 0.5, y0 - 1 + 0.5])
        if ring is None:
            ys, xs = np.nonzero(crop)
            top, bottom, left, right = y0 + ys.min(), y0 + ys.max() + 1, x0 + xs.min(), x0 + xs.max() + 1
            ring = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float64)
        if not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        rings.append(ring)
    return rings


# -- the files --------------------------------------------------------------------------------------------------------
def _csv_columns(columns: dict, measured: dict, spacing: tuple[float, float, float] | None) -> dict[str, np.ndarray]:
    """Every CSV column, rows in table order (``measured`` is in id order)."""
    dz, dy, dx = spacing or (1.0, 1.0, 1.0)
    row_ids = columns["id"].astype(np.int64)
    return {**columns, "z_um": columns["z"] * dz, "y_um": columns["y"] * dy, "x_um": columns["x"] * dx,
            **{k: np.asarray(v)[row_ids - 1] for k, v in measured.items()}}


def _write_csv(path: Path, table: dict) -> None:
    """One row per nucleus; NaN (an unknown value, e.g. the volume in um^3 without a spacing) is an empty cell."""
    cells = []
    for key in CSV_COLUMNS:
        values = np.asarray(table[key], np.float64)
        fmt = _CSV_FORMATS.get(key, "%.7g")
        if fmt == "%d":
            values = np.rint(values)  # "%d" truncates: 3.9999 must read 4
        text = np.char.mod(fmt, values) if len(values) else np.zeros(0, str)
        cells.append(np.where(np.isnan(values), "", text))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(CSV_COLUMNS) + "\n")
        f.writelines(",".join(row) + "\n" for row in zip(*cells))


def _write_label_tiff(path: Path, volume: np.ndarray, spacing: tuple[float, float, float] | None) -> None:
    """``(Z, Y, X)`` uint8/uint16 as an ImageJ hyperstack (resolution + ``spacing`` tags: Fiji and napari read them),
    uint32 as OME-TIFF with physical sizes (ImageJ hyperstacks cannot hold uint32; Bio-Formats and tifffile can).
    Unknown spacing is written as 1 with unit "pixel" (ImageJ's "uncalibrated")."""
    import tifffile

    dz, dy, dx = spacing if spacing is not None else (1.0, 1.0, 1.0)
    with atomic_path(path) as tmp:
        if volume.dtype in (np.uint8, np.uint16):
            tifffile.imwrite(tmp, volume, imagej=True, resolution=(1 / dx, 1 / dy),
                             metadata={"axes": "ZYX", "spacing": dz, "unit": "um" if spacing else "pixel"})
        else:
            sizes = {} if spacing is None else {
                f"PhysicalSize{a}{k}": v for a, s in zip("ZYX", (dz, dy, dx)) for k, v in (("", s), ("Unit", "µm"))}
            tifffile.imwrite(tmp, volume, ome=True, photometric="minisblack", metadata={"axes": "ZYX", **sizes})


#: CSV columns left out of the GeoJSON measurements: QuPath measures each detection's (y, x) centroid itself
_NOT_IN_GEOJSON = ("y", "x", "y_um", "x_um")


def _measurement(key: str, value: float) -> int | float:
    """A CSV value as a JSON number, rounded as in the CSV."""
    fmt = _CSV_FORMATS.get(key, "%.7g")
    return int(round(value)) if fmt == "%d" else float(fmt % value)


def _write_geojson(path: Path, table: dict, rings: list[np.ndarray]) -> None:
    """One QuPath detection per nucleus; ``properties.measurements`` is a name -> number dict (QuPath 0.4 and
    later read it so; NaN values are left out, QuPath shows them as missing)."""
    from ..visualize import CLASS_COLOURS

    row_of = np.empty(len(rings) + 1, np.int64)
    row_of[table["id"].astype(np.int64)] = np.arange(len(rings))
    keys = [k for k in CSV_COLUMNS if k not in _NOT_IN_GEOJSON]
    values = np.column_stack([np.asarray(table[k], np.float64) for k in keys]) if rings else np.zeros((0, 0))
    features = []
    for nucleus, ring in enumerate(rings, start=1):
        row = row_of[nucleus]
        cls = int(table["label"][row])
        features.append({
            "type": "Feature",
            "id": nucleus,
            "geometry": {"type": "Polygon", "coordinates": [np.round(ring, 2).tolist()]},
            "properties": {
                "objectType": "detection",
                "name": f"nucleus {nucleus}",
                "classification": {"name": CLASS_NAMES[cls], "color": list(CLASS_COLOURS[cls])},
                # centre_slice: the slice the outline is drawn on
                "measurements": {k: _measurement(k, v) for k, v in zip(keys, values[row]) if not np.isnan(v)},
            },
        })
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"),
                                  allow_nan=False) + "\n", encoding="utf-8")


def write_predictions(out_dir, stem: str, labels, table: Mapping, spacing, mip, *, image,
                      centre_slices: Sequence[int] | np.ndarray | None = None) -> dict[str, Path]:
    """Write the five per-stack prediction files of one stack; returns their paths keyed by ``"csv"``,
    ``"instances"``, ``"classes"``, ``"qc"``, ``"geojson"`` (see the module docstring for the formats).

    Args:
        out_dir: output folder (created if missing).
        stem: file stem of the stack (``STEM_pred.csv``, ...).
        labels: ``(Z, Y, X)`` int nucleus ids 1..M, 0 background (a leading channel of 1 is dropped).
        table: 1-D columns of length M: ``id`` (1..M, each once), ``z``, ``y``, ``x`` (centroid, voxel indices),
            ``label`` (1 negative, 2 positive), ``score`` (probability of positive), ``z_start``, ``z_stop``
            (inclusive), ``area_px`` (largest slice area), ``positive_slices`` (slices called positive); other
            keys are ignored.
        spacing: ``(dz, dy, dx)`` in um, or None (written as 1 with unit "pixel"; the ``*_um`` columns then equal the
            voxel columns, ``volume_um3`` is left empty).
        mip: ``(2, Y, X)`` max projection of the nuclei (0) and marker (1) channels.
        image: ``(2, Z, Y, X)`` the nuclei (0) and marker (1) channels as read from the stack (raw values, not
            normalised): the intensity measurements (:mod:`~lecl_transforms.data.measurements`) are taken on it.
        centre_slices: ``(M,)``, ``centre_slices[id - 1]`` = the slice on which nucleus ``id`` is outlined (QC picture
            and GeoJSON); default (or where the nucleus has no voxel on the given slice) its largest slice.
    """
    where = f"predictions of {stem}"
    labels, columns, mip, image = _check_inputs(labels, table, mip, image, where)
    spacing = _check_spacing(spacing, where)
    n = len(columns["id"])
    centre_z = _resolve_centres(labels, n, centre_slices, where)
    if n and (centre_z[1:] < 0).any():
        missing = int(np.flatnonzero(centre_z[1:] < 0)[0] + 1)
        raise input_error(where, f"nucleus {missing} of the table has no voxel in the labels",
                          "give labels and table of the same nuclei (drop empty nuclei and renumber 1..M)")
    classes = np.zeros(n + 1, np.uint8)
    classes[columns["id"].astype(np.int64)] = columns["label"].astype(np.uint8)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / f"{stem}{suffix}" for key, suffix in PRED_FILE_SUFFIXES.items()}
    csv_table = _csv_columns(columns, nucleus_measurements(labels, image, centre_z, spacing), spacing)
    _write_csv(paths["csv"], csv_table)
    _write_label_tiff(paths["instances"], labels.astype(instance_dtype(n), copy=False), spacing)
    _write_label_tiff(paths["classes"], classes[labels], spacing)
    from ..visualize import save_png

    picture = qc_picture(labels, centre_z, classes, mip, stem, um_per_px=spacing[2] if spacing else None)
    with atomic_path(paths["qc"]) as tmp:
        save_png(tmp, picture)
    _write_geojson(paths["geojson"], csv_table, nucleus_outlines(labels, centre_z))
    return paths
