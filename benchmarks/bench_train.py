"""Benchmark: LECL training speed against MONAI's model-zoo HoVer-Net, all rows measured in ONE run on one device.

Rows (throughput in training images = patches per second, and peak memory):

(a)  the zoo bundle ``pathology_nuclei_segmentation_classification`` step, as its ``train.json`` sets it: MONAI
     ``HoVerNet(mode="fast", in_channels=3, out_classes=5, decoder_padding=False)`` (input 256 -> output 164; MONAI's
     fast mode accepts 256 x 256 only), ``HoVerNetLoss(lambda_hv_mse=1.0)``, Adam (lr 1e-4, weight decay 1e-5) over
     the trainable parameters, fp16 autocast + GradScaler on CUDA (``SupervisedTrainer(amp=True)``), NCHW.
(b)  LECL's step: ``HoVerNetSCL(width)`` + ``LECLLoss`` (all terms) with contrast on (pixel + region contrast from
     the first step) and off (``contrast_start_epoch`` never reached: the memory queues are still filled, as in the
     bundle's warm-up epochs), with the speed options: bf16 autocast on CUDA where supported (else fp16 +
     GradScaler), channels_last on CUDA (``--no-channels-last``), fused Adam on CUDA (``--no-fused``). On CPU:
     fp32, NCHW (channels_last made a width-0.125 CPU step ~50x slower when tried), plain Adam.
     Stage 0 for (a) and (b): encoder frozen, ``--batch`` (both bundles' stage 0). Stage 1: encoder unfrozen at
     ``--stage1-batch`` (the LECL bundle's 3), for (b) contrast on and for (a).
(c)  the LECL bundle's real training loop, ``python -m monai.bundle run training`` in a subprocess at the same width,
     patch (``--size``) and batch, contrast on from epoch 1, no validation (``val_interval`` beyond the last epoch),
     no MLflow. Timed: ignite's "Epoch[N] Complete. Time taken" of every epoch after the first, i.e. each epoch's
     data loading (on-the-fly augmentation and HoVer-Net targets), forward/backward/optimizer steps, iteration
     handlers and epoch-end handlers (metrics, LR step, the per-epoch checkpoint). Not timed: start-up, config
     parsing, pseudo-labels and caching, and all of epoch 1 (DataLoader start-up, first-call overheads).
     Throughput = patches_per_epoch x timed epochs / timed seconds.

Timed steps follow warm-up steps; CUDA is synchronised around every timer. One untimed (b) step runs before all
rows, so that one-off library start-up (cuDNN/cuBLAS handles, oneDNN) is not charged to the first row. Ratios
compare input pixels per second, which equals images per second when ``--size`` is 256 (the default); (a) always
runs at 256 x 256.

    python benchmarks/bench_train.py                         # GPU if present: size 256, batch 8, width 1
    python benchmarks/bench_train.py --no-channels-last      # the effect of channels_last (and --no-fused)
    python benchmarks/bench_train.py --device cpu --size 64 --batch 2 --width 0.125 --skip-zoo  # a quick CPU check

Peak memory: ``torch.cuda.max_memory_allocated`` per row (model, optimizer state and activations) on CUDA; on CPU
the peak resident set during the row over the resident set at its start (Linux VmHWM, reset per row; approximate:
the allocator may reuse memory freed by earlier rows). For (c): the child's peak GPU memory on CUDA, its peak RSS
(whole process, data included) on CPU.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["Row", "PeakMemory", "zoo_training_step", "lecl_training_step", "time_steps", "measure", "bundle_throughput",
           "parse_epoch_seconds", "main"]

REPO = Path(__file__).resolve().parents[1]
#: the zoo bundle's patch and output size (train.json ``patch_size`` / ``out_size``; fast mode, no decoder padding)
ZOO_PATCH, ZOO_OUT = 256, 164
ZOO_CLASSES = 5
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 1e-5  # both bundles' Adam
EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):(\d+(?:\.\d+)?)")


@dataclass
class Row:
    """One measured configuration: ``images_per_s`` training images (patches) per second at ``size`` x ``size``."""

    key: str
    label: str
    images_per_s: float
    size: int
    peak_mb: float

    @property
    def pixels_per_s(self) -> float:
        return self.images_per_s * self.size * self.size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _read_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    """Hand memory that earlier rows freed back to the OS (glibc ``malloc_trim``), so that a row's resident-set
    growth is its own and not hidden by reuse; a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block in MB. CUDA: ``torch.cuda.max_memory_allocated`` (all live tensors at the block's
    peak). CPU (approximate): the kernel's peak resident set (VmHWM, reset at the block's start) minus the resident
    set at the start; where VmHWM cannot be reset, the growth of ``ru_maxrss`` (0 when earlier work peaked higher).
    No sampling thread: on a busy CPU a thread waking every few ms slowed a step several times over."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0
        self._base_kb = self._maxrss_kb = 0
        self._hwm = False

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _release_freed_memory()
            self._hwm = _reset_peak_rss() and _read_status_kb("VmHWM") is not None
            self._base_kb = _read_status_kb("VmRSS") or 0
            self._maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._hwm:
            self.peak_mb = max(0, _read_status_kb("VmHWM") - self._base_kb) / 1024
        else:
            self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._maxrss_kb) / 1024


