"""The per-stack prediction files (CSV, instance/class TIFFs, QC PNG, QuPath GeoJSON) on a hand-made 6 x 48 x 48 stack
whose answers are known, and the MONAI transform that writes them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from PIL import Image
from scipy import ndimage
from skimage.draw import disk, polygon2mask

from lecl_transforms.data.measurements import MEASUREMENT_COLUMNS, nucleus_measurements
from lecl_transforms.data.points import read_points
from lecl_transforms.data.qc_picture import scale_bar_length
from lecl_transforms.data.prediction_writer import (
    CSV_COLUMNS,
    atomic_path,
    _write_label_tiff,
    instance_dtype,
    largest_slices,
    qc_picture,
    qc_title,
    write_predictions,
    write_run_summary,
)
from lecl_transforms.data.reader import read_stack
from lecl_transforms.data.tiff_metadata import imagej_spacing, ome_spacing
from lecl_transforms.errors import LECLInputError
from lecl_transforms.transforms.io import SavePredictionsd
from lecl_transforms.visualize import CLASS_COLOURS, composite_rgb

SPACING = (2.0, 0.5, 0.25)
SHAPE = (6, 48, 48)
STEM = "stackA"
FILES = {"csv": "stackA_pred.csv", "instances": "stackA_instances.tif", "classes": "stackA_classes.tif",
         "qc": "stackA_pred_qc.png", "geojson": "stackA_pred.geojson"}
CLASSES = {1: 1, 2: 2, 3: 1, 4: 1}  # id -> class: one positive
CENTRE = {1: 2, 2: 3, 3: 5, 4: 0}  # id -> slice of largest footprint (by construction)


def _disk(radius, centre, shape=SHAPE[1:]):
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def _stack():
    """4 nuclei: 1 negative disk (largest on z=2), 2 positive ellipse (largest z=3), 3 negative overlapping nucleus 1
    in (y, x) but on z=4-5 (largest z=5), 4 a single negative pixel on z=0."""
    labels = np.zeros(SHAPE, np.int32)
    for z, r in ((1, 3), (2, 6), (3, 4)):
        labels[z][_disk(r, (12, 12))] = 1
    yy, xx = np.mgrid[:48, :48]
    for z, (ry, rx) in ((2, (3, 6)), (3, (5, 9)), (4, (4, 7))):
        labels[z][((yy - 30) / ry) ** 2 + ((xx - 30) / rx) ** 2 <= 1] = 2
    labels[4][_disk(3, (16, 17))] = 3
    labels[5][_disk(5, (17, 18))] = 3
    labels[0, 42, 6] = 4
    return labels


def _table(labels):
    ids = np.arange(1, labels.max() + 1)
    z, y, x = np.asarray(ndimage.center_of_mass(labels > 0, labels, ids)).T
    boxes = ndimage.find_objects(labels)
    area = np.array([max((labels[k] == i).sum() for k in range(labels.shape[0])) for i in ids])
    return {"id": ids, "z": z, "y": y, "x": x, "label": np.array([CLASSES[i] for i in ids]),
            "score": np.array([0.1234567, 0.87654, 0.3, 0.05]),
            "z_start": np.array([b[0].start for b in boxes]), "z_stop": np.array([b[0].stop - 1 for b in boxes]),
            "area_px": area, "positive_slices": np.array([0, 2, 0, 0]),
            "n_slices": np.array([9, 9, 9, 9])}  # a column the writer does not take: the CSV's n_slices is measured


def _image(labels, seed=1):
    """Raw (2, Z, Y, X) nuclei/marker values as a 12-bit camera gives them (integers, not normalised)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, (2, *labels.shape)).astype(np.float32)


def _naive_measurements(labels, image, spacing):
    """Reference: nucleus by nucleus over the whole volume, straight from the definitions."""
    rows = []
    for nucleus in range(1, labels.max() + 1):
        mask = labels == nucleus
        area = mask.sum(axis=(1, 2))
        centre = int(np.argmax(area))  # the first slice of largest area
        row = {"n_slices": int((area > 0).sum()), "centre_slice": centre, "volume_voxels": int(mask.sum()),
               "volume_um3": mask.sum() * np.prod(spacing) if spacing else np.nan,
               "marker_mean_centre_slice": image[1, centre][mask[centre]].mean(dtype=np.float64)}
        for c, name in enumerate(("nuclei", "marker")):
            values = image[c][mask].astype(np.float64)
            row.update({f"{name}_mean": values.mean(), f"{name}_max": values.max(), f"{name}_integrated": values.sum()})
        rows.append(row)
    return rows


