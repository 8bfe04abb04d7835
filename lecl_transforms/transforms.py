"""MONAI transforms for LECL's weak labels: each an array transform and its dictionary twin.

Dictionary conventions (what :func:`pseudo_label_transforms` produces and the bundle configs use):

=================  =====================  ===============================================================
key                shape                  meaning
=================  =====================  ===============================================================
``image``          ``(2, Z, Y, X)``       stack, channel 0 nuclei, 1 marker (after ``NucleiMarkerChannelsd``)
``points``         ``(N, 3)`` int         clicks ``(z, y, x)``; ``point_labels`` ``(N,)`` 1/2
``nuclei_mask``    ``(1, Z, Y, X)`` bool  3D pseudo nuclei mask (Alg. 1 steps 1-5)
``cells``          ``(1, Y, X)`` int32    2D Voronoi cells, cell ``j + 1`` = point ``j`` (step 6)
``slice_sets``     ``(N, Z)`` bool        slices holding each nucleus (steps a-c)
``emip``/``mip``   ``(2, Y, X)`` float32  extended / plain maximum intensity projection (steps d-e)
``label``          ``(1, Y, X)`` uint8    three-region weak label: 1 nucleus, 0 background, 255 ignore
``instances``      ``(1, Y, X)`` int32    nuclei region split by cells, id = cell id
=================  =====================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import fields as dataclass_fields, replace
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type

from . import pseudolabels as P
from .errors import input_error
from .io import _source_of

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
    "ChannelComposite",
    "ChannelComposited",
    "ThreeRegionLabel",
    "ThreeRegionLabeld",
    "HoVerNetTargets",
    "HoVerNetTargetsd",
    "resolve_rules",
    "IGNORE",
]

IGNORE = 255  # value of unlabelled pixels in weak labels and type maps


def _np(x, dtype=None) -> np.ndarray:
    return convert_data_type(x, np.ndarray, dtype=dtype)[0]


def _points(points) -> np.ndarray:
    return _np(points).astype(np.int64).reshape(-1, 3)


def _spacing(img, spacing: Sequence[float] | None) -> tuple[float, float, float]:
    meta = getattr(img, "meta", None) or {}
    value = meta.get("spacing") if meta.get("spacing") is not None else spacing
    if value is None:
        raise input_error(_source_of(img), "voxel spacing unknown", "load the image with IFStackReader or pass spacing")
    value = tuple(float(v) for v in _np(value).ravel())
    if len(value) != 3:
        raise input_error(_source_of(img), f"spacing {value} is not (dz, dy, dx)", "give three numbers (dz, dy, dx)")
    return value


def resolve_rules(rules: str | P.PseudoLabelRules | Mapping) -> P.PseudoLabelRules:
    """``"robust"`` / ``"paper"`` / a :class:`~lecl_transforms.pseudolabels.PseudoLabelRules` / a dict of its fields
    (optionally with ``"preset"``), e.g. ``{"preset": "robust", "min_overlap": 0.4}`` from a bundle config."""
    if isinstance(rules, P.PseudoLabelRules):
        return rules
    if isinstance(rules, str):
        if rules not in P.RULES:
            raise input_error("config: rules", f"unknown rules '{rules}'", f"use one of {sorted(P.RULES)}")
        return P.RULES[rules]
    fields = dict(rules)
    base = resolve_rules(fields.pop("preset", "robust"))
    known = {f.name for f in dataclass_fields(P.PseudoLabelRules)}
    bad = sorted(set(fields) - known)
    if bad:
        raise input_error("config: rules", f"unknown field(s) {bad}", f"use {sorted(known)}")
    return replace(base, **fields)


# -- Alg. 1 step 1 ------------------------------------------------------------------------------------------------------
class PointDistanceMap(Transform):
    """Alg. 1 step 1: distance of every voxel to the nearest click, honouring voxel spacing.

    ``img`` ``(C, Z, Y, X)`` (only its shape and spacing are used), ``points`` ``(N, 3)`` -> ``(1, Z, Y, X)``
    float32 in units of the x pixel size (a z-step of 2 um with 0.5 um pixels counts as 4).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, spacing: Sequence[float] | None = None):
        self.spacing = spacing

    def __call__(self, img, points) -> np.ndarray:
        return P.distance_to_points(_points(points), img.shape[1:], _spacing(img, self.spacing))[None]


