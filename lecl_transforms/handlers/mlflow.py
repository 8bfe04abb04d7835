"""MLflow tracking that survives crashes and is never counted twice.

* Every run gets its own name (``stage0-<date>-<time>-<pid>``): MONAI's ``MLFlowHandler`` with no run name joins
  the latest run that is not FINISHED, so a crashed run left RUNNING would capture every later run (and fail on
  "Changing param values is not allowed").
* A run that raises is marked FAILED before the error goes on (and the next run starts clean).
* ``--tracking mlflow`` adds MONAI's own handlers: then the bundle's handlers stay off, so each metric is logged
  once per epoch, and the run's parameters are handed to MONAI's handler instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from ignite.engine import Engine
from monai.handlers import MLFlowHandler

__all__ = ["unique_run_name", "attached_mlflow_handlers", "attach_mlflow", "run_marking_failed", "log_evaluation"]


def unique_run_name(stage: int, run_name: str | None = None) -> str:
    """``run_name`` when given, else ``stage<N>-<YYYYmmdd-HHMMSS>-<pid>`` (unique per launch)."""
    if run_name:
        return str(run_name)
    return f"stage{int(stage)}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def attached_mlflow_handlers(engine: Engine) -> list[MLFlowHandler]:
    """The ``MLFlowHandler`` objects whose methods are attached to ``engine``."""
    found: list[MLFlowHandler] = []
    for handlers in engine._event_handlers.values():
        for handler, *_ in handlers:
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler) and owner not in found:
                found.append(owner)
    return found


def attach_mlflow(trainer: Engine, evaluator: Engine | None, train_handler: MLFlowHandler,
                  val_handler: MLFlowHandler | None, run_params: Mapping | None = None) -> list[MLFlowHandler]:
    """Attach the bundle's MLflow handlers, unless ``--tracking mlflow`` already attached MONAI's (then give those
    the run parameters). Returns the handlers that log this run."""
    present = attached_mlflow_handlers(trainer)
    if present:
        for handler in present:
            handler.experiment_param = dict(run_params or {})
        return present + (attached_mlflow_handlers(evaluator) if evaluator is not None else [])
    train_handler.attach(trainer)
    handlers = [train_handler]
    if evaluator is not None and val_handler is not None and not attached_mlflow_handlers(evaluator):
        val_handler.attach(evaluator)
        handlers.append(val_handler)
    return handlers


def run_marking_failed(trainer: Engine, handlers: Sequence[MLFlowHandler] = ()):
    """``trainer.run()``; if it raises, every open MLflow run of ``handlers`` is marked FAILED, then the error goes
    on. Runs of engines that never started (no MLflow run yet) are left alone."""
    try:
        return trainer.run()
    except BaseException:
        from mlflow.entities import RunStatus

        for handler in handlers:
            run = getattr(handler, "cur_run", None)
            if run is not None:
                handler.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
                handler.cur_run = None
        raise


def log_evaluation(report: Mapping, files: Sequence = (), tracking_uri: str | None = None,
                   experiment_name: str = "lecl", run_name: str | None = None) -> str:
    """Log an evaluation (``lecl evaluate`` / ``evaluate.json``) as its own MLflow run in the training's store: the
    pooled scores as metrics (NaN ones left out), the settings as parameters, ``files`` (metrics.json/.md) as
    artifacts. Returns the run id."""
    import math

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    name = run_name or f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run = client.create_run(experiment_id, run_name=name)
    try:
        for key, value in report.get("pooled", {}).items():
            if isinstance(value, (int, float)) and not math.isnan(float(value)):
                client.log_metric(run.info.run_id, key, float(value))
        for key, value in report.get("settings", {}).items():
            client.log_param(run.info.run_id, key, str(value))
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
