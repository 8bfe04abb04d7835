"""The MONAI Label app, for real: ``monailabel start_server`` on 127.0.0.1 with the bundle's app and a studies folder
of synthetic stacks; ``/info/``, ``/infer/lecl``, a point-label volume uploaded through ``/datastore/label``,
``/train/lecl`` for one short epoch, then the server is stopped by its PID. Needs the ``label`` extra
(``pip install -e ".[test,label]"``, as CI installs); skipped with that reason in the core install."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monailabel", reason="MONAI Label is not installed: pip install -e \".[test,label]\"")
requests = pytest.importorskip("requests")

from conftest import REPO  # noqa: E402

from lecl_transforms.apps.monailabel_tasks import split_labelled  # noqa: E402

BUNDLE = REPO / "bundle"
SHIPPED = BUNDLE / "models" / "model.pt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_volume(points_csv: Path, shape, path: Path) -> Path:
    """The points contract as a label volume: 1/2 at each clicked voxel (what a MONAI Label client saves)."""
    import tifffile

    volume = np.zeros(shape, np.uint8)
    with open(points_csv, newline="") as f:
        for row in csv.DictReader(f):
            volume[int(row["z"]), int(row["y"]), int(row["x"])] = 2 if row["label"] in ("2", "positive") else 1
    tifffile.imwrite(path, volume, imagej=True, metadata={"axes": "ZYX"})
    return path


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"monailabel start_server exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            r = requests.get(url, timeout=5)
            if r.ok:
                return r.json()
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"the server did not answer {url} within {timeout} s:\n{log.read_text()[-4000:]}")


def test_split_labelled_holds_out_the_last_stacks_and_needs_two():
    entries = [{"image": f"/s/{n}.tif", "label": f"/s/labels/final/{n}.tif"} for n in ("c", "a", "b", "d", "e")]
    split = split_labelled(entries, 0.2)
    assert [e["image"] for e in split["training"]] == ["/s/a.tif", "/s/b.tif", "/s/c.tif", "/s/d.tif"]
    assert split["validation"] == [{"image": "/s/e.tif", "points": "/s/labels/final/e.tif"}]
    assert len(split_labelled(entries[:2], 0.9)["training"]) == 1  # never all held out
    with pytest.raises(ValueError, match="at least 2 stacks"):
        split_labelled(entries[:1], 0.2)


def test_request_values_typed_as_clients_send_them():
    from lecl_transforms.apps.monailabel_tasks import TRAIN_CONFIGS, TRAIN_CONFIG_KEYS, TRAIN_TASK_KEYS, _typed, \
        config_values

    defaults = {**config_values(BUNDLE, TRAIN_CONFIGS[True], TRAIN_CONFIG_KEYS), **TRAIN_TASK_KEYS}
    assert defaults["epochs"] == 20 and defaults["patches_per_epoch"] == 32  # finetune.json's recipe
    got = _typed({"epochs": "3", "fine_tune": "false", "learning_rate": "0.01", "model": "lecl"}, defaults)
    assert got == {"epochs": 3, "fine_tune": False, "learning_rate": 0.01}  # what the request left out stays out
    with pytest.raises(ValueError, match="request: epochs"):
        _typed({"epochs": "many"}, defaults)
    with pytest.raises(ValueError, match="fine_tune"):
        _typed({"fine_tune": "perhaps"}, defaults)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="bundle/models/model.pt is not in this checkout")
def test_infer_task_answers_a_nifti_stack_in_nifti_on_its_grid(tmp_path):
    """A NIfTI stack (X, Y, Z, C) gets its label volume back as NIfTI with the stack's affine and axes, equal to
    the TIFF label of the same stack."""
    import dataclasses

    import nibabel as nib
    import tifffile

    from lecl_transforms.apps.monailabel_tasks import LECLInferTask
    from lecl_transforms.data.synthetic import REGIMES
    from lecl_transforms.data.synthetic_dataset import write_dataset

    data = write_dataset(tmp_path / "data", 1, seed=4, cfg=dataclasses.replace(REGIMES["dense"], size_yx=96))
    tif = data.parent / json.loads(data.read_text())["training"][0]["image"]
    zcyx = tifffile.imread(tif)
    affine = np.diag([0.5, 0.5, 2.25, 1.0])
    affine[:3, 3] = (10.0, -4.0, 3.0)
    nii = tmp_path / "stack.nii.gz"
    img = nib.Nifti1Image(np.ascontiguousarray(zcyx.transpose(3, 2, 0, 1)), affine)
    img.header.set_xyzt_units("micron")
    nib.save(img, str(nii))
    task = LECLInferTask(BUNDLE, tmp_path / "model")
    tif_file, tif_json = task({"image": str(tif)})
    nii_file, nii_json = task({"image": str(nii)})
    try:
        assert tif_file.endswith(".tif") and nii_file.endswith(".nii.gz")
        back = nib.load(nii_file)
        np.testing.assert_allclose(back.affine, affine)
        np.testing.assert_array_equal(np.asarray(back.dataobj).transpose(2, 1, 0), tifffile.imread(tif_file))
        assert nii_json["counts"] == tif_json["counts"] and tif_json["counts"]["nuclei"] > 5
    finally:
        os.unlink(tif_file), os.unlink(nii_file)


def test_unknown_image_id_is_answered_with_a_message_naming_it(tmp_path, caplog):
    """/infer/lecl?image=nosuch: 404 whose detail (and the log) names the id, says an id is the file name without
    the extension and lists the ids there are; a bad request value: 422 with its where/problem/fix message. Run on
    the bundle's app class in-process (``monailabel start_server`` would put its own install first on the path)."""
    import importlib.util

    import tifffile
    from fastapi import HTTPException

    from conftest import make_czyx

    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("heart_01", "heart_02"):
        tifffile.imwrite(studies / f"{name}.tif", make_czyx().transpose(1, 0, 2, 3), imagej=True,
                         metadata={"axes": "ZCYX"})
    spec = importlib.util.spec_from_file_location("lecl_monailabel_main", BUNDLE / "monailabel" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    app = main.LECLApp(str(BUNDLE / "monailabel"), str(studies), {"model_dir": str(tmp_path / "model")})
    assert sorted(app.datastore().list_images()) == ["heart_01", "heart_02"]
    with pytest.raises(HTTPException) as raised:
        app.infer({"model": "lecl", "image": "nosuch"})
    detail = raised.value.detail
    assert raised.value.status_code == 404
    assert "image 'nosuch': no stack with this id in the datastore" in detail and "heart_01, heart_02" in detail
    assert "file name without the extension" in detail
    assert "image 'nosuch'" in caplog.text  # the server log names it too
    with pytest.raises(HTTPException) as raised:
        app.infer({"model": "lecl", "image": "heart_01.tif"})  # the file name, not the id
    assert raised.value.status_code == 404 and "(stack_01.tif -> image=stack_01" in raised.value.detail
    with pytest.raises(HTTPException) as raised:
        app.infer({"model": "lecl", "image": "heart_01", "np_threshold": "abc"})
    assert raised.value.status_code == 422 and "np_threshold: got 'abc'" in raised.value.detail


@pytest.mark.skipif(not SHIPPED.is_file(), reason="bundle/models/model.pt is not in this checkout")
def test_monailabel_server_infers_uploads_and_trains(tmp_path):
    import tifffile

    from lecl_transforms.data.synthetic import REGIMES
    from lecl_transforms.data.synthetic_dataset import write_dataset

    # 128 x 128 px stacks: the shipped model's patch, a quarter of the default's pixels to predict and train on
    cfg = dataclasses.replace(REGIMES["dense"], size_yx=128)
    datalist = json.loads(write_dataset(tmp_path / "data", 3, seed=5, cfg=cfg).read_text())
    entries = [e for section in ("training", "validation", "test") for e in datalist.get(section, [])]
    data = tmp_path / "data"
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    ids = []
    for entry in entries:
        shutil.copy(data / entry["image"], studies)
        ids.append(Path(entry["image"]).stem)
    shapes = {i: tifffile.imread(studies / f"{i}.tif").shape for i in ids}  # (Z, C, Y, X) ImageJ order
    zyx = {i: (s[0], s[2], s[3]) for i, s in shapes.items()}
    # one stack arrives labelled on disk, one through the API, one is left for inference
    _point_volume(data / entries[0]["points"], zyx[ids[0]], studies / "labels" / "final" / f"{ids[0]}.tif")
    upload = _point_volume(data / entries[1]["points"], zyx[ids[1]], tmp_path / f"{ids[1]}_clicks.tif")

    app = tmp_path / "app"  # a copy: the server creates model/, logs/, lib/ and bin/ in its app folder
    app.mkdir()
    shutil.copy(BUNDLE / "monailabel" / "main.py", app)
    port = _free_port()
    log = tmp_path / "server.log"
    cmd = [str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(app), "--studies",
           str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "bundle", str(BUNDLE)]
    # offline: any HTTP(S) request the server made would go to a dead proxy and fail (only loopback is direct)
    dead_proxy = "http://127.0.0.1:9"
    env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions"), "PYTHONWARNINGS": "ignore",
           "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy,
           "http_proxy": dead_proxy, "https_proxy": dead_proxy, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    try:
        info = _wait_for(f"{base}/info/", proc, log, timeout=180)
        assert "lecl" in info["models"] and "lecl" in info["trainers"]
        assert info["models"]["lecl"]["labels"] == {"marker-negative nucleus": 1, "marker-positive nucleus": 2}
        assert info["models"]["lecl"]["dimension"] == 3

        # inference on the unlabelled stack: the label volume on its grid and every nucleus with its class
        r = requests.post(f"{base}/infer/lecl", params={"image": ids[2], "output": "all"}, timeout=300)
        assert r.ok, r.text[-2000:]
        from requests_toolbelt.multipart.decoder import MultipartDecoder

        parts = {p.headers[b"Content-Disposition"].split(b'name="')[1].split(b'"')[0].decode(): p
                 for p in MultipartDecoder(r.content, r.headers["Content-Type"]).parts}
        result = json.loads(parts["params"].content)
        (tmp_path / "label.tif").write_bytes(parts["image"].content)
        classes = tifffile.imread(tmp_path / "label.tif")
        assert classes.shape == zyx[ids[2]]
        assert set(np.unique(classes)) <= {0, 1, 2} and {1, 2} <= set(np.unique(classes))
        with open(data / entries[2]["nuclei"], newline="") as f:
            true_count = sum(1 for _ in csv.DictReader(f))
        found = result["counts"]["nuclei"]
        print(f"nuclei found {found}, true {true_count}")
        assert abs(found - true_count) <= 0.25 * true_count, (found, true_count)
        assert {(row["label"], row["class"]) for row in result["nuclei"]} == {(1, "marker-negative"),
                                                                               (2, "marker-positive")}
        assert len(result["nuclei"]) == found
        assert result["model"] == str(SHIPPED.resolve())
        assert {"id", "z", "y", "x", "z_um", "score"} <= set(result["nuclei"][0])

        # clicks uploaded as a point-label volume become training data
        with open(upload, "rb") as f:
            r = requests.put(f"{base}/datastore/label", params={"image": ids[1], "tag": "final"},
                             files={"label": (upload.name, f, "image/tiff")}, timeout=60)
        assert r.ok, r.text[-2000:]
        saved = studies / "labels" / "final" / f"{ids[1]}.tif"
        np.testing.assert_array_equal(tifffile.imread(saved), tifffile.imread(upload))

        shipped_bytes = SHIPPED.read_bytes()
        r = requests.post(f"{base}/train/lecl", json={"epochs": 1, "patches_per_epoch": 8}, timeout=60)
        assert r.ok, r.text[-2000:]
        deadline = time.time() + 420
        while True:
            status = requests.get(f"{base}/train/", timeout=30).json()
            if status.get("status") in ("DONE", "ERROR") or time.time() > deadline:
                break
            time.sleep(3)
        assert status.get("status") == "DONE", json.dumps(status)[-3000:]
        new_model = app / "model" / "model.pt"
        assert new_model.is_file()
        stats = json.loads((app / "model" / "train_stats.json").read_text())
        assert stats["training_stacks"] == 1 and stats["validation_stacks"] == 1
        assert stats["started_from"] == str(SHIPPED.resolve())
        assert SHIPPED.read_bytes() == shipped_bytes  # the shipped weights are never modified

        # the next inference uses the new model
        r = requests.post(f"{base}/infer/lecl", params={"image": ids[2], "output": "json"},
                          data={"params": json.dumps({"label_volume": "instances"})}, timeout=300)
        assert r.ok, r.text[-2000:]
        assert r.json()["model"] == str(new_model) and r.json()["label_volume"] == "instances"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server by its PID (its process group: training children too)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
