"""Engine pieces of the training bundle beyond MONAI's stock components."""

from .config import check_training_config, default_bundle_root, latest_checkpoint, run_parameters
from .trainer import TARGET_KEYS, LECLTrainer, PrepareTrainBatch, PrepareValBatch, loss_term_metrics, lower_is_better

__all__ = ["default_bundle_root", "check_training_config", "latest_checkpoint", "run_parameters", "TARGET_KEYS",
           "LECLTrainer", "PrepareTrainBatch", "PrepareValBatch", "loss_term_metrics", "lower_is_better"]
