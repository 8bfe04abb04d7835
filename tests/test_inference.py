"""Inference on 3D stacks as users run it: `lecl predict` and `python -m monai.bundle run inference` (one code path),
with the quick-trained compact model, checked against the synthetic generator's ground truth."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import CONFIGS, REPO, write_imagej_zcyx
from scipy.optimize import linear_sum_assignment

PRED_COLUMNS = ["id", "z", "y", "x", "label", "score", "z_start", "z_stop", "area_px", "z_um", "y_um", "x_um",
                "n_slices", "positive_slices", "centre_slice", "volume_voxels", "volume_um3", "nuclei_mean",
                "nuclei_max", "nuclei_integrated", "marker_mean", "marker_max", "marker_integrated",
                "marker_mean_centre_slice"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def lecl(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lecl_transforms", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=REPO)


def bundle(config, *args, timeout=600):
    """``python -m monai.bundle run <config> --config_file bundle/configs/<config>.json ARGS``."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", config, "--config_file", str(CONFIGS / f"{config}.json"),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def trained(quick_run):
    """(model, synthetic datalist, its test stack) of the session's quick training (width 0.125, patch 128)."""
    root, _ = quick_run
    data = root / "eval" / "synthetic_data"
    test_image = data / json.loads((data / "datalist.json").read_text())["test"][0]["image"]
    return root / "models" / "stage0" / "model.pt", data / "datalist.json", test_image


