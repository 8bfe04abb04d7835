"""The LECL training loss (Eq. 1): every term a named unit with its own weight, logged on its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from monai.utils.enums import HoVerNetBranch

from .branch import entropy_on, hv_mse, hv_msge, masked_cross_entropy, masked_dice
from .pixel_contrast import PixelContrastMemory

__all__ = [
    "TERMS",
    "CONTRAST_TERMS",
    "DEFAULT_WEIGHTS",
    "LECLLoss",
]


#: every loss term, in logging order
TERMS = ("np_ce", "np_dice", "np_entropy", "hv_mse", "hv_msge", "nc_ce", "nc_dice", "nc_entropy", "scl_pixel",
         "scl_region")


#: the supervised contrastive terms, on from ``contrast_start_epoch``
CONTRAST_TERMS = ("scl_pixel", "scl_region")

#: paper / published-code weights (Table 4: CE 1, Dice 1, entropy 0.5; Eq. 1 adds the contrast terms)
DEFAULT_WEIGHTS = {"np_ce": 1.0, "np_dice": 1.0, "np_entropy": 0.5, "hv_mse": 1.0, "hv_msge": 1.0, "nc_ce": 1.0,
                   "nc_dice": 1.0, "nc_entropy": 0.5, "scl_pixel": 1.0, "scl_region": 1.0}


class LECLLoss(nn.Module):
    """The LECL training loss: NP (CE + Dice + entropy), HV (MSE + MSGE), NC (CE + Dice + entropy + pixel contrast).

    ``forward(pred, target)`` returns the weighted sum; ``last_terms`` holds every active term's value, the sum
    (``total``) and the weighted sum of the HoVer-Net terms alone (``hovernet``: the NP, HV and NC terms, active from
    the first epoch). The contrast terms (:data:`CONTRAST_TERMS`) start at ``contrast_start_epoch`` (call
    :meth:`set_epoch`; epochs count from 1), before that the memory
    is filled but not contrasted against.

    Args:
        weights: term -> weight; missing terms take :data:`DEFAULT_WEIGHTS`, 0 switches a term off.
        nc_class_weights: CE class weights of the NC branch (published code: 0.0005, 0.4995, 0.5).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, num_classes: int = 3,
                 nc_class_weights: Sequence[float] | None = (0.0005, 0.4995, 0.5), contrast_start_epoch: int = 30,
                 proj_dim: int = 256, memory_size: int = 5000, pixels_per_class: int = 10, max_samples: int = 1024,
                 max_views: int = 2, temperature: float = 0.07, base_temperature: float = 0.07):
        super().__init__()
        unknown = sorted(set(weights or {}) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} in loss weights: use {list(TERMS)}")
        self.weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in (weights or {}).items()}}
        if nc_class_weights is not None and len(nc_class_weights) != num_classes:
            raise ValueError(f"nc_class_weights has {len(nc_class_weights)} values for {num_classes} classes")
        self.register_buffer("nc_class_weights", None if nc_class_weights is None else
                             torch.tensor(list(nc_class_weights), dtype=torch.float32))
        self.contrast_start_epoch = contrast_start_epoch
        self.epoch = 1
        self.memory = PixelContrastMemory(num_classes, proj_dim, memory_size, pixels_per_class, max_samples,
                                          max_views, temperature, base_temperature)
        self.last_terms: dict[str, torch.Tensor] = {}

    def active_terms(self) -> list[str]:
        return [t for t in TERMS if self.weights.get(t, 0) != 0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def contrast_on(self) -> bool:
        return self.epoch >= self.contrast_start_epoch

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ignore = target["ignore"]
        labelled = 1.0 - ignore
        nuclei = target["np"] * labelled
        np_logits, nc_logits = pred[HoVerNetBranch.NP.value], pred[HoVerNetBranch.NC.value]
        hv = pred.get(HoVerNetBranch.HV.value)
        terms: dict[str, torch.Tensor] = {}
        w = self.weights
        if w["np_ce"]:
            terms["np_ce"] = masked_cross_entropy(np_logits, target["np"], ignore)
        if w["np_dice"]:
            terms["np_dice"] = masked_dice(np_logits, target["np"], labelled)
        if w["np_entropy"]:
            terms["np_entropy"] = entropy_on(np_logits, ignore)
        if w["hv_mse"]:
            terms["hv_mse"] = hv_mse(hv, target["hv"], labelled)
        if w["hv_msge"]:
            terms["hv_msge"] = hv_msge(hv, target["hv"], nuclei)
        if w["nc_ce"]:
            terms["nc_ce"] = masked_cross_entropy(nc_logits, target["nc"], ignore, self.nc_class_weights)
        if w["nc_dice"]:
            terms["nc_dice"] = masked_dice(nc_logits, target["nc"], labelled)
        if w["nc_entropy"]:
            terms["nc_entropy"] = entropy_on(nc_logits, ignore)
        if (w["scl_pixel"] or w["scl_region"]) and "embedding" in pred:
            labels = target["nc"][:, 0].long().masked_fill(ignore[:, 0] > 0, -1)
            if self.contrast_on():
                pixel, region = self.memory(pred["embedding"], labels, nc_logits.argmax(1))
                if w["scl_pixel"]:
                    terms["scl_pixel"] = pixel
                if w["scl_region"]:
                    terms["scl_region"] = region
            else:
                self.memory.enqueue(pred["embedding"], labels)  # warm-up: fill the memory only
        total = sum(w[k] * v for k, v in terms.items())
        if "embedding" in pred and "scl_pixel" not in terms and "scl_region" not in terms:
            # the head is idle (warm-up, or contrast off): a zero term keeps DDP from stalling on unused parameters
            total = total + 0.0 * pred["embedding"].sum()
        # detached tensors, read at the logging interval / epoch end: a float() here would sync with the GPU every step
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        self.last_terms["total"] = total.detach() if isinstance(total, torch.Tensor) else torch.as_tensor(total)
        # the HoVer-Net terms alone, active from epoch 1: comparable over the whole run, unlike "total", which the
        # contrast terms join at contrast_start_epoch
        hovernet = sum(w[k] * v.detach() for k, v in terms.items() if k not in CONTRAST_TERMS)
        self.last_terms["hovernet"] = hovernet if isinstance(hovernet, torch.Tensor) else torch.as_tensor(hovernet)
        return total
