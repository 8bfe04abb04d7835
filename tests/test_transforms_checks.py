"""Suspicious input stops with a clear message unless allowed; outputs keep the image's metadata; one key per output.

Every pipeline case runs on two small clean synthetic stacks (96 x 96) written once for the module."""

import csv
import logging
from dataclasses import replace

import numpy as np
import pytest
import tifffile
from monai.data import MetaTensor

from conftest import make_czyx

from lecl_transforms import LECLInputError, REGIMES, load_datalist, write_dataset
from lecl_transforms.errors import find_input_error
from lecl_transforms.transforms import (
    ChannelOrderCheck,
    ClickPlacementCheck,
    NucleiMarkerChannels,
    SliceSetCheck,
    check_channel_indices,
    pseudo_label_transforms,
)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    out = tmp_path_factory.mktemp("checks") / "data"
    write_dataset(out, n_images=2, seed=3, cfg=replace(REGIMES["clean"], size_yx=96))
    return out, load_datalist(out / "datalist.json", "training") + load_datalist(out / "datalist.json", "validation")


def _input_error(run) -> LECLInputError:
    """The LECLInputError behind a pipeline failure (MONAI's Compose wraps it in a RuntimeError)."""
    with pytest.raises(Exception) as caught:
        run()
    found = find_input_error(caught.value)
    assert found is not None, repr(caught.value)
    return found


def _write_points(path, entry, transform):
    with open(entry["points"]) as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["z", "y", "x", "label"])
        for r in rows:
            w.writerow([*transform(int(r["z"]), int(r["y"]), int(r["x"])), r["label"]])
    return str(path)


def _write_stack(path, czyx, spacing=(1.0, 0.5, 0.5)):
    dz, dy, dx = spacing
    tifffile.imwrite(path, np.ascontiguousarray(czyx.transpose(1, 0, 2, 3)), imagej=True, resolution=(1 / dx, 1 / dy),
                     metadata={"axes": "ZCYX", "spacing": dz, "unit": "um"})
    return str(path)


# -- correct data passes, and keeps its metadata ---------------------------------------------------------------------
def test_correct_stacks_pass_and_outputs_carry_the_image_metadata(stacks):
    _, entries = stacks
    for e in entries:
        d = pseudo_label_transforms(keep_intermediate=True)({"image": e["image"], "points": e["points"]})
        for key in ("point_distance", "nuclei_mask"):
            assert isinstance(d[key], MetaTensor) and d[key].shape[1:] == d["image"].shape[1:]
            np.testing.assert_allclose(d[key].meta["spacing"], REGIMES["clean"].spacing())
        for key in ("emip", "mip", "cells", "label", "instances"):
            out = d[key]
            assert isinstance(out, MetaTensor), key
            assert out.meta["filename_or_obj"] == e["image"], key
            np.testing.assert_allclose(out.meta["spacing"], REGIMES["clean"].spacing()[1:])  # (dy, dx)
            np.testing.assert_allclose(out.meta["spacing_zyx"], REGIMES["clean"].spacing())
            np.testing.assert_allclose(out.pixdim, [0.5, 0.5])
        agreement = d["nuclei_mask"].meta["cluster_agreement"]
        assert agreement["on_nuclei_cluster"] == agreement["points"] == len(d["points"])


def test_dictionary_twins_with_one_output_take_one_key():
    from lecl_transforms.transforms import (
        ExtendedMIPd,
        HoVerNetTargetsd,
        MaxIntensityProjectiond,
        NucleiMask3Dd,
        PointDistanceMapd,
        SliceSetsd,
        ThreeRegionLabeld,
        VoronoiCellsd,
    )

    for twin in (PointDistanceMapd, NucleiMask3Dd, VoronoiCellsd, SliceSetsd, ExtendedMIPd, MaxIntensityProjectiond,
                 ThreeRegionLabeld, HoVerNetTargetsd):
        with pytest.raises(LECLInputError, match=r"keys \['a', 'b'\] would all write"):
            twin(["a", "b"])
        twin("a")


# -- channels -------------------------------------------------------------------------------------------------------
def test_negative_channel_indices_are_resolved_before_comparing():
    data = make_czyx((2, 4, 8, 8))
    assert check_channel_indices(2, -1, 0, "a.tif") == (1, 0)
    np.testing.assert_array_equal(NucleiMarkerChannels(-1, 0)(data), data[[1, 0]])
    with pytest.raises(LECLInputError, match="nuclei_channel=-1 and marker_channel=1 both select channel 1"):
        NucleiMarkerChannels(-1, 1)(data)
    with pytest.raises(LECLInputError, match=r"marker_channel=-3, but the image has 2 channels \(0..1\)"):
        check_channel_indices(2, 0, -3, "a.tif")