@pytest.fixture(scope="session")
def predicted(trained, tmp_path_factory):
    model, datalist, _ = trained
    out = tmp_path_factory.mktemp("predict") / "out"
    result = lecl("predict", "--datalist", datalist, "--model", model, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def match_to_truth(rows, truth, max_px=5.0, max_dz=2):
    """Hungarian matching of predicted centroids to true nucleus centres (within max_px in y/x, max_dz slices)."""
    pred = np.array([[float(r["z"]), float(r["y"]), float(r["x"])] for r in rows]).reshape(-1, 3)
    true = np.array([[float(t["centre_z"]), float(t["centre_y"]), float(t["centre_x"])] for t in truth])
    d_yx = np.linalg.norm(pred[:, None, 1:] - true[None, :, 1:], axis=-1)
    ok = (d_yx <= max_px) & (np.abs(pred[:, None, 0] - true[None, :, 0]) <= max_dz)
    cost = np.where(ok, d_yx, 1e6)
    r, c = linear_sum_assignment(cost)
    keep = ok[r, c]
    return r[keep], c[keep]


def test_predict_writes_every_output_and_finds_the_true_nuclei(trained, predicted):
    _, datalist, test_image = trained
    out, _ = predicted
    stem = test_image.stem
    for suffix in ("_pred.csv", "_instances.tif", "_classes.tif", "_pred_qc.png", "_pred.geojson"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    with open(out / f"{stem}_pred.csv", newline="") as f:
        assert next(csv.reader(f)) == PRED_COLUMNS
    rows = read_rows(out / f"{stem}_pred.csv")
    truth = read_rows(datalist.parent / "ground_truth" / f"{stem}_nuclei.csv")
    pred_idx, true_idx = match_to_truth(rows, truth)
    recall, precision = len(true_idx) / len(truth), len(pred_idx) / max(len(rows), 1)
    # the quick model trains for seconds: most nuclei are found; some come out split into pieces along z
    assert recall >= 0.7 and precision >= 0.4, (recall, precision, len(rows), len(truth))
    agree = np.mean([rows[i]["label"] == truth[j]["label"] for i, j in zip(pred_idx, true_idx)])
    assert agree >= 0.7, agree
    # the label image: one id per CSV row, on the slices the CSV says, with the stack's spacing
    with tifffile.TiffFile(out / f"{stem}_instances.tif") as tif:
        labels = tif.asarray()
        assert tif.imagej_metadata["spacing"] == pytest.approx(1.0) and tif.imagej_metadata["unit"] == "um"
    stack = tifffile.imread(test_image)
    assert labels.shape == (stack.shape[0], *stack.shape[2:]) and labels.dtype == np.uint16
    assert set(np.unique(labels)) - {0} == {int(r["id"]) for r in rows}
    for r in rows[:20]:
        zs = np.flatnonzero((labels == int(r["id"])).any(axis=(1, 2)))
        assert (zs.min(), zs.max()) == (int(r["z_start"]), int(r["z_stop"]))
        assert float(r["y_um"]) == pytest.approx(float(r["y"]) * 0.5, abs=0.01)  # y has 2 decimals, y_um 3
    classes = tifffile.imread(out / f"{stem}_classes.tif")
    lut = np.zeros(labels.max() + 1, np.uint8)
    lut[[int(r["id"]) for r in rows]] = [int(r["label"]) for r in rows]
    assert np.array_equal(classes, lut[labels])
    geojson = json.loads((out / f"{stem}_pred.geojson").read_text())
    assert len(geojson["features"]) == len(rows)


def test_run_summary_and_model_used(trained, predicted):
    model, _, test_image = trained
    out, result = predicted
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["stacks"] == 1 and summary["failed"] == 0
    assert summary["model"]["checkpoint"] == str(model) and summary["model"]["width"] == 0.125  # none given
    row = summary["per_stack"][0]
    assert row["image"] == str(test_image) and row["nuclei"] == summary["nuclei"] > 0
    assert row["positive"] + row["negative"] == row["nuclei"] and summary["device"].startswith("cpu")


def test_bundle_inference_config_is_the_same_path(trained, predicted, tmp_path):
    """`python -m monai.bundle run inference --image` gives the CSV `lecl predict` gave."""
    model, _, test_image = trained
    out, _ = predicted
    result = bundle("inference", "--image", test_image, "--checkpoint", model, "--output_dir", tmp_path / "b",
                    "--progress", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    name = f"{test_image.stem}_pred.csv"
    assert (tmp_path / "b" / name).read_text() == (out / name).read_text()


def lecl_in_process(capsys, *args):
    """``lecl ARGS`` through the CLI's entry point in this process (no interpreter start per call): (status,
    stderr). Only an input error or a run error gives a status; anything else raises, as it would print a
    traceback."""
    from lecl_transforms.tools.cli import main

    capsys.readouterr()
    status = main([*map(str, args)])
    return status, capsys.readouterr().err


def test_one_bad_stack_is_named_and_the_others_are_predicted(trained, tmp_path, capsys):
    model, _, test_image = trained
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    shutil.copy(test_image, stacks / "good.tif")
    (stacks / "broken.tif").write_bytes(tifffile.imread(test_image).tobytes()[:5000])
    status, err = lecl_in_process(capsys, "predict", "--input-dir", stacks, "--model", model, "--out", tmp_path / "out")
    assert status != 0
    assert "1 of 2 stack(s) failed" in err and "broken.tif" in err
    assert (tmp_path / "out" / "good_pred.csv").is_file()
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())
    assert summary["stacks"] == 1 and summary["failures"][0]["image"].endswith("broken.tif")
    # nothing of the user's is replaced: the same folder again needs --overwrite
    status, err = lecl_in_process(capsys, "predict", "--input-dir", stacks, "--model", model, "--out", tmp_path / "out")
    assert status == 2 and "--overwrite" in err


def test_bad_inputs_fail_with_clear_errors(trained, tmp_path, capsys):
    model, _, test_image = trained
    status, err = lecl_in_process(capsys, "predict", "--image", test_image, "--model", tmp_path / "none.pt", "--out",
                                  tmp_path / "a")
    assert status == 2 and "model file not found" in err and "Traceback" not in err
    one_channel = write_imagej_zcyx(tmp_path / "one.tif", tifffile.imread(test_image)[:, :1].transpose(1, 0, 2, 3))
    status, err = lecl_in_process(capsys, "predict", "--image", one_channel, "--model", model, "--out", tmp_path / "b")
    assert status == 2 and "one.tif" in err and "channel" in err
    status, err = lecl_in_process(capsys, "predict", "--image", test_image, "--model", model, "--marker-channel", "3",
                                  "--out", tmp_path / "c")
    assert status == 2 and "marker_channel" in err and "Traceback" not in err
    status, err = lecl_in_process(capsys, "predict", "--model", model, "--out", tmp_path / "d")
    assert status == 2 and "exactly one" in err


def test_two_processes_shard_the_stacks_and_write_each_once(trained, tmp_path):
    model, _, test_image = trained
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(test_image, stacks / f"{name}.tif")
    config = f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'multi_gpu_inference.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "monai.bundle", "run", "inference", "--config_file", config, "--input_dir", str(stacks),
           "--checkpoint", str(model), "--output_dir", str(tmp_path / "out"), "--progress", "false"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())
    assert summary["processes"] == 2
    assert sorted(os.path.basename(r["image"]) for r in summary["per_stack"]) == ["a.tif", "b.tif", "c.tif"]
    first = (tmp_path / "out" / "a_pred.csv").read_text()
    assert (tmp_path / "out" / "b_pred.csv").read_text() == first == (tmp_path / "out" / "c_pred.csv").read_text()


def test_evaluate_json_and_lecl_evaluate_score_the_predictions(trained, predicted, tmp_path):
    """`python -m monai.bundle run evaluate` and `lecl evaluate` (the same config) score `lecl predict`'s output
    against the clicks, as the metric functions do, and log to MLflow."""
    from lecl_transforms.metrics import evaluate_predictions

    _, datalist, _ = trained
    out, _ = predicted
    result = bundle("evaluate", "--pred_dir", out, "--datalist", datalist, "--output_dir", tmp_path / "m",
                    "--mlflow", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "m" / "metrics.json").read_text())
    expected = evaluate_predictions(out, datalist, "test")
    assert report["pooled"]["nc_f1"] == pytest.approx(expected["pooled"]["nc_f1"])
    assert report["pooled"]["tp"] + report["pooled"]["fn"] == len(read_rows(
        datalist.parent / json.loads(datalist.read_text())["test"][0]["points"]))
    assert "| **pooled** |" in (tmp_path / "m" / "metrics.md").read_text()
    picture = tmp_path / "m" / report["per_stack"][0]["qc_picture"]  # the matched / missed / false picture
    assert picture.name.endswith("_eval_qc.png") and picture.stat().st_size > 10_000
    store = tmp_path / "mlruns.db"
    result = lecl("evaluate", "--pred", out, "--truth", datalist, "--out", tmp_path / "l",
                  "--tracking-uri", f"sqlite:///{store}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "l" / "metrics.json").read_text())["pooled"] == report["pooled"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    run = client.search_runs(client.get_experiment_by_name("lecl").experiment_id)[0]
    assert run.data.metrics["nc_f1"] == pytest.approx(report["pooled"]["nc_f1"])
    missing = lecl("evaluate", "--pred", tmp_path, "--truth", datalist, "--no-mlflow")
    assert missing.returncode == 2 and "_pred.csv" in missing.stderr
