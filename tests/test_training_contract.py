"""What the training config's keys mean, checked through the real train.json pipeline (in process, small data):
the 3D steps are cached, a batch is `batch_size` patches, an epoch is `patches_per_epoch` patches, command-line
words act as users mean them, checkpoints and MLflow runs survive crashes and are never replaced by accident."""

import json
import math

import pytest
import torch
from conftest import REPO

from lecl_transforms import LECLInputError
from lecl_transforms.data import paper_patches_per_epoch, tiles_per_image
from lecl_transforms.engines import cache_split, resolve_patches_per_epoch
from lecl_transforms.utils import flag, optional
from lecl_transforms.errors import find_input_error

CONFIGS = REPO / "bundle" / "configs"


def workflow(bundle_root, datalist, **overrides):
    """The quick config on ``datalist`` (3 small stacks from conftest), through MONAI's ConfigWorkflow."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")], workflow_type=None,
                        run_id="training", logging_file=False)
    settings = {"bundle_root": str(bundle_root), "datalist": str(datalist), "patch_size": 64, "mlflow": False,
                **overrides}
    for key, value in settings.items():
        wf.parser[key] = value
    return wf


@pytest.fixture
def datalist(synth_dir):
    return synth_dir / "datalist.json"


def test_3d_steps_run_once_per_stack_over_two_epochs(tmp_path, datalist, monkeypatch):
    """Nested Compose made MONAI cache nothing: the 3D k-means ran again every epoch. Now once per stack."""
    import lecl_transforms.transforms.functional as F

    calls = []
    original = F.nuclei_mask_3d
    monkeypatch.setattr(F, "nuclei_mask_3d", lambda *a, **k: calls.append(1) or original(*a, **k))
    wf = workflow(tmp_path, datalist, epochs=2, val_interval=1, patches_per_epoch=16)
    wf.initialize()
    wf.run()
    n_stacks = len(json.loads(datalist.read_text())["training"]) + len(json.loads(datalist.read_text())["validation"])
    assert len(calls) == n_stacks  # 2 epochs with validation each: still one call per stack
    cached, per_draw = cache_split(wf.parser.get_parsed_content("train#preprocessing"))
    assert {"NucleiMask3Dd", "SliceSetsd", "ThreeRegionLabeld", "ChannelComposited"} <= set(cached)
    assert per_draw[0] == "RandSpatialCropSamplesd" and "HoVerNetTargetsd" in per_draw


@pytest.mark.parametrize("samples_per_image", [1, 2, 4])
def test_a_batch_is_batch_size_patches(tmp_path, datalist, samples_per_image):
    wf = workflow(tmp_path, datalist, batch_size=4, samples_per_image=samples_per_image, patches_per_epoch=12)
    wf.initialize()
    loader = wf.parser.get_parsed_content("train#dataloader")
    batches = [b["emip"].shape for b in loader]
    assert batches[0] == (4, 3, 64, 64)
    assert len(loader) == math.ceil(12 / 4) and sum(s[0] for s in batches) == 12


def test_samples_per_image_must_divide_batch_size(tmp_path, datalist):
    wf = workflow(tmp_path, datalist, batch_size=3, samples_per_image=2)
    with pytest.raises(Exception) as error:
        wf.initialize()
    assert "samples_per_image" in str(find_input_error(error.value))


def test_an_epoch_is_the_papers_epoch(tmp_path, datalist):
    # the paper: 370 patches per epoch at batch 8 -> 47 steps
    wf = workflow(tmp_path, datalist, batch_size=8, samples_per_image=1, patches_per_epoch=370)
    wf.initialize()
    assert len(wf.parser.get_parsed_content("train#dataloader")) == 47
    # patches_per_epoch null: the paper's rule, 256-px tiles with 10 % overlap (stride 230)
    assert tiles_per_image((256, 256), 256) == 1
    assert tiles_per_image((1024, 1024), 256) == 25  # 1 + ceil(768 / 230) = 5 per side
    assert tiles_per_image((1024, 1536), 256) == 5 * 7  # 1 + ceil(1280 / 230) = 7
    assert paper_patches_per_epoch([(1024, 1024)] * 10 + [(1024, 1536)] * 3, 256) == 10 * 25 + 3 * 35
    assert resolve_patches_per_epoch(None, [(96, 96)] * 2, 64) == 2 * 4
    assert resolve_patches_per_epoch("null", [(96, 96)], 64) == 4 and resolve_patches_per_epoch(370, [], 256) == 370
    with pytest.raises(LECLInputError, match="patches_per_epoch"):
        resolve_patches_per_epoch("many", [], 256)


def test_train_json_states_the_schedule_in_patch_epochs():
    config = json.loads((CONFIGS / "train.json").read_text())
    assert config["patches_per_epoch"] is None and config["samples_per_image"] == 1
    assert config["batch_size"] == "$8 if @stage == 0 else 3"
    docs = (REPO / "bundle" / "docs" / "README.md").read_text()
    for key in ("patches_per_epoch", "batch_size", "lr_step_epochs", "contrast_start_epoch", "val_interval"):
        assert f"`{key}`" in docs


@pytest.mark.parametrize("word,value", [("false", False), ("False", False), ("0", False), (0, False), (False, False),
                                        ("true", True), ("True", True), ("1", True), ("yes", True), (True, True)])
def test_flag_reads_what_users_type(word, value):
    assert flag(word, "mlflow") is value


def test_flag_refuses_other_words_and_optional_reads_null():
    with pytest.raises(LECLInputError, match="--mlflow true or --mlflow false"):
        flag("maybe", "mlflow")
    assert optional("null") is None and optional("None") is None and optional("x.json") == "x.json"


def test_no_datalist_is_a_clear_error(tmp_path):
    wf = workflow(tmp_path, "null")
    with pytest.raises(Exception) as error:
        wf.initialize()
    message = str(find_input_error(error.value))
    assert "no datalist given" in message and "--datalist synthetic" in message


def test_one_class_and_train_validation_overlap_stop_the_run(tmp_path, synth_dir):
    content = json.loads((synth_dir / "datalist.json").read_text())
    base = synth_dir.resolve()
    same = {"training": [{"image": str(base / e["image"]), "points": str(base / e["points"])}
                         for e in content["training"]]}
    same["validation"] = same["training"]
    (tmp_path / "same.json").write_text(json.dumps(same))
    with pytest.raises(Exception) as error:
        workflow(tmp_path / "a", tmp_path / "same.json").initialize()
    assert "in both training and validation" in str(find_input_error(error.value))
    # one class only: rewrite the clicks as all negative
    points = tmp_path / "negative.csv"
    rows = (base / content["training"][0]["points"]).read_text().splitlines()
    points.write_text("\n".join([rows[0]] + [",".join(r.split(",")[:3] + ["1"]) for r in rows[1:]]) + "\n")
    one = {"training": [{"image": same["training"][0]["image"], "points": str(points)}],
           "validation": [{"image": str(base / e["image"]), "points": str(base / e["points"])}
                          for e in content["validation"]]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    with pytest.raises(Exception) as error:
        workflow(tmp_path / "b", tmp_path / "one.json").initialize()
    assert "no marker-positive click" in str(find_input_error(error.value))
    wf = workflow(tmp_path / "c", tmp_path / "one.json", allow_suspicious_input="true")
    wf.initialize()  # allowed explicitly


def test_existing_models_are_never_replaced_without_overwrite(tmp_path, datalist):
    stage0 = tmp_path / "models" / "stage0"
    stage0.mkdir(parents=True)
    (stage0 / "model.pt").write_bytes(b"an earlier run's best model")
    with pytest.raises(Exception) as error:
        workflow(tmp_path, datalist).initialize()
    assert "--resume true" in str(find_input_error(error.value)) and "--overwrite true" in str(error.value.__cause__ or
                                                                                                 error.value)
    assert (stage0 / "model.pt").read_bytes() == b"an earlier run's best model"


def test_a_crashed_run_is_marked_failed_and_the_next_run_trains(tmp_path, datalist, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lecl_transforms.losses import LECLLoss

    original = LECLLoss.forward
    calls = []

    def crash_on_second_step(self, pred, target):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash (out of memory, a killed worker, ...)")
        return original(self, pred, target)

    monkeypatch.setattr(LECLLoss, "forward", crash_on_second_step)
    wf = workflow(tmp_path, datalist, mlflow=True, epochs=1, val_interval=1, patches_per_epoch=16)
    wf.initialize()
    with pytest.raises(RuntimeError) as error:
        wf.run()
    assert "simulated crash" in str(error.value.__cause__)
    monkeypatch.setattr(LECLLoss, "forward", original)
    wf = workflow(tmp_path, datalist, mlflow=True, epochs=1, val_interval=1, patches_per_epoch=16)
    wf.initialize()
    wf.run()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/eval/mlruns.db")
    runs = client.search_runs(client.get_experiment_by_name("lecl").experiment_id,
                              order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert (tmp_path / "models" / "stage0" / "model_final.pt").is_file()
    assert torch.load(tmp_path / "models" / "stage0" / "model_final.pt", weights_only=True)["trainer"]["iteration"] == 2


def test_slice_views_draw_single_slices_with_their_own_labels(tmp_path, datalist):
    """slice_view_share 1: every patch is one z-slice of its stack (scaled as inference scales slices), its label
    holding fewer nucleus pixels than the EMIP's (tips cut, nuclei of other depths absent); 0: the EMIP only."""
    wf = workflow(tmp_path, datalist, batch_size=4, samples_per_image=2, patches_per_epoch=8, slice_view_share=1.0)
    wf.initialize()
    cached, per_draw = cache_split(wf.parser.get_parsed_content("train#preprocessing"))
    assert "SliceViewsd" in cached and per_draw[0] == "RandSliceViewd"
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["emip"].shape == (4, 3, 64, 64) and float(batch["target_np"].sum()) > 0
    emip_only = workflow(tmp_path / "e", datalist, batch_size=4, samples_per_image=2, patches_per_epoch=8)
    emip_only.initialize()
    cached, per_draw = cache_split(emip_only.parser.get_parsed_content("train#preprocessing"))
    assert "SliceViewsd" not in cached and "RandSliceViewd" not in per_draw
    emip_batch = next(iter(emip_only.parser.get_parsed_content("train#dataloader")))
    assert float(batch["target_np"].mean()) < float(emip_batch["target_np"].mean())
