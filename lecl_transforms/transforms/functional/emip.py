"""Algorithm 1 (EMIP) as plain, vectorised numpy kernels; the MONAI transforms in ``transforms/emip.py`` wrap them.

Conventions: volumes ``(Z, Y, X)``, images ``(C, Z, Y, X)``, points ``(N, 3)`` int ``(z, y, x)``, cells ``(Y, X)``
int32 with cell ``j + 1`` belonging to point ``j`` (0 = no cell). Every per-nucleus quantity is computed with label
arrays (``bincount``, labelled EDT, fancy indexing), never with a Python loop touching the whole volume per nucleus."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..rules import RULES, PseudoLabelRules
from .intensity import normalize_percentiles

__all__ = [
    "scale_to_8bit",
    "point_mask",
    "distance_to_points",
    "kmeans_features",
    "cluster_roles",
    "cluster_agreement",
    "nuclei_mask_3d",
    "voronoi_cells",
    "label_edges",
    "cell_slice_counts",
    "slice_sets",
    "slice_ranges",
    "extended_mip",
    "max_intensity_projection",
]


_FEATURE_CLIP = 20.0  # paper step 2: min(distance, 20)


_INTENSITY_DIVISOR = 10.0  # paper step 2: 8-bit intensity / 10, to match the distance's range


_DISTANCE_BIN = 0.05  # px; k-means runs on the feature histogram at this resolution (exact for 8-bit intensity)


# -- step 1 and the features -------------------------------------------------------------------------------------------
def scale_to_8bit(volume: np.ndarray, mode: str = "percentile", percentiles=(0.5, 99.9)) -> np.ndarray:
    """Rescale a whole stack (or image) to uint8, as the paper's features expect (step 2): ``"minmax"`` (the paper's
    16 -> 8 bit over the whole stack) or ``"percentile"`` (robust to hot pixels)."""
    if mode == "minmax":
        percentiles = (0.0, 100.0)
    elif mode != "percentile":
        raise ValueError(f"intensity_scaling must be 'minmax' or 'percentile', got {mode!r}")
    return np.rint(normalize_percentiles(volume, percentiles) * 255.0).astype(np.uint8)


def point_mask(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    mask = np.zeros(tuple(shape), bool)
    if len(points):
        mask[tuple(np.asarray(points, int).T)] = True
    return mask


def distance_to_points(points: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Alg. 1 step 1: Euclidean distance of every voxel to the nearest point, honouring anisotropy.

    ``spacing`` is ``(dz, dy, dx)`` (or ``(dy, dx)`` in 2D); the result is in units of the x pixel size, so the
    paper's 20-pixel clip keeps its meaning whatever the z-step. In 3D the exact distance is assembled from one 2D
    distance transform per clicked slice (``d^2 = min_z' [(z - z')^2 dz^2 + d_z'(y, x)^2]``), which is several times
    faster than a 3D transform for the few slices of a confocal stack.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    sampling = spacing / spacing[-1]
    points = np.asarray(points, int).reshape(-1, len(shape))
    clicked_slices = np.unique(points[:, 0]) if len(shape) == 3 else ()
    if len(shape) != 3 or len(clicked_slices) * shape[0] > 4096 or len(points) == 0:
        return ndimage.distance_transform_edt(~point_mask(points, shape), sampling=sampling).astype(np.float32)
    squared = np.full(tuple(shape), np.inf, np.float32)
    z_offsets = np.arange(shape[0], dtype=np.float32)
    for z in clicked_slices:  # a loop over clicked slices (at most Z), each step vectorised over the volume
        in_plane = ndimage.distance_transform_edt(~point_mask(points[points[:, 0] == z, 1:], shape[1:]),
                                                  sampling=sampling[1:]).astype(np.float32)
        np.minimum(squared, in_plane[None] ** 2 + ((z_offsets - z) * sampling[0])[:, None, None] ** 2, out=squared)
    return np.sqrt(squared)


def kmeans_features(intensity8: np.ndarray, distance: np.ndarray, n_clusters: int = 3, seed: int = 0,
                    clip: float = _FEATURE_CLIP) -> tuple[np.ndarray, np.ndarray]:
    """Alg. 1 steps 2-3: k-means on ``[intensity_8bit / 10, min(distance, 20)]`` for every voxel.

    Fitted on the 2D feature histogram (256 intensity levels x distance bins of 0.05 px) weighted by voxel counts:
    the same objective as k-means over all voxels, at the cost of a few thousand weighted samples; every voxel is
    then assigned through a lookup table. Returns ``(cluster per voxel (uint8, input shape), centres (k, 2))``.
    """
    from sklearn.cluster import KMeans

    n_bins = int(round(clip / _DISTANCE_BIN)) + 1
    d_bin = np.rint(np.minimum(distance, clip) / _DISTANCE_BIN).astype(np.int64)
    code = intensity8.astype(np.int64) * n_bins + d_bin
    counts = np.bincount(code.ravel(), minlength=256 * n_bins)
    used = np.flatnonzero(counts)
    features = np.stack([used // n_bins / _INTENSITY_DIVISOR, (used % n_bins) * _DISTANCE_BIN], axis=1)
    k = min(n_clusters, len(used))
    km = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(features, sample_weight=counts[used])
    lut = np.zeros(256 * n_bins, np.uint8)
    lut[used] = km.labels_
    return lut[code], km.cluster_centers_


def _ball_voxels(points: np.ndarray, shape: Sequence[int], radius: float) -> np.ndarray:
    """Flat indices of the voxels within ``radius`` (voxel-index units) of any point: the points dilated by a ball,
    gathered around the points instead of dilating the whole volume."""
    r = int(np.floor(radius))
    grid = np.indices((2 * r + 1,) * len(shape)).reshape(len(shape), -1).T - r
    offsets = grid[(grid**2).sum(axis=1) <= radius**2]
    voxels = (np.asarray(points, int)[:, None, :] + offsets[None]).reshape(-1, len(shape))
    voxels = voxels[((voxels >= 0) & (voxels < np.asarray(shape))).all(axis=1)]
    return np.unique(np.ravel_multi_index(voxels.T, tuple(shape)))


def cluster_roles(clusters: np.ndarray, centres: np.ndarray, points: np.ndarray, background_rule: str,
                  mask_rule: str, ball_radius: float) -> tuple[list[int], int]:
    """Alg. 1 step 4: which clusters make the nuclei mask and which one is background.

    Nuclei cluster = the one holding most points. Background (``background_rule``): ``"ball_overlap"`` = of the
    other two, the one least overlapping the points dilated by a ball of ``ball_radius`` voxels in voxel-index space
    (as the published code does, so across ~4 slices in 3D), or ``"darkest"``. ``mask_rule``: see
    :class:`PseudoLabelRules`. Returns ``(cluster ids forming the mask, background id)``.
    """
    k = len(centres)
    points = np.asarray(points, int)
    at_points = np.bincount(clusters[tuple(points.T)], minlength=k)
    nuclei = int(np.argmax(at_points))
    others = [c for c in range(k) if c != nuclei]
    if not others:
        return [nuclei], -1
    if background_rule == "ball_overlap":
        near = clusters.ravel()[_ball_voxels(points, clusters.shape, ball_radius)]
        background = others[int(np.argmin([np.count_nonzero(near == c) for c in others]))]
    elif background_rule == "darkest":
        background = others[int(np.argmin(centres[others, 0]))]
    else:
        raise ValueError(f"background rule must be 'ball_overlap' or 'darkest', got {background_rule!r}")
    middle = [c for c in others if c != background]
    if mask_rule == "not_background":
        return [nuclei, *middle], background
    if mask_rule == "nuclei_cluster":
        return [nuclei], background
    if mask_rule == "brightness_groups":
        joins = [c for c in middle
                 if abs(centres[c, 0] - centres[nuclei, 0]) < abs(centres[c, 0] - centres[background, 0])]
        return [nuclei, *joins], background
    raise ValueError(f"mask rule must be 'not_background', 'nuclei_cluster' or 'brightness_groups', got {mask_rule!r}")


def cluster_agreement(clusters: np.ndarray, centres: np.ndarray, points: np.ndarray) -> dict:
    """How well the k-means clusters agree with the clicks, step 4's premise (the clicks sit on the nuclei):
    ``{"points": N, "on_nuclei_cluster": clicks in the cluster holding most clicks}``. Judged by
    :class:`~lecl_transforms.transforms.checks.ClickPlacementCheck`. Whether that cluster is the brightest is not
    asked: real nuclei with bright chromocentres get a brighter cluster of their own."""
    points = np.asarray(points, int)
    at_points = np.bincount(clusters[tuple(points.T)], minlength=len(centres))
    return {"points": int(len(points)), "on_nuclei_cluster": int(at_points.max())}


def nuclei_mask_3d(nuclei: np.ndarray, points: np.ndarray, spacing: Sequence[float],
                   rules: PseudoLabelRules = RULES["robust"], seed: int = 0, distance: np.ndarray | None = None,
                   return_agreement: bool = False):
    """Alg. 1 steps 1-5: 3D nuclei mask ``(Z, Y, X)`` bool from the nuclei channel and the points; with
    ``return_agreement`` also the clicks' :func:`cluster_agreement` as ``(mask, agreement)``."""
    if distance is None:
        distance = distance_to_points(points, nuclei.shape, spacing)
    clusters, centres = kmeans_features(scale_to_8bit(nuclei, rules.intensity_scaling), distance, seed=seed)
    mask_ids, _ = cluster_roles(clusters, centres, points, rules.background, rules.mask, rules.ball_radius)
    mask = np.isin(clusters, mask_ids)
    return (mask, cluster_agreement(clusters, centres, points)) if return_agreement else mask


