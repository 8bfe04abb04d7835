"""A model that knows itself: the values a checkpoint was trained with travel inside it, so inference needs only the
file.

Training saves ``{"model": state_dict, "lecl_model": ModelDescription.state_dict(), ...}`` (ignite's checkpoint
format with more than one entry, which MONAI's ``CheckpointLoader`` and MONAI Label both read by the ``"model"``
key). :func:`load_model` rebuilds the network from the description; a plain state dict (no description, e.g.
MONAI's zoo HoVer-Net or an older LECL run) still loads: width, embedding size, input channels and classes are
read from the weight shapes, and the training values no weight shape shows (patch size, composite) take the
defaults, which the log says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
import torch

from ..errors import input_error
from ..utils.values import optional
from .hovernet_scl import HoVerNetSCL, valid_widths

__all__ = ["ModelDescription", "load_model", "read_model_description", "load_weights", "DESCRIPTION_KEY",
           "MODEL_KEY"]

MODEL_KEY = "model"
DESCRIPTION_KEY = "lecl_model"
_DEFAULT_COMPOSITE = {"weights": [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], "percentiles": [0.5, 99.8]}
logger = logging.getLogger(__name__)


@dataclass
class ModelDescription:
    """What inference must know about a trained network: its architecture (``width``, ``proj_dim``,
    ``in_channels``, ``out_classes``, ``decoder_padding``), the training patch size (the sliding window) and the
    channel composite (``ChannelComposite`` weights and percentiles) the network was trained on.

    It has ``state_dict``/``load_state_dict``, so ``CheckpointSaver`` stores it beside the weights."""

    width: float = 1.0
    proj_dim: int = 256
    patch_size: int = 256
    in_channels: int = 3
    out_classes: int = 3
    decoder_padding: bool = True
    composite: dict = field(default_factory=lambda: dict(_DEFAULT_COMPOSITE))
    source: str = "checkpoint"  # "checkpoint" (stored with the weights) or "weight shapes" (inferred)

    @classmethod
    def of(cls, network: HoVerNetSCL, patch_size: int, composite=None) -> ModelDescription:
        """Describe a network built for training (``composite``: the ``ChannelComposite`` it is trained on)."""
        network = getattr(network, "module", network)  # DistributedDataParallel
        conv0 = network.conv0.conv
        comp = dict(_DEFAULT_COMPOSITE) if composite is None else {
            "weights": [[float(v) for v in row] for row in composite.weights],
            "percentiles": [float(p) for p in composite.percentiles]}
        return cls(width=float(network.width), proj_dim=int(network.proj_dim), patch_size=int(patch_size),
                   in_channels=int(conv0.in_channels), out_classes=int(_type_head(network).out_channels),
                   decoder_padding=bool(network.decoder_padding), composite=comp)

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}

    def load_state_dict(self, state: Mapping) -> None:
        known = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in known:
                setattr(self, key, value)

    def network(self) -> HoVerNetSCL:
        """A fresh network of this architecture (random weights)."""
        return HoVerNetSCL(in_channels=self.in_channels, out_classes=self.out_classes, width=self.width,
                           decoder_padding=self.decoder_padding, proj_dim=self.proj_dim)


def _type_head(network) -> torch.nn.Conv2d:
    return network.type_prediction.output_features.decoderblock4.conv


def _read_checkpoint(path) -> tuple[dict, dict | None]:
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
    if MODEL_KEY in content and isinstance(content[MODEL_KEY], Mapping):
        return dict(content[MODEL_KEY]), content.get(DESCRIPTION_KEY)
    return dict(content), None


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


def read_model_description(checkpoint, width=None, proj_dim=None, patch_size=None) -> ModelDescription:
    """The description stored in ``checkpoint`` (or read from its weight shapes). ``width``, ``proj_dim`` and
    ``patch_size`` given by the user (not ``None``) must agree with a stored description; for a checkpoint
    without one, a given ``patch_size`` replaces the default."""

    state, stored = _read_checkpoint(checkpoint)
    given = {"width": optional(width), "proj_dim": optional(proj_dim), "patch_size": optional(patch_size)}
    if stored is not None:
        description = ModelDescription()
        description.load_state_dict(stored)
    else:
        description = _describe_from_shapes(state, checkpoint)
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
    architecture is a clear error. The projection head may be absent (MONAI HoVerNet weights)."""
    state, description = _read_checkpoint(checkpoint)
    own = getattr(network, "width", None), getattr(network, "proj_dim", None)
    if description and own[0] is not None and (description.get("width"), description.get("proj_dim")) != own:
        raise input_error(f"checkpoint {checkpoint}",
                          f"was trained with width {description.get('width')} and proj_dim "
                          f"{description.get('proj_dim')}, this network has width {own[0]} and proj_dim {own[1]}",
                          f"build the network as the checkpoint (e.g. --width {description.get('width')} --proj_dim "
                          f"{description.get('proj_dim')} --patch_size {description.get('patch_size')}), or give "
                          "another checkpoint")
    _check_shapes(network, state, checkpoint)
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("projection_head.")]
    if missing or unexpected:
        raise input_error(f"checkpoint {checkpoint}",
                          f"does not fit the network: missing {missing[:3]}, unexpected {unexpected[:3]}",
                          "give a model.pt written by the LECL training (or a MONAI HoVerNet state dict)")
    return network


def _check_shapes(network, state: Mapping, checkpoint) -> None:
    own = network.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
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

