"""The values inference takes from the model unless the user sets them: a calibrated np_threshold stored in the
model's description is saved, loaded, used by every caller of the one pipeline (lecl predict, validation, MONAI
Label), and overridden by a value in inference.json or on the command line; models without one use inference.json's
fallback. One log line says which value is used and why."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import pytest

from conftest import REPO

BUNDLE = REPO / "bundle"
SHIPPED = BUNDLE / "models" / "model.pt"
INFERENCE_JSON = BUNDLE / "configs" / "inference.json"
CALIBRATED = 0.55

pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="bundle/models/model.pt is not in this checkout")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The shipped compact model's weights without calibrated values (as models trained before calibration) and
    a copy whose description holds np_threshold 0.55."""
    from lecl_transforms.networks import update_description

    folder = tmp_path_factory.mktemp("models")
    plain, calibrated = folder / "plain.pt", folder / "calibrated.pt"
    shutil.copyfile(SHIPPED, plain)
    update_description(plain, np_threshold=None, min_volume_um3=None, calibration=None)
    shutil.copyfile(plain, calibrated)
    curve = [{"np_threshold": t, "np_f1": f} for t, f in ((0.45, 0.5), (CALIBRATED, 0.8), (0.7, 0.6))]
    update_description(calibrated, np_threshold=CALIBRATED,
                       calibration={"values": {"np_threshold": CALIBRATED}, "score": 0.8, "curve": curve,
                                    "stacks": 2, "clicks": 40, "metric": "np_f1", "before": None})
    return plain, calibrated


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from lecl_transforms.data import REGIMES, write_dataset

    out = tmp_path_factory.mktemp("model_values") / "data"
    write_dataset(out, n_images=1, seed=3, cfg=replace(REGIMES["dense"], size_yx=96, z_slices=(6, 6)))
    return out / "images" / "synth_000.tif"


def test_stored_values_are_saved_and_loaded_with_the_weights(models):
    import torch

    from lecl_transforms.networks import HoVerNetSCL, load_model, read_model_description

    plain, calibrated = models
    assert read_model_description(plain).np_threshold is None
    described = read_model_description(calibrated)
    assert described.np_threshold == CALIBRATED and described.calibration["curve"][1]["np_f1"] == 0.8
    network, loaded = load_model(calibrated)
    assert loaded.np_threshold == CALIBRATED and network.description()["np_threshold"] == CALIBRATED
    same = load_model(plain)[0].state_dict()
    assert all(torch.equal(v, same[k]) for k, v in network.state_dict().items() if k != "_extra_state")
    HoVerNetSCL(width=0.125).load_state_dict(torch.load(calibrated, weights_only=True))  # the zoo's strict load


