"""Through the real ``lecl`` command: every wrong option or output folder is one short message naming the option or
file and the fix (exit 2, no traceback), and nothing the user had is replaced or half-written."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from lecl_transforms.data import REGIMES
from lecl_transforms.tools.cli import main

SMALL = ["--size", "64", "--n-images", "1"]


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv, *expected):
    """Run ``lecl argv``; assert exit 2 with a one-message error naming each of ``expected`` and a fix."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Fix: " in err and "Traceback" not in err, err  # progress bars may precede
    for text in expected:
        assert text in err, (text, err)
    return err


@pytest.fixture
def small_clean(monkeypatch):
    """``lecl demo`` on 64 px stacks (its presets are 256 px): the folder checks are the same, the test is fast."""
    for regime in ("clean", "dense"):
        monkeypatch.setitem(REGIMES, regime, replace(REGIMES[regime], size_yx=64))


# -- lecl synth: options, checked before anything is written -----------------------------------------------------
@pytest.mark.parametrize("args, option, valid", [
    (["--size", "16"], "--size", "from 32"),
    (["--size", "0"], "--size", "from 32"),
    (["--pixel-size", "0"], "--pixel-size", "> 0"),
    (["--anisotropy", "-1"], "--anisotropy", "> 0"),
    (["--photons", "0"], "--photons", "> 0"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--density", "0"], "--density", "(0, "),
    (["--missed-click-rate", "1"], "--missed-click-rate", "not including) 1"),
    (["--n-images", "0"], "--n-images", "at least 1"),
    (["--z-slices", "5", "3"], "--z-slices", "MIN <= MAX"),
    (["--jitter", "-2"], "--jitter", ">= 0"),
    (["--haze", "2"], "--haze", "between 0 and 1"),
])
def test_synth_refuses_bad_options_before_writing(tmp_path, capsys, args, option, valid):
    _refused(capsys, ["synth", "--out", str(tmp_path / "d"), *args], option, valid)
    assert not (tmp_path / "d").exists()


def test_synth_stack_without_clicks_is_refused_and_nothing_is_half_written(tmp_path, capsys):
    out = tmp_path / "d"
    _refused(capsys, ["synth", "--out", str(out), "--size", "64", "--n-images", "3", "--missed-click-rate", "0.99"],
             "synth_000", "no clicks", "--missed-click-rate")
    assert not out.exists()
    # a failed --overwrite leaves the earlier set exactly as it was
    assert main(["synth", "--out", str(out), *SMALL]) == 0
    before = _digest(out)
    _refused(capsys, ["synth", "--out", str(out), "--overwrite", "--size", "64", "--missed-click-rate", "0.99"],
             "no clicks")
    assert _digest(out) == before


def test_synth_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["synth", "--out", str(out), "--size", "64", "--n-images", "3"]) == 0
    _refused(capsys, ["synth", "--out", str(out), *SMALL], str(out), "earlier lecl synth output", "--overwrite")
    (out / "notes.txt").write_text("mine")
    assert main(["synth", "--out", str(out), *SMALL, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["synth_000.tif"]  # no stale stacks of the 3
    (out / "images" / "synth_001.tif").write_bytes(b"my stack")  # where a 2-image set would write
    _refused(capsys, ["synth", "--out", str(out), "--size", "64", "--n-images", "2", "--overwrite"],
             "synth_001.tif", "was not written by lecl synth")
    assert (out / "images" / "synth_001.tif").read_bytes() == b"my stack"


# -- the output-folder guard, the same for all three commands ----------------------------------------------------
def _argv(command, out, synth_dir=None):
    if command == "synth":
        return ["synth", "--out", str(out), *SMALL]
    if command == "prepare":
        return ["prepare", "--datalist", str(synth_dir / "datalist.json"), "--out", str(out)]
    return ["demo", "--out", str(out), "--n-images", "1", "--skip-training"]


COMMANDS = ["synth", "prepare", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_out_naming_a_file_is_refused(command, tmp_path, capsys, synth_dir, small_clean):
    target = tmp_path / "results.txt"
    target.write_text("my notes")
    _refused(capsys, _argv(command, target, synth_dir), str(target), "is a file, not a folder", "--out")
    _refused(capsys, _argv(command, target / "sub", synth_dir), str(target), "is a file")
    assert target.read_text() == "my notes"


@pytest.mark.parametrize("command", COMMANDS)
def test_foreign_folder_is_refused(command, tmp_path, capsys, synth_dir, small_clean):
    mine = tmp_path / "mine"
    (mine / "models" / "stage0").mkdir(parents=True)
    (mine / "models" / "stage0" / "model.pt").write_bytes(b"my own weights")
    before = _digest(mine)
    for extra in ([], ["--overwrite"]):
        _refused(capsys, _argv(command, mine, synth_dir) + extra, str(mine), "holds files lecl did not write",
                 "new or empty --out")
    assert _digest(mine) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_folder_is_refused(command, tmp_path, capsys, synth_dir, small_clean):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:  # root ignores permission bits: then there is nothing to refuse
            (locked / "probe").touch()
        except PermissionError:
            pass
        else:
            # as root, run it with: setpriv --bounding-set=-dac_override,-dac_read_search python -m pytest ...
            pytest.skip("permission bits are not enforced for this user (root)")
        _refused(capsys, _argv(command, locked, synth_dir), str(locked), "cannot write", "permissions")
        _refused(capsys, _argv(command, locked / "new", synth_dir), str(locked / "new"), "its parent", "cannot write")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_prepare_never_writes_into_or_above_its_inputs(synth_dir, capsys):
    before = _digest(synth_dir)
    for out in (synth_dir, synth_dir / "images", synth_dir.parent):
        _refused(capsys, _argv("prepare", out, synth_dir), "holds the input", "never writes beside or over your data")
    assert _digest(synth_dir) == before


def test_prepare_refuses_a_negative_seed(synth_dir, tmp_path, capsys):
    _refused(capsys, _argv("prepare", tmp_path / "o", synth_dir) + ["--seed", "-1"], "--seed", "from 0")
    assert not (tmp_path / "o").exists()


# -- lecl demo -------------------------------------------------------------------------------------------------------
def test_demo_never_replaces_a_model_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "work"
    model = out / "models" / "stage0" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"\x00weights I trained myself\xff")
    _refused(capsys, ["demo", "--out", str(out), "--skip-training"], str(out), "lecl_demo.json", "--out")
    assert model.read_bytes() == b"\x00weights I trained myself\xff"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "models", "models/stage0", "models/stage0/model.pt"]


def test_demo_rerun_needs_overwrite_and_passes_it_to_training(tmp_path, capsys, monkeypatch, small_clean):
    import monai.bundle

    import lecl_transforms.tools.demo as demo
    import lecl_transforms.tools.evaluate as evaluate

    calls = []
    monkeypatch.setattr(monai.bundle, "run", lambda run_id, **kw: calls.append((run_id, kw)))
    monkeypatch.setattr(demo, "summarise_training", lambda out: None)
    monkeypatch.setattr(demo, "summarise_demo", lambda out, report: None)
    monkeypatch.setattr(evaluate, "run_evaluate", lambda *a, **kw: {})
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n-images", "3"]
    assert main(argv) == 0
    assert json.loads((out / "lecl_demo.json").read_text())["command"] == "lecl demo"
    (training, kw), (inference, kw_inf) = calls
    assert (training, inference) == ("training", "inference")
    assert "overwrite" not in kw and kw["datalist"] == str((out / "data" / "datalist.json").resolve())
    assert "overwrite" not in kw_inf and kw_inf["section"] == "test"  # not typed: the config's false holds
    assert kw_inf["checkpoint"] == str((out / "models" / "stage0" / "model.pt").resolve())
    (out / "models" / "stage0").mkdir(parents=True)
    (out / "models" / "stage0" / "model.pt").write_bytes(b"earlier demo model")
    _refused(capsys, argv, str(out), "earlier lecl demo output", "--overwrite")
    assert (out / "models" / "stage0" / "model.pt").read_bytes() == b"earlier demo model"
    assert len(calls) == 2
    assert main(argv + ["--overwrite"]) == 0
    assert calls[-2][1]["overwrite"] is True and calls[-1][1]["overwrite"] is True


def test_demo_epochs_shortens_the_schedule_as_demo_json_does(tmp_path, monkeypatch, small_clean):
    """``lecl demo --epochs 10`` trains 10 epochs, validating every 2 with the learning-rate step at 8; the rule gives
    ``demo.json``'s own 30 / 6 / 24 (benchmarks/table1.py shortens the same way)."""
    import monai.bundle

    import lecl_transforms.tools.demo as demo
    import lecl_transforms.tools.evaluate as evaluate
    from lecl_transforms.tools.bundle import configs_dir

    calls = []
    monkeypatch.setattr(monai.bundle, "run", lambda run_id, **kw: calls.append((run_id, kw)))
    monkeypatch.setattr(demo, "summarise_training", lambda out: None)
    monkeypatch.setattr(demo, "summarise_demo", lambda out, report: None)
    monkeypatch.setattr(evaluate, "run_evaluate", lambda *a, **kw: {})
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n-images", "3", "--epochs", "10"]) == 0
    (training, kw), _ = calls
    assert training == "training" and (kw["epochs"], kw["val_interval"], kw["lr_step_epochs"]) == (10, 2, 8)
    shipped = json.loads((configs_dir() / "demo.json").read_text())
    assert demo.shortened_schedule(shipped["epochs"]) == {k: shipped[k] for k in ("epochs", "val_interval",
                                                                                  "lr_step_epochs")}


def test_errors_through_python_m_print_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lecl_transforms", "synth", "--out", str(tmp_path / "d"),
                             "--size", "8"], capture_output=True, text=True, env={**os.environ, "LECL_DEBUG": ""})
    assert result.returncode == 2, result.stderr
    assert "--size" in result.stderr and "Fix:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


