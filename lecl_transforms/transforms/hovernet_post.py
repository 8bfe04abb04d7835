"""HoVer-Net post-processing as MONAI transforms (step 4 of the method, test time): network outputs -> instances and
per-nucleus detections. The vectorised kernel is :func:`~.functional.hovernet_post.hovernet_postprocess`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.enums import HoVerNetBranch

from ..errors import input_error
from .functional.hovernet_post import SliceDetections, hovernet_postprocess
from .utils import one_key

__all__ = [
    "HoVerNetPostProcess",
    "HoVerNetPostProcessd",
]

NP, HV, NC = HoVerNetBranch.NP.value, HoVerNetBranch.HV.value, HoVerNetBranch.NC.value


class HoVerNetPostProcess(Transform):
    """HoVer-Net outputs -> one :class:`SliceDetections` per slice (marker-controlled watershed from NP + HV, types
    from NC), equal to MONAI's ``HoVerNetInstanceMapPostProcessing`` + ``HoVerNetNuclearTypePostProcessing``.

    Call it on the network's output dict keyed by ``HoVerNetBranch`` values: ``"nucleus_prediction"`` ``(B, 2, H,
    W)``, ``"horizontal_vertical"`` ``(B, 2, H, W)`` and optionally ``"type_prediction"`` ``(B, C, H, W)``, on any
    device. The arguments are :func:`hovernet_postprocess`'s, with MONAI's defaults.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, *, activation: str = "softmax", mask_threshold: float | None = None, min_object_size: int = 10,
                 sobel_kernel_size: int = 5, distance_smooth_sigma: float = 1.0, marker_threshold: float = 0.4,
                 marker_radius: int = 2, watershed_connectivity: int = 1, keep_unmarked: bool = True,
                 split_depth: float = 2.0, nucleus_threshold: float | None = None, min_instance_size: int = 0):
        self.kwargs = dict(activation=activation, mask_threshold=mask_threshold, min_object_size=min_object_size,
                           sobel_kernel_size=sobel_kernel_size, distance_smooth_sigma=distance_smooth_sigma,
                           marker_threshold=marker_threshold, marker_radius=marker_radius,
                           watershed_connectivity=watershed_connectivity, keep_unmarked=keep_unmarked,
                           split_depth=split_depth, nucleus_threshold=nucleus_threshold,
                           min_instance_size=min_instance_size)

    def with_settings(self, **changes) -> HoVerNetPostProcess:
        """A copy with some settings changed (e.g. ``nucleus_threshold=0.6``: a calibration candidate)."""
        unknown = sorted(set(changes) - set(self.kwargs))
        if unknown:
            raise input_error(f"{type(self).__name__} settings", f"unknown {unknown}",
                              f"use some of {sorted(self.kwargs)}")
        return type(self)(**{**self.kwargs, **changes})

    def __call__(self, outputs: Mapping) -> list[SliceDetections]:
        missing = [k for k in (NP, HV) if k not in outputs]
        if missing:
            raise input_error(f"{type(self).__name__}(outputs)", f"no {missing} among keys {list(outputs)}",
                              f"pass the HoVer-Net output dict with keys '{NP}', '{HV}' (and optionally '{NC}')")
        return hovernet_postprocess(outputs[NP], outputs[HV], outputs.get(NC), **self.kwargs)


class HoVerNetPostProcessd(MapTransform):
    """Dictionary twin of :class:`HoVerNetPostProcess`: ``keys`` is the NP key; reads the HV key and, when present,
    the NC key; writes ``instances_key`` ``(B, H, W)`` int32 and ``detections_key`` (a list of B
    :class:`SliceDetections`). Extra keyword arguments go to :class:`HoVerNetPostProcess`."""

    backend = HoVerNetPostProcess.backend

    def __init__(self, keys: KeysCollection = NP, horizontal_vertical_key: str = HV,
                 type_prediction_key: str | None = NC, instances_key: str = "instances",
                 detections_key: str = "detections", allow_missing_keys: bool = False, **postprocess_kwargs):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, f"{instances_key}/{detections_key}")
        self.hv_key, self.nc_key = horizontal_vertical_key, type_prediction_key
        self.instances_key, self.detections_key = instances_key, detections_key
        self.transform = HoVerNetPostProcess(**postprocess_kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            # a missing HV key is reported by the array transform; NC is optional
            outputs = {NP: d[key], **{branch: d[k] for branch, k in ((HV, self.hv_key), (NC, self.nc_key)) if k in d}}
            detections = self.transform(outputs)
            d[self.instances_key] = np.stack([det.instances for det in detections])
            d[self.detections_key] = detections
        return d