def test_identical_channels_are_refused_unless_allowed(stacks, tmp_path, caplog):
    _, entries = stacks
    image = tifffile.imread(entries[0]["image"]).transpose(1, 0, 2, 3)  # (C, Z, Y, X)
    twin = _write_stack(tmp_path / "twin.tif", np.stack([image[0], image[0]]))
    err = _input_error(lambda: pseudo_label_transforms()({"image": twin, "points": entries[0]["points"]}))
    assert "hold the same image (identical data)" in err.problem and "twin.tif" in err.where
    assert "--allow-suspicious-input" in err.fix
    with caplog.at_level(logging.WARNING):
        NucleiMarkerChannels(0, 1, allow_suspicious_input=True)(np.stack([image[0], image[0]]))
    assert "hold the same image" in caplog.text


@pytest.mark.parametrize("photons", [250, 30, 8])
@pytest.mark.parametrize("regime", ["clean", "dense"])
def test_nuclei_channel_of_pixel_noise_is_refused_and_real_stacks_pass(regime, photons, caplog):
    """Neighbouring voxels of a stack with nuclei correlate (~0.1 down to 8 photons per voxel at full intensity,
    a very noisy stack); those of a channel holding only noise (a wrong index of a 5-channel stack) do not."""
    from lecl_transforms import generate_stack
    from lecl_transforms.transforms.checks import neighbour_correlation

    stack = generate_stack(replace(REGIMES[regime], size_yx=96, photons=photons), 0, 0).image
    assert neighbour_correlation(stack[0]) > 0.08  # the threshold is 0.05
    np.testing.assert_array_equal(NucleiMarkerChannels(0, 1)(stack), stack)
    noise = np.random.default_rng(0).poisson(120, stack.shape[1:]).astype(np.uint16)
    assert abs(neighbour_correlation(noise)) < 0.02
    err = _input_error(lambda: NucleiMarkerChannels(2, 1)(np.stack([*stack, noise])))
    assert "(config: nuclei_channel)" in err.where and "looks like pixel noise" in err.problem
    assert "--nuclei-channel" in err.fix and "--allow-suspicious-input" in err.fix
    with caplog.at_level(logging.WARNING):
        NucleiMarkerChannels(2, 1, allow_suspicious_input=True)(np.stack([*stack, noise]))
    assert "looks like pixel noise" in caplog.text
    NucleiMarkerChannels(0, 2)(np.stack([*stack, noise]))  # a marker channel without any positive is valid


@pytest.mark.parametrize("grain", [1.0, 2.0, 4.0])
def test_nuclei_channel_of_smooth_noise_is_refused_and_textured_dim_stacks_show_objects(grain):
    """Noise with a grain (and an illumination gradient) correlates between neighbours but nothing in it stands out
    of its background; every real-looking nuclei channel (textured, dim, 8/16 bit, clean/dense, 8 photons) does."""
    from scipy import ndimage

    from lecl_transforms import generate_stack
    from lecl_transforms.transforms import functional as F
    from lecl_transforms.transforms.checks import neighbour_correlation, shows_objects

    stack = generate_stack(replace(REGIMES["clean"], size_yx=96), 0, 0).image
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.poisson(120, stack.shape[1:]).astype(np.float32), (0, grain, grain))
    noise = np.rint(noise + np.linspace(0, 3 * noise.std(), noise.shape[-1])).astype(np.uint16)
    assert neighbour_correlation(noise) > 0.5 and F.structure_fraction(F.sample_slices(noise)) < 1e-3
    err = _input_error(lambda: NucleiMarkerChannels(2, 1)(np.stack([*stack, noise])))
    assert "channel 2) looks like noise with no objects" in err.problem
    assert "of the stack's 3 channels (0..2), those showing objects: 0, 1" in err.problem
    NucleiMarkerChannels(0, 2)(np.stack([*stack, noise]))  # an empty marker is valid
    for regime in ("clean", "dense"):
        for bits, contrast, photons in [(16, 1.0, 200), (8, 0.15, 200), (16, 0.3, 60)]:
            assert shows_objects(_textured(regime, bits, contrast, photons)[0][0])[0]
        assert shows_objects(generate_stack(replace(REGIMES[regime], size_yx=96, photons=8), 0, 0).image[0])[0]


