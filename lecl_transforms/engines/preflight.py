"""What the training bundle checks before it starts: which data it trains on, and that the data make sense.

Every stack and click file is read once here, so a bad file stops the run before any work with one message naming
it (all bad files at once), instead of a traceback from inside a data loader minutes later.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..data.datalist import load_datalist
from ..data.points import NEGATIVE, POSITIVE, read_points
from ..data.reader import IFStackReader
from ..errors import LECLInputError, input_error
from ..utils.values import optional

__all__ = ["SYNTHETIC", "datalist_file", "training_entries", "write_synthetic_data", "TrainingData",
           "check_training_data"]

logger = logging.getLogger(__name__)

#: the ``datalist`` value that selects the built-in synthetic data
SYNTHETIC = "synthetic"


def datalist_file(datalist, synthetic_dir: str) -> str:
    """The datalist JSON the training reads: ``datalist`` itself, or for ``datalist="synthetic"`` the built-in
    synthetic data's datalist in ``synthetic_dir`` (written by :func:`write_synthetic_data` in the config's
    ``initialize``; nothing is written here). No datalist is an error: training on data the user did not choose would
    go unnoticed."""
    datalist = optional(datalist)
    if datalist is None:
        raise input_error("config: datalist", "no datalist given",
                          "pass --datalist path/to/datalist.json (lecl synth writes one; format in the bundle docs), "
                          f"or --datalist {SYNTHETIC} to train on the built-in synthetic stacks")
    return os.path.join(synthetic_dir, "datalist.json") if str(datalist) == SYNTHETIC else str(datalist)


def training_entries(datalist_json, section: str) -> list[dict]:
    """The ``section`` entries (``image``, ``points``) of the datalist JSON (:func:`datalist_file`)."""
    return [{"image": e["image"], "points": e["points"]} for e in load_datalist(datalist_json, section)]


def write_synthetic_data(datalist, synthetic_dir: str, n_images: int = 10, seed: int = 0, size: int = 256) -> None:
    """For ``datalist="synthetic"``: write the built-in synthetic stacks into ``synthetic_dir`` on first use and
    reuse them afterwards (the log says which); any other datalist: nothing. Under ``torch.distributed`` the first
    process writes and the others wait for its manifest."""
    if str(optional(datalist)) != SYNTHETIC:
        return
    from ..data.synthetic import REGIMES
    from ..data.synthetic_dataset import MANIFEST_NAME, write_dataset

    manifest = os.path.join(synthetic_dir, MANIFEST_NAME)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_rank() == 0:
        if not os.path.isfile(manifest):
            write_dataset(synthetic_dir, n_images, seed, replace(REGIMES["clean"], size_yx=size))
        logger.info("datalist: the built-in synthetic data (%d stacks of %d x %d px, clean regime, seed %d) in %s",
                    n_images, size, size, seed, synthetic_dir)
    else:
        # no collective here: a barrier could interleave with DDP's own start-up broadcasts. Wait for the manifest,
        # written last.
        deadline = time.monotonic() + 600
        while not os.path.isfile(manifest):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{manifest} did not appear within 600 s (written by the first process)")
            time.sleep(0.2)


@dataclass
class TrainingData:
    """What the checks found: the (Y, X) size and the (y, x) pixel size in um of every training stack, and the
    clicks per class."""

    shapes_yx: list[tuple[int, int]] = field(default_factory=list)
    clicks: dict[int, int] = field(default_factory=dict)
    pixel_sizes_yx: list[tuple[float, float]] = field(default_factory=list)

    @property
    def pixel_size_yx(self) -> list[float] | None:
        """The training images' ``(y, x)`` pixel size in um the model records (the median over the training stacks,
        with a warning when they differ by more than 1%); ``None`` without training stacks."""
        if not self.pixel_sizes_yx:
            return None
        sizes = np.asarray(self.pixel_sizes_yx, np.float64)
        median = np.median(sizes, axis=0)
        if np.any(np.abs(sizes / median - 1.0) > 0.01):
            logger.warning(f"the training stacks have different pixel sizes ({sizes.min():g}-{sizes.max():g} um): the "
                           f"model records their median, {median[0]:g} x {median[1]:g} um (y x), and inference "
                           "rescales stacks to it; the network itself trains on each stack as it is")
        return [float(v) for v in median]


def _read_entry(entry: dict, reader: IFStackReader, nuclei_channel: int, marker_channel: int):
    from ..transforms.checks import check_channel_indices

    array, meta = reader.get_data(reader.read(entry["image"]))
    check_channel_indices(array.shape[0], nuclei_channel, marker_channel, entry["image"])
    _, labels = read_points(entry["points"], array.shape[1:])
    return array.shape[-2:], labels, tuple(float(v) for v in meta["spacing"][1:])


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_training_data(train: Sequence[dict], val: Sequence[dict], nuclei_channel: int = 0, marker_channel: int = 1,
                        spacing=None, axes=None, allow_suspicious_input: bool = False,
                        override_spacing: bool = False) -> TrainingData:
    """Read every training and validation stack and its clicks; raise one :class:`LECLInputError` listing every bad
    file. Unless ``allow_suspicious_input``: training clicks of one class only, or a stack both in training and in
    validation, stop the run too (the classifier could not learn, or the validation metric would be inflated)."""
    reader = IFStackReader(axes=optional(axes), spacing=optional(spacing), override_spacing=override_spacing)
    found = TrainingData()
    problems: list[tuple[str, LECLInputError]] = []
    for section, entries in (("training", train), ("validation", val)):
        for entry in entries:
            try:
                shape_yx, labels, pixel_yx = _read_entry(entry, reader, int(nuclei_channel), int(marker_channel))
            except LECLInputError as e:
                problems.append((section, e))
                continue
            if section == "training":
                found.shapes_yx.append(tuple(int(s) for s in shape_yx))
                found.pixel_sizes_yx.append(pixel_yx)
                for cls in (NEGATIVE, POSITIVE):
                    found.clicks[cls] = found.clicks.get(cls, 0) + int(np.count_nonzero(labels == cls))
    same_setting = all("(config:" in e.where for _, e in problems) and len({e.problem for _, e in problems}) == 1
    if len(problems) == 1 or same_setting:  # one config value wrong for every stack (a channel index): say it once
        first = problems[0][1]
        more = f" (and {len(problems) - 1} more stack(s) alike)" if len(problems) > 1 else ""
        raise input_error(f"{first.where}{more}", first.problem, first.fix)
    if problems:
        listed = "".join(f"\n  - [{section}] {e.where}: {e.problem}" for section, e in problems)
        raise input_error(f"{len(problems)} training/validation files", f"cannot be used:{listed}",
                          "fix or remove each file listed (the first one's fix: " + problems[0][1].fix + ")")
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and \
        torch.distributed.is_initialized() else 1
    if 0 < len(val) < world:  # each process validates its own stacks, none twice (no padding by repeats)
        raise input_error("datalist: validation", f"{len(val)} validation stack(s) for {world} processes",
                          f"give at least {world} validation stacks, or run on fewer processes")
    if not allow_suspicious_input:
        one_class = [cls for cls in (NEGATIVE, POSITIVE) if found.clicks.get(cls, 0) == 0]
        if one_class:
            missing = "marker-positive" if one_class[0] == POSITIVE else "marker-negative"
            raise input_error("datalist: training", f"no {missing} click among {sum(found.clicks.values())} training "
                              "clicks: the classifier cannot learn to tell positive from negative",
                              "add stacks with both classes (label 1 negative, 2 positive), or pass "
                              "--allow_suspicious_input true to train anyway")
        shared = [v["image"] for v in val if any(_same_file(v["image"], t["image"]) for t in train)]
        if shared:
            raise input_error("datalist", f"{shared[0]} is in both training and validation "
                              f"({len(shared)} stack(s) shared): the validation metric would measure memory",
                              "give validation stacks that are not in training, or pass "
                              "--allow_suspicious_input true")
    return found
