"""Per-slice HoVer-Net inference over a 3D stack (method step 4, test time): each z-slice as the nuclei + marker
composite the network was trained on, sliding windows of the training patch, then per-slice instances and types.

Memory is bounded by a batch of slices, not by the stack: slices stream through the network ``slice_batch`` at a
time and only their instance maps (and a few numbers per instance) are kept.

A stack imaged at another pixel size than the model's training images is scaled to the model's pixel size slice by
slice before the network (and post-processed there), its instance maps brought back to the stack's grid."""

from __future__ import annotations

import logging
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
from ..utils.spacing import resolve_spacing

__all__ = ["SliceHoVerNetInferer", "StackOutputs", "positive_scores", "autocast_dtype"]

logger = logging.getLogger(__name__)


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


class StackOutputs:
    """The network's outputs for every slice of one stack, kept (on the CPU) so that post-processing can be run
    again with other settings without running the network again (calibration of the post-processing).

    ``batches``: ``[(z0, {branch: (B, C, y, x) tensor}), ...]`` in slice order, at the grid the network saw (the
    model's pixel size when the slices were rescaled); ``shape``: the stack's ``(Z, Y, X)``."""

    def __init__(self, batches: list, shape: tuple[int, int, int], seconds: float = 0.0):
        self.batches, self.shape, self.seconds = batches, tuple(int(s) for s in shape), float(seconds)


class _Detections:
    """Per-slice detections gathered into the inferer's result: instance ids unique over the stack, the instance
    maps brought back to the stack's grid (nearest neighbour) when the network saw rescaled slices."""

    def __init__(self, shape: tuple[int, int, int]):
        self.instances = np.zeros(shape, np.int32)
        self.classes, self.scores = [np.zeros(1, np.int64)], [np.zeros(1)]
        self.next_id = 1

    def add(self, z0: int, detections) -> None:
        for k, det in enumerate(detections):
            ids = _nearest(det.instances, self.instances.shape[1:])
            self.instances[z0 + k] = np.where(ids > 0, ids + (self.next_id - 1), 0)
            self.classes.append(np.asarray(det.type, np.int64))
            self.scores.append(positive_scores(det.class_prob))
            self.next_id += det.n

    def result(self, timing: dict) -> dict:
        return {"instances": self.instances, "slice_class": np.concatenate(self.classes),
                "slice_score": np.concatenate(self.scores), "timing": timing}


def _nearest(labels: np.ndarray, shape_yx) -> np.ndarray:
    """``labels`` ``(y, x)`` resampled to ``shape_yx`` by nearest neighbour (pixel centres), unchanged when the
    shapes agree. An instance smaller than a target pixel may vanish when the target grid is coarser."""
    if tuple(labels.shape) == tuple(shape_yx):
        return labels
    rows = np.minimum(((np.arange(shape_yx[0]) + 0.5) * labels.shape[0] / shape_yx[0]).astype(np.intp),
                      labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape_yx[1]) + 0.5) * labels.shape[1] / shape_yx[1]).astype(np.intp),
                      labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]


def _pair(yx, fmt: str) -> str:
    """``0.5`` for equal ``(y, x)`` values, else ``0.5 x 0.25 (y x)``."""
    y, x = (fmt.format(v) for v in yx)
    return y if y == x else f"{y} x {x} (y x)"


