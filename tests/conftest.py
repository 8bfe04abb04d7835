"""Shared fixtures: small stacks written in each supported format, and small synthetic datasets."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SPACING = (2.0, 0.5, 0.5)  # dz, dy, dx in um
CONFIGS = REPO / "bundle" / "configs"
QUICK = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'quick.json'}']"
SHIPPED = REPO / "bundle" / "models" / "model.pt"


def bundle_run(bundle_root, *overrides, config=QUICK, launcher=(sys.executable,), timeout=600):
    cmd = [*launcher, "-m", "monai.bundle", "run", "training", "--config_file", config,
           "--bundle_root", str(bundle_root), *overrides]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def stacks_for_the_shipped_model(root: Path, n_images: int, size_yx: int, z_slices: int, seed: int = 5) -> Path:
    """Write ``n_images`` small clean synthetic stacks (``size_yx`` square, ``z_slices`` slices) under ``root/data``
    for a test that predicts them with the shipped model; the test is skipped when that model is not in the checkout.
    Returns the folder of the stacks."""
    from dataclasses import replace

    from lecl_transforms.data import REGIMES, write_dataset

    if not SHIPPED.is_file():
        pytest.skip("bundle/models/model.pt is not in this checkout")
    cfg = replace(REGIMES["clean"], size_yx=size_yx, z_slices=(z_slices, z_slices))
    write_dataset(root / "data", n_images=n_images, seed=seed, cfg=cfg)
    return root / "data" / "images"


def make_czyx(shape=(2, 5, 16, 20), seed=0) -> np.ndarray:
    """A small random stack with objects: smooth noise (3 x 3 px grain) and bright 3 x 3 px squares on about a fifth
    of each channel, at random places per channel (a nuclei channel of noise alone, pixel or smooth, is refused as a
    wrong channel)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 4000, shape).astype(np.float32)
    grain = (1,) * (noise.ndim - 2) + (3, 3)
    objects = ndimage.maximum_filter(rng.random(shape) < 1 / 40, size=grain)
    return np.rint(ndimage.uniform_filter(noise, size=grain) + 4000 * objects).astype(np.uint16)


def write_imagej_zcyx(path, czyx, spacing=SPACING):
    import tifffile

    dz, dy, dx = spacing
    tifffile.imwrite(path, np.ascontiguousarray(czyx.transpose(1, 0, 2, 3)), imagej=True, resolution=(1 / dx, 1 / dy),
                     metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"})
    return path


def write_ome_czyx(path, czyx, spacing=SPACING):
    import tifffile

    dz, dy, dx = spacing
    tifffile.imwrite(path, czyx, ome=True, metadata={"axes": "CZYX", "PhysicalSizeX": dx, "PhysicalSizeY": dy,
                                                     "PhysicalSizeZ": dz})
    return path


def write_nifti_xyzc(path, czyx, spacing=SPACING, unit="micron"):
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(czyx.transpose(3, 2, 1, 0)), np.eye(4))
    dz, dy, dx = spacing
    img.header.set_zooms((dx, dy, dz, 1.0)[: img.ndim])
    img.header.set_xyzt_units(unit)
    nib.save(img, str(path))
    return path


@pytest.fixture(autouse=True)
def _no_console_handler_outlives_its_test():
    """A command run in-process configures logging from bundle/configs/logging.conf: a console handler on the
    sys.stdout of that moment, which pytest's capture closes after the test. Left on the root logger, it turns every
    later log line into a '--- Logging error ---' traceback on stderr (seen by tests that check stderr)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def czyx():
    return make_czyx()


@pytest.fixture(scope="session")
def clean_stack():
    from lecl_transforms.data import REGIMES, generate_stack

    return generate_stack(REGIMES["clean"], seed=1, index=0)


@pytest.fixture(scope="session")
def dense_stack():
    from lecl_transforms.data import REGIMES, generate_stack

    return generate_stack(REGIMES["dense"], seed=1, index=0)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A 3-image clean synthetic dataset on disk (written once per test session)."""
    from dataclasses import replace

    from lecl_transforms.data import REGIMES, write_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, n_images=3, seed=7, cfg=replace(REGIMES["clean"], size_yx=96))
    return out


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The quick config as shipped: trains for real on the built-in synthetic data (once per session; the
    inference tests use its model)."""
    root = tmp_path_factory.mktemp("bundle")
    result = bundle_run(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result
