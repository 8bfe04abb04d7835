"""Inference over many stacks (method step 4): the one per-stack pipeline (:class:`~.pipeline.StackPipeline`: read
-> per-slice HoVer-Net -> 3D nuclei), then files, one stack at a time, sharded over processes under ``torchrun``.
The bundle's ``inference.json`` and ``lecl predict`` both run this.

A stack that fails is reported by name and the run goes on with the others; the run ends, after the summary of those
that worked is written, with one error listing the failed stacks (non-zero exit). Bad input (the stack's file, its
channels, its spacing) is reported as such, with its fix (exit status 2 from ``lecl``); anything else is an internal
error: the stack is named and the traceback is written to ``predict_errors.log`` in the output folder.

Interrupted runs resume (``resume``, ``lecl predict --resume``): every file is written under a temporary name and
renamed into place, and a stack's record (``STEM_pred_done.json``: its summary row, its files' sizes, the input's size
and time stamp and a digest of the run's settings) is written last, after its files; a stack whose record matches
(same settings, same input, every file there with its recorded size) is skipped, any other is predicted again. The
folder's manifest records the run's stacks, model (SHA-256 of its file) and settings: a resume with others is
refused."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import traceback
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import ignite.distributed as idist
import torch

from ..errors import LECLRunError, find_input_error, input_error
from ..data.prediction_writer import PRED_FILE_SUFFIXES
from ..utils.files import (check_out_dir, make_dirs, plain_json, read_manifest, remove_stale, sha256_of, write_json,
                           write_manifest)
from ..utils.names import IMAGE_SUFFIXES, is_stack_file, stem_of, unique_stems
from ..utils.spacing import resolve_spacing
from ..utils.values import optional

__all__ = ["inference_entries", "StackPredictor", "PREDICT_MANIFEST", "SUMMARY_NAME", "SUMMARY_CSV_NAME",
           "ERROR_LOG_NAME", "DONE_SUFFIX"]

PREDICT_MANIFEST = "lecl_predict.json"
SUMMARY_NAME = "predict_summary.json"
SUMMARY_CSV_NAME = "summary.csv"  # one row per stack, for a spreadsheet / a paper's table
ERROR_LOG_NAME = "predict_errors.log"
DONE_SUFFIX = "_pred_done.json"  # a stack's record, written after its files: the stack is complete
logger = logging.getLogger(__name__)


def inference_entries(datalist=None, section: str = "test", image=None, input_dir=None) -> list[dict]:
    """The stacks to predict, ``[{"image": path}, ...]``, from exactly one of: a datalist section, one image, or
    every TIFF/NIfTI in a folder (sorted by name). Datalist entries keep their ``points`` (an existing file) for
    the click checks of :class:`StackPredictor`."""
    from ..data.datalist import load_datalist

    datalist, image, input_dir = optional(datalist), optional(image), optional(input_dir)
    given = [name for name, v in (("datalist", datalist), ("image", image), ("input_dir", input_dir)) if v]
    if len(given) != 1:
        problem = "nothing to predict" if not given else f"{' and '.join(given)} given together"
        raise input_error("config: datalist / image / input_dir", problem,
                          "give exactly one: --image STACK, --datalist DL (with --section, default test) or "
                          "--input_dir FOLDER")
    if image:
        if not Path(image).is_file():
            raise input_error(f"image {image}", "file not found", "check the path of the stack")
        return [{"image": os.path.abspath(image)}]
    if input_dir:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise input_error(f"input_dir {input_dir}", "is not a folder", "give the folder that holds the stacks")
        found = sorted(p for p in folder.iterdir() if p.is_file() and is_stack_file(p))
        if not found:
            raise input_error(f"input_dir {input_dir}", f"holds no stack ({', '.join(IMAGE_SUFFIXES)})",
                              "give the folder of your TIFF/NIfTI stacks")
        return [{"image": str(p.resolve())} for p in found]
    # clicks, where the datalist has them, let lecl predict check the channels as lecl prepare does
    return [{"image": e["image"], **({"points": e["points"]} if isinstance(e.get("points"), str)
                                     and os.path.isfile(e["points"]) else {})}
            for e in load_datalist(datalist, str(section), required=("image",), file_fields=("image",))]


def _barrier() -> None:
    if idist.get_world_size() > 1:
        torch.distributed.barrier()


class StackPredictor:
    """Predict every stack of ``data`` and write its outputs into ``output_dir``.

    Args:
        data: ``[{"image": path}, ...]`` (:func:`inference_entries`).
        pipeline: the per-stack pipeline (:class:`~.pipeline.StackPipeline`): stack file -> 3D nuclei.
        network: the trained network (eval mode, on its device).
        save: writes a stack's files (``SavePredictionsd``), leaving their paths under ``pred_files``.
        output_dir: where everything goes; new, empty, or an earlier ``lecl predict`` output with ``overwrite``.
        sampler: a ``DistributedSampler`` over ``data`` under ``torchrun`` (each process predicts its share;
            process 0 writes the run summary), else ``None``.
        model_info: recorded in the summary (checkpoint path and description).
        click_check: for entries with ``points``: ``(image (2, Z, Y, X), points (N, 3), source=...)``, raising for
            suspicious channels before the network runs on the stack (``ClickPlacementCheck``, as ``lecl prepare``
            and the training check the same stacks); None: no check.
        channel_check: for entries without ``points``: ``(image (2, Z, Y, X), source=...)``, raising for channels
            that look swapped from the image alone (``ChannelOrderCheck``), before the network runs; None: no check.
        resume: continue an earlier run in ``output_dir`` made with the same stacks, model and settings: stacks
            whose outputs are complete are skipped (their summary rows are kept), the others are predicted.
    """

    def __init__(self, data: Sequence[dict], pipeline, network, save, output_dir, sampler=None,
                 overwrite: bool = False, progress: bool = True, model_info: dict | None = None,
                 parameters: dict | None = None, click_check=None, resume: bool = False, channel_check=None):
        self.data, self.pipeline, self.network, self.save = list(data), pipeline, network, save
        self.click_check, self.channel_check = click_check, channel_check
        self.output_dir, self.sampler = Path(output_dir), sampler
        self.overwrite, self.progress, self.resume = bool(overwrite), bool(progress), bool(resume)
        self.model_info, self.parameters = model_info or {}, parameters or {}

    # -- the output folder ----------------------------------------------------------------------------------------
    @cached_property
    def targets(self) -> list[Path]:
        """Every file this run may write: the outputs of each stack (named after it) and the summary."""
        stems = unique_stems(e["image"] for e in self.data)
        suffixes = (*PRED_FILE_SUFFIXES.values(), DONE_SUFFIX)
        return [self.output_dir / f"{s}{suffix}" for s in stems for suffix in suffixes] + \
            [self.output_dir / SUMMARY_NAME, self.output_dir / SUMMARY_CSV_NAME, self.output_dir / ERROR_LOG_NAME]

    @cached_property
    def settings(self) -> dict:
        """What decides this run's outputs: the stacks, the model (its file's SHA-256) and the settings
        (``parameters``). Recorded in the manifest; a resumed run must have the same."""
        checkpoint = self.model_info.get("checkpoint")
        model = {"checkpoint": checkpoint,
                 "sha256": sha256_of(checkpoint) if checkpoint and os.path.isfile(checkpoint) else None}
        return plain_json({"stacks": sorted(str(e["image"]) for e in self.data), "model": model,
                           "parameters": self.parameters})

    @cached_property
    def settings_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()

    def check(self) -> dict | None:
        """Refuse an output folder that holds the inputs or files not written by ``lecl predict``, and a resume of
        an output made with other stacks, model or settings (writes nothing)."""
        where = f"output_dir (--out) {self.output_dir}"
        if self.resume and self.overwrite:
            raise input_error("--resume and --overwrite", "given together: --resume keeps the complete stacks of an "
                              "earlier run, --overwrite predicts every stack again",
                              "give one of them (--resume to finish an interrupted run)")
        manifest = self.output_dir / PREDICT_MANIFEST
        resuming = self.resume and manifest.is_file()
        if resuming:
            self._check_resumable(read_manifest(manifest), where)
        return check_out_dir(self.output_dir, command="lecl predict", manifest=PREDICT_MANIFEST,
                             overwrite=self.overwrite or resuming, inputs=[e["image"] for e in self.data],
                             targets=self.targets, option="output_dir (--out)", resume_option="--resume")

    def _check_resumable(self, earlier: dict, where: str) -> None:
        fix = ("resume with the stacks, model and settings of that run (its lecl_predict.json lists them), pass "
               "--overwrite instead of --resume to predict every stack again with these, or choose a new --out")
        recorded = earlier.get("settings")
        if not isinstance(recorded, dict):
            raise input_error(where, "holds a lecl predict output that does not record its settings (an older "
                              "version wrote it), so it cannot be resumed", fix)
        differences = _differences(recorded, self.settings)
        if differences:
            listed = "".join(f"\n  - {d}" for d in differences)
            raise input_error(where, f"holds a lecl predict output made with other inputs, model or settings; "
                              f"resuming would mix two runs' results:{listed}", fix)

    # -- running --------------------------------------------------------------------------------------------------
    def predict_one(self, entry: dict) -> dict:
        """One stack: returns its summary row (files written, nuclei, positives, field area and densities,
        seconds)."""
        from ..data.prediction_writer import stack_figures

        start = time.perf_counter()
        record = self._record_path(entry)
        record.unlink(missing_ok=True)  # the stack is incomplete until its new files are all written
        data = self.pipeline.load(entry["image"])
        if self.click_check is not None and entry.get("points"):
            from ..data.points import read_points

            points, _ = read_points(entry["points"], tuple(data["image"].shape[-3:]))
            self.click_check(data["image"], points, source=str(entry["image"]))
        elif self.channel_check is not None:  # no clicks: the image alone says whether the channels look swapped
            self.channel_check(data["image"], source=str(entry["image"]))
        d = self.save(self.pipeline.predict(data, self.network))
        table = d["nuclei"].table()
        labels = table["label"]
        nuclei, positive = int(len(labels)), int((labels == 2).sum())
        spacing = resolve_spacing(d["image"], required=False)
        field_yx = tuple(int(v) for v in d["image"].shape[-2:])
        row = {"image": str(entry["image"]), "stack": stem_of(entry["image"]), "slices": int(d["image"].shape[1]),
               "nuclei": nuclei, "positive": positive, "negative": int((labels == 1).sum()),
               "field_yx_px": list(field_yx), "spacing_um": list(spacing) if spacing else None,
               **stack_figures(nuclei, positive, field_yx, spacing),
               "seconds": round(time.perf_counter() - start, 3),
               "timing": {k: round(float(v), 3) for k, v in d.get("timing", {}).items()},
               "files": {k: Path(v).name for k, v in d["pred_files"].items()}, "resumed": False}
        write_json(record, {"settings_sha256": self.settings_digest, "input": _stamp(entry["image"]),
                            "sizes": {Path(v).name: Path(v).stat().st_size for v in d["pred_files"].values()},
                            "row": row})
        return row

    def _record_path(self, entry: dict) -> Path:
        return self.output_dir / f"{stem_of(entry['image'])}{DONE_SUFFIX}"

    def _finished(self, entry: dict) -> dict | None:
        """The summary row of a stack an earlier run completed with these settings (every file it wrote still there
        with its size, the input unchanged), else None (the stack is predicted again)."""
        try:
            record = json.loads(self._record_path(entry).read_text(encoding="utf-8"))
            complete = (record["settings_sha256"] == self.settings_digest and record["input"] == _stamp(entry["image"])
                        and all((self.output_dir / name).stat().st_size == size
                                for name, size in record["sizes"].items()))
        except (OSError, ValueError, KeyError, TypeError):  # no record, a broken one, a file gone: not complete
            return None
        return {**record["row"], "resumed": True} if complete else None

    def run(self) -> dict:
        from ..data.prediction_writer import write_run_summary, write_summary_csv

        rank, world = idist.get_rank(), idist.get_world_size()
        earlier = self.check()
        _barrier()  # every process checked before the first one writes the manifest
        if rank == 0:
            make_dirs(self.output_dir)
            planned = sorted({p.name for p in self.targets} | set((earlier or {}).get("files", [])))
            write_manifest(self.output_dir, PREDICT_MANIFEST, {"command": "lecl predict", "complete": False,
                                                               "files": planned, "settings": self.settings})
            _remove_partial_files(self.output_dir, {p.name for p in self.targets})
        _barrier()
        indices = list(self.sampler) if self.sampler is not None else range(len(self.data))
        mine = [self.data[i] for i in indices]
        iterator = mine
        if self.progress and rank == 0:
            from tqdm import tqdm

            iterator = tqdm(mine, desc="lecl predict", unit="stack")
        rows, failures = [], []
        start = time.perf_counter()
        for entry in iterator:
            done = self._finished(entry) if self.resume else None
            if done is not None:
                rows.append(done)
                continue
            try:
                rows.append(self.predict_one(entry))
            except Exception as exc:  # noqa: BLE001 - one bad stack must not lose the others' results
                if os.environ.get("LECL_DEBUG"):
                    raise
                failures.append(self._failure(entry, exc))
        rows, failures = _gather(rows), _gather(failures)
        summary = self._summary(rows, failures, time.perf_counter() - start, world)
        if rank == 0:
            written = [f for r in rows for f in r["files"].values()] + [f"{r['stack']}{DONE_SUFFIX}" for r in rows] \
                + [SUMMARY_NAME, SUMMARY_CSV_NAME]
            if any(f["kind"] == "internal" for f in failures):
                written.append(ERROR_LOG_NAME)
            write_run_summary(self.output_dir, summary, SUMMARY_NAME)
            write_summary_csv(self.output_dir / SUMMARY_CSV_NAME, summary["per_stack"])
            remove_stale(self.output_dir, earlier, written)
            write_manifest(self.output_dir, PREDICT_MANIFEST, {"command": "lecl predict", "complete": True,
                                                               "files": sorted(written), "settings": self.settings})
            skipped = f"; {summary['resumed']} complete from the earlier run, not predicted again" \
                if summary["resumed"] else ""
            logger.info(f"lecl predict: {summary['nuclei']} nuclei ({summary['positive']} positive) in "
                        f"{len(rows)} stack(s) -> {self.output_dir}{skipped}")
        if failures:
            raise _failure_error(failures, len(self.data), self.output_dir)
        return summary

    def _failure(self, entry: dict, exc: Exception) -> dict:
        """A failed stack: bad input with its where/problem/fix message, or an internal error whose traceback goes
        to the run's error log (every process appends its own)."""
        cause = find_input_error(exc)
        if cause is not None:
            logger.error(f"lecl predict: {cause}")
            return {"image": str(entry["image"]), "kind": "input", "error": str(cause)}
        log = self.output_dir / ERROR_LOG_NAME
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"=== {entry['image']} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{traceback.format_exc()}\n")
        message = f"{entry['image']}: internal error {type(exc).__name__}: {exc} (traceback in {log})"
        logger.error(f"lecl predict: {message}")
        return {"image": str(entry["image"]), "kind": "internal", "error": message}

    def _summary(self, rows: list[dict], failures: list[dict], seconds: float, world: int) -> dict:
        rows = sorted(rows, key=lambda r: r["image"])
        device = next(self.network.parameters()).device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        nuclei, positive = sum(r["nuclei"] for r in rows), sum(r["positive"] for r in rows)
        return {"stacks": len(rows), "failed": len(failures), "resumed": sum(bool(r.get("resumed")) for r in rows),
                "nuclei": nuclei, "positive": positive,
                "negative": sum(r["negative"] for r in rows),
                "positive_fraction": round(positive / nuclei, 6) if nuclei else None, "seconds": round(seconds, 3),
                "processes": world, "device": f"{device} ({name})",
                "model": self.model_info, "parameters": self.parameters, "per_stack": rows, "failures": failures}


