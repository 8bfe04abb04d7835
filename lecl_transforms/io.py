"""Reading the data contract: 3D multichannel IF stacks, point annotations and datalists.

Axes convention used everywhere in this package: images are ``(C, Z, Y, X)``, volumes ``(Z, Y, X)``, points are
integer voxel indices ``(z, y, x)``, voxel spacing is ``(dz, dy, dx)`` in micrometres.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, load_decathlon_datalist
from monai.data.utils import is_supported_format
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys, TransformBackends, ensure_tuple
from scipy import ndimage

from .errors import input_error

__all__ = [
    "IFStackReader",
    "read_stack",
    "NucleiMarkerChannels",
    "NucleiMarkerChannelsd",
    "read_points",
    "LoadPoints",
    "LoadPointsd",
    "load_datalist",
    "datalist_sections",
    "POINT_LABELS",
    "NEGATIVE",
    "POSITIVE",
]

NEGATIVE, POSITIVE = 1, 2
#: words accepted in the ``label`` column of a points CSV, besides the numbers 1 and 2
POINT_LABELS = {"1": NEGATIVE, "negative": NEGATIVE, "neg": NEGATIVE, "2": POSITIVE, "positive": POSITIVE, "pos": POSITIVE}

TIFF_SUFFIXES = ("tif", "tiff")
NIFTI_SUFFIXES = ("nii", "nii.gz")

# micrometres per unit, for the unit names that ImageJ, OME and NIfTI write
_UM_PER_UNIT = {
    "micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "\\u00b5m": 1.0, "micrometer": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
}


def _um_per(unit: str | None) -> float | None:
    if unit is None:
        return None
    return _UM_PER_UNIT.get(str(unit).strip().lower())


class _StackFile:
    """What :meth:`IFStackReader.read` hands to :meth:`IFStackReader.get_data`: just the path.

    Opening and checking the file happen in ``get_data`` on purpose: ``LoadImage`` swallows errors raised in ``read``
    (it then tries other readers and reports "cannot find a suitable reader"), while errors in ``get_data`` reach
    the user unchanged.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)