# -- lecl prepare: what is almost certainly wrong stops, unless explicitly allowed --------------------------------
def _one_stack(synth_dir):
    from lecl_transforms import load_datalist

    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    return ["--image", entry["image"], "--points", entry["points"]]


@pytest.mark.parametrize("args, expected", [
    (["--nuclei-channel", "1", "--marker-channel", "0"], "swapped"),
    (["--nuclei-channel", "-1", "--marker-channel", "1"], "both select channel 1"),
    (["--spacing", "9", "0.5", "0.5"], "--override-spacing"),
])
def test_prepare_stops_on_suspicious_input(synth_dir, tmp_path, capsys, args, expected):
    out = tmp_path / "out"
    _refused(capsys, ["prepare", *_one_stack(synth_dir), "--out", str(out), *args], expected)
    assert not list(out.glob("*_emip.tif"))  # nothing prepared from it


def test_prepare_explicit_overrides_let_it_through(synth_dir, tmp_path):
    out = tmp_path / "swapped"
    assert main(["prepare", *_one_stack(synth_dir), "--out", str(out), "--nuclei-channel", "1",
                 "--marker-channel", "0", "--allow-suspicious-input"]) == 0
    out = tmp_path / "spacing"
    assert main(["prepare", *_one_stack(synth_dir), "--out", str(out), "--spacing", "9", "0.5", "0.5",
                 "--override-spacing"]) == 0
    entry = json.loads((out / "prepared.json").read_text())["training"][0]
    assert entry["spacing"] == [9.0, 0.5, 0.5]  # what was really used is recorded


