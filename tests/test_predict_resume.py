"""``lecl predict --resume`` after an interrupted run, through the command line with the shipped model on three small
synthetic stacks: complete stacks are kept (not predicted again), a stack with a half-written or missing file is
predicted again with the same result, the run summary covers every stack, and a resume with other settings or another
model is refused before any work."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from conftest import SHIPPED, stacks_for_the_shipped_model
from lecl_transforms.tools.cli import main

STACKS = ("synth_000", "synth_001", "synth_002")
OUTPUTS = ("_pred.csv", "_instances.tif", "_classes.tif", "_pred_qc.png", "_pred.geojson")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Three stacks predicted once (the reference), in a folder each test copies."""
    root = tmp_path_factory.mktemp("resume")
    images = stacks_for_the_shipped_model(root, n_images=3, size_yx=64, z_slices=4)
    assert main(["predict", "--input-dir", str(images), "--out", str(root / "out"), "--device", "cpu"]) == 0
    return images, root / "out"


def predict(images, out, *extra) -> int:
    return main(["predict", "--input-dir", str(images), "--out", str(out), "--device", "cpu", *extra])


def test_resume_predicts_only_the_incomplete_stack_with_the_same_result(first_run, tmp_path):
    images, reference = first_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    # an interrupted run: synth_001's CSV half written, its GeoJSON not yet, a temporary file left behind
    csv_text = (out / "synth_001_pred.csv").read_text()
    (out / "synth_001_pred.csv").write_text(csv_text[: len(csv_text) // 2])
    (out / "synth_001_pred.geojson").unlink()
    (out / ".synth_001_pred.tmp-0123abcd.geojson").write_text('{"type": "Feat')
    (out / "predict_summary.json").unlink()  # killed before the summary
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    assert predict(images, out, "--resume") == 0

    for stem in STACKS:
        for suffix in OUTPUTS:
            name = f"{stem}{suffix}"
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name  # the same results
            if stem != "synth_001" and name in stamps:
                assert (out / name).stat().st_mtime_ns == stamps[name], f"{name} was written again"
    assert (out / "synth_001_pred_qc.png").stat().st_mtime_ns > stamps["synth_001_pred_qc.png"]  # redone
    assert not list(out.glob(".*.tmp-*"))
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["stacks"] == 3 and summary["resumed"] == 2
    assert {r["stack"]: r["resumed"] for r in summary["per_stack"]} == {
        "synth_000": True, "synth_001": False, "synth_002": True}
    first = json.loads((reference / "predict_summary.json").read_text())
    assert summary["nuclei"] == first["nuclei"] > 0 and summary["positive"] == first["positive"]
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["stack"] for r in rows] == list(STACKS)
    assert rows == list(csv.DictReader(open(reference / "summary.csv", newline="")))
    manifest = json.loads((out / "lecl_predict.json").read_text())
    assert manifest["complete"] and "synth_001_pred_done.json" in manifest["files"]

    # everything complete now: a second resume predicts nothing
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("synth_*")}
    assert predict(images, out, "--resume") == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("synth_*")} == stamps
    assert json.loads((out / "predict_summary.json").read_text())["resumed"] == 3


def test_resume_with_other_settings_or_model_is_refused(first_run, tmp_path, capsys):
    images, reference = first_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "synth_002_pred.csv").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    assert predict(images, out, "--resume", "--overlap", "0.5") == 2
    err = capsys.readouterr().err
    assert "made with other inputs, model or settings" in err and "overlap: 0.25 in the earlier run, 0.5 now" in err
    assert "--overwrite instead of --resume" in err and "Traceback" not in err

    other = tmp_path / "other.pt"  # the same network, saved again: another file, another model as far as a run knows
    weights = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    weights[next(k for k, v in weights.items() if torch.is_floating_point(v))] *= 1.001
    torch.save(weights, other)
    assert predict(images, out, "--resume", "--model", str(other)) == 2
    err = capsys.readouterr().err
    assert f"model: the earlier run used {SHIPPED}" in err and str(other) in err

    extra = tmp_path / "fewer"
    extra.mkdir()
    for stem in STACKS[:2]:
        shutil.copy(images / f"{stem}.tif", extra / f"{stem}.tif")
    assert predict(extra, out, "--resume") == 2
    assert "stacks in the earlier run, not given now" in capsys.readouterr().err

    assert predict(images, out, "--resume", "--overwrite") == 2
    assert "give one of them" in capsys.readouterr().err
    assert predict(images, out) == 2  # neither: the earlier output is named with both ways on
    assert "--resume to finish it" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing was touched

