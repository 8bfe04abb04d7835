"""HoVer-Net branch losses on weak labels (Eq. 1 CE, Dice and entropy terms; HV MSE and MSGE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from monai.networks.utils import one_hot
from monai.transforms import SobelGradients

__all__ = [
    "masked_cross_entropy",
    "masked_dice",
    "entropy_on",
    "hv_mse",
    "hv_msge",
]


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor,
                         class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over labelled pixels only: ignore pixels give neither loss nor gradient (Eq. 1 CE term).

    Equals ``F.cross_entropy(weight=class_weights, ignore_index=...)`` (the class-weighted mean), and 0 when no pixel
    is labelled; computed as a ratio of sums, so no host synchronisation decides the case."""
    labelled = ignore[:, 0] <= 0
    labels = target[:, 0].long().masked_fill(~labelled, 0)
    per_pixel = F.cross_entropy(logits.float(), labels, weight=class_weights, reduction="none")
    weight = labelled.float() if class_weights is None else class_weights.to(per_pixel)[labels] * labelled
    return (per_pixel * labelled).sum() / weight.sum().clamp_min(1e-12)


_DICE = MaskedDiceLoss(to_onehot_y=False, softmax=False, smooth_nr=1e-3, smooth_dr=1e-3, batch=True)


def masked_dice(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Soft Dice over labelled pixels only (Eq. 1 Dice term): equals MONAI's ``DiceLoss(softmax=True,
    to_onehot_y=True, batch=True)`` on the labelled pixels alone.

    The order matters: one-hot the target and softmax the logits first, then mask both. Masking the class-index
    target first (``MaskedDiceLoss(to_onehot_y=True)``) turns ignored pixels into class-0 targets whose predictions
    were zeroed, so even a perfect prediction scored a loss.
    """
    probs = torch.softmax(logits.float(), dim=1)
    onehot = one_hot(target.long(), num_classes=logits.shape[1], dim=1)
    return _DICE(probs, onehot, (labelled > 0).to(probs.dtype))


def entropy_on(logits: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax over ``region`` pixels (entropy minimisation on the unlabelled region)."""
    mask = (region[:, 0] > 0).float()
    log_p = F.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return (entropy * mask).sum() / mask.sum().clamp_min(1.0)  # 0 without region pixels, no host sync


def hv_mse(pred: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """MSE of the horizontal/vertical maps over labelled pixels (nuclei and background; not the ignore region)."""
    weight = labelled.expand_as(pred).float()
    return ((pred.float() - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


_SOBEL_H = SobelGradients(kernel_size=5, spatial_axes=1)


_SOBEL_V = SobelGradients(kernel_size=5, spatial_axes=0)


def hv_msge(pred: torch.Tensor, target: torch.Tensor, nuclei: torch.Tensor) -> torch.Tensor:
    """MSE of the HV maps' Sobel gradients (d/dx of the horizontal map, d/dy of the vertical map) over nucleus
    pixels, as HoVer-Net (and MONAI's ``HoVerNetLoss``) do."""

    def gradients(hv: torch.Tensor) -> torch.Tensor:
        return torch.stack([_SOBEL_H(hv[:, 0]), _SOBEL_V(hv[:, 1])], dim=1)

    focus = nuclei.expand(-1, 2, -1, -1).float()
    diff = gradients(pred.float()) - gradients(target.float())
    return (diff**2 * focus).sum() / (focus.sum() + 1e-8)
