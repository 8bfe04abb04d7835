"""LECL transforms: MONAI transforms and tools for nuclei detection and marker classification in 3D IF stacks
trained from point annotations (pseudo-labels, EMIP, HoVer-Net targets, synthetic data)."""

from .errors import LECLInputError
from .io import (
    NEGATIVE,
    POSITIVE,
    IFStackReader,
    LoadPoints,
    LoadPointsd,
    NucleiMarkerChannels,
    NucleiMarkerChannelsd,
    load_datalist,
    read_points,
    read_stack,
)
from .synthetic import REGIMES, SynthConfig, generate_stack, write_dataset

__version__ = "0.1.0"

__all__ = [
    "LECLInputError",
    "IFStackReader",
    "read_stack",
    "NucleiMarkerChannels",
    "NucleiMarkerChannelsd",
    "LoadPoints",
    "LoadPointsd",
    "read_points",
    "load_datalist",
    "NEGATIVE",
    "POSITIVE",
    "SynthConfig",
    "REGIMES",
    "generate_stack",
    "write_dataset",
]
