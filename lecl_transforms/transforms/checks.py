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
    "shows_objects",
    "neighbour_correlation",
    "ClickPlacementCheck",
    "ClickPlacementCheckd",
    "ChannelOrderCheck",
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


def shows_objects(channel, min_correlation: float = 0.05, min_structure: float = 0.002) -> tuple[bool, str]:
    """Whether a channel ``(Z, Y, X)`` shows objects rather than noise, and the reading: neighbouring voxels correlate
    at least ``min_correlation`` (:func:`neighbour_correlation`: not pixel noise) and at least ``min_structure`` of
    its voxels stand out of the background (:func:`~.functional.structure_fraction`: not smooth noise either, e.g. of
    a binned or denoised empty channel)."""
    corr = neighbour_correlation(channel)
    if corr < min_correlation:
        return False, (f"pixel noise with no objects (neighbouring voxels correlate {corr:.3f}; stacks with nuclei "
                       "give about 0.1 or more, even very noisy ones)")
    structure = F.structure_fraction(F.sample_slices(as_numpy(channel)))
    if structure < min_structure:
        return False, (f"noise with no objects ({structure:.2%} of its voxels stand out of the background by 6 "
                       "standard deviations; stacks with nuclei give 2.5 % or more, even dim or noisy ones)")
    return True, ""


def check_nuclei_structure(nuclei, where, allow: bool = False, min_correlation: float = 0.05,
                           min_structure: float = 0.002, channel: int | None = None, image=None) -> bool:
    """The nuclei channel must show objects, not noise (an empty channel, e.g. the wrong index of a stack with more
    channels): :func:`shows_objects`. Not asked of the marker channel: a stack without any positive nucleus is valid.
    ``channel`` (its index) and ``image`` (the whole ``(C, Z, Y, X)`` stack) let the message name the channels that do
    show objects. Returns whether it shows objects (False only when allowed)."""
    fine, reading = shows_objects(nuclei, min_correlation, min_structure)
    if not fine:
        which = f"channel {channel}" if channel is not None else "the channel"
        found = ""
        if image is not None:
            n = int(image.shape[0])
            with_objects = [c for c in range(n) if c != channel
                            and shows_objects(image[c], min_correlation, min_structure)[0]]
            listed = ", ".join(str(c) for c in with_objects) if with_objects else "none"
            found = f"; of the stack's {n} channels (0..{n - 1}), those showing objects: {listed}"
        report_suspicious(f"{where} (config: nuclei_channel)",
                          f"the nuclei channel ({which}) looks like {reading}{found}",
                          "check --nuclei-channel / --marker-channel (config nuclei_channel / marker_channel): they "
                          "should index the nuclei (e.g. DAPI) and marker channels of your stack (0-based); "
                          + ALLOW_HINT, allow)
    return fine


