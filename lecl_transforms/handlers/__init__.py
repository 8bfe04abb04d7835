"""Ignite/MONAI handler glue: MLflow tracking that survives crashes and never logs twice, and evaluation runs."""

from .mlflow import attach_mlflow, attached_mlflow_handlers, log_evaluation, run_marking_failed, unique_run_name

__all__ = ["unique_run_name", "attached_mlflow_handlers", "attach_mlflow", "run_marking_failed", "log_evaluation"]
