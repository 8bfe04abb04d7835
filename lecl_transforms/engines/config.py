"""Config helpers of the training bundle: the bundle folder, checkpoints
that are never replaced by accident, early checks and run parameters."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import input_error

__all__ = [
    "default_bundle_root",
    "bundle_config",
    "latest_checkpoint",
    "guard_checkpoints",
    "checkpoint_epoch",
    "check_epochs",
    "check_training_config",
    "run_parameters",
]

#: environment variable naming the bundle folder for ``lecl`` run from anywhere (e.g. with the package from a wheel)
BUNDLE_ENV = "LECL_BUNDLE"


def default_bundle_root() -> str:
    """The bundle folder: ``$LECL_BUNDLE`` when set, else the working directory when it is one (zoo style),
    ``./bundle`` when run from this repository's root, else the ``bundle`` folder next to the installed package."""
    cwd = Path.cwd()
    if os.environ.get(BUNDLE_ENV):
        return str(Path(os.environ[BUNDLE_ENV]).resolve())
    for candidate in (cwd, cwd / "bundle", Path(__file__).resolve().parents[2] / "bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    return str(cwd)


def bundle_config(name: str) -> str:
    """Path of the bundle's config file ``name`` (e.g. the ``inference.json`` the training validates with), in the
    bundle folder of :func:`default_bundle_root`."""
    return os.path.join(default_bundle_root(), "configs", name)


def latest_checkpoint(ckpt_dir: str, required: bool = True) -> str:
    """The newest complete full training checkpoint in ``ckpt_dir`` (for ``resume``); ``""`` when none and not
    ``required`` (bundle configs resolve this path even when they do not resume).

    MONAI's ``CheckpointSaver`` writes in place (not atomically): a run killed hard while saving leaves a file cut
    short. ``torch.save`` writes a zip archive whose directory comes last, so such a file is no zip; it is passed
    over (with a warning) for the newest complete one."""
    import logging
    import zipfile

    found = sorted(glob.glob(os.path.join(ckpt_dir, "*checkpoint*.pt")), key=os.path.getmtime)
    complete = [path for path in found if zipfile.is_zipfile(path)]
    for path in found[found.index(complete[-1]) + 1 if complete else 0:]:
        logging.getLogger(__name__).warning(f"{path} is incomplete (the run was stopped while saving it): resuming "
                                            "from the newest complete checkpoint before it")
    if not complete and not required:
        return ""
    if not complete:
        problem = "no training checkpoint to resume from" if not found else \
            f"no complete training checkpoint to resume from ({', '.join(found)} cut short while being saved)"
        raise input_error(f"config: resume (ckpt_dir {ckpt_dir})", problem,
                          "run the training once without --resume, or point ckpt_dir at the earlier run's models")
    return complete[-1]


def checkpoint_epoch(path: str) -> int:
    """The epochs a full training checkpoint (``CheckpointSaver``'s, with the trainer's state) had completed."""
    trainer = torch.load(path, map_location="cpu", weights_only=True)["trainer"]
    if "epoch" in trainer:
        return int(trainer["epoch"])
    return int(trainer["iteration"]) // max(1, int(trainer["epoch_length"]))  # what ignite's state_dict keeps


def guard_checkpoints(ckpt_dir: str, resume: bool, overwrite: bool, epochs: int | None = None) -> None:
    """Refuse to start a fresh run over the models of an earlier one: its ``model.pt`` (best model),
    ``model_final.pt`` and checkpoints would be replaced. ``resume`` continues that run (up to ``epochs``, which must
    then exceed the epochs it completed); ``overwrite`` replaces it."""
    if resume and epochs is not None:
        done = checkpoint_epoch(latest_checkpoint(ckpt_dir, required=True))
        if int(epochs) <= done:
            raise input_error(f"config: epochs (--epochs {epochs}) with --resume true",
                              f"the run in {ckpt_dir} has already completed {done} epochs, so there is nothing left "
                              f"to train up to epoch {epochs}",
                              f"to train further, give the new total, more than {done} (e.g. --epochs "
                              f"{done + max(1, int(epochs))} for {max(1, int(epochs))} more); the trained models are "
                              f"in {ckpt_dir}")
    if resume or overwrite:
        return
    earlier = sorted(Path(ckpt_dir).glob("*.pt")) if os.path.isdir(ckpt_dir) else []
    if earlier:
        names = ", ".join(p.name for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
        raise input_error(ckpt_dir, f"holds the models of an earlier training run ({names})",
                          "pass --resume true to continue that run, --overwrite true to replace its models, or "
                          "another --bundle_root for a new run (in the bundle folder itself, models/model.pt is the "
                          "shipped model, which stage 1 would replace)")


def check_epochs(epochs) -> int:
    """``epochs`` if it is a whole number >= 1; checked first, before the training writes anything."""
    if isinstance(epochs, bool) or not (isinstance(epochs, (int, float)) and float(epochs).is_integer()
                                        and epochs >= 1):
        raise input_error("config: epochs (--epochs)", f"got {epochs!r}: no epoch would be trained",
                          "give a whole number of epochs >= 1 (quick.json: 12, train.json: 100)")
    return int(epochs)


def check_training_config(network, patch_size, batch_size: int | None = None,
                          samples_per_image: int | None = None) -> None:
    """Fail at start, with a clear message, on config values that would otherwise break mid-run."""
    try:
        network.check_input_size(patch_size)
    except ValueError as e:
        raise input_error("config: patch_size", str(e), "set patch_size to a multiple of 8, e.g. 128 or 256") from None
    if batch_size is not None and int(batch_size) < 1:
        raise input_error("config: batch_size", f"got {batch_size}",
                          "use a batch size of at least 1 (patches per step)")
    if samples_per_image is not None:
        k = int(samples_per_image)
        if k < 1 or int(batch_size or k) % k:
            raise input_error("config: samples_per_image", f"got {samples_per_image} with batch_size {batch_size}: "
                              "each step takes batch_size patches, cut samples_per_image at a time from a stack",
                              "use a samples_per_image that divides batch_size (1 always works)")


def _to_plain(value: Any) -> Any:
    """Config values as plain Python for logging as MLflow parameters."""
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, torch.device):
        return str(value)
    return value


def run_parameters(**params) -> dict[str, str]:
    """MLflow-ready (flat, string) parameters from named config values."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        value = _to_plain(value)
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": str(v) for k, v in value.items()})
        else:
            flat[key] = str(value)
    return flat
