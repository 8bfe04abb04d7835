"""The seed paper's Table 1 on synthetic stacks: HoVer-Net trained on MIPs, HoVer-Net trained on EMIPs, and LECL
(EMIP + supervised contrast), each trained, run per slice with 3D integration, and scored against the generator's
TRUE nucleus centres; plus the mechanism the paper credits EMIP with, measured directly on decoy nuclei.

    python benchmarks/table1.py --preset cpu --out table1_cpu      # 3 rows x seeds 0-2, about an hour on 2 CPU cores
    python benchmarks/table1.py --preset gpu --out table1_gpu      # full width, the paper's schedule scaled
    python benchmarks/table1.py --seeds 0 --rows LECL --epochs 1   # one row, one seed, one epoch: a check

Data per seed as ``benchmarks/cpu_recipe.py`` has it (``lecl synth --regime dense --n-images 12 --seed S``: 8
training, 2 validation, 2 test stacks of 256 x 256), shared by every row of that seed; scoring as there
(``lecl evaluate`` against every true nucleus centre, clicked or not). The ``cpu`` preset trains
``train.json`` + ``cpu.json`` + ``demo.json`` (the CPU recipe shortened to 30 epochs as ``lecl demo`` does);
``--epochs N`` shortens it further the same way. The ``gpu`` preset trains ``train.json`` at full width on 16 stacks
of 512 x 512. Rows live in ``ROWS``: a name and the training keys that make it, so more rows are one entry each.

Decoys: true negative nuclei with a marker slab just above or below them (the generator's ``decoy`` column). A MIP
stacks that marker onto the nucleus; the paper's case for EMIP is that it does not. Per row and seed: decoys (true),
decoys matched by a prediction, decoys called positive (:func:`lecl_transforms.metrics.decoy_counts` on
``lecl evaluate``'s own matching) and the decoy false-positive rate = called positive / matched, beside the overall
marker-positive precision (NC precision).

Writes ``table1.md`` (mean +- standard deviation over seeds, the measured ordering of the rows by NC F1 and by decoy
false-positive rate, the paper's numbers beside) and ``table1.json`` (every number). A rerun into the same ``--out``
with the same settings continues where the earlier one stopped (finished rows and trained models are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark cpu_recipe.py, also when imported
import cpu_recipe  # noqa: E402

NO_CONTRAST = {"loss_weights#scl_pixel": 0.0, "loss_weights#scl_region": 0.0}
#: row name -> training config keys (on top of the preset's)
ROWS = {
    "HoVer-Net (MIP)": {"emip_channels": "none", **NO_CONTRAST},
    "HoVer-Net (EMIP)": {"emip_channels": "both", **NO_CONTRAST},
    "LECL": {"emip_channels": "both"},
}
#: the paper's D1 numbers (NP F1, NC F1), for the comparison
PAPER = {"HoVer-Net (MIP)": (0.8883, 0.7424), "HoVer-Net (EMIP)": (0.8880, 0.7718), "LECL": (0.8942, 0.7890)}

PRESETS = {
    "cpu": {"seeds": [0, 1, 2], "n_images": 12, "size": None, "configs": ["train.json", "cpu.json", "demo.json"],
            "train": {}},
    "gpu": {"seeds": [0, 1, 2], "n_images": 16, "size": 512, "configs": ["train.json"],
            "train": {"width": 1.0, "patch_size": 256, "batch_size": 8, "samples_per_image": 1,
                      "patches_per_epoch": None, "epochs": 100, "val_interval": 5, "lr_step_epochs": 25,
                      "learning_rate": 0.0001, "contrast_start_epoch": 30, "num_workers": 4}},
}
METRICS = ["np_precision", "np_recall", "np_f1", "nc_precision", "nc_recall", "nc_f1"]
DECOYS = ["decoys", "decoys_matched", "decoys_positive"]
#: table columns: (title, result key)
COLUMNS = [("NP precision", "np_precision"), ("NP recall", "np_recall"), ("NP F1", "np_f1"),
           ("NC precision", "nc_precision"), ("NC recall", "nc_recall"), ("NC F1", "nc_f1"),
           ("decoy FP rate", "decoy_fp_rate")]


def decoy_fp_rate(positive: int, matched: int) -> float | None:
    """Decoys called positive over decoys matched by a prediction (None when none was matched)."""
    return positive / matched if matched else None


def measure_decoys(report: dict, data: Path) -> dict:
    """Decoy counts summed over the test stacks of ``lecl evaluate``'s ``report`` (true centres of ``data``): each
    stack's matches as ``lecl evaluate`` made them (``per_stack[].matches``), then
    :func:`~lecl_transforms.metrics.decoy_counts` with the generator's ``decoy`` column."""
    from lecl_transforms.metrics import decoy_counts, read_prediction_csv
    from lecl_transforms.utils.names import stem_of

    content = json.loads((data / "datalist.json").read_text())
    truth = {stem_of(e["image"]): data / e["nuclei"] for e in content["test"]}
    totals = dict.fromkeys(DECOYS, 0)
    for row in report["per_stack"]:
        with open(truth[row["stem"]]) as f:  # the rows of the true-centre points file, in the same order
            decoy = np.array([int(r["decoy"]) for r in csv.DictReader(f)], bool)
        labels = read_prediction_csv(row["pred_csv"])["label"]
        p, q = (np.asarray(row["matches"][k], np.int64) for k in ("pred_row", "true_row"))
        for key, value in decoy_counts(labels, decoy, p, q).items():
            totals[key] += value
    return {**totals, "decoy_fp_rate": decoy_fp_rate(totals["decoys_positive"], totals["decoys_matched"])}


