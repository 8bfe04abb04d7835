"""The seed paper's Table 1 on synthetic stacks: HoVer-Net trained on MIPs, HoVer-Net trained on EMIPs, and LECL
(EMIP + supervised contrast), each trained, run per slice with 3D integration, and evaluated against the test clicks.

    python benchmarks/table1.py --preset cpu --out table1_cpu      # compact width, <= 60 min on 2 CPU cores
    python benchmarks/table1.py --preset gpu --out table1_gpu      # full width, the paper's schedule scaled

Each seed generates its own dense, hazy, anisotropic synthetic set with decoys (marker above/below negatives) and
separate training / validation / test stacks; every row is trained and tested on the same stacks of a seed. Rows
live in ``ROWS``: a name and the training keys that make it, so more rows (e.g. Qu et al.) are one entry each.
Writes ``table1.md`` (mean +- standard deviation over seeds, every setting) and ``table1.json`` (every number).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


NO_CONTRAST = {"loss_weights#scl_pixel": 0.0, "loss_weights#scl_region": 0.0}
#: row name -> training config keys (on top of the preset's)
ROWS = {
    "HoVer-Net (MIP)": {"emip_channels": "none", **NO_CONTRAST},
    "HoVer-Net (EMIP)": {"emip_channels": "both", **NO_CONTRAST},
    "LECL": {"emip_channels": "both"},
}
#: the paper's D1 numbers (NP F1, NC F1), for the docs' comparison
PAPER = {"HoVer-Net (MIP)": (0.8883, 0.7424), "HoVer-Net (EMIP)": (0.8880, 0.7718), "LECL": (0.8942, 0.7890)}

PRESETS = {
    "cpu": {"seeds": [0, 1], "n_images": 10, "size": 256,
            "train": {"width": 0.125, "patch_size": 128, "batch_size": 8, "samples_per_image": 2,
                      "patches_per_epoch": 32, "epochs": 30, "val_interval": 5, "lr_step_epochs": 20,
                      "learning_rate": 0.001, "contrast_start_epoch": 5, "num_workers": 0,
                      "val_inference_metrics": False}},
    "gpu": {"seeds": [0, 1, 2], "n_images": 16, "size": 512,
            "train": {"width": 1.0, "patch_size": 256, "batch_size": 8, "samples_per_image": 1,
                      "patches_per_epoch": None, "epochs": 100, "val_interval": 5, "lr_step_epochs": 25,
                      "learning_rate": 0.0001, "contrast_start_epoch": 30, "num_workers": 4}},
}
METRICS = ["np_precision", "np_recall", "np_f1", "nc_precision", "nc_recall", "nc_f1"]


def synth(out: Path, seed: int, n_images: int, size: int) -> Path:
    from dataclasses import replace

    from lecl_transforms.data import REGIMES, write_dataset

    if (out / "datalist.json").is_file():
        return out / "datalist.json"
    return write_dataset(out, n_images, seed, replace(REGIMES["dense"], size_yx=size), regime="dense")


def train(root: Path, datalist: Path, keys: dict, seed: int) -> Path:
    from lecl_transforms.tools.bundle import run_bundle

    overrides = {k: v for k, v in keys.items() if v is not None}
    run_bundle("training", "train.json", bundle_root=str(root), datalist=str(datalist), seed=seed, mlflow=False,
               **overrides)
    return root / "models" / "stage0" / "model.pt"


def run_row(work: Path, datalist: Path, row: str, keys: dict, seed: int) -> dict:
    from lecl_transforms.tools.evaluate import run_evaluate
    from lecl_transforms.tools.predict import run_predict

    root = work / row.replace(" ", "_").replace("(", "").replace(")", "") / f"seed{seed}"
    done = root / "result.json"
    if done.is_file():  # a rerun into the same --out continues where an interrupted one stopped
        return json.loads(done.read_text())
    start = time.perf_counter()
    model = root / "models" / "stage0" / "model_final.pt"
    if not model.is_file():
        train(root, datalist, keys, seed)
    trained = time.perf_counter()
    run_predict(root / "predictions", datalist=str(datalist), section="test", checkpoint=model, progress=False,
                overwrite=True)
    report = run_evaluate(root / "predictions", datalist, "test", mlflow=False)
    result = {"row": row, "seed": seed, **{k: report["pooled"][k] for k in METRICS},
              "train_s": round(trained - start, 1), "total_s": round(time.perf_counter() - start, 1)}
    done.write_text(json.dumps(result) + "\n")
    return result


def table(results: list[dict], preset: str, settings: dict, wall: float) -> str:
    lines = [f"Table 1 on synthetic stacks (preset `{preset}`, seeds {settings['seeds']}; mean +- standard deviation "
             "over seeds, pooled over each seed's test stacks)", "",
             "| row | NP precision | NP recall | NP F1 | NC precision | NC recall | NC F1 | paper D1 NP F1 / NC F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in ROWS:
        got = [r for r in results if r["row"] == row]
        if not got:
            continue
        cells = []
        for key in METRICS:
            values = np.array([r[key] for r in got], float)
            cells.append(f"{values.mean():.3f} +- {values.std():.3f}")
        paper = PAPER.get(row)
        paper_cell = f" {paper[0]:.4f} / {paper[1]:.4f} |" if paper else " |"
        lines.append(f"| {row} | " + " | ".join(cells) + " |" + paper_cell)
    lines += ["", f"Wall time: {wall / 60:.1f} min. Settings: " + json.dumps(settings), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default="table1")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), help="only these rows")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = {name: keys for name, keys in ROWS.items() if not args.rows or name in args.rows}
    settings = {"seeds": seeds, "n_images": preset["n_images"], "size": preset["size"], "regime": "dense",
                "train": preset["train"], "rows": rows, "inference": "bundle/configs/inference.json defaults",
                "evaluation": "bundle/configs/evaluate.json defaults (radius 3 um, z tolerance 1 slice)"}
    start = time.perf_counter()
    results = []
    for seed in seeds:
        datalist = synth(out / f"data_seed{seed}", seed, preset["n_images"], preset["size"])
        for row, keys in rows.items():
            result = run_row(out, datalist, row, {**preset["train"], **keys}, seed)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    text = table(results, args.preset, settings, wall)
    (out / "table1.md").write_text(text)
    (out / "table1.json").write_text(json.dumps({"results": results, "settings": settings, "wall_s": wall},
                                                indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
