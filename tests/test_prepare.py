"""lecl prepare: the output contract, the CLI, and protection of the user's files."""

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from lecl_transforms import LECLInputError, load_datalist, read_points
from lecl_transforms.tools.cli import main
from lecl_transforms.tools.prepare import REMOVED_ORANGE, VORONOI_GREY, entries_from_args, prepare_datalist, qc_image
from lecl_transforms.visualize import CLASS_COLOURS


@pytest.fixture(scope="module")
def prepared(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", "--datalist", str(synth_dir / "datalist.json"), "--out", str(out)]) == 0
    return synth_dir, out


def test_outputs_follow_the_contract(prepared):
    synth_dir, out = prepared
    entries = load_datalist(synth_dir / "datalist.json", "training")
    stem = "synth_000"
    image = tifffile.imread(entries[0]["image"])  # (Z, C, Y, X)
    n_y, n_x = image.shape[-2:]
    for kind in ("emip", "mip"):
        arr = tifffile.imread(out / f"{stem}_{kind}.tif")
        assert arr.shape == (2, n_y, n_x) and arr.dtype == np.float32
    mip = tifffile.imread(out / f"{stem}_mip.tif")
    np.testing.assert_array_equal(mip, image.max(axis=0).astype(np.float32))  # channel 0 nuclei, 1 marker
    emip = tifffile.imread(out / f"{stem}_emip.tif")
    assert (emip <= mip).all()
    labels = tifffile.imread(out / f"{stem}_labels.tif")
    assert labels.shape == (n_y, n_x) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 255}
    instances = tifffile.imread(out / f"{stem}_instances.tif")
    assert instances.shape == (n_y, n_x) and instances.dtype == np.uint16
    np.testing.assert_array_equal(instances > 0, labels == 1)
    with open(out / f"{stem}_nuclei.csv") as f:
        reader = csv.reader(f)
        assert next(reader) == ["id", "z", "y", "x", "label", "z_start", "z_stop"]
        rows = np.array([[int(v) for v in r] for r in reader])
    coords, point_labels = read_points(entries[0]["points"])
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, len(coords) + 1))  # input order, id = instance id
    np.testing.assert_array_equal(rows[:, 1:4], coords)
    np.testing.assert_array_equal(rows[:, 4], point_labels)
    assert (rows[:, 5] <= rows[:, 1]).all() and (rows[:, 1] <= rows[:, 6]).all()
    assert set(np.unique(instances)) - {0} <= set(rows[:, 0])
    qc = np.asarray(Image.open(out / f"{stem}_qc.png").convert("RGB"))
    assert qc.shape[1] == 2 * n_x + 2 and qc.shape[0] > n_y  # two full-resolution panels, a 2 px gap, the header
    header, right = qc[:-n_y], qc[-n_y:, -n_x:]
    assert (header == 24).all(-1).mean() > 0.5 and (header == 255).all(-1).any()  # white text on a dark header
    for colour in (*CLASS_COLOURS.values(), REMOVED_ORANGE, VORONOI_GREY):
        assert (header == colour).all(-1).sum() >= 16  # the legend's swatches
    # the plain MIP panel shows each click in its class colour (the scale bar's corner, bottom right, aside)
    away = (coords[:, 1] < 0.6 * n_y) | (coords[:, 2] < 0.5 * n_x)
    np.testing.assert_array_equal(right[coords[away, 1], coords[away, 2]],
                                  [CLASS_COLOURS[c] for c in point_labels[away]])


def test_qc_image_marks_and_a_large_field_reduced():
    """Hand-built: two Voronoi cells, one nucleus each; nucleus 2's marker is bright in the MIP only (a false overlap
    the EMIP removed): ringed orange in both panels. At max_side 20 the 40 px field is shown at 1/2 scale."""
    mip = np.zeros((2, 40, 40), np.float32)
    mip[0, 5:15, 5:15] = mip[0, 25:35, 25:35] = 100  # nuclei
    mip[1, 5:15, 5:15], mip[1, 25:35, 25:35] = 60, 100  # marker in both cells' MIP...
    emip = mip.copy()
    emip[1, 25:35, 25:35] = 5  # ...but nucleus 2's only from another slice
    cells = np.where(np.add.outer(np.arange(40), np.arange(40)) < 40, 1, 2)[None]
    instances = np.zeros((1, 40, 40), np.int32)
    instances[0, 5:15, 5:15], instances[0, 25:35, 25:35] = 1, 2
    d = {"emip": emip, "mip": mip, "cells": cells, "instances": instances,
         "points": np.array([[0, 10, 10], [0, 30, 30]]), "point_labels": np.array([2, 1])}
    full = qc_image(d, "s", um_per_px=None)
    assert full.shape[1] == 2 * 40 + 2
    left, right = full[-40:, :40], full[-40:, -40:]
    for panel in (left, right):
        assert tuple(panel[10, 10]) == CLASS_COLOURS[2] and tuple(panel[30, 30]) == CLASS_COLOURS[1]
        assert tuple(panel[30, 37]) == REMOVED_ORANGE and tuple(panel[10, 17]) != REMOVED_ORANGE  # ring radius 7
    assert tuple(left[5, 8]) == (255, 255, 255) and tuple(right[5, 8]) != (255, 255, 255)  # pseudo-label outline
    assert tuple(left[19, 20]) == VORONOI_GREY  # the cell edge on the anti-diagonal
    reduced = qc_image(d, "s", um_per_px=None, max_side=20)
    assert reduced.shape[1] == 2 * 20 + 2
    assert tuple(reduced[-20:, :20][5, 5]) == CLASS_COLOURS[2]  # the click at (10, 10) shown at (5, 5)


