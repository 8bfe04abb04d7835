"""Detection and classification scores of predicted 3D nuclei against the annotators' clicks (the paper's Table 1).

Matching. Each predicted nucleus (centroid ``(z, y, x)`` in voxel indices, slice range ``z_start..z_stop``) may be
paired with at most one clicked nucleus (a point ``(z, y, x)``) and vice versa. A pair is *allowed* when

* the anisotropic Euclidean distance in micrometres, ``sqrt(sum(((p - t) * (dz, dy, dx)) ** 2))``, is at most
  ``radius_um``, and
* the click's slice lies within the prediction's slices widened by ``z_tolerance``:
  ``z_start - z_tolerance <= t_z <= z_stop + z_tolerance`` (a nucleus seen on slices 3..5 may be clicked on 2..6).

Among allowed pairs the assignment has the largest possible number of pairs and, among those, the smallest total
distance (Hungarian assignment, :func:`scipy.optimize.linear_sum_assignment`, with a prohibitive cost for forbidden
pairs). HoVer-Net's evaluation pairs centroids the same way in 2D (12 px; it thresholds after a plain minimum-distance
assignment instead of maximising the number of pairs first). The paper does not state its matching rule.

Counts (:class:`NucleusCounts`): matched pairs split by (true class, predicted class), unmatched predictions by
predicted class, unmatched clicks by true class. Classes: 1 negative, 2 positive.

Scores (:func:`scores`), from counts pooled over any set of stacks:

* ``np_*`` (nuclear pixel branch = detection): TP = pairs, FP = unmatched predictions, FN = unmatched clicks.
* per class c (``f1_negative``, ``f1_positive``; ``nc_*`` = class positive): a nucleus counts for c where it is
  predicted c (FP if not truly c or not matched) or truly c (FN if not predicted c or not detected). So an undetected
  positive is a FN, a false detection called positive a FP, a matched negative called positive a FP, a matched
  positive called negative a FN. ``macro_f1`` = mean of the two class F1.
* HoVer-Net's ``f1_d`` (= ``np_f1``) and ``f1_t_*``:
  ``F1_t = 2(TP_t + TN_t) / (2(TP_t + TN_t) + 2 FP_t + 2 FN_t + FP_d,t + FN_d,t)`` with TP/TN/FP/FN_t over matched
  pairs and FP_d,t / FN_d,t the unmatched predictions / clicks of type t. HoVer-Net's code (``compute_stats.py``)
  first keeps only the pairs where the truth or the prediction is t, so its TN_t is always 0; that is the default
  here (``count_true_negatives=False``), which makes the numbers comparable with published F1_t. With
  ``count_true_negatives=True`` TN_t counts the matched pairs where neither is t (the formula read literally).
* ``count_error_*`` = predicted minus true number of nuclei of the class; ``count_rel_error_positive`` = that over
  the true number of positives (NaN when there is none).

Conventions for empty denominators (one rule everywhere): with no TP, FP and FN at all (nothing to find and nothing
found) precision = recall = F1 = 1; otherwise precision with no predictions is 0, recall with nothing to find is 0,
and F1 = 2TP / (2TP + FP + FN). HoVer-Net's F1_t likewise is 1 when its denominator is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..errors import input_error

__all__ = [
    "match_nuclei",
    "NucleusCounts",
    "counts_from_matches",
    "scores",
    "SCORE_NAMES",
    "check_settings",
    "decoy_counts",
]

NEGATIVE, POSITIVE = 1, 2

#: keys of :func:`scores`, in the order they are reported
SCORE_NAMES = (
    "np_precision", "np_recall", "np_f1",
    "nc_precision", "nc_recall", "nc_f1",
    "f1_negative", "f1_positive", "macro_f1",
    "f1_d", "f1_t_negative", "f1_t_positive",
    "count_error_positive", "count_error_negative", "count_rel_error_positive",
    "tp", "fp", "fn", "n_pred", "n_true",
    "n_pred_negative", "n_true_negative", "n_pred_positive", "n_true_positive",
)


# -- matching ---------------------------------------------------------------------------------------------------------
def check_settings(spacing, radius_um, z_tolerance) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise input_error("spacing", f"{tuple(values.tolist())} is not three positive numbers (dz, dy, dx)",
                          "give the voxel spacing (dz, dy, dx) in micrometres, e.g. (2.0, 0.5, 0.5)")
    if not (np.isfinite(radius_um) and radius_um > 0):  # 0 would match only a centroid exactly on its click
        raise input_error("radius_um", f"got {radius_um}", "give the matching radius in micrometres (> 0; lecl "
                          "evaluate --radius-um), e.g. 3.0, about a nucleus radius")
    if not (float(z_tolerance).is_integer() and z_tolerance >= 0):
        raise input_error("z_tolerance", f"got {z_tolerance}", "give a whole number of slices >= 0, e.g. 1")
    return values


def match_nuclei(
    pred_zyx, pred_z_range, true_zyx, spacing: Sequence[float], radius_um: float = 3.0, z_tolerance: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair predicted nuclei with clicked nuclei one-to-one (see the module docstring for the rule).

    Args:
        pred_zyx: ``(P, 3)`` predicted centroids ``(z, y, x)`` in (float) voxel indices.
        pred_z_range: ``(P, 2)`` inclusive slice range ``(z_start, z_stop)`` of each prediction; None takes the
            centroid's nearest slice for both.
        true_zyx: ``(T, 3)`` clicks ``(z, y, x)`` in voxel indices.
        spacing: ``(dz, dy, dx)`` in micrometres.
        radius_um: largest allowed centroid-to-click distance, micrometres.
        z_tolerance: slices by which the prediction's slice range is widened on each side.

    Returns:
        ``(pred_idx, true_idx)``: ``(M,)`` int64 each, the matched rows, sorted by ``pred_idx``. The assignment has
        the most pairs possible, then the smallest total distance.

    Candidate pairs come from a KD-tree in micrometres; the assignment is solved separately on each connected
    component of the allowed-pair graph, so the cost is that of the largest cluster of nearby nuclei, not of P x T.
    """
    spacing = check_settings(spacing, radius_um, z_tolerance)
    pred_zyx = np.asarray(pred_zyx, dtype=np.float64).reshape(-1, 3)
    true_zyx = np.asarray(true_zyx, dtype=np.float64).reshape(-1, 3)
    n_pred, n_true = len(pred_zyx), len(true_zyx)
    if pred_z_range is None:
        pred_z_range = np.repeat(np.rint(pred_zyx[:, :1]), 2, axis=1)
    pred_z_range = np.asarray(pred_z_range, dtype=np.float64).reshape(-1, 2)
    if len(pred_z_range) != n_pred:
        raise ValueError(f"pred_z_range has {len(pred_z_range)} rows for {n_pred} predictions")
    empty = np.zeros(0, np.int64)
    if n_pred == 0 or n_true == 0:
        return empty, empty.copy()

    pi, ti, dist = _allowed_pairs(pred_zyx, pred_z_range, true_zyx, spacing, float(radius_um), int(z_tolerance))
    if pi.size == 0:
        return empty, empty.copy()

    # connected components of the bipartite graph (nodes: predictions 0..P-1, clicks P..P+T-1)
    graph = coo_matrix((np.ones(pi.size), (pi, ti + n_pred)), shape=(n_pred + n_true,) * 2)
    _, node_component = connected_components(graph, directed=False)
    edge_component = node_component[pi]
    edges_per_component = np.bincount(edge_component)

    # a component with a single allowed pair (the usual case: an isolated nucleus) is matched as it is
    single = edges_per_component[edge_component] == 1
    matched_p, matched_t = [pi[single]], [ti[single]]

    # the others: one small dense assignment each, over that component's own nodes only
    rest = np.flatnonzero(~single)
    rest = rest[np.argsort(edge_component[rest], kind="stable")]
    starts = np.flatnonzero(np.r_[True, np.diff(edge_component[rest]) != 0])
    for edges in np.split(rest, starts[1:]) if rest.size else []:
        p_nodes, p_local = np.unique(pi[edges], return_inverse=True)
        t_nodes, t_local = np.unique(ti[edges], return_inverse=True)
        # forbidden pairs cost more than any set of allowed pairs can, so fewer of them (= more matches) wins first
        forbidden = 2.0 * (min(len(p_nodes), len(t_nodes)) + 1) * max(radius_um, 1.0)
        cost = np.full((len(p_nodes), len(t_nodes)), forbidden)
        cost[p_local, t_local] = dist[edges]
        rows, cols = linear_sum_assignment(cost)
        keep = cost[rows, cols] < forbidden
        matched_p.append(p_nodes[rows[keep]])
        matched_t.append(t_nodes[cols[keep]])

    pred_idx, true_idx = np.concatenate(matched_p), np.concatenate(matched_t)
    order = np.argsort(pred_idx, kind="stable")
    return pred_idx[order].astype(np.int64), true_idx[order].astype(np.int64)


