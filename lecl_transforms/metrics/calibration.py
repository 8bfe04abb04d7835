"""Calibration of the post-processing on the validation stacks (StarDist's ``optimize_thresholds`` pattern).

A network trained from points learns "maybe nucleus" around every nucleus, so the nucleus-probability threshold that
gives the best detections differs from model to model (the model card measures 0.6-0.8). At the end of training,
:func:`calibrate_postprocessing` runs the bundle's one inference pipeline (:class:`~lecl_transforms.engines.
StackPipeline`, the one :class:`~.stack.StackValidator` holds) on every validation stack: the network once per
stack (:meth:`StackPipeline.network_outputs`), then, for every candidate of a small grid (e.g. ``np_threshold``
0.3 ... 0.9 x ``min_volume_um3`` 0 ... 30), only the per-slice post-processing (once per candidate of its own keys)
and the 3D linking (once per candidate of every key), matched to the held-out clicks as
``lecl evaluate`` does (detection F1, matching in um). The candidate of the best pooled detection F1 is chosen; the
whole curve is kept, so the model card and a user can see how sensitive the model is.

Memory holds one stack's network outputs at a time: counts are sums over stacks, gathered per candidate. Under DDP
each process takes its validation stacks (as the validator does) and the counts are summed over processes, so every
process gets the same choice.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import ignite.distributed as idist
import torch

from ..errors import input_error
from ..utils.values import POSTPROCESS_VALUE_CHECKS
from ..networks.placement import unwrap_parallel
from .detection import NucleusCounts, scores
from .stack import StackValidator

__all__ = ["Calibration", "calibrate_postprocessing", "check_grid", "CALIBRATED_KEYS", "POSTPROCESS_KEYS", "LINK_KEYS",
           "CALIBRATION_SCORE"]

logger = logging.getLogger(__name__)

#: per-slice post-processing settings that can be calibrated: config key (``inference.json``) ->
#: ``HoVerNetPostProcess`` name
POSTPROCESS_KEYS = {"np_threshold": "nucleus_threshold", "min_instance_size": "min_instance_size"}
#: 3D linking settings that can be calibrated: config key -> ``LinkSlicesd`` name
LINK_KEYS = {"min_volume_um3": "min_volume_um3"}
#: every calibrated setting: config key -> the name in its step
CALIBRATED_KEYS = {**POSTPROCESS_KEYS, **LINK_KEYS}
#: how far apart two candidates of a key are, per unit (F1 ties go to the candidate nearest the current settings)
_TIE_SCALE = {"np_threshold": 1.0, "min_instance_size": 100.0, "min_volume_um3": 100.0}
#: the score the calibration maximises: detection F1 of the 3D nuclei against the validation clicks
CALIBRATION_SCORE = "np_f1"


@dataclass
class Calibration:
    """The result of :func:`calibrate_postprocessing`.

    ``values``: the chosen settings (config keys, e.g. ``{"np_threshold": 0.6}``); ``score``: their detection F1;
    ``curve``: one row per candidate, its settings and ``np_f1``, ``np_precision``, ``np_recall``, ``n_pred``;
    ``before``: the pipeline's settings before calibration and their F1 (``None`` when they are not on the grid);
    ``stacks``, ``clicks``: the validation data it was measured on."""

    values: dict
    score: float
    curve: list = field(default_factory=list)
    before: dict | None = None
    stacks: int = 0
    clicks: int = 0
    metric: str = CALIBRATION_SCORE

    def description_values(self) -> dict:
        """What the model's description stores: the chosen values and, under ``calibration``, the curve."""
        return {**self.values, "calibration": asdict(self)}

    def table(self) -> str:
        """The curve as text (one line per candidate; the chosen one marked)."""
        keys = list(self.values)
        lines = [" ".join(f"{k:>17}" for k in keys) + "   np_f1  precision  recall  nuclei"]
        for row in self.curve:
            chosen = all(row[k] == self.values[k] for k in keys)
            lines.append(" ".join(f"{row[k]:>17g}" for k in keys) + f"  {row['np_f1']:6.3f}  {row['np_precision']:9.3f}"
                         f"  {row['np_recall']:6.3f}  {row['n_pred']:6d}" + ("  <- chosen" if chosen else ""))
        return "\n".join(lines)


def check_grid(grid: Mapping) -> dict[str, list]:
    """The candidates per calibrated key (``{"np_threshold": [0.3, ..., 0.9]}``), checked: known keys, non-empty
    lists, each value by the one check of its key (:data:`~lecl_transforms.utils.POSTPROCESS_VALUE_CHECKS`), sorted
    and without repeats."""
    if not isinstance(grid, Mapping) or not grid:
        raise input_error("config: calibration_grid", f"got {grid!r}",
                          'give the candidates per key, e.g. {"np_threshold": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}')
    unknown = sorted(set(grid) - set(CALIBRATED_KEYS))
    if unknown:
        raise input_error("config: calibration_grid", f"unknown keys {unknown}", f"use {list(CALIBRATED_KEYS)}")
    checked = {}
    for key, values in grid.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise input_error(f"config: calibration_grid#{key}", "no candidates", "give a non-empty list of values")
        check = POSTPROCESS_VALUE_CHECKS[key]  # every calibrated key has one
        checked[key] = sorted({check(v, f"config: calibration_grid#{key}", "one value per candidate")
                               for v in values})
    return checked


