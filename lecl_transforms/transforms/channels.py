"""Channel handling: pick the nuclei and marker channels of a stack, and build the network's colour composite."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from ..data.reader import source_of
from ..errors import input_error
from .checks import check_channel_indices, check_distinct_channels, check_nuclei_structure
from .functional.intensity import percentile_range
from .utils import as_numpy

__all__ = [
    "check_channel_indices",
    "NucleiMarkerChannels",
    "NucleiMarkerChannelsd",
    "ChannelComposite",
    "ChannelComposited",
]


class NucleiMarkerChannels(Transform):
    """Pick the nuclei and marker channels of a ``(C, Z, Y, X)`` stack -> ``(2, Z, Y, X)``: 0 nuclei, 1 marker.

    Everything downstream relies on this order. Checks (:func:`~.checks.check_channel_indices`) that both indices
    exist and select different channels once negative indices are resolved (``-1`` of a 2-channel stack is
    channel 1), that neither channel is blank (a constant channel usually means the wrong index),
    and, unless ``allow_suspicious_input``, that the two channels do not hold the same image and that the nuclei
    channel shows objects rather than noise, pixel or smooth (:func:`~.checks.check_nuclei_structure`).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, nuclei_channel: int = 0, marker_channel: int = 1, allow_suspicious_input: bool = False):
        if nuclei_channel == marker_channel:
            raise input_error(
                "config: nuclei_channel / marker_channel",
                f"both are {nuclei_channel}",
                "set them to the two different channel indices of your stack (0-based)",
            )
        self.nuclei_channel, self.marker_channel = int(nuclei_channel), int(marker_channel)
        self.allow_suspicious_input = bool(allow_suspicious_input)

    def __call__(self, img, source: str | None = None):
        source = source or source_of(img)
        picked = check_channel_indices(img.shape[0], self.nuclei_channel, self.marker_channel, source)
        out = img[list(picked)]
        for i, name in enumerate(("nuclei_channel", "marker_channel")):
            if out[i].min() == out[i].max():
                raise input_error(
                    f"{source} (config: {name})",
                    f"channel {picked[i]} is blank (constant {float(out[i].min())})",
                    f"check {name}: it should index the {'nuclei (e.g. DAPI)' if i == 0 else 'marker'} channel",
                )
        check_distinct_channels(out[0], out[1], source, self.allow_suspicious_input)
        check_nuclei_structure(out[0], source, self.allow_suspicious_input, channel=picked[0], image=img)
        return out


class NucleiMarkerChannelsd(MapTransform):
    """Dictionary twin of :class:`NucleiMarkerChannels`."""

    backend = NucleiMarkerChannels.backend

    def __init__(self, keys: KeysCollection, nuclei_channel: int = 0, marker_channel: int = 1,
                 allow_missing_keys: bool = False, allow_suspicious_input: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.selector = NucleiMarkerChannels(nuclei_channel, marker_channel, allow_suspicious_input)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.selector(d[key])
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
        """Per-channel ``(low, high)`` ``(C, 2)`` from the configured percentiles."""
        x = as_numpy(img, np.float32).reshape(img.shape[0], -1)
        return percentile_range(x, self.percentiles, axis=1).astype(np.float32)

    def __call__(self, img, reference=None):
        return self.apply(img, self.scale(img if reference is None else reference))

    def apply(self, img, lo_hi: np.ndarray):
        """The composite of ``img`` ``(2, ...)`` with a scale ``(2, 2)`` computed once (e.g. from a stack's MIP, then
        applied to batches of its slices)."""
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
