"""Epochs measured in patches, as the paper states them.

The paper cut its 11 training images into 370 patches of 256 x 256 (10 % overlap) and trained 100 epochs of those
patches at batch 8 (47 steps per epoch). A MONAI ``CacheDataset`` of whole stacks has one item per stack, so an epoch
over it would be a couple of steps. :class:`PatchEpochDataset` makes one epoch ``patches_per_epoch`` random patches
long, drawn evenly over the stacks, whatever the number of stacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.utils.data import Dataset

__all__ = ["PatchEpochDataset", "tiles_per_image", "paper_patches_per_epoch"]


class PatchEpochDataset(Dataset):
    """Item ``i`` is ``dataset[i % len(dataset)]``: an epoch of ``ceil(patches / samples_per_image)`` draws.

    ``dataset`` yields ``samples_per_image`` random patches per draw (e.g. a ``CacheDataset`` whose transform ends
    with ``RandSpatialCropSamplesd``), so one epoch holds ``patches`` patches (rounded up to whole draws). Shuffling
    (``DataLoader(shuffle=True)`` or ``DistributedSampler``) then mixes the stacks; each stack is drawn equally often.
    """

    def __init__(self, dataset, patches: int, samples_per_image: int = 1):
        if len(dataset) == 0:
            raise ValueError("PatchEpochDataset needs at least one stack")
        self.dataset = dataset
        self.patches, self.samples_per_image = int(patches), int(samples_per_image)
        self.draws = math.ceil(self.patches / self.samples_per_image)

    def __len__(self) -> int:
        return self.draws

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def tiles_per_image(shape_yx: Sequence[int], patch_size: int, overlap: float = 0.1) -> int:
    """Patches that tile a ``(Y, X)`` image with the given overlap (the last tile flush with the border), as the paper
    cut its images: ``n(L) = 1 + ceil((L - patch) / stride)``, ``stride = round(patch * (1 - overlap))``."""
    stride = max(1, int(round(patch_size * (1 - overlap))))
    count = 1
    for length in shape_yx:
        count *= 1 + max(0, math.ceil((int(length) - patch_size) / stride))
    return count


def paper_patches_per_epoch(shapes_yx: Sequence[Sequence[int]], patch_size: int, overlap: float = 0.1) -> int:
    """The paper's epoch for a training set: the number of ``patch_size`` tiles (10 % overlap) of all its images."""
    return sum(tiles_per_image(shape, patch_size, overlap) for shape in shapes_yx)
