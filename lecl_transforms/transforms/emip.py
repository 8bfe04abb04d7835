"""Algorithm 1 (EMIP) as MONAI transforms, each an array transform and its dictionary twin.

Dictionary keys (what :func:`~lecl_transforms.transforms.compose.pseudo_label_transforms` produces):

=================  =====================  ===============================================================
key                shape                  meaning
=================  =====================  ===============================================================
``image``          ``(2, Z, Y, X)``       stack, channel 0 nuclei, 1 marker (after ``NucleiMarkerChannelsd``)
``points``         ``(N, 3)`` int         clicks ``(z, y, x)``; ``point_labels`` ``(N,)`` 1/2
``nuclei_mask``    ``(1, Z, Y, X)`` bool  3D pseudo nuclei mask (Alg. 1 steps 1-5)
``cells``          ``(1, Y, X)`` int32    2D Voronoi cells, cell ``j + 1`` = point ``j`` (step 6)
``slice_sets``     ``(N, Z)`` bool        slices holding each nucleus (steps a-c)
``emip``/``mip``   ``(2, Y, X)`` float32  extended / plain maximum intensity projection (steps d-e)
=================  =====================  ===============================================================

The dictionary twins return ``MetaTensor`` outputs carrying the image's ``filename_or_obj`` and ``spacing``
(``(dy, dx)`` on the 2D ones, with the stack's ``spacing_zyx``); each writes one output, so takes one key."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..errors import input_error
from . import functional as F
from .rules import PseudoLabelRules, resolve_rules
from ..utils.spacing import resolve_spacing
from .utils import as_numpy, as_points, one_key, with_meta_of

__all__ = [
    "PointDistanceMap",
    "PointDistanceMapd",
    "NucleiMask3D",
    "NucleiMask3Dd",
    "VoronoiCells",
    "VoronoiCellsd",
    "SliceSets",
    "SliceSetsd",
    "ExtendedMIP",
    "ExtendedMIPd",
    "MaxIntensityProjection",
    "MaxIntensityProjectiond",
]


# -- Alg. 1 step 1 -----------------------------------------------------------------------------------------------------
class PointDistanceMap(Transform):
    """Alg. 1 step 1: distance of every voxel to the nearest click, honouring voxel spacing.

    ``img`` ``(C, Z, Y, X)`` (only its shape and spacing are used), ``points`` ``(N, 3)`` -> ``(1, Z, Y, X)``
    float32 in units of the x pixel size (a z-step of 2 um with 0.5 um pixels counts as 4).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, spacing: Sequence[float] | None = None):
        self.spacing = spacing

    def __call__(self, img, points) -> np.ndarray:
        return F.distance_to_points(as_points(points), img.shape[1:], resolve_spacing(img, default=self.spacing))[None]


class PointDistanceMapd(MapTransform):
    """Dictionary twin of :class:`PointDistanceMap`: ``d[output_key]`` from ``d[key]`` and ``d[points_key]``."""

    backend = PointDistanceMap.backend

    def __init__(self, keys: KeysCollection = "image", points_key: str = "points",
                 output_key: str = "point_distance", spacing: Sequence[float] | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.points_key, self.output_key = points_key, output_key
        self.transform = PointDistanceMap(spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = with_meta_of(self.transform(d[key], d[self.points_key]), d[key])
        return d


# -- Alg. 1 steps 2-5 --------------------------------------------------------------------------------------------------
class NucleiMask3D(Transform):
    """Alg. 1 steps 2-5: 3D nuclei mask from k-means (k=3) on ``[nuclei_8bit / 10, min(distance, 20)]``.

    ``img`` ``(C, Z, Y, X)`` with nuclei in channel 0, ``points`` ``(N, 3)``, optional precomputed ``distance``
    ``(1, Z, Y, X)`` -> ``(1, Z, Y, X)`` bool. ``rules``: ``"robust"`` (default) or ``"paper"`` (Algorithm 1
    literally), see :class:`~lecl_transforms.transforms.rules.PseudoLabelRules`. Deterministic for ``seed``.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | PseudoLabelRules | Mapping = "robust", seed: int = 0,
                 spacing: Sequence[float] | None = None):
        self.rules, self.seed, self.spacing = resolve_rules(rules), seed, spacing

    def __call__(self, img, points, distance=None, return_agreement: bool = False):
        """``(1, Z, Y, X)`` mask; with ``return_agreement`` also the clicks' k-means agreement (a dict, see
        :func:`~lecl_transforms.transforms.functional.cluster_agreement`) as ``(mask, agreement)``."""
        points = as_points(points)
        distance = None if distance is None else as_numpy(distance, np.float32)[0]
        nuclei = as_numpy(img[0], np.float32)
        spacing = resolve_spacing(img, default=self.spacing)
        mask, agreement = F.nuclei_mask_3d(nuclei, points, spacing, self.rules, self.seed, distance,
                                           return_agreement=True)
        return (mask[None], agreement) if return_agreement else mask[None]


class NucleiMask3Dd(MapTransform):
    """Dictionary twin of :class:`NucleiMask3D`; uses ``d[distance_key]`` when present (else computes it). The
    output's metadata holds the clicks' k-means agreement as ``cluster_agreement`` (judged by
    :class:`~lecl_transforms.transforms.checks.ClickPlacementCheckd`)."""

    backend = NucleiMask3D.backend

    def __init__(self, keys: KeysCollection = "image", points_key: str = "points",
                 distance_key: str | None = "point_distance", output_key: str = "nuclei_mask",
                 rules: str | PseudoLabelRules | Mapping = "robust", seed: int = 0,
                 spacing: Sequence[float] | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.points_key, self.distance_key, self.output_key = points_key, distance_key, output_key
        self.transform = NucleiMask3D(rules, seed, spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            distance = d.get(self.distance_key) if self.distance_key else None
            mask, agreement = self.transform(d[key], d[self.points_key], distance, return_agreement=True)
            d[self.output_key] = with_meta_of(mask, d[key], extra={"cluster_agreement": agreement})
        return d


# -- Alg. 1 step 6 -----------------------------------------------------------------------------------------------------
class VoronoiCells(Transform):
    """Alg. 1 step 6: 2D Voronoi cells of the clicks' (y, x): ``points`` ``(N, 3)`` and the ``(Y, X)`` size ->
    ``(1, Y, X)`` int32 with cell ``j + 1`` for point ``j``."""

    backend = [TransformBackends.NUMPY]

    def __call__(self, points, spatial_shape: Sequence[int]) -> np.ndarray:
        return F.voronoi_cells(as_points(points)[:, 1:], tuple(spatial_shape)[-2:])[None]


class VoronoiCellsd(MapTransform):
    """Dictionary twin of :class:`VoronoiCells`: ``keys`` are the points; the size comes from ``d[ref_key]``."""

    backend = VoronoiCells.backend

    def __init__(self, keys: KeysCollection = "points", ref_key: str = "image", output_key: str = "cells",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.ref_key, self.output_key = ref_key, output_key
        self.transform = VoronoiCells()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            ref = d[self.ref_key]
            d[self.output_key] = with_meta_of(self.transform(d[key], ref.shape[-2:]), ref, spatial_ndim=2)
        return d


# -- Alg. 1 steps a-c --------------------------------------------------------------------------------------------------
class SliceSets(Transform):
    """Alg. 1 steps a-c: which z-slices hold each nucleus.

    ``mask`` ``(1, Z, Y, X)``, ``cells`` ``(1, Y, X)``, ``points`` ``(N, 3)`` -> ``(N, Z)`` bool (the clicked slice
    always included). ``rules.slices``: ``"footprint_run"`` (robust default) or ``"any"`` (paper).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | PseudoLabelRules | Mapping = "robust"):
        self.rules = resolve_rules(rules)

    def __call__(self, mask, cells, points) -> np.ndarray:
        return F.slice_sets(as_numpy(mask, bool)[0], as_numpy(cells, np.int32)[0], as_points(points), self.rules)


