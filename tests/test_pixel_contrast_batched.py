"""The batched supervised pixel contrast (``PixelContrastMemory``) against the per-image x per-class loop it replaced:
the same loss formula, the anchor-count rule, the hard/easy split and its randomness, the queue writes, and a training
step without host synchronisation."""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lecl_transforms.losses import PixelContrastMemory


class LoopPixelContrast(nn.Module):
    """Reference: the previous implementation (Python loops over images x classes), kept verbatim."""

    def __init__(self, num_classes=3, dim=256, memory_size=5000, pixels_per_class=10, max_samples=1024, max_views=2,
                 temperature=0.07, base_temperature=0.07):
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

    def _write(self, queue, ptr, count, cls, items):
        n = min(items.shape[0], self.memory_size)
        items = items[-n:]
        positions = (ptr[cls] + torch.arange(n, device=items.device)) % self.memory_size
        queue[cls, positions] = items.to(queue.dtype)
        ptr[cls] = (ptr[cls] + n) % self.memory_size
        count[cls] = torch.clamp(count[cls] + n, max=self.memory_size)

    @torch.no_grad()
    def enqueue(self, embedding, labels):
        emb = embedding.detach().flatten(2).transpose(1, 2)
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

    def _memory(self, queue, count):
        feats, labels = [], []
        for cls in range(1, self.num_classes):
            n = int(count[cls])
            if n:
                feats.append(queue[cls, :n])
                labels.append(torch.full((n,), cls, device=queue.device, dtype=torch.long))
        if not feats:
            return queue.new_zeros((0, queue.shape[-1])), torch.zeros(0, dtype=torch.long, device=queue.device)
        return torch.cat(feats), torch.cat(labels)

    def sample_anchors(self, embedding, labels, predicted):
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
                n_hard = min(hard.numel(), n_view - n_easy)
                chosen = torch.cat([hard[torch.randperm(hard.numel(), device=hard.device)[:n_hard]],
                                    easy[torch.randperm(easy.numel(), device=easy.device)[:n_easy]]])
                anchors.append(emb[b, chosen])
                anchor_labels.append(torch.full((chosen.numel(),), cls, device=emb.device, dtype=torch.long))
        return torch.cat(anchors), torch.cat(anchor_labels)

    def contrast(self, anchors, anchor_labels, memory, memory_labels):
        if anchors.numel() == 0 or memory.numel() == 0:
            return anchors.sum() * 0.0
        logits = anchors.float() @ memory.float().T / self.temperature
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

    def forward(self, embedding, labels, predicted, enqueue=True):
        anchors, anchor_labels = self.sample_anchors(embedding, labels, predicted)
        pixel_loss = self.contrast(anchors, anchor_labels, *self._memory(self.pixel_queue, self.pixel_count))
        region_loss = self.contrast(anchors, anchor_labels, *self._memory(self.segment_queue, self.segment_count))
        if enqueue:
            self.enqueue(embedding, labels)
        return pixel_loss, region_loss


def _index_embedding(batch: int, height: int, width: int, dim: int = 2) -> torch.Tensor:
    """``(B, D, H, W)`` whose channel 0 is the image index and channel 1 the flat pixel index (exact in float32)."""
    emb = torch.zeros(batch, dim, height, width)
    emb[:, 0] = torch.arange(batch, dtype=torch.float32)[:, None, None]
    emb[:, 1] = torch.arange(height * width, dtype=torch.float32).reshape(height, width)
    return emb


def _who(vectors: torch.Tensor) -> list[tuple[int, int]]:
    """(image, flat pixel) of rows of an index embedding."""
    return [(int(v[0]), int(v[1])) for v in vectors]


