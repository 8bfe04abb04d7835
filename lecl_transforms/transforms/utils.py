"""Small helpers shared by the transforms: numpy views, points, metadata on outputs."""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.utils import MetaKeys, convert_data_type

from ..errors import input_error

__all__ = [
    "IGNORE",
    "as_numpy",
    "as_points",
    "with_meta_of",
    "one_key",
]


IGNORE = 255  # value of unlabelled pixels in weak labels and type maps


def as_numpy(x, dtype=None) -> np.ndarray:
    return convert_data_type(x, np.ndarray, dtype=dtype)[0]


def as_points(points) -> np.ndarray:
    return as_numpy(points).astype(np.int64).reshape(-1, 3)


def _output_meta(source, spatial_ndim: int, shape) -> tuple[dict, np.ndarray | None] | None:
    """Metadata for an output derived from ``source``: its own for a 3D output; for a 2D one the source's file and
    ``spacing`` ``(dy, dx)``, with the stack's ``(dz, dy, dx)`` kept as ``spacing_zyx``."""
    meta = getattr(source, "meta", None)
    if not meta:
        return None
    meta = copy.deepcopy(dict(meta))
    spacing = meta.get("spacing")
    spacing = None if spacing is None else np.asarray(as_numpy(spacing), np.float64).ravel()
    affine = None
    if spatial_ndim == 2 and spacing is not None and len(spacing) == 3:
        meta["spacing_zyx"] = spacing
        meta["spacing"] = spacing[1:]
        meta["spacing_note"] = "spacing is (dy, dx) of this projection; spacing_zyx is the source stack's (dz, dy, dx)"
    if spatial_ndim == 2:
        for key in (MetaKeys.AFFINE, MetaKeys.ORIGINAL_AFFINE):
            meta.pop(key, None)
        yx = meta["spacing"] if meta.get("spacing") is not None else np.ones(2)
        affine = np.diag([*np.asarray(yx, np.float64)[-2:], 1.0])  # (y, x) image axes, as the stack's is (z, y, x)
        meta[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
    meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(shape[1:])
    meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
    return meta, affine


def with_meta_of(value, source, spatial_ndim: int = 3, extra: dict | None = None):
    """``value`` (channel-first array or tensor) as a ``MetaTensor`` carrying ``source``'s metadata: at least
    ``filename_or_obj`` and ``spacing`` (a 2D output gets ``(dy, dx)``, see ``spacing_note``), plus ``extra``.

    Dictionary twins use it so outputs keep where they came from (QC, writers, ``source_of`` in error messages).
    ``value`` is returned unchanged when ``source`` has no metadata or MONAI's meta tracking is off."""
    found = _output_meta(source, spatial_ndim, tuple(value.shape)) if get_track_meta() else None
    if found is None:
        return value
    meta, affine = found
    meta.update(extra or {})
    if isinstance(value, torch.Tensor):
        data = value.as_tensor() if isinstance(value, MetaTensor) else value
    else:
        data = torch.as_tensor(np.ascontiguousarray(value))
    return MetaTensor(data, affine=affine, meta=meta) if affine is not None else MetaTensor(data, meta=meta)


def one_key(keys, owner: str, output: str) -> None:
    """Refuse several input keys for a dictionary twin that writes one output (the second would overwrite the
    first's result)."""
    if len(keys) != 1:
        raise input_error(f"config: {owner}", f"keys {list(keys)} would all write '{output}'",
                          f"give {owner} one key, and use one {owner} per input")
