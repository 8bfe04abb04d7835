"""The weak-label pipeline as one list of MONAI transforms (Alg. 1 and the 2D label), shared by ``lecl prepare`` and
the bundle configs."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, DeleteItemsd, LoadImaged

from ..data.points import LoadPointsd
from ..data.reader import IFStackReader
from .channels import NucleiMarkerChannelsd
from .emip import (
    ExtendedMIPd,
    MaxIntensityProjectiond,
    NucleiMask3Dd,
    PointDistanceMapd,
    SliceSetsd,
    VoronoiCellsd,
)
from .rules import resolve_rules
from .targets import ThreeRegionLabeld

__all__ = [
    "pseudo_label_transforms",
]


def pseudo_label_transforms(nuclei_channel: int = 0, marker_channel: int = 1, spacing: Sequence[float] | None = None,
                            axes: str | None = None, rules="robust", emip_channels: str = "both", seed: int = 0,
                            keep_intermediate: bool = False) -> Compose:
    """The whole weak-label pipeline on a dict ``{"image": path, "points": path}`` (Alg. 1 and the 2D label).

    Adds ``emip``, ``mip`` ``(2, Y, X)``, ``cells``, ``slice_sets``, ``label``, ``instances``; drops the 3D
    intermediates (distance map, 3D mask) unless ``keep_intermediate``, so it caches lightly in ``CacheDataset``.
    """
    rules = resolve_rules(rules)
    steps = [
        LoadImaged("image", reader=IFStackReader(axes=axes, spacing=spacing), image_only=True),
        NucleiMarkerChannelsd("image", nuclei_channel, marker_channel),
        LoadPointsd("points", image_key="image"),
        PointDistanceMapd("image"),
        NucleiMask3Dd("image", rules=rules, seed=seed),
        VoronoiCellsd("points"),
        SliceSetsd("nuclei_mask", rules=rules),
        ExtendedMIPd("image", channels=emip_channels),
        MaxIntensityProjectiond("image"),
        ThreeRegionLabeld("emip", rules=rules, seed=seed),
    ]
    if not keep_intermediate:
        steps.append(DeleteItemsd(["point_distance", "nuclei_mask"]))
    return Compose(steps)