# -- contrast ------------------------------------------------------------------------------------------------------
def _random_contrast_inputs(seed, n_anchors=37, n_memory=50, dim=16, num_classes=4):
    g = torch.Generator().manual_seed(seed)
    anchors = F.normalize(torch.randn(n_anchors, dim, generator=g), dim=1)
    anchor_labels = torch.randint(1, num_classes, (n_anchors,), generator=g)
    memory = F.normalize(torch.randn(n_memory, dim, generator=g), dim=1)
    memory_labels = torch.randint(1, num_classes - 1, (n_memory,), generator=g)  # class 3 anchors: no positive
    return anchors, anchor_labels, memory, memory_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrast_with_all_valid_masks_equals_the_loop_formula(seed):
    new, ref = PixelContrastMemory(num_classes=4, dim=16), LoopPixelContrast(num_classes=4, dim=16)
    anchors, anchor_labels, memory, memory_labels = _random_contrast_inputs(seed)
    assert (anchor_labels == 3).any()  # some anchors have no positive and must be left out
    a_ref, a_new = anchors.clone().requires_grad_(), anchors.clone().requires_grad_()
    expected = ref.contrast(a_ref, anchor_labels, memory, memory_labels)
    got = new.contrast(a_new, anchor_labels, memory, memory_labels, torch.ones(37, dtype=torch.bool),
                       torch.ones(50, dtype=torch.bool))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(new.contrast(anchors, anchor_labels, memory, memory_labels), expected)  # defaults
    expected.backward()
    got.backward()
    torch.testing.assert_close(a_new.grad, a_ref.grad)


@pytest.mark.parametrize("seed", [0, 1])
def test_contrast_masks_equal_the_loss_on_the_valid_subsets(seed):
    new, ref = PixelContrastMemory(num_classes=4, dim=16), LoopPixelContrast(num_classes=4, dim=16)
    anchors, anchor_labels, memory, memory_labels = _random_contrast_inputs(seed)
    g = torch.Generator().manual_seed(100 + seed)
    anchor_valid, memory_valid = torch.rand(37, generator=g) < 0.6, torch.rand(50, generator=g) < 0.5
    memory = memory.clone()
    memory[~memory_valid] = 5.0  # invalid entries hold garbage (large logits) that must not leak in
    a_ref, a_new = anchors.clone().requires_grad_(), anchors.clone().requires_grad_()
    expected = ref.contrast(a_ref[anchor_valid], anchor_labels[anchor_valid], memory[memory_valid],
                            memory_labels[memory_valid])
    got = new.contrast(a_new, anchor_labels, memory, memory_labels, anchor_valid, memory_valid)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(a_new.grad, a_ref.grad)
    assert (a_new.grad[~anchor_valid] == 0).all()


def test_contrast_with_nothing_usable_is_zero_with_finite_gradients():
    memory_module = PixelContrastMemory(num_classes=3, dim=4)
    anchors = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    labels = torch.tensor([1, 1, 1, 2, 2, 2])
    memory = F.normalize(torch.randn(5, 4), dim=1)
    cases = [(torch.zeros(6, dtype=torch.bool), torch.ones(5, dtype=torch.bool)),  # no valid anchor
             (torch.ones(6, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))]  # empty memory
    for anchor_valid, memory_valid in cases:
        loss = memory_module.contrast(anchors, labels, memory, torch.ones(5, dtype=torch.long), anchor_valid,
                                      memory_valid)
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(anchors.grad).all()
        anchors.grad = None
    # one class only in the memory: no anchor has both a positive and a negative
    loss = memory_module.contrast(anchors, labels, memory, torch.ones(5, dtype=torch.long))
    assert loss.item() == 0.0


