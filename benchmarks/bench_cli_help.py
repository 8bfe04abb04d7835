"""Benchmark: how fast ``lecl --help`` and ``lecl <command> --help`` answer, against a 1 s goal.

Each help is run as the user runs it, ``python -m lecl_transforms [command] --help`` in a fresh interpreter (its
start-up included), a few times; the median wall time is printed with its ratio to the goal. One more run with
``python -X importtime`` lists the heavy libraries the help imported (none is the aim: MONAI and torch are imported
only when a command runs).

    python benchmarks/bench_cli_help.py               # 5 runs per help
    python benchmarks/bench_cli_help.py --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("", "synth", "prepare", "predict", "evaluate", "demo")
GOAL_S = 1.0
HEAVY = ("torch", "monai", "ignite", "mlflow", "sklearn", "skimage", "scipy", "numpy", "tifffile", "nibabel",
         "matplotlib")


def help_command(command: str, *python_options: str) -> list[str]:
    return [sys.executable, *python_options, "-m", "lecl_transforms", *([command] if command else []), "--help"]


def run_help(command: str, *python_options: str) -> tuple[float, str]:
    """Wall seconds of one help run and its stderr (the import times with ``-X importtime``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    start = time.perf_counter()
    result = subprocess.run(help_command(command, *python_options), capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=120)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or "usage: lecl" not in result.stdout:
        raise RuntimeError(f"lecl {command} --help failed:\n{result.stderr[-2000:]}")
    return seconds, result.stderr


def heavy_imports(importtime_log: str) -> list[str]:
    """Top-level heavy packages named in ``python -X importtime`` output (lines ``import time: self | cum | name``)."""
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime_log.splitlines()
             if line.startswith("import time:") and "|" in line}
    return [name for name in HEAVY if name in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per help (median printed)")
    args = parser.parse_args(argv)
    print(f"python -m lecl_transforms [command] --help, median of {args.repeats} run(s), goal {GOAL_S:g} s")
    slowest = 0.0
    for command in COMMANDS:
        median = statistics.median(run_help(command)[0] for _ in range(args.repeats))
        heavy = heavy_imports(run_help(command, "-X", "importtime")[1])
        slowest = max(slowest, median)
        name = f"lecl {command} --help" if command else "lecl --help"
        print(f"{name:<22} {median:6.2f} s  {median / GOAL_S:5.2f}x goal  heavy imports: {', '.join(heavy) or 'none'}")
    print(f"slowest {slowest:.2f} s = {slowest / GOAL_S:.2f}x the {GOAL_S:g} s goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
