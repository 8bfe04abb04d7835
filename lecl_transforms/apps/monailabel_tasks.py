"""MONAI Label tasks for the LECL bundle: 3D nuclei inference on a stack of the datastore, and training from the
clicks saved in the datastore. Both run the bundle's own configs (``inference.json``, ``train.json``) through
MONAI's bundle runner, the code path of ``lecl predict`` and ``python -m monai.bundle run``, not a copy.

Offline by construction: the tasks read the bundle folder and the model files on this machine; nothing is looked up
in the model zoo or downloaded (MONAI Label's own bundle app checks the zoo's list first).

* **Infer** (``/infer/lecl``): the label volume of the stack, on its grid: ``classes`` (0 background, 1
  marker-negative, 2 marker-positive; the default) or ``instances`` (one id per nucleus; request key
  ``label_volume``), as TIFF for TIFF stacks and NIfTI (the stack's affine) for NIfTI stacks; the result JSON holds
  every nucleus (the rows of ``STEM_pred.csv``: id, z, y, x, label, score, z range, area, um coordinates, the
  measurements (volume, raw intensities), and the class name) and the counts.
* **Train** (``/train/lecl``): every stack with a *final* label in the datastore is training data; its label is a
  point-label volume on the stack's grid (the points contract: 1 = marker-negative, 2 = marker-positive at each
  clicked voxel; a few painted voxels per click are one click), which is what any MONAI Label client saves when a
  person clicks nuclei. A share of the labelled stacks (at least one) is held out for validation. By default the
  current model is fine-tuned (the paper's second stage, ``stage 1``: all layers); ``fine_tune false`` trains both
  stages from scratch. The best epoch is picked by the macro F1 of the whole inference path on the validation
  stacks. The best model is published as ``MODEL_DIR/model.pt`` (the infer task uses it from the next request on);
  every run keeps its own folder ``MODEL_DIR/train_<time>/`` with checkpoints and MLflow runs. The shipped
  ``bundle/models/model.pt`` is never modified.

A request the server cannot answer because of its input gets a clear answer, not a bare HTTP 500
(:func:`checked_infer`): an image id the datastore does not hold -> 404 naming the id, how ids are formed (the
stack's file name without its extension) and some ids it holds; any other bad input (a request value, a stack's
channels) -> 422 with the where/problem/fix message. Both are logged.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask

from ..data.points import POSITIVE
from ..errors import find_input_error, input_error
from ..tools.bundle import run_bundle
from ..utils.files import atomic_path, write_json
from ..utils.names import NIFTI_SUFFIXES
from ..utils.values import flag

__all__ = ["LECLInferTask", "LECLTrainTask", "checked_infer", "image_path", "bundle_labels", "bundle_metadata",
           "config_values", "current_model",
           "split_labelled", "MODEL_NAME", "TRAIN_STATS_NAME", "INFER_KEYS", "TRAIN_CONFIGS", "TRAIN_CONFIG_KEYS",
           "TRAIN_TASK_KEYS"]

logger = logging.getLogger(__name__)

MODEL_NAME = "model.pt"
TRAIN_STATS_NAME = "train_stats.json"
#: inference.json keys a client may set per request; their defaults (and types) are inference.json's own values
INFER_KEYS = ("np_threshold", "min_volume_um3", "min_positive_slices", "nuclei_channel", "marker_channel", "overlap",
              "allow_suspicious_input", "link_method")
#: the predictor's parameters each infer result reports as used (``resolved``): what the model supplied unless set
RESOLVED_KEYS = ("np_threshold", "min_instance_size", "min_volume_um3", "postprocessing_from", "model_pixel_size_um")
#: the training configs of a MONAI Label fine-tuning run, merged in order: the compact network and short schedule
#: of quick.json (``compact``, the default) and the fine-tuning recipe of finetune.json (epochs are passes of
#: ``patches_per_epoch`` patches; validation through the inference path picks the best epoch)
TRAIN_CONFIGS = {True: ("train.json", "quick.json", "finetune.json"), False: ("train.json", "finetune.json")}
#: training config keys a client may set per request; defaults (and types) from the merged configs
TRAIN_CONFIG_KEYS = ("epochs", "patches_per_epoch", "learning_rate", "seed", "allow_suspicious_input")
#: settings of the train task itself (not config keys), with their defaults
TRAIN_TASK_KEYS = {"fine_tune": True, "compact": True, "validation_fraction": 0.2}


def bundle_metadata(bundle_root) -> dict:
    """The bundle's ``configs/metadata.json``."""
    path = Path(bundle_root) / "configs" / "metadata.json"
    if not path.is_file():
        raise input_error(path, "not found: this is not a bundle folder",
                          "give the bundle folder (with configs/ and models/) as --conf bundle PATH")
    return json.loads(path.read_text())


