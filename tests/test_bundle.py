"""Model-zoo readiness of ``bundle/``: metadata valid against the zoo schema (through ``python -m monai.bundle
verify_metadata``, the schema copied to a temporary ``--filepath``, never downloaded), every non-MONAI package
listed, every config loading with ``ConfigParser`` with every reference defined, the inference network exported to
TorchScript with ``ckpt_export`` giving the eager outputs, and the bundle run from a copy of ``bundle/`` in an empty
folder with the package installed from a built wheel, as a zoo user runs it."""

import dataclasses
import json
import logging.config
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
import torch
from conftest import REPO

BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"  # the zoo's schema (tests/data/README.md)
SHIPPED = BUNDLE / "models" / "model.pt"
#: the config sets users run (later files override earlier ones)
CONFIG_SETS = [("train.json",), ("train.json", "quick.json"), ("train.json", "cpu.json"),
               ("train.json", "cpu.json", "demo.json"), ("train.json", "multi_gpu_train.json"),
               ("inference.json",), ("inference.json", "multi_gpu_inference.json"), ("evaluate.json",)]
MONAI_LABEL_KEYS = ("network_def", "preprocessing", "inferer", "postprocessing", "device", "bundle_root")


def _bundle_cli(*args, cwd=REPO, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, timeout=timeout)


@pytest.fixture
def schema_copy(tmp_path):
    pytest.importorskip("jsonschema", reason="verify_metadata needs jsonschema: pip install -e \".[zoo]\"")
    return shutil.copy(SCHEMA, tmp_path / "schema.json")


def test_verify_metadata_passes_and_catches_a_broken_file(schema_copy, tmp_path):
    ok = _bundle_cli("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath", str(schema_copy))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "verified with no error" in ok.stdout + ok.stderr
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]["inputs"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    bad = _bundle_cli("verify_metadata", "--meta_file", str(tmp_path / "broken.json"), "--filepath", str(schema_copy))
    assert bad.returncode != 0 and "inputs" in bad.stderr


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_metadata_lists_every_package_the_bundle_needs():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    listed = {name.lower(): version for name, version in meta["required_packages_version"].items()}
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = {_requirement_name(d) for d in deps} - {"monai", "torch", "numpy"}  # the zoo pins these separately
    assert needed | {"lecl-transforms"} == set(listed), "required_packages_version must list exactly these packages"
    import lecl_transforms

    assert listed["lecl-transforms"] == lecl_transforms.__version__
    assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in listed.values()), listed  # plain `pip install name==v`


def test_metadata_describes_the_real_tensors():
    """``network_data_format`` matches what the shipped network takes and returns."""
    from lecl_transforms.networks import load_model

    fmt = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    net, description = load_model(SHIPPED)
    image = fmt["inputs"]["image"]
    assert image["num_channels"] == description.in_channels == 3
    x = torch.rand(1, image["num_channels"], 64, 64)
    with torch.no_grad():
        out = net(x)
    assert set(fmt["outputs"]) == set(out)  # the metadata's output names are the network's output keys
    for name, tensor in out.items():
        assert fmt["outputs"][name]["num_channels"] == tensor.shape[1] == len(fmt["outputs"][name]["channel_def"])
        assert tensor.shape[-2:] == (64, 64)


def test_logging_conf_loads():
    logging.config.fileConfig(CONFIGS / "logging.conf", disable_existing_loggers=False)


def test_licence_and_model_card_exist():
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    card = (BUNDLE / "docs" / "README.md").read_text()
    for needed in ("z,y,x,label", "Table 1", "monailabel start_server", "model.pt", "Intended use", "Limitations"):
        assert needed in card, needed


@pytest.mark.parametrize("names", CONFIG_SETS, ids=lambda n: "+".join(n))
def test_every_config_loads_and_every_reference_is_defined(names):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in names])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.parse()
    refs = parser.ref_resolver.find_refs_in_config(parser.get(), id="")
    missing = sorted(r for r in refs if r not in parser)
    assert not missing, f"{names}: references to undefined ids {missing}"
    if names[0] == "inference.json":  # what MONAI Label's BundleInferTask reads
        assert all(k in parser for k in MONAI_LABEL_KEYS)
        parser["bundle_root"] = str(BUNDLE)
        for key in ("network_def", "preprocessing", "inferer", "postprocessing"):
            assert parser.get_parsed_content(key) is not None


def _training_parser(*names, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in names])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_cpu_recipe_resolves_to_what_it_says(tmp_path):
    """cpu.json, layered on train.json: the compact network, 8x the quick recipe's optimiser steps, the learning rate
    step, the contrast start, inference-path validation picking model.pt, the calibration grid, the weak label with
    Voronoi-border background; built objects, not just the JSON."""
    from lecl_transforms.networks import HoVerNetSCL
    from lecl_transforms.transforms import resolve_rules

    cpu = _training_parser("train.json", "cpu.json", bundle_root=str(tmp_path))
    quick = _training_parser("train.json", "quick.json", bundle_root=str(tmp_path))
    network = cpu.get_parsed_content("network_def")
    assert isinstance(network, HoVerNetSCL)
    assert sum(p.numel() for p in network.parameters()) < 1e6  # width 0.125: CPU-sized, not the 37.6M full width
    assert all(p.requires_grad for p in network.parameters())  # no pretrained encoder: every layer learns

    def steps(parser):
        patches = parser.get_parsed_content("patches_per_epoch")
        return parser.get_parsed_content("epochs") * patches // parser.get_parsed_content("batch_size")

    assert steps(cpu) == 8 * steps(quick) == 192
    assert cpu.get_parsed_content("patch_size") == quick.get_parsed_content("patch_size") == 128
    scheduler = cpu.get_parsed_content("lr_scheduler")
    assert scheduler.step_size == 36 and scheduler.optimizer.param_groups[0]["lr"] == 1e-3
    assert cpu.get_parsed_content("loss_def").contrast_start_epoch == 6
    flags = cpu.get_parsed_content("flags")
    assert flags["val_inference_metrics"] and flags["calibrate"]
    assert cpu.get_parsed_content("val_key_metric") == "val_stack_macro_f1"  # picks model.pt
    assert cpu.get_parsed_content("calibration_grid")["np_threshold"] == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert resolve_rules(cpu.get_parsed_content("rules")).voronoi_background == 2
    assert cpu.get_parsed_content("num_workers") == 0


