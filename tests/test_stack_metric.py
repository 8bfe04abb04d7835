"""StackValidator / StackMetric: validation through the inference path (per-slice HoVer-Net, 3D linking, matching to
clicks), run once per evaluation however many metrics share it, summed over processes under DDP."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import write_imagej_zcyx

SIZE, N_Z = 64, 6


# -- a synthetic stack on disk and a network that knows its truth -----------------------------------------------------
def _write_stack(folder, seed=0, index=0):
    from lecl_transforms.data.synthetic import REGIMES, generate_stack

    s = generate_stack(replace(REGIMES["clean"], size_yx=SIZE, z_slices=(N_Z, N_Z)), seed=seed, index=index)
    image = write_imagej_zcyx(folder / f"stack_{seed}_{index}.tif", s.image, s.spacing)
    points = folder / f"stack_{seed}_{index}.csv"
    rows = "\n".join(",".join(str(int(v)) for v in row) for row in s.points())
    points.write_text("z,y,x,label\n" + rows + "\n")
    return s, {"image": str(image), "points": str(points)}


def _composite_slices(stack: np.ndarray) -> torch.Tensor:
    """``(Z, 3, Y, X)``: each slice as the inferer composes it (training composite, scale from the stack's MIP)."""
    from lecl_transforms import ChannelComposite

    x = torch.as_tensor(stack.astype(np.float32))
    composite = ChannelComposite()
    return composite.apply(x, composite.scale(x.amax(1))).permute(1, 0, 2, 3).contiguous()


class TruthNetwork(torch.nn.Module):
    """Outputs the true HoVer-Net maps of whichever slice it is shown (found by its content: with ``roi_size`` = the
    image size one sliding window is one whole slice). ``classes`` ``(Z, Y, X)`` 0/1/2 is the type map it reports, so
    a test can flip a nucleus's class on some slices. Counts its calls."""

    def __init__(self, synthetic, classes: np.ndarray | None = None):
        from lecl_transforms.transforms.functional import hover_maps

        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.slices = _composite_slices(synthetic.image)
        inst = synthetic.instances.astype(np.int64)
        if classes is None:
            lut = np.zeros(inst.max() + 1, np.int64)
            lut[[n["id"] for n in synthetic.nuclei]] = [n["label"] for n in synthetic.nuclei]
            classes = lut[inst]
        logit = lambda onehot: 20.0 * torch.as_tensor(onehot, dtype=torch.float32) - 10.0  # noqa: E731
        self.np_logits = logit(np.stack([inst == 0, inst > 0], 1))
        self.hv = torch.as_tensor(np.stack([hover_maps(z) for z in inst]))
        self.nc_logits = logit(np.stack([classes == c for c in range(3)], 1))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        distance = (x[:, None].float() - self.slices[None]).abs().flatten(2).amax(2)  # (B, Z)
        best, z = distance.min(1)
        assert float(best.max()) < 1e-4, "the network was shown something that is not a whole slice"
        return {"nucleus_prediction": self.np_logits[z], "horizontal_vertical": self.hv[z],
                "type_prediction": self.nc_logits[z]}


class ThresholdNetwork(torch.nn.Module):
    """An imperfect but deterministic network: nucleus where the nuclei channel is bright, no HV, positive where the
    marker is bright. Any input size."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        marker, nuclei = x[:, 0:1], x[:, 1:2]
        zero = torch.zeros_like(nuclei)
        return {"nucleus_prediction": torch.cat([zero, 12 * (nuclei - 0.35)], 1),
                "horizontal_vertical": torch.cat([zero, zero], 1),
                "type_prediction": torch.cat([zero - 5, zero, 12 * (marker - 0.3)], 1)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack_metric")
    synthetic, entry = _write_stack(folder)
    return folder, synthetic, entry


INFERENCE_JSON = os.path.join(os.path.dirname(__file__), "..", "bundle", "configs", "inference.json")


def _validator(entries, network, **settings):
    """A validator on the bundle's own inference pipeline (``inference.json``) with ``settings`` as its keys."""
    from lecl_transforms.engines import StackPipeline
    from lecl_transforms.metrics.stack import StackValidator
    from lecl_transforms.networks import ModelDescription

    pipeline = StackPipeline.from_config(INFERENCE_JSON, ModelDescription(patch_size=SIZE),
                                         {"progress": False, "amp": False, **settings})
    return StackValidator(entries, network, pipeline)


def _flipped(synthetic, nucleus_id: int, to_class: int, z_only: int | None = None) -> np.ndarray:
    net = TruthNetwork(synthetic)
    classes = net.nc_logits.argmax(1).numpy()
    where = synthetic.instances == nucleus_id
    if z_only is not None:
        where &= np.arange(N_Z)[:, None, None] == z_only
    classes[where] = to_class
    return classes


# -- scores ---------------------------------------------------------------------------------------------------------
def test_perfect_outputs_score_one(dataset):
    _, synthetic, entry = dataset
    labels = np.array([n["label"] for n in synthetic.nuclei])
    assert len(labels) == 4 and set(labels) == {1, 2}  # the hand computations below rely on this stack
    network = TruthNetwork(synthetic).train()
    result = _validator([entry], network).run()
    assert result["np_f1"] == 1.0 and result["nc_f1"] == 1.0 and result["macro_f1"] == 1.0
    assert (result["tp"], result["fp"], result["fn"]) == (4, 0, 0)
    assert result["n_true_positive"] == result["n_pred_positive"] == int((labels == 2).sum())
    assert network.training  # the run puts the network in eval mode and gives it back as it was


def test_flipped_classes_score_as_hand_computed(dataset):
    _, synthetic, entry = dataset
    by_label = {n["label"]: n["id"] for n in synthetic.nuclei}  # one positive, one negative nucleus

    # a positive called negative on every slice: positives TP 1, FN 1 -> F1 2/3; negatives TP 2, FP 1 -> F1 4/5
    classes = _flipped(synthetic, by_label[2], 1)
    result = _validator([entry], TruthNetwork(synthetic, classes)).run()
    assert result["np_f1"] == 1.0
    assert result["nc_precision"] == 1.0 and result["nc_recall"] == 0.5
    assert result["nc_f1"] == pytest.approx(2 / 3)
    assert result["f1_negative"] == pytest.approx(4 / 5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)

    # a negative called positive on ONE of its slices is positive in 3D (LinkSlices, the paper's rule):
    # positives TP 2, FP 1 -> P 2/3, R 1, F1 4/5; negatives TP 1, FN 1 -> F1 2/3
    negative = next(n for n in synthetic.nuclei if n["id"] == by_label[1])
    classes = _flipped(synthetic, by_label[1], 2, z_only=negative["z"])
    result = _validator([entry], TruthNetwork(synthetic, classes)).run()
    assert result["np_f1"] == 1.0
    assert result["nc_precision"] == pytest.approx(2 / 3) and result["nc_recall"] == 1.0
    assert result["nc_f1"] == pytest.approx(4 / 5)
    assert result["f1_negative"] == pytest.approx(2 / 3)
    # ... unless two positive slices are required
    result = _validator([entry], TruthNetwork(synthetic, classes), min_positive_slices=2).run()
    assert result["nc_f1"] == 1.0


def test_same_counts_as_the_inference_bundle_and_lecl_evaluate(dataset, tmp_path):
    """With inference.json's settings the validator scores what ``lecl predict`` + ``lecl evaluate`` score (an
    imperfect network, so the comparison is not between two perfect results: link_method overlap keeps its in-plane
    fragments as extra nuclei, which the default chain method absorbs)."""
    from monai.bundle import ConfigParser

    from lecl_transforms.metrics import evaluate_predictions

    _, _, entry = dataset
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"validation": [entry]}))
    network = ThresholdNetwork()
    parser = ConfigParser()
    parser.read_config(os.path.join(os.path.dirname(__file__), "..", "bundle", "configs", "inference.json"))
    parser.update({"datalist": str(datalist), "section": "validation", "output_dir": str(tmp_path / "pred"),
                   "progress": False, "amp": False, "network": network, "inferer#roi_size": SIZE,
                   "inferer#composite": "$lecl_transforms.ChannelComposite()", "predictor#model_info": {},
                   "link_method": "overlap",
                   # the validator's description, not the shipped checkpoint's (its calibrated values would differ)
                   "model_description": f"$lecl_transforms.networks.ModelDescription(patch_size={SIZE})"})
    predictor = parser.get_parsed_content("predictor")
    predictor.run()
    offline = evaluate_predictions(tmp_path / "pred", datalist, section="validation")

    # inference.json's pipeline and settings, as the training builds it
    validator = _validator([entry], network, link_method="overlap")
    result = validator.run()
    assert validator.last_counts.as_dict() == offline["pooled_counts"]
    assert 0 < result["np_f1"] < 1
    assert result == pytest.approx(offline["pooled"], nan_ok=True)


