"""3D integration at test time (LECL step 4): per-slice detections -> 3D nuclei, positive if positive in >= k slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lecl_transforms.errors import LECLInputError
from lecl_transforms.transforms.functional.link_slices import Nuclei3D, link_slices
from lecl_transforms.transforms.link_slices import LinkSlices, LinkSlicesd

SHAPE = (12, 40, 40)


def disk(center, radius, shape=SHAPE[1:]) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


class Stack:
    """Hand-made per-slice detections: each ``add`` is one slice instance with a fresh stack-unique id."""

    def __init__(self, shape=SHAPE):
        self.instances = np.zeros(shape, np.int32)
        self.cls, self.score = [0], [0.0]

    def add(self, z, mask, cls=1, score=0.1) -> int:
        new = len(self.cls)
        self.instances[z][mask] = new
        self.cls.append(cls)
        self.score.append(score)
        return new

    def nucleus(self, zs, center, radius, cls=1, score=0.1) -> list[int]:
        return [self.add(z, disk(center, radius), cls, score) for z in zs]

    def link(self, **kwargs) -> Nuclei3D:
        return link_slices(self.instances, np.array(self.cls), np.array(self.score), **kwargs)


# -- hand-made cases ---------------------------------------------------------------------------------------------------
def test_positive_in_one_slice():
    s = Stack()
    for z, score in zip(range(2, 7), (0.1, 0.3, 0.9, 0.2, 0.05)):
        s.add(z, disk((20, 20), 6), cls=2 if score > 0.5 else 1, score=score)
    one = s.link()
    assert len(one) == 1 and one.label[0] == 2 and one.positive_slices[0] == 1 and one.score[0] == pytest.approx(0.9)
    two = s.link(min_positive_slices=2)
    assert len(two) == 1 and two.label[0] == 1 and two.score[0] == pytest.approx(0.3)  # 2nd-highest slice score
    # classes map: the whole nucleus takes the nucleus's class
    assert set(np.unique(one.classes()[2:7][s.instances[2:7] > 0])) == {2}
    assert set(np.unique(two.classes()[s.instances > 0])) == {1} and two.classes().dtype == np.uint8
    # fewer slices than k: score 0
    assert s.link(min_positive_slices=6).score[0] == 0.0


def test_same_yx_far_apart_stay_two_and_projection_merges_them():
    s = Stack()
    low = s.nucleus(range(0, 3), (15, 22), 5, cls=2, score=0.8)
    high = s.nucleus(range(7, 10), (15, 22), 5, cls=1, score=0.2)
    nuclei = s.link()
    assert len(nuclei) == 2
    assert nuclei.z_start.tolist() == [0, 7] and nuclei.z_stop.tolist() == [2, 9]
    assert nuclei.label.tolist() == [2, 1] and nuclei.n_slices.tolist() == [3, 3]
    assert set(nuclei.slice_to_nucleus[low]) == {1} and set(nuclei.slice_to_nucleus[high]) == {2}
    # the published rule (centroid disks, max over z, 2D components) makes them one nucleus -- why it is not default
    merged = s.link(method="projection")
    assert len(merged) == 1
    assert (merged.z_start[0], merged.z_stop[0], merged.n_slices[0], merged.label[0]) == (0, 9, 6, 2)
    assert np.array_equal(merged.labels > 0, s.instances > 0)


def test_nucleus_over_five_slices_is_one_row():
    s = Stack()
    radii = (3, 4, 7, 5, 5)
    for z, r in zip(range(3, 8), radii):
        s.add(z, disk((18, 25), r))
    s.nucleus(range(0, 2), (5, 5), 2)  # a small other nucleus elsewhere, to check id ordering
    nuclei = s.link()
    assert len(nuclei) == 2
    row = {k: v[1] for k, v in nuclei.table().items()}  # ordered by z_start: the small one (z 0) is id 1
    areas = np.array([disk((18, 25), r).sum() for r in radii])
    assert (row["id"], row["z_start"], row["z_stop"], row["n_slices"]) == (2, 3, 7, 5)
    assert row["area_px"] == disk((18, 25), 7).sum()
    assert row["z"] == pytest.approx((areas * np.arange(3, 8)).sum() / areas.sum())
    assert (row["y"], row["x"]) == pytest.approx((18.0, 25.0))
    assert list(nuclei.table()) == ["id", "z", "y", "x", "label", "score", "z_start", "z_stop", "area_px", "n_slices",
                                    "positive_slices"]
    assert nuclei.labels.dtype == np.uint32 and set(np.unique(nuclei.labels[3:8])) == {0, 2}


def test_two_nuclei_touching_a_bigger_one_do_not_merge():
    s = Stack()
    left = s.add(2, disk((20, 12), 5))
    right = s.add(2, disk((20, 27), 6))  # the bigger of the two: the big one's best partner
    big = s.add(3, disk((20, 19), 14))
    nuclei = s.link()
    owner = nuclei.slice_to_nucleus
    assert len(nuclei) == 2 and owner[left] != owner[right]
    assert owner[right] == owner[big]
    # each small one overlaps the big one fully (>= min_overlap of the smaller): only mutual best stops the merge
    assert np.all(s.instances[3][s.instances[2] > 0] == big)

    # equal overlaps (mirror images about the big one): the documented tie rule links the smaller id
    s = Stack()
    left, right = s.add(2, disk((20, 12), 5)), s.add(2, disk((20, 26), 5))
    big = s.add(3, disk((20, 19), 14))
    owner = s.link().slice_to_nucleus
    assert owner[left] == owner[big] != owner[right]
    s = Stack()  # the same upside down
    big = s.add(2, disk((20, 19), 14))
    left, right = s.add(3, disk((20, 12), 5)), s.add(3, disk((20, 26), 5))
    owner = s.link().slice_to_nucleus
    assert owner[left] == owner[big] != owner[right]


@pytest.mark.parametrize("dz, max_gap_um, missing, expected", [
    (2.0, 0.0, 1, 2), (2.0, 1.0, 1, 2), (2.0, 2.0, 1, 1), (2.0, 3.0, 2, 2), (2.0, 4.0, 2, 1), (0.5, 1.0, 2, 1),
])
def test_max_gap_bridges_missing_slices_only_when_spacing_allows(dz, max_gap_um, missing, expected):
    s = Stack()
    below = s.nucleus(range(1, 4), (20, 20), 6)
    above = s.nucleus(range(4 + missing, 7 + missing), (20, 20), 6)
    nuclei = s.link(spacing=(dz, 0.5, 0.5), max_gap_um=max_gap_um)
    assert len(nuclei) == expected
    if expected == 1:
        assert (nuclei.z_start[0], nuclei.z_stop[0], nuclei.n_slices[0]) == (1, 6 + missing, 6)
    else:
        assert nuclei.slice_to_nucleus[below[-1]] != nuclei.slice_to_nucleus[above[0]]


def test_gap_is_not_bridged_past_a_chain_that_continues():
    """A chain end already linked to the next slice is not also linked over a gap (chains stay one per slice)."""
    s = Stack()
    a = s.nucleus(range(1, 4), (20, 20), 6)
    b = s.nucleus(range(5, 7), (20, 20), 6)  # gap at slice 4 -> bridged with max_gap_um >= dz
    nuclei = s.link(max_gap_um=1.0)
    assert len(nuclei) == 1 and nuclei.n_slices[0] == 5
    assert set(nuclei.slice_to_nucleus[a + b]) == {1}
    assert nuclei.slice_to_nucleus[a[0]] == nuclei.slice_to_nucleus[a[1]]


# -- the vectorised kernel against a naive reference -------------------------------------------------------------------
def random_detections(seed=0, shape=(12, 48, 48), n_nuclei=50):
    """~50 jittered, overlapping 3D nuclei with dropped slices, numbered per slice (one id per nucleus and slice)."""
    rng = np.random.default_rng(seed)
    z_size = shape[0]
    paint = np.zeros(shape, np.int64)  # (nucleus + 1) per voxel, later nuclei painted over earlier ones
    for j in range(n_nuclei):
        cy, cx = rng.uniform(4, shape[1] - 4, 2)
        radius = rng.uniform(2.5, 6)
        z0 = int(rng.integers(0, z_size))
        for z in range(z0, min(z_size, z0 + int(rng.integers(1, 6)))):
            if rng.random() < 0.15:
                continue  # a missed detection on this slice
            jy, jx, jr = rng.normal(0, 1.0, 3)
            paint[z][disk((cy + jy, cx + jx), max(1.5, radius + jr), shape[1:])] = j + 1
    instances = np.where(paint > 0, paint + np.arange(z_size)[:, None, None] * (n_nuclei + 1), 0)
    n_ids = z_size * (n_nuclei + 1) + 1
    return instances, rng.integers(0, 3, n_ids), rng.random(n_ids)


def naive_link(instances, cls, score, dz, min_overlap, max_gap_um, k):
    """Plain loops over slice-instance pairs: the documented rule, and a per-nucleus table (rows by z_start, y, x)."""
    z_size = instances.shape[0]
    ids_on = {z: [int(i) for i in np.unique(instances[z]) if i] for z in range(z_size)}
    mask = {i: instances[z] == i for z in range(z_size) for i in ids_on[z]}
    area = {i: int(m.sum()) for i, m in mask.items()}
    slice_of = {i: z for z in range(z_size) for i in ids_on[z]}
    parent = {i: i for i in mask}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    has_next, has_prev = set(), set()
    for distance in range(1, int(np.floor(max_gap_um / dz + 1e-9)) + 2):
        for z in range(z_size - distance):
            overlap = {}
            for a in ids_on[z]:
                for b in ids_on[z + distance]:
                    n = int((mask[a] & mask[b]).sum())
                    if n:
                        overlap[a, b] = n
            best_up, best_down = {}, {}  # largest overlap, ties to the smaller id
            for (a, b), n in sorted(overlap.items(), key=lambda item: (-item[1], item[0])):
                best_up.setdefault(a, b)
            for (a, b), n in sorted(overlap.items(), key=lambda item: (-item[1], item[0][1], item[0][0])):
                best_down.setdefault(b, a)
            for (a, b), n in overlap.items():
                if n < min_overlap * min(area[a], area[b]) - 1e-9 or best_up[a] != b or best_down[b] != a:
                    continue
                if distance > 1 and (a in has_next or b in has_prev):
                    continue
                has_next.add(a)
                has_prev.add(b)
                parent[root(a)] = root(b)
    groups = {}
    for i in mask:
        groups.setdefault(root(i), []).append(i)
    rows = []
    for members in groups.values():
        voxels = np.argwhere(np.isin(instances, members))
        per_slice = {}
        for i in members:
            entry = per_slice.setdefault(slice_of[i], [0, False, -np.inf])
            entry[0] += area[i]
            entry[1] |= cls[i] == 2
            entry[2] = max(entry[2], score[i])
        scores = sorted((e[2] for e in per_slice.values()), reverse=True)
        positive = sum(e[1] for e in per_slice.values())
        cz, cy, cx = voxels.mean(axis=0)
        rows.append(dict(z=cz, y=cy, x=cx, label=2 if positive >= k else 1,
                         score=scores[k - 1] if len(scores) >= k else 0.0, z_start=min(per_slice),
                         z_stop=max(per_slice), area_px=max(e[0] for e in per_slice.values()),
                         n_slices=len(per_slice), positive_slices=positive, members=sorted(members)))
    rows.sort(key=lambda r: (r["z_start"], r["y"], r["x"]))
    return rows


@pytest.mark.parametrize("seed, min_overlap, max_gap_um, k", [(0, 0.5, 0.0, 1), (1, 0.3, 1.0, 2), (2, 0.7, 2.0, 1)])
def test_vectorised_equals_naive_reference(seed, min_overlap, max_gap_um, k):
    instances, cls, score = random_detections(seed)
    nuclei = link_slices(instances, cls, score, (1.0, 0.5, 0.5), min_overlap=min_overlap, max_gap_um=max_gap_um,
                         min_positive_slices=k)
    expected = naive_link(instances, cls, score, 1.0, min_overlap, max_gap_um, k)
    n_instances = len(np.unique(instances)) - 1
    assert 30 <= len(nuclei) < n_instances  # some linking happened, not everything merged
    assert len(nuclei) == len(expected)
    table = nuclei.table()
    for column in ("z", "y", "x", "score"):
        np.testing.assert_allclose(table[column], [r[column] for r in expected], err_msg=column)
    for column in ("label", "z_start", "z_stop", "area_px", "n_slices", "positive_slices"):
        np.testing.assert_array_equal(table[column], [r[column] for r in expected], err_msg=column)
    for nucleus_id, row in zip(table["id"], expected):
        assert np.flatnonzero(nuclei.slice_to_nucleus == nucleus_id).tolist() == row["members"]
    np.testing.assert_array_equal(nuclei.labels, nuclei.slice_to_nucleus[instances])


# -- ground truth from the synthetic generator -------------------------------------------------------------------------
def test_ground_truth_stack_links_back_to_its_nuclei():
    """Slicing the true 3D instances into per-slice ids and linking must give back every true nucleus with its z
    range. Exact here: the generator's nuclei are convex and pressed together only slightly, so a nucleus's slices
    overlap each other far more than any neighbour's (a touching pair could in principle swap best partners; the
    generator at seed 0 has none)."""
    from lecl_transforms.data.synthetic import SynthConfig, generate_stack

    s = generate_stack(SynthConfig(), seed=0)
    true = s.instances.astype(np.int64)
    z_size, n_true = true.shape[0], int(true.max())
    per_slice = np.where(true > 0, true + np.arange(z_size)[:, None, None] * (n_true + 1), 0)
    true_label = {n["id"]: n["label"] for n in s.nuclei}
    true_of_id = np.arange(z_size * (n_true + 1) + 1) % (n_true + 1)
    cls = np.array([true_label.get(int(t), 0) for t in true_of_id])
    nuclei = link_slices(per_slice, cls, (cls == 2).astype(float), s.spacing)
    assert len(nuclei) == len(s.nuclei)
    # every 3D nucleus is exactly one true nucleus
    pairs = np.unique(np.stack([nuclei.labels[true > 0], true[true > 0]]), axis=1)
    assert pairs.shape[1] == len(s.nuclei)
    lookup = dict(zip(pairs[1].tolist(), pairs[0].tolist()))
    for row in s.nuclei:
        found = lookup[row["id"]] - 1
        assert (nuclei.z_start[found], nuclei.z_stop[found]) == (row["z_start"], row["z_stop"])
        assert nuclei.label[found] == row["label"]


# -- transforms ------------------------------------------------------------------------------------------------------
def gap_stack() -> Stack:
    s = Stack()
    s.nucleus(range(1, 4), (20, 20), 6, cls=2, score=0.9)
    s.nucleus(range(5, 8), (20, 20), 6)
    return s


def test_link_slices_transform_reads_spacing_from_metadata():
    s = gap_stack()
    image = MetaTensor(torch.as_tensor(s.instances), meta={"spacing": np.array([2.0, 0.5, 0.5])})
    bridge = LinkSlices(max_gap_um=2.0)
    assert len(bridge(image, np.array(s.cls), np.array(s.score))) == 1  # 1 missing slice * 2 um <= 2 um
    assert len(bridge(image, np.array(s.cls), np.array(s.score), spacing=(3.0, 0.5, 0.5))) == 2  # argument wins
    assert len(LinkSlices(max_gap_um=1.0)(image, np.array(s.cls), np.array(s.score))) == 2
    with pytest.raises(LECLInputError, match="max_gap_um"):
        bridge(s.instances, np.array(s.cls), np.array(s.score))  # no spacing anywhere
    assert len(LinkSlices()(s.instances[None], s.cls, s.score)) == 2  # channel-first accepted, spacing not needed


def test_link_slicesd_writes_nuclei_labels_and_classes():
    s = gap_stack()
    image = MetaTensor(torch.as_tensor(s.instances[None]),
                       meta={"spacing": np.array([1.0, 0.5, 0.5]), "filename_or_obj": "stack.tif"})
    data = {"pred_inst": image, "cls": np.array(s.cls), "prob": torch.as_tensor(s.score)}
    out = LinkSlicesd("pred_inst", slice_class_key="cls", slice_score_key="prob", max_gap_um=1.0)(data)
    nuclei = out["nuclei"]
    assert isinstance(nuclei, Nuclei3D) and len(nuclei) == 1 and nuclei.label[0] == 2
    assert tuple(out["labels3d"].shape) == (1, *SHAPE) and tuple(out["classes3d"].shape) == (1, *SHAPE)
    np.testing.assert_array_equal(np.asarray(out["classes3d"])[0], nuclei.classes())
    np.testing.assert_array_equal(np.asarray(out["labels3d"])[0], nuclei.labels)
    assert out["classes3d"].meta["filename_or_obj"] == "stack.tif"
    with pytest.raises(LECLInputError, match="slice_class"):
        LinkSlicesd()({"instances": s.instances, "slice_score": s.score})


def fragment_stack() -> tuple[Stack, list[int], int]:
    """A 3-slice nucleus (disks of radius 6: 113 px each) and, apart from it, a 1-slice fragment (radius 2: 13 px)."""
    s = Stack()
    nucleus = s.nucleus(range(2, 5), (20, 20), 6)
    fragment = s.add(8, disk((5, 32), 2))
    assert disk((20, 20), 6).sum() == 113 and disk((5, 32), 2).sum() == 13
    return s, nucleus, fragment


@pytest.mark.parametrize("method", ["overlap", "chain", "projection"])
def test_min_volume_drops_small_3d_nuclei_for_every_method(method):
    s, nucleus, fragment = fragment_stack()
    spacing = (2.0, 0.5, 0.5)  # voxel 0.5 um^3: nucleus 3 * 113 * 0.5 = 169.5 um^3, fragment 13 * 0.5 = 6.5 um^3
    assert len(s.link(spacing=spacing, method=method)) == 2  # default 0: no filter
    assert len(s.link(spacing=spacing, method=method, min_volume_um3=6.5)) == 2  # at the threshold: kept
    kept = s.link(spacing=spacing, method=method, min_volume_um3=6.6)
    assert len(kept) == 1 and kept.n_slices[0] == 3 and kept.area_px[0] == 113 and list(kept.id) == [1]
    assert (kept.labels[s.instances == fragment] == 0).all() and (kept.labels[s.instances == nucleus[0]] == 1).all()
    assert kept.slice_to_nucleus[fragment] == 0 and set(kept.slice_to_nucleus[nucleus]) == {1}
    assert len(s.link(spacing=spacing, method=method, min_volume_um3=169.5)) == 1
    nothing = s.link(spacing=spacing, method=method, min_volume_um3=170.0)
    assert len(nothing) == 0 and not nothing.labels.any()
    # the volume is in um^3: the same voxels at a finer spacing are smaller
    assert len(s.link(spacing=(1.0, 0.5, 0.5), method=method, min_volume_um3=169.5)) == 0


def test_min_volume_needs_a_spacing_which_link_slicesd_takes_from_the_image():
    s, _, _ = fragment_stack()
    cls, score = np.array(s.cls), np.array(s.score)
    with pytest.raises(LECLInputError, match="min_volume_um3"):
        LinkSlices(min_volume_um3=6.6)(s.instances, cls, score)  # no spacing anywhere
    assert len(LinkSlices(min_volume_um3=6.6)(s.instances, cls, score, spacing=(2.0, 0.5, 0.5))) == 1
    assert len(LinkSlices(min_volume_um3=6.6, spacing=(2.0, 0.5, 0.5))(s.instances, cls, score)) == 1
    # the pipeline's instances are plain arrays; the stack image read beside them knows the spacing
    image = MetaTensor(torch.zeros((2, *SHAPE)), meta={"spacing": np.array([2.0, 0.5, 0.5])})
    link = LinkSlicesd(min_volume_um3=6.6)
    data = {"instances": s.instances, "slice_class": cls, "slice_score": score, "image": image}
    assert len(link(data)["nuclei"]) == 1
    coarser = link.with_settings(min_volume_um3=6.5)  # a calibration candidate: a copy, the original unchanged
    assert coarser.transform.min_volume_um3 == 6.5 and link.transform.min_volume_um3 == 6.6
    assert len(coarser(data)["nuclei"]) == 2
    with pytest.raises(LECLInputError, match="min_volume_um3"):
        link({"instances": s.instances, "slice_class": cls, "slice_score": score})


# -- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [
    ({"min_positive_slices": 0}, "min_positive_slices"), ({"min_positive_slices": 1.5}, "min_positive_slices"),
    ({"min_overlap": 0.0}, "min_overlap"), ({"min_overlap": 1.2}, "min_overlap"), ({"max_gap_um": -1.0}, "max_gap_um"),
    ({"method": "centroids"}, "method"), ({"projection_radius": -1}, "projection_radius"),
    ({"min_volume_um3": -1.0}, "min_volume_um3"), ({"min_volume_um3": float("nan")}, "min_volume_um3"),
    ({"min_volume_um3": "big"}, "min_volume_um3"),
])
def test_bad_parameters_raise_input_error(kwargs, key):
    s = gap_stack()
    for build in (lambda: LinkSlices(**kwargs), lambda: LinkSlicesd(**kwargs),
                  lambda: s.link(**kwargs)):
        with pytest.raises(LECLInputError, match=f"config: {key}"):
            build()


def test_bad_inputs_raise_input_error():
    s = gap_stack()
    cls, score = np.array(s.cls), np.array(s.score)
    repeated = s.instances.copy()
    repeated[9][disk((5, 5), 2)] = 1  # id 1 again, on another slice
    with pytest.raises(LECLInputError, match="id 1 is on slice 1 and on slice 9"):
        link_slices(repeated, cls, score)
    with pytest.raises(LECLInputError, match="largest instance id"):
        link_slices(s.instances, cls[:-1], score[:-1])
    with pytest.raises(LECLInputError, match="not \\(Z, Y, X\\)"):
        link_slices(s.instances[0], cls, score)
    with pytest.raises(LECLInputError, match="integer"):
        link_slices(s.instances.astype(float), cls, score)
    with pytest.raises(LECLInputError, match="spacing"):
        link_slices(s.instances, cls, score, spacing=(0.0, 1.0, 1.0))
