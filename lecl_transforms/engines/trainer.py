"""The trainer that passes the epoch to the loss and keeps per-term losses, and batch preparation for dict targets."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.metrics import Average, Metric
from monai.engines import SupervisedTrainer

from ..errors import LECLInterrupted

__all__ = [
    "TARGET_KEYS",
    "CompiledOrEager",
    "PrepareTrainBatch",
    "PrepareValBatch",
    "LECLTrainer",
    "loss_term_metrics",
    "lower_is_better",
]


TARGET_KEYS = ("np", "hv", "nc", "ignore")


# -- batches -----------------------------------------------------------------------------------------------------------
class PrepareTrainBatch:
    """``(image, {np, hv, nc, ignore})`` on the device from a collated batch with ``image_key`` and
    ``{target_prefix}np`` etc. (as ``HoVerNetTargetsd`` writes them)."""

    def __init__(self, image_key: str = "emip", target_prefix: str = "target_", channels_last: bool = False):
        self.image_key, self.target_prefix, self.channels_last = image_key, target_prefix, bool(channels_last)

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        move = lambda t: torch.as_tensor(t).to(device=device, non_blocking=non_blocking).float()  # noqa: E731
        image = move(batchdata[self.image_key])
        if self.channels_last:  # the layout cuDNN's fastest convolution kernels (and bf16 tensor cores) want
            image = image.contiguous(memory_format=torch.channels_last)
        return image, {k: move(batchdata[f"{self.target_prefix}{k}"]) for k in TARGET_KEYS}


class PrepareValBatch:
    """``(image, {points, point_labels, label})`` for validation on whole images with clicks."""

    def __init__(self, image_key: str = "emip"):
        self.image_key = image_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        image = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking).float()
        label = {k: torch.as_tensor(batchdata[k]) for k in ("points", "point_labels", "label") if k in batchdata}
        return image, label


# -- torch.compile with a clean fallback -------------------------------------------------------------------------------
class CompiledOrEager(torch.nn.Module):
    """``network`` run through ``torch.compile`` when ``compile`` is on; if compiling fails (no compiler, an
    unsupported op, an old GPU) the first call says why in the log and every call runs the eager network instead.

    The network itself stays the module that checkpoints save and load (this wrapper only holds a reference), so
    checkpoints are the same with and without compiling."""

    def __init__(self, network: torch.nn.Module, compile: bool = False, **compile_kwargs):
        super().__init__()
        self.network = network
        self.compiled = None
        if compile:
            try:
                self.compiled = torch.compile(network, **compile_kwargs)
            except Exception as e:  # noqa: BLE001 - any failure means: run eager
                _fallback_message(e)

    def forward(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - compile errors surface at the first call
                self.compiled = None
                _fallback_message(e)
        return self.network(*args, **kwargs)


def _fallback_message(error: Exception) -> None:
    import logging

    logging.getLogger(__name__).warning(f"torch.compile is not available here ({type(error).__name__}: "
                                        f"{str(error).splitlines()[0] if str(error) else ''}); training runs eager")


# -- the trainer -------------------------------------------------------------------------------------------------------
class LECLTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` that tells the loss the epoch (contrast warm-up), keeps every loss term in
    ``engine.state.output["loss_terms"]`` for logging, and calls each of ``on_failure`` (e.g. marking the MLflow runs
    FAILED) when :meth:`run` raises, before the error goes on.

    Ctrl-C (SIGINT) or SIGTERM during :meth:`run` stops the training cleanly: the iteration under way finishes (every
    process of a DDP run stops at the same one), ``engine.state.stop_signal`` names the signal and the run ends with
    ``Events.TERMINATE`` (a handler such as :class:`~lecl_transforms.handlers.InterruptCheckpoint` saves what to resume
    from) and without ``Events.COMPLETED`` (no final model, calibration or final validation of an unfinished run);
    then each of ``on_interrupt`` is called (MLflow runs marked KILLED), one line says what was saved and how to go
    on, and the process ends with status 130 (:class:`~lecl_transforms.errors.LECLInterrupted`). A second Ctrl-C stops
    at once, saving nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_failure: list = []
        self.on_interrupt: list = []
        self._signalled: str | None = None
        self.add_event_handler(Events.EPOCH_STARTED, self._announce_contrast)
        self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_if_signalled)

    def _announce_contrast(self, engine) -> None:
        """Say in the log when the contrast terms switch on: loss_total jumps then, by design, not by divergence."""
        start = getattr(self.loss_function, "contrast_start_epoch", None)
        if start is not None and engine.state.epoch == int(start):
            self.logger.info(f"Epoch[{start}]: the supervised contrast terms (scl_pixel, scl_region) start now: "
                             "loss_total includes them from here on and rises; loss_hovernet (the key metric) "
                             "does not")

    def run(self) -> None:
        self._signalled = None
        self.state.stop_signal = None
        with self._signals_stop_cleanly():
            try:
                super().run()
            except BaseException:
                for callback in self.on_failure:
                    callback()
                raise
        if self.state.stop_signal:
            self._end_interrupted()

    # -- stopping on Ctrl-C -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals_stop_cleanly(self):
        """SIGINT and SIGTERM ask the run to stop after the iteration under way (only the main thread can handle
        signals: elsewhere, e.g. a training run inside a server's worker thread, they keep their usual meaning)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if self._signalled is not None:
            # Ctrl-C twice: stop now, without saving. A SIGTERM after the Ctrl-C is torchrun passing the Ctrl-C on
            # to its workers (it gives them time to exit): the clean stop goes on
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self._signalled = signal.Signals(signum).name
        # os.write, not logging: a signal handler may run while the logging lock is held
        os.write(2, f"\n{self._signalled} received: training stops after the current iteration and saves a checkpoint "
                    "to resume from (Ctrl-C again stops at once, saving nothing)\n".encode())

    def _stop_if_signalled(self, engine) -> None:
        asked = self._signalled is not None
        if idist.get_world_size() > 1:  # every process stops after the same iteration (else DDP waits forever)
            asked = bool(idist.all_reduce(int(asked)))
        if asked:
            engine.state.stop_signal = self._signalled or "a signal to another process"
            engine.terminate(skip_completed=True)

    def _end_interrupted(self) -> None:
        for callback in self.on_interrupt:
            callback()
        state = self.state
        saved = getattr(state, "interrupt_checkpoint", None)
        where = f"saved {saved}" if saved else "nothing saved beyond the last epoch's checkpoint"
        epochs, into = divmod(state.iteration, state.epoch_length)
        progress = f"{epochs} complete epoch(s)" + (f" and {into} of {state.epoch_length} iterations" if into else "")
        message = (f"training stopped by {state.stop_signal} after {progress} (iteration {state.iteration}): "
                   f"{where}; run the same command with --resume true to continue")
        if idist.get_rank() == 0:
            print(message, file=sys.stderr, flush=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every process stops here together; an open gloo group would abort the exit (SIGABRT) instead of 130
            torch.distributed.destroy_process_group()
        raise LECLInterrupted(message)

    def _iteration(self, engine, batchdata: dict[str, torch.Tensor]) -> dict:
        if hasattr(self.loss_function, "set_epoch"):
            self.loss_function.set_epoch(engine.state.epoch)
        output = super()._iteration(engine, batchdata)
        terms = dict(getattr(self.loss_function, "last_terms", {}))
        for item in output if isinstance(output, list) else [output]:  # decollated: one dict per batch item
            item["loss_terms"] = terms
        return output


def loss_term_metrics(loss, prefix: str = "loss_") -> dict[str, Metric]:
    """One epoch-average metric per active loss term, the total and the HoVer-Net terms' sum, each printed and
    logged. The first, the trainer's key metric, is ``loss_hovernet``: the terms active from the first epoch, so
    "best at epoch N" stays meaningful when the contrast terms join ``loss_total`` at ``contrast_start_epoch``."""
    names = ["hovernet", "total", *loss.active_terms()]
    return {f"{prefix}{name}": Average(output_transform=_term_reader(name)) for name in names}


def _term_reader(name: str):
    def read(output):
        output = output[0] if isinstance(output, list) else output  # decollated: every item holds the batch's terms
        value = output["loss_terms"].get(name)
        return torch.zeros(()) if value is None else value  # a device tensor: ignite's Average sums on the device

    return read


def lower_is_better(current: float, previous: float) -> bool:
    """``metric_cmp_fn`` for loss-type key metrics."""
    return current < previous
