"""LECL test time, step 4: link per-slice 2D nucleus detections of a z-stack into 3D nuclei and classify each one.

The network predicts nuclei slice by slice; a 3D nucleus is a chain of slice instances on neighbouring slices, and it
is marker-positive if it was predicted positive in at least ``min_positive_slices`` slices (default 1, the paper's
rule "a nucleus is positive if predicted positive in at least one slice").

Three linking methods:

- ``"overlap"`` (this function's default): mutual-best (y, x) overlap between slice instances of neighbouring
  slices (see :func:`link_slices`). Two nuclei at the same (y, x) separated by empty slices stay two.
- ``"chain"`` (the bundle's default): one-to-one assignment (Hungarian, as trackers do) between neighbouring slices on
  overlap and centroid shift, one missing slice bridged, then one-slice fragments inside a bigger chain's footprint
  absorbed into it (see :func:`link_slices`; its code and constants: :mod:`.link_chain`).
- ``"projection"``: the published code's rule (per-slice centroids drawn as disks of radius 4, max over z, 2D
  connected components), kept for comparison; it merges nuclei stacked in z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ...errors import input_error
from ...utils.values import check_min_volume_um3
from .link_chain import chain_components, slice_overlaps

__all__ = ["Nuclei3D", "link_slices", "check_link_parameters", "LINK_METHODS", "NEGATIVE", "POSITIVE"]

NEGATIVE, POSITIVE = 1, 2  # slice / nucleus classes (0 = no class)
LINK_METHODS = ("overlap", "projection", "chain")
_TABLE_COLUMNS = ("id", "z", "y", "x", "label", "score", "z_start", "z_stop", "area_px", "n_slices", "positive_slices")


@dataclass
class Nuclei3D:
    """3D nuclei of a stack, one row per nucleus (M rows).

    ``labels`` ``(Z, Y, X)`` uint32: 3D nucleus id 1..M per voxel (0 background); ids are ordered by
    ``(z_start, y, x)`` so they do not depend on how the slice instances were numbered.
    Columns (1-D, length M): ``id`` (1..M); ``z``, ``y``, ``x`` voxel-weighted centroid in voxel indices (float);
    ``label`` 1 negative / 2 positive; ``score`` the ``min_positive_slices``-th highest per-slice positive score (0 if
    the nucleus has fewer slices); ``z_start``, ``z_stop`` inclusive slice range; ``area_px`` area of its largest
    slice (pixels); ``n_slices`` slices it occupies; ``positive_slices`` slices on which it was predicted positive.
    ``slice_to_nucleus`` ``(N + 1,)``: the 3D id of each slice instance id (0 for background and unused ids).
    """

    labels: np.ndarray
    id: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    label: np.ndarray
    score: np.ndarray
    z_start: np.ndarray
    z_stop: np.ndarray
    area_px: np.ndarray
    n_slices: np.ndarray
    positive_slices: np.ndarray
    slice_to_nucleus: np.ndarray = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.id)

    def table(self) -> dict[str, np.ndarray]:
        """The per-nucleus columns, in the order ``id, z, y, x, label, score, z_start, z_stop, area_px, n_slices,
        positive_slices``."""
        return {name: getattr(self, name) for name in _TABLE_COLUMNS}

    def classes(self) -> np.ndarray:
        """``(Z, Y, X)`` uint8 class map: 0 background, 1 negative, 2 positive (a lookup table over ``labels``)."""
        lut = np.concatenate([[0], self.label]).astype(np.uint8)
        return lut[self.labels]


# -- parameters and inputs ---------------------------------------------------------------------------------------------
def check_link_parameters(min_overlap: float, max_gap_um: float, min_positive_slices: int, method: str,
                          projection_radius: float = 4, min_volume_um3: float = 0.0) -> None:
    """Refuse bad linking parameters with an input error naming the config key."""
    def number(value) -> float:  # NaN (refused below) for anything that is not a real number
        return float(value) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else np.nan

    if method not in LINK_METHODS:
        raise input_error("config: method", f"unknown method '{method}'",
                          "use 'overlap' (default), 'chain' (assignment + fragment absorption) or 'projection' (the "
                          "published code's rule)")
    if not (isinstance(min_positive_slices, (int, np.integer)) and not isinstance(min_positive_slices, bool)
            and min_positive_slices >= 1):
        raise input_error("config: min_positive_slices", f"got {min_positive_slices!r}",
                          "give a whole number >= 1 (1 = the paper's rule: positive in at least one slice)")
    if not (np.isfinite(number(min_overlap)) and 0 < min_overlap <= 1):
        raise input_error("config: min_overlap", f"got {min_overlap!r}, outside (0, 1]",
                          "give the least (y, x) overlap as a fraction of the smaller instance's area, e.g. 0.5")
    if not (np.isfinite(number(max_gap_um)) and max_gap_um >= 0):
        raise input_error("config: max_gap_um", f"got {max_gap_um!r}",
                          "give 0 (link adjacent slices only) or the largest z-gap to bridge, in um")
    if not (np.isfinite(number(projection_radius)) and projection_radius >= 0):
        raise input_error("config: projection_radius", f"got {projection_radius!r}",
                          "give the centroid disk radius in pixels (published code: 4)")
    check_min_volume_um3(min_volume_um3, "config: min_volume_um3")


def _check_inputs(instances, slice_class, slice_score, spacing):
    instances = np.asarray(instances)
    if instances.ndim != 3:
        raise input_error("instances", f"shape {instances.shape} is not (Z, Y, X)",
                          "give the per-slice instance ids as a (Z, Y, X) array")
    if instances.dtype == bool or not np.issubdtype(instances.dtype, np.integer):
        raise input_error("instances", f"dtype {instances.dtype} is not an integer type",
                          "give integer instance ids (0 = background)")
    if instances.size and instances.min() < 0:
        raise input_error("instances", f"negative id {instances.min()}", "ids are 0 (background) or positive")
    slice_class = np.asarray(slice_class).ravel()
    slice_score = np.asarray(slice_score, np.float64).ravel()
    top = int(instances.max(initial=0))
    if len(slice_class) <= top or len(slice_score) != len(slice_class):
        raise input_error("slice_class / slice_score",
                          f"lengths {len(slice_class)} and {len(slice_score)}, but the largest instance id is {top}",
                          "give both as (N + 1,) arrays indexed by slice instance id (index 0 unused)")
    spacing = tuple(float(v) for v in np.asarray(spacing, np.float64).ravel())
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise input_error("spacing", f"{spacing} is not three positive numbers", "give (dz, dy, dx) in um")
    return instances, slice_class.astype(np.int64), slice_score, spacing


def _slice_instance_stats(instances: np.ndarray, n_ids: int):
    """Per slice instance id (length ``n_ids``): area, sum of y, sum of x and its slice (-1 if absent). Refuses an id
    present on two slices (ids must be unique over the stack)."""
    n_z, n_y, n_x = instances.shape
    area = np.zeros(n_ids, np.int64)
    sum_y, sum_x = np.zeros(n_ids), np.zeros(n_ids)
    slice_of = np.full(n_ids, -1, np.int64)
    rows = np.repeat(np.arange(n_y, dtype=np.float64), n_x)
    cols = np.tile(np.arange(n_x, dtype=np.float64), n_y)
    for z in range(n_z):
        ids = instances[z].ravel().astype(np.intp, copy=False)  # bincount refuses uint64
        count = np.bincount(ids, minlength=n_ids)
        present = np.flatnonzero(count[1:]) + 1
        seen_before = present[slice_of[present] >= 0]
        if len(seen_before):
            k = int(seen_before[0])
            raise input_error("instances", f"id {k} is on slice {slice_of[k]} and on slice {z}",
                              "number slice instances uniquely over the stack (offset each slice's ids by the number "
                              "of ids on earlier slices)")
        slice_of[present] = z
        area += count
        sum_y += np.bincount(ids, weights=rows, minlength=n_ids)
        sum_x += np.bincount(ids, weights=cols, minlength=n_ids)
    area[0] = 0
    return area, sum_y, sum_x, slice_of


# -- linking -----------------------------------------------------------------------------------------------------------
def _mutual_best_links(lower: np.ndarray, upper: np.ndarray, area: np.ndarray, min_overlap: float):
    """Candidate links between two slices' instance maps ``(Y, X)``: pairs ``(a, b)`` whose overlap is at least
    ``min_overlap`` of the smaller area and which are each other's largest-overlap partner on the other slice (ties:
    the smaller id). All overlaps come from :func:`.link_chain.slice_overlaps`."""
    a, b, overlap = slice_overlaps(lower, upper, len(area))
    if not len(a):
        return a, b
    best_of_a = np.zeros(len(area), np.int64)
    order = np.lexsort((b, -overlap, a))  # per a: largest overlap first, then smaller b
    first = np.r_[True, a[order][1:] != a[order][:-1]]
    best_of_a[a[order][first]] = b[order][first]
    best_of_b = np.zeros(len(area), np.int64)
    order = np.lexsort((a, -overlap, b))
    first = np.r_[True, b[order][1:] != b[order][:-1]]
    best_of_b[b[order][first]] = a[order][first]
    # overlap / smaller area >= min_overlap, with a little slack for the float product
    enough = overlap >= min_overlap * np.minimum(area[a], area[b]) - 1e-9
    keep = enough & (best_of_a[a] == b) & (best_of_b[b] == a)
    return a[keep], b[keep]


def _overlap_components(instances, area, slice_of, dz, min_overlap, max_gap_um):
    """Component (0..M-1) of each present slice instance under the overlap rule, for ``present = area > 0``."""
    n_z = instances.shape[0]
    n_ids = len(area)
    gap_slices = int(np.floor(max_gap_um / dz + 1e-9))
    has_next, has_prev = np.zeros(n_ids, bool), np.zeros(n_ids, bool)
    links_a, links_b = [], []
    # adjacent slices first, then each larger distance, linking only chain ends that are still free: every instance
    # keeps at most one link up and one down, so a 3D nucleus is a chain with one instance per slice
    for distance in range(1, gap_slices + 2):
        for z in range(n_z - distance):
            a, b = _mutual_best_links(instances[z], instances[z + distance], area, min_overlap)
            if distance > 1:
                free = ~has_next[a] & ~has_prev[b]
                a, b = a[free], b[free]
            has_next[a], has_prev[b] = True, True
            links_a.append(a)
            links_b.append(b)
    a = np.concatenate(links_a) if links_a else np.zeros(0, np.int64)
    b = np.concatenate(links_b) if links_b else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n_ids, n_ids)).tocsr()
    _, component = connected_components(graph, directed=False)
    present = np.flatnonzero(area > 0)
    _, compact = np.unique(component[present], return_inverse=True)
    return present, compact.ravel()


def _projection_components(instances, area, sum_y, sum_x, radius):
    """Component of each present slice instance under the published code's rule: its (rounded) centroid is drawn as
    a disk of ``radius`` px, the disks of all slices are merged by a max over z, and each 8-connected 2D component is
    one nucleus; an instance belongs to the component its centroid falls in."""
    from skimage.morphology import disk

    n_y, n_x = instances.shape[1:]
    present = np.flatnonzero(area > 0)
    cy = np.clip(np.rint(sum_y[present] / area[present]), 0, n_y - 1).astype(np.int64)
    cx = np.clip(np.rint(sum_x[present] / area[present]), 0, n_x - 1).astype(np.int64)
    seeds = np.zeros((n_y, n_x), bool)
    seeds[cy, cx] = True
    footprint = disk(int(round(radius))).astype(bool)
    drawn = ndimage.binary_dilation(seeds, structure=footprint) if radius > 0 else seeds
    components, _ = ndimage.label(drawn, structure=np.ones((3, 3), bool))
    _, compact = np.unique(components[cy, cx], return_inverse=True)
    return present, compact.ravel()


def _drop_small(present, component, area, voxel_um3: float, min_volume_um3: float):
    """Drop the 3D nuclei (components) whose volume -- the summed area of their slice instances times the voxel
    volume -- is below ``min_volume_um3`` (single-slice fragments); the kept components are renumbered 0..M'-1."""
    if min_volume_um3 <= 0 or not len(component):
        return present, component
    volume = np.bincount(component, weights=area[present].astype(np.float64)) * voxel_um3
    keep = volume[component] >= min_volume_um3 - 1e-9  # slack for the float product
    _, compact = np.unique(component[keep], return_inverse=True)
    return present[keep], compact.ravel()


