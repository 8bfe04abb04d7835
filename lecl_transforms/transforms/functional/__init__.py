"""Functional kernels of the LECL transforms (numpy in, numpy out): Algorithm 1 (EMIP), the 2D weak label and the
HoVer-Net targets."""

from .emip import *  # noqa: F401,F403
from .emip import __all__ as _emip_all
from .hovernet_targets import hover_maps
from .weak_label import labelled_dilation, refine_per_cell, remove_small_components, three_region_label

__all__ = [*_emip_all, "hover_maps", "labelled_dilation", "refine_per_cell", "remove_small_components",
           "three_region_label"]
