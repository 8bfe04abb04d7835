"""Each weak-label step on hand-made inputs with known answers."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from lecl_transforms.transforms import RULES
from lecl_transforms.transforms import functional as P
from lecl_transforms.transforms import ChannelComposite, ExtendedMIP, HoVerNetTargets, SliceSets, resolve_rules


def test_distance_honours_anisotropy_in_x_pixel_units():
    d = P.distance_to_points(np.array([[0, 0, 0]]), (3, 5, 6), (2.0, 0.5, 0.5))
    assert d[1, 0, 0] == pytest.approx(4.0)  # one z-step of 2 um = 4 pixels of 0.5 um
    assert d[0, 3, 4] == pytest.approx(5.0)
    assert d[2, 3, 4] == pytest.approx(np.sqrt(64 + 25))


def test_binned_kmeans_matches_plain_kmeans_on_every_voxel():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    intensity = np.clip(rng.normal(60, 20, (4, 40, 40)), 0, 255)
    intensity[:, 10:20, 10:20] += 120
    intensity8 = np.clip(intensity, 0, 255).astype(np.uint8)
    distance = P.distance_to_points(np.array([[1, 15, 15], [2, 30, 30]]), intensity8.shape, (2.0, 1.0, 1.0))
    ours, centres = P.kmeans_features(intensity8, distance, seed=0)
    features = np.stack([intensity8.ravel() / 10.0, np.minimum(distance, 20).ravel()], axis=1)
    plain = KMeans(3, random_state=0, n_init=3).fit(features)
    # the same partition up to cluster numbering: each of our clusters maps onto one plain cluster
    table = np.zeros((3, 3), int)
    np.add.at(table, (ours.ravel(), plain.labels_), 1)
    assert table.max(axis=1).sum() / table.sum() > 0.999
    assert (table.argmax(axis=1) != table.argmax(axis=1)[:, None]).sum() == 6  # one-to-one
    again, _ = P.kmeans_features(intensity8, distance, seed=0)
    np.testing.assert_array_equal(ours, again)


def test_cluster_roles_paper_vs_robust():
    # three intensity levels: nuclei (bright, at the points), halo (dim, near), background (dark, far)
    clusters = np.zeros((1, 20, 20), np.uint8)
    clusters[0, 5:15, 5:15] = 2
    clusters[0, 8:12, 8:12] = 1
    centres = np.array([[1.0, 19.0], [20.0, 1.0], [3.0, 8.0]])
    points = np.array([[0, 10, 10]])
    ids, background = P.cluster_roles(clusters, centres, points, "darkest", "brightness_groups", 4)
    assert (ids, background) == ([1], 0)  # the halo is nearer the background in intensity
    ids, background = P.cluster_roles(clusters, centres, points, "darkest", "not_background", 4)
    assert (sorted(ids), background) == ([1, 2], 0)
    centres[2, 0] = 15.0  # now the third cluster is a dim part of the nuclei
    ids, _ = P.cluster_roles(clusters, centres, points, "darkest", "brightness_groups", 4)
    assert sorted(ids) == [1, 2]


def test_ball_overlap_rule_counts_voxels_near_points_in_index_space():
    clusters = np.zeros((9, 9, 9), np.uint8)
    clusters[4, 4, 4] = 1  # nuclei
    clusters[0] = 2  # a whole slice 4 voxels above the point: inside ball(4) in index space
    centres = np.array([[0.0, 20.0], [20.0, 0.0], [5.0, 10.0]])
    _, background = P.cluster_roles(clusters, centres, np.array([[4, 4, 4]]), "ball_overlap", "not_background", 4)
    assert background == 2  # cluster 2 touches the ball at one voxel only; cluster 0 fills the ball


def test_voronoi_cells_split_at_the_midline_and_share_duplicates():
    cells = P.voronoi_cells(np.array([[5, 2], [5, 12]]), (10, 15))
    assert (cells[:, :7] == 1).all() and (cells[:, 8:] == 2).all()
    shared = P.voronoi_cells(np.array([[5, 2], [5, 2], [5, 12]]), (10, 15))
    assert set(np.unique(shared)) == {2, 3}  # the two clicks at one (y, x) share one cell


def _hand_stack():
    """One nucleus in slices 2-4 clicked at z=3, haze of it in slice 5, an unrelated blob in slice 7 of its cell."""
    mask = np.zeros((9, 20, 20), bool)
    mask[2:5, 6:14, 6:14] = True
    mask[5, 9:11, 9:11] = True  # 4 of 64 footprint pixels: haze
    mask[7, 0:3, 0:3] = True  # another object in the same cell, elsewhere in x/y
    cells = np.ones((20, 20), np.int32)
    return mask, cells, np.array([[3, 10, 10]])


def test_slice_sets_paper_rule_takes_every_touched_slice():
    mask, cells, points = _hand_stack()
    sets = P.slice_sets(mask, cells, points, RULES["paper"])
    np.testing.assert_array_equal(np.flatnonzero(sets[0]), [2, 3, 4, 5, 7])


def test_slice_sets_robust_rule_keeps_the_nucleus_only():
    mask, cells, points = _hand_stack()
    sets = SliceSets("robust")(mask[None], cells[None], points)
    np.testing.assert_array_equal(np.flatnonzero(sets[0]), [2, 3, 4])
    np.testing.assert_array_equal(P.slice_ranges(sets), [[2, 4]])


def test_slice_sets_always_hold_the_clicked_slice():
    mask = np.zeros((5, 8, 8), bool)
    sets = P.slice_sets(mask, np.ones((8, 8), np.int32), np.array([[2, 4, 4]]), RULES["robust"])
    np.testing.assert_array_equal(np.flatnonzero(sets[0]), [2])


def test_emip_projects_each_cell_over_its_own_slices():
    image = np.zeros((2, 5, 4, 6), np.float32)
    image[0, 1, :, :3] = 3  # nucleus of cell 1 in slice 1
    image[1, 4, :, :3] = 9  # marker above it, in slice 4 (a decoy)
    image[1, 2, :, 3:] = 7  # marker of cell 2 in its own slice 2
    cells = np.ones((4, 6), np.int32)
    cells[:, 3:] = 2
    sets = np.zeros((2, 5), bool)
    sets[0, 1] = sets[1, 2] = True
    emip = ExtendedMIP("both")(image, cells[None], sets)
    assert (emip[1, :, :3] == 0).all() and (emip[1, :, 3:] == 7).all()
    assert (emip[0, :, :3] == 3).all()
    mip = P.max_intensity_projection(image)
    assert (mip[1, :, :3] == 9).all()  # the plain MIP shows the decoy
    marker_only = ExtendedMIP("marker")(image, cells[None], sets)
    np.testing.assert_array_equal(marker_only[0], mip[0])


def _reference_refine(labels, dilate, erode):
    """The per-cell loop of the reference implementation, on a small image."""
    out = np.zeros_like(labels)
    yy, xx = np.mgrid[-8:9, -8:9]
    for value in np.unique(labels[labels > 0]):
        grown = ndimage.binary_dilation(labels == value, structure=yy**2 + xx**2 <= dilate**2)
        filled = ndimage.binary_fill_holes(grown)
        kept = ndimage.binary_erosion(filled, structure=yy**2 + xx**2 <= erode**2, border_value=1)
        out[kept] = value
    return out


def test_refine_per_cell_matches_the_per_cell_loop():
    rng = np.random.default_rng(3)
    labels = np.zeros((64, 64), np.int32)
    for value, (y, x) in enumerate(rng.integers(8, 56, (7, 2)), start=1):
        yy, xx = np.ogrid[:64, :64]
        labels[((yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(36, 100)) & (labels == 0)] = value
    labels[30:34, 30:34] = 0  # a hole
    ours = P.refine_per_cell(labels, 5, 7)
    reference = _reference_refine(labels, 5, 7)
    assert np.mean(ours == reference) > 0.995
    assert set(np.unique(ours)) <= set(np.unique(labels))


def test_hover_maps_hand_computed():
    inst = np.zeros((3, 5), np.int32)
    inst[1, 1:4] = 7  # a horizontal bar of 3 pixels
    hv = P.hover_maps(inst)
    np.testing.assert_allclose(hv[0, 1, 1:4], [-1, 0, 1])
    np.testing.assert_allclose(hv[1], 0)
    inst = np.zeros((5, 3), np.int32)
    inst[0:4, 1] = 2  # vertical bar of 4: centre 1.5
    hv = P.hover_maps(inst)
    np.testing.assert_allclose(hv[1, 0:4, 1], [-1, -1 / 3, 1 / 3, 1])


def test_hover_targets_types_and_ignore():
    label = np.array([[[1, 1, 0, 255, 1]]], np.uint8)
    instances = np.array([[[1, 1, 0, 0, 2]]], np.int32)
    t = HoVerNetTargets()(label, instances, np.array([2, 1]))
    np.testing.assert_array_equal(t["np"][0, 0], [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(t["nc"][0, 0], [2, 2, 0, 0, 1])
    np.testing.assert_array_equal(t["ignore"][0, 0], [0, 0, 0, 1, 0])
    assert t["hv"].shape == (2, 1, 5)


def test_channel_composite_numpy_and_torch_agree():
    img = np.zeros((2, 2, 4), np.float32)
    img[0] = np.arange(8).reshape(2, 4)  # nuclei 0..7
    img[1] = 10  # marker constant -> scaled to 0
    img[1, 0, 0] = 30
    comp = ChannelComposite(percentiles=(0, 100))
    out = comp(img)
    assert out.shape == (3, 2, 4)
    np.testing.assert_allclose(out[1], img[0] / 7)  # G = nuclei
    np.testing.assert_allclose(out[2], img[0] / 7)  # B = nuclei
    assert out[0, 0, 0] == 1 and out[0, 1, 1] == 0  # R = marker
    out_t = comp(torch.from_numpy(img))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-6)
    # a reference (e.g. the stack's MIP) fixes the scale
    np.testing.assert_allclose(comp(img, reference=img * 2)[1], img[0] / 14, atol=1e-6)


def test_rules_from_config():
    rules = resolve_rules({"preset": "paper", "min_overlap": 0.5})
    assert rules.mask == "not_background" and rules.min_overlap == 0.5
    from lecl_transforms import LECLInputError

    with pytest.raises(LECLInputError, match="unknown rules 'fast'"):
        resolve_rules("fast")
    with pytest.raises(LECLInputError, match="unknown field"):
        resolve_rules({"colour": "red"})


def test_slicewise_distance_equals_3d_transform():
    rng = np.random.default_rng(1)
    shape = (7, 30, 40)
    points = np.unique(np.column_stack([rng.integers(0, s, 12) for s in shape]), axis=0)
    spacing = (2.25, 0.5, 0.5)
    reference = ndimage.distance_transform_edt(~P.point_mask(points, shape), sampling=(4.5, 1.0, 1.0))
    np.testing.assert_allclose(P.distance_to_points(points, shape, spacing), reference, rtol=1e-5, atol=1e-4)


def test_benchmark_naive_and_vectorised_agree_on_a_small_volume(capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_prepare", REPO / "benchmarks" / "bench_prepare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--size", "128", "--slices", "8", "--nuclei", "25"])
    assert result["slice_set_agreement"] >= 0.95
    assert result["emip_pixels_equal"] >= 0.95
    assert "speed ratio" in capsys.readouterr().out


# -- equivalence with MONAI / scikit-image, and the one percentile normalisation -------------------------------------
def _instance_maps():
    """Hand-made maps (bars, a single pixel, a disconnected id, non-contiguous ids) and a synthetic slice."""
    from lecl_transforms.data import REGIMES, generate_stack

    bars = np.zeros((9, 12), np.int32)
    bars[1, 1:4] = 7  # horizontal bar
    bars[3:7, 9] = 2  # vertical bar
    bars[8, 0] = 1  # one pixel: both maps 0
    bars[5:7, 2:5] = 40  # a block, and a second piece of the same id far away
    bars[0, 11] = 40
    rng = np.random.default_rng(0)
    cells = P.voronoi_cells(rng.integers(0, 64, (12, 2)), (64, 64))
    blobs = np.where(ndimage.distance_transform_edt(cells == ndimage.grey_erosion(cells, size=3)) > 2, cells, 0)
    stack = generate_stack(replace(REGIMES["dense"], size_yx=64), seed=2)
    return [bars, blobs.astype(np.int32), stack.instances[stack.instances.shape[0] // 2].astype(np.int32)]


def test_hover_maps_equal_monai_compute_hover_maps():
    """MONAI's ``ComputeHoVerMaps`` (monai 1.6.1, transforms/intensity/array.py) loops over ``regionprops``:
    offsets from the region's centroid (the mean of its pixel coordinates, as our bincount mean), channel 0 = x
    (horizontal), 1 = y (vertical), negative side / its largest magnitude, positive side / its max; float32 out.
    Same convention, no centre rounding: equal up to float32 rounding. It takes ``(1, H, W)`` and returns a tensor,
    casts ids to float32 first (ids above 2**24 could merge) and masks the whole frame per region."""
    from monai.transforms import ComputeHoVerMaps

    for inst in _instance_maps():
        ours = P.hover_maps(inst)
        theirs = np.asarray(ComputeHoVerMaps()(inst[None]))
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def _naive_labelled_dilation(labels, radius):  # the implementation before scikit-image
    distance, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return np.where(distance <= radius, labels[iy, ix], 0)


def _naive_remove_small(mask, min_size):  # the implementation before scikit-image
    components, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    keep = np.bincount(components.ravel()) >= min_size
    keep[0] = False
    return keep[components]


def test_scikit_image_morphology_equals_the_old_kernels():
    rng = np.random.default_rng(5)
    labels = np.zeros((48, 48), np.int32)
    labels[tuple(rng.integers(0, 48, (2, 30)))] = rng.integers(1, 9, 30)  # ties between equidistant labels too
    for radius in (0, 1.5, 3, 7):
        np.testing.assert_array_equal(P.labelled_dilation(labels, radius), _naive_labelled_dilation(labels, radius))
    mask = ndimage.binary_opening(rng.random((64, 64)) > 0.55)
    mask[10, 10] = mask[11, 11] = True  # diagonal neighbours: one 8-connected object
    for min_size in (0, 1, 2, 5, 30):
        np.testing.assert_array_equal(P.remove_small_components(mask, min_size), _naive_remove_small(mask, min_size))


def test_one_percentile_normalisation_serves_every_caller():
    from lecl_transforms.visualize import to_uint8

    rng = np.random.default_rng(1)
    img = rng.gamma(2.0, 300.0, (2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(P.percentile_range(img, (0.5, 99.8)), np.percentile(img, (0.5, 99.8)), rtol=1e-6)
    np.testing.assert_array_equal(P.percentile_range(img, (0, 100)), [img.min(), img.max()])
    per_channel = P.percentile_range(img.reshape(2, -1), (1, 99), axis=1)
    np.testing.assert_allclose(per_channel, np.percentile(img.reshape(2, -1), (1, 99), axis=1).T, rtol=1e-6)
    lo, hi = np.percentile(img[0], [0.5, 99.8])  # the three formulas this replaced
    np.testing.assert_array_equal(to_uint8(img[0]), (np.clip((img[0] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
    lo, hi = np.percentile(img, [0.5, 99.9])
    old8 = np.clip(np.rint((img - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    assert np.mean(P.scale_to_8bit(img) == old8) > 0.999  # float32 rounding at .5 may move a voxel by one level
    np.testing.assert_allclose(ChannelComposite(percentiles=(1, 99)).scale(img), per_channel, rtol=1e-6)
    ref = P.normalize_percentiles(img, (0, 100), reference=img * 2)
    np.testing.assert_allclose(ref, np.clip((img - 2 * img.min()) / (2 * np.ptp(img)), 0, 1), atol=1e-6)


def test_voronoi_border_band_hand_computed():
    cells = np.zeros((6, 10), np.int32)
    cells[:, :5], cells[:, 5:] = 1, 2  # one vertical border between columns 4 and 5
    band = P.voronoi_border_band(cells, 2)
    assert band[:, 4].all() and band[:, 5].all() and band.sum() == 12  # one pixel on each side
    wide = P.voronoi_border_band(cells, 4)
    assert wide[:, 3:7].all() and wide.sum() == 24  # one more on each side
    assert not P.voronoi_border_band(np.ones((6, 10), np.int32), 2).any()  # one cell: no border


def _touching_pair():
    """Two bright touching disks (radius 8, centres 16 px apart) on a dark field, one click each: dense tissue in
    miniature, no pixel farther than the background margin from a click between them."""
    yy, xx = np.mgrid[:40, :48]
    points = np.array([[20, 16], [20, 32]])
    image = np.full((40, 48), 10.0)
    for y, x in points:
        image[np.hypot(yy - y, xx - x) <= 8] = 200.0
    cells = P.voronoi_cells(points, image.shape)
    return image, points, cells


def test_three_region_label_marks_voronoi_borders_background():
    image, points, cells = _touching_pair()
    label, instances = P.three_region_label(image, points, cells, RULES["robust"])
    assert RULES["robust"].voronoi_background == 2 and RULES["paper"].voronoi_background == 0
    border = np.flatnonzero(cells[20, 1:] != cells[20, :-1])[0]  # the cells meet between columns border, border + 1
    assert 23 <= border <= 24
    gap = (slice(14, 27), slice(border, border + 2))
    assert (label[gap] == 0).all()  # the border columns between the two nuclei: background
    assert (instances[gap] == 0).all() and set(np.unique(instances)) == {0, 1, 2}
    assert (label[20, 12:20] == 1).all() and (label[20, 28:36] == 1).all()  # the cores stay nucleus
    # the cluster label alone (the paper's) leaves the gap between the nuclei unlabelled: never background
    literal, _ = P.three_region_label(image, points, cells, replace(RULES["robust"], voronoi_background=0))
    assert (literal[gap] != 0).all()
    assert ((literal == 0) | (label == 0)).sum() > (literal == 0).sum()
