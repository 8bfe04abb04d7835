"""HoVer-Net ("fast" mode) with LECL's projection head on the type branch, at full or compact width.

Module names mirror ``monai.networks.nets.HoVerNet`` exactly, so at ``width=1`` the state dicts are interchangeable
(the projection head's keys and ``_extra_state`` aside). The blocks are re-stated here with MONAI's math and layer
names, built from MONAI's public layer factories: MONAI's own block classes are private (``_DecoderBlock``...), and its
encoder decides where to downsample by testing ``in_channels == 64``, which breaks once widths are scaled.

The network describes itself in its ``state_dict()``: one key, ``_extra_state`` (PyTorch's ``get_extra_state``),
holds its architecture (width, embedding size, channels, decoder padding) and the values of the training its
weights come from that no weight shape shows (patch size, channel composite, pixel size, calibrated thresholds),
as JSON text in a ``uint8`` tensor. A tensor, not a dict: it loads with ``torch.load(..., weights_only=True)`` and
passes every MONAI loader unchanged, including ``copy_model_state`` (``monai.bundle.load``, ``CheckpointLoader``
with ``strict_shape=False``), which compares ``.shape`` of every entry. So ``model.pt`` is a plain state dict that
``load_state_dict`` takes strictly (the model zoo's ``ckpt_export`` without ``key_in_ckpt``), and TorchScript
ignores it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UpSample
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.utils.enums import HoVerNetBranch, InterpolateMode, UpsampleMode

__all__ = ["HoVerNetSCL", "ProjectionHead", "EMBEDDING_KEY", "ENCODER_PREFIXES", "EXTRA_STATE_KEY", "ARCHITECTURE_KEYS",
           "valid_widths", "default_proj_dim", "encode_description", "decode_description"]

EMBEDDING_KEY = "embedding"
ENCODER_PREFIXES = ("conv0.", "res_blocks.")
#: the ``state_dict`` key of the network's description (PyTorch's name for a module's extra state)
EXTRA_STATE_KEY = "_extra_state"
#: the description's values that the network's own construction fixes (checked when a state dict is loaded)
ARCHITECTURE_KEYS = ("width", "proj_dim", "in_channels", "out_classes", "decoder_padding")
#: version of the description's layout, stored with it as ``"lecl_model_format"``
DESCRIPTION_FORMAT = 1
_FORMAT_KEY = "lecl_model_format"
_ACT = ("relu", {"inplace": True})


def encode_description(values: Mapping) -> torch.Tensor:
    """A description (JSON-able values) as the ``uint8`` tensor of its JSON text, the form stored in a state dict."""
    text = json.dumps({_FORMAT_KEY: DESCRIPTION_FORMAT, **values}, sort_keys=True)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def decode_description(stored) -> dict:
    """The values of a stored description: the tensor :func:`encode_description` makes (or its bytes, or a dict)."""
    if isinstance(stored, Mapping):
        values = dict(stored)
    else:
        raw = bytes(stored.detach().cpu().to(torch.uint8).tolist()) if isinstance(stored, torch.Tensor) else stored
        values = json.loads(bytes(raw).decode("utf-8"))
        if not isinstance(values, dict):
            raise ValueError(f"a stored network description must be a JSON object, got {type(values).__name__}")
    values.pop(_FORMAT_KEY, None)
    return values


def _same(key: str, a, b) -> bool:
    if key == "width":
        return float(a) == float(b)
    if key == "decoder_padding":
        return bool(a) == bool(b)
    return int(a) == int(b)


def default_proj_dim(width: float) -> int:
    """Embedding size that goes with a width: the paper's 256 scaled like the other channels."""
    return int(round(256 * float(width)))


def valid_widths() -> tuple[float, ...]:
    """Width multipliers that keep every channel count whole and the grouped decoder convs divisible by 4."""
    return (1.0, 0.5, 0.25, 0.125)


def _batch_norm_relu(channels: int) -> nn.Sequential:
    """Batch norm then ReLU, named ``bn``/``relu`` (MONAI HoVerNet's ``_Transition``)."""
    return nn.Sequential(OrderedDict([("bn", get_norm_layer("batch", 2, channels)), ("relu", get_act_layer(_ACT))]))