# -- step 6 and a-e ---------------------------------------------------------------------------------------------------
def voronoi_cells(points_yx: np.ndarray, shape_yx: Sequence[int]) -> np.ndarray:
    """Alg. 1 step 6: 2D Voronoi cells of the points' (y, x) as a label image; cell ``j + 1`` = point ``j``.

    Every pixel joins its nearest point (discrete Voronoi by a labelled EDT). Two points at the same (y, x) share
    one cell (the later one's id); the other gets an empty cell.
    """
    points_yx = np.asarray(points_yx, int).reshape(-1, 2)
    ids = np.zeros(tuple(shape_yx), np.int32)
    ids[points_yx[:, 0], points_yx[:, 1]] = np.arange(1, len(points_yx) + 1, dtype=np.int32)
    _, (iy, ix) = ndimage.distance_transform_edt(ids == 0, return_indices=True)
    return ids[iy, ix]


def cell_slice_counts(mask3d: np.ndarray, cells: np.ndarray, n_cells: int,
                      footprint: np.ndarray | None = None) -> np.ndarray:
    """Alg. 1 steps a-b: voxels of ``cell j ∩ mask`` per slice, ``(n_cells, Z)``; optionally only inside
    ``footprint`` (Y, X)."""
    n_z = mask3d.shape[0]
    keep = mask3d if footprint is None else mask3d & footprint[None]
    code = cells[None].astype(np.int64) * n_z + np.arange(n_z)[:, None, None]
    return np.bincount(code[keep], minlength=(n_cells + 1) * n_z).reshape(n_cells + 1, n_z)[1:]


