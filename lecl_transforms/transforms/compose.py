"""The weak-label pipeline as one list of MONAI transforms (Alg. 1 and the 2D label), shared by ``lecl prepare`` and
the bundle configs."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, DeleteItemsd, LoadImaged

from ..data.points import LoadPointsd
from ..data.reader import IFStackReader
from .channels import NucleiMarkerChannelsd
from .checks import ClickPlacementCheckd, SliceSetCheckd
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
                            keep_intermediate: bool = False, allow_suspicious_input: bool = False,
                            override_spacing: bool = False) -> Compose:
    """The whole weak-label pipeline on a dict ``{"image": path, "points": path}`` (Alg. 1 and the 2D label).

    Adds ``emip``, ``mip`` ``(2, Y, X)``, ``cells``, ``slice_sets``, ``label``, ``instances``; drops the 3D
    intermediates (distance map, 3D mask) unless ``keep_intermediate``, so it caches lightly in ``CacheDataset``.

    Suspicious input stops with a message naming the file, the finding and the fix (see
    :mod:`~lecl_transforms.transforms.checks`): the two channels holding the same image, clicks off the nuclei or
    channels that look swapped, slice sets spanning whole stacks. ``allow_suspicious_input`` turns these into
    logged warnings. ``override_spacing`` makes ``spacing`` replace the file's own (``IFStackReader``).
    """
    rules = resolve_rules(rules)
    reader = IFStackReader(axes=axes, spacing=spacing, override_spacing=override_spacing)
    steps = [
        LoadImaged("image", reader=reader, image_only=True),
        NucleiMarkerChannelsd("image", nuclei_channel, marker_channel, allow_suspicious_input=allow_suspicious_input),
        LoadPointsd("points", image_key="image"),
        PointDistanceMapd("image"),
        NucleiMask3Dd("image", rules=rules, seed=seed),
        VoronoiCellsd("points"),
        SliceSetsd("nuclei_mask", rules=rules),
        ExtendedMIPd("image", channels=emip_channels),
        MaxIntensityProjectiond("image"),
        ThreeRegionLabeld("emip", rules=rules, seed=seed),
        # after the k-means steps, so the clicks' agreement with both clusterings is judged with their brightness
        ClickPlacementCheckd("image", agreement_keys=("nuclei_mask", "label"),
                             allow_suspicious_input=allow_suspicious_input),
        SliceSetCheckd("slice_sets", rules=rules, allow_suspicious_input=allow_suspicious_input),
    ]
    if not keep_intermediate:
        steps.append(DeleteItemsd(["point_distance", "nuclei_mask"]))
    return Compose(steps)