class IFStackReader(ImageReader):
    """MONAI ``ImageReader`` for 3D multichannel immunofluorescence stacks: ImageJ/OME TIFF and NIfTI.

    Output array: ``(C, Z, Y, X)`` in the file's dtype (``LoadImage`` casts it, float32 by default), whatever the
    axis order in the file: TIFF axes come from the ImageJ/OME metadata (``ZCYX`` and ``CZYX`` both work; singleton
    ``T``/``S`` axes are dropped), NIfTI ``(X, Y, Z[, 1], C)`` is transposed. Metadata gets ``spacing``
    ``(dz, dy, dx)`` in micrometres (from the file, else from ``spacing``), ``spacing_source``, ``axes_in_file``,
    an ``affine`` diagonal in ``(z, y, x)`` and ``original_channel_dim = 0``.

    Use it as any MONAI reader::

        LoadImaged("image", reader=IFStackReader(spacing=(2.0, 0.5, 0.5)))

    Args:
        axes: axis letters of the file (e.g. ``"ZCYX"``), overriding its metadata; needed for plain TIFFs that carry
            no axis metadata.
        spacing: ``(dz, dy, dx)`` in micrometres, used for any axis whose spacing the file does not state.
        min_channels: fewer channels than this is an error (2 for an IF stack: nuclei + marker; 1 for label volumes).
        require_spacing: raise when neither the file nor ``spacing`` gives the voxel spacing.
        check_values: raise on NaN/infinite values and on an image whose voxels all have the same value.
    """

    def __init__(
        self,
        axes: str | None = None,
        spacing: Sequence[float] | None = None,
        min_channels: int = 2,
        require_spacing: bool = True,
        check_values: bool = True,
        **kwargs,
    ):
        super().__init__()
        self.axes = axes.upper() if axes else None
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise input_error(
                    "spacing", f"got {spacing}", "give three positive numbers (dz, dy, dx) in micrometres"
                )
        self.spacing = spacing
        self.min_channels = min_channels
        self.require_spacing = require_spacing
        self.check_values = check_values

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return is_supported_format(filename, TIFF_SUFFIXES + NIFTI_SUFFIXES)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs):
        files = [_StackFile(p) for p in ensure_tuple(data)]
        return files if len(files) > 1 else files[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        if isinstance(img, (list, tuple)):
            raise input_error(
                ", ".join(str(i.path) for i in img),
                "several files given for one image",
                "store each z-stack with all its channels in one TIFF or NIfTI file",
            )
        path = img.path
        if not path.is_file():
            raise input_error(path, "file not found", "check the path (relative paths are taken from the datalist)")
        if is_supported_format(str(path), NIFTI_SUFFIXES):
            array, axes, file_spacing = self._read_nifti(path)
        elif is_supported_format(str(path), TIFF_SUFFIXES):
            array, axes, file_spacing = self._read_tiff(path)
        else:
            raise input_error(path, "unsupported file type", "convert the stack to a .tif/.tiff or .nii/.nii.gz file")
        array = self._to_czyx(array, axes, path)
        spacing, source = self._resolve_spacing(file_spacing, path)
        if self.check_values:
            _check_values(array, path)
        meta = {
            "spacing": np.asarray(spacing, dtype=np.float64),
            "spacing_source": source,
            "axes_in_file": axes,
            MetaKeys.AFFINE: np.diag([*spacing, 1.0]),
            MetaKeys.ORIGINAL_AFFINE: np.diag([*spacing, 1.0]),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[1:]),
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
            MetaKeys.SPACE: SpaceKeys.RAS,
        }
        return array, meta

    # -- format specifics -------------------------------------------------------------------------------------------
    def _read_tiff(self, path: Path):
        import tifffile

        try:
            tif = tifffile.TiffFile(path)
        except Exception as e:  # tifffile raises several types for corrupt files
            raise input_error(path, f"not a readable TIFF ({e})", "re-export the stack as TIFF from Fiji/ImageJ") from e
        with tif:
            series = tif.series[0]
            axes = self.axes or series.axes.upper()
            array = series.asarray()
            spacing = [None, None, None]
            if tif.is_ome and tif.ome_metadata:
                spacing = _ome_spacing(tif.ome_metadata)
            elif tif.is_imagej:
                spacing = _imagej_spacing(tif.imagej_metadata or {}, tif.pages[0])
        if self.axes and len(self.axes) != array.ndim:
            raise input_error(
                path,
                f"axes '{self.axes}' given in the config, but the file has {array.ndim} dimensions {array.shape}",
                "give one letter per dimension, e.g. axes='ZCYX' for a (Z, C, Y, X) stack",
            )
        return array, axes, spacing

    def _read_nifti(self, path: Path):
        import nibabel as nib

        try:
            nii = nib.load(str(path))
        except Exception as e:
            raise input_error(path, f"not a readable NIfTI ({e})", "re-save the file as .nii or .nii.gz") from e
        array = np.asanyarray(nii.dataobj)
        if array.ndim == 5 and array.shape[3] == 1:  # (X, Y, Z, 1, C) as written for vector images
            array = array[:, :, :, 0]
        axes = self.axes or {2: "XY", 3: "XYZ", 4: "XYZC"}.get(array.ndim, "XYZC"[: array.ndim])
        zooms = [float(z) for z in nii.header.get_zooms()[:3]] + [None] * 3
        unit = nii.header.get_xyzt_units()[0]
        scale = _um_per(unit) if unit != "unknown" else 1.0
        dx, dy, dz = (None if z is None else z * (scale or 1.0) for z in zooms[:3])
        if unit == "unknown" and (dx, dy, dz) == (1.0, 1.0, 1.0):
            dx = dy = dz = None  # nibabel's default header: no spacing was ever set
        return array, axes, [dz if array.ndim >= 3 else None, dy, dx]

    # -- checks -----------------------------------------------------------------------------------------------------
    def _to_czyx(self, array: np.ndarray, axes: str, path: Path) -> np.ndarray:
        if len(axes) != array.ndim:
            raise input_error(path, f"axes '{axes}' do not match shape {array.shape}", "set axes in the config")
        unknown = [a for a in axes if a not in "CZYXTSQI"]
        if "Q" in axes or "I" in axes or unknown:
            raise input_error(
                path,
                f"the file does not say which axis is which (axes read as '{axes}', shape {array.shape})",
                "save it as an ImageJ hyperstack or OME-TIFF, or give the axis order in the config, e.g. "
                "axes='ZCYX' (CLI: --axes ZCYX)",
            )
        if "S" in axes and "C" not in axes:  # channels stored as samples (RGB-like TIFF)
            axes = axes.replace("S", "C")
        for letter in [a for a in axes if a not in "CZYX"]:  # T, S: allowed only as singletons
            i = axes.index(letter)
            if array.shape[i] != 1:
                raise input_error(
                    path,
                    f"axis {letter} has size {array.shape[i]} (shape {array.shape}, axes '{axes}'); "
                    "LECL reads one z-stack per file",
                    "split time points / series into separate files (Fiji: Image > Stacks > Tools > Make Substack)",
                )
            array, axes = np.take(array, 0, axis=i), axes.replace(letter, "")
        if "Y" not in axes or "X" not in axes or "Z" not in axes:
            raise input_error(
                path,
                f"a 2D image where a 3D z-stack is expected (axes '{axes}', shape {array.shape})",
                "export the whole z-stack (all slices) rather than a single slice or a projection",
            )
        if "C" not in axes:
            array, axes = array[None], "C" + axes
        array = np.transpose(array, [axes.index(a) for a in "CZYX"])
        n_channels, n_slices = array.shape[:2]
        if n_slices < 2:
            raise input_error(
                path,
                f"a 2D image where a 3D z-stack is expected: only {n_slices} z-slice (shape CZYX {array.shape})",
                "export the whole z-stack (all slices) rather than a single slice or a projection",
            )
        if n_channels < self.min_channels:
            raise input_error(
                path,
                f"{n_channels} channel(s), need at least {self.min_channels} (a nuclei and a marker channel)",
                "export the stack with all channels (e.g. DAPI + marker) in one file; if the channels are in "
                "separate files, merge them (Fiji: Image > Color > Merge Channels)",
            )
        return np.ascontiguousarray(array)

    def _resolve_spacing(self, file_spacing, path: Path):
        file_spacing = list(file_spacing)
        spacing = [f if f else (self.spacing[i] if self.spacing else None) for i, f in enumerate(file_spacing)]
        from_file = [f is not None and f > 0 for f in file_spacing]
        if any(s is None or s <= 0 for s in spacing):
            if self.require_spacing:
                missing = [n for n, s in zip(("dz", "dy", "dx"), spacing) if s is None or s <= 0]
                raise input_error(
                    path,
                    f"voxel spacing {', '.join(missing)} is in neither the file's metadata nor the config",
                    "give spacing=(dz, dy, dx) in micrometres in the config (CLI: --spacing DZ DY DX), "
                    "e.g. (2.0, 0.5, 0.5) for a 2 um z-step and 0.5 um pixels",
                )
            spacing = [s if s else 1.0 for s in spacing]
        source = "file" if all(from_file) else ("config" if not any(from_file) else "file+config")
        return tuple(float(s) for s in spacing), source


