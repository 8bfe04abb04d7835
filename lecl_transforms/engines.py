"""What the training bundle needs beyond MONAI's stock components: the trainer that passes the epoch to the loss and
keeps per-term losses, batch preparation for dict targets, the click-based validation metric, data and config
helpers that fail early with clear messages."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ignite.metrics import Average, Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys

from .errors import input_error
from .io import load_datalist

__all__ = [
    "default_bundle_root",
    "datalist_entries",
    "check_training_config",
    "latest_checkpoint",
    "PrepareTrainBatch",
    "PrepareValBatch",
    "LECLTrainer",
    "loss_term_metrics",
    "ClickMetric",
    "run_parameters",
    "TARGET_KEYS",
]

TARGET_KEYS = ("np", "hv", "nc", "ignore")


# -- paths and data ----------------------------------------------------------------------------------------------------
def default_bundle_root() -> str:
    """The bundle folder: the working directory when it is one (zoo style), ``./bundle`` when run from this
    repository's root, else the ``bundle`` folder next to the installed package."""
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundle", Path(__file__).resolve().parents[1] / "bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    return str(cwd)


def datalist_entries(datalist: str | None, section: str, synthetic_dir: str, synthetic_images: int = 10,
                     seed: int = 0, synthetic_size: int = 256) -> list[dict]:
    """The ``section`` entries (``image``, ``points``) of ``datalist``; with no datalist, the built-in synthetic data
    (generated into ``synthetic_dir`` on first use, reused afterwards)."""
    if datalist is None:
        from dataclasses import replace

        from .synthetic import MANIFEST_NAME, REGIMES, write_dataset

        datalist = os.path.join(synthetic_dir, "datalist.json")
        manifest = os.path.join(synthetic_dir, MANIFEST_NAME)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            if not os.path.isfile(manifest):
                write_dataset(synthetic_dir, synthetic_images, seed, replace(REGIMES["clean"], size_yx=synthetic_size))
        else:
            # no collective here: configs resolve components in different orders on different processes, and a
            # barrier could interleave with DDP's own start-up broadcasts. Wait for the manifest, written last.
            _wait_for(manifest, timeout_s=600)
    entries = load_datalist(datalist, section)
    return [{"image": e["image"], "points": e["points"]} for e in entries]


