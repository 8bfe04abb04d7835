"""Detection/classification metrics: matching rule, counts, scores (hand-computed), files in and out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_czyx, write_imagej_zcyx
from scipy.optimize import linear_sum_assignment

from lecl_transforms.errors import LECLInputError
from lecl_transforms.metrics import (
    SCORE_NAMES,
    NucleusCounts,
    counts_from_matches,
    decoy_counts,
    evaluate_predictions,
    evaluate_stack,
    match_nuclei,
    read_prediction_csv,
    scores,
    write_metrics,
)

SPACING = (2.0, 0.5, 0.5)  # dz, dy, dx um
PRED_HEADER = "id,z,y,x,label,score,z_start,z_stop,area_px,z_um,y_um,x_um"

# four well separated clicks: two negative, two positive (z, y, x, label)
TRUTH = np.array([[5, 10, 10, 1], [5, 10, 50, 1], [5, 50, 10, 2], [5, 50, 50, 2]])


def _evaluate(pred_rows, truth=TRUTH, spacing=SPACING, **kw):
    """Counts of predictions ``(z, y, x, label, z_start, z_stop)`` against ``truth`` rows ``(z, y, x, label)``."""
    pred = np.asarray(pred_rows, dtype=float).reshape(-1, 6)
    truth = np.asarray(truth).reshape(-1, 4)
    p, t = match_nuclei(pred[:, :3], pred[:, 4:6], truth[:, :3], spacing, **kw)
    return counts_from_matches(pred[:, 3].astype(int), truth[:, 3], p, t)


def _perfect_rows():
    # centroids a little off the click (0.3 voxel in y = 0.15 um), each nucleus on slices 4..6
    return [[z, y + 0.3, x, lab, 4, 6] for z, y, x, lab in TRUTH]


def _check(got: dict, expected: dict):
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


# -- scores on hand-made cases ---------------------------------------------------------------------------------------
def test_perfect_prediction_scores_one():
    counts = _evaluate(_perfect_rows())
    assert counts == NucleusCounts(neg_as_neg=2, pos_as_pos=2)
    s = scores(counts)
    for key in ("np_precision", "np_recall", "np_f1", "nc_precision", "nc_recall", "nc_f1", "f1_negative",
                "f1_positive", "macro_f1", "f1_d", "f1_t_negative", "f1_t_positive"):
        assert s[key] == 1.0, key
    _check(s, {"count_error_positive": 0, "count_error_negative": 0, "count_rel_error_positive": 0.0,
               "tp": 4, "fp": 0, "fn": 0, "n_pred": 4, "n_true": 4, "n_true_positive": 2, "n_pred_positive": 2})
    assert list(s) == list(SCORE_NAMES)


def test_ground_truth_against_itself(tmp_path):
    points = tmp_path / "a_points.csv"
    points.write_text("z,y,x,label\n" + "".join(f"{z},{y},{x},{lab}\n" for z, y, x, lab in TRUTH))
    # the points CSV itself as the prediction (no z_start/z_stop: each spans its own slice) ...
    counts, (p, t) = evaluate_stack(points, points, SPACING)
    assert counts == NucleusCounts(neg_as_neg=2, pos_as_pos=2)
    np.testing.assert_array_equal(p, t)
    # ... and written as lecl predict would write it
    pred = tmp_path / "a_pred.csv"
    pred.write_text(PRED_HEADER + "\n" + "".join(
        f"{i + 1},{z:.2f},{y:.2f},{x:.2f},{lab},0.9,{z},{z},30,{z * 2:.3f},{y * .5:.3f},{x * .5:.3f}\n"
        for i, (z, y, x, lab) in enumerate(TRUTH)))
    counts, _ = evaluate_stack(pred, points, SPACING)
    assert all(v == 1.0 for k, v in scores(counts).items() if "f1" in k or "precision" in k or "recall" in k)


def test_one_missed_positive():
    counts = _evaluate(_perfect_rows()[:3])  # the last positive is not found
    assert counts == NucleusCounts(neg_as_neg=2, pos_as_pos=1, unmatched_true_pos=1)
    _check(scores(counts), {
        "np_precision": 1.0, "np_recall": 3 / 4, "np_f1": 6 / 7,  # TP 3, FP 0, FN 1: 2*3 / (6 + 1)
        "nc_precision": 1.0, "nc_recall": 1 / 2, "nc_f1": 2 / 3,  # positive: TP 1, FP 0, FN 1 (undetected)
        "f1_negative": 1.0, "macro_f1": (1 + 2 / 3) / 2,
        "f1_t_positive": 2 / 3,  # 2*1 / (2*1 + 0 + 0 + FP_d 0 + FN_d 1)
        "f1_t_negative": 1.0,  # 2*2 / (2*2)
        "count_error_positive": -1, "count_rel_error_positive": -0.5, "count_error_negative": 0,
        "tp": 3, "fp": 0, "fn": 1, "n_pred": 3, "n_true": 4,
    })


def test_one_false_positive():
    counts = _evaluate(_perfect_rows() + [[5, 90, 90, 2, 4, 6]])  # a positive where nothing was clicked
    assert counts == NucleusCounts(neg_as_neg=2, pos_as_pos=2, unmatched_pred_pos=1)
    _check(scores(counts), {
        "np_precision": 4 / 5, "np_recall": 1.0, "np_f1": 8 / 9,  # TP 4, FP 1: 8 / (8 + 1)
        "nc_precision": 2 / 3, "nc_recall": 1.0, "nc_f1": 4 / 5,  # positive: TP 2, FP 1, FN 0: 4 / 5
        "f1_negative": 1.0, "macro_f1": 0.9,
        "f1_t_positive": 4 / 5,  # 2*2 / (2*2 + FP_d 1)
        "count_error_positive": 1, "count_rel_error_positive": 0.5,
    })


def test_negative_called_positive():
    rows = _perfect_rows()
    rows[0][3] = 2  # the first negative is predicted positive
    counts = _evaluate(rows)
    assert counts == NucleusCounts(neg_as_neg=1, neg_as_pos=1, pos_as_pos=2)
    np.testing.assert_array_equal(counts.confusion, [[1, 1], [0, 2]])
    _check(scores(counts), {
        "np_f1": 1.0,  # detection is perfect
        "nc_precision": 2 / 3, "nc_recall": 1.0, "nc_f1": 4 / 5,  # positive: TP 2, FP 1 (the negative), FN 0
        "f1_negative": 2 / 3,  # negative: TP 1, FP 0, FN 1: 2 / 3
        "macro_f1": (4 / 5 + 2 / 3) / 2,
        "f1_t_positive": 4 / 6,  # HoVer-Net's code: TN = 0; 2*2 / (2*2 + 2*FP_t 1)
        "f1_t_negative": 2 / 4,  # 2*1 / (2*1 + 2*FN_t 1)
        "count_error_positive": 1, "count_error_negative": -1,
    })
    # the formula read literally counts the other class's right answers as TN: 2(2+1) / (2(2+1) + 2) for both
    _check(scores(counts, count_true_negatives=True), {"f1_t_positive": 0.75, "f1_t_negative": 0.75})


def test_positive_called_negative():
    rows = _perfect_rows()
    rows[2][3] = 1  # the first positive is predicted negative
    counts = _evaluate(rows)
    assert counts == NucleusCounts(neg_as_neg=2, pos_as_neg=1, pos_as_pos=1)
    _check(scores(counts), {
        "np_f1": 1.0,
        "nc_precision": 1.0, "nc_recall": 1 / 2, "nc_f1": 2 / 3,  # positive: TP 1, FP 0, FN 1
        "f1_negative": 4 / 5,  # negative: TP 2, FP 1, FN 0
        "f1_t_positive": 2 / 4,  # 2*1 / (2*1 + 2*FN_t 1)
        "f1_t_negative": 4 / 6,  # 2*2 / (2*2 + 2*FP_t 1)
        "count_error_positive": -1, "count_rel_error_positive": -0.5, "count_error_negative": 1,
    })


def test_prediction_two_slices_off_in_z_is_no_match():
    truth = [[5, 10, 10, 1]]
    spacing = (1.0, 0.5, 0.5)  # z offset 2 slices = 2 um: within the 3 um radius, so only the slice rule decides
    # nucleus on slices 7..7: allowed click slices 6..8, the click is on 5 -> FP + FN
    off = _evaluate([[7, 10, 10, 1, 7, 7]], truth, spacing)
    assert off == NucleusCounts(unmatched_pred_neg=1, unmatched_true_neg=1)
    _check(scores(off), {"np_precision": 0.0, "np_recall": 0.0, "np_f1": 0.0, "fp": 1, "fn": 1, "tp": 0})
    # the same centroid on slices 6..7: allowed 5..8 -> matched
    assert _evaluate([[7, 10, 10, 1, 6, 7]], truth, spacing) == NucleusCounts(neg_as_neg=1)
    # z_tolerance=2 widens the window to 5..9
    assert _evaluate([[7, 10, 10, 1, 7, 7]], truth, spacing, z_tolerance=2) == NucleusCounts(neg_as_neg=1)


def test_anisotropic_spacing_decides():
    truth = [[5, 10, 10, 1]]
    two_in_z = [[7, 10, 10, 1, 4, 8]]  # 2 voxels away in z: 2 * 2.0 = 4 um > 3 um
    two_in_x = [[5, 10, 12, 1, 4, 8]]  # 2 voxels away in x: 2 * 0.5 = 1 um
    assert _evaluate(two_in_z, truth, (2.0, 0.5, 0.5)).tp == 0
    assert _evaluate(two_in_x, truth, (2.0, 0.5, 0.5)).tp == 1
    assert _evaluate(two_in_z, truth, (1.0, 0.5, 0.5)).tp == 1  # 2 um
    # exactly on the radius counts: 6 px * 0.5 um = 3.0 um
    assert _evaluate([[5, 10, 16, 1, 5, 5]], truth, (2.0, 0.5, 0.5)).tp == 1
    assert _evaluate([[5, 10, 16.1, 1, 5, 5]], truth, (2.0, 0.5, 0.5)).tp == 0


def _greedy(pred_um, true_um, radius):
    """Nearest pair first, one-to-one (what a naive matcher does)."""
    d = np.linalg.norm(pred_um[:, None] - true_um[None], axis=2)
    used_p, used_t, pairs = set(), set(), []
    for i, j in zip(*np.unravel_index(np.argsort(d, axis=None), d.shape)):
        if d[i, j] <= radius and i not in used_p and j not in used_t:
            used_p.add(i), used_t.add(j), pairs.append((i, j))
    return pairs


def test_hungarian_finds_more_matches_than_greedy():
    # on a line (x in um, spacing 1): clicks T0 at 0, T1 at 5; predictions P0 at 2.6, P1 at 7.5; radius 3.
    # Nearest first takes P0-T1 (2.4), which leaves P1 (only T1 within 3 um) and T0 (only P0) unmatched: 1 pair.
    # The assignment pairs P0-T0 (2.6) and P1-T1 (2.5): 2 pairs.
    true = np.array([[5, 0, 0.0], [5, 0, 5.0]])
    pred = np.array([[5, 0, 2.6], [5, 0, 7.5]])
    assert len(_greedy(pred, true, 3.0)) == 1
    p, t = match_nuclei(pred, [[5, 5], [5, 5]], true, (1.0, 1.0, 1.0), radius_um=3.0)
    assert list(zip(p.tolist(), t.tolist())) == [(0, 0), (1, 1)]


def test_fewest_total_distance_among_most_pairs():
    # P0 at 0, P1 at 1; T0 at 0.4, T1 at 1.5: P0-T0 + P1-T1 = 0.9 beats P0-T1 + P1-T0 = 2.1
    p, t = match_nuclei([[0, 0, 0.0], [0, 0, 1.0]], None, [[0, 0, 1.5], [0, 0, 0.4]], (1, 1, 1), radius_um=3.0)
    assert list(zip(p.tolist(), t.tolist())) == [(0, 1), (1, 0)]


def _dense_reference(pred, z_range, true, spacing, radius, tol):
    """Plain dense assignment over all P x T pairs, forbidden pairs at a prohibitive cost."""
    d = np.linalg.norm((pred[:, None] - true[None]) * np.asarray(spacing), axis=2)
    allowed = (d <= radius) & (true[None, :, 0] >= z_range[:, None, 0] - tol) & \
        (true[None, :, 0] <= z_range[:, None, 1] + tol)
    big = 2.0 * (min(d.shape) + 1) * max(radius, 1.0)
    cost = np.where(allowed, d, big)
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] < big
    return r[keep], c[keep], d


@pytest.mark.parametrize("seed", range(8))
def test_matching_equals_dense_assignment(seed):
    rng = np.random.default_rng(seed)
    n_pred, n_true = rng.integers(0, 60), rng.integers(0, 60)
    box = np.array([8, 40, 40])  # crowded enough for clusters of several nuclei
    true = rng.integers(0, box, (n_true, 3)).astype(float)
    pred = rng.uniform(0, box, (n_pred, 3))
    start = np.floor(pred[:, 0]) - rng.integers(0, 2, n_pred)
    z_range = np.stack([start, start + rng.integers(0, 3, n_pred)], axis=1)
    spacing, radius, tol = (1.5, 0.5, 0.5), float(rng.uniform(1.5, 4)), int(rng.integers(0, 2))
    p, t = match_nuclei(pred, z_range, true, spacing, radius_um=radius, z_tolerance=tol)
    rp, rt, d = _dense_reference(pred, z_range, true, spacing, radius, tol)
    assert len(p) == len(rp)
    assert d[p, t].sum() == pytest.approx(d[rp, rt].sum())
    # random float positions: the optimum is unique, so the pairs themselves agree
    assert sorted(zip(p.tolist(), t.tolist())) == sorted(zip(rp.tolist(), rt.tolist()))
    assert len(set(p.tolist())) == len(p) and len(set(t.tolist())) == len(t)


def test_matching_scales_to_thousands():
    import time

    rng = np.random.default_rng(0)
    true = rng.uniform(0, [20, 2000, 2000], (6000, 3))
    pred = true + rng.normal(0, [0.2, 1.0, 1.0], true.shape)  # well within 3 um and one slice of each click
    start = time.perf_counter()
    p, t = match_nuclei(pred, np.rint(pred[:, :1]).repeat(2, 1), true, (2.0, 0.5, 0.5))
    assert time.perf_counter() - start < 5.0
    assert len(p) > 0.99 * len(true)


def test_empty_sides():
    counts = _evaluate(np.zeros((0, 6)))  # nothing found
    assert counts == NucleusCounts(unmatched_true_neg=2, unmatched_true_pos=2)
    _check(scores(counts), {"np_precision": 0.0, "np_recall": 0.0, "np_f1": 0.0, "nc_f1": 0.0, "f1_t_positive": 0.0})
    # nothing to find and nothing found: every ratio is 1 by convention, the relative count error undefined
    s = scores(NucleusCounts())
    assert all(s[k] == 1.0 for k in ("np_precision", "np_recall", "np_f1", "nc_f1", "macro_f1", "f1_t_positive"))
    assert np.isnan(s["count_rel_error_positive"])


def test_decoy_counts_by_hand():
    """Decoys (negatives with marker above/below): TRUTH's two negatives and one more negative. Decoy 0 is called
    positive, decoy 1 and the extra one negative; a positive call far from every nucleus matches nothing and does not
    count for any decoy."""
    truth = np.vstack([TRUTH, [5, 90, 90, 1]])
    decoys = np.array([True, True, False, False, True])
    rows = _perfect_rows()
    rows[0][3] = 2  # decoy 0 called positive
    rows.append([5, 90.3, 90, 1, 4, 6])  # decoy 4 found, called negative
    rows.append([5, 130, 130, 2, 4, 6])  # a positive call far from every nucleus
    pred = np.asarray(rows, float)
    p, t = match_nuclei(pred[:, :3], pred[:, 4:6], truth[:, :3], SPACING)
    assert decoy_counts(pred[:, 3], decoys, p, t) == {"decoys": 3, "decoys_matched": 3, "decoys_positive": 1}
    # the second decoy missed (its prediction dropped): 3 decoys, 2 matched, 1 of them positive
    keep = np.arange(len(pred)) != 1
    p, t = match_nuclei(pred[keep, :3], pred[keep, 4:6], truth[:, :3], SPACING)
    assert decoy_counts(pred[keep, 3], decoys, p, t) == {"decoys": 3, "decoys_matched": 2, "decoys_positive": 1}
    assert decoy_counts([], decoys, [], []) == {"decoys": 3, "decoys_matched": 0, "decoys_positive": 0}


def test_pooling_is_the_sum_of_counts():
    missed = _evaluate(_perfect_rows()[:3])
    extra = _evaluate(_perfect_rows() + [[5, 90, 90, 2, 4, 6]])
    pooled = missed + extra
    assert pooled == NucleusCounts(neg_as_neg=4, pos_as_pos=3, unmatched_pred_pos=1, unmatched_true_pos=1)
    assert sum([missed, extra]) == pooled
    assert replace(pooled) == pooled
    # pooled detection: TP 7, FP 1, FN 1 -> F1 14/16 (not the mean of 6/7 and 8/9)
    _check(scores(pooled), {"np_f1": 14 / 16, "nc_f1": 6 / 8, "count_error_positive": 0})


# -- files ------------------------------------------------------------------------------------------------------------
def _write_pred(path: Path, rows):
    path.write_text(PRED_HEADER + "\n" + "".join(
        f"{i + 1},{z},{y},{x},{lab},0.9,{zs},{ze},30,0,0,0\n" for i, (z, y, x, lab, zs, ze) in enumerate(rows)))
    return path


def _write_points(path: Path, truth):
    path.write_text("z,y,x,label\n" + "".join(f"{z},{y},{x},{lab}\n" for z, y, x, lab in truth))
    return path


@pytest.fixture
def project(tmp_path):
    """Two stacks (spacing 2, 0.5, 0.5 in their headers): ``a`` predicted perfectly, ``b`` missing a positive."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    data.mkdir(), pred.mkdir()
    entries = []
    for stem in ("a", "b"):
        write_imagej_zcyx(data / f"{stem}.tif", make_czyx((2, 8, 64, 64)), spacing=SPACING)
        _write_points(data / f"{stem}.csv", TRUTH)
        entries.append({"image": f"{stem}.tif", "points": f"{stem}.csv"})
    _write_pred(pred / "a_pred.csv", _perfect_rows())
    _write_pred(pred / "b_pred.csv", _perfect_rows()[:3])
    datalist = data / "datalist.json"
    datalist.write_text(json.dumps({"test": entries}))
    return datalist, pred