# -- clicks on nuclei (Alg. 1 step 4's premise) ------------------------------------------------------------------------
class ClickPlacementCheck(Transform):
    """The clicks must sit on nuclei: Alg. 1 step 4 finds the nuclei cluster as the one holding the clicks.

    ``img`` ``(2, Z, Y, X)`` (nuclei, marker), ``points`` ``(N, 3)`` -> ``img`` unchanged, or an error. A click is
    *on a nucleus* when the median of the nuclei channel in a small disk around it (on its slice) is brighter than
    ``min_rank`` of the pixels *far from every click* on that slice (:func:`~.functional.far_from_clicks`: the
    background between nuclei and unclicked nuclei). Comparing clicks with their own surroundings, not with the
    brightest part of the stack, lets real textured nuclei through (bright chromocentres, dim centres), dim and
    low-contrast stacks, and any intensity range (8 or 16 bit). Suspicious, unless ``allow_suspicious_input``:

    * the channels look swapped: at the clicks the marker channel ranks higher than the nuclei channel (median rank
      difference below ``-swap_margin``) and would pass the rule above as the nuclei channel;
    * the clicks look x/y swapped, or given in micrometres instead of pixels: read back that way (x and y exchanged;
      divided by the pixel size, taken from the image's ``spacing`` metadata) they fit inside the stack and clearly
      more of them sit on nuclei (by more than ``alternative_margin`` of the clicks);
    * more than ``max_off`` of the clicks are off the nuclei (another wrong channel, clicks from another stack);
    * the k-means of the pseudo-label steps disagrees with the clicks (``agreements``: dicts from
      :func:`~lecl_transforms.transforms.functional.cluster_agreement`): fewer than half the clicks fall in the
      cluster holding most of them.

    Fewer than ``min_points`` clicks are too few to judge: the check is skipped. Measured on the built-in synthetic
    stacks (clean and dense, 96-256 px, 3 seeds each) and on textured versions of them (chromocentres, dim centres,
    8/16 bit, contrast down to 0.15x): correct clicks sit >= 74 % on nuclei and are never flagged; swapped
    channels, x/y-swapped clicks and clicks in micrometres are flagged in every case.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, allow_suspicious_input: bool = False, min_rank: float = 0.5, max_off: float = 0.35,
                 swap_margin: float = 0.1, alternative_margin: float = 0.05, min_points: int = 5):
        self.allow = bool(allow_suspicious_input)
        self.min_rank, self.max_off = float(min_rank), float(max_off)
        self.swap_margin, self.alternative_margin, self.min_points = float(swap_margin), float(alternative_margin), \
            int(min_points)

    def click_ranks(self, channel: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Per click: the rank of ``channel`` ``(Z, Y, X)`` under it (median over a disk of half the far distance)
        among the pixels of its slice far from every click (see the class)."""
        far, distance = F.far_from_clicks(points, channel.shape[1:])
        value = F.local_median_at(channel, points, max(1, int(round(0.5 * distance))))
        return F.slice_ranks(channel, points[:, 0], value, mask=far if far.any() else None)

    def on_share(self, channel: np.ndarray, points: np.ndarray) -> float | None:
        """Share of ``points`` on nuclei; None when fewer than 90 % of them lie inside the stack (not a reading)."""
        inside = ((points >= 0) & (points < np.asarray(channel.shape))).all(axis=1)
        if inside.mean() < 0.9 or inside.sum() < self.min_points:
            return None
        return float((self.click_ranks(channel, points[inside]) > self.min_rank).mean())

    @staticmethod
    def readings(points: np.ndarray, spacing) -> dict[str, np.ndarray]:
        """Other readings of the clicks that users get wrong: x and y exchanged; micrometres (for pixels of
        ``spacing`` ``(dy, dx)`` um that differ from 1 um by more than 20 %)."""
        out = {"x and y swapped": points[:, [0, 2, 1]]}
        if spacing is not None:
            dy, dx = (float(v) for v in np.asarray(spacing, np.float64).ravel()[-2:])
            if dy > 0 and dx > 0 and (abs(dy - 1) > 0.2 or abs(dx - 1) > 0.2):
                out["in micrometres, not pixels"] = np.stack(
                    [points[:, 0], np.rint(points[:, 1] / dy), np.rint(points[:, 2] / dx)], axis=1).astype(np.int64)
        return out

    def problems(self, img, points, agreements: Sequence[Mapping] = ()) -> list[str]:
        """What is suspicious about these clicks (empty when nothing is)."""
        points = as_points(points)
        n = len(points)
        found = []
        if n >= self.min_points:
            image = as_numpy(img, np.float32)
            nuc_rank, mar_rank = self.click_ranks(image[0], points), self.click_ranks(image[1], points)
            nuc_on, mar_on = nuc_rank > self.min_rank, mar_rank > self.min_rank
            gap = float(np.median(nuc_rank - mar_rank))
            if gap < -self.swap_margin and 1 - mar_on.mean() <= self.max_off:  # the marker passes as nuclei
                found.append(f"the nuclei and marker channels look swapped: at the {n} clicks the marker channel is "
                             f"brighter than the nuclei channel (median rank among the pixels away from the clicks "
                             f"{np.median(mar_rank):.2f} vs {np.median(nuc_rank):.2f}; {mar_on.mean():.0%} of the "
                             f"clicks sit on bright marker, {nuc_on.mean():.0%} on bright nuclei)")
            else:
                spacing = (getattr(img, "meta", None) or {}).get("spacing")
                for reading, moved in self.readings(points, spacing).items():
                    share = self.on_share(image[0], moved)
                    if share is not None and share > nuc_on.mean() + self.alternative_margin \
                            and 1 - share <= self.max_off:
                        found.append(f"the clicks look {reading}: as given {nuc_on.mean():.0%} of the {n} clicks "
                                     f"sit on nuclei, read that way {share:.0%} would")
                        break
                else:
                    if 1 - nuc_on.mean() > self.max_off:
                        off = int(n - nuc_on.sum())
                        found.append(f"{off} of {n} clicks ({off / n:.0%}) fall off the nuclei: the nuclei channel "
                                     f"under them is not brighter than the pixels away from the clicks")
        for a in agreements:
            where = a.get("where", "k-means")
            if a["on_nuclei_cluster"] < 0.5 * a["points"]:
                found.append(f"{where}: only {a['on_nuclei_cluster']} of {a['points']} clicks fall on the nuclei "
                             "cluster")
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