def test_prepared_datalist_points_to_outputs(prepared):
    synth_dir, out = prepared
    content = json.loads((out / "prepared.json").read_text())
    assert set(content) >= {"training", "validation", "test", "parameters"}
    assert content["parameters"]["rules"]["mask"] == "brightness_groups"
    for e in load_datalist(out / "prepared.json", "training", required=("image", "label", "instances"),
                           file_fields=("image", "label", "instances", "nuclei", "mip", "qc")):
        assert e["image"].endswith("_emip.tif")


def test_single_image_mode_and_paper_rules(synth_dir, tmp_path):
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    out = tmp_path / "one"
    assert main(["prepare", "--image", entry["image"], "--points", entry["points"], "--out", str(out),
                 "--rules", "paper", "--emip-channels", "marker"]) == 0
    emip = tifffile.imread(out / "synth_000_emip.tif")
    mip = tifffile.imread(out / "synth_000_mip.tif")
    np.testing.assert_array_equal(emip[0], mip[0])  # marker-only EMIP keeps the plain MIP of nuclei
    assert json.loads((out / "prepared.json").read_text())["parameters"]["rules"]["mask"] == "not_background"


def test_never_writes_beside_or_over_inputs(synth_dir, tmp_path, capsys):
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    images_dir = str(synth_dir / "images")
    before = sorted(p.name for p in (synth_dir / "images").iterdir())
    assert main(["prepare", "--image", entry["image"], "--points", entry["points"], "--out", images_dir]) == 2
    assert "never writes beside or over your data" in capsys.readouterr().err
    assert sorted(p.name for p in (synth_dir / "images").iterdir()) == before


def test_rerun_needs_overwrite_and_foreign_files_are_kept(synth_dir, tmp_path, capsys):
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    args = ["prepare", "--image", entry["image"], "--points", entry["points"], "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    other = tmp_path / "p"
    other.mkdir()
    (other / "synth_000_qc.png").write_text("my own file")
    assert main(args[:-1] + [str(other), "--overwrite"]) == 2
    assert "holds files lecl did not write" in capsys.readouterr().err
    assert (other / "synth_000_qc.png").read_text() == "my own file"
    # an earlier output of another stack, plus a file of the user's that this run would write
    entry2 = load_datalist(synth_dir / "datalist.json", "validation")[0]
    mixed = tmp_path / "q"
    assert main(["prepare", "--image", entry2["image"], "--points", entry2["points"], "--out", str(mixed)]) == 0
    (mixed / "synth_000_qc.png").write_text("my own file")
    assert main(args[:-1] + [str(mixed), "--overwrite"]) == 2
    assert "was not written by lecl prepare" in capsys.readouterr().err
    assert (mixed / "synth_000_qc.png").read_text() == "my own file"


def test_bad_inputs_give_clear_errors(synth_dir, tmp_path, capsys):
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    out = str(tmp_path / "o")
    assert main(["prepare", "--image", entry["image"], "--points", entry["points"], "--out", out,
                 "--marker-channel", "4"]) == 2
    assert "marker_channel=4, but the image has 2 channels" in capsys.readouterr().err
    bad_points = tmp_path / "bad.csv"
    bad_points.write_text("z,y,x,label\n99,1,1,1\n")
    assert main(["prepare", "--image", entry["image"], "--points", str(bad_points), "--out", out]) == 2
    assert "bad.csv, line 2" in capsys.readouterr().err
    assert main(["prepare", "--image", entry["image"], "--out", out]) == 2
    assert "--datalist DATALIST, or --image STACK --points CSV" in capsys.readouterr().err
    with pytest.raises(LECLInputError, match="both --datalist and --image"):
        entries_from_args("x.json", entry["image"], None)


def test_datalist_entries_without_points_are_skipped_and_duplicate_names_refused(synth_dir, tmp_path):
    entries = load_datalist(synth_dir / "datalist.json", "training")
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": entries[0]["image"], "points": entries[0]["points"]}],
                              "test": [{"image": entries[0]["image"]}]}))
    found = entries_from_args(str(dl), None, None)
    assert list(found) == ["training"] and len(found["training"]) == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(entries[0]["image"], copy / "synth_000.tif")
    with pytest.raises(LECLInputError, match="same name 'synth_000'"):
        prepare_datalist({"training": [entries[0], {"image": str(copy / "synth_000.tif"),
                                                   "points": entries[0]["points"]}]}, tmp_path / "out",
                         progress=False)


