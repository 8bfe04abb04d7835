"""What a lab measures per nucleus and per stack, through ``lecl predict`` with the shipped model on a small synthetic
stack: the CSV's measurement columns equal a naive computation on the stack file's own values and the written
instance image, ``summary.csv`` and ``predict_summary.json`` carry the per-stack figures, and the QuPath GeoJSON
carries the CSV's measurements."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from conftest import REPO, stacks_for_the_shipped_model
from lecl_transforms.data.prediction_writer import (
    CSV_COLUMNS,
    SUMMARY_CSV_COLUMNS,
    stack_figures,
    write_summary_csv,
)

SPACING = (1.0, 0.5, 0.5)  # the clean regime: pixel 0.5 um, 2x anisotropy


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stack_figures_and_summary_csv_hand_computed(tmp_path):
    # 200 x 300 px of 0.5 x 0.25 um = 7500 um^2 = 0.0075 mm^2; 40 nuclei, 10 positive
    figures = stack_figures(40, 10, (200, 300), (2.0, 0.5, 0.25))
    assert figures["positive_fraction"] == 0.25
    assert figures["field_area_mm2"] == pytest.approx(0.0075, rel=1e-12)
    assert figures["nuclei_per_mm2"] == pytest.approx(40 / 0.0075) and figures["positive_per_mm2"] == pytest.approx(
        10 / 0.0075)
    unknown = stack_figures(5, 0, (200, 300), None)
    assert unknown == {"positive_fraction": 0.0, "field_area_mm2": None, "nuclei_per_mm2": None,
                       "positive_per_mm2": None}
    assert stack_figures(0, 0, (10, 10), (1, 1, 1))["positive_fraction"] is None  # no nuclei: no fraction
    rows = [{"stack": "a", "nuclei": 40, "positive": 10, "negative": 30, **figures},
            {"stack": "b,2", "nuclei": 5, "positive": 0, "negative": 5, **unknown}]
    path = write_summary_csv(tmp_path / "summary.csv", rows)
    assert path.read_text().splitlines() == [
        "stack,nuclei,positive,negative,positive_fraction,field_area_mm2,nuclei_per_mm2,positive_per_mm2",
        "a,40,10,30,0.2500,0.0075,5333.3,1333.3",
        '"b,2",5,0,5,0.0000,,,',  # unknown spacing: empty cells; a comma in a name is quoted
    ]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    from lecl_transforms.tools.cli import main

    root = tmp_path_factory.mktemp("measure")
    stack = stacks_for_the_shipped_model(root, n_images=1, size_yx=96, z_slices=6) / "synth_000.tif"
    assert main(["predict", "--image", str(stack), "--out", str(root / "out"), "--device", "cpu"]) == 0
    return stack, root / "out"


def test_lecl_predict_csv_measures_each_nucleus_on_the_raw_stack(predicted):
    stack, out = predicted
    with open(out / "synth_000_pred.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    rows = _rows(out / "synth_000_pred.csv")
    assert len(rows) >= 5
    raw = tifffile.imread(stack).astype(np.float64).transpose(1, 0, 2, 3)  # ZCYX uint16 -> (C, Z, Y, X)
    assert raw.max() > 100  # raw counts, which a normalised image (0..1) would not match
    labels = tifffile.imread(out / "synth_000_instances.tif")
    for row in rows:
        mask = labels == int(row["id"])
        area = mask.sum(axis=(1, 2))
        centre = int(np.argmax(area))
        assert int(row["volume_voxels"]) == mask.sum() and int(row["n_slices"]) == (area > 0).sum()
        assert int(row["centre_slice"]) == centre and int(row["area_px"]) == area.max()
        assert float(row["volume_um3"]) == pytest.approx(mask.sum() * np.prod(SPACING), abs=5e-4)
        assert 0 <= int(row["positive_slices"]) <= int(row["n_slices"])
        assert (int(row["positive_slices"]) >= 1) == (row["label"] == "2")  # min_positive_slices 1
        for c, name in enumerate(("nuclei", "marker")):
            values = raw[c][mask]
            assert float(row[f"{name}_mean"]) == pytest.approx(values.mean(), rel=1e-6)
            assert float(row[f"{name}_max"]) == values.max()
            assert float(row[f"{name}_integrated"]) == values.sum()
        assert float(row["marker_mean_centre_slice"]) == pytest.approx(raw[1, centre][mask[centre]].mean(), rel=1e-6)
    features = json.loads((out / "synth_000_pred.geojson").read_text())["features"]
    by_id = {r["id"]: r for r in rows}
    for feature in features:
        m = feature["properties"]["measurements"]
        row = by_id[str(feature["id"])]
        for key in ("volume_um3", "nuclei_mean", "marker_integrated", "marker_mean_centre_slice"):
            assert m[key] == float(row[key])
        assert m["positive_slices"] == int(row["positive_slices"])


def test_lecl_predict_writes_per_stack_figures(predicted):
    stack, out = predicted
    rows = _rows(out / "synth_000_pred.csv")
    nuclei, positive = len(rows), sum(r["label"] == "2" for r in rows)
    area_mm2 = 96 * 96 * 0.5 * 0.5 / 1e6  # 2304 um^2
    summary = _rows(out / "summary.csv")
    assert list(summary[0]) == list(SUMMARY_CSV_COLUMNS) and len(summary) == 1
    row = summary[0]
    assert row["stack"] == "synth_000" and int(row["nuclei"]) == nuclei and int(row["positive"]) == positive
    assert int(row["negative"]) == nuclei - positive
    assert float(row["positive_fraction"]) == pytest.approx(positive / nuclei, abs=5e-5)
    assert float(row["field_area_mm2"]) == pytest.approx(area_mm2, rel=1e-5)
    # written with one decimal: a value ending in 5 rounds to even (3906.25 -> 3906.2), so half a unit + float slack
    assert float(row["nuclei_per_mm2"]) == pytest.approx(nuclei / area_mm2, abs=0.05 + 1e-6)
    assert float(row["positive_per_mm2"]) == pytest.approx(positive / area_mm2, abs=0.05 + 1e-6)
    run = json.loads((out / "predict_summary.json").read_text())
    per_stack = run["per_stack"][0]
    assert per_stack["stack"] == "synth_000" and per_stack["field_yx_px"] == [96, 96]
    assert per_stack["spacing_um"] == pytest.approx(list(SPACING))
    assert per_stack["field_area_mm2"] == pytest.approx(area_mm2)
    assert per_stack["nuclei_per_mm2"] == pytest.approx(nuclei / area_mm2)
    assert run["positive_fraction"] == pytest.approx(positive / nuclei, abs=1e-6)
    assert "summary.csv" in json.loads((out / "lecl_predict.json").read_text())["files"]


def test_model_card_documents_every_column():
    card = (REPO / "bundle" / "docs" / "README.md").read_text()
    table = card[card.index("**`STEM_pred.csv` columns**"):card.index("**`summary.csv`**")]
    for column in CSV_COLUMNS:
        assert f"`{column}`" in table, column
    assert ",".join(SUMMARY_CSV_COLUMNS) in card
