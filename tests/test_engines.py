"""Engine pieces: the click metric on hand-made predictions, batch preparation, early config checks."""

import pytest
import torch

from lecl_transforms import LECLInputError
from lecl_transforms.engines import (
    PrepareTrainBatch,
    check_training_config,
    check_training_data,
    datalist_file,
    latest_checkpoint,
    training_entries,
    write_synthetic_data,
)
from lecl_transforms.metrics import ClickMetric
from lecl_transforms.networks import HoVerNetSCL


def _prediction(nucleus_at, type_at):
    """Logits on a 20x20 image: nucleus where listed, type (1/2) as listed."""
    np_logits = torch.full((1, 2, 20, 20), 0.0)
    np_logits[0, 0] = 5.0
    nc = torch.zeros(1, 3, 20, 20)
    for (y, x), cls in zip(nucleus_at, type_at):
        np_logits[0, 1, y - 2:y + 3, x - 2:x + 3] = 10.0
        nc[0, cls, y - 3:y + 4, x - 3:x + 4] = 10.0
    return {"nucleus_prediction": np_logits, "type_prediction": nc}


def test_click_metric_hand_computed():
    # clicks: A (neg) predicted neg, B (pos) predicted neg, C (pos) predicted pos, D (pos) not detected
    clicks = {"points": torch.tensor([[[0, 4, 4], [0, 4, 14], [0, 14, 4], [0, 14, 14]]]),
              "point_labels": torch.tensor([[1, 2, 2, 2]])}
    pred = _prediction([(4, 4), (4, 14), (14, 4)], [1, 1, 2])
    values = {}
    for kind in ("f1", "recall", "accuracy", "clicks"):
        metric = ClickMetric(kind)
        metric.reset()
        metric.update((pred, clicks))
        values[kind] = metric.compute()
    assert values["recall"] == pytest.approx(3 / 4) and values["clicks"] == 4
    assert values["accuracy"] == pytest.approx(2 / 3)
    f1_neg = 2 * 1 / (2 * 1 + 1 + 0)  # TP A, FP B
    f1_pos = 2 * 1 / (2 * 1 + 0 + 2)  # TP C, FN B and D
    assert values["f1"] == pytest.approx((f1_neg + f1_pos) / 2)


def test_prepare_train_batch():
    batch = {"emip": torch.rand(2, 3, 8, 8), **{f"target_{k}": torch.rand(2, c, 8, 8)
                                               for k, c in (("np", 1), ("hv", 2), ("nc", 1), ("ignore", 1))}}
    image, target = PrepareTrainBatch()(batch, torch.device("cpu"))
    assert image.shape == (2, 3, 8, 8) and set(target) == {"np", "hv", "nc", "ignore"}


def test_config_checks_fail_early_with_clear_messages(synth_dir):
    net = HoVerNetSCL(width=0.125)
    entries = training_entries(str(synth_dir / "datalist.json"), "training")
    with pytest.raises(LECLInputError, match="config: patch_size"):
        check_training_config(net, 250)
    with pytest.raises(LECLInputError, match="marker_channel=3, but .* has 2 channels"):
        check_training_data(entries, [], 0, 3)
    with pytest.raises(LECLInputError, match="batch_size"):
        check_training_config(net, 128, batch_size=0)
    check_training_config(net, 128, batch_size=2, samples_per_image=2)
    assert check_training_data(entries, [], 0, 1).shapes_yx == [(96, 96)] * len(entries)
    with pytest.raises(LECLInputError, match="datalist not found"):
        training_entries("/nonexistent/datalist.json", "training")
    with pytest.raises(LECLInputError, match="no training checkpoint to resume from"):
        latest_checkpoint(str(synth_dir))
    assert latest_checkpoint(str(synth_dir), required=False) == ""


def test_every_bad_stack_is_named_in_one_message(synth_dir, tmp_path):
    entries = training_entries(str(synth_dir / "datalist.json"), "training")
    broken = [{"image": str(tmp_path / f"missing{i}.tif"), "points": entries[0]["points"]} for i in range(2)]
    with pytest.raises(LECLInputError) as error:
        check_training_data(entries + broken, [], 0, 1)
    assert "2 training/validation files" in str(error.value)
    assert "missing0.tif" in str(error.value) and "missing1.tif" in str(error.value)


def test_built_in_data_is_generated_once_and_said(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    syn = str(tmp_path / "syn")
    assert datalist_file("synthetic", syn) == str(tmp_path / "syn" / "datalist.json")
    write_synthetic_data("synthetic", syn, n_images=3, size=64)
    entries = training_entries(datalist_file("synthetic", syn), "training")
    assert len(entries) == 1 and entries[0]["image"].endswith("synth_000.tif")
    assert "built-in synthetic data (3 stacks of 64 x 64 px" in caplog.text
    stamp = (tmp_path / "syn" / "images" / "synth_000.tif").stat().st_mtime_ns
    write_synthetic_data("synthetic", syn, n_images=3, size=64)
    assert (tmp_path / "syn" / "images" / "synth_000.tif").stat().st_mtime_ns == stamp
    write_synthetic_data(str(tmp_path / "mine.json"), str(tmp_path / "other"))  # a user's datalist: nothing written
    assert not (tmp_path / "other").exists()
    with pytest.raises(LECLInputError, match="no datalist given"):
        datalist_file(None, syn)
