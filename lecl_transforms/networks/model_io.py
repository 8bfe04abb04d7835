"""A model that knows itself: the values a checkpoint was trained with travel inside it, so inference needs only the
file.

``model.pt`` is the network's plain ``state_dict()``: the weights and one more key, ``_extra_state``, the network's
description (see :mod:`.hovernet_scl`): its architecture and the values of its training that no weight shape shows
(patch size, channel composite, and, when known, the pixel size and calibrated post-processing thresholds). It
loads with ``torch.load(..., weights_only=True)``, strictly into the network the description builds (the MONAI model
zoo's ``ckpt_export`` without ``key_in_ckpt``, MONAI's ``CheckpointLoader``, ``monai.bundle.load``, MONAI Label).

Training gets it by describing its network once (:meth:`ModelDescription.of` attaches the description to the
network), after which a ``CheckpointSaver`` with ``save_dict {"model": network}`` writes a self-describing file.

Older files still load: ignite's multi-entry form ``{"model": state_dict, "lecl_model": description, ...}`` (LECL
checkpoints before the description moved into the weights, and the full training checkpoints, whose ``"model"``
entry is read), and a plain state dict without a description (MONAI's zoo HoVer-Net, an older LECL run), whose
width, embedding size, input channels and classes are read from the weight shapes while the training values no weight
shape shows take the defaults, which the log says. :func:`convert_checkpoint` rewrites an older file in today's form.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..errors import input_error
from ..utils.files import atomic_path
from ..utils.values import POSTPROCESS_VALUE_CHECKS, optional
from .hovernet_scl import (ARCHITECTURE_KEYS, EXTRA_STATE_KEY, HoVerNetSCL, decode_description, encode_description,
                           valid_widths)
from .placement import unwrap_parallel

__all__ = ["ModelDescription", "load_model", "read_model_description", "load_weights", "save_model",
           "convert_checkpoint", "update_description", "DESCRIPTION_KEY", "MODEL_KEY", "EXTRA_STATE_KEY",
           "TRAINING_KEYS"]

#: older files: ignite's multi-entry checkpoint keeps the weights under "model" and the description under "lecl_model"
MODEL_KEY = "model"
DESCRIPTION_KEY = "lecl_model"
#: the description's values that come from the training, not from the network's construction
TRAINING_KEYS = ("patch_size", "composite", "pixel_size_yx", "np_threshold", "min_instance_size", "min_volume_um3",
                 "calibration")
_DEFAULT_COMPOSITE = {"weights": [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], "percentiles": [0.5, 99.8]}
_DEFAULT_PATCH_SIZE = 256
logger = logging.getLogger(__name__)


@dataclass
class ModelDescription:
    """What inference must know about a trained network: its architecture (``width``, ``proj_dim``,
    ``in_channels``, ``out_classes``, ``decoder_padding``), the training patch size (the sliding window), the
    channel composite (``ChannelComposite`` weights and percentiles) the network was trained on, and, optional
    (``None``: not recorded), the ``(y, x)`` pixel size in um of the training images (``pixel_size_yx``), the
    post-processing values calibrated on the validation stacks at the end of training (``np_threshold``, and
    ``min_instance_size`` / ``min_volume_um3`` when they were calibrated too) and the calibration itself
    (``calibration``: the grid's detection F1 curve, see :class:`lecl_transforms.metrics.Calibration`).

    It travels inside the network's ``state_dict()`` (:meth:`attach`); ``state_dict``/``load_state_dict`` give it
    as a plain dict (the ``"lecl_model"`` entry of older checkpoints, the prediction summary)."""

    width: float = 1.0
    proj_dim: int = 256
    patch_size: int = _DEFAULT_PATCH_SIZE
    in_channels: int = 3
    out_classes: int = 3
    decoder_padding: bool = True
    composite: dict = field(default_factory=lambda: dict(_DEFAULT_COMPOSITE))
    pixel_size_yx: list | None = None
    np_threshold: float | None = None
    min_instance_size: int | None = None
    min_volume_um3: float | None = None
    calibration: dict | None = None
    source: str = "checkpoint"  # "checkpoint" (stored with the weights) or "weight shapes" (inferred)

    @classmethod
    def of(cls, network: HoVerNetSCL, patch_size: int, composite=None, pixel_size_yx=None, np_threshold=None,
           ) -> ModelDescription:
        """Describe a network built for training (``composite``: the ``ChannelComposite`` it is trained on;
        ``pixel_size_yx``: the training images' ``(y, x)`` pixel size in um, ``np_threshold``: a calibrated
        nucleus threshold, both optional) and attach the description to it, so that its ``state_dict()`` (what a
        ``CheckpointSaver`` writes) carries it from then on, whatever weights are loaded into it later."""
        network = unwrap_parallel(network)
        comp = dict(_DEFAULT_COMPOSITE) if composite is None else {
            "weights": [[float(v) for v in row] for row in composite.weights],
            "percentiles": [float(p) for p in composite.percentiles]}
        description = cls(**network.architecture(), patch_size=int(patch_size), composite=comp,
                          pixel_size_yx=_pixel_size(pixel_size_yx),
                          np_threshold=_calibrated("np_threshold")(np_threshold))
        description.attach(network, own=True)
        return description

    @classmethod
    def from_network(cls, network: HoVerNetSCL) -> ModelDescription:
        """The description a network carries (what its ``state_dict()`` stores)."""
        network = getattr(network, "module", network)
        description = cls()
        description.load_state_dict(network.description())
        return description

    def training_values(self) -> dict:
        return {k: getattr(self, k) for k in TRAINING_KEYS}

    def record(self, network: HoVerNetSCL | None = None, **values) -> ModelDescription:
        """Set training values learnt after the description was made (``pixel_size_yx``, calibrated
        ``np_threshold``, ``min_instance_size``, ``min_volume_um3``, ``calibration``), checked, and re-attach the
        description to ``network`` (the network being trained: its next ``state_dict()`` carries them). Returns
        itself."""
        unknown = sorted(set(values) - set(TRAINING_KEYS))
        if unknown:
            raise ValueError(f"{unknown} are not training values of a model description ({TRAINING_KEYS})")
        checks = {"pixel_size_yx": _pixel_size, **{key: _calibrated(key) for key in POSTPROCESS_VALUE_CHECKS}}
        for key, value in values.items():
            setattr(self, key, checks.get(key, lambda v: v)(value))
        if network is not None:
            self.attach(network, own=True)
        return self

    def attach(self, network: HoVerNetSCL, own: bool = True) -> HoVerNetSCL:
        """Make ``network``'s ``state_dict()`` carry this description (see ``HoVerNetSCL.describe``); the network
        must have this architecture. Returns the network."""
        network = getattr(network, "module", network)
        theirs = network.architecture()
        wrong = [f"{k} {getattr(self, k)} (network: {theirs[k]})" for k in ARCHITECTURE_KEYS
                 if getattr(self, k) != theirs[k]]
        if wrong:
            raise ValueError("this description is of another network: " + ", ".join(wrong))
        return network.describe(self.training_values(), own=own)

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}

    def load_state_dict(self, state: Mapping) -> None:
        known = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in known and key != "source":
                setattr(self, key, value)

    def network(self) -> HoVerNetSCL:
        """A fresh network of this architecture (random weights) carrying this description (weights loaded into it
        bring their own)."""
        network = HoVerNetSCL(in_channels=self.in_channels, out_classes=self.out_classes, width=self.width,
                              decoder_padding=self.decoder_padding, proj_dim=self.proj_dim)
        return self.attach(network, own=False)


def _pixel_size(value):
    value = optional(value)
    if value is None:
        return None
    try:
        y, x = (float(v) for v in value)
    except (TypeError, ValueError):
        y = x = -1.0
    if not (y > 0 and x > 0):
        raise input_error("config: pixel_size_yx", f"got {value!r}", "give the (y, x) pixel size in um of the "
                          "training images, e.g. [0.5, 0.5], or null when it is not known")
    return [y, x]


def _calibrated(key: str):
    """The check of a calibrated post-processing value a model records (the one check per key), ``null`` allowed."""
    def check(value):
        value = optional(value)
        return None if value is None else POSTPROCESS_VALUE_CHECKS[key](value, f"config: {key}", "or null")
    return check


def _read_checkpoint(path) -> tuple[dict, dict | None]:
    """``(state dict, stored description or None)`` of any of the formats the module docstring lists."""
    path = Path(path)
    if not path.is_file():
        raise input_error(f"checkpoint {path}", "model file not found",
                          "train a model first (python -m monai.bundle run training ...), or give the path of a "
                          "trained model with --checkpoint PATH (lecl predict: --model PATH)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise input_error(f"checkpoint {path}", f"is not a readable PyTorch checkpoint ({type(e).__name__}: {e})",
                          "give the model.pt written by the LECL training (copy it again if it was cut short)") from e
    if not isinstance(content, Mapping):
        raise input_error(f"checkpoint {path}", f"holds a {type(content).__name__}, not a state dict",
                          "give the model.pt written by the LECL training")
    stored = None
    if MODEL_KEY in content and isinstance(content[MODEL_KEY], Mapping):  # ignite's multi-entry checkpoint
        state = dict(content[MODEL_KEY])
        if isinstance(content.get(DESCRIPTION_KEY), Mapping):
            stored = dict(content[DESCRIPTION_KEY])
    else:
        state = dict(content)
    if EXTRA_STATE_KEY in state:  # the description inside the weights wins over an older "lecl_model" entry
        try:
            stored = decode_description(state[EXTRA_STATE_KEY])
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise input_error(f"checkpoint {path}", f"has an unreadable model description ({EXTRA_STATE_KEY}: {e})",
                              "give the model.pt written by the LECL training (copy it again if it was damaged)"
                              ) from e
    return state, stored


def _describe_from_shapes(state: Mapping, path) -> ModelDescription:
    conv0 = state.get("conv0.conv.weight")
    head = state.get("type_prediction.output_features.decoderblock4.conv.weight")
    if conv0 is None or head is None:
        raise input_error(f"checkpoint {path}", "is not a HoVer-Net checkpoint (no conv0 / type_prediction weights)",
                          "give a model.pt written by the LECL training or a MONAI HoVerNet state dict")
    width = conv0.shape[0] / 64
    if width not in valid_widths():
        raise input_error(f"checkpoint {path}", f"has a first layer of {conv0.shape[0]} channels (width {width})",
                          f"give a checkpoint of a HoVerNetSCL of width {valid_widths()}")
    proj = state.get("projection_head.proj.0.weight")
    return ModelDescription(width=width, proj_dim=int(proj.shape[0]) if proj is not None else 0,
                            in_channels=int(conv0.shape[1]), out_classes=int(head.shape[0]), source="weight shapes")


def _check_against_weights(described: ModelDescription, shapes: ModelDescription, path) -> None:
    """A stored description that contradicts the weights (a file assembled by hand, or damaged) is refused here,
    before any network is built."""
    wrong = []
    for key in ("width", "in_channels", "out_classes", "proj_dim"):
        said, seen = getattr(described, key), getattr(shapes, key)
        if key == "proj_dim" and said == 0 and seen in (0, 1):  # proj_dim 0 keeps a 1-channel head
            continue
        if said is None or float(said) != float(seen):
            wrong.append(f"{key} {said} (weights: {seen})")
    if wrong:
        raise input_error(f"checkpoint {path}",
                          "its model description contradicts its weights: " + ", ".join(wrong),
                          "the file was assembled from parts of different models or damaged: use the model.pt the "
                          "LECL training wrote (or convert_checkpoint of it)")


def read_model_description(checkpoint, width=None, proj_dim=None, patch_size=None) -> ModelDescription:
    """The description stored in ``checkpoint`` (or read from its weight shapes), read without building the
    network. ``width``, ``proj_dim`` and ``patch_size`` given by the user (not ``None``) must agree with a stored
    description; where the file does not record a patch size, a given ``patch_size`` replaces the default."""

    state, stored = _read_checkpoint(checkpoint)
    given = {"width": optional(width), "proj_dim": optional(proj_dim), "patch_size": optional(patch_size)}
    shapes = _describe_from_shapes(state, checkpoint)
    if stored is not None:
        description = ModelDescription()
        description.load_state_dict(stored)
        _check_against_weights(description, shapes, checkpoint)
        assumed = []  # a network saved without ModelDescription.of: its architecture only
        if description.patch_size is None:
            description.patch_size = int(given["patch_size"] or _DEFAULT_PATCH_SIZE)
            assumed.append(f"patch size {description.patch_size}" + (" (given)" if given["patch_size"] else ""))
            given["patch_size"] = None
        if not description.composite:
            description.composite = dict(_DEFAULT_COMPOSITE)
            assumed.append("the default channel composite")
        if assumed:
            logger.warning(f"{checkpoint} records its architecture but not its training: {' and '.join(assumed)} "
                           "assumed (set patch_size if the network was trained on other patches)")
    else:
        description = shapes
        if given["patch_size"] is not None:
            description.patch_size = int(given["patch_size"])
        logger.warning(
            f"{checkpoint} stores no LECL model description: width {description.width} and embedding size "
            f"{description.proj_dim} are read from the weight shapes; patch size {description.patch_size} and the "
            f"default channel composite are assumed (set patch_size if the network was trained on other patches)")
    for key, value in given.items():
        if value is not None and float(value) != float(getattr(description, key)):
            raise input_error(
                f"config: {key} (checkpoint {checkpoint})",
                f"{key} {value} was given but the model was trained with {key} {getattr(description, key)}",
                f"leave {key} out (null): the checkpoint says what it was trained with")
    return description


def load_weights(network: torch.nn.Module, checkpoint) -> torch.nn.Module:
    """Load ``checkpoint``'s weights into ``network`` (built from its description); a checkpoint of another
    architecture is a clear error. The projection head may be absent (MONAI HoVerNet weights). A network that is
    being trained (described by :meth:`ModelDescription.of`) keeps its description; any other takes the file's."""
    state, description = _read_checkpoint(checkpoint)
    own = getattr(network, "width", None), getattr(network, "proj_dim", None)
    if description and own[0] is not None and (description.get("width"), description.get("proj_dim")) != own:
        raise input_error(f"checkpoint {checkpoint}",
                          f"was trained with width {description.get('width')} and proj_dim "
                          f"{description.get('proj_dim')}, this network has width {own[0]} and proj_dim {own[1]}",
                          f"build the network as the checkpoint (e.g. --width {description.get('width')} --proj_dim "
                          f"{description.get('proj_dim')} --patch_size {description.get('patch_size')}), or give "
                          "another checkpoint")
    if not hasattr(network, "describe"):  # not a HoVerNetSCL (e.g. MONAI's HoVerNet): weights only
        state.pop(EXTRA_STATE_KEY, None)
    elif description and EXTRA_STATE_KEY not in state:  # older file: its "lecl_model" entry goes with the weights
        state[EXTRA_STATE_KEY] = encode_description({**dict.fromkeys(TRAINING_KEYS), **description})
    _check_shapes(network, state, checkpoint)
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except ValueError as e:  # the stored description is of another network (HoVerNetSCL.set_extra_state)
        raise input_error(f"checkpoint {checkpoint}", str(e), "give a checkpoint of this architecture") from e
    missing = [k for k in missing if not k.startswith("projection_head.") and k != EXTRA_STATE_KEY]
    if missing or unexpected:
        raise input_error(f"checkpoint {checkpoint}",
                          f"does not fit the network: missing {missing[:3]}, unexpected {unexpected[:3]}",
                          "give a model.pt written by the LECL training (or a MONAI HoVerNet state dict)")
    return network


def _check_shapes(network, state: Mapping, checkpoint) -> None:
    own = network.state_dict()
    wrong = [k for k, v in state.items()
             if k in own and k != EXTRA_STATE_KEY and tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise input_error(f"checkpoint {checkpoint}",
                          f"weights of another shape than the described network (e.g. {wrong[0]}: "
                          f"{tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})",
                          "give a checkpoint written together with its description by the LECL training")


def load_model(checkpoint, device: str | torch.device = "cpu", width=None, proj_dim=None, patch_size=None,
               ) -> tuple[HoVerNetSCL, ModelDescription]:
    """``(network in eval mode on device, description)`` from a checkpoint alone (see module docstring)."""
    description = read_model_description(checkpoint, width, proj_dim, patch_size)
    network = load_weights(description.network(), checkpoint)
    return network.to(device).eval(), description


def save_model(network: HoVerNetSCL, path) -> Path:
    """Write ``network``'s self-describing state dict to ``path`` (atomically), the form ``model.pt`` has."""
    network = getattr(network, "module", network)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    return path


def update_description(path, **values) -> ModelDescription:
    """Record training ``values`` (see :meth:`ModelDescription.record`) in the description a checkpoint file
    carries, its weights unchanged: today's plain state dict, or the ``"model"`` entry of a full training checkpoint
    (``model_final.pt``, ``checkpoint_epoch=N.pt``). The file is replaced atomically. Returns the new description."""
    path = Path(path)
    content = torch.load(path, map_location="cpu", weights_only=True)
    state = content[MODEL_KEY] if isinstance(content.get(MODEL_KEY), Mapping) else content
    if EXTRA_STATE_KEY not in state:
        raise input_error(f"checkpoint {path}", "carries no model description to update",
                          "convert it first: lecl_transforms.networks.convert_checkpoint(path)")
    description = ModelDescription()
    description.load_state_dict(decode_description(state[EXTRA_STATE_KEY]))
    description.record(**values)
    state[EXTRA_STATE_KEY] = encode_description({**decode_description(state[EXTRA_STATE_KEY]),
                                                 **{k: getattr(description, k) for k in values}})
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return description


def convert_checkpoint(source, target=None, patch_size=None) -> ModelDescription:
    """Rewrite a checkpoint of an older form (``{"model": ..., "lecl_model": ...}``, a full training checkpoint, a
    plain state dict without description; ``patch_size`` for the last, which does not record one) as today's
    self-describing ``model.pt``: the same weights and description, loadable without ``key_in_ckpt``. ``target``
    defaults to ``source`` (replaced only once the new file is written and read back)."""
    network, description = load_model(source, patch_size=patch_size)
    target = Path(source if target is None else target)
    with atomic_path(target) as tmp:
        torch.save(network.state_dict(), tmp)
        again = read_model_description(tmp)
        if again.state_dict() != description.state_dict():
            raise RuntimeError(f"converting {source}: the description read back differs ({again} vs {description})")
    return description
