"""Where a network runs: its device and memory layout, one call for the training and inference configs; the network
inside a data-parallel wrapper."""

from __future__ import annotations

import torch

__all__ = ["on_device", "unwrap_parallel"]


def on_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """``network`` moved to ``device``, in NHWC layout when ``channels_last`` (cuDNN's fastest kernels on a GPU)."""
    layout = torch.channels_last if channels_last else torch.preserve_format
    return network.to(device, memory_format=layout)


def unwrap_parallel(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a (Distributed)DataParallel wrapper (``network`` itself when not wrapped): e.g. validation,
    where each process runs a different number of slices, which a DDP forward (buffer broadcasts) must not see."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(network, wrappers):
        network = network.module
    return network