def bundle_labels(bundle_root) -> dict[str, int]:
    """The class labels MONAI Label shows, from the bundle's metadata (``network_data_format.outputs
    .type_prediction.channel_def``, as MONAI Label's bundle tasks read them), background left out."""
    channels = bundle_metadata(bundle_root)["network_data_format"]["outputs"]["type_prediction"]["channel_def"]
    return {name: int(value) for value, name in channels.items() if int(value) > 0}


def current_model(bundle_root, model_dir) -> Path:
    """The model the infer task uses: the last one trained in MONAI Label (``model_dir/model.pt``), else the
    bundle's shipped ``models/model.pt``."""
    trained = Path(model_dir) / MODEL_NAME
    return trained if trained.is_file() else Path(bundle_root) / "models" / MODEL_NAME


def config_values(bundle_root, config_names, keys) -> dict:
    """The values the bundle's configs ``config_names`` (merged in order, as MONAI's bundle runner merges them) give
    ``keys``: the defaults a request falls back to, so they have one home, the configs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(Path(bundle_root) / "configs" / name) for name in config_names])
    return {key: parser.get(key) for key in keys}


def _typed(request: Mapping, defaults: Mapping) -> dict:
    """The keys of ``defaults`` that ``request`` gives (clients send text too: ``"false"``, ``"0.6"``), in the types
    of the defaults; keys the request leaves out are left out (the config's value applies)."""
    values = {}
    for key, default in defaults.items():
        if key not in request or request[key] is None:
            continue
        value = request[key]
        try:
            if isinstance(default, bool):
                values[key] = flag(value, key)
            elif default is None or isinstance(value, type(default)):
                values[key] = value
            else:
                values[key] = type(default)(value)
        except (TypeError, ValueError) as e:
            raise input_error(f"request: {key}", f"got {value!r} ({e})",
                              f"give a {type(default).__name__} like {default!r}") from e
    return values


def image_path(datastore, image_id: str) -> str:
    """The stack file of ``image_id``: a path on the server as it is, else the datastore's image of that id. An id
    the datastore does not hold is an input error naming it, how ids are formed and some that exist."""
    if os.path.exists(image_id):
        return image_id
    uri = datastore.get_image_uri(image_id) if image_id else ""
    if uri and os.path.exists(uri):
        return uri
    ids = sorted(datastore.list_images())
    held = f"it holds {len(ids)}: {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}" if ids else "it holds none"
    folder = getattr(datastore, "_datastore_path", None)
    raise input_error(f"request: image {image_id!r}",
                      f"no stack with this id in the datastore{f' ({folder})' if folder else ''}; {held}",
                      "give a stack's id: its file name without the extension (stack_01.tif -> image=stack_01; "
                      "GET /datastore/?output=all lists them), or upload the stack with the request")


def checked_infer(infer, request: dict, datastore):
    """``infer(request, datastore)`` (``MONAILabelApp.infer``) with clear answers for bad input instead of a bare
    HTTP 500: an unknown image id -> 404, any other :class:`~lecl_transforms.errors.LECLInputError` -> 422, each with
    the where/problem/fix message as the response's ``detail`` and in the server log."""
    from fastapi import HTTPException

    try:
        if isinstance(request.get("image"), str):
            image_path(datastore, request["image"])
        return infer(request, datastore)
    except Exception as e:  # noqa: BLE001 - only input errors get the short answer, anything else goes on
        cause = find_input_error(e)
        if cause is None:
            raise
        logger.error(f"infer request {request.get('model')!r} refused: {cause}")
        unknown = cause.where.startswith("request: image ")
        raise HTTPException(status_code=404 if unknown else 422, detail=str(cause)) from e


def _nucleus_rows(csv_path: Path) -> list[dict]:
    """The rows of ``STEM_pred.csv`` as numbers, with the class name beside the label (1 negative, 2 positive); an
    empty cell (a value unknown, e.g. ``volume_um3`` without a spacing) is ``None``."""
    def number(text: str):
        if text == "":
            return None
        value = float(text)
        return int(value) if value.is_integer() and "." not in text else value

    with open(csv_path, newline="") as f:
        rows = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["class"] = "marker-positive" if row["label"] == POSITIVE else "marker-negative"
    return rows


def _label_file(label_tif: Path, image: str) -> str:
    """The label volume as a file the client opens beside its stack: the TIFF itself for TIFF stacks, NIfTI with
    the stack's affine for NIfTI stacks (axes back from the reader's (Z, Y, X) to the file's (X, Y, Z))."""
    import tifffile

    if image.lower().endswith(tuple(f".{s}" for s in NIFTI_SUFFIXES)):
        import nibabel as nib

        volume = tifffile.imread(label_tif)
        source = nib.load(image)
        fd, path = tempfile.mkstemp(suffix=".nii.gz", prefix="lecl_label_")
        os.close(fd)
        nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), source.affine), path)
        return path
    fd, path = tempfile.mkstemp(suffix=".tif", prefix="lecl_label_")
    os.close(fd)
    shutil.copyfile(label_tif, path)
    return path


