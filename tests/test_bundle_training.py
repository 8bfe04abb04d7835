"""The training bundle as users run it: `python -m monai.bundle run training` (quick config, resume, stage 1,
--tracking mlflow), `torchrun` with the DDP config, and bad config values failing at start."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CONFIGS, QUICK, REPO, bundle_run

from lecl_transforms import read_points
from lecl_transforms.networks import EXTRA_STATE_KEY, HoVerNetSCL, decode_description


def mlflow_runs(bundle_root):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{bundle_root}/eval/mlruns.db")
    experiment = client.get_experiment_by_name("lecl")
    runs = client.search_runs(experiment.experiment_id, order_by=["attributes.start_time ASC"])
    return client, runs


def test_quick_config_trains_and_leaves_checkpoints(quick_run):
    root, _ = quick_run
    stage0 = root / "models" / "stage0"
    assert (stage0 / "model.pt").is_file() and (stage0 / "model_final.pt").is_file()
    assert list(stage0.glob("checkpoint_epoch=*.pt"))
    best = torch.load(stage0 / "model.pt", map_location="cpu", weights_only=True)
    weights = best.get("model", best)  # a plain state dict once the CheckpointSaver saves the network alone
    assert any(k.startswith("type_prediction.") for k in weights)
    # the model describes itself, inside its weights: inference needs no width, patch size or composite restated
    described = decode_description(weights[EXTRA_STATE_KEY])
    assert described["width"] == 0.125 and described["patch_size"] == 128
    assert described["proj_dim"] == 32 and described["composite"]["percentiles"] == [0.5, 99.8]
    HoVerNetSCL(width=0.125).load_state_dict(weights)  # strictly, as the model zoo's ckpt_export loads it


def test_quick_run_is_in_mlflow_with_per_term_losses_and_validation(quick_run):
    root, _ = quick_run
    client, runs = mlflow_runs(root)
    run = runs[-1]
    assert run.info.status == "FINISHED"
    metrics = set(run.data.metrics)
    for term in ("np_ce", "np_dice", "np_entropy", "hv_mse", "hv_msge", "nc_ce", "nc_dice", "nc_entropy",
                 "scl_pixel", "scl_region", "total"):
        assert f"loss_{term}" in metrics
    assert {"val_click_f1", "val_click_recall"} <= metrics
    assert run.data.params["width"] == "0.125" and run.data.params["loss_weights.np_entropy"] == "0.5"
    assert "model_final.pt" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # it really learns: losses fall and the clicks are classified well on the held-out image
    nc_ce = [m.value for m in client.get_metric_history(run.info.run_id, "loss_nc_ce")]
    np_ce = [m.value for m in client.get_metric_history(run.info.run_id, "loss_np_ce")]
    assert nc_ce[-1] < 0.6 * nc_ce[0] and np_ce[-1] < 0.6 * np_ce[0]
    f1 = [m.value for m in client.get_metric_history(run.info.run_id, "val_click_f1")]
    assert len(f1) >= 3 and max(f1) >= 0.7


def test_resume_continues_from_the_last_checkpoint(quick_run, tmp_path):
    """The session's quick run (12 epochs, its synthetic data and checkpoint_epoch=12.pt), copied: one more epoch."""
    shutil.copytree(quick_run[0], tmp_path, dirs_exist_ok=True)
    result = bundle_run(tmp_path, "--epochs", "13", "--val_interval", "1", "--resume", "true")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    resumed = log.split("Engine run resuming")[1]
    assert "Epoch[13] Complete" in log and "Epoch[12] Complete" not in resumed and "Epoch[1] Complete" not in resumed
    state = torch.load(tmp_path / "models" / "stage0" / "checkpoint_epoch=13.pt", map_location="cpu",
                       weights_only=True)
    trainer = state["trainer"]  # Ignite keeps the iteration count: 13 epochs done
    assert trainer["iteration"] == 13 * trainer["epoch_length"] and "memory.pixel_queue" in state["loss"]


