"""HoVer-Net post-processing (step 4): equal to MONAI's on hand-made NP/HV/NC maps; batch/numpy/empty handling;
contours on the boundary; the transforms.

Scenes are small (96 x 128, ~10 nuclei with touching pairs); MONAI's transforms are the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.apps.pathology.transforms.post.array import (
    HoVerNetInstanceMapPostProcessing,
    HoVerNetNuclearTypePostProcessing,
)
from monai.transforms import ComputeHoVerMaps
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from lecl_transforms import LECLInputError
from lecl_transforms.transforms.functional.hovernet_post import (
    SliceDetections,
    hovernet_postprocess,
    instance_contours,
)
from lecl_transforms.transforms.hovernet_post import HoVerNetPostProcess, HoVerNetPostProcessd

N_CLASSES = 3
# (cy, cx, semi-axis y, semi-axis x, type); the pairs (0, 1), (2, 3), (4, 5), (6, 7) overlap: the later one is cut
# off by the earlier one, so they touch along 7-11 pixels
NUCLEI = [
    (20, 20, 7, 7, 1), (20, 30, 6, 6, 2),
    (60, 24, 9, 5, 2), (60, 32, 6, 6, 1),
    (25, 80, 5, 10, 1), (34, 80, 6, 6, 2),
    (70, 80, 6, 6, 1), (70, 91, 6, 6, 2),
    (75, 112, 8, 5, 2),
    (20, 115, 5, 5, 1),
    (45, 55, 4, 4, 2),
]
BACKGROUND_TYPED = 7  # this nucleus's NC says "background" on most pixels: MONAI then takes the runner-up class
NOISY = dict(np_noise=1.5, hv_blur=1.5, hv_noise=0.15)  # network-like: blurred, noisy HV; some NP pixels flip


def make_scene(seed: int = 0, shape=(96, 128), shift: int = 0, np_noise=0.8, hv_blur=0.0, hv_noise=0.02):
    """Ground truth ``(H, W)`` and NP logits ``(2, H, W)``, HV ``(2, H, W)`` (MONAI's ``ComputeHoVerMaps``, optionally
    blurred), NC logits ``(3, H, W)``, all float32, with deterministic noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = np.zeros(shape, np.int32)
    kinds = np.zeros(len(NUCLEI) + 1, np.int64)
    for i, (cy, cx, ay, ax, kind) in enumerate(NUCLEI, start=1):
        inside = ((yy - cy - shift) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1
        gt[inside & (gt == 0)] = i
        kinds[i] = kind
    fg = (gt > 0).astype(np.float32)
    nucleus = np.stack([2 - 4 * fg, 4 * fg - 2]) + rng.normal(0, np_noise, (2,) + shape)
    hv = np.asarray(ComputeHoVerMaps()(gt[None]))
    if hv_blur:
        hv = ndimage.gaussian_filter(hv, (0, hv_blur, hv_blur))
    hv = hv + rng.normal(0, hv_noise, (2,) + shape)
    type_map = kinds[gt]
    type_map[(gt == BACKGROUND_TYPED) & (rng.random(shape) < 0.6)] = 0
    types = 2.5 * (np.arange(N_CLASSES)[:, None, None] == type_map[None]) + rng.normal(0, 1, (N_CLASSES,) + shape)
    return gt, nucleus.astype(np.float32), hv.astype(np.float32), types.astype(np.float32)


def monai_reference(nucleus, hv, types):
    """MONAI's instance map ``(H, W)`` and instance info (bounding box, centroid, type, type_prob)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, instance_map = HoVerNetInstanceMapPostProcessing()(torch.from_numpy(nucleus), torch.from_numpy(hv))
        info, _ = HoVerNetNuclearTypePostProcessing()(torch.from_numpy(types), info, instance_map)
    return np.asarray(instance_map)[0], info


def run(*arrays, **kwargs) -> SliceDetections:
    return hovernet_postprocess(*(torch.from_numpy(a) for a in arrays), **kwargs)[0]


def assert_same_detections(a: SliceDetections, b: SliceDetections):
    assert a.n == b.n
    np.testing.assert_array_equal(a.instances, b.instances)
    for name in ("area", "bbox", "type"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("centroid", "type_prob", "class_prob"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)


@pytest.fixture(scope="module")
def scene():
    return make_scene(0)


@pytest.mark.parametrize("seed, noise", [(0, {}), (0, NOISY), (1, NOISY)], ids=["clean", "noisy0", "noisy1"])
def test_equals_monai(seed, noise):
    gt, nucleus, hv, types = make_scene(seed, **noise)
    reference, info = monai_reference(nucleus, hv, types)
    det = run(nucleus, hv, types, keep_unmarked=False)  # MONAI's rule: a component without marker vanishes

    # same instances, same order: MONAI's ids with their gaps closed
    np.testing.assert_array_equal(relabel_sequential(reference)[0], det.instances)
    monai_ids = np.unique(reference)[1:]
    assert det.n == len(monai_ids) >= (len(NUCLEI) if not noise else 8)
    assert set(info) == set(monai_ids)  # every instance has a contour in MONAI's info, so all are compared
    for row, monai_id in enumerate(monai_ids):
        item = info[monai_id]
        y0, x0, y1, x1 = det.bbox[row]
        np.testing.assert_array_equal(item["bounding_box"][0], [y0, y1, x0, x1])
        assert item["type"] == det.type[row]
        assert item["type_prob"] == pytest.approx(det.type_prob[row], rel=1e-6)  # MONAI sums in float32
        # MONAI's centroid: skimage centroid of the bbox crop (row, col), then offset by (x0, y0) and truncated
        local = det.centroid[row] - [y0, x0]
        np.testing.assert_array_equal(item["centroid"], np.floor(local + [x0, y0] + 1e-9).astype(int))
    if noise:
        # the noisy scene is sensitive to the algorithm's details, so this comparison can fail: one step off
        # (e.g. the marker opening's radius) changes the map
        assert not np.array_equal(run(nucleus, hv, types, marker_radius=1).instances, det.instances)
        assert not np.array_equal(run(nucleus, hv, types, sobel_kernel_size=3).instances, det.instances)
    else:
        # the nucleus labelled "background" on most pixels got its nucleus class, with a minority share
        row = np.bincount(det.instances[gt == BACKGROUND_TYPED]).argmax() - 1
        assert det.type[row] == NUCLEI[BACKGROUND_TYPED - 1][4] and det.type_prob[row] < 0.5


def test_components_without_marker_are_kept_by_default(scene):
    """A flat HV map (a briefly trained network) leaves no marker: MONAI's rule drops every nucleus, the default
    keeps each mask component as one instance."""
    _, nucleus, hv, types = scene
    flat = np.zeros_like(hv)
    flat[:, :5] = 1.0  # constant inside the nuclei except near the image edge: the border map is ~1 in the mask
    literal = run(nucleus, flat, types, keep_unmarked=False)
    whole = run(nucleus, flat, types, split_depth=0)
    components, _ = ndimage.label(np.argmax(nucleus, 0) > 0)
    sizes = np.bincount(components.ravel())[1:]
    assert whole.n == (sizes >= 10).sum() and sorted(whole.area) == sorted(sizes[sizes >= 10])  # each component once
    assert literal.n < whole.n
    # by default a component is split at its necks (distance-transform peaks): the touching pairs come apart
    split = run(nucleus, flat, types)
    assert whole.n < split.n <= len(NUCLEI)
    assert split.area.sum() == whole.area.sum()  # the same pixels, only divided
    with_hv = run(nucleus, hv, types)  # a trained HV map: both rules agree
    assert with_hv.n == run(nucleus, hv, types, keep_unmarked=False).n


def test_touching_nuclei_come_out_separate(scene):
    gt, nucleus, hv, types = scene
    det = run(nucleus, hv, types)
    # each ground-truth nucleus is mostly one instance, and no two nuclei share theirs
    best = [np.bincount(det.instances[gt == i], minlength=det.n + 1).argmax() for i in range(1, len(NUCLEI) + 1)]
    assert 0 not in best and len(set(best)) == len(NUCLEI)
    for i, inst in enumerate(best, start=1):
        overlap = np.sum((gt == i) & (det.instances == inst))
        assert overlap / np.sum((gt == i) | (det.instances == inst)) > 0.7
        assert det.type[inst - 1] == NUCLEI[i - 1][4]


def test_statistics_equal_naive_reference(scene):
    _, nucleus, hv, types = scene
    det = run(nucleus, hv, types)
    ids = np.unique(det.instances)
    np.testing.assert_array_equal(ids, np.arange(det.n + 1))  # contiguous ids 1..n
    softmax = torch.softmax(torch.from_numpy(types).double(), 0).numpy()
    for row, inst in enumerate(ids[1:]):
        inside = det.instances == inst
        ys, xs = np.nonzero(inside)
        assert det.area[row] == inside.sum()
        np.testing.assert_allclose(det.centroid[row], [ys.mean(), xs.mean()], rtol=1e-12)
        np.testing.assert_array_equal(det.bbox[row], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
        np.testing.assert_allclose(det.class_prob[row], softmax[:, inside].mean(1), rtol=1e-5)
    np.testing.assert_allclose(det.class_prob.sum(1), 1, rtol=1e-6)
    assert det.instances.dtype == np.int32 and det.area.dtype == np.int64 and det.bbox.dtype == np.int64


def test_numpy_input_equals_torch_input(scene):
    _, nucleus, hv, types = scene
    assert_same_detections(hovernet_postprocess(nucleus, hv, types)[0], run(nucleus, hv, types))
    # a batch dimension or not: same
    assert_same_detections(hovernet_postprocess(nucleus[None], hv[None], types[None])[0], run(nucleus, hv, types))


def test_batch_equals_singles():
    scenes = [make_scene(3, **NOISY), make_scene(4, shift=3)]
    batch = hovernet_postprocess(*(torch.from_numpy(np.stack(s)) for s in zip(*(sc[1:] for sc in scenes))))
    assert len(batch) == 2
    for det, (_, nucleus, hv, types) in zip(batch, scenes):
        assert_same_detections(det, run(nucleus, hv, types))


def test_empty_slice_gives_no_detections(scene):
    _, nucleus, hv, types = scene
    empty_np = np.stack([np.full(nucleus.shape[1:], 3.0), np.full(nucleus.shape[1:], -3.0)]).astype(np.float32)
    empty_hv = np.zeros_like(hv)  # constant HV: MONAI raises here; an empty slice must not
    det = run(empty_np, empty_hv, types)
    assert det.n == 0 and not det.instances.any() and det.instances.shape == nucleus.shape[1:]
    assert det.class_prob.shape == (0, N_CLASSES) and det.centroid.shape == (0, 2) and det.bbox.shape == (0, 4)
    # next to a slice with nuclei, in one batch
    mixed = hovernet_postprocess(np.stack([empty_np, nucleus]), np.stack([empty_hv, hv]), np.stack([types, types]))
    assert mixed[0].n == 0
    assert_same_detections(mixed[1], run(nucleus, hv, types))


def test_without_type_prediction(scene):
    _, nucleus, hv, types = scene
    det, full = run(nucleus, hv), run(nucleus, hv, types)
    np.testing.assert_array_equal(det.instances, full.instances)
    assert (det.type == 0).all() and np.isnan(det.type_prob).all() and det.class_prob.shape == (det.n, 0)


def test_contours_lie_on_the_instance_boundary(scene):
    _, nucleus, hv, types = scene
    det = run(nucleus, hv, types)
    ask = [1, det.n]
    contours = instance_contours(det.instances, ask)
    assert sorted(contours) == ask  # only the ids asked for
    padded = np.pad(det.instances, 1)
    for inst, contour in contours.items():
        assert contour.ndim == 2 and contour.shape[1] == 2 and len(contour) > 8
        np.testing.assert_array_equal(contour[0], contour[-1])  # closed
        x, y = contour[:, 0] + 1, contour[:, 1] + 1  # in the padded frame
        # an iso-line point at 0.5 lies between an inside pixel and an outside one
        low = padded[np.floor(y).astype(int), np.floor(x).astype(int)] == inst
        high = padded[np.ceil(y).astype(int), np.ceil(x).astype(int)] == inst
        assert (low != high).all()
        # it surrounds the instance: the shoelace area is the area minus about half the boundary pixels
        area = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        assert 0.7 * det.area[inst - 1] < area < det.area[inst - 1]
    assert len(instance_contours(det.instances)) == det.n
    with pytest.raises(LECLInputError, match="not in the instance map"):
        instance_contours(det.instances, [det.n + 1])


def test_transforms(scene):
    _, nucleus, hv, types = scene
    outputs = {"nucleus_prediction": torch.from_numpy(nucleus)[None], "horizontal_vertical": torch.from_numpy(hv)[None],
               "type_prediction": torch.from_numpy(types)[None]}
    expected = run(nucleus, hv, types)
    assert_same_detections(HoVerNetPostProcess()(outputs)[0], expected)
    d = HoVerNetPostProcessd(detections_key="nuclei")(dict(outputs, image="kept"))
    assert d["image"] == "kept" and d["instances"].shape == (1,) + nucleus.shape[1:]
    np.testing.assert_array_equal(d["instances"][0], expected.instances)
    assert_same_detections(d["nuclei"][0], expected)
    # a parameter reaches the kernel: bigger minimum size, fewer instances
    assert HoVerNetPostProcess(min_object_size=150)(outputs)[0].n < expected.n
    with pytest.raises(LECLInputError, match="horizontal_vertical"):
        HoVerNetPostProcessd()({"nucleus_prediction": outputs["nucleus_prediction"]})


def test_bad_input_is_reported(scene):
    _, nucleus, hv, _ = scene
    with pytest.raises(LECLInputError, match="sigmoid"):
        hovernet_postprocess(nucleus[:1], hv)  # one NP channel needs the sigmoid activation
    with pytest.raises(LECLInputError, match="2"):
        hovernet_postprocess(nucleus, hv[:1])
    with pytest.raises(LECLInputError, match="does not match"):
        hovernet_postprocess(nucleus, hv[:, :50])
    with pytest.raises(LECLInputError, match="shape"):
        hovernet_postprocess(nucleus[0], hv)


def test_sigmoid_activation_matches_monai(scene):
    _, nucleus, hv, _ = scene
    logit = nucleus[1:] - nucleus[:1]  # one-channel foreground logit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, reference = HoVerNetInstanceMapPostProcessing(activation="sigmoid")(torch.from_numpy(logit),
                                                                               torch.from_numpy(hv))
    det = hovernet_postprocess(logit, hv, activation="sigmoid")[0]
    np.testing.assert_array_equal(relabel_sequential(np.asarray(reference)[0])[0], det.instances)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_path_agrees_with_cpu(scene):
    _, nucleus, hv, types = scene
    cpu = run(nucleus, hv, types)
    gpu = hovernet_postprocess(*(torch.from_numpy(a).cuda() for a in (nucleus, hv, types)))[0]
    # cuDNN's convolutions round differently from the CPU's, so allow a few pixels on watershed lines
    assert gpu.n == cpu.n and np.mean(gpu.instances == cpu.instances) > 0.999
    np.testing.assert_array_equal(gpu.type, cpu.type)
