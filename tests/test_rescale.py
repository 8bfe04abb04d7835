"""Rescaling to the model's pixel size: training records the (y, x) pixel size of its images; inference scales each
slice of a stack of another pixel size to it before the network (post-processing at that grid too) and maps the
instances back to the stack's grid, so the same tissue imaged at another resolution gives the same nuclei."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import REPO, write_imagej_zcyx

SHIPPED = REPO / "bundle" / "models" / "model.pt"


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """A dense synthetic stack at 0.5 um pixels, the same stack sampled twice as finely (each pixel 2 x 2 pixels of
    0.25 um, spacing halved in the metadata), and the shipped model recording 0.5 um as its training pixel size."""
    from lecl_transforms.data import REGIMES, generate_stack
    from lecl_transforms.networks import update_description

    if not SHIPPED.is_file():
        pytest.skip("bundle/models/model.pt is not in this checkout")
    folder = tmp_path_factory.mktemp("rescale")
    s = generate_stack(replace(REGIMES["dense"], size_yx=96, z_slices=(6, 6)), seed=3, index=0)
    dz, dy, dx = s.spacing
    assert (dy, dx) == (0.5, 0.5)
    original = write_imagej_zcyx(folder / "original.tif", s.image, s.spacing)
    fine = write_imagej_zcyx(folder / "fine.tif", np.repeat(np.repeat(s.image, 2, axis=2), 2, axis=3),
                             (dz, dy / 2, dx / 2))
    model = folder / "model.pt"
    shutil.copyfile(SHIPPED, model)
    update_description(model, pixel_size_yx=[dy, dx])
    return original, fine, model


def _predict(image, model, out, *options):
    from lecl_transforms.tools.cli import main

    assert main(["predict", "--image", str(image), "--model", str(model), "--out", str(out), "--device", "cpu",
                 *options]) == 0
    with open(next(out.glob("*_pred.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    parameters = json.loads((out / "predict_summary.json").read_text())["parameters"]
    return np.array([[float(r[k]) for k in ("z_um", "y_um", "x_um", "label")] for r in rows]), parameters


def test_a_stack_sampled_twice_as_finely_gives_the_same_nuclei(stacks, tmp_path, capfd):
    original, fine, model = stacks
    expected, _ = _predict(original, model, tmp_path / "original")
    capfd.readouterr()
    found, parameters = _predict(fine, model, tmp_path / "fine")
    log = "".join(capfd.readouterr())
    assert "stack pixel 0.25 um, model 0.5 um: slices scaled by 0.5" in log
    assert parameters["model_pixel_size_um"] == [0.5, 0.5]
    assert len(expected) > 20 and len(found) == len(expected)
    # each nucleus at the same place in um (a fine pixel's centre is a quarter of a coarse pixel off its centre)
    distance = np.linalg.norm(expected[:, None, :3] - found[None, :, :3], axis=2)
    nearest = distance.argmin(1)
    assert sorted(nearest) == list(range(len(found)))  # one-to-one
    assert distance.min(1).max() < 0.25
    assert np.array_equal(expected[:, 3], found[nearest, 3])  # and the same class
    # without rescaling the network sees nuclei twice their trained size: other nuclei
    unscaled, parameters = _predict(fine, model, tmp_path / "unscaled", "--no-rescale")
    assert parameters["model_pixel_size_um"] is None and len(unscaled) != len(expected)


def test_model_pixel_size_given_by_the_user_wins(stacks, tmp_path, capfd):
    """--model-pixel-size rescales to the size given (here the fine stack's own: nothing to rescale, as with
    --no-rescale)."""
    _, fine, model = stacks
    found, parameters = _predict(fine, model, tmp_path / "given", "--model-pixel-size", "0.25")
    assert parameters["model_pixel_size_um"] == [0.25, 0.25]
    assert "model pixel size 0.25 um as set (model_pixel_size_um)" in "".join(capfd.readouterr())
    unscaled, _ = _predict(fine, model, tmp_path / "unscaled", "--no-rescale")
    assert np.array_equal(found, unscaled)


def test_which_pixel_size_by_the_rule():
    from lecl_transforms.engines import resolve_model_pixel_size
    from lecl_transforms.errors import LECLInputError
    from lecl_transforms.networks import ModelDescription

    recorded = ModelDescription(pixel_size_yx=[0.5, 0.4])
    assert resolve_model_pixel_size(recorded) == [0.5, 0.4]
    assert resolve_model_pixel_size(recorded, rescale=False) is None
    assert resolve_model_pixel_size(recorded, model_pixel_size_um=0.3) == [0.3, 0.3]
    assert resolve_model_pixel_size(recorded, model_pixel_size_um=[0.3, 0.2]) == [0.3, 0.2]
    assert resolve_model_pixel_size(ModelDescription()) is None  # older models: no rescaling
    with pytest.raises(LECLInputError, match="model_pixel_size_um"):
        resolve_model_pixel_size(recorded, model_pixel_size_um=-1)


def _stack(spacing=None, size=64):
    from monai.data import MetaTensor

    from lecl_transforms.data.synthetic import REGIMES, generate_stack

    s = generate_stack(replace(REGIMES["clean"], size_yx=size, z_slices=(3, 3)), seed=0, index=0)
    image = torch.as_tensor(s.image.astype(np.float32))
    return image if spacing is None else MetaTensor(image, meta={"spacing": np.asarray(spacing)})


def test_the_inferer_scales_both_ways_and_gives_instances_on_the_stacks_grid(caplog):
    from test_stack_metric import ThresholdNetwork

    from lecl_transforms.inferers import SliceHoVerNetInferer

    inferer = SliceHoVerNetInferer(roi_size=64, model_pixel_size_yx=(0.5, 0.5), overlap_postprocess=False)
    network = ThresholdNetwork()
    same = inferer(_stack((2.0, 0.5, 0.5)), network)
    assert inferer.slice_scale(_stack((2.0, 0.5, 0.5))) is None  # within 1%: not rescaled
    assert same["instances"].shape == (3, 64, 64)
    coarse = _stack((2.0, 1.0, 1.0), size=32)  # a stack coarser than the model: enlarged 2x for the network
    with caplog.at_level("INFO"):
        result = inferer(coarse, network)
    assert "stack pixel 1 um, model 0.5 um: slices scaled by 2" in caplog.text
    assert result["instances"].shape == (3, 32, 32) and result["instances"].max() > 0
    outputs = inferer.network_outputs(coarse, network)  # what the network gave: at the model's grid
    assert outputs.shape == (3, 32, 32) and outputs.batches[0][1]["nucleus_prediction"].shape[-2:] == (64, 64)
    fine = _stack((2.0, 0.25, 0.25), size=64)  # finer: shrunk to half
    assert inferer.network_outputs(fine, network).batches[0][1]["nucleus_prediction"].shape[-2:] == (32, 32)


def test_unknown_stack_pixel_size_is_not_rescaled_with_a_warning(caplog):
    from lecl_transforms.inferers import SliceHoVerNetInferer

    inferer = SliceHoVerNetInferer(roi_size=64, model_pixel_size_yx=(0.5, 0.5))
    with caplog.at_level("WARNING"):
        assert inferer.slice_scale(_stack()) is None  # a plain array: no spacing
    assert "stack pixel size unknown" in caplog.text
    assert SliceHoVerNetInferer(roi_size=64).slice_scale(_stack((2.0, 0.1, 0.1))) is None  # no model pixel size


def test_instances_come_back_by_nearest_neighbour():
    from lecl_transforms.inferers.slice_inferer import _nearest

    labels = np.array([[1, 2], [3, 0]], np.int32)
    assert np.array_equal(_nearest(labels, (4, 4)), np.repeat(np.repeat(labels, 2, 0), 2, 1))
    assert np.array_equal(_nearest(np.repeat(np.repeat(labels, 2, 0), 2, 1), (2, 2)), labels)
    assert _nearest(labels, (2, 2)) is labels
