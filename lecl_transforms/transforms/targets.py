"""The training targets: the three-region weak label on a projection and the HoVer-Net NP/HV/NC/ignore maps."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..errors import input_error
from . import functional as F
from .rules import PseudoLabelRules, resolve_rules
from .utils import IGNORE, as_numpy, as_points, one_key, with_meta_of

__all__ = [
    "ThreeRegionLabel",
    "ThreeRegionLabeld",
    "HoVerNetTargets",
    "HoVerNetTargetsd",
]


# -- the weak label and HoVer-Net targets ------------------------------------------------------------------------------
class ThreeRegionLabel(Transform):
    """Three-region weak label on a projection (Qu et al. 2019 as used by LECL) and its per-cell instances.

    ``projection`` ``(2, Y, X)`` (nuclei in channel 0), ``points`` ``(N, 3)``, ``cells`` ``(1, Y, X)`` ->
    ``(label (1, Y, X) uint8: 1 nucleus / 0 background / 255 ignore, instances (1, Y, X) int32: nuclei region
    ∩ Voronoi cell, id = cell id)``. Touching nuclei stay apart because each keeps its own cell's id.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | PseudoLabelRules | Mapping = "robust", seed: int = 0, min_size: int = 30,
                 dilate: float = 5, erode: float = 7, background_margin: float = 10):
        self.rules, self.seed = resolve_rules(rules), seed
        self.kwargs = dict(min_size=min_size, dilate=dilate, erode=erode, background_margin=background_margin)

    def __call__(self, projection, points, cells, return_agreement: bool = False) -> tuple:
        """``(label, instances)``; with ``return_agreement`` also the clicks' agreement with this 2D clustering (see
        :func:`~lecl_transforms.transforms.functional.cluster_agreement`) as a third item."""
        label, instances, agreement = F.three_region_label(
            as_numpy(projection, np.float32)[0], as_points(points)[:, 1:], as_numpy(cells, np.int32)[0], self.rules,
            self.seed, **self.kwargs, return_agreement=True)
        return (label[None], instances[None], agreement) if return_agreement else (label[None], instances[None])


class ThreeRegionLabeld(MapTransform):
    """Dictionary twin of :class:`ThreeRegionLabel`: one projection key; writes ``label_key`` and ``instances_key``
    with the projection's metadata (the label's holds the 2D ``cluster_agreement``, judged by
    :class:`~lecl_transforms.transforms.checks.ClickPlacementCheckd`)."""

    backend = ThreeRegionLabel.backend

    def __init__(self, keys: KeysCollection = "emip", points_key: str = "points", cells_key: str = "cells",
                 label_key: str = "label", instances_key: str = "instances",
                 rules: str | PseudoLabelRules | Mapping = "robust", seed: int = 0, min_size: int = 30,
                 dilate: float = 5, erode: float = 7, background_margin: float = 10,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, f"{label_key}' and '{instances_key}")
        self.points_key, self.cells_key = points_key, cells_key
        self.label_key, self.instances_key = label_key, instances_key
        self.transform = ThreeRegionLabel(rules, seed, min_size, dilate, erode, background_margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label, instances, agreement = self.transform(d[key], d[self.points_key], d[self.cells_key],
                                                         return_agreement=True)
            d[self.label_key] = with_meta_of(label, d[key], 2, extra={"cluster_agreement": agreement})
            d[self.instances_key] = with_meta_of(instances, d[key], 2)
        return d


class HoVerNetTargets(Transform):
    """HoVer-Net targets from a weak label, its instances and the clicks' classes.

    ``label`` ``(1, Y, X)`` (1/0/255), ``instances`` ``(1, Y, X)`` (id = point index + 1), ``point_labels``
    ``(N,)`` (1 negative, 2 positive) -> dict of float32 ``np`` ``(1, Y, X)`` (1 nucleus, 0 otherwise), ``hv``
    ``(2, Y, X)`` (horizontal, vertical in [-1, 1]), ``nc`` ``(1, Y, X)`` (0 background, 1 negative, 2 positive),
    ``ignore`` ``(1, Y, X)`` (1 where the weak label is 255: no CE/Dice there, entropy minimisation instead).
    Apply after spatial augmentation: the HV maps are computed on the instances as they are.
    """

    backend = [TransformBackends.NUMPY]

    def __call__(self, label, instances, point_labels) -> dict[str, np.ndarray]:
        label = as_numpy(label, np.uint8)[0]
        instances = as_numpy(instances, np.int64)[0]
        classes = np.concatenate([[0], as_numpy(point_labels, np.int64).ravel()])
        if instances.max(initial=0) >= len(classes):
            raise input_error("instances", f"id {instances.max()} but only {len(classes) - 1} points",
                              "instances must be labelled by point index + 1 (as ThreeRegionLabel does)")
        nucleus = (label == 1) & (instances > 0)
        ignore = label == IGNORE
        nc = np.where(nucleus, classes[instances], 0)
        return {
            "np": nucleus[None].astype(np.float32),
            "hv": F.hover_maps(np.where(nucleus, instances, 0)),
            "nc": nc[None].astype(np.float32),
            "ignore": ignore[None].astype(np.float32),
        }


class HoVerNetTargetsd(MapTransform):
    """Dictionary twin of :class:`HoVerNetTargets`: ``keys`` are weak labels; writes ``{prefix}np``,
    ``{prefix}hv``, ``{prefix}nc``, ``{prefix}ignore``."""

    backend = HoVerNetTargets.backend

    def __init__(self, keys: KeysCollection = "label", instances_key: str = "instances",
                 point_labels_key: str = "point_labels", prefix: str = "target_", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, f"{prefix}np/hv/nc/ignore")
        self.instances_key, self.point_labels_key, self.prefix = instances_key, point_labels_key, prefix
        self.transform = HoVerNetTargets()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            targets = self.transform(d[key], d[self.instances_key], d[self.point_labels_key])
            d.update({f"{self.prefix}{name}": value for name, value in targets.items()})
        return d
