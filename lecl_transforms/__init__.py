"""LECL transforms: MONAI transforms and tools for nuclei detection and marker classification in 3D IF stacks
trained from point annotations (pseudo-labels, EMIP, HoVer-Net targets, synthetic data).

Subpackages follow MONAI's own lines, in layers that import only downwards (``ARCHITECTURE.md``): ``errors`` and
``utils`` (the bottom layer); ``data``, ``transforms`` (array + dictionary twins; kernels in
``transforms.functional``) and ``visualize``; ``networks`` and ``losses``; ``inferers``, ``engines``, ``metrics`` and
``handlers``; ``apps`` and ``tools`` (the ``lecl`` command line) on top.

The names below are importable from the package root (``lecl_transforms.IFStackReader``, as the bundle configs write
them). They are loaded on first use, so ``lecl --help`` does not pay for importing MONAI and torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

#: public name -> the subpackage that defines it
_EXPORTS = {
    "LECLInputError": "errors",
    **dict.fromkeys(("IFStackReader", "read_stack", "LoadPoints", "LoadPointsd", "read_points", "load_datalist",
                     "NEGATIVE", "POSITIVE", "SynthConfig", "REGIMES", "generate_stack", "write_dataset"), "data"),
    **dict.fromkeys(("RULES", "PseudoLabelRules", "pseudo_label_transforms", "NucleiMarkerChannels",
                     "NucleiMarkerChannelsd", "PointDistanceMap", "PointDistanceMapd", "NucleiMask3D", "NucleiMask3Dd",
                     "VoronoiCells", "VoronoiCellsd", "SliceSets", "SliceSetsd", "ExtendedMIP", "ExtendedMIPd",
                     "MaxIntensityProjection", "MaxIntensityProjectiond", "ChannelComposite", "ChannelComposited",
                     "ThreeRegionLabel", "ThreeRegionLabeld", "HoVerNetTargets", "HoVerNetTargetsd", "SliceViews",
                     "SliceViewsd", "RandSliceViewd"), "transforms"),
}

__all__ = sorted(_EXPORTS)
#: subpackages reachable as attributes once the root is imported (``$import lecl_transforms`` in a config is enough)
_SUBPACKAGES = ("errors", "utils", "data", "transforms", "visualize", "networks", "losses", "inferers", "engines",
                "metrics", "handlers", "apps", "tools")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