def test_prepare_reads_a_bom_datalist_and_names_a_truncated_stack(synth_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    datalist = data / "datalist.json"
    datalist.write_bytes(b"\xef\xbb\xbf" + datalist.read_bytes())  # saved by an editor that writes a BOM
    stack = data / "images" / "synth_001.tif"
    stack.write_bytes(stack.read_bytes()[: stack.stat().st_size * 6 // 10])  # a copy cut short
    assert main(["prepare", "--datalist", str(datalist), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "synth_001.tif" in err and "truncated" in err and "Traceback" not in err
    assert (tmp_path / "out" / "synth_000_emip.tif").is_file()  # the good stacks are still prepared


@pytest.mark.parametrize("option, value, where, fix", [
    ("--overlap", "1", "--overlap", "from 0 up to (not including) 1"),
    ("--overlap", "-0.5", "--overlap", "from 0 up to (not including) 1"),
    ("--min-volume-um3", "-5", "min_volume_um3", "um^3 >= 0"),
    ("--min-volume-um3", "nan", "min_volume_um3", "um^3 >= 0"),
])
def test_predict_setting_out_of_range_is_refused_before_any_work(tmp_path, capsys, option, value, where, fix):
    from conftest import make_czyx, write_imagej_zcyx

    image = write_imagej_zcyx(tmp_path / "s.tif", make_czyx((2, 4, 64, 64)))
    _refused(capsys, ["predict", "--image", str(image), "--out", str(tmp_path / "p"), option, value],
             where, f"got {float(value)}", fix)
    assert not (tmp_path / "p").exists()


def test_demo_zero_epochs_is_refused_before_any_work(tmp_path, capsys):
    _refused(capsys, ["demo", "--out", str(tmp_path / "d"), "--epochs", "0"], "--epochs", "got 0", "at least 1")
    assert not (tmp_path / "d").exists()


def test_prepare_datalist_entry_with_null_points_is_named(tmp_path, capsys):
    from conftest import make_czyx, write_imagej_zcyx

    for name in ("a", "b"):
        write_imagej_zcyx(tmp_path / f"{name}.tif", make_czyx((2, 4, 32, 32)))
    (tmp_path / "a.csv").write_text("z,y,x,label\n1,8,8,1\n")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.tif", "points": "a.csv"},
                                                 {"image": "b.tif", "points": None}]}))
    _refused(capsys, ["prepare", "--datalist", str(datalist), "--out", str(tmp_path / "p")],
             "datalist.json, training[1].points", "is null", 'remove the "points" key')
    assert not (tmp_path / "p").exists()


# -- lecl predict: the input checks of lecl prepare and the training ----------------------------------------------
def test_predict_refuses_swapped_channels_of_a_datalist_with_clicks(tmp_path, capsys, synth_dir):
    """The test stacks' clicks sit on the nuclei channel: swapped channel options are caught before the network runs
    (as lecl prepare catches them); --allow-suspicious-input lets the run through."""
    argv = ["predict", "--datalist", str(synth_dir / "datalist.json"), "--section", "test", "--nuclei-channel", "1",
            "--marker-channel", "0", "--out"]
    _refused(capsys, argv + [str(tmp_path / "p")], "synth_002.tif", "look swapped", "--nuclei-channel",
             "--allow-suspicious-input")
    assert not list((tmp_path / "p").glob("*_pred.csv"))
    assert main(argv + [str(tmp_path / "q"), "--allow-suspicious-input"]) == 0
    assert (tmp_path / "q" / "synth_002_pred.csv").is_file()


def test_predict_refuses_swapped_channels_of_a_stack_without_clicks(tmp_path, capsys):
    """lecl predict --image has no clicks: a stack whose marker is channel 0 and nuclei channel 1, predicted with the
    default channels, is caught from the image alone before the network runs on it, with the options to fix and the
    override; the right options, or --allow-suspicious-input, predict it."""
    from conftest import write_imagej_zcyx

    from lecl_transforms.data import generate_stack

    s = generate_stack(replace(REGIMES["clean"], size_yx=64, z_slices=(6, 6)), 0, 0)
    image = write_imagej_zcyx(tmp_path / "marker_first.tif", s.image[::-1].copy(), spacing=s.spacing)
    _refused(capsys, ["predict", "--image", str(image), "--out", str(tmp_path / "p")],
             "marker_first.tif (config: nuclei_channel / marker_channel)",
             "channels look swapped (judged from the image, no clicks)", "--nuclei-channel/--marker-channel",
             "--allow-suspicious-input")
    assert not list((tmp_path / "p").glob("*_pred.csv"))
    assert main(["predict", "--image", str(image), "--out", str(tmp_path / "q"), "--nuclei-channel", "1",
                 "--marker-channel", "0"]) == 0
    assert main(["predict", "--image", str(image), "--out", str(tmp_path / "r"), "--allow-suspicious-input"]) == 0
    assert (tmp_path / "q" / "marker_first_pred.csv").is_file() and (tmp_path / "r" / "marker_first_pred.csv").is_file()


def test_predict_refuses_a_nuclei_channel_of_noise(tmp_path, capsys, synth_dir):
    """A 5-channel stack whose default channels 0 and 1 hold camera noise (its nuclei and marker are channels 3 and
    4): refused with the channel option to fix; with the right channels it is predicted."""
    import numpy as np
    import tifffile

    image = tifffile.imread(synth_dir / "images" / "synth_002.tif")  # (Z, C, Y, X), spacing (1, 0.5, 0.5) um
    noise = np.random.default_rng(0).poisson(110, (image.shape[0], 3, *image.shape[2:])).astype(np.uint16)
    five = tmp_path / "five.tif"
    tifffile.imwrite(five, np.concatenate([noise, image], axis=1), imagej=True, resolution=(2, 2),
                     metadata={"axes": "ZCYX", "spacing": 1.0, "unit": "um"})
    _refused(capsys, ["predict", "--image", str(five), "--out", str(tmp_path / "p")], "five.tif",
             "(config: nuclei_channel)", "nuclei channel (channel 0) looks like pixel noise",
             "of the stack's 5 channels (0..4), those showing objects: 3, 4", "--nuclei-channel")
    assert not list((tmp_path / "p").glob("*_pred.csv"))
    assert main(["predict", "--image", str(five), "--out", str(tmp_path / "q"), "--nuclei-channel", "3",
                 "--marker-channel", "4"]) == 0
    assert (tmp_path / "q" / "five_pred.csv").read_text().count("\n") > 1  # nuclei found


def test_a_nuclei_channel_of_smooth_noise_is_refused_too(tmp_path, capsys, synth_dir):
    """Noise with a grain (binned or denoised empty channels) passes the neighbour test; it still shows nothing that
    stands out of its background: lecl prepare and lecl predict refuse it, naming the channels that show objects."""
    import numpy as np
    import tifffile
    from scipy import ndimage

    image = tifffile.imread(synth_dir / "images" / "synth_002.tif")  # (Z, C, Y, X), spacing (1, 0.5, 0.5) um
    noise = np.random.default_rng(0).poisson(110, (image.shape[0], 3, *image.shape[2:])).astype(np.float32)
    noise = np.rint(ndimage.gaussian_filter(noise, (0, 0, 1.5, 1.5))).astype(np.uint16)
    five = tmp_path / "five.tif"
    tifffile.imwrite(five, np.concatenate([noise, image], axis=1), imagej=True, resolution=(2, 2),
                     metadata={"axes": "ZCYX", "spacing": 1.0, "unit": "um"})
    expected = ("five.tif", "(config: nuclei_channel)", "nuclei channel (channel 0) looks like noise with no objects",
                "those showing objects: 3, 4", "--nuclei-channel")
    _refused(capsys, ["predict", "--image", str(five), "--out", str(tmp_path / "p")], *expected)
    _refused(capsys, ["prepare", "--image", str(five), "--points", str(synth_dir / "points" / "synth_002.csv"),
                      "--out", str(tmp_path / "q")], *expected)
    assert not list((tmp_path / "p").glob("*_pred.csv")) and not list((tmp_path / "q").glob("*_emip.tif"))


def test_predict_axes_names_the_axes_of_a_plain_tiff(tmp_path, capsys, synth_dir):
    """--axes is what a TIFF that stores its shape but not its axis names needs; a flat stack of planes is refused
    with the way to re-save it (no --axes can split it)."""
    import tifffile

    array = tifffile.imread(synth_dir / "images" / "synth_002.tif")  # (Z, C, Y, X)
    plain, flat = tmp_path / "plain.tif", tmp_path / "flat.tif"
    tifffile.imwrite(plain, array)
    tifffile.imwrite(flat, array.reshape(-1, *array.shape[2:]), metadata=None)
    spacing = ["--spacing", "1", "0.5", "0.5"]
    _refused(capsys, ["predict", "--image", str(plain), "--out", str(tmp_path / "p"), *spacing], "plain.tif",
             "does not say which axis is which", "--axes ZCYX")
    assert main(["predict", "--image", str(plain), "--out", str(tmp_path / "q"), "--axes", "ZCYX", *spacing]) == 0
    _refused(capsys, ["predict", "--image", str(flat), "--out", str(tmp_path / "r"), "--axes", "ZCYX", *spacing],
             "flat.tif", "no axes setting can split them", "hyperstack")


def test_flat_tiff_is_refused_with_a_recipe_that_works(tmp_path, capsys, synth_dir):
    """A flat (N, Y, X) TIFF with no metadata, N = Z * C: --axes cannot say how many channels, so lecl prepare (as
    lecl predict) refuses it naming the reshape that re-saves it; the file re-saved that way is prepared."""
    import numpy as np
    import tifffile

    array = tifffile.imread(synth_dir / "images" / "synth_002.tif")  # (Z, C, Y, X)
    z, c, ny, nx = array.shape
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, array.reshape(z * c, ny, nx), metadata=None)
    common = ["--points", str(synth_dir / "points" / "synth_002.csv"), "--spacing", "1", "0.5", "0.5"]
    recipe = f"a.reshape(-1, C, {ny}, {nx}), imagej=True, metadata={{'axes': 'ZCYX'}}"
    _refused(capsys, ["prepare", "--image", str(flat), "--axes", "ZCYX", "--out", str(tmp_path / "p"), *common],
             "flat.tif", f"a flat (N, Y, X) stack ({z * c}, {ny}, {nx})", "axes 'ZCYX' names 4 axes", recipe)
    a = tifffile.imread(flat)  # the recipe, with C = 2
    tifffile.imwrite(tmp_path / "resaved.tif", a.reshape(-1, 2, ny, nx), imagej=True, metadata={"axes": "ZCYX"})
    assert np.array_equal(tifffile.imread(tmp_path / "resaved.tif"), array)
    assert main(["prepare", "--image", str(tmp_path / "resaved.tif"), "--out", str(tmp_path / "q"), *common]) == 0
    assert (tmp_path / "q" / "resaved_emip.tif").is_file()
