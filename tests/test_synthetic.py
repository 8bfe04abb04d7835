"""The synthetic generator's ground truth is self-consistent, in both regimes, and deterministic."""

import csv
import hashlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from lecl_transforms import (REGIMES, LECLInputError, generate_stack, load_datalist, read_points, read_stack,
                             write_dataset)
from lecl_transforms.tools.cli import main
from lecl_transforms.visualize import CLASS_COLOURS


@pytest.fixture(params=["clean", "dense"])
def stack(request, clean_stack, dense_stack):
    return {"clean": clean_stack, "dense": dense_stack}[request.param]


def test_every_point_lies_inside_its_nucleus_on_its_centre_slice(stack):
    for n in stack.nuclei:
        assert n["z"] == n["centre_z"]
        assert stack.instances[n["z"], n["y"], n["x"]] == n["id"]
        assert n["z_start"] <= n["z"] <= n["z_stop"]
    # the centre slice is the nucleus' largest cross-section
    for n in stack.nuclei[:20]:
        areas = (stack.instances == n["id"]).sum(axis=(1, 2))
        assert areas[n["z"]] == areas.max()


def test_z_ranges_match_instances(stack):
    for n in stack.nuclei:
        zs = np.flatnonzero((stack.instances == n["id"]).any(axis=(1, 2)))
        assert (zs.min(), zs.max()) == (n["z_start"], n["z_stop"])


def test_positives_overlap_marker_in_some_but_not_all_own_slices(stack):
    positives = [n for n in stack.nuclei if n["label"] == 2]
    assert len(positives) > 5
    for n in positives:
        own = stack.instances == n["id"]
        per_slice = (own & stack.marker_mask).sum(axis=(1, 2))[n["z_start"]:n["z_stop"] + 1]
        assert (per_slice > 0).any() and not (per_slice > 0).all(), n


def test_negatives_never_overlap_the_marker(stack):
    for n in stack.nuclei:
        if n["label"] == 1:
            assert not (stack.marker_mask & (stack.instances == n["id"])).any(), n


def test_decoys_lie_outside_the_z_range_yet_overlap_in_plain_mip(stack):
    decoys = [n for n in stack.nuclei if n["decoy"]]
    assert len(decoys) > 5
    mip_marker = stack.marker_mask.any(axis=0)
    for n in decoys:
        assert n["label"] == 1
        lo, hi = n["marker_z_start"], n["marker_z_stop"]
        assert hi < n["z_start"] or lo > n["z_stop"], n
        footprint = (stack.instances == n["id"]).any(axis=0)
        # in the decoy's own slices the marker covers most of the footprint: plain MIP makes it look positive
        assert (stack.marker_mask[lo:hi + 1].any(axis=0) & footprint).sum() > 0.5 * footprint.sum()
        assert (mip_marker & footprint).any()


def test_dense_regime_is_dense_hazy_and_anisotropic(dense_stack, clean_stack):
    cfg = dense_stack.config
    assert cfg.anisotropy >= 4 and cfg.haze > 0
    assert dense_stack.spacing[0] / dense_stack.spacing[2] == pytest.approx(cfg.anisotropy)
    cover = (dense_stack.instances > 0).mean(axis=(1, 2))
    assert cover.max() > 0.5  # nuclei cover most of the middle slices
    assert (clean_stack.instances > 0).mean(axis=(1, 2)).max() < 0.2
    # haze: the nuclei channel just above/below nuclei is well above the far background
    img = dense_stack.image[0].astype(float)
    inside = dense_stack.instances > 0
    near = np.zeros_like(inside)
    near[1:] |= inside[:-1]
    near[:-1] |= inside[1:]
    near &= ~inside
    far_slices = cover < 0.01
    assert img[near].mean() - img[far_slices].mean() > 0.3 * (img[inside].mean() - img[far_slices].mean())


def test_image_shape_and_z_range(clean_stack):
    n_z = clean_stack.instances.shape[0]
    assert 8 <= n_z <= 13
    assert clean_stack.image.shape == (2, n_z, 256, 256)
    assert clean_stack.image.dtype == np.uint16


def test_same_seed_same_stack_and_index_independent():
    cfg = replace(REGIMES["clean"], size_yx=64)
    a, b = generate_stack(cfg, 3, 1), generate_stack(cfg, 3, 1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, generate_stack(cfg, 4, 1).image)