# -- per-nucleus table -------------------------------------------------------------------------------------------------
def _nuclei_table(instances, present, component, area, sum_y, sum_x, slice_of, slice_class, slice_score,
                  min_positive_slices) -> Nuclei3D:
    """Labelled reductions over slice instances -> one row per component, ids ordered by (z_start, y, x)."""
    n_z = instances.shape[0]
    n_nuclei = int(component.max()) + 1 if len(component) else 0
    weights = area[present].astype(np.float64)
    z_of = slice_of[present]
    volume = np.bincount(component, weights=weights, minlength=n_nuclei)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.bincount(component, weights=weights * z_of, minlength=n_nuclei) / volume
        y = np.bincount(component, weights=sum_y[present], minlength=n_nuclei) / volume
        x = np.bincount(component, weights=sum_x[present], minlength=n_nuclei) / volume

    # (nucleus, slice) groups: the projection rule can put several instances of one slice in one nucleus
    keys, group = np.unique(component * n_z + z_of, return_inverse=True)
    group = group.ravel()
    group_nucleus, group_z = keys // n_z, keys % n_z
    group_area = np.bincount(group, weights=weights, minlength=len(keys))
    group_positive = np.bincount(group, weights=slice_class[present] == POSITIVE, minlength=len(keys)) > 0
    group_score = np.full(len(keys), -np.inf)
    np.maximum.at(group_score, group, slice_score[present])
    # keys are sorted by (nucleus, z): each nucleus's groups are one run, its first/last give the z range
    starts = np.flatnonzero(np.r_[True, group_nucleus[1:] != group_nucleus[:-1]])[:n_nuclei]  # none if empty
    stops = np.r_[starts[1:], len(keys)][:n_nuclei] - 1
    z_start, z_stop = group_z[starts], group_z[stops]
    n_slices = np.bincount(group_nucleus, minlength=n_nuclei)
    positive_slices = np.bincount(group_nucleus, weights=group_positive, minlength=n_nuclei).astype(np.int64)
    area_px = np.zeros(n_nuclei, np.int64)
    np.maximum.at(area_px, group_nucleus, group_area.astype(np.int64))
    # k-th highest per-slice score: rank the groups of each nucleus by descending score
    order = np.lexsort((-group_score, group_nucleus))
    rank = np.arange(len(keys)) - starts[group_nucleus[order]]
    kth = rank == min_positive_slices - 1
    score = np.zeros(n_nuclei)
    score[group_nucleus[order][kth]] = group_score[order][kth]
    label = np.where(positive_slices >= min_positive_slices, POSITIVE, NEGATIVE).astype(np.int64)

    # stable ids: by (z_start, centroid y, centroid x)
    order = np.lexsort((x, y, z_start))
    new_id = np.empty(n_nuclei, np.int64)
    new_id[order] = np.arange(1, n_nuclei + 1)
    slice_to_nucleus = np.zeros(len(area), np.int64)
    slice_to_nucleus[present] = new_id[component]
    labels = slice_to_nucleus.astype(np.uint32)[instances]
    return Nuclei3D(
        labels=labels, id=np.arange(1, n_nuclei + 1, dtype=np.int64), z=z[order], y=y[order], x=x[order],
        label=label[order], score=score[order], z_start=z_start[order].astype(np.int64),
        z_stop=z_stop[order].astype(np.int64), area_px=area_px[order], n_slices=n_slices[order].astype(np.int64),
        positive_slices=positive_slices[order], slice_to_nucleus=slice_to_nucleus,
    )