def _mip(labels):
    rng = np.random.default_rng(0)
    nuclei = (labels > 0).max(axis=0) * 100.0 + rng.random(SHAPE[1:])
    marker = (labels == 2).max(axis=0) * 100.0 + rng.random(SHAPE[1:])
    return np.stack([nuclei, marker]).astype(np.float32)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    labels = _stack()
    table = _table(labels)
    paths = write_predictions(out / "sub", STEM, labels, table, SPACING, _mip(labels), image=_image(labels))
    return out / "sub", paths, labels, table


def test_every_file_is_written_and_no_temporary_file_remains(written):
    out, paths, _, _ = written
    assert {k: p.name for k, p in paths.items()} == FILES
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths.values())


def test_csv_header_values_and_read_back_as_points(written):
    _, paths, labels, table = written
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == ("id,z,y,x,label,score,z_start,z_stop,area_px,z_um,y_um,x_um,n_slices,positive_slices,"
                        "centre_slice,volume_voxels,volume_um3,nuclei_mean,nuclei_max,nuclei_integrated,"
                        "marker_mean,marker_max,marker_integrated,marker_mean_centre_slice")
    assert lines[0] == ",".join(CSV_COLUMNS)
    rows = list(csv.DictReader(lines))
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert row["id"] == str(i + 1) and row["label"] == str(CLASSES[i + 1])  # integers written as integers
        assert row["z_start"] == str(table["z_start"][i]) and row["area_px"] == str(table["area_px"][i])
        assert row["score"] == f"{table['score'][i]:.4f}"
        for axis, step in zip("zyx", SPACING):
            assert row[axis] == f"{table[axis][i]:.2f}"
            assert row[f"{axis}_um"] == f"{table[axis][i] * step:.3f}"
    assert rows[0]["score"] == "0.1235" and rows[1]["score"] == "0.8765"
    coords, point_labels = read_points(paths["csv"], shape=labels.shape)
    np.testing.assert_array_equal(coords, np.rint(np.column_stack([table["z"], table["y"], table["x"]])))
    np.testing.assert_array_equal(point_labels, [1, 2, 1, 1])


def test_csv_and_geojson_measurements_equal_a_naive_per_nucleus_computation(written):
    _, paths, labels, table = written
    rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
    expected = _naive_measurements(labels, _image(labels), SPACING)
    # hand-checked for the single-pixel nucleus 4 at (0, 42, 6): one voxel of 2 x 0.5 x 0.25 um
    assert expected[3]["volume_voxels"] == 1 and expected[3]["volume_um3"] == 0.25
    assert expected[3]["nuclei_max"] == expected[3]["nuclei_mean"] == _image(labels)[0, 0, 42, 6]
    geojson = {f["id"]: f["properties"]["measurements"] for f in json.loads(paths["geojson"].read_text())["features"]}
    for row, want in zip(rows, expected):
        nucleus = int(row["id"])
        assert row["positive_slices"] == str(table["positive_slices"][nucleus - 1])  # from the linking
        for key in ("n_slices", "centre_slice", "volume_voxels"):
            assert int(row[key]) == want[key], (nucleus, key)
        assert float(row["volume_um3"]) == pytest.approx(want["volume_um3"], abs=5e-4)
        for key in ("nuclei_mean", "nuclei_max", "nuclei_integrated", "marker_mean", "marker_max",
                    "marker_integrated", "marker_mean_centre_slice"):
            assert float(row[key]) == pytest.approx(want[key], rel=1e-6), (nucleus, key)
            assert geojson[nucleus][key] == float(row[key])  # QuPath gets the CSV's values
        assert geojson[nucleus]["volume_voxels"] == want["volume_voxels"]
        assert {"y", "x", "y_um", "x_um"}.isdisjoint(geojson[nucleus])  # QuPath measures the centroid itself
    # the integrated intensities are exact integers here (integer raw values): written without rounding
    assert [float(r["marker_integrated"]) for r in rows] == [w["marker_integrated"] for w in expected]


