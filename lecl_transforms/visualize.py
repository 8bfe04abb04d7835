"""Small RGB renderings for people to look at: composites, points, contours, PNG output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .transforms.functional import label_edges, normalize_percentiles

__all__ = ["to_uint8", "composite_rgb", "draw_points", "label_edges", "draw_mask_edges", "save_png",
           "CLASS_COLOURS"]

#: point colours by class: 1 negative (yellow), 2 positive (magenta)
CLASS_COLOURS = {1: (255, 220, 0), 2: (255, 0, 255)}


def to_uint8(img: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.8) -> np.ndarray:
    """Contrast-stretch an image to uint8 between two percentiles (robust to hot pixels)."""
    return (normalize_percentiles(img, (lo_pct, hi_pct)) * 255).astype(np.uint8)


def composite_rgb(nuclei: np.ndarray, marker: np.ndarray) -> np.ndarray:
    """Display composite ``(Y, X, 3)`` uint8: marker in red, nuclei in green and blue (the training composite's
    channel assignment), each contrast-stretched on its own."""
    n, m = to_uint8(nuclei), to_uint8(marker)
    return np.stack([m, n, n], axis=-1)


def draw_points(rgb: np.ndarray, yx: np.ndarray, classes: np.ndarray, radius: int = 2) -> np.ndarray:
    """Draw filled disks at ``yx`` (N, 2), coloured by class (see :data:`CLASS_COLOURS`)."""
    out = rgb.copy()
    if len(yx) == 0:
        return out
    marks = np.zeros(rgb.shape[:2], np.int32)
    yx = np.clip(np.asarray(yx, int), 0, np.array(rgb.shape[:2]) - 1)
    marks[yx[:, 0], yx[:, 1]] = np.asarray(classes, np.int32)
    disk = ndimage.generate_binary_structure(2, 1)
    grown = ndimage.grey_dilation(marks, footprint=ndimage.iterate_structure(disk, radius))
    for cls, colour in CLASS_COLOURS.items():
        out[grown == cls] = colour
    return out


def draw_mask_edges(rgb: np.ndarray, labels: np.ndarray, colour=(255, 255, 255), only_labelled: bool = False):
    """Paint the boundary pixels of a label image (only those inside a label with ``only_labelled``)."""
    out = rgb.copy()
    edge = label_edges(labels)
    if only_labelled:
        edge &= np.asarray(labels) > 0
    out[edge] = colour
    return out


def save_png(path, rgb: np.ndarray) -> Path:
    """Write a ``(Y, X, 3)`` uint8 array as PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path)
    return path
