"""``lecl demo``: synthetic stacks -> pseudo-labels/EMIP with QC pictures -> quick LECL training -> inference on the
held-out stacks -> evaluation, all under ``--out``;
and the summaries ``lecl synth`` and ``lecl demo`` print."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import input_error

__all__ = ["cmd_demo", "summarise_dataset", "summarise_training", "summarise_demo", "MANIFEST_NAME"]

MANIFEST_NAME = "lecl_demo.json"


def cmd_demo(args) -> int:
    """The built-in end-to-end run: synthetic stacks -> pseudo-labels -> quick training (the bundle's ``train.json`` +
    ``quick.json``) -> inference on the held-out test stacks (``inference.json``) -> evaluation (``evaluate.json``),
    all through MONAI's bundle runner. Writes nothing unless ``--out`` is new, empty, or an earlier demo and
    ``--overwrite`` is given."""
    from ..data.synthetic import REGIMES
    from ..data.synthetic_dataset import check_synth_options, write_dataset
    from .bundle import configs_dir, run_bundle
    from .evaluate import run_evaluate
    from ..utils.files import check_out_dir, make_dirs, write_manifest
    from .predict import run_predict
    from .prepare import check_seed, entries_from_args, prepare_datalist

    if args.regime not in REGIMES:
        raise input_error("--regime", f"unknown regime '{args.regime}'", f"choose one of {sorted(REGIMES)}")
    check_synth_options(REGIMES[args.regime], args.n_images, args.seed)
    check_seed(args.seed)  # the k-means seed of step 2: refused now rather than after step 1 wrote the data
    if args.n_images < 3 and not args.skip_training:
        raise input_error("--n-images", f"got {args.n_images}", "give at least 3 stacks (training, validation, test)")
    if args.epochs is not None and args.epochs < 1:
        raise input_error("--epochs", f"got {args.epochs}", "give at least 1 epoch, or leave --epochs out")
    out = Path(args.out)
    check_out_dir(out, command="lecl demo", manifest=MANIFEST_NAME, overwrite=args.overwrite)
    make_dirs(out)
    # first: from here on the folder is recognisably a demo, so an interrupted run can be replaced with --overwrite
    write_manifest(out, MANIFEST_NAME, {"command": "lecl demo", "n_images": args.n_images, "seed": args.seed,
                                        "regime": args.regime, "epochs": args.epochs,
                                        "skip_training": args.skip_training})
    data, prepared, predictions = out / "data", out / "prepared", out / "predictions"
    steps = 2 if args.skip_training else 5
    print(f"[1/{steps}] synthetic stacks with ground truth ({args.regime} regime) -> {data}")
    datalist = write_dataset(data, args.n_images, args.seed, REGIMES[args.regime], overwrite=args.overwrite,
                             progress=True, regime=args.regime)
    summarise_dataset(datalist)
    print(f"[2/{steps}] pseudo-labels, EMIP and QC pictures -> {prepared}")
    prepare_datalist(entries_from_args(str(datalist), None, None), prepared, overwrite=args.overwrite, seed=args.seed)
    print(f"  QC pictures: {prepared}/*_qc.png (left EMIP, right plain MIP; orange rings: false overlaps removed)")
    if args.skip_training:
        return 0
    print(f"[3/{steps}] LECL training, quick CPU config ({configs_dir() / 'quick.json'}) -> {out / 'models'}")
    extra = {"epochs": args.epochs, "val_interval": max(1, args.epochs // 6)} if args.epochs else {}
    if args.overwrite:  # the training refuses to replace earlier checkpoints in bundle_root unless told so
        extra["overwrite"] = True
    run_bundle("training", "train.json", "quick.json", bundle_root=str(out.resolve()),
               datalist=str(datalist.resolve()), seed=args.seed, **extra)
    summarise_training(out)
    model = out / "models" / "stage0" / "model.pt"
    print(f"[4/{steps}] nuclei of the held-out test stacks, in 3D -> {predictions}")
    run_predict(predictions, datalist=str(datalist.resolve()), section="test", checkpoint=model,
                overwrite=args.overwrite, progress=False)
    print(f"[5/{steps}] evaluation against the test stacks' clicks")
    # logged beside the training's runs, in its MLflow store
    report = run_evaluate(predictions, datalist, "test", bundle_root=str(out.resolve()), overwrite=args.overwrite,
                          tracking_uri=f"sqlite:///{training_store(out)}")
    summarise_demo(out, report)
    return 0


def training_store(out: Path) -> Path:
    """The MLflow database of a training with ``bundle_root`` ``out`` (train.json's ``output_dir``/mlruns.db)."""
    return (Path(out) / "eval" / "mlruns.db").resolve()


def summarise_demo(out: Path, report: dict) -> None:
    pooled = report["pooled"]
    predictions = out / "predictions"
    print(f"done: detection F1 {pooled['np_f1']:.3f} (precision {pooled['np_precision']:.3f}, recall "
          f"{pooled['np_recall']:.3f}); marker-positive F1 {pooled['nc_f1']:.3f}; "
          f"{pooled['n_pred_positive']} positives predicted, {pooled['n_true_positive']} true")
    print(f"  predictions: {predictions}/*_pred.csv, *_instances.tif, *_classes.tif (napari, Fiji), *_pred.geojson "
          "(QuPath), *_pred_qc.png")
    print(f"  metrics:     {predictions / 'metrics.md'} and metrics.json")
    print(f"  QC pictures: {out / 'prepared'}/*_qc.png;  MLflow: mlflow ui --backend-store-uri "
          f"sqlite:///{training_store(out)}")
    print("next, with your own stacks and clicks (datalist format: bundle/docs/README.md):")
    print("  lecl prepare --datalist my_datalist.json --out my_prepared   # check the pseudo-labels' QC pictures")
    print("  python -m monai.bundle run training --config_file bundle/configs/train.json --datalist my_datalist.json")
    print("  lecl predict --input-dir my_stacks --model bundle/models/stage0/model.pt --out my_predictions")


def summarise_dataset(datalist: Path) -> None:
    """Print what was generated and write ``preview.png`` (first image: MIP composite with true classes)."""
    import numpy as np
    import tifffile

    from ..data.synthetic_dataset import MANIFEST_NAME as SYNTH_MANIFEST
    from ..utils.files import read_manifest, write_manifest
    from ..visualize import composite_rgb, draw_points, save_png

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
    manifest = read_manifest(root / SYNTH_MANIFEST)  # the preview is lecl's too: --overwrite may replace it
    if "preview.png" not in manifest.get("files", ["preview.png"]):
        write_manifest(root, SYNTH_MANIFEST, {**manifest, "files": manifest["files"] + ["preview.png"]})
    sizes = {k: len(content.get(k, [])) for k in ("training", "validation", "test")}
    print(f"wrote {len(entries)} stacks to {root} ({sizes})")
    print(f"  nuclei: {total}, marker-positive: {pos}, decoy negatives (marker above/below only): {decoys}")
    print(f"  datalist: {datalist}")
    print(f"  preview:  {root / 'preview.png'} (plain MIP, marker red, nuclei cyan; points yellow = negative, "
          "magenta = positive)")


def summarise_training(out: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = training_store(out)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("lecl")
    runs = client.search_runs(experiment.experiment_id, order_by=["attributes.start_time DESC"], max_results=1)
    f1 = [m.value for m in client.get_metric_history(runs[0].info.run_id, "val_click_f1")] if runs else []
    best = out / "models" / "stage0" / "model.pt"
    print(f"done. best model: {best}" if best.is_file()
          else f"done (no validation ran, so no best model in {best.parent})")
    if f1:
        print(f"  validation click F1 (marker-positive/negative at the held-out clicks): "
              f"{' -> '.join(f'{v:.2f}' for v in f1)}")
    print(f"  MLflow run: mlflow ui --backend-store-uri sqlite:///{db}")
