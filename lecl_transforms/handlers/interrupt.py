"""A checkpoint to resume from when a training run is stopped by Ctrl-C (see ``LECLTrainer``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..utils.files import atomic_path

__all__ = ["InterruptCheckpoint", "INTERRUPT_CHECKPOINT"]

#: file name of the checkpoint saved on Ctrl-C; ``latest_checkpoint`` (``--resume true``) finds it as the newest
INTERRUPT_CHECKPOINT = "checkpoint_interrupted_iteration={}.pt"
_PATTERN = re.compile(r"checkpoint_interrupted_iteration=(\d+)\.pt")


class InterruptCheckpoint:
    """When the trainer's run ends on a signal (``engine.state.stop_signal``, set by ``LECLTrainer``), save
    ``save_dict`` (the objects of the epoch checkpoints: model, optimizer, scheduler, trainer, loss) as
    ``save_dir/checkpoint_interrupted_iteration=N.pt``, in the format of ``CheckpointSaver`` (``CheckpointLoader``
    and ``--resume true`` load it; ignite resumes mid-epoch from its iteration count), written atomically. Its path
    goes to ``engine.state.interrupt_checkpoint``. Once a later epoch completes (and its own checkpoint is saved:
    attach this handler after the ``CheckpointSaver``), older interrupt checkpoints are deleted.

    Args:
        save_dir: the training's checkpoint folder.
        save_dict: name -> object with ``state_dict()`` (a DDP-wrapped network is saved unwrapped, as
            ``CheckpointSaver`` does).
    """

    def __init__(self, save_dir, save_dict: Mapping):
        self.save_dir, self.save_dict = Path(save_dir), dict(save_dict)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.TERMINATE, self.save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.remove_older)

    def save(self, engine: Engine) -> None:
        if not getattr(engine.state, "stop_signal", None):
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        path = self.save_dir / INTERRUPT_CHECKPOINT.format(engine.state.iteration)
        wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
        state = {name: (obj.module if isinstance(obj, wrappers) else obj).state_dict()
                 for name, obj in self.save_dict.items()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        engine.state.interrupt_checkpoint = str(path)

    def remove_older(self, engine: Engine) -> None:
        for path in self.save_dir.glob("checkpoint_interrupted_iteration=*.pt"):
            match = _PATTERN.fullmatch(path.name)
            if match and int(match[1]) < engine.state.iteration:
                path.unlink(missing_ok=True)
