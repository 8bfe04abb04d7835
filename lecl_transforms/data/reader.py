"""Reading 3D multichannel IF stacks (ImageJ/OME TIFF, NIfTI) as ``(C, Z, Y, X)`` with spacing in micrometres.

Axes convention used everywhere in this package: images are ``(C, Z, Y, X)``, volumes ``(Z, Y, X)``, points are
integer voxel indices ``(z, y, x)``, voxel spacing is ``(dz, dy, dx)`` in micrometres."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..errors import input_error
from ..utils.names import NIFTI_SUFFIXES, TIFF_SUFFIXES
from .tiff_metadata import imagej_spacing, ome_spacing, read_tiff_series, um_per

__all__ = ["IFStackReader", "read_stack", "source_of", "tiff_spacing", "nifti_spacing"]


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
    ``(dz, dy, dx)`` in micrometres (the spacing actually used), ``spacing_source`` (``"file"``, ``"config"``,
    ``"file+config"`` or ``"config (overrides file)"``), ``axes_in_file``, an ``affine`` diagonal in ``(z, y, x)``
    and ``original_channel_dim = 0``. Truncated TIFFs (fewer planes readable than the metadata announces) and
    flat plane stacks that do not say which planes are channels and which are slices are reported, not guessed.

    Use it as any MONAI reader::

        LoadImaged("image", reader=IFStackReader(spacing=(2.0, 0.5, 0.5)))

    Args:
        axes: axis letters of the file (e.g. ``"ZCYX"``), overriding its metadata; needed for plain TIFFs that carry
            no axis metadata. Checked here: letters from ``C Z Y X T S``, each at most once, ``Z``, ``Y``, ``X``
            present.
        spacing: ``(dz, dy, dx)`` in micrometres, used for any axis whose spacing the file does not state. Where the
            file states a spacing that differs from this by more than 1%, reading raises an error naming both,
            unless ``override_spacing``.
        override_spacing: use ``spacing`` for every axis even where the file states another value
            (``spacing_source = "config (overrides file)"``); needs ``spacing``.
        min_channels: fewer channels than this is an error (2 for an IF stack: nuclei + marker; 1 for label volumes).
        require_spacing: raise when neither the file nor ``spacing`` gives the voxel spacing.
        check_values: raise on NaN/infinite values and on an image whose voxels all have the same value.
    """

    def __init__(self, axes: str | None = None, spacing: Sequence[float] | None = None, min_channels: int = 2,
                 require_spacing: bool = True, check_values: bool = True, override_spacing: bool = False, **kwargs):
        super().__init__()
        self.axes = _check_axes(axes)
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise input_error("spacing", f"got {spacing}",
                                  "give three positive numbers (dz, dy, dx) in micrometres")
        if override_spacing and spacing is None:
            raise input_error(
                "override_spacing (--override-spacing)", "given without a spacing to override the file's with",
                "pass --spacing DZ DY DX too, or drop --override-spacing to use the file's spacing",
            )
        self.spacing = spacing
        self.override_spacing = bool(override_spacing)
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
            raise input_error(
                path, f"not a readable TIFF ({e})",
                "re-export the stack as TIFF from Fiji/ImageJ, or copy it again if a transfer may have cut it short",
            ) from e
        with tif:
            array = read_tiff_series(tif, path)
            file_axes = tif.series[0].axes.upper()
            spacing = tiff_spacing(tif)
        unnamed = any(a in "QI" for a in file_axes)  # tifffile's letters for axes the file does not name
        wants_c_and_z = (self.axes is None and self.min_channels > 1) or (self.axes and "C" in self.axes)
        if unnamed and array.ndim == 3 and wants_c_and_z:
            # (N, Y, X): no way to tell which planes are channels and which are slices; any axes string would guess
            n, ny, nx = array.shape
            given = (f"; axes '{self.axes}' names {len(self.axes)} axes, the file holds 3 and not how many channels"
                     if self.axes else "")
            raise input_error(
                path,
                f"{n} planes stored without saying which are channels and which are slices "
                f"(a flat (N, Y, X) stack {array.shape}), so no axes setting can split them{given}",
                "re-save it as an ImageJ hyperstack: in Fiji, Image > Hyperstacks > Stack to Hyperstack (enter the "
                "channels and slices), then File > Save As > Tiff; or in Python, for planes stored slice by slice "
                f"with C channels each: a = tifffile.imread(path); tifffile.imwrite(new_path, a.reshape(-1, C, {ny}, "
                f"{nx}), imagej=True, metadata={{'axes': 'ZCYX'}}) (channel by channel: a.reshape(C, -1, {ny}, "
                f"{nx}).swapaxes(0, 1))",
            )
        if self.axes and len(self.axes) != array.ndim:
            example = {3: "ZYX", 4: "ZCYX", 5: "TZCYX"}.get(array.ndim, "ZCYX")
            raise input_error(
                path,
                f"axes '{self.axes}' given in the config, but the file has {array.ndim} dimensions {array.shape}",
                f"leave axes unset: the file's own axes are '{file_axes}'" if not unnamed else
                f"give one letter per dimension, e.g. axes='{example}' (CLI: --axes {example})",
            )
        return array, self.axes or file_axes, spacing

    def _read_nifti(self, path: Path):
        import nibabel as nib

        try:
            nii = nib.load(str(path))
        except Exception as e:
            raise input_error(path, f"not a readable NIfTI ({e})", "re-save the file as .nii or .nii.gz") from e
        try:
            array = np.asanyarray(nii.dataobj)
        except Exception as e:  # the header reads, the voxels do not: cut short
            raise input_error(path, f"the file is truncated or incomplete ({e})",
                              "copy the file again (a transfer may have stopped early) or re-export it") from e
        if array.ndim == 5 and array.shape[3] == 1:  # (X, Y, Z, 1, C) as written for vector images
            array = array[:, :, :, 0]
        axes = self.axes or {2: "XY", 3: "XYZ", 4: "XYZC"}.get(array.ndim, "XYZC"[: array.ndim])
        return array, axes, nifti_spacing(nii.header, array.ndim)

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
        file_spacing = [float(f) if f is not None and f > 0 else None for f in file_spacing]
        from_file = [f is not None for f in file_spacing]
        if self.override_spacing:
            return self.spacing, "config (overrides file)" if any(from_file) else "config"
        if self.spacing:
            # a given spacing the file contradicts is a mistake either way: say so instead of picking one silently
            clash = [n for n, f, g in zip(("dz", "dy", "dx"), file_spacing, self.spacing)
                     if f is not None and abs(f - g) > 0.01 * f]
            if clash:
                raise input_error(
                    path,
                    f"the file states voxel spacing (dz, dy, dx) = {_fmt_spacing(file_spacing)} um, but spacing "
                    f"{_fmt_spacing(self.spacing)} um was given ({', '.join(clash)} differ by more than 1%)",
                    "drop --spacing to use the file's, or pass --override-spacing to use yours",
                )
        spacing = [f if f else (self.spacing[i] if self.spacing else None) for i, f in enumerate(file_spacing)]
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