class _EncoderLayer(nn.Module):
    """Pre-activation bottleneck layer (MONAI ``_DenseLayer``), downsampling stated explicitly."""

    def __init__(self, num_features: int, in_channels: int, out_channels: int, first: bool, downsample: bool):
        super().__init__()
        self.layers = nn.Sequential()
        if not first:
            self.layers.add_module("preact/bn", get_norm_layer("batch", 2, in_channels))
            self.layers.add_module("preact/relu", get_act_layer(_ACT))
        self.layers.add_module("conv1", nn.Conv2d(in_channels, num_features, 1, bias=False))
        self.layers.add_module("conv1/bn", get_norm_layer("batch", 2, num_features))
        self.layers.add_module("conv1/relu", get_act_layer(_ACT))
        if downsample:
            conv2 = nn.Conv2d(num_features, num_features, 3, stride=2, padding=2, bias=False)
        else:
            conv2 = nn.Conv2d(num_features, num_features, 3, padding=1, bias=False)
        self.layers.add_module("conv2", conv2)
        self.layers.add_module("conv2/bn", get_norm_layer("batch", 2, num_features))
        self.layers.add_module("conv2/relu", get_act_layer(_ACT))
        self.layers.add_module("conv3", nn.Conv2d(num_features, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _ResidualBlock(nn.Module):
    """Residual stage of the pre-activation ResNet-50 encoder (MONAI ``_ResidualBlock``)."""

    def __init__(self, layers: int, num_features: int, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        if downsample:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, padding=1, bias=False)
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.downsample = downsample
        self.layers = nn.Sequential()
        self.layers.add_module("denselayer_0", _EncoderLayer(num_features, in_channels, out_channels, True, downsample))
        for i in range(1, layers):
            self.layers.add_module(f"denselayer_{i}",
                                   _EncoderLayer(num_features, out_channels, out_channels, False, False))
        self.bna_block = _batch_norm_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = self.shortcut(x)
        if self.downsample:
            sc = sc[:, :, :-1, :-1]
        for layer in self.layers:
            x = layer(x)
            if x.shape[-2:] != sc.shape[-2:]:
                x = x[:, :, :-1, :-1]
            x = x + sc
            sc = x
        return self.bna_block(x)


class _DecoderDenseLayer(nn.Module):
    """Dense layer of a decoder block (MONAI ``_DenseLayerDecoder``): pre-activation 1x1 conv, then a grouped conv
    whose output is concatenated to the (centre-cropped, without padding) input."""

    def __init__(self, num_features: int, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        super().__init__()
        self.layers = nn.Sequential(OrderedDict([
            ("preact_bna/bn", get_norm_layer("batch", 2, in_channels)),
            ("preact_bna/relu", get_act_layer(_ACT)),
            ("conv1", nn.Conv2d(in_channels, num_features, 1, bias=False)),
            ("conv1/norm", get_norm_layer("batch", 2, num_features)),
            ("conv1/relu2", get_act_layer(_ACT)),
            ("conv2", nn.Conv2d(num_features, out_channels, kernel_size, padding=padding, groups=4, bias=False)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.layers(x)
        if new.shape[-1] != x.shape[-1]:
            trim = (x.shape[-1] - new.shape[-1]) // 2
            x = x[:, :, trim:-trim, trim:-trim]
        return torch.cat([x, new], 1)


def _decoder_block(layers: int, num_features: int, in_channels: int, out_channels: int, kernel_size: int,
                   same_padding: bool) -> nn.Sequential:
    """Decoder block (MONAI ``_DecoderBlock``): conv to a quarter of the channels, ``layers`` dense layers, batch norm
    + ReLU, 1x1 conv."""
    padding = kernel_size // 2 if same_padding else 0
    block = nn.Sequential()
    block.add_module("conva", nn.Conv2d(in_channels, in_channels // 4, kernel_size, padding=padding, bias=False))
    channels = in_channels // 4
    for i in range(layers):
        block.add_module(f"denselayerdecoder{i + 1}",
                         _DecoderDenseLayer(num_features, channels, out_channels, kernel_size, padding))
        channels += out_channels
    block.add_module("bna_block", _batch_norm_relu(channels))
    block.add_module("convf", nn.Conv2d(channels, channels, 1, bias=False))
    return block


class _DecoderBranch(nn.Module):
    """One decoder branch (MONAI ``_DecoderBranch``) that also returns its 64-channel feature before the head."""

    def __init__(self, width: float, out_channels: int, kernel_size: int, same_padding: bool):
        super().__init__()
        w = lambda c: int(round(c * width))  # noqa: E731
        self.decoder_blocks = nn.Sequential()
        in_channels = w(1024)
        for i, layers in enumerate((8, 4)):
            self.decoder_blocks.add_module(
                f"decoderblock{i + 1}",
                _decoder_block(layers=layers, num_features=w(128), in_channels=in_channels, out_channels=w(32),
                               kernel_size=kernel_size, same_padding=same_padding),
            )
            in_channels = w(512)
        pad = (kernel_size - 1) // 2
        self.output_features = nn.Sequential()
        self.output_features.add_module("decoderblock3", nn.Sequential(OrderedDict(
            [("conva", nn.Conv2d(w(256), w(64), kernel_size, stride=1, bias=False, padding=pad))])))
        self.output_features.add_module("decoderblock4", nn.Sequential(OrderedDict([
            ("bn", get_norm_layer("batch", 2, w(64))),
            ("relu", get_act_layer(_ACT)),
            ("conv", nn.Conv2d(w(64), out_channels, 1, stride=1)),
        ])))
        self.upsample = UpSample(2, scale_factor=2, mode=UpsampleMode.NONTRAINABLE,
                                 interp_mode=InterpolateMode.BILINEAR, bias=False)

    def forward(self, xin: torch.Tensor, short_cuts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        block_number = len(short_cuts) - 1
        x = xin + short_cuts[block_number]
        for block in self.decoder_blocks:
            x = block(x)
            x = self.upsample(x)
            block_number -= 1
            trim = (short_cuts[block_number].shape[-1] - x.shape[-1]) // 2
            if trim > 0:
                x = x + short_cuts[block_number][:, :, trim:-trim, trim:-trim]
            else:
                x = x + short_cuts[block_number]
        feature = self.output_features[0](x)
        return self.output_features[1](feature), feature


class ProjectionHead(nn.Module):
    """LECL projection head: Conv1x1 -> BN -> ReLU -> Conv1x1, then L2-normalised per pixel (Wang et al. 2021)."""

    def __init__(self, in_channels: int = 64, proj_dim: int = 256):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, proj_dim, 1), nn.BatchNorm2d(proj_dim), nn.ReLU(inplace=True),
            nn.Conv2d(proj_dim, proj_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), p=2.0, dim=1)


class HoVerNetSCL(nn.Module):
    """HoVer-Net "fast" with a supervised-contrast projection head on the NC branch (LECL).

    Input ``(B, in_channels, H, W)``. Output dict: ``nucleus_prediction`` ``(B, 2, H', W')``,
    ``horizontal_vertical`` ``(B, 2, H', W')``, ``type_prediction`` ``(B, out_classes, H', W')`` logits, and, in
    training mode only, ``embedding`` ``(B, proj_dim, H', W')`` (unit vectors per pixel). With ``decoder_padding``
    (default) ``H' = H`` and any ``H, W`` that are multiples of 8 work; without it the decoder's valid convolutions
    give MONAI's 256 -> 164 and need ``H, W`` of at least 96.

    Args:
        width: channel-width multiplier, one of :func:`valid_widths`; ``1`` is MONAI's HoVerNet (state dicts load
            both ways), ``0.25``/``0.125`` are the compact widths for CPUs.
        freeze_encoder: stage 1 of LECL training: encoder weights get no gradient.
        proj_dim: embedding size of the projection head; default ``256 * width`` (the paper's 256 at full width,
            scaled like every other width so the head does not dominate a compact network); ``0`` drops the head.
    """

    def __init__(self, in_channels: int = 3, out_classes: int = 3, width: float = 1.0, decoder_padding: bool = True,
                 freeze_encoder: bool = False, proj_dim: int | None = None, np_out_channels: int = 2):
        super().__init__()
        if float(width) not in valid_widths():
            raise ValueError(f"width={width} is not supported: use one of {valid_widths()} "
                             "(1 = MONAI's HoVerNet, smaller = compact)")
        if out_classes < 2:
            raise ValueError(f"out_classes={out_classes}: LECL needs background + at least one nucleus type")
        self.width, self.decoder_padding = float(width), bool(decoder_padding)
        w = lambda c: int(round(c * width))  # noqa: E731
        self.conv0 = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, w(64), kernel_size=7, stride=1, padding=3, bias=False)),
            ("bn", get_norm_layer("batch", 2, w(64))),
            ("relu", get_act_layer(_ACT)),
        ]))
        self.res_blocks = nn.Sequential()
        in_ch, out_ch, features = w(64), w(256), w(64)
        for i, layers in enumerate((3, 4, 6, 3)):
            self.res_blocks.add_module(f"d{i}", _ResidualBlock(layers, features, in_ch, out_ch, downsample=i > 0))
            in_ch, out_ch, features = out_ch, out_ch * 2, features * 2
        self.bottleneck = nn.Sequential()
        self.bottleneck.add_module("conv_bottleneck", nn.Conv2d(in_ch, features, 1, stride=1, padding=0, bias=False))
        self.upsample = UpSample(2, scale_factor=2, mode=UpsampleMode.NONTRAINABLE,
                                 interp_mode=InterpolateMode.BILINEAR, bias=False)
        self.nucleus_prediction = _DecoderBranch(width, np_out_channels, 3, decoder_padding)
        self.horizontal_vertical = _DecoderBranch(width, 2, 3, decoder_padding)
        self.type_prediction = _DecoderBranch(width, out_classes, 3, decoder_padding)
        if proj_dim is None:
            proj_dim = default_proj_dim(width)
        self.proj_dim = int(proj_dim)
        self.return_embedding = proj_dim > 0
        self.projection_head = ProjectionHead(w(64), max(proj_dim, 1))
        #: values of the training these weights come from that no weight shape shows (patch size, composite...)
        self.trained_with: dict = {}
        self._keep_trained_with = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.freeze_encoder(freeze_encoder)

    def architecture(self) -> dict:
        """The values its construction fixes (:data:`ARCHITECTURE_KEYS`), read from the layers."""
        return {"width": self.width, "proj_dim": self.proj_dim, "in_channels": int(self.conv0.conv.in_channels),
                "out_classes": int(self.type_prediction.output_features.decoderblock4.conv.out_channels),
                "decoder_padding": self.decoder_padding}

    def describe(self, trained_with: Mapping, own: bool = True) -> HoVerNetSCL:
        """Attach the values of the training (JSON-able: ``patch_size``, ``composite``, ``pixel_size_yx``,
        ``np_threshold``, ...); they travel in ``state_dict()``. ``own=True``: this network is being trained with
        them, so weights loaded into it later (stage-0 model, resume, ``init_checkpoint``) keep them;
        ``own=False``: the next loaded state dict's values replace them. Returns the network."""
        clash = sorted(set(trained_with) & {*ARCHITECTURE_KEYS, _FORMAT_KEY})
        if clash:
            raise ValueError(f"{clash} are fixed by the network's construction, not training values")
        json.dumps(dict(trained_with))  # JSON-able, or a TypeError now rather than at the first save
        self.trained_with, self._keep_trained_with = dict(trained_with), bool(own)
        return self

    def description(self) -> dict:
        """Architecture and training values, as stored under ``_extra_state``."""
        return {**self.trained_with, **self.architecture()}

    def get_extra_state(self) -> torch.Tensor:
        return encode_description(self.description())

    def set_extra_state(self, state) -> None:
        values = decode_description(state)
        own = self.architecture()
        wrong = [f"{k} {values[k]} (this network: {own[k]})" for k in ARCHITECTURE_KEYS
                 if values.get(k) is not None and not _same(k, values[k], own[k])]
        if wrong:
            raise ValueError("the state dict describes another network: " + ", ".join(wrong)
                             + "; build the network as described (lecl_transforms.networks.load_model does)")
        if not self._keep_trained_with:
            self.trained_with = {k: v for k, v in values.items() if k not in ARCHITECTURE_KEYS}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # weights saved without a description (older LECL checkpoints, MONAI's HoVerNet) load strictly too: the
        # network keeps its own description (resuming an older run, MONAI Label's strict load)
        if prefix + EXTRA_STATE_KEY in missing_keys:
            missing_keys.remove(prefix + EXTRA_STATE_KEY)

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients into the encoder (``conv0`` and ``res_blocks``)."""
        for module in (self.conv0, self.res_blocks):
            module.requires_grad_(not frozen)

    def min_input_size(self) -> int:
        return 8 if self.decoder_padding else 96

    def check_input_size(self, size) -> None:
        """Raise a clear error for a patch size this network cannot take."""
        for s in (size if isinstance(size, (list, tuple)) else (size, size)):
            if int(s) % 8 or int(s) < self.min_input_size():
                raise ValueError(
                    f"patch size {size} cannot be taken by the network: each side must be a multiple of 8 and at least "
                    f"{self.min_input_size()} (e.g. 128 or 256)"
                )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 8 != 0 or x.shape[-2] % 8 != 0:
            raise ValueError("HoVerNetSCL input height and width must be multiples of 8")
        x = self.conv0(x)
        short_cuts: list[torch.Tensor] = []
        for i, block in enumerate(self.res_blocks):
            x = block(x)
            if i <= 2:
                short_cuts.append(x)
        x = self.upsample(self.bottleneck(x))
        # keys by HoVerNetBranch's .value (plain str, as MONAI's HoVerNet does: TorchScript resolves enum values)
        out: dict[str, torch.Tensor] = {}
        out[HoVerNetBranch.NP.value] = self.nucleus_prediction(x, short_cuts)[0]
        out[HoVerNetBranch.HV.value] = self.horizontal_vertical(x, short_cuts)[0]
        logits, feature = self.type_prediction(x, short_cuts)
        out[HoVerNetBranch.NC.value] = logits
        if self.training and self.return_embedding:
            # EMBEDDING_KEY as a literal: TorchScript cannot read a module-level str
            out["embedding"] = self.projection_head(feature)
        return out

    def load_monai_hovernet(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Load weights of a ``monai.networks.nets.HoVerNet`` (or any matching subset); returns the keys not loaded
        (the projection head's, and any whose shape differs)."""
        own = self.state_dict()
        usable = {k: v for k, v in state_dict.items()
                  if k in own and k != EXTRA_STATE_KEY and own[k].shape == v.shape}
        own.update(usable)
        self.load_state_dict(own)
        return sorted(set(own) - set(usable) - {EXTRA_STATE_KEY})