def _allowed_pairs(pred_zyx, pred_z_range, true_zyx, spacing, radius_um, z_tolerance):
    """``(pred_i, true_j, distance_um)`` of every allowed pair."""
    pred_um, true_um = pred_zyx * spacing, true_zyx * spacing
    # the tree's radius test is a hair loose on purpose; the exact "<= radius_um" is applied below
    found = cKDTree(pred_um).sparse_distance_matrix(
        cKDTree(true_um), radius_um * (1 + 1e-9) + 1e-12, output_type="ndarray")
    pi, ti = found["i"].astype(np.int64), found["j"].astype(np.int64)
    dist = np.sqrt((((pred_zyx[pi] - true_zyx[ti]) * spacing) ** 2).sum(axis=1))
    true_z = true_zyx[ti, 0]
    ok = (dist <= radius_um) & (true_z >= pred_z_range[pi, 0] - z_tolerance) & \
        (true_z <= pred_z_range[pi, 1] + z_tolerance)
    return pi[ok], ti[ok], dist[ok]


# -- counts -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NucleusCounts:
    """Every integer count the scores need, for one stack or pooled over stacks (``a + b``, ``sum(list)``).

    Matched pairs by (true class, predicted class): ``neg_as_neg``, ``neg_as_pos``, ``pos_as_neg``, ``pos_as_pos``.
    Unmatched predictions by predicted class: ``unmatched_pred_neg``, ``unmatched_pred_pos``. Unmatched clicks by
    true class: ``unmatched_true_neg``, ``unmatched_true_pos``. Detection TP/FP/FN, the per-class totals and the
    2x2 ``confusion`` are derived from these (so they cannot disagree).
    """

    neg_as_neg: int = 0
    neg_as_pos: int = 0
    pos_as_neg: int = 0
    pos_as_pos: int = 0
    unmatched_pred_neg: int = 0
    unmatched_pred_pos: int = 0
    unmatched_true_neg: int = 0
    unmatched_true_pos: int = 0

    def __add__(self, other: NucleusCounts) -> NucleusCounts:
        if not isinstance(other, NucleusCounts):
            return NotImplemented
        return NucleusCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other):  # sum([...]) starts from 0
        return self if isinstance(other, int) and other == 0 else NotImplemented

    @property
    def confusion(self) -> np.ndarray:
        """``(2, 2)`` matched pairs, rows true class (negative, positive), columns predicted class."""
        return np.array([[self.neg_as_neg, self.neg_as_pos], [self.pos_as_neg, self.pos_as_pos]], dtype=np.int64)

    @property
    def tp(self) -> int:
        return self.neg_as_neg + self.neg_as_pos + self.pos_as_neg + self.pos_as_pos

    @property
    def fp(self) -> int:
        return self.unmatched_pred_neg + self.unmatched_pred_pos

    @property
    def fn(self) -> int:
        return self.unmatched_true_neg + self.unmatched_true_pos

    @property
    def n_pred_negative(self) -> int:
        return self.neg_as_neg + self.pos_as_neg + self.unmatched_pred_neg

    @property
    def n_pred_positive(self) -> int:
        return self.neg_as_pos + self.pos_as_pos + self.unmatched_pred_pos

    @property
    def n_true_negative(self) -> int:
        return self.neg_as_neg + self.neg_as_pos + self.unmatched_true_neg

    @property
    def n_true_positive(self) -> int:
        return self.pos_as_neg + self.pos_as_pos + self.unmatched_true_pos

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}


