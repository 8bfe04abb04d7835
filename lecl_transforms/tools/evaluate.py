"""``lecl evaluate``: the bundle's ``evaluate.json`` run from the shell (the same code path, not a copy)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_evaluate_parser", "cmd_evaluate", "run_evaluate"]


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="precision / recall / F1 of detection and classification against clicks")
    p.add_argument("--pred", required=True, help="folder written by lecl predict")
    p.add_argument("--truth", required=True, help="datalist JSON whose entries have the true points")
    p.add_argument("--section", default="test", help="datalist section (default test)")
    p.add_argument("--radius-um", type=float, default=3.0,
                   help="largest centroid-to-click distance of a match, micrometres, > 0 (default 3)")
    p.add_argument("--z-tolerance", type=int, default=1,
                   help="a click matches only within the nucleus' slices +- this many (default 1)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"),
                   help="voxel spacing in um of every stack (default: the one lecl predict used, else the image's)")
    p.add_argument("--out", help="folder for metrics.json, metrics.md, the STEM_eval_qc.png pictures and "
                   "lecl_evaluate.json (default: --pred)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier lecl evaluate's results in --out")
    p.add_argument("--no-qc-pictures", action="store_true",
                   help="skip the per-stack pictures of matched / missed / false nuclei (each reads its stack)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the evaluation to MLflow")
    p.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///path/mlruns.db or http://server "
                   "(default: mlruns.db in --out, artifacts in mlruns/ beside it)")
    p.set_defaults(func=cmd_evaluate)


def run_evaluate(pred, truth, section: str = "test", radius_um: float = 3.0, z_tolerance: int = 1, out=None,
                 mlflow: bool = True, tracking_uri: str | None = None, bundle_root: str | None = None,
                 spacing=None, overwrite: bool = False, qc_pictures: bool = True) -> dict:
    """``evaluate.json`` through MONAI's bundle runner; returns the report (``metrics.json``'s content). ``spacing``,
    ``tracking_uri``, ``overwrite`` and ``qc_pictures=False`` are passed only when given (the config's values hold
    otherwise)."""
    import json

    from .bundle import run_bundle

    overrides = {"pred_dir": str(Path(pred).resolve()), "datalist": str(Path(truth).resolve()), "section": section,
                 "radius_um": radius_um, "z_tolerance": z_tolerance, "mlflow": mlflow}
    out = Path(out or pred).resolve()
    overrides["output_dir"] = str(out)
    if tracking_uri:
        overrides["tracking_uri"] = tracking_uri
    if spacing is not None:
        overrides["spacing"] = [float(v) for v in spacing]
    if overwrite:
        overrides["overwrite"] = True
    if not qc_pictures:
        overrides["qc_pictures"] = False
    if bundle_root:
        overrides["bundle_root"] = str(bundle_root)
    run_bundle("evaluate", "evaluate.json", **overrides)
    return json.loads((out / "metrics.json").read_text())


def cmd_evaluate(args) -> int:
    run_evaluate(args.pred, args.truth, args.section, args.radius_um, args.z_tolerance, args.out,
                 mlflow=not args.no_mlflow, tracking_uri=args.tracking_uri, spacing=args.spacing,
                 overwrite=args.overwrite, qc_pictures=not args.no_qc_pictures)
    out = Path(args.out or args.pred)
    print(f"metrics: {out / 'metrics.json'} and metrics.md"
          + ("" if args.no_qc_pictures else f"; pictures: {out}/*_eval_qc.png"))
    return 0
