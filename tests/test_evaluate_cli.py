"""``lecl evaluate`` through the real command line: known scores on a hand-made prediction, and every bad input or
output folder refused before any work with one where/problem/fix message (exit 2), nothing of the user's replaced."""

import json

import numpy as np
import pytest

from lecl_transforms.tools.cli import main

from conftest import REPO, write_imagej_zcyx
from test_cli_errors import _refused

TRUTH = "z,y,x,label\n1,8,8,2\n2,20,20,1\n1,8,24,1\n"
# two predictions on clicks (0.5 um off), one far from any: precision 2/3, recall 2/3
PRED = "id,z,y,x,label,z_start,z_stop\n1,1,8.5,8,2,0,2\n2,2,20,21,1,1,3\n3,1,30,2,1,1,1\n"


@pytest.fixture
def case(tmp_path):
    """A datalist with one 4-slice stack and its clicks, and a prediction folder for it."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    data.mkdir()
    pred.mkdir()
    write_imagej_zcyx(data / "stack.tif", np.zeros((2, 4, 32, 32), np.uint16))
    (data / "stack.csv").write_text(TRUTH)
    (data / "datalist.json").write_text(json.dumps({"test": [{"image": "stack.tif", "points": "stack.csv"}]}))
    (pred / "stack_pred.csv").write_text(PRED)
    return tmp_path


def _evaluate(case, *extra, out="metrics"):
    return ["evaluate", "--pred", str(case / "pred"), "--truth", str(case / "data" / "datalist.json"),
            *(["--out", str(case / out)] if out else []), *extra]


def test_scores_and_manifest(case):
    assert main(_evaluate(case, "--no-mlflow")) == 0
    report = json.loads((case / "metrics" / "metrics.json").read_text())
    assert report["pooled"]["np_precision"] == pytest.approx(2 / 3)
    assert report["pooled"]["np_recall"] == pytest.approx(2 / 3)
    assert report["per_stack"][0]["spacing"] == [2.0, 0.5, 0.5]
    manifest = json.loads((case / "metrics" / "lecl_evaluate.json").read_text())
    assert manifest["files"] == ["metrics.json", "metrics.md", "stack_eval_qc.png"]
    assert report["per_stack"][0]["qc_picture"] == "stack_eval_qc.png"


def test_matches_name_the_rows_of_both_files(case):
    # the predictions in reverse order: the far one first, then the one on click 1, then the one on click 0
    header, *rows = PRED.splitlines()
    (case / "pred" / "stack_pred.csv").write_text("\n".join([header, *rows[::-1]]) + "\n")
    assert main(_evaluate(case, "--no-mlflow", "--no-qc-pictures")) == 0
    report = json.loads((case / "metrics" / "metrics.json").read_text())
    assert report["per_stack"][0]["matches"] == {"pred_row": [1, 2], "true_row": [1, 0]}


def test_users_own_metrics_are_never_replaced(case, capsys):
    out = case / "metrics"
    out.mkdir()
    (out / "metrics.md").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        _refused(capsys, _evaluate(case, "--no-mlflow", *extra), "metrics.md", "not written by lecl evaluate")
    assert (out / "metrics.md").read_text() == "my notes" and not (out / "metrics.json").exists()


def test_rerun_into_its_own_folder_needs_overwrite(case, capsys):
    assert main(_evaluate(case, "--no-mlflow")) == 0
    before = (case / "metrics" / "metrics.json").read_text()
    _refused(capsys, _evaluate(case, "--no-mlflow", "--radius-um", "0.1"), "earlier lecl evaluate output",
             "--overwrite")
    assert (case / "metrics" / "metrics.json").read_text() == before
    assert main(_evaluate(case, "--no-mlflow", "--radius-um", "0.1", "--overwrite")) == 0
    # 0.1 um: every prediction is at least 0.25 um from its click
    assert json.loads((case / "metrics" / "metrics.json").read_text())["pooled"]["tp"] == 0


def test_default_out_is_the_prediction_folder(case):
    """--out left out: the metrics go beside lecl predict's files, which stay (no lecl_predict.json needed)."""
    assert main(_evaluate(case, "--no-mlflow", out=None)) == 0
    assert (case / "pred" / "metrics.json").is_file() and (case / "pred" / "stack_pred.csv").read_text() == PRED