def _copied_set(synth_dir, folder):
    """Own copies of the 3 stacks (one per section) and a datalist, so one stack can be spoiled."""
    content = json.loads((synth_dir / "datalist.json").read_text())
    for sub in ("images", "points"):
        shutil.copytree(synth_dir / sub, folder / sub)
    dl = folder / "datalist.json"
    dl.write_text(json.dumps({k: [{"image": e["image"], "points": e["points"]} for e in content[k]]
                              for k in ("training", "validation", "test")}))
    return dl


def test_one_bad_stack_does_not_stop_the_batch(synth_dir, tmp_path, capsys):
    dl = _copied_set(synth_dir, tmp_path / "data")
    bad = tmp_path / "data" / "images" / "synth_001.tif"
    good = bad.read_bytes()
    bad.write_bytes(b"II*\x00 not really a TIFF")
    out = tmp_path / "out"
    assert main(["prepare", "--datalist", str(dl), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 stacks could not be prepared" in err and "synth_001.tif" in err and "not a readable TIFF" in err
    assert "Fix: " in err and "Traceback" not in err
    content = json.loads((out / "prepared.json").read_text())
    listed = [e["image"] for k in ("training", "validation", "test") for e in content[k]]
    assert listed == ["synth_000_emip.tif", "synth_002_emip.tif"]
    assert (out / "synth_002_qc.png").is_file() and not list(out.glob("synth_001_*"))
    bad.write_bytes(good)  # once fixed, a rerun with --overwrite completes the set
    assert main(["prepare", "--datalist", str(dl), "--out", str(out), "--overwrite"]) == 0
    content = json.loads((out / "prepared.json").read_text())
    assert sum(len(content[k]) for k in ("training", "validation", "test")) == 3


def test_every_stack_failing_leaves_no_output_folder(synth_dir, tmp_path, capsys):
    dl = _copied_set(synth_dir, tmp_path / "data")
    for image in (tmp_path / "data" / "images").iterdir():
        image.write_bytes(b"garbage")
    assert main(["prepare", "--datalist", str(dl), "--out", str(tmp_path / "out")]) == 2
    assert "3 of 3 stacks could not be prepared" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_effective_spacing_is_recorded_per_stack(prepared, synth_dir, tmp_path):
    _, out = prepared
    content = json.loads((out / "prepared.json").read_text())
    assert "spacing" not in content["parameters"]  # nothing claims a spacing the files did not have
    assert content["parameters"]["spacing_given"] is None
    for e in content["training"] + content["validation"]:
        assert e["spacing"] == [1.0, 0.5, 0.5] and e["spacing_source"] == "file"  # the synthetic files' own
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    one = tmp_path / "one"
    assert main(["prepare", "--image", entry["image"], "--points", entry["points"], "--out", str(one),
                 "--spacing", "3", "0.5", "0.5", "--override-spacing"]) == 0
    content = json.loads((one / "prepared.json").read_text())
    assert content["training"][0]["spacing"] == [3.0, 0.5, 0.5]
    assert content["parameters"]["spacing_given"] == [3.0, 0.5, 0.5] and content["parameters"]["override_spacing"]


def test_flags_reach_the_pipeline(synth_dir, tmp_path, monkeypatch):
    import lecl_transforms.tools.prepare as prepare

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    real = prepare.pseudo_label_transforms
    monkeypatch.setattr(prepare, "pseudo_label_transforms", recording)
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    base = ["prepare", "--image", entry["image"], "--points", entry["points"]]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert seen[-1]["allow_suspicious_input"] is False and seen[-1]["override_spacing"] is False
    assert main(base + ["--out", str(tmp_path / "b"), "--allow-suspicious-input"]) == 0
    assert seen[-1]["allow_suspicious_input"] is True
    assert json.loads((tmp_path / "b" / "prepared.json").read_text())["parameters"]["allow_suspicious_input"]


def test_two_stacks_with_one_name_are_refused_before_any_output():
    """Outputs are named after the stack: ``a/x.tif`` and ``b/x.nii.gz`` would write the same files."""
    from lecl_transforms import LECLInputError
    from lecl_transforms.utils import unique_stems

    assert unique_stems(["d/a.ome.tif", "d/b.nii.gz", "d/c.tiff"]) == ["a", "b", "c"]
    with pytest.raises(LECLInputError, match="same name 'x' as a/x.tif"):
        unique_stems(["a/x.tif", "b/x.nii.gz"])
