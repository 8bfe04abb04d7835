"""Where a network runs: its device and memory layout, one call for the training and inference configs."""

from __future__ import annotations

import torch

__all__ = ["on_device"]


def on_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """``network`` moved to ``device``, in NHWC layout when ``channels_last`` (cuDNN's fastest kernels on a GPU)."""
    layout = torch.channels_last if channels_last else torch.preserve_format
    return network.to(device, memory_format=layout)
