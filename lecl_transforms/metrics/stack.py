"""Validation during training through the inference path: the same detection / classification scores as
``lecl evaluate``, computed on the raw validation stacks while training runs.

:class:`StackValidator` runs the bundle's one per-stack pipeline (:class:`~lecl_transforms.engines.StackPipeline`,
built from ``inference.json`` for the network being trained: every z-slice through the network, per-slice HoVer-Net
post-processing, slice instances linked into 3D nuclei) on each validation stack, matches the nuclei one-to-one to
the held-out clicks (:func:`~.detection.match_nuclei`) and pools the counts over stacks (and over processes under DDP)
into :func:`~.detection.scores`. :class:`StackMetric` exposes one of those scores as an ignite metric of the evaluator
(e.g. ``nc_f1`` as the key metric that picks ``model.pt``); several of them share one validator, which runs once per
evaluation.

How "once per evaluation" is kept (the generation scheme). The validator numbers evaluations with a counter
(``generation``) and caches the scores of the last generation it ran. Every ``StackMetric.reset()`` -- ignite calls
it on ``EPOCH_STARTED``, i.e. at the start of each evaluation, once per attached metric -- asks
:meth:`StackValidator.new_evaluation` for the current number: the first such call after a generation has been run
moves the counter on, later calls before the next run return the same number. All resets of one evaluation come
before any ``compute()`` (``EPOCH_COMPLETED``), so the metrics of one evaluation share one number, the first
``compute()`` runs the validator and the others read its cache. It depends on neither the engine's epoch nor its
iteration, which repeat when an engine is run again (a plain ignite ``Engine.run`` restarts at epoch 1; MONAI's
evaluator takes the trainer's epoch). Under DDP every process resets and computes its metrics in the same order, so
all processes run the validator (and its collective) exactly once per evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields

import ignite.distributed as idist
import numpy as np
import torch
from ignite.metrics import Metric

from ..errors import input_error
from ..networks.placement import unwrap_parallel
from ..utils.spacing import resolve_spacing
from .detection import SCORE_NAMES, NucleusCounts, check_settings, counts_from_matches, match_nuclei, scores

__all__ = ["StackValidator", "StackMetric"]

logger = logging.getLogger(__name__)


class StackValidator:
    """Detection and classification scores of the network on whole validation stacks, through the inference path.

    Args:
        data: ``[{"image": stack path, "points": clicks path}, ...]`` (the validation section of the datalist; other
            keys are ignored).
        network: the HoVer-Net being trained (a DDP wrapper is unwrapped).
        pipeline: the per-stack inference pipeline (:class:`~lecl_transforms.engines.StackPipeline`; the training
            config builds it from ``inference.json`` with the training's channels and spacing).
        radius_um, z_tolerance: the matching rule of :func:`~.detection.match_nuclei`.
        device: where the stacks are kept between evaluations (None: CPU memory; a CUDA device saves the per-slice
            host-to-device copies at the cost of GPU memory). The network runs where its parameters are.

    Each stack is loaded (read, its channels picked, its clicks read and checked against its shape) once, on first
    use, and kept in memory: validation sets are a few stacks. Under ``torch.distributed`` a process handles stacks
    ``i`` with ``i % world_size == rank`` (and only reads those); counts are summed over processes, so every
    process returns the scores of the whole set.
    """

    def __init__(self, data: Sequence[Mapping], network: torch.nn.Module, pipeline, radius_um: float = 3.0,
                 z_tolerance: int = 1, device: str | torch.device | None = None):
        self.data = list(data)
        for i, entry in enumerate(self.data):
            missing = [k for k in ("image", "points") if not isinstance(entry, Mapping) or not entry.get(k)]
            if missing:
                raise input_error(f"StackValidator data entry {i}", f"has no {' / '.join(missing)}",
                                  "give the validation entries with an 'image' stack and its 'points' clicks")
        check_settings((1.0, 1.0, 1.0), radius_um, z_tolerance)
        self.network, self.pipeline = network, pipeline
        self.radius_um, self.z_tolerance = float(radius_um), int(z_tolerance)
        self.device = torch.device(device) if device is not None else torch.device("cpu")

        self._stacks: dict[int, tuple] = {}  # index -> (loaded stack, clicks zyx, labels, spacing)
        self._generation = 0
        self._cached: tuple[int, dict] | None = None  # (generation, scores)
        self.last_counts: NucleusCounts | None = None  # pooled counts of the last run (all processes)
        self.last_seconds: float | None = None  # this process's time in the last run

    # -- data ---------------------------------------------------------------------------------------------------------
    def my_indices(self) -> list[int]:
        """This process's share of ``data``: ``i % world_size == rank``."""
        rank, world = idist.get_rank(), idist.get_world_size()
        return list(range(rank, len(self.data), world))

    def stack(self, index: int) -> tuple[dict, np.ndarray, np.ndarray, tuple[float, float, float]]:
        """Stack ``index`` as ``(loaded stack (the pipeline's preprocessing output, its image on device), clicks
        (N, 3) int64 zyx, labels (N,) int64, spacing (dz, dy, dx) um)``, loaded on first use and kept."""
        if index not in self._stacks:
            from ..data.points import read_points

            entry = self.data[index]
            loaded = self.pipeline.load(entry["image"])
            loaded["image"] = loaded["image"].to(self.device)
            zyx, labels = read_points(entry["points"], shape=tuple(loaded["image"].shape[1:]))
            spacing = resolve_spacing(loaded["image"])
            self._stacks[index] = (loaded, zyx, labels, spacing)
        return self._stacks[index]

    # -- running ------------------------------------------------------------------------------------------------
    def stack_counts(self, index: int) -> NucleusCounts:
        """Counts of stack ``index``: the inference pipeline, then matching to its clicks."""
        loaded = self.stack(index)[0]
        return self.match(index, self.pipeline.predict(loaded, unwrap_parallel(self.network)))

    def match(self, index: int, predicted: Mapping) -> NucleusCounts:
        """Counts of the pipeline's result ``predicted`` (its ``"nuclei"``) for stack ``index`` against its clicks."""
        _, true_zyx, true_labels, spacing = self.stack(index)
        table = predicted["nuclei"].table()
        pred_zyx = np.stack([table["z"], table["y"], table["x"]], axis=1)
        z_range = np.stack([table["z_start"], table["z_stop"]], axis=1)
        pred_idx, true_idx = match_nuclei(pred_zyx, z_range, true_zyx, spacing, self.radius_um, self.z_tolerance)
        return counts_from_matches(table["label"], true_labels, pred_idx, true_idx)

    def run(self) -> dict[str, float]:
        """Scores (:func:`~.detection.scores`, keys :data:`~.detection.SCORE_NAMES`) of the counts pooled over every
        validation stack. Puts the network in eval mode for the run and restores its mode afterwards. Under DDP
        every process must call it (it gathers the counts); a failure on any process is raised on all of them."""
        network = unwrap_parallel(self.network)
        was_training = network.training
        network.eval()
        start = time.perf_counter()
        counts, failure = NucleusCounts(), None
        try:
            for index in self.my_indices():
                counts = counts + self.stack_counts(index)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other processes learn of it
            failure = exc
        finally:
            network.train(was_training)
        self.last_seconds = time.perf_counter() - start
        total = self.pooled(counts, failure)
        self.last_counts = total
        return scores(total)

    def pooled(self, counts: NucleusCounts, failure: Exception | None = None) -> NucleusCounts:
        """Counts summed over processes. The gather always happens, so a process that failed does not leave the
        others waiting in the collective; then every process raises."""
        world = idist.get_world_size()
        if world == 1:
            if failure is not None:
                raise failure
            return counts
        mine = (counts.as_dict(), None if failure is None else f"{type(failure).__name__}: {failure}")
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        if failure is not None:
            raise failure
        failed = {r: message for r, (_, message) in enumerate(gathered) if message is not None}
        if failed:
            listed = "; ".join(f"process {r}: {m}" for r, m in failed.items())
            raise RuntimeError(f"stack validation failed on {len(failed)} process(es): {listed}")
        names = [f.name for f in fields(NucleusCounts)]
        return NucleusCounts(**{n: sum(int(d[n]) for d, _ in gathered) for n in names})

    # -- once per evaluation ----------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Number of the current evaluation (see the module docstring)."""
        return self._generation

    def new_evaluation(self) -> int:
        """Called at the start of an evaluation (by each :class:`StackMetric` in ``reset()``): moves the counter on
        when the current generation has already been run, else keeps it; returns the current generation."""
        if self._cached is not None and self._cached[0] == self._generation:
            self._generation += 1
        return self._generation

    def results(self, generation: int | None = None) -> dict[str, float]:
        """Scores of evaluation ``generation`` (None: the current one): runs the validator the first time a
        generation is asked for, then returns the cached scores (a copy)."""
        key = self._generation if generation is None else int(generation)
        if self._cached is None or self._cached[0] != key:
            result = self.run()
            self._cached = (key, result)
            if idist.get_rank() == 0:
                logger.info(f"stack validation ({len(self.data)} stacks, {self.last_seconds:.1f} s): "
                            f"np_f1 {result['np_f1']:.4f}, nc_f1 {result['nc_f1']:.4f}, "
                            f"macro_f1 {result['macro_f1']:.4f}")
        return dict(self._cached[1])


class StackMetric(Metric):
    """One score of a :class:`StackValidator` as an ignite metric (e.g. of MONAI's ``SupervisedEvaluator``).

    The evaluator's per-batch outputs are not used (``iteration_completed`` does nothing, ``output_transform`` is
    accepted for the usual metric signature only): ``compute()`` returns ``validator``'s ``score`` for the current
    evaluation, running the validator at most once per evaluation however many ``StackMetric`` share it (the
    generation scheme of the module docstring). Under DDP ``compute()`` runs on every process and the validator sums
    the counts itself, so no ``sync_all_reduce`` here; every process gets the same value.

    Args:
        validator: the shared :class:`StackValidator`.
        score: a key of :func:`~.detection.scores` (:data:`~.detection.SCORE_NAMES`), e.g. ``"nc_f1"``,
            ``"np_f1"``, ``"macro_f1"``. Higher is better for the F1/precision/recall keys (what MONAI's key metric
            comparison assumes).
    """

    def __init__(self, validator: StackValidator, score: str = "nc_f1", output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu"):
        if not isinstance(validator, StackValidator):
            raise input_error("config: StackMetric validator", f"got {type(validator).__name__}",
                              "give the StackValidator component (e.g. '@validate#stack_validator')")
        if score not in SCORE_NAMES:
            raise input_error("config: StackMetric score", f"unknown score '{score}'",
                              f"use one of {', '.join(SCORE_NAMES)}")
        self.validator, self.score = validator, score
        self._generation = validator.generation
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._generation = self.validator.new_evaluation()

    def update(self, output) -> None:
        """Nothing: the score comes from whole stacks, not from the evaluator's batches."""

    def iteration_completed(self, engine) -> None:
        """Nothing (ignite would otherwise insist on a ``(y_pred, y)`` output)."""

    def compute(self) -> float:
        return float(self.validator.results(self._generation)[self.score])
