"""Ignite/MONAI handler glue: MLflow tracking that survives crashes and never logs twice, evaluation runs, and
validation at the end of every training run, calibration of the post-processing when training completes."""

from .mlflow import attach_mlflow, log_evaluation, mark_runs_failed, mlflow_handlers, unique_run_name
from .calibration import CalibrationHandler
from .validation import FinalValidationHandler, attach_handlers

__all__ = ["unique_run_name", "mlflow_handlers", "attach_mlflow", "mark_runs_failed", "log_evaluation",
           "FinalValidationHandler", "attach_handlers", "CalibrationHandler"]