def row_dir(row: str) -> str:
    return row.replace(" ", "_").replace("(", "").replace(")", "")


def run_row(out: Path, data: Path, row: str, configs, keys: dict, seed: int) -> dict:
    """One row on one seed: train (or keep an earlier training), predict, score, count decoys."""
    root = out / row_dir(row) / f"seed{seed}"
    done = root / "result.json"
    if done.is_file():  # a rerun into the same --out continues where an interrupted one stopped
        return json.loads(done.read_text())
    start = time.perf_counter()
    report, train_s = cpu_recipe.train_and_score(root, data, seed, configs, keys)
    result = {"row": row, "seed": seed, **{k: float(report["pooled"][k]) for k in METRICS},
              **measure_decoys(report, data), "train_s": round(train_s, 1),
              "total_s": round(time.perf_counter() - start, 1)}
    done.write_text(json.dumps(result) + "\n")
    return result


def _mean_sd(results: list[dict], key: str) -> tuple[float, float]:
    values = np.array([r[key] for r in results if r[key] is not None], float)
    return (float(values.mean()), float(values.std())) if values.size else (float("nan"), float("nan"))


def ordering(results: list[dict], key: str, higher_is_better: bool) -> str:
    """The rows ordered best first by their mean of ``key`` over seeds, e.g. ``LECL 0.42 > HoVer-Net (MIP) 0.41``;
    a step smaller than the larger of the two rows' standard deviations is marked ``(within 1 sd)``."""
    stats = {row: _mean_sd([r for r in results if r["row"] == row], key) for row in ROWS
             if any(r["row"] == row for r in results)}
    ranked = sorted((row for row in stats if math.isfinite(stats[row][0])),
                    key=lambda row: stats[row][0], reverse=higher_is_better)
    text = ""
    for i, row in enumerate(ranked):
        if i:
            before = ranked[i - 1]
            close = abs(stats[before][0] - stats[row][0]) < max(stats[before][1], stats[row][1])
            text += (" > " if higher_is_better else " < ") + ("(within 1 sd) " if close else "")
        text += f"{row} {stats[row][0]:.3f}"
    return text or "n/a"