class LECLInferTask(InferTask):
    """Nuclei of a 3D stack, detected and called marker-positive/negative (``inference.json``; see module doc).

    Args:
        bundle_root: the bundle folder (``configs/``, ``models/model.pt``).
        model_dir: where the train task publishes its models (``model.pt`` there wins over the shipped one).
        config: the server's own defaults (``--conf``) for the request keys of :data:`INFER_KEYS` (else
            ``inference.json``'s values) and ``label_volume`` (``classes`` or ``instances``: which label volume comes
            back as the result file).
    """

    def __init__(self, bundle_root, model_dir, config: Mapping | None = None):
        self.bundle_root, self.model_dir = Path(bundle_root), Path(model_dir)
        self.defaults = config_values(bundle_root, ["inference.json"], INFER_KEYS)
        super().__init__(
            type=InferType.SEGMENTATION, labels=bundle_labels(bundle_root), dimension=3,
            description="LECL: nuclei in 3D, each marker-positive or marker-negative (label volume + nuclei table)",
            config={**self.defaults, **_typed(config or {}, self.defaults), "label_volume": "classes",
                    **{k: v for k, v in (config or {}).items() if k == "label_volume"}})

    def is_valid(self) -> bool:
        return current_model(self.bundle_root, self.model_dir).is_file()

    def __call__(self, request) -> tuple[str, dict]:
        start = time.time()
        image = str(request["image"])
        keys = _typed({**self._config, **request}, self.defaults)
        label = str(request.get("label_volume", self._config["label_volume"]))
        if label not in ("classes", "instances"):
            raise input_error("request: label_volume", f"got {label!r}", "give classes or instances")
        model = current_model(self.bundle_root, self.model_dir)
        with tempfile.TemporaryDirectory(prefix="lecl_infer_") as tmp:
            out = Path(tmp) / "predictions"
            run_bundle("inference", "inference.json", configure_logging=False, bundle_dir=self.bundle_root,
                       bundle_root=str(self.bundle_root), image=image, checkpoint=str(model.resolve()),
                       output_dir=str(out), progress=False, **keys)
            summary = json.loads((out / "predict_summary.json").read_text())
            files = summary["per_stack"][0]["files"]
            rows = _nucleus_rows(out / files["csv"])
            result_file = _label_file(out / files[label], image)
        positives = sum(row["label"] == POSITIVE for row in rows)
        return result_file, {
            "label_volume": label, "label_names": self.labels, "model": str(model), "nuclei": rows,
            "counts": {"nuclei": len(rows), "marker-positive": positives, "marker-negative": len(rows) - positives},
            "parameters": keys, "latencies": {"total": round(time.time() - start, 3)},
            # the values used where the request and the config leave them to the model (its calibrated threshold)
            "resolved": {k: summary["parameters"].get(k) for k in RESOLVED_KEYS}}