def _rescaled(slices: torch.Tensor, scale: tuple[float, float] | None) -> torch.Tensor:
    """``(B, C, Y, X)`` slices scaled by ``(sy, sx)`` (area averaging when shrinking, bilinear when enlarging)."""
    if scale is None:
        return slices
    size = tuple(max(1, int(round(n * s))) for n, s in zip(slices.shape[-2:], scale))
    mode = "area" if size[0] * size[1] < slices.shape[-2] * slices.shape[-1] else "bilinear"
    return torch.nn.functional.interpolate(slices, size=size, mode=mode,
                                           **({} if mode == "area" else {"align_corners": False}))


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
        model_pixel_size_yx: the ``(y, x)`` pixel size in um the network was trained at (``None``: no rescaling).
            Each slice of a stack whose pixel size (its metadata's ``spacing``) differs by more than 1% is scaled
            to it before the network; post-processing runs at that grid too, so its pixel-valued settings
            (``min_instance_size``, ``min_object_size``, ...) and a calibrated threshold mean what they meant in
            training, and the instance maps are brought back to the stack's grid by nearest neighbour. A stack of
            unknown pixel size is not rescaled (a warning says so).
    """

    def __init__(self, roi_size: int | Sequence[int] = 256, composite: ChannelComposite | None = None,
                 postprocess: Callable | None = None, overlap: float = 0.25, mode: str = "gaussian",
                 sw_batch_size: int = 8, slice_batch: int = 4, amp: bool = False,
                 overlap_postprocess: bool | None = None, progress: bool = False, channels_last: bool = False,
                 model_pixel_size_yx: Sequence[float] | None = None):
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
        self.model_pixel_size_yx = None if model_pixel_size_yx is None else \
            tuple(float(v) for v in model_pixel_size_yx)
        self._said: str | None = None  # the last rescaling message (said once per run of like stacks)

    # -- rescaling ------------------------------------------------------------------------------------------------
    def slice_scale(self, inputs) -> tuple[float, float] | None:
        """``(sy, sx)`` the slices of ``inputs`` are scaled by before the network (stack pixel size / model pixel
        size), or ``None`` (no model pixel size, a stack within 1% of it, or a stack of unknown pixel size)."""
        if self.model_pixel_size_yx is None:
            return None
        spacing = resolve_spacing(inputs, required=False)
        model = _pair(self.model_pixel_size_yx, "{:g}")
        if spacing is None:
            self._say(logging.WARNING, f"stack pixel size unknown (no spacing in its metadata): slices are not "
                      f"rescaled to the model's {model} um pixels; give the stack's spacing to rescale")
            return None
        scale = (spacing[1] / self.model_pixel_size_yx[0], spacing[2] / self.model_pixel_size_yx[1])
        if max(abs(s - 1.0) for s in scale) <= 0.01:
            return None
        stack, factor = _pair(spacing[1:], "{:g}"), _pair(scale, "{:.3g}")
        self._say(logging.INFO, f"stack pixel {stack} um, model {model} um: slices scaled by {factor} for the "
                  "network and post-processing, instances mapped back to the stack's grid")
        return scale

    def _say(self, level: int, message: str) -> None:
        if message != self._said:
            logger.log(level, message)
            self._said = message

    # -- running --------------------------------------------------------------------------------------------------
    def _forward(self, slices: torch.Tensor, network, device: torch.device) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=self.amp and device.type == "cuda"):
            out = self.window(slices, network)
        return {k: v.float() for k, v in out.items()}

    def _batches(self, inputs, network):
        """``(stack (2, Z, Y, X), generator of (z0, network outputs of slices z0...))``; the network time is
        added to ``timing["network"]`` of the generator's first argument as it runs."""
        scale = self.slice_scale(inputs)
        stack = convert_to_tensor(inputs, track_meta=False)
        stack = stack[0] if stack.ndim == 5 else stack
        if stack.ndim != 4 or stack.shape[0] != 2:
            raise ValueError("SliceHoVerNetInferer needs a (2, Z, Y, X) nuclei + marker stack, "
                             f"got {tuple(stack.shape)}")
        device = next(network.parameters()).device
        # the intensity scale from the MIP at the grid the network sees: percentiles as in training
        lo_hi = self.composite.scale(_rescaled(MaxIntensityProjection()(stack).float()[None], scale)[0])

        def run(timing: dict):
            for z0 in range(0, stack.shape[1], self.slice_batch):
                t = time.perf_counter()
                batch = stack[:, z0: z0 + self.slice_batch]
                slices = _rescaled(self.composite.apply(batch.float(), lo_hi).permute(1, 0, 2, 3).to(device), scale)
                slices = slices.contiguous(memory_format=torch.channels_last if self.channels_last
                                           else torch.contiguous_format)
                outputs = self._forward(slices, network, device)
                timing["network"] += time.perf_counter() - t
                yield z0, outputs

        return stack, device, run

    def __call__(self, inputs, network, *args, **kwargs) -> dict:
        stack, device, run = self._batches(inputs, network)
        n_z = stack.shape[1]
        found = _Detections(tuple(stack.shape[1:]))
        timing = {"network": 0.0, "postprocess": 0.0}

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
            for z0, outputs in run(timing):
                if pending is not None:  # keep slice order: the previous batch is collected first
                    found.add(*_result(pending, timing))
                    pending = None
                if threaded:
                    pending = (z0, pool.submit(post, outputs))
                else:
                    found.add(z0, _timed(post(outputs), timing))
                if bar is not None:
                    bar.update(min(self.slice_batch, n_z - z0))
            if pending is not None:
                found.add(*_result(pending, timing))
        if bar is not None:
            bar.close()
        timing["total"] = time.perf_counter() - start
        return found.result(timing)

    def network_outputs(self, inputs, network) -> StackOutputs:
        """The network's outputs for every slice of ``inputs`` (composite, rescaling and sliding windows as
        :meth:`__call__`), on the CPU, for :meth:`detect` with several post-processings."""
        stack, _, run = self._batches(inputs, network)
        timing = {"network": 0.0}
        with torch.inference_mode():
            batches = [(z0, {k: v.cpu() for k, v in outputs.items()}) for z0, outputs in run(timing)]
        return StackOutputs(batches, tuple(stack.shape[1:]), timing["network"])

    def detect(self, outputs: StackOutputs, postprocess: Callable | None = None) -> dict:
        """What :meth:`__call__` returns, from outputs kept by :meth:`network_outputs`, post-processed by
        ``postprocess`` (default: this inferer's)."""
        postprocess = postprocess or self.postprocess
        found = _Detections(outputs.shape)
        start = time.perf_counter()
        for z0, batch in outputs.batches:
            found.add(z0, postprocess(batch))
        seconds = time.perf_counter() - start
        return found.result({"network": outputs.seconds, "postprocess": seconds, "total": seconds})


def _timed(result, timing: dict):
    detections, seconds = result
    timing["postprocess"] += seconds
    return detections


def _result(pending, timing: dict):
    z0, future = pending
    return z0, _timed(future.result(), timing)