def _optimizer(net: torch.nn.Module, fused: bool) -> torch.optim.Adam:
    trainable = [p for p in net.parameters() if p.requires_grad]  # both bundles filter on requires_grad
    return torch.optim.Adam(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=fused)


def _step_fn(net, loss_fn, opt, x, target, device: torch.device, dtype: torch.dtype | None) -> Callable[[], None]:
    """forward + loss under autocast (``dtype`` None: fp32), backward, optimizer step; a GradScaler for fp16 only
    (bf16 has fp32's range: nothing to scale)."""
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def step() -> None:
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(net(x), target)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step


def _one_hot(batch: int, classes: int, size: int, device: torch.device) -> torch.Tensor:
    labels = torch.randint(0, classes, (batch, size, size), device=device)
    return F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def zoo_training_step(batch: int, freeze_encoder: bool, device: torch.device) -> tuple[Callable[[], None], str]:
    """The zoo bundle's training step on a random ``(batch, 3, 256, 256)`` batch with targets at the 164 x 164 output:
    NP one-hot ``(B, 2, 164, 164)``, HV ``(B, 2, 164, 164)`` in [-1, 1], NC one-hot ``(B, 5, 164, 164)``."""
    from monai.apps.pathology.losses import HoVerNetLoss
    from monai.networks.nets import HoVerNet

    torch.manual_seed(0)
    net = HoVerNet(mode="fast", in_channels=3, out_classes=ZOO_CLASSES, decoder_padding=False,
                   freeze_encoder=freeze_encoder).to(device).train()
    loss_fn = HoVerNetLoss(lambda_hv_mse=1.0)  # the zoo's train.json value (MONAI's default is 2.0; same cost)
    x = torch.rand(batch, 3, ZOO_PATCH, ZOO_PATCH, device=device)
    target = {"nucleus_prediction": _one_hot(batch, 2, ZOO_OUT, device),
              "horizontal_vertical": torch.rand(batch, 2, ZOO_OUT, ZOO_OUT, device=device) * 2 - 1,
              "type_prediction": _one_hot(batch, ZOO_CLASSES, ZOO_OUT, device)}
    dtype = torch.float16 if device.type == "cuda" else None  # SupervisedTrainer amp: fp16 autocast + GradScaler
    precision = "fp16 + GradScaler" if dtype else "fp32"
    return _step_fn(net, loss_fn, _optimizer(net, fused=False), x, target, device, dtype), f"{precision}, NCHW, Adam"


def lecl_training_step(size: int, batch: int, width: float, freeze_encoder: bool, contrast: bool,
                       device: torch.device, channels_last: bool = True,
                       fused: bool = True) -> tuple[Callable[[], None], str]:
    """LECL's training step on a random ``(batch, 3, size, size)`` batch with the bundle's targets (as
    ``HoVerNetTargetsd`` writes them): ``np`` ``(B, 1, H, W)`` in {0, 1}, ``hv`` ``(B, 2, H, W)`` in [-1, 1], ``nc``
    ``(B, 1, H, W)`` class index in {0, 1, 2}, ``ignore`` ``(B, 1, H, W)`` in {0, 1} (30 % unlabelled)."""
    from lecl_transforms.inferers.slice_inferer import autocast_dtype
    from lecl_transforms.losses import LECLLoss
    from lecl_transforms.networks import HoVerNetSCL

    torch.manual_seed(0)
    net = HoVerNetSCL(width=width, freeze_encoder=freeze_encoder).to(device).train()
    # contrast off = the bundle's epochs before contrast_start_epoch: memory filled, no contrast terms
    loss_fn = LECLLoss(contrast_start_epoch=0 if contrast else 10**9, proj_dim=net.proj_dim).to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    target = {"np": (torch.rand(batch, 1, size, size, device=device) > 0.5).float(),
              "hv": torch.rand(batch, 2, size, size, device=device) * 2 - 1,
              "nc": torch.randint(0, 3, (batch, 1, size, size), device=device).float(),
              "ignore": (torch.rand(batch, 1, size, size, device=device) > 0.7).float()}
    channels_last = channels_last and device.type == "cuda"  # on CPU it made a step ~50x slower when tried
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fused = fused and device.type == "cuda"
    dtype = autocast_dtype(device) if device.type == "cuda" else None
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[dtype]
    description = (f"{precision}, {'channels_last' if channels_last else 'NCHW'}, "
                   f"{'fused ' if fused else ''}Adam")
    return _step_fn(net, loss_fn, _optimizer(net, fused), x, target, device, dtype), description


