"""The "chain" link method on hand-built per-slice instance stacks with known answers, and through ``lecl predict``."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from test_link_slices import Stack, disk

from lecl_transforms.transforms.link_slices import LinkSlices


def tapering(s: Stack, zs, center, radii, cls=1, score=0.1) -> list[int]:
    """One nucleus: a disk per slice, small at its ends (as a real nucleus' cross-sections)."""
    return [s.add(z, disk(center, r), cls, score) for z, r in zip(zs, radii)]


def test_two_nuclei_stacked_in_z_stay_two():
    """Two nuclei at the same (y, x), one above the other with one empty slice between them: their tips face each
    other across the gap, so the chain does not bridge it (a missing middle slice has full-size neighbours). The
    published projection rule merges them."""
    s = Stack()
    low = tapering(s, range(0, 5), (20, 20), (3, 5, 7, 5, 3), cls=2, score=0.9)
    high = tapering(s, range(6, 11), (20, 20), (3, 5, 7, 5, 3))
    nuclei = s.link(method="chain")
    assert len(nuclei) == 2
    assert nuclei.z_start.tolist() == [0, 6] and nuclei.z_stop.tolist() == [4, 10]
    assert nuclei.label.tolist() == [2, 1]
    assert set(nuclei.slice_to_nucleus[low]) == {1} and set(nuclei.slice_to_nucleus[high]) == {2}
    assert len(s.link(method="projection")) == 1


def test_one_slice_fragment_inside_a_nucleus_is_absorbed():
    """A nucleus whose middle slice is split in two (a big piece and a cap beyond x = 24): the cap is one nucleus of
    its own under the overlap rule, and part of the nucleus under the chain rule."""
    s = Stack()
    zs, radii = range(2, 7), (4, 6, 7, 6, 4)
    ids = [s.add(z, disk((20, 20), r)) for z, r in zip(zs[:2], radii[:2])]
    whole = disk((20, 20), 7)
    cap = whole & (np.arange(40)[None, :] > 24)
    ids += [s.add(4, whole & ~cap), s.add(4, cap, cls=2, score=0.8)]
    ids += [s.add(z, disk((20, 20), r)) for z, r in zip(zs[3:], radii[3:])]
    assert len(s.link()) == 2  # overlap: the cap is a second, positive nucleus
    nuclei = s.link(method="chain")
    assert len(nuclei) == 1 and set(nuclei.slice_to_nucleus[ids]) == {1}
    assert (nuclei.z_start[0], nuclei.z_stop[0], nuclei.n_slices[0]) == (2, 6, 5)
    assert nuclei.area_px[0] == whole.sum()  # both pieces of slice 4 count for that slice
    assert nuclei.label[0] == 2 and nuclei.positive_slices[0] == 1  # the cap's class is the nucleus'


def test_split_on_the_next_slice_the_big_piece_continues_the_chain():
    """Slice 1 of a nucleus is split: a big piece and a cap beyond x = 21 whose centroid lies nearer to slice 0's
    centroid than the big piece's does (the cut moved it). Ranked on 1 - IoU the big piece continues the chain up to
    slice 2 and the cap is absorbed: one nucleus. Ranked on IoU + centroid shift (before) the cap took the link and the
    big piece started a second, two-slice nucleus with slice 2."""
    s = Stack()
    low = s.add(0, disk((20, 20), 6))
    shifted = disk((20, 17), 6)
    cap = shifted & (np.arange(40)[None, :] >= 21)
    big, piece = s.add(1, shifted & ~cap), s.add(1, cap)
    top = s.add(2, disk((20, 17), 6))
    nuclei = s.link(method="chain")
    assert len(nuclei) == 1 and set(nuclei.slice_to_nucleus[[low, big, piece, top]]) == {1}
    assert (nuclei.z_start[0], nuclei.z_stop[0], nuclei.n_slices[0]) == (0, 2, 3)


def whole_neighbours(s: Stack) -> None:
    """Four complete 7-slice nuclei in the corners: the stack's nuclei are 7 slices tall (a bridged chain may be as
    tall as the stack's tall nuclei, + 1 slice)."""
    for center in ((4, 4), (4, 35), (35, 4), (35, 35)):
        tapering(s, range(1, 8), center, (2, 3, 3, 3, 3, 3, 2))


def test_one_slice_tip_just_past_a_nucleus_is_absorbed_and_one_past_an_empty_slice_is_not():
    """A one-slice piece on the slice just above a nucleus, off its tip's centre (too far for the assignment: shift
    3 px > 0.7 x 4 px), joins it (a z-split tip); the same piece one empty slice higher stays a nucleus of its own."""
    s = Stack()
    nucleus = tapering(s, range(2, 7), (20, 20), (4, 6, 7, 6, 4))
    tip = s.add(7, disk((20, 23), 3))
    nuclei = s.link(method="chain")
    assert len(nuclei) == 1 and nuclei.slice_to_nucleus[tip] == nuclei.slice_to_nucleus[nucleus[0]]
    assert (nuclei.z_start[0], nuclei.z_stop[0]) == (2, 7)
    s = Stack()
    tapering(s, range(2, 7), (20, 20), (4, 6, 7, 6, 4))
    s.add(8, disk((20, 23), 3))
    assert len(s.link(method="chain")) == 2


def test_nucleus_seen_on_one_slice_takes_its_one_slice_tip_and_the_tips_marker():
    """A nucleus detected on one slice only (its other slices missed) with its tip as a second one-slice instance on
    the slice above, off its centre (shift 5 px > 0.7 x 6 px: the assignment does not link them), and the marker
    seen only on the tip: one positive nucleus (the bigger one-slice chain takes the smaller). Two one-slice
    instances of the same size are two nuclei (neither is the fragment), and so is a tip one empty slice higher."""
    s = Stack()
    body = s.add(4, disk((20, 20), 6))
    tip = s.add(5, disk((20, 25), 3), cls=2, score=0.9)
    nuclei = s.link(method="chain")
    assert len(nuclei) == 1 and nuclei.slice_to_nucleus[tip] == nuclei.slice_to_nucleus[body] == 1
    assert (nuclei.z_start[0], nuclei.z_stop[0], nuclei.label[0], nuclei.positive_slices[0]) == (4, 5, 2, 1)
    s = Stack()
    s.add(4, disk((20, 20), 4))
    s.add(5, disk((20, 23), 4), cls=2, score=0.9)
    assert len(s.link(method="chain")) == 2
    s = Stack()
    s.add(4, disk((20, 20), 6))
    s.add(6, disk((20, 23), 3), cls=2, score=0.9)
    assert s.link(method="chain").label.tolist() == [1, 2]


def test_missing_slice_is_bridged():
    s = Stack()
    whole_neighbours(s)
    below = tapering(s, range(1, 4), (20, 20), (5, 7, 8))
    above = tapering(s, range(5, 8), (21, 20), (8, 7, 5))  # slice 4 missed; centroid jitter of 1 px
    assert len(s.link()) == 4 + 2  # overlap without max_gap_um: two nuclei
    nuclei = s.link(method="chain")
    assert len(nuclei) == 4 + 1
    one = nuclei.slice_to_nucleus[below[0]] - 1
    assert (nuclei.z_start[one], nuclei.z_stop[one], nuclei.n_slices[one]) == (1, 7, 6)
    assert len(set(nuclei.slice_to_nucleus[below + above])) == 1
    # two missing slices are not bridged
    s = Stack()
    whole_neighbours(s)
    tapering(s, range(1, 4), (20, 20), (5, 7, 8))
    tapering(s, range(6, 9), (20, 20), (8, 7, 5))
    assert len(s.link(method="chain")) == 4 + 2
    # nor one that would make a nucleus taller than the stack's tall ones (here 3 slices, limit 4)
    s = Stack()
    tapering(s, range(1, 4), (20, 20), (5, 7, 8))
    tapering(s, range(5, 8), (20, 20), (8, 7, 5))
    for center in ((4, 4), (4, 35), (35, 4), (35, 35)):
        tapering(s, range(1, 4), center, (3, 3, 3))
    assert len(s.link(method="chain")) == 4 + 2


def test_decoy_marker_slices_above_a_negative_nucleus_do_not_turn_it_positive():
    """A negative nucleus (slices 2-5) with marker seen above it, past one empty slice: on slices 7-8 (a two-slice
    positive chain) and on slice 7 of a second decoy (a one-slice positive fragment, outside the nucleus' z range).
    The projection rule calls both nuclei positive; the chain keeps them negative."""
    s = Stack()
    nucleus = tapering(s, range(2, 6), (12, 12), (4, 6, 6, 4))
    marker = tapering(s, range(7, 9), (12, 12), (5, 5), cls=2, score=0.9)
    other = tapering(s, range(2, 6), (28, 28), (4, 6, 6, 4))
    spot = s.add(7, disk((28, 28), 5), cls=2, score=0.9)
    nuclei = s.link(method="chain")
    owner = nuclei.slice_to_nucleus
    assert len(nuclei) == 4
    assert nuclei.label[owner[nucleus[0]] - 1] == 1 and nuclei.label[owner[other[0]] - 1] == 1
    assert owner[marker[0]] not in owner[nucleus] and owner[spot] not in owner[other]
    projected = s.link(method="projection")
    assert len(projected) == 2 and set(projected.label) == {2}


def test_two_small_nuclei_under_a_big_one_are_assigned_one_to_one():
    """Two nuclei side by side below a big one, both candidates: the assignment links the big one to the better
    (larger overlap, nearer centre) only, and the other stays a nucleus of its own."""
    s = Stack()
    left = s.nucleus((1, 2), (20, 15), 5)
    right = s.nucleus((1, 2), (20, 26), 6)
    big = s.nucleus((3, 4), (20, 21), 9)
    nuclei = s.link(method="chain")
    owner = nuclei.slice_to_nucleus
    assert len(nuclei) == 2 and owner[left[0]] == owner[left[1]] != owner[right[0]]
    assert set(owner[right + big]) == {owner[right[0]]}


def test_chain_ground_truth_links_back_to_its_nuclei():
    """The generator's true per-slice instances (no damage) give back exactly its nuclei."""
    from lecl_transforms.data import REGIMES, generate_stack

    dense_stack = generate_stack(replace(REGIMES["dense"], size_yx=128), seed=1, index=0)
    inst = dense_stack.instances.astype(np.int64)
    n = int(inst.max()) + 1
    ids = np.where(inst > 0, inst + np.arange(inst.shape[0])[:, None, None] * n, 0)
    nuclei = LinkSlices(method="chain")(ids, np.ones(ids.max() + 1, np.int64), np.zeros(ids.max() + 1))
    assert len(nuclei) == len(dense_stack.nuclei)
    # every true nucleus is exactly one linked nucleus
    pairs = np.unique(np.stack([inst[inst > 0], nuclei.labels[inst > 0]], 1), axis=0)
    assert len(pairs) == len(dense_stack.nuclei) == len(np.unique(pairs[:, 1]))


def test_predict_with_link_method_chain(tmp_path):
    """``lecl predict --link-method chain`` with the shipped model on a small synthetic stack: the summary records
    the method, the nuclei are found, and no one-slice nucleus is left inside a longer one's footprint."""
    from lecl_transforms.data import REGIMES, write_dataset
    from lecl_transforms.metrics import counts_from_matches, match_nuclei, scores
    from lecl_transforms.tools.cli import main

    cfg = replace(REGIMES["dense"], size_yx=96, z_slices=(6, 6))
    write_dataset(tmp_path / "data", n_images=1, seed=3, cfg=cfg)
    image = tmp_path / "data" / "images" / "synth_000.tif"
    out = tmp_path / "pred"
    assert main(["predict", "--image", str(image), "--out", str(out), "--link-method", "chain"]) == 0
    assert json.loads((out / "predict_summary.json").read_text())["parameters"]["link_method"] == "chain"
    with open(out / "synth_000_pred.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "data" / "ground_truth" / "synth_000_nuclei.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    pred = np.array([[float(r[k]) for k in ("z", "y", "x")] for r in rows])
    z_range = np.array([[int(r["z_start"]), int(r["z_stop"])] for r in rows])
    true = np.array([[float(t[k]) for k in ("centre_z", "centre_y", "centre_x")] for t in truth])
    p, q = match_nuclei(pred, z_range, true, cfg.spacing(), 3.0, 1)
    labels = np.array([2 if r["label"] in ("2", "positive") else 1 for r in rows])
    result = scores(counts_from_matches(labels, np.array([int(t["label"]) for t in truth]), p, q))
    assert result["np_f1"] >= 0.6, result
    # the absorption rule, checked on the output: a one-slice nucleus never sits within a longer one's largest
    # radius of its centre, inside its z range
    n_slices = np.array([int(r["n_slices"]) for r in rows])
    radius = np.sqrt(np.array([float(r["area_px"]) for r in rows]) / np.pi)
    for i in np.flatnonzero(n_slices == 1):
        inside = (z_range[:, 0] <= z_range[i, 0]) & (z_range[i, 0] <= z_range[:, 1]) & (n_slices > 1)
        distance = np.hypot(*(pred[inside, 1:] - pred[i, 1:]).T)
        assert np.all(distance > 0.9 * radius[inside]), i  # 0.9: the centroids move a little on absorbing