class PointDistanceMapd(MapTransform):
    """Dictionary twin of :class:`PointDistanceMap`: ``d[output_key]`` from ``d[key]`` and ``d[points_key]``."""

    backend = PointDistanceMap.backend

    def __init__(self, keys: KeysCollection = "image", points_key: str = "points",
                 output_key: str = "point_distance", spacing: Sequence[float] | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.points_key, self.output_key = points_key, output_key
        self.transform = PointDistanceMap(spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.points_key])
        return d


# -- Alg. 1 steps 2-5 ----------------------------------------------------------------------------------------------------
class NucleiMask3D(Transform):
    """Alg. 1 steps 2-5: 3D nuclei mask from k-means (k=3) on ``[nuclei_8bit / 10, min(distance, 20)]``.

    ``img`` ``(C, Z, Y, X)`` with nuclei in channel 0, ``points`` ``(N, 3)``, optional precomputed ``distance``
    ``(1, Z, Y, X)`` -> ``(1, Z, Y, X)`` bool. ``rules``: ``"robust"`` (default) or ``"paper"`` (Algorithm 1
    literally), see :class:`~lecl_transforms.pseudolabels.PseudoLabelRules`. Deterministic for ``seed``.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | P.PseudoLabelRules | Mapping = "robust", seed: int = 0,
                 spacing: Sequence[float] | None = None):
        self.rules, self.seed, self.spacing = resolve_rules(rules), seed, spacing

    def __call__(self, img, points, distance=None) -> np.ndarray:
        points = _points(points)
        distance = None if distance is None else _np(distance, np.float32)[0]
        nuclei = _np(img[0], np.float32)
        return P.nuclei_mask_3d(nuclei, points, _spacing(img, self.spacing), self.rules, self.seed, distance)[None]


class NucleiMask3Dd(MapTransform):
    """Dictionary twin of :class:`NucleiMask3D`; uses ``d[distance_key]`` when present (else computes it)."""

    backend = NucleiMask3D.backend

    def __init__(self, keys: KeysCollection = "image", points_key: str = "points",
                 distance_key: str | None = "point_distance", output_key: str = "nuclei_mask",
                 rules: str | P.PseudoLabelRules | Mapping = "robust", seed: int = 0,
                 spacing: Sequence[float] | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.points_key, self.distance_key, self.output_key = points_key, distance_key, output_key
        self.transform = NucleiMask3D(rules, seed, spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            distance = d.get(self.distance_key) if self.distance_key else None
            d[self.output_key] = self.transform(d[key], d[self.points_key], distance)
        return d


# -- Alg. 1 step 6 -------------------------------------------------------------------------------------------------------
class VoronoiCells(Transform):
    """Alg. 1 step 6: 2D Voronoi cells of the clicks' (y, x): ``points`` ``(N, 3)`` and the ``(Y, X)`` size ->
    ``(1, Y, X)`` int32 with cell ``j + 1`` for point ``j``."""

    backend = [TransformBackends.NUMPY]

    def __call__(self, points, spatial_shape: Sequence[int]) -> np.ndarray:
        return P.voronoi_cells(_points(points)[:, 1:], tuple(spatial_shape)[-2:])[None]


class VoronoiCellsd(MapTransform):
    """Dictionary twin of :class:`VoronoiCells`: ``keys`` are the points; the size comes from ``d[ref_key]``."""

    backend = VoronoiCells.backend

    def __init__(self, keys: KeysCollection = "points", ref_key: str = "image", output_key: str = "cells",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key, self.output_key = ref_key, output_key
        self.transform = VoronoiCells()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.ref_key].shape[-2:])
        return d


# -- Alg. 1 steps a-c ----------------------------------------------------------------------------------------------------
class SliceSets(Transform):
    """Alg. 1 steps a-c: which z-slices hold each nucleus.

    ``mask`` ``(1, Z, Y, X)``, ``cells`` ``(1, Y, X)``, ``points`` ``(N, 3)`` -> ``(N, Z)`` bool (the clicked slice
    always included). ``rules.slices``: ``"footprint_run"`` (robust default) or ``"any"`` (paper).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | P.PseudoLabelRules | Mapping = "robust"):
        self.rules = resolve_rules(rules)

    def __call__(self, mask, cells, points) -> np.ndarray:
        return P.slice_sets(_np(mask, bool)[0], _np(cells, np.int32)[0], _points(points), self.rules)


