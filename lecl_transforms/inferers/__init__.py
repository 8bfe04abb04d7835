"""Inferers: per-slice HoVer-Net over a 3D stack."""

from .slice_inferer import SliceHoVerNetInferer, StackOutputs, autocast_dtype, positive_scores

__all__ = ["SliceHoVerNetInferer", "StackOutputs", "autocast_dtype", "positive_scores"]