def test_measurements_of_a_synthetic_volume_match_the_naive_computation():
    """Hundreds of random 3D blobs, raw float values with negatives (a background-subtracted stack)."""
    rng = np.random.default_rng(7)
    blobs = ndimage.gaussian_filter(rng.random((9, 80, 90)), (1, 2, 2)) > 0.52
    labels, n = ndimage.label(blobs)
    assert n > 30
    image = rng.normal(0, 50, (2, *labels.shape)).astype(np.float32)
    centre_z, _ = largest_slices(labels, n)
    got = nucleus_measurements(labels, image, centre_z, (1.5, 0.4, 0.4))
    assert list(got) == list(MEASUREMENT_COLUMNS)
    expected = _naive_measurements(labels, image, (1.5, 0.4, 0.4))
    for key in MEASUREMENT_COLUMNS:
        np.testing.assert_allclose(got[key], [row[key] for row in expected], rtol=1e-12, err_msg=key)
    assert (got["nuclei_max"] < 0).any()  # nuclei whose every value is negative keep their (negative) maximum
    assert np.isnan(nucleus_measurements(labels, image, centre_z, None)["volume_um3"]).all()


def test_tiffs_hold_ids_classes_and_spacing(written):
    _, paths, labels, _ = written
    for key, dtype, expected in (("instances", np.uint16, labels),
                                 ("classes", np.uint8, np.array([0, 1, 2, 1, 1])[labels])):
        with tifffile.TiffFile(paths[key]) as tif:
            assert tif.is_imagej and tif.series[0].axes == "ZYX"
            data = tif.asarray()
            np.testing.assert_allclose(imagej_spacing(tif.imagej_metadata, tif.pages[0]), SPACING, rtol=1e-6)
        assert data.dtype == dtype and data.shape == SHAPE
        np.testing.assert_array_equal(data, expected)
        # and through the project's own reader (what `lecl` and the bundle use)
        array, meta = read_stack(paths[key], min_channels=1)
        np.testing.assert_allclose(meta["spacing"], SPACING, rtol=1e-6)
        assert meta["spacing_source"] == "file"
        np.testing.assert_array_equal(array[0], expected)


def test_instance_dtype_switches_to_uint32_from_65535_nuclei():
    assert instance_dtype(0) == np.uint16 and instance_dtype(65534) == np.uint16
    assert instance_dtype(65535) == np.uint32 and instance_dtype(2**32 - 1) == np.uint32
    with pytest.raises(ValueError):
        instance_dtype(2**32)


def test_uint32_ids_are_written_as_ome_tiff_with_spacing(tmp_path):
    volume = np.zeros((2, 5, 6), np.uint32)
    volume[1, 2, 3] = 70_000
    _write_label_tiff(tmp_path / "big_instances.tif", volume, SPACING)
    with tifffile.TiffFile(tmp_path / "big_instances.tif") as tif:
        assert tif.is_ome
        np.testing.assert_array_equal(tif.asarray(), volume)
        assert tif.asarray().dtype == np.uint32
        np.testing.assert_allclose(ome_spacing(tif.ome_metadata), SPACING)
    assert [p.name for p in tmp_path.iterdir()] == ["big_instances.tif"]


def _boundary_centres(mask):
    """(y, x) voxel indices of the mask's boundary pixels."""
    return np.argwhere(mask & ~ndimage.binary_erosion(mask))


