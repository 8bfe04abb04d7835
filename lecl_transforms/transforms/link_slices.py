"""LECL test time, step 4, as MONAI transforms: per-slice 2D detections -> 3D nuclei with a positive/negative class.

Kernel: :func:`~lecl_transforms.transforms.functional.link_slices.link_slices` (linking rule documented there).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..data.reader import source_of
from ..errors import input_error
from .functional.link_slices import Nuclei3D, check_link_parameters, link_slices
from ..utils.spacing import resolve_spacing
from .utils import as_numpy, one_key, with_meta_of

__all__ = ["LinkSlices", "LinkSlicesd"]


def _zyx(instances) -> np.ndarray:
    """``(Z, Y, X)`` or channel-first ``(1, Z, Y, X)`` instance ids -> ``(Z, Y, X)`` numpy array."""
    array = as_numpy(instances)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise input_error(source_of(instances, "instances"), f"shape {tuple(array.shape)} is not (Z, Y, X)",
                          "give per-slice instance ids as (Z, Y, X) or channel-first (1, Z, Y, X)")
    return array


class LinkSlices(Transform):
    """Link per-slice 2D nucleus instances of a z-stack into 3D nuclei and classify each one.

    ``instances`` ``(Z, Y, X)`` (or ``(1, Z, Y, X)``) integer per-slice instance ids unique over the stack,
    ``slice_class`` ``(N + 1,)`` (1 negative, 2 positive, 0 none; index 0 unused), ``slice_score`` ``(N + 1,)``
    (positive-class probability) -> :class:`~lecl_transforms.transforms.functional.link_slices.Nuclei3D`.
    A nucleus is positive if predicted positive on at least ``min_positive_slices`` slices (1 = the paper's rule).
    ``spacing`` ``(dz, dy, dx)`` um by :func:`~lecl_transforms.utils.resolve_spacing` (the call's argument, else the
    instances' metadata, else this transform's ``spacing``); it only matters when ``max_gap_um > 0`` or
    ``min_volume_um3 > 0`` (3D nuclei smaller than this many um^3 are dropped; an unknown spacing is then refused).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, min_overlap: float = 0.5, max_gap_um: float = 0.0, min_positive_slices: int = 1,
                 method: str = "overlap", projection_radius: float = 4, spacing: Sequence[float] | None = None,
                 min_volume_um3: float = 0.0):
        check_link_parameters(min_overlap, max_gap_um, min_positive_slices, method, projection_radius, min_volume_um3)
        self.min_overlap, self.max_gap_um = float(min_overlap), float(max_gap_um)
        self.min_volume_um3 = float(min_volume_um3)
        self.min_positive_slices, self.method = int(min_positive_slices), method
        self.projection_radius, self.spacing = float(projection_radius), spacing

    def settings(self) -> dict:
        """The constructor's arguments (what :meth:`LinkSlicesd.with_settings` copies)."""
        return {"min_overlap": self.min_overlap, "max_gap_um": self.max_gap_um,
                "min_positive_slices": self.min_positive_slices, "method": self.method,
                "projection_radius": self.projection_radius, "spacing": self.spacing,
                "min_volume_um3": self.min_volume_um3}

    def _spacing(self, instances, spacing) -> tuple[float, float, float]:
        found = resolve_spacing(instances, given=spacing, default=self.spacing, required=False)
        if found is None and self.max_gap_um > 0:
            raise input_error(f"{source_of(instances, 'instances')} (config: max_gap_um)",
                              f"max_gap_um={self.max_gap_um} needs the z-step, but the voxel spacing is unknown",
                              "load the image with IFStackReader, pass spacing, or set max_gap_um to 0")
        if found is None and self.min_volume_um3 > 0:
            raise input_error(f"{source_of(instances, 'instances')} (config: min_volume_um3)",
                              f"min_volume_um3={self.min_volume_um3:g} needs the voxel size, but the voxel spacing is "
                              "unknown", "load the image with IFStackReader, pass spacing, or set min_volume_um3 to 0")
        return found or (1.0, 1.0, 1.0)  # without gap bridging or volumes the linking does not depend on the spacing

    def __call__(self, instances, slice_class, slice_score, spacing: Sequence[float] | None = None) -> Nuclei3D:
        return link_slices(_zyx(instances), as_numpy(slice_class), as_numpy(slice_score, np.float64),
                           self._spacing(instances, spacing), min_overlap=self.min_overlap,
                           max_gap_um=self.max_gap_um, min_positive_slices=self.min_positive_slices,
                           method=self.method, projection_radius=self.projection_radius,
                           min_volume_um3=self.min_volume_um3)