def test_validation_uses_the_inference_configs_pieces_and_settings():
    """The validator's pipeline is inference.json's: the same post-processing, windows, linking and composite; a key
    given to the pipeline (as the training gives its channels) replaces inference.json's value."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(INFERENCE_JSON)
    pipeline = _validator([], ThresholdNetwork()).pipeline
    inferer = pipeline.inferer
    # np_threshold / min_instance_size null: the model's calibrated values, here none, so inference.json's fallback
    assert parser["np_threshold"] is None and parser["min_instance_size"] is None
    assert inferer.postprocess.kwargs["nucleus_threshold"] == parser["fallback_postprocessing"]["np_threshold"]
    assert inferer.postprocess.kwargs["min_instance_size"] == parser["fallback_postprocessing"]["min_instance_size"]
    assert inferer.window.overlap == parser["overlap"] and inferer.slice_batch == parser["slice_batch"]
    assert pipeline.link.transform.method == parser["link_method"]
    assert pipeline.link.transform.min_positive_slices == parser["min_positive_slices"]
    custom = _validator([], ThresholdNetwork(), np_threshold=0.6, overlap=0.5, marker_channel=2, nuclei_channel=1)
    assert custom.pipeline.inferer.postprocess.kwargs["nucleus_threshold"] == 0.6
    assert custom.pipeline.inferer.window.overlap == 0.5
    channels = custom.pipeline.preprocessing.transforms[1]
    assert (channels.selector.nuclei_channel, channels.selector.marker_channel) == (1, 2)


# -- once per evaluation --------------------------------------------------------------------------------------------
def test_two_metrics_run_the_validator_once_per_evaluation(dataset):
    from ignite.engine import Engine

    from lecl_transforms.metrics.stack import StackMetric

    _, synthetic, entry = dataset
    network = TruthNetwork(synthetic)
    validator = _validator([entry], network)
    validator.run()
    per_run = network.calls
    assert per_run > 0

    engine = Engine(lambda engine, batch: {"pred": batch})  # its outputs are ignored by the metrics
    StackMetric(validator, "np_f1").attach(engine, "val_np_f1")
    StackMetric(validator, "nc_f1").attach(engine, "val_nc_f1")
    engine.run([0, 1, 2], max_epochs=1)
    assert network.calls == 2 * per_run
    assert engine.state.metrics == {"val_np_f1": 1.0, "val_nc_f1": 1.0}
    engine.run([0, 1, 2], max_epochs=1)  # a second evaluation (same epoch number) runs it again, once
    assert network.calls == 3 * per_run
    engine.run([0, 1, 2], max_epochs=3)  # ignite resumes for epochs 2 and 3: each epoch is an evaluation
    assert network.calls == 5 * per_run


def test_key_metric_of_a_monai_evaluator(dataset):
    """Wired like train.json: a key metric and an additional one on a SupervisedEvaluator, run at two epochs."""
    from monai.engines import SupervisedEvaluator

    from lecl_transforms.metrics.stack import StackMetric

    _, synthetic, entry = dataset
    classes = _flipped(synthetic, next(n["id"] for n in synthetic.nuclei if n["label"] == 2), 1)
    network = TruthNetwork(synthetic, classes)
    validator = _validator([entry], network)
    validator.run()
    per_run = network.calls
    batch = {"image": network.slices[:1], "label": torch.zeros(1)}  # the evaluator's own forward: one call
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[batch], network=network, decollate=False,
        key_val_metric={"val_stack_nc_f1": StackMetric(validator, "nc_f1")},
        additional_metrics={"val_stack_np_f1": StackMetric(validator, "np_f1"),
                            "val_stack_macro_f1": StackMetric(validator, "macro_f1")})
    for epoch in (1, 2):
        evaluator.run(global_epoch=epoch)
        assert network.calls == (1 + epoch) * per_run + epoch
    assert evaluator.state.metrics["val_stack_nc_f1"] == pytest.approx(2 / 3)
    assert evaluator.state.metrics["val_stack_np_f1"] == 1.0
    assert evaluator.state.best_metric == pytest.approx(2 / 3)


def test_stacks_are_read_once(dataset, monkeypatch):
    import lecl_transforms.data.reader as reader

    _, synthetic, entry = dataset
    reads = []
    original = reader.IFStackReader.get_data
    monkeypatch.setattr(reader.IFStackReader, "get_data",
                        lambda self, img: reads.append(str(img.path)) or original(self, img))
    validator = _validator([entry], TruthNetwork(synthetic))
    assert reads == []  # lazily, on first use
    first, second = validator.run(), validator.run()
    assert reads == [entry["image"]] and first == second


def test_bad_settings_are_refused(dataset):
    from lecl_transforms.errors import LECLInputError
    from lecl_transforms.metrics.stack import StackMetric

    _, synthetic, entry = dataset
    with pytest.raises(LECLInputError, match="points"):
        _validator([{"image": entry["image"]}], TruthNetwork(synthetic))
    validator = _validator([entry], TruthNetwork(synthetic))
    with pytest.raises(LECLInputError, match="unknown score 'nc_f2'"):
        StackMetric(validator, "nc_f2")


# -- DDP -----------------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, entries: list, truths: list, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        calls = {}

        class Router(torch.nn.Module):  # the truth network of whichever stack is being run
            def __init__(self):
                super().__init__()
                self.dummy = torch.nn.Parameter(torch.zeros(1))
                self.nets = [TruthNetwork(t) for t in truths]

            def forward(self, x):
                for i, net in enumerate(self.nets):
                    if float((x[:, None] - net.slices[None]).abs().flatten(2).amax(2).min()) < 1e-4:
                        calls[i] = calls.get(i, 0) + 1
                        return net(x)
                raise AssertionError("unknown slice")

        result = _validator(entries, Router()).run()
        report = {"scores": result, "stacks_run": sorted(calls)}
        bad = [dict(e) for e in entries]
        if rank == 1:
            bad[1]["image"] = bad[1]["image"] + ".missing"  # this process's own stack cannot be read
        try:
            _validator(bad, Router()).run()
            report["failure"] = None
        except Exception as exc:  # noqa: BLE001 - the test looks at what each process raised
            from lecl_transforms.errors import find_input_error

            report["failure"] = "input error" if find_input_error(exc) else type(exc).__name__
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)
    finally:
        dist.destroy_process_group()


def test_ddp_shares_stacks_and_sums_counts(dataset, tmp_path):
    import torch.multiprocessing as mp

    folder, synthetic, entry = dataset
    other, other_entry = _write_stack(folder, seed=0, index=1)
    truths, entries = [synthetic, other], [entry, other_entry]
    alone = [_validator([e], TruthNetwork(t)) for e, t in zip(entries, truths)]
    expected = alone[0].stack_counts(0) + alone[1].stack_counts(0)  # one process, one stack at a time

    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), entries, truths, str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["stacks_run"] for r in reports] == [[0], [1]]  # stack i on process i % 2
    from lecl_transforms.metrics import scores

    for r in reports:
        assert r["scores"] == pytest.approx(scores(expected), nan_ok=True)
        assert r["scores"]["tp"] == expected.tp > 4  # both stacks' nuclei are counted, on every process
    # a stack that fails on one process fails the run on every process instead of leaving the others waiting
    assert reports[1]["failure"] == "input error" and reports[0]["failure"] == "RuntimeError"