def link_slices(instances: np.ndarray, slice_class: np.ndarray, slice_score: np.ndarray,
                spacing: Sequence[float] = (1.0, 1.0, 1.0), *, min_overlap: float = 0.5, max_gap_um: float = 0.0,
                min_positive_slices: int = 1, method: str = "overlap", projection_radius: float = 4,
                min_volume_um3: float = 0.0) -> Nuclei3D:
    """Link per-slice 2D nucleus instances into 3D nuclei and classify them.

    Args:
        instances: ``(Z, Y, X)`` integer per-slice instance ids, unique over the whole stack (0 background; slice z
            holds its own ids, e.g. 1..n0 on slice 0, n0+1..n0+n1 on slice 1; ids need not be contiguous).
        slice_class: ``(N + 1,)`` int, class of each slice instance (index 0 unused; 1 negative, 2 positive, 0 none).
        slice_score: ``(N + 1,)`` float, each slice instance's probability of the positive class.
        spacing: ``(dz, dy, dx)`` in um (``dz`` turns ``max_gap_um`` into slices; ``dz * dy * dx`` is the voxel
            volume of ``min_volume_um3``).
        min_overlap: least (y, x) overlap of two linked instances, as a fraction of the smaller one's area.
        max_gap_um: ``"overlap"`` only: largest z-gap bridged over missing slices: instances on slices z < z' may
            link when ``(z' - z - 1) * dz <= max_gap_um``; 0 links adjacent slices only.
        min_positive_slices: a nucleus is positive (2) if predicted positive on at least this many of its slices,
            else negative (1); 1 is the paper's rule. Instances of class 0 count as not positive.
        method: ``"overlap"`` (this function's default), ``"chain"`` (the bundle's default, ``inference.json``) or
            ``"projection"`` (the published code's rule, for comparison).
        projection_radius: disk radius (px) of the ``"projection"`` method (published code: 4).
        min_volume_um3: every method: linked 3D nuclei whose volume (voxels of all their slice instances times
            ``dz * dy * dx``) is below this are dropped (their voxels become background); 0 keeps all.

    Linking rule (``"overlap"``): two instances on slices z < z' are linked when their (y, x) overlap is at least
    ``min_overlap`` of the smaller one's area AND each is the other's largest-overlap partner on the other slice (ties
    go to the smaller id). Mutual best keeps chains one-to-one, so two nuclei touching a third (e.g. two small ones
    side by side under a big one) never merge through it. Adjacent slices are linked first; a gap of d > 1 slices is
    only bridged between chain ends still free (no link up from the lower instance, none down to the upper one), so
    every 3D nucleus holds at most one instance per slice. 3D nuclei are the connected components of the link graph;
    two nuclei at the same (y, x) separated by more empty slices than the gap allows stay two.

    ``"chain"``: instances of neighbouring slices are assigned one to one (:func:`scipy.optimize.linear_sum_assignment`
    per slice pair) among pairs overlapping by at least ``min_overlap`` of the smaller area with centroids within
    ``CHAIN_MAX_SHIFT`` (0.7) of the larger radius, at the least total ``1 - IoU`` (the shift gates but does not rank:
    the big piece of a split, not the small one, continues the chain; sizes relative to the nucleus: no spacing
    needed). One missing slice is then bridged between a chain's free top and a chain's free
    bottom two slices up (same assignment, overlap >= ``CHAIN_GAP_MIN_OVERLAP``), unless either end is a tapering tip
    (smaller than ``CHAIN_TIP_RATIO`` of its neighbour in its chain) or the bridged chain would be taller than the
    ``CHAIN_HEIGHT_QUANTILE`` quantile of the chains' heights + 1 slice: the top of one nucleus and the bottom of
    another stacked on it, or a decoy's marker slices above a nucleus, stay apart. Finally a chain of
    ``ABSORB_MAX_SLICES`` (1) slice whose centroid lies within ``ABSORB_REACH`` (1.0) times a bigger chain's largest
    radius of that chain's centre (bigger: longer, or as short with more voxels), on a slice inside its z range or
    ``ABSORB_BEYOND`` (1) slice past its ends, is absorbed into it (in-plane splits, z-split tips, the tip of a
    nucleus seen on one slice); the 3D nucleus may then hold two instances on one slice.
    ``max_gap_um`` does not apply.

    ``"projection"``: each instance's centroid is drawn as a disk of ``projection_radius`` px, the drawings of all
    slices are merged by a max over z, and every 8-connected 2D component is one nucleus (an instance belongs to the
    component its centroid falls in); a nucleus is positive if it holds a positive instance (for
    ``min_positive_slices=1``). It FAILS on nuclei stacked in z: two nuclei at the same (y, x) on different slices --
    common in thick sections -- become one nucleus (and close neighbours whose disks touch merge too); that is why it
    is not the default. (The published code additionally skips the last component through an off-by-one; not
    reproduced here.)

    Returns:
        :class:`Nuclei3D` (``labels`` ``(Z, Y, X)`` uint32 and one row per 3D nucleus).
    """
    check_link_parameters(min_overlap, max_gap_um, min_positive_slices, method, projection_radius, min_volume_um3)
    instances, slice_class, slice_score, spacing = _check_inputs(instances, slice_class, slice_score, spacing)
    area, sum_y, sum_x, slice_of = _slice_instance_stats(instances, len(slice_class))
    if method == "overlap":
        present, component = _overlap_components(instances, area, slice_of, spacing[0], float(min_overlap),
                                                  float(max_gap_um))
    elif method == "chain":
        present, component = chain_components(instances, area, sum_y, sum_x, slice_of, float(min_overlap))
    else:
        present, component = _projection_components(instances, area, sum_y, sum_x, projection_radius)
    present, component = _drop_small(present, component, area, float(np.prod(spacing)), float(min_volume_um3))
    return _nuclei_table(instances, present, component, area, sum_y, sum_x, slice_of, slice_class, slice_score,
                         int(min_positive_slices))
