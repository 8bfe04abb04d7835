"""Supervised pixel contrast with per-class memory queues (Eq. 1 SCL terms; Wang et al., ICCV 2021).

Everything a training step runs (:meth:`PixelContrastMemory.forward`, ``enqueue``, ``sample_anchor_slots``,
``contrast``) is batched tensor work with static shapes: no Python loop over images x classes and no host
synchronisation (no ``.item()``, ``int(tensor)``, boolean-mask indexing or ``nonzero``), so a CUDA step never waits
for the device. Data-dependent counts (anchors per image and class, entries per queue) stay tensors and act through
validity masks over fixed-size slots.
"""

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

    Anchors: per image and class present in it, ``max(1, min(max_samples // n_present_pairs, max_views))`` pixels
    (``n_present_pairs`` counts (image, class) pairs over the batch), half of them hard (predicted as another class)
    and half easy, filled from the other kind when one runs out. Queues are ring buffers whose pointer advances by
    the number of entries written (wrapping at ``memory_size``). They are buffers: they travel with ``state_dict``
    (resume).
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

    @property
    def views_per_group(self) -> int:
        """Anchor slots per (image, class): the largest ``n_view`` the rule can give (one present pair)."""
        return max(1, min(self.max_samples, self.max_views))

    def _nucleus_classes(self, device: torch.device) -> torch.Tensor:
        """The enqueued / anchored classes ``1 .. num_classes - 1`` (background 0 never is), shape ``(K,)``."""
        return torch.arange(1, self.num_classes, device=device)

    # -- memory --------------------------------------------------------------------------------------------------
    def _write(self, queue: torch.Tensor, ptr: torch.Tensor, count: torch.Tensor, items: torch.Tensor,
               valid: torch.Tensor) -> None:
        """Append the valid ``items`` of each nucleus class to its ring buffer, in order.

        ``items`` ``(K, T, D)`` and ``valid`` ``(K, T)`` are indexed by nucleus class ``k`` (queue row ``k + 1``)
        and write order ``t``. Equal to writing the valid items one by one: the pointer advances by their number
        and only the last ``memory_size`` of them survive. Writes exactly ``min(T, memory_size)`` consecutive slots
        per class (distinct positions, so no write races): slots that no new item reaches are rewritten with their
        own content.
        """
        n_classes, n_items, dim = items.shape
        size = self.memory_size
        written = valid.sum(1)  # (K,)
        # valid items first, in write order (stable), so "the j-th valid item" is order[:, j]
        order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)
        n_slots = min(n_items, size)
        # slot j receives valid item number written - n_slots + j (negative: nothing new lands there)
        item_rank = written[:, None] - n_slots + torch.arange(n_slots, device=items.device)  # (K, n_slots)
        source = order.gather(1, item_rank.clamp_min(0))
        new = items.gather(1, source[..., None].expand(n_classes, n_slots, dim)).to(queue.dtype)
        rows = self._nucleus_classes(items.device)[:, None].expand(n_classes, n_slots)
        positions = (ptr[1:, None] + item_rank) % size  # remainder is non-negative for a positive divisor
        queue[rows, positions] = torch.where((item_rank >= 0)[..., None], new, queue[rows, positions])
        ptr[1:] = (ptr[1:] + written) % size
        count[1:] = torch.clamp(count[1:] + written, max=size)

    @torch.no_grad()
    def enqueue(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        """Add each image's class means (segment queue) and ``pixels_per_class`` random pixels per class (pixel
        queue), images in batch order. ``embedding`` ``(B, D, H, W)``, ``labels`` ``(B, H, W)`` with -1 for pixels
        to leave out."""
        batch, dim = embedding.shape[:2]
        emb = embedding.detach().flatten(2)  # (B, D, N)
        flat = labels.flatten(1)
        n_pixels = flat.shape[1]
        classes = self._nucleus_classes(emb.device)
        n_classes = classes.numel()
        in_class = flat[:, None, :] == classes[None, :, None]  # (B, K, N)
        class_size = in_class.sum(-1)  # (B, K)
        present = class_size > 0

        # segment queue: class means as one batched matmul with mean weights (1 / class size), in float32
        weights = in_class.float() / class_size.clamp_min(1)[..., None]
        means = F.normalize(torch.matmul(weights, emb.float().transpose(1, 2)), dim=-1)  # (B, K, D)
        self._write(self.segment_queue, self.segment_ptr, self.segment_count, means.transpose(0, 1),
                    present.transpose(0, 1))

        # pixel queue: a uniform random subset of each (image, class): the top keys of uniform draws restricted to
        # the class (other pixels get -1, below every draw). Capped at memory_size, as writing more is pointless.
        n_pick = min(self.pixels_per_class, self.memory_size, n_pixels)
        if n_pick <= 0:
            return
        keys = torch.where(in_class, torch.rand(batch, 1, n_pixels, device=emb.device), -1.0)
        top_keys, picks = keys.topk(n_pick, dim=-1)  # (B, K, n_pick)
        feats = emb.gather(2, picks.reshape(batch, 1, n_classes * n_pick).expand(batch, dim, n_classes * n_pick))
        feats = feats.reshape(batch, dim, n_classes, n_pick).permute(2, 0, 3, 1)  # (K, B, n_pick, D)
        self._write(self.pixel_queue, self.pixel_ptr, self.pixel_count,
                    feats.reshape(n_classes, batch * n_pick, dim),
                    (top_keys >= 0).transpose(0, 1).reshape(n_classes, batch * n_pick))

    def _memory(self, queue: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole nucleus-class queue ``(K * memory_size, D)``, its classes ``(K * memory_size,)`` and a validity
        mask (entry index < that class's count), so that no Python int decides the shape. The entries are a copy:
        the loss keeps them for its backward pass while ``enqueue`` overwrites the queue in place."""
        classes = self._nucleus_classes(queue.device)
        entries = torch.arange(self.memory_size, device=queue.device)
        valid = entries[None, :] < count[1:, None]  # (K, M)
        memory_labels = classes[:, None].expand(classes.numel(), self.memory_size).reshape(-1)
        return queue[1:].reshape(-1, queue.shape[-1]).clone(), memory_labels, valid.reshape(-1)

    # -- anchors -------------------------------------------------------------------------------------------------
    def sample_anchor_slots(self, embedding: torch.Tensor, labels: torch.Tensor,
                            predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Anchors in fixed slots: ``views_per_group`` per (image, class), hard ones first, then easy ones.

        ``embedding`` ``(B, D, H, W)``, ``labels`` ``(B, H, W)`` (-1 unlabelled), ``predicted`` ``(B, H, W)``.
        Returns anchor embeddings ``(B * (C-1) * V, D)`` (slot order: image, class, view), their classes and a
        boolean mask of the slots that hold an anchor (the rest hold an arbitrary pixel and must be ignored).
        """
        batch, dim = embedding.shape[:2]
        emb = embedding.flatten(2)  # (B, D, N)
        flat, pred = labels.flatten(1), predicted.flatten(1)
        n_pixels = flat.shape[1]
        classes = self._nucleus_classes(emb.device)
        n_classes, n_slots = classes.numel(), self.views_per_group
        in_class = flat[:, None, :] == classes[None, :, None]  # (B, K, N)
        predicted_as = pred[:, None, :] == classes[None, :, None]
        kinds = torch.stack([in_class & ~predicted_as, in_class & predicted_as], dim=2)  # (B, K, 2 = hard/easy, N)
        available = kinds.sum(-1)  # (B, K, 2)
        n_present = (available.sum(-1) > 0).sum()
        n_view = (self.max_samples // n_present.clamp_min(1)).clamp(max=self.max_views).clamp_min(1)
        n_hard_available, n_easy_available = available.unbind(-1)  # (B, K) each
        n_hard = torch.minimum(n_hard_available, n_view // 2)
        n_easy = torch.minimum(n_easy_available, n_view - n_hard)
        n_hard = torch.minimum(n_hard_available, n_view - n_easy)  # fill from the hard side when easy ones run out

        # a uniform random subset of each kind: top keys of one uniform draw per pixel (a pixel is in one group)
        n_top = min(n_slots, n_pixels)
        keys = torch.where(kinds, torch.rand(batch, 1, 1, n_pixels, device=emb.device), -1.0)
        picks = keys.topk(n_top, dim=-1).indices  # (B, K, 2, n_top); n_hard, n_easy <= n_top
        if n_top < n_slots:
            picks = F.pad(picks, (0, n_slots - n_top))
        hard_picks, easy_picks = picks.unbind(2)  # (B, K, V)
        slot = torch.arange(n_slots, device=emb.device)
        from_hard = slot < n_hard[..., None]
        easy_rank = (slot - n_hard[..., None]).clamp(0, n_slots - 1)
        pixel = torch.where(from_hard, hard_picks, easy_picks.gather(-1, easy_rank))  # (B, K, V)
        valid = slot < (n_hard + n_easy)[..., None]

        total_slots = n_classes * n_slots
        anchors = emb.gather(2, pixel.reshape(batch, 1, total_slots).expand(batch, dim, total_slots))
        anchors = anchors.transpose(1, 2).reshape(batch * total_slots, dim)
        anchor_labels = classes[None, :, None].expand(batch, n_classes, n_slots).reshape(-1)
        return anchors, anchor_labels, valid.reshape(-1)

    def sample_anchors(self, embedding: torch.Tensor, labels: torch.Tensor,
                       predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor embeddings ``(A, D)`` and their classes ``(A,)``: half hard, half easy per image and class.

        The compacted form of :meth:`sample_anchor_slots`; its data-dependent size ``A`` costs one host
        synchronisation on CUDA, so :meth:`forward` uses the slots instead.
        """
        anchors, anchor_labels, valid = self.sample_anchor_slots(embedding, labels, predicted)
        return anchors[valid], anchor_labels[valid]

    def contrast(self, anchors: torch.Tensor, anchor_labels: torch.Tensor, memory: torch.Tensor,
                 memory_labels: torch.Tensor, anchor_valid: torch.Tensor | None = None,
                 memory_valid: torch.Tensor | None = None) -> torch.Tensor:
        """The supervised contrastive loss of anchors ``(A, D)`` / ``(A,)`` against a memory ``(M, D)`` / ``(M,)``
        (see the class docstring), averaged over the valid anchors that have both a positive and a negative.

        ``anchor_valid`` ``(A,)`` and ``memory_valid`` ``(M,)`` (default: all valid) leave rows / entries out by
        weighting, so shapes never depend on the data; the result equals the loss on the valid subsets.
        """
        if anchors.numel() == 0 or memory.numel() == 0:
            return anchors.sum() * 0.0
        if anchor_valid is None:
            anchor_valid = torch.ones_like(anchor_labels, dtype=torch.bool)
        if memory_valid is None:
            memory_valid = torch.ones_like(memory_labels, dtype=torch.bool)
        logits = anchors.float() @ memory.float().T / self.temperature  # (A, M)
        same = anchor_labels[:, None] == memory_labels[None, :]
        positive = same & memory_valid[None, :]
        negative = ~same & memory_valid[None, :]
        usable = anchor_valid & positive.any(1) & negative.any(1)  # (A,)
        used = usable[:, None] & memory_valid[None, :]
        # row max over the used entries only (stability shift); unused rows / entries become 0 so that every value,
        # and every gradient, stays finite: they are then weighted out
        row_max = logits.masked_fill(~used, float("-inf")).amax(1, keepdim=True)
        row_max = torch.where(usable[:, None], row_max, torch.zeros_like(row_max)).detach()
        logits = (logits - row_max).masked_fill(~used, 0.0)
        exp = logits.exp()
        negatives = (exp * negative).sum(1, keepdim=True)
        log_prob = logits - torch.log(exp + negatives)
        positive = positive & usable[:, None]
        mean_pos = (log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)
        return -(self.temperature / self.base_temperature) * mean_pos.sum() / usable.sum().clamp_min(1)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
                enqueue: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-to-pixel and pixel-to-region losses of this batch against the memory, then enqueue the batch.

        ``embedding`` ``(B, D, H, W)``; ``labels`` ``(B, H, W)`` class per pixel, -1 where unlabelled;
        ``predicted`` ``(B, H, W)`` argmax class. Returns two scalar losses.
        """
        if embedding.shape[1] != self.pixel_queue.shape[-1]:
            raise ValueError(f"the embedding has {embedding.shape[1]} channels but the contrast memory holds "
                             f"{self.pixel_queue.shape[-1]}: give the loss the network's proj_dim")
        anchors, anchor_labels, anchor_valid = self.sample_anchor_slots(embedding, labels, predicted)
        losses = []
        for queue, count in ((self.pixel_queue, self.pixel_count), (self.segment_queue, self.segment_count)):
            memory, memory_labels, memory_valid = self._memory(queue, count)
            losses.append(self.contrast(anchors, anchor_labels, memory, memory_labels, anchor_valid, memory_valid))
        pixel_loss, region_loss = losses
        if enqueue:
            self.enqueue(embedding, labels)
        return pixel_loss, region_loss
