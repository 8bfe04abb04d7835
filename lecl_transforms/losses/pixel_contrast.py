"""Supervised pixel contrast with per-class memory queues (Eq. 1 SCL terms; Wang et al., ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "PixelContrastMemory",
]


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
