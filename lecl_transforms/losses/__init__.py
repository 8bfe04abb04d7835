"""LECL losses: HoVer-Net branch losses on weak labels, supervised pixel contrast with memory, and their sum.

Targets (``HoVerNetTargets``): ``np`` ``(B, 1, H, W)`` 0/1, ``hv`` ``(B, 2, H, W)``, ``nc`` ``(B, 1, H, W)``
0 background / 1 negative / 2 positive, ``ignore`` ``(B, 1, H, W)`` 1 where the weak label is unlabelled.
"""

from .branch import entropy_on, hv_mse, hv_msge, masked_cross_entropy, masked_dice
from .lecl_loss import CONTRAST_TERMS, DEFAULT_WEIGHTS, TERMS, LECLLoss
from .pixel_contrast import PixelContrastMemory

__all__ = ["TERMS", "CONTRAST_TERMS", "DEFAULT_WEIGHTS", "masked_cross_entropy", "masked_dice", "entropy_on", "hv_mse",
           "hv_msge",
           "PixelContrastMemory", "LECLLoss"]