def test_out_that_is_a_file_is_refused(case, capsys):
    (case / "taken.txt").write_text("mine")
    _refused(capsys, _evaluate(case, "--no-mlflow", out="taken.txt"), "taken.txt", "is a file")
    assert (case / "taken.txt").read_text() == "mine"


@pytest.mark.parametrize("uri, problem", [("foo://bar", "'foo://'"), ("file:///tmp/mlruns", "'file://'"),
                                          ("some/folder", "plain path")])
def test_unsupported_tracking_uri_is_refused_before_any_work(case, capsys, uri, problem):
    _refused(capsys, _evaluate(case, "--tracking-uri", uri), "--tracking-uri", problem, "sqlite:///")
    assert not (case / "metrics").exists()


def test_mlflow_store_and_artifacts_stay_in_the_output_folder(case, monkeypatch):
    """The default store is mlruns.db in --out, its artifacts in mlruns/ beside it: nothing in the working folder or
    under the repository's bundle/ (lecl evaluate run from the repository root)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(REPO)
    bundle_before = sorted(p.as_posix() for p in (REPO / "bundle").rglob("*"))
    mlruns_before = (REPO / "mlruns").exists()
    assert main(_evaluate(case)) == 0
    out = case / "metrics"
    assert sorted(p.as_posix() for p in (REPO / "bundle").rglob("*")) == bundle_before
    assert (REPO / "mlruns").exists() == mlruns_before
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    run = client.search_runs(client.get_experiment_by_name("lecl").experiment_id)[0]
    assert run.data.metrics["np_recall"] == pytest.approx(2 / 3)
    logged = sorted(p.name for p in (out / "mlruns").rglob("metrics.*"))
    assert logged == ["metrics.json", "metrics.md"]
    assert [p.name for p in (out / "mlruns").rglob("*.png")] == ["stack_eval_qc.png"]


def test_given_sqlite_store_keeps_artifacts_beside_the_database(case, monkeypatch):
    work = case / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = case / "store" / "runs.db"
    store.parent.mkdir()
    assert main(_evaluate(case, "--tracking-uri", f"sqlite:///{store}")) == 0
    assert sorted(p.name for p in (store.parent / "mlruns").rglob("metrics.*")) == ["metrics.json", "metrics.md"]
    assert not any(work.iterdir()) and not (case / "metrics" / "mlruns.db").exists()


def test_truth_click_outside_the_stack_is_refused(case, capsys):
    (case / "data" / "stack.csv").write_text(TRUTH + "999,8,8,1\n")
    _refused(capsys, _evaluate(case, "--no-mlflow"), "stack.csv", "line 5", "outside the image", "(4, 32, 32)")
    assert not (case / "metrics" / "metrics.json").exists()


@pytest.mark.parametrize("radius", ["0", "-1"])
def test_radius_must_be_positive(case, capsys, radius):
    _refused(capsys, _evaluate(case, "--no-mlflow", "--radius-um", radius), "radius_um", "> 0", "--radius-um")
    assert not (case / "metrics").exists()


def test_missing_spacing_is_given_with_the_spacing_option(case, capsys):
    import tifffile

    tifffile.imwrite(case / "data" / "stack.tif", np.zeros((4, 2, 32, 32), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})  # no spacing stated
    _refused(capsys, _evaluate(case, "--no-mlflow"), "stack.tif", "voxel spacing", "--spacing DZ DY DX")
    assert main(_evaluate(case, "--no-mlflow", "--spacing", "2", "0.5", "0.5")) == 0
    report = json.loads((case / "metrics" / "metrics.json").read_text())
    assert report["pooled"]["np_recall"] == pytest.approx(2 / 3) and report["settings"]["spacing"] == [2, 0.5, 0.5]


# -- the evaluation picture STEM_eval_qc.png ---------------------------------------------------------------------------
# a 64 x 64 field, spacing (2, 0.5, 0.5): four predicted squares (id: rows, columns, slice, class) and five clicks
SQUARES = {1: (4, 12, 4, 12, 1, 2), 2: (4, 12, 24, 32, 2, 1), 3: (4, 12, 44, 52, 1, 2), 4: (24, 32, 4, 12, 1, 1)}
PICTURE_PRED = "id,z,y,x,label,z_start,z_stop,centre_slice\n" + "".join(
    f"{i},{z},{(y0 + y1 - 1) / 2},{(x0 + x1 - 1) / 2},{c},{z},{z},{z}\n"
    for i, (y0, y1, x0, x1, z, c) in SQUARES.items())
# 1: matched, class right; 2: matched, a positive called negative; 3: matched, a negative called positive;
# square 4 has no click (false); the click at (28, 40) has no prediction (missed)
PICTURE_TRUTH = "z,y,x,label\n1,8,8,2\n2,8,28,2\n1,8,48,1\n1,28,40,1\n"


@pytest.fixture
def picture_case(case):
    import tifffile

    write_imagej_zcyx(case / "data" / "stack.tif", np.random.default_rng(0).integers(0, 50, (2, 4, 64, 64), np.uint16))
    (case / "data" / "stack.csv").write_text(PICTURE_TRUTH)
    (case / "pred" / "stack_pred.csv").write_text(PICTURE_PRED)
    instances = np.zeros((4, 64, 64), np.uint16)
    for i, (y0, y1, x0, x1, z, _) in SQUARES.items():
        instances[z, y0:y1, x0:x1] = i
    tifffile.imwrite(case / "pred" / "stack_instances.tif", instances)
    return case


def test_picture_marks_matched_missed_false_and_wrong_calls(picture_case):
    from PIL import Image

    from lecl_transforms.data.qc_picture import AGREES, FALSE, MISSED

    assert main(_evaluate(picture_case, "--no-mlflow")) == 0
    report = json.loads((picture_case / "metrics" / "metrics.json").read_text())
    assert report["pooled_counts"] == {"neg_as_neg": 0, "neg_as_pos": 1, "pos_as_neg": 1, "pos_as_pos": 1,
                                          "unmatched_pred_neg": 1, "unmatched_pred_pos": 0,
                                          "unmatched_true_neg": 1, "unmatched_true_pos": 0}
    picture = np.asarray(Image.open(picture_case / "metrics" / "stack_eval_qc.png").convert("RGB"))
    assert picture.shape[1] == 2 * 64 + 2 and picture.shape[0] > 64  # two full-resolution panels, a header above
    header, left, right = picture[:-64], picture[-64:, :64], picture[-64:, -64:]
    assert (header == 24).all(-1).mean() > 0.5 and (header == 255).all(-1).any()  # white text on a dark header
    for colour in (AGREES, MISSED, FALSE):
        assert (header == colour).all(-1).sum() >= 16  # each colour's legend swatch

    def colour_at(panel, y, x):
        return tuple(int(v) for v in panel[y, x])

    # the top edge of each square (its outline on its centre slice): left by detection, right by the class call
    assert [colour_at(left, y0, x0 + 3) for y0, _, x0, *_ in SQUARES.values()] == [AGREES, AGREES, AGREES, FALSE]
    assert [colour_at(right, y0, x0 + 3) for y0, _, x0, *_ in list(SQUARES.values())[:3]] == [AGREES, MISSED, FALSE]
    assert colour_at(right, 24, 7) not in (AGREES, MISSED, FALSE)  # the false prediction has no class call
    # the missed click: an orange ring of the 3 um matching radius (6 px) in the left panel only
    assert colour_at(left, 28 - 6, 40) == MISSED and colour_at(left, 28, 40 - 6) == MISSED
    assert colour_at(left, 28, 40) != MISSED and colour_at(right, 28 - 6, 40) != MISSED
    inside = left[6:10, 6:10]  # inside square 1: the dimmed data, no mark
    assert not any((inside == c).all(-1).any() for c in (AGREES, MISSED, FALSE))


def test_picture_without_instances_rings_the_predictions(picture_case):
    """A prediction folder with only the CSV (no STEM_instances.tif): predictions ringed at their centroids."""
    from PIL import Image

    from lecl_transforms.data.qc_picture import AGREES, FALSE, MISSED

    (picture_case / "pred" / "stack_instances.tif").unlink()
    assert main(_evaluate(picture_case, "--no-mlflow")) == 0
    picture = np.asarray(Image.open(picture_case / "metrics" / "stack_eval_qc.png").convert("RGB"))
    left, right = picture[-64:, :64], picture[-64:, -64:]
    # rings of half the matching radius (3 px) around the centroids (7.5 -> 8, 27.5 -> 28; 47.5 -> 48)
    assert tuple(left[8, 8 + 3]) == AGREES and tuple(left[28, 8 + 3]) == FALSE
    assert tuple(right[8, 28 + 3]) == MISSED and tuple(right[8, 48 + 3]) == FALSE


def test_pictures_follow_the_output_guard(picture_case, capsys):
    out = picture_case / "metrics"
    out.mkdir()
    (out / "stack_eval_qc.png").write_text("my picture")
    for extra in ([], ["--overwrite"]):  # a user's file of that name is never replaced
        _refused(capsys, _evaluate(picture_case, "--no-mlflow", *extra), "stack_eval_qc.png",
                 "not written by lecl evaluate")
    assert (out / "stack_eval_qc.png").read_text() == "my picture" and not (out / "metrics.json").exists()
    # --no-qc-pictures writes none (and so does not need the name)
    assert main(_evaluate(picture_case, "--no-mlflow", "--no-qc-pictures")) == 0
    assert json.loads((out / "lecl_evaluate.json").read_text())["files"] == ["metrics.json", "metrics.md"]
    (out / "stack_eval_qc.png").unlink()
    assert main(_evaluate(picture_case, "--no-mlflow", "--overwrite")) == 0
    assert (out / "stack_eval_qc.png").stat().st_size > 1000
    # an earlier evaluation's picture that this one does not write is removed with it
    assert main(_evaluate(picture_case, "--no-mlflow", "--overwrite", "--no-qc-pictures")) == 0
    assert not (out / "stack_eval_qc.png").exists()


def test_picture_of_a_large_field_is_reduced_by_a_whole_factor():
    """evaluation_picture at max_side 32: the 64 px field shown at 1/2 scale, the marks drawn at that scale."""
    from lecl_transforms.data.qc_picture import AGREES, FALSE, MISSED, evaluation_picture
    from lecl_transforms.metrics import match_nuclei, scores
    from lecl_transforms.metrics.detection import counts_from_matches

    labels = np.zeros((4, 64, 64), np.uint16)
    centre = np.full(5, -1)
    for i, (y0, y1, x0, x1, z, _) in SQUARES.items():
        labels[z, y0:y1, x0:x1], centre[i] = i, z
    pred = {"zyx": np.array([[z, (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2] for y0, y1, x0, x1, z, _ in SQUARES.values()]),
            "label": np.array([c for *_, c in SQUARES.values()]), "id": np.arange(1, 5)}
    truth = (np.array([[1, 8, 8], [2, 8, 28], [1, 8, 48], [1, 28, 40]], float), np.array([2, 2, 1, 1]))
    match = match_nuclei(pred["zyx"], pred["zyx"][:, :1].repeat(2, 1), truth[0], (2, 0.5, 0.5))
    row = scores(counts_from_matches(pred["label"], truth[1], *match))
    picture = evaluation_picture(np.zeros((2, 64, 64)), "s", pred, truth, match, row, labels=labels, centre_z=centre,
                                 um_per_px=None, max_side=32)
    assert picture.shape[1] == 2 * 32 + 2
    left, right = picture[-32:, :32], picture[-32:, -32:]
    # square 1's top edge (row 4, from column 4) is at row 2 from column 2; square 4's (row 24) at row 12
    assert tuple(left[2, 4]) == AGREES and tuple(left[12, 4]) == FALSE and tuple(right[2, 14]) == MISSED
    assert tuple(left[14 - 3, 20]) == MISSED  # the missed click at (28, 40) -> (14, 20), ring 6 px -> 3 px
