"""Checkpoints that describe themselves: inference rebuilds the network from the file alone.

Today's ``model.pt`` is the network's plain state dict, its description under ``_extra_state``; the older forms
(``{"model": ..., "lecl_model": ...}``, full training checkpoints, plain state dicts without a description such as
MONAI's HoVerNet) still load."""

import pytest
import torch
from monai.networks.nets import HoVerNet

from lecl_transforms import ChannelComposite, LECLInputError
from lecl_transforms.networks import (EXTRA_STATE_KEY, HoVerNetSCL, ModelDescription, convert_checkpoint,
                                      decode_description, encode_description, load_model, load_weights,
                                      read_model_description, save_model)


def trained(width=0.125, patch=64, composite=None, **training):
    """A network as the training builds and describes it (``ModelDescription.of`` attaches the description)."""
    net = HoVerNetSCL(width=width)
    ModelDescription.of(net, patch, composite or ChannelComposite(percentiles=(1, 99)), **training)
    return net


def without_description(state):
    return {k: v for k, v in state.items() if k != EXTRA_STATE_KEY}


def same_outputs(a, b, size=64):
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    a.eval(), b.eval()
    with torch.no_grad():
        expected, got = a(x), b(x)
    assert set(expected) == set(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_model_pt_is_a_plain_state_dict_that_describes_itself(tmp_path):
    net = trained()
    torch.save(net.state_dict(), tmp_path / "model.pt")  # what CheckpointSaver(save_dict={"model": network}) writes
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # MONAI's copy_model_state compares shapes
    stored = decode_description(state[EXTRA_STATE_KEY])
    assert stored["width"] == 0.125 and stored["patch_size"] == 64 and stored["composite"]["percentiles"] == [1, 99]
    assert stored["pixel_size_yx"] is None and stored["np_threshold"] is None  # room for what comes next
    HoVerNetSCL(width=0.125).load_state_dict(state)  # strictly, no key_in_ckpt: the model zoo's ckpt_export
    loaded, description = load_model(tmp_path / "model.pt")
    assert (description.width, description.proj_dim, description.patch_size) == (0.125, 32, 64)
    assert description.composite["percentiles"] == [1.0, 99.0] and description.source == "checkpoint"
    assert ModelDescription.from_network(loaded) == description  # it carries it on: saved again, the same file
    same_outputs(net, loaded)


def test_pixel_size_and_calibrated_threshold_travel_when_given(tmp_path):
    net = trained(pixel_size_yx=(0.5, 0.25), np_threshold=0.6)
    save_model(net, tmp_path / "model.pt")
    description = read_model_description(tmp_path / "model.pt")
    assert description.pixel_size_yx == [0.5, 0.25] and description.np_threshold == 0.6
    with pytest.raises(LECLInputError, match="pixel_size_yx"):
        trained(pixel_size_yx=(0.5, -1))
    with pytest.raises(LECLInputError, match="np_threshold"):
        trained(np_threshold=1.5)
    assert ModelDescription().record(min_volume_um3=20).min_volume_um3 == 20.0
    with pytest.raises(LECLInputError, match="min_volume_um3"):
        ModelDescription().record(min_volume_um3=-5)


def test_description_is_read_without_building_the_network(tmp_path, monkeypatch):
    save_model(trained(), tmp_path / "model.pt")

    def refuse(*args, **kwargs):
        raise AssertionError("read_model_description built a network")

    monkeypatch.setattr(HoVerNetSCL, "__init__", refuse)
    description = read_model_description(tmp_path / "model.pt")
    assert description.width == 0.125 and description.patch_size == 64


def test_the_network_being_trained_keeps_its_description_when_weights_are_loaded(tmp_path):
    """Stage 1 loads the stage-0 model, --resume a checkpoint, init_checkpoint a model trained elsewhere: what the
    next checkpoint records is the running training's description; a network built for inference takes the file's."""
    save_model(trained(patch=128), tmp_path / "stage0.pt")
    training = trained(patch=64)
    training.load_state_dict(torch.load(tmp_path / "stage0.pt", weights_only=True))
    assert ModelDescription.from_network(training).patch_size == 64
    load_weights(training, tmp_path / "stage0.pt")
    assert ModelDescription.from_network(training).patch_size == 64
    bare = ModelDescription(width=0.125, proj_dim=32).network()
    bare.load_state_dict(torch.load(tmp_path / "stage0.pt", weights_only=True))
    assert ModelDescription.from_network(bare).patch_size == 128


def test_given_values_must_agree_with_the_checkpoint(tmp_path):
    save_model(trained(), tmp_path / "model.pt")
    read_model_description(tmp_path / "model.pt", width=0.125, patch_size="null")  # same value, or null: fine
    with pytest.raises(LECLInputError, match=r"config: width.*trained with width 0.125"):
        read_model_description(tmp_path / "model.pt", width=1.0)
    with pytest.raises(LECLInputError, match="patch_size"):
        read_model_description(tmp_path / "model.pt", patch_size=256)


def test_older_lecl_checkpoints_still_load_and_convert(tmp_path):
    """``{"model": weights, "lecl_model": description}`` (model.pt before the description moved into the weights)
    and the full training checkpoints (weights under "model" beside optimizer, trainer...)."""
    net = trained(patch=96)
    old = {"model": without_description(net.state_dict()),
           "lecl_model": {k: v for k, v in ModelDescription.from_network(net).state_dict().items()
                          if k not in ("pixel_size_yx", "np_threshold")}}  # the keys older files have
    torch.save(old, tmp_path / "old.pt")
    torch.save({"model": net.state_dict(), "optimizer": torch.optim.Adam(net.parameters()).state_dict()},
               tmp_path / "checkpoint_epoch=3.pt")
    for name in ("old.pt", "checkpoint_epoch=3.pt"):
        loaded, description = load_model(tmp_path / name)
        assert (description.width, description.patch_size, description.source) == (0.125, 96, "checkpoint")
        same_outputs(net, loaded)
    # older weights load strictly too (resuming a run of before, MONAI Label's strict load): the network keeps its own
    HoVerNetSCL(width=0.125).load_state_dict(old["model"])
    convert_checkpoint(tmp_path / "old.pt", tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    assert "model" not in state and decode_description(state[EXTRA_STATE_KEY])["patch_size"] == 96
    assert all(torch.equal(state[k], v) for k, v in old["model"].items())
    same_outputs(net, load_model(tmp_path / "new.pt")[0])


def test_monai_hovernet_state_dict_loads_with_width_read_from_shapes(tmp_path):
    monai_net = HoVerNet(mode="fast", in_channels=3, out_classes=3, decoder_padding=True)
    torch.save(monai_net.state_dict(), tmp_path / "monai.pt")
    loaded, description = load_model(tmp_path / "monai.pt", patch_size=128)
    assert (description.width, description.proj_dim, description.patch_size) == (1.0, 0, 128)
    assert description.source == "weight shapes"
    assert torch.equal(loaded.state_dict()["conv0.conv.weight"], monai_net.state_dict()["conv0.conv.weight"])


def test_monai_loaders_take_the_file_as_it_is(tmp_path):
    """``monai.bundle.load`` and ``CheckpointLoader(strict_shape=False)`` copy with ``copy_model_state``; the zoo's
    ``ckpt_export`` loads with ignite's ``Checkpoint.load_objects`` and an empty key."""
    from ignite.handlers import Checkpoint
    from monai.networks.utils import copy_model_state

    net = trained()
    save_model(net, tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    copied = ModelDescription(width=0.125, proj_dim=32, patch_size=64).network()
    _, updated, unchanged = copy_model_state(copied, state)
    assert not unchanged
    exported = read_model_description(tmp_path / "model.pt").network()
    Checkpoint.load_objects(to_load={"": exported}, checkpoint=str(tmp_path / "model.pt"))
    for other in (copied, exported):
        same_outputs(net, other)
        assert ModelDescription.from_network(other) == ModelDescription.from_network(net)


def test_bad_checkpoints_are_named_with_a_fix(tmp_path):
    with pytest.raises(LECLInputError, match=r"(?s)model file not found.*--checkpoint"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LECLInputError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "cut.pt")
    torch.save({"model": {"some.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(LECLInputError, match="not a HoVer-Net checkpoint"):
        load_model(tmp_path / "other.pt")
    state = HoVerNetSCL(width=0.25).state_dict()
    state[EXTRA_STATE_KEY] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    torch.save(state, tmp_path / "garbled.pt")
    with pytest.raises(LECLInputError, match="unreadable model description"):
        read_model_description(tmp_path / "garbled.pt")


def test_a_description_that_contradicts_the_weights_is_refused(tmp_path):
    state = HoVerNetSCL(width=0.25).state_dict()
    state[EXTRA_STATE_KEY] = trained(width=0.125).get_extra_state()
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(LECLInputError, match=r"description contradicts its weights: width 0\.125 \(weights: 0\.25\)"):
        read_model_description(tmp_path / "mixed.pt")
    old = {"model": without_description(HoVerNetSCL(width=0.25).state_dict()),
           "lecl_model": ModelDescription.from_network(trained(width=0.125)).state_dict()}
    torch.save(old, tmp_path / "mixed_old.pt")
    with pytest.raises(LECLInputError, match="contradicts its weights"):
        load_model(tmp_path / "mixed_old.pt")
    # loaded by hand into a network of another architecture: the description says what to build
    with pytest.raises(ValueError, match=r"describes another network: decoder_padding False \(this network: True\)"):
        HoVerNetSCL(width=0.125).load_state_dict(HoVerNetSCL(width=0.125, decoder_padding=False).state_dict())
    assert decode_description(encode_description({"patch_size": 8})) == {"patch_size": 8}


def test_init_weights_of_another_width_name_the_widths_to_use(tmp_path):
    """Fine-tuning (``init_checkpoint``) a network built at another width than the checkpoint: the message says which
    width, embedding and patch size to build instead."""
    save_model(trained(width=0.125, patch=128), tmp_path / "model.pt")
    expected = r"(?s)width 0\.125 and proj_dim 32.*width 0\.25.*--width 0\.125 --proj_dim 32 --patch_size 128"
    with pytest.raises(LECLInputError, match=expected):
        load_weights(HoVerNetSCL(width=0.25), tmp_path / "model.pt")
    assert load_weights(HoVerNetSCL(width=0.125), tmp_path / "model.pt") is not None


def test_torchscript_of_a_described_network_ignores_the_description():
    net = trained(pixel_size_yx=(0.5, 0.5)).eval()
    scripted = torch.jit.script(net)
    same_outputs(net, scripted)
    assert EXTRA_STATE_KEY not in scripted.state_dict()
