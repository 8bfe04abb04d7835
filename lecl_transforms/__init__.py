"""LECL transforms: MONAI transforms and tools for nuclei detection and marker classification in 3D IF stacks
trained from point annotations (pseudo-labels, EMIP, HoVer-Net targets, synthetic data).

Subpackages follow MONAI's own lines: ``data`` (reader, points, datalists, synthetic generator), ``transforms``
(array + dictionary twins; kernels in ``transforms.functional``), ``networks``, ``losses``, ``inferers``, ``engines``,
``metrics``
and ``tools`` (the ``lecl`` command line and ``lecl prepare``).
"""

from .data import (
    NEGATIVE,
    POSITIVE,
    REGIMES,
    IFStackReader,
    LoadPoints,
    LoadPointsd,
    SynthConfig,
    generate_stack,
    load_datalist,
    read_points,
    read_stack,
    write_dataset,
)
from .errors import LECLInputError
from .tools.prepare import prepare_datalist
from .transforms import (
    RULES,
    ChannelComposite,
    ChannelComposited,
    ExtendedMIP,
    ExtendedMIPd,
    HoVerNetTargets,
    HoVerNetTargetsd,
    MaxIntensityProjection,
    MaxIntensityProjectiond,
    NucleiMarkerChannels,
    NucleiMarkerChannelsd,
    NucleiMask3D,
    NucleiMask3Dd,
    PointDistanceMap,
    PointDistanceMapd,
    PseudoLabelRules,
    SliceSets,
    SliceSetsd,
    ThreeRegionLabel,
    ThreeRegionLabeld,
    VoronoiCells,
    VoronoiCellsd,
    pseudo_label_transforms,
)

__version__ = "0.2.0"

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
