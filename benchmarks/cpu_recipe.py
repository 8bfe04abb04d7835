"""The CPU recipe (train.json + cpu.json) scored on held-out test stacks, over seeds.

    python benchmarks/cpu_recipe.py --out cpu_recipe                     # seeds 0-2, ~10 min each on 2 CPU cores
    python benchmarks/cpu_recipe.py --out cpu_frozen freeze_encoder=true  # the same with any config key changed

Each seed generates its own dense-regime synthetic set (12 stacks of 256 x 256: 8 training, 2 validation, 2 test;
``lecl synth --regime dense --n-images 12 --seed S``), trains the recipe on it (``model.pt``: the validation's pick,
with the post-processing calibrated on the validation stacks), predicts the 2 test stacks with ``lecl predict`` and
scores them with ``lecl evaluate`` against the TRUE nucleus centres of the generator (every nucleus, clicked or
not; the clicks carry the simulated annotator's errors). Prints per seed and mean +- standard deviation of detection
and marker-positive precision / recall / F1 and the training wall time; writes ``cpu_recipe.json``. A rerun into the
same ``--out`` keeps what is done (finished seeds, and trained models of unfinished ones).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ["np_precision", "np_recall", "np_f1", "nc_precision", "nc_recall", "nc_f1"]


def truth_datalist(data: Path) -> Path:
    """A datalist of the test stacks whose points are the generator's true centres and classes."""
    content = json.loads((data / "datalist.json").read_text())
    truth = data / "truth"
    truth.mkdir(exist_ok=True)
    entries = []
    for entry in content["test"]:
        with open(data / entry["nuclei"]) as f:
            rows = list(csv.DictReader(f))
        points = truth / (Path(entry["image"]).name.split(".")[0] + ".csv")
        points.write_text("z,y,x,label\n" + "".join(f"{r['centre_z']},{r['centre_y']},{r['centre_x']},{r['label']}\n"
                                                     for r in rows))
        entries.append({"image": str((data / entry["image"]).resolve()), "points": str(points.resolve())})
    path = truth / "datalist.json"
    path.write_text(json.dumps({"test": entries, "spacing": content.get("spacing")}))
    return path


def seed_data(data: Path, seed: int, n_images: int = 12, size: int | None = None) -> Path:
    """``lecl synth --regime dense --n-images 12 --seed S`` into ``data`` (kept when already there); ``size``: another
    stack width and height than the regime's 256 px. Returns the datalist."""
    from dataclasses import replace

    from lecl_transforms.data import REGIMES, write_dataset

    datalist = data / "datalist.json"
    if not datalist.is_file():
        cfg = REGIMES["dense"] if size is None else replace(REGIMES["dense"], size_yx=size)
        write_dataset(data, n_images, seed, cfg, regime="dense")
    return datalist


def train_and_score(root: Path, data: Path, seed: int, configs=("train.json", "cpu.json"), keys=None) -> tuple:
    """Train ``configs`` (merged in order) + ``keys`` on ``data``'s training stacks into ``root`` (skipped when an
    earlier call finished it: ``root/trained.json``), predict the test stacks (``root/predictions``) and score them
    against the true centres (``root/eval``). Returns ``(lecl evaluate's report, training seconds)``."""
    from lecl_transforms.tools.bundle import run_bundle
    from lecl_transforms.tools.evaluate import run_evaluate
    from lecl_transforms.tools.predict import run_predict

    datalist = data / "datalist.json"
    trained = root / "trained.json"
    if trained.is_file():
        train_s = json.loads(trained.read_text())["train_s"]
    else:
        start = time.perf_counter()
        run_bundle("training", *configs, bundle_root=str(root), datalist=str(datalist), seed=seed, mlflow=False,
                   overwrite=True, **(keys or {}))
        train_s = time.perf_counter() - start
        trained.write_text(json.dumps({"train_s": train_s, "configs": list(configs), "keys": keys or {}}))
    model = root / "models" / "stage0" / "model.pt"
    run_predict(root / "predictions", datalist=str(datalist), section="test", checkpoint=model, overwrite=True,
                progress=False)
    report = run_evaluate(root / "predictions", truth_datalist(data), "test", out=root / "eval", overwrite=True,
                          mlflow=False, qc_pictures=False)
    return report, train_s


def run_seed(out: Path, seed: int, keys: dict) -> dict:
    root = out / f"seed{seed}"
    done = root / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    seed_data(root / "data", seed)
    report, train_s = train_and_score(root, root / "data", seed, keys=keys)
    result = {**{k: float(report["pooled"][k]) for k in METRICS}, "train_s": train_s, "seed": seed}
    done.write_text(json.dumps(result, indent=1))
    return result


def parse_keys(items) -> dict:
    """``KEY=VALUE`` arguments -> config keys (values as Python literals, ``true``/``false`` too, else strings)."""
    keys = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            keys[key] = ast.literal_eval(value.replace("true", "True").replace("false", "False"))
        except (ValueError, SyntaxError):
            keys[key] = value
    return keys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("cpu_recipe"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("keys", nargs="*", help="config keys to change, KEY=VALUE (Python literals), e.g. epochs=60")
    args = p.parse_args(argv)
    keys = parse_keys(args.keys)
    rows = [run_seed(args.out, seed, keys) for seed in args.seeds]
    print(f"cpu.json{' + ' + str(keys) if keys else ''}: test stacks of the dense regime, true centres")
    print("| seed | " + " | ".join(METRICS) + " | training s |")
    print("|---" * (len(METRICS) + 2) + "|")
    for r in rows:
        print(f"| {r['seed']} | " + " | ".join(f"{r[k]:.3f}" for k in METRICS) + f" | {r['train_s']:.0f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    std = {k: float(np.std([r[k] for r in rows])) for k in METRICS}
    print("| mean +- sd | " + " | ".join(f"{mean[k]:.3f} +- {std[k]:.3f}" for k in METRICS) + " | |")
    (args.out / "cpu_recipe.json").write_text(json.dumps({"keys": keys, "rows": rows, "mean": mean, "sd": std},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