# -- the channel order from the image alone (lecl predict on stacks without clicks) -------------------------------
class ChannelOrderCheck(Transform):
    """Without clicks, judge from the image alone whether the nuclei and marker channels look swapped.

    ``img`` ``(2, Z, Y, X)`` (nuclei, marker) -> ``img`` unchanged, or an error (a warning with
    ``allow_suspicious_input``). A nuclear stain shows every nucleus; a marker shows part of them (a nuclear marker),
    or more than the nuclei (cytoplasm, whole cells, rings). So the marker's bright structures are mostly a subset of
    the nuclei's or larger than them, never both a superset of them and no larger. Two statistics on each channel's
    significant structures (:func:`~.functional.significant_foreground`, scale-free: 8/16 bit, dim or bright) and
    their in-plane size (:func:`~.functional.correlation_length`): the channels look swapped when

    * the nuclei channel's structures lie on the marker's more than the marker's lie on them, by more than
      ``margin`` (shares of each channel's structure voxels), and ``min_lift`` times more often than by chance (than
      the marker's share of all voxels; unrelated channels, e.g. two of random blobs, are 1) - the nuclei channel
      looks like a subset of the other;
    * and the nuclei channel's structures are at least as large as the marker's: a marker that fills cells
      (cytoplasm and nucleus) also holds the nuclei, but its structures are larger.

    Either channel without structures (an empty marker: no positive nucleus), or less than ``min_foreground`` of the
    sampled voxels, is not a reading: no finding. Measured on the built-in synthetic stacks (clean and dense, 128 and
    256 px) and textured versions (chromocentres, dim centres, 8/16 bit, contrast 0.15-1x, 8-250 photons) and on
    stacks whose marker fills the cytoplasm, whole cells or exact nuclei of 40 % or 90 % of the cells: no valid
    stack is flagged; swapped channels are flagged in all these regimes at the usual 40 % positive, not where the
    marker covers almost no nuclei (10 %) or almost all of them alike (exact nuclei of 90 % of the cells; 90 % in the
    clean regime), nor at 8 photons per voxel (clean). Stacks with clicks are judged by :class:`ClickPlacementCheck`
    instead (it uses the clicks).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, allow_suspicious_input: bool = False, margin: float = 0.08, min_lift: float = 1.5,
                 min_foreground: float = 0.002):
        self.allow, self.margin, self.min_lift = bool(allow_suspicious_input), float(margin), float(min_lift)
        self.min_foreground = float(min_foreground)

    def statistics(self, img) -> dict | None:
        """``on_marker`` (share of the nuclei channel's structure voxels on the marker's), ``on_nuclei`` (the
        converse), ``lift`` (``on_marker`` over the marker's share of all voxels), ``size_nuclei_px`` and
        ``size_marker_px``; None when a channel has too few structures."""
        image = as_numpy(img)
        nuclei, marker = F.sample_slices(image[0]), F.sample_slices(image[1])
        fg_n, fg_m = F.significant_foreground(nuclei), F.significant_foreground(marker)
        if min(fg_n.mean(), fg_m.mean()) < self.min_foreground:
            return None
        both = float(np.count_nonzero(fg_n & fg_m))
        on_marker = both / np.count_nonzero(fg_n)
        return {"on_marker": on_marker, "on_nuclei": both / np.count_nonzero(fg_m),
                "lift": on_marker / float(fg_m.mean()),  # 1: the two channels' structures unrelated
                "size_nuclei_px": F.correlation_length(nuclei), "size_marker_px": F.correlation_length(marker)}

    def problems(self, img) -> list[str]:
        s = self.statistics(img)
        if s is None or s["on_marker"] - s["on_nuclei"] <= self.margin or s["lift"] < self.min_lift \
                or s["size_nuclei_px"] < s["size_marker_px"]:
            return []
        return [f"the nuclei and marker channels look swapped (judged from the image, no clicks): "
                f"{s['on_marker']:.0%} of the nuclei channel's bright structures lie on the marker's but only "
                f"{s['on_nuclei']:.0%} of the marker's on them, and they are not smaller (size "
                f"{s['size_nuclei_px']:.1f} vs {s['size_marker_px']:.1f} px): the marker channel looks like the "
                "nuclear stain, the nuclei channel like a marker on part of the nuclei"]

    def __call__(self, img, source: str | None = None):
        found = self.problems(img)
        if found:
            report_suspicious(f"{source or source_of(img)} (config: nuclei_channel / marker_channel)", "; ".join(found),
                              "check --nuclei-channel/--marker-channel (config nuclei_channel/marker_channel): the "
                              "nuclei channel is the nuclear stain (e.g. DAPI) that shows every nucleus; "
                              + ALLOW_HINT, self.allow)
        return img


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
