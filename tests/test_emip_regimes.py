"""The weak-label pipeline against synthetic ground truth, in the clean and the dense/hazy/anisotropic regime.

Targets (issue "Pseudo-labels and EMIP"): median per-nucleus z-range IoU >= 0.8; the EMIP marker score separates
positives from decoys (ROC AUC >= 0.95) while the plain MIP does clearly worse; weak-label "nucleus" pixels >= 90 %
inside true nuclei, "background" pixels >= 97 % outside them. The paper's literal rules are measured too: on these
stacks their slice sets swallow the whole column and EMIP falls back to a plain MIP.
"""

import csv

import numpy as np
import pytest
import tifffile
from sklearn.metrics import roc_auc_score

from lecl_transforms import REGIMES, load_datalist, write_dataset
from lecl_transforms.tools.prepare import cell_marker_scores
from lecl_transforms.transforms import functional as P
from lecl_transforms.transforms import pseudo_label_transforms

N_IMAGES = 2


@pytest.fixture(scope="module", params=["clean", "dense"])
def regime_set(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    write_dataset(out, N_IMAGES, seed=11, cfg=REGIMES[request.param])
    return request.param, load_datalist(out / "datalist.json", "training") + load_datalist(
        out / "datalist.json", "validation")


def _truth(entry):
    with open(entry["nuclei"]) as f:
        rows = [r for r in csv.DictReader(f) if r["annotated"] == "1"]
    return rows, tifffile.imread(entry["instances"])


def _run(entries, rules):
    pipeline = pseudo_label_transforms(rules=rules)
    results = []
    for e in entries:
        d = pipeline({"image": e["image"], "points": e["points"]})
        rows, instances = _truth(e)
        results.append((d, rows, instances))
    return results


def _z_iou(d, rows):
    sets = np.asarray(d["slice_sets"])
    truth = np.zeros_like(sets)
    for j, r in enumerate(rows):
        truth[j, int(r["z_start"]):int(r["z_stop"]) + 1] = True
    return (sets & truth).sum(1) / (sets | truth).sum(1)


@pytest.fixture(scope="module")
def robust(regime_set):
    return regime_set[0], _run(regime_set[1], "robust")


def test_z_ranges_match_ground_truth(robust):
    regime, results = robust
    iou = np.concatenate([_z_iou(d, rows) for d, rows, _ in results])
    assert np.median(iou) >= 0.8, regime
    assert iou.mean() >= 0.8, regime


def test_emip_separates_positives_from_decoys_and_mip_does_not(robust):
    regime, results = robust
    y, emip, mip = [], [], []
    for d, rows, _ in results:
        is_pos = np.array([r["label"] == "2" for r in rows])
        is_decoy = np.array([r["decoy"] == "1" for r in rows])
        keep = is_pos | is_decoy
        n = len(rows)
        y.append(is_pos[keep])
        emip.append(cell_marker_scores(d["emip"], d["instances"], n)[keep])
        mip.append(cell_marker_scores(d["mip"], d["instances"], n)[keep])
    y, emip, mip = map(np.concatenate, (y, emip, mip))
    auc_emip, auc_mip = roc_auc_score(y, emip), roc_auc_score(y, mip)
    assert auc_emip >= 0.95, (regime, auc_emip)
    assert auc_mip <= auc_emip - 0.2, (regime, auc_emip, auc_mip)


def test_weak_label_precision(robust):
    regime, results = robust
    inside_n = inside_b = total_n = total_b = 0
    for d, _, instances in results:
        label = np.asarray(d["label"])[0]
        truth = (instances > 0).any(axis=0)
        inside_n += truth[label == 1].sum()
        total_n += (label == 1).sum()
        # the band along Voronoi borders is the separation between neighbours (it crosses nuclei that overlap in the
        # projection), judged by the training curves, not here: the precision is that of the cluster background
        cluster_background = (label == 0) & ~P.voronoi_border_band(np.asarray(d["cells"])[0], 2)
        inside_b += (~truth)[cluster_background].sum()
        total_b += cluster_background.sum()
    assert total_n > 0.05 * label.size * len(results)
    assert inside_n / total_n >= 0.90, regime
    if total_b:
        assert inside_b / total_b >= 0.97, regime
    if regime == "clean":
        assert total_b > 0.3 * label.size * len(results)


def test_instances_are_cell_ids_and_stay_apart(robust):
    _, results = robust
    for d, rows, _ in results:
        instances, cells = np.asarray(d["instances"])[0], np.asarray(d["cells"])[0]
        inside = instances > 0
        np.testing.assert_array_equal(instances[inside], cells[inside])
        assert len(np.unique(instances[inside])) >= 0.9 * len(rows)  # nearly every click gets its nucleus


def test_paper_rules_collapse_emip_into_mip_on_these_stacks(regime_set):
    regime, entries = regime_set
    (d, rows, _), = _run(entries[:1], "paper")
    iou = _z_iou(d, rows)
    assert np.median(iou) < 0.7, regime  # slice sets span far beyond each nucleus
    share_full = np.mean(np.asarray(d["slice_sets"]).sum(1) >= 0.6 * d["slice_sets"].shape[1])
    assert share_full > 0.5, regime


def test_pipeline_caches(regime_set, tmp_path):
    from monai.data import CacheDataset, PersistentDataset

    _, entries = regime_set
    data = [{"image": e["image"], "points": e["points"]} for e in entries[:1]]
    pipeline = pseudo_label_transforms()
    direct = pipeline(dict(data[0]))
    persistent = PersistentDataset(data, pipeline, cache_dir=tmp_path)
    for _ in range(2):  # second access reads the cache
        item = persistent[0]
        np.testing.assert_array_equal(np.asarray(item["emip"]), direct["emip"])
        np.testing.assert_array_equal(np.asarray(item["label"]), direct["label"])
    assert any(tmp_path.iterdir())
    cached = CacheDataset(data, pipeline, progress=False)[0]
    np.testing.assert_array_equal(np.asarray(cached["instances"]), direct["instances"])
    assert "nuclei_mask" not in cached and "point_distance" not in cached  # 3D intermediates are dropped


def test_deterministic_for_a_seed(regime_set):
    _, entries = regime_set
    a = pseudo_label_transforms(seed=3)({"image": entries[0]["image"], "points": entries[0]["points"]})
    b = pseudo_label_transforms(seed=3)({"image": entries[0]["image"], "points": entries[0]["points"]})
    for key in ("emip", "label", "instances", "slice_sets"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
