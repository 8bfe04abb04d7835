"""How the pseudo-label steps decide: the literal paper rules and the robust defaults, as named presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields as dataclass_fields, replace

from ..errors import input_error

__all__ = [
    "PseudoLabelRules",
    "RULES",
    "resolve_rules",
]


@dataclass(frozen=True)
class PseudoLabelRules:
    """How the 3D steps decide; ``RULES["paper"]`` is Algorithm 1 taken literally, ``RULES["robust"]`` the default.

    * ``intensity_scaling``: ``"minmax"`` (paper: 16 -> 8 bit over the whole stack) or ``"percentile"`` (0.5-99.9 %,
      robust to hot pixels).
    * ``background``: ``"ball_overlap"`` (paper step 4: of the two non-nuclei clusters, the one least overlapping the
      points dilated by a ball of ``ball_radius`` voxels, in voxel-index space as the published code does) or
      ``"darkest"`` (the non-nuclei cluster with the lowest intensity centre).
    * ``mask``: ``"not_background"`` (paper: every voxel not in the background cluster), ``"nuclei_cluster"`` (only the
      cluster holding most points) or ``"brightness_groups"``: the nuclei cluster plus the third cluster when its
      intensity centre is nearer the nuclei's than the background's. That third cluster is a dark halo around points
      in sparse stacks, but the dim rims of nuclei in dense ones; the literal rule takes it in either way.
    * ``slices``: ``"any"`` (paper step c: every slice where cell and mask intersect) or ``"footprint_run"``: the
      contiguous run of slices through the clicked slice in which the mask covers at least ``min_overlap`` of the
      nucleus' footprint on its clicked slice (robust to haze and to neighbours above/below in the same cell).
    * ``voronoi_background``: width in px of the band along the borders between Voronoi cells that the 2D weak label
      marks background (Qu et al. 2019's Voronoi label: cell edges are background), over the cluster label; 0 = the
      cluster label alone (the paper as LECL describes it). In dense tissue almost no pixel is far enough from every
      click to be labelled background, so without the band the network is never told where one nucleus ends and the
      next begins, and learns the unlabelled rims and gaps as nucleus the longer it trains (see the model card).
    """

    intensity_scaling: str = "percentile"
    background: str = "darkest"
    mask: str = "brightness_groups"
    slices: str = "footprint_run"
    ball_radius: float = 4.0
    min_overlap: float = 0.3
    fallback_radius: float = 3.0
    voronoi_background: float = 2.0


RULES = {
    "robust": PseudoLabelRules(),
    "paper": PseudoLabelRules(intensity_scaling="minmax", background="ball_overlap", mask="not_background",
                              slices="any", voronoi_background=0.0),
}


def resolve_rules(rules: str | PseudoLabelRules | Mapping) -> PseudoLabelRules:
    """``"robust"`` / ``"paper"`` / a :class:`~lecl_transforms.transforms.rules.PseudoLabelRules` / a dict of its fields
    (optionally with ``"preset"``), e.g. ``{"preset": "robust", "min_overlap": 0.4}`` from a bundle config."""
    if isinstance(rules, PseudoLabelRules):
        return rules
    if isinstance(rules, str):
        if rules not in RULES:
            raise input_error("config: rules", f"unknown rules '{rules}'", f"use one of {sorted(RULES)}")
        return RULES[rules]
    fields = dict(rules)
    base = resolve_rules(fields.pop("preset", "robust"))
    known = {f.name for f in dataclass_fields(PseudoLabelRules)}
    bad = sorted(set(fields) - known)
    if bad:
        raise input_error("config: rules", f"unknown field(s) {bad}", f"use {sorted(known)}")
    return replace(base, **fields)