class LinkSlicesd(MapTransform):
    """Dictionary twin of :class:`LinkSlices`: ``keys`` are the per-slice instances; reads ``slice_class_key`` and
    ``slice_score_key``; writes ``nuclei_key`` (the ``Nuclei3D``), ``labels_key`` (3D ids, channel-first
    ``(1, Z, Y, X)`` int32: torch lacks full uint32 support) and ``classes_key`` (``(1, Z, Y, X)`` uint8, 0/1/2),
    both with the instances' metadata when they carry any. The spacing is the instances' (metadata), else that of
    ``image_key``'s stack (the inferer's instances are plain arrays; the image read by IFStackReader knows it), else
    ``spacing``."""

    backend = LinkSlices.backend

    def __init__(self, keys: KeysCollection = "instances", slice_class_key: str = "slice_class",
                 slice_score_key: str = "slice_score", nuclei_key: str = "nuclei", labels_key: str = "labels3d",
                 classes_key: str = "classes3d", min_overlap: float = 0.5, max_gap_um: float = 0.0,
                 min_positive_slices: int = 1, method: str = "overlap", projection_radius: float = 4,
                 spacing: Sequence[float] | None = None, allow_missing_keys: bool = False, min_volume_um3: float = 0.0,
                 image_key: str | None = "image"):
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        one_key(self.keys, type(self).__name__, f"{nuclei_key}', '{labels_key}' and '{classes_key}")
        self.slice_class_key, self.slice_score_key = slice_class_key, slice_score_key
        self.nuclei_key, self.labels_key, self.classes_key = nuclei_key, labels_key, classes_key
        self.transform = LinkSlices(min_overlap, max_gap_um, min_positive_slices, method, projection_radius, spacing,
                                    min_volume_um3)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            for needed in (self.slice_class_key, self.slice_score_key):
                if needed not in d:
                    raise input_error(f"config: {type(self).__name__}", f"no '{needed}' in the data (keys: {list(d)})",
                                      f"produce '{needed}' before {type(self).__name__} or set its key name")
            nuclei = self.transform(d[key], d[self.slice_class_key], d[self.slice_score_key],
                                    self._stack_spacing(d, key))
            d[self.nuclei_key] = nuclei
            d[self.labels_key] = with_meta_of(nuclei.labels.astype(np.int32)[None], d[key])
            d[self.classes_key] = with_meta_of(nuclei.classes()[None], d[key])
        return d

    def with_settings(self, **changes) -> LinkSlicesd:
        """A copy with some linking settings changed (e.g. ``min_volume_um3=20``: a calibration candidate)."""
        settings = self.transform.settings()
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise input_error(f"{type(self).__name__} settings", f"unknown {unknown}",
                              f"use some of {sorted(settings)}")
        twin = copy.copy(self)
        twin.transform = LinkSlices(**{**settings, **changes})
        return twin

    def _stack_spacing(self, d: Mapping, key) -> tuple[float, float, float] | None:
        if resolve_spacing(d[key], required=False) is not None or d.get(self.image_key) is None:
            return None  # the instances' own spacing (or the transform's default) decides
        return resolve_spacing(d[self.image_key], required=False)
