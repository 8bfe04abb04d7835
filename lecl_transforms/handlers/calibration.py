"""Calibration of the post-processing at the end of training, stored in the models it calibrates."""

from __future__ import annotations

import copy
import logging
import os

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..metrics.calibration import calibrate_postprocessing, check_grid
from ..metrics.stack import StackValidator
from ..networks import EXTRA_STATE_KEY, ModelDescription, load_weights, unwrap_parallel, update_description

__all__ = ["CalibrationHandler"]

logger = logging.getLogger(__name__)


class CalibrationHandler:
    """When training completes, calibrate the post-processing on the validation stacks
    (:func:`~lecl_transforms.metrics.calibrate_postprocessing`) for each model the run leaves, and store the chosen
    values and the F1 curve in that model's description:

    * the final weights (in memory): recorded in ``description`` and so in the network's ``state_dict()``, which the
      training's ``CheckpointSaver`` writes next as ``model_final.pt`` (attach this handler before it);
    * the best model ``best_model`` (``model.pt``, chosen by the validation key metric): its weights are calibrated
      on their own (unless they are the final ones) and the file is rewritten with the values
      (:func:`~lecl_transforms.networks.update_description`; under DDP by process 0).

    Inference then uses the stored values unless the user sets them (``inference.json``: ``np_threshold`` null).

    Args:
        validator: the training's :class:`~lecl_transforms.metrics.StackValidator` (its stacks and its pipeline,
            built from ``inference.json``).
        grid: candidates per key, e.g. ``{"np_threshold": [0.3, 0.4, ..., 0.9]}`` (see
            :func:`~lecl_transforms.metrics.check_grid`).
        description: the training's :class:`~lecl_transforms.networks.ModelDescription` (``train.json``:
            ``@model_description``).
        best_model: path of ``model.pt`` (nothing done for it when the run left none).
    """

    def __init__(self, validator: StackValidator, grid, description: ModelDescription, best_model=None):
        self.validator, self.grid, self.description = validator, check_grid(grid), description
        self.best_model = None if best_model is None else os.fspath(best_model)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        network = unwrap_parallel(self.validator.network)
        final = calibrate_postprocessing(self.validator, self.grid, network)
        if final is None:
            return
        self.description.record(network, **final.description_values())
        # model.pt is written by process 0 into the models folder the processes of one machine share; process 0
        # decides for all (under DDP each process's batch-norm statistics differ slightly, so would their answers)
        if not _agreed(self.best_model is not None and os.path.isfile(self.best_model)):
            return
        best = final
        candidate = copy.deepcopy(network)
        load_weights(candidate, self.best_model)
        if not _agreed(_same_weights(candidate, network)):
            best = calibrate_postprocessing(self.validator, self.grid, candidate)
        del candidate
        if best is not None and idist.get_rank() == 0:
            update_description(self.best_model, **best.description_values())
            chosen = ", ".join(f"{k} {v:g}" for k, v in best.values.items())
            logger.info(f"{self.best_model}: calibrated {chosen} stored in the model (detection F1 {best.score:.3f} "
                        f"on the validation stacks); model_final.pt: "
                        + ", ".join(f"{k} {v:g}" for k, v in final.values.items()))


def _agreed(answer: bool) -> bool:
    """Process 0's ``answer`` on every process (the answer itself without ``torch.distributed``)."""
    if idist.get_world_size() == 1:
        return bool(answer)
    return bool(idist.broadcast(float(answer), src=0))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k != EXTRA_STATE_KEY)
