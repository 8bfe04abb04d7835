"""GPU speed options change nothing numerically, torch.compile falls back cleanly, and the training step (network +
loss, contrast on) never synchronises with the host."""

import copy
import logging
from contextlib import contextmanager

import pytest
import torch
from conftest import CONFIGS

from lecl_transforms.engines import CompiledOrEager
from lecl_transforms.losses import LECLLoss
from lecl_transforms.networks import HoVerNetSCL


def batch(seed=0, size=64, n=2):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=g)
    nc = torch.randint(0, 3, (n, 1, size, size), generator=g).float()
    target = {"np": (nc > 0).float(), "hv": torch.rand(n, 2, size, size, generator=g) * 2 - 1, "nc": nc,
              "ignore": (torch.rand(n, 1, size, size, generator=g) > 0.7).float()}
    return image, target


def train_steps(net, loss_fn, optimizer, steps=3, channels_last=False):
    losses = []
    for step in range(steps):
        image, target = batch(step)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        loss = loss_fn(net(image), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("channels_last, fused", [(True, False), (False, True), (True, True)])
def test_channels_last_and_fused_adam_train_the_same(channels_last, fused):
    torch.manual_seed(0)
    reference = HoVerNetSCL(width=0.125).train()
    fast = copy.deepcopy(reference)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    # contrast off: its anchors depend on argmax predictions, which round-off may flip for single pixels
    loss_ref = LECLLoss(weights={"scl_pixel": 0.0, "scl_region": 0.0}, proj_dim=reference.proj_dim)
    loss_fast = copy.deepcopy(loss_ref)
    torch.manual_seed(1)
    expected = train_steps(reference, loss_ref, torch.optim.Adam(reference.parameters(), lr=1e-4))
    torch.manual_seed(1)
    got = train_steps(fast, loss_fast, torch.optim.Adam(fast.parameters(), lr=1e-4, fused=fused or None),
                      channels_last=channels_last)
    assert got == pytest.approx(expected, rel=1e-2)
    for (name, a), b in zip(reference.state_dict().items(), fast.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3), name


def test_compile_falls_back_to_eager_with_a_message(monkeypatch, caplog):
    net = HoVerNetSCL(width=0.125).eval()
    x = torch.rand(1, 3, 32, 32)

    def broken_compiled(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda network, **kw: broken_compiled)
    wrapped = CompiledOrEager(net, compile=True)
    with caplog.at_level(logging.WARNING):
        out = wrapped(x)
    assert "torch.compile is not available here" in caplog.text and "no C++ compiler" in caplog.text
    assert torch.equal(out["nucleus_prediction"], net(x)["nucleus_prediction"])
    assert wrapped.compiled is None  # later calls go straight to the eager network
    monkeypatch.setattr(torch, "compile", lambda network, **kw: (_ for _ in ()).throw(RuntimeError("old GPU")))
    assert CompiledOrEager(net, compile=True).compiled is None  # failing at construction falls back too
    assert CompiledOrEager(net, compile=False)(x)["nucleus_prediction"].shape == (1, 2, 32, 32)
    assert list(CompiledOrEager(net).state_dict()) == ["network." + k for k in net.state_dict()]


def test_config_keys_select_the_options(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
    parser.update({"bundle_root": str(tmp_path), "compile": "true", "channels_last": "true", "fused_adam": "true",
                   "checkpoint_interval": 3})
    from lecl_transforms.engines import write_synthetic_data

    # what the config's initialize does before the data is read (resolving the config writes nothing)
    write_synthetic_data("synthetic", parser.get_parsed_content("synthetic_dir"), n_images=3, size=64)
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer.network, CompiledOrEager) and trainer.network.compiled is not None
    assert trainer.network.network.conv0.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert parser.get_parsed_content("optimizer").defaults["fused"] is True
    assert parser.get_parsed_content("train#checkpointer").save_interval == 3
    parser.update({"compile": "false", "channels_last": "false", "fused_adam": "false"})
    parser.parse()
    assert parser.get_parsed_content("train#trainer").network.compiled is None
    assert parser.get_parsed_content("optimizer").defaults["fused"] is None


#: Tensor methods that read values back to Python, and ops whose output size depends on values: on a GPU each one
#: waits for the device
SYNCS = ("item", "__bool__", "__int__", "__float__", "tolist", "nonzero", "unique", "masked_select", "argwhere")


@contextmanager
def count_host_syncs():
    """Counts those calls made from the package's own code (MONAI's ``arange(...).tolist()`` on a fresh CPU tensor
    is not a device sync)."""
    import sys

    calls = []
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}
    functions = {name: getattr(torch, name) for name in ("nonzero", "unique", "masked_select", "argwhere")}

    def counting(name, original):
        def method(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "lecl_transforms" in caller:
                calls.append(f"{name} in {caller.split('lecl_transforms')[-1]}:{sys._getframe(1).f_lineno}")
            return original(*args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    for name, original in functions.items():
        setattr(torch, name, counting(name, original))
    try:
        yield calls
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
        for name, function in functions.items():
            setattr(torch, name, function)


def test_training_step_never_reads_values_back_to_the_host():
    """Forward, every loss term (supervised contrast on, memory filled) and backward: no value goes back to Python,
    so on a GPU nothing waits for the device inside a step. The loss terms stay device tensors for the logs."""
    torch.manual_seed(0)
    net = HoVerNetSCL(width=0.125).train()
    loss_fn = LECLLoss(contrast_start_epoch=0, proj_dim=net.proj_dim, memory_size=64)
    image, target = batch()
    loss_fn(net(image), target).backward()  # fill the contrast memory first
    with count_host_syncs() as calls:
        loss = loss_fn(net(image), target)
        loss.backward()
    assert calls == [], sorted(set(calls))
    assert {"scl_pixel", "scl_region", "nc_ce", "np_dice"} <= set(loss_fn.last_terms)
    assert all(isinstance(v, torch.Tensor) for v in loss_fn.last_terms.values())