def test_evaluate_predictions_and_write_metrics(project, tmp_path):
    datalist, pred = project
    report = evaluate_predictions(pred, datalist)
    a, b = report["per_stack"]
    assert (a["stem"], b["stem"]) == ("a", "b") and a["image"].endswith("a.tif")
    assert a["spacing"] == list(SPACING) and a["spacing_source"].startswith("image")
    assert a["np_f1"] == 1.0 and b["np_f1"] == pytest.approx(6 / 7)
    # pooled: TP 7, FN 1 -> 14/15; positive TP 3, FN 1 -> 6/7
    _check(report["pooled"], {"np_f1": 14 / 15, "nc_f1": 6 / 7, "tp": 7, "fn": 1, "n_true_positive": 4})
    assert report["pooled"] == scores(NucleusCounts(**a["counts"]) + NucleusCounts(**b["counts"]))
    _check(report["mean_over_stacks"], {"np_f1": (1 + 6 / 7) / 2, "nc_f1": (1 + 2 / 3) / 2,
                                        "count_rel_error_positive": (0 - 0.5) / 2})
    assert report["settings"]["radius_um"] == 3.0 and report["settings"]["section"] == "test"

    json_path, md_path = write_metrics(report, tmp_path / "eval")
    assert json.loads(json_path.read_text())["pooled"]["np_f1"] == pytest.approx(14 / 15)
    md = md_path.read_text()
    assert "| a | 1.000 |" in md
    assert "| b | 1.000 | 0.750 | 0.857 |" in md  # NP P, R, F1 of the stack missing a nucleus
    assert "| **pooled** | 1.000 | 0.875 | 0.933 |" in md
    assert "radius_um: 3.0" in md and "z_tolerance: 1" in md
    assert not [p for p in json_path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_nan_is_written_as_null(project, tmp_path):
    datalist, pred = project
    report = evaluate_predictions(pred, datalist)
    report["per_stack"][0]["count_rel_error_positive"] = float("nan")
    json_path, md_path = write_metrics(report, tmp_path / "eval")
    assert json.loads(json_path.read_text())["per_stack"][0]["count_rel_error_positive"] is None


def test_prediction_spacing_wins_over_the_image_header(project):
    import tifffile

    datalist, pred = project
    # b's nucleus 2 found 2 slices above its click: 4 um with the image's dz = 2, 2 um with the 1 um lecl predict used
    _write_pred(pred / "b_pred.csv", [*_perfect_rows()[:3], [7, 50, 50, 2, 6, 8]])
    assert evaluate_predictions(pred, datalist)["per_stack"][1]["tp"] == 3
    tifffile.imwrite(pred / "b_instances.tif", np.zeros((8, 64, 64), np.uint16), imagej=True, resolution=(2, 2),
                     metadata={"axes": "ZYX", "spacing": 1.0, "unit": "um"})
    row = evaluate_predictions(pred, datalist)["per_stack"][1]
    assert row["spacing"] == [1.0, 0.5, 0.5] and row["spacing_source"].startswith("prediction")
    assert row["tp"] == 4
    # a given spacing applies everywhere
    assert evaluate_predictions(pred, datalist, spacing=(2.0, 0.5, 0.5))["per_stack"][1]["tp"] == 3


def test_missing_prediction_names_the_file(project):
    datalist, pred = project
    (pred / "b_pred.csv").unlink()
    with pytest.raises(LECLInputError, match="b_pred.csv") as info:
        evaluate_predictions(pred, datalist)
    assert "lecl predict" in info.value.fix


def test_entry_without_points_is_an_input_error(project):
    datalist, pred = project
    content = json.loads(datalist.read_text())
    del content["test"][1]["points"]
    datalist.write_text(json.dumps(content))
    with pytest.raises(LECLInputError, match="points") as info:
        evaluate_predictions(pred, datalist)
    assert str(datalist) in info.value.where


def test_prediction_csv_problems(tmp_path):
    empty = tmp_path / "e_pred.csv"
    empty.write_text(PRED_HEADER + "\n")  # no nucleus found: valid
    assert read_prediction_csv(empty)["zyx"].shape == (0, 3)
    bad = tmp_path / "bad_pred.csv"
    bad.write_text("id,z,y,label\n1,2,3,1\n")
    with pytest.raises(LECLInputError, match="'x'"):
        read_prediction_csv(bad)
    bad.write_text(PRED_HEADER + "\n1,2,3,4,maybe,0.9,2,2,30,0,0,0\n")
    with pytest.raises(LECLInputError, match="line 2.*maybe"):
        read_prediction_csv(bad)
    with pytest.raises(LECLInputError, match="spacing"):
        match_nuclei([[0, 0, 0]], None, [[0, 0, 0]], (0.0, 1.0, 1.0))
