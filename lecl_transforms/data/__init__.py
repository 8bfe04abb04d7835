"""Data: the IF stack reader, point annotations, datalists and the synthetic 3D IF generator."""

from .epochs import PatchEpochDataset, paper_patches_per_epoch, tiles_per_image
from .datalist import datalist_sections, load_datalist
from .points import NEGATIVE, POINT_LABELS, POSITIVE, LoadPoints, LoadPointsd, read_points
from .prediction_writer import write_predictions, write_run_summary
from .reader import IFStackReader, read_stack, source_of
from .synthetic import REGIMES, SynthConfig, SyntheticStack, generate_stack
from .synthetic_dataset import MANIFEST_NAME, config_from_options, write_dataset

__all__ = [
    "IFStackReader", "read_stack", "source_of", "read_points", "LoadPoints", "LoadPointsd", "POINT_LABELS",
    "NEGATIVE", "POSITIVE", "load_datalist", "datalist_sections", "SynthConfig",
    "SyntheticStack", "REGIMES", "generate_stack", "write_dataset", "config_from_options", "MANIFEST_NAME",
    "PatchEpochDataset", "tiles_per_image", "paper_patches_per_epoch", "write_predictions", "write_run_summary",
]
