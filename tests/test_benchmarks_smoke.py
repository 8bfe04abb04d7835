"""Smoke test of the speed benchmarks: each script runs at its smallest sizes on the CPU and prints its throughput
and ratio lines, and each printed ratio agrees with the numbers printed beside it. (Speed itself is never asserted:
the benchmarks report ratios measured in one run.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
# one thread: on a shared 2-core machine two OpenMP threads spin-wait on each other and run several times slower
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                            cwd=REPO, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{text}"
    return float(found[1])


def test_parse_epoch_seconds_reads_ignite_epoch_lines():
    spec = importlib.util.spec_from_file_location("bench_train", BENCHMARKS / "bench_train.py")
    bench_train = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_train", bench_train)  # dataclasses look their module up there
    spec.loader.exec_module(bench_train)
    log = ("2026 - LECLTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:09.052\n"
           "Epoch: 2/2, Iter: 1/2 -- train_loss: 3.4\n"
           "2026 - LECLTrainer - INFO - Epoch[2] Complete. Time taken: 01:02:03.500\n")
    assert bench_train.parse_epoch_seconds(log) == {1: 9.052, 2: 3723.5}


def test_bench_train_prints_rows_and_consistent_ratios():
    out = run_script("bench_train.py", "--device", "cpu", "--size", "64", "--batch", "2", "--stage1-batch", "2",
                     "--width", "0.125", "--steps", "1", "--warmup", "1", "--skip-zoo", "--bundle-patches", "4")
    on = number(r"^\(b\) contrast on\s+([\d.]+) images/s", out)
    off = number(r"^\(b\) contrast off\s+([\d.]+) images/s", out)
    number(r"^\(b\) stage 1 contrast on\s+([\d.]+) images/s", out)
    bundle = number(r"^\(c\) bundle loop\s+([\d.]+) images/s", out)
    assert min(on, off, bundle) > 0
    assert re.search(r"peak\s+\d+ MB", out)
    assert "python -m monai.bundle run training" in out
    # the ratio lines, each equal to the throughputs printed above (all rows at the same size here)
    assert abs(number(r"^\(b\) contrast on = ([\d.]+)x \(b\) contrast off$", out) - on / off) <= 0.01 + 0.02 * on / off
    assert abs(number(r"^\(c\) = ([\d.]+)x \(b\) contrast on$", out) - bundle / on) <= 0.01 + 0.02 * bundle / on


def test_bench_inference_prints_zoo_comparison():
    out = run_script("bench_inference.py", "--size", "256", "--z", "1", "--width", "0.125", "--zoo-slices", "1")
    # the existing lines are still there
    for line in ("network forward alone:", "end to end:", "everything else:", "memory: stack"):
        assert line in out
    end_to_end = number(r"end to end:\s+([\d.]+) s", out)
    forward = number(r"network forward alone:\s+([\d.]+) s", out)
    # stacks per second = 1 / the seconds printed above (those are rounded to 0.01 s)
    assert abs(number(r"stacks per second:\s+end to end ([\d.]+)", out) * end_to_end - 1) <= 0.006 / end_to_end + 0.01
    assert abs(number(r"stacks per second:.*network only ([\d.]+)", out) * forward - 1) <= 0.006 / forward + 0.01
    assert "MONAI HoVerNet fast at full width" in out and "random weights" in out  # LECL at 0.125: no shared weights
    lecl = number(r"per slice, LECL:\s+([\d.]+) s end to end", out)
    zoo = number(r"per slice, zoo pipeline:\s+([\d.]+) s end to end", out)
    found = re.search(r"^  end to end per slice: LECL is ([\d.]+)x (faster|slower) than the zoo pipeline$", out,
                      re.MULTILINE)
    assert found, out
    ratio = float(found[1]) if found[2] == "faster" else 1 / float(found[1])
    assert abs(ratio - zoo / lecl) <= 0.02 * zoo / lecl + 0.01


def test_bench_cli_help_times_every_help_and_names_heavy_imports():
    out = run_script("bench_cli_help.py", "--repeats", "1")
    rows = re.findall(r"^lecl (\w* ?)--help\s+([\d.]+) s\s+([\d.]+)x goal  heavy imports: (.+)$", out, re.MULTILINE)
    assert [r[0].strip() for r in rows] == ["", "synth", "prepare", "predict", "evaluate", "demo"]
    for _, seconds, ratio, heavy in rows:
        assert abs(float(ratio) - float(seconds)) <= 0.011  # the goal is 1 s
        assert heavy == "none"  # MONAI, torch (and numpy) are imported only when a command runs
    assert abs(number(r"^slowest ([\d.]+) s", out) - max(float(r[1]) for r in rows)) <= 0.005


def test_error_budget_prints_the_linking_lines_and_chain_beats_overlap(capsys):
    """The error budget's linking stage (no network) at its smallest: one line per link method, and on damaged true
    per-slice nuclei the chain method links better than the overlap rule and the projection rule. (In this process:
    a subprocess would spend most of the time importing.)"""
    spec = importlib.util.spec_from_file_location("error_budget", BENCHMARKS / "error_budget.py")
    error_budget = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("error_budget", error_budget)  # dataclasses look their module up there
    spec.loader.exec_module(error_budget)
    error_budget.main(["--skip-network", "--skip-pseudo", "--regimes", "dense", "--seeds", "0", "--n-images", "1",
                       "--size", "96"])
    out = capsys.readouterr().out
    f1 = {m: number(rf"^\| 3\. linking F1, true slices \+ damage, `{m}` \| ([\d.]+) ± 0\.000 \|$", out)
          for m in ("overlap", "projection", "chain")}
    assert 0 < f1["overlap"] < f1["chain"] <= 1 and 0 < f1["projection"] < f1["chain"]
    assert re.search(r"^\| 3\. decoys turned positive .*`chain` \| \d+ of \d+ \|$", out, re.MULTILINE)


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def test_table1_orders_rows_from_the_numbers():
    """The table's cells and ordering lines on hand-made results: mean +- sd over seeds, a seed without a matched
    decoy left out of that row's rate, counts summed, steps within one sd marked."""
    table1 = load_benchmark("table1")

    def result(row, seed, nc_f1, positive, matched):
        return {"row": row, "seed": seed, "np_precision": 0.8, "np_recall": 0.6, "np_f1": 0.7, "nc_precision": 0.5,
                "nc_recall": 0.4, "nc_f1": nc_f1, "decoys": 10, "decoys_matched": matched,
                "decoys_positive": positive, "decoy_fp_rate": table1.decoy_fp_rate(positive, matched)}

    results = [result("HoVer-Net (MIP)", 0, 0.30, 4, 8), result("HoVer-Net (MIP)", 1, 0.40, 6, 10),
               result("HoVer-Net (EMIP)", 0, 0.52, 1, 10), result("HoVer-Net (EMIP)", 1, 0.40, 0, 0),
               result("LECL", 0, 0.52, 2, 10), result("LECL", 1, 0.48, 3, 10)]
    text = table1.table(results, "cpu", {}, 60.0)
    # MIP: NC F1 0.35 +- 0.05, rate (0.5, 0.6) -> 0.55 +- 0.05; EMIP: 0.46 +- 0.06, rate 0.1 (seed 1 matched none)
    assert "| HoVer-Net (MIP) | 0.800 +- 0.000 | 0.600 +- 0.000 | 0.700 +- 0.000 | 0.500 +- 0.000 | 0.400 +- 0.000 | " \
           "0.350 +- 0.050 | 0.550 +- 0.050 | 10 / 18 / 20 | 0.8883 / 0.7424 |" in text
    assert "| HoVer-Net (EMIP) | " in text and "| 0.460 +- 0.060 | 0.100 +- 0.000 | 1 / 10 / 20 |" in text
    # LECL 0.50 +- 0.02 is 0.04 above EMIP, less than EMIP's sd 0.06; EMIP is 0.11 above MIP, more than 0.06
    assert "- by NC F1, best first: LECL 0.500 > (within 1 sd) HoVer-Net (EMIP) 0.460 > HoVer-Net (MIP) 0.350" in text
    assert ("- by decoy false-positive rate, fewest first: HoVer-Net (EMIP) 0.100 < LECL 0.250 < "
            "HoVer-Net (MIP) 0.550") in text
    assert "the paper (D1, NC F1): LECL 0.7890 > HoVer-Net (EMIP) 0.7718 > HoVer-Net (MIP) 0.7424" in text


