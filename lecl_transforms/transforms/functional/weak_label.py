"""The 2D three-region weak label (Qu et al. 2019, as LECL uses it before HoVer-Net) and the labelled morphology it
needs (per-cell operations without per-cell loops)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..rules import RULES, PseudoLabelRules
from .emip import cluster_agreement, cluster_roles, distance_to_points, kmeans_features, scale_to_8bit

__all__ = [
    "remove_small_components",
    "labelled_dilation",
    "refine_per_cell",
    "three_region_label",
    "voronoi_border_band",
]


# -- labelled morphology (per-cell operations without per-cell loops) -------------------------------------------------
def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected components (8-connected in 2D, fully connected in nD) smaller than ``min_size`` pixels.

    scikit-image's ``remove_small_objects`` (inclusive ``max_size``: ``min_size - 1`` keeps the old "smaller than"
    rule; ``connectivity=ndim`` is 2 in 2D)."""
    from skimage.morphology import remove_small_objects

    return remove_small_objects(np.asarray(mask, bool), max_size=int(min_size) - 1, connectivity=np.ndim(mask))


def _conflict_colours(labels: np.ndarray, reach: float) -> np.ndarray:
    """Greedy colouring of labels so that two labels closer than ``reach`` px never share a colour.

    Returns colour per label id (index 0 unused). The loop runs over the conflict graph (a few neighbours per label),
    never over pixels.
    """
    grown = labelled_dilation(labels, reach / 2)
    pairs = []
    for a, b in ((grown[:-1], grown[1:]), (grown[:, :-1], grown[:, 1:]), (grown[:-1, :-1], grown[1:, 1:]),
                 (grown[:-1, 1:], grown[1:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[touch], b[touch]], axis=1))
    pairs = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
    n = int(labels.max()) + 1
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        neighbours[a].append(b)
        neighbours[b].append(a)
    colour = np.full(n, -1)
    for label in np.unique(labels[labels > 0]):
        taken = {colour[m] for m in neighbours[label]}
        colour[label] = next(c for c in range(n) if c not in taken)
    return colour


def labelled_dilation(labels: np.ndarray, radius: float) -> np.ndarray:
    """Grow every label by ``radius`` px into unlabelled pixels; where two grow into the same pixel, the nearer wins.

    scikit-image's ``expand_labels`` (the same labelled EDT, so the same ties as before)."""
    from skimage.segmentation import expand_labels

    return expand_labels(labels, radius)


def refine_per_cell(labels: np.ndarray, dilate: float = 5, erode: float = 7) -> np.ndarray:
    """Per label, on its own: dilate by ``dilate`` px, fill holes, erode by ``erode`` px (Qu et al. refinement).

    Labels whose dilations could meet get different colours; each colour class is then processed with whole-image
    distance transforms, which is exact because its members never interact. Out-of-image pixels do not erode (as
    in the reference's erosion). Returns the refined label image (a label can vanish if it was thinner than
    ``2 * (erode - dilate)``).
    """
    out = np.zeros_like(labels)
    if not (labels > 0).any():
        return out
    colour = _conflict_colours(labels, 2 * dilate + 2)
    pad = int(np.ceil(erode)) + 1
    for c in np.unique(colour[colour >= 0]):
        members = np.where(colour[labels] == c, labels, 0)
        distance, (iy, ix) = ndimage.distance_transform_edt(members == 0, return_indices=True)
        dilated = ndimage.binary_fill_holes(distance <= dilate)
        depth = ndimage.distance_transform_edt(np.pad(dilated, pad, constant_values=True))[pad:-pad, pad:-pad]
        keep = depth > erode
        out[keep] = members[iy, ix][keep]
    return out


def voronoi_border_band(cells: np.ndarray, width: float) -> np.ndarray:
    """Pixels within a band of ``width`` px along the borders between different labels of ``cells`` (Y, X).

    Width 2 (or less) is the pixels of each cell that touch another cell (one on each side of the border); wider
    bands grow that by ``(width - 2) / 2`` px on each side."""
    from skimage.segmentation import find_boundaries

    band = find_boundaries(cells, connectivity=1, mode="inner")
    if width > 2:
        band = ndimage.distance_transform_edt(~band) <= (width - 2) / 2
    return band


# -- the 2D three-region label (Qu et al. 2019, as used by LECL) and HoVer-Net targets ---------------------------------
def three_region_label(nuclei2d: np.ndarray, points_yx: np.ndarray, cells: np.ndarray,
                       rules: PseudoLabelRules = RULES["robust"], seed: int = 0, min_size: int = 30,
                       dilate: float = 5, erode: float = 7, background_margin: float = 10,
                       background_disk: float = 5, return_agreement: bool = False):
    """Weak label on a projected nuclei image ``(Y, X)``: 1 nucleus, 0 background, 255 ignore (unlabelled).

    As Qu et al. (2019), which LECL uses before HoVer-Net: k-means (k=3) on ``[intensity / 10, min(distance to points,
    20)]``; the clusters' roles as in :func:`cluster_roles` (``rules.mask`` and ``rules.background``; the paper's
    2D background rule dilates the points by a disk of ``background_disk``). Nuclei are refined per Voronoi cell
    (objects < ``min_size`` px removed, dilated by ``dilate``, holes filled, eroded by ``erode``); background keeps
    only background-cluster pixels outside refined nuclei and farther than ``background_margin`` from any point.
    Returns ``(label (Y, X) uint8, instances (Y, X) int32 = nuclei region ∩ Voronoi cells, id = cell id)``, plus the
    clicks' :func:`cluster_agreement` on this 2D clustering with ``return_agreement``.
    A ``rules.voronoi_background`` > 0 also marks the band of that width along the borders between Voronoi cells as
    background (over refined nuclei too, so touching nuclei get a gap; see :func:`voronoi_border_band`).
    """
    points_yx = np.asarray(points_yx, int).reshape(-1, 2)
    distance = distance_to_points(points_yx, nuclei2d.shape, (1.0, 1.0))
    clusters, centres = kmeans_features(scale_to_8bit(nuclei2d, rules.intensity_scaling), distance, seed=seed)
    mask_rule = "nuclei_cluster" if rules.mask == "not_background" else rules.mask  # Qu: nuclei cluster only
    mask_ids, background_idx = cluster_roles(clusters, centres, points_yx, rules.background, mask_rule,
                                             background_disk)
    nuclei = remove_small_components(np.isin(clusters, mask_ids), min_size)
    refined = refine_per_cell(np.where(nuclei, cells, 0), dilate, erode)
    label = np.full(nuclei2d.shape, 255, np.uint8)
    label[(clusters == background_idx) & (refined == 0) & (distance > background_margin)] = 0
    label[refined > 0] = 1
    if rules.voronoi_background > 0:
        band = voronoi_border_band(cells, rules.voronoi_background)
        label[band] = 0
        refined = np.where(band, 0, refined)
    # instances = nuclei region ∩ Voronoi cell: a refined nucleus may spill a few pixels over its cell border
    instances = np.where(refined > 0, cells, 0).astype(np.int32)
    if return_agreement:
        return label, instances, cluster_agreement(clusters, centres, points_yx)
    return label, instances