def time_steps(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` timed steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def measure(key: str, name: str, build: Callable[[], tuple[Callable[[], None], str]], batch: int, size: int,
            warmup: int, steps: int, device: torch.device) -> Row:
    """Build (inside the memory window: parameters and optimizer state count) and time one configuration."""
    with PeakMemory(device) as memory:
        step, description = build()
        seconds = time_steps(step, warmup, steps, device)
        del step
    row = Row(key, f"{name} [{description}]", batch / seconds, size, memory.peak_mb)
    print(f"{key:<24} {row.images_per_s:9.2f} images/s   peak {row.peak_mb:8.0f} MB   {row.label}", flush=True)
    return row


def parse_epoch_seconds(log: str) -> dict[int, float]:
    """``{epoch: seconds}`` from ignite's "Epoch[N] Complete. Time taken: HH:MM:SS.mmm" lines."""
    return {int(m[1]): int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4]) for m in EPOCH_LINE.finditer(log)}


def bundle_throughput(size: int, batch: int, width: float, epochs: int, patches_per_epoch: int,
                      device: torch.device, timeout: float) -> tuple[float, float, str]:
    """(c): the bundle's training loop in a subprocess. Returns (patches per second over epochs 2..N, peak memory
    in MB, the command). quick.json on CPU (no DataLoader workers, 6 synthetic stacks), train.json on CUDA; both
    overridden to this run's width, patch and batch, contrast on from epoch 1, no validation, no MLflow."""
    if epochs < 2:
        raise ValueError("the bundle row needs --bundle-epochs >= 2 (epoch 1 is start-up and is not timed)")
    configs = ["bundle/configs/train.json"] + (["bundle/configs/quick.json"] if device.type == "cpu" else [])
    with tempfile.TemporaryDirectory(prefix="lecl_bench_train_") as root:
        # one extra config, only to report the child's peak GPU memory after the run (the run itself is untouched)
        report = os.path.join(root, "bench_report.json")
        with open(report, "w") as f:
            json.dump({"training": "$[@run, print('LECL_BENCH_GPU_PEAK_MB', torch.cuda.max_memory_allocated() / "
                                   "2**20 if torch.cuda.is_available() else 0.0, flush=True)]"}, f)
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(configs + [report]),
               "--bundle_root", root, "--datalist", "synthetic", "--width", str(width), "--patch_size", str(size),
               "--batch_size", str(batch), "--epochs", str(epochs), "--patches_per_epoch", str(patches_per_epoch),
               "--contrast_start_epoch", "1", "--val_interval", str(epochs + 100), "--mlflow", "false"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        if device.type == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # the bundle picks cuda when it sees one
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"the bundle run failed (exit {result.returncode}):\n{log[-3000:]}")
    seconds = parse_epoch_seconds(log)
    timed = [seconds[e] for e in range(2, epochs + 1) if e in seconds]
    if len(timed) != epochs - 1:
        raise RuntimeError(f"expected {epochs} 'Epoch[N] Complete' lines in the bundle log, found {sorted(seconds)}")
    if device.type == "cuda":
        found = re.search(r"LECL_BENCH_GPU_PEAK_MB ([\d.]+)", log)
        peak = float(found[1]) if found else float("nan")
    else:  # the largest waited-for child: the bundle process (kB on Linux)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shown = " ".join(a if re.fullmatch(r"[\w./:=-]+", a) else repr(a) for a in cmd[1:])
    return patches_per_epoch * len(timed) / sum(timed), peak, f"python {shown}"


def _ratio(row: Row, base: Row) -> str:
    return f"{row.pixels_per_s / base.pixels_per_s:.2f}x"


def main(argv=None) -> dict[str, Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="LECL patch (rows b, c); (a) is always 256")
    parser.add_argument("--batch", type=int, default=8, help="stage-0 batch (rows a, b, c)")
    parser.add_argument("--stage1-batch", type=int, default=3, help="stage-1 batch (encoder unfrozen)")
    parser.add_argument("--width", type=float, default=1.0, help="LECL network width (MONAI's HoVerNet is full width)")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 10 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps before them (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--no-channels-last", action="store_true", help="(b): NCHW instead of channels_last")
    parser.add_argument("--no-fused", action="store_true", help="(b): the default (foreach) Adam, not fused")
    parser.add_argument("--skip-zoo", action="store_true", help="leave out (a) (slow on a CPU: full width at 256)")
    parser.add_argument("--skip-bundle", action="store_true", help="leave out (c)")
    parser.add_argument("--bundle-epochs", type=int, default=2, help="(c): epochs; the first is not timed")
    parser.add_argument("--bundle-patches", type=int, help="(c): patches per epoch (default 64 on CUDA, 2 x batch "
                                                           "on CPU)")
    parser.add_argument("--bundle-timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    channels_last, fused = not args.no_channels_last, not args.no_fused
    name = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(f"training throughput on {device} ({name}); LECL width {args.width}, {args.size} x {args.size}; "
          f"stage 0 batch {args.batch} (encoder frozen), stage 1 batch {args.stage1_batch} (encoder unfrozen); "
          f"{steps} timed steps after {warmup} warm-up per row", flush=True)
    if args.size != ZOO_PATCH and not args.skip_zoo:
        print(f"note: (a) runs at {ZOO_PATCH} x {ZOO_PATCH} (MONAI's fast mode takes nothing else): ratios compare "
              f"input pixels per second", flush=True)

    def timed(key, label, build, batch, size):
        return measure(key, label, build, batch, size, warmup, steps, device)

    def lecl(contrast, frozen):
        return lambda: lecl_training_step(args.size, args.batch if frozen else args.stage1_batch, args.width,
                                          frozen, contrast, device, channels_last, fused)

    with PeakMemory(device):  # prime: one-off start-up costs (time and memory) stay out of every row
        step, _ = lecl(True, True)()
        step()
        sync(device)
        del step
    rows: dict[str, Row] = {}
    if not args.skip_zoo:
        rows["a"] = timed("(a) zoo stage 0", "MONAI HoVerNet fast + HoVerNetLoss, zoo bundle defaults",
                          lambda: zoo_training_step(args.batch, True, device), args.batch, ZOO_PATCH)
    rows["b_on"] = timed("(b) contrast on", "LECL HoVerNetSCL + LECLLoss", lecl(True, True), args.batch, args.size)
    rows["b_off"] = timed("(b) contrast off", "LECL HoVerNetSCL + LECLLoss, contrast not started", lecl(False, True),
                          args.batch, args.size)
    if not args.skip_zoo:
        rows["a_s1"] = timed("(a) zoo stage 1", "as (a), encoder unfrozen",
                             lambda: zoo_training_step(args.stage1_batch, False, device), args.stage1_batch,
                             ZOO_PATCH)
    rows["b_s1"] = timed("(b) stage 1 contrast on", "LECL, encoder unfrozen", lecl(True, False), args.stage1_batch,
                         args.size)
    if not args.skip_bundle:
        patches = args.bundle_patches or (64 if cuda else 2 * args.batch)
        images_per_s, peak, command = bundle_throughput(args.size, args.batch, args.width, args.bundle_epochs,
                                                        patches, device, args.bundle_timeout)
        memory_kind = "GPU peak allocated" if cuda else "peak RSS of the whole process, approximate"
        rows["c"] = Row("(c) bundle loop", f"LECL bundle training loop, epochs 2..{args.bundle_epochs} of "
                        f"{patches} patches [{memory_kind}]", images_per_s, args.size, peak)
        print(f"{'(c) bundle loop':<24} {images_per_s:9.2f} images/s   peak {peak:8.0f} MB   {rows['c'].label}",
              flush=True)
        print(f"    (c) ran: {command}")
    if not cuda:
        print("CPU peak memory of (a)/(b): resident-set peak during the row over its start (VmHWM); approximate")

    print("ratios (throughput):")
    a, a_s1 = rows.get("a"), rows.get("a_s1")
    if a is not None:
        print(f"(b) contrast on = {_ratio(rows['b_on'], a)} (a)")
        print(f"(b) contrast off = {_ratio(rows['b_off'], a)} (a)")
        print(f"(b) stage 1 contrast on = {_ratio(rows['b_s1'], a)} (a); = {_ratio(rows['b_s1'], a_s1)} (a) stage 1")
    print(f"(b) contrast on = {_ratio(rows['b_on'], rows['b_off'])} (b) contrast off")
    if "c" in rows:
        versus_a = f"; (c) = {_ratio(rows['c'], a)} (a)" if a is not None else ""
        print(f"(c) = {_ratio(rows['c'], rows['b_on'])} (b) contrast on{versus_a}")
    return rows


if __name__ == "__main__":
    main()
