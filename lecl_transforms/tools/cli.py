"""The ``lecl`` command: ``lecl synth``, ``lecl prepare``, ``lecl predict``, ``lecl evaluate``, ``lecl demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LECLRunError, find_input_error
from .demo import cmd_demo, summarise_dataset
from .evaluate import add_evaluate_parser
from .predict import add_predict_parser

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
    g.add_argument("--jitter", dest="point_jitter_px", type=float, help="annotator click error in x/y: standard "
                   "deviation in px, at most the largest nucleus radius (a click stays on its nucleus)")
    g.add_argument("--z-click-error", type=float, help="probability a click is one slice off the centre")
    g.add_argument("--missed-click-rate", type=float, help="probability a nucleus is not clicked")


def _synth_config(args):
    from ..data.synthetic_dataset import config_from_options

    opts = {k: getattr(args, k) for k in ("size_yx", "density", "anisotropy", "pixel_size", "haze", "photons",
                                          "positive_fraction", "decoy_fraction", "point_jitter_px",
                                          "z_click_error", "missed_click_rate")}
    opts["z_slices"] = tuple(args.z_slices) if args.z_slices else None
    return config_from_options(args.regime, **opts)  # values are checked by write_dataset before it writes


def cmd_synth(args) -> int:
    from ..data.synthetic_dataset import write_dataset

    cfg = _synth_config(args)
    datalist = write_dataset(args.out, args.n_images, args.seed, cfg, overwrite=args.overwrite, progress=True,
                             regime=args.regime)
    summarise_dataset(datalist)
    return 0


def cmd_prepare(args) -> int:
    from .prepare import entries_from_args, prepare_datalist

    entries = entries_from_args(args.datalist, args.image, args.points)
    datalist = prepare_datalist(
        entries, args.out, nuclei_channel=args.nuclei_channel, marker_channel=args.marker_channel,
        spacing=args.spacing, axes=args.axes, rules=args.rules, emip_channels=args.emip_channels, seed=args.seed,
        overwrite=args.overwrite, allow_suspicious_input=args.allow_suspicious_input,
        override_spacing=args.override_spacing, inputs=[args.datalist] if args.datalist else (),
    )
    n = sum(len(v) for v in entries.values())
    print(f"prepared {n} stack(s) into {Path(args.out)}: *_emip.tif, *_mip.tif, *_labels.tif, *_instances.tif, "
          f"*_nuclei.csv, *_qc.png")
    print(f"  datalist for training: {datalist}")
    return 0


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
                   help="voxel spacing in um, used where the file does not state it (for every stack with "
                   "--override-spacing)")
    p.add_argument("--axes", help="axis order of plain TIFFs that store a 4D shape but not its axis names, "
                   "e.g. ZCYX; a flat TIFF of N planes (N, Y, X) does not say how many channels: re-save it as a "
                   "hyperstack")
    p.add_argument("--rules", default="robust", choices=["robust", "paper"],
                   help="robust (default) or paper: Algorithm 1 taken literally")
    p.add_argument("--emip-channels", default="both", choices=["both", "marker", "none"],
                   help="both (paper), marker: EMIP of the marker, plain MIP of nuclei (published code), or none: "
                   "plain MIP (baseline)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--override-spacing", action="store_true",
                   help="use --spacing for every stack, even where the file states another spacing")
    p.add_argument("--allow-suspicious-input", action="store_true",
                   help="warn about suspicious inputs (e.g. channels that look swapped) instead of refusing them")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier lecl prepare")
    p.set_defaults(func=cmd_prepare)
    add_predict_parser(sub)
    add_evaluate_parser(sub)
    p = sub.add_parser("demo", help="the whole job on built-in synthetic data: synth, prepare, train, predict, "
                       "evaluate")
    p.add_argument("--out", default="demo", help="output folder: new, empty or an earlier demo (default ./demo)")
    p.add_argument("--n-images", type=int, default=6, help="synthetic stacks (default 6: 4 training, 1 validation, "
                   "1 test)")
    p.add_argument("--regime", default="dense", help="synthetic regime: dense (default: dense, hazy, 4.5x "
                   "anisotropic, decoys) or clean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="training epochs (default: demo.json's 30)")
    p.add_argument("--skip-training", action="store_true", help="stop after the QC pictures")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out (models included)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # every file is written under a temporary name and renamed when complete: nothing half-written remains
        resume = " (lecl predict: --resume finishes the run, keeping the stacks already complete)" \
            if args.command == "predict" else ""
        print(f"interrupted (Ctrl-C){resume}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - only input errors are reported briefly, anything else is re-raised
        cause = find_input_error(e)
        if cause is not None:
            print(f"error: {cause}", file=sys.stderr)
            return 2
        run_error = next((x for x in (e, e.__cause__) if isinstance(x, LECLRunError)), None)
        if run_error is None:
            raise
        print(f"error: {run_error}", file=sys.stderr)  # a summary; the tracebacks are in the log it names
        return 1


if __name__ == "__main__":
    sys.exit(main())
