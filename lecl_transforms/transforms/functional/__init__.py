"""Functional kernels of the LECL transforms (numpy in, numpy out): Algorithm 1 (EMIP), the 2D weak label, the
HoVer-Net targets, the intensity statistics (percentile normalisation, brightness at the clicks), and test time
(HoVer-Net post-processing, slices linked into 3D nuclei)."""

from .emip import *  # noqa: F401,F403
from .emip import __all__ as _emip_all
from .hovernet_post import SliceDetections, hovernet_postprocess, instance_contours
from .hovernet_targets import hover_maps
from .link_slices import Nuclei3D, check_link_parameters, link_slices
from .intensity import (
    far_from_clicks,
    local_mean_at,
    local_median_at,
    normalize_percentiles,
    percentile_range,
    correlation_length,
    sample_slices,
    significant_foreground,
    slice_ranks,
    structure_fraction,
)
from .weak_label import (labelled_dilation, refine_per_cell, remove_small_components, three_region_label,
                         voronoi_border_band)

__all__ = [*_emip_all, "hover_maps", "labelled_dilation", "refine_per_cell", "remove_small_components",
           "three_region_label", "voronoi_border_band", "percentile_range", "normalize_percentiles", "local_mean_at",
           "local_median_at",
           "far_from_clicks", "slice_ranks", "sample_slices", "significant_foreground", "correlation_length",
           "structure_fraction",
           "SliceDetections", "hovernet_postprocess", "instance_contours", "Nuclei3D", "link_slices",
           "check_link_parameters"]