def test_geojson_features_outline_each_nucleus_on_its_centre_slice(written):
    _, paths, labels, table = written
    collection = json.loads(paths["geojson"].read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 4
    for feature in collection["features"]:
        nucleus = feature["id"]
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == {1: "Negative", 2: "Positive"}[CLASSES[nucleus]]
        assert props["classification"]["color"] == list(CLASS_COLOURS[CLASSES[nucleus]])
        m = props["measurements"]
        assert m["id"] == nucleus and m["centre_slice"] == CENTRE[nucleus]
        assert m["z"] == round(table["z"][nucleus - 1], 2) and m["score"] == round(table["score"][nucleus - 1], 4)
        assert (m["z_start"], m["z_stop"], m["area_px"]) == (
            table["z_start"][nucleus - 1], table["z_stop"][nucleus - 1], table["area_px"][nucleus - 1])
        assert feature["geometry"]["type"] == "Polygon" and len(feature["geometry"]["coordinates"]) == 1
        ring = np.asarray(feature["geometry"]["coordinates"][0], float)
        assert len(ring) >= 4 and np.array_equal(ring[0], ring[-1])
        footprint = labels[CENTRE[nucleus]] == nucleus
        yx = ring[:, ::-1] - 0.5  # QuPath pixel coordinates (x, y) -> voxel indices (y, x)
        edge = _boundary_centres(footprint)
        nearest = np.sqrt(((yx[:, None] - edge[None]) ** 2).sum(-1)).min(axis=1)
        assert nearest.max() <= 1.0, (nucleus, nearest.max())
        # the ring encloses the footprint (a swapped x/y or a wrong slice would not)
        filled = polygon2mask(footprint.shape, yx)
        inter, union = (filled & footprint).sum(), (filled | footprint).sum()
        assert inter / union > (0.8 if footprint.sum() > 2 else 0), (nucleus, inter / union)
    tiny = np.asarray(collection["features"][3]["geometry"]["coordinates"][0])  # the single pixel (42, 6)
    np.testing.assert_array_equal(tiny, [[6, 42], [7, 42], [7, 43], [6, 43], [6, 42]])  # its pixel square


def _reference_outlines(labels, mip=None, step=1):
    """Naive reference of the right panel: nucleus by nucleus, the inner boundary of its own centre-slice footprint
    in its class colour, positive drawn last (on top)."""
    from skimage.segmentation import find_boundaries

    rgb = composite_rgb(*(_mip(labels) if mip is None else mip))[::step, ::step]
    for cls in (1, 2):
        for nucleus, c in CLASSES.items():
            if c == cls:
                own = labels[CENTRE[nucleus], ::step, ::step] == nucleus
                rgb[find_boundaries(own, mode="inner")] = CLASS_COLOURS[cls]
    return rgb


def _panels(picture, width=SHAPE[2], height=SHAPE[1]):
    """The two side-by-side panels at the bottom of a QC picture."""
    return picture[-height:, :width], picture[-height:, -width:]


def _scale_bar_corner(panel, plain):
    """(row, col) from which ``panel`` differs from the ``plain`` composite: the scale bar's box, bottom right."""
    rows, cols = np.nonzero((panel != plain).any(-1))
    return rows.min(), cols.min()


def test_qc_picture_shows_the_data_and_each_nucleus_outlined_once(tmp_path):
    labels = _stack()
    paths = write_predictions(tmp_path, STEM, labels, _table(labels), None, _mip(labels), image=_image(labels))
    picture = np.asarray(Image.open(paths["qc"]).convert("RGB"))
    assert picture.shape[1] == 2 * SHAPE[2] + 2  # two panels and a 2 px gap: no canvas beyond them
    plain, outlined = _panels(picture)
    # spacing unknown: no scale bar, so the panels are exactly the composite and the composite + outlines
    np.testing.assert_array_equal(plain, composite_rgb(*_mip(labels)))
    np.testing.assert_array_equal(outlined, _reference_outlines(labels))  # nucleus 3's outline crosses nucleus 1's
    for cls, colour in CLASS_COLOURS.items():
        assert (outlined == colour).all(-1).sum() > 10
        assert (picture[:-SHAPE[1]] == colour).all(-1).sum() >= 16  # its legend swatch in the header
    header = picture[:-SHAPE[1]]
    assert (header == 255).all(-1).any() and (header == 24).all(-1).any()  # white text on a dark header
    assert qc_title("stackA", np.array([1, 2, 1, 1])) == "stackA: 4 nuclei, 1 positive (25.0%), 3 negative"
    assert qc_title("s", np.array([2])) == "s: 1 nucleus, 1 positive (100.0%), 0 negative"
    assert qc_title("s", np.array([])) == "s: 0 nuclei, 0 positive, 0 negative"


def test_qc_picture_scale_bar_in_um(written):
    _, paths, labels, _ = written
    assert scale_bar_length(48, 0.25) == (2.0, 8.0)  # 20% of 12 um is 2.4 um: the round 2 um, 8 px at 0.25 um/px
    assert scale_bar_length(256, 0.5) == (20.0, 40.0) and scale_bar_length(2048, 0.1) == (20.0, 200.0)
    assert scale_bar_length(1000, 1.0)[0] == 200.0 and scale_bar_length(100, 0.02)[0] == 0.2
    picture = np.asarray(Image.open(paths["qc"]).convert("RGB"))
    plain, outlined = _panels(picture)
    row, col = _scale_bar_corner(plain, composite_rgb(*_mip(labels)))
    assert row > SHAPE[1] // 3 and col > 0  # a box in the bottom right only (its label is wide on 48 px)
    white = (plain[row:] == 255).all(-1)
    bar_rows = np.flatnonzero(white[:, :-3].sum(axis=1) == 8)  # the bar: 8 white px, ending 3 px from the edge
    assert len(bar_rows) == 2 and (white[bar_rows][:, -3 - 8:-3]).all()  # 2 px thick
    np.testing.assert_array_equal(outlined[:row], _reference_outlines(labels)[:row])  # the rest is unchanged


def test_qc_picture_of_a_large_field_is_downsampled_and_a_wide_one_stacked():
    labels = _stack()
    classes = np.array([0, *CLASSES.values()], np.uint8)
    centre = np.array([-1, *CENTRE.values()])
    picture = qc_picture(labels, centre, classes, _mip(labels), STEM, um_per_px=0.25, max_side=20)
    # 48 px > 20: shown at 1/3 scale, 16 x 16 panels; the scale bar counts the shown pixels (0.75 um each)
    assert picture.shape[1] == 2 * 16 + 2
    outlined = picture[-16:, -16:]
    plain = picture[-16:, :16]
    row, _ = _scale_bar_corner(outlined, _reference_outlines(labels, step=3))
    np.testing.assert_array_equal(outlined[:row], _reference_outlines(labels, step=3)[:row])
    assert plain.shape == (16, 16, 3)
    wide_labels = np.concatenate([labels, labels, labels], axis=2)  # 48 x 144: panels one above the other
    wide_mip = np.concatenate([_mip(labels)] * 3, axis=2)
    wide = qc_picture(wide_labels, largest_slices(wide_labels, 4)[0], classes, wide_mip, STEM)
    assert wide.shape[1] == 144 and wide.shape[0] > 2 * 48


def test_largest_slices_and_given_centre_slices(tmp_path):
    labels = _stack()
    centre_z, area = largest_slices(labels, 4)
    np.testing.assert_array_equal(centre_z, [-1, 2, 3, 5, 0])
    np.testing.assert_array_equal(area[1:], _table(labels)["area_px"])
    # nucleus 1 on slice 3 as given; nucleus 2 given slice 0, where it has no voxel: its largest slice (3) instead
    paths = write_predictions(tmp_path, STEM, labels, _table(labels), SPACING, _mip(labels), image=_image(labels),
                              centre_slices=[3, 0, 4, 0])
    features = json.loads(paths["geojson"].read_text())["features"]
    assert [f["properties"]["measurements"]["centre_slice"] for f in features] == [3, 3, 4, 0]
    with pytest.raises(LECLInputError, match="centre_slices"):
        write_predictions(tmp_path, STEM, labels, _table(labels), SPACING, _mip(labels), image=_image(labels),
                          centre_slices=[1, 2, 6, 0])


def test_unknown_spacing_is_written_as_pixels(tmp_path):
    labels = _stack()
    table = _table(labels)
    paths = write_predictions(tmp_path, STEM, labels, table, None, _mip(labels), image=_image(labels))
    rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
    assert [r["x_um"] for r in rows] == [f"{v:.3f}" for v in table["x"]]
    assert [r["volume_um3"] for r in rows] == [""] * 4  # unknown, not a guess
    assert [r["volume_voxels"] for r in rows] == [str(int((labels == i).sum())) for i in range(1, 5)]
    features = json.loads(paths["geojson"].read_text())["features"]
    assert all("volume_um3" not in f["properties"]["measurements"] for f in features)  # left out, not NaN
    with tifffile.TiffFile(paths["instances"]) as tif:
        assert tif.imagej_metadata["unit"] == "pixel"
        assert imagej_spacing(tif.imagej_metadata, tif.pages[0]) == [None, None, None]  # not mistaken for um


@pytest.mark.parametrize("table", [{k: np.zeros(0) for k in CSV_COLUMNS[:9]}, {}])
def test_no_nucleus_writes_valid_empty_outputs(tmp_path, table):
    labels = np.zeros(SHAPE, np.uint16)
    paths = write_predictions(tmp_path, STEM, labels, table, SPACING, np.ones((2, 48, 48)), image=_image(labels))
    assert paths["csv"].read_text() == ",".join(CSV_COLUMNS) + "\n"
    assert json.loads(paths["geojson"].read_text()) == {"type": "FeatureCollection", "features": []}
    assert not tifffile.imread(paths["instances"]).any() and tifffile.imread(paths["instances"]).shape == SHAPE
    picture = np.asarray(Image.open(paths["qc"]).convert("RGB"))
    assert picture.shape[1] == 2 * 48 + 2 and picture.shape[0] > 48
    assert not any((picture[-48:] == c).all(-1).any() for c in CLASS_COLOURS.values())  # no outline
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES.values())