# -- anchors -------------------------------------------------------------------------------------------------------
def _hand_made_maps():
    """3 images of 4x4 (labels -1 unlabelled, 0 background):

    image 0: class 1 on 5 pixels (1 hard: predicted 0), class 2 on 3 pixels (0 hard);
    image 1: class 1 only, on 2 pixels, both hard (predicted 2); unlabelled pixels predicted 1 (never anchors);
    image 2: no nucleus class (background and unlabelled only).
    """
    labels = torch.zeros(3, 4, 4, dtype=torch.long)
    predicted = torch.zeros(3, 4, 4, dtype=torch.long)
    labels[0].view(-1)[[0, 1, 2, 3, 4]] = 1
    predicted[0].view(-1)[[1, 2, 3, 4]] = 1  # pixel 0 labelled 1 predicted 0: hard
    labels[0].view(-1)[[8, 9, 10]] = 2
    predicted[0].view(-1)[[8, 9, 10]] = 2
    labels[1].view(-1)[[5, 6]] = 1
    predicted[1].view(-1)[[5, 6]] = 2
    labels[1].view(-1)[10:] = -1
    predicted[1].view(-1)[10:] = 1
    labels[2].view(-1)[:8] = -1
    predicted[2].view(-1)[:] = 2
    return labels, predicted


