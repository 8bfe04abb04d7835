"""Small helpers shared by the transforms: numpy views, points, spacing from metadata."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.utils import convert_data_type

from ..data.reader import source_of
from ..errors import input_error

__all__ = [
    "IGNORE",
    "as_numpy",
    "as_points",
    "spacing_of",
]


IGNORE = 255  # value of unlabelled pixels in weak labels and type maps


def as_numpy(x, dtype=None) -> np.ndarray:
    return convert_data_type(x, np.ndarray, dtype=dtype)[0]


def as_points(points) -> np.ndarray:
    return as_numpy(points).astype(np.int64).reshape(-1, 3)


def spacing_of(img, spacing: Sequence[float] | None) -> tuple[float, float, float]:
    meta = getattr(img, "meta", None) or {}
    value = meta.get("spacing") if meta.get("spacing") is not None else spacing
    if value is None:
        raise input_error(source_of(img), "voxel spacing unknown", "load the image with IFStackReader or pass spacing")
    value = tuple(float(v) for v in as_numpy(value).ravel())
    if len(value) != 3:
        raise input_error(source_of(img), f"spacing {value} is not (dz, dy, dx)", "give three numbers (dz, dy, dx)")
    return value
