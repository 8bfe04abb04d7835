"""HoVer-Net regression targets from instance maps, vectorised over instances."""

from __future__ import annotations

import numpy as np

__all__ = [
    "hover_maps",
]


def hover_maps(instances: np.ndarray) -> np.ndarray:
    """HoVer-Net horizontal/vertical maps ``(2, Y, X)`` float32 from an instance map ``(Y, X)``.

    Per instance: x (h) and y (v) offsets from its centre of mass, negative side divided by its largest magnitude and
    positive side by its largest value, so each lies in [-1, 1] (Graham et al. 2019). Vectorised over instances with
    labelled reductions; background is 0.
    """
    instances = np.asarray(instances)
    out = np.zeros((2,) + instances.shape, np.float32)
    inside = instances > 0
    if not inside.any():
        return out
    labels = instances[inside].astype(np.int64)
    n = labels.max() + 1
    count = np.bincount(labels, minlength=n).astype(np.float64)
    ys, xs = np.nonzero(inside)
    for channel, coord in ((0, xs), (1, ys)):
        centre = np.bincount(labels, weights=coord, minlength=n) / np.maximum(count, 1)
        offset = coord - centre[labels]
        low = np.zeros(n)
        high = np.zeros(n)
        np.minimum.at(low, labels, offset)
        np.maximum.at(high, labels, offset)
        scaled = np.where(offset < 0, offset / np.where(low < 0, -low, 1)[labels],
                          offset / np.where(high > 0, high, 1)[labels])
        out[channel][inside] = scaled
    return out
