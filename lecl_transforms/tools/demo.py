"""``lecl demo``: synthetic stacks -> pseudo-labels/EMIP with QC pictures -> LECL training (the CPU recipe,
shortened) -> inference on the held-out stacks -> evaluation, all under ``--out``;
and the summaries ``lecl synth`` and ``lecl demo`` print."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import input_error

__all__ = ["cmd_demo", "summarise_dataset", "preview_picture", "summarise_training", "summarise_demo",
           "shortened_schedule", "MANIFEST_NAME"]

MANIFEST_NAME = "lecl_demo.json"


def cmd_demo(args) -> int:
    """The built-in end-to-end run: synthetic stacks -> pseudo-labels -> training (the bundle's ``train.json`` +
    ``cpu.json`` + ``demo.json``) -> inference on the held-out test stacks (``inference.json``) -> evaluation
    (``evaluate.json``), all through MONAI's bundle runner. Writes nothing unless ``--out`` is new, empty, or an
    earlier demo and ``--overwrite`` is given."""
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
    print(f"[3/{steps}] LECL training, the CPU recipe shortened ({configs_dir() / 'cpu.json'} + demo.json) -> "
          f"{out / 'models'}")
    extra = shortened_schedule(args.epochs) if args.epochs else {}
    if args.overwrite:  # the training refuses to replace earlier checkpoints in bundle_root unless told so
        extra["overwrite"] = True
    run_bundle("training", "train.json", "cpu.json", "demo.json", bundle_root=str(out.resolve()),
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


def shortened_schedule(epochs: int) -> dict:
    """The training keys ``lecl demo --epochs N`` changes on top of ``demo.json``: N epochs, validation 5 times, the
    learning-rate step after 4/5 of them (as ``demo.json`` has it for its 30)."""
    return {"epochs": epochs, "val_interval": max(1, epochs // 5), "lr_step_epochs": max(1, epochs * 4 // 5)}


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
    print(f"  metrics:     {predictions / 'metrics.md'} and metrics.json; matched / missed / false nuclei: "
          f"{predictions}/*_eval_qc.png")
    print(f"  QC pictures: {out / 'prepared'}/*_qc.png;  MLflow: mlflow ui --backend-store-uri "
          f"sqlite:///{training_store(out)}")
    print("next, with your own stacks and clicks (datalist format: bundle/docs/README.md):")
    print("  lecl prepare --datalist my_datalist.json --out my_prepared   # check the pseudo-labels' QC pictures")
    print("  python -m monai.bundle run training --config_file bundle/configs/train.json --datalist my_datalist.json")
    print("  lecl predict --input-dir my_stacks --model bundle/models/stage0/model.pt --out my_predictions")


def preview_picture(stacks: list[tuple], um_per_px: float | None, totals: tuple[int, int, int, int]) -> np.ndarray:
    """``preview.png``: side by side, the plain max projection of each of ``stacks`` ``[(stem, section, image (2, Z,
    Y, X) nuclei and marker, ground-truth rows), ...]`` (all of one size) with its true nuclei (centre dot by class,
    orange ring around a decoy); titled with which stacks they are, their counts and the whole set's (``totals``:
    stacks, nuclei, positive, decoys)."""
    import numpy as np

    from ..data.qc_picture import MUTED, TEXT, draw_rings, legend_line, qc_figure
    from ..visualize import CLASS_COLOURS, composite_rgb, draw_points

    ring = (255, 140, 0)
    panels = []
    for stem, section, image, rows in stacks:
        yx = np.array([[int(r["y"]), int(r["x"])] for r in rows]).reshape(-1, 2)
        cls = np.array([int(r["label"]) for r in rows], np.int64)
        decoy = np.array([r["decoy"] == "1" for r in rows], bool)
        rgb = composite_rgb(image[0].max(0), image[1].max(0))
        panels.append((draw_points(draw_rings(rgb, yx[decoy], ring, 6.0), yx, cls),
                       f"{stem} ({section}): {len(cls)} nuclei, {int((cls == 2).sum())} positive"))
    n_stacks, nuclei, positive, decoys = totals
    shown = f"{len(stacks)} of the {n_stacks} stacks" if len(stacks) < n_stacks else f"the {n_stacks} stack(s)"
    header = [[(f"lecl synth preview: {shown}, plain max projection (marker red, nuclei cyan)", TEXT)],
              legend_line([(CLASS_COLOURS[2], "positive"), (CLASS_COLOURS[1], "negative"),
                           (ring, "ring: decoy (negative; marker only above/below)")]),
              [(f"all {n_stacks} stacks: {nuclei} nuclei, {positive} positive, {decoys} decoys; dots: true centres",
                MUTED)]]
    return qc_figure(panels, header, um_per_px)


def summarise_dataset(datalist: Path) -> None:
    """Print what was generated and write ``preview.png`` (:func:`preview_picture` of the first stack and, with
    more, the last one: a training and a test stack)."""
    import numpy as np

    from ..data.reader import IFStackReader
    from ..data.synthetic_dataset import MANIFEST_NAME as SYNTH_MANIFEST
    from ..utils.files import read_manifest, write_manifest
    from ..visualize import save_png

    content = json.loads(datalist.read_text())
    root = datalist.parent
    entries = [(k, e) for k in ("training", "validation", "test") for e in content.get(k, [])]
    total = pos = decoys = 0
    for _, e in entries:
        with open(root / e["nuclei"]) as f:
            rows = list(csv.DictReader(f))
        total += len(rows)
        pos += sum(r["label"] == "2" for r in rows)
        decoys += sum(r["decoy"] == "1" for r in rows)
    reader = IFStackReader(require_spacing=False, check_values=False)
    stacks, spacing = [], None
    for section, e in [entries[0], entries[-1]] if len(entries) > 1 else entries:
        image, meta = reader.get_data(reader.read(root / e["image"]))  # (C, Z, Y, X), spacing (dz, dy, dx)
        spacing = meta.get("spacing")
        with open(root / e["nuclei"]) as f:
            stacks.append((Path(e["image"]).name.split(".")[0], section, np.asarray(image, np.float32)[:2],
                           list(csv.DictReader(f))))
    preview = preview_picture(stacks, float(spacing[2]) if spacing is not None else None,
                              (len(entries), total, pos, decoys))
    save_png(root / "preview.png", preview)
    manifest = read_manifest(root / SYNTH_MANIFEST)  # the preview is lecl's too: --overwrite may replace it
    if "preview.png" not in manifest.get("files", ["preview.png"]):
        write_manifest(root, SYNTH_MANIFEST, {**manifest, "files": manifest["files"] + ["preview.png"]})
    sizes = {k: len(content.get(k, [])) for k in ("training", "validation", "test")}
    print(f"wrote {len(entries)} stacks to {root} ({sizes})")
    print(f"  nuclei: {total}, marker-positive: {pos}, decoy negatives (marker above/below only): {decoys}")
    print(f"  datalist: {datalist}")
    print(f"  preview:  {root / 'preview.png'} ({' and '.join(s[0] for s in stacks)}: plain MIP, marker red, nuclei "
          "cyan; true centres yellow = negative, magenta = positive; orange rings = decoys)")


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