def _grow_run(ok: np.ndarray, seed_z: np.ndarray) -> np.ndarray:
    """The contiguous run of True in each row of ``ok`` (N, Z) that contains ``seed_z`` (always included)."""
    run = np.zeros_like(ok)
    run[np.arange(len(ok)), seed_z] = True
    for _ in range(ok.shape[1]):
        grown = run.copy()
        grown[:, 1:] |= run[:, :-1]
        grown[:, :-1] |= run[:, 1:]
        grown &= ok | run
        if np.array_equal(grown, run):
            break
        run = grown
    return run


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Border pixels of a 2D label image: each pixel whose lower or right neighbour has another label."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge


def _footprints(mask3d: np.ndarray, cells: np.ndarray, points: np.ndarray, fallback_radius: float,
                distance2d: np.ndarray) -> np.ndarray:
    """Each nucleus' footprint on its clicked slice: the 2D component of ``mask ∩ cell`` holding the click (a small
    disk around the click when the click misses the mask). Returns a bool (Y, X) image; pixel -> cell says whose."""
    n_y, n_x = cells.shape
    owner_z = points[np.maximum(cells - 1, 0), 0]  # clicked slice of each pixel's cell
    on_click_slice = mask3d[owner_z, np.arange(n_y)[:, None], np.arange(n_x)[None]] & (cells > 0)
    components, _ = ndimage.label(on_click_slice & ~label_edges(cells))  # cut at cell borders: one cell each
    at_click = components[points[:, 1], points[:, 2]]
    owner_comp = at_click[np.maximum(cells - 1, 0)]
    footprint = (components == owner_comp) & (owner_comp > 0)
    missed = owner_comp == 0
    return footprint | (missed & (distance2d <= fallback_radius) & (cells > 0))


