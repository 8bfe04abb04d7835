"""Ignite/MONAI handler glue: MLflow tracking that survives crashes and never logs twice, evaluation runs, and
validation at the end of every training run, calibration of the post-processing when training completes, a checkpoint
to resume from when training is stopped by Ctrl-C."""

from .mlflow import (
    artifact_location,
    attach_mlflow,
    check_tracking_uri,
    log_evaluation,
    mark_runs_failed,
    mlflow_handlers,
    unique_run_name,
)
from .calibration import CalibrationHandler
from .interrupt import INTERRUPT_CHECKPOINT, InterruptCheckpoint
from .validation import FinalValidationHandler, attach_handlers

__all__ = ["unique_run_name", "mlflow_handlers", "attach_mlflow", "mark_runs_failed", "log_evaluation",
           "check_tracking_uri", "artifact_location", "FinalValidationHandler", "attach_handlers",
           "CalibrationHandler", "InterruptCheckpoint", "INTERRUPT_CHECKPOINT"]
