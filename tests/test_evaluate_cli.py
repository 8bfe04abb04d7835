"""``lecl evaluate`` through the real command line: known scores on a hand-made prediction, and every bad input or
output folder refused before any work with one where/problem/fix message (exit 2), nothing of the user's replaced."""

import json

import numpy as np
import pytest

from lecl_transforms.tools.cli import main

from conftest import REPO, write_imagej_zcyx
from test_cli_errors import _refused

TRUTH = "z,y,x,label\n1,8,8,2\n2,20,20,1\n1,8,24,1\n"
# two predictions on clicks (0.5 um off), one far from any: precision 2/3, recall 2/3
PRED = "id,z,y,x,label,z_start,z_stop\n1,1,8.5,8,2,0,2\n2,2,20,21,1,1,3\n3,1,30,2,1,1,1\n"


@pytest.fixture
def case(tmp_path):
    """A datalist with one 4-slice stack and its clicks, and a prediction folder for it."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    data.mkdir()
    pred.mkdir()
    write_imagej_zcyx(data / "stack.tif", np.zeros((2, 4, 32, 32), np.uint16))
    (data / "stack.csv").write_text(TRUTH)
    (data / "datalist.json").write_text(json.dumps({"test": [{"image": "stack.tif", "points": "stack.csv"}]}))
    (pred / "stack_pred.csv").write_text(PRED)
    return tmp_path


def _evaluate(case, *extra, out="metrics"):
    return ["evaluate", "--pred", str(case / "pred"), "--truth", str(case / "data" / "datalist.json"),
            *(["--out", str(case / out)] if out else []), *extra]


def test_scores_and_manifest(case):
    assert main(_evaluate(case, "--no-mlflow")) == 0
    report = json.loads((case / "metrics" / "metrics.json").read_text())
    assert report["pooled"]["np_precision"] == pytest.approx(2 / 3)
    assert report["pooled"]["np_recall"] == pytest.approx(2 / 3)
    assert report["per_stack"][0]["spacing"] == [2.0, 0.5, 0.5]
    manifest = json.loads((case / "metrics" / "lecl_evaluate.json").read_text())
    assert manifest["files"] == ["metrics.json", "metrics.md"]


def test_users_own_metrics_are_never_replaced(case, capsys):
    out = case / "metrics"
    out.mkdir()
    (out / "metrics.md").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        _refused(capsys, _evaluate(case, "--no-mlflow", *extra), "metrics.md", "not written by lecl evaluate")
    assert (out / "metrics.md").read_text() == "my notes" and not (out / "metrics.json").exists()


def test_rerun_into_its_own_folder_needs_overwrite(case, capsys):
    assert main(_evaluate(case, "--no-mlflow")) == 0
    before = (case / "metrics" / "metrics.json").read_text()
    _refused(capsys, _evaluate(case, "--no-mlflow", "--radius-um", "0.1"), "earlier lecl evaluate output",
             "--overwrite")
    assert (case / "metrics" / "metrics.json").read_text() == before
    assert main(_evaluate(case, "--no-mlflow", "--radius-um", "0.1", "--overwrite")) == 0
    # 0.1 um: every prediction is at least 0.25 um from its click
    assert json.loads((case / "metrics" / "metrics.json").read_text())["pooled"]["tp"] == 0


def test_default_out_is_the_prediction_folder(case):
    """--out left out: the metrics go beside lecl predict's files, which stay (no lecl_predict.json needed)."""
    assert main(_evaluate(case, "--no-mlflow", out=None)) == 0
    assert (case / "pred" / "metrics.json").is_file() and (case / "pred" / "stack_pred.csv").read_text() == PRED


def test_out_that_is_a_file_is_refused(case, capsys):
    (case / "taken.txt").write_text("mine")
    _refused(capsys, _evaluate(case, "--no-mlflow", out="taken.txt"), "taken.txt", "is a file")
    assert (case / "taken.txt").read_text() == "mine"


@pytest.mark.parametrize("uri, problem", [("foo://bar", "'foo://'"), ("file:///tmp/mlruns", "'file://'"),
                                          ("some/folder", "plain path")])
def test_unsupported_tracking_uri_is_refused_before_any_work(case, capsys, uri, problem):
    _refused(capsys, _evaluate(case, "--tracking-uri", uri), "--tracking-uri", problem, "sqlite:///")
    assert not (case / "metrics").exists()


def test_mlflow_store_and_artifacts_stay_in_the_output_folder(case, monkeypatch):
    """The default store is mlruns.db in --out, its artifacts in mlruns/ beside it: nothing in the working folder or
    under the repository's bundle/ (lecl evaluate run from the repository root)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(REPO)
    bundle_before = sorted(p.as_posix() for p in (REPO / "bundle").rglob("*"))
    mlruns_before = (REPO / "mlruns").exists()
    assert main(_evaluate(case)) == 0
    out = case / "metrics"
    assert sorted(p.as_posix() for p in (REPO / "bundle").rglob("*")) == bundle_before
    assert (REPO / "mlruns").exists() == mlruns_before
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    run = client.search_runs(client.get_experiment_by_name("lecl").experiment_id)[0]
    assert run.data.metrics["np_recall"] == pytest.approx(2 / 3)
    logged = sorted(p.name for p in (out / "mlruns").rglob("metrics.*"))
    assert logged == ["metrics.json", "metrics.md"]


def test_given_sqlite_store_keeps_artifacts_beside_the_database(case, monkeypatch):
    work = case / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = case / "store" / "runs.db"
    store.parent.mkdir()
    assert main(_evaluate(case, "--tracking-uri", f"sqlite:///{store}")) == 0
    assert sorted(p.name for p in (store.parent / "mlruns").rglob("metrics.*")) == ["metrics.json", "metrics.md"]
    assert not any(work.iterdir()) and not (case / "metrics" / "mlruns.db").exists()


def test_truth_click_outside_the_stack_is_refused(case, capsys):
    (case / "data" / "stack.csv").write_text(TRUTH + "999,8,8,1\n")
    _refused(capsys, _evaluate(case, "--no-mlflow"), "stack.csv", "line 5", "outside the image", "(4, 32, 32)")
    assert not (case / "metrics" / "metrics.json").exists()


@pytest.mark.parametrize("radius", ["0", "-1"])
def test_radius_must_be_positive(case, capsys, radius):
    _refused(capsys, _evaluate(case, "--no-mlflow", "--radius-um", radius), "radius_um", "> 0", "--radius-um")
    assert not (case / "metrics").exists()


def test_missing_spacing_is_given_with_the_spacing_option(case, capsys):
    import tifffile

    tifffile.imwrite(case / "data" / "stack.tif", np.zeros((4, 2, 32, 32), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})  # no spacing stated
    _refused(capsys, _evaluate(case, "--no-mlflow"), "stack.tif", "voxel spacing", "--spacing DZ DY DX")
    assert main(_evaluate(case, "--no-mlflow", "--spacing", "2", "0.5", "0.5")) == 0
    report = json.loads((case / "metrics" / "metrics.json").read_text())
    assert report["pooled"]["np_recall"] == pytest.approx(2 / 3) and report["settings"]["spacing"] == [2, 0.5, 0.5]