def slice_sets(mask3d: np.ndarray, cells: np.ndarray, points: np.ndarray,
               rules: PseudoLabelRules = RULES["robust"]) -> np.ndarray:
    """Alg. 1 step c: the slices holding each nucleus, ``(N, Z)`` bool; the clicked slice is always included."""
    points = np.asarray(points, int)
    n = len(points)
    pz = points[:, 0]
    if rules.slices == "any":
        sets = cell_slice_counts(mask3d, cells, n) > 0
    elif rules.slices == "footprint_run":
        distance2d = ndimage.distance_transform_edt(~point_mask(points[:, 1:], cells.shape))
        footprint = _footprints(mask3d, cells, points, rules.fallback_radius, distance2d)
        area = np.bincount(cells[footprint], minlength=n + 1)[1:]
        overlap = cell_slice_counts(mask3d, cells, n, footprint)
        sets = _grow_run(overlap >= rules.min_overlap * np.maximum(area, 1)[:, None], pz)
    else:
        raise ValueError(f"slice rule must be 'any' or 'footprint_run', got {rules.slices!r}")
    sets[np.arange(n), pz] = True
    return sets


def slice_ranges(sets: np.ndarray) -> np.ndarray:
    """Inclusive ``(z_start, z_stop)`` per nucleus from its slice set, ``(N, 2)`` int."""
    n_z = sets.shape[1]
    first = np.argmax(sets, axis=1)
    last = n_z - 1 - np.argmax(sets[:, ::-1], axis=1)
    return np.stack([first, last], axis=1)


def extended_mip(image: np.ndarray, cells: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """Alg. 1 steps d-e (EMIP): inside each cell, max-project over that cell's slices only.

    ``image`` ``(C, Z, Y, X)`` -> ``(C, Y, X)``. Pixels whose cell has an empty slice set (no cell) get 0.
    """
    n_z = image.shape[1]
    with_none = np.vstack([np.zeros((1, n_z), bool), sets])  # row 0: pixels of no cell
    selected = with_none.T[:, cells]  # (Z, Y, X): is slice z in the set of this pixel's cell
    lowest = np.finfo(np.float32).min
    out = np.where(selected[None], image, lowest).max(axis=1)
    return np.where(out == lowest, 0, out).astype(np.float32)


def max_intensity_projection(image: np.ndarray) -> np.ndarray:
    """Plain MIP over z, ``(C, Z, Y, X)`` -> ``(C, Y, X)``: the baseline EMIP is compared with."""
    return np.asarray(image, dtype=np.float32).max(axis=1)
