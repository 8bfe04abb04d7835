"""One per-stack inference pipeline, declared once in inference.json: a value edited there is honoured the same way by
``lecl predict``, ``python -m monai.bundle run inference``, the training's validation that picks ``model.pt``, and
MONAI Label's infer task; ``lecl predict`` passes only what the user typed; parsing train.json has no side effects."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO

BUNDLE = REPO / "bundle"
SHIPPED = BUNDLE / "models" / "model.pt"
#: the edit: no nucleus can be positive on this many slices, so every nucleus comes out negative wherever the
#: edited config is honoured (with the shipped config, the test stack has positives)
EDIT = {"min_positive_slices": 99}

pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="bundle/models/model.pt is not in this checkout")


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    from lecl_transforms.data import REGIMES, write_dataset

    out = tmp_path_factory.mktemp("one_pipeline") / "data"
    write_dataset(out, n_images=2, seed=3, cfg=replace(REGIMES["dense"], size_yx=96, z_slices=(6, 6)))
    return out


@pytest.fixture(scope="module")
def edited_bundle(tmp_path_factory):
    """A copy of the bundle whose inference.json says ``min_positive_slices 99``."""
    copy = tmp_path_factory.mktemp("edited") / "bundle"
    shutil.copytree(BUNDLE / "configs", copy / "configs")
    (copy / "models").mkdir()
    shutil.copyfile(SHIPPED, copy / "models" / "model.pt")
    config = json.loads((copy / "configs" / "inference.json").read_text())
    assert config["min_positive_slices"] != EDIT["min_positive_slices"]
    config.update(EDIT)
    (copy / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    return copy


def _entries(stacks: Path) -> list[dict]:
    from lecl_transforms.data import load_datalist

    return load_datalist(stacks / "datalist.json", "training")


def _labels(pred_dir: Path) -> list[int]:
    rows = []
    for path in sorted(pred_dir.glob("*_pred.csv")):
        with open(path, newline="") as f:
            rows += [int(r["label"]) for r in csv.DictReader(f)]
    return rows


def _predict(bundle: Path, stacks: Path, out: Path, monkeypatch) -> list[int]:
    from lecl_transforms.tools.cli import main

    monkeypatch.setenv("LECL_BUNDLE", str(bundle))
    assert main(["predict", "--datalist", str(stacks / "datalist.json"), "--section", "validation", "--out", str(out),
                 "--device", "cpu"]) == 0
    return _labels(out)


def test_lecl_predict_honours_an_edit_of_inference_json(stacks, edited_bundle, tmp_path, monkeypatch):
    shipped = _predict(BUNDLE, stacks, tmp_path / "shipped", monkeypatch)
    edited = _predict(edited_bundle, stacks, tmp_path / "edited", monkeypatch)
    assert 2 in shipped and len(edited) == len(shipped)  # the same nuclei ...
    assert set(edited) == {1}  # ... all negative: the edited config was used
    summary = json.loads((tmp_path / "edited" / "predict_summary.json").read_text())
    assert summary["parameters"]["min_positive_slices"] == 99


def test_monai_bundle_run_inference_honours_the_edit(stacks, edited_bundle, tmp_path):
    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
                          str(edited_bundle / "configs" / "inference.json"), "--bundle_root", str(edited_bundle),
                          "--datalist", str(stacks / "datalist.json"), "--section", "validation",
                          "--output_dir", str(tmp_path / "out"),
                          "--progress", "false"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    labels = _labels(tmp_path / "out")
    assert labels and set(labels) == {1}


def test_training_validation_uses_the_edited_inference_json(stacks, edited_bundle, monkeypatch):
    """The validation that picks model.pt is built from the bundle's inference.json (found as lecl and MONAI find
    the bundle), with the training's own channels; its scores see the edit."""
    from monai.bundle import ConfigParser

    monkeypatch.setenv("LECL_BUNDLE", str(edited_bundle))
    parser = ConfigParser()
    parser.read_config([str(edited_bundle / "configs" / n) for n in ("train.json", "quick.json")])
    parser.update({"datalist": str(stacks / "datalist.json"), "nuclei_channel": 0, "marker_channel": 1})
    pipeline = parser.get_parsed_content("validate#pipeline")
    assert pipeline.link.transform.min_positive_slices == 99
    # and through the validator, on a real stack with the shipped weights: no positive is called
    from lecl_transforms.metrics import StackValidator
    from lecl_transforms.networks import load_model

    entries = [{"image": e["image"], "points": e["points"]} for e in _entries(stacks)[:1]]
    validator = StackValidator(entries, load_model(SHIPPED)[0].eval(), pipeline)
    validator.run()
    counts = validator.last_counts
    assert counts.neg_as_pos + counts.pos_as_pos + counts.unmatched_pred_pos == 0  # no nucleus called positive
    assert counts.tp > 0


