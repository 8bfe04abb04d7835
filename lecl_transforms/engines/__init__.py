"""Engine pieces of the bundle beyond MONAI's stock components: the trainer, config helpers that read
checks before any work, the training plan in the log, and the
stack predictor of inference."""

from .config import (
    BUNDLE_ENV,
    bundle_config,
    check_epochs,
    check_training_config,
    checkpoint_epoch,
    default_bundle_root,
    guard_checkpoints,
    latest_checkpoint,
    run_parameters,
)
from .distributed import close_process_group, close_process_group_on_error
from .plan import cache_split, log_training_plan, resolve_patches_per_epoch, training_plan
from .model_values import ARGMAX, resolve_model_pixel_size, resolve_postprocessing
from .pipeline import PIPELINE_KEYS, StackPipeline
from .predictor import ERROR_LOG_NAME, PREDICT_MANIFEST, SUMMARY_NAME, StackPredictor, inference_entries
from .preflight import (SYNTHETIC, TrainingData, check_training_data, datalist_file, training_entries,
                        write_synthetic_data)
from .trainer import (TARGET_KEYS, CompiledOrEager, LECLTrainer, PrepareTrainBatch, PrepareValBatch, loss_term_metrics,
                      lower_is_better)

__all__ = [
    "check_epochs", "checkpoint_epoch", "BUNDLE_ENV", "default_bundle_root", "bundle_config", "check_training_config",
    "guard_checkpoints", "latest_checkpoint", "run_parameters", "SYNTHETIC", "TrainingData", "training_entries",
    "check_training_data", "datalist_file", "write_synthetic_data",
    "resolve_patches_per_epoch", "cache_split", "training_plan", "log_training_plan", "TARGET_KEYS", "LECLTrainer",
    "PrepareTrainBatch", "PrepareValBatch", "loss_term_metrics", "lower_is_better", "StackPredictor", "CompiledOrEager",
    "inference_entries", "PREDICT_MANIFEST", "SUMMARY_NAME", "ERROR_LOG_NAME", "StackPipeline", "PIPELINE_KEYS",
    "resolve_postprocessing", "resolve_model_pixel_size", "ARGMAX", "close_process_group_on_error",
    "close_process_group",
]
