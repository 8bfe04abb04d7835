"""Single z-slices as training views beside the EMIP (a robust extension of LECL's training input).

The network is trained on EMIPs but run on single z-slices at test time (step 4). A slice differs from an EMIP:
nuclei are cut at their tips, out-of-focus light of nuclei above and below is dimmer than their in-focus cores and
no nucleus of another depth is projected into it. :class:`SliceViews` gives the training the slices it will be
tested on, each with a weak label derived from the same pseudo-labels as the EMIP's (3D mask, Voronoi cells, slice
sets), and :class:`RandSliceViewd` draws the EMIP or one slice per patch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends

from ..errors import input_error
from .channels import ChannelComposite
from .utils import IGNORE, as_numpy

__all__ = ["SliceViews", "SliceViewsd", "RandSliceViewd"]


class SliceViews(Transform):
    """Per-slice composites and weak labels of a stack (one view per z-slice).

    ``image`` ``(2, Z, Y, X)`` (nuclei, marker), ``reference`` ``(2, Y, X)`` (the stack's MIP: the scale inference
    uses for its slices), ``label`` ``(1, Y, X)`` and ``instances`` ``(1, Y, X)`` (the EMIP's weak label and its
    instances, id = point index + 1), ``nuclei_mask`` ``(1, Z, Y, X)`` (the 3D k-means mask), ``slice_sets``
    ``(N, Z)`` -> ``(views (Z, 3, Y, X) float32, labels (Z, 1, Y, X) uint8, instances (Z, 1, Y, X) int32)``.

    On slice ``z`` a pixel of the EMIP's nucleus region of cell ``i`` is nucleus where ``z`` is in the cell's slice
    set and the 3D mask holds it, background where ``z`` is more than ``margin_slices`` outside the slice set (the
    nucleus is not there, only its blurred light), ignore otherwise (its tapering tips, the slices next to its
    ends); the EMIP's background is background on every slice; its ignore region stays ignore.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, composite: ChannelComposite | None = None, margin_slices: int = 1):
        if int(margin_slices) < 0:
            raise input_error("config: slice_view_margin", f"{margin_slices} slices", "give 0 or more slices")
        self.composite = composite or ChannelComposite()
        self.margin_slices = int(margin_slices)

    def __call__(self, image, reference, label, instances, nuclei_mask, slice_sets) -> tuple:
        stack = as_numpy(image, np.float32)
        label2d = as_numpy(label, np.uint8)[0]
        inst2d = as_numpy(instances, np.int32)[0]
        mask = as_numpy(nuclei_mask, bool)[0]
        sets = as_numpy(slice_sets, bool)
        z = stack.shape[1]
        if mask.shape[0] != z or sets.shape[1] != z:
            raise ValueError(f"slice views: stack of {z} slices, mask {mask.shape}, slice sets {sets.shape}")
        # (N + 1, Z): row 0 is "no cell"; near = the slice set widened by the margin along z
        in_set = np.vstack([np.zeros((1, z), bool), sets])
        near = in_set.copy()
        for shift in range(1, self.margin_slices + 1):
            near[:, shift:] |= in_set[:, :-shift]
            near[:, :-shift] |= in_set[:, shift:]
        cell_nucleus = (label2d == 1) & (inst2d > 0)
        on_slice = in_set[inst2d].transpose(2, 0, 1) & cell_nucleus & mask  # (Z, Y, X)
        away = ~near[inst2d].transpose(2, 0, 1) & cell_nucleus
        labels = np.full((z,) + label2d.shape, IGNORE, np.uint8)
        labels[:, label2d == 0] = 0
        labels[away] = 0
        labels[on_slice] = 1
        views = self.composite.apply(stack, self.composite.scale(as_numpy(reference, np.float32)))
        views = np.ascontiguousarray(np.asarray(views, np.float32).transpose(1, 0, 2, 3))  # (Z, 3, Y, X)
        slice_instances = np.where(on_slice, inst2d[None], 0).astype(np.int32)
        return views, labels[:, None], slice_instances[:, None]


class SliceViewsd(MapTransform):
    """Dictionary twin of :class:`SliceViews`: reads ``image``, ``mip``, ``label``, ``instances``, ``nuclei_mask``,
    ``slice_sets``; writes ``slice_views``, ``slice_labels``, ``slice_instances`` and drops ``nuclei_mask``."""

    backend = SliceViews.backend

    def __init__(self, keys: KeysCollection = "image", reference_key: str = "mip", label_key: str = "label",
                 instances_key: str = "instances", mask_key: str = "nuclei_mask", slice_sets_key: str = "slice_sets",
                 composite: ChannelComposite | None = None, margin_slices: int = 1):
        super().__init__(keys)
        self.reference_key, self.label_key, self.instances_key = reference_key, label_key, instances_key
        self.mask_key, self.slice_sets_key = mask_key, slice_sets_key
        self.transform = SliceViews(composite, margin_slices)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            views, labels, instances = self.transform(d[key], d[self.reference_key], d[self.label_key],
                                                      d[self.instances_key], d[self.mask_key],
                                                      d[self.slice_sets_key])
            d["slice_views"], d["slice_labels"], d["slice_instances"] = views, labels, instances
        d.pop(self.mask_key, None)
        return d


class RandSliceViewd(Randomizable, MapTransform):
    """Replace the EMIP view (``emip``, ``label``, ``instances``) by one z-slice's view with probability ``prob``.

    The slice is drawn uniformly among the slices whose label holds nucleus pixels. Drops the ``slice_*`` keys either
    way (the patch then carries one view, as the rest of the pipeline expects).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection = ("emip", "label", "instances"), prob: float = 0.5,
                 view_keys: tuple[str, str, str] = ("slice_views", "slice_labels", "slice_instances")):
        super().__init__(keys)
        if not 0.0 <= float(prob) <= 1.0:
            raise input_error("config: slice_view_share", f"{prob}", "give a share between 0 and 1")
        if len(self.keys) != 3 or len(view_keys) != 3:
            raise ValueError("RandSliceViewd needs the image, label and instance keys and their three view keys")
        self.prob, self.view_keys = float(prob), tuple(view_keys)
        self._slice: int | None = None

    def randomize(self, labels: np.ndarray) -> None:
        self._slice = None
        if self.R.random_sample() >= self.prob:
            return
        candidates = np.flatnonzero((labels == 1).any(axis=tuple(range(1, labels.ndim))))
        if candidates.size:
            self._slice = int(self.R.choice(candidates))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.view_keys[0] not in d:
            return d
        self.randomize(as_numpy(d[self.view_keys[1]], np.uint8))
        views = [d.pop(k) for k in self.view_keys]
        if self._slice is not None:
            for key, view in zip(self.keys, views):
                d[key] = view[self._slice]
        return d