def table(results: list[dict], preset: str, settings: dict, wall: float) -> str:
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Table 1 on synthetic stacks (preset `{preset}`, seeds {seeds}; mean +- standard deviation over seeds, "
             "each seed pooled over its test stacks, scored against the true nucleus centres)", "",
             "| row | " + " | ".join(title for title, _ in COLUMNS)
             + " | decoys called positive / matched / true | paper D1 NP F1 / NC F1 |",
             "|---|" + "---:|" * (len(COLUMNS) + 2)]
    for row in ROWS:
        got = [r for r in results if r["row"] == row]
        if not got:
            continue
        cells = [f"{m:.3f} +- {s:.3f}" if math.isfinite(m) else "n/a"
                 for m, s in (_mean_sd(got, key) for _, key in COLUMNS)]
        cells.append(" / ".join(str(sum(r[k] for r in got)) for k in ("decoys_positive", "decoys_matched", "decoys")))
        paper = PAPER.get(row)
        cells.append(f"{paper[0]:.4f} / {paper[1]:.4f}" if paper else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    paper_order = " > ".join(f"{row} {PAPER[row][1]:.4f}" for row in sorted(PAPER, key=lambda r: -PAPER[r][1]))
    lines += ["", "Ordering as measured (mean over seeds):", "",
              f"- by NC F1, best first: {ordering(results, 'nc_f1', True)}",
              f"- by decoy false-positive rate, fewest first: {ordering(results, 'decoy_fp_rate', False)}",
              f"- the paper (D1, NC F1): {paper_order}; it credits EMIP with fewer negatives called positive because "
              "of marker above or below them (it does not measure that rate)", "",
              "NC = marker-positive; NC precision is the overall marker-positive precision. Decoys = true negative "
              "nuclei with a marker slab above or below them; decoy FP rate = decoys called positive / decoys matched "
              "by a prediction (per seed, then mean +- sd); the counts are summed over seeds.", "",
              f"Wall time: {wall / 60:.1f} min (this invocation). Settings: " + json.dumps(settings), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from lecl_transforms.tools.demo import shortened_schedule

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default="table1")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), help="only these rows")
    parser.add_argument("--epochs", type=int, help="shorten the training as lecl demo --epochs does (validation 5 "
                        "times, learning-rate step after 4/5)")
    parser.add_argument("--n-images", type=int, help="stacks per seed (default: the preset's)")
    parser.add_argument("--size", type=int, help="stack width and height, px (default: the preset's)")
    parser.add_argument("keys", nargs="*", help="training config keys to change, KEY=VALUE (Python literals)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    n_images = args.n_images or preset["n_images"]
    size = args.size or preset["size"]
    train_keys = {**preset["train"], **(shortened_schedule(args.epochs) if args.epochs else {}),
                  **cpu_recipe.parse_keys(args.keys)}
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = {name: keys for name, keys in ROWS.items() if not args.rows or name in args.rows}
    settings = {"preset": args.preset, "n_images": n_images, "size": size or 256, "regime": "dense",
                "configs": preset["configs"], "train": train_keys, "rows": ROWS,
                "inference": "bundle/configs/inference.json defaults",
                "evaluation": "bundle/configs/evaluate.json defaults (radius 3 um, z tolerance 1 slice), true centres"}
    # what a row's result depends on; a rerun into the same --out must not mix results of other settings
    recorded = out / "table1_settings.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        raise SystemExit(f"{out} holds results of other settings ({recorded}): give a new --out")
    recorded.write_text(json.dumps(settings, indent=1) + "\n")
    start = time.perf_counter()
    results = []
    for seed in seeds:
        data = out / f"seed{seed}" / "data"
        cpu_recipe.seed_data(data, seed, n_images, size)
        for row, keys in rows.items():
            result = run_row(out, data, row, preset["configs"], {**train_keys, **keys}, seed)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    text = table(results, args.preset, {**settings, "seeds": seeds}, wall)
    (out / "table1.md").write_text(text)
    (out / "table1.json").write_text(json.dumps({"results": results, "settings": {**settings, "seeds": seeds},
                                                 "wall_s": wall}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
