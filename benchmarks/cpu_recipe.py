"""The CPU recipe (train.json + cpu.json) scored on held-out test stacks, over seeds.

    python benchmarks/cpu_recipe.py --out cpu_recipe                     # seeds 0-2, ~10 min each on 2 CPU cores
    python benchmarks/cpu_recipe.py --out cpu_frozen freeze_encoder=true  # the same with any config key changed

Each seed generates its own dense-regime synthetic set (12 stacks of 256 x 256: 8 training, 2 validation, 2 test;
``lecl synth --regime dense --n-images 12 --seed S``), trains the recipe on it (``model.pt``: the validation's pick,
with the post-processing calibrated on the validation stacks), predicts the 2 test stacks with ``lecl predict`` and
scores them with ``lecl evaluate`` against the TRUE nucleus centres of the generator (every nucleus, clicked or
not; the clicks carry the simulated annotator's errors). Prints per seed and mean +- standard deviation of detection
and marker-positive precision / recall / F1 and the training wall time; writes ``cpu_recipe.json``. A rerun into the
same ``--out`` keeps what is done.
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


def run_seed(out: Path, seed: int, keys: dict) -> dict:
    from lecl_transforms.data import REGIMES, write_dataset
    from lecl_transforms.tools.bundle import run_bundle
    from lecl_transforms.tools.evaluate import run_evaluate
    from lecl_transforms.tools.predict import run_predict

    root = out / f"seed{seed}"
    done = root / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    data = root / "data"
    datalist = data / "datalist.json"
    if not datalist.is_file():
        write_dataset(data, 12, seed, REGIMES["dense"], regime="dense")
    start = time.perf_counter()
    run_bundle("training", "train.json", "cpu.json", bundle_root=str(root), datalist=str(datalist), seed=seed,
               mlflow=False, overwrite=True, **keys)
    trained = time.perf_counter() - start
    model = root / "models" / "stage0" / "model.pt"
    run_predict(root / "predictions", datalist=str(datalist), section="test", checkpoint=model, overwrite=True,
                progress=False)
    report = run_evaluate(root / "predictions", truth_datalist(data), "test", out=root / "eval", overwrite=True,
                          mlflow=False, qc_pictures=False)
    result = {**{k: float(report["pooled"][k]) for k in METRICS}, "train_s": trained, "seed": seed}
    done.write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("cpu_recipe"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("keys", nargs="*", help="config keys to change, KEY=VALUE (Python literals), e.g. epochs=60")
    args = p.parse_args(argv)
    keys = {}
    for item in args.keys:
        key, value = item.split("=", 1)
        try:
            keys[key] = ast.literal_eval(value.replace("true", "True").replace("false", "False"))
        except (ValueError, SyntaxError):
            keys[key] = value
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