def _rule(n_hard_available, n_easy_available, n_present, max_samples, max_views):
    n_view = max(1, min(max_samples // n_present, max_views))
    n_hard = min(n_hard_available, n_view // 2)
    n_easy = min(n_easy_available, n_view - n_hard)
    return min(n_hard_available, n_view - n_easy), n_easy


@pytest.mark.parametrize("max_samples, max_views, expected", [
    # n_view = 3: (image, class) -> (hard, easy)
    (10, 4, {(0, 1): (1, 2), (0, 2): (0, 3), (1, 1): (2, 0)}),
    # 2 // 3 present pairs = 0 -> n_view = 1
    (2, 4, {(0, 1): (0, 1), (0, 2): (0, 1), (1, 1): (1, 0)}),
    # n_view = 2 (the LECL default)
    (1024, 2, {(0, 1): (1, 1), (0, 2): (0, 2), (1, 1): (2, 0)}),
])
def test_anchor_counts_and_hard_easy_split_follow_the_rule(max_samples, max_views, expected):
    labels, predicted = _hand_made_maps()
    for (b, c), (n_hard, n_easy) in expected.items():  # the hand-made answers are the rule's
        flat_l, flat_p = labels[b].flatten(), predicted[b].flatten()
        hard_avail = int(((flat_l == c) & (flat_p != c)).sum())
        easy_avail = int(((flat_l == c) & (flat_p == c)).sum())
        assert _rule(hard_avail, easy_avail, 3, max_samples, max_views) == (n_hard, n_easy)
    memory = PixelContrastMemory(num_classes=3, dim=2, max_samples=max_samples, max_views=max_views)
    emb = _index_embedding(3, 4, 4)
    for seed in range(5):
        torch.manual_seed(seed)
        anchors, anchor_labels, valid = memory.sample_anchor_slots(emb, labels, predicted)
        views = memory.views_per_group
        assert anchors.shape == (3 * 2 * views, 2) and anchor_labels.shape == valid.shape == (3 * 2 * views,)
        assert anchor_labels.tolist() == [c for _ in range(3) for c in (1, 2) for _ in range(views)]
        got = {}
        slot_image = torch.arange(3).repeat_interleave(2 * views)
        for (b, pixel), c, image in zip(_who(anchors[valid]), anchor_labels[valid].tolist(),
                                        slot_image[valid].tolist()):
            assert b == image and labels[b].flatten()[pixel] == c  # an anchor is a pixel of its image and class
            hard = bool(predicted[b].flatten()[pixel] != c)
            got.setdefault((b, c), []).append((pixel, hard))
        assert {k: (sum(h for _, h in v), sum(not h for _, h in v)) for k, v in got.items()} == expected
        for chosen in got.values():
            assert len({p for p, _ in chosen}) == len(chosen)  # no pixel twice
            hardness = [h for _, h in chosen]
            assert hardness == sorted(hardness, reverse=True)  # slots: hard ones first
        compact, compact_labels = memory.sample_anchors(emb, labels, predicted)
        assert compact.shape[0] == sum(h + e for h, e in expected.values())
        assert set(compact_labels.tolist()) == {1, 2}


def test_anchors_on_an_image_without_nuclei_are_none():
    memory = PixelContrastMemory(num_classes=3, dim=2)
    labels = torch.full((1, 4, 4), -1)
    labels[0, 0] = 0
    anchors, anchor_labels, valid = memory.sample_anchor_slots(_index_embedding(1, 4, 4), labels,
                                                               torch.ones(1, 4, 4, dtype=torch.long))
    assert anchors.shape == (4, 2) and not valid.any()
    assert memory.sample_anchors(_index_embedding(1, 4, 4), labels, labels)[0].shape == (0, 2)


def test_anchor_slots_on_a_frame_smaller_than_the_views():
    memory = PixelContrastMemory(num_classes=3, dim=2, max_views=8)  # 8 slots per group, 4 pixels per image
    labels = torch.tensor([[[1, 1], [2, -1]]])
    predicted = torch.tensor([[[1, 2], [2, 0]]])
    anchors, anchor_labels, valid = memory.sample_anchor_slots(_index_embedding(1, 2, 2), labels, predicted)
    assert anchors.shape == (16, 2) and valid.sum() == 3
    assert sorted(zip(_who(anchors[valid]), anchor_labels[valid].tolist())) == [((0, 0), 1), ((0, 1), 1),
                                                                                ((0, 2), 2)]


def test_anchor_picks_are_uniform_random_subsets_of_each_kind():
    # 3000 copies of one image: class 1 on 10 pixels, 4 hard (0..3) and 6 easy (4..9); n_view = 4 -> 2 + 2
    n = 3000
    labels = torch.zeros(n, 4, 4, dtype=torch.long)
    labels.view(n, -1)[:, :10] = 1
    predicted = labels.clone()
    predicted.view(n, -1)[:, :4] = 2
    memory = PixelContrastMemory(num_classes=3, dim=2, max_samples=10 ** 9, max_views=4)
    torch.manual_seed(0)
    anchors, _, valid = memory.sample_anchor_slots(_index_embedding(n, 4, 4), labels, predicted)
    pixels = anchors[:, 1].reshape(n, 2, 4)[:, 0].long()  # class 1's four slots of each image
    assert valid.reshape(n, 2, 4)[:, 0].all() and not valid.reshape(n, 2, 4)[:, 1].any()
    assert (pixels[:, :2] < 4).all() and (pixels[:, 2:] >= 4).all()  # 2 hard, then 2 easy
    hard_pairs = Counter(tuple(sorted(p)) for p in pixels[:, :2].tolist())
    easy_pairs = Counter(tuple(sorted(p)) for p in pixels[:, 2:].tolist())
    assert set(hard_pairs) == set(itertools.combinations(range(4), 2))
    assert set(easy_pairs) == set(itertools.combinations(range(4, 10), 2))
    # every subset equally likely (binomial sd ~ 0.007 / 0.0046: 5 sd margins)
    assert all(abs(c / n - 1 / 6) < 0.035 for c in hard_pairs.values())
    assert all(abs(c / n - 1 / 15) < 0.023 for c in easy_pairs.values())


# -- enqueue -------------------------------------------------------------------------------------------------------
def test_queues_advance_by_the_number_written_and_wrap():
    memory = PixelContrastMemory(num_classes=3, dim=2, memory_size=7, pixels_per_class=3)
    labels = torch.zeros(2, 5, 5, dtype=torch.long)
    labels[:, :2] = 1  # 10 class-1 pixels in each image
    labels[0, 4, :2] = 2  # 2 class-2 pixels in image 0 only
    labels[1, 4] = -1
    emb = _index_embedding(2, 5, 5)
    memory.enqueue(emb, labels)
    assert memory.pixel_ptr.tolist() == [0, 6, 2] and memory.pixel_count.tolist() == [0, 6, 2]
    assert memory.segment_ptr.tolist() == [0, 2, 1] and memory.segment_count.tolist() == [0, 2, 1]
    # written in batch order: image 0's three class-1 pixels, then image 1's; class 2 gets both (of 2) pixels
    assert [b for b, _ in _who(memory.pixel_queue[1, :6])] == [0, 0, 0, 1, 1, 1]
    assert sorted(_who(memory.pixel_queue[2, :2])) == [(0, 20), (0, 21)]
    memory.enqueue(emb, labels)
    assert memory.pixel_ptr.tolist() == [0, 12 % 7, 4] and memory.pixel_count.tolist() == [0, 7, 4]
    assert memory.segment_ptr.tolist() == [0, 4, 2] and memory.segment_count.tolist() == [0, 4, 2]
    # the second batch went to slots 6, 0, 1 (image 0) and 2, 3, 4 (image 1); slot 5 still holds the first batch's
    assert [b for b, _ in _who(memory.pixel_queue[1])] == [0, 0, 1, 1, 1, 1, 0]
    for b, pixel in _who(memory.pixel_queue[1]):
        assert labels[b].flatten()[pixel] == 1
    for block in (memory.pixel_queue[1, [6, 0, 1]], memory.pixel_queue[1, 2:5]):
        assert len(set(_who(block))) == 3  # distinct pixels of one image
    assert (memory.pixel_queue[0] == 0).all() and (memory.segment_queue[0] == 0).all()  # background: never


def test_one_batch_writing_more_than_the_memory_keeps_the_last_entries():
    memory = PixelContrastMemory(num_classes=2, dim=2, memory_size=4, pixels_per_class=3)
    labels = torch.zeros(2, 3, 3, dtype=torch.long)
    labels[:, 0] = 1  # 3 class-1 pixels per image -> 6 entries for 4 slots
    memory.enqueue(_index_embedding(2, 3, 3), labels)
    assert memory.pixel_ptr.tolist() == [0, 2] and memory.pixel_count.tolist() == [0, 4]
    # entries 0..5 go to slots 0,1,2,3,0,1: slots 0, 1 hold image 1's 2nd / 3rd pick, slot 2 image 0's 3rd
    assert [b for b, _ in _who(memory.pixel_queue[1])] == [1, 1, 0, 1]
    assert sorted(p for b, p in _who(memory.pixel_queue[1]) if b == 1) == [0, 1, 2]
    # segment queue: 6 images of one class into 4 slots -> images 4, 5, 2, 3
    memory = PixelContrastMemory(num_classes=2, dim=2, memory_size=4, pixels_per_class=3)
    torch.manual_seed(0)
    emb = torch.randn(6, 2, 3, 3)
    labels = torch.randint(-1, 2, (6, 3, 3))
    labels[:, 0, 0] = 1
    memory.enqueue(emb, labels)
    for slot, b in enumerate([4, 5, 2, 3]):
        expected = F.normalize(emb[b].flatten(1).T[labels[b].flatten() == 1].mean(0), dim=0)
        torch.testing.assert_close(memory.segment_queue[1, slot], expected)
    assert memory.segment_ptr.tolist() == [0, 2] and memory.segment_count.tolist() == [0, 4]


@pytest.mark.parametrize("memory_size, pixels_per_class", [(50, 4), (7, 3), (3, 5)])
def test_enqueue_matches_the_loop_queues(memory_size, pixels_per_class):
    new = PixelContrastMemory(num_classes=4, dim=6, memory_size=memory_size, pixels_per_class=pixels_per_class)
    ref = LoopPixelContrast(num_classes=4, dim=6, memory_size=memory_size, pixels_per_class=pixels_per_class)
    g = torch.Generator().manual_seed(memory_size)
    for _ in range(4):
        emb = torch.randn(3, 6, 5, 5, generator=g)
        labels = torch.randint(-1, 4, (3, 5, 5), generator=g)
        labels[1][labels[1] == 2] = 0  # image 1 lacks class 2
        new.enqueue(emb, labels)
        ref.enqueue(emb, labels)
        for name in ("pixel_ptr", "pixel_count", "segment_ptr", "segment_count"):
            assert getattr(new, name).tolist() == getattr(ref, name).tolist(), name
        torch.testing.assert_close(new.segment_queue, ref.segment_queue)  # normalised class means, same slots


def test_pixel_queue_picks_are_uniform_random_subsets():
    n = 3000  # images, each with class 1 on pixels 0..5; 2 picked per image -> 15 equally likely pairs
    memory = PixelContrastMemory(num_classes=2, dim=2, memory_size=2 * n, pixels_per_class=2)
    labels = torch.zeros(n, 3, 3, dtype=torch.long)
    labels.view(n, -1)[:, :6] = 1
    torch.manual_seed(0)
    memory.enqueue(_index_embedding(n, 3, 3), labels)
    entries = memory.pixel_queue[1].reshape(n, 2, 2)
    assert (entries[:, :, 0] == torch.arange(n, dtype=torch.float32)[:, None]).all()  # image order
    pairs = Counter(tuple(sorted(p)) for p in entries[:, :, 1].long().tolist())
    assert set(pairs) == set(itertools.combinations(range(6), 2))
    assert all(abs(c / n - 1 / 15) < 0.023 for c in pairs.values())


# -- a whole step --------------------------------------------------------------------------------------------------
def _deterministic_batch(seed):
    """Every class of every image has at most 1 hard + 1 easy, or 2 of one kind, pixels: with ``max_views=2`` all of
    them are anchors, and with ``pixels_per_class >= 2`` all of them are enqueued, whatever the random draws."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((3, 4, 4), -1, dtype=torch.long)
    labels[:, 2:] = 0
    predicted = torch.randint(0, 3, (3, 4, 4), generator=g)
    labels[0].view(-1)[[0, 1]] = 1
    predicted[0].view(-1)[[0, 1]] = torch.tensor([1, 2])  # 1 easy, 1 hard
    labels[0].view(-1)[[2, 3]] = 2
    predicted[0].view(-1)[[2, 3]] = 2  # 2 easy
    labels[1].view(-1)[[5, 7]] = 2
    predicted[1].view(-1)[[5, 7]] = 0  # 2 hard
    labels[2].view(-1)[4] = 1  # a single pixel
    embedding = F.normalize(torch.randn(3, 8, 4, 4, generator=g), dim=1)
    return embedding, labels, predicted


def test_forward_equals_the_loop_when_the_draws_cannot_matter():
    kwargs = dict(num_classes=3, dim=8, memory_size=6, pixels_per_class=3, max_views=2)
    new, ref = PixelContrastMemory(**kwargs), LoopPixelContrast(**kwargs)
    for step in range(4):  # the memory fills, then wraps
        embedding, labels, predicted = _deterministic_batch(step)
        e_new, e_ref = embedding.clone().requires_grad_(), embedding.clone().requires_grad_()
        got, expected = new(e_new, labels, predicted), ref(e_ref, labels, predicted)
        for g_loss, e_loss in zip(got, expected):
            torch.testing.assert_close(g_loss, e_loss)
        assert step == 0 or got[0].detach() > 0
        sum(got).backward()
        sum(expected).backward()
        torch.testing.assert_close(e_new.grad, e_ref.grad)
        for name in ("pixel_ptr", "pixel_count", "segment_ptr", "segment_count"):
            assert getattr(new, name).tolist() == getattr(ref, name).tolist(), name
        torch.testing.assert_close(new.segment_queue, ref.segment_queue)


def test_state_dict_is_unchanged_and_loads_both_ways():
    new, ref = PixelContrastMemory(num_classes=3, dim=8, memory_size=10), LoopPixelContrast(3, 8, 10)
    ref.enqueue(*_deterministic_batch(0)[:2])
    assert {k: v.shape for k, v in new.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    new.load_state_dict(ref.state_dict())
    assert torch.equal(new.pixel_queue, ref.pixel_queue) and new.segment_ptr.tolist() == ref.segment_ptr.tolist()


# -- no host synchronisation ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def host_sync_forbidden():
    """Make every tensor -> Python conversion, ``nonzero`` / ``masked_select`` and boolean-mask indexing raise: each
    of them waits for the device on CUDA (a data-dependent result has to reach the host)."""

    def forbidden(name):
        def raise_(*args, **kwargs):
            raise AssertionError(f"host synchronisation inside the training step: {name}")
        return raise_

    def no_bool_mask(name, original):
        def indexed(self, key, *rest):
            keys = key if isinstance(key, tuple) else (key,)
            if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
                raise AssertionError(f"host synchronisation inside the training step: boolean-mask {name}")
            return original(self, key, *rest)
        return indexed

    patches = {(torch.Tensor, n): forbidden(f"Tensor.{n}") for n in
               ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "masked_select")}
    patches.update({(torch, n): forbidden(f"torch.{n}") for n in ("nonzero", "masked_select", "unique")})
    patches[(torch.Tensor, "__getitem__")] = no_bool_mask("__getitem__", torch.Tensor.__getitem__)
    patches[(torch.Tensor, "__setitem__")] = no_bool_mask("__setitem__", torch.Tensor.__setitem__)
    originals = {key: getattr(*key) for key in patches}
    try:
        for (owner, name), replacement in patches.items():
            setattr(owner, name, replacement)
        yield
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


def test_the_sync_detector_catches_synchronisations():
    x = torch.ones(3)
    with host_sync_forbidden():
        for sync in (lambda: x.sum().item(), lambda: int(x[0]), lambda: float(x[0]), lambda: bool(x[0] > 0),
                     lambda: x[x > 0], lambda: x.nonzero(), lambda: x.tolist()):
            with pytest.raises(AssertionError, match="host synchronisation"):
                sync()
        labels, predicted = _hand_made_maps()
        with pytest.raises(AssertionError, match="host synchronisation"):  # the compacting helper does sync
            PixelContrastMemory(dim=2).sample_anchors(_index_embedding(3, 4, 4), labels, predicted)
    assert x.sum().item() == 3.0  # restored


def test_forward_and_enqueue_never_synchronise_with_the_host():
    memory = PixelContrastMemory(num_classes=3, dim=8, memory_size=20, pixels_per_class=4)
    torch.manual_seed(0)
    embedding = F.normalize(torch.randn(2, 8, 6, 6), dim=1).requires_grad_()
    labels = torch.randint(-1, 3, (2, 6, 6))
    labels[1][labels[1] == 2] = 1  # image 1 has one class
    predicted = torch.randint(0, 3, (2, 6, 6))
    with host_sync_forbidden():
        memory.enqueue(embedding, labels)  # the warm-up path
        memory(embedding, labels, predicted)
        pixel, region = memory(embedding, labels, predicted)
        memory.contrast(*memory.sample_anchor_slots(embedding, labels, predicted)[:2],
                        *memory._memory(memory.pixel_queue, memory.pixel_count)[:2])
    (pixel + region).backward()
    assert torch.isfinite(pixel) and torch.isfinite(region) and pixel > 0 and region > 0
    assert torch.isfinite(embedding.grad).all() and embedding.grad.abs().sum() > 0
    assert memory.pixel_ptr.tolist() == [0, 3 * 8 % 20, 3 * 4]  # 3 x (4 + 4) class-1, 3 x 4 class-2 entries


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_forward_runs_without_cuda_synchronisation():
    memory = PixelContrastMemory(num_classes=3, dim=16, memory_size=64).cuda()
    embedding = F.normalize(torch.randn(2, 16, 32, 32, device="cuda"), dim=1).requires_grad_()
    labels = torch.randint(-1, 3, (2, 32, 32), device="cuda")
    predicted = torch.randint(0, 3, (2, 32, 32), device="cuda")
    memory(embedding, labels, predicted)  # first call: lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pixel, region = memory(embedding, labels, predicted)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(pixel + region)