def test_annotator_errors():
    cfg = replace(REGIMES["clean"], size_yx=128, density=0.01, point_jitter_px=1.5, z_click_error=0.3,
                  missed_click_rate=0.3)
    s = generate_stack(cfg, 0, 0)
    annotated = [n for n in s.nuclei if n["annotated"]]
    assert 0.5 < len(annotated) / len(s.nuclei) < 0.9
    assert len(s.points()) == len(annotated)
    moved = sum((n["y"], n["x"]) != (n["centre_y"], n["centre_x"]) for n in s.nuclei)
    off_slice = sum(n["z"] != n["centre_z"] for n in s.nuclei)
    assert moved > 0.3 * len(s.nuclei) and off_slice > 0.1 * len(s.nuclei)
    for n in s.nuclei:  # every click still lies inside its own nucleus
        assert s.instances[n["z"], n["y"], n["x"]] == n["id"]


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("regime", ["clean", "dense"])
def test_clicked_nuclei_are_visible_at_small_sizes(regime, size):
    """Every stack shows the nuclei its ground truth lists. At a click (3x3 mean on its slice, camera offset removed)
    a nucleus gives >= 0.6 brightness x ~0.8 texture/shape x photons: >= 6x the background level (0.06-0.08 x
    photons) and far above the read noise. Asking for 3x the median background and 5x the read noise leaves room for
    the illumination field (sd 0.15) and Poisson noise; an illumination field far from 1 (the small-size bug: its
    mean was scaled up with its sd) fails it. 24 stacks per case; the bug hit 4 of these 24 at 64 px."""
    from scipy import ndimage

    cfg = replace(REGIMES[regime], size_yx=size)
    for seed in range(3):
        for index in range(8):
            s = generate_stack(cfg, seed, index)
            image = s.image[0].astype(float) - cfg.camera_offset
            z, y, x = s.points()[:, :3].T
            at_clicks = ndimage.uniform_filter(image, (1, 3, 3))[z, y, x]
            background = np.median(image[s.instances == 0])
            visible = at_clicks > max(3 * background, 5 * cfg.read_noise)
            assert visible.mean() >= 0.9, (seed, index, visible.mean(), background)


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dataset_files_are_deterministic_and_readable(tmp_path):
    cfg = replace(REGIMES["clean"], size_yx=64)
    write_dataset(tmp_path / "a", 3, seed=5, cfg=cfg)
    write_dataset(tmp_path / "b", 3, seed=5, cfg=cfg)
    write_dataset(tmp_path / "c", 3, seed=6, cfg=cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    entries = load_datalist(tmp_path / "a" / "datalist.json", "training")
    image, meta = read_stack(entries[0]["image"])
    np.testing.assert_allclose(meta["spacing"], cfg.spacing())
    coords, labels = read_points(entries[0]["points"], image.shape[1:])
    truth = generate_stack(cfg, 5, 0)
    np.testing.assert_array_equal(image, truth.image.astype(np.float32))
    np.testing.assert_array_equal(np.column_stack([coords, labels]), truth.points())


def test_write_dataset_protects_existing_files(tmp_path):
    cfg = replace(REGIMES["clean"], size_yx=48)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my data")
    with pytest.raises(LECLInputError, match="did not write"):
        write_dataset(tmp_path / "mine", 1, cfg=cfg)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my data"
    write_dataset(tmp_path / "set", 1, cfg=cfg)
    with pytest.raises(LECLInputError, match="--overwrite"):
        write_dataset(tmp_path / "set", 1, cfg=cfg)
    write_dataset(tmp_path / "set", 1, cfg=cfg, overwrite=True)


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--n-images", "3", "--size", "64", "--regime", "dense"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 stacks" in out and "synth_000 and synth_002" in out
    # preview.png: the first (training) and last (test) stack side by side under a header, their true centres dotted
    preview = np.asarray(Image.open(tmp_path / "d" / "preview.png").convert("RGB"))
    assert preview.shape[1] == 2 * 64 + 2 and preview.shape[0] > 64
    assert (preview[:-64] == 24).all(-1).mean() > 0.5
    for panel, stem in ((preview[-64:, :64], "synth_000"), (preview[-64:, -64:], "synth_002")):
        with open(tmp_path / "d" / "ground_truth" / f"{stem}_nuclei.csv") as f:
            rows = [r for r in csv.DictReader(f) if int(r["y"]) < 36]  # above the scale bar's corner
        assert rows and all(tuple(panel[int(r["y"]), int(r["x"])]) == CLASS_COLOURS[int(r["label"])] for r in rows)
    sections = [len(load_datalist(tmp_path / "d" / "datalist.json", s)) for s in ("training", "validation", "test")]
    assert sections == [1, 1, 1]
    assert main(["synth", "--out", str(tmp_path / "e"), "--regime", "foggy"]) == 2
    assert "unknown regime 'foggy'" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "e"), "--haze", "2"]) == 2
    assert "--haze" in capsys.readouterr().err


def test_click_jitter_acts_and_keeps_clicks_on_their_nucleus():
    """--jitter moves clicks (a jitter of half the nucleus radius moves most, some onto the nucleus' rim) and never
    off their own nucleus; the same seed without jitter clicks the centres."""
    base = replace(REGIMES["clean"], size_yx=128, density=0.01)
    still = generate_stack(base, 0, 0)
    assert all((n["y"], n["x"]) == (n["centre_y"], n["centre_x"]) for n in still.nuclei)
    shaken = generate_stack(replace(base, point_jitter_px=8.0), 0, 0)
    offsets = np.array([np.hypot(n["y"] - n["centre_y"], n["x"] - n["centre_x"]) for n in shaken.nuclei])
    assert (offsets > 0).mean() > 0.8 and offsets.max() >= 4
    for n in shaken.nuclei:
        assert shaken.instances[n["z"], n["y"], n["x"]] == n["id"]
    # an x/y error of 8 px (sd) lands off most nuclei (radius 6-10 px): those clicks sit on the nucleus' rim
    rim = [n for n in shaken.nuclei if offsets[shaken.nuclei.index(n)] >= 4]
    on_rim = [(shaken.instances[n["z"], n["y"] - 1:n["y"] + 2, n["x"] - 1:n["x"] + 2] != n["id"]).any() for n in rim]
    assert np.mean(on_rim) > 0.5


def test_jitter_wider_than_a_nucleus_is_refused(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--jitter", "1000"]) == 2
    err = capsys.readouterr().err
    assert "--jitter" in err and "largest nucleus radius (10.1 px" in err and "Fix: " in err
    assert not (tmp_path / "d").exists()