class SliceSetsd(MapTransform):
    """Dictionary twin of :class:`SliceSets`: ``keys`` are the 3D masks."""

    backend = SliceSets.backend

    def __init__(self, keys: KeysCollection = "nuclei_mask", cells_key: str = "cells", points_key: str = "points",
                 output_key: str = "slice_sets", rules: str | PseudoLabelRules | Mapping = "robust",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.cells_key, self.points_key, self.output_key = cells_key, points_key, output_key
        self.transform = SliceSets(rules)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.cells_key], d[self.points_key])
        return d


# -- Alg. 1 steps d-e and the baseline ---------------------------------------------------------------------------------
class ExtendedMIP(Transform):
    """Alg. 1 steps d-e (EMIP): per Voronoi cell, max-project only over that nucleus' slices.

    ``img`` ``(2, Z, Y, X)`` (nuclei, marker), ``cells`` ``(1, Y, X)``, ``slice_sets`` ``(N, Z)`` -> ``(2, Y, X)``
    float32. ``channels="both"`` follows the paper; ``"marker"`` reproduces the published code (EMIP of the marker,
    plain MIP of the nuclei); ``"none"`` is the plain MIP of both (the HoVer-Net (MIP) baseline of the paper's
    Table 1: the same pipeline trained on MIPs).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, channels: str = "both"):
        if channels not in ("both", "marker", "none"):
            raise input_error("config: emip_channels", f"got '{channels}'",
                              "use 'both' (paper), 'marker' (published code) or 'none' (plain MIP baseline)")
        self.channels = channels

    def __call__(self, img, cells, slice_sets) -> np.ndarray:
        image = as_numpy(img, np.float32)
        if self.channels == "none":
            return image.max(axis=1)
        out = F.extended_mip(image, as_numpy(cells, np.int32)[0], as_numpy(slice_sets, bool))
        if self.channels == "marker":
            out[0] = image[0].max(axis=0)
        return out


class ExtendedMIPd(MapTransform):
    """Dictionary twin of :class:`ExtendedMIP`: ``keys`` are the stacks."""

    backend = ExtendedMIP.backend

    def __init__(self, keys: KeysCollection = "image", cells_key: str = "cells", sets_key: str = "slice_sets",
                 output_key: str = "emip", channels: str = "both", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.cells_key, self.sets_key, self.output_key = cells_key, sets_key, output_key
        self.transform = ExtendedMIP(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            emip = self.transform(d[key], d[self.cells_key], d[self.sets_key])
            d[self.output_key] = with_meta_of(emip, d[key], spatial_ndim=2)
        return d


class MaxIntensityProjection(Transform):
    """Plain MIP over z, ``(C, Z, Y, X)`` -> ``(C, Y, X)``: the baseline that EMIP improves on."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img):
        return img.max(dim=1).values if isinstance(img, torch.Tensor) else np.asarray(img).max(axis=1)


class MaxIntensityProjectiond(MapTransform):
    """Dictionary twin of :class:`MaxIntensityProjection`, writing ``d[output_key]`` (default ``"mip"``)."""

    backend = MaxIntensityProjection.backend

    def __init__(self, keys: KeysCollection = "image", output_key: str = "mip", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        one_key(self.keys, type(self).__name__, output_key)
        self.output_key = output_key
        self.transform = MaxIntensityProjection()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = with_meta_of(self.transform(d[key]), d[key], spatial_ndim=2)
        return d
