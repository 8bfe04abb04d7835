"""The one precedence rule for a stack's voxel spacing ``(dz, dy, dx)`` in micrometres.

Where a component needs the spacing of the stack it works on, it asks :func:`resolve_spacing`, which takes, first
found wins:

1. ``given``: a spacing passed with this very call (the caller knows best);
2. the image's metadata: what :class:`~lecl_transforms.data.reader.IFStackReader` recorded when it read the stack,
   after its own file-versus-config rule (``spacing`` on a 3D stack; ``spacing_zyx`` on a 2D projection of one, whose
   ``spacing`` is its ``(dy, dx)``);
3. ``default``: the component's configured spacing;
4. else unknown: an error when ``required``, ``None`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import input_error

__all__ = ["resolve_spacing"]


def _three(value, where: str) -> tuple[float, float, float]:
    if hasattr(value, "detach"):  # a torch tensor: the bottom layer does not import torch for this
        value = value.detach().cpu().numpy()
    spacing = tuple(float(v) for v in np.asarray(value, np.float64).ravel())
    if len(spacing) != 3:
        raise input_error(where, f"spacing {spacing} is not (dz, dy, dx)", "give three numbers (dz, dy, dx) in um")
    return spacing


def resolve_spacing(img=None, given: Sequence[float] | None = None, default: Sequence[float] | None = None,
                    required: bool = True, fix: str | None = None) -> tuple[float, float, float] | None:
    """``(dz, dy, dx)`` um of ``img`` by the rule of this module; ``fix`` is the advice of the error when the spacing
    is unknown and ``required``."""
    meta = getattr(img, "meta", None) or {}
    where = str(meta.get("filename_or_obj", "image"))
    for value in (given, meta.get("spacing_zyx"), meta.get("spacing"), default):
        if value is not None:
            return _three(value, where)
    if required:
        raise input_error(where, "voxel spacing unknown",
                          fix or "load the stack with IFStackReader (it records the spacing) or pass spacing")
    return None