def _remove_partial_files(out: Path, names: set[str]) -> None:
    """Delete the temporary files an interrupted run left beside this run's outputs (``atomic_path`` writes
    ``.STEM.tmp-XXXXXXXX.EXT`` and renames it to ``STEM.EXT`` when complete)."""
    import re

    for path in out.glob(".*.tmp-*"):
        match = re.fullmatch(r"\.(.+)\.tmp-[0-9a-f]{8}(.*)", path.name)
        if match and f"{match[1]}{match[2]}" in names and path.is_file():
            path.unlink(missing_ok=True)


def _stamp(path) -> dict:
    """An input file's size and modification time: a stack changed since its record is predicted again."""
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _differences(earlier: dict, now: dict, most: int = 3) -> list[str]:
    """What differs between two runs' ``settings``, in words (for the refusal of a resume)."""
    out = []
    before, after = set(earlier.get("stacks") or []), set(now["stacks"])
    for label, names in (("not in the earlier run", sorted(after - before)),
                         ("in the earlier run, not given now", sorted(before - after))):
        if names:
            more = f" and {len(names) - most} more" if len(names) > most else ""
            out.append(f"stacks {label}: {', '.join(names[:most])}{more}")
    old, new = earlier.get("model") or {}, now["model"]
    if old.get("sha256") != new["sha256"]:
        out.append(f"model: the earlier run used {old.get('checkpoint')} (SHA-256 {str(old.get('sha256'))[:12]}), "
                   f"this one {new['checkpoint']} (SHA-256 {str(new['sha256'])[:12]})")
    old_p, new_p = earlier.get("parameters") or {}, now["parameters"]
    for key in sorted(set(old_p) | set(new_p)):
        if old_p.get(key) != new_p.get(key):
            out.append(f"{key}: {json.dumps(old_p.get(key))} in the earlier run, {json.dumps(new_p.get(key))} now")
    return out


def _gather(items: list) -> list:
    """Every process's items, on every process (a list of plain Python objects)."""
    if idist.get_world_size() == 1:
        return items
    gathered: list = [None] * idist.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [x for part in gathered for x in part]


def _failure_error(failures: list[dict], n: int, out: Path) -> Exception:
    """One error for the failed stacks: an input error when every failure is bad input, else a run error (a bug to
    report, with the tracebacks in the error log)."""
    summary = out / SUMMARY_NAME
    listed = "".join(f"\n  - {f['error']}" for f in failures)
    done = f"the other {n - len(failures)} stack(s) are predicted; {summary} lists them" if n > len(failures) \
        else f"no stack was predicted ({summary})"
    problem = f"{len(failures)} of {n} stack(s) failed:{listed}\n  {done}"
    if all(f["kind"] == "input" for f in failures):
        return input_error("lecl predict", problem,
                           "fix the listed stacks and predict them again (--resume predicts only the stacks "
                           "without complete outputs; or a new --out, or --overwrite)")
    return LECLRunError(f"lecl predict: {problem}\n  Internal errors are bugs: please report them with "
                        f"{out / ERROR_LOG_NAME}")
