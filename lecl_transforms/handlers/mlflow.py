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

__all__ = ["unique_run_name", "mlflow_handlers", "attach_mlflow", "mark_runs_failed", "log_evaluation",
           "check_tracking_uri", "artifact_location"]

#: MLflow tracking stores this MLflow accepts (``file://`` stores and plain folders it no longer does, from 3.13)
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str | None, name: str = "tracking_uri") -> str | None:
    """``uri`` if MLflow can log to it (checked before any work, not after the results were written): a scheme of
    :data:`TRACKING_SCHEMES` (``sqlite:///path/mlruns.db``, ``http(s)://server``, a database); None stays None
    (MLflow's own default)."""
    from urllib.parse import urlsplit

    from ..errors import input_error

    if uri is None:
        return None
    scheme = urlsplit(str(uri)).scheme.lower().split("+")[0]  # postgresql+psycopg2://...
    if scheme in TRACKING_SCHEMES and (scheme != "sqlite" or str(uri).startswith("sqlite:///")):
        return str(uri)
    got = "a plain path" if "://" not in str(uri) else f"the scheme '{scheme}://'"
    raise input_error(f"{name} (--tracking-uri)", f"{uri!r} is not an MLflow tracking store this MLflow accepts "
                      f"(got {got})",
                      f"give sqlite:///path/to/mlruns.db (a local file), an http(s):// MLflow server, or one of "
                      f"{', '.join(s + '://' for s in TRACKING_SCHEMES)}; or turn MLflow off (--no-mlflow)")


def artifact_location(tracking_uri: str | None) -> str | None:
    """Where a new experiment keeps its artifacts: a ``mlruns`` folder next to a SQLite store's database (as MONAI's
    ``MLFlowHandler`` does for training), not ``./mlruns`` of whatever folder the command ran in; None (MLflow
    decides) for servers and other databases."""
    from pathlib import Path

    from monai.utils import path_to_uri

    if tracking_uri is None or not str(tracking_uri).startswith("sqlite:///"):
        return None
    return path_to_uri(Path(str(tracking_uri)[len("sqlite:///"):]).absolute().parent / "mlruns")


def unique_run_name(stage: int, run_name: str | None = None) -> str:
    """``run_name`` when given, else ``stage<N>-<YYYYmmdd-HHMMSS>-<pid>`` (unique per launch)."""
    if run_name and str(run_name).strip().lower() not in ("null", "none"):
        return str(run_name)
    return f"stage{int(stage)}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def mlflow_handlers(handlers: Sequence) -> list[MLFlowHandler]:
    """The ``MLFlowHandler`` objects among an engine's configured handlers (``--tracking mlflow`` appends MONAI's own
    to ``train#handlers`` and ``validate#handlers``)."""
    return [h for h in handlers if isinstance(h, MLFlowHandler)]


def attach_mlflow(trainer: Engine, evaluator: Engine | None, train_handler: MLFlowHandler,
                  val_handler: MLFlowHandler | None, run_params: Mapping | None = None,
                  configured: Sequence = ()) -> list[MLFlowHandler]:
    """Attach the bundle's MLflow handlers, unless ``--tracking mlflow`` already put MONAI's among the ``configured``
    handlers of the engines (then give those the run parameters instead). Either way, a training run that raises
    marks these MLflow runs FAILED (through the trainer's ``on_failure``), one stopped by Ctrl-C KILLED (its
    ``on_interrupt``). Returns the handlers that log this run."""
    handlers = mlflow_handlers(configured)
    if handlers:
        for handler in handlers:
            handler.experiment_param = dict(run_params or {})
    else:
        train_handler.attach(trainer)
        handlers = [train_handler]
        if evaluator is not None and val_handler is not None:
            val_handler.attach(evaluator)
            handlers.append(val_handler)
    if hasattr(trainer, "on_failure"):
        trainer.on_failure.append(lambda: mark_runs_failed(handlers))
    if hasattr(trainer, "on_interrupt"):
        trainer.on_interrupt.append(lambda: mark_runs_failed(handlers, "KILLED"))
    return handlers


def mark_runs_failed(handlers: Sequence[MLFlowHandler], status: str = "FAILED") -> None:
    """Mark every open MLflow run of ``handlers`` FAILED (or ``status``: KILLED for a run stopped by Ctrl-C; the next
    run starts clean); runs of engines that never started (no MLflow run yet) are left alone."""
    from mlflow.entities import RunStatus

    for handler in handlers:
        run = getattr(handler, "cur_run", None)
        if run is not None:
            handler.client.set_terminated(run.info.run_id, RunStatus.to_string(getattr(RunStatus, status)))
            handler.cur_run = None


def log_evaluation(report: Mapping, files: Sequence = (), tracking_uri: str | None = None,
                   experiment_name: str = "lecl", run_name: str | None = None) -> str:
    """Log an evaluation (``lecl evaluate`` / ``evaluate.json``) as its own MLflow run in the training's store: the
    pooled scores as metrics (NaN ones left out), the settings as parameters, ``files`` (metrics.json/.md) as
    artifacts. Returns the run id."""
    import math

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        experiment_name, artifact_location=artifact_location(tracking_uri))
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