class SliceSetsd(MapTransform):
    """Dictionary twin of :class:`SliceSets`: ``keys`` are the 3D masks."""

    backend = SliceSets.backend

    def __init__(self, keys: KeysCollection = "nuclei_mask", cells_key: str = "cells", points_key: str = "points",
                 output_key: str = "slice_sets", rules: str | P.PseudoLabelRules | Mapping = "robust",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cells_key, self.points_key, self.output_key = cells_key, points_key, output_key
        self.transform = SliceSets(rules)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.cells_key], d[self.points_key])
        return d


# -- Alg. 1 steps d-e and the baseline ----------------------------------------------------------------------------------
class ExtendedMIP(Transform):
    """Alg. 1 steps d-e (EMIP): per Voronoi cell, max-project only over that nucleus' slices.

    ``img`` ``(2, Z, Y, X)`` (nuclei, marker), ``cells`` ``(1, Y, X)``, ``slice_sets`` ``(N, Z)`` -> ``(2, Y, X)``
    float32. ``channels="both"`` follows the paper; ``"marker"`` reproduces the published code (EMIP of the marker,
    plain MIP of the nuclei).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, channels: str = "both"):
        if channels not in ("both", "marker"):
            raise input_error("config: emip_channels", f"got '{channels}'", "use 'both' (paper) or 'marker'")
        self.channels = channels

    def __call__(self, img, cells, slice_sets) -> np.ndarray:
        image = _np(img, np.float32)
        out = P.extended_mip(image, _np(cells, np.int32)[0], _np(slice_sets, bool))
        if self.channels == "marker":
            out[0] = image[0].max(axis=0)
        return out


class ExtendedMIPd(MapTransform):
    """Dictionary twin of :class:`ExtendedMIP`: ``keys`` are the stacks."""

    backend = ExtendedMIP.backend

    def __init__(self, keys: KeysCollection = "image", cells_key: str = "cells", sets_key: str = "slice_sets",
                 output_key: str = "emip", channels: str = "both", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cells_key, self.sets_key, self.output_key = cells_key, sets_key, output_key
        self.transform = ExtendedMIP(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.cells_key], d[self.sets_key])
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
        self.output_key = output_key
        self.transform = MaxIntensityProjection()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key])
        return d


# -- the network input -----------------------------------------------------------------------------------------------
class ChannelComposite(Transform):
    """Linear channel composite used for training (EMIP) and per-slice inference (each z-slice).

    ``img`` ``(2, ...)`` (nuclei, marker; any spatial dims) -> ``(3, ...)`` float32 in [0, 1]:
    ``out[c] = sum_k weights[c][k] * norm(img[k])``. Default weights give R = marker, G = B = nuclei, as the paper's
    composite. Each input channel is first scaled to [0, 1] by its ``percentiles`` (``(0, 100)`` = min-max, the
    published code's global max) computed on ``reference`` when given (e.g. the stack's MIP at inference, so slices
    and the EMIP used in training share one scale), else on the input itself.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, weights: Sequence[Sequence[float]] = ((0.0, 1.0), (1.0, 0.0), (1.0, 0.0)),
                 percentiles: Sequence[float] = (0.5, 99.8)):
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != 2:
            raise input_error("config: composite weights", f"shape {w.shape}", "give rows of (nuclei, marker) weights")
        self.weights, self.percentiles = w, tuple(float(p) for p in percentiles)

    def scale(self, img) -> np.ndarray:
        """Per-channel ``(low, high)`` ``(2, 2)`` from the configured percentiles."""
        x = _np(img, np.float32).reshape(img.shape[0], -1)
        return np.percentile(x, self.percentiles, axis=1).T.astype(np.float32)

    def __call__(self, img, reference=None):
        lo_hi = self.scale(img if reference is None else reference)
        x = img if isinstance(img, torch.Tensor) else np.asarray(img, dtype=np.float32)
        lo, hi = lo_hi[:, 0], np.maximum(lo_hi[:, 1] - lo_hi[:, 0], 1e-6)
        shape = (-1,) + (1,) * (x.ndim - 1)
        lo, hi = convert_to_dst_type(lo.reshape(shape), x)[0], convert_to_dst_type(hi.reshape(shape), x)[0]
        norm = ((x - lo) / hi).clip(0, 1)
        w = convert_to_dst_type(self.weights, norm)[0]
        out = (w @ norm.reshape(norm.shape[0], -1)).reshape((w.shape[0],) + tuple(norm.shape[1:]))
        return out.clip(0, 1)


