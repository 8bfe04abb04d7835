"""HoVerNetSCL: shapes, MONAI state-dict compatibility, compact widths, TorchScript export."""

from pathlib import Path

import pytest
import torch
from monai.networks.nets import HoVerNet

from lecl_transforms.networks import EXTRA_STATE_KEY, HoVerNetSCL, default_proj_dim


@pytest.mark.parametrize("width,size", [(0.125, 64), (0.25, 96), (0.125, 200)])
def test_output_shapes_and_embedding_only_in_training(width, size):
    net = HoVerNetSCL(width=width).train()
    out = net(torch.rand(2, 3, size, size))
    assert out["nucleus_prediction"].shape == (2, 2, size, size)
    assert out["horizontal_vertical"].shape == (2, 2, size, size)
    assert out["type_prediction"].shape == (2, 3, size, size)
    assert out["embedding"].shape == (2, default_proj_dim(width), size, size)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2, size, size))  # L2-normalised per pixel
    assert "embedding" not in net.eval()(torch.rand(1, 3, size, size))


def test_state_dict_round_trip_and_same_outputs_as_monai_hovernet():
    torch.manual_seed(0)
    monai_net = HoVerNet(mode="fast", in_channels=3, out_classes=3).eval()
    ours = HoVerNetSCL(width=1.0, decoder_padding=False).eval()
    head = {k for k in ours.state_dict() if k.startswith("projection_head.")}
    head.add(EXTRA_STATE_KEY)  # LECL's own: the projection head and the network's description
    assert set(ours.state_dict()) - head == set(monai_net.state_dict())
    not_loaded = ours.load_monai_hovernet(monai_net.state_dict())  # MONAI -> ours
    assert set(not_loaded) == head - {EXTRA_STATE_KEY}
    back = HoVerNet(mode="fast", in_channels=3, out_classes=3)
    back.load_state_dict({k: v for k, v in ours.state_dict().items() if k not in head})  # ours -> MONAI, strict
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        expected, got = monai_net(x), ours(x)
    for key in expected:
        assert got[key].shape == (1, expected[key].shape[1], 164, 164)
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_compact_width_scales_every_channel():
    full = sum(p.numel() for p in HoVerNetSCL(width=1.0).parameters())
    compact = sum(p.numel() for p in HoVerNetSCL(width=0.125).parameters())
    assert compact < full / 50
    assert HoVerNetSCL(width=0.25).proj_dim == 64 and HoVerNetSCL(width=1.0).proj_dim == 256


def test_bad_width_and_patch_size_are_explained():
    with pytest.raises(ValueError, match="width=0.3 is not supported"):
        HoVerNetSCL(width=0.3)
    net = HoVerNetSCL(width=0.125)
    with pytest.raises(ValueError, match="multiple of 8"):
        net.check_input_size(250)
    net.check_input_size([128, 256])
    with pytest.raises(ValueError, match="at least 96"):
        HoVerNetSCL(width=0.125, decoder_padding=False).check_input_size(64)


def test_freeze_encoder():
    net = HoVerNetSCL(width=0.125, freeze_encoder=True)
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.startswith(("conv0.", "res_blocks.")))
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("type_prediction."))
    net.freeze_encoder(False)
    assert all(p.requires_grad for p in net.parameters())


def test_torchscript_export_matches():
    net = HoVerNetSCL(width=0.125).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = net(x), scripted(x)
    assert set(b) == {"nucleus_prediction", "horizontal_vertical", "type_prediction"}
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_branch_keys_come_from_monai_enum():
    """Network, losses and metrics name the branches by ``monai.utils.enums.HoVerNetBranch``, never by literals (the
    network's forward uses ``.value``, which TorchScript resolves)."""
    import inspect

    from monai.utils.enums import HoVerNetBranch

    import lecl_transforms.losses.lecl_loss as loss_module
    import lecl_transforms.metrics.click as metric_module
    import lecl_transforms.networks.hovernet_scl as net_module

    out = HoVerNetSCL(width=0.125).eval()(torch.rand(1, 3, 32, 32))
    assert set(out) == {b.value for b in HoVerNetBranch}
    for module in (net_module, loss_module, metric_module):
        source = inspect.getsource(module)
        for branch in HoVerNetBranch:
            assert f'"{branch.value}"' not in source, (module.__name__, branch)


SHIPPED = Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt"
# outputs of the shipped weights (0.6.2, retrained with cpu.json) on the input below, recorded when they were
# shipped, so a change in the network's code that changes its outputs is caught: per channel mean, std, then the
# values at pixels (3, 5), (16, 16), (28, 9) channel by channel
SHIPPED_OUTPUTS = {
    "horizontal_vertical": ([-0.0469621, -0.00628107], [0.13834, 0.117711],
                            [-0.116756, -0.116756, -0.116756, 0.0495678, 0.0495678, 0.0495678]),
    "nucleus_prediction": ([0.742489, 0.663152], [2.91663, 1.48254],
                           [-0.173033, 4.6289, 4.24944, -0.757436, -0.144756, -1.04925]),
    "type_prediction": ([-1.92841, 3.48662, 0.622813], [1.88325, 3.41485, 2.34685],
                        [-0.227761, -3.72468, -0.892219, 1.82586, 4.48534, 1.69371, -0.117425, 2.50946, 0.939651]),
}


@pytest.mark.skipif(not SHIPPED.is_file(), reason="bundle/models/model.pt is not in this checkout")
def test_shipped_weights_load_strictly_and_give_the_recorded_outputs():
    net = HoVerNetSCL(width=0.125, proj_dim=32)
    net.load_state_dict(torch.load(SHIPPED, map_location="cpu", weights_only=True), strict=True)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    x = torch.stack([torch.sin(yy / 3) * torch.cos(xx / 5), torch.cos((yy + xx) / 4), torch.sin(xx * yy / 50)])[None]
    with torch.no_grad():
        out = net.eval()(x)
    assert set(out) == set(SHIPPED_OUTPUTS)
    for key, (means, stds, values) in SHIPPED_OUTPUTS.items():
        got = out[key][0]
        pixels = [got[c, i, j] for c in range(got.shape[0]) for (i, j) in ((3, 5), (16, 16), (28, 9))]
        torch.testing.assert_close(got.mean(dim=(1, 2)), torch.tensor(means), rtol=0, atol=2e-5)
        torch.testing.assert_close(got.std(dim=(1, 2)), torch.tensor(stds), rtol=0, atol=2e-5)
        torch.testing.assert_close(torch.stack(pixels), torch.tensor(values), rtol=0, atol=2e-5)