def start_training(bundle_root, *overrides, log):
    """``bundle_run`` in the background (its output to the file ``log``), for signalling it."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", QUICK,
           "--bundle_root", str(bundle_root), *overrides]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_for(path, process, timeout=600):
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, f"training ended (status {process.returncode}) before {path.name} was saved"
        assert time.monotonic() - start < timeout, f"no {path.name} after {timeout} s"
        time.sleep(0.2)


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_also_after_a_hard_kill(tmp_path, synth_dir):
    """Ctrl-C (SIGINT) during training: the iteration under way finishes, a full checkpoint is saved, one line says so
    (no traceback), status 130, the MLflow run is KILLED; --resume true continues from it (mid-epoch). A run killed
    hard (SIGKILL) resumes from its last epoch checkpoint and completes."""
    stage0 = tmp_path / "models" / "stage0"
    # 8 patches of batch 4: 2 iterations per epoch; no validation before the end (speed)
    args = small(synth_dir / "datalist.json", "--epochs", "20", "--batch_size", "4", "--val_interval", "20")
    with open(tmp_path / "run1.log", "w") as log:
        process = start_training(tmp_path, *args, log=log)
        wait_for(stage0 / "checkpoint_epoch=1.pt", process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=300) == 130
    output = (tmp_path / "run1.log").read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    stopped = [line for line in output.splitlines() if line.startswith("training stopped by SIGINT")]
    assert len(stopped) == 1 and "run the same command with --resume true to continue" in stopped[0]
    saved = re.search(r"saved (\S+checkpoint_interrupted_iteration=(\d+)\.pt);", stopped[0])
    assert saved and os.path.isfile(saved[1])
    state = torch.load(saved[1], map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "loss"} <= set(state)
    assert state["trainer"]["iteration"] == int(saved[2]) >= 2 and state["trainer"]["epoch_length"] == 2
    assert not (stage0 / "model_final.pt").exists()  # an unfinished run has no final model
    _, runs = mlflow_runs(tmp_path)
    assert runs[-1].info.status == "KILLED"

    # --resume true continues from the interrupted checkpoint (mid-epoch); killed hard (SIGKILL) while it saves the
    # next epoch's checkpoint (MONAI's CheckpointSaver writes in place: the file is cut short)
    interrupted = int(saved[2])
    epoch = interrupted // 2 + 1  # the epoch the interrupted run was in
    shutil.copy2(saved[1], tmp_path / "interrupted.pt")
    with open(tmp_path / "run2.log", "w") as log:
        process = start_training(tmp_path, *args, "--resume", "true", log=log)
        wait_for(stage0 / f"checkpoint_epoch={epoch}.pt", process)
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL
    assert f"Restored all variables from {saved[1]}" in (tmp_path / "run2.log").read_text()
    cut = stage0 / f"checkpoint_epoch={epoch}.pt"
    with open(cut, "r+b") as f:  # whether or not the kill came while writing it: make it the cut-short case
        f.truncate(min(cut.stat().st_size, 4096))
    if not os.path.isfile(saved[1]):  # the kill came after the epoch's checkpoint was whole (and the interrupted one
        shutil.copy2(tmp_path / "interrupted.pt", saved[1])  # deleted): put back what a kill while saving leaves

    # after the hard kill: --resume true passes over the cut file, continues from the newest complete checkpoint (the
    # interrupted one, mid-epoch) and completes
    result = bundle_run(tmp_path, *small(synth_dir / "datalist.json", "--epochs", str(epoch + 1), "--batch_size", "4",
                                         "--val_interval", "20", "--resume", "true"))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"{cut} is incomplete (the run was stopped while saving it)" in log
    assert f"Restored all variables from {saved[1]}" in log
    assert f"Epoch[{epoch}] Complete" in log and f"Epoch[{epoch - 1}] Complete" not in log
    assert f"Epoch[{epoch + 1}] Complete" in log
    final = torch.load(stage0 / "model_final.pt", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == 2 * (epoch + 1)
    assert not os.path.exists(saved[1])  # superseded by the later epoch checkpoints: deleted


def test_stage1_starts_from_the_stage0_model_with_all_layers(small_run, tmp_path, synth_dir):
    (tmp_path / "models" / "stage0").mkdir(parents=True)
    shutil.copy2(small_run[0] / "models" / "stage0" / "model.pt", tmp_path / "models" / "stage0" / "model.pt")
    result = bundle_run(tmp_path, *small(synth_dir / "datalist.json"), "--stage", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage0/model.pt" in result.stdout + result.stderr  # the CheckpointLoader reports what it restored
    assert (tmp_path / "models" / "model.pt").is_file()


def small(datalist, *overrides):
    """Overrides for a one-epoch run on the small conftest stacks (seconds, not minutes)."""
    return ("--datalist", str(datalist), "--patch_size", "64", "--epochs", "1", "--patches_per_epoch", "8",
            "--val_interval", "1", *overrides)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, synth_dir):
    """One ``small`` run with --mlflow false --resume false, shared: the calibration and --mlflow/--resume false
    checks read it, stage 1 starts from its stage 0 model."""
    root = tmp_path_factory.mktemp("small_run")
    result = bundle_run(root, *small(synth_dir / "datalist.json"), "--mlflow", "false", "--resume", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def assert_false_was_false(bundle_root):
    """--mlflow false: nothing logged; --resume false: a fresh run trained to its end."""
    assert not (bundle_root / "eval" / "mlruns.db").exists()
    assert (bundle_root / "models" / "stage0" / "model_final.pt").is_file()


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, synth_dir):
    """Two ``small`` epochs with --tracking mlflow and validation through the inference path as the key metric (one
    run for the two tests below)."""
    root = tmp_path_factory.mktemp("tracked_run")
    result = bundle_run(root, *small(synth_dir / "datalist.json", "--epochs", "2"), "--tracking", "mlflow",
                        "--val_inference_metrics", "true", "--val_key_metric", "val_stack_nc_f1")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_tracking_mlflow_logs_each_metric_once_per_epoch(tracked_run):
    root, _ = tracked_run
    client, runs = mlflow_runs(root)
    assert len(runs) == 1
    run = runs[0]
    assert "train_loss" in run.data.metrics and run.data.params["patches_per_epoch"] == "8"
    for name in ("loss_total", "loss_nc_ce", "val_click_f1", "val_click_recall", "val_stack_nc_f1"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name  # once per epoch, not twice


def test_validation_through_the_inference_path_can_be_the_key_metric(tracked_run, tmp_path, synth_dir):
    """Validation scores the held-out stacks as `lecl predict` + `lecl evaluate` would (per slice, linked in 3D,
    matched to the clicks), beside the click metric, and the best model is chosen by it when asked."""
    root, result = tracked_run
    client, runs = mlflow_runs(root)
    metrics = runs[-1].data.metrics
    for name in ("val_stack_nc_f1", "val_stack_np_f1", "val_stack_macro_f1", "val_click_f1"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert "val_stack_nc_f1 best value" in result.stderr + result.stdout
    assert (root / "models" / "stage0" / "model.pt").is_file()
    bad = bundle_run(tmp_path / "b", *small(synth_dir / "datalist.json"), "--val_key_metric", "val_stack_nc_f1",
                     "--val_inference_metrics", "false")
    assert bad.returncode != 0 and "val_inference_metrics true" in bad.stderr


def test_training_calibrates_the_postprocessing_and_records_the_pixel_size(small_run, tmp_path, synth_dir):
    """When training completes, np_threshold is calibrated on the validation stack through the inference path and
    stored, with its F1 curve, in model.pt and model_final.pt, beside the training images' pixel size; lecl predict
    then uses the stored threshold. --calibrate false leaves the threshold out (the pixel size is still recorded)."""
    from lecl_transforms.data import REGIMES
    from lecl_transforms.networks import read_model_description
    from lecl_transforms.tools.cli import main

    root, result = small_run
    log = result.stdout + result.stderr
    assert "post-processing calibrated on 1 validation stacks" in log
    grid = json.loads((CONFIGS / "quick.json").read_text())["calibration_grid"]["np_threshold"]  # bundle_run's config
    models = root / "models" / "stage0"
    for name in ("model.pt", "model_final.pt"):
        described = read_model_description(models / name)
        pixel = REGIMES["clean"].pixel_size
        assert described.pixel_size_yx == [pixel, pixel], name
        calibration = described.calibration
        curve = {row["np_threshold"]: row["np_f1"] for row in calibration["curve"]}
        assert sorted(curve) == sorted(grid) and calibration["stacks"] == 1
        assert described.np_threshold == calibration["values"]["np_threshold"]
        assert curve[described.np_threshold] == calibration["score"] == max(curve.values())
    weights = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    HoVerNetSCL(width=0.125).load_state_dict(weights)  # still the zoo's plain state dict, strictly loadable

    stored = read_model_description(models / "model.pt").np_threshold
    stack = json.loads((synth_dir / "datalist.json").read_text())["validation"][0]["image"]
    out = tmp_path / "pred"
    assert main(["predict", "--image", str(synth_dir / stack), "--model", str(models / "model.pt"), "--out", str(out),
                 "--device", "cpu"]) == 0
    parameters = json.loads((out / "predict_summary.json").read_text())["parameters"]
    assert parameters["np_threshold"] == stored and parameters["postprocessing_from"]["np_threshold"] == \
        "model (calibrated)"

    off = bundle_run(tmp_path / "off", *small(synth_dir / "datalist.json"), "--mlflow", "False", "--resume", "False",
                     "--calibrate", "false")
    assert off.returncode == 0, off.stderr[-3000:]
    assert_false_was_false(tmp_path / "off")  # the word False as false
    described = read_model_description(tmp_path / "off" / "models" / "stage0" / "model.pt")
    assert described.np_threshold is None and described.calibration is None and described.pixel_size_yx is not None
    assert "post-processing calibrated" not in off.stdout + off.stderr


def test_command_line_false_means_false(small_run):
    """--mlflow false --resume false (the shared run); the words False and 0 are checked alike by the calibration
    test's --calibrate false run and the training-plan test's run (planned_run)."""
    assert_false_was_false(small_run[0])


def test_command_line_null_and_bad_words_give_one_short_message(tmp_path, synth_dir):
    result = bundle_run(tmp_path, "--datalist", "null")
    assert result.returncode != 0
    assert "no datalist given" in result.stderr and "--datalist synthetic" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and result.stderr.count("no datalist given") == 1
    result = bundle_run(tmp_path, *small(synth_dir / "datalist.json", "--mlflow", "maybe"))
    assert result.returncode != 0 and "--mlflow true or --mlflow false" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    result = bundle_run(tmp_path, *small(synth_dir / "datalist.json", "--marker_channel", "3"))
    assert result.returncode != 0 and "marker_channel=3, but" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and not (tmp_path / "models").exists()


def test_zero_epochs_is_refused_before_anything_is_written(tmp_path):
    result = bundle_run(tmp_path, "--epochs", "0")  # the built-in synthetic data would be written first
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert "config: epochs (--epochs): got 0" in result.stderr and "Fix: give a whole number of epochs >= 1" in \
        result.stderr
    assert not any(tmp_path.iterdir())


def test_resume_with_no_epochs_left_says_raise_epochs(tmp_path, synth_dir):
    """A run that completed 4 epochs (ignite keeps iteration and epoch_length) resumed with --epochs 2 or 4: nothing
    to train, said at start; the checkpoint stays."""
    stage0 = tmp_path / "models" / "stage0"
    stage0.mkdir(parents=True)
    checkpoint = stage0 / "checkpoint_epoch=4.pt"
    torch.save({"model": {}, "trainer": {"epoch_length": 2, "iteration": 8, "max_epochs": 4}}, checkpoint)
    before = checkpoint.read_bytes()
    for epochs in ("2", "4"):
        result = bundle_run(tmp_path, *small(synth_dir / "datalist.json", "--epochs", epochs, "--resume", "true"))
        assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
        assert "has already completed 4 epochs" in result.stderr and "more than 4 (e.g. --epochs" in result.stderr
    assert checkpoint.read_bytes() == before and sorted(p.name for p in stage0.iterdir()) == [checkpoint.name]


@pytest.fixture(scope="module")
def planned_run(tmp_path_factory, synth_dir):
    """Three ``small`` epochs of 2 steps of 4 patches (2 per stack draw), the contrast terms from epoch 2, --mlflow 0
    --resume 0 (one run for the two tests below and the word 0 of the false check)."""
    root = tmp_path_factory.mktemp("planned_run")
    result = bundle_run(root, *small(synth_dir / "datalist.json", "--epochs", "3", "--contrast_start_epoch", "2",
                                     "--batch_size", "4", "--samples_per_image", "2", "--mlflow", "0", "--resume", "0"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_key_metric_leaves_out_the_contrast_terms_that_start_late(planned_run):
    """The contrast terms join loss_total at contrast_start_epoch (it jumps up): the key metric is loss_hovernet, the
    terms active from epoch 1, and the log says when the contrast terms start."""
    _, result = planned_run
    log = result.stdout + result.stderr
    assert log.count("Key metric: loss_hovernet best value") == 3 and "Key metric: loss_total" not in log
    assert log.count("the supervised contrast terms (scl_pixel, scl_region) start now") == 1
    assert "Epoch[2]: the supervised contrast terms" in log
    epoch1 = next(line for line in log.splitlines() if "Epoch[1] Metrics -- loss_" in line)
    assert "loss_scl_pixel: 0.0000" in epoch1  # off in epoch 1: the total is the HoVer-Net terms' sum
    values = {key: float(value) for key, value in re.findall(r"(loss_\w+): ([0-9.]+)", epoch1)}
    assert values["loss_hovernet"] == pytest.approx(values["loss_total"], abs=2e-4)


def test_training_log_states_the_plan(planned_run):
    root, result = planned_run
    assert_false_was_false(root)  # the word 0 as false
    log = result.stdout + result.stderr
    assert "4 patches per step (batch_size), 2 steps per epoch = 8 patches drawn from 1 stacks, 3 epochs" in log
    assert "cached once per stack: LoadImaged, NucleiMarkerChannelsd, LoadPointsd" in log
    assert "run on every draw (2 patch(es) each): RandSpatialCropSamplesd" in log


def test_ddp_config_runs_two_cpu_processes_and_validates_each_stack_once(tmp_path):
    from dataclasses import replace

    from lecl_transforms.data import REGIMES, write_dataset

    data = tmp_path / "data"
    write_dataset(data, n_images=5, seed=3, cfg=replace(REGIMES["clean"], size_yx=96))
    entries = [{"image": f"images/synth_{i:03d}.tif", "points": f"points/synth_{i:03d}.csv"} for i in range(5)]
    datalist = data / "ddp.json"
    datalist.write_text(json.dumps({"training": entries[:2], "validation": entries[2:]}))  # 3 stacks, 2 processes
    config = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'quick.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    # --standalone: a free port for the rendezvous (a fixed one collides with a run of this test elsewhere)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    root = tmp_path / "bundle"
    result = bundle_run(root, *small(datalist, "--epochs", "2", "--val_interval", "2"), config=config,
                        launcher=launcher)
    # on failure: each process's own error (torchrun's summary at the end names only exit codes)
    errors = "\n".join(line for line in result.stderr.splitlines() if re.match(r"\[rank\d\]:", line))
    assert result.returncode == 0, f"{errors[-4000:]}\n...\n{result.stderr[-2000:]}"
    assert "terminate called" not in result.stderr
    assert (root / "models" / "stage0" / "model_final.pt").is_file()
    log = result.stdout + result.stderr
    assert log.count("Epoch[2] Metrics -- val_click") == 1  # metrics reported once, by rank 0
    # no padding by repeats: every validation click is counted exactly once over the two processes
    clicks = sum(len(read_points(data / e["points"])[1]) for e in entries[2:])
    assert f"val_clicks: {clicks}.0000" in log
    # calibration pools the same clicks over the processes, which agree on what to calibrate (no hang, no crash)
    assert f"post-processing calibrated on 3 validation stacks ({clicks} clicks" in log


@pytest.mark.parametrize("override,message", [
    (("--marker_channel", "3"), "marker_channel=3, but"),
    (("--patch_size", "250"), "config: patch_size"),
    (("--datalist", "/nonexistent/datalist.json"), "datalist not found"),
    (("--loss_weights#np_bce", "1.0"), "unknown loss term"),
])
def test_bad_config_values_fail_at_start(tmp_path, override, message):
    from monai.bundle import ConfigWorkflow

    from lecl_transforms.errors import find_input_error

    workflow = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")],
                              workflow_type=None, run_id="training")
    workflow.parser["bundle_root"] = str(tmp_path)
    key, value = override
    workflow.parser[key.lstrip("-")] = value if not value.replace(".", "").isdigit() else float(value) \
        if "." in value else int(value)
    with pytest.raises(Exception) as error:
        workflow.initialize()
        workflow.parser.get_parsed_content("train#trainer")
    found = find_input_error(error.value)
    text = str(found) if found else repr(error.value) + str(error.value.__cause__)
    assert message in text
    assert not (tmp_path / "models").exists()  # nothing trained


def test_lecl_demo_runs_end_to_end(tmp_path):
    """README's first command, the whole job: synth -> prepare -> train -> predict -> evaluate (shortened: 1 epoch).
    What it prints is what metrics.json holds, and every output is where it says. (Shortened further: 3 stacks, the
    fewest it takes: one each for training, validation and test.)"""
    result = subprocess.run([sys.executable, "-m", "lecl_transforms", "demo", "--out", str(tmp_path / "demo"),
                             "--epochs", "1", "--n-images", "3"], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    demo = tmp_path / "demo"
    assert (demo / "data" / "preview.png").is_file() and list((demo / "prepared").glob("*_qc.png"))
    assert (demo / "models" / "stage0" / "model.pt").is_file() and (demo / "eval" / "mlruns.db").is_file()
    assert "validation click F1" in result.stdout and "mlflow ui" in result.stdout
    datalist = json.loads((demo / "data" / "datalist.json").read_text())
    test_stems = [os.path.basename(e["image"])[:-4] for e in datalist["test"]]
    for stem in test_stems:
        assert (demo / "predictions" / f"{stem}_pred.csv").is_file()
    pooled = json.loads((demo / "predictions" / "metrics.json").read_text())["pooled"]
    assert f"detection F1 {pooled['np_f1']:.3f}" in result.stdout
    assert f"marker-positive F1 {pooled['nc_f1']:.3f}" in result.stdout
    assert "lecl predict --input-dir" in result.stdout  # what to do next with one's own data
    # the evaluation is logged beside the training, in the same MLflow store
    _, runs = mlflow_runs(demo)
    assert any(r.info.run_name.startswith("evaluate-") and "np_f1" in r.data.metrics for r in runs)
