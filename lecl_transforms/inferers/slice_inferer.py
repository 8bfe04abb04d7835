"""Per-slice HoVer-Net inference over a 3D stack (method step 4, test time): each z-slice as the nuclei + marker
composite the network was trained on, sliding windows of the training patch, then per-slice instances and types.

Memory is bounded by a batch of slices, not by the stack: slices stream through the network ``slice_batch`` at a
time and only their instance maps (and a few numbers per instance) are kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_tensor

from ..errors import input_error
from ..transforms.channels import ChannelComposite
from ..transforms.emip import MaxIntensityProjection
from ..transforms.hovernet_post import HoVerNetPostProcess

__all__ = ["SliceHoVerNetInferer", "positive_scores", "autocast_dtype"]


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU has it (no loss scaling, no overflow), else fp16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def positive_scores(class_prob: np.ndarray, positive_class: int = 2) -> np.ndarray:
    """Probability of the positive class among the nucleus classes, per instance: ``(n, C)`` -> ``(n,)``."""
    class_prob = np.asarray(class_prob, np.float64)
    if class_prob.ndim != 2 or class_prob.shape[1] <= positive_class:
        return np.zeros(len(class_prob))
    return class_prob[:, positive_class] / np.maximum(class_prob[:, 1:].sum(1), 1e-12)


class SliceHoVerNetInferer(Inferer):
    """HoVer-Net on every z-slice of a stack, with per-slice post-processing.

    ``inputs``: ``(2, Z, Y, X)`` or ``(1, 2, Z, Y, X)`` (nuclei, marker) tensor or array. Returns a dict:
    ``instances`` ``(Z, Y, X)`` int32 per-slice instance ids unique over the stack (0 background), ``slice_class``
    ``(N + 1,)`` int64 type of each slice instance (HoVer-Net's majority vote; index 0 unused), ``slice_score``
    ``(N + 1,)`` float64 its probability of the positive class, and ``timing`` (seconds: ``network`` for composite +
    sliding windows, ``postprocess``, ``total``).

    Args:
        roi_size: sliding window, the training patch (``ModelDescription.patch_size``).
        composite: the ``ChannelComposite`` of training; its intensity scale is computed once per stack on the
            stack's MIP, so every slice and the training EMIPs share one scale.
        postprocess: per-slice post-processing (default :class:`HoVerNetPostProcess`).
        overlap: sliding-window overlap; ``mode``: window blending.
        sw_batch_size: windows per network call; ``slice_batch``: slices per sliding-window call.
        amp: autocast (bf16 where supported) on CUDA.
        overlap_postprocess: post-process one batch of slices in a worker thread while the network runs on the next
            (``None``: on CUDA only, where the network does not need the CPU).
        progress: a progress bar over slices.
        channels_last: feed the slices in NHWC layout (with a network converted the same way: cuDNN's fastest
            kernels on a GPU).
    """

    def __init__(self, roi_size: int | Sequence[int] = 256, composite: ChannelComposite | None = None,
                 postprocess: Callable | None = None, overlap: float = 0.25, mode: str = "gaussian",
                 sw_batch_size: int = 8, slice_batch: int = 4, amp: bool = False,
                 overlap_postprocess: bool | None = None, progress: bool = False, channels_last: bool = False):
        super().__init__()
        if not (isinstance(overlap, (int, float)) and not isinstance(overlap, bool) and 0 <= overlap < 1):
            raise input_error("config: overlap (--overlap)", f"got {overlap!r}",
                              "give a sliding-window overlap from 0 up to (not including) 1, e.g. 0.25")
        roi = (int(roi_size), int(roi_size)) if np.isscalar(roi_size) else tuple(int(r) for r in roi_size)
        self.window = SlidingWindowInferer(roi_size=roi, sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                           mode=mode)
        self.composite = composite or ChannelComposite()
        self.postprocess = postprocess or HoVerNetPostProcess()
        self.slice_batch, self.amp = max(1, int(slice_batch)), bool(amp)
        self.overlap_postprocess, self.progress = overlap_postprocess, bool(progress)
        self.channels_last = bool(channels_last)

    def _forward(self, slices: torch.Tensor, network, device: torch.device) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=self.amp and device.type == "cuda"):
            out = self.window(slices, network)
        return {k: v.float() for k, v in out.items()}

    def __call__(self, inputs, network, *args, **kwargs) -> dict:
        stack = convert_to_tensor(inputs, track_meta=False)
        stack = stack[0] if stack.ndim == 5 else stack
        if stack.ndim != 4 or stack.shape[0] != 2:
            raise ValueError(f"SliceHoVerNetInferer needs a (2, Z, Y, X) nuclei + marker stack, got {tuple(stack.shape)}")
        device = next(network.parameters()).device
        n_z = stack.shape[1]
        lo_hi = self.composite.scale(MaxIntensityProjection()(stack))
        instances = np.zeros(tuple(stack.shape[1:]), np.int32)
        classes, scores = [np.zeros(1, np.int64)], [np.zeros(1)]
        timing = {"network": 0.0, "postprocess": 0.0}
        next_id = 1

        def collect(z0: int, detections) -> None:
            nonlocal next_id
            for k, det in enumerate(detections):
                ids = det.instances
                instances[z0 + k] = np.where(ids > 0, ids + (next_id - 1), 0)
                classes.append(np.asarray(det.type, np.int64))
                scores.append(positive_scores(det.class_prob))
                next_id += det.n

        def post(outputs):
            t = time.perf_counter()
            detections = self.postprocess(outputs)
            return detections, time.perf_counter() - t

        threaded = self.overlap_postprocess if self.overlap_postprocess is not None else device.type == "cuda"
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=n_z, desc="slices", unit="slice", leave=False)
        start = time.perf_counter()
        pending = None
        with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
            for z0 in range(0, n_z, self.slice_batch):
                t = time.perf_counter()
                batch = stack[:, z0: z0 + self.slice_batch]
                slices = self.composite.apply(batch.float(), lo_hi).permute(1, 0, 2, 3).to(device)
                slices = slices.contiguous(memory_format=torch.channels_last if self.channels_last
                                           else torch.contiguous_format)
                outputs = self._forward(slices, network, device)
                timing["network"] += time.perf_counter() - t
                if pending is not None:  # keep slice order: the previous batch is collected first
                    collect(*_result(pending, timing))
                    pending = None
                if threaded:
                    pending = (z0, pool.submit(post, outputs))
                else:
                    collect(z0, _timed(post(outputs), timing))
                if bar is not None:
                    bar.update(slices.shape[0])
            if pending is not None:
                collect(*_result(pending, timing))
        if bar is not None:
            bar.close()
        timing["total"] = time.perf_counter() - start
        return {"instances": instances, "slice_class": np.concatenate(classes), "slice_score": np.concatenate(scores),
                "timing": timing}


def _timed(result, timing: dict):
    detections, seconds = result
    timing["postprocess"] += seconds
    return detections


def _result(pending, timing: dict):
    z0, future = pending
    return z0, _timed(future.result(), timing)