def _wait_for(path: str, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not os.path.isfile(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s (written by the first process)")
        time.sleep(0.2)


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
        from .io import IFStackReader

        reader = IFStackReader(check_values=False, require_spacing=False, min_channels=1)
        n_channels = reader.get_data(reader.read(datalist_first_entry["image"]))[0].shape[0]
        for name, idx in (("nuclei_channel", nuclei_channel), ("marker_channel", marker_channel)):
            if not 0 <= int(idx) < n_channels:
                raise input_error(f"config: {name}", f"{name}={idx}, but {datalist_first_entry['image']} has "
                                  f"{n_channels} channels (0..{n_channels - 1})",
                                  f"set {name} to a channel index between 0 and {n_channels - 1}")


# -- batches -----------------------------------------------------------------------------------------------------------
class PrepareTrainBatch:
    """``(image, {np, hv, nc, ignore})`` on the device from a collated batch with ``image_key`` and
    ``{target_prefix}np`` etc. (as ``HoVerNetTargetsd`` writes them)."""

    def __init__(self, image_key: str = "emip", target_prefix: str = "target_"):
        self.image_key, self.target_prefix = image_key, target_prefix

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        move = lambda t: torch.as_tensor(t).to(device=device, non_blocking=non_blocking).float()  # noqa: E731
        image = move(batchdata[self.image_key])
        return image, {k: move(batchdata[f"{self.target_prefix}{k}"]) for k in TARGET_KEYS}


class PrepareValBatch:
    """``(image, {points, point_labels, label})`` for validation on whole images with clicks."""

    def __init__(self, image_key: str = "emip"):
        self.image_key = image_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        image = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking).float()
        label = {k: torch.as_tensor(batchdata[k]) for k in ("points", "point_labels", "label") if k in batchdata}
        return image, label


# -- the trainer ---------------------------------------------------------------------------------------------------------
class LECLTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` that tells the loss the epoch (contrast warm-up) and keeps every loss term in
    ``engine.state.output["loss_terms"]`` for logging."""

    def _iteration(self, engine, batchdata: dict[str, torch.Tensor]) -> dict:
        if hasattr(self.loss_function, "set_epoch"):
            self.loss_function.set_epoch(engine.state.epoch)
        output = super()._iteration(engine, batchdata)
        terms = dict(getattr(self.loss_function, "last_terms", {}))
        for item in output if isinstance(output, list) else [output]:  # decollated: one dict per batch item
            item["loss_terms"] = terms
        return output


def loss_term_metrics(loss, prefix: str = "loss_") -> dict[str, Metric]:
    """One epoch-average metric per active loss term (plus the total), so each is printed and logged separately."""
    names = ["total", *loss.active_terms()]
    return {f"{prefix}{name}": Average(output_transform=_term_reader(name)) for name in names}


def _term_reader(name: str):
    def read(output):
        output = output[0] if isinstance(output, list) else output  # decollated: every item holds the batch's terms
        return float(output["loss_terms"].get(name, 0.0))

    return read


# -- validation metric -----------------------------------------------------------------------------------------------
class ClickMetric(Metric):
    """Validation on whole images against the annotators' clicks (no ground-truth masks needed).

    At each click: detected if the nucleus probability (3x3 mean) exceeds 0.5; its class is the most probable
    nucleus type (5x5 mean of the type softmax). ``kind="f1"``: macro F1 over the nucleus classes, an undetected
    click counting as a miss; ``kind="recall"``: share of clicks detected; ``kind="accuracy"``: share of detected
    clicks with the right class.
    """

    def __init__(self, kind: str = "f1", num_classes: int = 3, output_transform=None, device="cpu"):
        if kind not in ("f1", "recall", "accuracy"):
            raise ValueError(f"kind must be f1, recall or accuracy, got {kind!r}")
        self.kind, self.num_classes = kind, num_classes
        super().__init__(output_transform=output_transform or _pred_and_label, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)  # true x predicted

    @reinit__is_reduced
    def update(self, output) -> None:
        pred, label = output
        np_prob = F.avg_pool2d(torch.softmax(pred["nucleus_prediction"].float(), 1)[:, 1:2], 3, 1, 1)
        nc_prob = F.avg_pool2d(torch.softmax(pred["type_prediction"].float(), 1), 5, 1, 2)
        points = torch.as_tensor(label["points"]).long().reshape(np_prob.shape[0], -1, 3)
        truth = torch.as_tensor(label["point_labels"]).long().reshape(np_prob.shape[0], -1)
        for b in range(np_prob.shape[0]):
            y, x = points[b, :, 1].to(np_prob.device), points[b, :, 2].to(np_prob.device)
            detected = np_prob[b, 0, y, x] > 0.5
            predicted = nc_prob[b, 1:, y, x].argmax(0) + 1
            predicted = torch.where(detected, predicted, torch.zeros_like(predicted)).cpu()
            self._confusion.index_put_((truth[b], predicted), torch.ones_like(predicted), accumulate=True)

    @sync_all_reduce("_confusion")  # summed over processes under DDP
    def compute(self) -> float:
        c = self._confusion.double()
        clicks = c[1:].sum()
        if clicks == 0:
            return 0.0
        if self.kind == "recall":
            return float(c[1:, 1:].sum() / clicks)
        if self.kind == "accuracy":
            detected = c[1:, 1:].sum()
            return float(c[1:, 1:].diagonal().sum() / detected) if detected else 0.0
        scores = []
        for k in range(1, self.num_classes):
            if c[k].sum() == 0:
                continue
            tp, fp, fn = c[k, k], c[:, k].sum() - c[k, k], c[k].sum() - c[k, k]
            scores.append(float(2 * tp / (2 * tp + fp + fn)))
        return sum(scores) / len(scores) if scores else 0.0


def _pred_and_label(output: Mapping) -> tuple:
    return output[CommonKeys.PRED], output[CommonKeys.LABEL]


def lower_is_better(current: float, previous: float) -> bool:
    """``metric_cmp_fn`` for loss-type key metrics."""
    return current < previous


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