def _current(postprocess, link) -> dict:
    settings = link.transform.settings() if hasattr(link, "transform") else {}
    return {**{key: postprocess.kwargs[name] for key, name in POSTPROCESS_KEYS.items()},
            **{key: settings.get(name) for key, name in LINK_KEYS.items()}}


def _closeness(candidate: Mapping, current: Mapping) -> float:
    """How far a candidate is from the current settings (ties of F1 go to the nearest)."""
    far = 0.0
    for key, value in candidate.items():
        now = current.get(key)
        now = (0.5 if key == "np_threshold" else 0.0) if now is None else now  # argmax = threshold 0.5
        far += abs(value - now) / _TIE_SCALE[key]
    return far


def calibrate_postprocessing(validator: StackValidator, grid: Mapping, network: torch.nn.Module | None = None,
                             ) -> Calibration | None:
    """Choose the post-processing settings of ``grid`` (see :func:`check_grid`) that give the best detection F1
    on ``validator``'s stacks through its pipeline, for ``network`` (default: the validator's). ``None`` when there
    is nothing to calibrate on (no validation stack, or no click in them). Puts the network in eval mode and
    restores its mode; under DDP every process must call it."""
    grid = check_grid(grid)

    def product(names) -> list[dict]:
        names = [k for k in grid if k in names]
        return [dict(zip(names, values)) for values in itertools.product(*(grid[k] for k in names))]

    # every pair of a post-processing candidate and a linking candidate; the per-slice detection of each
    # post-processing candidate is made once and linked with each linking candidate
    post_candidates, link_candidates = product(POSTPROCESS_KEYS), product(LINK_KEYS)
    candidates = [{**p, **k} for p in post_candidates for k in link_candidates]
    keys = list(candidates[0])
    pipeline = validator.pipeline
    base = pipeline.inferer.postprocess
    current = _current(base, pipeline.link)
    posts = [base.with_settings(**{POSTPROCESS_KEYS[k]: v for k, v in c.items()}) for c in post_candidates]
    links = [pipeline.link.with_settings(**{LINK_KEYS[k]: v for k, v in c.items()}) if c else pipeline.link
             for c in link_candidates]
    network = unwrap_parallel(network if network is not None else validator.network)
    was_training = network.training
    network.eval()
    counts, failure = [NucleusCounts() for _ in candidates], None
    start = time.perf_counter()
    mine = validator.my_indices()
    try:
        for index in mine:
            loaded = validator.stack(index)[0]
            outputs = pipeline.network_outputs(loaded, network)
            for i, post in enumerate(posts):
                detected = pipeline.detect_from(loaded, outputs, post)
                for j, link in enumerate(links):
                    k = i * len(links) + j
                    counts[k] = counts[k] + validator.match(index, link(detected))
    except Exception as exc:  # noqa: BLE001 - raised on every process by pooled()
        failure = exc
    finally:
        network.train(was_training)
    pooled = [validator.pooled(c, failure) for c in counts]
    n_clicks = (pooled[0].tp + pooled[0].fn) if pooled else 0
    if not validator.data or n_clicks == 0:
        logger.warning("post-processing not calibrated: no validation clicks to calibrate on (the model keeps no "
                       "calibrated values; inference uses inference.json's fallback)")
        return None
    curve = []
    for candidate, total in zip(candidates, pooled):
        s = scores(total)
        curve.append({**candidate, **{k: float(s[k]) for k in ("np_f1", "np_precision", "np_recall")},
                      "n_pred": int(s["n_pred"])})
    f1 = [0.0 if math.isnan(row["np_f1"]) else row["np_f1"] for row in curve]
    best = max(range(len(curve)), key=lambda i: (round(f1[i], 9), -_closeness(candidates[i], current)))
    before_row = next((row for row in curve if all(row[k] == current[k] for k in keys)), None)
    before = None if before_row is None else {**{k: current[k] for k in keys}, "np_f1": before_row["np_f1"]}
    result = Calibration(values=dict(candidates[best]), score=f1[best], curve=curve, before=before,
                         stacks=len(validator.data), clicks=int(n_clicks))
    if idist.get_rank() == 0:
        chosen = ", ".join(f"{k} {v:g}" for k, v in result.values.items())
        was = "" if before is None else f" (the uncalibrated {', '.join(f'{k} {before[k]:g}' for k in keys)}: " \
                                         f"F1 {before['np_f1']:.3f})"
        logger.info(f"post-processing calibrated on {result.stacks} validation stacks ({n_clicks} clicks, "
                    f"{len(candidates)} candidates, {time.perf_counter() - start:.1f} s): {chosen}, detection F1 "
                    f"{result.score:.3f}{was}\n{result.table()}")
    return result
