"""LECL test time, step 4, the bundle's default 3D integration: the ``"chain"`` link method of
:func:`~lecl_transforms.transforms.functional.link_slices.link_slices` (which documents the rule).

Slice instances of neighbouring slices are assigned one to one (Hungarian, as cell trackers do) on overlap and
centroid shift, one missing slice is bridged unless the ends are tapering tips or the chain would grow taller than
the stack's tall nuclei, and one-slice fragments are absorbed into the bigger chain whose footprint holds them.
Every rule is a named constant below, measured on the error budget (``benchmarks/error_budget.py``) and on trained
models' validation stacks.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["chain_components", "slice_overlaps"]

#: settings of the "chain" method (fixed: measured on the error budget, benchmarks/error_budget.py)
CHAIN_MAX_SHIFT = 0.7  # largest centroid shift between linked instances, as a share of the larger one's radius
CHAIN_GAP_MIN_OVERLAP = 0.5  # least overlap (share of the smaller area) to bridge one missing slice
CHAIN_TIP_RATIO = 0.6  # a chain end smaller than this share of its neighbour in the chain is a tip: never bridged
CHAIN_HEIGHT_QUANTILE = 0.9  # a bridged chain may be at most this quantile of the chains' heights + 1 slice tall
ABSORB_MAX_SLICES = 1  # chains this short are fragments when they lie inside a longer chain's footprint
ABSORB_BEYOND = 1  # ... on a slice of its z range or this many slices past its ends (a z-split tip)
ABSORB_REACH = 1.0  # a fragment's centroid within this share of a chain's largest radius of its centre joins it


def slice_overlaps(lower, upper, n_ids):
    """Every pair ``(a, b)`` of instances of two slices' maps ``(Y, X)`` (ids below ``n_ids``) that overlap, and by how
    many pixels: one ``np.unique`` over combined codes of the pixels where both are set (no per-instance loop)."""
    both = (lower > 0) & (upper > 0)
    n_ids = np.int64(n_ids)
    codes, overlap = np.unique(lower[both].astype(np.int64) * n_ids + upper[both].astype(np.int64),
                               return_counts=True)
    return codes // n_ids, codes % n_ids, overlap


def _assign(lower, upper, area, cy, cx, min_overlap, allowed=None):
    """One-to-one links ``(a, b)`` between the instances of two slices' maps ``(Y, X)``: candidate pairs overlap by at
    least ``min_overlap`` of the smaller area and their centroids lie within ``CHAIN_MAX_SHIFT`` of the larger radius;
    among candidates the assignment has the most pairs, then the least total cost ``1 - IoU``
    (:func:`scipy.optimize.linear_sum_assignment`). The shift only gates: when an instance is split on the next slice
    the small piece's centroid often lies nearer than the big piece's (the cut moves the big piece's centroid away),
    so ranking on shift would link the piece and leave the big one to start a second nucleus. Pairs with one
    candidate each are taken directly; only the ambiguous rest (touching neighbours, merged or split instances) goes
    through the assignment. ``allowed``: bool per id, instances that may take part (None: all)."""
    n_ids = len(area)
    a, b, overlap = slice_overlaps(lower, upper, n_ids)
    if allowed is not None:
        keep = allowed[a] & allowed[b]
        a, b, overlap = a[keep], b[keep], overlap[keep]
    radius = np.sqrt(area / np.pi)
    shift = np.hypot(cy[a] - cy[b], cx[a] - cx[b]) / np.maximum(np.maximum(radius[a], radius[b]), 1.0)
    iou = overlap / (area[a] + area[b] - overlap)
    ok = (overlap >= min_overlap * np.minimum(area[a], area[b]) - 1e-9) & (shift <= CHAIN_MAX_SHIFT)
    a, b, cost = a[ok], b[ok], (1.0 - iou)[ok]  # the shift gates, it does not rank: see the docstring
    single = (np.bincount(a, minlength=n_ids)[a] == 1) & (np.bincount(b, minlength=n_ids)[b] == 1)
    links_a, links_b = [a[single]], [b[single]]
    if not single.all():
        rest_a, row = np.unique(a[~single], return_inverse=True)
        rest_b, col = np.unique(b[~single], return_inverse=True)
        forbidden = 1e6  # larger than any sum of allowed costs: the most pairs first, then the least cost
        matrix = np.full((len(rest_a), len(rest_b)), forbidden)
        matrix[row.ravel(), col.ravel()] = cost[~single]
        r, c = linear_sum_assignment(matrix)
        good = matrix[r, c] < forbidden
        links_a.append(rest_a[r[good]])
        links_b.append(rest_b[c[good]])
    return np.concatenate(links_a), np.concatenate(links_b)


def chain_components(instances, area, sum_y, sum_x, slice_of, min_overlap):
    """Component (0..M-1) of each present slice instance under the chain rule (see :func:`link_slices`)."""
    n_z = instances.shape[0]
    n_ids = len(area)
    safe = np.maximum(area, 1)
    cy, cx = sum_y / safe, sum_x / safe
    next_of, prev_of = np.zeros(n_ids, np.int64), np.zeros(n_ids, np.int64)
    for z in range(n_z - 1):
        a, b = _assign(instances[z], instances[z + 1], area, cy, cx, min_overlap)
        next_of[a], prev_of[b] = b, a
    # one missing slice: a chain's upper end to a chain's lower start two slices up, neither being a tapering tip, and
    # the bridged chain no taller than the stack's tall nuclei (CHAIN_HEIGHT_QUANTILE of the chains' heights, + 1
    # slice): not the top of one nucleus to the bottom of another stacked on it, nor a decoy's marker slices above it
    height_limit = np.quantile(_heights(next_of, prev_of, slice_of, n_z, area), CHAIN_HEIGHT_QUANTILE) + 1
    for z in range(n_z - 2):
        tip_up = (prev_of > 0) & (area < CHAIN_TIP_RATIO * area[prev_of])
        tip_down = (next_of > 0) & (area < CHAIN_TIP_RATIO * area[next_of])
        # lower instances (slice z) must be free chain ends, upper ones (slice z + 2) free chain starts
        allowed = np.where(slice_of == z, (next_of == 0) & ~tip_up, (prev_of == 0) & ~tip_down)
        a, b = _assign(instances[z], instances[z + 2], area, cy, cx, max(min_overlap, CHAIN_GAP_MIN_OVERLAP),
                       allowed)
        tall = _chain_top(next_of, slice_of, n_z)[b] - _chain_top(prev_of, slice_of, n_z)[a] + 1 > height_limit
        a, b = a[~tall], b[~tall]
        next_of[a], prev_of[b] = b, a
    linked = np.flatnonzero(next_of)
    graph = coo_matrix((np.ones(len(linked), np.int8), (linked, next_of[linked])), shape=(n_ids, n_ids)).tocsr()
    _, component = connected_components(graph, directed=False)
    present = np.flatnonzero(area > 0)
    _, compact = np.unique(component[present], return_inverse=True)
    compact = compact.ravel()
    return present, _absorb_fragments(present, compact, area, sum_y, sum_x, slice_of)


def _chain_top(step, slice_of, n_z):
    """Per slice instance id: the slice of the last instance reached by following ``step`` (``next_of`` -> the
    chain's top slice, ``prev_of`` -> its bottom slice), by pointer doubling."""
    jump = np.where(step > 0, step, np.arange(len(step)))
    for _ in range(int(np.ceil(np.log2(max(n_z, 2)))) + 1):
        jump = jump[jump]
    return slice_of[jump]


def _heights(next_of, prev_of, slice_of, n_z, area):
    """Heights (slices) of the chains, one value per chain (counted at its bottom instance)."""
    bottom = (area > 0) & (prev_of == 0)
    return (_chain_top(next_of, slice_of, n_z) - slice_of + 1)[bottom] if bottom.any() else np.ones(1)


def _absorb_fragments(present, component, area, sum_y, sum_x, slice_of):
    """Chains of at most ``ABSORB_MAX_SLICES`` slices whose centroid lies inside a bigger chain's footprint -- the
    disk of ``ABSORB_REACH`` times its largest slice's radius around its mean centroid -- on a slice within that
    chain's z range widened by ``ABSORB_BEYOND`` slices join it (the nearest such chain, distance relative to its
    radius): in-plane splits and z-split tips of one nucleus are one nucleus. "Bigger" is longer, or as short but of
    more voxels: a nucleus seen on one slice with its tip as a second one-slice chain (the tip failed the chain's
    overlap or shift test) becomes one nucleus, and a marker seen only on the tip still makes it positive. A fragment
    absorbed by a fragment follows it into its own chain. A chain farther beyond another's z range (a decoy's marker
    slices past an empty slice, a nucleus stacked on it) is never absorbed."""
    from scipy.spatial import cKDTree

    n_chains = int(component.max()) + 1 if len(component) else 0
    weights = area[present].astype(np.float64)
    length = np.bincount(component, minlength=n_chains)
    volume = np.bincount(component, weights=weights, minlength=n_chains)
    cy = np.bincount(component, weights=sum_y[present], minlength=n_chains) / np.maximum(volume, 1)
    cx = np.bincount(component, weights=sum_x[present], minlength=n_chains) / np.maximum(volume, 1)
    largest = np.zeros(n_chains)
    np.maximum.at(largest, component, weights)
    reach = ABSORB_REACH * np.sqrt(largest / np.pi)
    z_lo, z_hi = np.full(n_chains, np.iinfo(np.int64).max), np.full(n_chains, -1)
    np.minimum.at(z_lo, component, slice_of[present])
    np.maximum.at(z_hi, component, slice_of[present])
    short = np.flatnonzero(length <= ABSORB_MAX_SLICES)
    if not len(short) or n_chains < 2:
        return component
    # candidate (fragment chain, any chain) pairs within the largest reach, then each chain's own reach, its z range
    # and its size (only into a bigger chain: no cycles)
    tree = cKDTree(np.stack([cy, cx], 1))
    pairs = tree.sparse_distance_matrix(cKDTree(np.stack([cy[short], cx[short]], 1)), float(reach.max()),
                                        output_type="ndarray")
    c, f = pairs["i"].astype(np.int64), short[pairs["j"]]
    relative = pairs["v"] / np.maximum(reach[c], 1e-9)
    bigger = (length[c] > length[f]) | ((length[c] == length[f]) & (volume[f] < volume[c]))
    good = bigger & (relative <= 1) & (z_lo[c] - ABSORB_BEYOND <= z_lo[f]) & (z_hi[f] <= z_hi[c] + ABSORB_BEYOND)
    c, f, relative = c[good], f[good], relative[good]
    order = np.lexsort((c, relative, f))  # per fragment: the nearest chain (ties: the lower chain)
    first = np.r_[True, f[order][1:] != f[order][:-1]] if len(f) else np.zeros(0, bool)
    target = np.arange(n_chains)
    target[f[order][first]] = c[order][first]
    # a fragment absorbed by a fragment goes where that one goes: follow targets to their end (sizes strictly grow
    # along target links, so they end) by pointer doubling
    for _ in range(int(np.ceil(np.log2(max(n_chains, 2)))) + 1):
        target = target[target]
    _, compact = np.unique(target[component], return_inverse=True)
    return compact.ravel()
