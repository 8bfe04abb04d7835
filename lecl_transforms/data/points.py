"""Point annotations (one click per nucleus): CSV ``z,y,x,label`` or a point-label volume, checked against the image."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data.utils import is_supported_format
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from ..errors import input_error
from ..utils.names import NIFTI_SUFFIXES, TIFF_SUFFIXES, decode_text
from .reader import IFStackReader

__all__ = [
    "read_points",
    "LoadPoints",
    "LoadPointsd",
    "POINT_LABELS",
    "NEGATIVE",
    "POSITIVE",
]


NEGATIVE, POSITIVE = 1, 2


#: words accepted in the ``label`` column of a points CSV, besides the numbers 1 and 2
POINT_LABELS = {"1": NEGATIVE, "negative": NEGATIVE, "neg": NEGATIVE,
                "2": POSITIVE, "positive": POSITIVE, "pos": POSITIVE}


# -- points -----------------------------------------------------------------------------------------------------------
def read_points(path: PathLike, shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read point annotations from a CSV (``z,y,x,label``) or a point-label volume (TIFF/NIfTI).

    Returns ``(coords (N, 3) int64 (z, y, x), labels (N,) int64 in {1 negative, 2 positive})``, in file order
    (CSV) or in the order of the volume's connected components (label volume). With ``shape = (Z, Y, X)`` points
    are checked against the image: outside the volume, duplicates, and (volumes) matching size.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "points file not found", "check the path (relative paths are taken from the datalist)")
    if path.suffix.lower() == ".csv":
        coords, labels, lines = _read_points_csv(path)
    elif is_supported_format(str(path), TIFF_SUFFIXES + NIFTI_SUFFIXES):
        coords, labels, lines = _read_points_volume(path, shape)
    else:
        raise input_error(path, "unsupported points file", "give a CSV with header z,y,x,label or a point-label volume")
    _validate_points(coords, lines, shape, path)
    return coords, labels


def _read_points_csv(path: Path):
    # Excel and other Windows tools save cp1252 (e.g. an "é" in a comment column): decode rather than crash
    text = decode_text(path.read_bytes(), path, "points CSV", "save the CSV as UTF-8 (Excel: CSV UTF-8)")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:  # e.g. NUL bytes: a spreadsheet or binary file renamed .csv
        raise input_error(path, f"not a CSV text file ({e})", "save the points as CSV (Excel: CSV UTF-8)") from None
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise input_error(path, "empty file", "write a header z,y,x,label and one row per clicked nucleus")
    header = [c.strip().lower() for c in rows[0][1]]
    missing = [c for c in ("z", "y", "x", "label") if c not in header]
    if missing:
        raise input_error(
            f"{path}, line {rows[0][0]}",
            f"header {rows[0][1]} lacks column(s) {missing}",
            "the first line must name the columns z,y,x,label (0-based voxel indices; label 1/negative or 2/positive)",
        )
    cols = [header.index(c) for c in ("z", "y", "x", "label")]
    coords, labels, lines = [], [], []
    for line, row in rows[1:]:
        cells = [row[c].strip() if c < len(row) else "" for c in cols]
        try:
            zyx = [float(v) for v in cells[:3]]
        except ValueError:
            raise input_error(
                f"{path}, line {line}", f"coordinates {cells[:3]} are not numbers", "write numeric z,y,x voxel indices"
            ) from None
        if not all(np.isfinite(zyx)):
            raise input_error(f"{path}, line {line}", f"coordinates {cells[:3]}", "write finite z,y,x voxel indices")
        label = POINT_LABELS.get(cells[3].lower().removesuffix(".0"))
        if label is None:
            raise input_error(
                f"{path}, line {line}",
                f"unknown label '{cells[3]}'",
                "use 1 or 'negative' for marker-negative, 2 or 'positive' for marker-positive nuclei",
            )
        coords.append(np.rint(zyx))
        labels.append(label)
        lines.append(f"line {line}")
    if not coords:
        raise input_error(path, "no points, only a header", "add one row z,y,x,label per clicked nucleus")
    return np.asarray(coords, dtype=np.int64), np.asarray(labels, dtype=np.int64), lines


def _read_points_volume(path: Path, shape):
    reader = IFStackReader(min_channels=1, require_spacing=False, check_values=False)
    vol, _ = reader.get_data(reader.read(path))
    if vol.shape[0] != 1:
        raise input_error(path, f"a point-label volume must have one channel, got {vol.shape[0]}", "save one channel")
    vol = vol[0]
    if shape is not None and tuple(vol.shape) != tuple(shape):
        raise input_error(
            path,
            f"point-label volume has shape (Z, Y, X) {vol.shape}, the image {tuple(shape)}",
            "save the labels on the same grid as the image",
        )
    values = np.unique(vol)
    bad = [int(v) if float(v).is_integer() else float(v) for v in values if v not in (0, NEGATIVE, POSITIVE)]
    if bad:
        raise input_error(
            path, f"values {bad[:5]} in the point-label volume", "use 0 = no point, 1 = negative, 2 = positive"
        )
    # each connected blob of annotated voxels is one click (MONAI Label may paint a few voxels per point)
    blobs, n = ndimage.label(vol > 0, structure=np.ones((3, 3, 3)))
    if n == 0:
        raise input_error(path, "no annotated voxel (all zeros)", "annotate at least one nucleus")
    index = np.arange(1, n + 1)
    centres = np.rint(np.asarray(ndimage.center_of_mass(vol > 0, blobs, index))).astype(np.int64).reshape(-1, 3)
    lo, hi = ndimage.minimum(vol, blobs, index), ndimage.maximum(vol, blobs, index)
    mixed = np.flatnonzero(np.asarray(lo) != np.asarray(hi))
    if mixed.size:
        raise input_error(
            path,
            f"a blob of annotated voxels around (z,y,x) {tuple(centres[mixed[0]])} mixes labels 1 and 2",
            "give each annotated nucleus a single label",
        )
    return centres, np.asarray(lo, dtype=np.int64), [f"blob at (z,y,x) {tuple(c)}" for c in centres]


def _validate_points(coords: np.ndarray, lines: list[str], shape, path) -> None:
    if shape is not None:
        shape = np.asarray(tuple(shape)[-3:])
        outside = np.flatnonzero(((coords < 0) | (coords >= shape)).any(axis=1))
        if outside.size:
            i = outside[0]
            raise input_error(
                f"{path}, {lines[i]}",
                f"point (z,y,x) {tuple(int(v) for v in coords[i])} lies outside the image of shape (Z,Y,X) "
                f"{tuple(int(s) for s in shape)} ({outside.size} point(s) outside)",
                "columns must be z,y,x as 0-based voxel indices (a 1-based z from ImageJ is off by one; "
                "x and y may be swapped)",
            )
    _, first, counts = np.unique(coords, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = coords[first[np.argmax(counts > 1)]]
        rows = [lines[i] for i in np.flatnonzero((coords == dup).all(axis=1))]
        raise input_error(
            f"{path}, {' and '.join(rows)}",
            f"duplicate point (z,y,x) {tuple(int(v) for v in dup)}",
            "keep one click per nucleus: delete the repeated row(s)",
        )


class LoadPoints(Transform):
    """Load point annotations: path (CSV or point-label volume) -> ``(coords (N, 3) int64, labels (N,) int64)``.

    ``spatial_shape`` ``(Z, Y, X)`` (e.g. ``image.shape[1:]``) enables the checks against the image.
    An ``(N, 4)`` array ``[z, y, x, label]`` is accepted as already loaded.
    """

    backend = [TransformBackends.NUMPY]

    def __call__(self, points, spatial_shape: Sequence[int] | None = None):
        if isinstance(points, (str, os.PathLike)):
            return read_points(points, spatial_shape)
        arr = np.asarray(points)
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise input_error("points", f"array of shape {arr.shape}", "give an (N, 4) array of z, y, x, label")
        coords, labels = np.rint(arr[:, :3]).astype(np.int64), arr[:, 3].astype(np.int64)
        if not np.isin(labels, (NEGATIVE, POSITIVE)).all():
            raise input_error("points", f"labels {np.unique(labels)}", "use 1 = negative, 2 = positive")
        _validate_points(coords, [f"row {i}" for i in range(len(coords))], spatial_shape, "points")
        return coords, labels


class LoadPointsd(MapTransform):
    """Dictionary twin of :class:`LoadPoints`.

    ``d[key]`` (a path) becomes the ``(N, 3)`` int64 coordinates and ``d[label_key]`` the ``(N,)`` labels. The shape
    check uses ``d[image_key].shape[-3:]`` when the image is loaded first (recommended).
    """

    backend = LoadPoints.backend

    def __init__(self, keys: KeysCollection = "points", image_key: str | None = "image",
                 label_key: str = "point_labels", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("LoadPointsd takes one points key")
        self.image_key, self.label_key = image_key, label_key
        self.loader = LoadPoints()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        shape = tuple(d[self.image_key].shape[-3:]) if self.image_key and self.image_key in d else None
        for key in self.key_iterator(d):
            d[key], d[self.label_key] = self.loader(d[key], shape)
        return d
