"""Metrics: the click-based validation metric, detection / classification scores of predicted 3D nuclei against
points (method step 5), and the same scores during training validation through the inference path."""

from .click import ClickMetric
from .detection import SCORE_NAMES, NucleusCounts, counts_from_matches, decoy_counts, match_nuclei, scores
from .evaluation import (
    EVAL_PICTURE_SUFFIX,
    EVALUATE_MANIFEST,
    METRICS_FILES,
    check_metrics_out,
    evaluate_predictions,
    evaluate_stack,
    read_prediction_csv,
    write_evaluation_picture,
    write_metrics,
)
from .selection import MetricSet, select_metrics
from .stack import StackMetric, StackValidator
from .calibration import CALIBRATED_KEYS, CALIBRATION_SCORE, Calibration, calibrate_postprocessing, check_grid

__all__ = ["ClickMetric", "SCORE_NAMES", "NucleusCounts", "counts_from_matches", "decoy_counts",
           "evaluate_predictions", "evaluate_stack", "check_metrics_out", "write_evaluation_picture",
           "EVAL_PICTURE_SUFFIX", "EVALUATE_MANIFEST", "METRICS_FILES", "match_nuclei", "read_prediction_csv",
           "scores", "write_metrics", "StackValidator", "StackMetric", "MetricSet", "select_metrics", "Calibration",
           "calibrate_postprocessing", "check_grid", "CALIBRATED_KEYS", "CALIBRATION_SCORE"]
