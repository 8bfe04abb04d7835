"""Reading 3D multichannel IF stacks (ImageJ/OME TIFF, NIfTI) as ``(C, Z, Y, X)`` with spacing in micrometres.

Axes convention used everywhere in this package: images are ``(C, Z, Y, X)``, volumes ``(Z, Y, X)``, points are
integer voxel indices ``(z, y, x)``, voxel spacing is ``(dz, dy, dx)`` in micrometres."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..errors import input_error

__all__ = [
    "IFStackReader",
    "read_stack",
    "source_of",
    "TIFF_SUFFIXES",
    "NIFTI_SUFFIXES",
]


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


def source_of(img, fallback: str = "image") -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", fallback))