def _predict(stack, model, out, *options) -> tuple[dict, list[dict]]:
    from lecl_transforms.tools.cli import main

    assert main(["predict", "--image", str(stack), "--model", str(model), "--out", str(out), "--device", "cpu",
                 *options]) == 0
    summary = json.loads((out / "predict_summary.json").read_text())
    with open(next(out.glob("*_pred.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    return summary["parameters"], rows


def test_lecl_predict_uses_the_calibrated_threshold_unless_the_user_sets_one(models, stack, tmp_path, capfd):
    def log() -> str:  # the bundle's logging.conf prints the log
        out, err = capfd.readouterr()
        return out + err

    plain, calibrated = models
    used, nuclei = _predict(stack, calibrated, tmp_path / "calibrated")
    assert used["np_threshold"] == CALIBRATED and used["postprocessing_from"]["np_threshold"] == "model (calibrated)"
    assert "np_threshold 0.55: the model's calibrated value (detection F1 0.800 on 2 validation stacks)" in log()
    # the value really drives the post-processing: the same nuclei as the plain model told 0.55 on the command line
    typed, same = _predict(stack, plain, tmp_path / "typed", "--np-threshold", str(CALIBRATED))
    assert typed["np_threshold"] == CALIBRATED and typed["postprocessing_from"]["np_threshold"] == "set"
    assert [(r["z"], r["y"], r["x"]) for r in same] == [(r["z"], r["y"], r["x"]) for r in nuclei]
    # ... and other nuclei than the fallback 0.7 gives, which a model without a calibrated value uses
    log()
    fallback, other = _predict(stack, plain, tmp_path / "fallback")
    assert fallback["np_threshold"] == 0.7 and fallback["postprocessing_from"]["np_threshold"] == "fallback"
    assert "np_threshold 0.7: inference.json's fallback (the model records no calibrated value)" in log()
    assert len(other) != len(nuclei)
    # a value typed on the command line wins over the model's, and the log says the model's is not used
    overridden, _ = _predict(stack, calibrated, tmp_path / "overridden", "--np-threshold", "0.8")
    assert overridden["np_threshold"] == 0.8 and overridden["postprocessing_from"]["np_threshold"] == "set"
    assert "np_threshold 0.8: as set (inference.json or command line); the model's calibrated 0.55 is not used" \
        in log()


def test_lecl_predict_drops_small_nuclei_by_the_model_s_min_volume_unless_typed(models, stack, tmp_path):
    """A model storing a calibrated min_volume_um3 keeps exactly the nuclei of at least that volume (the unfiltered
    run's volume_um3 column says which); --min-volume-um3 typed wins; models without one keep all (fallback 0)."""
    from lecl_transforms.networks import update_description

    plain, _ = models
    unfiltered, rows = _predict(stack, plain, tmp_path / "plain")
    assert unfiltered["min_volume_um3"] == 0 and unfiltered["postprocessing_from"]["min_volume_um3"] == "fallback"
    volumes = sorted({float(r["volume_um3"]) for r in rows})
    floor = (volumes[len(volumes) // 2 - 1] + volumes[len(volumes) // 2]) / 2  # between two volumes: no tie
    expected = sorted((r["z"], r["y"], r["x"]) for r in rows if float(r["volume_um3"]) >= floor)
    assert 0 < len(expected) < len(rows)
    model = tmp_path / "min_volume.pt"
    shutil.copyfile(plain, model)
    update_description(model, min_volume_um3=floor)
    used, kept = _predict(stack, model, tmp_path / "calibrated")
    assert used["min_volume_um3"] == floor and used["postprocessing_from"]["min_volume_um3"] == "model (calibrated)"
    assert sorted((r["z"], r["y"], r["x"]) for r in kept) == expected
    assert min(float(r["volume_um3"]) for r in kept) >= floor
    typed, everything = _predict(stack, model, tmp_path / "typed", "--min-volume-um3", "0")
    assert typed["min_volume_um3"] == 0 and typed["postprocessing_from"]["min_volume_um3"] == "set"
    assert len(everything) == len(rows)


def _inferer(model, **keys):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE_JSON))
    parser.update({"checkpoint": str(model), "device": "cpu", **keys})
    return parser.get_parsed_content("inferer")


def test_a_value_in_inference_json_wins_and_argmax_can_be_asked_for(models):
    _, calibrated = models
    assert _inferer(calibrated).postprocess.kwargs["nucleus_threshold"] == CALIBRATED
    assert _inferer(calibrated, np_threshold=0.75).postprocess.kwargs["nucleus_threshold"] == 0.75
    assert _inferer(calibrated, np_threshold="argmax").postprocess.kwargs["nucleus_threshold"] is None
    assert _inferer(calibrated, np_threshold="null").postprocess.kwargs["nucleus_threshold"] == CALIBRATED


def test_bad_threshold_values_are_refused_with_a_fix(models):
    from lecl_transforms.errors import LECLInputError, find_input_error

    _, calibrated = models
    for bad in (1.5, "high", -3):
        with pytest.raises(Exception) as error:
            _inferer(calibrated, np_threshold=bad)
        found = find_input_error(error.value)
        assert isinstance(found, LECLInputError) and "np_threshold" in found.where and "argmax" in found.fix


def test_validation_uses_the_description_it_is_given(models):
    """The training's validation builds the pipeline from its own description (an uncalibrated model being
    trained: the fallback); a description holding a calibrated value gives that value."""
    from lecl_transforms.engines import StackPipeline
    from lecl_transforms.networks import ModelDescription, read_model_description

    _, calibrated = models
    fresh = StackPipeline.from_config(INFERENCE_JSON, ModelDescription(patch_size=64), {"progress": False})
    assert fresh.inferer.postprocess.kwargs["nucleus_threshold"] == 0.7
    described = StackPipeline.from_config(INFERENCE_JSON, read_model_description(calibrated), {"progress": False})
    assert described.inferer.postprocess.kwargs["nucleus_threshold"] == CALIBRATED
    assert fresh.link.transform.min_volume_um3 == 0  # fallback: no volume floor
    floored = StackPipeline.from_config(INFERENCE_JSON, ModelDescription(patch_size=64, min_volume_um3=15.0),
                                        {"progress": False})
    assert floored.link.transform.min_volume_um3 == 15.0


def test_monai_label_uses_the_calibrated_threshold_unless_the_request_sets_one(models, stack, tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is not installed: pip install -e \".[test,label]\"")
    from lecl_transforms.apps.monailabel_tasks import LECLInferTask

    _, calibrated = models
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    shutil.copyfile(calibrated, model_dir / "model.pt")
    task = LECLInferTask(BUNDLE, model_dir)
    _, result = task({"image": str(stack)})
    assert result["resolved"]["np_threshold"] == CALIBRATED
    assert result["resolved"]["postprocessing_from"]["np_threshold"] == "model (calibrated)"
    _, asked = task({"image": str(stack), "np_threshold": "0.8"})  # clients send text
    assert asked["resolved"]["np_threshold"] == 0.8 and asked["resolved"]["postprocessing_from"]["np_threshold"] == \
        "set"


def test_resolution_rule_by_hand():
    from lecl_transforms.engines import resolve_postprocessing
    from lecl_transforms.errors import LECLInputError
    from lecl_transforms.networks import ModelDescription

    fallbacks = {"np_threshold": 0.7, "min_instance_size": 10}
    stored = ModelDescription(np_threshold=0.6, min_instance_size=30)
    assert resolve_postprocessing(stored, {"np_threshold": None, "min_instance_size": None}, fallbacks) == {
        "np_threshold": 0.6, "min_instance_size": 30,
        "from": {"np_threshold": "model (calibrated)", "min_instance_size": "model (calibrated)"}}
    assert resolve_postprocessing(stored, {"np_threshold": "0.8", "min_instance_size": "null"}, fallbacks) == {
        "np_threshold": 0.8, "min_instance_size": 30,
        "from": {"np_threshold": "set", "min_instance_size": "model (calibrated)"}}
    assert resolve_postprocessing(ModelDescription(), {"np_threshold": None}, fallbacks) == {
        "np_threshold": 0.7, "from": {"np_threshold": "fallback"}}
    volume = {"min_volume_um3": 0}
    assert resolve_postprocessing(ModelDescription(min_volume_um3=20.0), {"min_volume_um3": None}, volume) == {
        "min_volume_um3": 20.0, "from": {"min_volume_um3": "model (calibrated)"}}
    assert resolve_postprocessing(ModelDescription(min_volume_um3=20.0), {"min_volume_um3": "12.5"}, volume) == {
        "min_volume_um3": 12.5, "from": {"min_volume_um3": "set"}}
    assert resolve_postprocessing(ModelDescription(), {"min_volume_um3": None}, volume) == {
        "min_volume_um3": 0.0, "from": {"min_volume_um3": "fallback"}}
    for bad in (-1, "big", float("inf")):
        with pytest.raises(LECLInputError, match="um\\^3"):
            resolve_postprocessing(ModelDescription(), {"min_volume_um3": bad}, volume)


@pytest.mark.parametrize("key, good, bad", [
    ("np_threshold", [(0.25, 0.25), ("0.9", 0.9)], [0, 1, 1.5, "high", True, None]),
    ("min_instance_size", [(0, 0), ("30", 30), (12.0, 12)], [-1, 2.5, "many", float("nan"), True]),
    ("min_volume_um3", [(0, 0.0), ("12.5", 12.5)], [-1, float("inf"), "big", None]),
])
def test_one_check_per_post_processing_value_wherever_it_enters(key, good, bad):
    """The same values are taken and refused whether they come from the config or command line (resolve), a model's
    stored calibration (ModelDescription.record), a calibration grid or, for the volume, the link step; each error
    names its own source."""
    from lecl_transforms.engines import resolve_postprocessing
    from lecl_transforms.errors import LECLInputError
    from lecl_transforms.metrics import check_grid
    from lecl_transforms.networks import ModelDescription
    from lecl_transforms.transforms.functional.link_slices import check_link_parameters

    for given, expected in good:
        assert resolve_postprocessing(ModelDescription(), {key: given}, {key: 0})[key] == expected
        assert getattr(ModelDescription().record(**{key: given}), key) == expected
        assert check_grid({key: [given]}) == {key: [expected]}
    enters = [("config: " + key, lambda v: resolve_postprocessing(ModelDescription(), {key: v}, {key: 0})),
              ("config: calibration_grid#" + key, lambda v: check_grid({key: [v]}))]
    if key == "min_volume_um3":
        enters.append(("config: min_volume_um3", lambda v: check_link_parameters(0.5, 0.0, 1, "chain", 4, v)))
    for value in bad:
        if value is not None:  # null means "not set" where a value is optional; only a grid refuses it
            with pytest.raises(LECLInputError, match=f"config: {key}"):
                ModelDescription().record(**{key: value})
        for where, enter in enters:
            if value is None and "grid" not in where:
                continue
            with pytest.raises(LECLInputError) as error:
                enter(value)
            assert error.value.where == where, (value, where)