def test_monai_label_infer_task_honours_the_edit(stacks, edited_bundle, tmp_path):
    pytest.importorskip("monailabel", reason="MONAI Label is not installed: pip install -e \".[test,label]\"")
    from lecl_transforms.apps.monailabel_tasks import LECLInferTask

    task = LECLInferTask(edited_bundle, tmp_path / "model_dir")
    assert task._config["min_positive_slices"] == 99  # what the server shows as the default ...
    image = _entries(stacks)[0]["image"]
    _, result = task({"image": image})
    assert result["counts"]["nuclei"] > 0 and result["counts"]["marker-positive"] == 0  # ... and what it used
    _, overridden = task({"image": image, "min_positive_slices": "1"})  # a request value still wins
    assert overridden["parameters"]["min_positive_slices"] == 1


def test_lecl_predict_passes_only_what_the_user_typed(monkeypatch, tmp_path):
    """Unset options are left to the config: run_bundle receives exactly the typed keys (and the input/output)."""
    import lecl_transforms.tools.bundle as bundle
    from lecl_transforms.tools.cli import main

    seen = {}
    monkeypatch.setattr(bundle, "run_bundle", lambda run_id, *configs, **kw: seen.update(kw))
    image = tmp_path / "s.tif"
    image.write_bytes(b"")
    main(["predict", "--image", str(image), "--out", str(tmp_path / "o")])
    assert set(seen) == {"image", "output_dir"}
    main(["predict", "--image", str(image), "--out", str(tmp_path / "o"), "--overlap", "0.5", "--marker-channel", "2",
          "--allow-suspicious-input", "--overwrite"])
    assert {k: seen[k] for k in ("overlap", "marker_channel", "allow_suspicious_input", "overwrite")} == \
        {"overlap": 0.5, "marker_channel": 2, "allow_suspicious_input": True, "overwrite": True}
    assert "nuclei_channel" not in seen and "min_positive_slices" not in seen


def test_parsing_train_json_has_no_side_effects(stacks, tmp_path):
    """Resolving every component of the training config (trainer, evaluator, data, handlers) writes nothing and
    leaves the interpreter's hooks alone; only ``initialize`` and ``run`` act."""
    from monai.bundle import ConfigParser

    root = tmp_path / "run"
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("train.json", "quick.json")])
    parser.update({"bundle_root": str(root), "datalist": str(stacks / "datalist.json"), "mlflow": False,
                   "num_workers": 0})
    hook = sys.excepthook
    for key in ("train#trainer", "validate#evaluator", "train#checkpointer", "train#resume_loader", "run_params",
                "checks", "validate#pipeline"):
        parser.get_parsed_content(key)
    assert sys.excepthook is hook
    # no file; MONAI's CheckpointSaver makes its (empty) folder when it is built, as in every zoo bundle
    assert not [p for p in root.rglob("*") if p.is_file()]
    # the built-in synthetic data are written by initialize, not by resolving the datalist
    parser.update({"datalist": "synthetic"})
    assert parser.get_parsed_content("datalist_file", lazy=False).endswith("datalist.json")
    assert not (root / "eval").exists()
    assert json.loads((BUNDLE / "configs" / "train.json").read_text())["run"] == ["$@train#trainer.run()"]
