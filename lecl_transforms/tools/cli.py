"""The ``lecl`` command: ``lecl synth``, ``lecl prepare``, ``lecl demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import LECLInputError, find_input_error

__all__ = ["main"]


def _add_synth_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("synthetic data")
    g.add_argument("--n-images", type=int, default=10, help="number of stacks (default 10)")
    g.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives identical files")
    g.add_argument("--regime", default="clean", help="preset: clean (sparse, 2x anisotropy) or dense "
                   "(dense, hazy, 4.5x anisotropy, as real tissue stacks)")
    g.add_argument("--size", dest="size_yx", type=int, help="x/y size in pixels (default 256)")
    g.add_argument("--z-slices", nargs=2, type=int, metavar=("MIN", "MAX"), help="slices per stack (default 8 13)")
    g.add_argument("--density", type=float, help="nuclei per um^2 of the x/y field")
    g.add_argument("--anisotropy", type=float, help="z-step / pixel size")
    g.add_argument("--pixel-size", type=float, help="um per pixel (default 0.5)")
    g.add_argument("--haze", type=float, help="share of out-of-focus light, 0..1")
    g.add_argument("--photons", type=float, help="counts at full intensity: lower = noisier")
    g.add_argument("--positive-fraction", type=float, help="share of marker-positive nuclei")
    g.add_argument("--decoy-fraction", type=float, help="share of negatives with marker above/below them")
    g.add_argument("--jitter", dest="point_jitter_px", type=float, help="annotator click error in x/y (px)")
    g.add_argument("--z-click-error", type=float, help="probability a click is one slice off the centre")
    g.add_argument("--missed-click-rate", type=float, help="probability a nucleus is not clicked")


def _synth_config(args):
    from ..data.synthetic_dataset import config_from_options

    opts = {k: getattr(args, k) for k in ("size_yx", "density", "anisotropy", "pixel_size", "haze", "photons",
                                          "positive_fraction", "decoy_fraction", "point_jitter_px",
                                          "z_click_error", "missed_click_rate")}
    opts["z_slices"] = tuple(args.z_slices) if args.z_slices else None
    if opts["z_slices"] and not 2 <= opts["z_slices"][0] <= opts["z_slices"][1]:
        raise LECLInputError("--z-slices", f"got {args.z_slices}", "give MIN MAX with 2 <= MIN <= MAX")
    for name in ("haze", "positive_fraction", "decoy_fraction", "z_click_error", "missed_click_rate"):
        if opts[name] is not None and not 0 <= opts[name] <= 1:
            raise LECLInputError(f"--{name.replace('_', '-')}", f"got {opts[name]}", "give a value between 0 and 1")
    return config_from_options(args.regime, **opts)


def cmd_synth(args) -> int:
    from ..data.synthetic_dataset import write_dataset

    cfg = _synth_config(args)
    datalist = write_dataset(args.out, args.n_images, args.seed, cfg, overwrite=args.overwrite, progress=True,
                             regime=args.regime)
    _summarise_dataset(datalist)
    return 0


def _summarise_dataset(datalist: Path) -> None:
    """Print what was generated and write ``preview.png`` (first image: MIP composite with true classes)."""
    import csv
    import json

    import tifffile

    from .visualize import composite_rgb, draw_points, save_png

    content = json.loads(datalist.read_text())
    root = datalist.parent
    entries = [e for k in ("training", "validation", "test") for e in content.get(k, [])]
    total = pos = decoys = 0
    for e in entries:
        with open(root / e["nuclei"]) as f:
            rows = list(csv.DictReader(f))
        total += len(rows)
        pos += sum(r["label"] == "2" for r in rows)
        decoys += sum(r["decoy"] == "1" for r in rows)
    first = entries[0]
    image = tifffile.imread(root / first["image"]).astype(np.float32)  # (Z, C, Y, X)
    with open(root / first["nuclei"]) as f:
        rows = list(csv.DictReader(f))
    yx = np.array([[int(r["y"]), int(r["x"])] for r in rows]).reshape(-1, 2)
    cls = np.array([int(r["label"]) for r in rows])
    preview = draw_points(composite_rgb(image[:, 0].max(0), image[:, 1].max(0)), yx, cls)
    save_png(root / "preview.png", preview)
    sizes = {k: len(content.get(k, [])) for k in ("training", "validation", "test")}
    print(f"wrote {len(entries)} stacks to {root} ({sizes})")
    print(f"  nuclei: {total}, marker-positive: {pos}, decoy negatives (marker above/below only): {decoys}")
    print(f"  datalist: {datalist}")
    print(f"  preview:  {root / 'preview.png'} (plain MIP, marker red, nuclei cyan; points yellow = negative, "
          "magenta = positive)")


def cmd_prepare(args) -> int:
    from .prepare import entries_from_args, prepare_datalist

    entries = entries_from_args(args.datalist, args.image, args.points)
    datalist = prepare_datalist(
        entries, args.out, nuclei_channel=args.nuclei_channel, marker_channel=args.marker_channel,
        spacing=args.spacing, axes=args.axes, rules=args.rules, emip_channels=args.emip_channels, seed=args.seed,
        overwrite=args.overwrite,
    )
    n = sum(len(v) for v in entries.values())
    print(f"prepared {n} stack(s) into {Path(args.out)}: *_emip.tif, *_mip.tif, *_labels.tif, *_instances.tif, "
          f"*_nuclei.csv, *_qc.png")
    print(f"  datalist for training: {datalist}")
    return 0


def cmd_demo(args) -> int:
    """The built-in end-to-end run: synthetic stacks -> pseudo-labels/EMIP with QC pictures -> quick LECL training
    (the bundle's ``train.json`` + ``quick.json`` through MONAI's bundle runner). Everything goes under ``--out``."""
    from ..engines.config import default_bundle_root
    from .prepare import entries_from_args, prepare_datalist
    from ..data.synthetic import REGIMES
    from ..data.synthetic_dataset import MANIFEST_NAME, write_dataset

    out = Path(args.out)
    data, prepared = out / "data", out / "prepared"
    for folder, marker in ((data, MANIFEST_NAME), (prepared, "lecl_prepare.json")):
        if folder.exists() and any(folder.iterdir()) and not (folder / marker).is_file():
            raise LECLInputError(folder, "exists and holds files that lecl did not write", "choose another --out")
    print(f"[1/3] synthetic stacks with ground truth -> {data}")
    datalist = write_dataset(data, args.n_images, args.seed, REGIMES["clean"], overwrite=True, progress=True,
                             regime="clean")
    _summarise_dataset(datalist)
    print(f"[2/3] pseudo-labels, EMIP and QC pictures -> {prepared}")
    prepare_datalist(entries_from_args(str(datalist), None, None), prepared, overwrite=True, seed=args.seed)
    print(f"  QC pictures: {prepared}/*_qc.png (left EMIP, right plain MIP; orange rings: false overlaps removed)")
    if args.skip_training:
        return 0
    configs = Path(default_bundle_root()) / "configs"
    print(f"[3/3] LECL training, quick CPU config ({configs / 'quick.json'}) -> {out / 'models'}")
    from monai.bundle import run

    run("training", config_file=[str(configs / "train.json"), str(configs / "quick.json")],
        meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
        bundle_root=str(out.resolve()), datalist=str(datalist.resolve()), seed=args.seed,
        **({"epochs": args.epochs, "val_interval": max(1, args.epochs // 6)} if args.epochs else {}))
    _summarise_training(out)
    return 0


def _summarise_training(out: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = (out / "eval" / "mlruns.db").resolve()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("lecl")
    runs = client.search_runs(experiment.experiment_id, order_by=["attributes.start_time DESC"], max_results=1)
    f1 = [m.value for m in client.get_metric_history(runs[0].info.run_id, "val_click_f1")] if runs else []
    best = out / "models" / "stage0" / "model.pt"
    print(f"done. best model: {best}" if best.is_file() else f"done (no validation ran, so no best model in {best.parent})")
    if f1:
        print(f"  validation click F1 (marker-positive/negative at the held-out clicks): "
              f"{' -> '.join(f'{v:.2f}' for v in f1)}")
    print(f"  MLflow run: mlflow ui --backend-store-uri sqlite:///{db}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lecl", description="LECL: nuclei detection and marker classification in "
                                     "3D immunofluorescence stacks from point annotations.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="generate synthetic 3D IF stacks with ground truth and a datalist")
    p.add_argument("--out", required=True, help="output folder (new or empty, or an earlier synthetic set)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic set in --out")
    _add_synth_options(p)
    p.set_defaults(func=cmd_synth)
    p = sub.add_parser("prepare", help="pseudo-labels, EMIP/MIP and QC pictures from stacks and clicks")
    src = p.add_argument_group("input (a datalist, or one stack)")
    src.add_argument("--datalist", help="datalist JSON; every entry with points is prepared")
    src.add_argument("--image", help="one stack (TIFF/NIfTI)")
    src.add_argument("--points", help="its clicks (CSV z,y,x,label or a point-label volume)")
    p.add_argument("--out", required=True, help="output folder (never the folder of your data)")
    p.add_argument("--nuclei-channel", type=int, default=0, help="0-based index of the nuclei channel (default 0)")
    p.add_argument("--marker-channel", type=int, default=1, help="0-based index of the marker channel (default 1)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                   help="voxel spacing in um, used where the file does not state it")
    p.add_argument("--axes", help="axis order of plain TIFFs without metadata, e.g. ZCYX")
    p.add_argument("--rules", default="robust", choices=["robust", "paper"],
                   help="robust (default) or paper: Algorithm 1 taken literally")
    p.add_argument("--emip-channels", default="both", choices=["both", "marker"],
                   help="both (paper) or marker: EMIP of the marker, plain MIP of nuclei (published code)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier lecl prepare")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("demo", help="run the built-in demo on synthetic data")
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--n-images", type=int, default=6, help="synthetic stacks (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="training epochs (default: the quick config's)")
    p.add_argument("--skip-training", action="store_true", help="stop after the QC pictures")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # noqa: BLE001 - only input errors are reported briefly, anything else is re-raised
        cause = find_input_error(e)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
