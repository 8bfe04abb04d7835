"""Checkpoints that describe themselves: inference rebuilds the network from the file alone."""

import pytest
import torch
from monai.networks.nets import HoVerNet

from lecl_transforms import ChannelComposite, LECLInputError
from lecl_transforms.networks import HoVerNetSCL, ModelDescription, load_model, read_model_description


def save_described(path, width=0.125, patch=64, composite=None):
    net = HoVerNetSCL(width=width)
    description = ModelDescription.of(net, patch, composite or ChannelComposite(percentiles=(1, 99)))
    torch.save({"model": net.state_dict(), "lecl_model": description.state_dict()}, path)
    return net


def test_described_checkpoint_loads_without_restating_anything(tmp_path):
    net = save_described(tmp_path / "model.pt")
    loaded, description = load_model(tmp_path / "model.pt")
    assert (description.width, description.proj_dim, description.patch_size) == (0.125, 32, 64)
    assert description.composite["percentiles"] == [1.0, 99.0] and description.source == "checkpoint"
    x = torch.rand(1, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        expected, got = net(x), loaded(x)
    for key in expected:
        assert torch.allclose(expected[key], got[key])


def test_given_values_must_agree_with_the_checkpoint(tmp_path):
    save_described(tmp_path / "model.pt")
    read_model_description(tmp_path / "model.pt", width=0.125, patch_size="null")  # same value, or null: fine
    with pytest.raises(LECLInputError, match=r"config: width.*trained with width 0.125"):
        read_model_description(tmp_path / "model.pt", width=1.0)
    with pytest.raises(LECLInputError, match="patch_size"):
        read_model_description(tmp_path / "model.pt", patch_size=256)


def test_monai_hovernet_state_dict_loads_with_width_read_from_shapes(tmp_path):
    monai_net = HoVerNet(mode="fast", in_channels=3, out_classes=3, decoder_padding=True)
    torch.save(monai_net.state_dict(), tmp_path / "monai.pt")
    loaded, description = load_model(tmp_path / "monai.pt", patch_size=128)
    assert (description.width, description.proj_dim, description.patch_size) == (1.0, 0, 128)
    assert description.source == "weight shapes"
    assert torch.equal(loaded.state_dict()["conv0.conv.weight"], monai_net.state_dict()["conv0.conv.weight"])


def test_bad_checkpoints_are_named_with_a_fix(tmp_path):
    with pytest.raises(LECLInputError, match=r"(?s)model file not found.*--checkpoint"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LECLInputError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "cut.pt")
    torch.save({"model": {"some.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(LECLInputError, match="not a HoVer-Net checkpoint"):
        load_model(tmp_path / "other.pt")
    net = HoVerNetSCL(width=0.25)
    wrong = ModelDescription.of(HoVerNetSCL(width=0.125), 64)
    torch.save({"model": net.state_dict(), "lecl_model": wrong.state_dict()}, tmp_path / "mixed.pt")
    with pytest.raises(LECLInputError, match="weights of another shape"):
        load_model(tmp_path / "mixed.pt")


def test_init_weights_of_another_width_name_the_widths_to_use(tmp_path):
    """Fine-tuning (``init_checkpoint``) a network built at another width than the checkpoint: the message says which
    width, embedding and patch size to build instead."""
    from lecl_transforms.networks import load_weights

    trained = HoVerNetSCL(width=0.125)
    description = ModelDescription.of(trained, 128)
    torch.save({"model": trained.state_dict(), "lecl_model": description.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(LECLInputError, match=r"(?s)width 0\.125 and proj_dim 32.*width 0\.25.*--width 0\.125 --proj_dim 32 "
                                             r"--patch_size 128"):
        load_weights(HoVerNetSCL(width=0.25), tmp_path / "model.pt")
    assert load_weights(HoVerNetSCL(width=0.125), tmp_path / "model.pt") is not None