def counts_from_matches(pred_labels, true_labels, pred_idx, true_idx) -> NucleusCounts:
    """Counts of one stack from its labels (``(P,)`` and ``(T,)``, values 1 negative / 2 positive) and the matched
    rows ``(M,)`` each from :func:`match_nuclei`."""
    pred_labels = np.asarray(pred_labels, dtype=np.int64).ravel()
    true_labels = np.asarray(true_labels, dtype=np.int64).ravel()
    pred_idx, true_idx = np.asarray(pred_idx, np.int64).ravel(), np.asarray(true_idx, np.int64).ravel()
    for name, labels in (("pred_labels", pred_labels), ("true_labels", true_labels)):
        bad = np.setdiff1d(labels, (NEGATIVE, POSITIVE))
        if bad.size:
            raise ValueError(f"{name} must be 1 (negative) or 2 (positive), found {bad[:5].tolist()}")
    if pred_idx.size != true_idx.size:
        raise ValueError(f"pred_idx ({pred_idx.size}) and true_idx ({true_idx.size}) differ in length")
    # (true class, predicted class) of the pairs as one index 0..3 = neg_as_neg, neg_as_pos, pos_as_neg, pos_as_pos
    pairs = np.bincount((true_labels[true_idx] - 1) * 2 + (pred_labels[pred_idx] - 1), minlength=4)
    pred_free = np.ones(pred_labels.size, bool)
    pred_free[pred_idx] = False
    true_free = np.ones(true_labels.size, bool)
    true_free[true_idx] = False
    unmatched_pred = np.bincount(pred_labels[pred_free] - 1, minlength=2)
    unmatched_true = np.bincount(true_labels[true_free] - 1, minlength=2)
    return NucleusCounts(*(int(v) for v in (*pairs, *unmatched_pred, *unmatched_true)))


