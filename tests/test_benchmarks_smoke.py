"""Smoke test of the speed benchmarks: each script runs at its smallest sizes on the CPU and prints its throughput
and ratio lines, and each printed ratio agrees with the numbers printed beside it. (Speed itself is never asserted:
the benchmarks report ratios measured in one run.)"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

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
