"""Error budget: the ceiling of each stage of the method, each measured alone against the synthetic generator's ground
truth, per regime (dense, clean), as mean +- spread (half the range) over seeds.

1. pseudo-labels (``lecl prepare``'s Alg. 1): per-nucleus 3D mask IoU (Voronoi cell x 3D nuclei mask over the
   nucleus' slice set against the true nucleus) and z-range IoU (slice set against the true slices);
2. per-slice 2D detection of the network (``--model``, default the shipped ``models/model.pt``, through the
   bundle's slice inferer and post-processing of ``inference.json``) against the true per-slice nuclei: F1 of a
   one-to-one centroid matching within ``--radius-um`` on each slice;
3. 3D integration given the TRUE per-slice instances with realistic damage (:func:`damage`: dropped slices, in-plane
   splits, merges of touching neighbours, centroid jitter, plus a decoy's marker slices seen as positive instances),
   for each link method: detection F1 and marker-positive F1 of the linked nuclei, decoys turned positive;
4. classification given the true nuclei: the network's per-pixel classes voted over each true per-slice instance
   (the post-processing's own type rule), a nucleus positive when positive on >= ``min_positive_slices`` slices;
5. end to end: the network's per-slice instances linked by each method, scored by ``lecl evaluate``'s matching
   (Hungarian on anisotropic distance in um against the clicks, ``radius_um`` 3, ``z_tolerance`` 1).

Detection and marker-positive F1 are :func:`lecl_transforms.metrics.scores`' ``np_f1`` and ``nc_f1`` everywhere.

    python benchmarks/error_budget.py                    # 2 seeds x 2 stacks of 192 x 192 per regime, ~2 minutes
    python benchmarks/error_budget.py --seeds 0 1 2 --n-images 3 --size 192
    python benchmarks/error_budget.py --skip-network     # stages 1 and 3 only (no model needed)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from lecl_transforms import REGIMES, load_datalist, write_dataset
from lecl_transforms.data import datalist_sections
from lecl_transforms.metrics import counts_from_matches, decoy_counts, match_nuclei, scores
from lecl_transforms.transforms.functional.link_slices import LINK_METHODS, link_slices

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundle" / "configs" / "inference.json"


# -- ground truth ------------------------------------------------------------------------------------------------------
def truth_rows(entry) -> list[dict]:
    with open(entry["nuclei"]) as f:
        return [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]


def per_slice_ids(instances3d: np.ndarray) -> np.ndarray:
    """True 3D nucleus ids ``(Z, Y, X)`` -> per-slice instance ids unique over the stack (nucleus i on slice z)."""
    inst = instances3d.astype(np.int64)
    n = int(inst.max(initial=0)) + 1
    return np.where(inst > 0, inst + np.arange(inst.shape[0])[:, None, None] * n, 0)


def compact(ids: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(ids.shape).astype(np.int64)  # 0 stays 0: it is the smallest value present


def slice_classes(ids: np.ndarray, marker: np.ndarray, share: float = 0.1):
    """Per-slice class (2 where at least ``share`` of the instance's pixels carry marker, else 1) and score."""
    n = int(ids.max(initial=0)) + 1
    area = np.bincount(ids.ravel(), minlength=n)
    on_marker = np.bincount(ids[marker].ravel(), minlength=n)
    positive = on_marker >= share * np.maximum(area, 1)
    positive[0] = False
    return np.where(positive, 2, 1), np.where(positive, 0.9, 0.1)


# -- damage ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Damage:
    """What a per-slice detector does to true per-slice nuclei (rates per slice instance unless stated)."""

    drop: float = 0.10  # instance missed on that slice
    split: float = 0.10  # cut in two by a straight line off its centre (a big piece and a fragment)
    merge: float = 0.05  # per pair of touching instances on a slice: detected as one
    jitter_px: float = 1.0  # centroid shift (standard deviation in y and x, px), mask moved with it
    ghost: float = 0.5  # per decoy: its marker slices (above/below the nucleus) detected as positive instances

    def label(self) -> str:
        return (f"drop {self.drop:.0%}, split {self.split:.0%}, merge {self.merge:.0%} of touching pairs, "
                f"jitter {self.jitter_px:g} px, decoy marker slices detected for {self.ghost:.0%} of decoys")


def damage(instances3d: np.ndarray, marker: np.ndarray, rows: list[dict], rng: np.random.Generator,
           d: Damage = Damage()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True 3D instances -> damaged per-slice instances (ids unique over the stack), their classes and scores."""
    ids = per_slice_ids(instances3d)
    n_z, n_y, n_x = ids.shape
    ids = compact(ids)
    n = int(ids.max()) + 1
    # merges: touching pairs on a slice, each id in at most one merge (the later pair's relabel wins)
    pairs = []
    for a, b in ((ids[:, :, :-1], ids[:, :, 1:]), (ids[:, :-1, :], ids[:, 1:, :])):
        touch = (a > 0) & (b > 0) & (a != b)
        pairs.append(np.stack([np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    pairs = pairs[rng.random(len(pairs)) < d.merge]
    lut = np.arange(n)
    lut[pairs[:, 1]] = pairs[:, 0]
    ids = lut[ids]
    # drops
    lut = np.arange(n)
    lut[rng.random(n) < d.drop] = 0
    lut[0] = 0
    ids = lut[ids]
    # splits: pixels beyond a line at 0.2-0.6 radius from the centroid become a new instance
    z, y, x = np.nonzero(ids)
    own = ids[z, y, x]
    area = np.bincount(own, minlength=n).astype(np.float64)
    cy = np.bincount(own, weights=y, minlength=n) / np.maximum(area, 1)
    cx = np.bincount(own, weights=x, minlength=n) / np.maximum(area, 1)
    radius = np.sqrt(area / np.pi)
    cut = (rng.random(n) < d.split) & (area >= 20)
    angle = rng.uniform(0, 2 * np.pi, n)
    offset = rng.uniform(0.2, 0.6, n) * radius
    beyond = (y - cy[own]) * np.sin(angle[own]) + (x - cx[own]) * np.cos(angle[own]) > offset[own]
    moved = cut[own] & beyond
    own = np.where(moved, own + n, own)
    # jitter: each instance's pixels shifted together (later instances overwrite where they collide)
    shift = np.rint(rng.normal(0, d.jitter_px, (2 * n, 2))).astype(np.int64)
    out = np.zeros_like(ids)
    out[z, np.clip(y + shift[own, 0], 0, n_y - 1), np.clip(x + shift[own, 1], 0, n_x - 1)] = own
    # a decoy's marker slices: the nucleus' footprint (shrunk by a pixel) detected where nothing else is
    decoys = [r for r in rows if r["decoy"] and rng.random() < d.ghost]
    if decoys:
        which = np.zeros(int(instances3d.max()) + 1, np.int64)
        lo, hi = np.full(len(decoys) + 1, n_z), np.full(len(decoys) + 1, -1)
        for k, r in enumerate(decoys, start=1):
            which[r["id"]], lo[k], hi[k] = k, r["marker_z_start"], r["marker_z_stop"]
        footprint = ndimage.grey_erosion(which[instances3d].max(axis=0), size=3)
        for zz in range(n_z):
            ghost = (footprint > 0) & (lo[footprint] <= zz) & (zz <= hi[footprint]) & (out[zz] == 0)
            out[zz][ghost] = 4 * n + zz * (len(decoys) + 1) + footprint[ghost]
    out = compact(out)
    cls, score = slice_classes(out, marker)
    return out, cls, score


# -- scoring -----------------------------------------------------------------------------------------------------------
def nucleus_scores(nuclei, rows, spacing, radius_um=3.0, z_tolerance=1) -> dict:
    """Linked nuclei (a ``Nuclei3D``) against the true nuclei (centre slice, centre y x): ``lecl evaluate``'s
    matching and scores, plus :func:`~lecl_transforms.metrics.decoy_counts` (decoys, matched, called positive)."""
    t = nuclei.table()
    pred = np.stack([t["z"], t["y"], t["x"]], 1)
    true = np.array([[r["centre_z"], r["centre_y"], r["centre_x"]] for r in rows], np.float64).reshape(-1, 3)
    labels = np.array([r["label"] for r in rows], np.int64)
    p, q = match_nuclei(pred, np.stack([t["z_start"], t["z_stop"]], 1), true, spacing, radius_um, z_tolerance)
    decoys = np.array([r["decoy"] for r in rows], bool)
    return {**scores(counts_from_matches(t["label"], labels, p, q)), **decoy_counts(t["label"], decoys, p, q)}


def pooled(results: list[dict]) -> dict:
    """Scores recomputed from counts pooled over stacks (tp/fp/fn and the class counts in ``scores``' output are
    not enough for nc_f1, so each stack's F1 is weighted by its number of true nuclei instead)."""
    weight = np.array([r["n_true"] for r in results], np.float64)
    out = {k: float(np.average([r[k] for r in results], weights=weight)) for k in ("np_f1", "nc_f1", "np_precision",
                                                                                    "np_recall")}
    for key in ("decoys", "decoys_matched", "decoys_positive"):  # counts: summed
        out[key] = sum(r[key] for r in results)
    return out


# -- stages ------------------------------------------------------------------------------------------------------------
def pseudo_label_quality(entry) -> dict:
    """Stage 1: per-nucleus 3D mask and z-range IoU of the prepare step's pseudo-labels."""
    import tifffile

    from lecl_transforms.transforms import pseudo_label_transforms

    d = pseudo_label_transforms(keep_intermediate=True)({"image": entry["image"], "points": entry["points"]})
    rows = [r for r in truth_rows(entry) if r["annotated"]]
    truth = tifffile.imread(entry["instances"]).astype(np.int64)
    sets = np.asarray(d["slice_sets"], bool)  # (N points, Z)
    cells = np.asarray(d["cells"])[0].astype(np.int64)  # (Y, X): cell j + 1 of point j
    mask = np.asarray(d["nuclei_mask"]).reshape(truth.shape).astype(bool)
    n = len(rows)
    # pseudo 3D nucleus j: 3D mask inside cell j on the slices of its slice set
    cell3d = np.broadcast_to(cells, truth.shape)
    in_set = np.zeros((n + 1, truth.shape[0]), bool)
    in_set[1:] = sets
    pseudo = np.where(mask & in_set[cell3d, np.arange(truth.shape[0])[:, None, None]], cell3d, 0)
    true_id = np.array([r["id"] for r in rows], np.int64)
    own = np.zeros(int(truth.max()) + 1, np.int64)  # true nucleus id -> point j + 1
    own[true_id] = np.arange(1, n + 1)
    mine = own[truth]
    both = np.bincount(pseudo[(pseudo > 0) & (pseudo == mine)], minlength=n + 1)[1:]
    size_p = np.bincount(pseudo.ravel(), minlength=n + 1)[1:]
    size_t = np.bincount(mine.ravel(), minlength=n + 1)[1:]
    mask_iou = both / np.maximum(size_p + size_t - both, 1)
    true_sets = np.zeros_like(sets)
    for j, r in enumerate(rows):
        true_sets[j, r["z_start"]:r["z_stop"] + 1] = True
    z_iou = (sets & true_sets).sum(1) / np.maximum((sets | true_sets).sum(1), 1)
    return {"mask_iou": float(mask_iou.mean()), "z_iou": float(z_iou.mean()), "n": n}


def slice_detection(detected: dict, truth: np.ndarray, spacing, radius_um: float) -> tuple[int, int, int]:
    """Stage 2: (tp, fp, fn) of per-slice detections against the true per-slice nuclei, matched on each slice."""
    def centroids(ids):
        ids = compact(ids)
        z, y, x = np.nonzero(ids)
        own = ids[z, y, x]
        area = np.bincount(own)[1:]
        c = np.stack([np.bincount(own, weights=v)[1:] / np.maximum(area, 1) for v in (z, y, x)], 1)
        return c[area > 0]

    pred, true = centroids(detected["instances"]), centroids(per_slice_ids(truth))
    p, _ = match_nuclei(pred, np.repeat(pred[:, :1], 2, 1), true, spacing, radius_um, 0)
    return len(p), len(pred) - len(p), len(true) - len(p)


def classify_true_nuclei(outputs, truth: np.ndarray, rows, spacing, min_positive_slices: int) -> dict:
    """Stage 4: the network's per-pixel classes voted over each true per-slice nucleus (the post-processing's own
    type rule), positive nuclei by the linking rule; scored with the true nuclei as the predictions."""
    import torch

    from lecl_transforms.transforms.functional.hovernet_post import _argmax_channels, _statistics
    from lecl_transforms.transforms.functional.link_slices import Nuclei3D  # noqa: F401 - documents the rule's home
    from lecl_transforms.transforms.hovernet_post import NC

    n_nuclei = int(truth.max(initial=0)) + 1
    positive_slices = np.zeros(n_nuclei, np.int64)
    for z0, batch in outputs.batches:
        prob = torch.softmax(batch[NC].float(), dim=1)
        vote = _argmax_channels(prob)
        for k in range(prob.shape[0]):
            ids = truth[z0 + k].astype(np.int64)
            if ids.shape != tuple(prob.shape[2:]):
                raise SystemExit("stage 4 needs the network's grid to be the stack's (a model without pixel size)")
            present = np.unique(ids[ids > 0])
            lut = np.zeros(n_nuclei, np.int64)
            lut[present] = np.arange(1, len(present) + 1)
            det = _statistics(lut[ids].astype(np.int32), len(present), (prob[k], vote[k]))
            positive_slices[present] += det.type == 2
    label = np.where(positive_slices >= min_positive_slices, 2, 1)
    true_labels = np.array([r["label"] for r in rows])
    pred_labels = label[[r["id"] for r in rows]]
    both = np.arange(len(rows))
    decoys = np.array([r["decoy"] for r in rows], bool)
    return {**scores(counts_from_matches(pred_labels, true_labels, both, both)),
            **decoy_counts(pred_labels, decoys, both, both)}


# -- driver ------------------------------------------------------------------------------------------------------------
def spread(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.3f} ± {(values.max() - values.min()) / 2:.3f}"


def run_regime(regime: str, seeds, args, model) -> dict[str, list]:
    """Every stage on ``args.n_images`` stacks per seed; returns per-seed values keyed by table line."""
    import tifffile

    lines: dict[str, list] = {}

    def add(key, value):
        lines.setdefault(key, []).append(value)

    cfg = dataclasses.replace(REGIMES[regime], size_yx=args.size)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            datalist = write_dataset(Path(tmp) / "data", args.n_images, seed, cfg, regime=regime)
            entries = [e for s in datalist_sections(datalist) for e in load_datalist(datalist, s)]
            link_res, ghost_res = {m: [] for m in LINK_METHODS}, {m: [] for m in LINK_METHODS}
            e2e = {m: [] for m in LINK_METHODS}
            pseudo, det_counts, cls_res = [], np.zeros(3, np.int64), []
            for entry in entries:
                rows = truth_rows(entry)
                truth = tifffile.imread(entry["instances"])
                marker = tifffile.imread(entry["marker_mask"]).astype(bool)
                spacing = cfg.spacing()
                pseudo.append(None if args.skip_pseudo else pseudo_label_quality(entry))
                # the same damage twice: without and with a decoy's marker slices seen as positive instances
                for ghost, found in ((0.0, link_res), (args.ghost, ghost_res)):
                    ids, cls, score = damage(truth, marker, rows, np.random.default_rng([seed, 17, len(pseudo)]),
                                             Damage(ghost=ghost))
                    for m in LINK_METHODS:
                        nuclei = link_slices(ids, cls, score, spacing, method=m, min_overlap=model["min_overlap"],
                                             min_positive_slices=model["min_positive_slices"])
                        found[m].append(nucleus_scores(nuclei, rows, spacing, args.radius_um))
                if model["pipeline"] is None:
                    continue
                pipeline, network = model["pipeline"], model["network"]
                loaded = pipeline.load(entry["image"])
                outputs = pipeline.network_outputs(loaded, network)
                detected = pipeline.inferer.detect(outputs)
                det_counts += slice_detection(detected, truth, spacing, args.radius_um)
                cls_res.append(classify_true_nuclei(outputs, truth, rows, spacing, model["min_positive_slices"]))
                validator = model["validator"]([entry])
                for m, link in model["links"].items():
                    predicted = link({**loaded, **detected})
                    counts = validator.match(0, predicted)
                    e2e[m].append({**scores(counts), "n_true": len(rows)})
            pseudo = [p for p in pseudo if p is not None]
            if pseudo:
                weight = [p["n"] for p in pseudo]
                add("1. pseudo-label 3D mask IoU", np.average([p["mask_iou"] for p in pseudo], weights=weight))
                add("1. pseudo-label z-range IoU", np.average([p["z_iou"] for p in pseudo], weights=weight))
            if model["pipeline"] is not None:
                tp, fp, fn = det_counts
                add("2. per-slice 2D detection F1 (network)", 2 * tp / max(2 * tp + fp + fn, 1))
            for m in LINK_METHODS:
                r, g = pooled(link_res[m]), pooled(ghost_res[m])
                add(f"3. linking F1, true slices + damage, `{m}`", r["np_f1"])
                add(f"3. marker-positive F1 after linking, `{m}`", r["nc_f1"])
                add(f"3. decoys turned positive (damage only), `{m}`", (r["decoys_positive"], r["decoys"]))
                add(f"3. linking F1 with decoy marker slices detected, `{m}`", g["np_f1"])
                add(f"3. decoys turned positive (with their marker slices detected), `{m}`",
                    (g["decoys_positive"], g["decoys"]))
            if cls_res:
                r = pooled(cls_res)
                add("4. marker-positive F1, true nuclei (network classes)", r["nc_f1"])
                add("4. decoys turned positive, true nuclei", (r["decoys_positive"], r["decoys"]))
            for m in e2e:
                if e2e[m]:
                    weight = [x["n_true"] for x in e2e[m]]
                    add(f"5. end to end detection F1, `{m}`", np.average([x["np_f1"] for x in e2e[m]], weights=weight))
                    add(f"5. end to end marker-positive F1, `{m}`",
                        np.average([x["nc_f1"] for x in e2e[m]], weights=weight))
    return lines


def load_model(checkpoint: str | None):
    """The bundle's inference pipeline and network from ``inference.json`` (CPU), one link step per method."""
    from monai.bundle import ConfigParser

    from lecl_transforms.metrics import StackValidator

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["device"] = "$torch.device('cpu')"
    parser["progress"] = False
    if checkpoint:
        parser["checkpoint"] = str(Path(checkpoint).resolve())
    network = parser.get_parsed_content("network")
    pipeline = parser.get_parsed_content("pipeline")
    links = {}
    for m in LINK_METHODS:
        parser["link_method"] = m
        links[m] = parser.get_parsed_content("link", lazy=False)
    return {"network": network, "pipeline": pipeline, "links": links,
            "validator": lambda data: StackValidator(data, network, pipeline, radius_um=3.0, z_tolerance=1),
            "min_overlap": parser["min_overlap"], "min_positive_slices": parser["min_positive_slices"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=["dense", "clean"], choices=sorted(REGIMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--n-images", type=int, default=2, help="stacks per seed and regime")
    parser.add_argument("--size", type=int, default=192, help="stack width and height, px")
    parser.add_argument("--model", help="checkpoint (default: the bundle's models/model.pt)")
    parser.add_argument("--radius-um", type=float, default=3.0, help="matching radius (lecl evaluate's default)")
    parser.add_argument("--ghost", type=float, default=Damage.ghost, help="share of decoys whose marker slices are "
                        "detected as positive instances in stage 3")
    parser.add_argument("--skip-network", action="store_true", help="stages 1 and 3 only")
    parser.add_argument("--skip-pseudo", action="store_true", help="leave stage 1 out")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.skip_network:
        from monai.bundle import ConfigParser

        config = ConfigParser.load_config_file(str(CONFIG))
        model = {"pipeline": None, "min_overlap": config["min_overlap"],
                 "min_positive_slices": config["min_positive_slices"]}
    else:
        import torch

        torch.set_num_threads(1)  # a shared 2-core machine: one thread runs fastest
        model = load_model(args.model)
    results = {regime: run_regime(regime, args.seeds, args, model) for regime in args.regimes}
    print(f"\nError budget: {len(args.seeds)} seeds x {args.n_images} stacks of {args.size} x {args.size} per regime; "
          f"mean ± half-range over seeds. Damage in stage 3: {Damage(ghost=args.ghost).label()} ('with decoy marker "
          "slices' lines only; decoys summed over seeds).\n")
    print("| stage | " + " | ".join(args.regimes) + " |")
    print("|---|" + "---|" * len(args.regimes))
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    for key in keys:
        cells = []
        for regime in args.regimes:
            values = results[regime].get(key)
            if values is None:
                cells.append("")
            elif isinstance(values[0], tuple):
                cells.append(f"{sum(v[0] for v in values)} of {sum(v[1] for v in values)}")
            else:
                cells.append(spread(values))
        print(f"| {key} | " + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