def split_labelled(entries: list[dict], validation_fraction: float) -> dict[str, list[dict]]:
    """Datastore ``{"image", "label"}`` pairs -> a LECL datalist (the label is the stack's point-label volume):
    the last ``max(1, round(n * validation_fraction))`` stacks by name validate, the others train."""
    if len(entries) < 2:
        raise input_error("datastore (final labels)", f"{len(entries)} stack(s) with clicks saved as final labels",
                          "click the nuclei of at least 2 stacks and save them (one is held out for validation)")
    if not 0 < validation_fraction < 1:
        raise input_error("request: validation_fraction", f"got {validation_fraction}", "give a value in (0, 1)")
    pairs = sorted(({"image": e["image"], "points": e["label"]} for e in entries), key=lambda e: e["image"])
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * validation_fraction)))
    return {"training": pairs[:-n_val], "validation": pairs[-n_val:]}


class LECLTrainTask(TrainTask):
    """Training from the clicks in the datastore (``train.json``; see module doc).

    Args:
        bundle_root: the bundle folder (``configs/``).
        model_dir: where runs and the published ``model.pt`` go.
        config: the server's own defaults (``--conf``) for :data:`TRAIN_TASK_KEYS` and the training config keys of
            :data:`TRAIN_CONFIG_KEYS` (else the values of the merged :data:`TRAIN_CONFIGS`).
    """

    def __init__(self, bundle_root, model_dir, config: Mapping | None = None):
        super().__init__("LECL training from point labels (clicks) saved in the datastore")
        self.bundle_root, self.model_dir = Path(bundle_root), Path(model_dir)
        self.task_defaults = {**TRAIN_TASK_KEYS, **_typed(config or {}, TRAIN_TASK_KEYS)}
        self.config_defaults = {compact: config_values(bundle_root, names, TRAIN_CONFIG_KEYS)
                                for compact, names in TRAIN_CONFIGS.items()}
        self.server_conf = _typed(config or {}, self.config_defaults[True])
        self._config = {**self.config_defaults[self.task_defaults["compact"]], **self.server_conf,
                        **self.task_defaults}

    def config(self) -> dict:
        return dict(self._config)

    def stats(self) -> dict:
        path = self.model_dir / TRAIN_STATS_NAME
        return json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, request, datastore) -> dict:
        start = time.time()
        task = {**self.task_defaults, **_typed(request, TRAIN_TASK_KEYS)}
        configs = TRAIN_CONFIGS[task["compact"]]
        keys = {**self.server_conf, **_typed(request, self.config_defaults[task["compact"]])}
        opts = {**self.config_defaults[task["compact"]], **keys, **task}  # what this run uses, for its stats
        if opts["epochs"] < 1 or opts["patches_per_epoch"] < 1:
            raise input_error("request: epochs / patches_per_epoch", f"got {opts['epochs']} / "
                              f"{opts['patches_per_epoch']}", "give at least 1 of each")
        datalist = split_labelled(datastore.datalist(), task["validation_fraction"])
        run_dir = self.model_dir / time.strftime("train_%Y%m%d_%H%M%S")
        run_dir.mkdir(parents=True, exist_ok=False)
        write_json(run_dir / "datalist.json", datalist)
        common = {"bundle_root": str(run_dir), "datalist": str(run_dir / "datalist.json"), **keys,
                  "inference_config": str(self.bundle_root / "configs" / "inference.json")}
        start_model = current_model(self.bundle_root, self.model_dir) if task["fine_tune"] else None
        if start_model is not None:
            from ..networks import read_model_description

            described = read_model_description(start_model)
            common.update(width=described.width, proj_dim=described.proj_dim, patch_size=described.patch_size)
            run_bundle("training", *configs, bundle_dir=self.bundle_root, stage=1,
                       init_checkpoint=str(start_model.resolve()), **common)
        else:
            for stage in (0, 1):
                run_bundle("training", *configs, bundle_dir=self.bundle_root, stage=stage, **common)
        best = run_dir / "models" / MODEL_NAME
        if not best.is_file():
            raise RuntimeError(f"training in {run_dir} ended without a best model ({best}); see its log")
        published = self.model_dir / MODEL_NAME
        with atomic_path(published) as tmp:
            shutil.copyfile(best, tmp)
        stats = {"model": str(published), "run_dir": str(run_dir), "started_from": str(start_model or "scratch"),
                 "training_stacks": len(datalist["training"]), "validation_stacks": len(datalist["validation"]),
                 "settings": opts, "seconds": round(time.time() - start, 1),
                 "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(self.model_dir / TRAIN_STATS_NAME, stats)
        logger.info(f"LECL training done: {published} (run folder {run_dir})")
        return stats