def test_ckpt_export_torchscript_gives_the_eager_outputs(tmp_path):
    """Exactly the model zoo CI's export: no ``--key_in_ckpt``, so ``model.pt`` must load strictly as it is."""
    exported = tmp_path / "model.ts"
    run = _bundle_cli("ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(SHIPPED),
                      "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
                      "--bundle_root", str(BUNDLE))
    assert run.returncode == 0, run.stderr[-3000:]
    from lecl_transforms.networks import load_model

    scripted = torch.jit.load(str(exported))
    eager, _ = load_model(SHIPPED)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = eager(x), scripted(x)
    for key in ("nucleus_prediction", "horizontal_vertical", "type_prediction"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(exported), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads((CONFIGS / "metadata.json").read_text())[
        "version"]


def test_shipped_model_is_small_and_describes_itself():
    """A plain state dict (what MONAI's loaders and the zoo expect), its description under ``_extra_state``."""
    from lecl_transforms.networks import EXTRA_STATE_KEY, read_model_description

    assert SHIPPED.stat().st_size < 5 * 2**20
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert EXTRA_STATE_KEY in state and all(isinstance(v, torch.Tensor) for v in state.values())
    description = read_model_description(SHIPPED)
    assert description.source == "checkpoint" and description.width == 0.125 and description.patch_size == 128
    assert dataclasses.asdict(description)["composite"]["weights"]
    description.network().load_state_dict(state)  # strictly


def test_bundle_runs_from_a_copy_with_the_package_from_a_built_wheel(tmp_path):
    """A zoo user: the bundle folder alone, the package installed from its wheel (not this source tree)."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    # the environment's own setuptools where it has one (the same wheel, without pip first installing setuptools into
    # a fresh isolated build environment: 4 s instead of 20)
    try:
        isolation = ["--no-build-isolation"] if int(metadata.version("setuptools").split(".")[0]) >= 68 else []
    except metadata.PackageNotFoundError:
        isolation = []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("lecl_transforms-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    bundle = tmp_path / "zoo" / "lecl_bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "lib", "bin"))
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import lecl_transforms; print(lecl_transforms.__file__)"],
                           capture_output=True, text=True, cwd=bundle, env={**os.environ, **env})
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr

    from lecl_transforms.data.synthetic import REGIMES
    from lecl_transforms.data.synthetic_dataset import write_dataset

    data = write_dataset(tmp_path / "data", 1, seed=3, cfg=dataclasses.replace(REGIMES["dense"], size_yx=128))
    stack = data.parent / json.loads(data.read_text())["training"][0]["image"]
    infer = _bundle_cli("run", "inference", "--config_file", "configs/inference.json", "--meta_file",
                        "configs/metadata.json", "--image", str(stack), "--output_dir", str(tmp_path / "pred"),
                        "--progress", "false", cwd=bundle, env=env)
    assert infer.returncode == 0, infer.stderr[-3000:]
    summary = json.loads((tmp_path / "pred" / "predict_summary.json").read_text())
    assert summary["nuclei"] > 10 and summary["model"]["checkpoint"] == str(bundle / "models" / "model.pt")
    train = _bundle_cli("run", "training", "--config_file", "['configs/train.json','configs/quick.json']",
                        "--meta_file", "configs/metadata.json", "--epochs", "1", "--synthetic_images", "3",
                        "--patches_per_epoch", "8", cwd=bundle, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (bundle / "models" / "stage0" / "model.pt").is_file()
    # the lecl commands from elsewhere: a clear error, then the bundle named by LECL_BUNDLE
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lecl = [sys.executable, "-m", "lecl_transforms", "predict", "--image", str(stack), "--out", "pred2"]
    run = subprocess.run(lecl, capture_output=True, text=True, cwd=elsewhere, env={**os.environ, **env})
    assert run.returncode != 0 and "LECL_BUNDLE" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    run = subprocess.run(lecl, capture_output=True, text=True, cwd=elsewhere,
                         env={**os.environ, **env, "LECL_BUNDLE": str(bundle)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (elsewhere / "pred2" / "predict_summary.json").is_file()


@pytest.mark.parametrize("stage, init_checkpoint, given, frozen", [
    (0, None, None, False),  # no pretrained encoder weights exist offline: a random encoder is trained, not frozen
    (0, "weights.pt", None, True),  # stage 0 from loaded weights: the paper's frozen encoder
    (1, None, None, False),
    (0, None, True, True),  # the paper's literal stage 0, asked for on the command line
])
def test_stage_0_freezes_only_an_encoder_whose_weights_were_loaded(tmp_path, stage, init_checkpoint, given, frozen):
    overrides = {"bundle_root": str(tmp_path), "stage": stage, "init_checkpoint": init_checkpoint}
    if given is not None:
        overrides["freeze_encoder"] = given
    network = _training_parser("train.json", **overrides).get_parsed_content("network_def")
    encoder = [p.requires_grad for n, p in network.named_parameters() if n.startswith(("conv0.", "res_blocks."))]
    assert encoder and all(not g for g in encoder) == frozen and all(encoder) == (not frozen)