def tiff_spacing(tif) -> list[float | None]:
    """``[dz, dy, dx]`` in um as an open ``tifffile.TiffFile``'s OME or ImageJ metadata states it (None where not)."""
    if tif.is_ome and tif.ome_metadata:
        return ome_spacing(tif.ome_metadata)
    if tif.is_imagej:
        return imagej_spacing(tif.imagej_metadata or {}, tif.pages[0])
    return [None, None, None]


def nifti_spacing(header, ndim: int = 3) -> list[float | None]:
    """``[dz, dy, dx]`` in um from a NIfTI header's zooms and space unit (None where not stated: ``dz`` of a 2D
    image, and all three for nibabel's default header, unit unknown with zooms 1)."""
    zooms = [float(z) for z in header.get_zooms()[:3]] + [None] * 3
    unit = header.get_xyzt_units()[0]
    scale = um_per(unit) if unit != "unknown" else 1.0
    dx, dy, dz = (None if z is None else z * (scale or 1.0) for z in zooms[:3])
    if unit == "unknown" and (dx, dy, dz) == (1.0, 1.0, 1.0):
        return [None, None, None]  # nibabel's default header: no spacing was ever set
    return [dz if ndim >= 3 else None, dy, dx]


def _check_axes(axes) -> str | None:
    """``axes`` upper-cased, or an error naming what is wrong with it (checked before any file is opened)."""
    if axes is None or (isinstance(axes, str) and not axes.strip()):
        return None
    letters = axes.strip().upper() if isinstance(axes, str) else ""
    problems = [f"{', '.join(sorted(set(bad)))} {what}" for bad, what in (
        ([a for a in letters if a not in "CZYXTS"], "not an axis letter (C, Z, Y, X, T, S)"),
        ([a for a in letters if letters.count(a) > 1], "given more than once"),
        ([a for a in "ZYX" if a not in letters], "missing")) if bad]
    if problems:
        raise input_error("axes (--axes)", f"'{axes}': {'; '.join(problems)}",
                          "give each axis of the file once, in file order, from C (channel), Z, Y, X (and singleton "
                          "T, S), e.g. axes='ZCYX' for a (Z, C, Y, X) stack (CLI: --axes ZCYX)")
    return letters


def _fmt_spacing(spacing) -> str:
    return "(" + ", ".join("not stated" if v is None else f"{v:g}" for v in spacing) + ")"


def _check_values(array: np.ndarray, path) -> None:
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            c, z = np.argwhere(~finite)[0][:2]
            raise input_error(path, f"{int((~finite).sum())} NaN/infinite voxel(s), the first in channel {c}, "
                              f"slice z={z}", "replace NaN with 0 before export (Fiji: Process > Math > Remove NaNs)")
    if array.size and array.min() == array.max():
        raise input_error(path, f"every voxel has the same value ({array.flat[0]}): the file holds no image",
                          "check the export: the stack is blank or saturated")


def read_stack(
    path: PathLike, axes: str | None = None, spacing: Sequence[float] | None = None, min_channels: int = 2,
    override_spacing: bool = False,
) -> tuple[np.ndarray, dict]:
    """Read one stack with :class:`IFStackReader`; returns ``(array (C, Z, Y, X) float32, meta)``.

    ``axes``, ``spacing``, ``min_channels`` and ``override_spacing`` are those of :class:`IFStackReader`: ``spacing``
    fills axes the file does not state and must agree (within 1%) with those it does, unless ``override_spacing``,
    which makes ``spacing`` win for every axis. ``meta["spacing"]`` is the spacing used, ``meta["spacing_source"]``
    where it came from.
    """
    reader = IFStackReader(axes=axes, spacing=spacing, min_channels=min_channels, override_spacing=override_spacing)
    array, meta = reader.get_data(reader.read(path))
    meta["filename_or_obj"] = str(path)
    return array.astype(np.float32, copy=False), meta


def source_of(img, fallback: str = "image") -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", fallback))
