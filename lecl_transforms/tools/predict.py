"""``lecl predict``: the bundle's ``inference.json`` run from the shell (the same code path, not a copy)."""

from __future__ import annotations

from pathlib import Path

from ..errors import input_error

__all__ = ["cmd_predict", "add_predict_parser", "run_predict", "typed_options", "CONFIG_OPTIONS"]


#: options of ``lecl predict`` that are keys of ``inference.json`` (option dest -> config key); each is passed only
#: when the user typed it, so every default lives in the config (as MONAI's own argument merging does)
CONFIG_OPTIONS = {"nuclei_channel": "nuclei_channel", "marker_channel": "marker_channel", "spacing": "spacing",
                  "axes": "axes", "override_spacing": "override_spacing",
                  "allow_suspicious_input": "allow_suspicious_input", "min_positive_slices": "min_positive_slices",
                  "overlap": "overlap", "np_threshold": "np_threshold", "min_volume_um3": "min_volume_um3",
                  "link_method": "link_method",
                  "rescale": "rescale", "model_pixel_size": "model_pixel_size_um"}


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="detect and classify the nuclei of 3D stacks with a trained model",
                       description="Options left out take the bundle's inference.json values (shown as 'config').")
    src = p.add_argument_group("input (exactly one)")
    src.add_argument("--image", help="one stack (TIFF/NIfTI)")
    src.add_argument("--datalist", help="datalist JSON; the stacks of --section are predicted")
    src.add_argument("--section", help="datalist section to predict (config: test)")
    src.add_argument("--input-dir", help="a folder: every .tif/.tiff/.nii/.nii.gz in it")
    p.add_argument("--model", "--checkpoint", dest="checkpoint",
                   help="trained model (default: the bundle's models/model.pt); it knows its own width, patch size "
                   "and channel composite")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier lecl predict output")
    p.add_argument("--nuclei-channel", type=int, help="0-based index of the nuclei channel (config: 0)")
    p.add_argument("--marker-channel", type=int, help="0-based index of the marker channel (config: 1)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                   help="voxel spacing in um where the file does not state it (every stack with --override-spacing)")
    p.add_argument("--axes", help="axis order of plain TIFFs that store a 4D shape but not its axis names, "
                   "e.g. ZCYX; a flat TIFF of N planes (N, Y, X) does not say how many channels: re-save it as a "
                   "hyperstack")
    p.add_argument("--override-spacing", action="store_const", const=True,
                   help="use --spacing even where the file states another")
    p.add_argument("--allow-suspicious-input", action="store_const", const=True,
                   help="warn about suspicious inputs (channels that look identical, swapped (judged from the "
                   "clicks of datalist entries with points, else from the image) or like noise) instead of "
                   "refusing them")
    p.add_argument("--min-positive-slices", type=int,
                   help="slices a nucleus must be called positive in to be positive (config: 1, the paper's rule)")
    p.add_argument("--overlap", type=float, help="sliding-window overlap, 0 <= overlap < 1 (config: 0.25)")
    p.add_argument("--np-threshold", type=float, help="nucleus probability threshold of the per-slice "
                   "post-processing (config: null = the model's calibrated value, else 0.7)")
    p.add_argument("--min-volume-um3", type=float, metavar="UM3",
                   help="3D nuclei smaller than this volume in um^3 are dropped after linking (config: null = the "
                   "model's calibrated value, else 0 = keep all)")
    p.add_argument("--no-rescale", dest="rescale", action="store_const", const=False,
                   help="do not rescale slices to the model's pixel size (config: rescale true)")
    p.add_argument("--model-pixel-size", type=float, metavar="UM",
                   help="rescale slices to this pixel size in um instead of the one the model records")
    p.add_argument("--link-method", help="3D integration over z: chain (config; assignment between slices, one missing "
                   "slice bridged, fragments absorbed), overlap (mutual-best overlap) or projection (published code)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the first GPU if any, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier lecl predict output in --out")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted lecl predict into --out: stacks whose outputs are complete are kept, "
                   "the others predicted (same stacks, model and settings as that run, else refused)")
    p.set_defaults(func=cmd_predict)


def _device(name: str) -> str:
    import re

    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise input_error("--device", f"got {name!r}", "give cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise input_error("--device", f"{name} was asked for but this machine has no usable GPU",
                          "leave --device out (the GPU is used when there is one) or give --device cpu")
    return name


def run_predict(out, *, image=None, datalist=None, section: str | None = None, input_dir=None, checkpoint=None,
                overwrite: bool = False, resume: bool = False, progress: bool | None = None, **keys) -> None:
    """``inference.json`` through MONAI's bundle runner; ``keys``: any other config key (``nuclei_channel=2``).
    Only what is given is passed: a key left ``None`` (and ``overwrite``, ``resume`` left ``False``) keeps the config's
    value."""
    from .bundle import run_bundle

    overrides = {"datalist": datalist, "section": section, "image": image, "input_dir": input_dir,
                 "output_dir": str(Path(out).resolve()), "progress": progress, **keys,
                 "overwrite": True if overwrite else None, "resume": True if resume else None,
                 "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None}
    run_bundle("inference", "inference.json", **{k: v for k, v in overrides.items() if v is not None})


def typed_options(args, options=CONFIG_OPTIONS) -> dict:
    """The config keys the user gave on the command line (``None``: left out, the config decides)."""
    return {key: getattr(args, dest) for dest, key in options.items() if getattr(args, dest) is not None}


def cmd_predict(args) -> int:
    keys = typed_options(args)
    if args.device:
        keys["device"] = _device(args.device)
    run_predict(args.out, image=args.image, datalist=args.datalist, section=args.section, input_dir=args.input_dir,
                checkpoint=args.checkpoint, overwrite=args.overwrite, resume=args.resume, **keys)
    print(f"predictions: {Path(args.out)} (*_pred.csv, *_instances.tif, *_classes.tif, *_pred_qc.png, "
          "*_pred.geojson, predict_summary.json, summary.csv)")
    return 0