# -- clicks on the nuclei --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["swapped_channels", "xy_swapped", "micrometres"])
def test_clicks_off_the_nuclei_or_swapped_channels_stop_unless_allowed(stacks, tmp_path, case):
    _, entries = stacks
    entry = entries[0]
    channels, points = (0, 1), entry["points"]
    if case == "swapped_channels":
        channels = (1, 0)
    elif case == "xy_swapped":  # the image is square: every swapped click still lies inside it
        points = _write_points(tmp_path / "xy.csv", entry, lambda z, y, x: (z, x, y))
    else:  # y, x given in micrometres of 0.5 um pixels (z-step of 1 um: z unchanged)
        points = _write_points(tmp_path / "um.csv", entry, lambda z, y, x: (z, y // 2, x // 2))
    data = {"image": entry["image"], "points": points}
    err = _input_error(lambda: pseudo_label_transforms(*channels)(dict(data)))
    expected = {"swapped_channels": "channels look swapped", "xy_swapped": "clicks look x and y swapped",
                "micrometres": "clicks look in micrometres, not pixels"}[case]
    assert expected in err.problem and "synth_000.tif" in err.where
    assert "z,y,x" in err.fix and "0-based voxel indices" in err.fix and "--nuclei-channel" in err.fix
    assert "allow_suspicious_input=true" in err.fix
    d = pseudo_label_transforms(*channels, allow_suspicious_input=True)(dict(data))
    assert d["emip"].shape == (2, 96, 96)


def test_click_check_judges_the_kmeans_agreement():
    image = np.zeros((2, 2, 8, 8), np.float32)
    points = np.array([[0, 1, 1]])
    check = ClickPlacementCheck(min_points=5)  # one click: too few for the intensity test, the agreement counts
    fine = {"points": 10, "on_nuclei_cluster": 9}
    assert check.problems(image, points, [fine]) == []
    found = check.problems(image, points, [{"points": 10, "on_nuclei_cluster": 3, "where": "3D k-means"}])
    assert found == ["3D k-means: only 3 of 10 clicks fall on the nuclei cluster"]


def _textured(regime, bits=16, contrast=1.0, photons=200.0, size=128, seed=0):
    """A stack whose nuclei look like real confocal DAPI: bright chromocentre spots on a dim nucleoplasm whose centre
    (the nucleolus) is darker still; background 0.12, nuclei ``contrast`` x (0.05-0.35 nucleoplasm, spots up to
    ~1.5); ``bits`` 8 rescales both channels to 0-255. Returns ``(czyx, clicks (N, 3), spacing)``."""
    from scipy import ndimage

    from lecl_transforms import generate_stack

    s = generate_stack(replace(REGIMES[regime], size_yx=size), seed, 0)
    rng = np.random.default_rng(seed)
    inst = s.instances
    n = int(inst.max())
    inside = ndimage.distance_transform_edt(inst > 0, sampling=(s.spacing[0] / s.spacing[1], 1, 1))
    peak = np.concatenate([[1.0], np.maximum(ndimage.maximum(inside, inst, np.arange(1, n + 1)), 1e-6)])
    depth = inside / peak[inst]  # 0 at a nucleus' rim, 1 at its centre
    nucleoplasm = 0.35 * (inst > 0) * (1 - 0.6 * depth**3)
    spots = (rng.random(inst.shape) < 0.02) & (inst > 0) & (depth < 0.7)
    chromocentres = ndimage.gaussian_filter(spots.astype(np.float32), (0.5, 1.0, 1.0)) * 12
    signal = 0.12 + contrast * ndimage.gaussian_filter(nucleoplasm + chromocentres, (0.6, 0.7, 0.7))
    nuclei = rng.poisson(signal * photons).astype(np.float32) + rng.normal(10, 2, inst.shape)
    image = np.stack([nuclei, s.image[1].astype(np.float32)])
    if bits == 8:
        image = np.rint(image * 255 / image.max(axis=(1, 2, 3), keepdims=True))
    image = np.clip(image, 0, 255 if bits == 8 else 65535).astype(np.uint8 if bits == 8 else np.uint16)
    clicks = np.array([[p["z"], p["y"], p["x"]] for p in s.nuclei if p["annotated"]])
    return image, clicks, s.spacing


def _write_case(tmp_path, name, image, clicks, spacing):
    points = tmp_path / f"{name}.csv"
    points.write_text("z,y,x,label\n" + "".join(f"{z},{y},{x},1\n" for z, y, x in clicks))
    return {"image": _write_stack(tmp_path / f"{name}.tif", image, spacing), "points": str(points)}


@pytest.mark.parametrize("regime", ["clean", "dense"])
@pytest.mark.parametrize("bits, contrast, photons", [(16, 1.0, 200), (8, 1.0, 200), (16, 0.3, 60), (8, 0.15, 200)])
def test_textured_dim_and_8_bit_stacks_pass_the_click_checks(tmp_path, regime, bits, contrast, photons):
    """Real confocal nuclei (bright chromocentres, dim centres), dim and low-contrast stacks, 8 and 16 bit: the
    whole pseudo-label pipeline (both k-means steps and every check) runs without a finding. The former rules (the
    click cluster the brightest of the k-means; clicks brighter than 60 % of their slice) refused the dense ones."""
    image, clicks, spacing = _textured(regime, bits, contrast, photons)
    d = pseudo_label_transforms()(_write_case(tmp_path, "t", image, clicks, spacing))
    assert len(d["points"]) == len(clicks) and d["emip"].shape == (2, 128, 128)
    assert ClickPlacementCheck().problems(image.astype(np.float32), clicks) == []


@pytest.mark.parametrize("regime", ["clean", "dense"])
@pytest.mark.parametrize("case, expected", [("swapped_channels", "channels look swapped"),
                                            ("xy_swapped", "clicks look x and y swapped"),
                                            ("micrometres", "clicks look in micrometres, not pixels")])
def test_textured_dim_stacks_still_catch_wrong_channels_and_clicks(tmp_path, regime, case, expected):
    image, clicks, spacing = _textured(regime, bits=8, contrast=0.3, photons=60)
    if case == "swapped_channels":
        image = image[::-1]
    elif case == "xy_swapped":
        clicks = clicks[:, [0, 2, 1]]
    else:  # y, x in micrometres of 0.5 um pixels
        clicks = np.stack([clicks[:, 0], clicks[:, 1] // 2, clicks[:, 2] // 2], axis=1)
    err = _input_error(lambda: pseudo_label_transforms()(_write_case(tmp_path, "t", image, clicks, spacing)))
    assert expected in err.problem and "t.tif" in err.where and "--allow-suspicious-input" in err.fix


# -- the channel order from the image alone (lecl predict on stacks without clicks) ---------------------------------
def _with_marker(regime, kind, fraction, seed=0):
    """A synthetic stack (128 px) whose marker is another real kind: ``cytoplasm`` (a 6 um territory around each
    positive nucleus, not the nucleus), ``cell`` (territory and nucleus, as a reporter that fills the cell) or
    ``nucleus`` (exactly the positive nuclei, as a nuclear marker), on ``fraction`` of the cells."""
    from scipy import ndimage

    from lecl_transforms import generate_stack

    s = generate_stack(replace(REGIMES[regime], size_yx=128), seed, 0)
    rng = np.random.default_rng(seed)
    inst = s.instances
    positive = np.concatenate([[False], rng.random(int(inst.max())) < fraction])
    dist, nearest = ndimage.distance_transform_edt(inst == 0, sampling=(s.spacing[0] / s.spacing[1], 1, 1),
                                                   return_indices=True)
    cytoplasm = (inst == 0) & (dist < 12) & positive[inst[tuple(nearest)]]
    nucleus = positive[inst] & (inst > 0)
    mask = {"cytoplasm": cytoplasm, "cell": cytoplasm | nucleus, "nucleus": nucleus}[kind]
    signal = ndimage.gaussian_filter(mask.astype(np.float32) * 0.8, (0.6, 0.5, 0.5)) + 0.05
    marker = rng.poisson(signal * 200).astype(np.float32) + 100
    return np.stack([s.image[0].astype(np.float32), marker])


@pytest.mark.parametrize("regime", ["clean", "dense"])
@pytest.mark.parametrize("bits, contrast, photons", [(16, 1.0, 200), (8, 1.0, 200), (16, 0.3, 60), (8, 0.15, 200)])
def test_channel_order_from_the_image_passes_real_looking_stacks_and_catches_swapped_ones(regime, bits, contrast,
                                                                                          photons):
    """Without clicks: textured nuclei (chromocentres, dim centres), dim and low-contrast, 8 and 16 bit, clean and
    dense: the right order passes, the swapped order is caught (the marker looks like the nuclear stain)."""
    image, _, _ = _textured(regime, bits, contrast, photons)
    check = ChannelOrderCheck()
    assert check.problems(image) == []
    found = check.problems(image[::-1])
    assert len(found) == 1 and "channels look swapped (judged from the image, no clicks)" in found[0]


@pytest.mark.parametrize("regime", ["clean", "dense"])
@pytest.mark.parametrize("seed", [0, 1])
def test_channel_order_from_the_image_on_the_synthetic_regimes(regime, seed):
    from lecl_transforms import generate_stack

    image = generate_stack(replace(REGIMES[regime], size_yx=128), seed, 0).image
    assert ChannelOrderCheck().problems(image) == []
    assert ChannelOrderCheck().problems(image[::-1])


@pytest.mark.parametrize("regime", ["clean", "dense"])
@pytest.mark.parametrize("kind", ["cytoplasm", "cell", "nucleus"])
@pytest.mark.parametrize("fraction", [0.4, 0.9])
def test_channel_order_from_the_image_passes_markers_of_cytoplasm_whole_cells_or_nuclei(regime, kind, fraction):
    """A marker that fills whole cells also holds the nuclei (the nuclei channel lies on it), but its structures are
    larger: not taken for swapped channels; nor cytoplasm, nor a nuclear marker on most cells."""
    assert ChannelOrderCheck().problems(_with_marker(regime, kind, fraction)) == []


def test_channel_order_from_the_image_skips_an_empty_marker_and_unrelated_channels(caplog):
    """A marker of camera noise only (no positive nucleus) and two channels of unrelated random blobs are no reading
    or no finding; with allow_suspicious_input a swapped stack is a warning and passes unchanged."""
    from lecl_transforms import generate_stack

    image = generate_stack(replace(REGIMES["clean"], size_yx=128), 0, 0).image
    empty = np.stack([image[0], np.random.default_rng(0).poisson(100, image[1].shape).astype(np.uint16)])
    assert ChannelOrderCheck().statistics(empty) is None and ChannelOrderCheck().problems(empty[::-1]) == []
    assert all(ChannelOrderCheck().problems(make_czyx((2, 5, 64, 64), seed)) == [] for seed in range(10))
    with caplog.at_level(logging.WARNING):
        out = ChannelOrderCheck(allow_suspicious_input=True)(image[::-1], source="s.tif")
    assert out is not None and np.array_equal(out, image[::-1])
    assert "s.tif (config: nuclei_channel / marker_channel)" in caplog.text and "look swapped" in caplog.text
    err = _input_error(lambda: ChannelOrderCheck()(image[::-1], source="s.tif"))
    assert "--nuclei-channel/--marker-channel" in err.fix and "--allow-suspicious-input" in err.fix


# -- slice sets --------------------------------------------------------------------------------------------------------
def test_whole_stack_slice_sets_stop_with_robust_rules_and_warn_with_paper_rules(stacks, tmp_path, caplog):
    _, entries = stacks
    image = tifffile.imread(entries[0]["image"]).transpose(1, 0, 2, 3)
    flat = _write_stack(tmp_path / "copies.tif", np.repeat(image.max(axis=1, keepdims=True), image.shape[1], axis=1))
    data = {"image": flat, "points": entries[0]["points"]}  # every slice a copy of one image: no z information
    err = _input_error(lambda: pseudo_label_transforms()(dict(data)))
    assert "get slice sets covering all" in err.problem and "plain MIP" in err.problem
    assert "z column" in err.fix and "spacing" in err.fix
    with caplog.at_level(logging.WARNING):
        pseudo_label_transforms(rules="paper")(dict(data))
        assert "covering all" in caplog.text
        caplog.clear()
        pseudo_label_transforms(allow_suspicious_input=True)(dict(data))
        assert "covering all" in caplog.text


def test_slice_set_check_on_hand_made_sets():
    sets = np.ones((4, 6), bool)
    sets[:2, 0] = False  # 2 of 4 full: not more than half
    SliceSetCheck()(sets)
    sets[1, 0] = True
    with pytest.raises(LECLInputError, match="3 of 4 nuclei"):
        SliceSetCheck()(sets)
    SliceSetCheck()(np.ones((4, 3), bool))  # fewer than 4 slices: a short stack may hold nuclei through all


def test_override_spacing_reaches_the_reader(stacks):
    _, entries = stacks
    d = pseudo_label_transforms(spacing=(3.0, 0.5, 0.5), override_spacing=True)(
        {"image": entries[0]["image"], "points": entries[0]["points"]})
    np.testing.assert_allclose(d["image"].meta["spacing"], (3.0, 0.5, 0.5))
