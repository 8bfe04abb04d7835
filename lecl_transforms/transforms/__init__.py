"""MONAI transforms of LECL: each an array transform and its dictionary twin; kernels in ``functional``."""

from .channels import ChannelComposite, ChannelComposited, NucleiMarkerChannels, NucleiMarkerChannelsd
from .checks import (
    ChannelOrderCheck,
    ClickPlacementCheck,
    ClickPlacementCheckd,
    SliceSetCheck,
    SliceSetCheckd,
    check_channel_indices,
    check_distinct_channels,
)
from .compose import pseudo_label_transforms
from .emip import (
    ExtendedMIP,
    ExtendedMIPd,
    MaxIntensityProjection,
    MaxIntensityProjectiond,
    NucleiMask3D,
    NucleiMask3Dd,
    PointDistanceMap,
    PointDistanceMapd,
    SliceSets,
    SliceSetsd,
    VoronoiCells,
    VoronoiCellsd,
)
from .hovernet_post import HoVerNetPostProcess, HoVerNetPostProcessd
from .io import SavePredictions, SavePredictionsd
from .link_slices import LinkSlices, LinkSlicesd
from .rules import RULES, PseudoLabelRules, resolve_rules
from .slice_views import RandSliceViewd, SliceViews, SliceViewsd
from .targets import HoVerNetTargets, HoVerNetTargetsd, ThreeRegionLabel, ThreeRegionLabeld
from .utils import IGNORE

__all__ = [
    "NucleiMarkerChannels", "NucleiMarkerChannelsd", "ChannelComposite", "ChannelComposited",
    "PointDistanceMap", "PointDistanceMapd", "NucleiMask3D", "NucleiMask3Dd", "VoronoiCells", "VoronoiCellsd",
    "SliceSets", "SliceSetsd", "ExtendedMIP", "ExtendedMIPd", "MaxIntensityProjection", "MaxIntensityProjectiond",
    "ThreeRegionLabel", "ThreeRegionLabeld", "HoVerNetTargets", "HoVerNetTargetsd", "pseudo_label_transforms",
    "SliceViews", "SliceViewsd", "RandSliceViewd",
    "PseudoLabelRules", "RULES", "resolve_rules", "IGNORE", "ClickPlacementCheck", "ClickPlacementCheckd",
    "ChannelOrderCheck", "SliceSetCheck", "SliceSetCheckd", "check_channel_indices", "check_distinct_channels",
    "HoVerNetPostProcess", "HoVerNetPostProcessd", "LinkSlices", "LinkSlicesd", "SavePredictions", "SavePredictionsd",
]
