"""Ignite/MONAI handler glue: MLflow tracking that survives crashes and never logs twice, evaluation runs, and
validation at the end of every training run."""

from .mlflow import attach_mlflow, attached_mlflow_handlers, log_evaluation, run_marking_failed, unique_run_name
from .validation import FinalValidationHandler

__all__ = ["unique_run_name", "attached_mlflow_handlers", "attach_mlflow", "run_marking_failed", "log_evaluation",
           "FinalValidationHandler"]
