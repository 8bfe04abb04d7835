"""LECL losses: HoVer-Net branch losses on weak labels, supervised pixel contrast with memory, and their sum.

Every term is a named unit with its own weight; a weight of 0 (or leaving the term out) switches it off, and
``LECLLoss.last_terms`` holds each term's last value so the trainer can log them separately.

Targets (``HoVerNetTargets``): ``np`` ``(B, 1, H, W)`` 0/1, ``hv`` ``(B, 2, H, W)``, ``nc`` ``(B, 1, H, W)``
0 background / 1 negative / 2 positive, ``ignore`` ``(B, 1, H, W)`` 1 where the weak label is unlabelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from monai.transforms import SobelGradients

__all__ = [
    "TERMS",
    "DEFAULT_WEIGHTS",
    "masked_cross_entropy",
    "entropy_on",
    "hv_mse",
    "hv_msge",
    "PixelContrastMemory",
    "LECLLoss",
]

#: every loss term, in logging order
TERMS = ("np_ce", "np_dice", "np_entropy", "hv_mse", "hv_msge", "nc_ce", "nc_dice", "nc_entropy", "scl_pixel",
         "scl_region")
#: paper / published-code weights (Table 4: CE 1, Dice 1, entropy 0.5; Eq. 1 adds the contrast terms)
DEFAULT_WEIGHTS = {"np_ce": 1.0, "np_dice": 1.0, "np_entropy": 0.5, "hv_mse": 1.0, "hv_msge": 1.0, "nc_ce": 1.0,
                   "nc_dice": 1.0, "nc_entropy": 0.5, "scl_pixel": 1.0, "scl_region": 1.0}
IGNORE_INDEX = -100


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor,
                         class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over labelled pixels only: ignore pixels give neither loss nor gradient (Eq. 1 CE term)."""
    labels = target[:, 0].long().masked_fill(ignore[:, 0] > 0, IGNORE_INDEX)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, weight=class_weights, ignore_index=IGNORE_INDEX)


