"""Config helpers of the training bundle: the bundle folder, checkpoints, early checks, run parameters."""

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
    "latest_checkpoint",
    "check_training_config",
    "run_parameters",
]


# -- paths and data ----------------------------------------------------------------------------------------------------
def default_bundle_root() -> str:
    """The bundle folder: the working directory when it is one (zoo style), ``./bundle`` when run from this
    repository's root, else the ``bundle`` folder next to the installed package."""
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundle", Path(__file__).resolve().parents[1] / "bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    return str(cwd)


def latest_checkpoint(ckpt_dir: str, required: bool = True) -> str:
    """The newest full training checkpoint in ``ckpt_dir`` (for ``resume``); ``""`` when none and not ``required``
    (bundle configs resolve this path even when they do not resume)."""
    found = sorted(glob.glob(os.path.join(ckpt_dir, "*checkpoint*.pt")), key=os.path.getmtime)
    if not found and not required:
        return ""
    if not found:
        raise input_error(f"config: resume (ckpt_dir {ckpt_dir})", "no training checkpoint to resume from",
                          "run the training once without --resume, or point ckpt_dir at the earlier run's models")
    return found[-1]


def check_training_config(network, patch_size, datalist_first_entry: Mapping | None = None,
                          nuclei_channel: int = 0, marker_channel: int = 1, loss=None,
                          batch_size: int | None = None) -> None:
    """Fail at start, with a clear message, on config values that would otherwise break mid-run."""
    try:
        network.check_input_size(patch_size)
    except ValueError as e:
        raise input_error("config: patch_size", str(e), "set patch_size to a multiple of 8, e.g. 128 or 256") from None
    if batch_size is not None and int(batch_size) < 1:
        raise input_error("config: batch_size", f"got {batch_size}", "use a batch size of at least 1")
    if datalist_first_entry is not None:
        from ..data.reader import IFStackReader

        reader = IFStackReader(check_values=False, require_spacing=False, min_channels=1)
        n_channels = reader.get_data(reader.read(datalist_first_entry["image"]))[0].shape[0]
        for name, idx in (("nuclei_channel", nuclei_channel), ("marker_channel", marker_channel)):
            if not 0 <= int(idx) < n_channels:
                raise input_error(f"config: {name}", f"{name}={idx}, but {datalist_first_entry['image']} has "
                                  f"{n_channels} channels (0..{n_channels - 1})",
                                  f"set {name} to a channel index between 0 and {n_channels - 1}")


def to_plain(value: Any) -> Any:
    """Config values as plain Python for logging as MLflow parameters."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.device):
        return str(value)
    return value


def run_parameters(**params) -> dict[str, str]:
    """MLflow-ready (flat, string) parameters from named config values."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        value = to_plain(value)
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": str(v) for k, v in value.items()})
        else:
            flat[key] = str(value)
    return flat