def test_table1_one_row_one_epoch_end_to_end(tmp_path, request):
    """One row, one seed, one epoch on 3 small stacks (train, predict, evaluate against the true centres, decoys):
    every column present and in range, the decoys counted against the generator's own decoy column, and a rerun into
    the same --out keeps the finished row; other settings into it are refused."""
    import torch

    table1 = load_benchmark("table1")
    out = tmp_path / "t1"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as ENV does for the scripts run in a subprocess
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    args = ["--out", str(out), "--seeds", "0", "--rows", "LECL", "--epochs", "1", "--n-images", "3", "--size", "128",
            "patches_per_epoch=8"]
    assert table1.main(args) == 0
    got = json.loads((out / "table1.json").read_text())
    (r,) = got["results"]
    assert got["settings"]["train"] == {"epochs": 1, "val_interval": 1, "lr_step_epochs": 1, "patches_per_epoch": 8}
    assert got["settings"]["configs"] == ["train.json", "cpu.json", "demo.json"]
    assert all(0 <= r[k] <= 1 for k in table1.METRICS)
    data = out / "seed0" / "data"
    (test,) = json.loads((data / "datalist.json").read_text())["test"]
    with open(data / test["nuclei"]) as f:
        true_decoys = sum(row["decoy"] == "1" for row in csv.DictReader(f))
    assert r["decoys"] == true_decoys > 0
    assert 0 <= r["decoys_positive"] <= r["decoys_matched"] <= r["decoys"]
    assert r["decoy_fp_rate"] == (r["decoys_positive"] / r["decoys_matched"] if r["decoys_matched"] else None)
    md = (out / "table1.md").read_text()
    assert "| row | NP precision | NP recall | NP F1 | NC precision | NC recall | NC F1 | decoy FP rate | " \
           "decoys called positive / matched / true | paper D1 NP F1 / NC F1 |" in md
    assert f"| {r['decoys_positive']} / {r['decoys_matched']} / {r['decoys']} | 0.8942 / 0.7890 |" in md
    assert f"- by NC F1, best first: LECL {r['nc_f1']:.3f}\n" in md
    # the rerun reads the finished row back (no training: the models folder is left as it was)
    model = out / "LECL" / "seed0" / "models" / "stage0" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert table1.main(args) == 0
    assert json.loads((out / "table1.json").read_text())["results"] == [r] and model.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="other settings"):
        table1.main(args[:-1] + ["patches_per_epoch=16"])