def test_inconsistent_inputs_are_refused_before_writing(tmp_path):
    labels = _stack()
    bad_ids = {**_table(labels), "id": np.array([1, 2, 3, 5])}
    with pytest.raises(LECLInputError, match="ids"):
        write_predictions(tmp_path, STEM, labels, bad_ids, SPACING, _mip(labels), image=_image(labels))
    short = {k: v[:3] for k, v in _table(labels).items()}  # labels hold id 4, the table stops at 3
    with pytest.raises(LECLInputError, match="table has 3 nuclei"):
        write_predictions(tmp_path, STEM, labels, short, SPACING, _mip(labels), image=_image(labels))
    with pytest.raises(LECLInputError, match="mip"):
        write_predictions(tmp_path, STEM, labels, _table(labels), SPACING, np.zeros((2, 40, 48)), image=_image(labels))
    with pytest.raises(LECLInputError, match="image of shape"):
        write_predictions(tmp_path, STEM, labels, _table(labels), SPACING, _mip(labels), image=_image(labels)[:, 1:])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "a_pred.csv"
    final.write_text("earlier\n")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("interrupted")
    assert final.read_text() == "earlier\n" and [p.name for p in tmp_path.iterdir()] == ["a_pred.csv"]
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".csv"
        tmp.write_text("new\n")
    assert final.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["a_pred.csv"]


