"""Checks that stop suspicious input with a clear message (where, what, fix) before it becomes bad pseudo-labels.

Each check is a pass-through MONAI transform with a dictionary twin, placed in
:func:`~lecl_transforms.transforms.compose.pseudo_label_transforms`. "Suspicious" means the data are probably wrong
but could be right (an unusual stack): with ``allow_suspicious_input=True`` the finding is logged as a warning
instead. Plain errors (a channel index that does not exist) are never allowed through.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..data.reader import source_of
from ..errors import input_error
from . import functional as F
from .rules import PseudoLabelRules, resolve_rules
from .utils import as_numpy, as_points

__all__ = [
    "ALLOW_HINT",
    "report_suspicious",
    "check_channel_indices",
    "check_distinct_channels",
    "check_nuclei_structure",
    "neighbour_correlation",
    "ClickPlacementCheck",
    "ClickPlacementCheckd",
    "SliceSetCheck",
    "SliceSetCheckd",
]


logger = logging.getLogger(__name__)

#: how to let suspicious but correct data through, appended to every fix
ALLOW_HINT = ("or, if the data are right, pass --allow-suspicious-input (lecl prepare, lecl predict) / "
              "allow_suspicious_input=true (bundle config)")

_CLICK_FIX = ("check --nuclei-channel/--marker-channel (config nuclei_channel/marker_channel), and that the points "
              "file's columns are z,y,x in that order and in units of 0-based voxel indices (not micrometres); "
              + ALLOW_HINT)


def report_suspicious(where: str, problem: str, fix: str, allow: bool) -> None:
    """Raise :class:`~lecl_transforms.errors.LECLInputError` for a suspicious finding, or log it as a warning when
    ``allow`` (the user said the data are right)."""
    if not allow:
        raise input_error(where, problem, fix)
    logger.warning("%s: %s (allowed: allow_suspicious_input)", where, problem)


# -- channels ---------------------------------------------------------------------------------------------------------
def check_channel_indices(n_channels: int, nuclei_channel: int, marker_channel: int, where) -> tuple[int, int]:
    """Both channel indices exist in a stack of ``n_channels`` and select two different channels; returns them
    normalised to ``0..n_channels-1`` (``-1`` is the last channel, as in numpy). ``where`` names the stack."""
    n = int(n_channels)
    picked = []
    for name, idx in (("nuclei_channel", int(nuclei_channel)), ("marker_channel", int(marker_channel))):
        if not -n <= idx < n:
            raise input_error(f"{where} (config: {name})", f"{name}={idx}, but the image has {n} channels (0..{n - 1})",
                              f"set {name} to a channel index between 0 and {n - 1}")
        picked.append(idx % n)
    if picked[0] == picked[1]:
        raise input_error(f"{where} (config: nuclei_channel / marker_channel)",
                          f"nuclei_channel={nuclei_channel} and marker_channel={marker_channel} both select channel "
                          f"{picked[0]} of the image's {n} channels (0..{n - 1})",
                          "set them to the two different channel indices of your stack (0-based; -1 = the last)")
    return picked[0], picked[1]


def check_distinct_channels(nuclei, marker, where, allow: bool = False, max_correlation: float = 0.99) -> float:
    """The nuclei and marker channels must not hold the same image (identical data or Pearson correlation above
    ``max_correlation``: the same channel exported twice, or a wrong index). Returns the correlation."""
    a, b = as_numpy(nuclei).ravel(), as_numpy(marker).ravel()
    step = max(1, a.size // (1 << 22))  # a regular subsample of <= 4M voxels: the correlation to ~1e-3
    a, b = a[::step].astype(np.float64), b[::step].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    corr = float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))
    if corr > max_correlation:
        same = "identical data" if np.array_equal(as_numpy(nuclei), as_numpy(marker)) else f"correlation {corr:.3f}"
        report_suspicious(f"{where} (config: nuclei_channel / marker_channel)",
                          f"the nuclei and marker channels hold the same image ({same})",
                          "check nuclei_channel / marker_channel and the export (both channels in one file); "
                          + ALLOW_HINT, allow)
    return corr


def neighbour_correlation(channel) -> float:
    """Pearson correlation of each voxel of ``channel`` ``(Z, Y, X)`` with its x and y neighbours (the mean of the
    two): about 0 for pixel noise, high wherever objects span several pixels (nuclei 6-20 px wide, blurred by the
    optics; 0.1-0.2 even at 8 photons per voxel on the synthetic stacks, 0.9+ at normal counts)."""
    x = as_numpy(channel)
    # a regular subsample of ~256 whole rows and ~256 whole columns (no copy of the whole channel)
    rows = x.reshape(-1, x.shape[-1])[:: max(1, x.size // x.shape[-1] // 256)]
    cols = np.swapaxes(x, -1, -2)[:, :: max(1, x.shape[-1] * x.shape[0] // 256)].reshape(-1, x.shape[-2])

    def corr(a, b):
        a, b = a.astype(np.float64) - a.mean(), b.astype(np.float64) - b.mean()
        return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))

    return (corr(rows[:, :-1], rows[:, 1:]) + corr(cols[:, :-1], cols[:, 1:])) / 2


def check_nuclei_structure(nuclei, where, allow: bool = False, min_correlation: float = 0.05) -> float:
    """The nuclei channel must show objects, not pixel noise (an empty channel, e.g. the wrong index of a stack with
    more channels): neighbouring voxels correlate at least ``min_correlation`` (:func:`neighbour_correlation`).
    Not asked of the marker channel: a stack without any positive nucleus is valid. Returns the correlation."""
    corr = neighbour_correlation(nuclei)
    if corr < min_correlation:
        report_suspicious(f"{where} (config: nuclei_channel)",
                          f"the nuclei channel looks like pixel noise with no objects (neighbouring voxels correlate "
                          f"{corr:.3f}; stacks with nuclei give about 0.1 or more, even very noisy ones)",
                          "check --nuclei-channel (config nuclei_channel): it should index the nuclei (e.g. DAPI) "
                          "channel of your stack; " + ALLOW_HINT, allow)
    return corr


# -- clicks on nuclei (Alg. 1 step 4's premise) ------------------------------------------------------------------------
class ClickPlacementCheck(Transform):
    """The clicks must sit on nuclei: Alg. 1 step 4 finds the nuclei cluster as the one holding the clicks.

    ``img`` ``(2, Z, Y, X)`` (nuclei, marker), ``points`` ``(N, 3)`` -> ``img`` unchanged, or an error. A click is
    *on a nucleus* when the nuclei channel, averaged over a disk of ``radius`` px on the clicked slice, is above the
    stack's Otsu threshold and brighter than ``min_rank`` of that slice (a per-slice rank, robust to depth
    attenuation and to any intensity scale). Suspicious, unless ``allow_suspicious_input``:

    * more than ``max_off`` of the clicks are off the nuclei (clicks x/y swapped, in micrometres, wrong channel);
    * the channels look swapped: at the clicks the marker channel ranks higher than the nuclei channel (median rank
      difference below ``-swap_margin``) and would pass the rule above as the nuclei channel;
    * the k-means of the pseudo-label steps disagrees with the clicks (``agreements``: dicts from
      :func:`~lecl_transforms.transforms.functional.cluster_agreement`): fewer than half the clicks fall in the
      cluster holding most of them, or that cluster is not the brightest.

    Fewer than ``min_points`` clicks are too few to judge: the check is skipped. On the built-in synthetic stacks
    (clean and dense, sizes 96-256) correct clicks score >= 82 % on nuclei and the bad cases above <= 58 %.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, allow_suspicious_input: bool = False, radius: int = 2, min_rank: float = 0.6,
                 max_off: float = 0.3, swap_margin: float = 0.1, min_points: int = 5):
        self.allow = bool(allow_suspicious_input)
        self.radius, self.min_rank, self.max_off = int(radius), float(min_rank), float(max_off)
        self.swap_margin, self.min_points = float(swap_margin), int(min_points)

    def on_nuclei(self, channel: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per click: ``(on, rank)``, whether ``channel`` ``(Z, Y, X)`` is bright there (see the class) and its rank
        in the clicked slice."""
        from skimage.filters import threshold_otsu

        value = F.local_mean_at(channel, points, self.radius)
        rank = F.slice_ranks(channel, points[:, 0], value)
        step = max(1, channel.size // (1 << 22))  # Otsu on a regular subsample of <= 4M voxels
        return (value > threshold_otsu(channel.ravel()[::step])) & (rank > self.min_rank), rank

    def problems(self, img, points, agreements: Sequence[Mapping] = ()) -> list[str]:
        """What is suspicious about these clicks (empty when nothing is)."""
        points = as_points(points)
        n = len(points)
        found = []
        if n >= self.min_points:
            image = as_numpy(img, np.float32)
            nuc_on, nuc_rank = self.on_nuclei(image[0], points)
            mar_on, mar_rank = self.on_nuclei(image[1], points)
            gap = float(np.median(nuc_rank - mar_rank))
            if gap < -self.swap_margin and 1 - mar_on.mean() <= self.max_off:  # the marker passes as nuclei
                found.append(f"the nuclei and marker channels look swapped: at the {n} clicks the marker channel is "
                             f"brighter than the nuclei channel (median rank in the slice {np.median(mar_rank):.2f} "
                             f"vs {np.median(nuc_rank):.2f}; {mar_on.mean():.0%} of the clicks sit on bright marker, "
                             f"{nuc_on.mean():.0%} on bright nuclei)")
            elif 1 - nuc_on.mean() > self.max_off:
                off = int(n - nuc_on.sum())
                found.append(f"{off} of {n} clicks ({off / n:.0%}) fall off the nuclei: the nuclei channel under "
                             f"them is not brighter than {self.min_rank:.0%} of the clicked slice")
        for a in agreements:
            where = a.get("where", "k-means")
            if a["on_nuclei_cluster"] < 0.5 * a["points"]:
                found.append(f"{where}: only {a['on_nuclei_cluster']} of {a['points']} clicks fall on the nuclei "
                             "cluster")
            if not a["nuclei_cluster_brightest"]:
                found.append(f"{where}: the cluster holding most clicks is not the brightest")
        return found

    def __call__(self, img, points, agreements: Sequence[Mapping] = (), source: str | None = None):
        found = self.problems(img, points, agreements)
        if found:
            report_suspicious(source or source_of(img), "; ".join(found), _CLICK_FIX, self.allow)
        return img


class ClickPlacementCheckd(MapTransform):
    """Dictionary twin of :class:`ClickPlacementCheck`: ``keys`` are stacks; also judges the k-means agreement that
    ``NucleiMask3Dd`` / ``ThreeRegionLabeld`` leave in the metadata (``cluster_agreement``) of ``agreement_keys``
    present in the dict. Leaves the dict unchanged."""

    backend = ClickPlacementCheck.backend

    def __init__(self, keys: KeysCollection = "image", points_key: str = "points",
                 agreement_keys: Sequence[str] = ("nuclei_mask", "label"), allow_suspicious_input: bool = False,
                 allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.points_key, self.agreement_keys = points_key, tuple(agreement_keys)
        self.check = ClickPlacementCheck(allow_suspicious_input, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        agreements = []
        for name, key in zip(("3D k-means", "2D k-means"), self.agreement_keys):
            found = (getattr(d.get(key), "meta", None) or {}).get("cluster_agreement")
            if found:
                agreements.append({**found, "where": f"{name} ({key})"})
        for key in self.key_iterator(d):
            self.check(d[key], d[self.points_key], agreements)
        return d


# -- slice sets (Alg. 1 steps a-c) ----------------------------------------------------------------------------------
class SliceSetCheck(Transform):
    """Alg. 1 steps a-c must pick a few slices per nucleus: if more than ``max_full`` of the nuclei get every slice
    of a stack of at least ``min_slices``, the EMIP is a plain MIP (a wrong z column, spacing or nuclei channel, or a
    stack whose slices are copies of one image).

    ``slice_sets`` ``(N, Z)`` bool -> unchanged, or an error. With the robust rules this is suspicious (an error
    unless ``allow_suspicious_input``); with the paper's ``slices="any"`` it is the literal rule's known behaviour
    on hazy stacks and only logged.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, rules: str | PseudoLabelRules | Mapping = "robust", allow_suspicious_input: bool = False,
                 max_full: float = 0.5, min_slices: int = 4):
        self.rules, self.allow = resolve_rules(rules), bool(allow_suspicious_input)
        self.max_full, self.min_slices = float(max_full), int(min_slices)

    def __call__(self, slice_sets, source: str = "image"):
        sets = as_numpy(slice_sets, bool)
        n, n_z = sets.shape
        if n == 0 or n_z < self.min_slices:
            return slice_sets
        full = int(sets.all(axis=1).sum())
        if full <= self.max_full * n:
            return slice_sets
        problem = (f"{full} of {n} nuclei ({full / n:.0%}) get slice sets covering all {n_z} slices: the EMIP would "
                   "equal a plain MIP")
        if self.rules.slices == "any":
            logger.warning("%s: %s (the paper's slice rule on a hazy stack; rules='robust' avoids it)", source, problem)
            return slice_sets
        report_suspicious(source, problem, "check the points' z column (0-based slice index), the voxel spacing "
                          "(dz, dy, dx in micrometres: --spacing, --override-spacing) and --nuclei-channel; "
                          + ALLOW_HINT, self.allow)
        return slice_sets


class SliceSetCheckd(MapTransform):
    """Dictionary twin of :class:`SliceSetCheck`: ``keys`` are slice sets; the file named in messages comes from
    ``d[ref_key]``. Leaves the dict unchanged."""

    backend = SliceSetCheck.backend

    def __init__(self, keys: KeysCollection = "slice_sets", ref_key: str = "image",
                 rules: str | PseudoLabelRules | Mapping = "robust", allow_suspicious_input: bool = False,
                 allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.check = SliceSetCheck(rules, allow_suspicious_input, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key], source_of(d.get(self.ref_key)))
        return d