class ChannelComposited(MapTransform):
    """Dictionary twin of :class:`ChannelComposite`; the scale comes from ``d[reference_key]`` when given."""

    backend = ChannelComposite.backend

    def __init__(self, keys: KeysCollection = "emip", reference_key: str | None = None,
                 weights: Sequence[Sequence[float]] = ((0.0, 1.0), (1.0, 0.0), (1.0, 0.0)),
                 percentiles: Sequence[float] = (0.5, 99.8), allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.transform = ChannelComposite(weights, percentiles)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], d[self.reference_key] if self.reference_key else None)
        return d


# -- the weak label and HoVer-Net targets ------------------------------------------------------------------------------
class ThreeRegionLabel(Transform):
    """Three-region weak label on a projection (Qu et al. 2019 as used by LECL) and its per-cell instances.

    ``projection`` ``(2, Y, X)`` (nuclei in channel 0), ``points`` ``(N, 3)``, ``cells`` ``(1, Y, X)`` ->
    ``(label (1, Y, X) uint8: 1 nucleus / 0 background / 255 ignore, instances (1, Y, X) int32: nuclei region
    ∩ Voronoi cell, id = cell id)``. Touching nuclei stay apart because each keeps its own cell's id.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | P.PseudoLabelRules | Mapping = "robust", seed: int = 0, min_size: int = 30,
                 dilate: float = 5, erode: float = 7, background_margin: float = 10):
        self.rules, self.seed = resolve_rules(rules), seed
        self.kwargs = dict(min_size=min_size, dilate=dilate, erode=erode, background_margin=background_margin)

    def __call__(self, projection, points, cells) -> tuple[np.ndarray, np.ndarray]:
        label, instances = P.three_region_label(_np(projection, np.float32)[0], _points(points)[:, 1:],
                                                _np(cells, np.int32)[0], self.rules, self.seed, **self.kwargs)
        return label[None], instances[None]


class ThreeRegionLabeld(MapTransform):
    """Dictionary twin of :class:`ThreeRegionLabel`: ``keys`` are projections; writes ``label_key`` and
    ``instances_key``."""

    backend = ThreeRegionLabel.backend

    def __init__(self, keys: KeysCollection = "emip", points_key: str = "points", cells_key: str = "cells",
                 label_key: str = "label", instances_key: str = "instances",
                 rules: str | P.PseudoLabelRules | Mapping = "robust", seed: int = 0, min_size: int = 30,
                 dilate: float = 5, erode: float = 7, background_margin: float = 10,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.points_key, self.cells_key = points_key, cells_key
        self.label_key, self.instances_key = label_key, instances_key
        self.transform = ThreeRegionLabel(rules, seed, min_size, dilate, erode, background_margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.label_key], d[self.instances_key] = self.transform(d[key], d[self.points_key], d[self.cells_key])
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
        label = _np(label, np.uint8)[0]
        instances = _np(instances, np.int64)[0]
        classes = np.concatenate([[0], _np(point_labels, np.int64).ravel()])
        if instances.max(initial=0) >= len(classes):
            raise input_error("instances", f"id {instances.max()} but only {len(classes) - 1} points",
                              "instances must be labelled by point index + 1 (as ThreeRegionLabel does)")
        nucleus = (label == 1) & (instances > 0)
        ignore = label == IGNORE
        nc = np.where(nucleus, classes[instances], 0)
        return {
            "np": nucleus[None].astype(np.float32),
            "hv": P.hover_maps(np.where(nucleus, instances, 0)),
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
        self.instances_key, self.point_labels_key, self.prefix = instances_key, point_labels_key, prefix
        self.transform = HoVerNetTargets()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            targets = self.transform(d[key], d[self.instances_key], d[self.point_labels_key])
            d.update({f"{self.prefix}{name}": value for name, value in targets.items()})
        return d