def entropy_on(logits: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax over ``region`` pixels (entropy minimisation on the unlabelled region)."""
    mask = region[:, 0] > 0
    if not mask.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return entropy[mask].mean()


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


class PixelContrastMemory(nn.Module):
    """Supervised pixel contrast against per-class memory queues (Wang et al., ICCV 2021), as LECL uses it.

    Two queues per nucleus class (background is never enqueued): a **pixel** queue (random pixel embeddings) and a
    **segment** queue (the class-mean embedding of each image). For an anchor ``i`` of class ``c`` with positives
    ``P`` (queue entries of class ``c``) and negatives ``N`` (entries of the other classes)::

        L_i = -(tau / tau_base) * mean_{p in P} log( exp(i.p / tau) / (exp(i.p / tau) + sum_{n in N} exp(i.n / tau)) )

    Anchors: per image and class, up to ``min(max_samples // n_image_classes, max_views)`` pixels, half of them hard
    (predicted as another class) and half easy. Queues are ring buffers whose pointer advances by the number of
    entries written (wrapping at ``memory_size``). They are buffers: they travel with ``state_dict`` (resume).
    """

    def __init__(self, num_classes: int = 3, dim: int = 256, memory_size: int = 5000, pixels_per_class: int = 10,
                 max_samples: int = 1024, max_views: int = 2, temperature: float = 0.07,
                 base_temperature: float = 0.07):
        super().__init__()
        self.num_classes, self.memory_size, self.pixels_per_class = num_classes, memory_size, pixels_per_class
        self.max_samples, self.max_views = max_samples, max_views
        self.temperature, self.base_temperature = temperature, base_temperature
        self.register_buffer("pixel_queue", torch.zeros(num_classes, memory_size, dim))
        self.register_buffer("segment_queue", torch.zeros(num_classes, memory_size, dim))
        self.register_buffer("pixel_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("segment_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("pixel_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("segment_count", torch.zeros(num_classes, dtype=torch.long))

    # -- memory --------------------------------------------------------------------------------------------------
    def _write(self, queue: torch.Tensor, ptr: torch.Tensor, count: torch.Tensor, cls: int, items: torch.Tensor):
        n = min(items.shape[0], self.memory_size)
        items = items[-n:]
        positions = (ptr[cls] + torch.arange(n, device=items.device)) % self.memory_size
        queue[cls, positions] = items.to(queue.dtype)
        ptr[cls] = (ptr[cls] + n) % self.memory_size
        count[cls] = torch.clamp(count[cls] + n, max=self.memory_size)

    @torch.no_grad()
    def enqueue(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        """Add each image's class means (segment queue) and ``pixels_per_class`` random pixels per class (pixel
        queue). ``embedding`` ``(B, D, H, W)``, ``labels`` ``(B, H, W)`` with -1 for pixels to leave out."""
        emb = embedding.detach().flatten(2).transpose(1, 2)  # (B, HW, D)
        flat = labels.flatten(1)
        for b in range(emb.shape[0]):
            for cls in range(1, self.num_classes):
                idx = (flat[b] == cls).nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                feats = emb[b, idx]
                self._write(self.segment_queue, self.segment_ptr, self.segment_count, cls,
                            F.normalize(feats.mean(0, keepdim=True), dim=1))
                pick = idx[torch.randperm(idx.numel(), device=idx.device)[: self.pixels_per_class]]
                self._write(self.pixel_queue, self.pixel_ptr, self.pixel_count, cls, emb[b, pick])

    def _memory(self, queue: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for cls in range(1, self.num_classes):
            n = int(count[cls])
            if n:
                feats.append(queue[cls, :n])
                labels.append(torch.full((n,), cls, device=queue.device, dtype=torch.long))
        if not feats:
            return queue.new_zeros((0, queue.shape[-1])), torch.zeros(0, dtype=torch.long, device=queue.device)
        return torch.cat(feats), torch.cat(labels)

    # -- anchors -------------------------------------------------------------------------------------------------
    def sample_anchors(self, embedding: torch.Tensor, labels: torch.Tensor,
                       predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor embeddings ``(A, D)`` and their classes ``(A,)``: half hard, half easy per image and class."""
        emb = embedding.flatten(2).transpose(1, 2)
        flat, pred = labels.flatten(1), predicted.flatten(1)
        present = [[c for c in range(1, self.num_classes) if int((flat[b] == c).sum()) > 0]
                   for b in range(emb.shape[0])]
        total = sum(len(p) for p in present)
        if total == 0:
            return emb.new_zeros((0, emb.shape[-1])), torch.zeros(0, dtype=torch.long, device=emb.device)
        n_view = max(1, min(self.max_samples // total, self.max_views))
        anchors, anchor_labels = [], []
        for b, classes in enumerate(present):
            for cls in classes:
                is_cls = flat[b] == cls
                hard = (is_cls & (pred[b] != cls)).nonzero().squeeze(1)
                easy = (is_cls & (pred[b] == cls)).nonzero().squeeze(1)
                n_hard = min(hard.numel(), n_view // 2)
                n_easy = min(easy.numel(), n_view - n_hard)
                n_hard = min(hard.numel(), n_view - n_easy)  # fill from the hard side when easy ones run out
                chosen = torch.cat([hard[torch.randperm(hard.numel(), device=hard.device)[:n_hard]],
                                    easy[torch.randperm(easy.numel(), device=easy.device)[:n_easy]]])
                anchors.append(emb[b, chosen])
                anchor_labels.append(torch.full((chosen.numel(),), cls, device=emb.device, dtype=torch.long))
        return torch.cat(anchors), torch.cat(anchor_labels)

    def contrast(self, anchors: torch.Tensor, anchor_labels: torch.Tensor, memory: torch.Tensor,
                 memory_labels: torch.Tensor) -> torch.Tensor:
        """The supervised contrastive loss of anchors against a memory (see the class docstring)."""
        if anchors.numel() == 0 or memory.numel() == 0:
            return anchors.sum() * 0.0
        logits = anchors.float() @ memory.float().T / self.temperature  # (A, M)
        positive = anchor_labels[:, None] == memory_labels[None, :]
        has_both = positive.any(1) & (~positive).any(1)
        if not has_both.any():
            return anchors.sum() * 0.0
        logits, positive = logits[has_both], positive[has_both]
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        exp = logits.exp()
        negatives = (exp * ~positive).sum(1, keepdim=True)
        log_prob = logits - torch.log(exp + negatives)
        mean_pos = (log_prob * positive).sum(1) / positive.sum(1)
        return -(self.temperature / self.base_temperature) * mean_pos.mean()

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
                enqueue: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-to-pixel and pixel-to-region losses of this batch against the memory, then enqueue the batch.

        ``labels`` ``(B, H, W)`` class per pixel, -1 where unlabelled; ``predicted`` ``(B, H, W)`` argmax class.
        """
        if embedding.shape[1] != self.pixel_queue.shape[-1]:
            raise ValueError(f"the embedding has {embedding.shape[1]} channels but the contrast memory holds "
                             f"{self.pixel_queue.shape[-1]}: give the loss the network's proj_dim")
        anchors, anchor_labels = self.sample_anchors(embedding, labels, predicted)
        pixel_loss = self.contrast(anchors, anchor_labels, *self._memory(self.pixel_queue, self.pixel_count))
        region_loss = self.contrast(anchors, anchor_labels, *self._memory(self.segment_queue, self.segment_count))
        if enqueue:
            self.enqueue(embedding, labels)
        return pixel_loss, region_loss


class LECLLoss(nn.Module):
    """The LECL training loss: NP (CE + Dice + entropy), HV (MSE + MSGE), NC (CE + Dice + entropy + pixel contrast).

    ``forward(pred, target)`` returns the weighted sum; ``last_terms`` holds every active term's value. The contrast
    terms start at ``contrast_start_epoch`` (call :meth:`set_epoch`; epochs count from 1), before that the memory
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
        self.dice = MaskedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=1e-3, smooth_dr=1e-3, batch=True)
        self.memory = PixelContrastMemory(num_classes, proj_dim, memory_size, pixels_per_class, max_samples,
                                          max_views, temperature, base_temperature)
        self.last_terms: dict[str, float] = {}

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
        np_logits, nc_logits = pred["nucleus_prediction"], pred["type_prediction"]
        terms: dict[str, torch.Tensor] = {}
        w = self.weights
        if w["np_ce"]:
            terms["np_ce"] = masked_cross_entropy(np_logits, target["np"], ignore)
        if w["np_dice"]:
            terms["np_dice"] = self.dice(np_logits.float(), target["np"], labelled)
        if w["np_entropy"]:
            terms["np_entropy"] = entropy_on(np_logits, ignore)
        if w["hv_mse"]:
            terms["hv_mse"] = hv_mse(pred["horizontal_vertical"], target["hv"], labelled)
        if w["hv_msge"]:
            terms["hv_msge"] = hv_msge(pred["horizontal_vertical"], target["hv"], nuclei)
        if w["nc_ce"]:
            terms["nc_ce"] = masked_cross_entropy(nc_logits, target["nc"], ignore, self.nc_class_weights)
        if w["nc_dice"]:
            terms["nc_dice"] = self.dice(nc_logits.float(), target["nc"], labelled)
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
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_terms["total"] = float(total.detach()) if isinstance(total, torch.Tensor) else float(total)
        return total
