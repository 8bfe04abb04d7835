"""Inferers: per-slice HoVer-Net over a 3D stack."""

from .slice_inferer import SliceHoVerNetInferer, autocast_dtype, positive_scores

__all__ = ["SliceHoVerNetInferer", "autocast_dtype", "positive_scores"]
