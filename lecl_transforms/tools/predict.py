"""``lecl predict``: the bundle's ``inference.json`` run from the shell (the same code path, not a copy)."""

from __future__ import annotations

from pathlib import Path

from ..errors import input_error

__all__ = ["cmd_predict", "add_predict_parser", "run_predict"]


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="detect and classify the nuclei of 3D stacks with a trained model")
    src = p.add_argument_group("input (exactly one)")
    src.add_argument("--image", help="one stack (TIFF/NIfTI)")
    src.add_argument("--datalist", help="datalist JSON; the stacks of --section are predicted")
    src.add_argument("--section", default="test", help="datalist section to predict (default test)")
    src.add_argument("--input-dir", help="a folder: every .tif/.tiff/.nii/.nii.gz in it")
    p.add_argument("--model", "--checkpoint", dest="checkpoint",
                   help="trained model (default: the bundle's models/model.pt); it knows its own width, patch size "
                   "and channel composite")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier lecl predict output")
    p.add_argument("--nuclei-channel", type=int, default=0, help="0-based index of the nuclei channel (default 0)")
    p.add_argument("--marker-channel", type=int, default=1, help="0-based index of the marker channel (default 1)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                   help="voxel spacing in um where the file does not state it (every stack with --override-spacing)")
    p.add_argument("--axes", help="axis order of plain TIFFs without metadata, e.g. ZCYX")
    p.add_argument("--override-spacing", action="store_true", help="use --spacing even where the file states another")
    p.add_argument("--allow-suspicious-input", action="store_true",
                   help="warn about suspicious inputs (e.g. identical channels) instead of refusing them")
    p.add_argument("--min-positive-slices", type=int, default=1,
                   help="slices a nucleus must be called positive in to be positive (default 1, the paper's rule)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the first GPU if any, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier lecl predict output in --out")
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


def run_predict(out, *, image=None, datalist=None, section: str = "test", input_dir=None, checkpoint=None,
                overwrite: bool = False, progress: bool = True, **keys) -> None:
    """``inference.json`` through MONAI's bundle runner; ``keys``: any other config key (``nuclei_channel=2``)."""
    from .bundle import run_bundle

    overrides = {"datalist": datalist, "section": section, "image": image, "input_dir": input_dir,
                 "output_dir": str(Path(out).resolve()), "overwrite": overwrite, "progress": progress, **keys}
    if checkpoint:
        overrides["checkpoint"] = str(Path(checkpoint).resolve())
    run_bundle("inference", "inference.json", **overrides)


def cmd_predict(args) -> int:
    keys = {"nuclei_channel": args.nuclei_channel, "marker_channel": args.marker_channel, "spacing": args.spacing,
            "axes": args.axes, "override_spacing": args.override_spacing,
            "allow_suspicious_input": args.allow_suspicious_input, "min_positive_slices": args.min_positive_slices,
            "overlap": args.overlap}
    if args.device:
        keys["device"] = _device(args.device)
    run_predict(args.out, image=args.image, datalist=args.datalist, section=args.section, input_dir=args.input_dir,
                checkpoint=args.checkpoint, overwrite=args.overwrite, **keys)
    print(f"predictions: {Path(args.out)} (*_pred.csv, *_instances.tif, *_classes.tif, *_pred_qc.png, "
          "*_pred.geojson, predict_summary.json)")
    return 0
