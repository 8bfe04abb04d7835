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
from .prepare import prepare_datalist, pseudo_label_transforms
from .pseudolabels import RULES, PseudoLabelRules
from .synthetic import REGIMES, SynthConfig, generate_stack, write_dataset
from .transforms import (
    ChannelComposite,
    ChannelComposited,
    ExtendedMIP,
    ExtendedMIPd,
    HoVerNetTargets,
    HoVerNetTargetsd,
    MaxIntensityProjection,
    MaxIntensityProjectiond,
    NucleiMask3D,
    NucleiMask3Dd,
    PointDistanceMap,
    PointDistanceMapd,
    SliceSets,
    SliceSetsd,
    ThreeRegionLabel,
    ThreeRegionLabeld,
    VoronoiCells,
    VoronoiCellsd,
)

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
    "RULES",
    "PseudoLabelRules",
    "pseudo_label_transforms",
    "prepare_datalist",
    "PointDistanceMap",
    "PointDistanceMapd",
    "NucleiMask3D",
    "NucleiMask3Dd",
    "VoronoiCells",
    "VoronoiCellsd",
    "SliceSets",
    "SliceSetsd",
    "ExtendedMIP",
    "ExtendedMIPd",
    "MaxIntensityProjection",
    "MaxIntensityProjectiond",
    "ChannelComposite",
    "ChannelComposited",
    "ThreeRegionLabel",
    "ThreeRegionLabeld",
    "HoVerNetTargets",
    "HoVerNetTargetsd",
]