def _imagej_spacing(meta: Mapping, page) -> list[float | None]:
    scale = _um_per(meta.get("unit")) if meta.get("unit") else None
    dz = meta.get("spacing")
    out: list[float | None] = [float(dz) * scale if (dz and scale) else None, None, None]
    for i, tag in ((1, "YResolution"), (2, "XResolution")):
        t = page.tags.get(tag)
        if t is not None and scale:
            num, den = t.value
            if num and (num, den) != (1, 1):
                out[i] = den / num * scale
    return out


def _ome_spacing(xml: str) -> list[float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return [None, None, None]
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return [None, None, None]
    out: list[float | None] = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        scale = _um_per(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        out.append(float(value) * scale if value is not None and scale else None)
    return out


def _check_values(array: np.ndarray, path) -> None:
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            c, z = np.argwhere(~finite)[0][:2]
            raise input_error(
                path,
                f"{int((~finite).sum())} NaN/infinite voxel(s), the first in channel {c}, slice z={z}",
                "replace NaN with 0 before export (Fiji: Process > Math > Remove NaNs)",
            )
    if array.size and array.min() == array.max():
        raise input_error(
            path,
            f"every voxel has the same value ({array.flat[0]}): the file holds no image",
            "check the export: the stack is blank or saturated",
        )


def read_stack(
    path: PathLike, axes: str | None = None, spacing: Sequence[float] | None = None, min_channels: int = 2
) -> tuple[np.ndarray, dict]:
    """Read one stack with :class:`IFStackReader`; returns ``(array (C, Z, Y, X) float32, meta)``."""
    reader = IFStackReader(axes=axes, spacing=spacing, min_channels=min_channels)
    array, meta = reader.get_data(reader.read(path))
    meta["filename_or_obj"] = str(path)
    return array.astype(np.float32, copy=False), meta


def _source_of(img, fallback: str = "image") -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", fallback))


class NucleiMarkerChannels(Transform):
    """Pick the nuclei and marker channels of a ``(C, Z, Y, X)`` stack -> ``(2, Z, Y, X)``: 0 nuclei, 1 marker.

    Everything downstream relies on this order. Checks that both indices exist and differ, and that neither channel
    is blank (a constant channel usually means the wrong channel index in the config).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, nuclei_channel: int = 0, marker_channel: int = 1):
        if nuclei_channel == marker_channel:
            raise input_error(
                "config: nuclei_channel / marker_channel",
                f"both are {nuclei_channel}",
                "set them to the two different channel indices of your stack (0-based)",
            )
        self.nuclei_channel, self.marker_channel = int(nuclei_channel), int(marker_channel)

    def __call__(self, img, source: str | None = None):
        source = source or _source_of(img)
        n = img.shape[0]
        for name, idx in (("nuclei_channel", self.nuclei_channel), ("marker_channel", self.marker_channel)):
            if not -n <= idx < n:
                raise input_error(
                    f"{source} (config: {name})",
                    f"{name}={idx}, but the image has {n} channels (0..{n - 1})",
                    f"set {name} to a channel index between 0 and {n - 1}",
                )
        out = img[[self.nuclei_channel, self.marker_channel]]
        for i, name in enumerate(("nuclei_channel", "marker_channel")):
            if out[i].min() == out[i].max():
                raise input_error(
                    f"{source} (config: {name})",
                    f"channel {(self.nuclei_channel, self.marker_channel)[i]} is blank (constant {float(out[i].min())})",
                    f"check {name}: it should index the {'nuclei (e.g. DAPI)' if i == 0 else 'marker'} channel",
                )
        return out


class NucleiMarkerChannelsd(MapTransform):
    """Dictionary twin of :class:`NucleiMarkerChannels`."""

    backend = NucleiMarkerChannels.backend

    def __init__(self, keys: KeysCollection, nuclei_channel: int = 0, marker_channel: int = 1,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.selector = NucleiMarkerChannels(nuclei_channel, marker_channel)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.selector(d[key])
        return d


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
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
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
    vol, _ = IFStackReader(min_channels=1, require_spacing=False, check_values=False).get_data(_StackFile(path))
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


# -- datalist -----------------------------------------------------------------------------------------------------------
def _sections_of(content) -> list[str]:
    """Keys holding lists of entries (dicts or bare paths), not metadata such as a spacing list."""
    if not isinstance(content, dict):
        return []
    return sorted(k for k, v in content.items()
                  if isinstance(v, list) and v and all(isinstance(e, (dict, str)) for e in v))


def datalist_sections(path: PathLike) -> list[str]:
    """The sections (``training``, ``validation``, ...) a datalist JSON holds."""
    return _sections_of(json.loads(Path(path).read_text(encoding="utf-8")))


def load_datalist(
    path: PathLike, section: str = "training", required: Sequence[str] = ("image", "points"),
    file_fields: Sequence[str] = ("image", "points"),
) -> list[dict]:
    """Load one section of a decathlon-style datalist (``{"training": [{"image": ..., "points": ...}], ...}``).

    Relative paths are taken from the datalist's folder. Every entry must have the ``required`` fields and every
    ``file_fields`` path it has must exist; otherwise the error names the datalist, the entry and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "datalist not found", "give the path of the datalist JSON (lecl synth writes one)")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise input_error(f"{path}, line {e.lineno}", f"invalid JSON ({e.msg})", "fix the JSON syntax") from None
    if not isinstance(content, dict) or section not in content:
        have = _sections_of(content)
        raise input_error(
            path, f"no '{section}' section (sections: {have})",
            f'add "{section}": [{{"image": "...", "points": "..."}}, ...] to the datalist',
        )
    entries = content[section]
    if not isinstance(entries, list) or not entries:
        raise input_error(f"{path}, '{section}'", "must be a non-empty list of entries", "list at least one image")
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and section == "test":
            continue  # MONAI turns a bare path in "test" into {"image": path}
        if not isinstance(entry, dict):
            raise input_error(f"{path}, {section}[{i}]", f"entry is a {type(entry).__name__}", 'write {"image": ...}')
        for field in required:
            if field not in entry:
                raise input_error(
                    f"{path}, {section}[{i}]", f"field '{field}' is missing", f'add "{field}": "path/to/file"'
                )
    base = path.resolve().parent  # absolute, so MONAI's joined paths and ours agree whatever the working directory
    resolved = load_decathlon_datalist(path, is_segmentation=False, data_list_key=section, base_dir=base)
    for i, entry in enumerate(resolved):
        for field in file_fields:
            if isinstance(entry.get(field), str):
                # MONAI joins "image" always and other fields only when they exist: join the rest for the message
                full = entry[field] if os.path.isabs(entry[field]) else os.path.normpath(base / entry[field])
                if not os.path.exists(full):
                    raise input_error(
                        f"{path}, {section}[{i}].{field}",
                        f"file not found: {full}",
                        "fix the path (relative paths are taken from the datalist's folder) or remove the entry",
                    )
                entry[field] = full
    return resolved