def decoy_counts(pred_labels, decoys, pred_idx, true_idx) -> dict[str, int]:
    """How the decoys of one stack fared: ``decoys`` ``(T,)`` bool marks the true nuclei that are decoys (negative
    nuclei with marker just above or below them, the synthetic generator's ``decoy`` column); ``pred_labels``
    ``(P,)`` 1 negative / 2 positive and the matched rows from :func:`match_nuclei`. Returns ``decoys`` (true),
    ``decoys_matched`` (paired with a prediction) and ``decoys_positive`` (paired with a prediction called positive);
    counts, so they pool over stacks by summing."""
    pred_labels = np.asarray(pred_labels, dtype=np.int64).ravel()
    decoys = np.asarray(decoys, dtype=bool).ravel()
    pred_idx, true_idx = np.asarray(pred_idx, np.int64).ravel(), np.asarray(true_idx, np.int64).ravel()
    matched = decoys[true_idx]
    return {"decoys": int(decoys.sum()), "decoys_matched": int(matched.sum()),
            "decoys_positive": int((matched & (pred_labels[pred_idx] == POSITIVE)).sum())}


# -- scores -----------------------------------------------------------------------------------------------------------
def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with the module's conventions for empty denominators."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(precision), float(recall), float(2 * tp / (2 * tp + fp + fn))


def scores(counts: NucleusCounts, *, count_true_negatives: bool = False) -> dict[str, float]:
    """Every reported figure from ``counts`` (names in :data:`SCORE_NAMES`; definitions and conventions in the module
    docstring). Ratios are floats, counts ints. ``count_true_negatives`` switches HoVer-Net's F1_t from its code's
    behaviour (TN_t = 0) to the formula read literally (TN_t = matched pairs where neither side is t)."""
    c = counts
    out: dict[str, float] = {}
    out["np_precision"], out["np_recall"], out["np_f1"] = _prf(c.tp, c.fp, c.fn)

    # per class: TP, FP (predicted c but not truly c, or not matched), FN (truly c but not predicted c, or missed)
    neg = _prf(c.neg_as_neg, c.pos_as_neg + c.unmatched_pred_neg, c.neg_as_pos + c.unmatched_true_neg)
    pos = _prf(c.pos_as_pos, c.neg_as_pos + c.unmatched_pred_pos, c.pos_as_neg + c.unmatched_true_pos)
    out["nc_precision"], out["nc_recall"], out["nc_f1"] = pos
    out["f1_negative"], out["f1_positive"] = neg[2], pos[2]
    out["macro_f1"] = (neg[2] + pos[2]) / 2

    out["f1_d"] = out["np_f1"]
    # (type, TP_t, TN_t, FP_t, FN_t over matched pairs, FP_d,t and FN_d,t unmatched of that type)
    per_type = (("negative", c.neg_as_neg, c.pos_as_pos, c.pos_as_neg, c.neg_as_pos,
                  c.unmatched_pred_neg, c.unmatched_true_neg),
                ("positive", c.pos_as_pos, c.neg_as_neg, c.neg_as_pos, c.pos_as_neg,
                 c.unmatched_pred_pos, c.unmatched_true_pos))
    for name, tp_t, tn_t, fp_t, fn_t, fp_d, fn_d in per_type:
        right = 2 * (tp_t + (tn_t if count_true_negatives else 0))
        denominator = right + 2 * fp_t + 2 * fn_t + fp_d + fn_d
        out[f"f1_t_{name}"] = float(right / denominator) if denominator else 1.0

    out["count_error_positive"] = c.n_pred_positive - c.n_true_positive
    out["count_error_negative"] = c.n_pred_negative - c.n_true_negative
    out["count_rel_error_positive"] = (
        float(out["count_error_positive"] / c.n_true_positive) if c.n_true_positive else float("nan"))
    out.update(tp=c.tp, fp=c.fp, fn=c.fn, n_pred=c.tp + c.fp, n_true=c.tp + c.fn,
               n_pred_negative=c.n_pred_negative, n_true_negative=c.n_true_negative,
               n_pred_positive=c.n_pred_positive, n_true_positive=c.n_true_positive)
    return {k: out[k] for k in SCORE_NAMES}