def test_write_run_summary(tmp_path):
    path = write_run_summary(tmp_path / "out", {"nuclei": np.int64(4), "spacing": np.array([2.0, 0.5]),
                                                "file": tmp_path / "x.csv"})
    assert path == tmp_path / "out" / "predict_summary.json"
    assert json.loads(path.read_text()) == {"nuclei": 4, "spacing": [2.0, 0.5], "file": str(tmp_path / "x.csv")}
    assert [p.name for p in path.parent.iterdir()] == ["predict_summary.json"]


class _FakeNuclei:
    def __init__(self, labels, table):
        self.labels, self._table = labels, table

    def table(self):
        return self._table


def test_save_predictions_transform(tmp_path):
    labels = _stack()
    mip = _mip(labels)
    stack = np.stack([np.broadcast_to(mip[0], SHAPE), np.broadcast_to(mip[1], SHAPE)])  # its projection is the mip
    image = MetaTensor(torch.as_tensor(stack), meta={"filename_or_obj": "/data/stackA.ome.tif",
                                                     "spacing": np.asarray(SPACING)})
    d = {"image": image, "nuclei": _FakeNuclei(torch.as_tensor(labels), _table(labels))}
    out = SavePredictionsd(tmp_path)(d)
    assert {k: p.name for k, p in out["pred_files"].items()} == FILES
    rows = list(csv.DictReader(out["pred_files"]["csv"].read_text().splitlines()))
    # the intensities are the image's own values (nucleus 2's voxels all hold mip[1] at their (y, x))
    assert float(rows[1]["marker_max"]) == pytest.approx(mip[1][labels.max(axis=0) == 2].max(), rel=1e-6)
    with tifffile.TiffFile(out["pred_files"]["instances"]) as tif:
        np.testing.assert_array_equal(tif.asarray(), labels)
        np.testing.assert_allclose(imagej_spacing(tif.imagej_metadata, tif.pages[0]), SPACING, rtol=1e-6)
    picture = np.asarray(Image.open(out["pred_files"]["qc"]).convert("RGB"))
    plain, outlined = _panels(picture)
    row, _ = _scale_bar_corner(plain, composite_rgb(*mip))  # the stack's projection is the mip
    np.testing.assert_array_equal(outlined[:row], _reference_outlines(labels, mip)[:row])
    # labels_key wins over .labels; a missing file name is an input error
    d2 = {**d, "labels3d": labels[None], "nuclei": _FakeNuclei(None, _table(labels)), "mip": mip}
    assert SavePredictionsd(tmp_path / "b")(d2)["pred_files"]["csv"].is_file()
    with pytest.raises(LECLInputError, match="filename_or_obj"):
        SavePredictionsd(tmp_path / "c")({**d, "image": torch.as_tensor(stack)})
